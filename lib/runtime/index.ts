/**
 * Integer inference for servers: load a quantized face model (or a float
 * one) and turn face images into embeddings on the native int8 kernels.
 *
 * ```ts
 * import { loadModel, quantize } from 'quantface';
 * const model = await loadModel('student.qfm', { threads: 2, align: 'ffhq' });
 * const [a, b] = await model.embed(['a.jpg', 'b.jpg']);
 * const { similarity, match } = model.verify(a, b);
 * // a face in a photo, given by a detector's 5 landmarks (pixel-index x, y):
 * const e = await model.embed({ image: 'photo.jpg', landmarks: [x1, y1, x2, y2, x3, y3, x4, y4, x5, y5] });
 * await model.dispose();
 * ```
 *
 * - embed() never blocks the event loop for the inference itself: images
 *   are decoded by sharp on libuv threads, and the whole network runs in one
 *   native call on a worker thread. Concurrent calls are queued and
 *   batched together (up to maxBatch images per run, in batch-size buckets
 *   1, 2, 4, ... so each bucket's buffers are planned once and reused);
 *   memory stays flat however many calls are made.
 * - embedSync() runs on the calling thread (scripts, tests).
 * - Embeddings are the model's raw output (float32, not normalised);
 *   similarity() is their cosine. verify() compares a cosine with the
 *   model's threshold: options.threshold, else the threshold stored in the
 *   .qfm file (provenance.notes.verifyThreshold, a cosine, e.g. chosen on
 *   LFW), else verify() throws E_ARG.
 * - The native thread pool is process-wide: `threads` resizes it for every
 *   model in the process.
 */
import { QuantFaceError } from '../errors.js';
import { binding } from '../binding.js';
import { Module } from '../nn/module.js';
import type { LoadedQfm, Provenance } from '../io/qfm.js';
import { knownModel } from '../io/known-models.js';
import { loadModelFile, type InputOverrides, type LoadedModelFile } from '../io/load.js';
import type { ModelInfo, Preprocessing } from '../io/model-info.js';
import { compileModel, type CompiledModel, type CompileOptions, type CompileReport, type Plan } from './compile.js';
import { faceInputSpec, finishInput, inspectInput, isFaceInput, prepareInputSync, resolveAlign, resolveLimits, type AlignInput, type EmbedInput, type InputLimits, type InspectedInput, type PrepareOptions } from './input.js';
import type { AlignSpec } from '../data/align.js';
import { configureBudget, inflightBudget, type BudgetOptions, type BudgetStats, type Cost } from './budget.js';

export { compileModel, CompiledModel, type CompileOptions, type CompileReport, type Plan, type LOp, type LValue } from './compile.js';
export { addInputQuantizers, calibrateActivations, quantizeModel, engineEmbed, type CalibrateOptions, type QuantizeModelOptions, type InputQuantizerOptions } from './calibrate.js';
export { prepareInput, prepareInputSync, resolveAlign, isFaceInput, type EmbedInput, type FaceInput, type RawImage, type AlignInput, type InputLimits } from './input.js';
export { configureBudget, inflightBudget, InflightBudget, type BudgetOptions, type BudgetStats } from './budget.js';
export { quantizePipelineNetworks, composePhotos, type QuantizePipelineOptions, type QuantizedPipelineNetworks, type ComposeOptions } from './pipeline-quant.js';
export { loadPipeline, loadPipelineNetwork, DETECTOR_PREPROCESSING, LANDMARK_PREPROCESSING, FacePipeline, nms, landmarks68to5, cropGrey, type PipelineOptions, type PhotoInput, type Face, type DetectedFace, type FaceBox, type FacesCallOptions, type PipelineTimings, type FaceSelect, type PipelineVerifyResult } from './pipeline.js';

export interface LoadModelOptions {
  /** Native thread pool size (process-wide; default: physical cores or QUANTFACE_THREADS). */
  threads?: number;
  /** 'auto' (default): int8 where the model is quantized; 'float': the float weights in fp32. */
  precision?: 'auto' | 'float';
  /** Largest batch one native run takes (default 32). */
  maxBatch?: number;
  /** Face alignment of encoded / decoded images (default 'none': the image is the face crop). */
  align?: AlignInput;
  /** Cosine threshold of verify() (default: the model file's, if any). */
  threshold?: number;
  /** Limits on encoded and decoded images and on one embed() call (pixels in all, decode time). */
  limits?: InputLimits;
  /**
   * The process-wide in-flight budget (decodes and queued crops of every
   * model in the process; see lib/runtime/budget.ts): set here, it changes
   * the limits for all models, like `threads`. Default: the environment
   * (QF_MAX_INFLIGHT_BYTES, QF_MAX_INFLIGHT_PIXELS, QF_MAX_WAITING,
   * QF_QUEUE_TIMEOUT_MS, QF_SMALL_PIXELS), else 256 MiB, 120 M pixels, 256 waiting images, 10 s, small decodes up to 4 M pixels.
   */
  budget?: BudgetOptions;
  /** Preprocessing for models that do not record one (default: model info, else (x - 127.5) / 127.5). */
  preprocessing?: Preprocessing;
  /** See CompileOptions.approximateInput. */
  approximateInput?: boolean;
  /** Input description for model files that do not record one (lower precedence than the file, its sidecar and the registry of known models). */
  input?: InputOverrides;
}

export interface EmbedCallOptions {
  /** Alignment for this call (default: the model's). */
  align?: AlignInput;
}

export interface VerifyResult {
  /** Cosine similarity of the two embeddings, in [-1, 1]. */
  similarity: number;
  /** similarity >= threshold. */
  match: boolean;
  threshold: number;
}

export interface RuntimeStats {
  /** Images embedded. */
  images: number;
  /** Native runs (batches) and the images they held. */
  batches: number;
  /** Images waiting in the queue now. */
  queued: number;
  /** Largest batch run so far. */
  largestBatch: number;
  /** The process-wide in-flight budget now (shared by every model). */
  inflight: BudgetStats;
}

/** Cosine similarity of two embeddings (0 when one of them is all zeros). */
export function similarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new QuantFaceError('E_SHAPE', `similarity: embeddings of length ${a.length} and ${b.length}`);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}

/** verify() with an explicit threshold. */
export function verify(a: ArrayLike<number>, b: ArrayLike<number>, threshold: number): VerifyResult {
  if (!Number.isFinite(threshold)) throw new QuantFaceError('E_ARG', `verify: threshold must be a finite number (got ${threshold})`);
  const s = similarity(a, b);
  return { similarity: s, match: s >= threshold, threshold };
}

interface Pending {
  crop: Uint8Array;
  resolve: (e: Float32Array) => void;
  reject: (e: unknown) => void;
}

/**
 * Plan batch sizes: every size up to 8 (a photo's faces or a few concurrent
 * calls run without padding), then powers of two (a padded sample costs as
 * much as a real one).
 */
const BUCKETS = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256];

/** The verification threshold stored in a model file's provenance (notes.verifyThreshold), if any. */
export function storedThreshold(p: Provenance | undefined): number | undefined {
  const notes = p?.notes;
  if (notes && typeof notes === 'object' && !Array.isArray(notes)) {
    const t = (notes as Record<string, unknown>).verifyThreshold;
    if (typeof t === 'number' && Number.isFinite(t)) return t;
  }
  return undefined;
}

/** A compiled face model with a batching queue. Create with loadModel(). */
export class FaceModel {
  /** Embedding length. */
  readonly dim: number;
  /** Crop side (the model's input is size x size x 3). */
  readonly inputSize: number;
  readonly info: ModelInfo | undefined;
  readonly provenance: Provenance | undefined;
  readonly compiled: CompiledModel;
  readonly maxBatch: number;
  private readonly alignSpec: ReturnType<typeof resolveAlign>;
  private readonly limits: Required<InputLimits>;
  private thresholdValue: number | undefined;
  private readonly queue: Pending[] = [];
  private running: Promise<void> | null = null;
  private arena: Uint8Array | null = null;
  private syncArena: Uint8Array | null = null;
  private disposed = false;
  private readonly counters = { images: 0, batches: 0, largestBatch: 0 };
  private readonly bgr: boolean;

  constructor(compiled: CompiledModel, o: LoadModelOptions, info?: ModelInfo, provenance?: Provenance) {
    this.compiled = compiled;
    this.dim = compiled.outputDim;
    this.inputSize = compiled.inputShape[0];
    if (compiled.inputShape[0] !== compiled.inputShape[1]) throw new QuantFaceError('E_UNSUPPORTED_OP', `runtime: the model takes ${compiled.inputShape[0]}x${compiled.inputShape[1]} inputs; only square crops are supported`);
    this.info = info;
    this.provenance = provenance;
    const mb = o.maxBatch ?? 32;
    if (!Number.isInteger(mb) || mb < 1 || mb > 256) throw new QuantFaceError('E_ARG', `maxBatch must be an integer in [1, 256] (got ${String(mb)})`);
    this.maxBatch = mb;
    this.alignSpec = resolveAlign(o.align);
    this.limits = resolveLimits(o.limits);
    if (o.threshold !== undefined && !Number.isFinite(o.threshold)) throw new QuantFaceError('E_ARG', `threshold must be a finite number (got ${String(o.threshold)})`);
    this.thresholdValue = o.threshold ?? storedThreshold(provenance);
    this.bgr = compiled.preprocessing.colorOrder === 'BGR';
  }

  /**
   * The 5-point template landmarks are warped onto: the model's recorded
   * alignment when it is a template (points of its input crop), else
   * undefined (lib/data's ArcFace template).
   */
  get template(): readonly (readonly [number, number])[] | undefined {
    const a = this.info?.alignment;
    return a?.kind === 'template' ? a.points : undefined;
  }

  /** The call's alignment: landmarks without a template get the model's. */
  private callAlign(o: EmbedCallOptions): AlignSpec {
    const a = o.align === undefined ? this.alignSpec : resolveAlign(o.align);
    const t = this.template;
    return a.kind === 'landmarks' && !a.template && t ? { ...a, template: t } : a;
  }

  /** One input and how to prepare it: a { image, landmarks } input brings its own warp. */
  private perInput(x: EmbedInput, base: PrepareOptions, what: string): [EmbedInput, PrepareOptions] {
    if (!isFaceInput(x)) return [x, base];
    const { image, align } = faceInputSpec(x, this.template, what);
    return [image, { ...base, align }];
  }

  /** The cosine threshold verify() uses, if known. */
  get threshold(): number | undefined {
    return this.thresholdValue;
  }
  set threshold(t: number | undefined) {
    if (t !== undefined && !Number.isFinite(t)) throw new QuantFaceError('E_ARG', `threshold must be a finite number (got ${String(t)})`);
    this.thresholdValue = t;
  }

  /** How the model was compiled (int8 / fp32 layers, weights, input path). */
  get report(): CompileReport {
    return this.compiled.report;
  }

  stats(): RuntimeStats {
    return { ...this.counters, queued: this.queue.length, inflight: inflightBudget().stats() };
  }

  private check(): void {
    if (this.disposed) throw new QuantFaceError('E_CLOSED', 'this model was disposed; load it again to embed more images');
  }

  private bucket(n: number): number {
    for (const b of BUCKETS) if (b >= n && b <= this.maxBatch) return b;
    return this.maxBatch;
  }

  private fill(p: Plan, arena: Uint8Array, crops: readonly Uint8Array[]): void {
    const view = this.compiled.inputView(p, arena);
    const per = this.inputSize * this.inputSize * 3;
    crops.forEach((c, i) => {
      if (!this.bgr) view.set(c, i * per);
      else for (let k = 0; k < per; k += 3) {
        view[i * per + k] = c[k + 2]!;
        view[i * per + k + 1] = c[k + 1]!;
        view[i * per + k + 2] = c[k]!;
      }
    });
  }

  private results(p: Plan, arena: Uint8Array, n: number): Float32Array[] {
    const out = this.compiled.outputView(p, arena);
    const D = this.dim;
    const r: Float32Array[] = [];
    for (let i = 0; i < n; i++) r.push(out.slice(i * D, (i + 1) * D));
    this.counters.images += n;
    this.counters.batches++;
    this.counters.largestBatch = Math.max(this.counters.largestBatch, n);
    return r;
  }

  private arenaFor(p: Plan, sync: boolean): Uint8Array {
    const cur = sync ? this.syncArena : this.arena;
    if (cur && cur.byteLength >= p.arenaBytes) return cur;
    const a = this.compiled.newArena(p);
    if (sync) this.syncArena = a;
    else this.arena = a;
    return a;
  }

  private pump(): void {
    if (this.running || this.queue.length === 0) return;
    this.running = (async () => {
      while (this.queue.length) {
        const items = this.queue.splice(0, this.maxBatch);
        try {
          const p = this.compiled.plan(this.bucket(items.length));
          const arena = this.arenaFor(p, false);
          this.fill(p, arena, items.map((i) => i.crop));
          await this.compiled.run(p, arena);
          const r = this.results(p, arena, items.length);
          items.forEach((it, i) => it.resolve(r[i]!));
        } catch (e) {
          for (const it of items) it.reject(e);
        }
      }
    })().finally(() => {
      this.running = null;
      this.pump();
    });
  }

  /**
   * Decodes and aligns a call's inputs under the limits and the in-flight
   * budget: headers first (the call's pixel total is checked before any
   * decode), then each image's decode holds its estimated memory and pixels
   * while it runs. On the first failure the call's waiting decodes are
   * cancelled.
   */
  private async crops(inputs: readonly EmbedInput[], o: EmbedCallOptions): Promise<Uint8Array[]> {
    const opts: PrepareOptions = { size: this.inputSize, align: this.callAlign(o), limits: this.limits };
    const many = inputs.length > 1;
    const prepared = inputs.map((x, i) => this.perInput(x, opts, many ? `input ${i}` : 'the input image'));
    const inspected: InspectedInput[] = await Promise.all(prepared.map(([x, po], i) => inspectInput(x, po, many ? i : undefined)));
    let pixels = 0;
    for (const p of inspected) if (p.kind === 'encoded') pixels += p.cost.pixels;
    if (pixels > this.limits.maxRequestPixels)
      throw new QuantFaceError('E_SHAPE', `this call has ${inputs.length} images of ${pixels} pixels in all; the limit is ${this.limits.maxRequestPixels} pixels per call (limits.maxRequestPixels)`);
    const budget = inflightBudget();
    const mine = new Set<Cost>();
    const one = async (p: InspectedInput): Promise<Uint8Array> => {
      if (p.kind === 'crop') return p.crop;
      mine.add(p.cost);
      const lease = await budget.acquire(p.cost, p.what);
      try {
        this.check();
        return await finishInput(p, opts); // (the plan holds each input's alignment; opts gives size and limits)
      } finally {
        lease.release();
      }
    };
    try {
      return await Promise.all(inspected.map(one));
    } catch (e) {
      budget.cancel((c) => mine.has(c), e);
      throw e;
    }
  }

  /**
   * Embeds one image (returns its embedding) or an array of images (an
   * array of embeddings, in order). Rejects with a QuantFaceError for a bad
   * input (E_FORMAT, E_SHAPE, E_IO, E_ARG) or after dispose() (E_CLOSED).
   */
  embed(input: EmbedInput, o?: EmbedCallOptions): Promise<Float32Array>;
  embed(inputs: readonly EmbedInput[], o?: EmbedCallOptions): Promise<Float32Array[]>;
  async embed(input: EmbedInput | readonly EmbedInput[], o: EmbedCallOptions = {}): Promise<Float32Array | Float32Array[]> {
    this.check();
    const many = Array.isArray(input);
    const list = many ? (input as readonly EmbedInput[]) : [input as EmbedInput];
    const budget = inflightBudget();
    // (a full waiting queue refuses only what would have to wait: small images that fit pass)
    // the call's crops are held in the budget from here until their embeddings are out
    const cropLease = await budget.acquire({ bytes: list.length * this.inputSize * this.inputSize * 3, pixels: 0 }, many ? `a call of ${list.length} images` : 'the input image');
    try {
      const crops = await this.crops(list, o);
      this.check();
      const done = crops.map(
        (crop) =>
          new Promise<Float32Array>((resolve, reject) => {
            this.queue.push({ crop, resolve, reject });
          }),
      );
      this.pump();
      const r = await Promise.all(done);
      return many ? r : r[0]!;
    } finally {
      cropLease.release();
    }
  }

  /**
   * Embeds aligned crops given as one buffer of n x size x size x 3 RGB bytes
   * (no decoding): the fastest path for callers that align faces themselves.
   */
  async embedCrops(crops: Uint8Array, n: number): Promise<Float32Array[]> {
    this.check();
    const per = this.inputSize * this.inputSize * 3;
    if (!Number.isInteger(n) || n < 1 || crops.length !== n * per) throw new QuantFaceError('E_SHAPE', `embedCrops: ${n} crops of ${this.inputSize}x${this.inputSize}x3 need ${n * per} bytes, got ${crops.length}`);
    const budget = inflightBudget();
    const lease = await budget.acquire({ bytes: n * per, pixels: 0 }, `${n} crops`);
    try {
      const done: Promise<Float32Array>[] = [];
      for (let i = 0; i < n; i++) {
        const crop = crops.slice(i * per, (i + 1) * per);
        done.push(new Promise<Float32Array>((resolve, reject) => this.queue.push({ crop, resolve, reject })));
      }
      this.pump();
      return await Promise.all(done);
    } finally {
      lease.release();
    }
  }

  /**
   * Synchronous embed for scripts: raw crops, Float32Array crops or decoded
   * pixels ({ data, width, height }) only (decoding files is asynchronous).
   * Blocks the calling thread while the network runs.
   */
  embedSync(input: EmbedInput | readonly EmbedInput[], o: EmbedCallOptions = {}): Float32Array | Float32Array[] {
    this.check();
    const many = Array.isArray(input);
    const list = many ? (input as readonly EmbedInput[]) : [input as EmbedInput];
    const opts: PrepareOptions = { size: this.inputSize, align: this.callAlign(o), limits: this.limits };
    const crops = list.map((x, i) => {
      const [input, po] = this.perInput(x, opts, list.length > 1 ? `input ${i}` : 'the input image');
      return prepareInputSync(input, po, list.length > 1 ? i : undefined);
    });
    const out: Float32Array[] = [];
    for (let i = 0; i < crops.length; i += this.maxBatch) {
      const part = crops.slice(i, i + this.maxBatch);
      const p = this.compiled.plan(this.bucket(part.length));
      const arena = this.arenaFor(p, true);
      this.fill(p, arena, part);
      this.compiled.runSync(p, arena);
      out.push(...this.results(p, arena, part.length));
    }
    return many ? out : out[0]!;
  }

  /** Cosine similarity of two embeddings. */
  similarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
    return similarity(a, b);
  }

  /** Compares two embeddings with the model's threshold (or the one given). */
  verify(a: ArrayLike<number>, b: ArrayLike<number>, threshold?: number): VerifyResult {
    const t = threshold ?? this.thresholdValue;
    if (t === undefined)
      throw new QuantFaceError('E_ARG', 'verify: this model has no calibrated threshold; pass one (loadModel(path, { threshold }) or verify(a, b, threshold)), or store provenance.notes.verifyThreshold in its .qfm file');
    if (a.length !== this.dim || b.length !== this.dim) throw new QuantFaceError('E_SHAPE', `verify: embeddings must have ${this.dim} values (got ${a.length} and ${b.length})`);
    return verify(a, b, t);
  }

  /** Embeds two images and verifies them. */
  async compare(a: EmbedInput, b: EmbedInput, o: EmbedCallOptions & { threshold?: number } = {}): Promise<VerifyResult> {
    const [ea, eb] = await this.embed([a, b], o);
    return this.verify(ea!, eb!, o.threshold);
  }

  /**
   * Stops the model: queued images reject with E_CLOSED, the run in progress
   * finishes, buffers are released. Further calls reject with E_CLOSED.
   */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const err = new QuantFaceError('E_CLOSED', 'the model was disposed before this image was embedded');
    for (const it of this.queue.splice(0)) it.reject(err);
    if (this.running) await this.running.catch(() => undefined);
    this.arena = null;
    this.syncArena = null;
    this.compiled.clearPlans();
  }
}

/** What loadModel reads: a model file path (any format, detected by content) or an engine model. */
export type ModelSource = string | Module | LoadedModelFile;

/**
 * Loads and compiles a model for inference. Paths (format told by content,
 * not extension): a quantface model file (.qfm: quantized students keep
 * their packed integer weights), a TF.js graph model (model.json), an ONNX
 * file or face-api's weights manifest (float models run in fp32). The
 * input description comes from the file, its sidecar, the registry of
 * known models or `o.input` (lib/io/load.ts). An
 * engine Module (e.g. a fake-quantized student in memory) compiles as it is.
 * Errors: E_IO, E_FORMAT, E_UNSUPPORTED_FORMAT, E_UNSUPPORTED_OP, E_ARG.
 */
export async function loadModel(source: ModelSource, o: LoadModelOptions = {}): Promise<FaceModel> {
  if (o.threads !== undefined) {
    if (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 1024) throw new QuantFaceError('E_ARG', `threads must be an integer in [1, 1024] (got ${String(o.threads)})`);
    binding.setThreads(o.threads);
  }
  if (o.budget !== undefined) configureBudget(o.budget);
  let model: Module;
  let qfm: LoadedQfm | undefined;
  if (typeof source === 'string') {
    const f = await loadModelFile(source, o.input ? { input: o.input } : {});
    model = f.model;
    qfm = f.qfm;
  } else if (source instanceof Module) model = source;
  else if (source && typeof source === 'object' && (source as LoadedModelFile).model instanceof Module && typeof (source as LoadedModelFile).path === 'string') {
    // A file already loaded by lib/io's loadModelFile (its description resolved).
    model = source.model;
    qfm = source.qfm;
  } else throw new QuantFaceError('E_ARG', 'loadModel: pass a model file path or an engine Module');
  const info = qfm?.info ?? (model as { info?: ModelInfo }).info;
  const copts: CompileOptions = {
    ...(o.precision ? { precision: o.precision } : {}),
    ...(o.preprocessing ? { preprocessing: o.preprocessing } : {}),
    ...(o.approximateInput !== undefined ? { approximateInput: o.approximateInput } : {}),
    ...(qfm ? { packedWeight: (n: string) => qfm!.packedWeight(n) } : {}),
  };
  const compiled = compileModel(model, copts);
  // No threshold given or stored: a known model's (or a student's teacher's) registry threshold.
  const known = o.threshold === undefined && storedThreshold(qfm?.provenance) === undefined ? knownModel(qfm?.provenance?.teacherSha256 ?? info?.sha256 ?? '')?.verifyThreshold : undefined;
  return new FaceModel(compiled, known ? { ...o, threshold: known.cosine } : o, info, qfm?.provenance);
}
