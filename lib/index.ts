/**
 * quantface: low-bit quantization of face-recognition networks by
 * synthetic-data distillation (QuantFace), with fast native kernels.
 */
export { binding, bindingPath, packageRoot } from './binding.js';
export type * from '../binding.js';
export * from './errors.js';
export * from './data/index.js';
export * from './eval/index.js';
export * from './io/index.js';
// One model description (lib/io ModelInfo) and one preprocess(); eval re-exports io's.
export { preprocess, type Triple } from './io/index.js';
/** @deprecated The same function as {@link preprocess} (there is one preprocessing function now). */
export const preprocessModelInput = preprocess;
/** @deprecated The same type as {@link Triple}. */
export type ModelTriple = Triple;
import { preprocess } from './io/index.js';
import type { Triple } from './io/index.js';
export * from './tensor.js';
export * from './nn/index.js';
export * from './quant/index.js';
export * from './models/index.js';
export * from './optim/index.js';
export * from './runtime/index.js';
export * from './distill/index.js';
