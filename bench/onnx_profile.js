#!/usr/bin/env node
// Where onnxruntime spends its time on a model: the kernels it runs after its graph
// optimizations (the fused QLinearConv, QGemm, ... of an int8 QDQ model) and the time
// per batch in each, from onnxruntime's own profiler.
//
//   node bench/onnx_profile.js MODEL.onnx [--batch 256] [--threads 1] [--runs 40]
//
// Input: constant pixels (0.3), shape (batch, 1, 28, 28): kernel time does not depend on
// the values. Prints one line per operator type, slowest first: ms per batch, share.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const ort = require(path.join(__dirname, '..', 'tests', 'onnx', 'node_modules', 'onnxruntime-node'));

function fail(message) {
  process.stderr.write(`onnx_profile: error: ${message}\n`);
  process.exit(1);
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv.length < 1 || argv[0].startsWith('--')) fail('usage: onnx_profile.js MODEL.onnx [--batch B] [--threads T] [--runs R]');
  const a = { batch: 256, threads: 1, runs: 40 };
  for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    const v = Number(argv[i + 1]);
    if (!(key in a) || !Number.isInteger(v) || v < 1) fail(`bad option ${argv[i]} ${argv[i + 1]}`);
    a[key] = v;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-profile-'));
  const session = await ort.InferenceSession.create(argv[0], {
    graphOptimizationLevel: 'all', intraOpNumThreads: a.threads, interOpNumThreads: 1,
    executionMode: 'sequential', enableProfiling: true, profileFilePrefix: path.join(dir, 'p'),
  });
  const x = new ort.Tensor('float32', new Float32Array(a.batch * 784).fill(0.3), [a.batch, 1, 28, 28]);
  for (let i = 0; i < a.runs; ++i) await session.run({ input: x });
  session.endProfiling();
  const file = fs.readdirSync(dir).find((f) => f.endsWith('.json'));
  if (!file) fail('onnxruntime wrote no profile');
  const events = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  fs.rmSync(dir, { recursive: true });
  const perOp = new Map();
  for (const e of events)
    if (e.cat === 'Node' && e.name.endsWith('_kernel_time'))
      perOp.set(e.args.op_name, (perOp.get(e.args.op_name) || 0) + e.dur);
  const total = [...perOp.values()].reduce((s, v) => s + v, 0);
  console.log(`${argv[0]}: batch ${a.batch}, threads ${a.threads}, ${a.runs} runs: ` +
              `${(total / a.runs / 1000).toFixed(3)} ms per batch in kernels`);
  for (const [op, us] of [...perOp.entries()].sort((p, q) => q[1] - p[1]))
    console.log(`  ${op.padEnd(20)} ${(us / a.runs / 1000).toFixed(3)} ms  ${(100 * us / total).toFixed(1)}%`);
}

main().catch((e) => fail(e.stack || String(e)));
