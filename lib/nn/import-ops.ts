/**
 * Modules that imported graphs need beyond the engine's core layers
 * (./layers.ts): padding, clamps (ReLU6), affine transforms by constants,
 * two-input products and differences, |x|, reshapes, pooling.
 *
 * Every module has a forward and a backward pass (an imported teacher can
 * become a trainable QAT student), works on f32 and f64 tensors (f64 for
 * gradient checks), takes NHWC activations and follows the engine's
 * execution model (module.ts): outputs come from outBuffer (module-owned
 * with gradients, pooled under noGrad), input gradients from gradBuffer
 * (pooled, owned by the caller); backward accumulates parameter gradients.
 */
import { Tensor, QuantFaceError, shapeStr, type FTensor, type FloatArray } from '../tensor.js';
import { Module, Parameter, isGradEnabled, type ShapeInfo } from './module.js';
import { bufferPool, sameBuffer } from './pool.js';

function noCtx(m: Module): QuantFaceError {
  return new QuantFaceError('E_ARG', `${m.constructor.name}.backward called without a forward pass with gradients enabled`);
}

function nhwc(s: readonly number[], what: string): [number, number, number, number] {
  if (s.length !== 4) throw new QuantFaceError('E_SHAPE', `${what}: expected an NHWC input [N, H, W, C], got ${shapeStr(s)}`);
  return s as [number, number, number, number];
}

// ------------------------------------------------------------------ Pad
export interface PadConfig {
  top?: number;
  bottom?: number;
  left?: number;
  right?: number;
  /** Channels added before / after the existing ones (channel padding, e.g. a ResNet shortcut). */
  channelsBefore?: number;
  channelsAfter?: number;
  /** Constant value of the padding. Default 0. */
  value?: number;
}

/** Constant padding of an NHWC tensor along H, W and C (TF's Pad / PadV2, mode CONSTANT). */
export class Pad extends Module {
  readonly top: number;
  readonly bottom: number;
  readonly left: number;
  readonly right: number;
  readonly channelsBefore: number;
  readonly channelsAfter: number;
  readonly value: number;
  private ctx: { inShape: readonly number[] } | undefined;

  constructor(cfg: PadConfig) {
    super();
    this.top = cfg.top ?? 0;
    this.bottom = cfg.bottom ?? 0;
    this.left = cfg.left ?? 0;
    this.right = cfg.right ?? 0;
    this.channelsBefore = cfg.channelsBefore ?? 0;
    this.channelsAfter = cfg.channelsAfter ?? 0;
    this.value = cfg.value ?? 0;
    for (const v of [this.top, this.bottom, this.left, this.right, this.channelsBefore, this.channelsAfter])
      if (!Number.isInteger(v) || v < 0) throw new QuantFaceError('E_ARG', `Pad: paddings must be non-negative integers, got ${JSON.stringify(cfg)}`);
    if (!Number.isFinite(this.value)) throw new QuantFaceError('E_ARG', `Pad: value must be finite, got ${this.value}`);
  }

  inferShape(s: number[]): ShapeInfo {
    const [n, h, w, c] = nhwc(s, 'Pad');
    return { shape: [n, h + this.top + this.bottom, w + this.left + this.right, c + this.channelsBefore + this.channelsAfter], macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const [n, h, w, c] = nhwc(x.shape, 'Pad');
    const { shape } = this.inferShape(x.shape as number[]);
    const [, oh, ow, oc] = shape as [number, number, number, number];
    const out = this.outBuffer(shape, x.dtype);
    const o = out.data;
    const xd = x.data;
    o.fill(this.value);
    for (let b = 0; b < n; b++)
      for (let y = 0; y < h; y++)
        for (let xx = 0; xx < w; xx++) {
          const src = ((b * h + y) * w + xx) * c;
          const dst = ((b * oh + y + this.top) * ow + xx + this.left) * oc + this.channelsBefore;
          o.set(xd.subarray(src, src + c) as never, dst);
        }
    this.ctx = { inShape: x.shape };
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const [n, h, w, c] = this.ctx.inShape as [number, number, number, number];
    const oh = h + this.top + this.bottom;
    const ow = w + this.left + this.right;
    const oc = c + this.channelsBefore + this.channelsAfter;
    const gi = this.gradBuffer(this.ctx.inShape, g.dtype);
    const gd = g.data;
    const gid = gi.data;
    for (let b = 0; b < n; b++)
      for (let y = 0; y < h; y++)
        for (let xx = 0; xx < w; xx++) {
          const dst = ((b * h + y) * w + xx) * c;
          const src = ((b * oh + y + this.top) * ow + xx + this.left) * oc + this.channelsBefore;
          gid.set(gd.subarray(src, src + c) as never, dst);
        }
    return gi;
  }

  describe(): string {
    return `Pad(t=${this.top}, b=${this.bottom}, l=${this.left}, r=${this.right}${this.channelsBefore || this.channelsAfter ? `, c=${this.channelsBefore}+${this.channelsAfter}` : ''}${this.value ? `, value=${this.value}` : ''})`;
  }
}

// ------------------------------------------------------------------ Clamp
/**
 * y = min(max(x, lo), hi) (ReLU6 = Clamp(0, 6); one-sided with +-Infinity).
 * The gradient passes where lo < x < hi (TensorFlow's Relu6 convention).
 */
export class Clamp extends Module {
  readonly lo: number;
  readonly hi: number;
  private ctx: { x: FTensor } | undefined;

  constructor(lo: number, hi: number) {
    super();
    if (Number.isNaN(lo) || Number.isNaN(hi) || !(lo <= hi)) throw new QuantFaceError('E_ARG', `Clamp: need lo <= hi, got [${lo}, ${hi}]`);
    this.lo = lo;
    this.hi = hi;
  }

  get outQuant(): Module | undefined {
    return this.getChild('outQuant');
  }

  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const out = this.outBuffer(x.shape, x.dtype);
    const xd = x.data;
    const o = out.data;
    const lo = this.lo;
    const hi = this.hi;
    for (let i = 0; i < xd.length; i++) {
      const v = xd[i]!;
      o[i] = v < lo ? lo : v > hi ? hi : v;
    }
    this.ctx = isGradEnabled() ? { x } : undefined;
    const oq = this.outQuant;
    return oq ? oq.forward(out) : out;
  }

  backward(gradOut: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const oq = this.outQuant;
    const r = oq ? oq.backward(gradOut) : gradOut;
    if (Array.isArray(r)) throw new QuantFaceError('E_INTERNAL', 'Clamp: its output quantizer returned several gradients');
    const g = r;
    const xd = this.ctx.x.data;
    const gi = this.gradBuffer(this.ctx.x.shape, g.dtype);
    const gd = g.data;
    const o = gi.data;
    for (let i = 0; i < xd.length; i++) {
      const v = xd[i]!;
      o[i] = v > this.lo && v < this.hi ? gd[i]! : 0;
    }
    if (!sameBuffer(g, gradOut)) bufferPool.release(g);
    return gi;
  }

  /** True for Clamp(0, 6). */
  get isRelu6(): boolean {
    return this.lo === 0 && this.hi === 6;
  }

  describe(): string {
    return this.isRelu6 ? 'ReLU6' : `Clamp(${this.lo}, ${this.hi})`;
  }
}

// ------------------------------------------------------------------ ChannelAffine
export interface ChannelAffineConfig {
  /** Multiplier per channel (length channels), or null for none. */
  scale?: ArrayLike<number> | null;
  /** Addend per channel (length channels), or null for none. */
  bias?: ArrayLike<number> | null;
  /** Whether the scale / bias are trained. Default true. */
  trainScale?: boolean;
  trainBias?: boolean;
}

/**
 * y = x * scale[c] + bias[c] over the last dimension (channels last), or
 * with one shared value when channels = 1. Either part may be absent
 * (y = x * scale or y = x + bias). Covers TF's Mul / Add / Sub / BiasAdd
 * by constants and face-api's "scale layer" (a folded BatchNorm).
 * Parameters: `weight` (the scale) and `bias`.
 */
export class ChannelAffine extends Module {
  readonly channels: number;
  readonly weight: Parameter | null;
  readonly bias: Parameter | null;
  private ctx: { x: FTensor } | undefined;

  constructor(channels: number, cfg: ChannelAffineConfig) {
    super();
    if (!(Number.isInteger(channels) && channels > 0)) throw new QuantFaceError('E_ARG', `ChannelAffine: channels must be a positive integer, got ${channels}`);
    this.channels = channels;
    const mk = (v: ArrayLike<number> | null | undefined, name: string, train: boolean | undefined): Parameter | null => {
      if (v === null || v === undefined) return null;
      if (v.length !== channels) throw new QuantFaceError('E_SHAPE', `ChannelAffine: ${name} has ${v.length} values for ${channels} channels`);
      const t = Tensor.zeros([channels]);
      for (let i = 0; i < channels; i++) t.data[i] = v[i]!;
      return this.registerParameter(name, new Parameter(t, train ?? true));
    };
    this.weight = mk(cfg.scale, 'weight', cfg.trainScale);
    this.bias = mk(cfg.bias, 'bias', cfg.trainBias);
    if (!this.weight && !this.bias) throw new QuantFaceError('E_ARG', 'ChannelAffine: needs a scale, a bias or both');
  }

  inferShape(s: number[]): ShapeInfo {
    if (this.channels !== 1 && s[s.length - 1] !== this.channels)
      throw new QuantFaceError('E_SHAPE', `ChannelAffine: expected ${this.channels} channels last, got ${shapeStr(s)}`);
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    this.inferShape(x.shape as number[]);
    const out = this.outBuffer(x.shape, x.dtype);
    const xd = x.data;
    const o = out.data;
    const C = this.channels;
    const s = this.weight?.data.data;
    const b = this.bias?.data.data;
    const M = xd.length / C;
    // One operation per part, so Mul-only / Add-only ops round exactly as TF does.
    if (s && b) {
      for (let r = 0; r < M; r++) {
        const base = r * C;
        for (let c = 0; c < C; c++) o[base + c] = xd[base + c]! * s[c]! + b[c]!;
      }
    } else if (s) {
      for (let r = 0; r < M; r++) {
        const base = r * C;
        for (let c = 0; c < C; c++) o[base + c] = xd[base + c]! * s[c]!;
      }
    } else {
      for (let r = 0; r < M; r++) {
        const base = r * C;
        for (let c = 0; c < C; c++) o[base + c] = xd[base + c]! + b![c]!;
      }
    }
    this.ctx = isGradEnabled() ? { x } : undefined;
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const x = this.ctx.x;
    const C = this.channels;
    const gd = g.data;
    const xd = x.data;
    const M = xd.length / C;
    const s = this.weight?.data.data;
    const gi = this.gradBuffer(x.shape, g.dtype);
    const o = gi.data;
    if (s) {
      for (let r = 0; r < M; r++) {
        const base = r * C;
        for (let c = 0; c < C; c++) o[base + c] = gd[base + c]! * s[c]!;
      }
    } else o.set(gd as never);
    if (this.weight && this.weight.requiresGrad) {
      const acc = new Float64Array(C);
      for (let r = 0; r < M; r++) {
        const base = r * C;
        for (let c = 0; c < C; c++) acc[c] += gd[base + c]! * xd[base + c]!;
      }
      accumulateInto(this.weight, acc);
    }
    if (this.bias && this.bias.requiresGrad) {
      const acc = new Float64Array(C);
      for (let r = 0; r < M; r++) {
        const base = r * C;
        for (let c = 0; c < C; c++) acc[c] += gd[base + c]!;
      }
      accumulateInto(this.bias, acc);
    }
    return gi;
  }

  describe(): string {
    return `ChannelAffine(${this.channels}${this.weight ? ', scale' : ''}${this.bias ? ', bias' : ''})`;
  }
}

function accumulateInto(p: Parameter, v: Float64Array): void {
  const { grad, accumulate } = p.gradSlot();
  const d = grad.data;
  for (let i = 0; i < v.length; i++) d[i] = (accumulate ? d[i]! : 0) + v[i]!;
}

// ------------------------------------------------------------------ two-input elementwise
function sameShape(a: readonly number[], b: readonly number[] | undefined, what: string): void {
  if (!b || a.length !== b.length || a.some((d, i) => d !== b[i]))
    throw new QuantFaceError('E_SHAPE', `${what}: shapes ${shapeStr(a)} and ${shapeStr(b ?? [])} differ (broadcasting between two computed tensors is not supported)`);
}

/** y = a * b elementwise (equal shapes). */
export class Multiply extends Module {
  private ctx: { a: FTensor; b: FTensor } | undefined;
  override get numInputs(): number {
    return 2;
  }
  inferShape(a: number[], b: number[]): ShapeInfo {
    sameShape(a, b, 'Multiply');
    return { shape: a, macs: 0 };
  }
  forward(a: FTensor, b?: FTensor): FTensor {
    if (!b) throw new QuantFaceError('E_SHAPE', 'Multiply: needs two inputs');
    sameShape(a.shape, b.shape, 'Multiply');
    const out = this.outBuffer(a.shape, a.dtype);
    const o = out.data;
    const ad = a.data;
    const bd = b.data;
    for (let i = 0; i < o.length; i++) o[i] = ad[i]! * bd[i]!;
    this.ctx = isGradEnabled() ? { a, b } : undefined;
    return out;
  }
  backward(g: FTensor): FTensor[] {
    if (!this.ctx) throw noCtx(this);
    const { a, b } = this.ctx;
    const ga = this.gradBuffer(a.shape, g.dtype);
    const gb = this.gradBuffer(b.shape, g.dtype);
    const gd = g.data;
    for (let i = 0; i < gd.length; i++) {
      ga.data[i] = gd[i]! * b.data[i]!;
      gb.data[i] = gd[i]! * a.data[i]!;
    }
    return [ga, gb];
  }
}

/** y = a - b elementwise (equal shapes). */
export class Subtract extends Module {
  private ctx: { shape: readonly number[] } | undefined;
  override get numInputs(): number {
    return 2;
  }
  inferShape(a: number[], b: number[]): ShapeInfo {
    sameShape(a, b, 'Subtract');
    return { shape: a, macs: 0 };
  }
  forward(a: FTensor, b?: FTensor): FTensor {
    if (!b) throw new QuantFaceError('E_SHAPE', 'Subtract: needs two inputs');
    sameShape(a.shape, b.shape, 'Subtract');
    const out = this.outBuffer(a.shape, a.dtype);
    const o = out.data;
    for (let i = 0; i < o.length; i++) o[i] = a.data[i]! - b.data[i]!;
    this.ctx = { shape: a.shape };
    return out;
  }
  backward(g: FTensor): FTensor[] {
    if (!this.ctx) throw noCtx(this);
    const gb = this.gradBuffer(g.shape, g.dtype);
    for (let i = 0; i < g.numel; i++) gb.data[i] = -g.data[i]!;
    return [g, gb];
  }
}

// ------------------------------------------------------------------ unary
/** y = |x| (gradient sign(x), 0 at 0). */
export class Abs extends Module {
  private ctx: { x: FTensor } | undefined;
  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }
  forward(x: FTensor): FTensor {
    const out = this.outBuffer(x.shape, x.dtype);
    for (let i = 0; i < x.numel; i++) out.data[i] = Math.abs(x.data[i]!);
    this.ctx = isGradEnabled() ? { x } : undefined;
    return out;
  }
  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const xd = this.ctx.x.data;
    const gi = this.gradBuffer(g.shape, g.dtype);
    for (let i = 0; i < xd.length; i++) {
      const v = xd[i]!;
      gi.data[i] = v > 0 ? g.data[i]! : v < 0 ? -g.data[i]! : 0;
    }
    return gi;
  }
}

// ------------------------------------------------------------------ shapes
/**
 * [N, ...] -> [N, ...shape] (a view; the batch dimension is kept). One entry
 * of shape may be -1. On NHWC activations this is TF's Reshape / Squeeze
 * exactly (both are row-major over (h, w, c)).
 */
export class Reshape extends Module {
  readonly shape: readonly number[];
  private ctx: { shape: readonly number[] } | undefined;

  constructor(shape: readonly number[]) {
    super();
    if (shape.filter((d) => d === -1).length > 1 || shape.some((d) => !Number.isInteger(d) || d < -1 || d === 0))
      throw new QuantFaceError('E_ARG', `Reshape: invalid target ${shapeStr(shape)} (positive sizes and at most one -1)`);
    this.shape = Object.freeze([...shape]);
  }

  inferShape(s: number[]): ShapeInfo {
    const n = s[0]!;
    const rest = s.slice(1).reduce((a, b) => a * b, 1);
    const known = this.shape.reduce((a, d) => (d === -1 ? a : a * d), 1);
    const out = this.shape.map((d) => (d === -1 ? rest / known : d));
    if (out.some((d) => !Number.isInteger(d)) || out.reduce((a, b) => a * b, 1) !== rest)
      throw new QuantFaceError('E_SHAPE', `Reshape: cannot reshape ${shapeStr(s)} to [N, ${this.shape.join(', ')}]`);
    return { shape: [n, ...out], macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const { shape } = this.inferShape(x.shape as number[]);
    this.ctx = { shape: x.shape };
    return x.reshape(shape);
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    return g.reshape(this.ctx.shape);
  }

  describe(): string {
    return `Reshape([N, ${this.shape.join(', ')}])`;
  }
}

/**
 * [N, H, W, C] -> [N, C, H, W] (memory transpose). ONNX importers put it
 * before a Flatten of an NCHW tensor so the flattened order is (c, h, w),
 * as in the source model.
 */
export class NhwcToNchw extends Module {
  private ctx: { shape: readonly number[] } | undefined;

  inferShape(s: number[]): ShapeInfo {
    const [n, h, w, c] = nhwc(s, 'NhwcToNchw');
    return { shape: [n, c, h, w], macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const [n, h, w, c] = nhwc(x.shape, 'NhwcToNchw');
    const out = this.outBuffer([n, c, h, w], x.dtype);
    const xd = x.data;
    const o = out.data;
    const hw = h * w;
    for (let b = 0; b < n; b++)
      for (let p = 0; p < hw; p++) {
        const src = (b * hw + p) * c;
        for (let k = 0; k < c; k++) o[(b * c + k) * hw + p] = xd[src + k]!;
      }
    this.ctx = { shape: x.shape };
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const [n, h, w, c] = this.ctx.shape as [number, number, number, number];
    const gi = this.gradBuffer(this.ctx.shape, g.dtype);
    const hw = h * w;
    for (let b = 0; b < n; b++)
      for (let p = 0; p < hw; p++) {
        const dst = (b * hw + p) * c;
        for (let k = 0; k < c; k++) gi.data[dst + k] = g.data[(b * c + k) * hw + p]!;
      }
    return gi;
  }
}

// ------------------------------------------------------------------ pooling
/** Mean over H and W of [N, H, W, C]: [N, C] (or [N, 1, 1, C] with keepDims). */
export class GlobalAvgPool extends Module {
  readonly keepDims: boolean;
  private ctx: { shape: readonly number[] } | undefined;

  constructor(keepDims = false) {
    super();
    this.keepDims = keepDims;
  }

  inferShape(s: number[]): ShapeInfo {
    const [n, , , c] = nhwc(s, 'GlobalAvgPool');
    return { shape: this.keepDims ? [n, 1, 1, c] : [n, c], macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const [n, h, w, c] = nhwc(x.shape, 'GlobalAvgPool');
    const out = this.outBuffer(this.inferShape(x.shape as number[]).shape, x.dtype);
    const hw = h * w;
    const acc = new Float64Array(c);
    for (let b = 0; b < n; b++) {
      acc.fill(0);
      for (let p = 0; p < hw; p++) {
        const base = (b * hw + p) * c;
        for (let k = 0; k < c; k++) acc[k] += x.data[base + k]!;
      }
      for (let k = 0; k < c; k++) out.data[b * c + k] = acc[k]! / hw;
    }
    this.ctx = { shape: x.shape };
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const [n, h, w, c] = this.ctx.shape as [number, number, number, number];
    const gi = this.gradBuffer(this.ctx.shape, g.dtype);
    const hw = h * w;
    for (let b = 0; b < n; b++)
      for (let p = 0; p < hw; p++) {
        const base = (b * hw + p) * c;
        for (let k = 0; k < c; k++) gi.data[base + k] = g.data[b * c + k]! / hw;
      }
    return gi;
  }

  describe(): string {
    return `GlobalAvgPool(${this.keepDims ? 'keepDims' : ''})`;
  }
}

export interface Pool2dConfig {
  /** Kernel [h, w] or a square size. */
  kernel: number | [number, number];
  /** Stride; default = kernel. */
  stride?: number | [number, number];
  /** [top, left, bottom, right] padding (padded cells never win a max and are not counted in an average). Default 0. */
  padding?: [number, number, number, number];
}

abstract class Pool2d extends Module {
  readonly kh: number;
  readonly kw: number;
  readonly sh: number;
  readonly sw: number;
  readonly padTop: number;
  readonly padLeft: number;
  readonly padBottom: number;
  readonly padRight: number;

  constructor(cfg: Pool2dConfig) {
    super();
    [this.kh, this.kw] = typeof cfg.kernel === 'number' ? [cfg.kernel, cfg.kernel] : cfg.kernel;
    const st = cfg.stride ?? [this.kh, this.kw];
    [this.sh, this.sw] = typeof st === 'number' ? [st, st] : st;
    [this.padTop, this.padLeft, this.padBottom, this.padRight] = cfg.padding ?? [0, 0, 0, 0];
    for (const v of [this.kh, this.kw, this.sh, this.sw])
      if (!Number.isInteger(v) || v < 1) throw new QuantFaceError('E_ARG', `${this.constructor.name}: kernel and stride must be positive integers`);
    for (const v of [this.padTop, this.padLeft, this.padBottom, this.padRight])
      if (!Number.isInteger(v) || v < 0) throw new QuantFaceError('E_ARG', `${this.constructor.name}: padding must be non-negative integers`);
  }

  protected outSize(h: number, w: number): [number, number] {
    return [Math.floor((h + this.padTop + this.padBottom - this.kh) / this.sh) + 1, Math.floor((w + this.padLeft + this.padRight - this.kw) / this.sw) + 1];
  }

  inferShape(s: number[]): ShapeInfo {
    const [n, h, w, c] = nhwc(s, this.constructor.name);
    const [oh, ow] = this.outSize(h, w);
    if (oh < 1 || ow < 1) throw new QuantFaceError('E_SHAPE', `${this.constructor.name}: input ${shapeStr(s)} too small for the kernel`);
    return { shape: [n, oh, ow, c], macs: 0 };
  }

  describe(): string {
    return `${this.constructor.name}(k=${this.kh}x${this.kw}, s=${this.sh}x${this.sw}, p=${this.padTop},${this.padLeft},${this.padBottom},${this.padRight})`;
  }
}

/** Max pooling (TF MaxPool; ties: the first maximum in the window gets the gradient). */
export class MaxPool2d extends Pool2d {
  private ctx: { shape: readonly number[]; arg: Int32Array } | undefined;

  forward(x: FTensor): FTensor {
    const { shape } = this.inferShape(x.shape as number[]);
    const [n, h, w, c] = x.shape as [number, number, number, number];
    const [, oh, ow] = shape as [number, number, number, number];
    const out = this.outBuffer(shape, x.dtype);
    const keep = isGradEnabled();
    const arg = keep ? new Int32Array(out.numel) : null;
    const xd = x.data;
    const o = out.data;
    for (let b = 0; b < n; b++)
      for (let y = 0; y < oh; y++)
        for (let xx = 0; xx < ow; xx++) {
          const ob = ((b * oh + y) * ow + xx) * c;
          for (let k = 0; k < c; k++) {
            let best = -Infinity;
            let bi = -1;
            for (let ky = 0; ky < this.kh; ky++) {
              const iy = y * this.sh - this.padTop + ky;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < this.kw; kx++) {
                const ix = xx * this.sw - this.padLeft + kx;
                if (ix < 0 || ix >= w) continue;
                const idx = ((b * h + iy) * w + ix) * c + k;
                const v = xd[idx]!;
                if (v > best || bi < 0) {
                  best = v;
                  bi = idx;
                }
              }
            }
            o[ob + k] = best;
            if (arg) arg[ob + k] = bi;
          }
        }
    this.ctx = arg ? { shape: x.shape, arg } : undefined;
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const gi = this.gradBuffer(this.ctx.shape, g.dtype);
    gi.data.fill(0);
    const arg = this.ctx.arg;
    for (let i = 0; i < arg.length; i++) if (arg[i]! >= 0) gi.data[arg[i]!] += g.data[i]!;
    return gi;
  }
}

/** Average pooling (TF AvgPool: padded cells are not counted). */
export class AvgPool2d extends Pool2d {
  private ctx: { shape: readonly number[] } | undefined;

  private windows(h: number, w: number, y: number, xx: number): [number, number, number, number, number] {
    const y0 = Math.max(0, y * this.sh - this.padTop);
    const y1 = Math.min(h, y * this.sh - this.padTop + this.kh);
    const x0 = Math.max(0, xx * this.sw - this.padLeft);
    const x1 = Math.min(w, xx * this.sw - this.padLeft + this.kw);
    return [y0, y1, x0, x1, Math.max(1, (y1 - y0) * (x1 - x0))];
  }

  forward(x: FTensor): FTensor {
    const { shape } = this.inferShape(x.shape as number[]);
    const [n, h, w, c] = x.shape as [number, number, number, number];
    const [, oh, ow] = shape as [number, number, number, number];
    const out = this.outBuffer(shape, x.dtype);
    const acc = new Float64Array(c);
    for (let b = 0; b < n; b++)
      for (let y = 0; y < oh; y++)
        for (let xx = 0; xx < ow; xx++) {
          const [y0, y1, x0, x1, cnt] = this.windows(h, w, y, xx);
          acc.fill(0);
          for (let iy = y0; iy < y1; iy++)
            for (let ix = x0; ix < x1; ix++) {
              const base = ((b * h + iy) * w + ix) * c;
              for (let k = 0; k < c; k++) acc[k] += x.data[base + k]!;
            }
          const ob = ((b * oh + y) * ow + xx) * c;
          for (let k = 0; k < c; k++) out.data[ob + k] = acc[k]! / cnt;
        }
    this.ctx = { shape: x.shape };
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const [n, h, w, c] = this.ctx.shape as [number, number, number, number];
    const [oh, ow] = this.outSize(h, w);
    const gi = this.gradBuffer(this.ctx.shape, g.dtype);
    gi.data.fill(0);
    for (let b = 0; b < n; b++)
      for (let y = 0; y < oh; y++)
        for (let xx = 0; xx < ow; xx++) {
          const [y0, y1, x0, x1, cnt] = this.windows(h, w, y, xx);
          const ob = ((b * oh + y) * ow + xx) * c;
          for (let iy = y0; iy < y1; iy++)
            for (let ix = x0; ix < x1; ix++) {
              const base = ((b * h + iy) * w + ix) * c;
              for (let k = 0; k < c; k++) gi.data[base + k] += g.data[ob + k]! / cnt;
            }
        }
    return gi;
  }
}

/** Float copy helper for importers: a typed array as a new f32 tensor of the given shape. */
export function f32Tensor(data: ArrayLike<number>, shape: readonly number[]): Tensor<'f32'> {
  const t = Tensor.zeros(shape);
  if (t.numel !== data.length) throw new QuantFaceError('E_SHAPE', `expected ${t.numel} values for ${shapeStr(shape)}, got ${data.length}`);
  (t.data as FloatArray).set(data as never);
  return t;
}

// ------------------------------------------------------------------ general tensor ops (detector heads)
/** Row-major strides of a shape. */
function stridesOf(s: readonly number[]): number[] {
  const r = new Array<number>(s.length).fill(1);
  for (let i = s.length - 2; i >= 0; i--) r[i] = r[i + 1]! * s[i + 1]!;
  return r;
}

function normAxis(axis: number, rank: number, what: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 1 || a >= rank) throw new QuantFaceError('E_SHAPE', `${what}: axis ${axis} is not a non-batch axis of a rank-${rank} tensor`);
  return a;
}

/**
 * Copies `rows` rows of `len` elements: row r from src[srcOff + r * srcStride]
 * to dst[dstOff + r * dstStride]. Short rows (e.g. the 2 or 4 values per
 * prior of a detector's head) are copied element by element: a subarray
 * view per row would cost more than the copy.
 */
function copyRows(src: FloatArray, srcOff: number, srcStride: number, dst: FloatArray, dstOff: number, dstStride: number, len: number, rows: number): void {
  if (len >= 32) {
    for (let r = 0; r < rows; r++) dst.set(src.subarray(srcOff + r * srcStride, srcOff + r * srcStride + len) as never, dstOff + r * dstStride);
    return;
  }
  for (let r = 0; r < rows; r++) {
    const a = srcOff + r * srcStride;
    const b = dstOff + r * dstStride;
    for (let k = 0; k < len; k++) dst[b + k] = src[a + k]!;
  }
}

/**
 * Concatenation of several tensors along one axis (not the batch axis;
 * negative axes count from the end). ONNX Concat of computed tensors: a
 * channel concat of NCHW tensors is axis -1 of the engine's NHWC tensors.
 */
export class Concat extends Module {
  readonly axis: number;
  readonly inputs: number;
  private ctx: { shapes: (readonly number[])[]; axis: number } | undefined;

  constructor(axis: number, inputs: number) {
    super();
    if (!Number.isInteger(axis)) throw new QuantFaceError('E_ARG', `Concat: axis must be an integer (got ${axis})`);
    if (!Number.isInteger(inputs) || inputs < 1) throw new QuantFaceError('E_ARG', `Concat: needs at least one input (got ${inputs})`);
    this.axis = axis;
    this.inputs = inputs;
  }

  override get numInputs(): number {
    return this.inputs;
  }

  inferShape(...shapes: number[][]): ShapeInfo {
    if (shapes.length !== this.inputs) throw new QuantFaceError('E_SHAPE', `Concat: expected ${this.inputs} inputs, got ${shapes.length}`);
    const s0 = shapes[0]!;
    const ax = normAxis(this.axis, s0.length, 'Concat');
    let total = 0;
    for (const s of shapes) {
      if (s.length !== s0.length || s.some((d, i) => i !== ax && d !== s0[i])) throw new QuantFaceError('E_SHAPE', `Concat: shapes ${shapes.map((x) => shapeStr(x)).join(', ')} differ outside axis ${this.axis}`);
      total += s[ax]!;
    }
    const out = [...s0];
    out[ax] = total;
    return { shape: out, macs: 0 };
  }

  forward(...xs: FTensor[]): FTensor {
    const { shape } = this.inferShape(...xs.map((x) => x.shape as number[]));
    const ax = normAxis(this.axis, shape.length, 'Concat');
    const out = this.outBuffer(shape, xs[0]!.dtype);
    const o = out.data;
    const outer = shape.slice(0, ax).reduce((a, b) => a * b, 1);
    const inner = shape.slice(ax + 1).reduce((a, b) => a * b, 1);
    const rowOut = shape[ax]! * inner;
    let at = 0;
    for (const x of xs) {
      const row = x.shape[ax]! * inner;
      copyRows(x.data, 0, row, o, at, rowOut, row, outer);
      at += row;
    }
    this.ctx = { shapes: xs.map((x) => x.shape), axis: ax };
    return out;
  }

  backward(g: FTensor): FTensor[] {
    if (!this.ctx) throw noCtx(this);
    const { shapes, axis: ax } = this.ctx;
    const outer = g.shape.slice(0, ax).reduce((a, b) => a * b, 1);
    const inner = g.shape.slice(ax + 1).reduce((a, b) => a * b, 1);
    const rowOut = g.shape[ax]! * inner;
    let at = 0;
    return shapes.map((s) => {
      const gi = this.gradBuffer(s, g.dtype);
      const row = s[ax]! * inner;
      copyRows(g.data, at, rowOut, gi.data, 0, row, row, outer);
      at += row;
      return gi;
    });
  }

  describe(): string {
    return `Concat(axis=${this.axis}, ${this.inputs} inputs)`;
  }
}

/** Elements [start, end) of one non-batch axis (ONNX Slice with step 1 on one axis). */
export class Slice extends Module {
  readonly axis: number;
  readonly start: number;
  readonly end: number;
  private ctx: { shape: readonly number[] } | undefined;

  /** start / end as ONNX gives them (negative from the end, clamped to the axis). */
  constructor(axis: number, start: number, end: number) {
    super();
    if (![axis, start].every(Number.isInteger) || !(Number.isInteger(end) || end === Infinity)) throw new QuantFaceError('E_ARG', `Slice: axis, start and end must be integers (got ${axis}, ${start}, ${end})`);
    this.axis = axis;
    this.start = start;
    this.end = end;
  }

  private range(s: readonly number[]): { ax: number; lo: number; hi: number } {
    const ax = normAxis(this.axis, s.length, 'Slice');
    const n = s[ax]!;
    const c = (v: number): number => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
    const lo = c(this.start);
    const hi = Math.max(lo, c(this.end));
    if (hi === lo) throw new QuantFaceError('E_SHAPE', `Slice: [${this.start}, ${this.end}) of axis ${this.axis} of ${shapeStr(s)} is empty`);
    return { ax, lo, hi };
  }

  inferShape(s: number[]): ShapeInfo {
    const { ax, lo, hi } = this.range(s);
    const out = [...s];
    out[ax] = hi - lo;
    return { shape: out, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const s = x.shape;
    const { ax, lo, hi } = this.range(s);
    const { shape } = this.inferShape(s as number[]);
    const out = this.outBuffer(shape, x.dtype);
    const outer = s.slice(0, ax).reduce((a, b) => a * b, 1);
    const inner = s.slice(ax + 1).reduce((a, b) => a * b, 1);
    const rowIn = s[ax]! * inner;
    const rowOut = (hi - lo) * inner;
    copyRows(x.data, lo * inner, rowIn, out.data, 0, rowOut, rowOut, outer);
    this.ctx = { shape: s };
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const s = this.ctx.shape;
    const { ax, lo, hi } = this.range(s);
    const gi = this.gradBuffer(s, g.dtype);
    gi.data.fill(0);
    const outer = s.slice(0, ax).reduce((a, b) => a * b, 1);
    const inner = s.slice(ax + 1).reduce((a, b) => a * b, 1);
    const rowIn = s[ax]! * inner;
    const rowOut = (hi - lo) * inner;
    copyRows(g.data, 0, rowOut, gi.data, lo * inner, rowIn, rowOut, outer);
    return gi;
  }

  describe(): string {
    return `Slice(axis=${this.axis}, [${this.start}, ${this.end}))`;
  }
}

/** y = exp(x) elementwise. */
export class Exp extends Module {
  private ctx: { y: FTensor } | undefined;
  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }
  forward(x: FTensor): FTensor {
    const out = this.outBuffer(x.shape, x.dtype);
    const o = out.data;
    const xd = x.data;
    for (let i = 0; i < o.length; i++) o[i] = Math.exp(xd[i]!);
    this.ctx = isGradEnabled() ? { y: out } : undefined;
    return out;
  }
  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const y = this.ctx.y.data;
    const gi = this.gradBuffer(g.shape, g.dtype);
    for (let i = 0; i < y.length; i++) gi.data[i] = g.data[i]! * y[i]!;
    return gi;
  }
}

/** Softmax over one non-batch axis (max-subtracted, accumulated in float64). */
export class Softmax extends Module {
  readonly axis: number;
  private ctx: { y: FTensor; ax: number } | undefined;
  constructor(axis = -1) {
    super();
    if (!Number.isInteger(axis)) throw new QuantFaceError('E_ARG', `Softmax: axis must be an integer (got ${axis})`);
    this.axis = axis;
  }
  inferShape(s: number[]): ShapeInfo {
    normAxis(this.axis, s.length, 'Softmax');
    return { shape: s, macs: 0 };
  }
  forward(x: FTensor): FTensor {
    const s = x.shape;
    const ax = normAxis(this.axis, s.length, 'Softmax');
    const out = this.outBuffer(s, x.dtype);
    const n = s[ax]!;
    const inner = s.slice(ax + 1).reduce((a, b) => a * b, 1);
    const outer = s.slice(0, ax).reduce((a, b) => a * b, 1);
    const xd = x.data;
    const o = out.data;
    for (let r = 0; r < outer; r++)
      for (let k = 0; k < inner; k++) {
        const base = r * n * inner + k;
        let m = -Infinity;
        for (let j = 0; j < n; j++) m = Math.max(m, xd[base + j * inner]!);
        let sum = 0;
        for (let j = 0; j < n; j++) {
          const e = Math.exp(xd[base + j * inner]! - m);
          o[base + j * inner] = e;
          sum += e;
        }
        for (let j = 0; j < n; j++) o[base + j * inner] = o[base + j * inner]! / sum;
      }
    this.ctx = isGradEnabled() ? { y: out, ax } : undefined;
    return out;
  }
  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const { y, ax } = this.ctx;
    const s = y.shape;
    const n = s[ax]!;
    const inner = s.slice(ax + 1).reduce((a, b) => a * b, 1);
    const outer = s.slice(0, ax).reduce((a, b) => a * b, 1);
    const gi = this.gradBuffer(s, g.dtype);
    for (let r = 0; r < outer; r++)
      for (let k = 0; k < inner; k++) {
        const base = r * n * inner + k;
        let dot = 0;
        for (let j = 0; j < n; j++) dot += g.data[base + j * inner]! * y.data[base + j * inner]!;
        for (let j = 0; j < n; j++) gi.data[base + j * inner] = y.data[base + j * inner]! * (g.data[base + j * inner]! - dot);
      }
    return gi;
  }
  describe(): string {
    return `Softmax(axis=${this.axis})`;
  }
}

/**
 * y = x (op) c with a constant c broadcast to x's per-sample shape
 * (numpy rules; c's own batch dimension, if any, must be 1): Add, Sub,
 * Mul, Div and reversed Sub / Div (c - x, c / x). For constants that are
 * not one value per channel (ChannelAffine covers those), e.g. prior
 * boxes [1, P, 2] of a detector's box decoding.
 */
export class ConstBinary extends Module {
  readonly op: 'add' | 'sub' | 'mul' | 'div' | 'rsub' | 'rdiv';
  readonly constShape: readonly number[];
  /** The expansion for one per-sample shape, with the constant it was made from (a loadStateDict may change it in place). */
  private expanded: { key: string; data: Float32Array; from: Float32Array } | undefined;
  private ctx: { x: FTensor } | undefined;

  constructor(op: ConstBinary['op'], value: Float32Array, shape: readonly number[]) {
    super();
    if (!['add', 'sub', 'mul', 'div', 'rsub', 'rdiv'].includes(op)) throw new QuantFaceError('E_ARG', `ConstBinary: unknown op ${op}`);
    if (value.length !== shape.reduce((a, b) => a * b, 1)) throw new QuantFaceError('E_SHAPE', `ConstBinary: ${value.length} values for shape ${shapeStr(shape)}`);
    this.op = op;
    this.constShape = Object.freeze([...shape]);
    // A buffer (saved in .qfm files, loaded by loadStateDict), flat: its shape is constShape.
    const t = Tensor.zeros([value.length]);
    t.data.set(value);
    this.registerBuffer('value', t);
  }

  /** The constant's values (row-major over constShape). */
  get value(): Float32Array {
    return this.buffer('value').data as Float32Array;
  }

  /** The constant expanded to the per-sample shape s (cached). */
  private expand(s: readonly number[]): Float32Array {
    const per = s.slice(1);
    const v = this.value;
    // a constant of the per-sample shape itself (leading 1s aside) is its own expansion
    const own = [...this.constShape];
    while (own.length > per.length && own[0] === 1) own.shift();
    if (own.length === per.length && own.every((d, i) => d === per[i])) return v;
    const key = per.join(',');
    const e = this.expanded;
    if (e?.key === key && e.from.length === v.length && e.from.every((x, i) => Object.is(x, v[i]))) return e.data;
    const c = [...this.constShape];
    if (c.length > s.length) {
      if (c.slice(0, c.length - s.length).some((d) => d !== 1)) throw new QuantFaceError('E_SHAPE', `ConstBinary: constant ${shapeStr(this.constShape)} does not broadcast to ${shapeStr(s)}`);
      c.splice(0, c.length - s.length);
    }
    while (c.length < s.length) c.unshift(1);
    if (c[0] !== 1 || c.some((d, i) => d !== 1 && d !== s[i])) throw new QuantFaceError('E_SHAPE', `ConstBinary: constant ${shapeStr(this.constShape)} does not broadcast to ${shapeStr(s)} (or would change its shape)`);
    const cs = stridesOf(c.slice(1)).map((st, i) => (c[i + 1] === 1 ? 0 : st));
    const n = per.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const idx = new Array<number>(per.length).fill(0);
    for (let i = 0; i < n; i++) {
      let off = 0;
      for (let k = 0; k < per.length; k++) off += idx[k]! * cs[k]!;
      data[i] = v[off]!;
      for (let k = per.length - 1; k >= 0; k--) {
        if (++idx[k]! < per[k]!) break;
        idx[k] = 0;
      }
    }
    this.expanded = { key, data, from: Float32Array.from(v) };
    return data;
  }

  inferShape(s: number[]): ShapeInfo {
    this.expand(s);
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const c = this.expand(x.shape);
    const out = this.outBuffer(x.shape, x.dtype);
    const o = out.data;
    const xd = x.data;
    const P = c.length;
    const op = this.op;
    // one loop per operation and per sample (no per-element dispatch or modulo)
    for (let b = 0; b < o.length; b += P) {
      if (op === 'add') for (let i = 0; i < P; i++) o[b + i] = xd[b + i]! + c[i]!;
      else if (op === 'sub') for (let i = 0; i < P; i++) o[b + i] = xd[b + i]! - c[i]!;
      else if (op === 'mul') for (let i = 0; i < P; i++) o[b + i] = xd[b + i]! * c[i]!;
      else if (op === 'div') for (let i = 0; i < P; i++) o[b + i] = xd[b + i]! / c[i]!;
      else if (op === 'rsub') for (let i = 0; i < P; i++) o[b + i] = c[i]! - xd[b + i]!;
      else for (let i = 0; i < P; i++) o[b + i] = c[i]! / xd[b + i]!;
    }
    this.ctx = isGradEnabled() ? { x } : undefined;
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw noCtx(this);
    const x = this.ctx.x;
    const c = this.expand(x.shape);
    const P = c.length;
    const gi = this.gradBuffer(x.shape, g.dtype);
    for (let i = 0; i < gi.data.length; i++) {
      const k = c[i % P]!;
      const v = x.data[i]!;
      const d = this.op === 'add' || this.op === 'sub' ? 1 : this.op === 'rsub' ? -1 : this.op === 'mul' ? k : this.op === 'div' ? 1 / k : -k / (v * v);
      gi.data[i] = g.data[i]! * d;
    }
    return gi;
  }

  describe(): string {
    return `ConstBinary(${this.op}, ${shapeStr(this.constShape)})`;
  }
}
