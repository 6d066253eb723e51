#!/usr/bin/env node
// Runs an ONNX model exported by `bnorm export` / `bnorm quantize` in onnxruntime (the
// npm package onnxruntime-node, CPU) on MNIST-style IDX test images, fed exactly as the
// engine feeds them: (N, 1, 28, 28) float32, pixel / 255.
//
//   node run_onnx.js --model M.onnx --images t10k-images-idx3-ubyte.gz
//        [--labels t10k-labels-idx1-ubyte.gz] [--count N] [--batch B] [--threads T]
//        [--repeats R] [--logits OUT.f32]
//
// Prints one JSON line: examples, accuracy (with --labels), seconds (the median of R
// timed passes over the N images, batch by batch, after one untimed batch),
// examples_per_sec, batch, threads. Non-finite logits are an error.
// --logits writes the logits of the first pass, (N, classes) float32 little-endian, raw.
// Any failure: a message on stderr and exit status 1.
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const ort = require('onnxruntime-node');

function fail(message) {
  process.stderr.write(`run_onnx: error: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const a = { count: 0, batch: 256, threads: 1, repeats: 1 };
  const numeric = new Set(['count', 'batch', 'threads', 'repeats']);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) fail(`bad argument '${argv[i]}'`);
    if (!['model', 'images', 'labels', 'logits', ...numeric].includes(key)) fail(`unknown option --${key}`);
    if (numeric.has(key)) {
      const v = Number(argv[i + 1]);
      if (!Number.isInteger(v) || v < (key === 'count' ? 0 : 1)) fail(`--${key}: expected a positive integer, got '${argv[i + 1]}'`);
      a[key] = v;
    } else {
      a[key] = argv[i + 1];
    }
  }
  if (!a.model || !a.images) fail('--model and --images are required');
  return a;
}

// An IDX file (gzipped when its name ends in .gz): {dims, bytes of the unsigned-byte data}.
function readIdx(file) {
  let raw;
  try {
    raw = fs.readFileSync(file);
    if (file.endsWith('.gz')) raw = zlib.gunzipSync(raw);
  } catch (e) {
    fail(`${file}: ${e.message}`);
  }
  if (raw.length < 4 || raw[0] !== 0 || raw[1] !== 0 || raw[2] !== 0x08) fail(`${file}: not an unsigned-byte IDX file`);
  const rank = raw[3];
  const dims = [];
  for (let d = 0; d < rank; ++d) dims.push(raw.readUInt32BE(4 + 4 * d));
  const offset = 4 + 4 * rank;
  const size = dims.reduce((x, y) => x * y, 1);
  if (raw.length !== offset + size) fail(`${file}: ${raw.length - offset} data bytes for dimensions ${dims}`);
  return { dims, data: raw.subarray(offset) };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const images = readIdx(a.images);
  if (images.dims.length !== 3 || images.dims[1] !== 28 || images.dims[2] !== 28) fail(`${a.images}: expected N x 28 x 28 images`);
  const n = a.count > 0 ? Math.min(a.count, images.dims[0]) : images.dims[0];
  const labels = a.labels ? readIdx(a.labels) : null;
  if (labels && labels.dims[0] < n) fail(`${a.labels}: fewer labels than images`);
  const pixels = new Float32Array(n * 784);
  for (let i = 0; i < n * 784; ++i) pixels[i] = images.data[i] / 255;

  let session;
  try {
    session = await ort.InferenceSession.create(a.model, {
      intraOpNumThreads: a.threads, interOpNumThreads: 1, executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    fail(`${a.model}: onnxruntime refuses the model: ${e.message}`);
  }
  // One untimed batch first: the session's first run allocates and plans its kernels.
  await session.run({ input: new ort.Tensor('float32', pixels.subarray(0, Math.min(a.batch, n) * 784), [Math.min(a.batch, n), 1, 28, 28]) });
  let logits = null;
  let classes = 0;
  const seconds = [];
  for (let r = 0; r < a.repeats; ++r) {
    const pass = [];
    const t0 = process.hrtime.bigint();
    for (let first = 0; first < n; first += a.batch) {
      const m = Math.min(a.batch, n - first);
      const x = new ort.Tensor('float32', pixels.subarray(first * 784, (first + m) * 784), [m, 1, 28, 28]);
      const out = (await session.run({ input: x })).logits;
      classes = out.dims[1];
      if (r === 0) pass.push(Float32Array.from(out.data));
    }
    seconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
    if (r === 0) {
      logits = new Float32Array(n * classes);
      let at = 0;
      for (const chunk of pass) { logits.set(chunk, at); at += chunk.length; }
    }
  }
  // NaN is never hidden: an arg max over NaN logits would quietly pick class 0.
  const bad = logits.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) fail(`${a.model}: logit ${bad % classes} of example ${Math.floor(bad / classes)} is ${logits[bad]}`);
  seconds.sort((x, y) => x - y);
  const median = seconds[Math.floor(seconds.length / 2)];
  const result = { examples: n, classes, seconds: median, examples_per_sec: n / median, batch: a.batch, threads: a.threads };
  if (labels) {
    let correct = 0;
    for (let i = 0; i < n; ++i) {
      let best = 0;
      for (let k = 1; k < classes; ++k) if (logits[i * classes + k] > logits[i * classes + best]) best = k;
      if (best === labels.data[i]) ++correct;
    }
    result.accuracy = correct / n;
  }
  if (a.logits) {
    const tmp = path.join(path.dirname(a.logits), `.${path.basename(a.logits)}.tmp.${process.pid}`);
    fs.writeFileSync(tmp, Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength));
    fs.renameSync(tmp, a.logits);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => fail(e.stack || String(e)));
