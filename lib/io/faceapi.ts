/**
 * Loads face-api's face descriptor weights (a weights-only TF.js manifest,
 * uint8-quantized entries decoded as value = min + scale * q, float32 ones
 * as they are) into the rebuilt FaceApiResNet (lib/models/faceapi-resnet.ts)
 * as a trainable float teacher.
 */
import { resolve } from 'node:path';
import { FaceApiResNet, assignFaceApiWeights, type FaceApiResNetOptions } from '../models/faceapi-resnet.js';
import { readTfjsWeights } from './tfjs.js';

/**
 * Reads face_recognition_model-weights_manifest.json (+ its shard) and
 * returns the model in eval mode, its info.sha256 set to the hash of the
 * files. Errors: E_IO (missing files), E_FORMAT (truncated shard, missing,
 * unknown or misshapen weights).
 */
export async function loadFaceApiResNet(manifestPath: string, opts: FaceApiResNetOptions = {}): Promise<FaceApiResNet> {
  const path = resolve(manifestPath);
  const { weights, sha256 } = await readTfjsWeights(path);
  const m = new FaceApiResNet(opts);
  assignFaceApiWeights(m, weights, path);
  m.info = { ...m.info, sha256 };
  m.eval();
  return m;
}
