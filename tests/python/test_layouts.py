"""Memory layouts: channels-last runs in place of channels-first and keeps its layout;
any other strides are copied; results match torch and the channels-first results."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bnorm  # noqa: E402
from bn_helpers import (  # noqa: E402
    DTYPES, assert_close, batch_stats64, channels_last, dweight_scale, dx_scale,
    is_channels_last, reduce_axes, rtol_for, shape_id, torch_forward_backward,
)

CL_SHAPES = [(4, 3, 7), (2, 5, 3, 4), (3, 16, 5, 7), (2, 3, 2, 3, 5), (1, 4, 3, 5), (5, 3, 1, 1),
             (2, 1, 3, 3), (3, 17, 2), (1, 2, 1, 3)]


def _params(rng, c, dtype):
    return (rng.uniform(0.5, 2.0, c).astype(dtype), rng.normal(size=c).astype(dtype),
            rng.normal(size=c).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype))


def _assert_cl(a, shape):
    assert a.shape == shape
    assert np.moveaxis(a, 1, -1).flags["C_CONTIGUOUS"], a.strides


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", CL_SHAPES, ids=shape_id)
def test_channels_last_all_entry_points(shape, dtype, rng):
    rtol = rtol_for(dtype)
    w, b, rm, rv = _params(rng, shape[1], dtype)
    x_cf = rng.normal(1.0, 2.0, size=shape).astype(dtype)
    dy_cf = rng.normal(size=shape).astype(dtype)
    x, dy = channels_last(x_cf), channels_last(dy_cf)
    assert is_channels_last(x) and np.array_equal(x, x_cf)
    x_copy = x.copy()

    # training forward, both layouts, + running buffers
    rm_cl, rv_cl, rm_cf, rv_cf = rm.copy(), rv.copy(), rm.copy(), rv.copy()
    y, sm, si = bnorm.batch_norm_training(x, w, b, rm_cl, rv_cl)
    y_cf, sm_cf, si_cf = bnorm.batch_norm_training(x_cf, w, b, rm_cf, rv_cf)
    _assert_cl(y, shape)
    assert y_cf.flags["C_CONTIGUOUS"]
    ref = torch_forward_backward(x_cf, dy_cf, w, b, rm, rv, True, 0.1, 1e-5)
    assert_close(y, ref["y"], rtol, what="y")
    assert_close(y, y_cf, rtol, what="y cl vs cf")
    assert_close(sm, sm_cf, rtol, scale=np.sqrt(batch_stats64(x_cf)[1]).max())
    assert_close(si, si_cf, rtol)
    assert_close(rm_cl, ref["running_mean"], rtol)
    assert_close(rv_cl, ref["running_var"], rtol)

    # training backward
    dx, dw, db = bnorm.batch_norm_backward(x, dy, sm, si, w)
    _assert_cl(dx, shape)
    assert_close(dx, ref["dx"], rtol, scale=dx_scale(dy, w, si.astype(np.float64)), what="dx")
    dx_cf, dw_cf, db_cf = bnorm.batch_norm_backward(x_cf, dy_cf, sm_cf, si_cf, w)
    assert_close(dx, dx_cf, rtol, scale=dx_scale(dy, w, si.astype(np.float64)))
    axes = reduce_axes(len(shape))
    assert_close(dw, dw_cf, rtol, scale=dweight_scale(dy_cf, x_cf, axes))
    assert_close(db, db_cf, rtol, scale=np.abs(dy_cf).sum(axis=axes).max())

    # inference forward / backward
    y = bnorm.batch_norm(x, rm, rv, w, b)
    _assert_cl(y, shape)
    ref = torch_forward_backward(x_cf, dy_cf, w, b, rm, rv, False, 0.1, 1e-5)
    assert_close(y, ref["y"], rtol, what="eval y")
    dx, _, _ = bnorm.batch_norm_backward_inference(x, dy, rm, rv, w)
    _assert_cl(dx, shape)
    assert_close(dx, ref["dx"], rtol, what="eval dx")

    assert np.array_equal(x, x_copy) and is_channels_last(x)  # input untouched


@pytest.mark.parametrize("which", ["x_cl_dy_cf", "x_cf_dy_cl", "dy_strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_mixed_layouts_in_backward(which, dtype, rng):
    """dx follows x's layout whatever dy's layout; values are unaffected."""
    rtol = rtol_for(dtype)
    shape = (3, 5, 4, 6)
    x_cf = rng.normal(size=shape).astype(dtype)
    dy_cf = rng.normal(size=shape).astype(dtype)
    w, _, rm, rv = _params(rng, 5, dtype)
    x = channels_last(x_cf) if which == "x_cl_dy_cf" else x_cf
    if which == "x_cf_dy_cl":
        dy = channels_last(dy_cf)
    elif which == "dy_strided":
        dy = np.zeros((3, 5, 4, 12), dtype)[..., ::2]
        dy[...] = dy_cf
    else:
        dy = dy_cf
    _, sm, si = bnorm.batch_norm_training(x, w)
    dx, dw, db = bnorm.batch_norm_backward(x, dy, sm, si, w)
    ref = torch_forward_backward(x_cf, dy_cf, w, None, None, None, True, 0.1, 1e-5)
    assert is_channels_last(dx) == is_channels_last(x)
    if not is_channels_last(x):
        assert dx.flags["C_CONTIGUOUS"]
    assert_close(dx, ref["dx"], rtol, scale=dx_scale(dy_cf, w, si.astype(np.float64)))
    dx_i, _, _ = bnorm.batch_norm_backward_inference(x, dy, rm, rv, w)
    assert is_channels_last(dx_i) == is_channels_last(x)
    ref_i = torch_forward_backward(x_cf, dy_cf, w, None, rm, rv, False, 0.1, 1e-5)
    assert_close(dx_i, ref_i["dx"], rtol)


def _strided_variants(x_cf):
    """Views of x_cf's values whose memory is neither channels-first nor channels-last."""
    out = {}
    big = np.zeros(x_cf.shape[:-1] + (2 * x_cf.shape[-1],), x_cf.dtype)
    big[..., ::2] = x_cf
    out["step2"] = big[..., ::2]
    rev = np.ascontiguousarray(x_cf[:, ::-1])
    out["neg_channel_stride"] = rev[:, ::-1]
    rev_n = np.ascontiguousarray(x_cf[::-1])
    out["neg_batch_stride"] = rev_n[::-1]
    out["fortran"] = np.asfortranarray(x_cf)
    if x_cf.ndim >= 4:  # (N, C, W, H) memory viewed as (N, C, H, W)
        sw = np.ascontiguousarray(np.swapaxes(x_cf, 2, 3))
        out["swapped_spatial"] = np.swapaxes(sw, 2, 3)
        # (C, N, H, W) memory: channel-major
        cn = np.ascontiguousarray(np.swapaxes(x_cf, 0, 1))
        out["channel_major"] = np.swapaxes(cn, 0, 1)
    return out


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 4, 5, 6), (2, 3, 4, 3, 2)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_other_strides_are_copied_and_correct(shape, dtype, rng):
    rtol = rtol_for(dtype)
    x_cf = rng.normal(0.5, 2.0, size=shape).astype(dtype)
    dy_cf = rng.normal(size=shape).astype(dtype)
    w, b, rm, rv = _params(rng, shape[1], dtype)
    y_ref, sm_ref, si_ref = bnorm.batch_norm_training(x_cf, w, b)
    dx_ref = bnorm.batch_norm_backward(x_cf, dy_cf, sm_ref, si_ref, w)[0]
    yi_ref = bnorm.batch_norm(x_cf, rm, rv, w, b)
    torch_ref = torch_forward_backward(x_cf, dy_cf, w, b, None, None, True, 0.1, 1e-5)
    assert_close(y_ref, torch_ref["y"], rtol)
    for name, x in _strided_variants(x_cf).items():
        assert np.array_equal(x, x_cf), name
        snapshot = x.copy()
        y, sm, si = bnorm.batch_norm_training(x, w, b)
        assert y.shape == shape
        if not is_channels_last(x):
            # a copy in channels-first order was normalized: the output is C-contiguous
            # and, being the same computation, bitwise equal to the C-contiguous result
            assert y.flags["C_CONTIGUOUS"], (name, y.strides)
            assert np.array_equal(y, y_ref), name
            assert np.array_equal(sm, sm_ref) and np.array_equal(si, si_ref), name
        else:
            assert_close(y, y_ref, rtol, what=name)
        dx = bnorm.batch_norm_backward(x, dy_cf, sm, si, w)[0]
        assert_close(dx, dx_ref, rtol, scale=dx_scale(dy_cf, w, si.astype(np.float64)), what=name)
        assert_close(bnorm.batch_norm(x, rm, rv, w, b), yi_ref, rtol, what=name)
        assert np.array_equal(x, snapshot), name


@pytest.mark.parametrize("cls,shape", [(bnorm.BatchNorm1d, (5, 4, 7)),
                                       (bnorm.BatchNorm2d, (3, 4, 5, 6)),
                                       (bnorm.BatchNorm3d, (2, 4, 3, 2, 5))],
                         ids=["1d", "2d", "3d"])
def test_module_channels_last(cls, shape, rng):
    bn_cl, bn_cf = cls(shape[1]), cls(shape[1])
    tcls = {bnorm.BatchNorm1d: torch.nn.BatchNorm1d, bnorm.BatchNorm2d: torch.nn.BatchNorm2d,
            bnorm.BatchNorm3d: torch.nn.BatchNorm3d}[cls]
    tm = tcls(shape[1]).double()
    for step in range(3):
        x_cf = rng.normal(step, 2.0, size=shape).astype(np.float32)
        dy_cf = rng.normal(size=shape).astype(np.float32)
        x, dy = channels_last(x_cf), channels_last(dy_cf)
        y = bn_cl(x)
        _assert_cl(y, shape)
        dx = bn_cl.backward(dy)
        _assert_cl(dx, shape)
        y_cf = bn_cf(x_cf)
        dx_cf = bn_cf.backward(dy_cf)
        xt = torch.from_numpy(x_cf.astype(np.float64)).requires_grad_(True)
        yt = tm(xt)
        yt.backward(torch.from_numpy(dy_cf.astype(np.float64)))
        assert_close(y, yt.detach().numpy(), 1e-5)
        assert_close(y, y_cf, 1e-5)
        si = 1 / np.sqrt(batch_stats64(x_cf)[1] + 1e-5)
        assert_close(dx, xt.grad.numpy(), 1e-5, scale=dx_scale(dy_cf, None, si))
        assert_close(dx, dx_cf, 1e-5, scale=dx_scale(dy_cf, None, si))
        assert_close(bn_cl.running_mean, tm.running_mean.numpy(), 1e-5)
        assert_close(bn_cl.running_var, tm.running_var.numpy(), 1e-5)
    bn_cl.eval()
    x = channels_last(rng.normal(size=shape).astype(np.float32))
    y = bn_cl(x)
    _assert_cl(y, shape)
    _assert_cl(bn_cl.backward(x), shape)


def test_channels_last_rank2_fortran_is_fine(rng):
    """Rank 2 has no channels-last form: a Fortran-ordered (N, C) array is copied."""
    x = np.asfortranarray(rng.normal(size=(7, 3)))
    y = bnorm.batch_norm(x, None, None, training=True)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(np.ascontiguousarray(x)), None, None,
                                         training=True)
    assert_close(y, ref.numpy(), 1e-10)


@pytest.mark.parametrize("shape", [(2, 4099, 3, 3), (1, 20000, 1, 2), (3, 1031, 7)], ids=shape_id)
def test_wide_channels_last(shape, rng):
    """Many channels with few values each, channels-last (per-channel scratch is large)."""
    c = shape[1]
    w, b, rm, rv = _params(rng, c, np.float32)
    x_cf = rng.normal(2.0, 1.5, size=shape).astype(np.float32)
    dy_cf = rng.normal(size=shape).astype(np.float32)
    x, dy = channels_last(x_cf), channels_last(dy_cf)
    ref = torch_forward_backward(x_cf, dy_cf, w, b, rm, rv, True, 0.1, 1e-5)
    y, sm, si = bnorm.batch_norm_training(x, w, b, rm, rv)
    _assert_cl(y, shape)
    assert_close(y, ref["y"], 1e-5, what="y")
    assert_close(rm, ref["running_mean"], 1e-5)
    assert_close(rv, ref["running_var"], 1e-5)
    dx, dw, db = bnorm.batch_norm_backward(x, dy, sm, si, w)
    _assert_cl(dx, shape)
    axes = reduce_axes(len(shape))
    assert_close(dx, ref["dx"], 1e-5, scale=dx_scale(dy_cf, w, si.astype(np.float64)))
    assert_close(dw, ref["dweight"], 1e-5, scale=dweight_scale(dy_cf, x_cf, axes))
    assert_close(db, ref["dbias"], 1e-5, scale=np.abs(dy_cf).sum(axis=axes).max())
