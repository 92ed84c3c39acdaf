import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import sharp from 'sharp';
import { buildProgram, main } from '../lib/cli.js';
import { evalCommand, type EvalCliOptions } from '../lib/cli/eval.js';
import type { EvalReport } from '../lib/eval/report.js';
import { writeTinyModel } from './fixtures/eval/tiny-model.js';
import { hasLfw, hasMobileface, lfwDir, mobilefacePath, tempDir } from './fixtures/eval/util.js';
import type { Teardown } from './fixtures/tmp.js';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void { this.text += chunk.toString(); cb(); }
}

const opts = (t: Teardown, o: Partial<EvalCliOptions>): EvalCliOptions => ({ model: [], batch: 8, backend: 'wasm', quiet: true, ...o, out: o.out ?? tempDir(t, 'cli-out') });

/** Hand-written insightface .bin (protocol 2, Python 2 strings) of n pairs of solid-colour JPEGs. */
async function makeBin(file: string, nPairs: number): Promise<void> {
  const u32 = (n: number) => [n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255];
  const body: number[] = [0x80, 2, 0x5d, 0x28];
  const issame: boolean[] = [];
  for (let i = 0; i < nPairs; i++) {
    const same = i % 2 === 0;
    issame.push(same);
    for (const k of [0, 1]) {
      const hue = same ? i : i + k * 7;
      const jpg = await sharp({ create: { width: 112, height: 112, channels: 3, background: { r: (hue * 37) % 256, g: (hue * 91) % 256, b: (hue * 53) % 256 } } }).jpeg().toBuffer();
      body.push(0x54, ...u32(jpg.length), ...jpg);
    }
  }
  body.push(0x65, 0x5d, 0x28, ...issame.map((s) => (s ? 0x88 : 0x89)), 0x65, 0x86, 0x2e);
  writeFileSync(file, Buffer.from(body));
}

t.test('argument errors', async (t) => {
  const program = buildProgram();
  t.ok(program.commands.some((c) => c.name() === 'eval'), 'eval is registered');
  const errWrite = process.stderr.write.bind(process.stderr);
  let err = '';
  process.stderr.write = ((c: string) => { err += c; return true; }) as typeof process.stderr.write;
  try {
    t.not(await main(['node', 'quantface', 'eval', '--pairs', 'x']), 0, 'missing --model');
    t.match(err, /--model/);
    err = '';
    t.equal(await main(['node', 'quantface', 'eval', '-m', 'm.json', '--pairs', 'a', '--bin', 'b']), 2, 'two datasets: E_ARG exit 2');
    t.match(err, /error E_ARG: give exactly one dataset/);
    err = '';
    t.not(await main(['node', 'quantface', 'eval', '-m', 'm.json', '--bin', 'b', '--batch', '0']), 0);
    t.match(err, /--batch must be an integer >= 1/);
    err = '';
    t.not(await main(['node', 'quantface', 'eval', '-m', 'm.json', '--bin', 'b', '--align', 'crooked']), 0);
    t.match(err, /Allowed choices are lfw-funneled, ffhq, none, landmarks/);
    err = '';
    t.equal(await main(['node', 'quantface', 'eval', '-m', '/nonexistent/m.json', '--bin', 'b']), 2);
    t.match(err, /error E_IO: cannot read \/nonexistent\/m\.json/);
  } finally {
    process.stderr.write = errWrite;
  }
});

t.test('eval on a generated .bin with a tiny TF.js model writes the reports', async (t) => {
  const dir = tempDir(t, 'cli');
  // the same tiny graph model as the embedder test: reshape + matmul, input 8x8
  writeTinyModel(dir, 5);
  await makeBin(join(dir, 'set.bin'), 20);
  const out = new Sink();
  const o = opts(t, { model: [join(dir, 'tiny.json'), join(dir, 'tiny.json')], bin: join(dir, 'set.bin'), out: join(dir, 'report') });
  const paths = await evalCommand(o, out, new Sink());
  t.match(out.text, /bin .*set\.bin: 20 pairs \(10 genuine, 10 impostor\), 40 images, align none/);
  t.match(out.text, /tiny#2/, 'a second copy of the same model gets its own name');
  const rep = JSON.parse(readFileSync(paths.json, 'utf8')) as EvalReport;
  t.equal(rep.models.length, 2);
  t.equal(rep.models[0]!.foldAccuracies!.length, 10);
  t.equal(rep.models[0]!.accuracy, rep.models[1]!.accuracy, 'same model, same accuracy');
  t.equal(rep.models[0]!.metaAssumed, true);
  t.ok(readFileSync(paths.html, 'utf8').includes('<svg'));
  t.ok(existsSync(join(dir, 'report', 'models', 'tiny.quantface.json')), 'the preprocessing used is saved for reuse');
  await t.rejects(evalCommand(opts(t, { model: [join(dir, 'tiny.json')], bin: join(dir, 'set.bin'), align: 'landmarks' }), new Sink(), new Sink()), { code: 'E_ARG' });
});

t.test('eval of mobileface on an LFW subset', { skip: !hasLfw() || !hasMobileface() ? 'needs ../shared/data/lfw and ../shared/models/mobileface: skipped' : false }, async (t) => {
  const out = new Sink();
  const o = opts(t, { model: [mobilefacePath], pairs: lfwDir, limit: 60 });
  const paths = await evalCommand(o, out, new Sink());
  const rep = JSON.parse(readFileSync(paths.json, 'utf8')) as EvalReport;
  t.equal(rep.dataset.nPairs, 60, '3 same + 3 different pairs per fold');
  t.equal(rep.dataset.align, 'lfw-funneled', 'the model metadata chooses the crop');
  t.ok(rep.models[0]!.accuracy! > 0.7, `accuracy on the subset ${rep.models[0]!.accuracy}`);
  t.match(out.text, /mobileface\s+\d+\.\d\d/);
});

t.test('--save-threshold stores the chosen cosine threshold in a .qfm; loadModel().verify() uses it', async (t) => {
  const { IResNet } = await import('../lib/models/index.js');
  const { saveQfm, loadQfm } = await import('../lib/io/index.js');
  const { loadModel } = await import('../lib/runtime/index.js');
  const { cosineThreshold } = await import('../lib/cli/eval.js');
  const dir = tempDir(t, 'cli-thr');
  const m = new IResNet([1, 1, 1, 1], { widths: [8, 16, 16, 32], numFeatures: 32, seed: 5 });
  m.eval();
  const qfm = join(dir, 'student.qfm');
  await saveQfm(m, qfm, { provenance: { notes: { keep: 'me' } } });
  const before = await loadModel(qfm);
  t.equal(before.threshold, undefined, 'a fresh file has no threshold');
  await before.dispose();
  await makeBin(join(dir, 'set.bin'), 20);
  writeTinyModel(dir, 5);
  await t.rejects(evalCommand(opts(t, { model: [join(dir, 'tiny.json')], bin: join(dir, 'set.bin'), saveThreshold: true }), new Sink(), new Sink()), { code: 'E_ARG', message: /\.qfm/ }, 'no .qfm model: refused before any work');
  await t.rejects(evalCommand(opts(t, { model: [qfm], bin: join(dir, 'set.bin'), saveThreshold: true, limit: 10 }), new Sink(), new Sink()), { code: 'E_ARG', message: /--limit/ });
  const out = new Sink();
  const paths = await evalCommand(opts(t, { model: [join(dir, 'tiny.json'), qfm], bin: join(dir, 'set.bin'), saveThreshold: true, out: join(dir, 'report') }), out, new Sink());
  const rep = JSON.parse(readFileSync(paths.json, 'utf8')) as EvalReport;
  const want = cosineThreshold(rep.models[1]!.foldThresholds!);
  t.ok(Number.isFinite(want) && want <= 1, `threshold ${want}`);
  t.match(out.text, /threshold -?\d\.\d{4} .*saved in .*student\.qfm/);
  t.notMatch(out.text, /saved in .*tiny\.json/, 'only .qfm files are written');
  const after = await loadModel(qfm);
  t.equal(after.threshold, want, 'loadModel reads the stored threshold');
  const a = new Float32Array(32).fill(1), b = new Float32Array(32).fill(1);
  t.equal(after.verify(a, b).threshold, want, 'verify() without a threshold uses it');
  await after.dispose();
  const loaded = await loadQfm(qfm);
  const notes = loaded.provenance.notes as Record<string, unknown>;
  t.equal(notes.keep, 'me', 'other notes are kept');
  t.match(notes.verifyThresholdFrom, { kind: 'bin', pairs: 20 });
  // identical embeddings before and after the rewrite
  const per = 112 * 112 * 3;
  const crop = Uint8Array.from({ length: per }, (_, i) => (i * 29) % 256);
  const m1 = await loadModel(m), m2 = await loadModel(qfm);
  t.same(Array.from(m2.embedSync(crop) as Float32Array), Array.from(m1.embedSync(crop) as Float32Array), 'the rewritten file embeds exactly as the model');
  await m1.dispose(); await m2.dispose();
});

t.test('updateQfmProvenance refuses a corrupted file and leaves it as it was', async (t) => {
  const { IResNet } = await import('../lib/models/index.js');
  const { saveQfm, updateQfmProvenance } = await import('../lib/io/index.js');
  const dir = tempDir(t, 'cli-thr-bad');
  const m = new IResNet([1, 1, 1, 1], { widths: [8, 16, 16, 32], numFeatures: 32, seed: 6 });
  m.eval();
  const qfm = join(dir, 'bad.qfm');
  await saveQfm(m, qfm);
  const bytes = readFileSync(qfm);
  bytes[bytes.length - 3] ^= 0x40;
  writeFileSync(qfm, bytes);
  await t.rejects(updateQfmProvenance(qfm, (p) => ({ ...p, notes: { verifyThreshold: 0.5 } })), { code: 'E_FORMAT', message: /checksum/ });
  t.same(readFileSync(qfm), bytes, 'file untouched');
  await t.rejects(updateQfmProvenance(join(dir, 'missing.qfm'), (p) => p), { code: 'E_IO' });
});
