#!/usr/bin/env python3
"""Each cell of the kernel table against the kernel issue's target.

Reads the JSON of `bnorm bench kernels --json FILE` (or bench_peers) and prints, per
cell, bnorm's GB/s, the target and whether it is met. The target of a cell is the lower
of 1.5x the faster peer (PyTorch's ATen, oneDNN) and a share of the copy measured in the
same run:
    channels-first: forward_train and inference 90%, backward 80% of the copy;
    channels-last:  forward_train 60%, backward 55%, inference 90% of the copy
(channels-last statistics need a full pass before the normalize pass). A cell without
any peer figure is judged against the copy alone.

The family (layer, group, instance and RMS norm; issue 10, "Speed") has one copy share
for every layout and pass: the lower of 1.5x the faster peer and 80% of the copy (80%
of the copy where no peer has the operation: RMS norm, oneDNN's group norm). A row
without "norm" (tables written before the family came) is batch norm.

    bench/kernel_targets.py table.json [more.json ...] [--before old.json [...]]

With several tables (runs of the same cells) each figure is the median over the runs.

--before adds bnorm's GB/s from an earlier run of the same cells (another build) and
the ratio now / before.
"""
import argparse
import json
import statistics
import sys

COPY_SHARE = {
    ("channels_first", "forward_train"): 0.90,
    ("channels_first", "inference"): 0.90,
    ("channels_first", "backward"): 0.80,
    ("channels_last", "forward_train"): 0.60,
    ("channels_last", "inference"): 0.90,
    ("channels_last", "backward"): 0.55,
}
PEER_FACTOR = 1.5
FAMILY = ("layer", "group", "instance", "rms")
FAMILY_COPY_SHARE = 0.80
FAMILY_LAYOUTS = {"layer": ("rows",), "rms": ("rows",),
                  "group": ("channels_first", "channels_last"),
                  "instance": ("channels_first", "channels_last")}
FAMILY_PASSES = ("forward_train", "backward")


def norm_of(row):
    return row.get("norm", "batch")


def cell_key(row):
    return (norm_of(row), row.get("groups"), row["threads"], tuple(row["shape"]),
            row["layout"], row["pass"])


def norm_label(row):
    """The table's norm column: "group:G" for group norm, else the name."""
    norm = norm_of(row)
    return f"group:{row.get('groups')}" if norm == "group" else norm


class TableError(Exception):
    """A table file that cannot be read as the kernel table's JSON."""


REQUIRED = ("threads", "shape", "layout", "pass", "bnorm", "copy")


def load_rows(path):
    try:
        with open(path) as f:
            rows = json.load(f)["rows"]
        for row in rows:
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise TableError(f"{path}: a row lacks {', '.join(missing)}")
            norm = norm_of(row)
            if norm == "batch":
                if (row["layout"], row["pass"]) not in COPY_SHARE:
                    raise TableError(
                        f"{path}: unknown layout/pass {row['layout']}/{row['pass']}")
            elif norm not in FAMILY:
                raise TableError(f"{path}: unknown norm {norm!r}")
            elif row["layout"] not in FAMILY_LAYOUTS[norm] or row["pass"] not in FAMILY_PASSES:
                raise TableError(f"{path}: unknown layout/pass {row['layout']}/{row['pass']}"
                                 f" for {norm} norm")
        return rows
    except OSError as e:
        raise TableError(f"{path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise TableError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from e
    except (KeyError, TypeError) as e:
        raise TableError(f"{path}: not a kernel table (expected an object with \"rows\", "
                         "as bnorm bench kernels --json writes)") from e


def median_rows(runs):
    """One row per cell: with several runs of the same cells, each figure is the median
    over the runs (the machine is noisy; a cell near its target flips between runs)."""
    cells = {}
    for rows in runs:
        for row in rows:
            cells.setdefault(cell_key(row), []).append(row)
    merged = []
    for same in cells.values():
        row = dict(same[0])
        for name in ("bnorm", "aten", "onednn", "copy"):
            values = sorted(r[name] for r in same if r.get(name) is not None)
            row[name] = statistics.median(values) if values else None
        merged.append(row)
    return merged


def target(row):
    """(target GB/s, what sets it) for one row of the table's JSON."""
    if norm_of(row) == "batch":
        share = COPY_SHARE[(row["layout"], row["pass"])]
    else:
        share = FAMILY_COPY_SHARE
    candidates = [(share * row["copy"], f"{share:.0%} copy")]
    peers = [row[p] for p in ("aten", "onednn") if row.get(p) is not None]
    if peers:
        candidates.append((PEER_FACTOR * max(peers), f"{PEER_FACTOR}x peer"))
    return min(candidates)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+",
                        help="JSON files written by bnorm bench kernels --json (several: medians)")
    parser.add_argument("--before", nargs="+", metavar="JSON",
                        help="an earlier build's tables: show their (median) bnorm column too")
    args = parser.parse_args(argv)
    try:
        rows = median_rows([load_rows(path) for path in args.json])
        before = {}
        if args.before:
            before = {cell_key(r): r["bnorm"]
                      for r in median_rows([load_rows(path) for path in args.before])}
    except TableError as e:
        print(f"kernel_targets.py: error: {e}", file=sys.stderr)
        return 2
    met = 0
    # As the kernel table: a norm column only when the family is there.
    family = any(norm_of(row) != "batch" for row in rows)
    print((f"{'norm':11} " if family else "") +
          f"{'thr':>3} {'shape':18} {'layout':14} {'pass':14} {'bnorm':>7} {'target':>7} "
          f"{'set by':>10} {'ratio':>6}" + (f" {'before':>7} {'now/bef':>7}" if before else ""))
    for row in rows:
        goal, why = target(row)
        ratio = row["bnorm"] / goal
        met += ratio >= 1
        shape = "(" + ",".join(str(d) for d in row["shape"]) + ")"
        line = ((f"{norm_label(row):11} " if family else "") +
                f"{row['threads']:>3} {shape:18} {row['layout']:14} {row['pass']:14} "
                f"{row['bnorm']:7.2f} {goal:7.2f} {why:>10} {ratio:6.2f}")
        if before:
            old = before.get(cell_key(row))
            line += f" {old:7.2f} {row['bnorm'] / old:6.2f}x" if old else f" {'-':>7} {'-':>7}"
        print(line + ("" if ratio >= 1 else "  below"))
    print(f"{met} of {len(rows)} cells at target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
