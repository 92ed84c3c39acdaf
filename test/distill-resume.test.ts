/**
 * Checkpoint / resume determinism: a run stopped (signal, as Ctrl-C does)
 * or crashed (an exception after a periodic checkpoint) and then resumed
 * ends with weights bit-identical to an uninterrupted run, with the
 * interruption before and after the activation ranges freeze, with the
 * cached-teacher path (flip only) and the per-batch teacher path (mixup),
 * with SGD and AdamW, with min/max, MSE-refined and learned activation
 * ranges. A checkpoint of another run is refused.
 */
import t, { type Test } from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { quantize, type QuantizeOptions } from '../lib/distill/trainer.js';
import type { Module } from '../lib/nn/module.js';
import { paintedFaces, tempDir, tinyTeacher } from './fixtures/distill/util.js';

const facesP = paintedFaces(t, 13, 21);
const K = 12;

function sameWeights(t: Test, a: Module, b: Module, what: string): void {
  const sa = a.stateDict();
  const sb = b.stateDict();
  t.same([...sa.keys()], [...sb.keys()], `${what}: same tensors`);
  let differing = 0;
  for (const [k, v] of sa) {
    const w = sb.get(k)!;
    if (!Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength))) differing++;
  }
  t.equal(differing, 0, `${what}: every weight and buffer bit-identical (${sa.size} tensors)`);
}

const variants: Array<{ name: string; opts: Partial<QuantizeOptions> }> = [
  { name: 'sgd, flip (cached teacher)', opts: {} },
  { name: 'sgd, mixup + jitter (teacher per batch)', opts: { augment: { flip: true, mixup: 0.5, scale: 0.1, shift: 0.05 } } },
  { name: 'adamw', opts: { optimizer: 'adamw', lr: 1e-3 } },
  { name: 'adamw, learned activation ranges', opts: { optimizer: 'adamw', lr: 1e-3, actRange: 'learned' } },
  { name: 'sgd, min/max ranges (the reference)', opts: { actRange: 'minmax' } },
];

for (const v of variants) {
  t.test(v.name, async (t) => {
    const faces = await facesP;
    const base: QuantizeOptions = { teacher: tinyTeacher(), data: faces, bits: 'w4a4', optimizer: 'sgd', steps: K, batchSize: 4, lr: 0.5, calibSteps: 5, holdout: 2, seed: 9, workers: 0, ...v.opts };
    const ref = await quantize(base);
    t.ok(ref.completed);
    const again = await quantize(base);
    sameWeights(t, ref.student, again.student, 'two fresh runs');

    for (const stopAt of [3, 8]) {
      const dir = tempDir(t, 'stop');
      const ckpt = join(dir, 'run.ckpt');
      const log = join(dir, 'log.jsonl');
      const ac = new AbortController();
      const a = await quantize({ ...base, checkpoint: ckpt, checkpointEvery: 0, log, signal: ac.signal, onProgress: (p) => { if (p.phase === 'train' && p.step === stopAt) ac.abort(); } });
      t.notOk(a.completed, `stopped at ${stopAt}`);
      t.equal(a.steps, stopAt);
      t.ok(existsSync(ckpt), 'checkpoint written on stop');
      const b = await quantize({ ...base, checkpoint: ckpt, log, resume: true });
      t.ok(b.completed);
      t.equal(b.resumedFrom, stopAt);
      sameWeights(t, ref.student, b.student, `stopped at step ${stopAt} (calibration ${stopAt < 5 ? 'running' : 'frozen'}) and resumed`);
      const events = readFileSync(log, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { event: string }).event);
      t.ok(events.includes('stopped') && events.includes('resume') && events.at(-1) === 'done', 'log records stop, resume and done');
    }

    // crash: an exception after the periodic checkpoint at step 8 (step 10 is lost), then resume
    const dir = tempDir(t, 'crash');
    const ckpt = join(dir, 'run.ckpt');
    await t.rejects(
      quantize({ ...base, checkpoint: ckpt, checkpointEvery: 4, onProgress: (p) => { if (p.phase === 'train' && p.step === 10) throw new Error('simulated crash'); } }),
      /simulated crash/,
    );
    t.ok(existsSync(ckpt));
    const c = await quantize({ ...base, checkpoint: ckpt, resume: true });
    t.equal(c.resumedFrom, 8, 'resumed from the last periodic checkpoint');
    sameWeights(t, ref.student, c.student, 'crashed at step 10 and resumed from step 8');
  });
}

t.test('a checkpoint of another run is refused; a missing one starts fresh', async (t) => {
  const faces = await facesP;
  const dir = tempDir(t, 'fp');
  const ckpt = join(dir, 'run.ckpt');
  const base: QuantizeOptions = { teacher: tinyTeacher(), data: faces, bits: 'w4a4', optimizer: 'sgd', steps: 6, batchSize: 4, lr: 0.5, calibSteps: 2, workers: 0, checkpoint: ckpt };
  const ac = new AbortController();
  await quantize({ ...base, signal: ac.signal, onProgress: (p) => { if (p.phase === 'train' && p.step === 2) ac.abort(); } });
  await t.rejects(quantize({ ...base, lr: 0.25, resume: true }), { code: 'E_ARG', message: /different lr/ });
  await t.rejects(quantize({ ...base, bits: 'w6a6', resume: true }), { code: 'E_ARG', message: /different bits/ });
  await t.rejects(quantize({ ...base, teacher: tinyTeacher(99), resume: true }), { code: 'E_ARG', message: /different teacher/ });
  const fresh = await quantize({ ...base, checkpoint: join(dir, 'none.ckpt'), resume: true });
  t.ok(fresh.completed);
  t.equal(fresh.resumedFrom, undefined, 'no checkpoint: a fresh run');
});
