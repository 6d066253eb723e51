"""Fused batch norm + ReLU (batch_norm_relu*): vs relu(F.batch_norm) in float64 torch,
bitwise vs the plain functions (relu of the plain output; the plain backward of the
gated dy), the bit mask's memory order, both gates, threads, NaN and errors."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bnorm  # noqa: E402
from bn_helpers import (  # noqa: E402
    DTYPES, assert_close, batch_stats64, channels_last, dweight_scale, dx_scale, reduce_axes,
    rtol_for, same_layout, shape_id, t64,
)
import torch.nn.functional as F  # noqa: E402

SHAPES = [(3, 5, 7, 9), (2, 17, 1, 33), (64, 3), (1, 1, 2), (5, 16, 4, 4), (4, 130, 3)]


def _cases():
    for shape in SHAPES:
        for dtype in DTYPES:
            for layout in (("cf", "cl") if len(shape) >= 3 else ("cf",)):
                yield pytest.param(shape, dtype, layout,
                                   id=f"{shape_id(shape)}-{np.dtype(dtype).name}-{layout}")


CASES = list(_cases())
AFFINE = pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
TRAINING = pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])


def _layout(a, layout):
    return channels_last(a) if layout == "cl" else np.ascontiguousarray(a)


def _bits(a):
    """The bytes of a's values in (N, C, *spatial) index order, whatever its layout."""
    return np.ascontiguousarray(a).view(np.uint8)


def _memory_order(a):
    """a's values in memory order: (N, *spatial, C) for a channels-last array."""
    flat = np.moveaxis(a, 1, -1).ravel() if a.ndim >= 3 and not a.flags["C_CONTIGUOUS"] \
        else a.ravel()
    assert np.array_equal(flat, a.ravel(order="K"), equal_nan=True)
    return flat


def _expected_mask(y):
    flat = _memory_order(y)
    return np.packbits((flat > 0) | np.isnan(flat), bitorder="little")


def _relu(a):
    """max(a, 0) with NaN kept, as torch.relu (and bnorm's fused output)."""
    return np.where((a > 0) | np.isnan(a), a, a.dtype.type(0))


def _gated(dy, y):
    """torch's threshold_backward: dy where !(y <= 0), else 0."""
    return np.where(~(y <= 0), dy, dy.dtype.type(0))


def _data(rng, shape, dtype, layout, affine):
    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, bshape) + rng.normal(0, 2, bshape)
    dy = rng.normal(size=shape)
    weight = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c) if affine else None
    bias = rng.normal(size=c) if affine else None
    # Running statistics near the batch's, so that eval outputs straddle 0 too.
    mean, var, _ = batch_stats64(x)
    running_mean = mean + rng.normal(0, 0.3, c)
    running_var = var * rng.uniform(0.5, 2.0, c)
    cast = (lambda a: None if a is None else a.astype(dtype))
    return dict(x=_layout(x.astype(dtype), layout), dy=_layout(dy.astype(dtype), layout),
                weight=cast(weight), bias=cast(bias), running_mean=running_mean.astype(dtype),
                running_var=running_var.astype(dtype))


def _torch_relu_bn(x, dy, weight, bias, running_mean, running_var, training, momentum, eps):
    """float64 torch autograd of relu(batch_norm(x)): y, dx, dweight, dbias, running buffers."""
    xt = t64(x).requires_grad_(True)
    wt, bt = t64(weight), t64(bias)
    for p in (wt, bt):
        if p is not None:
            p.requires_grad_(True)
    rm, rv = t64(running_mean), t64(running_var)
    y = torch.relu(F.batch_norm(xt, rm, rv, wt, bt, training=training, momentum=momentum,
                                eps=eps))
    y.backward(t64(dy))
    return dict(y=y.detach().numpy(), dx=xt.grad.numpy(),
                dweight=None if wt is None else wt.grad.numpy(),
                dbias=None if bt is None else bt.grad.numpy(),
                running_mean=None if rm is None else rm.numpy(),
                running_var=None if rv is None else rv.numpy())


def _forward(d, training, momentum, eps, rm, rv):
    """Fused and plain forwards on the same inputs, through the functional API."""
    if training:
        rm2, rv2 = rm.copy(), rv.copy()
        y, sm, si, mask = bnorm.batch_norm_relu_training(
            d["x"], d["weight"], d["bias"], rm, rv, momentum=momentum, eps=eps, return_mask=True)
        plain, psm, psi = bnorm.batch_norm_training(d["x"], d["weight"], d["bias"], rm2, rv2,
                                                    momentum=momentum, eps=eps)
        assert _bits(sm).tobytes() == _bits(psm).tobytes()
        assert _bits(si).tobytes() == _bits(psi).tobytes()
        assert _bits(rm).tobytes() == _bits(rm2).tobytes(), "running_mean differs from plain"
        assert _bits(rv).tobytes() == _bits(rv2).tobytes(), "running_var differs from plain"
        return y, mask, plain, (sm, si)
    y, mask = bnorm.batch_norm_relu(d["x"], rm, rv, d["weight"], d["bias"], training=False,
                                    eps=eps, return_mask=True)
    plain = bnorm.batch_norm(d["x"], rm, rv, d["weight"], d["bias"], training=False, eps=eps)
    return y, mask, plain, None


# ---- forward --------------------------------------------------------------------------

@TRAINING
@AFFINE
@pytest.mark.parametrize("shape,dtype,layout", CASES)
def test_forward_matches_torch_plain_and_mask(shape, dtype, layout, affine, training, rng):
    rtol = rtol_for(dtype)
    d = _data(rng, shape, dtype, layout, affine)
    momentum, eps = 0.3, 1e-3
    rm, rv = d["running_mean"].copy(), d["running_var"].copy()
    ref = _torch_relu_bn(d["x"], d["dy"], d["weight"], d["bias"], rm, rv, training, momentum,
                         eps)
    y, mask, plain, _ = _forward(d, training, momentum, eps, rm, rv)

    assert y.dtype == dtype and y.shape == d["x"].shape and same_layout(y, d["x"])
    assert_close(y, ref["y"], rtol, what="y")
    assert np.all(y >= 0)
    assert 0 < np.count_nonzero(y) < y.size or y.size < 4  # the ReLU really cuts
    assert _bits(y).tobytes() == _bits(_relu(plain)).tobytes(), "y != max(plain forward, 0)"

    assert mask.dtype == np.uint8 and mask.ndim == 1
    assert mask.size == -(-y.size // 8)
    assert np.array_equal(mask, _expected_mask(y))
    assert mask[-1] >> (y.size % 8 or 8) == 0, "unused bits of the last byte must be 0"

    if training:
        assert_close(rm, ref["running_mean"], rtol, what="running_mean")
        assert_close(rv, ref["running_var"], rtol, what="running_var")
    else:
        assert np.array_equal(rm, d["running_mean"]) and np.array_equal(rv, d["running_var"])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_return_mask_shapes_the_result(dtype, rng):
    d = _data(rng, (4, 3, 5), dtype, "cf", True)
    x, w, b, rm, rv = d["x"], d["weight"], d["bias"], d["running_mean"], d["running_var"]
    out = bnorm.batch_norm_relu_training(x, w, b)
    assert isinstance(out, tuple) and len(out) == 3
    out_m = bnorm.batch_norm_relu_training(x, w, b, return_mask=True)
    assert len(out_m) == 4
    for a, m in zip(out, out_m):
        assert np.array_equal(a, m)
    y = bnorm.batch_norm_relu(x, rm, rv, w, b)
    assert isinstance(y, np.ndarray)
    y_m, mask = bnorm.batch_norm_relu(x, rm, rv, w, b, return_mask=True)
    assert np.array_equal(y, y_m) and np.array_equal(mask, _expected_mask(y))
    y_t = bnorm.batch_norm_relu(x, None, None, w, b, training=True)
    y_t2, mask_t = bnorm.batch_norm_relu(x, None, None, w, b, training=True, return_mask=True)
    assert np.array_equal(y_t, out[0]) and np.array_equal(y_t2, out[0])
    assert np.array_equal(mask_t, out_m[3])


def test_channels_last_mask_is_in_memory_order(rng):
    """The same values in the two layouts: the masks differ by the memory permutation."""
    x = rng.normal(size=(2, 3, 2, 5))
    y_cf, m_cf = bnorm.batch_norm_relu(np.ascontiguousarray(x), None, None, training=True,
                                       return_mask=True)
    y_cl, m_cl = bnorm.batch_norm_relu(channels_last(x), None, None, training=True,
                                       return_mask=True)
    assert_close(y_cl, y_cf, 1e-10)
    assert np.array_equal(y_cf > 0, y_cl > 0)
    assert np.array_equal(np.unpackbits(m_cf, bitorder="little")[:x.size], (y_cf > 0).ravel())
    assert np.array_equal(np.unpackbits(m_cl, bitorder="little")[:x.size],
                          np.moveaxis(y_cl > 0, 1, -1).ravel())
    assert not np.array_equal(m_cf, m_cl)


# ---- backward -------------------------------------------------------------------------

def _backwards(d, training, y, mask, stats, eps, **need):
    """The fused backward with the y gate and with the mask gate, and the plain backward of
    the gated dy."""
    x, dy, w = d["x"], d["dy"], d["weight"]
    dy_gated = _layout(_gated(dy, y), "cl" if not dy.flags["C_CONTIGUOUS"] else "cf")
    if training:
        sm, si = stats
        by_y = bnorm.batch_norm_relu_backward(x, dy, sm, si, w, y=y, **need)
        by_mask = bnorm.batch_norm_relu_backward(x, dy, sm, si, w, relu_mask=mask, **need)
        plain = bnorm.batch_norm_backward(x, dy_gated, sm, si, w, **need)
    else:
        rm, rv = d["running_mean"], d["running_var"]
        by_y = bnorm.batch_norm_relu_backward_inference(x, dy, rm, rv, w, eps, y=y, **need)
        by_mask = bnorm.batch_norm_relu_backward_inference(x, dy, rm, rv, w, eps,
                                                           relu_mask=mask, **need)
        plain = bnorm.batch_norm_backward_inference(x, dy_gated, rm, rv, w, eps, **need)
    return by_y, by_mask, plain


def _assert_same_bits(got, want, what):
    for name, g, p in zip(("dx", "dweight", "dbias"), got, want):
        if p is None:
            assert g is None, f"{what}: {name}"
            continue
        assert g.dtype == p.dtype and g.shape == p.shape and g.strides == p.strides, \
            f"{what}: {name}"
        assert _bits(g).tobytes() == _bits(p).tobytes(), f"{what}: {name} differs"


@TRAINING
@AFFINE
@pytest.mark.parametrize("shape,dtype,layout", CASES)
def test_backward_gates_plain_and_torch(shape, dtype, layout, affine, training, rng):
    d = _data(rng, shape, dtype, layout, affine)
    eps = 1e-3
    rm, rv = d["running_mean"].copy(), d["running_var"].copy()
    y, mask, _, stats = _forward(d, training, 0.1, eps, rm, rv)
    by_y, by_mask, plain = _backwards(d, training, y, mask, stats, eps)

    _assert_same_bits(by_mask, by_y, "mask gate vs y gate")
    _assert_same_bits(by_y, plain, "fused vs plain backward of the gated dy")
    dx = by_y[0]
    assert dx.dtype == dtype and same_layout(dx, d["x"])
    if not affine:  # the gradients of the absent weight and bias are still returned
        assert by_y[1].shape == (shape[1],) and by_y[2].shape == (shape[1],)

    if dtype == np.float64:  # float32's gate may flip where bn(x) ~ 0 in float64
        rtol = rtol_for(dtype)
        ref = _torch_relu_bn(d["x"], d["dy"], d["weight"], d["bias"], d["running_mean"],
                             d["running_var"], training, 0.1, eps)
        axes = reduce_axes(len(shape))
        dy = _gated(d["dy"], y)
        invstd = stats[1] if training else 1 / np.sqrt(d["running_var"] + eps)
        assert_close(dx, ref["dx"], rtol, scale=dx_scale(dy, d["weight"], invstd), what="dx")
        if affine:
            assert_close(by_y[1], ref["dweight"], rtol, scale=dweight_scale(dy, d["x"], axes),
                         what="dweight")
            assert_close(by_y[2], ref["dbias"], rtol, scale=np.abs(dy).sum(axis=axes).max(),
                         what="dbias")


@TRAINING
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_backward_need_flags(dtype, training, rng):
    d = _data(rng, (5, 3, 4), dtype, "cf", True)
    rm, rv = d["running_mean"].copy(), d["running_var"].copy()
    y, mask, _, stats = _forward(d, training, 0.1, 1e-5, rm, rv)
    full = _backwards(d, training, y, mask, stats, 1e-5)[0]
    for flags in [(True, False, False), (False, True, False), (False, False, True),
                  (False, False, False)]:
        need = dict(need_dx=flags[0], need_dweight=flags[1], need_dbias=flags[2])
        by_y, by_mask, plain = _backwards(d, training, y, mask, stats, 1e-5, **need)
        want = tuple(f if n else None for f, n in zip(full, flags))
        for got in (by_y, by_mask, plain):
            _assert_same_bits(got, want, f"need {flags}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_y_gate_in_another_layout_or_array_like(dtype, rng):
    """y is taken in x's layout (copied when it is not), like dy; an array-like y must
    convert to x's dtype (nested lists are float64)."""
    d = _data(rng, (3, 4, 5, 6), dtype, "cl", True)
    y, sm, si = bnorm.batch_norm_relu_training(d["x"], d["weight"], d["bias"])
    want = bnorm.batch_norm_relu_backward(d["x"], d["dy"], sm, si, d["weight"], y=y)
    for other in [np.ascontiguousarray(y)] + ([y.tolist()] if dtype == np.float64 else []):
        got = bnorm.batch_norm_relu_backward(d["x"], d["dy"], sm, si, d["weight"], y=other)
        _assert_same_bits(got, want, "y in another layout")


# ---- threads --------------------------------------------------------------------------

def _run_fused(d, gate):
    x, dy, w, b = d["x"], d["dy"], d["weight"], d["bias"]
    rm, rv = d["running_mean"].copy(), d["running_var"].copy()
    y, sm, si, mask = bnorm.batch_norm_relu_training(x, w, b, rm, rv, momentum=0.3,
                                                     return_mask=True)
    g = dict(y=y) if gate == "y" else dict(relu_mask=mask)
    dx, dw, db = bnorm.batch_norm_relu_backward(x, dy, sm, si, w, **g)
    yi, mask_i = bnorm.batch_norm_relu(x, rm, rv, w, b, return_mask=True)
    gi = dict(y=yi) if gate == "y" else dict(relu_mask=mask_i)
    dxi, dwi, dbi = bnorm.batch_norm_relu_backward_inference(x, dy, rm, rv, w, **gi)
    return dict(y=y, save_mean=sm, save_invstd=si, mask=mask, running_mean=rm, running_var=rv,
                dx=dx, dweight=dw, dbias=db, y_inference=yi, mask_inference=mask_i,
                dx_inference=dxi, dweight_inference=dwi, dbias_inference=dbi)


@pytest.mark.parametrize("gate", ["y", "mask"])
@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_bitwise_identical_across_thread_counts(dtype, layout, gate, rng, restore_threads):
    shape = (8, 16, 33, 31)  # 130944 values: more than one thread's share
    d = _data(rng, shape, dtype, layout, True)
    results = {}
    for n in (1, 2):
        bnorm.set_num_threads(n)
        assert bnorm.get_num_threads() == n
        results[n] = _run_fused(d, gate)
    for key, value in results[1].items():
        other = results[2][key]
        assert other.strides == value.strides, key
        assert _bits(other).tobytes() == _bits(value).tobytes(), \
            f"{key} differs between 1 and 2 threads"
    assert 0 < np.count_nonzero(results[1]["y"]) < results[1]["y"].size


# ---- NaN ------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_nan_in_one_channel_training(dtype, layout, rng):
    """A NaN poisons its channel's batch statistics: that channel's y is NaN (mask bits
    set, the gate passes dy) and its dx NaN, as in torch; other channels are unaffected."""
    d = _data(rng, (4, 3, 5, 2), dtype, "cf", True)
    x = d["x"].copy()
    x[2, 1, 3, 1] = np.nan
    x = _layout(x, layout)
    dy = d["dy"]
    y, sm, si, mask = bnorm.batch_norm_relu_training(x, d["weight"], d["bias"], return_mask=True)
    assert np.all(np.isnan(y[:, 1])) and not np.any(np.isnan(y[:, [0, 2]]))
    assert np.array_equal(mask, _expected_mask(y))
    bits = np.unpackbits(mask, bitorder="little")[:y.size].reshape(
        np.moveaxis(y, 1, -1).shape if layout == "cl" else y.shape)
    assert np.all(bits[..., 1] if layout == "cl" else bits[:, 1])

    ref = _torch_relu_bn(x, dy, d["weight"], d["bias"], None, None, True, 0.1, 1e-5)
    for gate in (dict(y=y), dict(relu_mask=mask)):
        dx, dw, db = bnorm.batch_norm_relu_backward(x, dy, sm, si, d["weight"], **gate)
        for got, want, name in ((y, ref["y"], "y"), (dx, ref["dx"], "dx"),
                                (dw, ref["dweight"], "dweight"), (db, ref["dbias"], "dbias")):
            assert np.array_equal(np.isnan(got), np.isnan(want)), name
            ok = ~np.isnan(want)
            assert_close(got[ok], want[ok], rtol_for(dtype) * 10, what=name)
        assert np.all(np.isnan(dx[:, 1])) and np.all(np.isfinite(dx[:, [0, 2]]))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_nan_value_with_running_stats(dtype, rng):
    """With fixed statistics a NaN stays in its element: y NaN, bit set, dy passes, so dx
    there is dy * weight * invstd (finite); dweight of its channel is NaN, as in torch."""
    d = _data(rng, (3, 4, 6), dtype, "cf", True)
    x = d["x"].copy()
    x[1, 2, 4] = np.nan
    rm, rv, w, b, dy = d["running_mean"], d["running_var"], d["weight"], d["bias"], d["dy"]
    y, mask = bnorm.batch_norm_relu(x, rm, rv, w, b, return_mask=True)
    assert np.isnan(y[1, 2, 4]) and np.count_nonzero(np.isnan(y)) == 1
    i = np.ravel_multi_index((1, 2, 4), x.shape)
    assert (mask[i // 8] >> (i % 8)) & 1
    assert np.array_equal(mask, _expected_mask(y))
    ref = _torch_relu_bn(x, dy, w, b, rm, rv, False, 0.1, 1e-5)
    for gate in (dict(y=y), dict(relu_mask=mask)):
        dx, dw, db = bnorm.batch_norm_relu_backward_inference(x, dy, rm, rv, w, **gate)
        assert np.all(np.isfinite(dx)) and np.all(np.isfinite(db))
        assert np.isnan(dw[2]) and np.count_nonzero(np.isnan(dw)) == 1
        rtol = rtol_for(dtype) * 10
        assert_close(dx, ref["dx"], rtol, what="dx")
        assert_close(db, ref["dbias"], rtol, what="dbias")
        ok = ~np.isnan(ref["dweight"])
        assert np.array_equal(ok, ~np.isnan(dw))
        assert_close(dw[ok], ref["dweight"][ok], rtol, what="dweight")


# ---- errors ---------------------------------------------------------------------------

@pytest.fixture
def fused(rng):
    d = _data(rng, (4, 3, 5), np.float32, "cf", True)
    y, sm, si, mask = bnorm.batch_norm_relu_training(d["x"], d["weight"], d["bias"],
                                                     return_mask=True)
    d.update(y=y, save_mean=sm, save_invstd=si, mask=mask)
    return d


def _both_backwards(d, **gate):
    """Calls each fused backward with `gate`; yields a thunk per call."""
    yield lambda: bnorm.batch_norm_relu_backward(d["x"], d["dy"], d["save_mean"],
                                                 d["save_invstd"], d["weight"], **gate)
    yield lambda: bnorm.batch_norm_relu_backward_inference(d["x"], d["dy"], d["running_mean"],
                                                           d["running_var"], d["weight"],
                                                           **gate)


@pytest.mark.parametrize("which", ["both", "neither"])
def test_exactly_one_gate(fused, which):
    gate = dict(y=fused["y"], relu_mask=fused["mask"]) if which == "both" else {}
    for call in _both_backwards(fused, **gate):
        with pytest.raises(ValueError, match=f"y .*relu_mask.*{which}"):
            call()


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_mask_length(fused, delta):
    mask = np.zeros(fused["mask"].size + delta, np.uint8)
    for call in _both_backwards(fused, relu_mask=mask):
        with pytest.raises(ValueError, match=r"relu_mask must have shape \(8,\)"):
            call()


def test_mask_must_be_one_dimensional(fused):
    for call in _both_backwards(fused, relu_mask=fused["mask"].reshape(2, 4)):
        with pytest.raises(ValueError, match="relu_mask"):
            call()


@pytest.mark.parametrize("bad", [np.int8, np.uint16, np.int64, np.bool_, np.float32],
                         ids=lambda t: np.dtype(t).name)
def test_wrong_mask_dtype(fused, bad):
    for call in _both_backwards(fused, relu_mask=fused["mask"].astype(bad)):
        with pytest.raises(TypeError, match="relu_mask must be uint8"):
            call()


@pytest.mark.parametrize("shape", [(4, 3, 6), (4, 3), (3, 4, 5), (4, 3, 5, 1)], ids=shape_id)
def test_wrong_y_shape(fused, shape):
    y = np.zeros(shape, np.float32)
    for call in _both_backwards(fused, y=y):
        with pytest.raises(ValueError, match=r"y must have x's shape \(4, 3, 5\)"):
            call()


def test_wrong_y_dtype(fused):
    for call in _both_backwards(fused, y=fused["y"].astype(np.float64)):
        with pytest.raises(TypeError, match="y must be float32"):
            call()


def test_forward_errors_match_plain(fused):
    """The fused forwards share the plain ones' checks."""
    x = fused["x"]
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        bnorm.batch_norm_relu(x, None, None, training=False)
    with pytest.raises(TypeError, match="x"):
        bnorm.batch_norm_relu_training(x.astype(np.int32))
    with pytest.raises(ValueError, match="weight"):
        bnorm.batch_norm_relu_training(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="running_var_estimator"):
        bnorm.batch_norm_relu(x, None, None, training=True, running_var_estimator="x")


def test_strided_mask_is_accepted(fused):
    """A non-contiguous uint8 mask is read through a copy."""
    spread = np.zeros(2 * fused["mask"].size, np.uint8)
    spread[::2] = fused["mask"]
    for strided, contiguous in zip(_both_backwards(fused, relu_mask=spread[::2]),
                                   _both_backwards(fused, relu_mask=fused["mask"])):
        _assert_same_bits(strided(), contiguous(), "strided mask")
