import t from 'tap';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageFolder, parseAlign, readLandmarksFile, scanImageFolder, sniffImageFormat } from '../lib/data/index.js';
import { rgb, tempDir, writeImage } from './fixtures/data/util.js';

const grey = (w: number, v: number) => rgb(w, w, () => v);

t.test('scan: nested folders, content sniffing, sorted order, skipped files with reasons', async (t) => {
  const d = await tempDir(t);
  await writeImage(join(d, 'b.png'), 16, 16, grey(16, 10));
  await writeImage(join(d, 'a', 'z.jpg'), 16, 16, grey(16, 20), 'jpeg');
  await writeImage(join(d, 'a', 'deeper', 'x.webp'), 16, 16, grey(16, 30), 'webp');
  await writeImage(join(d, 'B.png'), 16, 16, grey(16, 40));
  // a PNG with a .jpg name and a JPEG without extension: recognised by content
  await writeImage(join(d, 'named-wrong.jpg'), 16, 16, grey(16, 50), 'png');
  await writeImage(join(d, 'noext'), 16, 16, grey(16, 60), 'jpeg');
  await writeFile(join(d, 'notes.txt'), 'these are not faces\n');
  await writeFile(join(d, 'garbage.jpg'), Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 151 + 7) & 255)));
  await writeFile(join(d, 'empty.jpg'), Buffer.alloc(0));
  await writeFile(join(d, 'anim.gif'), Buffer.from('GIF89a\x01\x00\x01\x00', 'latin1'));
  // a JPEG header followed by garbage: passes sniffing, fails decoding (found by the loader)
  await writeFile(join(d, 'corrupt.jpg'), Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(200, 0x55)]));
  await mkdir(join(d, 'emptydir'));
  await symlink(join(d, 'a'), join(d, 'a', 'deeper', 'loop')); // a folder loop must not recurse forever
  await symlink(join(d, 'missing.png'), join(d, 'dangling.png'));

  const scan = await scanImageFolder(d);
  t.same(scan.files.map((f) => f.path), ['B.png', 'a/deeper/x.webp', 'a/z.jpg', 'b.png', 'corrupt.jpg', 'named-wrong.jpg', 'noext'], 'code-unit order, nested, by content');
  t.same(scan.files.map((f) => f.format), ['png', 'webp', 'jpeg', 'png', 'jpeg', 'png', 'jpeg']);
  const reasons = Object.fromEntries(scan.skipped.map((s) => [s.path, s.reason]));
  t.same(Object.keys(reasons).sort(), ['anim.gif', 'dangling.png', 'empty.jpg', 'garbage.jpg', 'notes.txt']);
  t.match(reasons['notes.txt'], /text file/);
  t.match(reasons['empty.jpg'], /empty/);
  t.match(reasons['anim.gif'], /GIF/);
  t.match(reasons['garbage.jpg'], /not a JPEG, PNG or WebP/);
  t.match(reasons['dangling.png'], /broken symbolic link/);

  const ds = await ImageFolder.open(d, { align: 'none' });
  t.equal(ds.length, 7);
  t.equal(ds.skipped.length, 5);
  t.equal(ds.path(1), join(d, 'a', 'deeper', 'x.webp'));
  // the loader finds the corrupt JPEG, skips it, keeps going
  const ld = ds.loader({ batchSize: 4, workers: 1, augment: false, shuffle: false });
  t.teardown(() => ld.close());
  const info = await ld.ready();
  t.equal(info.images, 6, 'six readable images');
  t.equal(ld.skipped.length, 6, 'scan skips + the corrupt one');
  const corrupt = ld.skipped.find((s) => s.path === 'corrupt.jpg');
  t.ok(corrupt, 'corrupt.jpg is listed');
  t.match(corrupt!.reason, /cannot decode/);
  t.notOk(Array.from(ld.ids).includes(ds.files.indexOf('corrupt.jpg')), 'not among the usable ids');
  const got = [];
  for await (const b of ld.epoch(0)) got.push(...Array.from(b.ids).map((i) => ds.files[i]));
  t.same(got, ['B.png', 'a/deeper/x.webp', 'a/z.jpg', 'b.png', 'named-wrong.jpg', 'noext'], 'every usable image once, sorted without shuffle');
  // pixel values survive (lossless formats, 16 -> 112 'none' resize of a flat image)
  const x = await ds.read(1);
  t.ok(x.every((v) => Math.abs(v - 30) < 1e-4), 'webp decoded and resized');
});

t.test('empty and unreadable folders are clear errors', async (t) => {
  const d = await tempDir(t);
  await t.rejects(ImageFolder.open(d), { code: 'E_DATA', message: /empty/ }, 'empty folder');
  await writeFile(join(d, 'readme.txt'), 'hi');
  await t.rejects(ImageFolder.open(d), { code: 'E_DATA', message: /readme\.txt: a text file/ }, 'no image at all');
  await t.rejects(ImageFolder.open(join(d, 'nope')), { code: 'E_IO', message: /does not exist/ });
  await t.rejects(ImageFolder.open(join(d, 'readme.txt')), { code: 'E_IO', message: /not a folder/ });
  // candidates that all fail to decode: E_DATA from ready(), for 0 and 1 workers
  await writeFile(join(d, 'bad1.jpg'), Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(64, 1)]));
  await writeFile(join(d, 'bad2.png'), Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(64, 2)]));
  const ds = await ImageFolder.open(d);
  t.equal(ds.length, 2);
  for (const workers of [0, 1]) {
    const ld = ds.loader({ batchSize: 2, workers });
    await t.rejects(ld.ready(), { code: 'E_DATA', message: /no readable image.*bad1\.jpg: cannot decode/ }, `workers ${workers}`);
    await ld.close();
  }
});

t.test('a truncated JPEG and a non-square image under "none" are skipped with reasons', async (t) => {
  const d = await tempDir(t);
  await writeImage(join(d, 'ok.jpg'), 32, 32, grey(32, 100), 'jpeg');
  const full = readFileSync(join(d, 'ok.jpg'));
  await writeFile(join(d, 'trunc.jpg'), full.subarray(0, Math.floor(full.length * 0.7)));
  await writeImage(join(d, 'wide.png'), 40, 20, rgb(40, 20, () => 9));
  const ds = await ImageFolder.open(d, { align: 'none' });
  const ld = ds.loader({ batchSize: 1, workers: 0 });
  await ld.ready();
  t.equal(ld.length, 1);
  const r = Object.fromEntries(ld.skipped.map((s) => [s.path, s.reason]));
  // libvips words a truncated JPEG as 'premature end' or, depending on how far
  // its reader got before the end, 'corrupt header': both are the decoder's.
  t.match(r['trunc.jpg'], /cannot decode: .*(premature end|corrupt header)/i);
  t.match(r['wide.png'], /cannot align.*square/);
  await ld.close();
  await t.rejects(ds.read(ds.files.indexOf('trunc.jpg')), { code: 'E_FORMAT' }, 'read() of a bad image throws');
});

t.test('alignment presets parse; bad ones are E_ARG', async (t) => {
  t.same(parseAlign('ffhq'), { kind: 'preset', preset: 'ffhq' });
  t.same(parseAlign('none'), { kind: 'preset', preset: 'none' });
  t.same(parseAlign('lfw-funneled'), { kind: 'preset', preset: 'lfw-funneled' });
  t.same(parseAlign('box:58.9, 50.8,131.7'), { kind: 'box', box: { x: 58.9, y: 50.8, side: 131.7 } });
  t.same(parseAlign('landmarks:lm.txt'), { kind: 'landmarks', file: 'lm.txt' });
  for (const bad of ['box:1,2', 'box:1,2,0', 'box:a,b,c', 'box:1,2,-3', 'landmarks:', 'ffhq2', '']) {
    t.throws(() => parseAlign(bad), { code: 'E_ARG' }, `'${bad}'`);
  }
  t.throws(() => parseAlign({ kind: 'box', box: { x: 0, y: 0, side: Number.NaN } }), { code: 'E_ARG' });
  t.equal(sniffImageFormat(Uint8Array.from([0xff, 0xd8, 0xff, 0xdb])), 'jpeg');
  t.equal(sniffImageFormat(new TextEncoder().encode('RIFF\0\0\0\0WEBPVP8 ')), 'webp');
  t.equal(sniffImageFormat(new TextEncoder().encode('RIFF\0\0\0\0WAVEfmt ')), null);
  const d = await tempDir(t);
  await writeImage(join(d, 'x.png'), 8, 8, grey(8, 1));
  await t.rejects(ImageFolder.open(d, { size: 7 }), { code: 'E_ARG' });
  await t.rejects(ImageFolder.open(d, { align: 'box:1,2' }), { code: 'E_ARG' });
});

t.test('landmarks files: parsing, images without landmarks are skipped', async (t) => {
  const d = await tempDir(t);
  await writeImage(join(d, 'p', 'one.png'), 64, 64, grey(64, 5));
  await writeImage(join(d, 'p', 'two.png'), 64, 64, grey(64, 6));
  await writeFile(join(d, 'lm.txt'), '# comment\n\np/one.png 20 25 44 25 32 35 22 46 42 46 0.99\n./p/extra.png 1 2 3 4 5 6 7 8 9 10\n');
  const map = await readLandmarksFile(join(d, 'lm.txt'));
  t.same(Array.from(map.get('p/one.png')!), [20, 25, 44, 25, 32, 35, 22, 46, 42, 46], 'trailing score ignored');
  t.ok(map.has('p/extra.png'), './ prefix normalised');
  // relative to the dataset root when not found from the working directory
  const ds = await ImageFolder.open(d, { align: 'landmarks:lm.txt' });
  t.same(ds.files, ['p/one.png']);
  t.match(ds.skipped.find((s) => s.path === 'p/two.png')?.reason, /no landmarks/);
  t.same((ds.geom(0) as { landmarks: number[] }).landmarks, [19.5, 24.5, 43.5, 24.5, 31.5, 34.5, 21.5, 45.5, 41.5, 45.5], 'continuous -> pixel-index');
  const ds2 = await ImageFolder.open(d, { align: { kind: 'landmarks', file: join(d, 'lm.txt'), continuous: false } });
  t.same((ds2.geom(0) as { landmarks: number[] }).landmarks.slice(0, 2), [20, 25]);
  await writeFile(join(d, 'bad.txt'), 'p/one.png 1 2 3\n');
  await t.rejects(ImageFolder.open(d, { align: `landmarks:${join(d, 'bad.txt')}` }), { code: 'E_FORMAT', message: /bad\.txt:1/ });
  await writeFile(join(d, 'bad2.txt'), 'p/one.png 1 2 3 4 5 6 7 8 9 x\n');
  await t.rejects(ImageFolder.open(d, { align: `landmarks:${join(d, 'bad2.txt')}` }), { code: 'E_FORMAT', message: /'x' is not a number/ });
  await t.rejects(ImageFolder.open(d, { align: 'landmarks:nope.txt' }), { code: 'E_IO' });
});
