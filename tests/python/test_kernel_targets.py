"""bench/kernel_targets.py: the kernel issue's target rules, cell by cell."""
import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("kernel_targets", ROOT / "bench" / "kernel_targets.py")
kernel_targets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel_targets)


def row(layout, pass_, bnorm=10.0, aten=4.0, onednn=6.0, copy=50.0):
    return {"threads": 2, "shape": [8, 4, 3, 3], "layout": layout, "pass": pass_,
            "bnorm": bnorm, "aten": aten, "onednn": onednn, "copy": copy}


def test_the_lower_of_one_and_a_half_peers_and_the_copy_share():
    # 1.5 x the faster peer (6) = 9 is below 90% of the copy (45).
    assert kernel_targets.target(row("channels_first", "forward_train")) == (9.0, "1.5x peer")
    # A fast peer: 90% of the copy is lower.
    goal, why = kernel_targets.target(row("channels_first", "inference", onednn=40.0))
    assert (round(goal, 9), why) == (45.0, "90% copy")


def test_copy_shares_by_layout_and_pass():
    fast = dict(aten=100.0, onednn=100.0)
    expect = {("channels_first", "forward_train"): 45.0, ("channels_first", "inference"): 45.0,
              ("channels_first", "backward"): 40.0, ("channels_last", "forward_train"): 30.0,
              ("channels_last", "inference"): 45.0, ("channels_last", "backward"): 27.5}
    for (layout, pass_), goal in expect.items():
        assert round(kernel_targets.target(row(layout, pass_, **fast))[0], 9) == goal


def test_missing_peers_leave_the_copy():
    goal, why = kernel_targets.target(row("channels_last", "backward", aten=None, onednn=None))
    assert (round(goal, 9), why) == (27.5, "55% copy")


def test_report_counts_cells_at_target(tmp_path, capsys):
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"rows": [row("channels_first", "forward_train", bnorm=9.5),
                                         row("channels_first", "backward", bnorm=8.0)]}))
    assert kernel_targets.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 cells at target" in out
    assert out.count("below") == 1


def test_before_column_compares_the_same_cells(tmp_path, capsys):
    now, old = tmp_path / "now.json", tmp_path / "old.json"
    now.write_text(json.dumps({"rows": [row("channels_first", "backward", bnorm=30.0)]}))
    old.write_text(json.dumps({"rows": [row("channels_first", "backward", bnorm=20.0),
                                        row("channels_last", "backward", bnorm=5.0)]}))
    assert kernel_targets.main([str(now), "--before", str(old)]) == 0
    assert "20.00   1.50x" in capsys.readouterr().out


def test_several_runs_give_the_median_of_each_figure(tmp_path, capsys):
    paths = []
    for k, (b, copy) in enumerate([(10.0, 50.0), (30.0, 40.0), (20.0, 60.0)]):
        paths.append(tmp_path / f"run{k}.json")
        paths[-1].write_text(json.dumps({"rows": [row("channels_first", "backward", bnorm=b,
                                                      aten=None, onednn=None, copy=copy)]}))
    assert kernel_targets.main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    # median bnorm 20, median copy 50 -> target 40
    assert " 20.00   40.00   80% copy   0.50" in out and "0 of 1 cells at target" in out


def test_unreadable_tables_are_one_line_errors(tmp_path, capsys):
    bad = {"missing.json": None, "garbage.json": "{not json", "other.json": '{"x": 1}',
           "short.json": json.dumps({"rows": [{"threads": 2}]})}
    want = {"missing.json": "No such file", "garbage.json": "not JSON",
            "other.json": "not a kernel table", "short.json": "a row lacks shape"}
    for name, text in bad.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        assert kernel_targets.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kernel_targets.py: error: ") and want[name] in err, err
