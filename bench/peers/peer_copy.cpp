// The ceiling: a multi-threaded memcpy of one tensor (T read + T written), each
// thread copying one equal contiguous part.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "peer.hpp"

namespace bnorm_bench {
namespace {

class CopyPeer final : public Peer {
 public:
  std::string name() const override { return "copy"; }
  void set_threads(int threads) override { threads_ = threads; }

  void setup(const Shape &shape, Layout) override {
    count_ = shape.numel();
    src_.assign(static_cast<size_t>(count_), 0.0f);
    dst_.assign(static_cast<size_t>(count_), 0.0f);
    fill_pattern(src_.data(), count_, 3);
  }

  // Every pass is the same copy; main scales it to each pass's bytes.
  void run(Pass) override {
    const float *src = src_.data();
    float *dst = dst_.data();
    const int64_t count = count_;
#pragma omp parallel num_threads(threads_)
    {
      const int64_t parts = omp_get_num_threads();
      const int64_t part = omp_get_thread_num();
      const int64_t begin = count * part / parts;
      const int64_t end = count * (part + 1) / parts;
      std::memcpy(dst + begin, src + begin, static_cast<size_t>(end - begin) * sizeof(float));
    }
  }

  void teardown() override {
    std::vector<float>().swap(src_);
    std::vector<float>().swap(dst_);
  }

 private:
  int threads_ = 1;
  int64_t count_ = 0;
  std::vector<float> src_, dst_;
};

}  // namespace

std::unique_ptr<Peer> make_copy_peer() { return std::make_unique<CopyPeer>(); }

}  // namespace bnorm_bench
