/**
 * The quantface model file (.qfm): one file with the module graph, float or
 * packed low-bit weights, per-channel scales and zero points, frozen
 * activation ranges, preprocessing and provenance.
 *
 * Layout (little-endian):
 *
 *   offset  size  field
 *   0       8     magic 89 51 46 4D 0D 0A 1A 0A  ("\x89QFM\r\n\x1a\n": catches text-mode and truncating transfers)
 *   8       2     major version (1; readers refuse other majors)
 *   10      2     minor version (0; readers accept any minor of their major)
 *   12      4     header size (128)
 *   16      8     metadata size M (UTF-8 JSON)
 *   24      8     data offset D (multiple of 64)
 *   32      8     data size N
 *   40      4     checksum algorithm (1 = SHA-256)
 *   44      4     reserved (0)
 *   48      32    SHA-256 of the whole file with these 32 bytes zeroed
 *   80      48    reserved (0)
 *   128     M     metadata JSON
 *   ...           zero padding to D
 *   D       N     data: tensor blobs, each at an offset (relative to D) that is a multiple of 8
 *   file size = D + N exactly
 *
 * Metadata JSON: { format: 'quantface-model', info (ModelInfo, optional),
 * provenance, training, graph (lib/io/module-spec.ts), tensors: [...],
 * activations: [...] (a summary of the frozen ranges, which are also
 * stored as the ActFakeQuant buffers) }.
 *
 * Tensor storage:
 * - 'f32': float32 values (row-major) at `offset`, `bytes` = 4 x numel.
 * - 'packed': per-output-channel quantized weights. Integers
 *   q in [quantMin, quantMax] are stored as u = q - quantMin in a
 *   little-endian bit stream of `bits` bits per value (value i at bit
 *   i * bits, binding.packBits' format) at `offset`; one float32 scale per
 *   channel at `scaleOffset`; zero points, also as zp - quantMin in `bits`
 *   bits, at `zeroPointOffset`. Channel of element i = floor(i / inner).
 *   The float value is (q - zp) * scale (float32), what fake quantization
 *   computes, so a QAT model loads exactly as it was trained.
 *
 * Loading builds the modules and wraps float32 tensors as typed-array views
 * over the file's buffer (no copy, no per-weight JS objects); packed weights
 * are unpacked once into their float parameter. Every problem with a file is
 * a QuantFaceError: E_IO (cannot read / write), E_FORMAT (truncated,
 * corrupted, wrong magic, unknown version, inconsistent metadata).
 *
 * Saving is atomic: the file is written to a temporary file in the same
 * folder, flushed, then renamed over the target; on any failure the
 * temporary file is removed and an existing target is left untouched.
 */
import { open, rename, unlink, readFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { dirname, basename, join, resolve } from 'node:path';
import { QuantFaceError, ioError } from '../errors.js';
import { Tensor, type FTensor } from '../tensor.js';
import { binding } from '../binding.js';
import { Module, Parameter } from '../nn/module.js';
import { Conv2d, Linear } from '../nn/layers.js';
import { Graph } from '../nn/containers.js';
import { WeightFakeQuant, ActFakeQuant } from '../quant/fake-quant.js';
import { chooseQParams, roundHalfEven, type QParams } from '../quant/qparams.js';
import { describeModule, buildModule, type ModuleSpec, type Json } from './module-spec.js';
import { ImportedModel, validateModelInfo, type ModelInfo } from './model-info.js';

export const QFM_MAGIC = Uint8Array.from([0x89, 0x51, 0x46, 0x4d, 0x0d, 0x0a, 0x1a, 0x0a]);
export const QFM_VERSION = { major: 1, minor: 0 } as const;
const HEADER = 128;
const CK_OFF = 48;
const DATA_ALIGN = 64;
const BLOB_ALIGN = 8;
const MAX_META = 256 * 1024 * 1024;

// ====================================================================== bit packing
/** TS bit packer (binding.packBits' format): value i at bit i * bits, little-endian. */
export function packBitsTs(q: Uint8Array, bits: number, out: Uint8Array): void {
  out.fill(0);
  if (bits === 8) {
    out.set(q);
    return;
  }
  const lim = 1 << bits;
  let bit = 0;
  for (let i = 0; i < q.length; i++, bit += bits) {
    const v = q[i]!;
    if (v >= lim) throw new RangeError(`packBits: q[${i}] = ${v} does not fit in ${bits} bits`);
    const byte = bit >>> 3;
    const sh = bit & 7;
    out[byte] |= (v << sh) & 0xff;
    if (sh + bits > 8) out[byte + 1] |= v >>> (8 - sh);
  }
}

/** Inverse of packBitsTs: out.length values. */
export function unpackBitsTs(packed: Uint8Array, bits: number, out: Uint8Array): void {
  if (bits === 8) {
    out.set(packed.subarray(0, out.length));
    return;
  }
  const mask = (1 << bits) - 1;
  let bit = 0;
  for (let i = 0; i < out.length; i++, bit += bits) {
    const byte = bit >>> 3;
    const sh = bit & 7;
    let v = packed[byte]! >>> sh;
    if (sh + bits > 8) v |= packed[byte + 1]! << (8 - sh);
    out[i] = v & mask;
  }
}

interface PackApi {
  packBits?: (o: { q: Uint8Array; bits: number; out: Uint8Array }) => void;
  unpackBits?: (o: { packed: Uint8Array; bits: number; out: Uint8Array }) => void;
}
const packApi = binding as unknown as PackApi;
const nativePack = typeof packApi.packBits === 'function' && typeof packApi.unpackBits === 'function';

/** Which packer runs: 'native' (binding.packBits / unpackBits) or 'js'. */
export function packerSource(): 'native' | 'js' {
  return nativePack ? 'native' : 'js';
}

export function packBits(q: Uint8Array, bits: number): Uint8Array {
  const out = new Uint8Array(Math.ceil((q.length * bits) / 8));
  if (nativePack) packApi.packBits!({ q, bits, out });
  else packBitsTs(q, bits, out);
  return out;
}

export function unpackBits(packed: Uint8Array, bits: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  if (nativePack) packApi.unpackBits!({ packed, bits, out });
  else unpackBitsTs(packed, bits, out);
  return out;
}

// ====================================================================== metadata types
export interface Provenance {
  /** SHA-256 of the teacher's files (ModelInfo.sha256 of the imported teacher). */
  teacherSha256?: string;
  /** Weight / activation bit widths the model was quantized with (absent: float). */
  weightBits?: number;
  actBits?: number;
  /** Data used (e.g. 'synthetic-faces: 231 images', or an object with details). */
  data?: Json;
  /** ISO time of saving (filled by saveQfm). */
  createdAt?: string;
  /** quantface version that wrote the file (filled by saveQfm). */
  tool?: string;
  /** Anything else worth recording. */
  notes?: Json;
}

export interface PackedTensorEntry {
  name: string;
  kind: 'param';
  shape: number[];
  requiresGrad: boolean;
  storage: 'packed';
  bits: number;
  quantMin: number;
  quantMax: number;
  channels: number;
  inner: number;
  offset: number;
  bytes: number;
  scaleOffset: number;
  zeroPointOffset: number;
  zeroPointBytes: number;
}

export interface FloatTensorEntry {
  name: string;
  kind: 'param' | 'buffer';
  shape: number[];
  requiresGrad?: boolean;
  storage: 'f32';
  offset: number;
  bytes: number;
}

export type TensorEntry = PackedTensorEntry | FloatTensorEntry;

export interface ActivationRange {
  /** Dotted name of the ActFakeQuant module. */
  name: string;
  bits: number;
  min: number;
  max: number;
  frozen: boolean;
  symmetric: boolean;
}

export interface QfmMetadata {
  format: 'quantface-model';
  info?: ModelInfo;
  provenance: Provenance;
  training: boolean;
  graph: ModuleSpec;
  tensors: TensorEntry[];
  activations: ActivationRange[];
}

// ====================================================================== save
export interface SaveQfmOptions {
  /**
   * Weight storage of Conv2d / Linear weights:
   * - 'auto' (default): packed at its quantizer's width where the layer has
   *   an enabled WeightFakeQuant (a QAT model), float32 elsewhere;
   * - a number 2..8: every Conv2d / Linear weight packed per output channel
   *   at that width (the layer's quantizer decides symmetric or not; else
   *   asymmetric unsigned, QuantFace's scheme);
   * - 'float': everything float32 (a checkpoint of the master weights).
   */
  weightBits?: 'auto' | 'float' | number;
  /** Recorded model info (default: model.info when the model has one). */
  info?: ModelInfo;
  provenance?: Provenance;
  /** Test hook: called before each chunk is written with the bytes written so far; throwing aborts the save. */
  onWrite?: (written: number, total: number) => void;
}

interface Blob {
  data: Uint8Array;
  offset: number;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function bytesOf(a: Float32Array | Uint8Array | Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function quantizeWeight(w: FTensor, qp: QParams, channels: number, inner: number): Uint8Array {
  const u = new Uint8Array(w.numel);
  const d = w.data;
  // As the fake-quantization kernels: x / scale rounded to float32 first for float32 weights.
  const f32 = d instanceof Float32Array;
  for (let c = 0; c < channels; c++) {
    const s = qp.scale[qp.scale.length === 1 ? 0 : c]!;
    const z = qp.zeroPoint[qp.zeroPoint.length === 1 ? 0 : c]!;
    for (let i = c * inner; i < (c + 1) * inner; i++) {
      let q = roundHalfEven(f32 ? Math.fround(d[i]! / s) : d[i]! / s) + z;
      if (q < qp.quantMin) q = qp.quantMin;
      else if (q > qp.quantMax) q = qp.quantMax;
      u[i] = q - qp.quantMin;
    }
  }
  return u;
}

function weightQParams(m: Conv2d | Linear, bits: number, w: FTensor): QParams {
  const channels = m instanceof Conv2d ? m.outChannels : m.outFeatures;
  const wq = m.weightQuant;
  const symmetric = wq instanceof WeightFakeQuant ? wq.symmetric : false;
  if (wq instanceof WeightFakeQuant && wq.bits === bits) return wq.qparams(w, channels, w.numel / channels);
  const inner = w.numel / channels;
  const min = new Float64Array(channels);
  const max = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = c * inner; i < (c + 1) * inner; i++) {
      const v = w.data[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    min[c] = lo;
    max[c] = hi;
  }
  return chooseQParams({ min, max, bits, symmetric, signed: symmetric, narrowRange: symmetric });
}

/** The bytes of a .qfm file for `model` (see saveQfm). */
export function encodeQfm(model: Module, opts: SaveQfmOptions = {}): Uint8Array {
  const mode = opts.weightBits ?? 'auto';
  if (typeof mode === 'number' && !(Number.isInteger(mode) && mode >= 2 && mode <= 8)) throw new QuantFaceError('E_ARG', `saveQfm: weightBits must be 'auto', 'float' or an integer 2..8, got ${mode}`);
  const graph = describeModule(model);
  const info = opts.info ?? (model as { info?: ModelInfo }).info;
  if (info) validateModelInfo(info, 'saveQfm: info');
  // Which parameters are Conv2d / Linear weights (and of which module).
  const weightOwner = new Map<string, Conv2d | Linear>();
  for (const [n, m] of model.namedModules()) if (m instanceof Conv2d || m instanceof Linear) weightOwner.set(n ? `${n}.weight` : 'weight', m);
  const blobs: Blob[] = [];
  let dataSize = 0;
  const put = (data: Uint8Array): number => {
    const off = align(dataSize, BLOB_ALIGN);
    blobs.push({ data, offset: off });
    dataSize = off + data.length;
    return off;
  };
  const tensors: TensorEntry[] = [];
  const paramNames = new Set<string>();
  const bitsUsed = new Set<number>();
  for (const [name, p] of model.namedParameters()) {
    paramNames.add(name);
    const owner = weightOwner.get(name);
    const t = p.data;
    let bits = 0;
    if (owner && mode !== 'float') {
      if (typeof mode === 'number') bits = mode;
      else {
        const wq = owner.weightQuant;
        if (wq instanceof WeightFakeQuant && wq.fakeQuantEnabled) bits = wq.bits;
      }
    }
    if (bits) {
      const channels = owner instanceof Conv2d ? owner.outChannels : owner!.outFeatures;
      const inner = t.numel / channels;
      const qp = weightQParams(owner!, bits, t);
      const u = quantizeWeight(t, qp, channels, inner);
      const zpu = new Uint8Array(channels);
      for (let c = 0; c < channels; c++) zpu[c] = qp.zeroPoint[c]! - qp.quantMin;
      const offset = put(packBits(u, bits));
      const scaleOffset = put(bytesOf(Float32Array.from(qp.scale)));
      const zpPacked = packBits(zpu, bits);
      const zeroPointOffset = put(zpPacked);
      bitsUsed.add(bits);
      tensors.push({
        name,
        kind: 'param',
        shape: [...t.shape],
        requiresGrad: p.requiresGrad,
        storage: 'packed',
        bits,
        quantMin: qp.quantMin,
        quantMax: qp.quantMax,
        channels,
        inner,
        offset,
        bytes: Math.ceil((t.numel * bits) / 8),
        scaleOffset,
        zeroPointOffset,
        zeroPointBytes: zpPacked.length,
      });
    } else {
      const f = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
      tensors.push({ name, kind: 'param', shape: [...t.shape], requiresGrad: p.requiresGrad, storage: 'f32', offset: put(bytesOf(f)), bytes: f.byteLength });
    }
  }
  for (const [name, b] of model.namedBuffers()) {
    if (paramNames.has(name)) throw new QuantFaceError('E_ARG', `saveQfm: ${name} is both a parameter and a buffer`);
    const f = b.data instanceof Float32Array ? b.data : Float32Array.from(b.data);
    tensors.push({ name, kind: 'buffer', shape: [...b.shape], storage: 'f32', offset: put(bytesOf(f)), bytes: f.byteLength });
  }
  const activations: ActivationRange[] = [];
  for (const [name, m] of model.namedModules())
    if (m instanceof ActFakeQuant) activations.push({ name, bits: m.bits, min: m.min, max: m.max, frozen: !m.observerEnabled, symmetric: m.symmetric });
  const provenance: Provenance = {
    ...(info?.sha256 ? { teacherSha256: info.sha256 } : {}),
    ...(bitsUsed.size === 1 ? { weightBits: [...bitsUsed][0] } : {}),
    ...(activations.length ? { actBits: activations[0]!.bits } : {}),
    ...opts.provenance,
    createdAt: new Date().toISOString(),
    tool: `quantface ${QFM_TOOL_VERSION}`,
  };
  const meta: QfmMetadata = { format: 'quantface-model', ...(info ? { info } : {}), provenance, training: model.training, graph, tensors, activations };
  const json = Buffer.from(JSON.stringify(meta), 'utf8');
  const dataOffset = align(HEADER + json.length, DATA_ALIGN);
  const total = dataOffset + dataSize;
  const out = new Uint8Array(total);
  out.set(QFM_MAGIC, 0);
  const dv = new DataView(out.buffer);
  dv.setUint16(8, QFM_VERSION.major, true);
  dv.setUint16(10, QFM_VERSION.minor, true);
  dv.setUint32(12, HEADER, true);
  dv.setBigUint64(16, BigInt(json.length), true);
  dv.setBigUint64(24, BigInt(dataOffset), true);
  dv.setBigUint64(32, BigInt(dataSize), true);
  dv.setUint32(40, 1, true);
  out.set(json, HEADER);
  for (const b of blobs) out.set(b.data, dataOffset + b.offset);
  out.set(createHash('sha256').update(out).digest(), CK_OFF);
  return out;
}

/** quantface's version, recorded in provenance.tool. */
export const QFM_TOOL_VERSION = '0.1.0';

/** Writes bytes to path atomically (temp file in the same folder + rename). */
export async function writeFileAtomic(path: string, bytes: Uint8Array, onWrite?: (written: number, total: number) => void): Promise<void> {
  const target = resolve(path);
  const tmp = join(dirname(target), `.${basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fh: Awaited<ReturnType<typeof open>> | null = null;
  try {
    fh = await open(tmp, 'wx', 0o644);
    const CHUNK = 1 << 20;
    for (let off = 0; off < bytes.length || off === 0; off += CHUNK) {
      onWrite?.(off, bytes.length);
      const end = Math.min(bytes.length, off + CHUNK);
      let pos = off;
      while (pos < end) {
        const { bytesWritten } = await fh.write(bytes, pos, end - pos, pos);
        if (bytesWritten <= 0) throw new Error('write returned 0 bytes');
        pos += bytesWritten;
      }
      if (bytes.length === 0) break;
    }
    await fh.sync();
    await fh.close();
    fh = null;
    await rename(tmp, target);
  } catch (e) {
    if (fh) await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw e instanceof QuantFaceError ? e : ioError(e, target, 'write');
  }
}

/**
 * Saves a model as a .qfm file (atomically). Returns the number of bytes
 * written. Errors: E_IO (cannot write; an existing file is left as it was),
 * E_UNSUPPORTED_OP (a module type the format does not know), E_ARG.
 */
export async function saveQfm(model: Module, path: string, opts: SaveQfmOptions = {}): Promise<number> {
  const bytes = encodeQfm(model, opts);
  await writeFileAtomic(path, bytes, opts.onWrite);
  return bytes.length;
}

// ====================================================================== load
export interface QfmHeader {
  major: number;
  minor: number;
  metaBytes: number;
  dataOffset: number;
  dataBytes: number;
}

export interface PackedWeight {
  bits: number;
  quantMin: number;
  quantMax: number;
  channels: number;
  inner: number;
  /** q - quantMin, one byte per value (unpacked). */
  q: Uint8Array;
  /** Per-channel scales: a view over the file buffer. */
  scale: Float32Array;
  /** Per-channel zero points (in [quantMin, quantMax]). */
  zeroPoint: Int32Array;
}

export interface LoadedQfm {
  model: Module;
  info?: ModelInfo;
  provenance: Provenance;
  version: { major: number; minor: number };
  metadata: QfmMetadata;
  /** Integer form of a packed weight (unpacked on demand), or undefined for float tensors. */
  packedWeight(name: string): PackedWeight | undefined;
  /** File size in bytes. */
  bytes: number;
}

function fmtErr(where: string, msg: string, cause?: unknown): QuantFaceError {
  return new QuantFaceError('E_FORMAT', `${where}: ${msg}`, cause === undefined ? {} : { cause });
}

/** Parses and checks the fixed header (magic, version, sizes). */
export function readQfmHeader(buf: Uint8Array, where = 'quantface model file'): QfmHeader {
  if (buf.length < HEADER) throw fmtErr(where, `file is ${buf.length} bytes, shorter than the ${HEADER}-byte header (truncated, or not a quantface model file)`);
  for (let i = 0; i < 8; i++) if (buf[i] !== QFM_MAGIC[i]) throw fmtErr(where, 'not a quantface model file (wrong magic bytes)');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const major = dv.getUint16(8, true);
  const minor = dv.getUint16(10, true);
  if (major !== QFM_VERSION.major) throw fmtErr(where, `format version ${major}.${minor} is not supported (this quantface reads version ${QFM_VERSION.major}.x); upgrade quantface or re-export the model`);
  if (dv.getUint32(12, true) !== HEADER) throw fmtErr(where, `header size ${dv.getUint32(12, true)} is not ${HEADER}`);
  const big = (o: number): number => {
    const v = dv.getBigUint64(o, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fmtErr(where, 'size field out of range');
    return Number(v);
  };
  const metaBytes = big(16);
  const dataOffset = big(24);
  const dataBytes = big(32);
  if (dv.getUint32(40, true) !== 1) throw fmtErr(where, `unknown checksum algorithm ${dv.getUint32(40, true)}`);
  if (metaBytes > MAX_META || dataOffset % DATA_ALIGN !== 0 || dataOffset < HEADER + metaBytes || dataOffset - (HEADER + metaBytes) >= DATA_ALIGN)
    throw fmtErr(where, 'inconsistent section sizes in the header');
  if (dataOffset + dataBytes !== buf.length)
    throw fmtErr(where, `the header describes ${dataOffset + dataBytes} bytes but the file has ${buf.length} (${buf.length < dataOffset + dataBytes ? 'truncated' : 'trailing bytes'})`);
  return { major, minor, metaBytes, dataOffset, dataBytes };
}

function verifyChecksum(buf: Uint8Array, where: string): void {
  const h = createHash('sha256');
  h.update(buf.subarray(0, CK_OFF));
  h.update(new Uint8Array(32));
  h.update(buf.subarray(CK_OFF + 32));
  const d = h.digest();
  for (let i = 0; i < 32; i++) if (d[i] !== buf[CK_OFF + i]) throw fmtErr(where, 'checksum mismatch: the file is corrupted (or was modified after saving)');
}

function isObj(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

function validateEntries(raw: unknown, dataBytes: number, where: string): TensorEntry[] {
  if (!Array.isArray(raw) || raw.length > 1_000_000) throw fmtErr(where, "metadata 'tensors' must be a list");
  const names = new Set<string>();
  const isInt = (v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
  const inData = (off: unknown, len: number, al: number, what: string): void => {
    if (!isInt(off) || off % al !== 0 || off + len > dataBytes) throw fmtErr(where, `${what}: offset ${String(off)} (+${len} bytes) is outside the data section or misaligned`);
  };
  return raw.map((e, k) => {
    if (!isObj(e) || typeof e.name !== 'string' || e.name.length === 0 || e.name.length > 4096) throw fmtErr(where, `tensor entry ${k} has no name`);
    const name = e.name;
    if (names.has(name)) throw fmtErr(where, `tensor ${name} appears twice`);
    names.add(name);
    if (!Array.isArray(e.shape) || e.shape.length > 8 || !e.shape.every((d) => isInt(d, 0, 1 << 30))) throw fmtErr(where, `tensor ${name}: bad shape`);
    const numel = (e.shape as number[]).reduce((a, b) => a * b, 1);
    if (numel > 2 ** 31 - 1) throw fmtErr(where, `tensor ${name}: too many elements`);
    if (e.kind !== 'param' && e.kind !== 'buffer') throw fmtErr(where, `tensor ${name}: kind must be 'param' or 'buffer'`);
    if (e.requiresGrad !== undefined && typeof e.requiresGrad !== 'boolean') throw fmtErr(where, `tensor ${name}: requiresGrad must be a boolean`);
    if (e.storage === 'f32') {
      if (e.bytes !== numel * 4) throw fmtErr(where, `tensor ${name}: ${String(e.bytes)} bytes for ${numel} float32 values`);
      inData(e.offset, numel * 4, 4, `tensor ${name}`);
      return e as unknown as FloatTensorEntry;
    }
    if (e.storage === 'packed') {
      if (e.kind !== 'param') throw fmtErr(where, `tensor ${name}: only parameters can be packed`);
      if (!isInt(e.bits, 2, 8)) throw fmtErr(where, `tensor ${name}: bits must be 2..8`);
      const bits = e.bits;
      if (!isInt(e.quantMin, -256, 255) || !isInt(e.quantMax, -256, 255) || e.quantMax <= e.quantMin || e.quantMax - e.quantMin > (1 << bits) - 1)
        throw fmtErr(where, `tensor ${name}: integer range [${String(e.quantMin)}, ${String(e.quantMax)}] does not fit ${bits} bits`);
      if (!isInt(e.channels, 1) || !isInt(e.inner, 1) || e.channels * e.inner !== numel) throw fmtErr(where, `tensor ${name}: channels x inner must equal its ${numel} elements`);
      const bytes = Math.ceil((numel * bits) / 8);
      if (e.bytes !== bytes) throw fmtErr(where, `tensor ${name}: ${String(e.bytes)} packed bytes, expected ${bytes}`);
      inData(e.offset, bytes, 1, `tensor ${name}`);
      inData(e.scaleOffset, e.channels * 4, 4, `tensor ${name} scales`);
      const zb = Math.ceil((e.channels * bits) / 8);
      if (e.zeroPointBytes !== zb) throw fmtErr(where, `tensor ${name}: ${String(e.zeroPointBytes)} zero-point bytes, expected ${zb}`);
      inData(e.zeroPointOffset, zb, 1, `tensor ${name} zero points`);
      return e as unknown as PackedTensorEntry;
    }
    throw fmtErr(where, `tensor ${name}: unknown storage ${JSON.stringify(e.storage)}`);
  });
}

function validateActivations(raw: unknown, where: string): ActivationRange[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw) || raw.length > 1_000_000) throw fmtErr(where, "metadata 'activations' must be a list");
  for (const a of raw)
    if (!isObj(a) || typeof a.name !== 'string' || typeof a.bits !== 'number' || typeof a.min !== 'number' || typeof a.max !== 'number' || typeof a.frozen !== 'boolean')
      throw fmtErr(where, "an entry of 'activations' is malformed");
  return raw as ActivationRange[];
}

/**
 * Decodes a .qfm file held in memory. `buf` should start at an 8-byte
 * aligned offset of its ArrayBuffer (fs.readFile's buffers do); otherwise
 * it is copied once. Float32 tensors of the returned model are views over
 * buf's memory: keep buf unmodified while the model is used.
 */
export function decodeQfm(input: Uint8Array, where = 'quantface model file'): LoadedQfm {
  const buf = input.byteOffset % 8 === 0 ? input : input.slice();
  const h = readQfmHeader(buf, where);
  verifyChecksum(buf, where);
  let metaRaw: unknown;
  try {
    metaRaw = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + HEADER, h.metaBytes).toString('utf8'));
  } catch (e) {
    throw fmtErr(where, `metadata is not valid JSON (${(e as Error).message})`, e);
  }
  try {
    return decodeChecked(buf, h, metaRaw, where);
  } catch (e) {
    if (e instanceof QuantFaceError && e.code === 'E_FORMAT') throw e;
    throw fmtErr(where, `malformed model: ${e instanceof Error ? e.message : String(e)}`, e);
  }
}

function decodeChecked(buf: Uint8Array, h: QfmHeader, metaRaw: unknown, where: string): LoadedQfm {
  if (!isObj(metaRaw) || metaRaw.format !== 'quantface-model') throw fmtErr(where, "metadata is not a quantface model description (format != 'quantface-model')");
  const info = metaRaw.info === undefined ? undefined : validateModelInfo(metaRaw.info, where);
  const provenance = metaRaw.provenance;
  if (!isObj(provenance)) throw fmtErr(where, "metadata 'provenance' must be an object");
  if (typeof metaRaw.training !== 'boolean') throw fmtErr(where, "metadata 'training' must be a boolean");
  const tensors = validateEntries(metaRaw.tensors, h.dataBytes, where);
  const activations = validateActivations(metaRaw.activations, where);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  let model = buildModule(metaRaw.graph, { shapeOf: (n) => byName.get(n)?.shape });
  if (info && model instanceof Graph && !(model instanceof ImportedModel)) model = toImported(model, info);
  // Every stored tensor belongs to the model and vice versa.
  const own = new Map<string, { p?: Parameter; owner: Module; key: string }>();
  for (const [prefix, m] of model.namedModules()) {
    for (const [n, p] of m._params) own.set(prefix ? `${prefix}.${n}` : n, { p, owner: m, key: n });
    for (const n of m._buffers.keys()) own.set(prefix ? `${prefix}.${n}` : n, { owner: m, key: n });
  }
  for (const t of tensors) {
    const o = own.get(t.name);
    if (!o) throw fmtErr(where, `tensor ${t.name} does not belong to the described model`);
    if ((t.kind === 'param') !== !!o.p) throw fmtErr(where, `tensor ${t.name} is stored as a ${t.kind} but the model has it as a ${o.p ? 'parameter' : 'buffer'}`);
  }
  for (const k of own.keys()) if (!byName.has(k)) throw fmtErr(where, `the file has no values for ${k}`);
  const base = buf.byteOffset + h.dataOffset;
  const packedCache = new Map<string, PackedWeight>();
  const packedOf = (t: PackedTensorEntry): PackedWeight => {
    const hit = packedCache.get(t.name);
    if (hit) return hit;
    const n = t.channels * t.inner;
    const q = unpackBits(new Uint8Array(buf.buffer, base + t.offset, t.bytes), t.bits, n);
    const zpu = unpackBits(new Uint8Array(buf.buffer, base + t.zeroPointOffset, t.zeroPointBytes), t.bits, t.channels);
    const zeroPoint = new Int32Array(t.channels);
    const range = t.quantMax - t.quantMin;
    for (let c = 0; c < t.channels; c++) {
      if (zpu[c]! > range) throw fmtErr(where, `tensor ${t.name}: zero point of channel ${c} is outside [quantMin, quantMax]`);
      zeroPoint[c] = zpu[c]! + t.quantMin;
    }
    for (let i = 0; i < n; i++) if (q[i]! > range) throw fmtErr(where, `tensor ${t.name}: value ${i} is outside [quantMin, quantMax]`);
    const scale = new Float32Array(buf.buffer, base + t.scaleOffset, t.channels);
    for (let c = 0; c < t.channels; c++) if (!(scale[c]! > 0 && Number.isFinite(scale[c]!))) throw fmtErr(where, `tensor ${t.name}: scale of channel ${c} is not a positive finite number`);
    const pw = { bits: t.bits, quantMin: t.quantMin, quantMax: t.quantMax, channels: t.channels, inner: t.inner, q, scale, zeroPoint };
    packedCache.set(t.name, pw);
    return pw;
  };
  for (const t of tensors) {
    const o = own.get(t.name)!;
    let data: Float32Array;
    if (t.storage === 'f32') {
      data = new Float32Array(buf.buffer, base + t.offset, t.bytes / 4);
      for (let i = 0; i < data.length; i++)
        if (!Number.isFinite(data[i]!) && !(t.kind === 'buffer' && (data[i] === Infinity || data[i] === -Infinity)))
          throw fmtErr(where, `tensor ${t.name} holds a non-finite value at ${i}`);
    } else {
      const pw = packedOf(t);
      data = new Float32Array(t.channels * t.inner);
      for (let c = 0; c < t.channels; c++) {
        const s = pw.scale[c]!;
        const z = pw.zeroPoint[c]! - t.quantMin;
        for (let i = c * t.inner; i < (c + 1) * t.inner; i++) data[i] = (pw.q[i]! - z) * s;
      }
    }
    const tensor = new Tensor(data, t.shape) as FTensor;
    if (t.storage === 'packed' && o.key === 'weight' && (o.owner instanceof Conv2d || o.owner instanceof Linear)) {
      // The engine's fake-quant forward uses the stored grid, as the runtime does (see WeightFakeQuant.fixedQParams).
      const wq = o.owner.weightQuant;
      if (wq instanceof WeightFakeQuant && wq.bits === t.bits) {
        const pw = packedOf(t);
        wq.fixedQParams = { scale: Float32Array.from(pw.scale), zeroPoint: Int32Array.from(pw.zeroPoint), quantMin: t.quantMin, quantMax: t.quantMax };
      }
    }
    if (o.p) {
      o.p.data = tensor;
      o.p.requiresGrad = t.requiresGrad ?? true;
    } else o.owner._buffers.set(o.key, tensor);
  }
  model.train(metaRaw.training as boolean);
  const version = { major: h.major, minor: h.minor };
  const metadata = metaRaw as unknown as QfmMetadata;
  return {
    model,
    ...(info ? { info } : {}),
    provenance: provenance as Provenance,
    version,
    metadata: { ...metadata, tensors, activations },
    packedWeight: (name: string) => {
      const t = byName.get(name);
      return t && t.storage === 'packed' ? packedOf(t) : undefined;
    },
    bytes: buf.length,
  };
}

/** Rebuilds a Graph description as an ImportedModel carrying its info (input checks included). */
function toImported(g: Graph, info: ModelInfo): Graph {
  if (g.inputNames.length !== 1) return g as unknown as ImportedModel;
  const m = new ImportedModel(info, g.inputNames[0]);
  for (const nd of g.nodeList) m.add(nd.name, g.getChild(nd.name)!, nd.inputs);
  // Name the output only where it is not the last node (the default), as the graph did.
  const out = g.outputNames[0];
  if (out && out !== g.nodeList[g.nodeList.length - 1]?.name) m.output(out);
  return m;
}

/**
 * Loads a .qfm file. Errors: E_IO (cannot read), E_FORMAT (not a quantface
 * model file, unknown version, truncated, corrupted, inconsistent).
 */
export async function loadQfm(path: string): Promise<LoadedQfm> {
  const p = resolve(path);
  let buf: Buffer;
  try {
    buf = await readFile(p);
  } catch (e) {
    throw ioError(e, p);
  }
  return decodeQfm(buf, p);
}

/**
 * Rewrites the provenance of a .qfm file (e.g. to store a verification
 * threshold chosen on labelled pairs in provenance.notes.verifyThreshold),
 * keeping graph and tensors byte for byte. The file is checked (header,
 * checksum, metadata JSON) first and replaced atomically; on any error it is
 * left as it was. Errors: E_IO, E_FORMAT, E_ARG (update returned a non-object).
 */
export async function updateQfmProvenance(path: string, update: (p: Provenance) => Provenance): Promise<Provenance> {
  const p = resolve(path);
  let buf: Buffer;
  try {
    buf = await readFile(p);
  } catch (e) {
    throw ioError(e, p);
  }
  const h = readQfmHeader(buf, p);
  verifyChecksum(buf, p);
  let meta: unknown;
  try {
    meta = JSON.parse(buf.subarray(HEADER, HEADER + h.metaBytes).toString('utf8'));
  } catch (e) {
    throw fmtErr(p, `metadata is not valid JSON (${(e as Error).message})`, e);
  }
  if (!isObj(meta) || meta.format !== 'quantface-model' || !isObj(meta.provenance)) throw fmtErr(p, 'metadata is not a quantface model description');
  const provenance = update(structuredClone(meta.provenance) as Provenance);
  if (!isObj(provenance)) throw new QuantFaceError('E_ARG', 'updateQfmProvenance: the update must return an object');
  const json = Buffer.from(JSON.stringify({ ...meta, provenance }), 'utf8');
  const dataOffset = align(HEADER + json.length, DATA_ALIGN);
  const out = new Uint8Array(dataOffset + h.dataBytes);
  out.set(buf.subarray(0, HEADER), 0);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(16, BigInt(json.length), true);
  dv.setBigUint64(24, BigInt(dataOffset), true);
  out.fill(0, CK_OFF, CK_OFF + 32);
  out.set(json, HEADER);
  out.set(buf.subarray(h.dataOffset), dataOffset);
  out.set(createHash('sha256').update(out).digest(), CK_OFF);
  await writeFileAtomic(p, out);
  return provenance;
}
