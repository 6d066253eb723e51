#include "nn/conv_direct.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/simd.h"

namespace bnorm::nn::direct_conv {

namespace {

// The vocabulary of the library's own loops (src/kernels/simd.h): GCC target_clones for
// AVX-512, AVX2 and baseline x86-64, everything a clone calls inlined into it, and
// 8-value vectors (one ymm for float, one zmm for double in the AVX-512 clone).
using kernels::load_vec8;
template <class T>
using Vec = kernels::Vec8<T>;

template <class T>
BNORM_INLINE void load(const T* p, Vec<T>& v) {
  load_vec8(p, v);
}
template <class T>
BNORM_INLINE void broadcast(T value, Vec<T>& v) {
  v = Vec<T>{} + value;
}

// Calls f(std::integral_constant<int, n>) for 1 <= n <= N: a run-time tile size picks
// a tile instantiated at compile time.
template <int N, class F>
BNORM_INLINE void with_count(int n, F&& f) {
  [&]<int... Is>(std::integer_sequence<int, Is...>) BNORM_INLINE_LAMBDA {
    ((n == Is + 1 ? (f(std::integral_constant<int, Is + 1>{}), true) : false) || ...);
  }(std::make_integer_sequence<int, N>{});
}

// Splits `count` into ceil(count / most) blocks of nearly equal size (16 -> 8 + 8,
// 6 -> 6, 20 -> 7 + 7 + 6) and calls f(first, size) for each.
template <class F>
BNORM_INLINE void balanced_blocks(int64_t count, int64_t most, F&& f) {
  const int64_t blocks = (count + most - 1) / most;
  int64_t first = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t size = count / blocks + (b < count % blocks ? 1 : 0);
    f(first, static_cast<int>(size));
    first += size;
  }
}

// ---- forward ----------------------------------------------------------------------
// Output vectors are numbered v = oh * vectors_per_row + c (8 columns from c * 8); a
// tile is I consecutive vectors times J output channels, I * J accumulators, and each
// of the Cin * k * k taps costs I loads, J broadcasts and I * J fused multiply-adds.
constexpr int kForwardVectors = 3;   // I
constexpr int kForwardChannels = 8;  // J at most: 24 accumulators of the 32 AVX-512 registers

template <class T, int I, int J>
BNORM_INLINE void forward_tile(const Geometry& g, const T* staged, const T* weight,
                                      const T* bias, T* y, int64_t co0, int64_t v0) {
  const int64_t per_row = g.vectors_per_row(), row = g.staged_row();
  const int64_t plane = g.staged_height() * row, k = g.kernel;
  const int64_t taps = g.in_channels * k * k, ho = g.out_height(), wo = g.out_width();
  int64_t oh[I], col[I];
  for (int i = 0; i < I; ++i) {
    oh[i] = (v0 + i) / per_row;
    col[i] = (v0 + i) % per_row * kLanes;
  }
  // Taps whose rows are all zero border for every vector of the tile are skipped
  // (staged rows p .. p + H - 1 hold the image).
  const int64_t ki_begin = std::max<int64_t>(0, g.padding - oh[I - 1]);
  const int64_t ki_end = std::min<int64_t>(k, g.padding + g.height - oh[0]);
  Vec<T> acc[J][I];
  for (int j = 0; j < J; ++j) {
    Vec<T> b;
    broadcast<T>(bias ? bias[co0 + j] : T(0), b);
    for (int i = 0; i < I; ++i) acc[j][i] = b;
  }
  const T* w = weight + co0 * taps;
  for (int64_t ci = 0; ci < g.in_channels; ++ci)
    for (int64_t ki = ki_begin; ki < ki_end; ++ki)
      for (int64_t kj = 0; kj < k; ++kj) {
        const int64_t tap = (ci * k + ki) * k + kj;
        Vec<T> xv[I];
        for (int i = 0; i < I; ++i)
          load<T>(staged + ci * plane + (oh[i] + ki) * row + col[i] + kj, xv[i]);
        for (int j = 0; j < J; ++j) {
          const T wj = w[j * taps + tap];
          for (int i = 0; i < I; ++i) acc[j][i] += xv[i] * wj;
        }
      }
  for (int j = 0; j < J; ++j)
    for (int i = 0; i < I; ++i) {
      T* out = y + ((co0 + j) * ho + oh[i]) * wo + col[i];
      if (wo - col[i] >= kLanes) {
        kernels::store_vec8(out, acc[j][i]);
      } else {  // the row's last, partial vector
        for (int64_t lane = 0; lane < wo - col[i]; ++lane) out[lane] = acc[j][i][lane];
      }
    }
}

template <class T>
BNORM_INLINE void forward_body(const Geometry& g, const T* staged, const T* weight,
                                      const T* bias, T* y) {
  const int64_t vectors = g.out_height() * g.vectors_per_row();
  balanced_blocks(g.out_channels, kForwardChannels, [&](int64_t co0, int channels)
                                                        BNORM_INLINE_LAMBDA {
    with_count<kForwardChannels>(channels, [&](auto J) BNORM_INLINE_LAMBDA {
      int64_t v = 0;
      for (; v + kForwardVectors <= vectors; v += kForwardVectors)
        forward_tile<T, kForwardVectors, J()>(g, staged, weight, bias, y, co0, v);
      with_count<kForwardVectors - 1>(static_cast<int>(vectors - v), [&](auto I)
                                                                          BNORM_INLINE_LAMBDA {
        forward_tile<T, I(), J()>(g, staged, weight, bias, y, co0, v);
      });
    });
  });
}

// ---- backward to the weight -------------------------------------------------------
// For one (ci, ki), a tile is J output channels times Q consecutive taps kj0 .. kj0+Q-1:
// J * Q accumulators over every output vector of a group of images, then stored as the
// lanes of the result (the tiles cover every weight once). A vector step costs J loads of dy, Q loads of x and J * Q
// multiply-adds. The group keeps the accumulators busy: LeNet's second layer has only 8
// output vectors per image, and a tile per image spent as long storing its 20
// accumulators as computing them (the layer's backward: 3.1 against 1.7 ms per batch).
constexpr int kWeightChannels = 4;  // J at most
constexpr int kWeightTaps = 5;      // Q at most: 20 accumulators

template <class T, int J, int Q>
BNORM_INLINE void weight_tile(const Geometry& g, int64_t images, const T* staged,
                                     const T* dy, int64_t dy_row, T* dweight_lanes, int64_t co0,
                                     int64_t ci, int64_t ki, int64_t kj0) {
  const int64_t per_row = g.vectors_per_row(), row = g.staged_row();
  const int64_t plane = g.staged_height() * row, k = g.kernel, ho = g.out_height();
  const int64_t staged_image = static_cast<int64_t>(g.staged_size());
  const int64_t dy_image = g.out_channels * ho * dy_row;
  // Output rows whose input row oh + ki is border contribute nothing.
  const int64_t oh_begin = std::max<int64_t>(0, g.padding - ki);
  const int64_t oh_end = std::min<int64_t>(ho, g.padding + g.height - ki);
  Vec<T> acc[J][Q];
  for (int j = 0; j < J; ++j)
    for (int q = 0; q < Q; ++q) broadcast<T>(T(0), acc[j][q]);
  for (int64_t n = 0; n < images; ++n)
    for (int64_t oh = oh_begin; oh < oh_end; ++oh) {
      const T* x_row = staged + n * staged_image + ci * plane + (oh + ki) * row + kj0;
      const T* dy_rows = dy + n * dy_image + (co0 * ho + oh) * dy_row;
      for (int64_t c = 0; c < per_row; ++c) {
        Vec<T> d[J];
        for (int j = 0; j < J; ++j) load<T>(dy_rows + j * ho * dy_row + c * kLanes, d[j]);
        for (int q = 0; q < Q; ++q) {
          Vec<T> xv;
          load<T>(x_row + c * kLanes + q, xv);
          for (int j = 0; j < J; ++j) acc[j][q] += d[j] * xv;
        }
      }
    }
  for (int j = 0; j < J; ++j)
    for (int q = 0; q < Q; ++q)
      kernels::store_vec8(
          dweight_lanes + ((((co0 + j) * g.in_channels + ci) * k + ki) * k + kj0 + q) * kLanes,
          acc[j][q]);
}

template <class T>
BNORM_INLINE void backward_weight_body(const Geometry& g, int64_t images, const T* staged,
                                       const T* dy_rows, T* dweight_lanes) {
  const int64_t dy_row = g.gradient_row();
  for (int64_t ci = 0; ci < g.in_channels; ++ci)
    for (int64_t ki = 0; ki < g.kernel; ++ki)
      balanced_blocks(g.out_channels, kWeightChannels, [&](int64_t co0, int channels)
                                                           BNORM_INLINE_LAMBDA {
        balanced_blocks(g.kernel, kWeightTaps, [&](int64_t kj0, int taps)
                                                   BNORM_INLINE_LAMBDA {
          with_count<kWeightChannels>(channels, [&](auto J) BNORM_INLINE_LAMBDA {
            with_count<kWeightTaps>(taps, [&](auto Q) BNORM_INLINE_LAMBDA {
              weight_tile<T, J(), Q()>(g, images, staged, dy_rows, dy_row, dweight_lanes, co0,
                                       ci, ki, kj0);
            });
          });
        });
      });
}

// ---- backward to the input --------------------------------------------------------
// Scatter form, which multiplies no border zeros: a dy vector (co, oh, columns c*8 ..
// c*8+7) reaches dx row oh - p + ki at columns c*8 - p + kj + lane. For one (ci, ki) the
// K vectors t[kj] = sum_co w[co][ci][ki][kj] * dy[co][oh][c*8 ..] are shifted by kj lanes
// into one window of 16 (two vectors) and added to an accumulation buffer laid out as the
// staged input (row oh + ki, columns from c*8), whose interior is dx. A tile takes KI
// kernel rows at once: KI * K independent sums keep the multiply-adds in flight.
// (The full correlation, a forward over dy padded by k - 1 - p with the kernel flipped,
// multiplied the border's zeros too: 2.07 against 1.05 ms per batch of 256 on LeNet's
// second layer, one thread.)

// lo[L] = L >= S ? v[L - S] : 0,  hi[L] = L < S ? v[L + 8 - S] : 0: v shifted up S lanes.
template <class T, int S, int... L>
BNORM_INLINE void shift_up(const Vec<T>& v, Vec<T>& lo, Vec<T>& hi,
                                  std::integer_sequence<int, L...>) {
  using Lane = std::conditional_t<std::is_same_v<T, float>, int32_t, int64_t>;
  typedef Lane Index __attribute__((vector_size(sizeof(Lane) * kLanes)));
  constexpr Index lo_index{static_cast<Lane>(L >= S ? L - S : kLanes)...};
  constexpr Index hi_index{static_cast<Lane>(L < S ? L + kLanes - S : kLanes)...};
  const Vec<T> zero{};
  lo = __builtin_shuffle(v, zero, lo_index);
  hi = __builtin_shuffle(v, zero, hi_index);
}

template <class T, int K, int KI>
BNORM_INLINE void scatter_tile(const Geometry& g, const T* dy, int64_t dy_row,
                                      const T* weight, T* acc, int64_t acc_row, int64_t oh,
                                      int64_t c, int64_t ci, int64_t ki0) {
  const int64_t ho = g.out_height(), cin = g.in_channels;
  const int64_t acc_plane = g.staged_height() * acc_row;
  Vec<T> t[KI][K];
  for (int a = 0; a < KI; ++a)
    for (int kj = 0; kj < K; ++kj) broadcast<T>(T(0), t[a][kj]);
  for (int64_t co = 0; co < g.out_channels; ++co) {
    Vec<T> d;
    load<T>(dy + (co * ho + oh) * dy_row + c * kLanes, d);
    const T* w = weight + ((co * cin + ci) * K + ki0) * K;
    for (int a = 0; a < KI; ++a)
      for (int kj = 0; kj < K; ++kj) t[a][kj] += d * w[a * K + kj];
  }
  for (int a = 0; a < KI; ++a) {
    Vec<T> lo = t[a][0], hi;
    broadcast<T>(T(0), hi);
    [&]<int... S>(std::integer_sequence<int, S...>) BNORM_INLINE_LAMBDA {
      ([&] BNORM_INLINE_LAMBDA {
        Vec<T> l, h;
        shift_up<T, S + 1>(t[a][S + 1], l, h, std::make_integer_sequence<int, kLanes>{});
        lo += l;
        hi += h;
      }(), ...);
    }(std::make_integer_sequence<int, K - 1>{});
    T* row = acc + ci * acc_plane + (oh + ki0 + a) * acc_row + c * kLanes;
    Vec<T> r0, r1;
    load<T>(row, r0);
    load<T>(row + kLanes, r1);
    r0 += lo;
    r1 += hi;
    kernels::store_vec8(row, r0);
    kernels::store_vec8(row + kLanes, r1);
  }
}

template <class T, int K>
BNORM_INLINE void backward_input_kernel(const Geometry& g, const T* dy, int64_t dy_row,
                                               const T* weight, T* acc, int64_t acc_row) {
  for (int64_t oh = 0; oh < g.out_height(); ++oh)
    for (int64_t c = 0; c < g.vectors_per_row(); ++c)
      for (int64_t ci = 0; ci < g.in_channels; ++ci) {
        int64_t ki = 0;
        for (; ki + 2 <= K; ki += 2)
          scatter_tile<T, K, 2>(g, dy, dy_row, weight, acc, acc_row, oh, c, ci, ki);
        if (ki < K) scatter_tile<T, K, 1>(g, dy, dy_row, weight, acc, acc_row, oh, c, ci, ki);
      }
}

template <class T>
BNORM_INLINE void backward_input_body(const Geometry& g, const T* dy_rows, const T* weight,
                                      T* acc, T* dx) {
  const int64_t acc_row = g.input_gradient_row(), h = g.height, w = g.width, p = g.padding;
  const int64_t acc_plane = g.staged_height() * acc_row;
  for (int64_t i = 0; i < g.in_channels * acc_plane; ++i) acc[i] = T(0);
  with_count<static_cast<int>(kMaxKernel)>(static_cast<int>(g.kernel), [&](auto K) BNORM_INLINE_LAMBDA {
    backward_input_kernel<T, K()>(g, dy_rows, g.gradient_row(), weight, acc, acc_row);
  });
  for (int64_t ci = 0; ci < g.in_channels; ++ci)
    for (int64_t ih = 0; ih < h; ++ih) {
      const T* src = acc + ci * acc_plane + (ih + p) * acc_row + p;
      T* dst = dx + (ci * h + ih) * w;
      for (int64_t iw = 0; iw < w; ++iw) dst[iw] = src[iw];
    }
}

// ---- backward to the bias ----------------------------------------------------------
// dbias_lanes[c][lane] += sum over images and over vectors of dy[n][c][v * 8 + lane]; the
// last, partial vector of a channel goes lane by lane. A plain running sum is one chain
// of dependent additions (LeNet-BN's first layer backward: 1.07 against 0.70 ms, 1 thread).
template <class T>
BNORM_INLINE void backward_bias_body(int64_t channels, int64_t area, int64_t images,
                                            const T* dy, T* dbias_lanes) {
  const int64_t whole = area / kLanes * kLanes;
  for (int64_t c = 0; c < channels; ++c) {
    Vec<T> sum[4];
    for (auto& v : sum) broadcast<T>(T(0), v);
    for (int64_t n = 0; n < images; ++n) {
      const T* run = dy + (n * channels + c) * area;
      int64_t i = 0;
      for (; i + 4 * kLanes <= whole; i += 4 * kLanes)
        for (int u = 0; u < 4; ++u) {
          Vec<T> v;
          load<T>(run + i + u * kLanes, v);
          sum[u] += v;
        }
      for (; i < whole; i += kLanes) {
        Vec<T> v;
        load<T>(run + i, v);
        sum[0] += v;
      }
      for (int64_t lane = 0; i + lane < area; ++lane) sum[1][lane] += run[i + lane];
    }
    Vec<T> lanes;
    load<T>(dbias_lanes + c * kLanes, lanes);
    lanes += (sum[0] + sum[1]) + (sum[2] + sum[3]);
    kernels::store_vec8(dbias_lanes + c * kLanes, lanes);
  }
}

// Rows of a few dozen values: a plain loop, not a libc call per row.
template <class T>
BNORM_INLINE void stage_input_body(const Geometry& g, const T* x, T* staged) {
  const int64_t row = g.staged_row(), plane = g.staged_height() * row, width = g.width;
  for (int64_t c = 0; c < g.in_channels; ++c)
    for (int64_t h = 0; h < g.height; ++h) {
      T* __restrict dst = staged + c * plane + (h + g.padding) * row + g.padding;
      const T* __restrict src = x + (c * g.height + h) * width;
#pragma GCC unroll 4
      for (int64_t w = 0; w < width; ++w) dst[w] = src[w];
    }
}

BNORM_CLONES void stage_input_clones(const Geometry& g, const float* x, float* staged) {
  stage_input_body(g, x, staged);
}
BNORM_CLONES void stage_input_clones(const Geometry& g, const double* x, double* staged) {
  stage_input_body(g, x, staged);
}
BNORM_CLONES void backward_input_clones(const Geometry& g, const float* dy_rows,
                                        const float* weight, float* acc, float* dx) {
  backward_input_body(g, dy_rows, weight, acc, dx);
}
BNORM_CLONES void backward_input_clones(const Geometry& g, const double* dy_rows,
                                        const double* weight, double* acc, double* dx) {
  backward_input_body(g, dy_rows, weight, acc, dx);
}
BNORM_CLONES void backward_bias_clones(int64_t channels, int64_t area, int64_t images,
                                              const float* dy, float* dbias_lanes) {
  backward_bias_body(channels, area, images, dy, dbias_lanes);
}
BNORM_CLONES void backward_bias_clones(int64_t channels, int64_t area, int64_t images,
                                              const double* dy, double* dbias_lanes) {
  backward_bias_body(channels, area, images, dy, dbias_lanes);
}
BNORM_CLONES void forward_clones(const Geometry& g, const float* staged,
                                        const float* weight, const float* bias, float* y) {
  forward_body(g, staged, weight, bias, y);
}
BNORM_CLONES void forward_clones(const Geometry& g, const double* staged,
                                        const double* weight, const double* bias, double* y) {
  forward_body(g, staged, weight, bias, y);
}
BNORM_CLONES void backward_weight_clones(const Geometry& g, int64_t images,
                                         const float* staged, const float* dy_rows,
                                         float* dweight_lanes) {
  backward_weight_body(g, images, staged, dy_rows, dweight_lanes);
}
BNORM_CLONES void backward_weight_clones(const Geometry& g, int64_t images,
                                         const double* staged, const double* dy_rows,
                                         double* dweight_lanes) {
  backward_weight_body(g, images, staged, dy_rows, dweight_lanes);
}

}  // namespace

template <class T>
void clear_staged(const Geometry& g, T* staged) {
  std::memset(static_cast<void*>(staged), 0, g.staged_size() * sizeof(T));
}

template <class T>
void stage_input(const Geometry& g, const T* x, T* staged) {
  stage_input_clones(g, x, staged);
}

template <class T>
void forward(const Geometry& g, const T* staged, const T* weight, const T* bias, T* y) {
  forward_clones(g, staged, weight, bias, y);
}

template <class T>
const T* gradient_rows(const Geometry& g, int64_t images, const T* dy, T* scratch) {
  const int64_t wo = g.out_width(), dy_row = g.gradient_row();
  if (dy_row == wo) return dy;
  for (int64_t r = 0; r < images * g.out_channels * g.out_height(); ++r) {
    std::copy(dy + r * wo, dy + (r + 1) * wo, scratch + r * dy_row);
    std::fill(scratch + r * dy_row + wo, scratch + (r + 1) * dy_row, T(0));
  }
  return scratch;
}

template <class T>
void backward_weight(const Geometry& g, int64_t images, const T* staged, const T* dy_rows,
                     T* dweight_lanes) {
  backward_weight_clones(g, images, staged, dy_rows, dweight_lanes);
}

template <class T>
void backward_input(const Geometry& g, const T* dy_rows, const T* weight, T* accumulator,
                    T* dx) {
  backward_input_clones(g, dy_rows, weight, accumulator, dx);
}

template <class T>
void backward_bias(int64_t channels, int64_t area, int64_t images, const T* dy, T* dbias_lanes) {
  backward_bias_clones(channels, area, images, dy, dbias_lanes);
}

template <class T>
void sum_lanes(int64_t count, int64_t lanes, const T* values, T* out) {
  for (int64_t i = 0; i < count; ++i) {
    T s = values[i * lanes];
    for (int64_t lane = 1; lane < lanes; ++lane) s += values[i * lanes + lane];
    out[i] = s;
  }
}

#define BNORM_DIRECT_INSTANTIATE(T)                                                          \
  template void clear_staged<T>(const Geometry&, T*);                                       \
  template void stage_input<T>(const Geometry&, const T*, T*);                              \
  template void forward<T>(const Geometry&, const T*, const T*, const T*, T*);              \
  template const T* gradient_rows<T>(const Geometry&, int64_t, const T*, T*);              \
  template void backward_weight<T>(const Geometry&, int64_t, const T*, const T*, T*);       \
  template void backward_input<T>(const Geometry&, const T*, const T*, T*, T*);             \
  template void backward_bias<T>(int64_t, int64_t, int64_t, const T*, T*);                  \
  template void sum_lanes<T>(int64_t, int64_t, const T*, T*);
BNORM_DIRECT_INSTANTIATE(float)
BNORM_DIRECT_INSTANTIATE(double)
#undef BNORM_DIRECT_INSTANTIATE

}  // namespace bnorm::nn::direct_conv
