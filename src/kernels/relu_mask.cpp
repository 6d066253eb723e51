// Packing and unpacking the fused ReLU's bit mask (relu_mask.h).
//
// Packing is on the forward's hot path: a portable loop costs about as much as the
// whole normalize pass (0.16 ns per value in L1, measured), so whole bytes go through a
// compare-to-mask instruction per vector, chosen by GCC function multiversioning:
// AVX-512 (16 floats or 8 doubles -> one k-mask), AVX2 (movemask), else scalar.
#include "kernels/relu_mask.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace bnorm::kernels {
namespace {

template <class T>
inline unsigned bit_of(T y) { return !(y <= T(0)) ? 1u : 0u; }

// Whole bytes: out[b] = bits of y[8b .. 8b + 8).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("default")))
#endif
void pack_bytes(const float* y, int64_t bytes, uint8_t* out) {
  for (int64_t b = 0; b < bytes; ++b) {
    unsigned v = 0;
    for (int j = 0; j < 8; ++j) v |= bit_of(y[8 * b + j]) << j;
    out[b] = static_cast<uint8_t>(v);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BNORM_MULTIVERSION 1
// not (y <= 0) is the unordered-or-greater-than predicate: _CMP_NLE_UQ.
__attribute__((target("avx2"))) void pack_bytes(const float* y, int64_t bytes, uint8_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t b = 0; b < bytes; ++b)
    out[b] = static_cast<uint8_t>(
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(y + 8 * b), zero, _CMP_NLE_UQ)));
}

__attribute__((target("avx512f"))) void pack_bytes(const float* y, int64_t bytes, uint8_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= bytes; b += 2) {
    const __mmask16 k = _mm512_cmp_ps_mask(_mm512_loadu_ps(y + 8 * b), zero, _CMP_NLE_UQ);
    const uint16_t v = static_cast<uint16_t>(k);
    std::memcpy(out + b, &v, 2);  // little-endian: bits 0-7 first
  }
  if (b < bytes) {
    const __mmask16 k = _mm512_mask_cmp_ps_mask(0xff, _mm512_maskz_loadu_ps(0xff, y + 8 * b), zero, _CMP_NLE_UQ);
    out[b] = static_cast<uint8_t>(k);
  }
}
#endif

#if BNORM_MULTIVERSION
__attribute__((target("default")))
#endif
void pack_bytes(const double* y, int64_t bytes, uint8_t* out) {
  for (int64_t b = 0; b < bytes; ++b) {
    unsigned v = 0;
    for (int j = 0; j < 8; ++j) v |= bit_of(y[8 * b + j]) << j;
    out[b] = static_cast<uint8_t>(v);
  }
}

#if BNORM_MULTIVERSION
__attribute__((target("avx2"))) void pack_bytes(const double* y, int64_t bytes, uint8_t* out) {
  const __m256d zero = _mm256_setzero_pd();
  for (int64_t b = 0; b < bytes; ++b) {
    const int lo = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(y + 8 * b), zero, _CMP_NLE_UQ));
    const int hi = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(y + 8 * b + 4), zero, _CMP_NLE_UQ));
    out[b] = static_cast<uint8_t>(lo | hi << 4);
  }
}

__attribute__((target("avx512f"))) void pack_bytes(const double* y, int64_t bytes, uint8_t* out) {
  const __m512d zero = _mm512_setzero_pd();
  for (int64_t b = 0; b < bytes; ++b)
    out[b] = static_cast<uint8_t>(_mm512_cmp_pd_mask(_mm512_loadu_pd(y + 8 * b), zero, _CMP_NLE_UQ));
}
#endif

// Sets the bits `field` of *byte to `bits` (bits outside field untouched), atomically:
// another thread may be writing the byte's other bits.
void store_bits_atomic(uint8_t* byte, unsigned field, unsigned bits) {
  uint8_t old = __atomic_load_n(byte, __ATOMIC_RELAXED);
  uint8_t desired;
  do {
    desired = static_cast<uint8_t>((old & ~field) | (bits & field));
  } while (!__atomic_compare_exchange_n(byte, &old, desired, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED));
}

// Bits [first, first + len) of one byte (0 <= first, first + len <= 8), from y.
template <class T>
void pack_partial_byte(const T* y, int first, int len, bool clear_tail, uint8_t* byte) {
  unsigned bits = 0, field = 0;
  for (int j = 0; j < len; ++j) {
    bits |= bit_of(y[j]) << (first + j);
    field |= 1u << (first + j);
  }
  if (clear_tail) field |= 0xffu & ~((1u << (first + len)) - 1u);
  store_bits_atomic(byte, field, bits);
}

// 256 bytes -> 8 values of 1 or 0 each: the expansion table.
template <class T>
struct ExpandTable {
  T rows[256][8];
  ExpandTable() {
    for (int b = 0; b < 256; ++b)
      for (int j = 0; j < 8; ++j) rows[b][j] = static_cast<T>((b >> j) & 1);
  }
};

}  // namespace

template <class T>
void pack_relu_mask(const T* y, int64_t index, int64_t len, int64_t count, uint8_t* mask) {
  if (len <= 0) return;
  const int64_t end = index + len;
  const bool clears_tail = end == count;
  // Head: up to the first byte boundary.
  const int head_first = static_cast<int>(index % 8);
  if (head_first != 0 || len < 8) {
    const int take = static_cast<int>(std::min<int64_t>(8 - head_first, len));
    pack_partial_byte(y, head_first, take, clears_tail && index + take == end, mask + index / 8);
    y += take;
    index += take;
  }
  if (index == end) return;
  const int64_t whole = (end - index) / 8;
  pack_bytes(y, whole, mask + index / 8);
  y += whole * 8;
  index += whole * 8;
  if (index < end)
    pack_partial_byte(y, 0, static_cast<int>(end - index), clears_tail, mask + index / 8);
}

template <class T>
void expand_relu_mask(const uint8_t* mask, int64_t index, int64_t len, T* out) {
  static const ExpandTable<T> table;
  int64_t j = 0;
  for (; j < len && (index + j) % 8 != 0; ++j)
    out[j] = static_cast<T>((mask[(index + j) / 8] >> ((index + j) % 8)) & 1);
  for (; j + 8 <= len; j += 8) std::memcpy(out + j, table.rows[mask[(index + j) / 8]], 8 * sizeof(T));
  for (; j < len; ++j) out[j] = static_cast<T>((mask[(index + j) / 8] >> ((index + j) % 8)) & 1);
}

template void pack_relu_mask<float>(const float*, int64_t, int64_t, int64_t, uint8_t*);
template void pack_relu_mask<double>(const double*, int64_t, int64_t, int64_t, uint8_t*);
template void expand_relu_mask<float>(const uint8_t*, int64_t, int64_t, float*);
template void expand_relu_mask<double>(const uint8_t*, int64_t, int64_t, double*);

}  // namespace bnorm::kernels
