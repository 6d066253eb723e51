// The ceiling: a memory copy of one tensor (T read + T written) with the threads, each
// copying one equal contiguous part; or with one thread when that is faster (a tensor
// of a few hundred KiB is copied before a second thread has woken up), so that the
// ceiling is the fastest copy, not the cost of starting threads.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "peer.hpp"

namespace bnorm_bench {
namespace {

class CopyPeer final : public Peer {
 public:
  std::string name() const override { return "copy"; }
  void set_threads(int threads) override { threads_ = threads; }
  bool supports(Norm, Layout) const override { return true; }

  void setup(const Problem &problem, Layout) override {
    count_ = problem.shape.numel();
    src_.assign(static_cast<size_t>(count_), 0.0f);
    dst_.assign(static_cast<size_t>(count_), 0.0f);
    fill_pattern(src_.data(), count_, 3);
    split_ = threads_ > 1 && faster_split();
  }

  // Every pass is the same copy; main scales it to each pass's bytes.
  void run(Pass) override { copy(split_); }

  void teardown() override {
    Floats().swap(src_);
    Floats().swap(dst_);
  }

 private:
  // Median of 5 timings (after one untimed) of each way, alternating.
  bool faster_split() {
    std::vector<double> times[2];
    for (int k = 0; k < 6; ++k)
      for (const bool split : {false, true}) {
        const auto t0 = std::chrono::steady_clock::now();
        copy(split);
        if (k) times[split].push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    for (auto &t : times) std::sort(t.begin(), t.end());
    return times[1][2] < times[0][2];
  }

  void copy(bool split) {
    const float *src = src_.data();
    float *dst = dst_.data();
    const int64_t count = count_;
    if (!split) {
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
      return;
    }
#pragma omp parallel num_threads(threads_)
    {
      const int64_t parts = omp_get_num_threads();
      const int64_t part = omp_get_thread_num();
      const int64_t begin = count * part / parts;
      const int64_t end = count * (part + 1) / parts;
      std::memcpy(dst + begin, src + begin, static_cast<size_t>(end - begin) * sizeof(float));
    }
  }

  int threads_ = 1;
  int64_t count_ = 0;
  bool split_ = false;
  Floats src_, dst_;
};

}  // namespace

std::unique_ptr<Peer> make_copy_peer() { return std::make_unique<CopyPeer>(); }

}  // namespace bnorm_bench
