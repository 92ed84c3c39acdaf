/**
 * ONNX import: a face-recognition ModelProto (protobuf, through protobufjs)
 * -> an ImportedModel whose modules compute what the ONNX graph computes,
 * in the engine's NHWC layout, trainable.
 *
 * Supported: Conv (pads, auto_pad, strides, dilations, groups, bias),
 * BatchNormalization (inference), PRelu, Relu, LeakyRelu, Clip, Add, Sub,
 * Mul, Div (by per-channel / scalar constants, or between two computed
 * tensors where the engine has the op), Flatten, Gemm, MatMul, Reshape,
 * Transpose (layout changes), GlobalAveragePool, ReduceMean (spatial),
 * MaxPool, AveragePool, Pad, Dropout, Identity, Constant, LpNormalization,
 * Abs, Concat / Slice (one axis) / Softmax / Exp of computed tensors,
 * Add / Sub / Mul / Div by constants that broadcast over a plain tensor
 * (e.g. a detector's prior boxes); shape arithmetic on constants (Shape,
 * Gather, Unsqueeze, Squeeze, Concat, Cast, Slice) is folded. Initializers
 * may live in external data files (paths relative to the model, inside
 * its folder). Initializers listed among the graph inputs (older PyTorch
 * exports) are fine.
 *
 * Layout: a 4-D ONNX tensor [N, C, H, W] is held as an NHWC engine tensor
 * [N, H, W, C] (filters OIHW -> OHWI); Flatten of such a tensor goes
 * through NhwcToNchw so features keep ONNX's (c, h, w) order. The model
 * takes NHWC input; ModelInfo records the ONNX input name and the
 * preprocessing (from our exporter's metadata_props, the caller, or
 * insightface's default (x - 127.5) / 127.5, RGB).
 */
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, resolve, basename, isAbsolute, sep } from 'node:path';
import { QuantFaceError, ioError } from '../errors.js';
import { Module } from '../nn/module.js';
import { Conv2d, Linear, PReLU, ReLU, Add, Flatten, L2Normalize, BatchNorm1d, BatchNorm2d, Dropout } from '../nn/layers.js';
import { Pad, Clamp, ChannelAffine, Multiply, Subtract, Reshape, GlobalAvgPool, MaxPool2d, AvgPool2d, NhwcToNchw, Abs, Concat, Slice, Exp, Softmax, ConstBinary } from '../nn/import-ops.js';
import { ImportedModel, validateModelInfo, type ModelInfo, type Preprocessing } from './model-info.js';
import { decodeOnnxModel, DT, type OnnxAttribute, type OnnxModel, type OnnxNode, type OnnxTensor } from './onnx-proto.js';
import { halfToFloat, asFormatError } from './tfjs.js';
import { foldConst, MAX_FOLD_ELEMENTS, type Const as FoldConst } from './onnx-fold.js';

export interface OnnxImportOptions {
  name?: string;
  /** Preprocessing to record (default: the file's quantface.info metadata, else RGB (x - 127.5) / 127.5). */
  preprocessing?: Preprocessing;
  /** Input [H, W] when the ONNX input has symbolic spatial dimensions. */
  inputSize?: [number, number];
  /** Output tensor (default: the graph's only output). */
  outputName?: string;
  /**
   * Several outputs (e.g. a detector's scores and boxes): each is flattened
   * (in ONNX order) and they are concatenated into one [N, sum] output, in
   * this order; info.outputs records each one's name, shape and offset.
   * '*' takes every graph output in the file's order.
   */
  outputNames?: string[] | '*';
  source?: string;
}

/** A constant: float values (float32 precision) or integers (int64 as numbers); see ./onnx-fold.ts. */
type Const = FoldConst;

/**
 * A computed value. Logical (ONNX) shape in `shape`; engine tensor name in
 * `ref`. layout 'nchw': a 4-D ONNX [N, C, H, W] tensor held as NHWC; 'plain':
 * the engine tensor has the ONNX shape and memory order.
 */
interface Value {
  ref: string;
  shape: number[];
  layout: 'nchw' | 'plain';
}

function unsupported(op: string, node: string, why?: string): QuantFaceError {
  return new QuantFaceError(
    'E_UNSUPPORTED_OP',
    `unsupported ONNX op ${op} at node '${node}'${why ? `: ${why}` : ''}. quantface imports face-recognition CNNs (Conv, BatchNormalization, ` +
      'PRelu/Relu, Add, Gemm/MatMul, pooling, Flatten/Reshape); simplify the model (e.g. onnxsim) or export it without that op.',
  );
}

function fmt(path: string, msg: string): QuantFaceError {
  return new QuantFaceError('E_FORMAT', `${path}: ${msg}`, { path });
}

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

function attrs(n: OnnxNode): Map<string, OnnxAttribute> {
  return new Map((n.attribute ?? []).map((a) => [a.name ?? '', a]));
}

function attrInt(a: Map<string, OnnxAttribute>, k: string, d: number): number {
  const v = a.get(k);
  return v && v.i !== undefined ? Number(v.i) : d;
}
/**
 * ONNX float attributes are float32: 1e-5 arrives as 9.99999974e-6. Return
 * the shortest decimal that rounds to the same float32 (what the exporter
 * most likely wrote), so re-imported models compute exactly as before.
 */
export function shortestF32(v: number): number {
  if (!Number.isFinite(v)) return v;
  const f = Math.fround(v);
  for (let p = 1; p <= 9; p++) {
    const c = Number(f.toPrecision(p));
    if (Math.fround(c) === f) return c;
  }
  return f;
}

function attrFloat(a: Map<string, OnnxAttribute>, k: string, d: number): number {
  const v = a.get(k);
  return v && v.f !== undefined ? shortestF32(Number(v.f)) : d;
}
function attrInts(a: Map<string, OnnxAttribute>, k: string): number[] | undefined {
  const v = a.get(k);
  return v && v.ints && v.ints.length ? v.ints.map(Number) : undefined;
}
function attrStr(a: Map<string, OnnxAttribute>, k: string, d: string): string {
  const v = a.get(k);
  return v && v.s ? Buffer.from(v.s).toString('utf8') : d;
}

class ExternalData {
  private cache = new Map<string, Buffer>();
  constructor(
    readonly dir: string,
    readonly path: string,
  ) {}

  async read(t: OnnxTensor, bytes: number): Promise<Uint8Array> {
    const kv = new Map((t.external_data ?? []).map((e) => [e.key ?? '', e.value ?? '']));
    const loc = kv.get('location');
    if (!loc) throw fmt(this.path, `initializer ${t.name}: external data without a location`);
    const full = resolve(this.dir, loc);
    if (isAbsolute(loc) || !full.startsWith(this.dir.endsWith(sep) ? this.dir : this.dir + sep))
      throw fmt(this.path, `initializer ${t.name}: external data path ${loc} points outside the model folder`);
    let buf = this.cache.get(full);
    if (!buf) {
      try {
        buf = await readFile(full);
      } catch (e) {
        throw ioError(e, full);
      }
      this.cache.set(full, buf);
    }
    const off = Number(kv.get('offset') ?? 0);
    const len = kv.has('length') ? Number(kv.get('length')) : bytes;
    if (!Number.isInteger(off) || off < 0 || !Number.isInteger(len) || len !== bytes || off + len > buf.length)
      throw fmt(this.path, `initializer ${t.name}: external data ${loc} [${off}, +${len}) does not hold the ${bytes} bytes its shape needs (file has ${buf.length})`);
    return buf.subarray(off, off + len);
  }
}

const ELEM_BYTES: Record<number, number> = { [DT.FLOAT]: 4, [DT.DOUBLE]: 8, [DT.INT64]: 8, [DT.INT32]: 4, [DT.FLOAT16]: 2, [DT.UINT8]: 1, [DT.INT8]: 1, [DT.BOOL]: 1 };

async function decodeTensor(t: OnnxTensor, ext: ExternalData, where: string): Promise<Const> {
  const shape = (t.dims ?? []).map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0) || shape.length > 8 || numel(shape) > 2 ** 31 - 1) throw fmt(ext.path, `${where}: bad dims ${JSON.stringify(shape)}`);
  const n = numel(shape);
  const dt = t.data_type ?? 0;
  const per = ELEM_BYTES[dt];
  if (!per) throw fmt(ext.path, `${where}: unsupported data type ${dt}`);
  const isFloat = dt === DT.FLOAT || dt === DT.DOUBLE || dt === DT.FLOAT16;
  // Check that the values are there before allocating anything of the claimed size.
  let raw: Uint8Array | undefined;
  let vals: number[] = [];
  if (t.data_location === 1) raw = await ext.read(t, n * per);
  else if (t.raw_data && t.raw_data.length) raw = t.raw_data;
  if (raw) {
    if (raw.length !== n * per) throw fmt(ext.path, `${where}: raw data holds ${raw.length} bytes, its shape needs ${n * per}`);
  } else {
    vals = (dt === DT.FLOAT ? t.float_data : dt === DT.DOUBLE ? t.double_data : dt === DT.INT64 ? t.int64_data : t.int32_data) ?? [];
    if (vals.length !== n) throw fmt(ext.path, `${where}: ${vals.length} values for dims ${JSON.stringify(shape)}`);
  }
  const out = isFloat ? new Float32Array(n) : new Float64Array(n);
  if (raw) {
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < n; i++)
      out[i] =
        dt === DT.FLOAT ? dv.getFloat32(4 * i, true)
        : dt === DT.DOUBLE ? dv.getFloat64(8 * i, true)
        : dt === DT.FLOAT16 ? halfToFloat(dv.getUint16(2 * i, true))
        : dt === DT.INT64 ? Number(dv.getBigInt64(8 * i, true))
        : dt === DT.INT32 ? dv.getInt32(4 * i, true)
        : dt === DT.INT8 ? dv.getInt8(i)
        : dv.getUint8(i);
  } else for (let i = 0; i < n; i++) out[i] = dt === DT.FLOAT16 ? halfToFloat(vals[i]!) : Number(vals[i]);
  return { kind: isFloat ? 'float' : 'int', shape, data: out };
}

/** Cast's target type: true float, false integer / bool, null unsupported (strings, complex). */
function castIsFloat(to: number): boolean | null {
  if (to === DT.FLOAT || to === DT.DOUBLE || to === DT.FLOAT16 || to === 16 /* BFLOAT16 */) return true;
  if ([DT.UINT8, DT.INT8, 4, 5, DT.INT32, DT.INT64, DT.BOOL, 12, 13].includes(to)) return false;
  return null;
}

function sanitize(name: string): string {
  return name.replace(/\./g, '_') || '_';
}

class OnnxConverter {
  readonly consts = new Map<string, Const>();
  readonly values = new Map<string, Value>();
  readonly consumers = new Map<string, number>();
  readonly model: ImportedModel;
  /** Opset of the default ONNX domain. */
  opset = 13;
  private used = new Set<string>();

  constructor(
    readonly path: string,
    info: ModelInfo,
    inputRef: string,
  ) {
    this.model = new ImportedModel(info, inputRef);
  }

  uniqueRef(name: string): string {
    let r = sanitize(name);
    if (this.used.has(r) || this.model.inputNames.includes(r)) {
      let k = 1;
      while (this.used.has(`${r}_${k}`)) k++;
      r = `${r}_${k}`;
    }
    this.used.add(r);
    return r;
  }

  emit(name: string, m: Module, inputs: Value[], layout: Value['layout'], logical?: number[]): Value {
    const ref = this.uniqueRef(name);
    const engineShapes = inputs.map((v) => engineShape(v));
    const { shape } = m.inferShape(...engineShapes);
    this.model.add(ref, m, inputs.map((v) => v.ref));
    const lg = logical ?? (layout === 'nchw' ? [shape[0]!, shape[3]!, shape[1]!, shape[2]!] : shape);
    return { ref, shape: lg, layout };
  }
}

function engineShape(v: Value): number[] {
  return v.layout === 'nchw' ? [v.shape[0]!, v.shape[2]!, v.shape[3]!, v.shape[1]!] : v.shape;
}

/** Per-channel values of a constant broadcast against x (ONNX numpy-style broadcasting), or null. */
function channelwise(c: Const, x: Value): Float32Array | null {
  const s = [...c.shape];
  while (s.length && s[0] === 1) s.shift();
  const vals = Float32Array.from(c.data);
  if (s.length === 0 || numel(s) === 1) return numel(c.shape) === 1 ? vals.subarray(0, 1) : null;
  if (c.shape.length > x.shape.length) return null;
  const C = x.shape[1]!;
  if (x.shape.length === 4) {
    // [C, 1, 1] (after leading ones) broadcasts over the channels of [N, C, H, W].
    if (s.length === 3 && s[0] === C && s[1] === 1 && s[2] === 1) return vals;
    return null;
  }
  if (x.shape.length === 2 && s.length === 1 && s[0] === C) return vals;
  return null;
}

/** Reads an ONNX model file (and its external data) and converts it. */
export async function importOnnxModel(modelPath: string, opts: OnnxImportOptions = {}): Promise<ImportedModel> {
  const path = resolve(modelPath);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw ioError(e, path);
  }
  let model: OnnxModel;
  try {
    model = decodeOnnxModel(bytes);
  } catch (e) {
    throw new QuantFaceError('E_FORMAT', `${path}: not a valid ONNX model (${(e as Error).message})`, { cause: e, path });
  }
  try {
    return await convertOnnx(model, path, opts, createHash('sha256').update(bytes));
  } catch (e) {
    throw asFormatError(e, path);
  }
}

/** Converts a decoded ModelProto (path: for messages and external data). */
export async function convertOnnx(model: OnnxModel, path: string, opts: OnnxImportOptions = {}, hash = createHash('sha256')): Promise<ImportedModel> {
  const g = model.graph;
  if (!g || !Array.isArray(g.node) || g.node.length === 0) throw fmt(path, 'the ONNX model has no graph nodes');
  const ext = new ExternalData(dirname(path), path);
  const consts = new Map<string, Const>();
  for (const [k, t] of (g.initializer ?? []).entries()) {
    if (!t.name) throw fmt(path, `initializer ${k} has no name`);
    consts.set(t.name, await decodeTensor(t, ext, `initializer ${t.name}`));
  }
  const inputs = (g.input ?? []).filter((i) => i.name && !consts.has(i.name));
  if (inputs.length !== 1) throw unsupported('(graph input)', inputs.map((i) => i.name).join(', ') || '(none)', `the model must have exactly one non-constant input, it has ${inputs.length}`);
  const input = inputs[0]!;
  const dims = input.type?.tensor_type?.shape?.dim ?? [];
  if (dims.length !== 4) throw new QuantFaceError('E_SHAPE', `${path}: input ${input.name} has ${dims.length} dimensions; an NCHW image input [N, C, H, W] is expected`);
  const dimVal = (d: (typeof dims)[number] | undefined): number => (d && d.dim_value !== undefined && Number(d.dim_value) > 0 ? Number(d.dim_value) : -1);
  const C = dimVal(dims[1]);
  const [H, W] = opts.inputSize ?? [dimVal(dims[2]), dimVal(dims[3])];
  if (!(C > 0 && H > 0 && W > 0)) throw new QuantFaceError('E_SHAPE', `${path}: input ${input.name} has symbolic channel or spatial sizes; pass inputSize [H, W]`);
  const outputs = (g.output ?? []).map((o) => o.name ?? '');
  const multi = opts.outputNames === '*' ? outputs : opts.outputNames;
  if (multi && (multi.length === 0 || multi.some((o) => typeof o !== 'string' || !o))) throw new QuantFaceError('E_ARG', `outputNames must name at least one output (the graph has ${outputs.join(', ')})`);
  const outName = multi ? multi.join('+') : (opts.outputName ?? (outputs.length === 1 ? outputs[0]! : ''));
  if (!outName) throw fmt(path, `cannot tell the output among ${outputs.length} graph outputs (${outputs.join(', ')}); pass outputName or outputNames`);
  // Our exporter records the model info; other files get the defaults.
  let recorded: ModelInfo | undefined;
  const prop = (model.metadata_props ?? []).find((p) => p.key === 'quantface.info');
  if (prop?.value) {
    try {
      recorded = validateModelInfo(JSON.parse(prop.value), `${path} metadata quantface.info`);
    } catch {
      recorded = undefined;
    }
  }
  const info: ModelInfo = {
    name: opts.name ?? recorded?.name ?? basename(path).replace(/\.onnx$/i, ''),
    format: 'onnx',
    inputShape: [H, W, C],
    outputDim: 0,
    normalizedOutput: false,
    preprocessing: opts.preprocessing ?? recorded?.preprocessing ?? { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } },
    inputName: input.name!,
    outputName: outName,
    sha256: hash.digest('hex'),
    ...(opts.source ?? recorded?.source ? { source: opts.source ?? recorded?.source } : {}),
  };
  const cv = new OnnxConverter(path, info, sanitize(input.name!));
  for (const [k, v] of consts) cv.consts.set(k, v);
  cv.values.set(input.name!, { ref: sanitize(input.name!), shape: [1, C, H, W], layout: 'nchw' });
  for (const n of g.node) for (const i of n.input ?? []) if (i) cv.consumers.set(i, (cv.consumers.get(i) ?? 0) + 1);
  const opset = (model.opset_import ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
  if (opset?.version !== undefined) cv.opset = Number(opset.version);
  for (const n of g.node) await lowerNode(cv, n, ext);
  if (multi) {
    const parts: Value[] = [];
    const recs: NonNullable<ModelInfo['outputs']> = [];
    let at = 0;
    for (const o of multi) {
      const v = cv.values.get(o);
      if (!v) throw unsupported('(output)', o, cv.consts.has(o) ? 'the output is a constant' : 'the output is never computed');
      const f = flatten(cv, `${o}/flat`, v);
      parts.push(f);
      recs.push({ name: o, shape: v.shape.slice(1), offset: at });
      at += f.shape[1]!;
    }
    const packed = parts.length === 1 ? parts[0]! : cv.emit(outName, new Concat(1, parts.length), parts, 'plain', [1, at]);
    cv.values.set(outName, packed);
    info.outputs = recs;
  }
  const out = cv.values.get(outName);
  if (!out) throw unsupported('(output)', outName, cv.consts.has(outName) ? 'the output is a constant' : 'the output is never computed');
  if (out.shape.length !== 2) throw new QuantFaceError('E_SHAPE', `${path}: the output has shape ${JSON.stringify(out.shape)}; an embedding model must output [N, D]`);
  if (out.ref === cv.model.inputNames[0]) throw unsupported('(output)', outName, 'the output is the input');
  cv.model.output(out.ref);
  info.outputDim = out.shape[1]!;
  info.normalizedOutput = cv.model.getChild(out.ref) instanceof L2Normalize;
  if (recorded) cv.model.recorded = recorded;
  cv.model.eval();
  return cv.model;
}

async function lowerNode(cv: OnnxConverter, n: OnnxNode, ext: ExternalData): Promise<void> {
  const op = n.op_type ?? '';
  const outs = n.output ?? [];
  const name = n.name || outs[0] || op;
  const ins = n.input ?? [];
  const a = attrs(n);
  if (n.domain && n.domain !== 'ai.onnx' && n.domain !== '') throw unsupported(`${n.domain}.${op}`, name, 'custom domain');
  const val = (i: number): Value => {
    const nm = ins[i];
    if (!nm) throw unsupported(op, name, `input ${i} is missing`);
    const v = cv.values.get(nm);
    if (v) return v;
    if (cv.consts.has(nm)) throw unsupported(op, name, `input ${nm} is a constant where a computed tensor is expected`);
    throw fmt(cv.path, `node ${name} reads ${nm}, which is not computed before it`);
  };
  const cst = (i: number): Const | undefined => (ins[i] ? cv.consts.get(ins[i]!) : undefined);
  const setOut = (v: Value): void => {
    cv.values.set(outs[0]!, v);
    for (const extra of outs.slice(1)) if (extra && cv.consumers.get(extra)) throw unsupported(op, name, `its output ${extra} is used (only the first output is supported)`);
  };
  const setConst = (c: Const): void => {
    cv.consts.set(outs[0]!, c);
  };
  const allConst = ins.filter((x) => x).every((x) => cv.consts.has(x!));
  if (outs.length === 0 || !outs[0]) throw fmt(cv.path, `node ${name} has no output`);

  // ---- constants and shape arithmetic
  if (op === 'Constant') {
    const t = a.get('value')?.t;
    if (t) return setConst(await decodeTensor(t, ext, `node ${name}`));
    const f = a.get('value_float');
    if (f) return setConst({ kind: 'float', shape: [], data: Float32Array.of(f.f ?? 0) });
    const i = a.get('value_int');
    if (i) return setConst({ kind: 'int', shape: [], data: Float64Array.of(Number(i.i ?? 0)) });
    const is = a.get('value_ints');
    if (is) return setConst({ kind: 'int', shape: [is.ints?.length ?? 0], data: Float64Array.from((is.ints ?? []).map(Number)) });
    const fs = a.get('value_floats');
    if (fs) return setConst({ kind: 'float', shape: [fs.floats?.length ?? 0], data: Float32Array.from(fs.floats ?? []) });
    throw unsupported(op, name, 'constant kind');
  }
  if (op === 'Shape') {
    // the static shape of a computed tensor or of a constant (opset 15 start / end slice it)
    const c = cst(0);
    const shape = c ? c.shape : val(0).shape;
    const r = shape.length;
    const clampDim = (d: number): number => Math.min(Math.max(d < 0 ? d + r : d, 0), r);
    const sub = shape.slice(clampDim(attrInt(a, 'start', 0)), a.has('end') ? clampDim(attrInt(a, 'end', r)) : r);
    return setConst({ kind: 'int', shape: [sub.length], data: Float64Array.from(sub) });
  }
  if (op === 'Size' && ins[0]) {
    const c = cst(0);
    return setConst({ kind: 'int', shape: [], data: Float64Array.of(numel(c ? c.shape : val(0).shape)) });
  }
  if (op === 'ConstantOfShape' && allConst) {
    const s = cst(0);
    const dims = s ? [...s.data] : [];
    if (dims.some((d) => !Number.isInteger(d) || d < 0) || numel(dims) > MAX_FOLD_ELEMENTS) throw unsupported(op, name, `shape ${JSON.stringify(dims)}`);
    const t = a.get('value')?.t;
    const v = t ? await decodeTensor(t, ext, `node ${name} value`) : { kind: 'float' as const, shape: [1], data: Float32Array.of(0) };
    const data = v.kind === 'float' ? new Float32Array(numel(dims)) : new Float64Array(numel(dims));
    data.fill(v.data[0] ?? 0);
    return setConst({ kind: v.kind, shape: dims, data });
  }
  if (allConst && ins.length > 0) {
    // Every node whose inputs are all constants is evaluated here (./onnx-fold.ts), so exports made without
    // constant folding import like folded ones.
    const folded = foldConst(op, ins.map((x) => (x ? cv.consts.get(x) : undefined)), a, castIsFloat);
    if (folded) return setConst(folded);
    throw unsupported(op, name, 'constant folding of this op (or of these shapes / attributes) is not supported');
  }

  switch (op) {
    case 'Identity':
      return setOut(val(0));
    case 'Dropout': {
      const v = val(0);
      const ratio = cst(1) ? cst(1)!.data[0]! : attrFloat(a, 'ratio', 0.5);
      return setOut(cv.emit(name, new Dropout(Math.min(Math.max(ratio, 0), 0.999)), [v], v.layout, v.shape));
    }
    case 'Conv': {
      const x = val(0);
      if (x.layout !== 'nchw') throw unsupported(op, name, 'input is not an NCHW image tensor');
      const w = cst(1);
      if (!w || w.kind !== 'float' || w.shape.length !== 4) throw unsupported(op, name, 'the weight must be a 4-D float constant (2-D convolution)');
      const [O, Ig, kh, kw] = w.shape as [number, number, number, number];
      const group = attrInt(a, 'group', 1);
      const cin = x.shape[1]!;
      if (Ig * group !== cin || O % group) throw unsupported(op, name, `weight ${JSON.stringify(w.shape)} with group ${group} does not match ${cin} input channels`);
      const ks = attrInts(a, 'kernel_shape');
      if (ks && (ks[0] !== kh || ks[1] !== kw)) throw unsupported(op, name, 'kernel_shape differs from the weight');
      const [sh, sw] = attrInts(a, 'strides') ?? [1, 1];
      const [dh, dw] = attrInts(a, 'dilations') ?? [1, 1];
      const [t, l, b, r] = padsOf(a, x.shape[2]!, x.shape[3]!, kh, kw, sh!, sw!, dh!, dw!, op, name);
      const bias = cst(2);
      if (ins[2] && !bias) throw unsupported(op, name, 'the bias must be a constant');
      const conv = new Conv2d(cin, O, [kh, kw], { stride: [sh!, sw!], padding: [t, l, b, r], dilation: [dh!, dw!], groups: group, bias: !!bias, init: false });
      const wd = conv.weight.data.data;
      for (let o = 0; o < O; o++) for (let i = 0; i < Ig; i++) for (let y = 0; y < kh; y++) for (let xx = 0; xx < kw; xx++) wd[((o * kh + y) * kw + xx) * Ig + i] = w.data[((o * Ig + i) * kh + y) * kw + xx]!;
      if (bias) {
        if (bias.data.length !== O) throw unsupported(op, name, `bias has ${bias.data.length} values for ${O} channels`);
        conv.bias!.data.data.set(bias.data);
      }
      return setOut(cv.emit(name, conv, [x], 'nchw'));
    }
    case 'BatchNormalization': {
      const x = val(0);
      if (attrInt(a, 'training_mode', 0)) throw unsupported(op, name, 'training_mode = 1');
      const C = x.shape[1]!;
      const ps = [1, 2, 3, 4].map((i) => cst(i));
      if (ps.some((p) => !p || p.data.length !== C)) throw unsupported(op, name, `scale, B, mean and var must be constants of ${C} values`);
      if (!((x.layout === 'nchw' && x.shape.length === 4) || (x.layout === 'plain' && x.shape.length === 2))) throw unsupported(op, name, `input of shape ${JSON.stringify(x.shape)}`);
      const bn = x.shape.length === 4 ? new BatchNorm2d(C, { eps: attrFloat(a, 'epsilon', 1e-5) }) : new BatchNorm1d(C, { eps: attrFloat(a, 'epsilon', 1e-5) });
      bn.weight!.data.data.set(ps[0]!.data);
      bn.bias!.data.data.set(ps[1]!.data);
      bn.runningMean.data.set(ps[2]!.data);
      bn.runningVar.data.set(ps[3]!.data);
      bn.eval();
      return setOut(cv.emit(name, bn, [x], x.layout, x.shape));
    }
    case 'PRelu': {
      const x = val(0);
      const s = cst(1);
      if (!s) throw unsupported(op, name, 'the slope must be a constant');
      const slope = channelwise(s, x);
      if (!slope) throw unsupported(op, name, `slope of shape ${JSON.stringify(s.shape)} is not per channel for input ${JSON.stringify(x.shape)}`);
      const p = new PReLU(slope.length);
      p.weight.data.data.set(slope);
      return setOut(cv.emit(name, p, [x], x.layout, x.shape));
    }
    case 'Relu': {
      const x = val(0);
      return setOut(cv.emit(name, new ReLU(), [x], x.layout, x.shape));
    }
    case 'LeakyRelu': {
      const x = val(0);
      const p = new PReLU(1);
      p.weight.data.data[0] = attrFloat(a, 'alpha', 0.01);
      p.weight.requiresGrad = false;
      return setOut(cv.emit(name, p, [x], x.layout, x.shape));
    }
    case 'Clip': {
      const x = val(0);
      let lo = attrFloat(a, 'min', -Infinity);
      let hi = attrFloat(a, 'max', Infinity);
      if (ins[1]) {
        const c = cst(1);
        if (!c || c.data.length !== 1) throw unsupported(op, name, 'min must be a scalar constant');
        lo = c.data[0]!;
      }
      if (ins[2]) {
        const c = cst(2);
        if (!c || c.data.length !== 1) throw unsupported(op, name, 'max must be a scalar constant');
        hi = c.data[0]!;
      }
      const m = lo === 0 && hi === Infinity ? new ReLU() : new Clamp(lo, hi);
      return setOut(cv.emit(name, m, [x], x.layout, x.shape));
    }
    case 'Abs': {
      const x = val(0);
      return setOut(cv.emit(name, new Abs(), [x], x.layout, x.shape));
    }
    case 'Add':
    case 'Sub':
    case 'Mul':
    case 'Div': {
      const c0 = cst(0);
      const c1 = cst(1);
      if (!c0 && !c1) {
        const x = val(0);
        const y = val(1);
        if (x.layout !== y.layout || x.shape.join() !== y.shape.join()) throw unsupported(op, name, `operands of shapes ${JSON.stringify(x.shape)} and ${JSON.stringify(y.shape)} (broadcasting between computed tensors is not supported)`);
        const m = op === 'Add' ? new Add() : op === 'Sub' ? new Subtract() : op === 'Mul' ? new Multiply() : null;
        if (!m) throw unsupported(op, name, 'division of two computed tensors');
        return setOut(cv.emit(name, m, [x, y], x.layout, x.shape));
      }
      const constFirst = !!c0;
      const c = (c0 ?? c1)!;
      const x = val(constFirst ? 1 : 0);
      // A constant operand must not broadcast x to a larger shape.
      const cw = channelwise(c, x);
      if (!cw || (constFirst && op === 'Div')) {
        // a constant that is not one value per channel (e.g. prior boxes): broadcast over a plain tensor
        const fits = x.layout === 'plain' && c.shape.length <= x.shape.length && c.shape.every((d, i) => d === 1 || d === x.shape[x.shape.length - c.shape.length + i]);
        if (!fits || (c.shape.length === x.shape.length && c.shape[0] !== 1))
          throw unsupported(op, name, `constant of shape ${JSON.stringify(c.shape)} is not scalar or per channel for ${JSON.stringify(x.shape)}${x.layout === 'nchw' ? ' (an image tensor)' : ''}`);
        const kind = op === 'Add' ? 'add' : op === 'Mul' ? 'mul' : op === 'Sub' ? (constFirst ? 'rsub' : 'sub') : constFirst ? 'rdiv' : 'div';
        return setOut(cv.emit(name, new ConstBinary(kind, Float32Array.from(c.data), c.shape), [x], 'plain', x.shape));
      }
      const chans = cw.length;
      const train = chans > 1;
      let m: ChannelAffine;
      if (op === 'Add') m = new ChannelAffine(chans, { bias: cw, trainBias: train });
      else if (op === 'Mul') m = new ChannelAffine(chans, { scale: cw, trainScale: train });
      else if (op === 'Sub')
        m = constFirst ? new ChannelAffine(chans, { scale: new Float32Array(chans).fill(-1), bias: cw, trainScale: false, trainBias: train }) : new ChannelAffine(chans, { bias: cw.map((v) => -v), trainBias: train });
      else {
        m = new ChannelAffine(chans, { scale: cw.map((v) => 1 / v), trainScale: train });
      }
      return setOut(cv.emit(name, m, [x], x.layout, x.shape));
    }
    case 'Concat': {
      if (ins.some((i) => i && cv.consts.has(i))) throw unsupported(op, name, 'a mix of constants and computed tensors');
      const xs = ins.map((_, i) => val(i));
      const layout = xs[0]!.layout;
      if (xs.some((x) => x.layout !== layout)) throw unsupported(op, name, 'inputs of different layouts');
      const r = xs[0]!.shape.length;
      const ax = attrInt(a, 'axis', 1);
      const axN = ax < 0 ? ax + r : ax;
      if (axN < 1 || axN >= r) throw unsupported(op, name, `axis ${ax} of rank-${r} tensors (the batch axis is not supported)`);
      const engineAxis = layout === 'nchw' ? [0, 3, 1, 2][axN]! : axN;
      const shape = [...xs[0]!.shape];
      shape[axN] = xs.reduce((p, x) => p + x.shape[axN]!, 0);
      if (xs.length === 1) return setOut(xs[0]!);
      return setOut(cv.emit(name, new Concat(engineAxis, xs.length), xs, layout, shape));
    }
    case 'Slice': {
      const x = val(0);
      const starts = attrInts(a, 'starts') ?? (cst(1) ? [...cst(1)!.data] : undefined);
      const ends = attrInts(a, 'ends') ?? (cst(2) ? [...cst(2)!.data] : undefined);
      const axes = attrInts(a, 'axes') ?? (ins[3] ? (cst(3) ? [...cst(3)!.data] : undefined) : starts?.map((_, i) => i));
      const steps = ins[4] ? (cst(4) ? [...cst(4)!.data] : undefined) : [1];
      if (!starts || !ends || !axes || !steps || starts.length !== 1 || ends.length !== 1 || axes.length !== 1 || steps.some((s) => s !== 1))
        throw unsupported(op, name, 'only constant starts / ends of one axis with step 1');
      const r = x.shape.length;
      const axN = axes[0]! < 0 ? axes[0]! + r : axes[0]!;
      if (axN < 1 || axN >= r) throw unsupported(op, name, `axis ${axes[0]} (the batch axis is not supported)`);
      const n = x.shape[axN]!;
      const c = (v: number): number => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
      const lo = c(starts[0]!);
      const hi = Math.max(lo, c(ends[0]!));
      if (hi === lo) throw unsupported(op, name, 'an empty slice');
      if (lo === 0 && hi === n) return setOut(x);
      const shape = [...x.shape];
      shape[axN] = hi - lo;
      const engineAxis = x.layout === 'nchw' ? [0, 3, 1, 2][axN]! : axN;
      return setOut(cv.emit(name, new Slice(engineAxis, lo, hi), [x], x.layout, shape));
    }
    case 'Exp': {
      const x = val(0);
      return setOut(cv.emit(name, new Exp(), [x], x.layout, x.shape));
    }
    case 'Softmax': {
      const x = val(0);
      const r = x.shape.length;
      const ax0 = attrInt(a, 'axis', cv.opset >= 13 ? -1 : 1);
      const axN = ax0 < 0 ? ax0 + r : ax0;
      // before opset 13 Softmax flattens the axes from `axis` on: the same as a per-axis softmax only for the last axis
      if (cv.opset < 13 && axN !== r - 1) throw unsupported(op, name, `opset ${cv.opset} softmax over axes ${axN}.. of a rank-${r} tensor (only the last axis)`);
      if (axN < 1 || axN >= r) throw unsupported(op, name, `axis ${ax0}`);
      const engineAxis = x.layout === 'nchw' ? [0, 3, 1, 2][axN]! : axN;
      return setOut(cv.emit(name, new Softmax(engineAxis), [x], x.layout, x.shape));
    }
    case 'Flatten': {
      const x = val(0);
      const axis = attrInt(a, 'axis', 1);
      if (axis !== 1) throw unsupported(op, name, `axis ${axis} (only 1)`);
      return setOut(flatten(cv, name, x));
    }
    case 'Reshape': {
      const x = val(0);
      const s = cst(1);
      if (!s) throw unsupported(op, name, 'the target shape must be a constant');
      const target = [...s.data].map((d, i) => (d === 0 && !attrInt(a, 'allowzero', 0) ? x.shape[i]! : d));
      const rest = numel(x.shape.slice(1));
      const tail = target.slice(1);
      const known = tail.reduce((p, d) => (d === -1 ? p : p * d), 1);
      const okBatch = target[0] === -1 || target[0] === x.shape[0] || (tail.includes(-1) ? false : known === rest);
      if (!okBatch || tail.filter((d) => d === -1).length > 1 || (tail.includes(-1) ? rest % known !== 0 : known !== rest))
        throw unsupported(op, name, `reshape of ${JSON.stringify(x.shape)} to ${JSON.stringify(target)} does not keep the batch dimension`);
      const outTail = tail.map((d) => (d === -1 ? rest / known : d));
      if (outTail.length === 1) return setOut(flatten(cv, name, x));
      if (x.layout === 'nchw') {
        if (outTail.length === 3 && outTail.join() === x.shape.slice(1).join()) return setOut(x);
        throw unsupported(op, name, `reshape of an image tensor ${JSON.stringify(x.shape)} to ${JSON.stringify(target)}`);
      }
      return setOut(cv.emit(name, new Reshape(outTail), [x], 'plain', [x.shape[0]!, ...outTail]));
    }
    case 'Transpose': {
      const x = val(0);
      const perm = attrInts(a, 'perm') ?? [...x.shape.keys()].reverse();
      const p = perm.join();
      if (x.shape.length === 4 && x.layout === 'nchw' && p === '0,2,3,1') return setOut({ ref: x.ref, shape: [x.shape[0]!, x.shape[2]!, x.shape[3]!, x.shape[1]!], layout: 'plain' });
      if (x.shape.length === 4 && x.layout === 'plain' && p === '0,3,1,2') return setOut({ ref: x.ref, shape: [x.shape[0]!, x.shape[3]!, x.shape[1]!, x.shape[2]!], layout: 'nchw' });
      if (perm.every((d, i) => d === i)) return setOut(x);
      throw unsupported(op, name, `perm [${p}] of a ${x.layout} tensor ${JSON.stringify(x.shape)}`);
    }
    case 'GlobalAveragePool':
    case 'ReduceMean': {
      const x = val(0);
      if (x.layout !== 'nchw') throw unsupported(op, name, 'input is not an NCHW image tensor');
      let keep = true;
      if (op === 'ReduceMean') {
        const axes = (attrInts(a, 'axes') ?? (cst(1) ? [...cst(1)!.data] : [])).map((d) => (d < 0 ? d + 4 : d)).sort();
        if (axes.join() !== '2,3') throw unsupported(op, name, `axes [${axes.join(', ')}] (only the spatial mean [2, 3])`);
        keep = attrInt(a, 'keepdims', 1) === 1;
      }
      const m = new GlobalAvgPool(keep);
      return setOut(keep ? cv.emit(name, m, [x], 'nchw') : cv.emit(name, m, [x], 'plain'));
    }
    case 'MaxPool':
    case 'AveragePool': {
      const x = val(0);
      if (x.layout !== 'nchw') throw unsupported(op, name, 'input is not an NCHW image tensor');
      if (attrInt(a, 'ceil_mode', 0)) throw unsupported(op, name, 'ceil_mode = 1');
      if ((attrInts(a, 'dilations') ?? [1, 1]).some((d) => d !== 1)) throw unsupported(op, name, 'dilations');
      if (outs[1] && cv.consumers.get(outs[1])) throw unsupported(op, name, 'the Indices output');
      const ks = attrInts(a, 'kernel_shape');
      if (!ks || ks.length !== 2) throw unsupported(op, name, 'kernel_shape must have 2 sizes');
      const st = attrInts(a, 'strides') ?? [1, 1];
      const [t, l, b, r] = padsOf(a, x.shape[2]!, x.shape[3]!, ks[0]!, ks[1]!, st[0]!, st[1]!, 1, 1, op, name);
      if (op === 'AveragePool' && attrInt(a, 'count_include_pad', 0) && t + l + b + r > 0) throw unsupported(op, name, 'count_include_pad = 1 with padding');
      const cfg = { kernel: [ks[0]!, ks[1]!] as [number, number], stride: [st[0]!, st[1]!] as [number, number], padding: [t, l, b, r] as [number, number, number, number] };
      return setOut(cv.emit(name, op === 'MaxPool' ? new MaxPool2d(cfg) : new AvgPool2d(cfg), [x], 'nchw'));
    }
    case 'Pad': {
      const x = val(0);
      if (attrStr(a, 'mode', 'constant') !== 'constant') throw unsupported(op, name, `mode ${attrStr(a, 'mode', '')}`);
      const pads = cst(1) ? [...cst(1)!.data] : attrInts(a, 'pads');
      const value = cst(2) ? cst(2)!.data[0]! : attrFloat(a, 'value', 0);
      if (!pads || pads.length !== 8 || x.layout !== 'nchw' || pads[0] || pads[4] || pads.some((p) => p < 0)) throw unsupported(op, name, 'only non-negative constant padding of H, W and C of an NCHW tensor');
      return setOut(cv.emit(name, new Pad({ channelsBefore: pads[1], top: pads[2], left: pads[3], channelsAfter: pads[5], bottom: pads[6], right: pads[7], value }), [x], 'nchw'));
    }
    case 'Gemm':
    case 'MatMul': {
      const x = val(0);
      if (x.layout !== 'plain' || x.shape.length !== 2) throw unsupported(op, name, `input of shape ${JSON.stringify(x.shape)} (only [N, K])`);
      const B = cst(1);
      if (!B || B.kind !== 'float' || B.shape.length !== 2) throw unsupported(op, name, 'B must be a 2-D float constant');
      if (op === 'Gemm' && attrInt(a, 'transA', 0)) throw unsupported(op, name, 'transA = 1');
      const transB = op === 'Gemm' && attrInt(a, 'transB', 0) === 1;
      const alpha = op === 'Gemm' ? attrFloat(a, 'alpha', 1) : 1;
      const beta = op === 'Gemm' ? attrFloat(a, 'beta', 1) : 1;
      const [K, M] = transB ? [B.shape[1]!, B.shape[0]!] : [B.shape[0]!, B.shape[1]!];
      if (x.shape[1] !== K) throw unsupported(op, name, `input has ${x.shape[1]} features, B expects ${K}`);
      const Cb = op === 'Gemm' ? cst(2) : undefined;
      if (op === 'Gemm' && ins[2] && !Cb) throw unsupported(op, name, 'C must be a constant');
      if (Cb && Cb.data.length !== M && Cb.data.length !== 1) throw unsupported(op, name, `C of shape ${JSON.stringify(Cb.shape)}`);
      const lin = new Linear(K, M, { bias: !!Cb });
      const wd = lin.weight.data.data;
      for (let o = 0; o < M; o++) for (let k = 0; k < K; k++) wd[o * K + k] = alpha * (transB ? B.data[o * K + k]! : B.data[k * M + o]!);
      if (Cb) for (let o = 0; o < M; o++) lin.bias!.data.data[o] = beta * Cb.data[Cb.data.length === 1 ? 0 : o]!;
      return setOut(cv.emit(name, lin, [x], 'plain'));
    }
    case 'LpNormalization': {
      const x = val(0);
      const axis = attrInt(a, 'axis', -1);
      if (attrInt(a, 'p', 2) !== 2 || x.shape.length !== 2 || !(axis === 1 || axis === -1)) throw unsupported(op, name, 'only p = 2 over the features of [N, D]');
      return setOut(cv.emit(name, new L2Normalize(), [x], 'plain'));
    }
    default:
      throw unsupported(op, name);
  }
}

/** Flatten of a value to [N, rest] in ONNX order. */
function flatten(cv: OnnxConverter, name: string, x: Value): Value {
  const rest = numel(x.shape.slice(1));
  if (x.layout === 'nchw' && x.shape[2]! * x.shape[3]! !== 1) {
    const t = cv.emit(`${name}/nchw`, new NhwcToNchw(), [x], 'plain', x.shape);
    return cv.emit(name, new Flatten(), [t], 'plain', [x.shape[0]!, rest]);
  }
  if (x.shape.length === 2 && x.layout === 'plain') return x;
  return cv.emit(name, new Flatten(), [x], 'plain', [x.shape[0]!, rest]);
}

function padsOf(a: Map<string, OnnxAttribute>, H: number, W: number, kh: number, kw: number, sh: number, sw: number, dh: number, dw: number, op: string, name: string): [number, number, number, number] {
  const auto = attrStr(a, 'auto_pad', 'NOTSET');
  if (auto === 'NOTSET') {
    const p = attrInts(a, 'pads') ?? [0, 0, 0, 0];
    if (p.length !== 4 || p.some((v) => v < 0)) throw unsupported(op, name, `pads ${JSON.stringify(p)}`);
    return [p[0]!, p[1]!, p[2]!, p[3]!];
  }
  if (auto === 'VALID') return [0, 0, 0, 0];
  if (auto === 'SAME_UPPER' || auto === 'SAME_LOWER') {
    const same = (inp: number, k: number, s: number, d: number): [number, number] => {
      const total = Math.max((Math.ceil(inp / s) - 1) * s + (k - 1) * d + 1 - inp, 0);
      const small = Math.floor(total / 2);
      return auto === 'SAME_UPPER' ? [small, total - small] : [total - small, small];
    };
    const [t, b] = same(H, kh, sh, dh);
    const [l, r] = same(W, kw, sw, dw);
    return [t, l, b, r];
  }
  throw unsupported(op, name, `auto_pad ${auto}`);
}
