// The family's C++ API (norms.hpp): modules and functional forms against the references,
// InstanceNorm's train/eval semantics, and errors that name the argument.
#include <bnorm/norms.hpp>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "reference/group_norm_reference.h"
#include "reference/layer_norm_reference.h"
#include "test_support.h"

namespace {

namespace ref = bnorm::reference;
using bnorm::Layout;
using bnorm::TensorView;


TEST(LayerNormModule, MatchesTheReferenceOverTheTrailingDims) {
  const std::vector<int64_t> sizes{3, 2, 4, 5};  // normalized over (4, 5): 6 rows of 20
  const int64_t count = 120, rows = 6, cols = 20;
  const auto x = bnorm::test::random_values<double>(count, 1, 2.0);
  const auto dy = bnorm::test::random_values<double>(count, 2);
  bnorm::LayerNorm<double> ln({4, 5});
  const auto w = bnorm::test::random_values<double>(cols, 3, 1.0);
  const auto b = bnorm::test::random_values<double>(cols, 4);
  std::copy(w.begin(), w.end(), ln.weight().begin());
  std::copy(b.begin(), b.end(), ln.bias().begin());
  std::vector<double> y(count), dx(count);
  ln.forward({x.data(), sizes}, {y.data(), sizes});
  ln.backward({x.data(), sizes}, {dy.data(), sizes}, {dx.data(), sizes});
  std::vector<double> y_ref(count), dx_ref(count), dw_ref(cols), db_ref(cols);
  ref::layer_norm_forward<double>(rows, cols, x.data(), y_ref.data(), w.data(), b.data(), 1e-5,
                                  nullptr, nullptr);
  ref::layer_norm_backward<double>(rows, cols, x.data(), dy.data(), w.data(), 1e-5,
                                   dx_ref.data(), dw_ref.data(), db_ref.data());
  EXPECT_LT(bnorm::test::norm_relative_error(y, y_ref), 1e-12);
  EXPECT_LT(bnorm::test::norm_relative_error(dx, dx_ref), 1e-10);
  const std::vector<double> dw(ln.grad_weight().begin(), ln.grad_weight().end());
  const std::vector<double> db(ln.grad_bias().begin(), ln.grad_bias().end());
  EXPECT_LT(bnorm::test::norm_relative_error(dw, dw_ref), 1e-10);
  EXPECT_LT(bnorm::test::norm_relative_error(db, db_ref), 1e-10);
}

TEST(LayerNormModule, RefusesShapesItCannotNormalize) {
  bnorm::LayerNorm<float> ln({4, 5});
  std::vector<float> x(60), y(60);
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_SHAPE, "must end with normalized_shape [4, 5]",
               [&] { ln.forward({x.data(), {3, 5, 4}}, {y.data(), {3, 5, 4}}); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_SHAPE, "row-major", [&] {
    ln.forward({x.data(), {3, 4, 5}, Layout::channels_last}, {y.data(), {3, 4, 5}, Layout::channels_last});
  });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_SHAPE_MISMATCH, "y is",
               [&] { ln.forward({x.data(), {3, 4, 5}}, {y.data(), {3, 20}}); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_STATE, "before any forward", [&] {
    ln.backward({x.data(), {3, 4, 5}}, {x.data(), {3, 4, 5}}, {y.data(), {3, 4, 5}});
  });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_SHAPE, "normalized_shape must have at least one",
               [] { bnorm::LayerNorm<float> bad({}); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "eps",
               [] { bnorm::LayerNorm<float> bad({3}, {0.0, true, true}); });
  bnorm::LayerNorm<float> no_bias({20}, {1e-5, true, false});
  EXPECT_EQ(no_bias.weight().size(), 20u);
  EXPECT_TRUE(no_bias.bias().empty());
}

TEST(RmsNormModule, DefaultEpsIsTheMachineEpsilon) {
  const std::vector<int64_t> sizes{7, 9};
  const auto x = bnorm::test::random_values<float>(63, 5, 0.3);
  const auto dy = bnorm::test::random_values<float>(63, 6);
  bnorm::RMSNorm<float> rms({9});
  std::vector<float> y(63), dx(63), y_ref(63), dx_ref(63), dw_ref(9);
  rms.forward({x.data(), sizes}, {y.data(), sizes});
  rms.backward({x.data(), sizes}, {dy.data(), sizes}, {dx.data(), sizes});
  ref::rms_norm_forward<float>(7, 9, x.data(), y_ref.data(), nullptr, FLT_EPSILON, nullptr);
  ref::rms_norm_backward<float>(7, 9, x.data(), dy.data(), nullptr, FLT_EPSILON, dx_ref.data(),
                                dw_ref.data());
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(y), bnorm::test::to_double(y_ref)), 1e-6);
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(dx), bnorm::test::to_double(dx_ref)), 1e-5);
  const std::vector<float> dw(rms.grad_weight().begin(), rms.grad_weight().end());
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(dw), bnorm::test::to_double(dw_ref)), 1e-5);
}

TEST(GroupNormModule, MatchesTheReferenceInBothLayouts) {
  for (const Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const std::vector<int64_t> sizes{2, 6, 3, 4};
    const ref::Geometry g{2, 6, 12, layout == Layout::channels_last};
    const auto x = bnorm::test::random_values<double>(144, 7, -3.0);
    const auto dy = bnorm::test::random_values<double>(144, 8);
    bnorm::GroupNorm<double> gn(3, 6);
    const auto w = bnorm::test::random_values<double>(6, 9, 1.0);
    std::copy(w.begin(), w.end(), gn.weight().begin());
    std::vector<double> y(144), dx(144), y_ref(144), dx_ref(144), dw_ref(6), db_ref(6);
    gn.forward({x.data(), sizes, layout}, {y.data(), sizes, layout});
    gn.backward({x.data(), sizes, layout}, {dy.data(), sizes, layout}, {dx.data(), sizes, layout});
    ref::group_norm_forward<double>(g, 3, x.data(), y_ref.data(), w.data(), nullptr, 1e-5,
                                    nullptr, nullptr);
    ref::group_norm_backward<double>(g, 3, x.data(), dy.data(), w.data(), 1e-5, dx_ref.data(),
                                     dw_ref.data(), db_ref.data());
    EXPECT_LT(bnorm::test::norm_relative_error(y, y_ref), 1e-12);
    EXPECT_LT(bnorm::test::norm_relative_error(dx, dx_ref), 1e-10);
    const std::vector<double> dw(gn.grad_weight().begin(), gn.grad_weight().end());
    EXPECT_LT(bnorm::test::norm_relative_error(dw, dw_ref), 1e-10);
  }
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "num_channels must be divisible by num_groups",
               [] { bnorm::GroupNorm<float> bad(4, 6); });
  bnorm::GroupNorm<float> gn(2, 6);
  std::vector<float> x(40), y(40);
  bnorm::test::expect_bnorm_error(BNORM_ERROR_SHAPE_MISMATCH, "expected num_channels = 6",
               [&] { gn.forward({x.data(), {2, 4, 5}}, {y.data(), {2, 4, 5}}); });
}

TEST(InstanceNormModule, TrainEvalAndRunningStatisticsFollowPyTorch) {
  const std::vector<int64_t> sizes{4, 3, 10};
  const ref::Geometry g{4, 3, 10, false};
  const auto x = bnorm::test::random_values<double>(120, 10, 1.5);
  const auto dy = bnorm::test::random_values<double>(120, 11);
  bnorm::InstanceNorm<double> in(3, {1e-5, 0.1, true, true});
  std::vector<double> y(120), y_ref(120), dx(120);
  in.forward({x.data(), sizes}, {y.data(), sizes});
  ref::instance_norm_forward_training<double>(g, x.data(), y_ref.data(), nullptr, nullptr, 1e-5,
                                              nullptr, nullptr);
  std::vector<double> rm(3, 0.0), rv(3, 1.0);
  ref::instance_norm_update_running_stats<double>(g, x.data(), 0.1, rm.data(), rv.data());
  EXPECT_LT(bnorm::test::norm_relative_error(y, y_ref), 1e-12);
  EXPECT_LT(bnorm::test::max_relative_error(
                std::vector<double>(in.running_mean().begin(), in.running_mean().end()), rm),
            1e-12);
  EXPECT_LT(bnorm::test::max_relative_error(
                std::vector<double>(in.running_var().begin(), in.running_var().end()), rv),
            1e-12);
  // Eval with running statistics: the fixed per-channel map, and its backward.
  in.eval();
  in.forward({x.data(), sizes}, {y.data(), sizes});
  ref::instance_norm_forward_inference<double>(g, x.data(), y_ref.data(), nullptr, nullptr,
                                               rm.data(), rv.data(), 1e-5);
  EXPECT_LT(bnorm::test::norm_relative_error(y, y_ref), 1e-12);
  in.backward({x.data(), sizes}, {dy.data(), sizes}, {dx.data(), sizes});
  std::vector<double> dx_ref(120), dw_ref(3), db_ref(3);
  ref::instance_norm_backward_inference<double>(g, x.data(), dy.data(), nullptr, rm.data(),
                                                rv.data(), 1e-5, dx_ref.data(), dw_ref.data(),
                                                db_ref.data());
  EXPECT_LT(bnorm::test::norm_relative_error(dx, dx_ref), 1e-10);
  // PyTorch's default (no running statistics): the input's statistics in eval too.
  bnorm::InstanceNorm<double> plain(3);
  plain.eval();
  EXPECT_TRUE(plain.weight().empty());
  EXPECT_TRUE(plain.running_mean().empty());
  plain.forward({x.data(), sizes}, {y.data(), sizes});
  ref::instance_norm_forward_training<double>(g, x.data(), y_ref.data(), nullptr, nullptr, 1e-5,
                                              nullptr, nullptr);
  EXPECT_LT(bnorm::test::norm_relative_error(y, y_ref), 1e-12);
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "momentum",
               [] { bnorm::InstanceNorm<float> bad(3, {1e-5, 2.0, false, true}); });
}

TEST(FamilyModules, SettersCheckTheirValueAndTheNextForwardUsesIt) {
  const std::vector<int64_t> sizes{4, 6};
  const auto x = bnorm::test::random_values<double>(24, 9, 0.2);
  std::vector<double> y(24), y_ref(24);
  bnorm::LayerNorm<double> ln({6});
  ln.set_eps(0.5);
  ln.forward({x.data(), sizes}, {y.data(), sizes});
  ref::layer_norm_forward<double>(4, 6, x.data(), y_ref.data(), nullptr, nullptr, 0.5, nullptr,
                                  nullptr);
  EXPECT_LT(bnorm::test::norm_relative_error(y, y_ref), 1e-12);
  for (double bad : {0.0, -1.0, std::nan(""), HUGE_VAL}) {
    bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "LayerNorm::set_eps",
                                    [&] { ln.set_eps(bad); });
    EXPECT_EQ(ln.options().eps, 0.5);
  }
  bnorm::RMSNorm<double> rms({6}, {1e-3});
  rms.set_eps(std::nullopt);
  EXPECT_FALSE(rms.options().eps.has_value());
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "RMSNorm::set_eps",
                                  [&] { rms.set_eps(-2.0); });
  EXPECT_FALSE(rms.options().eps.has_value());
  bnorm::GroupNorm<double> gn(2, 4);
  gn.set_eps(1e-2);
  EXPECT_EQ(gn.options().eps, 1e-2);
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "GroupNorm::set_eps",
                                  [&] { gn.set_eps(0.0); });
  bnorm::InstanceNorm<double> in(3, {1e-5, 0.1, false, true});
  in.set_momentum(1.0);
  in.set_eps(1e-3);
  EXPECT_EQ(in.options().momentum, 1.0);
  EXPECT_EQ(in.options().eps, 1e-3);
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "InstanceNorm::set_momentum",
                                  [&] { in.set_momentum(-0.1); });
  EXPECT_EQ(in.options().momentum, 1.0);
  // momentum 1: the running statistics become this batch's (mean over samples of the
  // per-(sample, channel) means), which a fresh module with momentum 1 also gives.
  const std::vector<int64_t> in_sizes{2, 3, 4};
  std::vector<double> yi(24), yj(24);
  bnorm::InstanceNorm<double> fresh(3, {1e-3, 1.0, false, true});
  in.forward({x.data(), in_sizes}, {yi.data(), in_sizes});
  fresh.forward({x.data(), in_sizes}, {yj.data(), in_sizes});
  EXPECT_EQ(yi, yj);
  for (size_t c = 0; c < 3; ++c) {
    EXPECT_EQ(in.running_mean()[c], fresh.running_mean()[c]);
    EXPECT_EQ(in.running_var()[c], fresh.running_var()[c]);
  }
}

}  // namespace
