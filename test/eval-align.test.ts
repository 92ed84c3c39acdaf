import t from 'tap';
import sharp from 'sharp';
import {
  ARCFACE_TEMPLATE, alignByLandmarks, cropBox, decodeImage, flipHorizontal, invertAffine, presetBox, umeyama, warpAffine,
  type RgbImage,
} from '../lib/eval/align.js';
import { mulberry32 } from './fixtures/eval/util.js';

function pattern(w: number, h: number, f: (x: number, y: number, c: number) => number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = f(x, y, c);
  return { data, width: w, height: h };
}

t.test('Umeyama similarity: the issue check matrix', async (t) => {
  const m = umeyama([46.060, 62.026, 87.785, 60.323, 68.851, 77.656, 52.162, 99.875, 86.450, 98.648], ARCFACE_TEMPLATE);
  const want = [0.95337177, -0.04424345, -5.52607, 0.04424345, 0.95337177, -7.10842];
  // The issue prints 8 decimals for the linear part (its last digit differs
  // by ~1e-7 from the float64 result, as float32 landmarks give) and 5 for
  // the translation.
  [0, 1, 3, 4].forEach((i) => t.ok(Math.abs(m[i]! - want[i]!) < 2e-7, `m[${i}] = ${m[i]} vs ${want[i]}`));
  [2, 5].forEach((i) => t.ok(Math.abs(m[i]! - want[i]!) < 2e-5, `m[${i}] = ${m[i]} vs ${want[i]}`));
});

t.test('Umeyama recovers an exact similarity and is least squares', async (t) => {
  const seed = 31;
  t.comment(`seed ${seed}`);
  const rnd = mulberry32(seed);
  for (let k = 0; k < 20; k++) {
    const s = 0.3 + 2 * rnd(), th = (rnd() - 0.5) * 6, tx = 100 * (rnd() - 0.5), ty = 100 * (rnd() - 0.5);
    const a = s * Math.cos(th), b = s * Math.sin(th);
    const src = Array.from({ length: 5 }, () => [200 * rnd(), 200 * rnd()] as const);
    const dst = src.map(([x, y]) => [a * x - b * y + tx, b * x + a * y + ty] as const);
    const m = umeyama(src, dst);
    const exp = [a, -b, tx, b, a, ty];
    if (!exp.every((v, i) => Math.abs(v - m[i]!) < 1e-9 * Math.max(1, Math.abs(v)))) t.fail(`case ${k}: ${Array.from(m)} vs ${exp}`);
  }
  // noisy points: perturbing the solution never lowers the squared error
  const src = Array.from({ length: 5 }, () => [200 * rnd(), 200 * rnd()] as const);
  const dst = src.map(([x, y]) => [0.5 * x + 3 + 4 * rnd(), 0.5 * y - 7 + 4 * rnd()] as const);
  const m = umeyama(src, dst);
  const err = (p: number[]) => src.reduce((acc, [x, y], i) => acc + (p[0]! * x - p[1]! * y + p[2]! - dst[i]![0]) ** 2 + (p[1]! * x + p[0]! * y + p[3]! - dst[i]![1]) ** 2, 0);
  const base = [m[0]!, m[3]!, m[2]!, m[5]!];
  const e0 = err(base);
  for (let d = 0; d < 4; d++) for (const eps of [1e-4, -1e-4]) {
    const p = [...base]; p[d]! += eps;
    if (err(p) < e0) t.fail(`not a minimum along ${d}`);
  }
  t.pass('least-squares optimum');
  t.throws(() => umeyama([1, 1, 1, 1], [0, 0, 1, 1]), { code: 'E_ARG' });
  t.throws(() => umeyama([1, 1, 2, 2], [0, 0]), { code: 'E_SHAPE' });
  const inv = invertAffine(m);
  const [x, y] = [17, 42];
  const u = m[0]! * x + m[1]! * y + m[2]!, v = m[3]! * x + m[4]! * y + m[5]!;
  t.ok(Math.abs(inv[0]! * u + inv[1]! * v + inv[2]! - x) < 1e-9 && Math.abs(inv[3]! * u + inv[4]! * v + inv[5]! - y) < 1e-9, 'inverse');
});

t.test('warpAffine follows cv2.warpAffine (bilinear, border 0)', async (t) => {
  const img = pattern(112, 112, (x, y, c) => (x * 7 + y * 13 + c * 50) & 255);
  const id = warpAffine(img, Float64Array.of(1, 0, 0, 0, 1, 0));
  t.ok(id.every((v, i) => v === img.data[i]), 'identity copies');
  const sh = warpAffine(img, Float64Array.of(1, 0, 3, 0, 1, -2));
  // dst(u, v) = src(u - 3, v + 2); outside -> 0
  t.equal(sh[(10 * 112 + 10) * 3 + 1], img.data[(12 * 112 + 7) * 3 + 1]);
  t.equal(sh[(10 * 112 + 1) * 3], 0, 'left border');
  t.equal(sh[(111 * 112 + 50) * 3], 0, 'bottom border');
  const half = warpAffine(img, Float64Array.of(1, 0, 0.5, 0, 1, 0));
  // dst(u) = src(u - 0.5) = mean of u-1 and u
  const p = (x: number, y: number) => img.data[(y * 112 + x) * 3 + 2]!;
  t.ok(Math.abs(half[(20 * 112 + 30) * 3 + 2]! - (p(29, 20) + p(30, 20)) / 2) < 1e-4, 'half-pixel shift interpolates');
  t.ok(Math.abs(half[(20 * 112) * 3 + 2]! - p(0, 20) / 2) < 1e-4, 'blends with the zero border');
  // 2x zoom-out keeps the size argument
  t.equal(warpAffine(img, Float64Array.of(0.5, 0, 0, 0, 0.5, 0), 64).length, 64 * 64 * 3);
  t.throws(() => warpAffine(img, Float64Array.of(0, 0, 0, 0, 0, 0)), { code: 'E_ARG' });
});

t.test('landmark alignment lands the points on the template', async (t) => {
  // blobs of 5 colours at the template scaled by 1.6 and shifted, in a 240x240 image
  const colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]];
  const pts = ARCFACE_TEMPLATE.map(([x, y]) => [1.6 * x + 20, 1.6 * y + 15] as const);
  const img = pattern(240, 240, (x, y, c) => {
    for (let k = 0; k < 5; k++) if (Math.abs(x - Math.round(pts[k]![0])) <= 4 && Math.abs(y - Math.round(pts[k]![1])) <= 4) return colours[k]![c]!;
    return 128;
  });
  const crop = alignByLandmarks(img, pts.flat());
  ARCFACE_TEMPLATE.forEach(([x, y], k) => {
    const o = (Math.round(y) * 112 + Math.round(x)) * 3;
    const got = [crop[o]!, crop[o + 1]!, crop[o + 2]!];
    t.ok(got.every((v, c) => Math.abs(v - colours[k]![c]!) < 1), `landmark ${k}: ${got.join(',')}`);
  });
  t.throws(() => alignByLandmarks(img, [1, 2, 3]), { code: 'E_SHAPE' });
  t.throws(() => alignByLandmarks(img, [NaN, 0, 1, 1, 2, 2, 3, 3, 4, 4]), { code: 'E_ARG' });
});

t.test('box crop resamples with antialiasing', async (t) => {
  const img = pattern(112, 112, (x, y, c) => (x * 3 + y * 5 + c) & 255);
  const same = cropBox(img, { x: 0, y: 0, side: 112 });
  t.ok(same.every((v, i) => Math.abs(v - img.data[i]!) < 1e-9), 'a full box at the same size is the image');
  const checker = pattern(224, 224, (x, y) => ((x + y) & 1 ? 255 : 0));
  const down = cropBox(checker, { x: 0, y: 0, side: 224 });
  let lo = 255, hi = 0;
  for (let y = 4; y < 108; y++) for (let x = 4; x < 108; x++) { const v = down[(y * 112 + x) * 3]!; lo = Math.min(lo, v); hi = Math.max(hi, v); }
  t.ok(lo > 100 && hi < 155, `a 1-px checkerboard shrinks to grey (${lo}..${hi}), no aliasing`);
  // a fractional box: output pixel 20 is centred at 10.5 + 20.5 = 31.0
  // (continuous), between input pixels 30 and 31: their mean
  const grad = pattern(200, 200, (x) => x);
  const c = cropBox(grad, { x: 10.5, y: 0, side: 112 }, 112);
  t.ok(Math.abs(c[(50 * 112 + 20) * 3]! - 30.5) < 1e-6, `fractional box: ${c[(50 * 112 + 20) * 3]}`);
  t.throws(() => cropBox(img, { x: 0, y: 0, side: 0 }), { code: 'E_ARG' });
  t.throws(() => cropBox(img, { x: 0, y: 0, side: 10 }, 112, new Float32Array(10)), { code: 'E_SHAPE' });
});

t.test('presets', async (t) => {
  const l = presetBox('lfw-funneled', 250, 250);
  t.ok(Math.abs(l.x - 58.9) < 1e-12 && Math.abs(l.y - 50.8) < 1e-12 && Math.abs(l.side - 131.7) < 1e-12);
  const f = presetBox('ffhq', 256, 256);
  t.ok(Math.abs(f.x - 0.1183 * 256) < 1e-12 && Math.abs(f.y - 0.1199 * 256) < 1e-12 && Math.abs(f.side - 0.7646 * 256) < 1e-12);
  t.same(presetBox('none', 112, 112), { x: 0, y: 0, side: 112 });
  t.throws(() => presetBox('none', 100, 112), { code: 'E_ARG' });
  t.throws(() => presetBox('nope' as 'none', 100, 100), { code: 'E_ARG' });
});

t.test('decoding with sharp and flipping', async (t) => {
  const grey = await sharp({ create: { width: 8, height: 6, channels: 3, background: { r: 90, g: 90, b: 90 } } }).greyscale().png().toBuffer();
  const g = await decodeImage(new Uint8Array(grey));
  t.same([g.width, g.height, g.data.length], [8, 6, 8 * 6 * 3]);
  t.ok(g.data.every((v) => v === 90), 'grey expands to RGB');
  const rgba = await sharp({ create: { width: 4, height: 4, channels: 4, background: { r: 10, g: 20, b: 30, alpha: 0.5 } } }).png().toBuffer();
  const a = await decodeImage(new Uint8Array(rgba));
  t.same(Array.from(a.data.subarray(0, 3)), [10, 20, 30], 'alpha dropped');
  await t.rejects(decodeImage(new Uint8Array([1, 2, 3, 4])), { code: 'E_FORMAT' });
  await t.rejects(decodeImage('/nonexistent/x.jpg'), { code: 'E_IO' });
  const src = Float32Array.from({ length: 3 * 3 * 3 }, (_, i) => i);
  const dst = new Float32Array(27);
  flipHorizontal(src, 3, dst);
  t.same(Array.from(dst.subarray(0, 9)), [6, 7, 8, 3, 4, 5, 0, 1, 2]);
});
