// The fused batch norm + ReLU (bnorm.h): every fused call against its plain twin, bit for
// bit, and against the scalar reference on the gated gradient.
//   forward:  y = relu(plain y), the same running/saved statistics, the bit mask of y
//             (memory order, tail bits 0, exactly bnorm_relu_mask_bytes bytes written);
//   backward: the y gate, the mask gate and the plain backward on dy_masked (dy where the
//             ReLU passed, else 0) give the same dx, dweight, dbias.
// Sizes straddle the vector width, the 3072-value sub-pieces and the 8192-value chunks; odd
// spatial sizes start channels-first runs at bit offsets that are not multiples of 8.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>
#include <bnorm/bnorm.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "test_support.h"

namespace bnorm {
namespace {

using test::bitwise_equal;
using test::CApi;
using test::Shape;

template <class T>
using Tolerance = test::ReluTolerance<T>;

constexpr uint8_t kGuard = 0x5a;  // the byte after the mask, never written

template <class T>
using Problem = test::ReluProblem<T>;

template <class T>
std::vector<T> relu_of(std::vector<T> v) {
  for (T& value : v) value = test::relu(value);
  return v;
}

// A mask buffer of `bytes` bytes filled with `fill`, then one guard byte.
std::vector<uint8_t> mask_buffer(int64_t bytes, uint8_t fill) {
  std::vector<uint8_t> m(static_cast<size_t>(bytes) + 1, fill);
  m.back() = kGuard;
  return m;
}

// The mask part of a mask_buffer equals `want` and the guard is untouched.
::testing::AssertionResult mask_matches(const std::vector<uint8_t>& buffer,
                                        const std::vector<uint8_t>& want) {
  if (buffer.size() != want.size() + 1) return ::testing::AssertionFailure() << "bad buffer";
  if (buffer.back() != kGuard)
    return ::testing::AssertionFailure() << "guard byte after the mask was written: "
                                         << +buffer.back();
  for (size_t b = 0; b < want.size(); ++b)
    if (buffer[b] != want[b])
      return ::testing::AssertionFailure() << "mask byte " << b << " of " << want.size()
                                           << ": got " << +buffer[b] << ", want " << +want[b];
  return ::testing::AssertionSuccess();
}

// Shapes from c in {1, 3, ..., 300} x spatial in {1, 2, ..., 8193}, n cycling through
// {1, 2, 3, 5} (lowered, or the pair skipped, above kMaxValues values), both layouts.
std::vector<Shape> fused_shapes() {
  constexpr int64_t kMaxValues = 100000;
  const int64_t channels[] = {1, 3, 7, 15, 16, 17, 31, 33, 64, 130, 300};
  const int64_t spatials[] = {1, 2, 7, 15, 16, 17, 63, 64, 65, 3071, 3072, 3073, 8193};
  const int64_t batches[] = {1, 2, 3, 5};
  std::vector<Shape> shapes;
  int k = 0;
  for (int64_t c : channels)
    for (int64_t s : spatials) {
      int64_t n = batches[k++ % 4];
      while (n > 1 && n * c * s > kMaxValues) n = n == 5 ? 3 : n - 1;
      if (n * c * s > kMaxValues) continue;
      for (bool last : {false, true}) shapes.push_back({n, c, s, last});
    }
  return shapes;
}

template <class T>
class FusedRelu : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(FusedRelu, Types);

TYPED_TEST(FusedRelu, ForwardTrainingIsReluOfPlainForwardWithItsMask) {
  using T = TypeParam;
  const double eps = 1e-5;
  uint32_t seed = 1000;
  for (const Shape& s : fused_shapes()) {
    if (s.n * s.spatial < 2) continue;  // training needs two values per channel
    SCOPED_TRACE(s.name());
    const Problem<T> p(s, seed++);
    const size_t size = p.x.size();

    std::vector<T> plain_y(size), plain_rm = p.running_mean, plain_rv = p.running_var;
    std::vector<T> plain_sm(s.c), plain_si(s.c);
    int64_t plain_tracked = 4;
    const bnorm_running_stats_update plain_update{0.1, BNORM_RUNNING_VAR_UNBIASED, &plain_tracked};
    ASSERT_EQ(CApi<T>::forward_training_ex(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                           plain_y.data(), p.weight.data(), p.bias.data(), eps,
                                           &plain_update, plain_rm.data(), plain_rv.data(),
                                           plain_sm.data(), plain_si.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    const std::vector<T> want_y = relu_of(plain_y);
    const std::vector<uint8_t> want_mask = test::relu_mask_of(want_y);
    ASSERT_EQ(static_cast<int64_t>(want_mask.size()), p.mask_bytes());

    // Out of place, the mask buffer holding garbage (all ones, all zeros) beforehand.
    for (uint8_t fill : {uint8_t{0xff}, uint8_t{0x00}}) {
      std::vector<T> y(size, T(-7)), rm = p.running_mean, rv = p.running_var;
      std::vector<T> sm(s.c), si(s.c);
      int64_t tracked = 4;
      const bnorm_running_stats_update update{0.1, BNORM_RUNNING_VAR_UNBIASED, &tracked};
      std::vector<uint8_t> mask = mask_buffer(p.mask_bytes(), fill);
      ASSERT_EQ(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                               y.data(), p.weight.data(), p.bias.data(), eps,
                                               &update, rm.data(), rv.data(), sm.data(),
                                               si.data(), mask.data()),
                BNORM_SUCCESS)
          << bnorm_last_error();
      EXPECT_TRUE(bitwise_equal(y, want_y));
      EXPECT_TRUE(mask_matches(mask, want_mask)) << "fill " << +fill;
      EXPECT_TRUE(bitwise_equal(rm, plain_rm));
      EXPECT_TRUE(bitwise_equal(rv, plain_rv));
      EXPECT_TRUE(bitwise_equal(sm, plain_sm));
      EXPECT_TRUE(bitwise_equal(si, plain_si));
      EXPECT_EQ(tracked, plain_tracked);
    }

    // In place without a mask (the unpieced path), and in place with one.
    std::vector<T> inplace = p.x;
    ASSERT_EQ(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, inplace.data(),
                                             inplace.data(), p.weight.data(), p.bias.data(), eps,
                                             nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
              BNORM_SUCCESS);
    EXPECT_TRUE(bitwise_equal(inplace, want_y));
    inplace = p.x;
    std::vector<uint8_t> mask = mask_buffer(p.mask_bytes(), 0xff);
    ASSERT_EQ(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, inplace.data(),
                                             inplace.data(), p.weight.data(), p.bias.data(), eps,
                                             nullptr, nullptr, nullptr, nullptr, nullptr,
                                             mask.data()),
              BNORM_SUCCESS);
    EXPECT_TRUE(bitwise_equal(inplace, want_y));
    EXPECT_TRUE(mask_matches(mask, want_mask));

    // Close to relu of the reference.
    const auto xd = test::to_double(p.x);
    const auto wd = test::to_double(p.weight), bd = test::to_double(p.bias);
    std::vector<double> ref(size), mean(s.c), var(s.c);
    reference::batch_norm_forward_training(s.geometry(), xd.data(), ref.data(), wd.data(),
                                           bd.data(), eps, mean.data(), var.data());
    EXPECT_LE(test::max_relative_error(want_y, relu_of(ref)), Tolerance<T>::forward);
  }
}

TYPED_TEST(FusedRelu, ForwardInferenceIsReluOfPlainForwardWithItsMask) {
  using T = TypeParam;
  const double eps = 1e-3;
  uint32_t seed = 3000;
  for (const Shape& s : fused_shapes()) {
    SCOPED_TRACE(s.name());
    const Problem<T> p(s, seed++);
    const size_t size = p.x.size();
    std::vector<T> plain_y(size);
    ASSERT_EQ(CApi<T>::forward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                         plain_y.data(), p.weight.data(), p.bias.data(),
                                         p.running_mean.data(), p.running_var.data(), eps),
              BNORM_SUCCESS)
        << bnorm_last_error();
    const std::vector<T> want_y = relu_of(plain_y);
    const std::vector<uint8_t> want_mask = test::relu_mask_of(want_y);

    for (uint8_t fill : {uint8_t{0xff}, uint8_t{0x00}}) {
      std::vector<T> y(size, T(-7));
      std::vector<uint8_t> mask = mask_buffer(p.mask_bytes(), fill);
      ASSERT_EQ(CApi<T>::relu_forward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                                y.data(), p.weight.data(), p.bias.data(),
                                                p.running_mean.data(), p.running_var.data(), eps,
                                                mask.data()),
                BNORM_SUCCESS)
          << bnorm_last_error();
      EXPECT_TRUE(bitwise_equal(y, want_y));
      EXPECT_TRUE(mask_matches(mask, want_mask)) << "fill " << +fill;
    }
    std::vector<T> inplace = p.x;
    std::vector<uint8_t> mask = mask_buffer(p.mask_bytes(), 0xff);
    ASSERT_EQ(CApi<T>::relu_forward_inference(s.layout(), s.n, s.c, s.spatial, inplace.data(),
                                              inplace.data(), p.weight.data(), p.bias.data(),
                                              p.running_mean.data(), p.running_var.data(), eps,
                                              mask.data()),
              BNORM_SUCCESS);
    EXPECT_TRUE(bitwise_equal(inplace, want_y));
    EXPECT_TRUE(mask_matches(mask, want_mask));
    inplace = p.x;
    ASSERT_EQ(CApi<T>::relu_forward_inference(s.layout(), s.n, s.c, s.spatial, inplace.data(),
                                              inplace.data(), p.weight.data(), p.bias.data(),
                                              p.running_mean.data(), p.running_var.data(), eps,
                                              nullptr),
              BNORM_SUCCESS);
    EXPECT_TRUE(bitwise_equal(inplace, want_y));

    const auto xd = test::to_double(p.x);
    const auto wd = test::to_double(p.weight), bd = test::to_double(p.bias);
    const auto rm = test::to_double(p.running_mean), rv = test::to_double(p.running_var);
    std::vector<double> ref(size);
    reference::batch_norm_forward_inference(s.geometry(), xd.data(), ref.data(), wd.data(),
                                            bd.data(), rm.data(), rv.data(), eps);
    EXPECT_LE(test::max_relative_error(want_y, relu_of(ref)), Tolerance<T>::forward);
  }
}

// dx, dweight, dbias of one backward call.
template <class T>
struct Grads {
  std::vector<T> dx, dweight, dbias;
  Grads(size_t size, int64_t c) : dx(size, T(-3)), dweight(c, T(-4)), dbias(c, T(-5)) {}
};

template <class T>
void expect_same_grads(const Grads<T>& got, const Grads<T>& want, const char* what) {
  SCOPED_TRACE(what);
  EXPECT_TRUE(bitwise_equal(got.dx, want.dx));
  EXPECT_TRUE(bitwise_equal(got.dweight, want.dweight));
  EXPECT_TRUE(bitwise_equal(got.dbias, want.dbias));
}

TYPED_TEST(FusedRelu, BackwardGatesAgreeWithPlainBackwardOnGatedDy) {
  using T = TypeParam;
  const double eps = 1e-5;
  uint32_t seed = 5000;
  for (const Shape& s : fused_shapes()) {
    if (s.n * s.spatial < 2) continue;
    SCOPED_TRACE(s.name());
    const Problem<T> p(s, seed++);
    const size_t size = p.x.size();
    std::vector<T> y(size), sm(s.c), si(s.c);
    std::vector<uint8_t> mask(static_cast<size_t>(p.mask_bytes()));
    ASSERT_EQ(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                             y.data(), p.weight.data(), p.bias.data(), eps,
                                             nullptr, nullptr, nullptr, sm.data(), si.data(),
                                             mask.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    const std::vector<T> dy_masked = test::relu_gated(p.dy, y);

    Grads<T> plain(size, s.c);
    ASSERT_EQ(CApi<T>::backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), dy_masked.data(),
                                plain.dx.data(), p.weight.data(), sm.data(), si.data(),
                                plain.dweight.data(), plain.dbias.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();

    Grads<T> by_y(size, s.c), by_mask(size, s.c);
    ASSERT_EQ(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(),
                                     nullptr, p.dy.data(), by_y.dx.data(), p.weight.data(),
                                     sm.data(), si.data(), by_y.dweight.data(),
                                     by_y.dbias.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    ASSERT_EQ(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), nullptr,
                                     mask.data(), p.dy.data(), by_mask.dx.data(),
                                     p.weight.data(), sm.data(), si.data(),
                                     by_mask.dweight.data(), by_mask.dbias.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    expect_same_grads(by_y, plain, "y gate vs plain on dy_masked");
    expect_same_grads(by_mask, plain, "mask gate vs plain on dy_masked");

    // In place: dx == dy.
    Grads<T> inplace_y(size, s.c), inplace_mask(size, s.c);
    inplace_y.dx = p.dy;
    ASSERT_EQ(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(),
                                     nullptr, inplace_y.dx.data(), inplace_y.dx.data(),
                                     p.weight.data(), sm.data(), si.data(),
                                     inplace_y.dweight.data(), inplace_y.dbias.data()),
              BNORM_SUCCESS);
    inplace_mask.dx = p.dy;
    ASSERT_EQ(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), nullptr,
                                     mask.data(), inplace_mask.dx.data(), inplace_mask.dx.data(),
                                     p.weight.data(), sm.data(), si.data(),
                                     inplace_mask.dweight.data(), inplace_mask.dbias.data()),
              BNORM_SUCCESS);
    expect_same_grads(inplace_y, plain, "in place, y gate");
    expect_same_grads(inplace_mask, plain, "in place, mask gate");

    // The reference on dy_masked (batch statistics recomputed from x in double).
    const auto xd = test::to_double(p.x), dyd = test::to_double(dy_masked);
    const auto wd = test::to_double(p.weight);
    std::vector<double> want_dx(size), want_dw(s.c), want_db(s.c);
    reference::batch_norm_backward(s.geometry(), xd.data(), dyd.data(), wd.data(), eps,
                                   want_dx.data(), want_dw.data(), want_db.data());
    EXPECT_LE(test::max_relative_error(plain.dx, want_dx), Tolerance<T>::backward);
    EXPECT_LE(test::max_relative_error(plain.dweight, want_dw), Tolerance<T>::backward);
    EXPECT_LE(test::max_relative_error(plain.dbias, want_db), Tolerance<T>::backward);
  }
}

TYPED_TEST(FusedRelu, BackwardInferenceGatesAgreeWithPlainBackwardOnGatedDy) {
  using T = TypeParam;
  const double eps = 1e-3;
  uint32_t seed = 7000;
  for (const Shape& s : fused_shapes()) {
    SCOPED_TRACE(s.name());
    const Problem<T> p(s, seed++);
    const size_t size = p.x.size();
    std::vector<T> y(size);
    std::vector<uint8_t> mask(static_cast<size_t>(p.mask_bytes()));
    ASSERT_EQ(CApi<T>::relu_forward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                              y.data(), p.weight.data(), p.bias.data(),
                                              p.running_mean.data(), p.running_var.data(), eps,
                                              mask.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    const std::vector<T> dy_masked = test::relu_gated(p.dy, y);

    Grads<T> plain(size, s.c), by_y(size, s.c), by_mask(size, s.c);
    ASSERT_EQ(CApi<T>::backward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                          dy_masked.data(), plain.dx.data(), p.weight.data(),
                                          p.running_mean.data(), p.running_var.data(), eps,
                                          plain.dweight.data(), plain.dbias.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    ASSERT_EQ(CApi<T>::relu_backward_inference(
                  s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(), nullptr, p.dy.data(),
                  by_y.dx.data(), p.weight.data(), p.running_mean.data(), p.running_var.data(),
                  eps, by_y.dweight.data(), by_y.dbias.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    ASSERT_EQ(CApi<T>::relu_backward_inference(
                  s.layout(), s.n, s.c, s.spatial, p.x.data(), nullptr, mask.data(), p.dy.data(),
                  by_mask.dx.data(), p.weight.data(), p.running_mean.data(),
                  p.running_var.data(), eps, by_mask.dweight.data(), by_mask.dbias.data()),
              BNORM_SUCCESS)
        << bnorm_last_error();
    expect_same_grads(by_y, plain, "y gate vs plain on dy_masked");
    expect_same_grads(by_mask, plain, "mask gate vs plain on dy_masked");

    Grads<T> inplace_y(size, s.c), inplace_mask(size, s.c);
    inplace_y.dx = p.dy;
    ASSERT_EQ(CApi<T>::relu_backward_inference(
                  s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(), nullptr,
                  inplace_y.dx.data(), inplace_y.dx.data(), p.weight.data(),
                  p.running_mean.data(), p.running_var.data(), eps, inplace_y.dweight.data(),
                  inplace_y.dbias.data()),
              BNORM_SUCCESS);
    inplace_mask.dx = p.dy;
    ASSERT_EQ(CApi<T>::relu_backward_inference(
                  s.layout(), s.n, s.c, s.spatial, p.x.data(), nullptr, mask.data(),
                  inplace_mask.dx.data(), inplace_mask.dx.data(), p.weight.data(),
                  p.running_mean.data(), p.running_var.data(), eps, inplace_mask.dweight.data(),
                  inplace_mask.dbias.data()),
              BNORM_SUCCESS);
    expect_same_grads(inplace_y, plain, "in place, y gate");
    expect_same_grads(inplace_mask, plain, "in place, mask gate");

    const auto xd = test::to_double(p.x), dyd = test::to_double(dy_masked);
    const auto wd = test::to_double(p.weight);
    const auto rm = test::to_double(p.running_mean), rv = test::to_double(p.running_var);
    std::vector<double> want_dx(size), want_dw(s.c), want_db(s.c);
    reference::batch_norm_backward_inference(s.geometry(), xd.data(), dyd.data(), wd.data(),
                                             rm.data(), rv.data(), eps, want_dx.data(),
                                             want_dw.data(), want_db.data());
    EXPECT_LE(test::max_relative_error(plain.dx, want_dx), Tolerance<T>::forward);
    EXPECT_LE(test::max_relative_error(plain.dweight, want_dw), Tolerance<T>::backward);
    EXPECT_LE(test::max_relative_error(plain.dbias, want_db), Tolerance<T>::backward);
  }
}

// A NaN input stays NaN through the ReLU (its mask bit set) and passes its gradient.
TYPED_TEST(FusedRelu, NanStaysNanAndPassesTheGradient) {
  using T = TypeParam;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (bool last : {false, true}) {
    const Shape s{3, 5, 37, last};
    SCOPED_TRACE(s.name());
    Problem<T> p(s, 40);
    for (size_t i : {size_t{0}, size_t{9}, size_t{100}, p.x.size() - 1}) p.x[i] = nan;
    const size_t size = p.x.size();

    std::vector<T> plain_y(size), y(size);
    std::vector<uint8_t> mask = mask_buffer(p.mask_bytes(), 0);
    ASSERT_EQ(CApi<T>::forward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                         plain_y.data(), p.weight.data(), p.bias.data(),
                                         p.running_mean.data(), p.running_var.data(), 1e-5),
              BNORM_SUCCESS);
    ASSERT_EQ(CApi<T>::relu_forward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                              y.data(), p.weight.data(), p.bias.data(),
                                              p.running_mean.data(), p.running_var.data(), 1e-5,
                                              mask.data()),
              BNORM_SUCCESS);
    EXPECT_TRUE(bitwise_equal(y, relu_of(plain_y)));
    for (size_t i : {size_t{0}, size_t{9}, size_t{100}, size - 1}) {
      EXPECT_TRUE(std::isnan(y[i])) << i;
      EXPECT_EQ((mask[i / 8] >> (i % 8)) & 1, 1) << i;
    }
    EXPECT_TRUE(mask_matches(mask, test::relu_mask_of(y)));

    const std::vector<T> dy_masked = test::relu_gated(p.dy, y);
    Grads<T> plain(size, s.c), by_y(size, s.c), by_mask(size, s.c);
    ASSERT_EQ(CApi<T>::backward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                          dy_masked.data(), plain.dx.data(), p.weight.data(),
                                          p.running_mean.data(), p.running_var.data(), 1e-5,
                                          plain.dweight.data(), plain.dbias.data()),
              BNORM_SUCCESS);
    ASSERT_EQ(CApi<T>::relu_backward_inference(
                  s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(), nullptr, p.dy.data(),
                  by_y.dx.data(), p.weight.data(), p.running_mean.data(), p.running_var.data(),
                  1e-5, by_y.dweight.data(), by_y.dbias.data()),
              BNORM_SUCCESS);
    ASSERT_EQ(CApi<T>::relu_backward_inference(
                  s.layout(), s.n, s.c, s.spatial, p.x.data(), nullptr, mask.data(), p.dy.data(),
                  by_mask.dx.data(), p.weight.data(), p.running_mean.data(),
                  p.running_var.data(), 1e-5, by_mask.dweight.data(), by_mask.dbias.data()),
              BNORM_SUCCESS);
    expect_same_grads(by_y, plain, "y gate");
    expect_same_grads(by_mask, plain, "mask gate");
    for (size_t i : {size_t{0}, size_t{9}, size_t{100}, size - 1}) {
      EXPECT_EQ(dy_masked[i], p.dy[i]) << i;      // the gate passed
      EXPECT_FALSE(std::isnan(by_y.dx[i])) << i;  // dx = dy * weight * invstd
    }

    // Training: a NaN makes its whole channel NaN, gate open everywhere in it.
    std::vector<T> ty(size), plain_ty(size), sm(s.c), si(s.c);
    std::vector<uint8_t> tmask = mask_buffer(p.mask_bytes(), 0);
    ASSERT_EQ(CApi<T>::forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                        plain_ty.data(), p.weight.data(), p.bias.data(), 1e-5,
                                        0.1, nullptr, nullptr, nullptr, nullptr),
              BNORM_SUCCESS);
    ASSERT_EQ(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                             ty.data(), p.weight.data(), p.bias.data(), 1e-5,
                                             nullptr, nullptr, nullptr, sm.data(), si.data(),
                                             tmask.data()),
              BNORM_SUCCESS);
    EXPECT_TRUE(bitwise_equal(ty, relu_of(plain_ty)));
    EXPECT_TRUE(mask_matches(tmask, test::relu_mask_of(ty)));
    EXPECT_TRUE(std::isnan(ty[0]));
  }
}

// ---- thread counts ----------------------------------------------------------------------

// Every fused output of one problem, as bytes.
template <class T>
std::vector<std::vector<uint8_t>> run_fused(const Shape& s, const Problem<T>& p) {
  const size_t size = p.x.size();
  const auto bytes = [](const auto& v) {
    const auto* b = reinterpret_cast<const uint8_t*>(v.data());
    return std::vector<uint8_t>(b, b + v.size() * sizeof(v[0]));
  };
  std::vector<std::vector<uint8_t>> out;
  std::vector<T> y(size), rm = p.running_mean, rv = p.running_var, sm(s.c), si(s.c);
  std::vector<uint8_t> mask = mask_buffer(p.mask_bytes(), 0xff);
  const bnorm_running_stats_update update{0.1, BNORM_RUNNING_VAR_UNBIASED, nullptr};
  EXPECT_EQ(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(),
                                           p.weight.data(), p.bias.data(), 1e-5, &update,
                                           rm.data(), rv.data(), sm.data(), si.data(),
                                           mask.data()),
            BNORM_SUCCESS);
  Grads<T> g(size, s.c), gm(size, s.c);
  EXPECT_EQ(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(), nullptr,
                                   p.dy.data(), g.dx.data(), p.weight.data(), sm.data(),
                                   si.data(), g.dweight.data(), g.dbias.data()),
            BNORM_SUCCESS);
  EXPECT_EQ(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), nullptr,
                                   mask.data(), p.dy.data(), gm.dx.data(), p.weight.data(),
                                   sm.data(), si.data(), gm.dweight.data(), gm.dbias.data()),
            BNORM_SUCCESS);
  for (const auto* v : {&y, &rm, &rv, &sm, &si, &g.dx, &g.dweight, &g.dbias, &gm.dx,
                        &gm.dweight, &gm.dbias})
    out.push_back(bytes(*v));
  out.push_back(mask);

  std::vector<T> iy(size);
  std::vector<uint8_t> imask = mask_buffer(p.mask_bytes(), 0xff);
  EXPECT_EQ(CApi<T>::relu_forward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                            iy.data(), p.weight.data(), p.bias.data(),
                                            p.running_mean.data(), p.running_var.data(), 1e-5,
                                            imask.data()),
            BNORM_SUCCESS);
  Grads<T> ig(size, s.c), igm(size, s.c);
  EXPECT_EQ(CApi<T>::relu_backward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                             iy.data(), nullptr, p.dy.data(), ig.dx.data(),
                                             p.weight.data(), p.running_mean.data(),
                                             p.running_var.data(), 1e-5, ig.dweight.data(),
                                             ig.dbias.data()),
            BNORM_SUCCESS);
  EXPECT_EQ(CApi<T>::relu_backward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                             nullptr, imask.data(), p.dy.data(), igm.dx.data(),
                                             p.weight.data(), p.running_mean.data(),
                                             p.running_var.data(), 1e-5, igm.dweight.data(),
                                             igm.dbias.data()),
            BNORM_SUCCESS);
  for (const auto* v : {&iy, &ig.dx, &ig.dweight, &ig.dbias, &igm.dx, &igm.dweight, &igm.dbias})
    out.push_back(bytes(*v));
  out.push_back(imask);
  return out;
}

TYPED_TEST(FusedRelu, ThreadCountsGiveBitwiseIdenticalOutputsAndMasks) {
  using T = TypeParam;
  // All above the 32768-value parallel threshold, with odd sizes so that the threads'
  // pieces meet inside mask bytes.
  const Shape shapes[] = {{3, 5, 67 * 101, false},  // (3, 5, 67, 101)
                          {7, 5, 2001, true},       // (7, 2001, 5) channels-last
                          {2, 300, 111, true},      // rows wider than a column block
                          {5, 33, 401, false}};
  const char* names[] = {"y", "running_mean", "running_var", "save_mean", "save_invstd",
                         "dx (y gate)", "dweight (y gate)", "dbias (y gate)", "dx (mask gate)",
                         "dweight (mask gate)", "dbias (mask gate)", "mask",
                         "inference y", "inference dx (y gate)", "inference dweight (y gate)",
                         "inference dbias (y gate)", "inference dx (mask gate)",
                         "inference dweight (mask gate)", "inference dbias (mask gate)",
                         "inference mask"};
  uint32_t seed = 9000;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(s.name());
    ASSERT_GT(s.size(), 32768);
    const Problem<T> p(s, seed++);
    bnorm_set_num_threads(1);
    const auto one = run_fused(s, p);
    bnorm_set_num_threads(2);
    const auto two = run_fused(s, p);
    ASSERT_EQ(one.size(), std::size(names));
    ASSERT_EQ(two.size(), one.size());
    for (size_t k = 0; k < one.size(); ++k)
      EXPECT_TRUE(bitwise_equal(two[k], one[k])) << names[k] << ": 2 threads differ from 1";
  }
  bnorm_set_num_threads(0);
}

// ---- errors and the mask size ------------------------------------------------------------

TYPED_TEST(FusedRelu, BackwardsNeedExactlyOneGate) {
  using T = TypeParam;
  const Shape s{2, 3, 5, false};
  const Problem<T> p(s, 77);
  const size_t size = p.x.size();
  std::vector<T> y(size), sm(s.c), si(s.c);
  std::vector<uint8_t> mask(static_cast<size_t>(p.mask_bytes()));
  ASSERT_EQ(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(),
                                           nullptr, nullptr, 1e-5, nullptr, nullptr, nullptr,
                                           sm.data(), si.data(), mask.data()),
            BNORM_SUCCESS);
  struct Case {
    const T* y;
    const uint8_t* mask;
    bnorm_status want;
  };
  const Case cases[] = {{nullptr, nullptr, BNORM_ERROR_NULL_POINTER},
                        {y.data(), mask.data(), BNORM_ERROR_INVALID_VALUE}};
  for (const Case& c : cases) {
    for (bool inference : {false, true}) {
      SCOPED_TRACE(inference ? "backward_inference" : "backward");
      Grads<T> g(size, s.c);
      const bnorm_status got =
          inference ? CApi<T>::relu_backward_inference(
                          s.layout(), s.n, s.c, s.spatial, p.x.data(), c.y, c.mask, p.dy.data(),
                          g.dx.data(), nullptr, p.running_mean.data(), p.running_var.data(),
                          1e-5, g.dweight.data(), g.dbias.data())
                    : CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, p.x.data(), c.y,
                                             c.mask, p.dy.data(), g.dx.data(), nullptr,
                                             sm.data(), si.data(), g.dweight.data(),
                                             g.dbias.data());
      EXPECT_EQ(got, c.want) << bnorm_status_string(got);
      const std::string message = bnorm_last_error();
      EXPECT_NE(message.find("y and relu_mask"), std::string::npos) << message;
      const Grads<T> untouched(size, s.c);
      expect_same_grads(g, untouched, "nothing written");
    }
  }
}

TYPED_TEST(FusedRelu, FailingForwardWritesNoMask) {
  using T = TypeParam;
  const Shape s{2, 3, 5, true};
  const Problem<T> p(s, 78);
  std::vector<T> y(p.x.size(), T(-7));
  std::vector<uint8_t> mask = mask_buffer(p.mask_bytes(), 0x33);
  EXPECT_EQ(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, p.x.data(), y.data(),
                                           nullptr, nullptr, -1.0, nullptr, nullptr, nullptr,
                                           nullptr, nullptr, mask.data()),
            BNORM_ERROR_INVALID_VALUE);
  EXPECT_EQ(CApi<T>::relu_forward_inference(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                            y.data(), nullptr, nullptr, nullptr,
                                            p.running_var.data(), 1e-5, mask.data()),
            BNORM_ERROR_NULL_POINTER);
  for (T v : y) ASSERT_EQ(v, T(-7));
  for (size_t b = 0; b + 1 < mask.size(); ++b) ASSERT_EQ(mask[b], 0x33);
  EXPECT_EQ(mask.back(), kGuard);
}

TEST(FusedReluMaskBytes, OneBitPerValueRoundedUp) {
  EXPECT_EQ(bnorm_relu_mask_bytes(1, 1, 1), 1);
  EXPECT_EQ(bnorm_relu_mask_bytes(1, 1, 8), 1);
  EXPECT_EQ(bnorm_relu_mask_bytes(1, 1, 9), 2);
  EXPECT_EQ(bnorm_relu_mask_bytes(2, 3, 5), 4);
  EXPECT_EQ(bnorm_relu_mask_bytes(3, 5, 67 * 101), (3 * 5 * 67 * 101 + 7) / 8);
  const int64_t big = int64_t{1} << 32;
  EXPECT_EQ(bnorm_relu_mask_bytes(big, big, 1), -1);
  EXPECT_EQ(bnorm_relu_mask_bytes(big, 2, big), -1);
  EXPECT_EQ(bnorm_relu_mask_bytes(std::numeric_limits<int64_t>::max(), 2, 1), -1);
  EXPECT_EQ(bnorm_relu_mask_bytes(-1, 2, 3), -1);
  EXPECT_EQ(bnorm_relu_mask_bytes(1, 2, -3), -1);
}

// ceil(count / 8) as (count + 7) / 8 would overflow int64_t for the counts in
// (INT64_MAX - 7, INT64_MAX]: the product fits, so bnorm.h promises ceil(count / 8) = 2^60.
TEST(FusedReluMaskBytes, CountsNearInt64MaxDoNotOverflow) {
  const int64_t max = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(bnorm_relu_mask_bytes(max, 1, 1), int64_t{1} << 60);
  EXPECT_EQ(bnorm_relu_mask_bytes(1, max - 3, 1), int64_t{1} << 60);
  EXPECT_EQ(bnorm_relu_mask_bytes(1, 1, max - 7), max / 8);
}

// ---- the C++ API -------------------------------------------------------------------------

TEST(FusedReluCpp, SameBitsAsTheCApi) {
  const Shape s{3, 17, 5 * 13, true};  // (3, 17, 5, 13) channels-last
  const std::vector<int64_t> sizes{3, 17, 5, 13};
  const Problem<float> p(s, 90);
  const size_t size = p.x.size();
  const size_t bytes = static_cast<size_t>(p.mask_bytes());
  const Layout layout = Layout::channels_last;

  std::vector<float> cy(size), csm(s.c), csi(s.c), crm = p.running_mean, crv = p.running_var;
  std::vector<uint8_t> cmask(bytes);
  ASSERT_EQ(bnorm_batch_norm_relu_forward_training_f32(
                s.layout(), s.n, s.c, s.spatial, p.x.data(), cy.data(), p.weight.data(),
                p.bias.data(), 1e-5, nullptr, crm.data(), crv.data(), csm.data(), csi.data(),
                cmask.data()),
            BNORM_SUCCESS);
  std::vector<float> y(size), sm(s.c), si(s.c), rm = p.running_mean, rv = p.running_var;
  std::vector<uint8_t> mask(bytes, 0xff);
  batch_norm_relu_forward_training<float>({p.x.data(), sizes, layout}, {y.data(), sizes, layout},
                                          p.weight, p.bias, 1e-5, RunningStatsUpdate{}, rm, rv,
                                          sm, si, mask);
  EXPECT_TRUE(bitwise_equal(y, cy));
  EXPECT_EQ(mask, cmask);
  EXPECT_TRUE(bitwise_equal(rm, crm));
  EXPECT_TRUE(bitwise_equal(rv, crv));
  EXPECT_TRUE(bitwise_equal(sm, csm));
  EXPECT_TRUE(bitwise_equal(si, csi));

  Grads<float> cg(size, s.c), g(size, s.c);
  ASSERT_EQ(bnorm_batch_norm_relu_backward_f32(s.layout(), s.n, s.c, s.spatial, p.x.data(),
                                               cy.data(), nullptr, p.dy.data(), cg.dx.data(),
                                               p.weight.data(), csm.data(), csi.data(),
                                               cg.dweight.data(), cg.dbias.data()),
            BNORM_SUCCESS);
  batch_norm_relu_backward<float>({p.x.data(), sizes, layout}, {}, mask,
                                  {p.dy.data(), sizes, layout}, {g.dx.data(), sizes, layout},
                                  p.weight, sm, si, g.dweight, g.dbias);
  expect_same_grads(g, cg, "C++ mask gate vs C y gate");

  std::vector<float> iy(size), ciy(size);
  std::vector<uint8_t> imask(bytes), cimask(bytes);
  ASSERT_EQ(bnorm_batch_norm_relu_forward_inference_f32(
                s.layout(), s.n, s.c, s.spatial, p.x.data(), ciy.data(), p.weight.data(),
                p.bias.data(), p.running_mean.data(), p.running_var.data(), 1e-5, cimask.data()),
            BNORM_SUCCESS);
  batch_norm_relu_forward_inference<float>({p.x.data(), sizes, layout},
                                           {iy.data(), sizes, layout}, p.weight, p.bias,
                                           p.running_mean, p.running_var, 1e-5, imask);
  EXPECT_TRUE(bitwise_equal(iy, ciy));
  EXPECT_EQ(imask, cimask);
  Grads<float> cig(size, s.c), ig(size, s.c);
  ASSERT_EQ(bnorm_batch_norm_relu_backward_inference_f32(
                s.layout(), s.n, s.c, s.spatial, p.x.data(), nullptr, cimask.data(),
                p.dy.data(), cig.dx.data(), p.weight.data(), p.running_mean.data(),
                p.running_var.data(), 1e-5, cig.dweight.data(), cig.dbias.data()),
            BNORM_SUCCESS);
  batch_norm_relu_backward_inference<float>(
      {p.x.data(), sizes, layout}, {iy.data(), sizes, layout}, {}, {p.dy.data(), sizes, layout},
      {ig.dx.data(), sizes, layout}, p.weight, p.running_mean, p.running_var, 1e-5, ig.dweight,
      ig.dbias);
  expect_same_grads(ig, cig, "C++ y gate vs C mask gate");
}

TEST(FusedReluCpp, WrongMaskLengthIsAShapeMismatchAndWritesNothing) {
  const std::vector<int64_t> sizes{2, 3, 7};  // 42 values: 6 bytes
  const Shape s{2, 3, 7, false};
  const Problem<double> p(s, 91);
  const size_t size = p.x.size();
  const TensorView<const double> x{p.x.data(), sizes};
  const TensorView<const double> dy{p.dy.data(), sizes};
  std::vector<double> y(size, -7.0), dx(size, -3.0), sm(s.c, 1.0), si(s.c, 1.0);
  std::vector<double> dw(s.c, -4.0), db(s.c, -5.0);
  const std::vector<double> y0 = y, dx0 = dx, dw0 = dw, db0 = db;
  for (size_t bytes : {size_t{5}, size_t{7}}) {
    SCOPED_TRACE(bytes);
    std::vector<uint8_t> mask(bytes, 0x33);
    const auto expect_mismatch = [&](auto&& call) {
      try {
        call();
        ADD_FAILURE() << "no bnorm::Error thrown";
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), BNORM_ERROR_SHAPE_MISMATCH) << e.what();
        EXPECT_NE(std::string(e.what()).find("relu_mask"), std::string::npos) << e.what();
      }
    };
    expect_mismatch([&] {
      batch_norm_relu_forward_training<double>(x, {y.data(), sizes}, {}, {}, 1e-5,
                                               RunningStatsUpdate{}, {}, {}, sm, si, mask);
    });
    expect_mismatch([&] {
      batch_norm_relu_forward_inference<double>(x, {y.data(), sizes}, {}, {}, p.running_mean,
                                                p.running_var, 1e-5, mask);
    });
    expect_mismatch([&] {
      batch_norm_relu_backward<double>(x, {}, mask, dy, {dx.data(), sizes}, {}, sm, si, dw, db);
    });
    expect_mismatch([&] {
      batch_norm_relu_backward_inference<double>(x, {}, mask, dy, {dx.data(), sizes}, {},
                                                 p.running_mean, p.running_var, 1e-5, dw, db);
    });
    for (uint8_t b : mask) EXPECT_EQ(b, 0x33);
    EXPECT_EQ(y, y0);
    EXPECT_EQ(dx, dx0);
    EXPECT_EQ(dw, dw0);
    EXPECT_EQ(db, db0);
    EXPECT_EQ(sm, std::vector<double>(s.c, 1.0));
  }
}

TEST(FusedReluCpp, GateErrorsCarryTheCStatus) {
  const std::vector<int64_t> sizes{2, 3, 7};
  const Shape s{2, 3, 7, false};
  const Problem<float> p(s, 92);
  std::vector<float> y(p.x.size()), dx(p.x.size(), -3.f), sm(s.c, 0.f), si(s.c, 1.f);
  std::vector<uint8_t> mask(static_cast<size_t>(p.mask_bytes()));
  const TensorView<const float> x{p.x.data(), sizes}, dy{p.dy.data(), sizes};
  try {
    batch_norm_relu_backward<float>(x, {}, {}, dy, {dx.data(), sizes}, {}, sm, si, {}, {});
    ADD_FAILURE() << "no gate: no bnorm::Error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), BNORM_ERROR_NULL_POINTER) << e.what();
  }
  try {
    batch_norm_relu_backward<float>(x, {y.data(), sizes}, mask, dy, {dx.data(), sizes}, {}, sm,
                                    si, {}, {});
    ADD_FAILURE() << "two gates: no bnorm::Error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), BNORM_ERROR_INVALID_VALUE) << e.what();
  }
  for (float v : dx) ASSERT_EQ(v, -3.f);
}

}  // namespace
}  // namespace bnorm
