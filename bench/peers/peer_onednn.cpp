// oneDNN (2.x API) batch normalization and layer normalization, scale and shift as
// separate buffers. oneDNN 2.6 has no group normalization (it came in 3.3), so group and
// instance norm, and RMS norm, are not offered (supports() says no).
// Batch norm: spatial dims are given to oneDNN as (H, W); a (N, C) or (N, C, L) shape
// becomes (N, C, 1, 1) or (N, C, L, 1), the same memory in nchw and nhwc.
// Layer norm: (rows, cols) in format ab, normalized over cols.
// oneDNN here threads with OpenMP, so omp_set_num_threads sets its thread count.
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "peer.hpp"

namespace bnorm_bench {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using flags = dnnl::normalization_flags;

class OnednnPeer final : public Peer {
 public:
  explicit OnednnPeer(bool blocked) : blocked_(blocked) {}

  std::string name() const override { return blocked_ ? "onednn_nChw16c" : "onednn"; }
  void set_threads(int threads) override { omp_set_num_threads(threads); }
  bool supports(Norm norm, Layout layout) const override {
    if (blocked_) return norm == Norm::batch && layout == Layout::channels_first;
    return norm == Norm::batch || norm == Norm::layer;
  }

  void setup(const Problem &problem, Layout layout) override {
    const Shape &shape = problem.shape;
    layer_ = problem.norm == Norm::layer;
    if (layer_) {
      setup_layer(shape);
      return;
    }
    if (problem.norm != Norm::batch) throw std::runtime_error("batch and layer norm only");
    if (blocked_ && layout == Layout::channels_last)
      throw std::runtime_error("nChw16c is a channels-first format");
    if (shape.dims.size() > 4) throw std::runtime_error("only up to 4-D shapes");
    const dnnl::memory::dims dims = {shape.n(), shape.c(),
                                     shape.dims.size() > 2 ? shape.dims[2] : 1,
                                     shape.dims.size() > 3 ? shape.dims[3] : 1};
    const tag format = blocked_ ? tag::nChw16c
                       : layout == Layout::channels_first ? tag::nchw
                                                          : tag::nhwc;
    const dnnl::memory::desc data(dims, dt::f32, format);
    const dnnl::memory::desc channel({shape.c()}, dt::f32, tag::x);

    const auto scale_shift = flags::use_scale | flags::use_shift;
    forward_train_pd_ = dnnl::batch_normalization_forward::primitive_desc(
        {dnnl::prop_kind::forward_training, data, kEps, scale_shift}, engine_);
    forward_inference_pd_ = dnnl::batch_normalization_forward::primitive_desc(
        {dnnl::prop_kind::forward_inference, data, kEps, scale_shift | flags::use_global_stats},
        engine_);
    backward_pd_ = dnnl::batch_normalization_backward::primitive_desc(
        {dnnl::prop_kind::backward, data, data, kEps, scale_shift}, engine_, forward_train_pd_);
    forward_train_ = dnnl::batch_normalization_forward(forward_train_pd_);
    forward_inference_ = dnnl::batch_normalization_forward(forward_inference_pd_);
    backward_ = dnnl::batch_normalization_backward(backward_pd_);

    src_ = make(data, 1, 0.5f, 0.0f);
    dst_ = make(data, 0, 0.0f, 0.0f);
    diff_dst_ = make(data, 2, 0.0f, 0.0f);
    diff_src_ = make(data, 0, 0.0f, 0.0f);
    scale_ = make(channel, 0, 0.0f, 1.5f);
    shift_ = make(channel, 0, 0.0f, 0.25f);
    mean_ = make(channel, 0, 0.0f, 0.0f);
    variance_ = make(channel, 0, 0.0f, 1.0f);
    diff_scale_ = make(channel, 0, 0.0f, 0.0f);
    diff_shift_ = make(channel, 0, 0.0f, 0.0f);
    run(Pass::forward_train);
  }

  void run(Pass pass) override {
    if (layer_) {
      run_layer(pass);
      return;
    }
    switch (pass) {
      case Pass::forward_train:
        forward_train_.execute(stream_, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DST, dst_},
                                         {DNNL_ARG_SCALE, scale_}, {DNNL_ARG_SHIFT, shift_},
                                         {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, variance_}});
        break;
      case Pass::inference:
        forward_inference_.execute(
            stream_, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DST, dst_}, {DNNL_ARG_SCALE, scale_},
                      {DNNL_ARG_SHIFT, shift_}, {DNNL_ARG_MEAN, mean_},
                      {DNNL_ARG_VARIANCE, variance_}});
        break;
      case Pass::backward:
        // oneDNN 2.6 fails to execute a use_shift backward without DNNL_ARG_SHIFT,
        // though the shift does not enter the gradients.
        backward_.execute(stream_, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DIFF_DST, diff_dst_},
                                    {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, variance_},
                                    {DNNL_ARG_SCALE, scale_}, {DNNL_ARG_SHIFT, shift_},
                                    {DNNL_ARG_DIFF_SRC, diff_src_},
                                    {DNNL_ARG_DIFF_SCALE, diff_scale_},
                                    {DNNL_ARG_DIFF_SHIFT, diff_shift_}});
        break;
    }
    stream_.wait();
  }

  void teardown() override {
    src_ = dst_ = diff_dst_ = diff_src_ = mean_ = variance_ = dnnl::memory();
    forward_train_ = dnnl::batch_normalization_forward();
    forward_inference_ = dnnl::batch_normalization_forward();
    backward_ = dnnl::batch_normalization_backward();
    layer_forward_ = dnnl::layer_normalization_forward();
    layer_backward_ = dnnl::layer_normalization_backward();
  }

 private:
  // Padded formats (nChw16c with C % 16 != 0) are larger than numel.
  dnnl::memory make(const dnnl::memory::desc &desc, uint32_t seed, float offset, float fill) {
    dnnl::memory memory(desc, engine_);
    const auto count = static_cast<int64_t>(desc.get_size() / sizeof(float));
    auto *values = static_cast<float *>(memory.get_data_handle());
    if (seed != 0) {
      fill_pattern(values, count, seed, offset);
    } else {
      for (int64_t i = 0; i < count; ++i) values[i] = fill;
    }
    return memory;
  }

  void setup_layer(const Shape &shape) {
    const dnnl::memory::desc data({shape.rows(), shape.cols()}, dt::f32, tag::ab);
    const dnnl::memory::desc column({shape.cols()}, dt::f32, tag::x);
    const auto scale_shift = flags::use_scale | flags::use_shift;
    layer_forward_pd_ = dnnl::layer_normalization_forward::primitive_desc(
        {dnnl::prop_kind::forward_training, data, kEps, scale_shift}, engine_);
    layer_backward_pd_ = dnnl::layer_normalization_backward::primitive_desc(
        {dnnl::prop_kind::backward, data, data, kEps, scale_shift}, engine_, layer_forward_pd_);
    layer_forward_ = dnnl::layer_normalization_forward(layer_forward_pd_);
    layer_backward_ = dnnl::layer_normalization_backward(layer_backward_pd_);
    src_ = make(data, 1, 0.5f, 0.0f);
    dst_ = make(data, 0, 0.0f, 0.0f);
    diff_dst_ = make(data, 2, 0.0f, 0.0f);
    diff_src_ = make(data, 0, 0.0f, 0.0f);
    scale_ = make(column, 0, 0.0f, 1.5f);
    shift_ = make(column, 0, 0.0f, 0.25f);
    mean_ = make(layer_forward_pd_.mean_desc(), 0, 0.0f, 0.0f);
    variance_ = make(layer_forward_pd_.variance_desc(), 0, 0.0f, 1.0f);
    diff_scale_ = make(column, 0, 0.0f, 0.0f);
    diff_shift_ = make(column, 0, 0.0f, 0.0f);
    run_layer(Pass::forward_train);
  }

  void run_layer(Pass pass) {
    if (pass == Pass::forward_train) {
      layer_forward_.execute(stream_, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DST, dst_},
                                       {DNNL_ARG_SCALE, scale_}, {DNNL_ARG_SHIFT, shift_},
                                       {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, variance_}});
    } else if (pass == Pass::backward) {
      layer_backward_.execute(stream_, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DIFF_DST, diff_dst_},
                                        {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, variance_},
                                        {DNNL_ARG_SCALE, scale_}, {DNNL_ARG_SHIFT, shift_},
                                        {DNNL_ARG_DIFF_SRC, diff_src_},
                                        {DNNL_ARG_DIFF_SCALE, diff_scale_},
                                        {DNNL_ARG_DIFF_SHIFT, diff_shift_}});
    } else {
      throw std::runtime_error("no inference pass for layer norm in the table");
    }
    stream_.wait();
  }

  static constexpr float kEps = 1e-5f;
  bool blocked_;
  bool layer_ = false;  // the last setup() was layer norm
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  dnnl::batch_normalization_forward::primitive_desc forward_train_pd_, forward_inference_pd_;
  dnnl::batch_normalization_backward::primitive_desc backward_pd_;
  dnnl::batch_normalization_forward forward_train_, forward_inference_;
  dnnl::batch_normalization_backward backward_;
  dnnl::layer_normalization_forward::primitive_desc layer_forward_pd_;
  dnnl::layer_normalization_backward::primitive_desc layer_backward_pd_;
  dnnl::layer_normalization_forward layer_forward_;
  dnnl::layer_normalization_backward layer_backward_;
  dnnl::memory src_, dst_, diff_dst_, diff_src_, scale_, shift_, mean_, variance_, diff_scale_,
      diff_shift_;
};

}  // namespace

std::unique_ptr<Peer> make_onednn_peer(bool blocked) {
  return std::make_unique<OnednnPeer>(blocked);
}

}  // namespace bnorm_bench
