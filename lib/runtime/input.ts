/**
 * Inputs of the runtime: what `embed()` accepts and how it becomes a model
 * input crop (size x size x 3 RGB bytes).
 *
 * - a string: an image file path (JPEG, PNG, WebP, or anything else sharp reads);
 * - a Uint8Array / Buffer / ArrayBuffer: the bytes of an encoded image, or
 *   a raw RGB crop of exactly size*size*3 bytes (already aligned);
 * - a Float32Array of size*size*3 values 0..255 (an aligned crop, as
 *   lib/data's alignment produces; rounded to bytes);
 * - { data, width, height, channels? }: decoded pixels (1, 3 or 4 channels,
 *   8-bit) of any size, aligned like a decoded file.
 *
 * Encoded images and decoded pixels are aligned with lib/data's presets
 * (`none`: the whole square image is the face crop; `ffhq`; `lfw-funneled`;
 * a box; 5 landmarks). Limits guard servers: encoded size, pixel count
 * and sides. Every failure is a QuantFaceError: E_FORMAT (not an image,
 * corrupt), E_SHAPE (too large, wrong raw size, not square for `none`),
 * E_IO (cannot read the file), E_ARG (bad option).
 */
import { stat } from 'node:fs/promises';
import { QuantFaceError, ioError } from '../errors.js';
import { alignImage, toRgb, type AlignSpec, type CropPreset, type RgbImage } from '../data/align.js';
import { parseAlign } from '../data/dataset.js';
import { checkDims, decodeCost, decodeRegion, hasShrinkOnLoad, planCrop, readHeader, type CropPlan, type ImageHeader } from './decode.js';
import type { Cost } from './budget.js';

/** Decoded 8-bit pixels. */
export interface RawImage {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** 1 (grey), 3 (RGB) or 4 (RGBA). Default 3. */
  channels?: 1 | 3 | 4;
}

/**
 * A face given by its 5 landmarks in a larger image: `image` (a file path,
 * encoded bytes or decoded pixels) is warped by a similarity transform
 * that maps `landmarks` onto the model's 5-point template (its recorded
 * alignment, else the ArcFace template), as `quantface eval --align
 * landmarks` does, through the same bounded region decode.
 *
 * `landmarks`: 10 numbers x1, y1, ..., x5, y5 (left eye, right eye, nose
 * tip, left and right mouth corner, as seen in the image) in pixel-index
 * coordinates (pixel i is centred on i, as cv2 and insightface's / MTCNN's
 * detectors give them; a landmarks file of `quantface eval`, whose pixel i
 * spans [i, i+1], is shifted by -0.5 when read).
 */
export interface FaceInput {
  image: string | Uint8Array | ArrayBuffer | RawImage;
  landmarks: ArrayLike<number>;
}

export type EmbedInput = string | Uint8Array | ArrayBuffer | Float32Array | RawImage | FaceInput;

/** True for a { image, landmarks } input. */
export function isFaceInput(x: unknown): x is FaceInput {
  return typeof x === 'object' && x !== null && !ArrayBuffer.isView(x) && !(x instanceof ArrayBuffer) && 'landmarks' in x && 'image' in x;
}

/**
 * Splits a { image, landmarks } input into its image and a landmarks
 * alignment onto `template` (points of a 112x112 crop, scaled to the model's
 * size by the warp). Bad landmarks: E_ARG (not numbers, not finite, not an
 * array), E_SHAPE (not 10 numbers); coincident or degenerate ones are
 * refused by the warp (E_ARG).
 */
export function faceInputSpec(x: FaceInput, template: readonly (readonly [number, number])[] | undefined, what: string): { image: EmbedInput; align: AlignSpec } {
  const lm = x.landmarks as unknown;
  const arrayLike = Array.isArray(lm) || (ArrayBuffer.isView(lm) && !(lm instanceof DataView));
  if (!arrayLike) throw new QuantFaceError('E_ARG', `${what}: landmarks must be an array of 10 numbers [x1, y1, ..., x5, y5] (got ${lm === null ? 'null' : typeof lm})`);
  const a = lm as ArrayLike<unknown>;
  if (a.length !== 10) throw new QuantFaceError('E_SHAPE', `${what}: landmarks must be 10 numbers (5 points x, y: eyes, nose tip, mouth corners); got ${a.length}`);
  const pts = new Float64Array(10);
  for (let i = 0; i < 10; i++) {
    const v = a[i];
    if (typeof v !== 'number' && typeof v !== 'bigint') throw new QuantFaceError('E_ARG', `${what}: landmark ${i} is not a number (${typeof v})`);
    const n = Number(v);
    if (!Number.isFinite(n)) throw new QuantFaceError('E_ARG', `${what}: landmark ${i} is not a finite number (${String(v)})`);
    pts[i] = n;
  }
  const img = x.image as unknown;
  if (img instanceof Float32Array) throw new QuantFaceError('E_ARG', `${what}: a Float32Array is an aligned crop; landmarks need the image the face was found in (a path, encoded bytes or { data, width, height })`);
  if ((img instanceof Uint8Array || img instanceof ArrayBuffer) && !isImageMagic(img instanceof ArrayBuffer ? new Uint8Array(img) : img))
    throw new QuantFaceError('E_FORMAT', `${what}: with landmarks, bytes must be an encoded image (JPEG, PNG, WebP, ...), not a raw crop; pass decoded pixels as { data, width, height }`);
  if (isFaceInput(img)) throw new QuantFaceError('E_ARG', `${what}: image must be a path, encoded bytes or { data, width, height }, not another { image, landmarks }`);
  return { image: img as EmbedInput, align: { kind: 'landmarks', landmarks: pts, ...(template ? { template } : {}) } };
}

/**
 * Landmarks that all lie far outside the image (more than the distance
 * between the eyes and mouth beyond every edge) cannot belong to a face in
 * it: refused (E_ARG) rather than embedding a black crop.
 */
export function checkLandmarksInImage(spec: AlignSpec, W: number, H: number, what: string): void {
  if (spec.kind !== 'landmarks') return;
  const lm = spec.landmarks;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i + 1 < lm.length; i += 2) { x0 = Math.min(x0, lm[i]!); x1 = Math.max(x1, lm[i]!); y0 = Math.min(y0, lm[i + 1]!); y1 = Math.max(y1, lm[i + 1]!); }
  const margin = Math.max(x1 - x0, y1 - y0);
  if (x1 < -margin || y1 < -margin || x0 > W - 1 + margin || y0 > H - 1 + margin)
    throw new QuantFaceError('E_ARG', `${what}: the landmarks (x ${x0.toFixed(1)}..${x1.toFixed(1)}, y ${y0.toFixed(1)}..${y1.toFixed(1)}) lie outside the ${W}x${H} image`);
}

/** How to cut the face crop out of an image: a preset name, `box:x,y,side`, or an AlignSpec object (landmarks per image). */
export type AlignInput = CropPreset | string | AlignSpec;

export interface InputLimits {
  /** Largest encoded image, bytes. Default 20 MiB. */
  maxBytes?: number;
  /** Largest decoded image, pixels (width x height). Default 40 megapixels. */
  maxPixels?: number;
  /** Largest side, pixels. Default 16384. */
  maxSide?: number;
  /** Smallest side, pixels. Default 16. */
  minSide?: number;
  /** Largest total of source pixels in one embed() call (images x pixels). Default 200 M. */
  maxRequestPixels?: number;
  /** Longest decode of one image, ms (libvips stops it; E_TIMEOUT). Default 20,000. */
  decodeTimeoutMs?: number;
}

const DEFAULT_LIMITS: Required<InputLimits> = { maxBytes: 20 << 20, maxPixels: 40_000_000, maxSide: 16384, minSide: 16, maxRequestPixels: 200_000_000, decodeTimeoutMs: 20_000 };

export function resolveLimits(l: InputLimits | undefined): Required<InputLimits> {
  const r = { ...DEFAULT_LIMITS, ...(l ?? {}) };
  for (const [k, v] of Object.entries(r)) if (!(Number.isInteger(v) && v > 0)) throw new QuantFaceError('E_ARG', `limits.${k} must be a positive integer (got ${String(v)})`);
  return r;
}

/** Parses an alignment option into lib/data's AlignSpec. */
export function resolveAlign(a: AlignInput | undefined): AlignSpec {
  if (a === undefined) return { kind: 'preset', preset: 'none' };
  if (typeof a === 'object' && a !== null && (a.kind === 'landmarks' || a.kind === 'box' || a.kind === 'preset')) {
    if (a.kind === 'landmarks' && !(a.landmarks && a.landmarks.length === 10)) throw new QuantFaceError('E_ARG', 'align: landmarks needs 10 numbers (5 x, y points)');
    return a;
  }
  const d = parseAlign(a as string);
  if (d.kind === 'landmarks') throw new QuantFaceError('E_ARG', "align: a landmarks file is per dataset; pass { kind: 'landmarks', landmarks: [x1, y1, ..., x5, y5] } per image");
  return d;
}

/** True when the bytes start like an encoded image (JPEG, PNG, WebP, GIF, TIFF, AVIF / HEIF). */
export function isImageMagic(b: Uint8Array): boolean {
  if (b.length < 4) return false;
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return true; // JPEG
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return true; // PNG
  const s4 = String.fromCharCode(b[0]!, b[1]!, b[2]!, b[3]!);
  if (s4 === 'RIFF' || s4 === 'GIF8') return true; // WebP / GIF
  if ((b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a) || (b[0] === 0x4d && b[1] === 0x4d && b[3] === 0x2a)) return true; // TIFF
  if (b.length >= 12 && String.fromCharCode(b[4]!, b[5]!, b[6]!, b[7]!) === 'ftyp') return true; // AVIF / HEIF
  return false;
}

/** Rounds a float crop (0..255) to bytes: round half to even, clamped (NaN -> 0). */
export function roundCrop(f: Float32Array, out: Uint8Array): Uint8Array {
  for (let i = 0; i < out.length; i++) {
    const v = f[i]!;
    // round half to even, clamp to 0..255 (NaN -> 0)
    let r = Math.round(v);
    if (r - v === 0.5 && r % 2 !== 0) r -= 1;
    out[i] = r > 255 ? 255 : r > 0 ? r : 0;
  }
  return out;
}

/** Checks decoded pixels and expands them to RGB. */
export function rawToRgb(input: RawImage, limits: Required<InputLimits>, what: string): RgbImage {
  const { data, width, height } = input;
  const ch = input.channels ?? 3;
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) throw new QuantFaceError('E_ARG', `${what}: data must be a Uint8Array of 8-bit pixels`);
  if (![1, 3, 4].includes(ch)) throw new QuantFaceError('E_ARG', `${what}: channels must be 1, 3 or 4 (got ${String(ch)})`);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) throw new QuantFaceError('E_ARG', `${what}: width and height must be positive integers`);
  if (data.length !== width * height * ch) throw new QuantFaceError('E_SHAPE', `${what}: ${data.length} bytes for ${width}x${height}x${ch} pixels`);
  checkDims(width, height, limits, what);
  const u8 = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { data: ch === 3 ? u8 : toRgb(u8, width, height, ch), width, height };
}

/** Synchronous form of prepareInput for raw crops and decoded pixels (no file reading, no decoding, no pre-shrink). */
export function prepareInputSync(input: EmbedInput, o: PrepareOptions, index?: number): Uint8Array {
  const what = index === undefined ? 'the input image' : `input ${index}`;
  const per = o.size * o.size * 3;
  if (input instanceof Float32Array) {
    if (input.length !== per) throw new QuantFaceError('E_SHAPE', `${what}: a Float32Array input must be an aligned ${o.size}x${o.size}x3 crop (${per} values), got ${input.length}`);
    return roundCrop(input, new Uint8Array(per));
  }
  if (input instanceof Uint8Array) {
    if (!isImageMagic(input) && input.length === per) return Uint8Array.from(input);
    throw new QuantFaceError('E_ARG', `${what}: embedSync takes raw ${o.size}x${o.size}x3 crops or { data, width, height } pixels; use embed() for encoded images`);
  }
  if (input && typeof input === 'object' && !(input instanceof ArrayBuffer) && 'data' in input && 'width' in input && 'height' in input) {
    const img = rawToRgb(input, o.limits, what);
    if (o.align.kind === 'preset' && o.align.preset === 'none' && img.width !== img.height)
      throw new QuantFaceError('E_SHAPE', `${what} is ${img.width}x${img.height}; alignment 'none' needs a square face crop`);
    checkLandmarksInImage(o.align, img.width, img.height, what);
    let f: Float32Array;
    try {
      f = alignImage(img, o.align, o.size);
    } catch (e) {
      throw alignError(e, what);
    }
    return roundCrop(f, new Uint8Array(per));
  }
  throw new QuantFaceError('E_ARG', `${what}: embedSync takes raw crops or { data, width, height } pixels; use embed() for files and encoded images`);
}

export interface PrepareOptions {
  size: number;
  align: AlignSpec;
  limits: Required<InputLimits>;
}

/**
 * One input after inspection: either its crop already (raw crops, decoded
 * pixels) or an encoded image whose header was read and whose decode is
 * planned (cost: what the decode will hold, for the in-flight budget).
 */
export type InspectedInput =
  | { kind: 'crop'; crop: Uint8Array }
  | { kind: 'encoded'; what: string; bytes: Uint8Array | string; header: ImageHeader; plan: CropPlan; cost: Cost };

function alignError(e: unknown, what: string): QuantFaceError {
  if (e instanceof QuantFaceError) return e;
  return new QuantFaceError('E_ARG', `${what}: cannot align (${(e as Error).message})`, { cause: e });
}

function checkSquare(spec: AlignSpec, w: number, h: number, what: string): void {
  if (spec.kind === 'preset' && spec.preset === 'none' && w !== h)
    throw new QuantFaceError('E_SHAPE', `${what} is ${w}x${h}; alignment 'none' needs a square face crop (use align 'ffhq', 'lfw-funneled', a box or landmarks)`);
}

/**
 * First step of prepareInput: reads files and image headers (no pixels are
 * decoded), checks the limits and plans the decode; raw crops and decoded
 * pixels are aligned at once.
 */
export async function inspectInput(input: EmbedInput, o: PrepareOptions, index?: number): Promise<InspectedInput> {
  const what = index === undefined ? 'the input image' : `input ${index}`;
  const per = o.size * o.size * 3;
  let bytes: Uint8Array | string;
  let name = what;
  if (typeof input === 'string') {
    let st;
    try {
      st = await stat(input);
    } catch (e) {
      throw ioError(e, input);
    }
    if (!st.isFile()) throw ioError(Object.assign(new Error('not a file'), { code: 'EISDIR' }), input);
    if (st.size > o.limits.maxBytes) throw new QuantFaceError('E_SHAPE', `${input} is ${st.size} bytes; the limit is ${o.limits.maxBytes}`, { path: input });
    if (st.size === 0) throw new QuantFaceError('E_FORMAT', `${input} is empty`, { path: input });
    bytes = input; // libvips reads the file itself, as far as the region needs: the file is not held in memory
    name = input;
  } else if (input instanceof Float32Array) {
    if (input.length !== per) throw new QuantFaceError('E_SHAPE', `${what}: a Float32Array input must be an aligned ${o.size}x${o.size}x3 crop (${per} values), got ${input.length}`);
    return { kind: 'crop', crop: roundCrop(input, new Uint8Array(per)) };
  } else if (input instanceof Uint8Array || input instanceof ArrayBuffer) {
    bytes = input instanceof ArrayBuffer ? new Uint8Array(input) : input;
    if (!isImageMagic(bytes)) {
      if (bytes.length === per) return { kind: 'crop', crop: Uint8Array.from(bytes) };
      throw new QuantFaceError('E_FORMAT', `${what} is neither an encoded image (JPEG, PNG, WebP, ...) nor a raw ${o.size}x${o.size}x3 RGB crop (${per} bytes); got ${bytes.length} bytes`);
    }
  } else if (input && typeof input === 'object' && 'data' in input && 'width' in input && 'height' in input) {
    const img = rawToRgb(input, o.limits, what);
    checkSquare(o.align, img.width, img.height, what);
    checkLandmarksInImage(o.align, img.width, img.height, what);
    let f: Float32Array;
    try {
      f = alignImage(img, o.align, o.size);
    } catch (e) {
      throw alignError(e, what);
    }
    return { kind: 'crop', crop: roundCrop(f, new Uint8Array(per)) };
  } else {
    throw new QuantFaceError('E_ARG', `${what} must be a file path, image bytes, a raw RGB crop or { data, width, height } (got ${input === null ? 'null' : typeof input})`);
  }
  const header = await readHeader(bytes, o.limits, name);
  checkSquare(o.align, header.dispWidth, header.dispHeight, name);
  checkLandmarksInImage(o.align, header.dispWidth, header.dispHeight, name);
  let plan: CropPlan;
  try {
    plan = planCrop(o.align, header.dispWidth, header.dispHeight, o.size, hasShrinkOnLoad(header));
  } catch (e) {
    throw alignError(e, name);
  }
  return { kind: 'encoded', what: name, bytes, header, plan, cost: { bytes: decodeCost(header, plan), pixels: header.width * header.height } };
}

/** Second step of prepareInput: decodes the planned region and aligns it. */
export async function finishInput(p: InspectedInput, o: PrepareOptions): Promise<Uint8Array> {
  if (p.kind === 'crop') return p.crop;
  const win = await decodeRegion(p.bytes, p.header, p.plan, o.limits, p.what, Math.ceil(o.limits.decodeTimeoutMs / 1000));
  let f: Float32Array;
  try {
    f = p.plan.finish(win);
  } catch (e) {
    throw alignError(e, p.what);
  }
  return roundCrop(f, new Uint8Array(o.size * o.size * 3));
}

/**
 * Turns one input into a size x size x 3 RGB crop. Encoded images are
 * decoded region by region (decode.ts): only the pixels the alignment reads,
 * shrunk in libvips when the face is large, never the whole image in
 * JavaScript.
 */
export async function prepareInput(input: EmbedInput, o: PrepareOptions, index?: number): Promise<Uint8Array> {
  return finishInput(await inspectInput(input, o, index), o);
}
