/**
 * Face crops for evaluation. The alignment code lives in lib/data/align.ts
 * (lib/eval sits above lib/data); this module re-exports it under its
 * original names so existing imports keep working.
 */
export {
  ARCFACE_TEMPLATE,
  CROP_PRESETS,
  alignByLandmarks,
  alignImage,
  cropBox,
  decodeImage,
  flipHorizontal,
  invertAffine,
  presetBox,
  toRgb,
  umeyama,
  warpAffine,
} from '../data/align.js';
export type { Affine, AlignSpec, Box, CropPreset, RgbImage } from '../data/align.js';
