// Kernel throughput with the memory-copy ceiling beside it, in one run.
//
//   build/bench/bench_batch_norm [--benchmark_filter=...]
//
// GB/s = model bytes / time, with the model of ../docs/benchmarks.md (the fewest bytes
// each operation must move): copy 2T, inference 2T, forward-train 2T, backward 3T,
// where T is one tensor's size. A kernel at the copy's GB/s moves no more than that.
// The side-by-side with PyTorch is bench/compare_torch.py.
#include <benchmark/benchmark.h>
#include <bnorm/bnorm.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

namespace {

constexpr int64_t kN = 64, kC = 64, kSpatial = 56 * 56;
constexpr int64_t kSize = kN * kC * kSpatial;
constexpr double kTensorBytes = kSize * sizeof(float);

struct Buffers {
  std::vector<float> x, y, dy, dx, weight, bias, mean, invstd, running_mean, running_var;
  Buffers()
      : x(kSize), y(kSize), dy(kSize), dx(kSize), weight(kC, 1.5f), bias(kC, 0.5f), mean(kC),
        invstd(kC), running_mean(kC, 0.f), running_var(kC, 1.f) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (auto& v : x) v = 3.f + normal(rng);
    for (auto& v : dy) v = normal(rng);
  }
};

Buffers& buffers() {
  static Buffers b;
  return b;
}

bnorm_layout layout_of(const benchmark::State& state) {
  return state.range(0) ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST;
}

void finish(benchmark::State& state, double model_tensors) {
  state.SetBytesProcessed(static_cast<int64_t>(static_cast<double>(state.iterations()) * model_tensors * kTensorBytes));
  state.SetLabel(state.range(0) ? "channels_last" : "channels_first");
}

// The ceiling: a copy of one tensor split over the same threads the kernels use.
void BM_memcpy(benchmark::State& state) {
  Buffers& b = buffers();
  const int threads = bnorm_get_num_threads();
  const int64_t piece = (kSize + threads - 1) / threads;
  for (auto _ : state) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      const int64_t begin = t * piece, count = std::min(piece, kSize - begin);
      if (count > 0)
        std::memcpy(b.y.data() + begin, b.x.data() + begin, static_cast<size_t>(count) * sizeof(float));
    }
    benchmark::ClobberMemory();
  }
  finish(state, 2);
}

void BM_forward_training(benchmark::State& state) {
  Buffers& b = buffers();
  for (auto _ : state)
    bnorm_batch_norm_forward_training_f32(layout_of(state), kN, kC, kSpatial, b.x.data(),
                                          b.y.data(), b.weight.data(), b.bias.data(), 1e-5, 0.1,
                                          b.running_mean.data(), b.running_var.data(),
                                          b.mean.data(), b.invstd.data());
  finish(state, 2);
}

void BM_forward_inference(benchmark::State& state) {
  Buffers& b = buffers();
  for (auto _ : state)
    bnorm_batch_norm_forward_inference_f32(layout_of(state), kN, kC, kSpatial, b.x.data(),
                                           b.y.data(), b.weight.data(), b.bias.data(),
                                           b.running_mean.data(), b.running_var.data(), 1e-5);
  finish(state, 2);
}

void BM_backward(benchmark::State& state) {
  Buffers& b = buffers();
  bnorm_batch_norm_forward_training_f32(layout_of(state), kN, kC, kSpatial, b.x.data(),
                                        b.y.data(), b.weight.data(), b.bias.data(), 1e-5, 0.1,
                                        nullptr, nullptr, b.mean.data(), b.invstd.data());
  std::vector<float> dweight(kC), dbias(kC);
  for (auto _ : state)
    bnorm_batch_norm_backward_f32(layout_of(state), kN, kC, kSpatial, b.x.data(), b.dy.data(),
                                  b.dx.data(), b.weight.data(), b.mean.data(), b.invstd.data(),
                                  dweight.data(), dbias.data());
  finish(state, 3);
}

}  // namespace

BENCHMARK(BM_memcpy)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward_training)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward_inference)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_backward)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
