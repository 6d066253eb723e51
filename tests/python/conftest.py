"""Shared setup for the bnorm Python tests.

Run from the repository root after building:
    PYTHONPATH=build/python python3 -m pytest -q tests/python
"""
import os
import random
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # for `import bn_helpers` whatever pytest's import mode
    sys.path.insert(0, _HERE)

try:  # fall back to the default build tree when PYTHONPATH is not set
    import bnorm  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the suite is invoked
    sys.path.insert(0, os.path.join(_HERE, "..", "..", "build", "python"))
    import bnorm  # noqa: F401

try:
    import torch
except ImportError:  # pragma: no cover - modules that need torch importorskip it
    torch = None

SEED = 20240607


def pytest_configure(config):
    random.seed(SEED)
    np.random.seed(SEED)
    if torch is not None:
        torch.set_num_threads(1)
        torch.manual_seed(SEED)
        torch.set_default_dtype(torch.float32)


@pytest.fixture(autouse=True)
def _deterministic_seeds():
    """Every test starts from the same global seeds (tests also use their own RNGs)."""
    random.seed(SEED)
    np.random.seed(SEED)
    if torch is not None:
        torch.manual_seed(SEED)
    yield


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's node id: reproducible, distinct per test."""
    import zlib
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()) ^ SEED)


@pytest.fixture
def restore_threads():
    """Restores bnorm's default thread count after the test, whatever happens."""
    yield
    bnorm.set_num_threads(0)
