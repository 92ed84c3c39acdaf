import t from 'tap';
import { join } from 'node:path';
import { ImageFolder } from '../lib/data/index.js';
import { alignByLandmarks, decodeImage } from '../lib/eval/align.js';
import { readLandmarks } from '../lib/eval/pairs.js';
import { has, lfwDir, mirror, realFfhqDir, sameFloats, syntheticDir } from './fixtures/data/util.js';

t.test('synthetic-faces: 231 images, 0 skipped, ffhq crops are left-right balanced', { skip: has(syntheticDir) ? false : `no ${syntheticDir} (../shared/data absent)` }, async (t) => {
  const ds = await ImageFolder.open(syntheticDir, { align: 'ffhq' });
  t.equal(ds.length, 231);
  t.equal(ds.skipped.length, 0);
  const ld = ds.loader({ batchSize: 64, workers: 2, shuffle: false, augment: false });
  t.teardown(() => ld.close());
  const info = await ld.ready();
  t.equal(info.images, 231);
  t.equal(info.skipped.length, 0, '0 skipped');
  t.equal(info.cachedImages, 231);
  t.comment(`decode + align of 231 faces: ${info.seconds.toFixed(2)} s with 2 workers`);
  const size = 112, per = size * size * 3;
  const mean = new Float64Array(per);
  let n = 0;
  for await (const b of ld.epoch(0)) {
    t.same(b.shape, [b.n, 112, 112, 3]);
    for (let i = 0; i < b.data.length; i++) mean[i % per]! += b.data[i]!;
    n += b.n;
  }
  t.equal(n, 231);
  const m = Float32Array.from(mean, (v) => v / n);
  t.ok(m.every((v) => v >= 0 && v <= 255), 'values in 0..255');
  // FFHQ alignment centres the face: the mean face is close to its mirror image
  const mm = mirror(m, size);
  let asym = 0, spread = 0, mu = 0;
  for (let i = 0; i < per; i++) mu += m[i]! / per;
  for (let i = 0; i < per; i++) { asym += Math.abs(m[i]! - mm[i]!) / per; spread += Math.abs(m[i]! - mu) / per; }
  t.ok(asym < 0.25 * spread, `mean face asymmetry ${asym.toFixed(2)} vs spread ${spread.toFixed(2)}`);
  // and a crop shifted by 8 px is not
  const shifted = await ImageFolder.open(syntheticDir, { align: 'box:46,31,196' });
  const a = await shifted.read(0), b0 = await ds.read(0);
  t.notOk(sameFloats(a, b0), 'another box gives other pixels');
});

t.test('real-faces-ffhq: 600 images, 0 skipped', { skip: has(realFfhqDir) ? false : `no ${realFfhqDir}` }, async (t) => {
  const ds = await ImageFolder.open(realFfhqDir, { align: 'ffhq' });
  t.equal(ds.length, 600);
  const ld = ds.loader({ batchSize: 100, workers: 2, cacheBytes: 0 });
  const info = await ld.ready();
  t.equal(info.images, 600);
  t.equal(info.skipped.length, 0);
  await ld.close();
});

t.test('lfw with landmarks:landmarks-5pt.txt matches lib/eval (continuous coordinates)', { skip: has(join(lfwDir, 'landmarks-5pt.txt')) ? false : `no ${lfwDir}` }, async (t) => {
  const ds = await ImageFolder.open(lfwDir, { align: `landmarks:${join(lfwDir, 'landmarks-5pt.txt')}` });
  t.equal(ds.length, 7701, 'every image of the pairs list has landmarks');
  t.ok(ds.skipped.every((s) => /\.txt$/.test(s.path) && /text file/.test(s.reason)), `only text files skipped: ${ds.skipped.map((s) => s.path).join(', ')}`);
  t.ok(ds.skipped.some((s) => s.path === 'pairs.txt'), 'pairs.txt is listed as skipped');
  const lms = await readLandmarks(join(lfwDir, 'landmarks-5pt.txt'));
  const sub = ds.subset([0, 1000, 4321, 7700]);
  const ld = sub.loader({ batchSize: 4, workers: 1, shuffle: false, augment: false });
  const b = await ld.batch(0, 0);
  await ld.close();
  for (let i = 0; i < 4; i++) {
    const f = sub.files[i]!;
    const want = alignByLandmarks(await decodeImage(join(lfwDir, f)), Array.from(lms.get(f)!, (v) => v - 0.5));
    t.ok(sameFloats(b.data.subarray(i * 112 * 112 * 3, (i + 1) * 112 * 112 * 3), want), f);
  }
});
