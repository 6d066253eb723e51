// The scalar oracles for GroupNorm and InstanceNorm (InstanceNorm is GroupNorm with one
// channel per group, plus PyTorch's running statistics). Plain loops, sums in long
// double, a centred second pass for the variance. Never optimized; the fast kernels are
// tested against them (docs/normalizations.md).
//
// Shapes: x, y, dy, dx (N, C, spatial) laid out as Geometry says: channels-first
// x[(n * C + ch) * spatial + s] or channels-last x[(n * spatial + s) * C + ch];
// weight, bias, dweight, dbias, running_mean, running_var (C); mean, rstd (N * G) at
// [n * G + group], the layout ATen's group_norm saves (for InstanceNorm G = C: [n * C + ch]).
// Channel ch belongs to group ch / (C / G). The walk over a group is the same in both
// layouts (channel by channel, then spatial), so a channels-last result is the
// channels-first one transposed, bit for bit.
//
// T is float or double; both are instantiated. Every output is the long-double result
// rounded once to T; eps and momentum are used as given. Optional pointers: weight ==
// nullptr means 1, bias == nullptr means 0 (affine=False); mean, rstd, dx, dweight, dbias
// == nullptr are not written. The backwards recompute the statistics from x, so they are
// the exact gradient of the forward. Preconditions (asserted): G >= 1 divides C.
#pragma once

#include <cstdint>

#include "reference/batch_norm_reference.h"  // Geometry

namespace bnorm::reference {

// ---- GroupNorm (torch.nn.functional.group_norm) --------------------------------------
// Per (n, group), over its m = (C / G) * spatial values:
//   mean = sum x / m, var = sum (x - mean)^2 / m (biased), rstd = 1 / sqrt(var + eps),
//   xhat = (x - mean) * rstd, y = xhat * weight[ch] + bias[ch].
template <class T>
void group_norm_forward(const Geometry& g, int64_t groups, const T* x, T* y, const T* weight,
                        const T* bias, double eps, T* mean, T* rstd);

// Per (n, group), with gy = dy * weight[ch] (dy when weight is nullptr):
//   dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat)),
// and per channel, summed over n and spatial: dweight = sum dy * xhat, dbias = sum dy.
template <class T>
void group_norm_backward(const Geometry& g, int64_t groups, const T* x, const T* dy,
                         const T* weight, double eps, T* dx, T* dweight, T* dbias);

// ---- InstanceNorm (torch.nn.functional.instance_norm) --------------------------------
// use_input_stats=True (training, or track_running_stats=False): GroupNorm with G = C,
// statistics per (n, ch) over spatial; mean, rstd (N * C).
template <class T>
void instance_norm_forward_training(const Geometry& g, const T* x, T* y, const T* weight,
                                    const T* bias, double eps, T* mean, T* rstd);
template <class T>
void instance_norm_backward(const Geometry& g, const T* x, const T* dy, const T* weight,
                            double eps, T* dx, T* dweight, T* dbias);

// What torch.instance_norm does to running_mean / running_var when use_input_stats=True
// and they are given. It runs batch_norm on the (1, N * C, spatial) view with the running
// statistics repeated N times, then stores the mean over n of the N updated copies.
// Per instance (n, ch), with mu_nc its mean and v_nc = sum (x - mu_nc)^2 / (spatial - 1)
// its UNBIASED variance, that is
//   running_mean[ch] = (1 - momentum) * running_mean[ch] + momentum * mean_n(mu_nc),
//   running_var[ch]  = (1 - momentum) * running_var[ch]  + momentum * mean_n(v_nc).
// This is not BatchNorm's running variance: the spread of the instance means is left
// out. Needs spatial >= 2 (PyTorch refuses training with one spatial element); either
// pointer may be nullptr.
template <class T>
void instance_norm_update_running_stats(const Geometry& g, const T* x, double momentum,
                                        T* running_mean, T* running_var);

// use_input_stats=False (eval with track_running_stats=True): a per-channel affine map,
//   y = (x - running_mean[ch]) / sqrt(running_var[ch] + eps) * weight[ch] + bias[ch].
template <class T>
void instance_norm_forward_inference(const Geometry& g, const T* x, T* y, const T* weight,
                                     const T* bias, const T* running_mean,
                                     const T* running_var, double eps);

// Its gradient (running statistics are constants), with rstd = 1 / sqrt(running_var + eps):
//   dx = dy * weight[ch] * rstd, dweight = sum dy * (x - running_mean) * rstd, dbias = sum dy.
template <class T>
void instance_norm_backward_inference(const Geometry& g, const T* x, const T* dy,
                                      const T* weight, const T* running_mean,
                                      const T* running_var, double eps, T* dx, T* dweight,
                                      T* dbias);

}  // namespace bnorm::reference
