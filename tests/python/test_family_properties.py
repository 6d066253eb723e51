"""Properties of the family's Python interface (issue 10, section 3): float32 numerics at
|mean| = 1e6 x std in both layouts (ATen's own error recorded beside), results bitwise
independent of the thread count, and every bad input a TypeError / ValueError naming the
argument, with nothing written by a failing call."""
import numpy as np
import pytest

import bnorm
from family_helpers import in_layout, norm_rel_err, numpy_rms_norm

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _offset_input(rng, shape, offset):
    return (offset + rng.normal(size=shape)).astype(np.float32)


def _ref(fn, x, *args):
    """float64 torch of the float32 input's exact values, in C order: ATen's channels-last
    group norm uses E[x^2] - E[x]^2 and at mean 1e6 loses digits even in float64 (a
    norm-wise 4e-4 measured on torch 1.13), so the judge never runs channels-last."""
    return fn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), *args).numpy()


def _aten(fn, x, *args):
    """ATen's own float32 result, channels-last memory where x has it."""
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if x.ndim == 4 and not x.flags["C_CONTIGUOUS"]:
        xt = xt.contiguous(memory_format=torch.channels_last)
    return fn(xt, *args).numpy()


@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("norm", ["layer", "rms", "group", "instance"])
def test_float32_at_mean_1e6_std(norm, layout, rng, record_property):
    if norm in ("layer", "rms") and layout == "cl":
        pytest.skip("layer / RMS norm read rows in C order (a channels-last x is copied)")
    shape = (4, 16, 9, 7)
    x = in_layout(_offset_input(rng, shape, 1e6), layout)
    if norm == "layer":
        got, ref = bnorm.layer_norm(x, shape[1:]), _ref(F.layer_norm, x, shape[1:])
        aten = _aten(F.layer_norm, x, shape[1:])
    elif norm == "rms":
        got, ref, aten = bnorm.rms_norm(x, shape[1:]), numpy_rms_norm(x, 3, None, 2.0 ** -23)[0], None
    elif norm == "group":
        got, ref, aten = bnorm.group_norm(x, 4), _ref(F.group_norm, x, 4), _aten(F.group_norm, x, 4)
    else:
        got, ref = bnorm.instance_norm(x), _ref(F.instance_norm, x)
        aten = _aten(F.instance_norm, x)
    err = norm_rel_err(got, ref)
    record_property("bnorm_err", err)
    if aten is not None:  # for the record (docs/normalizations.md), not asserted
        record_property("aten_err", norm_rel_err(aten, ref))
        print(f"{norm}-{layout}: bnorm {err:.2e}, ATen {norm_rel_err(aten, ref):.2e}")
    assert err <= 1e-6, f"{norm} {layout}: norm-wise relative error {err:.2e}"


def _run_all(rng_seed):
    """Every functional forward and backward, both layouts, sizes that split over threads."""
    rng = np.random.default_rng(rng_seed)
    out = []
    x = (3 + rng.normal(size=(256, 1000))).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    w, b = rng.normal(size=1000).astype(np.float32), rng.normal(size=1000).astype(np.float32)
    y, mean, rstd = bnorm.layer_norm_training(x, 1000, w, b)
    out += [y, mean, rstd, *bnorm.layer_norm_backward(x, dy, 1000, mean, rstd, w)]
    y, rstd = bnorm.rms_norm_training(x, 1000, w)
    out += [y, rstd, *bnorm.rms_norm_backward(x, dy, 1000, rstd, w)]
    for layout in ("cf", "cl"):
        x = in_layout((3 + rng.normal(size=(4, 64, 33, 31))).astype(np.float32), layout)
        dy = in_layout(rng.normal(size=x.shape).astype(np.float32), layout)
        w, b = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
        y, mean, rstd = bnorm.group_norm_training(x, 8, w, b)
        out += [y, mean, rstd, *bnorm.group_norm_backward(x, dy, 8, mean, rstd, w)]
        rm, rv = np.zeros(64, np.float32), np.ones(64, np.float32)
        y, mean, rstd = bnorm.instance_norm_training(x, w, b, rm, rv)
        out += [y, mean, rstd, rm, rv, *bnorm.instance_norm_backward(x, dy, mean, rstd, w)]
        m = bnorm.InstanceNorm2d(64, affine=True, track_running_stats=True)
        out += [m(x), m.backward(dy), m.grad_weight, m.running_var.copy()]
    return out


def test_results_do_not_depend_on_the_thread_count(restore_threads):
    bnorm.set_num_threads(1)
    one = _run_all(5)
    bnorm.set_num_threads(2)
    two = _run_all(5)
    assert len(one) == len(two)
    for i, (a, b) in enumerate(zip(one, two)):
        assert a.tobytes() == b.tobytes(), f"output {i} differs between 1 and 2 threads"


# ---- bad inputs ---------------------------------------------------------------------------

X3 = np.ones((2, 6, 5), np.float32) + np.arange(5, dtype=np.float32)


@pytest.mark.parametrize("call,error,match", [
    (lambda: bnorm.layer_norm(X3.astype(np.int32), 5), TypeError, "x must be float32"),
    (lambda: bnorm.layer_norm("abc", 3), TypeError, "x must be"),
    (lambda: bnorm.layer_norm(X3, 5, np.ones(5)), TypeError, "weight must be float32"),
    (lambda: bnorm.layer_norm(X3, 5.0), TypeError, "normalized_shape"),
    (lambda: bnorm.layer_norm(X3, (6,)), ValueError, "normalized_shape"),
    (lambda: bnorm.layer_norm(X3, ()), ValueError, "normalized_shape"),
    (lambda: bnorm.layer_norm(X3, 5, np.ones(4, np.float32)), ValueError, "weight"),
    (lambda: bnorm.layer_norm(X3, 5, None, np.ones((1, 5), np.float32)), ValueError, "bias"),
    (lambda: bnorm.layer_norm(X3, 5, eps=0.0), ValueError, "eps"),
    (lambda: bnorm.layer_norm(X3, 5, eps="1e-5"), TypeError, "eps"),
    (lambda: bnorm.layer_norm_backward(X3, X3[:1], 5, np.zeros(12, np.float32),
                                       np.ones(12, np.float32)), ValueError, "dy"),
    (lambda: bnorm.layer_norm_backward(X3, X3, 5, np.zeros(11, np.float32),
                                       np.ones(12, np.float32)), ValueError, "save_mean"),
    (lambda: bnorm.layer_norm_backward(X3, X3, 5, np.zeros(12, np.float32),
                                       np.ones(12, np.float32), need_dx=1), TypeError, "need_dx"),
    (lambda: bnorm.rms_norm(X3, 5, eps=-1.0), ValueError, "eps"),
    (lambda: bnorm.rms_norm_backward(X3, X3, 5, np.ones(12)), TypeError, "save_rstd"),
    (lambda: bnorm.group_norm(X3, 4), ValueError, "groups"),
    (lambda: bnorm.group_norm(X3, 0), ValueError, "num_groups"),
    (lambda: bnorm.group_norm(X3[0, 0], 2), ValueError, "x must have at least 2 dims"),
    (lambda: bnorm.group_norm(np.ones((2, 3), np.float32), 3), ValueError, "1 value per group"),
    (lambda: bnorm.group_norm(X3, 3, np.ones(3, np.float32)), ValueError, "weight"),
    (lambda: bnorm.group_norm_backward(X3, X3, 3, np.zeros(5, np.float32),
                                       np.ones(6, np.float32)), ValueError, "save_mean"),
    (lambda: bnorm.instance_norm(np.ones((2, 3, 1), np.float32)), ValueError, "spatial"),
    (lambda: bnorm.instance_norm(X3, use_input_stats=False), ValueError, "running_mean"),
    (lambda: bnorm.instance_norm(X3, momentum=1.5), ValueError, "momentum"),
    (lambda: bnorm.instance_norm(X3, np.zeros(6), np.ones(6)), TypeError, "running_mean"),
    (lambda: bnorm.LayerNorm(5, eps=0), ValueError, "eps"),
    (lambda: bnorm.LayerNorm([]), ValueError, "normalized_shape"),
    (lambda: bnorm.RMSNorm(0), ValueError, "normalized_shape"),
    (lambda: bnorm.GroupNorm(4, 6), ValueError, "divisible by num_groups"),
    (lambda: bnorm.GroupNorm(2.0, 6), TypeError, "num_groups"),
    (lambda: bnorm.InstanceNorm1d(3, momentum=2), ValueError, "momentum"),
    (lambda: bnorm.InstanceNorm1d(3, dtype=np.int32), TypeError, "dtype"),
    (lambda: bnorm.InstanceNorm1d(3, affine="yes"), TypeError, "affine"),
    (lambda: bnorm.GroupNorm(2, 4)(X3), ValueError, "num_channels"),
    (lambda: bnorm.GroupNorm(2, 6)(X3.astype(np.float64)), TypeError, "float32"),
    (lambda: bnorm.InstanceNorm1d(6)(X3[None]), ValueError, "3D"),
    (lambda: bnorm.LayerNorm(4)(X3), ValueError, "normalized_shape"),
    (lambda: bnorm.RMSNorm(5).backward(X3), RuntimeError, "before forward"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_inputs_are_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_failing_call_writes_nothing(rng):
    x = rng.normal(size=(3, 4, 6)).astype(np.float32)
    rm, rv = np.full(4, 0.5, np.float32), np.full(4, 2.0, np.float32)
    with pytest.raises(ValueError, match="bias"):
        bnorm.instance_norm(x, rm, rv, None, np.zeros(3, np.float32))
    assert np.all(rm == 0.5) and np.all(rv == 2.0)
    m = bnorm.InstanceNorm1d(4, track_running_stats=True)
    m(x)
    state = {k: np.array(v) for k, v in m.state_dict().items()}
    with pytest.raises(ValueError):
        m(rng.normal(size=(3, 5, 6)).astype(np.float32))  # wrong channel count
    with pytest.raises(ValueError, match="spatial"):
        m(rng.normal(size=(3, 4, 1)).astype(np.float32))  # one value per instance
    assert all(np.array_equal(v, state[k]) for k, v in m.state_dict().items())
    dy = rng.normal(size=x.shape).astype(np.float32)
    assert m.backward(dy).shape == x.shape  # still the first forward's saved statistics
    ln = bnorm.LayerNorm(6)
    ln(x)
    with pytest.raises(ValueError, match="dy"):
        ln.backward(dy[:1])
    assert ln.grad_weight is None
