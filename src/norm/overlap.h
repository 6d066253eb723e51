// The aliasing rule of bnorm.h, checked: a buffer a call writes may share no byte with
// any other buffer of the call, read or written, except the one documented in-place pair
// (y == x in the forwards, dx == dy in the backwards), which must then be the same range
// exactly. A partial overlap would read values the call has already overwritten (or
// write one output over another) and return a wrong result with a success status.
//
// Extents in bytes: [ptr, ptr + count * sizeof(T)); n * c * spatial values for the
// tensors, c for the per-channel arrays, bnorm_relu_mask_bytes for a ReLU mask, 8 for
// num_batches_tracked. Header-only: the front-end (batch_norm.cpp) is its one user.
#pragma once

#include <bnorm/bnorm.h>
#include <bnorm/error.hpp>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>

namespace bnorm::norm {

// One buffer of a call: name as the caller knows it, where it starts (nullptr: not
// given) and how many bytes it spans; written: the call stores into it.
struct Buffer {
  const char* name;
  const void* begin;
  uint64_t bytes;
  bool written;
};

// count elements of `element_bytes` each, saturating (a size this large is no real
// buffer, and must not wrap into a small one).
inline uint64_t extent_bytes(int64_t count, uint64_t element_bytes) {
  const auto n = static_cast<uint64_t>(count < 0 ? 0 : count);
  uint64_t bytes = 0;
  return __builtin_mul_overflow(n, element_bytes, &bytes) ? std::numeric_limits<uint64_t>::max()
                                                          : bytes;
}

template <class T>
Buffer buffer_of(const char* name, const T* p, int64_t count, bool written) {
  return Buffer{name, p, extent_bytes(count, sizeof(T)), written};
}

// Do [a, a + a.bytes) and [b, b + b.bytes) share a byte?
inline bool buffers_overlap(const Buffer& a, const Buffer& b) {
  if (!a.begin || !b.begin || a.bytes == 0 || b.bytes == 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.begin);
  const auto b0 = reinterpret_cast<uintptr_t>(b.begin);
  const uintptr_t limit = std::numeric_limits<uintptr_t>::max();
  const uintptr_t a1 = a.bytes > limit - a0 ? limit : a0 + a.bytes;
  const uintptr_t b1 = b.bytes > limit - b0 ? limit : b0 + b.bytes;
  return a0 < b1 && b0 < a1;
}

// An output that may be the same range as an input (y == x in place).
struct InPlacePair {
  const char* output;
  const char* input;
};

// Throws bnorm::Error(BNORM_ERROR_OVERLAP) on the first written buffer that overlaps
// another, naming both: "op: y overlaps x (partial overlap; only y == x in place is
// allowed)". `in_place` lists the pairs that may be equal (the same begin and size).
inline void check_no_overlap(const char* op, std::initializer_list<Buffer> buffers,
                             std::initializer_list<InPlacePair> in_place) {
  std::string allowed;
  for (const InPlacePair& p : in_place)
    allowed += std::string(allowed.empty() ? "" : ", ") + p.output + " == " + p.input;
  for (const Buffer* w = buffers.begin(); w != buffers.end(); ++w) {
    if (!w->written) continue;
    for (const Buffer* o = buffers.begin(); o != buffers.end(); ++o) {
      // A pair of written buffers is reported once, from the later one.
      if (o == w || (o->written && o > w) || !buffers_overlap(*w, *o)) continue;
      bool pair = false;
      for (const InPlacePair& p : in_place)
        pair = pair || (std::strcmp(w->name, p.output) == 0 && std::strcmp(o->name, p.input) == 0);
      if (pair && w->begin == o->begin && w->bytes == o->bytes) continue;
      throw Error(BNORM_ERROR_OVERLAP,
                  std::string(op) + ": " + w->name + " overlaps " + o->name + " (" +
                      (pair ? "partial overlap; " : "an output must share no memory with "
                                                    "another argument; ") +
                      "only " + allowed + " in place is allowed)");
    }
  }
}

// The usual case: one in-place pair.
inline void check_no_overlap(const char* op, std::initializer_list<Buffer> buffers,
                             const char* in_place_output, const char* in_place_input) {
  check_no_overlap(op, buffers, {InPlacePair{in_place_output, in_place_input}});
}

}  // namespace bnorm::norm
