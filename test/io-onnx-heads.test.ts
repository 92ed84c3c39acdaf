// General ONNX ops of detector heads (Concat / Slice / Softmax / Exp of
// computed tensors, arithmetic with broadcast constants, several outputs
// packed into one): a synthetic SSD-style head graph with random weights,
// imported, compiled for the native runtime in fp32 and compared with
// onnxruntime-node on random inputs; the faceplugin detector and landmark
// net (../shared) against onnxruntime-node on LFW photos. onnxruntime-node
// is optional (test/oracles): its checks skip when it is absent.
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import sharp from 'sharp';
import { Rng, Tensor, type FTensor } from '../lib/tensor.js';
import { noGrad, Concat, Slice, Softmax, Exp, ConstBinary } from '../lib/nn/index.js';
import { importOnnxModel } from '../lib/io/onnx.js';
import { encodeOnnxModel, DT, type OnnxModel } from '../lib/io/onnx-proto.js';
import { compileModel } from '../lib/runtime/compile.js';
import { isQuantFaceError } from '../lib/errors.js';
import { shared } from './fixtures/io/helpers.js';
import { tempDir } from './fixtures/tmp.js';

const SEED = Number(process.env.QF_TEST_SEED ?? Date.now() % 1_000_000);
t.comment(`seed ${SEED} (QF_TEST_SEED to repeat)`);
const rng = new Rng(SEED);
const tmp = tempDir(t, 'qf-io-heads-');

type Ort = typeof import('onnxruntime-node');
let ort: Ort | null = null;
try {
  ort = createRequire(import.meta.url)('onnxruntime-node') as Ort;
} catch (e) {
  t.comment(`onnxruntime-node unavailable: ${(e as Error).message}`);
}

const raw = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer.slice(0));
// (INT64_MAX, as exporters write an open slice end, is not a JavaScript number: 2^63 and above stand for it)
const i64 = (v: number[]): Uint8Array => new Uint8Array(BigInt64Array.from(v.map((x) => (x >= 2 ** 63 ? 2n ** 63n - 1n : BigInt(x)))).buffer);
const vi = (name: string, dims: number[]): never => ({ name, type: { tensor_type: { elem_type: DT.FLOAT, shape: { dim: dims.map((d) => ({ dim_value: d })) } } } }) as never;
const ints = (name: string, v: number[]): object => ({ name, type: 7, ints: v });
const int = (name: string, v: number): object => ({ name, type: 2, i: v });

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return a.length === b.length ? d : Infinity;
}

/** Runs a compiled fp32 model on raw u8 NHWC input; returns the packed output. */
function runCompiled(m: Parameters<typeof compileModel>[0], u8: Uint8Array): Float32Array {
  const c = compileModel(m, { precision: 'float' });
  const p = c.plan(1);
  const arena = c.newArena(p);
  c.inputView(p, arena).set(u8);
  c.runSync(p, arena);
  return Float32Array.from(c.outputView(p, arena));
}

function toNchw(u8: Uint8Array, H: number, W: number, C: number, f: (v: number) => number): Float32Array {
  const x = new Float32Array(C * H * W);
  for (let y = 0; y < H; y++) for (let xx = 0; xx < W; xx++) for (let k = 0; k < C; k++) x[(k * H + y) * W + xx] = f(u8[(y * W + xx) * C + k]!);
  return x;
}

/** An SSD-style head: two branches concatenated on channels, reshaped to [1, P, k], softmax scores and centre-size box decoding against priors. */
function headModel(opset: number, H: number, W: number): { model: OnnxModel; P: number } {
  const C = 3;
  const P = H * W * 2;
  const w = (n: number): Float32Array => Float32Array.from({ length: n }, () => 0.4 * rng.normal());
  const priors = Float32Array.from({ length: P * 2 }, () => 0.05 + rng.uniform());
  const centres = Float32Array.from({ length: P * 2 }, () => rng.uniform());
  const slice = (name: string, x: string, out: string, s: number, e: number): object =>
    opset < 10
      ? { op_type: 'Slice', name, input: [x], output: [out], attribute: [ints('axes', [2]), ints('starts', [s]), ints('ends', [e])] }
      : { op_type: 'Slice', name, input: [x, `${name}.s`, `${name}.e`, `${name}.a`], output: [out] };
  const sliceConsts = (name: string, s: number, e: number): object[] =>
    opset < 10 ? [] : [
      { name: `${name}.s`, dims: [1], data_type: DT.INT64, raw_data: i64([s]) },
      { name: `${name}.e`, dims: [1], data_type: DT.INT64, raw_data: i64([e]) },
      { name: `${name}.a`, dims: [1], data_type: DT.INT64, raw_data: i64([2]) },
    ];
  const big = 9223372036854775807;
  const model: OnnxModel = {
    ir_version: 6,
    opset_import: [{ domain: '', version: opset }],
    graph: {
      name: 'head',
      initializer: [
        { name: 'w1', dims: [4, C, 3, 3], data_type: DT.FLOAT, raw_data: raw(w(4 * C * 9)) },
        { name: 'w2', dims: [2, C, 1, 1], data_type: DT.FLOAT, raw_data: raw(w(2 * C)) },
        { name: 'wc', dims: [4, 6, 3, 3], data_type: DT.FLOAT, raw_data: raw(w(4 * 6 * 9)) },
        { name: 'wl', dims: [8, 6, 3, 3], data_type: DT.FLOAT, raw_data: raw(w(8 * 6 * 9)) },
        { name: 'half', dims: [], data_type: DT.FLOAT, raw_data: raw(Float32Array.of(0.5)) },
        { name: 'two', dims: [], data_type: DT.FLOAT, raw_data: raw(Float32Array.of(2)) },
        { name: 'var0', dims: [], data_type: DT.FLOAT, raw_data: raw(Float32Array.of(0.1)) },
        { name: 'var1', dims: [], data_type: DT.FLOAT, raw_data: raw(Float32Array.of(0.2)) },
        { name: 'pwh', dims: [1, P, 2], data_type: DT.FLOAT, raw_data: raw(priors) },
        { name: 'pcxy', dims: [P, 2], data_type: DT.FLOAT, raw_data: raw(centres) },
        { name: 'shape2', dims: [3], data_type: DT.INT64, raw_data: i64([1, -1, 2]) },
        { name: 'shape4', dims: [3], data_type: DT.INT64, raw_data: i64([1, -1, 4]) },
        ...(sliceConsts('s0', 0, 2) as never[]),
        ...(sliceConsts('s1', 2, big) as never[]),
      ],
      input: [vi('input', [1, C, H, W])],
      output: [vi('scores', [1, P, 2]), vi('boxes', [1, P, 4])],
      node: [
        { op_type: 'Conv', name: 'c1', input: ['input', 'w1'], output: ['a'], attribute: [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1])] },
        { op_type: 'Conv', name: 'c2', input: ['input', 'w2'], output: ['b'], attribute: [ints('kernel_shape', [1, 1])] },
        { op_type: 'Concat', name: 'cat', input: ['a', 'b'], output: ['ab'], attribute: [int('axis', 1)] },
        { op_type: 'Relu', name: 'r', input: ['ab'], output: ['f0'] },
        { op_type: 'Mul', name: 'scale', input: ['f0', 'half'], output: ['f'] },
        { op_type: 'Conv', name: 'cc', input: ['f', 'wc'], output: ['cls'], attribute: [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1])] },
        { op_type: 'Conv', name: 'cl', input: ['f', 'wl'], output: ['loc'], attribute: [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1])] },
        { op_type: 'Transpose', name: 't1', input: ['cls'], output: ['clsT'], attribute: [ints('perm', [0, 2, 3, 1])] },
        { op_type: 'Transpose', name: 't2', input: ['loc'], output: ['locT'], attribute: [ints('perm', [0, 2, 3, 1])] },
        { op_type: 'Reshape', name: 'rs1', input: ['clsT', 'shape2'], output: ['logits'] },
        { op_type: 'Reshape', name: 'rs2', input: ['locT', 'shape4'], output: ['locs'] },
        { op_type: 'Softmax', name: 'sm', input: ['logits'], output: ['scores'], attribute: [int('axis', 2)] },
        slice('s0', 'locs', 'dxy', 0, 2) as never,
        slice('s1', 'locs', 'dwh', 2, big) as never,
        { op_type: 'Mul', name: 'm0', input: ['dxy', 'var0'], output: ['dxy1'] },
        { op_type: 'Mul', name: 'm1', input: ['dxy1', 'pwh'], output: ['dxy2'] },
        { op_type: 'Add', name: 'a0', input: ['pcxy', 'dxy2'], output: ['cxy'] },
        { op_type: 'Mul', name: 'm2', input: ['dwh', 'var1'], output: ['dwh1'] },
        { op_type: 'Exp', name: 'e', input: ['dwh1'], output: ['dwh2'] },
        { op_type: 'Mul', name: 'm3', input: ['dwh2', 'pwh'], output: ['wh'] },
        { op_type: 'Div', name: 'd0', input: ['wh', 'two'], output: ['hwh'] },
        { op_type: 'Sub', name: 'sub', input: ['cxy', 'hwh'], output: ['xy1'] },
        { op_type: 'Add', name: 'add', input: ['cxy', 'hwh'], output: ['xy2'] },
        { op_type: 'Concat', name: 'cat2', input: ['xy1', 'xy2'], output: ['boxes'], attribute: [int('axis', 2)] },
      ] as never,
    },
  };
  return { model, P };
}

for (const opset of [9, 13]) {
  t.test(`detector-style head (opset ${opset}): compiled fp32 runtime vs onnxruntime-node`, async (t) => {
    const H = 6;
    const W = 8;
    const { model, P } = headModel(opset, H, W);
    const path = join(tmp, `head${opset}.onnx`);
    await writeFile(path, encodeOnnxModel(model));
    const pre = { colorOrder: 'RGB' as const, normalize: { mean: 127, std: 128 } };
    await t.rejects(importOnnxModel(path, { preprocessing: pre }), { code: 'E_FORMAT' }, 'two outputs without outputNames: E_FORMAT naming them');
    await t.rejects(importOnnxModel(path, { preprocessing: pre, outputNames: ['scores', 'nope'] }), { code: 'E_UNSUPPORTED_OP' }, 'an output that is never computed');
    const m = await importOnnxModel(path, { preprocessing: pre, outputNames: '*' });
    t.same(m.info.outputs, [
      { name: 'scores', shape: [P, 2], offset: 0 },
      { name: 'boxes', shape: [P, 4], offset: 2 * P },
    ]);
    t.equal(m.info.outputDim, 6 * P);
    const kinds = new Set([...m.modules()].map((x) => x.constructor.name));
    for (const k of ['Concat', 'Slice', 'Softmax', 'Exp', 'ConstBinary']) t.ok(kinds.has(k), `imported with ${k}`);
    for (let trial = 0; trial < 3; trial++) {
      const u8 = Uint8Array.from({ length: H * W * 3 }, () => Math.floor(rng.uniform() * 256));
      const ours = runCompiled(m, u8);
      // the engine's own forward (JavaScript modules) agrees too
      const eng = noGrad(() => Float32Array.from(m.forward(new Tensor(Float32Array.from(u8, (v) => (v - 127) / 128), [1, H, W, 3]) as FTensor).data));
      t.ok(maxAbs(ours, eng) < 1e-5, `trial ${trial}: compiled runtime = engine forward (max |diff| ${maxAbs(ours, eng).toExponential(2)})`);
      if (!ort) continue;
      const s = await ort.InferenceSession.create(path, { intraOpNumThreads: 1 });
      const r = await s.run({ input: new ort.Tensor('float32', toNchw(u8, H, W, 3, (v) => (v - 127) / 128), [1, 3, H, W]) });
      const ref = new Float32Array([...(r.scores!.data as Float32Array), ...(r.boxes!.data as Float32Array)]);
      const d = maxAbs(ours, ref);
      t.ok(d < 1e-5, `trial ${trial}: runtime vs onnxruntime-node max |diff| ${d.toExponential(2)} < 1e-5`);
    }
    if (!ort) t.comment('onnxruntime-node absent: reference checks skipped');
  });
}

t.test('general ops: shapes, gradients and errors', async (t) => {
  // Concat / Slice / Softmax / ConstBinary forward against plain index loops on random data
  const a = Tensor.randn([2, 3, 4], rng) as FTensor;
  const b = Tensor.randn([2, 3, 2], rng) as FTensor;
  const cat = noGrad(() => new Concat(-1, 2).forward(a, b));
  t.same(cat.shape, [2, 3, 6]);
  let ok = true;
  for (let n = 0; n < 2; n++) for (let i = 0; i < 3; i++) for (let j = 0; j < 6; j++) ok &&= cat.data[(n * 3 + i) * 6 + j] === (j < 4 ? a.data[(n * 3 + i) * 4 + j] : b.data[(n * 3 + i) * 2 + j - 4]);
  t.ok(ok, 'Concat on the last axis');
  const sl = noGrad(() => new Slice(1, 1, 99).forward(a));
  t.same(sl.shape, [2, 2, 4]);
  t.equal(sl.data[0], a.data[4], 'Slice starts at row 1');
  const sm = noGrad(() => new Softmax(1).forward(a));
  let sum = 0;
  for (let i = 0; i < 3; i++) sum += sm.data[i * 4 + 1]!;
  t.ok(Math.abs(sum - 1) < 1e-6, 'Softmax over axis 1 sums to 1');
  const cb = noGrad(() => new ConstBinary('rdiv', Float32Array.of(1, 2, 3, 4), [4]).forward(a));
  t.ok(Math.abs(cb.data[5]! - 2 / a.data[5]!) < 1e-5, 'ConstBinary broadcasts [4] over [2, 3, 4]');
  t.throws(() => new ConstBinary('mul', Float32Array.of(1, 2, 3), [3]).inferShape([2, 3, 4]), { code: 'E_SHAPE' }, 'a constant that does not broadcast');
  t.throws(() => new Concat(0, 2).inferShape([2, 3], [2, 3]), { code: 'E_SHAPE' }, 'Concat on the batch axis');
  t.throws(() => new Slice(1, 3, 3).inferShape([2, 3, 4]), { code: 'E_SHAPE' }, 'empty slice');
  const e = noGrad(() => new Exp().forward(a));
  t.ok(Math.abs(e.data[7]! - Math.exp(a.data[7]!)) < 1e-5 * Math.exp(Math.abs(a.data[7]!)), 'Exp');
});

t.test('Concat / Slice rows (short: per element, long: per row) and ConstBinary (own shape, broadcast) against index loops, forward and backward', async (t) => {
  for (const inner of [1, 2, 40]) {
    // [N, P, C, inner] tensors concatenated / sliced on axis 2
    const N = 2, P = 7;
    const parts = [3, 1, 2].map((c) => Tensor.randn([N, P, c, inner], rng) as FTensor);
    const cat = new Concat(2, 3);
    const y = cat.forward(...parts);
    const C = 6;
    let ok = true;
    for (let n = 0; n < N; n++)
      for (let p = 0; p < P; p++)
        for (let c = 0, k = 0; k < 3; k++)
          for (let j = 0; j < parts[k]!.shape[2]!; j++, c++)
            for (let i = 0; i < inner; i++) ok &&= y.data[((n * P + p) * C + c) * inner + i] === parts[k]!.data[((n * P + p) * parts[k]!.shape[2]! + j) * inner + i];
    t.ok(ok, `Concat axis 2, inner ${inner}: forward`);
    const g = Tensor.randn(y.shape as number[], rng) as FTensor;
    const gs = cat.backward(g);
    ok = true;
    for (let n = 0; n < N; n++)
      for (let p = 0; p < P; p++)
        for (let c = 0, k = 0; k < 3; k++)
          for (let j = 0; j < parts[k]!.shape[2]!; j++, c++)
            for (let i = 0; i < inner; i++) ok &&= gs[k]!.data[((n * P + p) * parts[k]!.shape[2]! + j) * inner + i] === g.data[((n * P + p) * C + c) * inner + i];
    t.ok(ok, `Concat axis 2, inner ${inner}: backward`);
    const sl = new Slice(2, 1, 4);
    const z = sl.forward(y);
    ok = z.shape[2] === 3;
    for (let n = 0; n < N; n++) for (let p = 0; p < P; p++) for (let c = 0; c < 3; c++) for (let i = 0; i < inner; i++) ok &&= z.data[((n * P + p) * 3 + c) * inner + i] === y.data[((n * P + p) * C + c + 1) * inner + i];
    t.ok(ok, `Slice axis 2 [1, 4), inner ${inner}: forward`);
    const gz = Tensor.randn(z.shape as number[], rng) as FTensor;
    const gy = sl.backward(gz);
    ok = true;
    for (let n = 0; n < N; n++) for (let p = 0; p < P; p++) for (let c = 0; c < C; c++) for (let i = 0; i < inner; i++) ok &&= gy.data[((n * P + p) * C + c) * inner + i] === (c >= 1 && c < 4 ? gz.data[((n * P + p) * 3 + c - 1) * inner + i] : 0);
    t.ok(ok, `Slice axis 2 [1, 4), inner ${inner}: backward`);
  }
  const x = Tensor.randn([3, 5, 2], rng) as FTensor;
  const cv = Float32Array.from({ length: 10 }, () => 0.5 + Math.random());
  for (const op of ['add', 'sub', 'mul', 'div', 'rsub', 'rdiv'] as const) {
    const f = (v: number, k: number): number => Math.fround(op === 'add' ? v + k : op === 'sub' ? v - k : op === 'mul' ? v * k : op === 'div' ? v / k : op === 'rsub' ? k - v : k / v);
    for (const shape of [[1, 5, 2], [5, 2], [1, 1, 5, 2]]) {
      const y = noGrad(() => new ConstBinary(op, cv, shape).forward(x));
      t.ok(y.data.every((v, i) => v === f(x.data[i]!, cv[i % 10]!)), `ConstBinary ${op} with a constant of shape [${shape.join(', ')}]`);
    }
    const b = noGrad(() => new ConstBinary(op, Float32Array.of(2, 3), [2]).forward(x));
    t.ok(b.data.every((v, i) => v === f(x.data[i]!, [2, 3][i % 2]!)), `ConstBinary ${op} broadcast [2] over [3, 5, 2]`);
  }
  const own = new ConstBinary('add', cv, [1, 5, 2]);
  noGrad(() => own.forward(x));
  own.value[3] = 100;
  t.equal(noGrad(() => own.forward(x)).data[3], Math.fround(x.data[3]! + 100), 'a constant changed in place (loadStateDict) is used');
});

t.test('faceplugin detector and landmark net vs onnxruntime-node on LFW photos', async (t) => {
  const det = shared('models/faceplugin/fr_detect.onnx');
  const lmk = shared('models/faceplugin/fr_landmark.onnx');
  const lfw = shared('data/lfw');
  if (!det || !lmk || !lfw) {
    t.comment('../shared/models/faceplugin or ../shared/data/lfw absent: skipped');
    return;
  }
  if (!ort) {
    t.comment('onnxruntime-node absent: skipped');
    return;
  }
  const names = ['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 'AJ_Lamas/AJ_Lamas_0001.jpg', 'Abdoulaye_Wade/Abdoulaye_Wade_0002.jpg'];
  const dm = await importOnnxModel(det, { outputNames: ['scores', 'boxes'], preprocessing: { colorOrder: 'RGB', normalize: { mean: 127, std: 128 } } });
  const lm = await importOnnxModel(lmk, { preprocessing: { colorOrder: 'RGB', normalize: { mean: 0, std: 256 } } });
  const ds = await ort.InferenceSession.create(det, { intraOpNumThreads: 1 });
  const ls = await ort.InferenceSession.create(lmk, { intraOpNumThreads: 1 });
  for (const n of names) {
    const file = join(lfw, n);
    const rgb = new Uint8Array(await sharp(file).resize(320, 240, { fit: 'fill' }).removeAlpha().raw().toBuffer());
    const ours = runCompiled(dm, rgb);
    const r = await ds.run({ input: new ort.Tensor('float32', toNchw(rgb, 240, 320, 3, (v) => (v - 127) / 128), [1, 3, 240, 320]) });
    const ref = new Float32Array([...(r.scores!.data as Float32Array), ...(r.boxes!.data as Float32Array)]);
    const d = maxAbs(ours, ref);
    t.ok(d < 1e-4, `${n}: detector scores + boxes, max |diff| ${d.toExponential(2)} < 1e-4`);
    const grey = new Uint8Array(await sharp(file).extract({ left: 70, top: 70, width: 110, height: 110 }).resize(64, 64, { fit: 'fill' }).greyscale().raw().toBuffer());
    const ol = runCompiled(lm, grey);
    const rl = await ls.run({ input: new ort.Tensor('float32', Float32Array.from(grey, (v) => v / 256), [1, 1, 64, 64]) });
    const dl = maxAbs(ol, rl.output!.data as Float32Array);
    t.ok(dl < 1e-4, `${n}: 68 landmarks, max |diff| ${dl.toExponential(2)} < 1e-4`);
  }
});

t.test('Softmax before opset 13 over a non-last axis is refused', async (t) => {
  const { model } = headModel(9, 4, 4);
  const sm = model.graph!.node!.find((n) => n.op_type === 'Softmax')!;
  sm.attribute = [int('axis', 1) as never];
  const path = join(tmp, 'badsoftmax.onnx');
  await writeFile(path, encodeOnnxModel(model));
  const e = await importOnnxModel(path, { outputNames: '*' }).catch((x: unknown) => x);
  t.ok(isQuantFaceError(e, 'E_UNSUPPORTED_OP'), `E_UNSUPPORTED_OP: ${(e as Error).message.slice(0, 120)}`);
});
