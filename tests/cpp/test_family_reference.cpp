// The normalization family's oracles checked on their own: every gradient by central
// differences in float64, every optional gradient skipped, and the identities that tie the
// family together (layouts, InstanceNorm = GroupNorm(G = C), GroupNorm = LayerNorm on a
// view, RMSNorm = LayerNorm on zero-mean rows, float = double rounded). Known values and
// PyTorch's own numbers are in test_family_reference_values.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "reference/group_norm_reference.h"
#include "reference/layer_norm_reference.h"
#include "test_support.h"

namespace bnorm {
namespace {

using reference::Geometry;
using Vec = std::vector<double>;

// What a gradient check perturbs; an empty weight or bias is absent (nullptr).
struct Params {
  Vec x, weight, bias;
};
const double* ptr(const Vec& v) { return v.empty() ? nullptr : v.data(); }
double* ptr(Vec& v) { return v.empty() ? nullptr : v.data(); }

using Forward = std::function<Vec(const Params&)>;
// dx, dweight, dbias may each be nullptr (skipped).
using Backward = std::function<void(const Params&, const Vec& dy, double* dx, double* dweight,
                                    double* dbias)>;

// Central differences of L = sum(y * r), r random, against backward(dy = r) for every
// coordinate of x, weight and bias (those present), relative to the gradient's largest entry.
void check_gradients(const Forward& forward, const Backward& backward, Params p, uint32_t seed) {
  const Vec r = test::random_values<double>(static_cast<int64_t>(forward(p).size()), seed);
  const auto loss = [&] {
    const Vec y = forward(p);
    long double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * r[i];
    return static_cast<double>(l);
  };
  Vec dx(p.x.size()), dweight(p.weight.size()), dbias(p.bias.size());
  backward(p, r, dx.data(), ptr(dweight), ptr(dbias));
  const double h = 1e-5;
  const auto compare = [&](Vec& v, const Vec& analytic, const char* name) {
    Vec numeric(v.size());
    double scale = 1;
    for (size_t i = 0; i < v.size(); ++i) {
      const double saved = v[i];
      v[i] = saved + h;
      const double up = loss();
      v[i] = saved - h;
      const double down = loss();
      v[i] = saved;
      numeric[i] = (up - down) / (2 * h);
      scale = std::max(scale, std::abs(numeric[i]));
    }
    for (size_t i = 0; i < v.size(); ++i)
      EXPECT_NEAR(analytic[i], numeric[i], 1e-6 * scale) << name << "[" << i << "]";
  };
  compare(p.x, dx, "dx");
  compare(p.weight, dweight, "dweight");
  compare(p.bias, dbias, "dbias");
}

// Every subset of {dx, dweight, dbias} requested: the requested ones equal, bit for bit,
// the run that requested all three (a skipped gradient changes nothing else).
void check_optional_gradients(const Backward& backward, const Params& p, int64_t channels,
                              bool has_dbias, uint32_t seed) {
  const Vec dy = test::random_values<double>(static_cast<int64_t>(p.x.size()), seed);
  Vec dx(p.x.size()), dweight(channels), dbias(channels);
  backward(p, dy, dx.data(), dweight.data(), has_dbias ? dbias.data() : nullptr);
  for (int mask = 0; mask < 8; ++mask) {
    if (!has_dbias && (mask & 4)) continue;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    Vec sx(dx.size(), nan), sw(dweight.size(), nan), sb(dbias.size(), nan);
    backward(p, dy, (mask & 1) ? sx.data() : nullptr, (mask & 2) ? sw.data() : nullptr,
             (mask & 4) ? sb.data() : nullptr);
    SCOPED_TRACE("mask " + std::to_string(mask));
    if (mask & 1) {
      EXPECT_TRUE(test::bitwise_equal(sx, dx)) << "dx";
    }
    if (mask & 2) {
      EXPECT_TRUE(test::bitwise_equal(sw, dweight)) << "dweight";
    }
    if (mask & 4) {
      EXPECT_TRUE(test::bitwise_equal(sb, dbias)) << "dbias";
    }
  }
}

// Which of weight and bias a case has: none (affine=False), weight only (bias=False), both.
enum class Affine { none, weight, both };
const char* affine_name(Affine a) {
  return a == Affine::none ? "none" : a == Affine::weight ? "weight" : "both";
}
Params random_params(int64_t size, int64_t channels, Affine affine, uint32_t seed) {
  Params p{test::random_values<double>(size, seed, 0.5, 2.0), {}, {}};
  if (affine != Affine::none) p.weight = test::random_values<double>(channels, seed + 1, 1.0, 0.5);
  if (affine == Affine::both) p.bias = test::random_values<double>(channels, seed + 2);
  return p;
}

constexpr double kEps = 1e-3;

// ---- LayerNorm and RMSNorm: (rows, cols) --------------------------------------------

struct RowCase {
  int64_t rows, cols;
  Affine affine;
};
std::string row_case_name(const ::testing::TestParamInfo<RowCase>& info) {
  return std::to_string(info.param.rows) + "x" + std::to_string(info.param.cols) + "_" +
         affine_name(info.param.affine);
}

class RowReferenceGradient : public ::testing::TestWithParam<RowCase> {};

TEST_P(RowReferenceGradient, LayerNormMatchesFiniteDifferences) {
  const RowCase c = GetParam();
  const Forward forward = [&](const Params& p) {
    Vec y(p.x.size());
    reference::layer_norm_forward(c.rows, c.cols, p.x.data(), y.data(), ptr(p.weight),
                                  ptr(p.bias), kEps, (double*)nullptr, (double*)nullptr);
    return y;
  };
  const Backward backward = [&](const Params& p, const Vec& dy, double* dx, double* dw,
                                double* db) {
    reference::layer_norm_backward(c.rows, c.cols, p.x.data(), dy.data(), ptr(p.weight), kEps,
                                   dx, dw, db);
  };
  const Params p = random_params(c.rows * c.cols, c.cols, c.affine, 100);
  check_gradients(forward, backward, p, 200);
  check_optional_gradients(backward, p, c.cols, true, 300);
}

TEST_P(RowReferenceGradient, RmsNormMatchesFiniteDifferences) {
  const RowCase c = GetParam();
  const Affine affine = c.affine == Affine::both ? Affine::weight : c.affine;  // no bias
  const Forward forward = [&](const Params& p) {
    Vec y(p.x.size());
    reference::rms_norm_forward(c.rows, c.cols, p.x.data(), y.data(), ptr(p.weight), kEps,
                                (double*)nullptr);
    return y;
  };
  const Backward backward = [&](const Params& p, const Vec& dy, double* dx, double* dw,
                                double*) {
    reference::rms_norm_backward(c.rows, c.cols, p.x.data(), dy.data(), ptr(p.weight), kEps, dx,
                                 dw);
  };
  const Params p = random_params(c.rows * c.cols, c.cols, affine, 110);
  check_gradients(forward, backward, p, 210);
  check_optional_gradients(backward, p, c.cols, false, 310);
}

INSTANTIATE_TEST_SUITE_P(
    OddShapes, RowReferenceGradient,
    ::testing::Values(RowCase{1, 1, Affine::both}, RowCase{2, 1, Affine::weight},
                      RowCase{1, 2, Affine::both}, RowCase{3, 2, Affine::none},
                      RowCase{2, 3, Affine::both}, RowCase{5, 3, Affine::weight},
                      RowCase{3, 5, Affine::none}, RowCase{3, 5, Affine::both},
                      RowCase{2, 17, Affine::weight}, RowCase{17, 2, Affine::both}),
    row_case_name);

// ---- GroupNorm and InstanceNorm: (N, C, spatial), both layouts ------------------------

struct GroupCase {
  int64_t n, c, spatial, groups;
  bool channels_last;
  Affine affine;
  Geometry geometry() const { return {n, c, spatial, channels_last}; }
};
std::string group_case_name(const ::testing::TestParamInfo<GroupCase>& info) {
  const GroupCase& p = info.param;
  return test::Shape{p.n, p.c, p.spatial, p.channels_last}.name() + "_G" +
         std::to_string(p.groups) + "_" + affine_name(p.affine);
}

class GroupReferenceGradient : public ::testing::TestWithParam<GroupCase> {};

TEST_P(GroupReferenceGradient, GroupNormMatchesFiniteDifferences) {
  const GroupCase c = GetParam();
  const Geometry g = c.geometry();
  const Forward forward = [&](const Params& p) {
    Vec y(p.x.size());
    reference::group_norm_forward(g, c.groups, p.x.data(), y.data(), ptr(p.weight), ptr(p.bias),
                                  kEps, (double*)nullptr, (double*)nullptr);
    return y;
  };
  const Backward backward = [&](const Params& p, const Vec& dy, double* dx, double* dw,
                                double* db) {
    reference::group_norm_backward(g, c.groups, p.x.data(), dy.data(), ptr(p.weight), kEps, dx,
                                   dw, db);
  };
  const Params p = random_params(g.size(), c.c, c.affine, 120);
  check_gradients(forward, backward, p, 220);
  check_optional_gradients(backward, p, c.c, true, 320);
}

INSTANTIATE_TEST_SUITE_P(
    OddShapes, GroupReferenceGradient,
    ::testing::Values(GroupCase{2, 1, 1, 1, false, Affine::both},
                      GroupCase{1, 3, 2, 3, false, Affine::both},
                      GroupCase{1, 3, 2, 3, true, Affine::weight},
                      GroupCase{2, 6, 5, 1, false, Affine::both},
                      GroupCase{2, 6, 5, 3, false, Affine::both},
                      GroupCase{2, 6, 5, 3, true, Affine::both},
                      GroupCase{2, 6, 5, 6, true, Affine::none},
                      GroupCase{3, 5, 3, 5, false, Affine::both},
                      GroupCase{1, 4, 17, 2, true, Affine::weight},
                      GroupCase{5, 2, 3, 1, true, Affine::none}),
    group_case_name);

// InstanceNorm: groups == c in every case.
class InstanceReferenceGradient : public ::testing::TestWithParam<GroupCase> {};

TEST_P(InstanceReferenceGradient, TrainingMatchesFiniteDifferences) {
  const GroupCase c = GetParam();
  const Geometry g = c.geometry();
  const Forward forward = [&](const Params& p) {
    Vec y(p.x.size());
    reference::instance_norm_forward_training(g, p.x.data(), y.data(), ptr(p.weight),
                                              ptr(p.bias), kEps, (double*)nullptr,
                                              (double*)nullptr);
    return y;
  };
  const Backward backward = [&](const Params& p, const Vec& dy, double* dx, double* dw,
                                double* db) {
    reference::instance_norm_backward(g, p.x.data(), dy.data(), ptr(p.weight), kEps, dx, dw, db);
  };
  const Params p = random_params(g.size(), c.c, c.affine, 130);
  check_gradients(forward, backward, p, 230);
  check_optional_gradients(backward, p, c.c, true, 330);
}

TEST_P(InstanceReferenceGradient, InferenceMatchesFiniteDifferences) {
  const GroupCase c = GetParam();
  const Geometry g = c.geometry();
  const Vec running_mean = test::random_values<double>(c.c, 140);
  Vec running_var = test::random_values<double>(c.c, 141);
  for (double& v : running_var) v = 0.5 + v * v;
  const Forward forward = [&](const Params& p) {
    Vec y(p.x.size());
    reference::instance_norm_forward_inference(g, p.x.data(), y.data(), ptr(p.weight),
                                               ptr(p.bias), running_mean.data(),
                                               running_var.data(), kEps);
    return y;
  };
  const Backward backward = [&](const Params& p, const Vec& dy, double* dx, double* dw,
                                double* db) {
    reference::instance_norm_backward_inference(g, p.x.data(), dy.data(), ptr(p.weight),
                                                running_mean.data(), running_var.data(), kEps,
                                                dx, dw, db);
  };
  const Params p = random_params(g.size(), c.c, c.affine, 150);
  check_gradients(forward, backward, p, 250);
  check_optional_gradients(backward, p, c.c, true, 350);
}

INSTANTIATE_TEST_SUITE_P(
    OddShapes, InstanceReferenceGradient,
    ::testing::Values(GroupCase{1, 3, 2, 3, false, Affine::both},
                      GroupCase{1, 3, 2, 3, true, Affine::weight},
                      GroupCase{2, 6, 5, 6, true, Affine::none},
                      GroupCase{3, 5, 3, 5, false, Affine::both},
                      GroupCase{3, 5, 3, 5, true, Affine::both},
                      GroupCase{2, 1, 7, 1, false, Affine::both},
                      GroupCase{2, 17, 2, 17, true, Affine::both},
                      GroupCase{4, 2, 1, 2, true, Affine::both}),
    group_case_name);

// ---- Identities ---------------------------------------------------------------------

// Channels-last forward and backward are the channels-first ones transposed, bit for bit.
template <class T>
void check_layouts(int64_t n, int64_t c, int64_t spatial, int64_t groups) {
  const Geometry first{n, c, spatial, false}, last{n, c, spatial, true};
  const auto x = test::random_values<T>(first.size(), 400, 3.0, 2.0);
  const auto dy = test::random_values<T>(first.size(), 401);
  const auto w = test::random_values<T>(c, 402, 1.0, 0.5);
  const auto b = test::random_values<T>(c, 403);
  std::vector<T> x_last(x.size()), dy_last(x.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t s = 0; s < spatial; ++s) {
        x_last[last.index(i, ch, s)] = x[first.index(i, ch, s)];
        dy_last[last.index(i, ch, s)] = dy[first.index(i, ch, s)];
      }
  struct Out {
    std::vector<T> y, mean, rstd, dx, dw, db;
  };
  const auto run = [&](const Geometry& g, const std::vector<T>& xv, const std::vector<T>& dyv) {
    Out o{std::vector<T>(xv.size()), std::vector<T>(n * groups), std::vector<T>(n * groups),
          std::vector<T>(xv.size()), std::vector<T>(c), std::vector<T>(c)};
    reference::group_norm_forward(g, groups, xv.data(), o.y.data(), w.data(), b.data(), 1e-5,
                                  o.mean.data(), o.rstd.data());
    reference::group_norm_backward(g, groups, xv.data(), dyv.data(), w.data(), 1e-5, o.dx.data(),
                                   o.dw.data(), o.db.data());
    return o;
  };
  const Out a = run(first, x, dy), l = run(last, x_last, dy_last);
  std::vector<T> y_back(x.size()), dx_back(x.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t s = 0; s < spatial; ++s) {
        y_back[first.index(i, ch, s)] = l.y[last.index(i, ch, s)];
        dx_back[first.index(i, ch, s)] = l.dx[last.index(i, ch, s)];
      }
  EXPECT_TRUE(test::bitwise_equal(y_back, a.y));
  EXPECT_TRUE(test::bitwise_equal(l.mean, a.mean));
  EXPECT_TRUE(test::bitwise_equal(l.rstd, a.rstd));
  EXPECT_TRUE(test::bitwise_equal(dx_back, a.dx));
  EXPECT_TRUE(test::bitwise_equal(l.dw, a.dw));
  EXPECT_TRUE(test::bitwise_equal(l.db, a.db));
}

TEST(GroupNormReference, ChannelsLastIsChannelsFirstTransposedExactly) {
  for (int64_t groups : {1, 2, 3, 6}) {
    SCOPED_TRACE(groups);
    check_layouts<double>(3, 6, 7, groups);
    check_layouts<float>(3, 6, 7, groups);
  }
  check_layouts<float>(2, 17, 5, 17);
  check_layouts<double>(1, 5, 1, 5);
}

TEST(InstanceNormReference, IsGroupNormWithOneChannelPerGroup) {
  for (bool channels_last : {false, true}) {
    const Geometry g{3, 5, 4, channels_last};
    const auto x = test::random_values<float>(g.size(), 410, -2.0, 3.0);
    const auto dy = test::random_values<float>(g.size(), 411);
    const auto w = test::random_values<float>(g.c, 412, 1.0, 0.5);
    const auto b = test::random_values<float>(g.c, 413);
    std::vector<float> y1(x.size()), y2(x.size()), m1(g.n * g.c), m2(m1.size()), r1(m1.size()),
        r2(m1.size()), dx1(x.size()), dx2(x.size()), dw1(g.c), dw2(g.c), db1(g.c), db2(g.c);
    reference::instance_norm_forward_training(g, x.data(), y1.data(), w.data(), b.data(), 1e-5,
                                              m1.data(), r1.data());
    reference::group_norm_forward(g, g.c, x.data(), y2.data(), w.data(), b.data(), 1e-5, m2.data(),
                                  r2.data());
    reference::instance_norm_backward(g, x.data(), dy.data(), w.data(), 1e-5, dx1.data(),
                                      dw1.data(), db1.data());
    reference::group_norm_backward(g, g.c, x.data(), dy.data(), w.data(), 1e-5, dx2.data(),
                                   dw2.data(), db2.data());
    EXPECT_TRUE(test::bitwise_equal(y1, y2));
    EXPECT_TRUE(test::bitwise_equal(m1, m2));
    EXPECT_TRUE(test::bitwise_equal(r1, r2));
    EXPECT_TRUE(test::bitwise_equal(dx1, dx2));
    EXPECT_TRUE(test::bitwise_equal(dw1, dw2));
    EXPECT_TRUE(test::bitwise_equal(db1, db2));
  }
}

// GroupNorm with G = 1 on channels-first (N, C, S) is LayerNorm over (rows N, cols C * S)
// with the per-channel weight repeated over S (LayerNorm's weight is per element); the
// per-channel dweight / dbias are the per-element ones summed over S.
TEST(GroupNormReference, OneGroupIsLayerNormWithTheWeightRepeatedOverSpatial) {
  const int64_t n = 3, c = 5, s = 7;
  const Geometry g{n, c, s, false};
  const auto x = test::random_values<double>(g.size(), 420, 1.0, 2.0);
  const auto dy = test::random_values<double>(g.size(), 421);
  const auto w = test::random_values<double>(c, 422, 1.0, 0.5);
  const auto b = test::random_values<double>(c, 423);
  Vec w_ln(c * s), b_ln(c * s);
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t k = 0; k < s; ++k) {
      w_ln[ch * s + k] = w[ch];
      b_ln[ch * s + k] = b[ch];
    }
  Vec y_gn(x.size()), y_ln(x.size()), mean_gn(n), mean_ln(n), rstd_gn(n), rstd_ln(n);
  reference::group_norm_forward(g, 1, x.data(), y_gn.data(), w.data(), b.data(), 1e-5,
                                mean_gn.data(), rstd_gn.data());
  reference::layer_norm_forward(n, c * s, x.data(), y_ln.data(), w_ln.data(), b_ln.data(), 1e-5,
                                mean_ln.data(), rstd_ln.data());
  EXPECT_LE(test::max_relative_error(y_gn, y_ln), 1e-15);
  EXPECT_LE(test::max_relative_error(mean_gn, mean_ln), 1e-15);
  EXPECT_LE(test::max_relative_error(rstd_gn, rstd_ln), 1e-15);

  Vec dx_gn(x.size()), dx_ln(x.size()), dw_gn(c), db_gn(c), dw_ln(c * s), db_ln(c * s);
  reference::group_norm_backward(g, 1, x.data(), dy.data(), w.data(), 1e-5, dx_gn.data(),
                                 dw_gn.data(), db_gn.data());
  reference::layer_norm_backward(n, c * s, x.data(), dy.data(), w_ln.data(), 1e-5, dx_ln.data(),
                                 dw_ln.data(), db_ln.data());
  EXPECT_LE(test::max_relative_error(dx_gn, dx_ln), 1e-14);
  Vec dw_summed(c, 0.0), db_summed(c, 0.0);
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t k = 0; k < s; ++k) {
      dw_summed[ch] += dw_ln[ch * s + k];
      db_summed[ch] += db_ln[ch * s + k];
    }
  EXPECT_LE(test::max_relative_error(dw_gn, dw_summed), 1e-14);
  EXPECT_LE(test::max_relative_error(db_gn, db_summed), 1e-14);
}

// Without affine, GroupNorm on channels-first (N, C, S) is LayerNorm on the view
// (rows N * G, cols C / G * S): each group is a contiguous row.
TEST(GroupNormReference, GroupsAreLayerNormRowsOfTheChannelsFirstView) {
  const int64_t n = 2, c = 6, s = 5, groups = 3;
  const Geometry g{n, c, s, false};
  const auto x = test::random_values<double>(g.size(), 430, -4.0, 3.0);
  const auto dy = test::random_values<double>(g.size(), 431);
  Vec y_gn(x.size()), y_ln(x.size()), dx_gn(x.size()), dx_ln(x.size());
  reference::group_norm_forward(g, groups, x.data(), y_gn.data(), (const double*)nullptr,
                                (const double*)nullptr, 1e-5, (double*)nullptr, (double*)nullptr);
  reference::layer_norm_forward(n * groups, c / groups * s, x.data(), y_ln.data(),
                                (const double*)nullptr, (const double*)nullptr, 1e-5,
                                (double*)nullptr, (double*)nullptr);
  reference::group_norm_backward(g, groups, x.data(), dy.data(), (const double*)nullptr, 1e-5,
                                 dx_gn.data(), (double*)nullptr, (double*)nullptr);
  reference::layer_norm_backward(n * groups, c / groups * s, x.data(), dy.data(),
                                 (const double*)nullptr, 1e-5, dx_ln.data(), (double*)nullptr,
                                 (double*)nullptr);
  EXPECT_LE(test::max_relative_error(y_gn, y_ln), 1e-15);
  EXPECT_LE(test::max_relative_error(dx_gn, dx_ln), 1e-15);
}

// On rows whose mean is exactly 0, mean(x^2) is the biased variance, so RMSNorm's forward
// and dweight equal LayerNorm's without bias. Their dx differ by exactly the mean term
// LayerNorm has and RMSNorm lacks: dx_ln = dx_rms - rstd * mean(dy * weight).
TEST(RmsNormReference, ZeroMeanRowsMatchLayerNormWithoutBias) {
  const int64_t rows = 4, cols = 6;
  Vec x(rows * cols);
  const auto half = test::random_values<double>(rows * cols / 2, 440, 0.0, 2.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols / 2; ++j) {  // +-a pairs: the row sums to 0 exactly
      x[r * cols + 2 * j] = half[r * cols / 2 + j];
      x[r * cols + 2 * j + 1] = -half[r * cols / 2 + j];
    }
  const auto w = test::random_values<double>(cols, 441, 1.0, 0.5);
  const auto dy = test::random_values<double>(rows * cols, 442);
  Vec y_ln(x.size()), y_rms(x.size()), mean(rows), rstd_ln(rows), rstd_rms(rows);
  reference::layer_norm_forward(rows, cols, x.data(), y_ln.data(), w.data(),
                                (const double*)nullptr, 1e-5, mean.data(), rstd_ln.data());
  reference::rms_norm_forward(rows, cols, x.data(), y_rms.data(), w.data(), 1e-5,
                              rstd_rms.data());
  for (double m : mean) EXPECT_EQ(m, 0.0);
  EXPECT_LE(test::max_relative_error(y_rms, y_ln), 1e-15);
  EXPECT_LE(test::max_relative_error(rstd_rms, rstd_ln), 1e-15);

  Vec dx_ln(x.size()), dx_rms(x.size()), dw_ln(cols), dw_rms(cols);
  reference::layer_norm_backward(rows, cols, x.data(), dy.data(), w.data(), 1e-5, dx_ln.data(),
                                 dw_ln.data(), (double*)nullptr);
  reference::rms_norm_backward(rows, cols, x.data(), dy.data(), w.data(), 1e-5, dx_rms.data(),
                               dw_rms.data());
  EXPECT_LE(test::max_relative_error(dw_rms, dw_ln), 1e-15);
  Vec dx_expected(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mean_g = 0;
    for (int64_t j = 0; j < cols; ++j) mean_g += dy[r * cols + j] * w[j] / cols;
    for (int64_t j = 0; j < cols; ++j)
      dx_expected[r * cols + j] = dx_rms[r * cols + j] - rstd_rms[r] * mean_g;
  }
  EXPECT_LE(test::max_relative_error(dx_ln, dx_expected), 1e-14);
}

}  // namespace
}  // namespace bnorm
