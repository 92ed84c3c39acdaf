/**
 * The process-wide in-flight budget of the runtime: what every FaceModel's
 * embed() holds while it works, so that memory and CPU are bounded by
 * configuration, not by what clients send.
 *
 * - bytes: the estimated native memory of the decodes in progress
 *   (decode.ts decodeCost) plus the crops queued for inference;
 * - pixels: the source pixels being decoded (the CPU work in flight).
 *
 * A call takes what it needs (first its crops, then each image's decode);
 * what does not fit waits in one FIFO queue of at most maxWaiting images
 * (small decodes and crop reservations that fit may pass large ones),
 * for at most queueTimeoutMs. A call that would overfill the queue, or
 * waits too long, is refused with QuantFaceError E_BUSY (the server
 * answers 503 with Retry-After): nothing grows without bound. A decode is
 * always let through when no other decode runs, so the queue cannot stall.
 *
 * Limits come from configureBudget() / loadModel({ budget }) (process-wide,
 * like the thread pool), else the environment (QF_MAX_INFLIGHT_BYTES,
 * QF_MAX_INFLIGHT_PIXELS, QF_MAX_WAITING, QF_QUEUE_TIMEOUT_MS, QF_SMALL_PIXELS), else the
 * defaults below.
 */
import { QuantFaceError } from '../errors.js';

export interface BudgetOptions {
  /** Estimated native bytes of decodes in flight plus crops queued (default 256 MiB). */
  maxInflightBytes?: number;
  /** Source pixels being decoded at once (default 120 M). */
  maxInflightPixels?: number;
  /** Images that may wait for budget; more are refused with E_BUSY at once (default 256). */
  maxWaiting?: number;
  /** Longest wait for budget before E_BUSY, ms (default 10,000). */
  queueTimeoutMs?: number;
  /**
   * Decodes of at most this many pixels (and crop reservations) pass the
   * waiting queue when they fit, and may use a reserve of 1/8 over the
   * limits, so that ordinary photos keep flowing while large images wait
   * their turn (default 4 M).
   */
  smallPixels?: number;
}

export interface BudgetStats {
  bytes: number;
  pixels: number;
  decoding: number;
  waiting: number;
  /** Calls refused with E_BUSY so far. */
  refused: number;
  limits: Required<BudgetOptions>;
}

export interface Cost {
  bytes: number;
  pixels: number;
}

/** What a granted reservation holds; release() gives back part or all of it (idempotent past zero). */
export interface Lease {
  release(part?: Cost): void;
}

const DEFAULTS: Required<BudgetOptions> = { maxInflightBytes: 256 << 20, maxInflightPixels: 120_000_000, maxWaiting: 256, queueTimeoutMs: 10_000, smallPixels: 4_000_000 };

const ENV: Record<keyof BudgetOptions, string> = {
  maxInflightBytes: 'QF_MAX_INFLIGHT_BYTES',
  maxInflightPixels: 'QF_MAX_INFLIGHT_PIXELS',
  maxWaiting: 'QF_MAX_WAITING',
  queueTimeoutMs: 'QF_QUEUE_TIMEOUT_MS',
  smallPixels: 'QF_SMALL_PIXELS',
};

function check(o: BudgetOptions, from: string): void {
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue;
    if (!(k in DEFAULTS)) throw new QuantFaceError('E_ARG', `${from}: unknown budget option '${k}' (use ${Object.keys(DEFAULTS).join(', ')})`);
    if (!(Number.isInteger(v) && (v as number) > 0)) throw new QuantFaceError('E_ARG', `${from}: ${k} must be a positive integer (got ${String(v)})`);
  }
}

function fromEnv(): BudgetOptions {
  const o: BudgetOptions = {};
  for (const [k, name] of Object.entries(ENV) as [keyof BudgetOptions, string][]) {
    const v = process.env[name];
    if (v !== undefined && v !== '') o[k] = Number(v);
  }
  check(o, 'environment');
  return o;
}

interface Waiter {
  cost: Cost;
  decode: boolean;
  grant: (l: Lease) => void;
  fail: (e: unknown) => void;
  timer: NodeJS.Timeout;
}

export class InflightBudget {
  private lim: Required<BudgetOptions>;
  private bytes = 0;
  private pixels = 0;
  private decoding = 0;
  private readonly waiters: Waiter[] = [];
  private refusedCalls = 0;

  constructor(o: BudgetOptions = {}) {
    check(o, 'budget');
    this.lim = { ...DEFAULTS, ...o };
  }

  configure(o: BudgetOptions): void {
    check(o, 'budget');
    this.lim = { ...this.lim, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) };
    this.pump();
  }

  get limits(): Required<BudgetOptions> {
    return { ...this.lim };
  }

  stats(): BudgetStats {
    return { bytes: this.bytes, pixels: this.pixels, decoding: this.decoding, waiting: this.waiters.length, refused: this.refusedCalls, limits: this.limits };
  }

  /** Refuses (E_BUSY) a call of n images when the waiting queue cannot take them. */
  admit(n: number): void {
    if (this.waiters.length > 0 && this.waiters.length + n > this.lim.maxWaiting) {
      this.refusedCalls++;
      throw new QuantFaceError('E_BUSY', `busy: ${this.waiters.length} images are waiting for the in-flight budget (the queue holds ${this.lim.maxWaiting}); retry later`);
    }
  }

  /** Counts a refusal made by a caller (e.g. a wait that timed out). */
  refused(): void {
    this.refusedCalls++;
  }

  /** Too large ever to fit: an E_SHAPE naming the budget. */
  private tooLarge(c: Cost, what: string): QuantFaceError | null {
    if (c.bytes > this.lim.maxInflightBytes)
      return new QuantFaceError('E_SHAPE', `${what} needs about ${Math.ceil(c.bytes / 2 ** 20)} MiB to decode; the limit is the in-flight budget of ${Math.floor(this.lim.maxInflightBytes / 2 ** 20)} MiB (maxInflightBytes)`);
    if (c.pixels > this.lim.maxInflightPixels) return new QuantFaceError('E_SHAPE', `${what} has ${c.pixels} pixels; the limit is the in-flight budget of ${this.lim.maxInflightPixels} pixels (maxInflightPixels)`);
    return null;
  }

  private fits(c: Cost, decode: boolean): boolean {
    if (decode && this.decoding === 0) return true; // progress: one decode can always run
    // small work (crops, images up to smallPixels) may also use a reserve of 1/8 over the limits, so
    // that ordinary requests keep flowing while large ones fill the budget
    const k = c.pixels <= this.lim.smallPixels ? 1.125 : 1;
    return this.bytes + c.bytes <= this.lim.maxInflightBytes * k && this.pixels + c.pixels <= this.lim.maxInflightPixels * k;
  }

  private take(c: Cost, decode: boolean): Lease {
    this.bytes += c.bytes;
    this.pixels += c.pixels;
    if (decode) this.decoding++;
    let left = { ...c };
    let decodingHeld = decode;
    return {
      release: (part?: Cost) => {
        const p = part ?? left;
        const b = Math.min(p.bytes, left.bytes);
        const px = Math.min(p.pixels, left.pixels);
        left = { bytes: left.bytes - b, pixels: left.pixels - px };
        this.bytes -= b;
        this.pixels -= px;
        if (decodingHeld && left.pixels === 0) {
          decodingHeld = false;
          this.decoding--;
        }
        if (b > 0 || px > 0) this.pump();
      },
    };
  }

  /**
   * Reserves `c` (a decode when c.pixels > 0). Resolves at once when it
   * fits and nobody waits, else after the earlier waiters; rejects with
   * E_BUSY after queueTimeoutMs, E_SHAPE when it can never fit.
   */
  acquire(c: Cost, what = 'the image'): Promise<Lease> {
    const big = this.tooLarge(c, what);
    if (big) return Promise.reject(big);
    const decode = c.pixels > 0;
    const small = c.pixels <= this.lim.smallPixels;
    if ((this.waiters.length === 0 || small) && this.fits(c, decode)) return Promise.resolve(this.take(c, decode));
    if (this.waiters.length >= this.lim.maxWaiting) {
      this.refusedCalls++;
      return Promise.reject(new QuantFaceError('E_BUSY', `busy: ${this.waiters.length} images are waiting for the in-flight budget (the queue holds ${this.lim.maxWaiting}); retry later`));
    }
    return new Promise<Lease>((grant, fail) => {
      const w: Waiter = {
        cost: c,
        decode,
        grant,
        fail,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          this.refusedCalls++;
          fail(new QuantFaceError('E_BUSY', `busy: ${what} waited ${this.lim.queueTimeoutMs} ms for the in-flight budget (${Math.floor(this.lim.maxInflightBytes / 2 ** 20)} MiB, ${this.lim.maxInflightPixels} pixels); retry later`));
          this.pump();
        }, this.lim.queueTimeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** Removes waiters (a call that already failed); their promises reject with `e`. */
  cancel(pred: (c: Cost) => boolean, e: unknown): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (pred(w.cost)) {
        this.waiters.splice(i, 1);
        clearTimeout(w.timer);
        w.fail(e);
      }
    }
    this.pump();
  }

  private pump(): void {
    // first in, first out; small ones that fit may pass a large one that does not
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i]!;
      if ((i === 0 || w.cost.pixels <= this.lim.smallPixels) && this.fits(w.cost, w.decode)) {
        this.waiters.splice(i, 1);
        clearTimeout(w.timer);
        w.grant(this.take(w.cost, w.decode));
      } else i++;
    }
  }
}

let shared: InflightBudget | undefined;

/** The process-wide budget (created on first use from the environment). */
export function inflightBudget(): InflightBudget {
  shared ??= new InflightBudget(fromEnv());
  return shared;
}

/** Sets the process-wide budget's limits (every model in the process shares it). */
export function configureBudget(o: BudgetOptions): Required<BudgetOptions> {
  const b = inflightBudget();
  b.configure(o);
  return b.limits;
}
