"""Functional API vs torch.nn.functional.batch_norm (float64 torch as the oracle)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bnorm  # noqa: E402
from bn_helpers import (  # noqa: E402
    DTYPES, assert_close, batch_stats64, channels_last, dweight_scale, dx_scale,
    random_shapes, reduce_axes, rtol_for, same_layout, shape_id, torch_forward_backward,
)

SHAPES = random_shapes(40, seed=1234)


def _cases():
    for shape in SHAPES:
        for dtype in DTYPES:
            layouts = ("cf", "cl") if len(shape) >= 3 else ("cf",)
            for layout in layouts:
                yield pytest.param(shape, dtype, layout,
                                   id=f"{shape_id(shape)}-{np.dtype(dtype).name}-{layout}")


CASES = list(_cases())


def _layout(a, layout):
    return channels_last(a) if layout == "cl" else np.ascontiguousarray(a)


def _channel_params(rng, c, dtype):
    weight = rng.uniform(0.5, 2.0, c).astype(dtype) * rng.choice([-1, 1], c).astype(dtype)
    bias = rng.normal(size=c).astype(dtype)
    running_mean = rng.normal(size=c).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    return weight, bias, running_mean, running_var


def _input(rng, shape, dtype, layout):
    c = shape[1]
    # Per-channel offsets and scales so that channels really differ.
    bshape = (1, c) + (1,) * (len(shape) - 2)
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, bshape) + rng.normal(0, 2, bshape)
    return _layout(x.astype(dtype), layout)


@pytest.mark.parametrize("shape,dtype,layout", CASES)
def test_training_forward_backward_and_running_stats(shape, dtype, layout, rng):
    """Three training steps: y, saved stats, running buffers and the backward every step."""
    rtol = rtol_for(dtype)
    c = shape[1]
    axes = reduce_axes(len(shape))
    weight, bias, running_mean, running_var = _channel_params(rng, c, dtype)
    ref_rm, ref_rv = running_mean.astype(np.float64), running_var.astype(np.float64)
    momentum, eps = 0.3, 1e-3
    for step in range(3):
        x = _input(rng, shape, dtype, layout)
        dy = _layout(rng.normal(size=shape).astype(dtype), layout)
        y, save_mean, save_invstd = bnorm.batch_norm_training(
            x, weight, bias, running_mean, running_var, momentum=momentum, eps=eps)
        ref = torch_forward_backward(x, dy, weight, bias, ref_rm, ref_rv, True, momentum, eps)
        ref_rm, ref_rv = ref["running_mean"], ref["running_var"]

        assert y.dtype == dtype and y.shape == x.shape
        assert same_layout(y, x), (y.strides, x.strides)
        assert_close(y, ref["y"], rtol, what=f"y step {step}")
        mean64, var64, _ = batch_stats64(x)
        assert save_mean.dtype == dtype and save_mean.shape == (c,)
        assert_close(save_mean, mean64, rtol, scale=np.sqrt(var64).max(), what="save_mean")
        assert_close(save_invstd, 1 / np.sqrt(var64 + eps), rtol, what="save_invstd")
        assert running_mean.dtype == dtype and running_var.dtype == dtype
        assert_close(running_mean, ref_rm, rtol, what=f"running_mean step {step}")
        assert_close(running_var, ref_rv, rtol, what=f"running_var step {step}")

        dx, dweight, dbias = bnorm.batch_norm_backward(x, dy, save_mean, save_invstd, weight)
        assert dx.dtype == dtype and dx.shape == x.shape and same_layout(dx, x)
        assert_close(dx, ref["dx"], rtol, scale=dx_scale(dy, weight, 1 / np.sqrt(var64 + eps)),
                     what=f"dx step {step}")
        assert_close(dweight, ref["dweight"], rtol, scale=dweight_scale(dy, x, axes),
                     what="dweight")
        assert_close(dbias, ref["dbias"], rtol, scale=np.abs(dy).sum(axis=axes).max(),
                     what="dbias")


@pytest.mark.parametrize("shape,dtype,layout", CASES)
def test_eval_forward_and_backward(shape, dtype, layout, rng):
    """training=False: running statistics, and the gradient with them held fixed."""
    rtol = rtol_for(dtype)
    axes = reduce_axes(len(shape))
    weight, bias, running_mean, running_var = _channel_params(rng, shape[1], dtype)
    x = _input(rng, shape, dtype, layout)
    dy = _layout(rng.normal(size=shape).astype(dtype), layout)
    rm0, rv0 = running_mean.copy(), running_var.copy()
    eps = 1e-5
    y = bnorm.batch_norm(x, running_mean, running_var, weight, bias, training=False, eps=eps)
    ref = torch_forward_backward(x, dy, weight, bias, running_mean, running_var, False, 0.1, eps)
    assert np.array_equal(running_mean, rm0) and np.array_equal(running_var, rv0)
    assert y.dtype == dtype and same_layout(y, x)
    assert_close(y, ref["y"], rtol, what="y")

    dx, dweight, dbias = bnorm.batch_norm_backward_inference(x, dy, running_mean, running_var,
                                                             weight, eps=eps)
    assert dx.dtype == dtype and same_layout(dx, x)
    assert_close(dx, ref["dx"], rtol, what="dx")
    xhat_abs = np.abs((x.astype(np.float64) - running_mean.reshape((1, -1) + (1,) * (x.ndim - 2)))
                      / np.sqrt(running_var.astype(np.float64) + eps).reshape(
                          (1, -1) + (1,) * (x.ndim - 2)))
    assert_close(dweight, ref["dweight"], rtol,
                 scale=(np.abs(dy) * xhat_abs).sum(axis=axes).max(), what="dweight")
    assert_close(dbias, ref["dbias"], rtol, scale=np.abs(dy).sum(axis=axes).max(), what="dbias")


AFFINE_COMBOS = [("w", "b"), (None, None), ("w", None), (None, "b")]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(5, 3), (3, 4, 7), (2, 5, 3, 4), (2, 3, 2, 3, 2)], ids=shape_id)
@pytest.mark.parametrize("affine", AFFINE_COMBOS, ids=lambda a: f"{a[0]}-{a[1]}")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_optional_weight_bias(affine, shape, dtype, training, rng):
    rtol = rtol_for(dtype)
    weight, bias, running_mean, running_var = _channel_params(rng, shape[1], dtype)
    weight = weight if affine[0] else None
    bias = bias if affine[1] else None
    x = rng.normal(size=shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    ref = torch_forward_backward(x, dy, weight, bias, running_mean, running_var, training, 0.1,
                                 1e-5)
    y = bnorm.batch_norm(x, running_mean, running_var, weight, bias, training=training)
    assert_close(y, ref["y"], rtol, what="y")
    if training:
        _, save_mean, save_invstd = bnorm.batch_norm_training(x, weight, bias)
        dx, dw, db = bnorm.batch_norm_backward(x, dy, save_mean, save_invstd, weight)
    else:
        dx, dw, db = bnorm.batch_norm_backward_inference(x, dy, running_mean, running_var, weight)
    scale = dx_scale(dy, weight, 1 / np.sqrt(batch_stats64(x)[1] + 1e-5)) if training else None
    assert_close(dx, ref["dx"], rtol, scale=scale, what="dx")
    # dweight / dbias are the gradients of the (possibly absent) weight and bias.
    axes = reduce_axes(len(shape))
    if weight is not None:
        assert_close(dw, ref["dweight"], rtol, scale=dweight_scale(dy, x, axes) if training
                     else None, what="dweight")
    if bias is not None:
        assert_close(db, ref["dbias"], rtol, scale=np.abs(dy).sum(axis=axes).max(), what="dbias")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_training_without_running_buffers_matches_torch(dtype, rng):
    """running_mean=running_var=None with training=True is allowed (as in torch)."""
    x = rng.normal(size=(4, 3, 5)).astype(dtype)
    y = bnorm.batch_norm(x, None, None, training=True)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(x.astype(np.float64)), None, None,
                                         training=True)
    assert_close(y, ref.numpy(), rtol_for(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_batch_norm_training_flag_uses_batch_stats_and_updates(dtype, rng):
    """batch_norm(training=True) == batch_norm_training's y, with the same buffer update."""
    x = rng.normal(1.0, 2.0, size=(6, 4, 3, 3)).astype(dtype)
    w, b, rm, rv = _channel_params(rng, 4, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    y1 = bnorm.batch_norm(x, rm, rv, w, b, training=True, momentum=0.25, eps=1e-4)
    y2, _, _ = bnorm.batch_norm_training(x, w, b, rm2, rv2, momentum=0.25, eps=1e-4)
    assert np.array_equal(y1, y2)
    assert np.array_equal(rm, rm2) and np.array_equal(rv, rv2)
    ref = torch_forward_backward(x, x, w, b, None, None, True, 0.25, 1e-4)
    assert_close(y1, ref["y"], rtol_for(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_need_flags_return_none_and_same_values(dtype, rng):
    x = rng.normal(size=(5, 3, 4)).astype(dtype)
    dy = rng.normal(size=(5, 3, 4)).astype(dtype)
    w, _, rm, rv = _channel_params(rng, 3, dtype)
    _, sm, si = bnorm.batch_norm_training(x, w)
    for fn, args in ((bnorm.batch_norm_backward, (x, dy, sm, si, w)),
                     (bnorm.batch_norm_backward_inference, (x, dy, rm, rv, w))):
        full = fn(*args)
        assert all(isinstance(a, np.ndarray) for a in full)
        for flags in [(True, False, False), (False, True, False), (False, False, True),
                      (False, True, True), (True, True, False), (False, False, False)]:
            got = fn(*args, need_dx=flags[0], need_dweight=flags[1], need_dbias=flags[2])
            assert len(got) == 3
            for want, g, f in zip(flags, got, full):
                if want:
                    assert np.array_equal(g, f)
                else:
                    assert g is None


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_momentum_zero_and_one(dtype, rng):
    x = rng.normal(3.0, 2.0, size=(7, 2, 5)).astype(dtype)
    rm = np.array([0.5, -1.5], dtype)
    rv = np.array([2.0, 0.25], dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    bnorm.batch_norm(x, rm, rv, training=True, momentum=0.0)
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    bnorm.batch_norm(x, rm, rv, training=True, momentum=1.0)
    mean, _, var_unbiased = batch_stats64(x)
    assert_close(rm, mean, rtol_for(dtype))
    assert_close(rv, var_unbiased, rtol_for(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_biased_running_var_estimator(dtype, rng):
    x = rng.normal(0.0, 1.5, size=(3, 4, 2)).astype(dtype)  # m = 6: biased != unbiased
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    rm_u, rv_u = rm.copy(), rv.copy()
    bnorm.batch_norm(x, rm, rv, training=True, momentum=0.5, running_var_estimator="biased")
    bnorm.batch_norm(x, rm_u, rv_u, training=True, momentum=0.5)
    mean, var_b, var_u = batch_stats64(x)
    assert_close(rm, 0.5 * mean, rtol_for(dtype))
    assert_close(rv, 0.5 + 0.5 * var_b, rtol_for(dtype))
    assert_close(rv_u, 0.5 + 0.5 * var_u, rtol_for(dtype))
    assert np.array_equal(rm, rm_u)


def test_array_likes_are_accepted(rng):
    """x and per-channel inputs may be anything np.asarray takes (e.g. nested lists)."""
    x = rng.normal(size=(4, 2, 3))
    w = [1.5, -0.5]
    y = bnorm.batch_norm(x.tolist(), np.zeros(2), np.ones(2), w, [0.0, 1.0], training=False)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(x), torch.zeros(2, dtype=torch.float64),
                                         torch.ones(2, dtype=torch.float64),
                                         torch.tensor(w, dtype=torch.float64),
                                         torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert_close(y, ref.numpy(), 1e-10)


def test_default_arguments_match_torch(rng):
    """Defaults: momentum 0.1, eps 1e-5, training False (like F.batch_norm)."""
    x = rng.normal(size=(3, 2, 4))
    rm, rv = np.array([0.1, 0.2]), np.array([1e-4, 2e-5])  # small var: eps matters
    y = bnorm.batch_norm(x, rm, rv)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(x), torch.from_numpy(rm.copy()),
                                         torch.from_numpy(rv.copy()))
    assert_close(y, ref.numpy(), 1e-10)
    rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    bnorm.batch_norm(x, rm, rv, training=True)
    torch.nn.functional.batch_norm(torch.from_numpy(x), rm_t, rv_t, training=True)
    assert_close(rm, rm_t.numpy(), 1e-10)
    assert_close(rv, rv_t.numpy(), 1e-10)
    y, _, si = bnorm.batch_norm_training(x)
    assert_close(si, 1 / np.sqrt(batch_stats64(x)[1] + 1e-5), 1e-10)
