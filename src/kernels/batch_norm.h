// Batch norm's kernel driver: per-channel statistics over (N, *) of (N, C, *) data, and
// the elementwise passes, on the microkernels of reduce.h and affine.h. Sizes are
// already validated by the front-end (src/norm/); kernels only assert.
//
// Every reduction is split into chunks whose boundaries depend on the shape alone,
// each chunk is summed in a fixed order, and the chunks are merged in a fixed order:
// results are bitwise identical whatever the thread count (work_split.h).
#pragma once

#include <cstdint>

#include "kernels/affine.h"
#include "kernels/geometry.h"
#include "kernels/moments.h"
#include "kernels/policy.h"
#include "kernels/relu_mask.h"

namespace bnorm::kernels {

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
void batch_norm_backward_apply(const Geometry& g, const T* x, const T* dy, T* dx,
                               const BackwardAffine<T>& affine, int threads,
                               const ReluGate<T>& gate = {});

// ---- fused channels-first passes (policy.h, fused_slice_budget) ----------------------
// Each thread takes whole channels; per channel it reduces the slice, asks `coefficients`
// for the channel's elementwise map, and applies it while the slice is still in L2.
// Chunks, their order and the formulas are those of the separate passes above, so the
// results are the same bits; and as each channel is one thread's, whatever the thread
// count. They run only for channels-first data with spatial > 1, enough channels to
// keep the threads busy and slices within fused_slice_budget(); otherwise they return
// false having done nothing, and the caller runs the separate passes.

// The extension point between reduction and elementwise pass: the caller's per-channel
// step, called once per channel on the thread that owns it (so it may write per-channel
// outputs: saved statistics, running statistics). Batch norm computes its scale and
// shift here; Batch Renorm, frozen statistics and SyncBN's collective plug in here too.
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
