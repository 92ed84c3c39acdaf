/**
 * Trainer options beyond the paper: QDrop on learned activation ranges
 * (lib/distill/learned-range.ts) and the options qdrop / equalize / init /
 * residualBits. QDrop: the dropped share of elements keeps
 * its float value and its gradient, the kept ones are quantized exactly as
 * without QDrop and alone move the range; masks follow the seed; eval mode
 * never drops; a run with both options is deterministic and resumes
 * bit-exactly; bad values are refused.
 */
import t from 'tap';
import { join } from 'node:path';
import { Rng, Tensor, type FTensor } from '../lib/tensor.js';
import { noGrad, type Module } from '../lib/nn/module.js';
import { LearnedActQuant } from '../lib/distill/learned-range.js';
import { quantize, type QuantizeOptions } from '../lib/distill/trainer.js';
import { loadQfm } from '../lib/io/qfm.js';
import { residualStreamNames } from '../lib/distill/bits.js';
import { quantizers } from '../lib/quant/qat.js';
import { Sequential } from '../lib/nn/containers.js';
import { PReLU } from '../lib/nn/layers.js';
import { paintedFaces, tempDir, tinyTeacher } from './fixtures/distill/util.js';

function input(n: number, rng: Rng): FTensor {
  const x = Tensor.zeros([n]);
  for (let i = 0; i < n; i++) x.data[i] = rng.normal() * 2 + 0.5;
  return x;
}

t.test('LearnedActQuant dropProb: float where dropped, quantized elsewhere; gradients', async (t) => {
  const rng = new Rng(4);
  const n = 20000;
  const x = input(n, rng);
  const plain = new LearnedActQuant(4, -2, 3);
  plain.train(true);
  const ref = plain.forward(x).clone() as FTensor;
  const g = Tensor.zeros([n]);
  for (let i = 0; i < n; i++) g.data[i] = rng.normal();
  plain.zeroGrad();
  plain.backward(g);
  const refA = plain.a.grad!.data[0]!;
  const refB = plain.b.grad!.data[0]!;

  const q = new LearnedActQuant(4, -2, 3);
  q.dropProb = 0.5;
  q.train(true);
  q.reseed(123);
  const y = q.forward(x).clone() as FTensor;
  let dropped = 0;
  let bad = 0;
  const keep = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (y.data[i] === x.data[i] && ref.data[i] !== x.data[i]) dropped++;
    else if (y.data[i] !== ref.data[i]) bad++;
    else keep[i] = 1;
  }
  t.equal(bad, 0, 'every element is either its float value or its quantized value');
  t.ok(dropped > 0.45 * n && dropped < 0.55 * n, `about half dropped (${dropped} of ${n})`);

  q.zeroGrad();
  const gi = q.backward(g);
  // Dropped elements pass their gradient; kept ones follow the clipped STE of the plain quantizer.
  const gPlain = (() => {
    const p2 = new LearnedActQuant(4, -2, 3);
    p2.train(true);
    p2.forward(x);
    return p2.backward(g).clone() as FTensor;
  })();
  let gradBad = 0;
  for (let i = 0; i < n; i++) {
    const want = keep[i] || y.data[i] === ref.data[i] ? gPlain.data[i]! : g.data[i]!;
    if (y.data[i] === x.data[i] && ref.data[i] !== x.data[i]) {
      if (gi.data[i] !== g.data[i]) gradBad++;
    } else if (gi.data[i] !== want) gradBad++;
  }
  t.equal(gradBad, 0, 'input gradient: straight through where dropped, the plain rule elsewhere');
  // Range gradients: those of the plain quantizer with the dropped elements' output gradients zeroed.
  const gKept = g.clone() as FTensor;
  for (let i = 0; i < n; i++) if (y.data[i] === x.data[i] && ref.data[i] !== x.data[i]) gKept.data[i] = 0;
  const p3 = new LearnedActQuant(4, -2, 3);
  p3.train(true);
  p3.forward(x);
  p3.zeroGrad();
  p3.backward(gKept);
  t.equal(q.a.grad!.data[0], p3.a.grad!.data[0], `range gradient (lower end) from the kept elements only (${q.a.grad!.data[0]!.toFixed(3)}; all elements: ${refA.toFixed(3)})`);
  t.equal(q.b.grad!.data[0], p3.b.grad!.data[0], `range gradient (upper end) from the kept elements only (${q.b.grad!.data[0]!.toFixed(3)}; all elements: ${refB.toFixed(3)})`);

  // Same seed, same mask; another seed, another mask; eval mode and noGrad never drop.
  const q2 = new LearnedActQuant(4, -2, 3);
  q2.dropProb = 0.5;
  q2.train(true);
  q2.reseed(123);
  const bytes = (v: FTensor): Buffer => Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength);
  t.ok(bytes(q2.forward(x)).equals(bytes(y)), 'same seed, same output');
  q2.reseed(124);
  t.notOk(bytes(q2.forward(x)).equals(bytes(y)), 'another seed, another mask');
  q2.eval();
  t.ok(bytes(q2.forward(x)).equals(bytes(ref)), 'eval mode: no drop');
  q2.train(true);
  t.ok(bytes(noGrad(() => q2.forward(x))).equals(bytes(ref)), 'no gradients: no drop');
});

function sameWeights(a: Module, b: Module): number {
  let differing = 0;
  const sb = b.stateDict();
  for (const [k, v] of a.stateDict()) {
    const w = sb.get(k)!;
    if (!Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength))) differing++;
  }
  return differing;
}

t.test('quantize with qdrop and equalize: deterministic, resumes bit-exactly, differs from without', async (t) => {
  const faces = await paintedFaces(t, 13, 5);
  const base: QuantizeOptions = {
    teacher: tinyTeacher(), data: faces, bits: 'w4a4', steps: 10, batchSize: 4, optimizer: 'adamw', lr: 1e-3, calibSteps: 4,
    actRange: 'learned', qdrop: 0.5, equalize: true, holdout: 2, seed: 3, workers: 0,
  };
  const ref = await quantize(base);
  t.ok(ref.completed);
  t.equal(sameWeights(ref.student, (await quantize(base)).student), 0, 'two fresh runs bit-identical');
  const dir = tempDir(t, 'qdrop');
  const ckpt = join(dir, 'run.ckpt');
  const ac = new AbortController();
  const a = await quantize({ ...base, checkpoint: ckpt, checkpointEvery: 0, signal: ac.signal, onProgress: (p) => { if (p.phase === 'train' && p.step === 7) ac.abort(); } });
  t.notOk(a.completed);
  const b = await quantize({ ...base, checkpoint: ckpt, resume: true });
  t.equal(b.resumedFrom, 7);
  t.equal(sameWeights(ref.student, b.student), 0, 'stopped after the ranges froze and resumed: bit-identical');
  t.ok(sameWeights(ref.student, (await quantize({ ...base, qdrop: 0 })).student) > 0, 'qdrop changes the result');
  t.ok(sameWeights(ref.student, (await quantize({ ...base, equalize: false })).student) > 0, 'equalize changes the result');
});

t.test('bad qdrop / equalize values', async (t) => {
  const faces = await paintedFaces(t, 6, 2);
  const base: QuantizeOptions = { teacher: tinyTeacher(), data: faces, steps: 2, batchSize: 2, workers: 0, holdout: 0 };
  for (const qdrop of [-0.1, 1, 1.5, NaN]) await t.rejects(quantize({ ...base, actRange: 'learned', qdrop }), { code: 'E_ARG' }, `qdrop ${qdrop}`);
  await t.rejects(quantize({ ...base, actRange: 'mse', qdrop: 0.5 }), { code: 'E_ARG', message: /learned/ }, 'qdrop needs learned ranges');
  await t.rejects(quantize({ ...base, equalize: 'yes' as never }), { code: 'E_ARG' });
  await t.rejects(quantize({ ...base, equalize: { alpha: 3 } }), { code: 'E_ARG' });
});

t.test('init: the student starts from another model\'s weights (a .qfm or a Module); a mismatch is refused', async (t) => {
  const faces = await paintedFaces(t, 8, 3);
  const dir = tempDir(t, 'init');
  const first = join(dir, 'first.qfm');
  const base: QuantizeOptions = { teacher: tinyTeacher(), data: faces, batchSize: 4, workers: 0, holdout: 0, equalize: false };
  const a = await quantize({ ...base, bits: 'w8a8', steps: 3, lr: 0.5, calibSteps: 2, out: first });
  t.ok(a.completed);
  // PTQ from that student: weights are exactly the loaded ones (the saved student's grid values), not the teacher's.
  const saved = (await loadQfm(first)).model.stateDict();
  const p = await quantize({ ...base, bits: 'w4a4', noTrain: true, calibSteps: 2, init: first });
  const sd = p.student.stateDict();
  const teacherSd = tinyTeacher().stateDict();
  let same = 0;
  let differsFromTeacher = 0;
  for (const k of ['conv1.weight', 'dw1.weight', 'fc.weight']) {
    const v = sd.get(k)!;
    if (Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(saved.get(k)!.data.buffer, saved.get(k)!.data.byteOffset, saved.get(k)!.data.byteLength))) same++;
    if (!Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(teacherSd.get(k)!.data.buffer, teacherSd.get(k)!.data.byteOffset, teacherSd.get(k)!.data.byteLength))) differsFromTeacher++;
  }
  t.equal(same, 3, 'weights = the init model\'s');
  t.equal(differsFromTeacher, 3, 'not the teacher\'s');
  await t.rejects(quantize({ ...base, steps: 1, init: join(dir, 'missing.qfm') }), { code: 'E_IO' });
  await t.rejects(quantize({ ...base, steps: 1, init: tinyTeacher(4).getChild('conv1')! }), { code: 'E_ARG', message: /init: its weights do not fit/ });
  await t.rejects(quantize({ ...base, steps: 1, init: 42 as never }), { code: 'E_ARG' });
});

t.test('residualBits: the residual stream (Add outputs, skip sources) gets its own activation width', async (t) => {
  t.same(residualStreamNames(tinyTeacher()), ['res', 'act2'], 'tiny teacher: the Add and its skip source (act3 feeds only the Add)');
  t.same(residualStreamNames(new Sequential([new PReLU(2)])), [], 'not a graph: none');
  const faces = await paintedFaces(t, 6, 4);
  const base: QuantizeOptions = { teacher: tinyTeacher(), data: faces, bits: 'w4a4', noTrain: true, calibSteps: 1, batchSize: 2, workers: 0, holdout: 0 };
  const r = await quantize({ ...base, residualBits: 8 });
  const acts = new Map(quantizers(r.student).filter((q) => q.kind === 'activation').map((q) => [q.name, q.bits]));
  t.equal(acts.get('res.outQuant'), 8);
  t.equal(acts.get('act2.outQuant'), 8);
  t.equal(acts.get('act3.outQuant'), 4);
  t.equal(acts.get('act1.outQuant'), 4);
  t.ok(quantizers(r.student).filter((q) => q.kind === 'weight').every((q) => q.bits === 4), 'weights keep 4 bits');
  const u = await quantize({ ...base, residualBits: 8, layerBits: 'res=a6' });
  t.equal(new Map(quantizers(u.student).map((q) => [q.name, q.bits])).get('res.outQuant'), 6, 'an explicit rule wins');
  for (const residualBits of [1, 9, 4.5, NaN]) await t.rejects(quantize({ ...base, residualBits }), { code: 'E_ARG' }, `residualBits ${residualBits}`);
  const named = await quantize({ ...base, bits: 'w4a4r8' });
  t.same(new Map(quantizers(named.student).map((q) => [q.name, q.bits])), new Map(quantizers(r.student).map((q) => [q.name, q.bits])), "bits 'w4a4r8' = w4a4 with residualBits 8");
  await t.rejects(quantize({ ...base, bits: 'w4a4r8', residualBits: 6 }), { code: 'E_ARG', message: /give one/ }, 'conflicting residual widths refused');
});
