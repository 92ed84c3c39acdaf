/**
 * QuantFace distillation: quantize a float face-recognition teacher into a
 * low-bit student on synthetic (or data-free generated) faces.
 *
 * ```ts
 * import { quantize } from 'quantface';
 * const r = await quantize({
 *   teacher: 'mobileface.json',          // TF.js, ONNX, float .qfm, or an engine Module
 *   data: 'faces/', align: 'ffhq',       // or 'generated:512' (no data needed)
 *   bits: 'w6a6', epochs: 50, out: 'student.qfm',
 *   onProgress: (p) => console.log(p.phase, p.step, p.loss),
 * });
 * console.log(r.agreement?.meanCosine, r.out?.bytes);
 * ```
 */
// `QuantizeOptions` is taken at the package root by the native quantize kernel's options (binding.d.ts):
// the trainer's options are exported as QuantizeRunOptions.
export {
  quantize,
  type QuantizeOptions as QuantizeRunOptions,
  type QuantizeProgress,
  type QuantizePhase,
  type QuantizeResult,
  type Agreement,
} from './trainer.js';
export { parseBits, bitsName, parseLayerRules, layerOverrides, type BitWidths, type LayerRule } from './bits.js';
export { loadTeacher, findDefaultTeacher, defaultTeacherPath, DEFAULT_TEACHER_PACKAGE, DEFAULT_TEACHER_FILE, INSIGHTFACE_PREPROCESSING, type Teacher, type TeacherOptions } from './teacher.js';
export { EngineEmbedder, loadQfmEmbedder, type EngineEmbedderOptions } from './embedder.js';
export { saveCheckpoint, loadCheckpoint, encodeCheckpoint, decodeCheckpoint, type CheckpointContents } from './checkpoint.js';
export { generateFaces, paintFace, invertTowardsTargets, defaultCacheDir, GENERATOR_VERSION, type GenerateOptions, type GenerateProgress, type GeneratedSet } from './generate.js';
export { refineActRanges, mseRange, type RangeChange } from './ranges.js';
export { LearnedActQuant } from './learned-range.js';
export { parseGeneratedSpec } from './data.js';
