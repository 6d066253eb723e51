"""`bnorm bench kernels` with the normalization family (issue 10, "Speed"): the layer,
group, instance and RMS norm rows appear beside batch norm's, the JSON carries the norm
and groups of each cell, and bench/kernel_targets.py judges them by the family's target
(the lower of 1.5x the faster peer and 80% of the copy). Tiny shapes, one timing each.
"""
import importlib.util
import json
import os
import pathlib

import pytest

from cli_helpers import BNORM, needs_cli, one_line_error, run

pytestmark = needs_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("kernel_targets", ROOT / "bench" / "kernel_targets.py")
kernel_targets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel_targets)

PEERS_PLUGIN = os.environ.get(
    "BNORM_PEERS_PLUGIN",
    os.path.join(os.path.dirname(BNORM), "bench", "peers", "libbnorm_bench_peers.so"))
FAST = ["--threads", "1", "--repeats", "1", "--min-ms", "0"]
TINY = ["--shapes", "4x3x5x5", "--layer-shapes", "6x40", "--group-shapes", "2x8x3x3:4",
        "--instance-shapes", "2x4x3x3", "--rms-shapes", "6x40"]
LAYOUTS = ["channels_first", "channels_last"]
TRAIN = ["forward_train", "backward"]

# (norm, groups, shape, layout, pass) of every cell, in the table's order.
EXPECTED = (
    [("batch", None, [4, 3, 5, 5], layout, p) for layout in LAYOUTS
     for p in ["forward_train", "inference", "backward"]]
    + [("layer", None, [6, 40], "rows", p) for p in TRAIN]
    + [("group", 4, [2, 8, 3, 3], layout, p) for layout in LAYOUTS for p in TRAIN]
    + [("instance", 4, [2, 4, 3, 3], layout, p) for layout in LAYOUTS for p in TRAIN]
    + [("rms", None, [6, 40], "rows", p) for p in TRAIN])
# Where each peer has the operation (PyTorch 1.13 has no RMS norm, oneDNN 2.6 no group norm).
ATEN = {"batch", "layer", "group", "instance"}
ONEDNN = {"batch", "layer"}


def table_rows(stdout):
    lines = stdout.strip().splitlines()
    header = lines[0].split()
    assert header == ["norm", "thr", "shape", "layout", "pass", "bnorm", "aten", "onednn",
                      "(format)", "copy", "b/aten", "b/onednn", "b/copy"], lines[0]
    assert lines[-1].startswith("GB/s = model bytes / median time"), lines[-1]
    return [dict(zip(header, line.split())) for line in lines[1:-1]]


@pytest.fixture(scope="module")
def family_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("family") / "family.json"
    r = run("bench", "kernels", *FAST, *TINY, "--json", str(path))
    assert r.returncode == 0, r.stderr
    return r, path


def test_every_norm_has_its_rows(family_table):
    r, _ = family_table
    rows = table_rows(r.stdout)
    label = {"group": "group:4"}
    assert [(row["norm"], row["shape"], row["layout"], row["pass"]) for row in rows] == [
        (label.get(n, n), "(" + ",".join(map(str, s)) + ")", layout, p)
        for n, _, s, layout, p in EXPECTED]
    for row in rows:
        assert float(row["bnorm"]) > 0 and float(row["copy"]) > 0, row
        norm = row["norm"].split(":")[0]
        if norm not in ATEN:
            assert row["aten"] == row["b/aten"] == "-", row
        if norm not in ONEDNN:
            assert row["onednn"] == row["(format)"] == "-", row
    # The unsupported peers are "-" without a message; nothing else failed.
    if os.path.exists(PEERS_PLUGIN):
        assert r.stderr.strip() == "", r.stderr


def test_json_carries_norm_and_groups(family_table):
    _, path = family_table
    cells = json.loads(path.read_text())["rows"]
    assert [(c["norm"], c["groups"], c["shape"], c["layout"], c["pass"]) for c in cells] == \
        EXPECTED
    for cell in cells:
        assert cell["bnorm"] > 0 and cell["copy"] > 0 and cell["threads"] == 1
        if cell["norm"] not in ATEN:
            assert cell["aten"] is None
        if cell["norm"] not in ONEDNN:
            assert cell["onednn"] is None and cell["onednn_format"] is None
    if os.path.exists(PEERS_PLUGIN):
        for cell in cells:
            assert (cell["aten"] is not None) == (cell["norm"] in ATEN), cell
            assert (cell["onednn"] is not None) == (cell["norm"] in ONEDNN), cell
        layer = [c for c in cells if c["norm"] == "layer"]
        assert {c["onednn_format"] for c in layer} == {"ab"}


def test_kernel_targets_judges_the_family(family_table, capsys):
    _, path = family_table
    rows = kernel_targets.load_rows(str(path))
    for row in rows:
        goal, why = kernel_targets.target(row)
        peers = [row[p] for p in ("aten", "onednn") if row[p] is not None]
        if row["norm"] == "batch":
            share = kernel_targets.COPY_SHARE[(row["layout"], row["pass"])]
        else:
            share = 0.8
        candidates = [share * row["copy"]] + ([1.5 * max(peers)] if peers else [])
        assert goal == pytest.approx(min(candidates))
        if row["norm"] == "rms":
            assert why == "80% copy"
    assert kernel_targets.main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["norm", "thr"]
    judged = [line.split()[0] for line in out[1:-1]]
    assert judged == [{"group": "group:4"}.get(n, n) for n, *_ in EXPECTED]
    assert out[-1].endswith(f"of {len(EXPECTED)} cells at target")


def test_family_rule_and_old_tables(tmp_path, capsys):
    """80% of the copy below 1.5x the peer; a row without "norm" is batch norm."""
    def row(**kw):
        base = {"threads": 2, "shape": [8, 16, 4, 4], "layout": "channels_last",
                "pass": "backward", "bnorm": 10.0, "aten": 30.0, "onednn": None, "copy": 50.0}
        return {**base, **kw}
    assert kernel_targets.target(row(norm="group", groups=4)) == (40.0, "80% copy")
    assert kernel_targets.target(row(norm="group", groups=4, aten=20.0)) == (30.0, "1.5x peer")
    # Batch norm's channels-last backward share (55%) still applies to old rows.
    assert kernel_targets.target(row())[1] == "55% copy"
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps({"rows": [row()]}))
    new.write_text(json.dumps({"rows": [row(norm="batch", groups=None, bnorm=20.0),
                                        row(norm="instance", groups=16, bnorm=45.0)]}))
    assert kernel_targets.main([str(new), "--before", str(old)]) == 0
    out = capsys.readouterr().out
    assert "2.00x" in out and "1 of 2 cells at target" in out  # batch matched the old row
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [row(norm="layer", layout="channels_last")]}))
    assert kernel_targets.main([str(bad)]) == 2
    assert "for layer norm" in capsys.readouterr().err


def test_shapes_options_select_their_norms(tmp_path):
    # One norm's shapes alone: only that norm (batch alone prints the old table).
    r = run("bench", "kernels", *FAST, "--group-shapes", "2x4x3x3:2", "--passes", "backward")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()[1:-1]
    assert [line.split()[0] for line in lines] == ["group:2", "group:2"]
    # --norms wins over the shapes given; inference is batch norm's only.
    r = run("bench", "kernels", *FAST, *TINY, "--norms", "rms", "--passes", "inference,backward")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()[1:-1]
    assert [(line.split()[0], line.split()[4]) for line in lines] == [("rms", "backward")]


@pytest.mark.parametrize("args, needle", [
    (["--norms", "weight"], "--norms"),
    (["--group-shapes", "2x8x3x3:3"], "--group-shapes"),
    (["--group-shapes", "2x8x3x3"], "--group-shapes"),
    (["--layer-shapes", "6x40:2"], "--layer-shapes"),
    (["--instance-shapes", "2x4x1x1"], "--instance-shapes"),
    (["--rms-shapes", "6x0"], "--rms-shapes"),
])
def test_bad_family_options_exit_2_with_one_line(args, needle):
    line = one_line_error(run("bench", "kernels", *FAST, *args), 2)
    assert needle in line


def test_help_names_the_family_options():
    out = run("bench", "kernels", "--help").stdout
    for option in ["--norms", "--layer-shapes", "--group-shapes", "--instance-shapes",
                   "--rms-shapes", "8192x768", "32x256x14x14:32", "16x64x56x56"]:
        assert option in out, option
