/**
 * Layers with forward and backward passes (NHWC activations, OHWI
 * convolution weights, [out, in] linear weights).
 *
 * Quantization hooks (attached by lib/quant's toQat, absent in FP models):
 * - Conv2d/Linear `weightQuant`: a WeightTransform applied to the master
 *   weight at every forward (fake quantization); its backward routes the
 *   gradient to the master weight.
 * - PReLU `slopeQuant`: the same for the slope vector.
 * - PReLU/ReLU/Add `outQuant`: a unary module applied to the output
 *   (activation fake quantization).
 *
 * Float32 BatchNorm, PReLU and Add run native kernels through ./kernels.ts
 * (as do convolution, GEMM and quantization); float64 data (gradient checks)
 * and the remaining elementwise loops (ReLU, Dropout, bias) run in JavaScript
 * over the typed arrays.
 */
import { Tensor, Rng, QuantFaceError, shapeStr, assertShape, type FTensor, type FloatArray } from '../tensor.js';
import { Module, Parameter, isGradEnabled, type ShapeInfo } from './module.js';
import * as K from './kernels.js';
import { bufferPool, sameBuffer } from './pool.js';
import type { ConvGeom } from './kernels.js';

// ------------------------------------------------------------------ hooks
/**
 * A transform of a weight tensor applied in forward (e.g. per-channel fake
 * quantization). Layout: element i belongs to channel floor(i / inner) % channels.
 */
export abstract class WeightTransform extends Module {
  /** Returns the transformed weight (a buffer owned by the transform, valid until its next call). */
  abstract transform(w: FTensor, channels: number, inner: number): FTensor;
  /** gradW (+)= d transform / d w applied to gradWt, for the last transform call. */
  abstract backwardTransform(gradWt: FTensor, gradW: FTensor, accumulate: boolean): void;
  /** True when backwardTransform is the identity (callers may then write gradients directly). */
  abstract get identityGrad(): boolean;

  forward(w: FTensor): FTensor {
    return this.transform(w, 1, w.numel);
  }
  backward(_g: FTensor): FTensor {
    throw new QuantFaceError('E_UNSUPPORTED_OP', `${this.constructor.name}: use backwardTransform()`);
  }
  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }
}

function outQuantOf(m: Module): Module | undefined {
  return m.getChild('outQuant');
}

function unaryBackward(m: Module, g: FTensor): FTensor {
  const r = m.backward(g);
  if (Array.isArray(r)) throw new QuantFaceError('E_INTERNAL', `${m.constructor.name} returned several input gradients where one was expected`);
  return r;
}

// ------------------------------------------------------------------ init
/** Weight initialisers (fan computed for OHWI / [out, in] layouts). */
export const init = {
  /** Normal(0, std). */
  normal(t: FTensor, rng: Rng, std: number, mean = 0): void {
    const d = t.data;
    for (let i = 0; i < d.length; i++) d[i] = mean + std * rng.normal();
  },
  uniform(t: FTensor, rng: Rng, lo: number, hi: number): void {
    const d = t.data;
    for (let i = 0; i < d.length; i++) d[i] = lo + (hi - lo) * rng.uniform();
  },
  constant(t: FTensor, v: number): void {
    t.data.fill(v);
  },
  /** He normal: std = gain / sqrt(fan), gain sqrt(2) (ReLU). fan = fanIn or fanOut as PyTorch defines them. */
  kaimingNormal(t: FTensor, rng: Rng, fan: number, gain = Math.SQRT2): void {
    init.normal(t, rng, gain / Math.sqrt(fan));
  },
};

// ------------------------------------------------------------------ Conv2d
export type Pair = number | [number, number];
export interface Conv2dConfig {
  stride?: Pair;
  /** Same on all sides, [h, w], or [top, left, bottom, right]. */
  padding?: number | [number, number] | [number, number, number, number];
  dilation?: Pair;
  groups?: number;
  /** Default false (the face models use bias-free convolutions). */
  bias?: boolean;
  /** Seed generator for the default initialisation (PyTorch's default: U(+-1/sqrt(fan_in))). */
  rng?: Rng;
  /** Run the default initialisation. Default true (false: zeros, for callers that initialise themselves). */
  init?: boolean;
}

function pair(v: Pair | undefined, d: number): [number, number] {
  if (v === undefined) return [d, d];
  return typeof v === 'number' ? [v, v] : v;
}

export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelH: number;
  readonly kernelW: number;
  readonly strideH: number;
  readonly strideW: number;
  readonly padTop: number;
  readonly padLeft: number;
  readonly padBottom: number;
  readonly padRight: number;
  readonly dilationH: number;
  readonly dilationW: number;
  readonly groups: number;
  readonly weight: Parameter;
  bias: Parameter | null;
  private ctx: { x: FTensor; w: FTensor; g: ConvGeom } | undefined;

  constructor(inChannels: number, outChannels: number, kernel: Pair, cfg: Conv2dConfig = {}) {
    super();
    const groups = cfg.groups ?? 1;
    if (!(inChannels > 0 && outChannels > 0 && inChannels % groups === 0 && outChannels % groups === 0))
      throw new QuantFaceError('E_ARG', `Conv2d: channels ${inChannels}->${outChannels} must be positive and divisible by groups ${groups}`);
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    [this.kernelH, this.kernelW] = pair(kernel, 1);
    [this.strideH, this.strideW] = pair(cfg.stride, 1);
    [this.dilationH, this.dilationW] = pair(cfg.dilation, 1);
    const p = cfg.padding ?? 0;
    if (typeof p === 'number') this.padTop = this.padLeft = this.padBottom = this.padRight = p;
    else if (p.length === 2) [this.padTop, this.padLeft, this.padBottom, this.padRight] = [p[0], p[1], p[0], p[1]];
    else [this.padTop, this.padLeft, this.padBottom, this.padRight] = p;
    this.groups = groups;
    const cig = inChannels / groups;
    const fanIn = cig * this.kernelH * this.kernelW;
    const rng = cfg.rng ?? new Rng(0);
    const bound = 1 / Math.sqrt(fanIn);
    const w = Tensor.zeros([outChannels, this.kernelH, this.kernelW, cig]);
    if (cfg.init ?? true) init.uniform(w, rng, -bound, bound);
    this.weight = this.registerParameter('weight', new Parameter(w))!;
    if (cfg.bias) {
      const b = Tensor.zeros([outChannels]);
      if (cfg.init ?? true) init.uniform(b, rng, -bound, bound);
      this.bias = this.registerParameter('bias', new Parameter(b));
    } else this.bias = null;
  }

  /** Adds a zero bias if the layer has none (e.g. before folding a BatchNorm into it). Returns it. */
  ensureBias(): Parameter {
    if (!this.bias) this.bias = this.registerParameter('bias', new Parameter(Tensor.zeros([this.outChannels], this.weight.data.dtype) as FTensor));
    return this.bias!;
  }

  /** Fan-in and fan-out as PyTorch computes them for this weight. */
  get fans(): { fanIn: number; fanOut: number } {
    const rf = this.kernelH * this.kernelW;
    return { fanIn: (this.inChannels / this.groups) * rf, fanOut: this.outChannels * rf };
  }

  get weightQuant(): WeightTransform | undefined {
    return this.getChild('weightQuant') as WeightTransform | undefined;
  }

  geometry(n: number, h: number, w: number): ConvGeom {
    return {
      n,
      h,
      w,
      c: this.inChannels,
      cout: this.outChannels,
      kh: this.kernelH,
      kw: this.kernelW,
      strideH: this.strideH,
      strideW: this.strideW,
      padTop: this.padTop,
      padLeft: this.padLeft,
      padBottom: this.padBottom,
      padRight: this.padRight,
      dilationH: this.dilationH,
      dilationW: this.dilationW,
      groups: this.groups,
    };
  }

  /** The weight the convolution uses: the master weight or its fake-quantized copy. */
  effectiveWeight(): FTensor {
    const wq = this.weightQuant;
    const w = this.weight.data;
    return wq ? wq.transform(w, this.outChannels, w.numel / this.outChannels) : w;
  }

  inferShape(s: number[]): ShapeInfo {
    if (s.length !== 4 || s[3] !== this.inChannels) throw new QuantFaceError('E_SHAPE', `Conv2d: expected [N, H, W, ${this.inChannels}] input, got ${shapeStr(s)}`);
    const g = this.geometry(s[0]!, s[1]!, s[2]!);
    const [oh, ow] = K.convOutSize(g);
    if (oh < 1 || ow < 1) throw new QuantFaceError('E_SHAPE', `Conv2d: input ${shapeStr(s)} too small for the kernel`);
    return { shape: [s[0]!, oh, ow, this.outChannels], macs: s[0]! * oh * ow * this.outChannels * this.kernelH * this.kernelW * (this.inChannels / this.groups) };
  }

  forward(x: FTensor): FTensor {
    const { shape } = this.inferShape(x.shape as number[]);
    const g = this.geometry(x.shape[0]!, x.shape[1]!, x.shape[2]!);
    const w = this.effectiveWeight();
    const out = this.outBuffer(shape, x.dtype);
    K.conv2d(g, x.data, w.data, this.bias?.data.data, out.data);
    this.ctx = isGradEnabled() ? { x, w, g } : undefined;
    return out;
  }

  backward(gradOut: FTensor): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'Conv2d.backward called without a forward pass with gradients enabled');
    const { x, w, g } = ctx;
    const gradIn = this.gradBuffer(x.shape, x.dtype);
    K.conv2dBackwardInput(g, gradOut.data, w.data, gradIn.data, false);
    const wslot = this.weight.requiresGrad ? this.weight.gradSlot() : null;
    const bslot = this.bias && this.bias.requiresGrad ? this.bias.gradSlot() : null;
    if (wslot || bslot) {
      const wq = this.weightQuant;
      const direct = !!wslot && (!wq || wq.identityGrad);
      const gw = direct ? wslot!.grad : (this.scratch('gradWt', w.shape, w.dtype) as FTensor);
      const acc = direct ? wslot!.accumulate : false;
      let gb: FTensor | undefined;
      let gbTemp = false;
      if (bslot) {
        if (bslot.accumulate === acc) gb = bslot.grad;
        else {
          gb = this.scratch('gradB', [this.outChannels], w.dtype) as FTensor;
          gbTemp = true;
        }
      }
      K.conv2dBackwardWeight(g, x.data, gradOut.data, gw.data, gb?.data, acc);
      if (wslot && !direct) {
        if (wq) wq.backwardTransform(gw, wslot.grad, wslot.accumulate);
        else addOrCopy(wslot.grad.data, gw.data, wslot.accumulate);
      }
      if (gbTemp) addOrCopy(bslot!.grad.data, gb!.data, bslot!.accumulate);
    }
    return gradIn;
  }

  describe(): string {
    return (
      `Conv2d(${this.inChannels}, ${this.outChannels}, k=${this.kernelH}x${this.kernelW}, s=${this.strideH}x${this.strideW}, ` +
      `p=${this.padTop},${this.padLeft},${this.padBottom},${this.padRight}${this.groups > 1 ? `, groups=${this.groups}` : ''}${this.bias ? ', bias' : ''})`
    );
  }
}

function addOrCopy(dst: FloatArray, src: FloatArray, accumulate: boolean): void {
  if (accumulate) for (let i = 0; i < dst.length; i++) dst[i] += src[i]!;
  else dst.set(src);
}

// ------------------------------------------------------------------ Linear
export interface LinearConfig {
  /** Default true (PyTorch's default). */
  bias?: boolean;
  rng?: Rng;
}

/** y = x W^T + b with W [out, in] (row = output channel). Input [N, in]. */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Parameter;
  bias: Parameter | null;
  private ctx: { x: FTensor; w: FTensor } | undefined;

  constructor(inFeatures: number, outFeatures: number, cfg: LinearConfig = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const rng = cfg.rng ?? new Rng(0);
    const bound = 1 / Math.sqrt(inFeatures);
    const w = Tensor.zeros([outFeatures, inFeatures]);
    init.uniform(w, rng, -bound, bound);
    this.weight = this.registerParameter('weight', new Parameter(w))!;
    if (cfg.bias ?? true) {
      const b = Tensor.zeros([outFeatures]);
      init.uniform(b, rng, -bound, bound);
      this.bias = this.registerParameter('bias', new Parameter(b));
    } else this.bias = null;
  }

  get weightQuant(): WeightTransform | undefined {
    return this.getChild('weightQuant') as WeightTransform | undefined;
  }

  /** Adds a zero bias if the layer has none. Returns it. */
  ensureBias(): Parameter {
    if (!this.bias) this.bias = this.registerParameter('bias', new Parameter(Tensor.zeros([this.outFeatures], this.weight.data.dtype) as FTensor));
    return this.bias!;
  }

  effectiveWeight(): FTensor {
    const wq = this.weightQuant;
    return wq ? wq.transform(this.weight.data, this.outFeatures, this.inFeatures) : this.weight.data;
  }

  inferShape(s: number[]): ShapeInfo {
    if (s.length !== 2 || s[1] !== this.inFeatures) throw new QuantFaceError('E_SHAPE', `Linear: expected [N, ${this.inFeatures}] input, got ${shapeStr(s)}`);
    return { shape: [s[0]!, this.outFeatures], macs: s[0]! * this.inFeatures * this.outFeatures };
  }

  forward(x: FTensor): FTensor {
    const { shape } = this.inferShape(x.shape as number[]);
    const n = x.shape[0]!;
    const w = this.effectiveWeight();
    const out = this.outBuffer(shape, x.dtype);
    K.gemm({ transB: true, m: n, n: this.outFeatures, k: this.inFeatures, a: x.data, b: w.data, c: out.data });
    if (this.bias) {
      const b = this.bias.data.data;
      const o = out.data;
      const nf = this.outFeatures;
      for (let i = 0; i < n; i++) for (let j = 0; j < nf; j++) o[i * nf + j] += b[j]!;
    }
    this.ctx = isGradEnabled() ? { x, w } : undefined;
    return out;
  }

  backward(gradOut: FTensor): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'Linear.backward called without a forward pass with gradients enabled');
    const { x, w } = ctx;
    const n = x.shape[0]!;
    const gradIn = this.gradBuffer(x.shape, x.dtype);
    // dX[n, in] = G[n, out] W[out, in]
    K.gemm({ m: n, n: this.inFeatures, k: this.outFeatures, a: gradOut.data, b: w.data, c: gradIn.data });
    if (this.weight.requiresGrad) {
      const slot = this.weight.gradSlot();
      const wq = this.weightQuant;
      const direct = !wq || wq.identityGrad;
      const gw = direct ? slot.grad : (this.scratch('gradWt', w.shape, w.dtype) as FTensor);
      // dW[out, in] (+)= G^T[out, n] X[n, in]
      K.gemm({ transA: true, m: this.outFeatures, n: this.inFeatures, k: n, a: gradOut.data, b: x.data, c: gw.data, beta: direct && slot.accumulate ? 1 : 0 });
      if (!direct) wq!.backwardTransform(gw, slot.grad, slot.accumulate);
    }
    if (this.bias && this.bias.requiresGrad) {
      const slot = this.bias.gradSlot();
      const gb = slot.grad.data;
      const nf = this.outFeatures;
      if (!slot.accumulate) gb.fill(0);
      const g = gradOut.data;
      for (let i = 0; i < n; i++) for (let j = 0; j < nf; j++) gb[j] += g[i * nf + j]!;
    }
    return gradIn;
  }

  describe(): string {
    return `Linear(${this.inFeatures}, ${this.outFeatures}${this.bias ? '' : ', bias=false'})`;
  }
}

// ------------------------------------------------------------------ BatchNorm
export interface BatchNormConfig {
  eps?: number;
  /** Running average momentum as PyTorch defines it: r = (1 - m) r + m batch. Default 0.1. */
  momentum?: number;
  /** Learnable weight and bias. Default true. */
  affine?: boolean;
}

/**
 * Batch normalisation over every dimension but the last (channels last):
 * [N, C] (BatchNorm1d) or [N, H, W, C] (BatchNorm2d). Training mode
 * normalises with the batch statistics (biased variance) and updates the
 * running averages (unbiased variance); eval mode uses the running ones.
 * Freeze the affine weight with `bn.weight.requiresGrad = false`.
 */
let bnPreluFusion = process.env.QUANTFACE_FUSE_BN_PRELU !== '0';
/**
 * Whether Sequential runs a BatchNorm directly followed by a PReLU as one fused native pass (float32; default
 * on, QUANTFACE_FUSE_BN_PRELU=0 turns it off). Results are the same either way (bit-identical on the native
 * kernels); returns the previous setting.
 */
export function setBnPreluFusion(on: boolean): boolean {
  const prev = bnPreluFusion;
  bnPreluFusion = on;
  return prev;
}

export class BatchNorm extends Module {
  readonly numFeatures: number;
  readonly eps: number;
  momentum: number;
  readonly weight: Parameter | null;
  readonly bias: Parameter | null;
  protected readonly rank: number | null = null;
  private ctx: { x: FTensor; mean: Float64Array; invstd: Float64Array; batchStats: boolean; fused?: boolean } | undefined;

  constructor(numFeatures: number, cfg: BatchNormConfig = {}) {
    super();
    this.numFeatures = numFeatures;
    this.eps = cfg.eps ?? 1e-5;
    this.momentum = cfg.momentum ?? 0.1;
    if (cfg.affine ?? true) {
      this.weight = this.registerParameter('weight', new Parameter(Tensor.full([numFeatures], 1)));
      this.bias = this.registerParameter('bias', new Parameter(Tensor.zeros([numFeatures])));
    } else {
      this.weight = null;
      this.bias = null;
    }
    this.registerBuffer('running_mean', Tensor.zeros([numFeatures]));
    this.registerBuffer('running_var', Tensor.full([numFeatures], 1));
  }

  get runningMean(): FTensor {
    return this.buffer('running_mean');
  }
  get runningVar(): FTensor {
    return this.buffer('running_var');
  }

  /** Makes the affine weight (and optionally the bias) untrainable. */
  freezeAffine(bias = false): this {
    if (this.weight) this.weight.requiresGrad = false;
    if (bias && this.bias) this.bias.requiresGrad = false;
    return this;
  }

  inferShape(s: number[]): ShapeInfo {
    if ((this.rank !== null && s.length !== this.rank) || s[s.length - 1] !== this.numFeatures)
      throw new QuantFaceError('E_SHAPE', `${this.constructor.name}: expected ${this.rank ?? 'any'}-d input with ${this.numFeatures} channels last, got ${shapeStr(s)}`);
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    this.inferShape(x.shape as number[]);
    const C = this.numFeatures;
    const M = x.numel / C;
    const xd = x.data;
    const out = this.outBuffer(x.shape, x.dtype);
    const od = out.data;
    const mean = new Float64Array(C);
    const invstd = new Float64Array(C);
    const batchStats = this.training;
    if (batchStats && M < 2) throw new QuantFaceError('E_SHAPE', `${this.constructor.name}: training needs more than one value per channel (input ${shapeStr(x.shape)})`);
    if (
      K.batchNormForward({
        x: xd,
        out: od,
        channels: C,
        training: batchStats,
        eps: this.eps,
        momentum: this.momentum,
        ...(this.weight ? { weight: this.weight.data.data } : {}),
        ...(this.bias ? { bias: this.bias.data.data } : {}),
        runningMean: this.runningMean.data,
        runningVar: this.runningVar.data,
        mean,
        invstd,
      })
    ) {
      this.ctx = isGradEnabled() ? { x, mean, invstd, batchStats } : undefined;
      return out;
    }
    if (batchStats) {
      // One pass: sums of d = x - K and d^2 in float64, shifted by the first row K (no cancellation for
      // data far from 0); mean = K + S1/M, M var = S2 - S1^2/M.
      const K0 = new Float64Array(C);
      const s1 = new Float64Array(C);
      const s2 = new Float64Array(C);
      for (let c = 0; c < C; c++) K0[c] = xd[c]!;
      for (let r = 0; r < M; r++) {
        const b = r * C;
        for (let c = 0; c < C; c++) {
          const d = xd[b + c]! - K0[c]!;
          s1[c] += d;
          s2[c] += d * d;
        }
      }
      const v = new Float64Array(C);
      for (let c = 0; c < C; c++) {
        mean[c] = K0[c]! + s1[c]! / M;
        v[c] = Math.max(0, s2[c]! - (s1[c]! * s1[c]!) / M);
      }
      const rm = this.runningMean.data;
      const rv = this.runningVar.data;
      const m = this.momentum;
      for (let c = 0; c < C; c++) {
        const varB = v[c]! / M;
        invstd[c] = 1 / Math.sqrt(varB + this.eps);
        rm[c] = (1 - m) * rm[c]! + m * mean[c]!;
        rv[c] = (1 - m) * rv[c]! + m * (v[c]! / (M - 1));
      }
    } else {
      const rm = this.runningMean.data;
      const rv = this.runningVar.data;
      for (let c = 0; c < C; c++) {
        mean[c] = rm[c]!;
        invstd[c] = 1 / Math.sqrt(rv[c]! + this.eps);
      }
    }
    // y = (x - mean) * (invstd * gamma) + beta, as a per-channel scale and shift.
    const scale = x.dtype === 'f32' ? new Float32Array(C) : new Float64Array(C);
    const shift = x.dtype === 'f32' ? new Float32Array(C) : new Float64Array(C);
    const gw = this.weight?.data.data;
    const gb = this.bias?.data.data;
    for (let c = 0; c < C; c++) {
      const s = invstd[c]! * (gw ? gw[c]! : 1);
      scale[c] = s;
      shift[c] = (gb ? gb[c]! : 0) - mean[c]! * s;
    }
    for (let r = 0; r < M; r++) {
      const b = r * C;
      for (let c = 0; c < C; c++) od[b + c] = xd[b + c]! * scale[c]! + shift[c]!;
    }
    this.ctx = isGradEnabled() ? { x, mean, invstd, batchStats } : undefined;
    return out;
  }

  backward(gradOut: FTensor): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', `${this.constructor.name}.backward called without a forward pass with gradients enabled`);
    if (ctx.fused) throw new QuantFaceError('E_ARG', `${this.constructor.name}.backward: the last forward was fused with the following PReLU (its backward covers both)`);
    const { x, mean, invstd, batchStats } = ctx;
    const C = this.numFeatures;
    const M = x.numel / C;
    const xd = x.data;
    const g = gradOut.data;
    {
      // Native path: weight and bias gradients must agree on accumulation (they always do in practice).
      const wp = this.weight && this.weight.requiresGrad ? this.weight : null;
      const bp = this.bias && this.bias.requiresGrad ? this.bias : null;
      const acc = (wp ?? bp)?.grad != null;
      const native = K.nativeApplies('batchNormBackward', xd, g, this.weight?.data.data, wp?.data.data, bp?.data.data);
      if (native && (!wp || !bp || (wp.grad != null) === (bp.grad != null))) {
        const gradIn = this.gradBuffer(x.shape, x.dtype);
        const ok = K.batchNormBackward({
          x: xd,
          gradOut: g,
          gradIn: gradIn.data,
          channels: C,
          mean,
          invstd,
          ...(this.weight ? { weight: this.weight.data.data } : {}),
          training: batchStats,
          ...(wp ? { gradWeight: wp.gradSlot().grad.data } : {}),
          ...(bp ? { gradBias: bp.gradSlot().grad.data } : {}),
          accumulate: acc,
        });
        if (ok) return gradIn;
        throw new QuantFaceError('E_UNSUPPORTED_OP', `${this.constructor.name}: native batchNormBackward refused float32 data`);
      }
    }
    // Per-channel sums: sg = sum g, sgx = sum g * xhat.
    const sg = new Float64Array(C);
    const sgx = new Float64Array(C);
    for (let r = 0; r < M; r++) {
      const b = r * C;
      for (let c = 0; c < C; c++) {
        const gv = g[b + c]!;
        sg[c] += gv;
        sgx[c] += gv * (xd[b + c]! - mean[c]!);
      }
    }
    for (let c = 0; c < C; c++) sgx[c] *= invstd[c]!;
    if (this.weight && this.weight.requiresGrad) {
      const { grad, accumulate } = this.weight.gradSlot();
      const d = grad.data;
      for (let c = 0; c < C; c++) d[c] = (accumulate ? d[c]! : 0) + sgx[c]!;
    }
    if (this.bias && this.bias.requiresGrad) {
      const { grad, accumulate } = this.bias.gradSlot();
      const d = grad.data;
      for (let c = 0; c < C; c++) d[c] = (accumulate ? d[c]! : 0) + sg[c]!;
    }
    const gradIn = this.gradBuffer(x.shape, x.dtype);
    const gi = gradIn.data;
    const gw = this.weight?.data.data;
    const isF32 = x.dtype === 'f32';
    const a = isF32 ? new Float32Array(C) : new Float64Array(C);
    const bq = isF32 ? new Float32Array(C) : new Float64Array(C);
    const cc = isF32 ? new Float32Array(C) : new Float64Array(C);
    if (batchStats) {
      // dx = gamma*invstd * (g - sg/M - xhat * sgx/M), xhat = (x - mean) * invstd
      // = a*g + b*x + c with a = gamma*invstd, b = -a*invstd*sgx/M, c = -a*sg/M - b*mean
      for (let c = 0; c < C; c++) {
        const ac = invstd[c]! * (gw ? gw[c]! : 1);
        const bc = (-ac * invstd[c]! * sgx[c]!) / M;
        a[c] = ac;
        bq[c] = bc;
        cc[c] = (-ac * sg[c]!) / M - bc * mean[c]!;
      }
      for (let r = 0; r < M; r++) {
        const b = r * C;
        for (let c = 0; c < C; c++) gi[b + c] = a[c]! * g[b + c]! + bq[c]! * xd[b + c]! + cc[c]!;
      }
    } else {
      for (let c = 0; c < C; c++) a[c] = invstd[c]! * (gw ? gw[c]! : 1);
      for (let r = 0; r < M; r++) {
        const b = r * C;
        for (let c = 0; c < C; c++) gi[b + c] = a[c]! * g[b + c]!;
      }
    }
    return gradIn;
  }

  /**
   * @internal BatchNorm followed by PReLU(`slope`) in one native pass (float32; Sequential runs a BatchNorm
   * directly followed by a PReLU this way): returns PReLU(BN(x)) (this module's output buffer); BN(x) itself is
   * never written. The backward is backwardPrelu (through PReLU.backward). Call only when fusablePrelu holds.
   */
  forwardPrelu(x: FTensor, slope: FTensor): FTensor {
    const C = this.numFeatures;
    const out = this.outBuffer(x.shape, x.dtype);
    const mean = new Float64Array(C);
    const invstd = new Float64Array(C);
    const batchStats = this.training;
    const ok = K.batchNormForward({
      x: x.data,
      out: out.data,
      channels: C,
      training: batchStats,
      eps: this.eps,
      momentum: this.momentum,
      ...(this.weight ? { weight: this.weight.data.data } : {}),
      ...(this.bias ? { bias: this.bias.data.data } : {}),
      runningMean: this.runningMean.data,
      runningVar: this.runningVar.data,
      mean,
      invstd,
      slope: slope.data,
    });
    if (!ok) throw new QuantFaceError('E_UNSUPPORTED_OP', `${this.constructor.name}: native batchNormForward refused the fused PReLU`);
    this.ctx = isGradEnabled() ? { x, mean, invstd, batchStats, fused: true } : undefined;
    return out;
  }

  /** @internal Whether forwardPrelu applies to input x and a PReLU with per-channel slopes `slope`. */
  fusablePrelu(x: FTensor, slope: FTensor): boolean {
    this.inferShape(x.shape as number[]);
    const C = this.numFeatures;
    if (slope.numel !== C || (this.training && x.numel / C < 2)) return false;
    return K.nativeApplies('batchNormForward', x.data, this.weight?.data.data, this.bias?.data.data, this.runningMean.data, this.runningVar.data, slope.data);
  }

  /**
   * @internal Backward of forwardPrelu: gradOut is the gradient at the PReLU output, mask a following fake
   * quantizer's straight-through select; writes the slope gradient into gradSlope and returns the gradient at x
   * (BN weight / bias gradients as backward does).
   */
  backwardPrelu(gradOut: FTensor, slope: FTensor, gradSlope: Float64Array, mask?: Uint8Array): FTensor {
    const ctx = this.ctx;
    if (!ctx || !ctx.fused) throw new QuantFaceError('E_ARG', `${this.constructor.name}.backwardPrelu called without a fused forward pass with gradients enabled`);
    const { x, mean, invstd, batchStats } = ctx;
    const C = this.numFeatures;
    const wp = this.weight && this.weight.requiresGrad ? this.weight : null;
    const bp = this.bias && this.bias.requiresGrad ? this.bias : null;
    const same = !wp || !bp || (wp.grad != null) === (bp.grad != null);
    const acc = (wp ?? bp)?.grad != null;
    // Weight and bias slots that disagree on accumulation: sums into temporaries, added here.
    const tw = !same && wp ? new Float32Array(C) : undefined;
    const tb = !same && bp ? new Float32Array(C) : undefined;
    const gradIn = this.gradBuffer(x.shape, x.dtype);
    const ok = K.batchNormBackward({
      x: x.data,
      gradOut: gradOut.data,
      gradIn: gradIn.data,
      channels: C,
      mean,
      invstd,
      ...(this.weight ? { weight: this.weight.data.data } : {}),
      ...(this.bias ? { bias: this.bias.data.data } : {}),
      training: batchStats,
      ...(wp ? { gradWeight: tw ?? wp.gradSlot().grad.data } : {}),
      ...(bp ? { gradBias: tb ?? bp.gradSlot().grad.data } : {}),
      accumulate: same && acc,
      slope: slope.data,
      gradSlope,
      ...(mask ? { mask } : {}),
    });
    if (!ok) throw new QuantFaceError('E_UNSUPPORTED_OP', `${this.constructor.name}: native batchNormBackward refused the fused PReLU`);
    for (const [p, t] of [[wp, tw], [bp, tb]] as const) {
      if (!p || !t) continue;
      const { grad, accumulate } = p.gradSlot();
      const d = grad.data;
      for (let c = 0; c < C; c++) d[c] = (accumulate ? d[c]! : 0) + t[c]!;
    }
    return gradIn;
  }

  describe(): string {
    return `${this.constructor.name}(${this.numFeatures}, eps=${this.eps}, momentum=${this.momentum}${this.weight ? '' : ', affine=false'})`;
  }
}

/** BatchNorm over [N, H, W, C]. */
export class BatchNorm2d extends BatchNorm {
  protected override readonly rank = 4;
}

/** BatchNorm over [N, C]. */
export class BatchNorm1d extends BatchNorm {
  protected override readonly rank = 2;
}

// ------------------------------------------------------------------ activations
/** PReLU with one slope per channel (last dimension) or a single shared slope. */
export class PReLU extends Module {
  readonly numParameters: number;
  readonly weight: Parameter;
  private ctx: { x: FTensor; a: FTensor; bn?: BatchNorm } | undefined;

  constructor(numParameters = 1, initSlope = 0.25) {
    super();
    this.numParameters = numParameters;
    this.weight = this.registerParameter('weight', new Parameter(Tensor.full([numParameters], initSlope)))!;
  }

  get slopeQuant(): WeightTransform | undefined {
    return this.getChild('slopeQuant') as WeightTransform | undefined;
  }
  get outQuant(): Module | undefined {
    return outQuantOf(this);
  }

  inferShape(s: number[]): ShapeInfo {
    if (this.numParameters !== 1 && s[s.length - 1] !== this.numParameters)
      throw new QuantFaceError('E_SHAPE', `PReLU: expected ${this.numParameters} channels last, got ${shapeStr(s)}`);
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    this.inferShape(x.shape as number[]);
    const sq = this.slopeQuant;
    const a = sq ? sq.transform(this.weight.data, 1, this.numParameters) : this.weight.data;
    const ad = a.data;
    const xd = x.data;
    const out = this.outBuffer(x.shape, x.dtype);
    const od = out.data;
    const C = this.numParameters;
    if (K.prelu(xd, ad, od)) {
      this.ctx = isGradEnabled() ? { x, a } : undefined;
      const oq0 = this.outQuant;
      return oq0 ? oq0.forward(out) : out;
    }
    // Branchless (activation signs are random: a branch mispredicts half the time, ~4x slower; V8 compiles
    // Math.max/min to branches too): pos = max(v, 0) = (v + |v|) / 2 exactly, v - pos = min(v, 0);
    // y = pos + a * (v - pos). Non-finite inputs give NaN (not +-Infinity): training has diverged then anyway.
    if (C === 1) {
      const s = ad[0]!;
      for (let i = 0; i < xd.length; i++) {
        const v = xd[i]!;
        const pos = (v + Math.abs(v)) * 0.5;
        od[i] = pos + s * (v - pos);
      }
    } else {
      const M = xd.length / C;
      for (let r = 0; r < M; r++) {
        const b = r * C;
        for (let c = 0; c < C; c++) {
          const v = xd[b + c]!;
          const pos = (v + Math.abs(v)) * 0.5;
          od[b + c] = pos + ad[c]! * (v - pos);
        }
      }
    }
    this.ctx = isGradEnabled() ? { x, a } : undefined;
    const oq = this.outQuant;
    return oq ? oq.forward(out) : out;
  }

  /**
   * @internal Runs `bn` and then this PReLU as one pass (float32, native; per-channel slopes matching bn's
   * channels), or returns null (nothing run) when that does not apply. After a fused forward with gradients,
   * backward takes the gradient at this PReLU's output and returns the gradient at bn's INPUT (it runs bn's
   * backward too): the caller skips bn (Sequential does).
   */
  forwardAfter(bn: BatchNorm, x: FTensor): FTensor | null {
    if (!bnPreluFusion || this.numParameters !== bn.numFeatures || !bn.fusablePrelu(x, this.weight.data)) return null;
    const sq = this.slopeQuant;
    const a = sq ? sq.transform(this.weight.data, 1, this.numParameters) : this.weight.data;
    const out = bn.forwardPrelu(x, a);
    this.ctx = isGradEnabled() ? { x: out, a, bn } : undefined;
    const oq = this.outQuant;
    return oq ? oq.forward(out) : out;
  }

  /** @internal The BatchNorm whose forward was fused into this PReLU's last forward (backward covers both). */
  get fusedBatchNorm(): BatchNorm | undefined {
    return this.ctx?.bn;
  }

  backward(gradOut: FTensor): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'PReLU.backward called without a forward pass with gradients enabled');
    const oq = this.outQuant;
    if (ctx.bn) return this.backwardFused(ctx.bn, ctx.a, gradOut);
    const { x, a } = ctx;
    const xd = x.data;
    const ad = a.data;
    // An output fake quantizer whose backward is a straight-through select is fused into the native kernel.
    const stm = (oq as { straightThroughMask?: () => Uint8Array | null } | undefined)?.straightThroughMask;
    const fuse = oq !== undefined && typeof stm === 'function' && K.nativeApplies('preluBackward', xd, gradOut.data, ad);
    const gq = oq && !fuse ? unaryBackward(oq, gradOut) : gradOut;
    const g = gq.data;
    const gradIn = this.gradBuffer(x.shape, x.dtype);
    const gi = gradIn.data;
    const C = this.numParameters;
    const M = xd.length / C;
    const ga = new Float64Array(C);
    if (!K.preluBackward(xd, g, ad, gi, ga, fuse ? (stm!.call(oq) ?? undefined) : undefined)) {
      for (let r = 0; r < M; r++) {
        const b = r * C;
        for (let c = 0; c < C; c++) {
          // Branchless as in forward: k = [v > 0], neg = min(v, 0) exactly.
          const v = xd[b + c]!;
          const gv = g[b + c]!;
          const k = +(v > 0);
          gi[b + c] = gv * (k + (1 - k) * ad[c]!);
          ga[c] += gv * ((v - Math.abs(v)) * 0.5);
        }
      }
    }
    this.slopeGrad(ga, x.dtype);
    if (!sameBuffer(gq, gradOut)) bufferPool.release(gq);
    return gradIn;
  }

  private backwardFused(bn: BatchNorm, a: FTensor, gradOut: FTensor): FTensor {
    const oq = this.outQuant;
    const stm = (oq as { straightThroughMask?: () => Uint8Array | null } | undefined)?.straightThroughMask;
    const fuse = oq !== undefined && typeof stm === 'function';
    const gq = oq && !fuse ? unaryBackward(oq, gradOut) : gradOut;
    const ga = new Float64Array(this.numParameters);
    const mask = fuse ? (stm!.call(oq) ?? undefined) : undefined;
    const gradIn = bn.backwardPrelu(gq, a, ga, mask);
    this.slopeGrad(ga, a.dtype);
    if (!sameBuffer(gq, gradOut)) bufferPool.release(gq);
    return gradIn;
  }

  private slopeGrad(ga: Float64Array, dtype: FTensor['dtype']): void {
    if (!this.weight.requiresGrad) return;
    const C = this.numParameters;
    const slot = this.weight.gradSlot();
    const sq = this.slopeQuant;
    if (sq && !sq.identityGrad) {
      const t = this.scratch('gradA', [C], dtype) as FTensor;
      t.data.set(ga);
      sq.backwardTransform(t, slot.grad, slot.accumulate);
    } else {
      const d = slot.grad.data;
      for (let c = 0; c < C; c++) d[c] = (slot.accumulate ? d[c]! : 0) + ga[c]!;
    }
  }

  describe(): string {
    return `PReLU(${this.numParameters})`;
  }
}

export class ReLU extends Module {
  private ctx: { x: FTensor } | undefined;

  get outQuant(): Module | undefined {
    return outQuantOf(this);
  }

  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const out = this.outBuffer(x.shape, x.dtype);
    const xd = x.data;
    const od = out.data;
    for (let i = 0; i < xd.length; i++) {
      const v = xd[i]!;
      od[i] = (v + Math.abs(v)) * 0.5; // max(v, 0), branchless
    }
    this.ctx = isGradEnabled() ? { x } : undefined;
    const oq = this.outQuant;
    return oq ? oq.forward(out) : out;
  }

  backward(gradOut: FTensor): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'ReLU.backward called without a forward pass with gradients enabled');
    const oq = this.outQuant;
    const gq = oq ? unaryBackward(oq, gradOut) : gradOut;
    const g = gq.data;
    const xd = ctx.x.data;
    const gradIn = this.gradBuffer(ctx.x.shape, ctx.x.dtype);
    const gi = gradIn.data;
    for (let i = 0; i < xd.length; i++) gi[i] = g[i]! * +(xd[i]! > 0);
    if (!sameBuffer(gq, gradOut)) bufferPool.release(gq);
    return gradIn;
  }
}

// ------------------------------------------------------------------ structural
/** Elementwise sum of two equally shaped tensors (the residual addition). */
export class Add extends Module {
  override get numInputs(): number {
    return 2;
  }

  get outQuant(): Module | undefined {
    return outQuantOf(this);
  }

  inferShape(a: number[], b: number[]): ShapeInfo {
    if (!b || a.length !== b.length || a.some((d, i) => d !== b[i]))
      throw new QuantFaceError('E_SHAPE', `Add: shapes ${shapeStr(a)} and ${shapeStr(b ?? [])} differ`);
    return { shape: a, macs: 0 };
  }

  forward(a: FTensor, b?: FTensor): FTensor {
    if (!b) throw new QuantFaceError('E_SHAPE', 'Add: needs two inputs');
    this.inferShape(a.shape as number[], b.shape as number[]);
    const out = this.outBuffer(a.shape, a.dtype);
    const o = out.data;
    const ad = a.data;
    const bd = b.data;
    if (!K.add(ad, bd, o)) for (let i = 0; i < o.length; i++) o[i] = ad[i]! + bd[i]!;
    const oq = this.outQuant;
    return oq ? oq.forward(out) : out;
  }

  backward(gradOut: FTensor): FTensor[] {
    const oq = this.outQuant;
    const g = oq ? unaryBackward(oq, gradOut) : gradOut;
    return [g, g];
  }
}

/** Passes its input through. */
export class Identity extends Module {
  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }
  forward(x: FTensor): FTensor {
    return x;
  }
  backward(g: FTensor): FTensor {
    return g;
  }
}

/**
 * [N, ...] -> [N, prod(...)] (a view). On NHWC activations the flattened
 * order is (h, w, c): PyTorch's NCHW flatten is (c, h, w), so importers
 * permute the columns of a following Linear's weight.
 */
export class Flatten extends Module {
  private ctx: { shape: readonly number[] } | undefined;
  inferShape(s: number[]): ShapeInfo {
    return { shape: [s[0]!, s.slice(1).reduce((a, b) => a * b, 1)], macs: 0 };
  }
  forward(x: FTensor): FTensor {
    this.ctx = { shape: x.shape };
    return x.reshape(this.inferShape(x.shape as number[]).shape);
  }
  backward(g: FTensor): FTensor {
    if (!this.ctx) throw new QuantFaceError('E_ARG', 'Flatten.backward called before forward');
    return g.reshape(this.ctx.shape);
  }
}

/** Inverted dropout with a seeded generator (identity in eval mode or when p = 0). */
export class Dropout extends Module {
  readonly p: number;
  private rng: Rng;
  private ctx: { mask: Uint8Array | null } | undefined;

  constructor(p = 0.5, seed = 0) {
    super();
    if (!(p >= 0 && p < 1)) throw new QuantFaceError('E_ARG', `Dropout: p must be in [0, 1), got ${p}`);
    this.p = p;
    this.rng = new Rng(seed);
  }

  /** Restarts the mask sequence. */
  reseed(seed: number): void {
    this.rng = new Rng(seed);
  }

  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    if (!this.training || this.p === 0) {
      this.ctx = { mask: null };
      return x;
    }
    const out = this.outBuffer(x.shape, x.dtype);
    const mask = this.scratch('mask', x.shape, 'u8').data;
    const keep = 1 - this.p;
    const scale = 1 / keep;
    const xd = x.data;
    const od = out.data;
    for (let i = 0; i < xd.length; i++) {
      const k = this.rng.uniform() < keep ? 1 : 0;
      mask[i] = k;
      od[i] = k ? xd[i]! * scale : 0;
    }
    this.ctx = { mask };
    return out;
  }

  backward(g: FTensor): FTensor {
    if (!this.ctx) throw new QuantFaceError('E_ARG', 'Dropout.backward called before forward');
    const mask = this.ctx.mask;
    if (!mask) return g;
    const gradIn = this.gradBuffer(g.shape, g.dtype);
    const scale = 1 / (1 - this.p);
    const gd = g.data;
    const gi = gradIn.data;
    for (let i = 0; i < gd.length; i++) gi[i] = mask[i] ? gd[i]! * scale : 0;
    return gradIn;
  }

  describe(): string {
    return `Dropout(p=${this.p})`;
  }
}

/** Rows of [N, D] scaled to unit L2 norm: y = x / max(|x|, eps). */
export class L2Normalize extends Module {
  readonly eps: number;
  private ctx: { y: FTensor; norm: Float64Array } | undefined;

  constructor(eps = 1e-12) {
    super();
    this.eps = eps;
  }

  inferShape(s: number[]): ShapeInfo {
    if (s.length !== 2) throw new QuantFaceError('E_SHAPE', `L2Normalize: expected [N, D], got ${shapeStr(s)}`);
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    this.inferShape(x.shape as number[]);
    const [n, d] = x.shape as [number, number];
    const out = this.outBuffer(x.shape, x.dtype);
    const norm = l2normalizeRows(x.data, out.data, n, d, this.eps);
    this.ctx = isGradEnabled() ? { y: out, norm } : undefined;
    return out;
  }

  backward(gradOut: FTensor): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'L2Normalize.backward called without a forward pass with gradients enabled');
    const [n, d] = ctx.y.shape as [number, number];
    const gradIn = this.gradBuffer(ctx.y.shape, ctx.y.dtype);
    l2normalizeBackwardRows(ctx.y.data, ctx.norm, gradOut.data, gradIn.data, n, d, this.eps);
    return gradIn;
  }
}

/** y_i = x_i / max(|x_i|, eps) per row; returns the row norms |x_i|. */
export function l2normalizeRows(x: FloatArray, y: FloatArray, n: number, d: number, eps: number): Float64Array {
  const norm = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    const b = i * d;
    for (let j = 0; j < d; j++) s += x[b + j]! * x[b + j]!;
    const nr = Math.sqrt(s);
    norm[i] = nr;
    const inv = 1 / Math.max(nr, eps);
    for (let j = 0; j < d; j++) y[b + j] = x[b + j]! * inv;
  }
  return norm;
}

/** dx = (g - y (y . g)) / |x| (where |x| > eps; g / eps otherwise). */
export function l2normalizeBackwardRows(y: FloatArray, norm: Float64Array, g: FloatArray, dx: FloatArray, n: number, d: number, eps: number): void {
  for (let i = 0; i < n; i++) {
    const b = i * d;
    const nr = norm[i]!;
    if (nr <= eps) {
      for (let j = 0; j < d; j++) dx[b + j] = g[b + j]! / eps;
      continue;
    }
    let yg = 0;
    for (let j = 0; j < d; j++) yg += y[b + j]! * g[b + j]!;
    const inv = 1 / nr;
    for (let j = 0; j < d; j++) dx[b + j] = (g[b + j]! - y[b + j]! * yg) * inv;
  }
}

export { assertShape };
