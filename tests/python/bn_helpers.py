"""Helpers shared by the bnorm tests: shapes, layouts, float64 torch oracles, comparisons."""
import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None
    F = None

DTYPES = (np.float32, np.float64)
# Relative tolerance per dtype, judged against a float64 oracle.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
SMALL_SIZES = (1, 2, 3, 5, 7, 16, 17)


def rtol_for(dtype):
    return RTOL[np.dtype(dtype)]


def random_shapes(count=40, seed=1234, max_elems=12000):
    """`count` distinct shapes of rank 2..5 with small odd sizes and N*spatial > 1."""
    rng = np.random.default_rng(seed)
    shapes, seen = [], set()
    # Make sure every rank is present, then draw freely.
    ranks = [2, 3, 4, 5] + [int(r) for r in rng.integers(2, 6, size=10 * count)]
    for rank in ranks:
        if len(shapes) == count:
            break
        for _ in range(100):
            shape = tuple(int(s) for s in rng.choice(SMALL_SIZES, size=rank))
            m = shape[0] * int(np.prod(shape[2:], dtype=np.int64))
            if m > 1 and int(np.prod(shape)) <= max_elems and shape not in seen:
                seen.add(shape)
                shapes.append(shape)
                break
    assert len(shapes) == count
    return shapes


def shape_id(shape):
    return "x".join(str(s) for s in shape)


def reduce_axes(ndim):
    return (0,) + tuple(range(2, ndim))


def channels_last(a):
    """The same (N, C, *spatial) values with memory in (N, *spatial, C) order."""
    if a.ndim < 3:
        return a
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)


def is_channels_last(a):
    """True when a's memory is (N, *spatial, C) contiguous (and not trivially both)."""
    return np.moveaxis(a, 1, -1).flags["C_CONTIGUOUS"]


def same_layout(out, ref):
    """out's strides are ordered like ref's (checked as: the same transposition is C-contiguous)."""
    if ref.flags["C_CONTIGUOUS"]:
        return out.flags["C_CONTIGUOUS"]
    return is_channels_last(out) == is_channels_last(ref)


def max_rel_err(got, ref, scale=None):
    """max |got - ref| / max(max |ref|, scale)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    denom = float(np.max(np.abs(ref))) if ref.size else 0.0
    if scale is not None:
        denom = max(denom, float(scale))
    denom = max(denom, np.finfo(np.float64).tiny)
    return float(np.max(np.abs(got - ref))) / denom if ref.size else 0.0


def assert_close(got, ref, rtol, scale=None, what=""):
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = max_rel_err(got, ref, scale)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.1e}"


def norm_rel_err(got, ref):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm((got - ref).ravel()) / np.linalg.norm(ref.ravel()))


def t64(a):
    """float64 torch tensor (a copy) of a numpy array, or None."""
    if a is None:
        return None
    return torch.from_numpy(np.array(a, dtype=np.float64, order="C"))


def torch_forward_backward(x, dy, weight, bias, running_mean, running_var, training,
                           momentum, eps):
    """float64 torch: y, dx, dweight, dbias and the updated running buffers (numpy)."""
    xt = t64(x).requires_grad_(True)
    wt = t64(weight)
    bt = t64(bias)
    if wt is not None:
        wt.requires_grad_(True)
    if bt is not None:
        bt.requires_grad_(True)
    rm, rv = t64(running_mean), t64(running_var)
    y = F.batch_norm(xt, rm, rv, wt, bt, training=training, momentum=momentum, eps=eps)
    y.backward(t64(dy))
    return dict(
        y=y.detach().numpy(),
        dx=xt.grad.numpy(),
        dweight=None if wt is None else wt.grad.numpy(),
        dbias=None if bt is None else bt.grad.numpy(),
        running_mean=None if rm is None else rm.numpy(),
        running_var=None if rv is None else rv.numpy(),
    )


def dx_scale(dy, weight, invstd):
    """Natural magnitude of dx: max |dy| * max |weight| * max invstd (dx may cancel to ~0)."""
    w = 1.0 if weight is None else float(np.max(np.abs(weight)))
    return float(np.max(np.abs(dy))) * w * float(np.max(invstd))


def dweight_scale(dy, x, axes):
    """Natural magnitude of dweight = sum(dy * xhat): max over channels of sum |dy| * max |xhat|."""
    x = np.asarray(x, np.float64)
    xhat = (x - x.mean(axis=axes, keepdims=True)) / x.std(axis=axes, keepdims=True).clip(1e-300)
    return float(np.max(np.sum(np.abs(np.asarray(dy, np.float64) * xhat), axis=axes)))


def batch_stats64(x):
    """float64 batch mean, biased and unbiased variance per channel."""
    x = np.asarray(x, np.float64)
    axes = reduce_axes(x.ndim)
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    return mean, var, var * m / (m - 1)
