"""Functional layer, RMS, group and instance norm over numpy arrays, in
torch.nn.functional's terms (issue 10), with explicit backward functions.

layer_norm / rms_norm normalize each row over x's trailing `normalized_shape` (an int or
a tuple of ints); x is read row-major (a non-C-contiguous x is copied to C order first)
and outputs are C-contiguous. group_norm / instance_norm take (N, C, *spatial) in either
memory layout: a channels-last array (channel stride 1) runs without a copy and outputs
keep the input's layout, as batch_norm's do.

The *_training forwards also return what the backward needs, as batch_norm_training
does: the saved mean and rstd = 1 / sqrt(var + eps) shaped as ATen saves them
(layer/RMS norm: x.shape[:-len(normalized_shape)]; group norm: (N, G); instance norm:
(N, C)). The backwards take x, dy and those, and return (dx, dweight, dbias) with None
where not needed (need_dx / need_dweight / need_dbias = False, or weight=None for a
dweight that is still computed: weight None means weight 1). A full step without a
module:

    y, mean, rstd = bnorm.layer_norm_training(x, (768,), w, b)
    dx, dw, db = bnorm.layer_norm_backward(x, dy, (768,), mean, rstd, w)

float32 or float64, one dtype per call (TypeError otherwise); bad shapes and values are
ValueErrors naming the argument, and a failing call writes nothing.
"""
import numbers

import numpy as np

from . import _bnorm
from .functional import _check_bool, _check_scalar, _needs


def _normalized_shape(value):
    """normalized_shape as a tuple of ints: an int, or a sequence of ints (torch.Size)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"normalized_shape must be an int or a tuple of ints, got "
                        f"{type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return (int(value),)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"normalized_shape must be an int or a tuple of ints, got "
                        f"{type(value).__name__}") from None
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"normalized_shape must hold ints, got {type(item).__name__}")
    return tuple(int(item) for item in items)


def _eps(eps):
    return _check_scalar("eps", eps, 0.0)


def _rms_eps(eps):
    return None if eps is None else _eps(eps)


def _num_groups(num_groups):
    if isinstance(num_groups, (bool, np.bool_)) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    return int(num_groups)


# ---- layer norm ---------------------------------------------------------------------------

def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Like torch.nn.functional.layer_norm: returns y."""
    return layer_norm_training(input, normalized_shape, weight, bias, eps)[0]


def layer_norm_training(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """layer_norm that also returns what backward needs: (y, save_mean, save_rstd)."""
    return _bnorm.layer_norm_forward(input, _normalized_shape(normalized_shape), weight, bias,
                                     _eps(eps))


def layer_norm_backward(x, dy, normalized_shape, save_mean, save_rstd, weight=None, *,
                        need_dx=True, need_dweight=True, need_dbias=True):
    """Gradient of layer_norm_training: (dx, dweight, dbias), None where not needed.

        xhat = (x - mean) * rstd, gy = dy * weight (per element), per row of m values:
        dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat))
        dweight = sum over rows of dy * xhat, dbias = sum over rows of dy
    """
    return _bnorm.layer_norm_backward(x, dy, _normalized_shape(normalized_shape), weight,
                                      save_mean, save_rstd,
                                      *_needs(need_dx, need_dweight, need_dbias))


# ---- RMS norm -----------------------------------------------------------------------------

def rms_norm(input, normalized_shape, weight=None, eps=None):
    """Like torch.nn.functional.rms_norm (PyTorch 2.4): returns y.
    eps=None is the dtype's machine epsilon (np.finfo(dtype).eps)."""
    return rms_norm_training(input, normalized_shape, weight, eps)[0]


def rms_norm_training(input, normalized_shape, weight=None, eps=None):
    """rms_norm that also returns what backward needs: (y, save_rstd)."""
    return _bnorm.rms_norm_forward(input, _normalized_shape(normalized_shape), weight,
                                   _rms_eps(eps))


def rms_norm_backward(x, dy, normalized_shape, save_rstd, weight=None, *, need_dx=True,
                      need_dweight=True):
    """Gradient of rms_norm_training: (dx, dweight), None where not needed.

        xhat = x * rstd, gy = dy * weight: dx = rstd * (gy - xhat * mean(gy * xhat))
    """
    return _bnorm.rms_norm_backward(x, dy, _normalized_shape(normalized_shape), weight,
                                    save_rstd, _check_bool("need_dx", need_dx),
                                    _check_bool("need_dweight", need_dweight))


# ---- group norm ---------------------------------------------------------------------------

def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Like torch.nn.functional.group_norm: returns y."""
    return group_norm_training(input, num_groups, weight, bias, eps)[0]


def group_norm_training(input, num_groups, weight=None, bias=None, eps=1e-5):
    """group_norm that also returns what backward needs: (y, save_mean, save_rstd), the
    statistics shaped (N, num_groups)."""
    return _bnorm.group_norm_forward(input, _num_groups(num_groups), weight, bias, _eps(eps))


def group_norm_backward(x, dy, num_groups, save_mean, save_rstd, weight=None, *,
                        need_dx=True, need_dweight=True, need_dbias=True):
    """Gradient of group_norm_training: (dx, dweight, dbias), None where not needed.
    Pass the forward's x (any layout; dx comes back in x's)."""
    return _bnorm.group_norm_backward(x, dy, _num_groups(num_groups), weight, save_mean,
                                      save_rstd, *_needs(need_dx, need_dweight, need_dbias))


# ---- instance norm ------------------------------------------------------------------------

def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Like torch.nn.functional.instance_norm: returns y.

    use_input_stats=True normalizes each (n, c) with its own statistics and, where
    running_mean / running_var are arrays, updates them in place as PyTorch does:
        running = (1 - momentum) * running + momentum * mean over n of the instances'
        (mean, unbiased variance).
    use_input_stats=False normalizes with running_mean and running_var (required), which
    stay as they are.
    """
    if _check_bool("use_input_stats", use_input_stats):
        return instance_norm_training(input, weight, bias, running_mean, running_var,
                                      momentum, eps)[0]
    eps = _eps(eps)
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when "
                         "use_input_stats=False")
    return _bnorm.forward_inference(input, weight, bias, running_mean, running_var, eps)


def instance_norm_training(input, weight=None, bias=None, running_mean=None, running_var=None,
                           momentum=0.1, eps=1e-5):
    """Instance norm with the input's statistics that also returns what backward needs:
    (y, save_mean, save_rstd), shaped (N, C). Running buffers as instance_norm's."""
    momentum = _check_scalar("momentum", momentum, 0.0, 1.0)
    return _bnorm.instance_norm_forward_training(input, weight, bias, running_mean,
                                                 running_var, momentum, _eps(eps))


def instance_norm_backward(x, dy, save_mean, save_rstd, weight=None, *, need_dx=True,
                           need_dweight=True, need_dbias=True):
    """Gradient of instance_norm_training: group_norm_backward with num_groups = C."""
    x_shape = np.shape(x)
    groups = x_shape[1] if len(x_shape) >= 2 else 1
    return group_norm_backward(x, dy, groups, save_mean, save_rstd, weight, need_dx=need_dx,
                               need_dweight=need_dweight, need_dbias=need_dbias)


def instance_norm_backward_inference(x, dy, running_mean, running_var, weight=None, eps=1e-5,
                                     *, need_dx=True, need_dweight=True, need_dbias=True):
    """Gradient of instance_norm(use_input_stats=False), statistics held fixed: batch
    norm's inference backward, (dx, dweight, dbias)."""
    return _bnorm.backward_inference(x, dy, weight, running_mean, running_var, _eps(eps),
                                     *_needs(need_dx, need_dweight, need_dbias))
