#!/usr/bin/env python3
"""Where a training step's time goes, bnorm beside PyTorch 1.13, by kind of layer.

    /usr/bin/python3 bench/profile_lenet.py [--model lenet-bn] [--threads 2] [--steps 40]
        [--batch-size 256] [--repeats 3] [--out docs/results/profile_lenet_bn]

bnorm: `bnorm bench train --profile` times each layer's forward and backward (the
engine's nn::LayerProfile); they are summed by kind (Conv2d, BatchNorm, Sigmoid,
AvgPool2d, Linear, Flatten), and "rest" is the step minus the layers (gathering the batch,
the loss, SGD). PyTorch: torch.profiler over the same number of steps of the same model
(bench/compare_lenet_torch.py's), each op's self CPU time summed by the kind its name
says (conv, batch_norm, sigmoid, avg_pool, addmm/mm/t for Linear); the rest (the loss,
the optimizer, autograd's bookkeeping, indexing) is "rest". The step times are measured
without any profiler, alternating the engines, medians over the repeats. The profiler's
own overhead inflates PyTorch's many small ops: its per-kind shares are the guide, its
step time is the unprofiled one.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from atomic_file import write_text_atomically  # noqa: E402
from compare_lenet_torch import DEFAULT_DATA, load_split, train_step_fn  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KINDS = ["Conv2d", "BatchNorm", "Sigmoid", "AvgPool2d", "Linear", "Flatten", "rest"]
TORCH_KIND = [(re.compile(p), k) for p, k in [
    (r"conv", "Conv2d"), (r"batch_norm", "BatchNorm"), (r"sigmoid", "Sigmoid"),
    (r"avg_pool", "AvgPool2d"), (r"^aten::(addmm|mm|t|linear|matmul)$", "Linear"),
    (r"^aten::(flatten|view|reshape|_reshape_alias)$", "Flatten")]]


def bnorm_kind(layer):
    name = layer.split("(")[0]
    return "BatchNorm" if name.startswith("BatchNorm") else name if name in KINDS else "rest"


def bnorm_profile(args):
    cmd = [os.path.join(ROOT, "build", "bnorm"), "bench", "train", "--model", args.model,
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--threads",
           str(args.threads), "--profile"]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    if r.returncode != 0:
        sys.exit(f"profile_lenet: {' '.join(cmd)} failed:\n{r.stderr}")
    out = json.loads(r.stdout)
    kinds = dict.fromkeys(KINDS, 0.0)
    for layer in out["layers"]:
        kinds[bnorm_kind(layer["layer"])] += layer["forward_ms"] + layer["backward_ms"]
    kinds["rest"] += out["ms_per_step"] - sum(kinds.values())
    return out["ms_per_step"], kinds


def torch_profile(args, x, y):
    step = train_step_fn(args.model, x, y, args.batch_size)
    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    ms_per_step = 1e3 * (time.perf_counter() - start) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    kinds = dict.fromkeys(KINDS, 0.0)
    for event in prof.key_averages():
        kind = next((k for pattern, k in TORCH_KIND if pattern.search(event.key)), "rest")
        kinds[kind] += event.self_cpu_time_total / 1e3 / args.steps
    return ms_per_step, kinds


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet-bn", choices=["lenet", "lenet-bn"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.txt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = load_split(args.data, "train")
    runs = {"bnorm": [], "torch": []}
    for _ in range(args.repeats):  # alternating, so noise hits both
        runs["bnorm"].append(bnorm_profile(args))
        runs["torch"].append(torch_profile(args, x, y))

    def median_kinds(rs):
        return {k: statistics.median(r[1][k] for r in rs) for k in KINDS}
    table = {engine: {"ms_per_step": statistics.median(r[0] for r in rs), "kinds": median_kinds(rs),
                      "ms_per_step_all": [r[0] for r in rs]} for engine, rs in runs.items()}
    lines = [f"{args.model}, batch {args.batch_size}, {args.threads} thread(s), {args.steps} steps x "
             f"{args.repeats} repeats (medians); ms per training step",
             f"{'kind':<10} {'bnorm':>8} {'share':>6}   {'PyTorch':>8} {'share':>6}   bnorm / PyTorch"]
    for k in KINDS:
        b, t = table["bnorm"]["kinds"][k], table["torch"]["kinds"][k]
        bs = 100 * b / sum(table["bnorm"]["kinds"].values())
        ts = 100 * t / sum(table["torch"]["kinds"].values())
        lines.append(f"{k:<10} {b:>8.3f} {bs:>5.1f}%   {t:>8.3f} {ts:>5.1f}%   "
                     + (f"{b / t:.2f}" if t > 0 else "-"))
    lines.append(f"{'step':<10} {table['bnorm']['ms_per_step']:>8.3f}          "
                 f"{table['torch']['ms_per_step']:>8.3f} (unprofiled)   "
                 f"{table['bnorm']['ms_per_step'] / table['torch']['ms_per_step']:.2f}")
    lines.append("PyTorch's per-kind times are profiled (self CPU time, profiler overhead "
                 "included): read them as shares.")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        write_text_atomically(args.out + ".json", json.dumps(
            {"model": args.model, "threads": args.threads, "batch_size": args.batch_size,
             "steps": args.steps, "repeats": args.repeats, **table}, indent=1) + "\n")
        write_text_atomically(args.out + ".txt", text)


if __name__ == "__main__":
    main()
