/**
 * Model import and export: TF.js graph models, ONNX (import, float and QDQ
 * export), face-api's ResNet descriptor weights, and the quantface model
 * file (.qfm).
 */
export {
  ImportedModel,
  preprocess,
  validateModelInfo,
  validateAlignment,
  describeInput,
  ARCFACE_TEMPLATE_POINTS,
  ALIGNMENT_BOX_PRESETS,
  MODEL_FORMATS,
  type ModelInfo,
  type ModelFormat,
  type Preprocessing,
  type InputAlignment,
  type Triple,
} from './model-info.js';
export { detectModelFormat, META_KIND, type ModelFileFormat, type DetectedModelFile } from './detect.js';
export { KNOWN_MODELS_BY_SHA256, knownModel, type KnownModel } from './known-models.js';
export {
  loadModelFile,
  describeTfjsModelFile,
  parseDescription,
  parseTemplate,
  parseTriple,
  sidecarPath,
  type InputOverrides,
  type InfoSource,
  type ModelFileOptions,
  type LoadedModelFile,
  type ResolvedDescription,
} from './load.js';
export {
  importTfjsGraphModel,
  readTfjsGraphModel,
  readTfjsWeights,
  convertTfjsGraph,
  runModel,
  halfToFloat,
  floatToHalf,
  KNOWN_TFJS_MODELS,
  type TfjsImportOptions,
  type TfjsGraphModelFiles,
  type TfWeight,
} from './tfjs.js';
export { importOnnxModel, convertOnnx, type OnnxImportOptions } from './onnx.js';
export { importTfliteModel, parseTflite, convertTflite, tfliteToTfGraph, type TfliteModel } from './tflite.js';
export { exportOnnx, saveOnnx, type OnnxExportOptions } from './onnx-export.js';
export { loadFaceApiResNet } from './faceapi.js';
export {
  saveQfm,
  loadQfm,
  encodeQfm,
  decodeQfm,
  readQfmHeader,
  writeFileAtomic,
  packBits,
  unpackBits,
  packerSource,
  updateQfmProvenance,
  QFM_MAGIC,
  QFM_VERSION,
  type SaveQfmOptions,
  type LoadedQfm,
  type PackedWeight,
  type Provenance,
  type QfmMetadata,
  type TensorEntry,
  type ActivationRange,
} from './qfm.js';
export { describeModule, buildModule, type ModuleSpec } from './module-spec.js';
export { resolvePackageFiles, cachedPath, FACE_PIPELINE_FILES, type PackageFile } from './package-files.js';
