/**
 * Learned step size quantization (LSQ, Esser et al., ICLR 2020), beyond the
 * QuantFace paper, as an option of toQat ({ learnableScales: true }).
 *
 *   x_hat = s (clamp(rne(x / s) + zp, qmin, qmax) - zp)
 *
 * The scale s is a trainable Parameter (per output channel for weights, per
 * tensor for activations); the integer zero point zp is fixed when the
 * quantizer initialises from the observed range (chooseQParams, so training
 * starts from exactly the QuantFace quantizer). Gradients:
 *   dL/dx = dL/dx_hat inside the range, 0 where clamped (clipped STE);
 *   dL/ds = gradScale * sum dL/dx_hat * (inside ? (x_hat - x) / s : x_hat / s)
 *           (STE on the rounding), gradScale = 1 / sqrt(N * qmax'), N the
 *           elements per channel (weights) or per sample (activations) and
 *           qmax' = max(|qmin - zp|, |qmax - zp|).
 */
import { Tensor, QuantFaceError, type FTensor } from '../tensor.js';
import { Module, Parameter, isGradEnabled, type ShapeInfo } from '../nn/module.js';
import { WeightTransform } from '../nn/layers.js';
import * as K from '../nn/kernels.js';
import { chooseQParams, type QParams } from './qparams.js';

function checkBits(bits: number, what: string): number {
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new QuantFaceError('E_ARG', `${what}: bits must be an integer in [2, 8], got ${bits}`);
  return bits;
}

/**
 * dL/ds per channel: sum over each channel's elements of g * (inside ? (xh - x) / s : xh / s),
 * times gradScale. Layout: element i in channel floor(i / inner) % channels.
 */
function scaleGrad(
  g: ArrayLike<number>,
  x: ArrayLike<number>,
  xh: ArrayLike<number>,
  mask: Uint8Array,
  s: ArrayLike<number>,
  channels: number,
  inner: number,
  gradScale: number[],
): Float64Array {
  const out = new Float64Array(channels);
  const n = x.length;
  const runs = Math.ceil(n / inner);
  for (let r = 0; r < runs; r++) {
    const ch = channels === 1 ? 0 : r % channels;
    const inv = 1 / s[ch]!;
    let acc = 0;
    const end = Math.min(n, (r + 1) * inner);
    for (let i = r * inner; i < end; i++) acc += g[i]! * (mask[i] ? (xh[i]! - x[i]!) * inv : xh[i]! * inv);
    out[ch] += acc;
  }
  for (let c = 0; c < channels; c++) out[c] *= gradScale[c]!;
  return out;
}

function addGrad(p: Parameter, v: Float64Array): void {
  if (!p.requiresGrad) return;
  const { grad, accumulate } = p.gradSlot();
  const d = grad.data;
  for (let i = 0; i < v.length; i++) d[i] = (accumulate ? d[i]! : 0) + v[i]!;
}

export interface LsqConfig {
  /** 2..8 */
  bits: number;
  /** Signed symmetric range, zero point 0 (the LSQ paper's weights). Default false (asymmetric unsigned, zero point from the range). */
  symmetric?: boolean;
}

/** LSQ for weights: one learnable scale per output channel, initialised from the channel's min/max on the first forward. */
export class LsqWeightFakeQuant extends WeightTransform {
  readonly bits: number;
  readonly symmetric: boolean;
  fakeQuantEnabled = true;
  private ctx: { w: FTensor; wq: FTensor; mask: Uint8Array; channels: number; inner: number } | undefined;

  constructor(cfg: LsqConfig) {
    super();
    this.bits = checkBits(cfg.bits, 'LsqWeightFakeQuant');
    this.symmetric = cfg.symmetric ?? false;
    this.registerBuffer('initialized', Tensor.zeros([1]));
  }

  get identityGrad(): boolean {
    return !this.fakeQuantEnabled;
  }

  get scale(): Parameter | undefined {
    return this._params.get('scale');
  }

  private range(): { quantMin: number; quantMax: number } {
    return this.symmetric ? { quantMin: -(2 ** (this.bits - 1) - 1), quantMax: 2 ** (this.bits - 1) - 1 } : { quantMin: 0, quantMax: 2 ** this.bits - 1 };
  }

  /**
   * Initialises scale (a trainable Parameter) and zero point from the weight's per-channel min/max.
   * toQat calls it at conversion, so the scale exists before an optimiser collects the parameters.
   */
  initFrom(w: FTensor, channels: number, inner: number): void {
    const min = new Float64Array(channels);
    const max = new Float64Array(channels);
    if (w.dtype === 'f32') {
      const a = new Float32Array(channels);
      const b = new Float32Array(channels);
      K.minMax(w.data, a, b, channels, inner);
      min.set(a);
      max.set(b);
    } else K.minMax(w.data, min, max, channels, inner);
    const qp = chooseQParams({ min, max, bits: this.bits, symmetric: this.symmetric, signed: this.symmetric, narrowRange: this.symmetric });
    const existing = this.scale;
    if (existing && existing.numel === channels && existing.data.dtype === w.dtype) existing.data.data.set(qp.scale);
    else {
      const s = Tensor.zeros([channels], w.dtype) as FTensor;
      s.data.set(qp.scale);
      this.registerParameter('scale', new Parameter(s));
    }
    const zp = Tensor.zeros([channels], w.dtype) as FTensor;
    zp.data.set(qp.zeroPoint);
    this.registerBuffer('zero_point', zp);
    this.buffer('initialized').data[0] = 1;
  }

  /**
   * The parameters transform applies to w (per output channel): the learned
   * float32 steps (a non-positive step as 1e-8) and the fixed zero points,
   * or, before initialisation, those initFrom would choose. Changes nothing.
   */
  qparams(w: FTensor, channels: number, inner: number): QParams {
    const { quantMin, quantMax } = this.range();
    const s = this.scale;
    if (!s || this.buffer('initialized').data[0] === 0 || s.numel !== channels) {
      const min = new Float64Array(channels);
      const max = new Float64Array(channels);
      if (w.dtype === 'f32') {
        const a = new Float32Array(channels);
        const b = new Float32Array(channels);
        K.minMax(w.data, a, b, channels, inner);
        min.set(a);
        max.set(b);
      } else K.minMax(w.data, min, max, channels, inner);
      return chooseQParams({ min, max, bits: this.bits, symmetric: this.symmetric, signed: this.symmetric, narrowRange: this.symmetric });
    }
    return { scale: Float32Array.from(s.data.data, (v) => (v > 0 ? v : 1e-8)), zeroPoint: Int32Array.from(this.buffer('zero_point').data), quantMin, quantMax };
  }

  transform(w: FTensor, channels: number, inner: number): FTensor {
    if (!this.fakeQuantEnabled) {
      this.ctx = undefined;
      return w;
    }
    if (!this.scale || this.buffer('initialized').data[0] === 0 || this.scale.numel !== channels) this.initFrom(w, channels, inner);
    const s = this.scale!.data.data;
    for (let c = 0; c < channels; c++) if (!(s[c]! > 0)) s[c] = 1e-8; // a step must stay positive
    const { quantMin, quantMax } = this.range();
    const wq = this.scratch('wq', w.shape, w.dtype) as FTensor;
    const mask = this.scratch('mask', w.shape, 'u8').data;
    const zp = this.buffer('zero_point').data;
    K.fakeQuantize({ x: w.data, out: wq.data, scale: Float32Array.from(s), zeroPoint: Int32Array.from(zp), quantMin, quantMax, channels, inner, mask });
    this.ctx = { w, wq, mask, channels, inner };
    return wq;
  }

  backwardTransform(gradWt: FTensor, gradW: FTensor, accumulate: boolean): void {
    const ctx = this.ctx;
    if (!ctx) {
      K.fakeQuantizeBackward(gradWt.data, gradW.data, undefined, accumulate);
      return;
    }
    K.fakeQuantizeBackward(gradWt.data, gradW.data, ctx.mask, accumulate);
    const { quantMin, quantMax } = this.range();
    const zp = this.buffer('zero_point').data;
    const gs: number[] = [];
    for (let c = 0; c < ctx.channels; c++) gs.push(1 / Math.sqrt(ctx.inner * Math.max(Math.abs(quantMin - zp[c]!), Math.abs(quantMax - zp[c]!))));
    addGrad(this.scale!, scaleGrad(gradWt.data, ctx.w.data, ctx.wq.data, ctx.mask, this.scale!.data.data, ctx.channels, ctx.inner, gs));
  }

  describe(): string {
    return `LsqWeightFakeQuant(bits=${this.bits}, ${this.symmetric ? 'symmetric' : 'asymmetric'}, per-channel learnable scale)`;
  }
}

export interface LsqActConfig extends LsqConfig {
  /** Training forwards whose running min/max (from 0) initialise scale and zero point before the scale is learned. Default 1. */
  initSteps?: number;
  /** Quantize in place (see ActFakeQuant). Default false. */
  inplace?: boolean;
}

/** LSQ for activations: one learnable scale per tensor. */
export class LsqActFakeQuant extends Module {
  readonly bits: number;
  readonly symmetric: boolean;
  readonly initSteps: number;
  inplace: boolean;
  fakeQuantEnabled = true;
  readonly scale: Parameter;
  private ctx: { x: FTensor | null; out: FTensor; mask: Uint8Array; perSample: number; xCopy: FTensor | null } | undefined;

  constructor(cfg: LsqActConfig) {
    super();
    this.bits = checkBits(cfg.bits, 'LsqActFakeQuant');
    this.symmetric = cfg.symmetric ?? false;
    this.initSteps = cfg.initSteps ?? 1;
    if (!(Number.isInteger(this.initSteps) && this.initSteps >= 1)) throw new QuantFaceError('E_ARG', `LsqActFakeQuant: initSteps must be an integer >= 1, got ${cfg.initSteps}`);
    this.inplace = cfg.inplace ?? false;
    this.scale = this.registerParameter('scale', new Parameter(Tensor.full([1], 1)))!;
    this.registerBuffer('zero_point', Tensor.zeros([1]));
    this.registerBuffer('min', Tensor.zeros([1]));
    this.registerBuffer('max', Tensor.zeros([1]));
    this.registerBuffer('steps', Tensor.zeros([1]));
  }

  private range(): { quantMin: number; quantMax: number } {
    return this.symmetric ? { quantMin: -(2 ** (this.bits - 1) - 1), quantMax: 2 ** (this.bits - 1) - 1 } : { quantMin: 0, quantMax: 2 ** this.bits - 1 };
  }

  /** The per-tensor parameters the forward applies now (a non-positive step as 1e-8). */
  qparams(): QParams {
    const s = this.scale.data.data[0]!;
    return { scale: Float32Array.of(s > 0 ? s : 1e-8), zeroPoint: Int32Array.of(this.buffer('zero_point').data[0]!), ...this.range() };
  }

  /** True while the range is still being observed (before the scale is learned). */
  get initializing(): boolean {
    return this.buffer('steps').data[0]! < this.initSteps;
  }

  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    if (this.training && this.initializing) {
      const a = new Float64Array(1);
      const b = new Float64Array(1);
      if (x.dtype === 'f32') {
        const a32 = new Float32Array(1);
        const b32 = new Float32Array(1);
        K.minMax(x.data, a32, b32);
        a[0] = a32[0]!;
        b[0] = b32[0]!;
      } else K.minMax(x.data, a, b);
      const mn = this.buffer('min').data;
      const mx = this.buffer('max').data;
      if (a[0]! < mn[0]!) mn[0] = a[0]!;
      if (b[0]! > mx[0]!) mx[0] = b[0]!;
      const qp = chooseQParams({ min: mn[0]!, max: mx[0]!, bits: this.bits, symmetric: this.symmetric, signed: this.symmetric, narrowRange: this.symmetric });
      this.scale.data.data[0] = qp.scale[0]!;
      this.buffer('zero_point').data[0] = qp.zeroPoint[0]!;
      const st = this.buffer('steps').data;
      st[0] = st[0]! + 1;
    }
    if (!this.fakeQuantEnabled) {
      this.ctx = undefined;
      return x;
    }
    const s = this.scale.data.data;
    if (!(s[0]! > 0)) s[0] = 1e-8;
    const { quantMin, quantMax } = this.range();
    const grad = isGradEnabled();
    // The scale gradient needs x: keep a copy when quantizing in place.
    const xCopy = grad && this.inplace ? (this.scratch('x', x.shape, x.dtype).copyFrom(x) as FTensor) : null;
    const out = this.inplace ? x : this.outBuffer(x.shape, x.dtype);
    const mask = this.scratch('mask', x.shape, 'u8').data;
    K.fakeQuantize({ x: x.data, out: out.data, scale: Float32Array.from(s), zeroPoint: Int32Array.from(this.buffer('zero_point').data), quantMin, quantMax, mask });
    this.ctx = grad ? { x: this.inplace ? null : x, xCopy, out, mask, perSample: x.numel / Math.max(1, x.shape[0] ?? 1) } : undefined;
    return out;
  }

  backward(gradOut: FTensor): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'LsqActFakeQuant.backward called without a forward pass with gradients enabled');
    const gradIn = this.gradBuffer(gradOut.shape, gradOut.dtype);
    K.fakeQuantizeBackward(gradOut.data, gradIn.data, ctx.mask, false);
    if (!this.initializing) {
      const { quantMin, quantMax } = this.range();
      const zp = this.buffer('zero_point').data[0]!;
      const gs = 1 / Math.sqrt(ctx.perSample * Math.max(Math.abs(quantMin - zp), Math.abs(quantMax - zp)));
      const x = (ctx.x ?? ctx.xCopy)!;
      addGrad(this.scale, scaleGrad(gradOut.data, x.data, ctx.out.data, ctx.mask, this.scale.data.data, 1, x.numel, [gs]));
    }
    return gradIn;
  }

  describe(): string {
    return `LsqActFakeQuant(bits=${this.bits}, scale=${this.scale.data.data[0]!.toPrecision(4)}${this.initializing ? ', initializing' : ''})`;
  }
}
