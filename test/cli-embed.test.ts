// quantface embed / info: embeddings of image files from the command line,
// and what a model file holds.
import t from 'tap';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import sharp from 'sharp';
import { main } from '../lib/cli.js';
import { embedCommand, summarizeModel, formatSummary } from '../lib/cli/embed.js';
import { IResNet, countParams } from '../lib/models/index.js';
import { saveQfm } from '../lib/io/index.js';
import { loadModel, quantizeModel } from '../lib/runtime/index.js';
import { tempDir } from './fixtures/tmp.js';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void { this.text += chunk.toString(); cb(); }
}

const dir = tempDir(t, 'qf-cli-embed-');

let seed = 11;
const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);

async function face(name: string): Promise<string> {
  const raw = Buffer.from(Array.from({ length: 112 * 112 * 3 }, () => Math.floor(rnd() * 256)));
  const p = join(dir, name);
  await sharp(raw, { raw: { width: 112, height: 112, channels: 3 } }).png().toFile(p);
  return p;
}

function tiny(s: number): IResNet {
  const m = new IResNet([1, 1, 1, 1], { widths: [8, 16, 16, 32], numFeatures: 32, seed: s });
  m.eval();
  return m;
}

const cos = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0, x = 0, y = 0;
  for (let i = 0; i < a.length; i++) { d += a[i]! * b[i]!; x += a[i]! * a[i]!; y += b[i]! * b[i]!; }
  return d / Math.sqrt(x * y);
};

t.test('embed prints one JSON line per image, equal to the runtime embeddings', async (t) => {
  const fp = tiny(21);
  const calib = Float32Array.from({ length: 8 * 112 * 112 * 3 }, () => Math.floor(rnd() * 256));
  const q = quantizeModel(fp, { weightBits: 4, actBits: 8, images: calib, batchSize: 8 });
  const path = join(dir, 'w4.qfm');
  await saveQfm(q, path);
  const a = await face('a.png'), b = await face('b.png');
  const out = new Sink();
  await embedCommand([a, b], { model: path }, out);
  const lines = out.text.trim().split('\n').map((l) => JSON.parse(l) as { image: string; dim: number; embedding: number[] });
  t.equal(lines.length, 2);
  t.equal(lines[0]!.image, a);
  t.equal(lines[1]!.dim, 32);
  const m = await loadModel(path);
  for (const [i, img] of [a, b].entries()) {
    const want = await m.embed(img) as Float32Array;
    const got = lines[i]!.embedding;
    t.equal(got.length, 32);
    let worst = 0;
    for (let j = 0; j < 32; j++) worst = Math.max(worst, Math.abs(got[j]! - want[j]!) / Math.max(1e-6, Math.abs(want[j]!)));
    t.ok(worst < 1e-6, `image ${i}: printed values equal the runtime's to 7 digits (worst relative ${worst})`);
  }
  const sim = m.similarity(await m.embed(a) as Float32Array, await m.embed(b) as Float32Array);
  await m.dispose();

  const c1 = new Sink();
  await embedCommand([a, b], { model: path, compare: true }, c1);
  const r1 = JSON.parse(c1.text) as { similarity: number; match: boolean | null; threshold: number | null };
  t.ok(Math.abs(r1.similarity - sim) < 1e-6, 'similarity');
  t.equal(r1.match, null, 'no threshold known: match is null');
  const c2 = new Sink();
  await embedCommand([a, a], { model: path, compare: true, threshold: 0.5 }, c2);
  t.match(JSON.parse(c2.text), { match: true, threshold: 0.5 }, 'an image matches itself');
  t.ok(Math.abs((JSON.parse(c2.text) as { similarity: number }).similarity - 1) < 1e-6);

  const outFile = join(dir, 'emb.jsonl');
  const quiet = new Sink();
  await embedCommand([b], { model: path, out: outFile }, quiet);
  t.equal(quiet.text, '', 'nothing on stdout with --out');
  t.ok(cos((JSON.parse(readFileSync(outFile, 'utf8')) as { embedding: number[] }).embedding, lines[1]!.embedding) > 0.9999999, '--out file holds the embedding');
});

t.test('embed: bad input gets clear errors', async (t) => {
  const path = join(dir, 'f.qfm');
  await saveQfm(tiny(3), path);
  const a = await face('c.png');
  const junk = join(dir, 'junk.jpg');
  writeFileSync(junk, Buffer.from('not an image at all'));
  await t.rejects(embedCommand([a, junk], { model: path }, new Sink()), { message: /junk\.jpg/ }, 'the unreadable file is named');
  await t.rejects(embedCommand([a], { model: path, compare: true }, new Sink()), { code: 'E_ARG', message: /exactly two/ });
  await t.rejects(embedCommand([], { model: path }, new Sink()), { code: 'E_ARG' });
  await t.rejects(embedCommand([a], { model: join(dir, 'model.bin') }, new Sink()), { code: 'E_IO', message: /model\.bin/ }, 'a missing model file');
  writeFileSync(join(dir, 'model.bin'), Buffer.from('not a model at all'));
  await t.rejects(embedCommand([a], { model: join(dir, 'model.bin') }, new Sink()), { code: 'E_FORMAT', message: /not a model file quantface can read/ }, 'unknown content');
  await t.rejects(embedCommand([join(dir, 'missing.png')], { model: path }, new Sink()), { message: /missing\.png/ });
  const outFile = join(dir, 'never.jsonl');
  await t.rejects(embedCommand([a, junk], { model: path, out: outFile }, new Sink()));
  t.notOk(existsSync(outFile), 'no output file is written when an image fails');
  // through main(): exit code 2 and the error code on stderr
  const errWrite = process.stderr.write.bind(process.stderr);
  let err = '';
  process.stderr.write = ((c: string) => { err += c; return true; }) as typeof process.stderr.write;
  try {
    t.equal(await main(['node', 'quantface', 'embed', '-m', path, '--compare', a]), 2);
    t.match(err, /error E_ARG: --compare takes exactly two images/);
    err = '';
    t.not(await main(['node', 'quantface', 'embed', '-m', path, '--threads', '0', a]), 0);
    t.match(err, /--threads must be an integer >= 1/);
  } finally {
    process.stderr.write = errWrite;
  }
});

t.test('info: what a .qfm holds', async (t) => {
  const fp = tiny(8);
  const calib = Float32Array.from({ length: 8 * 112 * 112 * 3 }, () => Math.floor(rnd() * 256));
  const q = quantizeModel(fp, { weightBits: 6, actBits: 6, images: calib, batchSize: 8 });
  const path = join(dir, 'w6.qfm');
  const bytes = await saveQfm(q, path, { provenance: { data: 'random crops' } });
  const s = await summarizeModel(path);
  t.equal(s.format, 'qfm');
  t.equal(s.bytes, bytes);
  t.equal(s.parameters, countParams(fp), 'same parameter count as the float model');
  t.same(s.weightBits, [6]);
  t.ok(s.packedTensors! > 0 && s.activationQuantizers! > 0);
  t.same(s.activationBits, [6]);
  t.equal(s.verifyThreshold, null);
  t.match(s.provenance, { data: 'random crops', weightBits: 6 });
  const text = formatSummary(s);
  t.match(text, /6-bit packed/);
  t.match(text, /none stored/);
  await t.rejects(summarizeModel(join(dir, 'nope.qfm')), { code: 'E_IO' });
  const bad = join(dir, 'bad.qfm');
  writeFileSync(bad, Buffer.from('hello'));
  await t.rejects(summarizeModel(bad), { code: 'E_FORMAT' });
});
