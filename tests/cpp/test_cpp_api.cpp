// The C++ API: the BatchNorm<T> module (train/eval, running stats, backward, state) and
// the functional API's checks that the C API cannot make.
#include <gtest/gtest.h>

#include <bnorm/bnorm.hpp>

#include <limits>
#include <vector>

#include "test_support.h"

namespace bnorm {
namespace {

TEST(CppModule, TrainingUsesBatchStatisticsAndUpdatesRunningStats) {
  BatchNorm<double> bn(3);
  EXPECT_TRUE(bn.is_training());
  const test::Shape s{4, 3, 6, false};
  const std::vector<int64_t> sizes{4, 3, 2, 3};
  const auto x = test::random_values<double>(s.size(), 1, 2.0, 3.0);
  std::vector<double> y(x.size()), want(x.size()), mean(3), var(3);
  bn.forward({x.data(), sizes}, {y.data(), sizes});
  reference::batch_norm_forward_training(s.geometry(), x.data(), want.data(), nullptr, nullptr,
                                         1e-5, mean.data(), var.data());
  EXPECT_LE(test::max_relative_error(y, want), 1e-13);
  EXPECT_EQ(bn.num_batches_tracked(), 1);
  for (int ch = 0; ch < 3; ++ch) {
    EXPECT_NEAR(bn.running_mean()[ch], 0.1 * mean[ch], 1e-14);
    EXPECT_NEAR(bn.running_var()[ch], 0.9 + 0.1 * var[ch] * 24 / 23, 1e-14);
  }

  bn.eval();
  bn.forward({x.data(), sizes}, {y.data(), sizes});
  const std::vector<double> rm(bn.running_mean().begin(), bn.running_mean().end());
  const std::vector<double> rv(bn.running_var().begin(), bn.running_var().end());
  reference::batch_norm_forward_inference(s.geometry(), x.data(), want.data(), nullptr, nullptr,
                                          rm.data(), rv.data(), 1e-5);
  EXPECT_LE(test::max_relative_error(y, want), 1e-13);
  EXPECT_EQ(bn.num_batches_tracked(), 1);  // eval does not count
}

TEST(CppModule, BackwardFollowsTheModeOfTheLastForward) {
  const test::Shape s{5, 2, 3, true};
  const std::vector<int64_t> sizes{5, 2, 3};
  const auto x = test::random_values<double>(s.size(), 2);
  const auto dy = test::random_values<double>(s.size(), 3);
  BatchNorm<double> bn(2);
  bn.weight()[0] = 2.0;
  std::vector<double> y(x.size()), dx(x.size());
  const TensorView<const double> xv{x.data(), sizes, Layout::channels_last};
  const TensorView<const double> dyv{dy.data(), sizes, Layout::channels_last};
  const TensorView<double> dxv{dx.data(), sizes, Layout::channels_last};
  EXPECT_THROW(bn.backward(xv, dyv, dxv), Error);  // no forward yet

  bn.forward(xv, {y.data(), sizes, Layout::channels_last});
  bn.backward(xv, dyv, dxv);
  const std::vector<double> w(bn.weight().begin(), bn.weight().end());
  std::vector<double> want_dx(x.size()), want_dw(2), want_db(2);
  reference::batch_norm_backward(s.geometry(), x.data(), dy.data(), w.data(), 1e-5,
                                 want_dx.data(), want_dw.data(), want_db.data());
  EXPECT_LE(test::max_relative_error(dx, want_dx), 1e-11);
  EXPECT_LE(test::max_relative_error(std::vector<double>(bn.grad_weight().begin(), bn.grad_weight().end()), want_dw), 1e-11);
  EXPECT_LE(test::max_relative_error(std::vector<double>(bn.grad_bias().begin(), bn.grad_bias().end()), want_db), 1e-11);

  bn.eval();
  bn.forward(xv, {y.data(), sizes, Layout::channels_last});
  bn.backward(xv, dyv, dxv);
  const std::vector<double> rm(bn.running_mean().begin(), bn.running_mean().end());
  const std::vector<double> rv(bn.running_var().begin(), bn.running_var().end());
  reference::batch_norm_backward_inference(s.geometry(), x.data(), dy.data(), w.data(), rm.data(),
                                           rv.data(), 1e-5, want_dx.data(), want_dw.data(),
                                           want_db.data());
  EXPECT_LE(test::max_relative_error(dx, want_dx), 1e-13);
}

TEST(CppModule, OptionsAffineOffNoTrackingAndCumulative) {
  BatchNorm<float> plain(4, {.affine = false, .track_running_stats = false});
  EXPECT_TRUE(plain.weight().empty());
  EXPECT_TRUE(plain.running_mean().empty());
  const std::vector<int64_t> sizes{3, 4};
  const std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  std::vector<float> train_y(12), eval_y(12);
  plain.forward({x.data(), sizes}, {train_y.data(), sizes});
  plain.eval();  // no running stats: eval uses batch statistics, as PyTorch does
  plain.forward({x.data(), sizes}, {eval_y.data(), sizes});
  EXPECT_EQ(train_y, eval_y);

  BatchNorm<float> cumulative(4, {.momentum = std::nullopt});
  std::vector<float> y(12), x2(12);
  for (int i = 0; i < 12; ++i) x2[i] = static_cast<float>(3 * i);
  cumulative.forward({x.data(), sizes}, {y.data(), sizes});
  cumulative.forward({x2.data(), sizes}, {y.data(), sizes});
  // channel 0 holds {1, 5, 9} then {0, 12, 24}: batch means 5 and 12 -> average 8.5
  EXPECT_FLOAT_EQ(cumulative.running_mean()[0], 8.5f);
  EXPECT_EQ(cumulative.num_batches_tracked(), 2);
}

TEST(CppModule, CumulativeMomentumWithoutRunningStatsUsesBatchStatistics) {
  // PyTorch allows momentum=None with track_running_stats=False: nothing to average.
  BatchNorm<float> bn(3, {.momentum = std::nullopt, .track_running_stats = false});
  const std::vector<int64_t> sizes{2, 3, 4};
  const auto x = test::random_values<float>(24, 9, 1.0, 2.0);
  std::vector<float> train_y(24), eval_y(24);
  bn.forward({x.data(), sizes}, {train_y.data(), sizes});
  bn.eval();
  bn.forward({x.data(), sizes}, {eval_y.data(), sizes});
  EXPECT_EQ(train_y, eval_y);
  std::vector<float> dx(24);
  bn.backward({x.data(), sizes}, {x.data(), sizes}, {dx.data(), sizes});
}

TEST(CppModule, ConstructorRejectsBadOptions) {
  auto status_of = [](BatchNormOptions o) {
    try {
      BatchNorm<double> bn(2, o);
    } catch (const Error& e) {
      return e.status();
    }
    return BNORM_SUCCESS;
  };
  EXPECT_EQ(status_of({.eps = -1.0}), BNORM_ERROR_INVALID_VALUE);
  EXPECT_EQ(status_of({.eps = std::numeric_limits<double>::infinity()}), BNORM_ERROR_INVALID_VALUE);
  EXPECT_EQ(status_of({.momentum = 2.0}), BNORM_ERROR_INVALID_VALUE);
  EXPECT_EQ(status_of({.momentum = std::nullopt}), BNORM_SUCCESS);
}

TEST(CppModule, BadInputThrowsWithStatusAndChangesNothing) {
  BatchNorm<float> bn(3);
  std::vector<float> x(2 * 4 * 5, 1.f), y(x.size(), 42.f);
  try {
    bn.forward({x.data(), {2, 4, 5}}, {y.data(), {2, 4, 5}});
    FAIL() << "expected bnorm::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), BNORM_ERROR_SHAPE_MISMATCH);
    EXPECT_NE(std::string(e.what()).find("num_features = 3"), std::string::npos) << e.what();
  }
  try {
    bn.forward({x.data(), {1, 3}}, {y.data(), {1, 3}});
    FAIL() << "expected bnorm::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), BNORM_ERROR_TOO_FEW_VALUES);
  }
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  EXPECT_EQ(bn.running_mean()[0], 0.f);
  for (float v : y) EXPECT_EQ(v, 42.f);
  EXPECT_THROW(BatchNorm<float>(0), Error);
  EXPECT_THROW(bn.set_num_batches_tracked(-1), Error);
}

TEST(CppFunctional, ChecksShapesAndLengths) {
  std::vector<float> x(2 * 3 * 4, 1.f), y(x.size()), w(2);
  const TensorView<const float> xv{x.data(), {2, 3, 4}};
  auto status_of = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return e.status();
    }
    return BNORM_SUCCESS;
  };
  EXPECT_EQ(status_of([&] {
              batch_norm_forward_inference<float>(xv, {y.data(), {2, 3, 4}}, w, {}, {}, {}, 1e-5);
            }),
            BNORM_ERROR_SHAPE_MISMATCH);  // weight has 2 values for 3 channels
  EXPECT_EQ(status_of([&] {
              batch_norm_forward_training<float>(xv, {y.data(), {2, 4, 3}}, {}, {}, 1e-5, {}, {},
                                                 {}, {}, {});
            }),
            BNORM_ERROR_SHAPE_MISMATCH);  // y's sizes differ
  EXPECT_EQ(status_of([&] {
              batch_norm_forward_training<float>({x.data(), {24}}, {y.data(), {24}}, {}, {}, 1e-5,
                                                 {}, {}, {}, {}, {});
            }),
            BNORM_ERROR_INVALID_SHAPE);  // rank 1
  EXPECT_EQ(status_of([&] {
              batch_norm_forward_training<float>({x.data(), {2, 3, 0}}, {y.data(), {2, 3, 0}}, {},
                                                 {}, 1e-5, {}, {}, {}, {}, {});
            }),
            BNORM_ERROR_INVALID_SHAPE);  // zero-size dim
  EXPECT_EQ(status_of([&] {
              const int64_t big = int64_t{1} << 32;
              batch_norm_forward_training<float>({x.data(), {1, 1, big, big}},
                                                 {y.data(), {1, 1, big, big}}, {}, {}, 1e-5, {},
                                                 {}, {}, {}, {});
            }),
            BNORM_ERROR_SIZE_OVERFLOW);
  EXPECT_EQ(status_of([&] {
              // -1 is the C API's sentinel; in C++ the cumulative average is std::nullopt.
              batch_norm_forward_training<float>(xv, {y.data(), {2, 3, 4}}, {}, {}, 1e-5,
                                                 {.momentum = -1.0}, {}, {}, {}, {});
            }),
            BNORM_ERROR_INVALID_VALUE);
  int64_t tracked = 0;
  EXPECT_EQ(status_of([&] {
              // nullopt without a count: named in C++ terms, nothing written
              batch_norm_forward_training<float>(xv, {y.data(), {2, 3, 4}}, {}, {}, 1e-5,
                                                 {.momentum = std::nullopt}, {}, {}, {}, {});
            }),
            BNORM_ERROR_NULL_POINTER);
  EXPECT_EQ(status_of([&] {
              batch_norm_forward_training<float>(
                  xv, {y.data(), {2, 3, 4}}, {}, {}, 1e-5,
                  {.momentum = std::nullopt, .num_batches_tracked = &tracked}, {}, {}, {}, {});
            }),
            BNORM_SUCCESS);
  EXPECT_EQ(tracked, 1);
}

}  // namespace
}  // namespace bnorm

namespace {

// bnorm_kernel_isa names the variant GCC's target_clones resolver picks: the highest
// of x86-64-v4, x86-64-v3 and baseline that the CPU supports.
TEST(KernelIsa, NamesTheVariantThisCpuRuns) {
  __builtin_cpu_init();
  const std::string isa = bnorm::kernel_isa();
  if (__builtin_cpu_supports("x86-64-v4"))
    EXPECT_EQ(isa, "x86-64-v4 (AVX-512)");
  else if (__builtin_cpu_supports("x86-64-v3"))
    EXPECT_EQ(isa, "x86-64-v3 (AVX2, FMA)");
  else
    EXPECT_EQ(isa, "x86-64 (SSE2)");
  EXPECT_STREQ(bnorm_kernel_isa(), bnorm::kernel_isa());
}

}  // namespace
