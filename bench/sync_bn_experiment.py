"""SyncBN's two measurements (docs/distributed.md), with bnorm train / bnorm bench train
under mpirun:

  small-batch  why SyncBN exists: LeNet-BN with a global batch of 32 over 4 processes
               (8 examples each) with and without --sync-bn, beside one process with
               batch 32 and with batch 8; and the same for a global batch of 8 (2 examples
               per process). Train loss and test accuracy per epoch after the same budget
               of epochs. Writes <out>/small_batch.json, .txt and .png.
  cost         time per step for the same global batch over K = 1, 2, 4 processes (4 are
               oversubscribed on a 2-core machine), the share of it inside collectives,
               collective calls and bytes sent per step per process. Rounds alternate
               the process counts; medians. Writes <out>/cost.json and .txt.

    /usr/bin/python3 bench/sync_bn_experiment.py small-batch --epochs 3 --out docs/results/sync_bn
    /usr/bin/python3 bench/sync_bn_experiment.py cost --rounds 5 --out docs/results/sync_bn
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from atomic_file import write_bytes_atomically, write_text_atomically  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BNORM = os.path.join(ROOT, "build", "bnorm")
ENV = {**os.environ, "OMP_WAIT_POLICY": "passive"}


def mpirun(k):
    mpi = shutil.which("mpirun")
    if mpi is None:
        sys.exit("sync_bn_experiment: mpirun not found (scripts/install-deps installs openmpi-bin)")
    return [mpi, "--allow-run-as-root", "--oversubscribe", "-np", str(k)]


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        sys.exit(f"sync_bn_experiment: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def small_batch(args):
    configs = [  # (label, processes, global batch, sync)
        ("1 process, batch 32", 1, 32, False),
        ("1 process, batch 8", 1, 8, False),
        ("4 processes x 8, per-process BN", 4, 32, False),
        ("4 processes x 8, SyncBN", 4, 32, True),
        ("4 processes x 2, per-process BN", 4, 8, False),
        ("4 processes x 2, SyncBN", 4, 8, True),
    ]
    common = ["--model", "lenet-bn", "--epochs", str(args.epochs), "--lr", str(args.lr),
              "--seed", str(args.seed), "--threads", "1", "--no-progress"]
    if args.train_examples:
        common += ["--train-examples", str(args.train_examples)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, k, batch, sync in configs:
            metrics = os.path.join(tmp, f"run{len(results)}.jsonl")
            cmd = ([*mpirun(k)] if k > 1 else []) + [BNORM, "train", *common, "--batch-size",
                                                    str(batch), "--metrics", metrics]
            if sync:
                cmd.append("--sync-bn")
            print(run(cmd), end="")
            rows = [json.loads(line) for line in open(metrics) if line.strip()]
            results.append({"label": label, "processes": k, "global_batch": batch,
                            "sync_bn": sync, "epochs": rows})
    report = {"lr": args.lr, "epochs": args.epochs, "seed": args.seed,
              "train_examples": args.train_examples or 60000, "runs": results}
    os.makedirs(args.out, exist_ok=True)
    write_text_atomically(os.path.join(args.out, "small_batch.json"), json.dumps(report, indent=1) + "\n")
    lines = [f"LeNet-BN, lr {args.lr}, seed {args.seed}, {args.epochs} epochs, "
             f"{report['train_examples']} training examples; test accuracy per epoch",
             f"{'run':<36} " + " ".join(f"ep{e + 1:<5}" for e in range(args.epochs)) + "  train loss (last)"]
    for r in results:
        lines.append(f"{r['label']:<36} " + " ".join(f"{row['test_acc']:.4f}" for row in r["epochs"])
                     + f"  {r['epochs'][-1]['train_loss']:.4f}")
    text = "\n".join(lines) + "\n"
    write_text_atomically(os.path.join(args.out, "small_batch.txt"), text)
    print(text)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    style = {(1, False): ("--", "o", 9), (4, True): ("-", "x", 7), (4, False): (":", "s", 5)}
    for r in results:
        epochs = [row["epoch"] for row in r["epochs"]]
        line, marker, size = style[(r["processes"], r["sync_bn"])]
        color = "tab:blue" if r["global_batch"] == 32 else "tab:orange"
        for ax, key in zip(axes, ("train_loss", "test_acc")):
            ax.plot(epochs, [row[key] for row in r["epochs"]], linestyle=line, marker=marker,
                    markersize=size, color=color, label=r["label"])
    axes[0].set_ylabel("train loss (mean over the epoch)")
    axes[1].set_ylabel("test accuracy (running statistics)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_xticks(range(1, args.epochs + 1))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("LeNet-BN on Fashion-MNIST: SyncBN over 4 processes is one process's "
                 "training; per-process BN is not")
    fig.tight_layout()
    png = os.path.join(tempfile.gettempdir(), f"small_batch.{os.getpid()}.png")
    fig.savefig(png, dpi=110)
    write_bytes_atomically(os.path.join(args.out, "small_batch.png"), open(png, "rb").read())
    os.unlink(png)


def cost(args):
    counts = [1, 2, 4]
    samples = {(k, s): [] for k in counts for s in (False, True)}
    for rnd in range(args.rounds):
        for k in counts:
            for sync in (False, True):
                cmd = [*mpirun(k), BNORM, "bench", "train", "--model", "lenet-bn", "--batch-size",
                       str(args.batch_size), "--steps", str(args.steps), "--threads", "1"]
                if sync:
                    cmd.append("--sync-bn")
                samples[(k, sync)].append(json.loads(run(cmd).strip().splitlines()[-1]))
    rows = []
    for (k, sync), runs in samples.items():
        rows.append({"processes": k, "sync_bn": sync,
                     "ms_per_step": statistics.median(r["ms_per_step"] for r in runs),
                     "collective_share": statistics.median(r["collective_share"] for r in runs),
                     "collectives_per_step": runs[0]["collectives_per_step"],
                     "bytes_sent_per_step": runs[0]["bytes_sent_per_step"],
                     "ms_per_step_all": [r["ms_per_step"] for r in runs]})
    os.makedirs(args.out, exist_ok=True)
    write_text_atomically(os.path.join(args.out, "cost.json"),
                          json.dumps({"batch_size": args.batch_size, "steps": args.steps,
                                      "rounds": args.rounds, "rows": rows}, indent=1) + "\n")
    lines = [f"LeNet-BN, global batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds "
             "(medians), 1 thread per process",
             f"{'processes':>9} {'SyncBN':>6} {'ms/step':>8} {'in collectives':>14} "
             f"{'calls/step':>10} {'bytes sent/step':>15}"]
    for r in rows:
        lines.append(f"{r['processes']:>9} {('yes' if r['sync_bn'] else 'no'):>6} "
                     f"{r['ms_per_step']:>8.2f} {100 * r['collective_share']:>13.1f}% "
                     f"{r['collectives_per_step']:>10} {r['bytes_sent_per_step']:>15}")
    text = "\n".join(lines) + "\n"
    write_text_atomically(os.path.join(args.out, "cost.txt"), text)
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sb = sub.add_parser("small-batch")
    sb.add_argument("--epochs", type=int, default=3)
    sb.add_argument("--lr", type=float, default=0.1)
    sb.add_argument("--seed", type=int, default=0)
    sb.add_argument("--train-examples", type=int, default=0)
    sb.add_argument("--out", default="out/sync_bn")
    c = sub.add_parser("cost")
    c.add_argument("--batch-size", type=int, default=256)
    c.add_argument("--steps", type=int, default=40)
    c.add_argument("--rounds", type=int, default=5)
    c.add_argument("--out", default="out/sync_bn")
    args = parser.parse_args()
    if not os.path.exists(BNORM):
        sys.exit(f"sync_bn_experiment: {BNORM} not built (scripts/build)")
    small_batch(args) if args.what == "small-batch" else cost(args)


if __name__ == "__main__":
    main()
