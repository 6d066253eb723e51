"""bnorm's kernels behind torch.nn's normalization modules (CPU): a drop-in for PyTorch models.

    import bnorm.torch
    model = bnorm.torch.convert(model)     # torch.nn.BatchNorm2d -> bnorm.torch.BatchNorm2d ...
    ...train as before; bnorm.torch.revert(model) gives the torch types back.

Every class here subclasses its torch.nn twin (constructor, parameters, buffers, state_dict
keys, reset_*, extra_repr, _check_input_dim, isinstance are PyTorch's) and overrides only
forward, which keeps torch 1.13's module logic (which statistics, which buffers, the
momentum / cumulative-average factor) and computes through one torch.autograd.Function
calling bnorm's numpy bindings (bnorm._bnorm):

- zero-copy: the kernels read `x.detach().numpy()`, a view of x's memory, and their outputs
  become tensors through torch.from_numpy; the running buffers and num_batches_tracked are
  updated in place through numpy views of the module's tensors. A channels_last (3d:
  channels_last_3d) x runs bnorm's channels-last kernel and y, dx come back channels_last.
  A copy happens only for other strides (a sliced or permuted x), for a dy that autograd
  hands over expanded or in the other layout, and for LayerNorm's non-C-contiguous x.
- threads: before a kernel call bnorm's thread count is set to torch.get_num_threads()
  when it differs, so torch.set_num_threads governs both.
- errors: input checks raise what torch 1.13 raises (ValueError for the rank and for one
  value per channel in training, RuntimeError for a device, dtype or size torch would
  refuse), with bnorm's message text for what bnorm's front-end finds. A failed call
  changes no buffer (torch increments num_batches_tracked before its own checks).
- unsupported: devices other than CPU, dtypes other than float32 / float64 (torch.half,
  bfloat16: revert those layers), double backward (@once_differentiable raises),
  TorchScript. A zero-size input falls back to torch's own forward.

Importing bnorm does not import torch; importing bnorm.torch does (ImportError without it).
"""
import contextlib

try:
    import torch
    import torch.nn
    from torch.autograd.function import once_differentiable
except ImportError as error:  # the numpy package works without torch; this module cannot
    raise ImportError("bnorm.torch needs PyTorch (import torch failed: "
                      f"{error}); the numpy API, `import bnorm`, works without it") from error

from . import _bnorm

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "convert", "revert",
]

_DTYPES = (torch.float32, torch.float64)


# ---- the checks torch would make, and bnorm's errors as torch's -----------------------

def _check_tensors(kind, x, *others):
    """CPU, float32/float64, one dtype: what bnorm's kernels take. torch raises RuntimeError
    for a device or dtype its kernel refuses, so do we, naming what is supported."""
    for t in (x,) + others:
        if t is not None and t.device.type != "cpu":
            raise RuntimeError(f"bnorm.torch.{kind} runs on CPU tensors only, got a tensor on "
                               f"'{t.device}' (use torch.nn.{kind}, or bnorm.torch.revert)")
    if x.dtype not in _DTYPES:
        raise RuntimeError(f"bnorm.torch.{kind}: input dtype {x.dtype} is not supported, only "
                           "torch.float32 and torch.float64 are (use torch.nn."
                           f"{kind}, or bnorm.torch.revert, for others)")
    for t in others:
        if t is not None and t.dtype != x.dtype:
            raise RuntimeError(f"bnorm.torch.{kind}: expected the parameters and buffers to "
                               f"have the input's dtype {x.dtype}, got {t.dtype} (bnorm runs "
                               "one dtype per call: call .to(dtype) on the module or the input)")


def _verify_values_per_channel(size):
    """torch.nn.functional._verify_batch_size: batch statistics of one value are all 0."""
    count = size[0]
    for s in size[2:]:
        count *= s
    if count == 1:
        raise ValueError("Expected more than 1 value per channel when training, got input "
                         f"size {size}")


def _verify_spatial_size(size):
    """torch.nn.functional._verify_spatial_size, for instance norm's statistics."""
    count = 1
    for s in size[2:]:
        count *= s
    if count == 1:
        raise ValueError("Expected more than 1 spatial element when training, got input "
                         f"size {size}")


def _kernel(function, *args, **kwargs):
    """Calls a binding; bnorm's ValueError (sizes) and TypeError (dtypes) become the
    RuntimeError torch raises for those, with bnorm's message."""
    try:
        return function(*args, **kwargs)
    except (ValueError, TypeError) as error:
        raise RuntimeError(str(error)) from error


def _sync_threads():
    """bnorm's pool follows torch.set_num_threads; set only on change (set resizes the pool)."""
    n = torch.get_num_threads()
    if _bnorm.get_num_threads() != n:
        _bnorm.set_num_threads(n)


def _array(t):
    """A numpy view of a CPU tensor (no copy), or None. numpy() refuses a lazily negated
    tensor (autograd can hand one over as dy): resolve_neg is a no-op on any other."""
    return None if t is None else t.detach().resolve_neg().numpy()


def _profiled(name):
    """A profiler range around a kernel call, only while a profiler runs (the benchmark's
    per-layer times); otherwise nothing, so the hot path pays one flag test."""
    if torch.autograd._profiler_enabled():
        return torch.autograd.profiler.record_function(name)
    return contextlib.nullcontext()


# ---- plans: one kind of forward + its backward over numpy arrays ------------------------
#
# A plan is built per call by a module's forward and travels through _NormFunction as a
# non-tensor argument. forward(x, w, b) returns y and keeps what backward needs;
# backward(x, dy, w, need_dx, need_dw, need_db) returns (dx, dw, db), None where not needed.

class _BatchStatsPlan:
    """Batch norm with the batch's statistics (training, or no running stats):
    y = w * (x - mean) * invstd + b; running = (1 - m) * running + m * (mean, unbiased var),
    m = momentum or 1 / (num_batches_tracked + 1); num_batches_tracked += 1 (in place)."""
    name = "bnorm::batch_norm"

    def __init__(self, running_mean, running_var, num_batches_tracked, momentum, eps):
        self.rm, self.rv, self.nbt = running_mean, running_var, num_batches_tracked
        self.momentum, self.eps = momentum, eps

    def forward(self, x, w, b):
        y, self.save_mean, self.save_invstd = _kernel(
            _bnorm.forward_training, x, w, b, self.rm, self.rv, self.momentum, self.eps,
            num_batches_tracked=self.nbt)
        return y

    def backward(self, x, dy, w, need_dx, need_dw, need_db):
        # xhat = (x - mean) * invstd, db = sum(dy), dw = sum(dy * xhat),
        # dx = w * invstd / m * (m * dy - db - xhat * dw)   (per channel, m values)
        return _kernel(_bnorm.backward, x, dy, w, self.save_mean, self.save_invstd, need_dx,
                       need_dw, need_db)


class _RunningStatsPlan:
    """Batch norm (or instance norm) with fixed running statistics (eval):
    y = w * (x - running_mean) / sqrt(running_var + eps) + b; dx = w * dy / sqrt(...)."""
    name = "bnorm::batch_norm_inference"

    def __init__(self, running_mean, running_var, eps):
        self.rm, self.rv, self.eps = running_mean, running_var, eps

    def forward(self, x, w, b):
        y = _kernel(_bnorm.forward_inference, x, w, b, self.rm, self.rv, self.eps)
        # The backward must see the statistics this forward used, even when a training
        # step updates the buffers (in place, unseen by autograd) before it runs: C values.
        self.rm, self.rv = self.rm.copy(), self.rv.copy()
        return y

    def backward(self, x, dy, w, need_dx, need_dw, need_db):
        return _kernel(_bnorm.backward_inference, x, dy, w, self.rm, self.rv, self.eps,
                       need_dx, need_dw, need_db)


class _LayerNormPlan:
    """Per row over the trailing normalized_shape: mean, rstd saved shaped x.shape[:-k]."""
    name = "bnorm::layer_norm"

    def __init__(self, normalized_shape, eps):
        self.shape, self.eps = list(normalized_shape), eps

    def forward(self, x, w, b):
        y, self.save_mean, self.save_rstd = _kernel(_bnorm.layer_norm_forward, x, self.shape,
                                                    w, b, self.eps)
        return y

    def backward(self, x, dy, w, need_dx, need_dw, need_db):
        return _kernel(_bnorm.layer_norm_backward, x, dy, self.shape, w, self.save_mean,
                       self.save_rstd, need_dx, need_dw, need_db)


class _GroupNormPlan:
    """Per (n, group) over C/G channels x spatial; statistics saved (N, G). Instance norm's
    backward is this with G = C."""
    name = "bnorm::group_norm"

    def __init__(self, groups, eps):
        self.groups, self.eps = groups, eps

    def forward(self, x, w, b):
        y, self.save_mean, self.save_rstd = _kernel(_bnorm.group_norm_forward, x, self.groups,
                                                    w, b, self.eps)
        return y

    def backward(self, x, dy, w, need_dx, need_dw, need_db):
        return _kernel(_bnorm.group_norm_backward, x, dy, self.groups, w, self.save_mean,
                       self.save_rstd, need_dx, need_dw, need_db)


class _InstanceStatsPlan(_GroupNormPlan):
    """Instance norm with each (n, c)'s own statistics; running buffers (if any) updated
    as torch does: running = (1 - m) * running + m * mean over n of (mean, unbiased var)."""
    name = "bnorm::instance_norm"

    def __init__(self, channels, running_mean, running_var, momentum, eps):
        super().__init__(channels, eps)
        self.rm, self.rv, self.momentum = running_mean, running_var, momentum

    def forward(self, x, w, b):
        y, self.save_mean, self.save_rstd = _kernel(_bnorm.instance_norm_forward_training, x,
                                                    w, b, self.rm, self.rv, self.momentum,
                                                    self.eps)
        return y


class _NormFunction(torch.autograd.Function):
    """y = plan.forward(x, weight, bias) on numpy views; the backward through the plan,
    computing only the gradients autograd asks for (ctx.needs_input_grad)."""

    @staticmethod
    def forward(ctx, plan, x, weight, bias):
        with _profiled(plan.name + "_forward"):
            _sync_threads()
            y = torch.from_numpy(plan.forward(_array(x), _array(weight), _array(bias)))
        ctx.plan = plan
        ctx.save_for_backward(x, weight)  # torch checks they are not modified in place
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        _, need_dx, need_dw, need_db = ctx.needs_input_grad
        if not (need_dx or need_dw or need_db):
            return None, None, None, None
        x, weight = ctx.saved_tensors
        with _profiled(ctx.plan.name + "_backward"):
            _sync_threads()
            grads = ctx.plan.backward(_array(x), _array(dy), _array(weight), need_dx, need_dw,
                                      need_db)
            return (None,) + tuple(None if g is None else torch.from_numpy(g) for g in grads)


# ---- batch norm ------------------------------------------------------------------------

class _BatchNormForward:
    """torch 1.13's _BatchNorm.forward with bnorm's kernels."""

    def forward(self, input):
        self._check_input_dim(input)
        if input.numel() == 0:  # bnorm refuses zero-size dims; torch returns an empty y
            return super().forward(input)
        kind = type(self).__name__
        _check_tensors(kind, input, self.weight, self.bias, self.running_mean,
                       self.running_var)
        # Batch statistics in training, and in eval when there are no running stats.
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        if not bn_training:
            plan = _RunningStatsPlan(_array(self.running_mean), _array(self.running_var),
                                     self.eps)
            return _NormFunction.apply(plan, input, self.weight, self.bias)
        _verify_values_per_channel(input.size())
        # Buffers are updated only when tracked, in training. torch increments
        # num_batches_tracked first and uses factor 1 / num_batches_tracked for
        # momentum=None; bnorm increments after success with 1 / (count + 1), the same.
        update = self.training and self.track_running_stats
        counter = self.num_batches_tracked if update else None
        momentum = self.momentum
        if momentum is None and counter is None:
            momentum = 0.0  # torch's factor when no counter is kept
        plan = _BatchStatsPlan(_array(self.running_mean) if update else None,
                               _array(self.running_var) if update else None,
                               _array(counter), momentum, self.eps)
        return _NormFunction.apply(plan, input, self.weight, self.bias)


class BatchNorm1d(_BatchNormForward, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d computed by bnorm: input (N, C) or (N, C, L)."""


class BatchNorm2d(_BatchNormForward, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d computed by bnorm: input (N, C, H, W), either memory format."""


class BatchNorm3d(_BatchNormForward, torch.nn.BatchNorm3d):
    """torch.nn.BatchNorm3d computed by bnorm: input (N, C, D, H, W), either memory format."""


# ---- the rest of the family --------------------------------------------------------------

class LayerNorm(torch.nn.LayerNorm):
    """torch.nn.LayerNorm computed by bnorm (F.layer_norm's semantics)."""

    def forward(self, input):
        if input.numel() == 0:
            return super().forward(input)
        _check_tensors("LayerNorm", input, self.weight, self.bias)
        plan = _LayerNormPlan(self.normalized_shape, self.eps)
        return _NormFunction.apply(plan, input, self.weight, self.bias)


class GroupNorm(torch.nn.GroupNorm):
    """torch.nn.GroupNorm computed by bnorm (F.group_norm's semantics): input (N, C, *)."""

    def forward(self, input):
        if input.dim() < 2:  # torch 1.13 fails here on input.size(1): an IndexError
            raise IndexError(f"GroupNorm expects an input of at least 2 dims (N, C, *), got "
                             f"{input.dim()}D input")
        if input.numel() == 0:
            return super().forward(input)
        _check_tensors("GroupNorm", input, self.weight, self.bias)
        size = input.size()
        _verify_values_per_channel([size[0] * size[1] // self.num_groups, self.num_groups]
                                   + list(size[2:]))
        plan = _GroupNormPlan(self.num_groups, self.eps)
        return _NormFunction.apply(plan, input, self.weight, self.bias)


class _InstanceNormForward:
    """torch 1.13's _InstanceNorm.forward with bnorm's kernels. An unbatched input
    (C, *spatial) runs as a batch of one."""

    def forward(self, input):
        self._check_input_dim(input)
        if input.dim() == self._get_no_batch_dim():
            return self.forward(input.unsqueeze(0)).squeeze(0)
        if input.numel() == 0:
            return super().forward(input)
        kind = type(self).__name__
        _check_tensors(kind, input, self.weight, self.bias, self.running_mean,
                       self.running_var)
        use_input_stats = self.training or not self.track_running_stats
        if not use_input_stats:
            plan = _RunningStatsPlan(_array(self.running_mean), _array(self.running_var),
                                     self.eps)
            return _NormFunction.apply(plan, input, self.weight, self.bias)
        _verify_spatial_size(input.size())
        if self.momentum is None and self.running_mean is not None:
            raise RuntimeError(f"bnorm.torch.{kind}: momentum=None (a cumulative average) is "
                               "not supported for instance norm's running statistics")
        plan = _InstanceStatsPlan(input.size(1), _array(self.running_mean),
                                  _array(self.running_var),
                                  0.0 if self.momentum is None else self.momentum, self.eps)
        return _NormFunction.apply(plan, input, self.weight, self.bias)


class InstanceNorm1d(_InstanceNormForward, torch.nn.InstanceNorm1d):
    """torch.nn.InstanceNorm1d computed by bnorm: input (N, C, L) or (C, L)."""


class InstanceNorm2d(_InstanceNormForward, torch.nn.InstanceNorm2d):
    """torch.nn.InstanceNorm2d computed by bnorm: input (N, C, H, W) or (C, H, W). A
    channels_last input gives a channels_last output (torch's is contiguous); values match."""


class InstanceNorm3d(_InstanceNormForward, torch.nn.InstanceNorm3d):
    """torch.nn.InstanceNorm3d computed by bnorm: input (N, C, D, H, W) or (C, D, H, W)."""


# ---- convert / revert --------------------------------------------------------------------

def _batch_norm_args(m):
    return (m.num_features,), dict(eps=m.eps, momentum=m.momentum, affine=m.affine,
                                   track_running_stats=m.track_running_stats)


def _layer_norm_args(m):
    return (m.normalized_shape,), dict(eps=m.eps, elementwise_affine=m.elementwise_affine)


def _group_norm_args(m):
    return (m.num_groups, m.num_channels), dict(eps=m.eps, affine=m.affine)


# torch type -> (bnorm type, constructor arguments of an instance)
_PAIRS = {
    torch.nn.BatchNorm1d: (BatchNorm1d, _batch_norm_args),
    torch.nn.BatchNorm2d: (BatchNorm2d, _batch_norm_args),
    torch.nn.BatchNorm3d: (BatchNorm3d, _batch_norm_args),
    torch.nn.LayerNorm: (LayerNorm, _layer_norm_args),
    torch.nn.GroupNorm: (GroupNorm, _group_norm_args),
    torch.nn.InstanceNorm1d: (InstanceNorm1d, _batch_norm_args),
    torch.nn.InstanceNorm2d: (InstanceNorm2d, _batch_norm_args),
    torch.nn.InstanceNorm3d: (InstanceNorm3d, _batch_norm_args),
}
_TO_BNORM = {t: b for t, (b, _) in _PAIRS.items()}
_TO_TORCH = {b: t for t, (b, _) in _PAIRS.items()}
_ARGS = {cls: args for t, (b, args) in _PAIRS.items() for cls in (t, b)}


def _swapped(module, target):
    """A `target` instance holding module's settings and its very Parameter and buffer
    objects (shared, not copied), its training flag and its hooks."""
    args, kwargs = _ARGS[type(module)](module)
    # On 'meta' the constructor allocates nothing; every tensor is then module's own.
    new = target(*args, device="meta", **kwargs)
    new._parameters.clear()
    new._parameters.update(module._parameters)
    new._buffers.clear()
    new._buffers.update(module._buffers)
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                  "_state_dict_hooks", "_load_state_dict_pre_hooks",
                  "_load_state_dict_post_hooks"):
        if hasattr(module, hooks):
            getattr(new, hooks).update(getattr(module, hooks))
    if hasattr(module, "_is_full_backward_hook"):
        new._is_full_backward_hook = module._is_full_backward_hook
    new.train(module.training)
    return new


def _replace(model, table):
    memo = {}  # a layer reached twice stays one layer

    def swap(module):
        target = table.get(type(module))
        if target is None:
            for name, child in module._modules.items():
                if child is not None:
                    module._modules[name] = swap(child)
            return module
        if id(module) not in memo:
            memo[id(module)] = _swapped(module, target)
        return memo[id(module)]

    return swap(model)


def convert(model):
    """Replaces, recursively and in place, every module whose type is exactly
    torch.nn.BatchNorm1d/2d/3d, LayerNorm, GroupNorm or InstanceNorm1d/2d/3d by bnorm.torch's
    class of the same name; returns model (a new object when model itself is such a layer).

    The new layers share the old ones' Parameter and buffer objects (no copies): an
    optimizer built on model.parameters() keeps working, the state_dict is unchanged, and
    device, dtype and requires_grad are the tensors' own. Settings, training flag and hooks
    are carried over. Left alone: torch.nn.SyncBatchNorm, the lazy modules and any subclass
    (its forward may differ from the type's).
    """
    return _replace(model, _TO_BNORM)


def revert(model):
    """convert's inverse: every module whose type is exactly one of bnorm.torch's classes
    becomes its torch.nn twin, sharing the same tensors; returns model."""
    return _replace(model, _TO_TORCH)
