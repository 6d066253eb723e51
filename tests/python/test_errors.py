"""Errors: the exception type, a message naming the argument, and no side effects
(running buffers, num_batches_tracked, parameters unchanged after a failing call)."""
import contextlib
import math

import numpy as np
import pytest

import bnorm

M1_PHRASE = "Expected more than 1 value per channel when training"
F32 = np.float32


@contextlib.contextmanager
def unchanged(*arrays):
    """Asserts that every array (None allowed) is bitwise unchanged by the block."""
    snapshots = [None if a is None else np.array(a, copy=True) for a in arrays]
    yield
    for i, (a, s) in enumerate(zip(arrays, snapshots)):
        if a is not None:
            assert a.dtype == s.dtype and a.shape == s.shape, i
            assert a.tobytes() == s.tobytes(), f"array #{i} was modified by a failing call"


@pytest.fixture
def data(rng):
    c = 3
    return dict(
        x=rng.normal(size=(4, c, 5)).astype(F32),
        dy=rng.normal(size=(4, c, 5)).astype(F32),
        w=rng.uniform(0.5, 2, c).astype(F32),
        b=rng.normal(size=c).astype(F32),
        rm=rng.normal(size=c).astype(F32),
        rv=rng.uniform(0.5, 2, c).astype(F32),
    )


def _train(d, **kw):
    args = dict(x=d["x"], running_mean=d["rm"], running_var=d["rv"], weight=d["w"], bias=d["b"],
                training=True)
    args.update(kw)
    x = args.pop("x")
    return bnorm.batch_norm(x, **args)


def _train_fn(d, **kw):
    args = dict(x=d["x"], weight=d["w"], bias=d["b"], running_mean=d["rm"], running_var=d["rv"])
    args.update(kw)
    x = args.pop("x")
    return bnorm.batch_norm_training(x, **args)


# ---- dtypes ---------------------------------------------------------------------------

BAD_DTYPES = [np.int64, np.int32, np.float16, np.complex64, np.bool_]


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_x_dtype_is_type_error_everywhere(bad, data):
    d = data
    x = d["x"].astype(bad)
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(TypeError, match="x"):
            _train(d, x=x)
        with pytest.raises(TypeError, match="x"):
            _train_fn(d, x=x)
        with pytest.raises(TypeError, match="x"):
            bnorm.batch_norm(x, d["rm"], d["rv"], d["w"], d["b"], training=False)
        _, sm, si = bnorm.batch_norm_training(d["x"])
        with pytest.raises(TypeError, match="x"):
            bnorm.batch_norm_backward(x, d["dy"], sm, si)
        with pytest.raises(TypeError, match="x"):
            bnorm.batch_norm_backward_inference(x, d["dy"], d["rm"], d["rv"])


def test_longdouble_x_is_type_error(data):
    x = data["x"].astype(np.longdouble)
    if np.dtype(np.longdouble).itemsize == 8:  # longdouble is float64 on this platform
        assert bnorm.batch_norm(x, None, None, training=True).dtype == np.float64
    else:
        with pytest.raises(TypeError, match="x"):
            bnorm.batch_norm(x, None, None, training=True)


@pytest.mark.parametrize("arg", ["x", "weight", "running_mean", "running_var"])
def test_non_native_byte_order_is_type_error(arg, data):
    """'>f4' data would be misread as native floats: refused, not silently garbled."""
    d = data
    kw = dict(x=d["x"], weight=d["w"], running_mean=d["rm"], running_var=d["rv"])
    swapped = kw[arg].astype(kw[arg].dtype.newbyteorder())
    assert np.array_equal(swapped, kw[arg])
    kw[arg] = swapped
    x = kw.pop("x")
    with unchanged(*kw.values()):
        with pytest.raises(TypeError, match=arg):
            bnorm.batch_norm(x, training=True, **kw)


@pytest.mark.parametrize("arg", ["weight", "bias", "running_mean", "running_var"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_mixed_dtypes_are_type_errors(arg, training, data):
    d = data
    kw = dict(weight=d["w"], bias=d["b"], running_mean=d["rm"], running_var=d["rv"])
    kw[arg] = kw[arg].astype(np.float64)
    with unchanged(d["rm"], d["rv"], kw["running_mean"], kw["running_var"]):
        with pytest.raises(TypeError, match=arg):
            bnorm.batch_norm(d["x"], training=training, **kw)
    # float64 x with float32 buffers, too
    x64 = d["x"].astype(np.float64)
    kw64 = {k: v.astype(np.float64) for k, v in kw.items()}
    kw64[arg] = kw64[arg].astype(F32)
    with unchanged(*kw64.values()):
        with pytest.raises(TypeError, match=arg):
            bnorm.batch_norm(x64, training=training, **kw64)


@pytest.mark.parametrize("arg", ["weight", "running_mean", "running_var"])
def test_integer_per_channel_arrays_are_type_errors(arg, data):
    d = data
    kw = dict(weight=d["w"], running_mean=d["rm"], running_var=d["rv"])
    kw[arg] = np.ones(3, np.int64)
    with unchanged(*kw.values()):
        with pytest.raises(TypeError, match=arg):
            bnorm.batch_norm(d["x"], training=True, **kw)


def test_mixed_dtypes_in_backward(data):
    d = data
    _, sm, si = bnorm.batch_norm_training(d["x"])
    with pytest.raises(TypeError, match="dy"):
        bnorm.batch_norm_backward(d["x"], d["dy"].astype(np.float64), sm, si)
    with pytest.raises(TypeError, match="save_mean"):
        bnorm.batch_norm_backward(d["x"], d["dy"], sm.astype(np.float64), si)
    with pytest.raises(TypeError, match="save_invstd"):
        bnorm.batch_norm_backward(d["x"], d["dy"], sm, si.astype(np.float64))
    with pytest.raises(TypeError, match="weight"):
        bnorm.batch_norm_backward(d["x"], d["dy"], sm, si, d["w"].astype(np.float64))
    with pytest.raises(TypeError, match="dy"):
        bnorm.batch_norm_backward_inference(d["x"], d["dy"].astype(np.float64), d["rm"], d["rv"])
    with pytest.raises(TypeError, match="running_var"):
        bnorm.batch_norm_backward_inference(d["x"], d["dy"], d["rm"], d["rv"].astype(np.float64))


def test_running_buffer_must_be_an_ndarray(data):
    d = data
    with unchanged(d["rv"]):
        with pytest.raises(TypeError, match="running_mean"):
            _train(d, running_mean=[0.0, 0.0, 0.0])


def test_module_dtype_mismatch_is_type_error(rng):
    bn = bnorm.BatchNorm2d(3)  # float32
    x = rng.normal(size=(2, 3, 2, 2))
    with unchanged(bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.weight, bn.bias):
        with pytest.raises(TypeError):
            bn(x)  # float64 input
        with pytest.raises(TypeError):
            bn(x.astype(np.int64))
        with pytest.raises(TypeError):
            bn(x.astype(np.float16))
    bn64 = bnorm.BatchNorm2d(3, dtype=np.float64)
    with unchanged(bn64.running_mean, bn64.running_var, bn64.num_batches_tracked):
        with pytest.raises(TypeError):
            bn64(x.astype(F32))
    bn64(x)
    with pytest.raises(TypeError):
        bn64.backward(x.astype(F32))


# ---- sizes ----------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["weight", "bias", "running_mean", "running_var"])
@pytest.mark.parametrize("length", [2, 4, 1])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_per_channel_wrong_length_is_value_error(arg, length, training, data):
    d = data
    kw = dict(weight=d["w"], bias=d["b"], running_mean=d["rm"], running_var=d["rv"])
    kw[arg] = np.ones(length, F32)
    with unchanged(*kw.values()):
        with pytest.raises(ValueError, match=arg):
            bnorm.batch_norm(d["x"], training=training, **kw)
        if training:
            with pytest.raises(ValueError, match=arg):
                bnorm.batch_norm_training(d["x"], **kw)


@pytest.mark.parametrize("arg", ["weight", "running_mean"])
def test_per_channel_wrong_rank_is_value_error(arg, data):
    d = data
    kw = dict(weight=d["w"], running_mean=d["rm"], running_var=d["rv"])
    kw[arg] = np.ones((1, 3), F32)
    with unchanged(*kw.values()):
        with pytest.raises(ValueError, match=arg):
            bnorm.batch_norm(d["x"], training=True, **kw)


def test_valid_buffer_is_not_updated_when_another_is_bad(data):
    """A failing call writes nothing, even to the buffers that were fine."""
    d = data
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(ValueError, match="running_var"):
            _train(d, running_var=np.ones(5, F32))
        with pytest.raises(ValueError, match="bias"):
            _train(d, bias=np.ones(2, F32))
        with pytest.raises(ValueError, match="eps"):
            _train(d, eps=-1.0)


@pytest.mark.parametrize("shape", [(0, 3, 5), (4, 3, 0), (4, 3, 2, 0), (0, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_zero_size_dims_are_value_errors(shape, data):
    d = data
    x = np.zeros(shape, F32)
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(ValueError):
            _train(d, x=x)
        with pytest.raises(ValueError):
            bnorm.batch_norm(x, d["rm"], d["rv"], training=False)
        with pytest.raises(ValueError):
            bnorm.batch_norm_backward_inference(x, x, d["rm"], d["rv"])


def test_zero_channels_is_value_error():
    x = np.zeros((4, 0, 5), F32)
    with pytest.raises(ValueError):
        bnorm.batch_norm(x, None, None, training=True)


@pytest.mark.parametrize("shape", [(5,), ()], ids=["rank1", "rank0"])
def test_rank_below_2_is_value_error(shape, data):
    d = data
    x = np.ones(shape, F32)
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(ValueError, match="x"):
            bnorm.batch_norm(x, d["rm"], d["rv"], training=True)
        with pytest.raises(ValueError, match="x"):
            bnorm.batch_norm(x, d["rm"], d["rv"], training=False)
        with pytest.raises(ValueError, match="x"):
            bnorm.batch_norm_backward(x, x, d["rm"], d["rv"])


def test_backward_shape_mismatches(data):
    d = data
    _, sm, si = bnorm.batch_norm_training(d["x"])
    with pytest.raises(ValueError, match="dy"):
        bnorm.batch_norm_backward(d["x"], d["dy"][:, :, :4], sm, si)
    with pytest.raises(ValueError, match="dy"):
        bnorm.batch_norm_backward(d["x"], d["dy"][None], sm, si)
    with pytest.raises(ValueError, match="save_mean"):
        bnorm.batch_norm_backward(d["x"], d["dy"], sm[:2], si)
    with pytest.raises(ValueError, match="save_invstd"):
        bnorm.batch_norm_backward(d["x"], d["dy"], sm, np.ones(4, F32))
    with pytest.raises(ValueError, match="save_mean"):
        bnorm.batch_norm_backward(d["x"], d["dy"], None, si)
    with pytest.raises(ValueError, match="weight"):
        bnorm.batch_norm_backward(d["x"], d["dy"], sm, si, np.ones(2, F32))
    with pytest.raises(ValueError, match="dy"):
        bnorm.batch_norm_backward_inference(d["x"], d["dy"][:2], d["rm"], d["rv"])
    with pytest.raises(ValueError, match="running_mean"):
        bnorm.batch_norm_backward_inference(d["x"], d["dy"], None, d["rv"])
    with pytest.raises(ValueError, match="running_var"):
        bnorm.batch_norm_backward_inference(d["x"], d["dy"], d["rm"], np.ones(5, F32))


def test_inference_requires_running_stats(data):
    d = data
    with pytest.raises(ValueError, match="running_mean"):
        bnorm.batch_norm(d["x"], None, None, training=False)
    with unchanged(d["rm"]):
        with pytest.raises(ValueError, match="running_mean"):
            bnorm.batch_norm(d["x"], d["rm"], None, training=False)


# ---- scalar values --------------------------------------------------------------------

BAD_EPS = [-1e-5, -1.0, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("eps", BAD_EPS, ids=str)
def test_bad_eps_is_value_error_everywhere(eps, data):
    d = data
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(ValueError, match="eps"):
            _train(d, eps=eps)
        with pytest.raises(ValueError, match="eps"):
            _train_fn(d, eps=eps)
        with pytest.raises(ValueError, match="eps"):
            bnorm.batch_norm(d["x"], d["rm"], d["rv"], training=False, eps=eps)
        with pytest.raises(ValueError, match="eps"):
            bnorm.batch_norm_backward_inference(d["x"], d["dy"], d["rm"], d["rv"], eps=eps)


def test_eps_zero_is_allowed(data):
    d = data
    y = bnorm.batch_norm(d["x"], None, None, training=True, eps=0.0)
    x64 = d["x"].astype(np.float64)
    ref = (x64 - x64.mean(axis=(0, 2), keepdims=True)) / x64.std(axis=(0, 2), keepdims=True)
    assert np.max(np.abs(y - ref)) < 1e-5


BAD_MOMENTUM = [-0.1, -1.0, 1.0000001, 2.0, math.nan, math.inf, -math.inf]  # -1: C sentinel


@pytest.mark.parametrize("momentum", BAD_MOMENTUM, ids=str)
def test_bad_momentum_is_value_error_when_training(momentum, data):
    d = data
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(ValueError, match="momentum"):
            _train(d, momentum=momentum)
        with pytest.raises(ValueError, match="momentum"):
            _train_fn(d, momentum=momentum)


@pytest.mark.parametrize("value", ["0.1", None, True, [0.1]], ids=repr)
def test_non_number_scalars_are_type_errors(value, data):
    d = data
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(TypeError):
            _train(d, eps=value)
        with pytest.raises(TypeError):
            _train_fn(d, momentum=value)


def test_bad_running_var_estimator_is_value_error(data):
    d = data
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(ValueError, match="running_var_estimator"):
            _train(d, running_var_estimator="population")
        with pytest.raises(ValueError, match="running_var_estimator"):
            _train_fn(d, running_var_estimator="")
    with pytest.raises(ValueError, match="running_var_estimator"):
        bnorm.BatchNorm1d(3, running_var_estimator="sample")


# ---- one value per channel ------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1), (1, 3, 1, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_one_value_per_channel_when_training(shape, data):
    d = data
    x = np.ones(shape, F32)
    with unchanged(d["rm"], d["rv"]):
        with pytest.raises(ValueError, match=M1_PHRASE):
            _train(d, x=x)
        with pytest.raises(ValueError, match=M1_PHRASE):
            _train_fn(d, x=x)
        with pytest.raises(ValueError, match=M1_PHRASE):
            bnorm.batch_norm(x, None, None, training=True)
    # Inference with a single value per channel is fine (as in torch).
    y = bnorm.batch_norm(x, d["rm"], d["rv"], training=False)
    assert y.shape == shape and np.all(np.isfinite(y))


@pytest.mark.parametrize("cls,shape", [(bnorm.BatchNorm1d, (1, 3)), (bnorm.BatchNorm1d, (1, 3, 1)),
                                       (bnorm.BatchNorm2d, (1, 3, 1, 1)),
                                       (bnorm.BatchNorm3d, (1, 3, 1, 1, 1))],
                         ids=["1d-NC", "1d-NCL", "2d", "3d"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_module_one_value_per_channel(cls, shape, momentum, rng):
    bn = cls(3, momentum=momentum)
    bn(rng.normal(size=(4,) + shape[1:]).astype(F32))  # one good step first
    bn.weight[...] = [1.0, 2.0, 3.0]
    x = np.ones(shape, F32)
    with unchanged(bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.weight, bn.bias):
        with pytest.raises(ValueError, match=M1_PHRASE):
            bn(x)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    assert bn(x).shape == shape  # running statistics: fine
    nostats = cls(3, track_running_stats=False).eval()  # batch statistics even in eval
    with pytest.raises(ValueError, match=M1_PHRASE):
        nostats(x)


# ---- modules --------------------------------------------------------------------------

@pytest.mark.parametrize("cls,bad_shapes", [
    (bnorm.BatchNorm1d, [(4, 3, 2, 2), (3,), (2, 3, 2, 2, 2)]),
    (bnorm.BatchNorm2d, [(4, 3), (4, 3, 5), (2, 3, 2, 2, 2), (3,)]),
    (bnorm.BatchNorm3d, [(4, 3), (4, 3, 5), (2, 3, 2, 2)]),
], ids=["1d", "2d", "3d"])
def test_module_wrong_rank_is_value_error(cls, bad_shapes):
    bn = cls(3, momentum=None)
    for shape in bad_shapes:
        x = np.ones(shape, F32)
        for mode in (True, False):
            bn.train(mode)
            with unchanged(bn.running_mean, bn.running_var, bn.num_batches_tracked):
                with pytest.raises(ValueError):
                    bn(x)


@pytest.mark.parametrize("channels", [2, 4, 1])
def test_module_channel_mismatch_is_value_error(channels, rng):
    for affine in (True, False):
        bn = bnorm.BatchNorm2d(3, affine=affine)
        x = rng.normal(size=(2, channels, 3, 3)).astype(F32)
        for mode in (True, False):
            bn.train(mode)
            with unchanged(bn.running_mean, bn.running_var, bn.num_batches_tracked):
                with pytest.raises(ValueError, match="channels|num_features"):
                    bn(x)


def test_module_backward_before_forward_is_runtime_error():
    for bn in (bnorm.BatchNorm1d(3), bnorm.BatchNorm2d(3).eval(),
               bnorm.BatchNorm3d(3, affine=False)):
        with pytest.raises(RuntimeError):
            bn.backward(np.ones((2, 3) + (2,) * (bn._ranks[-1] - 2), F32))


def test_module_backward_wrong_dy_shape(rng):
    bn = bnorm.BatchNorm2d(3)
    bn(rng.normal(size=(2, 3, 4, 4)).astype(F32))
    with pytest.raises(ValueError, match="dy"):
        bn.backward(np.ones((2, 3, 4, 5), F32))


def test_module_failed_forward_keeps_the_previous_one_for_backward(rng):
    bn = bnorm.BatchNorm1d(3, dtype=np.float64)
    x = rng.normal(size=(5, 3))
    dy = rng.normal(size=(5, 3))
    bn(x)
    dx = bn.backward(dy)
    with pytest.raises(ValueError):
        bn(np.ones((1, 3)))
    assert np.array_equal(bn.backward(dy), dx)


@pytest.mark.parametrize("buffer", ["running_mean", "running_var"])
def test_non_writable_running_buffer_is_value_error(buffer, data):
    d = data
    kw = dict(running_mean=d["rm"], running_var=d["rv"])
    ro = kw[buffer].copy()
    ro.flags.writeable = False
    kw[buffer] = ro
    with unchanged(d["rm"], d["rv"], ro):
        with pytest.raises(ValueError, match=buffer):
            bnorm.batch_norm(d["x"], training=True, **kw)
        with pytest.raises(ValueError, match=buffer):
            bnorm.batch_norm_training(d["x"], **kw)
    # read-only statistics are fine for inference (nothing is written)
    y = bnorm.batch_norm(d["x"], training=False, **kw)
    assert y.shape == d["x"].shape


@pytest.mark.parametrize("buffer", ["running_mean", "running_var"])
def test_non_contiguous_running_buffer_is_value_error(buffer, data):
    d = data
    kw = dict(running_mean=d["rm"], running_var=d["rv"])
    backing = np.ones(6, F32)
    strided = backing[::2]
    kw[buffer] = strided
    with unchanged(d["rm"], d["rv"], backing):
        with pytest.raises(ValueError, match=buffer):
            bnorm.batch_norm(d["x"], training=True, **kw)
    rev = np.ones(3, F32)[::-1]
    kw[buffer] = rev
    with unchanged(d["rm"], d["rv"], rev):
        with pytest.raises(ValueError, match=buffer):
            bnorm.batch_norm(d["x"], training=True, **kw)


def test_module_constructor_validation():
    with pytest.raises(ValueError):
        bnorm.BatchNorm2d(0)
    with pytest.raises(ValueError):
        bnorm.BatchNorm2d(-3)
    with pytest.raises(TypeError):
        bnorm.BatchNorm2d(2.5)
    with pytest.raises(TypeError):
        bnorm.BatchNorm2d(True)
    with pytest.raises(TypeError):
        bnorm.BatchNorm2d(3, dtype=np.int32)
    with pytest.raises(TypeError):
        bnorm.BatchNorm2d(3, dtype=np.float16)
    for eps in (-1e-5, math.nan):
        with pytest.raises(ValueError, match="eps"):
            bnorm.BatchNorm2d(3, eps=eps)
    for momentum in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="momentum"):
            bnorm.BatchNorm2d(3, momentum=momentum)
    assert bnorm.BatchNorm2d(np.int64(3)).num_features == 3


def test_module_infinite_eps_fails_without_side_effects(rng):
    """eps=inf is rejected, at construction or at the first forward."""
    with pytest.raises(ValueError, match="eps"):
        bn = bnorm.BatchNorm2d(3, eps=math.inf)
        x = rng.normal(size=(2, 3, 2, 2)).astype(F32)
        with unchanged(bn.running_mean, bn.running_var, bn.num_batches_tracked):
            bn(x)


# ---- load_state_dict ------------------------------------------------------------------

def _trained(rng, **kw):
    bn = bnorm.BatchNorm2d(3, **kw)
    for _ in range(2):
        bn(rng.normal(size=(2, 3, 3, 3)).astype(F32))
    return bn


def _all_state(bn):
    return [a for a in (bn.weight, bn.bias, bn.running_mean, bn.running_var,
                        bn.num_batches_tracked) if a is not None]


@pytest.mark.parametrize("missing", ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"])
def test_load_state_dict_missing_key(missing, rng):
    bn = _trained(rng)
    src = {k: np.array(v) + 1 for k, v in bn.state_dict().items()}
    del src[missing]
    with unchanged(*_all_state(bn)):
        with pytest.raises(KeyError, match=missing):
            bn.load_state_dict(src)


def test_load_state_dict_unexpected_key(rng):
    bn = _trained(rng, affine=False)
    src = {k: np.array(v) + 1 for k, v in bnorm.BatchNorm2d(3).state_dict().items()}
    with unchanged(*_all_state(bn)):
        with pytest.raises(KeyError, match="weight"):
            bn.load_state_dict(src)
    bn.load_state_dict(src, strict=False)  # ignored when not strict
    assert np.array_equal(bn.running_var, [2.0, 2.0, 2.0])


@pytest.mark.parametrize("key,bad", [("weight", np.ones(4)), ("bias", np.ones((3, 1))),
                                     ("running_mean", np.ones(2)), ("running_var", np.ones(())),
                                     ("num_batches_tracked", np.ones(1, np.int64))])
def test_load_state_dict_wrong_shape(key, bad, rng):
    bn = _trained(rng)
    src = {k: np.array(v) + 1 for k, v in bn.state_dict().items()}
    src[key] = bad
    with unchanged(*_all_state(bn)):  # nothing half-loaded
        with pytest.raises(ValueError, match=key):
            bn.load_state_dict(src)
        with pytest.raises(ValueError, match=key):
            bn.load_state_dict(src, strict=False)


# ---- found in review: numpy scalars, the estimator in eval, alignment -----------------

def test_numpy_scalars_are_accepted_for_eps_and_momentum():
    x = np.random.default_rng(0).normal(size=(4, 3, 5)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = bnorm.batch_norm(x, rm, rv, training=True, momentum=np.float32(0.5), eps=np.float64(1e-5))
    want = bnorm.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True,
                            momentum=0.5, eps=1e-5)
    np.testing.assert_array_equal(y, want)
    bn = bnorm.BatchNorm1d(3, eps=np.float32(1e-3), momentum=np.float64(0.2))
    assert bn.eps == pytest.approx(1e-3)
    with pytest.raises(TypeError, match="momentum"):
        bnorm.batch_norm(x, rm, rv, training=True, momentum=np.bool_(True))


def test_running_var_estimator_is_checked_in_eval_too():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="running_var_estimator"):
        bnorm.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=False,
                         running_var_estimator="sometimes")


def _unaligned(a):
    """A copy of `a` whose data start one byte past an aligned address."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(raw[1:].data, dtype=a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_inputs_are_copied_and_give_the_same_result(dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4, 3, 2)).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    w = rng.normal(size=4).astype(dtype)
    y, sm, si = bnorm.batch_norm_training(x, w)
    y_u, sm_u, si_u = bnorm.batch_norm_training(_unaligned(x), _unaligned(w))
    np.testing.assert_array_equal(y, y_u)
    dx, dw, db = bnorm.batch_norm_backward(x, dy, sm, si, w)
    dx_u, dw_u, db_u = bnorm.batch_norm_backward(_unaligned(x), _unaligned(dy), _unaligned(sm),
                                                 _unaligned(si), _unaligned(w))
    np.testing.assert_array_equal(dx, dx_u)
    np.testing.assert_array_equal(dw, dw_u)


def test_unaligned_running_buffer_is_refused_unchanged():
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    rm = _unaligned(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="aligned"):
        bnorm.batch_norm(x, rm, np.ones(3, np.float32), training=True)
    np.testing.assert_array_equal(rm, np.zeros(3, np.float32))
