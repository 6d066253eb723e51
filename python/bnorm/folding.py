"""Batch norm folded into the convolution or linear layer before it, for inference.

In eval mode batch norm is a per-channel affine map, so after a conv or linear layer
(output channel c = weight[c]) the two are one layer:

    s = gamma / sqrt(running_var + eps)
    weight'[c, ...] = weight[c, ...] * s[c]
    bias'[c]        = (bias[c] - running_mean[c]) * s[c] + beta[c]

computed in double whatever the dtype (the C++ bnorm::fold_batch_norm).
"""
from . import _bnorm


def fold_batch_norm(weight, bias, running_mean, running_var, gamma=None, beta=None, eps=1e-5):
    """Returns (weight', bias'), new arrays of weight's dtype (float32 or float64).

    weight: (out_channels, ...): a conv's (Cout, Cin, kh, kw) or a linear layer's (out, in).
    bias, gamma, beta: None (0, 1, 0: a layer without bias, batch norm without affine) or
    arrays of shape (out_channels,); running_mean, running_var: (out_channels,), the batch
    norm's running statistics. Raises TypeError for a wrong dtype and ValueError naming
    the argument for a wrong shape, eps < 0 or NaN, or running_var + eps <= 0. A NaN
    statistic is not an error: it makes its own output channel NaN, visibly.
    """
    return _bnorm.fold_batch_norm(weight, bias, running_mean, running_var, gamma, beta,
                                  float(eps))
