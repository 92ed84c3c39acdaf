/**
 * A small pool of data worker threads (node:worker_threads).
 *
 * Tasks are posted to a chosen worker at once (so a batch queued ahead is
 * worked on even while the main thread is busy in a training step). A
 * worker keeps the process alive only while it has work: an idle pool
 * never stops the process from exiting, even if close() is forgotten.
 * A task that throws rejects its promise; a worker that dies rejects every
 * task it held and breaks the pool (later tasks reject with the same error).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { QuantFaceError, type QuantFaceErrorCode } from '../errors.js';
import { handleTask, type DataResult, type DataTask } from './worker-core.js';

interface Pending {
  resolve: (r: DataResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
  refd: boolean;
  exited: boolean;
}

/** Something that runs data tasks: the worker pool, or the main thread. */
export interface DataExecutor {
  /** Number of parallel lanes (workers; 1 for the main thread). */
  readonly lanes: number;
  run(task: DataTask, lane?: number): Promise<DataResult>;
  close(): Promise<void>;
}

/** Default number of data workers: the cores left after one for the training step, 1 to 4. */
export function defaultWorkers(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

const KNOWN_CODES = new Set(['E_SHAPE', 'E_FORMAT', 'E_UNSUPPORTED_OP', 'E_IO', 'E_CUDA_UNAVAILABLE', 'E_ARG', 'E_DATA', 'E_CLOSED', 'E_INTERNAL']);

function reviveError(e: { name?: string; message: string; code?: string; stack?: string }): Error {
  const err = e.code && KNOWN_CODES.has(e.code)
    ? new QuantFaceError(e.code as QuantFaceErrorCode, e.message)
    : new Error(`data worker: ${e.message}`);
  if (e.stack) err.stack = `${err.name}: ${err.message}\n    (in data worker)\n${e.stack.split('\n').slice(1).join('\n')}`;
  return err;
}

/**
 * How to start a worker: dist/worker.js directly. From TypeScript sources
 * (tests, benchmarks) worker.ts through a small bootstrap that registers
 * tsx in the worker, with no inherited loader flags: tsx's --import hook is
 * not inherited by worker threads on Node 20, and ts-node's (tap) is, but
 * costs about a second of compiler start-up per worker. Without tsx, the
 * worker inherits the parent's flags and loads worker.ts with them.
 */
function workerStart(): { script: URL | string; options: { eval?: boolean; workerData?: unknown; execArgv?: string[] } } {
  const fromTs = /\.[mc]?ts$/.test(new URL(import.meta.url).pathname);
  const script = new URL(`./worker${fromTs ? '.ts' : '.js'}`, import.meta.url);
  if (!fromTs) return { script, options: {} };
  let tsxApi: string | undefined;
  try {
    tsxApi = import.meta.resolve('tsx/esm/api');
  } catch {
    tsxApi = undefined;
  }
  if (!tsxApi) return { script, options: {} };
  const boot = `const { workerData } = require('node:worker_threads');
import(workerData.tsxApi).then((m) => { m.register(); return import(workerData.script); });`;
  // drop module loader flags (--import X, --import=X, --loader, --require / -r); keep the rest
  const execArgv: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (/^(--import|--loader|--experimental-loader|--require|-r)$/.test(a)) { i++; continue; }
    if (/^--(import|loader|experimental-loader|require)=/.test(a)) continue;
    execArgv.push(a);
  }
  return { script: boot, options: { eval: true, workerData: { tsxApi, script: script.href }, execArgv } };
}

export class WorkerPool implements DataExecutor {
  readonly lanes: number;
  private readonly slots: Slot[];
  private nextId = 1;
  private rr = 0;
  private closed = false;
  private failure: Error | undefined;
  private closing: Promise<void> | undefined;

  constructor(workers: number = defaultWorkers()) {
    if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
      throw new QuantFaceError('E_ARG', `workers must be an integer in [1, 64] (got ${String(workers)})`);
    }
    this.lanes = workers;
    const start = workerStart();
    this.slots = [];
    for (let i = 0; i < workers; i++) {
      const worker = new Worker(start.script, { ...start.options, name: `quantface-data-${i}` });
      const slot: Slot = { worker, pending: new Map(), refd: false, exited: false };
      worker.unref();
      worker.on('message', (m: { id: number; ok: boolean; result?: DataResult; error?: { message: string } }) => {
        const p = slot.pending.get(m.id);
        if (!p) return;
        slot.pending.delete(m.id);
        this.updateRef(slot);
        if (m.ok) p.resolve(m.result!);
        else p.reject(reviveError(m.error as { message: string }));
      });
      worker.on('error', (e: Error) => this.fail(slot, new QuantFaceError('E_INTERNAL', `a data worker crashed: ${e.message}`, { cause: e })));
      worker.on('exit', (code) => {
        slot.exited = true;
        if (!this.closed) this.fail(slot, new QuantFaceError('E_INTERNAL', `a data worker exited unexpectedly (exit code ${code})`));
      });
      this.slots.push(slot);
    }
  }

  private updateRef(slot: Slot): void {
    const want = slot.pending.size > 0;
    if (want === slot.refd || slot.exited) return;
    slot.refd = want;
    if (want) slot.worker.ref();
    else slot.worker.unref();
  }

  private fail(slot: Slot, e: Error): void {
    this.failure ??= e;
    for (const p of slot.pending.values()) p.reject(e);
    slot.pending.clear();
    this.updateRef(slot);
  }

  /** Tasks not yet answered, per worker. */
  pendingCounts(): number[] {
    return this.slots.map((s) => s.pending.size);
  }

  /** Posts a task to worker `lane` (default: round robin). */
  run(task: DataTask | { type: string; [k: string]: unknown }, lane?: number): Promise<DataResult> {
    if (this.closed) return Promise.reject(new QuantFaceError('E_CLOSED', 'the data worker pool was closed; create a new loader'));
    if (this.failure) return Promise.reject(this.failure);
    const i = lane === undefined ? this.rr++ % this.lanes : ((lane % this.lanes) + this.lanes) % this.lanes;
    const slot = this.slots[i]!;
    const id = this.nextId++;
    return new Promise<DataResult>((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      this.updateRef(slot);
      try {
        slot.worker.postMessage({ id, task });
      } catch (e) {
        slot.pending.delete(id);
        this.updateRef(slot);
        reject(new QuantFaceError('E_INTERNAL', `cannot send a task to a data worker: ${(e as Error).message}`, { cause: e }));
      }
    });
  }

  /** Stops every worker; tasks still pending reject with E_CLOSED. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    const err = new QuantFaceError('E_CLOSED', 'the data worker pool was closed while a task was running');
    for (const s of this.slots) {
      for (const p of s.pending.values()) p.reject(err);
      s.pending.clear();
    }
    this.closing = Promise.all(this.slots.map((s) => (s.exited ? Promise.resolve() : s.worker.terminate().then(() => undefined)))).then(() => undefined);
    return this.closing;
  }

  /** Number of worker threads still running (0 after close() resolves). */
  get liveWorkers(): number {
    return this.slots.filter((s) => !s.exited).length;
  }
}

/** Runs tasks on the main thread (workers: 0). Same code, same results. */
export class InlineExecutor implements DataExecutor {
  readonly lanes = 1;
  private closed = false;

  run(task: DataTask): Promise<DataResult> {
    if (this.closed) return Promise.reject(new QuantFaceError('E_CLOSED', 'the data loader was closed; create a new one'));
    return handleTask(task).then((r) => r.result);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
