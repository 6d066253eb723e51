// BatchNorm<T> with its state in the caller's memory (use_state, what the Python modules
// use), the mode switch as the module states it, set_eps, and the public headers'
// layering: <bnorm/error.hpp> stands alone (it is all src/norm sees of the C++ API).
#include <bnorm/error.hpp>  // first: it must compile without bnorm.hpp

#include <gtest/gtest.h>

#include <bnorm/bnorm.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "test_support.h"

namespace bnorm {
namespace {

TEST(ErrorHeader, ErrorAndEnumsAreTheCApis) {
  const Error e(BNORM_ERROR_OVERLAP, "y overlaps x");
  EXPECT_EQ(e.status(), BNORM_ERROR_OVERLAP);
  EXPECT_STREQ(e.what(), "y overlaps x");
  EXPECT_EQ(static_cast<int>(Layout::channels_last), BNORM_CHANNELS_LAST);
  EXPECT_EQ(static_cast<int>(RunningVar::biased), BNORM_RUNNING_VAR_BIASED);
}

TEST(CppModuleState, ModeSwitchAsTorch) {
  BatchNorm<float> tracked(2), untracked(2, {.track_running_stats = false});
  EXPECT_TRUE(tracked.uses_batch_statistics() && tracked.updates_running_stats());
  EXPECT_TRUE(untracked.uses_batch_statistics() && !untracked.updates_running_stats());
  tracked.eval();
  untracked.eval();
  EXPECT_FALSE(tracked.uses_batch_statistics() || tracked.updates_running_stats());
  EXPECT_TRUE(untracked.uses_batch_statistics() && !untracked.updates_running_stats());
}

TEST(CppModuleState, BorrowedStateIsReadAndWrittenInPlace) {
  const std::vector<int64_t> sizes{4, 3, 5};
  const auto x = test::random_values<double>(60, 11, 1.0, 2.0);
  std::vector<double> y_own(60), y_borrowed(60);

  BatchNorm<double> own(3, {.momentum = std::nullopt});
  own.weight()[1] = 2.5;
  own.bias()[2] = -1.0;
  own.set_num_batches_tracked(3);
  own.running_mean()[0] = 4.0;

  // The same state in memory the caller owns.
  std::vector<double> weight{1.0, 2.5, 1.0}, bias{0.0, 0.0, -1.0}, mean{4.0, 0.0, 0.0},
      var{1.0, 1.0, 1.0};
  int64_t count = 3;
  BatchNorm<double> borrowed(3, {.momentum = std::nullopt});
  borrowed.use_state({weight, bias, mean, var, &count});
  EXPECT_EQ(borrowed.weight().data(), weight.data());
  EXPECT_EQ(borrowed.num_batches_tracked(), 3);

  own.forward({x.data(), sizes}, {y_own.data(), sizes});
  borrowed.forward({x.data(), sizes}, {y_borrowed.data(), sizes});
  EXPECT_EQ(y_own, y_borrowed);
  EXPECT_EQ(count, 4);  // counted in the caller's memory, factor 1 / (3 + 1)
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(mean[c], own.running_mean()[c]) << c;
    EXPECT_EQ(var[c], own.running_var()[c]) << c;
  }
  EXPECT_EQ(borrowed.running_mean()[0], mean[0]);

  // Backward reads the caller's weight; eval reads the caller's running statistics.
  std::vector<double> dx_own(60), dx_borrowed(60);
  own.backward({x.data(), sizes}, {x.data(), sizes}, {dx_own.data(), sizes});
  borrowed.backward({x.data(), sizes}, {x.data(), sizes}, {dx_borrowed.data(), sizes});
  EXPECT_EQ(dx_own, dx_borrowed);
  EXPECT_EQ(own.grad_weight()[1], borrowed.grad_weight()[1]);
  own.eval();
  borrowed.eval();
  own.forward({x.data(), sizes}, {y_own.data(), sizes});
  borrowed.forward({x.data(), sizes}, {y_borrowed.data(), sizes});
  EXPECT_EQ(y_own, y_borrowed);
  EXPECT_EQ(count, 4);

  // The resets write there too.
  borrowed.set_num_batches_tracked(9);
  EXPECT_EQ(count, 9);
  borrowed.reset_parameters();
  EXPECT_EQ(weight, std::vector<double>(3, 1.0));
  EXPECT_EQ(bias, std::vector<double>(3, 0.0));
  EXPECT_EQ(mean, std::vector<double>(3, 0.0));
  EXPECT_EQ(var, std::vector<double>(3, 1.0));
  EXPECT_EQ(count, 0);
}

TEST(CppModuleState, UseStateChecksEveryPartAndChangesNothing) {
  std::vector<float> three(3, 7.f), two(2, 7.f);
  int64_t count = 5;
  auto status_of = [](BatchNorm<float>& bn, const BatchNormState<float>& state) {
    try {
      bn.use_state(state);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("BatchNorm::use_state"), std::string::npos);
      return e.status();
    }
    return BNORM_SUCCESS;
  };
  BatchNorm<float> bn(3);
  std::vector<float> w(3), b(3), m(3), v(3);
  EXPECT_EQ(status_of(bn, {two, b, m, v, &count}), BNORM_ERROR_SHAPE_MISMATCH);
  EXPECT_EQ(status_of(bn, {w, b, m, {}, &count}), BNORM_ERROR_SHAPE_MISMATCH);
  EXPECT_EQ(status_of(bn, {w, b, m, v, nullptr}), BNORM_ERROR_NULL_POINTER);
  EXPECT_EQ(bn.weight()[0], 1.f);  // still its own state
  EXPECT_EQ(bn.num_batches_tracked(), 0);

  BatchNorm<float> bare(3, {.affine = false, .track_running_stats = false});
  EXPECT_EQ(status_of(bare, {three, {}, {}, {}, nullptr}), BNORM_ERROR_SHAPE_MISMATCH);
  EXPECT_EQ(status_of(bare, {{}, {}, {}, {}, &count}), BNORM_ERROR_INVALID_VALUE);
  EXPECT_EQ(status_of(bare, {{}, {}, {}, {}, nullptr}), BNORM_SUCCESS);
  try {
    bare.use_state({three, {}, {}, {}, nullptr});
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight has 3 values, expected none (the module was "
                                         "built with affine = false)"),
              std::string::npos)
        << e.what();
  }
}

TEST(CppModuleState, SetEpsIsCheckedAndUsed) {
  BatchNorm<double> bn(2);
  bn.eval();
  bn.running_var()[0] = 3.0;
  bn.set_eps(1.0);
  EXPECT_EQ(bn.options().eps, 1.0);
  const std::vector<int64_t> sizes{1, 2};
  const std::vector<double> x{2.0, 0.0};
  std::vector<double> y(2);
  bn.forward({x.data(), sizes}, {y.data(), sizes});
  EXPECT_DOUBLE_EQ(y[0], 2.0 / std::sqrt(3.0 + 1.0));
  for (double bad : {-1e-5, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
    EXPECT_THROW(bn.set_eps(bad), Error) << bad;
    EXPECT_EQ(bn.options().eps, 1.0);
  }
}

}  // namespace
}  // namespace bnorm
