/**
 * Data-free training faces (`--data generated:N`): no download, no real
 * person, no GAN. Two stages:
 *
 * 1. Procedural faces: a seeded painter draws aligned 112x112 faces on the
 *    ArcFace template (head, hair, skin tone, lighting, eyes with iris and
 *    lids, brows, nose, mouth, ears, neck, optional glasses and beard,
 *    background, blur and sensor noise), with random pose, shape and
 *    colours.
 * 2. Teacher inversion: each face is refined so that the teacher maps it to
 *    a random target identity (a random unit embedding), under image
 *    priors: random shifts and mirror images each iteration (the identity
 *    must survive jitter and flips), total variation (smoothness), and a
 *    pull towards the painted face (it stays face-like). Adam on the pixels.
 *
 * The images are written as PNG files to a cache folder keyed by the
 * teacher, N, the seed and the generator version, so a second run reuses
 * them. The folder appears complete or not at all (built beside, renamed).
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { QuantFaceError, ioError } from '../errors.js';
import { Rng, Tensor, type FTensor } from '../tensor.js';
import { bufferPool } from '../nn/pool.js';
import type { ModelInfo } from '../io/model-info.js';
import type { Teacher } from './teacher.js';
import { cacheDir } from '../io/package-files.js';

/** Bump when the images a given (teacher, N, seed) produces change. */
export const GENERATOR_VERSION = 1;

export interface GenerateOptions {
  /** Number of faces. */
  count: number;
  /** Seed (default 0). */
  seed: number;
  /** Inversion iterations per face (default 60; 0 = painted faces only). */
  iterations?: number;
  /** Faces refined together (default 32). */
  batch?: number;
  /** Adam step on 0..255 pixels (default 3). */
  stepSize?: number;
  /** Weight of total variation (default 0.005). */
  tvWeight?: number;
  /** Weight of the pull towards the painted face (default 0.002). */
  priorWeight?: number;
  /** Maximum random shift in pixels per iteration (default 4). */
  jitter?: number;
  /** Cache folder root (default $QUANTFACE_CACHE, else $XDG_CACHE_HOME/quantface, else ~/.cache/quantface). */
  cacheDir?: string;
  onProgress?: (p: GenerateProgress) => void;
  signal?: AbortSignal;
}

export interface GenerateProgress {
  phase: 'painting' | 'refining' | 'writing' | 'cached';
  done: number;
  total: number;
  seconds: number;
}

export interface GeneratedSet {
  dir: string;
  cached: boolean;
  count: number;
  /** Mean teacher cosine to the targets after refinement (NaN when iterations = 0 or cached). */
  targetCosine: number;
}

/** Default cache root. */
export function defaultCacheDir(): string {
  return cacheDir();
}

// ====================================================================== painter
const S = 112;
/** ArcFace 5-point template (eyes, nose, mouth corners) for 112x112. */
const TEMPLATE: [number, number][] = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];

const SKIN: [number, number, number][] = [
  [255, 224, 196], [247, 210, 178], [241, 194, 160], [234, 183, 140], [224, 172, 120],
  [210, 155, 105], [198, 134, 86], [176, 118, 74], [150, 98, 60], [120, 78, 50], [92, 60, 40], [70, 45, 32],
];
const HAIR: [number, number, number][] = [
  [20, 16, 14], [40, 28, 20], [70, 48, 30], [100, 70, 40], [140, 100, 60], [190, 150, 95], [225, 200, 150], [160, 60, 30], [150, 150, 150], [210, 210, 210],
];
const IRIS: [number, number, number][] = [[60, 40, 25], [90, 60, 30], [40, 30, 20], [70, 100, 140], [80, 110, 80], [110, 90, 60]];

type RGB = [number, number, number];

class Canvas {
  readonly px = new Float32Array(S * S * 3);

  fill(c: RGB): void {
    for (let i = 0; i < S * S; i++) {
      this.px[i * 3] = c[0];
      this.px[i * 3 + 1] = c[1];
      this.px[i * 3 + 2] = c[2];
    }
  }

  /** Blends colour c with per-pixel alpha from f(x, y) in [0, 1]. */
  paint(c: RGB, f: (x: number, y: number) => number, box?: [number, number, number, number]): void {
    const [x0, y0, x1, y1] = box ?? [0, 0, S, S];
    const xa = Math.max(0, Math.floor(x0));
    const ya = Math.max(0, Math.floor(y0));
    const xb = Math.min(S, Math.ceil(x1));
    const yb = Math.min(S, Math.ceil(y1));
    for (let y = ya; y < yb; y++)
      for (let x = xa; x < xb; x++) {
        const a = f(x + 0.5, y + 0.5);
        if (a <= 0) continue;
        const k = (y * S + x) * 3;
        const b = a > 1 ? 1 : a;
        this.px[k] += (c[0] - this.px[k]!) * b;
        this.px[k + 1] += (c[1] - this.px[k + 1]!) * b;
        this.px[k + 2] += (c[2] - this.px[k + 2]!) * b;
      }
  }

  /** Multiplies pixels by (1 + f(x, y)). */
  shade(f: (x: number, y: number) => number): void {
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) {
        const m = 1 + f(x + 0.5, y + 0.5);
        const k = (y * S + x) * 3;
        this.px[k] *= m;
        this.px[k + 1] *= m;
        this.px[k + 2] *= m;
      }
  }
}

/** Soft ellipse coverage: 1 inside, 0 outside, a soft edge `soft` pixels wide. */
function ellipse(cx: number, cy: number, rx: number, ry: number, angle = 0, soft = 1): (x: number, y: number) => number {
  const ca = Math.cos(angle);
  const sa = Math.sin(angle);
  const r = Math.min(rx, ry);
  return (x, y) => {
    const dx = x - cx;
    const dy = y - cy;
    const u = (dx * ca + dy * sa) / rx;
    const v = (-dx * sa + dy * ca) / ry;
    const d = (Math.sqrt(u * u + v * v) - 1) * r; // ~ signed distance in pixels
    return 0.5 - d / soft;
  };
}

function mixRgb(a: RGB, b: RGB, t: number): RGB {
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

function scaleRgb(a: RGB, k: number): RGB {
  return [a[0] * k, a[1] * k, a[2] * k];
}

function pick<T>(rng: Rng, a: readonly T[]): T {
  return a[rng.int(a.length)]!;
}

function gaussBlur(px: Float32Array, sigma: number): void {
  if (sigma < 0.3) return;
  const r = Math.ceil(sigma * 2.5);
  const k: number[] = [];
  let sum = 0;
  for (let i = -r; i <= r; i++) {
    const v = Math.exp(-(i * i) / (2 * sigma * sigma));
    k.push(v);
    sum += v;
  }
  for (let i = 0; i < k.length; i++) k[i]! /= sum;
  const tmp = new Float32Array(px.length);
  const pass = (src: Float32Array, dst: Float32Array, horiz: boolean): void => {
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++)
        for (let c = 0; c < 3; c++) {
          let acc = 0;
          for (let i = -r; i <= r; i++) {
            const xx = horiz ? Math.min(S - 1, Math.max(0, x + i)) : x;
            const yy = horiz ? y : Math.min(S - 1, Math.max(0, y + i));
            acc += src[(yy * S + xx) * 3 + c]! * k[i + r]!;
          }
          dst[(y * S + x) * 3 + c] = acc;
        }
  };
  pass(px, tmp, true);
  pass(tmp, px, false);
}

/** Paints one aligned face (RGB 0..255, 112x112, NHWC) from a seeded generator. */
export function paintFace(rng: Rng): Float32Array {
  const cv = new Canvas();
  const u = (lo: number, hi: number): number => lo + (hi - lo) * rng.uniform();
  // pose: a small similarity transform of the template about the face centre
  const scale = u(0.92, 1.08);
  const rot = u(-0.12, 0.12);
  const tx = u(-3, 3);
  const ty = u(-3, 3);
  const yaw = u(-0.25, 0.25); // shifts inner features sideways, a cheap out-of-plane turn
  const cx0 = 56;
  const cy0 = 70;
  const P = (x: number, y: number): [number, number] => {
    const dx = (x - cx0) * scale;
    const dy = (y - cy0) * scale;
    return [cx0 + tx + dx * Math.cos(rot) - dy * Math.sin(rot), cy0 + ty + dx * Math.sin(rot) + dy * Math.cos(rot)];
  };
  const lm = TEMPLATE.map(([x, y]) => P(x + u(-1.5, 1.5) + yaw * 8, y + u(-1.5, 1.5)));
  const [le, re, nose, lmo, rmo] = lm as [[number, number], [number, number], [number, number], [number, number], [number, number]];
  const eyeDist = Math.hypot(re[0] - le[0], re[1] - le[1]);
  const ang = Math.atan2(re[1] - le[1], re[0] - le[0]);

  // background: a vertical gradient between two random colours, with a few soft blobs
  const bg1: RGB = [u(20, 235), u(20, 235), u(20, 235)];
  const bg2 = mixRgb(bg1, [u(0, 255), u(0, 255), u(0, 255)], u(0.2, 0.8));
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const c = mixRgb(bg1, bg2, y / S);
      const k = (y * S + x) * 3;
      cv.px[k] = c[0];
      cv.px[k + 1] = c[1];
      cv.px[k + 2] = c[2];
    }
  for (let i = 0, nb = rng.int(4); i < nb; i++) cv.paint([u(0, 255), u(0, 255), u(0, 255)], ellipse(u(0, S), u(0, S), u(8, 40), u(8, 40), u(0, 3), 12));

  const skin = mixRgb(pick(rng, SKIN), pick(rng, SKIN), u(0, 0.5));
  const skinC: RGB = [skin[0] * u(0.95, 1.05), skin[1] * u(0.95, 1.05), skin[2] * u(0.95, 1.05)];
  const hair = mixRgb(pick(rng, HAIR), pick(rng, HAIR), u(0, 0.3));
  const faceCx = (le[0] + re[0]) / 2 - yaw * 6;
  const faceCy = (le[1] + lmo[1]) / 2 + u(-1, 2);
  const faceRx = eyeDist * u(0.95, 1.12);
  const faceRy = eyeDist * u(1.3, 1.55);

  // shoulders and neck
  const clothes: RGB = [u(10, 240), u(10, 240), u(10, 240)];
  cv.paint(clothes, ellipse(faceCx, S + 25, u(55, 75), u(40, 55), 0, 3));
  cv.paint(scaleRgb(skinC, 0.8), ellipse(faceCx, faceCy + faceRy * 0.95, faceRx * 0.55, faceRy * 0.55, 0, 2));
  // hair behind the head
  const longHair = rng.uniform() < 0.4;
  cv.paint(hair, ellipse(faceCx, faceCy - faceRy * 0.2 + (longHair ? 12 : 0), faceRx * u(1.1, 1.3), faceRy * (longHair ? u(1.15, 1.4) : u(0.95, 1.1)), rot, 3));
  // ears
  for (const side of [-1, 1]) cv.paint(scaleRgb(skinC, 0.92), ellipse(faceCx + side * faceRx * 0.98, (le[1] + nose[1]) / 2, 5, 10, 0, 1.5));
  // face
  cv.paint(skinC, ellipse(faceCx, faceCy, faceRx, faceRy, rot, 1.5));
  // hairline / fringe
  const fringe = u(0.55, 0.85);
  cv.paint(hair, (x, y) => {
    const inHead = ellipse(faceCx, faceCy, faceRx * 1.02, faceRy * 1.02, rot, 1.5)(x, y);
    const hl = faceCy - faceRy * fringe + 4 * Math.sin((x - faceCx) / 7 + u(0, 0)) ;
    return Math.min(inHead, (hl - y) / 2 + 0.5);
  });
  // lighting: a directional shade over the face (pseudo-sphere normals)
  const lx = u(-1, 1);
  const ly = u(-0.8, 0.4);
  const strength = u(0.1, 0.35);
  cv.shade((x, y) => {
    const a = (x - faceCx) / (faceRx * 1.2);
    const b = (y - faceCy) / (faceRy * 1.2);
    const r2 = a * a + b * b;
    if (r2 >= 1) return 0;
    const nz = Math.sqrt(1 - r2);
    return strength * (a * lx + b * ly) * nz;
  });
  // eye sockets, eyes, lids, brows
  const irisC = pick(rng, IRIS);
  const eyeW = eyeDist * u(0.17, 0.22);
  const eyeH = eyeW * u(0.38, 0.55);
  const browC = scaleRgb(hair, u(0.6, 1));
  const browLift = u(8, 12);
  const browThick = u(1.5, 3.2);
  const gaze = u(-1.2, 1.2);
  for (const e of [le, re]) {
    cv.paint(scaleRgb(skinC, 0.8), ellipse(e[0], e[1] - 1, eyeW * 1.5, eyeH * 2.2, ang, 4));
    cv.paint([u(215, 245), u(210, 240), u(205, 235)], ellipse(e[0], e[1], eyeW, eyeH, ang, 1));
    const ir = eyeH * u(0.85, 1.05);
    cv.paint(irisC, (x, y) => Math.min(ellipse(e[0] + gaze, e[1], ir, ir, 0, 1)(x, y), ellipse(e[0], e[1], eyeW, eyeH, ang, 1)(x, y)));
    cv.paint([10, 8, 8], ellipse(e[0] + gaze, e[1], ir * 0.45, ir * 0.45, 0, 1));
    cv.paint([255, 255, 255], ellipse(e[0] + gaze - ir * 0.3, e[1] - ir * 0.3, 0.8, 0.8, 0, 0.8));
    // upper lid line
    cv.paint(scaleRgb(skinC, 0.35), (x, y) => Math.min(ellipse(e[0], e[1] - eyeH * 0.35, eyeW * 1.05, eyeH * 0.9, ang, 1)(x, y), 1 - ellipse(e[0], e[1] + eyeH * 0.25, eyeW * 1.05, eyeH * 1.1, ang, 1)(x, y)) * 0.8);
    // brow
    const bx = e[0] + (e === le ? -1 : 1) * u(0, 2);
    cv.paint(browC, ellipse(bx, e[1] - browLift, eyeW * u(1.2, 1.5), browThick, ang + (e === le ? -1 : 1) * u(0, 0.15), 1.2));
  }
  // nose: side shading, tip highlight, nostrils
  const nb = nose;
  cv.paint(scaleRgb(skinC, 0.82), ellipse(nb[0] + lx * -2, (le[1] + nb[1]) / 2 + 2, 2.2, (nb[1] - le[1]) * 0.5, ang, 2.5));
  cv.paint(scaleRgb(skinC, 1.08), ellipse(nb[0], nb[1] - 2, 3.5, 3, 0, 2));
  for (const side of [-1, 1]) cv.paint(scaleRgb(skinC, 0.45), ellipse(nb[0] + side * u(3.5, 5), nb[1] + 2.5, 2, 1.3, side * 0.3, 1));
  // mouth
  const mcx = (lmo[0] + rmo[0]) / 2;
  const mcy = (lmo[1] + rmo[1]) / 2;
  const mw = Math.hypot(rmo[0] - lmo[0], rmo[1] - lmo[1]) / 2;
  const lipC = mixRgb(skinC, [170, 60, 60], u(0.25, 0.6));
  const open = u(0, 1) < 0.2 ? u(1.5, 4) : 0;
  cv.paint(lipC, ellipse(mcx, mcy - 1.5, mw, u(2, 3.5), ang, 1.2));
  cv.paint(lipC, ellipse(mcx, mcy + 2 + open / 2, mw * 0.85, u(2.5, 4) + open / 2, ang, 1.2));
  cv.paint(scaleRgb(lipC, 0.35), ellipse(mcx, mcy + open / 3, mw * 0.95, 0.7 + open, ang, 1));
  if (open > 0) cv.paint([230, 225, 215], ellipse(mcx, mcy + 0.2, mw * 0.6, open * 0.35, ang, 0.8));
  // chin shadow, optional beard
  cv.paint(scaleRgb(skinC, 0.85), ellipse(faceCx, faceCy + faceRy * 0.75, faceRx * 0.45, 4, rot, 4));
  if (rng.uniform() < 0.2) {
    const beard = scaleRgb(hair, u(0.7, 1));
    cv.paint(beard, (x, y) => Math.min(ellipse(faceCx, faceCy + faceRy * 0.2, faceRx * 0.98, faceRy * 0.85, rot, 2)(x, y), (y - (mcy - 6)) / 3) * u(0.5, 0.9));
    cv.paint(lipC, ellipse(mcx, mcy + 1, mw * 0.85, 2.5, ang, 1.2));
  }
  // glasses
  if (rng.uniform() < 0.15) {
    const fc: RGB = [u(0, 80), u(0, 80), u(0, 80)];
    for (const e of [le, re]) cv.paint(fc, (x, y) => {
      const outer = ellipse(e[0], e[1] + 1, eyeW * 1.6, eyeH * 2.6, ang, 1)(x, y);
      const inner = ellipse(e[0], e[1] + 1, eyeW * 1.6 - 1.5, eyeH * 2.6 - 1.5, ang, 1)(x, y);
      return Math.min(outer, 1 - inner);
    });
    cv.paint(fc, ellipse((le[0] + re[0]) / 2, (le[1] + re[1]) / 2, eyeDist * 0.18, 0.8, ang, 1));
  }
  gaussBlur(cv.px, u(0.4, 1.1));
  const noise = u(1, 6);
  const gain = u(0.85, 1.15);
  const bias = u(-15, 15);
  for (let i = 0; i < cv.px.length; i++) {
    const v = cv.px[i]! * gain + bias + noise * rng.normal();
    cv.px[i] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
  return cv.px;
}

// ====================================================================== inversion
function toModelInput(info: ModelInfo, raw: Float32Array, n: number): { x: Tensor<'f32'>; inv: [number, number, number] } {
  const nz = info.preprocessing.normalize;
  const std = nz === 'raw' ? [1, 1, 1] : typeof nz.std === 'number' ? [nz.std, nz.std, nz.std] : nz.std;
  const mean = nz === 'raw' ? [0, 0, 0] : typeof nz.mean === 'number' ? [nz.mean, nz.mean, nz.mean] : nz.mean;
  const bgr = info.preprocessing.colorOrder === 'BGR';
  const x = Tensor.zeros([n, S, S, 3]);
  const d = x.data;
  for (let p = 0; p < n * S * S; p++)
    for (let c = 0; c < 3; c++) {
      const src = bgr ? 2 - c : c;
      d[p * 3 + c] = (raw[p * 3 + src]! - mean[c]!) / std[c]!;
    }
  // d(model input channel c)/d(raw channel src) = 1 / std[c]; returned per raw channel
  const inv: [number, number, number] = [0, 0, 0];
  for (let c = 0; c < 3; c++) inv[bgr ? 2 - c : c] = 1 / std[c]!;
  return { x, inv };
}

/** Shifted (and optionally mirrored) copy with edge clamping; `back` maps a gradient the other way (adjoint). */
function jitterCopy(src: Float32Array, off: number, dst: Float32Array, doff: number, dx: number, dy: number, flip: boolean): void {
  for (let y = 0; y < S; y++) {
    const sy = Math.min(S - 1, Math.max(0, y - dy));
    for (let x = 0; x < S; x++) {
      const xx = flip ? S - 1 - x : x;
      const sx = Math.min(S - 1, Math.max(0, xx - dx));
      const s = off + (sy * S + sx) * 3;
      const d = doff + (y * S + x) * 3;
      dst[d] = src[s]!;
      dst[d + 1] = src[s + 1]!;
      dst[d + 2] = src[s + 2]!;
    }
  }
}

function jitterAdjointAdd(g: Float32Array, goff: number, acc: Float32Array, aoff: number, dx: number, dy: number, flip: boolean, k: [number, number, number]): void {
  for (let y = 0; y < S; y++) {
    const sy = Math.min(S - 1, Math.max(0, y - dy));
    for (let x = 0; x < S; x++) {
      const xx = flip ? S - 1 - x : x;
      const sx = Math.min(S - 1, Math.max(0, xx - dx));
      const s = aoff + (sy * S + sx) * 3;
      const d = goff + (y * S + x) * 3;
      acc[s] += g[d]! * k[0];
      acc[s + 1] += g[d + 1]! * k[1];
      acc[s + 2] += g[d + 2]! * k[2];
    }
  }
}

/**
 * Refines painted faces in place (n faces, raw RGB 0..255) towards random
 * unit targets. Returns the mean final cosine to the targets.
 */
export function invertTowardsTargets(
  teacher: Teacher,
  faces: Float32Array,
  n: number,
  rng: Rng,
  o: { iterations: number; stepSize: number; tvWeight: number; priorWeight: number; jitter: number },
  onIter?: () => void,
): number {
  const model = teacher.model.clone();
  for (const p of model.parameters()) p.requiresGrad = false;
  model.eval();
  const D = teacher.info.outputDim;
  const per = S * S * 3;
  const targets = new Float64Array(n * D);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < D; j++) {
      const v = rng.normal();
      targets[i * D + j] = v;
      s += v * v;
    }
    s = Math.sqrt(s);
    for (let j = 0; j < D; j++) targets[i * D + j]! /= s;
  }
  const prior = faces.slice(0, n * per);
  const m = new Float32Array(n * per);
  const v = new Float32Array(n * per);
  const grad = new Float32Array(n * per);
  const jit = new Float32Array(n * per);
  const b1 = 0.9;
  const b2 = 0.999;
  let lastCos = NaN;
  for (let it = 0; it < o.iterations; it++) {
    const shifts = Array.from({ length: n }, () => [rng.int(2 * o.jitter + 1) - o.jitter, rng.int(2 * o.jitter + 1) - o.jitter, rng.uniform() < 0.5 ? 1 : 0] as const);
    for (let i = 0; i < n; i++) jitterCopy(faces, i * per, jit, i * per, shifts[i]![0], shifts[i]![1], shifts[i]![2] === 1);
    const { x, inv } = toModelInput(teacher.info, jit, n);
    const y = model.forward(x);
    // loss = mean_i (1 - cos(y_i, t_i)); dL/dy_i = -(t - cos * y/|y|) / |y| / n
    const gy = Tensor.zeros([n, D]);
    let cosSum = 0;
    for (let i = 0; i < n; i++) {
      let yy = 0;
      let yt = 0;
      for (let j = 0; j < D; j++) {
        const a = y.data[i * D + j]!;
        yy += a * a;
        yt += a * targets[i * D + j]!;
      }
      const ny = Math.max(Math.sqrt(yy), 1e-12);
      const cos = yt / ny;
      cosSum += cos;
      for (let j = 0; j < D; j++) gy.data[i * D + j] = (-(targets[i * D + j]! - (cos * y.data[i * D + j]!) / ny) / ny) / n;
    }
    lastCos = cosSum / n;
    const gx = model.backward(gy) as FTensor;
    grad.fill(0);
    for (let i = 0; i < n; i++) jitterAdjointAdd(gx.data as Float32Array, i * per, grad, i * per, shifts[i]![0], shifts[i]![1], shifts[i]![2] === 1, inv);
    bufferPool.release(gx);
    // Normalise the identity gradient per image (its scale depends on the model), then add the priors.
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = i * per; k < (i + 1) * per; k++) s += grad[k]! * grad[k]!;
      const scale = 1 / Math.max(Math.sqrt(s / per), 1e-20);
      for (let k = i * per; k < (i + 1) * per; k++) grad[k]! *= scale;
    }
    for (let i = 0; i < n; i++) {
      const base = i * per;
      for (let yy = 0; yy < S; yy++)
        for (let xx = 0; xx < S; xx++)
          for (let c = 0; c < 3; c++) {
            const k = base + (yy * S + xx) * 3 + c;
            const val = faces[k]!;
            let tv = 0;
            if (xx > 0) tv += Math.sign(val - faces[k - 3]!);
            if (xx < S - 1) tv += Math.sign(val - faces[k + 3]!);
            if (yy > 0) tv += Math.sign(val - faces[k - S * 3]!);
            if (yy < S - 1) tv += Math.sign(val - faces[k + S * 3]!);
            grad[k]! += o.tvWeight * 50 * tv + o.priorWeight * (val - prior[k]!);
          }
    }
    const t = it + 1;
    const c1 = 1 - b1 ** t;
    const c2 = 1 - b2 ** t;
    for (let k = 0; k < n * per; k++) {
      const g = grad[k]!;
      const mk = b1 * m[k]! + (1 - b1) * g;
      const vk = b2 * v[k]! + (1 - b2) * g * g;
      m[k] = mk;
      v[k] = vk;
      const nv = faces[k]! - (o.stepSize * (mk / c1)) / (Math.sqrt(vk / c2) + 1e-8);
      faces[k] = nv < 0 ? 0 : nv > 255 ? 255 : nv;
    }
    onIter?.();
  }
  return lastCos;
}

// ====================================================================== cache + driver
async function countPngs(dir: string): Promise<number> {
  try {
    return (await readdir(dir)).filter((f) => f.endsWith('.png')).length;
  } catch {
    return 0;
  }
}

/** Makes (or finds in the cache) `count` data-free faces for this teacher; returns their folder. */
export async function generateFaces(teacher: Teacher, opts: GenerateOptions): Promise<GeneratedSet> {
  const count = opts.count;
  if (!Number.isInteger(count) || count < 1) throw new QuantFaceError('E_ARG', `generate: count must be a positive integer (got ${String(count)})`);
  if (teacher.info.inputShape[0] !== S || teacher.info.inputShape[1] !== S)
    throw new QuantFaceError('E_UNSUPPORTED_OP', `generated:N makes ${S}x${S} ArcFace-aligned faces; teacher ${teacher.info.name} takes ${teacher.info.inputShape[0]}x${teacher.info.inputShape[1]}: pass --data DIR instead`);
  const o = {
    iterations: opts.iterations ?? 60,
    stepSize: opts.stepSize ?? 3,
    tvWeight: opts.tvWeight ?? 0.005,
    priorWeight: opts.priorWeight ?? 0.002,
    jitter: opts.jitter ?? 4,
  };
  const batch = opts.batch ?? 32;
  for (const [k, val] of Object.entries(o)) if (!(typeof val === 'number' && Number.isFinite(val) && val >= 0)) throw new QuantFaceError('E_ARG', `generate: ${k} must be a number >= 0 (got ${String(val)})`);
  if (!Number.isInteger(o.iterations) || !Number.isInteger(o.jitter)) throw new QuantFaceError('E_ARG', 'generate: iterations and jitter must be integers');
  const seed = opts.seed ?? 0;
  const root = resolve(opts.cacheDir ?? defaultCacheDir());
  const key = `v${GENERATOR_VERSION}-${teacher.sha256.slice(0, 12)}-n${count}-s${seed}-i${o.iterations}-st${o.stepSize}-tv${o.tvWeight}-p${o.priorWeight}-j${o.jitter}`;
  const dir = join(root, 'generated', key);
  const t0 = performance.now();
  const report = (phase: GenerateProgress['phase'], done: number): void => opts.onProgress?.({ phase, done, total: count, seconds: (performance.now() - t0) / 1000 });
  if (existsSync(join(dir, 'manifest.json')) && (await countPngs(dir)) === count) {
    report('cached', count);
    return { dir, cached: true, count, targetCosine: NaN };
  }
  try {
    await mkdir(join(root, 'generated'), { recursive: true });
  } catch (e) {
    throw ioError(e, root, 'create');
  }
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  try {
    await mkdir(tmp, { recursive: true });
    const rng = new Rng(seed ^ 0x6a09e667);
    const per = S * S * 3;
    let cosSum = 0;
    let cosN = 0;
    for (let start = 0; start < count; start += batch) {
      if (opts.signal?.aborted) throw new QuantFaceError('E_ARG', 'generation interrupted');
      const n = Math.min(batch, count - start);
      const faces = new Float32Array(n * per);
      for (let i = 0; i < n; i++) faces.set(paintFace(rng.fork()), i * per);
      report('painting', start);
      if (o.iterations > 0) {
        let its = 0;
        const c = invertTowardsTargets(teacher, faces, n, rng.fork(), o, () => {
          its++;
          if (its % 10 === 0) report('refining', start + Math.round((n * its) / o.iterations));
        });
        cosSum += c * n;
        cosN += n;
        await new Promise<void>((r) => setImmediate(r));
      }
      report('writing', start + n);
      for (let i = 0; i < n; i++) {
        const u8 = new Uint8Array(per);
        for (let k = 0; k < per; k++) u8[k] = Math.round(faces[i * per + k]!);
        const png = await sharp(Buffer.from(u8.buffer), { raw: { width: S, height: S, channels: 3 } }).png().toBuffer();
        await writeFile(join(tmp, `face_${String(start + i).padStart(6, '0')}.png`), png);
      }
    }
    const targetCosine = cosN ? cosSum / cosN : NaN;
    await writeFile(
      join(tmp, 'manifest.json'),
      JSON.stringify({ kind: 'quantface-generated-faces', version: GENERATOR_VERSION, teacherSha256: teacher.sha256, teacher: teacher.info.name, count, seed, ...o, targetCosine, created: new Date().toISOString() }, null, 1),
    );
    if (existsSync(dir)) await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    report('writing', count);
    return { dir, cached: false, count, targetCosine };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    if (e instanceof QuantFaceError) throw e;
    throw ioError(e, dir, 'write');
  }
}

/** Reads a generated set's manifest (for provenance). */
export async function readGeneratedManifest(dir: string): Promise<Record<string, unknown> | null> {
  try {
    return JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
}
