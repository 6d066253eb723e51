#include "nn/norm_layers.h"

#include <sstream>
#include <stdexcept>
#include <utility>

namespace bnorm::nn {
namespace {

std::string tuple_of(const std::vector<int64_t>& sizes) {
  std::ostringstream s;
  s << '(';
  for (size_t d = 0; d < sizes.size(); ++d) s << (d ? ", " : "") << sizes[d];
  s << (sizes.size() == 1 ? ",)" : ")");
  return s.str();
}

// The trailing dims of `in` equal `shape`?
bool ends_with(const Shape& in, const std::vector<int64_t>& shape) {
  const int k = static_cast<int>(shape.size());
  if (in.rank() < k + 1) return false;  // a batch dim, then the normalized ones
  for (int d = 0; d < k; ++d)
    if (in[in.rank() - k + d] != shape[static_cast<size_t>(d)]) return false;
  return true;
}

}  // namespace

template <class T>
NormLayer<T>::NormLayer(Module module, int instance_spatial_rank)
    : module_(std::move(module)), instance_spatial_rank_(instance_spatial_rank) {
  if (instance_spatial_rank < 1 || instance_spatial_rank > 2)
    throw std::invalid_argument("NormLayer: instance_spatial_rank must be 1 or 2");
}

template <class T>
std::string NormLayer<T>::describe() const {
  std::ostringstream s;
  if (const auto* m = std::get_if<LayerNorm<T>>(&module_))
    s << "LayerNorm(" << tuple_of(m->normalized_shape()) << ")";
  else if (const auto* r = std::get_if<RMSNorm<T>>(&module_))
    s << "RMSNorm(" << tuple_of(r->normalized_shape()) << ")";
  else if (const auto* g = std::get_if<GroupNorm<T>>(&module_))
    s << "GroupNorm(" << g->num_groups() << ", " << g->num_channels() << ")";
  else if (const auto* i = std::get_if<InstanceNorm<T>>(&module_))
    s << "InstanceNorm" << instance_spatial_rank_ << "d(" << i->num_features()
      << (i->options().affine ? ", affine=True" : "") << ")";
  return s.str();
}

// Called for every batch: the expected-input text is built only for the error, so that a
// steady training loop allocates nothing (test_no_allocation.cpp).
template <class T>
Shape NormLayer<T>::output_shape(const Shape& in) const {
  bool ok = false;
  if (const auto* m = std::get_if<LayerNorm<T>>(&module_))
    ok = ends_with(in, m->normalized_shape());
  else if (const auto* r = std::get_if<RMSNorm<T>>(&module_))
    ok = ends_with(in, r->normalized_shape());
  else if (const auto* g = std::get_if<GroupNorm<T>>(&module_))
    ok = in.rank() >= 2 && in[1] == g->num_channels();
  else if (const auto* i = std::get_if<InstanceNorm<T>>(&module_))
    ok = in.rank() == 2 + instance_spatial_rank_ && in[1] == i->num_features();
  if (ok) return in;
  std::string expected;
  if (const auto* m = std::get_if<LayerNorm<T>>(&module_))
    expected = "(N, " + tuple_of(m->normalized_shape()).substr(1);
  else if (const auto* r = std::get_if<RMSNorm<T>>(&module_))
    expected = "(N, " + tuple_of(r->normalized_shape()).substr(1);
  else if (const auto* g = std::get_if<GroupNorm<T>>(&module_))
    expected = "(N, C, *) with C = " + std::to_string(g->num_channels());
  else if (const auto* i = std::get_if<InstanceNorm<T>>(&module_))
    expected = (instance_spatial_rank_ == 2 ? "(N, C, H, W)" : "(N, C, L)") +
               std::string(" with C = ") + std::to_string(i->num_features());
  throw std::invalid_argument(describe() + ": expected input " + expected + ", got " + in.str());
}

template <class T>
void NormLayer<T>::point_views(const Tensor<T>& x) {
  const auto sizes = x.shape().sizes();
  for (auto* v : {&x_view_.sizes, &dy_view_.sizes, &y_view_.sizes, &dx_view_.sizes})
    v->assign(sizes.begin(), sizes.end());  // reuses capacity: no allocation once sized
}

template <class T>
void NormLayer<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  point_views(x);
  x_view_.data = x.data();
  y_view_.data = y.data();
  std::visit([&](auto& m) { m.forward(x_view_, y_view_); }, module_);
}

template <class T>
void NormLayer<T>::backward(const Tensor<T>& x, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                            Tensor<T>* dx) {
  point_views(x);
  x_view_.data = x.data();
  dy_view_.data = dy.data();
  dx_view_.data = dx ? dx->data() : nullptr;  // null: the library skips dx
  std::visit([&](auto& m) { m.backward(x_view_, dy_view_, dx_view_); }, module_);
}

template <class T>
void NormLayer<T>::set_training(bool training) {
  Layer<T>::set_training(training);
  std::visit([&](auto& m) { m.train(training); }, module_);
}

template <class T>
void NormLayer<T>::collect_state(StateLists<T>& out, const std::string& prefix) {
  auto add = [&](const char* name, const Shape& shape, std::span<T> value, std::span<const T> grad) {
    if (!value.empty()) out.parameters.push_back({prefix + name, shape, value, grad});
  };
  if (auto* m = std::get_if<LayerNorm<T>>(&module_)) {
    const Shape s = Shape::from(m->normalized_shape());
    add("weight", s, m->weight(), m->grad_weight());
    add("bias", s, m->bias(), m->grad_bias());
  } else if (auto* r = std::get_if<RMSNorm<T>>(&module_)) {
    add("weight", Shape::from(r->normalized_shape()), r->weight(), r->grad_weight());
  } else if (auto* g = std::get_if<GroupNorm<T>>(&module_)) {
    add("weight", Shape{g->num_channels()}, g->weight(), g->grad_weight());
    add("bias", Shape{g->num_channels()}, g->bias(), g->grad_bias());
  } else if (auto* i = std::get_if<InstanceNorm<T>>(&module_)) {
    const Shape c{i->num_features()};
    add("weight", c, i->weight(), i->grad_weight());
    add("bias", c, i->bias(), i->grad_bias());
    if (i->options().track_running_stats) {
      out.buffers.push_back({prefix + "running_mean", c, i->running_mean()});
      out.buffers.push_back({prefix + "running_var", c, i->running_var()});
    }
  }
}

template class NormLayer<float>;
template class NormLayer<double>;

}  // namespace bnorm::nn
