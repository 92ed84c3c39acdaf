/**
 * Photos in, identities out: face detection, 68 landmarks, similarity
 * alignment and embedding, every network on quantface's runtime.
 *
 * ```ts
 * import { loadPipeline } from 'quantface';
 * const pipe = await loadPipeline({ threads: 2 });       // faceplugin's three networks, fetched once into the cache
 * const faces = await pipe.faces('group.jpg');           // [{ box, score, landmarks5, landmarks68, embedding }]
 * const { similarity, match } = await pipe.verify('a.jpg', 'b.jpg', { threshold: 0.3 });
 * await pipe.dispose();
 * ```
 *
 * Steps (faceplugin-face-recognition-js's own pre- and post-processing,
 * ../shared/models/faceplugin/reference-js, with RGB where it feeds BGR):
 * 1. The photo is decoded through the runtime's bounded path (decode.ts):
 *    header first (limits: bytes, pixels, sides), the decode holds its
 *    estimated memory in the process-wide in-flight budget (budget.ts)
 *    until the photo's faces are embedded; photos over `workPixels` are
 *    shrunk in libvips while decoding (shrink-on-load for JPEG / WebP).
 * 2. Detection: the image resized to 320x240 (libvips, linear), the
 *    detector (fr_detect.onnx: scores and boxes of 4,420 priors, decoded
 *    against the priors inside the graph), score threshold, greedy IoU NMS,
 *    minimum face size, at most maxFaces by score.
 * 3. Landmarks: the box squared (side = its height) and clipped as
 *    reference-js does, cut out and resized to 64x64 grey (bilinear;
 *    area-averaged when shrinking over 2x), /256, the landmark net
 *    (fr_landmark.onnx), 68 points; 5 points = eye centres (mean of 4 eye
 *    points), nose tip, mouth corners (mean of outer and inner lip corner).
 * 4. Alignment: the similarity transform of the 5 points onto the ArcFace
 *    template (lib/data/align.ts landmarkAffine + warpAffine: the warp
 *    eval's landmark alignment uses), 112x112 crop, rounded to bytes.
 * 5. Embedding: the recogniser's FaceModel (its queue batches the crops).
 *
 * Coordinates are pixel-index coordinates of the displayed photo (EXIF
 * orientation applied). Errors are QuantFaceErrors: E_FORMAT (not an image,
 * corrupt), E_SHAPE (too large / small), E_IO (unreadable file), E_BUSY /
 * E_TIMEOUT (budget), E_ARG (options), E_NO_FACE (verify() on a photo
 * without a face), E_CLOSED (after dispose()).
 */
import { open, stat } from 'node:fs/promises';
import sharp from 'sharp';
import { QuantFaceError, ioError } from '../errors.js';
import { binding } from '../binding.js';
import { ARCFACE_TEMPLATE, invertAffine, landmarkAffine, type RgbImage } from '../data/align.js';
import { importOnnxModel } from '../io/onnx.js';
import { QFM_MAGIC, loadQfm, type PackedWeight } from '../io/qfm.js';
import type { Preprocessing } from '../io/model-info.js';
import { FACE_PIPELINE_FILES, resolvePackageFiles } from '../io/package-files.js';
import type { Module } from '../nn/module.js';
import { compileModel, type CompiledModel, type Plan } from './compile.js';
import { EXACT_PIXELS, decodeCost, decodeRegion, readHeader, type CropPlan } from './decode.js';
import { configureBudget, inflightBudget, type BudgetOptions, type Lease } from './budget.js';
import { isImageMagic, rawToRgb, resolveLimits, type InputLimits, type RawImage } from './input.js';
import { loadModel, verify as verifyEmbeddings, type FaceModel, type ModelSource, type VerifyResult } from './index.js';

/** A photo: a file path, encoded image bytes (JPEG, PNG, WebP, ...), or decoded pixels. */
export type PhotoInput = string | Uint8Array | ArrayBuffer | RawImage;

export interface PipelineOptions {
  /** fr_detect.onnx or an int8 .qfm made from it (quantizePipelineNetworks) (default: faceplugin-face-recognition-js 0.0.1's fr_detect.onnx, fetched into the cache). */
  detector?: string | Module;
  /** fr_landmark.onnx or an int8 .qfm made from it (default: as detector). */
  landmarks?: string | Module;
  /** The recogniser: a model file (.qfm student, ONNX, ...) or a loaded FaceModel (default: fr_feature.onnx as detector); null: detection and landmarks only (embeddings empty). */
  recognizer?: ModelSource | FaceModel | null;
  /** Native thread pool size (process-wide). */
  threads?: number;
  /** Detector score threshold (default 0.65, as reference-js). */
  scoreThreshold?: number;
  /** NMS IoU threshold (default 0.4). */
  nmsThreshold?: number;
  /** Smallest face kept, box side in photo pixels (default 20). */
  minFaceSize?: number;
  /** Most faces per photo, highest scores first (default 16). */
  maxFaces?: number;
  /** Cosine threshold of verify() (default: the recogniser's). */
  threshold?: number;
  /** Photos over this many pixels are shrunk while decoding (default 4,000,000). */
  workPixels?: number;
  /** Limits on photos (bytes, pixels, sides, decode time). */
  limits?: InputLimits;
  /** The process-wide in-flight budget (see loadModel). */
  budget?: BudgetOptions;
  /** 'auto' (default): int8 wherever a network is quantized (.qfm files); 'float': every network on its float weights. */
  precision?: 'auto' | 'float';
  /** Cache folder for fetched models (default QUANTFACE_CACHE or ~/.cache/quantface). */
  cacheDir?: string;
  onMessage?: (m: string) => void;
}

export interface FaceBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface DetectedFace {
  /** The detector's box (corners as it outputs them), photo pixels. */
  box: FaceBox;
  /** Detector confidence 0..1. */
  score: number;
  /** Eye on the image's left, other eye, nose tip, left and right mouth corner: [x, y] photo pixels. */
  landmarks5: Array<[number, number]>;
  landmarks68: Array<[number, number]>;
}

export interface Face extends DetectedFace {
  /** The recogniser's embedding (raw, not normalised). */
  embedding: Float32Array;
}

export interface FacesCallOptions {
  maxFaces?: number;
  scoreThreshold?: number;
  minFaceSize?: number;
  /** Skip the recogniser (embedding is then an empty Float32Array). */
  embed?: boolean;
  /** Filled with the milliseconds this call spent in each stage (profiling). */
  timings?: PipelineTimings;
}

/** Milliseconds per stage of one faces() call. */
export interface PipelineTimings {
  /** Header, limits, budget and decode. */
  decode: number;
  /** Resize to 320x240, detector network, box decoding and NMS. */
  detect: number;
  /** Grey crops and the landmark network. */
  landmarks: number;
  /** Similarity warps to 112x112. */
  align: number;
  /** The recogniser (with its queue). */
  embed: number;
}

export type FaceSelect = 'largest' | 'center' | 'score';

export interface PipelineVerifyResult extends VerifyResult {
  /** The face compared in each photo. */
  faces: [Face, Face];
}

const DET_W = 320;
const DET_H = 240;
const LMK = 64;
/** Plan batch sizes: exact up to 8 faces (no padded samples), then powers of two. */
const BUCKETS = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64];

/** One compiled network with an arena per batch bucket; runs are serialised. */
class NetRunner {
  private readonly arenas = new Map<number, { plan: Plan; arena: Uint8Array }>();
  private tail: Promise<unknown> = Promise.resolve();
  readonly per: number;
  constructor(readonly compiled: CompiledModel) {
    this.per = compiled.inputShape.reduce((a, b) => a * b, 1);
  }

  /** Runs inputs (raw u8 in the model's input layout), returns one output row per input. */
  run(inputs: readonly Uint8Array[]): Promise<Float32Array[]> {
    const job = this.tail.then(async () => {
      const out: Float32Array[] = [];
      for (let i = 0; i < inputs.length; i += 64) {
        const part = inputs.slice(i, i + 64);
        const b = BUCKETS.find((x) => x >= part.length)!;
        let a = this.arenas.get(b);
        if (!a) {
          const plan = this.compiled.plan(b);
          a = { plan, arena: this.compiled.newArena(plan) };
          this.arenas.set(b, a);
        }
        const view = this.compiled.inputView(a.plan, a.arena);
        part.forEach((x, k) => view.set(x, k * this.per));
        await this.compiled.run(a.plan, a.arena);
        const o = this.compiled.outputView(a.plan, a.arena);
        const D = this.compiled.outputDim;
        for (let k = 0; k < part.length; k++) out.push(o.slice(k * D, (k + 1) * D));
      }
      return out;
    });
    this.tail = job.catch(() => undefined);
    return job;
  }
}

function checkNumber(v: unknown, name: string, lo: number, hi: number, integer = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (integer && !Number.isInteger(v)))
    throw new QuantFaceError('E_ARG', `${name} must be ${integer ? 'an integer' : 'a number'} in [${lo}, ${hi}] (got ${String(v)})`);
  return v;
}

/** Greedy non-maximum suppression by IoU over boxes sorted by score (descending). Returns kept indices. */
export function nms(boxes: ArrayLike<number>, order: readonly number[], iouThreshold: number): number[] {
  const keep: number[] = [];
  const dead = new Uint8Array(order.length);
  for (let i = 0; i < order.length; i++) {
    if (dead[i]) continue;
    const a = order[i]!;
    keep.push(a);
    const ax1 = boxes[4 * a]!, ay1 = boxes[4 * a + 1]!, ax2 = boxes[4 * a + 2]!, ay2 = boxes[4 * a + 3]!;
    const aa = Math.max(0, ax2 - ax1) * Math.max(0, ay2 - ay1);
    for (let j = i + 1; j < order.length; j++) {
      if (dead[j]) continue;
      const b = order[j]!;
      const bx1 = boxes[4 * b]!, by1 = boxes[4 * b + 1]!, bx2 = boxes[4 * b + 2]!, by2 = boxes[4 * b + 3]!;
      const iw = Math.min(ax2, bx2) - Math.max(ax1, bx1);
      const ih = Math.min(ay2, by2) - Math.max(ay1, by1);
      if (iw <= 0 || ih <= 0) continue;
      const inter = iw * ih;
      const ba = Math.max(0, bx2 - bx1) * Math.max(0, by2 - by1);
      if (inter / (aa + ba - inter) > iouThreshold) dead[j] = 1;
    }
  }
  return keep;
}

/** 68 points (x0, y0, x1, y1, ...) -> 5 (reference-js convert68pts5pts). */
export function landmarks68to5(p: ArrayLike<number>): Array<[number, number]> {
  const m = (...idx: number[]): [number, number] => {
    let x = 0;
    let y = 0;
    for (const i of idx) {
      x += p[2 * i]!;
      y += p[2 * i + 1]!;
    }
    return [x / idx.length, y / idx.length];
  };
  return [m(37, 38, 40, 41), m(43, 44, 46, 47), m(30), m(48, 60), m(54, 64)];
}

/**
 * The w x h rectangle at (rx, ry) of an RGB image resized to size x size
 * grey bytes (0.299 R + 0.587 G + 0.114 B): bilinear (pixel centres, edge
 * clamped), averaged over k x k samples when shrinking by k > 2.
 */
export function cropGrey(img: RgbImage, rx: number, ry: number, rw: number, rh: number, size: number): Uint8Array {
  const out = new Uint8Array(size * size);
  const W = img.width;
  const H = img.height;
  const d = img.data;
  const fx = rw / size;
  const fy = rh / size;
  const k = Math.max(1, Math.ceil(Math.max(fx, fy) / 2));
  const sample = (sx: number, sy: number): number => {
    sx = Math.min(Math.max(sx, 0), W - 1);
    sy = Math.min(Math.max(sy, 0), H - 1);
    const x0 = Math.floor(sx);
    const y0 = Math.floor(sy);
    const x1 = Math.min(x0 + 1, W - 1);
    const y1 = Math.min(y0 + 1, H - 1);
    const ax = sx - x0;
    const ay = sy - y0;
    let g = 0;
    const wts = [0.299, 0.587, 0.114];
    for (let c = 0; c < 3; c++) {
      const v00 = d[(y0 * W + x0) * 3 + c]!, v01 = d[(y0 * W + x1) * 3 + c]!, v10 = d[(y1 * W + x0) * 3 + c]!, v11 = d[(y1 * W + x1) * 3 + c]!;
      g += wts[c]! * ((1 - ay) * ((1 - ax) * v00 + ax * v01) + ay * ((1 - ax) * v10 + ax * v11));
    }
    return g;
  };
  for (let v = 0; v < size; v++)
    for (let u = 0; u < size; u++) {
      let s = 0;
      for (let j = 0; j < k; j++)
        for (let i = 0; i < k; i++) s += sample(rx + (u + (i + 0.5) / k) * fx - 0.5, ry + (v + (j + 0.5) / k) * fy - 0.5);
      out[v * size + u] = Math.min(255, Math.max(0, Math.round(s / (k * k))));
    }
  return out;
}

/**
 * cropGrey of several rectangles ([x, y, w, h] each) in one native call
 * (native/warp.cc, bit-identical): n x size x size grey bytes.
 */
export function greyCrops(img: RgbImage, rects: ReadonlyArray<readonly [number, number, number, number]>, size = LMK): Uint8Array {
  const out = new Uint8Array(rects.length * size * size);
  if (!rects.length) return out;
  const r = new Float64Array(4 * rects.length);
  rects.forEach((x, k) => r.set(x, 4 * k));
  binding.cropGreyU8({ src: img.data, width: img.width, height: img.height, rects: r, size, out });
  return out;
}

/** A decoded photo held in the in-flight budget: pixels at work resolution and the factor back to photo pixels. */
interface Decoded {
  img: RgbImage;
  /** photo pixels per work pixel (x, y). */
  sx: number;
  sy: number;
  lease: Lease;
}

/** The face pipeline. Create with loadPipeline(). */
export class FacePipeline {
  /** null when loaded with recognizer: null (detection and landmarks only). */
  readonly recognizer: FaceModel | null;
  private readonly limits: Required<InputLimits>;
  private readonly opts: Required<Pick<PipelineOptions, 'scoreThreshold' | 'nmsThreshold' | 'minFaceSize' | 'maxFaces' | 'workPixels'>>;
  private thresholdValue: number | undefined;
  private disposed = false;
  private readonly ownsRecognizer: boolean;

  constructor(
    private readonly det: NetRunner,
    private readonly lmk: NetRunner,
    recognizer: FaceModel | null,
    ownsRecognizer: boolean,
    o: PipelineOptions,
  ) {
    this.recognizer = recognizer;
    this.ownsRecognizer = ownsRecognizer;
    this.limits = resolveLimits(o.limits);
    this.opts = {
      scoreThreshold: checkNumber(o.scoreThreshold ?? 0.65, 'scoreThreshold', 0, 1),
      nmsThreshold: checkNumber(o.nmsThreshold ?? 0.4, 'nmsThreshold', 0, 1),
      minFaceSize: checkNumber(o.minFaceSize ?? 20, 'minFaceSize', 0, 1 << 16),
      maxFaces: checkNumber(o.maxFaces ?? 16, 'maxFaces', 1, 1024, true),
      workPixels: checkNumber(o.workPixels ?? EXACT_PIXELS, 'workPixels', 4096, 1 << 30, true),
    };
    if (o.threshold !== undefined) checkNumber(o.threshold, 'threshold', -1, 1);
    this.thresholdValue = o.threshold ?? recognizer?.threshold;
  }

  /** The cosine threshold verify() uses, if known. */
  get threshold(): number | undefined {
    return this.thresholdValue;
  }

  private check(): void {
    if (this.disposed) throw new QuantFaceError('E_CLOSED', 'this pipeline was disposed; load it again');
  }

  /** Decodes a photo under the limits and the in-flight budget (the caller releases the lease). */
  private async decode(photo: PhotoInput, what: string): Promise<Decoded> {
    const budget = inflightBudget();
    if (photo && typeof photo === 'object' && !(photo instanceof Uint8Array) && !(photo instanceof ArrayBuffer)) {
      if (!('data' in photo && 'width' in photo && 'height' in photo)) throw new QuantFaceError('E_ARG', `${what} must be a file path, image bytes or { data, width, height }`);
      const img = rawToRgb(photo, this.limits, what);
      const lease = await budget.acquire({ bytes: img.width * img.height * 3, pixels: 0 }, what);
      return { img, sx: 1, sy: 1, lease };
    }
    let bytes: Uint8Array | string;
    let name = what;
    if (typeof photo === 'string') {
      let st;
      try {
        st = await stat(photo);
      } catch (e) {
        throw ioError(e, photo);
      }
      if (!st.isFile()) throw ioError(Object.assign(new Error('not a file'), { code: 'EISDIR' }), photo);
      if (st.size > this.limits.maxBytes) throw new QuantFaceError('E_SHAPE', `${photo} is ${st.size} bytes; the limit is ${this.limits.maxBytes}`, { path: photo });
      if (st.size === 0) throw new QuantFaceError('E_FORMAT', `${photo} is empty`, { path: photo });
      bytes = photo;
      name = photo;
    } else if (photo instanceof Uint8Array || photo instanceof ArrayBuffer) {
      bytes = photo instanceof ArrayBuffer ? new Uint8Array(photo) : photo;
      if (!isImageMagic(bytes)) throw new QuantFaceError('E_FORMAT', `${what} is not an encoded image (JPEG, PNG, WebP, GIF, TIFF, AVIF); pass raw pixels as { data, width, height }`);
    } else throw new QuantFaceError('E_ARG', `${what} must be a file path, image bytes or { data, width, height } (got ${photo === null ? 'null' : typeof photo})`);
    const h = await readHeader(bytes, this.limits, name);
    const W = h.dispWidth;
    const H = h.dispHeight;
    const f = W * H > this.opts.workPixels ? Math.sqrt(this.opts.workPixels / (W * H)) : 1;
    const outWidth = Math.max(1, Math.round(W * f));
    const outHeight = Math.max(1, Math.round(H * f));
    const plan: CropPlan = {
      region: { x0: 0, y0: 0, x1: W, y1: H },
      outWidth,
      outHeight,
      shrink: f < 1,
      finish: () => {
        throw new QuantFaceError('E_INTERNAL', 'pipeline decode plans are not finished as crops');
      },
    };
    const lease = await budget.acquire({ bytes: decodeCost(h, plan), pixels: h.width * h.height }, name);
    try {
      this.check();
      const img = await decodeRegion(bytes, h, plan, this.limits, name, Math.ceil(this.limits.decodeTimeoutMs / 1000));
      return { img, sx: W / img.width, sy: H / img.height, lease };
    } catch (e) {
      lease.release();
      throw e;
    }
  }

  /** Detector boxes (work-image pixels, corners), scores, after threshold, NMS, size and count limits. */
  private async detect(img: RgbImage, o: Required<Pick<FacesCallOptions, 'maxFaces' | 'scoreThreshold' | 'minFaceSize'>>, sx: number, sy: number, small?: Uint8Array): Promise<Array<{ box: [number, number, number, number]; score: number }>> {
    const [out] = await this.det.run([small ?? (await FacePipeline.detectorInput(img))]);
    const P = out!.length / 6;
    const scores = out!.subarray(0, 2 * P);
    const rel = out!.subarray(2 * P);
    const W = img.width;
    const H = img.height;
    const cand: number[] = [];
    for (let i = 0; i < P; i++) if (scores[2 * i + 1]! >= o.scoreThreshold) cand.push(i);
    cand.sort((a, b) => scores[2 * b + 1]! - scores[2 * a + 1]! || a - b);
    const top = cand.length > 750 ? cand.slice(0, 750) : cand;
    // the boxes of the candidates only (work pixels), non-empty ones, in score order
    const boxes = new Float64Array(4 * top.length);
    const valid: number[] = [];
    for (const i of top) {
      const x1 = rel[4 * i]! * W, y1 = rel[4 * i + 1]! * H, x2 = rel[4 * i + 2]! * W, y2 = rel[4 * i + 3]! * H;
      if (!(x2 > x1 && y2 > y1)) continue;
      const k = valid.length;
      boxes[4 * k] = x1;
      boxes[4 * k + 1] = y1;
      boxes[4 * k + 2] = x2;
      boxes[4 * k + 3] = y2;
      valid.push(i);
    }
    const kept = nms(boxes, valid.map((_, k) => k), this.opts.nmsThreshold);
    const res: Array<{ box: [number, number, number, number]; score: number }> = [];
    for (const k of kept) {
      const b: [number, number, number, number] = [boxes[4 * k]!, boxes[4 * k + 1]!, boxes[4 * k + 2]!, boxes[4 * k + 3]!];
      if (Math.min((b[2] - b[0]) * sx, (b[3] - b[1]) * sy) < o.minFaceSize) continue;
      res.push({ box: b, score: scores[2 * valid[k]! + 1]! });
      if (res.length >= o.maxFaces) break;
    }
    return res;
  }

  /** The detector's input: the photo resized to 320x240 RGB bytes (libvips, linear). */
  private static async detectorInput(img: RgbImage): Promise<Uint8Array> {
    let small: Buffer;
    try {
      small = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).resize(DET_W, DET_H, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
    } catch (e) {
      throw new QuantFaceError('E_FORMAT', `cannot resize the photo for detection (${(e as Error).message})`, { cause: e });
    }
    return new Uint8Array(small.buffer, small.byteOffset, small.byteLength);
  }

  /**
   * The detector's input for a photo and the landmark net's 64x64 grey
   * inputs of the faces this pipeline finds in it, exactly as faces() feeds
   * them (post-training calibration of the two networks).
   */
  async networkInputs(photo: PhotoInput, o: Omit<FacesCallOptions, 'embed'> = {}): Promise<{ detector: Uint8Array; landmarks: Uint8Array[] }> {
    this.check();
    const d = await this.decode(photo, 'the photo');
    try {
      const small = await FacePipeline.detectorInput(d.img);
      const dets = await this.detect(d.img, { maxFaces: o.maxFaces ?? this.opts.maxFaces, scoreThreshold: o.scoreThreshold ?? this.opts.scoreThreshold, minFaceSize: o.minFaceSize ?? this.opts.minFaceSize }, d.sx, d.sy, small);
      const all = greyCrops(d.img, dets.map((x) => FacePipeline.landmarkRect(x.box, d.img.width, d.img.height)));
      const landmarks = dets.map((_, k) => all.slice(k * LMK * LMK, (k + 1) * LMK * LMK));
      return { detector: Uint8Array.from(small), landmarks };
    } finally {
      d.lease.release();
    }
  }

  /** The landmark net's 64x64 grey input rectangle for a detector box (reference-js: squared on the height, clipped, moved inside). */
  private static landmarkRect(b: readonly number[], W: number, H: number): [number, number, number, number] {
    const side = b[3]! - b[1]!;
    const cx = (b[0]! + b[2]!) / 2;
    const cy = (b[1]! + b[3]!) / 2;
    const x1 = Math.max(0, cx - side / 2);
    const y1 = Math.max(0, cy - side / 2);
    const x2 = Math.min(W - 1, cx + side / 2);
    const y2 = Math.min(H - 1, cy + side / 2);
    const x = Math.trunc(x1);
    const y = Math.trunc(y1);
    const w = Math.max(1, Math.abs(Math.trunc(x2) - x));
    const h = Math.max(1, Math.abs(Math.trunc(y2) - y));
    return [x, y, w, h];
  }

  /**
   * Detects, landmarks, aligns and embeds every face of a photo (highest
   * detector scores first). A photo without faces gives [].
   */
  async faces(photo: PhotoInput, o: FacesCallOptions = {}): Promise<Face[]> {
    this.check();
    const call = {
      maxFaces: o.maxFaces === undefined ? this.opts.maxFaces : checkNumber(o.maxFaces, 'maxFaces', 1, 1024, true),
      scoreThreshold: o.scoreThreshold === undefined ? this.opts.scoreThreshold : checkNumber(o.scoreThreshold, 'scoreThreshold', 0, 1),
      minFaceSize: o.minFaceSize === undefined ? this.opts.minFaceSize : checkNumber(o.minFaceSize, 'minFaceSize', 0, 1 << 16),
    };
    const tm = o.timings;
    let t0 = tm ? performance.now() : 0;
    const lap = (k: keyof PipelineTimings): void => {
      if (!tm) return;
      const t = performance.now();
      tm[k] = t - t0;
      t0 = t;
    };
    if (tm) Object.assign(tm, { decode: 0, detect: 0, landmarks: 0, align: 0, embed: 0 });
    const d = await this.decode(photo, 'the photo');
    lap('decode');
    try {
      this.check();
      const { img, sx, sy } = d;
      const dets = await this.detect(img, call, sx, sy);
      lap('detect');
      if (!dets.length) return [];
      const rects = dets.map((x) => FacePipeline.landmarkRect(x.box, img.width, img.height));
      const grey = greyCrops(img, rects);
      const lms = await this.lmk.run(rects.map((_, k) => grey.subarray(k * LMK * LMK, (k + 1) * LMK * LMK)));
      lap('landmarks');
      const rec = o.embed === false ? null : this.recognizer;
      const size = rec?.inputSize ?? 112;
      const per = size * size * 3;
      const crops = new Uint8Array(rec ? dets.length * per : 0);
      const inverse = new Float64Array(6 * dets.length);
      const faces: DetectedFace[] = dets.map((det, k) => {
        const [x, y, w, h] = rects[k]!;
        const raw = lms[k]!;
        const p68 = new Float64Array(136);
        for (let i = 0; i < 68; i++) {
          p68[2 * i] = raw[2 * i]! * w + x;
          p68[2 * i + 1] = raw[2 * i + 1]! * h + y;
        }
        const p5 = landmarks68to5(p68);
        const m = landmarkAffine(p5.flat(), ARCFACE_TEMPLATE, size);
        if (rec) inverse.set(invertAffine(m), 6 * k);
        const b = det.box;
        return {
          box: { x: b[0] * sx, y: b[1] * sy, width: (b[2] - b[0]) * sx, height: (b[3] - b[1]) * sy },
          score: det.score,
          landmarks5: p5.map(([px, py]) => [px * sx, py * sy] as [number, number]),
          landmarks68: Array.from({ length: 68 }, (_, i) => [p68[2 * i]! * sx, p68[2 * i + 1]! * sy] as [number, number]),
        };
      });
      // every face's crop in one native call (align.ts warpAffine + roundCrop, bit for bit)
      if (rec) binding.warpAffineU8({ src: img.data, width: img.width, height: img.height, matrices: inverse, size, out: crops });
      lap('align');
      this.check();
      const emb = rec ? await rec.embedCrops(crops, dets.length) : faces.map(() => new Float32Array(0));
      lap('embed');
      return faces.map((f, k) => ({ ...f, embedding: emb[k]! }));
    } finally {
      d.lease.release();
    }
  }

  /** The face of a list that select picks (photo size for 'center'). */
  static pick(faces: readonly Face[], select: FaceSelect, width?: number, height?: number): Face | undefined {
    if (!faces.length) return undefined;
    const area = (f: Face): number => f.box.width * f.box.height;
    if (select === 'score') return faces.reduce((a, b) => (b.score > a.score ? b : a));
    if (select === 'center' && width !== undefined && height !== undefined) {
      const dist = (f: Face): number => (f.box.x + f.box.width / 2 - width / 2) ** 2 + (f.box.y + f.box.height / 2 - height / 2) ** 2;
      return faces.reduce((a, b) => (dist(b) < dist(a) ? b : a));
    }
    return faces.reduce((a, b) => (area(b) > area(a) ? b : a));
  }

  /**
   * Compares the main face of two photos (the largest by default) with the
   * threshold given, else the pipeline's / recogniser's. E_NO_FACE when a
   * photo has no face.
   */
  async verify(a: PhotoInput, b: PhotoInput, o: { threshold?: number; select?: Exclude<FaceSelect, 'center'> } = {}): Promise<PipelineVerifyResult> {
    const t = o.threshold ?? this.thresholdValue;
    if (t === undefined)
      throw new QuantFaceError('E_ARG', 'verify: no cosine threshold: pass one (verify(a, b, { threshold }) or loadPipeline({ threshold })), or use a recogniser whose model file stores one');
    checkNumber(t, 'threshold', -1, 1);
    if (!this.recognizer) throw new QuantFaceError('E_ARG', 'verify: this pipeline was loaded without a recogniser');
    const select = o.select ?? 'largest';
    const [fa, fb] = await Promise.all([this.faces(a), this.faces(b)]);
    const pa = FacePipeline.pick(fa, select);
    const pb = FacePipeline.pick(fb, select);
    if (!pa || !pb) throw new QuantFaceError('E_NO_FACE', `verify: no face found in the ${!pa ? 'first' : 'second'} photo`);
    return { ...verifyEmbeddings(pa.embedding, pb.embedding, t), faces: [pa, pb] };
  }

  /** Releases the networks' buffers (and the recogniser when the pipeline loaded it). */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.det.compiled.clearPlans();
    this.lmk.compiled.clearPlans();
    if (this.ownsRecognizer) await this.recognizer?.dispose();
  }
}

/** The detector's and the landmark net's input preprocessing (reference-js). */
export const DETECTOR_PREPROCESSING: Preprocessing = { colorOrder: 'RGB', normalize: { mean: 127, std: 128 } };
export const LANDMARK_PREPROCESSING: Preprocessing = { colorOrder: 'RGB', normalize: { mean: 0, std: 256 } };

/** Whether a file starts with the .qfm magic (E_IO when it cannot be read). */
async function isQfmFile(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
    const b = Buffer.alloc(QFM_MAGIC.length);
    const { bytesRead } = await fh.read(b, 0, b.length, 0);
    return bytesRead === b.length && QFM_MAGIC.every((x, i) => b[i] === x);
  } catch (e) {
    throw ioError(e, path);
  } finally {
    await fh?.close();
  }
}

/**
 * A detector or landmark network as an engine Module: an ONNX file
 * (imported, fp32) or a .qfm file (e.g. the int8 networks of
 * quantizePipelineNetworks; its packed integer weights are used as stored).
 */
export async function loadPipelineNetwork(src: string | Module, which: 'detector' | 'landmarks'): Promise<{ model: Module; packedWeight?: (name: string) => PackedWeight | undefined }> {
  if (typeof src !== 'string') return { model: src };
  if (await isQfmFile(src)) {
    const q = await loadQfm(src);
    return { model: q.model, packedWeight: (n) => q.packedWeight(n) };
  }
  const pre = which === 'detector' ? DETECTOR_PREPROCESSING : LANDMARK_PREPROCESSING;
  return { model: await importOnnxModel(src, { ...(which === 'detector' ? { outputNames: ['scores', 'boxes'] } : {}), preprocessing: pre }) };
}

/** Imports and compiles the detector (two outputs packed: scores then boxes). */
async function compileDetector(src: string | Module, precision: 'auto' | 'float'): Promise<CompiledModel> {
  const { model, packedWeight } = await loadPipelineNetwork(src, 'detector');
  const c = compileModel(model, { precision, inputShape: [DET_H, DET_W, 3], preprocessing: DETECTOR_PREPROCESSING, ...(packedWeight ? { packedWeight } : {}) });
  if (c.outputDim % 6 !== 0) throw new QuantFaceError('E_SHAPE', `the detector outputs ${c.outputDim} values per image; scores [P, 2] and boxes [P, 4] are expected`);
  return c;
}

async function compileLandmarks(src: string | Module, precision: 'auto' | 'float'): Promise<CompiledModel> {
  const { model, packedWeight } = await loadPipelineNetwork(src, 'landmarks');
  const c = compileModel(model, { precision, inputShape: [LMK, LMK, 1], preprocessing: LANDMARK_PREPROCESSING, ...(packedWeight ? { packedWeight } : {}) });
  if (c.outputDim !== 136) throw new QuantFaceError('E_SHAPE', `the landmark net outputs ${c.outputDim} values; 68 x, y pairs (136) are expected`);
  return c;
}

function isFaceModel(x: unknown): x is FaceModel {
  return !!x && typeof x === 'object' && typeof (x as FaceModel).embedCrops === 'function' && typeof (x as FaceModel).inputSize === 'number';
}

/**
 * Loads the face pipeline. Networks not given come from
 * faceplugin-face-recognition-js 0.0.1, fetched once into the cache with
 * `npm pack` and checked by SHA-256 (lib/io/package-files.ts).
 */
export async function loadPipeline(o: PipelineOptions = {}): Promise<FacePipeline> {
  if (o.threads !== undefined) {
    checkNumber(o.threads, 'threads', 1, 1024, true);
    binding.setThreads(o.threads);
  }
  if (o.budget !== undefined) configureBudget(o.budget);
  const need = (['detector', 'landmarks', 'recognizer'] as const).filter((k) => o[k] === undefined);
  const fetched = new Map<string, string>();
  if (need.length) {
    const paths = await resolvePackageFiles(need.map((k) => FACE_PIPELINE_FILES[k]), { ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}), ...(o.onMessage ? { onMessage: o.onMessage } : {}) });
    need.forEach((k, i) => fetched.set(k, paths[i]!));
  }
  const precision = o.precision ?? 'auto';
  if (precision !== 'auto' && precision !== 'float') throw new QuantFaceError('E_ARG', `precision must be 'auto' or 'float' (got ${String(precision)})`);
  const det = new NetRunner(await compileDetector(o.detector ?? fetched.get('detector')!, precision));
  const lmk = new NetRunner(await compileLandmarks(o.landmarks ?? fetched.get('landmarks')!, precision));
  const r = o.recognizer === undefined ? fetched.get('recognizer')! : o.recognizer;
  const own = r !== null && !isFaceModel(r);
  const rec = r === null ? null : isFaceModel(r) ? r : await loadModel(r, { ...(o.precision ? { precision: o.precision } : {}), ...(o.limits ? { limits: o.limits } : {}) });
  return new FacePipeline(det, lmk, rec, own, o);
}
