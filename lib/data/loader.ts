/**
 * Batches of aligned, augmented face crops for training and evaluation.
 *
 * - `ready()` decodes and aligns every image once in the worker pool: the
 *   images that fail are skipped (with their reason), and the rest are
 *   cached in shared memory up to `cacheBytes` (the aligned crop, or the
 *   decoded image when scale/shift jitter needs the source), so later
 *   epochs only augment.
 * - Epoch `e` visits the usable images in a seeded order; every random
 *   choice of a sample comes from (seed, epoch, sample id) (see
 *   augment.ts): batches are identical whatever the number of workers, the
 *   prefetch depth or the scheduling, and any step can be produced again
 *   (resume).
 * - Iterators keep `prefetch` batches in flight in the workers ahead of
 *   the one being consumed.
 * - Output: Float32Array NHWC [n, size, size, 3], RGB, 0..255.
 */
import { QuantFaceError } from '../errors.js';
import {
  epochOrder, hasGeometricJitter, planSample, resolveAugment,
  type AugmentOptions, type ResolvedAugment, type SamplePlan,
} from './augment.js';
import type { ImageFolder, SkippedFile } from './dataset.js';
import { InlineExecutor, WorkerPool, defaultWorkers, type DataExecutor } from './pool.js';
import type { CacheEntry, CacheMode, PrepareResult, RenderItem, RenderResult, SourceRef } from './worker-core.js';

export interface LoaderOptions {
  /** Images per batch. */
  batchSize: number;
  /** Seed of the order and the augmentation (default 0). */
  seed?: number;
  /** Visit the images in a new seeded order each epoch (default true); false = sorted order. */
  shuffle?: boolean;
  /** Drop the last, smaller batch of an epoch (default false). */
  dropLast?: boolean;
  /** Augmentation (default: random horizontal flip only); false = none. */
  augment?: AugmentOptions | false;
  /** Worker threads; 0 runs everything on the main thread (default: cores - 1, 1 to 4). */
  workers?: number;
  /** Batches prepared ahead of the one being consumed (default 3). */
  prefetch?: number;
  /** Memory for cached images, in bytes (default 512 MiB; 0 = decode every time). */
  cacheBytes?: number;
  /** Run on this executor (e.g. a pool shared by two loaders); the loader does not close it. */
  executor?: DataExecutor;
}

/** One batch. */
export interface Batch {
  /** [n, size, size, 3] NHWC float32 RGB, 0..255. */
  data: Float32Array;
  shape: [number, number, number, 3];
  n: number;
  epoch: number;
  /** Batch index within the epoch. */
  index: number;
  /** Global step: epoch * batchesPerEpoch + index. */
  step: number;
  /** Dataset ids (indices into `dataset.files`) of the samples. */
  ids: Int32Array;
  /** 1 where the (first) face was flipped. */
  flipped: Uint8Array;
  /** Mixup: partner id (-1 = none) and weight of the first face (1 = none); present when mixup is on. */
  mix?: { partner: Int32Array; lambda: Float32Array };
}

/** What `ready()` found. */
export interface LoaderInfo {
  /** Usable images. */
  images: number;
  /** Files not used: the dataset's scan skips plus images that failed to decode or align. */
  skipped: readonly SkippedFile[];
  cacheMode: CacheMode;
  cachedImages: number;
  cachedBytes: number;
  /** Seconds spent decoding and aligning. */
  seconds: number;
}

const DEFAULT_CACHE_BYTES = 512 * 1024 * 1024;
const PREPARE_CHUNK = 8;

function intOption(name: string, v: unknown, lo: number, hi: number, dflt?: number): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new QuantFaceError('E_ARG', `${name} must be an integer in [${lo}, ${hi}] (got ${String(v)})`);
  }
  return v;
}

export class DataLoader {
  readonly dataset: ImageFolder;
  readonly batchSize: number;
  readonly seed: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly augment: ResolvedAugment;
  readonly prefetch: number;
  readonly cacheBytes: number;
  readonly cacheMode: CacheMode;
  readonly size: number;
  private readonly executor: DataExecutor;
  private readonly ownsExecutor: boolean;
  private readonly cache = new Map<number, CacheEntry>();
  private cachedBytesTotal = 0;
  private usable: Int32Array | undefined;
  private readonly failedSkips: SkippedFile[] = [];
  private readonly bad = new Set<number>();
  private readying: Promise<LoaderInfo> | undefined;
  private info: LoaderInfo | undefined;
  private closed = false;
  private readonly orders = new Map<number, Int32Array>();
  private laneBase = 0;

  constructor(dataset: ImageFolder, options: LoaderOptions) {
    if (!options || typeof options !== 'object') throw new QuantFaceError('E_ARG', 'loader options are required ({ batchSize, ... })');
    this.dataset = dataset;
    this.size = dataset.size;
    this.batchSize = intOption('batchSize', options.batchSize, 1, 1 << 20);
    const seed = options.seed ?? 0;
    if (typeof seed !== 'number' || !Number.isFinite(seed)) throw new QuantFaceError('E_ARG', `seed must be a finite number (got ${String(seed)})`);
    this.seed = seed;
    this.shuffle = options.shuffle ?? true;
    this.dropLast = options.dropLast ?? false;
    this.augment = resolveAugment(options.augment);
    this.prefetch = intOption('prefetch', options.prefetch, 1, 64, 3);
    const cb = options.cacheBytes ?? DEFAULT_CACHE_BYTES;
    if (typeof cb !== 'number' || !(cb >= 0)) throw new QuantFaceError('E_ARG', `cacheBytes must be a number >= 0 (got ${String(cb)})`);
    this.cacheBytes = cb;
    this.cacheMode = hasGeometricJitter(this.augment) ? 'decoded' : 'aligned';
    if (options.executor) {
      this.executor = options.executor;
      this.ownsExecutor = false;
    } else {
      const workers = intOption('workers', options.workers, 0, 64, defaultWorkers());
      this.executor = workers === 0 ? new InlineExecutor() : new WorkerPool(workers);
      this.ownsExecutor = true;
    }
  }

  /** Worker lanes in use (1 when running on the main thread). */
  get workers(): number {
    return this.executor instanceof InlineExecutor ? 0 : this.executor.lanes;
  }

  private assertOpen(): void {
    if (this.closed) throw new QuantFaceError('E_CLOSED', 'the data loader was closed; create a new one');
  }

  private assertReady(what: string): Int32Array {
    this.assertOpen();
    if (!this.usable) throw new QuantFaceError('E_ARG', `${what} is known after the images are read: await loader.ready() first`);
    return this.usable;
  }

  /** Usable images (after ready()). */
  get length(): number {
    return this.assertReady('length').length;
  }

  /** Ids of the usable images, ascending (after ready()). */
  get ids(): Int32Array {
    return this.assertReady('ids');
  }

  /** Batches per epoch (after ready()). */
  get batchesPerEpoch(): number {
    const n = this.assertReady('batchesPerEpoch').length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** Scan skips of the dataset plus the images found unusable so far. */
  get skipped(): readonly SkippedFile[] {
    return [...this.dataset.skipped, ...this.failedSkips];
  }

  private source(id: number): SourceRef {
    const c = this.cache.get(id);
    return { file: id, path: this.dataset.path(id), geom: this.dataset.geom(id), ...(c ? { cached: c } : {}) };
  }

  /** Decodes and aligns every image once (cached up to cacheBytes); skips the failures. Idempotent. */
  ready(): Promise<LoaderInfo> {
    try {
      this.assertOpen();
    } catch (e) {
      return Promise.reject(e);
    }
    this.readying ??= this.prepareAll();
    return this.readying;
  }

  private async prepareAll(): Promise<LoaderInfo> {
    const t0 = performance.now();
    const n = this.dataset.length;
    const per = this.size * this.size * 3 * 4;
    let reserved = 0;
    const ok: number[] = [];
    const failed: { file: number; reason: string }[] = [];
    let next = 0;
    const lanes = this.executor.lanes;
    // two tasks in flight per lane: one decodes while the other aligns
    const runner = async (lane: number): Promise<void> => {
      while (next < n && !this.closed) {
        const start = next;
        next = Math.min(n, next + PREPARE_CHUNK);
        const items = [];
        for (let id = start; id < next; id++) {
          let cache = false;
          if (this.cacheMode === 'aligned') {
            if (reserved + per <= this.cacheBytes) { cache = true; reserved += per; }
          } else {
            cache = this.cachedBytesTotal < this.cacheBytes;
          }
          items.push({ src: { file: id, path: this.dataset.path(id), geom: this.dataset.geom(id) }, cache });
        }
        const r = await this.executor.run({ type: 'prepare', size: this.size, mode: this.cacheMode, items }, lane) as PrepareResult;
        for (const o of r.ok) {
          ok.push(o.file);
          if (o.entry) {
            const bytes = o.entry.data.byteLength;
            if (this.cacheMode === 'aligned' || this.cachedBytesTotal + bytes <= this.cacheBytes) {
              this.cache.set(o.file, o.entry);
              this.cachedBytesTotal += bytes;
            }
          }
        }
        failed.push(...r.failed);
      }
    };
    await Promise.all(Array.from({ length: lanes * 2 }, (_, k) => runner(k % lanes)));
    this.assertOpen();
    failed.sort((a, b) => a.file - b.file);
    for (const f of failed) {
      this.bad.add(f.file);
      this.failedSkips.push({ path: this.dataset.files[f.file]!, reason: f.reason });
    }
    if (ok.length === 0) {
      const first = this.failedSkips[0];
      throw new QuantFaceError('E_DATA', `no readable image in ${this.dataset.root}: all ${n} candidate image(s) failed${first ? ` (e.g. ${first.path}: ${first.reason})` : ''}`, { path: this.dataset.root });
    }
    this.usable = Int32Array.from(ok.sort((a, b) => a - b));
    if (this.dropLast && this.usable.length < this.batchSize) {
      throw new QuantFaceError('E_DATA', `${this.usable.length} usable image(s) in ${this.dataset.root} are fewer than one batch of ${this.batchSize} with dropLast; lower the batch size`, { path: this.dataset.root });
    }
    this.info = {
      images: this.usable.length,
      skipped: this.skipped,
      cacheMode: this.cacheMode,
      cachedImages: this.cache.size,
      cachedBytes: this.cachedBytesTotal,
      seconds: (performance.now() - t0) / 1000,
    };
    return this.info;
  }

  /** The visiting order of an epoch (ids). */
  order(epoch: number): Int32Array {
    const usable = this.assertReady('order');
    if (!this.shuffle) return usable;
    let o = this.orders.get(epoch);
    if (!o) {
      o = epochOrder(this.seed, epoch, usable);
      if (this.orders.size >= 4) this.orders.delete(this.orders.keys().next().value as number);
      this.orders.set(epoch, o);
    }
    return o;
  }

  /** The plan (augmentation, mixup) of sample `id` in `epoch`. */
  plan(epoch: number, id: number): SamplePlan {
    return planSample(this.seed, epoch, id, this.assertReady('plan'), this.augment);
  }

  /** Builds batch `index` of `epoch` (no prefetch). */
  async batch(epoch: number, index: number): Promise<Batch> {
    await this.ready();
    this.checkPosition(epoch, index);
    return this.makeBatch(epoch, index);
  }

  private checkPosition(epoch: number, index: number): void {
    if (!Number.isInteger(epoch) || epoch < 0) throw new QuantFaceError('E_ARG', `epoch must be an integer >= 0 (got ${String(epoch)})`);
    const bpe = this.batchesPerEpoch;
    if (!Number.isInteger(index) || index < 0 || index >= bpe) throw new QuantFaceError('E_ARG', `batch index ${String(index)} out of range [0, ${bpe})`);
  }

  private async makeBatch(epoch: number, index: number): Promise<Batch> {
    this.assertOpen();
    const order = this.order(epoch);
    const B = this.batchSize;
    const ids = Int32Array.from(order.subarray(index * B, Math.min(order.length, (index + 1) * B)));
    const n = ids.length;
    const per = this.size * this.size * 3;
    const plans = Array.from(ids, (id) => this.plan(epoch, id));
    const items: RenderItem[] = plans.map((p) => this.renderItem(p));
    const lanes = Math.min(this.executor.lanes, n);
    const base = this.laneBase;
    this.laneBase = (this.laneBase + lanes) % this.executor.lanes;
    const data = new Float32Array(n * per);
    const chunks: Promise<void>[] = [];
    const late: { slot: number; which: 'a' | 'b'; file: number; reason: string }[] = [];
    for (let k = 0; k < lanes; k++) {
      const lo = Math.floor((k * n) / lanes), hi = Math.floor(((k + 1) * n) / lanes);
      chunks.push(this.executor.run({ type: 'render', size: this.size, items: items.slice(lo, hi) }, base + k).then((r) => {
        const rr = r as RenderResult;
        data.set(rr.data, lo * per);
        for (const f of rr.failed) late.push({ slot: lo + f.item, which: f.which, file: f.file, reason: f.reason });
      }));
    }
    await Promise.all(chunks);
    if (late.length) await this.substitute(late, items, plans, ids, data);
    const mixOn = this.augment.mixupProb > 0;
    const batch: Batch = {
      data,
      shape: [n, this.size, this.size, 3],
      n,
      epoch,
      index,
      step: epoch * this.batchesPerEpoch + index,
      ids,
      flipped: Uint8Array.from(plans, (p) => (p.a.flip ? 1 : 0)),
    };
    if (mixOn) {
      batch.mix = {
        partner: Int32Array.from(plans, (p) => p.mix?.partner ?? -1),
        lambda: Float32Array.from(plans, (p) => p.mix?.lambda ?? 1),
      };
    }
    return batch;
  }

  private renderItem(p: SamplePlan): RenderItem {
    const it: RenderItem = { a: this.source(p.id), planA: p.a };
    if (p.mix) { it.b = this.source(p.mix.partner); it.planB = p.mix.b; it.lambda = p.mix.lambda; }
    return it;
  }

  /**
   * An image that was readable in ready() failed later (changed or removed
   * on disk): record it as skipped and render the slot again with the next
   * usable image in id order (same plan), so the batch stays full and the
   * result stays a function of the files.
   */
  private async substitute(late: { slot: number; which: 'a' | 'b'; file: number; reason: string }[], items: RenderItem[], plans: SamplePlan[], ids: Int32Array, data: Float32Array): Promise<void> {
    const per = this.size * this.size * 3;
    const usable = this.usable!;
    const markBad = (file: number, reason: string) => {
      if (this.bad.has(file)) return;
      this.bad.add(file);
      this.cache.delete(file);
      this.failedSkips.push({ path: this.dataset.files[file]!, reason: `${reason} (after the set was read)` });
    };
    const nextGood = (file: number): number => {
      let pos = usable.indexOf(file);
      for (let k = 0; k < usable.length; k++) {
        pos = (pos + 1) % usable.length;
        if (!this.bad.has(usable[pos]!)) return usable[pos]!;
      }
      throw new QuantFaceError('E_DATA', `no readable image left in ${this.dataset.root}: every image failed`, { path: this.dataset.root });
    };
    for (const f of late) {
      markBad(f.file, f.reason);
      const it = { ...items[f.slot]! };
      let which = f.which;
      for (let attempt = 0; ; attempt++) {
        if (attempt > usable.length) throw new QuantFaceError('E_DATA', `cannot fill a batch slot: every image failed in ${this.dataset.root}`);
        if (which === 'a') { it.a = this.source(nextGood(it.a.file)); ids[f.slot] = it.a.file; }
        else { it.b = this.source(nextGood(it.b!.file)); plans[f.slot] = { ...plans[f.slot]!, mix: { ...plans[f.slot]!.mix!, partner: it.b.file } }; }
        const r = await this.executor.run({ type: 'render', size: this.size, items: [it] }) as RenderResult;
        if (r.failed.length === 0) { data.set(r.data, f.slot * per); break; }
        markBad(r.failed[0]!.file, r.failed[0]!.reason);
        which = r.failed[0]!.which;
      }
    }
  }

  private async *iterate(positions: () => Iterator<[number, number]>): AsyncGenerator<Batch, void, undefined> {
    await this.ready();
    const it = positions();
    const queue: Promise<Batch>[] = [];
    let done = false;
    const fill = () => {
      while (!done && queue.length < this.prefetch) {
        const nx = it.next();
        if (nx.done) { done = true; break; }
        const p = this.makeBatch(nx.value[0], nx.value[1]);
        p.catch(() => undefined); // handled when awaited; abandoned ones are ignored
        queue.push(p);
      }
    };
    fill();
    while (queue.length) {
      const b = await queue.shift()!;
      fill();
      yield b;
    }
  }

  /** The batches of one epoch, from batch `from` (default 0), prefetched. */
  epoch(epoch: number, options: { from?: number } = {}): AsyncGenerator<Batch, void, undefined> {
    const self = this;
    return this.iterate(function* () {
      const bpe = self.batchesPerEpoch;
      const from = options.from ?? 0;
      if (!Number.isInteger(epoch) || epoch < 0) throw new QuantFaceError('E_ARG', `epoch must be an integer >= 0 (got ${String(epoch)})`);
      if (!Number.isInteger(from) || from < 0) throw new QuantFaceError('E_ARG', `from must be an integer >= 0 (got ${String(from)})`);
      for (let i = from; i < bpe; i++) yield [epoch, i] as [number, number];
    });
  }

  /**
   * Endless batches across epochs from global step `step` (default 0),
   * prefetched across epoch boundaries. Stop with `break` / `return()`.
   */
  stream(options: { step?: number } = {}): AsyncGenerator<Batch, void, undefined> {
    const self = this;
    return this.iterate(function* () {
      const bpe = self.batchesPerEpoch;
      let s = options.step ?? 0;
      if (!Number.isInteger(s) || s < 0) throw new QuantFaceError('E_ARG', `step must be an integer >= 0 (got ${String(s)})`);
      if (bpe === 0) return;
      for (;;) { yield [Math.floor(s / bpe), s % bpe] as [number, number]; s++; }
    });
  }

  /** Stops the workers (if the loader owns them) and drops the cache. Pending batches reject with E_CLOSED. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    this.orders.clear();
    if (this.ownsExecutor) await this.executor.close();
  }
}
