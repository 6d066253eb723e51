"""Helpers for the family's tests (layer, RMS, group, instance norm): shapes with odd
sizes, inputs, float64 oracles (torch 1.13 for layer/group/instance, a float64 formula for
RMS norm, which torch 1.13 lacks) and the natural scales that errors are judged against."""
import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None
    F = None

ODD_SIZES = (1, 2, 3, 15, 16, 17, 33)


def family_shapes(count, seed, min_rank=2, max_rank=5, max_elems=20000, keep=None):
    """`count` distinct shapes of rank min_rank..max_rank (every rank present) with sizes
    from ODD_SIZES, at most max_elems values, and keep(shape) true."""
    rng = np.random.default_rng(seed)
    shapes, seen = [], set()
    ranks = list(range(min_rank, max_rank + 1))
    ranks += [int(r) for r in rng.integers(min_rank, max_rank + 1, size=20 * count)]
    for rank in ranks:
        if len(shapes) == count:
            break
        for _ in range(200):
            shape = tuple(int(s) for s in rng.choice(ODD_SIZES, size=rank))
            if (int(np.prod(shape)) <= max_elems and shape not in seen
                    and (keep is None or keep(shape))):
                seen.add(shape)
                shapes.append(shape)
                break
    assert len(shapes) == count
    return shapes


def spatial(shape):
    return int(np.prod(shape[2:], dtype=np.int64))


def group_choices(c):
    """1, C and a divisor in between where C has one."""
    middle = [g for g in range(2, c) if c % g == 0]
    return sorted({1, c} | ({middle[len(middle) // 2]} if middle else set()))


def channels_last(a):
    """The same (N, C, *spatial) values with memory in (N, *spatial, C) order."""
    if a.ndim < 3:
        return np.ascontiguousarray(a)
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)


def in_layout(a, layout):
    return channels_last(a) if layout == "cl" else np.ascontiguousarray(a)


def is_channels_last(a):
    return a.ndim >= 3 and np.moveaxis(a, 1, -1).flags["C_CONTIGUOUS"]


def random_input(rng, shape, dtype, offset=2.0):
    """Values with per-position offsets and scales (rows and channels really differ)."""
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, shape[-1:]) + rng.normal(0, offset,
                                                                             shape[-1:])
    if len(shape) >= 2:
        bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
        x = x * rng.uniform(0.5, 2.0, bshape) + rng.normal(0, offset, bshape)
    return x.astype(dtype)


def params(rng, shape, dtype):
    w = (rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)).astype(dtype)
    return w, rng.normal(size=shape).astype(dtype)


def t64(a, grad=False):
    if a is None:
        return None
    t = torch.from_numpy(np.array(a, dtype=np.float64, order="C"))
    return t.requires_grad_(True) if grad else t


def _grads(out, dy, x, w, b):
    out.backward(t64(dy))
    g = lambda t: None if t is None else t.grad.numpy().copy()  # noqa: E731
    return dict(y=out.detach().numpy().copy(), dx=g(x), dweight=g(w), dbias=g(b))


def torch_layer_norm(x, dy, normalized_shape, w, b, eps):
    xt, wt, bt = t64(x, True), t64(w, w is not None), t64(b, b is not None)
    return _grads(F.layer_norm(xt, tuple(normalized_shape), wt, bt, eps), dy, xt, wt, bt)


def torch_group_norm(x, dy, groups, w, b, eps):
    xt, wt, bt = t64(x, True), t64(w, w is not None), t64(b, b is not None)
    if w is None and b is not None:
        # torch 1.13's group norm backward with weight None and a bias raises "tensor does
        # not have a device": weight None is weight 1
        out = F.group_norm(xt, groups, torch.ones(x.shape[1], dtype=torch.float64), bt, eps)
        return _grads(out, dy, xt, None, bt)
    return _grads(F.group_norm(xt, groups, wt, bt, eps), dy, xt, wt, bt)


def torch_instance_norm(x, dy, w, b, rm, rv, use_input_stats, momentum, eps):
    """Also returns the running buffers torch updated (float64 copies)."""
    xt, wt, bt = t64(x, True), t64(w, w is not None), t64(b, b is not None)
    rmt, rvt = t64(rm), t64(rv)
    out = _grads(F.instance_norm(xt, rmt, rvt, wt, bt, use_input_stats, momentum, eps), dy,
                 xt, wt, bt)
    out.update(running_mean=None if rmt is None else rmt.numpy(),
               running_var=None if rvt is None else rvt.numpy())
    return out


def rms_eps(dtype, eps):
    return float(np.finfo(dtype).eps) if eps is None else eps


def numpy_rms_norm(x, k, w, eps):
    """float64 y = x / sqrt(mean(x^2 over the last k dims) + eps) * w, and rstd."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - k, x.ndim))
    rstd = 1 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)
    y = x * rstd * (1.0 if w is None else np.asarray(w, np.float64))
    return y, rstd.reshape(x.shape[:x.ndim - k])


def formula_rms_norm_grads(x, dy, k, w, eps):
    """dx, dweight of the float64 RMS formula, by autograd of its plain expression."""
    xt, wt = t64(x, True), t64(w, w is not None)
    dims = tuple(range(x.ndim - k, x.ndim))
    y = xt * torch.rsqrt((xt * xt).mean(dim=dims, keepdim=True) + eps)
    if wt is not None:
        y = y * wt
    return _grads(y, dy, xt, wt, None)


def rel(got, ref, scale=None):
    """max |got - ref| / max(max |ref|, scale)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    denom = max(float(np.max(np.abs(ref))) if ref.size else 0.0, scale or 0.0, 1e-300)
    return float(np.max(np.abs(got - ref))) / denom if ref.size else 0.0


def close(got, ref, rtol, scale=None, what=""):
    assert got is not None, f"{what}: missing"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = rel(got, ref, scale)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.1e}"


def norm_rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm((got - ref).ravel()) / np.linalg.norm(ref.ravel()))


def grad_scales(x, dy, w, reduce_axes, set_axes, eps):
    """Natural magnitudes of dx (max |dy| * max |w| * max rstd) and of the per-parameter sums
    (sum over reduce_axes of |dy * xhat|, and of |dy|), with xhat from float64 statistics
    over set_axes (one set per index of the other axes)."""
    x64 = np.asarray(x, np.float64)
    dy64 = np.abs(np.asarray(dy, np.float64))
    mean = x64.mean(axis=set_axes, keepdims=True)
    std = x64.std(axis=set_axes, keepdims=True)
    xhat = np.abs(x64 - mean) / np.maximum(std, 1e-300)
    wmax = 1.0 if w is None else float(np.max(np.abs(w)))
    dx = float(dy64.max()) * wmax / float(np.sqrt(std.min() ** 2 + eps))
    dbias = float(np.max(np.sum(dy64, axis=reduce_axes)))
    # a one-value set has xhat = 0: sum |dy| then stands in for the sum's natural size
    dweight = max(float(np.max(np.sum(dy64 * xhat, axis=reduce_axes))), dbias)
    return dict(dx=dx, dweight=dweight, dbias=dbias)
