"""The installed Python package, imported from outside the source and build trees
(tests/install/run runs this with the installed dist-packages directory on PYTHONPATH,
or with none for the .deb): it is the installed copy, it computes batch norm, it reports
bad input as Python exceptions, and bnorm.torch loads when torch is there.

usage: /usr/bin/python3 smoke.py EXPECTED_PACKAGE_DIR
"""
import os
import sys

import numpy as np

import bnorm

expected = os.path.realpath(sys.argv[1])
where = os.path.realpath(os.path.dirname(bnorm.__file__))
if where != expected:
    sys.exit(f"smoke: imported bnorm from {where}, expected {expected}")

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 5, 5)).astype(np.float32) * 4 + 1000
mean, var = np.zeros(3, np.float32), np.ones(3, np.float32)
y = bnorm.batch_norm(x, mean, var, training=True)
x64 = x.astype(np.float64)
want = (x64 - x64.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
    x64.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
error = float(np.max(np.abs(y - want)))
if error > 1e-4:
    sys.exit(f"smoke: batch norm off by {error}")

try:
    bnorm.batch_norm(x, np.zeros(4, np.float32), var, training=True)
    sys.exit("smoke: a running_mean of the wrong size was accepted")
except ValueError as e:
    if "running_mean" not in str(e):
        sys.exit(f"smoke: unexpected message: {e}")

try:
    import torch  # noqa: F401
except ImportError:
    torch = None
checked_torch = "bnorm.torch not checked (no torch)"
if torch is not None:
    if not os.path.exists(os.path.join(where, "torch.py")):
        sys.exit(f"smoke: torch is installed but {where} has no bnorm/torch.py")
    import bnorm.torch as bt

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    images = torch.from_numpy(x[:, :, :4, :4] - 1000)
    with torch.no_grad():
        reference = model(images)
        bt.convert(model)
        if not isinstance(model[1], bt.BatchNorm2d):
            sys.exit("smoke: bnorm.torch.convert left torch's BatchNorm2d")
        difference = float((model(images) - reference).abs().max())
    if difference > 1e-4:
        sys.exit(f"smoke: the converted model's output moved by {difference}")
    checked_torch = f"bnorm.torch.convert within {difference:.1e}"

print(f"smoke: bnorm {bnorm.__version__} from {where}: batch norm within {error:.1e}, "
      f"errors as ValueError, {checked_torch}, kernels {bnorm.kernel_isa()}")
