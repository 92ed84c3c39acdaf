import t from 'tap';
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageFolder, WorkerPool, epochOrder, mixSeed, planSample, resolveAugment, type Batch } from '../lib/data/index.js';
import { collect, epochs, repoRoot, sameFloats, tempDir, writeRandomSet } from './fixtures/data/util.js';

const AUG = { flip: true, scale: 0.1, shift: 0.05, brightness: 0.2, contrast: 0.2, saturation: 0.2, mixup: 0.5 } as const;

t.test('determinism: same seed -> identical batches across runs and worker counts 0, 1, 2; other seeds differ', async (t) => {
  const d = await tempDir(t);
  await writeRandomSet(d, 13, 40, 3);
  const ds = await ImageFolder.open(d);
  const runs: { data: Float32Array[]; ids: number[][] }[] = [];
  const configs = [
    { workers: 1, prefetch: 3 }, { workers: 2, prefetch: 1 }, { workers: 0, prefetch: 2 }, { workers: 2, prefetch: 5, cacheBytes: 0 },
  ];
  for (const cfg of configs) {
    const ld = ds.loader({ batchSize: 4, seed: 42, augment: AUG, ...cfg });
    runs.push(await epochs(ld, 2));
    await ld.close();
  }
  t.equal(runs[0]!.data.length, 8, '4 batches per epoch (13 images, last batch of 1), 2 epochs');
  t.same(runs[0]!.ids[3], [runs[0]!.ids[3]![0]], 'last batch holds one image');
  for (let r = 1; r < runs.length; r++) {
    t.same(runs[r]!.ids, runs[0]!.ids, `${JSON.stringify(configs[r])}: same order`);
    t.ok(runs[r]!.data.every((x, i) => sameFloats(x, runs[0]!.data[i]!)), `${JSON.stringify(configs[r])}: bit-identical pixels`);
  }
  const e0 = runs[0]!.ids.slice(0, 4).flat(), e1 = runs[0]!.ids.slice(4).flat();
  t.same([...e0].sort((a, b) => a - b), Array.from({ length: 13 }, (_, i) => i), 'an epoch visits every image once');
  t.notSame(e0, e1, 'epochs are shuffled differently');
  const other = ds.loader({ batchSize: 4, seed: 43, augment: AUG, workers: 1 });
  const o = await epochs(other, 1);
  await other.close();
  t.notSame(o.ids, runs[0]!.ids.slice(0, 4), 'another seed: another order');
  // same image, same epoch, other seed: other augmentation
  const pos = (ids: number[][], id: number) => { const f = ids.flat(); return f.indexOf(id); };
  const per = 112 * 112 * 3;
  const flatData = (x: Float32Array[]) => { const out = new Float32Array(x.reduce((s, a) => s + a.length, 0)); let o2 = 0; for (const a of x) { out.set(a, o2); o2 += a.length; } return out; };
  const A = flatData(runs[0]!.data.slice(0, 4)), B = flatData(o.data);
  const pa = pos(runs[0]!.ids.slice(0, 4), 5), pb = pos(o.ids, 5);
  t.notOk(sameFloats(A.subarray(pa * per, (pa + 1) * per), B.subarray(pb * per, (pb + 1) * per)), 'another seed: another augmentation of image 5');
});

t.test('plans depend only on (seed, epoch, id); shuffles are permutations', async (t) => {
  const a = resolveAugment(AUG);
  const ids = Int32Array.from({ length: 50 }, (_, i) => i);
  t.same(planSample(7, 3, 11, ids, a), planSample(7, 3, 11, ids, a));
  t.notSame(planSample(7, 3, 11, ids, a), planSample(7, 4, 11, ids, a));
  t.notSame(planSample(7, 3, 11, ids, a), planSample(8, 3, 11, ids, a));
  const o = epochOrder(1, 2, ids);
  t.same(Array.from(o).sort((x, y) => x - y), Array.from(ids));
  t.notSame(Array.from(o), Array.from(ids));
  t.not(mixSeed(1, 2), mixSeed(2, 1), 'mixSeed is order sensitive');
  t.not(mixSeed(2 ** 32), mixSeed(0), 'and sees high bits');
  let flips = 0, mixes = 0;
  for (let id = 0; id < 50; id++) {
    const p = planSample(1, 0, id, ids, a);
    flips += p.a.flip ? 1 : 0;
    if (p.mix) { mixes++; t.not(p.mix.partner, id); }
  }
  t.ok(flips > 10 && flips < 40 && mixes > 10 && mixes < 40, `flip ${flips}/50, mixup ${mixes}/50 at p = 0.5`);
  t.throws(() => resolveAugment({ flip: 2 }), { code: 'E_ARG' });
  t.throws(() => resolveAugment({ scale: -1 }), { code: 'E_ARG' });
  t.throws(() => resolveAugment({ mixup: { alpha: 0 } }), { code: 'E_ARG' });
});

t.test('holdout split: disjoint, complete, stable; dropLast; resume from a step', async (t) => {
  const d = await tempDir(t);
  await writeRandomSet(d, 20, 32, 5);
  const ds = await ImageFolder.open(d);
  const s1 = ds.split({ holdout: 0.1, seed: 9 });
  const s2 = ds.split({ holdout: 0.1, seed: 9 });
  const s3 = ds.split({ holdout: 0.1, seed: 10 });
  t.equal(s1.holdout.length, 2);
  t.equal(s1.train.length, 18);
  t.same(s1.holdout.files, s2.holdout.files, 'same seed, same split');
  t.same(s1.train.files, s2.train.files);
  t.notSame(s1.holdout.files, s3.holdout.files, 'another seed, another split');
  t.same([...s1.train.files, ...s1.holdout.files].sort(), [...ds.files], 'together: every file');
  t.notOk(s1.train.files.some((f) => s1.holdout.files.includes(f)), 'disjoint');
  t.equal(ds.split({ holdout: 5, seed: 1 }).holdout.length, 5, 'a count');
  t.equal(ds.split({ holdout: 0.001 }).holdout.length, 1, 'at least one');
  t.throws(() => ds.split({ holdout: 0 }), { code: 'E_ARG' });
  t.throws(() => ds.split({ holdout: 2.5 }), { code: 'E_ARG' });
  t.equal(s1.holdout.parent, ds);
  t.equal(s1.holdout.sourceIndex.length, 2);
  t.equal(ds.files[s1.holdout.sourceIndex[0]!], s1.holdout.files[0]);

  // a held-out loader reads the subset's own files
  const hl = s1.holdout.loader({ batchSize: 8, workers: 0, shuffle: false, augment: false });
  const hb = await hl.batch(0, 0);
  t.equal(hb.n, 2);
  t.ok(sameFloats(hb.data.subarray(0, 112 * 112 * 3), await ds.read(ds.files.indexOf(s1.holdout.files[0]!))), 'subset ids map to their files');
  await hl.close();

  const ld = s1.train.loader({ batchSize: 5, seed: 1, dropLast: true, workers: 1, augment: { flip: true, mixup: 1 } });
  t.teardown(() => ld.close());
  await ld.ready();
  t.equal(ld.batchesPerEpoch, 3, '18 images / 5, last dropped');
  const first: Batch[] = [];
  for await (const b of ld.stream()) { first.push(b); if (first.length === 7) break; }
  t.same(first.map((b) => [b.epoch, b.index, b.step]), [[0, 0, 0], [0, 1, 1], [0, 2, 2], [1, 0, 3], [1, 1, 4], [1, 2, 5], [2, 0, 6]]);
  t.ok(first.every((b) => b.n === 5));
  const resumed = await collect((async function* () { for await (const b of ld.stream({ step: 4 })) { yield b; if (b.step === 6) return; } })());
  t.same(resumed.map((b) => b.step), [4, 5, 6]);
  t.ok(resumed.every((b, i) => sameFloats(b.data, first[4 + i]!.data) && b.mix!.lambda.every((l, k) => l === first[4 + i]!.mix!.lambda[k])), 'resuming at step 4 reproduces steps 4..6');
  const mid = await collect(ld.epoch(1, { from: 2 }));
  t.same(mid.map((b) => b.step), [5]);
  t.ok(sameFloats(mid[0]!.data, first[5]!.data));
  await t.rejects(ld.batch(0, 3), { code: 'E_ARG' });
  const small = s1.holdout.loader({ batchSize: 4, dropLast: true, workers: 0 });
  await t.rejects(small.ready(), { code: 'E_DATA', message: /fewer than one batch/ });
  await small.close();
});

t.test('cache on and off give the same pixels; a file removed after ready() is substituted', async (t) => {
  const d = await tempDir(t);
  const names = await writeRandomSet(d, 9, 40, 8);
  const ds = await ImageFolder.open(d);
  const cached = ds.loader({ batchSize: 3, seed: 5, workers: 1, augment: { flip: true, brightness: 0.3 } });
  const info = await cached.ready();
  t.equal(info.cachedImages, 9);
  t.equal(info.cacheMode, 'aligned');
  t.equal(info.cachedBytes, 9 * 112 * 112 * 3 * 4);
  const uncached = ds.loader({ batchSize: 3, seed: 5, workers: 2, cacheBytes: 0, augment: { flip: true, brightness: 0.3 } });
  t.equal((await uncached.ready()).cachedImages, 0);
  const limited = ds.loader({ batchSize: 3, seed: 5, workers: 1, cacheBytes: 4 * 112 * 112 * 3 * 4, augment: { flip: true, brightness: 0.3 } });
  t.equal((await limited.ready()).cachedImages, 4, 'cache stops at its budget');
  const [a, b, c] = [await epochs(cached, 1), await epochs(uncached, 1), await epochs(limited, 1)];
  t.ok(a.data.every((x, i) => sameFloats(x, b.data[i]!) && sameFloats(x, c.data[i]!)), 'identical with full, no and partial cache');
  await cached.close();
  await limited.close();

  // remove an image after ready(): the uncached loader meets the failure in epoch 1
  const gone = names[4]!;
  await rm(join(d, gone));
  const e1 = await epochs(uncached, 1);
  t.equal(e1.ids.flat().length, 9, 'batches stay full');
  t.notOk(e1.ids.flat().includes(4), 'the removed image is not used');
  const sk = uncached.skipped.find((s) => s.path === gone);
  t.ok(sk, 'listed as skipped');
  t.match(sk!.reason, /cannot read the file.*after the set was read/);
  t.equal(uncached.skipped.length, 1, 'once');
  await uncached.close();
});

t.test('worker pool: task errors propagate, a dying worker rejects its tasks, close() ends every thread', async (t) => {
  const pool = new WorkerPool(2);
  await t.rejects(pool.run({ type: '__throw', message: 'boom in worker' } as never, 0), { message: /boom in worker/ });
  // a task error does not break the pool
  const d = await tempDir(t);
  await writeRandomSet(d, 2, 16, 1);
  const ds = await ImageFolder.open(d);
  const r = await pool.run({ type: 'prepare', size: 112, mode: 'aligned', items: [{ src: { file: 0, path: ds.path(0), geom: ds.geom(0) }, cache: true }] }, 1) as { ok: unknown[] };
  t.equal(r.ok.length, 1, 'still works after a task error');
  // a loader sharing the pool; then a worker dies
  const ld = ds.loader({ batchSize: 2, executor: pool });
  await ld.ready();
  await t.rejects(pool.run({ type: '__exit', code: 3 } as never, 0), { code: 'E_INTERNAL', message: /exited unexpectedly \(exit code 3\)/ });
  await t.rejects(ld.batch(0, 0), { code: 'E_INTERNAL' }, 'the loader sees the failure');
  await ld.close();
  t.equal(pool.liveWorkers, 1, 'the loader does not close a pool it was given');
  await pool.close();
  t.equal(pool.liveWorkers, 0, 'no thread left');
  await t.rejects(pool.run({ type: 'render', size: 112, items: [] }), { code: 'E_CLOSED' });

  // a loader's own pool: close() mid-epoch ends its threads and rejects later use
  const own = ds.loader({ batchSize: 1, workers: 2, prefetch: 4 });
  const it = own.epoch(0);
  t.ok((await it.next()).value, 'one batch');
  await own.close();
  t.equal((own as unknown as { executor: WorkerPool }).executor.liveWorkers, 0, 'threads ended');
  await t.rejects(own.batch(0, 0), { code: 'E_CLOSED' });
  await t.rejects(own.ready(), { code: 'E_CLOSED' });
  t.throws(() => own.length, { code: 'E_CLOSED' });
  t.throws(() => new WorkerPool(0), { code: 'E_ARG' });
  t.throws(() => ds.loader({ batchSize: 0 }), { code: 'E_ARG' });
  t.throws(() => ds.loader({ batchSize: 2, workers: -1 }), { code: 'E_ARG' });
});

t.test('a process that forgets close() (or breaks mid-stream) still exits', async (t) => {
  const d = await tempDir(t);
  await writeRandomSet(d, 8, 24, 2);
  for (const mode of ['forget', 'break']) {
    const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test', 'fixtures', 'data', 'forgotten-close.ts'), d, mode], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 25000);
    const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    clearTimeout(timer);
    t.equal(code, 0, `${mode}: exited by itself (output: ${out.trim()})`);
    t.match(out, /read 6 images/);
  }
});
