#!/usr/bin/env python3
"""Float vs folded vs int8 LeNet-BN (or any checkpoint) in onnxruntime: accuracy, speed, size.

    /usr/bin/python3 bench/deploy_runtimes.py --checkpoint out/lenet-bn.ckpt
        [--bnorm build/bnorm] [--workdir DIR] [--batches 1,256] [--threads 1,2]
        [--repeats 5] [--batch1-examples 2000] [--json-out FILE]

From one checkpoint it writes three ONNX models with the `bnorm` CLI:
  float   `bnorm export --no-fold`  (BatchNormalization nodes kept)
  folded  `bnorm export`            (batch norm folded into the conv / linear weights)
  int8    `bnorm quantize`          (folded, QDQ: int8 per-channel weights, uint8
                                     activations calibrated on 1,000 training examples)
and runs each in onnxruntime-node (tests/onnx/run_onnx.js, CPU, graph optimizations on)
over the Fashion-MNIST test set: accuracy on all 10,000 images, and examples/sec at every
batch size x thread count (batch 1 over the first --batch1-examples images). The models
take turns within every repeat (float, folded, int8, float, ...), so machine noise hits
all three; the median of --repeats is reported, with the ratio to float. The engine's
own accuracies (`bnorm evaluate --fold-bn`, the simulated int8 of `bnorm quantize`)
come from the same commands' output.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from atomic_file import write_bytes_atomically  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUN_ONNX = ROOT / "tests" / "onnx" / "run_onnx.js"
FASHION = "/usr/share/datasets/fashion-mnist"


def sh(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"deploy_runtimes: {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r.stdout


def run_onnx(model, count=0, batch=256, threads=1, labels=False):
    args = ["node", RUN_ONNX, "--model", model, "--images",
            f"{FASHION}/t10k-images-idx3-ubyte.gz", "--batch", batch, "--threads", threads]
    if count:
        args += ["--count", count]
    if labels:
        args += ["--labels", f"{FASHION}/t10k-labels-idx1-ubyte.gz"]
    return json.loads(sh(*args))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--bnorm", default=str(ROOT / "build" / "bnorm"))
    p.add_argument("--workdir", default=None, help="where the models go (default: a temp dir)")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch1-examples", type=int, default=2000)
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bnorm-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    models = {"float": work / "float.onnx", "folded": work / "folded.onnx", "int8": work / "int8.onnx"}
    sh(a.bnorm, "export", "--checkpoint", a.checkpoint, "--onnx", models["float"], "--no-fold", "--force")
    sh(a.bnorm, "export", "--checkpoint", a.checkpoint, "--onnx", models["folded"], "--force")
    q = sh(a.bnorm, "quantize", "--checkpoint", a.checkpoint, "--onnx", models["int8"], "--force")
    e = sh(a.bnorm, "evaluate", "--checkpoint", a.checkpoint, "--fold-bn")
    engine = {
        "float": float(re.search(r"test acc ([0-9.]+) on", e).group(1)),
        "folded": float(re.search(r"folded: test loss [0-9.]+, test acc ([0-9.]+)", e).group(1)),
        "int8": float(re.search(r"int8 \(simulated\) ([0-9.]+)", q).group(1)),
    }
    result = {"checkpoint": a.checkpoint, "models": {}, "speed": []}
    for name, path in models.items():
        result["models"][name] = {"bytes": path.stat().st_size, "engine_accuracy": engine[name],
                                  "onnxruntime_accuracy": run_onnx(path, labels=True)["accuracy"]}
    for batch in map(int, a.batches.split(",")):
        for threads in map(int, a.threads.split(",")):
            count = a.batch1_examples if batch == 1 else 0
            times = {name: [] for name in models}
            for _ in range(a.repeats):
                for name, path in models.items():
                    times[name].append(run_onnx(path, count, batch, threads)["examples_per_sec"])
            row = {"batch": batch, "threads": threads,
                   **{name: statistics.median(v) for name, v in times.items()}}
            result["speed"].append(row)
            print(f"batch {batch:4d} threads {threads}: " + ", ".join(
                f"{n} {row[n]:9.0f}/s ({row[n] / row['float']:.2f}x)" for n in models), flush=True)
    lines = ["| model | file bytes | accuracy (onnxruntime) | accuracy (bnorm engine) |",
             "|---|---|---|---|"]
    for name, m in result["models"].items():
        lines.append(f"| {name} | {m['bytes']} | {m['onnxruntime_accuracy']:.4f} | "
                     f"{m['engine_accuracy']:.4f}{' (simulated)' if name == 'int8' else ''} |")
    lines += ["", "| batch | threads | float ex/s | folded ex/s | int8 ex/s |", "|---|---|---|---|---|"]
    for r in result["speed"]:
        lines.append(f"| {r['batch']} | {r['threads']} | {r['float']:.0f} | {r['folded']:.0f} "
                     f"({r['folded'] / r['float']:.2f}x) | {r['int8']:.0f} ({r['int8'] / r['float']:.2f}x) |")
    print("\n".join(lines))
    if a.json_out:
        write_bytes_atomically(a.json_out, (json.dumps(result, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
