// bnorm's C API, the library under test.
#include <stdexcept>
#include <string>
#include <vector>

#include "bnorm/bnorm.h"
#include "peer.hpp"

namespace bnorm_bench {
namespace {

class BnormPeer final : public Peer {
 public:
  std::string name() const override { return "bnorm"; }
  void set_threads(int threads) override { bnorm_set_num_threads(threads); }

  void setup(const Shape &shape, Layout layout) override {
    n_ = shape.n();
    c_ = shape.c();
    spatial_ = shape.spatial();
    layout_ = layout == Layout::channels_first ? BNORM_CHANNELS_FIRST : BNORM_CHANNELS_LAST;
    const auto count = static_cast<size_t>(shape.numel());
    const auto channels = static_cast<size_t>(c_);
    x_.assign(count, 0.0f);
    y_.assign(count, 0.0f);
    dy_.assign(count, 0.0f);
    dx_.assign(count, 0.0f);
    fill_pattern(x_.data(), shape.numel(), 1, 0.5f);
    fill_pattern(dy_.data(), shape.numel(), 2);
    weight_.assign(channels, 1.5f);
    bias_.assign(channels, 0.25f);
    running_mean_.assign(channels, 0.0f);
    running_var_.assign(channels, 1.0f);
    save_mean_.assign(channels, 0.0f);
    save_invstd_.assign(channels, 1.0f);
    dweight_.assign(channels, 0.0f);
    dbias_.assign(channels, 0.0f);
    // backward needs the saved statistics of a training forward.
    run(Pass::forward_train);
  }

  void run(Pass pass) override {
    bnorm_status status = BNORM_SUCCESS;
    switch (pass) {
      case Pass::forward_train:
        status = bnorm_batch_norm_forward_training_f32(
            layout_, n_, c_, spatial_, x_.data(), y_.data(), weight_.data(), bias_.data(),
            kEps, kMomentum, running_mean_.data(), running_var_.data(), save_mean_.data(),
            save_invstd_.data());
        break;
      case Pass::inference:
        status = bnorm_batch_norm_forward_inference_f32(
            layout_, n_, c_, spatial_, x_.data(), y_.data(), weight_.data(), bias_.data(),
            running_mean_.data(), running_var_.data(), kEps);
        break;
      case Pass::backward:
        status = bnorm_batch_norm_backward_f32(
            layout_, n_, c_, spatial_, x_.data(), dy_.data(), dx_.data(), weight_.data(),
            save_mean_.data(), save_invstd_.data(), dweight_.data(), dbias_.data());
        break;
    }
    if (status != BNORM_SUCCESS) throw std::runtime_error(bnorm_last_error());
  }

  void teardown() override {
    for (auto *v : {&x_, &y_, &dy_, &dx_}) Floats().swap(*v);
  }

 private:
  static constexpr double kEps = 1e-5;
  static constexpr double kMomentum = 0.1;
  int64_t n_ = 0, c_ = 0, spatial_ = 0;
  bnorm_layout layout_ = BNORM_CHANNELS_FIRST;
  Floats x_, y_, dy_, dx_;
  std::vector<float> weight_, bias_, running_mean_, running_var_, save_mean_, save_invstd_,
      dweight_, dbias_;
};

}  // namespace

std::unique_ptr<Peer> make_bnorm_peer() { return std::make_unique<BnormPeer>(); }

}  // namespace bnorm_bench
