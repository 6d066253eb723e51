// Helpers shared by the C++ tests: random problems, the C API's typed entry points
// behind one template, and error measures against the float64 reference.
#pragma once

#include <bnorm/bnorm.h>
#include <bnorm/error.hpp>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <iomanip>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "reference/batch_norm_reference.h"

namespace bnorm::test {

// call() must throw bnorm::Error with `status` and a message containing `needle` (the
// argument it names).
template <class F>
void expect_bnorm_error(bnorm_status status, const char* needle, F&& call) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one containing " << needle;
  } catch (const bnorm::Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_NE(std::strstr(e.what(), needle), nullptr) << e.what();
  }
}

// Odd and even sizes below, at and above the vector widths.
inline const std::vector<int64_t> kOddSizes = {1, 2, 3, 7, 15, 16, 17, 33};

struct Shape {
  int64_t n, c, spatial;
  bool channels_last;

  bnorm_layout layout() const { return channels_last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST; }
  reference::Geometry geometry() const { return {n, c, spatial, channels_last}; }
  int64_t size() const { return n * c * spatial; }
  std::string name() const;
};

// Values offset + scale * N(0, 1), per-channel offsets varied so channels differ.
template <class T>
std::vector<T> random_values(int64_t count, uint32_t seed, double offset = 0.0, double scale = 1.0);

template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// max |a - b| / max(1, max |b|): a relative error that does not blow up near zero.
double max_relative_error(const std::vector<double>& a, const std::vector<double>& b);
template <class T>
double max_relative_error(const std::vector<T>& a, const std::vector<double>& b) {
  return max_relative_error(to_double(a), b);
}
// ||a - b||_2 / ||b||_2: the norm-wise relative error (PyTorch's figures use it).
double norm_relative_error(const std::vector<double>& a, const std::vector<double>& b);

// The C API's typed functions behind one name.
template <class T>
struct CApi;
template <>
struct CApi<float> {
  static constexpr auto forward_training = bnorm_batch_norm_forward_training_f32;
  static constexpr auto forward_training_ex = bnorm_batch_norm_forward_training_ex_f32;
  static constexpr auto forward_inference = bnorm_batch_norm_forward_inference_f32;
  static constexpr auto backward = bnorm_batch_norm_backward_f32;
  static constexpr auto backward_inference = bnorm_batch_norm_backward_inference_f32;
  static constexpr auto relu_forward_training = bnorm_batch_norm_relu_forward_training_f32;
  static constexpr auto relu_forward_inference = bnorm_batch_norm_relu_forward_inference_f32;
  static constexpr auto relu_backward = bnorm_batch_norm_relu_backward_f32;
  static constexpr auto relu_backward_inference = bnorm_batch_norm_relu_backward_inference_f32;
};
template <>
struct CApi<double> {
  static constexpr auto forward_training = bnorm_batch_norm_forward_training_f64;
  static constexpr auto forward_training_ex = bnorm_batch_norm_forward_training_ex_f64;
  static constexpr auto forward_inference = bnorm_batch_norm_forward_inference_f64;
  static constexpr auto backward = bnorm_batch_norm_backward_f64;
  static constexpr auto backward_inference = bnorm_batch_norm_backward_inference_f64;
  static constexpr auto relu_forward_training = bnorm_batch_norm_relu_forward_training_f64;
  static constexpr auto relu_forward_inference = bnorm_batch_norm_relu_forward_inference_f64;
  static constexpr auto relu_backward = bnorm_batch_norm_relu_backward_f64;
  static constexpr auto relu_backward_inference = bnorm_batch_norm_relu_backward_inference_f64;
};

// Equal bit for bit (a NaN equals a NaN with the same bits; 0 and -0 differ). On failure
// the message names the first differing index and both values.
template <class T>
::testing::AssertionResult bitwise_equal(const T* a, const T* b, size_t count) {
  for (size_t i = 0; i < count; ++i)
    if (std::memcmp(a + i, b + i, sizeof(T)) != 0) {
      std::ostringstream out;
      out << std::setprecision(17) << "first difference at index " << i << " of " << count
          << ": " << +a[i] << " vs " << +b[i];
      return ::testing::AssertionFailure() << out.str();
    }
  return ::testing::AssertionSuccess();
}
template <class T>
::testing::AssertionResult bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  return bitwise_equal(a.data(), b.data(), a.size());
}

// The fused ReLU: v < 0 ? 0 : v (a NaN stays NaN, as torch.relu).
template <class T>
T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// The ReLU bit mask of `out` (bnorm.h): bit i % 8 of byte i / 8 set when !(out[i] <= 0),
// the last byte's unused bits 0.
template <class T>
std::vector<uint8_t> relu_mask_of(const std::vector<T>& out) {
  std::vector<uint8_t> mask((out.size() + 7) / 8, 0);
  for (size_t i = 0; i < out.size(); ++i)
    if (!(out[i] <= T(0))) mask[i / 8] = static_cast<uint8_t>(mask[i / 8] | (1u << (i % 8)));
  return mask;
}

// dy where the ReLU passed (!(out <= 0)), else 0: what the fused backwards compute with.
template <class T>
std::vector<T> relu_gated(const std::vector<T>& dy, const std::vector<T>& out) {
  std::vector<T> g(dy.size());
  for (size_t i = 0; i < dy.size(); ++i) g[i] = out[i] <= T(0) ? T(0) : dy[i];
  return g;
}

// Every (n, c, spatial) from kOddSizes^3, both layouts.
std::vector<Shape> odd_shapes();

// How a RandomProblem draws its values:
//   x = x_offset + x_scale * N(0, 1),  dy ~ N(0, 1),  weight ~ 1 + 0.3 N(0, 1),
//   bias ~ N(0, 1),  running_mean = mean_offset + N(0, 1),  running_var = var_floor + N(0, 1)^2.
struct ProblemSpec {
  double x_offset, x_scale, mean_offset, var_floor;
};

// One random problem of shape s; seeds seed .. seed + 5.
template <class T>
struct RandomProblem {
  Shape shape;
  std::vector<T> x, dy, weight, bias, running_mean, running_var;
  RandomProblem(const Shape& s, uint32_t seed, const ProblemSpec& spec)
      : shape(s),
        x(random_values<T>(s.size(), seed, spec.x_offset, spec.x_scale)),
        dy(random_values<T>(s.size(), seed + 1)),
        weight(random_values<T>(s.c, seed + 2, 1.0, 0.3)),
        bias(random_values<T>(s.c, seed + 3)),
        running_mean(random_values<T>(s.c, seed + 4, spec.mean_offset)),
        running_var(static_cast<size_t>(s.c)) {
    const auto r = random_values<T>(s.c, seed + 5);
    for (int64_t ch = 0; ch < s.c; ++ch)
      running_var[ch] = static_cast<T>(spec.var_floor + r[ch] * r[ch]);
  }
  int64_t mask_bytes() const { return bnorm_relu_mask_bytes(shape.n, shape.c, shape.spatial); }
};

// Their tolerances against the float64 reference (max relative error).
template <class T>
struct ReluTolerance;
template <>
struct ReluTolerance<float> {
  static constexpr double forward = 4e-6, backward = 1e-4;
};
template <>
struct ReluTolerance<double> {
  static constexpr double forward = 1e-13, backward = 1e-10;
};

// The fused-ReLU and alignment tests' problems: about half of the values on each side of
// the ReLU (bias ~ N(0, 1), weight ~ 1 +- 0.3), x offset by 0.5 * (seed % 5).
template <class T>
struct ReluProblem : RandomProblem<T> {
  ReluProblem(const Shape& s, uint32_t seed)
      : RandomProblem<T>(s, seed,
                         {0.5 * static_cast<double>(seed % 5), 2.0,
                          0.5 * static_cast<double>(seed % 5), 2.0}) {}
};

}  // namespace bnorm::test
