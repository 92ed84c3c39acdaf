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
 *   flock -x /tmp/qf-cpu.lock node --import tsx bench/train.ts [--models mfn,r50] [--threads 1,2] [--steps 5]
 *       [--recipes plain,kd,learned] [--torch] [--torch-max-time S] [--interleave] [--profile] [--peak GFLOPS]
 *
 * Rows per model and thread count (--recipes):
 * - plain: the QuantFace step above (student with its BatchNorms, min/max
 *   activation observers running, SGD with weight decay), the baseline;
 * - kd: the CLI's default recipe (`--recipe kd`, lib/distill/recipes.ts) as
 *   the trainer builds it: the student is the BN-folded teacher, activation
 *   ranges calibrated then frozen (MSE in the CLI; frozen ranges cost the
 *   same), min/max weights, SGD Nesterov without weight decay (folded
 *   teacher), clip 5;
 * - learned: the learned-range configuration 4-bit users run
 *   (`--bits w4a4 --act-range learned --weight-range learned --qdrop 0.5
 *   --optimizer adamw`): LearnedActQuant on every activation quantizer with
 *   QDrop 0.5 (reseeded every step as the trainer does), learned per-channel
 *   weight clipping, AdamW.
 * Each row prints its median step, images/s and the ratio of its step time
 * to the plain step's (the same model and threads; > 1 = slower).
 * --torch adds PyTorch's QAT + KD step (../shared/anchors/torch-qat, bench.py
 * mbf kd_qat, jemalloc as its run.sh) for MobileFaceNet at the same batch and
 * threads, in the same sitting, and the ratios: images/s and GFLOP/s (its
 * "mbf" is insightface's MobileFaceNet, 0.875 GFLOP per image forward,
 * about twice ours: the per-FLOP ratio compares the engines, the images/s
 * ratio the two MobileFaceNets as shipped).
 *
 * --torch-max-time S caps bench.py's timing loop (and its wait for a quiet machine: 10 s).
 * --profile adds a time breakdown by layer type (forward and backward).
 * Set QUANTFACE_BINDING to test another build. Run it alone on the machine:
 * it takes the exclusive CPU lock only if you wrap it as above.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { binding } from '../lib/binding.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { Module, QuantFaceLoss, noGrad, kernelSources, foldBatchNorm } from '../lib/nn/index.js';
import { toQat, ActFakeQuant } from '../lib/quant/index.js';
import { useClippedWeights } from '../lib/quant/weight-range.js';
import { LearnedActQuant, outQuantOwners } from '../lib/distill/learned-range.js';
import { mobilefacenet, iresnet50, countFlops } from '../lib/models/index.js';
import { SGD, AdamW, clipGradNorm } from '../lib/optim/index.js';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../lib/binding.js';

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
  const isa = binding.info().isa;
  const kind = isa.includes('avx512') ? 'fma_zmm' : isa.includes('neon') ? 'fma_neon' : 'fma_ymm';
  const v: number[] = [];
  for (let i = 0; i < 5; i++) v.push(b.measurePeak({ kind, seconds: 0.1, threads: 1 }).opsPerSecond / 1e9);
  return median(v);
}

type RecipeRow = 'plain' | 'kd' | 'learned';
const RECIPE_ROWS: RecipeRow[] = ['plain', 'kd', 'learned'];

interface Config {
  model: 'mfn' | 'r50';
  recipe: RecipeRow;
  batch: number;
  threads: number;
  steps: number;
  profile: boolean;
  peakPerCore: number;
}

interface Result {
  model: string;
  recipe: RecipeRow;
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

interface Prepared {
  step: (measure: boolean) => number;
  startProfile: () => void;
  result: (times: number[]) => Result;
}

function prepare(c: Config): Prepared {
  binding.setThreads(c.threads);
  const make = c.model === 'mfn' ? () => mobilefacenet({ seed: 1 }) : () => iresnet50({ seed: 1 });
  const fp = make().eval();
  // The teacher runs in inference form: BatchNorms folded into the convolutions (exact in eval mode).
  const teacher = foldBatchNorm(fp).model;
  const rng = new Rng(3);
  const x = Tensor.uniform([c.batch, 112, 112, 3], rng, -1, 1) as FTensor;
  let student: Module;
  let opt: SGD | AdamW;
  const learned: LearnedActQuant[] = [];
  if (c.recipe === 'plain') {
    student = toQat(fp, { weightBits: 8, actBits: 8 });
    student.train();
    opt = new SGD(student.parameters(), 0.1 * (c.batch / 512), { momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  } else {
    // As the trainer builds it: the student is the (folded) teacher, ranges calibrated on one batch, then frozen.
    const bits = c.recipe === 'learned' ? 4 : 8;
    student = toQat(teacher.clone(), { weightBits: bits, actBits: bits, calibrationSteps: 1 });
    student.train();
    noGrad(() => student.forward(x));
    for (const m of student.modules()) if (m instanceof ActFakeQuant) m.freeze();
    if (c.recipe === 'kd') {
      opt = new SGD(student.parameters(), 0.1 * (c.batch / 512), { momentum: 0.9, nesterov: true, weightDecay: 0 });
    } else {
      useClippedWeights(student, 'learned');
      for (const [, owner] of outQuantOwners(student)) {
        const q = owner.getChild('outQuant') as ActFakeQuant;
        const lm = new LearnedActQuant(q.bits, Math.min(q.min, 0), Math.max(q.max, q.min + 1e-6, 0));
        lm.dropProb = 0.5;
        lm.train(true);
        owner.setChild('outQuant', lm);
        learned.push(lm);
      }
      opt = new AdamW(student.parameters(), 1e-4, { weightDecay: 0 });
    }
  }
  let stepNo = 0;
  const loss = new QuantFaceLoss();
  const prof: Record<string, { fwd: number; bwd: number }> = {};
  const other = { teacher: 0, loss: 0, clip: 0, sgd: 0 };
  const step = (measure: boolean): number => {
    stepNo++;
    learned.forEach((m, k) => m.reseed((stepNo * 0x9e3779b1 + k * 0x85ebca6b) >>> 0));
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
  const result = (times: number[]): Result => {
    const flopsFwd = countFlops(teacher, [c.batch, 112, 112, 3]);
    const gflopsPerStep = (4 * flopsFwd) / 1e9;
    const ms = median(times);
    const r: Result = {
      model: c.model === 'mfn' ? 'MobileFaceNet' : 'iResNet-50',
      recipe: c.recipe,
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
  };
  return { step, startProfile: () => (c.profile ? instrument(student, 'student.', prof) : undefined), result };
}

function runConfig(c: Config): Result {
  const p = prepare(c);
  p.step(false); // warm-up: allocations, JIT
  p.step(false);
  p.startProfile();
  const times: number[] = [];
  for (let i = 0; i < c.steps; i++) times.push(p.step(true));
  return p.result(times);
}

/**
 * --interleave: every recipe in one process, steps taken in turn (plain, kd, learned, plain, ...), so
 * that load from other processes falls on every row alike (for a machine that cannot be had alone).
 * Peak RSS is then the process's, not a row's.
 */
function runInterleaved(cs: Config[]): Result[] {
  const ps = cs.map(prepare);
  for (const p of ps) {
    p.step(false);
    p.step(false);
    p.startProfile();
  }
  const times = cs.map(() => [] as number[]);
  for (let i = 0; i < cs[0]!.steps; i++) ps.forEach((p, k) => times[k]!.push(p.step(true)));
  return ps.map((p, k) => p.result(times[k]!));
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}

async function main(): Promise<void> {
  if (process.env.QF_BENCH_CHILD) {
    const c = JSON.parse(process.env.QF_BENCH_CHILD) as Config | Config[];
    process.send!(Array.isArray(c) ? runInterleaved(c) : [runConfig(c)]);
    return;
  }
  const models = arg('models', 'mfn,r50').split(',') as Config['model'][];
  const threads = arg('threads', '1,2').split(',').map(Number);
  const steps = Number(arg('steps', '5'));
  const recipes = arg('recipes', RECIPE_ROWS.join(',')).split(',') as RecipeRow[];
  for (const r of recipes) if (!RECIPE_ROWS.includes(r)) throw new Error(`--recipes: unknown ${r} (use ${RECIPE_ROWS.join(', ')})`);
  const profile = process.argv.includes('--profile');
  const torch = process.argv.includes('--torch');
  const peakPerCore = process.argv.includes('--peak') ? Number(arg('peak', String(FALLBACK_PEAK_PER_CORE))) : measurePeakPerCore();
  const self = fileURLToPath(import.meta.url);
  console.log(`quantface training-step benchmark (${new Date().toISOString()}), kernels: ${JSON.stringify(kernelSources())}`);
  console.log(`FP32 FMA peak per core: ${peakPerCore.toFixed(0)} GFLOP/s (${process.argv.includes('--peak') ? '--peak' : 'measured now'})`);
  console.log('model          recipe   batch thr  img/s   step ms (median of ' + steps + ')  vs plain  GFLOP/step  %FP32 peak  peak RSS MB');
  const plainMs = new Map<string, number>();
  const ours = new Map<string, Result>();
  const interleave = process.argv.includes('--interleave');
  if (interleave) console.log('(--interleave: the recipes of a model and thread count run in one process, one step each in turn)');
  const runChild = (cfg: Config | Config[]): Promise<Result[]> =>
    new Promise<Result[]>((resolve, reject) => {
      const child = fork(self, process.argv.slice(2), { env: { ...process.env, QF_BENCH_CHILD: JSON.stringify(cfg) }, execArgv: process.execArgv });
      child.once('message', (m) => resolve(m as Result[]));
      child.once('error', reject);
      child.once('exit', (code) => (code ? reject(new Error(`benchmark child exited with ${code}`)) : undefined));
    });
  const print = (r: Result): void => {
    const ms = median(r.stepMs);
    const model = r.model === 'MobileFaceNet' ? 'mfn' : 'r50';
    if (r.recipe === 'plain') plainMs.set(`${model}/${r.threads}`, ms);
    ours.set(`${model}/${r.threads}/${r.recipe}`, r);
    const base = plainMs.get(`${model}/${r.threads}`);
    console.log(
      `${r.model.padEnd(14)} ${r.recipe.padEnd(8)} ${String(r.batch).padStart(5)} ${String(r.threads).padStart(3)} ${r.imagesPerSec.toFixed(2).padStart(6)}   ${ms.toFixed(0).padStart(8)}` +
        `                ${base ? (ms / base).toFixed(3).padStart(6) : '     -'}  ${r.gflopsPerStep.toFixed(1).padStart(8)}  ${(100 * r.peakFraction).toFixed(1).padStart(9)}%  ${r.maxRssMB.toFixed(0).padStart(10)}` +
        `   steps ms: ${r.stepMs.map((v) => v.toFixed(0)).join(' ')}`,
    );
    if (r.profile) {
      const rows = Object.entries(r.profile).sort((a, b) => b[1].fwd + b[1].bwd - (a[1].fwd + a[1].bwd));
      for (const [k, v] of rows) console.log(`    ${k.padEnd(28)} fwd ${v.fwd.toFixed(1).padStart(8)} ms   bwd ${v.bwd.toFixed(1).padStart(8)} ms`);
    }
  };
  for (const model of models)
    for (const th of threads) {
      const cfgs = recipes.map((recipe): Config => ({ model, recipe, batch: model === 'mfn' ? 64 : 16, threads: th, steps, profile, peakPerCore }));
      if (interleave) for (const r of await runChild(cfgs)) print(r);
      else for (const cfg of cfgs) for (const r of await runChild(cfg)) print(r);
    }
  if (torch && models.includes('mfn')) {
    for (const th of threads) {
      const t = runTorch(64, th, process.argv.includes('--torch-max-time') ? Number(arg('torch-max-time', '150')) : undefined);
      if ('skipped' in t) {
        console.log(`PyTorch mbf kd_qat b64 ${th} thr: skipped (${t.skipped})`);
        continue;
      }
      // GFLOP per step as ours counts it: 4 x the forward (0.875 GFLOP = 2 x MACs per image, models.py) x batch.
      const torchGflops = 4 * 0.875 * 64;
      const torchRate = (torchGflops * t.imagesPerSec) / 64;
      console.log(
        `PyTorch ${t.torch} mbf (insightface, 0.875 GFLOP/img) kd_qat b64 ${th} thr: ${t.imagesPerSec.toFixed(2)} img/s, median step ${t.medianMs.toFixed(0)} ms` +
          ` (${t.cleanSteps}/${t.steps} uncontended steps; phases ${JSON.stringify(t.phases)})`,
      );
      for (const recipe of recipes) {
        const r = ours.get(`mfn/${th}/${recipe}`);
        if (!r) continue;
        const ourRate = (r.gflopsPerStep * r.imagesPerSec) / r.batch;
        console.log(
          `    quantface ${recipe.padEnd(8)} / PyTorch: images/s ${(r.imagesPerSec / t.imagesPerSec).toFixed(2)}x, GFLOP/s ${(ourRate / torchRate).toFixed(2)}x`,
        );
      }
    }
  }
}

interface TorchResult {
  imagesPerSec: number;
  medianMs: number;
  steps: number;
  cleanSteps: number;
  phases: Record<string, number>;
  torch: string;
}

/** PyTorch's QAT + KD step for insightface's MobileFaceNet (../shared/anchors/torch-qat/bench.py), as its run.sh runs it. */
function runTorch(batch: number, threads: number, maxTime?: number): TorchResult | { skipped: string } {
  const dir = join(packageRoot, '..', 'shared', 'anchors', 'torch-qat');
  if (!existsSync(join(dir, 'bench.py'))) return { skipped: `${dir}/bench.py not found` };
  const je = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2';
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    OMP_NUM_THREADS: String(threads),
    OPENBLAS_NUM_THREADS: String(threads),
    MKL_NUM_THREADS: String(threads),
    ...(existsSync(je) ? { ALLOC: 'jemalloc', LD_PRELOAD: je, MALLOC_CONF: 'oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1' } : { ALLOC: 'glibc' }),
  };
  const py = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'; // Debian's python3-torch, as run.sh uses
  const extra = maxTime ? ['--max-time', String(maxTime), '--quiet-wait', '10'] : [];
  const r = spawnSync(py, ['bench.py', 'mbf', 'kd_qat', String(batch), String(threads), ...extra], { cwd: dir, env, encoding: 'utf8', timeout: 1_200_000 });
  if (r.error) return { skipped: `python3: ${r.error.message}` };
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('RESULT '));
  if (r.status !== 0 || !line) return { skipped: `bench.py exited ${r.status}: ${(r.stderr ?? '').trim().split('\n').slice(-2).join(' ')}` };
  // Python's json.dumps writes NaN (no uncontended step) and Infinity, which JSON.parse rejects.
  const rec = JSON.parse(line.slice(7).replace(/\b(NaN|-?Infinity)\b/g, 'null')) as { ips_clean: number; ips_all: number; median_ms_clean: number; median_ms_all: number; steps: number; clean_steps: number; phases_ms: Record<string, number>; torch: string };
  const clean = rec.clean_steps > 0 && typeof rec.ips_clean === 'number';
  return {
    imagesPerSec: clean ? rec.ips_clean : rec.ips_all,
    medianMs: clean ? rec.median_ms_clean : rec.median_ms_all,
    steps: rec.steps,
    cleanSteps: rec.clean_steps,
    phases: Object.fromEntries(Object.entries(rec.phases_ms ?? {}).map(([k, v]) => [k, Math.round(v)])),
    torch: rec.torch,
  };
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
