/**
 * The first stage of quantize(): every option checked and resolved once,
 * before anything is loaded (a typo fails in milliseconds, not after the
 * teacher and the faces are read). What depends on the data (the batch
 * clamped to the images there are, steps from epochs, the learning rate's
 * default from the batch, milestones in steps) is resolved by planSteps()
 * when the data stage knows it. Everything here is pure: no file is opened,
 * no thread count is set.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { QuantFaceError } from '../errors.js';
import { resolveAugment, type ResolvedAugment } from '../data/augment.js';
import type { SteMode } from '../quant/fake-quant.js';
import type { WeightRangeMode } from '../quant/weight-range.js';
import type { EqualizeOptions } from '../quant/equalize.js';
import { stepLr, cosineLr, type Schedule } from '../optim/schedules.js';
import { bitsName, parseBits, parseLayerRules, type BitWidths, type LayerRule } from './bits.js';
import { applyRecipe } from './recipes.js';
import type { QuantizeOptions } from './trainer.js';

/** Steps of a run that gives neither steps nor epochs. */
export const DEFAULT_STEPS = 1500;

/** quantize()'s options, checked, with every default filled (see QuantizeOptions for each one's meaning). */
export interface QuantizeSettings {
  /** The options after the recipe filled what the caller left out (for the few read as given: teacher, data, align, ...). */
  readonly options: QuantizeOptions;
  readonly recipe: 'kd' | 'quantface';
  readonly bits: BitWidths;
  /** Per-layer rules as given (the residual-stream rules are added when the teacher is known). */
  readonly layerRules: LayerRule[];
  readonly residualBits: number | undefined;
  readonly seed: number;
  readonly noTrain: boolean;
  readonly calibration: 'first' | 'during';
  readonly keepBest: boolean;
  readonly guard: { maxRollbacks: number; lrFactor: number } | null;
  readonly optimizer: 'sgd' | 'adamw';
  readonly momentum: number;
  /** undefined: decided by the teacher (5e-4 with BatchNorm, else 0). */
  readonly weightDecay: number | undefined;
  readonly clipNorm: number;
  readonly lrSchedule: 'step' | 'cosine';
  readonly lrGamma: number;
  readonly actRange: 'minmax' | 'mse' | 'learned';
  readonly rangeLrScale: number;
  readonly weightRange: WeightRangeMode;
  readonly featureLoss: number;
  readonly qdrop: number;
  readonly relationLoss: number;
  readonly equalize: EqualizeOptions | null;
  readonly ste: SteMode;
  readonly augment: ResolvedAugment;
  /** 0, a fraction in (0, 1) or a whole count. */
  readonly holdout: number;
  readonly checkpointEvery: number;
  readonly workers: number;
  readonly threads: number | undefined;
  /** The batch asked for (clamped to the training images by planSteps). */
  readonly batchSize: number;
  readonly steps: number | undefined;
  readonly epochs: number | undefined;
  /** Calibration batches asked for (default 300; recipes set their own). */
  readonly calibSteps: number;
  /** The learning rate asked for; undefined: 0.1 x batch / 512. */
  readonly lr: number | undefined;
  readonly lrMilestones: number[];
  /** undefined: 20 evaluations per run. */
  readonly evalEvery: number | undefined;
  readonly outPath: string | undefined;
  readonly checkpointPath: string | undefined;
  readonly resume: boolean;
}

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

function oneOf<T extends string>(name: string, v: T | undefined, allowed: readonly T[], dflt: T): T {
  if (v === undefined) return dflt;
  if (!allowed.includes(v)) throw new QuantFaceError('E_ARG', `${name} must be ${allowed.map((a) => `'${a}'`).join(', ').replace(/, ([^,]*)$/, ' or $1')} (got ${String(v)})`);
  return v;
}

/** Checks that `out` can be written (its folder exists, it is not a folder) before any long work starts. */
function checkOutPath(out: string, what: string): string {
  const p = resolve(out);
  const dir = dirname(p);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new QuantFaceError('E_IO', `${what} ${p}: the folder ${dir} does not exist; create it first`, { path: p });
  if (existsSync(p) && statSync(p).isDirectory()) throw new QuantFaceError('E_IO', `${what} ${p} is a folder; give a file name (e.g. ${basename(p)}/student.qfm)`, { path: p });
  return p;
}

/** Checks every option and fills the defaults (the recipe's first, then quantize's own). Throws E_ARG / E_IO. */
export function resolveQuantizeOptions(options: QuantizeOptions): QuantizeSettings {
  if (!options || typeof options !== 'object') throw new QuantFaceError('E_ARG', 'quantize: options are required ({ data, teacher?, bits?, ... })');
  const o = applyRecipe(options);
  const bits = typeof o.bits === 'object' && o.bits !== null ? parseBits(bitsName(o.bits)) : parseBits(o.bits ?? 'w8a8');
  const layerRules = o.layerBits === undefined ? [] : typeof o.layerBits === 'string' ? parseLayerRules(o.layerBits) : o.layerBits;
  const noTrain = o.noTrain === true;
  const calibration = oneOf('calibration', o.calibration, ['first', 'during'], 'first');
  const keepBest = o.keepBest ?? true;
  if (typeof keepBest !== 'boolean') throw new QuantFaceError('E_ARG', `keepBest must be true or false (got ${String(keepBest)})`);
  if (o.guard !== undefined && o.guard !== false && (typeof o.guard !== 'object' || o.guard === null)) throw new QuantFaceError('E_ARG', `guard must be false or { maxRollbacks, lrFactor } (got ${String(o.guard)})`);
  const guard = o.guard === false ? null : { maxRollbacks: intOpt('guard.maxRollbacks', o.guard?.maxRollbacks, 0, 3), lrFactor: numOpt('guard.lrFactor', o.guard?.lrFactor, 0, 0.3, true) };
  if (guard && guard.lrFactor >= 1) throw new QuantFaceError('E_ARG', `guard.lrFactor must be below 1 (got ${guard.lrFactor})`);
  const actRange = oneOf('actRange', o.actRange, ['minmax', 'mse', 'learned'], 'mse');
  const weightRange = oneOf<WeightRangeMode>('weightRange', o.weightRange, ['minmax', 'mse', 'learned'], 'minmax');
  const qdrop = numOpt('qdrop', o.qdrop, 0, 0);
  if (o.residualBits !== undefined && bits.residualBits !== undefined && o.residualBits !== bits.residualBits)
    throw new QuantFaceError('E_ARG', `bits ${bitsName(bits)} names a residual-stream width of ${bits.residualBits}, residualBits says ${o.residualBits}: give one`);
  const residualBits = o.residualBits ?? bits.residualBits;
  if (residualBits !== undefined && (typeof residualBits !== 'number' || !Number.isInteger(residualBits) || residualBits < 2 || residualBits > 8))
    throw new QuantFaceError('E_ARG', `residualBits must be an integer from 2 to 8 (got ${String(residualBits)})`);
  if (qdrop >= 1) throw new QuantFaceError('E_ARG', `qdrop must be a probability in [0, 1) (got ${qdrop})`);
  if (qdrop > 0 && actRange !== 'learned') throw new QuantFaceError('E_ARG', `qdrop works on learned activation ranges: pass actRange 'learned' with qdrop ${qdrop}`);
  // Default: on for PTQ (measured on mobileface: LFW teacher-student cosine up at W6A6 and W4A4 on both
  // face sets), off for distillation unless the recipe asks for it.
  const eqSpec = o.equalize ?? noTrain;
  if (typeof eqSpec !== 'boolean' && (typeof eqSpec !== 'object' || eqSpec === null))
    throw new QuantFaceError('E_ARG', `equalize must be true, false or { alpha, maxScale, statistic } (got ${String(eqSpec)})`);
  const equalize: EqualizeOptions | null = eqSpec === false ? null : { alpha: 0.5, ...(eqSpec === true ? {} : eqSpec) };
  if (equalize && (typeof equalize.alpha !== 'number' || !(equalize.alpha >= 0 && equalize.alpha <= 1)))
    throw new QuantFaceError('E_ARG', `equalize alpha must be a number in [0, 1] (got ${String(equalize.alpha)})`);
  const lrSchedule = oneOf('lrSchedule', o.lrSchedule, ['step', 'cosine'], 'step');
  const optimizer = oneOf('optimizer', o.optimizer, ['sgd', 'adamw'], 'sgd');
  // AdamW with the unmasked estimator diverges once the ranges are frozen (QuantizeOptions.ste).
  const ste = oneOf<SteMode>('ste', o.ste, ['unmasked', 'clipped'], optimizer === 'adamw' ? 'clipped' : 'unmasked');
  const epochs = o.epochs === undefined ? undefined : intOpt('epochs', o.epochs, 1, 1);
  const steps = o.steps === undefined ? undefined : intOpt('steps', o.steps, 1, 1);
  const threads = o.threads === undefined ? undefined : intOpt('threads', o.threads, 1, 1);
  const holdout = o.holdout ?? 0.1;
  if (typeof holdout !== 'number' || !Number.isFinite(holdout) || holdout < 0 || (holdout >= 1 && !Number.isInteger(holdout)))
    throw new QuantFaceError('E_ARG', `holdout must be 0, a fraction in (0, 1) or a whole count (got ${String(holdout)})`);
  const lrMilestones = (o.lrMilestones ?? [0.75, 0.9]).map((m) => {
    if (typeof m !== 'number' || !Number.isFinite(m) || m <= 0) throw new QuantFaceError('E_ARG', `lrMilestones must be positive numbers (fractions < 1 or step numbers), got ${String(m)}`);
    return m;
  });
  const outPath = o.out !== undefined ? checkOutPath(o.out, 'output') : undefined;
  if (outPath && !/\.qfm$/i.test(outPath)) throw new QuantFaceError('E_ARG', `output ${outPath}: the student is saved as a quantface model file; give a name ending in .qfm`);
  const checkpointPath = o.checkpoint !== undefined ? checkOutPath(o.checkpoint, 'checkpoint') : outPath ? `${outPath}.ckpt` : undefined;
  if (o.resume && !checkpointPath) throw new QuantFaceError('E_ARG', 'resume needs a checkpoint: pass checkpoint (or out, whose checkpoint is <out>.ckpt)');
  if (o.data === undefined || o.data === null) throw new QuantFaceError('E_ARG', 'quantize: data is required (a folder of face images or generated:N)');
  return {
    options: o,
    recipe: o.recipe!,
    bits,
    layerRules,
    residualBits,
    seed: intOpt('seed', o.seed, 0, 0),
    noTrain,
    calibration,
    keepBest,
    guard,
    optimizer,
    momentum: numOpt('momentum', o.momentum, 0, 0.9),
    weightDecay: o.weightDecay === undefined ? undefined : numOpt('weightDecay', o.weightDecay, 0, 0),
    clipNorm: numOpt('clipNorm', o.clipNorm, 0, 5),
    lrSchedule,
    lrGamma: numOpt('lrGamma', o.lrGamma, 0, 0.1),
    actRange,
    rangeLrScale: numOpt('rangeLrScale', o.rangeLrScale, 0, 10),
    weightRange,
    featureLoss: numOpt('featureLoss', o.featureLoss, 0, 0),
    qdrop,
    relationLoss: numOpt('relationLoss', o.relationLoss, 0, 0),
    equalize,
    ste,
    augment: resolveAugment(o.augment ?? { flip: true }),
    holdout,
    checkpointEvery: intOpt('checkpointEvery', o.checkpointEvery, 0, 200),
    workers: intOpt('workers', o.workers, 0, 1),
    threads,
    batchSize: intOpt('batchSize', o.batchSize, 1, 64),
    steps,
    epochs,
    calibSteps: intOpt('calibSteps', o.calibSteps, 1, 300),
    lr: o.lr === undefined ? undefined : numOpt('lr', o.lr, 0, 0, true),
    lrMilestones,
    evalEvery: o.evalEvery === undefined ? undefined : intOpt('evalEvery', o.evalEvery, 0, 0),
    outPath,
    checkpointPath,
    resume: o.resume === true,
  };
}

/** The step plan of a run, once the training images are counted. */
export interface StepPlan {
  /** The batch (batchFor). */
  batchSize: number;
  /** Optimiser steps (calibration batches in PTQ). */
  totalSteps: number;
  /** Calibration batches: before training ('first'), or its first steps ('during'). */
  calibSteps: number;
  lr: number;
  /** The step-decay milestones, in steps. */
  milestones: number[];
  schedule: Schedule;
  /** Held-out evaluations every this many steps (0: only at the end). */
  evalEvery: number;
}

/** The batch for `trainImages` images: the one asked for, or all of them when there are fewer. */
export function batchFor(s: QuantizeSettings, trainImages: number): number {
  return Math.min(s.batchSize, trainImages);
}

/** The steps, the learning rate and its schedule, for the batch and the batches an epoch holds. */
export function planSteps(s: QuantizeSettings, batchSize: number, bpe: number): StepPlan {
  const totalSteps = s.noTrain ? s.calibSteps : s.steps !== undefined ? s.steps : s.epochs !== undefined ? s.epochs * bpe : DEFAULT_STEPS;
  const calibSteps = s.noTrain ? totalSteps : s.calibration === 'first' ? s.calibSteps : Math.min(s.calibSteps, totalSteps);
  // SGD: the method's 0.1 x batch / 512; AdamW's steps are scale-free, 1e-4 is what was measured (issue 13).
  const lr = s.lr ?? (s.optimizer === 'adamw' ? 1e-4 : 0.1 * (batchSize / 512));
  const milestones = s.lrMilestones.map((m) => (m < 1 ? Math.round(m * totalSteps) : Math.round(m)));
  const schedule = s.lrSchedule === 'cosine' ? cosineLr(lr, totalSteps) : stepLr(lr, milestones, s.lrGamma);
  const evalEvery = s.evalEvery ?? Math.max(1, Math.round(totalSteps / 20));
  return { batchSize, totalSteps, calibSteps, lr, milestones, schedule, evalEvery };
}
