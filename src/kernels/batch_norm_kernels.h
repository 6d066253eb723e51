// Fast CPU kernels for batch norm. Sizes are already validated by the front-end
// (src/norm/); kernels only assert.
//
// Every reduction is split into chunks whose boundaries depend on the shape alone,
// each chunk is summed in a fixed order, and the chunks are merged in a fixed order:
// results are bitwise identical whatever the thread count.
//
// Float precision at large offsets: the normalize step computes
//   y = ((x - mean_hi) - mean_lo) * scale + shift
// with mean = mean_hi + mean_lo split into two values of T. x - mean_hi is exact
// (Sterbenz) when x is near the mean, so no digit of x - mean is lost to the
// magnitude of the mean, unlike the folded form x * a + (b - mean * a).
#pragma once

#include <cstdint>

#include "kernels/moments.h"

namespace bnorm::kernels {

// The flat view of a (validated) batch-norm problem.
//   channels_last = false: x[(i * c + ch) * spatial + s]  (N, C, spatial)
//   channels_last = true:  x[(i * spatial + s) * c + ch]  (N, spatial, C)
struct Geometry {
  int64_t n = 0;
  int64_t c = 0;
  int64_t spatial = 0;
  bool channels_last = false;

  int64_t per_channel() const { return n * spatial; }  // m
};

// Per-channel affine map applied elementwise (all arrays hold c values):
//   out = ((in - center_hi) - center_lo) * scale + shift
template <class T>
struct ChannelAffine {
  const T* center_hi;
  const T* center_lo;
  const T* scale;
  const T* shift;
};

// Per-channel sums the backward needs, with xc = x - center (center given per channel):
//   dy_sum = sum(dy), dy_xc_sum = sum(dy * xc), xc_sum = sum(xc).
struct BackwardSums {
  double dy_sum = 0;
  double dy_xc_sum = 0;
  double xc_sum = 0;
};

// Fused ReLU on the forward's output (oneDNN's fuse_norm_relu):
//   y = z < 0 ? 0 : z   (z the affine map's value; NaN passes, as torch.relu)
// and, when mask is not null, its bit mask (layout in relu_mask.h).
struct ReluOutput {
  bool fused = false;
  uint8_t* mask = nullptr;
};

// The ReLU's gate on a gradient (the backward of a fused BN+ReLU): gradient value i is
// kept when !(y[i] <= 0), else 0, with y the fused forward's output, or when bit i of
// its mask is set. Both null: no gate.
template <class T>
struct ReluGate {
  const T* y = nullptr;
  const uint8_t* mask = nullptr;
};

// Below this many values a kernel runs on one thread: 2^15, or 2^19 when waiting OpenMP
// threads sleep (OMP_WAIT_POLICY=passive, read once), as waking one costs as long as a
// thread needs for half a million values.
int64_t min_parallel_values();

// moments[ch] = moments of channel ch's m values. threads >= 1.
template <class T>
void batch_norm_moments(const Geometry& g, const T* x, Moments* moments, int threads);

// y = relu?(affine(gate(x))) per channel; y may equal x. The gate on the input serves
// the fused backward with fixed statistics (x is a gradient there).
template <class T>
void batch_norm_apply(const Geometry& g, const T* x, T* y, const ChannelAffine<T>& affine,
                      int threads, const ReluGate<T>& gate = {}, const ReluOutput& relu = {});

// sums[ch] over channel ch's values, with xc = x - center[ch] (computed in double) and
// dy gated by `gate`.
template <class T>
void batch_norm_backward_sums(const Geometry& g, const T* x, const T* dy, const T* center,
                              BackwardSums* sums, int threads, const ReluGate<T>& gate = {});

// dx = gate(dy) * k + ((x - center_hi) - center_lo) * q + r per channel; dx may equal dy.
template <class T>
struct BackwardAffine {
  const T* center_hi;
  const T* center_lo;
  const T* k;
  const T* q;
  const T* r;
};
template <class T>
void batch_norm_backward_apply(const Geometry& g, const T* x, const T* dy, T* dx,
                               const BackwardAffine<T>& affine, int threads,
                               const ReluGate<T>& gate = {});

// ---- fused channels-first passes (cache_blocking.h) --------------------------------
// Each thread takes whole channels; per channel it reduces the slice, asks `coefficients`
// for the channel's elementwise map, and applies it while the slice is still in L2.
// Chunks, their order and the formulas are those of the separate passes above, so the
// results are the same bits; and as each channel is one thread's, whatever the thread
// count. They run only for channels-first data with spatial > 1, enough channels to
// keep the threads busy and slices within fused_slice_budget(); otherwise they return
// false having done nothing, and the caller runs the separate passes.

// One channel's elementwise maps (the per-channel values of ChannelAffine and
// BackwardAffine).
template <class T>
struct AffineCoefficients {
  T hi, lo, scale, shift;
};
template <class T>
struct BackwardCoefficients {
  T hi, lo, k, q, r;
};

// The caller's per-channel step between reduction and elementwise pass, called once per
// channel on the thread that owns it (so it may write per-channel outputs).
template <class T>
struct ForwardCoefficientsFn {
  void* context;
  AffineCoefficients<T> (*call)(void* context, int64_t ch, const Moments& moments);
};
template <class T>
struct BackwardCoefficientsFn {
  void* context;
  BackwardCoefficients<T> (*call)(void* context, int64_t ch, const BackwardSums& sums);
};

// moments[ch] as batch_norm_moments gives them; y = relu?(affine(x)) with each channel's
// map from `coefficients`. y may equal x.
template <class T>
bool batch_norm_forward_fused(const Geometry& g, const T* x, T* y, Moments* moments,
                              const ForwardCoefficientsFn<T>& coefficients, int threads,
                              const ReluOutput& relu = {});

// sums[ch] as batch_norm_backward_sums gives them; then, when dx is not null,
// dx = gate(dy) * k + ((x - hi) - lo) * q + r with each channel's values from
// `coefficients`. dx may equal dy.
template <class T>
bool batch_norm_backward_fused(const Geometry& g, const T* x, const T* dy, T* dx,
                               const T* center, BackwardSums* sums,
                               const BackwardCoefficientsFn<T>& coefficients, int threads,
                               const ReluGate<T>& gate = {});

}  // namespace bnorm::kernels
