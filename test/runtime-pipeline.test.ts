// The face pipeline (lib/runtime/pipeline.ts) on LFW photos from ../shared:
// - against a reference pipeline built here on onnxruntime-node (the same
//   three ONNX networks, the same decoding, resizing and post-processing
//   written out plainly): the same boxes, landmarks and embeddings;
// - against ../shared/data/lfw/landmarks-5pt.txt: its 5 points within a few
//   pixels, and LFW verification on a subset of pairs through the pipeline
//   close to the landmark-file alignment's;
// - photos with several faces, raw pixels = the same photo encoded, bad
//   photos (QuantFaceError codes, never a crash), the budget given back.
// Skips (with a comment) when ../shared or onnxruntime-node is absent.
import t from 'tap';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import sharp from 'sharp';
import { loadPipeline, cropGrey, landmarks68to5, type FacePipeline } from '../lib/runtime/pipeline.js';
import { inflightBudget } from '../lib/runtime/budget.js';
import { alignByLandmarks } from '../lib/data/align.js';
import { readLandmarks, readPairs, pairImagePath } from '../lib/eval/pairs.js';
import { roundCrop } from '../lib/runtime/input.js';
import { similarity } from '../lib/runtime/index.js';
import { isQuantFaceError } from '../lib/errors.js';
import { shared } from './fixtures/io/helpers.js';
import { tempDir } from './fixtures/tmp.js';

type Ort = typeof import('onnxruntime-node');
let ort: Ort | null = null;
try {
  ort = createRequire(import.meta.url)('onnxruntime-node') as Ort;
} catch (e) {
  t.comment(`onnxruntime-node unavailable: ${(e as Error).message}`);
}

const M = shared('models/faceplugin');
const LFW = shared('data/lfw');
if (!M || !LFW) {
  t.comment('../shared/models/faceplugin or ../shared/data/lfw absent: the pipeline tests are skipped');
} else {
  const tmp = tempDir(t, 'qf-pipeline-');
  const files = { detector: join(M, 'fr_detect.onnx'), landmarks: join(M, 'fr_landmark.onnx'), recognizer: join(M, 'fr_feature.onnx') };
  let pipe: FacePipeline;
  t.before(async () => {
    pipe = await loadPipeline({ ...files, threads: 1 });
  });
  t.teardown(() => pipe?.dispose());
  const lfw = (n: string): string => join(LFW, n);
  // A fresh sample of LFW photos on each run (QF_TEST_SEED repeats one).
  const seed = Number(process.env.QF_TEST_SEED ?? Date.now() % 100_000);
  t.comment(`seed ${seed}`);

  t.test('the pipeline equals a reference on onnxruntime-node', async (t) => {
    if (!ort) {
      t.comment('onnxruntime-node absent: skipped');
      return;
    }
    const o = { intraOpNumThreads: 1 };
    const [ds, ls, fs] = await Promise.all([ort.InferenceSession.create(files.detector, o), ort.InferenceSession.create(files.landmarks, o), ort.InferenceSession.create(files.recognizer, o)]);
    const lm = await readLandmarks(join(LFW, 'landmarks-5pt.txt'));
    const names = [...lm.keys()];
    const pick = [0, 1, 2, 3].map((k) => names[(seed * 7919 + k * 104_729) % names.length]!);
    for (const n of pick) {
      const { data, info } = await sharp(lfw(n)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      const img = { data: new Uint8Array(data), width: info.width, height: info.height };
      const small = new Uint8Array(await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).resize(320, 240, { fit: 'fill', kernel: 'linear' }).raw().toBuffer());
      const x = new Float32Array(3 * 240 * 320);
      for (let p = 0; p < 240 * 320; p++) for (let c = 0; c < 3; c++) x[c * 240 * 320 + p] = (small[p * 3 + c]! - 127) / 128;
      const r = await ds.run({ input: new ort.Tensor('float32', x, [1, 3, 240, 320]) });
      const sc = r.scores!.data as Float32Array;
      const bx = r.boxes!.data as Float32Array;
      const W = img.width;
      const H = img.height;
      const faces = await pipe.faces(lfw(n));
      t.ok(faces.length >= 1, `${n}: ${faces.length} face(s)`);
      const f = faces[0]!;
      // the prior whose decoded box is the pipeline's first face (several priors may score 1.0: NMS keeps one of them)
      const boxOf = (i: number): number[] => [bx[4 * i]! * W, bx[4 * i + 1]! * H, bx[4 * i + 2]! * W, bx[4 * i + 3]! * H];
      const gap = (i: number): number => {
        const q = boxOf(i);
        return Math.max(Math.abs(f.box.x - q[0]!), Math.abs(f.box.y - q[1]!), Math.abs(f.box.x + f.box.width - q[2]!), Math.abs(f.box.y + f.box.height - q[3]!));
      };
      let best = 0;
      for (let i = 1; i < sc.length / 2; i++) if (sc[2 * i + 1]! >= 0.65 && gap(i) < gap(best)) best = i;
      const b = boxOf(best);
      let top = 0;
      for (let i = 1; i < sc.length / 2; i++) if (sc[2 * i + 1]! > sc[2 * top + 1]!) top = i;
      t.ok(sc[2 * best + 1]! >= sc[2 * top + 1]! - 1e-5, `${n}: the first face is onnxruntime's top-scoring prior (${sc[2 * best + 1]!.toFixed(6)} vs ${sc[2 * top + 1]!.toFixed(6)})`);
      const db = Math.max(Math.abs(f.box.x - b[0]!), Math.abs(f.box.y - b[1]!), Math.abs(f.box.x + f.box.width - b[2]!), Math.abs(f.box.y + f.box.height - b[3]!));
      t.ok(db < 0.01, `${n}: box equals onnxruntime's best box (max |diff| ${db.toExponential(2)} px)`);
      t.ok(Math.abs(f.score - sc[2 * best + 1]!) < 1e-4, `${n}: score ${f.score.toFixed(4)}`);
      // landmark crop as reference-js: the box squared on its height, clipped
      const side = b[3]! - b[1]!;
      const cx = (b[0]! + b[2]!) / 2;
      const cy = (b[1]! + b[3]!) / 2;
      const x1 = Math.trunc(Math.max(0, cx - side / 2));
      const y1 = Math.trunc(Math.max(0, cy - side / 2));
      const w = Math.trunc(Math.min(W - 1, cx + side / 2)) - x1;
      const h = Math.trunc(Math.min(H - 1, cy + side / 2)) - y1;
      const grey = cropGrey(img, x1, y1, w, h, 64);
      const rl = await ls.run({ input: new ort.Tensor('float32', Float32Array.from(grey, (v) => v / 256), [1, 1, 64, 64]) });
      const l = rl.output!.data as Float32Array;
      const p68 = Array.from({ length: 136 }, (_, i) => (i % 2 ? l[i]! * h + y1 : l[i]! * w + x1));
      const dl = Math.max(...f.landmarks68.flatMap(([px, py], i) => [Math.abs(px - p68[2 * i]!), Math.abs(py - p68[2 * i + 1]!)]));
      t.ok(dl < 0.01, `${n}: 68 landmarks equal onnxruntime's (max |diff| ${dl.toExponential(2)} px)`);
      const p5 = landmarks68to5(p68).flat();
      const crop = roundCrop(alignByLandmarks(img, p5), new Uint8Array(112 * 112 * 3));
      const xf = new Float32Array(3 * 112 * 112);
      for (let p = 0; p < 112 * 112; p++) for (let c = 0; c < 3; c++) xf[c * 112 * 112 + p] = (crop[p * 3 + c]! - 127) / 128;
      const rf = await fs.run({ input: new ort.Tensor('float32', xf, [1, 3, 112, 112]) });
      const cos = similarity(f.embedding, rf.output!.data as Float32Array);
      t.ok(cos > 0.9999, `${n}: embedding = onnxruntime's on the same aligned crop (cosine ${cos.toFixed(6)})`);
    }
  });

  t.test('LFW: 5 points near the landmark file; verification on a subset of pairs', async (t) => {
    const lm = await readLandmarks(join(LFW, 'landmarks-5pt.txt'));
    const pairs = await readPairs(join(LFW, 'pairs.txt'));
    // 60 pairs, half same / half different, from a fold chosen by the seed
    const fold = seed % 10;
    const idx = [...Array.from({ length: 30 }, (_, k) => fold * 600 + k), ...Array.from({ length: 30 }, (_, k) => fold * 600 + 300 + k)];
    const viaPipe: number[] = [];
    const viaFile: number[] = [];
    const same: boolean[] = [];
    let dist = 0;
    let points = 0;
    let missed = 0;
    const emb = new Map<string, { p: Float32Array | null; f: Float32Array }>();
    const one = async (path: string): Promise<{ p: Float32Array | null; f: Float32Array }> => {
      const hit = emb.get(path);
      if (hit) return hit;
      const faces = await pipe.faces(path);
      const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      const img = { data: new Uint8Array(data), width: info.width, height: info.height };
      const key = path.slice(LFW.length + 1);
      const ref = lm.get(key)!;
      const [ff] = await pipe.recognizer!.embed([roundCrop(alignByLandmarks(img, ref), new Uint8Array(112 * 112 * 3))]);
      // the subject: the face nearest the image centre (LFW convention)
      const face = faces.length ? faces.reduce((a, b) => (Math.hypot(b.box.x + b.box.width / 2 - 125, b.box.y + b.box.height / 2 - 125) < Math.hypot(a.box.x + a.box.width / 2 - 125, a.box.y + a.box.height / 2 - 125) ? b : a)) : null;
      if (!face) missed++;
      else
        face.landmarks5.forEach(([x, y], i) => {
          dist += Math.hypot(x - ref[2 * i]!, y - ref[2 * i + 1]!);
          points++;
        });
      const r = { p: face ? face.embedding : null, f: ff! };
      emb.set(path, r);
      return r;
    };
    for (const k of idx) {
      const a = await one(pairImagePath(pairs, pairs.left[k]!));
      const b = await one(pairImagePath(pairs, pairs.right[k]!));
      same.push(pairs.issame[k]!);
      viaPipe.push(a.p && b.p ? similarity(a.p, b.p) : -1);
      viaFile.push(similarity(a.f, b.f));
    }
    const bestAcc = (s: number[]): number => {
      let best = 0;
      for (const th of s) best = Math.max(best, s.filter((v, i) => (v >= th) === same[i]).length / s.length);
      return best;
    };
    const meanDist = dist / points;
    t.comment(`fold ${fold}: ${emb.size} photos, ${missed} without a face; mean 5-point distance to the landmark file ${meanDist.toFixed(2)} px; best-threshold accuracy pipeline ${bestAcc(viaPipe).toFixed(3)}, landmark file ${bestAcc(viaFile).toFixed(3)}`);
    t.equal(missed, 0, 'a face in every photo');
    t.ok(meanDist < 4, `5 points within ${meanDist.toFixed(2)} px of the landmark file on average (< 4 px on 250x250 photos)`);
    t.ok(bestAcc(viaPipe) >= bestAcc(viaFile) - 0.05, 'verification accuracy within 5 points of the landmark-file alignment on 60 pairs');
  });

  t.test('several faces, raw pixels, options', async (t) => {
    // a 640x480 photo composed of three LFW photos
    const parts = ['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 'Abdoulaye_Wade/Abdoulaye_Wade_0002.jpg', 'AJ_Lamas/AJ_Lamas_0001.jpg'];
    const composite = await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 90, g: 110, b: 100 } } })
      .composite(await Promise.all(parts.map(async (p, i) => ({ input: await sharp(lfw(p)).resize(180, 180).toBuffer(), left: 20 + i * 210, top: i === 1 ? 260 : 40 }))))
      .jpeg({ quality: 92 })
      .toBuffer();
    const faces = await pipe.faces(composite);
    t.equal(faces.length, 3, `three faces found (${faces.map((f) => f.score.toFixed(3)).join(', ')})`);
    const centres = faces.map((f) => [f.box.x + f.box.width / 2, f.box.y + f.box.height / 2]).sort((a, b) => a[0]! - b[0]!);
    t.ok(centres.every(([x, y], i) => Math.abs(x! - (110 + i * 210)) < 40 && Math.abs(y! - (i === 1 ? 350 : 130)) < 50), 'each box on its photo');
    // each face matches the same photo processed alone
    for (const [i, p] of parts.entries()) {
      const alone = (await pipe.faces(lfw(p)))[0]!;
      const f = faces.reduce((a, b) => (Math.abs(b.box.x - (20 + i * 210)) < Math.abs(a.box.x - (20 + i * 210)) ? b : a));
      const s = similarity(alone.embedding, f.embedding);
      t.ok(s > 0.6, `${p}: same identity in the composite (cosine ${s.toFixed(3)})`);
    }
    t.equal((await pipe.faces(composite, { maxFaces: 2 })).length, 2, 'maxFaces');
    t.equal((await pipe.faces(composite, { minFaceSize: 400 })).length, 0, 'minFaceSize');
    // raw RGB = the decoded file
    const { data, info } = await sharp(lfw(parts[0]!)).raw().toBuffer({ resolveWithObject: true });
    const raw = await pipe.faces({ data: new Uint8Array(data), width: info.width, height: info.height });
    const enc = await pipe.faces(await readFile(lfw(parts[0]!)));
    t.same(raw.map((f) => f.box), enc.map((f) => f.box), 'raw pixels and encoded bytes give the same boxes');
    t.ok(similarity(raw[0]!.embedding, enc[0]!.embedding) > 0.99999, 'and the same embedding');
    const v = await pipe.verify(lfw('Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg'), lfw('Abdoulaye_Wade/Abdoulaye_Wade_0002.jpg'), { threshold: 0.3 });
    t.ok(v.match && v.similarity > 0.3, `verify: the same person (cosine ${v.similarity.toFixed(3)})`);
    const v2 = await pipe.verify(lfw('Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg'), lfw('Aaron_Eckhart/Aaron_Eckhart_0001.jpg'), { threshold: 0.3 });
    t.notOk(v2.match, `verify: two people (cosine ${v2.similarity.toFixed(3)})`);
  });

  t.test('bad photos: error codes, never a crash; the budget is given back', async (t) => {
    const good = await readFile(lfw('Aaron_Eckhart/Aaron_Eckhart_0001.jpg'));
    const empty = join(tmp, 'empty.jpg');
    await writeFile(empty, new Uint8Array(0));
    const truncated = join(tmp, 'trunc.jpg');
    await writeFile(truncated, good.subarray(0, 600));
    const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: unknown) => (isQuantFaceError(e) ? e.code : `not a QuantFaceError: ${String(e)}`));
    t.equal(await code(pipe.faces(new Uint8Array([1, 2, 3, 4, 5]))), 'E_FORMAT', 'random bytes');
    t.equal(await code(pipe.faces(empty)), 'E_FORMAT', 'an empty file');
    t.equal(await code(pipe.faces(truncated)), 'E_FORMAT', 'a truncated JPEG');
    t.equal(await code(pipe.faces(join(tmp, 'missing.jpg'))), 'E_IO', 'a missing file');
    t.equal(await code(pipe.faces(tmp)), 'E_IO', 'a folder');
    t.equal(await code(pipe.faces({ data: new Uint8Array(10), width: 5, height: 5 })), 'E_SHAPE', 'raw pixels of the wrong length');
    t.equal(await code(pipe.faces(null as never)), 'E_ARG', 'null');
    t.equal(await code(pipe.faces(good, { maxFaces: 0 })), 'E_ARG', 'maxFaces 0');
    const huge = await sharp({ create: { width: 9000, height: 5000, channels: 3, background: '#000' } }).png({ compressionLevel: 9 }).toBuffer();
    t.equal(await code(pipe.faces(huge)), 'E_SHAPE', 'over the pixel limit (header only)');
    const grey = await sharp({ create: { width: 300, height: 200, channels: 3, background: '#808080' } }).jpeg().toBuffer();
    t.same(await pipe.faces(grey), [], 'no face: []');
    t.equal(await code(pipe.verify(grey, good, { threshold: 0.3 })), 'E_NO_FACE', 'verify without a face');
    // fr_feature.onnx stores no threshold: the registry of known models gives one (LFW-fitted), also to its .qfm students
    const { KNOWN_MODELS_BY_SHA256 } = await import('../lib/io/known-models.js');
    const reg = Object.values(KNOWN_MODELS_BY_SHA256).find((k) => k.name === 'faceplugin-fr_feature')!.verifyThreshold!.cosine;
    t.equal(pipe.threshold, reg, 'the registry threshold of fr_feature.onnx');
    t.equal((await pipe.verify(good, good)).threshold, reg, 'verify uses it');
    const noRec = await loadPipeline({ ...files, recognizer: null });
    t.equal(await code(noRec.verify(good, good, { threshold: 0.3 })), 'E_ARG', 'verify without a recogniser');
    await noRec.dispose();
    const mobile = shared('models/mobileface/mobileface.json');
    if (mobile) {
      const p3 = await loadPipeline({ ...files, recognizer: mobile });
      t.equal(await code(p3.verify(good, good)), 'E_ARG', 'verify without a threshold (a recogniser with none stored or registered)');
      await p3.dispose();
    }
    const s = inflightBudget().stats();
    t.equal(s.bytes, 0, 'budget bytes given back');
    t.equal(s.pixels, 0, 'budget pixels given back');
    const p2 = await loadPipeline({ ...files });
    await p2.dispose();
    t.equal(await code(p2.faces(good)), 'E_CLOSED', 'after dispose');
  });
}
