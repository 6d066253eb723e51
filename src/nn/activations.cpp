#include "nn/activations.h"

#include <algorithm>
#include <cmath>

#include "nn/vector_math.h"

namespace bnorm::nn {

namespace {
// Below this many values one thread does the whole map: waking the sleeping threads
// costs 25-100 us per parallel region on the 2-core test machine, as long as the
// sigmoid of about 10^5 values (LeNet-BN's fully connected part has 2-3 * 10^4).
constexpr int64_t kMinParallelValues = int64_t{1} << 16;
}  // namespace

template <class T>
std::string Elementwise<T>::describe() const {
  switch (kind_) {
    case Activation::sigmoid: return "Sigmoid()";
    case Activation::tanh: return "Tanh()";
    case Activation::relu: return "ReLU()";
  }
  return "?";
}

template <class T>
void Elementwise<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  const int64_t n = x.numel();
  const T* in = x.data();
  T* out = y.data();
  switch (kind_) {
    case Activation::sigmoid: {
      // Pieces of a fixed size, so each thread runs the vectorized loop on long runs.
      constexpr int64_t kPiece = 4096;
      const int64_t pieces = (n + kPiece - 1) / kPiece;
#pragma omp parallel for schedule(static) if (n >= kMinParallelValues)
      for (int64_t p = 0; p < pieces; ++p)
        sigmoid_forward(in + p * kPiece, out + p * kPiece, std::min(kPiece, n - p * kPiece));
      break;
    }
    case Activation::tanh:
#pragma omp parallel for schedule(static) if (n >= kMinParallelValues)
      for (int64_t i = 0; i < n; ++i) out[i] = std::tanh(in[i]);
      break;
    case Activation::relu:
#pragma omp parallel for schedule(static) if (n >= kMinParallelValues)
      for (int64_t i = 0; i < n; ++i) out[i] = in[i] > T(0) ? in[i] : T(0);
      break;
  }
}

template <class T>
void Elementwise<T>::backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                              Tensor<T>* dx) {
  if (!dx) return;
  const int64_t n = x.numel();
  const T* xs = x.data();
  const T* ys = y.data();
  const T* d = dy.data();
  T* g = dx->data();
  switch (kind_) {
    case Activation::sigmoid:
#pragma omp parallel for schedule(static) if (n >= kMinParallelValues)
      for (int64_t i = 0; i < n; ++i) g[i] = d[i] * ys[i] * (T(1) - ys[i]);
      break;
    case Activation::tanh:
#pragma omp parallel for schedule(static) if (n >= kMinParallelValues)
      for (int64_t i = 0; i < n; ++i) g[i] = d[i] * (T(1) - ys[i] * ys[i]);
      break;
    case Activation::relu:
#pragma omp parallel for schedule(static) if (n >= kMinParallelValues)
      for (int64_t i = 0; i < n; ++i) g[i] = xs[i] > T(0) ? d[i] : T(0);
      break;
  }
}

template class Elementwise<float>;
template class Elementwise<double>;

}  // namespace bnorm::nn
