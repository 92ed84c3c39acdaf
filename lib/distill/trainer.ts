/**
 * quantize(): the QuantFace pipeline (../../../shared/method.md).
 *
 * 1. The teacher (TF.js / ONNX / float .qfm file, an engine Module, or a
 *    known public teacher by name) runs in eval mode under noGrad.
 * 2. The student is toQat(teacher) at the chosen widths: per-output-channel
 *    weight fake quantization on every Conv2d / Linear, activations
 *    quantized after every activation function (PReLU, ReLU) and every
 *    residual addition, PReLU slopes at the activation width.
 * 3. Activation ranges are calibrated: before training in inference mode
 *    and refined to the MSE optimum (recipe kd: training starts from the
 *    PTQ student), or during the first `calibSteps` training forwards and
 *    then frozen (recipe quantface, the reference's scheme).
 * 4. Distillation: loss = mean((s/|s| - t/|t|)^2) between the student's and
 *    the teacher's embeddings of the same augmented faces; SGD with
 *    Nesterov momentum 0.9, lr 0.1 x batch / 512, weight decay 5e-4 when
 *    the teacher has BatchNorm layers (0 when they are folded), the
 *    gradient's global L2 norm clipped at 5, step decay x0.1 near the end.
 * 5. A held-out split measures teacher-student agreement (mean cosine)
 *    from the start; the best student is kept, a divergence rolls back to
 *    it; the result is saved as a .qfm file.
 *
 * `noTrain` stops after calibration: post-training quantization (PTQ).
 * The stages live in ./run.ts, the option checks in ./settings.ts.
 *
 * Determinism: every random choice comes from the seed and the step (data
 * order and augmentation from lib/data, dropout masks reseeded per step),
 * so the same options give bit-identical weights on one machine with one
 * thread count. Checkpoints hold the student's master weights and buffers
 * (activation ranges, calibration counters), the optimiser's momentum and
 * the step; resuming from one continues exactly as the uninterrupted run.
 */
import type { Module } from '../nn/module.js';
import type { SteMode } from '../quant/fake-quant.js';
import type { WeightRangeMode } from '../quant/weight-range.js';
import type { EqualizeOptions } from '../quant/equalize.js';
import type { AugmentOptions } from '../data/augment.js';
import type { ImageFolder, DataAlignOption } from '../data/dataset.js';
import type { BitWidths, LayerRule } from './bits.js';
import type { Teacher } from './teacher.js';
import type { GenerateOptions, GenerateProgress } from './generate.js';
import type { JsonValue } from './checkpoint.js';
import { resolveQuantizeOptions } from './settings.js';
import { QuantizeRun } from './run.js';

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
  /** Learning rate. Default with SGD 0.1 x batchSize / 512 (the paper's rate, scaled linearly); with AdamW 1e-4. */
  lr?: number;
  /** Step decay points: fractions of the run (< 1) or step numbers. Default [0.75, 0.9]. */
  lrMilestones?: number[];
  /** Decay factor at each milestone. Default 0.1. */
  lrGamma?: number;
  /**
   * 'sgd' (the method: Nesterov momentum) or 'adamw'. Default: the recipe's ('sgd'; recipe kd below 6 bits 'adamw').
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
  /**
   * Straight-through estimator of the activation (and weight) quantizers: 'unmasked' (the reference: the
   * gradient passes where the value was clipped too) or 'clipped' (zero there). Default 'unmasked' with
   * SGD, 'clipped' with AdamW: with frozen ranges an unmasked gradient keeps pushing values that the clip
   * no longer lets change, Adam turns that steady push into full-size steps, and the run diverges
   * (measured on the strong teacher, bench/adamw-probe.ts: the same AdamW run collapsed from training
   * cosine 0.90 to 0.44 within 10 steps unmasked, and trained on to 0.93 clipped).
   */
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

// ====================================================================== quantize
/**
 * Quantizes a teacher into a low-bit student by distillation (or PTQ with noTrain). The stages, each a
 * method of QuantizeRun (./run.ts) that a test can drive on its own: options resolved once, teacher,
 * data, student, resume, targets, calibration, training, finishing, saving.
 */
export async function quantize(options: QuantizeOptions): Promise<QuantizeResult> {
  const t0 = performance.now();
  const run = new QuantizeRun(resolveQuantizeOptions(options), t0);
  try {
    await run.loadTeacher();
    await run.openData();
    await run.buildStudent();
    await run.restore();
    await run.prepareTargets();
    await run.calibrate();
    if (!run.s.noTrain && !run.stopped) await run.train();
    if (run.stopped) return await run.stopResult();
    await run.finish();
    await run.save();
    return run.result();
  } finally {
    await run.close();
  }
}
