#include "nn/sequential.h"

#include <algorithm>
#include <chrono>
#include <sstream>
#include <stdexcept>

namespace bnorm::nn {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

template <class T>
void Sequential<T>::attach_profile(LayerProfile* profile) {
  profile_ = profile;
  if (profile_) {
    profile_->forward_seconds.resize(layers_.size(), 0.0);
    profile_->backward_seconds.resize(layers_.size(), 0.0);
  }
}

template <class T>
Layer<T>& Sequential<T>::add(std::unique_ptr<Layer<T>> layer) {
  layer->set_training(training_);
  layers_.push_back(std::move(layer));
  ++structure_;
  outputs_.emplace_back();
  gradients_.emplace_back();
  attach_profile(profile_);  // a layer added later is timed too
  return *layers_.back();
}

template <class T>
std::unique_ptr<Layer<T>> Sequential<T>::replace(size_t i, std::unique_ptr<Layer<T>> layer) {
  if (i >= layers_.size() || !layer)
    throw std::invalid_argument("Sequential::replace: no layer " + std::to_string(i));
  layer->set_training(training_);
  std::swap(layers_[i], layer);
  ++structure_;
  input_ = nullptr;  // the kept activations belong to the old layer
  return layer;
}

template <class T>
void Sequential<T>::erase(size_t i) {
  if (i >= layers_.size())
    throw std::invalid_argument("Sequential::erase: no layer " + std::to_string(i));
  layers_.erase(layers_.begin() + static_cast<std::ptrdiff_t>(i));
  ++structure_;
  outputs_.erase(outputs_.begin() + static_cast<std::ptrdiff_t>(i));
  gradients_.erase(gradients_.begin() + static_cast<std::ptrdiff_t>(i));
  input_ = nullptr;
  if (profile_) {
    profile_->forward_seconds.assign(layers_.size(), 0.0);
    profile_->backward_seconds.assign(layers_.size(), 0.0);
  }
}

template <class T>
void Sequential<T>::insert(size_t i, std::unique_ptr<Layer<T>> layer) {
  if (i > layers_.size() || !layer)
    throw std::invalid_argument("Sequential::insert: no place " + std::to_string(i));
  layer->set_training(training_);
  const auto at = static_cast<std::ptrdiff_t>(i);
  layers_.insert(layers_.begin() + at, std::move(layer));
  ++structure_;
  outputs_.insert(outputs_.begin() + at, Tensor<T>());
  gradients_.insert(gradients_.begin() + at, Tensor<T>());
  input_ = nullptr;
  if (profile_) {
    profile_->forward_seconds.assign(layers_.size(), 0.0);
    profile_->backward_seconds.assign(layers_.size(), 0.0);
  }
}

template <class T>
void Sequential<T>::copy_state_from(Sequential& from) {
  const StateLists<T> src = from.state();
  StateLists<T> dst = state();
  auto differ = [](const std::string& what) {
    throw std::invalid_argument("Sequential::copy_state_from: the models differ: " + what);
  };
  if (src.parameters.size() != dst.parameters.size() || src.buffers.size() != dst.buffers.size() ||
      src.counters.size() != dst.counters.size())
    differ("not the same number of parameters, buffers or counters");
  auto check = [&](const auto& a, const auto& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i].name != b[i].name || a[i].value.size() != b[i].value.size())
        differ(a[i].name + " " + a[i].shape.str() + " vs " + b[i].name + " " + b[i].shape.str());
  };
  check(src.parameters, dst.parameters);
  check(src.buffers, dst.buffers);
  for (size_t i = 0; i < src.counters.size(); ++i)
    if (src.counters[i].name != dst.counters[i].name)
      differ(src.counters[i].name + " vs " + dst.counters[i].name);
  for (size_t i = 0; i < src.parameters.size(); ++i)
    std::copy(src.parameters[i].value.begin(), src.parameters[i].value.end(),
              dst.parameters[i].value.begin());
  for (size_t i = 0; i < src.buffers.size(); ++i)
    std::copy(src.buffers[i].value.begin(), src.buffers[i].value.end(),
              dst.buffers[i].value.begin());
  for (size_t i = 0; i < src.counters.size(); ++i) dst.counters[i].set(src.counters[i].get());
}

template <class T>
Shape Sequential<T>::output_shape(const Shape& input) const {
  Shape s = input;
  for (const auto& l : layers_) s = l->output_shape(s);
  return s;
}

template <class T>
const Tensor<T>& Sequential<T>::forward(const Tensor<T>& x) {
  if (layers_.empty()) throw std::logic_error("Sequential::forward: the model has no layers");
  input_ = &x;
  const Tensor<T>* in = &x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto t0 = profile_ ? Clock::now() : Clock::time_point{};
    outputs_[i].resize(layers_[i]->output_shape(in->shape()));
    layers_[i]->forward(*in, outputs_[i]);
    if (profile_) profile_->forward_seconds[i] += seconds_since(t0);
    in = &outputs_[i];
  }
  if (profile_) ++profile_->forwards;
  return outputs_.back();
}

template <class T>
void Sequential<T>::backward(const Tensor<T>& dy) {
  if (!input_) throw std::logic_error("Sequential::backward: call forward first");
  if (!(dy.shape() == outputs_.back().shape()))
    throw std::invalid_argument("Sequential::backward: dy has shape " + dy.shape().str() +
                                ", the output has " + outputs_.back().shape().str());
  const Tensor<T>* grad_out = &dy;
  for (size_t i = layers_.size(); i-- > 0;) {
    const auto t0 = profile_ ? Clock::now() : Clock::time_point{};
    const Tensor<T>& in = i == 0 ? *input_ : outputs_[i - 1];
    Tensor<T>* grad_in = nullptr;
    if (i > 0) {
      gradients_[i].resize(in.shape());
      grad_in = &gradients_[i];
    }
    layers_[i]->backward(in, outputs_[i], *grad_out, grad_in);
    if (profile_) profile_->backward_seconds[i] += seconds_since(t0);
    grad_out = grad_in;
  }
  if (profile_) ++profile_->backwards;
}

template <class T>
void Sequential<T>::set_training(bool training) {
  training_ = training;
  for (auto& l : layers_) l->set_training(training);
}

template <class T>
StateLists<T> Sequential<T>::state() {
  StateLists<T> out;
  for (size_t i = 0; i < layers_.size(); ++i)
    layers_[i]->collect_state(out, std::to_string(i) + ".");
  return out;
}

template <class T>
int64_t Sequential<T>::parameter_count() {
  int64_t n = 0;
  for (const auto& p : state().parameters) n += static_cast<int64_t>(p.value.size());
  return n;
}

template <class T>
std::string Sequential<T>::describe() const {
  std::ostringstream s;
  for (size_t i = 0; i < layers_.size(); ++i) s << "  (" << i << ") " << layers_[i]->describe() << "\n";
  return s.str();
}

template class Sequential<float>;
template class Sequential<double>;

}  // namespace bnorm::nn
