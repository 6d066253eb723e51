"""The family's functional API (bnorm.layer_norm, rms_norm, group_norm, instance_norm and
their *_training / *_backward) against float64 oracles: torch 1.13's F.layer_norm,
F.group_norm, F.instance_norm with autograd, and a float64 formula for RMS norm. Random
shapes of every rank with odd sizes, both memory layouts for group / instance norm,
groups 1, C and between, every optional gradient skipped."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bnorm  # noqa: E402
from family_helpers import (  # noqa: E402
    close, family_shapes, formula_rms_norm_grads, grad_scales, group_choices, in_layout,
    is_channels_last, numpy_rms_norm, params, random_input, rms_eps, spatial,
    torch_group_norm, torch_instance_norm, torch_layer_norm,
)

DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}


def _rtol(dtype):
    return RTOL[np.dtype(dtype)]


def _dt(dtype):
    return np.dtype(dtype).name


# ---- layer norm and RMS norm ------------------------------------------------------------

ROW_SHAPES = family_shapes(24, seed=101, min_rank=1, max_rank=5)


def _row_cases():
    rng = np.random.default_rng(7)
    for shape in ROW_SHAPES:
        k = int(rng.integers(1, len(shape) + 1))
        for dtype in DTYPES:
            yield pytest.param(shape, k, dtype, id=f"{'x'.join(map(str, shape))}-k{k}-{_dt(dtype)}")


ROW_CASES = list(_row_cases())


def _ln_check(x, dy, k, w, b, eps, rng_dtype):
    rtol = _rtol(rng_dtype)
    ns = x.shape[x.ndim - k:]
    y, mean, rstd = bnorm.layer_norm_training(x, ns, w, b, eps)
    ref = torch_layer_norm(x, dy, ns, w, b, eps)
    assert y.dtype == x.dtype and y.flags["C_CONTIGUOUS"] and y.shape == x.shape
    close(y, ref["y"], rtol, what="y")
    axes = tuple(range(x.ndim - k, x.ndim))
    x64 = x.astype(np.float64)
    assert mean.shape == x.shape[:x.ndim - k] and rstd.shape == mean.shape
    close(mean, x64.mean(axis=axes), rtol, scale=x64.std(axis=axes).max(), what="save_mean")
    close(rstd, 1 / np.sqrt(x64.var(axis=axes) + eps), rtol, what="save_rstd")
    dx, dw, db = bnorm.layer_norm_backward(x, dy, ns, mean, rstd, w)
    lead = tuple(range(x.ndim - k))
    s = grad_scales(x, dy, w, lead, axes, eps)
    close(dx, ref["dx"], rtol, scale=s["dx"], what="dx")
    assert dw.shape == ns and db.shape == ns
    close(dw, ref["dweight"] if w is not None else _sum_lead(dy * _xhat(x, axes, eps), lead),
          rtol, scale=s["dweight"], what="dweight")
    close(db, _sum_lead(dy.astype(np.float64), lead), rtol, scale=s["dbias"], what="dbias")
    return y, dx, dw, db


def _xhat(x, axes, eps):
    x64 = x.astype(np.float64)
    return (x64 - x64.mean(axis=axes, keepdims=True)) / np.sqrt(
        x64.var(axis=axes, keepdims=True) + eps)


def _sum_lead(a, lead):
    return np.sum(a, axis=lead) if lead else a


@pytest.mark.parametrize("shape,k,dtype", ROW_CASES)
def test_layer_norm_forward_backward(shape, k, dtype, rng):
    x = random_input(rng, shape, dtype)
    dy = rng.normal(size=shape).astype(dtype)
    w, b = params(rng, shape[len(shape) - k:], dtype)
    y, *_ = _ln_check(x, dy, k, w, b, 1e-5, dtype)
    assert np.array_equal(bnorm.layer_norm(x, shape[len(shape) - k:], w, b), y)


@pytest.mark.parametrize("w_given,b_given", [(True, True), (True, False), (False, True),
                                             (False, False)], ids=["wb", "w", "b", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
def test_layer_norm_optional_parameters_and_gradients(w_given, b_given, dtype, rng):
    """weight / bias None, and each gradient skipped: the others stay bit for bit."""
    shape, k = (5, 3, 17), 2
    x = random_input(rng, shape, dtype)
    dy = rng.normal(size=shape).astype(dtype)
    w, b = params(rng, shape[1:], dtype)
    w, b = (w if w_given else None), (b if b_given else None)
    _, full_dx, full_dw, full_db = _ln_check(x, dy, k, w, b, 1e-3, dtype)
    _, mean, rstd = bnorm.layer_norm_training(x, shape[1:], w, b, 1e-3)
    for need in [(False, True, True), (True, False, True), (True, True, False),
                 (False, False, False)]:
        out = bnorm.layer_norm_backward(x, dy, shape[1:], mean, rstd, w, need_dx=need[0],
                                        need_dweight=need[1], need_dbias=need[2])
        for got, full, wanted in zip(out, (full_dx, full_dw, full_db), need):
            assert (got is None) if not wanted else np.array_equal(got, full)


def test_layer_norm_non_contiguous_input_is_copied(rng):
    base = random_input(rng, (17, 4, 15), np.float32)
    x = base.transpose(1, 0, 2)  # (4, 17, 15), not C-contiguous
    dy = rng.normal(size=x.shape).astype(np.float32)
    w, b = params(rng, (15,), np.float32)
    y, mean, rstd = bnorm.layer_norm_training(x, 15, w, b)
    yc, mc, rc = bnorm.layer_norm_training(np.ascontiguousarray(x), 15, w, b)
    assert y.flags["C_CONTIGUOUS"] and np.array_equal(y, yc) and np.array_equal(mean, mc)
    dx = bnorm.layer_norm_backward(x, dy.T.copy().T, 15, mean, rstd, w)[0]
    assert np.array_equal(dx, bnorm.layer_norm_backward(np.ascontiguousarray(x), dy, 15, mc,
                                                        rc, w)[0])


@pytest.mark.parametrize("eps", [None, 1e-3], ids=["epsNone", "eps1e-3"])
@pytest.mark.parametrize("shape,k,dtype", ROW_CASES[::2])
def test_rms_norm_against_the_formula(shape, k, dtype, eps, rng):
    rtol = _rtol(dtype)
    x = random_input(rng, shape, dtype)
    dy = rng.normal(size=shape).astype(dtype)
    ns = shape[len(shape) - k:]
    w = params(rng, ns, dtype)[0]
    e = rms_eps(dtype, eps)
    y, rstd = bnorm.rms_norm_training(x, ns, w, eps)
    y_ref, rstd_ref = numpy_rms_norm(x, k, w, e)
    assert y.dtype == dtype and y.flags["C_CONTIGUOUS"] and rstd.shape == rstd_ref.shape
    close(y, y_ref, rtol, what="y")
    close(rstd, rstd_ref, rtol, what="save_rstd")
    assert np.array_equal(bnorm.rms_norm(x, ns, w, eps), y)
    ref = formula_rms_norm_grads(x, dy, k, w, e)
    dx, dw = bnorm.rms_norm_backward(x, dy, ns, rstd, w)
    lead = tuple(range(len(shape) - k))
    xhat = np.abs(x.astype(np.float64)) * rstd_ref.reshape(rstd_ref.shape + (1,) * k)
    dy64 = np.abs(dy.astype(np.float64))
    close(dx, ref["dx"], rtol, scale=dy64.max() * np.abs(w).max() * rstd_ref.max(), what="dx")
    close(dw, ref["dweight"], rtol, scale=_sum_lead(dy64 * xhat, lead).max(), what="dweight")
    # weight None is weight 1; each output skippable, the other bit for bit the same
    dx1, dw1 = bnorm.rms_norm_backward(x, dy, ns, bnorm.rms_norm_training(x, ns, None, eps)[1])
    ref1 = formula_rms_norm_grads(x, dy, k, None, e)
    close(dx1, ref1["dx"], rtol, scale=dy64.max() * rstd_ref.max(), what="dx (weight None)")
    close(dw1, _sum_lead(dy.astype(np.float64) * x * rstd_ref.reshape(rstd_ref.shape + (1,) * k),
                         lead), rtol, scale=_sum_lead(dy64 * xhat, lead).max(), what="dweight")
    assert bnorm.rms_norm_backward(x, dy, ns, rstd, w, need_dx=False)[0] is None
    assert np.array_equal(bnorm.rms_norm_backward(x, dy, ns, rstd, w, need_dx=False)[1], dw)
    assert np.array_equal(bnorm.rms_norm_backward(x, dy, ns, rstd, w, need_dweight=False)[0], dx)


# ---- group norm -------------------------------------------------------------------------

GROUP_SHAPES = family_shapes(16, seed=202, min_rank=2, max_rank=5, max_elems=12000)


def _group_cases():
    for shape in GROUP_SHAPES:
        for g in group_choices(shape[1]):
            if shape[1] // g * spatial(shape) == 1:
                continue  # one value per group: bnorm refuses it (test_family_properties)
            for layout in (("cf", "cl") if len(shape) >= 3 else ("cf",)):
                for dtype in DTYPES:
                    yield pytest.param(shape, g, layout, dtype,
                                       id=f"{'x'.join(map(str, shape))}-G{g}-{layout}-{_dt(dtype)}")


GROUP_CASES = list(_group_cases())


def _gn_axes(ndim):
    return (0,) + tuple(range(2, ndim))


def _gn_check(x, dy, g, w, b, eps, dtype):
    rtol = _rtol(dtype)
    n, c = x.shape[:2]
    y, mean, rstd = bnorm.group_norm_training(x, g, w, b, eps)
    ref = torch_group_norm(x, dy, g, w, b, eps)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert is_channels_last(y) == is_channels_last(x) or y.ndim < 3
    close(y, ref["y"], rtol, what="y")
    grouped = x.astype(np.float64).reshape(n, g, -1)
    assert mean.shape == (n, g) and rstd.shape == (n, g)
    close(mean, grouped.mean(axis=2), rtol, scale=grouped.std(axis=2).max(), what="save_mean")
    close(rstd, 1 / np.sqrt(grouped.var(axis=2) + eps), rtol, what="save_rstd")
    dx, dw, db = bnorm.group_norm_backward(x, dy, g, mean, rstd, w)
    assert is_channels_last(dx) == is_channels_last(x) or dx.ndim < 3
    # the sets are groups: statistics over (C/G, *) per (n, g) for the scales
    s = grad_scales(x.reshape(n, g, -1), dy.reshape(n, g, -1), w, (0,), (2,), eps)
    s["dweight"] = grad_scales(x, dy, w, _gn_axes(x.ndim), _gn_axes(x.ndim), eps)["dweight"] * 4
    close(dx, ref["dx"], rtol, scale=s["dx"], what="dx")
    if w is not None:
        close(dw, ref["dweight"], rtol, scale=s["dweight"], what="dweight")
    if b is not None:
        close(db, ref["dbias"], rtol, scale=np.abs(dy).sum(axis=_gn_axes(x.ndim)).max(),
              what="dbias")
    return y, dx, dw, db


@pytest.mark.parametrize("shape,g,layout,dtype", GROUP_CASES)
def test_group_norm_forward_backward(shape, g, layout, dtype, rng):
    x = in_layout(random_input(rng, shape, dtype), layout)
    dy = in_layout(rng.normal(size=shape).astype(dtype), layout)
    w, b = params(rng, (shape[1],), dtype)
    y, *_ = _gn_check(x, dy, g, w, b, 1e-5, dtype)
    assert np.array_equal(bnorm.group_norm(x, g, w, b), y)


@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("w_given,b_given", [(True, False), (False, True), (False, False)],
                         ids=["w", "b", "none"])
def test_group_norm_optional_parameters_and_gradients(w_given, b_given, layout, rng):
    shape, g = (3, 6, 5, 4), 3
    x = in_layout(random_input(rng, shape, np.float64), layout)
    dy = in_layout(rng.normal(size=shape), layout)
    w, b = params(rng, (6,), np.float64)
    w, b = (w if w_given else None), (b if b_given else None)
    _, full_dx, full_dw, full_db = _gn_check(x, dy, g, w, b, 1e-4, np.float64)
    _, mean, rstd = bnorm.group_norm_training(x, g, w, b, 1e-4)
    for need in [(False, True, True), (True, False, True), (True, True, False)]:
        out = bnorm.group_norm_backward(x, dy, g, mean, rstd, w, need_dx=need[0],
                                        need_dweight=need[1], need_dbias=need[2])
        for got, full, wanted in zip(out, (full_dx, full_dw, full_db), need):
            assert (got is None) if not wanted else np.array_equal(got, full)


def test_group_norm_layouts_agree_bitwise(rng):
    """The channels-last run reads the same values without a copy: same bits."""
    x = random_input(rng, (2, 16, 5, 3), np.float32)
    w, b = params(rng, (16,), np.float32)
    y_cf = bnorm.group_norm(x, 4, w, b)
    y_cl = bnorm.group_norm(in_layout(x, "cl"), 4, w, b)
    assert is_channels_last(y_cl)
    np.testing.assert_allclose(y_cl, y_cf, rtol=0, atol=2e-6)


# ---- instance norm ----------------------------------------------------------------------

INSTANCE_SHAPES = family_shapes(12, seed=303, min_rank=3, max_rank=5, max_elems=12000,
                                keep=lambda s: spatial(s) >= 2)


def _instance_cases():
    for shape in INSTANCE_SHAPES:
        for layout in ("cf", "cl"):
            for dtype in DTYPES:
                yield pytest.param(shape, layout, dtype,
                                   id=f"{'x'.join(map(str, shape))}-{layout}-{_dt(dtype)}")


@pytest.mark.parametrize("shape,layout,dtype", list(_instance_cases()))
def test_instance_norm_running_stats_then_eval(shape, layout, dtype, rng):
    """Three use_input_stats steps updating the running buffers as torch does, then
    use_input_stats=False with them; forward and backward each time."""
    rtol = _rtol(dtype)
    c = shape[1]
    w, b = params(rng, (c,), dtype)
    rm, rv = rng.normal(size=c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    ref_rm, ref_rv = rm.astype(np.float64), rv.astype(np.float64)
    axes = tuple(range(2, len(shape)))
    for step in range(3):
        x = in_layout(random_input(rng, shape, dtype), layout)
        dy = in_layout(rng.normal(size=shape).astype(dtype), layout)
        y, mean, rstd = bnorm.instance_norm_training(x, w, b, rm, rv, momentum=0.3, eps=1e-4)
        ref = torch_instance_norm(x, dy, w, b, ref_rm, ref_rv, True, 0.3, 1e-4)
        ref_rm, ref_rv = ref["running_mean"], ref["running_var"]
        assert y.dtype == dtype and (is_channels_last(y) if layout == "cl"
                                     else y.flags["C_CONTIGUOUS"])
        close(y, ref["y"], rtol, what=f"y step {step}")
        close(rm, ref_rm, rtol, what="running_mean")
        close(rv, ref_rv, rtol, what="running_var")
        assert mean.shape == (shape[0], c) and rstd.shape == (shape[0], c)
        dx, dw, db = bnorm.instance_norm_backward(x, dy, mean, rstd, w)
        s = grad_scales(x, dy, w, (0,) + axes, axes, 1e-4)
        close(dx, ref["dx"], rtol, scale=s["dx"], what="dx")
        close(dw, ref["dweight"], rtol, scale=s["dweight"], what="dweight")
        close(db, ref["dbias"], rtol, scale=s["dbias"], what="dbias")
        assert np.array_equal(bnorm.instance_norm(x, None, None, w, b, eps=1e-4), y)
    x = in_layout(random_input(rng, shape, dtype), layout)
    dy = in_layout(rng.normal(size=shape).astype(dtype), layout)
    rm0, rv0 = rm.copy(), rv.copy()
    y = bnorm.instance_norm(x, rm, rv, w, b, use_input_stats=False, eps=1e-4)
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)  # torch may move them 1 ulp
    ref = torch_instance_norm(x, dy, w, b, rm, rv, False, 0.1, 1e-4)
    close(y, ref["y"], rtol, what="y (running statistics)")
    dx, dw, db = bnorm.instance_norm_backward_inference(x, dy, rm, rv, w, eps=1e-4)
    close(dx, ref["dx"], rtol, what="dx (running statistics)")
    xhat = np.abs(x - rm.reshape((1, c) + (1,) * len(axes))) / np.sqrt(
        rv.reshape((1, c) + (1,) * len(axes)).astype(np.float64) + 1e-4)
    close(dw, ref["dweight"], rtol, scale=np.sum(np.abs(dy) * xhat, axis=(0,) + axes).max(),
          what="dweight (running statistics)")
    close(db, ref["dbias"], rtol, scale=s["dbias"], what="dbias (running statistics)")


@pytest.mark.parametrize("layout", ["cf", "cl"])
def test_instance_norm_without_weight_and_skipped_gradients(layout, rng):
    shape = (3, 5, 17)
    x = in_layout(random_input(rng, shape, np.float64), layout)
    dy = in_layout(rng.normal(size=shape), layout)
    y, mean, rstd = bnorm.instance_norm_training(x)
    ref = torch_instance_norm(x, dy, None, None, None, None, True, 0.1, 1e-5)
    close(y, ref["y"], 1e-10, what="y")
    dx, dw, db = bnorm.instance_norm_backward(x, dy, mean, rstd)
    close(dx, ref["dx"], 1e-10, scale=grad_scales(x, dy, None, (0, 2), (2,), 1e-5)["dx"],
          what="dx")
    out = bnorm.instance_norm_backward(x, dy, mean, rstd, need_dx=False, need_dbias=False)
    assert out[0] is None and out[2] is None and np.array_equal(out[1], dw)
