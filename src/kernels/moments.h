// The one statistics layer of every normalization: (count, mean, M2) moments, built
// from shifted sums and merged with Chan's formula, and the sums a backward needs.
// Batch, layer, group and instance norm, RMS norm and SyncBN all reduce to these; the
// vector accumulators that fill them are in lanes.h.
//
// Why not E[x^2] - E[x]^2: it cancels catastrophically when |mean| >> std
// (negative variances, NaN). Shifted sums S1 = sum(x - K), S2 = sum((x - K)^2) with
// a shift K drawn from the data keep every digit as long as |mean - K| is a few
// std, and any single value of the data is within sqrt(m) std of the mean; the
// sums are accumulated in double, so even a worst-case shift costs at most
// log10(m) of double's 16 digits.
//
// Non-finite values propagate as in sum(x) / m and PyTorch (docs/batch_norm.md): a NaN,
// or both +Inf and -Inf, give mean NaN; +Inf (-Inf) alone gives mean +Inf (-Inf); any of
// them gives M2 NaN. The sums carry this for free: no scan of the data looks for them.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace bnorm::kernels {

struct Moments {
  double count = 0;  // number of values
  double mean = 0;
  double m2 = 0;     // sum((x - mean)^2)

  double biased_variance() const { return m2 / count; }
  double unbiased_variance() const { return m2 / (count - 1); }
};

// The shift K of a channel's shifted sums: a value of the data (the sums keep every
// digit), or 0 when that value is +-Inf or NaN (x - Inf would turn every other value
// into -Inf or NaN and the mean of {+Inf, finite...} into NaN instead of +Inf).
inline double finite_shift(double value) { return std::isfinite(value) ? value : 0.0; }

// Moments of `count` values from their sums shifted by `shift`:
//   mean = K + S1 / n,  M2 = S2 - S1^2 / n  (clamped at 0 against rounding; a NaN stays
//   NaN, S2 = S1 = +-Inf giving NaN).
inline Moments moments_from_shifted_sums(double count, double shift, double sum,
                                         double sum_squares) {
  const double m2 = sum_squares - sum * (sum / count);
  return Moments{count, shift + sum / count, m2 < 0 ? 0.0 : m2};
}

// Chan, Golub & LeVeque's pairwise merge:
//   n = na + nb,  delta = mb - ma,
//   mean = ma + delta * nb / n,  M2 = M2a + M2b + delta^2 * na * nb / n.
// A part with a non-finite mean makes the mean ma + mb (+Inf with a finite or +Inf part
// stays +Inf, where delta = mb - ma would turn it into NaN) and M2 NaN.
inline Moments merge(const Moments& a, const Moments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  const double count = a.count + b.count;
  if (!std::isfinite(a.mean) || !std::isfinite(b.mean))
    return Moments{count, a.mean + b.mean, std::numeric_limits<double>::quiet_NaN()};
  const double delta = b.mean - a.mean;
  return Moments{count, a.mean + delta * (b.count / count),
                 a.m2 + b.m2 + delta * delta * (a.count * (b.count / count))};
}

// Shifted sums of some values: s1 = sum(x - K), s2 = sum((x - K)^2), K the shift.
struct ShiftedSums {
  double s1 = 0, s2 = 0;
};

// The sums a backward needs over some values, with xc = x - center (center given) and
// dy the gradient of the output:
//   dy_sum = sum(dy), dy_xc_sum = sum(dy * xc), xc_sum = sum(xc).
struct BackwardSums {
  double dy_sum = 0;
  double dy_xc_sum = 0;
  double xc_sum = 0;
};

// a + b, component by component; the unused (channel, chunk) arguments let it serve as
// a fold (work_split.h).
inline BackwardSums add_sums(const BackwardSums& a, const BackwardSums& b, int64_t = 0,
                             int64_t = 0) {
  return BackwardSums{a.dy_sum + b.dy_sum, a.dy_xc_sum + b.dy_xc_sum, a.xc_sum + b.xc_sum};
}

}  // namespace bnorm::kernels
