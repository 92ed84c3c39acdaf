// The face pipeline's native crops (native/warp.cc) against their JavaScript
// references on fresh random images, matrices and rectangles: warpAffineU8 =
// lib/data/align.ts warpAffine + lib/runtime/input.ts roundCrop, cropGreyU8 =
// lib/runtime/pipeline.ts cropGrey, byte for byte; outputs are poisoned first.
import t from 'tap';
import { binding } from '../lib/binding.js';
import { invertAffine, landmarkAffine, warpAffine, ARCFACE_TEMPLATE, type Affine } from '../lib/data/align.js';
import { roundCrop } from '../lib/runtime/input.js';
import { cropGrey, greyCrops } from '../lib/runtime/pipeline.js';

const seed = 1 + Math.floor(Math.random() * 1e9);
let s = seed >>> 0 || 1;
const rand = (): number => {
  s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
  return s / 4294967296;
};
const randInt = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const image = (w: number, h: number) => ({ data: Uint8Array.from({ length: w * h * 3 }, () => randInt(0, 255)), width: w, height: h });
const poisoned = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => randInt(0, 255));
const firstDiff = (a: Uint8Array, b: Uint8Array): string => {
  const i = a.findIndex((x, k) => x !== b[k]);
  return i < 0 ? 'none' : `at ${i}: ${a[i]} vs ${b[i]}`;
};

t.comment(`seed ${seed}`);

t.test('warpAffineU8 equals warpAffine + roundCrop (random images and transforms, several crops per call)', async (t) => {
  let checked = 0;
  for (let trial = 0; trial < 40; trial++) {
    const W = trial < 4 ? randInt(1, 3) : randInt(4, 300);
    const H = trial < 4 ? randInt(1, 3) : randInt(4, 260);
    const img = image(W, H);
    const size = pickSize(trial);
    const n = randInt(1, 4);
    const ms: Affine[] = [];
    for (let k = 0; k < n; k++) {
      const r = rand();
      if (r < 0.4) {
        // a face-like similarity: 5 landmarks somewhere in (or partly outside) the image
        const cx = rand() * W * 1.4 - 0.2 * W, cy = rand() * H * 1.4 - 0.2 * H, e = 3 + rand() * Math.max(W, H) * 0.5, a = (rand() - 0.5) * 1.2;
        const pts = [[-0.5, -0.4], [0.5, -0.4], [0, 0], [-0.4, 0.5], [0.4, 0.5]].flatMap(([x, y]) => [cx + e * (x! * Math.cos(a) - y! * Math.sin(a)), cy + e * (x! * Math.sin(a) + y! * Math.cos(a))]);
        ms.push(landmarkAffine(pts, ARCFACE_TEMPLATE, size));
      } else if (r < 0.6) {
        // integer-aligned translations and scales (samples on pixel centres and exact halves)
        const sc = [0.5, 1, 2, 4][randInt(0, 3)]!;
        ms.push(Float64Array.of(sc, 0, randInt(-size, W), 0, sc, randInt(-size, H)));
      } else {
        // general invertible affine
        let m: Affine;
        do m = Float64Array.of(rand() * 4 - 2, rand() * 4 - 2, rand() * W, rand() * 4 - 2, rand() * 4 - 2, rand() * H);
        while (Math.abs(m[0]! * m[4]! - m[1]! * m[3]!) < 0.05);
        ms.push(m);
      }
    }
    const inv = new Float64Array(6 * n);
    ms.forEach((m, k) => inv.set(invertAffine(m), 6 * k));
    const out = poisoned(n * size * size * 3);
    binding.warpAffineU8({ src: img.data, width: W, height: H, matrices: inv, size, out });
    for (let k = 0; k < n; k++) {
      const want = roundCrop(warpAffine(img, ms[k]!, size), new Uint8Array(size * size * 3));
      const got = out.subarray(k * size * size * 3, (k + 1) * size * size * 3);
      if (!want.every((x, i) => x === got[i])) {
        t.fail(`trial ${trial} crop ${k} (${W}x${H}, size ${size}) differs ${firstDiff(got, want)}`);
        return;
      }
      checked++;
    }
  }
  t.pass(`${checked} crops identical`);
});

function pickSize(trial: number): number {
  return [112, 1, 7, 64, 33][trial % 5]!;
}

t.test('cropGreyU8 equals cropGrey (random rectangles: inside, past the edges, shrinking by up to 12x)', async (t) => {
  let checked = 0;
  for (let trial = 0; trial < 40; trial++) {
    const W = trial < 4 ? randInt(1, 3) : randInt(4, 400);
    const H = trial < 4 ? randInt(1, 3) : randInt(4, 300);
    const img = image(W, H);
    const size = [64, 1, 5, 64, 17][trial % 5]!;
    const n = randInt(1, 5);
    const rects: Array<[number, number, number, number]> = [];
    for (let k = 0; k < n; k++) {
      const integer = rand() < 0.5; // the pipeline's rectangles are whole pixels
      const f = (v: number): number => (integer ? Math.trunc(v) : v);
      const side = Math.max(1, f(rand() < 0.3 ? rand() * 12 * size : rand() * Math.max(W, H)));
      rects.push([f(rand() * W * 1.2 - 0.1 * W), f(rand() * H * 1.2 - 0.1 * H), Math.max(0.5, Math.min(side, 2 * Math.max(W, H))), Math.max(0.5, Math.min(f(side * (0.5 + rand())), 2 * Math.max(W, H)))]);
    }
    const out = poisoned(n * size * size);
    binding.cropGreyU8({ src: img.data, width: W, height: H, rects: Float64Array.from(rects.flat()), size, out });
    for (let k = 0; k < n; k++) {
      const [x, y, w, h] = rects[k]!;
      const want = cropGrey(img, x, y, w, h, size);
      const got = out.subarray(k * size * size, (k + 1) * size * size);
      if (!want.every((v, i) => v === got[i])) {
        t.fail(`trial ${trial} rect ${k} [${rects[k]!.join(', ')}] of ${W}x${H}, size ${size} differs ${firstDiff(got, want)}`);
        return;
      }
      checked++;
    }
  }
  t.pass(`${checked} crops identical`);
  // the pipeline's helper: one call for all rectangles
  const img = image(200, 150);
  const rects: Array<[number, number, number, number]> = [[10, 20, 90, 90], [100, 40, 60, 60]];
  const both = greyCrops(img, rects);
  t.same([...both.subarray(64 * 64)], [...cropGrey(img, 100, 40, 60, 60, 64)], 'greyCrops: the second crop after the first');
  t.equal(greyCrops(img, []).length, 0, 'no rectangles, no bytes');
});

t.test('bad arguments: TypeError / RangeError naming the function, never a crash', async (t) => {
  const img = image(8, 6);
  const base = () => ({ src: img.data, width: 8, height: 6, matrices: Float64Array.of(1, 0, 0, 0, 1, 0), size: 4, out: new Uint8Array(48) });
  const grey = () => ({ src: img.data, width: 8, height: 6, rects: Float64Array.of(0, 0, 4, 4), size: 4, out: new Uint8Array(16) });
  const w = (o: Record<string, unknown>) => () => binding.warpAffineU8(o as never);
  const g = (o: Record<string, unknown>) => () => binding.cropGreyU8(o as never);
  t.throws(w({ ...base(), src: undefined }), TypeError);
  t.throws(w({ ...base(), src: new Float32Array(144) }), TypeError);
  t.throws(w({ ...base(), src: img.data.subarray(1) }), { name: 'RangeError', message: /warpAffineU8: src/ });
  t.throws(w({ ...base(), width: 0 }), RangeError);
  t.throws(w({ ...base(), matrices: Float64Array.of(1, 0, 0, 0, 1, 0, 1) }), { name: 'RangeError', message: /6 numbers per crop/ });
  t.throws(w({ ...base(), matrices: Float64Array.of(1, 0, NaN, 0, 1, 0) }), { name: 'RangeError', message: /finite/ });
  t.throws(w({ ...base(), matrices: Float64Array.of(1e300, 0, 0, 0, 1, Infinity) }), RangeError);
  t.throws(w({ ...base(), out: new Uint8Array(47) }), { name: 'RangeError', message: /warpAffineU8: out/ });
  t.throws(w({ ...base(), size: 0 }), RangeError);
  t.throws(w({ ...base(), size: 1.5 }), RangeError);
  t.throws(g({ ...grey(), rects: Float64Array.of(0, 0, 0, 4) }), { name: 'RangeError', message: /cropGreyU8: rects/ });
  t.throws(g({ ...grey(), rects: Float64Array.of(0, 0, 4, 17) }), { name: 'RangeError', message: /cropGreyU8: rects/ });
  t.throws(g({ ...grey(), rects: Float64Array.of(0, 0, 4) }), RangeError);
  t.throws(g({ ...grey(), rects: new Float32Array(4) }), TypeError);
  t.throws(g({ ...grey(), out: new Uint8Array(15) }), RangeError);
  // huge but finite coordinates are outside: zeros, no overflow
  const out = new Uint8Array(48).fill(7);
  binding.warpAffineU8({ ...base(), matrices: Float64Array.of(0, 0, 1e300, 0, 0, -1e300), out });
  t.ok(out.every((v) => v === 0), 'far outside the image: 0');
});
