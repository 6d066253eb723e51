// Finite-difference gradient checks for the engine, in double.
//
// For a layer f and a fixed random r of y's shape, L(x, params) = sum(r * f(x)).
// The analytic gradients are backward(x, y, dy = r) for dL/dx and Parameter::grad for
// dL/dparam; the numeric ones are central differences (L(v + h) - L(v - h)) / 2h on
// every input and parameter element (a random subset when a tensor is large). With
// h = 1e-6 the truncation error is ~h^2 and the rounding error ~1e-16 |L| / h, both
// far below the tolerance |a - n| <= atol + rtol |n|.
//
// The analytic pass runs with the engine's thread count (the parallel paths are what
// is under test); the hundreds of forwards of the numeric pass run on one thread:
// they are tiny, and on a loaded machine every OpenMP barrier of a tiny parallel
// region can wait a scheduler time slice for a descheduled thread.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "nn/blas.h"
#include "nn/layer.h"
#include "nn/random.h"
#include "nn/sequential.h"
#include "nn/tensor.h"

namespace bnorm::nn::testing {

inline void fill_uniform(Tensor<double>& t, Rng& rng, double lo = -1.0, double hi = 1.0) {
  for (double& v : t.values()) v = rng.uniform(lo, hi);
}

inline Tensor<double> random_tensor(const Shape& shape, Rng& rng, double lo = -1.0,
                                    double hi = 1.0) {
  Tensor<double> t(shape);
  fill_uniform(t, rng, lo, hi);
  return t;
}

// Up to `limit` distinct indices of [0, n), sorted; all of them when n <= limit.
inline std::vector<int64_t> sample_indices(int64_t n, int64_t limit, Rng& rng) {
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  if (n <= limit) return all;
  for (int64_t i = 0; i < limit; ++i) {  // partial Fisher-Yates
    const auto j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(n - i)));
    std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(j)]);
  }
  all.resize(static_cast<size_t>(limit));
  std::sort(all.begin(), all.end());
  return all;
}

// Sets the engine's thread count for a scope and restores it.
class ScopedEngineThreads {
 public:
  explicit ScopedEngineThreads(int threads) : before_(engine_threads()) {
    set_engine_threads(threads);
  }
  ~ScopedEngineThreads() { set_engine_threads(before_); }
  ScopedEngineThreads(const ScopedEngineThreads&) = delete;
  ScopedEngineThreads& operator=(const ScopedEngineThreads&) = delete;

 private:
  int before_;
};

struct GradcheckOptions {
  double h = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
  int64_t max_checks_per_tensor = 300;
  uint64_t seed = 12345;
  bool check_input = true;
  // Runs before every forward: resets whatever a forward advances (dropout's draw
  // counter), so every evaluation of L sees the same function.
  std::function<void()> before_forward;
};

// Collects mismatches, keeping the first few messages for the report.
class Mismatches {
 public:
  void compare(const std::string& what, int64_t index, double analytic, double numeric,
               const GradcheckOptions& o) {
    ++checked_;
    const double err = std::abs(analytic - numeric);
    if (err <= o.atol + o.rtol * std::abs(numeric) && std::isfinite(analytic)) return;
    if (count_++ < 8)
      text_ << "\n  " << what << "[" << index << "]: analytic " << analytic << ", numeric "
            << numeric << ", diff " << err;
  }
  void note(const std::string& line) {
    ++count_;
    text_ << "\n  " << line;
  }
  ::testing::AssertionResult result() const {
    if (count_ == 0) return ::testing::AssertionSuccess() << checked_ << " entries checked";
    return ::testing::AssertionFailure()
           << count_ << " of " << checked_ << " gradient entries differ:" << text_.str();
  }
  int64_t checked() const { return checked_; }

 private:
  int64_t checked_ = 0;
  int64_t count_ = 0;
  std::ostringstream text_;
};

// Checks dL/dx and dL/dparam of one layer at x (x is restored before returning).
// Also checks the backward contract: dx is fully written (it starts as NaN), and the
// parameter gradients are overwritten, not accumulated (backward runs twice, once
// with dx = nullptr, and both runs must give the same parameter gradients).
inline ::testing::AssertionResult check_layer_gradients(Layer<double>& layer, Tensor<double>& x,
                                                        const GradcheckOptions& o = {}) {
  Rng rng(o.seed);
  const Shape out_shape = layer.output_shape(x.shape());
  const Tensor<double> r = random_tensor(out_shape, rng);
  Tensor<double> y(out_shape);

  const auto loss = [&]() {
    if (o.before_forward) o.before_forward();
    y.fill(std::numeric_limits<double>::quiet_NaN());
    layer.forward(x, y);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += r[i] * y[i];
    return s;
  };

  StateLists<double> state;
  layer.collect_state(state, "");
  Mismatches m;

  // Analytic gradients.
  loss();
  layer.backward(x, y, r, nullptr);
  std::vector<std::vector<double>> grads_without_dx;
  for (const auto& p : state.parameters) grads_without_dx.emplace_back(p.grad.begin(), p.grad.end());
  Tensor<double> dx(x.shape());
  dx.fill(std::numeric_limits<double>::quiet_NaN());
  layer.backward(x, y, r, &dx);
  std::vector<std::vector<double>> grads;
  for (const auto& p : state.parameters) grads.emplace_back(p.grad.begin(), p.grad.end());
  for (size_t k = 0; k < grads.size(); ++k)
    for (size_t i = 0; i < grads[k].size(); ++i) {
      const double a = grads[k][i], b = grads_without_dx[k][i];
      if (!(std::abs(a - b) <= 1e-12 * (1 + std::abs(a)))) {
        std::ostringstream s;
        s << state.parameters[k].name << ".grad[" << i << "] with dx: " << a
          << ", with dx = nullptr: " << b << " (a second backward must overwrite, not add)";
        m.note(s.str());
        break;
      }
    }

  const auto central = [&](double& v) {
    const double saved = v;
    v = saved + o.h;
    const double plus = loss();
    v = saved - o.h;
    const double minus = loss();
    v = saved;
    return (plus - minus) / (2 * o.h);
  };

  const ScopedEngineThreads one_thread(1);
  if (o.check_input)
    for (int64_t i : sample_indices(x.numel(), o.max_checks_per_tensor, rng))
      m.compare("dx", i, dx[i], central(x[i]), o);
  for (size_t k = 0; k < state.parameters.size(); ++k) {
    auto& p = state.parameters[k];
    for (int64_t i : sample_indices(static_cast<int64_t>(p.value.size()), o.max_checks_per_tensor, rng))
      m.compare("d" + p.name, i, grads[k][static_cast<size_t>(i)],
                central(p.value[static_cast<size_t>(i)]), o);
  }
  if (m.checked() == 0) return ::testing::AssertionFailure() << "nothing was checked";
  return m.result();
}

// Whole-model check: L = sum(r * model(x)), dL/dparam by Sequential::backward against
// central differences on `count` parameter entries spread over every parameter tensor.
inline ::testing::AssertionResult check_model_gradients(Sequential<double>& model,
                                                        const Tensor<double>& x, int64_t count,
                                                        const GradcheckOptions& o = {}) {
  Rng rng(o.seed);
  const Tensor<double> r = random_tensor(model.output_shape(x.shape()), rng);
  StateLists<double> state = model.state();
  const auto loss = [&]() {
    if (o.before_forward) o.before_forward();
    const Tensor<double>& y = model.forward(x);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += r[i] * y[i];
    return s;
  };
  loss();
  model.backward(r);
  std::vector<std::vector<double>> grads;
  for (const auto& p : state.parameters) grads.emplace_back(p.grad.begin(), p.grad.end());

  Mismatches m;
  const ScopedEngineThreads one_thread(1);
  const auto tensors = static_cast<int64_t>(state.parameters.size());
  const int64_t per_tensor = std::max<int64_t>(1, (count + tensors - 1) / tensors);
  for (size_t k = 0; k < state.parameters.size(); ++k) {
    auto& p = state.parameters[k];
    for (int64_t i : sample_indices(static_cast<int64_t>(p.value.size()), per_tensor, rng)) {
      double& v = p.value[static_cast<size_t>(i)];
      const double saved = v;
      v = saved + o.h;
      const double plus = loss();
      v = saved - o.h;
      const double minus = loss();
      v = saved;
      m.compare("d" + p.name, i, grads[k][static_cast<size_t>(i)], (plus - minus) / (2 * o.h), o);
    }
  }
  return m.result();
}

}  // namespace bnorm::nn::testing
