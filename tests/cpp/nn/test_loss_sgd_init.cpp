// The loss, the optimizer and the initializers against their formulas written out
// here: softmax cross-entropy (values, arg-max ties, gradient by finite differences,
// large logits), SGD with momentum and weight decay (PyTorch's rule, step by step),
// and the Xavier/Kaiming/default-bias initializers (bounds, moments, seeding).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "gradcheck.h"
#include "nn/batch_norm_layer.h"
#include "nn/conv2d.h"
#include "nn/init.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/models.h"
#include "nn/sgd.h"

namespace bnorm::nn {
namespace {

// ---- softmax cross-entropy ------------------------------------------------------------

struct DirectLoss {
  double loss_sum = 0;
  int64_t correct = 0;
  std::vector<double> dlogits;
};

// loss_n = log(sum_j e^{z_j}) - z_label;  dz = (softmax - onehot) / N;  arg max: first.
template <class T>
DirectLoss direct_cross_entropy(const Tensor<T>& logits, const std::vector<int32_t>& labels) {
  const int64_t n = logits.dim(0), k = logits.dim(1);
  DirectLoss d;
  d.dlogits.resize(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n; ++i) {
    long double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<long double>(logits[i * k + j]));
    const auto label = labels[static_cast<size_t>(i)];
    d.loss_sum += static_cast<double>(std::log(sum) - static_cast<long double>(logits[i * k + label]));
    int64_t best = 0;
    for (int64_t j = 0; j < k; ++j)
      if (logits[i * k + j] > logits[i * k + best]) best = j;
    d.correct += best == label ? 1 : 0;
    for (int64_t j = 0; j < k; ++j) {
      const long double p = std::exp(static_cast<long double>(logits[i * k + j])) / sum;
      d.dlogits[static_cast<size_t>(i * k + j)] =
          static_cast<double>((p - (j == label ? 1.0L : 0.0L)) / static_cast<long double>(n));
    }
  }
  return d;
}

template <class T>
void expect_loss_matches_direct() {
  const int64_t n = 6, k = 7;
  Rng rng(300);
  Tensor<T> logits(Shape{n, k});
  for (T& v : logits.values()) v = static_cast<T>(rng.uniform(-4.0, 4.0));
  std::vector<int32_t> labels;
  for (int64_t i = 0; i < n; ++i) labels.push_back(static_cast<int32_t>(rng.below(k)));
  // Row 0 predicts its label, row 1 ties with the label at a later position (not
  // correct: the first maximum wins), row 2 ties with the label first (correct).
  labels[0] = 3, logits[0 * k + 3] = T(9);
  labels[1] = 5, logits[1 * k + 2] = T(8), logits[1 * k + 5] = T(8);
  labels[2] = 1, logits[2 * k + 1] = T(8), logits[2 * k + 4] = T(8);

  const DirectLoss expected = direct_cross_entropy(logits, labels);
  Tensor<T> dlogits(logits.shape());
  dlogits.fill(std::numeric_limits<T>::quiet_NaN());
  const LossTotals got = softmax_cross_entropy<T>(logits, labels, &dlogits);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  EXPECT_NEAR(got.loss_sum, expected.loss_sum, tol * static_cast<double>(n));
  EXPECT_EQ(got.correct, expected.correct);
  for (int64_t i = 0; i < n * k; ++i)
    EXPECT_NEAR(static_cast<double>(dlogits[i]), expected.dlogits[static_cast<size_t>(i)], tol)
        << i;

  const LossTotals without_gradient = softmax_cross_entropy<T>(logits, labels, nullptr);
  EXPECT_EQ(without_gradient.loss_sum, got.loss_sum);
  EXPECT_EQ(without_gradient.correct, got.correct);
}

TEST(LossSoftmaxCrossEntropy, MatchesDirectFormula) {
  expect_loss_matches_direct<double>();
  expect_loss_matches_direct<float>();
}

TEST(LossSoftmaxCrossEntropy, FirstMaximumWinsTies) {
  Tensor<double> logits(Shape{3, 4});
  logits.fill(1.0);  // all tied: the first class is the prediction
  const std::vector<int32_t> first{0, 0, 0}, last{3, 3, 3};
  EXPECT_EQ(softmax_cross_entropy<double>(logits, first, nullptr).correct, 3);
  EXPECT_EQ(softmax_cross_entropy<double>(logits, last, nullptr).correct, 0);
  EXPECT_NEAR(softmax_cross_entropy<double>(logits, first, nullptr).loss_sum, 3 * std::log(4.0),
              1e-14);
}

// The gradient is that of the mean loss (loss_sum / N).
TEST(LossSoftmaxCrossEntropy, GradientMatchesFiniteDifferencesOfTheMean) {
  const int64_t n = 5, k = 10;
  Rng rng(310);
  Tensor<double> logits = testing::random_tensor(Shape{n, k}, rng, -3.0, 3.0);
  std::vector<int32_t> labels;
  for (int64_t i = 0; i < n; ++i) labels.push_back(static_cast<int32_t>(rng.below(k)));
  Tensor<double> dlogits(logits.shape());
  softmax_cross_entropy<double>(logits, labels, &dlogits);
  const double h = 1e-6;
  const auto mean_loss = [&] {
    return softmax_cross_entropy<double>(logits, labels, nullptr).loss_sum / static_cast<double>(n);
  };
  for (int64_t i = 0; i < n * k; ++i) {
    const double saved = logits[i];
    logits[i] = saved + h;
    const double plus = mean_loss();
    logits[i] = saved - h;
    const double minus = mean_loss();
    logits[i] = saved;
    const double numeric = (plus - minus) / (2 * h);
    EXPECT_NEAR(dlogits[i], numeric, 1e-8 + 1e-6 * std::abs(numeric)) << i;
  }
}

template <class T>
void expect_large_logits_are_finite() {
  Tensor<T> logits(Shape{2, 3});
  const T big = T(1e4);
  logits[0] = big, logits[1] = T(0), logits[2] = -big;
  logits[3] = -big, logits[4] = big, logits[5] = big;
  const std::vector<int32_t> right{0, 1}, wrong{1, 0};
  Tensor<T> d(logits.shape());
  const LossTotals good = softmax_cross_entropy<T>(logits, right, &d);
  EXPECT_TRUE(std::isfinite(good.loss_sum));
  // Row 0: log(1 + e^-1e4 + e^-2e4) ~ 0; row 1: log 2 (two tied maxima).
  EXPECT_NEAR(good.loss_sum, std::log(2.0), 1e-6);
  EXPECT_EQ(good.correct, 2);  // row 1: the first of the tied maxima is its label
  for (T g : d.values()) EXPECT_TRUE(std::isfinite(static_cast<double>(g)));
  EXPECT_NEAR(static_cast<double>(d[4]), (0.5 - 1.0) / 2, 1e-6);
  EXPECT_NEAR(static_cast<double>(d[5]), 0.5 / 2, 1e-6);
  const LossTotals bad = softmax_cross_entropy<T>(logits, wrong, &d);
  EXPECT_TRUE(std::isfinite(bad.loss_sum));
  EXPECT_NEAR(bad.loss_sum, 1e4 + 2e4 + std::log(2.0), 1e-2);
  EXPECT_EQ(bad.correct, 0);
  for (T g : d.values()) EXPECT_TRUE(std::isfinite(static_cast<double>(g)));
}

TEST(LossSoftmaxCrossEntropy, LargeLogitsGiveFiniteLoss) {
  expect_large_logits_are_finite<double>();
  expect_large_logits_are_finite<float>();
}

TEST(LossSoftmaxCrossEntropy, BadLabelsAndShapesThrow) {
  Tensor<float> logits(Shape{2, 4});
  logits.fill(0.0f);
  Tensor<float> d(logits.shape());
  const std::vector<int32_t> negative{0, -1}, too_big{4, 0}, too_few{0}, fine{3, 0};
  EXPECT_THROW(softmax_cross_entropy<float>(logits, negative, &d), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy<float>(logits, too_big, nullptr), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy<float>(logits, too_few, &d), std::invalid_argument);
  EXPECT_NO_THROW(softmax_cross_entropy<float>(logits, fine, &d));
  try {
    softmax_cross_entropy<float>(logits, too_big, nullptr);
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("label 4"), std::string::npos) << message;
  }
  Tensor<float> rank1(Shape{4});
  rank1.fill(0.0f);
  const std::vector<int32_t> one{0};
  EXPECT_THROW(softmax_cross_entropy<float>(rank1, one, nullptr), std::invalid_argument);
}

// ---- SGD ------------------------------------------------------------------------------

// Two parameters whose values and gradients live in vectors the test controls.
template <class T>
struct Params {
  std::vector<T> w{T(0.5), T(-1.25), T(2.0), T(0.1), T(-0.7), T(3.0)};
  std::vector<T> b{T(0.3), T(-0.2)};
  std::vector<T> gw = std::vector<T>(6), gb = std::vector<T>(2);

  std::vector<Parameter<T>> list() {
    return {Parameter<T>{"0.weight", Shape{2, 3}, w, gw}, Parameter<T>{"0.bias", Shape{2}, b, gb}};
  }
  // A new gradient for step `s`.
  void set_gradients(int s) {
    for (size_t i = 0; i < gw.size(); ++i)
      gw[i] = static_cast<T>(std::sin(1.0 + static_cast<double>(i) + 0.7 * s));
    for (size_t i = 0; i < gb.size(); ++i)
      gb[i] = static_cast<T>(std::cos(2.0 + static_cast<double>(i) - 0.3 * s));
  }
};

// PyTorch's SGD (dampening 0, no Nesterov), written out:
//   g = grad + wd * p;  b = mu * b + g (b = g on the first step);  p -= lr * b
struct ReferenceSgd {
  double lr, mu, wd;
  std::vector<double> p, b;
  bool first = true;
  void step(const std::vector<double>& grad) {
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grad[i] + wd * p[i];
      b[i] = first ? g : mu * b[i] + g;
      p[i] -= lr * (mu > 0 ? b[i] : g);
    }
    first = false;
  }
};

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  return {v.begin(), v.end()};
}

template <class T>
void expect_sgd_follows_pytorch(const SgdOptions& o) {
  Params<T> params;
  Sgd<T> sgd(params.list(), o);
  ReferenceSgd rw{o.lr, o.momentum, o.weight_decay, widen(params.w),
                  std::vector<double>(params.w.size())};
  ReferenceSgd rb{o.lr, o.momentum, o.weight_decay, widen(params.b),
                  std::vector<double>(params.b.size())};
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
  for (int s = 0; s < 6; ++s) {
    params.set_gradients(s);
    rw.step(widen(params.gw));
    rb.step(widen(params.gb));
    sgd.step();
    for (size_t i = 0; i < params.w.size(); ++i)
      ASSERT_NEAR(static_cast<double>(params.w[i]), rw.p[i], tol * (1 + std::abs(rw.p[i])))
          << "weight[" << i << "] after step " << s + 1 << ", lr " << o.lr << " momentum "
          << o.momentum << " weight_decay " << o.weight_decay;
    for (size_t i = 0; i < params.b.size(); ++i)
      ASSERT_NEAR(static_cast<double>(params.b[i]), rb.p[i], tol * (1 + std::abs(rb.p[i])))
          << "bias[" << i << "] after step " << s + 1;
  }
  const std::vector<Buffer<T>> state = sgd.state();
  if (o.momentum == 0) {
    EXPECT_TRUE(state.empty());
    return;
  }
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].name, "momentum_buffer.0.weight");
  EXPECT_EQ(state[1].name, "momentum_buffer.0.bias");
  EXPECT_EQ(state[0].shape.str(), "(2, 3)");
  EXPECT_EQ(state[1].shape.str(), "(2)");
  ASSERT_EQ(state[0].value.size(), rw.b.size());
  for (size_t i = 0; i < rw.b.size(); ++i)
    EXPECT_NEAR(static_cast<double>(state[0].value[i]), rw.b[i], tol * (1 + std::abs(rw.b[i])));
  for (size_t i = 0; i < rb.b.size(); ++i)
    EXPECT_NEAR(static_cast<double>(state[1].value[i]), rb.b[i], tol * (1 + std::abs(rb.b[i])));
}

TEST(SgdStep, PlainMatchesPyTorchRule) {
  expect_sgd_follows_pytorch<double>(SgdOptions{0.1, 0.0, 0.0});
  expect_sgd_follows_pytorch<float>(SgdOptions{0.1, 0.0, 0.0});
}

TEST(SgdStep, MomentumMatchesPyTorchRule) {
  expect_sgd_follows_pytorch<double>(SgdOptions{0.05, 0.9, 0.0});
  expect_sgd_follows_pytorch<float>(SgdOptions{0.05, 0.9, 0.0});
}

TEST(SgdStep, WeightDecayMatchesPyTorchRule) {
  expect_sgd_follows_pytorch<double>(SgdOptions{0.1, 0.0, 0.01});
  expect_sgd_follows_pytorch<double>(SgdOptions{0.02, 0.9, 5e-4});
  expect_sgd_follows_pytorch<float>(SgdOptions{0.02, 0.9, 5e-4});
}

// The momentum buffers are the optimizer's state: writing them (a checkpoint restore)
// changes the next step exactly as PyTorch's would.
TEST(SgdStep, RestoredMomentumBufferIsUsed) {
  Params<double> params;
  const SgdOptions o{0.1, 0.5, 0.0};
  Sgd<double> sgd(params.list(), o);
  std::vector<Buffer<double>> state = sgd.state();
  ASSERT_EQ(state.size(), 2u);
  for (double& v : state[0].value) v = 1.0;
  for (double& v : state[1].value) v = -2.0;
  const std::vector<double> w0 = params.w, b0 = params.b;
  params.set_gradients(0);
  sgd.step();
  for (size_t i = 0; i < w0.size(); ++i)
    EXPECT_NEAR(params.w[i], w0[i] - 0.1 * (0.5 * 1.0 + params.gw[i]), 1e-15);
  for (size_t i = 0; i < b0.size(); ++i)
    EXPECT_NEAR(params.b[i], b0[i] - 0.1 * (0.5 * -2.0 + params.gb[i]), 1e-15);
}

TEST(SgdStep, SetLrChangesLaterSteps) {
  Params<double> params;
  Sgd<double> sgd(params.list(), SgdOptions{0.1, 0.0, 0.0});
  sgd.set_lr(0.01);
  EXPECT_EQ(sgd.options().lr, 0.01);
  const std::vector<double> w0 = params.w;
  params.set_gradients(1);
  sgd.step();
  for (size_t i = 0; i < w0.size(); ++i) EXPECT_NEAR(params.w[i], w0[i] - 0.01 * params.gw[i], 1e-15);
  EXPECT_THROW(sgd.set_lr(0.0), std::invalid_argument);
  EXPECT_EQ(sgd.options().lr, 0.01) << "a rejected lr must leave the old one";
}

TEST(SgdOptions, InvalidValuesThrow) {
  Params<float> params;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<SgdOptions> bad{
      {0.0, 0.0, 0.0}, {-0.1, 0.0, 0.0}, {nan, 0.0, 0.0}, {inf, 0.0, 0.0},
      {0.1, -0.1, 0.0}, {0.1, 1.0, 0.0}, {0.1, nan, 0.0}, {0.1, 0.0, -1e-4},
      {0.1, 0.0, nan},
  };
  for (const SgdOptions& o : bad)
    EXPECT_THROW(Sgd<float>(params.list(), o), std::invalid_argument)
        << "lr " << o.lr << " momentum " << o.momentum << " weight_decay " << o.weight_decay;
  const SgdOptions ok{0.1, 0.99, 0.0};
  EXPECT_NO_THROW(Sgd<float>(params.list(), ok));
}

// ---- Initializers ---------------------------------------------------------------------

struct Moments {
  double mean = 0, var = 0, fourth = 0, max_abs = 0;
};

Moments moments(const std::vector<double>& v) {
  Moments m;
  for (double x : v) m.mean += x;
  m.mean /= static_cast<double>(v.size());
  for (double x : v) {
    const double d = x - m.mean;
    m.var += d * d;
    m.fourth += d * d * d * d;
    m.max_abs = std::max(m.max_abs, std::abs(x));
  }
  m.var /= static_cast<double>(v.size());
  m.fourth /= static_cast<double>(v.size());
  return m;
}

constexpr size_t kSamples = 200000;

// U(-a, a): every |w| <= a, some close to a, variance a^2 / 3, kurtosis 9/5.
void expect_uniform(const std::vector<double>& w, double a) {
  const Moments m = moments(w);
  EXPECT_LE(m.max_abs, a);
  EXPECT_GT(m.max_abs, 0.999 * a);
  EXPECT_NEAR(m.mean, 0.0, 5 * a / std::sqrt(3.0 * static_cast<double>(w.size())));
  EXPECT_NEAR(m.var, a * a / 3, 0.02 * a * a / 3);
  EXPECT_NEAR(m.fourth / (m.var * m.var), 1.8, 0.05);
}

// N(0, s^2): standard deviation s, kurtosis 3.
void expect_normal(const std::vector<double>& w, double s) {
  const Moments m = moments(w);
  EXPECT_NEAR(m.mean, 0.0, 5 * s / std::sqrt(static_cast<double>(w.size())));
  EXPECT_NEAR(std::sqrt(m.var), s, 0.01 * s);
  EXPECT_NEAR(m.fourth / (m.var * m.var), 3.0, 0.1);
}

TEST(InitXavier, UniformBoundsAndVariance) {
  std::vector<double> w(kSamples);
  Rng rng(400);
  xavier_uniform<double>(w, 100, 50, rng);
  expect_uniform(w, std::sqrt(6.0 / 150.0));
  xavier_uniform<double>(w, 100, 50, rng, 2.0);
  expect_uniform(w, 2.0 * std::sqrt(6.0 / 150.0));
}

TEST(InitXavier, NormalStd) {
  std::vector<double> w(kSamples);
  Rng rng(410);
  xavier_normal<double>(w, 30, 70, rng);
  expect_normal(w, std::sqrt(2.0 / 100.0));
}

TEST(InitKaiming, UniformBoundsAndVariance) {
  std::vector<double> w(kSamples);
  Rng rng(420);
  kaiming_uniform<double>(w, 75, rng);  // gain sqrt(2): a = sqrt(6 / fan_in)
  expect_uniform(w, std::sqrt(6.0 / 75.0));
  kaiming_uniform<double>(w, 75, rng, 1.0);
  expect_uniform(w, std::sqrt(3.0 / 75.0));
}

TEST(InitKaiming, NormalStd) {
  std::vector<double> w(kSamples);
  Rng rng(430);
  kaiming_normal<double>(w, 50, rng);
  expect_normal(w, std::sqrt(2.0) / std::sqrt(50.0));
}

TEST(InitDefaultBias, BoundIsOneOverSqrtFanIn) {
  std::vector<double> b(kSamples);
  Rng rng(440);
  default_bias<double>(b, 25, rng);
  expect_uniform(b, 0.2);
}

TEST(InitSeeding, SameSeedSameValuesOtherSeedOtherValues) {
  std::vector<double> a(1000), b(1000), c(1000);
  std::vector<float> f(1000);
  Rng ra(7), rb(7), rc(8), rf(7);
  xavier_uniform<double>(a, 10, 20, ra);
  xavier_uniform<double>(b, 10, 20, rb);
  xavier_uniform<double>(c, 10, 20, rc);
  xavier_uniform<float>(f, 10, 20, rf);
  EXPECT_EQ(a, b);
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    differ += a[i] != c[i] ? 1 : 0;
    ASSERT_EQ(f[i], static_cast<float>(a[i])) << "float draws are the double draws rounded";
  }
  EXPECT_EQ(differ, a.size());
  // The generator moves on: a second fill from the same Rng is different.
  xavier_uniform<double>(b, 10, 20, ra);
  EXPECT_NE(a, b);
}

// SplitMix64 is defined bit for bit: the first outputs for seed 0 are the published
// reference values (Vigna's splitmix64.c).
TEST(InitRng, SplitMix64ReferenceValues) {
  Rng rng(0);
  EXPECT_EQ(rng.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(rng.next(), 0x06c45d188009454fULL);
}

TEST(InitRng, UniformAndBelowStayInRange) {
  Rng rng(450);
  std::vector<int64_t> counts(7, 0);
  for (int i = 0; i < 70000; ++i) {
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    const uint64_t k = rng.below(7);
    ASSERT_LT(k, 7u);
    ++counts[k];
  }
  for (int64_t c : counts) EXPECT_NEAR(static_cast<double>(c), 10000.0, 500.0);
  EXPECT_EQ(rng.below(1), 0u);
}

// The models' initialization: LeNets Xavier-uniform, ReLU models Kaiming-uniform,
// biases U(+-1/sqrt(fan_in)), batch norm weight 1 and bias 0; one seed, one model.
double max_abs(std::span<const double> v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

TEST(InitModels, LayersUseTheirInitializers) {
  auto lenet = make_model<double>("lenet-bn", 5);
  const StateLists<double> s = lenet->state();
  ASSERT_GE(s.parameters.size(), 4u);
  const double conv1_a = std::sqrt(6.0 / (25.0 + 150.0));  // fan_in 1*25, fan_out 6*25
  EXPECT_LE(max_abs(s.parameters[0].value), conv1_a);
  EXPECT_GT(max_abs(s.parameters[0].value), 0.8 * conv1_a);
  EXPECT_LE(max_abs(s.parameters[1].value), 1.0 / 5.0);
  EXPECT_GT(max_abs(s.parameters[1].value), 0.0);
  for (double v : s.parameters[2].value) EXPECT_EQ(v, 1.0) << s.parameters[2].name;
  for (double v : s.parameters[3].value) EXPECT_EQ(v, 0.0) << s.parameters[3].name;

  auto mlp = make_model<double>("mlp", 5);
  const StateLists<double> m = mlp->state();
  ASSERT_EQ(m.parameters[0].name, "1.weight");  // layer 0 is Flatten
  const double a = std::sqrt(6.0 / 784.0);
  EXPECT_LE(max_abs(m.parameters[0].value), a);
  EXPECT_GT(max_abs(m.parameters[0].value), 0.99 * a);
  std::vector<double> w(m.parameters[0].value.begin(), m.parameters[0].value.end());
  EXPECT_NEAR(moments(w).var, a * a / 3, 0.02 * a * a / 3);
}

TEST(InitModels, SameSeedSameModelOtherSeedOtherModel) {
  auto a = make_model<double>("vgg-bn", 9), b = make_model<double>("vgg-bn", 9);
  auto c = make_model<double>("vgg-bn", 10);
  const StateLists<double> sa = a->state(), sb = b->state(), sc = c->state();
  ASSERT_EQ(sa.parameters.size(), sc.parameters.size());
  bool any_differs = false;
  for (size_t k = 0; k < sa.parameters.size(); ++k) {
    const auto& pa = sa.parameters[k].value;
    ASSERT_TRUE(std::equal(pa.begin(), pa.end(), sb.parameters[k].value.begin()))
        << sa.parameters[k].name;
    any_differs = any_differs || !std::equal(pa.begin(), pa.end(), sc.parameters[k].value.begin());
  }
  EXPECT_TRUE(any_differs);
}

}  // namespace
}  // namespace bnorm::nn
