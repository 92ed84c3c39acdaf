// Robustness: thousands of random bad calls against every native export, in
// a child process. The process must never crash, and every failing call
// must throw a TypeError/RangeError (or E_CUDA_UNAVAILABLE) naming the function.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const child = fileURLToPath(new URL('./fixtures/fuzz-child.ts', import.meta.url));
const seeds = [1 + Math.floor(Math.random() * 1e9), 12345];

for (const seed of seeds) {
  t.test(`random bad calls, seed ${seed}`, async (t) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', child, String(seed), '4000'], {
      encoding: 'utf8',
      timeout: 90_000,
      env: process.env,
    });
    t.equal(r.signal, null, `child was not killed by a signal (stderr: ${r.stderr.slice(-2000)})`);
    t.equal(r.status, 0, `child exited cleanly (stderr: ${r.stderr.slice(-2000)})`);
    const last = r.stdout.trim().split('\n').pop() ?? '{}';
    const res = JSON.parse(last) as { calls: number; ok: number; typeErrors: number; rangeErrors: number; other: string[]; names: string[] };
    t.ok(res.calls >= 4000, `made ${res.calls} calls over ${res.names.length} exports: ${res.names.join(', ')}`);
    t.ok(res.names.length >= 1, 'has exports to fuzz');
    t.ok(res.typeErrors > 100 && res.rangeErrors > 100, `both error kinds seen (type ${res.typeErrors}, range ${res.rangeErrors}, ok ${res.ok})`);
    t.same(res.other.slice(0, 20), [], 'every failure is a clear TypeError/RangeError naming the function');
  });
}
