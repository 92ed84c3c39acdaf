// ONNX: engine models exported to ONNX run by onnxruntime-node agree with
// the engine (iresnet18, mobilefacenet: max abs diff < 1e-4); re-imported
// they compute identical outputs; graphs shaped like PyTorch exports
// (BatchNorm folded or not, initializers listed as inputs, Shape/Gather/
// Concat/Reshape flatten, external data) import; the QDQ export of a
// quantization-aware model agrees with our fake-quant forward; bad files
// and unsupported ops give stable error codes.
import t from 'tap';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { noGrad, BatchNorm, Sequential, Flatten, Linear, WeightTransform, type Module } from '../lib/nn/index.js';
import { iresnet18, mobilefacenet } from '../lib/models/index.js';
import { exportOnnx, saveOnnx } from '../lib/io/onnx-export.js';
import { importOnnxModel } from '../lib/io/onnx.js';
import { decodeOnnxModel, encodeOnnxModel, DT, type OnnxModel } from '../lib/io/onnx-proto.js';
import { importTfjsGraphModel } from '../lib/io/tfjs.js';
import { preprocess } from '../lib/io/model-info.js';
import { toQat, freezeActRanges, quantizers, ActFakeQuant, WeightFakeQuant, LsqActFakeQuant, LsqWeightFakeQuant } from '../lib/quant/index.js';
import { isQuantFaceError } from '../lib/errors.js';
import { shared, loadFaces, loadLfwFaces, compareRows } from './fixtures/io/helpers.js';
import { tinyGraph, tinyQat } from './fixtures/io/models.js';
import { tempDir } from './fixtures/tmp.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 9090);
t.comment(`seed ${SEED}`);
const rng = new Rng(SEED);
const tmp = tempDir(t, 'qf-io-onnx-');

type Ort = typeof import('onnxruntime-node');
let ort: Ort | null = null;
try {
  ort = createRequire(import.meta.url)('onnxruntime-node') as Ort;
} catch (e) {
  t.comment(`onnxruntime-node unavailable: ${(e as Error).message}`);
}

function nhwcToNchw(x: Float32Array, n: number, h: number, w: number, c: number): Float32Array {
  const o = new Float32Array(x.length);
  for (let b = 0; b < n; b++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) for (let k = 0; k < c; k++) o[((b * c + k) * h + y) * w + xx] = x[((b * h + y) * w + xx) * c + k]!;
  return o;
}

async function ortRun(model: Uint8Array | string, x: Float32Array, shape: [number, number, number, number], io: [string, string] = ['input', 'output'], graphOptimizationLevel: 'disabled' | 'all' = 'all'): Promise<Float32Array> {
  const opts = { executionProviders: ['cpu'], intraOpNumThreads: 1, graphOptimizationLevel };
  const s = typeof model === 'string' ? await ort!.InferenceSession.create(model, opts) : await ort!.InferenceSession.create(model, opts);
  const [n, h, w, c] = shape;
  const r = await s.run({ [io[0]]: new ort!.Tensor('float32', nhwcToNchw(x, n, h, w, c), [n, c, h, w]) });
  const out = r[io[1]]!.data as Float32Array;
  await s.release();
  return Float32Array.from(out);
}

function run(m: Module, x: Float32Array, shape: number[]): Float32Array {
  m.eval();
  return noGrad(() => Float32Array.from(m.forward(Tensor.from(x, shape) as FTensor).data));
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

// ------------------------------------------------------------------ float export
const engineModels: [string, () => Module, [number, number, number]][] = [
  ['iresnet18', () => iresnet18({ seed: 11, numFeatures: 512 }), [112, 112, 3]],
  ['mobilefacenet', () => mobilefacenet({ seed: 12 }), [112, 112, 3]],
];

for (const [label, make, hwc] of engineModels) {
  t.test(`${label}: float export run by onnxruntime, re-import`, async (t) => {
    const m = make();
    // A trained-looking model: BatchNorm statistics from a forward pass in
    // training mode, and the last BatchNorm scaled so embeddings are O(1),
    // as a trained face model's are (random weights alone blow up).
    const bns = [...m.modules()].filter((mod): mod is BatchNorm => mod instanceof BatchNorm);
    for (const bn of bns) bn.momentum = 1;
    m.train();
    noGrad(() => m.forward(Tensor.randn([4, ...hwc], rng) as FTensor));
    m.eval();
    const calib = noGrad(() => Float32Array.from(m.forward(Tensor.randn([2, ...hwc], rng) as FTensor).data));
    const rms = Math.sqrt(calib.reduce((p, v) => p + v * v, 0) / calib.length);
    const last = bns[bns.length - 1]!;
    for (const p of [last.weight!, last.bias!]) for (let i = 0; i < p.data.numel; i++) p.data.data[i] /= rms;
    const x = Tensor.randn([1, ...hwc], rng).data as Float32Array;
    const shape = [1, ...hwc] as [number, number, number, number];
    const ours = run(m, x, shape);
    const bytes = exportOnnx(m, { inputShape: hwc });
    t.comment(`${label}: ${bytes.length} bytes of ONNX`);
    if (ort) {
      const theirs = await ortRun(bytes, x, shape);
      const d = maxAbs(ours, theirs);
      t.comment(`${label}: onnxruntime vs engine max |diff| ${d.toExponential(3)} (output scale ${maxAbs(ours, new Float32Array(ours.length)).toFixed(3)})`);
      t.ok(d < 1e-4, `${label}: onnxruntime agrees with the engine (max abs diff ${d.toExponential(2)} < 1e-4)`);
      const folded = exportOnnx(m, { inputShape: hwc, foldBatchNorm: true });
      const d2 = maxAbs(ours, await ortRun(folded, x, shape));
      t.ok(d2 < 1e-4, `${label}: BatchNorm folded into Conv, onnxruntime agrees (max abs diff ${d2.toExponential(2)})`);
      t.ok(decodeOnnxModel(folded).graph!.node!.filter((n) => n.op_type === 'BatchNormalization').length < decodeOnnxModel(bytes).graph!.node!.filter((n) => n.op_type === 'BatchNormalization').length, 'folding removed BatchNormalization nodes');
    } else t.comment('onnxruntime-node is not installed: onnxruntime checks skipped');
    const path = join(tmp, `${label}.onnx`);
    await saveOnnx(m, path, { inputShape: hwc });
    const back = await importOnnxModel(path);
    const again = run(back, x, shape);
    t.equal(maxAbs(ours, again), 0, `${label}: re-imported model gives identical outputs`);
    t.equal(back.numParams(), m.numParams(), `${label}: same parameter count after re-import`);
    const foldedPath = join(tmp, `${label}-folded.onnx`);
    await saveOnnx(m, foldedPath, { inputShape: hwc, foldBatchNorm: true });
    const backF = await importOnnxModel(foldedPath);
    const df = maxAbs(ours, run(backF, x, shape));
    t.ok(df < 1e-4, `${label}: BatchNorm-folded export re-imports (max abs diff ${df.toExponential(2)})`);
  });
}

// ------------------------------------------------------------------ PyTorch-shaped graphs
t.test('PyTorch-style graph: initializers as inputs, Shape/Gather/Concat/Reshape flatten, external data, NCHW flatten order', async (t) => {
  const C = 4;
  const H = 5;
  const W = 6;
  const conv = Float32Array.from({ length: C * 3 * 3 * 3 }, () => 0.3 * rng.normal());
  const fc = Float32Array.from({ length: 7 * C * H * W }, () => 0.1 * rng.normal());
  const bnv = (k: number): Float32Array => Float32Array.from({ length: C }, () => (k === 3 ? 0.5 + rng.uniform() : 0.2 * rng.normal() + (k === 0 ? 1 : 0)));
  const bn = [bnv(0), bnv(1), bnv(2), bnv(3)];
  const slope = Float32Array.from({ length: C }, () => 0.25 + 0.1 * rng.normal());
  const raw = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer.slice(0));
  // The fc weight lives in an external data file at an offset.
  const extBytes = Buffer.concat([Buffer.alloc(16), Buffer.from(raw(fc))]);
  await writeFile(join(tmp, 'fc.bin'), extBytes);
  const i64 = (v: number[]): Uint8Array => new Uint8Array(BigInt64Array.from(v.map(BigInt)).buffer);
  const tensorVi = (name: string, dims: (number | string)[]): object => ({ name, type: { tensor_type: { elem_type: DT.FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } } });
  const model: OnnxModel = {
    ir_version: 6,
    opset_import: [{ domain: '', version: 11 }],
    producer_name: 'pytorch',
    graph: {
      name: 'torch-jit-export',
      initializer: [
        { name: 'conv.weight', dims: [C, 3, 3, 3], data_type: DT.FLOAT, raw_data: raw(conv) },
        { name: 'bn.weight', dims: [C], data_type: DT.FLOAT, float_data: [...bn[0]!] },
        { name: 'bn.bias', dims: [C], data_type: DT.FLOAT, raw_data: raw(bn[1]!) },
        { name: 'bn.running_mean', dims: [C], data_type: DT.FLOAT, raw_data: raw(bn[2]!) },
        { name: 'bn.running_var', dims: [C], data_type: DT.FLOAT, raw_data: raw(bn[3]!) },
        { name: 'prelu.weight', dims: [C, 1, 1], data_type: DT.FLOAT, raw_data: raw(slope) },
        { name: 'fc.weight', dims: [7, C * H * W], data_type: DT.FLOAT, data_location: 1, external_data: [{ key: 'location', value: 'fc.bin' }, { key: 'offset', value: '16' }, { key: 'length', value: String(fc.byteLength) }] },
        { name: 'fc.bias', dims: [7], data_type: DT.FLOAT, raw_data: raw(Float32Array.from({ length: 7 }, () => rng.normal())) },
        { name: 'idx0', dims: [], data_type: DT.INT64, raw_data: i64([0]) },
      ],
      input: [
        tensorVi('input.1', ['batch', 3, H, W]) as never,
        // Older exports (keep_initializers_as_inputs) list every initializer as an input.
        tensorVi('conv.weight', [C, 3, 3, 3]) as never,
        tensorVi('fc.weight', [7, C * H * W]) as never,
      ],
      output: [tensorVi('emb', ['batch', 7]) as never],
      node: [
        { op_type: 'Conv', name: 'Conv_0', input: ['input.1', 'conv.weight'], output: ['c'], attribute: [{ name: 'kernel_shape', type: 7, ints: [3, 3] }, { name: 'pads', type: 7, ints: [1, 1, 1, 1] }, { name: 'strides', type: 7, ints: [1, 1] }] },
        { op_type: 'BatchNormalization', name: 'BN_1', input: ['c', 'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var'], output: ['b'], attribute: [{ name: 'epsilon', type: 1, f: 1e-5 }] },
        { op_type: 'PRelu', name: 'PRelu_2', input: ['b', 'prelu.weight'], output: ['p'] },
        { op_type: 'Dropout', name: 'Dropout_3', input: ['p'], output: ['d'], attribute: [{ name: 'ratio', type: 1, f: 0.4 }] },
        { op_type: 'Shape', name: 'Shape_4', input: ['d'], output: ['s'] },
        { op_type: 'Gather', name: 'Gather_5', input: ['s', 'idx0'], output: ['n'], attribute: [{ name: 'axis', type: 2, i: 0 }] },
        { op_type: 'Constant', name: 'Constant_6', output: ['minus1'], attribute: [{ name: 'value', type: 4, t: { dims: [], data_type: DT.INT64, raw_data: i64([-1]) } }] },
        { op_type: 'Unsqueeze', name: 'Unsqueeze_7', input: ['n'], output: ['n1'], attribute: [{ name: 'axes', type: 7, ints: [0] }] },
        { op_type: 'Unsqueeze', name: 'Unsqueeze_8', input: ['minus1'], output: ['m1'], attribute: [{ name: 'axes', type: 7, ints: [0] }] },
        { op_type: 'Concat', name: 'Concat_9', input: ['n1', 'm1'], output: ['shape'], attribute: [{ name: 'axis', type: 2, i: 0 }] },
        { op_type: 'Reshape', name: 'Reshape_10', input: ['d', 'shape'], output: ['flat'] },
        { op_type: 'Gemm', name: 'Gemm_11', input: ['flat', 'fc.weight', 'fc.bias'], output: ['emb'], attribute: [{ name: 'transB', type: 2, i: 1 }, { name: 'alpha', type: 1, f: 1 }, { name: 'beta', type: 1, f: 1 }] },
      ],
    },
  };
  const path = join(tmp, 'torchlike.onnx');
  await writeFile(path, encodeOnnxModel(model));
  const m = await importOnnxModel(path);
  const kinds = [...m.namedChildren()].map(([, c]) => c.constructor.name);
  t.comment(`modules: ${kinds.join(' ')}`);
  t.ok(kinds.includes('NhwcToNchw'), 'flattening an NCHW tensor keeps ONNX (c, h, w) order');
  t.same(m.info.inputShape, [H, W, 3]);
  t.equal(m.info.inputName, 'input.1');
  const x = Tensor.randn([2, H, W, 3], rng).data as Float32Array;
  const ours = run(m, x, [2, H, W, 3]);
  // Reference: plain loops over the NCHW definition.
  const xin = nhwcToNchw(x, 2, H, W, 3);
  const ref = new Float32Array(2 * 7);
  for (let b = 0; b < 2; b++) {
    const feat = new Float64Array(C * H * W);
    for (let o = 0; o < C; o++)
      for (let y = 0; y < H; y++)
        for (let xx = 0; xx < W; xx++) {
          let s = 0;
          for (let i = 0; i < 3; i++)
            for (let ky = 0; ky < 3; ky++)
              for (let kx = 0; kx < 3; kx++) {
                const iy = y + ky - 1;
                const ix = xx + kx - 1;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) s += xin[((b * 3 + i) * H + iy) * W + ix]! * conv[((o * 3 + i) * 3 + ky) * 3 + kx]!;
              }
          let v = ((s - bn[2]![o]!) / Math.sqrt(bn[3]![o]! + 1e-5)) * bn[0]![o]! + bn[1]![o]!;
          if (v < 0) v *= slope[o]!;
          feat[(o * H + y) * W + xx] = v;
        }
    const fb = decodeOnnxModel(encodeOnnxModel(model)).graph!.initializer!.find((i) => i.name === 'fc.bias')!;
    const bias = new Float32Array(new Uint8Array(fb.raw_data!).buffer);
    for (let j = 0; j < 7; j++) {
      let s = bias[j]!;
      for (let k = 0; k < C * H * W; k++) s += feat[k]! * fc[j * C * H * W + k]!;
      ref[b * 7 + j] = s;
    }
  }
  const d = maxAbs(ours, ref);
  t.ok(d < 1e-4, `matches a float64 NCHW reference (max abs diff ${d.toExponential(2)})`);
  if (ort) {
    const dr = maxAbs(ours, await ortRun(path, x, [2, H, W, 3], ['input.1', 'emb']));
    t.ok(dr < 1e-4, `onnxruntime (external data from the file's folder) agrees (max abs diff ${dr.toExponential(2)})`);
  }
  // Missing external data file, and a location outside the folder.
  await rm(join(tmp, 'fc.bin'));
  await t.rejects(importOnnxModel(path), { code: 'E_IO' }, 'missing external data: E_IO');
  const esc = structuredClone(model);
  esc.graph!.initializer![6]!.external_data![0]!.value = '../../etc/passwd';
  await writeFile(join(tmp, 'escape.onnx'), encodeOnnxModel(esc));
  await t.rejects(importOnnxModel(join(tmp, 'escape.onnx')), { code: 'E_FORMAT' }, 'external data outside the model folder: E_FORMAT');
});

// ------------------------------------------------------------------ QDQ export
// Operator semantics first: each quantizer alone, exported and run by
// onnxruntime, must give our fake-quant values bit for bit (ties, near ties,
// saturation; 2..8 bits; unsigned, signed, narrow; min/max and LSQ).
t.test('QDQ quantizers are bit-exact with onnxruntime (every width, ties included)', { skip: ort ? false : 'onnxruntime-node is not installed' }, async (t) => {
  const K = 64;
  const N = 48;
  /** Values around every rounding boundary of (scale, zp) in [qmin, qmax], a few ulps either side, and beyond the range. */
  const probe = (s: number, z: number, qmin: number, qmax: number): Float32Array => {
    const out = new Float32Array(N * K);
    for (let i = 0; i < out.length; i++) {
      const j = qmin - z - 2 + rng.int(qmax - qmin + 5); // codes (relative to the zero point), a little outside
      const kind = rng.int(4);
      let v = Math.fround((j + 0.5) * s); // at a tie (up to float rounding of the product)
      if (kind === 1) v = Math.fround(v * (1 + (rng.int(7) - 3) * 2 ** -23));
      else if (kind === 2) v = Math.fround((j + rng.uniform() - 0.5) * s);
      else if (kind === 3) v = Math.fround(j * s);
      out[i] = v;
    }
    return out;
  };
  const cases: { label: string; make: () => Module }[] = [];
  for (const bits of [2, 3, 4, 5, 6, 7, 8]) {
    for (const symmetric of [false, true]) {
      cases.push({
        label: `ActFakeQuant ${bits}-bit ${symmetric ? 'symmetric' : 'asymmetric'}`,
        make: () => {
          const q = new ActFakeQuant({ bits, symmetric, calibrationSteps: 0 }).setRange(-0.37 - rng.uniform(), 1.1 + 3 * rng.uniform());
          return new Sequential().append(new Flatten(), 'flat').append(q, 'q');
        },
      });
      cases.push({
        label: `LsqActFakeQuant ${bits}-bit ${symmetric ? 'symmetric' : 'asymmetric'} (learned step)`,
        make: () => {
          const q = new LsqActFakeQuant({ bits, symmetric });
          q.train();
          q.forward(Tensor.uniform([4, K], rng, -0.8, 2.5) as FTensor);
          q.scale.data.data[0] = Math.fround(q.scale.data.data[0]! * (1.01 + 0.05 * rng.uniform())); // moved by training
          return new Sequential().append(new Flatten(), 'flat').append(q.eval(), 'q');
        },
      });
      for (const lsq of [false, true]) {
        cases.push({
          label: `${lsq ? 'LsqWeightFakeQuant' : 'WeightFakeQuant'} ${bits}-bit ${symmetric ? 'symmetric' : 'asymmetric'} (Gemm on one-hot rows)`,
          make: () => {
            const lin = new Linear(K, 24, { bias: false, rng });
            if (lsq) {
              const q = new LsqWeightFakeQuant({ bits, symmetric });
              q.initFrom(lin.weight.data, 24, K);
              const sc = q.scale!.data.data;
              for (let c = 0; c < 24; c++) sc[c] = Math.fround(sc[c]! * (0.97 + 0.06 * rng.uniform()));
              lin.setChild('weightQuant', q);
            } else lin.setChild('weightQuant', new WeightFakeQuant({ bits, symmetric }));
            return new Sequential().append(new Flatten(), 'flat').append(lin, 'fc');
          },
        });
      }
    }
  }
  let worst = 0;
  for (const c of cases) {
    const m = c.make().eval();
    const isWeight = c.label.includes('Weight');
    let x: Float32Array;
    if (isWeight) {
      x = new Float32Array(K * K); // one-hot rows: the Gemm returns the dequantized weights themselves
      for (let i = 0; i < K; i++) x[i * K + i] = 1;
    } else {
      const q = m.getChild('q') as ActFakeQuant | LsqActFakeQuant;
      const qp = q.qparams();
      x = probe(qp.scale[0]!, qp.zeroPoint[0]!, qp.quantMin, qp.quantMax);
    }
    const n = x.length / K;
    const ours = run(m, x, [n, 1, 1, K]);
    const theirs = await ortRun(exportOnnx(m, { mode: 'qdq', inputShape: [1, 1, K] }), x, [n, 1, 1, K]);
    const d = maxAbs(ours, theirs);
    worst = Math.max(worst, d);
    if (d !== 0) t.fail(`${c.label}: onnxruntime differs (max |diff| ${d})`);
  }
  t.equal(worst, 0, `${cases.length} quantizer configurations: onnxruntime's QuantizeLinear/DequantizeLinear reproduce our fake quantization exactly`);
});

t.test('QDQ export of a QAT model agrees with the fake-quant forward', { skip: ort ? false : 'onnxruntime-node is not installed' }, async (t) => {
  const q = tinyQat(4, 6, 21);
  const x = Tensor.randn([3, 12, 12, 3], rng).data as Float32Array;
  const ours = run(q, x, [3, 12, 12, 3]);
  const bytes = exportOnnx(q, { mode: 'qdq' });
  const ops = decodeOnnxModel(bytes).graph!.node!.map((n) => n.op_type);
  const nAct = quantizers(q).filter((z) => z.kind === 'activation').length;
  t.equal(ops.filter((o) => o === 'QuantizeLinear').length, nAct, `one QuantizeLinear per activation quantizer (${nAct}: PReLU, ReLU, Add and Clamp outputs)`);
  t.ok(ops.filter((o) => o === 'DequantizeLinear').length >= nAct + 5, `DequantizeLinear for activations, weights and the PReLU slope (${ops.filter((o) => o === 'DequantizeLinear').length})`);
  const theirs = await ortRun(bytes, x, [3, 12, 12, 3]);
  const r = compareRows(ours, theirs, 3);
  t.comment(`tiny QAT W4/A6: cos ${r.cos.map((c) => c.toFixed(6)).join(' ')}, max |diff| ${r.maxAbs.toExponential(2)}`);
  t.ok(Math.min(...r.cos) >= 0.999, 'tiny QAT model: cosine >= 0.999');

  // LSQ students (learned steps) export their learned steps, not float weights.
  const l = toQat(tinyGraph(21), { weightBits: 4, actBits: 6, learnableScales: true });
  l.train();
  l.forward(Tensor.randn([2, 12, 12, 3], rng) as FTensor);
  for (const [name, p] of l.namedParameters()) if (name.endsWith('.scale')) for (let i = 0; i < p.data.numel; i++) p.data.data[i] = Math.fround(p.data.data[i]! * (0.95 + 0.1 * rng.uniform()));
  l.eval();
  const lo = run(l, x, [3, 12, 12, 3]);
  const lb = exportOnnx(l, { mode: 'qdq' });
  const lops = decodeOnnxModel(lb).graph!.node!.map((n) => n.op_type);
  const lAct = quantizers(l).filter((z) => z.kind === 'activation').length;
  t.equal(lops.filter((o) => o === 'QuantizeLinear').length, lAct, `LSQ: one QuantizeLinear per activation quantizer (${lAct})`);
  const lr = compareRows(lo, await ortRun(lb, x, [3, 12, 12, 3]), 3);
  t.comment(`tiny LSQ W4/A6: cos ${lr.cos.map((c) => c.toFixed(6)).join(' ')}, max |diff| ${lr.maxAbs.toExponential(2)}`);
  t.ok(Math.min(...lr.cos) >= 0.999, 'tiny LSQ model: cosine >= 0.999');
  const float = await ortRun(exportOnnx(l, { mode: 'float' }), x, [3, 12, 12, 3]);
  t.ok(maxAbs(float, lo) > 10 * lr.maxAbs, 'the LSQ export is quantized (the float export differs far more)');

  // A weight transform the export cannot represent is refused, not exported as float.
  class Doubler extends WeightTransform {
    transform(w: FTensor): FTensor {
      return w;
    }
    backwardTransform(): void {}
    get identityGrad(): boolean {
      return true;
    }
  }
  const odd = tinyQat(4, 6, 21);
  (odd.getChild('pw') as Module).setChild('weightQuant', new Doubler());
  let code = '';
  try {
    exportOnnx(odd, { mode: 'qdq' });
  } catch (e) {
    code = isQuantFaceError(e) ? e.code : String(e);
  }
  t.equal(code, 'E_UNSUPPORTED_OP', 'unknown weight transform: E_UNSUPPORTED_OP');
  t.doesNotThrow(() => exportOnnx(odd, { mode: 'float' }), 'float export ignores weight transforms');
});

// Whole networks: mobileface students calibrated on 16 GAN faces (min/max
// PTQ, as `quantize --no-train` starts), run on real faces (LFW + FFHQ).
// What was measured (../shared students, 256 LFW + 256 FFHQ faces; and PTQ
// students over 5 calibration sets x 128 LFW faces): onnxruntime's default
// optimizations give exactly the outputs of optimizations disabled (no QDQ
// fusion); most faces agree to float precision (cosine 1 - 1e-10); a few
// per hundred differ because a convolution sum within float noise of a
// rounding boundary is rounded to the adjacent code by one runtime and not
// the other (the first layer's sums are accurate to ~8e-8 in both, ours
// and onnxruntime's alike), and a low-bit network amplifies that flip:
// per face down to 0.9975 (distilled W4A4) or 0.990 (PTQ W6A6), mean over
// faces >= 0.9998 everywhere. The operator-level test above is the exact
// check; here: the typical face (median) agrees to 1e-5, the mean to the
// issue's 0.999, and no face is catastrophically off.
t.test('QDQ export of mobileface students: onnxruntime vs the fake-quant forward on real faces', { skip: ort ? false : 'onnxruntime-node is not installed' }, async (t) => {
  const mf = shared('models', 'mobileface', 'mobileface.json');
  const lfw = shared('data', 'lfw');
  const ffhq = shared('data', 'real-faces-ffhq');
  if (!mf || !shared('data', 'synthetic-faces') || !(lfw || ffhq)) {
    t.comment('../shared mobileface, synthetic-faces or real faces (lfw / real-faces-ffhq) absent: real-face QDQ check skipped');
    return;
  }
  const teacher = await importTfjsGraphModel(mf);
  const S = 112;
  const px = S * S * 3;
  const gan = await loadFaces(16);
  const parts: Float32Array[] = [];
  if (lfw) parts.push(await loadLfwFaces(lfw, 16, S));
  if (ffhq) parts.push(await loadFaces(16, S, ffhq));
  const n = parts.reduce((a, p) => a + p.length / px, 0);
  const real = new Float32Array(n * px);
  parts.reduce((off, p) => (real.set(p, off), off + p.length), 0);
  const xf = preprocess(teacher.info, real, n).data as Float32Array;
  for (const [wb, ab] of [[8, 8], [6, 6], [4, 4], [4, 8]] as const) {
    const student = toQat(teacher, { weightBits: wb, actBits: ab, calibrationSteps: 2 });
    student.train();
    noGrad(() => {
      for (let i = 0; i < 16; i += 8) student.forward(preprocess(teacher.info, gan.subarray(i * px, (i + 8) * px), 8));
    });
    freezeActRanges(student);
    const a = run(student, xf, [n, S, S, 3]);
    const bytes = exportOnnx(student, { mode: 'qdq' });
    const b = await ortRun(bytes, xf, [n, S, S, 3]);
    const b0 = await ortRun(bytes, xf, [n, S, S, 3], ['input', 'output'], 'disabled');
    t.equal(maxAbs(b, b0), 0, `W${wb}A${ab}: onnxruntime gives the same values with graph optimizations disabled (nothing fused)`);
    const rr = compareRows(a, b, n);
    const cs = [...rr.cos].sort((p, q) => p - q);
    const mean = cs.reduce((p, q) => p + q, 0) / n;
    const median = cs[n >> 1]!;
    t.comment(
      `mobileface W${wb}A${ab} (PTQ, 16 GAN faces) on ${n} real faces: cos mean ${mean.toFixed(6)}, median ${median.toFixed(9)}, min ${cs[0]!.toFixed(6)}, ` +
        `${cs.filter((c) => c < 0.999).length} below 0.999, max |diff| ${rr.maxAbs.toExponential(2)}`,
    );
    t.ok(median >= 0.99999, `W${wb}A${ab}: the typical face agrees to float precision (median cosine ${median.toFixed(9)} >= 0.99999)`);
    t.ok(mean >= 0.999, `W${wb}A${ab}: mean cosine ${mean.toFixed(6)} >= 0.999`);
    t.ok(cs[0]! >= 0.98, `W${wb}A${ab}: every face >= 0.98 (min ${cs[0]!.toFixed(6)})`);
  }
});

// ------------------------------------------------------------------ errors
t.test('bad ONNX files and unsupported ops', async (t) => {
  const good = exportOnnx(tinyGraph(2));
  const path = join(tmp, 'tiny.onnx');
  await writeFile(path, good);
  const m = await importOnnxModel(path);
  t.equal(m.info.preprocessing.colorOrder, 'BGR', 'model info restored from metadata_props');
  let code = '';
  try {
    m.forward(Tensor.zeros([1, 12, 13, 3]));
  } catch (e) {
    code = isQuantFaceError(e) ? e.code : String(e);
  }
  t.equal(code, 'E_SHAPE', 'wrong input shape: E_SHAPE');
  await writeFile(join(tmp, 'trunc.onnx'), good.subarray(0, good.length >> 1));
  await t.rejects(importOnnxModel(join(tmp, 'trunc.onnx')), { code: 'E_FORMAT' }, 'truncated: E_FORMAT');
  await writeFile(join(tmp, 'junk.onnx'), Buffer.from('this is not a protobuf at all, just text'));
  await t.rejects(importOnnxModel(join(tmp, 'junk.onnx')), { code: 'E_FORMAT' }, 'not protobuf: E_FORMAT');
  await t.rejects(importOnnxModel(join(tmp, 'nope.onnx')), { code: 'E_IO' }, 'missing: E_IO');
  const dm = decodeOnnxModel(good);
  dm.graph!.node![2]!.op_type = 'Einsum';
  const nm = dm.graph!.node![2]!.name!;
  await writeFile(join(tmp, 'einsum.onnx'), encodeOnnxModel(dm));
  try {
    await importOnnxModel(join(tmp, 'einsum.onnx'));
    t.fail('unknown op accepted');
  } catch (e) {
    t.ok(isQuantFaceError(e, 'E_UNSUPPORTED_OP') && (e as Error).message.includes('Einsum') && (e as Error).message.includes(nm), `unknown op: E_UNSUPPORTED_OP naming op and node (${(e as Error).message.slice(0, 100)})`);
  }
  // Fuzz: random byte mutations never crash the importer.
  let other = 0;
  let seen = 0;
  for (let i = 0; i < 400; i++) {
    const b = Buffer.from(good);
    const k = 1 + rng.int(6);
    for (let j = 0; j < k; j++) b[rng.int(b.length)] ^= 1 << rng.int(8);
    const p = join(tmp, 'fz.onnx');
    await writeFile(p, rng.uniform() < 0.2 ? b.subarray(0, rng.int(b.length)) : b);
    try {
      await importOnnxModel(p);
    } catch (e) {
      seen++;
      if (!isQuantFaceError(e)) other++;
    }
  }
  t.equal(other, 0, `400 mutated files: every failure (${seen}) is a QuantFaceError`);
});
