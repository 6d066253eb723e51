"""BatchNorm1d / 2d / 3d: torch.nn.BatchNorm*d's behaviour and names over numpy.

Parameters and buffers are numpy arrays (weight, bias, running_mean, running_var,
num_batches_tracked) updated in place. forward(x) (or bn(x)) returns y; backward(dy)
returns dx and fills grad_weight / grad_bias from what the last forward saved. Like
autograd, backward uses the last forward's input: do not modify it in between.

Each module holds the C++ module, bnorm::BatchNorm<T> (bound as _bnorm.BatchNormFloat32
/ 64, python/src/module.cpp), pointed at these arrays: the train/eval mode and what it
switches (batch or running statistics, updating them or not), momentum and the
cumulative average, what forward saves for backward, the channel check and the resets
are the C++ module's. This file adds PyTorch's names, the checks of Python types and
input ranks, and state_dict / load_state_dict.

State is checked as the C and C++ APIs check it, when it is assigned:
  - weight, bias, running_mean, running_var: an assigned array is used as it is (in
    place, like a registered buffer) and must be a numpy array of the module's dtype and
    shape (num_features,), C-contiguous, aligned, writable, sharing no memory with the
    module's other arrays (TypeError for the wrong type or dtype, ValueError otherwise);
    None only where the module has none (affine=False / track_running_stats=False).
  - num_batches_tracked: a 0-d int64 array; assigning an integer in [0, INT64_MAX]
    writes it into that array. A training forward refuses to count a batch at INT64_MAX
    and checks the count at every call (as the C API does), so it never wraps;
    momentum=None's factor is 1 / (num_batches_tracked + 1).
  - eps, momentum: checked as in the constructor; training / train(mode): a bool.
  - num_features, dtype, affine, track_running_stats, running_var_estimator are fixed at
    construction (read-only).
A failing forward, assignment, reset or load_state_dict changes nothing.

copy.copy, copy.deepcopy and pickle keep the settings, mode, arrays and grads (copy.copy
shares the arrays, as it does any attribute); the copy has no saved forward, so its
backward needs a forward of its own first.
"""
from collections import OrderedDict, namedtuple
from collections.abc import Mapping

import numpy as np

from . import _bnorm
from .functional import _check_bool, _check_estimator, _check_scalar

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_NATIVE = {np.dtype(np.float32): _bnorm.BatchNormFloat32,
           np.dtype(np.float64): _bnorm.BatchNormFloat64}
_INT64_MAX = int(np.iinfo(np.int64).max)
_COUNTER = "num_batches_tracked"
_ARRAYS = ("weight", "bias", "running_mean", "running_var", _COUNTER)  # hold_state's order

# What load_state_dict returns, as torch's does.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _checked_count(name, value):
    """num_batches_tracked's value as an int in [0, INT64_MAX]: from an int, a numpy
    integer or an integer array of shape () (a torch tensor too). Floats (3.7, 1e30, even
    3.0), bools and anything else are a TypeError; a negative or too large count a
    ValueError."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if isinstance(value, int):
        count = value
    else:
        try:
            array = np.asarray(value)
        except Exception as e:  # noqa: BLE001 - anything asarray cannot read is the wrong type
            raise TypeError(f"{name} must be an integer, got {type(value).__name__} "
                            f"({type(e).__name__}: {e})") from None
        if array.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer (an int or an integer array of shape "
                            f"()), got {type(value).__name__} of dtype {array.dtype}")
        if array.shape != ():
            raise ValueError(f"{name} must be a single integer (shape ()), got shape "
                             f"{array.shape}")
        count = int(array)
    if not 0 <= count <= _INT64_MAX:
        raise ValueError(f"{name} must be in [0, INT64_MAX = {_INT64_MAX}] (an int64 count "
                         f"of batches), got {count}")
    return count


def _load_state(module, state_dict, strict, check=None):
    """Every module's load_state_dict, all or nothing: the keys against
    module._state_names(), each value converted by module._converted (the counter by
    _checked_count), then check(values) (may raise), and only then every assignment into
    the module's own arrays. Returns (missing_keys, unexpected_keys), as torch does."""
    cls = type(module).__name__
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{cls}.load_state_dict: state_dict must be a mapping (a dict of "
                        f"arrays), got {type(state_dict).__name__}")
    strict = _check_bool("strict", strict)
    names = module._state_names()
    missing = [n for n in names if n not in state_dict]
    unexpected = [k for k in state_dict if k not in names]
    if strict and (missing or unexpected):
        raise KeyError(f"{cls}.load_state_dict: missing keys {missing}, "
                       f"unexpected keys {unexpected}")
    values = {}
    for name in names:
        if name not in state_dict:
            continue
        try:
            values[name] = (_checked_count(name, state_dict[name]) if name == _COUNTER
                            else module._converted(name, state_dict[name]))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{cls}.load_state_dict: {e}") from None
    if check is not None:
        check(values)
    # All checked: same dtypes and shapes, writable targets; nothing below can fail.
    for name, value in values.items():
        getattr(module, name)[...] = value
    return IncompatibleKeys(missing, unexpected)


class _PerChannel:
    """A per-channel parameter or buffer, checked when assigned (see _BatchNorm._checked)."""

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_" + name

    def __get__(self, module, owner=None):
        return self if module is None else getattr(module, self.slot)

    def __set__(self, module, value):
        value = module._checked(self.name, value)
        module._hold_state(**{self.name: value})
        setattr(module, self.slot, value)


def _setting(name):
    return property(lambda self: getattr(self._native, name),
                    doc="Fixed at construction (the C++ module's options() are const).")


def _checked_setting(name, check, doc):
    """A setting the C++ module holds, read from it and, once `check` passed, written to it
    (a refused value raises and changes nothing)."""
    return property(lambda self: getattr(self._native, name),
                    lambda self, value: setattr(self._native, name, check(value)), doc=doc)


def _checked_momentum(value):
    return None if value is None else _check_scalar("momentum", value, 0.0, 1.0)


class _Mode:
    """train()/eval() as torch.nn.Module's, over a `training` property that the C++
    module holds (every module of the package)."""

    def train(self, mode=True):
        self.training = _check_bool("mode", mode)
        return self

    def eval(self):
        return self.train(False)


class _BatchNorm(_Mode):
    _ranks = ()  # accepted input ranks, set by the subclasses

    weight = _PerChannel()
    bias = _PerChannel()
    running_mean = _PerChannel()
    running_var = _PerChannel()
    num_features = _setting("num_features")
    dtype = property(lambda self: self._dtype, doc="Fixed at construction.")
    affine = _setting("affine")
    track_running_stats = _setting("track_running_stats")
    running_var_estimator = _setting("running_var_estimator")

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
        eps = _check_scalar("eps", eps, 0.0)
        momentum = _checked_momentum(momentum)
        affine = _check_bool("affine", affine)
        track_running_stats = _check_bool("track_running_stats", track_running_stats)
        self._dtype = dtype
        self._native = _NATIVE[dtype](int(num_features), eps, momentum, affine,
                                      track_running_stats, running_var_estimator)
        self._new_arrays()
        self._native.reset_parameters()
        self.grad_weight = None
        self.grad_bias = None
        self._input = None  # the last forward's x, which backward differentiates at

    def _new_arrays(self):
        """The module's own arrays (uninitialized), held by the C++ module."""
        c, dtype = self.num_features, self.dtype
        self._weight = np.empty(c, dtype) if self.affine else None
        self._bias = np.empty(c, dtype) if self.affine else None
        if self.track_running_stats:
            self._running_mean = np.empty(c, dtype)
            self._running_var = np.empty(c, dtype)
            self._num_batches_tracked = np.zeros((), np.int64)
        else:
            self._running_mean = self._running_var = self._num_batches_tracked = None
        self._hold_state()

    def _hold_state(self, **changes):
        """Point the C++ module at the arrays (with `changes` replacing some); raises,
        changing nothing, if one does not fit."""
        self._native.hold_state(*(changes[name] if name in changes else getattr(self, "_" + name)
                                  for name in _ARRAYS))

    # ---- checked attributes ------------------------------------------------------------
    eps = _checked_setting("eps", lambda value: _check_scalar("eps", value, 0.0),
                           "Finite and >= 0.")
    momentum = _checked_setting(
        "momentum", _checked_momentum,
        "The running statistics' factor in [0, 1], or None for the cumulative average.")

    @property
    def training(self):
        return self._native.training

    @training.setter
    def training(self, value):
        self._native.training = _check_bool("training", value)

    @property
    def num_batches_tracked(self):
        """A 0-d int64 array (None without running statistics); assign an int to set it."""
        return self._num_batches_tracked

    @num_batches_tracked.setter
    def num_batches_tracked(self, value):
        if self._num_batches_tracked is None:
            self._absent(_COUNTER, value)
            return
        count = _checked_count(_COUNTER, value)
        self._require_writable([_COUNTER], "num_batches_tracked =")
        self._native.set_num_batches_tracked(count)

    def _has(self, name):
        return self.affine if name in ("weight", "bias") else self.track_running_stats

    def _absent(self, name, value):
        if value is not None:
            flag = "affine" if name in ("weight", "bias") else "track_running_stats"
            raise ValueError(f"{type(self).__name__} was built with {flag}=False and has no "
                             f"{name}: it can only be None, got {type(value).__name__}")

    def _checked(self, name, value):
        """value as the module's `name` array: what the C bindings take for a per-channel
        buffer updated in place, checked now rather than at the next forward."""
        if not self._has(name):
            self._absent(name, value)
            return None
        c, dtype = self.num_features, self.dtype
        wanted = f"a {dtype} numpy array of shape ({c},)"
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be {wanted} (it is used in place), got "
                            f"{type(value).__name__}")
        if value.dtype != dtype:  # a non-native byte order is a different dtype too
            got = (value.dtype.name if value.dtype.isnative
                   else f"{value.dtype.str} (non-native byte order)")
            raise TypeError(f"{name} must be {wanted}, got dtype {got}")
        if value.shape != (c,):
            raise ValueError(f"{name} must be {wanted}, got shape {value.shape}")
        flags = value.flags
        if not (flags.c_contiguous and flags.aligned and flags.writeable):
            raise ValueError(f"{name} must be a C-contiguous, aligned, writable array (it is "
                             "used in place), got a "
                             + ", ".join(w for w, ok in (("non-contiguous", flags.c_contiguous),
                                                        ("unaligned", flags.aligned),
                                                        ("read-only", flags.writeable))
                                         if not ok) + " one")
        for other in ("weight", "bias", "running_mean", "running_var"):
            held = getattr(self, "_" + other, None)
            if other != name and held is not None and np.shares_memory(value, held):
                raise ValueError(f"{name} must not share memory with the module's {other}")
        return value

    def _require_writable(self, names, what):
        for name in names:
            array = getattr(self, name)
            if array is not None and not array.flags.writeable:
                raise ValueError(f"{type(self).__name__}.{what}: the module's {name} array is "
                                 "read-only; nothing was changed")

    def reset_running_stats(self):
        """running_mean = 0, running_var = 1, num_batches_tracked = 0."""
        self._require_writable(["running_mean", "running_var", _COUNTER],
                               "reset_running_stats()")
        self._native.reset_running_stats()

    def reset_parameters(self):
        """weight = 1, bias = 0, and reset_running_stats()."""
        self._require_writable(self._state_names(), "reset_parameters()")
        self._native.reset_parameters()

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
        return x

    def forward(self, x):
        """The C++ module's forward (BatchNorm<T>::forward): batch statistics in training
        mode or without running statistics, which a training forward updates (by momentum
        or 1 / (num_batches_tracked + 1)) and counts; running statistics in eval mode. A
        failing call changes nothing, the statistics saved for backward included."""
        x = self._check_input(x)
        y = self._native.forward(x)
        self._input = x
        return y

    __call__ = forward

    def backward(self, dy):
        """dx for the last forward; sets grad_weight and grad_bias (when affine)."""
        if self._input is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        dx, self.grad_weight, self.grad_bias = self._native.backward(self._input, dy)
        return dx

    # ---- state ----------------------------------------------------------------------------
    def _state_names(self):
        names = ["weight", "bias"] if self.affine else []
        if self.track_running_stats:
            names += ["running_mean", "running_var", _COUNTER]
        return names

    def state_dict(self):
        """PyTorch's keys; the values are this module's own arrays (not copies)."""
        return OrderedDict((name, getattr(self, name)) for name in self._state_names())

    def _converted(self, name, value):
        """A new (num_features,) array of the module's dtype holding value's numbers."""
        try:
            array = np.asarray(value)  # numpy arrays, torch tensors, lists
        except Exception as e:  # noqa: BLE001 - anything asarray cannot read is the wrong type
            raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__} "
                            f"({type(e).__name__}: {e})") from None
        if array.dtype.kind not in "fiu":  # not bool, complex, object, strings, dates
            raise TypeError(f"{name} must hold real numbers (a float or integer array), got "
                            f"{type(value).__name__} of dtype {array.dtype}")
        if array.shape != (self.num_features,):
            raise ValueError(f"{name} has shape {array.shape}, expected "
                             f"({self.num_features},)")
        with np.errstate(over="ignore", invalid="ignore"):
            out = array.astype(self.dtype)  # always a copy
        overflow = ~np.isfinite(out) & np.isfinite(array)  # NaN / inf pass as they are
        if overflow.any():
            i = int(np.argmax(overflow))
            raise ValueError(f"{name}[{i}] = {array[i]!r} does not fit in {self.dtype} (it "
                             "would become inf)")
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values in (numpy arrays, torch tensors, anything np.asarray takes), all or
        nothing, into the module's own arrays (which stay the same objects).

        Every value is converted and checked first: weight, bias and the running stats
        must be real numbers of shape (num_features,) that fit the module's dtype (NaN and
        inf are taken as they are, as in the C API and torch; bool, complex, strings and
        objects are a TypeError); num_batches_tracked an integer (not a float or bool) in
        [0, INT64_MAX]. strict=True: missing or unexpected keys are a KeyError; otherwise
        they are ignored. A failure (TypeError / ValueError naming the key) leaves the
        module unchanged. Returns (missing_keys, unexpected_keys), as torch does.
        """
        return _load_state(self, state_dict, strict,
                           lambda values: self._require_writable(values, "load_state_dict"))

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("_native", "_input")}
        state["_settings"] = (self.num_features, self.eps, self.momentum, self.affine,
                              self.track_running_stats, self.running_var_estimator,
                              self.training)
        return state

    def __setstate__(self, state):
        state = dict(state)
        num_features, eps, momentum, affine, track, estimator, training = state.pop("_settings")
        self.__dict__.update(state)
        self._native = _NATIVE[self._dtype](num_features, eps, momentum, affine, track,
                                            estimator)
        self._native.training = training
        self._input = None
        self._hold_state()

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
