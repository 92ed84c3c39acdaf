/**
 * Data-loader throughput on the 231 synthetic faces (256x256 JPEG, ffhq
 * box -> 112x112): images/s of one epoch (batches of 32, prefetch 3) for
 * 0 (main thread), 1 and 2 worker threads, median of several epochs after
 * a warm-up epoch; "cores busy" = process CPU time / wall time (all threads).
 *
 *   decode+align          no cache: every image decoded, cropped, flipped
 *   decode+align+augment  no cache: + scale/shift/colour jitter + mixup 0.5 (a mixed sample decodes 2 images)
 *   cached+flip+colour    aligned crops cached in memory: only augmentation
 *   cached+full augment   decoded images cached: crop with jitter + colour + mixup
 *   cached+full, 20 ms step  the same while the consumer keeps the main thread busy
 *                         20 ms per batch (a synchronous training step): 12 batches = 0.16 s of
 *                         steps per epoch, so 1443 images/s is the ceiling with perfect overlap
 *
 * Run alone on the machine (timing):
 *   flock -x /tmp/qf-cpu.lock node --import tsx bench/data.ts [--reps 5] [--data DIR]
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageFolder, type AugmentOptions } from '../lib/data/index.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dataDir = arg('--data', join(root, '..', 'shared', 'data', 'synthetic-faces'));
const reps = Number(arg('--reps', '5'));
if (!existsSync(dataDir)) {
  console.log(`skipped: ${dataDir} is absent (the benchmark reads ../shared/data/synthetic-faces)`);
  process.exit(0);
}

const FULL: AugmentOptions = { flip: true, scale: 0.1, shift: 0.05, brightness: 0.2, contrast: 0.2, saturation: 0.2, mixup: 0.5 };
const configs: { name: string; augment: AugmentOptions; cacheBytes?: number; stepMs?: number }[] = [
  { name: 'decode+align', augment: { flip: true }, cacheBytes: 0 },
  { name: 'decode+align+augment', augment: FULL, cacheBytes: 0 },
  { name: 'cached+flip+colour', augment: { flip: true, brightness: 0.2, contrast: 0.2, saturation: 0.2 } },
  { name: 'cached+full augment', augment: FULL },
  // the consumer holds the main thread 20 ms per batch (a stand-in for a training step): workers overlap with it
  { name: 'cached+full, 20 ms step', augment: FULL, stepMs: 20 },
];

const median = (x: number[]): number => {
  const s = [...x].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const ds = await ImageFolder.open(dataDir, { align: 'ffhq' });
console.log(`data: ${dataDir} (${ds.length} images), align ffhq -> 112x112, batch 32, prefetch 3, ${reps} epochs (median)`);
const rows: string[][] = [['config', 'workers', 'ready() s', 'images/s', 'min..max', 'cores busy']];
for (const cfg of configs) {
  for (const workers of [0, 1, 2]) {
    const ld = ds.loader({ batchSize: 32, seed: 1, workers, augment: cfg.augment, ...(cfg.cacheBytes !== undefined ? { cacheBytes: cfg.cacheBytes } : {}) });
    const info = await ld.ready();
    const rates: number[] = [];
    const busy: number[] = [];
    for (let e = 0; e <= reps; e++) {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      let n = 0;
      for await (const b of ld.epoch(e)) {
        n += b.n;
        if (cfg.stepMs) { const until = performance.now() + cfg.stepMs; while (performance.now() < until) { /* busy */ } }
      }
      const c1 = process.cpuUsage(c0);
      const sec = (performance.now() - t0) / 1000;
      if (e > 0) { rates.push(n / sec); busy.push((c1.user + c1.system) / 1e6 / sec); } // epoch 0 warms up the JIT
    }
    await ld.close();
    rows.push([cfg.name, String(workers), info.seconds.toFixed(2), median(rates).toFixed(0), `${Math.min(...rates).toFixed(0)}..${Math.max(...rates).toFixed(0)}`, median(busy).toFixed(2)]);
  }
}
const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
for (const r of rows) console.log(r.map((v, c) => (c === 0 ? v.padEnd(w[c]!) : v.padStart(w[c]!))).join('  '));
