// Group norm and instance norm (src/norm/group_norm.h) against the scalar references
// (src/reference/group_norm_reference.h): both layouts, odd shapes, groups 1, C and in
// between, every optional output skipped, in place, float32 and float64, any thread
// count bit for bit, large means, and every bad argument refused before any write.
#include <bnorm/bnorm.h>
#include <bnorm/bnorm.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <cstring>
#include <vector>

#include "kernels/policy.h"
#include "norm/group_norm.h"
#include "reference/group_norm_reference.h"
#include "test_support.h"

namespace {

using bnorm::norm::Problem;
namespace ref = bnorm::reference;

struct Case {
  int64_t n, c, spatial, groups;
  bool channels_last;
};

Problem problem_of(const Case& k) {
  return Problem{k.channels_last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST, k.n, k.c,
                 k.spatial};
}
ref::Geometry geometry_of(const Case& k) { return ref::Geometry{k.n, k.c, k.spatial, k.channels_last}; }

std::vector<Case> cases() {
  std::vector<Case> out;
  const int64_t shapes[][3] = {{1, 2, 3},  {2, 6, 5},    {3, 4, 1},   {2, 16, 17},  {5, 15, 33},
                               {4, 32, 49}, {2, 12, 9000}, {1, 300, 7}, {8, 64, 16}, {3, 6, 1}};
  for (const auto& s : shapes)
    for (int64_t groups : {int64_t{1}, s[1], s[1] % 3 == 0 ? s[1] / 3 : int64_t{2}})
      for (bool cl : {false, true}) {
        if (s[1] % groups != 0 || (s[1] / groups) * s[2] == 1) continue;
        out.push_back(Case{s[0], s[1], s[2], groups, cl});
      }
  return out;
}

template <class T>
double tolerance() {
  return sizeof(T) == 4 ? 2e-6 : 1e-12;
}

// y within y_tolerance norm-wise of the reference (the 1e-6 for float32 at large
// means; a little looser on tiny groups, where one rounding is a larger share).
template <class T>
void check_forward_backward(const Case& k, double offset, double y_tolerance = tolerance<T>()) {
  SCOPED_TRACE(::testing::Message() << "(" << k.n << ", " << k.c << ", " << k.spatial
                                    << ") groups " << k.groups << (k.channels_last ? " cl" : " cf")
                                    << " offset " << offset << " " << sizeof(T) * 8 << "-bit");
  const ref::Geometry rg = geometry_of(k);
  const int64_t count = rg.size(), ng = k.n * k.groups;
  const auto x = bnorm::test::random_values<T>(count, 7, offset);
  const auto dy = bnorm::test::random_values<T>(count, 8);
  const auto w = bnorm::test::random_values<T>(k.c, 9, 1.0);
  const auto b = bnorm::test::random_values<T>(k.c, 10);

  std::vector<T> y(count), mean(ng), rstd(ng), y_ref(count), mean_ref(ng), rstd_ref(ng);
  bnorm::norm::group_norm_forward<T>("test", problem_of(k), k.groups, x.data(), y.data(),
                                     w.data(), b.data(), 1e-5, mean.data(), rstd.data());
  ref::group_norm_forward<T>(rg, k.groups, x.data(), y_ref.data(), w.data(), b.data(), 1e-5,
                             mean_ref.data(), rstd_ref.data());
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(y), bnorm::test::to_double(y_ref)),
            y_tolerance);
  EXPECT_LT(bnorm::test::max_relative_error(rstd, bnorm::test::to_double(rstd_ref)), tolerance<T>());
  // The mean to within the tolerance of its group's scale: |mean| + std.
  for (int64_t i = 0; i < ng; ++i)
    EXPECT_NEAR(static_cast<double>(mean[i]), static_cast<double>(mean_ref[i]),
                (std::abs(static_cast<double>(mean_ref[i])) + 1 / static_cast<double>(rstd_ref[i])) *
                    tolerance<T>());

  std::vector<T> dx(count), dw(k.c), db(k.c), dx_ref(count), dw_ref(k.c), db_ref(k.c);
  bnorm::norm::group_norm_backward<T>("test", problem_of(k), k.groups, x.data(), dy.data(),
                                      dx.data(), w.data(), mean.data(), rstd.data(), dw.data(),
                                      db.data());
  ref::group_norm_backward<T>(rg, k.groups, x.data(), dy.data(), w.data(), 1e-5, dx_ref.data(),
                              dw_ref.data(), db_ref.data());
  // dx from the saved (rounded) rstd, as ATen: float32 within a few e-6 of the exact one,
  // norm-wise, relative to dx or, where dx cancels to nearly 0 (a group of two values has
  // dx = 0 exactly), to the size of its terms, |w * dy| * rstd.
  const double grad_tol = sizeof(T) == 4 ? 2e-5 : 1e-9;
  double err = 0, dx_norm = 0, terms = 0, rstd_max = 0;
  for (int64_t i = 0; i < ng; ++i) rstd_max = std::max(rstd_max, static_cast<double>(rstd_ref[i]));
  for (int64_t i = 0; i < count; ++i) {
    const double e = static_cast<double>(dx[i]) - static_cast<double>(dx_ref[i]);
    err += e * e;
    dx_norm += static_cast<double>(dx_ref[i]) * static_cast<double>(dx_ref[i]);
    const double t = static_cast<double>(dy[i]) * rstd_max *
                     static_cast<double>(w[rg.channels_last ? i % k.c : i / k.spatial % k.c]);
    terms += t * t;
  }
  EXPECT_LT(std::sqrt(err / std::max(dx_norm, 1e-6 * terms)), grad_tol);
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(dw), bnorm::test::to_double(dw_ref)),
            grad_tol);
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(db), bnorm::test::to_double(db_ref)),
            grad_tol);

  // Each output alone gives the same bits; in place (dx = dy, y = x) too.
  std::vector<T> dx2(count, T(7)), dw2(k.c, T(7)), db2(k.c, T(7));
  bnorm::norm::group_norm_backward<T>("test", problem_of(k), k.groups, x.data(), dy.data(),
                                      dx2.data(), w.data(), mean.data(), rstd.data(), nullptr,
                                      nullptr);
  bnorm::norm::group_norm_backward<T>("test", problem_of(k), k.groups, x.data(), dy.data(),
                                      nullptr, w.data(), mean.data(), rstd.data(), dw2.data(),
                                      nullptr);
  bnorm::norm::group_norm_backward<T>("test", problem_of(k), k.groups, x.data(), dy.data(),
                                      nullptr, w.data(), mean.data(), rstd.data(), nullptr,
                                      db2.data());
  EXPECT_EQ(dx2, dx);
  EXPECT_EQ(dw2, dw);
  EXPECT_EQ(db2, db);
  std::vector<T> inplace = dy;
  bnorm::norm::group_norm_backward<T>("test", problem_of(k), k.groups, x.data(), inplace.data(),
                                      inplace.data(), w.data(), mean.data(), rstd.data(),
                                      nullptr, nullptr);
  EXPECT_EQ(inplace, dx);
  inplace = x;
  bnorm::norm::group_norm_forward<T>("test", problem_of(k), k.groups, inplace.data(),
                                     inplace.data(), w.data(), b.data(), 1e-5, nullptr, nullptr);
  EXPECT_EQ(inplace, y);
}

TEST(GroupNorm, MatchesReferenceBothLayoutsEveryGroupingFloat64) {
  for (const Case& k : cases()) check_forward_backward<double>(k, 0.0);
}

TEST(GroupNorm, MatchesReferenceBothLayoutsEveryGroupingFloat32) {
  for (const Case& k : cases()) check_forward_backward<float>(k, 0.0);
}

TEST(GroupNorm, Float32KeepsItsDigitsAtLargeMeans) {
  // |mean| up to 1e6 x std: the output stays within 1e-6 norm-wise of the exact one.
  for (double offset : {2000.0, 1e4, 1e6})
    for (bool cl : {false, true}) {
      check_forward_backward<float>(Case{4, 8, 49, 4, cl}, offset, 1e-6);
      check_forward_backward<float>(Case{2, 64, 300, 64, cl}, offset, 1e-6);  // instance norm
    }
}

TEST(GroupNorm, LayoutsGiveTheSameValuesTransposed) {
  // The same (n, c, s) values in both layouts normalize to the same values, bit for bit
  // where the walks coincide and within rounding elsewhere.
  const int64_t n = 3, c = 8, s = 20, groups = 4;
  const auto xcf = bnorm::test::random_values<double>(n * c * s, 3, 5.0);
  std::vector<double> xcl(xcf.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t k = 0; k < s; ++k) xcl[(i * s + k) * c + ch] = xcf[(i * c + ch) * s + k];
  std::vector<double> ycf(xcf.size()), ycl(xcf.size());
  bnorm::norm::group_norm_forward<double>("test", Problem{BNORM_CHANNELS_FIRST, n, c, s}, groups,
                                          xcf.data(), ycf.data(), nullptr, nullptr, 1e-5,
                                          nullptr, nullptr);
  bnorm::norm::group_norm_forward<double>("test", Problem{BNORM_CHANNELS_LAST, n, c, s}, groups,
                                          xcl.data(), ycl.data(), nullptr, nullptr, 1e-5, nullptr,
                                          nullptr);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t k = 0; k < s; ++k)
        EXPECT_NEAR(ycl[(i * s + k) * c + ch], ycf[(i * c + ch) * s + k], 1e-13);
}

template <class T>
void expect_thread_invariant(const Case& k) {
  SCOPED_TRACE(::testing::Message() << "(" << k.n << ", " << k.c << ", " << k.spatial
                                    << ") groups " << k.groups << (k.channels_last ? " cl" : " cf"));
  const int64_t count = k.n * k.c * k.spatial, ng = k.n * k.groups;
  const auto x = bnorm::test::random_values<T>(count, 11, 3.0);
  const auto dy = bnorm::test::random_values<T>(count, 12);
  const auto w = bnorm::test::random_values<T>(k.c, 13, 1.0);
  std::vector<std::vector<T>> results;
  // Budget 0 turns the fused passes (channels-first groups, channels-last samples) off:
  // they must give the separate passes' bits.
  for (int64_t budget : {int64_t{-1}, int64_t{0}})
  for (int threads : {1, 2, 3}) {
    bnorm_set_num_threads(threads);
    bnorm::kernels::override_fused_slice_budget(budget);
    std::vector<T> y(count), mean(ng), rstd(ng), dx(count), dw(k.c), db(k.c);
    bnorm::norm::group_norm_forward<T>("test", problem_of(k), k.groups, x.data(), y.data(),
                                       w.data(), nullptr, 1e-5, mean.data(), rstd.data());
    bnorm::norm::group_norm_backward<T>("test", problem_of(k), k.groups, x.data(), dy.data(),
                                        dx.data(), w.data(), mean.data(), rstd.data(),
                                        dw.data(), db.data());
    std::vector<T> all = y;
    for (const auto* v : {&mean, &rstd, &dx, &dw, &db}) all.insert(all.end(), v->begin(), v->end());
    results.push_back(all);
  }
  bnorm_set_num_threads(0);
  bnorm::kernels::override_fused_slice_budget(-1);
  for (size_t i = 1; i < results.size(); ++i) EXPECT_EQ(results[0], results[i]) << "run " << i;
}

TEST(GroupNorm, BitwiseIdenticalForAnyThreadCountFusedOrNot) {
  // Large enough to run on several threads (2^19 values and more), fused and separate
  // passes (few groups; and the budget turned off), both layouts.
  for (bool cl : {false, true}) {
    expect_thread_invariant<float>(Case{32, 64, 300, 32, cl});
    expect_thread_invariant<float>(Case{1, 4, 150000, 2, cl});
    expect_thread_invariant<double>(Case{16, 64, 600, 64, cl});
  }
}

TEST(InstanceNorm, TrainingMatchesReferenceWithRunningStatistics) {
  for (bool cl : {false, true})
    for (const auto& s : {std::array<int64_t, 3>{2, 3, 5}, std::array<int64_t, 3>{4, 16, 49},
                          std::array<int64_t, 3>{1, 7, 2}}) {
      const ref::Geometry rg{s[0], s[1], s[2], cl};
      const auto x = bnorm::test::random_values<double>(rg.size(), 21, 2.0);
      const auto w = bnorm::test::random_values<double>(s[1], 22, 1.0);
      const auto b = bnorm::test::random_values<double>(s[1], 23);
      std::vector<double> y(rg.size()), y_ref(rg.size()), rm(s[1], 0.5), rv(s[1], 2.0);
      std::vector<double> rm_ref = rm, rv_ref = rv;
      bnorm::norm::instance_norm_forward_training<double>(
          "test", Problem{cl ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST, s[0], s[1], s[2]},
          x.data(), y.data(), w.data(), b.data(), 1e-5, 0.1, rm.data(), rv.data(), nullptr,
          nullptr);
      ref::instance_norm_forward_training<double>(rg, x.data(), y_ref.data(), w.data(), b.data(),
                                                  1e-5, nullptr, nullptr);
      ref::instance_norm_update_running_stats<double>(rg, x.data(), 0.1, rm_ref.data(),
                                                      rv_ref.data());
      EXPECT_LT(bnorm::test::norm_relative_error(y, y_ref), 1e-12);
      EXPECT_LT(bnorm::test::max_relative_error(rm, rm_ref), 1e-12);
      EXPECT_LT(bnorm::test::max_relative_error(rv, rv_ref), 1e-12);
    }
}


TEST(GroupNorm, BadArgumentsAreRefusedAndNothingIsWritten) {
  const Problem p{BNORM_CHANNELS_FIRST, 2, 6, 5};
  std::vector<float> x(60, 1.5f), y(60, 9.0f), mean(4, 9.0f), rstd(4, 9.0f);
  const std::vector<float> untouched(60, 9.0f);
  auto forward = [&](const Problem& q, int64_t groups, double eps, float* out) {
    bnorm::norm::group_norm_forward<float>("group_norm", q, groups, x.data(), out, nullptr,
                                           nullptr, eps, mean.data(), rstd.data());
  };
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "groups must divide", [&] { forward(p, 4, 1e-5, y.data()); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "groups must be >= 1", [&] { forward(p, 0, 1e-5, y.data()); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "eps", [&] { forward(p, 2, 0.0, y.data()); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "eps", [&] { forward(p, 2, -1.0, y.data()); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "eps", [&] { forward(p, 2, NAN, y.data()); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_NULL_POINTER, "y", [&] { forward(p, 2, 1e-5, nullptr); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_SHAPE, "n must be >= 1",
                 [&] { forward(Problem{BNORM_CHANNELS_FIRST, 0, 6, 5}, 2, 1e-5, y.data()); });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_TOO_FEW_VALUES, "1 value per group",
                 [&] { forward(Problem{BNORM_CHANNELS_FIRST, 2, 6, 1}, 6, 1e-5, y.data()); });
  // save_mean overlapping y.
  bnorm::test::expect_bnorm_error(BNORM_ERROR_OVERLAP, "save_mean", [&] {
    bnorm::norm::group_norm_forward<float>("group_norm", p, 2, x.data(), y.data(), nullptr,
                                           nullptr, 1e-5, y.data() + 10, nullptr);
  });
  EXPECT_EQ(y, untouched);
  bnorm::test::expect_bnorm_error(BNORM_ERROR_NULL_POINTER, "save_rstd", [&] {
    bnorm::norm::group_norm_backward<float>("group_norm", p, 2, x.data(), x.data(), y.data(),
                                            nullptr, mean.data(), nullptr, nullptr, nullptr);
  });
  EXPECT_EQ(y, untouched);
  bnorm::test::expect_bnorm_error(BNORM_ERROR_TOO_FEW_VALUES, "spatial element", [&] {
    bnorm::norm::instance_norm_forward_training<float>(
        "instance_norm", Problem{BNORM_CHANNELS_FIRST, 4, 3, 1}, x.data(), y.data(), nullptr,
        nullptr, 1e-5, 0.1, nullptr, nullptr, nullptr, nullptr);
  });
  bnorm::test::expect_bnorm_error(BNORM_ERROR_INVALID_VALUE, "momentum", [&] {
    bnorm::norm::instance_norm_forward_training<float>(
        "instance_norm", p, x.data(), y.data(), nullptr, nullptr, 1e-5, 1.5, nullptr, nullptr,
        nullptr, nullptr);
  });
  EXPECT_EQ(y, untouched);
}

TEST(GroupNorm, NanInAGroupReachesOnlyThatGroup) {
  const Problem p{BNORM_CHANNELS_FIRST, 2, 4, 3};
  std::vector<double> x = bnorm::test::random_values<double>(24, 5), y(24);
  x[1] = NAN;  // sample 0, group 0 (channels 0-1)
  bnorm::norm::group_norm_forward<double>("test", p, 2, x.data(), y.data(), nullptr, nullptr,
                                          1e-5, nullptr, nullptr);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(std::isnan(y[i]), i < 6) << i;
}

}  // namespace
