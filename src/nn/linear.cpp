#include "nn/linear.h"

#include <sstream>
#include <stdexcept>

#include "nn/blas.h"

namespace bnorm::nn {

template <class T>
Linear<T>::Linear(int64_t in_features, int64_t out_features, bool bias)
    : in_(in_features), out_(out_features) {
  if (in_features < 1 || out_features < 1)
    throw std::invalid_argument("Linear: in_features and out_features must be at least 1");
  load_blas();
  weight_.assign(static_cast<size_t>(in_ * out_), T(0));
  grad_weight_.assign(weight_.size(), T(0));
  if (bias) {
    bias_.assign(static_cast<size_t>(out_), T(0));
    grad_bias_.assign(bias_.size(), T(0));
  }
}

template <class T>
std::string Linear<T>::describe() const {
  std::ostringstream s;
  s << "Linear(" << in_ << ", " << out_ << (bias_.empty() ? ", bias=False)" : ")");
  return s.str();
}

template <class T>
Shape Linear<T>::output_shape(const Shape& in) const {
  if (in.rank() != 2 || in[1] != in_) {
    std::ostringstream s;
    s << describe() << ": expected input (N, " << in_ << "), got " << in.str();
    throw std::invalid_argument(s.str());
  }
  return {in[0], out_};
}

template <class T>
void Linear<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  const int64_t n = x.dim(0);
  if (!bias_.empty()) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < out_; ++j) y[i * out_ + j] = bias_[static_cast<size_t>(j)];
  }
  gemm<T>(false, true, n, out_, in_, T(1), x.data(), in_, weight_.data(), in_,
          bias_.empty() ? T(0) : T(1), y.data(), out_);
}

template <class T>
void Linear<T>::backward(const Tensor<T>& x, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                         Tensor<T>* dx) {
  const int64_t n = x.dim(0);
  gemm<T>(true, false, out_, in_, n, T(1), dy.data(), out_, x.data(), in_, T(0),
          grad_weight_.data(), in_);
  if (!bias_.empty()) {
    for (int64_t j = 0; j < out_; ++j) grad_bias_[static_cast<size_t>(j)] = T(0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < out_; ++j) grad_bias_[static_cast<size_t>(j)] += dy[i * out_ + j];
  }
  if (dx)
    gemm<T>(false, false, n, in_, out_, T(1), dy.data(), out_, weight_.data(), in_, T(0),
            dx->data(), in_);
}

template <class T>
void Linear<T>::collect_state(StateLists<T>& out, const std::string& prefix) {
  out.parameters.push_back({prefix + "weight", Shape{out_, in_}, weight_, grad_weight_});
  if (!bias_.empty()) out.parameters.push_back({prefix + "bias", Shape{out_}, bias_, grad_bias_});
}

template class Linear<float>;
template class Linear<double>;

}  // namespace bnorm::nn
