// The engine's layers against their definitions: forward values against direct loops
// (float and double), gradients against central differences (double), shape errors,
// and whole models: gradients of every parameter tensor and PyTorch's state names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "gradcheck.h"
#include "nn/activations.h"
#include "nn/batch_norm_layer.h"
#include "nn/blas.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/models.h"
#include "nn/pooling.h"
#include "nn/reshape.h"

namespace bnorm::nn {
namespace {

using testing::check_layer_gradients;
using testing::check_model_gradients;
using testing::GradcheckOptions;

template <class T>
Tensor<T> random_input(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Rng rng(seed);
  Tensor<T> t(shape);
  for (T& v : t.values()) v = static_cast<T>(rng.uniform(lo, hi));
  return t;
}

template <class T>
void fill_random(std::span<T> values, Rng& rng, double lo = -1.0, double hi = 1.0) {
  for (T& v : values) v = static_cast<T>(rng.uniform(lo, hi));
}

// Values i * step in a random order: distinct, so max pooling has no ties, and at
// least `step` apart, so a perturbation of 1e-6 never changes a window's winner.
template <class T>
Tensor<T> distinct_input(const Shape& shape, uint64_t seed, double step = 0.01) {
  Tensor<T> t(shape);
  std::vector<int64_t> order(static_cast<size_t>(shape.numel()));
  std::iota(order.begin(), order.end(), int64_t{0});
  Rng rng(seed);
  for (size_t i = order.size(); i > 1; --i)
    std::swap(order[i - 1], order[static_cast<size_t>(rng.below(i))]);
  const double center = static_cast<double>(order.size()) / 2.0;
  for (size_t i = 0; i < order.size(); ++i)
    t[static_cast<int64_t>(i)] = static_cast<T>((static_cast<double>(order[i]) - center) * step);
  return t;
}

// Randomizes every parameter of a layer (BN starts at weight 1, bias 0, which would
// hide a swapped weight/bias gradient).
void randomize_parameters(Layer<double>& layer, uint64_t seed) {
  StateLists<double> s;
  layer.collect_state(s, "");
  Rng rng(seed);
  for (auto& p : s.parameters) fill_random(p.value, rng, -1.0, 1.0);
}

template <class T>
double tolerance(int64_t terms) {
  return (std::is_same_v<T, float> ? 3e-6 : 1e-13) * static_cast<double>(1 + terms);
}

std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  } catch (...) {
    return "(another exception)";
  }
  return "(no exception)";
}

// ---- The harness itself ---------------------------------------------------------------

// y = w * x^2 elementwise, with a backward that can be made wrong in two ways.
class Square final : public Layer<double> {
 public:
  enum class Bug { none, wrong_dx, accumulates };
  explicit Square(Bug bug) : bug_(bug) {}
  std::string describe() const override { return "Square()"; }
  Shape output_shape(const Shape& input) const override { return input; }
  void forward(const Tensor<double>& x, Tensor<double>& y) override {
    for (int64_t i = 0; i < x.numel(); ++i) y[i] = w_[0] * x[i] * x[i];
  }
  void backward(const Tensor<double>& x, const Tensor<double>&, const Tensor<double>& dy,
                Tensor<double>* dx) override {
    if (bug_ != Bug::accumulates) dw_[0] = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      dw_[0] += dy[i] * x[i] * x[i];
      if (dx) (*dx)[i] = dy[i] * w_[0] * (bug_ == Bug::wrong_dx ? x[i] : 2 * x[i]);
    }
  }
  void collect_state(StateLists<double>& out, const std::string& prefix) override {
    out.parameters.push_back({prefix + "weight", Shape{1}, w_, dw_});
  }

 private:
  Bug bug_;
  std::vector<double> w_{0.7}, dw_{0.0};
};

TEST(LayerGradcheck, PassesACorrectLayerAndCatchesWrongOnes) {
  const Shape shape{2, 5};
  Square good(Square::Bug::none), wrong_dx(Square::Bug::wrong_dx),
      accumulates(Square::Bug::accumulates);
  Tensor<double> x = random_input<double>(shape, 1);
  EXPECT_TRUE(check_layer_gradients(good, x));
  EXPECT_FALSE(check_layer_gradients(wrong_dx, x));
  EXPECT_FALSE(check_layer_gradients(accumulates, x));
}

// ---- Conv2d ---------------------------------------------------------------------------

struct ConvCase {
  Conv2dOptions options;
  Shape input;
};

std::vector<ConvCase> conv_cases() {
  return {
      {Conv2dOptions{2, 3, 3, 1, 0, true}, Shape{2, 2, 5, 6}},   // stride 1, no padding
      {Conv2dOptions{3, 2, 3, 2, 1, true}, Shape{3, 3, 7, 6}},   // stride 2, padding 1
      {Conv2dOptions{2, 2, 3, 1, 2, true}, Shape{2, 2, 4, 5}},   // padding 2 (> k/2)
      {Conv2dOptions{2, 3, 2, 1, 1, false}, Shape{2, 2, 5, 4}},  // no bias, even kernel
      {Conv2dOptions{1, 2, 2, 3, 0, true}, Shape{2, 1, 7, 8}},   // stride > kernel: gaps
      {Conv2dOptions{2, 4, 4, 1, 0, true}, Shape{3, 2, 4, 5}},   // kernel = height
      {Conv2dOptions{3, 2, 1, 1, 0, true}, Shape{2, 3, 3, 2}},   // 1x1
      {Conv2dOptions{1, 6, 5, 1, 2, true}, Shape{2, 1, 9, 7}},   // LeNet's first conv
  };
}

// y[n][co][oh][ow] = b[co] + sum w[co][ci][ki][kj] * x[n][ci][oh*s - p + ki][ow*s - p + kj]
template <class T>
void expect_conv_matches_loops(const ConvCase& c, uint64_t seed) {
  const Conv2dOptions& o = c.options;
  Conv2d<T> conv(o);
  Rng rng(seed);
  fill_random(conv.weight(), rng);
  fill_random(conv.bias(), rng);
  const Tensor<T> x = random_input<T>(c.input, seed + 1);
  const int64_t n = c.input[0], h = c.input[2], w = c.input[3], k = o.kernel_size;
  const int64_t ho = (h + 2 * o.padding - k) / o.stride + 1;
  const int64_t wo = (w + 2 * o.padding - k) / o.stride + 1;
  const Shape expected_shape{n, o.out_channels, ho, wo};
  const Shape out = conv.output_shape(c.input);
  ASSERT_EQ(out.str(), expected_shape.str()) << conv.describe();
  Tensor<T> y(out);
  y.fill(std::numeric_limits<T>::quiet_NaN());
  conv.forward(x, y);
  const auto weight = conv.weight();
  const auto bias = conv.bias();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t co = 0; co < o.out_channels; ++co)
      for (int64_t oh = 0; oh < ho; ++oh)
        for (int64_t ow = 0; ow < wo; ++ow) {
          double s = o.bias ? static_cast<double>(bias[static_cast<size_t>(co)]) : 0.0;
          for (int64_t ci = 0; ci < o.in_channels; ++ci)
            for (int64_t ki = 0; ki < k; ++ki)
              for (int64_t kj = 0; kj < k; ++kj) {
                const int64_t ih = oh * o.stride - o.padding + ki;
                const int64_t iw = ow * o.stride - o.padding + kj;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                const auto wi = static_cast<size_t>(((co * o.in_channels + ci) * k + ki) * k + kj);
                s += static_cast<double>(weight[wi]) *
                     static_cast<double>(x[((b * o.in_channels + ci) * h + ih) * w + iw]);
              }
          const int64_t at = ((b * o.out_channels + co) * ho + oh) * wo + ow;
          ASSERT_NEAR(static_cast<double>(y[at]), s, tolerance<T>(o.in_channels * k * k))
              << conv.describe() << " on " << c.input.str() << " at y[" << b << "][" << co
              << "][" << oh << "][" << ow << "]";
        }
}

TEST(LayerConv2d, ForwardMatchesDirectLoopsDouble) {
  uint64_t seed = 10;
  for (const ConvCase& c : conv_cases()) expect_conv_matches_loops<double>(c, seed++);
}

TEST(LayerConv2d, ForwardMatchesDirectLoopsFloat) {
  uint64_t seed = 20;
  for (const ConvCase& c : conv_cases()) expect_conv_matches_loops<float>(c, seed++);
}

TEST(LayerConv2d, GradientsMatchFiniteDifferences) {
  uint64_t seed = 30;
  for (const ConvCase& c : conv_cases()) {
    Conv2d<double> conv(c.options);
    randomize_parameters(conv, seed++);
    Tensor<double> x = random_input<double>(c.input, seed++);
    EXPECT_TRUE(check_layer_gradients(conv, x)) << conv.describe() << " on " << c.input.str();
  }
}

TEST(LayerConv2d, DescribeAndParameterShapes) {
  Conv2d<double> conv(Conv2dOptions{3, 8, 5, 2, 1, false});
  EXPECT_EQ(conv.describe(), "Conv2d(3, 8, kernel_size=5, stride=2, padding=1, bias=False)");
  StateLists<double> s;
  conv.collect_state(s, "4.");
  ASSERT_EQ(s.parameters.size(), 1u);
  EXPECT_EQ(s.parameters[0].name, "4.weight");
  const Shape weight_shape{8, 3, 5, 5};
  EXPECT_EQ(s.parameters[0].shape.str(), weight_shape.str());
  EXPECT_EQ(s.parameters[0].value.size(), 8u * 3 * 25);
  EXPECT_EQ(s.parameters[0].grad.size(), 8u * 3 * 25);
  EXPECT_EQ(conv.fan_in(), 75);
  EXPECT_EQ(conv.fan_out(), 200);

  Conv2d<float> with_bias(Conv2dOptions{1, 6, 5, 1, 2, true});
  EXPECT_EQ(with_bias.describe(), "Conv2d(1, 6, kernel_size=5, padding=2)");
  StateLists<float> t;
  with_bias.collect_state(t, "0.");
  ASSERT_EQ(t.parameters.size(), 2u);
  EXPECT_EQ(t.parameters[1].name, "0.bias");
  EXPECT_EQ(t.parameters[1].shape.str(), "(6)");
}

TEST(LayerConv2d, RejectsBadShapesAndOptionsNamingTheLayer) {
  Conv2d<float> conv(Conv2dOptions{3, 4, 3, 1, 0, true});
  const Shape wrong_rank{2, 3, 8};
  const Shape wrong_channels{2, 2, 8, 8};
  const Shape too_small{2, 3, 2, 8};
  for (const Shape& s : {wrong_rank, wrong_channels, too_small}) {
    const std::string message = what_of([&] { conv.output_shape(s); });
    EXPECT_NE(message.find("Conv2d"), std::string::npos) << s.str() << ": " << message;
    EXPECT_NE(message.find(s.str()), std::string::npos) << message;
  }
  const Shape padded_ok{1, 3, 2, 2};
  Conv2d<float> padded(Conv2dOptions{3, 4, 3, 1, 1, true});
  EXPECT_EQ(padded.output_shape(padded_ok).str(), "(1, 4, 2, 2)");
  const auto make = [](const Conv2dOptions& o) { Conv2d<double> c(o); };
  EXPECT_NE(what_of([&] { make(Conv2dOptions{0, 1, 3, 1, 0, true}); }).find("Conv2d"), std::string::npos);
  EXPECT_NE(what_of([&] { make(Conv2dOptions{1, 1, 0, 1, 0, true}); }).find("Conv2d"), std::string::npos);
  EXPECT_NE(what_of([&] { make(Conv2dOptions{1, 1, 3, 0, 0, true}); }).find("Conv2d"), std::string::npos);
  EXPECT_NE(what_of([&] { make(Conv2dOptions{1, 1, 3, 1, -1, true}); }).find("Conv2d"), std::string::npos);
}

// The per-thread weight-gradient partials must all be rewritten by every backward:
// after the engine's thread count goes down, a stale partial from a thread that no
// longer runs must not be added in.
// Both ways: the im2col path keeps per-thread partials (ThreadScratch::sum_into adds every
// partial ever allocated, so each backward zeroes them all), the direct path per-group slots.
TEST(LayerConv2d, WeightGradientUnaffectedByThreadCountChange) {
  for (const ConvAlgorithm algorithm : {ConvAlgorithm::gemm, ConvAlgorithm::direct}) {
    SCOPED_TRACE(algorithm == ConvAlgorithm::gemm ? "gemm" : "direct");
    const Conv2dOptions o{2, 3, 3, 1, 1, true, algorithm};
    const Shape in{4, 2, 6, 5};
    Conv2d<double> conv(o), fresh(o);
    randomize_parameters(conv, 1);
    std::copy(conv.weight().begin(), conv.weight().end(), fresh.weight().begin());
    std::copy(conv.bias().begin(), conv.bias().end(), fresh.bias().begin());
    const Shape out = conv.output_shape(in);
    Tensor<double> y(out), dx(in);
    {
      const testing::ScopedEngineThreads four(4);
      const Tensor<double> x1 = random_input<double>(in, 2), dy1 = random_input<double>(out, 3);
      conv.forward(x1, y);
      conv.backward(x1, y, dy1, &dx);
    }
    {
      const testing::ScopedEngineThreads one(1);
      const Tensor<double> x2 = random_input<double>(in, 4), dy2 = random_input<double>(out, 5);
      conv.forward(x2, y);
      conv.backward(x2, y, dy2, &dx);
      fresh.forward(x2, y);
      fresh.backward(x2, y, dy2, &dx);
    }

    StateLists<double> a, b;
    conv.collect_state(a, "");
    fresh.collect_state(b, "");
    for (size_t k = 0; k < a.parameters.size(); ++k)
      for (size_t i = 0; i < a.parameters[k].grad.size(); ++i)
        ASSERT_NEAR(a.parameters[k].grad[i], b.parameters[k].grad[i], 1e-12)
            << a.parameters[k].name << "[" << i << "]";
  }
}

// ---- Linear ---------------------------------------------------------------------------

template <class T>
void expect_linear_matches_loops(bool bias) {
  const int64_t n = 3, in = 7, out = 5;
  Linear<T> lin(in, out, bias);
  Rng rng(bias ? 40 : 41);
  fill_random(lin.weight(), rng);
  fill_random(lin.bias(), rng);
  const Tensor<T> x = random_input<T>(Shape{n, in}, 42);
  const Shape expected_shape{n, out};
  const Shape x_shape{n, in};
  ASSERT_EQ(lin.output_shape(x_shape).str(), expected_shape.str());
  Tensor<T> y(expected_shape);
  y.fill(std::numeric_limits<T>::quiet_NaN());
  lin.forward(x, y);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < out; ++j) {
      double s = bias ? static_cast<double>(lin.bias()[static_cast<size_t>(j)]) : 0.0;
      for (int64_t k = 0; k < in; ++k)
        s += static_cast<double>(lin.weight()[static_cast<size_t>(j * in + k)]) *
             static_cast<double>(x[i * in + k]);
      EXPECT_NEAR(static_cast<double>(y[i * out + j]), s, tolerance<T>(in)) << i << "," << j;
    }
}

TEST(LayerLinear, ForwardMatchesDirectLoops) {
  expect_linear_matches_loops<double>(true);
  expect_linear_matches_loops<double>(false);
  expect_linear_matches_loops<float>(true);
  expect_linear_matches_loops<float>(false);
}

TEST(LayerLinear, GradientsMatchFiniteDifferences) {
  for (bool bias : {true, false}) {
    Linear<double> lin(6, 4, bias);
    randomize_parameters(lin, bias ? 50 : 51);
    Tensor<double> x = random_input<double>(Shape{3, 6}, 52);
    EXPECT_TRUE(check_layer_gradients(lin, x)) << lin.describe();
  }
  Linear<double> single(1, 1, true);  // degenerate GEMM sizes
  randomize_parameters(single, 53);
  Tensor<double> x = random_input<double>(Shape{1, 1}, 54);
  EXPECT_TRUE(check_layer_gradients(single, x));
}

TEST(LayerLinear, DescribeStateAndShapeErrors) {
  Linear<float> lin(256, 120);
  EXPECT_EQ(lin.describe(), "Linear(256, 120)");
  EXPECT_EQ(Linear<float>(3, 2, false).describe(), "Linear(3, 2, bias=False)");
  StateLists<float> s;
  lin.collect_state(s, "9.");
  ASSERT_EQ(s.parameters.size(), 2u);
  EXPECT_EQ(s.parameters[0].name, "9.weight");
  EXPECT_EQ(s.parameters[0].shape.str(), "(120, 256)");
  EXPECT_EQ(s.parameters[1].name, "9.bias");
  EXPECT_EQ(s.parameters[1].shape.str(), "(120)");
  const Shape wrong_features{4, 255};
  const Shape wrong_rank{4, 1, 256};
  for (const Shape& bad : {wrong_features, wrong_rank}) {
    const std::string message = what_of([&] { lin.output_shape(bad); });
    EXPECT_NE(message.find("Linear"), std::string::npos) << message;
    EXPECT_NE(message.find(bad.str()), std::string::npos) << message;
  }
  EXPECT_THROW(Linear<float>(0, 3), std::invalid_argument);
  EXPECT_THROW(Linear<float>(3, 0), std::invalid_argument);
}

// ---- Pooling --------------------------------------------------------------------------

struct PoolCase {
  int64_t kernel, stride;  // stride 0: the kernel size
  Shape input;
};

std::vector<PoolCase> pool_cases() {
  return {
      {2, 0, Shape{2, 3, 6, 8}},  // LeNet's pool (the unrolled path)
      {2, 0, Shape{2, 2, 5, 7}},  // odd sizes: the last row and column are dropped
      {3, 2, Shape{2, 2, 7, 9}},  // overlapping windows
      {2, 1, Shape{1, 2, 4, 5}},  // stride 1
      {3, 0, Shape{1, 1, 3, 3}},  // one window
      {2, 3, Shape{1, 2, 8, 7}},  // stride > kernel: unread inputs
  };
}

template <class T, bool kMax>
void expect_pool_matches_loops(const PoolCase& c, uint64_t seed) {
  using Pool = std::conditional_t<kMax, MaxPool2d<T>, AvgPool2d<T>>;
  Pool pool(c.kernel, c.stride);
  const int64_t k = c.kernel, s = c.stride == 0 ? c.kernel : c.stride;
  const int64_t planes = c.input[0] * c.input[1], h = c.input[2], w = c.input[3];
  const int64_t ho = (h - k) / s + 1, wo = (w - k) / s + 1;
  const Shape expected_shape{c.input[0], c.input[1], ho, wo};
  const Shape out = pool.output_shape(c.input);
  ASSERT_EQ(out.str(), expected_shape.str()) << pool.describe();
  const Tensor<T> x = random_input<T>(c.input, seed);
  Tensor<T> y(out);
  y.fill(std::numeric_limits<T>::quiet_NaN());
  pool.forward(x, y);
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j) {
        double sum = 0, best = -std::numeric_limits<double>::infinity();
        for (int64_t a = 0; a < k; ++a)
          for (int64_t b = 0; b < k; ++b) {
            const auto v = static_cast<double>(x[(p * h + i * s + a) * w + j * s + b]);
            sum += v;
            best = std::max(best, v);
          }
        const double expected = kMax ? best : sum / static_cast<double>(k * k);
        ASSERT_NEAR(static_cast<double>(y[(p * ho + i) * wo + j]), expected, tolerance<T>(k * k))
            << pool.describe() << " on " << c.input.str() << " at plane " << p << " (" << i
            << ", " << j << ")";
      }
}

TEST(LayerAvgPool2d, ForwardMatchesDirectLoops) {
  uint64_t seed = 60;
  for (const PoolCase& c : pool_cases()) {
    expect_pool_matches_loops<double, false>(c, seed++);
    expect_pool_matches_loops<float, false>(c, seed++);
  }
}

TEST(LayerMaxPool2d, ForwardMatchesDirectLoops) {
  uint64_t seed = 70;
  for (const PoolCase& c : pool_cases()) {
    expect_pool_matches_loops<double, true>(c, seed++);
    expect_pool_matches_loops<float, true>(c, seed++);
  }
}

TEST(LayerAvgPool2d, GradientsMatchFiniteDifferences) {
  uint64_t seed = 80;
  for (const PoolCase& c : pool_cases()) {
    AvgPool2d<double> pool(c.kernel, c.stride);
    Tensor<double> x = random_input<double>(c.input, seed++);
    EXPECT_TRUE(check_layer_gradients(pool, x)) << pool.describe() << " on " << c.input.str();
  }
}

TEST(LayerMaxPool2d, GradientsMatchFiniteDifferences) {
  uint64_t seed = 90;
  for (const PoolCase& c : pool_cases()) {
    MaxPool2d<double> pool(c.kernel, c.stride);
    Tensor<double> x = distinct_input<double>(c.input, seed++);
    EXPECT_TRUE(check_layer_gradients(pool, x)) << pool.describe() << " on " << c.input.str();
  }
}

// Ties go to the first maximum in row-major window order, as in PyTorch, and the
// gradient goes there only.
TEST(LayerMaxPool2d, TiesRouteTheGradientToTheFirstMaximum) {
  MaxPool2d<double> pool(2);
  const Shape in{1, 1, 2, 4};
  Tensor<double> x(in);
  const double values[] = {1, 3, 5, 2, 3, 0, 5, 5};
  for (int64_t i = 0; i < 8; ++i) x[i] = values[i];
  Tensor<double> y(pool.output_shape(in)), dy(y.shape()), dx(in);
  pool.forward(x, y);
  EXPECT_EQ(y[0], 3.0);
  EXPECT_EQ(y[1], 5.0);
  dy[0] = 10, dy[1] = 20;
  pool.backward(x, y, dy, &dx);
  const double expected[] = {0, 10, 20, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(dx[i], expected[i]) << i;
}

TEST(LayerPooling, DescribeAndShapeErrorsNameTheLayer) {
  AvgPool2d<float> avg(2);
  MaxPool2d<float> max(3, 2);
  EXPECT_EQ(avg.describe(), "AvgPool2d(kernel_size=2)");
  EXPECT_EQ(max.describe(), "MaxPool2d(kernel_size=3, stride=2)");
  const Shape rank3{2, 8, 8};
  const Shape too_small{2, 1, 1, 8};
  for (const Shape& bad : {rank3, too_small}) {
    const std::string a = what_of([&] { avg.output_shape(bad); });
    const std::string m = what_of([&] { max.output_shape(bad); });
    EXPECT_NE(a.find("AvgPool2d"), std::string::npos) << a;
    EXPECT_NE(m.find("MaxPool2d"), std::string::npos) << m;
    EXPECT_NE(a.find(bad.str()), std::string::npos) << a;
  }
  EXPECT_THROW(AvgPool2d<float>(0), std::invalid_argument);
  EXPECT_THROW(MaxPool2d<float>(0), std::invalid_argument);
  EXPECT_THROW(MaxPool2d<float>(2, -1), std::invalid_argument);
}

// ---- Activations ----------------------------------------------------------------------

double activation_reference(Activation kind, double x) {
  switch (kind) {
    case Activation::sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case Activation::tanh: return std::tanh(x);
    case Activation::relu: return x > 0 ? x : 0.0;
  }
  return 0;
}

template <class T>
void expect_activation_matches(Activation kind) {
  Elementwise<T> act(kind);
  // Odd length past the vectorized sigmoid's piece size (4096), wide range, and the
  // far tails where the sigmoid saturates.
  const Shape shape{3, 1401};
  Tensor<T> x = random_input<T>(shape, 100, -12.0, 12.0);
  x[0] = T(-100), x[1] = T(100), x[2] = T(0), x[3] = T(-0.0);
  EXPECT_EQ(act.output_shape(shape).str(), shape.str());
  Tensor<T> y(shape);
  act.forward(x, y);
  const double rel = std::is_same_v<T, float> ? 6e-7 : 1e-15;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double expected = activation_reference(kind, static_cast<double>(x[i]));
    EXPECT_NEAR(static_cast<double>(y[i]), expected, rel * (1e-30 + std::abs(expected)) + 1e-300)
        << act.describe() << " at x = " << x[i];
  }
}

TEST(LayerActivations, ForwardMatchesStdMath) {
  for (Activation a : {Activation::sigmoid, Activation::tanh, Activation::relu}) {
    expect_activation_matches<double>(a);
    expect_activation_matches<float>(a);
  }
}

TEST(LayerActivations, GradientsMatchFiniteDifferences) {
  const Shape shape{2, 3, 4, 5};
  for (Activation a : {Activation::sigmoid, Activation::tanh}) {
    Elementwise<double> act(a);
    Tensor<double> x = random_input<double>(shape, 110, -3.0, 3.0);
    EXPECT_TRUE(check_layer_gradients(act, x)) << act.describe();
  }
  // ReLU: inputs at least 0.1 away from the kink at 0, both signs.
  Elementwise<double> relu(Activation::relu);
  Tensor<double> x = random_input<double>(shape, 111, 0.1, 2.0);
  Rng rng(112);
  for (double& v : x.values())
    if (rng.uniform() < 0.5) v = -v;
  EXPECT_TRUE(check_layer_gradients(relu, x));
}

TEST(LayerActivations, Describe) {
  EXPECT_EQ(Elementwise<float>(Activation::sigmoid).describe(), "Sigmoid()");
  EXPECT_EQ(Elementwise<float>(Activation::tanh).describe(), "Tanh()");
  EXPECT_EQ(Elementwise<float>(Activation::relu).describe(), "ReLU()");
}

// ---- Flatten and Dropout --------------------------------------------------------------

TEST(LayerFlatten, KeepsRowMajorOrderAndGradients) {
  Flatten<double> flatten;
  const Shape in{2, 3, 4, 5};
  EXPECT_EQ(flatten.output_shape(in).str(), "(2, 60)");
  const Shape rank2{4, 7};
  EXPECT_EQ(flatten.output_shape(rank2).str(), "(4, 7)");
  Tensor<double> x = random_input<double>(in, 120);
  Tensor<double> y(flatten.output_shape(in));
  flatten.forward(x, y);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(y[i], x[i]);
  EXPECT_TRUE(check_layer_gradients(flatten, x));
  const Shape rank1{5};
  EXPECT_NE(what_of([&] { flatten.output_shape(rank1); }).find("Flatten"), std::string::npos);
}

Counter dropout_counter(Dropout<double>& d) {
  StateLists<double> s;
  d.collect_state(s, "7.");
  EXPECT_EQ(s.counters.size(), 1u);
  EXPECT_TRUE(s.parameters.empty());
  return s.counters.at(0);
}

TEST(LayerDropout, TrainingGradientMatchesFiniteDifferences) {
  Dropout<double> dropout(0.3, 130);
  const Counter draws = dropout_counter(dropout);
  Tensor<double> x = random_input<double>(Shape{4, 50}, 131);
  GradcheckOptions o;
  o.before_forward = [&] { draws.set(5); };
  EXPECT_TRUE(check_layer_gradients(dropout, x, o));
}

TEST(LayerDropout, KeepsAboutOneMinusPAndScales) {
  const double p = 0.3;
  Dropout<double> dropout(p, 140);
  const Counter draws = dropout_counter(dropout);
  EXPECT_EQ(draws.get(), 0);
  const Shape shape{500, 200};
  const Tensor<double> x = random_input<double>(shape, 141, 0.5, 1.5);
  Tensor<double> y(shape), y_again(shape), y_next(shape);
  dropout.forward(x, y);
  EXPECT_EQ(draws.get(), 1);
  int64_t kept = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (y[i] == 0.0) continue;
    ++kept;
    ASSERT_NEAR(y[i], x[i] / (1 - p), 1e-15) << i;
  }
  const double fraction = static_cast<double>(kept) / static_cast<double>(x.numel());
  EXPECT_NEAR(fraction, 1 - p, 0.01);  // sd of the fraction: 0.001

  // Backward routes dy through the same mask.
  Tensor<double> dy(shape), dx(shape);
  dy.fill(2.0);
  dropout.backward(x, y, dy, &dx);
  for (int64_t i = 0; i < x.numel(); ++i)
    ASSERT_EQ(dx[i], y[i] == 0.0 ? 0.0 : 2.0 / (1 - p)) << i;

  // The mask is a function of (seed, draw): replaying a draw replays the mask; the
  // next draw gives another.
  dropout.forward(x, y_next);
  draws.set(0);
  dropout.forward(x, y_again);
  int64_t same = 0, differ = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    same += (y_again[i] == y[i]) ? 1 : 0;
    differ += ((y_next[i] == 0.0) != (y[i] == 0.0)) ? 1 : 0;
  }
  EXPECT_EQ(same, x.numel());
  EXPECT_GT(differ, x.numel() / 4);  // independent masks differ on 2p(1-p) = 42%
}

TEST(LayerDropout, EvalModeAndZeroPAreIdentity) {
  Dropout<double> dropout(0.5, 150);
  const Counter draws = dropout_counter(dropout);
  dropout.set_training(false);
  const Shape shape{3, 40};
  Tensor<double> x = random_input<double>(shape, 151);
  Tensor<double> y(shape), dy = random_input<double>(shape, 152), dx(shape);
  dropout.forward(x, y);
  dropout.backward(x, y, dy, &dx);
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(y[i], x[i]);
    ASSERT_EQ(dx[i], dy[i]);
  }
  EXPECT_EQ(draws.get(), 0) << "an eval forward must not use up a draw";
  EXPECT_TRUE(check_layer_gradients(dropout, x));

  Dropout<double> none(0.0, 153);
  none.forward(x, y);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(y[i], x[i]);

  EXPECT_THROW(Dropout<double>(1.0, 1), std::invalid_argument);
  EXPECT_THROW(Dropout<double>(-0.1, 1), std::invalid_argument);
  EXPECT_EQ(Dropout<float>(0.5, 1).describe(), "Dropout(p=0.5)");
}

// ---- BatchNormLayer -------------------------------------------------------------------

void randomize_running_stats(Layer<double>& layer, uint64_t seed) {
  StateLists<double> s;
  layer.collect_state(s, "");
  Rng rng(seed);
  for (auto& b : s.buffers) {
    const bool var = b.name.find("running_var") != std::string::npos;
    fill_random(b.value, rng, var ? 0.5 : -0.5, var ? 2.0 : 0.5);
  }
}

struct BnCase {
  int spatial_rank;
  Shape input;
};

TEST(LayerBatchNorm, GradientsMatchFiniteDifferencesInTrainingAndEval) {
  const BnCase bn2d{2, Shape{3, 4, 5, 3}};
  const BnCase bn1d{0, Shape{6, 5}};
  const BnCase bn1d_l{1, Shape{3, 4, 5}};
  uint64_t seed = 160;
  for (const BnCase& c : {bn2d, bn1d, bn1d_l}) {
    BatchNormLayer<double> bn(c.input[1], c.spatial_rank);
    randomize_parameters(bn, seed++);
    randomize_running_stats(bn, seed++);
    Tensor<double> x = random_input<double>(c.input, seed++, -2.0, 2.0);
    EXPECT_TRUE(bn.is_training());
    EXPECT_TRUE(check_layer_gradients(bn, x)) << bn.describe() << " training on " << c.input.str();
    bn.set_training(false);
    EXPECT_FALSE(bn.module().is_training());
    EXPECT_TRUE(check_layer_gradients(bn, x)) << bn.describe() << " eval on " << c.input.str();
  }
}

// The layer hands the library the right geometry: channel axis 1, statistics over
// every other axis, PyTorch's running-statistics update.
TEST(LayerBatchNorm, ForwardMatchesDefinition) {
  const BnCase bn2d{2, Shape{3, 4, 5, 3}};
  const BnCase bn1d{0, Shape{6, 5}};
  uint64_t seed = 170;
  for (const BnCase& c : {bn2d, bn1d}) {
    BatchNormLayer<double> bn(c.input[1], c.spatial_rank);
    randomize_parameters(bn, seed++);
    StateLists<double> s;
    bn.collect_state(s, "");
    const auto weight = s.parameters[0].value, bias = s.parameters[1].value;
    const Tensor<double> x = random_input<double>(c.input, seed++, -2.0, 2.0);
    Tensor<double> y(bn.output_shape(c.input));
    bn.forward(x, y);
    const int64_t n = c.input[0], ch = c.input[1], inner = x.numel() / (n * ch);
    const double count = static_cast<double>(n * inner);
    for (int64_t k = 0; k < ch; ++k) {
      double mean = 0, var = 0;
      for (int64_t b = 0; b < n; ++b)
        for (int64_t i = 0; i < inner; ++i) mean += x[(b * ch + k) * inner + i];
      mean /= count;
      for (int64_t b = 0; b < n; ++b)
        for (int64_t i = 0; i < inner; ++i) var += std::pow(x[(b * ch + k) * inner + i] - mean, 2);
      var /= count;
      const auto ku = static_cast<size_t>(k);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t at = (b * ch + k) * inner + i;
          const double expected = (x[at] - mean) / std::sqrt(var + 1e-5) * weight[ku] + bias[ku];
          ASSERT_NEAR(y[at], expected, 1e-12) << bn.describe() << " channel " << k;
        }
      EXPECT_NEAR(s.buffers[0].value[ku], 0.1 * mean, 1e-14) << "running_mean";
      EXPECT_NEAR(s.buffers[1].value[ku], 0.9 + 0.1 * var * count / (count - 1), 1e-14)
          << "running_var (unbiased)";
    }
    EXPECT_EQ(s.counters[0].get(), 1);
  }
}

TEST(LayerBatchNorm, DescribeStateAndShapeErrors) {
  BatchNormLayer<float> bn2d(6, 2), bn1d(120, 0);
  EXPECT_EQ(bn2d.describe(), "BatchNorm2d(6)");
  EXPECT_EQ(bn1d.describe(), "BatchNorm1d(120)");
  StateLists<float> s;
  bn2d.collect_state(s, "1.");
  ASSERT_EQ(s.parameters.size(), 2u);
  EXPECT_EQ(s.parameters[0].name, "1.weight");
  EXPECT_EQ(s.parameters[1].name, "1.bias");
  ASSERT_EQ(s.buffers.size(), 2u);
  EXPECT_EQ(s.buffers[0].name, "1.running_mean");
  EXPECT_EQ(s.buffers[1].name, "1.running_var");
  ASSERT_EQ(s.counters.size(), 1u);
  EXPECT_EQ(s.counters[0].name, "1.num_batches_tracked");
  for (float v : s.parameters[0].value) EXPECT_EQ(v, 1.0f);
  for (float v : s.parameters[1].value) EXPECT_EQ(v, 0.0f);

  const Shape wrong_channels{2, 5, 4, 4};
  const Shape flat{2, 6};
  const Shape image{2, 120, 1, 1};
  const std::string a = what_of([&] { bn2d.output_shape(wrong_channels); });
  const std::string b = what_of([&] { bn2d.output_shape(flat); });
  const std::string c = what_of([&] { bn1d.output_shape(image); });
  EXPECT_NE(a.find("BatchNorm2d"), std::string::npos) << a;
  EXPECT_NE(b.find("BatchNorm2d"), std::string::npos) << b;
  EXPECT_NE(c.find("BatchNorm1d"), std::string::npos) << c;
  EXPECT_THROW(BatchNormLayer<float>(4, 3), std::invalid_argument);
}

// ---- Whole models ---------------------------------------------------------------------

Tensor<double> images(int64_t n, uint64_t seed) {
  return random_input<double>(Shape{n, 1, 28, 28}, seed, 0.0, 1.0);
}

// Dropout's draw counter advances on every training forward; finite differences need
// the same masks each time, so every counter goes back to where it started.
GradcheckOptions replaying_counters(Sequential<double>& model) {
  GradcheckOptions o;
  std::vector<Counter> counters = model.state().counters;
  std::vector<int64_t> start;
  for (const Counter& c : counters) start.push_back(c.get());
  o.before_forward = [counters, start] {
    for (size_t i = 0; i < counters.size(); ++i) counters[i].set(start[i]);
  };
  return o;
}

void expect_model_gradients(const std::string& name, bool training, uint64_t seed) {
  auto model = make_model<double>(name, seed);
  model->set_training(training);
  const Tensor<double> x = images(3, seed + 1);
  GradcheckOptions o = replaying_counters(*model);
  o.seed = seed + 2;
  EXPECT_TRUE(check_model_gradients(*model, x, 40, o))
      << name << (training ? " (training)" : " (eval)");
}

TEST(LayerModels, LenetGradientsMatchFiniteDifferences) {
  expect_model_gradients("lenet", true, 200);
}

TEST(LayerModels, LenetBnGradientsMatchFiniteDifferences) {
  expect_model_gradients("lenet-bn", true, 210);
  expect_model_gradients("lenet-bn", false, 211);
}

TEST(LayerModels, MlpAndVggGradientsMatchFiniteDifferences) {
  expect_model_gradients("mlp", true, 220);
  expect_model_gradients("mlp-bn", true, 221);
  expect_model_gradients("vgg", true, 222);
  expect_model_gradients("vgg-bn", true, 223);
}

TEST(LayerModels, EveryModelMapsImagesToTenLogits) {
  const Shape in{5, 1, 28, 28};
  for (const std::string& name : model_names()) {
    auto model = make_model<float>(name, 1);
    EXPECT_EQ(model->output_shape(in).str(), "(5, 10)") << name;
  }
  EXPECT_THROW(make_model<float>("resnet", 1), std::invalid_argument);
}

TEST(LayerModels, ShapeErrorNamesTheLayerThatRejectsIt) {
  auto model = make_model<float>("lenet-bn", 1);
  const Shape in{2, 1, 32, 32};  // 32x32 reaches the first Linear with 400 features
  const std::string message = what_of([&] { model->output_shape(in); });
  EXPECT_NE(message.find("Linear(256, 120)"), std::string::npos) << message;
}

// PyTorch's nn.Sequential state_dict keys for d2l's LeNet with batch norm.
TEST(LayerModels, LenetBnStateNamesMatchPyTorch) {
  auto model = make_model<double>("lenet-bn", 1);
  const StateLists<double> s = model->state();
  const std::vector<std::string> parameters{
      "0.weight",  "0.bias",  "1.weight",  "1.bias",  "4.weight",  "4.bias",
      "5.weight",  "5.bias",  "9.weight",  "9.bias",  "10.weight", "10.bias",
      "12.weight", "12.bias", "13.weight", "13.bias", "15.weight", "15.bias"};
  const std::vector<std::string> shapes{"(6, 1, 5, 5)", "(6)",    "(6)",       "(6)",
                                        "(16, 6, 5, 5)", "(16)",  "(16)",      "(16)",
                                        "(120, 256)",    "(120)", "(120)",     "(120)",
                                        "(84, 120)",     "(84)",  "(84)",      "(84)",
                                        "(10, 84)",      "(10)"};
  std::vector<std::string> buffers, counters;
  for (const char* i : {"1", "5", "10", "13"}) {
    buffers.push_back(std::string(i) + ".running_mean");
    buffers.push_back(std::string(i) + ".running_var");
    counters.push_back(std::string(i) + ".num_batches_tracked");
  }
  ASSERT_EQ(s.parameters.size(), parameters.size());
  for (size_t i = 0; i < parameters.size(); ++i) {
    EXPECT_EQ(s.parameters[i].name, parameters[i]);
    EXPECT_EQ(s.parameters[i].shape.str(), shapes[i]) << parameters[i];
    EXPECT_EQ(static_cast<int64_t>(s.parameters[i].value.size()), s.parameters[i].shape.numel());
  }
  ASSERT_EQ(s.buffers.size(), buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) EXPECT_EQ(s.buffers[i].name, buffers[i]);
  ASSERT_EQ(s.counters.size(), counters.size());
  for (size_t i = 0; i < counters.size(); ++i) EXPECT_EQ(s.counters[i].name, counters[i]);
  EXPECT_EQ(model->parameter_count(), 44878);
}

TEST(LayerModels, VggStateIncludesTheDropoutCounter) {
  auto model = make_model<double>("vgg", 1);
  const StateLists<double> s = model->state();
  std::vector<std::string> names;
  for (const Counter& c : s.counters) names.push_back(c.name);
  ASSERT_EQ(names.size(), 1u);
  // conv, relu, conv, relu, pool, conv, relu, conv, relu, pool, flatten, fc, relu, dropout
  EXPECT_EQ(names[0].rfind("13.", 0), 0u) << names[0];
  EXPECT_TRUE(s.buffers.empty());
}

}  // namespace
}  // namespace bnorm::nn

namespace bnorm::nn {
namespace {

// Dropout's backward follows what its last forward did, whatever the mode is now: a
// training forward then eval() before backward still routes the gradient through the
// mask, and an eval forward then train() passes it straight through.
TEST(Dropout, BackwardFollowsTheLastForward) {
  Dropout<double> drop(0.5, 7);
  Tensor<double> x(Shape{4, 64}), y(Shape{4, 64}), dy(Shape{4, 64}), dx(Shape{4, 64});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = 1.0 + static_cast<double>(i);
  dy.fill(1.0);

  drop.set_training(true);
  drop.forward(x, y);
  drop.set_training(false);
  drop.backward(x, y, dy, &dx);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(dx[i], y[i] / x[i]) << i;  // 0 or 2

  drop.forward(x, y);  // eval: identity
  drop.set_training(true);
  drop.backward(x, y, dy, &dx);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(dx[i], 1.0) << i;
}

}  // namespace
}  // namespace bnorm::nn

namespace bnorm::nn {
namespace {

// The per-layer timer of `bnorm bench train --profile`: one slot per layer, every call
// counted while attached, nothing once detached, and the values unchanged by timing.
TEST(LayerProfile, TimesEveryLayerWhileAttachedAndChangesNothing) {
  auto timed = make_model<float>("lenet-bn", 3);
  auto plain = make_model<float>("lenet-bn", 3);
  Tensor<float> x({4, 1, 28, 28});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
  LayerProfile profile;
  timed->attach_profile(&profile);
  ASSERT_EQ(profile.forward_seconds.size(), timed->size());
  ASSERT_EQ(profile.backward_seconds.size(), timed->size());
  Tensor<float> dy;
  for (int step = 0; step < 3; ++step) {
    const Tensor<float>& a = timed->forward(x);
    const Tensor<float>& b = plain->forward(x);
    ASSERT_EQ(std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)), 0);
    dy.resize(a.shape());
    std::fill(dy.data(), dy.data() + dy.numel(), 0.01f);
    timed->backward(dy);
  }
  EXPECT_EQ(profile.forwards, 3);
  EXPECT_EQ(profile.backwards, 3);
  for (size_t i = 0; i < timed->size(); ++i) {
    EXPECT_GE(profile.forward_seconds[i], 0.0) << i;
    EXPECT_GE(profile.backward_seconds[i], 0.0) << i;
  }
  // The convolutions do most of the work: they cannot have taken no time.
  EXPECT_GT(profile.forward_seconds[0], 0.0);
  EXPECT_GT(profile.backward_seconds[0], 0.0);
  const double first = profile.forward_seconds[0];
  timed->attach_profile(nullptr);
  timed->forward(x);
  EXPECT_EQ(profile.forwards, 3);
  EXPECT_EQ(profile.forward_seconds[0], first);
}

}  // namespace
}  // namespace bnorm::nn
