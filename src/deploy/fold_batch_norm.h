// Batch norm folded into the layer before it, for inference (the library's front-end
// behind bnorm_fold_batch_norm_*, bnorm::fold_batch_norm and bnorm.fold_batch_norm).
//
// In eval mode BN is the per-channel affine map y = (z - mean) * s + beta with
// s = gamma / sqrt(running_var + eps). When z = W x + b comes from a convolution or a
// linear layer whose output channel c is row c of W, the two maps are one:
//   W'[c, :] = W[c, :] * s[c]                 (every weight of output channel c)
//   b'[c]    = (b[c] - mean[c]) * s[c] + beta[c]
// Computed in double, rounded to T once per value. weight holds out_channels rows of
// per_channel values: conv (Cout, Cin, kh, kw) has per_channel = Cin*kh*kw, linear
// (out, in) has per_channel = in.
#pragma once

#include <cstdint>

namespace bnorm::deploy {

// bias, gamma, beta: nullptr means 0, 1, 0. folded_weight may equal weight and
// folded_bias may equal bias (in place); no other overlap between an output and any
// argument. Throws bnorm::Error naming the argument (null pointer, sizes < 1, eps not
// finite or < 0, running_var + eps <= 0 for a channel, overlap) before writing anything.
// NaN in any input reaches the outputs of its channel, never another channel.
template <class T>
void fold_batch_norm(const char* op, int64_t out_channels, int64_t per_channel, const T* weight,
                     const T* bias, const T* running_mean, const T* running_var, const T* gamma,
                     const T* beta, double eps, T* folded_weight, T* folded_bias);

}  // namespace bnorm::deploy
