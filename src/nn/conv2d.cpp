#include "nn/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>

#include "nn/blas.h"
#include "nn/conv_direct.h"

namespace bnorm::nn {

namespace {

struct ConvGeometry {
  int64_t channels, height, width, kernel, stride, padding, out_height, out_width;
  int64_t out_area() const { return out_height * out_width; }
  int64_t rows() const { return channels * kernel * kernel; }
};

// col[(c*k + ki)*k + kj][oh*Wo + ow] = x[c][oh*s - p + ki][ow*s - p + kj], 0 outside.
template <class T>
inline void im2col_body(const ConvGeometry& g, const T* x, T* col) {
  for (int64_t c = 0; c < g.channels; ++c) {
    const T* plane = x + c * g.height * g.width;
    for (int64_t ki = 0; ki < g.kernel; ++ki) {
      for (int64_t kj = 0; kj < g.kernel; ++kj) {
        T* row = col + ((c * g.kernel + ki) * g.kernel + kj) * g.out_area();
        for (int64_t oh = 0; oh < g.out_height; ++oh) {
          const int64_t ih = oh * g.stride - g.padding + ki;
          T* out = row + oh * g.out_width;
          if (ih < 0 || ih >= g.height) {
            for (int64_t ow = 0; ow < g.out_width; ++ow) out[ow] = T(0);
            continue;
          }
          const T* in = plane + ih * g.width;
          if (g.stride == 1) {
            // Valid ow range: 0 <= ow - p + kj < W.
            const int64_t lo = std::min(g.out_width, std::max<int64_t>(0, g.padding - kj));
            const int64_t hi = std::min<int64_t>(g.out_width, g.width + g.padding - kj);
            for (int64_t ow = 0; ow < lo; ++ow) out[ow] = T(0);
            const T* src = in - g.padding + kj;
            for (int64_t ow = lo; ow < hi; ++ow) out[ow] = src[ow];
            for (int64_t ow = std::max(lo, hi); ow < g.out_width; ++ow) out[ow] = T(0);
          } else {
            for (int64_t ow = 0; ow < g.out_width; ++ow) {
              const int64_t iw = ow * g.stride - g.padding + kj;
              out[ow] = (iw >= 0 && iw < g.width) ? in[iw] : T(0);
            }
          }
        }
      }
    }
  }
}

// Stride 1, the common case, without a branch in the copy: each channel is first
// copied into `pad` with its zero border ((H + 2p) x (W + 2p) values), after which
// every column row (c, ki, kj) is Ho runs of Wo contiguous values.
template <class T>
inline void im2col_stride1_body(const ConvGeometry& g, const T* x, T* col, T* pad) {
  const int64_t hp = g.height + 2 * g.padding, wp = g.width + 2 * g.padding;
  for (int64_t c = 0; c < g.channels; ++c) {
    const T* plane = x + c * g.height * g.width;
    if (g.padding > 0) {
      for (int64_t i = 0; i < hp * wp; ++i) pad[i] = T(0);
      for (int64_t h = 0; h < g.height; ++h) {
        T* dst = pad + (h + g.padding) * wp + g.padding;
        const T* src = plane + h * g.width;
        for (int64_t w = 0; w < g.width; ++w) dst[w] = src[w];
      }
    }
    const T* source = g.padding > 0 ? pad : plane;
    for (int64_t ki = 0; ki < g.kernel; ++ki)
      for (int64_t kj = 0; kj < g.kernel; ++kj) {
        T* row = col + ((c * g.kernel + ki) * g.kernel + kj) * g.out_area();
        for (int64_t oh = 0; oh < g.out_height; ++oh) {
          const T* src = source + (oh + ki) * wp + kj;
          T* dst = row + oh * g.out_width;
          for (int64_t ow = 0; ow < g.out_width; ++ow) dst[ow] = src[ow];
        }
      }
  }
}

// The adjoint of im2col: dx[c][ih][iw] = sum of the col entries that read it.
template <class T>
inline void col2im_body(const ConvGeometry& g, const T* col, T* dx) {
  for (int64_t i = 0; i < g.channels * g.height * g.width; ++i) dx[i] = T(0);
  for (int64_t c = 0; c < g.channels; ++c) {
    T* plane = dx + c * g.height * g.width;
    for (int64_t ki = 0; ki < g.kernel; ++ki) {
      for (int64_t kj = 0; kj < g.kernel; ++kj) {
        const T* row = col + ((c * g.kernel + ki) * g.kernel + kj) * g.out_area();
        // Valid ow for stride 1: 0 <= ow - p + kj < W (as in im2col).
        const int64_t lo = std::max<int64_t>(0, g.padding - kj);
        const int64_t hi = std::min<int64_t>(g.out_width, g.width + g.padding - kj);
        for (int64_t oh = 0; oh < g.out_height; ++oh) {
          const int64_t ih = oh * g.stride - g.padding + ki;
          if (ih < 0 || ih >= g.height) continue;
          T* out = plane + ih * g.width;
          const T* in = row + oh * g.out_width;
          if (g.stride == 1) {
            T* dst = out - g.padding + kj;
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] += in[ow];
          } else {
            for (int64_t ow = 0; ow < g.out_width; ++ow) {
              const int64_t iw = ow * g.stride - g.padding + kj;
              if (iw >= 0 && iw < g.width) out[iw] += in[ow];
            }
          }
        }
      }
    }
  }
}

// col2im for stride 1: accumulate into the zero-bordered plane `pad` without bounds,
// then copy its interior out (the border collects what fell on the padding).
template <class T>
inline void col2im_stride1_body(const ConvGeometry& g, const T* col, T* dx, T* pad) {
  const int64_t hp = g.height + 2 * g.padding, wp = g.width + 2 * g.padding;
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t i = 0; i < hp * wp; ++i) pad[i] = T(0);
    for (int64_t ki = 0; ki < g.kernel; ++ki)
      for (int64_t kj = 0; kj < g.kernel; ++kj) {
        const T* row = col + ((c * g.kernel + ki) * g.kernel + kj) * g.out_area();
        for (int64_t oh = 0; oh < g.out_height; ++oh) {
          T* dst = pad + (oh + ki) * wp + kj;
          const T* src = row + oh * g.out_width;
          for (int64_t ow = 0; ow < g.out_width; ++ow) dst[ow] += src[ow];
        }
      }
    T* plane = dx + c * g.height * g.width;
    for (int64_t h = 0; h < g.height; ++h) {
      const T* src = pad + (h + g.padding) * wp + g.padding;
      for (int64_t w = 0; w < g.width; ++w) plane[h * g.width + w] = src[w];
    }
  }
}

// Built for AVX-512, AVX2 and baseline x86-64, picked at load time (GCC
// target_clones): the copies are short runs, and wide stores halve their cost.
#define BNORM_CONV_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define BNORM_CONV_LOOPS(T)                                                                   \
  BNORM_CONV_CLONES void im2col(const ConvGeometry& g, const T* x, T* col, T* pad) {          \
    if (g.stride == 1)                                                                        \
      im2col_stride1_body(g, x, col, pad);                                                    \
    else                                                                                      \
      im2col_body(g, x, col);                                                                 \
  }                                                                                           \
  BNORM_CONV_CLONES void col2im(const ConvGeometry& g, const T* col, T* dx, T* pad) {        \
    if (g.stride == 1)                                                                        \
      col2im_stride1_body(g, col, dx, pad);                                                   \
    else                                                                                      \
      col2im_body(g, col, dx);                                                                \
  }
BNORM_CONV_LOOPS(float)
BNORM_CONV_LOOPS(double)
#undef BNORM_CONV_LOOPS

// The direct kernels win where im2col's copies and a GEMM call per image cost more than
// the multiplications: few output channels per image (measured in docs/training.md).
bool prefers_direct(const Conv2dOptions& o) {
  return o.out_channels <= 32 && o.in_channels <= 32;
}

}  // namespace

template <class T>
Conv2d<T>::Conv2d(const Conv2dOptions& options) : options_(options) {
  if (options.in_channels < 1 || options.out_channels < 1)
    throw std::invalid_argument("Conv2d: in_channels and out_channels must be at least 1");
  if (options.kernel_size < 1) throw std::invalid_argument("Conv2d: kernel_size must be at least 1");
  if (options.stride < 1) throw std::invalid_argument("Conv2d: stride must be at least 1");
  if (options.padding < 0) throw std::invalid_argument("Conv2d: padding must be at least 0");
  const bool direct_possible = direct_conv::supports(options.stride, options.kernel_size);
  if (options.algorithm == ConvAlgorithm::direct && !direct_possible)
    throw std::invalid_argument("Conv2d: algorithm=direct needs stride 1 and kernel_size <= " +
                                std::to_string(direct_conv::kMaxKernel));
  direct_ = options.algorithm == ConvAlgorithm::direct ||
            (options.algorithm == ConvAlgorithm::automatic && direct_possible &&
             prefers_direct(options));
  load_blas();  // now, not first inside a parallel region (a load failure must throw here)
  const auto weights = static_cast<size_t>(options.out_channels * fan_in());
  weight_.assign(weights, T(0));
  grad_weight_.assign(weights, T(0));
  if (options.bias) {
    bias_.assign(static_cast<size_t>(options.out_channels), T(0));
    grad_bias_.assign(bias_.size(), T(0));
  }
}

template <class T>
std::string Conv2d<T>::describe() const {
  std::ostringstream s;
  s << "Conv2d(" << options_.in_channels << ", " << options_.out_channels
    << ", kernel_size=" << options_.kernel_size;
  if (options_.stride != 1) s << ", stride=" << options_.stride;
  if (options_.padding != 0) s << ", padding=" << options_.padding;
  if (!options_.bias) s << ", bias=False";
  s << ")";
  return s.str();
}

template <class T>
Shape Conv2d<T>::output_shape(const Shape& in) const {
  if (in.rank() != 4 || in[1] != options_.in_channels) {
    std::ostringstream s;
    s << describe() << ": expected input (N, " << options_.in_channels << ", H, W), got "
      << in.str();
    throw std::invalid_argument(s.str());
  }
  const int64_t k = options_.kernel_size, p = options_.padding, st = options_.stride;
  if (in[2] + 2 * p < k || in[3] + 2 * p < k) {
    std::ostringstream s;
    s << describe() << ": input " << in.str() << " is smaller than the kernel";
    throw std::invalid_argument(s.str());
  }
  return {in[0], options_.out_channels, (in[2] + 2 * p - k) / st + 1, (in[3] + 2 * p - k) / st + 1};
}

template <class T>
void Conv2d<T>::forward(const Tensor<T>& x, Tensor<T>& y) {
  if (direct_) return forward_direct(x, y);
  const Shape out = y.shape();
  const ConvGeometry g{x.dim(1), x.dim(2), x.dim(3), options_.kernel_size,
                       options_.stride, options_.padding, out[2], out[3]};
  const int64_t n_images = x.dim(0), cout = options_.out_channels, area = g.out_area();
  const int64_t krows = g.rows(), col_size = krows * area;
  const bool keep = this->training_;
  pads_.prepare(static_cast<size_t>((g.height + 2 * g.padding) * (g.width + 2 * g.padding)));
  if (keep) {
    batch_columns_.resize(static_cast<size_t>(n_images * col_size));
    columns_of_ = x.data();
    columns_shape_ = x.shape();
  } else {
    columns_.prepare(static_cast<size_t>(col_size));
    columns_of_ = nullptr;
  }
  const T* w = weight_.data();
  const T* b = bias_.empty() ? nullptr : bias_.data();
#pragma omp parallel
  {
    T* scratch = keep ? nullptr : columns_.get(omp_get_thread_num());
#pragma omp for schedule(static) nowait
    for (int64_t n = 0; n < n_images; ++n) {
      T* col = keep ? batch_columns_.data() + n * col_size : scratch;
      im2col(g, x.data() + n * g.channels * g.height * g.width, col, pads_.get(omp_get_thread_num()));
      T* yn = y.data() + n * cout * area;
      gemm<T>(false, false, cout, area, krows, T(1), w, krows, col, area, T(0), yn, area);
      if (b)
        for (int64_t c = 0; c < cout; ++c)
          for (int64_t i = 0; i < area; ++i) yn[c * area + i] += b[c];
    }
  }
}

template <class T>
void Conv2d<T>::backward(const Tensor<T>& x, const Tensor<T>& /*y*/, const Tensor<T>& dy,
                         Tensor<T>* dx) {
  if (direct_) return backward_direct(x, dy, dx);
  const ConvGeometry g{x.dim(1), x.dim(2), x.dim(3), options_.kernel_size,
                       options_.stride, options_.padding, dy.dim(2), dy.dim(3)};
  const int64_t n_images = x.dim(0), cout = options_.out_channels, area = g.out_area();
  const int64_t krows = g.rows(), col_size = krows * area;
  // The forward's columns, when it kept them for this very input; else rebuilt here.
  const bool kept = columns_of_ == x.data() && columns_shape_ == x.shape();
  if (!kept) columns_.prepare(static_cast<size_t>(col_size));
  pads_.prepare(static_cast<size_t>((g.height + 2 * g.padding) * (g.width + 2 * g.padding)));
  if (dx) column_grads_.prepare(static_cast<size_t>(col_size));
  weight_partials_.prepare(weight_.size());
  bias_partials_.prepare(static_cast<size_t>(cout) * direct_conv::kLanes);
  weight_partials_.zero_all();  // every slot: the team may be smaller than the last one
  bias_partials_.zero_all();
  const T* w = weight_.data();
#pragma omp parallel
  {
    const int t = omp_get_thread_num();
    T* scratch = kept ? nullptr : columns_.get(t);
    T* dw = weight_partials_.get(t);
    T* db = bias_partials_.get(t);
#pragma omp for schedule(static) nowait
    for (int64_t n = 0; n < n_images; ++n) {
      const T* xn = x.data() + n * g.channels * g.height * g.width;
      const T* dyn = dy.data() + n * cout * area;
      const T* col = scratch;
      if (kept)
        col = batch_columns_.data() + n * col_size;
      else
        im2col(g, xn, scratch, pads_.get(t));
      gemm<T>(false, true, cout, krows, area, T(1), dyn, area, col, area, T(1), dw, krows);
      direct_conv::backward_bias(cout, area, 1, dyn, db);
      if (dx) {
        T* dcol = column_grads_.get(t);
        gemm<T>(true, false, krows, area, cout, T(1), w, krows, dyn, area, T(0), dcol, area);
        col2im(g, dcol, dx->data() + n * g.channels * g.height * g.width, pads_.get(t));
      }
    }
  }
  weight_partials_.sum_into(grad_weight_.data(), grad_weight_.size());
  if (bias_.empty()) return;
  bias_lanes_.resize(bias_.size() * direct_conv::kLanes);
  bias_partials_.sum_into(bias_lanes_.data(), bias_lanes_.size());
  direct_conv::sum_lanes(static_cast<int64_t>(bias_.size()), direct_conv::kLanes,
                         bias_lanes_.data(), grad_bias_.data());
}

template <class T>
void Conv2d<T>::forward_direct(const Tensor<T>& x, Tensor<T>& y) {
  const direct_conv::Geometry g{x.dim(1), x.dim(2), x.dim(3), options_.out_channels,
                                options_.kernel_size, options_.padding};
  const int64_t n_images = x.dim(0), in_size = g.in_channels * g.height * g.width;
  const int64_t out_size = g.out_channels * g.out_height() * g.out_width();
  columns_of_ = nullptr;  // the direct backward keeps nothing from the forward
  staged_.prepare(g.staged_size());
  const T* w = weight_.data();
  const T* b = bias_.empty() ? nullptr : bias_.data();
#pragma omp parallel
  {
    T* staged = staged_.get(omp_get_thread_num());
    direct_conv::clear_staged(g, staged);
#pragma omp for schedule(static) nowait
    for (int64_t n = 0; n < n_images; ++n) {
      direct_conv::stage_input(g, x.data() + n * in_size, staged);
      direct_conv::forward(g, staged, w, b, y.data() + n * out_size);
    }
  }
}

// Per group of images (direct_conv::kWeightGroup): the group's weight and bias
// gradients, still in lanes, into the group's own slot; per image: dx. The slots are then
// summed in group order, so the gradients do not depend on how the groups were shared
// out: the same bits for any thread count.
template <class T>
void Conv2d<T>::backward_direct(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
  const direct_conv::Geometry g{x.dim(1), x.dim(2), x.dim(3), options_.out_channels,
                                options_.kernel_size, options_.padding};
  const int64_t n_images = x.dim(0), cout = options_.out_channels, group = direct_conv::kWeightGroup;
  const int64_t in_size = g.in_channels * g.height * g.width, area = g.out_height() * g.out_width();
  const int64_t groups = (n_images + group - 1) / group;
  const int64_t weight_lanes = static_cast<int64_t>(weight_.size()) * direct_conv::kLanes;
  const int64_t slot = weight_lanes + cout * direct_conv::kLanes;  // weight lanes, bias lanes
  staged_.prepare(g.staged_size() * static_cast<size_t>(group));
  if (dx) input_gradient_.prepare(g.input_gradient_size());
  gradient_rows_.prepare(g.gradient_size() * static_cast<size_t>(group));
  group_slots_.resize(static_cast<size_t>(groups * slot));
  const T* w = weight_.data();
  T* slots = group_slots_.data();
#pragma omp parallel
  {
    const int t = omp_get_thread_num();
    T* staged = staged_.get(t);
    T* accumulator = dx ? input_gradient_.get(t) : nullptr;
    for (int64_t i = 0; i < group; ++i)
      direct_conv::clear_staged(g, staged + i * static_cast<int64_t>(g.staged_size()));
#pragma omp for schedule(static)
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t n0 = gi * group, images = std::min(group, n_images - n0);
      for (int64_t i = 0; i < images; ++i)
        direct_conv::stage_input(g, x.data() + (n0 + i) * in_size,
                                 staged + i * static_cast<int64_t>(g.staged_size()));
      T* group_slot = slots + gi * slot;
      const T* dy_rows =
          direct_conv::gradient_rows(g, images, dy.data() + n0 * cout * area, gradient_rows_.get(t));
      direct_conv::backward_weight(g, images, staged, dy_rows, group_slot);
      std::fill(group_slot + weight_lanes, group_slot + slot, T(0));
      direct_conv::backward_bias(cout, area, images, dy.data() + n0 * cout * area,
                                 group_slot + weight_lanes);
      for (int64_t i = 0; i < images && dx; ++i)
        direct_conv::backward_input(g, dy_rows + i * static_cast<int64_t>(g.gradient_size()), w,
                                    accumulator, dx->data() + (n0 + i) * in_size);
    }
    // Every value's sum over the groups, in group order, then over its lanes.
#pragma omp for schedule(static) nowait
    for (int64_t v = 0; v < slot / direct_conv::kLanes; ++v) {
      T lanes[direct_conv::kLanes];
      for (int64_t l = 0; l < direct_conv::kLanes; ++l) lanes[l] = slots[v * direct_conv::kLanes + l];
      for (int64_t gi = 1; gi < groups; ++gi)
        for (int64_t l = 0; l < direct_conv::kLanes; ++l)
          lanes[l] += slots[gi * slot + v * direct_conv::kLanes + l];
      T* out = v < static_cast<int64_t>(weight_.size())
                   ? grad_weight_.data() + v
                   : (bias_.empty() ? nullptr : grad_bias_.data() + (v - static_cast<int64_t>(weight_.size())));
      if (out) direct_conv::sum_lanes(1, direct_conv::kLanes, lanes, out);
    }
  }
}

template <class T>
void Conv2d<T>::collect_state(StateLists<T>& out, const std::string& prefix) {
  const int64_t k = options_.kernel_size;
  out.parameters.push_back({prefix + "weight",
                            Shape{options_.out_channels, options_.in_channels, k, k}, weight_,
                            grad_weight_});
  if (!bias_.empty())
    out.parameters.push_back({prefix + "bias", Shape{options_.out_channels}, bias_, grad_bias_});
}

template class Conv2d<float>;
template class Conv2d<double>;

}  // namespace bnorm::nn
