#!/usr/bin/env python3
"""Report on the d2l experiment: LeNet with and without batch norm on Fashion-MNIST.

    /usr/bin/python3 tools/experiment_report.py --run lenet=out/lenet.jsonl \
        --run lenet-bn=out/lenet-bn.jsonl --plot out/experiment.png [--check]

Each metrics file holds one JSON object per line, one line per epoch, with at least
epoch (1-based), train_loss, train_acc, test_acc, examples_per_sec and seconds.
Prints the final epoch of every run beside the numbers the seed (d2l) reports, and
optionally draws train loss, train accuracy and test accuracy against epoch.

Exit status: 0 on success, 1 when --check fails, 2 on bad input (one-line message
naming the file and line).
"""
import argparse
import io
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from atomic_file import write_bytes_atomically  # noqa: E402

REQUIRED_KEYS = ("epoch", "train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds")

# Final-epoch numbers the seed (d2l) reports for its 10-epoch runs.
SEED = {
    "lenet": {"train_loss": 0.473, "train_acc": 0.823, "test_acc": 0.786},
    "lenet-bn": {"train_loss": 0.271, "train_acc": 0.899, "test_acc": 0.862},
}

DEFAULT_TITLE = "Fashion-MNIST, LeNet with and without batch norm"


class InputError(Exception):
    """Bad input: reported as one line, exit status 2."""


def load_run(path):
    """Return the epoch records of one metrics file, sorted by epoch."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: bad JSON: {e.msg}") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            raise InputError(f"{where}: missing key(s): {', '.join(missing)}")
        for key in REQUIRED_KEYS:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{where}: {key} is not a finite number: {value!r}")
        if not isinstance(record["epoch"], int) or record["epoch"] < 1:
            raise InputError(f"{where}: epoch must be an integer >= 1, got {record['epoch']!r}")
        if any(r["epoch"] == record["epoch"] for r in records):
            raise InputError(f"{where}: epoch {record['epoch']} appears twice")
        records.append(record)
    if not records:
        raise InputError(f"{path}: empty (no epoch records)")
    return sorted(records, key=lambda r: r["epoch"])


def parse_run_spec(spec):
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=FILE, got {spec!r}")
    return label, path


def print_table(runs):
    header = (f"{'model':<10} {'epochs':>6}  {'train loss':>10}  {'train acc':>9}  {'test acc':>8}"
              f"  {'examples/s':>10} | {'seed: loss':>10}  {'train acc':>9}  {'test acc':>8}")
    print(header)
    for label, records in runs.items():
        last = records[-1]
        seed = SEED.get(label)
        if seed:
            seed_cols = f"{seed['train_loss']:>10.3f}  {seed['train_acc']:>9.3f}  {seed['test_acc']:>8.3f}"
        else:
            seed_cols = f"{'-':>10}  {'-':>9}  {'-':>8}"
        print(f"{label:<10} {last['epoch']:>6}  {last['train_loss']:>10.3f}  {last['train_acc']:>9.3f}"
              f"  {last['test_acc']:>8.3f}  {last['examples_per_sec']:>10.0f}  | {seed_cols}")
    for label, records in runs.items():
        last = records[-1]
        if "test_acc_population" in last:
            print(f"{label}: test acc {last['test_acc_population']:.3f} with batch norm's population "
                  f"statistics (the paper's Algorithm 2) instead of the moving averages "
                  f"({last['test_acc']:.3f})")


def plot(runs, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = (("train_loss", "train loss"), ("train_acc", "train accuracy"), ("test_acc", "test accuracy"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, name) in zip(axes, panels):
        for label, records in runs.items():
            line, = ax.plot([r["epoch"] for r in records], [r[key] for r in records], marker="o",
                            markersize=3, label=label)
            if key == "test_acc" and all("test_acc_population" in r for r in records):
                ax.plot([r["epoch"] for r in records], [r["test_acc_population"] for r in records],
                        linestyle="--", color=line.get_color(), alpha=0.7,
                        label=f"{label}, population stats")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, dpi=100, format="png")
    plt.close(fig)
    write_bytes_atomically(path, png.getvalue())  # arrives whole (bench/atomic_file.py)


def check_plot_path(path, run_paths):
    """The plot may not be a run's metrics file, a directory or a link (docs/failure.md)."""
    if os.path.islink(path) or os.path.isdir(path) or (
            os.path.exists(path) and not os.path.isfile(path)):
        raise InputError(f"--plot {path}: not a regular file; give the path of a PNG to write")
    for run_path in run_paths:
        same = (os.path.exists(path) and os.path.exists(run_path) and
                os.path.samefile(path, run_path)) or \
            os.path.realpath(path) == os.path.realpath(run_path)
        if same:
            raise InputError(f"--plot {path}: is the run file {run_path}; writing it would destroy it")


def check_bn_ahead(runs):
    """Return None if lenet-bn has the lower train loss at every common epoch, else why not."""
    if "lenet" not in runs or "lenet-bn" not in runs:
        raise InputError("--check needs runs labelled lenet and lenet-bn")
    plain = {r["epoch"]: r["train_loss"] for r in runs["lenet"]}
    bn = {r["epoch"]: r["train_loss"] for r in runs["lenet-bn"]}
    common = sorted(plain.keys() & bn.keys())
    if not common:
        return "lenet and lenet-bn share no epoch"
    for epoch in common:
        if not bn[epoch] < plain[epoch]:
            return (f"epoch {epoch}: lenet-bn train loss {bn[epoch]:.4f} is not below "
                    f"lenet's {plain[epoch]:.4f}")
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 ok, 1 --check failed, 2 bad input.")
    parser.add_argument("--run", action="append", type=parse_run_spec, required=True,
                        metavar="LABEL=FILE", help="a run's label and its metrics file (repeatable)")
    parser.add_argument("--plot", metavar="PNG", help="write the three-panel figure here")
    parser.add_argument("--title", default=DEFAULT_TITLE, help="figure suptitle (default: %(default)r)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless lenet-bn has a lower train loss than lenet at every epoch")
    args = parser.parse_args(argv)

    try:
        runs = {}
        for label, path in args.run:
            if label in runs:
                raise InputError(f"run label {label!r} given twice")
            runs[label] = load_run(path)
        if args.plot:
            check_plot_path(args.plot, [path for _, path in args.run])
        failure = check_bn_ahead(runs) if args.check else None
    except InputError as e:
        print(f"experiment_report: {e}", file=sys.stderr)
        return 2

    print_table(runs)
    if args.plot:
        plot(runs, args.plot, args.title)
        print(f"wrote {args.plot}")
    if failure:
        print(f"experiment_report: check failed: {failure}", file=sys.stderr)
        return 1
    if args.check:
        print("check passed: lenet-bn has the lower train loss at every epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
