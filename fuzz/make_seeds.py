#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus (idx, checkpoint), independently of
bnorm's own writers: IDX by its documented layout, checkpoints by src/nn/checkpoint.h's
format with zlib's CRC-32. Files named by a SHA-1 (all of c_api's) are inputs that
fuzzing runs found, kept one per new coverage edge:
  build-fuzz/fuzz/fuzz_T -merge=1 -use_counters=0 fuzz/corpus/T build-fuzz/corpus/T
Run from anywhere; it rewrites the hand-made seed files only."""
import gzip
import os
import random
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(kind, name, data):
    os.makedirs(os.path.join(HERE, "corpus", kind), exist_ok=True)
    with open(os.path.join(HERE, "corpus", kind, name), "wb") as f:
        f.write(data)


def idx(dims, data, type_=0x08):
    return bytes([0, 0, type_, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def gz(data):
    return gzip.compress(data, mtime=0)


rng = random.Random(0)
labels = idx([10], [i % 10 for i in range(10)])
images = idx([2, 3, 3], [rng.randrange(256) for _ in range(18)])
write("idx", "labels-10", labels)
write("idx", "labels-10.gz", gz(labels))
write("idx", "images-2x3x3", images)
write("idx", "images-2x3x3.gz", gz(images))
write("idx", "rank2-2x2", idx([2, 2], [1, 2, 3, 4]))
write("idx", "zero-dim", idx([0, 28, 28], []))
write("idx", "bad-label-12", idx([3], [1, 12, 3]))
write("idx", "byte-swapped", bytes([8, 0, 0, 0]) + b"\x01\x00\x00\x00" + b"\x00")
write("idx", "truncated-data", idx([4, 2, 2], [1, 2, 3]))
write("idx", "trailing-data", idx([2], [1, 2, 3]))
write("idx", "float-type", idx([2], [0] * 8, 0x0D))
write("idx", "two-gzip-members", gz(idx([2], [1, 2])) + gz(b"\x00"))


def s(text):
    b = text.encode()
    return struct.pack("<I", len(b)) + b


def tensor(name, dtype, sizes, payload):
    return s(name) + bytes([dtype, len(sizes)]) + b"".join(struct.pack("<q", x) for x in sizes) + payload


def checkpoint(meta, tensors, version=1):
    body = b"BNORMCKP" + struct.pack("<I", version) + struct.pack("<I", len(meta))
    for k, v in meta:
        body += s(k) + s(v)
    body += struct.pack("<I", len(tensors)) + b"".join(tensors)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


write("checkpoint", "empty", checkpoint([], []))
write("checkpoint", "meta-only", checkpoint([("model", "lenet-bn"), ("epoch", "3")], []))
write("checkpoint", "three-dtypes", checkpoint(
    [("model", "mlp")],
    [tensor("w", 1, [2, 3], struct.pack("<6f", *range(6))),
     tensor("running_var", 2, [2], struct.pack("<2d", 1.0, 2.0)),
     tensor("num_batches_tracked", 3, [], struct.pack("<q", 7))]))
write("checkpoint", "zero-size", checkpoint([], [tensor("empty", 1, [0, 5], b"")]))
write("checkpoint", "rank-8", checkpoint([], [tensor("r8", 1, [1] * 8, struct.pack("<f", 1.5))]))
write("checkpoint", "version-2", checkpoint([], [], version=2))
bad = bytearray(checkpoint([("k", "v")], [tensor("t", 2, [1], struct.pack("<d", 3.0))]))
bad[-1] ^= 0xFF
write("checkpoint", "bad-crc", bytes(bad))
