/**
 * A stop takes effect within a training step, whatever the loader's state:
 * real `quantface quantize` processes, SIGTERM while training on a cached
 * loader (every batch already in memory: the loop awaits promises that are
 * already resolved, which never let signal handlers run before) and on an
 * uncached one (augmentation decoded by a worker). Each must write its
 * checkpoint and exit 130 within a few seconds, training at most a step or
 * two past the signal; the stop latency is reported.
 */
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { saveQfm } from '../lib/io/qfm.js';
import { paintedFaces, repoRoot, tempDir, tinyTeacher } from './fixtures/distill/util.js';

const facesP = paintedFaces(t, 12, 41);
const teacherP = (async () => {
  const p = join(tempDir(t, 'sig-teacher'), 'tiny-teacher.qfm');
  await saveQfm(tinyTeacher(), p, { weightBits: 'float' });
  return p;
})();

function spawnCli(args: string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'lib', 'cli.ts'), 'quantize', ...args], { cwd: repoRoot, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
}

function steps(log: string): number[] {
  if (!existsSync(log)) return [];
  return readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"event":"step"')).map((l) => (JSON.parse(l) as { step: number }).step);
}

for (const [name, extra] of [
  ['cached loader (flip only, teacher embeddings cached, decoding on the main thread)', ['--augment', 'flip', '--workers', '0']],
  ['uncached loader (scale jitter, decoding in a worker)', ['--augment', 'flip,scale=0.1', '--workers', '1']],
] as const)
  t.test(`SIGTERM stops a run within a step: ${name}`, async (t) => {
    const faces = await facesP;
    const teacher = await teacherP;
    const dir = tempDir(t, 'sig');
    const out = join(dir, 's.qfm');
    const log = join(dir, 's.jsonl');
    // A run far longer than the test, with no periodic checkpoint (a checkpoint's file I/O would let a handler in).
    const c = spawnCli(['--teacher', teacher, '--data', faces, '--bits', 'w8a8', '--steps', '1000000', '--batch', '4', '--calib-steps', '2', '--checkpoint-every', '0', '--out', out, '--log', log, ...extra]);
    let text = '';
    c.stdout!.on('data', (d: Buffer) => { text += d.toString(); });
    c.stderr!.on('data', (d: Buffer) => { text += d.toString(); });
    const exited = new Promise<{ code: number | null; at: number }>((res) => c.on('exit', (code) => res({ code, at: performance.now() })));
    // Training well under way: several epochs, so a cached loader serves every batch from memory.
    const t0 = Date.now();
    while (Date.now() - t0 < 60_000 && (steps(log).at(-1) ?? 0) < 40) await new Promise((r) => setTimeout(r, 25));
    const before = steps(log).at(-1) ?? 0;
    t.ok(before >= 40, `training under way (step ${before})`);
    const sentAt = performance.now();
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
    const r = await exited;
    clearTimeout(timer);
    const latency = (r.at - sentAt) / 1000;
    const logged = steps(log);
    const after = (logged.at(-1) ?? 0) - before;
    // Median step time, from the logged steps.
    const lines = readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"event":"step"')).map((l) => JSON.parse(l) as { imagesPerSec: number });
    const stepMs = lines.map((l) => (4 / l.imagesPerSec) * 1000).sort((a, b) => a - b)[lines.length >> 1]!;
    t.comment(`stop latency ${latency.toFixed(2)} s (signal to exit, checkpoint written); ${after} step(s) after the signal; median step ${stepMs.toFixed(1)} ms`);
    t.equal(r.code, 130, r.code === 130 ? 'exit 130' : text.slice(-600));
    t.ok(latency < 10, `stopped within 10 s (${latency.toFixed(2)} s)`);
    // Steps logged between the last one read before the signal and the stop: the one in flight, and one
    // more if the signal landed between the read and the kill.
    t.ok(after <= 3, `at most a step or two past the signal (${after})`);
    t.ok(existsSync(`${out}.ckpt`), 'checkpoint written');
    t.notOk(existsSync(out), 'no student written for an unfinished run');
    t.match(text, /stopped at step \d+\/1000000; checkpoint saved/);
  });
