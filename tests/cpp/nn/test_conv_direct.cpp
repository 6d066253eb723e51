// The direct convolution kernels (src/nn/conv_direct.*) against plain loops and against
// their twin, im2col + GEMM (ConvAlgorithm::gemm): the output, dx, dweight and dbias on
// output widths below, at and above the 8-column vector, padding 0 .. k - 1, channel
// counts that leave partial register tiles and image counts that leave a partial group;
// the same bits for any thread count; and the option's errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "nn/blas.h"
#include "nn/conv2d.h"
#include "nn/random.h"

namespace bnorm::nn {
namespace {

struct Case {
  int64_t cin, cout, k, padding, n, h, w;
};

// Output widths 1 to 28 (24: LeNet-BN's first layer, 28: LeNet's), padding 0 to past
// k - 1, kernels 1 to 9 (the largest the direct path takes), 20 output channels (more
// than one register tile).
std::vector<Case> cases() {
  return {
      {1, 6, 5, 0, 3, 28, 28},  {6, 16, 5, 0, 9, 12, 12}, {1, 6, 5, 2, 2, 28, 28},
      {2, 3, 3, 1, 2, 5, 1},    {3, 5, 3, 0, 2, 6, 9},    {2, 9, 3, 2, 3, 4, 6},
      {4, 4, 1, 0, 2, 3, 9},    {3, 2, 5, 4, 2, 7, 11},   {1, 11, 2, 1, 2, 6, 14},
      {2, 3, 3, 1, 17, 5, 17},  {5, 7, 4, 3, 2, 9, 15},   {2, 3, 3, 4, 2, 5, 6},
      {2, 3, 9, 0, 2, 10, 25},  {3, 2, 7, 3, 2, 8, 9},    {1, 20, 5, 0, 2, 12, 12},
  };
}

std::string name(const Case& c) {
  return "Conv2d(" + std::to_string(c.cin) + ", " + std::to_string(c.cout) + ", k=" +
         std::to_string(c.k) + ", p=" + std::to_string(c.padding) + ") on (" +
         std::to_string(c.n) + ", " + std::to_string(c.cin) + ", " + std::to_string(c.h) + ", " +
         std::to_string(c.w) + ")";
}

template <class T>
struct Result {
  std::vector<T> y, dx, dweight, dbias;
};

template <class T>
void fill(std::span<T> values, uint64_t seed) {
  Rng rng(seed);
  for (T& v : values) v = static_cast<T>(rng.uniform(-1.0, 1.0));
}

template <class T>
Result<T> run(const Case& c, ConvAlgorithm algorithm, uint64_t seed) {
  Conv2d<T> conv(Conv2dOptions{c.cin, c.cout, c.k, 1, c.padding, true, algorithm});
  EXPECT_EQ(conv.uses_direct(), algorithm == ConvAlgorithm::direct);
  fill(conv.weight(), seed);
  fill(conv.bias(), seed + 1);
  Tensor<T> x({c.n, c.cin, c.h, c.w});
  fill(x.values(), seed + 2);
  Tensor<T> y(conv.output_shape(x.shape()));
  y.fill(std::numeric_limits<T>::quiet_NaN());
  conv.forward(x, y);
  Tensor<T> dy(y.shape()), dx(x.shape());
  fill(dy.values(), seed + 3);
  dx.fill(std::numeric_limits<T>::quiet_NaN());
  conv.backward(x, y, dy, &dx);
  StateLists<T> state;
  conv.collect_state(state, "");
  return {{y.values().begin(), y.values().end()},
          {dx.values().begin(), dx.values().end()},
          {state.parameters[0].grad.begin(), state.parameters[0].grad.end()},
          {state.parameters[1].grad.begin(), state.parameters[1].grad.end()}};
}

// The definitions, in double, on the same numbers as run<T>(c, ..., seed).
Result<double> loops(const Case& c, uint64_t seed) {
  const int64_t k = c.k, p = c.padding, ho = c.h + 2 * p - k + 1, wo = c.w + 2 * p - k + 1;
  std::vector<double> w(static_cast<size_t>(c.cout * c.cin * k * k)), b(static_cast<size_t>(c.cout));
  std::vector<double> x(static_cast<size_t>(c.n * c.cin * c.h * c.w));
  std::vector<double> dy(static_cast<size_t>(c.n * c.cout * ho * wo));
  fill(std::span<double>(w), seed);
  fill(std::span<double>(b), seed + 1);
  fill(std::span<double>(x), seed + 2);
  fill(std::span<double>(dy), seed + 3);
  Result<double> r{std::vector<double>(dy.size(), 0.0), std::vector<double>(x.size(), 0.0),
                   std::vector<double>(w.size(), 0.0), std::vector<double>(b.size(), 0.0)};
  auto X = [&](int64_t n, int64_t ci, int64_t i, int64_t j) -> size_t {
    return static_cast<size_t>(((n * c.cin + ci) * c.h + i) * c.w + j);
  };
  auto W = [&](int64_t co, int64_t ci, int64_t ki, int64_t kj) -> size_t {
    return static_cast<size_t>(((co * c.cin + ci) * k + ki) * k + kj);
  };
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t co = 0; co < c.cout; ++co)
      for (int64_t oh = 0; oh < ho; ++oh)
        for (int64_t ow = 0; ow < wo; ++ow) {
          const auto at = static_cast<size_t>(((n * c.cout + co) * ho + oh) * wo + ow);
          double s = b[static_cast<size_t>(co)];
          r.dbias[static_cast<size_t>(co)] += dy[at];
          for (int64_t ci = 0; ci < c.cin; ++ci)
            for (int64_t ki = 0; ki < k; ++ki)
              for (int64_t kj = 0; kj < k; ++kj) {
                const int64_t i = oh - p + ki, j = ow - p + kj;
                if (i < 0 || i >= c.h || j < 0 || j >= c.w) continue;
                s += w[W(co, ci, ki, kj)] * x[X(n, ci, i, j)];
                r.dweight[W(co, ci, ki, kj)] += dy[at] * x[X(n, ci, i, j)];
                r.dx[X(n, ci, i, j)] += dy[at] * w[W(co, ci, ki, kj)];
              }
          r.y[at] = s;
        }
  return r;
}

template <class T>
void expect_close(const std::vector<T>& got, const std::vector<double>& want, double tolerance,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(static_cast<double>(got[i]), want[i], tolerance * (1.0 + std::abs(want[i])))
        << what << " [" << i << "]";
}

template <class T>
void expect_both_algorithms_match_loops(double tolerance) {
  uint64_t seed = 100;
  for (const Case& c : cases()) {
    const Result<double> want = loops(c, seed);
    for (ConvAlgorithm a : {ConvAlgorithm::direct, ConvAlgorithm::gemm}) {
      const std::string what =
          name(c) + (a == ConvAlgorithm::direct ? " direct" : " gemm");
      const Result<T> got = run<T>(c, a, seed);
      expect_close(got.y, want.y, tolerance, what + " y");
      expect_close(got.dx, want.dx, tolerance, what + " dx");
      expect_close(got.dweight, want.dweight, tolerance, what + " dweight");
      expect_close(got.dbias, want.dbias, tolerance, what + " dbias");
    }
    seed += 10;
  }
}

TEST(ConvDirect, BothAlgorithmsMatchLoopsDouble) { expect_both_algorithms_match_loops<double>(1e-12); }

TEST(ConvDirect, BothAlgorithmsMatchLoopsFloat) { expect_both_algorithms_match_loops<float>(2e-5); }

TEST(ConvDirect, GradientsMatchFiniteDifferences) {
  uint64_t seed = 7;
  for (const Case& c : {Case{2, 3, 3, 1, 3, 5, 9}, Case{1, 6, 5, 4, 2, 6, 7}}) {
    Conv2d<double> conv(Conv2dOptions{c.cin, c.cout, c.k, 1, c.padding, true, ConvAlgorithm::direct});
    fill(conv.weight(), seed);
    fill(conv.bias(), seed + 1);
    Tensor<double> x({c.n, c.cin, c.h, c.w});
    fill(x.values(), seed + 2);
    EXPECT_TRUE(testing::check_layer_gradients(conv, x)) << name(c);
    seed += 10;
  }
}

// The weight and bias gradients are summed per group of 8 images, and the groups in
// order: 1, 2 and 3 threads give the same bits (so does the rest of the layer).
TEST(ConvDirect, SameBitsForAnyThreadCount) {
  const Case c{6, 16, 5, 0, 37, 12, 12};  // 37 images: four whole groups and a partial one
  Result<float> one;
  {
    const testing::ScopedEngineThreads threads(1);
    one = run<float>(c, ConvAlgorithm::direct, 5);
  }
  for (int t : {2, 3}) {
    const testing::ScopedEngineThreads threads(t);
    const Result<float> other = run<float>(c, ConvAlgorithm::direct, 5);
    EXPECT_EQ(std::memcmp(one.y.data(), other.y.data(), one.y.size() * sizeof(float)), 0) << t;
    EXPECT_EQ(std::memcmp(one.dx.data(), other.dx.data(), one.dx.size() * sizeof(float)), 0) << t;
    EXPECT_EQ(std::memcmp(one.dweight.data(), other.dweight.data(), one.dweight.size() * sizeof(float)), 0) << t;
    EXPECT_EQ(std::memcmp(one.dbias.data(), other.dbias.data(), one.dbias.size() * sizeof(float)), 0) << t;
  }
}

TEST(ConvDirect, AutomaticPicksDirectWhereItAppliesAndGemmElsewhere) {
  EXPECT_TRUE(Conv2d<float>(Conv2dOptions{1, 6, 5, 1, 0, true}).uses_direct());   // LeNet-BN
  EXPECT_TRUE(Conv2d<float>(Conv2dOptions{6, 16, 5, 1, 0, true}).uses_direct());
  EXPECT_TRUE(Conv2d<float>(Conv2dOptions{1, 6, 5, 1, 2, true}).uses_direct());   // LeNet
  EXPECT_FALSE(Conv2d<float>(Conv2dOptions{3, 8, 3, 2, 1, true}).uses_direct());  // stride 2
  EXPECT_TRUE(Conv2d<float>(Conv2dOptions{2, 2, 3, 1, 3, true}).uses_direct());   // p > k - 1
  EXPECT_FALSE(Conv2d<float>(Conv2dOptions{2, 2, 11, 1, 0, true}).uses_direct());  // k > 9
  EXPECT_FALSE(Conv2d<float>(Conv2dOptions{64, 64, 3, 1, 1, true}).uses_direct());  // wide
  EXPECT_FALSE(
      Conv2d<float>(Conv2dOptions{1, 6, 5, 1, 0, true, ConvAlgorithm::gemm}).uses_direct());
}

TEST(ConvDirect, RefusesDirectWhereItCannotRun) {
  for (const Conv2dOptions& o : {Conv2dOptions{3, 8, 3, 2, 1, true, ConvAlgorithm::direct},
                                 Conv2dOptions{2, 2, 10, 1, 0, true, ConvAlgorithm::direct}}) {
    try {
      Conv2d<float> conv(o);
      ADD_FAILURE() << "no error for stride " << o.stride << ", kernel " << o.kernel_size;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("algorithm=direct"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace bnorm::nn
