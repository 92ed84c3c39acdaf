/**
 * Quantization parameters (scale, zero point, integer range) from an
 * observed range, following QuantFace's uniform asymmetric quantizer
 * (see ../../../shared/method.md) with PyTorch's vocabulary:
 *
 *   [a, b] = [min(min, 0), max(max, 0)]           (the range always contains 0)
 *   scale  = (b - a) / (quantMax - quantMin)      (= delta = (b - a) / (2^k - 1) for unsigned k bits)
 *   zeroPoint = quantMin - roundHalfEven(a / scale), clamped to [quantMin, quantMax]
 *
 * so a real 0 is represented exactly (quantize(0) = zeroPoint) and the
 * kernels' q = clamp(rne(x / scale) + zeroPoint, quantMin, quantMax) covers
 * [a, b].
 */

/** Round half to even (banker's rounding) of a JS number. `Math.round` rounds half up. Keeps the sign of zero. */
export function roundHalfEven(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x);
  const d = x - f; // exact for doubles
  let r: number;
  if (d < 0.5) r = f;
  else if (d > 0.5) r = f + 1;
  else r = f % 2 === 0 ? f : f + 1;
  // nearbyint keeps the sign: rne(-0.3) = -0, rne(-0.5) = -0.
  return r === 0 && (x < 0 || Object.is(x, -0)) ? -0 : r;
}

export interface ChooseQParamsOptions {
  /** Observed minimum: a number (per tensor) or one value per channel (e.g. binding.minMax output). */
  min: number | ArrayLike<number>;
  /** Observed maximum, same shape as `min`. */
  max: number | ArrayLike<number>;
  /** Bit width, 2..16. */
  bits: number;
  /**
   * Symmetric range (PyTorch's per_tensor_symmetric): zeroPoint is the middle of
   * the integer range (0 for signed, 2^(bits-1) for unsigned) and
   * scale = max(|a|, |b|) / ((quantMax - quantMin) / 2). Default false:
   * QuantFace's asymmetric scheme.
   */
  symmetric?: boolean;
  /** Drop the lowest integer: signed [-(2^(k-1) - 1), 2^(k-1) - 1], unsigned [1, 2^k - 1]. Default false. */
  narrowRange?: boolean;
  /** Signed integer range [-2^(k-1), 2^(k-1) - 1] instead of unsigned [0, 2^k - 1]. Default false. */
  signed?: boolean;
}

export interface QParams {
  /** One scale per channel (length 1 per tensor), each > 0 and finite. */
  scale: Float32Array;
  /** One zero point per channel, within [quantMin, quantMax]. */
  zeroPoint: Int32Array;
  quantMin: number;
  quantMax: number;
}

/** Smallest scale returned (the smallest normal float32): keeps x / scale finite for in-range x. */
export const MIN_SCALE = 1.1754943508222875e-38;
const MAX_FLOAT32 = 3.4028234663852886e38;

/** Integer range for a bit width: unsigned [0, 2^k - 1] or signed [-2^(k-1), 2^(k-1) - 1], narrowRange drops the lowest. */
export function quantRange(bits: number, signed = false, narrowRange = false): { quantMin: number; quantMax: number } {
  if (!Number.isInteger(bits) || bits < 2 || bits > 16) throw new RangeError(`quantRange: bits must be an integer in [2, 16] (got ${bits})`);
  let quantMin = signed ? -(2 ** (bits - 1)) : 0;
  const quantMax = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  if (narrowRange) quantMin += 1;
  return { quantMin, quantMax };
}

/**
 * Chooses scale and zero point for the range [min, max] (per tensor when
 * min/max are numbers, per channel when they are arrays).
 *
 * Degenerate ranges (documented choices):
 * - min = +Infinity and max = -Infinity (binding.minMax on an empty or
 *   all-NaN channel) is treated as the range [0, 0].
 * - A range of width 0 (all values 0 after including 0) gets scale = 1 and
 *   the zero point of the range [0, 0] (quantMin for asymmetric, the middle
 *   for symmetric): every value then quantizes to the zero point, i.e. to 0.
 * - A tiny nonzero range whose scale would underflow float32 gets
 *   scale = MIN_SCALE.
 * Other non-finite values, NaN, or min > max throw a RangeError.
 *
 * The scale is computed in float64 and rounded once to float32; the zero
 * point is computed from that float32 scale.
 */
export function chooseQParams(o: ChooseQParamsOptions): QParams {
  const { quantMin, quantMax } = quantRange(o.bits, o.signed ?? false, o.narrowRange ?? false);
  const perChannel = typeof o.min !== 'number';
  const mins: ArrayLike<number> = typeof o.min === 'number' ? [o.min] : o.min;
  const maxs: ArrayLike<number> = typeof o.max === 'number' ? [o.max] : o.max;
  if ((typeof o.max !== 'number') !== perChannel)
    throw new TypeError('chooseQParams: min and max must both be numbers or both be arrays');
  if (mins.length !== maxs.length)
    throw new RangeError(`chooseQParams: min has ${mins.length} values but max has ${maxs.length}`);
  const n = mins.length;
  const scale = new Float32Array(n);
  const zeroPoint = new Int32Array(n);
  const levels = quantMax - quantMin;
  const mid = Math.floor((quantMin + quantMax + 1) / 2);
  for (let c = 0; c < n; c++) {
    let lo = mins[c];
    let hi = maxs[c];
    const where = perChannel ? `[${c}]` : '';
    if (lo === Infinity && hi === -Infinity) {
      lo = 0;
      hi = 0;
    }
    if (!Number.isFinite(lo)) throw new RangeError(`chooseQParams: min${where} must be finite (got ${lo})`);
    if (!Number.isFinite(hi)) throw new RangeError(`chooseQParams: max${where} must be finite (got ${hi})`);
    if (lo > hi) throw new RangeError(`chooseQParams: min${where} = ${lo} is greater than max${where} = ${hi}`);
    const a = Math.min(lo, 0);
    const b = Math.max(hi, 0);
    let s: number;
    if (o.symmetric) {
      const amax = Math.max(-a, b);
      s = amax === 0 ? 1 : Math.fround(amax / (levels / 2));
    } else {
      s = b === a ? 1 : Math.fround((b - a) / levels);
    }
    if (s < MIN_SCALE) s = MIN_SCALE;
    if (s === Infinity) s = MAX_FLOAT32; // only for inputs beyond float32's range
    const z = o.symmetric ? mid : quantMin - roundHalfEven(a / s);
    scale[c] = s;
    zeroPoint[c] = Math.min(quantMax, Math.max(quantMin, z));
  }
  return { scale, zeroPoint, quantMin, quantMax };
}
