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
import { readFile, stat } from 'node:fs/promises';
import sharp from 'sharp';
import { QuantFaceError, ioError } from '../errors.js';
import { alignImage, presetBox, toRgb, type AlignSpec, type Box, type CropPreset, type RgbImage } from '../data/align.js';
import { parseAlign } from '../data/dataset.js';

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
}

const DEFAULT_LIMITS: Required<InputLimits> = { maxBytes: 20 << 20, maxPixels: 40_000_000, maxSide: 16384, minSide: 16 };

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

function isImageMagic(b: Uint8Array): boolean {
  if (b.length < 4) return false;
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return true; // JPEG
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return true; // PNG
  const s4 = String.fromCharCode(b[0]!, b[1]!, b[2]!, b[3]!);
  if (s4 === 'RIFF' || s4 === 'GIF8') return true; // WebP / GIF
  if ((b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a) || (b[0] === 0x4d && b[1] === 0x4d && b[3] === 0x2a)) return true; // TIFF
  if (b.length >= 12 && String.fromCharCode(b[4]!, b[5]!, b[6]!, b[7]!) === 'ftyp') return true; // AVIF / HEIF
  return false;
}

function checkDims(width: number, height: number, lim: Required<InputLimits>, what: string): void {
  if (width > lim.maxSide || height > lim.maxSide || width * height > lim.maxPixels)
    throw new QuantFaceError('E_SHAPE', `${what} is ${width}x${height} pixels; the limit is ${lim.maxPixels} pixels and ${lim.maxSide} per side`);
  if (width < lim.minSide || height < lim.minSide) throw new QuantFaceError('E_SHAPE', `${what} is ${width}x${height} pixels; at least ${lim.minSide} per side is needed`);
}

/**
 * Decodes encoded image bytes to RGB with sharp (off the main thread),
 * checking the limits on the header before decoding. When the face box is
 * much larger than the crop, sharp first shrinks the region around it (so
 * the JavaScript resampler never works on a huge image).
 */
async function decodeBytes(bytes: Uint8Array, lim: Required<InputLimits>, what: string): Promise<RgbImage> {
  if (bytes.length > lim.maxBytes) throw new QuantFaceError('E_SHAPE', `${what} is ${bytes.length} bytes; the limit is ${lim.maxBytes}`);
  if (bytes.length === 0) throw new QuantFaceError('E_FORMAT', `${what} is empty`);
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { failOn: 'error', limitInputPixels: false }).metadata();
  } catch (e) {
    throw new QuantFaceError('E_FORMAT', `${what} is not a readable image (${(e as Error).message})`, { cause: e });
  }
  if (!meta.width || !meta.height) throw new QuantFaceError('E_FORMAT', `${what}: the image has no size`);
  checkDims(meta.width, meta.height, lim, what);
  try {
    const { data, info } = await sharp(bytes, { failOn: 'error', limitInputPixels: lim.maxPixels })
      .rotate() // honour EXIF orientation
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return { data: info.channels === 3 ? src : toRgb(src, info.width, info.height, info.channels), width: info.width, height: info.height };
  } catch (e) {
    throw new QuantFaceError('E_FORMAT', `${what} could not be decoded (${(e as Error).message})`, { cause: e });
  }
}

function boxOf(spec: AlignSpec, w: number, h: number): Box | null {
  if (spec.kind === 'preset') return presetBox(spec.preset, w, h);
  if (spec.kind === 'box') return spec.box;
  return null;
}

/** Shrinks a huge image around the crop box with sharp before the JavaScript resampler runs. */
async function preShrink(img: RgbImage, spec: AlignSpec, size: number): Promise<{ img: RgbImage; spec: AlignSpec }> {
  const box = boxOf(spec, img.width, img.height);
  if (!box || box.side <= 3 * size) return { img, spec };
  const left = Math.max(0, Math.floor(box.x));
  const top = Math.max(0, Math.floor(box.y));
  const right = Math.min(img.width, Math.ceil(box.x + box.side));
  const bottom = Math.min(img.height, Math.ceil(box.y + box.side));
  if (right - left < 2 || bottom - top < 2) return { img, spec };
  const f = box.side / (2 * size); // shrink factor: the box becomes 2x the crop
  const w = Math.max(2, Math.round((right - left) / f));
  const h = Math.max(2, Math.round((bottom - top) / f));
  const { data } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .extract({ left, top, width: right - left, height: bottom - top })
    .resize(w, h, { kernel: 'linear', fit: 'fill' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  const sx = w / (right - left);
  const sy = h / (bottom - top);
  return {
    img: { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: w, height: h },
    spec: { kind: 'box', box: { x: (box.x - left) * sx, y: (box.y - top) * sy, side: box.side * sx } },
  };
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

/** Turns one input into a size x size x 3 RGB crop. */
export async function prepareInput(input: EmbedInput, o: PrepareOptions, index?: number): Promise<Uint8Array> {
  const what = index === undefined ? 'the input image' : `input ${index}`;
  const per = o.size * o.size * 3;
  let img: RgbImage;
  if (typeof input === 'string') {
    let st;
    try {
      st = await stat(input);
    } catch (e) {
      throw ioError(e, input);
    }
    if (!st.isFile()) throw ioError(Object.assign(new Error('not a file'), { code: 'EISDIR' }), input);
    if (st.size > o.limits.maxBytes) throw new QuantFaceError('E_SHAPE', `${input} is ${st.size} bytes; the limit is ${o.limits.maxBytes}`, { path: input });
    let bytes: Buffer;
    try {
      bytes = await readFile(input);
    } catch (e) {
      throw ioError(e, input);
    }
    img = await decodeBytes(bytes, o.limits, input);
  } else if (input instanceof Float32Array) {
    if (input.length !== per) throw new QuantFaceError('E_SHAPE', `${what}: a Float32Array input must be an aligned ${o.size}x${o.size}x3 crop (${per} values), got ${input.length}`);
    return roundCrop(input, new Uint8Array(per));
  } else if (input instanceof Uint8Array || input instanceof ArrayBuffer) {
    const bytes = input instanceof ArrayBuffer ? new Uint8Array(input) : input;
    if (!isImageMagic(bytes)) {
      if (bytes.length === per) return Uint8Array.from(bytes);
      throw new QuantFaceError('E_FORMAT', `${what} is neither an encoded image (JPEG, PNG, WebP, ...) nor a raw ${o.size}x${o.size}x3 RGB crop (${per} bytes); got ${bytes.length} bytes`);
    }
    img = await decodeBytes(bytes, o.limits, what);
  } else if (input && typeof input === 'object' && 'data' in input && 'width' in input && 'height' in input) {
    img = rawToRgb(input, o.limits, what);
  } else {
    throw new QuantFaceError('E_ARG', `${what} must be a file path, image bytes, a raw RGB crop or { data, width, height } (got ${input === null ? 'null' : typeof input})`);
  }
  if (o.align.kind === 'preset' && o.align.preset === 'none' && img.width !== img.height)
    throw new QuantFaceError('E_SHAPE', `${what} is ${img.width}x${img.height}; alignment 'none' needs a square face crop (use align 'ffhq', 'lfw-funneled', a box or landmarks)`);
  const shrunk = await preShrink(img, o.align, o.size);
  let f: Float32Array;
  try {
    f = alignImage(shrunk.img, shrunk.spec, o.size);
  } catch (e) {
    if (e instanceof QuantFaceError) throw e;
    throw new QuantFaceError('E_ARG', `${what}: cannot align (${(e as Error).message})`, { cause: e });
  }
  return roundCrop(f, new Uint8Array(per));
}
