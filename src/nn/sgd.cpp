#include "nn/sgd.h"

#include <cmath>
#include <stdexcept>

namespace bnorm::nn {

namespace {
void check(const SgdOptions& o) {
  if (!(std::isfinite(o.lr) && o.lr > 0)) throw std::invalid_argument("lr: expected a finite value > 0");
  if (!(std::isfinite(o.momentum) && o.momentum >= 0 && o.momentum < 1))
    throw std::invalid_argument("momentum: expected a value in [0, 1)");
  if (!(std::isfinite(o.weight_decay) && o.weight_decay >= 0))
    throw std::invalid_argument("weight_decay: expected a finite value >= 0");
}
}  // namespace

template <class T>
Sgd<T>::Sgd(std::vector<Parameter<T>> parameters, const SgdOptions& options)
    : parameters_(std::move(parameters)), options_(options) {
  check(options);
  if (options.momentum > 0)
    for (const auto& p : parameters_) momentum_.emplace_back(p.value.size(), T(0));
}

template <class T>
void Sgd<T>::set_lr(double lr) {
  SgdOptions o = options_;
  o.lr = lr;
  check(o);
  options_ = o;
}

template <class T>
void Sgd<T>::step() {
  const T lr = static_cast<T>(options_.lr);
  const T mu = static_cast<T>(options_.momentum);
  const T wd = static_cast<T>(options_.weight_decay);
  for (size_t i = 0; i < parameters_.size(); ++i) {
    T* p = parameters_[i].value.data();
    const T* g = parameters_[i].grad.data();
    const size_t n = parameters_[i].value.size();
    if (momentum_.empty()) {
      for (size_t j = 0; j < n; ++j) p[j] -= lr * (wd == T(0) ? g[j] : g[j] + wd * p[j]);
    } else {
      T* b = momentum_[i].data();
      for (size_t j = 0; j < n; ++j) {
        b[j] = mu * b[j] + (wd == T(0) ? g[j] : g[j] + wd * p[j]);
        p[j] -= lr * b[j];
      }
    }
  }
}

template <class T>
std::vector<Buffer<T>> Sgd<T>::state() {
  std::vector<Buffer<T>> out;
  for (size_t i = 0; i < momentum_.size(); ++i)
    out.push_back({"momentum_buffer." + parameters_[i].name, parameters_[i].shape, momentum_[i]});
  return out;
}

template <class T>
std::string Sgd<T>::first_non_finite_buffer() const {
  for (size_t i = 0; i < momentum_.size(); ++i)
    for (const T v : momentum_[i])
      if (!std::isfinite(v)) return "momentum_buffer." + parameters_[i].name;
  return "";
}

template class Sgd<float>;
template class Sgd<double>;

}  // namespace bnorm::nn
