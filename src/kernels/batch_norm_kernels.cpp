// Batch-norm CPU kernels: one-pass statistics, normalize, backward sums, backward apply.
//
// Layout of the work
//   channels-first (spatial > 1): channel ch's values are n rows of `spatial`
//     contiguous values, c * spatial apart. Reductions split each channel into chunks
//     of about kChunk values (whole rows, or pieces of one long row).
//   channels-last, and (N, C) input in either layout: rows of c contiguous channels.
//     Reductions split the rows into chunks of about kChunk values and the channels
//     into blocks of kColumnBlock; the inner loop runs across channels.
// Chunk boundaries depend on the shape only, never on the thread count, and chunks
// are merged in index order, so results are bitwise identical for any thread count.
//
// Channels-first training runs fused where it can (batch_norm_forward_fused,
// batch_norm_backward_fused, at the end): channel by channel, or in blocks of short-row
// channels walked in memory order, each channel reduced and then normalized while its
// slice is in L2. The design and its measurements: docs/kernels.md.
//
// Instruction sets: the hot loops are compiled for x86-64-v4 (AVX-512), x86-64-v3
// (AVX2 + FMA) and baseline x86-64, and the loader picks one at start-up (GCC
// target_clones). The source stays plain loops written for the vectorizer.
#include "kernels/batch_norm_kernels.h"
#include "kernels/cache_blocking.h"
#include "kernels/relu_mask.h"
#include "kernels/streaming_store.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <strings.h>
#include <vector>

namespace bnorm::kernels {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BNORM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BNORM_CLONES
#endif
#define BNORM_INLINE inline __attribute__((always_inline))

constexpr int64_t kChunk = 8192;          // values per reduction chunk
constexpr int64_t kColumnBlock = 256;     // channels per channels-last work item
constexpr int64_t kApplyPiece = 16384;    // values per elementwise work item
// Channels-last partials: at most 256 per channel, and at least 32 rows per chunk, so
// the scratch (<= 24 bytes per channel per chunk) stays under 0.75 bytes per input value.
constexpr int64_t kMaxRowChunks = 256;
constexpr int64_t kMinRowsPerChunk = 32;
constexpr int kLanes = 16;                // independent partial sums per reduction

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The threads a kernel uses: one below min_parallel_values() (defined below).
int threads_for(int64_t values, int threads) {
  return values < min_parallel_values() ? 1 : threads;
}

// Channels-first view: does the layout really have per-channel rows? (N, C) input
// (spatial == 1) is the same memory in both layouts and runs as rows of channels.
bool rows_of_channels(const Geometry& g) { return g.channels_last || g.spatial == 1; }

// ---- chunking -------------------------------------------------------------------

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

// ---- hot loops (scalar formula above each) ----------------------------------------

// The reductions keep their partial sums in lanes: lane l of P = 8V lanes takes the
// run's values l, l + P, l + 2P, ... (a run's tail goes to lanes 0, 1, ...). The lanes
// are held as V vectors of 8 doubles (GCC vector types; each target clone lowers them
// to its width), so the compiler keeps them in registers instead of spilling arrays.
// Channels-first runs use P = 16 with one shift for all lanes; rows of c < 16 channels
// use P = lcm(c, 16) as one flat run, lane l then always being channel l % c.
typedef double Double8 __attribute__((vector_size(64)));
typedef float Float8 __attribute__((vector_size(32)));
constexpr int kMaxLanes = 64;

// 8 values at p as doubles (out-parameter: a 64-byte vector returned by value would
// have a different ABI in the non-AVX-512 clones).
BNORM_INLINE void load8(const float* p, Double8& out) {
  Float8 v;
  std::memcpy(&v, p, sizeof v);
  out = __builtin_convertvector(v, Double8);
}
BNORM_INLINE void load8(const double* p, Double8& out) { std::memcpy(&out, p, sizeof out); }

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

// The lanes of one reduction, kept (in registers, once inlined) across all the runs of
// a chunk: a chunk of short rows ((256,16,8,8) has rows of 64 values) would otherwise
// pay the set-up and the spill of the lanes for every row. Within a run, value i goes to
// lane i % P; the run's last len % P values go to the tail lanes 0, 1, ... (separate
// from the vector lanes, so each run is summed the same way wherever it starts).
//
// d = x - shift[l]:  s1[l] += sum(d),  s2[l] += sum(d^2).
template <int V, class T>
struct ShiftedLanes {
  static constexpr int P = 8 * V;
  const double* shift;
  Double8 k[V], a1[V], a2[V];
  double t1[P], t2[P];

  ShiftedLanes() = default;
  BNORM_INLINE explicit ShiftedLanes(const double* lane_shift) { reset(lane_shift); }
  // Empty lanes with shifts lane_shift[0 .. P).
  BNORM_INLINE void reset(const double* lane_shift) {
    shift = lane_shift;
    for (int v = 0; v < V; ++v) {
      load8(shift + 8 * v, k[v]);
      a1[v] = Double8{};
      a2[v] = Double8{};
    }
    for (int l = 0; l < P; ++l) t1[l] = t2[l] = 0;
  }

  // One contiguous run; the run read after it starts at `next` (prefetched as this one
  // is read; nullptr for none).
  // The lanes are copied into locals for the run: a member of an object in an array
  // (the channel-block walk keeps one per channel) would otherwise be loaded and stored
  // around every addition, a store-to-load chain per vector.
  BNORM_INLINE void add_run(const T* x, int64_t len, const T* next = nullptr) {
    Double8 kk[V], b1[V], b2[V];
    for (int v = 0; v < V; ++v) kk[v] = k[v], b1[v] = a1[v], b2[v] = a2[v];
    int64_t i = 0;
    for (; i + P <= len; i += P) {
      for (int64_t line = 0; line < int64_t{P} * int64_t{sizeof(T)}; line += 64)
        prefetch_line(next, i + line / int64_t{sizeof(T)});
      for (int v = 0; v < V; ++v) {
        Double8 d;
        load8(x + i + 8 * v, d);
        d -= kk[v];
        b1[v] += d;
        b2[v] += d * d;
      }
    }
    for (int v = 0; v < V; ++v) a1[v] = b1[v], a2[v] = b2[v];
    for (int l = 0; i < len; ++i, ++l) {
      const double d = static_cast<double>(x[i]) - shift[l];
      t1[l] += d;
      t2[l] += d * d;
    }
  }

  // s1[l] += lane l's sums, for the P lanes.
  BNORM_INLINE void finish(double* s1, double* s2) const {
    double b1[P], b2[P];
    std::memcpy(b1, a1, sizeof b1);
    std::memcpy(b2, a2, sizeof b2);
    for (int l = 0; l < P; ++l) {
      s1[l] += b1[l] + t1[l];
      s2[l] += b2[l] + t2[l];
    }
  }
};

// xc = x - center[l], g = gated dy:
//   s_dy[l] += sum(g),  s_dyxc[l] += sum(g * xc),  s_xc[l] += sum(xc).
// Gated: g = !(gate <= 0) ? dy : 0 (the fused ReLU's backward), else g = dy.
template <int V, class T>
struct BackwardLanes {
  static constexpr int P = 8 * V;
  const double* center;
  Double8 k[V], g[V], p[V], q[V];
  double tg[P], tp[P], tq[P];

  BackwardLanes() = default;
  BNORM_INLINE explicit BackwardLanes(const double* lane_center) { reset(lane_center); }
  BNORM_INLINE void reset(const double* lane_center) {
    center = lane_center;
    for (int v = 0; v < V; ++v) {
      load8(center + 8 * v, k[v]);
      g[v] = Double8{};
      p[v] = Double8{};
      q[v] = Double8{};
    }
    for (int l = 0; l < P; ++l) tg[l] = tp[l] = tq[l] = 0;
  }

  // One run; the next starts at next_x and next_dy (prefetched; nullptr for none).
  template <bool Gated>
  BNORM_INLINE void add_run(const T* x, const T* dy, const T* gate, int64_t len,
                            const T* next_x = nullptr, const T* next_dy = nullptr) {
    Double8 kk[V], bg[V], bp[V], bq[V];  // locals for the run, as in ShiftedLanes
    for (int v = 0; v < V; ++v) kk[v] = k[v], bg[v] = g[v], bp[v] = p[v], bq[v] = q[v];
    int64_t i = 0;
    for (; i + P <= len; i += P) {
      for (int64_t line = 0; line < int64_t{P} * int64_t{sizeof(T)}; line += 64) {
        prefetch_line(next_x, i + line / int64_t{sizeof(T)});
        prefetch_line(next_dy, i + line / int64_t{sizeof(T)});
      }
      for (int v = 0; v < V; ++v) {
        Double8 xc, d;
        load8(x + i + 8 * v, xc);
        load8(dy + i + 8 * v, d);
        if constexpr (Gated) {
          Double8 gv;
          load8(gate + i + 8 * v, gv);
          d = gv <= Double8{} ? Double8{} : d;
        }
        xc -= kk[v];
        bg[v] += d;
        bp[v] += d * xc;
        bq[v] += xc;
      }
    }
    for (int v = 0; v < V; ++v) g[v] = bg[v], p[v] = bp[v], q[v] = bq[v];
    for (int l = 0; i < len; ++i, ++l) {
      const double xc = static_cast<double>(x[i]) - center[l];
      const double d = Gated && gate[i] <= 0 ? 0.0 : static_cast<double>(dy[i]);
      tg[l] += d;
      tp[l] += d * xc;
      tq[l] += xc;
    }
  }

  BNORM_INLINE void finish(double* s_dy, double* s_dyxc, double* s_xc) const {
    double bg[P], bp[P], bq[P];
    std::memcpy(bg, g, sizeof bg);
    std::memcpy(bp, p, sizeof bp);
    std::memcpy(bq, q, sizeof bq);
    for (int l = 0; l < P; ++l) {
      s_dy[l] += bg[l] + tg[l];
      s_dyxc[l] += bp[l] + tp[l];
      s_xc[l] += bq[l] + tq[l];
    }
  }
};

// Gated runs are cut into sub-pieces of kSubPiece values (a multiple of every lane
// period, 16 to 64), so that a bit mask expands into a buffer in L1; ungated runs are
// cut the same way, which keeps the fused backward's sums bitwise equal to the plain
// backward's on the gated dy.
constexpr int64_t kSubPiece = 3072;

// The gate of values [index, index + len) (len <= kSubPiece): the forward's output, or
// its mask expanded into tmp, or nullptr for none.
template <class T>
BNORM_INLINE const T* gate_run(const ReluGate<T>& gate, int64_t index, int64_t len, T* tmp) {
  if (gate.y) return gate.y + index;
  if (!gate.mask) return nullptr;
  expand_relu_mask(gate.mask, index, len, tmp);
  return tmp;
}

// Runs the statement with V = lanes / 8 as a constant (lanes in {16, 32, 48, 64}). A switch
// in the caller, not a lambda: a lambda's body would be compiled outside the caller's
// target clone, at the baseline instruction set.
#define BNORM_WITH_LANES(lanes, ...) \
  switch ((lanes) / 8) {              \
    case 2: { constexpr int V = 2; __VA_ARGS__; } break; \
    case 4: { constexpr int V = 4; __VA_ARGS__; } break; \
    case 6: { constexpr int V = 6; __VA_ARGS__; } break; \
    default: { constexpr int V = 8; __VA_ARGS__; } break; \
  }

// Lanes for rows of c channels run flat: lcm(c, 16).
int64_t flat_period(int64_t c) {
  int64_t p = 16;
  while (p % c != 0) p += 16;
  return p;
}

// Whole rows of fewer than 16 channels run flat (with lcm(c, 16) <= 64 lanes); from 16
// channels on the column loop is as fast (measured at (256,16,8,8)).
BNORM_INLINE bool flat_rows(int64_t ld, int64_t c0, int64_t c1) {
  return c0 == 0 && c1 == ld && ld < 16 && flat_period(ld) <= kMaxLanes;
}

double sum_lanes(const double* lanes) {
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

// Moments of one channels-first chunk of channel data `xc`, shifted by `shift`.
template <class T>
BNORM_INLINE Moments cf_chunk_moments_impl(const T* xc, const ChannelsFirstChunks& plan,
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

// Shifted sums of one chunk of one channel: s1 = sum(x - K), s2 = sum((x - K)^2).
struct ShiftedSums {
  double s1 = 0, s2 = 0;
};

// For channels [c0, c1) over rows [r0, r1), shifted by the first row (K = x[ch]):
// out[j] = shifted sums of channel c0 + j.
template <class T>
BNORM_INLINE void rows_shifted_sums_impl(const T* x, int64_t ld, int64_t r0, int64_t r1,
                                         int64_t c0, int64_t c1, ShiftedSums* out) {
  const int64_t width = c1 - c0;
  if (flat_rows(ld, c0, c1)) {
    const int64_t lanes = flat_period(ld);
    double k[kMaxLanes], s1[kMaxLanes] = {}, s2[kMaxLanes] = {};
    for (int64_t l = 0; l < lanes; ++l) k[l] = finite_shift(static_cast<double>(x[l % ld]));
    BNORM_WITH_LANES(lanes, {
      ShiftedLanes<V, T> acc(k);
      acc.add_run(x + r0 * ld, (r1 - r0) * ld);
      acc.finish(s1, s2);
    });
    for (int64_t j = 0; j < width; ++j) out[j] = ShiftedSums{};
    for (int64_t l = 0; l < lanes; ++l) out[l % ld] = ShiftedSums{out[l % ld].s1 + s1[l], out[l % ld].s2 + s2[l]};
    return;
  }
  // Four rows at a time: the per-channel accumulators (in L1) are read and written once
  // per four values instead of once per value, and the shifts are doubles already:
  //   s1[j] += (d0 + d1) + (d2 + d3),  s2[j] += (d0^2 + d1^2) + (d2^2 + d3^2).
  double k[kColumnBlock], s1[kColumnBlock] = {}, s2[kColumnBlock] = {};
  for (int64_t j = 0; j < width; ++j) k[j] = finite_shift(static_cast<double>(x[c0 + j]));
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const T* a = x + r * ld + c0;
    const T *b = a + ld, *c = b + ld, *e = c + ld;
    for (int64_t j = 0; j < width; ++j) {
      const double d0 = static_cast<double>(a[j]) - k[j], d1 = static_cast<double>(b[j]) - k[j];
      const double d2 = static_cast<double>(c[j]) - k[j], d3 = static_cast<double>(e[j]) - k[j];
      s1[j] += (d0 + d1) + (d2 + d3);
      s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    }
  }
  for (; r < r1; ++r) {
    const T* row = x + r * ld + c0;
    for (int64_t j = 0; j < width; ++j) {
      const double d = static_cast<double>(row[j]) - k[j];
      s1[j] += d;
      s2[j] += d * d;
    }
  }
  for (int64_t j = 0; j < width; ++j) out[j] = ShiftedSums{s1[j], s2[j]};
}

// `index` is the channel's first value's index in the tensor (for the gate).
template <class T>
BNORM_INLINE BackwardSums cf_chunk_backward_sums_impl(const T* xc, const T* dyc,
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
        lanes.template add_run<true>(xc + at, dyc + at, gp, piece, next_x, next_dy);
      else
        lanes.template add_run<false>(xc + at, dyc + at, gp, piece, next_x, next_dy);
    }
  }
  lanes.finish(s_dy, s_dyxc, s_xc);
  return BackwardSums{sum_lanes(s_dy), sum_lanes(s_dyxc), sum_lanes(s_xc)};
}

// Rows r .. r + 3 (ld apart) of `width` channels into the per-channel sums, the four
// values of a channel added together first; dy gated by `gate` (rows gate_ld apart) if
// Gated.
template <bool Gated, class T>
BNORM_INLINE void backward_sums_4_rows(const T* x, const T* dy, const T* gate, int64_t ld,
                                       int64_t gate_ld, int64_t width, const double* k,
                                       double* s_dy, double* s_dyxc, double* s_xc) {
  for (int64_t j = 0; j < width; ++j) {
    double xc[4], g[4];
    for (int u = 0; u < 4; ++u) {
      xc[u] = static_cast<double>(x[u * ld + j]) - k[j];
      g[u] = Gated && gate[u * gate_ld + j] <= 0 ? 0.0 : static_cast<double>(dy[u * ld + j]);
    }
    s_dy[j] += (g[0] + g[1]) + (g[2] + g[3]);
    s_dyxc[j] += (g[0] * xc[0] + g[1] * xc[1]) + (g[2] * xc[2] + g[3] * xc[3]);
    s_xc[j] += (xc[0] + xc[1]) + (xc[2] + xc[3]);
  }
}

template <class T>
BNORM_INLINE void rows_backward_sums_impl(const T* x, const T* dy, int64_t ld, int64_t r0,
                                          int64_t r1, int64_t c0, int64_t c1,
                                          const T* center, const ReluGate<T>& gate,
                                          BackwardSums* out) {
  const int64_t width = c1 - c0;
  alignas(64) T tmp[kSubPiece];
  if (flat_rows(ld, c0, c1)) {
    const int64_t lanes = flat_period(ld);
    double k[kMaxLanes], a[kMaxLanes] = {}, b[kMaxLanes] = {}, q[kMaxLanes] = {};
    for (int64_t l = 0; l < lanes; ++l) k[l] = static_cast<double>(center[l % ld]);
    const int64_t begin = r0 * ld, len = (r1 - r0) * ld;
    BNORM_WITH_LANES(lanes, {
      BackwardLanes<V, T> acc(k);
      for (int64_t s = 0; s < len; s += kSubPiece) {
        const int64_t piece = std::min(kSubPiece, len - s), at = begin + s;
        if (const T* gp = gate_run(gate, at, piece, tmp))
          acc.template add_run<true>(x + at, dy + at, gp, piece);
        else
          acc.template add_run<false>(x + at, dy + at, gp, piece);
      }
      acc.finish(a, b, q);
    });
    for (int64_t j = 0; j < width; ++j) out[j] = BackwardSums{};
    for (int64_t l = 0; l < lanes; ++l) {
      BackwardSums& o = out[l % ld];
      o = BackwardSums{o.dy_sum + a[l], o.dy_xc_sum + b[l], o.xc_sum + q[l]};
    }
    return;
  }
  double k[kColumnBlock], s_dy[kColumnBlock] = {}, s_dyxc[kColumnBlock] = {},
      s_xc[kColumnBlock] = {};
  for (int64_t j = 0; j < width; ++j) k[j] = static_cast<double>(center[c0 + j]);
  int64_t r = r0;
  // Four rows at a time, as rows_shifted_sums_impl; a mask gate expands the four rows'
  // bits into tmp (4 * width <= kSubPiece values), so every gate sums the same way.
  static_assert(4 * kColumnBlock <= kSubPiece, "four rows of a column block fit in tmp");
  for (; r + 4 <= r1; r += 4) {
    const int64_t at = r * ld + c0;
    if (gate.mask) {
      for (int64_t u = 0; u < 4; ++u) gate_run(gate, at + u * ld, width, tmp + u * width);
      backward_sums_4_rows<true>(x + at, dy + at, tmp, ld, width, width, k, s_dy, s_dyxc, s_xc);
    } else if (gate.y) {
      backward_sums_4_rows<true>(x + at, dy + at, gate.y + at, ld, ld, width, k, s_dy, s_dyxc,
                                 s_xc);
    } else {
      backward_sums_4_rows<false>(x + at, dy + at, dy + at, ld, ld, width, k, s_dy, s_dyxc,
                                  s_xc);
    }
  }
  for (; r < r1; ++r) {
    const T* xr = x + r * ld + c0;
    const T* gr = dy + r * ld + c0;
    const T* gate_r = gate_run(gate, r * ld + c0, width, tmp);
    for (int64_t j = 0; j < width; ++j) {
      const double xc = static_cast<double>(xr[j]) - k[j];
      const double g = gate_r && gate_r[j] <= 0 ? 0.0 : static_cast<double>(gr[j]);
      s_dy[j] += g;
      s_dyxc[j] += g * xc;
      s_xc[j] += xc;
    }
  }
  for (int64_t j = 0; j < width; ++j) out[j] = BackwardSums{s_dy[j], s_dyxc[j], s_xc[j]};
}

// ---- elementwise passes --------------------------------------------------------------
// Each works on runs of values [index, index + len) of the tensor, cut into sub-pieces
// of at most kSubPiece values when a gate or a mask is involved (a mask's bits are
// packed from the sub-piece just written, still in L1).

// How an elementwise pass cuts rows [r0, r1) of ld channels whose coefficients repeat
// every `period` values (lcm(c, 16) for flat rows, else c):
//   unpieced: one piece, the whole block;
//   pieced, period <= kSubPiece: pieces of whole periods, at most kSubPiece values;
//   pieced, wider rows: each row in pieces of kSubPiece, coefficients offset to match.
struct RowPiece {
  int64_t at, len;  // values [at, at + len) of the tensor
  int64_t period;   // the kernel's coefficient period
  int64_t coeff;    // offset into the coefficient arrays
};
struct RowPieces {
  int64_t ld, r0, total, period, step, per_row;
  int64_t count;
  RowPieces(int64_t ld_, int64_t r0_, int64_t r1, int64_t period_, bool pieced)
      : ld(ld_), r0(r0_), total((r1 - r0_) * ld_), period(period_),
        step(!pieced ? total : period_ <= kSubPiece ? kSubPiece / period_ * period_ : kSubPiece),
        per_row(pieced && period_ > kSubPiece ? ceil_div(ld_, kSubPiece) : 0),
        count(per_row ? (r1 - r0_) * per_row : ceil_div(total, step)) {}
  RowPiece get(int64_t k) const {
    if (per_row) {
      const int64_t s = (k % per_row) * kSubPiece, len = std::min(kSubPiece, ld - s);
      return RowPiece{(r0 + k / per_row) * ld + s, len, len, s};
    }
    return RowPiece{r0 * ld + k * step, std::min(step, total - k * step), period, 0};
  }
};

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

// y = relu?(((gate(x) - hi) - lo) * scale + shift) for values [begin, end) of a run.
template <bool Gated, bool Relu, class T>
BNORM_INLINE void affine_values(const T* x, const T* gate, T* y, int64_t begin, int64_t end,
                                AffineCoefficients<T> a) {
  for (int64_t i = begin; i < end; ++i) {
    T v = x[i];
    if constexpr (Gated) v = gate[i] <= T(0) ? T(0) : v;
    T z = ((v - a.hi) - a.lo) * a.scale + a.shift;
    if constexpr (Relu) z = z < T(0) ? T(0) : z;
    y[i] = z;
  }
}

// The same over a run of one channel, stores line-aligned after a head.
template <bool Gated, bool Relu, class T>
BNORM_INLINE void affine_kernel(const T* x, const T* gate, T* y, int64_t len,
                                AffineCoefficients<T> a) {
  const int64_t head = values_before_line(y, len);
  affine_values<Gated, Relu>(x, gate, y, 0, head, a);
  affine_values<Gated, Relu>(x, gate, y, head, len, a);
}

// The same with per-value coefficients repeated every `period` values (rows of channels).
template <bool Gated, bool Relu, class T>
BNORM_INLINE void affine_period_kernel(const T* x, const T* gate, T* y, int64_t len,
                                       int64_t period, const T* hi, const T* lo,
                                       const T* scale, const T* shift) {
  int64_t i = 0;
  for (; i + period <= len; i += period)
    for (int64_t l = 0; l < period; ++l) {
      T v = x[i + l];
      if constexpr (Gated) v = gate[i + l] <= T(0) ? T(0) : v;
      T z = ((v - hi[l]) - lo[l]) * scale[l] + shift[l];
      if constexpr (Relu) z = z < T(0) ? T(0) : z;
      y[i + l] = z;
    }
  for (int64_t l = 0; i < len; ++i, ++l) {
    T v = x[i];
    if constexpr (Gated) v = gate[i] <= T(0) ? T(0) : v;
    T z = ((v - hi[l]) - lo[l]) * scale[l] + shift[l];
    if constexpr (Relu) z = z < T(0) ? T(0) : z;
    y[i] = z;
  }
}

// Runs `call` with Gated and Relu as constants.
#define BNORM_WITH_GATE_RELU(gated, relu, call)                                    \
  if (gated) {                                                                     \
    if (relu) { constexpr bool Gated = true, Relu = true; call; }                  \
    else { constexpr bool Gated = true, Relu = false; call; }                      \
  } else {                                                                         \
    if (relu) { constexpr bool Gated = false, Relu = true; call; }                 \
    else { constexpr bool Gated = false, Relu = false; call; }                     \
  }

// Options of an elementwise pass, as the hot loops see them.
template <class T>
struct ApplyOptions {
  ReluGate<T> gate;
  ReluOutput relu;
  int64_t count;  // values in the tensor (the mask's last byte)
  bool stream;    // write the output with streaming stores, through a buffer in L1
  bool pieces() const { return gate.y || gate.mask || relu.mask || stream; }
};

template <class T>
BNORM_INLINE void affine_run_impl(const T* x, T* y, int64_t index, int64_t len,
                                  AffineCoefficients<T> a, const ApplyOptions<T>& o) {
  if (!o.pieces()) {
    if (o.relu.fused) affine_kernel<false, true>(x, x, y, len, a);
    else affine_kernel<false, false>(x, x, y, len, a);
    return;
  }
  alignas(64) T tmp[kSubPiece];
  alignas(64) T staged[kSubPiece];
  for (int64_t s = 0; s < len; s += kSubPiece) {
    const int64_t piece = std::min(kSubPiece, len - s);
    const T* gp = gate_run(o.gate, index + s, piece, tmp);
    T* out = o.stream ? staged : y + s;
    BNORM_WITH_GATE_RELU(gp != nullptr, o.relu.fused,
                         (affine_kernel<Gated, Relu>(x + s, gp, out, piece, a)));
    if (o.relu.mask) pack_relu_mask(out, index + s, piece, o.count, o.relu.mask);
    if (o.stream) stream_store(staged, y + s, piece);
  }
}

// The coefficient arrays of rows of ld channels repeated to `period` values, for the
// flat elementwise passes: out[l] = in[l % ld].
template <class T>
BNORM_INLINE void repeat_to_period(const T* in, int64_t ld, int64_t period, T* out) {
  for (int64_t l = 0; l < period; ++l) out[l] = in[l % ld];
}

// The same across rows [r0, r1) of ld channels. Rows of fewer than 16 channels run as
// one flat run in blocks of lcm(c, 16) values; wider rows one row at a time (same
// formula per value either way, so the same bits).
template <class T>
BNORM_INLINE void affine_rows_impl(const T* x, T* y, int64_t ld, int64_t r0, int64_t r1,
                                   const ChannelAffine<T>& a, const ApplyOptions<T>& o) {
  alignas(64) T tmp[kSubPiece];
  alignas(64) T staged[kSubPiece];
  const bool flat = flat_rows(ld, 0, ld);
  const int64_t period = flat ? flat_period(ld) : ld;
  T hi_r[kMaxLanes], lo_r[kMaxLanes], scale_r[kMaxLanes], shift_r[kMaxLanes];
  const T *hi = a.center_hi, *lo = a.center_lo, *scale = a.scale, *shift = a.shift;
  if (flat) {
    repeat_to_period(a.center_hi, ld, period, hi_r);
    repeat_to_period(a.center_lo, ld, period, lo_r);
    repeat_to_period(a.scale, ld, period, scale_r);
    repeat_to_period(a.shift, ld, period, shift_r);
    hi = hi_r, lo = lo_r, scale = scale_r, shift = shift_r;
  }
  const RowPieces pieces(ld, r0, r1, flat ? period : ld, o.pieces());
  for (int64_t k = 0; k < pieces.count; ++k) {
    const RowPiece p = pieces.get(k);
    const T* gp = gate_run(o.gate, p.at, p.len, tmp);
    T* out = o.stream ? staged : y + p.at;
    BNORM_WITH_GATE_RELU(gp != nullptr, o.relu.fused,
                         (affine_period_kernel<Gated, Relu>(x + p.at, gp, out, p.len,
                                                            p.period, hi + p.coeff, lo + p.coeff,
                                                            scale + p.coeff, shift + p.coeff)));
    if (o.relu.mask) pack_relu_mask(out, p.at, p.len, o.count, o.relu.mask);
    if (o.stream) stream_store(staged, y + p.at, p.len);
  }
}

// dx = gate(dy) * k + ((x - hi) - lo) * q + r, with BackwardCoefficients (header).
template <bool Gated, class T>
BNORM_INLINE void backward_affine_values(const T* x, const T* dy, const T* gate, T* dx,
                                         int64_t begin, int64_t end,
                                         BackwardCoefficients<T> a) {
  for (int64_t i = begin; i < end; ++i) {
    T g = dy[i];
    if constexpr (Gated) g = gate[i] <= T(0) ? T(0) : g;
    dx[i] = g * a.k + ((x[i] - a.hi) - a.lo) * a.q + a.r;
  }
}

// Stores line-aligned after a head, as affine_kernel.
template <bool Gated, class T>
BNORM_INLINE void backward_affine_kernel(const T* x, const T* dy, const T* gate, T* dx,
                                         int64_t len, BackwardCoefficients<T> a) {
  const int64_t head = values_before_line(dx, len);
  backward_affine_values<Gated>(x, dy, gate, dx, 0, head, a);
  backward_affine_values<Gated>(x, dy, gate, dx, head, len, a);
}

template <bool Gated, class T>
BNORM_INLINE void backward_affine_period_kernel(const T* x, const T* dy, const T* gate, T* dx,
                                                int64_t len, int64_t period, const T* hi,
                                                const T* lo, const T* k, const T* q,
                                                const T* r) {
  int64_t i = 0;
  for (; i + period <= len; i += period)
    for (int64_t l = 0; l < period; ++l) {
      T g = dy[i + l];
      if constexpr (Gated) g = gate[i + l] <= T(0) ? T(0) : g;
      dx[i + l] = g * k[l] + ((x[i + l] - hi[l]) - lo[l]) * q[l] + r[l];
    }
  for (int64_t l = 0; i < len; ++i, ++l) {
    T g = dy[i];
    if constexpr (Gated) g = gate[i] <= T(0) ? T(0) : g;
    dx[i] = g * k[l] + ((x[i] - hi[l]) - lo[l]) * q[l] + r[l];
  }
}

template <class T>
BNORM_INLINE void backward_affine_run_impl(const T* x, const T* dy, T* dx, int64_t index,
                                           int64_t len, BackwardCoefficients<T> a,
                                           const ApplyOptions<T>& o) {
  if (!o.pieces()) {
    backward_affine_kernel<false>(x, dy, dy, dx, len, a);
    return;
  }
  alignas(64) T tmp[kSubPiece];
  alignas(64) T staged[kSubPiece];
  for (int64_t s = 0; s < len; s += kSubPiece) {
    const int64_t piece = std::min(kSubPiece, len - s);
    T* out = o.stream ? staged : dx + s;
    if (const T* gp = gate_run(o.gate, index + s, piece, tmp))
      backward_affine_kernel<true>(x + s, dy + s, gp, out, piece, a);
    else
      backward_affine_kernel<false>(x + s, dy + s, gp, out, piece, a);
    if (o.stream) stream_store(staged, dx + s, piece);
  }
}

template <class T>
BNORM_INLINE void backward_affine_rows_impl(const T* x, const T* dy, T* dx, int64_t ld,
                                            int64_t r0, int64_t r1,
                                            const BackwardAffine<T>& a,
                                            const ApplyOptions<T>& o) {
  alignas(64) T tmp[kSubPiece];
  alignas(64) T staged[kSubPiece];
  const bool flat = flat_rows(ld, 0, ld);
  const int64_t period = flat ? flat_period(ld) : ld;
  T hi_r[kMaxLanes], lo_r[kMaxLanes], k_r[kMaxLanes], q_r[kMaxLanes], r_r[kMaxLanes];
  const T *hi = a.center_hi, *lo = a.center_lo, *k = a.k, *q = a.q, *r = a.r;
  if (flat) {
    repeat_to_period(a.center_hi, ld, period, hi_r);
    repeat_to_period(a.center_lo, ld, period, lo_r);
    repeat_to_period(a.k, ld, period, k_r);
    repeat_to_period(a.q, ld, period, q_r);
    repeat_to_period(a.r, ld, period, r_r);
    hi = hi_r, lo = lo_r, k = k_r, q = q_r, r = r_r;
  }
  const RowPieces pieces(ld, r0, r1, flat ? period : ld, o.pieces());
  for (int64_t j = 0; j < pieces.count; ++j) {
    const RowPiece p = pieces.get(j);
    const int64_t c = p.coeff;
    T* out = o.stream ? staged : dx + p.at;
    if (const T* gp = gate_run(o.gate, p.at, p.len, tmp))
      backward_affine_period_kernel<true>(x + p.at, dy + p.at, gp, out, p.len, p.period,
                                          hi + c, lo + c, k + c, q + c, r + c);
    else
      backward_affine_period_kernel<false>(x + p.at, dy + p.at, gp, out, p.len, p.period,
                                           hi + c, lo + c, k + c, q + c, r + c);
    if (o.stream) stream_store(staged, dx + p.at, p.len);
  }
}

// Channels-first slices walked inside one clone: a call per slice would cost more than
// a short slice's values ((256,16,8,8) has slices of 64). Slice first + k * step for k in
// [0, count), last first when `backwards`, each in pieces [piece_begin, piece_end) of
// kApplyPiece values (piece_end < 0: to the last piece).
struct SliceWalk {
  int64_t first, count, step;
  bool backwards;
  int64_t piece_begin = 0, piece_end = -1;
};

// The per-channel values of a walk: from arrays indexed by channel (per_channel), or
// one channel's (single, when per_channel is null).
template <class T>
BNORM_INLINE AffineCoefficients<T> coefficients_of(const ChannelAffine<T>* per_channel,
                                                   const AffineCoefficients<T>& single,
                                                   int64_t ch) {
  if (!per_channel) return single;
  return {per_channel->center_hi[ch], per_channel->center_lo[ch], per_channel->scale[ch],
          per_channel->shift[ch]};
}
template <class T>
BNORM_INLINE BackwardCoefficients<T> coefficients_of(const BackwardAffine<T>* per_channel,
                                                     const BackwardCoefficients<T>& single,
                                                     int64_t ch) {
  if (!per_channel) return single;
  return {per_channel->center_hi[ch], per_channel->center_lo[ch], per_channel->k[ch],
          per_channel->q[ch], per_channel->r[ch]};
}

// The first lines of the slice a walk reads next, from each of two inputs (b may be
// null): slices of a few hundred bytes, c * spatial apart, are too short for the
// hardware prefetcher to catch (on (256,16,8,8) the loads of x were a third of the
// normalize pass's time, waiting on L2).
constexpr int64_t kPrefetchBytes = 1024;
template <class T>
BNORM_INLINE void prefetch_slice_start(const Geometry& g, const SliceWalk& w, int64_t k,
                                       const T* a, const T* b) {
  if (k + 1 >= w.count) return;
  const int64_t next = w.first + (w.backwards ? w.count - 2 - k : k + 1) * w.step;
  const int64_t bytes = std::min(kPrefetchBytes, g.spatial * int64_t{sizeof(T)});
  const int64_t offset = next * g.spatial +
                         (w.backwards ? ceil_div(g.spatial, kApplyPiece) - 1 : 0) * kApplyPiece;
  for (int64_t line = 0; line < bytes; line += 64) {
    __builtin_prefetch(a + offset + line / int64_t{sizeof(T)}, 0, 3);
    if (b) __builtin_prefetch(b + offset + line / int64_t{sizeof(T)}, 0, 3);
  }
}

// run(offset, len, ch) for every piece of the walk, in its order, with the start of the
// next slice of inputs a and b prefetched.
#define BNORM_FOR_EACH_PIECE(g, w, a, b, ...)                                              \
  {                                                                                        \
    const int64_t pieces_ = ceil_div((g).spatial, kApplyPiece);                            \
    const int64_t p0_ = (w).piece_begin, p1_ = (w).piece_end < 0 ? pieces_ : (w).piece_end; \
    for (int64_t k_ = 0; k_ < (w).count; ++k_) {                                           \
      const int64_t slice = (w).first + ((w).backwards ? (w).count - 1 - k_ : k_) * (w).step; \
      const int64_t ch = slice % (g).c;                                                    \
      prefetch_slice_start(g, w, k_, a, b);                                                \
      for (int64_t q_ = p0_; q_ < p1_; ++q_) {                                             \
        const int64_t piece = (w).backwards ? p1_ - 1 - (q_ - p0_) : q_;                   \
        const int64_t offset = slice * (g).spatial + piece * kApplyPiece;                  \
        const int64_t len = std::min(kApplyPiece, (g).spatial - piece * kApplyPiece);      \
        __VA_ARGS__;                                                                       \
      }                                                                                    \
    }                                                                                      \
  }

template <class T>
BNORM_INLINE void affine_slices_impl(const T* x, T* y, const Geometry& g, const SliceWalk& w,
                                     const ChannelAffine<T>* per_channel,
                                     const AffineCoefficients<T>& single,
                                     const ApplyOptions<T>& o) {
  BNORM_FOR_EACH_PIECE(g, w, x, static_cast<const T*>(nullptr), affine_run_impl(x + offset, y + offset, offset, len,
                                             coefficients_of(per_channel, single, ch), o));
}

template <class T>
BNORM_INLINE void backward_affine_slices_impl(const T* x, const T* dy, T* dx, const Geometry& g,
                                              const SliceWalk& w,
                                              const BackwardAffine<T>* per_channel,
                                              const BackwardCoefficients<T>& single,
                                              const ApplyOptions<T>& o) {
  BNORM_FOR_EACH_PIECE(g, w, x, dy, backward_affine_run_impl(x + offset, dy + offset, dx + offset,
                                                      offset, len,
                                                      coefficients_of(per_channel, single, ch),
                                                      o));
}

// ---- channels-first blocks walked in memory order ---------------------------------
// A channel's slice is n rows of `spatial` values, c * spatial apart. Rows of a few
// hundred bytes ((256,16,8,8): 256 B, 4 KiB apart) are too short for the hardware
// prefetchers; channels c0 .. c1 - 1 of row i, though, are one contiguous run. The fused
// passes therefore take short-row channels in blocks and walk a block in memory order:
// row i of every channel of the block, then row i + 1. Each channel keeps its own
// lanes and sees the same runs in the same order as it does alone, so the results are
// the bits of the channel-at-a-time walk. Measured (one thread, forward training): rows
// of 256 B ((256,16,8,8)) 17 -> 22 GB/s, backward 15.5 -> 20; rows of 2.3 KB
// ((256,6,24,24)) 20 -> 17, so only rows under 512 bytes walk in blocks.
constexpr int64_t kMaxBlockChannels = 32;
constexpr int64_t kShortRowBytes = 512;

BackwardSums add_sums(const BackwardSums& a, const BackwardSums& b, int64_t, int64_t) {
  return BackwardSums{a.dy_sum + b.dy_sum, a.dy_xc_sum + b.dy_xc_sum, a.xc_sum + b.xc_sum};
}

// The memory-order walk of a block's reductions, chunk by chunk: start(j); then
// row(i, b, offset) for row i of channel c0 + b (values at `offset`), row i of every
// channel before row i + 1; then finish(j). (The callbacks are always inlined: a lambda
// compiled on its own would run at the baseline instruction set.)
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
#define BNORM_INLINE_LAMBDA __attribute__((always_inline))

template <class T>
BNORM_INLINE void cf_block_moments_impl(const T* x, const Geometry& g,
                                        const ChannelsFirstChunks& plan, int64_t c0,
                                        int64_t c1, Moments* moments) {
  const int64_t width = c1 - c0, next_row = g.c * g.spatial;
  double k[kMaxBlockChannels][kLanes];
  ShiftedLanes<2, T> lanes[kMaxBlockChannels];
  for (int64_t b = 0; b < width; ++b) {
    // As cf_chunk_moments: the channel's first value.
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
BNORM_INLINE void cf_block_backward_sums_impl(const T* x, const T* dy, const Geometry& g,
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
          lanes[b].template add_run<true>(x + at, dy + at, gp, g.spatial, next_x, next_dy);
        else
          lanes[b].template add_run<false>(x + at, dy + at, gp, g.spatial, next_x, next_dy);
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

// The block's rows in reverse memory order (the reduction's last lines first, as
// channel_backwards), coefficients coeff[ch - c0].
template <class T>
BNORM_INLINE void affine_block_backwards_impl(const T* x, T* y, const Geometry& g, int64_t c0,
                                              int64_t c1, const AffineCoefficients<T>* coeff,
                                              const ApplyOptions<T>& o) {
  for (int64_t i = g.n - 1; i >= 0; --i)
    for (int64_t ch = c1 - 1; ch >= c0; --ch) {
      const int64_t at = (i * g.c + ch) * g.spatial;
      affine_run_impl(x + at, y + at, at, g.spatial, coeff[ch - c0], o);
    }
}

template <class T>
BNORM_INLINE void backward_affine_block_backwards_impl(const T* x, const T* dy, T* dx,
                                                       const Geometry& g, int64_t c0,
                                                       int64_t c1,
                                                       const BackwardCoefficients<T>* coeff,
                                                       const ApplyOptions<T>& o) {
  for (int64_t i = g.n - 1; i >= 0; --i)
    for (int64_t ch = c1 - 1; ch >= c0; --ch) {
      const int64_t at = (i * g.c + ch) * g.spatial;
      backward_affine_run_impl(x + at, dy + at, dx + at, at, g.spatial, coeff[ch - c0], o);
    }
}

// One compiled clone set per hot loop and element type.
#define BNORM_DEFINE_HOT_LOOPS(T)                                                          \
  BNORM_CLONES Moments cf_chunk_moments(const T* xc, const ChannelsFirstChunks& plan,      \
                                        int64_t chunk, double shift) {                     \
    return cf_chunk_moments_impl(xc, plan, chunk, shift);                                  \
  }                                                                                        \
  BNORM_CLONES void rows_shifted_sums(const T* x, int64_t ld, int64_t r0, int64_t r1,      \
                                      int64_t c0, int64_t c1, ShiftedSums* out) {          \
    rows_shifted_sums_impl(x, ld, r0, r1, c0, c1, out);                                    \
  }                                                                                        \
  BNORM_CLONES BackwardSums cf_chunk_backward_sums(                                        \
      const T* xc, const T* dyc, const ChannelsFirstChunks& plan, int64_t chunk,           \
      double center, const ReluGate<T>& gate, int64_t index) {                             \
    return cf_chunk_backward_sums_impl(xc, dyc, plan, chunk, center, gate, index);         \
  }                                                                                        \
  BNORM_CLONES void rows_backward_sums(const T* x, const T* dy, int64_t ld, int64_t r0,    \
                                       int64_t r1, int64_t c0, int64_t c1,                 \
                                       const T* center, const ReluGate<T>& gate,           \
                                       BackwardSums* out) {                                \
    rows_backward_sums_impl(x, dy, ld, r0, r1, c0, c1, center, gate, out);                 \
  }                                                                                        \
  BNORM_CLONES void cf_block_moments(const T* x, const Geometry& g,                        \
                                     const ChannelsFirstChunks& plan, int64_t c0,          \
                                     int64_t c1, Moments* moments) {                       \
    cf_block_moments_impl(x, g, plan, c0, c1, moments);                                    \
  }                                                                                        \
  BNORM_CLONES void cf_block_backward_sums(const T* x, const T* dy, const Geometry& g,     \
                                           const ChannelsFirstChunks& plan, int64_t c0,    \
                                           int64_t c1, const T* center,                    \
                                           const ReluGate<T>& gate, BackwardSums* sums) {  \
    cf_block_backward_sums_impl(x, dy, g, plan, c0, c1, center, gate, sums);               \
  }                                                                                        \
  BNORM_CLONES void affine_block_backwards(const T* x, T* y, const Geometry& g, int64_t c0, \
                                           int64_t c1, const AffineCoefficients<T>* coeff, \
                                           const ApplyOptions<T>& o) {                     \
    affine_block_backwards_impl(x, y, g, c0, c1, coeff, o);                                \
  }                                                                                        \
  BNORM_CLONES void backward_affine_block_backwards(                                       \
      const T* x, const T* dy, T* dx, const Geometry& g, int64_t c0, int64_t c1,           \
      const BackwardCoefficients<T>* coeff, const ApplyOptions<T>& o) {                    \
    backward_affine_block_backwards_impl(x, dy, dx, g, c0, c1, coeff, o);                  \
  }                                                                                        \
  BNORM_CLONES void affine_slices(const T* x, T* y, const Geometry& g, const SliceWalk& w, \
                                  const ChannelAffine<T>* per_channel,                     \
                                  const AffineCoefficients<T>& single,                     \
                                  const ApplyOptions<T>& o) {                              \
    affine_slices_impl(x, y, g, w, per_channel, single, o);                                \
  }                                                                                        \
  BNORM_CLONES void affine_rows(const T* x, T* y, int64_t ld, int64_t r0, int64_t r1,      \
                                const ChannelAffine<T>& a, const ApplyOptions<T>& o) {     \
    affine_rows_impl(x, y, ld, r0, r1, a, o);                                              \
  }                                                                                        \
  BNORM_CLONES void backward_affine_slices(const T* x, const T* dy, T* dx, const Geometry& g, \
                                           const SliceWalk& w,                             \
                                           const BackwardAffine<T>* per_channel,           \
                                           const BackwardCoefficients<T>& single,          \
                                           const ApplyOptions<T>& o) {                     \
    backward_affine_slices_impl(x, dy, dx, g, w, per_channel, single, o);                  \
  }                                                                                        \
  BNORM_CLONES void backward_affine_rows(const T* x, const T* dy, T* dx, int64_t ld,       \
                                         int64_t r0, int64_t r1,                           \
                                         const BackwardAffine<T>& a,                       \
                                         const ApplyOptions<T>& o) {                       \
    backward_affine_rows_impl(x, dy, dx, ld, r0, r1, a, o);                                \
  }

BNORM_DEFINE_HOT_LOOPS(float)
BNORM_DEFINE_HOT_LOOPS(double)
#undef BNORM_DEFINE_HOT_LOOPS

// ---- how the work is split: shared by every kernel ----------------------------------

// Scratch per calling thread, partial type and tag, reused across calls (no allocation
// in steady state).
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

// Reduction over row chunks and channel blocks, in parallel: block_fn(chunk, c0, c1, out)
// writes the partials of channels [c0, c1) over the chunk's rows to
// out = partial + chunk * c + c0.
template <class Partial, class BlockFn>
const Partial* row_partials(const Geometry& g, const RowChunks& plan, int nt,
                            BlockFn&& block_fn) {
  Partial* partial = thread_scratch<Partial>(plan.count * g.c);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t item = 0; item < plan.count * plan.column_blocks; ++item) {
    const int64_t chunk = item / plan.column_blocks;
    const int64_t c0 = (item % plan.column_blocks) * kColumnBlock;
    block_fn(chunk, c0, std::min(g.c, c0 + kColumnBlock), partial + chunk * g.c + c0);
  }
  return partial;
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

}  // namespace

// Below this many values one thread is faster than several: the cost of waking the
// other threads is what it is weighed against. Spinning threads (libgomp's default)
// wake in microseconds: 2^15 values. Sleeping ones (OMP_WAIT_POLICY=passive, which the
// bnorm command sets on a shared machine) take a futex wake-up, 60-80 us here, as long
// as a thread needs for half a million values: measured, 2 threads against 1, fused
// forward training: (256,16,10,10) 0.21 against 0.18 ms, (256,6,24,24) 0.26 against
// 0.38 ms.
int64_t min_parallel_values() {
  static const int64_t values = [] {
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    return policy && strcasecmp(policy, "passive") == 0 ? int64_t{1} << 19 : int64_t{1} << 15;
  }();
  return values;
}

// ---- kernels ----------------------------------------------------------------------------

template <class T>
void batch_norm_moments(const Geometry& g, const T* x, Moments* moments, int threads) {
  assert(g.n > 0 && g.c > 0 && g.spatial > 0 && threads >= 1);
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  if (!rows_of_channels(g)) {
    const ChannelsFirstChunks plan(g);
    // Shift: the channel's first value (finite_shift: 0 if it is not finite).
    const Moments* partial = channels_first_partials<Moments>(g, plan, nt, [&](int64_t ch, int64_t j) {
      const T* xc = x + ch * g.spatial;
      return cf_chunk_moments(xc, plan, j, finite_shift(static_cast<double>(xc[0])));
    });
    fold_in_order(g.c, plan.count, partial, plan.count, 1, moments,
                  [](const Moments& total, const Moments& p, int64_t, int64_t) { return merge(total, p); });
    return;
  }
  const RowChunks plan(g);
  const ShiftedSums* partial = row_partials<ShiftedSums>(
      g, plan, nt, [&](int64_t chunk, int64_t c0, int64_t c1, ShiftedSums* out) {
        rows_shifted_sums(x, g.c, plan.row_begin(chunk), plan.row_end(chunk), c0, c1, out);
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
          return cf_chunk_backward_sums(x + ch * g.spatial, dy + ch * g.spatial, plan, j,
                                        static_cast<double>(center[ch]), gate, ch * g.spatial);
        });
    fold_in_order(g.c, plan.count, partial, plan.count, 1, sums, add_sums);
    return;
  }
  const RowChunks plan(g);
  const BackwardSums* partial = row_partials<BackwardSums>(
      g, plan, nt, [&](int64_t chunk, int64_t c0, int64_t c1, BackwardSums* out) {
        rows_backward_sums(x, dy, g.c, plan.row_begin(chunk), plan.row_end(chunk), c0, c1,
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
// whole channels per thread must keep the threads busy: c / (nt * ceil(c / nt)) of their
// time, at least 3/4 (the separate passes move 1.5x (forward) to 1.7x (backward) the
// bytes, so below that they win).
bool fused_channels(const Geometry& g, int nt, int64_t slice_bytes) {
  if (rows_of_channels(g) || slice_bytes > fused_slice_budget()) return false;
  return nt == 1 || 4 * g.c >= 3 * nt * ceil_div(g.c, nt);
}

// Channel ch's slices, last piece first: the reduction has just read the slice front to
// back, so its end is what the cache still holds; going backwards reads that part before
// the lines that come back for it evict it. A slice larger than the L2 then still has its
// last L2's worth read from there, where a forward walk would miss on every line.
SliceWalk channel_backwards(const Geometry& g, int64_t ch) {
  return SliceWalk{ch, g.n, g.c, true};
}

// Channels per work item of a fused pass: 1, or for short rows a block walked in memory
// order (above), as many channels as keep every thread busy, fit kMaxBlockChannels and
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
      cf_block_moments(x, g, plan, c0, c1, moments);
      AffineCoefficients<T> a[kMaxBlockChannels];
      for (int64_t ch = c0; ch < c1; ++ch)
        a[ch - c0] = coefficients.call(coefficients.context, ch, moments[ch]);
      affine_block_backwards(x, y, g, c0, c1, a, o);
    }
    return true;
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t ch = 0; ch < g.c; ++ch) {
    const T* xc = x + ch * g.spatial;
    Moments total{};  // the fold of batch_norm_moments, chunk by chunk
    for (int64_t j = 0; j < plan.count; ++j)
      total = merge(total,
                    cf_chunk_moments(xc, plan, j, finite_shift(static_cast<double>(xc[0]))));
    moments[ch] = total;
    const AffineCoefficients<T> a = coefficients.call(coefficients.context, ch, total);
    affine_slices(x, y, g, channel_backwards(g, ch), static_cast<const ChannelAffine<T>*>(nullptr),
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
      cf_block_backward_sums(x, dy, g, plan, c0, c1, center, gate, sums);
      BackwardCoefficients<T> b[kMaxBlockChannels];
      for (int64_t ch = c0; ch < c1; ++ch)
        b[ch - c0] = coefficients.call(coefficients.context, ch, sums[ch]);
      if (dx) backward_affine_block_backwards(x, dy, dx, g, c0, c1, b, o);
    }
    return true;
  }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t ch = 0; ch < g.c; ++ch) {
    BackwardSums total{};  // the fold of batch_norm_backward_sums, chunk by chunk
    for (int64_t j = 0; j < plan.count; ++j)
      total = add_sums(total,
                       cf_chunk_backward_sums(x + ch * g.spatial, dy + ch * g.spatial, plan, j,
                                              static_cast<double>(center[ch]), gate,
                                              ch * g.spatial),
                       ch, j);
    sums[ch] = total;
    const BackwardCoefficients<T> b = coefficients.call(coefficients.context, ch, total);
    if (!dx) continue;
    backward_affine_slices(x, dy, dx, g, channel_backwards(g, ch),
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
