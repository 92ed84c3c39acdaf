/**
 * 1:1 verification on pair lists (LFW pairs.txt over an image folder, or
 * insightface .bin sets): decode + align each distinct image once, embed
 * it with every model (flip-sum, batched, the next batch decoded while the
 * current one runs), then insightface's 10-fold protocol and a ROC.
 */
import { QuantFaceError } from '../errors.js';
import { alignImage, cropBox, decodeImage, presetBox, toRgb, type AlignSpec, type CropPreset, type RgbImage } from './align.js';
import type { BinSet } from './bin.js';
import { embedFlipSum, type Embedder, type ModelMeta } from './embedder.js';
import { evaluateVerification, l2NormalizeRows, type VerificationResult } from './metrics.js';
import { pairImagePath, type PairsList } from './pairs.js';
import { rocAuc, rocCurve, tarAtFar, type RocCurve, type TarAtFar } from './roc.js';

/** How images of a set are cropped. */
export type AlignChoice =
  | { kind: 'preset'; preset: CropPreset }
  | { kind: 'landmarks'; landmarks: Map<string, ArrayLike<number>>; template?: readonly (readonly [number, number])[]; templateName?: string; continuous?: boolean };

export function describeAlign(a: AlignChoice): string {
  const t = a.kind === 'landmarks' && a.template ? (a.templateName === 'arcface' ? 'the ArcFace' : `the model's ${a.templateName ?? '5-point'}`) : 'the ArcFace';
  return a.kind === 'preset' ? a.preset : `landmarks (${a.landmarks.size} images, similarity transform to ${t} template)`;
}

/** A set of verification pairs over a list of images. */
export interface VerificationSet {
  kind: 'pairs' | 'bin';
  /** Dataset path (for the report). */
  source: string;
  nImages: number;
  left: Int32Array;
  right: Int32Array;
  issame: boolean[];
  align: string;
  /** Loads image k aligned to size x size into out (HWC RGB 0..255) at offset. */
  load(k: number, size: number, out: Float32Array, offset: number): Promise<void>;
  /** Image k's name (path relative to the set), when it has one. */
  imageName?(k: number): string;
}

/** A pairs list over an image folder. */
export function pairsVerificationSet(list: PairsList, align: AlignChoice, source = list.root): VerificationSet {
  return {
    kind: 'pairs',
    source,
    nImages: list.images.length,
    left: list.left,
    right: list.right,
    issame: list.issame,
    align: describeAlign(align),
    imageName: (k) => list.images[k]!,
    async load(k, size, out, offset) {
      const img = await decodeImage(pairImagePath(list, k));
      let spec: AlignSpec;
      if (align.kind === 'preset') spec = { kind: 'preset', preset: align.preset };
      else {
        const lm = align.landmarks.get(list.images[k]!);
        if (!lm) throw new QuantFaceError('E_FORMAT', `no landmarks for ${list.images[k]} in the landmarks file; every image of the pairs list needs a line`);
        const pts = align.continuous === false ? lm : Array.from(lm, (v) => v - 0.5);
        spec = { kind: 'landmarks', landmarks: pts, ...(align.template ? { template: align.template } : {}) };
      }
      alignImage(img, spec, size, out, offset);
    },
  };
}

/** An insightface .bin set (already aligned 112x112 crops; pair i = images 2i, 2i+1). */
export function binVerificationSet(bin: BinSet, source: string, preset: CropPreset = 'none', limit?: number): VerificationSet {
  const nPairs = limit !== undefined ? Math.min(limit, bin.issame.length) : bin.issame.length;
  const left = new Int32Array(nPairs), right = new Int32Array(nPairs);
  for (let i = 0; i < nPairs; i++) { left[i] = 2 * i; right[i] = 2 * i + 1; }
  return {
    kind: 'bin',
    source,
    nImages: 2 * nPairs,
    left,
    right,
    issame: bin.issame.slice(0, nPairs),
    align: preset,
    async load(k, size, out, offset) {
      const im = bin.images[k]!;
      let img: RgbImage;
      if (im.kind === 'encoded') img = await decodeImage(im.bytes);
      else img = { data: toRgb(im.data, im.width, im.height, im.channels), width: im.width, height: im.height };
      cropBox(img, presetBox(preset, img.width, img.height), size, out, offset);
    },
  };
}

export interface EmbedProgress {
  done: number;
  total: number;
  seconds: number;
}

export interface EmbedOptions {
  /** Images per batch (each is embedded with its mirror image: 2x this per model call). Default 32. */
  batch?: number;
  onProgress?: (p: EmbedProgress) => void;
}

/**
 * Flip-sum embeddings of every image of the set, per embedder ([nImages, dim]).
 * Images are aligned once per distinct input size and shared by all models.
 * Also returns the seconds each model spent embedding.
 */
export async function embedSet(set: VerificationSet, embedders: Embedder[], options: EmbedOptions = {}): Promise<{ embeddings: Float32Array[]; modelSeconds: number[]; seconds: number }> {
  const B = Math.max(1, Math.floor(options.batch ?? 32));
  const sizes = [...new Set(embedders.map((e) => e.inputSize))];
  const embeddings = embedders.map((e) => new Float32Array(set.nImages * e.dim));
  const modelSeconds = embedders.map(() => 0);
  const t0 = performance.now();
  const loadBatch = async (start: number) => {
    const n = Math.min(B, set.nImages - start);
    const crops = new Map<number, Float32Array>();
    for (const s of sizes) {
      const buf = new Float32Array(n * s * s * 3);
      await Promise.all(Array.from({ length: n }, (_, i) => set.load(start + i, s, buf, i * s * s * 3)));
      crops.set(s, buf);
    }
    return { start, n, crops };
  };
  let next: Promise<Awaited<ReturnType<typeof loadBatch>>> | null = set.nImages > 0 ? loadBatch(0) : null;
  while (next) {
    const cur = await next;
    const after = cur.start + cur.n;
    next = after < set.nImages ? loadBatch(after) : null;
    // keep an unhandled rejection of the prefetch from crashing before we await it
    next?.catch(() => undefined);
    for (let m = 0; m < embedders.length; m++) {
      const e = embedders[m]!;
      const tm = performance.now();
      const f = await embedFlipSum(e, cur.crops.get(e.inputSize)!, cur.n);
      modelSeconds[m]! += (performance.now() - tm) / 1000;
      embeddings[m]!.set(f, cur.start * e.dim);
    }
    options.onProgress?.({ done: after, total: set.nImages, seconds: (performance.now() - t0) / 1000 });
  }
  return { embeddings, modelSeconds, seconds: (performance.now() - t0) / 1000 };
}

export interface ModelVerification {
  name: string;
  meta: ModelMeta;
  verification: VerificationResult;
  /** Squared L2 distance of each pair. */
  distances: Float64Array;
  /** ROC of cosine similarity (1 - d/2) over all pairs. */
  roc: RocCurve;
  auc: number;
  tarAtFar: TarAtFar[];
  /** Seconds spent in this model's embed calls, and images (with mirror) per second. */
  embedSeconds: number;
  imagesPerSecond: number;
}

/** FAR targets for pair sets: those a set of this many impostor pairs can resolve. */
export function farTargetsFor(nNeg: number): number[] {
  return [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1].filter((f) => f * nNeg >= 1);
}

/** Evaluates flip-sum embeddings ([nImages, dim]) on the set's pairs. */
export function verifyEmbeddings(set: VerificationSet, emb: Float32Array, dim: number): { verification: VerificationResult; distances: Float64Array; roc: RocCurve; auc: number; tarAtFar: TarAtFar[] } {
  const norm = l2NormalizeRows(emb, dim);
  const n = set.issame.length;
  const dist = new Float64Array(n);
  for (let p = 0; p < n; p++) {
    const a = set.left[p]! * dim, b = set.right[p]! * dim;
    let s = 0;
    for (let j = 0; j < dim; j++) { const d = norm[a + j]! - norm[b + j]!; s += d * d; }
    dist[p] = s;
  }
  const verification = evaluateVerification(dist, set.issame);
  const cos = Float64Array.from(dist, (d) => 1 - d / 2);
  const roc = rocCurve(cos, set.issame);
  const nNeg = set.issame.filter((x) => !x).length;
  return { verification, distances: dist, roc, auc: rocAuc(roc), tarAtFar: tarAtFar(roc, farTargetsFor(nNeg)) };
}

/** Embeds the set with every model and evaluates each. */
export async function runVerification(set: VerificationSet, embedders: Embedder[], options: EmbedOptions = {}): Promise<{ models: ModelVerification[]; seconds: number }> {
  if (embedders.length === 0) throw new QuantFaceError('E_ARG', 'no model to evaluate: give at least one --model');
  const { embeddings, modelSeconds, seconds } = await embedSet(set, embedders, options);
  const models = embedders.map((e, m) => {
    const r = verifyEmbeddings(set, embeddings[m]!, e.dim);
    return {
      name: e.meta.name,
      meta: e.meta,
      ...r,
      embedSeconds: modelSeconds[m]!,
      imagesPerSecond: modelSeconds[m]! > 0 ? (2 * set.nImages) / modelSeconds[m]! : 0,
    };
  });
  return { models, seconds };
}
