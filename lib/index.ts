/**
 * quantface: low-bit quantization of face-recognition networks by
 * synthetic-data distillation (QuantFace), with fast native kernels.
 */
export { binding, bindingPath, packageRoot } from './binding.js';
export type * from '../binding.js';
export * from './errors.js';
export * from './data/index.js';
export * from './eval/index.js';
