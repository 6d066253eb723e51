"""Crash consistency of `bnorm train` (docs/failure.md): a run killed with SIGKILL at
random moments (while loading data, mid-epoch, while writing the checkpoint, between the
checkpoint and the metrics file) and resumed each time ends with exactly the metrics
file and the model of a run that was never interrupted, and leaves no temporaries.
"""
import glob
import json
import random
import signal
import subprocess
import time

import numpy as np

from cli_helpers import (BNORM, needs_cli, read_checkpoint, read_metrics, small_dataset,
                         without_timing)

pytestmark = needs_cli

EPOCHS = 40
KILLS = 25


def train_command(args, ckpt, metrics, epochs=EPOCHS):
    resume = ["--resume", str(ckpt)] if ckpt.exists() else []
    return [BNORM, "train", "--epochs", str(epochs), *args, "--checkpoint", str(ckpt),
            "--metrics", str(metrics), *resume]


def timed_run(command):
    t0 = time.monotonic()
    r = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def metrics_in(meta):
    return without_timing([json.loads(line) for line in meta["metrics_jsonl"].splitlines()])


def test_kill_9_at_random_moments_then_resume_equals_an_unbroken_run(tmp_path):
    # A small data set of its own, so that a run starts in a fraction of the time an
    # epoch takes and kills land at every stage, not mostly in loading Fashion-MNIST.
    data = tmp_path / "data"
    data.mkdir()
    small_dataset(data, [i % 10 for i in range(512)])
    args = ["--data", str(data), "--batch-size", "64", "--threads", "1", "--no-progress"]
    ref_ckpt, ref_metrics = tmp_path / "ref.ckpt", tmp_path / "ref.jsonl"
    one_epoch = timed_run(train_command(args, tmp_path / "one.ckpt", tmp_path / "one.jsonl", 1))
    unbroken = timed_run(train_command(args, ref_ckpt, ref_metrics))
    per_epoch = max((unbroken - one_epoch) / (EPOCHS - 1), 0.001)
    start_up = max(one_epoch - per_epoch, 0.0)

    crash = tmp_path / "crash"
    crash.mkdir()
    ckpt, metrics = crash / "c.ckpt", crash / "m.jsonl"
    rng = random.Random(20261202)
    kills, epochs_seen_at_kills = 0, []
    while True:
        p = subprocess.Popen(train_command(args, ckpt, metrics), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        if kills < KILLS:
            if rng.random() < 0.5:
                # Any moment: loading, reading the checkpoint, mid-epoch, writing.
                time.sleep(rng.uniform(0.0, start_up + 2 * per_epoch))
            else:
                # Just after an epoch's line: the process is about to write the
                # checkpoint, then the metrics file (the window of issue 9's defect 3).
                lines, want = 0, rng.randint(1, 2)
                while lines < want:
                    line = p.stdout.readline()
                    if not line:
                        break
                    lines += line.startswith(b"epoch")
                time.sleep(rng.uniform(0.0, per_epoch / 4))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                # Whatever the moment, what is at each path is whole.
                if ckpt.exists():
                    epochs_seen_at_kills.append(int(read_checkpoint(ckpt)[0]["epoch"]))
                if metrics.exists():
                    read_metrics(metrics)
                continue
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        break
    # The kills landed all over the run, not only before the first checkpoint.
    assert kills == KILLS
    assert len(set(epochs_seen_at_kills)) >= 3, epochs_seen_at_kills

    assert without_timing(read_metrics(metrics)) == without_timing(read_metrics(ref_metrics))
    meta, tensors = read_checkpoint(ckpt)
    ref_meta, ref_tensors = read_checkpoint(ref_ckpt)
    assert metrics_in(meta) == metrics_in(ref_meta)
    drop = {"metrics_jsonl"}
    assert {k: v for k, v in meta.items() if k not in drop} == \
        {k: v for k, v in ref_meta.items() if k not in drop}
    assert tensors.keys() == ref_tensors.keys()
    for name, value in tensors.items():
        np.testing.assert_array_equal(value, ref_tensors[name], err_msg=name)
    assert glob.glob(str(crash / "*.tmp.*")) == []
