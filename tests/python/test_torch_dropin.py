"""bnorm.torch: bnorm's kernels behind torch.nn's normalization modules, against torch itself.

torch's own modules are the oracle (float64 where tolerances must be tight); gradcheck in
float64 judges every backward against finite differences of bnorm's forward.
"""
import copy
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bnorm  # noqa: E402
import bnorm.torch as bt  # noqa: E402
from bnorm import _bnorm  # noqa: E402

from torch.nn.utils.stateless import functional_call  # noqa: E402

nn = torch.nn
CL = {4: torch.channels_last, 5: torch.channels_last_3d}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randomize(module, seed=0):
    """Non-trivial parameters and running statistics, so that no term hides behind 1 or 0."""
    g = _gen(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if p.dtype == torch.int64:
                continue
            if "var" in name:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) + 0.5)
            elif "weight" in name:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 1.5 + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _input(shape, dtype=torch.float64, seed=1, memory_format=None, offset=0.5):
    x = torch.randn(shape, generator=_gen(seed), dtype=dtype) * 2 + offset
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    return x


# ---- gradcheck ------------------------------------------------------------------------

# (torch class, bnorm class, constructor args, input shape, memory format)
BN_CASES = {
    "1d-NC": (nn.BatchNorm1d, bt.BatchNorm1d, (3,), (5, 3), None),
    "1d-NCL": (nn.BatchNorm1d, bt.BatchNorm1d, (3,), (3, 3, 4), None),
    "2d": (nn.BatchNorm2d, bt.BatchNorm2d, (3,), (2, 3, 3, 2), None),
    "2d-cl": (nn.BatchNorm2d, bt.BatchNorm2d, (3,), (2, 3, 3, 2), torch.channels_last),
    "3d": (nn.BatchNorm3d, bt.BatchNorm3d, (2,), (2, 2, 2, 3, 2), None),
    "3d-cl": (nn.BatchNorm3d, bt.BatchNorm3d, (2,), (2, 2, 2, 3, 2), torch.channels_last_3d),
}


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(BN_CASES))
def test_batch_norm_gradcheck(case, training, affine):
    _, cls, args, shape, fmt = BN_CASES[case]
    bn = _randomize(cls(*args, affine=affine, dtype=torch.float64)).train(training)
    x = _input(shape, memory_format=fmt).requires_grad_(True)
    inputs = (x,) + ((bn.weight, bn.bias) if affine else ())

    def f(x, *wb):  # gradcheck perturbs these tensors: the module must read them
        return functional_call(bn, dict(zip(("weight", "bias"), wb)), (x,))

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


FAMILY_CASES = {
    "layer": (nn.LayerNorm, bt.LayerNorm, ((3, 4),), {}, (2, 2, 3, 4), None),
    "group": (nn.GroupNorm, bt.GroupNorm, (2, 4), {}, (2, 4, 3, 2), None),
    "group-cl": (nn.GroupNorm, bt.GroupNorm, (2, 4), {}, (2, 4, 3, 2), torch.channels_last),
    "group-2d": (nn.GroupNorm, bt.GroupNorm, (3, 6), {}, (3, 6), None),
    "instance1d": (nn.InstanceNorm1d, bt.InstanceNorm1d, (3,), {}, (2, 3, 5), None),
    "instance2d": (nn.InstanceNorm2d, bt.InstanceNorm2d, (3,), {}, (2, 3, 3, 2), None),
    "instance2d-cl": (nn.InstanceNorm2d, bt.InstanceNorm2d, (3,), {}, (2, 3, 3, 2),
                      torch.channels_last),
    "instance3d-track": (nn.InstanceNorm3d, bt.InstanceNorm3d, (2,),
                         {"track_running_stats": True}, (2, 2, 2, 2, 3), None),
    "instance2d-unbatched": (nn.InstanceNorm2d, bt.InstanceNorm2d, (3,), {}, (3, 2, 3), None),
}


def _affine_kwargs(tcls, affine):
    return {"elementwise_affine": affine} if tcls is nn.LayerNorm else {"affine": affine}


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(FAMILY_CASES))
def test_family_gradcheck(case, training, affine):
    tcls, cls, args, kwargs, shape, fmt = FAMILY_CASES[case]
    m = _randomize(cls(*args, dtype=torch.float64, **kwargs, **_affine_kwargs(tcls, affine)))
    m.train(training)
    x = _input(shape, memory_format=fmt).requires_grad_(True)
    inputs = (x,) + ((m.weight, m.bias) if affine else ())

    def f(x, *wb):
        return functional_call(m, dict(zip(("weight", "bias"), wb)), (x,))

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# ---- forward, backward and buffers against torch's modules --------------------------------

def _pair(tcls, cls, *args, dtype=torch.float64, **kwargs):
    ref = _randomize(tcls(*args, dtype=dtype, **kwargs))
    ours = cls(*args, dtype=dtype, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _step(m, x, dy):
    x = x.detach().clone().requires_grad_(True)
    m.zero_grad(set_to_none=True)
    y = m(x)
    y.backward(dy)
    grads = [None if p.grad is None else p.grad.clone() for p in m.parameters()]
    return y.detach(), x.grad, grads


def _assert_steps_match(ref, ours, x, dy, tol):
    y0, dx0, g0 = _step(ref, x, dy)
    y1, dx1, g1 = _step(ours, x, dy)
    torch.testing.assert_close(y1, y0, rtol=tol, atol=tol)
    torch.testing.assert_close(dx1, dx0, rtol=tol, atol=tol)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for (name, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)
    return y1, dx1


@pytest.mark.parametrize("momentum", [0.1, None], ids=["mom0.1", "cumulative"])
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("case", ["1d-NC", "2d", "2d-cl", "3d-cl"])
def test_batch_norm_train_then_eval_matches_torch(case, affine, track, momentum):
    tcls, cls, args, shape, fmt = BN_CASES[case]
    ref, ours = _pair(tcls, cls, *args, affine=affine, track_running_stats=track,
                      momentum=momentum)
    for step in range(3):
        x = _input(shape, seed=step, memory_format=fmt, offset=step)
        dy = _input(shape, seed=10 + step, memory_format=fmt)
        y, dx = _assert_steps_match(ref, ours, x, dy, 1e-12)
        if fmt is not None:  # channels_last in -> channels_last out, as torch's
            assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)
    if track:
        assert int(ours.num_batches_tracked) == 3
    ref.eval(), ours.eval()  # with running stats when tracked, batch stats otherwise
    x = _input(shape, seed=7, memory_format=fmt)
    _assert_steps_match(ref, ours, x, _input(shape, seed=8, memory_format=fmt), 1e-12)
    if track:
        assert int(ours.num_batches_tracked) == 3


@pytest.mark.parametrize("case", ["layer", "group", "group-cl", "group-2d", "instance1d",
                                  "instance2d-cl", "instance3d-track", "instance2d-unbatched"])
def test_family_matches_torch(case):
    tcls, cls, args, kwargs, shape, fmt = FAMILY_CASES[case]
    ref, ours = _pair(tcls, cls, *args, **kwargs, **_affine_kwargs(tcls, True))
    for step in range(2):
        x = _input(shape, seed=step, memory_format=fmt, offset=step)
        _assert_steps_match(ref, ours, x, _input(shape, seed=5 + step), 1e-10)
    ref.eval(), ours.eval()
    _assert_steps_match(ref, ours, _input(shape, seed=9, memory_format=fmt),
                        _input(shape, seed=10), 1e-10)


def test_family_float32_matches_torch():
    for case in ("layer", "group-cl", "instance2d-cl"):
        tcls, cls, args, kwargs, shape, fmt = FAMILY_CASES[case]
        ref, ours = _pair(tcls, cls, *args, dtype=torch.float32, **kwargs)
        x = _input(shape, dtype=torch.float32, memory_format=fmt)
        _assert_steps_match(ref, ours, x, _input(shape, dtype=torch.float32), 1e-5)


# ---- the module's surface is torch's ----------------------------------------------------

def test_subclass_constructor_and_state_dict_are_torchs():
    for tcls, cls in [(nn.BatchNorm1d, bt.BatchNorm1d), (nn.BatchNorm2d, bt.BatchNorm2d),
                      (nn.BatchNorm3d, bt.BatchNorm3d)]:
        for kwargs in [{}, {"affine": False}, {"track_running_stats": False},
                       {"momentum": None, "eps": 1e-3}]:
            ref, ours = tcls(4, **kwargs), cls(4, **kwargs)
            assert isinstance(ours, tcls) and isinstance(ours, nn.modules.batchnorm._BatchNorm)
            assert list(ours.state_dict()) == list(ref.state_dict())
            assert ours.extra_repr() == ref.extra_repr()
            assert repr(ours).split("(", 1)[1] == repr(ref).split("(", 1)[1]
    assert "num_batches_tracked" in bt.BatchNorm2d(3).state_dict()
    ours = bt.BatchNorm2d(3, dtype=torch.float64)
    assert ours.weight.dtype == ours.running_var.dtype == torch.float64


def test_load_state_dict_from_torch_and_back():
    ref = _randomize(nn.BatchNorm2d(3))
    ref(torch.randn(4, 3, 2, 2))  # num_batches_tracked 1
    ours = bt.BatchNorm2d(3)
    ours.load_state_dict(ref.state_dict())
    assert int(ours.num_batches_tracked) == 1
    ours(torch.randn(4, 3, 2, 2))
    back = nn.BatchNorm2d(3)
    back.load_state_dict(ours.state_dict())
    assert int(back.num_batches_tracked) == 2
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_momentum_none_is_the_cumulative_average():
    ours = bt.BatchNorm1d(2, momentum=None, dtype=torch.float64)
    xs = [_input((6, 2), seed=s, offset=s) for s in range(4)]
    for x in xs:
        ours(x)
    batch_means = torch.stack([x.mean(0) for x in xs])
    batch_vars = torch.stack([x.var(0, unbiased=True) for x in xs])
    torch.testing.assert_close(ours.running_mean, batch_means.mean(0), rtol=1e-12, atol=1e-12)
    # the cumulative average starts from the initial running_var of 1 with factor 1/1
    torch.testing.assert_close(ours.running_var, batch_vars.mean(0), rtol=1e-12, atol=1e-12)
    assert int(ours.num_batches_tracked) == 4


def test_eval_without_running_stats_uses_batch_statistics():
    ours = bt.BatchNorm2d(3, track_running_stats=False, dtype=torch.float64).eval()
    assert ours.running_mean is None and ours.num_batches_tracked is None
    x = _input((4, 3, 2, 2))
    y = ours(x)
    ref = nn.functional.batch_norm(x, None, None, ours.weight, ours.bias, True)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_eval_leaves_buffers_alone():
    ours = _randomize(bt.BatchNorm2d(3)).eval()
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours(torch.randn(4, 3, 2, 2))
    for key, value in ours.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_eval_backward_uses_the_forwards_statistics():
    """A training step between an eval forward and its backward changes the buffers; the
    backward still differentiates what the forward computed."""
    ours = _randomize(bt.BatchNorm1d(3, dtype=torch.float64))
    ref = copy.deepcopy(ours)
    x = _input((4, 3)).requires_grad_(True)
    y = ours.eval()(x)
    expected = torch.autograd.grad(ref.eval()(x).sum(), x)[0]
    ours.train()(_input((4, 3), seed=3, offset=5.0))
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0], expected)


def test_negated_gradient_and_hooks_survive_convert():
    bn = nn.BatchNorm1d(3)
    calls = []
    bn.register_forward_hook(lambda m, i, o: calls.append("forward"))
    bn.register_full_backward_hook(lambda m, gi, go: calls.append("backward"))
    ours = bt.convert(bn)
    x = torch.randn(4, 3, requires_grad=True)
    torch.neg(ours(x)).sum().backward()
    assert calls == ["forward", "backward"] and x.grad is not None


def test_frozen_parameters_get_no_gradient():
    ours = bt.BatchNorm2d(3)
    ours.weight.requires_grad_(False)
    x = torch.randn(2, 3, 2, 2, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad is None and ours.bias.grad is not None and x.grad is not None


# ---- zero copy, layouts, threads ---------------------------------------------------------

@pytest.mark.parametrize("fmt", [None, torch.channels_last], ids=["nchw", "nhwc"])
def test_kernels_see_the_tensors_memory(monkeypatch, fmt):
    seen = {}

    def recording(name, function):
        def wrapper(*args, **kwargs):
            seen[name] = (args, kwargs, function(*args, **kwargs))
            return seen[name][2]
        monkeypatch.setattr(_bnorm, name, wrapper)

    recording("forward_training", _bnorm.forward_training)
    recording("backward", _bnorm.backward)
    bn = bt.BatchNorm2d(3)
    x = _input((2, 3, 4, 5), dtype=torch.float32, memory_format=fmt).requires_grad_(True)
    y = bn(x)
    args, kwargs, (ya, _, _) = seen["forward_training"]
    xa, wa, ba, rma, rva = args[:5]
    assert np.shares_memory(xa, x.detach().numpy()) and xa.ctypes.data == x.data_ptr()
    assert wa.ctypes.data == bn.weight.data_ptr() and ba.ctypes.data == bn.bias.data_ptr()
    assert rma.ctypes.data == bn.running_mean.data_ptr()
    assert rva.ctypes.data == bn.running_var.data_ptr()
    assert kwargs["num_batches_tracked"].ctypes.data == bn.num_batches_tracked.data_ptr()
    assert ya.ctypes.data == y.data_ptr()
    assert y.is_contiguous(memory_format=fmt or torch.contiguous_format)
    dy = torch.randn(2, 3, 4, 5).contiguous(memory_format=fmt or torch.contiguous_format)
    y.backward(dy)
    xb, dyb = seen["backward"][0][:2]
    dxa = seen["backward"][2][0]
    assert xb.ctypes.data == x.data_ptr() and dyb.ctypes.data == dy.data_ptr()
    assert dxa.ctypes.data == x.grad.data_ptr()
    assert x.grad.is_contiguous(memory_format=fmt or torch.contiguous_format)


def test_backward_computes_only_what_autograd_needs(monkeypatch):
    calls = []
    real = _bnorm.backward
    monkeypatch.setattr(_bnorm, "backward", lambda *a: calls.append(a[5:]) or real(*a))
    bn = bt.BatchNorm1d(3)
    bn.weight.requires_grad_(False)
    bn(torch.randn(4, 3)).sum().backward()  # x needs no gradient either
    bn(torch.randn(4, 3, requires_grad=True)).sum().backward()
    assert calls == [(False, False, True), (True, False, True)]


def test_strided_input_and_expanded_gradient():
    ref, ours = _pair(nn.BatchNorm2d, bt.BatchNorm2d, 3)
    base = _input((4, 6, 5, 2))
    x = base[:, ::2].transpose(2, 3)  # neither layout: bnorm copies
    _assert_steps_match(ref, ours, x, torch.ones(1).double().expand(x.shape), 1e-12)


def test_threads_follow_torch(restore_threads):
    """bnorm's default count follows OpenMP's, which torch.set_num_threads also sets; a
    count set through bnorm.set_num_threads must be brought back to torch's too."""
    old = torch.get_num_threads()
    try:
        for n in (1, 2):
            bnorm.set_num_threads(3)
            torch.set_num_threads(n)
            x = torch.randn(3, 2, requires_grad=True)
            y = bt.BatchNorm1d(2)(x)
            assert bnorm.get_num_threads() == n
            bnorm.set_num_threads(3)
            y.sum().backward()
            assert bnorm.get_num_threads() == n
    finally:
        torch.set_num_threads(old)


def test_importing_bnorm_does_not_import_torch():
    code = ("import sys, bnorm; assert 'torch' not in sys.modules; import bnorm.torch; "
            "import torch; assert bnorm.torch.torch is torch and torch.nn.Module")
    subprocess.run([sys.executable, "-c", code], check=True, env=_child_env())


def test_import_without_torch_says_so():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import bnorm.torch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, env=_child_env(),
                         capture_output=True, text=True).stdout
    assert "bnorm.torch needs PyTorch" in out and "import bnorm" in out


def _child_env():
    import os
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


# ---- errors -------------------------------------------------------------------------------

def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("make, x, error, fragment", [
    (lambda: bt.BatchNorm2d(3), torch.randn(2, 3, 4), ValueError, "expected 4D input (got 3D"),
    (lambda: bt.BatchNorm2d(3), torch.randn(1, 3, 1, 1), ValueError,
     "Expected more than 1 value per channel when training, got input size"),
    (lambda: bt.BatchNorm2d(3), torch.randn(2, 3, 2, 2, dtype=torch.float64), RuntimeError,
     "have the input's dtype torch.float64, got torch.float32"),
    (lambda: bt.BatchNorm2d(3).half(), torch.randn(2, 3, 2, 2).half(), RuntimeError,
     "only torch.float32 and torch.float64"),
    (lambda: bt.BatchNorm2d(3), torch.randn(2, 3, 2, 2, device="meta"), RuntimeError,
     "runs on CPU tensors only"),
    (lambda: bt.BatchNorm2d(3), torch.randn(2, 5, 2, 2), RuntimeError,
     "must have shape (5,), one value per channel of x, got (3,)"),
    (lambda: bt.BatchNorm2d(3, track_running_stats=False), torch.randn(2, 5, 2, 2),
     RuntimeError, "weight must have shape (5,)"),
    (lambda: bt.GroupNorm(2, 4, affine=False), torch.randn(2, 5, 3), RuntimeError,
     "divisible by groups"),
    (lambda: bt.LayerNorm(4), torch.randn(2, 5), RuntimeError, "layer_norm"),
    (lambda: bt.GroupNorm(1, 4), torch.randn(4), IndexError, "at least 2 dims"),
    (lambda: bt.InstanceNorm2d(3), torch.randn(2, 3, 1, 1), ValueError,
     "Expected more than 1 spatial element when training"),
], ids=["rank", "one-value", "dtype-mismatch", "half", "meta", "channels", "channels-notrack",
        "groups", "layer-shape", "group-1d", "instance-one"])
def test_errors_are_torchs_and_change_nothing(make, x, error, fragment):
    m = make()
    torch_type = bt._TO_TORCH[type(m)]
    before = _state(m)
    with pytest.raises(error) as ours:
        m(x)
    assert fragment in str(ours.value)
    if x.device.type == "cpu" and x.dtype != torch.half:  # torch raises the same type
        ref = torch_type.__new__(torch_type)
        ref.__dict__ = copy.deepcopy(m.__dict__)
        with pytest.raises(error):
            ref(x)
    for key, value in m.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_double_backward_is_refused():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    dx = torch.autograd.grad(bt.BatchNorm1d(3).double()(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        dx[0].sum().backward()


# ---- convert / revert on a small ResNet ---------------------------------------------------

class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


def _resnet(dtype):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          _Block(8, 8, 1), _Block(8, 16, 2), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.BatchNorm1d(16), nn.Linear(16, 10))
    return _randomize_bn(model).to(dtype)


def _randomize_bn(model):
    for i, m in enumerate(model.modules()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            _randomize(m, seed=i)
    return model


def _train_in_step(ref, ours, dtype, fmt, tol, steps=3):
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    g = _gen(11)
    for _ in range(steps):
        x = (torch.randn(4, 3, 16, 16, generator=g) * 2 + 1).to(dtype).contiguous(
            memory_format=fmt)
        target = torch.randint(0, 10, (4,), generator=g)
        outs = []
        for model, opt in ((ref, opt_ref), (ours, opt_ours)):
            opt.zero_grad()
            out = model(x)
            nn.functional.cross_entropy(out, target).backward()
            outs.append(out.detach())
            grads = [p.grad.clone() for p in model.parameters()]
            opt.step()
            outs.append(grads)
        torch.testing.assert_close(outs[2], outs[0], rtol=tol, atol=tol)
        for a, b in zip(outs[3], outs[1]):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for (key, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=key)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.float64, 1e-10)],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "nhwc"])
def test_converted_resnet_trains_like_torch(fmt, dtype, tol):
    ref = _resnet(dtype).to(memory_format=fmt)
    ours = bt.convert(copy.deepcopy(ref))
    kinds = {type(m) for m in ours.modules()}
    assert bt.BatchNorm2d in kinds and bt.BatchNorm1d in kinds and nn.BatchNorm2d not in kinds
    _train_in_step(ref, ours, dtype, fmt, tol)
    ref.eval(), ours.eval()
    x = _input((4, 3, 16, 16), dtype=dtype, memory_format=fmt)
    torch.testing.assert_close(ours(x), ref(x), rtol=tol, atol=tol)
    back = bt.revert(ours)
    assert back is ours and not any(type(m) in bt._TO_TORCH for m in back.modules())
    for (key, a), (_, b) in zip(back.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=key)


def test_convert_shares_state_and_keeps_the_optimizer_working():
    model = _resnet(torch.float32)
    params = list(model.parameters())
    buffers = list(model.buffers())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.eval()
    out = bt.convert(model)
    assert out is model
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert all(a is b for a, b in zip(model.buffers(), buffers))
    assert not any(m.training for m in model.modules())
    model.train()
    before = model[1].weight.detach().clone()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.arange(4)).backward()
    opt.step()
    assert not torch.equal(model[1].weight, before)


def test_convert_a_bare_layer_and_what_is_left_alone():
    bn = _randomize(nn.BatchNorm3d(4, eps=1e-3, momentum=None, dtype=torch.float64))
    bn.weight.requires_grad_(False)
    ours = bt.convert(bn)
    assert type(ours) is bt.BatchNorm3d and ours.weight is bn.weight
    assert (ours.eps, ours.momentum, ours.weight.dtype) == (1e-3, None, torch.float64)
    assert not ours.weight.requires_grad
    assert type(bt.revert(ours)) is nn.BatchNorm3d

    class MyBN(nn.BatchNorm2d):
        pass

    model = nn.Sequential(nn.SyncBatchNorm(3), MyBN(3), nn.GroupNorm(1, 3), nn.LayerNorm(3),
                          nn.InstanceNorm2d(3, affine=True))
    shared = nn.BatchNorm2d(3)
    model.append(nn.Sequential(shared, shared))
    bt.convert(model)
    assert [type(m) for m in model[:5]] == [nn.SyncBatchNorm, MyBN, bt.GroupNorm,
                                            bt.LayerNorm, bt.InstanceNorm2d]
    assert model[5][0] is model[5][1] and type(model[5][0]) is bt.BatchNorm2d
