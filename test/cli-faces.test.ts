// `quantface faces`: text and --json output for LFW photos (../shared),
// the same numbers as the library's pipeline; unreadable photos are named
// in a QuantFaceError. Skips when ../shared is absent.
import t from 'tap';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { facesCommand } from '../lib/cli/faces.js';
import { loadPipeline } from '../lib/runtime/pipeline.js';
import { readdirSync } from 'node:fs';
import sharp from 'sharp';
import { shared } from './fixtures/io/helpers.js';
import { tempDir } from './fixtures/tmp.js';

const M = shared('models/faceplugin');
const LFW = shared('data/lfw');
if (!M || !LFW) t.comment('../shared absent: skipped');
else {
  const files = { detector: join(M, 'fr_detect.onnx'), landmarkModel: join(M, 'fr_landmark.onnx'), model: join(M, 'fr_feature.onnx'), quiet: true, threads: 1 };
  const a = join(LFW, 'Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg');
  const b = join(LFW, 'AJ_Lamas/AJ_Lamas_0001.jpg');
  t.test('--json: boxes, landmarks, embeddings as the library gives them', async (t) => {
    const text = await facesCommand([a, b], { ...files, json: true }, new PassThrough(), new PassThrough());
    const js = JSON.parse(text) as Array<{ photo: string; faces: Array<{ box: { x: number; y: number; width: number; height: number }; score: number; landmarks5: number[][]; landmarks68: number[][]; embedding: number[] }> }>;
    t.equal(js.length, 2);
    const pipe = await loadPipeline({ detector: files.detector, landmarks: files.landmarkModel, recognizer: files.model });
    t.teardown(() => pipe.dispose());
    for (const [i, p] of [a, b].entries()) {
      const lib = await pipe.faces(p);
      const cli = js[i]!.faces;
      t.equal(cli.length, lib.length, `${p}: ${lib.length} face(s)`);
      t.ok(Math.abs(cli[0]!.box.x - lib[0]!.box.x) < 0.01 && Math.abs(cli[0]!.box.height - lib[0]!.box.height) < 0.01, 'box');
      t.equal(cli[0]!.landmarks5.length, 5);
      t.equal(cli[0]!.landmarks68.length, 68);
      t.equal(cli[0]!.embedding.length, 512);
      let d = 0;
      cli[0]!.embedding.forEach((v, k) => (d = Math.max(d, Math.abs(v - lib[0]!.embedding[k]!))));
      t.ok(d < 1e-4 * Math.max(1, ...Array.from(lib[0]!.embedding, Math.abs)), `embedding printed to 7 digits (max |diff| ${d.toExponential(2)})`);
    }
  });
  t.test('text output and errors', async (t) => {
    const text = await facesCommand([a], { ...files, embedding: false }, new PassThrough(), new PassThrough());
    t.match(text, /Abdoulaye_Wade_0001\.jpg: 1 face\n  1\. box [\d.]+,[\d.]+ [\d.]+x[\d.]+  score 1\.000  eyes/);
    t.notMatch(text, /embedding/, '--no-embedding');
    await t.rejects(facesCommand([join(LFW, 'nope.jpg')], files, new PassThrough(), new PassThrough()), { code: 'E_IO', message: /nope\.jpg/ });
    await t.rejects(facesCommand([], files, new PassThrough(), new PassThrough()), { code: 'E_ARG' });
  });
  t.test('--draw: boxes and landmarks drawn onto the photo', async (t) => {
    const dir = tempDir(t, 'qf-draw-');
    const out = join(dir, 'drawn.png');
    const text = await facesCommand([a], { ...files, embedding: false, json: true, draw: out }, new PassThrough(), new PassThrough());
    const face = (JSON.parse(text) as { faces: Array<{ box: { x: number; y: number; width: number; height: number }; landmarks5: number[][] }> }).faces[0]!;
    const drawn = await sharp(out).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const orig = await sharp(a).raw().toBuffer({ resolveWithObject: true });
    t.same([drawn.info.width, drawn.info.height], [orig.info.width, orig.info.height], 'same size as the photo');
    const px = (img: typeof drawn, x: number, y: number): number[] => Array.from(img.data.subarray((Math.round(y) * img.info.width + Math.round(x)) * 3, (Math.round(y) * img.info.width + Math.round(x)) * 3 + 3));
    // the box's left edge, half way down, is the box colour (green); a pixel far from every face is unchanged
    const edge = px(drawn, face.box.x, face.box.y + face.box.height / 2);
    t.ok(edge[1]! > 180 && edge[0]! < 80 && edge[2]! < 150, `box edge is green (${edge})`);
    const far = [2, orig.info.height - 3] as const;
    t.ok(px(drawn, ...far).every((v, k) => Math.abs(v - px(orig, ...far)[k]!) <= 3), 'pixels away from the faces unchanged (PNG of the decoded photo)');
    t.same(readdirSync(dir), ['drawn.png'], 'no temporary file left');
    await t.rejects(facesCommand([a, b], { ...files, draw: out }, new PassThrough(), new PassThrough()), { code: 'E_ARG' });
    await t.rejects(facesCommand([a], { ...files, embedding: false, draw: join(dir, 'x.gif') }, new PassThrough(), new PassThrough()), { code: 'E_ARG' });
    await t.rejects(facesCommand([a], { ...files, embedding: false, draw: join(dir, 'missing-folder', 'x.png') }, new PassThrough(), new PassThrough()), { code: 'E_IO' });
  });
  t.test('embed --detect: the largest face of each photo through the pipeline', async (t) => {
    const { embedCommand } = await import('../lib/cli/embed.js');
    const { FacePipeline } = await import('../lib/runtime/pipeline.js');
    const o = { model: files.model, detect: true, detector: files.detector, landmarkModel: files.landmarkModel, threads: 1 };
    const text = await embedCommand([a, b], o, new PassThrough());
    const lines = text.trim().split('\n').map((l) => JSON.parse(l) as { box: { x: number }; embedding: number[] });
    const pipe = await loadPipeline({ detector: files.detector, landmarks: files.landmarkModel, recognizer: files.model });
    t.teardown(() => pipe.dispose());
    for (const [i, p] of [a, b].entries()) {
      const f = FacePipeline.pick(await pipe.faces(p), 'largest')!;
      t.ok(Math.abs(lines[i]!.box.x - f.box.x) < 0.01, 'box of the largest face');
      let d = 0;
      lines[i]!.embedding.forEach((v, k) => (d = Math.max(d, Math.abs(v - f.embedding[k]!))));
      t.ok(d < 1e-4 * Math.max(1, ...Array.from(f.embedding, Math.abs)), `embedding (max |diff| ${d.toExponential(2)})`);
    }
    const cmp = JSON.parse(await embedCommand([a, b], { ...o, compare: true }, new PassThrough())) as { similarity: number; threshold: number; match: boolean };
    t.ok(cmp.threshold > 0 && cmp.match === false, `--compare of two people with the registry threshold (${cmp.similarity})`);
    const dir = tempDir(t, 'qf-embed-detect-');
    const grey = join(dir, 'grey.jpg');
    await sharp({ create: { width: 200, height: 200, channels: 3, background: '#888' } }).jpeg().toFile(grey);
    await t.rejects(embedCommand([grey], o, new PassThrough()), { code: 'E_NO_FACE', message: /grey\.jpg/ });
    await t.rejects(embedCommand([a], { ...o, align: 'ffhq' }, new PassThrough()), { code: 'E_ARG' });
    await t.rejects(embedCommand([a], { model: files.model, detector: files.detector }, new PassThrough()), { code: 'E_ARG' });
  });
}
