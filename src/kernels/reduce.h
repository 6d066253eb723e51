// The reduction microkernels: each sums one work item (chunk_plans.h) into the statistics
// layer's types (moments.h) and is compiled once per instruction set (simd.h).
//
// Names follow stage_walk (docs/kernels.md):
//   stage  moments        (count, mean, M2) of x, shifted by a value of the data
//          shifted_sums   s1 = sum(x - K), s2 = sum((x - K)^2), K the first row's value
//          backward_sums  sum(dy), sum(dy * xc), sum(xc), xc = x - center (a gradient's sums)
//   walk   chunk  one chunk of one channels-first channel (contiguous runs)
//          slices consecutive one-chunk slices (group norm's (n, c) slices of a group)
//          block  chunks of a block of short-row channels [c0, c1), in memory order
//          rows   rows [r0, r1) of channels [c0, c1) of rows of ld channels (strided)
// Contiguous walks are in reduce_contiguous.cpp, strided ones in reduce_strided.cpp.
#pragma once

#include <cstdint>

#include "kernels/geometry.h"
#include "kernels/moments.h"
#include "kernels/relu_mask.h"
#include "kernels/chunk_plans.h"

namespace bnorm::kernels {

#define BNORM_DECLARE_REDUCTIONS(T)                                                        \
  /* Moments of chunk `chunk` of the channel whose first value is xc[0], shifted by      \
     `shift`. */                                                                         \
  Moments moments_chunk(const T* xc, const ChannelsFirstChunks& plan, int64_t chunk,       \
                        double shift);                                                   \
  /* moments[ch] for ch in [c0, c1): every chunk, folded in order (the bits of           \
     moments_chunk's fold), each channel shifted by its first value. */                   \
  void moments_block(const T* x, const Geometry& g, const ChannelsFirstChunks& plan,       \
                     int64_t c0, int64_t c1, Moments* moments);                           \
  /* out[j] = shifted sums of channel c0 + j over rows [r0, r1), K = x[c0 + j]. */       \
  void shifted_sums_rows(const T* x, int64_t ld, int64_t r0, int64_t r1, int64_t c0,       \
                         int64_t c1, ShiftedSums* out);                                   \
  /* The backward sums of one chunk of a channel (first values xc[0], dyc[0]); `index`   \
     is the channel's first value's index in the tensor (for the gate). */               \
  BackwardSums backward_sums_chunk(const T* xc, const T* dyc, const ChannelsFirstChunks& plan, \
                                   int64_t chunk, double center, const ReluGate<T>& gate, \
                                   int64_t index);                                        \
  /* sums[s] for `count` consecutive slices of len <= kChunk values (slice s at x + s * \
     len, centred on center[s], no gate): the bits of backward_sums_chunk on each, folded \
     from zero; `more`: the memory after the last slice is read next (prefetched). */    \
  void backward_sums_slices(const T* x, const T* dy, int64_t len, int64_t count,           \
                            const T* center, bool more, BackwardSums* sums);              \
  /* sums[ch] for ch in [c0, c1), every chunk folded in order. */                         \
  void backward_sums_block(const T* x, const T* dy, const Geometry& g,                     \
                           const ChannelsFirstChunks& plan, int64_t c0, int64_t c1,        \
                           const T* center, const ReluGate<T>& gate, BackwardSums* sums); \
  /* out[j] = backward sums of channel c0 + j over rows [r0, r1), center[c0 + j]. */     \
  void backward_sums_rows(const T* x, const T* dy, int64_t ld, int64_t r0, int64_t r1,     \
                          int64_t c0, int64_t c1, const T* center, const ReluGate<T>& gate, \
                          BackwardSums* out);

BNORM_DECLARE_REDUCTIONS(float)
BNORM_DECLARE_REDUCTIONS(double)
#undef BNORM_DECLARE_REDUCTIONS

}  // namespace bnorm::kernels
