"""The `bnorm` command line: help, argument errors, data errors, and short
end-to-end runs (train, metrics, checkpoint, evaluate, resume, bench).

The runs use a few hundred Fashion-MNIST examples (Debian's dataset-fashion-mnist,
installed by scripts/install-deps), so the whole file takes seconds.
"""
import json
import os
import subprocess

import numpy as np
import pytest

from cli_helpers import (BNORM, SMALL, needs_cli, needs_data, one_line_error,
                         read_metrics, run, small_dataset, without_timing)

pytestmark = needs_cli


@pytest.mark.parametrize("sub", [[], ["train"], ["evaluate"], ["bench"], ["bench", "kernels"],
                                 ["bench", "train"], ["models"]])
def test_help(sub):
    r = run(*sub, "--help")
    assert r.returncode == 0
    assert "Usage" in r.stdout or "Options" in r.stdout


def test_models_lists_every_model():
    r = run("models")
    assert r.returncode == 0
    for name in ["lenet", "lenet-bn", "mlp", "mlp-bn", "vgg", "vgg-bn"]:
        assert f"\n{name} (" in "\n" + r.stdout
    assert "lenet-bn (44878 parameters" in r.stdout  # d2l's LeNet with BN


@pytest.mark.parametrize("args, needle", [
    ([], "subcommand"),
    (["fly"], "fly"),
    (["train", "--model", "resnet"], "resnet"),
    (["train", "--epochs", "0"], "epochs"),
    (["train", "--lr", "-1"], "lr"),
    (["train", "--lr", "abc"], "lr"),
    (["train", "--batch-size", "0"], "batch-size"),
    (["train", "--momentum", "1.5"], "momentum"),
    (["train", "--threads", "-2"], "threads"),
    (["train", "--resume", "/no/such/file.ckpt"], "resume"),
    (["train", "--frobnicate"], "frobnicate"),
    (["evaluate"], "checkpoint"),
    (["bench"], "kernels"),
    (["bench", "fly"], "fly"),
    (["bench", "--steps", "1"], "kernels or train"),
    (["bench", "train", "--steps", "0"], "steps"),
    (["bench", "kernels", "--shapes", "8x0x5"], "--shapes"),
    (["bench", "kernels", "--shapes", "abc"], "--shapes"),
    (["bench", "kernels", "--shapes", "8"], "--shapes"),
    (["bench", "kernels", "--threads", "0"], "--threads"),
    (["bench", "kernels", "--threads", "1,x"], "--threads"),
    (["bench", "kernels", "--passes", "foo"], "--passes"),
    (["bench", "kernels", "--layouts", "nchw"], "--layouts"),
    (["bench", "kernels", "--repeats", "0"], "--repeats"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle):
    line = one_line_error(run(*args), 2)
    assert needle in line


def test_missing_data_directory_names_the_file(tmp_path):
    line = one_line_error(run("train", "--data", str(tmp_path / "nowhere"), *SMALL), 1)
    assert "nowhere" in line


def test_corrupt_labels_name_the_file(tmp_path):
    small_dataset(tmp_path, [1, 2, 3, 12, 4, 5, 6, 7])
    line = one_line_error(run("train", "--data", str(tmp_path), "--no-progress"), 1)
    assert "train-labels-idx1-ubyte.gz" in line and "12" in line


def test_a_tiny_data_set_in_another_directory_trains(tmp_path):
    small_dataset(tmp_path, list(np.arange(64) % 10))
    r = run("train", "--data", str(tmp_path), "--epochs", "1", "--batch-size", "16",
            "--threads", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "64 train / 16 test examples" in r.stdout


@needs_data
def test_train_metrics_checkpoint_evaluate(tmp_path):
    metrics, ckpt = tmp_path / "m.jsonl", tmp_path / "c.ckpt"
    r = run("train", "--model", "lenet-bn", "--epochs", "2", *SMALL,
            "--metrics", str(metrics), "--checkpoint", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert "epoch  1/2" in r.stdout and "epoch  2/2" in r.stdout
    assert "examples/sec" in r.stdout
    assert r.stderr == ""  # no progress bar off a terminal
    rows = read_metrics(metrics)
    assert [row["epoch"] for row in rows] == [1, 2]
    for key in ["epoch", "train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds"]:
        assert key in rows[0]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert 0 <= rows[1]["test_acc"] <= 1 and rows[1]["examples_per_sec"] > 0

    e = run("evaluate", "--checkpoint", str(ckpt), "--test-examples", "256", "--threads", "2")
    assert e.returncode == 0, e.stderr
    assert f"test acc {rows[1]['test_acc']:.4f}" in e.stdout
    assert "after 2 epochs" in e.stdout and "examples/sec" in e.stdout


@needs_data
def test_same_seed_same_metrics(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (a, b):
        assert run("train", "--epochs", "1", *SMALL, "--metrics", str(path)).returncode == 0
    assert without_timing(read_metrics(a)) == without_timing(read_metrics(b))


@needs_data
def test_resume_continues_exactly(tmp_path):
    straight, split, ckpt = tmp_path / "s.jsonl", tmp_path / "p.jsonl", tmp_path / "c.ckpt"
    assert run("train", "--epochs", "3", *SMALL, "--momentum", "0.9",
               "--metrics", str(straight)).returncode == 0
    first = run("train", "--epochs", "1", *SMALL, "--momentum", "0.9",
                "--metrics", str(split), "--checkpoint", str(ckpt))
    assert first.returncode == 0, first.stderr
    second = run("train", "--epochs", "3", *SMALL, "--resume", str(ckpt),
                 "--metrics", str(split), "--checkpoint", str(ckpt))
    assert second.returncode == 0, second.stderr
    assert "resumed after epoch 1" in second.stdout
    assert without_timing(read_metrics(split)) == without_timing(read_metrics(straight))

    done = run("train", "--epochs", "3", *SMALL, "--resume", str(ckpt))
    assert "already trained 3 epochs" in one_line_error(done, 2)
    other = run("train", "--model", "mlp", "--epochs", "5", *SMALL, "--resume", str(ckpt))
    assert "does not match" in one_line_error(other, 2)


@needs_data
def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "c.ckpt"
    assert run("train", "--epochs", "1", *SMALL, "--checkpoint", str(ckpt)).returncode == 0
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    line = one_line_error(run("evaluate", "--checkpoint", str(ckpt)), 1)
    assert "checksum mismatch" in line and str(ckpt) in line
    not_a_checkpoint = tmp_path / "x.ckpt"
    not_a_checkpoint.write_text("hello")
    assert "not a bnorm checkpoint" in one_line_error(
        run("evaluate", "--checkpoint", str(not_a_checkpoint)), 1)


@needs_data
def test_bench_prints_one_json_object():
    r = run("bench", "train", "--model", "lenet-bn", "--steps", "2", "--warmup", "1",
            "--threads", "1", "--batch-size", "64", "--train-examples", "256",
            "--test-examples", "128")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "lenet-bn" and out["threads"] == 1 and out["batch_size"] == 64
    assert out["train_examples_per_sec"] > 0 and out["inference_examples_per_sec"] > 0
    # Alone (no mpirun): no communication to report.
    assert (out["processes"], out["collectives_per_step"], out["bytes_sent_per_step"]) == (1, 0, 0)


@needs_data
def test_bench_profile_times_every_layer():
    r = run("bench", "train", "--model", "lenet-bn", "--steps", "3", "--warmup", "1",
            "--threads", "1", "--batch-size", "64", "--train-examples", "256",
            "--test-examples", "128", "--profile")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    layers = out["layers"]
    assert [layer["index"] for layer in layers] == list(range(len(layers)))
    assert layers[0]["layer"].startswith("Conv2d(1, 6") and layers[-1]["layer"] == "Linear(84, 10)"
    assert all(layer["forward_ms"] >= 0 and layer["backward_ms"] >= 0 for layer in layers)
    # The layers are most of a step (the rest: gathering the batch, the loss, SGD).
    total = sum(layer["forward_ms"] + layer["backward_ms"] for layer in layers)
    assert 0.3 * out["ms_per_step"] < total <= out["ms_per_step"] * 1.01, (total, out)
    assert "layers" not in json.loads(run("bench", "train", "--model", "lenet", "--steps", "1",
                                          "--warmup", "0", "--threads", "1", "--batch-size", "64",
                                          "--train-examples", "64", "--test-examples", "64").stdout)


@needs_data
def test_repeated_option_takes_the_last_value(tmp_path):
    # scripts/experiment passes the seed's settings first and the user's after them.
    r = run("train", "--epochs", "10", "--epochs", "1", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "epoch  1/1" in r.stdout


@needs_data
def test_last_batch_of_one_with_batch_norm_is_a_usage_error():
    r = run("train", "--model", "lenet-bn", "--train-examples", "65", "--batch-size", "64",
            "--threads", "1", "--no-progress")
    line = one_line_error(r, 2)
    assert "--batch-size" in line and "last batch of 1" in line


@needs_data
def test_resume_may_turn_momentum_on(tmp_path):
    ckpt = tmp_path / "c.ckpt"
    assert run("train", "--epochs", "1", *SMALL, "--checkpoint", str(ckpt)).returncode == 0
    r = run("train", "--epochs", "2", *SMALL, "--resume", str(ckpt), "--momentum", "0.9",
            "--checkpoint", str(ckpt))
    assert r.returncode == 0, r.stderr
    r = run("train", "--epochs", "3", *SMALL, "--resume", str(ckpt), "--momentum", "0")
    assert r.returncode == 0, r.stderr


def test_unwritable_checkpoint_directory_fails_before_training(tmp_path):
    line = one_line_error(run("train", "--checkpoint", str(tmp_path / "no" / "dir" / "c.ckpt"),
                              *SMALL), 2)
    assert "--checkpoint" in line


@needs_data
def test_population_statistics_are_reported(tmp_path):
    metrics = tmp_path / "m.jsonl"
    r = run("train", "--model", "lenet-bn", "--epochs", "1", *SMALL, "--population-stats",
            "--metrics", str(metrics))
    assert r.returncode == 0, r.stderr
    assert "population stats" in r.stdout
    row = read_metrics(metrics)[0]
    assert 0 <= row["test_acc_population"] <= 1 and row["test_loss_population"] > 0


@needs_data
def test_debug_log_names_the_kernels_and_blas():
    env = dict(os.environ, BNORM_LOG="1")
    r = subprocess.run([BNORM, "bench", "train", "--steps", "1", "--warmup", "0", "--threads", "1",
                        "--batch-size", "64", "--train-examples", "128", "--test-examples", "64"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "bnorm: batch norm kernels for x86-64" in r.stderr
    assert "fused channel by channel up to" in r.stderr and "streaming stores above" in r.stderr
    assert "bnorm: BLAS" in r.stderr and "kernels for" in r.stderr
    quiet = run("bench", "train", "--steps", "1", "--warmup", "0", "--threads", "1",
                "--batch-size", "64", "--train-examples", "128", "--test-examples", "64")
    assert "bnorm:" not in quiet.stderr


@needs_data
def test_resume_drops_metrics_lines_past_the_checkpoint(tmp_path):
    # A run that wrote epoch 2's line but died before saving epoch 2's checkpoint: the
    # resumed run must not leave epoch 2 twice.
    metrics, ckpt = tmp_path / "m.jsonl", tmp_path / "c.ckpt"
    assert run("train", "--epochs", "1", *SMALL, "--metrics", str(metrics),
               "--checkpoint", str(ckpt)).returncode == 0
    with open(metrics, "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 9.0}) + "\n")
    r = run("train", "--epochs", "2", *SMALL, "--resume", str(ckpt), "--metrics", str(metrics))
    assert r.returncode == 0, r.stderr
    rows = read_metrics(metrics)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1]["train_loss"] != 9.0


@needs_data
def test_a_diverged_run_stops_with_an_error_and_writes_no_nan(tmp_path):
    metrics, ckpt = tmp_path / "m.jsonl", tmp_path / "c.ckpt"
    r = run("train", "--model", "mlp", "--lr", "1e30", "--epochs", "2", *SMALL,
            "--metrics", str(metrics), "--checkpoint", str(ckpt))
    line = one_line_error(r, 1)
    assert "diverged" in line and "epoch 1" in line and "--lr" in line
    assert "epoch  1/2" not in r.stdout
    assert read_metrics(metrics) == [] and not ckpt.exists()


@needs_data
def test_bench_with_fewer_examples_than_a_batch_is_a_usage_error():
    r = run("bench", "train", "--train-examples", "10", "--batch-size", "64", "--steps", "1",
            "--threads", "1")
    line = one_line_error(r, 2)
    assert "--train-examples" in line and "--batch-size" in line


# The peers plugin (ATen and oneDNN) beside the binary, where CMake puts it.
PEERS_PLUGIN = os.environ.get(
    "BNORM_PEERS_PLUGIN",
    os.path.join(os.path.dirname(BNORM), "bench", "peers", "libbnorm_bench_peers.so"))
KERNELS_SMALL = ["bench", "kernels", "--shapes", "8x3x5x5", "--threads", "1", "--repeats", "2",
                 "--min-ms", "1"]
PASSES = ["forward_train", "inference", "backward"]
LAYOUTS = ["channels_first", "channels_last"]


def table_rows(stdout):
    """The cells of the kernel table, one dict per row, keyed by the header's columns."""
    lines = stdout.strip().splitlines()
    header = lines[0].split()
    assert header == ["thr", "shape", "layout", "pass", "bnorm", "aten", "onednn", "(format)",
                      "copy", "b/aten", "b/onednn", "b/copy"], lines[0]
    assert lines[-1].startswith("GB/s = model bytes / median time"), lines[-1]
    return [dict(zip(header, line.split())) for line in lines[1:-1]]


def test_bench_kernels_prints_the_table_and_json(tmp_path):
    path = tmp_path / "k.json"
    r = run(*KERNELS_SMALL, "--json", str(path))
    assert r.returncode == 0, r.stderr
    rows = table_rows(r.stdout)
    assert [(row["thr"], row["shape"], row["layout"], row["pass"]) for row in rows] == [
        ("1", "(8,3,5,5)", layout, p) for layout in LAYOUTS for p in PASSES]
    cells = json.loads(path.read_text())
    assert cells["unit"] == "GB/s"
    assert [(c["threads"], c["shape"], c["layout"], c["pass"]) for c in cells["rows"]] == [
        (1, [8, 3, 5, 5], layout, p) for layout in LAYOUTS for p in PASSES]
    for row, cell in zip(rows, cells["rows"]):
        assert cell["bnorm"] > 0 and cell["copy"] > 0
        assert float(row["bnorm"]) > 0 and row["b/copy"].endswith("x")
    if os.path.exists(PEERS_PLUGIN):  # built where libtorch-dev and libdnnl-dev are
        assert "note:" not in r.stderr, r.stderr
        for row, cell in zip(rows, cells["rows"]):
            assert cell["aten"] > 0 and cell["onednn"] > 0, cell
            assert float(row["aten"]) > 0 and float(row["onednn"]) > 0
            assert row["(format)"] in ({"nchw", "nChw16c"} if cell["layout"] == "channels_first"
                                       else {"nhwc"})


def test_bench_kernels_without_the_plugin_shows_dashes(tmp_path):
    path = tmp_path / "k.json"
    env = dict(os.environ, BNORM_PEERS_PLUGIN="/nonexistent")
    r = subprocess.run([BNORM, *KERNELS_SMALL, "--layouts", "channels_last", "--passes",
                        "backward", "--json", str(path)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    rows = table_rows(r.stdout)
    assert [(row["layout"], row["pass"]) for row in rows] == [("channels_last", "backward")]
    row = rows[0]
    assert row["aten"] == row["onednn"] == row["(format)"] == "-"
    assert row["b/aten"] == row["b/onednn"] == "-" and float(row["bnorm"]) > 0
    cell = json.loads(path.read_text())["rows"][0]
    assert cell["aten"] is None and cell["onednn"] is None and cell["bnorm"] > 0
    note = r.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("bnorm: note: "), r.stderr
    assert "/nonexistent" in note[0] and "libtorch-dev" in note[0] and "libdnnl-dev" in note[0]


def test_bench_kernels_unwritable_json_fails_before_measuring(tmp_path):
    line = one_line_error(run(*KERNELS_SMALL, "--json", str(tmp_path / "no" / "k.json")), 2)
    assert "--json" in line and r"k.json" in line
