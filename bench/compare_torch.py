#!/usr/bin/env python3
"""bnorm vs PyTorch (CPU) side by side, in one process, same thread count, with a
memory copy of the same bytes as the ceiling.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare_torch.py [--threads 2]
        [--shape 64 64 56 56] [--repeats 15] [--json FILE]

Each operation is timed `repeats` times after a warm-up; the median is reported.
Both libraries allocate their output per call (bnorm through its numpy bindings,
PyTorch through its allocator), so the comparison is like for like. GB/s uses the
model bytes of docs/benchmarks.md (copy 2T, forward 2T, backward 3T).
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import bnorm
from atomic_file import write_text_atomically


def median_seconds(fn, repeats):
    fn()  # warm-up: page in buffers, pick kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64, 56, 56])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    bnorm.set_num_threads(args.threads)
    shape = tuple(args.shape)
    c = shape[1]
    rng = np.random.default_rng(0)
    x_first = (3 + rng.standard_normal(shape)).astype(np.float32)
    dy_first = rng.standard_normal(shape).astype(np.float32)
    tensor_bytes = x_first.nbytes
    rows = []

    for layout in ("channels_first", "channels_last"):
        if layout == "channels_first":
            x, dy = x_first, dy_first
            xt = torch.from_numpy(x)
            dyt = torch.from_numpy(dy)
        else:  # (N, H, W, C) memory viewed as (N, C, H, W), for both libraries
            axes = (0,) + tuple(range(2, len(shape))) + (1,)
            back = (0, len(shape) - 1) + tuple(range(1, len(shape) - 1))
            x = np.ascontiguousarray(x_first.transpose(axes)).transpose(back)
            dy = np.ascontiguousarray(dy_first.transpose(axes)).transpose(back)
            xt = torch.from_numpy(x)
            dyt = torch.from_numpy(dy)
            assert xt.is_contiguous(memory_format=torch.channels_last) or len(shape) != 4
        w = np.full(c, 1.5, np.float32)
        b = np.full(c, 0.5, np.float32)
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
        wt, bt = torch.from_numpy(w.copy()), torch.from_numpy(b.copy())
        rmt, rvt = torch.zeros(c), torch.ones(c)

        copy_dst = torch.empty_like(xt)
        copy_s = median_seconds(lambda: copy_dst.copy_(xt), args.repeats)

        def torch_forward_train():
            return F.batch_norm(xt, rmt, rvt, wt, bt, training=True, momentum=0.1, eps=1e-5)

        def bnorm_forward_train():
            return bnorm.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)

        def torch_forward_eval():
            return F.batch_norm(xt, rmt, rvt, wt, bt, training=False, eps=1e-5)

        def bnorm_forward_eval():
            return bnorm.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5)

        # Backward of the training forward: torch's native kernel (what autograd calls).
        _, save_mean, save_invstd = bnorm.batch_norm_training(x, w, b)
        smt, sit = torch.from_numpy(save_mean), torch.from_numpy(save_invstd)

        def torch_backward():
            return torch.ops.aten.native_batch_norm_backward(
                dyt, xt, wt, None, None, smt, sit, True, 1e-5, [True, True, True])

        def bnorm_backward():
            return bnorm.batch_norm_backward(x, dy, save_mean, save_invstd, w)

        for op, model_tensors, torch_fn, bnorm_fn in (
                ("forward_train", 2, torch_forward_train, bnorm_forward_train),
                ("forward_eval", 2, torch_forward_eval, bnorm_forward_eval),
                ("backward", 3, torch_backward, bnorm_backward)):
            torch_s = median_seconds(torch_fn, args.repeats)
            bnorm_s = median_seconds(bnorm_fn, args.repeats)
            copy_equiv_s = copy_s * model_tensors / 2
            rows.append(dict(
                op=op, layout=layout, shape=list(shape), threads=args.threads,
                bnorm_ms=bnorm_s * 1e3, torch_ms=torch_s * 1e3,
                speedup_vs_torch=torch_s / bnorm_s,
                bnorm_gbps=model_tensors * tensor_bytes / bnorm_s / 1e9,
                torch_gbps=model_tensors * tensor_bytes / torch_s / 1e9,
                copy_gbps=2 * tensor_bytes / copy_s / 1e9,
                bnorm_fraction_of_copy=copy_equiv_s / bnorm_s))

    print(f"shape {shape} float32, {args.threads} threads, median of {args.repeats}; "
          f"torch {torch.__version__}, bnorm {bnorm.__version__}")
    print(f"{'op':14} {'layout':15} {'bnorm ms':>9} {'torch ms':>9} {'speedup':>8} "
          f"{'bnorm GB/s':>11} {'torch GB/s':>11} {'copy GB/s':>10}")
    for r in rows:
        print(f"{r['op']:14} {r['layout']:15} {r['bnorm_ms']:9.2f} {r['torch_ms']:9.2f} "
              f"{r['speedup_vs_torch']:7.2f}x {r['bnorm_gbps']:11.1f} {r['torch_gbps']:11.1f} "
              f"{r['copy_gbps']:10.1f}")
    if args.json:
        write_text_atomically(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
