"""The Python modules run the C++ module (bnorm::BatchNorm<T>) over their own arrays.

What the delegation must keep: settings assigned after construction reach the C++
module, arrays changed behind the module's back are checked at the next call (never
misread or written when read-only), and copies and pickles are independent modules.
"""
import copy
import pickle

import numpy as np
import pytest

import bnorm

F32 = np.float32


def _x(rng, n=6, c=3, dtype=F32):
    return rng.normal(2.0, 3.0, size=(n, c, 4)).astype(dtype)


def test_assigned_eps_and_momentum_are_used(rng):
    bn = bnorm.BatchNorm1d(3, dtype=np.float64)
    x = _x(rng, dtype=np.float64)
    bn.momentum = 0.5
    bn(x)
    np.testing.assert_allclose(bn.running_mean, 0.5 * x.mean(axis=(0, 2)), rtol=1e-12)
    bn.momentum = None  # the cumulative average from here: factor 1 / (1 + 1)
    before = bn.running_mean.copy()
    bn(2 * x)
    np.testing.assert_allclose(bn.running_mean, 0.5 * before + 0.5 * 2 * x.mean(axis=(0, 2)),
                               rtol=1e-12)
    bn.eval()
    bn.eps = 0.25
    want = bnorm.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=0.25)
    np.testing.assert_array_equal(bn(x), want)
    dx, _, _ = bnorm.batch_norm_backward_inference(x, x, bn.running_mean, bn.running_var,
                                                   bn.weight, eps=0.25)
    np.testing.assert_array_equal(bn.backward(x), dx)


def test_training_attribute_is_the_mode(rng):
    bn = bnorm.BatchNorm1d(3)
    x = _x(rng)
    bn.training = False
    assert not bn.training
    bn(x)
    assert int(bn.num_batches_tracked) == 0  # eval: nothing counted
    bn.training = True
    bn(x)
    assert int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("name", ["running_mean", "running_var", "num_batches_tracked"])
def test_buffer_made_read_only_behind_the_back(name, rng):
    """A training forward refuses a read-only running buffer, changing nothing; eval
    only reads it."""
    bn = bnorm.BatchNorm1d(3)
    x = _x(rng)
    bn(x)
    getattr(bn, name).flags.writeable = False
    before = {k: np.array(v, copy=True) for k, v in bn.state_dict().items()}
    with pytest.raises(ValueError, match=name):
        bn(x)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    bn.eval()
    assert bn(x).shape == x.shape


def test_array_reshaped_in_place_is_refused(rng):
    bn = bnorm.BatchNorm1d(3)
    bn.running_var.shape = (3, 1)  # numpy allows it; the module must not misread it
    for mode in (True, False):
        bn.train(mode)
        with pytest.raises(ValueError, match="running_var"):
            bn(_x(rng))


def test_failed_assignment_keeps_the_held_array(rng):
    bn = bnorm.BatchNorm1d(3)
    held = bn.running_mean
    with pytest.raises(ValueError, match="running_mean"):
        bn.running_mean = np.zeros(4, F32)
    bn(_x(rng))
    assert bn.running_mean is held and np.any(held != 0)


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_copies_are_independent_modules(how, rng):
    bn = bnorm.BatchNorm2d(3, momentum=None, eps=1e-3, running_var_estimator="biased",
                           dtype=np.float64)
    x = rng.normal(size=(4, 3, 2, 2))
    bn(x)
    bn.backward(x)
    bn.eval()
    other = {"copy": copy.copy, "deepcopy": copy.deepcopy,
             "pickle": lambda m: pickle.loads(pickle.dumps(m))}[how](bn)
    assert type(other) is type(bn)
    assert (other.num_features, other.eps, other.momentum, other.affine,
            other.track_running_stats, other.running_var_estimator, other.dtype,
            other.training) == (3, 1e-3, None, True, True, "biased", np.float64, False)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=k)
        assert (other.state_dict()[k] is v) == (how == "copy"), k
    np.testing.assert_array_equal(other.grad_weight, bn.grad_weight)
    np.testing.assert_array_equal(other(x), bn(x))
    other.train()  # the mode is the copy's own
    assert not bn.training
    with pytest.raises(RuntimeError):  # no saved forward in a copy
        copy.deepcopy(bn).backward(x)
