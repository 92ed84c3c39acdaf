/**
 * Plain JavaScript reference kernels with the semantics of binding.d.ts,
 * generic over Float32Array / Float64Array. They run the f64 dtype (float64
 * gradient checks) and stand in for a native kernel that a development
 * build lacks. Slow by design: simple loops, no blocking.
 */
import type { FloatArray } from '../tensor.js';

export interface ConvGeom {
  n: number;
  h: number;
  w: number;
  c: number;
  cout: number;
  kh: number;
  kw: number;
  strideH: number;
  strideW: number;
  padTop: number;
  padLeft: number;
  padBottom: number;
  padRight: number;
  dilationH: number;
  dilationW: number;
  groups: number;
}

export function convOutSize(g: ConvGeom): [number, number] {
  const oh = Math.floor((g.h + g.padTop + g.padBottom - g.dilationH * (g.kh - 1) - 1) / g.strideH) + 1;
  const ow = Math.floor((g.w + g.padLeft + g.padRight - g.dilationW * (g.kw - 1) - 1) / g.strideW) + 1;
  return [oh, ow];
}

/** out[n,oh,ow,co] = bias[co] + sum x[n,ih,iw,g*cig+ci] * w[co,kh,kw,ci] */
export function conv2dRef(g: ConvGeom, x: FloatArray, w: FloatArray, bias: FloatArray | undefined, out: FloatArray): void {
  const [oh, ow] = convOutSize(g);
  const cig = g.c / g.groups;
  const cog = g.cout / g.groups;
  const wstride = g.kh * g.kw * cig;
  for (let n = 0; n < g.n; n++)
    for (let y = 0; y < oh; y++)
      for (let xo = 0; xo < ow; xo++) {
        const obase = ((n * oh + y) * ow + xo) * g.cout;
        for (let co = 0; co < g.cout; co++) {
          const gi = (co / cog) | 0;
          let acc = bias ? bias[co]! : 0;
          for (let ky = 0; ky < g.kh; ky++) {
            const iy = y * g.strideH - g.padTop + ky * g.dilationH;
            if (iy < 0 || iy >= g.h) continue;
            for (let kx = 0; kx < g.kw; kx++) {
              const ix = xo * g.strideW - g.padLeft + kx * g.dilationW;
              if (ix < 0 || ix >= g.w) continue;
              const xb = ((n * g.h + iy) * g.w + ix) * g.c + gi * cig;
              const wb = co * wstride + (ky * g.kw + kx) * cig;
              for (let ci = 0; ci < cig; ci++) acc += x[xb + ci]! * w[wb + ci]!;
            }
          }
          out[obase + co] = acc;
        }
      }
}

export function conv2dBackwardInputRef(g: ConvGeom, gradOut: FloatArray, w: FloatArray, gradIn: FloatArray, accumulate: boolean): void {
  const [oh, ow] = convOutSize(g);
  const cig = g.c / g.groups;
  const cog = g.cout / g.groups;
  const wstride = g.kh * g.kw * cig;
  if (!accumulate) gradIn.fill(0);
  for (let n = 0; n < g.n; n++)
    for (let y = 0; y < oh; y++)
      for (let xo = 0; xo < ow; xo++) {
        const obase = ((n * oh + y) * ow + xo) * g.cout;
        for (let co = 0; co < g.cout; co++) {
          const gv = gradOut[obase + co]!;
          if (gv === 0) continue;
          const gi = (co / cog) | 0;
          for (let ky = 0; ky < g.kh; ky++) {
            const iy = y * g.strideH - g.padTop + ky * g.dilationH;
            if (iy < 0 || iy >= g.h) continue;
            for (let kx = 0; kx < g.kw; kx++) {
              const ix = xo * g.strideW - g.padLeft + kx * g.dilationW;
              if (ix < 0 || ix >= g.w) continue;
              const xb = ((n * g.h + iy) * g.w + ix) * g.c + gi * cig;
              const wb = co * wstride + (ky * g.kw + kx) * cig;
              for (let ci = 0; ci < cig; ci++) gradIn[xb + ci] += gv * w[wb + ci]!;
            }
          }
        }
      }
}

export function conv2dBackwardWeightRef(
  g: ConvGeom,
  x: FloatArray,
  gradOut: FloatArray,
  gradW: FloatArray,
  gradBias: FloatArray | undefined,
  accumulate: boolean,
): void {
  const [oh, ow] = convOutSize(g);
  const cig = g.c / g.groups;
  const cog = g.cout / g.groups;
  const wstride = g.kh * g.kw * cig;
  if (!accumulate) {
    gradW.fill(0);
    gradBias?.fill(0);
  }
  for (let n = 0; n < g.n; n++)
    for (let y = 0; y < oh; y++)
      for (let xo = 0; xo < ow; xo++) {
        const obase = ((n * oh + y) * ow + xo) * g.cout;
        for (let co = 0; co < g.cout; co++) {
          const gv = gradOut[obase + co]!;
          if (gradBias) gradBias[co] += gv;
          if (gv === 0) continue;
          const gi = (co / cog) | 0;
          for (let ky = 0; ky < g.kh; ky++) {
            const iy = y * g.strideH - g.padTop + ky * g.dilationH;
            if (iy < 0 || iy >= g.h) continue;
            for (let kx = 0; kx < g.kw; kx++) {
              const ix = xo * g.strideW - g.padLeft + kx * g.dilationW;
              if (ix < 0 || ix >= g.w) continue;
              const xb = ((n * g.h + iy) * g.w + ix) * g.c + gi * cig;
              const wb = co * wstride + (ky * g.kw + kx) * cig;
              for (let ci = 0; ci < cig; ci++) gradW[wb + ci] += gv * x[xb + ci]!;
            }
          }
        }
      }
}

export interface GemmArgs {
  transA?: boolean;
  transB?: boolean;
  m: number;
  n: number;
  k: number;
  alpha?: number;
  a: FloatArray;
  lda?: number;
  b: FloatArray;
  ldb?: number;
  beta?: number;
  c: FloatArray;
  ldc?: number;
}

/** C = alpha op(A) op(B) + beta C, row-major; beta = 0 does not read C. */
export function gemmRef(o: GemmArgs): void {
  const { m, n, k } = o;
  const ta = !!o.transA;
  const tb = !!o.transB;
  const alpha = o.alpha ?? 1;
  const beta = o.beta ?? 0;
  const lda = o.lda ?? (ta ? m : k);
  const ldb = o.ldb ?? (tb ? k : n);
  const ldc = o.ldc ?? n;
  const { a, b, c } = o;
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const av = ta ? a[p * lda + i]! : a[i * lda + p]!;
      if (av === 0) continue;
      if (tb) for (let j = 0; j < n; j++) row[j] += av * b[j * ldb + p]!;
      else {
        const bb = p * ldb;
        for (let j = 0; j < n; j++) row[j] += av * b[bb + j]!;
      }
    }
    const cb = i * ldc;
    if (beta === 0) for (let j = 0; j < n; j++) c[cb + j] = alpha * row[j]!;
    else for (let j = 0; j < n; j++) c[cb + j] = alpha * row[j]! + beta * c[cb + j]!;
  }
}

export interface FakeQuantArgs {
  x: FloatArray;
  out: FloatArray;
  scale: ArrayLike<number>;
  zeroPoint: ArrayLike<number>;
  quantMin: number;
  quantMax: number;
  channels?: number;
  inner?: number;
  mask?: Uint8Array;
}

/**
 * out = (clamp(rne(x / scale) + zp, qmin, qmax) - zp) * scale. For
 * Float32Array data the division and the product are rounded to float32,
 * as the native kernel computes them.
 */
export function fakeQuantizeRef(o: FakeQuantArgs): void {
  const { x, out, scale, zeroPoint, quantMin, quantMax, mask } = o;
  const channels = o.channels ?? 1;
  const inner = o.inner ?? 1;
  const f32 = x instanceof Float32Array;
  const n = x.length;
  // Runs of `inner` elements share a channel: loop over runs, no division per element.
  const runs = Math.ceil(n / inner);
  for (let r = 0; r < runs; r++) {
    const ch = channels === 1 ? 0 : r % channels;
    const s = scale[ch]!;
    const zp = zeroPoint[ch]!;
    const lo = quantMin - zp;
    const hi = quantMax - zp;
    const end = Math.min(n, (r + 1) * inner);
    for (let i = r * inner; i < end; i++) {
      const v = f32 ? Math.fround(x[i]! / s) : x[i]! / s;
      // q - zp = clamp(rne(v), quantMin - zp, quantMax - zp): rne inlined.
      let k = Math.round(v);
      if (k - v === 0.5 && k % 2 !== 0) k -= 1;
      let inside = 1;
      if (k < lo) {
        k = lo;
        inside = 0;
      } else if (k > hi) {
        k = hi;
        inside = 0;
      } else if (k !== k) inside = 0;
      out[i] = k * s;
      if (mask) mask[i] = inside;
    }
  }
}

export function fakeQuantizeBackwardRef(gradOut: FloatArray, gradIn: FloatArray, mask: Uint8Array | undefined, accumulate: boolean): void {
  const n = gradOut.length;
  if (accumulate) {
    if (mask) for (let i = 0; i < n; i++) gradIn[i] += mask[i] ? gradOut[i]! : 0;
    else for (let i = 0; i < n; i++) gradIn[i] += gradOut[i]!;
  } else if (mask) for (let i = 0; i < n; i++) gradIn[i] = mask[i] ? gradOut[i]! : 0;
  else if (gradIn !== gradOut) gradIn.set(gradOut);
}

/** Per-channel min and max, NaN ignored; a channel without data gives min = +Infinity, max = -Infinity; zeros are +0. */
export function minMaxRef(x: FloatArray, min: FloatArray, max: FloatArray, channels = 1, inner = 1): void {
  min.fill(Infinity);
  max.fill(-Infinity);
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    if (Number.isNaN(v)) continue;
    const ch = channels === 1 ? 0 : Math.floor(i / inner) % channels;
    if (v < min[ch]!) min[ch] = v;
    if (v > max[ch]!) max[ch] = v;
  }
  for (let c = 0; c < channels; c++) {
    if (min[c] === 0) min[c] = 0;
    if (max[c] === 0) max[c] = 0;
  }
}

/** Round half to even of a JS number (as lib/quant/qparams.ts roundHalfEven; keeps the sign of zero). */
function rneNumber(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x);
  const d = x - f;
  let r: number;
  if (d < 0.5) r = f;
  else if (d > 0.5) r = f + 1;
  else r = f % 2 === 0 ? f : f + 1;
  return r === 0 && (x < 0 || Object.is(x, -0)) ? -0 : r;
}

export interface QDropFakeQuantArgs {
  x: FloatArray;
  out: FloatArray;
  /** 1 where the element was dropped (kept in float), else 0. */
  drop: Uint8Array;
  /** Per tensor: scale[0], zeroPoint[0]. */
  scale: ArrayLike<number>;
  zeroPoint: ArrayLike<number>;
  quantMin: number;
  quantMax: number;
  /** Drop where the xorshift32 value < threshold (an integer in [0, 2^32]). */
  threshold: number;
  /** xorshift32 state before element 0 (an integer in [0, 2^32)). */
  seed: number;
}

/**
 * QDrop over a per-tensor fake quantization (lib/distill/learned-range.ts):
 * out = fakeQuantize(x), then, for each element in order, one xorshift32 step
 * (st ^= st << 13; st ^= st >>> 17; st ^= st << 5) and, where st < threshold,
 * drop[i] = 1 and out[i] = x[i] (else drop[i] = 0). Returns the state after
 * the last element.
 */
export function qdropFakeQuantizeRef(o: QDropFakeQuantArgs): number {
  fakeQuantizeRef({ x: o.x, out: o.out, scale: o.scale, zeroPoint: o.zeroPoint, quantMin: o.quantMin, quantMax: o.quantMax });
  const { x, out, drop, threshold } = o;
  let r = o.seed;
  for (let i = 0; i < x.length; i++) {
    r ^= r << 13;
    r ^= r >>> 17;
    r ^= r << 5;
    const d = r >>> 0 < threshold ? 1 : 0;
    drop[i] = d;
    if (d) out[i] = x[i]!;
  }
  return r >>> 0;
}

export interface LearnedRangeBackwardArgs {
  x: FloatArray;
  gradOut: FloatArray;
  /** Written when given: gradOut where dropped or inside the range, +0 where clipped. */
  gradIn?: FloatArray;
  /** QDrop mask of the forward (nonzero = dropped). */
  drop?: Uint8Array;
  /** One scale / zero point per channel. */
  scale: ArrayLike<number>;
  zeroPoint: ArrayLike<number>;
  quantMin: number;
  quantMax: number;
  /** Element i belongs to channel floor(i / (x.length / channels)). Default 1. */
  channels?: number;
  /**
   * Per channel c (written): sums[3c] = sum of gradOut below the range,
   * sums[3c + 1] = above it, sums[3c + 2] = sum of gradOut * (rne(x / s) - x / s)
   * inside it (not dropped), float64 sums in element order.
   */
  sums: Float64Array;
}

/**
 * Gradients of a learned quantization range (LSQ with a zero point; the loops
 * of lib/distill/learned-range.ts and lib/quant/weight-range.ts): the clipped
 * straight-through gradient to x and, per channel, the sums from which the
 * range gradients follow. For Float32Array x the division is rounded to float32.
 */
export function learnedRangeBackwardRef(o: LearnedRangeBackwardArgs): void {
  const { x, gradOut: g, gradIn: gi, drop, scale, zeroPoint, quantMin, quantMax, sums } = o;
  const channels = o.channels ?? 1;
  const inner = x.length / channels;
  const f32 = x instanceof Float32Array;
  for (let c = 0; c < channels; c++) {
    const s = scale[c]!;
    const zp = zeroPoint[c]!;
    let gLo = 0;
    let gHi = 0;
    let gS = 0;
    for (let i = c * inner; i < (c + 1) * inner; i++) {
      const gv = g[i]!;
      if (drop !== undefined && drop[i] !== 0) {
        if (gi) gi[i] = gv;
        continue;
      }
      const xs = f32 ? Math.fround(x[i]! / s) : x[i]! / s;
      const r = rneNumber(xs);
      const q = r + zp;
      if (q < quantMin) {
        if (gi) gi[i] = 0;
        gLo += gv;
      } else if (q > quantMax) {
        if (gi) gi[i] = 0;
        gHi += gv;
      } else {
        if (gi) gi[i] = gv;
        gS += gv * (r - xs);
      }
    }
    sums[3 * c] = gLo;
    sums[3 * c + 1] = gHi;
    sums[3 * c + 2] = gS;
  }
}
