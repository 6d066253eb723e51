"""bnorm.LayerNorm, GroupNorm, InstanceNorm1d/2d/3d against torch.nn's (float64 torch
modules as the oracle) step by step: forward, backward's grads, a parameter update, the
running statistics of InstanceNorm over several steps, eval; RMSNorm against a float64
formula. state_dict round trips with torch; the arrays are views of the C++ module's."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bnorm  # noqa: E402
from family_helpers import (  # noqa: E402
    close, formula_rms_norm_grads, grad_scales, in_layout, is_channels_last, numpy_rms_norm,
    params, random_input, rms_eps,
)

DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}


def _dt(dtype):
    return np.dtype(dtype).name


def _torch_step(tm, x, dy):
    xt = torch.from_numpy(np.array(x, np.float64)).requires_grad_(True)
    tm.zero_grad(set_to_none=True)
    y = tm(xt)
    y.backward(torch.from_numpy(np.array(dy, np.float64)))
    g = lambda p: None if p is None or p.grad is None else p.grad.numpy().copy()  # noqa: E731
    return y.detach().numpy().copy(), xt.grad.numpy().copy(), g(tm.weight), g(tm.bias)


def _randomize(m, tm, rng):
    """Same random parameters in both (torch's as float64)."""
    for name in ("weight", "bias"):
        ours = getattr(m, name)
        if ours is not None:
            ours[...] = params(rng, ours.shape, m.dtype)[name == "bias"]
            with torch.no_grad():
                getattr(tm, name).copy_(torch.from_numpy(ours.astype(np.float64)))


def _sgd(m, tm, lr=0.1):
    """One update from each side's own grads, so later steps test the updated state."""
    for name in ("weight", "bias"):
        ours, grad = getattr(m, name), getattr(m, "grad_" + name)
        if ours is not None:
            ours -= (lr * grad).astype(m.dtype)
            with torch.no_grad():
                getattr(tm, name).copy_(torch.from_numpy(ours.astype(np.float64)))


def _compare(m, tm, x, dy, reduce_axes, set_axes, eps, what):
    rtol = RTOL[np.dtype(m.dtype)]
    y = m(x)
    dx = m.backward(dy)
    ty, tdx, tgw, tgb = _torch_step(tm, x, dy)
    assert y.dtype == m.dtype and dx.dtype == m.dtype and y.shape == x.shape
    close(y, ty, rtol, what=f"{what}: y")
    s = grad_scales(x, dy, m.weight, reduce_axes, set_axes, eps)
    close(dx, tdx, rtol, scale=s["dx"], what=f"{what}: dx")
    if m.weight is None:
        assert m.grad_weight is None and m.grad_bias is None
    else:
        assert m.grad_weight.shape == m.weight.shape
        close(m.grad_weight, tgw, rtol, scale=s["dweight"], what=f"{what}: grad_weight")
        if m.bias is None:
            assert m.grad_bias is None
        else:
            close(m.grad_bias, tgb, rtol, scale=s["dbias"], what=f"{what}: grad_bias")
    return y, dx


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("shape,ns", [((7, 33), (33,)), ((2, 3, 4, 5), (4, 5)), ((17,), (17,))],
                         ids=["rows", "k2", "one-row"])
def test_layer_norm_module_steps(shape, ns, affine, dtype, rng):
    m = bnorm.LayerNorm(ns, eps=1e-4, elementwise_affine=affine, dtype=dtype)
    tm = torch.nn.LayerNorm(ns, eps=1e-4, elementwise_affine=affine).double()
    _randomize(m, tm, rng)
    k = len(ns)
    axes, lead = tuple(range(len(shape) - k, len(shape))), tuple(range(len(shape) - k))
    for step in range(3):
        x, dy = random_input(rng, shape, dtype), rng.normal(size=shape).astype(dtype)
        _compare(m, tm, x, dy, lead, axes, 1e-4, f"step {step}")
        _sgd(m, tm)
    m.eval()
    tm.eval()
    x, dy = random_input(rng, shape, dtype), rng.normal(size=shape).astype(dtype)
    _compare(m, tm, x, dy, lead, axes, 1e-4, "eval")


def test_layer_norm_without_bias(rng):
    """bias=False (PyTorch >= 2.1): torch 1.13 has no such flag, so its bias is held at 0."""
    m = bnorm.LayerNorm(16, bias=False, dtype=np.float64)
    tm = torch.nn.LayerNorm(16).double()
    _randomize(m, tm, rng)
    assert m.bias is None and list(m.state_dict()) == ["weight"]
    x, dy = random_input(rng, (5, 16), np.float64), rng.normal(size=(5, 16))
    _compare(m, tm, x, dy, (0,), (1,), 1e-5, "bias=False")
    assert m.grad_bias is None


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("groups,shape", [(1, (3, 6, 5, 4)), (3, (3, 6, 5, 4)), (6, (2, 6, 17)),
                                          (4, (2, 16, 3, 2, 3)), (2, (5, 4))],
                         ids=["G1", "G3", "GC", "3d", "NC"])
def test_group_norm_module_steps(groups, shape, affine, layout, dtype, rng):
    if layout == "cl" and len(shape) < 3:
        pytest.skip("an (N, C) array has one layout")
    c = shape[1]
    m = bnorm.GroupNorm(groups, c, eps=1e-4, affine=affine, dtype=dtype)
    tm = torch.nn.GroupNorm(groups, c, eps=1e-4, affine=affine).double()
    _randomize(m, tm, rng)
    n = shape[0]
    for step in range(3):
        x = in_layout(random_input(rng, shape, dtype), layout)
        dy = in_layout(rng.normal(size=shape).astype(dtype), layout)
        y, dx = _compare(m, tm, x.reshape(shape), dy, (0,) + tuple(range(2, len(shape))),
                         tuple(range(2, len(shape))), 1e-4, f"step {step}")
        if layout == "cl":
            assert is_channels_last(y) and is_channels_last(dx)
        # dx's scale from the groups' statistics
        s = grad_scales(x.reshape(n, groups, -1), dy.reshape(n, groups, -1), m.weight, (0,),
                        (2,), 1e-4)
        close(dx, _torch_step(tm, x, dy)[1], RTOL[np.dtype(dtype)], scale=s["dx"], what="dx")
        _sgd(m, tm)


INSTANCE = {1: (bnorm.InstanceNorm1d, torch.nn.InstanceNorm1d, (3, 4, 17)),
            2: (bnorm.InstanceNorm2d, torch.nn.InstanceNorm2d, (2, 5, 3, 4)),
            3: (bnorm.InstanceNorm3d, torch.nn.InstanceNorm3d, (2, 3, 2, 3, 4))}


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_instance_norm_module_train_then_eval(dim, affine, track, layout, dtype, rng):
    cls, tcls, shape = INSTANCE[dim]
    c = shape[1]
    rtol = RTOL[np.dtype(dtype)]
    m = cls(c, eps=1e-4, momentum=0.3, affine=affine, track_running_stats=track, dtype=dtype)
    tm = tcls(c, eps=1e-4, momentum=0.3, affine=affine, track_running_stats=track).double()
    _randomize(m, tm, rng)
    axes = tuple(range(2, len(shape)))
    for step in range(4):
        x = in_layout(random_input(rng, shape, dtype), layout)
        dy = in_layout(rng.normal(size=shape).astype(dtype), layout)
        _compare(m, tm, x, dy, (0,) + axes, axes, 1e-4, f"step {step}")
        if track:
            close(m.running_mean, tm.running_mean.numpy(), rtol, what="running_mean")
            close(m.running_var, tm.running_var.numpy(), rtol, what="running_var")
            assert int(m.num_batches_tracked) == int(tm.num_batches_tracked) == 0
        else:
            assert m.running_mean is None and m.running_var is None
        _sgd(m, tm)
    m.eval()
    tm.eval()
    for step in range(2):
        before = None if not track else (m.running_mean.copy(), m.running_var.copy())
        x = in_layout(random_input(rng, shape, dtype), layout)
        dy = in_layout(rng.normal(size=shape).astype(dtype), layout)
        # running statistics with track (statistics fixed in backward), else the input's
        y, dx = _compare(m, tm, x, dy, (0,) + axes, axes, 1e-4, f"eval {step}")
        if track:  # bnorm leaves them alone; torch 1.13 may move them one ulp
            assert np.array_equal(m.running_mean, before[0])
            assert np.array_equal(m.running_var, before[1])


def test_instance_norm_unbatched_input(rng):
    m = bnorm.InstanceNorm1d(4, affine=True, dtype=np.float64)
    tm = torch.nn.InstanceNorm1d(4, affine=True).double()
    _randomize(m, tm, rng)
    x, dy = random_input(rng, (4, 15), np.float64), rng.normal(size=(4, 15))
    _compare(m, tm, x, dy, (1,), (1,), 1e-5, "(C, L)")


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("eps", [None, 1e-3], ids=["epsNone", "eps1e-3"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
def test_rms_norm_module_steps(affine, eps, dtype, rng):
    rtol = RTOL[np.dtype(dtype)]
    m = bnorm.RMSNorm((3, 16), eps=eps, elementwise_affine=affine, dtype=dtype)
    assert m.eps == eps and m.bias is None
    assert list(m.state_dict()) == (["weight"] if affine else [])
    if affine:
        m.weight[...] = params(rng, (3, 16), dtype)[0]
    e = rms_eps(dtype, eps)
    for step in range(3):
        x, dy = random_input(rng, (5, 3, 16), dtype), rng.normal(size=(5, 3, 16)).astype(dtype)
        y = m(x)
        dx = m.backward(dy)
        y_ref, rstd = numpy_rms_norm(x, 2, m.weight, e)
        ref = formula_rms_norm_grads(x, dy, 2, m.weight, e)
        close(y, y_ref, rtol, what=f"step {step}: y")
        wmax = 1.0 if m.weight is None else np.abs(m.weight).max()
        close(dx, ref["dx"], rtol, scale=np.abs(dy).max() * wmax * rstd.max(), what="dx")
        if affine:
            assert m.grad_weight.shape == (3, 16)
            close(m.grad_weight, ref["dweight"], rtol, scale=np.abs(dy).sum(axis=0).max() * 3,
                  what="grad_weight")
            m.weight -= (0.1 * m.grad_weight).astype(dtype)
        else:
            assert m.grad_weight is None


# ---- state ------------------------------------------------------------------------------

def _pairs():
    return [
        ("LayerNorm", lambda: bnorm.LayerNorm((3, 5)), lambda: torch.nn.LayerNorm((3, 5)),
         (4, 3, 5)),
        ("GroupNorm", lambda: bnorm.GroupNorm(2, 6), lambda: torch.nn.GroupNorm(2, 6),
         (3, 6, 7)),
        ("InstanceNorm2d-affine-track",
         lambda: bnorm.InstanceNorm2d(3, affine=True, track_running_stats=True),
         lambda: torch.nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
         (2, 3, 4, 5)),
        ("InstanceNorm1d-track", lambda: bnorm.InstanceNorm1d(3, track_running_stats=True),
         lambda: torch.nn.InstanceNorm1d(3, track_running_stats=True), (2, 3, 9)),
        ("InstanceNorm3d-affine", lambda: bnorm.InstanceNorm3d(2, affine=True),
         lambda: torch.nn.InstanceNorm3d(2, affine=True), (2, 2, 3, 2, 3)),
    ]


@pytest.mark.parametrize("name,make,make_torch,shape", _pairs(), ids=[p[0] for p in _pairs()])
def test_state_dict_round_trip_with_torch(name, make, make_torch, shape, rng):
    m, tm = make(), make_torch()
    assert list(m.state_dict()) == list(tm.state_dict())
    for step in range(3):  # move the parameters and running statistics away from defaults
        m(random_input(rng, shape, np.float32))
        for key in ("weight", "bias"):
            if getattr(m, key) is not None:
                getattr(m, key)[...] = rng.normal(size=getattr(m, key).shape)
    # bnorm -> torch: same outputs in eval (running statistics where tracked)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()})
    m.eval()
    tm.eval()
    x = random_input(rng, shape, np.float32)
    close(m(x), tm(torch.from_numpy(x)).detach().numpy(), 1e-5, what="bnorm state in torch")
    # torch -> bnorm, into the same arrays
    with torch.no_grad():
        for v in tm.state_dict().values():
            if v.dtype.is_floating_point:
                v.add_(0.25)
    held = {k: v for k, v in m.state_dict().items()}
    m.load_state_dict(tm.state_dict())
    assert all(m.state_dict()[k] is v for k, v in held.items())
    close(m(x), tm(torch.from_numpy(x)).detach().numpy(), 1e-5, what="torch state in bnorm")


def test_arrays_are_views_of_the_cpp_module(rng):
    m = bnorm.GroupNorm(2, 4, dtype=np.float64)
    x = random_input(rng, (3, 4, 5), np.float64)
    w = m.weight
    assert w is m.weight and w.base is not None and w.flags.writeable
    y0 = m(x)
    w[...] = 2.0  # writing the view is writing the module's weight
    assert np.array_equal(m(x), 2 * y0)
    m.weight = np.full(4, 3.0)  # assignment copies into the same storage
    assert m.weight is w and np.allclose(m(x), 3 * y0, rtol=1e-14, atol=0)
    del m
    assert np.array_equal(w, np.full(4, 3.0))  # the view keeps the storage alive


def test_load_state_dict_is_all_or_nothing(rng):
    m = bnorm.InstanceNorm1d(3, affine=True, track_running_stats=True)
    m(random_input(rng, (2, 3, 5), np.float32))
    before = {k: np.array(v) for k, v in m.state_dict().items()}
    bad = {k: np.array(v) + 1 for k, v in m.state_dict().items()}
    bad["running_var"] = np.ones(4)
    with pytest.raises(ValueError, match="running_var"):
        m.load_state_dict(bad)
    bad["running_var"] = np.ones(3)
    bad["num_batches_tracked"] = 1.5
    with pytest.raises(TypeError, match="num_batches_tracked"):
        m.load_state_dict(bad)
    with pytest.raises(KeyError):
        m.load_state_dict({"weight": np.ones(3)})
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), k
    with pytest.raises(ValueError, match="bias"):
        m.bias = np.ones(2)
    with pytest.raises(ValueError, match="no weight"):
        bnorm.GroupNorm(1, 3, affine=False).weight = np.ones(3)
    assert np.array_equal(m.bias, before["bias"])


@pytest.mark.parametrize("make", [
    lambda: bnorm.LayerNorm((3, 4), dtype=np.float64),
    lambda: bnorm.RMSNorm(4, eps=1e-6),
    lambda: bnorm.GroupNorm(2, 6),
    lambda: bnorm.InstanceNorm2d(3, affine=True, track_running_stats=True, dtype=np.float64),
])
@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_copies_keep_settings_mode_and_state_in_storage_of_their_own(make, how):
    import copy
    import pickle
    m = make()
    rng = np.random.default_rng(5)
    shape = {"LayerNorm": (2, 3, 4), "RMSNorm": (5, 4), "GroupNorm": (2, 6, 3),
             "InstanceNorm2d": (2, 3, 4, 5)}[type(m).__name__]
    x = rng.standard_normal(shape).astype(m.dtype) + 2
    m(x)  # moves InstanceNorm's running statistics
    m.weight[...] = rng.standard_normal(m.weight.shape)
    m.eval()
    c = {"copy": copy.copy, "deepcopy": copy.deepcopy,
         "pickle": lambda v: pickle.loads(pickle.dumps(v))}[how](m)
    assert type(c) is type(m) and c.dtype == m.dtype and repr(c) == repr(m)
    assert not c.training
    for name, value in m.state_dict().items():
        np.testing.assert_array_equal(c.state_dict()[name], value)
    np.testing.assert_array_equal(c(x), m(x))
    c.weight[...] = 0  # the copy's storage is its own
    assert np.all(m.weight != 0)
    assert not np.array_equal(c(x), m(x))
    # The last forward's input is not copied: a copy's backward needs its own forward.
    with pytest.raises(RuntimeError, match="before forward"):
        copy.deepcopy(m).backward(np.ones(shape, m.dtype))


@pytest.mark.parametrize("name,make,make_torch,shape", _pairs(), ids=[p[0] for p in _pairs()])
def test_setting_eps_and_momentum_acts_as_in_torch_and_copies_carry_it(name, make, make_torch,
                                                                       shape, rng):
    """eps (and InstanceNorm's momentum) set after construction are what the next forward
    uses, as setting torch's attributes; copies carry the new values; a bad value is an
    error naming it that changes nothing."""
    import copy
    import pickle
    m, tm = make(), make_torch().double()
    m.eps, tm.eps = 0.25, 0.25
    if hasattr(m, "momentum"):
        m.momentum, tm.momentum = 0.7, 0.7
    x = rng.standard_normal(shape) * 0.3 + 1
    for _ in range(2):  # InstanceNorm: the running statistics move by the new momentum
        y = m(x.astype(m.dtype))
        want = tm(torch.from_numpy(np.array(x, np.float64))).detach().numpy()
        close(y, want, 1e-5, what=name)
    for name_, value in tm.state_dict().items():
        if name_ in m.state_dict():
            close(m.state_dict()[name_], value.numpy(), 1e-5, what=name_)
    for c in (copy.copy(m), copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert c.eps == 0.25 and getattr(c, "momentum", 0.7) == 0.7
    for bad, error in ((0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                       ("1e-5", TypeError)):
        with pytest.raises(error, match="eps"):
            m.eps = bad
        assert m.eps == 0.25
    if hasattr(m, "momentum"):
        with pytest.raises(ValueError, match="momentum"):
            m.momentum = 1.5
        assert m.momentum == 0.7


def test_rms_norm_eps_none_is_the_machine_epsilon_again():
    m = bnorm.RMSNorm(6, eps=1e-3, dtype=np.float64)
    x = np.linspace(-1e-9, 1e-9, 12).reshape(2, 6)  # mean(x^2) far below 1e-3
    small = m(x)
    m.eps = None
    assert m.eps is None
    np.testing.assert_allclose(m(x), numpy_rms_norm(x, 1, None, np.finfo(np.float64).eps)[0],
                               rtol=1e-12)
    assert np.abs(m(x)).max() > 100 * np.abs(small).max()
