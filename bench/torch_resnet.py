#!/usr/bin/env python3
"""A ResNet-18 training step on CPU with torch's BatchNorm2d and with bnorm's (bnorm.torch),
and the two BNs' float32 error on inputs with a large mean.

    PYTHONPATH=build/python /usr/bin/python3 bench/torch_resnet.py [--batch 16] [--size 112]
        [--repeats 7] [--threads 1,2] [--formats nchw,nhwc] [--profile-steps 2]
        [--offsets 0,1e3,1e4] [--json PATH]

Speed: for each memory format x thread count, one model (torchvision's resnet18 layout,
written out below) and its bnorm.torch.convert'ed deep copy, each with its own SGD, step on
the same batch: forward, cross-entropy, backward, SGD step. After one untimed step each, the
two take turns (the order flips every repeat) and the medians over --repeats are reported
with bnorm / torch. "BN ms" is the time in the BN layers per step, from torch.profiler over
--profile-steps further steps (so inflated by the profiler alike for both): torch, the
total CPU time of aten::batch_norm (forward, dispatch included) and NativeBatchNormBackward0
(backward); bnorm, its ranges bnorm::batch_norm_forward / _backward, which bnorm.torch
records only while a profiler runs and which cover the numpy views, the kernel and
wrapping the result.

Numerics: the model in train mode (a fresh copy each time) runs forward on x * scale +
offset (x ~ N(0, 1), float32) with torch's BN and with bnorm's in float32, and torch's BN in
float64 on the same weights and the same float32 input. Reported: max |err| / max |ref| of
the logits (end to end, convolutions' rounding included) and, for the first BN alone, of its
output and its updated running_var against float64 batch norm of the very float32 tensor
that BN received.
"""
import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bnorm  # noqa: E402
import bnorm.torch as bt  # noqa: E402
from atomic_file import write_text_atomically  # noqa: E402

FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


# ---- torchvision's resnet18, without torchvision -------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """conv7x7/2-BN-ReLU, maxpool3x3/2, 4 stages of 2 BasicBlocks (64/128/256/512), avgpool, fc."""

    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for i, cout in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- speed ---------------------------------------------------------------------------------

def train_step(model, opt, x, target):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), target).backward()
    opt.step()


BN_OPS = {"torch": ("aten::batch_norm", "NativeBatchNormBackward0"),
          "bnorm": ("bnorm::batch_norm_forward", "bnorm::batch_norm_backward")}


def bn_ms_per_step(name, model, opt, x, target, steps):
    """The BN layers' CPU time per step (ms) and the profiled step (ms), from torch.profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, opt, x, target)
        step_ms = (time.perf_counter() - start) * 1e3 / steps
    totals = {e.key: e.cpu_time_total for e in prof.key_averages()}
    missing = [op for op in BN_OPS[name] if op not in totals]
    if missing:
        sys.exit(f"torch_resnet: the profiler recorded no {missing} for {name}")
    return sum(totals[op] for op in BN_OPS[name]) / 1e3 / steps, step_ms


def speed(args, fmt_name, threads):
    torch.set_num_threads(threads)
    fmt = FORMATS[fmt_name]
    torch.manual_seed(0)
    models = {"torch": ResNet18(args.classes).to(memory_format=fmt)}
    models["bnorm"] = bt.convert(copy.deepcopy(models["torch"]))
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g).contiguous(memory_format=fmt)
    target = torch.randint(0, args.classes, (args.batch,), generator=g)
    order = ["torch", "bnorm"]
    for name in order:  # untimed warm-up
        train_step(models[name], opts[name], x, target)
    times = {name: [] for name in order}
    for _ in range(args.repeats):
        for name in order:
            start = time.perf_counter()
            train_step(models[name], opts[name], x, target)
            times[name].append(time.perf_counter() - start)
        order.reverse()
    row = {"format": fmt_name, "threads": threads}
    for name in ("torch", "bnorm"):
        row[f"{name}_step_ms"] = statistics.median(times[name]) * 1e3
        row[f"{name}_step_ms_all"] = [t * 1e3 for t in times[name]]
    row["ratio"] = row["bnorm_step_ms"] / row["torch_step_ms"]
    if args.profile_steps > 0:
        for name in ("torch", "bnorm"):
            row[f"{name}_bn_ms"], row[f"{name}_profiled_step_ms"] = bn_ms_per_step(
                name, models[name], opts[name], x, target, args.profile_steps)
        row["bn_ratio"] = row["bnorm_bn_ms"] / row["torch_bn_ms"]
    return row


# ---- numerics ------------------------------------------------------------------------------

def rel_err(got, ref):
    got, ref = got.double(), ref.double()
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def forward_train(model, x):
    """Logits of a train-mode forward, and the first BN's input, output (cloned before the
    in-place ReLU after it) and running_var."""
    seen = {}
    hook = model.bn1.register_forward_hook(
        lambda m, inp, out: seen.update(x=inp[0].detach().clone(), y=out.detach().clone()))
    with torch.no_grad():
        logits = model.train()(x)
    hook.remove()
    return logits, seen["x"], seen["y"], model.bn1.running_var.clone()


def numerics(args, fmt_name):
    fmt = FORMATS[fmt_name]
    torch.manual_seed(0)
    base = ResNet18(args.classes).to(memory_format=fmt)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    rows = []
    for offset in args.offsets:
        x32 = (noise * args.scale + offset).contiguous(memory_format=fmt)
        ref = forward_train(copy.deepcopy(base).double(), x32.double())
        row = {"format": fmt_name, "offset": offset, "scale": args.scale}
        for name, convert in (("torch", lambda m: m), ("bnorm", bt.convert)):
            logits, bn_in, bn_out, running_var = forward_train(convert(copy.deepcopy(base)), x32)
            # float64 batch norm of the exact float32 tensor this BN saw: its own error only
            bn = base.bn1
            rv0 = torch.ones(bn.num_features, dtype=torch.float64)
            y64 = F.batch_norm(bn_in.double(), torch.zeros_like(rv0), rv0, bn.weight.double(),
                               bn.bias.double(), True, bn.momentum, bn.eps)
            row[f"{name}_logits"] = rel_err(logits, ref[0])
            row[f"{name}_bn1_y"] = rel_err(bn_out, y64)
            row[f"{name}_bn1_running_var"] = rel_err(running_var, rv0)
        rows.append(row)
    return rows


# ---- report ----------------------------------------------------------------------------

def table(result):
    lines = [f"# {result['command']}",
             f"# {result['date']}  torch {result['torch']}  bnorm {result['bnorm']} "
             f"({result['kernel_isa']})  cpus {result['cpus']}",
             f"# ResNet-18 training step, batch {result['batch']}, {result['size']}x"
             f"{result['size']}, {result['classes']} classes; medians of {result['repeats']}",
             "",
             f"{'format':6} {'thr':>3} {'torch ms':>9} {'bnorm ms':>9} {'ratio':>6}   "
             f"{'torch BN ms':>11} {'bnorm BN ms':>11} {'BN ratio':>8}"]
    for r in result["speed"]:
        bn = (f"{r['torch_bn_ms']:11.1f} {r['bnorm_bn_ms']:11.1f} {r['bn_ratio']:8.2f}"
              if "bn_ratio" in r else "")
        lines.append(f"{r['format']:6} {r['threads']:3d} {r['torch_step_ms']:9.1f} "
                     f"{r['bnorm_step_ms']:9.1f} {r['ratio']:6.3f}   {bn}")
    lines += ["", "# float32 train-mode forward, x = N(0,1) * scale + offset; max|err|/max|ref| "
              "vs float64", f"{'format':6} {'offset':>8} {'scale':>6}   "
              f"{'logits torch':>12} {'logits bnorm':>12}   {'bn1 y torch':>11} "
              f"{'bn1 y bnorm':>11}   {'bn1 rvar torch':>14} {'bn1 rvar bnorm':>14}"]
    for r in result["numerics"]:
        lines.append(f"{r['format']:6} {r['offset']:8.0e} {r['scale']:6g}   "
                     f"{r['torch_logits']:12.2e} {r['bnorm_logits']:12.2e}   "
                     f"{r['torch_bn1_y']:11.2e} {r['bnorm_bn1_y']:11.2e}   "
                     f"{r['torch_bn1_running_var']:14.2e} {r['bnorm_bn1_running_var']:14.2e}")
    return "\n".join(lines) + "\n"


def _count(minimum):
    """An argparse type: an integer >= minimum, else a usage error naming what was given."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _list(item):
    """An argparse type: a comma-separated list of item's values."""
    def parse(text):
        return [item(part) for part in text.split(",")]
    return parse


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=_count(2), default=16)
    p.add_argument("--size", type=_count(1), default=112, help="input height and width")
    p.add_argument("--classes", type=_count(1), default=1000)
    p.add_argument("--repeats", type=_count(1), default=7)
    p.add_argument("--threads", type=_list(_count(1)), default=[1, 2],
                   help="comma-separated thread counts")
    p.add_argument("--formats", default="nchw,nhwc")
    p.add_argument("--profile-steps", type=_count(0), default=2, help="0: no BN timing")
    p.add_argument("--offsets", type=_list(_number), default=[0.0, 1e3, 1e4],
                   help="numerics: input offsets")
    p.add_argument("--scale", type=_number, default=1.0, help="numerics: input scale")
    p.add_argument("--json", help="also write the results here (atomically)")
    args = p.parse_args()
    threads = args.threads
    formats = args.formats.split(",")
    if any(f not in FORMATS for f in formats):
        p.error(f"--formats: choose from {', '.join(FORMATS)}")
    result = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "bnorm": bnorm.__version__,
        "kernel_isa": bnorm.kernel_isa(), "cpus": os.cpu_count(), "batch": args.batch,
        "size": args.size, "classes": args.classes, "repeats": args.repeats,
        "profile_steps": args.profile_steps, "speed": [], "numerics": [],
    }
    old_threads = torch.get_num_threads()
    for fmt in formats:
        for t in threads:
            result["speed"].append(speed(args, fmt, t))
            print(result["speed"][-1]["format"], t, "done", file=sys.stderr, flush=True)
    torch.set_num_threads(old_threads)
    for fmt in formats:
        result["numerics"] += numerics(args, fmt)
    text = table(result)
    sys.stdout.write(text)
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
