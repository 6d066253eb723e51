// The elementwise microkernels: the forward's per-channel affine map and the backward's
// dx map, each over one work item (chunk_plans.h, work_split.h), compiled once per instruction set.
//
// Float precision at large offsets: the forward computes
//   y = ((x - center_hi) - center_lo) * scale + shift
// with center = center_hi + center_lo split into two values of T. x - center_hi is exact
// (Sterbenz) when x is near the center, so no digit of x - mean is lost to the magnitude
// of the mean, unlike the folded form x * a + (b - mean * a). The backward's map keeps
// the same form: dx = gate(dy) * k + ((x - center_hi) - center_lo) * q + r.
//
// Names follow stage_walk[_reversed] (docs/kernels.md):
//   stage  affine           y = relu?(((gate(x) - hi) - lo) * scale + shift)
//          backward_affine  dx = gate(dy) * k + ((x - hi) - lo) * q + r
//   walk   slices   a SliceWalk of channels-first slices (chunk_plans.h)
//          rows     rows [r0, r1) of ld channels
//          block    rows of channels [c0, c1) of every sample, in memory order
//   _reversed: last value first (the order that reads a just-reduced slice's cached end
//          before the lines coming back evict it).
// All in affine.cpp, forward and backward side by side.
#pragma once

#include <cstdint>

#include "kernels/geometry.h"
#include "kernels/relu_mask.h"
#include "kernels/chunk_plans.h"

namespace bnorm::kernels {

// Per-channel affine map applied elementwise (all arrays hold c values):
//   out = ((in - center_hi) - center_lo) * scale + shift
template <class T>
struct ChannelAffine {
  const T* center_hi;
  const T* center_lo;
  const T* scale;
  const T* shift;
};

// dx = gate(dy) * k + ((x - center_hi) - center_lo) * q + r per channel (c values each).
template <class T>
struct BackwardAffine {
  const T* center_hi;
  const T* center_lo;
  const T* k;
  const T* q;
  const T* r;
};

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

// Options of an elementwise pass, as the hot loops see them.
template <class T>
struct ApplyOptions {
  ReluGate<T> gate;
  ReluOutput relu;
  int64_t count;  // values in the tensor (the mask's last byte)
  bool stream;    // write the output with streaming stores, through a buffer in L1
  bool pieces() const { return gate.y || gate.mask || relu.mask || stream; }
};

#define BNORM_DECLARE_AFFINE_MAPS(T)                                                       \
  /* The walk's slices, each channel's map from per_channel (arrays indexed by channel)  \
     or, when that is null, `single` for every slice. y may equal x. */                  \
  void affine_slices(const T* x, T* y, const Geometry& g, const SliceWalk& w,              \
                     const ChannelAffine<T>* per_channel, const AffineCoefficients<T>& single, \
                     const ApplyOptions<T>& o);                                           \
  void affine_rows(const T* x, T* y, int64_t ld, int64_t r0, int64_t r1,                   \
                   const ChannelAffine<T>& a, const ApplyOptions<T>& o);                  \
  /* Channels [c0, c1) of every sample, last row first, coefficients coeff[ch - c0]. */   \
  void affine_block_reversed(const T* x, T* y, const Geometry& g, int64_t c0, int64_t c1,  \
                             const AffineCoefficients<T>* coeff, const ApplyOptions<T>& o); \
  void backward_affine_slices(const T* x, const T* dy, T* dx, const Geometry& g,           \
                              const SliceWalk& w, const BackwardAffine<T>* per_channel,    \
                              const BackwardCoefficients<T>& single,                      \
                              const ApplyOptions<T>& o);                                  \
  void backward_affine_rows(const T* x, const T* dy, T* dx, int64_t ld, int64_t r0,        \
                            int64_t r1, const BackwardAffine<T>& a, const ApplyOptions<T>& o); \
  void backward_affine_block_reversed(const T* x, const T* dy, T* dx, const Geometry& g,   \
                                      int64_t c0, int64_t c1,                             \
                                      const BackwardCoefficients<T>* coeff,               \
                                      const ApplyOptions<T>& o);

BNORM_DECLARE_AFFINE_MAPS(float)
BNORM_DECLARE_AFFINE_MAPS(double)
#undef BNORM_DECLARE_AFFINE_MAPS

}  // namespace bnorm::kernels
