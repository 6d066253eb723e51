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
// Instruction sets: the hot loops are compiled for x86-64-v4 (AVX-512), x86-64-v3
// (AVX2 + FMA) and baseline x86-64, and the loader picks one at start-up (GCC
// target_clones). The source stays plain loops written for the vectorizer.
#include "kernels/batch_norm_kernels.h"

#include <algorithm>
#include <cassert>
#include <cstring>
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
constexpr int64_t kMinParallelWork = 1 << 15;  // below this, one thread is faster
// Channels-last partials: at most 256 per channel, and at least 32 rows per chunk, so
// the scratch (<= 24 bytes per channel per chunk) stays under 0.75 bytes per input value.
constexpr int64_t kMaxRowChunks = 256;
constexpr int64_t kMinRowsPerChunk = 32;
constexpr int kLanes = 16;                // independent partial sums per reduction

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int threads_for(int64_t values, int threads) {
  return values < kMinParallelWork ? 1 : threads;
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

  // f(offset of the segment from the channel's first value, length)
  template <class F>
  BNORM_INLINE void for_each_segment(int64_t chunk, F&& f) const {
    if (pieces_per_row > 1) {
      const int64_t row = chunk / pieces_per_row;
      const int64_t begin = (chunk % pieces_per_row) * kChunk;
      f(row * row_stride + begin, std::min(kChunk, spatial - begin));
      return;
    }
    const int64_t row_end = std::min(n, (chunk + 1) * rows_per_chunk);
    for (int64_t row = chunk * rows_per_chunk; row < row_end; ++row) f(row * row_stride, spatial);
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

// d = x - shift[l]:  s1[l] += sum(d),  s2[l] += sum(d^2)  over one contiguous run.
template <int V, class T>
BNORM_INLINE void lane_shifted_sums(const T* x, int64_t len, const double* shift, double* s1,
                                    double* s2) {
  constexpr int P = 8 * V;
  Double8 k[V], a1[V], a2[V];
  for (int v = 0; v < V; ++v) {
    load8(shift + 8 * v, k[v]);
    a1[v] = Double8{};
    a2[v] = Double8{};
  }
  int64_t i = 0;
  for (; i + P <= len; i += P)
    for (int v = 0; v < V; ++v) {
      Double8 d;
      load8(x + i + 8 * v, d);
      d -= k[v];
      a1[v] += d;
      a2[v] += d * d;
    }
  double b1[P], b2[P];
  std::memcpy(b1, a1, sizeof b1);
  std::memcpy(b2, a2, sizeof b2);
  for (int l = 0; i < len; ++i, ++l) {
    const double d = static_cast<double>(x[i]) - shift[l];
    b1[l] += d;
    b2[l] += d * d;
  }
  for (int l = 0; l < P; ++l) {
    s1[l] += b1[l];
    s2[l] += b2[l];
  }
}

// xc = x - center[l]:  s_dy[l] += sum(dy),  s_dyxc[l] += sum(dy * xc),  s_xc[l] += sum(xc).
template <int V, class T>
BNORM_INLINE void lane_backward_sums(const T* x, const T* dy, int64_t len, const double* center,
                                     double* s_dy, double* s_dyxc, double* s_xc) {
  constexpr int P = 8 * V;
  Double8 k[V], g[V], p[V], q[V];
  for (int v = 0; v < V; ++v) {
    load8(center + 8 * v, k[v]);
    g[v] = Double8{};
    p[v] = Double8{};
    q[v] = Double8{};
  }
  int64_t i = 0;
  for (; i + P <= len; i += P)
    for (int v = 0; v < V; ++v) {
      Double8 xc, d;
      load8(x + i + 8 * v, xc);
      load8(dy + i + 8 * v, d);
      xc -= k[v];
      g[v] += d;
      p[v] += d * xc;
      q[v] += xc;
    }
  double bg[P], bp[P], bq[P];
  std::memcpy(bg, g, sizeof bg);
  std::memcpy(bp, p, sizeof bp);
  std::memcpy(bq, q, sizeof bq);
  for (int l = 0; i < len; ++i, ++l) {
    const double xc = static_cast<double>(x[i]) - center[l];
    const double d = static_cast<double>(dy[i]);
    bg[l] += d;
    bp[l] += d * xc;
    bq[l] += xc;
  }
  for (int l = 0; l < P; ++l) {
    s_dy[l] += bg[l];
    s_dyxc[l] += bp[l];
    s_xc[l] += bq[l];
  }
}

// Runs `call` with V = lanes / 8 as a constant (lanes in {16, 32, 48, 64}). A switch
// in the caller, not a lambda: a lambda's body would be compiled outside the caller's
// target clone, at the baseline instruction set.
#define BNORM_WITH_LANES(lanes, call) \
  switch ((lanes) / 8) {              \
    case 2: { constexpr int V = 2; call; } break; \
    case 4: { constexpr int V = 4; call; } break; \
    case 6: { constexpr int V = 6; call; } break; \
    default: { constexpr int V = 8; call; } break; \
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
  plan.for_each_segment(chunk, [&](int64_t offset, int64_t len) {
    lane_shifted_sums<2>(xc + offset, len, k, s1, s2);
  });
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
    for (int64_t l = 0; l < lanes; ++l) k[l] = static_cast<double>(x[l % ld]);
    BNORM_WITH_LANES(lanes, (lane_shifted_sums<V>(x + r0 * ld, (r1 - r0) * ld, k, s1, s2)));
    for (int64_t j = 0; j < width; ++j) out[j] = ShiftedSums{};
    for (int64_t l = 0; l < lanes; ++l) out[l % ld] = ShiftedSums{out[l % ld].s1 + s1[l], out[l % ld].s2 + s2[l]};
    return;
  }
  double s1[kColumnBlock] = {}, s2[kColumnBlock] = {};
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x + r * ld + c0;
    for (int64_t j = 0; j < width; ++j) {
      const double d = static_cast<double>(row[j]) - static_cast<double>(x[c0 + j]);
      s1[j] += d;
      s2[j] += d * d;
    }
  }
  for (int64_t j = 0; j < width; ++j) out[j] = ShiftedSums{s1[j], s2[j]};
}

template <class T>
BNORM_INLINE BackwardSums cf_chunk_backward_sums_impl(const T* xc, const T* dyc,
                                                      const ChannelsFirstChunks& plan,
                                                      int64_t chunk, double center) {
  double k[kLanes], s_dy[kLanes] = {}, s_dyxc[kLanes] = {}, s_xc[kLanes] = {};
  for (double& v : k) v = center;
  plan.for_each_segment(chunk, [&](int64_t offset, int64_t len) {
    lane_backward_sums<2>(xc + offset, dyc + offset, len, k, s_dy, s_dyxc, s_xc);
  });
  return BackwardSums{sum_lanes(s_dy), sum_lanes(s_dyxc), sum_lanes(s_xc)};
}

template <class T>
BNORM_INLINE void rows_backward_sums_impl(const T* x, const T* dy, int64_t ld, int64_t r0,
                                          int64_t r1, int64_t c0, int64_t c1,
                                          const T* center, BackwardSums* out) {
  const int64_t width = c1 - c0;
  if (flat_rows(ld, c0, c1)) {
    const int64_t lanes = flat_period(ld);
    double k[kMaxLanes], a[kMaxLanes] = {}, b[kMaxLanes] = {}, q[kMaxLanes] = {};
    for (int64_t l = 0; l < lanes; ++l) k[l] = static_cast<double>(center[l % ld]);
    BNORM_WITH_LANES(lanes, (lane_backward_sums<V>(x + r0 * ld, dy + r0 * ld, (r1 - r0) * ld, k, a, b, q)));
    for (int64_t j = 0; j < width; ++j) out[j] = BackwardSums{};
    for (int64_t l = 0; l < lanes; ++l) {
      BackwardSums& o = out[l % ld];
      o = BackwardSums{o.dy_sum + a[l], o.dy_xc_sum + b[l], o.xc_sum + q[l]};
    }
    return;
  }
  double s_dy[kColumnBlock] = {}, s_dyxc[kColumnBlock] = {}, s_xc[kColumnBlock] = {};
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * ld + c0;
    const T* gr = dy + r * ld + c0;
    for (int64_t j = 0; j < width; ++j) {
      const double xc = static_cast<double>(xr[j]) - static_cast<double>(center[c0 + j]);
      const double g = static_cast<double>(gr[j]);
      s_dy[j] += g;
      s_dyxc[j] += g * xc;
      s_xc[j] += xc;
    }
  }
  for (int64_t j = 0; j < width; ++j) out[j] = BackwardSums{s_dy[j], s_dyxc[j], s_xc[j]};
}

// y = ((x - hi) - lo) * scale + shift over a contiguous run of one channel.
template <class T>
BNORM_INLINE void affine_run_impl(const T* x, T* y, int64_t len, T hi, T lo, T scale, T shift) {
  for (int64_t i = 0; i < len; ++i) y[i] = ((x[i] - hi) - lo) * scale + shift;
}

// The coefficient arrays of rows of ld channels repeated to `period` values, for the
// flat elementwise passes: out[l] = in[l % ld].
template <class T>
BNORM_INLINE void repeat_to_period(const T* in, int64_t ld, int64_t period, T* out) {
  for (int64_t l = 0; l < period; ++l) out[l] = in[l % ld];
}

// The same across rows of channels; rows of fewer than 16 channels as one flat run in
// blocks of lcm(c, 16) values (same formula per value, so the same bits).
template <class T>
BNORM_INLINE void affine_rows_impl(const T* x, T* y, int64_t ld, int64_t r0, int64_t r1,
                                   const ChannelAffine<T>& a) {
  if (flat_rows(ld, 0, ld)) {
    const int64_t period = flat_period(ld), len = (r1 - r0) * ld;
    T hi[kMaxLanes], lo[kMaxLanes], scale[kMaxLanes], shift[kMaxLanes];
    repeat_to_period(a.center_hi, ld, period, hi);
    repeat_to_period(a.center_lo, ld, period, lo);
    repeat_to_period(a.scale, ld, period, scale);
    repeat_to_period(a.shift, ld, period, shift);
    const T* xs = x + r0 * ld;
    T* ys = y + r0 * ld;
    int64_t i = 0;
    for (; i + period <= len; i += period)
      for (int64_t l = 0; l < period; ++l)
        ys[i + l] = ((xs[i + l] - hi[l]) - lo[l]) * scale[l] + shift[l];
    for (int64_t l = 0; i < len; ++i, ++l) ys[i] = ((xs[i] - hi[l]) - lo[l]) * scale[l] + shift[l];
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * ld;
    T* yr = y + r * ld;
    for (int64_t j = 0; j < ld; ++j)
      yr[j] = ((xr[j] - a.center_hi[j]) - a.center_lo[j]) * a.scale[j] + a.shift[j];
  }
}

// dx = dy * k + ((x - hi) - lo) * q + r over a contiguous run of one channel.
template <class T>
BNORM_INLINE void backward_affine_run_impl(const T* x, const T* dy, T* dx, int64_t len, T hi,
                                           T lo, T k, T q, T r) {
  for (int64_t i = 0; i < len; ++i) dx[i] = dy[i] * k + ((x[i] - hi) - lo) * q + r;
}

template <class T>
BNORM_INLINE void backward_affine_rows_impl(const T* x, const T* dy, T* dx, int64_t ld,
                                            int64_t r0, int64_t r1,
                                            const BackwardAffine<T>& a) {
  if (flat_rows(ld, 0, ld)) {
    const int64_t period = flat_period(ld), len = (r1 - r0) * ld;
    T hi[kMaxLanes], lo[kMaxLanes], k[kMaxLanes], q[kMaxLanes], r[kMaxLanes];
    repeat_to_period(a.center_hi, ld, period, hi);
    repeat_to_period(a.center_lo, ld, period, lo);
    repeat_to_period(a.k, ld, period, k);
    repeat_to_period(a.q, ld, period, q);
    repeat_to_period(a.r, ld, period, r);
    const T* xs = x + r0 * ld;
    const T* gs = dy + r0 * ld;
    T* ds = dx + r0 * ld;
    int64_t i = 0;
    for (; i + period <= len; i += period)
      for (int64_t l = 0; l < period; ++l)
        ds[i + l] = gs[i + l] * k[l] + ((xs[i + l] - hi[l]) - lo[l]) * q[l] + r[l];
    for (int64_t l = 0; i < len; ++i, ++l)
      ds[i] = gs[i] * k[l] + ((xs[i] - hi[l]) - lo[l]) * q[l] + r[l];
    return;
  }
  for (int64_t row = r0; row < r1; ++row) {
    const T* xr = x + row * ld;
    const T* gr = dy + row * ld;
    T* dr = dx + row * ld;
    for (int64_t j = 0; j < ld; ++j)
      dr[j] = gr[j] * a.k[j] + ((xr[j] - a.center_hi[j]) - a.center_lo[j]) * a.q[j] + a.r[j];
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
  BNORM_CLONES BackwardSums cf_chunk_backward_sums(const T* xc, const T* dyc,              \
                                                   const ChannelsFirstChunks& plan,        \
                                                   int64_t chunk, double center) {         \
    return cf_chunk_backward_sums_impl(xc, dyc, plan, chunk, center);                      \
  }                                                                                        \
  BNORM_CLONES void rows_backward_sums(const T* x, const T* dy, int64_t ld, int64_t r0,    \
                                       int64_t r1, int64_t c0, int64_t c1,                 \
                                       const T* center, BackwardSums* out) {               \
    rows_backward_sums_impl(x, dy, ld, r0, r1, c0, c1, center, out);                       \
  }                                                                                        \
  BNORM_CLONES void affine_run(const T* x, T* y, int64_t len, T hi, T lo, T scale,         \
                               T shift) {                                                  \
    affine_run_impl(x, y, len, hi, lo, scale, shift);                                      \
  }                                                                                        \
  BNORM_CLONES void affine_rows(const T* x, T* y, int64_t ld, int64_t r0, int64_t r1,      \
                                const ChannelAffine<T>& a) {                               \
    affine_rows_impl(x, y, ld, r0, r1, a);                                                 \
  }                                                                                        \
  BNORM_CLONES void backward_affine_run(const T* x, const T* dy, T* dx, int64_t len, T hi, \
                                        T lo, T k, T q, T r) {                             \
    backward_affine_run_impl(x, dy, dx, len, hi, lo, k, q, r);                             \
  }                                                                                        \
  BNORM_CLONES void backward_affine_rows(const T* x, const T* dy, T* dx, int64_t ld,       \
                                         int64_t r0, int64_t r1,                           \
                                         const BackwardAffine<T>& a) {                     \
    backward_affine_rows_impl(x, dy, dx, ld, r0, r1, a);                                   \
  }

BNORM_DEFINE_HOT_LOOPS(float)
BNORM_DEFINE_HOT_LOOPS(double)
#undef BNORM_DEFINE_HOT_LOOPS

// ---- how the work is split: shared by every kernel ----------------------------------

// Scratch per calling thread and partial type, reused across calls (no allocation in
// steady state).
template <class Partial>
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

// Elementwise over channels-first data: run_fn(ch, offset, len) for contiguous runs of
// at most kApplyPiece values of one channel.
template <class RunFn>
void for_each_channel_run(const Geometry& g, int nt, RunFn&& run_fn) {
  const int64_t pieces = ceil_div(g.spatial, kApplyPiece);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t item = 0; item < g.n * g.c * pieces; ++item) {
    const int64_t slice = item / pieces;  // (i, ch)
    const int64_t begin = (item % pieces) * kApplyPiece;
    run_fn(slice % g.c, slice * g.spatial + begin, std::min(kApplyPiece, g.spatial - begin));
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

BackwardSums add_sums(const BackwardSums& a, const BackwardSums& b, int64_t, int64_t) {
  return BackwardSums{a.dy_sum + b.dy_sum, a.dy_xc_sum + b.dy_xc_sum, a.xc_sum + b.xc_sum};
}

}  // namespace

// ---- kernels ----------------------------------------------------------------------------

template <class T>
void batch_norm_moments(const Geometry& g, const T* x, Moments* moments, int threads) {
  assert(g.n > 0 && g.c > 0 && g.spatial > 0 && threads >= 1);
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  if (!rows_of_channels(g)) {
    const ChannelsFirstChunks plan(g);
    // Shift: the channel's first value.
    const Moments* partial = channels_first_partials<Moments>(g, plan, nt, [&](int64_t ch, int64_t j) {
      const T* xc = x + ch * g.spatial;
      return cf_chunk_moments(xc, plan, j, static_cast<double>(xc[0]));
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
  fold_in_order(g.c, plan.count, partial, 1, g.c, moments,
                [&](const Moments& total, const ShiftedSums& p, int64_t ch, int64_t j) {
                  return merge(total, moments_from_shifted_sums(static_cast<double>(plan.rows_in(j)),
                                                                static_cast<double>(x[ch]), p.s1, p.s2));
                });
}

template <class T>
void batch_norm_apply(const Geometry& g, const T* x, T* y, const ChannelAffine<T>& a,
                      int threads) {
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  if (!rows_of_channels(g)) {
    for_each_channel_run(g, nt, [&](int64_t ch, int64_t offset, int64_t len) {
      affine_run(x + offset, y + offset, len, a.center_hi[ch], a.center_lo[ch], a.scale[ch],
                 a.shift[ch]);
    });
    return;
  }
  for_each_row_block(g, nt, [&](int64_t r0, int64_t r1) { affine_rows(x, y, g.c, r0, r1, a); });
}

template <class T>
void batch_norm_backward_sums(const Geometry& g, const T* x, const T* dy, const T* center,
                              BackwardSums* sums, int threads) {
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  if (!rows_of_channels(g)) {
    const ChannelsFirstChunks plan(g);
    const BackwardSums* partial = channels_first_partials<BackwardSums>(
        g, plan, nt, [&](int64_t ch, int64_t j) {
          return cf_chunk_backward_sums(x + ch * g.spatial, dy + ch * g.spatial, plan, j,
                                        static_cast<double>(center[ch]));
        });
    fold_in_order(g.c, plan.count, partial, plan.count, 1, sums, add_sums);
    return;
  }
  const RowChunks plan(g);
  const BackwardSums* partial = row_partials<BackwardSums>(
      g, plan, nt, [&](int64_t chunk, int64_t c0, int64_t c1, BackwardSums* out) {
        rows_backward_sums(x, dy, g.c, plan.row_begin(chunk), plan.row_end(chunk), c0, c1,
                           center, out);
      });
  fold_in_order(g.c, plan.count, partial, 1, g.c, sums, add_sums);
}

template <class T>
void batch_norm_backward_apply(const Geometry& g, const T* x, const T* dy, T* dx,
                               const BackwardAffine<T>& a, int threads) {
  const int nt = threads_for(g.n * g.c * g.spatial, threads);
  if (!rows_of_channels(g)) {
    for_each_channel_run(g, nt, [&](int64_t ch, int64_t offset, int64_t len) {
      backward_affine_run(x + offset, dy + offset, dx + offset, len, a.center_hi[ch],
                          a.center_lo[ch], a.k[ch], a.q[ch], a.r[ch]);
    });
    return;
  }
  for_each_row_block(g, nt, [&](int64_t r0, int64_t r1) {
    backward_affine_rows(x, dy, dx, g.c, r0, r1, a);
  });
}

#define BNORM_INSTANTIATE(T)                                                              \
  template void batch_norm_moments<T>(const Geometry&, const T*, Moments*, int);          \
  template void batch_norm_apply<T>(const Geometry&, const T*, T*, const ChannelAffine<T>&, \
                                    int);                                                 \
  template void batch_norm_backward_sums<T>(const Geometry&, const T*, const T*, const T*, \
                                            BackwardSums*, int);                          \
  template void batch_norm_backward_apply<T>(const Geometry&, const T*, const T*, T*,     \
                                             const BackwardAffine<T>&, int);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::kernels
