// What every hot loop is built with: one source compiled once per instruction set, and
// the vector types the loops are written in.
//
// Instruction sets: a function marked BNORM_CLONES is compiled for x86-64-v4 (AVX-512),
// x86-64-v3 (AVX2 + FMA) and baseline x86-64, and the loader picks one at start-up (GCC
// target_clones; kernel_isa() in isa.h names the one in use). The source stays plain
// loops written for the vectorizer. Everything a clone calls must be inlined into it
// (BNORM_INLINE, BNORM_INLINE_LAMBDA): a function compiled on its own runs at the
// baseline instruction set.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// (GCC 12 gives a clone's ifunc default visibility whatever -fvisibility or a
// visibility attribute says; cmake/bnorm.map keeps them out of libbnorm.so's exports.)
#define BNORM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BNORM_CLONES
#endif
#define BNORM_INLINE inline __attribute__((always_inline))
#define BNORM_INLINE_LAMBDA __attribute__((always_inline))

namespace bnorm::kernels {

// 8 doubles, 8 floats: GCC vector types, which each clone lowers to its own width (one
// AVX-512 register, two AVX2 ones, four SSE2 ones), so the loops keep them in registers.
typedef double Double8 __attribute__((vector_size(64)));
typedef float Float8 __attribute__((vector_size(32)));

// 8 values at p as doubles (out-parameter: a 64-byte vector returned by value would
// have a different ABI in the non-AVX-512 clones).
// Built element by element: GCC 12 lowers __builtin_convertvector(Float8 -> Double8) as
// two 4-wide conversions and an insert even in the AVX-512 clone, while this form becomes
// one vcvtps2pd (seen in perf annotate of group norm's backward sums, (32,256,14,14), where
// the extra vextractf128 and vinsertf64x4 were among the loop's hottest instructions).
BNORM_INLINE void load8(const float* p, Double8& out) {
  out = Double8{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]};
}
BNORM_INLINE void load8(const double* p, Double8& out) { std::memcpy(&out, p, sizeof out); }

// 8 values of T in T's own precision: Float8 or Double8.
template <class T>
using Vec8 = std::conditional_t<std::is_same_v<T, float>, Float8, Double8>;

// (Out-parameters, as load8: a vector returned by value changes the ABI between clones.)
template <class T>
BNORM_INLINE void load_vec8(const T* p, Vec8<T>& out) {
  std::memcpy(&out, p, sizeof out);
}
template <class T>
BNORM_INLINE void store_vec8(T* p, const Vec8<T>& v) {
  std::memcpy(p, &v, sizeof v);
}
// The 8 products a[i] * b[i], each rounded to T, as doubles.
BNORM_INLINE void load8_product(const float* a, const float* b, Double8& out) {
  Float8 u, v;
  std::memcpy(&u, a, sizeof u);
  std::memcpy(&v, b, sizeof v);
  u *= v;
  out = Double8{u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7]};
}
BNORM_INLINE void load8_product(const double* a, const double* b, Double8& out) {
  Double8 u;
  std::memcpy(&u, a, sizeof u);
  std::memcpy(&out, b, sizeof out);
  out = u * out;
}

// Channels-first runs are rows of one channel, c * spatial apart: the hardware
// prefetcher restarts at every row (and every 4 KiB page) and a row of a few KiB is over
// before it has ramped up, so a channel's rows read at a third of the stream speed
// (measured: 9 against 28 GB/s, (64,64,56,56), one thread). The sums therefore touch
// the next row (`next`, or nullptr) at the same offset as they read the current one:
// when the loop gets there, the row is on its way.
template <class T>
BNORM_INLINE void prefetch_line(const T* next, int64_t i) {
  if (next) __builtin_prefetch(next + i, 0, 3);
}

// The lines of [p, p + bytes) on their way into the cache.
template <class T>
inline void prefetch_bytes(const T* p, int64_t bytes) {
  for (int64_t line = 0; line < bytes; line += 64)
    __builtin_prefetch(p + line / int64_t{sizeof(T)}, 0, 3);
}

// Values of a run before `out` reaches a 64-byte boundary (at most len; all of it when
// out is not even T-aligned). The elementwise loops do these first, one by one, so that
// every vector store of the rest fills one cache line instead of straddling two: a
// buffer from malloc is 16-byte aligned, and split stores cost the channels-first
// passes up to a fifth of their speed (measured, (64,64,56,56), one thread).
template <class T>
BNORM_INLINE int64_t values_before_line(const T* out, int64_t len) {
  const auto misaligned = reinterpret_cast<uintptr_t>(out) % 64;
  if (misaligned % sizeof(T) != 0) return len;
  const auto head = static_cast<int64_t>(((64 - misaligned) % 64) / sizeof(T));
  return std::min(head, len);
}

}  // namespace bnorm::kernels
