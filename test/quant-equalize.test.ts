/**
 * Activation range equalization (lib/quant/equalize.ts): the rescaled graph
 * computes the same function on fresh inputs; every value of a rescaled
 * group is the original times its channel factors; per-tensor 4-bit
 * quantization of a rescaled activation loses less (in the original
 * units); groups that meet a layer which cannot absorb a scale, the graph
 * input and the graph output are left alone; other containers and bad
 * options are handled.
 */
import t from 'tap';
import { Rng, Tensor, type FTensor } from '../lib/tensor.js';
import { Graph, Sequential } from '../lib/nn/containers.js';
import { Conv2d, Linear, PReLU, Add, Flatten } from '../lib/nn/layers.js';
import { Clamp, ChannelAffine, MaxPool2d } from '../lib/nn/import-ops.js';
import { noGrad, type Module } from '../lib/nn/module.js';
import { chooseQParams, roundHalfEven } from '../lib/quant/qparams.js';
import { equalizeActivations } from '../lib/quant/equalize.js';
import { loadTeacher } from '../lib/distill/teacher.js';
import { ImageFolder } from '../lib/data/dataset.js';
import { preprocess } from '../lib/io/model-info.js';
import { hasMobileface, hasSyntheticFaces, mobilefacePath, syntheticFacesDir } from './fixtures/distill/util.js';

function randn(shape: number[], rng: Rng, scale = 1): FTensor {
  const x = Tensor.zeros(shape);
  for (let i = 0; i < x.data.length; i++) x.data[i] = rng.normal() * scale;
  return x;
}

/** Multiplies output channel c of a conv (weights and bias) by f[c]: gives the fixture very unequal channel ranges. */
function skewChannels(conv: Conv2d, rng: Rng): void {
  const w = conv.weight.data.data;
  const inner = w.length / conv.outChannels;
  for (let o = 0; o < conv.outChannels; o++) {
    const f = Math.exp(rng.uniform() * 5 - 4); // 0.018 .. 2.7
    for (let j = 0; j < inner; j++) w[o * inner + j]! *= f;
    if (conv.bias) conv.bias.data.data[o]! *= f;
  }
}

/** A MobileFaceNet-like graph: conv, PReLU, 1x1 conv, depthwise chain with a residual, grouped conv, pooling, flatten, dense, affine. */
function skewedGraph(seed: number): Graph {
  const rng = new Rng(seed);
  const g = new Graph(['input'])
    .add('conv1', new Conv2d(3, 8, 3, { stride: 2, padding: 1, bias: true, rng }))
    .add('act1', new PReLU(8, 0.25))
    .add('pw0', new Conv2d(8, 8, 1, { bias: false, rng }))
    .add('dw1', new Conv2d(8, 8, 3, { padding: 1, groups: 8, bias: true, rng }))
    .add('act2', new PReLU(8, 0.2))
    .add('dw2', new Conv2d(8, 8, 3, { padding: 1, groups: 8, bias: true, rng }))
    .add('act3', new PReLU(8, 0.3))
    .add('res', new Add(), ['act3', 'act2'])
    .add('gconv', new Conv2d(8, 16, 3, { stride: 2, padding: 1, groups: 2, bias: true, rng }))
    .add('act4', new PReLU(16, 0.25))
    .add('pool', new MaxPool2d({ kernel: 2, stride: 2 }))
    .add('flat', new Flatten())
    .add('fc', new Linear(4 * 4 * 16, 12, { bias: true, rng }))
    .add('bn', new ChannelAffine(12, { scale: Array.from({ length: 12 }, (_, i) => 0.5 + i / 12), bias: Array.from({ length: 12 }, (_, i) => i / 24 - 0.2) }));
  for (const n of ['conv1', 'dw1', 'dw2', 'gconv']) skewChannels(g.getChild(n) as Conv2d, rng);
  // random slopes
  for (const n of ['act1', 'act2', 'act3', 'act4']) {
    const p = g.getChild(n) as PReLU;
    for (let i = 0; i < p.weight.data.data.length; i++) p.weight.data.data[i] = rng.uniform() * 0.5;
  }
  return g.eval();
}

function forward(m: Module, x: FTensor): FTensor {
  return noGrad(() => m.forward(x).clone() as FTensor);
}

/** Values of the named nodes for input x. */
function capture(g: Graph, names: string[], x: FTensor): Map<string, FTensor> {
  const out = new Map<string, FTensor>();
  const restore: Array<() => void> = [];
  for (const n of names) {
    const m = g.getChild(n)!;
    const f = m.forward;
    m.forward = (...xs: FTensor[]): FTensor => {
      const y = f.apply(m, xs);
      out.set(n, y.clone() as FTensor);
      return y;
    };
    restore.push(() => (m.forward = f));
  }
  try {
    forward(g, x);
  } finally {
    restore.forEach((r) => r());
  }
  return out;
}

function maxAbs(a: FTensor): number {
  let m = 0;
  for (const v of a.data) m = Math.max(m, Math.abs(v));
  return m;
}

/** Mean squared error of per-tensor min/max `bits` fake quantization of y, each channel's error divided by div[c]. */
function quantMse(y: FTensor, bits: number, div: ArrayLike<number>): number {
  let lo = 0;
  let hi = 0;
  for (const v of y.data) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const qp = chooseQParams({ min: lo, max: hi, bits });
  const s = qp.scale[0]!;
  const zp = qp.zeroPoint[0]!;
  const c = y.shape[y.shape.length - 1]!;
  let e = 0;
  for (let i = 0; i < y.data.length; i++) {
    const v = y.data[i]!;
    const q = Math.min(qp.quantMax, Math.max(qp.quantMin, roundHalfEven(v / s) + zp));
    const d = ((q - zp) * s - v) / div[i % c]!;
    e += d * d;
  }
  return e / y.data.length;
}

t.test('the rescaled graph computes the same function; values scale by their channel factors; 4-bit error drops', async (t) => {
  for (const seed of [1, 2, 3]) {
    const rng = new Rng(100 + seed);
    const ref = skewedGraph(seed);
    const g = ref.clone() as Graph;
    const calib = [randn([6, 32, 32, 3], rng), randn([6, 32, 32, 3], rng)];
    const rep = equalizeActivations(g, calib, { alpha: 1, maxScale: 64, statistic: 'range' });
    t.ok(rep.applied, `seed ${seed}: applied`);
    const byValue = new Map(rep.groups.flatMap((gr) => gr.values.map((v) => [v, gr] as const)));
    // act1 (conv1 -> act1 -> pw0), the residual group (dw1, act2, dw2, act3, res), act4 (+ pool, flat)
    t.ok(byValue.has('act1') && byValue.has('res') && byValue.has('act4'), 'the three activation groups are rescaled');
    t.equal(byValue.get('act2'), byValue.get('res'), 'a residual addition joins both inputs into one group');
    t.equal(byValue.get('act4'), byValue.get('flat'), 'pooling and flatten keep the group');
    t.notOk(byValue.has('input') || byValue.has('bn') || byValue.has('fc'), 'graph input and output groups are not rescaled');
    t.ok(rep.groups.every((gr) => gr.scaled > 0 && gr.maxScale > 1 && gr.minScale >= 1 && gr.maxScale <= 64), 'factors within [1, maxScale], some > 1');

    // Fresh inputs, not the calibration ones; outputs poisoned before they are computed.
    const x = randn([5, 32, 32, 3], rng);
    const want = forward(ref, x);
    const got = forward(g, x);
    let d = 0;
    for (let i = 0; i < want.data.length; i++) d = Math.max(d, Math.abs(want.data[i]! - got.data[i]!));
    t.ok(d <= 1e-4 * maxAbs(want), `seed ${seed}: same output (max abs diff ${d.toExponential(2)}, |y| ${maxAbs(want).toFixed(3)})`);

    const names = ['act1', 'act2', 'act3', 'res', 'act4'];
    let improved = 0;
    const a = capture(ref, names, x);
    const b = capture(g, names, x);
    for (const n of names) {
      const s = byValue.get(n)!.scales;
      const ya = a.get(n)!;
      const yb = b.get(n)!;
      const c = s.length;
      let worst = 0;
      for (let i = 0; i < ya.data.length; i++) worst = Math.max(worst, Math.abs(yb.data[i]! - ya.data[i]! * s[i % c]!));
      t.ok(worst <= 1e-4 * maxAbs(yb), `${n}: value = original x channel factor (max diff ${worst.toExponential(2)})`);
      const before = quantMse(ya, 4, new Float64Array(c).fill(1));
      const after = quantMse(yb, 4, s);
      t.ok(after <= before * 1.02, `${n}: 4-bit per-tensor quantization error in original units ${before.toExponential(3)} -> ${after.toExponential(3)} (not worse)`);
      if (after < before * 0.9) improved++;
    }
    t.ok(improved >= 3, `seed ${seed}: error down by more than 10% for ${improved} of ${names.length} activations`);
  }
});

t.test('alpha 0 changes nothing; a value that meets a non-equivariant layer keeps its scale', async (t) => {
  const rng = new Rng(7);
  const ref = skewedGraph(5);
  const g = ref.clone() as Graph;
  const rep = equalizeActivations(g, [randn([4, 32, 32, 3], rng)], { alpha: 0 });
  t.ok(rep.groups.every((gr) => gr.scales.every((s) => s === 1)), 'every factor 1');
  const sa = ref.stateDict();
  const sb = g.stateDict();
  let same = true;
  for (const [k, v] of sa) if (!Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(sb.get(k)!.data.buffer, sb.get(k)!.data.byteOffset, sb.get(k)!.data.byteLength))) same = false;
  t.ok(same, 'weights bit-identical');

  // act1 also feeds a Clamp (ReLU6-like): not equivariant, so its group stays.
  const r2 = new Rng(3);
  const h = new Graph(['input'])
    .add('conv1', new Conv2d(3, 4, 3, { padding: 1, bias: true, rng: r2 }))
    .add('act1', new PReLU(4, 0.25))
    .add('clip', new Clamp(0, 6))
    .add('conv2', new Conv2d(4, 4, 3, { padding: 1, groups: 4, bias: true, rng: r2 }))
    .add('act2', new PReLU(4, 0.25))
    .add('conv3', new Conv2d(4, 4, 1, { bias: true, rng: r2 }));
  skewChannels(h.getChild('conv1') as Conv2d, r2);
  skewChannels(h.getChild('conv2') as Conv2d, r2);
  const h0 = h.clone() as Graph;
  const rep2 = equalizeActivations(h, [randn([2, 8, 8, 3], r2)], { alpha: 1 });
  t.notOk(rep2.groups.some((gr) => gr.values.includes('act1')), 'the group feeding a Clamp is left alone');
  t.ok(rep2.groups.some((gr) => gr.values.includes('act2')), 'the next group is rescaled');
  t.ok(rep2.fixedGroups >= 1);
  t.same([...(h.getChild('conv1') as Conv2d).weight.data.data], [...(h0.getChild('conv1') as Conv2d).weight.data.data], 'conv1 untouched');
  const x = randn([3, 8, 8, 3], r2);
  const want = forward(h0, x);
  const got = forward(h, x);
  let d = 0;
  for (let i = 0; i < want.data.length; i++) d = Math.max(d, Math.abs(want.data[i]! - got.data[i]!));
  t.ok(d <= 1e-4 * maxAbs(want), `same output (max abs diff ${d.toExponential(2)})`);
});

t.test('other containers and bad options', async (t) => {
  const rng = new Rng(2);
  const seq = new Sequential([new Conv2d(3, 4, 3, { padding: 1, rng }), new PReLU(4), new Conv2d(4, 4, 1, { rng })]);
  const w0 = [...(seq.getChild('0') as Conv2d).weight.data.data];
  const r = equalizeActivations(seq, [randn([1, 8, 8, 3], rng)]);
  t.equal(r.applied, false);
  t.match(r.reason, /not a Graph/);
  t.same([...(seq.getChild('0') as Conv2d).weight.data.data], w0, 'left as it was');
  const g = skewedGraph(1);
  for (const alpha of [-0.1, 1.5, NaN]) t.throws(() => equalizeActivations(g, [randn([1, 32, 32, 3], rng)], { alpha }), { code: 'E_ARG' }, `alpha ${alpha}`);
  t.throws(() => equalizeActivations(g, [randn([1, 32, 32, 3], rng)], { maxScale: 0.5 }), { code: 'E_ARG' });
  t.throws(() => equalizeActivations(g, [randn([1, 32, 32, 3], rng)], { statistic: 'median' as never }), { code: 'E_ARG' });
  t.throws(() => equalizeActivations(g, []), { code: 'E_ARG' });
});

t.test('mobileface: same embeddings after equalization', { skip: hasMobileface() && hasSyntheticFaces() ? false : 'needs ../shared/models/mobileface and synthetic faces' }, async (t) => {
  const ref = await loadTeacher(mobilefacePath);
  const eq = await loadTeacher(mobilefacePath);
  const faces = await ImageFolder.open(syntheticFacesDir, { align: 'ffhq', size: 112 });
  const ld = faces.loader({ batchSize: 16, seed: 0, augment: false, shuffle: false });
  const xs: FTensor[] = [];
  for await (const b of ld.epoch(0)) {
    xs.push(preprocess(ref.info, b.data, b.n));
    if (xs.length === 3) break;
  }
  await ld.close();
  const rep = equalizeActivations(eq.model, xs.slice(0, 2), { alpha: 0.5, statistic: 'rms' });
  t.ok(rep.applied && rep.groups.length >= 8, `${rep.groups.length} groups rescaled`);
  const a = forward(ref.model, xs[2]!);
  const b = forward(eq.model, xs[2]!);
  const d = a.shape[1]!;
  let worst = 1;
  for (let i = 0; i < a.shape[0]!; i++) {
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let j = 0; j < d; j++) {
      ab += a.data[i * d + j]! * b.data[i * d + j]!;
      aa += a.data[i * d + j]! ** 2;
      bb += b.data[i * d + j]! ** 2;
    }
    worst = Math.min(worst, ab / Math.sqrt(aa * bb));
  }
  t.ok(worst >= 0.999999, `embeddings of unseen faces: worst cosine ${worst.toFixed(8)}`);
});
