"""bnorm.SyncBatchNorm over mpi4py under mpirun with K = 1..4 processes: each process's
slice against one-process batch norm on the concatenated batch (mpi_sync_worker.py)."""
import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mpi4py")
MPIRUN = shutil.which("mpirun")
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(MPIRUN is None, reason="openmpi-bin not installed")
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_sync_batch_norm_matches_one_process(k):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive",
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), HERE) if p)}
    r = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(k),
                        "/usr/bin/python3", "-m", "mpi4py", os.path.join(HERE, "mpi_sync_worker.py")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # The processes' lines may interleave: find each rank's.
    assert sorted(re.findall(r"rank \d+ of \d+: OK", r.stdout)) == [
        f"rank {i} of {k}: OK" for i in range(k)], r.stdout
