"""BatchNorm1d / 2d / 3d: torch.nn.BatchNorm*d's behaviour and names over numpy.

Parameters and buffers are numpy arrays (weight, bias, running_mean, running_var,
num_batches_tracked) updated in place. forward(x) (or bn(x)) returns y; backward(dy)
returns dx and fills grad_weight / grad_bias from what the last forward saved. Like
autograd, backward uses the last forward's input: do not modify it in between.
"""
from collections import OrderedDict

import numpy as np

from . import _bnorm
from .functional import _check_estimator, _check_scalar

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _BatchNorm:
    _ranks = ()  # accepted input ranks, set by the subclasses

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, *,
                 running_var_estimator="unbiased"):
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)):
            raise TypeError(f"num_features must be an int, got {type(num_features).__name__}")
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        dtype = np.dtype(dtype)
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        _check_estimator(running_var_estimator)
        self.num_features = int(num_features)
        self.eps = _check_scalar("eps", eps, 0.0)
        self.momentum = None if momentum is None else _check_scalar("momentum", momentum, 0.0, 1.0)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.running_var_estimator = running_var_estimator
        self.dtype = dtype
        self.training = True
        c = self.num_features
        self.weight = np.ones(c, dtype) if self.affine else None
        self.bias = np.zeros(c, dtype) if self.affine else None
        if self.track_running_stats:
            self.running_mean = np.zeros(c, dtype)
            self.running_var = np.ones(c, dtype)
            self.num_batches_tracked = np.zeros((), np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self.grad_weight = None
        self.grad_bias = None
        self._saved = None

    # ---- mode -------------------------------------------------------------------------
    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            self.weight[...] = 1
            self.bias[...] = 0

    # ---- compute ------------------------------------------------------------------------
    def _check_input(self, x):
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
        if x.ndim not in self._ranks:
            wanted = " or ".join(f"{r}D" for r in self._ranks)
            raise ValueError(f"{type(self).__name__}: expected {wanted} input (got {x.ndim}D input)")
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__} holds {self.dtype} parameters, got a "
                            f"{x.dtype} input (construct it with dtype=np.{x.dtype})"
                            if x.dtype in _DTYPES else
                            f"x must be float32 or float64, got {x.dtype}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: x has {x.shape[1]} channels (dim 1), "
                             f"expected num_features = {self.num_features}")
        return x

    def forward(self, x):
        x = self._check_input(x)
        update = self.training and self.track_running_stats
        if self.training or not self.track_running_stats:
            factor = 0.0
            if update:
                count = int(self.num_batches_tracked) + 1
                factor = 1.0 / count if self.momentum is None else self.momentum
            y, save_mean, save_invstd = _bnorm.forward_training(
                x, self.weight, self.bias,
                self.running_mean if update else None, self.running_var if update else None,
                factor, self.eps, self.running_var_estimator)
            if update:  # only after success: a failing call changes nothing
                self.num_batches_tracked += 1
            self._saved = ("batch", x, save_mean, save_invstd)
        else:
            y = _bnorm.forward_inference(x, self.weight, self.bias, self.running_mean,
                                         self.running_var, self.eps)
            self._saved = ("running", x)
        return y

    __call__ = forward

    def backward(self, dy):
        """dx for the last forward; sets grad_weight and grad_bias (when affine)."""
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        kind, x = self._saved[0], self._saved[1]
        if kind == "batch":
            dx, dw, db = _bnorm.backward(x, dy, self.weight, self._saved[2], self._saved[3],
                                         True, self.affine, self.affine)
        else:
            dx, dw, db = _bnorm.backward_inference(x, dy, self.weight, self.running_mean,
                                                   self.running_var, self.eps, True,
                                                   self.affine, self.affine)
        self.grad_weight, self.grad_bias = dw, db
        return dx

    # ---- state ----------------------------------------------------------------------------
    def _state_names(self):
        names = ["weight", "bias"] if self.affine else []
        if self.track_running_stats:
            names += ["running_mean", "running_var", "num_batches_tracked"]
        return names

    def state_dict(self):
        """PyTorch's keys; the values are this module's own arrays (not copies)."""
        return OrderedDict((name, getattr(self, name)) for name in self._state_names())

    def load_state_dict(self, state_dict, strict=True):
        """Copy values in (numpy arrays, torch tensors, anything np.asarray takes)."""
        names = self._state_names()
        missing = [n for n in names if n not in state_dict]
        unexpected = [k for k in state_dict if k not in names]
        if strict and (missing or unexpected):
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        values = {}
        for name in names:
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name])
            target = getattr(self, name)
            if value.shape != target.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {name} has shape "
                                 f"{value.shape}, expected {target.shape}")
            values[name] = value
        for name, value in values.items():  # all checked first: nothing half-loaded
            np.copyto(getattr(self, name), value, casting="unsafe")

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats})")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input."""
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input."""
    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch norm over (N, C, D, H, W) input."""
    _ranks = (5,)
