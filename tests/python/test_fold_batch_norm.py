"""bnorm.fold_batch_norm: batch norm folded into the conv / linear layer before it.

Judged in float64 against the formula, against PyTorch's own fusion helpers
(torch.nn.utils.fusion), and by what folding is for: conv'(x) equals bn(conv(x)) in eval
mode. Errors name the argument: TypeError for dtypes, ValueError for shapes and values.
"""
import numpy as np
import pytest

import bnorm

torch = pytest.importorskip("torch")
from torch.nn.utils import fusion  # noqa: E402


def reference(weight, bias, mean, var, gamma, beta, eps):
    c = weight.shape[0]
    f64 = lambda a, default: np.full(c, default) if a is None else a.astype(np.float64)  # noqa: E731
    s = f64(gamma, 1.0) / np.sqrt(var.astype(np.float64) + eps)
    w = weight.astype(np.float64) * s.reshape((c,) + (1,) * (weight.ndim - 1))
    return w, (f64(bias, 0.0) - mean) * s + f64(beta, 0.0)


def params(rng, shape, dtype, with_bias=True, affine=True):
    c = shape[0]
    p = dict(weight=rng.standard_normal(shape).astype(dtype),
             bias=rng.standard_normal(c).astype(dtype) if with_bias else None,
             mean=rng.standard_normal(c).astype(dtype),
             var=(rng.random(c) * 3 + 0.01).astype(dtype),
             gamma=rng.standard_normal(c).astype(dtype) if affine else None,
             beta=rng.standard_normal(c).astype(dtype) if affine else None)
    return p


SHAPES = [(6, 1, 5, 5), (16, 6, 3, 3), (7, 3, 1, 1), (120, 400), (10, 84), (1, 1), (5,)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias,affine", [(True, True), (False, True), (True, False), (False, False)])
def test_matches_the_float64_formula(shape, dtype, with_bias, affine):
    rng = np.random.default_rng(hash((shape, with_bias, affine)) % 2**32)
    p = params(rng, shape, dtype, with_bias, affine)
    w, b = bnorm.fold_batch_norm(p["weight"], p["bias"], p["mean"], p["var"], p["gamma"],
                                 p["beta"], 1e-5)
    rw, rb = reference(p["weight"], p["bias"], p["mean"], p["var"], p["gamma"], p["beta"], 1e-5)
    assert w.dtype == dtype and b.dtype == dtype and w.shape == shape and b.shape == (shape[0],)
    # Computed in double and rounded once: within half an ulp of the float64 value.
    tol = 1e-15 if dtype == np.float64 else 2.0**-24
    np.testing.assert_allclose(w, rw, rtol=tol, atol=0)
    np.testing.assert_allclose(b, rb, rtol=tol, atol=1e-300)


def test_matches_pytorch_fusion_helpers():
    rng = np.random.default_rng(0)
    for shape, fuse in [((8, 3, 3, 3), "conv"), ((12, 20), "linear")]:
        p = params(rng, shape, np.float64)
        t = {k: torch.from_numpy(v) for k, v in p.items()}
        if fuse == "conv":
            tw, tb = fusion.fuse_conv_bn_weights(t["weight"], t["bias"], t["mean"], t["var"],
                                                 1e-5, t["gamma"], t["beta"])
        else:
            tw, tb = fusion.fuse_linear_bn_weights(t["weight"], t["bias"], t["mean"], t["var"],
                                                   1e-5, t["gamma"], t["beta"])
        w, b = bnorm.fold_batch_norm(p["weight"], p["bias"], p["mean"], p["var"], p["gamma"],
                                     p["beta"], 1e-5)
        np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-14)
        np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_folded_conv_computes_conv_then_batch_norm(dtype, tol):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).to(dtype)
    bn = torch.nn.BatchNorm2d(8).to(dtype)
    with torch.no_grad():
        bn.running_mean.normal_(0, 2)
        bn.running_var.uniform_(0.1, 4)
        bn.weight.normal_()
        bn.bias.normal_()
    bn.eval()
    x = torch.randn(4, 3, 9, 7, dtype=dtype)
    w, b = bnorm.fold_batch_norm(conv.weight.detach().numpy(), conv.bias.detach().numpy(),
                                 bn.running_mean.numpy(), bn.running_var.numpy(),
                                 bn.weight.detach().numpy(), bn.bias.detach().numpy(), bn.eps)
    with torch.no_grad():
        want = bn(conv(x))
        got = torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=1)
    assert (got - want).abs().max().item() <= tol * want.abs().max().item()


def test_any_memory_order_and_inputs_untouched():
    rng = np.random.default_rng(3)
    p = params(rng, (9, 6), np.float32)
    weight_t = np.ascontiguousarray(p["weight"].T).T  # Fortran order, same values
    before = {k: v.copy() for k, v in p.items()}
    w1, b1 = bnorm.fold_batch_norm(weight_t, p["bias"], p["mean"], p["var"], p["gamma"], p["beta"])
    w2, b2 = bnorm.fold_batch_norm(p["weight"], p["bias"], p["mean"], p["var"], p["gamma"], p["beta"])
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(b1, b2)
    for k, v in p.items():
        np.testing.assert_array_equal(v, before[k])


def good():
    return params(np.random.default_rng(5), (4, 3), np.float32)


@pytest.mark.parametrize("change,error,words", [
    (dict(weight=np.ones((4, 3), np.int32)), TypeError, "weight must be float32 or float64"),
    (dict(bias=np.ones(4)), TypeError, "bias must be float32 like weight"),
    (dict(gamma=[1, 2, 3, 4]), TypeError, "gamma must be float32"),
    (dict(mean=np.ones(3, np.float32)), ValueError, "running_mean must have shape (4,)"),
    (dict(var=np.ones((4, 1), np.float32)), ValueError, "running_var must have shape (4,)"),
    (dict(beta=np.ones(5, np.float32)), ValueError, "beta must have shape (4,)"),
    (dict(mean=None), ValueError, "running_mean is required"),
    (dict(var=-np.ones(4, np.float32)), ValueError, "running_var[0] + eps must be > 0"),
    (dict(weight=np.float32(1.0)), ValueError, "weight must have at least 1 dim"),
    (dict(eps=-1.0), ValueError, "eps"),
    (dict(eps=float("nan")), ValueError, "eps"),
])
def test_bad_input_names_the_argument(change, error, words):
    p = {**good(), "eps": 1e-5, **change}
    with pytest.raises(error) as e:
        bnorm.fold_batch_norm(p["weight"], p["bias"], p["mean"], p["var"], p["gamma"], p["beta"],
                              p["eps"])
    assert words in str(e.value)


def test_nan_statistic_shows_in_its_own_channel():
    # Not an error (the C++ front-end's choice: a NaN statistic is data, and folding keeps
    # it visible): channel 1 comes out NaN, the others exact.
    p = good()
    p["var"][1] = np.nan
    w, b = bnorm.fold_batch_norm(p["weight"], p["bias"], p["mean"], p["var"], p["gamma"], p["beta"])
    assert np.isnan(w[1]).all() and np.isnan(b[1])
    assert np.isfinite(np.delete(w, 1, axis=0)).all() and np.isfinite(np.delete(b, 1)).all()
