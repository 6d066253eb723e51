// The C API of group norm and instance norm: the same results as the front-end it wraps,
// statuses and messages that name the function and the argument, and instance norm's
// identities (backward = group norm's with G = C; running statistics = batch norm's
// fixed-statistics map).
#include <bnorm/bnorm.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "test_support.h"

namespace {

TEST(GroupNormCApi, ForwardAndBackwardRunAndRefuseBadArguments) {
  const int64_t n = 2, c = 6, s = 5, groups = 3;
  const auto x = bnorm::test::random_values<float>(n * c * s, 1, 4.0);
  const auto dy = bnorm::test::random_values<float>(n * c * s, 2);
  std::vector<float> y(n * c * s), mean(n * groups), rstd(n * groups), dx(n * c * s), dw(c), db(c);
  ASSERT_EQ(bnorm_group_norm_forward_f32(BNORM_CHANNELS_LAST, n, c, s, groups, x.data(), y.data(),
                                         nullptr, nullptr, 1e-5, mean.data(), rstd.data()),
            BNORM_SUCCESS);
  ASSERT_EQ(bnorm_group_norm_backward_f32(BNORM_CHANNELS_LAST, n, c, s, groups, x.data(),
                                          dy.data(), dx.data(), nullptr, mean.data(), rstd.data(),
                                          dw.data(), db.data()),
            BNORM_SUCCESS);
  // Normalized: each group of sample 0 has mean 0 and biased variance ~1.
  double sum = 0, sq = 0;
  for (int64_t r = 0; r < s; ++r)
    for (int64_t ch = 0; ch < 2; ++ch) {
      const double v = y[r * c + ch];
      sum += v;
      sq += v * v;
    }
  EXPECT_NEAR(sum / 10, 0.0, 1e-6);
  EXPECT_NEAR(sq / 10, 1.0, 1e-3);

  const std::vector<float> before = y;
  EXPECT_EQ(bnorm_group_norm_forward_f32(BNORM_CHANNELS_LAST, n, c, s, 4, x.data(), y.data(),
                                         nullptr, nullptr, 1e-5, nullptr, nullptr),
            BNORM_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(bnorm_last_error()).find("bnorm_group_norm_forward_f32: groups must divide"),
            std::string::npos)
      << bnorm_last_error();
  EXPECT_EQ(bnorm_group_norm_forward_f32(BNORM_CHANNELS_LAST, n, c, s, groups, x.data(), y.data(),
                                         nullptr, nullptr, 0.0, nullptr, nullptr),
            BNORM_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(bnorm_last_error()).find("eps must be finite and > 0"), std::string::npos);
  EXPECT_EQ(bnorm_group_norm_backward_f32(BNORM_CHANNELS_LAST, n, c, s, groups, x.data(),
                                          dy.data(), y.data(), nullptr, nullptr, rstd.data(),
                                          nullptr, nullptr),
            BNORM_ERROR_NULL_POINTER);
  EXPECT_NE(std::string(bnorm_last_error()).find("save_mean must not be NULL"), std::string::npos);
  EXPECT_EQ(y, before);
}

TEST(InstanceNormCApi, BackwardIsGroupNormWithOneChannelPerGroup) {
  const int64_t n = 3, c = 4, s = 7;
  const auto x = bnorm::test::random_values<double>(n * c * s, 3, -2.0);
  const auto dy = bnorm::test::random_values<double>(n * c * s, 4);
  const auto w = bnorm::test::random_values<double>(c, 5, 1.0);
  std::vector<double> y1(n * c * s), y2(n * c * s), m1(n * c), r1(n * c), m2(n * c), r2(n * c);
  std::vector<double> rm(c, 0.0), rv(c, 1.0);
  ASSERT_EQ(bnorm_instance_norm_forward_training_f64(BNORM_CHANNELS_FIRST, n, c, s, x.data(),
                                                     y1.data(), w.data(), nullptr, 1e-5, 0.1,
                                                     rm.data(), rv.data(), m1.data(), r1.data()),
            BNORM_SUCCESS);
  ASSERT_EQ(bnorm_group_norm_forward_f64(BNORM_CHANNELS_FIRST, n, c, s, c, x.data(), y2.data(),
                                         w.data(), nullptr, 1e-5, m2.data(), r2.data()),
            BNORM_SUCCESS);
  EXPECT_EQ(y1, y2);
  EXPECT_EQ(m1, m2);
  EXPECT_EQ(r1, r2);
  EXPECT_NE(rm, std::vector<double>(c, 0.0));  // updated
  std::vector<double> dx1(n * c * s), dx2(n * c * s), dw1(c), dw2(c);
  ASSERT_EQ(bnorm_instance_norm_backward_f64(BNORM_CHANNELS_FIRST, n, c, s, x.data(), dy.data(),
                                             dx1.data(), w.data(), m1.data(), r1.data(),
                                             dw1.data(), nullptr),
            BNORM_SUCCESS);
  ASSERT_EQ(bnorm_group_norm_backward_f64(BNORM_CHANNELS_FIRST, n, c, s, c, x.data(), dy.data(),
                                          dx2.data(), w.data(), m2.data(), r2.data(), dw2.data(),
                                          nullptr),
            BNORM_SUCCESS);
  EXPECT_EQ(dx1, dx2);
  EXPECT_EQ(dw1, dw2);
}

TEST(InstanceNormCApi, RunningStatisticsAreBatchNormsFixedMap) {
  const int64_t n = 2, c = 3, s = 4;
  const auto x = bnorm::test::random_values<float>(n * c * s, 6);
  const std::vector<float> rm{0.1f, -0.2f, 0.3f}, rv{1.5f, 0.5f, 2.0f};
  std::vector<float> y1(n * c * s), y2(n * c * s);
  ASSERT_EQ(bnorm_instance_norm_forward_inference_f32(BNORM_CHANNELS_LAST, n, c, s, x.data(),
                                                      y1.data(), nullptr, nullptr, rm.data(),
                                                      rv.data(), 1e-5),
            BNORM_SUCCESS);
  ASSERT_EQ(bnorm_batch_norm_forward_inference_f32(BNORM_CHANNELS_LAST, n, c, s, x.data(),
                                                   y2.data(), nullptr, nullptr, rm.data(),
                                                   rv.data(), 1e-5),
            BNORM_SUCCESS);
  EXPECT_EQ(y1, y2);
  EXPECT_EQ(bnorm_instance_norm_forward_inference_f32(BNORM_CHANNELS_LAST, n, c, s, x.data(),
                                                      y1.data(), nullptr, nullptr, rm.data(),
                                                      rv.data(), 0.0),
            BNORM_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(bnorm_last_error()).find("bnorm_instance_norm_forward_inference_f32: eps"),
            std::string::npos);
  EXPECT_EQ(bnorm_instance_norm_forward_training_f32(BNORM_CHANNELS_LAST, n, c, 1, x.data(),
                                                     y1.data(), nullptr, nullptr, 1e-5, 0.1,
                                                     nullptr, nullptr, nullptr, nullptr),
            BNORM_ERROR_TOO_FEW_VALUES);
}

}  // namespace
