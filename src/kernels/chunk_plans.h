// The chunk plans and walks of the kernels: how a channel's values are cut into
// reduction chunks, and which slices an elementwise work item covers. Shape-only: the
// bits of every result depend on these cuts (policy.h's sizes), never on the thread
// count. The threads' share of the work is work_split.h.
//
// Layout of the work
//   channels-first (spatial > 1): channel ch's values are n rows of `spatial`
//     contiguous values, c * spatial apart. Reductions split each channel into chunks
//     of about kChunk values (whole rows, or pieces of one long row).
//   rows of channels (channels-last, and (N, C) input in either layout): rows of c
//     contiguous channels. Reductions split the rows into chunks of about kChunk values
//     and the channels into blocks of kColumnBlock; the inner loop runs across channels.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/geometry.h"
#include "kernels/policy.h"
#include "kernels/simd.h"

namespace bnorm::kernels {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- reduction chunks ---------------------------------------------------------------

// Channels-first chunks of one channel: either rows_per_chunk whole rows, or (rows
// longer than kChunk) one piece of kChunk values of one row.
struct ChannelsFirstChunks {
  int64_t n, spatial, row_stride;  // row i of channel ch starts at (i * c + ch) * spatial
  int64_t pieces_per_row;          // > 1 only when spatial > kChunk
  int64_t rows_per_chunk;
  int64_t count;                   // chunks per channel

  explicit ChannelsFirstChunks(const Geometry& g)
      : n(g.n), spatial(g.spatial), row_stride(g.c * g.spatial),
        pieces_per_row(ceil_div(g.spatial, kChunk)),
        rows_per_chunk(pieces_per_row > 1 ? 1 : std::max<int64_t>(1, kChunk / g.spatial)),
        count(pieces_per_row > 1 ? g.n * pieces_per_row : ceil_div(g.n, rows_per_chunk)) {}

  // A chunk's contiguous segments, as offsets from the channel's first value. (Plain
  // loops over these, not a callback: a lambda's body is compiled outside the caller's
  // target clone, at the baseline instruction set, when GCC does not inline it.)
  int64_t segments_in(int64_t chunk) const {
    if (pieces_per_row > 1) return 1;
    return std::min(n, (chunk + 1) * rows_per_chunk) - chunk * rows_per_chunk;
  }
  int64_t segment_offset(int64_t chunk, int64_t k) const {
    if (pieces_per_row > 1) return (chunk / pieces_per_row) * row_stride + (chunk % pieces_per_row) * kChunk;
    return (chunk * rows_per_chunk + k) * row_stride;
  }
  // The offset of the segment read after segment k of `chunk` when it is another row
  // of the channel (the one below), or -1 (the last row, or pieces of one long row,
  // which are contiguous and need no help).
  int64_t next_row_offset(int64_t chunk, int64_t k) const {
    if (pieces_per_row > 1) return -1;
    const int64_t row = chunk * rows_per_chunk + k;
    return row + 1 < n ? (row + 1) * row_stride : -1;
  }
  int64_t segment_length(int64_t chunk) const {
    if (pieces_per_row > 1) return std::min(kChunk, spatial - (chunk % pieces_per_row) * kChunk);
    return spatial;
  }

  int64_t values_in(int64_t chunk) const {
    if (pieces_per_row > 1) {
      const int64_t begin = (chunk % pieces_per_row) * kChunk;
      return std::min(kChunk, spatial - begin);
    }
    return (std::min(n, (chunk + 1) * rows_per_chunk) - chunk * rows_per_chunk) * spatial;
  }
};

// Rows-of-channels chunks: rows_per_chunk rows of c channels, channels in blocks.
struct RowChunks {
  int64_t rows, c;
  int64_t rows_per_chunk;
  int64_t count;         // row chunks
  int64_t column_blocks;

  explicit RowChunks(const Geometry& g)
      : rows(g.n * g.spatial), c(g.c),
        rows_per_chunk(std::max({kMinRowsPerChunk, kChunk / g.c, ceil_div(rows, kMaxRowChunks)})),
        count(ceil_div(rows, rows_per_chunk)),
        column_blocks(ceil_div(g.c, kColumnBlock)) {}

  int64_t row_begin(int64_t chunk) const { return chunk * rows_per_chunk; }
  int64_t row_end(int64_t chunk) const { return std::min(rows, (chunk + 1) * rows_per_chunk); }
  int64_t rows_in(int64_t chunk) const { return row_end(chunk) - row_begin(chunk); }
};

// The memory-order walk of a block of short-row channels' reductions, chunk by chunk:
// start(j); then row(i, b, offset) for row i of channel c0 + b (values at `offset`), row
// i of every channel before row i + 1; then finish(j). Each channel sees the same runs
// in the same order as it does alone, so the results are the bits of the
// channel-at-a-time walk. (The callbacks are always inlined: a lambda compiled on its
// own would run at the baseline instruction set.)
template <class Start, class Row, class Finish>
BNORM_INLINE void walk_block_chunks(const Geometry& g, const ChannelsFirstChunks& plan,
                                    int64_t c0, int64_t c1, Start&& start, Row&& row,
                                    Finish&& finish) {
  for (int64_t j = 0; j < plan.count; ++j) {
    start(j);
    const int64_t i1 = std::min(g.n, (j + 1) * plan.rows_per_chunk);
    for (int64_t i = j * plan.rows_per_chunk; i < i1; ++i)
      for (int64_t b = 0; b < c1 - c0; ++b) row(i, b, (i * g.c + c0 + b) * g.spatial);
    finish(j);
  }
}

// ---- elementwise walks --------------------------------------------------------------

// Channels-first slices walked inside one clone: a call per slice would cost more than
// a short slice's values ((256,16,8,8) has slices of 64). Slice first + k * step for k in
// [0, count), last first when `reversed`, each in pieces [piece_begin, piece_end) of
// kApplyPiece values (piece_end < 0: to the last piece).
struct SliceWalk {
  int64_t first, count, step;
  bool reversed;
  int64_t piece_begin = 0, piece_end = -1;
};

}  // namespace bnorm::kernels
