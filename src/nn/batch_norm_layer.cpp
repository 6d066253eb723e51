#include "nn/batch_norm_layer.h"

#include <sstream>
#include <stdexcept>

namespace bnorm::nn {

template <class T>
BatchNormLayer<T>::BatchNormLayer(int64_t num_features, int spatial_rank,
                                  const BatchNormOptions& options)
    : spatial_rank_(spatial_rank), module_(num_features, options) {
  if (spatial_rank < 0 || spatial_rank > 2)
    throw std::invalid_argument("BatchNormLayer: spatial_rank must be 0, 1 or 2");
}

template <class T>
std::string BatchNormLayer<T>::describe() const {
  std::ostringstream s;
  s << (spatial_rank_ == 2 ? "BatchNorm2d(" : "BatchNorm1d(") << module_.num_features() << ")";
  return s.str();
}

template <class T>
Shape BatchNormLayer<T>::output_shape(const Shape& in) const {
  const bool rank_ok = spatial_rank_ == 2 ? in.rank() == 4 : (in.rank() == 2 || in.rank() == 3);
  if (!rank_ok || in[1] != module_.num_features()) {
    std::ostringstream s;
    s << describe() << ": expected input "
      << (spatial_rank_ == 2 ? "(N, C, H, W)" : "(N, C) or (N, C, L)") << " with C = "
      << module_.num_features() << ", got " << in.str();
    throw std::invalid_argument(s.str());
  }
  return in;
}

template <class T>
void BatchNormLayer<T>::point_views(const Tensor<T>& x) {
  const auto sizes = x.shape().sizes();
  for (auto* v : {&x_view_.sizes, &dy_view_.sizes, &y_view_.sizes, &dx_view_.sizes})
    v->assign(sizes.begin(), sizes.end());  // reuses capacity: no allocation once sized
}

template <class T>
void BatchNormLayer<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  point_views(x);
  x_view_.data = x.data();
  y_view_.data = y.data();
  module_.forward(x_view_, y_view_);
}

template <class T>
void BatchNormLayer<T>::backward(const Tensor<T>& x, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                                 Tensor<T>* dx) {
  point_views(x);
  x_view_.data = x.data();
  dy_view_.data = dy.data();
  dx_view_.data = dx ? dx->data() : nullptr;  // null: the library skips dx
  module_.backward(x_view_, dy_view_, dx_view_);
}

template <class T>
void BatchNormLayer<T>::set_training(bool training) {
  Layer<T>::set_training(training);
  module_.train(training);
}

template <class T>
void BatchNormLayer<T>::collect_state(StateLists<T>& out, const std::string& prefix) {
  const Shape c{module_.num_features()};
  if (module_.options().affine) {
    out.parameters.push_back({prefix + "weight", c, module_.weight(), module_.grad_weight()});
    out.parameters.push_back({prefix + "bias", c, module_.bias(), module_.grad_bias()});
  }
  if (module_.options().track_running_stats) {
    out.buffers.push_back({prefix + "running_mean", c, module_.running_mean()});
    out.buffers.push_back({prefix + "running_var", c, module_.running_var()});
    out.counters.push_back({prefix + "num_batches_tracked",
                            [this] { return module_.num_batches_tracked(); },
                            [this](int64_t v) { module_.set_num_batches_tracked(v); }});
  }
}

template class BatchNormLayer<float>;
template class BatchNormLayer<double>;

}  // namespace bnorm::nn
