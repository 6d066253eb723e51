// Non-finite values and eps = 0 (docs/batch_norm.md, "NaN, Inf and eps = 0"), on every
// pass, both layouts, float and double, 1 and 2 threads, fused channel passes and
// separate ones, and the reference twin:
//   training: a NaN or +-Inf in channel p's x makes p's save_invstd, running_var, y and
//     (backward) dx and dweight NaN; save_mean and running_mean take sum(x) / m's IEEE
//     value (+Inf for +Inf alone, -Inf for -Inf alone, NaN for a NaN or both signs), as
//     PyTorch; dbias = sum(dy) keeps its value. A NaN in dy makes dx, dweight, dbias NaN.
//   inference: a NaN or Inf in x (or dy) reaches only the values at its positions (and
//     the channel's dweight, dbias for dy); a NaN running statistic, weight or bias makes
//     the channel NaN.
//   every other channel keeps the exact bits of the run without the poison.
//   eps == 0 and a constant channel: save_invstd 0, y = bias, dx = 0 (PyTorch's InvStd).
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels/policy.h"
#include "reference/batch_norm_reference.h"
#include "test_support.h"

namespace bnorm::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kAnyBudget = std::numeric_limits<int64_t>::max();
constexpr double kMomentum = 0.1;

// Forces the fused budget (0: separate passes only) for one scope.
struct FusedBudget {
  explicit FusedBudget(int64_t bytes) { kernels::override_fused_slice_budget(bytes); }
  ~FusedBudget() { kernels::override_fused_slice_budget(-1); }
};

// Restores the default thread count when a test ends (or returns early).
struct DefaultThreadsAfter {
  ~DefaultThreadsAfter() { bnorm_set_num_threads(0); }
};

struct Config {
  int threads;
  int64_t budget;
  std::string name() const {
    return std::to_string(threads) + " threads, " + (budget == 0 ? "separate" : "fused") +
           " passes";
  }
};
const Config kConfigs[] = {{1, 0}, {1, kAnyBudget}, {2, 0}, {2, kAnyBudget}};

// Every kernel path: channels-first rows of one chunk each (channel-at-a-time fused),
// rows cut into pieces, short rows in channel blocks (with several chunks), channels-last
// flat rows (c < 16) and column blocks, (N, C) in one and two column blocks and in several
// row chunks; the last two have 2^19+ values, so two threads run even under
// OMP_WAIT_POLICY=passive.
std::vector<Shape> path_shapes() {
  return {{3, 5, 6767, false}, {2, 3, 20000, false}, {40, 70, 15, false},
          {600, 4, 20, false}, {16, 7, 33, true},    {64, 20, 9, true},
          {300, 300, 1, false}, {5000, 3, 1, true},  {5, 7, 16000, false},
          {4, 12, 12000, true}};
}

const ProblemSpec kSpec{0.5, 2.0, 0.5, 2.0};

// The index of channel p's k-th value (k < n * spatial).
int64_t at(const Shape& s, int64_t p, int64_t k) {
  return s.geometry().index(k / s.spatial, p, k % s.spatial);
}

// in_p[i]: value i belongs to channel p.
std::vector<bool> channel_mask(const Shape& s, int64_t p) {
  std::vector<bool> in_p(static_cast<size_t>(s.size()), false);
  for (int64_t k = 0; k < s.n * s.spatial; ++k) in_p[at(s, p, k)] = true;
  return in_p;
}

enum class Kind { nan, pos_inf, neg_inf, finite };
Kind kind(double v) {
  if (std::isnan(v)) return Kind::nan;
  if (std::isinf(v)) return v > 0 ? Kind::pos_inf : Kind::neg_inf;
  return Kind::finite;
}
const char* kind_name(Kind k) {
  return k == Kind::nan ? "NaN" : k == Kind::pos_inf ? "+Inf" : k == Kind::neg_inf ? "-Inf" : "finite";
}

template <class T>
::testing::AssertionResult is_kind(const char* what, T got, double want) {
  if (kind(static_cast<double>(got)) == kind(want)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << " is " << +got << ", expected "
                                       << kind_name(kind(want));
}

// Every value with select[i] is NaN.
template <class T>
::testing::AssertionResult all_nan(const char* what, const std::vector<T>& v,
                                   const std::vector<bool>& select) {
  for (size_t i = 0; i < v.size(); ++i)
    if (select[i] && !std::isnan(v[i]))
      return ::testing::AssertionFailure() << what << "[" << i << "] = " << +v[i]
                                           << ", expected NaN";
  return ::testing::AssertionSuccess();
}

// got and clean have the same bits at every index where keep[i].
template <class T>
::testing::AssertionResult same_bits_where(const char* what, const std::vector<T>& got,
                                           const std::vector<T>& clean,
                                           const std::vector<bool>& keep) {
  for (size_t i = 0; i < got.size(); ++i)
    if (keep[i] && std::memcmp(&got[i], &clean[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure() << what << "[" << i << "] = " << +got[i]
                                           << ", expected the clean run's " << +clean[i];
  return ::testing::AssertionSuccess();
}

std::vector<bool> inverted(std::vector<bool> v) {
  v.flip();
  return v;
}
// Per-channel arrays: every channel but p.
std::vector<bool> other_channels(int64_t c, int64_t p) {
  std::vector<bool> keep(static_cast<size_t>(c), true);
  keep[p] = false;
  return keep;
}
std::vector<bool> only(int64_t size, int64_t i) {
  std::vector<bool> v(static_cast<size_t>(size), false);
  v[i] = true;
  return v;
}
bool mask_bit(const std::vector<uint8_t>& mask, int64_t i) { return (mask[i / 8] >> (i % 8)) & 1; }

// ---- training: forward (plain, fused ReLU with mask), backward (plain, ReLU-gated) ----

template <class T>
struct TrainingRun {
  std::vector<T> y, mean, invstd, running_mean, running_var, y_relu;
  std::vector<T> dx, dweight, dbias, dx_relu, dweight_relu, dbias_relu;
  std::vector<uint8_t> mask;
};

template <class T>
TrainingRun<T> run_training(const RandomProblem<T>& pr, double eps = 1e-5) {
  const Shape& s = pr.shape;
  const auto L = s.layout();
  const auto c = static_cast<size_t>(s.c), count = static_cast<size_t>(s.size());
  TrainingRun<T> o;
  o.y.assign(count, T(7)), o.y_relu.assign(count, T(7)), o.dx.assign(count, T(7)),
      o.dx_relu.assign(count, T(7));
  o.mean.assign(c, T(7)), o.invstd.assign(c, T(7)), o.dweight.assign(c, T(7)),
      o.dbias.assign(c, T(7)), o.dweight_relu.assign(c, T(7)), o.dbias_relu.assign(c, T(7));
  o.running_mean = pr.running_mean, o.running_var = pr.running_var;
  o.mask.assign(static_cast<size_t>(pr.mask_bytes()), 0);
  std::vector<T> relu_mean(c), relu_invstd(c);
  EXPECT_EQ(CApi<T>::forward_training(L, s.n, s.c, s.spatial, pr.x.data(), o.y.data(),
                                      pr.weight.data(), pr.bias.data(), eps, kMomentum,
                                      o.running_mean.data(), o.running_var.data(),
                                      o.mean.data(), o.invstd.data()),
            BNORM_SUCCESS) << bnorm_last_error();
  EXPECT_EQ(CApi<T>::relu_forward_training(L, s.n, s.c, s.spatial, pr.x.data(), o.y_relu.data(),
                                           pr.weight.data(), pr.bias.data(), eps, nullptr,
                                           nullptr, nullptr, relu_mean.data(),
                                           relu_invstd.data(), o.mask.data()),
            BNORM_SUCCESS) << bnorm_last_error();
  EXPECT_EQ(CApi<T>::backward(L, s.n, s.c, s.spatial, pr.x.data(), pr.dy.data(), o.dx.data(),
                              pr.weight.data(), o.mean.data(), o.invstd.data(),
                              o.dweight.data(), o.dbias.data()),
            BNORM_SUCCESS) << bnorm_last_error();
  EXPECT_EQ(CApi<T>::relu_backward(L, s.n, s.c, s.spatial, pr.x.data(), nullptr, o.mask.data(),
                                   pr.dy.data(), o.dx_relu.data(), pr.weight.data(),
                                   o.mean.data(), o.invstd.data(), o.dweight_relu.data(),
                                   o.dbias_relu.data()),
            BNORM_SUCCESS) << bnorm_last_error();
  return o;
}

// Values of channel p set to `value` at its k-th positions.
struct Poison {
  const char* name;
  std::vector<std::pair<int64_t, double>> values;  // (k, value)
  double mean;                                     // what sum(x) / m gives
};
std::vector<Poison> x_poisons(int64_t m) {
  return {{"NaN first", {{0, kNaN}}, kNaN},
          {"NaN last", {{m - 1, kNaN}}, kNaN},
          {"+Inf first", {{0, kInf}}, kInf},
          {"+Inf middle", {{m / 2, kInf}}, kInf},
          {"-Inf last", {{m - 1, -kInf}}, -kInf},
          {"+Inf and -Inf", {{0, kInf}, {m - 1, -kInf}}, kNaN}};
}

template <class T>
void expect_training_x_poison() {
  const DefaultThreadsAfter restore;
  for (const Config& cfg : kConfigs) {
    bnorm_set_num_threads(cfg.threads);
    FusedBudget budget(cfg.budget);
    for (const Shape& s : path_shapes()) {
      const int64_t p = s.c / 2, m = s.n * s.spatial;
      const RandomProblem<T> clean_problem(s, 11, kSpec);
      const TrainingRun<T> clean = run_training(clean_problem);
      const std::vector<bool> in_p = channel_mask(s, p), outside = inverted(in_p);
      const std::vector<bool> others = other_channels(s.c, p);
      for (const Poison& poison : x_poisons(m)) {
        SCOPED_TRACE(cfg.name() + ", " + s.name() + ", x " + poison.name);
        RandomProblem<T> pr = clean_problem;
        for (const auto& [k, v] : poison.values) pr.x[at(s, p, k)] = static_cast<T>(v);
        const TrainingRun<T> got = run_training(pr);
        EXPECT_TRUE(is_kind("save_mean[p]", got.mean[p], poison.mean));
        EXPECT_TRUE(is_kind("running_mean[p]", got.running_mean[p], poison.mean));
        EXPECT_TRUE(is_kind("save_invstd[p]", got.invstd[p], kNaN));
        EXPECT_TRUE(is_kind("running_var[p]", got.running_var[p], kNaN));
        EXPECT_TRUE(is_kind("dweight[p]", got.dweight[p], kNaN));
        EXPECT_TRUE(is_kind("dweight_relu[p]", got.dweight_relu[p], kNaN));
        EXPECT_TRUE(bitwise_equal(&got.dbias[p], &clean.dbias[p], 1)) << "dbias = sum(dy)";
        EXPECT_TRUE(all_nan("y", got.y, in_p));
        EXPECT_TRUE(all_nan("y_relu", got.y_relu, in_p));  // relu(NaN) = NaN
        EXPECT_TRUE(all_nan("dx", got.dx, in_p));
        EXPECT_TRUE(all_nan("dx_relu", got.dx_relu, in_p));
        for (int64_t k = 0; k < m; ++k) ASSERT_TRUE(mask_bit(got.mask, at(s, p, k))) << k;
        EXPECT_TRUE(same_bits_where("y", got.y, clean.y, outside));
        EXPECT_TRUE(same_bits_where("y_relu", got.y_relu, clean.y_relu, outside));
        EXPECT_TRUE(same_bits_where("dx", got.dx, clean.dx, outside));
        EXPECT_TRUE(same_bits_where("dx_relu", got.dx_relu, clean.dx_relu, outside));
        EXPECT_TRUE(same_bits_where("save_mean", got.mean, clean.mean, others));
        EXPECT_TRUE(same_bits_where("save_invstd", got.invstd, clean.invstd, others));
        EXPECT_TRUE(same_bits_where("running_mean", got.running_mean, clean.running_mean, others));
        EXPECT_TRUE(same_bits_where("running_var", got.running_var, clean.running_var, others));
        EXPECT_TRUE(same_bits_where("dweight", got.dweight, clean.dweight, others));
        EXPECT_TRUE(same_bits_where("dbias", got.dbias, clean.dbias, others));
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

TEST(NonFinite, TrainingXPoisonsItsChannelFloat) { expect_training_x_poison<float>(); }
TEST(NonFinite, TrainingXPoisonsItsChannelDouble) { expect_training_x_poison<double>(); }

// A NaN in dy: dx, dweight and dbias of its channel NaN; behind a closed ReLU gate the
// gradient is 0 (threshold_backward), so the NaN is dropped there.
template <class T>
void expect_training_dy_poison() {
  const DefaultThreadsAfter restore;
  for (const Config& cfg : kConfigs) {
    bnorm_set_num_threads(cfg.threads);
    FusedBudget budget(cfg.budget);
    for (const Shape& s : path_shapes()) {
      const int64_t p = s.c / 2, m = s.n * s.spatial;
      const RandomProblem<T> clean_problem(s, 12, kSpec);
      const TrainingRun<T> clean = run_training(clean_problem);
      const std::vector<bool> in_p = channel_mask(s, p), outside = inverted(in_p);
      const std::vector<bool> others = other_channels(s.c, p);
      // A position where the ReLU passed and one where it did not (if any).
      int64_t open = -1, closed = -1;
      for (int64_t k = 0; k < m; ++k)
        (mask_bit(clean.mask, at(s, p, k)) ? open : closed) = at(s, p, k);
      for (const int64_t q : {open, closed}) {
        if (q < 0) continue;
        SCOPED_TRACE(cfg.name() + ", " + s.name() + ", NaN in dy at " + std::to_string(q));
        RandomProblem<T> pr = clean_problem;
        pr.dy[q] = static_cast<T>(kNaN);
        const TrainingRun<T> got = run_training(pr);
        EXPECT_TRUE(all_nan("dx", got.dx, in_p));
        EXPECT_TRUE(is_kind("dweight[p]", got.dweight[p], kNaN));
        EXPECT_TRUE(is_kind("dbias[p]", got.dbias[p], kNaN));
        EXPECT_TRUE(same_bits_where("dx", got.dx, clean.dx, outside));
        EXPECT_TRUE(same_bits_where("dweight", got.dweight, clean.dweight, others));
        EXPECT_TRUE(same_bits_where("dbias", got.dbias, clean.dbias, others));
        if (q == open) {
          EXPECT_TRUE(all_nan("dx_relu", got.dx_relu, in_p));
          EXPECT_TRUE(is_kind("dweight_relu[p]", got.dweight_relu[p], kNaN));
          EXPECT_TRUE(is_kind("dbias_relu[p]", got.dbias_relu[p], kNaN));
          EXPECT_TRUE(same_bits_where("dx_relu", got.dx_relu, clean.dx_relu, outside));
        } else {
          EXPECT_TRUE(bitwise_equal(got.dx_relu, clean.dx_relu));
          EXPECT_TRUE(bitwise_equal(got.dweight_relu, clean.dweight_relu));
          EXPECT_TRUE(bitwise_equal(got.dbias_relu, clean.dbias_relu));
        }
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

TEST(NonFinite, TrainingDyPoisonsItsChannelFloat) { expect_training_dy_poison<float>(); }
TEST(NonFinite, TrainingDyPoisonsItsChannelDouble) { expect_training_dy_poison<double>(); }

// NaN in a per-channel input of the training forward: weight or bias make the channel's
// y NaN (statistics untouched); an incoming running statistic stays NaN.
template <class T>
void expect_training_parameter_poison() {
  const DefaultThreadsAfter restore;
  for (const Config& cfg : kConfigs) {
    bnorm_set_num_threads(cfg.threads);
    FusedBudget budget(cfg.budget);
    for (const Shape& s : path_shapes()) {
      const int64_t p = s.c / 2;
      const RandomProblem<T> clean_problem(s, 13, kSpec);
      const TrainingRun<T> clean = run_training(clean_problem);
      const std::vector<bool> in_p = channel_mask(s, p), outside = inverted(in_p);
      const std::vector<bool> others = other_channels(s.c, p);
      for (const char* which : {"weight", "bias", "running_mean", "running_var"}) {
        SCOPED_TRACE(cfg.name() + ", " + s.name() + ", NaN " + which);
        RandomProblem<T> pr = clean_problem;
        const std::string w = which;
        (w == "weight" ? pr.weight : w == "bias" ? pr.bias
                                     : w == "running_mean" ? pr.running_mean
                                                           : pr.running_var)[p] =
            static_cast<T>(kNaN);
        const TrainingRun<T> got = run_training(pr);
        EXPECT_TRUE(bitwise_equal(got.mean, clean.mean));
        EXPECT_TRUE(bitwise_equal(got.invstd, clean.invstd));
        if (w == "weight" || w == "bias") {
          EXPECT_TRUE(all_nan("y", got.y, in_p));
          EXPECT_TRUE(all_nan("y_relu", got.y_relu, in_p));
          EXPECT_TRUE(same_bits_where("y", got.y, clean.y, outside));
          EXPECT_TRUE(bitwise_equal(got.running_mean, clean.running_mean));
          EXPECT_TRUE(bitwise_equal(got.running_var, clean.running_var));
        } else {
          EXPECT_TRUE(bitwise_equal(got.y, clean.y));
          auto& running = w == "running_mean" ? got.running_mean : got.running_var;
          auto& clean_running = w == "running_mean" ? clean.running_mean : clean.running_var;
          EXPECT_TRUE(is_kind(which, running[p], kNaN));
          EXPECT_TRUE(same_bits_where(which, running, clean_running, others));
        }
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

TEST(NonFinite, TrainingParameterPoisonFloat) { expect_training_parameter_poison<float>(); }
TEST(NonFinite, TrainingParameterPoisonDouble) { expect_training_parameter_poison<double>(); }

// ---- inference: forward (plain, fused ReLU), backward with fixed statistics ----------

template <class T>
struct InferenceRun {
  std::vector<T> y, y_relu, dx, dweight, dbias, dx_relu;
};

template <class T>
InferenceRun<T> run_inference(const RandomProblem<T>& pr) {
  const Shape& s = pr.shape;
  const auto L = s.layout();
  const auto c = static_cast<size_t>(s.c), count = static_cast<size_t>(s.size());
  InferenceRun<T> o;
  o.y.assign(count, T(7)), o.y_relu.assign(count, T(7)), o.dx.assign(count, T(7)),
      o.dx_relu.assign(count, T(7)), o.dweight.assign(c, T(7)), o.dbias.assign(c, T(7));
  EXPECT_EQ(CApi<T>::forward_inference(L, s.n, s.c, s.spatial, pr.x.data(), o.y.data(),
                                       pr.weight.data(), pr.bias.data(), pr.running_mean.data(),
                                       pr.running_var.data(), 1e-5),
            BNORM_SUCCESS) << bnorm_last_error();
  EXPECT_EQ(CApi<T>::relu_forward_inference(L, s.n, s.c, s.spatial, pr.x.data(),
                                            o.y_relu.data(), pr.weight.data(), pr.bias.data(),
                                            pr.running_mean.data(), pr.running_var.data(), 1e-5,
                                            nullptr),
            BNORM_SUCCESS) << bnorm_last_error();
  EXPECT_EQ(CApi<T>::backward_inference(L, s.n, s.c, s.spatial, pr.x.data(), pr.dy.data(),
                                        o.dx.data(), pr.weight.data(), pr.running_mean.data(),
                                        pr.running_var.data(), 1e-5, o.dweight.data(),
                                        o.dbias.data()),
            BNORM_SUCCESS) << bnorm_last_error();
  EXPECT_EQ(CApi<T>::relu_backward_inference(L, s.n, s.c, s.spatial, pr.x.data(),
                                             o.y_relu.data(), nullptr, pr.dy.data(),
                                             o.dx_relu.data(), pr.weight.data(),
                                             pr.running_mean.data(), pr.running_var.data(),
                                             1e-5, nullptr, nullptr),
            BNORM_SUCCESS) << bnorm_last_error();
  return o;
}

template <class T>
void expect_inference_poison() {
  const DefaultThreadsAfter restore;
  for (const Config& cfg : kConfigs) {
    bnorm_set_num_threads(cfg.threads);
    FusedBudget budget(cfg.budget);
    for (const Shape& s : path_shapes()) {
      const int64_t p = s.c / 2, m = s.n * s.spatial;
      const RandomProblem<T> clean_problem(s, 14, kSpec);
      const InferenceRun<T> clean = run_inference(clean_problem);
      const std::vector<bool> in_p = channel_mask(s, p), outside = inverted(in_p);
      const std::vector<bool> others = other_channels(s.c, p);
      const int64_t q = at(s, p, m / 2);
      const std::vector<bool> not_q = inverted(only(s.size(), q));
      const std::string where = cfg.name() + ", " + s.name();
      // x: NaN or +Inf at q reaches y[q] only; dx does not read x; dweight does.
      for (const double v : {kNaN, kInf}) {
        SCOPED_TRACE(where + ", x[q] = " + std::to_string(v));
        RandomProblem<T> pr = clean_problem;
        pr.x[q] = static_cast<T>(v);
        const InferenceRun<T> got = run_inference(pr);
        // +Inf times the channel's scale, weight / sqrt(running_var + eps).
        const double want = std::isnan(v) ? kNaN : pr.weight[p] > 0 ? kInf : -kInf;
        EXPECT_TRUE(is_kind("y[q]", got.y[q], want));
        EXPECT_TRUE(is_kind("y_relu[q]", got.y_relu[q], want > 0 || std::isnan(want) ? want : 0));
        EXPECT_TRUE(same_bits_where("y", got.y, clean.y, not_q));
        EXPECT_TRUE(same_bits_where("y_relu", got.y_relu, clean.y_relu, not_q));
        EXPECT_TRUE(bitwise_equal(got.dx, clean.dx));
        // dweight = sum(dy * (x - running_mean)) * invstd: NaN, or dy[q] * +Inf.
        const double dweight = std::isnan(v) ? kNaN : pr.dy[q] > 0 ? kInf : -kInf;
        EXPECT_TRUE(is_kind("dweight[p]", got.dweight[p], dweight));
        EXPECT_TRUE(same_bits_where("dweight", got.dweight, clean.dweight, others));
        EXPECT_TRUE(bitwise_equal(got.dbias, clean.dbias));
        if (::testing::Test::HasFailure()) return;
      }
      {
        SCOPED_TRACE(where + ", dy[q] = NaN");
        RandomProblem<T> pr = clean_problem;
        pr.dy[q] = static_cast<T>(kNaN);
        const InferenceRun<T> got = run_inference(pr);
        EXPECT_TRUE(is_kind("dx[q]", got.dx[q], kNaN));
        EXPECT_TRUE(same_bits_where("dx", got.dx, clean.dx, not_q));
        EXPECT_TRUE(is_kind("dweight[p]", got.dweight[p], kNaN));
        EXPECT_TRUE(is_kind("dbias[p]", got.dbias[p], kNaN));
        EXPECT_TRUE(same_bits_where("dbias", got.dbias, clean.dbias, others));
      }
      // A NaN per-channel input: the channel's y (all but bias and running_mean: its dx).
      for (const char* which : {"weight", "bias", "running_mean", "running_var"}) {
        SCOPED_TRACE(where + ", NaN " + which);
        RandomProblem<T> pr = clean_problem;
        const std::string w = which;
        (w == "weight" ? pr.weight : w == "bias" ? pr.bias
                                     : w == "running_mean" ? pr.running_mean
                                                           : pr.running_var)[p] =
            static_cast<T>(kNaN);
        const InferenceRun<T> got = run_inference(pr);
        EXPECT_TRUE(all_nan("y", got.y, in_p));
        EXPECT_TRUE(all_nan("y_relu", got.y_relu, in_p));
        EXPECT_TRUE(same_bits_where("y", got.y, clean.y, outside));
        EXPECT_TRUE(same_bits_where("y_relu", got.y_relu, clean.y_relu, outside));
        if (w == "weight" || w == "running_var") {
          EXPECT_TRUE(all_nan("dx", got.dx, in_p));
          EXPECT_TRUE(all_nan("dx_relu", got.dx_relu, in_p));
          EXPECT_TRUE(same_bits_where("dx", got.dx, clean.dx, outside));
        } else {
          EXPECT_TRUE(bitwise_equal(got.dx, clean.dx));
        }
        EXPECT_TRUE(bitwise_equal(got.dbias, clean.dbias));
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

TEST(NonFinite, InferencePoisonStaysWhereItIsFloat) { expect_inference_poison<float>(); }
TEST(NonFinite, InferencePoisonStaysWhereItIsDouble) { expect_inference_poison<double>(); }

// ---- the reference twin follows the same rule, and the kernels agree with it ---------

TEST(NonFinite, ReferenceFollowsTheRule) {
  for (const Shape& s : {Shape{4, 3, 10, false}, Shape{4, 3, 10, true}}) {
    const int64_t p = 1, m = s.n * s.spatial;
    const RandomProblem<double> clean(s, 15, kSpec);
    const std::vector<bool> in_p = channel_mask(s, p);
    for (const Poison& poison : x_poisons(m)) {
      SCOPED_TRACE(s.name() + ", x " + poison.name);
      std::vector<double> x = clean.x;
      for (const auto& [k, v] : poison.values) x[at(s, p, k)] = v;
      std::vector<double> y(x.size()), mean(s.c), var(s.c), dx(x.size()), dw(s.c), db(s.c);
      reference::batch_norm_forward_training(s.geometry(), x.data(), y.data(),
                                             clean.weight.data(), clean.bias.data(), 1e-5,
                                             mean.data(), var.data());
      EXPECT_TRUE(is_kind("mean[p]", mean[p], poison.mean));
      EXPECT_TRUE(is_kind("var[p]", var[p], kNaN));
      EXPECT_TRUE(all_nan("y", y, in_p));
      reference::batch_norm_backward(s.geometry(), x.data(), clean.dy.data(),
                                     clean.weight.data(), 1e-5, dx.data(), dw.data(), db.data());
      EXPECT_TRUE(all_nan("dx", dx, in_p));
      EXPECT_TRUE(is_kind("dweight[p]", dw[p], kNaN));
      EXPECT_TRUE(is_kind("dbias[p]", db[p], 0.0));
      for (int64_t ch = 0; ch < s.c; ++ch) {
        if (ch == p) continue;
        EXPECT_TRUE(is_kind("var", var[ch], 0.0));
        EXPECT_TRUE(is_kind("dweight", dw[ch], 0.0));
      }

      // The kernels on the same data: the same kinds everywhere.
      RandomProblem<double> pr = clean;
      pr.x = x;
      const TrainingRun<double> got = run_training(pr);
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_TRUE(is_kind("y", got.y[i], y[i])) << i;
        ASSERT_TRUE(is_kind("dx", got.dx[i], dx[i])) << i;
      }
      for (int64_t ch = 0; ch < s.c; ++ch) {
        EXPECT_TRUE(is_kind("save_mean", got.mean[ch], mean[ch]));
        EXPECT_TRUE(is_kind("save_invstd", got.invstd[ch], 1 / std::sqrt(var[ch] + 1e-5)));
        EXPECT_TRUE(is_kind("dweight", got.dweight[ch], dw[ch]));
        EXPECT_TRUE(is_kind("dbias", got.dbias[ch], db[ch]));
      }
    }
  }
}

TEST(NonFinite, ReferenceInferenceKeepsPoisonInPlace) {
  const Shape s{4, 3, 10, true};
  const int64_t q = at(s, 1, 17);
  RandomProblem<double> pr(s, 16, kSpec);
  pr.x[q] = kNaN;
  std::vector<double> y(pr.x.size()), dx(pr.x.size()), dw(s.c), db(s.c);
  reference::batch_norm_forward_inference(s.geometry(), pr.x.data(), y.data(), pr.weight.data(),
                                          pr.bias.data(), pr.running_mean.data(),
                                          pr.running_var.data(), 1e-5);
  for (size_t i = 0; i < y.size(); ++i)
    EXPECT_EQ(std::isnan(y[i]), static_cast<int64_t>(i) == q) << i;
  reference::batch_norm_backward_inference(s.geometry(), pr.x.data(), pr.dy.data(),
                                           pr.weight.data(), pr.running_mean.data(),
                                           pr.running_var.data(), 1e-5, dx.data(), dw.data(),
                                           db.data());
  for (double v : dx) EXPECT_TRUE(std::isfinite(v));
  EXPECT_TRUE(std::isnan(dw[1]) && std::isfinite(dw[0]) && std::isfinite(db[1]));
}

// ---- eps = 0 ----------------------------------------------------------------------------

// A constant channel (var == 0) with eps == 0: save_invstd 0, y = bias (relu(bias) fused),
// running statistics as usual, dx = 0 and dweight = 0, as PyTorch's InvStd. Values that
// are not exact in binary (0.1) too: the shifted sums make their variance exactly 0.
template <class T>
void expect_eps_zero_constant_channel() {
  const DefaultThreadsAfter restore;
  for (const Config& cfg : kConfigs) {
    bnorm_set_num_threads(cfg.threads);
    FusedBudget budget(cfg.budget);
    for (const Shape& s : path_shapes()) {
      const int64_t p = s.c / 2, m = s.n * s.spatial;
      for (const double value : {5.0, 0.1, -3.25}) {
        SCOPED_TRACE(cfg.name() + ", " + s.name() + ", channel of " + std::to_string(value));
        RandomProblem<T> pr(s, 17, kSpec);
        for (int64_t k = 0; k < m; ++k) pr.x[at(s, p, k)] = static_cast<T>(value);
        const TrainingRun<T> got = run_training(pr, 0.0);
        const T v = static_cast<T>(value);
        EXPECT_EQ(got.invstd[p], T(0));
        EXPECT_EQ(got.mean[p], v);
        EXPECT_EQ(got.running_mean[p],
                  static_cast<T>((1 - kMomentum) * static_cast<double>(pr.running_mean[p]) +
                                 kMomentum * static_cast<double>(v)));
        EXPECT_EQ(got.running_var[p],
                  static_cast<T>((1 - kMomentum) * static_cast<double>(pr.running_var[p])));
        EXPECT_EQ(got.dweight[p], T(0));
        EXPECT_TRUE(std::isfinite(got.dbias[p]));
        for (int64_t k = 0; k < m; ++k) {
          const int64_t i = at(s, p, k);
          ASSERT_EQ(got.y[i], pr.bias[p]) << k;
          ASSERT_EQ(got.y_relu[i], relu(pr.bias[p])) << k;
          ASSERT_EQ(got.dx[i], T(0)) << k;
          ASSERT_EQ(got.dx_relu[i], T(0)) << k;
        }
        for (const T v2 : got.y) ASSERT_TRUE(std::isfinite(v2));
        for (const T v2 : got.dx) ASSERT_TRUE(std::isfinite(v2));
      }
    }
  }
}

TEST(EpsZero, ConstantChannelGivesBiasFloat) { expect_eps_zero_constant_channel<float>(); }
TEST(EpsZero, ConstantChannelGivesBiasDouble) { expect_eps_zero_constant_channel<double>(); }

TEST(EpsZero, ReferenceConstantChannelGivesBias) {
  for (const bool last : {false, true}) {
    const Shape s{4, 3, 5, last};
    RandomProblem<double> pr(s, 18, kSpec);
    for (int64_t k = 0; k < s.n * s.spatial; ++k) pr.x[at(s, 1, k)] = 5.0;
    std::vector<double> y(pr.x.size()), mean(s.c), var(s.c), dx(pr.x.size()), dw(s.c), db(s.c);
    reference::batch_norm_forward_training(s.geometry(), pr.x.data(), y.data(), pr.weight.data(),
                                           pr.bias.data(), 0.0, mean.data(), var.data());
    reference::batch_norm_backward(s.geometry(), pr.x.data(), pr.dy.data(), pr.weight.data(),
                                   0.0, dx.data(), dw.data(), db.data());
    EXPECT_EQ(var[1], 0.0);
    EXPECT_EQ(dw[1], 0.0);
    for (int64_t k = 0; k < s.n * s.spatial; ++k) {
      EXPECT_EQ(y[at(s, 1, k)], pr.bias[1]);
      EXPECT_EQ(dx[at(s, 1, k)], 0.0);
    }
  }
}

// Inference keeps 1 / sqrt(running_var + eps), as PyTorch's eval: running_var 0 with
// eps 0 is a division by zero there (y NaN where x == running_mean, else +-Inf).
TEST(EpsZero, InferenceWithZeroRunningVarDividesByZero) {
  const Shape s{2, 2, 3, false};
  RandomProblem<float> pr(s, 19, kSpec);
  pr.running_var[0] = 0;
  for (int64_t k = 0; k < 6; ++k) pr.x[at(s, 0, k)] = pr.running_mean[0];
  std::vector<float> y(pr.x.size());
  ASSERT_EQ(bnorm_batch_norm_forward_inference_f32(s.layout(), s.n, s.c, s.spatial, pr.x.data(),
                                                   y.data(), pr.weight.data(), pr.bias.data(),
                                                   pr.running_mean.data(),
                                                   pr.running_var.data(), 0.0),
            BNORM_SUCCESS);
  for (int64_t k = 0; k < 6; ++k) EXPECT_TRUE(std::isnan(y[at(s, 0, k)]));
  for (int64_t k = 0; k < 6; ++k) EXPECT_TRUE(std::isfinite(y[at(s, 1, k)]));
}

}  // namespace
}  // namespace bnorm::test
