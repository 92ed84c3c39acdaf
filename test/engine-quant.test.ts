// Fake quantizers and toQat: forward values against the method's formula
// (written independently here), straight-through backward against its
// definition, the running-range observer, and quantizer placement.
import t from 'tap';
import { Tensor, Rng, rne, type FTensor } from '../lib/tensor.js';
import { Module, Conv2d, Linear, PReLU, Add, BatchNorm2d, Sequential, Graph, kernelSources } from '../lib/nn/index.js';
import { WeightFakeQuant, ActFakeQuant, LsqWeightFakeQuant, LsqActFakeQuant, toQat, isQat, quantizers, setFakeQuant, stripQat, freezeActRanges } from '../lib/quant/index.js';
import { iresnet18, mobilefacenet } from '../lib/models/index.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 4242);
t.comment(`seed ${SEED}; kernels: ${JSON.stringify(kernelSources())}`);
const rng = new Rng(SEED);

/** The method's quantizer in plain JS, per channel (float32 rounding as the kernels do it). */
function expectedFakeQuant(x: Float32Array, channels: number, inner: number, bits: number, lo?: number[], hi?: number[]): { out: Float32Array; scale: number[]; zp: number[] } {
  const qmax = 2 ** bits - 1;
  const scale: number[] = [];
  const zp: number[] = [];
  for (let c = 0; c < channels; c++) {
    let mn = Infinity;
    let mx = -Infinity;
    if (lo && hi) {
      mn = lo[c]!;
      mx = hi[c]!;
    } else
      for (let i = 0; i < x.length; i++)
        if (Math.floor(i / inner) % channels === c) {
          mn = Math.min(mn, x[i]!);
          mx = Math.max(mx, x[i]!);
        }
    const a = Math.min(mn, 0);
    const b = Math.max(mx, 0);
    const s = b === a ? 1 : Math.fround((b - a) / qmax);
    scale.push(s);
    zp.push(Math.min(qmax, Math.max(0, -rne(a / s))));
  }
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = Math.floor(i / inner) % channels;
    const q = Math.min(qmax, Math.max(0, rne(Math.fround(x[i]! / scale[c]!)) + zp[c]!));
    out[i] = Math.fround((q - zp[c]!) * scale[c]!);
  }
  return { out, scale, zp };
}

t.test('WeightFakeQuant: per output channel, range from the master weight, bits 2..8', async (tt) => {
  for (const bits of [2, 3, 4, 5, 6, 7, 8]) {
    const w = Tensor.randn([5, 3, 3, 4], rng, 0.2) as FTensor;
    // One channel entirely positive: the range is widened to contain 0.
    for (let i = 36; i < 72; i++) w.data[i] = Math.abs(w.data[i]!) + 0.05;
    const q = new WeightFakeQuant({ bits });
    const out = q.transform(w, 5, 36);
    const exp = expectedFakeQuant(w.data as Float32Array, 5, 36, bits);
    let mism = 0;
    for (let i = 0; i < out.numel; i++) if (out.data[i] !== exp.out[i]) mism++;
    tt.equal(mism, 0, `${bits} bits: bit-exact against the formula`);
    tt.same(Array.from(q.lastQParams!.zeroPoint), exp.zp, `${bits} bits: zero points`);
    let ok = true;
    for (let c = 0; c < 5; c++) {
      const vals = new Set<number>();
      for (let i = c * 36; i < (c + 1) * 36; i++) {
        vals.add(out.data[i]!);
        if (Math.abs(out.data[i]! - w.data[i]!) > exp.scale[c]! / 2 + 1e-7) ok = false;
      }
      if (vals.size > 2 ** bits) ok = false;
    }
    tt.ok(ok, `${bits} bits: at most 2^bits levels per channel, error <= scale/2`);
  }
  tt.throws(() => new WeightFakeQuant({ bits: 1 }), /bits must be an integer in \[2, 8\]/);
  tt.throws(() => new WeightFakeQuant({ bits: 9 }), /bits must be an integer in \[2, 8\]/);
  tt.throws(() => new WeightFakeQuant({ bits: 8, ste: 'x' as never }), /ste must be/);
});

t.test('WeightFakeQuant symmetric option: zero point 0, signed narrow range', async (tt) => {
  const w = Tensor.randn([3, 10], rng) as FTensor;
  const q = new WeightFakeQuant({ bits: 4, symmetric: true });
  const out = q.transform(w, 3, 10);
  tt.same(Array.from(q.lastQParams!.zeroPoint), [0, 0, 0]);
  tt.equal(q.lastQParams!.quantMin, -7);
  tt.equal(q.lastQParams!.quantMax, 7);
  for (let c = 0; c < 3; c++) {
    const s = q.lastQParams!.scale[c]!;
    let ok = true;
    for (let i = c * 10; i < c * 10 + 10; i++) {
      const k = out.data[i]! / s;
      if (Math.abs(k - Math.round(k)) > 1e-4 || Math.abs(k) > 7 + 1e-4) ok = false;
    }
    tt.ok(ok, `channel ${c}: values are integer multiples of the scale within +-7`);
  }
});

t.test('QAT Conv2d/Linear: straight-through weight gradient (unmasked and clipped)', async (tt) => {
  for (const ste of ['unmasked', 'clipped'] as const) {
    const conv = new Conv2d(4, 6, 3, { stride: 2, padding: 1, bias: true, rng: rng.fork() });
    const qconv = toQat(new Sequential([conv]), { weightBits: 4, ste }).at(0) as Conv2d;
    const x = Tensor.randn([2, 7, 7, 4], rng) as FTensor;
    const yq = qconv.forward(x).clone();
    // Reference: a float conv whose weight IS the fake-quantized weight.
    const wq = qconv.weightQuant!.transform(qconv.weight.data, 6, 36).clone();
    const plain = conv.clone();
    plain.weight.data.copyFrom(wq);
    const y = plain.forward(x);
    tt.same(Array.from(yq.data), Array.from(y.data), `${ste}: forward uses the fake-quantized weight`);
    const G = Tensor.randn(y.shape, rng) as FTensor;
    qconv.zeroGrad();
    plain.zeroGrad();
    qconv.forward(x);
    const gx = (qconv.backward(G) as FTensor).clone();
    const gxp = plain.backward(G) as FTensor;
    tt.same(Array.from(gx.data), Array.from(gxp.data), `${ste}: input gradient through the quantized weight`);
    tt.same(Array.from(qconv.weight.grad!.data), Array.from(plain.weight.grad!.data), `${ste}: dL/dw_master = dL/dw_hat (the range covers every weight, so nothing is clipped)`);
    tt.same(Array.from(qconv.bias!.grad!.data), Array.from(plain.bias!.grad!.data), `${ste}: bias gradient`);
    // Accumulation: a second backward without zeroGrad doubles the gradient.
    qconv.forward(x);
    qconv.backward(G);
    tt.ok(Math.abs(qconv.weight.grad!.data[3]! - 2 * plain.weight.grad!.data[3]!) < 1e-5, `${ste}: gradients accumulate until zeroGrad`);
  }
  const lin = new Linear(6, 3, { rng: rng.fork() });
  const qlin = toQat(new Sequential([lin]), { weightBits: 3 }).at(0) as Linear;
  const x = Tensor.randn([4, 6], rng) as FTensor;
  qlin.forward(x);
  const G = Tensor.randn([4, 3], rng) as FTensor;
  qlin.zeroGrad();
  qlin.backward(G);
  const wq = qlin.effectiveWeight().clone();
  const exp = expectedFakeQuant(lin.weight.data.data as Float32Array, 3, 6, 3);
  tt.same(Array.from(wq.data), Array.from(exp.out), 'Linear: per-row (output channel) quantization');
  // dW = G^T X exactly as the float layer computes it.
  const plain = lin.clone();
  plain.forward(x);
  plain.zeroGrad();
  plain.backward(G);
  tt.same(Array.from(qlin.weight.grad!.data), Array.from(plain.weight.grad!.data), 'Linear: weight gradient passes straight through');
});

t.test('ActFakeQuant: running min/max from 0, freeze after N steps, eval never observes', async (tt) => {
  const q = new ActFakeQuant({ bits: 8, calibrationSteps: 3 });
  tt.equal(q.min, 0);
  tt.equal(q.max, 0);
  q.forward(Tensor.from([0.5, 2, 1]) as FTensor);
  tt.same([q.min, q.max], [0, 2], 'positive batch: min stays at its initial 0');
  q.forward(Tensor.from([-1, 0.25]) as FTensor);
  tt.same([q.min, q.max], [-1, 2], 'range grows');
  q.eval();
  q.forward(Tensor.from([-10, 10]) as FTensor);
  tt.same([q.min, q.max, q.steps], [-1, 2, 2], 'eval mode does not observe');
  q.train();
  q.forward(Tensor.from([-3, 1]) as FTensor);
  tt.same([q.min, q.max, q.steps], [-3, 2, 3], 'third training step observed');
  tt.notOk(q.observerEnabled, 'frozen after calibrationSteps');
  q.forward(Tensor.from([-50, 50]) as FTensor);
  tt.same([q.min, q.max], [-3, 2], 'frozen range no longer moves');
  // Output = the formula with the frozen range (per tensor).
  const x = Tensor.randn([3, 4, 5], rng, 2) as FTensor;
  const y = q.forward(x).clone();
  const exp = expectedFakeQuant(x.data as Float32Array, 1, 1, 8, [-3], [2]);
  tt.same(Array.from(y.data), Array.from(exp.out), 'forward matches the formula (values beyond the range clamp)');
  tt.ok(x.data.some((v) => v > 2 || v < -3), 'the test input does exceed the range');
  // State survives a state dict round trip.
  const q2 = new ActFakeQuant({ bits: 8 });
  q2.loadStateDict(q.stateDict());
  tt.same([q2.min, q2.max, q2.observerEnabled], [-3, 2, false], 'range and frozen flag are state');
  q.unfreeze();
  tt.ok(q.observerEnabled, 'unfreeze');
  tt.throws(() => new ActFakeQuant({ bits: 8, calibrationSteps: -1 }), /calibrationSteps/);
  const z = new ActFakeQuant({ bits: 8, calibrationSteps: 0 });
  tt.notOk(z.observerEnabled, 'calibrationSteps 0: frozen from the start');
  z.setRange(-1, 1);
  tt.same([z.min, z.max], [-1, 1], 'setRange');
});

t.test('ActFakeQuant backward: unmasked passes everything, clipped zeroes clamped values', async (tt) => {
  for (const ste of ['unmasked', 'clipped'] as const) {
    const q = new ActFakeQuant({ bits: 4, ste, calibrationSteps: 0 }).setRange(-1, 1);
    const x = Tensor.from([-2, -1, -0.5, 0, 0.3, 0.99, 1.2, 5]) as FTensor;
    q.forward(x);
    const g = Tensor.from([1, 2, 3, 4, 5, 6, 7, 8]) as FTensor;
    const gi = q.backward(g);
    const exp = ste === 'unmasked' ? [1, 2, 3, 4, 5, 6, 7, 8] : [0, 2, 3, 4, 5, 6, 0, 0];
    tt.same(Array.from(gi.data), exp, `${ste} STE`);
    tt.same(Array.from(g.data), [1, 2, 3, 4, 5, 6, 7, 8], `${ste}: gradOut not modified`);
  }
});

t.test('quantized PReLU: slope fake-quantized per tensor with the activation width, output quantized', async (tt) => {
  const p = new PReLU(6);
  for (let c = 0; c < 6; c++) p.weight.data.data[c] = 0.05 + 0.4 * rng.uniform();
  const qp = toQat(new Sequential([p]), { weightBits: 8, actBits: 3 }).at(0) as PReLU;
  tt.ok(qp.slopeQuant instanceof WeightFakeQuant && qp.slopeQuant.bits === 3, 'slope quantizer with the activation width');
  tt.ok(qp.outQuant instanceof ActFakeQuant && (qp.outQuant as ActFakeQuant).bits === 3, 'output quantizer');
  const x = Tensor.randn([2, 3, 3, 6], rng) as FTensor;
  const y = qp.forward(x).clone();
  const slopeHat = expectedFakeQuant(p.weight.data.data as Float32Array, 1, 6, 3).out;
  tt.ok(new Set(Array.from(slopeHat)).size <= 8, 'at most 8 slope levels');
  const oq = qp.outQuant as ActFakeQuant;
  const pre = new Float32Array(x.numel);
  for (let i = 0; i < x.numel; i++) {
    const v = x.data[i]!;
    pre[i] = v > 0 ? v : Math.fround(v * slopeHat[i % 6]!);
  }
  const exp = expectedFakeQuant(pre, 1, 1, 3, [oq.min], [oq.max]);
  tt.same(Array.from(y.data), Array.from(exp.out), 'y = actquant(prelu(x; quantized slope)), range observed from this batch');
  tt.equal(oq.min, Math.min(0, ...pre), 'observer saw the pre-quantization output');
  const G = Tensor.randn(y.shape, rng) as FTensor;
  qp.zeroGrad();
  qp.forward(x);
  const gx = qp.backward(G) as FTensor;
  let gxOk = true;
  const ga = new Float64Array(6);
  for (let i = 0; i < x.numel; i++) {
    const v = x.data[i]!;
    const e = v > 0 ? G.data[i]! : G.data[i]! * slopeHat[i % 6]!;
    if (Math.abs(gx.data[i]! - e) > 1e-6) gxOk = false;
    if (v <= 0) ga[i % 6] += G.data[i]! * v;
  }
  tt.ok(gxOk, 'input gradient uses the quantized slope (STE through the output quantizer)');
  const got = Array.from(qp.weight.grad!.data);
  tt.ok(got.every((v, c) => Math.abs(v - ga[c]!) < 1e-4), 'slope gradient = STE of dL/d slope_hat');
});

function countKinds(m: Module): { weight: number; slope: number; act: number; convs: number; linears: number; prelus: number; adds: number } {
  const r = { weight: 0, slope: 0, act: 0, convs: 0, linears: 0, prelus: 0, adds: 0 };
  for (const q of quantizers(m)) r[q.kind === 'activation' ? 'act' : q.kind]++;
  for (const x of m.modules()) {
    if (x instanceof Conv2d) r.convs++;
    if (x instanceof Linear) r.linears++;
    if (x instanceof PReLU) r.prelus++;
    if (x instanceof Add) r.adds++;
  }
  return r;
}

t.test('toQat places quantizers as the method says (iResNet-18 structure) and leaves the FP model untouched', async (tt) => {
  const fp = iresnet18({ widths: [4, 4, 8, 8], inputSize: 16, numFeatures: 8, seed: 3 });
  const fpState = new Map([...fp.stateDict()].map(([k, v]) => [k, v.clone()]));
  const q = toQat(fp, { weightBits: 6, actBits: 6 });
  tt.notOk(isQat(fp), 'FP model has no quantizers');
  tt.ok(isQat(q), 'student has quantizers');
  const c = countKinds(q);
  // iResNet-18: stem conv + 2 convs x 8 blocks + 3 downsample convs (layer1 keeps 64->64 but stride 2: 4 in total) ...
  tt.equal(c.convs, 1 + 16 + 4, '21 convolutions');
  tt.equal(c.weight, c.convs + c.linears, 'every conv and the fc have a weight quantizer');
  tt.equal(c.prelus, 9, '9 PReLUs (stem + one per block)');
  tt.equal(c.adds, 8, '8 residual additions');
  tt.equal(c.slope, c.prelus, 'every PReLU slope quantized');
  tt.equal(c.act, c.prelus + c.adds, 'activation quantizers after every PReLU and every residual addition, nowhere else');
  const names = quantizers(q).map((x) => x.name);
  tt.ok(names.includes('layer1.0.add.outQuant') && names.includes('prelu.outQuant') && names.includes('fc.weightQuant'), 'named where expected');
  tt.notOk(names.some((n) => /bn|features|conv1\.outQuant|^outQuant/.test(n) && !n.includes('prelu')), 'no quantizer on BN, the head BN or the input');
  tt.ok(quantizers(q).every((x) => x.bits === 6), 'bit widths applied');
  // State dict: FP keys unchanged, quantizer state added.
  const fpKeys = [...fp.stateDict().keys()];
  const qKeys = new Set(q.stateDict().keys());
  tt.ok(fpKeys.every((k) => qKeys.has(k)), 'every FP key is kept');
  tt.ok(qKeys.has('layer1.0.add.outQuant.min'), 'activation ranges are state');
  // Training the student does not touch the teacher.
  const x = Tensor.randn([2, 16, 16, 3], rng) as FTensor;
  const y = q.forward(x);
  q.backward(Tensor.randn(y.shape, rng) as FTensor);
  for (const p of q.parameters()) if (p.grad) for (let i = 0; i < p.numel; i++) p.data.data[i] -= 0.1 * p.grad.data[i]!;
  let same = true;
  for (const [k, v] of fp.stateDict()) if (v.data.some((a, i) => a !== fpState.get(k)!.data[i])) same = false;
  tt.ok(same, 'FP parameters and buffers unchanged after a student step');
  tt.throws(() => toQat(q), /already has fake quantizers/);
});

t.test('toQat on MobileFaceNet, per-layer overrides, fake quant off, stripQat', async (tt) => {
  const fp = mobilefacenet({ widthMultiplier: 0.125, inputSize: 32, embeddingSize: 16, seed: 2 });
  const q = toQat(fp, {
    weightBits: 4,
    actBits: 8,
    layer: (name) => (name === 'conv1.conv' ? null : name === 'output_layer.linear' ? { weightBits: 8 } : undefined),
  });
  const c = countKinds(q);
  tt.equal(c.prelus, 2 + 15 * 2 + 1, '33 PReLUs');
  tt.equal(c.adds, 12, '12 residual additions (4 + 6 + 2)');
  tt.equal(c.convs, 2 + 15 * 3 + 1 + 1, '49 convolutions');
  tt.equal(c.weight, c.convs + c.linears - 1, 'every conv and the linear quantized except the one left in float');
  tt.equal(c.act, c.prelus + c.adds, 'activations after every PReLU and residual addition');
  const qs = new Map(quantizers(q).map((x) => [x.name, x]));
  tt.notOk(qs.has('conv1.conv.weightQuant'), 'override null leaves the layer in float');
  tt.equal(qs.get('output_layer.linear.weightQuant')!.bits, 8, 'override widths');
  tt.equal(qs.get('conv_3.model.0.conv.conv.weightQuant')!.bits, 4, 'default widths elsewhere');
  // With fake quantization off the student computes exactly what the FP model computes.
  const x = Tensor.randn([3, 32, 32, 3], rng) as FTensor;
  fp.eval();
  q.eval();
  setFakeQuant(q, false);
  tt.same(Array.from(q.forward(x).data), Array.from(fp.forward(x).data), 'fake quant disabled = FP model');
  setFakeQuant(q, true);
  // Calibrate the ranges in train mode, then compare in eval: close but not equal at W4.
  q.train();
  freezeActRanges(q);
  q.eval();
  const f = stripQat(q);
  tt.notOk(isQat(f), 'stripQat removes every quantizer');
  tt.same([...f.stateDict().keys()], [...fp.stateDict().keys()], 'stripped model has the FP keys');
});

t.test('QAT training graph mixes float BN with quantized layers (Graph node outputs quantized in place safely)', async (tt) => {
  // A residual block where the PReLU output is quantized in place and feeds two consumers.
  const g = new Graph()
    .add('conv', new Conv2d(3, 3, 3, { padding: 1, rng: rng.fork() }))
    .add('bn', new BatchNorm2d(3))
    .add('prelu', new PReLU(3))
    .add('conv2', new Conv2d(3, 3, 1, { rng: rng.fork() }), 'prelu')
    .add('add', new Add(), ['conv2', 'prelu']);
  const q = toQat(g, { weightBits: 8, actBits: 8, calibrationSteps: 1 });
  const x = Tensor.randn([2, 5, 5, 3], rng) as FTensor;
  q.forward(x);
  const y = q.forward(x).clone();
  const y2 = q.forward(x).clone();
  tt.same(Array.from(y.data), Array.from(y2.data), 'deterministic once frozen');
  // Quantized with a frozen range: gradient check of the unmasked STE network = float network on the quantized values.
  q.zeroGrad();
  q.forward(x);
  const gx = q.backward(Tensor.full(y.shape, 1) as FTensor) as FTensor;
  tt.ok(gx.data.every((v) => Number.isFinite(v)), 'finite input gradient');
  tt.ok(q.parameters().every((p) => p.grad !== null), 'every parameter receives a gradient');
});

t.test('LSQ (learnableScales): starts as the min/max quantizer, scale gradients follow the LSQ formula', async (tt) => {
  const lin = new Linear(12, 4, { rng: rng.fork() });
  const fp = new Sequential([lin]);
  const lsq = toQat(fp, { weightBits: 4, learnableScales: true }).at(0) as Linear;
  const mm = toQat(fp, { weightBits: 4 }).at(0) as Linear;
  const x = Tensor.randn([5, 12], rng) as FTensor;
  const y1 = lsq.forward(x).clone();
  const y2 = mm.forward(x).clone();
  tt.same(Array.from(y1.data), Array.from(y2.data), 'initial forward = the QuantFace min/max quantizer');
  const wq = lsq.weightQuant as LsqWeightFakeQuant;
  tt.ok(wq instanceof LsqWeightFakeQuant && wq.scale!.numel === 4, 'one learnable scale per output channel');
  tt.ok(lsq.parameters().includes(wq.scale!), 'the scale is a model parameter (optimisers see it)');
  // Move the scales so that some weights clamp, then compare gradients with the formula.
  for (let c = 0; c < 4; c++) wq.scale!.data.data[c] *= 0.6;
  const G = Tensor.randn([5, 4], rng) as FTensor;
  lsq.zeroGrad();
  lsq.forward(x);
  lsq.backward(G);
  const w = lin.weight.data.data;
  const s = Array.from(wq.scale!.data.data);
  const zp = Array.from((wq.stateDict().get('zero_point') as FTensor).data);
  const what = new Float64Array(48);
  const inside = new Uint8Array(48);
  for (let i = 0; i < 48; i++) {
    const c = Math.floor(i / 12);
    const q = rne(Math.fround(w[i]! / Math.fround(s[c]!))) + zp[c]!;
    inside[i] = q >= 0 && q <= 15 ? 1 : 0;
    what[i] = Math.fround((Math.min(15, Math.max(0, q)) - zp[c]!) * Math.fround(s[c]!));
  }
  tt.ok(inside.some((v) => !v), 'some weights clamp after shrinking the scales');
  // dL/dw_hat = G^T x
  const gwh = new Float64Array(48);
  for (let o = 0; o < 4; o++) for (let k = 0; k < 12; k++) for (let n = 0; n < 5; n++) gwh[o * 12 + k] += G.data[n * 4 + o]! * x.data[n * 12 + k]!;
  let errW = 0;
  let errS = 0;
  for (let c = 0; c < 4; c++) {
    let ds = 0;
    for (let k = 0; k < 12; k++) {
      const i = c * 12 + k;
      const expW = inside[i] ? gwh[i]! : 0;
      errW = Math.max(errW, Math.abs((lsq.weight.grad!.data[i] ?? NaN) - expW));
      ds += gwh[i]! * (inside[i] ? (what[i]! - w[i]!) / s[c]! : what[i]! / s[c]!);
    }
    ds /= Math.sqrt(12 * Math.max(Math.abs(0 - zp[c]!), Math.abs(15 - zp[c]!)));
    errS = Math.max(errS, Math.abs(wq.scale!.grad!.data[c]! - ds) / Math.max(1e-6, Math.abs(ds)));
  }
  tt.ok(errW < 1e-4, `weight gradient: clipped STE (${errW.toExponential(2)})`);
  tt.ok(errS < 1e-3, `scale gradient matches the LSQ formula (${errS.toExponential(2)})`);

  // Activations: the first training forward initialises the scale from the range, later ones learn it.
  const a = new LsqActFakeQuant({ bits: 4, initSteps: 1 });
  const xa = Tensor.randn([2, 3, 4], rng) as FTensor;
  a.forward(xa);
  tt.notOk(a.initializing, 'initialised after initSteps');
  let mn = 0;
  let mx = 0;
  for (const v of xa.data) {
    mn = Math.min(mn, v);
    mx = Math.max(mx, v);
  }
  tt.ok(Math.abs(a.scale.data.data[0]! - Math.fround((mx - mn) / 15)) < 1e-7, 'scale initialised from the running min/max (containing 0)');
  a.scale.data.data[0] *= 0.5;
  a.zeroGrad();
  const ya = a.forward(xa).clone();
  const ga = Tensor.randn(ya.shape, rng) as FTensor;
  const gi = a.backward(ga);
  const sa = a.scale.data.data[0]!;
  const zpa = (a.stateDict().get('zero_point') as FTensor).data[0]!;
  let dsa = 0;
  let errX = 0;
  for (let i = 0; i < xa.numel; i++) {
    const q = rne(Math.fround(xa.data[i]! / sa)) + zpa;
    const ins = q >= 0 && q <= 15;
    errX = Math.max(errX, Math.abs(gi.data[i]! - (ins ? ga.data[i]! : 0)));
    dsa += ga.data[i]! * (ins ? (ya.data[i]! - xa.data[i]!) / sa : ya.data[i]! / sa);
  }
  dsa /= Math.sqrt(12 * Math.max(zpa, 15 - zpa));
  tt.ok(errX === 0, 'activation input gradient: clipped STE');
  tt.ok(Math.abs(a.scale.grad!.data[0]! - dsa) / Math.abs(dsa) < 1e-4, 'activation scale gradient matches the LSQ formula');
  // toQat wiring.
  const q = toQat(mobilefacenet({ widthMultiplier: 0.125, inputSize: 32, embeddingSize: 16 }), { learnableScales: true });
  const qs = quantizers(q);
  tt.ok(qs.filter((z) => z.learned).length === qs.filter((z) => z.kind !== 'slope').length, 'every weight and activation quantizer is LSQ, slopes keep min/max');
  tt.ok(isQat(q) && !isQat(stripQat(q)), 'isQat / stripQat recognise LSQ quantizers');
});
