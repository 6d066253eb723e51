// LayerNorm and RMSNorm, kernels + front-end (src/norm/layer_norm.h) against the scalar
// references (src/reference/layer_norm_reference.h): odd shapes, optional weight, bias
// and gradients, in place, misaligned, thread counts, large means, NaN/Inf, bad inputs.
//
// Tolerances: float32 norm-wise relative 1e-6 (the reference is long double rounded
// once; the kernels round in T, and the backward takes the saved float rstd, ~6e-8);
// float64 norm-wise relative 1e-12.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>
#include <bnorm/error.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "norm/layer_norm.h"
#include "reference/layer_norm_reference.h"
#include "test_support.h"

namespace bnorm {
namespace {

constexpr double kEps = 1e-5;
const int64_t kRows[] = {1, 2, 3, 15, 16, 17, 33};
const int64_t kCols[] = {1, 2, 3, 15, 16, 17, 33, 768, 8193};
// Beside the grid: many rows, and rows of several kChunk pieces.
const std::pair<int64_t, int64_t> kExtraShapes[] = {{768, 33}, {8193, 17}, {2, 20000}, {40, 768}};

template <class T>
double tolerance() {
  return sizeof(T) == 4 ? 1e-6 : 1e-12;
}

// ||a - b|| / max(||b||, floor), the floor at least 1e-3 sqrt(size) so that an all-zero
// reference (rows of one value: y = bias) compares absolutely.
template <class T>
double error(const std::vector<T>& a, const std::vector<T>& b, double floor = 0) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff += d * d;
    norm += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::sqrt(diff) /
         std::max({std::sqrt(norm), floor, 1e-3 * std::sqrt(static_cast<double>(a.size()))});
}

template <class T>
std::vector<T> normal(int64_t count, uint32_t seed, double offset = 0, double scale = 1) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist;
  std::vector<T> v(static_cast<size_t>(count));
  for (T& e : v) e = static_cast<T>(offset + scale * dist(gen));
  return v;
}

// What a test selects: rms or layer norm, optional weight and bias, which gradients.
struct Options {
  bool rms = false, weight = true, bias = true;
  bool dx = true, dweight = true, dbias = true;
  bool in_place = false;
  size_t misalign = 0;  // elements every buffer is shifted by
};

template <class T>
struct Problem {
  int64_t rows, cols;
  std::vector<T> x, dy, weight, bias;
  Problem(int64_t r, int64_t c, uint32_t seed, double offset = 0, double scale = 1)
      : rows(r), cols(c), x(normal<T>(r * c, seed, offset, scale)),
        dy(normal<T>(r * c, seed + 1)), weight(normal<T>(c, seed + 2, 1.0, 0.3)),
        bias(normal<T>(c, seed + 3)) {}
};

// Every output; a skipped one keeps the sentinel it was filled with.
template <class T>
struct Outputs {
  std::vector<T> y, mean, rstd, dx, dweight, dbias;
  bool operator==(const Outputs& o) const {
    return test::bitwise_equal(y, o.y) && test::bitwise_equal(mean, o.mean) &&
           test::bitwise_equal(rstd, o.rstd) && test::bitwise_equal(dx, o.dx) &&
           test::bitwise_equal(dweight, o.dweight) && test::bitwise_equal(dbias, o.dbias);
  }
};

constexpr double kSentinel = 12345.0;

// A buffer of `count` values at `offset` elements into its storage (misaligned runs).
template <class T>
struct Buffer {
  std::vector<T> storage;
  size_t offset;
  Buffer(const std::vector<T>& v, size_t off) : storage(v.size() + off + 1, T(kSentinel)), offset(off) {
    std::copy(v.begin(), v.end(), storage.begin() + static_cast<std::ptrdiff_t>(off));
  }
  Buffer(size_t count, size_t off) : storage(count + off + 1, T(kSentinel)), offset(off) {}
  T* data() { return storage.data() + offset; }
  std::vector<T> values(size_t count) const {
    return std::vector<T>(storage.begin() + static_cast<std::ptrdiff_t>(offset),
                          storage.begin() + static_cast<std::ptrdiff_t>(offset + count));
  }
};

// Forward, then backward from the forward's saved statistics, through the front-end.
template <class T>
Outputs<T> run_fast(const Problem<T>& p, const Options& o) {
  const size_t n = static_cast<size_t>(p.rows * p.cols), m = static_cast<size_t>(p.rows),
               c = static_cast<size_t>(p.cols), off = o.misalign;
  Buffer<T> x(p.x, off), dy(p.dy, off), w(p.weight, off), b(p.bias, off);
  Buffer<T> y(n, off), mean(m, off), rstd(m, off), dx(n, off), dw(c, off), db(c, off);
  T* y_ptr = o.in_place ? x.data() : y.data();
  const T* wp = o.weight ? w.data() : nullptr;
  if (o.rms)
    norm::rms_norm_forward<T>("test", p.rows, p.cols, x.data(), y_ptr, wp, kEps, rstd.data());
  else
    norm::layer_norm_forward<T>("test", p.rows, p.cols, x.data(), y_ptr, wp,
                                o.bias ? b.data() : nullptr, kEps, mean.data(), rstd.data());
  Outputs<T> out;
  out.y = o.in_place ? x.values(n) : y.values(n);
  const Buffer<T> x_in(p.x, off);  // the backward's x: the input, also after in place
  T* dx_ptr = !o.dx ? nullptr : o.in_place ? dy.data() : dx.data();
  if (o.rms)
    norm::rms_norm_backward<T>("test", p.rows, p.cols, x_in.storage.data() + off, dy.data(),
                               dx_ptr, wp, rstd.data(), o.dweight ? dw.data() : nullptr);
  else
    norm::layer_norm_backward<T>("test", p.rows, p.cols, x_in.storage.data() + off, dy.data(),
                                 dx_ptr, wp, mean.data(), rstd.data(),
                                 o.dweight ? dw.data() : nullptr, o.dbias ? db.data() : nullptr);
  out.mean = mean.values(m);
  out.rstd = rstd.values(m);
  out.dx = o.in_place && o.dx ? dy.values(n) : dx.values(n);
  out.dweight = dw.values(c);
  out.dbias = db.values(c);
  return out;
}

template <class T>
Outputs<T> run_reference(const Problem<T>& p, const Options& o) {
  const size_t n = static_cast<size_t>(p.rows * p.cols), m = static_cast<size_t>(p.rows),
               c = static_cast<size_t>(p.cols);
  Outputs<T> r{std::vector<T>(n), std::vector<T>(m, T(kSentinel)), std::vector<T>(m),
               std::vector<T>(n), std::vector<T>(c), std::vector<T>(c, T(kSentinel))};
  const T* w = o.weight ? p.weight.data() : nullptr;
  if (o.rms) {
    reference::rms_norm_forward(p.rows, p.cols, p.x.data(), r.y.data(), w, kEps, r.rstd.data());
    reference::rms_norm_backward(p.rows, p.cols, p.x.data(), p.dy.data(), w, kEps, r.dx.data(),
                                 r.dweight.data());
  } else {
    const T* b = o.bias ? p.bias.data() : nullptr;
    reference::layer_norm_forward(p.rows, p.cols, p.x.data(), r.y.data(), w, b, kEps,
                                  r.mean.data(), r.rstd.data());
    reference::layer_norm_backward(p.rows, p.cols, p.x.data(), p.dy.data(), w, kEps,
                                   r.dx.data(), r.dweight.data(), r.dbias.data());
  }
  return r;
}

// Every output within tolerance() of the reference (RMSNorm has no mean, no dbias).
// dx is measured against the size of its first term too, ||weight * dy * rstd||: rows of
// one or two values (and RMSNorm's rows of one) have dx = that term times about
// eps / var, all but cancelled, so the float rounding of the saved rstd alone (an input
// of the backward) moves dx by 1e-5 of itself; PyTorch's float kernel cancels the same.
template <class T>
void expect_close(const Problem<T>& p, const Options& o, double tol) {
  const Outputs<T> fast = run_fast(p, o), ref = run_reference(p, o);
  double first_term = 0;
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t j = 0; j < p.cols; ++j) {
      const double t = static_cast<double>(p.dy[static_cast<size_t>(r * p.cols + j)]) *
                       (o.weight ? static_cast<double>(p.weight[static_cast<size_t>(j)]) : 1.0) *
                       static_cast<double>(ref.rstd[static_cast<size_t>(r)]);
      first_term += t * t;
    }
  EXPECT_LE(error(fast.y, ref.y), tol) << "y";
  EXPECT_LE(error(fast.rstd, ref.rstd), tol) << "rstd";
  EXPECT_LE(error(fast.dx, ref.dx, std::sqrt(first_term)), tol) << "dx";
  EXPECT_LE(error(fast.dweight, ref.dweight), tol) << "dweight";
  if (!o.rms) {
    EXPECT_LE(error(fast.mean, ref.mean), tol) << "mean";
    EXPECT_LE(error(fast.dbias, ref.dbias), tol) << "dbias";
  }
}

std::string name(int64_t rows, int64_t cols, const Options& o) {
  std::ostringstream out;  // (a chain of string + trips GCC 12's -Wrestrict false positive)
  out << "(" << rows << ", " << cols << ")" << (o.weight ? " weight" : "")
      << (o.bias && !o.rms ? " bias" : "");
  return out.str();
}

template <class T>
void check_against_reference(bool rms) {
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t r : kRows)
    for (int64_t c : kCols) shapes.emplace_back(r, c);
  shapes.insert(shapes.end(), std::begin(kExtraShapes), std::end(kExtraShapes));
  uint32_t seed = 1;
  for (const auto& [rows, cols] : shapes)
    for (int affine = 0; affine < (rms ? 2 : 4); ++affine) {
      Options o;
      o.rms = rms, o.weight = affine & 1, o.bias = affine & 2;
      SCOPED_TRACE(name(rows, cols, o));
      const Problem<T> p(rows, cols, seed += 4, 0.5, 2.0);
      expect_close(p, o, tolerance<T>());
    }
}

template <class T>
class LayerNormFamily : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LayerNormFamily, Types);
template <class T>
class RmsNormFamily : public ::testing::Test {};
TYPED_TEST_SUITE(RmsNormFamily, Types);

TYPED_TEST(LayerNormFamily, MatchesReferenceOnOddShapes) { check_against_reference<TypeParam>(false); }
TYPED_TEST(RmsNormFamily, MatchesReferenceOnOddShapes) { check_against_reference<TypeParam>(true); }

// Skipping any gradient leaves the others bitwise the same and the skipped one untouched.
template <class T>
void check_skipped_gradients(bool rms) {
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{17, 33}, {40, 768}, {3, 8193}}) {
    const Problem<T> p(rows, cols, 7);
    Options all;
    all.rms = rms;
    const Outputs<T> full = run_fast(p, all);
    for (int mask = 0; mask < 8; ++mask) {
      Options o = all;
      o.dx = mask & 1, o.dweight = mask & 2, o.dbias = mask & 4;
      SCOPED_TRACE(name(rows, cols, o) + " mask " + std::to_string(mask));
      const Outputs<T> got = run_fast(p, o);
      EXPECT_TRUE(test::bitwise_equal(got.y, full.y));
      const auto untouched = [](const std::vector<T>& v) {
        return std::all_of(v.begin(), v.end(), [](T e) { return e == T(kSentinel); });
      };
      if (o.dx) EXPECT_TRUE(test::bitwise_equal(got.dx, full.dx)); else EXPECT_TRUE(untouched(got.dx));
      if (o.dweight) EXPECT_TRUE(test::bitwise_equal(got.dweight, full.dweight));
      else EXPECT_TRUE(untouched(got.dweight));
      if (o.dbias && !rms) EXPECT_TRUE(test::bitwise_equal(got.dbias, full.dbias));
      else EXPECT_TRUE(untouched(got.dbias));
    }
  }
}
TYPED_TEST(LayerNormFamily, SkippedGradientsChangeNothingElse) { check_skipped_gradients<TypeParam>(false); }
TYPED_TEST(RmsNormFamily, SkippedGradientsChangeNothingElse) { check_skipped_gradients<TypeParam>(true); }

// y == x and dx == dy give the out-of-place bits; so do buffers one element off alignment.
template <class T>
void check_in_place_and_misaligned(bool rms) {
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{17, 33}, {33, 768}, {2, 8193}}) {
    const Problem<T> p(rows, cols, 11);
    Options o;
    o.rms = rms;
    const Outputs<T> plain = run_fast(p, o);
    SCOPED_TRACE(name(rows, cols, o));
    Options in_place = o;
    in_place.in_place = true;
    EXPECT_TRUE(run_fast(p, in_place) == plain) << "in place";
    for (size_t off : {1, 3}) {
      Options mis = o;
      mis.misalign = off;
      EXPECT_TRUE(run_fast(p, mis) == plain) << "misaligned by " << off;
      mis.in_place = true;
      EXPECT_TRUE(run_fast(p, mis) == plain) << "misaligned by " << off << ", in place";
    }
  }
}
TYPED_TEST(LayerNormFamily, InPlaceAndMisalignedGiveTheSameBits) { check_in_place_and_misaligned<TypeParam>(false); }
TYPED_TEST(RmsNormFamily, InPlaceAndMisalignedGiveTheSameBits) { check_in_place_and_misaligned<TypeParam>(true); }

// 2^19+ values per shape: below that one thread does the work when waiting threads
// sleep (OMP_WAIT_POLICY=passive), and there would be nothing to compare. (70, 8193) has
// rows of two chunks; (1024, 768) backward has 32 column chunks.
template <class T>
void check_threads(bool rms) {
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1024, 768}, {70, 8193}}) {
    const Problem<T> p(rows, cols, 13);
    Options o;
    o.rms = rms;
    SCOPED_TRACE(name(rows, cols, o));
    bnorm_set_num_threads(1);
    const Outputs<T> one = run_fast(p, o);
    for (int threads : {2, 3}) {
      bnorm_set_num_threads(threads);
      EXPECT_TRUE(run_fast(p, o) == one) << threads << " threads differ from 1";
    }
  }
  bnorm_set_num_threads(0);
}
TYPED_TEST(LayerNormFamily, BitwiseIdenticalForAnyThreadCount) { check_threads<TypeParam>(false); }
TYPED_TEST(RmsNormFamily, BitwiseIdenticalForAnyThreadCount) { check_threads<TypeParam>(true); }

// float32 at |mean| up to 1e6 x std: every output within 1e-6 norm-wise of the long
// double reference on the same float inputs (the reference's own float rounding is in
// the measure; ATen's LayerNorm lost digits at mean 2000). float64 keeps the mean in one
// double, whose rounding (ulp(mean) / 2, 6e-11 std at 1e6) bounds it at ~1e-16 |mean| / std.
template <class T>
void check_large_means(bool rms) {
  for (double offset : {1e2, 1e4, 1e6, -1e6})
    for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{16, 768}, {3, 8193}, {5, 17}}) {
      const Problem<T> p(rows, cols, 17, offset, 1.0);
      Options o;
      o.rms = rms;
      SCOPED_TRACE(name(rows, cols, o) + " mean " + std::to_string(offset));
      expect_close(p, o, sizeof(T) == 4 ? 1e-6 : std::max(1e-12, 2e-16 * std::abs(offset)));
    }
}
TYPED_TEST(LayerNormFamily, LargeMeansKeepTheirDigits) { check_large_means<TypeParam>(false); }
TYPED_TEST(RmsNormFamily, LargeMeansKeepTheirDigits) { check_large_means<TypeParam>(true); }

// A NaN in a row makes that row's outputs NaN and leaves the other rows as they were;
// so does +-Inf (LayerNorm: the mean is Inf, the variance NaN). RMSNorm with +Inf: rstd
// 0 as PyTorch (y = 0, NaN at the Inf).
template <class T>
void check_nonfinite(bool rms) {
  const int64_t rows = 4, cols = 33;
  const Problem<T> clean(rows, cols, 19);
  Options o;
  o.rms = rms;
  const Outputs<T> base = run_fast(clean, o);
  for (T bad : {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity()}) {
    Problem<T> p = clean;
    p.x[1 * cols + 5] = bad;  // row 1
    const Outputs<T> got = run_fast(p, o);
    const Outputs<T> ref = run_reference(p, o);
    SCOPED_TRACE(std::to_string(bad));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) {
        const size_t i = static_cast<size_t>(r * cols + j);
        if (r != 1) {
          EXPECT_EQ(got.y[i], base.y[i]);
          EXPECT_EQ(got.dx[i], base.dx[i]);
        } else if (rms && !std::isnan(bad)) {
          EXPECT_EQ(std::isnan(got.y[i]), std::isnan(ref.y[i])) << j;
          if (!std::isnan(ref.y[i])) {
            EXPECT_EQ(got.y[i], ref.y[i]) << j;
          }
        } else {
          EXPECT_TRUE(std::isnan(got.y[i])) << j;
          EXPECT_TRUE(std::isnan(ref.y[i])) << j;
          EXPECT_TRUE(std::isnan(got.dx[i])) << j;
        }
      }
    EXPECT_TRUE(std::isnan(got.rstd[1]) || (rms && got.rstd[1] == T(0)));
  }
}
TYPED_TEST(LayerNormFamily, NanAndInfPropagateWithinTheirRow) { check_nonfinite<TypeParam>(false); }
TYPED_TEST(RmsNormFamily, NanAndInfPropagateWithinTheirRow) { check_nonfinite<TypeParam>(true); }

}  // namespace
}  // namespace bnorm
