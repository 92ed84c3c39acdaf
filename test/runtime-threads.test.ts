// The runtime's thread schedule (CompileOptions.threadSchedule): with more
// than one native thread, each native segment of a plan runs on the pool
// only where a measurement on the plan's first run found it >= 10% faster
// than one thread. Checks: one flag per native segment, cached per thread
// count, tiny plans stay on one thread without measuring, 'macs' keeps the
// fixed rule, and the outputs do not depend on the schedule (int8 network:
// identical bytes on 1 and 2 threads, pool forced or not).
import t from 'tap';
import { Rng } from '../lib/tensor.js';
import { Sequential } from '../lib/nn/containers.js';
import { Conv2d, ReLU } from '../lib/nn/layers.js';
import { GlobalAvgPool } from '../lib/nn/import-ops.js';
import { quantizeModel } from '../lib/runtime/calibrate.js';
import { compileModel, type CompiledModel } from '../lib/runtime/compile.js';
import { binding } from '../lib/binding.js';

const seed = Number(process.env.QF_TEST_SEED ?? Date.now() % 100_000);
t.comment(`seed ${seed}`);
const rng = new Rng(seed);
const threads0 = binding.getThreads();
t.teardown(() => void binding.setThreads(threads0));

function net(width: number): Sequential {
  const m = new Sequential();
  m.append(new Conv2d(3, width, 3, { padding: 1, rng }), 'c1');
  m.append(new ReLU(), 'r1');
  m.append(new Conv2d(width, width, 3, { padding: 1, rng }), 'c2');
  m.append(new ReLU(), 'r2');
  m.append(new GlobalAvgPool(), 'pool'); // a JS step: the plan has a native segment before it
  return m;
}
const S = 56;
const pre = { colorOrder: 'RGB' as const, normalize: { mean: 128, std: 128 } };
const calib = Uint8Array.from({ length: 4 * S * S * 3 }, () => Math.floor(rng.uniform() * 256));
const big = quantizeModel(net(48), { images: calib, inputShape: [S, S, 3], preprocessing: pre });
const tiny = quantizeModel(net(4), { images: Uint8Array.from({ length: 4 * 8 * 8 * 3 }, () => Math.floor(rng.uniform() * 256)), inputShape: [8, 8, 3], preprocessing: pre });

async function run(c: CompiledModel, x: Uint8Array, n: number): Promise<Buffer> {
  const p = c.plan(n);
  const a = c.newArena(p);
  c.outputView(p, a).fill(NaN);
  c.inputView(p, a).set(x);
  await c.run(p, a);
  return Buffer.from(c.outputView(p, a).slice().buffer);
}

t.test('a measured schedule: one flag per native segment, cached per thread count', async (t) => {
  const c = compileModel(big, { inputShape: [S, S, 3], preprocessing: pre });
  t.equal(c.report.precision, 'int8');
  t.equal(c.threadSchedule, 'measure', "'measure' is the default");
  const p = c.plan(2);
  const native = p.segments.filter((s) => s.kind === 'native').length;
  binding.setThreads(1);
  t.same(c.segmentSchedule(p), new Array(native).fill(p.singleThread), 'one thread: the fixed rule (nothing to choose)');
  t.equal(p.schedules.size, 0, 'nothing measured at one thread');
  binding.setThreads(2);
  const s2 = c.segmentSchedule(p);
  t.equal(s2.length, native);
  t.ok(s2.every((x) => typeof x === 'boolean'));
  t.equal(c.segmentSchedule(p), s2, 'the measurement is kept for this thread count');
  t.same([...p.schedules.keys()], [2]);
  t.comment(`2 threads, batch 2, ${(2 * c.report.int8Macs / 1e6).toFixed(1)} M MACs: ${s2.map((x) => (x ? 'one thread' : 'pool')).join(', ')}`);
});

t.test('tiny plans stay on one thread; macs mode keeps the fixed rule; bad option', async (t) => {
  binding.setThreads(2);
  const c = compileModel(tiny, { inputShape: [8, 8, 3], preprocessing: pre });
  const p = c.plan(1);
  t.ok(c.segmentSchedule(p).every((x) => x), 'under 2e6 MACs: one thread');
  const m = compileModel(big, { inputShape: [S, S, 3], preprocessing: pre, threadSchedule: 'macs', singleThreadMacs: 0 });
  const pm = m.plan(1);
  t.ok(m.segmentSchedule(pm).every((x) => x === false), "'macs' with singleThreadMacs 0: the pool everywhere");
  t.equal(pm.schedules.size, 0, 'nothing measured');
  t.throws(() => compileModel(tiny, { inputShape: [8, 8, 3], preprocessing: pre, threadSchedule: 'fast' as never }), { code: 'E_ARG' });
});

t.test('outputs do not depend on the thread count or the schedule', async (t) => {
  const x = Uint8Array.from({ length: 3 * S * S * 3 }, () => Math.floor(rng.uniform() * 256));
  const outs: Buffer[] = [];
  for (const [threads, ts, macs] of [[1, 'macs', 48e6], [2, 'measure', 48e6], [2, 'macs', 0], [2, 'macs', Infinity]] as const) {
    binding.setThreads(threads);
    const c = compileModel(big, { inputShape: [S, S, 3], preprocessing: pre, threadSchedule: ts, singleThreadMacs: macs });
    outs.push(await run(c, x, 3));
    const p = c.plan(3);
    const a = c.newArena(p);
    c.inputView(p, a).set(x);
    c.runSync(p, a);
    t.ok(Buffer.from(c.outputView(p, a).slice().buffer).equals(outs[outs.length - 1]!), `runSync = run (${threads} threads, ${ts})`);
  }
  for (let i = 1; i < outs.length; i++) t.ok(outs[i]!.equals(outs[0]!), `run ${i} identical to one thread`);
  t.ok(!new Float32Array(outs[0]!.buffer, outs[0]!.byteOffset, outs[0]!.length / 4).some(Number.isNaN), 'every output written');
});
