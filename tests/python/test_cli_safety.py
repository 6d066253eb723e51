"""Nothing lost, nothing hidden (docs/failure.md): the `bnorm` command refuses, before any
work, every output path that would destroy a file (a collision with another output or
an input, a link, a directory, a device, a file it did not write); a run killed at any
moment leaves whole files and a metrics file that --resume completes with each epoch
exactly once; training that diverges stops with an error and saves nothing; and every
bad argument is one clear line.
"""
import os
import re
import shutil
import stat
import subprocess

import pytest

from cli_helpers import (BNORM as BNORM_CLI_PATH, FASHION, needs_cli, needs_data, one_line_error,
                         read_checkpoint, read_metrics, run, small_dataset, write_checkpoint)

pytestmark = needs_cli

TINY = ["--train-examples", "256", "--test-examples", "64", "--batch-size", "64",
        "--threads", "1", "--no-progress"]


def snapshot(*paths):
    """The bytes (or the link target) at each path, to show nothing was touched."""
    out = {}
    for p in paths:
        p = str(p)
        if os.path.islink(p):
            out[p] = ("link", os.readlink(p))
        elif os.path.isdir(p):
            out[p] = ("dir", sorted(os.listdir(p)))
        elif stat.S_ISFIFO(os.stat(p).st_mode):
            out[p] = ("fifo",)  # reading it would wait for a writer
        else:
            out[p] = open(p, "rb").read()
    return out


def refused_before_training(r, *needles):
    line = one_line_error(r, 2)
    for needle in needles:
        assert needle in line, line
    assert "epoch" not in r.stdout and "parameters" not in r.stdout, r.stdout
    return line


@pytest.fixture
def trained(tmp_path):
    """A checkpoint and metrics file of one epoch."""
    ckpt, metrics = tmp_path / "a.ckpt", tmp_path / "a.jsonl"
    r = run("train", "--epochs", "1", *TINY, "--checkpoint", str(ckpt), "--metrics", str(metrics))
    assert r.returncode == 0, r.stderr
    return ckpt, metrics


# --- 1. outputs that are the same file as another output or an input ----------------

@needs_data
def test_resume_and_metrics_the_same_file_is_refused(trained):
    ckpt, _ = trained
    before = snapshot(ckpt)
    r = run("train", "--epochs", "2", *TINY, "--resume", str(ckpt), "--metrics", str(ckpt))
    refused_before_training(r, "--metrics", str(ckpt))
    assert snapshot(ckpt) == before


@needs_data
def test_metrics_and_checkpoint_the_same_file_is_refused(tmp_path):
    out = tmp_path / "s.out"
    r = run("train", "--epochs", "1", *TINY, "--metrics", str(out), "--checkpoint", str(out))
    refused_before_training(r, "--metrics", "--checkpoint", "same file")
    assert not out.exists()


@needs_data
def test_outputs_that_are_one_file_by_another_name_are_refused(trained, tmp_path):
    ckpt, metrics = trained
    os.link(metrics, tmp_path / "hard.jsonl")
    (tmp_path / "sub").mkdir()
    before = snapshot(ckpt, metrics)
    # A hard link, and a path through "sub/..": each is the metrics file.
    for other in [tmp_path / "hard.jsonl", f"{tmp_path}/sub/../a.jsonl"]:
        r = run("train", "--epochs", "2", *TINY, "--resume", str(ckpt),
                "--metrics", str(metrics), "--checkpoint", str(other), "--force")
        refused_before_training(r, "same file")
    # An absent file named two ways.
    r = run("train", "--epochs", "1", *TINY, "--metrics", str(tmp_path / "new.jsonl"),
            "--checkpoint", f"{tmp_path}/sub/../new.jsonl")
    refused_before_training(r, "same file")
    assert snapshot(ckpt, metrics) == before and not (tmp_path / "new.jsonl").exists()


@needs_data
@pytest.mark.parametrize("option", ["--metrics", "--checkpoint"])
def test_an_output_over_a_data_file_is_refused_even_with_force(tmp_path, option):
    data = tmp_path / "data"
    shutil.copytree(FASHION, data)
    target = data / "t10k-labels-idx1-ubyte.gz"
    before = snapshot(target)
    r = run("train", "--epochs", "1", *TINY, "--data", str(data), option, str(target), "--force")
    refused_before_training(r, option, "--data", "input")
    assert snapshot(target) == before


@needs_data
def test_checkpoint_may_be_the_resumed_file(trained):
    ckpt, metrics = trained
    r = run("train", "--epochs", "2", *TINY, "--resume", str(ckpt), "--checkpoint", str(ckpt),
            "--metrics", str(metrics))
    assert r.returncode == 0, r.stderr
    assert read_checkpoint(ckpt)[0]["epoch"] == "2"
    assert [row["epoch"] for row in read_metrics(metrics)] == [1, 2]


# --- 2. what an output path may be -------------------------------------------------

@needs_data
@pytest.mark.parametrize("kind", ["directory", "symlink", "device", "fifo", "dangling symlink"])
@pytest.mark.parametrize("option", ["--checkpoint", "--metrics"])
def test_a_non_regular_output_is_refused_before_training(trained, tmp_path, kind, option):
    ckpt, _ = trained
    path = tmp_path / "out"
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        path.symlink_to(ckpt)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path = "/dev/null"
    watched = [path, ckpt] if kind != "device" else [ckpt]
    before = snapshot(*watched)
    r = run("train", "--epochs", "1", *TINY, option, str(path), "--force")
    words = {"directory": "a directory", "symlink": "a symbolic link", "device": "a device",
             "fifo": "a FIFO", "dangling symlink": "a symbolic link"}
    refused_before_training(r, option, str(path), words[kind])
    assert snapshot(*watched) == before


@needs_data
@pytest.mark.parametrize("option", ["--checkpoint", "--metrics"])
def test_a_file_bnorm_did_not_write_needs_force(tmp_path, option):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    r = run("train", "--epochs", "1", *TINY, option, str(path))
    refused_before_training(r, option, "--force")
    assert path.read_text() == "my notes\n"
    r = run("train", "--epochs", "1", *TINY, option, str(path), "--force")
    assert r.returncode == 0, r.stderr
    assert path.read_bytes() != b"my notes\n"


@needs_data
def test_files_bnorm_wrote_and_empty_files_are_replaced(trained, tmp_path):
    ckpt, metrics = trained
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    r = run("train", "--epochs", "2", *TINY, "--checkpoint", str(ckpt), "--metrics", str(metrics))
    assert r.returncode == 0, r.stderr
    r = run("train", "--epochs", "1", *TINY, "--checkpoint", str(empty))
    assert r.returncode == 0, r.stderr
    assert [row["epoch"] for row in read_metrics(metrics)] == [1, 2]
    assert read_checkpoint(empty)[0]["epoch"] == "1"


def test_unwritable_directory_is_refused_before_training(tmp_path):
    for option in ["--checkpoint", "--metrics"]:
        line = one_line_error(run("train", option, str(tmp_path / "no" / "dir" / "x"), *TINY), 2)
        assert option in line and "does not exist" in line


# --- 3. kill safety ------------------------------------------------------------------

@needs_data
def test_resume_completes_metrics_the_checkpoint_got_ahead_of(tmp_path):
    # A kill after the checkpoint of epoch 2 was renamed into place and before the
    # metrics file was rewritten: the metrics file still ends at epoch 1.
    ckpt, metrics = tmp_path / "c.ckpt", tmp_path / "m.jsonl"
    assert run("train", "--epochs", "2", *TINY, "--checkpoint", str(ckpt),
               "--metrics", str(metrics)).returncode == 0
    full = read_metrics(metrics)
    with open(metrics) as f:
        first = f.readline()
    metrics.write_text(first)
    r = run("train", "--epochs", "3", *TINY, "--resume", str(ckpt), "--checkpoint", str(ckpt),
            "--metrics", str(metrics))
    assert r.returncode == 0, r.stderr
    rows = read_metrics(metrics)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[:2] == full  # epoch 2's line as the run that trained it wrote it


@needs_data
def test_resume_writes_the_checkpoints_metrics_to_a_new_file(trained, tmp_path):
    ckpt, metrics = trained
    other = tmp_path / "other.jsonl"
    r = run("train", "--epochs", "2", *TINY, "--resume", str(ckpt), "--metrics", str(other))
    assert r.returncode == 0, r.stderr
    assert read_metrics(other)[0] == read_metrics(metrics)[0]
    assert [row["epoch"] for row in read_metrics(other)] == [1, 2]


@needs_data
def test_stale_temporaries_are_removed_and_live_ones_kept(trained, tmp_path):
    ckpt, metrics = trained
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f"a.ckpt.tmp.{dead.pid}", tmp_path / f"a.jsonl.tmp.{dead.pid}"]
    live = tmp_path / f"a.ckpt.tmp.{os.getpid()}"  # this test's process is running
    unrelated = tmp_path / "a.ckpt.tmp.notapid"
    for p in stale + [live, unrelated]:
        p.write_bytes(b"half a checkpoint")
    r = run("train", "--epochs", "2", *TINY, "--resume", str(ckpt), "--checkpoint", str(ckpt),
            "--metrics", str(metrics))
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in stale)
    assert live.exists() and unrelated.exists()


# --- 6. divergence -----------------------------------------------------------------

@needs_data
def test_divergence_keeps_the_last_good_checkpoint(trained):
    ckpt, metrics = trained
    before = snapshot(ckpt, metrics)
    r = run("train", "--epochs", "3", *TINY, "--resume", str(ckpt), "--checkpoint", str(ckpt),
            "--metrics", str(metrics), "--lr", "1e300")
    line = one_line_error(r, 1)
    assert "diverged" in line and "epoch 2" in line and "keeps epoch 1" in line
    assert snapshot(ckpt, metrics) == before
    _, tensors = read_checkpoint(ckpt)
    assert all(v.dtype.kind != "f" or (abs(v) < float("inf")).all() for v in tensors.values())


# --- 8. errors about the arguments and the data, before any training -------------------

@pytest.mark.parametrize("args, needle", [
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--momentum", "nan"], "--momentum"),
    (["train", "--weight-decay", "inf"], "--weight-decay"),
    (["train", "--weight-decay", "nan"], "--weight-decay"),
    (["train", "--threads", "1000"], "--threads 1000"),
    (["bench", "train", "--lr", "nan"], "--lr"),
    (["bench", "train", "--lr", "0"], "--lr"),
    (["bench", "kernels", "--min-ms", "nan"], "--min-ms"),
    (["bench", "kernels", "--min-ms", "-1"], "--min-ms"),
])
def test_bad_numbers_are_short_clear_errors(args, needle):
    line = one_line_error(run(*args), 2)
    assert needle in line and len(line) < 200, line


def test_omp_thread_limit_caps_the_default_and_refuses_more(tmp_path):
    # OpenBLAS told of 2 threads in a team OMP_THREAD_LIMIT keeps at 1 waited forever.
    small_dataset(tmp_path, [i % 10 for i in range(64)])
    args = ["train", "--data", str(tmp_path), "--epochs", "1", "--batch-size", "16",
            "--no-progress"]
    r = run(*args, env={"OMP_THREAD_LIMIT": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "threads 1" in r.stdout
    line = one_line_error(run(*args, "--threads", "2", env={"OMP_THREAD_LIMIT": "1"}), 2)
    assert "--threads 2" in line and "OMP_THREAD_LIMIT" in line


@needs_data
def test_batch_size_one_with_batch_norm_is_the_clis_error():
    line = one_line_error(run("train", "--batch-size", "1", *TINY[:4], "--no-progress"), 2)
    assert "--batch-size 1" in line and "batch norm" in line


@pytest.mark.parametrize("which", ["train", "test"])
def test_images_of_another_size_fail_before_training(tmp_path, which):
    sizes = {"train_size": (32, 32)} if which == "train" else {"test_size": (28, 27)}
    small_dataset(tmp_path, list(range(10)) * 4, **sizes)
    r = run("train", "--data", str(tmp_path), "--epochs", "1", "--batch-size", "8",
            "--threads", "1", "--no-progress")
    line = one_line_error(r, 1)
    assert ("train-images" if which == "train" else "t10k-images") in line
    assert "28 x 28" in line and "epoch" not in r.stdout


# --- every file arrives whole: fsync before rename, the directory after -----------------

STRACE = shutil.which("strace")


@pytest.mark.skipif(STRACE is None, reason="strace not installed (scripts/install-deps)")
def test_each_output_is_fsynced_renamed_then_its_directory_fsynced(tmp_path):
    small_dataset(tmp_path, [i % 10 for i in range(64)])
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([STRACE, "-f", "-qq", "-e", "signal=none", "-e",
                        "trace=openat,write,fsync,rename,renameat,renameat2,close", "-o",
                        str(tmp_path / "trace"), BNORM_CLI_PATH, "train", "--epochs", "2",
                        "--data", str(tmp_path), "--batch-size", "16", "--threads", "1",
                        "--no-progress", "--checkpoint", str(out / "c.ckpt"),
                        "--metrics", str(out / "m.jsonl")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    calls = [re.sub(r"^\d+ +", "", line) for line in open(tmp_path / "trace")]
    renames = [i for i, c in enumerate(calls) if c.startswith("rename")]
    # Metrics at start, then per epoch the checkpoint and the metrics.
    assert len(renames) == 5, calls
    for i in renames:
        tmp, final = re.match(r'rename\("([^"]+)", "([^"]+)"\)', calls[i]).groups()
        assert re.fullmatch(re.escape(final) + r"\.tmp\.\d+", tmp), calls[i]
        opened = max(j for j in range(i) if f'"{tmp}"' in calls[j] and "O_CREAT" in calls[j])
        fd = re.search(r"= (\d+)$", calls[opened].strip()).group(1)
        between = calls[opened + 1:i]
        synced = [j for j, c in enumerate(between) if c.startswith(f"fsync({fd})")]
        assert synced, (tmp, between)
        assert not any(c.startswith(f"write({fd},") for c in between[synced[-1]:]), between
        after = calls[i + 1:]
        dir_open = next(j for j, c in enumerate(after) if "O_DIRECTORY" in c or
                        c.startswith("rename"))
        dir_fd = re.search(r"= (\d+)$", after[dir_open].strip()).group(1)
        assert any(c.startswith(f"fsync({dir_fd})") for c in after[dir_open + 1:dir_open + 3]), \
            after[:dir_open + 3]
        assert f'"{out}"' in after[dir_open], after[dir_open]


# --- found in review ---------------------------------------------------------------------

@needs_data
def test_an_input_named_like_a_stale_temporary_is_kept(trained, tmp_path):
    ckpt, _ = trained
    dead = subprocess.Popen(["true"])
    dead.wait()
    resume = tmp_path / f"a.ckpt.tmp.{dead.pid}"  # a crash's leftover the user resumes from
    shutil.copy(ckpt, resume)
    r = run("train", "--epochs", "2", *TINY, "--resume", str(resume), "--checkpoint", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert resume.exists()


@needs_data
def test_divergence_names_only_a_checkpoint_that_holds_the_last_epoch(trained, tmp_path):
    ckpt, _ = trained
    new = tmp_path / "new.ckpt"
    r = run("train", "--epochs", "3", *TINY, "--resume", str(ckpt), "--checkpoint", str(new),
            "--lr", "1e300")
    line = one_line_error(r, 1)
    assert f"{ckpt} keeps epoch 1" in line and str(new) not in line
    assert not new.exists()


@needs_data
def test_resume_refuses_another_runs_metrics_file(trained, tmp_path):
    ckpt, _ = trained
    other = tmp_path / "other.jsonl"
    assert run("train", "--epochs", "1", *TINY, "--seed", "5", "--metrics", str(other)).returncode == 0
    before = snapshot(other)
    r = run("train", "--epochs", "2", *TINY, "--resume", str(ckpt), "--metrics", str(other))
    refused_before_training(r, "--metrics", "another run", "--force")
    assert snapshot(other) == before
    r = run("train", "--epochs", "2", *TINY, "--resume", str(ckpt), "--metrics", str(other),
            "--force")
    assert r.returncode == 0, r.stderr
    assert [row["epoch"] for row in read_metrics(other)] == [1, 2]


@needs_data
def test_an_older_checkpoint_keeps_the_whole_lines_of_its_model_once(trained, tmp_path):
    # A checkpoint from before metrics_jsonl, and the metrics file an older bnorm
    # appended to: a duplicate, another model's line, a line torn by a crash.
    ckpt, metrics = trained
    meta, tensors = read_checkpoint(ckpt)
    del meta["metrics_jsonl"]
    old = tmp_path / "old.ckpt"
    write_checkpoint(old, meta, tensors)
    first = metrics.read_text()
    metrics.write_text(first + first + first.replace('"lenet-bn"', '"mlp"') + first[:40] + "\n")
    r = run("train", "--epochs", "2", *TINY, "--resume", str(old), "--metrics", str(metrics))
    assert r.returncode == 0, r.stderr
    assert [row["epoch"] for row in read_metrics(metrics)] == [1, 2]
    assert metrics.read_text().startswith(first)
    # With no line of epoch 1 at all, the run says so.
    metrics.write_text("")
    r = run("train", "--epochs", "2", *TINY, "--resume", str(old), "--metrics", str(metrics))
    assert r.returncode == 0 and "epoch(s) 1" in r.stderr and "older bnorm" in r.stderr


def test_batch_size_one_is_refused_before_the_data_is_read(tmp_path):
    r = run("train", "--batch-size", "1", "--data", str(tmp_path / "nowhere"), "--no-progress")
    line = one_line_error(r, 2)
    assert "--batch-size 1" in line
