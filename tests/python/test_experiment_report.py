"""tools/experiment_report.py: the table, the --check rule, and a plot that arrives whole
and never replaces its inputs."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REPORT = os.path.join(ROOT, "tools", "experiment_report.py")


def report(*args):
    return subprocess.run([sys.executable, REPORT, *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def runs(tmp_path):
    paths = {}
    for label, losses in {"lenet": [0.9, 0.6], "lenet-bn": [0.5, 0.3]}.items():
        path = tmp_path / f"{label}.jsonl"
        path.write_text("".join(json.dumps({"model": label, "epoch": e + 1, "train_loss": loss,
                                            "train_acc": 0.8, "test_acc": 0.7, "examples_per_sec": 1e4,
                                            "seconds": 1.0}) + "\n"
                                for e, loss in enumerate(losses)))
        paths[label] = path
    return paths


def run_args(runs):
    return [a for label, path in runs.items() for a in ("--run", f"{label}={path}")]


def test_check_passes_and_the_plot_is_a_whole_png(runs, tmp_path):
    png = tmp_path / "plots" / "e.png"
    r = report(*run_args(runs), "--check", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p for p in os.listdir(png.parent) if ".tmp." in p] == []


@pytest.mark.parametrize("target", ["run file", "directory", "symlink"])
def test_a_plot_path_that_would_destroy_something_is_refused(runs, tmp_path, target):
    before = {label: path.read_bytes() for label, path in runs.items()}
    if target == "run file":
        plot = runs["lenet"]
    elif target == "directory":
        plot = tmp_path
    else:
        plot = tmp_path / "link.png"
        plot.symlink_to(runs["lenet-bn"])
    r = report(*run_args(runs), "--plot", str(plot))
    assert r.returncode == 2 and "--plot" in r.stderr, r.stderr
    assert {label: path.read_bytes() for label, path in runs.items()} == before
