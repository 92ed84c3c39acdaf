/**
 * Module base: parameters with gradients, buffers, children, train/eval
 * modes, named state dicts, deep copies, shape inference and FLOP counting.
 *
 * Execution model (layer-wise explicit backward, no tape):
 * - `forward(x)` computes the output and, while gradients are enabled
 *   (see `noGrad`), keeps what its `backward` needs. A module instance is
 *   called once per forward pass (use separate instances for repeated layers).
 * - `backward(gradOut)` returns the gradient with respect to the input(s)
 *   and ACCUMULATES parameter gradients into `param.grad` (call
 *   `zeroGrad()` between steps; the optimisers' `zeroGrad()` does it).
 * - Memory: with gradients enabled, a module's output lives in a buffer the
 *   module reuses on its next call (it is saved for backward anyway): it stays
 *   valid until that module runs again; `clone()` it to keep it longer.
 *   Input gradients, and every output computed under noGrad, come from the
 *   shared buffer pool (./pool.ts): whoever passes a tensor to a module keeps
 *   owning it; a module returns either a new pooled tensor (owned by the
 *   caller) or its argument itself / a view of it. Containers release the
 *   intermediates they own as soon as they are consumed. Callers that are
 *   done with a pooled result may `bufferPool.release()` it (optional).
 * - backward never modifies gradOut.
 * - Inputs are saved by reference: a tensor passed to forward with gradients
 *   enabled must stay unchanged (and must not be released to the pool) until
 *   backward has run, as PyTorch forbids in-place changes to saved tensors.
 */
import { bufferPool } from './pool.js';
import {
  Tensor,
  QuantFaceError,
  shapeEqual,
  shapeStr,
  allocData,
  numelOf,
  type DType,
  type FloatDType,
  type FTensor,
} from '../tensor.js';

// ------------------------------------------------------------------ grad mode
let gradEnabledFlag = true;

/** Whether forward passes keep what backward needs. */
export function isGradEnabled(): boolean {
  return gradEnabledFlag;
}

/** Runs fn with gradient bookkeeping off (inference: the teacher). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabledFlag;
  gradEnabledFlag = false;
  try {
    return fn();
  } finally {
    gradEnabledFlag = prev;
  }
}

// ------------------------------------------------------------------ parameters
export class Parameter {
  data: FTensor;
  requiresGrad: boolean;
  private gradBuf: FTensor | null = null;
  private hasGrad = false;

  constructor(data: FTensor, requiresGrad = true) {
    this.data = data;
    this.requiresGrad = requiresGrad;
  }

  /** The accumulated gradient, or null when none was computed since zeroGrad(). */
  get grad(): FTensor | null {
    return this.hasGrad ? this.gradBuf : null;
  }

  set grad(g: FTensor | null) {
    if (g === null) {
      this.hasGrad = false;
      return;
    }
    if (!shapeEqual(g.shape, this.data.shape)) throw new QuantFaceError('E_SHAPE', `grad shape ${shapeStr(g.shape)} != ${shapeStr(this.data.shape)}`);
    this.gradBuf = g;
    this.hasGrad = true;
  }

  /**
   * The buffer a backward pass writes this parameter's gradient into, and
   * whether it must accumulate (true once a gradient exists since zeroGrad).
   * Marks the gradient as present.
   */
  gradSlot(): { grad: FTensor; accumulate: boolean } {
    if (!this.gradBuf || this.gradBuf.dtype !== this.data.dtype || !shapeEqual(this.gradBuf.shape, this.data.shape))
      this.gradBuf = Tensor.zeros(this.data.shape, this.data.dtype) as FTensor;
    const accumulate = this.hasGrad;
    this.hasGrad = true;
    return { grad: this.gradBuf, accumulate };
  }

  zeroGrad(): void {
    this.hasGrad = false;
  }

  get numel(): number {
    return this.data.numel;
  }
}

// ------------------------------------------------------------------ shapes and FLOPs
export interface ShapeInfo {
  /** Output shape. */
  shape: number[];
  /** Multiply-accumulates of this module for the given input shapes (children included). */
  macs: number;
}

// ------------------------------------------------------------------ module
export abstract class Module {
  training = true;
  /** Registered parameters, buffers and children, in registration order. */
  readonly _params = new Map<string, Parameter>();
  readonly _buffers = new Map<string, FTensor>();
  readonly _children = new Map<string, Module>();
  /** Reused output/gradient buffers (not state; dropped by clone()). */
  protected _scratch = new Map<string, Tensor>();

  /** Computes the output. Multi-input modules (Add) take several tensors. */
  abstract forward(...inputs: FTensor[]): FTensor;
  /** Gradient with respect to the input (an array for multi-input modules). */
  abstract backward(gradOut: FTensor): FTensor | FTensor[];
  /** Output shape and MACs for the given input shapes (no data touched). */
  abstract inferShape(...inputShapes: number[][]): ShapeInfo;

  /** Number of inputs forward takes. */
  get numInputs(): number {
    return 1;
  }

  // ---------------------------------------------------------------- registration
  protected registerParameter(name: string, p: Parameter | null): Parameter | null {
    if (p) this._params.set(name, p);
    else this._params.delete(name);
    return p;
  }

  protected registerBuffer(name: string, t: FTensor): FTensor {
    this._buffers.set(name, t);
    return t;
  }

  protected buffer(name: string): FTensor {
    const b = this._buffers.get(name);
    if (!b) throw new QuantFaceError('E_ARG', `${this.constructor.name}: no buffer ${name}`);
    return b;
  }

  /** Adds, replaces (same name) or removes (null) a child module. */
  setChild(name: string, m: Module | null): void {
    if (m) this._children.set(name, m);
    else this._children.delete(name);
  }

  getChild(name: string): Module | undefined {
    return this._children.get(name);
  }

  // ---------------------------------------------------------------- traversal
  *namedChildren(): IterableIterator<[string, Module]> {
    yield* this._children.entries();
  }

  /** This module and every descendant, with dotted names ('' for this one). */
  *namedModules(prefix = ''): IterableIterator<[string, Module]> {
    yield [prefix, this];
    for (const [n, c] of this._children) yield* c.namedModules(prefix ? `${prefix}.${n}` : n);
  }

  *modules(): IterableIterator<Module> {
    for (const [, m] of this.namedModules()) yield m;
  }

  *namedParameters(prefix = ''): IterableIterator<[string, Parameter]> {
    for (const [n, p] of this._params) yield [prefix ? `${prefix}.${n}` : n, p];
    for (const [n, c] of this._children) yield* c.namedParameters(prefix ? `${prefix}.${n}` : n);
  }

  parameters(): Parameter[] {
    return [...this.namedParameters()].map(([, p]) => p);
  }

  *namedBuffers(prefix = ''): IterableIterator<[string, FTensor]> {
    for (const [n, b] of this._buffers) yield [prefix ? `${prefix}.${n}` : n, b];
    for (const [n, c] of this._children) yield* c.namedBuffers(prefix ? `${prefix}.${n}` : n);
  }

  /** Total number of parameter elements (trainable or frozen). */
  numParams(trainableOnly = false): number {
    let n = 0;
    for (const p of this.parameters()) if (!trainableOnly || p.requiresGrad) n += p.numel;
    return n;
  }

  // ---------------------------------------------------------------- modes
  /** Sets training mode on this module and all descendants. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.zeroGrad();
  }

  // ---------------------------------------------------------------- state
  /** Parameters and buffers by dotted name (the tensors themselves, not copies). */
  stateDict(): Map<string, FTensor> {
    const sd = new Map<string, FTensor>();
    for (const [n, p] of this.namedParameters()) sd.set(n, p.data);
    for (const [n, b] of this.namedBuffers()) sd.set(n, b);
    return sd;
  }

  /**
   * Copies values from a state dict into this module's tensors (shapes must
   * match). strict: every key on both sides must match.
   * Returns the keys missing from sd and the keys of sd this module lacks.
   */
  loadStateDict(sd: Map<string, Tensor> | Record<string, Tensor>, strict = true): { missing: string[]; unexpected: string[] } {
    const src = sd instanceof Map ? sd : new Map(Object.entries(sd));
    const own = this.stateDict();
    const missing: string[] = [];
    const unexpected: string[] = [];
    for (const k of own.keys()) if (!src.has(k)) missing.push(k);
    for (const k of src.keys()) if (!own.has(k)) unexpected.push(k);
    if (strict && (missing.length || unexpected.length))
      throw new QuantFaceError(
        'E_ARG',
        `loadStateDict: missing keys [${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}], ` +
          `unexpected keys [${unexpected.slice(0, 8).join(', ')}${unexpected.length > 8 ? ', ...' : ''}]`,
      );
    for (const [k, t] of own) {
      const s = src.get(k);
      if (!s) continue;
      if (!shapeEqual(s.shape, t.shape))
        throw new QuantFaceError('E_SHAPE', `loadStateDict: ${k} has shape ${shapeStr(s.shape)}, expected ${shapeStr(t.shape)}`);
      t.copyFrom(s);
    }
    return { missing, unexpected };
  }

  /** Converts every parameter and buffer to dtype (f64 runs the reference kernels). */
  to(dtype: FloatDType): this {
    for (const m of this.modules()) {
      for (const p of m._params.values()) if (p.data.dtype !== dtype) p.data = p.data.to(dtype) as FTensor;
      for (const [n, b] of m._buffers) if (b.dtype !== dtype) m._buffers.set(n, b.to(dtype) as FTensor);
      m._scratch.clear();
      m.onDtypeChange();
    }
    return this;
  }

  /** Hook for modules that cache dtype-specific state. */
  protected onDtypeChange(): void {}

  /** A deep copy: new parameters, buffers and children; gradients and caches not copied. */
  clone(): this {
    return deepClone(this, new Map()) as this;
  }

  // ---------------------------------------------------------------- helpers
  /** A reusable buffer: the same tensor while shape and dtype are unchanged. */
  protected scratch<D extends DType>(key: string, shape: readonly number[], dtype: D): Tensor<D> {
    const t = this._scratch.get(key);
    if (t && t.dtype === dtype && shapeEqual(t.shape, shape)) return t as Tensor<D>;
    const n = numelOf(shape);
    // Reuse the allocation when only the shape changed but the size fits exactly.
    const nt = t && t.dtype === dtype && t.numel === n ? new Tensor<D>(t.data as never, shape) : new Tensor<D>(allocData(dtype, n), shape);
    this._scratch.set(key, nt);
    return nt;
  }

  /** Buffer for this module's output: module-owned while gradients are enabled, pooled under noGrad. */
  protected outBuffer(shape: readonly number[], dtype: FloatDType, key = 'out'): FTensor {
    return (isGradEnabled() ? this.scratch(key, shape, dtype) : bufferPool.acquire(shape, dtype)) as FTensor;
  }

  /** Buffer for an input gradient (pooled; ownership passes to the caller). */
  protected gradBuffer(shape: readonly number[], dtype: FloatDType): FTensor {
    return bufferPool.acquire(shape, dtype) as FTensor;
  }

  /** Drops reused buffers (frees memory between phases). */
  releaseBuffers(): void {
    for (const m of this.modules()) m._scratch.clear();
  }

  /** One-line description used by toString(). */
  describe(): string {
    return this.constructor.name;
  }

  toString(indent = ''): string {
    const lines = [indent + this.describe()];
    for (const [n, c] of this._children) lines.push(`${indent}  (${n}): ${c.toString(indent + '  ').trimStart()}`);
    return lines.join('\n');
  }
}

/** Fields holding transient per-call state: not copied by clone(). */
const TRANSIENT = new Set(['_scratch', 'ctx']);

function deepClone(v: unknown, memo: Map<unknown, unknown>): unknown {
  if (v === null || typeof v !== 'object') return v;
  if (memo.has(v)) return memo.get(v);
  if (v instanceof Tensor) {
    const t = v.clone();
    memo.set(v, t);
    return t;
  }
  if (ArrayBuffer.isView(v)) {
    const t = (v as unknown as Float32Array).slice();
    memo.set(v, t);
    return t;
  }
  if (v instanceof Parameter) {
    const p = new Parameter(deepClone(v.data, memo) as FTensor, v.requiresGrad);
    memo.set(v, p);
    return p;
  }
  if (v instanceof Map) {
    const m = new Map();
    memo.set(v, m);
    for (const [k, x] of v) m.set(k, deepClone(x, memo));
    return m;
  }
  if (Array.isArray(v)) {
    const a: unknown[] = [];
    memo.set(v, a);
    for (const x of v) a.push(deepClone(x, memo));
    return a;
  }
  if (typeof (v as { cloneState?: unknown }).cloneState === 'function') {
    const c = (v as { cloneState(): unknown }).cloneState();
    memo.set(v, c);
    return c;
  }
  const o = Object.create(Object.getPrototypeOf(v)) as Record<string, unknown>;
  memo.set(v, o);
  for (const k of Object.keys(v)) {
    if (TRANSIENT.has(k)) {
      const src = (v as Record<string, unknown>)[k];
      o[k] = src instanceof Map ? new Map() : undefined;
      continue;
    }
    o[k] = deepClone((v as Record<string, unknown>)[k], memo);
  }
  return o;
}
