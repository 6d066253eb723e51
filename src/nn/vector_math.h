// Vectorizable elementwise math for the activations.
//
// sigmoid(x) = 1 / (1 + e^-x) with e^t computed here rather than by libm: glibc's
// expf is a scalar call the compiler cannot vectorize, and in LeNet's sigmoids it
// was a sixth of a training step. The method (Cephes' expf): t = k ln2 + r with
// k = round(t / ln2), |r| <= ln2/2; e^r by a degree-7 Taylor/minimax polynomial;
// 2^k assembled in the exponent bits. Relative error <= 2 ulp over the clamped range
// [-87.3, 88.3] (tests compare with std::exp); outside it the sigmoid is 0 or 1 to
// float precision anyway.
#pragma once

#include <cstdint>

namespace bnorm::nn {

// y[i] = sigmoid(x[i]) for float; any n; x and y may alias.
void sigmoid_forward(const float* x, float* y, int64_t n);
void sigmoid_forward(const double* x, double* y, int64_t n);  // std::exp, for tests

}  // namespace bnorm::nn
