"""Thread-count invariance: results are bitwise identical for any set_num_threads(n)."""
import numpy as np
import pytest

import bnorm
from bn_helpers import channels_last, is_channels_last


def _run_everything(x, dy, w, b, rm0, rv0):
    """Every entry point once; returns all outputs (copies) in a dict."""
    rm, rv = rm0.copy(), rv0.copy()
    y, sm, si = bnorm.batch_norm_training(x, w, b, rm, rv, momentum=0.3)
    dx, dw, db = bnorm.batch_norm_backward(x, dy, sm, si, w)
    yi = bnorm.batch_norm(x, rm, rv, w, b)
    dxi, dwi, dbi = bnorm.batch_norm_backward_inference(x, dy, rm, rv, w)
    return dict(y=y, save_mean=sm, save_invstd=si, running_mean=rm, running_var=rv, dx=dx,
                dweight=dw, dbias=db, y_inference=yi, dx_inference=dxi, dweight_inference=dwi,
                dbias_inference=dbi)


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


THREAD_CASES = [
    pytest.param(shape, dtype, layout, id=f"{'x'.join(map(str, shape))}-{np.dtype(dtype).name}-{layout}")
    # 2^19+ values each: below that one thread does the work when waiting threads sleep
    # (OMP_WAIT_POLICY=passive, as scripts/test runs), and there is nothing to compare.
    for shape, dtype in [((16, 8, 64, 64), np.float32), ((64, 1, 96, 96), np.float32),
                         ((4, 512, 16, 16), np.float32), ((8, 6, 110, 110), np.float64),
                         ((45000, 12), np.float32)]
    for layout in (["cf", "cl"] if len(shape) >= 3 else ["cf"])
]


@pytest.mark.parametrize("shape,dtype,layout", THREAD_CASES)
def test_bitwise_identical_across_thread_counts(shape, dtype, layout, rng, restore_threads):
    c = shape[1]
    x = (rng.normal(size=shape) * 3 + 100).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    if layout == "cl":
        x, dy = channels_last(x), channels_last(dy)
        assert is_channels_last(x)
    w = rng.uniform(0.5, 2, c).astype(dtype)
    b = rng.normal(size=c).astype(dtype)
    rm0 = rng.normal(size=c).astype(dtype)
    rv0 = rng.uniform(0.5, 2, c).astype(dtype)

    results = {}
    for n in (1, 2, 3):
        bnorm.set_num_threads(n)
        assert bnorm.get_num_threads() == n
        results[n] = _run_everything(x, dy, w, b, rm0, rv0)
    for n in (2, 3):
        for key, value in results[1].items():
            other = results[n][key]
            assert other.strides == value.strides, key
            assert np.array_equal(_bits(other), _bits(value)), \
                f"{key} differs between 1 and {n} threads"
    assert np.all(np.isfinite(results[1]["y"]))


def test_module_bitwise_identical_across_thread_counts(rng, restore_threads):
    x = rng.normal(size=(16, 8, 64, 64)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    outs = []
    for n in (1, 2):
        bnorm.set_num_threads(n)
        bn = bnorm.BatchNorm2d(8, momentum=None)
        ys = [bn(x + step) for step in range(3)]
        dx = bn.backward(dy)
        outs.append((ys, dx, bn.grad_weight, bn.grad_bias, bn.running_mean, bn.running_var))
    for a, b in zip(outs[0], outs[1]):
        if isinstance(a, list):
            assert all(np.array_equal(_bits(p), _bits(q)) for p, q in zip(a, b))
        else:
            assert np.array_equal(_bits(a), _bits(b))


def test_set_num_threads_zero_or_negative_restores_default(restore_threads):
    bnorm.set_num_threads(0)
    default = bnorm.get_num_threads()
    assert default >= 1
    bnorm.set_num_threads(default + 3)
    assert bnorm.get_num_threads() == default + 3
    bnorm.set_num_threads(0)
    assert bnorm.get_num_threads() == default
    bnorm.set_num_threads(5)
    bnorm.set_num_threads(-2)
    assert bnorm.get_num_threads() == default


def test_kernel_isa_names_a_variant():
    assert bnorm.kernel_isa().startswith("x86-64")
