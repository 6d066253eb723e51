#include "nn/reshape.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "nn/random.h"

namespace bnorm::nn {

template <class T>
Shape Flatten<T>::output_shape(const Shape& in) const {
  if (in.rank() < 2) throw std::invalid_argument("Flatten(): expected input (N, ...), got " + in.str());
  int64_t features = 1;
  for (int i = 1; i < in.rank(); ++i) features *= in[i];
  return {in[0], features};
}

template <class T>
void Flatten<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  std::copy(x.data(), x.data() + x.numel(), y.data());
}

template <class T>
void Flatten<T>::backward(const Tensor<T>& /*x*/, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                          Tensor<T>* dx) {
  if (dx) std::copy(dy.data(), dy.data() + dy.numel(), dx->data());
}

template <class T>
Dropout<T>::Dropout(double p, uint64_t seed) : p_(p), seed_(seed) {
  if (!(p >= 0.0 && p < 1.0)) throw std::invalid_argument("Dropout: p must be in [0, 1)");
}

template <class T>
std::string Dropout<T>::describe() const {
  std::ostringstream s;
  s << "Dropout(p=" << p_ << ")";
  return s.str();
}

template <class T>
void Dropout<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  const int64_t n = x.numel();
  masked_ = this->training_ && p_ > 0.0;
  if (!masked_) {
    std::copy(x.data(), x.data() + n, y.data());
    return;
  }
  mask_.resize(static_cast<size_t>(n));
  const T keep_scale = static_cast<T>(1.0 / (1.0 - p_));
  const auto draw = static_cast<uint64_t>(draws_++);
  const T* in = x.data();
  T* out = y.data();
  T* m = mask_.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = unit_double(hash3(seed_, draw, static_cast<uint64_t>(i))) >= p_;
    m[i] = keep ? keep_scale : T(0);
    out[i] = in[i] * m[i];
  }
}

template <class T>
void Dropout<T>::backward(const Tensor<T>& x, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                          Tensor<T>* dx) {
  if (!dx) return;
  const int64_t n = x.numel();
  if (!masked_) {  // the last forward was the identity, whatever the mode is now
    std::copy(dy.data(), dy.data() + n, dx->data());
    return;
  }
  for (int64_t i = 0; i < n; ++i) (*dx)[i] = dy[i] * mask_[static_cast<size_t>(i)];
}

template <class T>
void Dropout<T>::collect_state(StateLists<T>& out, const std::string& prefix) {
  out.counters.push_back({prefix + "draws", [this] { return draws_; },
                          [this](int64_t v) { draws_ = v; }});
}

template class Flatten<float>;
template class Flatten<double>;
template class Dropout<float>;
template class Dropout<double>;

}  // namespace bnorm::nn
