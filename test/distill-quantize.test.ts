/**
 * quantize() end to end on painted faces (no shared data needed) with a
 * tiny teacher: distillation lowers the loss, the .qfm loads with its bits
 * and provenance, PTQ leaves the weights alone and freezes the ranges,
 * bad input fails before anything is written, and the mobileface teacher
 * (when ../shared has it) quantizes for a few steps.
 */
import t from 'tap';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { quantize } from '../lib/distill/trainer.js';
import { EngineEmbedder, loadQfmEmbedder } from '../lib/distill/embedder.js';
import { loadQfm } from '../lib/io/qfm.js';
import { quantizers, stripQat } from '../lib/quant/qat.js';
import { Rng, Tensor } from '../lib/tensor.js';
import { noGrad } from '../lib/nn/module.js';
import { ActFakeQuant } from '../lib/quant/fake-quant.js';
import { hasMobileface, mobilefacePath, paintedFaces, tempDir, tinyTeacher } from './fixtures/distill/util.js';

const facesP = paintedFaces(t, 14, 11);

function readLog(p: string): Record<string, unknown>[] {
  return readFileSync(p, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

t.test('distillation: loss falls, the student file loads with bits and provenance', async (t) => {
  const faces = await facesP;
  const dir = tempDir(t, 'kd');
  const out = join(dir, 'student.qfm');
  const logPath = join(dir, 'log.jsonl');
  const phases = new Set<string>();
  const r = await quantize({
    teacher: tinyTeacher(), data: faces, bits: 'w4a4', optimizer: 'sgd', steps: 30, batchSize: 4, lr: 1, calibSteps: 4, holdout: 2, seed: 5,
    out, log: logPath, workers: 0, onProgress: (p) => phases.add(p.phase),
  });
  t.ok(r.completed);
  t.equal(r.steps, 30);
  t.equal(r.trainImages, 12);
  t.equal(r.holdoutImages, 2);
  t.same([...phases].filter((p) => ['load', 'prepare', 'train', 'evaluate', 'save', 'done'].includes(p)).sort(), ['done', 'evaluate', 'load', 'prepare', 'save', 'train']);
  const log = readLog(logPath);
  const steps = log.filter((l) => l.event === 'step');
  t.equal(steps.length, 30, 'one log line per step');
  const mean = (a: Record<string, unknown>[]) => a.reduce((s, l) => s + (l.loss as number), 0) / a.length;
  const early = mean(steps.slice(4, 9));
  const late = mean(steps.slice(25));
  t.ok(late < 0.5 * early, `loss after calibration ${early.toExponential(3)} -> end ${late.toExponential(3)}`);
  t.ok(log.some((l) => l.event === 'eval' && typeof l.meanCosine === 'number'), 'agreement evaluated during training');
  t.ok(log.some((l) => l.event === 'calibrate' && l.steps === 4 && l.before === 'training'), 'calibration (4 batches, before training: recipe kd) is logged');
  t.ok(log.some((l) => l.event === 'eval' && l.step === 0), 'the PTQ start is evaluated before training');
  t.ok(r.startAgreement && r.agreement!.meanCosine >= r.startAgreement.meanCosine, 'the saved student agrees at least as well as the PTQ start');
  t.ok(r.agreement && r.agreement.split === 'holdout' && r.agreement.images === 2);
  t.ok(r.agreement!.meanCosine > 0.9, `held-out agreement ${r.agreement!.meanCosine.toFixed(4)}`);
  t.notOk(existsSync(`${out}.ckpt`), 'no checkpoint left after a completed run');
  t.same(readdirSync(dir).sort(), ['log.jsonl', 'student.qfm'], 'no temp files left');

  // every activation range frozen in the result
  for (const q of quantizers(r.student)) if (q.kind === 'activation') t.equal(q.observing, false, `${q.name} frozen`);

  const l = await loadQfm(out);
  t.equal(l.provenance.weightBits, 4);
  t.equal(l.provenance.actBits, 4);
  t.equal(l.provenance.teacherSha256, r.teacher.sha256);
  t.match(l.provenance.data, { kind: 'folder', trainImages: 12, holdoutImages: 2 });
  t.match(l.provenance.notes, { method: 'QuantFace distillation', steps: 30, seed: 5 });
  t.equal(l.info?.name, 'teacher-w4a4');
  t.ok(l.metadata.activations.length > 0 && l.metadata.activations.every((a) => a.frozen && a.bits === 4), 'frozen 4-bit activation ranges stored');
  t.ok(l.metadata.tensors.some((e) => e.storage === 'packed' && e.bits === 4), 'weights packed at 4 bits');
  t.ok(l.bytes === r.out!.bytes);
  // The loaded student computes what the trained one computes.
  const x = new Float32Array(3 * 112 * 112 * 3).map((_, i) => (i * 7919) % 256);
  const a = await new EngineEmbedder(r.student, r.teacher.info).embed(x, 3);
  const b = await (await loadQfmEmbedder(out)).embed(x, 3);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i]! * b[i]!; na += a[i]! ** 2; nb += b[i]! ** 2; }
  t.ok(dot / Math.sqrt(na * nb) > 0.999, `file vs memory cosine ${(dot / Math.sqrt(na * nb)).toFixed(6)}`);
});

t.test('PTQ (noTrain): calibrate, freeze; weights untouched without equalization, only rescaled with it', async (t) => {
  const faces = await facesP;
  const dir = tempDir(t, 'ptq');
  const out = join(dir, 'ptq.qfm');
  const teacher = tinyTeacher();
  const r = await quantize({ teacher, data: faces, bits: 'w6a6', noTrain: true, calibSteps: 3, batchSize: 4, out, workers: 0, equalize: false });
  t.ok(r.completed && r.noTrain);
  t.equal(r.steps, 3);
  t.ok(Number.isNaN(r.finalLoss));
  const tw = teacher.stateDict();
  for (const [k, v] of r.student.stateDict()) {
    const w = tw.get(k);
    if (w) t.ok(Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength)), `${k} unchanged`);
  }
  const acts = [...r.student.modules()].filter((m): m is ActFakeQuant => m instanceof ActFakeQuant);
  t.ok(acts.length > 0);
  for (const a of acts) {
    t.equal(a.steps, 3, 'observed exactly the calibration batches');
    t.notOk(a.observerEnabled, 'frozen');
    t.ok(a.max > a.min, 'a real range');
  }
  const l = await loadQfm(out);
  t.match(l.provenance.notes, { method: 'PTQ (calibration only)' });
  t.equal(l.provenance.weightBits, 6);
  t.same(readdirSync(dir), ['ptq.qfm']);
  t.notOk('equalize' in (l.provenance.notes as object), 'no equalization recorded');

  // Default PTQ equalizes: weights rescaled, not trained: the float function is the teacher's.
  const e = await quantize({ teacher, data: faces, bits: 'w6a6', noTrain: true, calibSteps: 3, batchSize: 4, out: join(dir, 'eq.qfm'), workers: 0 });
  t.match((await loadQfm(join(dir, 'eq.qfm'))).provenance.notes, { equalize: { alpha: 0.5, statistic: 'range' } });
  const floatStudent = stripQat(e.student);
  const x = Tensor.zeros([3, 112, 112, 3]);
  const rng = new Rng(11);
  for (let i = 0; i < x.data.length; i++) x.data[i] = rng.normal();
  const want = noGrad(() => teacher.forward(x).clone());
  const got = noGrad(() => floatStudent.forward(x).clone());
  let d = 0;
  let m = 0;
  for (let i = 0; i < want.data.length; i++) {
    d = Math.max(d, Math.abs(want.data[i]! - got.data[i]!));
    m = Math.max(m, Math.abs(want.data[i]!));
  }
  t.ok(d <= 1e-4 * m, `equalized student without its quantizers = the teacher (max abs diff ${d.toExponential(2)})`);
  const changed = [...e.student.stateDict()].filter(([k, v]) => {
    const w = tw.get(k);
    return w && !Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength));
  });
  t.ok(changed.length > 0, `${changed.length} tensors rescaled`);
});

t.test('no held-out split: agreement on the training images', async (t) => {
  const faces = await facesP;
  const r = await quantize({ teacher: tinyTeacher(), data: faces, bits: 'w8a8', steps: 2, batchSize: 4, holdout: 0, workers: 0 });
  t.equal(r.holdoutImages, 0);
  t.equal(r.agreement?.split, 'train');
  t.equal(r.agreement?.images, 14);
  t.notOk(r.out, 'nothing saved without out');
});

t.test('bad input fails early, nothing written, an existing output kept', async (t) => {
  const faces = await facesP;
  const dir = tempDir(t, 'bad');
  const out = join(dir, 'keep.qfm');
  writeFileSync(out, 'previous result');
  const base = { teacher: tinyTeacher(), data: faces, out, steps: 2, batchSize: 4, workers: 0 };
  await t.rejects(quantize({ ...base, bits: 'w9a9' }), { code: 'E_ARG', message: /bits/ });
  await t.rejects(quantize({ ...base, data: join(dir, 'nope') }), { code: 'E_IO' });
  await t.rejects(quantize({ ...base, data: dir }), { code: 'E_DATA' });
  await t.rejects(quantize({ ...base, out: join(dir, 'missing', 'x.qfm') }), { code: 'E_IO', message: /does not exist/ });
  await t.rejects(quantize({ ...base, out: join(dir, 'x.onnx') }), { code: 'E_ARG', message: /\.qfm/ });
  await t.rejects(quantize({ ...base, out: dir }), { code: 'E_IO', message: /is a folder/ });
  await t.rejects(quantize({ ...base, align: 'sideways' }), { code: 'E_ARG', message: /alignment/ });
  await t.rejects(quantize({ ...base, batchSize: 0 }), { code: 'E_ARG', message: /batchSize/ });
  await t.rejects(quantize({ ...base, lr: -1 }), { code: 'E_ARG', message: /lr/ });
  await t.rejects(quantize({ ...base, holdout: 14 }), { code: 'E_ARG', message: /holdout/ });
  await t.rejects(quantize({ ...base, resume: true, out: undefined }), { code: 'E_ARG', message: /checkpoint/ });
  await t.rejects(quantize({ ...base, teacher: join(dir, 'missing.json') }), { code: 'E_IO' });
  // stopped before the end: no output written, the old file intact
  const ac = new AbortController();
  const r = await quantize({ ...base, steps: 10, signal: ac.signal, onProgress: (p) => { if (p.phase === 'train' && p.step === 3) ac.abort(); } });
  t.notOk(r.completed);
  t.equal(r.steps, 3);
  t.equal(readFileSync(out, 'utf8'), 'previous result', 'existing output untouched');
  t.ok(existsSync(`${out}.ckpt`), 'checkpoint written on stop');
});

t.test('mobileface teacher, a few steps', { skip: hasMobileface() ? false : `needs ${mobilefacePath}` }, async (t) => {
  const faces = await facesP;
  const r = await quantize({ teacher: mobilefacePath, data: faces, bits: 'w8a8', steps: 3, batchSize: 6, calibSteps: 2, holdout: 2, workers: 0 });
  t.equal(r.teacher.info.name, 'mobileface');
  t.equal(r.teacher.info.outputDim, 256);
  const acts = quantizers(r.student).filter((q) => q.kind === 'activation');
  // mobileface as imported: 13 PReLUs and 4 residual additions, each with an output quantizer
  t.equal(acts.length, 17);
  t.ok(r.agreement!.meanCosine > 0.95, `W8A8 agreement ${r.agreement!.meanCosine.toFixed(4)}`);
});
