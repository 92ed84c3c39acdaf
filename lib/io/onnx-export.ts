/**
 * ONNX export of engine models (opset 13, NCHW, as PyTorch exports them):
 *
 * - 'float': the float model (fake quantizers, if any, are ignored);
 *   optionally with each BatchNorm folded into the convolution before it.
 * - 'qdq': a quantization-aware model as QuantizeLinear/DequantizeLinear:
 *   Conv / Gemm weights as int8 initializers with per-output-channel
 *   DequantizeLinear (axis 0); PReLU slopes as int8 with a per-tensor
 *   DequantizeLinear; every enabled activation quantizer (outputs of
 *   PReLU, ReLU, Add, Clamp, and stand-alone quantizer nodes) as Clip to
 *   its representable range (when it is narrower than the 8-bit type) +
 *   QuantizeLinear + DequantizeLinear with its frozen scale and zero point.
 *   Min/max (WeightFakeQuant, ActFakeQuant) and learned-step (LSQ)
 *   quantizers export alike. Widths below 8 bits are stored in int8 /
 *   uint8 with the narrowed range.
 *
 *   Semantics match onnxruntime's operator for operator: QuantizeLinear
 *   divides by the scale and rounds half to even, DequantizeLinear
 *   computes (q - zero point) * scale in float32, exactly as our fake
 *   quantizers do (the io-onnx test checks every width bit for bit,
 *   ties included). onnxruntime fuses none of these QDQ groups (no
 *   QLinearConv: a Conv is followed by BatchNorm / PReLU in float, not by
 *   a QuantizeLinear), so its default graph optimization gives the same
 *   values as optimizations disabled. What remains is float32 summation
 *   order inside convolutions: where an activation lies within float
 *   noise of a rounding boundary the two runtimes can pick adjacent codes,
 *   and a low-bit network can amplify such a flip (measured on mobileface
 *   students: most faces bit-identical up to 1e-5, rare faces down to
 *   cosine 0.99).
 *
 *   A weight transform or output quantizer of another kind is refused
 *   (E_UNSUPPORTED_OP) rather than exported as float.
 *
 * The graph input is NCHW [N, C, H, W] float (N symbolic); the output is
 * the embedding [N, D]. The model's ModelInfo is stored in metadata_props
 * ('quantface.info') so importOnnxModel restores the preprocessing.
 */
import { QuantFaceError } from '../errors.js';
import type { FTensor } from '../tensor.js';
import { Module } from '../nn/module.js';
import { Conv2d, Linear, BatchNorm, PReLU, ReLU, Add, Identity, Flatten, Dropout, L2Normalize, WeightTransform } from '../nn/layers.js';
import { Sequential, Graph } from '../nn/containers.js';
import { Pad, Clamp, ChannelAffine, Multiply, Subtract, Abs, Reshape, GlobalAvgPool, MaxPool2d, AvgPool2d, NhwcToNchw } from '../nn/import-ops.js';
import { WeightFakeQuant, ActFakeQuant } from '../quant/fake-quant.js';
import { LsqWeightFakeQuant, LsqActFakeQuant } from '../quant/lsq.js';
import { roundHalfEven, type QParams } from '../quant/qparams.js';
import { encodeOnnxModel, DT, type OnnxAttribute, type OnnxNode, type OnnxTensor, type OnnxModel } from './onnx-proto.js';
import { validateModelInfo, type ModelInfo } from './model-info.js';
import { writeFileAtomic } from './qfm.js';

export interface OnnxExportOptions {
  /** 'float' (default) or 'qdq' (the model's fake quantizers as QuantizeLinear / DequantizeLinear). */
  mode?: 'float' | 'qdq';
  /** Input [H, W, C] (default: the model's info.inputShape). */
  inputShape?: [number, number, number];
  /** Recorded in metadata_props (default: model.info). */
  info?: ModelInfo;
  /** Fold each BatchNorm into the convolution that feeds only it (float mode). Default false. */
  foldBatchNorm?: boolean;
  /** Graph input / output names. Default 'input' / 'output'. */
  inputName?: string;
  outputName?: string;
}

interface V {
  /** ONNX tensor name. */
  name: string;
  /** Engine shape (NHWC for 4-D 'nchw' values). */
  shape: number[];
  /** 'nchw': a 4-D engine NHWC tensor, NCHW in ONNX; 'plain': same shape and order in both. */
  layout: 'nchw' | 'plain';
}

function unsupported(what: string, where: string): QuantFaceError {
  return new QuantFaceError('E_UNSUPPORTED_OP', `ONNX export: ${what} at ${where || '(root)'} is not supported`);
}

const i64 = (v: number[]): Uint8Array => new Uint8Array(BigInt64Array.from(v.map((x) => BigInt(x))).buffer);
const f32 = (v: ArrayLike<number>): Uint8Array => new Uint8Array(Float32Array.from(v as number[]).buffer);

class Emitter {
  nodes: OnnxNode[] = [];
  inits: OnnxTensor[] = [];
  private names = new Set<string>();
  constructor(readonly mode: 'float' | 'qdq', readonly fold: boolean) {}

  fresh(base: string): string {
    let n = (base || 't').replace(/[^A-Za-z0-9_./:-]/g, '_');
    if (this.names.has(n)) {
      let k = 1;
      while (this.names.has(`${n}_${k}`)) k++;
      n = `${n}_${k}`;
    }
    this.names.add(n);
    return n;
  }

  init(base: string, dims: number[], dataType: number, raw: Uint8Array): string {
    const name = this.fresh(base);
    this.inits.push({ name, dims, data_type: dataType, raw_data: raw });
    return name;
  }

  node(op: string, inputs: string[], base: string, attrs: OnnxAttribute[] = []): string {
    const out = this.fresh(base);
    this.nodes.push({ op_type: op, name: out, input: inputs, output: [out], attribute: attrs });
    return out;
  }
}

const A = {
  i: (name: string, v: number): OnnxAttribute => ({ name, type: 2, i: v }),
  f: (name: string, v: number): OnnxAttribute => ({ name, type: 1, f: v }),
  ints: (name: string, v: number[]): OnnxAttribute => ({ name, type: 7, ints: v }),
};

/** Integers q (in [quantMin, quantMax]) as int8 with matching zero points (shifted by -128 for [0, 255]). */
function toInt8(q: Int32Array, qp: QParams, where: string): { data: Int8Array; zp: Int8Array } {
  const shift = qp.quantMin >= -128 && qp.quantMax <= 127 ? 0 : -128;
  if (qp.quantMin + shift < -128 || qp.quantMax + shift > 127) throw unsupported(`integer range [${qp.quantMin}, ${qp.quantMax}]`, where);
  return { data: Int8Array.from(q, (v) => v + shift), zp: Int8Array.from(qp.zeroPoint, (v) => v + shift) };
}

function quantizeInts(w: FTensor, qp: QParams, channels: number, inner: number): Int32Array {
  const q = new Int32Array(w.numel);
  const isF32 = w.data instanceof Float32Array;
  for (let c = 0; c < channels; c++) {
    const s = qp.scale[qp.scale.length === 1 ? 0 : c]!;
    const z = qp.zeroPoint[qp.zeroPoint.length === 1 ? 0 : c]!;
    for (let i = c * inner; i < (c + 1) * inner; i++) {
      const v = roundHalfEven(isF32 ? Math.fround(w.data[i]! / s) : w.data[i]! / s) + z;
      q[i] = Math.min(qp.quantMax, Math.max(qp.quantMin, v));
    }
  }
  return q;
}

/**
 * The quantization parameters a weight transform applies to w (per output
 * channel; one channel for PReLU slopes), or null when it leaves w as it is
 * (disabled, or no transform). Throws for a transform the export cannot
 * represent.
 */
function weightQParams(wq: Module | undefined, w: FTensor, channels: number, inner: number, where: string): QParams | null {
  if (!wq) return null;
  if (wq instanceof WeightFakeQuant) return wq.fakeQuantEnabled ? wq.qparams(w, channels, inner) : null;
  if (wq instanceof LsqWeightFakeQuant) return wq.fakeQuantEnabled ? wq.qparams(w, channels, inner) : null;
  if (wq instanceof WeightTransform) throw unsupported(`weight transform ${wq.constructor.name}`, where);
  return null;
}

/** OHWI -> OIHW. */
function ohwiToOihw(w: ArrayLike<number>, O: number, kh: number, kw: number, I: number): Float32Array {
  const out = new Float32Array(O * I * kh * kw);
  for (let o = 0; o < O; o++) for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) for (let i = 0; i < I; i++) out[((o * I + i) * kh + y) * kw + x] = w[((o * kh + y) * kw + x) * I + i]!;
  return out;
}

function weightInput(e: Emitter, m: Conv2d | Linear, base: string, dims: number[], reorder: (w: ArrayLike<number>) => ArrayLike<number>, scaleBy?: Float64Array): string {
  const w = m.weight.data;
  const channels = m instanceof Conv2d ? m.outChannels : m.outFeatures;
  const inner = w.numel / channels;
  const qp = e.mode === 'qdq' ? weightQParams(m.weightQuant, w, channels, inner, base) : null;
  if (qp) {
    const q = quantizeInts(w, qp, channels, inner);
    const { data, zp } = toInt8(q, qp, base);
    const qi = e.init(`${base}.weight_quantized`, dims, DT.INT8, new Uint8Array(Int8Array.from(reorder(data) as ArrayLike<number>).buffer));
    const sc = e.init(`${base}.weight_scale`, [channels], DT.FLOAT, f32(qp.scale));
    const zi = e.init(`${base}.weight_zero_point`, [channels], DT.INT8, new Uint8Array(zp.buffer));
    return e.node('DequantizeLinear', [qi, sc, zi], `${base}.weight_dq`, [A.i('axis', 0)]);
  }
  let vals = reorder(w.data);
  if (scaleBy) {
    const inner = vals.length / channels;
    vals = Float32Array.from(vals as ArrayLike<number>, (v, i) => v * scaleBy[Math.floor(i / inner)]!);
  }
  return e.init(`${base}.weight`, dims, DT.FLOAT, f32(vals));
}

/** BatchNorm as per-channel scale and shift (eval statistics). */
function bnAffine(bn: BatchNorm): { scale: Float64Array; shift: Float64Array } {
  const C = bn.numFeatures;
  const scale = new Float64Array(C);
  const shift = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    const s = (bn.weight ? bn.weight.data.data[c]! : 1) / Math.sqrt(bn.runningVar.data[c]! + bn.eps);
    scale[c] = s;
    shift[c] = (bn.bias ? bn.bias.data.data[c]! : 0) - bn.runningMean.data[c]! * s;
  }
  return { scale, shift };
}

function emitConv(e: Emitter, m: Conv2d, x: V, base: string, bn?: BatchNorm): V {
  if (x.layout !== 'nchw') throw unsupported('Conv2d on a non-image tensor', base);
  const O = m.outChannels;
  const I = m.inChannels / m.groups;
  const fold = bn ? bnAffine(bn) : undefined;
  const w = weightInput(e, m, base, [O, I, m.kernelH, m.kernelW], (d) => ohwiToOihw(d, O, m.kernelH, m.kernelW, I), fold?.scale);
  const ins = [x.name, w];
  if (m.bias || fold) {
    const b = new Float32Array(O);
    for (let o = 0; o < O; o++) {
      const b0 = m.bias ? m.bias.data.data[o]! : 0;
      b[o] = fold ? b0 * fold.scale[o]! + fold.shift[o]! : b0;
    }
    ins.push(e.init(`${base}.bias`, [O], DT.FLOAT, f32(b)));
  }
  const out = e.node('Conv', ins, base, [
    A.ints('kernel_shape', [m.kernelH, m.kernelW]),
    A.ints('strides', [m.strideH, m.strideW]),
    A.ints('pads', [m.padTop, m.padLeft, m.padBottom, m.padRight]),
    A.ints('dilations', [m.dilationH, m.dilationW]),
    A.i('group', m.groups),
  ]);
  return { name: out, shape: m.inferShape(x.shape).shape, layout: 'nchw' };
}

/** A per-channel constant shaped to broadcast over x in ONNX. */
function channelConst(e: Emitter, base: string, vals: ArrayLike<number>, x: V): string {
  const C = vals.length;
  const dims = C === 1 ? [1] : x.layout === 'nchw' ? [C, 1, 1] : [C];
  if (C > 1 && x.layout === 'plain' && x.shape.length !== 2) throw unsupported('a per-channel constant on a non-NCHW tensor of rank > 2', base);
  return e.init(base, dims, DT.FLOAT, f32(vals));
}

function actQdq(e: Emitter, q: ActFakeQuant | LsqActFakeQuant, x: V, base: string): V {
  if (e.mode !== 'qdq' || !q.fakeQuantEnabled) return x;
  const qp = q.qparams();
  const s = qp.scale[0]!;
  const z = qp.zeroPoint[0]!;
  const unsigned = qp.quantMin >= 0 && qp.quantMax <= 255;
  const signed = qp.quantMin >= -128 && qp.quantMax <= 127;
  if (!unsigned && !signed) throw unsupported(`activation range [${qp.quantMin}, ${qp.quantMax}]`, base);
  const [tmin, tmax] = unsigned ? [0, 255] : [-128, 127];
  let inp = x.name;
  if (qp.quantMin > tmin || qp.quantMax < tmax) {
    const lo = e.init(`${base}.clip_min`, [], DT.FLOAT, f32([Math.fround((qp.quantMin - z) * s)]));
    const hi = e.init(`${base}.clip_max`, [], DT.FLOAT, f32([Math.fround((qp.quantMax - z) * s)]));
    inp = e.node('Clip', [inp, lo, hi], `${base}.clip`);
  }
  const sc = e.init(`${base}.scale`, [], DT.FLOAT, f32([s]));
  const zp = unsigned ? e.init(`${base}.zero_point`, [], DT.UINT8, Uint8Array.of(z)) : e.init(`${base}.zero_point`, [], DT.INT8, new Uint8Array(Int8Array.of(z).buffer));
  const qn = e.node('QuantizeLinear', [inp, sc, zp], `${base}.quantize`);
  const dq = e.node('DequantizeLinear', [qn, sc, zp], `${base}.dequantize`);
  return { ...x, name: dq };
}

function withOutQuant(e: Emitter, m: Module, v: V, base: string): V {
  const oq = m.getChild('outQuant');
  if (oq instanceof ActFakeQuant || oq instanceof LsqActFakeQuant) return actQdq(e, oq, v, `${base}.outQuant`);
  if (oq && e.mode === 'qdq') throw unsupported(`output quantizer ${oq.constructor.name}`, `${base}.outQuant`);
  return v;
}

function emitLeaf(e: Emitter, m: Module, xs: V[], base: string, foldBn?: BatchNorm): V {
  const x = xs[0]!;
  const same = (name: string): V => ({ ...x, name });
  if (m instanceof Conv2d) return emitConv(e, m, x, base, foldBn);
  if (m instanceof Linear) {
    if (x.layout !== 'plain' || x.shape.length !== 2) throw unsupported('Linear on a non-[N, K] tensor', base);
    const ins = [x.name, weightInput(e, m, base, [m.outFeatures, m.inFeatures], (d) => d)];
    if (m.bias) ins.push(e.init(`${base}.bias`, [m.outFeatures], DT.FLOAT, f32(m.bias.data.data)));
    return { name: e.node('Gemm', ins, base, [A.i('transB', 1)]), shape: [x.shape[0]!, m.outFeatures], layout: 'plain' };
  }
  if (m instanceof BatchNorm) {
    if (!((x.layout === 'nchw' && x.shape.length === 4) || (x.layout === 'plain' && x.shape.length === 2))) throw unsupported('BatchNorm on this tensor', base);
    const C = m.numFeatures;
    const ones = new Float32Array(C).fill(1);
    const ins = [
      x.name,
      e.init(`${base}.weight`, [C], DT.FLOAT, f32(m.weight ? m.weight.data.data : ones)),
      e.init(`${base}.bias`, [C], DT.FLOAT, f32(m.bias ? m.bias.data.data : new Float32Array(C))),
      e.init(`${base}.running_mean`, [C], DT.FLOAT, f32(m.runningMean.data)),
      e.init(`${base}.running_var`, [C], DT.FLOAT, f32(m.runningVar.data)),
    ];
    return same(e.node('BatchNormalization', ins, base, [A.f('epsilon', m.eps)]));
  }
  if (m instanceof PReLU) {
    let slope: string;
    const sq = m.slopeQuant;
    const C = m.numParameters;
    const dims = C === 1 ? [1] : x.layout === 'nchw' ? [C, 1, 1] : [C];
    const qp = e.mode === 'qdq' ? weightQParams(sq, m.weight.data, 1, C, `${base}.slopeQuant`) : null;
    if (qp) {
      const { data, zp } = toInt8(quantizeInts(m.weight.data, qp, 1, C), qp, base);
      const qi = e.init(`${base}.weight_quantized`, dims, DT.INT8, new Uint8Array(data.buffer));
      const sc = e.init(`${base}.weight_scale`, [], DT.FLOAT, f32([qp.scale[0]!]));
      const zi = e.init(`${base}.weight_zero_point`, [], DT.INT8, new Uint8Array(zp.buffer));
      slope = e.node('DequantizeLinear', [qi, sc, zi], `${base}.weight_dq`);
    } else slope = e.init(`${base}.weight`, dims, DT.FLOAT, f32(m.weight.data.data));
    return withOutQuant(e, m, same(e.node('PRelu', [x.name, slope], base)), base);
  }
  if (m instanceof ReLU) return withOutQuant(e, m, same(e.node('Relu', [x.name], base)), base);
  if (m instanceof Clamp) {
    const lo = Number.isFinite(m.lo) ? e.init(`${base}.min`, [], DT.FLOAT, f32([m.lo])) : '';
    const hi = Number.isFinite(m.hi) ? e.init(`${base}.max`, [], DT.FLOAT, f32([m.hi])) : '';
    const ins = hi ? [x.name, lo, hi] : lo ? [x.name, lo] : [x.name];
    return withOutQuant(e, m, same(e.node('Clip', ins, base)), base);
  }
  if (m instanceof Add || m instanceof Multiply || m instanceof Subtract) {
    const y = xs[1]!;
    if (x.layout !== y.layout) throw unsupported('an elementwise op between tensors of different layouts', base);
    const op = m instanceof Add ? 'Add' : m instanceof Multiply ? 'Mul' : 'Sub';
    return withOutQuant(e, m, same(e.node(op, [x.name, y.name], base)), base);
  }
  if (m instanceof Abs) return same(e.node('Abs', [x.name], base));
  if (m instanceof Identity || m instanceof Dropout) return x;
  if (m instanceof ChannelAffine) {
    let cur = x.name;
    if (m.weight) cur = e.node('Mul', [cur, channelConst(e, `${base}.weight`, m.weight.data.data, x)], `${base}.mul`);
    if (m.bias) cur = e.node('Add', [cur, channelConst(e, `${base}.bias`, m.bias.data.data, x)], `${base}.add`);
    return same(cur);
  }
  if (m instanceof Flatten || m instanceof Reshape) {
    let cur = x.name;
    const eng = m.inferShape(x.shape).shape;
    if (x.layout === 'nchw' && x.shape[1]! * x.shape[2]! !== 1) cur = e.node('Transpose', [cur], `${base}.nhwc`, [A.ints('perm', [0, 2, 3, 1])]);
    if (eng.length === 2) return { name: e.node('Flatten', [cur], base, [A.i('axis', 1)]), shape: eng, layout: 'plain' };
    if (eng.length > 3) throw unsupported('a Reshape to rank 4 or more', base);
    const sh = e.init(`${base}.shape`, [eng.length], DT.INT64, i64([0, ...eng.slice(1)]));
    return { name: e.node('Reshape', [cur, sh], base), shape: eng, layout: 'plain' };
  }
  if (m instanceof NhwcToNchw) {
    if (x.layout !== 'nchw') throw unsupported('NhwcToNchw on a non-image tensor', base);
    return { name: x.name, shape: m.inferShape(x.shape).shape, layout: 'plain' };
  }
  if (m instanceof GlobalAvgPool) {
    if (x.layout !== 'nchw') throw unsupported('GlobalAvgPool on a non-image tensor', base);
    const g = e.node('GlobalAveragePool', [x.name], base);
    const shape = m.inferShape(x.shape).shape;
    if (m.keepDims) return { name: g, shape, layout: 'nchw' };
    return { name: e.node('Flatten', [g], `${base}.flatten`, [A.i('axis', 1)]), shape, layout: 'plain' };
  }
  if (m instanceof MaxPool2d || m instanceof AvgPool2d) {
    if (x.layout !== 'nchw') throw unsupported('pooling of a non-image tensor', base);
    const attrs = [A.ints('kernel_shape', [m.kh, m.kw]), A.ints('strides', [m.sh, m.sw]), A.ints('pads', [m.padTop, m.padLeft, m.padBottom, m.padRight])];
    if (m instanceof AvgPool2d) attrs.push(A.i('count_include_pad', 0));
    return { name: e.node(m instanceof MaxPool2d ? 'MaxPool' : 'AveragePool', [x.name], base, attrs), shape: m.inferShape(x.shape).shape, layout: 'nchw' };
  }
  if (m instanceof Pad) {
    if (x.layout !== 'nchw') throw unsupported('Pad of a non-image tensor', base);
    const pads = e.init(`${base}.pads`, [8], DT.INT64, i64([0, m.channelsBefore, m.top, m.left, 0, m.channelsAfter, m.bottom, m.right]));
    const val = e.init(`${base}.value`, [], DT.FLOAT, f32([m.value]));
    return { name: e.node('Pad', [x.name, pads, val], base, []), shape: m.inferShape(x.shape).shape, layout: 'nchw' };
  }
  if (m instanceof L2Normalize) {
    if (x.layout !== 'plain' || x.shape.length !== 2) throw unsupported('L2Normalize of a non-[N, D] tensor', base);
    return same(e.node('LpNormalization', [x.name], base, [A.i('axis', 1), A.i('p', 2)]));
  }
  if (m instanceof ActFakeQuant || m instanceof LsqActFakeQuant) return actQdq(e, m, x, base);
  throw unsupported(`module ${m.constructor.name}`, base);
}

function emitModule(e: Emitter, m: Module, xs: V[], path: string): V {
  if (m instanceof Graph) {
    const env = new Map<string, V>(m.inputNames.map((n, i) => [n, xs[i]!]));
    const nodes = m.nodeList;
    const uses = new Map<string, number>();
    for (const nd of nodes) for (const i of nd.inputs) uses.set(i, (uses.get(i) ?? 0) + 1);
    const out = m.outputNames[0];
    if (out === undefined) throw unsupported('a graph without nodes', path);
    uses.set(out, (uses.get(out) ?? 0) + 1);
    const skip = new Set<string>();
    for (let k = 0; k < nodes.length; k++) {
      const nd = nodes[k]!;
      if (skip.has(nd.name)) continue;
      const child = m.getChild(nd.name)!;
      const p = path ? `${path}.${nd.name}` : nd.name;
      // BatchNorm folding: the next node is a BatchNorm reading only this convolution.
      const next = nodes[k + 1];
      const nextMod = next ? m.getChild(next.name) : undefined;
      if (e.fold && child instanceof Conv2d && nextMod instanceof BatchNorm && next!.inputs.length === 1 && next!.inputs[0] === nd.name && uses.get(nd.name) === 1) {
        env.set(next!.name, emitLeaf(e, child, nd.inputs.map((i) => env.get(i)!), p, nextMod));
        skip.add(next!.name);
        continue;
      }
      env.set(nd.name, emitModule(e, child, nd.inputs.map((i) => env.get(i)!), p));
    }
    return env.get(out)!;
  }
  if (m instanceof Sequential) {
    const kids = [...m.namedChildren()];
    let v = xs[0]!;
    for (let k = 0; k < kids.length; k++) {
      const [n, c] = kids[k]!;
      const p = path ? `${path}.${n}` : n;
      const nxt = kids[k + 1]?.[1];
      if (e.fold && c instanceof Conv2d && nxt instanceof BatchNorm) {
        v = emitLeaf(e, c, [v], p, nxt);
        k++;
        continue;
      }
      v = emitModule(e, c, [v], p);
    }
    return v;
  }
  return emitLeaf(e, m, xs, path);
}

/** The ONNX ModelProto bytes of a model (see the file comment). */
export function exportOnnx(model: Module, opts: OnnxExportOptions = {}): Uint8Array {
  const info = opts.info ?? (model as { info?: ModelInfo }).info;
  if (info) validateModelInfo(info, 'exportOnnx: info');
  const shape = opts.inputShape ?? info?.inputShape;
  if (!shape) throw new QuantFaceError('E_ARG', 'exportOnnx: the model has no info.inputShape; pass inputShape [H, W, C]');
  const [H, W, C] = shape;
  const mode = opts.mode ?? 'float';
  const e = new Emitter(mode, !!opts.foldBatchNorm && mode === 'float');
  const inName = opts.inputName ?? 'input';
  const outName = opts.outputName ?? 'output';
  e.fresh(inName);
  e.fresh(outName);
  const out = emitModule(e, model, [{ name: inName, shape: [1, H, W, C], layout: 'nchw' }], '');
  if (out.layout !== 'plain' || out.shape.length !== 2) throw new QuantFaceError('E_SHAPE', `exportOnnx: the model outputs ${JSON.stringify(out.shape)}; an embedding [N, D] is expected`);
  if (out.name === inName) throw unsupported('a model that returns its input', '');
  e.nodes.push({ op_type: 'Identity', name: outName, input: [out.name], output: [outName] });
  const dimN = { dim_param: 'N' };
  const m: OnnxModel = {
    ir_version: 8,
    opset_import: [{ domain: '', version: 13 }],
    producer_name: 'quantface',
    producer_version: '0.1.0',
    doc_string: mode === 'qdq' ? 'quantface QDQ export of a quantization-aware model' : 'quantface float export',
    graph: {
      name: info?.name ?? 'model',
      node: e.nodes,
      initializer: e.inits,
      input: [{ name: inName, type: { tensor_type: { elem_type: DT.FLOAT, shape: { dim: [dimN, { dim_value: C }, { dim_value: H }, { dim_value: W }] } } } }],
      output: [{ name: outName, type: { tensor_type: { elem_type: DT.FLOAT, shape: { dim: [dimN, { dim_value: out.shape[1]! }] } } } }],
    },
    ...(info ? { metadata_props: [{ key: 'quantface.info', value: JSON.stringify(info) }] } : {}),
  };
  return encodeOnnxModel(m);
}

/** Writes exportOnnx's bytes to path atomically. Returns the size. */
export async function saveOnnx(model: Module, path: string, opts: OnnxExportOptions = {}): Promise<number> {
  const bytes = exportOnnx(model, opts);
  await writeFileAtomic(path, bytes);
  return bytes.length;
}
