#include "nn/channel_affine.h"

#include <stdexcept>
#include <utility>

namespace bnorm::nn {

template <class T>
ChannelAffine<T>::ChannelAffine(std::vector<T> scale, std::vector<T> shift)
    : scale_(std::move(scale)), shift_(std::move(shift)) {
  if (scale_.empty() || scale_.size() != shift_.size())
    throw std::invalid_argument("ChannelAffine: scale and shift must hold one value per channel "
                                "(the same count, at least 1), got " +
                                std::to_string(scale_.size()) + " and " +
                                std::to_string(shift_.size()));
  grad_scale_.assign(scale_.size(), T(0));
  grad_shift_.assign(shift_.size(), T(0));
}

template <class T>
std::string ChannelAffine<T>::describe() const {
  return "ChannelAffine(" + std::to_string(scale_.size()) + ")";
}

template <class T>
Shape ChannelAffine<T>::output_shape(const Shape& in) const {
  if (in.rank() < 2 || in[1] != static_cast<int64_t>(scale_.size()))
    throw std::invalid_argument(describe() + ": expected input (N, C, *) with C = " +
                                std::to_string(scale_.size()) + ", got " + in.str());
  return in;
}

namespace {
// (outer, channels, inner): the N, C and product-of-the-rest of an (N, C, *) shape.
struct Planes {
  int64_t outer, channels, inner;
};
Planes planes_of(const Shape& s) {
  int64_t inner = 1;
  for (int d = 2; d < s.rank(); ++d) inner *= s[d];
  return {s[0], s[1], inner};
}
}  // namespace

template <class T>
void ChannelAffine<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  const Planes p = planes_of(x.shape());
  const T* in = x.data();
  T* out = y.data();
#pragma omp parallel for schedule(static) if (p.outer * p.channels * p.inner > (1 << 16))
  for (int64_t nc = 0; nc < p.outer * p.channels; ++nc) {
    const T a = scale_[static_cast<size_t>(nc % p.channels)];
    const T b = shift_[static_cast<size_t>(nc % p.channels)];
    const T* xs = in + nc * p.inner;
    T* ys = out + nc * p.inner;
    for (int64_t i = 0; i < p.inner; ++i) ys[i] = xs[i] * a + b;
  }
}

template <class T>
void ChannelAffine<T>::backward(const Tensor<T>& x, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                                Tensor<T>* dx) {
  const Planes p = planes_of(x.shape());
#pragma omp parallel for schedule(static) if (p.outer * p.channels * p.inner > (1 << 16))
  for (int64_t c = 0; c < p.channels; ++c) {
    double dscale = 0, dshift = 0;
    for (int64_t n = 0; n < p.outer; ++n) {
      const int64_t at = (n * p.channels + c) * p.inner;
      const T* xs = x.data() + at;
      const T* g = dy.data() + at;
      for (int64_t i = 0; i < p.inner; ++i) {
        dscale += static_cast<double>(g[i]) * static_cast<double>(xs[i]);
        dshift += static_cast<double>(g[i]);
      }
      if (dx) {
        T* out = dx->data() + at;
        const T a = scale_[static_cast<size_t>(c)];
        for (int64_t i = 0; i < p.inner; ++i) out[i] = g[i] * a;
      }
    }
    grad_scale_[static_cast<size_t>(c)] = static_cast<T>(dscale);
    grad_shift_[static_cast<size_t>(c)] = static_cast<T>(dshift);
  }
}

template <class T>
void ChannelAffine<T>::collect_state(StateLists<T>& out, const std::string& prefix) {
  const Shape s({static_cast<int64_t>(scale_.size())});
  out.parameters.push_back({prefix + "weight", s, scale_, grad_scale_});
  out.parameters.push_back({prefix + "bias", s, shift_, grad_shift_});
}

template class ChannelAffine<float>;
template class ChannelAffine<double>;

}  // namespace bnorm::nn
