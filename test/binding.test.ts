import t from 'tap';
import { binding, bindingPath } from '../lib/binding.js';

t.test('info() describes the CPU, threads and kernels', async (t) => {
  const info = binding.info();
  t.match(info.version, /^\d+\.\d+\.\d+/);
  t.ok(info.threads >= 1);
  t.ok(info.isa.includes('scalar'));
  t.type(info.cpu.avx2, 'boolean');
  t.type(info.kernels, 'object');
  t.equal(info.cuda.available, info.cuda.compiled && info.cuda.available);
  t.ok(bindingPath.endsWith('.node'));
});

t.test('setThreads resizes the pool and validates its argument', async (t) => {
  const before = binding.getThreads();
  t.equal(binding.setThreads(1), 1);
  t.equal(binding.info().threads, 1);
  t.equal(binding.setThreads(3), 3);
  t.equal(binding.setThreads(0), binding.info().defaultThreads);
  t.throws(() => binding.setThreads(-1), RangeError);
  t.throws(() => binding.setThreads(1.5), RangeError);
  t.throws(() => (binding.setThreads as (x: unknown) => number)('2'), TypeError);
  binding.setThreads(before);
});

// Under qemu-user without binfmt_misc (scripts/arm64-check.sh) this node
// cannot start itself as a child process.
const selfSpawn = (await import('node:child_process')).spawnSync(process.execPath, ['-e', '0']);
const noSelfSpawn = selfSpawn.status === 0 ? false : `this node cannot spawn itself (${selfSpawn.error?.message ?? `exit ${selfSpawn.status}`})`;

t.test('a parallel job right after resizing the pool never hangs', { skip: noSelfSpawn }, async (t) => {
  // Regression: a worker created by setThreads could miss a job submitted
  // before it first waited, and the job then never finished.
  const { spawnSync } = await import('node:child_process');
  const code = `
    import('./lib/binding.ts').then(({ binding: b }) => {
      const isa = b.info().isa;
      const kind = isa.includes('avx2') ? 'fma_ymm' : isa.includes('neon') ? 'fma_neon' : null;
      let ok = 0;
      for (let i = 0; i < 400; i++) {
        b.setThreads(1 + (i % 3));
        if (kind) b.measurePeak({ kind, seconds: 0.00002, threads: 3 });
        ok++;
      }
      console.log('done ' + ok);
    });`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], { cwd: new URL('..', import.meta.url), encoding: 'utf8', timeout: 60_000 });
  t.equal(r.signal, null, 'not killed by the timeout (a hang)');
  t.match(r.stdout, /done 400/);
});
