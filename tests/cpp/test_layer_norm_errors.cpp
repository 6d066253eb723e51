// LayerNorm's and RMSNorm's front-end refusals (src/norm/layer_norm.h): every bad
// argument is a bnorm::Error with its status and a message naming the argument, and a
// failing call writes nothing.
#include <gtest/gtest.h>

#include <bnorm/error.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "norm/layer_norm.h"

namespace bnorm {
namespace {

constexpr int64_t kRows = 3, kCols = 5, kCount = kRows * kCols;

// Every buffer a call may take, filled with a sentinel so that a write shows.
struct Buffers {
  std::vector<float> x = std::vector<float>(kCount, 1.5f), y = std::vector<float>(kCount, 7.f),
                     dy = std::vector<float>(kCount, 0.5f), dx = std::vector<float>(kCount, 7.f),
                     weight = std::vector<float>(kCols, 1.f), bias = std::vector<float>(kCols, 0.f),
                     mean = std::vector<float>(kRows, 7.f), rstd = std::vector<float>(kRows, 7.f),
                     dweight = std::vector<float>(kCols, 7.f), dbias = std::vector<float>(kCols, 7.f);
  Buffers() {
    for (int64_t i = 0; i < kCount; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i % 7);
  }
  bool untouched() const {
    for (const auto* v : {&y, &dx, &mean, &rstd, &dweight, &dbias})
      for (float e : *v)
        if (e != 7.f) return false;
    return true;
  }
};

void expect_error(const std::function<void()>& call, bnorm_status status, const std::string& names,
                  const Buffers& b) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one naming " << names;
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_NE(std::string(e.what()).find(names), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("op_name"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(b.untouched()) << "a failing call wrote an output (" << names << ")";
}

TEST(LayerNormErrors, EveryBadForwardArgumentIsNamedAndNothingIsWritten) {
  Buffers b;
  const auto ln = [&](int64_t rows, int64_t cols, const float* x, float* y, const float* w,
                      const float* bias, double eps, float* mean, float* rstd) {
    return [=] { norm::layer_norm_forward<float>("op_name", rows, cols, x, y, w, bias, eps, mean, rstd); };
  };
  float *x = b.x.data(), *y = b.y.data(), *w = b.weight.data(), *bi = b.bias.data(),
        *m = b.mean.data(), *r = b.rstd.data();
  expect_error(ln(0, kCols, x, y, w, bi, 1e-5, m, r), BNORM_ERROR_INVALID_SHAPE, "rows", b);
  expect_error(ln(-2, kCols, x, y, w, bi, 1e-5, m, r), BNORM_ERROR_INVALID_SHAPE, "rows", b);
  expect_error(ln(kRows, 0, x, y, w, bi, 1e-5, m, r), BNORM_ERROR_INVALID_SHAPE, "cols", b);
  expect_error(ln(int64_t{1} << 40, int64_t{1} << 40, x, y, w, bi, 1e-5, m, r),
               BNORM_ERROR_SIZE_OVERFLOW, "rows * cols", b);
  expect_error(ln(kRows, kCols, nullptr, y, w, bi, 1e-5, m, r), BNORM_ERROR_NULL_POINTER, "x", b);
  expect_error(ln(kRows, kCols, x, nullptr, w, bi, 1e-5, m, r), BNORM_ERROR_NULL_POINTER, "y", b);
  for (double eps : {0.0, -1e-5, std::nan(""), std::numeric_limits<double>::infinity()})
    expect_error(ln(kRows, kCols, x, y, w, bi, eps, m, r), BNORM_ERROR_INVALID_VALUE, "eps", b);
  // Overlaps: y partly over x, save_rstd inside y, y over weight, save_rstd == save_mean.
  expect_error(ln(kRows, kCols, x, x + 1, w, bi, 1e-5, m, r), BNORM_ERROR_OVERLAP, "y overlaps x", b);
  expect_error(ln(kRows, kCols, x, y, w, bi, 1e-5, m, y + 2), BNORM_ERROR_OVERLAP, "save_rstd overlaps y", b);
  expect_error(ln(kRows, kCols, x, y, y, bi, 1e-5, m, r), BNORM_ERROR_OVERLAP, "y overlaps weight", b);
  expect_error(ln(kRows, kCols, x, y, w, bi, 1e-5, m, m), BNORM_ERROR_OVERLAP,
               "save_rstd overlaps save_mean", b);

  const auto rms = [&](int64_t rows, int64_t cols, const float* xx, float* yy, const float* ww,
                       double eps, float* rr) {
    return [=] { norm::rms_norm_forward<float>("op_name", rows, cols, xx, yy, ww, eps, rr); };
  };
  expect_error(rms(kRows, 0, x, y, w, 1e-5, r), BNORM_ERROR_INVALID_SHAPE, "cols", b);
  expect_error(rms(kRows, kCols, x, nullptr, w, 1e-5, r), BNORM_ERROR_NULL_POINTER, "y", b);
  expect_error(rms(kRows, kCols, x, y, w, 0.0, r), BNORM_ERROR_INVALID_VALUE, "eps", b);
  expect_error(rms(kRows, kCols, x, y, w, 1e-5, x + 3), BNORM_ERROR_OVERLAP,
               "save_rstd overlaps x", b);
}

TEST(LayerNormErrors, EveryBadBackwardArgumentIsNamedAndNothingIsWritten) {
  Buffers b;
  const float *x = b.x.data(), *dy = b.dy.data(), *w = b.weight.data(), *m = b.mean.data(),
              *r = b.rstd.data();
  float *dx = b.dx.data(), *dw = b.dweight.data(), *db = b.dbias.data();
  const auto ln = [&](int64_t rows, const float* xx, const float* d, float* out, const float* mm,
                      const float* rr, float* gw, float* gb) {
    return [=] {
      norm::layer_norm_backward<float>("op_name", rows, kCols, xx, d, out, w, mm, rr, gw, gb);
    };
  };
  expect_error(ln(0, x, dy, dx, m, r, dw, db), BNORM_ERROR_INVALID_SHAPE, "rows", b);
  expect_error(ln(kRows, nullptr, dy, dx, m, r, dw, db), BNORM_ERROR_NULL_POINTER, "x", b);
  expect_error(ln(kRows, x, nullptr, dx, m, r, dw, db), BNORM_ERROR_NULL_POINTER, "dy", b);
  expect_error(ln(kRows, x, dy, dx, nullptr, r, dw, db), BNORM_ERROR_NULL_POINTER, "save_mean", b);
  expect_error(ln(kRows, x, dy, dx, m, nullptr, dw, db), BNORM_ERROR_NULL_POINTER, "save_rstd", b);
  // dx == dy is in place; dx one value past dy is not, nor dx over x, nor dbias in dweight.
  expect_error(ln(kRows, x, dy, const_cast<float*>(dy) + 1, m, r, dw, db), BNORM_ERROR_OVERLAP,
               "dx overlaps dy", b);
  expect_error(ln(kRows, x, dy, const_cast<float*>(x), m, r, dw, db), BNORM_ERROR_OVERLAP,
               "dx overlaps x", b);
  expect_error(ln(kRows, x, dy, dx, m, r, dw, dw + 1), BNORM_ERROR_OVERLAP,
               "dbias overlaps dweight", b);

  const auto rms = [&](const float* xx, const float* d, float* out, const float* rr, float* gw) {
    return [=] { norm::rms_norm_backward<float>("op_name", kRows, kCols, xx, d, out, w, rr, gw); };
  };
  expect_error(rms(x, dy, dx, nullptr, dw), BNORM_ERROR_NULL_POINTER, "save_rstd", b);
  expect_error(rms(nullptr, dy, dx, r, dw), BNORM_ERROR_NULL_POINTER, "x", b);
  expect_error(rms(x, dy, dx, r, dx + 2), BNORM_ERROR_OVERLAP, "dweight overlaps dx", b);
}

}  // namespace
}  // namespace bnorm
