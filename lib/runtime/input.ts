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

export type EmbedInput = string | Uint8Array | ArrayBuffer | Float32Array | RawImage;

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
    return roundCrop(alignImage(img, o.align, o.size), new Uint8Array(per));
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
