"""The policies that choose the kernels' path, read once from the environment and named
by the BNORM_LOG line: the size below which one thread runs (OMP_WAIT_POLICY) and the
fused-channel budget (BNORM_FUSED_CHANNELS). Each case runs in a fresh interpreter, as
the library reads them once."""
import os
import subprocess
import sys

import pytest

SCRIPT = ("import numpy as np, bnorm; "
          "bnorm.batch_norm(np.ones((2, 3, 4, 4), np.float32), None, None, training=True)")


def kernel_log(**env):
    full = dict(os.environ, BNORM_LOG="1", **env)
    for name, value in env.items():
        if value is None:
            full.pop(name)
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       env=full, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("bnorm: batch norm kernels")]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("policy,values", [("passive", 524288), ("PASSIVE", 524288),
                                           ("active", 32768), (None, 32768)])
def test_one_thread_below_more_values_when_waiting_threads_sleep(policy, values):
    assert f"(one below {values} values)" in kernel_log(OMP_WAIT_POLICY=policy)


@pytest.mark.parametrize("setting,kib", [("never", 0), ("1048576", 1024), ("0", 0)])
def test_fused_channel_budget_from_the_environment(setting, kib):
    assert f"up to {kib} KiB of slices" in kernel_log(BNORM_FUSED_CHANNELS=setting)


def test_fused_channel_budget_defaults_to_twice_the_l2():
    """Unset, "auto" and anything unrecognised (as BNORM_STREAMING_STORES) mean auto."""
    # glibc's sysconf(_SC_LEVEL2_CACHE_SIZE), as the library reads it
    out = subprocess.run(["getconf", "LEVEL2_CACHE_SIZE"], capture_output=True, text=True).stdout
    l2 = int(out.strip() or 0)
    want = 2 * l2 // 1024 if l2 > 0 else 1024
    for setting in (None, "auto", "bogus"):
        assert f"up to {want} KiB of slices" in kernel_log(BNORM_FUSED_CHANNELS=setting)
