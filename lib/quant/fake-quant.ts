/**
 * Fake quantization for quantization-aware training (QuantFace's scheme,
 * ../../../shared/method.md):
 *
 * - WeightFakeQuant: per output channel, range = [min, max] of the float
 *   master weight recomputed at every forward, asymmetric unsigned
 *   [0, 2^k - 1] by default (symmetric signed narrow range as an option).
 * - ActFakeQuant: per tensor, range = running min/max over training
 *   batches, initialised at 0 (so it always contains 0), frozen after
 *   `calibrationSteps` training forwards (reference: 300); eval mode never
 *   updates it.
 *
 * Scale and zero point come from chooseQParams (./qparams.ts): the range
 * is widened to contain 0, scale = (b - a) / (2^k - 1), zero point =
 * -rne(a / scale). Values: x_hat = (clamp(rne(x / scale) + zp, qmin, qmax) - zp) * scale.
 *
 * Backward is the straight-through estimator: 'unmasked' (the QuantFace
 * reference: dL/dx = dL/dx_hat everywhere) or 'clipped' (zero where the
 * value was clamped). No gradient flows to the range.
 */
import { Tensor, QuantFaceError, type FTensor } from '../tensor.js';
import { Module, isGradEnabled, type ShapeInfo } from '../nn/module.js';
import { WeightTransform } from '../nn/layers.js';
import * as K from '../nn/kernels.js';
import { chooseQParams, type QParams } from './qparams.js';

export type SteMode = 'unmasked' | 'clipped';

function checkBits(bits: number, what: string): number {
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new QuantFaceError('E_ARG', `${what}: bits must be an integer in [2, 8], got ${bits}`);
  return bits;
}

function checkSte(ste: string | undefined): SteMode {
  const s = ste ?? 'unmasked';
  if (s !== 'unmasked' && s !== 'clipped') throw new QuantFaceError('E_ARG', `ste must be 'unmasked' or 'clipped', got ${String(ste)}`);
  return s;
}

export interface WeightFakeQuantConfig {
  /** 2..8 */
  bits: number;
  /** Signed symmetric narrow range [-(2^(k-1) - 1), 2^(k-1) - 1], zero point 0. Default false (QuantFace: asymmetric). */
  symmetric?: boolean;
  /** Straight-through estimator. Default 'unmasked'. */
  ste?: SteMode;
}

export class WeightFakeQuant extends WeightTransform {
  bits: number;
  symmetric: boolean;
  ste: SteMode;
  /** When false, the weight passes through unchanged. */
  fakeQuantEnabled = true;
  /** Quantization parameters of the last forward (per output channel). */
  lastQParams: QParams | null = null;
  /**
   * A grid given from outside: a loaded .qfm's stored scales and zero points (loadQfm sets it). Used
   * instead of the weight's min/max while not training, so the engine computes exactly the stored
   * integers: re-deriving min/max from dequantized weights is not always the stored grid (a channel
   * whose stored levels do not reach both ends of the integer range gets a narrower range back). The
   * first training-mode forward drops it (the weights then move).
   */
  fixedQParams: QParams | null = null;
  private ctx: { mask: Uint8Array | undefined; bypass: boolean } | undefined;

  constructor(cfg: WeightFakeQuantConfig) {
    super();
    this.bits = checkBits(cfg.bits, 'WeightFakeQuant');
    this.symmetric = cfg.symmetric ?? false;
    this.ste = checkSte(cfg.ste);
  }

  get identityGrad(): boolean {
    return this.ste === 'unmasked' || !this.fakeQuantEnabled;
  }

  /** Quantization parameters for w with the given channel layout (per output channel). */
  qparams(w: FTensor, channels: number, inner: number): QParams {
    const f = this.fixedQParams;
    if (f && !this.training && f.scale.length === channels) return f;
    const min = w.dtype === 'f32' ? new Float32Array(channels) : new Float64Array(channels);
    const max = w.dtype === 'f32' ? new Float32Array(channels) : new Float64Array(channels);
    K.minMax(w.data, min, max, channels, inner);
    return chooseQParams({ min, max, bits: this.bits, symmetric: this.symmetric, signed: this.symmetric, narrowRange: this.symmetric });
  }

  transform(w: FTensor, channels: number, inner: number): FTensor {
    if (this.training) this.fixedQParams = null;
    if (!this.fakeQuantEnabled) {
      this.ctx = { mask: undefined, bypass: true };
      return w;
    }
    const qp = this.qparams(w, channels, inner);
    this.lastQParams = qp;
    const out = this.scratch('wq', w.shape, w.dtype) as FTensor;
    const mask = this.ste === 'clipped' ? this.scratch('mask', w.shape, 'u8').data : undefined;
    K.fakeQuantize({ x: w.data, out: out.data, scale: qp.scale, zeroPoint: qp.zeroPoint, quantMin: qp.quantMin, quantMax: qp.quantMax, channels, inner, mask });
    this.ctx = { mask, bypass: false };
    return out;
  }

  backwardTransform(gradWt: FTensor, gradW: FTensor, accumulate: boolean): void {
    const mask = this.ctx && !this.ctx.bypass ? this.ctx.mask : undefined;
    K.fakeQuantizeBackward(gradWt.data, gradW.data, mask, accumulate);
  }

  describe(): string {
    return `WeightFakeQuant(bits=${this.bits}, ${this.symmetric ? 'symmetric' : 'asymmetric'}, per-channel, ste=${this.ste}${this.fakeQuantEnabled ? '' : ', disabled'})`;
  }
}

export interface ActFakeQuantConfig {
  /** 2..8 */
  bits: number;
  /** Straight-through estimator. Default 'unmasked'. */
  ste?: SteMode;
  /**
   * Training forwards that update the running range before it freezes.
   * Default 300 (the reference). 0: frozen from the start (set the range
   * with setRange); Infinity: never freezes.
   */
  calibrationSteps?: number;
  /** Signed symmetric range around 0. Default false (QuantFace: asymmetric unsigned). */
  symmetric?: boolean;
  /** Quantize the input tensor in place (safe when no backward needs the pre-quantization values). Default false. */
  inplace?: boolean;
}

/**
 * Per-tensor activation fake quantization with a running min/max observer.
 * State (buffers): min, max, steps (training forwards observed), frozen (0/1).
 */
export class ActFakeQuant extends Module {
  bits: number;
  ste: SteMode;
  calibrationSteps: number;
  symmetric: boolean;
  inplace: boolean;
  /** When false, the input passes through unchanged (the observer still runs). */
  fakeQuantEnabled = true;
  private ctx: { mask: Uint8Array | undefined; bypass: boolean } | undefined;

  constructor(cfg: ActFakeQuantConfig) {
    super();
    this.bits = checkBits(cfg.bits, 'ActFakeQuant');
    this.ste = checkSte(cfg.ste);
    this.calibrationSteps = cfg.calibrationSteps ?? 300;
    if (!((Number.isInteger(this.calibrationSteps) || this.calibrationSteps === Infinity) && this.calibrationSteps >= 0))
      throw new QuantFaceError('E_ARG', `ActFakeQuant: calibrationSteps must be a non-negative integer or Infinity, got ${cfg.calibrationSteps}`);
    this.symmetric = cfg.symmetric ?? false;
    this.inplace = cfg.inplace ?? false;
    this.registerBuffer('min', Tensor.zeros([1]));
    this.registerBuffer('max', Tensor.zeros([1]));
    this.registerBuffer('steps', Tensor.zeros([1]));
    this.registerBuffer('frozen', Tensor.zeros([1]));
    if (this.calibrationSteps === 0) this.freeze();
  }

  get min(): number {
    return this.buffer('min').data[0]!;
  }
  get max(): number {
    return this.buffer('max').data[0]!;
  }
  get steps(): number {
    return this.buffer('steps').data[0]!;
  }
  /** True while the running range is still updated in training mode. */
  get observerEnabled(): boolean {
    return this.buffer('frozen').data[0] === 0;
  }

  /** Stops range updates (the reference's freeze_model). */
  freeze(): this {
    this.buffer('frozen').data[0] = 1;
    return this;
  }

  /** Resumes range updates (the counter keeps counting from where it is). */
  unfreeze(): this {
    this.buffer('frozen').data[0] = 0;
    return this;
  }

  /** Sets the range directly (e.g. from a calibration pass) and freezes it. */
  setRange(min: number, max: number): this {
    if (!(min <= max)) throw new QuantFaceError('E_ARG', `ActFakeQuant.setRange: min ${min} > max ${max}`);
    this.buffer('min').data[0] = min;
    this.buffer('max').data[0] = max;
    return this.freeze();
  }

  /** Current quantization parameters (per tensor). */
  qparams(): QParams {
    return chooseQParams({ min: this.min, max: this.max, bits: this.bits, symmetric: this.symmetric, signed: this.symmetric });
  }

  /** Observes x (running min/max) without quantizing it. */
  observe(x: FTensor): void {
    const mn = new Float64Array(1);
    const mx = new Float64Array(1);
    if (x.dtype === 'f32') {
      const a = new Float32Array(1);
      const b = new Float32Array(1);
      K.minMax(x.data, a, b);
      mn[0] = a[0]!;
      mx[0] = b[0]!;
    } else K.minMax(x.data, mn, mx);
    const bmin = this.buffer('min').data;
    const bmax = this.buffer('max').data;
    if (mn[0]! < bmin[0]!) bmin[0] = mn[0]!;
    if (mx[0]! > bmax[0]!) bmax[0] = mx[0]!;
    const steps = this.buffer('steps').data;
    steps[0] = steps[0]! + 1;
    if (steps[0]! >= this.calibrationSteps) this.freeze();
  }

  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    if (this.training && this.observerEnabled) this.observe(x);
    if (!this.fakeQuantEnabled) {
      this.ctx = { mask: undefined, bypass: true };
      return x;
    }
    const qp = this.qparams();
    const out = this.inplace ? x : this.outBuffer(x.shape, x.dtype);
    const mask = this.ste === 'clipped' && isGradEnabled() ? this.scratch('mask', x.shape, 'u8').data : undefined;
    K.fakeQuantize({ x: x.data, out: out.data, scale: qp.scale, zeroPoint: qp.zeroPoint, quantMin: qp.quantMin, quantMax: qp.quantMax, mask });
    this.ctx = { mask, bypass: false };
    return out;
  }

  backward(gradOut: FTensor): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'ActFakeQuant.backward called before forward');
    if (ctx.bypass || !ctx.mask) return gradOut;
    const gradIn = this.gradBuffer(gradOut.shape, gradOut.dtype);
    K.fakeQuantizeBackward(gradOut.data, gradIn.data, ctx.mask, false);
    return gradIn;
  }

  /**
   * The input gradient of the last forward as a select, for a producing layer
   * that fuses it into its own backward (PReLU): gradIn = mask[i] ? gradOut : +0
   * for the returned mask, or gradIn = gradOut for null. The producer then does
   * not call backward(). A subclass that changes backward() must override this.
   */
  straightThroughMask(): Uint8Array | null {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'ActFakeQuant.straightThroughMask called before forward');
    return ctx.bypass || !ctx.mask ? null : ctx.mask;
  }

  describe(): string {
    return (
      `ActFakeQuant(bits=${this.bits}, range=[${this.min.toPrecision(4)}, ${this.max.toPrecision(4)}], ` +
      `${this.observerEnabled ? `observing ${this.steps}/${this.calibrationSteps}` : 'frozen'}, ste=${this.ste}${this.fakeQuantEnabled ? '' : ', disabled'})`
    );
  }
}
