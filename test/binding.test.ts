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
