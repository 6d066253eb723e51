// Streaming stores (streaming_store.h): per-ISA copies through GCC function
// multiversioning; SSE2's 16-byte streaming store is part of baseline x86-64.
#include "kernels/streaming_store.h"

#include <immintrin.h>

#include <cstring>

namespace bnorm::kernels {
namespace {

template <class T>
inline void plain_copy(const T* src, T* dst, int64_t len) {
  std::memcpy(dst, src, static_cast<size_t>(len) * sizeof(T));
}

// Values before dst reaches a 64-byte boundary.
template <class T>
inline int64_t head_to_line(const T* dst, int64_t len) {
  const auto misaligned = reinterpret_cast<uintptr_t>(dst) % 64;
  if (misaligned % sizeof(T) != 0) return len;  // not even T-aligned: no streaming
  const int64_t head = misaligned ? static_cast<int64_t>((64 - misaligned) / sizeof(T)) : 0;
  return head < len ? head : len;
}

__attribute__((target("default"))) void stream_lines(const float* src, float* dst, int64_t lines) {
  for (int64_t i = 0; i < lines * 16; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
}
__attribute__((target("avx"))) void stream_lines(const float* src, float* dst, int64_t lines) {
  for (int64_t i = 0; i < lines * 16; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
}
__attribute__((target("avx512f"))) void stream_lines(const float* src, float* dst, int64_t lines) {
  for (int64_t i = 0; i < lines * 16; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
}
__attribute__((target("default"))) void stream_lines(const double* src, double* dst, int64_t lines) {
  for (int64_t i = 0; i < lines * 8; i += 2) _mm_stream_pd(dst + i, _mm_loadu_pd(src + i));
}
__attribute__((target("avx"))) void stream_lines(const double* src, double* dst, int64_t lines) {
  for (int64_t i = 0; i < lines * 8; i += 4) _mm256_stream_pd(dst + i, _mm256_loadu_pd(src + i));
}
__attribute__((target("avx512f"))) void stream_lines(const double* src, double* dst, int64_t lines) {
  for (int64_t i = 0; i < lines * 8; i += 8) _mm512_stream_pd(dst + i, _mm512_loadu_pd(src + i));
}

template <class T>
void stream_store_impl(const T* src, T* dst, int64_t len) {
  constexpr int64_t per_line = 64 / sizeof(T);
  const int64_t head = head_to_line(dst, len);
  plain_copy(src, dst, head);
  const int64_t lines = (len - head) / per_line;
  stream_lines(src + head, dst + head, lines);
  const int64_t done = head + lines * per_line;
  plain_copy(src + done, dst + done, len - done);
  // Streaming stores are weakly ordered: fence before another thread reads the output.
  _mm_sfence();
}

}  // namespace

void stream_store(const float* src, float* dst, int64_t len) { stream_store_impl(src, dst, len); }
void stream_store(const double* src, double* dst, int64_t len) { stream_store_impl(src, dst, len); }

}  // namespace bnorm::kernels
