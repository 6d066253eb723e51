// The elementwise passes (affine.h names them): forward map and backward map side by
// side, each over runs of values [index, index + len) of the tensor, cut into
// sub-pieces of at most kSubPiece values when a gate, a mask or streaming stores are
// involved (a mask's bits are packed from the sub-piece just written, still in L1; a
// streamed piece is staged in L1 and written with streaming stores).
#include <algorithm>

#include "kernels/affine.h"
#include "kernels/lanes.h"
#include "kernels/streaming_store.h"

namespace bnorm::kernels {
namespace {

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
  const int64_t head = len < kAlignedRunValues ? 0 : values_before_line(dx, len);
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
template <class T>
BNORM_INLINE void prefetch_slice_start(const Geometry& g, const SliceWalk& w, int64_t k,
                                       const T* a, const T* b) {
  if (k + 1 >= w.count) return;
  const int64_t next = w.first + (w.reversed ? w.count - 2 - k : k + 1) * w.step;
  const int64_t bytes = std::min(kPrefetchBytes, g.spatial * int64_t{sizeof(T)});
  const int64_t offset = next * g.spatial +
                         (w.reversed ? ceil_div(g.spatial, kApplyPiece) - 1 : 0) * kApplyPiece;
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
      const int64_t slice = (w).first + ((w).reversed ? (w).count - 1 - k_ : k_) * (w).step; \
      const int64_t ch = slice % (g).c;                                                    \
      prefetch_slice_start(g, w, k_, a, b);                                                \
      for (int64_t q_ = p0_; q_ < p1_; ++q_) {                                             \
        const int64_t piece = (w).reversed ? p1_ - 1 - (q_ - p0_) : q_;                   \
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

// The block's rows in reverse memory order (the reduction's last lines first, as
// channel_reversed), coefficients coeff[ch - c0].
template <class T>
BNORM_INLINE void affine_block_reversed_impl(const T* x, T* y, const Geometry& g, int64_t c0,
                                              int64_t c1, const AffineCoefficients<T>* coeff,
                                              const ApplyOptions<T>& o) {
  for (int64_t i = g.n - 1; i >= 0; --i)
    for (int64_t ch = c1 - 1; ch >= c0; --ch) {
      const int64_t at = (i * g.c + ch) * g.spatial;
      affine_run_impl(x + at, y + at, at, g.spatial, coeff[ch - c0], o);
    }
}

template <class T>
BNORM_INLINE void backward_affine_block_reversed_impl(const T* x, const T* dy, T* dx,
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

}  // namespace

#define BNORM_DEFINE_AFFINE_MAPS(T)                                                        \
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
  BNORM_CLONES void affine_block_reversed(const T* x, T* y, const Geometry& g, int64_t c0, \
                                          int64_t c1, const AffineCoefficients<T>* coeff,  \
                                          const ApplyOptions<T>& o) {                      \
    affine_block_reversed_impl(x, y, g, c0, c1, coeff, o);                                 \
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
  }                                                                                        \
  BNORM_CLONES void backward_affine_block_reversed(                                        \
      const T* x, const T* dy, T* dx, const Geometry& g, int64_t c0, int64_t c1,           \
      const BackwardCoefficients<T>* coeff, const ApplyOptions<T>& o) {                    \
    backward_affine_block_reversed_impl(x, dy, dx, g, c0, c1, coeff, o);                   \
  }

BNORM_DEFINE_AFFINE_MAPS(float)
BNORM_DEFINE_AFFINE_MAPS(double)
#undef BNORM_DEFINE_AFFINE_MAPS

}  // namespace bnorm::kernels
