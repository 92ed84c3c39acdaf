/**
 * Post-training quantization of the face pipeline's detector and landmark
 * networks (int8 weights per output channel, int8 activations per tensor:
 * QuantFace's scheme through quantizeModel), calibrated on photos as the
 * pipeline feeds them:
 * - the detector on each calibration photo decoded and resized to 320x240
 *   exactly as FacePipeline.faces() does;
 * - the landmark net on the 64x64 grey crops of the faces the float
 *   pipeline finds in those photos (the same crop rectangles).
 *
 * Calibrate on photos that are not your evaluation set. composePhotos makes
 * 640x480 group photos (1 to 4 faces at several sizes on plain or blurred
 * backgrounds) from single-face images, so the detector also sees small
 * faces and several faces per photo.
 *
 * ```ts
 * const { detector, landmarks } = await quantizePipelineNetworks({ photos });
 * await saveQfm(detector, 'detector.qfm'); await saveQfm(landmarks, 'landmarks.qfm');
 * const pipe = await loadPipeline({ detector: 'detector.qfm', landmarks: 'landmarks.qfm', recognizer: 'student.qfm' });
 * ```
 */
import sharp from 'sharp';
import { QuantFaceError } from '../errors.js';
import { Rng } from '../tensor.js';
import type { Module } from '../nn/module.js';
import { FACE_PIPELINE_FILES, resolvePackageFiles } from '../io/package-files.js';
import { quantizeModel } from './calibrate.js';
import { DETECTOR_PREPROCESSING, LANDMARK_PREPROCESSING, loadPipeline, loadPipelineNetwork, type PhotoInput } from './pipeline.js';

export interface QuantizePipelineOptions {
  /** Calibration photos (paths, encoded bytes or pixels); not the evaluation set. */
  photos: readonly PhotoInput[];
  /** The float detector (fr_detect.onnx; default: fetched as loadPipeline does). */
  detector?: string;
  /** The float landmark net (fr_landmark.onnx; default: fetched). */
  landmarks?: string;
  /** Weight and activation width (default 8). */
  bits?: number;
  /** At most this many landmark crops (the first ones found; default 2048). */
  maxLandmarkCrops?: number;
  cacheDir?: string;
  onMessage?: (m: string) => void;
  /** Called after each calibration photo. */
  onProgress?: (done: number, total: number) => void;
}

export interface QuantizedPipelineNetworks {
  /** Fake-quantized engine models, ranges frozen (saveQfm them; loadPipeline takes the files). */
  detector: Module;
  landmarks: Module;
  /** Calibration photos used, faces (landmark crops) found in them. */
  photos: number;
  faces: number;
}

/** PTQ of the detector and the landmark net (see the module comment). */
export async function quantizePipelineNetworks(o: QuantizePipelineOptions): Promise<QuantizedPipelineNetworks> {
  if (!o || !Array.isArray(o.photos) || o.photos.length === 0) throw new QuantFaceError('E_ARG', 'quantizePipelineNetworks: give at least one calibration photo');
  const bits = o.bits ?? 8;
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new QuantFaceError('E_ARG', `bits must be an integer in [2, 8] (got ${String(bits)})`);
  const maxCrops = o.maxLandmarkCrops ?? 2048;
  let detPath = o.detector;
  let lmkPath = o.landmarks;
  if (!detPath || !lmkPath) {
    const need = [...(!detPath ? ['detector' as const] : []), ...(!lmkPath ? ['landmarks' as const] : [])];
    const paths = await resolvePackageFiles(need.map((k) => FACE_PIPELINE_FILES[k]), { ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}), ...(o.onMessage ? { onMessage: o.onMessage } : {}) });
    need.forEach((k, i) => (k === 'detector' ? (detPath = paths[i]) : (lmkPath = paths[i])));
  }
  const pipe = await loadPipeline({ detector: detPath!, landmarks: lmkPath!, recognizer: null, precision: 'float' });
  const det: Uint8Array[] = [];
  const lmk: Uint8Array[] = [];
  try {
    for (const [i, p] of o.photos.entries()) {
      const r = await pipe.networkInputs(p);
      det.push(r.detector);
      for (const c of r.landmarks) if (lmk.length < maxCrops) lmk.push(c);
      o.onProgress?.(i + 1, o.photos.length);
    }
  } finally {
    await pipe.dispose();
  }
  if (lmk.length === 0) throw new QuantFaceError('E_NO_FACE', 'quantizePipelineNetworks: the float detector found no face in the calibration photos; the landmark net cannot be calibrated');
  const concat = (xs: Uint8Array[]): Uint8Array => {
    const out = new Uint8Array(xs.reduce((a, x) => a + x.length, 0));
    let at = 0;
    for (const x of xs) {
      out.set(x, at);
      at += x.length;
    }
    return out;
  };
  const dm = (await loadPipelineNetwork(detPath!, 'detector')).model;
  const lm = (await loadPipelineNetwork(lmkPath!, 'landmarks')).model;
  const detector = quantizeModel(dm, { images: concat(det), inputShape: [240, 320, 3], preprocessing: DETECTOR_PREPROCESSING, weightBits: bits, actBits: bits, batchSize: 8 });
  const landmarks = quantizeModel(lm, { images: concat(lmk), inputShape: [64, 64, 1], preprocessing: LANDMARK_PREPROCESSING, weightBits: bits, actBits: bits, batchSize: 64 });
  return { detector, landmarks, photos: det.length, faces: lmk.length };
}

export interface ComposeOptions {
  /** Number of photos (default 100). */
  count?: number;
  width?: number;
  height?: number;
  /** Most faces per photo (default 4). */
  maxFaces?: number;
  seed?: number;
}

/**
 * Group photos (JPEG bytes) composed from single-face images (paths or
 * bytes): per photo 1..maxFaces faces (cycling through the sources in a
 * seeded order), each scaled to a side of 12-60% of the photo height, on a
 * plain grey or a blurred-face background.
 */
export async function composePhotos(sources: readonly (string | Uint8Array)[], o: ComposeOptions = {}): Promise<Buffer[]> {
  if (!sources.length) throw new QuantFaceError('E_ARG', 'composePhotos: give at least one source image');
  const n = o.count ?? 100;
  const W = o.width ?? 640;
  const H = o.height ?? 480;
  const maxFaces = o.maxFaces ?? 4;
  const rng = new Rng(o.seed ?? 0);
  const pick = (k: number): number => Math.floor(rng.uniform() * k);
  const order = sources.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = pick(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  let next = 0;
  const src = (): string | Uint8Array => sources[order[next++ % order.length]!]!;
  const out: Buffer[] = [];
  for (let p = 0; p < n; p++) {
    const faces = 1 + pick(maxFaces);
    const parts: sharp.OverlayOptions[] = [];
    const taken: Array<[number, number, number]> = [];
    for (let f = 0; f < faces; f++) {
      const side = Math.round(H * (faces === 1 ? 0.25 + 0.35 * rng.uniform() : 0.12 + 0.3 * rng.uniform()));
      let x = 0;
      let y = 0;
      let ok = false;
      for (let t = 0; t < 30 && !ok; t++) {
        x = pick(W - side);
        y = pick(H - side);
        ok = taken.every(([a, b, s]) => x + side <= a || a + s <= x || y + side <= b || b + s <= y);
      }
      if (!ok) continue;
      taken.push([x, y, side]);
      parts.push({ input: await sharp(src()).resize(side, side).toBuffer(), left: x, top: y });
    }
    const bg =
      rng.uniform() < 0.5
        ? sharp({ create: { width: W, height: H, channels: 3, background: { r: 60 + pick(160), g: 60 + pick(160), b: 60 + pick(160) } } })
        : sharp(await sharp(src()).resize(W, H, { fit: 'fill' }).blur(25).toBuffer());
    out.push(await bg.composite(parts).jpeg({ quality: 85 }).toBuffer());
  }
  return out;
}
