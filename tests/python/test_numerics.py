"""Numerical accuracy where naive batch norm fails: |mean| >> std in float32.

For x = offset + N(0, 1) in float32 the data are exact float32 values; the reference
is computed in float64 (with exactly rounded sums) from the very same values, so the
bounds judge bnorm's arithmetic and nothing else.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bnorm  # noqa: E402
from bn_helpers import channels_last, norm_rel_err  # noqa: E402

SHAPE = (32, 16, 14, 14)
EPS = 1e-5


def exact_stats(x):
    """Per-channel mean and biased variance of x's values, with exactly rounded sums."""
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    per_channel = np.moveaxis(x, 1, 0).reshape(c, -1)
    m = per_channel.shape[1]
    mean = np.array([math.fsum(row) / m for row in per_channel])
    var = np.array([math.fsum((row - mu) ** 2) / m for row, mu in zip(per_channel, mean)])
    return mean, var


def reference_forward(x, weight, bias, eps):
    mean, var = exact_stats(x)
    bs = (1, -1) + (1,) * (x.ndim - 2)
    y = ((np.asarray(x, np.float64) - mean.reshape(bs)) / np.sqrt(var.reshape(bs) + eps)
         * weight.astype(np.float64).reshape(bs) + bias.astype(np.float64).reshape(bs))
    return y, mean, var


def _data(rng, offset, layout, dtype=np.float32, shape=SHAPE):
    x = (offset + rng.normal(size=shape)).astype(dtype)
    return channels_last(x) if layout == "cl" else x


def _torch_float32_forward_err(x, y_ref):
    with torch.no_grad():
        y_t = torch.nn.functional.batch_norm(torch.from_numpy(np.ascontiguousarray(x)), None,
                                             None, training=True, eps=EPS).numpy()
    return norm_rel_err(y_t, y_ref)


@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_float32_forward_with_large_offset(offset, layout, rng, record_property):
    x = _data(rng, offset, layout)
    c = SHAPE[1]
    weight = rng.uniform(0.5, 2.0, c).astype(np.float32)
    bias = rng.normal(size=c).astype(np.float32)
    running_mean, running_var = np.zeros(c, np.float32), np.ones(c, np.float32)
    y, save_mean, save_invstd = bnorm.batch_norm_training(
        x, weight, bias, running_mean, running_var, momentum=1.0, eps=EPS)
    y_ref, mean, var = reference_forward(x, weight, bias, EPS)
    m = x.size // c

    err = norm_rel_err(y, y_ref)
    record_property("bnorm_y_rel_err", err)
    record_property("torch_float32_y_rel_err", _torch_float32_forward_err(x, y_ref))
    assert err <= 1e-6, f"forward ||y - y_ref|| / ||y_ref|| = {err:.3e}"
    # The statistics: float32 rounding of the exact values, a few ulps at most.
    assert np.max(np.abs(save_mean - mean) / np.abs(mean)) <= 2.5e-7
    invstd = 1 / np.sqrt(var + EPS)
    assert np.max(np.abs(save_invstd - invstd) / invstd) <= 1e-6
    # momentum=1: the running buffers are exactly this batch's statistics
    assert np.max(np.abs(running_mean - mean) / np.abs(mean)) <= 2.5e-7
    var_unbiased = var * m / (m - 1)
    assert np.max(np.abs(running_var - var_unbiased) / var_unbiased) <= 1e-6


@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_float32_backward_with_large_offset(offset, layout, rng, record_property):
    """dx is accurate although save_mean (float32) is off by up to half an ulp of 1e6
    (0.03, i.e. 3% of the std): bnorm's backward recovers the exact batch mean from x.
    Bound 1e-5: each term of dx = w*invstd/m*(m*dy - sum dy - xhat*sum(dy*xhat)) is
    O(1) with float32 roundings of ~6e-8 and well-conditioned sums over m = 6272; an
    implementation using the rounded save_mean as the mean would be off by ~1e-2."""
    x = _data(rng, offset, layout)
    dy = rng.normal(size=SHAPE).astype(np.float32)
    dy = channels_last(dy) if layout == "cl" else dy
    c = SHAPE[1]
    weight = rng.uniform(0.5, 2.0, c).astype(np.float32)
    bias = rng.normal(size=c).astype(np.float32)
    _, save_mean, save_invstd = bnorm.batch_norm_training(x, weight, bias, eps=EPS)
    dx, dweight, dbias = bnorm.batch_norm_backward(x, dy, save_mean, save_invstd, weight)

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).requires_grad_(True)
    wt = torch.from_numpy(weight.astype(np.float64)).requires_grad_(True)
    bt = torch.from_numpy(bias.astype(np.float64)).requires_grad_(True)
    torch.nn.functional.batch_norm(xt, None, None, wt, bt, training=True, eps=EPS).backward(
        torch.from_numpy(np.ascontiguousarray(dy, dtype=np.float64)))

    err = norm_rel_err(dx, xt.grad.numpy())
    record_property("bnorm_dx_rel_err", err)
    # what torch float32 gets (recorded, not asserted)
    xt32 = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
    torch.nn.functional.batch_norm(xt32, None, None, torch.from_numpy(weight),
                                   torch.from_numpy(bias), training=True, eps=EPS).backward(
        torch.from_numpy(np.ascontiguousarray(dy)))
    record_property("torch_float32_dx_rel_err", norm_rel_err(xt32.grad.numpy(),
                                                             xt.grad.numpy()))
    assert err <= 1e-5, f"backward ||dx - dx_ref|| / ||dx_ref|| = {err:.3e}"
    # dweight = sum(dy * xhat) also needs the exact mean: sum(dy) * 0.03 would swamp it.
    assert norm_rel_err(dweight, wt.grad.numpy()) <= 1e-5
    assert norm_rel_err(dbias, bt.grad.numpy()) <= 1e-6


def test_float32_backward_with_a_shifted_save_mean_is_still_exact(rng):
    """The documented contract: save_mean is only a shift. Give a save_mean that is off by a
    whole std (but keep the true invstd); the gradient must be unaffected."""
    x = _data(rng, 1e6, "cf", shape=(8, 4, 9, 9))
    dy = rng.normal(size=x.shape).astype(np.float32)
    _, save_mean, save_invstd = bnorm.batch_norm_training(x)
    dx1, dw1, db1 = bnorm.batch_norm_backward(x, dy, save_mean, save_invstd)
    shifted = (save_mean.astype(np.float64) + 1.0).astype(np.float32)
    dx2, dw2, db2 = bnorm.batch_norm_backward(x, dy, shifted, save_invstd)
    assert norm_rel_err(dx2, dx1) <= 1e-5
    assert norm_rel_err(dw2, dw1) <= 1e-5
    assert np.array_equal(db1, db2) or norm_rel_err(db2, db1) <= 1e-6


def test_float64_forward_with_large_offset(rng):
    x = _data(rng, 1e8, "cf", dtype=np.float64, shape=(16, 8, 10, 10))
    c = x.shape[1]
    w, b = rng.uniform(0.5, 2, c), rng.normal(size=c)
    y, save_mean, save_invstd = bnorm.batch_norm_training(x, w, b, eps=EPS)
    y_ref, mean, var = reference_forward(x, w, b, EPS)
    # In float64 the mean itself is only known to ~half an ulp of 1e8 (7.5e-9, relative to
    # a std of 1), and x - mean inherits that: allow 8 ulps of the offset (1.2e-7). A naive
    # one-pass variance (E[x^2] - mean^2) loses everything here, and a left-to-right sum of
    # m = 1600 values typically misplaces the mean by ~sqrt(m) * 1e-8 = 4e-7.
    bound = 8 * np.spacing(1e8) / 1.0
    assert norm_rel_err(y, y_ref) <= bound
    assert np.max(np.abs(save_invstd * np.sqrt(var + EPS) - 1)) <= 1e-12
    y_cl, _, _ = bnorm.batch_norm_training(channels_last(x), w, b, eps=EPS)
    assert norm_rel_err(y_cl, y_ref) <= bound


@pytest.mark.parametrize("layout", ["cf", "cl"])
def test_float32_constant_channel(layout):
    """A constant channel has zero variance: y = bias exactly-ish, dx = 0, no NaNs."""
    x = np.full((4, 2, 3, 3), 12345.678, np.float32)
    x[:, 1] = np.arange(36, dtype=np.float32).reshape(4, 3, 3)
    x = channels_last(x) if layout == "cl" else x
    w = np.array([2.0, 1.0], np.float32)
    b = np.array([0.5, -0.5], np.float32)
    y, sm, si = bnorm.batch_norm_training(x, w, b, eps=EPS)
    assert np.all(np.isfinite(y))
    assert np.max(np.abs(y[:, 0] - 0.5)) <= 1e-6
    assert abs(float(si[0]) - 1 / math.sqrt(EPS)) <= 1e-6 * 1 / math.sqrt(EPS)
    dx, dw, db = bnorm.batch_norm_backward(x, np.ones_like(x), sm, si, w)
    assert np.all(np.isfinite(dx))
    assert np.max(np.abs(dx[:, 0])) <= 1e-3


@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6])
@pytest.mark.parametrize("outlier", [100.0, 1000.0])
def test_float32_outlier_as_the_shift_costs_no_digits(offset, outlier, layout, rng):
    """The sums are shifted by each channel's first value; an outlier there makes every
    shifted value large, and sums of their squares accumulated in float would lose the
    variance to cancellation (measured: 1e-5 at 1000 std). In double they do not."""
    x = (offset + rng.normal(size=(64, 16, 32, 32))).astype(np.float32)
    x[0, :, 0, 0] = np.float32(offset + outlier)
    y_ref, _, _ = reference_forward(x, np.ones(16, np.float32), np.zeros(16, np.float32), EPS)
    x = channels_last(x) if layout == "cl" else x
    y = bnorm.batch_norm(x, None, None, None, None, training=True, eps=EPS)
    assert norm_rel_err(y, y_ref) <= 2e-7
