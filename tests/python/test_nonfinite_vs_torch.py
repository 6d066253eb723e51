"""NaN, +-Inf and eps = 0 against torch (docs/batch_norm.md, "NaN, Inf and eps = 0").

Where a non-finite value lands must match torch exactly (same NaN positions, same signed
infinities); the finite values match a float64 torch run. Both layouts (channels-last
through numpy transposes here and torch.channels_last there), float32 and float64.
Also: overlapping running buffers reach Python as a ValueError naming both.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import bnorm  # noqa: E402
from bn_helpers import DTYPES, channels_last, reduce_axes  # noqa: E402

NAN, INF = float("nan"), float("inf")
SHAPES = [(4, 3, 5, 6), (3, 4, 50), (9, 3)]
# Values written into channel 1: (position in the channel's flattened (N, *spatial), value).
POISONS = {
    "nan_first": [(0, NAN)],
    "nan_last": [(-1, NAN)],
    "inf_first": [(0, INF)],
    "inf_middle": [(7, INF)],
    "neg_inf_last": [(-1, -INF)],
    "inf_and_neg_inf": [(0, INF), (-1, -INF)],
}
TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}


def _layout(a, layout):
    return channels_last(a) if layout == "cl" else np.ascontiguousarray(a)


def _torch(a, requires_grad=False, like=None):
    """float64 torch tensor of a; channels_last memory when `like` is a channels-last 4-D array."""
    t = torch.from_numpy(np.array(a, dtype=np.float64, order="C"))
    if like is not None and like.ndim == 4 and not like.flags["C_CONTIGUOUS"]:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(requires_grad)


def _poison(x, channel, values):
    """x with channel's k-th values (in (N, *spatial) order) set."""
    x = x.copy()
    view = np.moveaxis(x, 1, 0)[channel]  # (N, *spatial), a view into x
    flat_index = np.unravel_index
    for k, v in values:
        k = k % view.size
        view[flat_index(k, view.shape)] = v
    return x


def assert_same(got, ref, dtype, what):
    """Same NaN and same signed-Inf positions; finite values within TOL of max(1, |ref|)."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, what
    for name, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        diff = np.argwhere(test(got) != test(ref))
        assert diff.size == 0, f"{what}: {name} differs at {diff[:5].tolist()}: got {got[tuple(diff[0])]}, torch {ref[tuple(diff[0])]}"
    finite = np.isfinite(ref)
    if finite.any():
        scale = max(1.0, float(np.abs(ref[finite]).max()))
        err = float(np.abs(got[finite] - ref[finite]).max()) / scale
        assert err <= TOL[np.dtype(dtype)], f"{what}: relative error {err:.2e}"


def _params(rng, c, dtype):
    weight = (rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)).astype(dtype)
    bias = rng.normal(size=c).astype(dtype)
    running_mean = rng.normal(size=c).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    return weight, bias, running_mean, running_var


def _training_vs_torch(x, dy, weight, bias, rm, rv, eps, dtype, relu=False):
    """bnorm's training forward + backward (optionally fused with relu) against float64 torch."""
    rm_t, rv_t = _torch(rm), _torch(rv)
    xt = _torch(x, True, like=x)
    wt, bt = _torch(weight, True), _torch(bias, True)
    yt, save_mean_t, save_invstd_t = torch.native_batch_norm(xt, wt, bt, rm_t, rv_t, True, 0.1, eps)
    if relu:
        yt = torch.relu(yt)
    yt.backward(_torch(dy, like=x))

    if relu:
        y, save_mean, save_invstd, mask = bnorm.batch_norm_relu_training(
            x, weight, bias, rm, rv, momentum=0.1, eps=eps, return_mask=True)
        dx, dweight, dbias = bnorm.batch_norm_relu_backward(x, dy, save_mean, save_invstd, weight,
                                                            relu_mask=mask)
    else:
        y, save_mean, save_invstd = bnorm.batch_norm_training(x, weight, bias, rm, rv,
                                                              momentum=0.1, eps=eps)
        dx, dweight, dbias = bnorm.batch_norm_backward(x, dy, save_mean, save_invstd, weight)
    for what, got, ref in (("y", y, yt), ("save_mean", save_mean, save_mean_t),
                           ("save_invstd", save_invstd, save_invstd_t),
                           ("running_mean", rm, rm_t), ("running_var", rv, rv_t),
                           ("dx", dx, xt.grad), ("dweight", dweight, wt.grad),
                           ("dbias", dbias, bt.grad)):
        assert_same(got, ref.detach().numpy(), dtype, what)
    return save_invstd


@pytest.mark.parametrize("poison", sorted(POISONS))
@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn_relu"])
def test_training_nonfinite_x(shape, dtype, layout, poison, relu, rng):
    weight, bias, rm, rv = _params(rng, shape[1], dtype)
    x = _layout(_poison(rng.normal(size=shape).astype(dtype), 1, POISONS[poison]), layout)
    dy = _layout(rng.normal(size=shape).astype(dtype), layout)
    _training_vs_torch(x, dy, weight, bias, rm, rv, 1e-5, dtype, relu)
    # The rule, spelled out: channel 1's statistics are not finite, the others are.
    assert np.isnan(rv[1]) and np.isfinite(np.delete(rv, 1)).all()


@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn_relu"])
def test_training_nan_dy(shape, dtype, layout, relu, rng):
    weight, bias, rm, rv = _params(rng, shape[1], dtype)
    x = _layout(rng.normal(size=shape).astype(dtype), layout)
    dy = _layout(_poison(rng.normal(size=shape).astype(dtype), 1, [(3, NAN)]), layout)
    _training_vs_torch(x, dy, weight, bias, rm, rv, 1e-5, dtype, relu)


def _inference_vs_torch(x, dy, weight, bias, rm, rv, dtype, relu=False):
    xt = _torch(x, True, like=x)
    wt, bt = _torch(weight, True), _torch(bias, True)
    yt = F.batch_norm(xt, _torch(rm), _torch(rv), wt, bt, training=False, eps=1e-5)
    if relu:
        yt = torch.relu(yt)
    yt.backward(_torch(dy, like=x))
    if relu:
        y = bnorm.batch_norm_relu(x, rm, rv, weight, bias, training=False)
        dx, dweight, dbias = bnorm.batch_norm_relu_backward_inference(x, dy, rm, rv, weight, y=y)
    else:
        y = bnorm.batch_norm(x, rm, rv, weight, bias, training=False)
        dx, dweight, dbias = bnorm.batch_norm_backward_inference(x, dy, rm, rv, weight)
    for what, got, ref in (("y", y, yt), ("dx", dx, xt.grad), ("dweight", dweight, wt.grad),
                           ("dbias", dbias, bt.grad)):
        assert_same(got, ref.detach().numpy(), dtype, what)
    return y


@pytest.mark.parametrize("where", ["x_nan", "x_inf", "dy_nan", "running_mean", "running_var",
                                   "weight", "bias"])
@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn_relu"])
def test_inference_nonfinite(shape, dtype, layout, where, relu, rng):
    weight, bias, rm, rv = _params(rng, shape[1], dtype)
    x = rng.normal(size=shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    if where == "x_nan":
        x = _poison(x, 1, [(5, NAN)])
    elif where == "x_inf":
        x = _poison(x, 1, [(5, INF)])
    elif where == "dy_nan":
        dy = _poison(dy, 1, [(5, NAN)])
    else:
        {"running_mean": rm, "running_var": rv, "weight": weight, "bias": bias}[where][1] = NAN
    x, dy = _layout(x, layout), _layout(dy, layout)
    y = _inference_vs_torch(x, dy, weight, bias, rm, rv, dtype, relu)
    if where == "x_nan":  # the rule, spelled out: only that position
        assert np.isnan(y).sum() == 1


@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn_relu"])
def test_eps_zero_constant_channel(shape, dtype, layout, relu, rng):
    """eps = 0, channel 1 constant: invstd 0, y = bias, dx = 0 (ATen's InvStd)."""
    weight, bias, rm, rv = _params(rng, shape[1], dtype)
    x = rng.normal(size=shape).astype(dtype)
    np.moveaxis(x, 1, 0)[1] = 5.0
    x = _layout(x, layout)
    dy = _layout(rng.normal(size=shape).astype(dtype), layout)
    save_invstd = _training_vs_torch(x, dy, weight, bias, rm, rv, 0.0, dtype, relu)
    assert save_invstd[1] == 0
    y = bnorm.batch_norm(x, rm.copy(), rv.copy(), weight, bias, training=True, eps=0.0)
    assert (np.moveaxis(y, 1, 0)[1] == bias[1]).all()
    # torch in this very dtype says the same.
    xt = torch.from_numpy(np.ascontiguousarray(x))
    _, _, invstd_t = torch.native_batch_norm(xt, None, None, None, None, True, 0.1, 0.0)
    assert invstd_t[1].item() == 0


def test_nan_does_not_hide_behind_a_finite_running_var():
    """The issue's reproduction: one NaN in channel 1."""
    x = np.random.default_rng(0).normal(size=(4, 3, 5)).astype(np.float32)
    x[0, 1, 0] = np.nan
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    bnorm.batch_norm(x, rm, rv, training=True)
    assert np.isnan(rm[1]) and np.isnan(rv[1])
    assert np.isfinite(rm[[0, 2]]).all() and np.isfinite(rv[[0, 2]]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_overlapping_running_buffers_raise_value_error(dtype):
    """bnorm::Error(BNORM_ERROR_OVERLAP) reaches Python as ValueError, nothing written."""
    x = np.random.default_rng(1).normal(size=(4, 3, 5)).astype(dtype)
    buffer = np.arange(4, dtype=dtype)
    running_mean, running_var = buffer[0:3], buffer[1:4]
    with pytest.raises(ValueError, match=r"running_var overlaps running_mean \(an output must "
                                         r"share no memory with another argument"):
        bnorm.batch_norm(x, running_mean, running_var, training=True)
    assert np.array_equal(buffer, np.arange(4, dtype=dtype))
    with pytest.raises(ValueError, match=r"running_var overlaps running_mean"):
        bnorm.batch_norm_training(x, None, None, buffer[0:3], buffer[0:3])
    assert np.array_equal(buffer, np.arange(4, dtype=dtype))
