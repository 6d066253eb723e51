// bnorm's C API, the library under test: every normalization of the table.
// Weight and bias are always given (the backward computes dx, dweight and dbias), the
// forward saves the statistics the backward needs, and instance norm keeps no running
// statistics (PyTorch's default, track_running_stats=False).
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
  bool supports(Norm, Layout) const override { return true; }

  void setup(const Problem &problem, Layout layout) override {
    problem_ = problem;
    const Shape &shape = problem.shape;
    layout_ = layout == Layout::channels_last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST;
    const auto count = static_cast<size_t>(shape.numel());
    x_.assign(count, 0.0f);
    y_.assign(count, 0.0f);
    dy_.assign(count, 0.0f);
    dx_.assign(count, 0.0f);
    fill_pattern(x_.data(), shape.numel(), 1, 0.5f);
    fill_pattern(dy_.data(), shape.numel(), 2);
    // Per channel (per column for the row-wise norms): weight, bias, their gradients
    // and batch norm's running statistics. Saved statistics: one per reduced set.
    const auto features = static_cast<size_t>(problem.row_wise() ? shape.cols() : shape.c());
    size_t sets = features;
    switch (problem.norm) {
      case Norm::batch: break;
      case Norm::layer:
      case Norm::rms: sets = static_cast<size_t>(shape.rows()); break;
      case Norm::group:
      case Norm::instance: sets = static_cast<size_t>(shape.n() * problem.groups); break;
    }
    weight_.assign(features, 1.5f);
    bias_.assign(features, 0.25f);
    running_mean_.assign(features, 0.0f);
    running_var_.assign(features, 1.0f);
    dweight_.assign(features, 0.0f);
    dbias_.assign(features, 0.0f);
    save_mean_.assign(sets, 0.0f);
    save_invstd_.assign(sets, 1.0f);
    // backward needs the saved statistics of a training forward.
    run(Pass::forward_train);
  }

  void run(Pass pass) override {
    const bnorm_status status = problem_.row_wise() ? run_rows(pass) : run_channels(pass);
    if (status != BNORM_SUCCESS) throw std::runtime_error(bnorm_last_error());
  }

  void teardown() override {
    for (auto *v : {&x_, &y_, &dy_, &dx_}) Floats().swap(*v);
  }

 private:
  // The (N, C, spatial...) norms: batch, group, instance.
  bnorm_status run_channels(Pass pass) {
    const Shape &s = problem_.shape;
    const int64_t n = s.n(), c = s.c(), spatial = s.spatial(), groups = problem_.groups;
    float *mean = save_mean_.data(), *invstd = save_invstd_.data();
    switch (problem_.norm) {
      case Norm::batch:
        switch (pass) {
          case Pass::forward_train:
            return bnorm_batch_norm_forward_training_f32(
                layout_, n, c, spatial, x_.data(), y_.data(), weight_.data(), bias_.data(),
                kEps, kMomentum, running_mean_.data(), running_var_.data(), mean, invstd);
          case Pass::inference:
            return bnorm_batch_norm_forward_inference_f32(
                layout_, n, c, spatial, x_.data(), y_.data(), weight_.data(), bias_.data(),
                running_mean_.data(), running_var_.data(), kEps);
          case Pass::backward:
            return bnorm_batch_norm_backward_f32(layout_, n, c, spatial, x_.data(), dy_.data(),
                                                 dx_.data(), weight_.data(), mean, invstd,
                                                 dweight_.data(), dbias_.data());
        }
        break;
      case Norm::group:
        if (pass == Pass::forward_train)
          return bnorm_group_norm_forward_f32(layout_, n, c, spatial, groups, x_.data(),
                                              y_.data(), weight_.data(), bias_.data(), kEps,
                                              mean, invstd);
        if (pass == Pass::backward)
          return bnorm_group_norm_backward_f32(layout_, n, c, spatial, groups, x_.data(),
                                               dy_.data(), dx_.data(), weight_.data(), mean,
                                               invstd, dweight_.data(), dbias_.data());
        break;
      case Norm::instance:
        if (pass == Pass::forward_train)
          return bnorm_instance_norm_forward_training_f32(
              layout_, n, c, spatial, x_.data(), y_.data(), weight_.data(), bias_.data(), kEps,
              kMomentum, nullptr, nullptr, mean, invstd);
        if (pass == Pass::backward)
          return bnorm_instance_norm_backward_f32(layout_, n, c, spatial, x_.data(), dy_.data(),
                                                  dx_.data(), weight_.data(), mean, invstd,
                                                  dweight_.data(), dbias_.data());
        break;
      case Norm::layer:
      case Norm::rms: break;
    }
    throw std::runtime_error(std::string("no ") + pass_name(pass) + " pass for " +
                             norm_name(problem_.norm) + " norm in the table");
  }

  // The row-wise norms: layer, rms.
  bnorm_status run_rows(Pass pass) {
    const int64_t rows = problem_.shape.rows(), cols = problem_.shape.cols();
    float *mean = save_mean_.data(), *rstd = save_invstd_.data();
    if (problem_.norm == Norm::layer && pass == Pass::forward_train)
      return bnorm_layer_norm_forward_f32(rows, cols, x_.data(), y_.data(), weight_.data(),
                                          bias_.data(), kEps, mean, rstd);
    if (problem_.norm == Norm::layer && pass == Pass::backward)
      return bnorm_layer_norm_backward_f32(rows, cols, x_.data(), dy_.data(), dx_.data(),
                                           weight_.data(), mean, rstd, dweight_.data(),
                                           dbias_.data());
    if (problem_.norm == Norm::rms && pass == Pass::forward_train)
      return bnorm_rms_norm_forward_f32(rows, cols, x_.data(), y_.data(), weight_.data(), kEps,
                                        rstd);
    if (problem_.norm == Norm::rms && pass == Pass::backward)
      return bnorm_rms_norm_backward_f32(rows, cols, x_.data(), dy_.data(), dx_.data(),
                                         weight_.data(), rstd, dweight_.data());
    throw std::runtime_error(std::string("no ") + pass_name(pass) + " pass for " +
                             norm_name(problem_.norm) + " norm in the table");
  }

  static constexpr double kEps = 1e-5;
  static constexpr double kMomentum = 0.1;
  Problem problem_;
  bnorm_layout layout_ = BNORM_CHANNELS_FIRST;
  Floats x_, y_, dy_, dx_;
  std::vector<float> weight_, bias_, running_mean_, running_var_, save_mean_, save_invstd_,
      dweight_, dbias_;
};

}  // namespace

std::unique_ptr<Peer> make_bnorm_peer() { return std::make_unique<BnormPeer>(); }

}  // namespace bnorm_bench
