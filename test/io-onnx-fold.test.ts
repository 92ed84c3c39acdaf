// ONNX exporter quirks (issue 14 item 4): a node whose inputs are all
// constants is evaluated at import, so the same network written in the
// styles exporters produce without constant folding imports like the folded
// file: identical embeddings where the arithmetic is the same float32
// arithmetic, and within float rounding where BatchNormalization is kept.
// onnxruntime-node (optional) runs every file as written and agrees.
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { noGrad, type Module } from '../lib/nn/index.js';
import { importOnnxModel } from '../lib/io/onnx.js';
import { foldConst, broadcastShapes, type Const } from '../lib/io/onnx-fold.js';
import { encodeOnnxModel, DT, type OnnxModel, type OnnxNode, type OnnxTensor } from '../lib/io/onnx-proto.js';
import { loadModel } from '../lib/runtime/index.js';
import { tempDir } from './fixtures/tmp.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 1414);
t.comment(`seed ${SEED}`);
const rng = new Rng(SEED);
const tmp = tempDir(t, 'qf-onnx-fold-');

type Ort = typeof import('onnxruntime-node');
let ort: Ort | null = null;
try {
  ort = createRequire(import.meta.url)('onnxruntime-node') as Ort;
} catch (e) {
  t.comment(`onnxruntime-node unavailable (optional dependency of test/oracles): the onnxruntime checks skip (${(e as Error).message})`);
}

const f32 = Math.fround;
const raw = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
const i64 = (v: number[]): Uint8Array => new Uint8Array(BigInt64Array.from(v.map(BigInt)).buffer);
const ft = (name: string, dims: number[], data: Float32Array): OnnxTensor => ({ name, dims, data_type: DT.FLOAT, raw_data: raw(data) });
const it = (name: string, dims: number[], data: number[]): OnnxTensor => ({ name, dims, data_type: DT.INT64, raw_data: i64(data) });
const ints = (name: string, v: number[]) => ({ name, type: 7, ints: v });
const int = (name: string, v: number) => ({ name, type: 2, i: v });
const node = (op_type: string, input: string[], output: string[], attribute: object[] = []): OnnxNode => ({ op_type, name: `${op_type}_${output[0]}`, input, output, attribute: attribute as never });
const vi = (name: string, dims: (number | string)[]) => ({ name, type: { tensor_type: { elem_type: DT.FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } } }) as never;

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
const maxAbsOf = (a: ArrayLike<number>): number => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

function nhwcToNchw(x: Float32Array, n: number, h: number, w: number, c: number): Float32Array {
  const o = new Float32Array(x.length);
  for (let b = 0; b < n; b++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) for (let k = 0; k < c; k++) o[((b * c + k) * h + y) * w + xx] = x[((b * h + y) * w + xx) * c + k]!;
  return o;
}

function run(m: Module, x: Float32Array, shape: number[]): Float32Array {
  m.eval();
  return noGrad(() => Float32Array.from(m.forward(Tensor.from(x, shape) as FTensor).data));
}

// ---- one small face-recognition-shaped network: conv 3x3/2 + BN + PReLU, depthwise 3x3 + BN + PReLU, flatten, FC, BN1d-free embedding
const H = 16, W = 16, C1 = 8, D = 16;
const HO = 8; // after the stride-2 conv
const FLAT = C1 * HO * HO;
const randn = (n: number, s: number, m = 0) => Float32Array.from({ length: n }, () => m + s * rng.normal());
const P = {
  w1: randn(C1 * 3 * 3 * 3, 0.4),
  g1: randn(C1, 0.2, 1), b1: randn(C1, 0.1), m1: randn(C1, 0.2), v1: Float32Array.from({ length: C1 }, () => 0.5 + rng.uniform()),
  s1: Float32Array.from({ length: C1 }, () => 0.25 + 0.05 * rng.normal()),
  w2: randn(C1 * 1 * 3 * 3, 0.4),
  g2: randn(C1, 0.2, 1), b2: randn(C1, 0.1), m2: randn(C1, 0.2), v2: Float32Array.from({ length: C1 }, () => 0.5 + rng.uniform()),
  s2: Float32Array.from({ length: C1 }, () => 0.25 + 0.05 * rng.normal()),
  fc: randn(D * FLAT, 0.05), fcb: randn(D, 0.1),
};
const EPS = 1e-5;

/** BN folded into the conv in float32, step by step as onnxruntime / the importer evaluate the unfolded arithmetic. */
function foldBn(w: Float32Array, perOut: number, g: Float32Array, b: Float32Array, m: Float32Array, v: Float32Array): { w: Float32Array; b: Float32Array } {
  const eps = f32(EPS);
  const scale = Float32Array.from(g, (gi, o) => f32(gi / f32(Math.sqrt(f32(v[o]! + eps)))));
  const wf = Float32Array.from(w, (x, i) => f32(x * scale[Math.floor(i / perOut)]!));
  const bf = Float32Array.from(b, (bi, o) => f32(bi - f32(m[o]! * scale[o]!)));
  return { w: wf, b: bf };
}

const graph = (nodes: OnnxNode[], inits: OnnxTensor[], producer: string, opset = 13): OnnxModel => ({
  ir_version: 7,
  opset_import: [{ domain: '', version: opset }],
  producer_name: producer,
  graph: { name: producer, initializer: inits, input: [vi('input', ['N', 3, H, W])], output: [vi('emb', ['N', D])], node: nodes },
});

/** 1. Folded (what torch.onnx.export(do_constant_folding=True) or onnx-simplifier write). */
function folded(): OnnxModel {
  const c1 = foldBn(P.w1, 27, P.g1, P.b1, P.m1, P.v1), c2 = foldBn(P.w2, 9, P.g2, P.b2, P.m2, P.v2);
  return graph([
    node('Conv', ['input', 'w1', 'b1'], ['c1'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), ints('strides', [2, 2])]),
    node('PRelu', ['c1', 's1'], ['p1']),
    node('Conv', ['p1', 'w2', 'b2'], ['c2'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), int('group', C1)]),
    node('PRelu', ['c2', 's2'], ['p2']),
    node('Flatten', ['p2'], ['flat'], [int('axis', 1)]),
    node('Gemm', ['flat', 'fc', 'fcb'], ['emb'], [int('transB', 1)]),
  ], [ft('w1', [C1, 3, 3, 3], c1.w), ft('b1', [C1], c1.b), ft('s1', [C1, 1, 1], P.s1), ft('w2', [C1, 1, 3, 3], c2.w), ft('b2', [C1], c2.b), ft('s2', [C1, 1, 1], P.s2), ft('fc', [D, FLAT], P.fc), ft('fcb', [D], P.fcb)], 'folded');
}

/** 2. PyTorch without constant folding / a training-mode export: BatchNormalization kept, weights behind Identity, slopes unsqueezed in the graph, flatten by Shape/Gather/Unsqueeze/Concat/Reshape, FC as MatMul of a transposed weight + Add. */
function torchUnfolded(): OnnxModel {
  const bnInits = (k: number, g: Float32Array, b: Float32Array, m: Float32Array, v: Float32Array) => [ft(`bn${k}.weight`, [C1], g), ft(`bn${k}.bias`, [C1], b), ft(`bn${k}.running_mean`, [C1], m), ft(`bn${k}.running_var`, [C1], v)];
  return graph([
    node('Identity', ['conv1.weight'], ['w1']),
    node('Conv', ['input', 'w1'], ['c1'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), ints('strides', [2, 2])]),
    node('BatchNormalization', ['c1', 'bn1.weight', 'bn1.bias', 'bn1.running_mean', 'bn1.running_var'], ['n1'], [{ name: 'epsilon', type: 1, f: EPS }]),
    node('Unsqueeze', ['prelu1.weight', 'axes12'], ['s1']),
    node('PRelu', ['n1', 's1'], ['p1']),
    node('Conv', ['p1', 'conv2.weight'], ['c2'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), int('group', C1)]),
    node('BatchNormalization', ['c2', 'bn2.weight', 'bn2.bias', 'bn2.running_mean', 'bn2.running_var'], ['n2'], [{ name: 'epsilon', type: 1, f: EPS }]),
    node('Unsqueeze', ['prelu2.weight', 'axes12'], ['s2']),
    node('PRelu', ['n2', 's2'], ['p2']),
    node('Shape', ['p2'], ['shp']),
    node('Gather', ['shp', 'zero'], ['batch'], [int('axis', 0)]),
    node('Unsqueeze', ['batch', 'axes0'], ['batch1']),
    node('Cast', ['minus1'], ['minus1c'], [int('to', DT.INT64)]),
    node('Concat', ['batch1', 'minus1c'], ['newshape'], [int('axis', 0)]),
    node('Reshape', ['p2', 'newshape'], ['flat']),
    node('Transpose', ['fc.weight'], ['fcT'], [ints('perm', [1, 0])]),
    node('MatMul', ['flat', 'fcT'], ['mm']),
    node('Add', ['mm', 'fc.bias'], ['emb']),
  ], [
    ft('conv1.weight', [C1, 3, 3, 3], P.w1), ...bnInits(1, P.g1, P.b1, P.m1, P.v1), ft('prelu1.weight', [C1], P.s1),
    ft('conv2.weight', [C1, 1, 3, 3], P.w2), ...bnInits(2, P.g2, P.b2, P.m2, P.v2), ft('prelu2.weight', [C1], P.s2),
    ft('fc.weight', [D, FLAT], P.fc), ft('fc.bias', [D], P.fcb),
    it('axes12', [2], [1, 2]), it('axes0', [1], [0]), it('zero', [], [0]), it('minus1', [1], [-1]),
  ], 'pytorch-unfolded');
}

/** 3. tf2onnx without its optimizer: HWIO weights transposed in the graph, BatchNorm spelled out as Add/Sqrt/Div/Mul/Sub on constants, reshaped per channel, slopes and bias pieced together by Concat / Slice / Gather. */
function tfUnfolded(): OnnxModel {
  const hwio = (w: Float32Array, O: number, I: number): Float32Array => {
    const out = new Float32Array(w.length);
    for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) out[((y * 3 + x) * I + i) * O + o] = w[((o * I + i) * 3 + y) * 3 + x]!;
    return out;
  };
  const bn = (k: number): OnnxNode[] => [
    node('Add', [`var${k}`, 'eps'], [`ve${k}`]),
    node('Sqrt', [`ve${k}`], [`sd${k}`]),
    node('Div', [`gamma${k}`, `sd${k}`], [`scale${k}`]),
    node('Reshape', [`scale${k}`, 'shape_c111'], [`scale4_${k}`]),
    node('Transpose', [`w${k}_hwio`], [`w${k}_oihw`], [ints('perm', [3, 2, 0, 1])]),
    node('Mul', [`w${k}_oihw`, `scale4_${k}`], [`wf${k}`]),
    node('Mul', [`mean${k}`, `scale${k}`], [`ms${k}`]),
    node('Sub', [`beta${k}`, `ms${k}`], [`bf${k}`]),
  ];
  // slope 1 as two halves joined by Concat; slope 2 as a Slice of a longer tensor; the FC bias by Gather of a permuted copy
  const s2long = Float32Array.from([...P.s2, 9, 9, 9]);
  const perm = [...Array(D).keys()].reverse();
  const fcbRev = Float32Array.from(perm, (i) => P.fcb[i]!);
  return graph([
    ...bn(1), ...bn(2),
    node('Conv', ['input', 'wf1', 'bf1'], ['c1'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), ints('strides', [2, 2])]),
    node('Concat', ['s1a', 's1b'], ['s1flat'], [int('axis', 0)]),
    node('Reshape', ['s1flat', 'shape_c11'], ['s1']),
    node('PRelu', ['c1', 's1'], ['p1']),
    node('Conv', ['p1', 'wf2', 'bf2'], ['c2'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), int('group', C1)]),
    node('Slice', ['s2long', 'st0', 'en8', 'ax0'], ['s2flat']),
    node('Unsqueeze', ['s2flat', 'axes12'], ['s2']),
    node('PRelu', ['c2', 's2'], ['p2']),
    node('Flatten', ['p2'], ['flat'], [int('axis', 1)]),
    node('Transpose', ['fc_t'], ['fcw'], [ints('perm', [1, 0])]),
    node('Gemm', ['flat', 'fcw', 'fcb'], ['emb'], [int('transB', 1)]),
    node('Gather', ['fcb_rev', 'perm'], ['fcb'], [int('axis', 0)]),
  ].sort((a, b) => (a.op_type === 'Gather' ? -1 : b.op_type === 'Gather' ? 1 : 0)), [
    ft('w1_hwio', [3, 3, 3, C1], hwio(P.w1, C1, 3)), ft('gamma1', [C1], P.g1), ft('beta1', [C1], P.b1), ft('mean1', [C1], P.m1), ft('var1', [C1], P.v1),
    ft('w2_hwio', [3, 3, 1, C1], hwio(P.w2, C1, 1)), ft('gamma2', [C1], P.g2), ft('beta2', [C1], P.b2), ft('mean2', [C1], P.m2), ft('var2', [C1], P.v2),
    ft('eps', [], Float32Array.of(EPS)), it('shape_c111', [4], [-1, 1, 1, 1]), it('shape_c11', [3], [C1, 1, 1]),
    ft('s1a', [C1 / 2], P.s1.slice(0, C1 / 2)), ft('s1b', [C1 / 2], P.s1.slice(C1 / 2)),
    ft('s2long', [C1 + 3], s2long), it('st0', [1], [0]), it('en8', [1], [C1]), it('ax0', [1], [0]), it('axes12', [2], [1, 2]),
    ft('fc_t', [FLAT, D], Float32Array.from({ length: FLAT * D }, (_, k) => P.fc[(k % D) * FLAT + Math.floor(k / D)]!)),
    ft('fcb_rev', [D], fcbRev), it('perm', [D], perm),
  ], 'tf2onnx-unfolded');
}

async function ortRun(path: string, x: Float32Array, n: number, level: 'disabled' | 'all'): Promise<Float32Array> {
  const s = await ort!.InferenceSession.create(path, { executionProviders: ['cpu'], intraOpNumThreads: 1, graphOptimizationLevel: level });
  const r = await s.run({ input: new ort!.Tensor('float32', nhwcToNchw(x, n, H, W, 3), [n, 3, H, W]) });
  const out = Float32Array.from(r.emb!.data as Float32Array);
  await s.release();
  return out;
}

t.test('the same network exported folded, PyTorch-unfolded (BatchNorm kept) and tf2onnx-unfolded: identical embeddings after import', async (t) => {
  const files: Record<string, string> = {};
  for (const [k, g] of [['folded', folded()], ['torch-unfolded', torchUnfolded()], ['tf-unfolded', tfUnfolded()]] as const) {
    files[k] = join(tmp, `${k}.onnx`);
    await writeFile(files[k]!, encodeOnnxModel(g));
  }
  const N = 5;
  const x = Tensor.randn([N, H, W, 3], rng).data as Float32Array;
  const models = Object.fromEntries(await Promise.all(Object.entries(files).map(async ([k, f]) => [k, await importOnnxModel(f)] as const)));
  const out = Object.fromEntries(Object.entries(models).map(([k, m]) => [k, run(m, x, [N, H, W, 3])]));
  const scale = maxAbsOf(out.folded!);
  t.ok(scale > 0.5 && Number.isFinite(scale), `non-trivial embeddings (max |e| ${scale.toFixed(3)})`);
  for (const [k, m] of Object.entries(models)) t.equal(m.info.outputDim, D, `${k}: ${D}-D output`);
  const kinds = (k: string) => [...models[k]!.namedChildren()].map(([, c]) => c.constructor.name).join(' ');
  t.comment(`folded:         ${kinds('folded')}`);
  t.comment(`torch-unfolded: ${kinds('torch-unfolded')}`);
  t.comment(`tf-unfolded:    ${kinds('tf-unfolded')}`);
  t.equal(kinds('tf-unfolded'), kinds('folded'), 'tf2onnx-unfolded imports as the same modules as the folded file');
  const dTf = maxAbs(out['tf-unfolded']!, out.folded!);
  t.equal(dTf, 0, `tf2onnx-unfolded vs folded: max abs diff ${dTf} (the graph's BatchNorm arithmetic evaluated in float32 as the folded file was made)`);
  const dTorch = maxAbs(out['torch-unfolded']!, out.folded!);
  t.ok(dTorch <= 1e-5 * scale, `PyTorch-unfolded (BatchNormalization kept as a layer) vs folded: max abs diff ${dTorch.toExponential(2)} (scale ${scale.toFixed(2)}; float rounding of an unfolded BatchNorm)`);
  // the fp32 runtime (what loadModel runs) on the folded and unfolded files
  const crops = Uint8Array.from({ length: N * H * W * 3 }, () => Math.floor(rng.uniform() * 256));
  const rt: Record<string, Float32Array[]> = {};
  for (const [k, f] of Object.entries(files)) {
    const m = await loadModel(f, { input: { mean: 127.5, std: 128 } });
    rt[k] = await m.embedCrops(crops, N);
    await m.dispose();
  }
  const flatRt = (k: string) => Float32Array.from(rt[k]!.flatMap((e) => Array.from(e)));
  const rTf = maxAbs(flatRt('tf-unfolded'), flatRt('folded')), rTorch = maxAbs(flatRt('torch-unfolded'), flatRt('folded'));
  t.equal(rTf, 0, `runtime (loadModel, fp32): tf2onnx-unfolded vs folded max abs diff ${rTf}`);
  t.ok(rTorch <= 1e-5 * maxAbsOf(flatRt('folded')), `runtime: PyTorch-unfolded vs folded max abs diff ${rTorch.toExponential(2)}`);
  if (!ort) return;
  for (const [k, f] of Object.entries(files)) {
    const asWritten = await ortRun(f, x, N, 'disabled');
    const d = maxAbs(out[k]!, asWritten);
    t.ok(d <= 2e-5 * scale, `onnxruntime runs ${k} as written (no graph optimisation): our import agrees, max abs diff ${d.toExponential(2)}`);
  }
  const o1 = await ortRun(files.folded!, x, N, 'disabled'), o3 = await ortRun(files['tf-unfolded']!, x, N, 'disabled');
  t.comment(`onnxruntime itself: tf-unfolded vs folded max abs diff ${maxAbs(o1, o3).toExponential(2)}`);
});

t.test('the constant evaluator against hand-computed references', async (t) => {
  const c = (shape: number[], data: number[], kind: Const['kind'] = 'float'): Const => ({ kind, shape, data: kind === 'float' ? Float32Array.from(data) : Float64Array.from(data) });
  const A = new Map();
  const at = (o: Record<string, number | number[]>) => new Map(Object.entries(o).map(([k, v]) => [k, Array.isArray(v) ? { name: k, ints: v } : { name: k, i: v }])) as never;
  const isF = (to: number) => (to === 1 ? true : to === 7 ? false : null);
  const x23 = c([2, 3], [1, 2, 3, 4, 5, 6]);
  const same = (got: Const | null, shape: number[], data: number[], what: string) => { t.same(got && got.shape, shape, `${what}: shape`); t.same(got && Array.from(got.data), data, `${what}: values`); };
  same(foldConst('Transpose', [x23], A, isF), [3, 2], [1, 4, 2, 5, 3, 6], 'Transpose default perm');
  same(foldConst('Transpose', [c([2, 1, 3], [1, 2, 3, 4, 5, 6])], at({ perm: [2, 0, 1] }), isF), [3, 2, 1], [1, 4, 2, 5, 3, 6], 'Transpose perm [2,0,1]');
  same(foldConst('Add', [x23, c([3], [10, 20, 30])], A, isF), [2, 3], [11, 22, 33, 14, 25, 36], 'Add broadcast [3]');
  same(foldConst('Mul', [x23, c([2, 1], [2, -1])], A, isF), [2, 3], [2, 4, 6, -4, -5, -6], 'Mul broadcast [2,1]');
  same(foldConst('Sub', [c([1], [1]), x23], A, isF), [2, 3], [0, -1, -2, -3, -4, -5], 'Sub scalar first');
  same(foldConst('Div', [c([2], [7, -7], 'int'), c([], [2], 'int')], A, isF), [2], [3, -3], 'integer Div truncates');
  t.equal(foldConst('Div', [c([1], [1]), c([1], [3])], A, isF)!.data[0], Math.fround(1 / 3), 'float Div in float32');
  t.equal(foldConst('Add', [x23, c([4], [1, 2, 3, 4])], A, isF), null, 'shapes that do not broadcast: not folded');
  same(foldConst('Reshape', [x23, c([2], [0, -1], 'int')], A, isF), [2, 3], [1, 2, 3, 4, 5, 6], 'Reshape 0 and -1');
  same(foldConst('Reshape', [x23, c([3], [3, 1, -1], 'int')], A, isF), [3, 1, 2], [1, 2, 3, 4, 5, 6], 'Reshape');
  t.equal(foldConst('Reshape', [x23, c([1], [4], 'int')], A, isF), null, 'Reshape to another size: not folded');
  same(foldConst('Slice', [x23, c([2], [0, 2], 'int'), c([2], [1, -4], 'int'), c([2], [0, 1], 'int'), c([2], [1, -1], 'int')], A, isF), [1, 3], [3, 2, 1], 'Slice with a negative step (end -4 -> -1: through index 0)');
  same(foldConst('Slice', [x23, c([1], [-1], 'int'), c([1], [0], 'int'), c([1], [1], 'int'), c([1], [-2], 'int')], A, isF), [2, 1], [3, 6], 'Slice step -2 from the last column');
  same(foldConst('Slice', [c([5], [0, 1, 2, 3, 4]), c([1], [1], 'int'), c([1], [1e18], 'int')], A, isF), [4], [1, 2, 3, 4], 'Slice end clamped (INT64_MAX style)');
  same(foldConst('Gather', [x23, c([2], [2, -3], 'int')], at({ axis: 1 }), isF), [2, 2], [3, 1, 6, 4], 'Gather axis 1, negative index');
  same(foldConst('Gather', [x23, c([], [1], 'int')], A, isF), [3], [4, 5, 6], 'Gather a scalar index');
  t.equal(foldConst('Gather', [x23, c([1], [2], 'int')], A, isF), null, 'Gather out of range: not folded');
  same(foldConst('Concat', [x23, c([2, 1], [7, 8])], at({ axis: -1 }), isF), [2, 4], [1, 2, 3, 7, 4, 5, 6, 8], 'Concat axis -1');
  same(foldConst('Unsqueeze', [c([3], [1, 2, 3]), c([2], [0, -1], 'int')], A, isF), [1, 3, 1], [1, 2, 3], 'Unsqueeze axes [0, -1]');
  same(foldConst('Squeeze', [c([1, 3, 1], [1, 2, 3])], A, isF), [3], [1, 2, 3], 'Squeeze all ones');
  t.equal(foldConst('Squeeze', [x23, c([1], [0], 'int')], A, isF), null, 'Squeeze of a dimension that is not 1: not folded');
  same(foldConst('Sqrt', [c([2], [4, 2])], A, isF), [2], [2, Math.fround(Math.SQRT2)], 'Sqrt in float32');
  same(foldConst('Cast', [c([2], [1.7, -1.7])], at({ to: 7 }), isF), [2], [1, -1], 'Cast float -> int64 truncates');
  same(foldConst('Expand', [c([3, 1], [1, 2, 3]), c([2], [1, 3], 'int')], A, isF), [3, 3], [1, 1, 1, 2, 2, 2, 3, 3, 3], 'Expand');
  same(foldConst('Range', [c([], [1], 'int'), c([], [7], 'int'), c([], [2], 'int')], A, isF), [3], [1, 3, 5], 'Range');
  same(foldConst('Where', [c([2], [1, 0], 'int'), c([2], [5, 6]), c([], [0])], A, isF), [2], [5, 0], 'Where');
  t.equal(foldConst('Expand', [c([3, 1], [1, 2, 3]), c([2], [2, 3], 'int')], A, isF), null, 'Expand to a shape that does not broadcast: not folded');
  t.same(broadcastShapes([8, 1, 6, 1], [7, 1, 5]), [8, 7, 6, 5], 'numpy broadcasting example');
  t.equal(foldConst('Einsum', [x23, x23], A, isF), null, 'an op not implemented: null');
});

t.test('a constant node that cannot be evaluated is refused naming it (E_UNSUPPORTED_OP)', async (t) => {
  const g = folded();
  g.graph!.initializer!.push(ft('k', [2, 2], Float32Array.of(1, 2, 3, 4)));
  g.graph!.node!.unshift(node('Einsum', ['k', 'k'], ['kk'], [{ name: 'equation', type: 3, s: Buffer.from('ij,jk->ik') }]));
  const p = join(tmp, 'einsum.onnx');
  await writeFile(p, encodeOnnxModel(g));
  await t.rejects(importOnnxModel(p), { code: 'E_UNSUPPORTED_OP', message: /Einsum/ });
  const g2 = folded();
  g2.graph!.initializer!.push(it('big', [2], [1 << 20, 1 << 20]));
  g2.graph!.node!.unshift(node('ConstantOfShape', ['big'], ['huge']));
  const p2 = join(tmp, 'huge.onnx');
  await writeFile(p2, encodeOnnxModel(g2));
  await t.rejects(importOnnxModel(p2), { code: 'E_UNSUPPORTED_OP', message: /ConstantOfShape/ }, 'a constant of 2^40 elements is refused, not allocated');
});
