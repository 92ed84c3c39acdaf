/**
 * Seeded augmentation of aligned face crops.
 *
 * Every random choice for a sample is drawn on the main thread from a
 * generator seeded by (loader seed, epoch, sample id) only, into a plain
 * {@link AugPlan}; workers then apply the plan. So a batch does not depend
 * on the number of workers, on scheduling or on the batch size.
 *
 * - horizontal flip (mirror of the output crop);
 * - scale / shift jitter, folded into the crop transform (the box or the
 *   landmark similarity transform) so the image is resampled once;
 * - colour jitter: brightness, contrast, saturation (torchvision's
 *   formulas, in that fixed order, clamped to 0..255 after each);
 * - mixup between two faces: out = lambda * A + (1 - lambda) * B with
 *   lambda ~ Beta(alpha, alpha), each face augmented on its own. For
 *   distillation no label mixing is needed (the teacher labels the mixed
 *   image); the batch still reports partner and lambda.
 */
import { QuantFaceError } from '../errors.js';
import { Rng } from '../tensor.js';
import {
  ARCFACE_TEMPLATE, cropBox, landmarkAffine, presetBox, warpAffine,
  type Affine, type Box, type CropPreset, type RgbImage,
} from './align.js';

/** Augmentation options. All default to "off" except the flip. */
export interface AugmentOptions {
  /** Horizontal flip probability; `true` = 0.5, `false` = 0. Default 0.5. */
  flip?: boolean | number;
  /**
   * Scale jitter: the face is zoomed by a factor drawn log-uniformly in
   * [1/(1+scale), 1+scale] about the crop centre. Default 0 (off).
   */
  scale?: number;
  /** Shift jitter: the face moves by up to +-shift x the output size on each axis. Default 0. */
  shift?: number;
  /** Brightness factor uniform in [1-b, 1+b]. Default 0. */
  brightness?: number;
  /** Contrast factor uniform in [1-c, 1+c] (blend with the mean grey). Default 0. */
  contrast?: number;
  /** Saturation factor uniform in [1-s, 1+s] (blend with the pixel's grey). Default 0. */
  saturation?: number;
  /**
   * Mixup between two faces: a probability (number), or `{ prob, alpha }`
   * (prob default 1, alpha default 0.4); `false` / 0 = off (default).
   */
  mixup?: boolean | number | { prob?: number; alpha?: number };
}

/** {@link AugmentOptions} with every field resolved. */
export interface ResolvedAugment {
  flip: number;
  scale: number;
  shift: number;
  brightness: number;
  contrast: number;
  saturation: number;
  mixupProb: number;
  mixupAlpha: number;
}

/** No augmentation at all (evaluation). */
export const NO_AUGMENT: ResolvedAugment = Object.freeze({ flip: 0, scale: 0, shift: 0, brightness: 0, contrast: 0, saturation: 0, mixupProb: 0, mixupAlpha: 0.4 });

function checkRange(name: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
    throw new QuantFaceError('E_ARG', `augment.${name} must be a number in [${lo}, ${hi}] (got ${String(v)})`);
  }
  return v;
}

/** Validates and fills in defaults; `false` means no augmentation. */
export function resolveAugment(o: AugmentOptions | false | undefined): ResolvedAugment {
  if (o === false) return NO_AUGMENT;
  o = o ?? {};
  if (typeof o !== 'object') throw new QuantFaceError('E_ARG', `augment must be an object or false (got ${typeof o})`);
  const flip = o.flip === undefined || o.flip === true ? 0.5 : o.flip === false ? 0 : checkRange('flip', o.flip, 0, 1);
  let mixupProb = 0, mixupAlpha = 0.4;
  const m = o.mixup;
  if (m === true) mixupProb = 1;
  else if (typeof m === 'number') mixupProb = checkRange('mixup', m, 0, 1);
  else if (m && typeof m === 'object') {
    mixupProb = m.prob === undefined ? 1 : checkRange('mixup.prob', m.prob, 0, 1);
    if (m.alpha !== undefined) mixupAlpha = checkRange('mixup.alpha', m.alpha, 1e-3, 1e3);
  } else if (m !== undefined && m !== false) throw new QuantFaceError('E_ARG', `augment.mixup must be a boolean, a probability or { prob, alpha }`);
  return {
    flip,
    scale: o.scale === undefined ? 0 : checkRange('scale', o.scale, 0, 4),
    shift: o.shift === undefined ? 0 : checkRange('shift', o.shift, 0, 1),
    brightness: o.brightness === undefined ? 0 : checkRange('brightness', o.brightness, 0, 1),
    contrast: o.contrast === undefined ? 0 : checkRange('contrast', o.contrast, 0, 1),
    saturation: o.saturation === undefined ? 0 : checkRange('saturation', o.saturation, 0, 1),
    mixupProb,
    mixupAlpha,
  };
}

/** True when the options move pixels geometrically (scale or shift jitter). */
export function hasGeometricJitter(a: ResolvedAugment): boolean {
  return a.scale > 0 || a.shift > 0;
}

/** The concrete augmentation of one face. */
export interface AugPlan {
  flip: boolean;
  /** Zoom factor about the crop centre (1 = none). */
  scale: number;
  /** Shift as a fraction of the output size (positive = content moves right / down). */
  dx: number;
  dy: number;
  brightness: number;
  contrast: number;
  saturation: number;
}

export const IDENTITY_PLAN: AugPlan = Object.freeze({ flip: false, scale: 1, dx: 0, dy: 0, brightness: 1, contrast: 1, saturation: 1 });

/** The plan of one sample: its own augmentation and an optional mixup partner. */
export interface SamplePlan {
  id: number;
  a: AugPlan;
  mix?: { partner: number; lambda: number; b: AugPlan };
}

/** Hashes integers into a 32-bit seed (murmur3-style finaliser per word). */
export function mixSeed(...xs: number[]): number {
  let h = 0x3c6ef372;
  for (const x0 of xs) {
    let x = Math.floor(x0) >>> 0;
    // fold in the high bits of large seeds too
    const hi = Math.floor(x0 / 4294967296) >>> 0;
    x = Math.imul(x ^ hi, 0xcc9e2d51);
    x = (x << 15) | (x >>> 17);
    x = Math.imul(x, 0x1b873593);
    h ^= x;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= xs.length;
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const STREAM_PLAN = 0x706c616e; // 'plan'
const STREAM_PARTNER = 0x6d697862; // 'mixb'
const STREAM_SHUFFLE = 0x73687566; // 'shuf'

/** Draws one face's plan: always 7 uniforms in a fixed order, whatever the options. */
function drawPlan(rng: Rng, a: ResolvedAugment): AugPlan {
  const uF = rng.uniform(), uS = rng.uniform(), uX = rng.uniform(), uY = rng.uniform();
  const uB = rng.uniform(), uC = rng.uniform(), uSat = rng.uniform();
  return {
    flip: uF < a.flip,
    scale: a.scale > 0 ? Math.exp((2 * uS - 1) * Math.log1p(a.scale)) : 1,
    dx: a.shift > 0 ? (2 * uX - 1) * a.shift : 0,
    dy: a.shift > 0 ? (2 * uY - 1) * a.shift : 0,
    brightness: a.brightness > 0 ? 1 + (2 * uB - 1) * a.brightness : 1,
    contrast: a.contrast > 0 ? 1 + (2 * uC - 1) * a.contrast : 1,
    saturation: a.saturation > 0 ? 1 + (2 * uSat - 1) * a.saturation : 1,
  };
}

/** Gamma(shape, 1) by Marsaglia-Tsang (shape < 1 by the u^(1/shape) boost). */
function gamma(rng: Rng, shape: number): number {
  if (shape < 1) {
    let u = 0;
    while (u === 0) u = rng.uniform();
    return gamma(rng, shape + 1) * Math.pow(u, 1 / shape);
  }
  const d = shape - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number, v: number;
    do { x = rng.normal(); v = 1 + c * x; } while (v <= 0);
    v = v * v * v;
    const u = rng.uniform();
    if (u < 1 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0 && Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** Beta(alpha, alpha) from two gammas. */
function betaSym(rng: Rng, alpha: number): number {
  const x = gamma(rng, alpha), y = gamma(rng, alpha);
  const s = x + y;
  return s > 0 ? x / s : 0.5;
}

/**
 * The plan of sample `id` in `epoch`: a function of (seed, epoch, id) and,
 * for the mixup partner, of the list of usable ids (sorted).
 */
export function planSample(seed: number, epoch: number, id: number, usable: ArrayLike<number>, a: ResolvedAugment): SamplePlan {
  const rng = new Rng(mixSeed(seed, epoch, id, STREAM_PLAN));
  const plan: SamplePlan = { id, a: drawPlan(rng, a) };
  const uMix = rng.uniform();
  const n = usable.length;
  if (a.mixupProb > 0 && n >= 2 && uMix < a.mixupProb) {
    const r2 = new Rng(mixSeed(seed, epoch, id, STREAM_PARTNER));
    let partner = usable[r2.int(n - 1)]!;
    if (partner === id) partner = usable[n - 1]!;
    const b = drawPlan(r2, a);
    const lambda = betaSym(r2, a.mixupAlpha);
    plan.mix = { partner, lambda, b };
  }
  return plan;
}

/** Seeded Fisher-Yates permutation of `ids` for an epoch (a copy). */
export function epochOrder(seed: number, epoch: number, ids: ArrayLike<number>): Int32Array {
  const out = Int32Array.from(ids as ArrayLike<number>);
  const rng = new Rng(mixSeed(seed, epoch, STREAM_SHUFFLE));
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = out[i]!; out[i] = out[j]!; out[j] = t;
  }
  return out;
}

// ------------------------------------------------------------------ geometry

/** How one image is cut out (per image: landmarks differ). Landmarks in pixel-index coordinates. */
export type GeomSpec =
  | { kind: 'preset'; preset: CropPreset }
  | { kind: 'box'; box: Box }
  | { kind: 'landmarks'; landmarks: number[]; template?: readonly (readonly [number, number])[] };

/**
 * The box after zoom `s` about its centre and a shift (dx, dy) in units of
 * the output size: output coordinate u' = s (u - size/2) + size/2 + dx size.
 */
export function jitterBox(box: Box, s: number, dx: number, dy: number): Box {
  if (s === 1 && dx === 0 && dy === 0) return box;
  const side = box.side / s;
  return { x: box.x - (box.side * ((1 - s) / 2 + dx)) / s, y: box.y - (box.side * ((1 - s) / 2 + dy)) / s, side };
}

/** The same jitter composed onto a source->output affine (pixel-index centre (size-1)/2). */
export function jitterAffine(m: Affine, size: number, s: number, dx: number, dy: number): Affine {
  if (s === 1 && dx === 0 && dy === 0) return m;
  const c = (size - 1) / 2;
  const tx = (1 - s) * c + dx * size, ty = (1 - s) * c + dy * size;
  return Float64Array.of(s * m[0]!, s * m[1]!, s * m[2]! + tx, s * m[3]!, s * m[4]!, s * m[5]! + ty);
}

/** True when the plan leaves the geometry alone (the cached aligned crop can be used). */
export function isIdentityGeometry(p: AugPlan): boolean {
  return p.scale === 1 && p.dx === 0 && p.dy === 0;
}

/** Crops/warps `img` by `geom` with the plan's scale/shift jitter into out[offset..]. */
export function renderGeometry(img: RgbImage, geom: GeomSpec, plan: AugPlan, size: number, out: Float32Array, offset: number): void {
  switch (geom.kind) {
    case 'preset':
    case 'box': {
      const box = geom.kind === 'box' ? geom.box : presetBox(geom.preset, img.width, img.height);
      cropBox(img, jitterBox(box, plan.scale, plan.dx, plan.dy), size, out, offset);
      return;
    }
    case 'landmarks': {
      const lm = geom.landmarks;
      for (let i = 0; i < lm.length; i++) {
        if (!Number.isFinite(lm[i]!)) throw new QuantFaceError('E_ARG', `landmark coordinate ${i} is not a finite number`);
      }
      const m = landmarkAffine(lm, geom.template ?? ARCFACE_TEMPLATE, size);
      warpAffine(img, jitterAffine(m, size, plan.scale, plan.dx, plan.dy), size, out, offset);
      return;
    }
  }
}

// ------------------------------------------------------------------ photometric

const clamp255 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);

/** Flip then colour jitter, in place on one size x size x 3 image at out[off..]. */
export function applyPhotometric(out: Float32Array, off: number, size: number, plan: AugPlan): void {
  const n = size * size;
  if (plan.flip) {
    for (let y = 0; y < size; y++) {
      let l = off + y * size * 3, r = off + (y * size + size - 1) * 3;
      while (l < r) {
        for (let c = 0; c < 3; c++) { const t = out[l + c]!; out[l + c] = out[r + c]!; out[r + c] = t; }
        l += 3; r -= 3;
      }
    }
  }
  if (plan.brightness !== 1) {
    const b = plan.brightness;
    for (let i = off; i < off + n * 3; i++) out[i] = clamp255(out[i]! * b);
  }
  if (plan.contrast !== 1) {
    let mean = 0;
    for (let p = off; p < off + n * 3; p += 3) mean += 0.299 * out[p]! + 0.587 * out[p + 1]! + 0.114 * out[p + 2]!;
    mean /= n;
    const c = plan.contrast;
    for (let i = off; i < off + n * 3; i++) out[i] = clamp255((out[i]! - mean) * c + mean);
  }
  if (plan.saturation !== 1) {
    const s = plan.saturation;
    for (let p = off; p < off + n * 3; p += 3) {
      const g = 0.299 * out[p]! + 0.587 * out[p + 1]! + 0.114 * out[p + 2]!;
      for (let c = 0; c < 3; c++) out[p + c] = clamp255((out[p + c]! - g) * s + g);
    }
  }
}

/** dst[dOff + i] = lambda * dst[dOff + i] + (1 - lambda) * src[sOff + i] for i < count. */
export function blendInto(dst: Float32Array, dOff: number, src: Float32Array, sOff: number, lambda: number, count: number): void {
  const mu = 1 - lambda;
  for (let i = 0; i < count; i++) dst[dOff + i] = lambda * dst[dOff + i]! + mu * src[sOff + i]!;
}
