/**
 * One evaluation run: load the models, read the dataset (pairs folder,
 * insightface .bin or IJB folder), embed, score, and build the report.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { access } from 'node:fs/promises';
import { QuantFaceError } from '../errors.js';
import { CROP_PRESETS, type CropPreset } from './align.js';
import { readBinSet } from './bin.js';
import { loadEmbedder, type Embedder, type EvalBackend } from './embedder.js';
import type { InputOverrides } from '../io/load.js';
import { readIjbMeta, runIjb } from './ijb.js';
import { readLandmarks, readPairs } from './pairs.js';
import { detectPairsLandmarks } from './detect.js';
import { thinRoc, type EvalReport, type ReportModel } from './report.js';
import { binVerificationSet, pairsVerificationSet, runVerification, type AlignChoice, type VerificationSet } from './verify.js';
import sharp from 'sharp';

export type AlignOption = CropPreset | 'landmarks' | 'detect';
export const ALIGN_OPTIONS: readonly AlignOption[] = [...CROP_PRESETS, 'landmarks', 'detect'];

export interface EvalOptions {
  /** Model files, any format (told by content), or metadata files; the first is the teacher. */
  models: string[];
  /** Or ready embedders (library use, tests). */
  embedders?: Array<{ embedder: Embedder; assumed?: boolean }>;
  pairs?: string;
  bin?: string;
  ijb?: string;
  /** IJB target prefix (ijbb / ijbc); detected when absent. */
  target?: string;
  align?: AlignOption;
  /** Landmarks file for --align landmarks on a pairs folder (default: landmarks-5pt.txt beside pairs.txt). */
  landmarks?: string;
  /** --align detect: the face detector and 68-point landmark net (default: faceplugin's, fetched into the cache). */
  detector?: string;
  landmarkModel?: string;
  /** --align detect: progress of the detection pass. */
  onDetectProgress?: (p: { done: number; total: number; seconds: number }) => void;
  batch?: number;
  limit?: number;
  /** Aligned crops shown in the HTML report (default 8; 0: none). */
  samples?: number;
  /** 'auto' (default) / 'engine': quantface's runtime for every format; 'wasm' / 'cpu': TF.js graph models on @tensorflow/tfjs. */
  backend?: EvalBackend;
  /** Input description for model files that record none (CLI --input-mean, --input-std, --bgr, --template). */
  input?: InputOverrides;
  onProgress?: (p: { done: number; total: number; seconds: number }) => void;
  /** Called once per loaded model. */
  onModel?: (name: string, assumed: boolean) => void;
}

function packageVersion(): string {
  try {
    const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
    return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

async function exists(p: string): Promise<boolean> {
  try { await access(p); return true; } catch { return false; }
}

function uniqueNames(embedders: Embedder[]): string[] {
  const seen = new Map<string, number>();
  return embedders.map((e) => {
    const n = seen.get(e.meta.name) ?? 0;
    seen.set(e.meta.name, n + 1);
    return n === 0 ? e.meta.name : `${e.meta.name}#${n + 1}`;
  });
}

/** Runs one evaluation and returns its report (see ./report.ts to write it). */
export async function runEval(o: EvalOptions): Promise<EvalReport> {
  const sources = [o.pairs, o.bin, o.ijb].filter((x) => x !== undefined);
  if (sources.length !== 1) throw new QuantFaceError('E_ARG', 'give exactly one dataset: --pairs DIR, --bin FILE or --ijb DIR');
  if (o.limit !== undefined && (!Number.isInteger(o.limit) || o.limit < 1)) throw new QuantFaceError('E_ARG', `--limit must be a positive integer (got ${o.limit})`);
  if (o.batch !== undefined && (!Number.isInteger(o.batch) || o.batch < 1)) throw new QuantFaceError('E_ARG', `--batch must be a positive integer (got ${o.batch})`);
  if (o.align !== undefined && !ALIGN_OPTIONS.includes(o.align)) throw new QuantFaceError('E_ARG', `--align must be one of ${ALIGN_OPTIONS.join(', ')} (got '${o.align}')`);
  if (o.ijb !== undefined && o.align !== undefined && o.align !== 'landmarks') throw new QuantFaceError('E_ARG', 'IJB images are aligned from their landmarks: --align must be landmarks (or left out)');
  if ((o.bin !== undefined || o.ijb !== undefined) && o.align === 'detect') throw new QuantFaceError('E_ARG', '--align detect runs on the photos of a pairs folder (--pairs)');
  if (o.bin !== undefined && o.align === 'landmarks') throw new QuantFaceError('E_ARG', '.bin sets hold aligned crops without landmarks: use --align none (default) or a box preset');

  // models
  const loaded: Array<{ embedder: Embedder; assumed: boolean }> = [];
  for (const e of o.embedders ?? []) loaded.push({ embedder: e.embedder, assumed: e.assumed ?? false });
  const owned: Embedder[] = [];
  try {
    for (const m of o.models) {
      const r = await loadEmbedder(m, { ...(o.backend ? { backend: o.backend } : {}), ...(o.input ? { input: o.input } : {}) });
      loaded.push(r);
      owned.push(r.embedder);
    }
  } catch (e) {
    for (const x of owned) x.dispose?.();
    throw e;
  }
  if (loaded.length === 0) throw new QuantFaceError('E_ARG', 'no model to evaluate: give at least one --model');
  const embedders = loaded.map((l) => l.embedder);
  const names = uniqueNames(embedders);
  loaded.forEach((l, i) => o.onModel?.(names[i]!, l.assumed));
  const common = { batch: o.batch ?? 32, ...(o.onProgress ? { onProgress: o.onProgress } : {}) };
  const t0 = performance.now();
  const base = (i: number): Pick<ReportModel, 'name' | 'meta' | 'metaAssumed'> => ({ name: names[i]!, meta: embedders[i]!.meta, metaAssumed: loaded[i]!.assumed });

  try {
    if (o.ijb !== undefined) {
      const meta = await readIjbMeta(resolve(o.ijb), o.target);
      const r = await runIjb(meta, embedders, { ...common, ...(o.limit !== undefined ? { limit: o.limit } : {}) });
      const roc0 = r.models[0]!.roc;
      return {
        tool: 'quantface eval',
        version: packageVersion(),
        created: new Date().toISOString(),
        dataset: { kind: 'ijb', path: resolve(o.ijb), align: 'landmarks (ArcFace template, similarity transform)', nPairs: r.nPairs, nImages: r.nImages, nTemplates: r.nTemplates, nPos: roc0.nPos, nNeg: roc0.nNeg, ...(o.limit !== undefined ? { limited: true } : {}) },
        models: r.models.map((m, i) => ({ ...base(i), auc: m.auc, tarAtFar: m.tarAtFar, roc: thinRoc(m.roc), embedSeconds: m.embedSeconds, imagesPerSecond: m.imagesPerSecond })),
        seconds: (performance.now() - t0) / 1000,
      };
    }
    let set;
    if (o.bin !== undefined) {
      const preset = (o.align ?? 'none') as CropPreset;
      set = binVerificationSet(await readBinSet(resolve(o.bin)), resolve(o.bin), preset, o.limit);
    } else {
      const list = await readPairs(o.pairs!, o.limit !== undefined ? { limit: o.limit } : {});
      // Default crop: the teacher's recorded alignment (a 5-point template needs a landmarks file), else lfw-funneled.
      const recorded = embedders[0]!.meta.alignment;
      const lmFile = o.landmarks ?? join(list.root, 'landmarks-5pt.txt');
      const alignOpt: AlignOption =
        o.align ?? (recorded?.kind === 'box' ? recorded.preset : recorded?.kind === 'template' && (await exists(lmFile)) ? 'landmarks' : 'lfw-funneled');
      let align: AlignChoice;
      let detectNote: string | undefined;
      if (alignOpt === 'detect') {
        const d = await detectPairsLandmarks(list, {
          ...(o.detector !== undefined ? { detector: o.detector } : {}),
          ...(o.landmarkModel !== undefined ? { landmarks: o.landmarkModel } : {}),
          ...(o.onDetectProgress ? { onProgress: o.onDetectProgress } : {}),
        });
        align = { kind: 'landmarks', landmarks: d.landmarks, ...(recorded?.kind === 'template' ? { template: recorded.points, templateName: recorded.name ?? 'recorded 5-point' } : {}) };
        detectNote = `detect (face detector + 68-point landmarks; a face found in ${d.images - d.missed.length}/${d.images} images, ${d.multi} with several faces: the one nearest the centre; ${d.missed.length} without a face: centred template)`;
      } else if (alignOpt === 'landmarks') {
        const file = lmFile;
        if (!(await exists(file))) throw new QuantFaceError('E_IO', `--align landmarks needs a landmarks file: ${file} does not exist (give --landmarks FILE)`);
        // Warp to the teacher's template when it records one (default: the ArcFace template).
        align = { kind: 'landmarks', landmarks: await readLandmarks(file), ...(recorded?.kind === 'template' ? { template: recorded.points, templateName: recorded.name ?? 'recorded 5-point' } : {}) };
      } else {
        align = { kind: 'preset', preset: alignOpt };
      }
      set = pairsVerificationSet(list, align, list.root);
      if (detectNote) set = { ...set, align: `${detectNote}, ${set.align}` };
    }
    const r = await runVerification(set, embedders, common);
    const nPos = set.issame.filter((x) => x).length;
    const samples = await sampleCrops(set, embedders[0]!.meta.inputShape[0], o.samples ?? 8);
    return {
      ...(samples.length ? { samples } : {}),
      tool: 'quantface eval',
      version: packageVersion(),
      created: new Date().toISOString(),
      dataset: { kind: set.kind, path: set.source, align: set.align, nPairs: set.issame.length, nImages: set.nImages, nPos, nNeg: set.issame.length - nPos, ...(o.limit !== undefined ? { limited: true } : {}) },
      models: r.models.map((m, i) => ({
        ...base(i),
        accuracy: m.verification.accuracy,
        std: m.verification.std,
        foldAccuracies: m.verification.foldAccuracies,
        foldThresholds: m.verification.foldThresholds,
        val: m.verification.val,
        valStd: m.verification.valStd,
        far: m.verification.far,
        farTarget: m.verification.farTarget,
        auc: m.auc,
        tarAtFar: m.tarAtFar,
        roc: thinRoc(m.roc),
        embedSeconds: m.embedSeconds,
        imagesPerSecond: m.imagesPerSecond,
      })),
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    for (const e of owned) e.dispose?.();
  }
}

/**
 * n aligned crops spread over a set's images (as the first model sees them:
 * its input size, the set's alignment) as PNG, base64, for the HTML report.
 */
async function sampleCrops(set: VerificationSet, size: number, n: number): Promise<NonNullable<EvalReport['samples']>> {
  const out: NonNullable<EvalReport['samples']> = [];
  const k = Math.min(n, set.nImages);
  const px = new Float32Array(size * size * 3);
  for (let i = 0; i < k; i++) {
    const idx = Math.floor((i * set.nImages) / k);
    try {
      await set.load(idx, size, px, 0);
    } catch {
      continue; // a sample is decoration: the evaluation itself reported any problem
    }
    const bytes = Uint8Array.from(px, (v) => Math.min(255, Math.max(0, Math.round(v))));
    const png = await sharp(bytes, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
    out.push({ image: set.imageName?.(idx) ?? `image ${idx}`, size, png: png.toString('base64') });
  }
  return out;
}
