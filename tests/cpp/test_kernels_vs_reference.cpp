// Every fast path against the scalar reference, on every (n, c, spatial) drawn from
// {1, 2, 3, 7, 15, 16, 17, 33}, both layouts, float32 and float64, with and without
// weight/bias, out of place and in place.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "test_support.h"

namespace bnorm {
namespace {

using test::CApi;
using test::Shape;

template <class T>
struct Tolerance;
template <>
struct Tolerance<float> {
  static constexpr double forward = 2e-6, backward = 2e-5, stats = 2e-6;
};
template <>
struct Tolerance<double> {
  static constexpr double forward = 1e-13, backward = 1e-11, stats = 1e-13;
};

// One random problem: x with a per-shape offset, weight, bias, dy, running stats.
template <class T>
struct Problem : test::RandomProblem<T> {
  explicit Problem(const Shape& s, uint32_t seed)
      : test::RandomProblem<T>(s, seed, {0.25 * static_cast<double>(seed % 7), 1.5, 0.0, 0.5}) {}
};

template <class T>
class KernelsVsReference : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(KernelsVsReference, Types);

TYPED_TEST(KernelsVsReference, ForwardTraining) {
  using T = TypeParam;
  const double eps = 1e-5;
  uint32_t seed = 100;
  for (const Shape& s : test::odd_shapes()) {
    if (s.n * s.spatial < 2) continue;  // training needs two values per channel
    SCOPED_TRACE(s.name());
    Problem<T> p(s, seed++);
    const auto xd = test::to_double(p.x);
    const auto wd = test::to_double(p.weight), bd = test::to_double(p.bias);
    std::vector<double> want(xd.size()), mean(s.c), var(s.c);
    reference::batch_norm_forward_training(s.geometry(), xd.data(), want.data(), wd.data(),
                                           bd.data(), eps, mean.data(), var.data());
    std::vector<T> y(p.x.size()), save_mean(s.c), save_invstd(s.c);
    ASSERT_EQ(CApi<T>::forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(),
                                        p.weight.data(), p.bias.data(), eps, 0.1, nullptr,
                                        nullptr, save_mean.data(), save_invstd.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    EXPECT_LE(test::max_relative_error(y, want), Tolerance<T>::forward);
    std::vector<double> want_invstd(s.c);
    for (int64_t ch = 0; ch < s.c; ++ch) want_invstd[ch] = 1 / std::sqrt(var[ch] + eps);
    EXPECT_LE(test::max_relative_error(save_mean, mean), Tolerance<T>::stats);
    EXPECT_LE(test::max_relative_error(save_invstd, want_invstd), Tolerance<T>::stats);

    // In place, without weight and bias (1 and 0).
    reference::batch_norm_forward_training(s.geometry(), xd.data(), want.data(), nullptr, nullptr,
                                           eps, mean.data(), var.data());
    std::vector<T> inplace = p.x;
    ASSERT_EQ(CApi<T>::forward_training(s.layout(), s.n, s.c, s.spatial, inplace.data(),
                                        inplace.data(), nullptr, nullptr, eps, 0.1, nullptr,
                                        nullptr, nullptr, nullptr),
              BNORM_SUCCESS);
    EXPECT_LE(test::max_relative_error(inplace, want), Tolerance<T>::forward);
  }
}

TYPED_TEST(KernelsVsReference, ForwardInference) {
  using T = TypeParam;
  const double eps = 1e-3;
  uint32_t seed = 300;
  for (const Shape& s : test::odd_shapes()) {
    SCOPED_TRACE(s.name());
    Problem<T> p(s, seed++);
    const auto xd = test::to_double(p.x);
    const auto wd = test::to_double(p.weight), bd = test::to_double(p.bias);
    const auto rm = test::to_double(p.running_mean), rv = test::to_double(p.running_var);
    std::vector<double> want(xd.size());
    reference::batch_norm_forward_inference(s.geometry(), xd.data(), want.data(), wd.data(),
                                            bd.data(), rm.data(), rv.data(), eps);
    std::vector<T> y = p.x;  // in place
    ASSERT_EQ(CApi<T>::forward_inference(s.layout(), s.n, s.c, s.spatial, y.data(), y.data(),
                                         p.weight.data(), p.bias.data(), p.running_mean.data(),
                                         p.running_var.data(), eps),
              BNORM_SUCCESS)
        << bnorm_last_error();
    EXPECT_LE(test::max_relative_error(y, want), Tolerance<T>::forward);
  }
}

TYPED_TEST(KernelsVsReference, Backward) {
  using T = TypeParam;
  const double eps = 1e-5;
  uint32_t seed = 500;
  for (const Shape& s : test::odd_shapes()) {
    if (s.n * s.spatial < 2) continue;
    SCOPED_TRACE(s.name());
    Problem<T> p(s, seed++);
    const auto xd = test::to_double(p.x), dyd = test::to_double(p.dy);
    const auto wd = test::to_double(p.weight);
    std::vector<double> want_dx(xd.size()), want_dw(s.c), want_db(s.c);
    reference::batch_norm_backward(s.geometry(), xd.data(), dyd.data(), wd.data(), eps,
                                   want_dx.data(), want_dw.data(), want_db.data());
    std::vector<T> y(p.x.size()), mean(s.c), invstd(s.c);
    ASSERT_EQ(CApi<T>::forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(),
                                        p.weight.data(), nullptr, eps, 0.1, nullptr, nullptr,
                                        mean.data(), invstd.data()),
              BNORM_SUCCESS);
    std::vector<T> dx = p.dy, dw(s.c), db(s.c);  // dx == dy: in place
    ASSERT_EQ(CApi<T>::backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), dx.data(), dx.data(),
                                p.weight.data(), mean.data(), invstd.data(), dw.data(), db.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    // dx is a difference of terms of size |dy| * weight * invstd: judge it on that scale.
    EXPECT_LE(test::max_relative_error(dx, want_dx), Tolerance<T>::backward * 10);
    EXPECT_LE(test::max_relative_error(dw, want_dw), Tolerance<T>::backward);
    EXPECT_LE(test::max_relative_error(db, want_db), Tolerance<T>::backward);

    // Each output may be skipped; the others are unchanged by that.
    std::vector<T> only_dw(s.c);
    ASSERT_EQ(CApi<T>::backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), p.dy.data(),
                                nullptr, p.weight.data(), mean.data(), invstd.data(),
                                only_dw.data(), nullptr),
              BNORM_SUCCESS);
    EXPECT_EQ(only_dw, dw);
  }
}

TYPED_TEST(KernelsVsReference, BackwardInference) {
  using T = TypeParam;
  const double eps = 1e-3;
  uint32_t seed = 700;
  for (const Shape& s : test::odd_shapes()) {
    SCOPED_TRACE(s.name());
    Problem<T> p(s, seed++);
    const auto xd = test::to_double(p.x), dyd = test::to_double(p.dy);
    const auto wd = test::to_double(p.weight);
    const auto rm = test::to_double(p.running_mean), rv = test::to_double(p.running_var);
    std::vector<double> want_dx(xd.size()), want_dw(s.c), want_db(s.c);
    reference::batch_norm_backward_inference(s.geometry(), xd.data(), dyd.data(), wd.data(),
                                             rm.data(), rv.data(), eps, want_dx.data(),
                                             want_dw.data(), want_db.data());
    std::vector<T> dx(p.x.size()), dw(s.c), db(s.c);
    ASSERT_EQ(CApi<T>::backward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                          p.dy.data(), dx.data(), p.weight.data(),
                                          p.running_mean.data(), p.running_var.data(), eps,
                                          dw.data(), db.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    EXPECT_LE(test::max_relative_error(dx, want_dx), Tolerance<T>::forward);
    EXPECT_LE(test::max_relative_error(dw, want_dw), Tolerance<T>::backward);
    EXPECT_LE(test::max_relative_error(db, want_db), Tolerance<T>::backward);
  }
}

// Shapes past the kernels' chunk and block boundaries (8192 values, 256 channels), and
// through each channels-first walk: channel by channel (rows of 512 bytes and more,
// several chunks of rows), channel blocks in memory order (shorter rows; more channels
// than the 32 of a block), pieces of rows longer than a chunk.
TYPED_TEST(KernelsVsReference, LargeShapesCrossChunkBoundaries) {
  using T = TypeParam;
  const Shape shapes[] = {{3, 2, 9000, false},  {2, 300, 5, true},  {5000, 3, 1, false},
                          {2, 2, 20000, false}, {700, 17, 3, true}, {40, 4, 250, false},
                          {300, 3, 60, false},  {40, 70, 15, false},
                          {300000, 1, 1, true}};  // more rows than 256 chunks of kChunk
  uint32_t seed = 900;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(s.name());
    Problem<T> p(s, seed++);
    const auto xd = test::to_double(p.x), dyd = test::to_double(p.dy);
    std::vector<double> want(xd.size()), mean(s.c), var(s.c);
    reference::batch_norm_forward_training(s.geometry(), xd.data(), want.data(), nullptr, nullptr,
                                           1e-5, mean.data(), var.data());
    std::vector<T> y(p.x.size()), sm(s.c), si(s.c);
    ASSERT_EQ(CApi<T>::forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(),
                                        nullptr, nullptr, 1e-5, 0.1, nullptr, nullptr, sm.data(),
                                        si.data()),
              BNORM_SUCCESS);
    EXPECT_LE(test::max_relative_error(y, want), Tolerance<T>::forward * 4);
    std::vector<double> want_dx(xd.size()), want_dw(s.c), want_db(s.c);
    reference::batch_norm_backward(s.geometry(), xd.data(), dyd.data(), nullptr, 1e-5,
                                   want_dx.data(), want_dw.data(), want_db.data());
    std::vector<T> dx(p.x.size()), dw(s.c), db(s.c);
    ASSERT_EQ(CApi<T>::backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), p.dy.data(),
                                dx.data(), nullptr, sm.data(), si.data(), dw.data(), db.data()),
              BNORM_SUCCESS);
    EXPECT_LE(test::max_relative_error(dx, want_dx), Tolerance<T>::backward * 10);
    EXPECT_LE(test::max_relative_error(dw, want_dw), Tolerance<T>::backward * 10);
    EXPECT_LE(test::max_relative_error(db, want_db), Tolerance<T>::backward * 10);
  }
}

// A constant channel has variance 0: y = bias exactly (xhat = 0), never NaN.
TYPED_TEST(KernelsVsReference, ConstantChannelGivesBias) {
  using T = TypeParam;
  std::vector<T> x(2 * 3 * 4, T(7.25)), y(x.size());
  const std::vector<T> bias{T(1), T(-2), T(0.5)};
  ASSERT_EQ(CApi<T>::forward_training(BNORM_CHANNELS_FIRST, 2, 3, 4, x.data(), y.data(), nullptr,
                                      bias.data(), 1e-5, 0.1, nullptr, nullptr, nullptr, nullptr),
            BNORM_SUCCESS);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t ch = 0; ch < 3; ++ch)
      for (int64_t s = 0; s < 4; ++s) EXPECT_EQ(y[(i * 3 + ch) * 4 + s], bias[ch]);
}

}  // namespace
}  // namespace bnorm
