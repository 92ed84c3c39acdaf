/**
 * Bounded decoding of encoded images for the runtime: encoded bytes -> the
 * region an alignment reads -> (shrunk) RGB window -> the 112x112 crop, in
 * one sharp/libvips pipeline per image, so that memory does not grow with
 * the sender's pixels.
 *
 * 1. readHeader(): the image header only (sharp metadata: size, format,
 *    EXIF orientation, interlacing), checked against the limits.
 * 2. planCrop(): from the alignment (preset box, box or 5 landmarks) the
 *    rectangle of source pixels the crop reads, in the displayed (EXIF
 *    oriented) image's coordinates, and whether to shrink it first (when the
 *    face is more than 3x the crop, as before: the region is resized so the
 *    face box becomes 2x the crop, then the JavaScript resampler runs).
 * 3. decodeRegion(): sharp extracts that rectangle (mapped back to the
 *    stored orientation, so libvips never rotates a whole image), resizes it
 *    when planned, and returns only those pixels; when the region is most of
 *    a JPEG or WebP image the whole image is resized instead, so libjpeg's
 *    and libwebp's shrink-on-load decode it at 1/2..1/8 scale. The small
 *    result is then put in display orientation in JavaScript.
 * 4. The plan's finish() aligns the window with lib/data's cropBox /
 *    warpAffine in the whole image's coordinates: without a shrink the crop
 *    equals the crop of the fully decoded image bit for bit.
 *
 * decodeCost() estimates the native memory one decode needs (for the
 * in-flight budget, see budget.ts): formats libvips decodes as a whole
 * frame (progressive JPEG, interlaced PNG, WebP without shrink-on-load,
 * GIF, HEIF/AVIF, TIFF, ...) cost their full frame; streamed ones cost
 * their line buffers and the window.
 */
import sharp from 'sharp';
import { QuantFaceError, ioError } from '../errors.js';
import { ARCFACE_TEMPLATE, cropBox, invertAffine, landmarkAffine, presetBox, toRgb, warpAffine, type Affine, type AlignSpec, type Box, type RgbImage } from '../data/align.js';
import type { InputLimits } from './input.js';

export interface ImageHeader {
  format: string;
  /** Stored size. */
  width: number;
  height: number;
  /** Size as displayed (after the EXIF orientation). */
  dispWidth: number;
  dispHeight: number;
  /** EXIF orientation 1..8 (1 when absent). */
  orientation: number;
  /** Progressive JPEG or interlaced PNG (decoded as a whole frame). */
  progressive: boolean;
  channels: number;
  /** Bytes per sample (1 for 8-bit, 2 for 16-bit). */
  sampleBytes: number;
}

/** A file that went missing (or became unreadable) between stat() and libvips: E_IO. */
function fileError(input: Uint8Array | string, e: unknown): QuantFaceError | null {
  if (typeof input !== 'string') return null;
  const m = String((e as Error)?.message);
  if (/no such file|does not exist|not exist|missing|permission denied/i.test(m)) return ioError(Object.assign(new Error(m), { code: /permission/i.test(m) ? 'EACCES' : 'ENOENT' }), input);
  return null;
}

function checkDims(width: number, height: number, lim: Required<InputLimits>, what: string): void {
  if (width > lim.maxSide || height > lim.maxSide || width * height > lim.maxPixels)
    throw new QuantFaceError('E_SHAPE', `${what} is ${width}x${height} pixels; the limit is ${lim.maxPixels} pixels and ${lim.maxSide} per side`);
  if (width < lim.minSide || height < lim.minSide) throw new QuantFaceError('E_SHAPE', `${what} is ${width}x${height} pixels; at least ${lim.minSide} per side is needed`);
}
export { checkDims };

/** Reads and checks the header of encoded image bytes (no pixels are decoded). */
export async function readHeader(bytes: Uint8Array | string, lim: Required<InputLimits>, what: string): Promise<ImageHeader> {
  if (typeof bytes !== 'string') {
    if (bytes.length > lim.maxBytes) throw new QuantFaceError('E_SHAPE', `${what} is ${bytes.length} bytes; the limit is ${lim.maxBytes}`);
    if (bytes.length === 0) throw new QuantFaceError('E_FORMAT', `${what} is empty`);
  }
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { failOn: 'error', limitInputPixels: false }).metadata();
  } catch (e) {
    throw fileError(bytes, e) ?? new QuantFaceError('E_FORMAT', `${what} is not a readable image (${(e as Error).message})`, { cause: e });
  }
  if (!meta.width || !meta.height) throw new QuantFaceError('E_FORMAT', `${what}: the image has no size`);
  checkDims(meta.width, meta.height, lim, what);
  const orientation = meta.orientation && meta.orientation >= 1 && meta.orientation <= 8 ? meta.orientation : 1;
  const swap = orientation >= 5;
  const depth = String(meta.depth ?? 'uchar');
  const sampleBytes = depth === 'ushort' || depth === 'short' ? 2 : depth === 'float' || depth === 'int' || depth === 'uint' ? 4 : depth === 'double' ? 8 : 1;
  return {
    format: meta.format ?? 'unknown',
    width: meta.width,
    height: meta.height,
    dispWidth: swap ? meta.height : meta.width,
    dispHeight: swap ? meta.width : meta.height,
    orientation,
    progressive: Boolean(meta.isProgressive),
    channels: meta.channels ?? 3,
    sampleBytes,
  };
}

/**
 * Up to this many pixels a landmark warp reads its region at full
 * resolution (as lib/data's warpAffine on the whole image: the same crop,
 * bit for bit), and an image is decoded region by region without
 * shrink-on-load (the same pixels as a full decode). Above it, a face over
 * 3x the crop is shrunk in libvips first (landmarks: a pre-smoothed warp,
 * cosine >= 0.99 to the full-resolution one on the test faces) and a JPEG /
 * WebP image whose face region is most of it is decoded with shrink-on-load.
 */
export const EXACT_PIXELS = 4_000_000;

/** A rectangle [x0, x1) x [y0, y1) of whole pixels. */
interface Rect {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

export interface CropPlan {
  /** Source rectangle to decode, displayed coordinates. */
  region: Rect;
  /** Size the region is resized to (equal to the region's without a shrink). */
  outWidth: number;
  outHeight: number;
  shrink: boolean;
  /** Aligns the decoded (displayed-orientation) window into a size x size x 3 float crop. */
  finish(win: RgbImage): Float32Array;
}

function clampRect(r: Rect, W: number, H: number): Rect {
  let x0 = Math.min(Math.max(r.x0, 0), W - 1);
  let y0 = Math.min(Math.max(r.y0, 0), H - 1);
  let x1 = Math.min(Math.max(r.x1, 0), W);
  let y1 = Math.min(Math.max(r.y1, 0), H);
  if (x1 <= x0) x1 = x0 + 1; // nothing of the image is read (the crop is black): decode one pixel
  if (y1 <= y0) y1 = y0 + 1;
  x0 = Math.max(0, Math.min(x0, x1 - 1));
  y0 = Math.max(0, Math.min(y0, y1 - 1));
  return { x0, y0, x1, y1 };
}

/** Checks landmarks as alignByLandmarks does. */
function landmarkMatrix(spec: Extract<AlignSpec, { kind: 'landmarks' }>, size: number): Affine {
  const template = spec.template ?? ARCFACE_TEMPLATE;
  const lm = spec.landmarks;
  if (lm.length !== template.length * 2) throw new QuantFaceError('E_SHAPE', `alignByLandmarks: ${lm.length / 2} landmarks for a ${template.length}-point template`);
  for (let i = 0; i < lm.length; i++) if (!Number.isFinite(lm[i]!)) throw new QuantFaceError('E_ARG', `alignByLandmarks: landmark coordinate ${i} is not a finite number`);
  return landmarkAffine(lm, template, size);
}

/**
 * The decoding plan of one image of W x H displayed pixels: which source
 * pixels the alignment reads and whether they are shrunk first.
 * `wholeForShrink`: decode the whole image (resized) instead of a region
 * when the region is at least half of it (JPEG / WebP shrink-on-load).
 */
export function planCrop(spec: AlignSpec, W: number, H: number, size: number, wholeForShrink = false): CropPlan {
  const whole: Rect = { x0: 0, y0: 0, x1: W, y1: H };
  const widen = (r: Rect): Rect => (wholeForShrink && (r.x1 - r.x0) * (r.y1 - r.y0) >= 0.5 * W * H ? whole : r);
  const windowed = (win: RgbImage, r: Rect): RgbImage => ({ ...win, window: { left: r.x0, top: r.y0, fullWidth: W, fullHeight: H } });
  if (spec.kind === 'landmarks') {
    const m = landmarkMatrix(spec, size);
    const inv = invertAffine(m);
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (const [u, v] of [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]] as const) {
      const xs = inv[0]! * u + inv[1]! * v + inv[2]!;
      const ys = inv[3]! * u + inv[4]! * v + inv[5]!;
      minX = Math.min(minX, xs); maxX = Math.max(maxX, xs); minY = Math.min(minY, ys); maxY = Math.max(maxY, ys);
    }
    if (![minX, maxX, minY, maxY].every(Number.isFinite)) throw new QuantFaceError('E_ARG', 'the alignment transform is singular; the landmarks are invalid');
    const scale = Math.sqrt(Math.abs(inv[0]! * inv[4]! - inv[1]! * inv[3]!)); // source pixels per output pixel
    const full = clampRect({ x0: Math.floor(minX) - 2, y0: Math.floor(minY) - 2, x1: Math.floor(maxX) + 3, y1: Math.floor(maxY) + 3 }, W, H);
    if (scale > 3 && (full.x1 - full.x0) * (full.y1 - full.y0) > EXACT_PIXELS) {
      // a face over 3x the crop: shrink the region so that it is sampled at ~2 source pixels per output pixel
      const r = widen(clampRect({ x0: Math.floor(minX) - 1, y0: Math.floor(minY) - 1, x1: Math.floor(maxX) + 3, y1: Math.floor(maxY) + 3 }, W, H));
      const rw = r.x1 - r.x0, rh = r.y1 - r.y0;
      const f = scale / 2;
      const w = Math.max(2, Math.round(rw / f)), h = Math.max(2, Math.round(rh / f));
      const sx = w / rw, sy = h / rh;
      // source pixel-index p -> shrunk pixel-index q = (p + 0.5 - left) * s - 0.5; M' = M o S^-1
      const [a, b, tx, c, d, ty] = m as unknown as [number, number, number, number, number, number];
      const ox = (0.5) / sx - 0.5 + r.x0, oy = 0.5 / sy - 0.5 + r.y0; // p = q / s + o
      const m2 = Float64Array.of(a / sx, b / sy, a * ox + b * oy + tx, c / sx, d / sy, c * ox + d * oy + ty);
      return { region: r, outWidth: w, outHeight: h, shrink: true, finish: (win) => warpAffine(win, m2, size) };
    }
    const r = full;
    return { region: r, outWidth: r.x1 - r.x0, outHeight: r.y1 - r.y0, shrink: false, finish: (win) => warpAffine(windowed(win, r), m, size) };
  }
  const box: Box = spec.kind === 'preset' ? presetBox(spec.preset, W, H) : spec.box;
  if (!(box.side > 0) || ![box.x, box.y, box.side].every(Number.isFinite)) throw new QuantFaceError('E_ARG', `crop box side must be positive (got ${box.side})`);
  if (box.side > 3 * size) {
    // as the earlier pre-shrink: the box (clipped to the image) is resized so that the box becomes 2x the crop
    const left = Math.max(0, Math.floor(box.x)), top = Math.max(0, Math.floor(box.y));
    const right = Math.min(W, Math.ceil(box.x + box.side)), bottom = Math.min(H, Math.ceil(box.y + box.side));
    if (right - left >= 2 && bottom - top >= 2) {
      const r = widen({ x0: left, y0: top, x1: right, y1: bottom });
      const f = box.side / (2 * size);
      const w = Math.max(2, Math.round((r.x1 - r.x0) / f)), h = Math.max(2, Math.round((r.y1 - r.y0) / f));
      const sx = w / (r.x1 - r.x0), sy = h / (r.y1 - r.y0);
      const b2: Box = { x: (box.x - r.x0) * sx, y: (box.y - r.y0) * sy, side: box.side * sx };
      return { region: r, outWidth: w, outHeight: h, shrink: true, finish: (win) => cropBox(win, b2, size) };
    }
  }
  const support = Math.max(box.side / size, 1);
  const r = clampRect({ x0: Math.floor(box.x - support) - 1, y0: Math.floor(box.y - support) - 1, x1: Math.ceil(box.x + box.side + support) + 1, y1: Math.ceil(box.y + box.side + support) + 1 }, W, H);
  return { region: r, outWidth: r.x1 - r.x0, outHeight: r.y1 - r.y0, shrink: false, finish: (win) => cropBox(windowed(win, r), box, size) };
}

/** Maps a displayed rectangle to the stored image's rectangle (EXIF orientation o; W x H stored). */
function storedRect(r: Rect, o: number, W: number, H: number): Rect {
  switch (o) {
    case 2: return { x0: W - r.x1, x1: W - r.x0, y0: r.y0, y1: r.y1 };
    case 3: return { x0: W - r.x1, x1: W - r.x0, y0: H - r.y1, y1: H - r.y0 };
    case 4: return { x0: r.x0, x1: r.x1, y0: H - r.y1, y1: H - r.y0 };
    case 5: return { x0: r.y0, x1: r.y1, y0: r.x0, y1: r.x1 };
    case 6: return { x0: r.y0, x1: r.y1, y0: H - r.x1, y1: H - r.x0 };
    case 7: return { x0: W - r.y1, x1: W - r.y0, y0: H - r.x1, y1: H - r.x0 };
    case 8: return { x0: W - r.y1, x1: W - r.y0, y0: r.x0, y1: r.x1 };
    default: return r;
  }
}

/**
 * Puts w x h stored RGB pixels in display orientation (EXIF o): displayed
 * pixel (x, y) is stored pixel (X, Y) of the same window.
 */
export function orientRgb(src: Uint8Array, w: number, h: number, o: number): RgbImage {
  if (o <= 1 || o > 8) return { data: src, width: w, height: h };
  const dw = o >= 5 ? h : w, dh = o >= 5 ? w : h;
  const out = new Uint8Array(dw * dh * 3);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      let X: number, Y: number;
      switch (o) {
        case 2: X = w - 1 - x; Y = y; break;
        case 3: X = w - 1 - x; Y = h - 1 - y; break;
        case 4: X = x; Y = h - 1 - y; break;
        case 5: X = y; Y = x; break;
        case 6: X = y; Y = h - 1 - x; break;
        case 7: X = w - 1 - y; Y = h - 1 - x; break;
        default: X = w - 1 - y; Y = x; break; // 8
      }
      const s = (Y * w + X) * 3, d = (y * dw + x) * 3;
      out[d] = src[s]!; out[d + 1] = src[s + 1]!; out[d + 2] = src[s + 2]!;
    }
  }
  return { data: out, width: dw, height: dh };
}

/** Formats with shrink-on-load in libvips (sharp uses it when the whole image is resized), used above EXACT_PIXELS. */
export function hasShrinkOnLoad(h: ImageHeader): boolean {
  return (h.format === 'jpeg' || h.format === 'webp') && h.width * h.height > EXACT_PIXELS;
}

/** True when libvips holds the whole decoded frame in memory for this image and plan. */
export function wholeFrame(h: ImageHeader, plan: CropPlan): boolean {
  const whole = plan.region.x0 === 0 && plan.region.y0 === 0 && plan.region.x1 === h.dispWidth && plan.region.y1 === h.dispHeight;
  if (h.format === 'jpeg') return h.progressive;
  if (h.format === 'png') return h.progressive; // interlaced (Adam7)
  if (h.format === 'webp') return !(plan.shrink && whole); // libwebp decodes a whole frame unless it scales on load
  return true; // gif, tiff, heif/avif, svg, ...: counted as whole frames
}

/** Estimated peak native memory (bytes) of decoding one image with this plan. */
export function decodeCost(h: ImageHeader, plan: CropPlan): number {
  const out = plan.outWidth * plan.outHeight * 3 * 2; // the window (libvips output + its JavaScript copy)
  if (wholeFrame(h, plan)) return h.width * h.height * Math.max(3, h.channels) * h.sampleBytes + out;
  // streamed: libvips line buffers over the stored width (tiles of a few lines per thread)
  return h.width * Math.max(3, h.channels) * h.sampleBytes * 256 + out;
}

/**
 * Decodes the planned region of encoded bytes to display-oriented RGB
 * (the window the plan's finish() aligns). timeoutSeconds: libvips stops a
 * decode that runs longer (0: no limit).
 */
export async function decodeRegion(bytes: Uint8Array | string, h: ImageHeader, plan: CropPlan, lim: Required<InputLimits>, what: string, timeoutSeconds = 0): Promise<RgbImage> {
  const r = storedRect(plan.region, h.orientation, h.width, h.height);
  const rotated = h.orientation >= 5;
  const isWhole = r.x0 === 0 && r.y0 === 0 && r.x1 === h.width && r.y1 === h.height;
  try {
    let p = sharp(bytes, { failOn: 'error', limitInputPixels: lim.maxPixels, sequentialRead: true });
    // an extract (even of the whole image) turns sharp's automatic shrink-on-load off: keep it only where planned
    if (!(isWhole && plan.shrink && hasShrinkOnLoad(h))) p = p.extract({ left: r.x0, top: r.y0, width: r.x1 - r.x0, height: r.y1 - r.y0 });
    if (plan.shrink) p = p.resize(rotated ? plan.outHeight : plan.outWidth, rotated ? plan.outWidth : plan.outHeight, { kernel: 'linear', fit: 'fill' });
    if (timeoutSeconds > 0) p = p.timeout({ seconds: timeoutSeconds });
    const { data, info } = await p.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const rgb = info.channels === 3 ? src : toRgb(src, info.width, info.height, info.channels);
    return orientRgb(rgb, info.width, info.height, h.orientation);
  } catch (e) {
    const msg = (e as Error).message;
    if (/timeout/i.test(msg)) throw new QuantFaceError('E_TIMEOUT', `${what}: decoding took over ${timeoutSeconds} s and was stopped`, { cause: e });
    const io = fileError(bytes, e);
    if (io) throw io;
    throw new QuantFaceError('E_FORMAT', `${what} could not be decoded (${msg})`, { cause: e });
  }
}
