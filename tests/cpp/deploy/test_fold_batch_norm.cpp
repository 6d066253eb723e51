// Batch norm folding's formula (bnorm::fold_batch_norm, bnorm_fold_batch_norm_f32/_f64)
// against a float64 reference computed here:
//   s = gamma / sqrt(var + eps),  W'[c, :] = W[c, :] * s[c],  b'[c] = (b[c] - mean[c]) * s[c] + beta[c]
// on a conv weight (3, 2, 3, 3) and a linear weight (5, 7); absent bias, gamma and beta;
// in place; overlap, bad sizes and bad values refused naming the argument, nothing written.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>
#include <bnorm/bnorm.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "nn/random.h"

namespace {

using bnorm::TensorView;

// call() must throw bnorm::Error with `status` and a message containing `needle`.
template <class F>
void expect_error(bnorm_status status, const std::string& needle, F&& call) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one containing \"" << needle << "\"";
  } catch (const bnorm::Error& e) {
    EXPECT_EQ(e.status(), status) << bnorm_status_string(e.status()) << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
  }
}

// A weight of `sizes` (output channels first) and one batch norm's statistics and
// parameters, random: var in [0.01, 2] so that eps = 1e-3 matters, gamma of both signs.
template <class T>
struct Problem {
  std::vector<int64_t> sizes;
  int64_t channels = 0, per_channel = 1;
  std::vector<T> weight, bias, mean, var, gamma, beta;
  double eps = 1e-3;

  Problem(std::vector<int64_t> sizes_, uint64_t seed) : sizes(std::move(sizes_)) {
    channels = sizes[0];
    for (size_t d = 1; d < sizes.size(); ++d) per_channel *= sizes[d];
    bnorm::nn::Rng rng(seed);
    auto fill = [&](std::vector<T>& v, int64_t n, double lo, double hi) {
      v.resize(static_cast<size_t>(n));
      for (T& x : v) x = static_cast<T>(rng.uniform(lo, hi));
    };
    fill(weight, channels * per_channel, -1.0, 1.0);
    fill(bias, channels, -0.5, 0.5);
    fill(mean, channels, -1.0, 1.0);
    fill(var, channels, 0.01, 2.0);
    fill(gamma, channels, 0.5, 1.5);
    fill(beta, channels, -1.0, 1.0);
    for (size_t c = 0; c < gamma.size(); c += 2) gamma[c] = -gamma[c];
  }
  size_t count() const { return weight.size(); }
};

// The reference in float64 from the (already rounded) inputs; an empty span is absent.
// bound: the size of the terms each value is made of, for a tolerance relative to them
// (a folded bias can cancel to nearly zero).
struct Reference {
  std::vector<double> weight, bias, weight_bound, bias_bound;
};

template <class T>
Reference reference_fold(const Problem<T>& p, std::span<const T> bias, std::span<const T> gamma,
                         std::span<const T> beta) {
  Reference r;
  const auto c = static_cast<size_t>(p.channels), per = static_cast<size_t>(p.per_channel);
  for (size_t k = 0; k < c; ++k) {
    const double g = gamma.empty() ? 1.0 : static_cast<double>(gamma[k]);
    const double s = g / std::sqrt(static_cast<double>(p.var[k]) + p.eps);
    for (size_t j = 0; j < per; ++j) {
      r.weight.push_back(static_cast<double>(p.weight[k * per + j]) * s);
      r.weight_bound.push_back(std::fabs(r.weight.back()));
    }
    const double b = bias.empty() ? 0.0 : static_cast<double>(bias[k]);
    const double be = beta.empty() ? 0.0 : static_cast<double>(beta[k]);
    const double shifted = (b - static_cast<double>(p.mean[k])) * s;
    r.bias.push_back(shifted + be);
    r.bias_bound.push_back(std::fabs(shifted) + std::fabs(be));
  }
  return r;
}

// Rounded once from double: a few ulps of T relative to the terms.
template <class T>
void expect_close(const std::vector<T>& got, const std::vector<double>& want,
                  const std::vector<double>& bound, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double tol = 4 * static_cast<double>(std::numeric_limits<T>::epsilon());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_LE(std::fabs(static_cast<double>(got[i]) - want[i]), tol * bound[i] + 1e-300)
        << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
}

template <class T>
void expect_bitwise_equal(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)), 0) << what;
}

// bnorm::fold_batch_norm out of place into fresh outputs (pre-filled with a sentinel).
template <class T>
void fold(const Problem<T>& p, std::span<const T> bias, std::span<const T> gamma,
          std::span<const T> beta, std::vector<T>& out_weight, std::vector<T>& out_bias) {
  out_weight.assign(p.count(), T(-7));
  out_bias.assign(static_cast<size_t>(p.channels), T(-7));
  bnorm::fold_batch_norm<T>(TensorView<const T>{p.weight.data(), p.sizes}, bias, p.mean, p.var,
                            gamma, beta, p.eps, TensorView<T>{out_weight.data(), p.sizes},
                            out_bias);
}

template <class T>
class FoldBatchNorm : public ::testing::Test {};
using FloatTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(FoldBatchNorm, FloatTypes);

TYPED_TEST(FoldBatchNorm, ConvAndLinearWeightsMatchFloat64Reference) {
  using T = TypeParam;
  uint64_t seed = 10;
  for (const std::vector<int64_t>& sizes :
       {std::vector<int64_t>{3, 2, 3, 3}, std::vector<int64_t>{5, 7}, std::vector<int64_t>{1, 1}}) {
    const Problem<T> p(sizes, seed++);
    std::vector<T> w, b;
    fold<T>(p, p.bias, p.gamma, p.beta, w, b);
    const Reference r = reference_fold<T>(p, p.bias, p.gamma, p.beta);
    SCOPED_TRACE("weight of " + std::to_string(sizes.size()) + " dims, " +
                 std::to_string(p.channels) + " channels");
    expect_close(w, r.weight, r.weight_bound, "folded_weight");
    expect_close(b, r.bias, r.bias_bound, "folded_bias");
  }
}

TYPED_TEST(FoldBatchNorm, EpsZeroIsAllowed) {
  using T = TypeParam;
  Problem<T> p({4, 3}, 20);
  p.eps = 0;
  std::vector<T> w, b;
  fold<T>(p, p.bias, p.gamma, p.beta, w, b);
  const Reference r = reference_fold<T>(p, p.bias, p.gamma, p.beta);
  expect_close(w, r.weight, r.weight_bound, "folded_weight");
  expect_close(b, r.bias, r.bias_bound, "folded_bias");
}

TYPED_TEST(FoldBatchNorm, EmptyBiasMeansZero) {
  using T = TypeParam;
  const Problem<T> p({3, 2, 3, 3}, 30);
  std::vector<T> w, b, w0, b0;
  fold<T>(p, {}, p.gamma, p.beta, w, b);
  const Reference r = reference_fold<T>(p, {}, p.gamma, p.beta);
  expect_close(w, r.weight, r.weight_bound, "folded_weight");
  expect_close(b, r.bias, r.bias_bound, "folded_bias");
  const std::vector<T> zeros(static_cast<size_t>(p.channels), T(0));
  fold<T>(p, zeros, p.gamma, p.beta, w0, b0);
  expect_bitwise_equal(w, w0, "weight: empty bias vs zeros");
  expect_bitwise_equal(b, b0, "bias: empty bias vs zeros");
}

TYPED_TEST(FoldBatchNorm, EmptyGammaAndBetaMeanOneAndZero) {
  using T = TypeParam;
  const Problem<T> p({5, 7}, 40);
  std::vector<T> w, b, w1, b1;
  fold<T>(p, p.bias, {}, {}, w, b);
  const Reference r = reference_fold<T>(p, p.bias, {}, {});
  expect_close(w, r.weight, r.weight_bound, "folded_weight");
  expect_close(b, r.bias, r.bias_bound, "folded_bias");
  const std::vector<T> ones(static_cast<size_t>(p.channels), T(1)),
      zeros(static_cast<size_t>(p.channels), T(0));
  fold<T>(p, p.bias, ones, zeros, w1, b1);
  expect_bitwise_equal(w, w1, "weight: empty gamma/beta vs ones/zeros");
  expect_bitwise_equal(b, b1, "bias: empty gamma/beta vs ones/zeros");
  // Only gamma absent, only beta absent.
  fold<T>(p, p.bias, {}, p.beta, w, b);
  const Reference rg = reference_fold<T>(p, p.bias, {}, p.beta);
  expect_close(b, rg.bias, rg.bias_bound, "folded_bias without gamma");
  fold<T>(p, p.bias, p.gamma, {}, w, b);
  const Reference rb = reference_fold<T>(p, p.bias, p.gamma, {});
  expect_close(b, rb.bias, rb.bias_bound, "folded_bias without beta");
}

TYPED_TEST(FoldBatchNorm, InPlaceGivesTheSameResult) {
  using T = TypeParam;
  const Problem<T> p({3, 2, 3, 3}, 50);
  std::vector<T> w, b;
  fold<T>(p, p.bias, p.gamma, p.beta, w, b);
  std::vector<T> wi = p.weight, bi = p.bias;
  bnorm::fold_batch_norm<T>(TensorView<const T>{wi.data(), p.sizes}, std::span<const T>(bi),
                            p.mean, p.var, p.gamma, p.beta, p.eps,
                            TensorView<T>{wi.data(), p.sizes}, std::span<T>(bi));
  expect_bitwise_equal(wi, w, "in-place weight");
  expect_bitwise_equal(bi, b, "in-place bias");
  // In-place weight with no bias to fold into place.
  std::vector<T> w2 = p.weight, b2(static_cast<size_t>(p.channels));
  bnorm::fold_batch_norm<T>(TensorView<const T>{w2.data(), p.sizes}, {}, p.mean, p.var, p.gamma,
                            p.beta, p.eps, TensorView<T>{w2.data(), p.sizes}, std::span<T>(b2));
  std::vector<T> w3, b3;
  fold<T>(p, {}, p.gamma, p.beta, w3, b3);
  expect_bitwise_equal(w2, w3, "in-place weight, no bias");
  expect_bitwise_equal(b2, b3, "bias, no bias");
}

TYPED_TEST(FoldBatchNorm, NaNStatisticStaysInItsChannel) {
  using T = TypeParam;
  Problem<T> p({4, 6}, 60);
  p.var[1] = std::numeric_limits<T>::quiet_NaN();
  p.mean[2] = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> w, b;
  fold<T>(p, p.bias, p.gamma, p.beta, w, b);
  const Reference r = reference_fold<T>(p, p.bias, p.gamma, p.beta);
  const auto per = static_cast<size_t>(p.per_channel);
  for (size_t k = 0; k < 4; ++k) {
    for (size_t j = 0; j < per; ++j) {
      const size_t i = k * per + j;
      if (k == 1)
        EXPECT_TRUE(std::isnan(w[i])) << i;
      else
        EXPECT_LE(std::fabs(static_cast<double>(w[i]) - r.weight[i]),
                  4 * static_cast<double>(std::numeric_limits<T>::epsilon()) * r.weight_bound[i]);
    }
    EXPECT_EQ(std::isnan(b[k]), k == 1 || k == 2) << "channel " << k << ": " << b[k];
  }
}

// Outputs that share memory with an input other than their own in-place partner, or
// only part of it, are refused before anything is written.
TEST(FoldBatchNormErrors, PartialOverlapIsRefused) {
  const Problem<float> p({3, 4}, 70);
  const auto n = p.count();
  // weight at storage[1..], folded_weight at storage[0..]: shifted by one value.
  std::vector<float> storage(n + 1, 0.f);
  std::copy(p.weight.begin(), p.weight.end(), storage.begin() + 1);
  const std::vector<float> before = storage;
  std::vector<float> out_bias(3, 42.f);
  expect_error(BNORM_ERROR_OVERLAP, "folded_weight overlaps weight", [&] {
    bnorm::fold_batch_norm<float>(TensorView<const float>{storage.data() + 1, p.sizes}, p.bias,
                                  p.mean, p.var, p.gamma, p.beta, p.eps,
                                  TensorView<float>{storage.data(), p.sizes}, out_bias);
  });
  EXPECT_EQ(storage, before);
  EXPECT_EQ(out_bias, std::vector<float>(3, 42.f));

  // folded_bias over bias shifted by one.
  std::vector<float> bias_storage{9.f, p.bias[0], p.bias[1], p.bias[2]};
  std::vector<float> out_weight(n, 42.f);
  expect_error(BNORM_ERROR_OVERLAP, "folded_bias overlaps bias", [&] {
    bnorm::fold_batch_norm<float>(TensorView<const float>{p.weight.data(), p.sizes},
                                  std::span<const float>(bias_storage.data() + 1, 3), p.mean,
                                  p.var, p.gamma, p.beta, p.eps,
                                  TensorView<float>{out_weight.data(), p.sizes},
                                  std::span<float>(bias_storage.data(), 3));
  });
  EXPECT_EQ(out_weight, std::vector<float>(n, 42.f));

  // folded_bias exactly running_mean's memory: not its in-place partner.
  std::vector<float> mean = p.mean;
  expect_error(BNORM_ERROR_OVERLAP, "folded_bias overlaps running_mean", [&] {
    bnorm::fold_batch_norm<float>(TensorView<const float>{p.weight.data(), p.sizes}, p.bias,
                                  std::span<const float>(mean), p.var, p.gamma, p.beta, p.eps,
                                  TensorView<float>{out_weight.data(), p.sizes},
                                  std::span<float>(mean));
  });
  EXPECT_EQ(mean, p.mean);

  // folded_bias inside folded_weight.
  expect_error(BNORM_ERROR_OVERLAP, "folded_bias overlaps folded_weight", [&] {
    bnorm::fold_batch_norm<float>(TensorView<const float>{p.weight.data(), p.sizes}, p.bias,
                                  p.mean, p.var, p.gamma, p.beta, p.eps,
                                  TensorView<float>{out_weight.data(), p.sizes},
                                  std::span<float>(out_weight.data() + 2, 3));
  });
  EXPECT_EQ(out_weight, std::vector<float>(n, 42.f));

  // folded_weight over gamma.
  std::vector<float> gamma_storage(n, 1.f);
  expect_error(BNORM_ERROR_OVERLAP, "folded_weight overlaps gamma", [&] {
    bnorm::fold_batch_norm<float>(TensorView<const float>{p.weight.data(), p.sizes}, p.bias,
                                  p.mean, p.var,
                                  std::span<const float>(gamma_storage.data() + 4, 3), p.beta,
                                  p.eps, TensorView<float>{gamma_storage.data(), p.sizes},
                                  out_bias);
  });
  EXPECT_EQ(gamma_storage, std::vector<float>(n, 1.f));
}

TEST(FoldBatchNormErrors, LayoutsMustBeChannelsFirstAndAgree) {
  Problem<double> p({3, 2, 3, 3}, 81);
  std::vector<double> w(p.count(), 42.0), b(3, 42.0);
  for (const auto& [in, out] : {std::pair{bnorm::Layout::channels_first, bnorm::Layout::channels_last},
                                std::pair{bnorm::Layout::channels_last, bnorm::Layout::channels_last}}) {
    expect_error(BNORM_ERROR_INVALID_SHAPE, "layout" , [&, in = in, out = out] {
      bnorm::fold_batch_norm<double>(TensorView<const double>{p.weight.data(), p.sizes, in}, p.bias,
                                     p.mean, p.var, p.gamma, p.beta, 1e-5,
                                     TensorView<double>{w.data(), p.sizes, out}, b);
    });
    EXPECT_EQ(w, std::vector<double>(p.count(), 42.0));  // nothing written
  }
}

TEST(FoldBatchNormErrors, BadArgumentsAreRefusedNamingTheArgument) {
  Problem<double> p({3, 2, 3, 3}, 80);
  std::vector<double> w(p.count(), 42.0), b(3, 42.0);
  auto call = [&](const Problem<double>& q, std::span<const double> bias,
                  std::span<const double> mean, std::span<const double> var,
                  std::span<const double> gamma, std::span<const double> beta, double eps,
                  std::vector<int64_t> out_sizes, std::span<double> out_bias) {
    return [&q, bias, mean, var, gamma, beta, eps, out_sizes, out_bias, &w] {
      bnorm::fold_batch_norm<double>(TensorView<const double>{q.weight.data(), q.sizes}, bias,
                                     mean, var, gamma, beta, eps,
                                     TensorView<double>{w.data(), out_sizes}, out_bias);
    };
  };
  const std::vector<double> two(2, 1.0), four(4, 1.0);
  // eps
  expect_error(BNORM_ERROR_INVALID_VALUE, "eps must be finite and >= 0",
               call(p, p.bias, p.mean, p.var, p.gamma, p.beta, -1e-5, p.sizes, b));
  expect_error(BNORM_ERROR_INVALID_VALUE, "eps",
               call(p, p.bias, p.mean, p.var, p.gamma, p.beta,
                    std::numeric_limits<double>::quiet_NaN(), p.sizes, b));
  expect_error(BNORM_ERROR_INVALID_VALUE, "eps",
               call(p, p.bias, p.mean, p.var, p.gamma, p.beta,
                    std::numeric_limits<double>::infinity(), p.sizes, b));
  // var + eps <= 0, naming the channel: negative, and exactly zero with eps 0.
  Problem<double> neg = p;
  neg.var[2] = -0.5;
  expect_error(BNORM_ERROR_INVALID_VALUE, "running_var[2] + eps must be > 0",
               call(neg, neg.bias, neg.mean, neg.var, neg.gamma, neg.beta, 1e-3, neg.sizes, b));
  Problem<double> zero = p;
  zero.var[1] = 0.0;
  expect_error(BNORM_ERROR_INVALID_VALUE, "running_var[1] + eps must be > 0",
               call(zero, zero.bias, zero.mean, zero.var, zero.gamma, zero.beta, 0.0, zero.sizes,
                    b));
  // Per-channel lengths that disagree with the weight's 3 output channels.
  expect_error(BNORM_ERROR_SHAPE_MISMATCH, "running_mean has 2 values, expected 3",
               call(p, p.bias, two, p.var, p.gamma, p.beta, 1e-3, p.sizes, b));
  expect_error(BNORM_ERROR_SHAPE_MISMATCH, "running_var has 4 values, expected 3",
               call(p, p.bias, p.mean, four, p.gamma, p.beta, 1e-3, p.sizes, b));
  expect_error(BNORM_ERROR_SHAPE_MISMATCH, "bias has 2 values",
               call(p, two, p.mean, p.var, p.gamma, p.beta, 1e-3, p.sizes, b));
  expect_error(BNORM_ERROR_SHAPE_MISMATCH, "gamma has 4 values",
               call(p, p.bias, p.mean, p.var, four, p.beta, 1e-3, p.sizes, b));
  expect_error(BNORM_ERROR_SHAPE_MISMATCH, "beta has 2 values",
               call(p, p.bias, p.mean, p.var, p.gamma, two, 1e-3, p.sizes, b));
  std::vector<double> b4(4, 42.0);
  expect_error(BNORM_ERROR_SHAPE_MISMATCH, "folded_bias has 4 values",
               call(p, p.bias, p.mean, p.var, p.gamma, p.beta, 1e-3, p.sizes, b4));
  // Required arguments given empty.
  expect_error(BNORM_ERROR_NULL_POINTER, "running_mean must not be empty",
               call(p, p.bias, {}, p.var, p.gamma, p.beta, 1e-3, p.sizes, b));
  expect_error(BNORM_ERROR_NULL_POINTER, "running_var must not be empty",
               call(p, p.bias, p.mean, {}, p.gamma, p.beta, 1e-3, p.sizes, b));
  expect_error(BNORM_ERROR_NULL_POINTER, "folded_bias must not be empty",
               call(p, p.bias, p.mean, p.var, p.gamma, p.beta, 1e-3, p.sizes, {}));
  // Weight shapes: folded_weight's sizes must be weight's; rank >= 1; sizes >= 1.
  expect_error(BNORM_ERROR_SHAPE_MISMATCH, "folded_weight is [3, 18]",
               call(p, p.bias, p.mean, p.var, p.gamma, p.beta, 1e-3, {3, 18}, b));
  Problem<double> rank0 = p;
  rank0.sizes = {};
  expect_error(BNORM_ERROR_INVALID_SHAPE, "weight must have rank >= 1",
               call(rank0, p.bias, p.mean, p.var, p.gamma, p.beta, 1e-3, {}, b));
  Problem<double> empty_dim = p;
  empty_dim.sizes = {3, 0, 3, 3};
  expect_error(BNORM_ERROR_INVALID_SHAPE, "weight's size 1 must be >= 1",
               call(empty_dim, p.bias, p.mean, p.var, p.gamma, p.beta, 1e-3, {3, 0, 3, 3}, b));
  // Nothing was written by any of them.
  EXPECT_EQ(w, std::vector<double>(p.count(), 42.0));
  EXPECT_EQ(b, std::vector<double>(3, 42.0));
  EXPECT_EQ(b4, std::vector<double>(4, 42.0));
}

// ---- the C API ------------------------------------------------------------------------

void expect_c_failure(bnorm_status got, bnorm_status want, const std::string& message_part) {
  EXPECT_EQ(got, want) << bnorm_status_string(got) << ": " << bnorm_last_error();
  EXPECT_NE(std::string(bnorm_last_error()).find(message_part), std::string::npos)
      << "message: " << bnorm_last_error() << "\nexpected to contain: " << message_part;
}

TEST(FoldBatchNormCApi, MatchesReferenceWithOptionalArgumentsNull) {
  const Problem<double> p({3, 2, 3, 3}, 90);
  std::vector<double> w(p.count(), 42.0), b(3, 42.0);
  ASSERT_EQ(bnorm_fold_batch_norm_f64(3, 18, p.weight.data(), p.bias.data(), p.mean.data(),
                                      p.var.data(), p.gamma.data(), p.beta.data(), p.eps, w.data(),
                                      b.data()),
            BNORM_SUCCESS)
      << bnorm_last_error();
  Reference r = reference_fold<double>(p, p.bias, p.gamma, p.beta);
  expect_close(w, r.weight, r.weight_bound, "f64 folded_weight");
  expect_close(b, r.bias, r.bias_bound, "f64 folded_bias");

  const Problem<float> q({5, 7}, 91);
  std::vector<float> wf(q.count(), 42.f), bf(5, 42.f);
  ASSERT_EQ(bnorm_fold_batch_norm_f32(5, 7, q.weight.data(), nullptr, q.mean.data(), q.var.data(),
                                      nullptr, nullptr, q.eps, wf.data(), bf.data()),
            BNORM_SUCCESS)
      << bnorm_last_error();
  Reference rf = reference_fold<float>(q, {}, {}, {});
  expect_close(wf, rf.weight, rf.weight_bound, "f32 folded_weight");
  expect_close(bf, rf.bias, rf.bias_bound, "f32 folded_bias");
}

TEST(FoldBatchNormCApi, ErrorsReturnAStatusAndAMessage) {
  const Problem<float> p({3, 4}, 95);
  std::vector<float> w(p.count(), 42.f), b(3, 42.f);
  const float* W = p.weight.data();
  const float *M = p.mean.data(), *V = p.var.data();
  expect_c_failure(bnorm_fold_batch_norm_f32(3, 4, nullptr, nullptr, M, V, nullptr, nullptr,
                                             1e-5, w.data(), b.data()),
                   BNORM_ERROR_NULL_POINTER, "bnorm_fold_batch_norm_f32: weight must not be NULL");
  expect_c_failure(bnorm_fold_batch_norm_f32(3, 4, W, nullptr, nullptr, V, nullptr, nullptr, 1e-5,
                                             w.data(), b.data()),
                   BNORM_ERROR_NULL_POINTER, "running_mean must not be NULL");
  expect_c_failure(bnorm_fold_batch_norm_f32(3, 4, W, nullptr, M, nullptr, nullptr, nullptr, 1e-5,
                                             w.data(), b.data()),
                   BNORM_ERROR_NULL_POINTER, "running_var must not be NULL");
  expect_c_failure(bnorm_fold_batch_norm_f32(3, 4, W, nullptr, M, V, nullptr, nullptr, 1e-5,
                                             nullptr, b.data()),
                   BNORM_ERROR_NULL_POINTER, "folded_weight must not be NULL");
  expect_c_failure(bnorm_fold_batch_norm_f32(3, 4, W, nullptr, M, V, nullptr, nullptr, 1e-5,
                                             w.data(), nullptr),
                   BNORM_ERROR_NULL_POINTER, "folded_bias must not be NULL");
  expect_c_failure(bnorm_fold_batch_norm_f32(0, 4, W, nullptr, M, V, nullptr, nullptr, 1e-5,
                                             w.data(), b.data()),
                   BNORM_ERROR_INVALID_SHAPE, "out_channels must be >= 1");
  expect_c_failure(bnorm_fold_batch_norm_f32(3, -1, W, nullptr, M, V, nullptr, nullptr, 1e-5,
                                             w.data(), b.data()),
                   BNORM_ERROR_INVALID_SHAPE, "per_channel must be >= 1");
  expect_c_failure(bnorm_fold_batch_norm_f32(3, 4, W, nullptr, M, V, nullptr, nullptr, -1.0,
                                             w.data(), b.data()),
                   BNORM_ERROR_INVALID_VALUE, "eps");
  std::vector<float> bad_var = p.var;
  bad_var[0] = -1.f;
  expect_c_failure(bnorm_fold_batch_norm_f32(3, 4, W, nullptr, M, bad_var.data(), nullptr,
                                             nullptr, 1e-5, w.data(), b.data()),
                   BNORM_ERROR_INVALID_VALUE, "running_var[0]");
  // folded_weight partly over weight.
  std::vector<float> storage(p.count() + 2, 1.f);
  expect_c_failure(bnorm_fold_batch_norm_f32(3, 4, storage.data() + 2, nullptr, M, V, nullptr,
                                             nullptr, 1e-5, storage.data(), b.data()),
                   BNORM_ERROR_OVERLAP, "folded_weight overlaps weight");
  EXPECT_EQ(storage, std::vector<float>(p.count() + 2, 1.f));
  EXPECT_EQ(w, std::vector<float>(p.count(), 42.f));
  EXPECT_EQ(b, std::vector<float>(3, 42.f));
  // f64 too.
  std::vector<double> wd(12, 42.0), bd(3, 42.0), md(3, 0.0), vd(3, 1.0), Wd(12, 1.0);
  expect_c_failure(bnorm_fold_batch_norm_f64(3, 4, Wd.data(), nullptr, md.data(), vd.data(),
                                             nullptr, nullptr, std::nan(""), wd.data(), bd.data()),
                   BNORM_ERROR_INVALID_VALUE, "bnorm_fold_batch_norm_f64: eps");
  EXPECT_EQ(wd, std::vector<double>(12, 42.0));
}

}  // namespace
