/**
 * The data-free source (generated:N): painted faces refined by inverting
 * the teacher towards random identities; the refinement raises the
 * teacher's agreement with its targets; the set is cached on disk (a
 * second request reuses it, complete or not at all); quantize() trains on
 * it end to end.
 */
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateFaces, invertTowardsTargets, paintFace, GENERATOR_VERSION } from '../lib/distill/generate.js';
import { loadTeacher } from '../lib/distill/teacher.js';
import { quantize } from '../lib/distill/trainer.js';
import { Rng } from '../lib/tensor.js';
import { hasMobileface, mobilefacePath, tempDir, tinyTeacher } from './fixtures/distill/util.js';

const S = 112 * 112 * 3;

t.test('inversion moves the teacher towards the targets and keeps pixels in range', async (t) => {
  const teacher = await loadTeacher(tinyTeacher());
  const n = 4;
  const faces = new Float32Array(n * S);
  const rng = new Rng(5);
  for (let i = 0; i < n; i++) faces.set(paintFace(rng.fork()), i * S);
  const before = faces.slice();
  const o = { iterations: 1, stepSize: 3, tvWeight: 0.005, priorWeight: 0.002, jitter: 2 };
  const c1 = invertTowardsTargets(teacher, faces.slice(), n, new Rng(9), o);
  const c20 = invertTowardsTargets(teacher, faces, n, new Rng(9), { ...o, iterations: 20 });
  // A random tiny teacher maps images into a narrow cone, so random targets are far: a small but clear rise.
  t.ok(c20 > c1 + 0.02, `tiny teacher: cosine to the targets ${c1.toFixed(3)} after 1 iteration -> ${c20.toFixed(3)} after 20`);
  let lo = Infinity, hi = -Infinity, moved = 0;
  for (let k = 0; k < faces.length; k++) {
    lo = Math.min(lo, faces[k]!);
    hi = Math.max(hi, faces[k]!);
    moved += Math.abs(faces[k]! - before[k]!) / faces.length;
  }
  t.ok(lo >= 0 && hi <= 255, `pixels in [0, 255] (${lo.toFixed(1)}, ${hi.toFixed(1)})`);
  t.ok(moved > 0.5 && moved < 40, `mean pixel change ${moved.toFixed(2)}: refined, still the painted face`);
});

t.test('inversion on mobileface reaches its targets', { skip: hasMobileface() ? false : `needs ${mobilefacePath}` }, async (t) => {
  const teacher = await loadTeacher(mobilefacePath);
  const n = 4;
  const faces = new Float32Array(n * S);
  const rng = new Rng(5);
  for (let i = 0; i < n; i++) faces.set(paintFace(rng.fork()), i * S);
  const o = { iterations: 1, stepSize: 3, tvWeight: 0.005, priorWeight: 0.002, jitter: 4 };
  const c1 = invertTowardsTargets(teacher, faces.slice(), n, new Rng(9), o);
  const c40 = invertTowardsTargets(teacher, faces, n, new Rng(9), { ...o, iterations: 40 });
  t.ok(c1 < 0.2 && c40 > 0.4, `mobileface: cosine to random identities ${c1.toFixed(3)} -> ${c40.toFixed(3)} after 40 iterations`);
});

t.test('generated sets are cached', async (t) => {
  const teacher = await loadTeacher(tinyTeacher());
  const cacheDir = tempDir(t, 'cache');
  const phases: string[] = [];
  const g1 = await generateFaces(teacher, { count: 5, seed: 2, iterations: 4, batch: 3, cacheDir, onProgress: (p) => phases.push(p.phase) });
  t.notOk(g1.cached);
  t.ok(g1.dir.startsWith(join(cacheDir, 'generated', `v${GENERATOR_VERSION}-`)));
  const files = readdirSync(g1.dir).sort();
  t.equal(files.filter((f) => f.endsWith('.png')).length, 5);
  const manifest = JSON.parse(readFileSync(join(g1.dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  t.match(manifest, { kind: 'quantface-generated-faces', count: 5, seed: 2, iterations: 4, teacherSha256: teacher.sha256 });
  t.ok(phases.includes('painting') && phases.includes('writing'));
  t.same(readdirSync(join(cacheDir, 'generated')), [files.length ? g1.dir.split('/').at(-1)! : ''], 'no temp folder left');
  const g2 = await generateFaces(teacher, { count: 5, seed: 2, iterations: 4, batch: 3, cacheDir });
  t.ok(g2.cached, 'second request served from the cache');
  t.equal(g2.dir, g1.dir);
  const g3 = await generateFaces(teacher, { count: 5, seed: 3, iterations: 4, batch: 3, cacheDir });
  t.not(g3.dir, g1.dir, 'another seed, another set');
  // stopped part-way: nothing half-made stays in the cache
  const ac = new AbortController();
  ac.abort();
  await t.rejects(generateFaces(teacher, { count: 4, seed: 7, iterations: 2, cacheDir, signal: ac.signal }), /interrupted/);
  t.notOk(readdirSync(join(cacheDir, 'generated')).some((d) => d.includes('-s7-')), 'no partial set');
  await t.rejects(generateFaces(teacher, { count: 0, seed: 1, cacheDir }), { code: 'E_ARG' });
});

t.test('quantize on generated:N', async (t) => {
  const cacheDir = tempDir(t, 'gen-q');
  const r = await quantize({ teacher: tinyTeacher(), data: 'generated:10', cacheDir, generate: { iterations: 3, batch: 5 }, bits: 'w8a8', steps: 4, batchSize: 4, workers: 0, holdout: 2 });
  t.ok(r.completed);
  t.match(r.data, /^generated:10 \(/);
  t.equal(r.trainImages + r.holdoutImages, 10);
  t.ok(existsSync(join(cacheDir, 'generated')));
  await t.rejects(quantize({ teacher: tinyTeacher(), data: 'generated:10', align: 'ffhq', cacheDir, steps: 1 }), { code: 'E_ARG', message: /leave --align out/ });
});
