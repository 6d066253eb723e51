// The C API of layer norm and RMS norm: the reference's results through the C entry
// points, and statuses and messages that name the function and the argument.
#include <bnorm/bnorm.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <string>
#include <vector>

#include "reference/layer_norm_reference.h"
#include "test_support.h"

namespace {

namespace ref = bnorm::reference;

TEST(LayerNormCApi, MatchesTheReferenceAndRefusesBadArguments) {
  const int64_t rows = 5, cols = 33;
  const auto x = bnorm::test::random_values<double>(rows * cols, 1, 3.0);
  const auto dy = bnorm::test::random_values<double>(rows * cols, 2);
  const auto w = bnorm::test::random_values<double>(cols, 3, 1.0);
  const auto b = bnorm::test::random_values<double>(cols, 4);
  std::vector<double> y(rows * cols), mean(rows), rstd(rows), dx(rows * cols), dw(cols), db(cols);
  ASSERT_EQ(bnorm_layer_norm_forward_f64(rows, cols, x.data(), y.data(), w.data(), b.data(), 1e-5,
                                         mean.data(), rstd.data()),
            BNORM_SUCCESS);
  ASSERT_EQ(bnorm_layer_norm_backward_f64(rows, cols, x.data(), dy.data(), dx.data(), w.data(),
                                          mean.data(), rstd.data(), dw.data(), db.data()),
            BNORM_SUCCESS);
  std::vector<double> y_ref(rows * cols), dx_ref(rows * cols), dw_ref(cols), db_ref(cols);
  ref::layer_norm_forward<double>(rows, cols, x.data(), y_ref.data(), w.data(), b.data(), 1e-5,
                                  nullptr, nullptr);
  ref::layer_norm_backward<double>(rows, cols, x.data(), dy.data(), w.data(), 1e-5,
                                   dx_ref.data(), dw_ref.data(), db_ref.data());
  EXPECT_LT(bnorm::test::norm_relative_error(y, y_ref), 1e-12);
  EXPECT_LT(bnorm::test::norm_relative_error(dx, dx_ref), 1e-10);
  EXPECT_LT(bnorm::test::norm_relative_error(dw, dw_ref), 1e-10);
  EXPECT_LT(bnorm::test::norm_relative_error(db, db_ref), 1e-10);

  const std::vector<double> before = y;
  EXPECT_EQ(bnorm_layer_norm_forward_f64(rows, cols, x.data(), y.data(), w.data(), b.data(), 0.0,
                                         nullptr, nullptr),
            BNORM_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(bnorm_last_error()).find("bnorm_layer_norm_forward_f64: eps"),
            std::string::npos)
      << bnorm_last_error();
  EXPECT_EQ(bnorm_layer_norm_forward_f64(0, cols, x.data(), y.data(), nullptr, nullptr, 1e-5,
                                         nullptr, nullptr),
            BNORM_ERROR_INVALID_SHAPE);
  EXPECT_NE(std::string(bnorm_last_error()).find("rows"), std::string::npos) << bnorm_last_error();
  EXPECT_EQ(bnorm_layer_norm_backward_f64(rows, cols, x.data(), dy.data(), y.data(), w.data(),
                                          mean.data(), nullptr, nullptr, nullptr),
            BNORM_ERROR_NULL_POINTER);
  EXPECT_NE(std::string(bnorm_last_error()).find("save_rstd"), std::string::npos)
      << bnorm_last_error();
  EXPECT_EQ(y, before);
}

TEST(RmsNormCApi, MatchesTheReferenceWithMachineEpsilon) {
  const int64_t rows = 4, cols = 17;
  const auto x = bnorm::test::random_values<float>(rows * cols, 5, 0.5);
  const auto dy = bnorm::test::random_values<float>(rows * cols, 6);
  const auto w = bnorm::test::random_values<float>(cols, 7, 1.0);
  std::vector<float> y(rows * cols), rstd(rows), dx(rows * cols), dw(cols);
  ASSERT_EQ(bnorm_rms_norm_forward_f32(rows, cols, x.data(), y.data(), w.data(), FLT_EPSILON,
                                       rstd.data()),
            BNORM_SUCCESS);
  ASSERT_EQ(bnorm_rms_norm_backward_f32(rows, cols, x.data(), dy.data(), dx.data(), w.data(),
                                        rstd.data(), dw.data()),
            BNORM_SUCCESS);
  std::vector<float> y_ref(rows * cols), dx_ref(rows * cols), dw_ref(cols);
  ref::rms_norm_forward<float>(rows, cols, x.data(), y_ref.data(), w.data(), FLT_EPSILON, nullptr);
  ref::rms_norm_backward<float>(rows, cols, x.data(), dy.data(), w.data(), FLT_EPSILON,
                                dx_ref.data(), dw_ref.data());
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(y), bnorm::test::to_double(y_ref)), 1e-6);
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(dx), bnorm::test::to_double(dx_ref)), 1e-5);
  EXPECT_LT(bnorm::test::norm_relative_error(bnorm::test::to_double(dw), bnorm::test::to_double(dw_ref)), 1e-5);
  EXPECT_EQ(bnorm_rms_norm_forward_f32(rows, cols, x.data(), y.data(), w.data(), -1.0, nullptr),
            BNORM_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(bnorm_last_error()).find("bnorm_rms_norm_forward_f32: eps"),
            std::string::npos);
}

}  // namespace
