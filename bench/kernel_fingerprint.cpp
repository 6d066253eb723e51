// A/B tool for kernel changes: runs forward training and backward (float32, 2 threads)
// through the C API on one shape and prints a hash of every output (y, save_mean,
// save_invstd, dx, dweight, dbias) with the median GB/s of each pass (model bytes: 2T
// forward, 3T backward). Two builds with equal hashes computed the same bits.
//   build/bench/kernel_fingerprint N C SPATIAL [cl]
#include <bnorm/bnorm.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s N C SPATIAL [cl]\n", argv[0]);
    return 2;
  }
  const int64_t n = std::atoll(argv[1]), c = std::atoll(argv[2]), s = std::atoll(argv[3]);
  const bnorm_layout layout = argc > 4 ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST;
  const auto size = static_cast<size_t>(n * c * s);
  std::vector<float> x(size), y(size), dy(size), dx(size);
  std::vector<float> mean(c), invstd(c), weight(c, 1.5f), bias(c, 0.2f), dw(c), db(c);
  uint32_t r = 1;
  auto next = [&] { r = r * 1664525u + 1013904223u; return static_cast<float>(r >> 8) / 16777216.0f; };
  for (float& v : x) v = next() * 3 + 1000.0f;  // a large mean, as in the numerics tests
  for (float& v : dy) v = next() - 0.5f;
  bnorm_set_num_threads(2);
  auto median_seconds = [](auto&& pass) {
    std::vector<double> t;
    for (int k = 0; k < 9; ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      pass();
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  const double forward = median_seconds([&] {
    bnorm_batch_norm_forward_training_f32(layout, n, c, s, x.data(), y.data(), weight.data(),
                                          bias.data(), 1e-5, 0.1, nullptr, nullptr, mean.data(),
                                          invstd.data());
  });
  const double backward = median_seconds([&] {
    bnorm_batch_norm_backward_f32(layout, n, c, s, x.data(), dy.data(), dx.data(), weight.data(),
                                  mean.data(), invstd.data(), dw.data(), db.data());
  });
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the bits
  for (const auto* v : {&y, &mean, &invstd, &dx, &dw, &db})
    for (float f : *v) {
      uint32_t u;
      std::memcpy(&u, &f, sizeof u);
      h = (h ^ u) * 1099511628211ull;
    }
  const double bytes = static_cast<double>(size) * sizeof(float);
  std::printf("hash %016llx  forward-train %.1f GB/s  backward %.1f GB/s\n",
              static_cast<unsigned long long>(h), 2 * bytes / forward / 1e9,
              3 * bytes / backward / 1e9);
  return 0;
}
