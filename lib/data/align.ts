/**
 * Face alignment (used by lib/data for training batches and by lib/eval
 * for verification): decode with sharp, then either a square box
 * crop resized to the model's input (presets `lfw-funneled`, `ffhq`,
 * `none`) or a similarity-transform warp from 5 landmarks onto the ArcFace
 * template (closed-form Umeyama + bilinear sampling, as insightface does
 * with skimage + cv2.warpAffine).
 *
 * Output: Float32Array, HWC, RGB, raw values 0..255 (the model's own
 * preprocessing is applied by the model / its Embedder).
 *
 * Coordinates: "continuous" = pixel i spans [i, i+1] (box presets);
 * "pixel-index" = pixel i is centred on i (cv2 / skimage, landmarks and
 * the ArcFace template).
 */
import sharp from 'sharp';
import { QuantFaceError, ioError } from '../errors.js';

/** A decoded 8-bit RGB image (HWC, 3 channels). */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
  /**
   * Set when `data` holds only a window of a larger image (the runtime
   * decodes just the region an alignment reads): the window's top-left
   * corner and the whole image's size. Boxes, landmarks and borders stay in
   * the whole image's coordinates, so a crop of a window that covers every
   * pixel the crop reads equals the crop of the whole image, bit for bit.
   */
  window?: { left: number; top: number; fullWidth: number; fullHeight: number };
}

/** Square box in continuous pixel coordinates. */
export interface Box {
  x: number;
  y: number;
  side: number;
}

export type CropPreset = 'lfw-funneled' | 'ffhq' | 'none';
export const CROP_PRESETS: readonly CropPreset[] = ['lfw-funneled', 'ffhq', 'none'];

/** The ArcFace 5-point template for 112x112 crops (pixel-index coordinates). */
export const ARCFACE_TEMPLATE: readonly (readonly [number, number])[] = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];

/** The preset's box for an image of the given size. */
export function presetBox(preset: CropPreset, width: number, height: number): Box {
  switch (preset) {
    case 'lfw-funneled':
      // x=58.9, y=50.8, side=131.7 in the 250x250 deep-funneled LFW images
      return { x: (58.9 / 250) * width, y: (50.8 / 250) * height, side: (131.7 / 250) * width };
    case 'ffhq':
      return { x: 0.1183 * width, y: 0.1199 * height, side: 0.7646 * width };
    case 'none':
      if (width !== height) {
        throw new QuantFaceError('E_ARG', `crop preset 'none' needs square images (got ${width}x${height}); use a box preset or landmarks`);
      }
      return { x: 0, y: 0, side: width };
    default:
      throw new QuantFaceError('E_ARG', `unknown crop preset '${String(preset)}'; use one of ${CROP_PRESETS.join(', ')}`);
  }
}

/** Decodes an image file (path or bytes) to 8-bit RGB with sharp. */
export async function decodeImage(input: string | Uint8Array): Promise<RgbImage> {
  let res: { data: Buffer; info: sharp.OutputInfo };
  try {
    res = await sharp(input, { failOn: 'error' })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    if (typeof input === 'string') {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || /missing|not exist/i.test(String((e as Error).message))) throw ioError(Object.assign(new Error('missing'), { code: 'ENOENT' }), input);
      throw new QuantFaceError('E_FORMAT', `cannot decode image ${input}: ${(e as Error).message}`, { cause: e, path: input });
    }
    throw new QuantFaceError('E_FORMAT', `cannot decode image bytes: ${(e as Error).message}`, { cause: e });
  }
  const { width, height, channels } = res.info;
  const src = new Uint8Array(res.data.buffer, res.data.byteOffset, res.data.byteLength);
  if (channels === 3) return { data: src, width, height };
  return { data: toRgb(src, width, height, channels), width, height };
}

/** Expands 1/2/4-channel pixels to RGB (grey is replicated, alpha dropped). */
export function toRgb(src: Uint8Array, width: number, height: number, channels: number): Uint8Array {
  if (channels === 3) return src;
  const out = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    if (channels <= 2) {
      const g = src[p * channels]!;
      out[p * 3] = g; out[p * 3 + 1] = g; out[p * 3 + 2] = g;
    } else {
      out[p * 3] = src[p * channels]!; out[p * 3 + 1] = src[p * channels + 1]!; out[p * 3 + 2] = src[p * channels + 2]!;
    }
  }
  return out;
}

/**
 * Separable resampling weights (triangle filter widened by the scale when
 * shrinking, as PIL's bilinear resize does) mapping [start, start+len) of
 * an input axis of `inSize` pixels to `outSize` pixels.
 */
function axisWeights(start: number, len: number, outSize: number, inSize: number): { first: Int32Array; count: Int32Array; w: Float64Array; maxTaps: number } {
  const scale = len / outSize;
  const fscale = Math.max(scale, 1);
  const support = fscale; // triangle support 1, widened
  const maxTaps = Math.ceil(support) * 2 + 2;
  const first = new Int32Array(outSize), count = new Int32Array(outSize);
  const w = new Float64Array(outSize * maxTaps);
  for (let i = 0; i < outSize; i++) {
    const center = start + (i + 0.5) * scale; // continuous coordinate
    let lo = Math.floor(center - support);
    let hi = Math.ceil(center + support);
    lo = Math.max(lo, 0);
    hi = Math.min(hi, inSize);
    let n = 0, sum = 0;
    const f = lo;
    for (let j = lo; j < hi && n < maxTaps; j++) {
      const d = Math.abs((j + 0.5 - center) / fscale);
      const k = d < 1 ? 1 - d : 0;
      w[i * maxTaps + n] = k;
      sum += k;
      n++;
    }
    if (sum > 0) for (let k = 0; k < n; k++) w[i * maxTaps + k]! /= sum;
    first[i] = f;
    count[i] = n;
  }
  return { first, count, w, maxTaps };
}

/**
 * Crops the square `box` (continuous coordinates, may be fractional) and
 * resizes it to size x size with an antialiased bilinear filter. Writes
 * HWC RGB floats 0..255 into `out` at `offset` (allocated if absent).
 */
export function cropBox(img: RgbImage, box: Box, size = 112, out?: Float32Array, offset = 0): Float32Array {
  if (!(box.side > 0)) throw new QuantFaceError('E_ARG', `crop box side must be positive (got ${box.side})`);
  const dst = out ?? new Float32Array(size * size * 3);
  if (dst.length < offset + size * size * 3) throw new QuantFaceError('E_SHAPE', `cropBox: output holds ${dst.length} values, needs ${offset + size * size * 3}`);
  const { data } = img;
  const W = img.window ? img.window.fullWidth : img.width;
  const H = img.window ? img.window.fullHeight : img.height;
  const left = img.window?.left ?? 0;
  const top = img.window?.top ?? 0;
  const stride = img.width * 3;
  const wx = axisWeights(box.x, box.side, size, W);
  const wy = axisWeights(box.y, box.side, size, H);
  // horizontal pass over the rows the vertical pass needs
  let rowLo = H, rowHi = 0;
  // (rows with no taps, past the image's edges, are left out: nothing reads them)
  for (let i = 0; i < size; i++) if (wy.count[i]! > 0) { rowLo = Math.min(rowLo, wy.first[i]!); rowHi = Math.max(rowHi, wy.first[i]! + wy.count[i]!); }
  if (rowHi <= rowLo) { dst.fill(0, offset, offset + size * size * 3); return dst; }
  const tmp = new Float64Array((rowHi - rowLo) * size * 3);
  if (rowLo < top || rowHi > top + img.height) throw new QuantFaceError('E_INTERNAL', `cropBox: rows ${rowLo}..${rowHi} are outside the decoded window`);
  for (let i = 0; i < size; i++) if (wx.count[i]! > 0 && (wx.first[i]! < left || wx.first[i]! + wx.count[i]! > left + img.width)) throw new QuantFaceError('E_INTERNAL', 'cropBox: columns outside the decoded window');
  for (let r = rowLo; r < rowHi; r++) {
    const rowOff = (r - top) * stride - left * 3;
    const tOff = (r - rowLo) * size * 3;
    for (let i = 0; i < size; i++) {
      let a = 0, b = 0, c = 0;
      const f = wx.first[i]!, n = wx.count[i]!;
      for (let k = 0; k < n; k++) {
        const ww = wx.w[i * wx.maxTaps + k]!;
        const p = rowOff + (f + k) * 3;
        a += ww * data[p]!; b += ww * data[p + 1]!; c += ww * data[p + 2]!;
      }
      tmp[tOff + i * 3] = a; tmp[tOff + i * 3 + 1] = b; tmp[tOff + i * 3 + 2] = c;
    }
  }
  for (let j = 0; j < size; j++) {
    const f = wy.first[j]!, n = wy.count[j]!;
    for (let i = 0; i < size; i++) {
      let a = 0, b = 0, c = 0;
      for (let k = 0; k < n; k++) {
        const ww = wy.w[j * wy.maxTaps + k]!;
        const p = ((f + k - rowLo) * size + i) * 3;
        a += ww * tmp[p]!; b += ww * tmp[p + 1]!; c += ww * tmp[p + 2]!;
      }
      const o = offset + (j * size + i) * 3;
      dst[o] = a; dst[o + 1] = b; dst[o + 2] = c;
    }
  }
  return dst;
}

/** A 2x3 affine matrix [a, b, tx, c, d, ty]: x' = a x + b y + tx, y' = c x + d y + ty. */
export type Affine = Float64Array;

/**
 * Least-squares similarity transform (rotation, uniform scale,
 * translation) mapping `src` points onto `dst` points: the closed form of
 * Umeyama's estimate with scale (skimage SimilarityTransform.estimate) for
 * 2-D points without reflection.
 */
export function umeyama(src: ArrayLike<readonly [number, number]> | ArrayLike<number>, dst: ArrayLike<readonly [number, number]> | ArrayLike<number>): Affine {
  const s = flatPoints(src, 'src');
  const d = flatPoints(dst, 'dst');
  const n = s.length / 2;
  if (d.length !== s.length || n < 2) {
    throw new QuantFaceError('E_SHAPE', `umeyama: need the same number (>= 2) of source and destination points (got ${n} and ${d.length / 2})`);
  }
  let sx = 0, sy = 0, dx = 0, dy = 0;
  for (let i = 0; i < n; i++) { sx += s[2 * i]!; sy += s[2 * i + 1]!; dx += d[2 * i]!; dy += d[2 * i + 1]!; }
  sx /= n; sy /= n; dx /= n; dy /= n;
  let sxx = 0, num1 = 0, num2 = 0;
  for (let i = 0; i < n; i++) {
    const x = s[2 * i]! - sx, y = s[2 * i + 1]! - sy;
    const u = d[2 * i]! - dx, v = d[2 * i + 1]! - dy;
    sxx += x * x + y * y;
    num1 += x * u + y * v;
    num2 += x * v - y * u;
  }
  if (!(sxx > 0)) throw new QuantFaceError('E_ARG', 'umeyama: all source points coincide; the landmarks are invalid');
  const a = num1 / sxx, b = num2 / sxx;
  return Float64Array.of(a, -b, dx - (a * sx - b * sy), b, a, dy - (b * sx + a * sy));
}

function flatPoints(p: ArrayLike<readonly [number, number]> | ArrayLike<number>, name: string): Float64Array {
  if (p.length === 0) return new Float64Array(0);
  const first = p[0];
  if (typeof first === 'number') {
    if (p.length % 2) throw new QuantFaceError('E_SHAPE', `umeyama: ${name} must hold x,y pairs`);
    return Float64Array.from(p as ArrayLike<number>);
  }
  const out = new Float64Array(p.length * 2);
  for (let i = 0; i < p.length; i++) {
    const q = (p as ArrayLike<readonly [number, number]>)[i]!;
    out[2 * i] = q[0]; out[2 * i + 1] = q[1];
  }
  return out;
}

/** Inverse of an affine matrix. */
export function invertAffine(m: Affine): Affine {
  const [a, b, tx, c, d, ty] = m as unknown as [number, number, number, number, number, number];
  const det = a * d - b * c;
  if (det === 0 || !Number.isFinite(det)) throw new QuantFaceError('E_ARG', 'the alignment transform is singular; the landmarks are invalid');
  const ia = d / det, ib = -b / det, ic = -c / det, id = a / det;
  return Float64Array.of(ia, ib, -(ia * tx + ib * ty), ic, id, -(ic * tx + id * ty));
}

/**
 * cv2.warpAffine(img, M, (size, size), flags=INTER_LINEAR,
 * borderValue=0) in float: output pixel (u, v) samples the source at
 * M^-1 (u, v) (pixel-index coordinates) bilinearly; outside is 0.
 */
export function warpAffine(img: RgbImage, m: Affine, size = 112, out?: Float32Array, offset = 0): Float32Array {
  const dst = out ?? new Float32Array(size * size * 3);
  if (dst.length < offset + size * size * 3) throw new QuantFaceError('E_SHAPE', `warpAffine: output holds ${dst.length} values, needs ${offset + size * size * 3}`);
  const inv = invertAffine(m);
  const { data } = img;
  const W = img.window ? img.window.fullWidth : img.width;
  const H = img.window ? img.window.fullHeight : img.height;
  const left = img.window?.left ?? 0;
  const top = img.window?.top ?? 0;
  const ww = img.width;
  const at = (x: number, y: number) => ((y - top) * ww + (x - left)) * 3;
  const px = (x: number, y: number, c: number) => (x < 0 || y < 0 || x >= W || y >= H ? 0 : data[at(x, y) + c]!);
  for (let v = 0; v < size; v++) {
    for (let u = 0; u < size; u++) {
      const xs = inv[0]! * u + inv[1]! * v + inv[2]!;
      const ys = inv[3]! * u + inv[4]! * v + inv[5]!;
      const x0 = Math.floor(xs), y0 = Math.floor(ys);
      const fx = xs - x0, fy = ys - y0;
      const o = offset + (v * size + u) * 3;
      if (x0 >= 0 && y0 >= 0 && x0 + 1 < W && y0 + 1 < H) {
        const p00 = at(x0, y0), p01 = p00 + 3, p10 = p00 + ww * 3, p11 = p10 + 3;
        for (let c = 0; c < 3; c++) {
          const top = data[p00 + c]! + (data[p01 + c]! - data[p00 + c]!) * fx;
          const bot = data[p10 + c]! + (data[p11 + c]! - data[p10 + c]!) * fx;
          dst[o + c] = top + (bot - top) * fy;
        }
      } else if (x0 + 1 < 0 || y0 + 1 < 0 || x0 >= W || y0 >= H) {
        dst[o] = 0; dst[o + 1] = 0; dst[o + 2] = 0;
      } else {
        for (let c = 0; c < 3; c++) {
          const top = px(x0, y0, c) * (1 - fx) + px(x0 + 1, y0, c) * fx;
          const bot = px(x0, y0 + 1, c) * (1 - fx) + px(x0 + 1, y0 + 1, c) * fx;
          dst[o + c] = top * (1 - fy) + bot * fy;
        }
      }
    }
  }
  return dst;
}

/**
 * Aligns a face from 5 landmarks (pixel-index coordinates, order: eye on
 * the image's left, other eye, nose tip, left and right mouth corner) onto
 * `template` (for a size x size crop) by a similarity transform.
 */
export function alignByLandmarks(img: RgbImage, landmarks: ArrayLike<number>, template: readonly (readonly [number, number])[] = ARCFACE_TEMPLATE, size = 112, out?: Float32Array, offset = 0): Float32Array {
  if (landmarks.length !== template.length * 2) {
    throw new QuantFaceError('E_SHAPE', `alignByLandmarks: ${landmarks.length / 2} landmarks for a ${template.length}-point template`);
  }
  for (let i = 0; i < landmarks.length; i++) {
    if (!Number.isFinite(landmarks[i]!)) throw new QuantFaceError('E_ARG', `alignByLandmarks: landmark coordinate ${i} is not a finite number`);
  }
  return warpAffine(img, landmarkAffine(landmarks, template, size), size, out, offset);
}

/**
 * The similarity transform (source pixel-index coordinates -> output
 * pixel-index coordinates) that maps 5 landmarks onto `template` (given for
 * 112x112, scaled to size x size).
 */
export function landmarkAffine(landmarks: ArrayLike<number>, template: readonly (readonly [number, number])[] = ARCFACE_TEMPLATE, size = 112): Affine {
  const scale = size / 112;
  const t = template.map(([x, y]) => [x * scale, y * scale] as const);
  return umeyama(landmarks, t);
}

/** How to turn a decoded image into the model's input crop. */
export type AlignSpec =
  | { kind: 'preset'; preset: CropPreset }
  | { kind: 'box'; box: Box }
  | { kind: 'landmarks'; landmarks: ArrayLike<number>; template?: readonly (readonly [number, number])[] };

/** Applies an AlignSpec (see {@link cropBox} / {@link alignByLandmarks}). */
export function alignImage(img: RgbImage, spec: AlignSpec, size = 112, out?: Float32Array, offset = 0): Float32Array {
  switch (spec.kind) {
    case 'preset': return cropBox(img, presetBox(spec.preset, img.window?.fullWidth ?? img.width, img.window?.fullHeight ?? img.height), size, out, offset);
    case 'box': return cropBox(img, spec.box, size, out, offset);
    case 'landmarks': return alignByLandmarks(img, spec.landmarks, spec.template ?? ARCFACE_TEMPLATE, size, out, offset);
  }
}

/** Horizontal flip of one HWC image of size x size x 3 from src[srcOff..] into dst[dstOff..]. */
export function flipHorizontal(src: Float32Array, size: number, dst: Float32Array, srcOff = 0, dstOff = 0, channels = 3): void {
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const s = srcOff + (y * size + x) * channels;
      const d = dstOff + (y * size + (size - 1 - x)) * channels;
      for (let c = 0; c < channels; c++) dst[d + c] = src[s + c]!;
    }
  }
}
