/**
 * quantize()'s stages driven one at a time (lib/distill/run.ts): the options
 * resolve once before anything loads; each stage refuses to run before the
 * ones it needs; after each stage the run holds what that stage promises
 * (teacher, step plan, student with quantizers, frozen ranges and the start
 * agreement, the trained and saved student); and the stages in sequence
 * give the same student, bit for bit, as quantize() itself.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { quantize } from '../lib/distill/trainer.js';
import { QuantizeRun } from '../lib/distill/run.js';
import { resolveQuantizeOptions, planSteps, batchFor, DEFAULT_STEPS } from '../lib/distill/settings.js';
import { quantizers } from '../lib/quant/qat.js';
import { loadQfm } from '../lib/io/qfm.js';
import { paintedFaces, tempDir, tinyTeacher } from './fixtures/distill/util.js';

const facesP = paintedFaces(t, 14, 23);

t.test('options resolve once, before anything is loaded', async (t) => {
  const s = resolveQuantizeOptions({ data: '/nowhere' });
  t.equal(s.recipe, 'kd', 'the default recipe');
  t.equal(s.calibration, 'first');
  t.equal(s.optimizer, 'sgd');
  t.equal(s.steps, 400, 'the recipe fills steps');
  t.equal(s.calibSteps, 50);
  t.equal(s.weightDecay, undefined, 'weight decay waits for the teacher');
  t.same(s.guard, { maxRollbacks: 3, lrFactor: 0.3 });
  t.equal(s.ste, 'unmasked', 'SGD: the reference straight-through estimator');
  t.equal(resolveQuantizeOptions({ data: '/nowhere', optimizer: 'adamw' }).ste, 'clipped', 'AdamW: the clipped estimator (unmasked diverges)');
  t.equal(resolveQuantizeOptions({ data: '/nowhere', optimizer: 'adamw', ste: 'unmasked' }).ste, 'unmasked', 'an explicit estimator wins');
  const q = resolveQuantizeOptions({ data: '/nowhere', recipe: 'quantface' });
  t.equal(q.calibration, 'during');
  t.equal(q.steps, 1500);
  t.equal(q.actRange, 'minmax');
  // Bad values fail here, in milliseconds, whatever the data or teacher (neither exists).
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ optimizer: 'adam' }, /optimizer must be 'sgd' or 'adamw'/],
    [{ actRange: 'x' }, /actRange must be 'minmax', 'mse' or 'learned'/],
    [{ steps: 0 }, /steps must be an integer >= 1/],
    [{ lr: 0 }, /lr must be a number > 0/],
    [{ batchSize: 2.5 }, /batchSize must be an integer/],
    [{ calibSteps: -1 }, /calibSteps must be an integer/],
    [{ evalEvery: -2 }, /evalEvery must be an integer/],
    [{ lrMilestones: [0.5, -1] }, /lrMilestones must be positive/],
    [{ qdrop: 0.5 }, /qdrop works on learned activation ranges/],
    [{ guard: { lrFactor: 2 } }, /guard.lrFactor must be below 1/],
    [{ out: '/no/such/folder/x.qfm' }, /does not exist/],
  ];
  for (const [o, re] of bad) t.throws(() => resolveQuantizeOptions({ data: '/nowhere', ...o } as never), re, JSON.stringify(o));
  t.throws(() => resolveQuantizeOptions({} as never), /data is required/);
  t.throws(() => resolveQuantizeOptions(undefined as never), /options are required/);
});

t.test('the step plan follows the data', async (t) => {
  const s = resolveQuantizeOptions({ data: '/nowhere', recipe: 'quantface', steps: undefined as never, batchSize: 64 });
  t.equal(batchFor(s, 20), 20, 'the batch is clamped to the images there are');
  const p = planSteps(s, 20, 1);
  t.equal(p.totalSteps, DEFAULT_STEPS);
  t.equal(p.lr, 0.1 * (20 / 512), 'the default learning rate follows the clamped batch');
  t.same(p.milestones, [Math.round(0.75 * DEFAULT_STEPS), Math.round(0.9 * DEFAULT_STEPS)]);
  t.equal(p.evalEvery, Math.round(DEFAULT_STEPS / 20));
  t.ok(Math.abs(p.schedule(0) - p.lr) < 1e-15 && Math.abs(p.schedule(DEFAULT_STEPS - 1) - p.lr * 0.01) < 1e-12, 'step decay x0.1 twice');
  const e = planSteps(resolveQuantizeOptions({ data: '/nowhere', epochs: 3, steps: undefined as never, calibration: 'during', calibSteps: 500 }), 8, 7);
  t.equal(e.totalSteps, 21, 'epochs x batches per epoch');
  t.equal(e.calibSteps, 21, "calibration 'during' never runs past the last step");
  const n = planSteps(resolveQuantizeOptions({ data: '/nowhere', noTrain: true, calibSteps: 9 }), 8, 7);
  t.equal(n.totalSteps, 9, 'PTQ: the steps are the calibration batches');
});

t.test('recipe kd distils with AdamW below 6 bits, SGD at 6 and 8', async (t) => {
  const r = (o: Record<string, unknown>) => resolveQuantizeOptions({ data: '/nowhere', ...o } as never);
  for (const bits of ['w4a4', 'w4a4r8', 'w8a4', 'w4a8', 'w5a5', 'w2a8']) {
    const s = r({ bits });
    t.equal(s.optimizer, 'adamw', `${bits}: AdamW`);
    t.equal(s.ste, 'clipped', `${bits}: with the clipped estimator`);
    t.equal(planSteps(s, 64, 3).lr, 1e-4, `${bits}: AdamW's learning rate 1e-4`);
    t.equal(s.steps, 400, `${bits}: the recipe's 400 steps`);
  }
  t.equal(r({ bits: { weightBits: 4, actBits: 4 } }).optimizer, 'adamw', 'bits given as an object');
  for (const bits of ['w8a8', 'w6a6', 'w8a6', 'w6a8', undefined]) {
    const s = r({ bits });
    t.equal(s.optimizer, 'sgd', `${bits ?? 'default bits'}: SGD`);
    t.equal(s.ste, 'unmasked', `${bits ?? 'default bits'}: the reference's estimator`);
    t.equal(planSteps(s, 64, 3).lr, 0.1 * (64 / 512), `${bits ?? 'default bits'}: the method's learning rate`);
  }
  const sgd4 = r({ bits: 'w4a4', optimizer: 'sgd' });
  t.equal(sgd4.optimizer, 'sgd', 'an explicit optimizer wins at 4 bits');
  t.equal(planSteps(sgd4, 64, 3).lr, 0.1 * (64 / 512), 'and SGD keeps its own learning rate');
  t.equal(planSteps(r({ bits: 'w4a4', lr: 3e-4 }), 64, 3).lr, 3e-4, 'an explicit learning rate wins');
  t.equal(planSteps(r({ optimizer: 'adamw' }), 64, 3).lr, 1e-4, 'AdamW at 8 bits: 1e-4 too (0.1 x batch / 512 is an SGD rate)');
  t.equal(r({ bits: 'w4a4', recipe: 'quantface' }).optimizer, 'sgd', 'the paper recipe stays SGD at 4 bits');
  t.throws(() => r({ bits: 'w9a4' }), /bits/, 'a bad width is still named by the option check');
});

t.test('the stages one at a time give what quantize() gives', async (t) => {
  const faces = await facesP;
  const dir = tempDir(t, 'stages');
  const opts = { teacher: tinyTeacher(), data: faces, bits: 'w4a4', optimizer: 'sgd', steps: 12, batchSize: 4, lr: 0.5, calibSteps: 3, holdout: 2, seed: 3, workers: 0, evalEvery: 4 } as const;
  const run = new QuantizeRun(resolveQuantizeOptions({ ...opts, out: join(dir, 'staged.qfm') }));
  try {
    t.throws(() => run.D, /openData has not run/, 'a stage before its inputs is refused');
    await t.rejects(run.openData(), /loadTeacher has not run/);
    const T = await run.loadTeacher();
    t.equal(T.size, T.info.inputShape[0]);
    t.equal(T.weightDecay, 0, 'the tiny teacher has no BatchNorm: no weight decay');
    await t.rejects(run.buildStudent(), /openData has not run/);
    const D = await run.openData();
    t.equal(D.trainImages, 12);
    t.equal(D.holdout?.length, 2);
    t.equal(D.plan.totalSteps, 12);
    t.equal(D.plan.batchSize, 4);
    const S = await run.buildStudent();
    const qs = quantizers(S.student);
    t.ok(qs.some((q) => q.kind === 'activation') && qs.some((q) => q.kind === 'weight'), 'the student has weight and activation quantizers');
    t.ok(qs.filter((q) => q.kind === 'activation').every((q) => q.observing), 'ranges not calibrated yet');
    t.equal(S.fingerprint.bits, 'w4a4');
    await run.restore();
    await run.prepareTargets();
    await run.calibrate();
    t.ok(quantizers(S.student).filter((q) => q.kind === 'activation').every((q) => !q.observing), 'calibrate froze every activation range');
    t.ok(run.startAgreement && run.startAgreement.images === 2, 'the PTQ start measured on the held-out faces');
    const a0 = run.evaluate();
    t.equal(a0.meanCosine, run.startAgreement!.meanCosine, 'evaluate is repeatable');
    await run.train();
    t.equal(run.step, 12);
    t.equal(run.stopped, false);
    const a = await run.finish();
    t.ok(a.meanCosine >= run.startAgreement!.meanCosine, `kept a student at least as good as the start (${run.startAgreement!.meanCosine.toFixed(4)} -> ${a.meanCosine.toFixed(4)})`);
    const saved = await run.save();
    t.ok(saved && existsSync(saved.path) && saved.bytes > 0);
    const r = run.result();
    t.equal(r.completed, true);
  } finally {
    await run.close();
  }
  const whole = await quantize({ ...opts, out: join(dir, 'whole.qfm') });
  const a = (await loadQfm(join(dir, 'staged.qfm'))).model.stateDict();
  const b = (await loadQfm(join(dir, 'whole.qfm'))).model.stateDict();
  t.same([...a.keys()], [...b.keys()]);
  let same = true;
  for (const [k, v] of a) if (!Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(b.get(k)!.data.buffer, b.get(k)!.data.byteOffset, b.get(k)!.data.byteLength))) same = false;
  t.ok(same, `staged and whole runs give bit-identical students (${a.size} tensors)`);
  t.ok(whole.completed);
});
