// Running statistics over several steps: PyTorch's momentum, the cumulative average,
// biased (ONNX/Keras/d2l) and unbiased (PyTorch) variance, num_batches_tracked.
#include <gtest/gtest.h>

#include <vector>

#include "test_support.h"

namespace bnorm {
namespace {

struct Steps {
  test::Shape shape{4, 3, 5, false};
  std::vector<std::vector<double>> batches;
  Steps() {
    for (uint32_t step = 0; step < 6; ++step)
      batches.push_back(test::random_values<double>(shape.size(), 40 + step, step * 0.5, 1 + step));
  }
  // Reference running stats after every batch with factor(step) (step counts from 1).
  template <class Factor>
  void expected(Factor factor, bool unbiased, std::vector<double>& rm, std::vector<double>& rv) const {
    rm.assign(shape.c, 0.0);
    rv.assign(shape.c, 1.0);
    std::vector<double> y(shape.size()), mean(shape.c), var(shape.c);
    int step = 0;
    for (const auto& x : batches) {
      reference::batch_norm_forward_training(shape.geometry(), x.data(), y.data(), nullptr,
                                             nullptr, 1e-5, mean.data(), var.data());
      reference::update_running_stats(shape.c, shape.n * shape.spatial, mean.data(), var.data(),
                                      factor(++step), unbiased, rm.data(), rv.data());
    }
  }
};

void run(const Steps& steps, const bnorm_running_stats_update& update, std::vector<double>& rm,
         std::vector<double>& rv) {
  const test::Shape& s = steps.shape;
  rm.assign(s.c, 0.0);
  rv.assign(s.c, 1.0);
  std::vector<double> y(s.size());
  for (const auto& x : steps.batches)
    ASSERT_EQ(bnorm_batch_norm_forward_training_ex_f64(s.layout(), s.n, s.c, s.spatial, x.data(),
                                                       y.data(), nullptr, nullptr, 1e-5, &update,
                                                       rm.data(), rv.data(), nullptr, nullptr),
              BNORM_SUCCESS)
        << bnorm_last_error();
}

TEST(RunningStats, PyTorchMomentumWithUnbiasedVariance) {
  const Steps steps;
  std::vector<double> rm, rv, want_rm, want_rv;
  int64_t tracked = 0;
  run(steps, {0.1, BNORM_RUNNING_VAR_UNBIASED, &tracked}, rm, rv);
  steps.expected([](int) { return 0.1; }, true, want_rm, want_rv);
  EXPECT_LE(test::max_relative_error(rm, want_rm), 1e-14);
  EXPECT_LE(test::max_relative_error(rv, want_rv), 1e-14);
  EXPECT_EQ(tracked, 6);
}

TEST(RunningStats, OnnxAndD2lConventionIsMomentumPointOneWithBiasedVariance) {
  // ONNX / d2l: running = 0.9 * running + 0.1 * batch, with the biased batch variance.
  const Steps steps;
  std::vector<double> rm, rv, want_rm, want_rv;
  run(steps, {0.1, BNORM_RUNNING_VAR_BIASED, nullptr}, rm, rv);
  steps.expected([](int) { return 1 - 0.9; }, false, want_rm, want_rv);
  EXPECT_LE(test::max_relative_error(rm, want_rm), 1e-14);
  EXPECT_LE(test::max_relative_error(rv, want_rv), 1e-14);
}

TEST(RunningStats, CumulativeAverageIsTheMeanOfAllBatches) {
  const Steps steps;
  std::vector<double> rm, rv, want_rm, want_rv;
  int64_t tracked = 0;
  run(steps, {BNORM_MOMENTUM_CUMULATIVE, BNORM_RUNNING_VAR_UNBIASED, &tracked}, rm, rv);
  steps.expected([](int step) { return 1.0 / step; }, true, want_rm, want_rv);
  EXPECT_LE(test::max_relative_error(rm, want_rm), 1e-14);
  EXPECT_LE(test::max_relative_error(rv, want_rv), 1e-14);
  EXPECT_EQ(tracked, 6);
  // The first batch's factor is 1: the initial 0 / 1 are forgotten, so running_mean is
  // exactly the plain average of the six batch means.
  std::vector<double> y(steps.shape.size()), mean(3), var(3), average(3, 0.0);
  for (const auto& x : steps.batches) {
    reference::batch_norm_forward_training(steps.shape.geometry(), x.data(), y.data(), nullptr,
                                           nullptr, 1e-5, mean.data(), var.data());
    for (int ch = 0; ch < 3; ++ch) average[ch] += mean[ch] / 6;
  }
  EXPECT_LE(test::max_relative_error(rm, average), 1e-14);
}

TEST(RunningStats, CumulativeContinuesFromATrackedCount) {
  const test::Shape s{2, 1, 2, false};
  const std::vector<float> x{1, 2, 3, 4};  // mean 2.5
  std::vector<float> y(4), rm{10.f}, rv{1.f};
  int64_t tracked = 4;  // four batches seen: this one weighs 1/5
  const bnorm_running_stats_update u{BNORM_MOMENTUM_CUMULATIVE, BNORM_RUNNING_VAR_UNBIASED, &tracked};
  ASSERT_EQ(bnorm_batch_norm_forward_training_ex_f32(s.layout(), 2, 1, 2, x.data(), y.data(),
                                                     nullptr, nullptr, 1e-5, &u, rm.data(),
                                                     rv.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  EXPECT_FLOAT_EQ(rm[0], 0.8f * 10 + 0.2f * 2.5f);
  EXPECT_FLOAT_EQ(rv[0], 0.8f * 1 + 0.2f * (5.0f / 3.0f));  // unbiased: 1.25 * 4 / 3
  EXPECT_EQ(tracked, 5);
}

TEST(RunningStats, MomentumZeroKeepsAndOneReplaces) {
  const std::vector<double> x{1, 2, 3, 4};
  std::vector<double> y(4), rm{7.0}, rv{3.0};
  ASSERT_EQ(bnorm_batch_norm_forward_training_f64(BNORM_CHANNELS_FIRST, 4, 1, 1, x.data(),
                                                  y.data(), nullptr, nullptr, 1e-5, 0.0,
                                                  rm.data(), rv.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  EXPECT_EQ(rm[0], 7.0);
  EXPECT_EQ(rv[0], 3.0);
  ASSERT_EQ(bnorm_batch_norm_forward_training_f64(BNORM_CHANNELS_FIRST, 4, 1, 1, x.data(),
                                                  y.data(), nullptr, nullptr, 1e-5, 1.0,
                                                  rm.data(), rv.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  EXPECT_DOUBLE_EQ(rm[0], 2.5);
  EXPECT_DOUBLE_EQ(rv[0], 1.25 * 4 / 3);
}

TEST(RunningStats, EitherBufferMayBeOmitted) {
  const std::vector<double> x{1, 2, 3, 4};
  std::vector<double> y(4), rv{3.0};
  ASSERT_EQ(bnorm_batch_norm_forward_training_f64(BNORM_CHANNELS_LAST, 4, 1, 1, x.data(),
                                                  y.data(), nullptr, nullptr, 1e-5, 1.0, nullptr,
                                                  rv.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  EXPECT_DOUBLE_EQ(rv[0], 1.25 * 4 / 3);
}

}  // namespace
}  // namespace bnorm
