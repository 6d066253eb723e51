#include "nn/vector_math.h"

#include <cmath>
#include <cstring>

#define BNORM_NN_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace bnorm::nn {

namespace {

// e^t for t in float range; inline so the loops below vectorize it.
inline float exp_approx(float t) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;       // ln 2 split in two: hi has few bits,
  constexpr float kLn2Lo = -2.12194440e-4f;    // so k * hi is exact
  t = t < -87.3f ? -87.3f : (t > 88.3f ? 88.3f : t);  // keeps 2^k normal
  // Round to nearest by the 1.5 * 2^23 trick: the add leaves no fraction bits.
  constexpr float kRound = 12582912.0f;
  const float kf = (t * kLog2e + kRound) - kRound;
  const float r = (t - kf * kLn2Hi) - kf * kLn2Lo;
  // Cephes expf polynomial for e^r - 1 - r on |r| <= ln2/2.
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = (p * (r * r) + r) + 1.0f;
  const auto k = static_cast<int32_t>(kf);
  const int32_t bits = (k + 127) << 23;  // 2^k, k in [-126, 128): a normal float
  float two_k;
  std::memcpy(&two_k, &bits, sizeof two_k);
  return er * two_k;
}

BNORM_NN_CLONES void sigmoid_loop(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + exp_approx(-x[i]));
}

}  // namespace

void sigmoid_forward(const float* x, float* y, int64_t n) { sigmoid_loop(x, y, n); }

void sigmoid_forward(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 1.0 / (1.0 + std::exp(-x[i]));
}

}  // namespace bnorm::nn
