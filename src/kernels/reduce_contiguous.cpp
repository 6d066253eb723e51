// Reductions over contiguous runs: chunks of a channels-first channel (rows of
// `spatial` values, or pieces of one long row), alone or in blocks of short-row channels
// walked in memory order (reduce.h names them; the lanes are lanes.h's).
//
// The block walk: a channel's slice is n rows of `spatial` values, c * spatial apart.
// Rows of a few hundred bytes ((256,16,8,8): 256 B, 4 KiB apart) are too short for the
// hardware prefetchers; channels c0 .. c1 - 1 of row i, though, are one contiguous run.
// The fused passes therefore take short-row channels in blocks and walk a block in
// memory order: row i of every channel of the block, then row i + 1. Each channel keeps
// its own lanes and sees the same runs in the same order as it does alone, so the
// results are the bits of the channel-at-a-time walk. Measured (one thread, forward
// training): rows of 256 B ((256,16,8,8)) 17 -> 22 GB/s, backward 15.5 -> 20; rows of
// 2.3 KB ((256,6,24,24)) 20 -> 17, so only rows under kShortRowBytes walk in blocks.
#include <algorithm>

#include "kernels/lanes.h"
#include "kernels/reduce.h"

namespace bnorm::kernels {
namespace {

// Moments of one channels-first chunk of channel data `xc`, shifted by `shift`.
template <class T>
BNORM_INLINE Moments moments_chunk_impl(const T* xc, const ChannelsFirstChunks& plan,
                                           int64_t chunk, double shift) {
  static_assert(kLanes == 16, "channels-first runs use 16 lanes");
  double k[kLanes], s1[kLanes] = {}, s2[kLanes] = {};
  for (double& v : k) v = shift;
  const int64_t len = plan.segment_length(chunk);
  ShiftedLanes<2, T> lanes(k);
  for (int64_t seg = 0; seg < plan.segments_in(chunk); ++seg) {
    const int64_t next = plan.next_row_offset(chunk, seg);
    lanes.add_run(xc + plan.segment_offset(chunk, seg), len, next < 0 ? nullptr : xc + next);
  }
  lanes.finish(s1, s2);
  return moments_from_shifted_sums(static_cast<double>(plan.values_in(chunk)), shift,
                                   sum_lanes(s1), sum_lanes(s2));
}


// `index` is the channel's first value's index in the tensor (for the gate).
template <class T>
BNORM_INLINE BackwardSums backward_sums_chunk_impl(const T* xc, const T* dyc,
                                                      const ChannelsFirstChunks& plan,
                                                      int64_t chunk, double center,
                                                      const ReluGate<T>& gate, int64_t index) {
  double k[kLanes], s_dy[kLanes] = {}, s_dyxc[kLanes] = {}, s_xc[kLanes] = {};
  for (double& v : k) v = center;
  alignas(64) T tmp[kSubPiece];
  const int64_t len = plan.segment_length(chunk);
  BackwardLanes<2, T> lanes(k);
  for (int64_t seg = 0; seg < plan.segments_in(chunk); ++seg) {
    const int64_t offset = plan.segment_offset(chunk, seg);
    const int64_t next = plan.next_row_offset(chunk, seg);
    for (int64_t s = 0; s < len; s += kSubPiece) {
      const int64_t piece = std::min(kSubPiece, len - s);
      const int64_t at = offset + s;
      const T* next_x = next < 0 ? nullptr : xc + next + s;
      const T* next_dy = next < 0 ? nullptr : dyc + next + s;
      if (const T* gp = gate_run(gate, index + at, piece, tmp))
        lanes.template add_run<DyFactor::relu_gate>(xc + at, dyc + at, gp, piece, next_x, next_dy);
      else
        lanes.template add_run<DyFactor::none>(xc + at, dyc + at, gp, piece, next_x, next_dy);
    }
  }
  lanes.finish(s_dy, s_dyxc, s_xc);
  return BackwardSums{sum_lanes(s_dy), sum_lanes(s_dyxc), sum_lanes(s_xc)};
}

// Rows r .. r + 3 (ld apart) of `width` channels into the per-channel sums, the four

template <class T>
BNORM_INLINE void moments_block_impl(const T* x, const Geometry& g,
                                        const ChannelsFirstChunks& plan, int64_t c0,
                                        int64_t c1, Moments* moments) {
  const int64_t width = c1 - c0, next_row = g.c * g.spatial;
  double k[kMaxBlockChannels][kLanes];
  ShiftedLanes<2, T> lanes[kMaxBlockChannels];
  for (int64_t b = 0; b < width; ++b) {
    // As moments_chunk: the channel's first value.
    const double shift = finite_shift(static_cast<double>(x[(c0 + b) * g.spatial]));
    for (double& v : k[b]) v = shift;
    moments[c0 + b] = Moments{};
  }
  walk_block_chunks(
      g, plan, c0, c1,
      [&](int64_t) BNORM_INLINE_LAMBDA {
        for (int64_t b = 0; b < width; ++b) lanes[b].reset(k[b]);
      },
      [&](int64_t i, int64_t b, int64_t at) BNORM_INLINE_LAMBDA {
        lanes[b].add_run(x + at, g.spatial, i + 1 < g.n ? x + at + next_row : nullptr);
      },
      [&](int64_t j) BNORM_INLINE_LAMBDA {
        for (int64_t b = 0; b < width; ++b) {
          double s1[kLanes] = {}, s2[kLanes] = {};
          lanes[b].finish(s1, s2);
          moments[c0 + b] = merge(
              moments[c0 + b], moments_from_shifted_sums(static_cast<double>(plan.values_in(j)),
                                                         k[b][0], sum_lanes(s1), sum_lanes(s2)));
        }
      });
}

template <class T>
BNORM_INLINE void backward_sums_block_impl(const T* x, const T* dy, const Geometry& g,
                                              const ChannelsFirstChunks& plan, int64_t c0,
                                              int64_t c1, const T* center,
                                              const ReluGate<T>& gate, BackwardSums* sums) {
  static_assert(kShortRowBytes <= kSubPiece * int64_t{sizeof(float)},
                "a short row is one sub-piece");
  const int64_t width = c1 - c0, next_row = g.c * g.spatial;
  double k[kMaxBlockChannels][kLanes];
  BackwardLanes<2, T> lanes[kMaxBlockChannels];
  alignas(64) T tmp[kSubPiece];
  for (int64_t b = 0; b < width; ++b) {
    for (double& v : k[b]) v = static_cast<double>(center[c0 + b]);
    sums[c0 + b] = BackwardSums{};
  }
  walk_block_chunks(
      g, plan, c0, c1,
      [&](int64_t) BNORM_INLINE_LAMBDA {
        for (int64_t b = 0; b < width; ++b) lanes[b].reset(k[b]);
      },
      [&](int64_t i, int64_t b, int64_t at) BNORM_INLINE_LAMBDA {
        const bool more = i + 1 < g.n;
        const T* next_x = more ? x + at + next_row : nullptr;
        const T* next_dy = more ? dy + at + next_row : nullptr;
        if (const T* gp = gate_run(gate, at, g.spatial, tmp))
          lanes[b].template add_run<DyFactor::relu_gate>(x + at, dy + at, gp, g.spatial, next_x,
                                                         next_dy);
        else
          lanes[b].template add_run<DyFactor::none>(x + at, dy + at, gp, g.spatial, next_x,
                                                    next_dy);
      },
      [&](int64_t j) BNORM_INLINE_LAMBDA {
        for (int64_t b = 0; b < width; ++b) {
          double s_dy[kLanes] = {}, s_dyxc[kLanes] = {}, s_xc[kLanes] = {};
          lanes[b].finish(s_dy, s_dyxc, s_xc);
          sums[c0 + b] = add_sums(
              sums[c0 + b], BackwardSums{sum_lanes(s_dy), sum_lanes(s_dyxc), sum_lanes(s_xc)},
              c0 + b, j);
        }
      });
}

// Consecutive slices of `len` <= kChunk values (slice s at x + s * len), each one
// channels-first chunk: backward_sums_chunk's lanes and bits on each, folded from zero,
// without its per-call work (plan, gate, sub-pieces), prefetching at least
// kSlicePrefetchBytes ahead (policy.h; `more`: the memory after the last slice is part of
// the tensor and read next). (The lanes stay in BackwardLanes: a hand-written copy with
// 64-byte vector locals was spilled with aligned stores that ASan's fake stack frames,
// detect_stack_use_after_return, do not align.)

template <class T>
BNORM_INLINE void backward_sums_slices_impl(const T* x, const T* dy, int64_t len, int64_t count,
                                            const T* center, bool more, BackwardSums* sums) {
  // Prefetch distance: the next slice, or further for short slices.
  const int64_t ahead = std::max(len, kSlicePrefetchBytes / int64_t{sizeof(T)});
  for (int64_t s = 0; s < count; ++s) {
    const T* xs = x + s * len;
    const T* dys = dy + s * len;
    const bool next = more || (s + 1) * len + ahead <= count * len;
    double k[kLanes], s_dy[kLanes] = {}, s_dyxc[kLanes] = {}, s_xc[kLanes] = {};
    for (double& v : k) v = static_cast<double>(center[s]);
    BackwardLanes<2, T> lanes(k);
    lanes.template add_run<DyFactor::none>(xs, dys, nullptr, len, next ? xs + ahead : nullptr,
                                           next ? dys + ahead : nullptr);
    lanes.finish(s_dy, s_dyxc, s_xc);
    sums[s] = add_sums(BackwardSums{},
                       BackwardSums{sum_lanes(s_dy), sum_lanes(s_dyxc), sum_lanes(s_xc)});
  }
}

// The block's rows in reverse memory order (the reduction's last lines first, as

}  // namespace

#define BNORM_DEFINE_CONTIGUOUS_REDUCTIONS(T)                                              \
  BNORM_CLONES Moments moments_chunk(const T* xc, const ChannelsFirstChunks& plan,         \
                                     int64_t chunk, double shift) {                        \
    return moments_chunk_impl(xc, plan, chunk, shift);                                     \
  }                                                                                        \
  BNORM_CLONES void moments_block(const T* x, const Geometry& g,                           \
                                  const ChannelsFirstChunks& plan, int64_t c0, int64_t c1, \
                                  Moments* moments) {                                      \
    moments_block_impl(x, g, plan, c0, c1, moments);                                       \
  }                                                                                        \
  BNORM_CLONES BackwardSums backward_sums_chunk(                                           \
      const T* xc, const T* dyc, const ChannelsFirstChunks& plan, int64_t chunk,           \
      double center, const ReluGate<T>& gate, int64_t index) {                             \
    return backward_sums_chunk_impl(xc, dyc, plan, chunk, center, gate, index);            \
  }                                                                                        \
  BNORM_CLONES void backward_sums_slices(const T* x, const T* dy, int64_t len, int64_t count, \
                                         const T* center, bool more, BackwardSums* sums) {   \
    backward_sums_slices_impl(x, dy, len, count, center, more, sums);                        \
  }                                                                                          \
  BNORM_CLONES void backward_sums_block(const T* x, const T* dy, const Geometry& g,        \
                                        const ChannelsFirstChunks& plan, int64_t c0,       \
                                        int64_t c1, const T* center,                       \
                                        const ReluGate<T>& gate, BackwardSums* sums) {     \
    backward_sums_block_impl(x, dy, g, plan, c0, c1, center, gate, sums);                  \
  }

BNORM_DEFINE_CONTIGUOUS_REDUCTIONS(float)
BNORM_DEFINE_CONTIGUOUS_REDUCTIONS(double)
#undef BNORM_DEFINE_CONTIGUOUS_REDUCTIONS

}  // namespace bnorm::kernels
