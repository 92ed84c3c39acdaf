// Bounded decoding (lib/runtime/decode.ts) and the in-flight budget
// (lib/runtime/budget.ts): region crops equal full-decode crops bit for bit
// (presets, boxes, landmarks, all 8 EXIF orientations), large images keep
// close to them, bad images give E_FORMAT, one large image's peak memory
// stays small, and the budget queues, lets small work pass and refuses
// with E_BUSY / E_SHAPE.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { alignImage, type AlignSpec } from '../lib/data/align.js';
import { finishInput, inspectInput, prepareInput, resolveLimits, roundCrop } from '../lib/runtime/input.js';
import { planCrop, orientRgb, EXACT_PIXELS } from '../lib/runtime/decode.js';
import { InflightBudget, configureBudget, inflightBudget } from '../lib/runtime/budget.js';
import { loadModel } from '../lib/runtime/index.js';
import { packageRoot } from '../lib/binding.js';
import { QuantFaceError } from '../lib/errors.js';
import { TEACHER, missingData } from './fixtures/runtime-faces.js';

const code = (c: string) => ({ name: 'QuantFaceError', code: c });

/** A deterministic textured RGB image (smooth gradients plus hashed noise). */
function texture(w: number, h: number, seed = 1): Buffer {
  const b = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const n = Math.imul(x * 73856093 ^ y * 19349663 ^ seed * 83492791, 2654435761) >>> 24;
      const i = (y * w + x) * 3;
      b[i] = (x * 255) / w * 0.7 + n * 0.3;
      b[i + 1] = (y * 255) / h * 0.7 + (255 - n) * 0.3;
      b[i + 2] = ((x + y) * 127) / (w + h) + n * 0.5;
    }
  }
  return b;
}

/** The crop of the fully decoded, EXIF-oriented image through lib/data (what the runtime did before). */
async function reference(bytes: Buffer, spec: AlignSpec): Promise<Uint8Array> {
  const { data, info } = await sharp(bytes).rotate().removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  return roundCrop(alignImage({ data: new Uint8Array(data), width: info.width, height: info.height }, spec, 112), new Uint8Array(112 * 112 * 3));
}

const limits = resolveLimits({});
const prep = (b: Buffer, align: AlignSpec) => prepareInput(b, { size: 112, align, limits });
const eq = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
function meanDiff(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

t.test('region decoding equals the full decode bit for bit (presets, boxes, landmarks; every EXIF orientation)', async (t) => {
  const raw = texture(300, 200);
  const base = sharp(raw, { raw: { width: 300, height: 200, channels: 3 } });
  const specs: [string, AlignSpec][] = [
    ['ffhq', { kind: 'preset', preset: 'ffhq' }],
    ['lfw-funneled', { kind: 'preset', preset: 'lfw-funneled' }],
    ['box inside', { kind: 'box', box: { x: 40.3, y: 20.7, side: 150.2 } }],
    ['box over the edge', { kind: 'box', box: { x: -30, y: 120, side: 140 } }],
    ['box outside', { kind: 'box', box: { x: 500, y: 500, side: 50 } }],
    ['landmarks', { kind: 'landmarks', landmarks: [100, 90, 160, 88, 130, 120, 105, 150, 155, 150] }],
    ['landmarks, rotated face', { kind: 'landmarks', landmarks: [90, 80, 150, 110, 110, 130, 80, 150, 130, 175] }],
  ];
  for (const fmt of ['jpeg', 'png', 'webp'] as const) {
    for (let o = 1; o <= 8; o++) {
      if (fmt !== 'jpeg' && o > 1 && o !== 6) continue; // all 8 on JPEG; 1 and 6 on the others
      let p = base.clone();
      p = fmt === 'jpeg' ? p.jpeg({ quality: 92 }) : fmt === 'png' ? p.png() : p.webp({ quality: 90 });
      const bytes = await p.withMetadata({ orientation: o }).toBuffer();
      for (const [name, spec] of specs) {
        const got = await prep(bytes, spec);
        t.ok(eq(got, await reference(bytes, spec)), `${fmt}, orientation ${o}, ${name}`);
      }
    }
  }
  const square = await sharp(texture(180, 180), { raw: { width: 180, height: 180, channels: 3 } }).png().toBuffer();
  t.ok(eq(await prep(square, { kind: 'preset', preset: 'none' }), await reference(square, { kind: 'preset', preset: 'none' })), "align 'none'");
});

t.test('a decoded region is only what the crop reads', async (t) => {
  const small = planCrop({ kind: 'box', box: { x: 1000, y: 2000, side: 200 } }, 6000, 6000, 112);
  t.equal(small.shrink, false);
  t.ok((small.region.x1 - small.region.x0) * (small.region.y1 - small.region.y0) < 220 * 220, 'a 200 px face in a 6000x6000 image: a ~210x210 region');
  const big = planCrop({ kind: 'preset', preset: 'ffhq' }, 6000, 6000, 112);
  t.equal(big.shrink, true, 'a face over 3x the crop is shrunk first');
  t.ok(big.outWidth <= 300 && big.outHeight <= 300, `to ${big.outWidth}x${big.outHeight}`);
  const lm = planCrop({ kind: 'landmarks', landmarks: [1000, 1200, 3000, 1200, 2000, 2200, 1200, 3200, 2800, 3200] }, 6000, 6000, 112);
  t.equal(lm.shrink, true, 'a landmark face of ~40x the crop is shrunk first');
  t.ok(lm.outWidth * lm.outHeight < 400 * 400, `to ${lm.outWidth}x${lm.outHeight}`);
  // orientation helper: 6 = rotate 90 clockwise
  const o6 = orientRgb(Uint8Array.from([1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]), 3, 2, 6);
  t.same([o6.width, o6.height], [2, 3]);
  t.same(Array.from(o6.data.filter((_, i) => i % 3 === 0)), [4, 1, 5, 2, 6, 3]);
});

t.test('large images: shrunk in libvips, close to the full-resolution crop', async (t) => {
  const side = 2400; // 5.8 M pixels: over EXACT_PIXELS, so JPEG / WebP use shrink-on-load
  t.ok(side * side > EXACT_PIXELS);
  const raw = await sharp(texture(256, 256, 7), { raw: { width: 256, height: 256, channels: 3 } }).blur(2).resize(side, side).raw().toBuffer();
  const img = sharp(raw, { raw: { width: side, height: side, channels: 3 } });
  const k = side / 256;
  const specs: [string, AlignSpec][] = [
    ['ffhq', { kind: 'preset', preset: 'ffhq' }],
    ['none', { kind: 'preset', preset: 'none' }],
    ['landmarks', { kind: 'landmarks', landmarks: [95, 120, 160, 120, 128, 150, 100, 185, 155, 185].map((v) => v * k) }],
  ];
  for (const fmt of ['png', 'jpeg', 'webp'] as const) {
    const bytes = await (fmt === 'png' ? img.clone().png() : fmt === 'jpeg' ? img.clone().jpeg({ quality: 95 }) : img.clone().webp({ quality: 95 })).toBuffer();
    for (const [name, spec] of specs) {
      const d = meanDiff(await prep(bytes, spec), await reference(bytes, spec));
      t.ok(d < 3, `${fmt} ${name}: mean |difference| ${d.toFixed(2)} < 3 (of 255)`);
    }
  }
  // a landmark face whose region is over EXACT_PIXELS: shrunk first, then warped
  const side2 = 4000;
  const k2 = side2 / 256;
  // (content coarse enough that the full-resolution warp, which does not low-pass, does not alias)
  const big = await sharp(texture(24, 24, 7), { raw: { width: 24, height: 24, channels: 3 } }).resize(side2, side2, { kernel: 'cubic' }).jpeg({ quality: 90 }).toBuffer();
  const lm: AlignSpec = { kind: 'landmarks', landmarks: [95, 120, 160, 120, 128, 150, 100, 185, 155, 185].map((v) => v * k2) };
  t.equal(planCrop(lm, side2, side2, 112).shrink, true, 'the 4000x4000 landmark case takes the shrink path');
  const d = meanDiff(await prep(big, lm), await reference(big, lm));
  t.ok(d < 3, `jpeg landmarks, 4000x4000, shrunk: mean |difference| ${d.toFixed(2)} < 3 (of 255)`);
});

t.test('bad images: E_FORMAT, never a crash or a hang', async (t) => {
  const png = await sharp(texture(400, 400), { raw: { width: 400, height: 400, channels: 3 } }).png().toBuffer();
  const jpeg = await sharp(texture(400, 400), { raw: { width: 400, height: 400, channels: 3 } }).jpeg().toBuffer();
  const spec: AlignSpec = { kind: 'preset', preset: 'none' };
  await t.rejects(prep(png.subarray(0, 2000), spec), code('E_FORMAT'), 'truncated PNG');
  await t.rejects(prep(jpeg.subarray(0, 300), spec), code('E_FORMAT'), 'truncated JPEG header');
  await t.rejects(prep(Buffer.concat([png.subarray(0, 40), Buffer.alloc(3000, 0x41)]), spec), code('E_FORMAT'), 'PNG header + garbage');
  await t.rejects(prep(Buffer.alloc(0), spec), code('E_FORMAT'), 'empty');
  const huge = await sharp({ create: { width: 7000, height: 7000, channels: 3, background: '#000' }, limitInputPixels: false }).png().toBuffer();
  await t.rejects(prep(huge, spec), { code: 'E_SHAPE', message: /limit/ }, '49 M pixels: over the 40 M limit, refused on the header');
  await t.rejects(prepareInput(jpeg, { size: 112, align: { kind: 'landmarks', landmarks: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1] }, limits }), code('E_ARG'), 'degenerate landmarks');
  // files are read by libvips (not held in memory); one that disappears before its decode is E_IO
  const dir = mkdtempSync(join(tmpdir(), 'qf-decode-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'a.png');
  writeFileSync(f, png);
  const o = { size: 112, align: spec, limits };
  t.ok(eq(await prepareInput(f, o), await prep(png, spec)), 'a path gives the crop of its bytes');
  const insp = await inspectInput(f, o);
  rmSync(f);
  await t.rejects(finishInput(insp, o), code('E_IO'), 'a file removed between the header and the decode');
  writeFileSync(f, '');
  await t.rejects(prepareInput(f, o), code('E_FORMAT'), 'an empty file');
});

t.test('peak memory of one 36 M pixel PNG stays small (child process)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qf-decode-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'black.png');
  writeFileSync(file, await sharp({ create: { width: 6000, height: 6000, channels: 3, background: '#000' }, limitInputPixels: false }).png().toBuffer());
  const out = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', resolve(packageRoot, 'bench/decode-memory.ts'), '--child', '--impl', 'lib/runtime/input.ts', '--file', file, '--align', 'ffhq'], { cwd: packageRoot, encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').pop()!) as { ok: boolean; addedMb: number; peakMb: number; error?: string };
  t.ok(r.ok, `decoded (${r.error ?? 'ok'})`);
  // the whole image is 108 MB of RGB (the earlier decoder added ~130 MB for it)
  t.ok(r.addedMb < 60, `one 6000x6000 PNG added ${r.addedMb.toFixed(0)} MB at peak (< 60)`);
});

t.test('budget: FIFO, small work passes, bounded queue, timeouts', async (t) => {
  const b = new InflightBudget({ maxInflightBytes: 1000, maxInflightPixels: 100, maxWaiting: 3, queueTimeoutMs: 200, smallPixels: 5 });
  const a = await b.acquire({ bytes: 600, pixels: 60 });
  const order: string[] = [];
  const big = b.acquire({ bytes: 600, pixels: 60 }).then((l) => (order.push('big'), l));
  const small = b.acquire({ bytes: 10, pixels: 2 }).then((l) => (order.push('small'), l));
  const crop = await b.acquire({ bytes: 50, pixels: 0 });
  t.equal(b.stats().waiting, 1, 'the large decode waits; the small one and the crop reservation passed');
  (await small).release();
  t.throws(() => b.admit(3), code('E_BUSY'), 'a call that would overfill the queue is refused at once');
  t.ok(b.stats().refused >= 1, 'refusals are counted');
  a.release();
  const l = await big;
  t.same(order, ['small', 'big']);
  t.equal(b.stats().decoding, 1);
  await t.rejects(b.acquire({ bytes: 600, pixels: 50 }), code('E_BUSY'), 'a wait past queueTimeoutMs is refused');
  await t.rejects(b.acquire({ bytes: 5000, pixels: 1 }), code('E_SHAPE'), 'more than the whole budget: E_SHAPE');
  l.release({ bytes: 600, pixels: 0 });
  t.equal(b.stats().bytes, 50, 'a partial release keeps the rest');
  l.release();
  crop.release();
  t.same({ bytes: b.stats().bytes, pixels: b.stats().pixels, decoding: b.stats().decoding, waiting: b.stats().waiting }, { bytes: 0, pixels: 0, decoding: 0, waiting: 0 });
  t.throws(() => new InflightBudget({ maxWaiting: 0 }), code('E_ARG'));
  t.throws(() => new InflightBudget({ nope: 1 } as never), code('E_ARG'));
});

const skip = missingData();
t.test('embed(): per-call pixel total, decode cost over the budget, E_BUSY under a small budget', { skip }, async (t) => {
  const before = inflightBudget().limits;
  const m = await loadModel(TEACHER, { limits: { maxRequestPixels: 3_000_000 } });
  t.teardown(async () => {
    configureBudget(before);
    await m.dispose();
  });
  const img = await sharp({ create: { width: 1200, height: 1200, channels: 3, background: '#444' } }).png().toBuffer(); // 1.44 M pixels
  t.equal((await m.embed([img, img])).length, 2, 'two images of 1.44 M pixels fit 3 M per call');
  await t.rejects(m.embed([img, img, img]), { code: 'E_SHAPE', message: /per call/ }, 'three do not: E_SHAPE before any decode');
  const prog = await sharp({ create: { width: 1500, height: 1500, channels: 3, background: '#444' } }).jpeg({ progressive: true }).toBuffer();
  configureBudget({ maxInflightBytes: 4 << 20 });
  await t.rejects(m.embed(prog), { code: 'E_SHAPE', message: /in-flight budget/ }, 'a progressive JPEG decodes as a whole frame: 6.75 MB over a 4 MiB budget');
  configureBudget({ maxInflightBytes: 64 << 20, maxInflightPixels: 2_000_000, maxWaiting: 2, queueTimeoutMs: 5_000, smallPixels: 1 });
  const calls = Array.from({ length: 12 }, () => m.embed(img).then(() => 'ok', (e: QuantFaceError) => e.code));
  const res = await Promise.all(calls);
  t.ok(res.includes('ok'), `some calls ran (${res.filter((r) => r === 'ok').length})`);
  t.ok(res.includes('E_BUSY'), `the rest were refused with E_BUSY (${res.filter((r) => r === 'E_BUSY').length})`);
  t.ok(res.every((r) => r === 'ok' || r === 'E_BUSY'), 'nothing else');
  const st = m.stats().inflight;
  t.same({ bytes: st.bytes, pixels: st.pixels, waiting: st.waiting }, { bytes: 0, pixels: 0, waiting: 0 }, 'everything given back');
});
