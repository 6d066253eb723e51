// PyTorch's ATen CPU normalizations (libtorch 1.13), called as torch.nn.functional and
// autograd call them, with weight and bias, all three gradients asked for:
// - batch:    at::native_batch_norm / native_batch_norm_backward.
// - layer:    at::native_layer_norm / native_layer_norm_backward over the last dim.
// - group:    at::native_group_norm / native_group_norm_backward. F.group_norm hands the
//             forward its input in its own memory format (channels-last kept); autograd
//             hands the 1.13 backward dy and x made contiguous, so channels-last backward
//             pays both copies here too. (Called directly on channels-last tensors, the
//             1.13 backward kernel ignores the strides and returns wrong values.)
// - instance: at::instance_norm, which runs batch norm on x.contiguous() viewed as
//             (1, N*C, spatial...); its backward is what autograd runs for that graph:
//             dy made contiguous, native_batch_norm_backward on the view with the weight
//             repeated N times, dweight and dbias summed over the N repeats.
// - rms:      none in PyTorch 1.13 (supports() says no).
// The ops allocate their outputs on every call, as PyTorch does (ATen 1.13 has no CPU
// out= kernel for these; the _out variants compute then copy).
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
  bool supports(Norm norm, Layout) const override { return norm != Norm::rms; }

  void setup(const Problem &problem, Layout layout) override {
    problem_ = problem;
    const Shape &shape = problem.shape;
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
    const int64_t features = problem.row_wise() ? shape.cols() : shape.c();
    weight_ = at::full({features}, 1.5f, options);
    bias_ = at::full({features}, 0.25f, options);
    running_mean_ = at::zeros({features}, options);
    running_var_ = at::ones({features}, options);
    if (problem.norm == Norm::instance) {
      // What at::instance_norm builds, kept as autograd keeps it for the backward.
      instance_dims_ = shape.dims;
      instance_dims_[0] = 1;
      instance_dims_[1] = shape.n() * shape.c();
      instance_x_ = x_.contiguous().view(instance_dims_);
      instance_weight_ = weight_.repeat({shape.n()});
      auto forward = at::native_batch_norm(instance_x_, instance_weight_, bias_.repeat({shape.n()}),
                                           {}, {}, true, kMomentum, kEps);
      save_mean_ = std::get<1>(forward);
      save_invstd_ = std::get<2>(forward);
    } else if (problem.norm != Norm::rms) {
      auto saved = forward_train();
      save_mean_ = std::get<1>(saved);
      save_invstd_ = std::get<2>(saved);
    }
  }

  void run(Pass pass) override {
    const Shape &s = problem_.shape;
    switch (problem_.norm) {
      case Norm::batch:
        if (pass == Pass::backward) {
          at::native_batch_norm_backward(dy_, x_, weight_, running_mean_, running_var_,
                                         save_mean_, save_invstd_, true, kEps, kAll);
        } else {
          at::native_batch_norm(x_, weight_, bias_, running_mean_, running_var_,
                                pass == Pass::forward_train, kMomentum, kEps);
        }
        return;
      case Norm::layer:
        if (pass == Pass::forward_train) {
          forward_train();
        } else if (pass == Pass::backward) {
          at::native_layer_norm_backward(dy_, x_, {s.cols()}, save_mean_, save_invstd_,
                                         weight_, bias_, kAll);
        } else {
          break;
        }
        return;
      case Norm::group:
        if (pass == Pass::forward_train) {
          forward_train();
        } else if (pass == Pass::backward) {
          at::native_group_norm_backward(dy_.contiguous(), x_.contiguous(), save_mean_,
                                         save_invstd_, weight_, s.n(), s.c(), s.spatial(),
                                         problem_.groups, kAll);
        } else {
          break;
        }
        return;
      case Norm::instance:
        if (pass == Pass::forward_train) {
          at::instance_norm(x_, weight_, bias_, {}, {}, true, kMomentum, kEps, false);
        } else if (pass == Pass::backward) {
          auto grads = at::native_batch_norm_backward(
              dy_.contiguous().view(instance_dims_), instance_x_, instance_weight_, {}, {},
              save_mean_, save_invstd_, true, kEps, kAll);
          std::get<1>(grads).view({s.n(), s.c()}).sum(0);
          std::get<2>(grads).view({s.n(), s.c()}).sum(0);
        } else {
          break;
        }
        return;
      case Norm::rms: break;
    }
    throw std::runtime_error(std::string("no ") + pass_name(pass) + " pass for " +
                             norm_name(problem_.norm) + " norm");
  }

  void teardown() override {
    x_ = dy_ = weight_ = bias_ = running_mean_ = running_var_ = save_mean_ = save_invstd_ =
        instance_x_ = instance_weight_ = at::Tensor();
  }

 private:
  // The training forward of layer and group norm: (y, mean, rstd).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_train() {
    const Shape &s = problem_.shape;
    switch (problem_.norm) {
      case Norm::batch:
        return at::native_batch_norm(x_, weight_, bias_, running_mean_, running_var_, true,
                                     kMomentum, kEps);
      case Norm::layer: return at::native_layer_norm(x_, {s.cols()}, weight_, bias_, kEps);
      case Norm::group:
        return at::native_group_norm(x_, weight_, bias_, s.n(), s.c(), s.spatial(),
                                     problem_.groups, kEps);
      default: throw std::logic_error("forward_train: batch, layer or group norm only");
    }
  }

  static constexpr double kEps = 1e-5;
  static constexpr double kMomentum = 0.1;
  static constexpr std::array<bool, 3> kAll = {true, true, true};
  Problem problem_;
  std::vector<int64_t> instance_dims_;
  at::Tensor x_, dy_, weight_, bias_, running_mean_, running_var_, save_mean_, save_invstd_,
      instance_x_, instance_weight_;
};

}  // namespace

std::unique_ptr<Peer> make_aten_peer() { return std::make_unique<AtenPeer>(); }

}  // namespace bnorm_bench
