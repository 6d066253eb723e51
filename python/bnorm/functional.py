"""Functional batch norm over numpy arrays, in torch.nn.functional's terms.

Arrays are (N, C, *spatial). float32 or float64, one dtype per call (TypeError
otherwise). A channels-last array (channel stride 1, e.g. an (N, H, W, C) array
transposed to (N, C, H, W)) is processed without a copy and outputs keep the
input's memory layout. Flags (training, return_mask, need_dx, need_dweight,
need_dbias) are bools: anything else, 0 / 1 and strings included, is a TypeError.

Running-statistics conventions (see docs/batch_norm.md):
  PyTorch:        momentum=0.1 (the default here)
  Keras / TF:     their momentum 0.99 == momentum=0.01 here
  ONNX, d2l:      their momentum 0.9  == momentum=0.1 here, running_var_estimator="biased"

Fused batch norm + ReLU (batch_norm_relu*, oneDNN's fuse_norm_relu): y = max(bn(x), 0) in
one pass, a NaN staying NaN as in torch.relu. The forwards take their plain twins'
arguments; return_mask=True also returns the ReLU's bit mask, a 1-D uint8 array of
ceil(x.size / 8) bytes: bit i % 8 of byte i // 8 is set when !(y_i <= 0), i indexing the
values in memory order (the channels-last order for a channels-last x; unused bits of
the last byte are 0). The backwards take dy = d loss / d y and, as keyword arguments,
exactly one of y (the fused forward's output) and relu_mask (its mask) as the ReLU's
gate: dy counts where !(y <= 0) / the bit is set and as 0 elsewhere, like torch's
threshold_backward. Pass them the same x (same memory layout) the forward had: the
mask is read in x's memory order.
"""
import math
import numbers

import numpy as np

from . import _bnorm


def _check_scalar(name, value, low=None, high=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low) or (
            high is not None and value > high):
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f"finite and >= {low:g}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def _check_bool(name, value):
    """A flag: True or False (numpy bools too). Truthiness is not enough: "no" is truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _needs(need_dx, need_dweight, need_dbias):
    return (_check_bool("need_dx", need_dx), _check_bool("need_dweight", need_dweight),
            _check_bool("need_dbias", need_dbias))


def _check_estimator(running_var_estimator):
    """The running variance's estimator: 'unbiased' (PyTorch) or 'biased' (ONNX, Keras)."""
    if running_var_estimator not in ("unbiased", "biased"):
        raise ValueError("running_var_estimator must be 'unbiased' or 'biased', "
                         f"got {running_var_estimator!r}")


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, running_var_estimator="unbiased"):
    """Like torch.nn.functional.batch_norm: returns y.

    training=True normalizes with the batch statistics and, where running_mean /
    running_var are arrays, updates them in place:
        running = (1 - momentum) * running + momentum * batch
    (batch variance unbiased, m / (m - 1), unless running_var_estimator="biased").
    training=False normalizes with running_mean and running_var.
    """
    eps = _check_scalar("eps", eps, 0.0)
    _check_estimator(running_var_estimator)
    if _check_bool("training", training):
        momentum = _check_scalar("momentum", momentum, 0.0, 1.0)
        y, _, _ = _bnorm.forward_training(x, weight, bias, running_mean, running_var, momentum,
                                          eps, running_var_estimator)
        return y
    return _bnorm.forward_inference(x, weight, bias, running_mean, running_var, eps)


def batch_norm_training(x, weight=None, bias=None, running_mean=None, running_var=None,
                        momentum=0.1, eps=1e-5, *, running_var_estimator="unbiased"):
    """Training forward that also returns what backward needs: (y, save_mean, save_invstd)."""
    eps = _check_scalar("eps", eps, 0.0)
    momentum = _check_scalar("momentum", momentum, 0.0, 1.0)
    return _bnorm.forward_training(x, weight, bias, running_mean, running_var, momentum, eps,
                                   running_var_estimator)


def batch_norm_backward(x, dy, save_mean, save_invstd, weight=None, *, need_dx=True,
                        need_dweight=True, need_dbias=True):
    """Gradient of the training forward: (dx, dweight, dbias), None where not needed.

        xhat = (x - mean) * invstd, dbias = sum(dy), dweight = sum(dy * xhat)
        dx = weight * invstd / m * (m * dy - dbias - xhat * dweight)
    """
    return _bnorm.backward(x, dy, weight, save_mean, save_invstd,
                           *_needs(need_dx, need_dweight, need_dbias))


def batch_norm_backward_inference(x, dy, running_mean, running_var, weight=None, eps=1e-5, *,
                                  need_dx=True, need_dweight=True, need_dbias=True):
    """Gradient of the inference forward, statistics held fixed: (dx, dweight, dbias)."""
    eps = _check_scalar("eps", eps, 0.0)
    return _bnorm.backward_inference(x, dy, weight, running_mean, running_var, eps,
                                     *_needs(need_dx, need_dweight, need_dbias))


def batch_norm_relu(x, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5, *, running_var_estimator="unbiased",
                    return_mask=False):
    """relu(batch_norm(x, ...)) fused: returns y, or (y, relu_mask) when return_mask.

    The arguments and the running-buffer update are batch_norm's.
    """
    eps = _check_scalar("eps", eps, 0.0)
    _check_estimator(running_var_estimator)
    return_mask = _check_bool("return_mask", return_mask)
    if _check_bool("training", training):
        momentum = _check_scalar("momentum", momentum, 0.0, 1.0)
        out = _bnorm.relu_forward_training(x, weight, bias, running_mean, running_var, momentum,
                                           eps, running_var_estimator, return_mask)
        return (out[0], out[3]) if return_mask else out[0]
    return _bnorm.relu_forward_inference(x, weight, bias, running_mean, running_var, eps,
                                         return_mask)


def batch_norm_relu_training(x, weight=None, bias=None, running_mean=None, running_var=None,
                             momentum=0.1, eps=1e-5, *, running_var_estimator="unbiased",
                             return_mask=False):
    """Fused training forward y = max(bn(x), 0) that also returns what backward needs:
    (y, save_mean, save_invstd), or (y, save_mean, save_invstd, relu_mask) when return_mask.
    """
    eps = _check_scalar("eps", eps, 0.0)
    momentum = _check_scalar("momentum", momentum, 0.0, 1.0)
    return _bnorm.relu_forward_training(x, weight, bias, running_mean, running_var, momentum,
                                        eps, running_var_estimator,
                                        _check_bool("return_mask", return_mask))


def batch_norm_relu_backward(x, dy, save_mean, save_invstd, weight=None, *, y=None,
                             relu_mask=None, need_dx=True, need_dweight=True, need_dbias=True):
    """Gradient of the fused training forward: (dx, dweight, dbias), None where not needed.

    dy is d loss / d y; exactly one of y (the forward's output) and relu_mask (its bit
    mask) gates it: batch_norm_backward of where(!(y <= 0), dy, 0).
    """
    return _bnorm.relu_backward(x, dy, weight, save_mean, save_invstd,
                                *_needs(need_dx, need_dweight, need_dbias), y=y,
                                relu_mask=relu_mask)


def batch_norm_relu_backward_inference(x, dy, running_mean, running_var, weight=None, eps=1e-5,
                                       *, y=None, relu_mask=None, need_dx=True,
                                       need_dweight=True, need_dbias=True):
    """Gradient of the fused inference forward, statistics held fixed: (dx, dweight, dbias).

    dy is d loss / d y, gated by exactly one of y and relu_mask as in
    batch_norm_relu_backward.
    """
    eps = _check_scalar("eps", eps, 0.0)
    return _bnorm.relu_backward_inference(x, dy, weight, running_mean, running_var, eps,
                                          *_needs(need_dx, need_dweight, need_dbias), y=y,
                                          relu_mask=relu_mask)
