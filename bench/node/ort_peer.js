#!/usr/bin/env node
// ONNX Runtime peer of the benchmark: runs the ONNX export of the PyTorch
// peer's module (bench/bert_torch.py export) with onnxruntime-node on the
// CPU, graph optimisation `all`.
//
//   node ort_peer.js run MODEL.onnx IDS.jsonl OUT --batch B [--stride S] [--detail K]
//                    [--threads N]
//   node ort_peer.js latency MODEL.onnx IDS.jsonl OUT [--runs N] [--threads N]
//
// --threads sets intraOpNumThreads (default 2; one inter-op thread).
//
// `run` has the same contract as `bert_torch.py run`: the texts whose index
// is a multiple of S, length-sorted batches of B padded to the batch's
// longest text with an attention mask, one untimed warm-up batch, then
//   OUT.json        {texts, tokens (real), padded_tokens, seconds, batch, threads}
//   OUT.cls.f32     the [CLS] row of every selected text, in index order
//   OUT.detail.f32  every row of the first K selected texts, concatenated
// The timed span covers building the input tensors, session.run and copying
// the rows out.
//
// `latency` runs the first text of IDS.jsonl alone N times (default 50)
// after 5 untimed runs and writes OUT.json {runs, median_ms, p90_ms,
// min_ms, tokens}.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function usage(msg) {
  if (msg) process.stderr.write(`ort_peer.js: ${msg}\n`);
  process.stderr.write('usage: node ort_peer.js run MODEL.onnx IDS.jsonl OUT --batch B ' +
                       '[--stride S] [--detail K] [--threads N]\n' +
                       '       node ort_peer.js latency MODEL.onnx IDS.jsonl OUT [--runs N] ' +
                       '[--threads N]\n');
  process.exit(2);
}

function parseArgs(argv) {
  if (argv.length < 4) usage();
  const a = {cmd: argv[0], model: argv[1], ids: argv[2], out: argv[3],
             batch: 8, stride: 1, detail: 0, runs: 50, threads: 2};
  if (a.cmd !== 'run' && a.cmd !== 'latency') usage(`unknown command ${a.cmd}`);
  for (let i = 4; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    const v = Number(argv[i + 1]);
    if (!(k in a) || typeof a[k] !== 'number' || !Number.isInteger(v) || v < 0) {
      usage(`bad option ${argv[i]} ${argv[i + 1]}`);
    }
    a[k] = v;
  }
  if (a.batch < 1 || a.stride < 1 || a.runs < 1 || a.threads < 1) {
    usage('--batch, --stride, --runs, --threads must be >= 1');
  }
  return a;
}

function readIds(path) {
  const out = [];
  for (const line of fs.readFileSync(path, 'utf8').split('\n')) {
    if (line.length === 0) continue;
    const o = JSON.parse(line);
    if (!Array.isArray(o.ids)) {
      throw new Error(`${path}: line ${out.length + 1} has no ids (${o.error || '?'})`);
    }
    out.push(o.ids);
  }
  return out;
}

async function openSession(model, threads) {
  return ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
}

// Input tensors of one batch padded to its longest text.
function feeds(ids, group) {
  let t = 0;
  for (const i of group) t = Math.max(t, ids[i].length);
  const x = new BigInt64Array(group.length * t);
  const m = new BigInt64Array(group.length * t);
  group.forEach((i, r) => {
    const row = ids[i];
    for (let j = 0; j < row.length; j++) {
      x[r * t + j] = BigInt(row[j]);
      m[r * t + j] = 1n;
    }
  });
  const dims = [group.length, t];
  return {t, feeds: {input_ids: new ort.Tensor('int64', x, dims),
                     attention_mask: new ort.Tensor('int64', m, dims)}};
}

async function cmdRun(a) {
  const ids = readIds(a.ids);
  const session = await openSession(a.model, a.threads);
  const sel = [];
  for (let i = 0; i < ids.length; i += a.stride) sel.push(i);
  const pos = new Map(sel.map((i, k) => [i, k]));
  // Stable sort by length: ties keep index order, as in bert_torch.py.
  const order = sel.slice().sort((p, q) => ids[p].length - ids[q].length || p - q);
  const batches = [];
  for (let i = 0; i < order.length; i += a.batch) batches.push(order.slice(i, i + a.batch));
  const detailSet = new Set(sel.slice(0, a.detail));
  const detail = new Map();
  let h = 0;
  let cls = null;

  await session.run(feeds(ids, batches[0]).feeds); // warm-up, untimed
  const t0 = process.hrtime.bigint();
  let padded = 0;
  for (const group of batches) {
    const f = feeds(ids, group);
    padded += group.length * f.t;
    const y = (await session.run(f.feeds)).last_hidden_state;
    h = y.dims[2];
    if (cls === null) cls = new Float32Array(sel.length * h);
    const data = y.data;
    group.forEach((i, r) => {
      const base = r * f.t * h;
      cls.set(data.subarray(base, base + h), pos.get(i) * h);
      if (detailSet.has(i)) detail.set(i, data.slice(base, base + ids[i].length * h));
    });
  }
  const sec = Number(process.hrtime.bigint() - t0) / 1e9;

  let tokens = 0;
  for (const i of sel) tokens += ids[i].length;
  fs.writeFileSync(`${a.out}.cls.f32`, Buffer.from(cls.buffer, cls.byteOffset, cls.byteLength));
  const rows = sel.slice(0, a.detail).map((i) => detail.get(i));
  fs.writeFileSync(`${a.out}.detail.f32`, Buffer.concat(
      rows.map((r) => Buffer.from(r.buffer, r.byteOffset, r.byteLength))));
  const res = {texts: sel.length, tokens, padded_tokens: padded, seconds: sec,
               batch: a.batch, threads: a.threads, stride: a.stride, detail: rows.length,
               ort_version: ort.env.versions.node};
  fs.writeFileSync(`${a.out}.json`, JSON.stringify(res));
  process.stderr.write(`onnxruntime batch ${a.batch}: ${sel.length} texts, ${tokens} tokens ` +
                       `(${padded} padded) in ${sec.toFixed(2)} s: ` +
                       `${(tokens / sec).toFixed(1)} tokens/s\n`);
}

async function cmdLatency(a) {
  const ids = readIds(a.ids);
  const session = await openSession(a.model, a.threads);
  for (let i = 0; i < 5; i++) await session.run(feeds(ids, [0]).feeds);
  const ms = [];
  for (let i = 0; i < a.runs; i++) {
    const t0 = process.hrtime.bigint();
    const y = (await session.run(feeds(ids, [0]).feeds)).last_hidden_state;
    y.data.slice(0, y.dims[2]); // the [CLS] row, as a caller would take it
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((p, q) => p - q);
  const res = {runs: a.runs, tokens: ids[0].length, min_ms: ms[0],
               median_ms: ms[Math.floor(ms.length / 2)],
               p90_ms: ms[Math.min(ms.length - 1, Math.floor(ms.length * 0.9))]};
  fs.writeFileSync(`${a.out}.json`, JSON.stringify(res));
  process.stderr.write(`onnxruntime latency: ${ids[0].length} tokens, median ` +
                       `${res.median_ms.toFixed(2)} ms over ${a.runs} runs\n`);
}

const a = parseArgs(process.argv.slice(2));
(a.cmd === 'run' ? cmdRun(a) : cmdLatency(a)).catch((e) => {
  process.stderr.write(`ort_peer.js: ${e.message}\n`);
  process.exit(1);
});
