/**
 * What kind of model file a path holds, told by its content (magic bytes
 * and structure), never by its extension alone:
 *
 * - 'qfm': the quantface model file magic (\x89QFM\r\n\x1a\n).
 * - 'tflite': a FlatBuffer with the TFLite file identifier "TFL3" at byte 4.
 * - JSON objects: a TF.js graph model (modelTopology + weightsManifest),
 *   a TF.js layers model (refused: E_UNSUPPORTED_FORMAT), a quantface model
 *   metadata file (kind 'quantface-model-meta'); a JSON array of
 *   {paths, weights} groups is a TF.js weights manifest (face-api's ResNet).
 * - 'onnx': a protobuf ModelProto: the top-level fields parse as ModelProto
 *   fields (ir_version, opset_import, producer, graph, ...) with their wire
 *   types, cover the whole file, and a graph is present.
 *
 * Anything else is E_FORMAT naming what was expected.
 */
import { open, stat, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { QuantFaceError, ioError } from '../errors.js';
import { QFM_MAGIC } from './qfm.js';

export type ModelFileFormat = 'qfm' | 'onnx' | 'tfjs-graph' | 'tfjs-weights' | 'quantface-meta' | 'tflite';

/** Marker key of a quantface model metadata file (a sidecar that names its model). */
export const META_KIND = 'quantface-model-meta';

export interface DetectedModelFile {
  format: ModelFileFormat;
  /** Absolute path. */
  path: string;
  bytes: number;
  /** The parsed JSON for the JSON formats. */
  json?: unknown;
}

/** JSON model files larger than this are refused (a model.json holds a graph, not weights). */
const MAX_JSON_BYTES = 256 << 20;

/** ModelProto field numbers and wire types (onnx.proto3): 0 varint, 2 length-delimited. */
const MODEL_PROTO_FIELDS: ReadonlyMap<number, number> = new Map([
  [1, 0], // ir_version
  [2, 2], // producer_name
  [3, 2], // producer_version
  [4, 2], // domain
  [5, 0], // model_version
  [6, 2], // doc_string
  [7, 2], // graph
  [8, 2], // opset_import
  [14, 2], // metadata_props
  [20, 2], // training_info
  [25, 2], // functions
]);

/** Reads a varint at pos from a byte reader; null when it runs past the end or is longer than 10 bytes. */
function varint(b: Uint8Array, pos: number): { v: number; next: number } | null {
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos + i >= b.length) return null;
    const x = b[pos + i]!;
    v += (x & 0x7f) * mul;
    mul *= 128;
    if (!(x & 0x80)) return { v, next: pos + i + 1 };
  }
  return null;
}

/**
 * Whether the file is a protobuf ModelProto, by walking its top-level
 * fields (headers only: the payloads of length-delimited fields are
 * skipped by seeking, so a 250 MB model costs a few small reads).
 */
async function looksLikeOnnx(path: string, size: number): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(24);
    let pos = 0;
    let fields = 0;
    let graph = false;
    while (pos < size) {
      const { bytesRead } = await fh.read(head, 0, Math.min(head.length, size - pos), pos);
      const b = head.subarray(0, bytesRead);
      const key = varint(b, 0);
      if (!key) return false;
      const field = Math.floor(key.v / 8);
      const wire = key.v % 8;
      const want = MODEL_PROTO_FIELDS.get(field);
      if (want === undefined || want !== wire) return false;
      if (wire === 0) {
        const val = varint(b, key.next);
        if (!val) return false;
        pos += val.next;
      } else {
        const len = varint(b, key.next);
        if (!len) return false;
        pos += len.next + len.v;
        if (pos > size) return false;
        if (field === 7 && len.v > 0) graph = true;
      }
      fields++;
      if (fields > 100_000) return false;
    }
    return graph && pos === size;
  } finally {
    await fh.close();
  }
}

const EXPECTED =
  'quantface reads a quantface model file (.qfm), an ONNX model (.onnx), a TFLite model (.tflite), a TF.js graph model (model.json with its weight shards), ' +
  "face-api's weights manifest or a quantface model metadata JSON";

/**
 * Tells a model file's format from its content. Errors: E_IO (missing,
 * unreadable, a folder), E_FORMAT (none of the formats, bad JSON),
 * E_UNSUPPORTED_FORMAT (a recognised format quantface does not import:
 * TF.js layers models).
 */
export async function detectModelFormat(file: string): Promise<DetectedModelFile> {
  const path = resolve(file);
  let size: number;
  try {
    const st = await stat(path);
    if (st.isDirectory()) throw new QuantFaceError('E_IO', `${path} is a folder; pass the model file inside it (model.json, model.onnx or model.qfm)`, { path });
    size = st.size;
  } catch (e) {
    if (e instanceof QuantFaceError) throw e;
    throw ioError(e, path);
  }
  if (size === 0) throw new QuantFaceError('E_FORMAT', `${path} is empty; ${EXPECTED}`, { path });
  const head = Buffer.alloc(Math.min(size, 64));
  try {
    const fh = await open(path, 'r');
    try { await fh.read(head, 0, head.length, 0); } finally { await fh.close(); }
  } catch (e) {
    throw ioError(e, path);
  }
  if (head.length >= 8 && QFM_MAGIC.every((v, i) => head[i] === v)) return { format: 'qfm', path, bytes: size };
  if (head.length >= 8 && head.toString('latin1', 4, 8) === 'TFL3') return { format: 'tflite', path, bytes: size };
  const first = head.toString('latin1').trimStart()[0];
  if (first === '{' || first === '[') {
    if (size > MAX_JSON_BYTES) throw new QuantFaceError('E_FORMAT', `${path}: a ${size}-byte JSON file is too large for a model description (limit ${MAX_JSON_BYTES})`, { path });
    let json: unknown;
    try {
      json = JSON.parse(await readFile(path, 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code) throw ioError(e, path);
      throw new QuantFaceError('E_FORMAT', `${path} starts like JSON but is not valid JSON (${(e as Error).message}); ${EXPECTED}`, { cause: e, path });
    }
    if (Array.isArray(json)) {
      if (json.length > 0 && json.every((g) => g && typeof g === 'object' && Array.isArray((g as { paths?: unknown }).paths) && Array.isArray((g as { weights?: unknown }).weights)))
        return { format: 'tfjs-weights', path, bytes: size, json };
    } else if (json && typeof json === 'object') {
      const o = json as Record<string, unknown>;
      if (o.kind === META_KIND) return { format: 'quantface-meta', path, bytes: size, json };
      if ('modelTopology' in o && 'weightsManifest' in o) {
        if (o.format === 'layers-model' || (o.modelTopology && typeof o.modelTopology === 'object' && 'class_name' in (o.modelTopology as object)))
          throw new QuantFaceError('E_UNSUPPORTED_FORMAT', `${path} is a TF.js layers model; quantface imports TF.js graph models: convert it with tensorflowjs_converter --output_format tfjs_graph_model`, { path });
        return { format: 'tfjs-graph', path, bytes: size, json };
      }
    }
    throw new QuantFaceError('E_FORMAT', `${path} is JSON but not a model: a TF.js graph model needs modelTopology and weightsManifest, a quantface model metadata file kind '${META_KIND}'; ${EXPECTED}`, { path });
  }
  let onnx = false;
  try {
    onnx = await looksLikeOnnx(path, size);
  } catch (e) {
    throw ioError(e, path);
  }
  if (onnx) return { format: 'onnx', path, bytes: size };
  throw new QuantFaceError('E_FORMAT', `${path} is not a model file quantface can read (unknown content: ${head.subarray(0, 8).toString('hex')}...); ${EXPECTED}`, { path });
}
