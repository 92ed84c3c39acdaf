// TF.js graph-model import: parity with @tensorflow/tfjs (cpu backend) on
// synthetic graphs that exercise every supported op and weight encoding,
// and on the real models in ../shared/models (random inputs and real
// aligned faces); bad files and unsupported ops give stable error codes.
import t, { type Test } from 'tap';
import { writeFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { importTfjsGraphModel, readTfjsGraphModel, halfToFloat, floatToHalf } from '../lib/io/tfjs.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { Conv2d, PReLU, L2Normalize, noGrad, Linear } from '../lib/nn/index.js';
import { Clamp, ChannelAffine } from '../lib/nn/import-ops.js';
import { isQuantFaceError } from '../lib/errors.js';
import { GraphBuilder, A, tfLoadGraph, tfRun, loadFaces, compareRows, shared, seeded, randArray, f16ToF32, f32ToF16, tfCpu } from './fixtures/io/helpers.js';
import { tempDir } from './fixtures/tmp.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 4242);
t.comment(`seed ${SEED}`);
const tmp = tempDir(t, 'qf-io-tfjs-');

function engineRun(m: { forward(x: FTensor): FTensor; eval(): unknown }, x: Float32Array, shape: number[]): Float32Array {
  m.eval();
  return noGrad(() => Float32Array.from(m.forward(Tensor.from(x, shape) as FTensor).data));
}

/** Passes when p (a promise or async thunk) rejects with an error satisfying ok. */
async function rejectsWith(t: Test, p: Promise<unknown> | (() => Promise<unknown>), ok: (e: unknown) => boolean, msg: string): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p);
    t.fail(`${msg}: no error`);
  } catch (e) {
    t.ok(ok(e), `${msg} (${(e as { code?: string }).code}: ${String((e as Error).message).slice(0, 160)})`);
  }
}

async function parity(t: Test, path: string, shape: number[], x: Float32Array, minCos: number, maxAbs: number, label: string): Promise<void> {
  const ours = await importTfjsGraphModel(path);
  const theirs = await tfLoadGraph(path);
  const a = engineRun(ours, x, shape);
  const b = tfRun(theirs, x, shape);
  t.equal(a.length, b.length, `${label}: output sizes agree (${a.length})`);
  const r = compareRows(a, b, shape[0]!);
  t.comment(`${label}: cos ${r.cos.map((c) => c.toFixed(9)).join(' ')}, max |diff| ${r.maxAbs.toExponential(3)}`);
  t.ok(Math.min(...r.cos) >= minCos, `${label}: cosine >= ${minCos} per row (min ${Math.min(...r.cos)})`);
  t.ok(r.maxAbs <= maxAbs, `${label}: max abs diff ${r.maxAbs} <= ${maxAbs}`);
  theirs.dispose();
}


// ------------------------------------------------------------------ float16
t.test('float16 conversion matches an independent reference', async (t) => {
  let bad = 0;
  for (let h = 0; h < 0x10000; h++) {
    const a = halfToFloat(h);
    const b = f16ToF32(h);
    if (!(Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b)))) bad++;
  }
  t.equal(bad, 0, 'halfToFloat on all 65536 bit patterns');
  const rnd = seeded(SEED);
  let bad2 = 0;
  for (let i = 0; i < 3000; i++) {
    const v = Math.fround((rnd() - 0.5) * Math.pow(2, Math.floor(rnd() * 40) - 25));
    if (floatToHalf(v) !== f32ToF16(v)) bad2++;
  }
  for (const v of [0, -0, 65504, 65520, 1e9, -1e9, 2 ** -24, 2 ** -25, 3 * 2 ** -26, Infinity]) if (floatToHalf(v) !== f32ToF16(v)) bad2++;
  t.equal(bad2, 0, 'floatToHalf rounds to nearest even like the reference');
  // A weight stored with dtype 'float16' (no quantization block; tfjs itself refuses it) decodes too.
  const g = new GraphBuilder();
  const x = g.placeholder('x', [-1, 2, 2, 1]);
  const vals = randArray(4, rnd, 3);
  const w = g.const('w', [1, 1, 1, 4], vals, { quant: 'f16dtype' });
  g.op('c', 'Conv2D', [x, w], { strides: A.ints([1, 1, 1, 1]), padding: A.s('VALID'), data_format: A.s('NHWC') });
  const path = await g.write(join(tmp, 'f16'), 'c');
  const files = await readTfjsGraphModel(path);
  t.same([...files.weights.get('w')!.data], [...g.decoded.get('w')!], 'dtype float16 weights decode to the nearest-half values');
});

// ------------------------------------------------------------------ synthetic graphs
t.test('synthetic graph A: convolutions, patterns, pooling, dense, L2 (RealDiv form)', async (t) => {
  const rnd = seeded(SEED + 1);
  const g = new GraphBuilder();
  const x = g.placeholder('x', [-1, 9, 11, 3]);
  const w1 = g.const('w1', [3, 3, 3, 8], randArray(216, rnd, 0.4), { quant: 'uint8' });
  const b1 = g.const('b1', [8], randArray(8, rnd, 0.5));
  const c1 = g.op('c1', '_FusedConv2D', [x, w1, b1], { strides: A.ints([1, 2, 2, 1]), padding: A.s('SAME'), data_format: A.s('NHWC'), dilations: A.ints([1, 1, 1, 1]), fused_ops: A.strs(['BiasAdd', 'Relu6']), num_args: A.i(1), epsilon: A.f(0) });
  const w2 = g.const('w2', [3, 3, 8, 2], randArray(144, rnd, 0.4), { quant: 'float16' });
  const b2 = g.const('b2', [16], randArray(16, rnd, 0.2));
  const c2 = g.op('c2', 'FusedDepthwiseConv2dNative', [c1, w2, b2], { strides: A.ints([1, 1, 1, 1]), padding: A.s('SAME'), data_format: A.s('NHWC'), dilations: A.ints([1, 1, 1, 1]), fused_ops: A.strs(['BiasAdd', 'Relu']), num_args: A.i(1) });
  const w3 = g.const('w3', [1, 1, 16, 8], randArray(128, rnd, 0.5), { quant: 'uint16' });
  const c3 = g.op('c3', 'Conv2D', [c2, w3], { strides: A.ints([1, 1, 1, 1]), padding: A.s('VALID'), data_format: A.s('NHWC'), dilations: A.ints([1, 1, 1, 1]) });
  // relu(x) + c * (x - |x|)
  const pc = g.const('p/alpha_half', [8], randArray(8, rnd, 0.2, 0.15));
  const pr = g.op('p/Relu', 'Relu', [c3]);
  const pa = g.op('p/Abs', 'Abs', [c3]);
  const ps = g.op('p/sub', 'Sub', [c3, pa]);
  const pm = g.op('p/mul', 'Mul', [ps, pc]);
  const p = g.op('p/add', 'Add', [pr, pm]);
  // Pad folded into a VALID convolution
  const pads = g.const('pad/p', [4, 2], [0, 0, 1, 2, 0, 1, 0, 0], { dtype: 'int32' });
  const pd = g.op('pad', 'Pad', [p, pads], { Tpaddings: A.type('DT_INT32') });
  const w4 = g.const('w4', [3, 3, 8, 8], randArray(576, rnd, 0.3), { quant: 'float16' });
  const c4 = g.op('c4', 'Conv2D', [pd, w4], { strides: A.ints([1, 1, 1, 1]), padding: A.s('VALID'), data_format: A.s('NHWC'), dilations: A.ints([1, 1, 1, 1]) });
  // clamp min(max(x, lo), hi)
  const lo = g.const('lo', [], [-0.5]);
  const hi = g.const('hi', [], [0.7]);
  const mx = g.op('mx', 'Maximum', [c4, lo]);
  const cl = g.op('clamp', 'Minimum', [mx, hi]);
  // max(0, x) + gamma * min(0, x)
  const z1 = g.const('z1', [], [0]);
  const z2 = g.const('z2', [], [0]);
  const gam = g.const('gamma', [8], randArray(8, rnd, 0.3, 0.2));
  const qa = g.op('q/max', 'Maximum', [z1, cl]);
  const qb = g.op('q/min', 'Minimum', [z2, cl]);
  const qm = g.op('q/mul', 'Mul', [gam, qb]);
  const q = g.op('q/add', 'AddV2', [qa, qm]);
  const res = g.op('res', 'AddV2', [q, cl]);
  // fused conv with Prelu, explicit padding
  const w5 = g.const('w5', [2, 3, 8, 6], randArray(288, rnd, 0.3));
  const b5 = g.const('b5', [6], randArray(6, rnd, 0.1));
  const a5 = g.const('a5', [6], randArray(6, rnd, 0.2, 0.3));
  const c5 = g.op('c5', '_FusedConv2D', [res, w5, b5, a5], { strides: A.ints([1, 1, 2, 1]), padding: A.s('EXPLICIT'), explicit_paddings: A.ints([0, 0, 1, 0, 2, 1, 0, 0]), data_format: A.s('NHWC'), dilations: A.ints([1, 1, 1, 1]), fused_ops: A.strs(['BiasAdd', 'Prelu']), num_args: A.i(2) });
  const mp = g.op('maxpool', 'MaxPool', [c5], { ksize: A.ints([1, 2, 2, 1]), strides: A.ints([1, 2, 2, 1]), padding: A.s('SAME'), data_format: A.s('NHWC') });
  const ap = g.op('avgpool', 'AvgPool', [c5], { ksize: A.ints([1, 3, 3, 1]), strides: A.ints([1, 2, 2, 1]), padding: A.s('SAME'), data_format: A.s('NHWC') });
  const both = g.op('pools', 'AddV2', [mp, ap]);
  const ax = g.const('mean/axes', [2], [1, 2], { dtype: 'int32' });
  const mean = g.op('mean', 'Mean', [both, ax], { keep_dims: A.b(false), Tidx: A.type('DT_INT32') });
  const wd = g.const('wd', [6, 10], randArray(60, rnd, 0.5));
  const bd = g.const('bd', [10], randArray(10, rnd, 0.1));
  const dense = g.op('dense', '_FusedMatMul', [mean, wd, bd], { transpose_a: A.b(false), transpose_b: A.b(false), fused_ops: A.strs(['BiasAdd', 'Relu']), num_args: A.i(1), epsilon: A.f(0) });
  const wt = g.const('wt', [7, 10], randArray(70, rnd, 0.5));
  const mm = g.op('mm', 'MatMul', [dense, wt], { transpose_a: A.b(false), transpose_b: A.b(true) });
  const s = g.const('bn/s', [7], randArray(7, rnd, 0.5, 1));
  const o = g.const('bn/o', [7], randArray(7, rnd, 0.3));
  const bm = g.op('bn/mul', 'Mul', [mm, s]);
  const bs = g.op('bn/sub', 'Sub', [bm, o]);
  const k = g.const('k', [], [0.25]);
  const rs = g.op('rsub', 'Sub', [k, bs]);
  // x / max(sqrt(sum(x^2, -1, keep)), eps)
  const sq = g.op('l2/sq', 'Square', [rs]);
  const red = g.const('l2/axis', [1], [-1], { dtype: 'int32' });
  const sum = g.op('l2/sum', 'Sum', [sq, red], { keep_dims: A.b(true), Tidx: A.type('DT_INT32') });
  const sqr = g.op('l2/sqrt', 'Sqrt', [sum]);
  const eps = g.const('l2/eps', [], [1e-10]);
  const den = g.op('l2/max', 'Maximum', [sqr, eps]);
  g.op('out', 'RealDiv', [rs, den]);
  const path = await g.write(join(tmp, 'a'), 'out');

  const m = await importTfjsGraphModel(path);
  const kinds = [...m.namedChildren()].map(([, c]) => c.constructor.name);
  t.comment(`graph A modules: ${kinds.join(' ')}`);
  t.equal(kinds.filter((k) => k === 'PReLU').length, 3, 'two decomposed PReLUs and one fused Prelu became PReLU modules');
  t.equal(kinds.filter((k) => k === 'Clamp').length, 2, 'Relu6 and the max/min clamp became Clamp modules');
  t.equal(kinds.filter((k) => k === 'Conv2d').length, 5, 'five convolutions');
  t.notOk(kinds.includes('Pad'), 'the zero Pad was folded into the next convolution');
  const c4m = m.getChild('c4') as Conv2d;
  t.same([c4m.padTop, c4m.padLeft, c4m.padBottom, c4m.padRight], [1, 0, 2, 1], 'folded padding [t, l, b, r]');
  const c1m = m.getChild('c1') as Conv2d;
  t.same([c1m.padTop, c1m.padLeft, c1m.padBottom, c1m.padRight], [1, 1, 1, 1], 'SAME padding for 9x11, k3, s2');
  t.ok(m.getChild('out') instanceof L2Normalize, 'L2 tail (RealDiv form) became L2Normalize');
  t.ok(m.getChild('bn/sub') instanceof ChannelAffine && (m.getChild('bn/sub') as ChannelAffine).weight && (m.getChild('bn/sub') as ChannelAffine).bias, 'Mul then Sub by constants became one ChannelAffine');
  t.equal(m.info.outputDim, 7);
  t.equal(m.info.normalizedOutput, true);

  // Decoded weights equal what tfjs decodes, bit for bit.
  const files = await readTfjsGraphModel(path);
  const raw = await readFile(join(tmp, 'a', 'weights.bin'));
  const specs = (JSON.parse(await readFile(path, 'utf8')).weightsManifest[0].weights) as tf.io.WeightsManifestEntry[];
  const dec = tf.io.decodeWeights(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length), specs);
  let mism = 0;
  for (const [name, tens] of Object.entries(dec)) {
    const a = tens.dataSync();
    const b = files.weights.get(name)!.data;
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) mism++;
  }
  t.equal(mism, 0, `all ${Object.keys(dec).length} weights (float32, int32, uint8, uint16, float16 forms) decode exactly as tfjs decodes them`);

  const xr = randArray(3 * 9 * 11 * 3, seeded(SEED + 2), 1.5);
  await parity(t, path, [3, 9, 11, 3], xr, 0.99999, 1e-4, 'graph A');
});

t.test('synthetic graph B: batch norm, LeakyRelu, Relu6, Neg, Squeeze, Reshape, L2 (Rsqrt form)', async (t) => {
  const rnd = seeded(SEED + 3);
  const g = new GraphBuilder();
  const x = g.placeholder('in', [-1, 6, 6, 4]);
  const w = g.const('w', [3, 3, 4, 5], randArray(180, rnd, 0.4));
  const c = g.op('conv', '_FusedConv2D', [x, w, g.const('cb', [5], randArray(5, rnd, 0.2))], { strides: A.ints([1, 1, 1, 1]), padding: A.s('SAME'), data_format: A.s('NHWC'), dilations: A.ints([1, 1, 1, 1]), fused_ops: A.strs(['BiasAdd', 'LeakyRelu']), num_args: A.i(1), leakyrelu_alpha: A.f(0.1) });
  const bn = g.op('bn', 'FusedBatchNormV3', [c, g.const('g', [5], randArray(5, rnd, 0.3, 1)), g.const('be', [5], randArray(5, rnd, 0.2)), g.const('mu', [5], randArray(5, rnd, 0.2)), g.const('var', [5], randArray(5, rnd, 0.3, 1))], { epsilon: A.f(0.001), data_format: A.s('NHWC'), is_training: A.b(false) });
  const r6 = g.op('r6', 'Relu6', [bn]);
  const ng = g.op('neg', 'Neg', [r6]);
  const lr = g.op('lrelu', 'LeakyRelu', [ng], { alpha: A.f(0.3) });
  const dw = g.const('dw', [6, 6, 5, 1], randArray(180, rnd, 0.3));
  const full = g.op('gdc', 'DepthwiseConv2dNative', [lr, dw], { strides: A.ints([1, 1, 1, 1]), padding: A.s('VALID'), data_format: A.s('NHWC'), dilations: A.ints([1, 1, 1, 1]) });
  const sq = g.op('squeeze', 'Squeeze', [full], { squeeze_dims: A.ints([1, 2]) });
  const rsh = g.op('reshape', 'Reshape', [sq, g.const('shape', [2], [-1, 5], { dtype: 'int32' })], { Tshape: A.type('DT_INT32') });
  const s2 = g.op('e/Square', 'Square', [rsh]);
  const sm = g.op('e/Sum', 'Sum', [s2, g.const('e/axis', [1], [1], { dtype: 'int32' })], { keep_dims: A.b(true), Tidx: A.type('DT_INT32') });
  const mx = g.op('e/Maximum', 'Maximum', [sm, g.const('e/y', [], [1e-10])]);
  const rs = g.op('e/Rsqrt', 'Rsqrt', [mx]);
  g.op('emb', 'Mul', [rsh, rs]);
  const path = await g.write(join(tmp, 'b'), 'emb');
  const m = await importTfjsGraphModel(path);
  const kinds = [...m.namedChildren()].map(([, c]) => c.constructor.name);
  t.comment(`graph B modules: ${kinds.join(' ')}`);
  t.ok(kinds.includes('BatchNorm2d') && m.getChild('emb') instanceof L2Normalize, 'BatchNorm2d and the L2 tail');
  t.ok(m.getChild('r6') instanceof Clamp && (m.getChild('r6') as Clamp).isRelu6, 'Relu6 -> ReLU6 clamp');
  t.equal((m.getChild('conv/leakyrelu') as PReLU).weight.requiresGrad, false, 'LeakyRelu slope is a frozen PReLU slope');
  await parity(t, path, [2, 6, 6, 4], randArray(2 * 144, seeded(SEED + 4), 2), 0.99999, 1e-5, 'graph B');
});

// ------------------------------------------------------------------ errors
t.test('unsupported ops, bad files and wrong input shapes give stable codes', async (t) => {
  const mk = async (dir: string, extra: (g: GraphBuilder, x: string) => string): Promise<string> => {
    const g = new GraphBuilder();
    const x = g.placeholder('x', [-1, 4, 4, 2]);
    const o = extra(g, x);
    return g.write(join(tmp, dir), o);
  };
  const unk = await mk('unk', (g, x) => {
    const r = g.op('block/erf', 'Erf', [x]);
    return g.op('flat', 'Reshape', [r, g.const('s', [2], [-1, 32], { dtype: 'int32' })]);
  });
  await rejectsWith(t, importTfjsGraphModel(unk), (e: unknown) => isQuantFaceError(e, 'E_UNSUPPORTED_OP') && /Erf/.test((e as Error).message) && /block\/erf/.test((e as Error).message), 'unknown op: E_UNSUPPORTED_OP naming op and node');

  const nchw = await mk('nchw', (g, x) => {
    const c = g.op('conv', 'Conv2D', [x, g.const('w', [1, 1, 2, 2], [1, 0, 0, 1])], { strides: A.ints([1, 1, 1, 1]), padding: A.s('VALID'), data_format: A.s('NCHW') });
    return g.op('flat', 'Reshape', [c, g.const('s', [2], [-1, 32], { dtype: 'int32' })]);
  });
  await rejectsWith(t, importTfjsGraphModel(nchw), (e: unknown) => isQuantFaceError(e, 'E_UNSUPPORTED_OP') && /NCHW/.test((e as Error).message), 'NCHW convolution: E_UNSUPPORTED_OP');

  const good = await mk('good', (g, x) => g.op('flat', 'Reshape', [g.op('r', 'Relu', [x]), g.const('s', [2], [-1, 32], { dtype: 'int32' })]));
  const m = await importTfjsGraphModel(good);
  await rejectsWith(t, async () => m.forward(Tensor.zeros([1, 5, 4, 2])), (e: unknown) => isQuantFaceError(e, 'E_SHAPE'), 'wrong input shape: E_SHAPE');
  await rejectsWith(t, async () => m.forward(Tensor.zeros([1, 4, 4, 3])), (e: unknown) => isQuantFaceError(e, 'E_SHAPE'), 'wrong channel count: E_SHAPE');

  // Bad files derived from a model with weights.
  const wdir = join(tmp, 'bad');
  const gb = new GraphBuilder();
  const xx = gb.placeholder('x', [-1, 4, 4, 2]);
  const cc = gb.op('conv', 'Conv2D', [xx, gb.const('w', [3, 3, 2, 4], randArray(72, seeded(1)))], { strides: A.ints([1, 1, 1, 1]), padding: A.s('SAME'), data_format: A.s('NHWC') });
  gb.op('flat', 'Reshape', [cc, gb.const('s', [2], [-1, 64], { dtype: 'int32' })]);
  const bad = await gb.write(wdir, 'flat');
  const bin = await readFile(join(wdir, 'weights.bin'));
  await writeFile(join(wdir, 'weights.bin'), bin.subarray(0, bin.length - 5));
  await rejectsWith(t, importTfjsGraphModel(bad), (e: unknown) => isQuantFaceError(e, 'E_FORMAT') && /truncated/.test((e as Error).message), 'truncated shard: E_FORMAT');
  await rm(join(wdir, 'weights.bin'));
  await rejectsWith(t, importTfjsGraphModel(bad), (e: unknown) => isQuantFaceError(e, 'E_IO'), 'missing shard: E_IO');
  await rejectsWith(t, importTfjsGraphModel(join(wdir, 'nope.json')), (e: unknown) => isQuantFaceError(e, 'E_IO'), 'missing model.json: E_IO');
  await writeFile(join(wdir, 'broken.json'), '{"modelTopology": {"node": [');
  await rejectsWith(t, importTfjsGraphModel(join(wdir, 'broken.json')), (e: unknown) => isQuantFaceError(e, 'E_FORMAT'), 'invalid JSON: E_FORMAT');
  await writeFile(join(wdir, 'layers.json'), JSON.stringify({ format: 'layers-model', modelTopology: {} }));
  await rejectsWith(t, importTfjsGraphModel(join(wdir, 'layers.json')), (e: unknown) => isQuantFaceError(e, 'E_FORMAT'), 'a layers model: E_FORMAT');
  const j = JSON.parse(await readFile(bad, 'utf8'));
  j.weightsManifest[0].paths = ['../../etc/passwd'];
  await writeFile(join(wdir, 'escape.json'), JSON.stringify(j));
  await rejectsWith(t, importTfjsGraphModel(join(wdir, 'escape.json')), (e: unknown) => isQuantFaceError(e, 'E_FORMAT') && /outside/.test((e as Error).message), 'shard outside the model folder: E_FORMAT');
  j.weightsManifest[0].paths = ['weights.bin'];
  j.weightsManifest[0].weights[0].quantization = { dtype: 'int4', scale: 1, min: 0 };
  await writeFile(join(wdir, 'q.json'), JSON.stringify(j));
  await rejectsWith(t, importTfjsGraphModel(join(wdir, 'q.json')), (e: unknown) => isQuantFaceError(e, 'E_FORMAT') && /int4/.test((e as Error).message), 'unknown quantization dtype: E_FORMAT');
});

// ------------------------------------------------------------------ real models
const models = [
  { file: ['models', 'mobileface', 'mobileface.json'], prelus: 13, relus: 0, dim: 256, l2: false },
  { file: ['models', 'human-mobilefacenet', 'mobilefacenet.json'], prelus: 33, relus: 16, dim: 192, l2: true },
] as const;

for (const md of models) {
  const path = shared(...md.file);
  t.test(`real model ${md.file[1]}`, { skip: path ? false : `../shared/${md.file.join('/')} is absent` }, async (t) => {
    await tfCpu();
    const m = await importTfjsGraphModel(path!);
    const kinds = [...m.namedChildren()].map(([, c]) => c.constructor.name);
    const allowed = new Set(['Conv2d', 'PReLU', 'ReLU', 'Add', 'ChannelAffine', 'Flatten', 'Linear', 'L2Normalize']);
    t.same(kinds.filter((k) => !allowed.has(k)), [], `only engine-friendly modules (${[...new Set(kinds)].join(', ')})`);
    t.equal(kinds.filter((k) => k === 'PReLU').length, md.prelus, `${md.prelus} PReLU patterns recognised`);
    t.equal(kinds.filter((k) => k === 'ReLU').length, md.relus, `${md.relus} ReLUs fused into depthwise convolutions kept`);
    t.equal(m.info.outputDim, md.dim);
    t.equal(m.info.normalizedOutput, md.l2);
    t.match(m.info.sha256, /^[0-9a-f]{64}$/, 'teacher hash recorded');
    t.comment(`${m.info.name}: ${m.numParams()} parameters, ${m.nodeList.length} modules`);
    const tm = await tfLoadGraph(path!);
    const rng = new Rng(SEED + 5);
    const xr = Tensor.uniform([2, 112, 112, 3], rng, 0, 255).data as Float32Array;
    const faces = shared('data', 'synthetic-faces') ? await loadFaces(3) : null;
    for (const [label, x, n] of [['random', xr, 2], ...(faces ? [['faces', faces, 3]] : [])] as [string, Float32Array, number][]) {
      // The real models take the pixels as the recorded preprocessing says.
      const pre = m.info.preprocessing.normalize === 'raw' ? x : x.map((v) => v / 255);
      const a = engineRun(m, pre, [n, 112, 112, 3]);
      const b = tfRun(tm, pre, [n, 112, 112, 3]);
      const r = compareRows(a, b, n);
      t.comment(`${m.info.name} ${label}: cos ${r.cos.map((c) => c.toFixed(9)).join(' ')}, max |diff| ${r.maxAbs.toExponential(3)}`);
      t.ok(Math.min(...r.cos) >= 0.99999, `${label}: cosine >= 0.99999 per embedding (min ${Math.min(...r.cos)})`);
    }
    if (!faces) t.comment('../shared/data/synthetic-faces is absent: real-face parity skipped');
    tm.dispose();
    // Trainable: a backward pass reaches every parameter.
    m.train();
    for (const mod of m.modules()) mod.training = mod instanceof Linear || mod instanceof Conv2d ? true : mod.training;
    const x1 = Tensor.uniform([1, 112, 112, 3], rng, 0, m.info.preprocessing.normalize === 'raw' ? 255 : 1);
    m.zeroGrad();
    const y = m.forward(x1);
    m.backward(Tensor.randn(y.shape, rng) as FTensor);
    const params = m.parameters().filter((p) => p.requiresGrad);
    const finite = params.filter((p) => p.grad && p.grad.data.every(Number.isFinite));
    const nonzero = params.filter((p) => p.grad && p.grad.data.some((v) => v !== 0));
    t.equal(finite.length, params.length, `backward gives every one of ${params.length} trainable parameters a finite gradient`);
    // (PReLUs behind a fused ReLU see no negative input: their slopes get a zero gradient.)
    t.ok(nonzero.length >= params.length - md.relus, `${nonzero.length} parameters get a non-zero gradient`);
  });
}
