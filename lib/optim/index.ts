/** Optimisers, gradient clipping and learning-rate schedules. */
export { Optimizer, SGD, AdamW, clipGradNorm, type SGDOptions, type AdamWOptions, type ParamGroup } from './optimizers.js';
export { constantLr, stepLr, cosineLr, withWarmup, LrScheduler, type Schedule } from './schedules.js';
