"""The Python modules' state is never weaker than the C API's (issue 9, defect 7).

load_state_dict converts and checks every value before it writes any, and a failure
leaves the module exactly as it was (values and array identities). num_batches_tracked
is an int64 count in [0, INT64_MAX] that is never wrapped: counting a batch at INT64_MAX
is refused (as the C API's check_update does), and the cumulative average never divides
by zero. Attributes assigned after construction (weight, bias, running stats, the
counter, eps, momentum, training) are checked on assignment as the constructor and the
C API check them; the configuration fixed at construction cannot be reassigned.
"""
import math

import numpy as np
import pytest

import bnorm

F32 = np.float32
INT64_MAX = np.iinfo(np.int64).max
ARRAYS = ["weight", "bias", "running_mean", "running_var"]
STATE = ARRAYS + ["num_batches_tracked"]


def _module(rng, cls=bnorm.BatchNorm1d, steps=2, **kw):
    bn = cls(3, **kw)
    for _ in range(steps):
        bn(rng.normal(size=(4, 3) + (2,) * (bn._ranks[0] - 2)).astype(bn.dtype))
    if bn.affine:
        bn.weight[...] = rng.uniform(0.5, 2, 3)
        bn.bias[...] = rng.normal(size=3)
    return bn


def _x(rng, bn, n=4):
    return rng.normal(size=(n, 3) + (2,) * (bn._ranks[0] - 2)).astype(bn.dtype)


def _snapshot(bn):
    """Everything a failing call must leave alone: array objects, their bytes, settings."""
    arrays = {name: getattr(bn, name) for name in STATE}
    return (arrays, {n: None if a is None else (a.dtype, a.shape, a.tobytes())
                     for n, a in arrays.items()},
            (bn.eps, bn.momentum, bn.training))


def _assert_unchanged(bn, snap):
    arrays, contents, settings = snap
    for name, array in arrays.items():
        assert getattr(bn, name) is array, f"{name} was replaced"
        if array is not None:
            assert (array.dtype, array.shape, array.tobytes()) == contents[name], \
                f"{name} was modified by a failing call"
    assert (bn.eps, bn.momentum, bn.training) == settings


def _source(bn, **changes):
    """A state dict for bn: its values + 1 (so a partial load would show), with changes."""
    src = {k: np.array(v) + 1 for k, v in bn.state_dict().items()}
    src.update(changes)
    return src


# ---- load_state_dict: all or nothing ---------------------------------------------------

BAD_VALUES = [
    # (key, value, exception, what the message names)
    ("running_var", np.array(["a", "b", "c"]), TypeError, "running_var"),
    ("running_var", np.array([1.0, None, 2.0], dtype=object), TypeError, "running_var"),
    ("running_var", [1.0, 2.0, None], TypeError, "running_var"),
    ("running_var", np.array([1 + 1j, 2, 3]), TypeError, "running_var"),
    ("running_var", np.array([True, False, True]), TypeError, "running_var"),
    ("running_mean", np.array([1.0, 1e300, 2.0]), ValueError, "running_mean"),
    ("bias", np.ones(4, F32), ValueError, "bias"),
    ("running_var", "abc", TypeError, "running_var"),
    ("num_batches_tracked", -5, ValueError, "num_batches_tracked"),
    ("num_batches_tracked", np.int64(-1), ValueError, "num_batches_tracked"),
    ("num_batches_tracked", 3.7, TypeError, "num_batches_tracked"),
    ("num_batches_tracked", 1e30, TypeError, "num_batches_tracked"),
    ("num_batches_tracked", np.array(3.0), TypeError, "num_batches_tracked"),
    ("num_batches_tracked", True, TypeError, "num_batches_tracked"),
    ("num_batches_tracked", np.bool_(False), TypeError, "num_batches_tracked"),
    ("num_batches_tracked", np.array(True), TypeError, "num_batches_tracked"),
    ("num_batches_tracked", "3", TypeError, "num_batches_tracked"),
    ("num_batches_tracked", None, TypeError, "num_batches_tracked"),
    ("num_batches_tracked", 2 ** 63, ValueError, "num_batches_tracked"),
    ("num_batches_tracked", 2 ** 80, ValueError, "num_batches_tracked"),
    ("num_batches_tracked", np.uint64(2 ** 63), ValueError, "num_batches_tracked"),
    ("num_batches_tracked", np.array([4], np.int64), ValueError, "num_batches_tracked"),
]


@pytest.mark.parametrize("key,value,exc,named", BAD_VALUES,
                         ids=[f"{k}={v!r}"[:40] for k, v, _, _ in BAD_VALUES])
@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_bad_value_changes_nothing(key, value, exc, named, strict, rng):
    bn = _module(rng)
    src = _source(bn, **{key: value})
    snap = _snapshot(bn)
    with pytest.raises(exc, match=named):
        bn.load_state_dict(src, strict=strict)
    _assert_unchanged(bn, snap)


def test_load_state_dict_read_only_target_changes_nothing(rng):
    bn = _module(rng)
    bn.running_var.flags.writeable = False  # made read-only behind the module's back
    snap = _snapshot(bn)
    with pytest.raises(ValueError, match="running_var"):
        bn.load_state_dict(_source(bn))
    _assert_unchanged(bn, snap)


def test_load_state_dict_not_a_mapping(rng):
    bn = _module(rng)
    snap = _snapshot(bn)
    with pytest.raises(TypeError, match="state_dict"):
        bn.load_state_dict(list(_source(bn).items()))
    _assert_unchanged(bn, snap)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_state_dict_copies_into_the_modules_own_arrays(dtype, rng):
    bn = _module(rng, dtype=dtype)
    before = bn.state_dict()
    src = {"weight": [2.0, 3.0, 4.0],                       # a list
           "bias": np.arange(3, dtype=np.int32),            # integers convert exactly
           "running_mean": np.array([0.5, -1.0, np.nan]),   # NaN: accepted, as in C / torch
           "running_var": np.array([1, 2, 3], np.float16),
           "num_batches_tracked": np.int32(7)}
    result = bn.load_state_dict(src)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for name, array in before.items():
        assert getattr(bn, name) is array, name       # same objects, values copied in
        assert array.dtype == (np.int64 if name == "num_batches_tracked" else dtype)
    np.testing.assert_array_equal(bn.weight, [2, 3, 4])
    np.testing.assert_array_equal(bn.bias, [0, 1, 2])
    np.testing.assert_array_equal(bn.running_mean, [0.5, -1.0, np.nan])
    np.testing.assert_array_equal(bn.running_var, [1, 2, 3])
    assert int(bn.num_batches_tracked) == 7
    src["running_var"][...] = 9  # the module holds copies, not the source's arrays
    np.testing.assert_array_equal(bn.running_var, [1, 2, 3])
    again = {k: np.array(v) for k, v in bn.state_dict().items()}
    bn.load_state_dict(bn.state_dict())  # its own arrays: a no-op
    for name, array in bn.state_dict().items():
        np.testing.assert_array_equal(array, again[name], err_msg=name)


def test_load_state_dict_counter_bounds_are_the_c_apis(rng):
    """[0, INT64_MAX]: what bnorm::BatchNorm::set_num_batches_tracked and the trainer's
    checkpoint restore accept (and what a module can count up to)."""
    bn = _module(rng)
    for count in (0, INT64_MAX, np.uint64(INT64_MAX), np.array(12, np.int16)):
        bn.load_state_dict(_source(bn, num_batches_tracked=count))
        assert int(bn.num_batches_tracked) == int(count)
        assert bn.num_batches_tracked.dtype == np.int64


def test_load_state_dict_strict_false_reports_keys_like_torch(rng):
    torch = pytest.importorskip("torch")
    src = {k: torch.from_numpy(np.asarray(np.array(v) + 1))
           for k, v in _module(rng).state_dict().items()}
    src["extra"] = torch.zeros(1)
    del src["bias"]
    bn = bnorm.BatchNorm1d(3)
    tm = torch.nn.BatchNorm1d(3)
    got = bn.load_state_dict(src, strict=False)
    want = tm.load_state_dict(src, strict=False)
    assert got.missing_keys == want.missing_keys == ["bias"]
    assert got.unexpected_keys == want.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(bn.bias, [0, 0, 0])  # the missing key is left alone
    for key in ("weight", "running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_array_equal(getattr(bn, key), getattr(tm, key).detach().numpy(),
                                      err_msg=key)


# ---- num_batches_tracked: never wrapped, never a division by zero -----------------------

@pytest.mark.parametrize("momentum", [0.1, None])
def test_counting_past_int64_max_is_refused_unchanged(momentum, rng):
    bn = _module(rng, momentum=momentum)
    bn.load_state_dict(_source(bn, num_batches_tracked=INT64_MAX - 1))
    bn(_x(rng, bn))  # the last batch it can count
    assert int(bn.num_batches_tracked) == INT64_MAX
    snap = _snapshot(bn)
    with pytest.raises(ValueError, match="INT64_MAX"):
        bn(_x(rng, bn))
    _assert_unchanged(bn, snap)
    bn.eval()
    assert bn(_x(rng, bn)).shape == (4, 3)  # eval reads no count


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("bad", [-1, -5, np.iinfo(np.int64).min])
def test_negative_count_written_in_place_is_refused_at_forward(momentum, bad, rng):
    """The C API checks the count at every call; so does the module (ZeroDivisionError
    at -1 with momentum=None before)."""
    bn = _module(rng, momentum=momentum)
    bn.num_batches_tracked[...] = bad  # behind the setter's back
    snap = _snapshot(bn)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        bn(_x(rng, bn))
    _assert_unchanged(bn, snap)


def test_cumulative_average_after_a_loaded_count(rng):
    """momentum=None moves by 1 / (count + 1): after loading count 3, by 1/4."""
    bn = bnorm.BatchNorm1d(3, momentum=None, dtype=np.float64)
    bn.load_state_dict({"weight": np.ones(3), "bias": np.zeros(3),
                        "running_mean": np.full(3, 2.0), "running_var": np.ones(3),
                        "num_batches_tracked": 3})
    x = _x(rng, bn, n=8)
    bn(x)
    np.testing.assert_allclose(bn.running_mean, 0.75 * 2.0 + 0.25 * x.mean(axis=0), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 4


def test_counter_setter_checks_and_keeps_the_array(rng):
    bn = _module(rng)
    counter = bn.num_batches_tracked
    bn.num_batches_tracked = 7
    assert bn.num_batches_tracked is counter and int(counter) == 7
    assert bn.state_dict()["num_batches_tracked"] is counter
    for bad, exc in [(-1, ValueError), (3.7, TypeError), (1e30, TypeError), (True, TypeError),
                     (2 ** 63, ValueError), (None, TypeError), ("7", TypeError)]:
        snap = _snapshot(bn)
        with pytest.raises(exc, match="num_batches_tracked"):
            bn.num_batches_tracked = bad
        _assert_unchanged(bn, snap)


# ---- attributes assigned after construction --------------------------------------------

@pytest.mark.parametrize("value,exc", [(1.5, ValueError), (-0.1, ValueError),
                                       (-1.0, ValueError), (math.nan, ValueError),
                                       (math.inf, ValueError), ("0.1", TypeError),
                                       (True, TypeError), (np.bool_(True), TypeError),
                                       ([0.1], TypeError)])
def test_momentum_assignment_is_checked(value, exc, rng):
    bn = _module(rng)
    snap = _snapshot(bn)
    with pytest.raises(exc, match="momentum"):
        bn.momentum = value
    _assert_unchanged(bn, snap)


def test_momentum_assignment_good_values(rng):
    bn = _module(rng)
    for value in (None, 0, 1, np.float32(0.5), 0.25):
        bn.momentum = value
        assert bn.momentum == (None if value is None else float(value))
        assert bn.momentum is None or type(bn.momentum) is float


@pytest.mark.parametrize("value,exc", [(-1e-5, ValueError), (math.nan, ValueError),
                                       (math.inf, ValueError), ("1e-5", TypeError),
                                       (None, TypeError), (True, TypeError)])
def test_eps_assignment_is_checked(value, exc, rng):
    bn = _module(rng)
    snap = _snapshot(bn)
    with pytest.raises(exc, match="eps"):
        bn.eps = value
    _assert_unchanged(bn, snap)


@pytest.mark.parametrize("mode", ["eval", "", 0, 1, None, [False]])
def test_train_mode_must_be_a_bool(mode, rng):
    bn = _module(rng)
    for start in (True, False):
        bn.train(start)
        snap = _snapshot(bn)
        with pytest.raises(TypeError, match="mode"):
            bn.train(mode)
        with pytest.raises(TypeError, match="training"):
            bn.training = mode
        _assert_unchanged(bn, snap)
    assert bn.train(np.bool_(False)) is bn and bn.training is False
    assert bn.train(np.bool_(True)).training is True


@pytest.mark.parametrize("flag", ["affine", "track_running_stats"])
@pytest.mark.parametrize("value", ["False", 0, None])
def test_constructor_flags_must_be_bools(flag, value):
    with pytest.raises(TypeError, match=flag):
        bnorm.BatchNorm2d(3, **{flag: value})
    assert getattr(bnorm.BatchNorm2d(3, **{flag: np.bool_(False)}), flag) is False


@pytest.mark.parametrize("name,value", [("num_features", 4), ("dtype", np.float64),
                                        ("affine", False), ("track_running_stats", False),
                                        ("running_var_estimator", "biased")])
def test_construction_settings_are_read_only(name, value, rng):
    bn = _module(rng)
    before = getattr(bn, name)
    with pytest.raises(AttributeError):
        setattr(bn, name, value)
    assert getattr(bn, name) == before


def _unaligned_f32(n):
    raw = np.zeros(n * 4 + 1, np.uint8)
    out = np.frombuffer(raw[1:].data, dtype=F32)
    assert not out.flags.aligned
    return out


def _read_only(n):
    a = np.ones(n, F32)
    a.flags.writeable = False
    return a


BAD_ARRAYS = [
    ("float64", lambda bn: np.ones(3), TypeError),
    ("big-endian", lambda bn: np.ones(3, ">f4"), TypeError),
    ("list", lambda bn: [1.0, 1.0, 1.0], TypeError),
    ("None", lambda bn: None, TypeError),
    ("4 values", lambda bn: np.ones(4, F32), ValueError),
    ("(3, 1)", lambda bn: np.ones((3, 1), F32), ValueError),
    ("strided view", lambda bn: np.ones(6, F32)[::2], ValueError),
    ("reversed view", lambda bn: np.ones(3, F32)[::-1], ValueError),
    ("read-only", lambda bn: _read_only(3), ValueError),
    ("unaligned", lambda bn: _unaligned_f32(3), ValueError),
]


@pytest.mark.parametrize("what,make,exc", BAD_ARRAYS, ids=[b[0] for b in BAD_ARRAYS])
@pytest.mark.parametrize("name", ARRAYS)
def test_array_assignment_is_checked(name, what, make, exc, rng):
    bn = _module(rng)
    snap = _snapshot(bn)
    with pytest.raises(exc, match=name):
        setattr(bn, name, make(bn))
    _assert_unchanged(bn, snap)


@pytest.mark.parametrize("name", ARRAYS)
def test_array_assignment_sharing_another_buffer_is_refused(name, rng):
    bn = _module(rng)
    for other in ARRAYS:
        if other == name:
            continue
        snap = _snapshot(bn)
        with pytest.raises(ValueError, match=f"{name}.*{other}"):
            setattr(bn, name, getattr(bn, other))
        _assert_unchanged(bn, snap)
    bn2 = _module(rng)
    setattr(bn2, name, getattr(bn2, name))  # itself: fine


def test_good_array_assignment_is_used_in_place(rng):
    bn = _module(rng)
    backing = np.zeros(8, F32)
    rm = backing[2:5]  # a contiguous, writable view: used as it is
    bn.running_mean = rm
    assert bn.running_mean is rm and bn.state_dict()["running_mean"] is rm
    x = _x(rng, bn)
    bn(x)
    np.testing.assert_allclose(backing[2:5], 0.1 * x.mean(axis=0), rtol=1e-5)


def test_missing_parameters_and_buffers_stay_missing(rng):
    bn = bnorm.BatchNorm1d(3, affine=False, track_running_stats=False)
    for name in STATE:
        with pytest.raises(ValueError, match=name):
            setattr(bn, name, np.ones(3, F32) if name != "num_batches_tracked" else 1)
        setattr(bn, name, None)  # None: fine
        assert getattr(bn, name) is None


def test_reset_with_a_read_only_buffer_changes_nothing(rng):
    bn = _module(rng)
    bn.running_var.flags.writeable = False
    for reset in (bn.reset_running_stats, bn.reset_parameters):
        snap = _snapshot(bn)
        with pytest.raises(ValueError, match="running_var"):
            reset()
        _assert_unchanged(bn, snap)
    bn = _module(rng)
    bn.bias.flags.writeable = False  # reset_parameters resets the running stats first
    snap = _snapshot(bn)
    with pytest.raises(ValueError, match="bias"):
        bn.reset_parameters()
    _assert_unchanged(bn, snap)


# ---- the functional API's flags --------------------------------------------------------

@pytest.mark.parametrize("value", ["no", 1, None])
def test_functional_training_flag_must_be_a_bool(value, rng):
    x = rng.normal(size=(4, 3)).astype(F32)
    rm, rv = np.zeros(3, F32), np.ones(3, F32)
    for fn in (bnorm.batch_norm, bnorm.batch_norm_relu):
        with pytest.raises(TypeError, match="training"):
            fn(x, rm, rv, training=value)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)
    with pytest.raises(TypeError, match="return_mask"):
        bnorm.batch_norm_relu(x, rm, rv, training=True, return_mask=1)
    y, sm, si = bnorm.batch_norm_training(x)
    with pytest.raises(TypeError, match="need_dx"):
        bnorm.batch_norm_backward(x, x, sm, si, need_dx=2)


# ---- the binding's counter argument (private, but it casts memory to int64_t*) ----------

@pytest.mark.parametrize("counter,exc", [
    (np.zeros((), np.float64), TypeError), (np.zeros((), np.int32), TypeError),
    (np.zeros((), np.uint64), TypeError), (np.zeros(1, np.int64), ValueError),
    (np.zeros((1, 1), np.int64), ValueError), (0, TypeError), ("read-only", ValueError)])
def test_binding_counter_must_be_a_writable_0d_int64_array(counter, exc, rng):
    if isinstance(counter, str):
        counter = np.zeros((), np.int64)
        counter.flags.writeable = False
    x = rng.normal(size=(4, 3)).astype(F32)
    rm, rv = np.zeros(3, F32), np.ones(3, F32)
    before = np.array(counter, copy=True)
    with pytest.raises(exc, match="num_batches_tracked"):
        bnorm._bnorm.forward_training(x, None, None, rm, rv, None, 1e-5, "unbiased",
                                      num_batches_tracked=counter)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)
    np.testing.assert_array_equal(np.asarray(counter), before)
    good = np.zeros((), np.int64)
    bnorm._bnorm.forward_training(x, None, None, rm, rv, None, 1e-5, "unbiased",
                                  num_batches_tracked=good)
    assert int(good) == 1
    np.testing.assert_allclose(rm, x.mean(axis=0), rtol=1e-6)  # factor 1 / (0 + 1)
