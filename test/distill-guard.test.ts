/**
 * The trainer cannot silently ruin a student: a run driven into divergence
 * on purpose (a learning rate far too high) rolls back to the best student,
 * lowers the rate, says so in the log and the result, and saves the good
 * student; without the guard the same run ends ruined (or throws). The
 * best student is kept over the last one; weight decay defaults follow
 * whether the teacher has BatchNorm layers; recipes fill in options.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { quantize } from '../lib/distill/trainer.js';
import { applyRecipe, RECIPES } from '../lib/distill/recipes.js';
import { loadQfm } from '../lib/io/qfm.js';
import { Graph } from '../lib/nn/containers.js';
import { BatchNorm2d, Conv2d, Flatten, Linear, PReLU } from '../lib/nn/layers.js';
import { Rng, Tensor, type FTensor } from '../lib/tensor.js';
import { noGrad } from '../lib/nn/module.js';
import { paintedFaces, tempDir, tinyTeacher } from './fixtures/distill/util.js';
import { rowCosines } from './fixtures/runtime-faces.js';

const facesP = paintedFaces(t, 14, 21);

function readLog(p: string): Record<string, unknown>[] {
  return readFileSync(p, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

t.test('a divergence is rolled back: the saved student is the good one; unguarded, the same run is ruined', async (t) => {
  const faces = await facesP;
  const dir = tempDir(t, 'guard');
  // lr 1e4 with the gradient clipped at norm 5: steps of norm up to 5e4 wreck the student.
  const common = { data: faces, bits: 'w8a8', steps: 24, batchSize: 4, lr: 1e4, calibSteps: 3, holdout: 4, seed: 2, workers: 0, evalEvery: 2 } as const;
  const out = join(dir, 'guarded.qfm');
  const logPath = join(dir, 'guarded.jsonl');
  const messages: string[] = [];
  const r = await quantize({ ...common, teacher: tinyTeacher(), out, log: logPath, onProgress: (p) => { if (p.message) messages.push(p.message); } });
  t.ok(r.completed, 'the run completes');
  t.ok(r.startAgreement, 'the PTQ start was measured');
  const start = r.startAgreement!.meanCosine;
  t.ok(start > 0.99, `W8A8 PTQ start agrees with the teacher (${start.toFixed(4)})`);
  t.ok(r.rollbacks.length >= 1, `${r.rollbacks.length} divergence(s) rolled back`);
  t.ok(r.rollbacks.every((x, i) => Math.abs(x.lrFactor - 0.3 ** (i + 1)) < 1e-12), 'the learning rate falls x0.3 per rollback');
  t.ok(r.agreement!.meanCosine >= start - 1e-6, `saved student ${r.agreement!.meanCosine.toFixed(4)} >= PTQ start ${start.toFixed(4)}`);
  const log = readLog(logPath);
  const rb = log.filter((l) => l.event === 'rollback');
  t.equal(rb.length, r.rollbacks.length, 'each rollback is logged');
  t.match(String(rb[0]!.reason), /held-out cos|loss/, 'with its reason');
  t.ok(messages.some((m) => /^warning: training diverged at step \d+ .*rolled back to the student of step \d+/.test(m)), 'the user is told');

  // The saved file holds the good student: its embeddings agree with the teacher's on the held-out-size check.
  const saved = await loadQfm(out);
  const teacher = tinyTeacher();
  const x = Tensor.randn([6, 112, 112, 3], new Rng(9), 0.5) as FTensor;
  const cs = rowCosines(noGrad(() => saved.model.forward(x).clone() as FTensor).data, noGrad(() => teacher.forward(x).clone() as FTensor).data, 6, 32).mean;
  t.ok(cs > 0.95, `the saved student agrees with the teacher on fresh inputs (${cs.toFixed(4)})`);
  const notes = saved.provenance?.notes as Record<string, unknown> | undefined;
  t.ok(Array.isArray(notes?.rollbacks) && (notes!.rollbacks as unknown[]).length === r.rollbacks.length, 'the .qfm records the rollbacks');

  // Unguarded and keeping the last student: ruined, or stopped by the non-finite loss.
  let ruined: number | string;
  try {
    const u = await quantize({ ...common, teacher: tinyTeacher(), guard: false, keepBest: false });
    ruined = u.agreement!.meanCosine;
    t.equal(u.rollbacks.length, 0, 'no rollback without the guard');
  } catch (e) {
    ruined = (e as { code?: string }).code ?? String(e);
  }
  t.ok(typeof ruined === 'string' ? ruined === 'E_INTERNAL' : ruined < r.agreement!.meanCosine - 0.05, `unguarded: ${typeof ruined === 'number' ? ruined.toFixed(4) : ruined}`);
});

t.test('keepBest: the saved student is the best evaluated one, not the last', async (t) => {
  const faces = await facesP;
  // A rate high enough to wander but not to trip the guard every time: compare against the log's evaluations.
  const logPath = join(tempDir(t, 'best'), 'log.jsonl');
  const r = await quantize({ teacher: tinyTeacher(), data: faces, bits: 'w4a4', steps: 30, batchSize: 4, lr: 20, calibSteps: 3, holdout: 4, seed: 3, workers: 0, evalEvery: 3, log: logPath, guard: false });
  const evals = readLog(logPath).filter((l) => l.event === 'eval' && typeof l.step === 'number' && (l.step as number) <= 30);
  const bestSeen = Math.max(...evals.map((l) => l.meanCosine as number));
  t.ok(Math.abs(r.agreement!.meanCosine - bestSeen) < 1e-6, `saved ${r.agreement!.meanCosine.toFixed(5)} = best evaluated ${bestSeen.toFixed(5)}`);
  // lr 20 makes the student wander: the last evaluation is worse than the best one, which must be the saved one.
  const last = evals.find((l) => l.step === 30)!;
  t.ok(r.bestStep !== undefined && r.bestStep < 30, `an earlier student was kept (step ${String(r.bestStep)})`);
  t.ok((last.meanCosine as number) < bestSeen, `the last (${(last.meanCosine as number).toFixed(4)}) was worse than the kept one`);
});

t.test('weight decay: off by default for a BatchNorm-folded teacher, the paper value with BatchNorm; explicit wins', async (t) => {
  const faces = await facesP;
  const run = async (teacher: import('../lib/nn/module.js').Module, extra: { weightDecay?: number } = {}): Promise<number> => {
    const logPath = join(tempDir(t, 'wd'), 'log.jsonl');
    await quantize({ teacher, data: faces, bits: 'w8a8', steps: 1, batchSize: 4, calibSteps: 1, holdout: 2, workers: 0, log: logPath, ...extra });
    return readLog(logPath).find((l) => l.event === 'start')!.weightDecay as number;
  };
  const rng = new Rng(5);
  const withBn = new Graph(['input'])
    .add('conv1', new Conv2d(3, 8, 3, { stride: 4, padding: 1, bias: false, rng }))
    .add('bn1', new BatchNorm2d(8))
    .add('act1', new PReLU(8, 0.25))
    .add('flat', new Flatten())
    .add('fc', new Linear(28 * 28 * 8, 16, { bias: false, rng }))
    .eval();
  t.equal(await run(tinyTeacher()), 0, 'folded (no BatchNorm): 0');
  t.equal(await run(withBn), 5e-4, 'with BatchNorm: 5e-4');
  t.equal(await run(tinyTeacher(), { weightDecay: 1e-4 }), 1e-4, 'explicit value kept');
});

t.test('recipes: defaults filled in, explicit options win, unknown names refused', async (t) => {
  const kd = applyRecipe({ data: 'x' });
  t.equal(kd.recipe, 'kd');
  t.equal(kd.calibration, 'first');
  t.equal(kd.actRange, 'mse');
  const q = applyRecipe({ data: 'x', recipe: 'quantface', steps: 10, actRange: 'mse' });
  t.equal(q.calibration, 'during');
  t.equal(q.steps, 10, 'explicit steps win');
  t.equal(q.actRange, 'mse', 'explicit actRange wins');
  t.equal(applyRecipe({ data: 'x', recipe: 'quantface', epochs: 2 }).steps, undefined, 'epochs replace the recipe steps');
  t.same(Object.keys(RECIPES).sort(), ['kd', 'quantface']);
  t.throws(() => applyRecipe({ data: 'x', recipe: 'nope' as 'kd' }), { code: 'E_ARG' });
  const faces = await facesP;
  await t.rejects(quantize({ teacher: tinyTeacher(), data: faces, guard: { lrFactor: 2 } }), { code: 'E_ARG' }, 'guard lrFactor >= 1 refused');
  await t.rejects(quantize({ teacher: tinyTeacher(), data: faces, calibration: 'later' as 'first' }), { code: 'E_ARG' });
});
