/**
 * BatchNorm re-estimation (`bnRecalibrate`, beyond the paper): after
 * calibration (PTQ) or distillation, every BatchNorm's running mean and
 * variance are recomputed as the plain average of batch statistics over a
 * fixed set of unaugmented training images, with the student's quantizers
 * in place (frozen ranges, quantized weights). Quantization shifts the
 * statistics of the activations the teacher's BatchNorm layers were fitted
 * to (a bias the 4-bit student feels most), and the running averages left
 * by training come from augmented images with a momentum that forgets all
 * but the last steps; this replaces both with the statistics of the final
 * student on clean faces. Nothing else changes: no gradient, dropout and
 * quantizers in inference mode.
 */
import type { FTensor } from '../tensor.js';
import { Module, noGrad } from '../nn/module.js';
import { BatchNorm } from '../nn/layers.js';
import { bufferPool } from '../nn/pool.js';

/** Recomputes every BatchNorm's running statistics of `student` from `inputs` (preprocessed batches of > 1 image). Returns the number of layers. */
export function recalibrateBatchNorm(student: Module, inputs: FTensor[]): number {
  const bns = [...student.modules()].filter((m): m is BatchNorm => m instanceof BatchNorm);
  if (!bns.length || !inputs.length) return 0;
  const wasTraining = student.training;
  const momenta = bns.map((b) => b.momentum);
  student.eval();
  try {
    for (const b of bns) {
      b.runningMean.data.fill(0);
      b.runningVar.data.fill(1);
      b.training = true;
    }
    // Cumulative average: batch k (1-based) enters with weight 1 / k.
    inputs.forEach((x, k) => {
      for (const b of bns) b.momentum = 1 / (k + 1);
      noGrad(() => bufferPool.release(student.forward(x)));
    });
  } finally {
    bns.forEach((b, i) => {
      b.momentum = momenta[i]!;
      b.training = false;
    });
    if (wasTraining) student.train(true);
  }
  return bns.length;
}
