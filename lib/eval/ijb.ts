/**
 * IJB-B / IJB-C 1:1 verification in insightface's layout and protocol
 * (recognition/_evaluation_/ijb/ijb_11.py, arcface_torch/eval_ijbc.py):
 *
 *   <dir>/meta/<t>_face_tid_mid.txt        image template_id media_id
 *   <dir>/meta/<t>_template_pair_label.txt template1 template2 label
 *   <dir>/meta/<t>_name_5pts_score.txt     image x1 y1 ... x5 y5 faceness
 *   <dir>/loose_crop/<image>
 *
 * with <t> = ijbb or ijbc. Each image is aligned from its 5 landmarks to
 * the ArcFace template (similarity transform), embedded with its mirror;
 * feature = faceness * (f(img) + f(flip)) (not normalised); features are
 * averaged per media, summed per template, L2-normalised; the score of a
 * template pair is the cosine. The pair list is streamed in chunks and the
 * ROC built from typed arrays (see ./roc.ts).
 */
import { createReadStream } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { QuantFaceError, ioError } from '../errors.js';
import { alignByLandmarks, decodeImage, ARCFACE_TEMPLATE } from './align.js';
import { embedFlipSum, type Embedder, type ModelMeta } from './embedder.js';
import { IJB_FAR_TARGETS, RocAccumulator, rocAuc, tarAtFar, type RocCurve, type TarAtFar } from './roc.js';

export interface IjbMeta {
  /** 'ijbb' or 'ijbc' (file-name prefix). */
  target: string;
  dir: string;
  imageDir: string;
  pairsPath: string;
  /** Images of the 5-points file, in file order. */
  names: string[];
  /** 10 landmark coordinates per image (pixel-index, as in the file). */
  landmarks: Float64Array;
  /** Faceness score per image (float32, as insightface parses it). */
  faceness: Float32Array;
  /** Per row of the face_tid_mid file: image index (into names), template id, media id. */
  rowImage: Int32Array;
  rowTemplate: Int32Array;
  rowMedia: Int32Array;
}

async function exists(p: string): Promise<boolean> {
  try { await access(p); return true; } catch { return false; }
}

async function readText(path: string): Promise<string> {
  try { return await readFile(path, 'utf8'); } catch (e) { throw ioError(e, path); }
}

function intField(s: string | undefined, path: string, ln: number, what: string): number {
  const v = Number(s);
  if (s === undefined || !/^-?\d+$/.test(s) || !Number.isSafeInteger(v)) {
    throw new QuantFaceError('E_FORMAT', `${path}:${ln}: ${what} '${s}' is not an integer`);
  }
  return v;
}

/** Finds the IJB target ('ijbb' / 'ijbc') whose meta files exist in dir. */
export async function detectIjbTarget(dir: string): Promise<string> {
  for (const t of ['ijbc', 'ijbb']) {
    if (await exists(join(dir, 'meta', `${t}_face_tid_mid.txt`))) return t;
  }
  throw new QuantFaceError('E_IO', `${dir} is not an IJB folder: expected meta/ijbb_face_tid_mid.txt or meta/ijbc_face_tid_mid.txt (insightface's IJB layout)`);
}

/** Reads the IJB meta files (not the pair list, which is streamed). */
export async function readIjbMeta(dir: string, target?: string): Promise<IjbMeta> {
  const t = (target ?? await detectIjbTarget(dir)).toLowerCase();
  const meta = join(dir, 'meta');
  const tidPath = join(meta, `${t}_face_tid_mid.txt`);
  const lmkPath = join(meta, `${t}_name_5pts_score.txt`);
  const pairsPath = join(meta, `${t}_template_pair_label.txt`);
  if (!(await exists(pairsPath))) throw ioError(Object.assign(new Error(''), { code: 'ENOENT' }), pairsPath);

  const names: string[] = [];
  const lm: number[] = [];
  const faceness: number[] = [];
  const byName = new Map<string, number>();
  const lmkLines = (await readText(lmkPath)).split(/\r?\n/);
  for (let li = 0; li < lmkLines.length; li++) {
    const line = lmkLines[li]!.trim();
    if (!line) continue;
    const tok = line.split(/\s+/);
    if (tok.length !== 12) throw new QuantFaceError('E_FORMAT', `${lmkPath}:${li + 1}: expected 'image x1 y1 ... x5 y5 score' (12 fields), got ${tok.length}`);
    for (let k = 1; k < 12; k++) {
      const v = Number(tok[k]);
      if (!Number.isFinite(v)) throw new QuantFaceError('E_FORMAT', `${lmkPath}:${li + 1}: '${tok[k]}' is not a number`);
      if (k < 11) lm.push(v); else faceness.push(v);
    }
    if (!byName.has(tok[0]!)) byName.set(tok[0]!, names.length);
    names.push(tok[0]!);
  }

  const rowImage: number[] = [], rowTemplate: number[] = [], rowMedia: number[] = [];
  const tidLines = (await readText(tidPath)).split(/\r?\n/);
  let row = 0;
  for (let li = 0; li < tidLines.length; li++) {
    const line = tidLines[li]!.trim();
    if (!line) continue;
    const tok = line.split(/\s+/);
    if (tok.length < 3) throw new QuantFaceError('E_FORMAT', `${tidPath}:${li + 1}: expected 'image template_id media_id'`);
    // insightface pairs the two files row by row; fall back to the name when rows differ
    let img = row < names.length && names[row] === tok[0] ? row : byName.get(tok[0]!);
    if (img === undefined) throw new QuantFaceError('E_FORMAT', `${tidPath}:${li + 1}: image ${tok[0]} has no line in ${lmkPath}`);
    rowImage.push(img);
    rowTemplate.push(intField(tok[1], tidPath, li + 1, 'template id'));
    rowMedia.push(intField(tok[2], tidPath, li + 1, 'media id'));
    row++;
    img = undefined;
  }
  if (rowImage.length === 0) throw new QuantFaceError('E_FORMAT', `${tidPath}: no rows`);
  return {
    target: t,
    dir,
    imageDir: join(dir, 'loose_crop'),
    pairsPath,
    names,
    landmarks: Float64Array.from(lm),
    faceness: Float32Array.from(faceness),
    rowImage: Int32Array.from(rowImage),
    rowTemplate: Int32Array.from(rowTemplate),
    rowMedia: Int32Array.from(rowMedia),
  };
}

export interface PairChunk {
  t1: Int32Array;
  t2: Int32Array;
  label: Uint8Array;
  n: number;
}

/** Streams the template pair list in chunks of `chunk` pairs. */
export async function* streamTemplatePairs(path: string, chunk = 100_000, limit = Infinity): AsyncGenerator<PairChunk> {
  let stream;
  try {
    stream = createReadStream(path, { encoding: 'utf8' });
    await new Promise<void>((res, rej) => { stream!.once('open', () => res()); stream!.once('error', rej); });
  } catch (e) {
    throw ioError(e, path);
  }
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  let t1 = new Int32Array(chunk), t2 = new Int32Array(chunk), label = new Uint8Array(chunk);
  let n = 0, ln = 0, total = 0;
  try {
    for await (const raw of rl) {
      ln++;
      const line = raw.trim();
      if (!line) continue;
      if (total >= limit) break;
      const tok = line.split(/\s+/);
      if (tok.length < 3) throw new QuantFaceError('E_FORMAT', `${path}:${ln}: expected 'template1 template2 label'`);
      t1[n] = intField(tok[0], path, ln, 'template id');
      t2[n] = intField(tok[1], path, ln, 'template id');
      const l = intField(tok[2], path, ln, 'label');
      if (l !== 0 && l !== 1) throw new QuantFaceError('E_FORMAT', `${path}:${ln}: label must be 0 or 1 (got ${l})`);
      label[n] = l;
      n++; total++;
      if (n === chunk) {
        yield { t1, t2, label, n };
        t1 = new Int32Array(chunk); t2 = new Int32Array(chunk); label = new Uint8Array(chunk);
        n = 0;
      }
    }
  } finally {
    rl.close();
    stream.destroy();
  }
  if (n > 0) yield { t1: t1.subarray(0, n), t2: t2.subarray(0, n), label: label.subarray(0, n), n };
}

/**
 * Template aggregation plan: unique templates (ascending, as np.unique),
 * and for each face row its template index and weight 1/(images in its
 * template's media), so template = sum over media of the media mean.
 */
export interface TemplatePlan {
  templates: Int32Array;
  index: Map<number, number>;
  rowTemplateIndex: Int32Array;
  rowWeight: Float64Array;
}

export function planTemplates(rowTemplate: Int32Array, rowMedia: Int32Array, keep?: Set<number>): TemplatePlan {
  const counts = new Map<string, number>();
  const ids = new Set<number>();
  for (let r = 0; r < rowTemplate.length; r++) {
    const t = rowTemplate[r]!;
    if (keep && !keep.has(t)) continue;
    ids.add(t);
    const k = `${t}:${rowMedia[r]}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const templates = Int32Array.from([...ids].sort((a, b) => a - b));
  const index = new Map<number, number>();
  templates.forEach((t, i) => index.set(t, i));
  const rowTemplateIndex = new Int32Array(rowTemplate.length).fill(-1);
  const rowWeight = new Float64Array(rowTemplate.length);
  for (let r = 0; r < rowTemplate.length; r++) {
    const ti = index.get(rowTemplate[r]!);
    if (ti === undefined) continue;
    rowTemplateIndex[r] = ti;
    rowWeight[r] = 1 / counts.get(`${rowTemplate[r]}:${rowMedia[r]}`)!;
  }
  return { templates, index, rowTemplateIndex, rowWeight };
}

/** L2-normalises template features in place (a zero row stays zero, as sklearn). */
export function normalizeTemplates(feats: Float64Array, dim: number): void {
  for (let t = 0; t < feats.length / dim; t++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += feats[t * dim + j]! ** 2;
    const norm = Math.sqrt(s);
    if (norm > 0) for (let j = 0; j < dim; j++) feats[t * dim + j]! /= norm;
  }
}

/** Cosine scores of a chunk of template pairs from normalised template features. */
export function scorePairs(feats: Float64Array, dim: number, index: Map<number, number>, chunk: PairChunk, out = new Float32Array(chunk.n)): Float32Array {
  for (let p = 0; p < chunk.n; p++) {
    const a = index.get(chunk.t1[p]!), b = index.get(chunk.t2[p]!);
    if (a === undefined || b === undefined) {
      throw new QuantFaceError('E_FORMAT', `template pair (${chunk.t1[p]}, ${chunk.t2[p]}) names a template without images in the face_tid_mid file`);
    }
    let s = 0;
    const oa = a * dim, ob = b * dim;
    for (let j = 0; j < dim; j++) s += feats[oa + j]! * feats[ob + j]!;
    out[p] = s;
  }
  return out;
}

export interface IjbModelResult {
  name: string;
  meta: ModelMeta;
  roc: RocCurve;
  auc: number;
  tarAtFar: TarAtFar[];
  embedSeconds: number;
  imagesPerSecond: number;
}

export interface IjbOptions {
  batch?: number;
  /** Only the first N template pairs (their templates' images are embedded). */
  limit?: number;
  /** Pairs per scoring chunk (default 100000). */
  chunk?: number;
  onProgress?: (p: { done: number; total: number; seconds: number }) => void;
}

/** Runs IJB 1:1 for each embedder. */
export async function runIjb(meta: IjbMeta, embedders: Embedder[], options: IjbOptions = {}): Promise<{ models: IjbModelResult[]; nPairs: number; nTemplates: number; nImages: number; seconds: number }> {
  if (embedders.length === 0) throw new QuantFaceError('E_ARG', 'no model to evaluate: give at least one --model');
  const t0 = performance.now();
  const chunkSize = options.chunk ?? 100_000;
  let keep: Set<number> | undefined;
  if (options.limit !== undefined) {
    keep = new Set();
    for await (const c of streamTemplatePairs(meta.pairsPath, chunkSize, options.limit)) {
      for (let p = 0; p < c.n; p++) { keep.add(c.t1[p]!); keep.add(c.t2[p]!); }
    }
  }
  const plan = planTemplates(meta.rowTemplate, meta.rowMedia, keep);
  const nT = plan.templates.length;
  // rows to embed, grouped by image so an image in several rows is embedded once
  const rowsOfImage = new Map<number, number[]>();
  for (let r = 0; r < meta.rowImage.length; r++) {
    if (plan.rowTemplateIndex[r]! < 0) continue;
    const img = meta.rowImage[r]!;
    const l = rowsOfImage.get(img);
    if (l) l.push(r); else rowsOfImage.set(img, [r]);
  }
  const images = [...rowsOfImage.keys()];
  const feats = embedders.map((e) => new Float64Array(nT * e.dim));
  const modelSeconds = embedders.map(() => 0);
  const B = Math.max(1, Math.floor(options.batch ?? 32));
  const sizes = [...new Set(embedders.map((e) => e.inputSize))];

  const loadBatch = async (start: number) => {
    const n = Math.min(B, images.length - start);
    const crops = new Map<number, Float32Array>();
    const decoded = await Promise.all(Array.from({ length: n }, (_, i) => decodeImage(join(meta.imageDir, meta.names[images[start + i]!]!))));
    for (const s of sizes) {
      const buf = new Float32Array(n * s * s * 3);
      for (let i = 0; i < n; i++) {
        const k = images[start + i]!;
        alignByLandmarks(decoded[i]!, meta.landmarks.subarray(k * 10, k * 10 + 10), ARCFACE_TEMPLATE, s, buf, i * s * s * 3);
      }
      crops.set(s, buf);
    }
    return { start, n, crops };
  };
  let next: Promise<Awaited<ReturnType<typeof loadBatch>>> | null = images.length ? loadBatch(0) : null;
  while (next) {
    const cur = await next;
    const after = cur.start + cur.n;
    next = after < images.length ? loadBatch(after) : null;
    next?.catch(() => undefined);
    for (let m = 0; m < embedders.length; m++) {
      const e = embedders[m]!;
      const tm = performance.now();
      const f = await embedFlipSum(e, cur.crops.get(e.inputSize)!, cur.n);
      modelSeconds[m]! += (performance.now() - tm) / 1000;
      const d = e.dim, acc = feats[m]!;
      for (let i = 0; i < cur.n; i++) {
        const k = images[cur.start + i]!;
        const fn = Math.fround(meta.faceness[k]!);
        for (const r of rowsOfImage.get(k)!) {
          const w = plan.rowWeight[r]!;
          const o = plan.rowTemplateIndex[r]! * d;
          for (let j = 0; j < d; j++) acc[o + j]! += Math.fround(f[i * d + j]! * fn) * w;
        }
      }
    }
    options.onProgress?.({ done: after, total: images.length, seconds: (performance.now() - t0) / 1000 });
  }
  embedders.forEach((e, m) => normalizeTemplates(feats[m]!, e.dim));

  const rocs = embedders.map(() => new RocAccumulator({ float32: true }));
  let nPairs = 0;
  for await (const c of streamTemplatePairs(meta.pairsPath, chunkSize, options.limit ?? Infinity)) {
    embedders.forEach((e, m) => rocs[m]!.add(scorePairs(feats[m]!, e.dim, plan.index, c), c.label));
    nPairs += c.n;
  }
  const models = embedders.map((e, m) => {
    const roc = rocs[m]!.curve();
    return {
      name: e.meta.name,
      meta: e.meta,
      roc,
      auc: rocAuc(roc),
      tarAtFar: tarAtFar(roc, IJB_FAR_TARGETS),
      embedSeconds: modelSeconds[m]!,
      imagesPerSecond: modelSeconds[m]! > 0 ? (2 * images.length) / modelSeconds[m]! : 0,
    };
  });
  return { models, nPairs, nTemplates: nT, nImages: images.length, seconds: (performance.now() - t0) / 1000 };
}
