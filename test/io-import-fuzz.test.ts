// Robustness of the TF.js and ONNX importers, and of format detection
// ('any': mutated .qfm / ONNX / TF.js bytes under one neutral name through
// loadModelFile): a few thousand random
// mutations of each format (raw bytes, truncations, structural JSON /
// protobuf edits, weight shards) in a child process. Every file must either
// import or be refused with a QuantFaceError; nothing may crash or hang.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tempDir } from './fixtures/tmp.js';

const child = fileURLToPath(new URL('./fixtures/io/import-fuzz-child.ts', import.meta.url));

for (const format of ['tfjs', 'onnx', 'any'] as const) {
  const seed = 1 + Math.floor(Math.random() * 1e9);
  const n = format === 'any' ? 1500 : 2500;
  t.test(`${format}: ${n} mutated files, seed ${seed}`, async (t) => {
    const dir = tempDir(t, `qf-fuzz-${format}-`); // removed here even when the child is killed
    const r = spawnSync(process.execPath, ['--import', 'tsx', child, format, String(seed), String(n), dir], { encoding: 'utf8', timeout: 50_000, env: process.env });
    t.equal(r.signal, null, `child not killed (stderr: ${r.stderr.slice(-1500)})`);
    t.equal(r.status, 0, `child exited cleanly (stderr: ${r.stderr.slice(-1500)})`);
    const res = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { count: number; ok: number; errors: number; codes: Record<string, number>; other: string[]; otherCount: number };
    t.comment(`${format}: ${res.ok} imported, ${res.errors} refused (${JSON.stringify(res.codes)})`);
    t.equal(res.ok + res.errors, res.count, 'every file imported or was refused with a QuantFaceError');
    t.same(res.other, [], `no other errors (${res.otherCount})`);
    t.ok((res.codes.E_FORMAT ?? 0) > res.count / 3, 'most mutations are caught as format errors');
    t.notOk('E_ARG' in res.codes || 'E_INTERNAL' in res.codes, 'bad files never surface as argument or internal errors');
  });
}
