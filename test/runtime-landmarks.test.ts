// 5-point landmarks everywhere (issue 14 item 6): model.embed({ image,
// landmarks }) and `quantface embed --landmarks FILE` warp each face to the
// model's template through the runtime's bounded region decode, and give the
// embedding of the crop `quantface eval --align landmarks` produces.
import t from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import sharp from 'sharp';
import { loadModel } from '../lib/runtime/index.js';
import { embedCommand, landmarksForImages } from '../lib/cli/embed.js';
import { saveQfm } from '../lib/io/index.js';
import { IResNet } from '../lib/models/index.js';
import { ARCFACE_TEMPLATE, alignByLandmarks, decodeImage } from '../lib/data/align.js';
import { readLandmarks, readPairs } from '../lib/eval/pairs.js';
import { pairsVerificationSet, type AlignChoice } from '../lib/eval/verify.js';
import { loadEmbedder } from '../lib/eval/embedder.js';
import { roundCrop } from '../lib/runtime/input.js';
import { QuantFaceError } from '../lib/errors.js';
import type { ModelInfo } from '../lib/io/model-info.js';
import { mulberry32 } from './fixtures/eval/util.js';
import { sharedDir } from './fixtures/distill/util.js';
import { tempDir } from './fixtures/tmp.js';
import { Writable } from 'node:stream';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void { this.text += chunk.toString(); cb(); }
}

const dir = tempDir(t, 'qf-landmarks-');
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

/** A textured 200x180 photo (smooth gradients + noise), fresh per seed. */
async function photo(name: string, seed: number): Promise<{ path: string; w: number; h: number; data: Uint8Array }> {
  const rnd = mulberry32(seed);
  const w = 200, h = 180;
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) {
    data[(y * w + x) * 3 + c] = Math.min(255, Math.floor(128 + 90 * Math.sin((x * (c + 1)) / 17 + y / 23 + seed) + 30 * rnd()));
  }
  const path = join(dir, name);
  await sharp(data, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path);
  return { path, w, h, data };
}

// A template that is not ArcFace's (points of the 112x112 crop), recorded in the student's .qfm.
const TEMPLATE: Array<[number, number]> = [[36, 48], [76, 49], [56, 70], [40, 90], [72, 91]];
const LM = [70.3, 72.1, 121.8, 69.4, 97.2, 101.6, 76.5, 128.9, 118.4, 126.7]; // a tilted face in the photo

t.test('embed({ image, landmarks }) warps to the template the model records (tiny student, fresh image)', async (t) => {
  const m = new IResNet([1, 1, 1, 1], { widths: [8, 16, 16, 32], numFeatures: 32, seed: 21 });
  m.eval();
  const info: ModelInfo = {
    name: 'tiny', format: 'qfm', inputShape: [112, 112, 3], outputDim: 32, normalizedOutput: false,
    preprocessing: { colorOrder: 'RGB', normalize: { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] } },
    alignment: { kind: 'template', points: TEMPLATE, name: 'test' },
  };
  const file = join(dir, 'tiny.qfm');
  await saveQfm(m, file, { info });
  const model = await loadModel(file);
  t.same(model.template, TEMPLATE, 'the model reports its recorded template');
  const img = await photo('a.png', 5);
  // reference: lib/data's warp of the whole decoded image onto the recorded template, rounded to bytes
  const whole = await decodeImage(img.path);
  const refCrop = roundCrop(alignByLandmarks(whole, LM, TEMPLATE, 112), new Uint8Array(112 * 112 * 3));
  const ref = model.embedSync(refCrop) as Float32Array;
  const got = await model.embed({ image: img.path, landmarks: LM });
  t.equal(maxAbs(got, ref), 0, 'file path + landmarks: the same embedding as the crop of the whole image (max abs diff 0)');
  const fromBytes = await model.embed({ image: new Uint8Array(await sharp(img.path).png().toBuffer()), landmarks: Float64Array.from(LM) });
  t.equal(maxAbs(fromBytes, ref), 0, 'encoded bytes + a Float64Array of landmarks: the same');
  const raw = { data: img.data, width: img.w, height: img.h };
  t.equal(maxAbs(await model.embed({ image: raw, landmarks: LM }), ref), 0, 'decoded pixels: the same');
  t.equal(maxAbs(model.embedSync({ image: raw, landmarks: LM }) as Float32Array, ref), 0, 'embedSync with decoded pixels: the same');
  // align: { kind: 'landmarks' } without a template also takes the model's
  t.equal(maxAbs(await model.embed(img.path, { align: { kind: 'landmarks', landmarks: LM } }), ref), 0, "align { kind: 'landmarks' } uses the model's template too");
  // and the template matters: the ArcFace template gives another embedding
  const arc = model.embedSync(roundCrop(alignByLandmarks(whole, LM, ARCFACE_TEMPLATE, 112), new Uint8Array(112 * 112 * 3))) as Float32Array;
  const dArc = maxAbs(arc, ref);
  t.ok(dArc > 1e-3, `the ArcFace template gives a different embedding (max abs diff ${dArc.toExponential(2)}): the model's template was used`);
  // a batch mixing inputs keeps order
  const [b0, b1, b2] = await model.embed([{ image: img.path, landmarks: LM }, refCrop, { image: raw, landmarks: LM }]);
  t.ok(maxAbs(b0!, ref) === 0 && maxAbs(b1!, ref) === 0 && maxAbs(b2!, ref) === 0, 'a batch of landmark and crop inputs');

  // bad landmarks: clear QuantFaceErrors, nothing embedded
  const bad: Array<[string, unknown, string, RegExp]> = [
    ['9 numbers', LM.slice(0, 9), 'E_SHAPE', /10 numbers.*got 9/],
    ['11 numbers', [...LM, 1], 'E_SHAPE', /got 11/],
    ['NaN', LM.map((v, i) => (i === 3 ? NaN : v)), 'E_ARG', /landmark 3 is not a finite number/],
    ['Infinity', LM.map((v, i) => (i === 0 ? Infinity : v)), 'E_ARG', /landmark 0 is not a finite number/],
    ['a string', 'left eye', 'E_ARG', /must be an array of 10 numbers/],
    ['null', null, 'E_ARG', /must be an array of 10 numbers .*\(got null\)/],
    ['strings in the array', LM.map(String), 'E_ARG', /landmark 0 is not a number/],
    ['all five at one point', [50, 50, 50, 50, 50, 50, 50, 50, 50, 50], 'E_ARG', /coincide|invalid|singular/],
    ['far outside the image', LM.map((v) => v + 5000), 'E_ARG', /outside the 200x180 image/],
    ['far left and above', LM.map((v) => v - 400), 'E_ARG', /outside the 200x180 image/],
  ];
  for (const [what, lm, code, re] of bad) {
    await t.rejects(model.embed({ image: img.path, landmarks: lm as never }), { code, message: re }, `${what}: ${code}`);
    t.throws(() => model.embedSync({ image: raw, landmarks: lm as never }), { code }, `${what}: embedSync ${code}`);
  }
  const e = await model.embed({ image: img.path, landmarks: [1, 2] }).catch((x: unknown) => x);
  t.ok(e instanceof QuantFaceError, 'a QuantFaceError');
  await t.rejects(model.embed({ image: refCrop, landmarks: LM }), { code: 'E_FORMAT', message: /not a raw crop/ }, 'a raw crop is no image to warp: refused, not embedded unwarped');
  await t.rejects(model.embed({ image: new Float32Array(112 * 112 * 3) as never, landmarks: LM }), { code: 'E_ARG', message: /aligned crop/ }, 'a Float32Array crop refused');
  await t.rejects(model.embed({ image: join(dir, 'missing.png'), landmarks: LM }), { code: 'E_IO' }, 'a missing file: E_IO');
  // landmarks near (not beyond) the border are fine: the crop is padded with black as cv2.warpAffine does
  const edge = LM.map((v, i) => (i % 2 === 0 ? v - 60 : v));
  const ge = await model.embed({ image: img.path, landmarks: edge });
  const re = model.embedSync(roundCrop(alignByLandmarks(whole, edge, TEMPLATE, 112), new Uint8Array(112 * 112 * 3))) as Float32Array;
  t.equal(maxAbs(ge, re), 0, 'a face at the left edge: the same as the whole-image warp');
  await model.dispose();
});

t.test('embed --landmarks FILE: the same embeddings as embed({ image, landmarks }); file errors', async (t) => {
  const m = new IResNet([1, 1, 1, 1], { widths: [8, 16, 16, 32], numFeatures: 32, seed: 22 });
  m.eval();
  const file = join(dir, 'cli.qfm');
  await saveQfm(m, file);
  const a = await photo('c1.png', 7), b = await photo('c2.png', 8);
  const lmB = LM.map((v, i) => v + (i % 2 ? 3 : -4));
  // eval's landmarks file convention: continuous coordinates (pixel i spans [i, i+1]) -> +0.5 here
  const lmFile = join(dir, 'lm.txt');
  writeFileSync(lmFile, `# name x1 y1 ... x5 y5 [score]\n${relative(dir, a.path)} ${LM.map((v) => v + 0.5).join(' ')}\n${relative(dir, b.path)} ${lmB.map((v) => v + 0.5).join(' ')} 0.99\n`);
  const model = await loadModel(file);
  t.equal(model.template, undefined, 'a .qfm that records no template: the ArcFace one');
  const want = [await model.embed({ image: a.path, landmarks: LM }), await model.embed({ image: b.path, landmarks: lmB })];
  const wantArc = model.embedSync(roundCrop(alignByLandmarks(await decodeImage(a.path), LM, ARCFACE_TEMPLATE, 112), new Uint8Array(112 * 112 * 3))) as Float32Array;
  t.equal(maxAbs(want[0]!, wantArc), 0, 'no recorded template: warped to the ArcFace template');
  await model.dispose();
  const sink = new Sink();
  await embedCommand([a.path, b.path], { model: file, landmarks: lmFile }, sink);
  const rows = sink.text.trim().split('\n').map((l) => JSON.parse(l) as { image: string; embedding: number[] });
  const f7 = (x: number) => Number(x.toPrecision(7));
  t.same(rows[0]!.embedding, Array.from(want[0]!, f7), 'image 1: the CLI prints embed({ image, landmarks })');
  t.same(rows[1]!.embedding, Array.from(want[1]!, f7), 'image 2 (a line with a trailing score): the same');
  // bare lines, in image order
  const bareFile = join(dir, 'bare.txt');
  writeFileSync(bareFile, `${LM.map((v) => v + 0.5).join(' ')}\n${lmB.map((v) => v + 0.5).join(' ')}\n`);
  const s2 = new Sink();
  await embedCommand([a.path, b.path], { model: file, landmarks: bareFile }, s2);
  t.equal(s2.text, sink.text, 'bare lines in image order: the same output');
  // matching by trailing path and by the path relative to the file
  const got = await landmarksForImages(lmFile, [relative(process.cwd(), b.path), a.path]);
  t.ok(maxAbs(got[0]!, lmB) < 1e-9 && maxAbs(got[1]!, LM) < 1e-9, 'matched by a path relative to the cwd and by an absolute path; pixel-index coordinates (file - 0.5)');
  // errors
  await t.rejects(embedCommand([a.path, join(dir, 'other.png')], { model: file, landmarks: lmFile }, new Sink()), { code: 'E_ARG', message: /no landmarks for .*other\.png/ });
  await t.rejects(embedCommand([a.path], { model: file, landmarks: lmFile, align: 'ffhq' }, new Sink()), { code: 'E_ARG', message: /leave --align out/ });
  await t.rejects(embedCommand([a.path], { model: file, landmarks: join(dir, 'nope.txt') }, new Sink()), { code: 'E_IO' });
  await t.rejects(embedCommand([a.path], { model: file, landmarks: bareFile }, new Sink()), { code: 'E_ARG', message: /2 bare landmark lines for 1 images/ });
  const badFile = join(dir, 'bad.txt');
  writeFileSync(badFile, `${relative(dir, a.path)} 1 2 3 x 5 6 7 8 9 10\n`);
  await t.rejects(embedCommand([a.path], { model: file, landmarks: badFile }, new Sink()), { code: 'E_FORMAT', message: /bad\.txt:1: 'x' is not a number/ });
  writeFileSync(badFile, `${relative(dir, a.path)} 1 2 3\n`);
  await t.rejects(embedCommand([a.path], { model: file, landmarks: badFile }, new Sink()), { code: 'E_FORMAT', message: /bad\.txt:1: expected/ });
  writeFileSync(badFile, `${relative(dir, a.path)} ${Array(10).fill(7).join(' ')}\n`);
  await t.rejects(embedCommand([a.path], { model: file, landmarks: badFile }, new Sink()), { code: 'E_ARG', message: /coincide|invalid|singular/ }, 'coincident landmarks from a file: E_ARG naming the image');
  writeFileSync(badFile, `${relative(dir, a.path)} ${LM.join(' ')}\n${LM.join(' ')}\n`);
  await t.rejects(embedCommand([a.path], { model: file, landmarks: badFile }, new Sink()), { code: 'E_FORMAT', message: /mixes named lines/ });
});

const LFW = join(sharedDir, 'data', 'lfw');
const FR = join(sharedDir, 'models', 'faceplugin', 'fr_feature.onnx');
const haveLfw = existsSync(join(LFW, 'landmarks-5pt.txt')) && existsSync(FR);
t.test("real model and LFW: embed({ image, landmarks }) and embed --landmarks equal the embedding of eval's landmark crop", { skip: haveLfw ? false : `../shared/data/lfw or ../shared/models/faceplugin/fr_feature.onnx is absent (${LFW})` }, async (t) => {
  const list = await readPairs(LFW, { limit: 4 });
  const lmMap = await readLandmarks(join(LFW, 'landmarks-5pt.txt'));
  const { embedder } = await loadEmbedder(FR);
  const recorded = embedder.meta.alignment;
  t.equal(recorded?.kind, 'template', 'the registry gives fr_feature a 5-point template');
  // eval's crop: exactly what `quantface eval --align landmarks` builds (lib/eval/run.ts)
  const align: AlignChoice = { kind: 'landmarks', landmarks: lmMap, ...(recorded?.kind === 'template' ? { template: recorded.points, templateName: recorded.name ?? 'recorded' } : {}) };
  const set = pairsVerificationSet(list, align, list.root);
  const model = await loadModel(FR);
  const n = Math.min(6, list.images.length);
  const lmFile = join(dir, 'lfw-lm.txt');
  writeFileSync(lmFile, list.images.slice(0, n).map((k) => `${k} ${Array.from(lmMap.get(k)!).join(' ')}`).join('\n') + '\n');
  const paths = list.images.slice(0, n).map((k) => join(list.root, k));
  const sink = new Sink();
  await embedCommand(paths, { model: FR, landmarks: lmFile }, sink);
  const rows = sink.text.trim().split('\n').map((l) => JSON.parse(l) as { embedding: number[] });
  let worst = 0, worstCli = 0;
  for (let k = 0; k < n; k++) {
    const crop = new Float32Array(112 * 112 * 3);
    await set.load(k, 112, crop, 0);
    const ref = await model.embed(crop); // the runtime rounds a float crop to bytes, as eval's runtime embedder does
    const lm = Array.from(lmMap.get(list.images[k]!)!, (v) => v - 0.5); // eval's file: continuous coordinates
    const got = await model.embed({ image: paths[k]!, landmarks: lm });
    worst = Math.max(worst, maxAbs(got, ref));
    worstCli = Math.max(worstCli, maxAbs(rows[k]!.embedding, ref) / Math.max(...Array.from(ref, Math.abs)));
  }
  t.equal(worst, 0, `${n} LFW images: max abs diff ${worst} between embed({ image, landmarks }) and eval's landmark crop`);
  t.ok(worstCli < 1e-6, `embed --landmarks prints the same (7 significant digits; relative ${worstCli.toExponential(1)})`);
  await model.dispose();
  embedder.dispose?.();
});
