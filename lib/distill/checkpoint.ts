/**
 * Training checkpoints: a JSON record plus named float tensors (student
 * master weights and buffers, optimiser momentum), stored bit-exactly and
 * written atomically (temp file + rename), with a SHA-256 over the whole
 * file so a truncated or damaged checkpoint is refused instead of resumed.
 *
 * Layout (little endian):
 *   0  magic "QFCKPT\r\n" (8 bytes)
 *   8  u32 format version (1)
 *  12  u32 JSON length J
 *  16  u64 data length D
 *  24  JSON (utf8), zero-padded to a multiple of 64
 *   .  data: the tensors' bytes, each at its recorded offset (64-aligned)
 *   .  32-byte SHA-256 of everything before it
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { QuantFaceError, ioError } from '../errors.js';
import { writeFileAtomic } from '../io/qfm.js';
import { Tensor, type FTensor } from '../tensor.js';

const MAGIC = Buffer.from('QFCKPT\r\n', 'latin1');
const VERSION = 1;
const HEAD = 24;
const ALIGN = 64;

export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };

export interface CheckpointContents {
  /** Free-form JSON record (step, options fingerprint, metrics...). */
  meta: { [k: string]: JsonValue };
  /** Named float tensors, restored with their dtype and shape. */
  tensors: Map<string, FTensor>;
}

interface TensorRecord {
  name: string;
  dtype: 'f32' | 'f64';
  shape: number[];
  offset: number;
  bytes: number;
}

const align = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

/** The bytes of a checkpoint file. */
export function encodeCheckpoint(c: CheckpointContents): Uint8Array {
  const records: TensorRecord[] = [];
  let data = 0;
  for (const [name, t] of c.tensors) {
    if (t.dtype !== 'f32' && t.dtype !== 'f64') throw new QuantFaceError('E_ARG', `checkpoint: tensor ${name} has dtype ${t.dtype}; only float tensors are stored`);
    const offset = align(data);
    const bytes = t.data.byteLength;
    records.push({ name, dtype: t.dtype, shape: [...t.shape], offset, bytes });
    data = offset + bytes;
  }
  const json = Buffer.from(JSON.stringify({ kind: 'quantface-checkpoint', meta: c.meta, tensors: records }), 'utf8');
  const dataStart = align(HEAD + json.length);
  const total = dataStart + data + 32;
  const out = new Uint8Array(total);
  out.set(MAGIC, 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, VERSION, true);
  dv.setUint32(12, json.length, true);
  dv.setBigUint64(16, BigInt(data), true);
  out.set(json, HEAD);
  let k = 0;
  for (const t of c.tensors.values()) {
    const r = records[k++]!;
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), dataStart + r.offset);
  }
  out.set(createHash('sha256').update(out.subarray(0, total - 32)).digest(), total - 32);
  return out;
}

/** Parses checkpoint bytes; E_FORMAT (naming `where`) when they are not an intact checkpoint. */
export function decodeCheckpoint(buf: Uint8Array, where = 'checkpoint'): CheckpointContents {
  const bad = (why: string): never => {
    throw new QuantFaceError('E_FORMAT', `${where} is not a usable quantface checkpoint (${why}); delete it to start over, or pass the right --checkpoint`, { path: where });
  };
  if (buf.length < HEAD + 32 || !Buffer.from(buf.subarray(0, 8)).equals(MAGIC)) bad('wrong magic bytes');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== VERSION) bad(`format version ${version}, this quantface reads ${VERSION}`);
  const jsonLen = dv.getUint32(12, true);
  const dataLen = Number(dv.getBigUint64(16, true));
  const dataStart = align(HEAD + jsonLen);
  if (dataStart + dataLen + 32 !== buf.length) bad(`size ${buf.length} does not match its header (truncated?)`);
  const digest = createHash('sha256').update(buf.subarray(0, buf.length - 32)).digest();
  if (!digest.equals(Buffer.from(buf.subarray(buf.length - 32)))) bad('checksum mismatch (damaged or truncated)');
  let parsed: { kind?: string; meta?: CheckpointContents['meta']; tensors?: TensorRecord[] };
  try {
    parsed = JSON.parse(Buffer.from(buf.subarray(HEAD, HEAD + jsonLen)).toString('utf8')) as typeof parsed;
  } catch (e) {
    return bad(`bad JSON: ${(e as Error).message}`);
  }
  if (parsed.kind !== 'quantface-checkpoint' || !parsed.meta || !Array.isArray(parsed.tensors)) bad('missing fields');
  const tensors = new Map<string, FTensor>();
  for (const r of parsed.tensors!) {
    const el = r.dtype === 'f64' ? 8 : r.dtype === 'f32' ? 4 : bad(`tensor ${r.name}: dtype ${String(r.dtype)}`);
    const n = r.shape.reduce((a, b) => a * b, 1);
    if (n * el !== r.bytes || r.offset < 0 || r.offset + r.bytes > dataLen) bad(`tensor ${r.name}: bad extent`);
    // Copy into a fresh, aligned buffer.
    const bytes = buf.slice(dataStart + r.offset, dataStart + r.offset + r.bytes);
    const data = r.dtype === 'f64' ? new Float64Array(bytes.buffer, bytes.byteOffset, n) : new Float32Array(bytes.buffer, bytes.byteOffset, n);
    tensors.set(r.name, new Tensor(data, r.shape) as FTensor);
  }
  return { meta: parsed.meta!, tensors };
}

/** Writes a checkpoint atomically (an existing one stays intact until the new one is complete). Returns its size. */
export async function saveCheckpoint(path: string, c: CheckpointContents): Promise<number> {
  const bytes = encodeCheckpoint(c);
  await writeFileAtomic(resolve(path), bytes);
  return bytes.length;
}

/** Reads a checkpoint. E_IO when it cannot be read, E_FORMAT when it is damaged. */
export async function loadCheckpoint(path: string): Promise<CheckpointContents> {
  const p = resolve(path);
  let buf: Buffer;
  try {
    buf = await readFile(p);
  } catch (e) {
    throw ioError(e, p);
  }
  return decodeCheckpoint(buf, p);
}
