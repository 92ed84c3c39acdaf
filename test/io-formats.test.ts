/**
 * Every model format in every command (issue 14): files told by content,
 * not extension; the same network through two formats gives the same
 * embeddings; the input description comes from the file, a sidecar, the
 * registry of known models (SHA-256) or flags, in that order, and is
 * written into the student .qfm; the faceplugin teacher evaluates on LFW
 * with no flags.
 */
import t from 'tap';
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { detectModelFormat, loadModelFile, saveOnnx, saveQfm, loadQfm, KNOWN_MODELS_BY_SHA256 } from '../lib/io/index.js';
import { loadModel } from '../lib/runtime/index.js';
import { loadEmbedder } from '../lib/eval/embedder.js';
import { summarizeModel, embedCommand } from '../lib/cli/embed.js';
import { evalCommand } from '../lib/cli/eval.js';
import { quantizeCommand } from '../lib/cli/quantize.js';
import { paintedFaces, tinyTeacher, sharedDir } from './fixtures/distill/util.js';
import { writeTinyModel, S as TS, D as TD } from './fixtures/eval/tiny-model.js';
import { hasLfw, lfwDir, hasMobileface, mobilefacePath, mulberry32 } from './fixtures/eval/util.js';
import { tempDir } from './fixtures/tmp.js';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void { this.text += chunk.toString(); cb(); }
}

const frFeature = join(sharedDir, 'models', 'faceplugin', 'fr_feature.onnx');
const hasFr = existsSync(frFeature);
const faceapiManifest = join(sharedDir, 'models', 'faceapi-resnet', 'face_recognition_model-weights_manifest.json');

const root = tempDir(t, 'qf-formats-');
/** One tiny network in three files: engine -> float .qfm, ONNX (nothing recorded), and copies under misleading names. */
const files = (async () => {
  const m = tinyTeacher(5);
  const qfm = join(root, 'tiny.qfm');
  const onnx = join(root, 'tiny.onnx');
  await saveQfm(m, qfm, { weightBits: 'float' });
  await saveOnnx(m, onnx, { inputShape: [112, 112, 3] });
  const onnxAsJson = join(root, 'onnx-named.json');
  const qfmAsOnnx = join(root, 'qfm-named.onnx');
  copyFileSync(onnx, onnxAsJson);
  copyFileSync(qfm, qfmAsOnnx);
  const tfDir = join(root, 'tfjs');
  mkdirSync(tfDir);
  const w = writeTinyModel(tfDir, 9);
  return { m, qfm, onnx, onnxAsJson, qfmAsOnnx, tfjs: join(tfDir, 'tiny.json'), tfjsW: w };
})();

const rnd = mulberry32(17);
/** n raw crops of integer pixel values (exact bytes, so the runtime's byte input loses nothing). */
const crops = (n: number, s = 112): Float32Array => Float32Array.from({ length: n * s * s * 3 }, () => Math.floor(256 * rnd()));
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!));
  return w;
};
const maxAbsOf = (a: ArrayLike<number>): number => {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]!));
  return w;
};

t.test('formats are told by content, not by extension', async (t) => {
  const f = await files;
  t.equal((await detectModelFormat(f.qfm)).format, 'qfm');
  t.equal((await detectModelFormat(f.onnx)).format, 'onnx');
  t.equal((await detectModelFormat(f.tfjs)).format, 'tfjs-graph');
  t.equal((await detectModelFormat(f.onnxAsJson)).format, 'onnx', 'an ONNX file named .json');
  t.equal((await detectModelFormat(f.qfmAsOnnx)).format, 'qfm', 'a .qfm named .onnx');
  if (existsSync(faceapiManifest)) t.equal((await detectModelFormat(faceapiManifest)).format, 'tfjs-weights');
  const dir = tempDir(t, 'qf-detect-');
  const w = (name: string, data: string | Buffer): string => { const p = join(dir, name); writeFileSync(p, data); return p; };
  const tflite = Buffer.alloc(64);
  tflite.write('TFL3', 4, 'latin1');
  t.equal((await detectModelFormat(w('m.tflite', tflite))).format, 'tflite', 'the TFLite identifier');
  await t.rejects(detectModelFormat(w('m.onnx', 'hello, not a model')), { code: 'E_FORMAT', message: /not a model file quantface can read/ });
  await t.rejects(detectModelFormat(w('empty.onnx', '')), { code: 'E_FORMAT', message: /empty/ });
  await t.rejects(detectModelFormat(w('x.json', '{"hello": 1}')), { code: 'E_FORMAT', message: /JSON but not a model/ });
  await t.rejects(detectModelFormat(w('bad.json', '{ not json')), { code: 'E_FORMAT', message: /not valid JSON/ });
  await t.rejects(detectModelFormat(w('layers.json', JSON.stringify({ format: 'layers-model', modelTopology: { class_name: 'Sequential' }, weightsManifest: [] }))), { code: 'E_UNSUPPORTED_FORMAT', message: /layers model/ });
  const onnx = readFileSync(f.onnx);
  await t.rejects(detectModelFormat(w('trunc.onnx', onnx.subarray(0, Math.floor(onnx.length / 2)))), { code: 'E_FORMAT' }, 'a truncated ONNX file');
  await t.rejects(detectModelFormat(w('nograph.onnx', Buffer.from([0x08, 0x07]))), { code: 'E_FORMAT' }, 'ir_version alone (no graph) is not a model');
  await t.rejects(detectModelFormat(dir), { code: 'E_IO', message: /folder/ });
  await t.rejects(detectModelFormat(join(dir, 'missing.onnx')), { code: 'E_IO' });
  // every command refuses the same way (no crash, the code of the detector)
  await t.rejects(loadModel(join(dir, 'm.onnx')), { code: 'E_FORMAT' });
  await t.rejects(loadEmbedder(join(dir, 'm.tflite')), { code: 'E_FORMAT' }, 'a TFLite header over zeros');
  await t.rejects(summarizeModel(join(dir, 'x.json')), { code: 'E_FORMAT' });
});

t.test('the same network through .qfm, ONNX and a misnamed copy gives the same embeddings', async (t) => {
  const f = await files;
  const x = crops(3);
  const per = 112 * 112 * 3;
  const ref = await loadModel(f.m);
  const outs: Record<string, Float32Array[]> = {};
  for (const [k, p] of Object.entries({ qfm: f.qfm, onnx: f.onnx, onnxAsJson: f.onnxAsJson, qfmAsOnnx: f.qfmAsOnnx })) {
    const fm = await loadModel(p);
    outs[k] = [0, 1, 2].map((i) => fm.embedSync(x.subarray(i * per, (i + 1) * per)) as Float32Array);
    await fm.dispose();
  }
  const want = [0, 1, 2].map((i) => ref.embedSync(x.subarray(i * per, (i + 1) * per)) as Float32Array);
  await ref.dispose();
  const scale = Math.max(...want.map(maxAbsOf));
  t.ok(scale > 0, 'non-trivial embeddings');
  for (const [k, o] of Object.entries(outs)) {
    const d = Math.max(...o.map((e, i) => maxAbs(e, want[i]!)));
    t.ok(d <= 1e-5 * scale, `${k}: max abs diff ${d.toExponential(2)} vs the engine module (scale ${scale.toFixed(3)})`);
  }
  t.equal(maxAbs(outs.qfm![0]!, outs.qfmAsOnnx![0]!), 0, 'the same .qfm bytes under another name: bit-identical');
  // eval's embedder (runtime) gives the runtime's numbers for both formats
  const a = (await loadEmbedder(f.onnx)).embedder, b = (await loadEmbedder(f.qfm)).embedder;
  const ea = await a.embed(x, 3), eb = await b.embed(x, 3);
  t.ok(maxAbs(ea, eb) <= 1e-5 * scale, 'eval embedders of the ONNX and the .qfm agree');
  t.equal(a.meta.format, 'onnx');
  t.equal(b.meta.format, 'qfm');
  a.dispose?.(); b.dispose?.();
});

t.test('a TF.js graph model: the runtime (default) and TF.js (--backend cpu) agree', async (t) => {
  const f = await files;
  const x = crops(2, TS);
  const rt = await loadEmbedder(f.tfjs);
  const tf = await loadEmbedder(f.tfjs, { backend: 'cpu' });
  t.equal(rt.embedder.constructor.name, 'RuntimeEmbedder');
  t.equal(tf.embedder.constructor.name, 'TfjsGraphEmbedder');
  t.equal(rt.embedder.dim, TD);
  const [ea, eb] = [await rt.embedder.embed(x, 2), await tf.embedder.embed(x, 2)];
  const d = maxAbs(ea, eb);
  t.ok(d <= 1e-4 * Math.max(1, maxAbsOf(eb)), `max abs diff ${d.toExponential(2)}`);
  rt.embedder.dispose?.(); tf.embedder.dispose?.();
});

t.test('info and embed take every format', async (t) => {
  const f = await files;
  const si = await Promise.all([f.qfm, f.onnx, f.tfjs, f.onnxAsJson].map((p) => summarizeModel(p)));
  t.same(si.map((s) => s.format), ['qfm', 'onnx', 'tfjs-graph', 'onnx']);
  t.equal(si[0]!.parameters, si[1]!.parameters, 'the same network: the same parameter count through .qfm and ONNX');
  t.match(si[1]!.input, /112x112x3 RGB, \(x - 127\.5\) \/ 127\.5/);
  t.same(si[1]!.inputFrom, { colorOrder: 'default', normalize: 'default', alignment: 'unknown' }, 'nothing records the tiny ONNX: defaults');
  if (existsSync(faceapiManifest)) {
    const fa = await summarizeModel(faceapiManifest);
    t.match(fa, { format: 'tfjs-weights', known: 'faceapi-resnet', inputFrom: { normalize: 'registry' } });
  }
  const dir = tempDir(t, 'qf-formats-embed-');
  const img = join(dir, 'a.png');
  const sharp = (await import('sharp')).default;
  await sharp(Buffer.from(Uint8Array.from(crops(1), (v) => v)), { raw: { width: 112, height: 112, channels: 3 } }).png().toFile(img);
  const lines: number[][] = [];
  for (const p of [f.qfm, f.onnx, f.onnxAsJson]) {
    const out = new Sink();
    await embedCommand([img], { model: p }, out);
    lines.push((JSON.parse(out.text) as { embedding: number[] }).embedding);
  }
  const scale = maxAbsOf(lines[0]!);
  t.ok(maxAbs(lines[0]!, lines[1]!) <= 1e-5 * scale && maxAbs(lines[1]!, lines[2]!) === 0, 'embed prints the same embedding through .qfm, ONNX and a misnamed ONNX');
});

t.test('input description: file > sidecar > registry > flags > default; contradicting flags refused', async (t) => {
  const f = await files;
  const dir = tempDir(t, 'qf-formats-desc-');
  // flags fill what nothing records
  const opt = await loadModelFile(f.onnx, { input: { mean: 100, std: 50, colorOrder: 'BGR', alignment: { kind: 'box', preset: 'ffhq' } } });
  t.same([opt.info.preprocessing, opt.info.alignment, opt.from], [{ colorOrder: 'BGR', normalize: { mean: 100, std: 50 } }, { kind: 'box', preset: 'ffhq' }, { colorOrder: 'options', normalize: 'options', alignment: 'options' }]);
  t.equal(opt.assumed, false);
  // a sidecar beats flags: a flag that contradicts it is an error, an agreeing one is fine
  const side = join(dir, 'tiny.onnx');
  copyFileSync(f.onnx, side);
  writeFileSync(join(dir, 'tiny.quantface.json'), JSON.stringify({ preprocessing: { colorOrder: 'RGB', normalize: { mean: [120, 110, 100], std: 64 } } }));
  const s = await loadModelFile(side);
  t.same([s.info.preprocessing.normalize, s.from.normalize], [{ mean: [120, 110, 100], std: 64 }, 'sidecar']);
  await t.rejects(loadModelFile(side, { input: { mean: 127.5 } }), { code: 'E_ARG', message: /contradicts the model's recorded input scaling.*sidecar/ });
  await t.resolves(loadModelFile(side, { input: { colorOrder: 'RGB' } }));
  // the file's own record (ONNX metadata_props quantface.info) beats the sidecar
  const rec = join(dir, 'rec.onnx');
  await saveOnnx(f.m, rec, { info: { name: 'rec', format: 'engine', inputShape: [112, 112, 3], outputDim: 32, normalizedOutput: false, preprocessing: { colorOrder: 'BGR', normalize: { mean: 1, std: 2 } } } });
  writeFileSync(join(dir, 'rec.quantface.json'), JSON.stringify({ colorOrder: 'RGB', normalize: 'raw', crop: 'ffhq' }));
  const r = await loadModelFile(rec);
  t.same([r.info.preprocessing, r.from.colorOrder, r.info.alignment, r.from.alignment], [{ colorOrder: 'BGR', normalize: { mean: 1, std: 2 } }, 'file', { kind: 'box', preset: 'ffhq' }, 'sidecar'], 'file first, the sidecar fills the alignment');
  // the old flat sidecar form and a bad sidecar
  writeFileSync(join(dir, 'tiny.quantface.json'), JSON.stringify({ colorOrder: 'XYZ' }));
  await t.rejects(loadModelFile(side), { code: 'E_FORMAT', message: /colorOrder/ });
  await t.rejects(loadModelFile(f.onnx, { input: { std: 0 } }), { code: 'E_ARG' });
});

t.test('quantize --teacher takes an ONNX file; the flags are written into the student .qfm', async (t) => {
  const f = await files;
  const dir = tempDir(t, 'qf-formats-q-');
  const faces = await paintedFaces(t, 6, 3);
  const out = join(dir, 'student.qfm');
  const r = await quantizeCommand({
    teacher: f.onnxAsJson, data: faces, bits: 'w8a8', out, seed: 1, train: false, calibSteps: 1, batch: 4, workers: 0, quiet: true,
    inputMean: '127,120,110', inputStd: '64', bgr: true, template: 'arcface',
  }, new Sink());
  t.ok(r && existsSync(out), 'a student was written');
  const q = await loadQfm(out);
  t.same(q.info?.preprocessing, { colorOrder: 'BGR', normalize: { mean: [127, 120, 110], std: 64 } }, 'preprocessing recorded in the student');
  t.match(q.info?.alignment, { kind: 'template', name: 'arcface' }, 'alignment recorded in the student');
  const s = await summarizeModel(out);
  t.same(s.inputFrom, { colorOrder: 'file', normalize: 'file', alignment: 'file' }, 'later commands read it from the file: no flags needed');
  const fm = await loadModel(out);
  t.equal(fm.compiled.preprocessing.colorOrder, 'BGR', 'the runtime feeds the student BGR');
  await fm.dispose();
  await t.rejects(quantizeCommand({ teacher: f.onnx, data: faces, bits: 'w8a8', out: join(dir, 'x.qfm'), seed: 1, train: false, calibSteps: 1, batch: 4, workers: 0, quiet: true, template: 'box:square' }, new Sink()), { code: 'E_ARG', message: /--template/ });
  t.notOk(existsSync(join(dir, 'x.qfm')), 'nothing written on a bad flag');
});

t.test('registry: the faceplugin teacher and mobileface need no flags', { skip: hasFr ? false : `${frFeature} absent (../shared/models): skipped` }, async (t) => {
  const fr = await loadModelFile(frFeature);
  t.equal(fr.format, 'onnx');
  t.equal(fr.fileSha256, '87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581');
  t.same([fr.info.name, fr.info.preprocessing, fr.info.alignment?.kind, fr.from], ['faceplugin-fr_feature', { colorOrder: 'RGB', normalize: { mean: 127, std: 128 } }, 'template', { colorOrder: 'registry', normalize: 'registry', alignment: 'registry' }]);
  t.equal(fr.info.outputDim, 512);
  await t.rejects(loadModelFile(frFeature, { input: { colorOrder: 'BGR' } }), { code: 'E_ARG', message: /--bgr .*contradicts.*registry/ });
  await t.resolves(loadModelFile(frFeature, { input: { mean: 127, std: 128 } }), 'a flag that agrees with the registry is fine');
  // a sidecar beside the file (here beside a link to it) overrides the registry
  const dir = tempDir(t, 'qf-formats-fr-');
  symlinkSync(frFeature, join(dir, 'fr.onnx'));
  writeFileSync(join(dir, 'fr.quantface.json'), JSON.stringify({ preprocessing: { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } } }));
  const side = await loadModelFile(join(dir, 'fr.onnx'));
  t.same([side.info.preprocessing.normalize, side.from.normalize, side.from.alignment], [{ mean: 127.5, std: 127.5 }, 'sidecar', 'registry']);
  // the same real network through ONNX and a float .qfm: identical embeddings
  const q = join(dir, 'fr.qfm');
  await saveQfm(fr.model, q, { weightBits: 'float' });
  const a = await loadModel(frFeature), b = await loadModel(q);
  const x = crops(2);
  const per = 112 * 112 * 3;
  let worst = 0, scale = 0;
  for (let i = 0; i < 2; i++) {
    const ea = a.embedSync(x.subarray(i * per, (i + 1) * per)) as Float32Array, eb = b.embedSync(x.subarray(i * per, (i + 1) * per)) as Float32Array;
    worst = Math.max(worst, maxAbs(ea, eb));
    scale = Math.max(scale, maxAbsOf(ea));
  }
  t.ok(worst <= 1e-5 * scale, `fr_feature: ONNX vs float .qfm max abs diff ${worst.toExponential(2)} (scale ${scale.toFixed(2)})`);
  t.same(b.info?.preprocessing, fr.info.preprocessing, 'the .qfm carries the registry description');
  await a.dispose(); await b.dispose();
  for (const [sha, k] of Object.entries(KNOWN_MODELS_BY_SHA256)) t.match(sha, /^[0-9a-f]{64}$/, `${k.name}: a SHA-256 key`);
});

t.test('eval -m fr_feature.onnx on an LFW subset: no flags, landmarks alignment from the registry', { skip: hasFr && hasLfw() ? false : 'needs ../shared/models/faceplugin and ../shared/data/lfw' }, async (t) => {
  const out = new Sink(), err = new Sink();
  const dir = tempDir(t, 'qf-formats-eval-');
  await evalCommand({ model: [frFeature], pairs: lfwDir, limit: 200, batch: 32, backend: 'auto', quiet: true, out: dir }, out, err);
  const report = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as { dataset: { align: string; nPairs: number }; models: Array<{ accuracy: number; metaAssumed: boolean; meta: { preprocessing: unknown } }> };
  t.match(report.dataset.align, /landmarks .*ArcFace template/, 'the registry\'s template alignment is the default');
  t.equal(report.models[0]!.metaAssumed, false);
  t.same(report.models[0]!.meta.preprocessing, { colorOrder: 'RGB', normalize: { mean: 127, std: 128 } });
  // Measured here: 200 pairs 0.9950; the whole of LFW 0.9838 (README, and quantface eval). A wrong preprocessing or alignment falls far below.
  t.ok(report.models[0]!.accuracy >= 0.97, `accuracy ${report.models[0]!.accuracy} on ${report.dataset.nPairs} pairs`);
  t.match(out.text, /faceplugin-fr_feature/);
});

t.test('mobileface: TF.js (wasm) and the runtime give the same embeddings', { skip: hasMobileface() ? false : `${mobilefacePath} absent: skipped` }, async (t) => {
  const x = crops(2);
  const a = (await loadEmbedder(mobilefacePath)).embedder;
  const b = (await loadEmbedder(mobilefacePath, { backend: 'wasm' })).embedder;
  const ea = await a.embed(x, 2), eb = await b.embed(x, 2);
  const d = maxAbs(ea, eb), s = maxAbsOf(eb);
  t.ok(d <= 1e-3 * s, `max abs diff ${d.toExponential(2)} (scale ${s.toFixed(2)})`);
  t.same(a.meta.alignment, { kind: 'box', preset: 'lfw-funneled' });
  a.dispose?.(); b.dispose?.();
});

t.test('eval -m takes every format; the same network scores the same through each', { skip: hasLfw() ? false : `${lfwDir} absent: skipped` }, async (t) => {
  const f = await files;
  const dir = tempDir(t, 'qf-formats-evalall-');
  const { quantizeModel } = await import('../lib/runtime/index.js');
  const q = quantizeModel(tinyTeacher(5), { weightBits: 8, actBits: 8, images: crops(8), batchSize: 8 });
  const w8 = join(dir, 'w8a8.qfm');
  await saveQfm(q, w8);
  await evalCommand({ model: [f.onnx, f.qfm, f.onnxAsJson, w8, f.tfjs], pairs: lfwDir, limit: 40, batch: 16, backend: 'auto', quiet: true, out: dir }, new Sink(), new Sink());
  const r = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as { models: Array<{ accuracy: number; foldThresholds: number[]; auc: number; meta: { format: string } }> };
  t.same(r.models.map((m) => m.meta.format), ['onnx', 'qfm', 'onnx', 'qfm', 'tfjs-graph']);
  const [a, b, c] = r.models;
  t.same([b!.accuracy, b!.foldThresholds, b!.auc], [a!.accuracy, a!.foldThresholds, a!.auc], '.qfm and ONNX: the same accuracy, thresholds and AUC');
  t.same([c!.accuracy, c!.auc], [a!.accuracy, a!.auc], 'an ONNX file named .json: the same');
  t.ok(r.models.every((m) => Number.isFinite(m.accuracy) && Number.isFinite(m.auc)), 'the int8 student and the TF.js model are scored');
});

t.test("face-api's weights manifest runs on the runtime like the engine module", { skip: existsSync(faceapiManifest) ? false : `${faceapiManifest} absent: skipped` }, async (t) => {
  const { loadFaceApiResNet, preprocess, runModel } = await import('../lib/io/index.js');
  const fm = await loadModel(faceapiManifest);
  t.equal(fm.dim, 128);
  t.equal(fm.inputSize, 150);
  const x = crops(1, 150);
  const got = fm.embedSync(x) as Float32Array;
  await fm.dispose();
  const m = await loadFaceApiResNet(faceapiManifest);
  const want = runModel(m, preprocess(m.info, x, 1)).data;
  const d = maxAbs(got, want);
  t.ok(d <= 1e-4 * maxAbsOf(want), `max abs diff ${d.toExponential(2)} (scale ${maxAbsOf(want).toFixed(3)})`);
});
