/**
 * Learning-rate schedules: pure functions of the step index (0-based), and
 * a small driver that writes them into an optimiser.
 */
import { QuantFaceError } from '../tensor.js';

export type Schedule = (step: number) => number;

export function constantLr(lr: number): Schedule {
  return () => lr;
}

/** lr * gamma^(number of milestones <= step) (PyTorch's MultiStepLR). */
export function stepLr(lr: number, milestones: number[], gamma = 0.1): Schedule {
  const ms = [...milestones].sort((a, b) => a - b);
  return (step) => {
    let k = 0;
    for (const m of ms) if (step >= m) k++;
    return lr * gamma ** k;
  };
}

/** Cosine from lr at step 0 to minLr at totalSteps (and after). */
export function cosineLr(lr: number, totalSteps: number, minLr = 0): Schedule {
  if (!(totalSteps > 0)) throw new QuantFaceError('E_ARG', `cosineLr: totalSteps must be > 0, got ${totalSteps}`);
  return (step) => {
    const t = Math.min(Math.max(step, 0), totalSteps) / totalSteps;
    return minLr + 0.5 * (lr - minLr) * (1 + Math.cos(Math.PI * t));
  };
}

/**
 * Linear warm-up over warmupSteps from startFactor * inner(0) to the inner
 * schedule, then the inner schedule shifted by warmupSteps
 * (inner(step - warmupSteps)).
 */
export function withWarmup(inner: Schedule, warmupSteps: number, startFactor = 0): Schedule {
  if (!(warmupSteps >= 0)) throw new QuantFaceError('E_ARG', `withWarmup: warmupSteps must be >= 0, got ${warmupSteps}`);
  return (step) => {
    if (step >= warmupSteps) return inner(step - warmupSteps);
    const f = startFactor + (1 - startFactor) * (step / warmupSteps);
    return inner(0) * f;
  };
}

/** Sets optimizer.lr from a schedule: call step() once per training step, before optimizer.step(). */
export class LrScheduler {
  private t = 0;
  constructor(
    private readonly optimizer: { lr: number },
    private readonly schedule: Schedule,
  ) {
    this.optimizer.lr = schedule(0);
  }

  /** Applies the learning rate of the current step and advances. Returns it. */
  step(): number {
    const lr = this.schedule(this.t++);
    this.optimizer.lr = lr;
    return lr;
  }

  get currentStep(): number {
    return this.t;
  }
}
