/**
 * Compiles an engine model (a fake-quantized student, a model loaded from a
 * .qfm file, or a float model) for inference on the native kernels.
 *
 * What runs where
 * - Values: every tensor of the model is either u8 (the output of an
 *   activation quantizer: q with the quantizer's frozen scale and zero
 *   point; 2..8-bit ranges are kept in a byte, signed ranges shifted by 128)
 *   or float32.
 * - A Conv2d / Linear whose weights are quantized (an enabled
 *   WeightFakeQuant, or packed integers from a .qfm) and whose input is u8
 *   runs on the int8 kernels: groups = 1 through the packed u8 x s8 GEMM
 *   (weights packed once, low-bit weights widened to int8 at compile time),
 *   depthwise through the direct int8 kernel. Its requantizing epilogue
 *   absorbs what follows it while each intermediate tensor has one consumer:
 *   BatchNorm / per-channel affine steps (folded into the per-channel scale
 *   and bias), the PReLU / ReLU, and the activation quantizer (u8 output);
 *   otherwise it writes float32.
 * - Other convolutions (float weights, or an input with no quantization
 *   range) run in fp32 with the fake-quantized weights, exactly as the
 *   fake-quant forward computes them. Models without quantizers (FP models)
 *   fold each BatchNorm into the convolution before it.
 * - Residual adds: rt_add, any mix of u8 / f32 inputs, requantized to u8 when
 *   the Add carries an activation quantizer.
 * - Elementwise chains (BatchNorm, ChannelAffine, PReLU, ReLU, Clamp,
 *   quantizer) on a u8 tensor: one per-channel lookup table computed with the
 *   fake-quant arithmetic (exact); on a float tensor: rt_affine steps.
 * - The network input is the raw RGB u8 crop. When the model's preprocessing
 *   (info.preprocessing plus leading affine layers) is x' = a (u - m) with
 *   the same a, m for every channel, m an integer (e.g. mean 128 or 0), and
 *   every consumer is an int8 convolution, the crop feeds the int8
 *   convolution directly (scale a, zero point m). Otherwise the first
 *   convolution runs as rt_conv_input: a per-channel table gives exactly the
 *   float input `preprocess` computes, an fp32 direct convolution and the
 *   requantizing epilogue follow in the same pass (for a fractional m such
 *   as 127.5 the option approximateInput feeds the int8 kernel instead,
 *   exact except at the image border); other first layers read a float
 *   table output.
 * - Anything else (L2Normalize, pooling, ...) runs the module's own forward
 *   in JavaScript on float32, between native segments.
 *
 * Where the int8 result must match the fake-quant forward: quantization
 * uses the same ranges and rounding (x / scale in float32, round half to
 * even), dequantized values are float(q - zp) * scale, adds and
 * elementwise steps use the JavaScript layers' float operations. The only
 * differences are the order of float accumulation inside convolutions (the
 * int8 GEMM accumulates exactly in int32) and the epilogue's single scale and
 * bias per channel instead of conv-then-BatchNorm rounding.
 *
 * Buffers: activations live in one arena per batch size, planned once
 * (liveness-based first fit; elementwise steps run in place); one native
 * call runs every operation of a segment.
 */
import { QuantFaceError } from '../errors.js';
import { Tensor, type FTensor } from '../tensor.js';
import { binding } from '../binding.js';
import type { PackedWeights, RtOp, RtProgram } from '../../binding.js';
import { Module, noGrad } from '../nn/module.js';
import { Conv2d, Linear, BatchNorm, PReLU } from '../nn/layers.js';
import { ChannelAffine, Clamp } from '../nn/import-ops.js';
import { bufferPool } from '../nn/pool.js';
import { roundHalfEven } from '../quant/qparams.js';
import type { ModelInfo, Preprocessing } from '../io/model-info.js';
import type { PackedWeight } from '../io/qfm.js';
import { actGrid, hasWeightQuantizer, weightGrid } from './quantizers.js';
import { flattenModel, soleConsumer, type IrGraph, type IrNode, type IrValue } from './ir.js';


// ====================================================================== lowered form
export type Repr = 'u8' | 'f32';

/** A tensor of the compiled model (per-sample shape). */
export interface LValue {
  id: number;
  repr: Repr;
  shape: number[];
  /** u8: real value = (q - zp) * scale. zp is fractional only for the raw input. */
  scale: number;
  zp: number;
  /** u8 integer range. */
  lo: number;
  hi: number;
  /** The value whose buffer this one shares (itself unless an alias). */
  root: LValue;
  name: string;
}

export interface ConvGeometry {
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

export type LOp =
  | {
      kind: 'conv_u8';
      name: string;
      x: LValue;
      out: LValue;
      geom: ConvGeometry;
      weight: PackedWeights | Int8Array;
      wZeroPoint: Int32Array;
      xZeroPoint: number;
      scale: Float32Array;
      bias: Float32Array;
      activation: 'none' | 'relu' | 'prelu';
      slope?: Float32Array;
      macs: number;
      weightBits: number;
    }
  | { kind: 'conv_f32'; name: string; x: LValue; out: LValue; geom: ConvGeometry; weight: Float32Array; bias?: Float32Array; macs: number; reason: string }
  | { kind: 'add'; name: string; a: LValue; b: LValue; out: LValue }
  | {
      kind: 'affine';
      name: string;
      x: LValue;
      out: LValue;
      channels: number;
      scale?: Float32Array;
      bias?: Float32Array;
      activation: 'none' | 'relu' | 'prelu' | 'clamp';
      slope?: Float32Array;
      lo?: number;
      hi?: number;
    }
  | { kind: 'lut'; name: string; x: LValue; out: LValue; channels: number; table: Uint8Array | Float32Array }
  | {
      kind: 'conv_input';
      name: string;
      x: LValue;
      out: LValue;
      geom: ConvGeometry;
      table: Float32Array;
      weight: Float32Array;
      convBias?: Float32Array;
      scale?: Float32Array;
      bias?: Float32Array;
      activation: 'none' | 'relu' | 'prelu' | 'clamp';
      slope?: Float32Array;
      lo?: number;
      hi?: number;
      macs: number;
    }
  | { kind: 'js'; name: string; inputs: LValue[]; out: LValue; module: Module };

export interface CompileOptions {
  /** Input [H, W, C] (default: model.info.inputShape, else [112, 112, 3]). */
  inputShape?: [number, number, number];
  /** Preprocessing of raw RGB 0..255 (default: model.info.preprocessing, else QuantFace's (x - 127.5) / 127.5). */
  preprocessing?: Preprocessing;
  /** Integer weights stored in a .qfm file (LoadedQfm.packedWeight); used instead of re-quantizing. */
  packedWeight?: (name: string) => PackedWeight | undefined;
  /**
   * 'auto' (default): int8 wherever the model's quantizers allow it;
   * 'float': ignore every quantizer and run the float master weights in
   * fp32 (the model as it would be without quantization).
   */
  precision?: 'auto' | 'float';
  /** Fold BatchNorm into fp32 convolutions of a model without quantizers. Default true. */
  foldBatchNorm?: boolean;
  /**
   * Feed raw bytes to an int8 first convolution even when the preprocessing's
   * zero point is fractional (x' = a (u - 127.5)): the epilogue's bias
   * corrects the interior exactly, but the zero padding at the image border
   * then reads 127 instead of 127.5, so border outputs differ slightly from
   * the fake-quant forward. Default false: such a first convolution runs in
   * fp32 on the exact preprocessed input (integer zero points always take the
   * exact int8 path).
   */
  approximateInput?: boolean;
  /** Fuse the input table with a first convolution of up to 64 input channels (rt_conv_input). Default true. */
  fuseInput?: boolean;
  /**
   * Batches with fewer multiply-accumulates than this run on one thread
   * (no pool wake-up per kernel). Default 48e6 (e.g. MobileFaceNet batch 1 uses the pool only above it).
   */
  singleThreadMacs?: number;
  /**
   * How a plan with more than one native thread chooses between the calling
   * thread alone and the pool, per native segment:
   * - 'measure' (default): on the plan's first run at a thread count, each
   *   segment is timed both ways (a few alternating runs on a scratch arena,
   *   best of each) and uses the pool only where it is at least 10% faster,
   *   so more threads never make a batch slower than one thread does (small
   *   batches of small networks: waking the pool per kernel can cost more
   *   than the split saves). Plans under 2e6 MACs stay on one thread and
   *   plans over 4e9 MACs use the pool without measuring.
   * - 'macs': the fixed rule of singleThreadMacs only.
   */
  threadSchedule?: 'measure' | 'macs';
}

export interface CompileReport {
  precision: 'int8' | 'mixed' | 'float';
  int8Convs: number;
  fp32Convs: number;
  /** MACs per image by kind. */
  int8Macs: number;
  fp32Macs: number;
  /** Why convolutions run in fp32 (path: reason). */
  fp32Reasons: string[];
  adds: number;
  affines: number;
  luts: number;
  jsOps: string[];
  /** Bytes of packed int8 weights and of fp32 weights. */
  int8WeightBytes: number;
  fp32WeightBytes: number;
  /** How the raw input reaches the first layer. */
  input: string;
  /** Weight bit widths seen (int8 layers). */
  weightBits: number[];
}

const QUANTFACE_PREPROCESSING: Preprocessing = { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } };

// ====================================================================== helpers
function triple(t: number | [number, number, number]): [number, number, number] {
  return typeof t === 'number' ? [t, t, t] : t;
}

interface QP {
  scale: number;
  zp: number;
  lo: number;
  hi: number;
}

/** u8 form of an activation quantizer's parameters (signed ranges shifted by 128). */
function actQParams(q: Module, where: string): QP {
  const p = actGrid(q);
  const off = p.quantMin < 0 ? 128 : 0;
  const lo = p.quantMin + off;
  const hi = p.quantMax + off;
  if (lo < 0 || hi > 255) throw new QuantFaceError('E_UNSUPPORTED_OP', `runtime: ${where}: activation range [${p.quantMin}, ${p.quantMax}] does not fit a byte`);
  return { scale: p.scale, zp: p.zeroPoint + off, lo, hi };
}

/** q = clamp(rne(y / scale) + zp, lo, hi) with the float32 division of the kernels. */
function quantizeJs(y: number, p: QP): number {
  if (Number.isNaN(y)) return p.lo;
  const q = roundHalfEven(Math.fround(y / p.scale)) + p.zp;
  return q < p.lo ? p.lo : q > p.hi ? p.hi : q;
}

function perChannel(v: ArrayLike<number> | undefined | null, C: number, what: string): Float32Array | undefined {
  if (!v) return undefined;
  if (v.length === C) return Float32Array.from(v);
  if (v.length === 1) return new Float32Array(C).fill(v[0]!);
  throw new QuantFaceError('E_SHAPE', `runtime: ${what} has ${v.length} values for ${C} channels`);
}

/** BatchNorm (eval) as the engine computes it: y = x * scale[c] + shift[c] with float32 scale / shift. */
function bnAffine(m: BatchNorm): { a: Float32Array; b: Float32Array } {
  const C = m.numFeatures;
  const rm = m.runningMean.data;
  const rv = m.runningVar.data;
  const gw = m.weight?.data.data;
  const gb = m.bias?.data.data;
  const a = new Float32Array(C);
  const b = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    const invstd = 1 / Math.sqrt(rv[c]! + m.eps);
    const s = invstd * (gw ? gw[c]! : 1);
    a[c] = s;
    b[c] = (gb ? gb[c]! : 0) - rm[c]! * s;
  }
  return { a, b };
}

/** Per-channel affine of a bn / caffine node: y = x * a + b (a or b absent = identity part). */
function affineOf(node: IrNode, C: number): { a?: Float32Array; b?: Float32Array } {
  const m = node.module;
  if (m instanceof BatchNorm) {
    if (m.numFeatures !== C) throw new QuantFaceError('E_SHAPE', `runtime: ${node.path}: ${m.numFeatures} features for ${C} channels`);
    return bnAffine(m);
  }
  if (m instanceof ChannelAffine) return { a: perChannel(m.weight?.data.data, C, `${node.path}.weight`), b: perChannel(m.bias?.data.data, C, `${node.path}.bias`) };
  throw new QuantFaceError('E_INTERNAL', `runtime: ${node.path} is not an affine step`);
}

function preluSlope(node: IrNode, C: number, float: boolean): Float32Array {
  const m = node.module as PReLU;
  const sq = m.slopeQuant;
  const a = !float && sq ? sq.transform(m.weight.data, 1, m.numParameters).data : m.weight.data.data;
  return perChannel(a, C, `${node.path}.weight`)!;
}

function isElementwise(node: IrNode, C: number): boolean {
  switch (node.kind) {
    case 'bn':
      return (node.module as BatchNorm).numFeatures === C;
    case 'caffine': {
      const ch = (node.module as ChannelAffine).channels;
      return ch === C || ch === 1;
    }
    case 'prelu': {
      const n = (node.module as PReLU).numParameters;
      return n === C || n === 1;
    }
    case 'relu':
    case 'clamp':
    case 'quant':
      return true;
    default:
      return false;
  }
}

/**
 * Applies one elementwise node to rows x C float32 values in place, with the
 * float operations of the engine's layer (results stored to float32).
 */
function applyElementwise(node: IrNode, x: Float32Array, C: number, float: boolean): void {
  const M = x.length / C;
  switch (node.kind) {
    case 'bn':
    case 'caffine': {
      const { a, b } = affineOf(node, C);
      for (let r = 0; r < M; r++)
        for (let c = 0; c < C; c++) {
          const i = r * C + c;
          x[i] = a && b ? x[i]! * a[c]! + b[c]! : a ? x[i]! * a[c]! : x[i]! + b![c]!;
        }
      return;
    }
    case 'prelu': {
      const s = preluSlope(node, C, float);
      for (let r = 0; r < M; r++)
        for (let c = 0; c < C; c++) {
          const i = r * C + c;
          const v = x[i]!;
          x[i] = v > 0 ? v : v * s[c]!;
        }
      return;
    }
    case 'relu':
      for (let i = 0; i < x.length; i++) x[i] = x[i]! > 0 ? x[i]! : 0;
      return;
    case 'clamp': {
      const m = node.module as Clamp;
      for (let i = 0; i < x.length; i++) {
        const v = x[i]!;
        x[i] = v < m.lo ? m.lo : v > m.hi ? m.hi : v;
      }
      return;
    }
    default:
      throw new QuantFaceError('E_INTERNAL', `runtime: ${node.kind} is not elementwise`);
  }
}

/** Integer weights of a conv / linear node, widened to int8 (rows = output channels). */
interface IntWeights {
  q: Int8Array;
  zp: Int32Array;
  scale: Float32Array;
  /** sum over the row of (q - zp). */
  rowSum: Float64Array;
  bits: number;
}

function intWeights(node: IrNode, opts: CompileOptions): IntWeights | null {
  const m = node.module as Conv2d | Linear;
  const w = m.weight.data;
  const channels = m instanceof Conv2d ? m.outChannels : m.outFeatures;
  const inner = w.numel / channels;
  const wq = m.weightQuant;
  const fq = hasWeightQuantizer(wq) ? wq : undefined;
  const stored = opts.packedWeight?.(node.path ? `${node.path}.weight` : 'weight');
  let qv: ArrayLike<number>;
  let qmin: number;
  let qmax: number;
  let zps: ArrayLike<number>;
  let scales: ArrayLike<number>;
  let bits: number;
  if (stored && stored.channels === channels && stored.inner === inner) {
    // q - quantMin per value; zero points as integers in [quantMin, quantMax].
    qmin = stored.quantMin;
    qmax = stored.quantMax;
    const q = new Int16Array(stored.q.length);
    for (let i = 0; i < q.length; i++) q[i] = stored.q[i]! + qmin;
    qv = q;
    zps = stored.zeroPoint;
    scales = stored.scale;
    bits = stored.bits;
  } else if (fq) {
    const qp = weightGrid(fq, w, channels, inner);
    qmin = qp.quantMin;
    qmax = qp.quantMax;
    const q = new Int16Array(w.numel);
    const d = w.data;
    const f32 = d instanceof Float32Array;
    for (let c = 0; c < channels; c++) {
      const s = qp.scale[c]!;
      const z = qp.zeroPoint[c]!;
      for (let i = c * inner; i < (c + 1) * inner; i++) {
        let v = roundHalfEven(f32 ? Math.fround(d[i]! / s) : d[i]! / s) + z;
        if (v < qmin) v = qmin;
        else if (v > qmax) v = qmax;
        q[i] = v;
      }
    }
    qv = q;
    zps = qp.zeroPoint;
    scales = qp.scale;
    bits = qp.bits;
  } else return null;
  const off = qmax > 127 ? 128 : 0;
  if (qmin - off < -128 || qmax - off > 127) return null;
  const q = new Int8Array(qv.length);
  for (let i = 0; i < q.length; i++) q[i] = qv[i]! - off;
  const zp = new Int32Array(channels);
  const rowSum = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    zp[c] = zps[c]! - off;
    let s = 0;
    for (let i = c * inner; i < (c + 1) * inner; i++) s += q[i]! - zp[c]!;
    rowSum[c] = s;
  }
  return { q, zp, scale: Float32Array.from(scales), rowSum, bits };
}

function convGeometry(node: IrNode): ConvGeometry {
  const inShape = node.inputs[0]!.shape;
  const m = node.module;
  if (m instanceof Linear) {
    const k = inShape.reduce((a, b) => a * b, 1);
    return { h: 1, w: 1, c: k, cout: m.outFeatures, kh: 1, kw: 1, strideH: 1, strideW: 1, padTop: 0, padLeft: 0, padBottom: 0, padRight: 0, dilationH: 1, dilationW: 1, groups: 1 };
  }
  const c = m as Conv2d;
  return {
    h: inShape[0]!,
    w: inShape[1]!,
    c: inShape[2]!,
    cout: c.outChannels,
    kh: c.kernelH,
    kw: c.kernelW,
    strideH: c.strideH,
    strideW: c.strideW,
    padTop: c.padTop,
    padLeft: c.padLeft,
    padBottom: c.padBottom,
    padRight: c.padRight,
    dilationH: c.dilationH,
    dilationW: c.dilationW,
    groups: c.groups,
  };
}

function isDepthwise(g: ConvGeometry): boolean {
  return g.groups > 1 && g.groups === g.c && g.cout === g.c;
}

function lastDim(shape: readonly number[]): number {
  return shape.length ? shape[shape.length - 1]! : 1;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

// ====================================================================== lowering
class Lowering {
  readonly ops: LOp[] = [];
  readonly values: LValue[] = [];
  readonly lv = new Map<IrValue, LValue>();
  private readonly done = new Set<IrNode>();
  private readonly f32Of = new Map<LValue, LValue>();
  readonly report: CompileReport = {
    precision: 'float', int8Convs: 0, fp32Convs: 0, int8Macs: 0, fp32Macs: 0, fp32Reasons: [], adds: 0, affines: 0, luts: 0, jsOps: [],
    int8WeightBytes: 0, fp32WeightBytes: 0, input: '', weightBits: [],
  };
  readonly float: boolean;
  readonly anyQuant: boolean;
  input!: LValue;
  output!: LValue;

  constructor(
    readonly g: IrGraph,
    readonly opts: CompileOptions,
    readonly pre: Preprocessing,
  ) {
    this.float = opts.precision === 'float';
    this.anyQuant = !this.float && g.nodes.some((n) => n.kind === 'quant' || ((n.kind === 'conv' || n.kind === 'linear') && hasWeightQuantizer((n.module as Conv2d).weightQuant)));
  }

  private value(repr: Repr, shape: number[], name: string, q?: QP): LValue {
    const v = { id: this.values.length, repr, shape, scale: q?.scale ?? 1, zp: q?.zp ?? 0, lo: q?.lo ?? 0, hi: q?.hi ?? 255, name } as LValue;
    v.root = v;
    this.values.push(v);
    return v;
  }

  private get(v: IrValue): LValue {
    const l = this.lv.get(v);
    if (!l) throw new QuantFaceError('E_INTERNAL', `runtime: value ${v.id} used before it was computed`);
    return l;
  }

  /** A float32 copy of a u8 value (one per value, shared by its consumers). */
  private toF32(x: LValue, name: string): LValue {
    if (x.repr === 'f32') return x;
    const hit = this.f32Of.get(x);
    if (hit) return hit;
    if (!Number.isInteger(x.zp)) {
      // The raw input with affine preprocessing: a lookup table gives the exact float input.
      throw new QuantFaceError('E_INTERNAL', 'runtime: the raw input has no float form here');
    }
    const out = this.value('f32', x.shape, `${name}.dequant`);
    this.ops.push({ kind: 'affine', name: `${name}.dequant`, x, out, channels: lastDim(x.shape), activation: 'none' });
    this.report.affines++;
    this.f32Of.set(x, out);
    return out;
  }

  private int8able(node: IrNode): IntWeights | null {
    if (this.float) return null;
    if (node.kind !== 'conv' && node.kind !== 'linear') return null;
    const g = convGeometry(node);
    if (g.groups !== 1 && !isDepthwise(g)) return null;
    return intWeights(node, this.opts);
  }

  run(): void {
    this.lowerInput();
    for (const n of this.g.nodes) {
      if (this.done.has(n)) continue;
      this.lowerNode(n);
    }
    const out = this.get(this.g.output);
    this.output = this.toF32(out, 'output');
    const r = this.report;
    r.precision = r.int8Convs === 0 ? 'float' : r.fp32Convs === 0 ? 'int8' : 'mixed';
  }

  // ------------------------------------------------------------------ input
  private lowerInput(): void {
    const g = this.g;
    const shape = g.input.shape;
    const C = lastDim(shape);
    const raw = this.value('u8', shape, 'input');
    this.input = raw;
    // Leading per-channel affine layers (preprocessing inside the graph), and a quantizer if the model quantizes its input.
    const chain: IrNode[] = [];
    let v = g.input;
    for (;;) {
      const c = soleConsumer(g, v);
      if (!c || !(c.kind === 'bn' || c.kind === 'caffine' || (c.kind === 'quant' && !this.float)) || !isElementwise(c, C)) break;
      chain.push(c);
      v = c.output;
      if (c.kind === 'quant') break;
    }
    // T[u][c]: the float value the first layer sees for raw value u in model channel c.
    const T = new Float32Array(256 * C);
    const nz = this.pre.normalize;
    const [m0, m1, m2] = nz === 'raw' ? [0, 0, 0] : triple(nz.mean);
    const [s0, s1, s2] = nz === 'raw' ? [1, 1, 1] : triple(nz.std);
    const ms = [m0, m1, m2];
    const ss = [s0, s1, s2];
    for (let u = 0; u < 256; u++) for (let c = 0; c < C; c++) T[u * C + c] = nz === 'raw' ? u : (u - ms[c % 3]!) / ss[c % 3]!;
    const quant = chain.length && chain[chain.length - 1]!.kind === 'quant' ? chain.pop()! : undefined;
    for (const n of chain) applyElementwise(n, T, C, this.float);
    for (const n of chain) this.done.add(n);
    const end = quant ? quant.output : v;
    if (quant) {
      this.done.add(quant);
      const qp = actQParams(quant.module, quant.path);
      const table = new Uint8Array(256 * C);
      for (let u = 0; u < 256; u++) for (let c = 0; c < C; c++) table[c * 256 + u] = quantizeJs(T[u * C + c]!, qp);
      const out = this.value('u8', shape, quant.path, qp);
      this.ops.push({ kind: 'lut', name: `${quant.path}(input)`, x: raw, out, channels: C, table });
      this.report.luts++;
      this.lv.set(end, out);
      this.report.input = 'lookup table to the quantized input';
      return;
    }
    // Uniform affine preprocessing feeding only int8 convolutions: the raw bytes are the quantized input.
    const consumers = end.consumers;
    const affine = uniformAffine(T, C, this.opts.approximateInput ?? false);
    if (!this.float && affine && consumers.length > 0 && g.output !== end && consumers.every((c) => this.int8able(c) !== null)) {
      const zp = affine.m;
      raw.scale = affine.a;
      raw.zp = zp;
      raw.lo = 0;
      raw.hi = 255;
      this.lv.set(end, raw);
      this.report.input = `raw bytes into the int8 convolution (scale ${affine.a.toPrecision(6)}, zero point ${zp})`;
      return;
    }
    const table = new Float32Array(256 * C);
    for (let u = 0; u < 256; u++) for (let c = 0; c < C; c++) table[c * 256 + u] = T[u * C + c]!;
    const first = consumers.length === 1 && g.output !== end ? consumers[0]! : undefined;
    if (first && this.opts.fuseInput !== false && first.kind === 'conv' && (first.module as Conv2d).groups === 1 && C <= 64) {
      this.lowerConvInput(first, raw, table);
      this.report.input = 'fused with the first convolution (exact float preprocessing, fp32 direct convolution)';
      return;
    }
    const out = this.value('f32', shape, 'input.f32');
    this.ops.push({ kind: 'lut', name: 'input(preprocess)', x: raw, out, channels: C, table });
    this.report.luts++;
    this.lv.set(end, out);
    this.report.input = 'lookup table to float32 (preprocessing)';
  }

  // ------------------------------------------------------------------ nodes
  private lowerNode(n: IrNode): void {
    switch (n.kind) {
      case 'conv':
      case 'linear':
        return this.lowerConv(n);
      case 'bn':
      case 'caffine':
      case 'prelu':
      case 'relu':
      case 'clamp':
      case 'quant':
        return this.lowerChain(n);
      case 'add':
        return this.lowerAdd(n);
      case 'alias': {
        const x = this.get(n.inputs[0]!);
        const a = { ...x, id: this.values.length, shape: n.output.shape, name: n.path, root: x.root } as LValue;
        this.values.push(a);
        this.lv.set(n.output, a);
        this.done.add(n);
        return;
      }
      default:
        return this.lowerJs(n);
    }
  }

  private lowerJs(n: IrNode): void {
    const inputs = n.inputs.map((v) => this.toF32(this.get(v), n.path));
    const out = this.value('f32', n.output.shape, n.path);
    this.ops.push({ kind: 'js', name: n.path, inputs, out, module: n.module });
    this.report.jsOps.push(`${n.path} (${n.module.describe()})`);
    this.lv.set(n.output, out);
    this.done.add(n);
  }

  private lowerConv(n: IrNode): void {
    const x = this.get(n.inputs[0]!);
    const geom = convGeometry(n);
    const iw = x.repr === 'u8' ? this.int8able(n) : null;
    const macs = numel(n.output.shape) * geom.kh * geom.kw * (geom.c / geom.groups);
    if (iw) return this.lowerConvU8(n, x, geom, iw, macs);
    this.lowerConvF32(n, x, geom, macs);
  }

  private lowerConvU8(n: IrNode, x: LValue, geom: ConvGeometry, iw: IntWeights, macs: number): void {
    const g = this.g;
    const C = geom.cout;
    const m = n.module as Conv2d | Linear;
    // Epilogue chain: affine steps, one activation, one quantizer.
    const affines: IrNode[] = [];
    let act: IrNode | undefined;
    let quant: IrNode | undefined;
    let v = n.output;
    for (;;) {
      const c = soleConsumer(g, v);
      if (!c || !isElementwise(c, C)) break;
      if (!act && !quant && (c.kind === 'bn' || c.kind === 'caffine')) affines.push(c);
      else if (!act && !quant && (c.kind === 'prelu' || c.kind === 'relu')) act = c;
      else if (!quant && c.kind === 'quant') quant = c;
      else break;
      v = c.output;
      if (quant) break;
    }
    const xzp = Math.floor(x.zp);
    const frac = x.zp - xzp;
    const S = new Float64Array(C);
    const B = new Float64Array(C);
    const convBias = m.bias?.data.data;
    for (let j = 0; j < C; j++) {
      S[j] = x.scale * iw.scale[j]!;
      B[j] = (convBias ? convBias[j]! : 0) - (frac ? frac * S[j]! * iw.rowSum[j]! : 0);
    }
    for (const a of affines) {
      const { a: A, b: Bb } = affineOf(a, C);
      for (let j = 0; j < C; j++) {
        const aj = A ? A[j]! : 1;
        S[j] = S[j]! * aj;
        B[j] = B[j]! * aj + (Bb ? Bb[j]! : 0);
      }
    }
    let activation: 'none' | 'relu' | 'prelu' = 'none';
    let slope: Float32Array | undefined;
    if (act?.kind === 'relu') activation = 'relu';
    else if (act?.kind === 'prelu') {
      activation = 'prelu';
      slope = preluSlope(act, C, false);
    }
    const qp = quant ? actQParams(quant.module, quant.path) : undefined;
    const out = this.value(qp ? 'u8' : 'f32', v.shape, (quant ?? act ?? affines[affines.length - 1] ?? n).path, qp);
    const dw = isDepthwise(geom);
    const weight: PackedWeights | Int8Array = dw ? iw.q : binding.packWeights({ w: iw.q, n: C, k: iw.q.length / C });
    this.ops.push({
      kind: 'conv_u8', name: n.path, x, out, geom, weight, wZeroPoint: iw.zp, xZeroPoint: xzp,
      scale: Float32Array.from(S), bias: Float32Array.from(B), activation, ...(slope ? { slope } : {}), macs, weightBits: iw.bits,
    });
    const r = this.report;
    r.int8Convs++;
    r.int8Macs += macs;
    r.int8WeightBytes += dw ? iw.q.length : (weight as PackedWeights).bytes;
    if (!r.weightBits.includes(iw.bits)) r.weightBits.push(iw.bits);
    for (const c of [...affines, ...(act ? [act] : []), ...(quant ? [quant] : [])]) this.done.add(c);
    this.done.add(n);
    this.lv.set(v, out);
  }

  private lowerConvF32(n: IrNode, x0: LValue, geom: ConvGeometry, macs: number): void {
    const m = n.module as Conv2d | Linear;
    const x = this.toF32(x0, n.path);
    const C = geom.cout;
    const fw = this.floatWeights(m, C);
    const { v, weight, bias, folded } = this.foldAffines(n.output, C, fw.weight, fw.bias);
    const reason = this.float
      ? 'float precision requested'
      : !fw.fq && !this.opts.packedWeight
        ? 'float weights (no weight quantizer)'
        : x0.repr === 'f32'
          ? 'its input has no activation quantizer (insert one with addInputQuantizers to run it in int8)'
          : 'grouped convolution (only groups = 1 and depthwise have int8 kernels)';
    const out = this.value('f32', v.shape, (folded[folded.length - 1] ?? n).path);
    this.ops.push({ kind: 'conv_f32', name: n.path, x, out, geom, weight, ...(bias ? { bias } : {}), macs, reason });
    const r = this.report;
    r.fp32Convs++;
    r.fp32Macs += macs;
    r.fp32WeightBytes += weight.byteLength;
    if (this.anyQuant) r.fp32Reasons.push(`${n.path}: ${reason}`);
    for (const c of folded) this.done.add(c);
    this.done.add(n);
    this.lv.set(v, out);
  }

  /** The float weights a conv's forward uses (fake-quantized with an enabled quantizer, unless precision is 'float'). */
  private floatWeights(m: Conv2d | Linear, C: number): { weight: Float32Array; bias?: Float32Array; fq: boolean } {
    const wq = m.weightQuant;
    const fq = !this.float && hasWeightQuantizer(wq);
    const wsrc = fq ? wq!.transform(m.weight.data, C, m.weight.data.numel / C).data : m.weight.data.data;
    return { weight: Float32Array.from(wsrc), ...(m.bias ? { bias: Float32Array.from(m.bias.data.data) } : {}), fq };
  }

  /** FP models: folds the affine steps after v into weight / bias (float64 products, rounded once). */
  private foldAffines(v: IrValue, C: number, weight: Float32Array, bias: Float32Array | undefined): { v: IrValue; weight: Float32Array; bias?: Float32Array; folded: IrNode[] } {
    const folded: IrNode[] = [];
    if (this.anyQuant || this.opts.foldBatchNorm === false) return { v, weight, ...(bias ? { bias } : {}), folded };
    for (;;) {
      const c = soleConsumer(this.g, v);
      if (!c || !(c.kind === 'bn' || c.kind === 'caffine') || !isElementwise(c, C)) break;
      const { a, b } = affineOf(c, C);
      const per = weight.length / C;
      const w2 = new Float32Array(weight.length);
      const b2 = new Float32Array(C);
      for (let j = 0; j < C; j++) {
        const aj = a ? a[j]! : 1;
        for (let i = j * per; i < (j + 1) * per; i++) w2[i] = weight[i]! * aj;
        b2[j] = (bias ? bias[j]! : 0) * aj + (b ? b[j]! : 0);
      }
      weight = w2;
      bias = b2;
      folded.push(c);
      v = c.output;
    }
    return { v, weight, ...(bias ? { bias } : {}), folded };
  }

  /** The first convolution fused with the input table (rt_conv_input) and its epilogue chain. */
  private lowerConvInput(n: IrNode, raw: LValue, table: Float32Array): void {
    const g = this.g;
    const geom = convGeometry(n);
    const C = geom.cout;
    const m = n.module as Conv2d;
    const fw = this.floatWeights(m, C);
    const f = this.foldAffines(n.output, C, fw.weight, fw.bias);
    let v = f.v;
    const chain: IrNode[] = [...f.folded];
    let aff: IrNode | undefined;
    let act: IrNode | undefined;
    let quant: IrNode | undefined;
    for (;;) {
      const c = soleConsumer(g, v);
      if (!c || !isElementwise(c, C)) break;
      if (!aff && !act && !quant && (c.kind === 'bn' || c.kind === 'caffine')) aff = c;
      else if (!act && !quant && (c.kind === 'prelu' || c.kind === 'relu' || c.kind === 'clamp')) act = c;
      else if (!quant && c.kind === 'quant' && !this.float) quant = c;
      else break;
      chain.push(c);
      v = c.output;
      if (quant) break;
    }
    const ab = aff ? affineOf(aff, C) : {};
    const qp = quant ? actQParams(quant.module, quant.path) : undefined;
    const out = this.value(qp ? 'u8' : 'f32', v.shape, (chain[chain.length - 1] ?? n).path, qp);
    const op: Extract<LOp, { kind: 'conv_input' }> = {
      kind: 'conv_input', name: n.path, x: raw, out, geom, table, weight: f.weight, ...(f.bias ? { convBias: f.bias } : {}),
      ...(ab.a ? { scale: ab.a } : {}), ...(ab.b ? { bias: ab.b } : {}), activation: 'none', macs: numel(n.output.shape) * geom.kh * geom.kw * geom.c,
    };
    if (act?.kind === 'relu') op.activation = 'relu';
    else if (act?.kind === 'prelu') {
      op.activation = 'prelu';
      op.slope = preluSlope(act, C, this.float);
    } else if (act?.kind === 'clamp') {
      const cm = act.module as Clamp;
      op.activation = 'clamp';
      op.lo = Math.fround(Math.max(cm.lo, -3.4028234663852886e38));
      op.hi = Math.fround(Math.min(cm.hi, 3.4028234663852886e38));
    }
    this.ops.push(op);
    const r = this.report;
    r.fp32Convs++;
    r.fp32Macs += op.macs;
    r.fp32WeightBytes += f.weight.byteLength;
    if (this.anyQuant) r.fp32Reasons.push(`${n.path}: first layer, fused with the exact float preprocessing (its input has no integer zero point)`);
    for (const c of chain) this.done.add(c);
    this.done.add(n);
    this.lv.set(v, out);
  }

  private lowerChain(start: IrNode): void {
    const g = this.g;
    const x = this.get(start.inputs[0]!);
    const C = lastDim(start.inputs[0]!.shape);
    const chain: IrNode[] = [];
    let n: IrNode | undefined = start;
    while (n && isElementwise(n, C) && !(this.float && n.kind === 'quant')) {
      chain.push(n);
      if (n.kind === 'quant') break;
      n = soleConsumer(g, n.output);
    }
    if (chain.length === 0) {
      // A quantizer in float precision (or a node with mismatched channels): identity / JS.
      if (start.kind === 'quant') {
        this.lv.set(start.output, x);
        this.done.add(start);
        return;
      }
      return this.lowerJs(start);
    }
    const end = chain[chain.length - 1]!;
    for (const c of chain) this.done.add(c);
    const quant = end.kind === 'quant' ? end : undefined;
    const qp = quant ? actQParams(quant.module, quant.path) : undefined;
    if (x.repr === 'u8' && Number.isInteger(x.zp)) {
      // One lookup table per channel, computed with the engine's float operations.
      const T = new Float32Array(256 * C);
      for (let u = 0; u < 256; u++) {
        const d = Math.fround((u - x.zp) * x.scale);
        for (let c = 0; c < C; c++) T[u * C + c] = d;
      }
      for (const c of chain) if (c !== quant) applyElementwise(c, T, C, this.float);
      let table: Uint8Array | Float32Array;
      if (qp) {
        table = new Uint8Array(256 * C);
        for (let u = 0; u < 256; u++) for (let c = 0; c < C; c++) table[c * 256 + u] = u < x.lo || u > x.hi ? qp.lo : quantizeJs(T[u * C + c]!, qp);
      } else {
        table = new Float32Array(256 * C);
        for (let u = 0; u < 256; u++) for (let c = 0; c < C; c++) table[c * 256 + u] = T[u * C + c]!;
      }
      const out = this.value(qp ? 'u8' : 'f32', end.output.shape, end.path, qp);
      this.ops.push({ kind: 'lut', name: chain.map((c) => c.path).join('+'), x, out, channels: C, table });
      this.report.luts++;
      this.lv.set(end.output, out);
      return;
    }
    // Float input: rt_affine steps of [affine][activation][quantizer].
    const groups: { aff?: IrNode; act?: IrNode; quant?: IrNode }[] = [];
    let cur: { aff?: IrNode; act?: IrNode; quant?: IrNode } = {};
    for (const c of chain) {
      if (c.kind === 'bn' || c.kind === 'caffine') {
        if (cur.aff || cur.act || cur.quant) groups.push(cur), (cur = {});
        cur.aff = c;
      } else if (c.kind === 'quant') {
        if (cur.quant) groups.push(cur), (cur = {});
        cur.quant = c;
      } else {
        if (cur.act || cur.quant) groups.push(cur), (cur = {});
        cur.act = c;
      }
    }
    groups.push(cur);
    let xv = this.toF32(x, start.path);
    for (const gr of groups) {
      const last = gr.quant ?? gr.act ?? gr.aff!;
      const gq = gr.quant ? actQParams(gr.quant.module, gr.quant.path) : undefined;
      const out = this.value(gq ? 'u8' : 'f32', last.output.shape, last.path, gq);
      const aff = gr.aff ? affineOf(gr.aff, C) : {};
      const op: LOp = { kind: 'affine', name: [gr.aff, gr.act, gr.quant].filter((z) => z).map((z) => z!.path).join('+'), x: xv, out, channels: C, activation: 'none', ...(aff.a ? { scale: aff.a } : {}), ...(aff.b ? { bias: aff.b } : {}) };
      if (gr.act?.kind === 'relu') op.activation = 'relu';
      else if (gr.act?.kind === 'prelu') {
        op.activation = 'prelu';
        op.slope = preluSlope(gr.act, C, this.float);
      } else if (gr.act?.kind === 'clamp') {
        const cm = gr.act.module as Clamp;
        op.activation = 'clamp';
        op.lo = Math.fround(Math.max(cm.lo, -3.4028234663852886e38));
        op.hi = Math.fround(Math.min(cm.hi, 3.4028234663852886e38));
      }
      this.ops.push(op);
      this.report.affines++;
      xv = out;
    }
    this.lv.set(end.output, xv);
  }

  private lowerAdd(n: IrNode): void {
    const a = this.get(n.inputs[0]!);
    const b = this.get(n.inputs[1]!);
    const c = soleConsumer(this.g, n.output);
    const quant = !this.float && c?.kind === 'quant' ? c : undefined;
    const qp = quant ? actQParams(quant.module, quant.path) : undefined;
    const v = quant ? quant.output : n.output;
    const out = this.value(qp ? 'u8' : 'f32', v.shape, (quant ?? n).path, qp);
    const aa = Number.isInteger(a.zp) ? a : this.toF32(a, n.path);
    const bb = Number.isInteger(b.zp) ? b : this.toF32(b, n.path);
    this.ops.push({ kind: 'add', name: n.path, a: aa, b: bb, out });
    this.report.adds++;
    this.done.add(n);
    if (quant) this.done.add(quant);
    this.lv.set(v, out);
  }
}

/** x' = a (u - m) for every channel with the same a, m (u = 0..255), or null. */
function uniformAffine(T: Float32Array, C: number, allowFraction: boolean): { a: number; m: number } | null {
  let a0 = NaN;
  let m0 = NaN;
  for (let c = 0; c < C; c++) {
    const f0 = T[c]!;
    const f1 = T[255 * C + c]!;
    const a = (f1 - f0) / 255;
    if (!(a > 0) || !Number.isFinite(a)) return null;
    const m = -f0 / a;
    if (c === 0) {
      a0 = a;
      m0 = m;
    } else if (Math.abs(a - a0) > 1e-6 * a0 || Math.abs(m - m0) > 1e-3) return null;
  }
  // Snap m to a multiple of 1/2^10 (127.5 stays 127.5), then check every entry.
  const m = Math.round(m0 * 1024) / 1024;
  const a = Math.fround(a0);
  if (m < 0 || m > 255) return null;
  if (!allowFraction && !Number.isInteger(m)) return null;
  let maxAbs = 0;
  for (let i = 0; i < T.length; i++) maxAbs = Math.max(maxAbs, Math.abs(T[i]!));
  for (let u = 0; u < 256; u++)
    for (let c = 0; c < C; c++) if (Math.abs(T[u * C + c]! - a * (u - m)) > 1e-6 * maxAbs + 1e-12) return null;
  return { a, m };
}

// ====================================================================== planning and execution
export interface Plan {
  batch: number;
  arenaBytes: number;
  /** Byte offsets of the input (u8 [N, H, W, C]) and the output (f32 [N, D]). */
  inputOffset: number;
  outputOffset: number;
  /**
   * Native programs and JS steps in order. `inline`: a native program of
   * elementwise steps over few values (no convolution), which run() calls
   * on the calling thread: a trip through a worker thread costs more.
   */
  segments: ({ kind: 'native'; program: RtProgram; ops: LOp[]; inline: boolean } | { kind: 'js'; op: Extract<LOp, { kind: 'js' }> })[];
  /** Byte offset of each value root. */
  offsets: Map<LValue, number>;
  /** Run on one thread (small problems: waking the pool per kernel costs more than it saves). */
  singleThread: boolean;
  /**
   * threadSchedule 'measure': per native thread count, whether each native
   * segment runs on one thread (true) or the pool (false), measured on the
   * plan's first run at that thread count.
   */
  schedules: Map<number, boolean[]>;
}

const ALIGN = 64;
/** Native programs of elementwise steps over at most this many output values run inline (Plan.segments). */
const INLINE_ELEMENTS = 1 << 16;

function esize(r: Repr): number {
  return r === 'u8' ? 1 : 4;
}

function opInputs(op: LOp): LValue[] {
  switch (op.kind) {
    case 'add':
      return [op.a, op.b];
    case 'js':
      return op.inputs;
    default:
      return [op.x];
  }
}

/** A model compiled for the native runtime. Plans (arena layouts + programs) are built per batch size on first use. */
export class CompiledModel {
  readonly inputShape: [number, number, number];
  readonly outputDim: number;
  readonly preprocessing: Preprocessing;
  readonly report: CompileReport;
  readonly ops: readonly LOp[];
  private readonly input: LValue;
  private readonly output: LValue;
  private readonly plans = new Map<number, Plan>();
  /** Debugging: the flattened graph and the compiled value of each of its values. */
  readonly graph: IrGraph;
  readonly valueOf: ReadonlyMap<IrValue, LValue>;

  /** See CompileOptions.singleThreadMacs. */
  singleThreadMacs: number;
  /** See CompileOptions.threadSchedule. */
  threadSchedule: 'measure' | 'macs';

  constructor(low: Lowering, inputShape: [number, number, number], pre: Preprocessing) {
    this.singleThreadMacs = low.opts.singleThreadMacs ?? 48e6;
    const ts = low.opts.threadSchedule ?? 'measure';
    if (ts !== 'measure' && ts !== 'macs') throw new QuantFaceError('E_ARG', `threadSchedule must be 'measure' or 'macs' (got ${String(ts)})`);
    this.threadSchedule = ts;
    this.graph = low.g;
    this.valueOf = low.lv;
    this.ops = low.ops;
    this.report = low.report;
    this.input = low.input;
    this.output = low.output;
    this.inputShape = inputShape;
    this.preprocessing = pre;
    if (low.output.shape.length !== 1) throw new QuantFaceError('E_SHAPE', `runtime: the model outputs per-sample shape [${low.output.shape.join(', ')}]; an embedding [D] is expected`);
    this.outputDim = low.output.shape[0]!;
  }

  /** The arena layout and native programs for batch size n (cached). */
  plan(n: number): Plan {
    if (!Number.isInteger(n) || n < 1) throw new QuantFaceError('E_ARG', `runtime: batch size must be a positive integer (got ${n})`);
    const hit = this.plans.get(n);
    if (hit) return hit;
    const p = this.buildPlan(n);
    this.plans.set(n, p);
    return p;
  }

  /** Drops the cached plans (their programs are freed when collected). */
  clearPlans(): void {
    this.plans.clear();
  }

  /** Debugging: a plan where every value keeps its own buffer (nothing reused), not cached. */
  debugPlan(n: number): Plan {
    return this.buildPlan(n, true);
  }

  private buildPlan(N: number, noReuse = false): Plan {
    const ops = this.ops;
    // Liveness of every buffer root: defined by its producer, last read by its last consumer.
    const def = new Map<LValue, number>();
    const last = new Map<LValue, number>();
    def.set(this.input.root, -1);
    last.set(this.input.root, -1);
    ops.forEach((op, i) => {
      for (const x of opInputs(op)) last.set(x.root, Math.max(last.get(x.root) ?? -1, i));
      if (!def.has(op.out.root)) def.set(op.out.root, i);
      last.set(op.out.root, Math.max(last.get(op.out.root) ?? i, i));
    });
    last.set(this.output.root, Infinity);
    if (noReuse) for (const k of [...last.keys()]) last.set(k, Infinity);
    const bytesOf = (v: LValue): number => Math.ceil((N * numel(v.shape) * esize(v.repr)) / ALIGN) * ALIGN;
    // First fit over live blocks; elementwise steps write over an input that dies there (in place).
    interface Block {
      off: number;
      size: number;
      last: number;
    }
    let live: Block[] = [];
    const offsets = new Map<LValue, number>();
    const blockOf = new Map<LValue, Block>();
    let arena = 0;
    const alloc = (v: LValue, at: number): void => {
      live = live.filter((b) => b.last >= at);
      const size = bytesOf(v);
      const sorted = [...live].sort((a, b) => a.off - b.off);
      let off = 0;
      for (const b of sorted) {
        if (b.off - off >= size) break;
        off = Math.max(off, b.off + b.size);
      }
      const blk = { off, size, last: last.get(v) ?? at };
      live.push(blk);
      blockOf.set(v, blk);
      offsets.set(v, off);
      arena = Math.max(arena, off + size);
    };
    alloc(this.input.root, -1);
    ops.forEach((op, i) => {
      const r = op.out.root;
      if (offsets.has(r)) return;
      if (!noReuse && (op.kind === 'affine' || op.kind === 'lut' || op.kind === 'add')) {
        for (const x of opInputs(op)) {
          const xr = x.root;
          const blk = blockOf.get(xr);
          if (blk && last.get(xr) === i && xr.repr === r.repr && bytesOf(xr) === bytesOf(r) && xr !== this.input.root && opInputs(op).filter((y) => y.root === xr).length === 1) {
            blk.last = last.get(r) ?? i;
            blockOf.set(r, blk);
            offsets.set(r, blk.off);
            return;
          }
        }
      }
      alloc(r, i);
    });
    const off = (v: LValue): number => offsets.get(v.root)!;
    // Native programs between JS steps.
    const segments: Plan['segments'] = [];
    let cur: { native: RtOp[]; ops: LOp[] } = { native: [], ops: [] };
    const flush = (): void => {
      if (!cur.native.length) return;
      const inline = cur.ops.every((o) => o.kind === 'affine' || o.kind === 'add' || o.kind === 'lut') && cur.ops.reduce((a, o) => a + N * numel(o.out.shape), 0) <= INLINE_ELEMENTS;
      segments.push({ kind: 'native', program: binding.rtProgram({ arenaBytes: arena, ops: cur.native }), ops: cur.ops, inline });
      cur = { native: [], ops: [] };
    };
    for (const op of ops) {
      if (op.kind === 'js') {
        flush();
        segments.push({ kind: 'js', op });
        continue;
      }
      cur.native.push(nativeOp(op, N, off));
      cur.ops.push(op);
    }
    flush();
    const macs = N * (this.report.int8Macs + this.report.fp32Macs);
    const singleThread = macs < this.singleThreadMacs;
    return { batch: N, arenaBytes: arena, inputOffset: off(this.input), outputOffset: off(this.output), segments, offsets, singleThread, schedules: new Map() };
  }

  /**
   * One flag per native segment of p: run it on the calling thread alone
   * (true) or on the pool, at the current native thread count (see
   * CompileOptions.threadSchedule). Measures on first use per thread count.
   */
  segmentSchedule(p: Plan): boolean[] {
    const native = p.segments.filter((s): s is Extract<Plan['segments'][number], { kind: 'native' }> => s.kind === 'native');
    const T = binding.getThreads();
    if (T <= 1 || this.threadSchedule === 'macs') return native.map(() => p.singleThread);
    const hit = p.schedules.get(T);
    if (hit) return hit;
    const macs = p.batch * (this.report.int8Macs + this.report.fp32Macs);
    let sch: boolean[];
    if (macs < 2e6) sch = native.map(() => true);
    else if (macs > 4e9) sch = native.map(() => false);
    else {
      const arena = this.newArena(p);
      const time = (program: RtProgram, single: boolean): number => {
        const t0 = performance.now();
        binding.rtRun({ program, arena, singleThread: single });
        return performance.now() - t0;
      };
      sch = native.map((s) => {
        // warm-up both ways, then alternate; best of each (other processes only ever add time)
        const first = time(s.program, true) + time(s.program, false);
        const rounds = first > 200 ? 2 : first > 40 ? 3 : 6;
        let one = Infinity;
        let pool = Infinity;
        for (let r = 0; r < rounds; r++)
          for (const single of r % 2 ? [true, false] : [false, true]) {
            const t = time(s.program, single);
            if (single) one = Math.min(one, t);
            else pool = Math.min(pool, t);
          }
        return !(pool < 0.9 * one);
      });
    }
    p.schedules.set(T, sch);
    return sch;
  }

  /** A zeroed arena for plan p (8-byte aligned). */
  newArena(p: Plan): Uint8Array {
    return new Uint8Array(new ArrayBuffer(Math.max(8, p.arenaBytes)));
  }

  /** The input region of an arena: N x H x W x C bytes in the model's channel order. */
  inputView(p: Plan, arena: Uint8Array): Uint8Array {
    return arena.subarray(p.inputOffset, p.inputOffset + p.batch * numel(this.inputShape));
  }

  /** The output region of an arena: N x D floats (valid after a run). */
  outputView(p: Plan, arena: Uint8Array): Float32Array {
    return new Float32Array(arena.buffer, arena.byteOffset + p.outputOffset, p.batch * this.outputDim);
  }

  /** Runs every step (native segments on a worker thread). */
  async run(p: Plan, arena: Uint8Array, profile?: Float64Array[]): Promise<void> {
    let k = 0;
    const sch = this.segmentSchedule(p);
    for (const s of p.segments) {
      if (s.kind === 'native') {
        const prof = profile ? (profile[k] ??= new Float64Array(s.ops.length)) : undefined;
        const o = { program: s.program, arena, singleThread: sch[k]!, ...(prof ? { profile: prof } : {}) };
        if (s.inline) binding.rtRun(o);
        else await binding.rtRunAsync(o);
        k++;
      } else this.runJs(p, arena, s.op);
    }
  }

  /** Synchronous form of run (blocks the thread). */
  runSync(p: Plan, arena: Uint8Array, profile?: Float64Array[]): void {
    let k = 0;
    const sch = this.segmentSchedule(p);
    for (const s of p.segments) {
      if (s.kind === 'native') {
        const prof = profile ? (profile[k] ??= new Float64Array(s.ops.length)) : undefined;
        binding.rtRun({ program: s.program, arena, singleThread: sch[k]!, ...(prof ? { profile: prof } : {}) });
        k++;
      } else this.runJs(p, arena, s.op);
    }
  }

  private runJs(p: Plan, arena: Uint8Array, op: Extract<LOp, { kind: 'js' }>): void {
    const N = p.batch;
    const view = (v: LValue): Float32Array => new Float32Array(arena.buffer, arena.byteOffset + p.offsets.get(v.root)!, N * numel(v.shape));
    const xs = op.inputs.map((v) => new Tensor(view(v), [N, ...v.shape]) as FTensor);
    noGrad(() => {
      const y = op.module.forward(...xs);
      view(op.out).set(y.data as Float32Array);
      if (!xs.includes(y)) bufferPool.release(y);
    });
  }
}

function nativeOp(op: Exclude<LOp, { kind: 'js' }>, N: number, off: (v: LValue) => number): RtOp {
  const uq = (prefix: string, v: LValue): Record<string, number> =>
    v.repr === 'u8' ? { [`${prefix}Scale`]: v.scale, [`${prefix}ZeroPoint`]: v.zp } : {};
  const oq = (v: LValue): Record<string, number> => (v.repr === 'u8' ? { outScale: v.scale, outZeroPoint: v.zp, clampMin: v.lo, clampMax: v.hi } : {});
  switch (op.kind) {
    case 'conv_u8':
      return {
        op: 'conv_u8', name: op.name, n: N, ...op.geom, x: off(op.x), xZeroPoint: op.xZeroPoint, weight: op.weight, wZeroPoint: op.wZeroPoint,
        outType: op.out.repr, scale: op.scale, bias: op.bias, activation: op.activation, ...(op.slope ? { slope: op.slope } : {}), out: off(op.out), ...oq(op.out),
      };
    case 'conv_f32':
      return { op: 'conv_f32', name: op.name, n: N, ...op.geom, x: off(op.x), weight: op.weight, ...(op.bias ? { bias: op.bias } : {}), out: off(op.out) };
    case 'add':
      return {
        op: 'add', name: op.name, count: N * numel(op.out.shape), a: off(op.a), aType: op.a.repr, ...uq('a', op.a), b: off(op.b), bType: op.b.repr, ...uq('b', op.b),
        out: off(op.out), outType: op.out.repr, ...oq(op.out),
      };
    case 'affine':
      return {
        op: 'affine', name: op.name, count: N * numel(op.out.shape), channels: op.channels, x: off(op.x), xType: op.x.repr, ...uq('x', op.x),
        ...(op.scale ? { scale: op.scale } : {}), ...(op.bias ? { bias: op.bias } : {}), activation: op.activation, ...(op.slope ? { slope: op.slope } : {}),
        ...(op.activation === 'clamp' ? { lo: op.lo!, hi: op.hi! } : {}), out: off(op.out), outType: op.out.repr, ...oq(op.out),
      };
    case 'lut':
      return { op: 'lut', name: op.name, count: N * numel(op.out.shape), channels: op.channels, x: off(op.x), table: op.table, out: off(op.out) };
    case 'conv_input':
      return {
        op: 'conv_input', name: op.name, n: N, ...op.geom, x: off(op.x), table: op.table, weight: op.weight, ...(op.convBias ? { convBias: op.convBias } : {}),
        ...(op.scale ? { scale: op.scale } : {}), ...(op.bias ? { bias: op.bias } : {}), activation: op.activation, ...(op.slope ? { slope: op.slope } : {}),
        ...(op.activation === 'clamp' ? { lo: op.lo!, hi: op.hi! } : {}), out: off(op.out), outType: op.out.repr, ...oq(op.out),
      };
  }
}

/**
 * Compiles a model for the native runtime (see the file comment). The model
 * is put in eval mode while compiling and restored; its weights are read
 * once (later changes to the model do not affect the compiled form).
 */
export function compileModel(model: Module, opts: CompileOptions = {}): CompiledModel {
  const info = (model as { info?: ModelInfo }).info;
  const inputShape = opts.inputShape ?? info?.inputShape ?? [112, 112, 3];
  if (inputShape[2] !== 3 && inputShape[2] !== 1) throw new QuantFaceError('E_UNSUPPORTED_OP', `runtime: the model takes ${inputShape[2]} input channels; only RGB (3) and grey (1) are supported`);
  const pre = opts.preprocessing ?? info?.preprocessing ?? QUANTFACE_PREPROCESSING;
  const modes = new Map<Module, boolean>();
  for (const m of model.modules()) modes.set(m, m.training);
  model.eval();
  try {
    const g = flattenModel(model, inputShape);
    const low = new Lowering(g, opts, pre);
    noGrad(() => low.run());
    return new CompiledModel(low, [...inputShape] as [number, number, number], pre);
  } finally {
    for (const [m, t] of modes) m.training = t;
  }
}
