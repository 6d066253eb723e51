#!/usr/bin/env python3
"""LeNet / LeNet-BN / VGG-BN training and inference throughput: PyTorch 1.13 (CPU) vs the `bnorm` CLI.

    /usr/bin/python3 bench/compare_lenet_torch.py [--bnorm build/bnorm]
        [--models lenet-bn,lenet,vgg-bn] [--threads 1,2] [--batch-size 256] [--steps 100]
        [--warmup 5] [--repeats 5] [--data /usr/share/datasets/fashion-mnist]
        [--json-out FILE] [--torch-only]

Same models (d2l's LeNet and LeNet with batch norm; the engine's small VGG with batch norm
as a larger model), batch size and thread count on both sides, in one run. For every
model, thread count and repeat, PyTorch is measured and then `bnorm bench train` (a
subprocess), alternately, so machine noise hits both; the median over repeats is
reported, with the ratio bnorm / torch (above 1: bnorm is faster). PyTorch runs in its
default configuration (libgomp's spinning threads, its fastest here); bnorm with its own
(OMP_WAIT_POLICY=passive, tools/bnorm/openmp_environment.h), unless the environment sets
a policy for both.

What is timed (examples per second):
  train      `steps` SGD steps after `warmup` untimed ones; each step gathers a batch
             from a shuffled order of the preloaded Fashion-MNIST training set
             (torch.randperm per pass), runs forward, cross-entropy loss, zero_grad,
             backward and an SGD step (no momentum; the model's learning rate, as
             `bnorm train` would use: 0.9 lenet, 1.0 lenet-bn, 0.05 vgg-bn).
  inference  eval mode, no autograd, forward over the whole test set in batches.
Reading and decoding the IDX files happens once, before anything is timed.
`bnorm bench train` reports the same two numbers for its own engine, as one JSON object.
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from atomic_file import write_text_atomically

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
MODELS = ("lenet", "lenet-bn", "vgg-bn")
LEARNING_RATES = {"lenet": 0.9, "lenet-bn": 1.0, "vgg-bn": 0.05}  # bnorm's default_lr


def make_model(name):
    """d2l's LeNet (sec. 6.6) and LeNet with batch norm (sec. 8.5), with d2l's Xavier init."""
    if name == "lenet":
        net = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.Sigmoid(),
            nn.Linear(84, 10))
    elif name == "lenet-bn":
        net = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
            nn.Linear(84, 10))
    elif name == "vgg-bn":
        # src/nn/models.cpp's vgg(): two blocks of two 3x3 convolutions (16, 32 channels)
        # with batch norm and ReLU, each block max-pooled; Kaiming init as the engine's.
        layers, c_in = [], 1
        for width in (16, 32):
            for _ in range(2):
                layers += [nn.Conv2d(c_in, width, kernel_size=3, padding=1), nn.BatchNorm2d(width),
                           nn.ReLU()]
                c_in = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.BatchNorm1d(128),
                            nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
        return net
    else:
        raise ValueError(f"unknown model {name!r}")
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
    return net


def read_idx(path, header_bytes):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header_bytes)


def load_split(data_dir, prefix):
    """Images as float32 / 255 in (N, 1, 28, 28) and labels as int64, as torch tensors."""
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"), 16)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"), 8)
    n = labels.size
    if images.size != n * 28 * 28:
        raise ValueError(f"{data_dir}/{prefix}: {images.size} image bytes for {n} labels")
    x = torch.from_numpy(images.astype(np.float32).reshape(n, 1, 28, 28) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def train_step_fn(name, x, y, batch_size):
    """One SGD step of `name` per call, on the next batch of a shuffled pass over (x, y)."""
    net = make_model(name)
    net.train()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATES[name], momentum=0)
    n = x.shape[0]
    state = {"perm": torch.randperm(n), "pos": 0}

    def step():
        if state["pos"] + batch_size > n:  # new pass, new shuffle (drop the ragged end)
            state["perm"], state["pos"] = torch.randperm(n), 0
        idx = state["perm"][state["pos"]:state["pos"] + batch_size]
        state["pos"] += batch_size
        loss = loss_fn(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def torch_train_examples_per_sec(name, x, y, batch_size, steps, warmup):
    step = train_step_fn(name, x, y, batch_size)
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def torch_inference_examples_per_sec(name, x, batch_size, warmup):
    net = make_model(name)
    net.eval()
    n = x.shape[0]
    with torch.no_grad():
        for i in range(min(warmup, (n + batch_size - 1) // batch_size)):
            net(x[i * batch_size:(i + 1) * batch_size])
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            net(x[i:i + batch_size])
        return n / (time.perf_counter() - start)


class BnormError(Exception):
    pass


def run_bnorm(binary, name, threads, args):
    cmd = [str(binary), "bench", "train", "--model", name,
           "--batch-size", str(args.batch_size), "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--data", args.data]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise BnormError(f"cannot run {binary}: {e.strerror}") from None
    stderr_tail = proc.stderr.strip().splitlines()[-3:]
    if proc.returncode != 0:
        raise BnormError(f"`{' '.join(cmd)}` exited with status {proc.returncode}: "
                         + (" | ".join(stderr_tail) or "(no stderr)"))
    result = None
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                pass
    if not isinstance(result, dict):
        raise BnormError(f"`{' '.join(cmd)}` printed no JSON object on stdout "
                         f"(stdout: {proc.stdout.strip()[:200]!r})")
    for key in ("train_examples_per_sec", "inference_examples_per_sec"):
        if not isinstance(result.get(key), (int, float)):
            raise BnormError(f"`{' '.join(cmd)}` JSON lacks a number for {key!r}: {result}")
    for key, want in (("model", name), ("threads", threads), ("batch_size", args.batch_size)):
        if key in result and result[key] != want:
            raise BnormError(f"`{' '.join(cmd)}` reports {key}={result[key]!r}, expected {want!r}")
    return result


def machine_info():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs; torch {torch.__version__}"


def median_or_none(values):
    return statistics.median(values) if values else None


def fmt(value, width, spec=".0f"):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--bnorm", default=str(REPO_ROOT / "build" / "bnorm"),
                        help="the bnorm CLI (default: %(default)s)")
    parser.add_argument("--models", default="lenet-bn,lenet,vgg-bn",
                        help="comma-separated (default: %(default)s)")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts, each measured (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", default=DEFAULT_DATA, help="Fashion-MNIST IDX .gz files (default: %(default)s)")
    parser.add_argument("--json-out", metavar="FILE", help="also write every raw number here")
    parser.add_argument("--torch-only", action="store_true", help="measure PyTorch alone; skip bnorm")
    args = parser.parse_args()

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if not models or unknown:
        parser.error(f"--models: unknown {unknown or 'empty list'}; choose from {', '.join(MODELS)}")
    try:
        thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads: expected comma-separated integers, got {args.threads!r}")
    if not thread_counts or min(thread_counts) < 1:
        parser.error(f"--threads: expected thread counts of at least 1, got {args.threads!r}")
    for key in ("batch_size", "steps", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")

    binary = None
    if not args.torch_only:
        binary = Path(args.bnorm)
        if not binary.is_file() or not os.access(binary, os.X_OK):
            sys.exit(f"compare_lenet_torch: bnorm CLI not found or not executable: {binary} "
                     "(build it, pass --bnorm PATH, or use --torch-only)")

    try:
        train_x, train_y = load_split(args.data, "train")
        test_x, _ = load_split(args.data, "t10k")
    except (OSError, ValueError) as e:
        sys.exit(f"compare_lenet_torch: cannot load Fashion-MNIST from {args.data}: {e}")
    if args.batch_size > train_x.shape[0]:
        parser.error(f"--batch-size is larger than the training set ({train_x.shape[0]})")

    info = machine_info()
    print(info)
    print(f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{args.repeats} repeats, median reported", flush=True)

    raw = {}
    rows = [(name, threads) for name in models for threads in thread_counts]
    for name, threads in rows:
        torch.set_num_threads(threads)
        key = f"{name}@{threads}"
        r = raw[key] = {"model": name, "threads": threads, "torch_train": [], "torch_inference": [],
                        "bnorm_train": [], "bnorm_inference": [], "bnorm_json": []}
        for rep in range(1, args.repeats + 1):
            r["torch_train"].append(torch_train_examples_per_sec(
                name, train_x, train_y, args.batch_size, args.steps, args.warmup))
            r["torch_inference"].append(torch_inference_examples_per_sec(
                name, test_x, args.batch_size, args.warmup))
            line = (f"  {name}, {threads} threads, repeat {rep}: torch train {r['torch_train'][-1]:.0f}/s "
                    f"inference {r['torch_inference'][-1]:.0f}/s")
            if binary is not None:
                try:
                    result = run_bnorm(binary, name, threads, args)
                except BnormError as e:
                    sys.exit(f"compare_lenet_torch: {e}")
                r["bnorm_json"].append(result)
                r["bnorm_train"].append(float(result["train_examples_per_sec"]))
                r["bnorm_inference"].append(float(result["inference_examples_per_sec"]))
                line += (f" | bnorm train {r['bnorm_train'][-1]:.0f}/s "
                         f"inference {r['bnorm_inference'][-1]:.0f}/s")
            print(line, file=sys.stderr, flush=True)

    print()
    print(f"{'examples/s (median)':<20} {'threads':>7} {'torch train':>12} {'bnorm train':>12} {'ratio':>6}"
          f"   {'torch infer':>12} {'bnorm infer':>12} {'ratio':>6}")
    summary = {}
    for name, threads in rows:
        key = f"{name}@{threads}"
        r = raw[key]
        med = {k: median_or_none(r[k]) for k in ("torch_train", "bnorm_train", "torch_inference", "bnorm_inference")}
        med["train_ratio"] = med["bnorm_train"] / med["torch_train"] if med["bnorm_train"] is not None else None
        med["inference_ratio"] = (med["bnorm_inference"] / med["torch_inference"]
                                  if med["bnorm_inference"] is not None else None)
        summary[key] = med
        print(f"{name:<20} {threads:>7} {fmt(med['torch_train'], 12)} {fmt(med['bnorm_train'], 12)} "
              f"{fmt(med['train_ratio'], 6, '.2f')}   {fmt(med['torch_inference'], 12)} "
              f"{fmt(med['bnorm_inference'], 12)} {fmt(med['inference_ratio'], 6, '.2f')}")
    if binary is not None:
        print("ratio = bnorm / torch (above 1: bnorm is faster)")

    if args.json_out:
        out = {"machine": info, "torch_version": torch.__version__, "threads": thread_counts,
               "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
               "repeats": args.repeats, "bnorm": None if binary is None else str(binary),
               "raw": raw, "median": summary}
        write_text_atomically(args.json_out, json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
