#include "nn/pooling.h"

#include <sstream>
#include <stdexcept>

namespace bnorm::nn {

template <class T>
Pool2d<T>::Pool2d(const char* name, int64_t kernel_size, int64_t stride)
    : name_(name), kernel_(kernel_size), stride_(stride == 0 ? kernel_size : stride) {
  if (kernel_size < 1) throw std::invalid_argument(std::string(name) + ": kernel_size must be at least 1");
  if (stride < 0) throw std::invalid_argument(std::string(name) + ": stride must be at least 1");
}

template <class T>
std::string Pool2d<T>::describe() const {
  std::ostringstream s;
  s << name_ << "(kernel_size=" << kernel_;
  if (stride_ != kernel_) s << ", stride=" << stride_;
  s << ")";
  return s.str();
}

template <class T>
Shape Pool2d<T>::output_shape(const Shape& in) const {
  if (in.rank() != 4 || in[2] < kernel_ || in[3] < kernel_) {  // the message only on error
    std::ostringstream m;
    m << describe() << ": expected input (N, C, H, W) with H, W >= " << kernel_ << ", got "
      << in.str();
    throw std::invalid_argument(m.str());
  }
  return {in[0], in[1], (in[2] - kernel_) / stride_ + 1, (in[3] - kernel_) / stride_ + 1};
}

template <class T>
void AvgPool2d<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t ho = y.dim(2), wo = y.dim(3);
  const T inv = T(1) / static_cast<T>(kernel_ * kernel_);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* in = x.data() + p * h * w;
    T* out = y.data() + p * ho * wo;
    if (kernel_ == 2 && stride_ == 2) {  // LeNet's pool: the same sums, unrolled
      for (int64_t i = 0; i < ho; ++i) {
        const T* r0 = in + 2 * i * w;
        const T* r1 = r0 + w;
        for (int64_t j = 0; j < wo; ++j)
          out[i * wo + j] = (((r0[2 * j] + r0[2 * j + 1]) + r1[2 * j]) + r1[2 * j + 1]) * inv;
      }
      continue;
    }
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j) {
        T s = T(0);
        for (int64_t a = 0; a < kernel_; ++a)
          for (int64_t b = 0; b < kernel_; ++b) s += in[(i * stride_ + a) * w + j * stride_ + b];
        out[i * wo + j] = s * inv;
      }
  }
}

template <class T>
void AvgPool2d<T>::backward(const Tensor<T>& x, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                            Tensor<T>* dx) {
  if (!dx) return;
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t ho = dy.dim(2), wo = dy.dim(3);
  const T inv = T(1) / static_cast<T>(kernel_ * kernel_);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* g = dx->data() + p * h * w;
    const T* d = dy.data() + p * ho * wo;
    for (int64_t i = 0; i < h * w; ++i) g[i] = T(0);
    if (kernel_ == 2 && stride_ == 2) {
      for (int64_t i = 0; i < ho; ++i) {
        T* r0 = g + 2 * i * w;
        T* r1 = r0 + w;
        for (int64_t j = 0; j < wo; ++j) {
          const T v = d[i * wo + j] * inv;
          r0[2 * j] = v, r0[2 * j + 1] = v, r1[2 * j] = v, r1[2 * j + 1] = v;
        }
      }
      continue;
    }
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j) {
        const T v = d[i * wo + j] * inv;
        for (int64_t a = 0; a < kernel_; ++a)
          for (int64_t b = 0; b < kernel_; ++b) g[(i * stride_ + a) * w + j * stride_ + b] += v;
      }
  }
}

template <class T>
void MaxPool2d<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t ho = y.dim(2), wo = y.dim(3);
  argmax_.resize(static_cast<size_t>(y.numel()));
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* in = x.data() + p * h * w;
    T* out = y.data() + p * ho * wo;
    int32_t* arg = argmax_.data() + p * ho * wo;
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j) {
        int64_t best = (i * stride_) * w + j * stride_;
        for (int64_t a = 0; a < kernel_; ++a)
          for (int64_t b = 0; b < kernel_; ++b) {
            const int64_t at = (i * stride_ + a) * w + j * stride_ + b;
            // NaN wins, like PyTorch, so it propagates instead of vanishing.
            if (in[at] > in[best] || (in[at] != in[at] && in[best] == in[best])) best = at;
          }
        out[i * wo + j] = in[best];
        arg[i * wo + j] = static_cast<int32_t>(best);
      }
  }
}

template <class T>
void MaxPool2d<T>::backward(const Tensor<T>& x, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                            Tensor<T>* dx) {
  if (!dx) return;
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t area = dy.dim(2) * dy.dim(3);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* g = dx->data() + p * h * w;
    for (int64_t i = 0; i < h * w; ++i) g[i] = T(0);
    const T* d = dy.data() + p * area;
    const int32_t* arg = argmax_.data() + p * area;
    for (int64_t i = 0; i < area; ++i) g[arg[i]] += d[i];
  }
}

template class Pool2d<float>;
template class Pool2d<double>;
template class AvgPool2d<float>;
template class AvgPool2d<double>;
template class MaxPool2d<float>;
template class MaxPool2d<double>;

}  // namespace bnorm::nn
