// npm run bench:pipeline-int8 — the int8 detector and landmark networks
// (quantface quantize-pipeline) against the float ones on the same photos:
// per photo, each float face is matched to the int8 face of highest IoU.
//
//   flock -s /tmp/qf-cpu.lock node --import tsx bench/pipeline-int8.ts --int8 DIR [--lfw 1000] [--composites 100] [--seed 1]
//
// Photos: --lfw LFW images (../shared/data/lfw, 250x250, chosen by seed) and
// --composites 640x480 group photos composed from other LFW images
// (composePhotos, 1-4 faces). Reports, per set: faces found by each, mean
// IoU of matched float faces, recall at IoU 0.5 (float faces with an int8
// face of IoU >= 0.5), precision at IoU 0.5 (int8 faces with a float face),
// the landmark error of matched faces (mean distance of the 5 and the 68
// points, pixels, and as a share of the inter-ocular distance), and the
// landmark error with the int8 landmark net alone (on the float boxes).
import { readdirSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../lib/binding.js';
import { Rng } from '../lib/tensor.js';
import { loadPipeline, type Face } from '../lib/runtime/pipeline.js';
import { composePhotos } from '../lib/runtime/pipeline-quant.js';

const argv = process.argv.slice(2);
const arg = (k: string, d: string): string => {
  const i = argv.indexOf(k);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : d;
};
const SHARED = join(packageRoot, '..', 'shared');
const M = join(SHARED, 'models/faceplugin');
const LFW = join(SHARED, 'data/lfw');
const int8 = arg('--int8', '');
if (!int8) throw new Error('--int8 DIR (from quantface quantize-pipeline) is required');
const nLfw = Number(arg('--lfw', '1000'));
const nComp = Number(arg('--composites', '100'));
const seed = Number(arg('--seed', '1'));

const all: string[] = [];
for (const d of readdirSync(LFW).filter((x) => !x.includes('.')).sort()) for (const f of readdirSync(join(LFW, d)).sort()) if (f.endsWith('.jpg')) all.push(join(LFW, d, f));
const rng = new Rng(seed);
for (let i = all.length - 1; i > 0; i--) {
  const j = Math.floor(rng.uniform() * (i + 1));
  [all[i], all[j]] = [all[j]!, all[i]!];
}
const lfw = all.slice(0, nLfw);
// composites from other LFW images: the central 160x160 of each (its background faces stay out)
const sharp = (await import('sharp')).default;
const centres = await Promise.all(all.slice(nLfw, nLfw + 4 * nComp).map((f) => sharp(f).extract({ left: 45, top: 45, width: 160, height: 160 }).toBuffer()));
const comps = nComp ? await composePhotos(centres, { count: nComp, seed }) : [];

const fp = await loadPipeline({ detector: join(M, 'fr_detect.onnx'), landmarks: join(M, 'fr_landmark.onnx'), recognizer: null, threads: 1 });
const q = await loadPipeline({ detector: join(int8, 'detector.qfm'), landmarks: join(int8, 'landmarks.qfm'), recognizer: null, threads: 1 });
const qLmkOnly = await loadPipeline({ detector: join(M, 'fr_detect.onnx'), landmarks: join(int8, 'landmarks.qfm'), recognizer: null, threads: 1 });

const iou = (a: Face['box'], b: Face['box']): number => {
  const iw = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
  const ih = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
  if (iw <= 0 || ih <= 0) return 0;
  const i = iw * ih;
  return i / (a.width * a.height + b.width * b.height - i);
};
const dist = (a: Array<[number, number]>, b: Array<[number, number]>): number => a.reduce((s, p, i) => s + Math.hypot(p[0] - b[i]![0], p[1] - b[i]![1]), 0) / a.length;
const iod = (f: Face): number => Math.hypot(f.landmarks5[0]![0] - f.landmarks5[1]![0], f.landmarks5[0]![1] - f.landmarks5[1]![1]);

async function measure(name: string, photos: Array<string | Buffer>): Promise<Record<string, number | string>> {
  let nf = 0, nq = 0, matched = 0, iouSum = 0, iouMatchedSum = 0, qMatched = 0, l5 = 0, l68 = 0, l5n = 0, lo5 = 0, lo68 = 0, lon = 0, loN = 0, missing = 0, same = 0;
  for (const p of photos) {
    const a = await fp.faces(p, { embed: false });
    const b = await q.faces(p, { embed: false });
    const c = await qLmkOnly.faces(p, { embed: false });
    nf += a.length;
    nq += b.length;
    if (a.length === b.length) same++;
    if (a.length && !b.length) missing++;
    for (const f of a) {
      let best = 0;
      let bf: Face | undefined;
      for (const g of b) {
        const v = iou(f.box, g.box);
        if (v > best) [best, bf] = [v, g];
      }
      iouSum += best;
      if (best >= 0.5 && bf) {
        matched++;
        iouMatchedSum += best;
        l5 += dist(f.landmarks5, bf.landmarks5);
        l68 += dist(f.landmarks68, bf.landmarks68);
        l5n += dist(f.landmarks5, bf.landmarks5) / iod(f);
      }
    }
    for (const g of b) if (a.some((f) => iou(f.box, g.box) >= 0.5)) qMatched++;
    // landmark net alone: same float boxes, so faces pair up in order
    if (c.length === a.length)
      a.forEach((f, i) => {
        lo5 += dist(f.landmarks5, c[i]!.landmarks5);
        lo68 += dist(f.landmarks68, c[i]!.landmarks68);
        lon += dist(f.landmarks5, c[i]!.landmarks5) / iod(f);
        loN++;
      });
  }
  return {
    set: name,
    photos: photos.length,
    floatFaces: nf,
    int8Faces: nq,
    photosSameCount: same,
    photosWithFaceLostByInt8: missing,
    meanIoU: iouSum / nf,
    meanIoUMatched: iouMatchedSum / Math.max(1, matched),
    recallIoU50: matched / nf,
    precisionIoU50: qMatched / Math.max(1, nq),
    lmk5PxPipeline: l5 / Math.max(1, matched),
    lmk68PxPipeline: l68 / Math.max(1, matched),
    lmk5OverIodPipeline: l5n / Math.max(1, matched),
    lmk5PxLandmarkNetOnly: lo5 / Math.max(1, loN),
    lmk68PxLandmarkNetOnly: lo68 / Math.max(1, loN),
    lmk5OverIodLandmarkNetOnly: lon / Math.max(1, loN),
  };
}

const rows = [await measure(`LFW 250x250 (${lfw.length}, seed ${seed})`, lfw)];
if (comps.length) rows.push(await measure(`640x480 composites of LFW faces (${comps.length}, seed ${seed})`, comps));
for (const r of rows) {
  console.log(`\n${r.set}`);
  for (const [k, v] of Object.entries(r)) if (k !== 'set') console.log(`  ${k.padEnd(28)} ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(4) : v}`);
}
const dir = join(packageRoot, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `pipeline-int8-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ int8, seed, rows }, null, 2));
console.log(`wrote ${file}`);
await Promise.all([fp.dispose(), q.dispose(), qLmkOnly.dispose()]);
