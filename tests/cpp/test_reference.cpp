// The oracle checked on its own: known values, and its gradients by finite differences.
// The fast path's gradients are checked the same way, in float64.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "reference/batch_norm_reference.h"
#include "test_support.h"

namespace bnorm {
namespace {

using reference::Geometry;

TEST(Reference, KnownValues) {
  // (N=2, C=1, spatial=2): values 1, 2, 3, 4: mean 2.5, biased var 1.25.
  const Geometry g{2, 1, 2, false};
  const std::vector<double> x{1, 2, 3, 4};
  std::vector<double> y(4);
  double mean = 0, var = 0;
  const double weight = 2, bias = 1;
  reference::batch_norm_forward_training(g, x.data(), y.data(), &weight, &bias, 0.0, &mean, &var);
  EXPECT_DOUBLE_EQ(mean, 2.5);
  EXPECT_DOUBLE_EQ(var, 1.25);
  EXPECT_NEAR(y[0], 2 * (1 - 2.5) / std::sqrt(1.25) + 1, 1e-15);
  EXPECT_NEAR(y[3], 2 * (4 - 2.5) / std::sqrt(1.25) + 1, 1e-15);
}

TEST(Reference, ChannelsLastIndexesTheSameValues) {
  const Geometry first{2, 3, 4, false}, last{2, 3, 4, true};
  EXPECT_EQ(first.index(1, 2, 3), (1 * 3 + 2) * 4 + 3);
  EXPECT_EQ(last.index(1, 2, 3), (1 * 4 + 3) * 3 + 2);
}

// L(x, weight, bias) = sum(y * g): its gradients are backward(dy = g).
using Loss = std::function<double(const std::vector<double>& x, const std::vector<double>& w,
                                  const std::vector<double>& b)>;
using Gradients = std::function<void(const std::vector<double>& x, const std::vector<double>& w,
                                     std::vector<double>& dx, std::vector<double>& dw,
                                     std::vector<double>& db)>;

// Central differences of `loss` against `grads`, every coordinate of x, weight, bias.
void check_gradients(const Loss& loss, const Gradients& grads, std::vector<double> x,
                     std::vector<double> w, std::vector<double> b) {
  std::vector<double> dx(x.size()), dw(w.size()), db(b.size());
  grads(x, w, dx, dw, db);
  const double h = 1e-5;
  auto numeric = [&](std::vector<double>& v, size_t i) {
    const double saved = v[i];
    v[i] = saved + h;
    const double up = loss(x, w, b);
    v[i] = saved - h;
    const double down = loss(x, w, b);
    v[i] = saved;
    return (up - down) / (2 * h);
  };
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(dx[i], numeric(x, i), 1e-7) << "dx[" << i << "]";
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(dw[i], numeric(w, i), 1e-7) << "dweight[" << i << "]";
  for (size_t i = 0; i < b.size(); ++i) EXPECT_NEAR(db[i], numeric(b, i), 1e-7) << "dbias[" << i << "]";
}

struct GradCase {
  int64_t n, c, spatial;
  bool channels_last;
};

class GradientCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradientCheck, TrainingBackwardMatchesFiniteDifferences) {
  const GradCase p = GetParam();
  const Geometry g{p.n, p.c, p.spatial, p.channels_last};
  const bnorm_layout layout = p.channels_last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST;
  const auto x = test::random_values<double>(g.size(), 11, 0.5, 2.0);
  const auto gy = test::random_values<double>(g.size(), 12);
  const auto w = test::random_values<double>(p.c, 13, 1.0, 0.5);
  const auto b = test::random_values<double>(p.c, 14);
  const double eps = 1e-3;

  const Loss reference_loss = [&](const auto& xv, const auto& wv, const auto& bv) {
    std::vector<double> y(xv.size()), mean(p.c), var(p.c);
    reference::batch_norm_forward_training(g, xv.data(), y.data(), wv.data(), bv.data(), eps,
                                           mean.data(), var.data());
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * gy[i];
    return l;
  };
  const Gradients reference_grads = [&](const auto& xv, const auto& wv, auto& dx, auto& dw, auto& db) {
    reference::batch_norm_backward(g, xv.data(), gy.data(), wv.data(), eps, dx.data(), dw.data(),
                                   db.data());
  };
  check_gradients(reference_loss, reference_grads, x, w, b);

  // The fast path, through the C API, in float64.
  const Loss fast_loss = [&](const auto& xv, const auto& wv, const auto& bv) {
    std::vector<double> y(xv.size());
    EXPECT_EQ(bnorm_batch_norm_forward_training_f64(layout, p.n, p.c, p.spatial, xv.data(),
                                                    y.data(), wv.data(), bv.data(), eps, 0.1,
                                                    nullptr, nullptr, nullptr, nullptr),
              BNORM_SUCCESS);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * gy[i];
    return l;
  };
  const Gradients fast_grads = [&](const auto& xv, const auto& wv, auto& dx, auto& dw, auto& db) {
    std::vector<double> y(xv.size()), mean(p.c), invstd(p.c);
    ASSERT_EQ(bnorm_batch_norm_forward_training_f64(layout, p.n, p.c, p.spatial, xv.data(),
                                                    y.data(), wv.data(), nullptr, eps, 0.1,
                                                    nullptr, nullptr, mean.data(), invstd.data()),
              BNORM_SUCCESS);
    ASSERT_EQ(bnorm_batch_norm_backward_f64(layout, p.n, p.c, p.spatial, xv.data(), gy.data(),
                                            dx.data(), wv.data(), mean.data(), invstd.data(),
                                            dw.data(), db.data()),
              BNORM_SUCCESS);
  };
  check_gradients(fast_loss, fast_grads, x, w, b);
}

TEST_P(GradientCheck, InferenceBackwardMatchesFiniteDifferences) {
  const GradCase p = GetParam();
  const bnorm_layout layout = p.channels_last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST;
  const int64_t size = p.n * p.c * p.spatial;
  const auto x = test::random_values<double>(size, 21, 0.5, 2.0);
  const auto gy = test::random_values<double>(size, 22);
  const auto w = test::random_values<double>(p.c, 23, 1.0, 0.5);
  const auto b = test::random_values<double>(p.c, 24);
  const auto rm = test::random_values<double>(p.c, 25);
  std::vector<double> rv = test::random_values<double>(p.c, 26);
  for (double& v : rv) v = 0.5 + v * v;
  const double eps = 1e-3;

  const Loss loss = [&](const auto& xv, const auto& wv, const auto& bv) {
    std::vector<double> y(xv.size());
    EXPECT_EQ(bnorm_batch_norm_forward_inference_f64(layout, p.n, p.c, p.spatial, xv.data(),
                                                     y.data(), wv.data(), bv.data(), rm.data(),
                                                     rv.data(), eps),
              BNORM_SUCCESS);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * gy[i];
    return l;
  };
  const Gradients grads = [&](const auto& xv, const auto& wv, auto& dx, auto& dw, auto& db) {
    ASSERT_EQ(bnorm_batch_norm_backward_inference_f64(layout, p.n, p.c, p.spatial, xv.data(),
                                                      gy.data(), dx.data(), wv.data(), rm.data(),
                                                      rv.data(), eps, dw.data(), db.data()),
              BNORM_SUCCESS);
  };
  check_gradients(loss, grads, x, w, b);
}

std::string grad_case_name(const ::testing::TestParamInfo<GradCase>& param_info) {
  const GradCase& p = param_info.param;
  return test::Shape{p.n, p.c, p.spatial, p.channels_last}.name();
}

INSTANTIATE_TEST_SUITE_P(SmallShapes, GradientCheck,
                         ::testing::Values(GradCase{2, 1, 1, false}, GradCase{3, 2, 5, false},
                                           GradCase{3, 2, 5, true}, GradCase{1, 3, 7, false},
                                           GradCase{1, 3, 7, true}, GradCase{17, 2, 1, false},
                                           GradCase{2, 17, 3, true}),
                         grad_case_name);

}  // namespace
}  // namespace bnorm
