"""LayerNorm, RMSNorm, GroupNorm, InstanceNorm1d/2d/3d: torch.nn's behaviour and names over
numpy (issue 10).

forward(x) (or m(x)) returns y; backward(dy) returns dx for the last forward and sets
grad_weight / grad_bias (None where the module has no such parameter). Like autograd,
backward uses the last forward's input: do not modify it in between. train() / eval()
switch InstanceNorm with track_running_stats between its instances' statistics (which
training updates the running ones with) and the running ones; the others have them so
that every module is driven the same way.

Each module holds the C++ module (bnorm::LayerNorm<T>, RMSNorm<T>, GroupNorm<T>,
InstanceNorm<T>, bound as _bnorm.<Name>Float32 / 64 in python/src/norm_modules.cpp):
the settings' checks, the mode, what forward saves for backward, the check that backward
gets the last forward's input and the resets are the C++ module's. This file adds
PyTorch's names, the checks of Python types and input ranks, and state_dict.

weight, bias, running_mean and running_var are numpy arrays that are views of the C++
module's storage: write into them (m.weight[...] = w) and the module uses the new values.
Assigning (m.weight = w) copies w's values into that storage, checked first (shape,
real numbers that fit the dtype); the array stays the same object. state_dict() returns
these arrays (not copies); load_state_dict is all or nothing, as BatchNorm's.
InstanceNorm with track_running_stats has num_batches_tracked (a 0-d int64 array) in its
state_dict, as PyTorch has, and never increments it, as PyTorch does not.
"""
from collections import OrderedDict

import numpy as np

from . import _bnorm
from .functional import _check_bool, _check_scalar
from .modules import _Mode, _checked_setting, _load_state
from .norm_functional import _normalized_shape

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_COUNTER = "num_batches_tracked"


def _dtype_of(dtype):
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _native(kind, dtype):
    return getattr(_bnorm, f"{kind}Float{8 * dtype.itemsize}")


class _Array:
    """One of the C++ module's arrays, a view of its storage (None where it has none)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, module, owner=None):
        return self if module is None else module._arrays[self.name]

    def __set__(self, module, value):
        held = module._arrays[self.name]
        if held is None:
            if value is not None:
                raise ValueError(f"{type(module).__name__} has no {self.name} (see its "
                                 f"settings): it can only be None, got {type(value).__name__}")
            return
        held[...] = module._converted(self.name, value)


class _Norm(_Mode):
    """What the four kinds share: the native module, mode, forward/backward, state."""

    _kind = ""         # _bnorm.<kind>Float32 / 64
    _array_names = ()  # the C++ module's arrays, as bound
    weight = _Array()
    bias = _Array()

    def _build(self, dtype, *args):
        self._dtype = _dtype_of(dtype)
        self._args = args  # the C++ module's constructor arguments: what a copy rebuilds
        self._native = _native(self._kind, self._dtype)(*args)
        self._arrays = {name: getattr(self._native, name) for name in self._array_names}
        self._arrays.setdefault("bias", None)
        self.grad_weight = None
        self.grad_bias = None
        self._input = None

    dtype = property(lambda self: self._dtype, doc="Fixed at construction.")
    _settable = ("eps",)  # settings a copy carries over, beside the constructor's

    eps = _checked_setting("eps", lambda value: _check_scalar("eps", value, 0.0),
                           "Finite and > 0; the next forward uses a new value (as torch's).")

    @property
    def training(self):
        return self._native.training

    @training.setter
    def training(self, value):
        self._native.training = _check_bool("training", value)

    def reset_parameters(self):
        """weight = 1, bias = 0 (and InstanceNorm's running statistics reset)."""
        self._native.reset_parameters()

    # ---- compute ------------------------------------------------------------------------
    def _check_rank(self, x):
        """Raises ValueError for a rank the module does not take; may return a view."""
        return x

    def _check_input(self, x):
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__} holds {self.dtype} parameters, got a "
                            f"{x.dtype} input (construct it with dtype=np.{x.dtype})"
                            if x.dtype in _DTYPES else
                            f"x must be float32 or float64, got {x.dtype}")
        return x

    def forward(self, x):
        """y for x, by the C++ module's forward. A failing call changes nothing."""
        x = self._check_input(x)
        batched = self._batched(x)
        y = self._native.forward(batched)
        self._input = x
        return y if batched is x else y[0]

    __call__ = forward

    def _batched(self, x):
        return x

    def backward(self, dy):
        """dx for the last forward; sets grad_weight and grad_bias (None where absent)."""
        if self._input is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        x = self._batched(self._input)
        if x is not self._input:
            dy = np.asarray(dy)[None]
        dx, grad_weight, grad_bias = self._native.backward(x, dy)
        # The C++ module's flat gradients, shaped like the parameters (normalized_shape).
        self.grad_weight = None if grad_weight is None else grad_weight.reshape(self.weight.shape)
        self.grad_bias = None if grad_bias is None else grad_bias.reshape(self.bias.shape)
        return dx if x is self._input else dx[0]

    # ---- state ----------------------------------------------------------------------------
    def _state_names(self):
        return [name for name in ("weight", "bias") if self._arrays[name] is not None]

    def state_dict(self):
        """PyTorch's keys; the values are this module's own arrays (not copies)."""
        return OrderedDict((name, getattr(self, name)) for name in self._state_names())

    def _converted(self, name, value):
        """A new array of the module's dtype and `name`'s shape holding value's numbers."""
        held = getattr(self, name)
        try:
            array = np.asarray(value)  # numpy arrays, torch tensors, lists
        except Exception as e:  # noqa: BLE001 - anything asarray cannot read is the wrong type
            raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__} "
                            f"({type(e).__name__}: {e})") from None
        if array.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers (a float or integer array), got "
                            f"{type(value).__name__} of dtype {array.dtype}")
        if array.shape != held.shape:
            raise ValueError(f"{name} has shape {array.shape}, expected {held.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            out = array.astype(self.dtype)
        overflow = ~np.isfinite(out) & np.isfinite(array)
        if overflow.any():
            raise ValueError(f"{name} has values that do not fit in {self.dtype} (they would "
                             "become inf)")
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values in (numpy arrays, torch tensors, anything np.asarray takes), all or
        nothing, into the module's own arrays (which stay the same objects). strict=True:
        missing or unexpected keys are a KeyError. Returns (missing_keys, unexpected_keys).
        """
        return _load_state(self, state_dict, strict)

    # ---- copy, deepcopy, pickle ----------------------------------------------------------
    def __getstate__(self):
        """Settings, mode, state (copies) and gradients; not the last forward's input, so a
        copy's backward() needs a forward of its own first (as BatchNorm's)."""
        return {"dtype": self._dtype, "args": self._args, "training": self.training,
                "settings": {name: getattr(self, name) for name in self._settable},
                "state": {name: np.array(getattr(self, name)) for name in self._state_names()},
                "grad_weight": self.grad_weight, "grad_bias": self.grad_bias}

    def __setstate__(self, state):
        self._build(state["dtype"], *state["args"])
        self.training = state["training"]
        for name, value in state.get("settings", {}).items():
            setattr(self, name, value)
        if isinstance(self, _InstanceNorm):
            self.num_batches_tracked = (np.zeros((), np.int64) if self.track_running_stats
                                        else None)
        for name, value in state["state"].items():
            getattr(self, name)[...] = value
        self.grad_weight = state["grad_weight"]
        self.grad_bias = state["grad_bias"]


class LayerNorm(_Norm):
    """torch.nn.LayerNorm: each row normalized over the trailing normalized_shape; weight
    and bias (optional, as in PyTorch >= 2.1) shaped like normalized_shape."""

    _kind = "LayerNorm"
    _array_names = ("weight", "bias")

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=np.float32):
        self._build(dtype, list(_normalized_shape(normalized_shape)),
                    _check_scalar("eps", eps, 0.0),
                    _check_bool("elementwise_affine", elementwise_affine),
                    _check_bool("bias", bias))

    normalized_shape = property(lambda self: tuple(self._native.normalized_shape))
    elementwise_affine = property(lambda self: self._native.elementwise_affine)

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")


class RMSNorm(_Norm):
    """torch.nn.RMSNorm (PyTorch 2.4): y = x / sqrt(mean(x^2) + eps) * weight over the
    trailing normalized_shape; eps=None is the dtype's machine epsilon."""

    _kind = "RMSNorm"
    _array_names = ("weight",)

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32):
        self._build(dtype, list(_normalized_shape(normalized_shape)),
                    None if eps is None else _check_scalar("eps", eps, 0.0),
                    _check_bool("elementwise_affine", elementwise_affine))

    normalized_shape = property(lambda self: tuple(self._native.normalized_shape))
    elementwise_affine = property(lambda self: self._native.elementwise_affine)

    eps = _checked_setting(
        "eps", lambda value: None if value is None else _check_scalar("eps", value, 0.0),
        "None (the dtype's machine epsilon) or finite and > 0.")

    def __repr__(self):
        return (f"RMSNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")


class GroupNorm(_Norm):
    """torch.nn.GroupNorm: (N, C, *) in either memory layout, statistics per (sample,
    group of C / num_groups channels); weight and bias per channel."""

    _kind = "GroupNorm"
    _array_names = ("weight", "bias")

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32):
        self._build(dtype, _positive_int("num_groups", num_groups),
                    _positive_int("num_channels", num_channels),
                    _check_scalar("eps", eps, 0.0), _check_bool("affine", affine))

    num_groups = property(lambda self: self._native.num_groups)
    num_channels = property(lambda self: self._native.num_channels)
    affine = property(lambda self: self._native.affine)

    def _check_input(self, x):
        x = super()._check_input(x)
        if x.ndim < 2:
            raise ValueError(f"GroupNorm: expected an (N, C, *) input of at least 2 dims "
                             f"(got {x.ndim}D input)")
        return x

    def __repr__(self):
        return (f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine})")


class _InstanceNorm(_Norm):
    _kind = "InstanceNorm"
    _array_names = ("weight", "bias", "running_mean", "running_var")
    _rank = 0  # the batched rank; one less is an unbatched (C, *) input, as in PyTorch
    running_mean = _Array()
    running_var = _Array()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, dtype=np.float32):
        self._build(dtype, _positive_int("num_features", num_features),
                    _check_scalar("eps", eps, 0.0),
                    _check_scalar("momentum", momentum, 0.0, 1.0), _check_bool("affine", affine),
                    _check_bool("track_running_stats", track_running_stats))
        self.num_batches_tracked = (np.zeros((), np.int64) if self.track_running_stats
                                    else None)

    num_features = property(lambda self: self._native.num_features)
    _settable = ("eps", "momentum")

    momentum = _checked_setting(
        "momentum", lambda value: _check_scalar("momentum", value, 0.0, 1.0),
        "In [0, 1]; the next training forward with running statistics uses a new value.")
    affine = property(lambda self: self._native.affine)
    track_running_stats = property(lambda self: self._native.track_running_stats)

    def _check_input(self, x):
        x = super()._check_input(x)
        if x.ndim not in (self._rank - 1, self._rank):
            raise ValueError(f"{type(self).__name__}: expected {self._rank - 1}D (unbatched) "
                             f"or {self._rank}D (batched) input (got {x.ndim}D input)")
        return x

    def _batched(self, x):
        return x[None] if x.ndim == self._rank - 1 else x

    def reset_running_stats(self):
        """running_mean = 0, running_var = 1, num_batches_tracked = 0."""
        self._native.reset_running_stats()
        if self.num_batches_tracked is not None:
            self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        super().reset_parameters()
        self.reset_running_stats()

    def _state_names(self):
        names = super()._state_names()
        if self.track_running_stats:
            names += ["running_mean", "running_var", _COUNTER]
        return names

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats})")


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over (N, C, L) input, or unbatched (C, L)."""
    _rank = 3


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over (N, C, H, W) input, or unbatched (C, H, W)."""
    _rank = 4


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over (N, C, D, H, W) input, or unbatched (C, D, H, W)."""
    _rank = 5
