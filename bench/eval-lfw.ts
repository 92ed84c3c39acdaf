/**
 * LFW accuracy of the mobileface teacher through quantface's evaluation
 * pipeline (box crop lfw-funneled, flip-sum, insightface 10-fold), with
 * the time taken. Not a timing benchmark of kernels: run it under the
 * shared lock.
 *
 *   flock -s /tmp/qf-cpu.lock node --import tsx bench/eval-lfw.ts [--align landmarks] [--backend wasm|cpu] [--out DIR]
 *
 * Reads ../shared/data/lfw and ../shared/models/mobileface (relative to the
 * repository root); exits 0 with a message when they are absent.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runEval, type AlignOption } from '../lib/eval/run.js';
import { formatTable, writeReport } from '../lib/eval/report.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const lfw = join(root, '..', 'shared', 'data', 'lfw');
const model = join(root, '..', 'shared', 'models', 'mobileface', 'mobileface.json');
const arg = (name: string) => { const i = process.argv.indexOf(name); return i >= 0 ? process.argv[i + 1] : undefined; };

if (!existsSync(join(lfw, 'pairs.txt')) || !existsSync(model)) {
  console.log(`skipped: needs ${lfw}/pairs.txt and ${model}`);
  process.exit(0);
}
const align = (arg('--align') ?? 'lfw-funneled') as AlignOption;
const backend = (arg('--backend') ?? 'wasm') as 'wasm' | 'cpu';
const t0 = performance.now();
let last = 0;
const report = await runEval({
  models: [model],
  pairs: lfw,
  align,
  backend,
  batch: 32,
  onProgress: (p) => {
    if (p.done === p.total || Date.now() - last > 15000) { last = Date.now(); console.error(`  ${p.done}/${p.total} images, ${p.seconds.toFixed(0)} s`); }
  },
});
const wall = (performance.now() - t0) / 1000;
console.log(formatTable(report));
const m = report.models[0]!;
const reference = { accuracy: 0.8942, std: 0.0179 };
const diff = (m.accuracy! - reference.accuracy) * 100;
console.log(`\nmobileface LFW (${align}, ${backend}): accuracy ${m.accuracy!.toFixed(4)} +- ${m.std!.toFixed(4)}; reference harness ${reference.accuracy} +- ${reference.std}; difference ${diff.toFixed(2)} points (${Math.abs(diff) <= 0.3 ? 'within' : 'OUTSIDE'} 0.3)`);
console.log(`per fold: ${m.foldAccuracies!.map((a) => a.toFixed(4)).join(' ')}`);
console.log(`VAL@FAR=1e-3: ${m.val!.toFixed(4)} +- ${m.valStd!.toFixed(4)} (FAR ${m.far!.toFixed(5)}); AUC ${m.auc.toFixed(4)}`);
console.log(`time: ${wall.toFixed(1)} s total, ${m.embedSeconds.toFixed(1)} s in the model (${m.imagesPerSecond.toFixed(1)} forward passes/s, ${report.dataset.nImages} images x 2 with mirrors)`);
const out = arg('--out');
if (out) console.log(`report: ${(await writeReport(report, out)).html}`);
