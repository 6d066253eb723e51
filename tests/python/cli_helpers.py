"""Shared by the tests of the `bnorm` command: running it, its one-line errors, its
metrics files and checkpoints (the format of docs/training.md), and tiny IDX data sets.
"""
import gzip
import json
import os
import struct
import subprocess
import zlib

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BNORM = os.environ.get("BNORM_CLI", os.path.join(ROOT, "build", "bnorm"))
FASHION = "/usr/share/datasets/fashion-mnist"
TIMING_KEYS = {"examples_per_sec", "test_examples_per_sec", "train_seconds", "seconds"}

needs_cli = pytest.mark.skipif(not os.path.exists(BNORM), reason="build/bnorm not built")
needs_data = pytest.mark.skipif(
    not os.path.exists(os.path.join(FASHION, "train-images-idx3-ubyte.gz")),
    reason="dataset-fashion-mnist not installed")

SMALL = ["--train-examples", "512", "--test-examples", "256", "--batch-size", "64",
         "--threads", "2", "--no-progress"]


def run(*args, timeout=300, env=None):
    return subprocess.run([BNORM, *args], capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def one_line_error(result, status):
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bnorm: error: "), lines[0]
    return lines[0]


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def read_checkpoint(path):
    """(metadata dict, {name: numpy array}) of a checkpoint; asserts magic and CRC-32."""
    data = open(path, "rb").read()
    assert data[:8] == b"BNORMCKP"
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4]) & 0xFFFFFFFF
    pos = 12

    def u32():
        nonlocal pos
        pos += 4
        return struct.unpack_from("<I", data, pos - 4)[0]

    def string():
        nonlocal pos
        n = u32()
        pos += n
        return data[pos - n:pos].decode()

    meta = {}
    for _ in range(u32()):
        key = string()
        meta[key] = string()
    tensors = {}
    for _ in range(u32()):
        name = string()
        dtype, rank = struct.unpack_from("<BB", data, pos)
        pos += 2
        sizes = struct.unpack_from(f"<{rank}q", data, pos)
        pos += 8 * rank
        count = int(np.prod(sizes)) if rank else 1
        np_type = {1: "<f4", 2: "<f8", 3: "<i8"}[dtype]
        tensors[name] = np.frombuffer(data, np_type, count, pos).reshape(sizes)
        pos += count * np.dtype(np_type).itemsize
    return meta, tensors


def _string(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def write_checkpoint(path, meta, tensors):
    """Writes a checkpoint of `meta` (str -> str) and `tensors` (name -> numpy array of
    float32, float64 or int64), independently of bnorm's writer."""
    out = b"BNORMCKP" + struct.pack("<I", 1) + struct.pack("<I", len(meta))
    for k in sorted(meta):
        out += _string(k) + _string(meta[k])
    out += struct.pack("<I", len(tensors))
    codes = {np.dtype("float32"): 1, np.dtype("float64"): 2, np.dtype("int64"): 3}
    for name, value in tensors.items():
        value = np.asarray(value)
        out += _string(name) + struct.pack("<BB", codes[value.dtype], value.ndim)
        out += b"".join(struct.pack("<q", n) for n in value.shape)
        out += value.astype(value.dtype.newbyteorder("<")).tobytes()
    out += struct.pack("<I", zlib.crc32(out) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(out)


def write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def small_dataset(directory, labels_train, train_size=(28, 28), test_size=(28, 28)):
    rng = np.random.default_rng(0)
    n = len(labels_train)
    write_idx(directory / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, *train_size)))
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.array(labels_train))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (16, *test_size)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(16) % 10)
