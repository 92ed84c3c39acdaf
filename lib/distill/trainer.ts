/**
 * quantize(): the QuantFace pipeline (../../../shared/method.md).
 *
 * 1. The teacher (TF.js / ONNX / float .qfm file, or an engine Module) runs
 *    in eval mode under noGrad.
 * 2. The student is toQat(teacher) at the chosen widths: per-output-channel
 *    weight fake quantization on every Conv2d / Linear, activations
 *    quantized after every activation function (PReLU, ReLU) and every
 *    residual addition, PReLU slopes at the activation width.
 * 3. Activation ranges are calibrated (running min/max) during the first
 *    `calibSteps` training forwards, then frozen (the reference's scheme).
 * 4. Distillation: loss = mean((s/|s| - t/|t|)^2) between the student's and
 *    the teacher's embeddings of the same augmented faces; SGD with
 *    Nesterov momentum 0.9, weight decay 5e-4, lr 0.1 x batch / 512, the
 *    gradient's global L2 norm clipped at 5, step decay x0.1 near the end.
 * 5. A held-out split measures teacher-student agreement (mean cosine)
 *    during training; the result is saved as a .qfm file.
 *
 * `noTrain` stops after calibration: post-training quantization (PTQ).
 *
 * Determinism: every random choice comes from the seed and the step (data
 * order and augmentation from lib/data, dropout masks reseeded per step),
 * so the same options give bit-identical weights on one machine with one
 * thread count. Checkpoints hold the student's master weights and buffers
 * (activation ranges, calibration counters), the optimiser's momentum and
 * the step; resuming from one continues exactly as the uninterrupted run.
 */
import { existsSync, statSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { basename, dirname, resolve } from 'node:path';
import { QuantFaceError } from '../errors.js';
import { binding } from '../binding.js';
import { Tensor, type FTensor } from '../tensor.js';
import { Module, Parameter, noGrad } from '../nn/module.js';
import { Graph } from '../nn/containers.js';
import { bufferPool } from '../nn/pool.js';
import { BatchNorm, Dropout } from '../nn/layers.js';
import { QuantFaceLoss, RelationLoss } from '../nn/loss.js';
import { SGD, AdamW, clipGradNorm } from '../optim/optimizers.js';
import { stepLr, cosineLr, type Schedule } from '../optim/schedules.js';
import { toQat, quantizers, freezeActRanges, stripQat } from '../quant/qat.js';
import { ActFakeQuant, type SteMode } from '../quant/fake-quant.js';
import { useClippedWeights, bakeClippedWeights, type WeightRangeMode } from '../quant/weight-range.js';
import { equalizeActivations, type EqualizeOptions } from '../quant/equalize.js';
import { saveQfm, loadQfm, type Provenance } from '../io/qfm.js';
import { preprocess, type ModelInfo } from '../io/model-info.js';
import { flipHorizontal } from '../data/align.js';
import { resolveAugment, type AugmentOptions, type ResolvedAugment } from '../data/augment.js';
import { WorkerPool, InlineExecutor, type DataExecutor } from '../data/pool.js';
import type { ImageFolder } from '../data/dataset.js';
import type { DataAlignOption } from '../data/dataset.js';
import type { Batch, DataLoader } from '../data/loader.js';
import { bitsName, layerOverrides, parseBits, parseLayerRules, residualRules, type BitWidths, type LayerRule } from './bits.js';
import { loadTeacher, weightsSha256, type Teacher } from './teacher.js';
import { DEFAULT_TEACHER_NAME, isKnownTeacher, resolveKnownTeacher } from './known-teachers.js';
import { openData } from './data.js';
import type { GenerateOptions, GenerateProgress } from './generate.js';
import { loadCheckpoint, saveCheckpoint, type JsonValue } from './checkpoint.js';
import { JsonLog, type LogRecord } from './log.js';
import { refineActRanges } from './ranges.js';
import { recalibrateBatchNorm } from './bn.js';
import { tapFeatures, type FeatureTaps } from './features.js';
import { LearnedActQuant, outQuantOwners } from './learned-range.js';
import { applyRecipe } from './recipes.js';

// ====================================================================== options
export interface QuantizeOptions {
  /**
   * A named recipe (./recipes.ts): 'kd' (default: distillation from the best PTQ state, keeping the best
   * student) or 'quantface' (the paper's method). The recipe fills in the options it names; options given
   * here win.
   */
  recipe?: 'kd' | 'quantface';
  /**
   * When the activation ranges are calibrated in a distillation run: 'first' (before training, in
   * inference mode on `calibSteps` batches, then frozen and refined: training starts from the PTQ
   * student) or 'during' (the reference: observed during the first `calibSteps` training steps).
   * Default: the recipe's ('first' for kd).
   */
  calibration?: 'first' | 'during';
  /**
   * Keep the student with the best held-out agreement (evaluated every `evalEvery` steps once the ranges
   * are frozen, the PTQ start included) instead of the last one. Default true (needs a held-out split).
   */
  keepBest?: boolean;
  /**
   * Divergence guard: when the loss stops being finite, or the held-out agreement falls clearly below the
   * best seen (checked at every evaluation, and at once when the training cosine collapses), the student
   * rolls back to the best state, the optimiser's momentum is cleared and the learning rate is multiplied
   * by `lrFactor`; after `maxRollbacks` rollbacks training stops early with the best student. `false`
   * turns it off (a non-finite loss then throws). Default { maxRollbacks: 3, lrFactor: 0.3 }.
   */
  guard?: false | { maxRollbacks?: number; lrFactor?: number };
  /**
   * Teacher: a TF.js model.json, an .onnx file, a float .qfm, an engine Module, or the name of a known public
   * teacher (./known-teachers.ts: 'faceplugin', fetched from the npm registry into the cache once, or
   * 'mobileface'). Default 'faceplugin' (LFW 98.4).
   */
  teacher?: string | Module;
  /**
   * Input description of a teacher file that records none (CLI --input-mean, --input-std, --bgr, --template):
   * lower precedence than the file, its sidecar and the registry of known models (lib/io/load.ts).
   * The resolved description is written into the student .qfm.
   */
  teacherInput?: import('../io/load.js').InputOverrides;
  /** Training faces: a folder, `generated:N`, or an ImageFolder. Required (the CLI supplies the zero-config default). */
  data: string | ImageFolder;
  /** Alignment of the folder's images (lib/data presets: none, ffhq, lfw-funneled, box:x,y,side, landmarks:FILE). Default 'none'. */
  align?: DataAlignOption;
  /** Widths: 'w8a8' (default), 'w6a6', 'w4a4', any 'wXaY', or { weightBits, actBits }. */
  bits?: string | BitWidths;
  /** Per-layer overrides: 'conv1=w8a8,dense/MatMul=w8,add_16=float' or rules (first match wins; * is a wildcard). */
  layerBits?: string | LayerRule[];
  /** Where to save the student (.qfm, written atomically). Optional in the API. */
  out?: string;
  /** Training length in passes over the training split (default: see `steps`). */
  epochs?: number;
  /** Training length in optimiser steps (overrides epochs). Default 1500 when neither is given. */
  steps?: number;
  /** Images per step. Default 64 (reduced to the training-set size when it is smaller). */
  batchSize?: number;
  /** Learning rate. Default 0.1 x batchSize / 512 (the paper's rate, scaled linearly). */
  lr?: number;
  /** Step decay points: fractions of the run (< 1) or step numbers. Default [0.75, 0.9]. */
  lrMilestones?: number[];
  /** Decay factor at each milestone. Default 0.1. */
  lrGamma?: number;
  /**
   * 'sgd' (the method: Nesterov momentum) or 'adamw'. Default 'sgd'.
   */
  optimizer?: 'sgd' | 'adamw';
  /** SGD momentum (Nesterov). Default 0.9. */
  momentum?: number;
  /**
   * Weight decay (L2, all parameters). Default 5e-4 when the teacher has BatchNorm layers (the paper's
   * networks), 0 when it has none (BatchNorm folded into the convolutions, as in most ONNX exports):
   * there nothing renormalises a convolution's output, so decay shrinks it under frozen activation
   * ranges and the student degrades as it trains (measured on the faceplugin teacher at W6A6).
   */
  weightDecay?: number;
  /** Global gradient L2-norm clip. Default 5; 0 disables. */
  clipNorm?: number;
  /** Batches that calibrate the activation ranges before they freeze. Default: the recipe's (kd 50, quantface 300, the reference: then the first training steps, at most the run length). */
  calibSteps?: number;
  /**
   * How the activation ranges end their calibration: 'minmax' (the reference: the running min/max,
   * frozen) or 'mse' (that range narrowed to the quantization-MSE optimum on a fixed set of training
   * images, then frozen; ./ranges.ts), or 'learned' ('mse', then trained by the distillation loss,
   * LSQ-style; ./learned-range.ts). Default 'mse'.
   */
  actRange?: 'minmax' | 'mse' | 'learned';
  /** Learning-rate multiplier of the learned activation ranges and weight clipping ratios ('learned'). Default 10. */
  rangeLrScale?: number;
  /**
   * Per-output-channel weight ranges (beyond the paper; ../quant/weight-range.ts): 'minmax' (the
   * method: each channel's min/max at every forward), 'mse' (that range clipped by per-channel ratios
   * that minimise the teacher weights' quantization MSE, fixed) or 'learned' ('mse', then the ratios
   * are trained by the distillation loss). Clipped ranges are baked into min/max form before saving.
   * Default 'minmax'.
   */
  weightRange?: WeightRangeMode;
  /**
   * Re-estimate every BatchNorm's running statistics at the end (after calibration in PTQ, after
   * training otherwise) on up to 512 unaugmented training images through the final student (./bn.ts).
   * Default false.
   */
  bnRecalibrate?: boolean;
  /**
   * Weight of an intermediate-feature distillation term added to the QuantFace loss (beyond the paper:
   * normalised MSE between the student's and the teacher's PReLU / Add outputs, ./features.ts).
   * Default 0 (the paper's embedding loss only). Measured on mobileface W4A4 with 208 training faces,
   * weight 0.02 lowered the LFW teacher-student cosine (0.825 -> 0.777): an experiment, not a default.
   */
  featureLoss?: number;
  /**
   * Activation range equalization before quantization (beyond the paper; ../quant/equalize.ts): a
   * function-preserving per-channel rescaling of the student's float copy (graph models) so that
   * per-tensor low-bit activations keep more levels per channel, measured on up to 256 training
   * images. `true` = { alpha: 0.5 } (statistic 'range'). Default: on with noTrain (PTQ), off for
   * distillation. Measured on mobileface (LFW teacher-student cosine, PTQ, GAN / FFHQ faces): W6A6
   * 0.953 -> 0.960 / 0.951 -> 0.956, W4A4 0.665 -> 0.688 / 0.653 -> 0.688; after W4A4 distillation
   * 0.819 without, 0.816 with (no gain).
   */
  equalize?: boolean | EqualizeOptions;
  /**
   * Start the student from these float weights instead of the teacher's (beyond the paper): a float or
   * quantized .qfm of the same architecture (quantizers are dropped, weights kept), or an engine Module.
   * For progressive quantization, e.g. a W4A4 run started from a distilled student with some activations
   * at 8 bits. The teacher still provides the targets. Default: the teacher's weights.
   */
  init?: string | Module;
  /**
   * Activation width on the residual stream (beyond the paper): every residual addition's output and each
   * skip connection's source get this many bits, the other activations `bits`' width (graph models;
   * explicit layerBits rules win). Weights, and so the model size, are unchanged. Default: no override.
   */
  residualBits?: number;
  /**
   * Weight of a relational term added to the QuantFace loss (beyond the paper; ../nn/loss.ts
   * RelationLoss): the student keeps the teacher's pairwise cosines within each batch. Default 0.
   */
  relationLoss?: number;
  /**
   * QDrop probability (beyond the paper; Wei et al. 2022): after calibration each activation element
   * stays in float with this probability during training (../distill/learned-range.ts). Needs
   * actRange 'learned'. Default 0.
   */
  qdrop?: number;
  /** Learning-rate schedule: 'step' (the method: x lrGamma at lrMilestones) or 'cosine' (to 0 at the last step). Default 'step'. */
  lrSchedule?: 'step' | 'cosine';
  /** Straight-through estimator: 'unmasked' (reference, default) or 'clipped'. */
  ste?: SteMode;
  /** Seed of everything random (split, order, augmentation). Default 0. */
  seed?: number;
  /** Native compute threads (default: the addon's default). */
  threads?: number;
  /** Image decoding worker threads (default 1; 0 = main thread). */
  workers?: number;
  /** Post-training quantization: calibrate, freeze, save; no distillation. */
  noTrain?: boolean;
  /** Held-out share for the agreement metric: fraction (0, 1), a count >= 1, or 0 for none. Default 0.1 (at most 256 images). */
  holdout?: number;
  /** Evaluate agreement (and choose the best student) every N steps (default: 20 times per run). 0: only at the end. */
  evalEvery?: number;
  /** Augmentation (lib/data). Default { flip: true }. */
  augment?: AugmentOptions | false;
  /** Checkpoint file. Default `<out>.ckpt` when out is given. */
  checkpoint?: string;
  /** Write a checkpoint every N steps (default 200; 0: only when stopped). */
  checkpointEvery?: number;
  /** Continue from the checkpoint when it exists (the options must match the checkpointed run). */
  resume?: boolean;
  /** JSON-lines log of every metric. */
  log?: string;
  /** Stops the run after the current step: a checkpoint is written and the result has completed = false. */
  signal?: AbortSignal;
  onProgress?: (p: QuantizeProgress) => void;
  /** Options of the data-free generator (data: 'generated:N'). */
  generate?: Partial<GenerateOptions>;
  /** Cache folder for generated data. */
  cacheDir?: string;
  /** Extra provenance notes recorded in the .qfm. */
  notes?: JsonValue;
}

export type QuantizePhase = 'load' | 'generate' | 'prepare' | 'calibrate' | 'train' | 'evaluate' | 'checkpoint' | 'save' | 'done';

export interface QuantizeProgress {
  phase: QuantizePhase;
  /** Completed optimiser steps (calibration steps in PTQ). */
  step: number;
  totalSteps: number;
  epoch?: number;
  /** Distillation loss of the last step. */
  loss?: number;
  /** Mean teacher-student cosine of the last training batch. */
  cosine?: number;
  lr?: number;
  imagesPerSec?: number;
  etaSeconds?: number;
  /** Held-out agreement (mean cosine) of the last evaluation. */
  agreement?: number;
  /** Free text (what is happening, warnings). */
  message?: string;
  /** Progress of data generation. */
  generate?: GenerateProgress;
}

export interface Agreement {
  /** Mean cosine between teacher and student embeddings. */
  meanCosine: number;
  /** Lowest per-image cosine. */
  minCosine: number;
  /** The distillation loss on these images. */
  loss: number;
  images: number;
  /** Which images: the held-out split, or the training images when there is none. */
  split: 'holdout' | 'train';
}

export interface QuantizeResult {
  /** The QAT student (eval mode), with frozen activation ranges. */
  student: Module;
  teacher: Teacher;
  bits: BitWidths;
  /** False when stopped by the signal (a checkpoint was written; resume to finish). */
  completed: boolean;
  /** Steps done (calibration steps in PTQ). */
  steps: number;
  totalSteps: number;
  noTrain: boolean;
  /** Teacher-student agreement at the end (or at the stop). */
  agreement: Agreement | null;
  /** Last training loss (NaN in PTQ). */
  finalLoss: number;
  /** The saved student. */
  out?: { path: string; bytes: number };
  checkpoint?: string;
  /** Wall time of this call, and of the whole run across resumes. */
  seconds: number;
  totalSeconds: number;
  trainImages: number;
  holdoutImages: number;
  data: string;
  resumedFrom?: number;
  /** Per-layer rules that matched no layer. */
  unusedLayerRules: string[];
  /** The recipe the options started from. */
  recipe: 'kd' | 'quantface';
  /** Held-out agreement of the student when training started (the PTQ state with calibration 'first'). */
  startAgreement: Agreement | null;
  /** The step whose student was kept (keepBest), when it is not the last. */
  bestStep?: number;
  /** Divergences rolled back (the guard), with the step and the reason of each. */
  rollbacks: Array<{ step: number; toStep: number; reason: string; lrFactor: number }>;
}

const DEFAULT_STEPS = 1500;
const MAX_HOLDOUT = 256;

function intOpt(name: string, v: number | undefined, lo: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo) throw new QuantFaceError('E_ARG', `${name} must be an integer >= ${lo} (got ${String(v)})`);
  return v;
}

function numOpt(name: string, v: number | undefined, lo: number, dflt: number, loOpen = false): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || (loOpen && v === lo)) throw new QuantFaceError('E_ARG', `${name} must be a number ${loOpen ? '>' : '>='} ${lo} (got ${String(v)})`);
  return v;
}

/** Lets timers, I/O and signal handlers run (a loop over already-resolved promises never does). */
function yieldToEvents(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** Mixes integers into a 32-bit seed (for per-step reseeding). */
function mix(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
  }
  return h >>> 0;
}

type OptState = Map<Parameter, Record<string, FTensor | number>>;

/** Optimiser state as named tensors (`optim.<param>.<key>`) plus JSON numbers (checkpoints). */
function exportOptState(state: OptState, names: Map<Parameter, string>): { tensors: Map<string, FTensor>; numbers: { [k: string]: number } } {
  const tensors = new Map<string, FTensor>();
  const numbers: { [k: string]: number } = {};
  for (const [p, st] of state) {
    const n = names.get(p);
    if (n === undefined) continue;
    for (const [k, v] of Object.entries(st)) {
      if (v instanceof Tensor) tensors.set(`optim.${n}.${k}`, v);
      else numbers[`${n}.${k}`] = v;
    }
  }
  return { tensors, numbers };
}

function importOptState(state: OptState, byName: Map<string, Parameter>, tensors: Map<string, FTensor>, numbers: { [k: string]: number }): void {
  state.clear();
  const slot = (key: string): [Record<string, FTensor | number>, string] => {
    const dot = key.lastIndexOf('.');
    const p = byName.get(key.slice(0, dot));
    if (!p) throw new QuantFaceError('E_FORMAT', `checkpoint: optimiser state for unknown parameter ${key.slice(0, dot)}`);
    let st = state.get(p);
    if (!st) {
      st = {};
      state.set(p, st);
    }
    return [st, key.slice(dot + 1)];
  };
  for (const [key, t] of tensors) {
    if (!key.startsWith('optim.')) continue;
    const [st, k] = slot(key.slice(6));
    st[k] = t.clone();
  }
  for (const [key, v] of Object.entries(numbers)) {
    const [st, k] = slot(key);
    st[k] = v;
  }
}

interface CheckpointableOptimizer {
  lr: number;
  stepCount: number;
  parameters(): Parameter[];
  zeroGrad(): void;
  step(): void;
  readonly optState: OptState;
}

/** SGD / AdamW whose per-parameter state a checkpoint can hold. */
class CheckpointSGD extends SGD implements CheckpointableOptimizer {
  get optState(): OptState {
    return this.state;
  }
}
class CheckpointAdamW extends AdamW implements CheckpointableOptimizer {
  get optState(): OptState {
    return this.state;
  }
}

function isFlipOnly(a: ResolvedAugment): boolean {
  return a.scale === 0 && a.shift === 0 && a.brightness === 0 && a.contrast === 0 && a.saturation === 0 && a.mixupProb === 0;
}

function cosines(s: FTensor, t: FTensor): Float64Array {
  const [n, d] = s.shape as [number, number];
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let st = 0;
    let ss = 0;
    let tt = 0;
    for (let j = 0; j < d; j++) {
      const a = s.data[i * d + j]!;
      const b = t.data[i * d + j]!;
      st += a * b;
      ss += a * a;
      tt += b * b;
    }
    out[i] = st / Math.max(Math.sqrt(ss * tt), 1e-30);
  }
  return out;
}

function forwardCopy(model: Module, x: FTensor): FTensor {
  return noGrad(() => {
    const y = model.forward(x);
    const c = y.clone() as FTensor;
    if (y !== x) bufferPool.release(y);
    return c;
  });
}

/** Checks that `out` can be written (its folder exists, it is not a folder) before any long work starts. */
function checkOutPath(out: string, what: string): string {
  const p = resolve(out);
  const dir = dirname(p);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new QuantFaceError('E_IO', `${what} ${p}: the folder ${dir} does not exist; create it first`, { path: p });
  if (existsSync(p) && statSync(p).isDirectory()) throw new QuantFaceError('E_IO', `${what} ${p} is a folder; give a file name (e.g. ${basename(p)}/student.qfm)`, { path: p });
  return p;
}

// ====================================================================== quantize
/** Quantizes a teacher into a low-bit student by distillation (or PTQ with noTrain). */
export async function quantize(options: QuantizeOptions): Promise<QuantizeResult> {
  const t0 = performance.now();
  if (!options || typeof options !== 'object') throw new QuantFaceError('E_ARG', 'quantize: options are required ({ data, teacher?, bits?, ... })');
  const o = applyRecipe(options);
  const recipe = o.recipe!;
  const progress = (p: QuantizeProgress): void => o.onProgress?.(p);
  // ---------------------------------------------------------------- validate cheap options first
  const bits = typeof o.bits === 'object' && o.bits !== null ? parseBits(bitsName(o.bits)) : parseBits(o.bits ?? 'w8a8');
  let rules = o.layerBits === undefined ? [] : typeof o.layerBits === 'string' ? parseLayerRules(o.layerBits) : o.layerBits;
  const seed = intOpt('seed', o.seed, 0, 0);
  const noTrain = o.noTrain === true;
  const momentum = numOpt('momentum', o.momentum, 0, 0.9);
  const weightDecayOpt = o.weightDecay === undefined ? undefined : numOpt('weightDecay', o.weightDecay, 0, 0);
  const calibration = o.calibration ?? 'first';
  if (calibration !== 'first' && calibration !== 'during') throw new QuantFaceError('E_ARG', `calibration must be 'first' or 'during' (got ${String(calibration)})`);
  const keepBest = o.keepBest ?? true;
  if (typeof keepBest !== 'boolean') throw new QuantFaceError('E_ARG', `keepBest must be true or false (got ${String(keepBest)})`);
  if (o.guard !== undefined && o.guard !== false && (typeof o.guard !== 'object' || o.guard === null)) throw new QuantFaceError('E_ARG', `guard must be false or { maxRollbacks, lrFactor } (got ${String(o.guard)})`);
  const guard = o.guard === false ? null : { maxRollbacks: intOpt('guard.maxRollbacks', o.guard?.maxRollbacks, 0, 3), lrFactor: numOpt('guard.lrFactor', o.guard?.lrFactor, 0, 0.3, true) };
  if (guard && guard.lrFactor >= 1) throw new QuantFaceError('E_ARG', `guard.lrFactor must be below 1 (got ${guard.lrFactor})`);
  const clipNorm = numOpt('clipNorm', o.clipNorm, 0, 5);
  const lrGamma = numOpt('lrGamma', o.lrGamma, 0, 0.1);
  const actRange = o.actRange ?? 'mse';
  if (actRange !== 'minmax' && actRange !== 'mse' && actRange !== 'learned') throw new QuantFaceError('E_ARG', `actRange must be 'minmax', 'mse' or 'learned' (got ${String(actRange)})`);
  const rangeLrScale = numOpt('rangeLrScale', o.rangeLrScale, 0, 10);
  const weightRange: WeightRangeMode = o.weightRange ?? 'minmax';
  if (weightRange !== 'minmax' && weightRange !== 'mse' && weightRange !== 'learned') throw new QuantFaceError('E_ARG', `weightRange must be 'minmax', 'mse' or 'learned' (got ${String(weightRange)})`);
  const featureLoss = numOpt('featureLoss', o.featureLoss, 0, 0);
  const qdrop = numOpt('qdrop', o.qdrop, 0, 0);
  const relationWeight = numOpt('relationLoss', o.relationLoss, 0, 0);
  if (o.residualBits !== undefined && bits.residualBits !== undefined && o.residualBits !== bits.residualBits)
    throw new QuantFaceError('E_ARG', `bits ${bitsName(bits)} names a residual-stream width of ${bits.residualBits}, residualBits says ${o.residualBits}: give one`);
  const residualBits = o.residualBits ?? bits.residualBits;
  if (residualBits !== undefined && (typeof residualBits !== 'number' || !Number.isInteger(residualBits) || residualBits < 2 || residualBits > 8))
    throw new QuantFaceError('E_ARG', `residualBits must be an integer from 2 to 8 (got ${String(residualBits)})`);
  if (qdrop >= 1) throw new QuantFaceError('E_ARG', `qdrop must be a probability in [0, 1) (got ${qdrop})`);
  if (qdrop > 0 && actRange !== 'learned') throw new QuantFaceError('E_ARG', `qdrop works on learned activation ranges: pass actRange 'learned' with qdrop ${qdrop}`);
  // Default: on for PTQ (measured on mobileface: LFW teacher-student cosine up at W6A6 and W4A4 on both
  // face sets), off for distillation (no measured gain; the paper's method).
  const eqSpec = o.equalize ?? o.noTrain === true;
  if (typeof eqSpec !== 'boolean' && (typeof eqSpec !== 'object' || eqSpec === null))
    throw new QuantFaceError('E_ARG', `equalize must be true, false or { alpha, maxScale, statistic } (got ${String(eqSpec)})`);
  const equalize: EqualizeOptions | null = eqSpec === false ? null : { alpha: 0.5, ...(eqSpec === true ? {} : eqSpec) };
  if (equalize && (typeof equalize.alpha !== 'number' || !(equalize.alpha >= 0 && equalize.alpha <= 1)))
    throw new QuantFaceError('E_ARG', `equalize alpha must be a number in [0, 1] (got ${String(equalize.alpha)})`);
  const lrSchedule = o.lrSchedule ?? 'step';
  if (lrSchedule !== 'step' && lrSchedule !== 'cosine') throw new QuantFaceError('E_ARG', `lrSchedule must be 'step' or 'cosine' (got ${String(lrSchedule)})`);
  const optimizer = o.optimizer ?? 'sgd';
  if (optimizer !== 'sgd' && optimizer !== 'adamw') throw new QuantFaceError('E_ARG', `optimizer must be 'sgd' or 'adamw' (got ${String(optimizer)})`);
  const ste: SteMode = o.ste ?? 'unmasked';
  if (ste !== 'unmasked' && ste !== 'clipped') throw new QuantFaceError('E_ARG', `ste must be 'unmasked' or 'clipped' (got ${String(ste)})`);
  if (o.epochs !== undefined) intOpt('epochs', o.epochs, 1, 1);
  if (o.steps !== undefined) intOpt('steps', o.steps, 1, 1);
  const checkpointEvery = intOpt('checkpointEvery', o.checkpointEvery, 0, 200);
  const workers = intOpt('workers', o.workers, 0, 1);
  if (o.threads !== undefined) intOpt('threads', o.threads, 1, 1);
  const augment = resolveAugment(o.augment ?? { flip: true });
  const holdoutSpec = o.holdout ?? 0.1;
  if (typeof holdoutSpec !== 'number' || !Number.isFinite(holdoutSpec) || holdoutSpec < 0 || (holdoutSpec >= 1 && !Number.isInteger(holdoutSpec)))
    throw new QuantFaceError('E_ARG', `holdout must be 0, a fraction in (0, 1) or a whole count (got ${String(holdoutSpec)})`);
  const outPath = o.out !== undefined ? checkOutPath(o.out, 'output') : undefined;
  if (outPath && !/\.qfm$/i.test(outPath)) throw new QuantFaceError('E_ARG', `output ${outPath}: the student is saved as a quantface model file; give a name ending in .qfm`);
  const ckptPath = o.checkpoint !== undefined ? checkOutPath(o.checkpoint, 'checkpoint') : outPath ? `${outPath}.ckpt` : undefined;
  if (o.resume && !ckptPath) throw new QuantFaceError('E_ARG', 'resume needs a checkpoint: pass checkpoint (or out, whose checkpoint is <out>.ckpt)');
  if (o.data === undefined || o.data === null) throw new QuantFaceError('E_ARG', 'quantize: data is required (a folder of face images or generated:N)');
  const log = new JsonLog(o.log);
  if (o.threads !== undefined) binding.setThreads(o.threads);
  const threads = binding.getThreads();

  // ---------------------------------------------------------------- teacher
  progress({ phase: 'load', step: 0, totalSteps: 0, message: 'loading the teacher' });
  // A known teacher's name (faceplugin, mobileface) unless a file of that name exists; default faceplugin.
  const teacherArg = o.teacher ?? DEFAULT_TEACHER_NAME;
  const teacher = await loadTeacher(
    typeof teacherArg === 'string' && isKnownTeacher(teacherArg) && !existsSync(teacherArg)
      ? await resolveKnownTeacher(teacherArg, { ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}), onMessage: (m) => progress({ phase: 'load', step: 0, totalSteps: 0, message: m }) })
      : teacherArg,
    o.teacherInput ? { input: o.teacherInput } : {},
  );
  const info: ModelInfo = teacher.info;
  const size = info.inputShape[0];
  // Weight decay only where BatchNorm renormalises the layers' outputs (see QuantizeOptions.weightDecay).
  const teacherHasBn = [...teacher.model.modules()].some((m) => m instanceof BatchNorm);
  const weightDecay = weightDecayOpt ?? (teacherHasBn ? 5e-4 : 0);

  // ---------------------------------------------------------------- data
  const opened = await openData(o.data, {
    size,
    teacher,
    seed,
    ...(o.align !== undefined ? { align: o.align } : {}),
    ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
    ...(o.generate ? { generate: o.generate } : {}),
    onGenerate: (g) => progress({ phase: 'generate', step: 0, totalSteps: 0, generate: g, message: g.phase }),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  const all = opened.folder;
  let train: ImageFolder = all;
  let holdout: ImageFolder | null = null;
  if (holdoutSpec > 0 && all.length >= 2) {
    const k = holdoutSpec < 1 ? Math.min(MAX_HOLDOUT, Math.max(1, Math.round(holdoutSpec * all.length))) : holdoutSpec;
    if (k >= all.length) throw new QuantFaceError('E_ARG', `holdout ${holdoutSpec} leaves no training image out of ${all.length}`);
    const sp = all.split({ holdout: k, seed });
    train = sp.train;
    holdout = sp.holdout;
  }
  const executor: DataExecutor = workers === 0 ? new InlineExecutor() : new WorkerPool(workers);
  const loaders: DataLoader[] = [];
  let unwrapTaps = (): void => undefined;
  try {
    progress({ phase: 'prepare', step: 0, totalSteps: 0, message: `reading ${opened.description}` });
    let batchSize = intOpt('batchSize', o.batchSize, 1, 64);
    // The training images as they are (sorted, no augmentation): counts the usable ones, and feeds the
    // range refinement and the teacher cache.
    const plain = train.loader({ batchSize: 32, seed, executor, augment: false, shuffle: false });
    loaders.push(plain);
    const trainImages = (await plain.ready()).images;
    if (trainImages < batchSize) batchSize = trainImages;
    // The loader takes AugmentOptions: hand mixup over in that form (a ResolvedAugment's mixupProb would be
    // read as "no mixup").
    const loaderAugment: AugmentOptions = {
      flip: augment.flip, scale: augment.scale, shift: augment.shift, brightness: augment.brightness, contrast: augment.contrast, saturation: augment.saturation,
      mixup: augment.mixupProb > 0 ? { prob: augment.mixupProb, alpha: augment.mixupAlpha } : false,
    };
    const loader = train.loader({ batchSize, seed, executor, augment: loaderAugment, shuffle: true, dropLast: true });
    loaders.push(loader);
    await loader.ready();
    const bpe = loader.batchesPerEpoch;
    const totalSteps = noTrain
      ? intOpt('calibSteps', o.calibSteps, 1, 300)
      : o.steps !== undefined
        ? o.steps
        : o.epochs !== undefined
          ? o.epochs * bpe
          : DEFAULT_STEPS;
    // Calibrating first, the calibration batches come before the training steps; during training, they are its first steps.
    const calibSteps = noTrain ? totalSteps : calibration === 'first' ? intOpt('calibSteps', o.calibSteps, 1, 300) : Math.min(intOpt('calibSteps', o.calibSteps, 1, 300), totalSteps);
    const lr = numOpt('lr', o.lr, 0, 0.1 * (batchSize / 512), true);
    const milestones = (o.lrMilestones ?? [0.75, 0.9]).map((m) => {
      if (typeof m !== 'number' || !Number.isFinite(m) || m <= 0) throw new QuantFaceError('E_ARG', `lrMilestones must be positive numbers (fractions < 1 or step numbers), got ${String(m)}`);
      return m < 1 ? Math.round(m * totalSteps) : Math.round(m);
    });
    const schedule: Schedule = lrSchedule === 'cosine' ? cosineLr(lr, totalSteps) : stepLr(lr, milestones, lrGamma);
    const evalEvery = intOpt('evalEvery', o.evalEvery, 0, Math.max(1, Math.round(totalSteps / 20)));

    // ---------------------------------------------------------------- student
    if (residualBits !== undefined) rules = [...rules, ...residualRules(teacher.model, residualBits)];
    const ov = layerOverrides(rules);
    /** The first `count` training images as they are (sorted, no augmentation), preprocessed: calibration inputs. */
    const plainInputs = async (count: number): Promise<FTensor[]> => {
      const inputs: FTensor[] = [];
      let seen = 0;
      for await (const b of plain.epoch(0)) {
        inputs.push(preprocess(info, b.data, b.n));
        seen += b.n;
        if (seen >= count) break;
      }
      return inputs;
    };
    let studentFloat: Module = teacher.model;
    let initSha: string | null = null;
    if (o.init !== undefined) {
      const src = o.init;
      let m: Module;
      if (typeof src === 'string') {
        if (!existsSync(src)) throw new QuantFaceError('E_IO', `init ${src} does not exist; pass a .qfm of the teacher's architecture`, { path: src });
        m = (await loadQfm(src)).model;
      } else if (src instanceof Module) m = src;
      else throw new QuantFaceError('E_ARG', `init must be a .qfm path or an engine Module (got ${typeof src})`);
      studentFloat = teacher.model.clone();
      try {
        studentFloat.loadStateDict(stripQat(m).stateDict());
      } catch (e) {
        throw new QuantFaceError('E_ARG', `init: its weights do not fit the teacher's architecture (${(e as Error).message})`);
      }
      initSha = weightsSha256(studentFloat);
    }
    if (equalize && !(teacher.model instanceof Graph)) log.write({ event: 'equalize', applied: false, reason: 'the teacher is not a graph model' });
    else if (equalize && (equalize.alpha ?? 0.5) > 0) {
      progress({ phase: 'prepare', step: 0, totalSteps, message: 'equalizing activation ranges' });
      if (studentFloat === teacher.model) studentFloat = teacher.model.clone();
      const rep = equalizeActivations(studentFloat, await plainInputs(256), equalize);
      log.write({ event: 'equalize', applied: rep.applied, ...(rep.reason ? { reason: rep.reason } : {}), fixedGroups: rep.fixedGroups, groups: rep.groups.map((g) => ({ measured: g.measured, channels: g.channels, scaled: g.scaled, maxScale: g.maxScale })) });
    }
    const student = toQat(studentFloat, { weightBits: bits.weightBits, actBits: bits.actBits, ste, calibrationSteps: calibSteps, layer: ov.layer });
    const unusedLayerRules = ov.unused();
    // Clipped weight ranges replace the min/max weight quantizers before the optimiser collects parameters.
    const clippedWeights = useClippedWeights(student, noTrain && weightRange === 'learned' ? 'mse' : weightRange);
    const ratioParams = new Set([...clippedWeights.values()].flatMap((q) => q.ratioParameters()));
    // Feature taps wrap the student's and the teacher's PReLU / Add nodes for the run (removed before saving).
    const taps: FeatureTaps | null = featureLoss > 0 && !noTrain ? tapFeatures(student, teacher.model) : null;
    if (taps) {
      let done = false;
      unwrapTaps = (): void => {
        if (!done) taps.unwrap();
        done = true;
      };
    }
    if (!quantizers(student).length) throw new QuantFaceError('E_UNSUPPORTED_OP', `teacher ${info.name} has no layer quantize can quantize (no Conv2d, Linear, PReLU, ReLU or Add)`);
    const named = [...student.namedParameters()];
    const trainable = named.filter(([, p]) => p.requiresGrad);
    const paramByName = new Map(trainable.map(([n, p]) => [n, p]));
    const nameOfParam = new Map(trainable.map(([n, p]) => [p, n]));
    const params = trainable.map(([, p]) => p).filter((p) => !ratioParams.has(p));
    // Learned ranges: one LearnedActQuant per activation quantizer, swapped in when calibration ends.
    const owners = outQuantOwners(student);
    const learned = new Map<string, LearnedActQuant>();
    if (actRange === 'learned' && !noTrain)
      for (const [qname, owner] of owners) {
        const q = owner.getChild('outQuant') as ActFakeQuant;
        const lm = new LearnedActQuant(q.bits, -1, 1);
        lm.dropProb = qdrop;
        learned.set(qname, lm);
        nameOfParam.set(lm.a, `lrange.${qname}.a`);
        nameOfParam.set(lm.b, `lrange.${qname}.b`);
        paramByName.set(`lrange.${qname}.a`, lm.a);
        paramByName.set(`lrange.${qname}.b`, lm.b);
      }
    const rangeParams = [...learned.values()].flatMap((m) => [m.a, m.b]).concat([...ratioParams]);
    const groups = [
      { params, lrScale: 1 },
      ...(rangeParams.length ? [{ params: rangeParams, lrScale: rangeLrScale, options: { weightDecay: 0 } }] : []),
    ];
    const opt: CheckpointableOptimizer =
      optimizer === 'sgd'
        ? new CheckpointSGD(groups as never, lr, { momentum, nesterov: momentum > 0, weightDecay })
        : new CheckpointAdamW(groups as never, lr, { weightDecay });
    let swapped = false;
    /** Puts the learned ranges in place of the frozen quantizers (fromState: values come from a checkpoint). */
    const swapIn = (fromState: boolean): void => {
      if (!learned.size || swapped) return;
      for (const [qname, owner] of owners) {
        const lm = learned.get(qname)!;
        if (!fromState) {
          const q = owner.getChild('outQuant') as ActFakeQuant;
          lm.reset(Math.min(q.min, 0), Math.max(q.max, q.min + 1e-6, 0));
        }
        lm.train(student.training);
        owner.setChild('outQuant', lm);
      }
      swapped = true;
    };
    const swapOut = (): void => {
      if (!swapped) return;
      for (const [qname, owner] of owners) owner.setChild('outQuant', learned.get(qname)!.toActFakeQuant());
      swapped = false;
    };
    const dropouts = [...student.modules()].filter((m): m is Dropout => m instanceof Dropout);

    // Fingerprint of everything that determines the result (a checkpoint only resumes the same run).
    const fingerprint: { [k: string]: JsonValue } = {
      teacher: teacher.sha256,
      bits: bitsName(bits),
      layerBits: rules.map((r) => `${r.pattern}=${r.bits === null ? 'float' : `${r.bits.weightBits !== undefined ? `w${r.bits.weightBits}` : ''}${r.bits.actBits !== undefined ? `a${r.bits.actBits}` : ''}`}`).join(','),
      data: createHash('sha256').update(all.root).update('\0').update(train.files.join('\n')).digest('hex'),
      align: opened.align,
      batchSize,
      seed,
      optimizer,
      lr,
      momentum,
      weightDecay,
      clipNorm,
      milestones,
      lrGamma,
      totalSteps,
      calibSteps,
      ste,
      actRange,
      ...(o.bnRecalibrate ? { bnRecalibrate: true } : {}),
      ...(featureLoss > 0 ? { featureLoss } : {}),
      ...(qdrop > 0 ? { qdrop } : {}),
      ...(relationWeight > 0 ? { relationLoss: relationWeight } : {}),
      ...(initSha ? { init: initSha } : {}),
      ...(equalize ? { equalize: { ...equalize } as { [k: string]: JsonValue } } : {}),
      ...(weightRange !== 'minmax' ? { weightRange } : {}),
      ...(lrSchedule !== 'step' ? { lrSchedule } : {}),
      ...(rangeLrScale !== 10 ? { rangeLrScale } : {}),
      noTrain,
      augment: { ...augment },
      ...(noTrain ? {} : { calibration, keepBest, guard: guard ? { ...guard } : false }),
    };

    // ---------------------------------------------------------------- resume
    let startStep = 0;
    let priorSeconds = 0;
    let resumedFrom: number | undefined;
    let bestStep: number | undefined;
    let resumeState: {
      cosEma: number;
      cosBest: number;
      lrFactor: number;
      rollbacks: QuantizeResult['rollbacks'];
      startAgreement: Agreement | null;
      best: { agreement: Agreement; step: number; state: Map<string, FTensor> } | null;
    } | null = null;
    if (o.resume && ckptPath && existsSync(ckptPath)) {
      const ck = await loadCheckpoint(ckptPath);
      const fp = ck.meta.fingerprint as { [k: string]: JsonValue } | undefined;
      const diff = Object.keys(fingerprint).filter((k) => JSON.stringify(fp?.[k]) !== JSON.stringify(fingerprint[k]));
      if (diff.length)
        throw new QuantFaceError(
          'E_ARG',
          `checkpoint ${ckptPath} belongs to another run (different ${diff.join(', ')}); resume with the same options, or delete it (or drop --resume) to start over`,
          { path: ckptPath },
        );
      const sd = new Map<string, FTensor>();
      const bestSd = new Map<string, FTensor>();
      for (const [k, t] of ck.tensors) {
        if (k.startsWith('model.')) sd.set(k.slice(6), t);
        else if (k.startsWith('best.')) bestSd.set(k.slice(5), t);
      }
      const g = (ck.meta.guard ?? {}) as { cosEma?: number | null; cosBest?: number | null; lrFactor?: number; rollbacks?: QuantizeResult['rollbacks']; startAgreement?: Agreement | null; best?: { agreement: Agreement; step: number } | null };
      resumeState = {
        cosEma: typeof g.cosEma === 'number' ? g.cosEma : NaN,
        cosBest: typeof g.cosBest === 'number' ? g.cosBest : -Infinity,
        lrFactor: g.lrFactor ?? 1,
        rollbacks: g.rollbacks ?? [],
        startAgreement: g.startAgreement ?? null,
        best: g.best && bestSd.size ? { ...g.best, state: bestSd } : null,
      };
      if (ck.meta.learnedRanges === true) swapIn(true);
      student.loadStateDict(sd, true);
      importOptState(opt.optState, paramByName, ck.tensors, (ck.meta.optimizerNumbers ?? {}) as { [k: string]: number });
      opt.stepCount = Number(ck.meta.optimizerSteps ?? 0);
      startStep = Number(ck.meta.step);
      priorSeconds = Number(ck.meta.seconds ?? 0);
      resumedFrom = startStep;
      if (ck.meta.threads !== threads)
        progress({ phase: 'prepare', step: startStep, totalSteps, message: `warning: the checkpoint was written with ${String(ck.meta.threads)} threads, this run uses ${threads}; the result may differ in the last bits from an uninterrupted run` });
      log.write({ event: 'resume', step: startStep, checkpoint: ckptPath });
    } else {
      log.write({
        event: 'start',
        teacher: teacher.source,
        teacherName: info.name,
        data: opened.description,
        trainImages,
        holdoutImages: holdout?.length ?? 0,
        batchesPerEpoch: bpe,
        threads,
        ...fingerprint,
      });
    }

    // ---------------------------------------------------------------- held-out set (teacher embeddings once)
    const evalSet = holdout ?? train;
    const evalLoader = evalSet.loader({ batchSize: Math.min(64, evalSet.length), seed, executor, augment: false, shuffle: false });
    loaders.push(evalLoader);
    const evalInputs: FTensor[] = [];
    const evalTeacher: FTensor[] = [];
    let evalCount = 0;
    for await (const b of evalLoader.epoch(0)) {
      if (evalCount >= MAX_HOLDOUT) break;
      const x = preprocess(info, b.data, b.n);
      evalInputs.push(x);
      evalTeacher.push(forwardCopy(teacher.model, x));
      evalCount += b.n;
    }
    const lossFn = new QuantFaceLoss();
    const relationFn = relationWeight > 0 ? new RelationLoss() : null;
    const evaluate = (): Agreement => {
      const wasTraining = student.training;
      student.eval();
      try {
        const cs: number[] = [];
        let lossSum = 0;
        let n = 0;
        const evLoss = new QuantFaceLoss();
        for (let i = 0; i < evalInputs.length; i++) {
          const s = forwardCopy(student, evalInputs[i]!);
          const c = cosines(s, evalTeacher[i]!);
          cs.push(...c);
          lossSum += evLoss.forward(s, evalTeacher[i]!) * s.shape[0]!;
          n += s.shape[0]!;
        }
        return {
          meanCosine: cs.reduce((a, b) => a + b, 0) / cs.length,
          minCosine: Math.min(...cs),
          loss: lossSum / n,
          images: n,
          split: holdout ? 'holdout' : 'train',
        };
      } finally {
        if (wasTraining) student.train(true);
      }
    };

    // ---------------------------------------------------------------- range refinement at the end of calibration
    const refine = async (step: number): Promise<void> => {
      if (actRange === 'minmax') return;
      progress({ phase: 'calibrate', step, totalSteps, message: 'refining the activation ranges (MSE)' });
      const changes = refineActRanges(student, await plainInputs(256), seed);
      log.write({ event: 'ranges', step, method: 'mse', ranges: changes.map((c) => ({ name: c.name, bits: c.bits, before: c.before, after: c.after })) });
    };

    // ---------------------------------------------------------------- teacher cache (flip-only augmentation)
    // Embeddings of every training image and its mirror, computed once in a fixed order: deterministic, and
    // a third of the step's work saved.
    let teacherCache: Float32Array | null = null;
    const D = info.outputDim;
    if (!noTrain && !taps && isFlipOnly(augment) && trainImages <= 50000) {
      progress({ phase: 'prepare', step: startStep, totalSteps, message: 'teacher embeddings of the training images' });
      teacherCache = new Float32Array(train.length * 2 * D);
      const per = size * size * 3;
      for await (const b of plain.epoch(0)) {
        await yieldToEvents();
        if (o.signal?.aborted) break;
        const both = new Float32Array(2 * b.n * per);
        both.set(b.data);
        for (let i = 0; i < b.n; i++) flipHorizontal(b.data, size, both, i * per, (b.n + i) * per);
        const e = forwardCopy(teacher.model, preprocess(info, both, 2 * b.n));
        for (let i = 0; i < b.n; i++) {
          const id = b.ids[i]!;
          teacherCache.set(e.data.subarray(i * D, (i + 1) * D) as Float32Array, (id * 2) * D);
          teacherCache.set(e.data.subarray((b.n + i) * D, (b.n + i + 1) * D) as Float32Array, (id * 2 + 1) * D);
        }
      }
    }

    // Best student (keepBest) and the guard's state.
    const tol = (best: number): number => Math.max(0.02, 0.5 * (1 - best));
    let best = null as { agreement: Agreement; step: number; state: Map<string, FTensor> } | null;
    let lrFactor = 1;
    let startAgreement: Agreement | null = null;
    const rollbacks: QuantizeResult['rollbacks'] = [];
    // The training cosine's moving average and its best (the guard's collapse check).
    let cosEma = NaN;
    let cosBest = -Infinity;
    if (resumeState) {
      cosEma = resumeState.cosEma;
      cosBest = resumeState.cosBest;
      lrFactor = resumeState.lrFactor;
      rollbacks.push(...resumeState.rollbacks);
      startAgreement = resumeState.startAgreement;
      if (resumeState.best) best = resumeState.best;
    }

    // ---------------------------------------------------------------- checkpoint writer
    let trainSecondsThisRun = 0;
    const writeCheckpoint = async (step: number, lastLoss: number): Promise<void> => {
      if (!ckptPath) return;
      const tensors = new Map<string, FTensor>();
      for (const [k, t] of student.stateDict()) tensors.set(`model.${k}`, t);
      const os = exportOptState(opt.optState, nameOfParam);
      for (const [k, t] of os.tensors) tensors.set(k, t);
      const meta = {
        fingerprint,
        step,
        optimizerSteps: opt.stepCount,
        learnedRanges: swapped,
        optimizerNumbers: os.numbers,
        threads,
        seconds: priorSeconds + trainSecondsThisRun,
        lastLoss: Number.isFinite(lastLoss) ? lastLoss : null,
        teacherSource: teacher.source,
        data: opened.description,
        guard: {
          cosEma: Number.isFinite(cosEma) ? cosEma : null,
          cosBest: Number.isFinite(cosBest) ? cosBest : null,
          lrFactor,
          rollbacks,
          startAgreement,
          best: best ? { agreement: best.agreement, step: best.step } : null,
        } as unknown as JsonValue,
      };
      if (best) for (const [k, t] of best.state) tensors.set(`best.${k}`, t);
      progress({ phase: 'checkpoint', step, totalSteps, message: `checkpoint ${ckptPath}` });
      const bytes = await saveCheckpoint(ckptPath, { meta, tensors });
      log.write({ event: 'checkpoint', step, path: ckptPath, bytes });
    };

    // ---------------------------------------------------------------- loop
    let step = startStep;
    let lastLoss = NaN;
    let lastAgreement: Agreement | null = null;
    let stopped = false;
    let inCalibration = false;
    const tLoop = performance.now();
    let emaRate = 0;
    /** PTQ calibration in inference mode: observers on, everything else as at inference; stops early on the signal. */
    const calibrateInference = async (count: number, onStep: (k: number, epoch: number) => void): Promise<number> => {
      student.eval();
      for (const m of student.modules()) if (m instanceof ActFakeQuant) m.training = true;
      const cs = loader.stream({ step: 0 });
      let k = 0;
      inCalibration = true;
      try {
        while (k < count) {
          await yieldToEvents();
          if (o.signal?.aborted) {
            stopped = true;
            break;
          }
          const r = await cs.next();
          if (r.done) break;
          const b = r.value;
          bufferPool.release(noGrad(() => student.forward(preprocess(info, b.data, b.n))));
          k++;
          onStep(k, b.epoch);
        }
      } finally {
        await cs.return(undefined);
      }
      student.eval();
      if (!stopped) {
        freezeActRanges(student);
        inCalibration = false;
      }
      return k;
    };
    const snapshot = (agreement: Agreement, at: number): void => {
      const state = new Map<string, FTensor>();
      for (const [k, t] of student.stateDict()) state.set(k, best?.state.get(k)?.copyFrom(t) ?? (t.clone() as FTensor));
      best = { agreement, step: at, state };
    };
    /** Measures the held-out agreement; keeps the student when it is the best so far (ranges frozen only). */
    const evaluateAndKeep = (at: number): Agreement => {
      const a = evaluate();
      log.write({ event: 'eval', step: at, ...a });
      if ((keepBest || guard) && (!best || a.meanCosine > best.agreement.meanCosine)) snapshot(a, at);
      return a;
    };
    const rollback = (at: number, reason: string): boolean => {
      const b = best!;
      student.loadStateDict(b.state);
      opt.optState.clear();
      lrFactor *= guard!.lrFactor;
      rollbacks.push({ step: at, toStep: b.step, reason, lrFactor });
      const last = rollbacks.length > guard!.maxRollbacks;
      log.write({ event: 'rollback', step: at, toStep: b.step, reason, lrFactor, agreement: b.agreement.meanCosine, stopTraining: last });
      progress({
        phase: 'train', step: at, totalSteps,
        message: `warning: training diverged at step ${at} (${reason}); rolled back to the student of step ${b.step} (held-out cos ${b.agreement.meanCosine.toFixed(4)})` +
          (last ? `; ${rollbacks.length} divergences: training stops here with that student` : `, learning rate x${lrFactor.toPrecision(2)}`),
      });
      lastAgreement = b.agreement;
      return last;
    };
    let stream: AsyncGenerator<Batch, void, undefined> | null = null;
    try {
      if (noTrain) {
        step = await calibrateInference(totalSteps, (k, epoch) => {
          progress({ phase: 'calibrate', step: k, totalSteps, epoch });
          log.write({ event: 'calibrate', step: k });
        });
        if (!stopped) await refine(step);
      } else {
        const rangesFrozen = (): boolean => calibration === 'first' || step >= calibSteps;
        // A resumed run's ranges (and best student) come from its checkpoint, even one written at step 0.
        if (calibration === 'first' && resumedFrom === undefined) {
          progress({ phase: 'calibrate', step: 0, totalSteps: calibSteps, message: `calibrating the activation ranges (${calibSteps} batches), then distilling from that student` });
          const k = await calibrateInference(calibSteps, (kk, epoch) => progress({ phase: 'calibrate', step: kk, totalSteps: calibSteps, epoch }));
          log.write({ event: 'calibrate', steps: k, before: 'training' });
          if (!stopped) {
            await refine(0);
            swapIn(false);
          }
        }
        if (!stopped && rangesFrozen() && resumedFrom === undefined && (keepBest || guard)) {
          progress({ phase: 'evaluate', step: 0, totalSteps, message: 'held-out agreement' });
          startAgreement = evaluateAndKeep(0);
          lastAgreement = startAgreement;
          progress({ phase: 'prepare', step: 0, totalSteps, message: `held-out agreement before training: mean cosine ${startAgreement.meanCosine.toFixed(4)}` });
        }
        student.train();
        stream = loader.stream({ step: startStep });
        let tStep = performance.now();
        while (step < totalSteps && !stopped) {
          // A cached loader's batches are ready at once: yield to the event loop so signal handlers run.
          await yieldToEvents();
          if (o.signal?.aborted) {
            stopped = true;
            break;
          }
          const r = await stream.next();
          if (r.done) break;
          const b = r.value;
          const x = preprocess(info, b.data, b.n);
          let tEmb: FTensor;
          if (teacherCache) {
            tEmb = Tensor.zeros([b.n, D]);
            for (let i = 0; i < b.n; i++) {
              const k = b.ids[i]! * 2 + (b.flipped[i] ? 1 : 0);
              (tEmb.data as Float32Array).set(teacherCache.subarray(k * D, (k + 1) * D), i * D);
            }
          } else tEmb = taps ? taps.captureTeacher(() => forwardCopy(teacher.model, x)) : forwardCopy(teacher.model, x);
          const lrNow = schedule(step) * lrFactor;
          opt.lr = lrNow;
          dropouts.forEach((d, k) => d.reseed(mix(seed, step, k)));
          if (qdrop > 0) [...learned.values()].forEach((m, k) => m.reseed(mix(seed, step, 0x51d, k)));
          let loss: number;
          let embLoss = NaN;
          let relLoss = 0;
          let gradNorm = NaN;
          try {
            const y = student.forward(x);
            embLoss = lossFn.forward(y, tEmb);
            relLoss = relationFn && b.n >= 2 ? relationFn.forward(y, tEmb) : 0;
            loss = (taps ? embLoss + taps.compute(featureLoss) : embLoss) + relationWeight * relLoss;
            opt.zeroGrad();
            const gy = lossFn.backward();
            if (relationFn && b.n >= 2) {
              const gr = relationFn.backward(relationWeight).data;
              const gd = gy.data;
              for (let i = 0; i < gd.length; i++) gd[i] = gd[i]! + gr[i]!;
            }
            const g = student.backward(gy);
            const gs = Array.isArray(g) ? g : [g];
            for (const gi of gs) bufferPool.release(gi);
            gradNorm = clipNorm > 0 ? clipGradNorm(opt.parameters(), clipNorm) : NaN;
          } catch (e) {
            // Weights that overflowed make the quantizers refuse their ranges: a divergence, not a bug.
            if (!(guard && best) || params.every((p) => p.data.data.every(Number.isFinite))) throw e;
            loss = NaN;
          }
          const finite = Number.isFinite(loss) && !(clipNorm > 0 && !Number.isFinite(gradNorm));
          if (!finite && !(guard && best)) throw new QuantFaceError('E_INTERNAL', `the distillation loss became ${loss} at step ${step}; lower --lr`);
          if (finite) opt.step();
          step++;
          lastLoss = loss;
          const now = performance.now();
          const dt = (now - tStep) / 1000;
          tStep = now;
          trainSecondsThisRun = (now - tLoop) / 1000;
          const rate = b.n / Math.max(dt, 1e-9);
          emaRate = emaRate === 0 ? rate : 0.9 * emaRate + 0.1 * rate;
          const cosNow = lossFn.lastMeanCosine;
          const rec: LogRecord = { event: 'step', step, epoch: b.epoch, loss, cosine: cosNow, lr: lrNow, gradNorm, imagesPerSec: rate, ...(taps ? { embLoss, featureLoss: taps.lastLoss } : {}), ...(relationFn ? { embLoss, relationLoss: relLoss } : {}) };
          if (calibration === 'during' && step === calibSteps) rec.calibrated = true;
          log.write(rec);
          if (calibration === 'during' && step === calibSteps) {
            freezeActRanges(student);
            await refine(step);
            swapIn(false);
          }
          // The guard: a non-finite loss, or a training cosine that collapses far below its running best,
          // is checked against the held-out agreement at once.
          let diverged: string | null = !finite ? `loss ${loss}` : null;
          if (finite && rangesFrozen() && Number.isFinite(cosNow)) {
            cosEma = Number.isNaN(cosEma) ? cosNow : 0.8 * cosEma + 0.2 * cosNow;
            cosBest = Math.max(cosBest, cosEma);
          }
          const collapsed = finite && guard !== null && best !== null && Number.isFinite(cosNow) && cosNow < cosBest - Math.max(0.1, 3 * (1 - cosBest));
          const evalDue = (evalEvery > 0 && step % evalEvery === 0) || step === totalSteps;
          if (!diverged && (evalDue || collapsed) && rangesFrozen()) {
            progress({ phase: 'evaluate', step, totalSteps, message: 'held-out agreement' });
            lastAgreement = evaluateAndKeep(step);
            const bestNow = best as { agreement: Agreement } | null;
            if (guard && bestNow && lastAgreement.meanCosine < bestNow.agreement.meanCosine - tol(bestNow.agreement.meanCosine))
              diverged = `held-out cos ${lastAgreement.meanCosine.toFixed(4)}, best ${bestNow.agreement.meanCosine.toFixed(4)}${collapsed ? `; training cos ${cosNow.toFixed(4)}` : ''}`;
            tStep = performance.now();
          } else if (!diverged && evalDue) {
            lastAgreement = evaluate();
            log.write({ event: 'eval', step, ...lastAgreement });
            tStep = performance.now();
          }
          if (diverged && guard && best) {
            if (rollback(step, diverged)) break;
            cosEma = NaN;
            cosBest = -Infinity;
          }
          const eta = ((totalSteps - step) * batchSize) / Math.max(emaRate, 1e-9);
          progress({
            phase: 'train', step, totalSteps, epoch: b.epoch, loss, cosine: cosNow, lr: lrNow, imagesPerSec: emaRate, etaSeconds: eta,
            ...(lastAgreement ? { agreement: lastAgreement.meanCosine } : {}),
          });
          if (checkpointEvery > 0 && step % checkpointEvery === 0 && step < totalSteps) {
            await writeCheckpoint(step, lastLoss);
            tStep = performance.now();
          }
        }
        student.eval();
        // Keep the best student: the last one only when nothing before it agreed better with the teacher.
        const bestNow = best as { agreement: Agreement; step: number; state: Map<string, FTensor> } | null;
        if (!stopped && keepBest && bestNow && lastAgreement && bestNow.step !== step && bestNow.agreement.meanCosine > lastAgreement.meanCosine) {
          student.loadStateDict(bestNow.state);
          log.write({ event: 'keep-best', step: bestNow.step, agreement: bestNow.agreement.meanCosine, last: lastAgreement.meanCosine });
          progress({ phase: 'train', step, totalSteps, message: `kept the student of step ${bestNow.step} (held-out cos ${bestNow.agreement.meanCosine.toFixed(4)}; the last one had ${lastAgreement.meanCosine.toFixed(4)})` });
          lastAgreement = bestNow.agreement;
          bestStep = bestNow.step;
        }
      }
    } finally {
      if (stream) await stream.return(undefined);
    }
    trainSecondsThisRun = (performance.now() - tLoop) / 1000;
    if (stopped) {
      if (!noTrain && !inCalibration) await writeCheckpoint(step, lastLoss);
      unwrapTaps();
      swapOut();
      log.write({ event: 'stopped', step });
      progress({ phase: 'done', step, totalSteps, message: 'stopped' });
      return {
        student, teacher, bits, completed: false, steps: step, totalSteps, noTrain, agreement: lastAgreement, finalLoss: lastLoss,
        ...(ckptPath && !noTrain && !inCalibration ? { checkpoint: ckptPath } : {}),
        seconds: (performance.now() - t0) / 1000, totalSeconds: priorSeconds + trainSecondsThisRun,
        trainImages, holdoutImages: holdout?.length ?? 0, data: opened.description, ...(resumedFrom !== undefined ? { resumedFrom } : {}), unusedLayerRules,
        recipe, startAgreement, ...(bestStep !== undefined ? { bestStep } : {}), rollbacks,
      };
    }
    unwrapTaps();
    if (swapped) {
      swapOut();
      lastAgreement = null; // re-measured on the saved form
    }
    if (clippedWeights.size) {
      const baked = bakeClippedWeights(student);
      log.write({ event: 'bake-weights', weightRange, layers: baked.layers, maxError: baked.maxError });
      lastAgreement = null;
    }
    freezeActRanges(student);
    if (o.bnRecalibrate) {
      progress({ phase: 'calibrate', step, totalSteps, message: 'BatchNorm statistics of the student' });
      const inputs: FTensor[] = [];
      let seen = 0;
      for await (const b of plain.epoch(0)) {
        if (b.n < 2) continue;
        inputs.push(preprocess(info, b.data, b.n));
        seen += b.n;
        if (seen >= 512) break;
      }
      const layers = recalibrateBatchNorm(student, inputs);
      log.write({ event: 'bn-recalibrate', step, layers, images: seen });
      lastAgreement = null;
    }
    if (!lastAgreement || noTrain) {
      progress({ phase: 'evaluate', step, totalSteps, message: 'held-out agreement' });
      lastAgreement = evaluate();
      log.write({ event: 'eval', step, ...lastAgreement });
    }

    // ---------------------------------------------------------------- save
    let out: { path: string; bytes: number } | undefined;
    const totalSeconds = priorSeconds + trainSecondsThisRun;
    if (outPath) {
      progress({ phase: 'save', step, totalSteps, message: `saving ${outPath}` });
      const sinfo: ModelInfo = { ...info, name: `${info.name}-${bitsName(bits)}${rules.length ? '-mixed' : ''}` };
      const bytes = await saveQfm(student, outPath, {
        info: sinfo,
        provenance: {
          teacherSha256: teacher.sha256,
          weightBits: bits.weightBits,
          actBits: bits.actBits,
          data: { source: opened.description, kind: opened.kind, align: opened.align, trainImages, holdoutImages: holdout?.length ?? 0 },
          notes: {
            method: noTrain ? 'PTQ (calibration only)' : 'QuantFace distillation',
            recipe,
            ...(noTrain ? {} : { calibration, weightDecay, optimizer }),
            ...(startAgreement ? { startAgreement: startAgreement.meanCosine } : {}),
            ...(bestStep !== undefined ? { bestStep } : {}),
            ...(rollbacks.length ? { rollbacks } : {}),
            teacher: teacher.source === 'module' ? info.name : basename(teacher.source),
            ...(rules.length ? { layerBits: fingerprint.layerBits as string } : {}),
            ...(equalize ? { equalize: { alpha: equalize.alpha ?? 0.5, statistic: equalize.statistic ?? 'range' } } : {}),
            steps: step,
            batchSize,
            lr,
            calibSteps,
            seed,
            augment: { ...augment },
            agreement: { ...lastAgreement },
            seconds: totalSeconds,
            ...(o.notes !== undefined ? { user: o.notes } : {}),
          } as unknown as Provenance['notes'],
        },
      });
      out = { path: outPath, bytes };
      log.write({ event: 'saved', path: outPath, bytes });
    }
    // The run is complete: its checkpoint has served its purpose.
    if (ckptPath && !noTrain && existsSync(ckptPath)) await unlink(ckptPath).catch(() => undefined);
    log.write({ event: 'done', step, totalSteps, finalLoss: lastLoss, agreement: lastAgreement, seconds: totalSeconds });
    progress({ phase: 'done', step, totalSteps, agreement: lastAgreement.meanCosine });
    return {
      student, teacher, bits, completed: true, steps: step, totalSteps, noTrain, agreement: lastAgreement, finalLoss: lastLoss,
      ...(out ? { out } : {}),
      seconds: (performance.now() - t0) / 1000, totalSeconds,
      trainImages, holdoutImages: holdout?.length ?? 0, data: opened.description, ...(resumedFrom !== undefined ? { resumedFrom } : {}), unusedLayerRules,
        recipe, startAgreement, ...(bestStep !== undefined ? { bestStep } : {}), rollbacks,
    };
  } finally {
    unwrapTaps();
    for (const l of loaders) await l.close().catch(() => undefined);
    await executor.close();
  }
}
