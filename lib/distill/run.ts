/**
 * The stages of quantize() (./trainer.ts), one method each, in the order
 * they run:
 *
 *   resolveQuantizeOptions  every option checked once (./settings.ts)
 *   loadTeacher             the teacher, its input description, the weight decay it allows
 *   openData                the faces, the held-out split, the loaders, the step plan
 *   buildStudent            equalization, fake quantizers, learned ranges, optimiser, run fingerprint
 *   restore                 a checkpoint's state (resume), or the start record
 *   prepareTargets          the held-out faces' teacher embeddings; the teacher cache
 *   calibrate               activation ranges: PTQ, or before training ('first'); the start agreement
 *   train                   distillation with the guard and keep-best
 *   finish                  learned ranges and clipped weights baked, final agreement
 *   save                    the .qfm with its provenance
 *
 * Each stage reads what the ones before it produced (the T, D and S
 * records) and a test can drive them one at a time; quantize() is the list.
 * A stop (the abort signal) ends calibrate or train early: stopResult()
 * then writes the checkpoint and reports where the run got to.
 */
import { existsSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { QuantFaceError } from '../errors.js';
import { binding } from '../binding.js';
import { Tensor, type FTensor } from '../tensor.js';
import { Module, Parameter, noGrad } from '../nn/module.js';
import { Graph } from '../nn/containers.js';
import { bufferPool } from '../nn/pool.js';
import { BatchNorm, Dropout } from '../nn/layers.js';
import { QuantFaceLoss, RelationLoss } from '../nn/loss.js';
import { SGD, AdamW, clipGradNorm } from '../optim/optimizers.js';
import { toQat, quantizers, freezeActRanges, stripQat } from '../quant/qat.js';
import { ActFakeQuant } from '../quant/fake-quant.js';
import { useClippedWeights, bakeClippedWeights, type ClippedWeightFakeQuant } from '../quant/weight-range.js';
import { equalizeActivations } from '../quant/equalize.js';
import { saveQfm, loadQfm, type Provenance } from '../io/qfm.js';
import { preprocess, type ModelInfo } from '../io/model-info.js';
import { flipHorizontal } from '../data/align.js';
import type { AugmentOptions, ResolvedAugment } from '../data/augment.js';
import { WorkerPool, InlineExecutor, type DataExecutor } from '../data/pool.js';
import type { ImageFolder } from '../data/dataset.js';
import type { Batch, DataLoader } from '../data/loader.js';
import { bitsName, layerOverrides, residualRules, type LayerRule } from './bits.js';
import { loadTeacher, weightsSha256, type Teacher } from './teacher.js';
import { DEFAULT_TEACHER_NAME, isKnownTeacher, resolveKnownTeacher } from './known-teachers.js';
import { openData } from './data.js';
import { loadCheckpoint, saveCheckpoint, type JsonValue } from './checkpoint.js';
import { JsonLog, type LogRecord } from './log.js';
import { refineActRanges } from './ranges.js';
import { recalibrateBatchNorm } from './bn.js';
import { tapFeatures, type FeatureTaps } from './features.js';
import { LearnedActQuant, outQuantOwners } from './learned-range.js';
import { batchFor, planSteps, type QuantizeSettings, type StepPlan } from './settings.js';
import type { Agreement, QuantizeProgress, QuantizeResult } from './trainer.js';

/** Held-out images at most (the agreement metric). */
const MAX_HOLDOUT = 256;

/** Lets timers, I/O and signal handlers run (a loop over already-resolved promises never does). */
function yieldToEvents(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** Mixes integers into a 32-bit seed (for per-step reseeding). */
function mix(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
  }
  return h >>> 0;
}

type OptState = Map<Parameter, Record<string, FTensor | number>>;

/** Optimiser state as named tensors (`optim.<param>.<key>`) plus JSON numbers (checkpoints). */
function exportOptState(state: OptState, names: Map<Parameter, string>): { tensors: Map<string, FTensor>; numbers: { [k: string]: number } } {
  const tensors = new Map<string, FTensor>();
  const numbers: { [k: string]: number } = {};
  for (const [p, st] of state) {
    const n = names.get(p);
    if (n === undefined) continue;
    for (const [k, v] of Object.entries(st)) {
      if (v instanceof Tensor) tensors.set(`optim.${n}.${k}`, v);
      else numbers[`${n}.${k}`] = v;
    }
  }
  return { tensors, numbers };
}

function importOptState(state: OptState, byName: Map<string, Parameter>, tensors: Map<string, FTensor>, numbers: { [k: string]: number }): void {
  state.clear();
  const slot = (key: string): [Record<string, FTensor | number>, string] => {
    const dot = key.lastIndexOf('.');
    const p = byName.get(key.slice(0, dot));
    if (!p) throw new QuantFaceError('E_FORMAT', `checkpoint: optimiser state for unknown parameter ${key.slice(0, dot)}`);
    let st = state.get(p);
    if (!st) {
      st = {};
      state.set(p, st);
    }
    return [st, key.slice(dot + 1)];
  };
  for (const [key, t] of tensors) {
    if (!key.startsWith('optim.')) continue;
    const [st, k] = slot(key.slice(6));
    st[k] = t.clone();
  }
  for (const [key, v] of Object.entries(numbers)) {
    const [st, k] = slot(key);
    st[k] = v;
  }
}

interface CheckpointableOptimizer {
  lr: number;
  stepCount: number;
  parameters(): Parameter[];
  zeroGrad(): void;
  step(): void;
  readonly optState: OptState;
}

/** SGD / AdamW whose per-parameter state a checkpoint can hold. */
class CheckpointSGD extends SGD implements CheckpointableOptimizer {
  get optState(): OptState {
    return this.state;
  }
}
class CheckpointAdamW extends AdamW implements CheckpointableOptimizer {
  get optState(): OptState {
    return this.state;
  }
}

function isFlipOnly(a: ResolvedAugment): boolean {
  return a.scale === 0 && a.shift === 0 && a.brightness === 0 && a.contrast === 0 && a.saturation === 0 && a.mixupProb === 0;
}

function cosines(s: FTensor, t: FTensor): Float64Array {
  const [n, d] = s.shape as [number, number];
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let st = 0;
    let ss = 0;
    let tt = 0;
    for (let j = 0; j < d; j++) {
      const a = s.data[i * d + j]!;
      const b = t.data[i * d + j]!;
      st += a * b;
      ss += a * a;
      tt += b * b;
    }
    out[i] = st / Math.max(Math.sqrt(ss * tt), 1e-30);
  }
  return out;
}

function forwardCopy(model: Module, x: FTensor): FTensor {
  return noGrad(() => {
    const y = model.forward(x);
    const c = y.clone() as FTensor;
    if (y !== x) bufferPool.release(y);
    return c;
  });
}

/** What loadTeacher produced. */
export interface TeacherStage {
  teacher: Teacher;
  info: ModelInfo;
  /** Input side in pixels. */
  size: number;
  /** The weight decay of the run: as given, else 5e-4 only when BatchNorm renormalises the layers' outputs. */
  weightDecay: number;
}

/** What openData produced. */
export interface DataStage {
  opened: Awaited<ReturnType<typeof openData>>;
  /** Every image, the training split and the held-out split (null when there is none). */
  all: ImageFolder;
  train: ImageFolder;
  holdout: ImageFolder | null;
  /** The training images as they are (sorted, no augmentation): calibration, range refinement, the teacher cache. */
  plain: DataLoader;
  /** The training batches (shuffled, augmented). */
  loader: DataLoader;
  trainImages: number;
  batchesPerEpoch: number;
  plan: StepPlan;
}

/** What buildStudent produced. */
export interface StudentStage {
  /** The layer rules in force (the given ones, then the residual stream's). */
  rules: LayerRule[];
  student: Module;
  unusedLayerRules: string[];
  clippedWeights: Map<string, ClippedWeightFakeQuant>;
  taps: FeatureTaps | null;
  /** Learned ranges by the name of the activation quantizer they replace, and the modules that own those. */
  learned: Map<string, LearnedActQuant>;
  owners: Map<string, Module>;
  /** The weights the optimiser trains (not the ranges). */
  params: Parameter[];
  paramByName: Map<string, Parameter>;
  nameOfParam: Map<Parameter, string>;
  opt: CheckpointableOptimizer;
  dropouts: Dropout[];
  /** Everything that determines the result (a checkpoint only resumes the same run). */
  fingerprint: { [k: string]: JsonValue };
}

type Best = { agreement: Agreement; step: number; state: Map<string, FTensor> };

/** One quantize() run, stage by stage (see the file comment). */
export class QuantizeRun {
  readonly s: QuantizeSettings;
  readonly log: JsonLog;
  readonly threads: number;
  private readonly t0: number;
  private tStage?: TeacherStage;
  private dStage?: DataStage;
  private sStage?: StudentStage;
  private executor: DataExecutor | null = null;
  private readonly loaders: DataLoader[] = [];
  private unwrapTaps = (): void => undefined;

  // Where the run is.
  step = 0;
  stopped = false;
  /** Stopped during calibration: nothing to checkpoint (ranges not frozen). */
  inCalibration = false;
  lastLoss = NaN;
  lastAgreement: Agreement | null = null;
  startAgreement: Agreement | null = null;
  bestStep: number | undefined;
  resumedFrom: number | undefined;
  readonly rollbacks: QuantizeResult['rollbacks'] = [];
  private startStep = 0;
  private priorSeconds = 0;
  private trainSecondsThisRun = 0;
  private tLoop = 0;
  /** Learned ranges are in place of the frozen quantizers. */
  private swapped = false;
  // The guard and keep-best (all of it checkpoint state).
  private best: Best | null = null;
  private lrFactor = 1;
  private cosEma = NaN;
  private cosBest = -Infinity;
  // The held-out set and the teacher cache.
  private evalInputs: FTensor[] = [];
  private evalTeacher: FTensor[] = [];
  private teacherCache: Float32Array | null = null;
  private out: { path: string; bytes: number } | undefined;

  constructor(settings: QuantizeSettings, t0 = performance.now()) {
    this.s = settings;
    this.t0 = t0;
    this.log = new JsonLog(settings.options.log);
    if (settings.threads !== undefined) binding.setThreads(settings.threads);
    this.threads = binding.getThreads();
  }

  progress(p: QuantizeProgress): void {
    this.s.options.onProgress?.(p);
  }

  private get aborted(): boolean {
    return this.s.options.signal?.aborted === true;
  }

  /** The teacher stage's output (throws when it has not run). */
  get T(): TeacherStage {
    if (!this.tStage) throw new QuantFaceError('E_INTERNAL', 'quantize: loadTeacher has not run');
    return this.tStage;
  }
  /** The data stage's output. */
  get D(): DataStage {
    if (!this.dStage) throw new QuantFaceError('E_INTERNAL', 'quantize: openData has not run');
    return this.dStage;
  }
  /** The student stage's output. */
  get S(): StudentStage {
    if (!this.sStage) throw new QuantFaceError('E_INTERNAL', 'quantize: buildStudent has not run');
    return this.sStage;
  }

  // ================================================================ loadTeacher
  async loadTeacher(): Promise<TeacherStage> {
    const o = this.s.options;
    this.progress({ phase: 'load', step: 0, totalSteps: 0, message: 'loading the teacher' });
    // A known teacher's name (faceplugin, mobileface) unless a file of that name exists; default faceplugin.
    const arg = o.teacher ?? DEFAULT_TEACHER_NAME;
    const teacher = await loadTeacher(
      typeof arg === 'string' && isKnownTeacher(arg) && !existsSync(arg)
        ? await resolveKnownTeacher(arg, { ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}), onMessage: (m) => this.progress({ phase: 'load', step: 0, totalSteps: 0, message: m }) })
        : arg,
      o.teacherInput ? { input: o.teacherInput } : {},
    );
    // Weight decay only where BatchNorm renormalises the layers' outputs (see QuantizeOptions.weightDecay).
    const hasBn = [...teacher.model.modules()].some((m) => m instanceof BatchNorm);
    this.tStage = { teacher, info: teacher.info, size: teacher.info.inputShape[0], weightDecay: this.s.weightDecay ?? (hasBn ? 5e-4 : 0) };
    return this.tStage;
  }

  // ================================================================ openData
  async openData(): Promise<DataStage> {
    const { s } = this;
    const o = s.options;
    const { teacher, size } = this.T;
    const opened = await openData(o.data, {
      size,
      teacher,
      seed: s.seed,
      ...(o.align !== undefined ? { align: o.align } : {}),
      ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
      ...(o.generate ? { generate: o.generate } : {}),
      onGenerate: (g) => this.progress({ phase: 'generate', step: 0, totalSteps: 0, generate: g, message: g.phase }),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    const all = opened.folder;
    let train: ImageFolder = all;
    let holdout: ImageFolder | null = null;
    if (s.holdout > 0 && all.length >= 2) {
      const k = s.holdout < 1 ? Math.min(MAX_HOLDOUT, Math.max(1, Math.round(s.holdout * all.length))) : s.holdout;
      if (k >= all.length) throw new QuantFaceError('E_ARG', `holdout ${s.holdout} leaves no training image out of ${all.length}`);
      const sp = all.split({ holdout: k, seed: s.seed });
      train = sp.train;
      holdout = sp.holdout;
    }
    const executor: DataExecutor = s.workers === 0 ? new InlineExecutor() : new WorkerPool(s.workers);
    this.executor = executor;
    this.progress({ phase: 'prepare', step: 0, totalSteps: 0, message: `reading ${opened.description}` });
    const plain = train.loader({ batchSize: 32, seed: s.seed, executor, augment: false, shuffle: false });
    this.loaders.push(plain);
    const trainImages = (await plain.ready()).images;
    const batchSize = batchFor(s, trainImages);
    // The loader takes AugmentOptions: hand mixup over in that form (a ResolvedAugment's mixupProb would be
    // read as "no mixup").
    const a = s.augment;
    const loaderAugment: AugmentOptions = {
      flip: a.flip, scale: a.scale, shift: a.shift, brightness: a.brightness, contrast: a.contrast, saturation: a.saturation,
      mixup: a.mixupProb > 0 ? { prob: a.mixupProb, alpha: a.mixupAlpha } : false,
    };
    const loader = train.loader({ batchSize, seed: s.seed, executor, augment: loaderAugment, shuffle: true, dropLast: true });
    this.loaders.push(loader);
    await loader.ready();
    const plan = planSteps(s, batchSize, loader.batchesPerEpoch);
    this.dStage = { opened, all, train, holdout, plain, loader, trainImages, batchesPerEpoch: loader.batchesPerEpoch, plan };
    return this.dStage;
  }

  /** The first `count` training images as they are (sorted, no augmentation), preprocessed: calibration inputs. */
  private async plainInputs(count: number): Promise<FTensor[]> {
    const inputs: FTensor[] = [];
    let seen = 0;
    for await (const b of this.D.plain.epoch(0)) {
      inputs.push(preprocess(this.T.info, b.data, b.n));
      seen += b.n;
      if (seen >= count) break;
    }
    return inputs;
  }

  // ================================================================ buildStudent
  async buildStudent(): Promise<StudentStage> {
    const { s } = this;
    const o = s.options;
    const { teacher, info, weightDecay } = this.T;
    const { plan } = this.D;
    const rules = s.residualBits !== undefined ? [...s.layerRules, ...residualRules(teacher.model, s.residualBits)] : s.layerRules;
    const ov = layerOverrides(rules);
    let studentFloat: Module = teacher.model;
    let initSha: string | null = null;
    if (o.init !== undefined) {
      const src = o.init;
      let m: Module;
      if (typeof src === 'string') {
        if (!existsSync(src)) throw new QuantFaceError('E_IO', `init ${src} does not exist; pass a .qfm of the teacher's architecture`, { path: src });
        m = (await loadQfm(src)).model;
      } else if (src instanceof Module) m = src;
      else throw new QuantFaceError('E_ARG', `init must be a .qfm path or an engine Module (got ${typeof src})`);
      studentFloat = teacher.model.clone();
      try {
        studentFloat.loadStateDict(stripQat(m).stateDict());
      } catch (e) {
        throw new QuantFaceError('E_ARG', `init: its weights do not fit the teacher's architecture (${(e as Error).message})`);
      }
      initSha = weightsSha256(studentFloat);
    }
    const equalize = s.equalize;
    if (equalize && !(teacher.model instanceof Graph)) this.log.write({ event: 'equalize', applied: false, reason: 'the teacher is not a graph model' });
    else if (equalize && (equalize.alpha ?? 0.5) > 0) {
      this.progress({ phase: 'prepare', step: 0, totalSteps: plan.totalSteps, message: 'equalizing activation ranges' });
      if (studentFloat === teacher.model) studentFloat = teacher.model.clone();
      const rep = equalizeActivations(studentFloat, await this.plainInputs(256), equalize);
      this.log.write({ event: 'equalize', applied: rep.applied, ...(rep.reason ? { reason: rep.reason } : {}), fixedGroups: rep.fixedGroups, groups: rep.groups.map((g) => ({ measured: g.measured, channels: g.channels, scaled: g.scaled, maxScale: g.maxScale })) });
    }
    const student = toQat(studentFloat, { weightBits: s.bits.weightBits, actBits: s.bits.actBits, ste: s.ste, calibrationSteps: plan.calibSteps, layer: ov.layer });
    const unusedLayerRules = ov.unused();
    // Clipped weight ranges replace the min/max weight quantizers before the optimiser collects parameters.
    const clippedWeights = useClippedWeights(student, s.noTrain && s.weightRange === 'learned' ? 'mse' : s.weightRange);
    const ratioParams = new Set([...clippedWeights.values()].flatMap((q) => q.ratioParameters()));
    // Feature taps wrap the student's and the teacher's PReLU / Add nodes for the run (removed before saving).
    const taps: FeatureTaps | null = s.featureLoss > 0 && !s.noTrain ? tapFeatures(student, teacher.model) : null;
    if (taps) {
      let done = false;
      this.unwrapTaps = (): void => {
        if (!done) taps.unwrap();
        done = true;
      };
    }
    if (!quantizers(student).length) throw new QuantFaceError('E_UNSUPPORTED_OP', `teacher ${info.name} has no layer quantize can quantize (no Conv2d, Linear, PReLU, ReLU or Add)`);
    const trainable = [...student.namedParameters()].filter(([, p]) => p.requiresGrad);
    const paramByName = new Map(trainable.map(([n, p]) => [n, p]));
    const nameOfParam = new Map(trainable.map(([n, p]) => [p, n]));
    const params = trainable.map(([, p]) => p).filter((p) => !ratioParams.has(p));
    // Learned ranges: one LearnedActQuant per activation quantizer, swapped in when calibration ends.
    const owners = outQuantOwners(student);
    const learned = new Map<string, LearnedActQuant>();
    if (s.actRange === 'learned' && !s.noTrain)
      for (const [qname, owner] of owners) {
        const q = owner.getChild('outQuant') as ActFakeQuant;
        const lm = new LearnedActQuant(q.bits, -1, 1);
        lm.dropProb = s.qdrop;
        learned.set(qname, lm);
        nameOfParam.set(lm.a, `lrange.${qname}.a`);
        nameOfParam.set(lm.b, `lrange.${qname}.b`);
        paramByName.set(`lrange.${qname}.a`, lm.a);
        paramByName.set(`lrange.${qname}.b`, lm.b);
      }
    const rangeParams = [...learned.values()].flatMap((m) => [m.a, m.b]).concat([...ratioParams]);
    const groups = [
      { params, lrScale: 1 },
      ...(rangeParams.length ? [{ params: rangeParams, lrScale: s.rangeLrScale, options: { weightDecay: 0 } }] : []),
    ];
    const opt: CheckpointableOptimizer =
      s.optimizer === 'sgd'
        ? new CheckpointSGD(groups as never, plan.lr, { momentum: s.momentum, nesterov: s.momentum > 0, weightDecay })
        : new CheckpointAdamW(groups as never, plan.lr, { weightDecay });
    const dropouts = [...student.modules()].filter((m): m is Dropout => m instanceof Dropout);
    const { all, train, opened } = this.D;
    const fingerprint: { [k: string]: JsonValue } = {
      teacher: teacher.sha256,
      bits: bitsName(s.bits),
      layerBits: rules.map((r) => `${r.pattern}=${r.bits === null ? 'float' : `${r.bits.weightBits !== undefined ? `w${r.bits.weightBits}` : ''}${r.bits.actBits !== undefined ? `a${r.bits.actBits}` : ''}`}`).join(','),
      data: createHash('sha256').update(all.root).update('\0').update(train.files.join('\n')).digest('hex'),
      align: opened.align,
      batchSize: plan.batchSize,
      seed: s.seed,
      optimizer: s.optimizer,
      lr: plan.lr,
      momentum: s.momentum,
      weightDecay,
      clipNorm: s.clipNorm,
      milestones: plan.milestones,
      lrGamma: s.lrGamma,
      totalSteps: plan.totalSteps,
      calibSteps: plan.calibSteps,
      ste: s.ste,
      actRange: s.actRange,
      ...(o.bnRecalibrate ? { bnRecalibrate: true } : {}),
      ...(s.featureLoss > 0 ? { featureLoss: s.featureLoss } : {}),
      ...(s.qdrop > 0 ? { qdrop: s.qdrop } : {}),
      ...(s.relationLoss > 0 ? { relationLoss: s.relationLoss } : {}),
      ...(initSha ? { init: initSha } : {}),
      ...(equalize ? { equalize: { ...equalize } as { [k: string]: JsonValue } } : {}),
      ...(s.weightRange !== 'minmax' ? { weightRange: s.weightRange } : {}),
      ...(s.lrSchedule !== 'step' ? { lrSchedule: s.lrSchedule } : {}),
      ...(s.rangeLrScale !== 10 ? { rangeLrScale: s.rangeLrScale } : {}),
      noTrain: s.noTrain,
      augment: { ...s.augment },
      ...(s.noTrain ? {} : { calibration: s.calibration, keepBest: s.keepBest, guard: s.guard ? { ...s.guard } : false }),
    };
    this.sStage = { rules, student, unusedLayerRules, clippedWeights, taps, learned, owners, params, paramByName, nameOfParam, opt, dropouts, fingerprint };
    return this.sStage;
  }

  /** Puts the learned ranges in place of the frozen quantizers (fromState: values come from a checkpoint). */
  private swapIn(fromState: boolean): void {
    const { learned, owners, student } = this.S;
    if (!learned.size || this.swapped) return;
    for (const [qname, owner] of owners) {
      const lm = learned.get(qname)!;
      if (!fromState) {
        const q = owner.getChild('outQuant') as ActFakeQuant;
        lm.reset(Math.min(q.min, 0), Math.max(q.max, q.min + 1e-6, 0));
      }
      lm.train(student.training);
      owner.setChild('outQuant', lm);
    }
    this.swapped = true;
  }

  private swapOut(): void {
    if (!this.swapped) return;
    const { learned, owners } = this.S;
    for (const [qname, owner] of owners) owner.setChild('outQuant', learned.get(qname)!.toActFakeQuant());
    this.swapped = false;
  }

  // ================================================================ restore
  /** Resumes from the checkpoint when asked and it exists (the same run only); else logs the start. */
  async restore(): Promise<void> {
    const { s } = this;
    const ckptPath = s.checkpointPath;
    const { fingerprint, student, opt, paramByName } = this.S;
    const { plan, trainImages, holdout, batchesPerEpoch, opened } = this.D;
    const { teacher, info } = this.T;
    if (!(s.resume && ckptPath && existsSync(ckptPath))) {
      this.log.write({
        event: 'start',
        teacher: teacher.source,
        teacherName: info.name,
        data: opened.description,
        trainImages,
        holdoutImages: holdout?.length ?? 0,
        batchesPerEpoch,
        threads: this.threads,
        ...fingerprint,
      });
      return;
    }
    const ck = await loadCheckpoint(ckptPath);
    const fp = ck.meta.fingerprint as { [k: string]: JsonValue } | undefined;
    const diff = Object.keys(fingerprint).filter((k) => JSON.stringify(fp?.[k]) !== JSON.stringify(fingerprint[k]));
    if (diff.length)
      throw new QuantFaceError(
        'E_ARG',
        `checkpoint ${ckptPath} belongs to another run (different ${diff.join(', ')}); resume with the same options, or delete it (or drop --resume) to start over`,
        { path: ckptPath },
      );
    const sd = new Map<string, FTensor>();
    const bestSd = new Map<string, FTensor>();
    for (const [k, t] of ck.tensors) {
      if (k.startsWith('model.')) sd.set(k.slice(6), t);
      else if (k.startsWith('best.')) bestSd.set(k.slice(5), t);
    }
    const g = (ck.meta.guard ?? {}) as { cosEma?: number | null; cosBest?: number | null; lrFactor?: number; rollbacks?: QuantizeResult['rollbacks']; startAgreement?: Agreement | null; best?: { agreement: Agreement; step: number } | null };
    this.cosEma = typeof g.cosEma === 'number' ? g.cosEma : NaN;
    this.cosBest = typeof g.cosBest === 'number' ? g.cosBest : -Infinity;
    this.lrFactor = g.lrFactor ?? 1;
    this.rollbacks.push(...(g.rollbacks ?? []));
    this.startAgreement = g.startAgreement ?? null;
    if (g.best && bestSd.size) this.best = { ...g.best, state: bestSd };
    if (ck.meta.learnedRanges === true) this.swapIn(true);
    student.loadStateDict(sd, true);
    importOptState(opt.optState, paramByName, ck.tensors, (ck.meta.optimizerNumbers ?? {}) as { [k: string]: number });
    opt.stepCount = Number(ck.meta.optimizerSteps ?? 0);
    this.startStep = Number(ck.meta.step);
    this.step = this.startStep;
    this.priorSeconds = Number(ck.meta.seconds ?? 0);
    this.resumedFrom = this.startStep;
    if (ck.meta.threads !== this.threads)
      this.progress({ phase: 'prepare', step: this.startStep, totalSteps: plan.totalSteps, message: `warning: the checkpoint was written with ${String(ck.meta.threads)} threads, this run uses ${this.threads}; the result may differ in the last bits from an uninterrupted run` });
    this.log.write({ event: 'resume', step: this.startStep, checkpoint: ckptPath });
  }

  // ================================================================ prepareTargets
  /** The held-out faces and their teacher embeddings (once); the teacher cache for flip-only augmentation. */
  async prepareTargets(): Promise<void> {
    const { s } = this;
    const { teacher, info, size } = this.T;
    const { train, holdout, plain, plan, trainImages } = this.D;
    const evalSet = holdout ?? train;
    const evalLoader = evalSet.loader({ batchSize: Math.min(64, evalSet.length), seed: s.seed, executor: this.executor!, augment: false, shuffle: false });
    this.loaders.push(evalLoader);
    let evalCount = 0;
    for await (const b of evalLoader.epoch(0)) {
      if (evalCount >= MAX_HOLDOUT) break;
      const x = preprocess(info, b.data, b.n);
      this.evalInputs.push(x);
      this.evalTeacher.push(forwardCopy(teacher.model, x));
      evalCount += b.n;
    }
    // Embeddings of every training image and its mirror, computed once in a fixed order: deterministic, and
    // a third of the step's work saved.
    if (!s.noTrain && !this.S.taps && isFlipOnly(s.augment) && trainImages <= 50000) {
      this.progress({ phase: 'prepare', step: this.startStep, totalSteps: plan.totalSteps, message: 'teacher embeddings of the training images' });
      const D = info.outputDim;
      const cache = new Float32Array(train.length * 2 * D);
      const per = size * size * 3;
      for await (const b of plain.epoch(0)) {
        await yieldToEvents();
        if (this.aborted) break;
        const both = new Float32Array(2 * b.n * per);
        both.set(b.data);
        for (let i = 0; i < b.n; i++) flipHorizontal(b.data, size, both, i * per, (b.n + i) * per);
        const e = forwardCopy(teacher.model, preprocess(info, both, 2 * b.n));
        for (let i = 0; i < b.n; i++) {
          const id = b.ids[i]!;
          cache.set(e.data.subarray(i * D, (i + 1) * D) as Float32Array, id * 2 * D);
          cache.set(e.data.subarray((b.n + i) * D, (b.n + i + 1) * D) as Float32Array, (id * 2 + 1) * D);
        }
      }
      this.teacherCache = cache;
    }
  }

  /** The student's agreement with the teacher on the held-out faces (eval mode). */
  evaluate(): Agreement {
    const { student } = this.S;
    const wasTraining = student.training;
    student.eval();
    try {
      const cs: number[] = [];
      let lossSum = 0;
      let n = 0;
      const evLoss = new QuantFaceLoss();
      for (let i = 0; i < this.evalInputs.length; i++) {
        const y = forwardCopy(student, this.evalInputs[i]!);
        cs.push(...cosines(y, this.evalTeacher[i]!));
        lossSum += evLoss.forward(y, this.evalTeacher[i]!) * y.shape[0]!;
        n += y.shape[0]!;
      }
      return {
        meanCosine: cs.reduce((a, b) => a + b, 0) / cs.length,
        minCosine: Math.min(...cs),
        loss: lossSum / n,
        images: n,
        split: this.D.holdout ? 'holdout' : 'train',
      };
    } finally {
      if (wasTraining) student.train(true);
    }
  }

  /** Measures the held-out agreement; keeps the student when it is the best so far (ranges frozen only). */
  private evaluateAndKeep(at: number): Agreement {
    const a = this.evaluate();
    this.log.write({ event: 'eval', step: at, ...a });
    if ((this.s.keepBest || this.s.guard) && (!this.best || a.meanCosine > this.best.agreement.meanCosine)) this.snapshot(a, at);
    return a;
  }

  private snapshot(agreement: Agreement, at: number): void {
    const state = new Map<string, FTensor>();
    for (const [k, t] of this.S.student.stateDict()) state.set(k, this.best?.state.get(k)?.copyFrom(t) ?? (t.clone() as FTensor));
    this.best = { agreement, step: at, state };
  }

  /** Range refinement at the end of calibration (MSE), unless the ranges stay min/max. */
  private async refine(step: number): Promise<void> {
    if (this.s.actRange === 'minmax') return;
    this.progress({ phase: 'calibrate', step, totalSteps: this.D.plan.totalSteps, message: 'refining the activation ranges (MSE)' });
    const changes = refineActRanges(this.S.student, await this.plainInputs(256), this.s.seed);
    this.log.write({ event: 'ranges', step, method: 'mse', ranges: changes.map((c) => ({ name: c.name, bits: c.bits, before: c.before, after: c.after })) });
  }

  // ================================================================ calibrate
  /** PTQ calibration in inference mode: observers on, everything else as at inference; stops early on the signal. */
  private async calibrateInference(count: number, onStep: (k: number, epoch: number) => void): Promise<number> {
    const { student } = this.S;
    const { info } = this.T;
    student.eval();
    for (const m of student.modules()) if (m instanceof ActFakeQuant) m.training = true;
    const cs = this.D.loader.stream({ step: 0 });
    let k = 0;
    this.inCalibration = true;
    try {
      while (k < count) {
        await yieldToEvents();
        if (this.aborted) {
          this.stopped = true;
          break;
        }
        const r = await cs.next();
        if (r.done) break;
        const b = r.value;
        bufferPool.release(noGrad(() => student.forward(preprocess(info, b.data, b.n))));
        k++;
        onStep(k, b.epoch);
      }
    } finally {
      await cs.return(undefined);
    }
    student.eval();
    if (!this.stopped) {
      freezeActRanges(student);
      this.inCalibration = false;
    }
    return k;
  }

  /**
   * The activation ranges: all of PTQ (noTrain), or calibration before training ('first', not on resume)
   * followed by the held-out agreement of that start (keep-best's first candidate). With calibration
   * 'during' the ranges are observed by train()'s first steps instead.
   */
  async calibrate(): Promise<void> {
    const { s } = this;
    const { plan } = this.D;
    this.tLoop = performance.now();
    if (s.noTrain) {
      this.step = await this.calibrateInference(plan.totalSteps, (k, epoch) => {
        this.progress({ phase: 'calibrate', step: k, totalSteps: plan.totalSteps, epoch });
        this.log.write({ event: 'calibrate', step: k });
      });
      if (!this.stopped) await this.refine(this.step);
      return;
    }
    if (s.calibration === 'first' && this.resumedFrom === undefined) {
      this.progress({ phase: 'calibrate', step: 0, totalSteps: plan.calibSteps, message: `calibrating the activation ranges (${plan.calibSteps} batches), then distilling from that student` });
      const k = await this.calibrateInference(plan.calibSteps, (kk, epoch) => this.progress({ phase: 'calibrate', step: kk, totalSteps: plan.calibSteps, epoch }));
      this.log.write({ event: 'calibrate', steps: k, before: 'training' });
      if (this.stopped) return;
      await this.refine(0);
      this.swapIn(false);
    }
    // A resumed run's ranges (and best student) come from its checkpoint, even one written at step 0.
    if (s.calibration === 'first' && this.resumedFrom === undefined && (s.keepBest || s.guard)) {
      this.progress({ phase: 'evaluate', step: 0, totalSteps: plan.totalSteps, message: 'held-out agreement' });
      this.startAgreement = this.evaluateAndKeep(0);
      this.lastAgreement = this.startAgreement;
      this.progress({ phase: 'prepare', step: 0, totalSteps: plan.totalSteps, message: `held-out agreement before training: mean cosine ${this.startAgreement.meanCosine.toFixed(4)}` });
    }
  }

  // ================================================================ train
  private rollback(at: number, reason: string): boolean {
    const guard = this.s.guard!;
    const b = this.best!;
    this.S.student.loadStateDict(b.state);
    this.S.opt.optState.clear();
    this.lrFactor *= guard.lrFactor;
    this.rollbacks.push({ step: at, toStep: b.step, reason, lrFactor: this.lrFactor });
    const last = this.rollbacks.length > guard.maxRollbacks;
    this.log.write({ event: 'rollback', step: at, toStep: b.step, reason, lrFactor: this.lrFactor, agreement: b.agreement.meanCosine, stopTraining: last });
    this.progress({
      phase: 'train', step: at, totalSteps: this.D.plan.totalSteps,
      message: `warning: training diverged at step ${at} (${reason}); rolled back to the student of step ${b.step} (held-out cos ${b.agreement.meanCosine.toFixed(4)})` +
        (last ? `; ${this.rollbacks.length} divergences: training stops here with that student` : `, learning rate x${this.lrFactor.toPrecision(2)}`),
    });
    this.lastAgreement = b.agreement;
    return last;
  }

  /** The distillation loop, from the current step to the last; then keeps the best student. */
  async train(): Promise<void> {
    const { s } = this;
    const { guard } = s;
    const { info } = this.T;
    const { loader, plan } = this.D;
    const { student, opt, taps, learned, dropouts, params } = this.S;
    const { totalSteps, calibSteps, batchSize, schedule, evalEvery } = plan;
    const D = info.outputDim;
    const lossFn = new QuantFaceLoss();
    const relationFn = s.relationLoss > 0 ? new RelationLoss() : null;
    const tol = (best: number): number => Math.max(0.02, 0.5 * (1 - best));
    const rangesFrozen = (): boolean => s.calibration === 'first' || this.step >= calibSteps;
    let emaRate = 0;
    student.train();
    const stream: AsyncGenerator<Batch, void, undefined> = loader.stream({ step: this.startStep });
    try {
      let tStep = performance.now();
      while (this.step < totalSteps && !this.stopped) {
        // A cached loader's batches are ready at once: yield to the event loop so signal handlers run.
        await yieldToEvents();
        if (this.aborted) {
          this.stopped = true;
          break;
        }
        const r = await stream.next();
        if (r.done) break;
        const b = r.value;
        const step = this.step;
        const x = preprocess(info, b.data, b.n);
        let tEmb: FTensor;
        if (this.teacherCache) {
          tEmb = Tensor.zeros([b.n, D]);
          for (let i = 0; i < b.n; i++) {
            const k = b.ids[i]! * 2 + (b.flipped[i] ? 1 : 0);
            (tEmb.data as Float32Array).set(this.teacherCache.subarray(k * D, (k + 1) * D), i * D);
          }
        } else tEmb = taps ? taps.captureTeacher(() => forwardCopy(this.T.teacher.model, x)) : forwardCopy(this.T.teacher.model, x);
        const lrNow = schedule(step) * this.lrFactor;
        opt.lr = lrNow;
        dropouts.forEach((d, k) => d.reseed(mix(s.seed, step, k)));
        if (s.qdrop > 0) [...learned.values()].forEach((m, k) => m.reseed(mix(s.seed, step, 0x51d, k)));
        let loss: number;
        let embLoss = NaN;
        let relLoss = 0;
        let gradNorm = NaN;
        try {
          const y = student.forward(x);
          embLoss = lossFn.forward(y, tEmb);
          relLoss = relationFn && b.n >= 2 ? relationFn.forward(y, tEmb) : 0;
          loss = (taps ? embLoss + taps.compute(s.featureLoss) : embLoss) + s.relationLoss * relLoss;
          opt.zeroGrad();
          const gy = lossFn.backward();
          if (relationFn && b.n >= 2) {
            const gr = relationFn.backward(s.relationLoss).data;
            const gd = gy.data;
            for (let i = 0; i < gd.length; i++) gd[i] = gd[i]! + gr[i]!;
          }
          const g = student.backward(gy);
          for (const gi of Array.isArray(g) ? g : [g]) bufferPool.release(gi);
          gradNorm = s.clipNorm > 0 ? clipGradNorm(opt.parameters(), s.clipNorm) : NaN;
        } catch (e) {
          // Weights that overflowed make the quantizers refuse their ranges: a divergence, not a bug.
          if (!(guard && this.best) || params.every((p) => p.data.data.every(Number.isFinite))) throw e;
          loss = NaN;
        }
        const finite = Number.isFinite(loss) && !(s.clipNorm > 0 && !Number.isFinite(gradNorm));
        if (!finite && !(guard && this.best)) throw new QuantFaceError('E_INTERNAL', `the distillation loss became ${loss} at step ${step}; lower --lr`);
        if (finite) opt.step();
        this.step = step + 1;
        const at = this.step;
        this.lastLoss = loss;
        const now = performance.now();
        const dt = (now - tStep) / 1000;
        tStep = now;
        this.trainSecondsThisRun = (now - this.tLoop) / 1000;
        const rate = b.n / Math.max(dt, 1e-9);
        emaRate = emaRate === 0 ? rate : 0.9 * emaRate + 0.1 * rate;
        const cosNow = lossFn.lastMeanCosine;
        const rec: LogRecord = { event: 'step', step: at, epoch: b.epoch, loss, cosine: cosNow, lr: lrNow, gradNorm, imagesPerSec: rate, ...(taps ? { embLoss, featureLoss: taps.lastLoss } : {}), ...(relationFn ? { embLoss, relationLoss: relLoss } : {}) };
        if (s.calibration === 'during' && at === calibSteps) rec.calibrated = true;
        this.log.write(rec);
        if (s.calibration === 'during' && at === calibSteps) {
          freezeActRanges(student);
          await this.refine(at);
          this.swapIn(false);
        }
        // The guard: a non-finite loss, or a training cosine that collapses far below its running best,
        // is checked against the held-out agreement at once.
        let diverged: string | null = !finite ? `loss ${loss}` : null;
        if (finite && rangesFrozen() && Number.isFinite(cosNow)) {
          this.cosEma = Number.isNaN(this.cosEma) ? cosNow : 0.8 * this.cosEma + 0.2 * cosNow;
          this.cosBest = Math.max(this.cosBest, this.cosEma);
        }
        const collapsed = finite && guard !== null && this.best !== null && Number.isFinite(cosNow) && cosNow < this.cosBest - Math.max(0.1, 3 * (1 - this.cosBest));
        const evalDue = (evalEvery > 0 && at % evalEvery === 0) || at === totalSteps;
        if (!diverged && (evalDue || collapsed) && rangesFrozen()) {
          this.progress({ phase: 'evaluate', step: at, totalSteps, message: 'held-out agreement' });
          this.lastAgreement = this.evaluateAndKeep(at);
          const bestNow = this.best as Best | null;
          if (guard && bestNow && this.lastAgreement.meanCosine < bestNow.agreement.meanCosine - tol(bestNow.agreement.meanCosine))
            diverged = `held-out cos ${this.lastAgreement.meanCosine.toFixed(4)}, best ${bestNow.agreement.meanCosine.toFixed(4)}${collapsed ? `; training cos ${cosNow.toFixed(4)}` : ''}`;
          tStep = performance.now();
        } else if (!diverged && evalDue) {
          this.lastAgreement = this.evaluate();
          this.log.write({ event: 'eval', step: at, ...this.lastAgreement });
          tStep = performance.now();
        }
        if (diverged && guard && this.best) {
          if (this.rollback(at, diverged)) break;
          this.cosEma = NaN;
          this.cosBest = -Infinity;
        }
        const eta = ((totalSteps - at) * batchSize) / Math.max(emaRate, 1e-9);
        this.progress({
          phase: 'train', step: at, totalSteps, epoch: b.epoch, loss, cosine: cosNow, lr: lrNow, imagesPerSec: emaRate, etaSeconds: eta,
          ...(this.lastAgreement ? { agreement: this.lastAgreement.meanCosine } : {}),
        });
        if (s.checkpointEvery > 0 && at % s.checkpointEvery === 0 && at < totalSteps) {
          await this.writeCheckpoint();
          tStep = performance.now();
        }
      }
      student.eval();
      // Keep the best student: the last one only when nothing before it agreed better with the teacher.
      const bestNow = this.best as Best | null;
      if (!this.stopped && s.keepBest && bestNow && this.lastAgreement && bestNow.step !== this.step && bestNow.agreement.meanCosine > this.lastAgreement.meanCosine) {
        student.loadStateDict(bestNow.state);
        this.log.write({ event: 'keep-best', step: bestNow.step, agreement: bestNow.agreement.meanCosine, last: this.lastAgreement.meanCosine });
        this.progress({ phase: 'train', step: this.step, totalSteps, message: `kept the student of step ${bestNow.step} (held-out cos ${bestNow.agreement.meanCosine.toFixed(4)}; the last one had ${this.lastAgreement.meanCosine.toFixed(4)})` });
        this.lastAgreement = bestNow.agreement;
        this.bestStep = bestNow.step;
      }
    } finally {
      await stream.return(undefined);
    }
  }

  /** The checkpoint: student, optimiser, step, and the guard's state (bit-exact resume). */
  private async writeCheckpoint(): Promise<void> {
    const ckptPath = this.s.checkpointPath;
    if (!ckptPath) return;
    const { student, opt, nameOfParam, fingerprint } = this.S;
    const tensors = new Map<string, FTensor>();
    for (const [k, t] of student.stateDict()) tensors.set(`model.${k}`, t);
    const os = exportOptState(opt.optState, nameOfParam);
    for (const [k, t] of os.tensors) tensors.set(k, t);
    const best = this.best;
    const meta = {
      fingerprint,
      step: this.step,
      optimizerSteps: opt.stepCount,
      learnedRanges: this.swapped,
      optimizerNumbers: os.numbers,
      threads: this.threads,
      seconds: this.priorSeconds + this.trainSecondsThisRun,
      lastLoss: Number.isFinite(this.lastLoss) ? this.lastLoss : null,
      teacherSource: this.T.teacher.source,
      data: this.D.opened.description,
      guard: {
        cosEma: Number.isFinite(this.cosEma) ? this.cosEma : null,
        cosBest: Number.isFinite(this.cosBest) ? this.cosBest : null,
        lrFactor: this.lrFactor,
        rollbacks: this.rollbacks,
        startAgreement: this.startAgreement,
        best: best ? { agreement: best.agreement, step: best.step } : null,
      } as unknown as JsonValue,
    };
    if (best) for (const [k, t] of best.state) tensors.set(`best.${k}`, t);
    this.progress({ phase: 'checkpoint', step: this.step, totalSteps: this.D.plan.totalSteps, message: `checkpoint ${ckptPath}` });
    const bytes = await saveCheckpoint(ckptPath, { meta, tensors });
    this.log.write({ event: 'checkpoint', step: this.step, path: ckptPath, bytes });
  }

  private resultBase(): Omit<QuantizeResult, 'completed' | 'agreement' | 'seconds' | 'totalSeconds'> {
    return {
      student: this.S.student, teacher: this.T.teacher, bits: this.s.bits, steps: this.step, totalSteps: this.D.plan.totalSteps, noTrain: this.s.noTrain, finalLoss: this.lastLoss,
      trainImages: this.D.trainImages, holdoutImages: this.D.holdout?.length ?? 0, data: this.D.opened.description, ...(this.resumedFrom !== undefined ? { resumedFrom: this.resumedFrom } : {}),
      unusedLayerRules: this.S.unusedLayerRules, recipe: this.s.recipe, startAgreement: this.startAgreement, ...(this.bestStep !== undefined ? { bestStep: this.bestStep } : {}), rollbacks: this.rollbacks,
    };
  }

  /** After a stop: the checkpoint (unless stopped in calibration) and the result of a run to resume. */
  async stopResult(): Promise<QuantizeResult> {
    this.trainSecondsThisRun = (performance.now() - this.tLoop) / 1000;
    const checkpointed = !this.s.noTrain && !this.inCalibration;
    if (checkpointed) await this.writeCheckpoint();
    this.unwrapTaps();
    this.swapOut();
    this.log.write({ event: 'stopped', step: this.step });
    this.progress({ phase: 'done', step: this.step, totalSteps: this.D.plan.totalSteps, message: 'stopped' });
    return {
      ...this.resultBase(), completed: false, agreement: this.lastAgreement,
      ...(this.s.checkpointPath && checkpointed ? { checkpoint: this.s.checkpointPath } : {}),
      seconds: (performance.now() - this.t0) / 1000, totalSeconds: this.priorSeconds + this.trainSecondsThisRun,
    };
  }

  // ================================================================ finish
  /** The student in its saved form (frozen ranges, baked weights, BatchNorm statistics) and its final agreement. */
  async finish(): Promise<Agreement> {
    const { s } = this;
    const { student, clippedWeights } = this.S;
    const { plan, plain } = this.D;
    this.trainSecondsThisRun = (performance.now() - this.tLoop) / 1000;
    this.unwrapTaps();
    if (this.swapped) {
      this.swapOut();
      this.lastAgreement = null; // re-measured on the saved form
    }
    if (clippedWeights.size) {
      const baked = bakeClippedWeights(student);
      this.log.write({ event: 'bake-weights', weightRange: s.weightRange, layers: baked.layers, maxError: baked.maxError });
      this.lastAgreement = null;
    }
    freezeActRanges(student);
    if (s.options.bnRecalibrate) {
      this.progress({ phase: 'calibrate', step: this.step, totalSteps: plan.totalSteps, message: 'BatchNorm statistics of the student' });
      const inputs: FTensor[] = [];
      let seen = 0;
      for await (const b of plain.epoch(0)) {
        if (b.n < 2) continue;
        inputs.push(preprocess(this.T.info, b.data, b.n));
        seen += b.n;
        if (seen >= 512) break;
      }
      const layers = recalibrateBatchNorm(student, inputs);
      this.log.write({ event: 'bn-recalibrate', step: this.step, layers, images: seen });
      this.lastAgreement = null;
    }
    if (!this.lastAgreement || s.noTrain) {
      this.progress({ phase: 'evaluate', step: this.step, totalSteps: plan.totalSteps, message: 'held-out agreement' });
      this.lastAgreement = this.evaluate();
      this.log.write({ event: 'eval', step: this.step, ...this.lastAgreement });
    }
    return this.lastAgreement;
  }

  // ================================================================ save
  /** Saves the .qfm (when out is given) with its provenance; the finished run's checkpoint is removed. */
  async save(): Promise<{ path: string; bytes: number } | undefined> {
    const { s } = this;
    const o = s.options;
    const outPath = s.outPath;
    const { teacher, info, weightDecay } = this.T;
    const { opened, trainImages, holdout, plan } = this.D;
    const { student, rules, fingerprint } = this.S;
    const agreement = this.lastAgreement;
    if (!agreement) throw new QuantFaceError('E_INTERNAL', 'quantize: save before finish');
    if (outPath) {
      this.progress({ phase: 'save', step: this.step, totalSteps: plan.totalSteps, message: `saving ${outPath}` });
      const sinfo: ModelInfo = { ...info, name: `${info.name}-${bitsName(s.bits)}${rules.length ? '-mixed' : ''}` };
      const bytes = await saveQfm(student, outPath, {
        info: sinfo,
        provenance: {
          teacherSha256: teacher.sha256,
          weightBits: s.bits.weightBits,
          actBits: s.bits.actBits,
          data: { source: opened.description, kind: opened.kind, align: opened.align, trainImages, holdoutImages: holdout?.length ?? 0 },
          notes: {
            method: s.noTrain ? 'PTQ (calibration only)' : 'QuantFace distillation',
            recipe: s.recipe,
            ...(s.noTrain ? {} : { calibration: s.calibration, weightDecay, optimizer: s.optimizer }),
            ...(this.startAgreement ? { startAgreement: this.startAgreement.meanCosine } : {}),
            ...(this.bestStep !== undefined ? { bestStep: this.bestStep } : {}),
            ...(this.rollbacks.length ? { rollbacks: this.rollbacks } : {}),
            teacher: teacher.source === 'module' ? info.name : basename(teacher.source),
            ...(rules.length ? { layerBits: fingerprint.layerBits as string } : {}),
            ...(s.equalize ? { equalize: { alpha: s.equalize.alpha ?? 0.5, statistic: s.equalize.statistic ?? 'range' } } : {}),
            steps: this.step,
            batchSize: plan.batchSize,
            lr: plan.lr,
            calibSteps: plan.calibSteps,
            seed: s.seed,
            augment: { ...s.augment },
            agreement: { ...agreement },
            seconds: this.priorSeconds + this.trainSecondsThisRun,
            ...(o.notes !== undefined ? { user: o.notes } : {}),
          } as unknown as Provenance['notes'],
        },
      });
      this.out = { path: outPath, bytes };
      this.log.write({ event: 'saved', path: outPath, bytes });
    }
    // The run is complete: its checkpoint has served its purpose.
    if (s.checkpointPath && !s.noTrain && existsSync(s.checkpointPath)) await unlink(s.checkpointPath).catch(() => undefined);
    return this.out;
  }

  /** The result of a completed run. */
  result(): QuantizeResult {
    const totalSeconds = this.priorSeconds + this.trainSecondsThisRun;
    const agreement = this.lastAgreement!;
    this.log.write({ event: 'done', step: this.step, totalSteps: this.D.plan.totalSteps, finalLoss: this.lastLoss, agreement, seconds: totalSeconds });
    this.progress({ phase: 'done', step: this.step, totalSteps: this.D.plan.totalSteps, agreement: agreement.meanCosine });
    return { ...this.resultBase(), completed: true, agreement, ...(this.out ? { out: this.out } : {}), seconds: (performance.now() - this.t0) / 1000, totalSeconds };
  }

  /** Releases the loaders and the decoding workers (and the feature taps), whatever stage the run reached. */
  async close(): Promise<void> {
    this.unwrapTaps();
    for (const l of this.loaders) await l.close().catch(() => undefined);
    await this.executor?.close();
  }
}
