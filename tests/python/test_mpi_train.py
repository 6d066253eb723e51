"""`bnorm train` under mpirun: data-parallel training over OpenMPI (src/dist/).

K processes split every global batch (remainder to the lowest ranks) and sum their
gradients, so with --sync-bn they train as one process on the same global batches. The
oracle is the single-process run: per-epoch train loss within 1e-4 relative. Faults: a
killed process ends the job within 30 s naming its rank; processes started with
different options refuse at start; only rank 0 prints and writes.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from cli_helpers import BNORM, needs_cli, needs_data, read_checkpoint, read_metrics, run

MPIRUN = shutil.which("mpirun")
needs_mpi = pytest.mark.skipif(MPIRUN is None, reason="openmpi-bin not installed")
pytestmark = [needs_cli, needs_data, needs_mpi]

# A few thousand examples; 3000 % 64 = 56, so the last batch splits unevenly too.
TRAIN = ["--model", "lenet-bn", "--train-examples", "3000", "--test-examples", "600",
         "--batch-size", "64", "--threads", "1", "--no-progress"]
ENV = {**os.environ, "OMP_WAIT_POLICY": "passive"}


def mpirun_args(k):
    return [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(k)]


def mpirun(k, *args, timeout=300):
    return subprocess.run([*mpirun_args(k), BNORM, *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def train_losses(path):
    return [row["train_loss"] for row in read_metrics(path)]


def assert_close(got, want, rel=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert abs(g - w) <= rel * abs(w), (got, want)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "m.jsonl"
    r = run("train", *TRAIN, "--epochs", "2", "--metrics", str(out))
    assert r.returncode == 0, r.stderr
    return read_metrics(out)


@pytest.mark.parametrize("k", [2, 3])
def test_sync_bn_trains_as_one_process(tmp_path, one_process, k):
    out = tmp_path / "m.jsonl"
    r = mpirun(k, "train", *TRAIN, "--epochs", "2", "--sync-bn", "--metrics", str(out))
    assert r.returncode == 0, r.stderr
    rows = read_metrics(out)
    assert_close([row["train_loss"] for row in rows], [row["train_loss"] for row in one_process])
    assert_close([row["test_loss"] for row in rows], [row["test_loss"] for row in one_process])
    assert [row["train_acc"] for row in rows] == pytest.approx(
        [row["train_acc"] for row in one_process], abs=2 / 3000)
    assert all(row["processes"] == k and row["sync_bn"] is True for row in rows)
    # Only rank 0 prints: one header and one line per epoch.
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3, r.stdout
    assert f"{k} processes (SyncBN)" in lines[0]


def test_per_process_batch_norm_is_another_training(tmp_path, one_process):
    """Without --sync-bn each process normalizes its own slice (PyTorch DDP's default):
    smaller batches for batch norm, so the run differs from the one-process one."""
    out = tmp_path / "m.jsonl"
    r = mpirun(2, "train", *TRAIN, "--epochs", "2", "--metrics", str(out))
    assert r.returncode == 0, r.stderr
    got, want = train_losses(out), [row["train_loss"] for row in one_process]
    assert max(abs(g - w) / w for g, w in zip(got, want)) > 1e-3, (got, want)
    assert read_metrics(out)[0]["sync_bn"] is False


def test_resume_with_another_process_count(tmp_path, one_process):
    """Epoch 1 over 2 processes, epoch 2 over 3, then 1: the unbroken one-process run."""
    ckpt, out = tmp_path / "c.ckpt", tmp_path / "m.jsonl"
    r = mpirun(2, "train", *TRAIN, "--epochs", "1", "--sync-bn", "--checkpoint", str(ckpt),
               "--metrics", str(out))
    assert r.returncode == 0, r.stderr
    r = mpirun(3, "train", *TRAIN, "--epochs", "2", "--sync-bn", "--resume", str(ckpt),
               "--checkpoint", str(ckpt), "--metrics", str(out))
    assert r.returncode == 0, r.stderr
    assert_close(train_losses(out), [row["train_loss"] for row in one_process])
    meta, _ = read_checkpoint(ckpt)
    assert meta["epoch"] == "2"
    # A single process takes it from there.
    r = run("train", *TRAIN, "--epochs", "3", "--resume", str(ckpt), "--metrics", str(out))
    assert r.returncode == 0, r.stderr
    assert len(read_metrics(out)) == 3


def test_different_options_are_refused_at_start(tmp_path):
    r = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe",
                        "-np", "1", BNORM, "train", *TRAIN, "--epochs", "1", "--lr", "0.5", ":",
                        "-np", "1", BNORM, "train", *TRAIN, "--epochs", "1", "--lr", "0.25"],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode != 0
    assert "different --lr (rank(s) 1 differ from rank 0" in r.stderr, r.stderr
    assert "rank 1, has '0.25'" in r.stderr, r.stderr
    assert "epoch" not in r.stdout  # nothing trained


def test_different_models_are_refused_at_start():
    r = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe",
                        "-np", "1", BNORM, "train", *TRAIN, "--epochs", "1", ":",
                        "-np", "1", BNORM, "train", *TRAIN, "--epochs", "1", "--model", "lenet"],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode != 0
    assert "different --model" in r.stderr, r.stderr


def test_a_batch_that_cannot_be_split_is_refused():
    r = mpirun(4, "train", "--model", "lenet-bn", "--train-examples", "66", "--test-examples",
               "10", "--batch-size", "64", "--threads", "1", "--no-progress", "--epochs", "1",
               "--sync-bn")
    assert r.returncode != 0
    assert "a batch of 2 example(s) cannot give each of the 4 processes an example" in r.stderr


def test_per_process_batch_norm_needs_two_examples_per_slice():
    r = mpirun(2, "train", "--model", "lenet-bn", "--train-examples", "67", "--test-examples",
               "10", "--batch-size", "64", "--threads", "1", "--no-progress", "--epochs", "1")
    assert r.returncode != 0
    assert "leaves a slice of 1 example" in r.stderr and "--sync-bn" in r.stderr, r.stderr


def _ranked_children(mpirun_pid):
    """{rank: pid} of mpirun's bnorm processes (their environment says the rank)."""
    ranks = {}
    for pid in subprocess.run(["pgrep", "-P", str(mpirun_pid)], capture_output=True,
                              text=True).stdout.split():
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(item.split(b"=")[1])] = int(pid)
    return ranks


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_process_ends_the_job_naming_its_rank(tmp_path, victim):
    ckpt = tmp_path / "c.ckpt"
    job = subprocess.Popen([*mpirun_args(3), BNORM, "train", "--model", "lenet-bn",
                            "--train-examples", "6000", "--test-examples", "200",
                            "--batch-size", "32", "--threads", "1", "--no-progress",
                            "--epochs", "50", "--sync-bn", "--checkpoint", str(ckpt)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        ranks = {}
        while time.monotonic() < deadline and not ckpt.exists():  # past epoch 1
            time.sleep(0.2)
            ranks = _ranked_children(job.pid)
        assert ckpt.exists() and victim in ranks, ranks
        os.kill(ranks[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = job.communicate(timeout=30)
        assert time.monotonic() - killed_at < 30
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert f"process rank {victim} with PID" in err and "signal 9" in err, err
    # The checkpoint rank 0 wrote is whole (read_checkpoint checks its CRC).
    meta, _ = read_checkpoint(ckpt)
    assert int(meta["epoch"]) >= 1


@pytest.mark.parametrize("sync", [False, True])
def test_bench_reports_the_collectives_of_a_step(sync):
    """LeNet-BN's 44,878 parameters, 452 of them in batch norm (channels 6, 16, 120, 84).
    Without SyncBN: one all-reduce of 44,878 gradients, 2 loss totals and rank 0's 452
    running statistics, in 2 buckets of at most 32,768. With it: batch norm's gradients and
    statistics leave the all-reduce (44,428 doubles, 2 buckets), and each of the 4 layers
    makes one forward call of 2 + 2c doubles and one backward call of 2 + 3c."""
    r = mpirun(2, "bench", "train", "--model", "lenet-bn", "--steps", "2", "--warmup", "1",
               "--threads", "1", "--batch-size", "64", "--train-examples", "256",
               "--test-examples", "64", *(["--sync-bn"] if sync else []))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout  # rank 0 alone prints
    out = json.loads(lines[0])
    assert out["processes"] == 2 and out["sync_bn"] is sync
    channels = [6, 16, 120, 84]
    if sync:
        doubles = 44878 - 452 + 2 + sum(4 + 5 * c for c in channels)
        assert out["collectives_per_step"] == 2 + 2 * len(channels)
    else:
        doubles = 44878 + 2 + 452
        assert out["collectives_per_step"] == 2
    assert out["bytes_sent_per_step"] == 8 * doubles
    assert 0 <= out["collective_share"] <= 1
