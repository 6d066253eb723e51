// Reductions over rows of channels (channels-last, and (N, C) input): per-channel sums
// of rows [r0, r1) of ld channels, strided by ld (reduce.h names them).
//
// Rows of fewer than 16 channels run as one flat run with lcm(c, 16) lanes (lanes.h),
// lane l always channel l % c; wider rows run a column loop across channels, four rows
// at a time, with the per-channel accumulators in L1.
#include <algorithm>

#include "kernels/lanes.h"
#include "kernels/reduce.h"

namespace bnorm::kernels {
namespace {

// out[j] = shifted sums of channel c0 + j.
template <class T>
BNORM_INLINE void shifted_sums_rows_impl(const T* x, int64_t ld, int64_t r0, int64_t r1,
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
BNORM_INLINE void backward_sums_rows_impl(const T* x, const T* dy, int64_t ld, int64_t r0,
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
          acc.template add_run<DyFactor::relu_gate>(x + at, dy + at, gp, piece);
        else
          acc.template add_run<DyFactor::none>(x + at, dy + at, gp, piece);
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
  // Four rows at a time, as shifted_sums_rows_impl; a mask gate expands the four rows'
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
}  // namespace

#define BNORM_DEFINE_STRIDED_REDUCTIONS(T)                                                 \
  BNORM_CLONES void shifted_sums_rows(const T* x, int64_t ld, int64_t r0, int64_t r1,      \
                                      int64_t c0, int64_t c1, ShiftedSums* out) {          \
    shifted_sums_rows_impl(x, ld, r0, r1, c0, c1, out);                                    \
  }                                                                                        \
  BNORM_CLONES void backward_sums_rows(const T* x, const T* dy, int64_t ld, int64_t r0,    \
                                       int64_t r1, int64_t c0, int64_t c1,                 \
                                       const T* center, const ReluGate<T>& gate,           \
                                       BackwardSums* out) {                                \
    backward_sums_rows_impl(x, dy, ld, r0, r1, c0, c1, center, gate, out);                 \
  }

BNORM_DEFINE_STRIDED_REDUCTIONS(float)
BNORM_DEFINE_STRIDED_REDUCTIONS(double)
#undef BNORM_DEFINE_STRIDED_REDUCTIONS

}  // namespace bnorm::kernels
