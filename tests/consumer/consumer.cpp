// A C++20 program using an installed bnorm (tests/install/run builds it against the
// install prefix with find_package, shared and static, and with pkg-config): the module
// and the functional API from the public headers, the family through norms.hpp, and
// bnorm::Error thrown inside the library and caught here (type info across the shared
// library's boundary).
#include <bnorm/bnorm.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main() {
  // (N=2, C=3, H=2, W=2) channels-last through the module, training then eval.
  const int64_t n = 2, c = 3, h = 2, w = 2, count = n * c * h * w;
  std::vector<float> x(count), y(count), dy(count, 1.0f), dx(count);
  for (int64_t i = 0; i < count; ++i) x[i] = static_cast<float>((i * 7) % 11) + 1000.0f;
  bnorm::BatchNorm<float> bn(c);
  const bnorm::TensorView<const float> xv{x.data(), {n, c, h, w}, bnorm::Layout::channels_last};
  bn.forward(xv, {y.data(), {n, c, h, w}, bnorm::Layout::channels_last});
  bn.backward(xv, {dy.data(), {n, c, h, w}, bnorm::Layout::channels_last},
              {dx.data(), {n, c, h, w}, bnorm::Layout::channels_last});
  for (int64_t ch = 0; ch < c; ++ch) {  // each channel of y: mean 0, biased variance ~1
    double sum = 0, squares = 0;
    for (int64_t i = ch; i < count; i += c) sum += y[i], squares += double(y[i]) * y[i];
    const double m = double(n * h * w);
    if (std::abs(sum / m) > 1e-5 || std::abs(squares / m - 1.0) > 1e-3) {
      std::fprintf(stderr, "channel %lld: mean %g, variance %g\n", (long long)ch, sum / m,
                   squares / m);
      return 1;
    }
    // dy = 1 everywhere: dx = 0, dbias = m
    if (std::abs(bn.grad_bias()[ch] - float(m)) > 1e-4f) return 1;
  }
  bn.eval();
  bn.forward(xv, {y.data(), {n, c, h, w}, bnorm::Layout::channels_last});

  // The functional template and the family (layer norm over the last 4 values).
  std::vector<double> row{1, 2, 3, 4}, out(4);
  const std::vector<int64_t> normalized_shape{4};
  bnorm::layer_norm_forward<double>({row.data(), {1, 4}}, {out.data(), {1, 4}},
                                    normalized_shape, {}, {}, 1e-5, {}, {});
  if (std::abs(out[0] + out[3]) > 1e-12 || out[0] >= 0) return 1;

  // An error thrown in the library, caught as bnorm::Error with its status and message.
  try {
    bnorm::BatchNorm<float> bad(0);
    std::fprintf(stderr, "BatchNorm(0) was accepted\n");
    return 1;
  } catch (const bnorm::Error& e) {
    if (e.status() == BNORM_SUCCESS || std::string(e.what()).find("num_features") ==
                                           std::string::npos) {
      std::fprintf(stderr, "unexpected error: %s\n", e.what());
      return 1;
    }
  }
  std::printf("bnorm %s (C++): module, functional API, family and bnorm::Error work\n",
              bnorm::version());
  return 0;
}
