// How the work is split between threads, shared by every kernel: per-thread partials of
// the chunks of chunk_plans.h, folded in a fixed order, and the elementwise passes'
// work items. Chunks are folded in index order whatever thread computed them, so
// results are bitwise identical for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/chunk_plans.h"

namespace bnorm::kernels {

// ---- partials and folds -------------------------------------------------------------

template <class Partial, class Tag = Partial>
Partial* thread_scratch(int64_t count) {
  thread_local std::vector<Partial> buffer;
  if (buffer.size() < static_cast<size_t>(count)) buffer.resize(static_cast<size_t>(count));
  return buffer.data();
}

// Reduction over channels-first chunks, in parallel:
//   partial[ch * plan.count + j] = chunk_fn(ch, j).
template <class Partial, class ChunkFn>
const Partial* channels_first_partials(const Geometry& g, const ChannelsFirstChunks& plan,
                                       int nt, ChunkFn&& chunk_fn) {
  Partial* partial = thread_scratch<Partial>(g.c * plan.count);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t item = 0; item < g.c * plan.count; ++item)
    partial[item] = chunk_fn(item / plan.count, item % plan.count);
  return partial;
}

// Reduction over row chunks and channel blocks of `samples` independent row sets (one
// per sample: group and instance norm's channels-last statistics; batch norm has one),
// in parallel: block_fn(sample, chunk, c0, c1, out) writes the partials of channels
// [c0, c1) over the chunk's rows of that sample to
// out = partial + (sample * plan.count + chunk) * c + c0.
template <class Partial, class BlockFn>
const Partial* sample_row_partials(int64_t samples, int64_t c, const RowChunks& plan, int nt,
                                   BlockFn&& block_fn) {
  Partial* partial = thread_scratch<Partial>(samples * plan.count * c);
  const int64_t per_sample = plan.count * plan.column_blocks;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t item = 0; item < samples * per_sample; ++item) {
    const int64_t sample = item / per_sample;
    const int64_t chunk = item % per_sample / plan.column_blocks;
    const int64_t c0 = (item % plan.column_blocks) * kColumnBlock;
    block_fn(sample, chunk, c0, std::min(c, c0 + kColumnBlock),
             partial + (sample * plan.count + chunk) * c + c0);
  }
  return partial;
}

// The same for one row set: block_fn(chunk, c0, c1, out), out = partial + chunk * c + c0.
template <class Partial, class BlockFn>
const Partial* row_partials(const Geometry& g, const RowChunks& plan, int nt,
                            BlockFn&& block_fn) {
  return sample_row_partials<Partial>(
      1, g.c, plan, nt,
      [&](int64_t, int64_t chunk, int64_t c0, int64_t c1, Partial* out) BNORM_INLINE_LAMBDA {
        block_fn(chunk, c0, c1, out);
      });
}

// out[ch] = fold(... fold(fold(Result{}, p(ch, 0)), p(ch, 1)) ..., p(ch, chunks - 1)),
// p(ch, j) = partial[ch * channel_stride + j * chunk_stride]: always in chunk order,
// which is what makes results independent of the thread count.
template <class Result, class Partial, class Fold>
void fold_in_order(int64_t channels, int64_t chunks, const Partial* partial,
                   int64_t channel_stride, int64_t chunk_stride, Result* out, Fold&& fold) {
  for (int64_t ch = 0; ch < channels; ++ch) {
    Result total{};
    for (int64_t j = 0; j < chunks; ++j)
      total = fold(total, partial[ch * channel_stride + j * chunk_stride], ch, j);
    out[ch] = total;
  }
}

// The same for row-chunk partials p(j, ch) = partial[j * channels + ch], walked chunk by
// chunk so that the reads are contiguous (a channel-major walk strides by `channels`
// partials and missed the cache on every one for wide rows); each channel still folds
// in chunk order, so the results are the same.
template <class Result, class Partial, class Fold>
void fold_row_chunks_in_order(int64_t channels, int64_t chunks, const Partial* partial,
                              Result* out, Fold&& fold) {
  for (int64_t ch = 0; ch < channels; ++ch) out[ch] = Result{};
  for (int64_t j = 0; j < chunks; ++j)
    for (int64_t ch = 0; ch < channels; ++ch)
      out[ch] = fold(out[ch], partial[j * channels + ch], ch, j);
}

// Elementwise over channels-first data: walk_fn(walk) for work items of about
// kApplyPiece values: runs of whole slices (i, ch) in memory order, or one piece of a
// slice longer than that.
template <class WalkFn>
void for_each_slice_walk(const Geometry& g, int nt, WalkFn&& walk_fn) {
  const int64_t slices = g.n * g.c;
  if (g.spatial >= kApplyPiece) {
    const int64_t pieces = ceil_div(g.spatial, kApplyPiece);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t item = 0; item < slices * pieces; ++item)
      walk_fn(SliceWalk{item / pieces, 1, 1, false, item % pieces, item % pieces + 1});
    return;
  }
  const int64_t per_item = kApplyPiece / g.spatial;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t item = 0; item < ceil_div(slices, per_item); ++item) {
    const int64_t first = item * per_item;
    walk_fn(SliceWalk{first, std::min(per_item, slices - first), 1, false});
  }
}

// Elementwise over rows of channels: rows_fn(r0, r1) for blocks of about kApplyPiece values.
template <class RowsFn>
void for_each_row_block(const Geometry& g, int nt, RowsFn&& rows_fn) {
  const int64_t rows = g.n * g.spatial;
  const int64_t rows_per_item = std::max<int64_t>(1, kApplyPiece / g.c);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t item = 0; item < ceil_div(rows, rows_per_item); ++item)
    rows_fn(item * rows_per_item, std::min(rows, (item + 1) * rows_per_item));
}

}  // namespace bnorm::kernels
