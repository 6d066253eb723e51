#!/usr/bin/env python3
"""The seed's experiment in PyTorch 1.13, as the peer for `scripts/experiment`.

    /usr/bin/python3 bench/torch_lenet_experiment.py --model lenet-bn --lr 1.0 [--epochs 10]
        [--batch-size 256] [--seed 0] [--threads 2] [--metrics FILE]

d2l's train_ch6 on the same Fashion-MNIST files: the model of
bench/compare_lenet_torch.py (Xavier-uniform weights), SGD, mean cross-entropy,
shuffled batches with a smaller last one, training accuracy counted in training mode,
test accuracy in eval mode after every epoch. Prints a line per epoch like
`bnorm train` and optionally writes the same JSON lines, so
tools/experiment_report.py can set the two side by side.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from atomic_file import write_text_atomically  # noqa: E402
from compare_lenet_torch import DEFAULT_DATA, load_split, make_model  # noqa: E402


def evaluate(net, x, y, batch_size):
    net.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = net(x[i:i + batch_size])
            loss += nn.functional.cross_entropy(out, y[i:i + batch_size], reduction="sum").item()
            correct += (out.argmax(1) == y[i:i + batch_size]).sum().item()
    return loss / len(x), correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["lenet", "lenet-bn"], default="lenet-bn")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--metrics")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x, y = load_split(a.data, "train")
    tx, ty = load_split(a.data, "t10k")
    net = make_model(a.model)
    opt = torch.optim.SGD(net.parameters(), lr=a.lr)
    lines = ""  # every epoch's row so far; the metrics file is rewritten whole
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(x))
        loss_sum, correct = 0.0, 0
        for i in range(0, len(x), a.batch_size):
            idx = order[i:i + a.batch_size]
            xb, yb = x[idx], y[idx]
            logits = net(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        train_seconds = time.perf_counter() - t0
        test_loss, test_acc = evaluate(net, tx, ty, a.batch_size)
        row = {"model": a.model, "epoch": epoch, "train_loss": loss_sum / len(x),
               "train_acc": correct / len(x), "test_loss": test_loss, "test_acc": test_acc,
               "examples_per_sec": len(x) / train_seconds, "seconds": time.perf_counter() - t0}
        print(f"epoch {epoch:2d}/{a.epochs}  loss {row['train_loss']:.3f}, train acc "
              f"{row['train_acc']:.3f}, test acc {test_acc:.3f}  |  "
              f"{row['examples_per_sec']:.0f} examples/sec", flush=True)
        lines += json.dumps(row) + "\n"
        if a.metrics:
            write_text_atomically(a.metrics, lines)


if __name__ == "__main__":
    main()
