import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as dataAlign from '../lib/data/align.js';
import * as evalAlign from '../lib/eval/align.js';
import {
  ARCFACE_TEMPLATE, IDENTITY_PLAN, ImageFolder, applyPhotometric, blendInto, decodeImage, jitterBox, renderGeometry,
  type AugPlan,
} from '../lib/data/index.js';
import { centroid, maxAbsDiff, mirror, rgb, sameFloats, tempDir, writeImage, writeRandomSet } from './fixtures/data/util.js';

/** A black w x w image with a red square [x0, x1) x [y0, y1). */
function square(w: number, x0: number, x1: number, y0: number, y1: number): Uint8Array {
  return rgb(w, w, (x, y, c) => (c === 0 && x >= x0 && x < x1 && y >= y0 && y < y1 ? 255 : 0));
}

t.test('lib/eval/align re-exports the lib/data alignment (same functions)', async (t) => {
  for (const k of ['cropBox', 'warpAffine', 'umeyama', 'alignByLandmarks', 'alignImage', 'decodeImage', 'presetBox', 'flipHorizontal', 'invertAffine', 'toRgb', 'ARCFACE_TEMPLATE', 'CROP_PRESETS'] as const) {
    t.equal((evalAlign as Record<string, unknown>)[k], (dataAlign as Record<string, unknown>)[k], k);
  }
});

t.test('box crop at scale 1 moves a square exactly; scale 2 keeps its centroid', async (t) => {
  const d = await tempDir(t);
  await writeImage(join(d, 'sq.png'), 224, 224, square(224, 100, 124, 60, 84));
  const ds = await ImageFolder.open(d, { align: 'box:56,28,112' });
  const x = await ds.read(0);
  let bad = 0;
  for (let v = 0; v < 112; v++) for (let u = 0; u < 112; u++) {
    const inside = u >= 44 && u < 68 && v >= 32 && v < 56;
    const o = (v * 112 + u) * 3;
    if (x[o] !== (inside ? 255 : 0) || x[o + 1] !== 0 || x[o + 2] !== 0) bad++;
  }
  t.equal(bad, 0, 'square at (44..67, 32..55), every other pixel black');

  const half = await (await ImageFolder.open(d, { align: 'box:0,0,224' })).read(0);
  const [cx, cy, mass] = centroid(half, 112, 0);
  // source centre (112, 72) continuous -> output (56, 36) continuous -> pixel-index - 0.5
  t.ok(Math.abs(cx - 55.5) < 1e-6 && Math.abs(cy - 35.5) < 1e-6, `centroid ${cx}, ${cy}`);
  t.ok(Math.abs(mass - 255 * 12 * 12) < 1e-2, `mass preserved (${mass})`);
  // output row v reads source rows 2v-1..2v+2 ([1,3,3,1]/8 taps): rows 31..40 are inside [60, 84)
  t.equal(half[(35 * 112 + 55) * 3], 255, 'interior stays 255');
  t.equal(half[(35 * 112 + 55) * 3 + 1], 0, 'green stays 0');
  t.ok(half[(35 * 112 + 50) * 3]! > 0 && half[(35 * 112 + 50) * 3]! < 255, 'edge is blended (antialiased)');

  // output size 150: the same box lands scaled by 150/112
  const big = await (await ImageFolder.open(d, { align: 'box:56,28,112', size: 150 })).read(0);
  t.equal(big.length, 150 * 150 * 3);
  const [bx, by] = centroid(big, 150, 0);
  // upsampling (bilinear) samples the square's edges unevenly: the centroid moves by a few hundredths
  t.ok(Math.abs(bx - (56 * 150 / 112 - 0.5)) < 0.06 && Math.abs(by - (44 * 150 / 112 - 0.5)) < 0.06, `150 crop centroid ${bx}, ${by}`);
});

t.test('ffhq and lfw-funneled presets crop the documented boxes', async (t) => {
  const d = await tempDir(t);
  await writeImage(join(d, 'f.png'), 256, 256, square(256, 90, 110, 140, 160));
  const f = await (await ImageFolder.open(d, { align: 'ffhq' })).read(0);
  const [fx, fy] = centroid(f, 112, 0);
  const ex = (100 - 0.1183 * 256) * 112 / (0.7646 * 256) - 0.5, ey = (150 - 0.1199 * 256) * 112 / (0.7646 * 256) - 0.5;
  t.ok(Math.abs(fx - ex) < 0.02 && Math.abs(fy - ey) < 0.02, `ffhq centroid ${fx},${fy} vs ${ex},${ey}`);

  const d2 = await tempDir(t);
  await writeImage(join(d2, 'l.png'), 250, 250, square(250, 120, 130, 100, 110));
  const l = await (await ImageFolder.open(d2, { align: 'lfw-funneled' })).read(0);
  const [lx, ly] = centroid(l, 112, 0);
  const elx = (125 - 58.9) * 112 / 131.7 - 0.5, ely = (105 - 50.8) * 112 / 131.7 - 0.5;
  t.ok(Math.abs(lx - elx) < 0.02 && Math.abs(ly - ely) < 0.02, `lfw centroid ${lx},${ly} vs ${elx},${ely}`);

  // 'none' on a 112x112 image is the identity
  const d3 = await tempDir(t);
  const px = rgb(112, 112, (x, y, c) => (x * 3 + y * 5 + c * 70) & 255);
  await writeImage(join(d3, 'n.png'), 112, 112, px);
  const n = await (await ImageFolder.open(d3)).read(0);
  t.ok(n.every((v, i) => v === px[i]), "'none' copies a 112x112 image exactly");
});

t.test('landmarks:FILE warps 5 points onto the ArcFace template (sizes 112 and 150)', async (t) => {
  const d = await tempDir(t);
  const W = 240, s = 1.6, th = (10 * Math.PI) / 180, tx = 12, ty = 20;
  const a = s * Math.cos(th), b = s * Math.sin(th);
  // template (pixel-index) -> image (pixel-index); dots are 7x7 blocks centred on integer pixels
  const pts = ARCFACE_TEMPLATE.map(([x, y]) => [Math.round(a * x - b * y + tx), Math.round(b * x + a * y + ty)] as const);
  const img = rgb(W, W, (x, y) => (pts.some(([px, py]) => Math.abs(x - px) <= 3 && Math.abs(y - py) <= 3) ? 200 : 0));
  await writeImage(join(d, 'img', 'face.png'), W, W, img);
  // the file uses continuous coordinates (+0.5), as ../shared/data/lfw/landmarks-5pt.txt does
  await writeFile(join(d, 'lm.txt'), `img/face.png ${pts.map(([x, y]) => `${x + 0.5} ${y + 0.5}`).join(' ')}\n`);
  // keys are relative to the folder opened: from img/, 'face.png' has no line -> nothing usable
  await t.rejects(ImageFolder.open(join(d, 'img'), { align: `landmarks:${join(d, 'lm.txt')}` }), { code: 'E_DATA', message: /no landmarks/ });
  const blob = (out: Float32Array, size: number, ex: number, ey: number): [number, number] => {
    let sx = 0, sy = 0, m = 0;
    for (let v = Math.max(0, Math.floor(ey - 6)); v <= Math.min(size - 1, ey + 6); v++) {
      for (let u = Math.max(0, Math.floor(ex - 6)); u <= Math.min(size - 1, ex + 6); u++) {
        const w = out[(v * size + u) * 3]!;
        sx += w * u; sy += w * v; m += w;
      }
    }
    return [sx / m, sy / m];
  };
  for (const size of [112, 150]) {
    const ds = await ImageFolder.open(d, { align: `landmarks:${join(d, 'lm.txt')}`, size });
    t.same(ds.files, ['img/face.png']);
    const out = await ds.read(0);
    // the dots sit at rounded positions: expected = the least-squares similarity of those points
    const tpl = ARCFACE_TEMPLATE.map(([x, y]) => [x * size / 112, y * size / 112] as const);
    const m = dataAlign.umeyama(pts, tpl);
    pts.forEach(([x, y], k) => {
      const ex = m[0]! * x + m[1]! * y + m[2]!, ey = m[3]! * x + m[4]! * y + m[5]!;
      t.ok(Math.hypot(ex - tpl[k]![0], ey - tpl[k]![1]) < 0.5, 'rounding moved the point by < 0.5 px');
      const [cx, cy] = blob(out, size, ex, ey);
      // bilinear warping without antialiasing aliases the blob edges (measured <= 0.09 px);
      // a 0.5 px coordinate-convention error would move the blob by 0.31 px (1/1.6 scale)
      t.ok(Math.hypot(cx - ex, cy - ey) < 0.15, `size ${size} point ${k}: (${cx.toFixed(3)}, ${cy.toFixed(3)}) vs (${ex.toFixed(3)}, ${ey.toFixed(3)})`);
    });
  }
  // with scale/shift jitter the points move by p' = s (p - c) + c + d size, c = (size - 1) / 2
  const ds = await ImageFolder.open(d, { align: `landmarks:${join(d, 'lm.txt')}` });
  const ld = ds.loader({ batchSize: 1, workers: 0, augment: { flip: false, scale: 0.15, shift: 0.06 }, seed: 2 });
  const m = dataAlign.umeyama(pts, ARCFACE_TEMPLATE);
  for (const epoch of [0, 1]) {
    const b = await ld.batch(epoch, 0);
    const p = ld.plan(epoch, 0).a;
    t.ok(p.scale !== 1 && p.dx !== 0, 'jitter drawn');
    pts.forEach(([x, y], k) => {
      const ex = p.scale * (m[0]! * x + m[1]! * y + m[2]! - 55.5) + 55.5 + p.dx * 112;
      const ey = p.scale * (m[3]! * x + m[4]! * y + m[5]! - 55.5) + 55.5 + p.dy * 112;
      const [cx, cy] = blob(b.data, 112, ex, ey);
      t.ok(Math.hypot(cx - ex, cy - ey) < 0.15, `epoch ${epoch} point ${k}: (${cx.toFixed(3)}, ${cy.toFixed(3)}) vs (${ex.toFixed(3)}, ${ey.toFixed(3)})`);
    });
  }
  await ld.close();
});

t.test('scale/shift jitter is part of the crop transform', async (t) => {
  // geometry of jitterBox: output u' = s (u - size/2) + size/2 + dx size
  const box = { x: 10, y: 20, side: 100 };
  const j = jitterBox(box, 2, 0.1, -0.05);
  const map = (bx: typeof box, x: number) => ((x - bx.x) * 112) / bx.side;
  for (const x of [10, 37.5, 110]) t.ok(Math.abs(map(j, x) - (2 * (map(box, x) - 56) + 56 + 11.2)) < 1e-9, `x=${x}`);
  t.equal(jitterBox(box, 1, 0, 0), box, 'identity returns the same box');

  const d = await tempDir(t);
  await writeImage(join(d, 'sq.png'), 224, 224, square(224, 100, 124, 60, 84));
  for (const k of [0, 1, 2]) await writeImage(join(d, `more${k}.png`), 224, 224, square(224, 100, 124, 60, 84));
  const ds = await ImageFolder.open(d, { align: 'box:56,28,112' });
  const ld = ds.loader({ batchSize: 4, workers: 1, seed: 3, shuffle: false, augment: { flip: false, scale: 0.25, shift: 0.1 } });
  t.teardown(() => ld.close());
  const info = await ld.ready();
  t.equal(info.cacheMode, 'decoded', 'geometric jitter caches the decoded source');
  const b = await ld.batch(0, 0);
  const c0 = [55.5, 43.5]; // centroid of the un-jittered square (pixel-index)
  for (let i = 0; i < b.n; i++) {
    const p = ld.plan(0, b.ids[i]!).a;
    t.ok(p.scale !== 1 && p.dx !== 0, 'jitter drawn');
    const [cx, cy] = centroid(b.data, 112, 0, () => true, i * 112 * 112 * 3);
    // continuous: u' = s (u - 56) + 56 + dx * 112
    const ex = p.scale * (c0[0]! + 0.5 - 56) + 56 + p.dx * 112 - 0.5;
    const ey = p.scale * (c0[1]! + 0.5 - 56) + 56 + p.dy * 112 - 0.5;
    // exact up to edge sampling when zooming in (see the 150 crop above)
    t.ok(Math.abs(cx - ex) < 0.06 && Math.abs(cy - ey) < 0.06, `sample ${i}: scale ${p.scale.toFixed(3)} shift ${p.dx.toFixed(3)},${p.dy.toFixed(3)}: ${cx.toFixed(3)},${cy.toFixed(3)} vs ${ex.toFixed(3)},${ey.toFixed(3)}`);
  }
});

t.test('flip: a flipped batch equals the mirrored pixels', async (t) => {
  const d = await tempDir(t);
  await writeRandomSet(d, 10, 40, 7);
  const ds = await ImageFolder.open(d);
  const plain = ds.loader({ batchSize: 10, workers: 0, shuffle: false, augment: false });
  const always = ds.loader({ batchSize: 10, workers: 1, shuffle: false, augment: { flip: 1 } });
  const half = ds.loader({ batchSize: 10, workers: 1, shuffle: false, augment: { flip: 0.5 }, seed: 5 });
  t.teardown(async () => { await plain.close(); await always.close(); await half.close(); });
  const [p, a, h] = await Promise.all([plain.batch(0, 0), always.batch(0, 0), half.batch(0, 0)]);
  const per = 112 * 112 * 3;
  t.same(Array.from(a.flipped), new Array(10).fill(1));
  for (let i = 0; i < 10; i++) {
    t.ok(sameFloats(a.data.subarray(i * per, (i + 1) * per), mirror(p.data, 112, i * per)), `sample ${i} mirrored exactly`);
  }
  const flips = Array.from(h.flipped);
  t.ok(flips.includes(0) && flips.includes(1), `p=0.5 flips some (${flips.join('')})`);
  for (let i = 0; i < 10; i++) {
    const want = flips[i] ? mirror(p.data, 112, i * per) : p.data.subarray(i * per, (i + 1) * per);
    if (!sameFloats(h.data.subarray(i * per, (i + 1) * per), want)) t.fail(`sample ${i} does not match its flip flag`);
  }
  t.pass('flags match the pixels');
});

t.test('colour jitter follows the formulas; mixup is lambda A + (1 - lambda) B', async (t) => {
  const d = await tempDir(t);
  await writeRandomSet(d, 6, 40, 11);
  const ds = await ImageFolder.open(d);
  const plain = ds.loader({ batchSize: 6, workers: 0, shuffle: false, augment: false });
  const col = ds.loader({ batchSize: 6, workers: 1, shuffle: false, seed: 9, augment: { flip: false, brightness: 0.3, contrast: 0.3, saturation: 0.3 } });
  const mix = ds.loader({ batchSize: 6, workers: 1, shuffle: false, seed: 9, augment: { flip: false, mixup: { prob: 1, alpha: 0.4 } } });
  t.teardown(async () => { await plain.close(); await col.close(); await mix.close(); });
  const [p, c, m] = await Promise.all([plain.batch(0, 0), col.batch(0, 0), mix.batch(0, 0)]);
  const per = 112 * 112 * 3;
  const cl = (v: number) => Math.min(255, Math.max(0, v));
  for (let i = 0; i < 6; i++) {
    const plan = col.plan(0, c.ids[i]!).a;
    t.ok(plan.brightness !== 1 && plan.contrast !== 1 && plan.saturation !== 1, 'factors drawn');
    // float64 reference of torchvision's adjust_brightness / _contrast / _saturation
    const x = Array.from(p.data.subarray(i * per, (i + 1) * per), (v) => cl(v * plan.brightness));
    let mean = 0;
    for (let q = 0; q < x.length; q += 3) mean += 0.299 * x[q]! + 0.587 * x[q + 1]! + 0.114 * x[q + 2]!;
    mean /= 112 * 112;
    for (let q = 0; q < x.length; q++) x[q] = cl((x[q]! - mean) * plan.contrast + mean);
    for (let q = 0; q < x.length; q += 3) {
      const g = 0.299 * x[q]! + 0.587 * x[q + 1]! + 0.114 * x[q + 2]!;
      for (let k = 0; k < 3; k++) x[q + k] = cl((x[q + k]! - g) * plan.saturation + g);
    }
    // the loader rounds to float32 after each step: a few ulps of 255
    const err = maxAbsDiff(c.data.subarray(i * per, (i + 1) * per), x);
    t.ok(err < 1e-3, `sample ${i}: colour jitter max error ${err}`);
  }
  t.ok(m.mix, 'mix info present');
  for (let i = 0; i < 6; i++) {
    const partner = m.mix!.partner[i]!, lambda = m.mix!.lambda[i]!;
    const id = m.ids[i]!;
    t.ok(partner >= 0 && partner !== id && lambda > 0 && lambda < 1, `sample ${i}: partner ${partner}, lambda ${lambda.toFixed(4)}`);
    const lam = mix.plan(0, id).mix!.lambda; // float64 lambda used for the blend
    const A = p.data.subarray(i * per, (i + 1) * per);
    const B = p.data.subarray(partner * per, (partner + 1) * per); // plain batch is in id order
    const want = Array.from(A, (v, q) => lam * v + (1 - lam) * B[q]!);
    const err = maxAbsDiff(m.data.subarray(i * per, (i + 1) * per), want);
    t.ok(err < 1e-4, `sample ${i}: mixup max error ${err}`);
  }
});

t.test('a full plan (jitter + flip + colour + mixup) equals applying it by hand', async (t) => {
  const d = await tempDir(t);
  await writeRandomSet(d, 5, 64, 21);
  const ds = await ImageFolder.open(d, { align: 'box:4,6,52' });
  const ld = ds.loader({ batchSize: 5, workers: 2, seed: 4, augment: { flip: true, scale: 0.2, shift: 0.08, brightness: 0.2, contrast: 0.2, saturation: 0.2, mixup: 0.7 } });
  t.teardown(() => ld.close());
  const b = await ld.batch(2, 0);
  const per = 112 * 112 * 3;
  let mixed = 0;
  for (let i = 0; i < b.n; i++) {
    const sp = ld.plan(2, b.ids[i]!);
    const face = async (id: number, plan: AugPlan) => {
      const out = new Float32Array(per);
      renderGeometry(await decodeImage(ds.path(id)), ds.geom(id), plan, 112, out, 0);
      applyPhotometric(out, 0, 112, plan);
      return out;
    };
    const want = await face(sp.id, sp.a);
    if (sp.mix) { mixed++; blendInto(want, 0, await face(sp.mix.partner, sp.mix.b), 0, sp.mix.lambda, per); }
    t.ok(sameFloats(b.data.subarray(i * per, (i + 1) * per), want), `sample ${i} bit-identical`);
  }
  t.ok(mixed > 0, `${mixed} of 5 mixed`);
  const id = new Float32Array(per);
  renderGeometry(await decodeImage(ds.path(0)), ds.geom(0), IDENTITY_PLAN, 112, id, 0);
  t.ok(sameFloats(id, await ds.read(0)), 'identity plan = read()');
});
