"""Other frameworks' running-statistics conventions, reproduced with bnorm's options.

ONNX BatchNormalization (opset 15, training_mode=1), written from the spec:
    current_mean = ReduceMean(X, all axes but the channel axis)
    current_var  = ReduceVar(X, same axes)            # population (biased) variance
    Y = (X - current_mean) / sqrt(current_var + epsilon) * scale + B
    running_mean = input_mean * momentum + current_mean * (1 - momentum)
    running_var  = input_var  * momentum + current_var  * (1 - momentum)
with momentum (a keep factor) 0.9 and epsilon 1e-5 by default. In bnorm terms that is
momentum = 1 - momentum_onnx and running_var_estimator="biased".
d2l's from-scratch batch_norm (keep factor 0.9, biased variance, eps 1e-5) is the same
rule; Keras 3 BatchNormalization (keep factor 0.99, biased variance via ops.moments,
epsilon 1e-3, channels-last axis=-1) is momentum = 0.01 here.
"""
import numpy as np
import pytest

import bnorm
from bn_helpers import DTYPES, assert_close, channels_last, rtol_for, shape_id


def _bshape(ndim, c):
    return (1, c) + (1,) * (ndim - 2)


def onnx_batchnorm_training(X, scale, B, input_mean, input_var, epsilon=1e-5, momentum=0.9):
    """ONNX BatchNormalization with training_mode=1, in float64 numpy."""
    X = np.asarray(X, np.float64)
    axes = (0,) + tuple(range(2, X.ndim))
    bs = _bshape(X.ndim, X.shape[1])
    current_mean = X.mean(axis=axes)
    current_var = ((X - current_mean.reshape(bs)) ** 2).mean(axis=axes)
    Y = ((X - current_mean.reshape(bs)) / np.sqrt(current_var.reshape(bs) + epsilon)
         * np.asarray(scale, np.float64).reshape(bs) + np.asarray(B, np.float64).reshape(bs))
    running_mean = np.asarray(input_mean, np.float64) * momentum + current_mean * (1 - momentum)
    running_var = np.asarray(input_var, np.float64) * momentum + current_var * (1 - momentum)
    return Y, running_mean, running_var


def onnx_batchnorm_inference(X, scale, B, input_mean, input_var, epsilon=1e-5):
    X = np.asarray(X, np.float64)
    bs = _bshape(X.ndim, X.shape[1])
    f = lambda a: np.asarray(a, np.float64).reshape(bs)  # noqa: E731
    return (X - f(input_mean)) / np.sqrt(f(input_var) + epsilon) * f(scale) + f(B)


ONNX_SHAPES = [(8, 3), (4, 5, 7), (2, 3, 5, 4), (3, 2, 2, 3, 5), (2, 16, 3, 3), (17, 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("momentum_onnx", [0.9, 0.99, 0.5])
@pytest.mark.parametrize("shape", ONNX_SHAPES, ids=shape_id)
def test_onnx_training_mode(shape, momentum_onnx, dtype, rng):
    rtol = rtol_for(dtype)
    c = shape[1]
    scale = rng.uniform(0.5, 2.0, c).astype(dtype)
    B = rng.normal(size=c).astype(dtype)
    running_mean = rng.normal(size=c).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    ref_mean, ref_var = running_mean.astype(np.float64), running_var.astype(np.float64)
    for step in range(4):
        X = (rng.normal(size=shape) * (1 + step) + step).astype(dtype)
        Y_ref, ref_mean, ref_var = onnx_batchnorm_training(X, scale, B, ref_mean, ref_var,
                                                           1e-5, momentum_onnx)
        Y = bnorm.batch_norm(X, running_mean, running_var, scale, B, training=True,
                             momentum=1 - momentum_onnx, eps=1e-5,
                             running_var_estimator="biased")
        assert_close(Y, Y_ref, rtol, what=f"Y step {step}")
        assert_close(running_mean, ref_mean, rtol, what=f"running_mean step {step}")
        assert_close(running_var, ref_var, rtol, what=f"running_var step {step}")
    # ONNX inference mode (training_mode=0) uses the stored statistics.
    X = rng.normal(size=shape).astype(dtype)
    assert_close(bnorm.batch_norm(X, running_mean, running_var, scale, B),
                 onnx_batchnorm_inference(X, scale, B, running_mean, running_var), rtol)


def test_onnx_differs_from_default_unbiased_update(rng):
    """Guard: with the default estimator the running_var is NOT the ONNX one (m is small)."""
    X = rng.normal(size=(3, 4, 2))
    rm, rv = np.zeros(4), np.ones(4)
    bnorm.batch_norm(X, rm, rv, training=True, momentum=0.1)
    _, _, onnx_var = onnx_batchnorm_training(X, np.ones(4), np.zeros(4), np.zeros(4), np.ones(4))
    assert np.max(np.abs(rv - onnx_var)) > 1e-3


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_onnx_module_form(dtype, rng):
    """The module with momentum=0.1, running_var_estimator="biased" follows ONNX too."""
    bn = bnorm.BatchNorm2d(4, momentum=0.1, running_var_estimator="biased", dtype=dtype)
    ref_mean, ref_var = np.zeros(4), np.ones(4)
    for step in range(5):
        X = rng.normal(step, 1.0 + step, size=(3, 4, 3, 2)).astype(dtype)
        Y_ref, ref_mean, ref_var = onnx_batchnorm_training(X, bn.weight, bn.bias, ref_mean,
                                                           ref_var)
        assert_close(bn(X), Y_ref, rtol_for(dtype))
        assert_close(bn.running_mean, ref_mean, rtol_for(dtype))
        assert_close(bn.running_var, ref_var, rtol_for(dtype))
    bn.eval()
    X = rng.normal(size=(3, 4, 3, 2)).astype(dtype)
    assert_close(bn(X), onnx_batchnorm_inference(X, bn.weight, bn.bias, ref_mean, ref_var),
                 rtol_for(dtype))


# ---- d2l --------------------------------------------------------------------------------

def d2l_batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """d2l's from-scratch batch norm (2D or 4D X), in float64 numpy; momentum is kept."""
    X = np.asarray(X, np.float64)
    shape = (1, -1) if X.ndim == 2 else (1, -1, 1, 1)
    axes = (0,) if X.ndim == 2 else (0, 2, 3)
    if not training:
        X_hat = (X - moving_mean.reshape(shape)) / np.sqrt(moving_var.reshape(shape) + eps)
    else:
        mean = X.mean(axis=axes, keepdims=True)
        var = ((X - mean) ** 2).mean(axis=axes, keepdims=True)
        X_hat = (X - mean) / np.sqrt(var + eps)
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean.reshape(-1)
        moving_var = momentum * moving_var + (1.0 - momentum) * var.reshape(-1)
    Y = gamma.reshape(shape) * X_hat + beta.reshape(shape)
    return Y, moving_mean, moving_var


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,cls", [((16, 5), bnorm.BatchNorm1d),
                                       ((4, 6, 5, 5), bnorm.BatchNorm2d)], ids=["fc", "conv"])
def test_d2l_batch_norm(shape, cls, dtype, rng):
    c = shape[1]
    # d2l initialises gamma = 1, beta = 0, moving_mean = 0, moving_var = 1 (as here)
    bn = cls(c, eps=1e-5, momentum=0.1, running_var_estimator="biased", dtype=dtype)
    gamma, beta = np.ones(c), np.zeros(c)
    mm, mv = np.zeros(c), np.ones(c)
    for step in range(5):
        X = rng.normal(0.5 * step, 1.0 + step, size=shape).astype(dtype)
        Y_ref, mm, mv = d2l_batch_norm(X, gamma, beta, mm, mv, 1e-5, 0.9, True)
        assert_close(bn(X), Y_ref, rtol_for(dtype))
        assert_close(bn.running_mean, mm, rtol_for(dtype))
        assert_close(bn.running_var, mv, rtol_for(dtype))
    bn.eval()
    X = rng.normal(size=shape).astype(dtype)
    Y_ref, _, _ = d2l_batch_norm(X, gamma, beta, mm, mv, 1e-5, 0.9, False)
    assert_close(bn(X), Y_ref, rtol_for(dtype))


# ---- Keras 3 ----------------------------------------------------------------------------

def keras3_batch_norm_train(x_nhwc, gamma, beta, moving_mean, moving_variance, momentum=0.99,
                            epsilon=1e-3):
    """Keras 3 BatchNormalization(axis=-1) training call, float64 numpy, channels-last x."""
    x = np.asarray(x_nhwc, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    variance = ((x - mean) ** 2).mean(axis=axes)  # ops.moments: biased
    moving_mean = moving_mean * momentum + mean * (1 - momentum)
    moving_variance = moving_variance * momentum + variance * (1 - momentum)
    y = (x - mean) / np.sqrt(variance + epsilon) * gamma + beta
    return y, moving_mean, moving_variance


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("nhwc", [(4, 5, 3), (4, 5, 6, 3), (2, 3, 4, 2, 5)], ids=shape_id)
def test_keras3_momentum_099(nhwc, dtype, rng):
    c = nhwc[-1]
    gamma = rng.uniform(0.5, 2.0, c)
    beta = rng.normal(size=c)
    mm, mv = np.zeros(c), np.ones(c)  # Keras initialisers
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    for step in range(6):
        x_nhwc = rng.normal(step, 1 + step, size=nhwc).astype(dtype)
        y_ref, mm, mv = keras3_batch_norm_train(x_nhwc, gamma, beta, mm, mv)
        x = np.moveaxis(x_nhwc, -1, 1)  # (N, C, *spatial) view of the channels-last memory
        y = bnorm.batch_norm(x, rm, rv, gamma.astype(dtype), beta.astype(dtype), training=True,
                             momentum=0.01, eps=1e-3, running_var_estimator="biased")
        assert np.moveaxis(y, 1, -1).flags["C_CONTIGUOUS"]  # still channels-last
        assert_close(np.moveaxis(y, 1, -1), y_ref, rtol_for(dtype))
        assert_close(rm, mm, rtol_for(dtype))
        assert_close(rv, mv, rtol_for(dtype))


def test_keras_default_momentum_differs_from_torch_default(rng):
    """Guard against a swapped convention: momentum=0.01 moves the stats 10x less than 0.1."""
    x = channels_last(rng.normal(5.0, 1.0, size=(8, 3, 4, 4)))
    rm1, rv1 = np.zeros(3), np.ones(3)
    rm2, rv2 = np.zeros(3), np.ones(3)
    bnorm.batch_norm(x, rm1, rv1, training=True, momentum=0.01)
    bnorm.batch_norm(x, rm2, rv2, training=True, momentum=0.1)
    np.testing.assert_allclose(rm2, 10 * rm1, rtol=1e-12)
    assert np.all(rm1 > 0.04) and np.all(rm1 < 0.06)
