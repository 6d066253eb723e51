// One statistics helper for every normalization: (count, mean, M2) moments,
// built from shifted sums and merged with Chan's formula.
//
// Why not E[x^2] - E[x]^2: it cancels catastrophically when |mean| >> std
// (negative variances, NaN). Shifted sums S1 = sum(x - K), S2 = sum((x - K)^2) with
// a shift K drawn from the data keep every digit as long as |mean - K| is a few
// std, and any single value of the data is within sqrt(m) std of the mean; the
// sums are accumulated in double, so even a worst-case shift costs at most
// log10(m) of double's 16 digits.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

struct Moments {
  double count = 0;  // number of values
  double mean = 0;
  double m2 = 0;     // sum((x - mean)^2)

  double biased_variance() const { return m2 / count; }
  double unbiased_variance() const { return m2 / (count - 1); }
};

// Moments of `count` values from their sums shifted by `shift`:
//   mean = K + S1 / n,  M2 = S2 - S1^2 / n  (clamped at 0 against rounding).
inline Moments moments_from_shifted_sums(double count, double shift, double sum,
                                         double sum_squares) {
  const double m2 = sum_squares - sum * (sum / count);
  return Moments{count, shift + sum / count, m2 > 0 ? m2 : 0.0};
}

// Chan, Golub & LeVeque's pairwise merge:
//   n = na + nb,  delta = mb - ma,
//   mean = ma + delta * nb / n,  M2 = M2a + M2b + delta^2 * na * nb / n.
inline Moments merge(const Moments& a, const Moments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  const double count = a.count + b.count;
  const double delta = b.mean - a.mean;
  return Moments{count, a.mean + delta * (b.count / count),
                 a.m2 + b.m2 + delta * delta * (a.count * (b.count / count))};
}

}  // namespace bnorm::kernels
