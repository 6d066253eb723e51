// PyTorch's ATen CPU batch norm (libtorch), called as torch.nn.functional does:
// the functional ops allocate their outputs on every call (ATen 1.13 has no CPU
// out= kernel for batch norm, its _out variants compute then copy).
// The only file that includes ATen: its headers are heavy to compile.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <stdexcept>

#include "peer.hpp"

namespace bnorm_bench {
namespace {

class AtenPeer final : public Peer {
 public:
  std::string name() const override { return "aten"; }
  void set_threads(int threads) override { at::set_num_threads(threads); }

  void setup(const Shape &shape, Layout layout) override {
    auto format = at::MemoryFormat::Contiguous;
    if (layout == Layout::channels_last) {
      switch (shape.dims.size()) {
        case 2: break;  // (N, C): both layouts are the same memory
        case 4: format = at::MemoryFormat::ChannelsLast; break;
        case 5: format = at::MemoryFormat::ChannelsLast3d; break;
        default: throw std::runtime_error("ATen has no channels-last format for this rank");
      }
    }
    const auto options = at::TensorOptions().dtype(at::kFloat);
    const at::IntArrayRef dims(shape.dims);
    x_ = at::empty(dims, options.memory_format(format));
    dy_ = at::empty(dims, options.memory_format(format));
    fill_pattern(x_.data_ptr<float>(), shape.numel(), 1, 0.5f);
    fill_pattern(dy_.data_ptr<float>(), shape.numel(), 2);
    weight_ = at::full({shape.c()}, 1.5f, options);
    bias_ = at::full({shape.c()}, 0.25f, options);
    running_mean_ = at::zeros({shape.c()}, options);
    running_var_ = at::ones({shape.c()}, options);
    auto forward = at::native_batch_norm(x_, weight_, bias_, running_mean_, running_var_,
                                         true, kMomentum, kEps);
    save_mean_ = std::get<1>(forward);
    save_invstd_ = std::get<2>(forward);
  }

  void run(Pass pass) override {
    switch (pass) {
      case Pass::forward_train:
        at::native_batch_norm(x_, weight_, bias_, running_mean_, running_var_, true,
                              kMomentum, kEps);
        break;
      case Pass::inference:
        at::native_batch_norm(x_, weight_, bias_, running_mean_, running_var_, false,
                              kMomentum, kEps);
        break;
      case Pass::backward:
        at::native_batch_norm_backward(dy_, x_, weight_, running_mean_, running_var_,
                                       save_mean_, save_invstd_, true, kEps,
                                       {true, true, true});
        break;
    }
  }

  void teardown() override {
    x_ = dy_ = weight_ = bias_ = running_mean_ = running_var_ = save_mean_ = save_invstd_ =
        at::Tensor();
  }

 private:
  static constexpr double kEps = 1e-5;
  static constexpr double kMomentum = 0.1;
  at::Tensor x_, dy_, weight_, bias_, running_mean_, running_var_, save_mean_, save_invstd_;
};

}  // namespace

std::unique_ptr<Peer> make_aten_peer() { return std::make_unique<AtenPeer>(); }

}  // namespace bnorm_bench
