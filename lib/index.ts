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
// Both eval and io define these; the root exports eval's, io's under other names.
export { preprocess, type Triple } from './eval/index.js';
export { preprocess as preprocessModelInput, type Triple as ModelTriple } from './io/index.js';
export * from './tensor.js';
export * from './nn/index.js';
export * from './quant/index.js';
export * from './models/index.js';
export * from './optim/index.js';
export * from './runtime/index.js';
export * from './distill/index.js';
