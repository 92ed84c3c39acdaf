/**
 * Clipped per-channel weight ranges (beyond the QuantFace paper, which uses
 * each output channel's min/max): at 4 bits the min/max range spends most of
 * its 16 levels on a few outlier weights. ClippedWeightFakeQuant keeps the
 * QuantFace quantizer (asymmetric, per output channel, recomputed from the
 * float master weight at every forward) but narrows each channel's range:
 *
 *   lo_c = rLo_c * min_c(w),  hi_c = rHi_c * max_c(w)   (0 < r <= 1)
 *
 * (a channel whose min is > 0 keeps lo = 0, one whose max is < 0 keeps
 * hi = 0), then scale / zero point from chooseQParams as before.
 *
 * - `mse` ratios (`initRatios`): per channel, the pair (rLo, rHi) that
 *   minimises the squared quantization error of the channel's weights (a
 *   grid search over a common ratio, then two rounds of coordinate search
 *   on each end), computed once from the weight the quantizer is built on
 *   (the teacher's) and kept fixed;
 * - `learned`: the same start, then rLo, rHi are Parameters trained by the
 *   distillation loss (LSQ-style gradient with the zero point, as
 *   ../distill/learned-range.ts for activations; min/max of the weight are
 *   treated as constants), kept in [MIN_RATIO, 1].
 *
 * Backward to the weight is the clipped straight-through estimator (zero
 * where a weight was clamped: its value no longer reaches the output), as
 * in LSQ.
 *
 * Saving: the .qfm format and the integer runtime know the min/max
 * WeightFakeQuant. `bakeClippedWeights` replaces each ClippedWeightFakeQuant
 * by a WeightFakeQuant of the same width and writes the fake-quantized
 * weight into the master weight: every channel's smallest (largest) weight
 * lands exactly on the lowest (highest) level of the clipped grid, so the
 * min/max quantizer over the baked weight reproduces the clipped grid and
 * the model computes what it computed before (up to float32 rounding of the
 * recomputed scale, as any saved and reloaded QAT model).
 */
import { Tensor, QuantFaceError, type FTensor } from '../tensor.js';
import { Module, Parameter, noGrad } from '../nn/module.js';
import { Conv2d, Linear, WeightTransform } from '../nn/layers.js';
import * as K from '../nn/kernels.js';
import { chooseQParams, roundHalfEven, type QParams } from './qparams.js';
import { WeightFakeQuant } from './fake-quant.js';

export type WeightRangeMode = 'minmax' | 'mse' | 'learned';

/** Smallest clipping ratio a learned range may reach. */
export const MIN_RATIO = 0.05;

const COARSE = Array.from({ length: 36 }, (_, i) => 1 - i * 0.02); // 1.00 .. 0.30
const FINE_STEP = 0.01;

/** Sum of squared quantization errors of x[from..to) for the asymmetric range [lo, hi] at `bits`. */
export function rangeError(x: ArrayLike<number>, from: number, to: number, lo: number, hi: number, bits: number): number {
  const qp = chooseQParams({ min: Math.min(lo, 0), max: Math.max(hi, 0), bits });
  const s = qp.scale[0]!;
  const zp = qp.zeroPoint[0]!;
  const a = qp.quantMin - zp;
  const b = qp.quantMax - zp;
  let e = 0;
  for (let i = from; i < to; i++) {
    const v = x[i]!;
    let k = roundHalfEven(Math.fround(v / s));
    if (k < a) k = a;
    else if (k > b) k = b;
    const d = k * s - v;
    e += d * d;
  }
  return e;
}

function channelMinMax(w: FTensor, channels: number, inner: number): { min: Float64Array; max: Float64Array } {
  const min = new Float64Array(channels);
  const max = new Float64Array(channels);
  if (w.dtype === 'f32') {
    const a = new Float32Array(channels);
    const b = new Float32Array(channels);
    K.minMax(w.data, a, b, channels, inner);
    min.set(a);
    max.set(b);
  } else K.minMax(w.data, min, max, channels, inner);
  return { min, max };
}

/**
 * MSE-optimal clipping ratios per output channel (see the file comment):
 * returns rLo, rHi in [MIN_RATIO, 1] (1 = the channel's min / max).
 */
export function mseWeightRatios(w: FTensor, channels: number, inner: number, bits: number): { lo: Float64Array; hi: Float64Array } {
  const { min, max } = channelMinMax(w, channels, inner);
  const rLo = new Float64Array(channels).fill(1);
  const rHi = new Float64Array(channels).fill(1);
  const x = w.data;
  for (let c = 0; c < channels; c++) {
    const mn = Math.min(min[c]!, 0);
    const mx = Math.max(max[c]!, 0);
    if (!(mx > mn)) continue;
    const from = c * inner;
    const to = from + inner;
    const err = (rl: number, rh: number): number => rangeError(x, from, to, rl * mn, rh * mx, bits);
    let best = err(1, 1);
    let bl = 1;
    let bh = 1;
    for (const r of COARSE) {
      const e = err(r, r);
      if (e < best) {
        best = e;
        bl = r;
        bh = r;
      }
    }
    // Coordinate search around the common ratio (an end at 0 has nothing to clip).
    for (let round = 0; round < 2; round++) {
      for (const end of [0, 1] as const) {
        if ((end === 0 && mn === 0) || (end === 1 && mx === 0)) continue;
        const cur = end === 0 ? bl : bh;
        for (let r = Math.max(MIN_RATIO, cur - 0.1); r <= Math.min(1, cur + 0.1) + 1e-9; r += FINE_STEP) {
          const rr = Math.min(1, r);
          const e = end === 0 ? err(rr, bh) : err(bl, rr);
          if (e < best) {
            best = e;
            if (end === 0) bl = rr;
            else bh = rr;
          }
        }
      }
    }
    rLo[c] = bl;
    rHi[c] = bh;
  }
  return { lo: rLo, hi: rHi };
}

export interface ClippedWeightFakeQuantConfig {
  /** 2..8 */
  bits: number;
  /** Learn the clipping ratios (Parameters) instead of keeping them fixed (buffers). Default false. */
  learned?: boolean;
}

/** Per-output-channel weight fake quantization over a clipped min/max range (see the file comment). */
export class ClippedWeightFakeQuant extends WeightTransform {
  readonly bits: number;
  readonly learned: boolean;
  fakeQuantEnabled = true;
  private ctx: { w: FTensor; wq: FTensor; mask: Uint8Array; qp: QParams; min: Float64Array; max: Float64Array; channels: number; inner: number } | undefined;

  constructor(cfg: ClippedWeightFakeQuantConfig) {
    super();
    if (!Number.isInteger(cfg.bits) || cfg.bits < 2 || cfg.bits > 8) throw new QuantFaceError('E_ARG', `ClippedWeightFakeQuant: bits must be an integer in [2, 8], got ${cfg.bits}`);
    this.bits = cfg.bits;
    this.learned = cfg.learned ?? false;
  }

  get identityGrad(): boolean {
    return !this.fakeQuantEnabled;
  }

  /** Clipping ratios [rLo, rHi] per channel (Parameters when learned, buffers otherwise), or undefined before initRatios. */
  get ratios(): [FTensor, FTensor] | undefined {
    if (this.learned) {
      const a = this._params.get('ratio_lo');
      const b = this._params.get('ratio_hi');
      return a && b ? [a.data, b.data] : undefined;
    }
    const a = this._buffers.get('ratio_lo');
    const b = this._buffers.get('ratio_hi');
    return a && b ? [a, b] : undefined;
  }

  /** The trainable ratios (learned mode). */
  ratioParameters(): Parameter[] {
    return this.learned ? [this._params.get('ratio_lo')!, this._params.get('ratio_hi')!].filter(Boolean) : [];
  }

  /** Sets the ratios to the MSE optimum of w (or to explicit values). Call before collecting the optimiser's parameters. */
  initRatios(w: FTensor, channels: number, inner: number, given?: { lo: ArrayLike<number>; hi: ArrayLike<number> }): this {
    const r = given ?? mseWeightRatios(w, channels, inner, this.bits);
    const lo = Tensor.zeros([channels]) as FTensor;
    const hi = Tensor.zeros([channels]) as FTensor;
    for (let c = 0; c < channels; c++) {
      lo.data[c] = Math.min(1, Math.max(MIN_RATIO, r.lo[c]!));
      hi.data[c] = Math.min(1, Math.max(MIN_RATIO, r.hi[c]!));
    }
    if (this.learned) {
      this.registerParameter('ratio_lo', new Parameter(lo));
      this.registerParameter('ratio_hi', new Parameter(hi));
    } else {
      this.registerBuffer('ratio_lo', lo);
      this.registerBuffer('ratio_hi', hi);
    }
    return this;
  }

  /** Quantization parameters of w with the current ratios (per output channel). */
  qparams(w: FTensor, channels: number, inner: number): QParams & { min: Float64Array; max: Float64Array } {
    if (!this.ratios || this.ratios[0].numel !== channels) this.initRatios(w, channels, inner);
    const [rl, rh] = this.ratios!;
    const { min, max } = channelMinMax(w, channels, inner);
    const lo = new Float64Array(channels);
    const hi = new Float64Array(channels);
    for (let c = 0; c < channels; c++) {
      // Keep the ratios in range (an optimiser step may push them out).
      if (!(rl.data[c]! >= MIN_RATIO)) rl.data[c] = MIN_RATIO;
      else if (rl.data[c]! > 1) rl.data[c] = 1;
      if (!(rh.data[c]! >= MIN_RATIO)) rh.data[c] = MIN_RATIO;
      else if (rh.data[c]! > 1) rh.data[c] = 1;
      lo[c] = min[c]! < 0 ? rl.data[c]! * min[c]! : 0;
      hi[c] = max[c]! > 0 ? rh.data[c]! * max[c]! : 0;
    }
    return { ...chooseQParams({ min: lo, max: hi, bits: this.bits }), min, max };
  }

  transform(w: FTensor, channels: number, inner: number): FTensor {
    if (!this.fakeQuantEnabled) {
      this.ctx = undefined;
      return w;
    }
    const qp = this.qparams(w, channels, inner);
    const wq = this.scratch('wq', w.shape, w.dtype) as FTensor;
    const mask = this.scratch('mask', w.shape, 'u8').data;
    K.fakeQuantize({ x: w.data, out: wq.data, scale: qp.scale, zeroPoint: qp.zeroPoint, quantMin: qp.quantMin, quantMax: qp.quantMax, channels, inner, mask });
    this.ctx = { w, wq, mask, qp, min: qp.min, max: qp.max, channels, inner };
    return wq;
  }

  backwardTransform(gradWt: FTensor, gradW: FTensor, accumulate: boolean): void {
    const ctx = this.ctx;
    if (!ctx) {
      K.fakeQuantizeBackward(gradWt.data, gradW.data, undefined, accumulate);
      return;
    }
    K.fakeQuantizeBackward(gradWt.data, gradW.data, ctx.mask, accumulate);
    if (!this.learned) return;
    const [pl, ph] = this.ratioParameters() as [Parameter, Parameter];
    if (!pl.requiresGrad && !ph.requiresGrad) return;
    const { qp, channels, inner } = ctx;
    const Q = qp.quantMax - qp.quantMin;
    // Per channel: float64 sums below / above / inside the clipped range, in element order (K.learnedRangeBackward).
    const sums = new Float64Array(3 * channels);
    K.learnedRangeBackward({ x: ctx.w.data, gradOut: gradWt.data, scale: qp.scale, zeroPoint: qp.zeroPoint, quantMin: qp.quantMin, quantMax: qp.quantMax, channels, sums });
    const dl = new Float64Array(channels);
    const dh = new Float64Array(channels);
    for (let c = 0; c < channels; c++) {
      const gLo = sums[3 * c]!;
      const gHi = sums[3 * c + 1]!;
      const gS = sums[3 * c + 2]!;
      // d x_hat / d lo and d hi (LSQ with a zero point), then d lo / d rLo = min, d hi / d rHi = max.
      dl[c] = ctx.min[c]! < 0 ? (gLo - gS / Q) * ctx.min[c]! : 0;
      dh[c] = ctx.max[c]! > 0 ? (gHi + gS / Q) * ctx.max[c]! : 0;
    }
    for (const [p, v] of [[pl, dl], [ph, dh]] as const) {
      if (!p.requiresGrad) continue;
      const slot = p.gradSlot();
      const d = slot.grad.data;
      for (let c = 0; c < channels; c++) d[c] = (slot.accumulate ? d[c]! : 0) + v[c]!;
    }
  }

  describe(): string {
    const r = this.ratios;
    let mean = '';
    if (r) {
      let a = 0;
      let b = 0;
      for (let c = 0; c < r[0].numel; c++) {
        a += r[0].data[c]!;
        b += r[1].data[c]!;
      }
      mean = `, mean ratios ${(a / r[0].numel).toFixed(3)}/${(b / r[1].numel).toFixed(3)}`;
    }
    return `ClippedWeightFakeQuant(bits=${this.bits}, ${this.learned ? 'learned' : 'mse'} per-channel clipping${mean}${this.fakeQuantEnabled ? '' : ', disabled'})`;
  }
}

/** The Conv2d / Linear layers of a model whose weight quantizer is a min/max WeightFakeQuant, by name. */
function weightLayers(model: Module): Array<[string, Conv2d | Linear]> {
  return [...model.namedModules()].filter((e): e is [string, Conv2d | Linear] => e[1] instanceof Conv2d || e[1] instanceof Linear);
}

/**
 * Replaces the min/max weight quantizer of every Conv2d / Linear with a
 * ClippedWeightFakeQuant of the same width ('mse': fixed MSE-optimal
 * ratios; 'learned': trainable ratios starting there). Returns the new
 * quantizers by layer name. 'minmax' changes nothing.
 */
export function useClippedWeights(model: Module, mode: WeightRangeMode): Map<string, ClippedWeightFakeQuant> {
  const out = new Map<string, ClippedWeightFakeQuant>();
  if (mode === 'minmax') return out;
  if (mode !== 'mse' && mode !== 'learned') throw new QuantFaceError('E_ARG', `weightRange must be 'minmax', 'mse' or 'learned' (got ${String(mode)})`);
  for (const [name, m] of weightLayers(model)) {
    const wq = m.weightQuant;
    if (!(wq instanceof WeightFakeQuant) || wq.symmetric || !wq.fakeQuantEnabled) continue;
    const q = new ClippedWeightFakeQuant({ bits: wq.bits, learned: mode === 'learned' });
    const cout = m instanceof Conv2d ? m.outChannels : m.outFeatures;
    q.initRatios(m.weight.data, cout, m.weight.numel / cout);
    q.train(m.training);
    m.setChild('weightQuant', q);
    out.set(name, q);
  }
  return out;
}

/**
 * Bakes every ClippedWeightFakeQuant (see the file comment): the master
 * weight becomes its fake-quantized value and the quantizer a min/max
 * WeightFakeQuant of the same width. Returns the largest absolute change of
 * any layer's effective weight (a check: float32 rounding only).
 */
export function bakeClippedWeights(model: Module): { layers: number; maxError: number } {
  let layers = 0;
  let maxError = 0;
  noGrad(() => {
    for (const [, m] of weightLayers(model)) {
      const q = m.weightQuant;
      if (!(q instanceof ClippedWeightFakeQuant) || !q.fakeQuantEnabled) continue;
      const w = m.weight.data;
      const cout = m instanceof Conv2d ? m.outChannels : m.outFeatures;
      const inner = w.numel / cout;
      const before = (q.transform(w, cout, inner).clone() as FTensor).data;
      w.data.set(before);
      const mm = new WeightFakeQuant({ bits: q.bits });
      mm.train(m.training);
      m.setChild('weightQuant', mm);
      const after = mm.transform(w, cout, inner).data;
      for (let i = 0; i < after.length; i++) maxError = Math.max(maxError, Math.abs(after[i]! - before[i]!));
      layers++;
    }
  });
  return { layers, maxError };
}
