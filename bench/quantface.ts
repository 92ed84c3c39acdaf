/**
 * The QuantFace benchmark (issue 5): the mobileface teacher quantized at
 * W8A8, W6A6 and W4A4, by PTQ (calibration only) and by distillation, on
 * the GAN faces (../shared/data/synthetic-faces, the "synthetic" arm), on
 * real FFHQ faces (../shared/data/real-faces-ffhq, the "real" arm) and,
 * optionally, on data-free generated faces (generated:N); LFW accuracy
 * (../shared/data/lfw, box crop lfw-funneled, flip-sum, insightface
 * 10-fold) of the teacher and of every student, each student evaluated by
 * running its fake-quantized forward in the engine (EngineEmbedder); model
 * file sizes and wall times. Besides accuracy, every student's agreement
 * with the teacher on the evaluation faces: the mean teacher-student cosine
 * over 1024 LFW images ("LFW cos"; far less noisy than a 0.3-point LFW
 * accuracy difference, which is within the 10-fold spread). Rows measured
 * before this column existed get it filled from their saved .qfm.
 *
 *   flock -s /tmp/qf-cpu.lock node --import tsx bench/quantface.ts \
 *     [--arms synthetic,real,synthetic+real,generated:512] [--bits w8a8,w6a6,w4a4] [--modes ptq,ptq-minmax,ptq-wmse,kd,kd-aug,kd-sgd,kd-res8] \
 *     [--steps N] [--batch B] [--lr X] [--optimizer sgd|adamw] [--calib-steps N] [--augment LIST] \
 *     [--weight-decay X] [--act-range minmax|mse|learned] [--weight-range minmax|mse|learned] \
 *     [--lr-schedule step|cosine] [--range-lr-scale X] [--feature-loss W] \
 *     [--layer-bits RULES] [--equalize ALPHA[:range|rms]] [--qdrop P] [--relation-loss W] [--seed S] [--ste unmasked|clipped]
 *     [--teacher faceplugin|mobileface|PATH [--eval-align landmarks|lfw-funneled]] [--seeds 0,1] [--skip-engine-lfw] [--fill-engine-lfw] [--reuse]
 *     [--out DIR] [--limit PAIRS] [--threads T] [--tag T] [--fresh]
 *
 * Modes (presets; --steps, --batch, --lr, ... override the distillation ones;
 * --calib-steps, --layer-bits and --weight-range also apply to the PTQ modes):
 * - ptq: calibration only, activation ranges equalized across channels and
 *   narrowed to the MSE optimum (quantize's PTQ defaults), min/max weight ranges;
 * - ptq-minmax: calibration only, running min/max ranges, no equalization
 *   (the reference's PTQ);
 * - ptq-wmse: ptq with per-channel MSE-clipped weight ranges too (the
 *   strongest PTQ here, the fair baseline for distillation);
 * - kd: distillation as recommended here (KD_PRESET below, and what else
 *   was tried): AdamW lr 1e-4 without weight decay, learned activation
 *   ranges after MSE calibration (100 steps), flip, scale 0.1 / shift 0.05
 *   jitter, colour 0.2, 1200 steps of 64. The CLI runs the same with
 *   `quantface quantize --optimizer adamw --lr 1e-4 --weight-decay 0
 *   --act-range learned --calib-steps 100 --steps 1200 --batch 64
 *   --augment flip,scale=0.1,shift=0.05,brightness=0.2,contrast=0.2,saturation=0.2`;
 * - kd-aug: kd with stronger augmentation (scale 0.25, shift 0.1, colour 0.3);
 * - kd-sgd: distillation with the method's defaults (SGD Nesterov 0.9, wd
 *   5e-4, lr 0.1 x 64/512, min/max ranges frozen after 300 steps, flip only);
 * - kd-res8: kd with the residual stream's activations at 8 bits
 *   (--residual-bits 8: residual-addition outputs and skip sources; same
 *   file size) and the relational loss 0.25 (mixed activation widths, so
 *   not a pure W4A4 model: reported beside it).
 *
 * Results accumulate in DIR/results.json (default tmp/bench-quantface):
 * a rerun skips the students already measured (pass --fresh to redo them),
 * so the benchmark can run in pieces. Not a timing benchmark: run it
 * under the shared lock; wall times are reported as measured.
 * Exits 0 with a message when ../shared is absent.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runEval } from '../lib/eval/run.js';
import { RuntimeEmbedder, type Embedder } from '../lib/eval/embedder.js';
import { EngineEmbedder, loadQfmEmbedder } from '../lib/distill/embedder.js';
import { loadTeacher } from '../lib/distill/teacher.js';
import { quantize, type QuantizeOptions } from '../lib/distill/trainer.js';
import { parseAugment } from '../lib/cli/quantize.js';
import { binding } from '../lib/binding.js';
import { ImageFolder } from '../lib/data/dataset.js';
import { preprocess } from '../lib/io/model-info.js';
import { noGrad, type Module } from '../lib/nn/module.js';
import { loadQfm } from '../lib/io/qfm.js';
import { rowCosines } from './lib/runtime-faces.js';
import type { FTensor } from '../lib/tensor.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const shared = join(root, '..', 'shared');
const lfw = join(shared, 'data', 'lfw');

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
/** A number for the table, '-' when absent. */
const f = (x: number | undefined | null, d: number): string => (x === undefined || x === null || !Number.isFinite(x) ? '-' : x.toFixed(d));
const list = (name: string, dflt: string): string[] => (arg(name) ?? dflt).split(',').map((s) => s.trim()).filter(Boolean);

/**
 * Teachers: the strong one (faceplugin fr_feature.onnx, LFW 98.4 with the landmark file) is the default
 * table; mobileface (TF.js, LFW 89.4 with the box crop) the second. Any other path: --eval-align names
 * its LFW alignment (landmarks or lfw-funneled; default landmarks).
 */
const TEACHERS: Record<string, { path: string; evalAlign: 'landmarks' | 'lfw-funneled'; out: string }> = {
  faceplugin: { path: join(shared, 'models', 'faceplugin', 'fr_feature.onnx'), evalAlign: 'landmarks', out: 'bench-quantface-faceplugin' },
  mobileface: { path: join(shared, 'models', 'mobileface', 'mobileface.json'), evalAlign: 'lfw-funneled', out: 'bench-quantface' },
};
const teacherArg = arg('--teacher') ?? 'faceplugin';
const teacherSpec = TEACHERS[teacherArg] ?? {
  path: resolve(teacherArg),
  evalAlign: (arg('--eval-align') ?? 'landmarks') as 'landmarks' | 'lfw-funneled',
  out: `bench-quantface-${teacherArg.replace(/^.*[\\/]/, '').replace(/\.[^.]*$/, '')}`,
};
const teacherPath = teacherSpec.path;
const evalAlign = teacherSpec.evalAlign;
/** The same crops as the LFW evaluation, for the agreement set. */
const agreementAlign = evalAlign === 'landmarks' ? `landmarks:${join(lfw, 'landmarks-5pt.txt')}` : 'lfw-funneled';
const ARMS: Record<string, { data: string; align?: string }> = {
  synthetic: { data: join(shared, 'data', 'synthetic-faces'), align: 'ffhq' },
  real: { data: join(shared, 'data', 'real-faces-ffhq'), align: 'ffhq' },
  // The GAN faces and the real FFHQ faces together (issue 13's learning curve): a folder of two links under --out.
  'synthetic+real': { data: '', align: 'ffhq' },
};

if (!existsSync(join(lfw, 'pairs.txt')) || !existsSync(teacherPath)) {
  console.log(`skipped: needs ${lfw}/pairs.txt and ${teacherPath}`);
  process.exit(0);
}

interface Row {
  key: string;
  arm: string;
  bits: string;
  mode: string;
  lfw: number;
  lfwStd: number;
  drop: number;
  holdoutCosine: number | null;
  /** Mean teacher-student cosine over 1024 LFW images (the evaluation's crop, no flip): agreement on the evaluation faces. */
  lfwCosine?: number;
  /** The same student on the int8 runtime (what users run: loadModel / quantface eval), LFW accuracy and drop. */
  lfwRuntime?: number;
  lfwRuntimeStd?: number;
  dropRuntime?: number;
  seed?: number;
  /** The trainer's report: held-out agreement at the start (the PTQ state), the kept step, rollbacks. */
  startCosine?: number | null;
  bestStep?: number;
  rollbacks?: number;
  bytes: number;
  trainSeconds: number;
  evalSeconds: number;
  steps: number;
  options: Record<string, unknown>;
  at: string;
}

const outDir = resolve(arg('--out') ?? join(root, 'tmp', teacherSpec.out));
mkdirSync(outDir, { recursive: true });
{
  const both = join(outDir, 'data-synthetic+real');
  mkdirSync(both, { recursive: true });
  for (const [name, target] of [['synthetic', ARMS.synthetic!.data], ['real', ARMS.real!.data]] as const)
    if (!existsSync(join(both, name))) symlinkSync(target, join(both, name));
  ARMS['synthetic+real']!.data = both;
}
const resultsPath = join(outDir, 'results.json');
const results: Record<string, Row> = existsSync(resultsPath) ? (JSON.parse(readFileSync(resultsPath, 'utf8')) as Record<string, Row>) : {};
// --fresh redoes the students this run names; rows of other runs stay.
const fresh = process.argv.includes('--fresh');
// Rows this run measured: save() merges them into the file as it is now, so benchmark runs in parallel
// (different arms or modes) do not drop each other's rows; written whole and renamed into place.
const written = new Set<string>();
/** Runs fn holding resultsPath.lock (several benchmark processes may share one results file). */
const withResultsLock = (fn: () => void): void => {
  const lock = `${resultsPath}.lock`;
  for (let i = 0; ; i++) {
    try {
      closeSync(openSync(lock, 'wx'));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // A lock older than a minute was left by a killed process.
      if (i > 600 || Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? 0) > 60_000) rmSync(lock, { force: true });
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try {
    fn();
  } finally {
    rmSync(lock, { force: true });
  }
};
const save = (): void => withResultsLock(() => {
  const onDisk: Record<string, Row> = existsSync(resultsPath) ? (JSON.parse(readFileSync(resultsPath, 'utf8')) as Record<string, Row>) : {};
  for (const k of written) if (results[k]) onDisk[k] = results[k]!;
  for (const [k, v] of Object.entries(onDisk)) if (!written.has(k)) results[k] = v;
  const tmp = `${resultsPath}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(onDisk, null, 1));
  renameSync(tmp, resultsPath);
});

const arms = list('--arms', 'synthetic,real');
const bitsList = list('--bits', 'w8a8,w6a6,w4a4');
type Mode = 'ptq' | 'ptq-minmax' | 'ptq-wmse' | 'kd' | 'quantface' | 'kd-adamw' | 'kd-aug' | 'kd-sgd' | 'kd-res8';
/**
 * Distillation presets (issue 5). `kd`, the recommendation: AdamW lr 1e-4 without weight decay,
 * learned activation ranges after MSE calibration (100 steps), flip, scale 0.1 / shift 0.05 jitter,
 * colour 0.2, 1200 steps of 64. This is what the earlier kd rows measured:
 * their preset also asked for mixup 0.5, which the trainer dropped until it was fixed, so mixup is
 * left out here to keep the rows reproducible.
 *
 * Tried on mobileface W4A4 and kept as options, not in the preset (teacher-student cosine on 512 LFW
 * images, kd 0.818): stronger augmentation (scale 0.25 / shift 0.1 / colour 0.3, mode kd-aug) 0.825
 * but LFW accuracy no better (W4A4 drop 4.02 vs 3.13, W6A6 0.50 vs 0.27; both within the 10-fold
 * spread); lr 3e-4 cosine 0.816 (better fit of the training faces, not of LFW); kd-aug + mixup 0.5 (now
 * applied) 0.823; kd-aug + featureLoss 0.02 0.777; learned per-channel weight clipping no better than
 * min/max after 240 steps (distillation moves the weights to their grid anyway; it helps PTQ: W4A8
 * PTQ held-out cosine 0.786 -> 0.812); 2400 steps instead of 1200 (row synthetic/w4a4/kd/s2400):
 * LFW drop 3.15 vs 3.13, LFW cosine 0.814 vs 0.819.
 *
 * Later W4A4 experiments (same preset unless named; LFW cosine over 1024 LFW images, which repeats to
 * +-0.001 across seeds: seed 0 0.819, seed 1 0.819, while LFW accuracy moved 3.13 -> 3.23 pt):
 * activation equalization before distillation (--equalize 0.5:rms) 0.816; QDrop 0.5 0.819; relational
 * loss 0.25 0.822; relational + first layer at 8 bits 0.830; a progressive start from a student whose
 * residual stream ran at 8 bits 0.80 after 600 steps (no better than from the teacher). Diagnosis: the
 * 4-bit activations are the limit, not the weights: W4A8 distilled 0.935 (LFW drop 0.87 pt), W8A4 0.846
 * (2.73 pt). Six of the 17 activations at 8 bits (the residual stream: add_1/4/5/8/9/12; same 305 KiB
 * file) + relational loss: 0.902, LFW drop 1.12 pt. --residual-bits 8 keeps the whole residual stream
 * at 8 bits generically (rows ending /res8; with the relational loss: mode kd-res8, 0.917, 0.52 / 0.85
 * pt over two seeds). Parts of it, with the relational loss: only the skip sources (add_1/5/9/13) at 8
 * bits 0.856 (2.50 pt); only the last PReLU before each addition (add_3/7/11/15) 0.827 (2.45 pt): the
 * residual-addition outputs, which feed each stage's 1x1 convolution and the dense layer, carry most of it.
 */
const KD_ADAMW_PRESET: Partial<QuantizeOptions> = {
  optimizer: 'adamw', lr: 1e-4, weightDecay: 0, actRange: 'learned', steps: 1200, batchSize: 64, calibSteps: 100,
  augment: { flip: true, scale: 0.1, shift: 0.05, brightness: 0.2, contrast: 0.2, saturation: 0.2 },
};
const PRESETS: Record<Mode, Partial<QuantizeOptions>> = {
  ptq: { noTrain: true, actRange: 'mse' },
  'ptq-minmax': { noTrain: true, actRange: 'minmax', equalize: false },
  'ptq-wmse': { noTrain: true, actRange: 'mse', weightRange: 'mse' },
  // What the CLI runs by default (recipe kd), at its defaults unless --steps etc. are given.
  kd: { recipe: 'kd' },
  // The paper's method as published (recipe quantface).
  quantface: { recipe: 'quantface' },
  // The earlier recommendation (rows of mobileface's table before the kd recipe): AdamW, learned ranges.
  'kd-adamw': { recipe: 'quantface', calibration: 'during', equalize: false, ...KD_ADAMW_PRESET },
  'kd-aug': { recipe: 'quantface', calibration: 'during', equalize: false, ...KD_ADAMW_PRESET, augment: { flip: true, scale: 0.25, shift: 0.1, brightness: 0.3, contrast: 0.3, saturation: 0.3 } },
  'kd-sgd': { recipe: 'quantface', optimizer: 'sgd', actRange: 'minmax', steps: 1200, batchSize: 64, weightDecay: 5e-4 },
  // Mixed activations at the same file size: the residual stream at 8 bits, the other activations and every
  // weight at the row's widths, plus the relational loss (what reaches the W4A4 accuracy target; see above).
  'kd-res8': { recipe: 'kd', residualBits: 8, relationLoss: 0.25 },
};
const modes = list('--modes', 'ptq,ptq-minmax,kd') as Mode[];
for (const m of modes) if (!PRESETS[m]) throw new Error(`unknown mode ${m}: use ${Object.keys(PRESETS).join(', ')}`);
const limit = arg('--limit') ? Number(arg('--limit')) : undefined;
if (arg('--threads')) binding.setThreads(Number(arg('--threads')));
const train: Partial<QuantizeOptions> = {
  ...(arg('--steps') ? { steps: Number(arg('--steps')) } : {}),
  ...(arg('--batch') ? { batchSize: Number(arg('--batch')) } : {}),
  ...(arg('--lr') ? { lr: Number(arg('--lr')) } : {}),
  ...(arg('--optimizer') ? { optimizer: arg('--optimizer') as 'sgd' | 'adamw' } : {}),
  ...(arg('--calib-steps') ? { calibSteps: Number(arg('--calib-steps')) } : {}),
  ...(arg('--augment') ? { augment: parseAugment(arg('--augment')!) } : {}),
  ...(arg('--layer-bits') ? { layerBits: arg('--layer-bits')! } : {}),
  ...(arg('--weight-decay') ? { weightDecay: Number(arg('--weight-decay')) } : {}),
  ...(arg('--act-range') ? { actRange: arg('--act-range') as 'minmax' | 'mse' | 'learned' } : {}),
  ...(arg('--weight-range') ? { weightRange: arg('--weight-range') as 'minmax' | 'mse' | 'learned' } : {}),
  ...(arg('--lr-schedule') ? { lrSchedule: arg('--lr-schedule') as 'step' | 'cosine' } : {}),
  ...(arg('--range-lr-scale') ? { rangeLrScale: Number(arg('--range-lr-scale')) } : {}),
  ...(arg('--feature-loss') ? { featureLoss: Number(arg('--feature-loss')) } : {}),
  ...(arg('--equalize') ? { equalize: parseEqualize(arg('--equalize')!) } : {}),
  ...(arg('--qdrop') ? { qdrop: Number(arg('--qdrop')) } : {}),
  ...(arg('--relation-loss') ? { relationLoss: Number(arg('--relation-loss')) } : {}),
  ...(arg('--seed') ? { seed: Number(arg('--seed')) } : {}),
  ...(arg('--ste') ? { ste: arg('--ste') as 'unmasked' | 'clipped' } : {}),
  ...(arg('--init') ? { init: arg('--init')! } : {}),
  ...(arg('--residual-bits') ? { residualBits: Number(arg('--residual-bits')) } : {}),
};
// PTQ modes take the calibration length, the per-layer widths and the weight ranges.
const ptqTrain: Partial<QuantizeOptions> = {
  ...(train.calibSteps ? { calibSteps: train.calibSteps } : {}),
  ...(train.layerBits ? { layerBits: train.layerBits } : {}),
  ...(train.weightRange ? { weightRange: train.weightRange } : {}),
  ...(train.equalize ? { equalize: train.equalize } : {}),
  ...(train.seed !== undefined ? { seed: train.seed } : {}),
};
const tag = arg('--tag') ?? '';
const skipEngineLfw = process.argv.includes('--skip-engine-lfw');
const seeds = list('--seeds', arg('--seed') ?? '0').map(Number);
if (seeds.some((x) => !Number.isInteger(x) || x < 0)) throw new Error('--seeds: non-negative integers, e.g. 0,1');
/** --equalize ALPHA[:rms|range] */
function parseEqualize(v: string): { alpha: number; statistic: 'rms' | 'range' } {
  const [a, st] = v.split(':');
  return { alpha: Number(a), statistic: (st ?? 'rms') as 'rms' | 'range' };
}

const lfwPairs = async (embedders: Array<{ embedder: Embedder }>): Promise<Array<{ acc: number; std: number; seconds: number }>> => {
  const r = await runEval({ models: [], embedders, pairs: lfw, align: evalAlign, batch: 64, ...(limit ? { limit } : {}) });
  return r.models.map((m) => ({ acc: m.accuracy!, std: m.std!, seconds: m.embedSeconds }));
};

const t0 = performance.now();
console.log(`quantface benchmark: teacher ${teacherPath}, threads ${binding.getThreads()}, results in ${resultsPath}`);

// ---------------------------------------------------------------- teacher
const teacher = await loadTeacher(teacherPath);

// Agreement on LFW: 1024 LFW images (a seeded pick), the teacher's embeddings once.
const agreementSet = await (async (): Promise<{ xs: FTensor[]; te: FTensor[] }> => {
  const all = await ImageFolder.open(lfw, { align: agreementAlign, size: teacher.info.inputShape[0] });
  const pick = all.split({ holdout: 1024, seed: 1 }).holdout;
  const ld = pick.loader({ batchSize: 64, seed: 0, augment: false, shuffle: false });
  const xs: FTensor[] = [];
  for await (const b of ld.epoch(0)) xs.push(preprocess(teacher.info, b.data, b.n));
  await ld.close();
  return { xs, te: xs.map((x) => noGrad(() => teacher.model.forward(x).clone() as FTensor)) };
})();
const lfwAgreement = (m: Module): number => {
  m.eval();
  let sum = 0;
  let n = 0;
  agreementSet.xs.forEach((x, k) => {
    const s = noGrad(() => m.forward(x).clone() as FTensor);
    const t = agreementSet.te[k]!;
    const rows = x.shape[0]!;
    sum += rowCosines(s.data, t.data, rows, t.shape[1]!).mean * rows;
    n += rows;
  });
  return sum / n;
};
if (!results.teacher || limit !== undefined) {
  const [m] = await lfwPairs([{ embedder: new EngineEmbedder(teacher.model, teacher.info, { name: teacherArg }) }]);
  let bytes = 0;
  for (const x of teacher.model.stateDict().values()) bytes += x.numel * 4;
  written.add('teacher');
  results.teacher = { key: 'teacher', arm: '-', bits: 'fp32', mode: 'teacher', lfw: m!.acc, lfwStd: m!.std, drop: 0, holdoutCosine: null, bytes, trainSeconds: 0, evalSeconds: m!.seconds, steps: 0, options: {}, at: new Date().toISOString() };
  if (limit === undefined) save();
  console.log(`teacher ${teacherArg} LFW ${m!.acc.toFixed(4)} +- ${m!.std.toFixed(4)} (float32 ${(bytes / 1024).toFixed(0)} KiB)`);
}
const teacherAcc = results.teacher!.lfw;

// ---------------------------------------------------------------- students
for (const arm of arms) {
  const a = ARMS[arm] ?? (arm.startsWith('generated:') ? { data: arm } : null);
  if (!a) throw new Error(`unknown arm ${arm}: use synthetic, real, synthetic+real or generated:N`);
  for (const bits of bitsList)
    for (const mode of modes)
    for (const seed of mode.startsWith('ptq') ? seeds.slice(0, 1) : seeds) {
      const key = `${arm}/${bits}/${mode}${tag ? `/${tag}` : ''}${seed !== 0 ? `/s${seed}` : ''}`;
      if (results[key] && limit === undefined && !fresh) {
        console.log(`${key}: done before (LFW int8 ${f(results[key]!.lfwRuntime, 4)}, engine ${f(results[key]!.lfw, 4)}), skipped`);
        continue;
      }
      const file = join(outDir, `${key.replace(/[/:]/g, '_')}.qfm`);
      const opts: QuantizeOptions = {
        teacher: teacherPath,
        data: a.data,
        ...(a.align ? { align: a.align } : {}),
        bits,
        out: file,
        log: file.replace(/\.qfm$/, '.jsonl'),
        ...PRESETS[mode],
        ...(mode.startsWith('ptq') ? ptqTrain : train),
        seed,
        checkpointEvery: 500,
        resume: true,
      };
      const tq = performance.now();
      let lastLine = 0;
      // --reuse: a student saved by an earlier run whose scoring did not finish is scored as it is (its
      // training figures from the file's provenance notes) instead of being trained again.
      const reused = process.argv.includes('--reuse') && existsSync(file) ? await reusedResult(file) : null;
      if (reused) console.log(`${key}: scoring the saved ${file} (--reuse)`);
      const r = reused ?? await quantize({
        ...opts,
        onProgress: (p) => {
          if ((p.phase === 'train' || p.phase === 'calibrate' || p.phase === 'generate') && Date.now() - lastLine > 30_000) {
            lastLine = Date.now();
            console.log(`  ${key}: ${p.phase} ${p.step}/${p.totalSteps}${p.loss !== undefined ? ` loss ${p.loss.toExponential(3)}` : ''}${p.agreement !== undefined ? ` held-out cos ${p.agreement.toFixed(4)}` : ''}${p.generate ? ` ${p.generate.phase} ${p.generate.done}/${p.generate.total}` : ''}`);
          }
        },
      });
      const trainSeconds = (performance.now() - tq) / 1000;
      // The engine's fake-quant LFW pass is the slow one (float convolutions over 12,000 crops and their mirrors):
      // --skip-engine-lfw leaves it out (the row keeps the int8 runtime accuracy and the engine's LFW cos).
      const [m] = skipEngineLfw ? [{ acc: NaN, std: NaN, seconds: 0 }] : await lfwPairs([{ embedder: await loadQfmEmbedder(file, { name: key }) }]);
      const rtEmbedder = await RuntimeEmbedder.load(file);
      const [rt] = await lfwPairs([{ embedder: rtEmbedder }]).finally(() => rtEmbedder.dispose());
      const row: Row = {
        key, arm, bits, mode, lfw: m!.acc, lfwStd: m!.std, drop: (teacherAcc - m!.acc) * 100,
        lfwRuntime: rt!.acc, lfwRuntimeStd: rt!.std, dropRuntime: (teacherAcc - rt!.acc) * 100, seed,
        startCosine: r.startAgreement?.meanCosine ?? null, ...(r.bestStep !== undefined ? { bestStep: r.bestStep } : {}), rollbacks: r.rollbacks.length,
        holdoutCosine: r.agreement?.meanCosine ?? null, lfwCosine: lfwAgreement((await loadQfm(file)).model), bytes: r.out!.bytes, trainSeconds, evalSeconds: m!.seconds, steps: r.steps,
        options: { ...PRESETS[mode], ...(mode.startsWith('ptq') ? ptqTrain : train), steps: r.steps, totalSteps: r.totalSteps, data: r.data, trainImages: r.trainImages, quantizeSeconds: r.totalSeconds },
        at: new Date().toISOString(),
      };
      if (limit === undefined) {
        results[key] = row;
        written.add(key);
        save();
      }
      console.log(`${key}: LFW engine ${f(row.lfw, 4)} (drop ${f(row.drop, 2)} pt), int8 runtime ${row.lfwRuntime!.toFixed(4)} (drop ${row.dropRuntime!.toFixed(2)} pt), held-out cos ${row.holdoutCosine?.toFixed(4)}, LFW cos ${row.lfwCosine?.toFixed(4)}, ${(row.bytes / 1024).toFixed(0)} KiB, ${row.steps} steps in ${trainSeconds.toFixed(0)} s`);
    }
}

/** What quantize() returned for a saved student, read back from its provenance notes (--reuse). */
async function reusedResult(file: string): Promise<Pick<Awaited<ReturnType<typeof quantize>>, 'startAgreement' | 'bestStep' | 'rollbacks' | 'agreement' | 'out' | 'steps' | 'totalSteps' | 'data' | 'trainImages' | 'totalSeconds'>> {
  const l = await loadQfm(file);
  const p = l.provenance as unknown as { data?: { source?: string; trainImages?: number }; notes?: { startAgreement?: number; bestStep?: number; rollbacks?: unknown[]; agreement?: { meanCosine: number }; steps?: number; seconds?: number } };
  const n = p.notes ?? {};
  const agreement = n.agreement ? ({ ...n.agreement } as never) : null;
  return {
    startAgreement: n.startAgreement !== undefined ? ({ meanCosine: n.startAgreement } as never) : null,
    ...(n.bestStep !== undefined ? { bestStep: n.bestStep } : {}),
    rollbacks: (n.rollbacks ?? []) as never,
    agreement,
    out: { path: file, bytes: statSync(file).size },
    steps: n.steps ?? 0,
    totalSteps: n.steps ?? 0,
    data: p.data?.source ?? '',
    trainImages: p.data?.trainImages ?? 0,
    totalSeconds: n.seconds ?? 0,
  };
}

// ---------------------------------------------------------------- agreement of earlier rows
if (limit === undefined)
  for (const r of Object.values(results)) {
    if (r.mode === 'teacher' || r.lfwCosine !== undefined) continue;
    const file = join(outDir, `${r.key.replace(/[/:]/g, '_')}.qfm`);
    if (!existsSync(file)) continue;
    r.lfwCosine = lfwAgreement((await loadQfm(file)).model);
    written.add(r.key);
    save();
  }

// ---------------------------------------------------------------- engine accuracy of rows measured without it
// --fill-engine-lfw: the fake-quant engine's LFW accuracy of the rows of --bits and --modes that have a saved
// student but no engine figure (rows measured with --skip-engine-lfw), from the saved .qfm; no retraining.
if (limit === undefined && process.argv.includes('--fill-engine-lfw'))
  for (const key of Object.keys(results)) {
    // Read the row afresh each time: save() replaces the rows other runs wrote with their copies on disk, so
    // a row object taken before the first save would be filled but never written.
    const r = results[key]!;
    if (r.mode === 'teacher' || (r.lfw !== null && Number.isFinite(r.lfw))) continue;
    if (!bitsList.includes(r.bits) || !modes.includes(r.mode as Mode)) continue; // the rows named by --bits and --modes
    const file = join(outDir, `${r.key.replace(/[/:]/g, '_')}.qfm`);
    if (!existsSync(file)) continue;
    const [m] = await lfwPairs([{ embedder: await loadQfmEmbedder(file, { name: r.key }) }]);
    r.lfw = m!.acc;
    r.lfwStd = m!.std;
    r.drop = (teacherAcc - m!.acc) * 100;
    r.evalSeconds = m!.seconds;
    written.add(r.key);
    save();
    console.log(`${r.key}: LFW engine ${f(r.lfw, 4)} (drop ${f(r.drop, 2)} pt), filled from ${file}`);
  }

// ---------------------------------------------------------------- table
// The table shows every row on disk, including those other runs wrote meanwhile.
if (existsSync(resultsPath)) for (const [k, v] of Object.entries(JSON.parse(readFileSync(resultsPath, 'utf8')) as Record<string, Row>)) if (!written.has(k)) results[k] = v;
const rows = Object.values(results).sort((x, y) => x.key.localeCompare(y.key));
const pad = (s: string, n: number): string => s.padEnd(n);
console.log(`\nteacher ${teacherArg} (${teacherPath}), LFW ${evalAlign}; drop in points from the teacher's engine accuracy; engine = fake-quant forward (float crops), int8 = the runtime (byte crops)`);
console.log(pad('model', 36) + pad('LFW engine', 18) + pad('drop', 7) + pad('LFW int8', 9) + pad('drop', 7) + pad('LFW cos', 9) + pad('held-out', 9) + pad('start', 8) + pad('size', 10) + pad('steps', 7) + 'wall time');
for (const r of rows)
  console.log(
    pad(r.key, 36) + pad(Number.isFinite(r.lfw) ? `${f(r.lfw, 4)} +- ${f(r.lfwStd, 4)}` : '-', 18) + pad(r.mode === 'teacher' ? '-' : f(r.drop, 2), 7) +
      pad(f(r.lfwRuntime, 4), 9) + pad(f(r.dropRuntime, 2), 7) + pad(f(r.lfwCosine, 4), 9) + pad(f(r.holdoutCosine, 4), 9) + pad(f(r.startCosine, 4), 8) +
      pad(`${(r.bytes / 1024).toFixed(0)} KiB`, 10) + pad(`${r.steps}${r.bestStep !== undefined ? `(${r.bestStep})` : ''}${r.rollbacks ? `r${r.rollbacks}` : ''}`, 7) +
      (r.mode === 'teacher' ? `eval ${r.evalSeconds.toFixed(0)} s` : `${r.trainSeconds.toFixed(0)} s`),
  );
// Means over seeds: rows that differ only in their /sN suffix.
const groups = new Map<string, Row[]>();
for (const r of rows) {
  if (r.mode === 'teacher') continue;
  const g = r.key.replace(/\/s\d+$/, '');
  groups.set(g, [...(groups.get(g) ?? []), r]);
}
const multi = [...groups].filter(([, rs]) => rs.length > 1);
if (multi.length) {
  console.log('\nmeans over seeds: ' + pad('', 19) + pad('drop engine', 12) + pad('drop int8', 11) + pad('LFW cos', 9) + 'seeds');
  const mean = (xs: Array<number | undefined | null>): number => {
    const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
  };
  for (const [g, rs] of multi)
    console.log(pad(g, 36) + pad(f(mean(rs.map((r) => r.drop)), 2), 12) + pad(f(mean(rs.map((r) => r.dropRuntime)), 2), 11) + pad(f(mean(rs.map((r) => r.lfwCosine)), 4), 9) + rs.map((r) => r.seed ?? 0).join(','));
}
console.log(`\ntargets (drop from the teacher, int8 runtime, mean of two seeds): strong teacher W8A8 <= 0.10, W6A6 <= 0.20, a distilled student's LFW cos never below the best PTQ student's. This run: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
