/**
 * The work a data worker does (also run in-process when `workers: 0`):
 * decode + align (+ cache) images, and render augmented samples from
 * plans. Pure functions of their inputs, so the result never depends on
 * which thread ran them.
 */
import { QuantFaceError } from '../errors.js';
import { decodeImage, type RgbImage } from './align.js';
import {
  applyPhotometric, blendInto, IDENTITY_PLAN, isIdentityGeometry, renderGeometry,
  type AugPlan, type GeomSpec,
} from './augment.js';

/**
 * A decoded image kept in memory, in shared memory so every worker reads
 * it without a copy: the aligned crop (float32 size x size x 3), or the
 * decoded RGB image (uint8) when geometric jitter needs the source.
 */
export type CacheEntry =
  | { kind: 'aligned'; size: number; data: SharedArrayBuffer }
  | { kind: 'decoded'; width: number; height: number; data: SharedArrayBuffer };

export type CacheMode = 'aligned' | 'decoded';

/** One image to read: dataset index, absolute path, how to align it, its cache entry if any. */
export interface SourceRef {
  file: number;
  path: string;
  geom: GeomSpec;
  cached?: CacheEntry;
}

/** Decode + align each image once; optionally return cache entries. */
export interface PrepareTask {
  type: 'prepare';
  size: number;
  mode: CacheMode;
  items: { src: SourceRef; cache: boolean }[];
}

export interface PrepareResult {
  ok: { file: number; entry?: CacheEntry }[];
  failed: { file: number; reason: string }[];
}

/** One output sample: face A with its plan, optionally mixed with face B. */
export interface RenderItem {
  a: SourceRef;
  planA: AugPlan;
  b?: SourceRef;
  planB?: AugPlan;
  lambda?: number;
}

export interface RenderTask {
  type: 'render';
  size: number;
  items: RenderItem[];
}

export interface RenderResult {
  /** items.length x size x size x 3 floats. */
  data: Float32Array;
  /** Items whose image could not be read (their slot is left zero). */
  failed: { item: number; which: 'a' | 'b'; file: number; reason: string }[];
}

export type DataTask = PrepareTask | RenderTask;
export type DataResult = PrepareResult | RenderResult;

/** Why an image failed, as a short sentence (the path is reported separately). */
export function failureReason(e: unknown): string {
  let msg = e instanceof Error ? e.message : String(e);
  // decodeImage's messages start with "cannot decode image <path>: "
  msg = msg.replace(/^cannot decode image .*?: /, '');
  if (e instanceof QuantFaceError && e.code === 'E_IO') return `cannot read the file (${msg})`;
  if (e instanceof QuantFaceError && e.code === 'E_ARG') return `cannot align: ${msg}`;
  return `cannot decode: ${msg}`;
}

function cachedImage(c: CacheEntry & { kind: 'decoded' }): RgbImage {
  return { data: new Uint8Array(c.data), width: c.width, height: c.height };
}

/** Decoded images started a few items ahead, so decoding (libuv threads) overlaps aligning (this thread). */
const DECODE_AHEAD = 4;

type Decoded = { img: RgbImage } | { err: unknown };

class DecodeQueue {
  private readonly started: (Promise<Decoded> | undefined)[];
  constructor(private readonly paths: (string | undefined)[]) {
    this.started = new Array(paths.length);
  }

  /** The decode of job k (starting jobs k .. k + DECODE_AHEAD that need one). */
  get(k: number): Promise<Decoded> | undefined {
    for (let j = k; j < Math.min(this.paths.length, k + DECODE_AHEAD + 1); j++) {
      const p = this.paths[j];
      if (p !== undefined && !this.started[j]) this.started[j] = decodeImage(p).then((img) => ({ img }), (err: unknown) => ({ err }));
    }
    const r = this.started[k];
    this.started[k] = undefined; // release the image once used
    return r;
  }
}

function needsDecode(src: SourceRef, plan: AugPlan, size: number): boolean {
  const c = src.cached;
  if (!c) return true;
  if (c.kind === 'decoded') return false;
  return !(c.size === size && isIdentityGeometry(plan));
}

/** Renders one face (geometry, flip, colour) into out[off..]. */
async function renderFace(src: SourceRef, plan: AugPlan, size: number, out: Float32Array, off: number, decoded: Promise<Decoded> | undefined): Promise<void> {
  const c = src.cached;
  if (c && c.kind === 'aligned' && c.size === size && isIdentityGeometry(plan)) {
    out.set(new Float32Array(c.data), off);
  } else {
    let img: RgbImage;
    if (c && c.kind === 'decoded') img = cachedImage(c);
    else {
      const d = await (decoded ?? decodeImage(src.path).then((i) => ({ img: i }), (err: unknown) => ({ err })));
      if ('err' in d) throw d.err;
      img = d.img;
    }
    renderGeometry(img, src.geom, plan, size, out, off);
  }
  applyPhotometric(out, off, size, plan);
}

async function prepare(t: PrepareTask): Promise<{ result: PrepareResult; transfer: ArrayBuffer[] }> {
  const res: PrepareResult = { ok: [], failed: [] };
  const per = t.size * t.size * 3;
  const q = new DecodeQueue(t.items.map((it) => it.src.path));
  for (let k = 0; k < t.items.length; k++) {
    const { src, cache } = t.items[k]!;
    try {
      const d = await q.get(k)!;
      if ('err' in d) throw d.err;
      const img = d.img;
      if (t.mode === 'aligned' && cache) {
        const sab = new SharedArrayBuffer(per * 4);
        renderGeometry(img, src.geom, IDENTITY_PLAN, t.size, new Float32Array(sab), 0);
        res.ok.push({ file: src.file, entry: { kind: 'aligned', size: t.size, data: sab } });
      } else {
        // validate the alignment (e.g. 'none' on a non-square image fails)
        renderGeometry(img, src.geom, IDENTITY_PLAN, t.size, new Float32Array(per), 0);
        if (cache) {
          const sab = new SharedArrayBuffer(img.data.length);
          new Uint8Array(sab).set(img.data);
          res.ok.push({ file: src.file, entry: { kind: 'decoded', width: img.width, height: img.height, data: sab } });
        } else {
          res.ok.push({ file: src.file });
        }
      }
    } catch (e) {
      res.failed.push({ file: src.file, reason: failureReason(e) });
    }
  }
  return { result: res, transfer: [] };
}

async function render(t: RenderTask): Promise<{ result: RenderResult; transfer: ArrayBuffer[] }> {
  const per = t.size * t.size * 3;
  const data = new Float32Array(t.items.length * per);
  const failed: RenderResult['failed'] = [];
  // decode jobs in the order they are used: item 0 a, item 0 b, item 1 a, ...
  const paths: (string | undefined)[] = [];
  for (const it of t.items) {
    paths.push(needsDecode(it.a, it.planA, t.size) ? it.a.path : undefined);
    paths.push(it.b && it.planB && needsDecode(it.b, it.planB, t.size) ? it.b.path : undefined);
  }
  const q = new DecodeQueue(paths);
  let tmp: Float32Array | undefined;
  for (let i = 0; i < t.items.length; i++) {
    const it = t.items[i]!;
    const da = q.get(2 * i), db = q.get(2 * i + 1);
    try {
      await renderFace(it.a, it.planA, t.size, data, i * per, da);
    } catch (e) {
      data.fill(0, i * per, (i + 1) * per);
      failed.push({ item: i, which: 'a', file: it.a.file, reason: failureReason(e) });
      continue;
    }
    if (it.b && it.planB && it.lambda !== undefined) {
      tmp ??= new Float32Array(per);
      try {
        await renderFace(it.b, it.planB, t.size, tmp, 0, db);
      } catch (e) {
        failed.push({ item: i, which: 'b', file: it.b.file, reason: failureReason(e) });
        continue;
      }
      blendInto(data, i * per, tmp, 0, it.lambda, per);
    }
  }
  return { result: { data, failed }, transfer: [data.buffer as ArrayBuffer] };
}

/** Runs one task. Per-image failures are reported in the result, never thrown. */
export async function handleTask(t: DataTask): Promise<{ result: DataResult; transfer: ArrayBuffer[] }> {
  if (t.type === 'prepare') return prepare(t);
  if (t.type === 'render') return render(t);
  throw new QuantFaceError('E_INTERNAL', `unknown data task ${String((t as { type?: unknown }).type)}`);
}
