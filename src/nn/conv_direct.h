// Direct stride-1 convolution of one image, for layers with few channels (LeNet's
// 1 -> 6 and 6 -> 16, 5x5), where im2col + one small GEMM per image spends more time
// copying and calling than multiplying. Every kernel keeps a tile of results in vector
// registers, 8 output columns per vector, and reads its operands from L1.
//
//   x: (Cin, H, W)   weight: (Cout, Cin, k, k)   y: (Cout, Ho, Wo)   Ho = H + 2p - k + 1
//   forward:          y[co][oh][ow]  = b[co] + sum_{ci,ki,kj} w[co][ci][ki][kj] * xp[ci][oh+ki][ow+kj]
//   backward_weight:  dw[co][ci][ki][kj] = sum_{oh,ow} dy[co][oh][ow] * xp[ci][oh+ki][ow+kj]
//   backward_input:   dxp[ci][oh+ki][ow+kj] += w[co][ci][ki][kj] * dy[co][oh][ow] (scatter), dx
//                     the interior of dxp
//   backward_bias:    db[co] = sum_{oh,ow} dy[co][oh][ow]
// xp is x with a zero border of p ("staged": copied into a buffer whose rows are long
// enough for the last vector of a row to read without a bounds check).
//
// The reference twin is the im2col + GEMM path in conv2d.cpp (and the plain loops in
// tests/cpp/nn/test_conv_direct.cpp); tests run both on odd widths around the vector width.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bnorm::nn::direct_conv {

constexpr int64_t kLanes = 8;  // output columns per vector

struct Geometry {
  int64_t in_channels, height, width;  // the input image
  int64_t out_channels, kernel, padding;

  int64_t out_height() const { return height + 2 * padding - kernel + 1; }
  int64_t out_width() const { return width + 2 * padding - kernel + 1; }
  int64_t vectors_per_row() const { return (out_width() + kLanes - 1) / kLanes; }
  // The staged input: (Cin, H + 2p, staged_row()), the image at (p, p), zeros around it;
  // a row is long enough for every vector's k taps: vectors_per_row() * 8 + k - 1 >= W + 2p.
  int64_t staged_height() const { return height + 2 * padding; }
  int64_t staged_row() const { return vectors_per_row() * kLanes + kernel - 1; }
  size_t staged_size() const {
    return static_cast<size_t>(in_channels * staged_height() * staged_row());
  }
  // dy with its rows padded to whole vectors (zeros past Wo), for the backward kernels.
  int64_t gradient_row() const { return vectors_per_row() * kLanes; }
  size_t gradient_size() const {
    return static_cast<size_t>(out_channels * out_height() * gradient_row());
  }
  // backward_input's accumulator: laid out as the staged input, rows of whole vectors
  // plus the 8 a shifted vector spills into.
  int64_t input_gradient_row() const { return vectors_per_row() * kLanes + kLanes; }
  size_t input_gradient_size() const {
    return static_cast<size_t>(in_channels * staged_height() * input_gradient_row());
  }
};

// backward_input shifts a vector by up to k - 1 lanes into a window of two.
constexpr int64_t kMaxKernel = kLanes + 1;

// Whether the direct kernels serve a layer: stride 1, kernel at most kMaxKernel.
inline bool supports(int64_t stride, int64_t kernel) { return stride == 1 && kernel <= kMaxKernel; }

// Zeroes a staged buffer (g.staged_size() values): once per batch, since stage_input
// writes only the image and the border stays zero from image to image.
template <class T>
void clear_staged(const Geometry& g, T* staged);

// Copies the image x into a cleared staged buffer, inside its border.
template <class T>
void stage_input(const Geometry& g, const T* x, T* staged);

// y (Cout, Ho, Wo) from the staged input; bias may be null.
template <class T>
void forward(const Geometry& g, const T* staged, const T* weight, const T* bias, T* y);

// dy (images, Cout, Ho, Wo) with rows of g.gradient_row() values, zeros past Wo, as the
// two backward kernels read it: dy itself when Wo is a whole number of vectors, else a
// copy in `scratch` (images * g.gradient_size() values).
template <class T>
const T* gradient_rows(const Geometry& g, int64_t images, const T* dy, T* scratch);

// dweight_lanes (Cout, Cin, k, k, 8) = the weight gradient of `images` consecutive
// images, still spread over the 8 lanes of the vectors that summed it (sum_lanes finishes
// it). staged: the images' staged inputs, g.staged_size() values apart; dy_rows: from
// gradient_rows.
constexpr int64_t kWeightGroup = 8;  // images per call that keep the kernel's tiles busy
template <class T>
void backward_weight(const Geometry& g, int64_t images, const T* staged, const T* dy_rows,
                     T* dweight_lanes);

// dx (Cin, H, W) of one image from its dy_rows (from gradient_rows); accumulator:
// g.input_gradient_size() values.
template <class T>
void backward_input(const Geometry& g, const T* dy_rows, const T* weight, T* accumulator,
                    T* dx);

// dbias_lanes (C, 8) += the bias gradient of dy (images, C, area): each channel's values
// summed in 8 lanes (any stride and layout of the convolution; sum_lanes finishes it).
template <class T>
void backward_bias(int64_t channels, int64_t area, int64_t images, const T* dy, T* dbias_lanes);

// out[i] = sum of values[i][0 .. lanes - 1], in lane order, for i < count.
template <class T>
void sum_lanes(int64_t count, int64_t lanes, const T* values, T* out);

}  // namespace bnorm::nn::direct_conv
