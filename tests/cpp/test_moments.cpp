// The shared statistics helper: shifted sums and Chan merges against a two-pass oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/moments.h"
#include "test_support.h"

namespace bnorm::kernels {
namespace {

Moments two_pass(const std::vector<double>& v, size_t begin, size_t end) {
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += v[i];
  const double mean = sum / static_cast<double>(end - begin);
  double m2 = 0;
  for (size_t i = begin; i < end; ++i) m2 += (v[i] - mean) * (v[i] - mean);
  return {static_cast<double>(end - begin), mean, m2};
}

Moments shifted(const std::vector<double>& v, size_t begin, size_t end, double shift) {
  double s1 = 0, s2 = 0;
  for (size_t i = begin; i < end; ++i) {
    s1 += v[i] - shift;
    s2 += (v[i] - shift) * (v[i] - shift);
  }
  return moments_from_shifted_sums(static_cast<double>(end - begin), shift, s1, s2);
}

TEST(Moments, ShiftedSumsMatchTwoPassEvenWithAFarShift) {
  const auto v = test::random_values<double>(1000, 3, 1e6, 1.0);
  const Moments want = two_pass(v, 0, v.size());
  for (double shift : {v[0], 0.0, 1e6 + 30.0}) {
    const Moments got = shifted(v, 0, v.size(), shift);
    EXPECT_NEAR(got.mean, want.mean, 1e-9) << "shift " << shift;
    // A far shift (0 for data at 1e6) costs digits; a shift from the data does not.
    const double tolerance = shift == 0.0 ? 1e-1 : 1e-9;
    EXPECT_NEAR(got.m2 / want.m2, 1.0, tolerance) << "shift " << shift;
  }
}

TEST(Moments, ChanMergeOfUnequalPartsEqualsTheWhole) {
  const auto v = test::random_values<double>(777, 5, -3.0, 2.0);
  const Moments want = two_pass(v, 0, v.size());
  Moments merged;
  for (size_t begin : {0, 1, 100, 101, 500}) {
    const size_t end = begin == 0 ? 1 : begin == 1 ? 100 : begin == 100 ? 101 : begin == 101 ? 500 : v.size();
    merged = merge(merged, two_pass(v, begin, end));
  }
  EXPECT_EQ(merged.count, want.count);
  EXPECT_NEAR(merged.mean, want.mean, 1e-13);
  EXPECT_NEAR(merged.m2, want.m2, 1e-10 * want.m2);
  EXPECT_NEAR(merged.biased_variance(), want.m2 / 777, 1e-12);
  EXPECT_NEAR(merged.unbiased_variance(), want.m2 / 776, 1e-12);
}

TEST(Moments, MergeWithEmptyIsIdentityAndDifferentMeansAddSpread) {
  const Moments a{2, 0.0, 0.0}, b{2, 2.0, 0.0};  // {0, 0} and {2, 2}
  const Moments ab = merge(a, b);
  EXPECT_DOUBLE_EQ(ab.mean, 1.0);
  EXPECT_DOUBLE_EQ(ab.m2, 4.0);  // four values at distance 1
  const Moments same = merge(Moments{}, a);
  EXPECT_EQ(same.count, a.count);
  EXPECT_EQ(merge(b, Moments{}).mean, b.mean);
}

TEST(Moments, RoundingNeverMakesVarianceNegative) {
  const Moments m = moments_from_shifted_sums(3, 0.0, 3.0, 3.0 - 1e-17);  // S2 < S1^2/n by rounding
  EXPECT_GE(m.m2, 0.0);
}

}  // namespace
}  // namespace bnorm::kernels
