// Runtime API: loadModel / embed / embedSync / verify / dispose, input
// kinds (paths, encoded bytes, raw crops, float crops, decoded pixels),
// batching of concurrent calls, the event loop during inference, and bad
// inputs (QuantFaceError codes).
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { loadModel, similarity, verify, type FaceModel } from '../lib/runtime/index.js';
import { QuantFaceError } from '../lib/errors.js';
import { PER, TEACHER, faceCrops, faceFiles, missingData, student, teacher } from './fixtures/runtime-faces.js';

const skip = missingData();
if (skip) t.comment(`skipping runtime API tests: ${skip}`);

const code = (c: string) => ({ name: 'QuantFaceError', code: c });

function same(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

t.test('embed: every input kind gives the same embedding', { skip }, async (t) => {
  const tch = await teacher();
  const calib = await faceCrops(8);
  const m = await loadModel(student(tch, calib), { align: 'ffhq', threshold: 0.3 });
  t.teardown(() => m.dispose());
  t.equal(m.dim, 256);
  t.equal(m.inputSize, 112);
  t.equal(m.report.precision, 'mixed');
  const [file] = faceFiles(1);
  const bytes = readFileSync(file!);
  const fromPath = await m.embed(file!);
  const fromBytes = await m.embed(bytes);
  const fromArrayBuffer = await m.embed(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  t.ok(same(fromPath, fromBytes), 'path and encoded bytes');
  t.ok(same(fromPath, fromArrayBuffer), 'ArrayBuffer');
  const crop = (await faceCrops(1)).subarray(0, PER);
  t.ok(same(fromPath, await m.embed(crop)), 'raw 112x112x3 crop (the same alignment)');
  t.ok(same(fromPath, await m.embed(Float32Array.from(crop))), 'Float32Array crop');
  t.ok(same(fromPath, m.embedSync(crop) as Float32Array), 'embedSync of the raw crop');
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const px = { data: new Uint8Array(data), width: info.width, height: info.height };
  t.ok(same(fromPath, await m.embed(px)), 'decoded pixels { data, width, height }');
  t.ok(same(fromPath, m.embedSync(px) as Float32Array), 'embedSync of decoded pixels');
  // RGBA pixels and a PNG of the same image
  const rgba = new Uint8Array(info.width * info.height * 4);
  for (let i = 0; i < info.width * info.height; i++) {
    rgba.set(px.data.subarray(i * 3, i * 3 + 3), i * 4);
    rgba[i * 4 + 3] = 255;
  }
  t.ok(same(fromPath, await m.embed({ data: rgba, width: info.width, height: info.height, channels: 4 })), 'RGBA pixels');
  const png = await sharp(px.data, { raw: { width: info.width, height: info.height, channels: 3 } }).png().toBuffer();
  t.ok(same(fromPath, await m.embed(png)), 'PNG of the same pixels');
  // batches
  const files = faceFiles(5);
  const many = await m.embed(files);
  t.equal(many.length, 5);
  t.ok(same(many[0]!, fromPath), 'an array input returns embeddings in order');
  const one = await Promise.all(files.map((f) => m.embed(f)));
  t.ok(one.every((e, i) => same(e, many[i]!)), 'batched and single embeddings are identical');
  // per-call alignment overrides the model's
  const noAlign = await m.embed(crop, { align: 'none' });
  t.ok(same(noAlign, fromPath), "a 112x112 crop with align 'none' is used as it is");
  // similarity and verify
  t.equal(similarity(fromPath, fromPath), 1);
  t.ok(Math.abs(similarity(many[0]!, many[1]!)) < 0.99, 'different faces are not identical');
  const v = m.verify(many[0]!, many[0]!);
  t.same(v, { similarity: v.similarity, match: true, threshold: 0.3 });
  t.equal(m.verify(many[0]!, many[1]!, 2).match, false, 'explicit threshold');
  t.equal(verify(many[0]!, many[1]!, -1).match, true, 'verify() function');
  const cmp = await m.compare(files[0]!, files[0]!);
  t.equal(cmp.match, true, 'compare() embeds and verifies two images');
  t.throws(() => similarity(new Float32Array(3), new Float32Array(4)), code('E_SHAPE'));
  t.throws(() => m.verify(new Float32Array(3), new Float32Array(3)), code('E_SHAPE'));
});

t.test('concurrent calls are queued and batched; the event loop keeps running', { skip }, async (t) => {
  const m = await loadModel(TEACHER, { maxBatch: 16 });
  t.teardown(() => m.dispose());
  const crops = await faceCrops(40);
  const list = Array.from({ length: 40 }, (_, i) => crops.subarray(i * PER, (i + 1) * PER));
  const alone = list.map((c) => m.embedSync(c) as Float32Array);
  const before = m.stats();
  let ticks = 0;
  let running = true;
  const spin = (): void => {
    ticks++;
    if (running) setImmediate(spin);
  };
  setImmediate(spin);
  const got = await Promise.all(list.map((c) => m.embed(c)));
  running = false;
  const after = m.stats();
  t.ok(got.every((e, i) => same(e, alone[i]!)), 'each concurrent call gets its own embedding, identical to a single run');
  t.equal(after.images - before.images, 40);
  t.ok(after.batches - before.batches < 40, `40 calls ran in ${after.batches - before.batches} batches`);
  t.ok(after.largestBatch > 1 && after.largestBatch <= 16, `largest batch ${after.largestBatch} within maxBatch`);
  t.ok(ticks > 0, `the event loop turned ${ticks} times while the batches ran`);
  t.equal(after.queued, 0, 'queue drained');
  // many more calls: plans are cached per batch-size bucket, arenas reused
  const plans = new Set<number>();
  for (let r = 0; r < 5; r++) {
    const k = 1 + ((r * 7) % 16);
    await Promise.all(list.slice(0, k).map((c) => m.embed(c)));
  }
  for (const b of [1, 2, 4, 8, 16]) plans.add(m.compiled.plan(b).arenaBytes);
  t.ok(plans.size <= 5, 'one plan per bucket');
  t.same([...new Set([...Array(3)].map(() => m.compiled.plan(8)))].length, 1, 'plans are cached');
});

t.test('dispose: queued calls reject with E_CLOSED, later calls too', { skip }, async (t) => {
  const m = await loadModel(TEACHER);
  const crops = await faceCrops(20);
  const calls = Array.from({ length: 20 }, (_, i) => m.embed(crops.subarray(i * PER, (i + 1) * PER)).then(() => 'ok', (e: QuantFaceError) => e.code));
  await new Promise((r) => setImmediate(r));
  await m.dispose();
  const results = await Promise.all(calls);
  t.ok(results.every((r) => r === 'ok' || r === 'E_CLOSED'), 'every call settles: embedded or E_CLOSED');
  t.ok(results.includes('E_CLOSED'), `queued calls were rejected (${results.filter((r) => r === 'ok').length} finished first)`);
  await t.rejects(m.embed(crops.subarray(0, PER)), code('E_CLOSED'), 'embed after dispose');
  t.throws(() => m.embedSync(crops.subarray(0, PER)), code('E_CLOSED'), 'embedSync after dispose');
  await m.dispose();
  t.pass('dispose twice is harmless');
});

t.test('bad inputs and options give QuantFaceError codes', { skip }, async (t) => {
  const m: FaceModel = await loadModel(TEACHER, { limits: { maxPixels: 300 * 300 } });
  t.teardown(() => m.dispose());
  const [file] = faceFiles(1);
  const jpeg = readFileSync(file!);
  await t.rejects(m.embed(new Uint8Array([1, 2, 3, 4, 5])), code('E_FORMAT'), 'random bytes');
  await t.rejects(m.embed(new Uint8Array(PER - 1)), code('E_FORMAT'), 'one byte short of a raw crop');
  await t.rejects(m.embed(jpeg.subarray(0, 600)), code('E_FORMAT'), 'truncated JPEG');
  const bad = Buffer.from(jpeg);
  bad.fill(0x55, 200, 2000);
  await t.rejects(m.embed(bad), code('E_FORMAT'), 'corrupted JPEG');
  await t.rejects(m.embed(new Uint8Array(0)), code('E_FORMAT'), 'empty buffer');
  await t.rejects(m.embed(new Float32Array(10)), code('E_SHAPE'), 'Float32Array of the wrong size');
  await t.rejects(m.embed('/nonexistent/face.jpg'), code('E_IO'), 'missing file');
  await t.rejects(m.embed(123 as never), code('E_ARG'), 'a number');
  await t.rejects(m.embed({ data: new Uint8Array(10), width: 2, height: 2 }), code('E_SHAPE'), 'pixels of the wrong size');
  const big = await sharp({ create: { width: 400, height: 400, channels: 3, background: { r: 9, g: 9, b: 9 } } }).png().toBuffer();
  await t.rejects(m.embed(big), { code: 'E_SHAPE', message: /limit/ }, 'image over the pixel limit');
  const wide = await sharp({ create: { width: 200, height: 100, channels: 3, background: { r: 9, g: 9, b: 9 } } }).jpeg().toBuffer();
  await t.rejects(m.embed(wide), { code: 'E_SHAPE', message: /square/ }, "non-square image with align 'none'");
  t.ok((await m.embed(wide, { align: 'box:10,10,80' })).length === 256, 'the same image with a box alignment works');
  await t.rejects(m.embed(wide, { align: 'sideways' }), code('E_ARG'), 'unknown alignment');
  await t.rejects(m.embed([jpeg, new Uint8Array(3)]), { code: 'E_FORMAT', message: /input 1/ }, 'a bad image in a batch is named');
  t.throws(() => m.embedSync(file as never), code('E_ARG'), 'embedSync refuses paths');
  t.throws(() => m.verify(new Float32Array(256), new Float32Array(256)), { code: 'E_ARG', message: /threshold/ }, 'verify without a threshold');
  await t.rejects(loadModel(TEACHER, { maxBatch: 0 }), code('E_ARG'), 'bad maxBatch');
  await t.rejects(loadModel(TEACHER, { threads: 1.5 }), code('E_ARG'), 'bad threads');
  await t.rejects(loadModel('/nonexistent/model.qfm'), code('E_IO'), 'missing model file');
  // Formats are told by content: a file of unknown content is E_FORMAT, whatever its name.
  const junk = join(mkdtempSync(join(tmpdir(), 'qf-rt-api-')), 'model.onnx');
  writeFileSync(junk, 'not a model');
  await t.rejects(loadModel(junk), code('E_FORMAT'), 'unknown content');
  rmSync(dirname(junk), { recursive: true, force: true });
  // the model still works after all that
  t.equal((await m.embed(jpeg)).length, 256, 'still serving');
});
