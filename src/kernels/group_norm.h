// Group norm's kernel driver (instance norm is the case G = C). Statistics per
// (sample, group) over the group's C/G channels x spatial values; the elementwise maps
// per (sample, channel), since the weight and bias are per channel.
//
//   channels-first (N, C, S): group (n, g) is one contiguous run of C/G * S values, so
//     its statistics are channels-first "channels" of Geometry{1, N*G, C/G * S}, and
//     its maps apply to the slices of Geometry{1, N*C, S}: the batch-norm microkernels
//     on those views. Fused where the groups keep the threads busy: each group reduced
//     and normalized while it is in cache (2T forward, 3T backward).
//   channels-last (N, S, C): group (n, g) is S rows x C/G columns of sample n. Each
//     sample's channels are reduced as rows of channels (shifted sums per channel, its
//     first row as the shift), then a group's channels are Chan-merged in channel order.
//     Fused where the samples keep the threads busy and one sample fits the fused budget:
//     each sample reduced and normalized while it is in L2.
//
// Work items and folds are fixed by the shape, so results are bitwise identical for any
// thread count; the fused and separate passes give the same bits.
#pragma once

#include <cstdint>

#include "kernels/affine.h"
#include "kernels/geometry.h"
#include "kernels/moments.h"

namespace bnorm::kernels {

// The front-end's per-group step (the extension point, as batch_norm.h's callbacks):
// called once per group (n * G + g) on the thread that owns it, with the group's
// moments; it writes the maps of the group's channels (indices n * C + g * C/G + j of
// the ChannelAffine arrays) and any per-group output.
struct GroupForwardFn {
  void* context;
  void (*call)(void* context, int64_t group, const Moments& moments);
};

// moments[n * G + g] of every group; y = maps(x) per (n, c), maps filled by `fn`.
// y may equal x.
template <class T>
void group_norm_forward(const Geometry& g, int64_t groups, const T* x, T* y, Moments* moments,
                        const ChannelAffine<T>& maps, const GroupForwardFn& fn, int threads);

// Per-group backward step: with the sums of the group's C/G channels (slice_sums[j] for
// channel g * C/G + j of sample n), it writes their dx maps (BackwardAffine arrays at
// n * C + g * C/G + j).
struct GroupBackwardFn {
  void* context;
  void (*call)(void* context, int64_t group, const BackwardSums* slice_sums);
};

// sums[n * C + c] over (n, c)'s spatial values, with xc = x - center[n * C + c]; then,
// when dx is not null, dx = dy * k + ((x - hi) - lo) * q + r with the maps `fn` wrote.
// dx may equal dy.
template <class T>
void group_norm_backward(const Geometry& g, int64_t groups, const T* x, const T* dy, T* dx,
                         const T* center, BackwardSums* sums, const BackwardAffine<T>& maps,
                         const GroupBackwardFn& fn, int threads);

}  // namespace bnorm::kernels
