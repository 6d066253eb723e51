// The README's main job for now: batch norm on one batch, shown with numbers.
//   1. a training step on a (32, 4, 8, 8) batch whose channels have very different
//      means and scales: every output channel comes out with mean 0 and std 1;
//   2. running statistics after a few steps, and inference with them;
//   3. the gradients of one backward pass;
//   4. the numerics: channels with |mean| = 1e6 * std, in float32, against a float64
//      reference, next to the textbook E[x^2] - E[x]^2 formula.
#include <bnorm/bnorm.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

struct ChannelStats {
  double mean, std;
};

// Mean and (biased) std of channel ch of an (n, c, spatial) channels-first float array.
ChannelStats channel_stats(const std::vector<float>& a, int64_t n, int64_t c, int64_t spatial,
                           int64_t ch) {
  double sum = 0, squares = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < spatial; ++s) sum += a[(i * c + ch) * spatial + s];
  const double mean = sum / static_cast<double>(n * spatial);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < spatial; ++s) {
      const double d = a[(i * c + ch) * spatial + s] - mean;
      squares += d * d;
    }
  return {mean, std::sqrt(squares / static_cast<double>(n * spatial))};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    const bool help = std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h";
    std::fprintf(help ? stdout : stderr,
                 "usage: bnorm_demo\n"
                 "Batch norm on one (32, 4, 8, 8) float32 batch, shown with numbers: a training\n"
                 "step, running statistics and inference, a backward pass, and the numerics of\n"
                 "|mean| = 1e6 * std against the textbook formula. Takes no arguments.\n");
    if (!help) std::fprintf(stderr, "bnorm_demo: unexpected argument '%s'\n", argv[1]);
    return help ? 0 : 2;
  }
  constexpr int64_t n = 32, c = 4, h = 8, w = 8, spatial = h * w;
  const std::vector<int64_t> sizes{n, c, h, w};
  const double offsets[c] = {-3.0, 0.0, 50.0, 1000.0};
  const double scales[c] = {0.1, 1.0, 5.0, 20.0};
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;

  auto make_batch = [&] {
    std::vector<float> x(static_cast<size_t>(n * c * spatial));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t s = 0; s < spatial; ++s)
          x[(i * c + ch) * spatial + s] = static_cast<float>(offsets[ch] + scales[ch] * normal(rng));
    return x;
  };

  std::printf("bnorm %s: batch norm on a (%lld, %lld, %lld, %lld) float32 batch, %d threads\n\n",
              bnorm::version(), static_cast<long long>(n), static_cast<long long>(c),
              static_cast<long long>(h), static_cast<long long>(w), bnorm::get_num_threads());

  bnorm::BatchNorm<float> bn(c);  // PyTorch defaults: eps 1e-5, momentum 0.1, affine
  std::vector<float> x = make_batch(), y(x.size());
  bn.forward({x.data(), sizes}, {y.data(), sizes});
  std::printf("1. training forward (batch statistics)\n");
  std::printf("   channel   input mean    input std  ->  output mean   output std\n");
  for (int64_t ch = 0; ch < c; ++ch) {
    const ChannelStats in = channel_stats(x, n, c, spatial, ch);
    const ChannelStats out = channel_stats(y, n, c, spatial, ch);
    std::printf("   %7lld %12.4f %12.4f  -> %12.2e %12.6f\n", static_cast<long long>(ch), in.mean,
                in.std, out.mean, out.std);
  }

  for (int step = 1; step < 50; ++step) {
    x = make_batch();
    bn.forward({x.data(), sizes}, {y.data(), sizes});
  }
  std::printf("\n2. running statistics after %lld training steps (momentum 0.1)\n",
              static_cast<long long>(bn.num_batches_tracked()));
  std::printf("   channel  running_mean  true mean   running_var   true var\n");
  for (int64_t ch = 0; ch < c; ++ch)
    std::printf("   %7lld %13.4f %10.4f %13.4f %10.4f\n", static_cast<long long>(ch),
                bn.running_mean()[ch], offsets[ch], bn.running_var()[ch], scales[ch] * scales[ch]);
  bn.eval();
  x = make_batch();
  bn.forward({x.data(), sizes}, {y.data(), sizes});
  std::printf("   eval forward on a fresh batch: output std per channel");
  for (int64_t ch = 0; ch < c; ++ch) std::printf(" %.4f", channel_stats(y, n, c, spatial, ch).std);
  std::printf("\n");

  bn.train();
  bn.forward({x.data(), sizes}, {y.data(), sizes});
  std::vector<float> dy(x.size()), dx(x.size());
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<float>(normal(rng));
  bn.backward({x.data(), sizes}, {dy.data(), sizes}, {dx.data(), sizes});
  std::printf("\n3. backward: dx has no component along the batch mean: sum(dx) = 0 per channel\n");
  std::printf("   channel  grad_weight   grad_bias     sum(dx)\n");
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum_dx = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < spatial; ++s) sum_dx += dx[(i * c + ch) * spatial + s];
    std::printf("   %7lld %12.4f %11.4f %11.2e\n", static_cast<long long>(ch), bn.grad_weight()[ch],
                bn.grad_bias()[ch], sum_dx);
  }

  // 4. |mean| = 1e6 * std in float32.
  constexpr double offset = 1e6;
  std::vector<float> big(x.size());
  for (float& v : big) v = static_cast<float>(offset + normal(rng));
  std::vector<float> big_y(big.size());
  bnorm::BatchNorm<float> plain(c, {.affine = false});
  plain.forward({big.data(), sizes}, {big_y.data(), sizes});
  double err = 0, ref_norm = 0, naive_err = 0;
  for (int64_t ch = 0; ch < c; ++ch) {
    const ChannelStats ref = channel_stats(big, n, c, spatial, ch);  // float64 oracle
    float fsum = 0, fsquares = 0;  // the textbook formula, in float32
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < spatial; ++s) {
        const float v = big[(i * c + ch) * spatial + s];
        fsum += v;
        fsquares += v * v;
      }
    const float count = static_cast<float>(n * spatial);
    const float naive_mean = fsum / count;
    const float naive_var = fsquares / count - naive_mean * naive_mean;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < spatial; ++s) {
        const size_t k = static_cast<size_t>((i * c + ch) * spatial + s);
        const double want = (big[k] - ref.mean) / std::sqrt(ref.std * ref.std + 1e-5);
        const double naive = (big[k] - naive_mean) / std::sqrt(naive_var + 1e-5f);
        err += (big_y[k] - want) * (big_y[k] - want);
        naive_err += std::isfinite(naive) ? (naive - want) * (naive - want) : INFINITY;
        ref_norm += want * want;
      }
  }
  std::printf("\n4. numerics: x = 1e6 + N(0, 1) in float32, relative error of y vs float64\n");
  std::printf("   bnorm (shifted one-pass sums, mean subtracted first): %.2e\n",
              std::sqrt(err / ref_norm));
  std::printf("   textbook E[x^2] - E[x]^2 in float32:                   %.2e\n",
              std::sqrt(naive_err / ref_norm));
  return 0;
}
