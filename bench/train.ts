/**
 * Images/s of one QuantFace training step: teacher forward (FP32, eval,
 * no gradients) + student forward (fake-quantized W8A8, train mode) + KD
 * loss + backward + gradient clipping + SGD (momentum, Nesterov, weight
 * decay) update (the teacher with its BatchNorms folded), for MobileFaceNet at batch 64 and iResNet-50 at batch 16,
 * 1 and 2 threads. Each configuration runs in its own child process so its
 * peak RSS is its own. Prints the fraction of the FP32 peak reached
 * (FLOPs of the step: 4x the forward's conv/linear FLOPs = teacher forward
 * + student forward + backward input + backward weight) against the FP32 FMA
 * peak per core measured at start (binding.measurePeak).
 *
 *   flock -x /tmp/qf-cpu.lock node --import tsx bench/train.ts [--models mfn,r50] [--threads 1,2] [--steps 5] [--profile] [--peak GFLOPS]
 *
 * --profile adds a time breakdown by layer type (forward and backward).
 * Set QUANTFACE_BINDING to test another build. Run it alone on the machine:
 * it takes the exclusive CPU lock only if you wrap it as above.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { binding } from '../lib/binding.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { Module, QuantFaceLoss, noGrad, kernelSources, foldBatchNorm } from '../lib/nn/index.js';
import { toQat } from '../lib/quant/index.js';
import { mobilefacenet, iresnet50, countFlops } from '../lib/models/index.js';
import { SGD, clipGradNorm } from '../lib/optim/index.js';

/**
 * Fallback FP32 FMA peak per core, GFLOP/s, when the addon has no measurePeak.
 * Normally the parent measures it (binding.measurePeak, register-only FMA
 * loop, 1 thread, median of 5) before the runs: this machine's clock varies
 * (~3.45 GHz gave 216-224, ~4.2 GHz gives 261-271), so a constant misstates
 * the fraction. `--peak G` overrides.
 */
const FALLBACK_PEAK_PER_CORE = 220;

function measurePeakPerCore(): number {
  const b = binding as unknown as { measurePeak?: (o: { kind: string; seconds: number; threads: number }) => { opsPerSecond: number } };
  if (typeof b.measurePeak !== 'function') return FALLBACK_PEAK_PER_CORE;
  const kind = binding.info().isa.includes('avx512') ? 'fma_zmm' : 'fma_ymm';
  const v: number[] = [];
  for (let i = 0; i < 5; i++) v.push(b.measurePeak({ kind, seconds: 0.1, threads: 1 }).opsPerSecond / 1e9);
  return median(v);
}

interface Config {
  model: 'mfn' | 'r50';
  batch: number;
  threads: number;
  steps: number;
  profile: boolean;
  peakPerCore: number;
}

interface Result {
  model: string;
  batch: number;
  threads: number;
  stepMs: number[];
  imagesPerSec: number;
  gflopsPerStep: number;
  peakFraction: number;
  maxRssMB: number;
  profile?: Record<string, { fwd: number; bwd: number }>;
  kernels: Record<string, string>;
}

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Wraps every leaf module's forward/backward with timers keyed by class name. */
function instrument(root: Module, prefix: string, acc: Record<string, { fwd: number; bwd: number }>): void {
  for (const m of root.modules()) {
    if (m._children.size > 0 && !['Conv2d', 'Linear', 'PReLU', 'ReLU', 'Add'].includes(m.constructor.name)) continue;
    const key = `${prefix}${m.constructor.name}`;
    acc[key] ??= { fwd: 0, bwd: 0 };
    const slot = acc[key]!;
    const f = m.forward.bind(m);
    const b = m.backward.bind(m);
    m.forward = (...xs: FTensor[]): FTensor => {
      const t0 = performance.now();
      const r = f(...xs);
      slot.fwd += performance.now() - t0;
      return r;
    };
    m.backward = (g: FTensor): FTensor | FTensor[] => {
      const t0 = performance.now();
      const r = b(g);
      slot.bwd += performance.now() - t0;
      return r;
    };
  }
}

function runConfig(c: Config): Result {
  binding.setThreads(c.threads);
  const make = c.model === 'mfn' ? () => mobilefacenet({ seed: 1 }) : () => iresnet50({ seed: 1 });
  const fp = make().eval();
  // The teacher runs in inference form: BatchNorms folded into the convolutions (exact in eval mode).
  const teacher = foldBatchNorm(fp).model;
  const student = toQat(fp, { weightBits: 8, actBits: 8 });
  student.train();
  const rng = new Rng(3);
  const x = Tensor.uniform([c.batch, 112, 112, 3], rng, -1, 1) as FTensor;
  const opt = new SGD(student.parameters(), 0.1 * (c.batch / 512), { momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  const loss = new QuantFaceLoss();
  const prof: Record<string, { fwd: number; bwd: number }> = {};
  const other = { teacher: 0, loss: 0, clip: 0, sgd: 0 };
  const step = (measure: boolean): number => {
    const t0 = performance.now();
    const tEmb = noGrad(() => teacher.forward(x));
    const t1 = performance.now();
    opt.zeroGrad();
    const s = student.forward(x);
    const t2 = performance.now();
    loss.forward(s, tEmb);
    student.backward(loss.backward());
    const t3 = performance.now();
    clipGradNorm(student.parameters(), 5);
    const t4 = performance.now();
    opt.step();
    const t5 = performance.now();
    if (measure) {
      other.teacher += t1 - t0;
      other.clip += t4 - t3;
      other.sgd += t5 - t4;
    }
    void t2;
    return t5 - t0;
  };
  step(false); // warm-up: allocations, JIT
  step(false);
  if (c.profile) instrument(student, 'student.', prof);
  const times: number[] = [];
  for (let i = 0; i < c.steps; i++) times.push(step(true));
  const flopsFwd = countFlops(teacher, [c.batch, 112, 112, 3]);
  const gflopsPerStep = (4 * flopsFwd) / 1e9;
  const ms = median(times);
  const r: Result = {
    model: c.model === 'mfn' ? 'MobileFaceNet' : 'iResNet-50',
    batch: c.batch,
    threads: c.threads,
    stepMs: times,
    imagesPerSec: (c.batch * 1000) / ms,
    gflopsPerStep,
    peakFraction: gflopsPerStep / (ms / 1000) / (c.peakPerCore * c.threads),
    maxRssMB: process.resourceUsage().maxRSS / 1024,
    kernels: kernelSources(),
  };
  if (c.profile) {
    for (const [k, v] of Object.entries(other)) prof[k] = { fwd: k === 'teacher' ? v / c.steps : 0, bwd: k === 'teacher' ? 0 : v / c.steps };
    for (const k of Object.keys(prof)) if (k.startsWith('student.')) prof[k] = { fwd: prof[k]!.fwd / c.steps, bwd: prof[k]!.bwd / c.steps };
    r.profile = prof;
  }
  return r;
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}

async function main(): Promise<void> {
  if (process.env.QF_BENCH_CHILD) {
    const c = JSON.parse(process.env.QF_BENCH_CHILD) as Config;
    process.send!(runConfig(c));
    return;
  }
  const models = arg('models', 'mfn,r50').split(',') as Config['model'][];
  const threads = arg('threads', '1,2').split(',').map(Number);
  const steps = Number(arg('steps', '5'));
  const profile = process.argv.includes('--profile');
  const peakPerCore = process.argv.includes('--peak') ? Number(arg('peak', String(FALLBACK_PEAK_PER_CORE))) : measurePeakPerCore();
  const self = fileURLToPath(import.meta.url);
  console.log(`quantface training-step benchmark (${new Date().toISOString()}), kernels: ${JSON.stringify(kernelSources())}`);
  console.log(`FP32 FMA peak per core: ${peakPerCore.toFixed(0)} GFLOP/s (${process.argv.includes('--peak') ? '--peak' : 'measured now'})`);
  console.log('model          batch thr  img/s   step ms (median of ' + steps + ')  GFLOP/step  %FP32 peak  peak RSS MB');
  for (const model of models)
    for (const th of threads) {
      const cfg: Config = { model, batch: model === 'mfn' ? 64 : 16, threads: th, steps, profile, peakPerCore };
      const r = await new Promise<Result>((resolve, reject) => {
        const child = fork(self, process.argv.slice(2), { env: { ...process.env, QF_BENCH_CHILD: JSON.stringify(cfg) }, execArgv: process.execArgv });
        child.once('message', (m) => resolve(m as Result));
        child.once('error', reject);
        child.once('exit', (code) => (code ? reject(new Error(`benchmark child exited with ${code}`)) : undefined));
      });
      console.log(
        `${r.model.padEnd(14)} ${String(r.batch).padStart(5)} ${String(r.threads).padStart(3)} ${r.imagesPerSec.toFixed(2).padStart(6)}   ${median(r.stepMs).toFixed(0).padStart(8)}` +
          `                ${r.gflopsPerStep.toFixed(1).padStart(8)}  ${(100 * r.peakFraction).toFixed(1).padStart(9)}%  ${r.maxRssMB.toFixed(0).padStart(10)}`,
      );
      if (r.profile) {
        const rows = Object.entries(r.profile).sort((a, b) => b[1].fwd + b[1].bwd - (a[1].fwd + a[1].bwd));
        for (const [k, v] of rows) console.log(`    ${k.padEnd(28)} fwd ${v.fwd.toFixed(1).padStart(8)} ms   bwd ${v.bwd.toFixed(1).padStart(8)} ms`);
      }
    }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
