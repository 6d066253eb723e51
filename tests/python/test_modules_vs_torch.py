"""bnorm.BatchNorm1d/2d/3d vs torch.nn.BatchNorm1d/2d/3d (float64 torch modules as oracle)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bnorm  # noqa: E402
from bn_helpers import (  # noqa: E402
    DTYPES, assert_close, batch_stats64, dweight_scale, dx_scale, reduce_axes, rtol_for,
)

# (bnorm class, torch class, input shape)
KINDS = {
    "1d-NC": (bnorm.BatchNorm1d, torch.nn.BatchNorm1d, (6, 3)),
    "1d-NCL": (bnorm.BatchNorm1d, torch.nn.BatchNorm1d, (3, 4, 5)),
    "2d": (bnorm.BatchNorm2d, torch.nn.BatchNorm2d, (3, 5, 4, 3)),
    "3d": (bnorm.BatchNorm3d, torch.nn.BatchNorm3d, (2, 3, 3, 2, 5)),
}
MOMENTA = [0.1, None, 0.5]


def _make(kind, dtype, rng, **kwargs):
    bcls, tcls, shape = KINDS[kind]
    c = shape[1]
    bn = bcls(c, dtype=dtype, **kwargs)
    tm = tcls(c, **kwargs).double()
    if bn.affine:
        w = (rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)).astype(dtype)
        b = rng.normal(size=c).astype(dtype)
        bn.weight[...] = w
        bn.bias[...] = b
        with torch.no_grad():
            tm.weight.copy_(torch.from_numpy(w.astype(np.float64)))
            tm.bias.copy_(torch.from_numpy(b.astype(np.float64)))
    return bn, tm, shape


def _torch_step(tm, x, dy):
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    tm.zero_grad(set_to_none=True)
    y = tm(xt)
    y.backward(torch.from_numpy(dy.astype(np.float64)))
    gw = None if tm.weight is None else tm.weight.grad.numpy().copy()
    gb = None if tm.bias is None else tm.bias.grad.numpy().copy()
    return y.detach().numpy().copy(), xt.grad.numpy().copy(), gw, gb


def _input(rng, shape, dtype, step):
    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    x = rng.normal(size=shape) * rng.uniform(0.5, 2.0, bshape) + rng.normal(step, 1.0, bshape)
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("momentum", MOMENTA, ids=lambda m: f"mom{m}")
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_module_train_then_eval_matches_torch(kind, affine, track, momentum, dtype, rng):
    rtol = rtol_for(dtype)
    bn, tm, shape = _make(kind, dtype, rng, eps=1e-4, momentum=momentum, affine=affine,
                          track_running_stats=track)
    axes = reduce_axes(len(shape))
    assert bn.training and tm.training
    for step in range(5):
        x = _input(rng, shape, dtype, step)
        dy = rng.normal(size=shape).astype(dtype)
        y = bn(x)
        dx = bn.backward(dy)
        ty, tdx, tgw, tgb = _torch_step(tm, x, dy)
        invstd = 1 / np.sqrt(batch_stats64(x)[1] + 1e-4)
        assert y.dtype == dtype and dx.dtype == dtype
        assert_close(y, ty, rtol, what=f"y step {step}")
        assert_close(dx, tdx, rtol, scale=dx_scale(dy, bn.weight, invstd), what=f"dx step {step}")
        if affine:
            assert_close(bn.grad_weight, tgw, rtol, scale=dweight_scale(dy, x, axes),
                         what="grad_weight")
            assert_close(bn.grad_bias, tgb, rtol, scale=np.abs(dy).sum(axis=axes).max(),
                         what="grad_bias")
        if track:
            assert int(bn.num_batches_tracked) == int(tm.num_batches_tracked) == step + 1
            assert_close(bn.running_mean, tm.running_mean.numpy(), rtol, what="running_mean")
            assert_close(bn.running_var, tm.running_var.numpy(), rtol, what="running_var")
        else:
            assert bn.running_mean is None and bn.running_var is None
            assert bn.num_batches_tracked is None

    assert bn.eval() is bn
    tm.eval()
    assert not bn.training
    state = None if not track else (bn.running_mean.copy(), bn.running_var.copy(),
                                    bn.num_batches_tracked.copy())
    x = _input(rng, shape, dtype, 7)
    dy = rng.normal(size=shape).astype(dtype)
    y = bn(x)
    dx = bn.backward(dy)
    ty, tdx, tgw, tgb = _torch_step(tm, x, dy)
    assert_close(y, ty, rtol, what="eval y")
    if track:  # eval uses the running statistics and leaves them alone
        assert_close(dx, tdx, rtol, what="eval dx")
        assert np.array_equal(bn.running_mean, state[0])
        assert np.array_equal(bn.running_var, state[1])
        assert bn.num_batches_tracked == state[2]
    else:  # no running statistics: batch statistics in eval too (torch's behaviour)
        invstd = 1 / np.sqrt(batch_stats64(x)[1] + 1e-4)
        assert_close(dx, tdx, rtol, scale=dx_scale(dy, bn.weight, invstd), what="eval dx")
    if affine:
        assert_close(bn.grad_weight, tgw, rtol, scale=dweight_scale(dy, x, axes),
                     what="eval grad_weight")
        assert_close(bn.grad_bias, tgb, rtol, scale=np.abs(dy).sum(axis=axes).max(),
                     what="eval grad_bias")
    # Back to training: the statistics move again.
    assert bn.train() is bn and bn.training
    if track:
        bn(x)
        assert int(bn.num_batches_tracked) == 6


@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_affine_false_grads_are_none(mode, track, rng):
    """With affine=False there is no weight or bias, so grad_weight / grad_bias are None."""
    bn = bnorm.BatchNorm2d(3, affine=False, track_running_stats=track)
    assert bn.weight is None and bn.bias is None
    bn.train(mode == "train")
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    bn(x)
    dx = bn.backward(np.ones_like(x))
    assert isinstance(dx, np.ndarray) and dx.shape == x.shape
    assert bn.grad_weight is None, repr(bn.grad_weight)
    assert bn.grad_bias is None, repr(bn.grad_bias)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cumulative_average_momentum_none(dtype, rng):
    """momentum=None: the running stats are the plain average of the batch statistics."""
    bn = bnorm.BatchNorm1d(4, momentum=None, dtype=dtype)
    means, vars_u = [], []
    for step in range(5):
        x = rng.normal(step, 1 + step, size=(9, 4)).astype(dtype)
        bn(x)
        mean, _, var_u = batch_stats64(x)
        means.append(mean)
        vars_u.append(var_u)
        # The initial (0, 1) buffers have weight 0 once the first batch is seen.
        assert_close(bn.running_mean, np.mean(means, axis=0), rtol_for(dtype))
        assert_close(bn.running_var, np.mean(vars_u, axis=0), rtol_for(dtype))
    assert int(bn.num_batches_tracked) == 5


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
def test_state_dict_keys_match_torch(kind, affine, track, rng):
    bn, tm, _ = _make(kind, np.float32, rng, affine=affine, track_running_stats=track)
    sd = bn.state_dict()
    assert list(sd.keys()) == list(tm.state_dict().keys())
    for key, value in sd.items():
        assert isinstance(value, np.ndarray)
        assert value.shape == tuple(tm.state_dict()[key].shape), key
    if track:
        assert sd["num_batches_tracked"].dtype == np.int64
        assert sd["num_batches_tracked"].shape == ()


def test_fresh_module_matches_torch_defaults():
    bn = bnorm.BatchNorm2d(5)
    tm = torch.nn.BatchNorm2d(5)
    assert bn.eps == tm.eps and bn.momentum == tm.momentum
    assert bn.affine and bn.track_running_stats and bn.training
    for key, value in tm.state_dict().items():
        assert np.array_equal(bn.state_dict()[key], value.numpy()), key
    assert bn.weight.dtype == np.float32


def _train_torch(tm, shape, rng, steps=4):
    for step in range(steps):
        x = torch.from_numpy(rng.normal(step, 2.0, size=shape).astype(np.float32))
        tm(x)
    with torch.no_grad():
        if tm.affine:
            tm.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2, tm.num_features).astype(np.float32)))
            tm.bias.copy_(torch.from_numpy(rng.normal(size=tm.num_features).astype(np.float32)))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
def test_load_torch_state_dict_into_bnorm(kind, affine, rng):
    bcls, tcls, shape = KINDS[kind]
    tm = tcls(shape[1], affine=affine)
    _train_torch(tm, shape, rng)
    tm.eval()
    bn = bcls(shape[1], affine=affine)
    bn.load_state_dict(tm.state_dict())  # torch tensors
    for key, value in tm.state_dict().items():
        got = getattr(bn, key)
        assert got.dtype == value.numpy().dtype, key
        assert np.array_equal(got, value.numpy()), key
    assert int(bn.num_batches_tracked) == 4
    bn.eval()
    x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
    with torch.no_grad():
        ty = tm.double()(torch.from_numpy(x.astype(np.float64))).numpy()
    assert_close(bn(x), ty, 1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
def test_load_bnorm_state_dict_into_torch(kind, affine, rng):
    bcls, tcls, shape = KINDS[kind]
    bn = bcls(shape[1], affine=affine)
    for step in range(4):
        bn(rng.normal(step, 2.0, size=shape).astype(np.float32))
    if affine:
        bn.weight[...] = rng.uniform(0.5, 2, shape[1])
        bn.bias[...] = rng.normal(size=shape[1])
    tm = tcls(shape[1], affine=affine)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in bn.state_dict().items()})
    for key, value in tm.state_dict().items():
        assert np.array_equal(getattr(bn, key), value.numpy()), key
    assert int(tm.num_batches_tracked) == 4
    tm.eval()
    bn.eval()
    x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
    y = bn(x)
    with torch.no_grad():
        ty = tm.double()(torch.from_numpy(x.astype(np.float64))).numpy()
    assert_close(y, ty, 1e-5)
    # Round trip: bnorm -> torch -> a fresh bnorm gives bitwise the same eval output.
    bn2 = bcls(shape[1], affine=affine)
    bn2.load_state_dict(tm.float().state_dict())
    bn2.eval()
    assert np.array_equal(bn2(x), y)


def test_state_dict_values_are_the_module_arrays(rng):
    """Documented: state_dict() holds the module's own arrays, not copies."""
    bn = bnorm.BatchNorm2d(3)
    sd = bn.state_dict()
    sd["running_mean"][...] = 7.0
    assert np.all(bn.running_mean == 7.0)
    assert sd["weight"] is bn.weight


def test_load_state_dict_copies_values(rng):
    """Loading copies into the existing arrays: the source can change afterwards."""
    bn = bnorm.BatchNorm2d(3)
    rm_before = bn.running_mean
    src = {k: np.array(v) for k, v in bnorm.BatchNorm2d(3).state_dict().items()}
    src["running_mean"][...] = [1.0, 2.0, 3.0]
    src["num_batches_tracked"][...] = 11
    bn.load_state_dict(src)
    assert bn.running_mean is rm_before
    src["running_mean"][...] = 0.0
    assert np.array_equal(bn.running_mean, [1.0, 2.0, 3.0])
    assert int(bn.num_batches_tracked) == 11


def test_load_state_dict_non_strict_missing_keys(rng):
    bn = bnorm.BatchNorm1d(2)
    bn.load_state_dict({"running_mean": np.array([1.0, -1.0])}, strict=False)
    assert np.array_equal(bn.running_mean, [1.0, -1.0])
    assert np.array_equal(bn.running_var, [1.0, 1.0])
    assert np.array_equal(bn.weight, [1.0, 1.0])


def test_load_state_dict_float64_into_float32_module(rng):
    tm = torch.nn.BatchNorm1d(3).double()
    _train_torch(tm.float(), (5, 3), rng)
    sd64 = {k: (v.double() if v.is_floating_point() else v) for k, v in tm.state_dict().items()}
    bn = bnorm.BatchNorm1d(3)
    bn.load_state_dict(sd64)
    assert bn.running_mean.dtype == np.float32
    assert np.array_equal(bn.running_mean, sd64["running_mean"].numpy().astype(np.float32))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_reset_running_stats_and_parameters_like_torch(momentum, rng):
    bn = bnorm.BatchNorm2d(3, momentum=momentum)
    tm = torch.nn.BatchNorm2d(3, momentum=momentum)
    for step in range(3):
        x = rng.normal(step, 2.0, size=(2, 3, 3, 3)).astype(np.float32)
        bn(x)
        tm(torch.from_numpy(x))
    bn.weight[...] = 3.0
    with torch.no_grad():
        tm.weight.fill_(3.0)
    bn.reset_running_stats()
    tm.reset_running_stats()
    for key, value in tm.state_dict().items():
        assert np.array_equal(getattr(bn, key), value.numpy()), key
    assert np.all(bn.weight == 3.0)
    bn.reset_parameters()
    tm.reset_parameters()
    for key, value in tm.state_dict().items():
        assert np.array_equal(getattr(bn, key), value.numpy()), key
    # With momentum=None the cumulative average restarts from the next batch.
    x = rng.normal(5.0, 1.0, size=(2, 3, 3, 3)).astype(np.float32)
    bn(x)
    tm(torch.from_numpy(x))
    assert_close(bn.running_mean, tm.running_mean.numpy(), 1e-5)
    assert_close(bn.running_var, tm.running_var.numpy(), 1e-5)


def test_backward_uses_last_forward(rng):
    x1 = rng.normal(size=(4, 3))
    bn64 = bnorm.BatchNorm1d(3, dtype=np.float64)
    x2 = rng.normal(2.0, 3.0, size=(6, 3))
    bn64(x1)
    bn64(x2)
    dy = rng.normal(size=(6, 3))
    dx = bn64.backward(dy)
    tm = torch.nn.BatchNorm1d(3).double()
    _, tdx, tgw, tgb = _torch_step(tm, x2, dy)
    assert_close(dx, tdx, 1e-10, scale=dx_scale(dy, None, 1 / np.sqrt(batch_stats64(x2)[1])))
    assert_close(bn64.grad_weight, tgw, 1e-10, scale=dweight_scale(dy, x2, (0,)))
    assert_close(bn64.grad_bias, tgb, 1e-10, scale=np.abs(dy).sum(0).max())
    # backward twice gives the same result (nothing is consumed)
    assert np.array_equal(bn64.backward(dy), dx)
