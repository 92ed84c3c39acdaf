/**
 * TensorFlow Lite import: a .tflite FlatBuffer (read with the `flatbuffers`
 * package against the published TFLite schema, tensorflow/lite/schema/
 * schema.fbs) -> the equivalent TF graph nodes -> the TF.js graph converter
 * (./tfjs.ts), which already lowers NHWC convolutions, PReLU, pooling,
 * L2 normalisation and the rest into engine modules. TFLite and TF share
 * the NHWC layout; only the filter layouts differ (CONV_2D OHWI -> HWIO,
 * DEPTHWISE_CONV_2D [1, kh, kw, C*m] -> [kh, kw, C, m], FULLY_CONNECTED
 * [out, in] with transpose_b).
 *
 * Weights: float32, float16 (DEQUANTIZE of a constant folded) and int8 /
 * uint8 / int16 / int32 quantized tensors (per tensor or per axis) are
 * dequantized, value = scale * (q - zero_point): a quantized model becomes
 * a float teacher. QUANTIZE / DEQUANTIZE of computed tensors pass through.
 *
 * Ops: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, DIV (by
 * constants or between tensors as the engine allows), PRELU, RELU, RELU6,
 * LEAKY_RELU, ABS, NEG, MAXIMUM, MINIMUM, RSQRT, SQUARE, SUM, RESHAPE,
 * SQUEEZE, MEAN (spatial), PAD, AVERAGE_POOL_2D, MAX_POOL_2D,
 * L2_NORMALIZATION; fused activations NONE / RELU / RELU6. Anything else
 * is E_UNSUPPORTED_OP naming the op (and its operator index).
 */
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { basename, resolve } from 'node:path';
import { ByteBuffer } from 'flatbuffers';
import { QuantFaceError, ioError } from '../errors.js';
import { convertTfjsGraph, halfToFloat, asFormatError, type TfNode, type TfWeight, type AttrValue, type TfjsImportOptions } from './tfjs.js';
import type { ImportedModel } from './model-info.js';

/** BuiltinOperator names by code (schema.fbs), for messages and dispatch. */
const BUILTIN: Record<number, string> = {
  0: 'ADD', 1: 'AVERAGE_POOL_2D', 2: 'CONCATENATION', 3: 'CONV_2D', 4: 'DEPTHWISE_CONV_2D', 5: 'DEPTH_TO_SPACE', 6: 'DEQUANTIZE',
  7: 'EMBEDDING_LOOKUP', 8: 'FLOOR', 9: 'FULLY_CONNECTED', 10: 'HASHTABLE_LOOKUP', 11: 'L2_NORMALIZATION', 12: 'L2_POOL_2D',
  13: 'LOCAL_RESPONSE_NORMALIZATION', 14: 'LOGISTIC', 15: 'LSH_PROJECTION', 16: 'LSTM', 17: 'MAX_POOL_2D', 18: 'MUL', 19: 'RELU',
  20: 'RELU_N1_TO_1', 21: 'RELU6', 22: 'RESHAPE', 23: 'RESIZE_BILINEAR', 24: 'RNN', 25: 'SOFTMAX', 26: 'SPACE_TO_DEPTH', 27: 'SVDF',
  28: 'TANH', 29: 'CONCAT_EMBEDDINGS', 30: 'SKIP_GRAM', 31: 'CALL', 32: 'CUSTOM', 33: 'EMBEDDING_LOOKUP_SPARSE', 34: 'PAD',
  35: 'UNIDIRECTIONAL_SEQUENCE_RNN', 36: 'GATHER', 37: 'BATCH_TO_SPACE_ND', 38: 'SPACE_TO_BATCH_ND', 39: 'TRANSPOSE', 40: 'MEAN',
  41: 'SUB', 42: 'DIV', 43: 'SQUEEZE', 44: 'UNIDIRECTIONAL_SEQUENCE_LSTM', 45: 'STRIDED_SLICE', 46: 'BIDIRECTIONAL_SEQUENCE_RNN',
  47: 'EXP', 48: 'TOPK_V2', 49: 'SPLIT', 50: 'LOG_SOFTMAX', 51: 'DELEGATE', 52: 'BIDIRECTIONAL_SEQUENCE_LSTM', 53: 'CAST', 54: 'PRELU',
  55: 'MAXIMUM', 56: 'ARG_MAX', 57: 'MINIMUM', 58: 'LESS', 59: 'NEG', 60: 'PADV2', 61: 'GREATER', 62: 'GREATER_EQUAL', 63: 'LESS_EQUAL',
  64: 'SELECT', 65: 'SLICE', 66: 'SIN', 67: 'TRANSPOSE_CONV', 68: 'SPARSE_TO_DENSE', 69: 'TILE', 70: 'EXPAND_DIMS', 71: 'EQUAL',
  72: 'NOT_EQUAL', 73: 'LOG', 74: 'SUM', 75: 'SQRT', 76: 'RSQRT', 77: 'SHAPE', 78: 'POW', 79: 'ARG_MIN', 80: 'FAKE_QUANT',
  81: 'REDUCE_PROD', 82: 'REDUCE_MAX', 83: 'PACK', 84: 'LOGICAL_OR', 85: 'ONE_HOT', 86: 'LOGICAL_AND', 87: 'LOGICAL_NOT', 88: 'UNPACK',
  89: 'REDUCE_MIN', 90: 'FLOOR_DIV', 91: 'REDUCE_ANY', 92: 'SQUARE', 93: 'ZEROS_LIKE', 94: 'FILL', 95: 'FLOOR_MOD', 96: 'RANGE',
  97: 'RESIZE_NEAREST_NEIGHBOR', 98: 'LEAKY_RELU', 99: 'SQUARED_DIFFERENCE', 100: 'MIRROR_PAD', 101: 'ABS', 102: 'SPLIT_V',
  103: 'UNIQUE', 104: 'CEIL', 105: 'REVERSE_V2', 106: 'ADD_N', 107: 'GATHER_ND', 108: 'COS', 109: 'WHERE', 110: 'RANK', 111: 'ELU',
  112: 'REVERSE_SEQUENCE', 113: 'MATRIX_DIAG', 114: 'QUANTIZE', 115: 'MATRIX_SET_DIAG', 116: 'ROUND', 117: 'HARD_SWISH',
};

/** TensorType (schema.fbs) -> bytes per element and name. */
const TYPES: Record<number, { name: string; bytes: number }> = {
  0: { name: 'FLOAT32', bytes: 4 }, 1: { name: 'FLOAT16', bytes: 2 }, 2: { name: 'INT32', bytes: 4 }, 3: { name: 'UINT8', bytes: 1 },
  4: { name: 'INT64', bytes: 8 }, 5: { name: 'STRING', bytes: 0 }, 6: { name: 'BOOL', bytes: 1 }, 7: { name: 'INT16', bytes: 2 },
  8: { name: 'COMPLEX64', bytes: 8 }, 9: { name: 'INT8', bytes: 1 }, 10: { name: 'FLOAT64', bytes: 8 },
};

const MAX_ELEMENTS = 2 ** 31 - 1;

function fmt(path: string, msg: string): QuantFaceError {
  return new QuantFaceError('E_FORMAT', `${path}: ${msg}`, { path });
}

/** A FlatBuffer table with bounds-checked field access. */
class Tab {
  constructor(
    private readonly bb: ByteBuffer,
    readonly pos: number,
    private readonly path: string,
  ) {
    if (!Number.isInteger(pos) || pos < 0 || pos + 4 > bb.capacity()) throw fmt(path, `table at ${pos} lies outside the file`);
    const vt = pos - bb.readInt32(pos);
    if (vt < 0 || vt + 4 > bb.capacity()) throw fmt(path, `vtable of the table at ${pos} lies outside the file`);
  }

  private off(field: number): number {
    const o = this.bb.__offset(this.pos, 4 + 2 * field);
    if (o && this.pos + o + 1 > this.bb.capacity()) throw fmt(this.path, `field ${field} of the table at ${this.pos} lies outside the file`);
    return o;
  }

  int(field: number, d = 0, kind: 'i8' | 'u8' | 'i32' | 'u32' = 'i32'): number {
    const o = this.off(field);
    if (!o) return d;
    const p = this.pos + o;
    if (kind !== 'i8' && kind !== 'u8' && p + 4 > this.bb.capacity()) throw fmt(this.path, `field ${field} runs past the end of the file`);
    return kind === 'i8' ? this.bb.readInt8(p) : kind === 'u8' ? this.bb.readUint8(p) : kind === 'u32' ? this.bb.readUint32(p) : this.bb.readInt32(p);
  }

  float(field: number, d = 0): number {
    const o = this.off(field);
    return o ? this.bb.readFloat32(this.pos + o) : d;
  }

  bool(field: number, d = false): boolean {
    const o = this.off(field);
    return o ? this.bb.readUint8(this.pos + o) !== 0 : d;
  }

  u64(field: number): number {
    const o = this.off(field);
    return o ? Number(this.bb.readUint64(this.pos + o)) : 0;
  }

  table(field: number): Tab | null {
    const o = this.off(field);
    return o ? new Tab(this.bb, this.bb.__indirect(this.pos + o), this.path) : null;
  }

  string(field: number): string {
    const o = this.off(field);
    if (!o) return '';
    const p = this.bb.__indirect(this.pos + o);
    const n = p + 4 <= this.bb.capacity() ? this.bb.readInt32(p) : -1;
    if (n < 0 || p + 4 + n > this.bb.capacity()) throw fmt(this.path, `string field ${field} runs past the end of the file`);
    return Buffer.from(this.bb.bytes().subarray(p + 4, p + 4 + n)).toString('utf8');
  }

  /** [start, length] of a vector of `elem`-byte elements, bounds-checked. */
  vector(field: number, elem: number): [number, number] {
    const o = this.off(field);
    if (!o) return [0, 0];
    const start = this.bb.__vector(this.pos + o);
    const len = this.bb.__vector_len(this.pos + o);
    if (len < 0 || start < 0 || start + len * elem > this.bb.capacity()) throw fmt(this.path, `vector field ${field} (${len} elements) runs past the end of the file`);
    return [start, len];
  }

  ints(field: number): number[] {
    const [s, n] = this.vector(field, 4);
    return Array.from({ length: n }, (_, i) => this.bb.readInt32(s + 4 * i));
  }

  floats(field: number): number[] {
    const [s, n] = this.vector(field, 4);
    return Array.from({ length: n }, (_, i) => this.bb.readFloat32(s + 4 * i));
  }

  longs(field: number): number[] {
    const [s, n] = this.vector(field, 8);
    return Array.from({ length: n }, (_, i) => Number(this.bb.readInt64(s + 8 * i)));
  }

  bytes(field: number): Uint8Array {
    const [s, n] = this.vector(field, 1);
    return this.bb.bytes().subarray(s, s + n);
  }

  tables(field: number): Tab[] {
    const [s, n] = this.vector(field, 4);
    return Array.from({ length: n }, (_, i) => new Tab(this.bb, this.bb.__indirect(s + 4 * i), this.path));
  }
}

interface TflTensor {
  name: string;
  shape: number[];
  type: number;
  buffer: number;
  scale: number[];
  zeroPoint: number[];
  axis: number;
}

/** A parsed .tflite model (the parts the importer uses). */
export interface TfliteModel {
  path: string;
  version: number;
  description: string;
  opNames: string[];
  tensors: TflTensor[];
  inputs: number[];
  outputs: number[];
  operators: Array<{ op: string; inputs: number[]; outputs: number[]; options: Tab | null; index: number }>;
  buffers: Uint8Array[];
  sha256: string;
}

/** Parses a .tflite FlatBuffer. Errors: E_FORMAT (not TFLite, truncated, out-of-bounds offsets, several subgraphs). */
export function parseTflite(bytes: Uint8Array, path = 'model.tflite'): TfliteModel {
  if (bytes.length < 8) throw fmt(path, 'too short for a TFLite FlatBuffer');
  const bb = new ByteBuffer(bytes);
  if (bb.getBufferIdentifier() !== 'TFL3') throw fmt(path, "not a TFLite model (no 'TFL3' file identifier)");
  try {
    const model = new Tab(bb, bb.readInt32(0), path);
    const opNames = model.tables(1).map((c) => {
      const code = Math.max(c.int(0, 0, 'i8'), c.int(3, 0));
      return code === 32 ? `CUSTOM(${c.string(1)})` : BUILTIN[code] ?? `BUILTIN_${code}`;
    });
    const subgraphs = model.tables(2);
    if (subgraphs.length !== 1) throw fmt(path, `${subgraphs.length} subgraphs; a face-recognition model has one`);
    const sg = subgraphs[0]!;
    const buffers = model.tables(4).map((b) => {
      const off = b.u64(1);
      const size = b.u64(2);
      if (off > 1) {
        if (off + size > bytes.length) throw fmt(path, `buffer data at ${off} (+${size}) lies outside the file`);
        return bytes.subarray(off, off + size);
      }
      return b.bytes(0);
    });
    const tensors = sg.tables(0).map((t): TflTensor => {
      const q = t.table(4);
      return {
        name: t.string(3),
        shape: t.ints(0),
        type: t.int(1, 0, 'i8'),
        buffer: t.int(2, 0, 'u32'),
        scale: q ? q.floats(2) : [],
        zeroPoint: q ? q.longs(3) : [],
        axis: q ? q.int(6, 0) : 0,
      };
    });
    const operators = sg.tables(3).map((o, index) => {
      const oi = o.int(0, 0, 'u32');
      const op = opNames[oi];
      if (op === undefined) throw fmt(path, `operator ${index} uses operator code ${oi} of ${opNames.length}`);
      return { op, inputs: o.ints(1), outputs: o.ints(2), options: o.table(4), index };
    });
    return {
      path,
      version: model.int(0, 0, 'u32'),
      description: model.string(3),
      opNames,
      tensors,
      inputs: sg.ints(1),
      outputs: sg.ints(2),
      operators,
      buffers,
      sha256: createHash('sha256').update(bytes).digest('hex'),
    };
  } catch (e) {
    if (e instanceof QuantFaceError) throw e;
    throw fmt(path, `malformed TFLite FlatBuffer (${(e as Error).message})`);
  }
}

function unsupported(op: string, index: number, why?: string): QuantFaceError {
  return new QuantFaceError(
    'E_UNSUPPORTED_OP',
    `unsupported TFLite op ${op} (operator ${index})${why ? `: ${why}` : ''}. quantface imports face-recognition CNNs (CONV_2D, DEPTHWISE_CONV_2D, ` +
      'FULLY_CONNECTED, ADD/SUB/MUL, PRELU/RELU/RELU6/LEAKY_RELU, RESHAPE, MEAN, PAD, pooling, L2_NORMALIZATION).',
  );
}

/** Dequantized float32 (or int32 for non-quantized integer tensors) values of a constant tensor. */
function constValues(m: TfliteModel, t: TflTensor, where: string): { dtype: 'float32' | 'int32'; data: Float32Array | Int32Array } | null {
  const buf = m.buffers[t.buffer];
  if (!buf || buf.length === 0) return null;
  const ty = TYPES[t.type];
  if (!ty || ty.bytes === 0 || t.type === 8) throw fmt(m.path, `${where}: constant of type ${ty?.name ?? t.type} is not supported`);
  let n = 1;
  for (const d of t.shape) {
    if (!Number.isInteger(d) || d < 0) throw fmt(m.path, `${where}: invalid shape ${JSON.stringify(t.shape)}`);
    n *= d;
    if (n > MAX_ELEMENTS) throw fmt(m.path, `${where}: shape ${JSON.stringify(t.shape)} is too large`);
  }
  if (buf.length !== n * ty.bytes) throw fmt(m.path, `${where}: buffer holds ${buf.length} bytes for ${n} ${ty.name} values`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const read = (i: number): number => {
    switch (t.type) {
      case 0: return dv.getFloat32(4 * i, true);
      case 1: return halfToFloat(dv.getUint16(2 * i, true));
      case 2: return dv.getInt32(4 * i, true);
      case 3: return dv.getUint8(i);
      case 4: return Number(dv.getBigInt64(8 * i, true));
      case 6: return dv.getUint8(i);
      case 7: return dv.getInt16(2 * i, true);
      case 9: return dv.getInt8(i);
      case 10: return dv.getFloat64(8 * i, true);
      default: return 0;
    }
  };
  const quantized = t.scale.length > 0 && t.type !== 0 && t.type !== 1 && t.type !== 10;
  if (!quantized) {
    const float = t.type === 0 || t.type === 1 || t.type === 10;
    const data = float ? new Float32Array(n) : new Int32Array(n);
    for (let i = 0; i < n; i++) data[i] = read(i);
    return { dtype: float ? 'float32' : 'int32', data };
  }
  // value = scale * (q - zero_point), per tensor or along quantized_dimension.
  const per = t.scale.length;
  const axis = per > 1 ? t.axis : 0;
  if (per > 1 && (axis < 0 || axis >= t.shape.length || t.shape[axis] !== per)) throw fmt(m.path, `${where}: ${per} scales along axis ${axis} of shape ${JSON.stringify(t.shape)}`);
  if (t.scale.some((s) => !Number.isFinite(s))) throw fmt(m.path, `${where}: non-finite quantization scale`);
  const inner = per > 1 ? t.shape.slice(axis + 1).reduce((a, b) => a * b, 1) : 1;
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const c = per > 1 ? Math.floor(i / inner) % per : 0;
    data[i] = t.scale[c]! * (read(i) - (t.zeroPoint[c] ?? t.zeroPoint[0] ?? 0));
  }
  return { dtype: 'float32', data };
}

/**
 * Rewrites a parsed TFLite model as TF graph nodes (the form ./tfjs.ts
 * converts). Tensor i is named by its TFLite name, made unique.
 */
export function tfliteToTfGraph(m: TfliteModel): { nodes: TfNode[]; weights: Map<string, TfWeight>; input: string; output: string } {
  if (m.inputs.length !== 1) throw unsupported('(graph input)', -1, `the model must have exactly one input, it has ${m.inputs.length}`);
  if (m.outputs.length !== 1) throw fmt(m.path, `the model has ${m.outputs.length} outputs; an embedding model has one`);
  const used = new Set<string>();
  const names = m.tensors.map((t, i) => {
    let n = (t.name || `t${i}`).replace(/:0$/, '').replace(/[^\w./-]/g, '_') || `t${i}`;
    while (used.has(n)) n = `${n}_${i}`;
    used.add(n);
    return n;
  });
  const nodes: TfNode[] = [];
  const weights = new Map<string, TfWeight>();
  const consts = new Map<number, TfWeight>();
  const tensorAt = (i: number, where: string): TflTensor => {
    const t = m.tensors[i];
    if (!t) throw fmt(m.path, `${where}: tensor index ${i} of ${m.tensors.length}`);
    return t;
  };
  const addConst = (name: string, w: Omit<TfWeight, 'name'>): string => {
    let n = name;
    while (used.has(n)) n = `${n}_c`;
    used.add(n);
    const tw = { ...w, name: n };
    weights.set(n, tw);
    nodes.push({ name: n, op: 'Const', inputs: [], attr: { dtype: w.dtype === 'float32' ? 'DT_FLOAT' : 'DT_INT32' } });
    return n;
  };
  const constOf = (i: number, where: string): TfWeight | undefined => {
    if (consts.has(i)) return consts.get(i);
    const t = tensorAt(i, where);
    const v = constValues(m, t, `${where} (tensor ${t.name || i})`);
    if (!v) return undefined;
    const w: TfWeight = { name: names[i]!, dtype: v.dtype, shape: [...t.shape], data: v.data };
    consts.set(i, w);
    return w;
  };
  const emitted = new Set<number>();
  const ref = (i: number, where: string): string => {
    if (i < 0) throw fmt(m.path, `${where}: a required input is missing`);
    const w = constOf(i, where);
    if (w && !emitted.has(i)) {
      emitted.add(i);
      weights.set(names[i]!, w);
      nodes.push({ name: names[i]!, op: 'Const', inputs: [], attr: { dtype: w.dtype === 'float32' ? 'DT_FLOAT' : 'DT_INT32' } });
    }
    return names[i]!;
  };
  const inT = tensorAt(m.inputs[0]!, 'input');
  if (inT.shape.length !== 4) throw new QuantFaceError('E_SHAPE', `${m.path}: input ${inT.name} has shape ${JSON.stringify(inT.shape)}; an NHWC image input [N, H, W, C] is expected`);
  const input = names[m.inputs[0]!]!;
  nodes.push({ name: input, op: 'Placeholder', inputs: [], attr: { dtype: 'DT_FLOAT', shape: [-1, inT.shape[1]!, inT.shape[2]!, inT.shape[3]!] } });

  const ACT: Record<number, string | null> = { 0: null, 1: 'Relu', 3: 'Relu6' };
  const padding = (p: number, op: string, index: number): string => {
    if (p === 0) return 'SAME';
    if (p === 1) return 'VALID';
    throw unsupported(op, index, `padding ${p}`);
  };
  const activation = (code: number, op: string, index: number): string | null => {
    if (!(code in ACT)) throw unsupported(op, index, `fused activation ${code} (NONE, RELU and RELU6 are supported)`);
    return ACT[code]!;
  };
  /** Emits node `op` producing TFLite tensor `out`, followed by its fused activation. */
  const emit = (out: number, op: string, inputs: string[], attr: Record<string, AttrValue>, act: string | null): void => {
    const name = names[out]!;
    if (!act) {
      nodes.push({ name, op, inputs, attr });
      return;
    }
    const pre = `${name}/pre_${act.toLowerCase()}`;
    nodes.push({ name: pre, op, inputs, attr });
    nodes.push({ name, op: act, inputs: [pre], attr: {} });
  };

  for (const o of m.operators) {
    const where = `operator ${o.index} (${o.op})`;
    const opt = o.options;
    const out = o.outputs[0];
    if (out === undefined || o.outputs.length !== 1) throw unsupported(o.op, o.index, `${o.outputs.length} outputs`);
    tensorAt(out, where);
    const x = (k: number): string => ref(o.inputs[k] ?? -1, where);
    switch (o.op) {
      case 'CONV_2D':
      case 'DEPTHWISE_CONV_2D': {
        const dw = o.op === 'DEPTHWISE_CONV_2D';
        const f = constOf(o.inputs[1] ?? -1, where);
        if (!f || f.shape.length !== 4 || f.dtype !== 'float32') throw unsupported(o.op, o.index, 'the filter must be a constant of rank 4');
        const [a, kh, kw, c] = f.shape as [number, number, number, number];
        let filter: Omit<TfWeight, 'name'>;
        if (dw) {
          // [1, kh, kw, C*m] is [kh, kw, C, m] in memory.
          const cin = tensorAt(o.inputs[0]!, where).shape[3] ?? 0;
          if (a !== 1 || !(cin > 0) || c % cin !== 0) throw unsupported(o.op, o.index, `depthwise filter ${JSON.stringify(f.shape)} for ${cin} input channels`);
          filter = { dtype: 'float32', shape: [kh, kw, cin, c / cin], data: f.data };
        } else {
          // OHWI -> HWIO
          const src = f.data as Float32Array;
          const dst = new Float32Array(src.length);
          for (let oc = 0; oc < a; oc++) for (let y = 0; y < kh; y++) for (let xx = 0; xx < kw; xx++) for (let ic = 0; ic < c; ic++)
            dst[((y * kw + xx) * c + ic) * a + oc] = src[((oc * kh + y) * kw + xx) * c + ic]!;
          filter = { dtype: 'float32', shape: [kh, kw, c, a], data: dst };
        }
        const fname = addConst(`${names[out]}/filter`, filter);
        const hasBias = (o.inputs[2] ?? -1) >= 0;
        const sw = opt?.int(1, 1) || 1, sh = opt?.int(2, 1) || 1;
        const act = activation(opt?.int(dw ? 4 : 3, 0, 'i8') ?? 0, o.op, o.index);
        const dil = dw ? [opt?.int(5, 1) || 1, opt?.int(6, 1) || 1] : [opt?.int(4, 1) || 1, opt?.int(5, 1) || 1];
        const ins = [x(0), fname, ...(hasBias ? [x(2)] : [])];
        nodes.push({
          name: names[out]!,
          op: dw ? 'FusedDepthwiseConv2dNative' : '_FusedConv2D',
          inputs: ins,
          attr: {
            strides: [1, sh, sw, 1],
            dilations: [1, dil[1]!, dil[0]!, 1],
            padding: padding(opt?.int(0, 0, 'i8') ?? 0, o.op, o.index),
            data_format: 'NHWC',
            fused_ops: [...(hasBias ? ['BiasAdd'] : []), ...(act ? [act] : [])],
            num_args: hasBias ? 1 : 0,
          },
        });
        break;
      }
      case 'FULLY_CONNECTED': {
        const w = constOf(o.inputs[1] ?? -1, where);
        if (!w || w.shape.length !== 2 || w.dtype !== 'float32') throw unsupported(o.op, o.index, 'the weights must be a constant [out, in]');
        const act = activation(opt?.int(0, 0, 'i8') ?? 0, o.op, o.index);
        if (opt?.bool(2)) throw unsupported(o.op, o.index, 'keep_num_dims');
        const inShape = tensorAt(o.inputs[0]!, where).shape;
        let xin = x(0);
        if (inShape.length !== 2) {
          const sname = addConst(`${names[out]}/flat_shape`, { dtype: 'int32', shape: [2], data: Int32Array.of(-1, w.shape[1]!) });
          const r = `${names[out]}/flatten`;
          nodes.push({ name: r, op: 'Reshape', inputs: [xin, sname], attr: {} });
          xin = r;
        }
        const hasBias = (o.inputs[2] ?? -1) >= 0;
        nodes.push({
          name: names[out]!,
          op: '_FusedMatMul',
          inputs: [xin, ref(o.inputs[1]!, where), ...(hasBias ? [x(2)] : [])],
          attr: { transpose_a: false, transpose_b: true, fused_ops: [...(hasBias ? ['BiasAdd'] : []), ...(act ? [act] : [])], num_args: hasBias ? 1 : 0 },
        });
        break;
      }
      case 'ADD':
      case 'SUB':
      case 'MUL':
      case 'DIV': {
        const act = activation(opt?.int(0, 0, 'i8') ?? 0, o.op, o.index);
        const op = { ADD: 'AddV2', SUB: 'Sub', MUL: 'Mul', DIV: 'RealDiv' }[o.op]!;
        emit(out, op, [x(0), x(1)], {}, act);
        break;
      }
      case 'MAXIMUM':
      case 'MINIMUM':
        emit(out, o.op === 'MAXIMUM' ? 'Maximum' : 'Minimum', [x(0), x(1)], {}, null);
        break;
      case 'PRELU':
        emit(out, 'Prelu', [x(0), x(1)], {}, null);
        break;
      case 'RELU':
      case 'RELU6':
      case 'ABS':
      case 'NEG':
      case 'RSQRT':
      case 'SQUARE':
      case 'SQRT':
        emit(out, { RELU: 'Relu', RELU6: 'Relu6', ABS: 'Abs', NEG: 'Neg', RSQRT: 'Rsqrt', SQUARE: 'Square', SQRT: 'Sqrt' }[o.op]!, [x(0)], {}, null);
        break;
      case 'LEAKY_RELU':
        emit(out, 'LeakyRelu', [x(0)], { alpha: opt?.float(0, 0.2) ?? 0.2 }, null);
        break;
      case 'RESHAPE': {
        let shapeName: string;
        if ((o.inputs[1] ?? -1) >= 0 && constOf(o.inputs[1]!, where)) shapeName = x(1);
        else {
          const ns = opt?.ints(0) ?? tensorAt(out, where).shape;
          shapeName = addConst(`${names[out]}/shape`, { dtype: 'int32', shape: [ns.length], data: Int32Array.from(ns) });
        }
        emit(out, 'Reshape', [x(0), shapeName], {}, null);
        break;
      }
      case 'SQUEEZE':
        emit(out, 'Squeeze', [x(0)], { squeeze_dims: opt?.ints(0) ?? [] }, null);
        break;
      case 'MEAN':
      case 'SUM':
        emit(out, o.op === 'MEAN' ? 'Mean' : 'Sum', [x(0), x(1)], { keep_dims: opt?.bool(0) ?? false }, null);
        break;
      case 'PAD':
        emit(out, 'Pad', [x(0), x(1)], {}, null);
        break;
      case 'AVERAGE_POOL_2D':
      case 'MAX_POOL_2D': {
        const act = activation(opt?.int(5, 0, 'i8') ?? 0, o.op, o.index);
        const sw = opt?.int(1, 1) || 1, sh = opt?.int(2, 1) || 1, fw = opt?.int(3, 1) || 1, fh = opt?.int(4, 1) || 1;
        emit(out, o.op === 'MAX_POOL_2D' ? 'MaxPool' : 'AvgPool', [x(0)], { ksize: [1, fh, fw, 1], strides: [1, sh, sw, 1], padding: padding(opt?.int(0, 0, 'i8') ?? 0, o.op, o.index), data_format: 'NHWC' }, act);
        break;
      }
      case 'L2_NORMALIZATION': {
        // x * rsqrt(max(sum(x^2, -1), 1e-12)) = x / max(||x||, 1e-6), TFLite's epsilon.
        const n0 = names[out]!;
        const xs = x(0);
        const axes = addConst(`${n0}/axes`, { dtype: 'int32', shape: [1], data: Int32Array.of(-1) });
        const eps = addConst(`${n0}/eps`, { dtype: 'float32', shape: [], data: Float32Array.of(1e-12) });
        nodes.push({ name: `${n0}/square`, op: 'Square', inputs: [xs], attr: {} });
        nodes.push({ name: `${n0}/sum`, op: 'Sum', inputs: [`${n0}/square`, axes], attr: { keep_dims: true } });
        nodes.push({ name: `${n0}/max`, op: 'Maximum', inputs: [`${n0}/sum`, eps], attr: {} });
        nodes.push({ name: `${n0}/rsqrt`, op: 'Rsqrt', inputs: [`${n0}/max`], attr: {} });
        nodes.push({ name: n0, op: 'Mul', inputs: [xs, `${n0}/rsqrt`], attr: {} });
        break;
      }
      case 'QUANTIZE':
      case 'DEQUANTIZE': {
        // Of a constant: the dequantized constant; of a computed tensor: the float value passes through.
        const i0 = o.inputs[0] ?? -1;
        const c = i0 >= 0 ? constOf(i0, where) : undefined;
        if (c) consts.set(out, { ...c, name: names[out]! });
        else emit(out, 'Identity', [x(0)], {}, null);
        break;
      }
      default:
        throw unsupported(o.op, o.index);
    }
  }
  return { nodes, weights, input, output: names[m.outputs[0]!]! };
}

/** Imports a parsed model (see importTfliteModel). */
export function convertTflite(m: TfliteModel, opts: TfjsImportOptions = {}): ImportedModel {
  const g = tfliteToTfGraph(m);
  const model = convertTfjsGraph(
    {
      path: m.path,
      nodes: g.nodes,
      weights: g.weights,
      signature: { inputs: [g.input], outputs: [opts.outputName ?? g.output] },
      sha256: m.sha256,
      raw: {},
    },
    { ...opts, outputName: opts.outputName ?? g.output },
  );
  model.info = {
    ...model.info,
    name: opts.name ?? basename(m.path).replace(/\.tflite$/i, ''),
    format: 'tflite',
    preprocessing: opts.preprocessing ?? { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } },
    ...(opts.source ?? m.description ? { source: opts.source ?? `TFLite model (${m.description})` } : {}),
  };
  return model;
}

/**
 * Imports a .tflite face-recognition model as a trainable engine model
 * (float32; quantized weights dequantized). Default preprocessing (nothing
 * in the file says): RGB, (x - 127.5) / 127.5. Errors: E_IO, E_FORMAT,
 * E_UNSUPPORTED_OP (names the op), E_SHAPE.
 */
export async function importTfliteModel(modelPath: string, opts: TfjsImportOptions = {}): Promise<ImportedModel> {
  const path = resolve(modelPath);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw ioError(e, path);
  }
  try {
    return convertTflite(parseTflite(bytes, path), opts);
  } catch (e) {
    throw asFormatError(e, path);
  }
}
