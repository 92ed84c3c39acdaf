/**
 * Distillation recipes: named sets of trainer options, so that a user picks
 * a measured method instead of a dozen flags. Explicit options always win
 * over the recipe's values.
 *
 * - `kd` (the default): start from the best post-training-quantization
 *   state (activation ranges equalized, calibrated in inference mode,
 *   narrowed to their MSE optimum and frozen), then distil with SGD
 *   (Nesterov) and flip augmentation, keeping the student with the best
 *   held-out agreement (never worse than the PTQ start) and rolling back on
 *   a divergence. Below 6 bits (weights or activations) it distils with
 *   AdamW instead (lr 1e-4, clipped straight-through estimator): on the
 *   strong teacher at W4A4 that halves the drop SGD leaves (issue 13).
 * - `quantface`: the paper's method as published (../../../shared/method.md):
 *   min/max activation ranges calibrated during the first 300 training
 *   steps and then frozen, SGD Nesterov lr 0.1 x batch / 512, weight decay
 *   5e-4 (on models with BatchNorm layers; see the trainer's weightDecay),
 *   1,500 steps, flip. The trainer's guards (best-student selection,
 *   rollback) apply to it as well.
 */
import { QuantFaceError } from '../errors.js';
import type { QuantizeOptions } from './trainer.js';
import { bitsName, parseBits } from './bits.js';

export type RecipeName = 'kd' | 'quantface';

export interface Recipe {
  name: RecipeName;
  /** One line for --help. */
  summary: string;
  /** Trainer options the recipe sets (explicit options override them). */
  options: Partial<QuantizeOptions>;
  /** What the recipe sets instead when the weights or the activations are below 6 bits (over `options`). */
  lowBits?: Partial<QuantizeOptions>;
}

export const RECIPES: Record<RecipeName, Recipe> = {
  kd: {
    name: 'kd',
    summary: 'from the best PTQ state (equalized, MSE ranges), SGD (AdamW lr 1e-4 below 6 bits), 400 steps, keep the best student (default)',
    // Measured on faceplugin W6A6 (231 GAN faces, batch 64): held-out cosine 0.9445 (PTQ start) -> 0.963 at step 30,
    // 0.968 at 120, 0.971 at 240, then flat to step 600 (the x0.1 decays at 450 and 540 added nothing): 400 steps.
    // Calibration: 50 batches of flip-only faces see each image many times; the MSE refinement follows.
    options: { calibration: 'first', actRange: 'mse', equalize: true, optimizer: 'sgd', steps: 400, calibSteps: 50, augment: { flip: true } },
    // faceplugin W4A4 from the same PTQ start (LFW 98.37, int8 runtime, two seeds): SGD 2.27 / 2.15 points, held-out
    // cosine 0.74-0.76 at best; AdamW lr 1e-4 with the clipped estimator 1.18 / 1.40, held-out 0.85 by step 200. At 6
    // and 8 bits SGD already leaves 0.02-0.13 points, so the low-bit switch is only below 6.
    lowBits: { optimizer: 'adamw' },
  },
  quantface: {
    name: 'quantface',
    summary: "the paper's method: min/max ranges calibrated during the first 300 steps, SGD lr 0.1 x batch/512, wd 5e-4",
    options: { calibration: 'during', actRange: 'minmax', equalize: false, optimizer: 'sgd', calibSteps: 300, steps: 1500, augment: { flip: true } },
  },
};

export const RECIPE_NAMES = Object.keys(RECIPES) as RecipeName[];

/** The recipe's options under the user's (explicit, defined options win). */
export function applyRecipe(o: QuantizeOptions): QuantizeOptions {
  const name = o.recipe ?? 'kd';
  const r = RECIPES[name as RecipeName];
  if (!r) throw new QuantFaceError('E_ARG', `recipe must be one of ${RECIPE_NAMES.join(', ')} (got ${String(name)})`);
  const out: Record<string, unknown> = { ...r.options, ...(r.lowBits && isLowBits(o.bits) ? r.lowBits : {}) };
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  // A step count from the user replaces the recipe's; so do epochs (the recipe's steps would override them).
  if (o.epochs !== undefined && o.steps === undefined) delete out.steps;
  out.recipe = name;
  return out as unknown as QuantizeOptions;
}

/** Weights or activations below 6 bits (an unreadable spec is left to the option check, which names it). */
function isLowBits(bits: QuantizeOptions['bits']): boolean {
  try {
    const b = typeof bits === 'object' && bits !== null ? parseBits(bitsName(bits)) : parseBits(bits ?? 'w8a8');
    return Math.min(b.weightBits, b.actBits) < 6;
  } catch {
    return false;
  }
}
