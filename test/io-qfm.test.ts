// The quantface model file (.qfm): round trips (float bit-exact; packed
// weights reproduce their integers, scales and zero points exactly), file
// sizes close to params x bits / 8, zero-copy float loads, bad files
// (truncated, corrupted, wrong magic, unknown version, a fuzz loop in a
// child process) and atomic saves that never leave a half-written file.
import t, { type Test } from 'tap';
import { readFile, readdir, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { encodeQfm, decodeQfm, saveQfm, loadQfm, packBitsTs, unpackBitsTs, packerSource, readQfmHeader, QFM_MAGIC } from '../lib/io/qfm.js';
import { describeModule } from '../lib/io/module-spec.js';
import { importTfjsGraphModel } from '../lib/io/tfjs.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { noGrad, Linear, Sequential, type Module } from '../lib/nn/index.js';
import { iresnet18, iresnet50, mobilefacenet } from '../lib/models/index.js';
import { binding } from '../lib/binding.js';
import { isQuantFaceError } from '../lib/errors.js';
import { roundHalfEven } from '../lib/quant/qparams.js';
import { toQat } from '../lib/quant/qat.js';
import { WeightFakeQuant } from '../lib/quant/fake-quant.js';
import { shared } from './fixtures/io/helpers.js';
import { tinyGraph, tinyQat } from './fixtures/io/models.js';
import { tempDir } from './fixtures/tmp.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 31337);
t.comment(`seed ${SEED}; packer: ${packerSource()}`);
const rng = new Rng(SEED);
const tmp = tempDir(t, 'qf-io-qfm-');

function run(m: Module, x: FTensor): Float32Array {
  return noGrad(() => Float32Array.from(m.forward(x).data));
}

function sameState(t: Test, a: Module, b: Module, label: string): void {
  const sa = a.stateDict();
  const sb = b.stateDict();
  t.same([...sb.keys()], [...sa.keys()], `${label}: same tensor names`);
  let diff = 0;
  for (const [k, v] of sa) {
    const w = sb.get(k);
    if (!w || w.numel !== v.numel) diff++;
    else for (let i = 0; i < v.numel; i++) if (!Object.is(v.data[i], w.data[i])) diff++;
  }
  t.equal(diff, 0, `${label}: every value bit-identical`);
  const ga = new Map([...a.namedParameters()].map(([n, p]) => [n, p.requiresGrad]));
  const gb = new Map([...b.namedParameters()].map(([n, p]) => [n, p.requiresGrad]));
  t.same([...gb], [...ga], `${label}: requiresGrad flags kept`);
}

// ------------------------------------------------------------------ bit packing
t.test('bit packing: TS packer round trip, layout, and agreement with binding.packBits', async (t) => {
  for (let bits = 2; bits <= 8; bits++) {
    const n = 1 + rng.int(200);
    const q = Uint8Array.from({ length: n }, () => rng.int(1 << bits));
    const p = new Uint8Array(Math.ceil((n * bits) / 8)).fill(0xab);
    packBitsTs(q, bits, p);
    // Reference: value i at bit i*bits, little-endian.
    let bad = 0;
    for (let i = 0; i < n; i++) {
      let v = 0;
      for (let b = 0; b < bits; b++) {
        const bit = i * bits + b;
        v |= ((p[bit >> 3]! >> (bit & 7)) & 1) << b;
      }
      if (v !== q[i]) bad++;
    }
    t.equal(bad, 0, `${bits}-bit layout matches the bit-stream definition (n=${n})`);
    const u = new Uint8Array(n).fill(0xcd);
    unpackBitsTs(p, bits, u);
    t.same([...u], [...q], `${bits}-bit unpack inverts pack`);
    const nb = binding as unknown as { packBits?: (o: object) => void; unpackBits?: (o: object) => void };
    if (typeof nb.packBits === 'function' && typeof nb.unpackBits === 'function') {
      const p2 = new Uint8Array(p.length).fill(0x5a);
      nb.packBits({ q, bits, out: p2 });
      t.same([...p2], [...p], `${bits}-bit: binding.packBits writes the same bytes`);
      const u2 = new Uint8Array(n).fill(0x11);
      nb.unpackBits({ packed: p, bits, out: u2 });
      t.same([...u2], [...q], `${bits}-bit: binding.unpackBits reads them back`);
    }
  }
  if (packerSource() === 'js') t.comment('binding.packBits is absent from the loaded addon: only the TS packer was checked');
  t.throws(() => packBitsTs(Uint8Array.of(4), 2, new Uint8Array(1)), RangeError, 'a value too large for the width is refused');
});

// ------------------------------------------------------------------ round trips
t.test('float round trip is bit-exact (graph, QAT graph, Sequential models)', async (t) => {
  const x = Tensor.randn([2, 12, 12, 3], rng) as FTensor;
  for (const [label, m] of [
    ['tiny graph', tinyGraph(3)],
    ['tiny QAT graph (W4/A6, frozen ranges)', tinyQat(4, 6, 3)],
  ] as [string, Module][]) {
    const path = join(tmp, `${label.split(' ')[1]}.qfm`);
    await saveQfm(m, path, { weightBits: 'float', provenance: { data: 'random batches', notes: { test: true } } });
    const l = await loadQfm(path);
    sameState(t, m, l.model, label);
    t.same(describeModule(l.model), describeModule(m), `${label}: same structure and configs`);
    t.same(run(l.model, x), run(m, x), `${label}: identical outputs`);
    t.same(l.info, (m as { info?: unknown }).info, `${label}: model info (preprocessing, hash) kept`);
    t.equal(l.provenance.data, 'random batches', `${label}: provenance kept`);
    t.equal(l.model.constructor.name, 'ImportedModel', `${label}: loads as an ImportedModel (input shape checked)`);
    t.throws(() => l.model.forward(Tensor.zeros([1, 11, 12, 3])), /takes input/, `${label}: wrong input shape refused`);
  }
  const q = tinyQat(4, 6, 3);
  const l = decodeQfm(encodeQfm(q, { weightBits: 'float' }));
  t.same(
    l.metadata.activations.map((a) => [a.name, a.bits, a.min, a.max, a.frozen]),
    [...q.namedModules()].filter(([, m]) => m.constructor.name === 'ActFakeQuant').map(([n, m]) => [n, 6, (m as unknown as { min: number }).min, (m as unknown as { max: number }).max, true]),
    'frozen activation ranges are listed in the metadata',
  );
  t.ok(l.metadata.activations.length >= 3 && l.metadata.activations.every((a) => a.max > a.min), `${l.metadata.activations.length} calibrated activation ranges`);
  for (const [label, m, shape] of [
    ['iresnet18 (narrow)', iresnet18({ widths: [8, 8, 16, 16], inputSize: 32, numFeatures: 16, seed: 2 }), [1, 32, 32, 3]],
    ['mobilefacenet', mobilefacenet({ seed: 3 }), [1, 112, 112, 3]],
  ] as [string, Module, number[]][]) {
    m.eval();
    const l2 = decodeQfm(encodeQfm(m, { weightBits: 'float' }));
    sameState(t, m, l2.model, label);
    t.ok(l2.model instanceof Sequential, `${label}: loads as a Sequential with the same names`);
    const xi = Tensor.randn(shape, rng) as FTensor;
    t.same(run(l2.model, xi), run(m, xi), `${label}: identical outputs`);
  }
});

t.test('zero-copy load: float tensors are views over the file buffer', async (t) => {
  const bytes = encodeQfm(tinyGraph(4), { weightBits: 'float' });
  const l = decodeQfm(bytes);
  const views = [...l.model.namedParameters()].filter(([, p]) => p.data.data.buffer === bytes.buffer);
  t.equal(views.length, l.model.parameters().length, `all ${views.length} float parameters share the file's ArrayBuffer`);
});

/** Independent per-channel asymmetric quantizer (QuantFace's scheme) for checking the stored integers. */
function refQuant(w: ArrayLike<number>, channels: number, bits: number): { q: number[]; scale: number[]; zp: number[] } {
  const inner = w.length / channels;
  const q: number[] = [];
  const scale: number[] = [];
  const zp: number[] = [];
  const qmax = 2 ** bits - 1;
  for (let c = 0; c < channels; c++) {
    let lo = 0;
    let hi = 0;
    for (let i = c * inner; i < (c + 1) * inner; i++) {
      lo = Math.min(lo, w[i]!);
      hi = Math.max(hi, w[i]!);
    }
    const s = hi === lo ? 1 : Math.fround((hi - lo) / qmax);
    const z = Math.min(qmax, Math.max(0, -roundHalfEven(lo / s)));
    scale.push(s);
    zp.push(z);
    for (let i = c * inner; i < (c + 1) * inner; i++) q.push(Math.min(qmax, Math.max(0, roundHalfEven(Math.fround(w[i]! / s)) + z)));
  }
  return { q, scale, zp };
}

t.test('packed round trip: stored integers, scales and zero points; dequantized weights; idempotent re-save', async (t) => {
  const m = tinyGraph(5);
  for (const bits of [8, 6, 5, 4, 3, 2]) {
    const bytes = encodeQfm(m, { weightBits: bits });
    const l = decodeQfm(bytes);
    let badQ = 0;
    let badW = 0;
    let checked = 0;
    for (const [name, p] of m.namedParameters()) {
      const pw = l.packedWeight(name);
      const isWeight = /^(conv1|dw|pw|fc)\.weight$/.test(name);
      if (!isWeight) {
        t.notOk(pw, `${bits} bits: ${name} stays float`);
        continue;
      }
      checked++;
      const ref = refQuant(p.data.data, pw!.channels, bits);
      for (let i = 0; i < ref.q.length; i++) if (pw!.q[i] !== ref.q[i]) badQ++;
      for (let c = 0; c < pw!.channels; c++) if (pw!.scale[c] !== ref.scale[c] || pw!.zeroPoint[c] !== ref.zp[c]) badQ++;
      const lw = l.model.stateDict().get(name)!;
      for (let i = 0; i < ref.q.length; i++) {
        const c = Math.floor(i / pw!.inner);
        if (lw.data[i] !== Math.fround((ref.q[i]! - ref.zp[c]!) * ref.scale[c]!)) badW++;
      }
    }
    t.equal(checked, 4, `${bits} bits: four packed weights`);
    t.equal(badQ, 0, `${bits} bits: integers, scales and zero points equal an independent quantizer`);
    t.equal(badW, 0, `${bits} bits: loaded weights are exactly (q - zp) * scale`);
    const again = encodeQfm(l.model, { weightBits: bits });
    const l2 = decodeQfm(again);
    let diff = 0;
    for (const name of ['conv1.weight', 'dw.weight', 'pw.weight', 'fc.weight']) {
      const a = l.packedWeight(name)!;
      const b = l2.packedWeight(name)!;
      for (let i = 0; i < a.q.length; i++) if (a.q[i] !== b.q[i]) diff++;
    }
    t.equal(diff, 0, `${bits} bits: saving the loaded model again stores the same integers`);
  }
  // A QAT model in 'auto' mode: weights packed at the quantizer's width; the
  // reloaded QAT model computes what the original computes.
  const q = tinyQat(4, 6, 6);
  const l = decodeQfm(encodeQfm(q));
  t.equal(l.packedWeight('conv1.weight')?.bits, 4, 'auto mode packs QAT weights at their 4 bits');
  t.equal(l.provenance.weightBits, 4, 'provenance records the weight width');
  t.equal(l.provenance.actBits, 6, 'provenance records the activation width');
  t.equal(l.provenance.teacherSha256, 'ab'.repeat(32), 'provenance records the teacher hash');
  const x = Tensor.randn([2, 12, 12, 3], rng) as FTensor;
  const a = run(q, x);
  const b = run(l.model, x);
  let maxd = 0;
  for (let i = 0; i < a.length; i++) maxd = Math.max(maxd, Math.abs(a[i]! - b[i]!));
  t.comment(`QAT model reloaded from packed weights: max |diff| ${maxd.toExponential(2)}`);
  t.ok(maxd <= 1e-6, 'reloaded QAT model reproduces the fake-quantized forward');
});

t.test('file size close to params x bits / 8', async (t) => {
  const check = (label: string, P: number, bits: number, size: number, metaBytes: number): void => {
    const ideal = (P * bits) / 8;
    const ratio = (size - metaBytes) / ideal;
    t.comment(`${label} W${bits}: ${size} bytes, params ${P} x ${bits} / 8 = ${ideal}, header + metadata ${metaBytes}, ratio ${ratio.toFixed(4)}`);
    t.ok(ratio >= 1 && ratio <= 1.05, `${label} W${bits}: (size - metadata) within 5% of params x bits / 8 (${ratio.toFixed(4)})`);
  };
  const mf = shared('models', 'mobileface', 'mobileface.json');
  if (mf) {
    const m = await importTfjsGraphModel(mf);
    for (const bits of [8, 6, 4]) {
      const path = join(tmp, `size-${bits}.qfm`);
      const size = await saveQfm(m, path, { weightBits: bits });
      t.equal((await stat(path)).size, size, 'reported size is the file size');
      const l = await loadQfm(path);
      t.equal(l.packedWeight('conv1.weight')?.bits, bits, `mobileface W${bits} loads with ${bits}-bit weights`);
      check('mobileface', m.numParams(), bits, size, readQfmHeader(await readFile(path)).metaBytes + 128);
    }
  } else t.comment('../shared/models/mobileface is absent: size checked on iResNet-50 only');
  // iResNet-50 (43.6M parameters): sizes from the encoded bytes (saving and loading are covered above).
  const r50 = iresnet50({ seed: 1 });
  for (const bits of [8, 6, 4]) {
    const bytes = encodeQfm(r50, { weightBits: bits });
    check('iResNet-50', r50.numParams(), bits, bytes.length, readQfmHeader(bytes).metaBytes + 128);
  }
});

// ------------------------------------------------------------------ bad files
t.test('bad files give QuantFaceError with stable codes', async (t) => {
  const good = encodeQfm(tinyQat(4, 6, 7));
  const expectFormat = (b: Uint8Array, label: string, re?: RegExp): void => {
    try {
      decodeQfm(b, 'test');
      t.fail(`${label}: loaded`);
    } catch (e) {
      t.ok(isQuantFaceError(e, 'E_FORMAT') && (!re || re.test((e as Error).message)), `${label}: E_FORMAT (${(e as Error).message.slice(0, 120)})`);
    }
  };
  const dv = new DataView(good.buffer, good.byteOffset);
  const metaLen = Number(dv.getBigUint64(16, true));
  const dataOff = Number(dv.getBigUint64(24, true));
  for (const cut of [0, 7, 64, 127, 128, 128 + (metaLen >> 1), dataOff, dataOff + 3, good.length - 1])
    expectFormat(good.subarray(0, cut), `truncated to ${cut} bytes`, cut < 128 ? /shorter|magic/ : /truncated/);
  expectFormat(Uint8Array.from([...good, 0]), 'a trailing byte', /trailing/);
  const magic = good.slice();
  magic[1] = 0x58;
  expectFormat(magic, 'wrong magic', /magic/);
  expectFormat(new TextEncoder().encode('{"format": "quantface-model"}'.padEnd(200)), 'a JSON file', /magic/);
  const ver = good.slice();
  new DataView(ver.buffer).setUint16(8, 2, true);
  ver.fill(0, 48, 80);
  ver.set(createHash('sha256').update(ver).digest(), 48);
  expectFormat(ver, 'unknown major version (valid checksum)', /version 2\.0 is not supported/);
  const minor = good.slice();
  new DataView(minor.buffer).setUint16(10, 7, true);
  minor.fill(0, 48, 80);
  minor.set(createHash('sha256').update(minor).digest(), 48);
  t.equal(decodeQfm(minor).version.minor, 7, 'a newer minor version of the same major loads');
  for (const pos of [50, 128 + 5, dataOff + 10, good.length - 1]) {
    const f = good.slice();
    f[pos] ^= 0x10;
    expectFormat(f, `bit flip at ${pos}`, /checksum/);
  }
  await t.rejects(loadQfm(join(tmp, 'missing.qfm')), { code: 'E_IO' }, 'missing file: E_IO');
  await mkdir(join(tmp, 'adir.qfm'));
  await t.rejects(loadQfm(join(tmp, 'adir.qfm')), { code: 'E_IO' }, 'a folder: E_IO');
});

t.test('fuzz: thousands of mutated files in a child process', async (t) => {
  const child = fileURLToPath(new URL('./fixtures/io/qfm-fuzz-child.ts', import.meta.url));
  const seed = 1 + Math.floor(Math.random() * 1e9);
  const r = spawnSync(process.execPath, ['--import', 'tsx', child, String(seed), '6000'], { encoding: 'utf8', timeout: 50_000, env: process.env });
  t.equal(r.signal, null, `child not killed (stderr: ${r.stderr.slice(-1500)})`);
  t.equal(r.status, 0, `child exited cleanly (stderr: ${r.stderr.slice(-1500)})`);
  const res = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { count: number; ok: number; formatErrors: number; raw: number; fixed: number; json: number; other: string[]; otherCount: number; top: [string, number][] };
  t.comment(`seed ${seed}: ${res.count} mutations (${res.raw} raw, ${res.fixed} checksum-fixed, ${res.json} JSON-structural): ${res.formatErrors} E_FORMAT, ${res.ok} still valid`);
  t.comment(`most frequent errors: ${res.top.map(([m, n]) => `${n}x ${m}`).join(' | ')}`);
  t.equal(res.ok + res.formatErrors, res.count, 'every mutation either loads or is refused with E_FORMAT');
  t.same(res.other, [], `no other errors (${res.otherCount})`);
  t.ok(res.top.length >= 8, 'many distinct checks fired');
});

// ------------------------------------------------------------------ atomic saves
t.test('saves are atomic: a failure mid-write leaves the existing file intact', async (t) => {
  const dir = join(tmp, 'atomic');
  await mkdir(dir);
  const path = join(dir, 'model.qfm');
  const old = tinyGraph(8);
  await saveQfm(old, path, { weightBits: 'float' });
  const before = await readFile(path);
  const big = new Sequential([new Linear(1024, 1100, { rng: new Rng(1) })]); // ~4.5 MB: several 1 MiB chunks
  let calls = 0;
  await t.rejects(
    saveQfm(big, path, {
      weightBits: 'float',
      onWrite: (written) => {
        calls++;
        if (written >= 2 << 20) throw new Error('simulated disk failure');
      },
    }),
    { code: 'E_IO' },
    'failure after 2 MiB written: E_IO',
  );
  t.ok(calls >= 3, `the failure happened mid-write (after ${calls - 1} chunks)`);
  t.same(await readFile(path), before, 'the existing file is byte-identical');
  t.same(await readdir(dir), ['model.qfm'], 'no temporary file left behind');
  t.ok(decodeQfm(await readFile(path)).model, 'the existing file still loads');
  // Renaming onto a folder fails after the temp file was fully written.
  await mkdir(join(dir, 'taken.qfm'));
  await t.rejects(saveQfm(old, join(dir, 'taken.qfm')), { code: 'E_IO' }, 'target is a folder: E_IO');
  t.same((await readdir(dir)).sort(), ['model.qfm', 'taken.qfm'], 'no temporary file left behind');
  await t.rejects(saveQfm(old, join(dir, 'no/such/dir/m.qfm')), { code: 'E_IO' }, 'missing folder: E_IO');
  // A successful save replaces the file in one step.
  const n = await saveQfm(big, path, { weightBits: 8 });
  t.equal((await stat(path)).size, n, 'successful save replaced the file');
  t.ok(Buffer.from((await readFile(path)).subarray(0, 8)).equals(Buffer.from(QFM_MAGIC)), 'new file starts with the magic');
});

t.test('a loaded student computes exactly its stored integers, also where the stored levels miss an end of the range', async (t) => {
  // One output row whose min and max sit on rounding ties: [-0.5, 14.5] at 4 bits gives scale 1, zero point 0,
  // levels 0..14 (14.5 rounds half to even). Its dequantized weights span [0, 14]: min/max of those would
  // give scale 14/15, another grid. Row 2 is ordinary.
  const lin = new Linear(4, 2, { bias: false });
  lin.weight.data.data.set([-0.5, 3, 7.25, 14.5, 0.11, -0.42, 0.3, 0.05]);
  const q = toQat(new Sequential([lin]), { weightBits: 4, actBits: 8 });
  q.eval();
  const dir = tempDir(t, 'qf-qfm-grid-');
  const file = join(dir, 'grid.qfm');
  await saveQfm(q, file);
  const l = await loadQfm(file);
  const pw = l.packedWeight('0.weight')!;
  t.same([...pw.scale].map((s) => +s.toFixed(6)), [1, +((0.3 + 0.42) / 15).toFixed(6)], 'stored scales');
  t.equal(Math.max(...[...pw.q].slice(0, 4)), 14, 'row 0 never reaches level 15');
  const loaded = l.model.getChild('0') as Linear;
  const wq = loaded.weightQuant as WeightFakeQuant;
  const want: number[] = [];
  for (let c = 0; c < 2; c++) for (let i = 0; i < 4; i++) want.push((pw.q[c * 4 + i]! + pw.quantMin - pw.zeroPoint[c]!) * pw.scale[c]!);
  const got = [...wq.transform(loaded.weight.data, 2, 4).data];
  t.same(got, want.map((v) => Math.fround(v)), 'fake-quant weights = stored integers x stored scale');
  const rederived = wq.fixedQParams;
  wq.fixedQParams = null;
  t.not(wq.qparams(loaded.weight.data, 2, 4).scale[0], pw.scale[0], 'without the stored grid, min/max of the loaded weights would give another scale (the case this guards)');
  wq.fixedQParams = rederived;
  // Saving the loaded model again keeps the file's integers and grid.
  const again = join(dir, 'again.qfm');
  await saveQfm(l.model, again);
  const l2 = await loadQfm(again);
  t.same([...l2.packedWeight('0.weight')!.q], [...pw.q], 'round trip keeps the integers');
  t.same([...l2.packedWeight('0.weight')!.scale], [...pw.scale], 'and the scales');
  // Training moves the weights: the first training-mode forward drops the stored grid.
  l.model.train();
  noGrad(() => l.model.forward(Tensor.zeros([1, 4])));
  t.equal(wq.fixedQParams, null, 'dropped in training mode');
});
