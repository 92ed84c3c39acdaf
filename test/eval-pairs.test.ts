import t from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lfwImagePath, pairImagePath, parsePairs, readLandmarks, readPairs } from '../lib/eval/pairs.js';
import { hasLfw, lfwDir, tempDir } from './fixtures/eval/util.js';

const SMALL = `2\t2
Alice\t1\t2
Bob\t3\t4
Alice\t1\tBob\t3
Carol\t2\tDan\t1
Eve 1 2
Frank 1 2
Eve 2 Frank 1
Carol 1 Alice 2
`;

t.test('parses same and different lines, with the header', async (t) => {
  const p = parsePairs(SMALL, '/data');
  t.same(p.header, { folds: 2, perFold: 2 });
  t.same(p.issame, [true, true, false, false, true, true, false, false]);
  t.equal(lfwImagePath('Bob', 3), 'Bob/Bob_0003.jpg');
  t.equal(p.images[p.left[2]!], 'Alice/Alice_0001.jpg');
  t.equal(p.images[p.right[2]!], 'Bob/Bob_0003.jpg');
  t.equal(p.left[2], p.left[0], 'an image used twice is listed once');
  t.equal(p.images.length, new Set(p.images).size);
  t.equal(pairImagePath(p, 0), '/data/Alice/Alice_0001.jpg');
});

t.test('limit keeps every fold balanced (with a header) or takes the first N', async (t) => {
  const p = parsePairs(SMALL, '/d', { limit: 4 });
  // k = floor(4 / (2*2)) = 1 same + 1 different per fold
  t.same(p.issame, [true, false, true, false]);
  t.equal(p.images[p.left[2]!], 'Eve/Eve_0001.jpg');
  const noHeader = parsePairs(SMALL.split('\n').slice(1).join('\n'), '/d', { limit: 3 });
  t.same(noHeader.issame, [true, true, false]);
  t.equal(noHeader.header, undefined);
});

t.test('format errors name the line', async (t) => {
  t.throws(() => parsePairs('Alice 1\n', '/d', {}, 'p.txt'), { code: 'E_FORMAT', message: /p\.txt:1: expected/ });
  t.throws(() => parsePairs('Alice x 2\n', '/d', {}, 'p.txt'), { code: 'E_FORMAT', message: /'x' is not an image number/ });
  t.throws(() => parsePairs('10\t300\nA 1 2\n', '/d', {}, 'p.txt'), { code: 'E_FORMAT', message: /announces 10 folds/ });
  t.throws(() => parsePairs('\n\n', '/d'), { code: 'E_FORMAT', message: /no pairs/ });
});

t.test('reads a folder or a file; landmarks files', async (t) => {
  const dir = tempDir(t, 'pairs');
  writeFileSync(join(dir, 'pairs.txt'), SMALL);
  t.equal((await readPairs(dir)).issame.length, 8);
  t.equal((await readPairs(join(dir, 'pairs.txt'))).root, dir);
  await t.rejects(readPairs(join(dir, 'missing')), { code: 'E_IO' });
  writeFileSync(join(dir, 'lm.txt'), 'Alice/Alice_0001.jpg 1 2 3 4 5 6 7 8 9 10\n\nBob/Bob_0003.jpg 1 2 3 4 5 6 7 8 9 10 0.99\n');
  const lm = await readLandmarks(join(dir, 'lm.txt'));
  t.same(Array.from(lm.get('Alice/Alice_0001.jpg')!), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  t.equal(lm.size, 2);
  writeFileSync(join(dir, 'bad.txt'), 'a.jpg 1 2 3\n');
  await t.rejects(readLandmarks(join(dir, 'bad.txt')), { code: 'E_FORMAT', message: /bad\.txt:1/ });
  writeFileSync(join(dir, 'bad2.txt'), 'a.jpg 1 2 3 4 5 6 7 8 9 zz\n');
  await t.rejects(readLandmarks(join(dir, 'bad2.txt')), { code: 'E_FORMAT', message: /'zz' is not a number/ });
});

t.test('the real LFW pairs list', { skip: !hasLfw() ? `LFW not found at ${lfwDir} (../shared/data/lfw): skipped` : false }, async (t) => {
  const p = await readPairs(lfwDir);
  t.same(p.header, { folds: 10, perFold: 300 });
  t.equal(p.issame.length, 6000);
  t.equal(p.images.length, 7701, 'the 7,701 images the pairs name');
  for (let f = 0; f < 10; f++) {
    t.equal(p.issame.slice(f * 600, f * 600 + 300).every((x) => x), true, `fold ${f}: 300 same first`);
    t.equal(p.issame.slice(f * 600 + 300, f * 600 + 600).some((x) => x), false, `fold ${f}: then 300 different`);
  }
  t.ok([0, 1, 2500, 7700].every((k) => existsSync(pairImagePath(p, k))), 'image files exist');
  const lim = await readPairs(lfwDir, { limit: 100 });
  t.equal(lim.issame.length, 100, '5 same + 5 different per fold');
  const lm = await readLandmarks(join(lfwDir, 'landmarks-5pt.txt'));
  t.ok(p.images.every((im) => lm.has(im)), 'every pair image has landmarks');
});
