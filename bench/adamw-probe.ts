/**
 * Why does AdamW diverge on the strong teacher (issue 12, item 3)? Drives
 * quantize()'s stages (lib/distill/run.ts) with the run that diverged —
 * faceplugin fr_feature W6A6, AdamW lr 1e-4 without weight decay, MSE
 * ranges, 100 calibration batches during training, 1200 steps of 64, the
 * kd augmentation, the 231 GAN faces aligned ffhq — with the guard off,
 * and records per step, for every trainable tensor, the relative update
 * |dw| / |w|, and every 25 steps the dead output channels (max |w| < 1e-4)
 * and, per weight tensor, its quantization step relative to its values.
 *
 *   flock -s /tmp/qf-cpu.lock node --import tsx bench/adamw-probe.ts \
 *     [--optimizer adamw|sgd] [--lr X] [--steps N] [--bits w6a6] [--out tmp/adamw-probe.jsonl] [--seed S] \
 *     [--calibration during|first] [--equalize] [--ste unmasked|clipped] [--eval-every N]
 *
 * Prints the loss / cosine / gradient-norm trace with the tensors that moved
 * most, and writes everything to the JSONL file.
 */
import { createWriteStream, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QuantizeRun } from '../lib/distill/run.js';
import { resolveQuantizeOptions } from '../lib/distill/settings.js';
import type { QuantizeOptions } from '../lib/distill/trainer.js';
import type { Parameter } from '../lib/nn/module.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const shared = join(root, '..', 'shared');
const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const teacherPath = join(shared, 'models', 'faceplugin', 'fr_feature.onnx');
if (!existsSync(teacherPath)) {
  console.log('adamw-probe: ../shared/models/faceplugin is absent; nothing to do');
  process.exit(0);
}
const outPath = arg('--out') ?? join(root, 'tmp', 'adamw-probe.jsonl');
const out = createWriteStream(outPath);
const options: QuantizeOptions = {
  teacher: teacherPath,
  data: join(shared, 'data', 'synthetic-faces'),
  align: 'ffhq',
  bits: (arg('--bits') ?? 'w6a6') as 'w6a6',
  recipe: 'quantface',
  calibration: (arg('--calibration') ?? 'during') as 'during',
  equalize: process.argv.includes('--equalize'),
  optimizer: (arg('--optimizer') ?? 'adamw') as 'adamw',
  lr: Number(arg('--lr') ?? 1e-4),
  weightDecay: 0,
  actRange: 'mse',
  steps: Number(arg('--steps') ?? 1200),
  batchSize: 64,
  calibSteps: 100,
  seed: Number(arg('--seed') ?? 0),
  augment: { flip: true, scale: 0.1, shift: 0.05, brightness: 0.2, contrast: 0.2, saturation: 0.2 },
  guard: false,
  keepBest: false,
  evalEvery: Number(arg('--eval-every') ?? 60),
  ste: (arg('--ste') ?? 'unmasked') as 'unmasked',
};
const weightBits = Number(/^w(\d)/.exec(String(options.bits))![1]);

const l2 = (a: Float32Array): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
};

let prev = new Map<string, Float32Array>();
let named: Array<[string, Parameter]> = [];
let heldOut = NaN;
const run = new QuantizeRun(resolveQuantizeOptions({
  ...options,
  onProgress: (p) => {
    if (p.agreement !== undefined) heldOut = p.agreement;
    if (p.phase !== 'train' || p.loss === undefined) return;
    // Relative update of every tensor since the last step.
    const rel: Array<[string, number, number]> = [];
    for (const [n, prm] of named) {
      const w = prm.data.data as Float32Array;
      const pw = prev.get(n)!;
      let d = 0;
      for (let i = 0; i < w.length; i++) d += (w[i]! - pw[i]!) ** 2;
      const nw = l2(pw);
      rel.push([n, Math.sqrt(d) / Math.max(nw, 1e-30), nw]);
      pw.set(w);
    }
    rel.sort((a, b) => b[1] - a[1]);
    const rec: Record<string, unknown> = { step: p.step, loss: p.loss, cosine: p.cosine, heldOut, lr: p.lr, top: rel.slice(0, 5).map(([n, r, nw]) => ({ n, r, norm: nw })) };
    if (p.step % 25 === 0 || p.step < 5) {
      // Dead output channels and how coarse each weight tensor's quantization is.
      let dead = 0;
      let channels = 0;
      const tensors: Array<{ n: string; norm: number; rel: number; deadCh: number; maxAbs: number; zeroFrac: number }> = [];
      // Per-channel min/max weight quantization: the share of a tensor's weights that round to zero.
      const qmax = 2 ** (weightBits - 1) - 1;
      for (const [n, prm] of named) {
        const t = prm.data;
        if (t.shape.length < 2) continue;
        const co = t.shape[0]!;
        const per = t.data.length / co;
        let dc = 0;
        let zeros = 0;
        let maxAbs = 0;
        for (let c = 0; c < co; c++) {
          let m = 0;
          for (let i = 0; i < per; i++) m = Math.max(m, Math.abs(t.data[c * per + i]!));
          if (m < 1e-4) dc++;
          else for (let i = 0; i < per; i++) if (Math.abs(t.data[c * per + i]!) < (0.5 * m) / qmax) zeros++;
          maxAbs = Math.max(maxAbs, m);
        }
        dead += dc;
        channels += co;
        tensors.push({ n, norm: l2(t.data as Float32Array), rel: rel.find((r) => r[0] === n)![1], deadCh: dc, maxAbs, zeroFrac: zeros / t.data.length });
      }
      rec.dead = dead;
      rec.channels = channels;
      rec.tensors = tensors;
      const zf = tensors.map((x) => x.zeroFrac).sort((a, b) => b - a);
      rec.zeroFracMean = zf.reduce((a, b) => a + b, 0) / zf.length;
      rec.zeroFracMax = zf[0];
    }
    out.write(`${JSON.stringify(rec)}\n`);
    if (p.step % 10 === 0 || (p.cosine ?? 1) < 0.8)
      console.log(`step ${p.step} loss ${p.loss.toExponential(3)} cos ${(p.cosine ?? NaN).toFixed(4)} held-out ${heldOut.toFixed(4)} | ${rel.slice(0, 3).map(([n, r]) => `${n} ${r.toExponential(2)}`).join(', ')}${rec.dead !== undefined ? ` | dead ${String(rec.dead)}/${String(rec.channels)}, weights at 0: mean ${(rec.zeroFracMean as number).toFixed(3)} max ${(rec.zeroFracMax as number).toFixed(3)}` : ''}`);
  },
}));
try {
  await run.loadTeacher();
  await run.openData();
  const S = await run.buildStudent();
  named = [...S.student.namedParameters()].filter(([, p]) => p.requiresGrad);
  prev = new Map(named.map(([n, p]) => [n, Float32Array.from(p.data.data as Float32Array)]));
  await run.restore();
  await run.prepareTargets();
  await run.calibrate();
  await run.train();
  console.log(`done: ${run.step} steps, last held-out ${heldOut.toFixed(4)}; per-step records in ${outPath}`);
} finally {
  await run.close();
  out.end();
}
