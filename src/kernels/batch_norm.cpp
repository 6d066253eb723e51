// Batch norm's kernel driver (batch_norm.h): chooses the walk for the layout, splits the
// work (work_split.h) and calls the microkernels (reduce.h, affine.h).
//
// Channels-first training runs fused where it can (batch_norm_forward_fused,
// batch_norm_backward_fused, at the end): channel by channel, or in blocks of short-row
// channels walked in memory order, each channel reduced and then normalized while its
// slice is in L2. The design and its measurements: docs/kernels.md.
#include "kernels/batch_norm.h"

#include <algorithm>
#include <cassert>

#include "kernels/reduce.h"
#include "kernels/work_split.h"

namespace bnorm::kernels {

template <class T>
void batch_norm_moments(const Geometry& g, const T* x, Moments* moments, int threads) {
  assert(g.n > 0 && g.c > 0 && g.spatial > 0 && threads >= 1);
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  if (!rows_of_channels(g)) {
    const ChannelsFirstChunks plan(g);
    // Shift: the channel's first value (finite_shift: 0 if it is not finite).
    const Moments* partial = channels_first_partials<Moments>(g, plan, nt, [&](int64_t ch, int64_t j) {
      const T* xc = x + ch * g.spatial;
      return moments_chunk(xc, plan, j, finite_shift(static_cast<double>(xc[0])));
    });
    fold_in_order(g.c, plan.count, partial, plan.count, 1, moments,
                  [](const Moments& total, const Moments& p, int64_t, int64_t) { return merge(total, p); });
    return;
  }
  const RowChunks plan(g);
  const ShiftedSums* partial = row_partials<ShiftedSums>(
      g, plan, nt, [&](int64_t chunk, int64_t c0, int64_t c1, ShiftedSums* out) {
        shifted_sums_rows(x, g.c, plan.row_begin(chunk), plan.row_end(chunk), c0, c1, out);
      });
  // Every chunk of a channel is shifted by the same K (the first row's value), so the
  // chunks' sums add up to the channel's shifted sums: moments once per channel, no
  // division per chunk (a Chan merge per partial made the fold a serial tenth of a
  // (32,256,14,14) forward).
  struct TotalsTag {};
  ShiftedSums* totals = thread_scratch<ShiftedSums, TotalsTag>(g.c);
  fold_row_chunks_in_order(g.c, plan.count, partial, totals,
                           [](const ShiftedSums& t, const ShiftedSums& p, int64_t, int64_t) {
                             return ShiftedSums{t.s1 + p.s1, t.s2 + p.s2};
                           });
  for (int64_t ch = 0; ch < g.c; ++ch)
    moments[ch] = moments_from_shifted_sums(static_cast<double>(plan.rows),
                                            finite_shift(static_cast<double>(x[ch])),
                                            totals[ch].s1, totals[ch].s2);
}

template <class T>
void batch_norm_apply(const Geometry& g, const T* x, T* y, const ChannelAffine<T>& a,
                      int threads, const ReluGate<T>& gate, const ReluOutput& relu) {
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  const int64_t count = g.n * g.c * g.spatial;
  const ApplyOptions<T> o{gate, relu, count,
                          use_streaming_stores(count * static_cast<int64_t>(sizeof(T)))};
  if (!rows_of_channels(g)) {
    for_each_slice_walk(g, nt, [&](const SliceWalk& w) {
      affine_slices(x, y, g, w, &a, AffineCoefficients<T>{}, o);
    });
    return;
  }
  for_each_row_block(g, nt, [&](int64_t r0, int64_t r1) { affine_rows(x, y, g.c, r0, r1, a, o); });
}

template <class T>
void batch_norm_backward_sums(const Geometry& g, const T* x, const T* dy, const T* center,
                              BackwardSums* sums, int threads, const ReluGate<T>& gate) {
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  if (!rows_of_channels(g)) {
    const ChannelsFirstChunks plan(g);
    const BackwardSums* partial = channels_first_partials<BackwardSums>(
        g, plan, nt, [&](int64_t ch, int64_t j) {
          return backward_sums_chunk(x + ch * g.spatial, dy + ch * g.spatial, plan, j,
                                        static_cast<double>(center[ch]), gate, ch * g.spatial);
        });
    fold_in_order(g.c, plan.count, partial, plan.count, 1, sums, add_sums);
    return;
  }
  const RowChunks plan(g);
  const BackwardSums* partial = row_partials<BackwardSums>(
      g, plan, nt, [&](int64_t chunk, int64_t c0, int64_t c1, BackwardSums* out) {
        backward_sums_rows(x, dy, g.c, plan.row_begin(chunk), plan.row_end(chunk), c0, c1,
                           center, gate, out);
      });
  fold_row_chunks_in_order(g.c, plan.count, partial, sums, add_sums);
}

template <class T>
void batch_norm_backward_apply(const Geometry& g, const T* x, const T* dy, T* dx,
                               const BackwardAffine<T>& a, int threads,
                               const ReluGate<T>& gate) {
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  const int64_t count = g.n * g.c * g.spatial;
  const ApplyOptions<T> o{gate, ReluOutput{}, count,
                          use_streaming_stores(count * static_cast<int64_t>(sizeof(T)))};
  if (!rows_of_channels(g)) {
    for_each_slice_walk(g, nt, [&](const SliceWalk& w) {
      backward_affine_slices(x, dy, dx, g, w, &a, BackwardCoefficients<T>{}, o);
    });
    return;
  }
  for_each_row_block(g, nt, [&](int64_t r0, int64_t r1) {
    backward_affine_rows(x, dy, dx, g.c, r0, r1, a, o);
  });
}

// ---- fused channels-first passes ------------------------------------------------------

namespace {

// Run channel by channel? Slices of `slice_bytes` per channel must fit the budget, and
// whole channels per thread must keep the threads busy (items_fill_threads, policy.h).
bool fused_channels(const Geometry& g, int nt, int64_t slice_bytes) {
  if (rows_of_channels(g) || slice_bytes > fused_slice_budget()) return false;
  return items_fill_threads(g.c, nt);
}

// Channel ch's slices, last piece first: the reduction has just read the slice front to
// back, so its end is what the cache still holds; walking it in reverse reads that part before
// the lines that come back for it evict it. A slice larger than the L2 then still has its
// last L2's worth read from there, where a forward walk would miss on every line.
SliceWalk channel_reversed(const Geometry& g, int64_t ch) {
  return SliceWalk{ch, g.n, g.c, true};
}

// Channels per work item of a fused pass: 1, or for short rows a block walked in memory
// order (reduce_contiguous.cpp), as many channels as keep every thread busy, fit kMaxBlockChannels and
// have their `slices` slices within the budget together.
int64_t fused_block_channels(const Geometry& g, const ChannelsFirstChunks& plan, int nt,
                             int64_t slice_bytes, size_t value_bytes) {
  if (plan.pieces_per_row > 1 || g.spatial * static_cast<int64_t>(value_bytes) >= kShortRowBytes)
    return 1;
  // The block as a whole within the L2 (half the budget), so its walk back hits.
  const int64_t fit = std::max<int64_t>(1, fused_slice_budget() / 2 / slice_bytes);
  return std::min({kMaxBlockChannels, ceil_div(g.c, nt), fit});
}

}  // namespace

template <class T>
bool batch_norm_forward_fused(const Geometry& g, const T* x, T* y, Moments* moments,
                              const ForwardCoefficientsFn<T>& coefficients, int threads,
                              const ReluOutput& relu) {
  const int64_t count = g.n * g.c * g.spatial;
  const int nt = threads_for(count, threads);
  if (!fused_channels(g, nt, g.per_channel() * static_cast<int64_t>(sizeof(T)))) return false;
  const ChannelsFirstChunks plan(g);
  const ApplyOptions<T> o{{}, relu, count,
                          use_streaming_stores(count * static_cast<int64_t>(sizeof(T)))};
  const int64_t slice_bytes = g.per_channel() * static_cast<int64_t>(sizeof(T));
  const int64_t block = fused_block_channels(g, plan, nt, slice_bytes, sizeof(T));
  if (block > 1) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t c0 = 0; c0 < g.c; c0 += block) {
      const int64_t c1 = std::min(g.c, c0 + block);
      moments_block(x, g, plan, c0, c1, moments);
      AffineCoefficients<T> a[kMaxBlockChannels];
      for (int64_t ch = c0; ch < c1; ++ch)
        a[ch - c0] = coefficients.call(coefficients.context, ch, moments[ch]);
      affine_block_reversed(x, y, g, c0, c1, a, o);
    }
    return true;
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t ch = 0; ch < g.c; ++ch) {
    const T* xc = x + ch * g.spatial;
    Moments total{};  // the fold of batch_norm_moments, chunk by chunk
    for (int64_t j = 0; j < plan.count; ++j)
      total = merge(total,
                    moments_chunk(xc, plan, j, finite_shift(static_cast<double>(xc[0]))));
    moments[ch] = total;
    const AffineCoefficients<T> a = coefficients.call(coefficients.context, ch, total);
    affine_slices(x, y, g, channel_reversed(g, ch), static_cast<const ChannelAffine<T>*>(nullptr),
                  a, o);
  }
  return true;
}

template <class T>
bool batch_norm_backward_fused(const Geometry& g, const T* x, const T* dy, T* dx,
                               const T* center, BackwardSums* sums,
                               const BackwardCoefficientsFn<T>& coefficients, int threads,
                               const ReluGate<T>& gate) {
  const int64_t count = g.n * g.c * g.spatial;
  const int nt = threads_for(count, threads);
  if (!fused_channels(g, nt, 2 * g.per_channel() * static_cast<int64_t>(sizeof(T))))
    return false;
  const ChannelsFirstChunks plan(g);
  const ApplyOptions<T> o{gate, ReluOutput{}, count,
                          use_streaming_stores(count * static_cast<int64_t>(sizeof(T)))};
  const int64_t slice_bytes = 2 * g.per_channel() * static_cast<int64_t>(sizeof(T));
  const int64_t block = fused_block_channels(g, plan, nt, slice_bytes, sizeof(T));
  if (block > 1) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t c0 = 0; c0 < g.c; c0 += block) {
      const int64_t c1 = std::min(g.c, c0 + block);
      backward_sums_block(x, dy, g, plan, c0, c1, center, gate, sums);
      BackwardCoefficients<T> b[kMaxBlockChannels];
      for (int64_t ch = c0; ch < c1; ++ch)
        b[ch - c0] = coefficients.call(coefficients.context, ch, sums[ch]);
      if (dx) backward_affine_block_reversed(x, dy, dx, g, c0, c1, b, o);
    }
    return true;
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t ch = 0; ch < g.c; ++ch) {
    BackwardSums total{};  // the fold of batch_norm_backward_sums, chunk by chunk
    for (int64_t j = 0; j < plan.count; ++j)
      total = add_sums(total,
                       backward_sums_chunk(x + ch * g.spatial, dy + ch * g.spatial, plan, j,
                                              static_cast<double>(center[ch]), gate,
                                              ch * g.spatial),
                       ch, j);
    sums[ch] = total;
    const BackwardCoefficients<T> b = coefficients.call(coefficients.context, ch, total);
    if (!dx) continue;
    backward_affine_slices(x, dy, dx, g, channel_reversed(g, ch),
                           static_cast<const BackwardAffine<T>*>(nullptr), b, o);
  }
  return true;
}

#define BNORM_INSTANTIATE(T)                                                              \
  template bool batch_norm_forward_fused<T>(const Geometry&, const T*, T*, Moments*,      \
                                            const ForwardCoefficientsFn<T>&, int,         \
                                            const ReluOutput&);                           \
  template bool batch_norm_backward_fused<T>(const Geometry&, const T*, const T*, T*,     \
                                             const T*, BackwardSums*,                     \
                                             const BackwardCoefficientsFn<T>&, int,       \
                                             const ReluGate<T>&);                         \
  template void batch_norm_moments<T>(const Geometry&, const T*, Moments*, int);          \
  template void batch_norm_apply<T>(const Geometry&, const T*, T*, const ChannelAffine<T>&, \
                                    int, const ReluGate<T>&, const ReluOutput&);          \
  template void batch_norm_backward_sums<T>(const Geometry&, const T*, const T*, const T*, \
                                            BackwardSums*, int, const ReluGate<T>&);      \
  template void batch_norm_backward_apply<T>(const Geometry&, const T*, const T*, T*,     \
                                             const BackwardAffine<T>&, int,               \
                                             const ReluGate<T>&);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::kernels
