// Clipped per-channel weight ranges (lib/quant/weight-range.ts): MSE
// clipping lowers the quantization error against min/max, the learned
// ratios' gradients follow their STE formula (written independently here)
// and descend the quantization error, baking gives the min/max quantizer
// the same values, and quantize() trains, bakes and saves with them.
import t from 'tap';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { Tensor, Rng, rne, type FTensor } from '../lib/tensor.js';
import { Conv2d, Linear, Sequential, BatchNorm, BatchNorm2d, PReLU, Graph, Flatten, kernelSources } from '../lib/nn/index.js';
import { WeightFakeQuant, toQat, chooseQParams } from '../lib/quant/index.js';
import { ClippedWeightFakeQuant, mseWeightRatios, rangeError, useClippedWeights, bakeClippedWeights } from '../lib/quant/weight-range.js';
import { quantize } from '../lib/distill/trainer.js';
import { EngineEmbedder, loadQfmEmbedder } from '../lib/distill/embedder.js';
import { paintedFaces, tempDir, tinyTeacher } from './fixtures/distill/util.js';
import { FeatureTap } from '../lib/distill/features.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 777);
t.comment(`seed ${SEED}; kernels: ${JSON.stringify(kernelSources())}`);
const rng = new Rng(SEED);

/** Heavy-tailed weights (Laplace, a few large outliers), channels x inner. */
function laplaceWeights(channels: number, inner: number): FTensor {
  const w = Tensor.zeros([channels, inner]) as FTensor;
  for (let i = 0; i < w.numel; i++) {
    const u = rng.uniform() - 0.5;
    w.data[i] = -0.05 * Math.sign(u) * Math.log(1 - 2 * Math.abs(u));
  }
  for (let c = 0; c < channels; c++) w.data[c * inner + Math.floor(rng.uniform() * inner)] = (rng.uniform() < 0.5 ? -1 : 1) * 0.4;
  return w;
}

function sqErr(a: ArrayLike<number>, b: ArrayLike<number>, from: number, to: number): number {
  let e = 0;
  for (let i = from; i < to; i++) e += (a[i]! - b[i]!) ** 2;
  return e;
}

t.test('MSE clipping: lower quantization error than min/max at 4 bits, never higher at any width', async (tt) => {
  for (const bits of [4, 6, 8]) {
    const C = 16;
    const N = 288;
    const w = laplaceWeights(C, N);
    const mm = new WeightFakeQuant({ bits }).transform(w, C, N).clone() as FTensor;
    const q = new ClippedWeightFakeQuant({ bits }).initRatios(w, C, N);
    const cq = q.transform(w, C, N).clone() as FTensor;
    let worse = 0;
    let eMm = 0;
    let eCl = 0;
    for (let c = 0; c < C; c++) {
      const a = sqErr(mm.data, w.data, c * N, (c + 1) * N);
      const b = sqErr(cq.data, w.data, c * N, (c + 1) * N);
      if (b > a * (1 + 1e-9)) worse++;
      eMm += a;
      eCl += b;
    }
    tt.equal(worse, 0, `w${bits}: no channel's error grows`);
    if (bits === 4) tt.ok(eCl < 0.9 * eMm, `w4: clipped error ${eCl.toExponential(3)} < 0.9 x min/max ${eMm.toExponential(3)}`);
    else tt.ok(eCl <= eMm, `w${bits}: clipped ${eCl.toExponential(3)} <= min/max ${eMm.toExponential(3)}`);
  }
  // rangeError at ratio 1 is the min/max quantizer's error, computed independently.
  const w = laplaceWeights(1, 200);
  let mn = Infinity;
  let mx = -Infinity;
  for (const v of w.data) {
    mn = Math.min(mn, v);
    mx = Math.max(mx, v);
  }
  const mm = new WeightFakeQuant({ bits: 4 }).transform(w, 1, 200);
  tt.ok(Math.abs(rangeError(w.data, 0, 200, mn, mx, 4) - sqErr(mm.data, w.data, 0, 200)) < 1e-9, 'rangeError(min, max) = min/max quantizer error');
  const r = mseWeightRatios(w, 1, 200, 4);
  tt.ok(r.lo[0]! < 1 || r.hi[0]! < 1, `an outlier gets clipped (ratios ${r.lo[0]!.toFixed(2)}, ${r.hi[0]!.toFixed(2)})`);
});

t.test('learned ratios: clipped STE for the weight, LSQ-with-zero-point gradient for the ratios', async (tt) => {
  const lin = new Linear(24, 5, { rng: rng.fork() });
  const m = toQat(new Sequential([lin]), { weightBits: 4 });
  const layer = m.at(0) as Linear;
  const [, q] = [...useClippedWeights(m, 'learned')][0]!;
  tt.ok(q instanceof ClippedWeightFakeQuant && q.learned, 'the min/max quantizer was replaced');
  const [pl, ph] = q.ratioParameters();
  tt.ok(pl && ph && m.parameters().includes(pl) && m.parameters().includes(ph), 'ratios are model parameters');
  for (let c = 0; c < 5; c++) {
    pl!.data.data[c] = 0.55 + 0.05 * c; // force clipping
    ph!.data.data[c] = 0.7 - 0.05 * c;
  }
  const x = Tensor.randn([7, 24], rng) as FTensor;
  const G = Tensor.randn([7, 5], rng) as FTensor;
  m.zeroGrad();
  m.forward(x);
  m.backward(G);
  const w = layer.weight.data.data;
  // dL/dw_hat = G^T x
  const gwh = new Float64Array(120);
  for (let o = 0; o < 5; o++) for (let k = 0; k < 24; k++) for (let n = 0; n < 7; n++) gwh[o * 24 + k] += G.data[n * 5 + o]! * x.data[n * 24 + k]!;
  let errW = 0;
  let errR = 0;
  let clamped = 0;
  for (let c = 0; c < 5; c++) {
    let mn = Infinity;
    let mx = -Infinity;
    for (let k = 0; k < 24; k++) {
      mn = Math.min(mn, w[c * 24 + k]!);
      mx = Math.max(mx, w[c * 24 + k]!);
    }
    const lo = pl!.data.data[c]! * mn;
    const hi = ph!.data.data[c]! * mx;
    const s = Math.fround((hi - lo) / 15);
    const zp = -rne(lo / s);
    tt.equal(s, chooseQParams({ min: lo, max: hi, bits: 4 }).scale[0], `channel ${c}: scale`);
    let dLo = 0;
    let dHi = 0;
    for (let k = 0; k < 24; k++) {
      const i = c * 24 + k;
      const v = Math.fround(w[i]! / s);
      const qv = rne(v) + zp;
      const g = gwh[i]!;
      if (qv < 0) {
        dLo += g;
        clamped++;
      } else if (qv > 15) {
        dHi += g;
        clamped++;
      } else {
        dLo -= (g * (rne(v) - v)) / 15;
        dHi += (g * (rne(v) - v)) / 15;
      }
      const expW = qv < 0 || qv > 15 ? 0 : g;
      errW = Math.max(errW, Math.abs(layer.weight.grad!.data[i]! - expW));
    }
    const expL = dLo * mn;
    const expH = dHi * mx;
    errR = Math.max(errR, Math.abs(pl!.grad!.data[c]! - expL) / Math.max(1e-6, Math.abs(expL)), Math.abs(ph!.grad!.data[c]! - expH) / Math.max(1e-6, Math.abs(expH)));
  }
  tt.ok(clamped > 0, `${clamped} weights clamped`);
  tt.ok(errW < 1e-4, `weight gradient: clipped STE (${errW.toExponential(2)})`);
  tt.ok(errR < 1e-4, `ratio gradients match the formula (${errR.toExponential(2)})`);

  // Gradient descent on the ratios alone, loss = |w_hat - w|^2, from a poor start, lowers the error.
  const C = 8;
  const N = 144;
  const wt = laplaceWeights(C, N);
  const cq = new ClippedWeightFakeQuant({ bits: 4, learned: true }).initRatios(wt, C, N, { lo: new Array(C).fill(0.2), hi: new Array(C).fill(0.2) });
  const [ql, qh] = cq.ratioParameters();
  const gw = Tensor.zeros([C, N]) as FTensor;
  const err0 = sqErr(cq.transform(wt, C, N).data, wt.data, 0, C * N);
  for (let it = 0; it < 200; it++) {
    const wh = cq.transform(wt, C, N);
    const g = Tensor.zeros([C, N]) as FTensor;
    for (let i = 0; i < C * N; i++) g.data[i] = 2 * (wh.data[i]! - wt.data[i]!);
    ql!.zeroGrad();
    qh!.zeroGrad();
    cq.backwardTransform(g, gw, false);
    for (const p of [ql!, qh!]) for (let c = 0; c < C; c++) p.data.data[c] -= 0.002 * Math.sign(p.grad!.data[c]!);
  }
  const err1 = sqErr(cq.transform(wt, C, N).data, wt.data, 0, C * N);
  tt.ok(err1 < 0.5 * err0, `descent on the ratio gradient: error ${err0.toExponential(3)} -> ${err1.toExponential(3)}`);
});

t.test('baking: the min/max quantizer over the baked weight computes the same', async (tt) => {
  const conv = new Conv2d(6, 8, 3, { padding: 1, rng: rng.fork() });
  const lin = new Linear(8, 4, { rng: rng.fork() });
  for (const p of [conv.weight, lin.weight]) for (let i = 0; i < p.numel; i += 17) p.data.data[i] *= 6; // outliers
  const m = toQat(new Sequential([conv, lin]), { weightBits: 4 });
  useClippedWeights(m, 'mse');
  m.eval();
  const c = m.at(0) as Conv2d;
  const l = m.at(1) as Linear;
  const before = [c.effectiveWeight().clone(), l.effectiveWeight().clone()];
  const r = bakeClippedWeights(m);
  tt.equal(r.layers, 2);
  tt.ok(c.weightQuant instanceof WeightFakeQuant && l.weightQuant instanceof WeightFakeQuant, 'min/max quantizers back in place');
  const after = [c.effectiveWeight(), l.effectiveWeight()];
  for (let k = 0; k < 2; k++) {
    let d = 0;
    let scale = 0;
    for (let i = 0; i < after[k]!.numel; i++) {
      d = Math.max(d, Math.abs(after[k]!.data[i]! - before[k]!.data[i]!));
      scale = Math.max(scale, Math.abs(before[k]!.data[i]!));
    }
    tt.ok(d <= 1e-6 * scale, `layer ${k}: baked values equal (max diff ${d.toExponential(2)})`);
  }
  tt.ok(r.maxError < 1e-5, `reported bake error ${r.maxError.toExponential(2)}`);
});

/** A small teacher with BatchNorm (tinyTeacher has none). */
function bnTeacher(): Graph {
  const r = new Rng(11);
  const g = new Graph(['input'])
    .add('conv1', new Conv2d(3, 8, 3, { stride: 4, padding: 1, rng: r }))
    .add('bn1', new BatchNorm2d(8))
    .add('act1', new PReLU(8, 0.25))
    .add('conv2', new Conv2d(8, 8, 3, { stride: 4, padding: 1, rng: r }))
    .add('bn2', new BatchNorm2d(8))
    .add('act2', new PReLU(8, 0.25))
    .add('flat', new Flatten())
    .add('fc', new Linear(7 * 7 * 8, 16, { rng: r }));
  return g.eval();
}

t.test('quantize({ weightRange }): learned ratios train, bake into the saved file; PTQ with mse', async (tt) => {
  const faces = await paintedFaces(tt, 10, 3);
  const dir = tempDir(tt, 'wrange');
  const out = join(dir, 'student.qfm');
  const logPath = join(dir, 'log.jsonl');
  const r = await quantize({
    teacher: tinyTeacher(), data: faces, bits: 'w4a4', steps: 12, batchSize: 4, lr: 1e-3, optimizer: 'adamw', calibSteps: 3, holdout: 2, seed: 2,
    weightRange: 'learned', lrSchedule: 'cosine', out, log: logPath, workers: 0,
  });
  tt.ok(r.completed);
  const log = readFileSync(logPath, 'utf8').trim().split('\n').map((x) => JSON.parse(x) as Record<string, unknown>);
  const bake = log.find((e) => e.event === 'bake-weights');
  tt.ok(bake && (bake.layers as number) > 0 && (bake.maxError as number) < 1e-4, `baked ${String(bake?.layers)} layers, max error ${String(bake?.maxError)}`);
  const start = log.find((e) => e.event === 'start');
  tt.equal(start?.weightRange, 'learned');
  tt.equal(start?.lrSchedule, 'cosine');
  const lrs = log.filter((e) => e.event === 'step').map((e) => e.lr as number);
  tt.ok(lrs[0] === 1e-3 && lrs[11]! < lrs[5]! && lrs[5]! < lrs[0]!, 'cosine learning rate decays');
  for (const m of r.student.modules()) tt.notOk(m instanceof ClippedWeightFakeQuant, 'no clipped quantizer left after baking');
  const x = new Float32Array(2 * 112 * 112 * 3).map((_, i) => (i * 7919) % 256);
  const a = await new EngineEmbedder(r.student, r.teacher.info).embed(x, 2);
  const b = await (await loadQfmEmbedder(out)).embed(x, 2);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i]! * b[i]!; na += a[i]! ** 2; nb += b[i]! ** 2; }
  tt.ok(dot / Math.sqrt(na * nb) > 0.999, `file vs memory cosine ${(dot / Math.sqrt(na * nb)).toFixed(6)}`);

  const plog = join(dir, 'ptq.jsonl');
  const bt = bnTeacher();
  const p = await quantize({ teacher: bt, data: faces, bits: 'w4a4', noTrain: true, calibSteps: 2, batchSize: 4, holdout: 2, weightRange: 'mse', bnRecalibrate: true, log: plog, workers: 0 });
  tt.ok(p.completed && p.agreement !== null, 'PTQ with MSE weight clipping and BatchNorm re-estimation runs');
  const pl = readFileSync(plog, 'utf8').trim().split('\n').map((x) => JSON.parse(x) as Record<string, unknown>);
  const bn = pl.find((e) => e.event === 'bn-recalibrate');
  tt.ok(bn && (bn.layers as number) > 0 && bn.images === 8, `BatchNorm re-estimated: ${JSON.stringify(bn)}`);
  const tBn = [...bt.modules()].find((m) => m instanceof BatchNorm) as BatchNorm;
  const sBn = [...p.student.modules()].find((m) => m instanceof BatchNorm) as BatchNorm;
  tt.notSame(Array.from(sBn.runningMean.data), Array.from(tBn.runningMean.data), 'running statistics changed');
  tt.equal(sBn.momentum, tBn.momentum, 'momentum restored');
  await tt.rejects(quantize({ teacher: tinyTeacher(), data: faces, weightRange: 'x' as never, steps: 1 }), /weightRange/);
});

t.test('quantize({ featureLoss }): feature terms logged and falling, taps removed from student and teacher', async (tt) => {
  const faces = await paintedFaces(tt, 10, 4);
  const dir = tempDir(tt, 'feat');
  const out = join(dir, 'student.qfm');
  const logPath = join(dir, 'log.jsonl');
  const teacher = tinyTeacher();
  const r = await quantize({ teacher, data: faces, bits: 'w4a4', steps: 20, batchSize: 4, lr: 1e-3, optimizer: 'adamw', calibSteps: 3, holdout: 2, featureLoss: 0.1, out, log: logPath, workers: 0 });
  tt.ok(r.completed);
  const steps = readFileSync(logPath, 'utf8').trim().split('\n').map((x) => JSON.parse(x) as Record<string, number | string>).filter((e) => e.event === 'step');
  tt.ok(steps.every((e) => typeof e.featureLoss === 'number' && Math.abs((e.loss as number) - (e.embLoss as number) - 0.1 * (e.featureLoss as number)) < 1e-9), 'loss = embedding loss + weight x feature loss');
  const f = steps.map((e) => e.featureLoss as number);
  tt.ok(f.slice(-4).reduce((a, b) => a + b) < f.slice(3, 7).reduce((a, b) => a + b), `feature loss falls (${f[3]!.toExponential(2)} -> ${f[19]!.toExponential(2)})`);
  for (const m of [...r.student.modules(), ...teacher.modules()]) if (m instanceof FeatureTap) tt.fail('a tap was left in place');
  const x = new Float32Array(2 * 112 * 112 * 3).map((_, i) => (i * 31) % 256);
  const a = await new EngineEmbedder(r.student, r.teacher.info).embed(x, 2);
  const b = await (await loadQfmEmbedder(out)).embed(x, 2);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i]! * b[i]!; na += a[i]! ** 2; nb += b[i]! ** 2; }
  tt.ok(dot / Math.sqrt(na * nb) > 0.999, `file vs memory cosine ${(dot / Math.sqrt(na * nb)).toFixed(6)}`);
});

t.test('quantize: mixup reaches the training batches (it was dropped between the resolved options and the loader)', async (tt) => {
  const faces = await paintedFaces(tt, 10, 5);
  const run = async (mixup: number): Promise<number[]> => {
    const dir = tempDir(tt, 'mix');
    const logPath = join(dir, 'log.jsonl');
    await quantize({ teacher: tinyTeacher(), data: faces, bits: 'w8a8', steps: 3, batchSize: 4, calibSteps: 1, holdout: 2, seed: 1, augment: { flip: true, mixup }, log: logPath, workers: 0 });
    return readFileSync(logPath, 'utf8').trim().split('\n').map((x) => JSON.parse(x) as Record<string, number | string>).filter((e) => e.event === 'step').map((e) => e.loss as number);
  };
  const [a, b] = [await run(0), await run(1)];
  tt.notSame(a, b, `losses differ with mixup (${a[0]} vs ${b[0]})`);
});
