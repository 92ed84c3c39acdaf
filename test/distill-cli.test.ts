/**
 * `quantface quantize`: argument errors (exit code != 0, a clear message,
 * nothing written), a run with a float .qfm teacher on painted faces
 * (plain progress lines off a terminal, a summary, a loadable student),
 * --no-train, an interrupted run that --resume finishes, atomic output.
 */
import t from 'tap';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import { buildProgram, main } from '../lib/cli.js';
import { quantizeCommand, ProgressPrinter, type QuantizeCliOptions } from '../lib/cli/quantize.js';
import { saveQfm, loadQfm } from '../lib/io/qfm.js';
import { paintedFaces, repoRoot, tempDir, tinyTeacher } from './fixtures/distill/util.js';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

const facesP = paintedFaces(t, 12, 31);
const teacherP = (async () => {
  const p = join(tempDir(t, 'teacher'), 'tiny-teacher.qfm');
  await saveQfm(tinyTeacher(), p, { weightBits: 'float' });
  return p;
})();

/** Runs main() with stdout/stderr captured. */
async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  let out = '';
  let err = '';
  process.stdout.write = ((c: string | Uint8Array) => { out += c.toString(); return true; }) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array) => { err += c.toString(); return true; }) as typeof process.stderr.write;
  try {
    const code = await main(['node', 'quantface', 'quantize', ...args]);
    return { code, out, err };
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
}

t.test('registered, with help', async (t) => {
  const program = buildProgram();
  const q = program.commands.find((c) => c.name() === 'quantize');
  t.ok(q, 'quantize is registered');
  const help = q!.helpInformation();
  for (const o of ['--teacher', '--data', '--bits', '--out', '--align', '--epochs', '--batch', '--lr', '--calib-steps', '--seed', '--threads', '--no-train', '--resume', '--checkpoint-every', '--log'])
    t.match(help, o, `help lists ${o}`);
});

t.test('argument errors: exit != 0, a message naming the problem, nothing written', async (t) => {
  const faces = await facesP;
  const teacher = await teacherP;
  const dir = tempDir(t, 'args');
  const out = join(dir, 'student.qfm');
  const base = ['--teacher', teacher, '--data', faces, '--out', out, '--steps', '2', '--batch', '4', '-q'];
  const cases: Array<{ args: string[]; code?: number; msg: RegExp }> = [
    { args: [...base, '--bits', 'w9a9'], code: 2, msg: /E_ARG: bits 'w9a9'/ },
    { args: [...base, '--bits', 'int8'], code: 2, msg: /wXaY/ },
    { args: [...base, '--steps', '0'], msg: /--steps must be an integer >= 1/ },
    { args: [...base, '--batch', 'lots'], msg: /--batch must be an integer >= 1/ },
    { args: [...base, '--lr', '-0.1'], msg: /--lr must be a positive number/ },
    { args: [...base, '--ste', 'fuzzy'], msg: /Allowed choices are unmasked, clipped/ },
    { args: [...base, '--augment', 'rotate=5'], code: 2, msg: /--augment/ },
    { args: [...base, '--align', 'sideways'], code: 2, msg: /unknown alignment 'sideways'/ },
    { args: [...base, '--teacher', join(dir, 'nope.json')], code: 2, msg: /E_IO: teacher .*nope\.json does not exist/ },
    { args: [...base, '--data', join(dir, 'nothing-here')], code: 2, msg: /E_IO/ },
    { args: [...base, '--out', join(dir, 'sub', 'x.qfm')], code: 2, msg: /folder .* does not exist/ },
    { args: [...base, '--out', join(dir, 'x.bin')], code: 2, msg: /ending in \.qfm/ },
    { args: [...base, '--layer-bits', 'conv1'], code: 2, msg: /NAME=SPEC/ },
    { args: [...base, '--unknown-flag'], msg: /unknown option '--unknown-flag'/ },
    { args: [...base, '--equalize', '1.5'], code: 2, msg: /equalize alpha must be a number in \[0, 1\]/ },
    { args: [...base, '--equalize', 'strong'], msg: /--equalize must be a non-negative number/ },
    { args: [...base, '--qdrop', '0.5'], code: 2, msg: /qdrop works on learned activation ranges/ },
    { args: [...base, '--act-range', 'learned', '--qdrop', '1'], code: 2, msg: /qdrop must be a probability/ },
    { args: [...base, '--relation-loss', '-1'], msg: /--relation-loss must be a non-negative number/ },
    { args: [...base, '--residual-bits', '9'], code: 2, msg: /residualBits must be an integer from 2 to 8/ },
    { args: [...base, '--init', join(dir, 'no-such.qfm')], code: 2, msg: /E_IO: init .*no-such\.qfm does not exist/ },
  ];
  for (const c of cases) {
    const r = await run(c.args);
    t.not(r.code, 0, `${c.args.slice(base.length).join(' ')}: exit ${r.code}`);
    if (c.code !== undefined) t.equal(r.code, c.code, 'QuantFaceError -> exit 2');
    t.match(r.err, c.msg, `message: ${r.err.split('\n')[0]}`);
    t.notOk(r.err.includes('internal error'), 'not an internal error');
  }
  t.same(readdirSync(dir), [], 'no file written by any failed run');
});

t.test('a run: plain progress lines, a summary, a loadable student; then --no-train', async (t) => {
  const faces = await facesP;
  const teacher = await teacherP;
  const dir = tempDir(t, 'run');
  const out = join(dir, 'student.qfm');
  const log = join(dir, 'log.jsonl');
  const r = await run(['--teacher', teacher, '--data', faces, '--bits', 'w6a6', '--out', out, '--steps', '8', '--batch', '4', '--lr', '0.5', '--calib-steps', '3', '--holdout', '2', '--log', log, '--workers', '0']);
  t.equal(r.code, 0, r.err);
  t.notOk(r.out.includes('\r'), 'no carriage returns off a terminal');
  t.match(r.out, /step 8\/8 {2}loss [0-9.e+-]+ {2}cos [0-9.]+/, 'a plain progress line');
  t.match(r.out, /QuantFace distillation done/);
  t.match(r.out, /student +w6a6, .*student\.qfm, [0-9.]+ KiB \([0-9.]+x smaller\)/);
  t.match(r.out, /agreement +teacher-student mean cosine 0\.\d{4} \(min [0-9.-]+\) on 2 held-out images/);
  t.match(r.out, /wall time/);
  const l = await loadQfm(out);
  t.equal(l.provenance.weightBits, 6);
  t.equal(l.provenance.actBits, 6);
  t.ok(readFileSync(log, 'utf8').trim().split('\n').length >= 10, 'JSON log written');
  const p = await run(['--teacher', teacher, '--data', faces, '--bits', 'w8a8', '--out', join(dir, 'ptq.qfm'), '--no-train', '--calib-steps', '2', '--batch', '4', '--workers', '0']);
  t.equal(p.code, 0, p.err);
  t.match(p.out, /post-training quantization \(calibration only\) done/);
  t.match(p.out, /steps +2 calibration batches/);
  t.match((await loadQfm(join(dir, 'ptq.qfm'))).provenance.notes, { method: 'PTQ (calibration only)' });
  // The experimental options reach the trainer: equalization is logged, the relational term is in every step record.
  const log2 = join(dir, 'log2.jsonl');
  const e = await run(['--teacher', teacher, '--data', faces, '--bits', 'w4a4', '--out', join(dir, 'eq.qfm'), '--steps', '4', '--batch', '4', '--calib-steps', '2', '--workers', '0',
    '--equalize', '0.5', '--act-range', 'learned', '--qdrop', '0.5', '--relation-loss', '0.25', '--residual-bits', '8', '--init', out, '--optimizer', 'adamw', '--lr', '1e-3', '--log', log2]);
  t.equal(e.code, 0, e.err);
  const recs = readFileSync(log2, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; applied?: boolean; relationLoss?: number });
  t.ok(recs.some((x) => x.event === 'equalize' && x.applied === true), 'equalization applied and logged');
  t.ok(recs.filter((x) => x.event === 'step').every((x) => typeof x.relationLoss === 'number' && x.relationLoss >= 0), 'relational loss logged at every step');
  const eq = await loadQfm(join(dir, 'eq.qfm'));
  t.match(eq.provenance.notes, { layerBits: 'res=a8,act2=a8' }, 'residual stream at 8 bits recorded');
});

t.test('interrupted (Ctrl-C): checkpoint, exit message, --resume finishes; old output kept meanwhile', async (t) => {
  const faces = await facesP;
  const teacher = await teacherP;
  const dir = tempDir(t, 'int');
  const out = join(dir, 'student.qfm');
  writeFileSync(out, 'old');
  const opts: QuantizeCliOptions = { teacher, data: faces, bits: 'w4a4', optimizer: 'sgd', out, steps: 10, batch: 4, lr: 0.5, calibSteps: 2, seed: 1, train: true, workers: 0 };
  const ac = new AbortController();
  const sink = new Sink();
  // abort as soon as training has started (what the SIGINT handler does)
  const orig = sink.write.bind(sink);
  sink.write = ((c: string) => {
    if (/step [1-9]/.test(c)) ac.abort();
    return orig(c);
  }) as typeof sink.write;
  const r1 = await quantizeCommand(opts, sink, ac.signal);
  t.equal(r1, null, 'stopped');
  t.match(sink.text, /stopped at step \d+\/10; checkpoint saved: .*student\.qfm\.ckpt\nrun the same command with --resume/);
  t.equal(readFileSync(out, 'utf8'), 'old', 'the previous output is untouched while unfinished');
  t.ok(existsSync(`${out}.ckpt`));
  const sink2 = new Sink();
  const r2 = await quantizeCommand({ ...opts, resume: true }, sink2);
  t.ok(r2 && r2.completed);
  t.match(sink2.text, /resumed from step \d+/);
  t.equal((await loadQfm(out)).provenance.weightBits, 4);
  t.notOk(existsSync(`${out}.ckpt`), 'checkpoint removed once done');
});

t.test('progress printer: a redrawn bar on a terminal', async (t) => {
  const s = new Sink();
  const p = new ProgressPrinter(s, true);
  p.update({ phase: 'load', step: 0, totalSteps: 0, message: 'loading the teacher' });
  p.update({ phase: 'train', step: 5, totalSteps: 10, loss: 0.001, cosine: 0.95, imagesPerSec: 120, etaSeconds: 65, agreement: 0.94 });
  p.update({ phase: 'train', step: 10, totalSteps: 10, loss: 0.0005, cosine: 0.97, imagesPerSec: 121 });
  t.match(s.text, 'loading the teacher\n');
  t.match(s.text, /\r\x1b\[2K\[#{12}-{12}\] step 5\/10 {2}loss 1\.000e-3 {2}cos 0\.9500 {2}120 img\/s {2}ETA 1m05s {2}held-out cos 0\.9400/);
  t.match(s.text, /\[#{24}\] step 10\/10 .*\n$/);
});

/** Spawns the real CLI (tsx) in a child process. */
function spawnCli(args: string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'lib', 'cli.ts'), 'quantize', ...args], { cwd: repoRoot, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
}

function waitExit(c: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  let out = '';
  c.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  c.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  return new Promise((res) => c.on('exit', (code, signal) => res({ code, signal, out })));
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

function weightsOf(m: import('../lib/nn/module.js').Module): Buffer[] {
  return [...m.stateDict().values()].map((v) => Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength));
}

t.test('a real process: Ctrl-C (SIGINT) checkpoints and exits 130; SIGKILL mid-run, --resume = uninterrupted', async (t) => {
  const faces = await facesP;
  const teacher = await teacherP;
  const dir = tempDir(t, 'proc');
  const common = ['--teacher', teacher, '--data', faces, '--bits', 'w4a4', '--optimizer', 'sgd', '--steps', '400', '--batch', '4', '--lr', '0.5', '--calib-steps', '3', '--workers', '0', '--seed', '4'];
  // reference: uninterrupted
  const ref = await waitExit(spawnCli([...common, '--out', join(dir, 'ref.qfm')]));
  t.equal(ref.code, 0, ref.code === 0 ? 'uninterrupted run' : ref.out.slice(-800));

  // SIGINT once training is under way
  const out1 = join(dir, 'int.qfm');
  const log1 = join(dir, 'int.jsonl');
  const c1 = spawnCli([...common, '--out', out1, '--log', log1]);
  const done1 = waitExit(c1);
  t.ok(await until(() => existsSync(log1) && readFileSync(log1, 'utf8').includes('"event":"step"'), 30_000), 'training started');
  c1.kill('SIGINT');
  const r1 = await done1;
  t.equal(r1.code, 130, 'exit code 130 after Ctrl-C');
  t.match(r1.out, /interrupted: finishing the current step and writing a checkpoint/);
  t.match(r1.out, /stopped at step \d+\/400; checkpoint saved/);
  t.ok(existsSync(`${out1}.ckpt`) && !existsSync(out1), 'checkpoint, no output yet');
  const r1b = await waitExit(spawnCli([...common, '--out', out1, '--log', log1, '--resume']));
  t.equal(r1b.code, 0, r1b.code === 0 ? 'resumed after Ctrl-C' : r1b.out.slice(-800));
  t.match(r1b.out, /resumed from step \d+/);

  // SIGKILL (a crash: no handler runs) after the first periodic checkpoint
  const out2 = join(dir, 'kill.qfm');
  const c2 = spawnCli([...common, '--out', out2, '--checkpoint-every', '25']);
  const done2 = waitExit(c2);
  t.ok(await until(() => existsSync(`${out2}.ckpt`), 30_000), 'a periodic checkpoint appeared');
  c2.kill('SIGKILL');
  const r2 = await done2;
  t.equal(r2.signal, 'SIGKILL');
  t.notOk(existsSync(out2), 'killed before the end: no output');
  const r2b = await waitExit(spawnCli([...common, '--out', out2, '--checkpoint-every', '25', '--resume']));
  t.equal(r2b.code, 0, r2b.code === 0 ? 'resumed after SIGKILL' : r2b.out.slice(-800));
  t.match(r2b.out, /resumed from step \d+/);

  const [a, b, c] = await Promise.all([loadQfm(join(dir, 'ref.qfm')), loadQfm(out1), loadQfm(out2)]);
  const wa = weightsOf(a.model);
  t.ok(weightsOf(b.model).every((x, i) => x.equals(wa[i]!)), 'Ctrl-C + resume: saved student bit-identical to the uninterrupted one');
  t.ok(weightsOf(c.model).every((x, i) => x.equals(wa[i]!)), 'SIGKILL + resume: saved student bit-identical to the uninterrupted one');
});
