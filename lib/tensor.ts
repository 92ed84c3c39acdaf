/**
 * Tensors of the training engine: a shape, a dtype and a flat typed array
 * (row-major; images and activations are NHWC). No autograd graph lives
 * here: modules (lib/nn) implement forward and backward explicitly.
 *
 * dtypes: f32 (everything the engine trains and runs), s8/u8/s32 (integer
 * inference), and f64, a reference dtype used for float64 gradient checks:
 * f64 tensors run through the engine's JavaScript reference kernels, never
 * the native ones.
 */

import { QuantFaceError } from './errors.js';

export { QuantFaceError };

export type DType = 'f32' | 'f64' | 's8' | 'u8' | 's32';
export type FloatDType = 'f32' | 'f64';
export type Device = 'cpu';

export type DataOf<D extends DType> = D extends 'f32'
  ? Float32Array
  : D extends 'f64'
    ? Float64Array
    : D extends 's8'
      ? Int8Array
      : D extends 'u8'
        ? Uint8Array
        : D extends 's32'
          ? Int32Array
          : never;

export type TypedData = Float32Array | Float64Array | Int8Array | Uint8Array | Int32Array;
export type FloatArray = Float32Array | Float64Array;

export function shapeError(message: string): QuantFaceError {
  return new QuantFaceError('E_SHAPE', message);
}

const CTORS = {
  f32: Float32Array,
  f64: Float64Array,
  s8: Int8Array,
  u8: Uint8Array,
  s32: Int32Array,
} as const;

export function dtypeOf(data: TypedData): DType {
  if (data instanceof Float32Array) return 'f32';
  if (data instanceof Float64Array) return 'f64';
  if (data instanceof Int8Array) return 's8';
  if (data instanceof Uint8Array) return 'u8';
  if (data instanceof Int32Array) return 's32';
  throw new TypeError('unsupported typed array');
}

export function allocData<D extends DType>(dtype: D, n: number): DataOf<D> {
  const C = CTORS[dtype];
  if (!C) throw new QuantFaceError('E_ARG', `unknown dtype ${String(dtype)}`);
  return new C(n) as DataOf<D>;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw shapeError(`invalid shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

export function shapeEqual(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function shapeStr(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

export class Tensor<D extends DType = DType> {
  readonly shape: readonly number[];
  readonly dtype: D;
  readonly device: Device = 'cpu';
  readonly data: DataOf<D>;

  constructor(data: DataOf<D>, shape: readonly number[]) {
    const n = numelOf(shape);
    if (data.length !== n) throw shapeError(`data length ${data.length} does not match shape ${shapeStr(shape)} (${n} elements)`);
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtypeOf(data) as D;
  }

  static zeros<D extends DType = 'f32'>(shape: readonly number[], dtype?: D): Tensor<D> {
    const dt = (dtype ?? 'f32') as D;
    return new Tensor<D>(allocData(dt, numelOf(shape)), shape);
  }

  static full<D extends DType = 'f32'>(shape: readonly number[], value: number, dtype?: D): Tensor<D> {
    const t = Tensor.zeros(shape, dtype);
    t.data.fill(value);
    return t;
  }

  /** Wraps (does not copy) a typed array, or copies a plain array into f32. */
  static from<D extends DType>(data: DataOf<D>, shape?: readonly number[]): Tensor<D>;
  static from(data: readonly number[], shape?: readonly number[]): Tensor<'f32'>;
  static from(data: TypedData | readonly number[], shape?: readonly number[]): Tensor {
    const d = Array.isArray(data) ? Float32Array.from(data as number[]) : (data as TypedData);
    return new Tensor(d, shape ?? [d.length]);
  }

  /** Normal(mean, std) from a seeded generator. */
  static randn<D extends FloatDType = 'f32'>(shape: readonly number[], rng: Rng, std = 1, mean = 0, dtype?: D): Tensor<D> {
    const t = Tensor.zeros(shape, (dtype ?? 'f32') as D);
    const d = t.data as FloatArray;
    for (let i = 0; i < d.length; i++) d[i] = mean + std * rng.normal();
    return t;
  }

  /** Uniform[lo, hi) from a seeded generator. */
  static uniform<D extends FloatDType = 'f32'>(shape: readonly number[], rng: Rng, lo = 0, hi = 1, dtype?: D): Tensor<D> {
    const t = Tensor.zeros(shape, (dtype ?? 'f32') as D);
    const d = t.data as FloatArray;
    for (let i = 0; i < d.length; i++) d[i] = lo + (hi - lo) * rng.uniform();
    return t;
  }

  get numel(): number {
    return this.data.length;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** Size of dimension i (negative counts from the end). */
  dim(i: number): number {
    const r = this.shape.length;
    const j = i < 0 ? r + i : i;
    if (j < 0 || j >= r) throw shapeError(`dimension ${i} out of range for shape ${shapeStr(this.shape)}`);
    return this.shape[j]!;
  }

  /** A view with another shape over the same data (-1 infers one dimension). */
  reshape(shape: readonly number[]): Tensor<D> {
    const s = [...shape];
    const neg = s.indexOf(-1);
    if (neg >= 0) {
      let rest = 1;
      s.forEach((d, i) => {
        if (i !== neg) rest *= d;
      });
      if (rest === 0 || this.numel % rest !== 0) throw shapeError(`cannot reshape ${shapeStr(this.shape)} to ${shapeStr(shape)}`);
      s[neg] = this.numel / rest;
    }
    if (numelOf(s) !== this.numel) throw shapeError(`cannot reshape ${shapeStr(this.shape)} to ${shapeStr(shape)}`);
    return new Tensor<D>(this.data, s);
  }

  clone(): Tensor<D> {
    return new Tensor<D>(this.data.slice() as DataOf<D>, this.shape);
  }

  /** Converts to another dtype (copy; integer targets round half to even and saturate). */
  to<E extends DType>(dtype: E): Tensor<E> {
    if ((dtype as DType) === this.dtype) return this.clone() as unknown as Tensor<E>;
    const out = Tensor.zeros(this.shape, dtype);
    const src = this.data;
    const dst = out.data;
    if (dtype === 'f32' || dtype === 'f64') {
      for (let i = 0; i < src.length; i++) dst[i] = src[i]!;
    } else {
      const [lo, hi] = dtype === 's8' ? [-128, 127] : dtype === 'u8' ? [0, 255] : [-2147483648, 2147483647];
      for (let i = 0; i < src.length; i++) {
        const v = rne(src[i]!);
        dst[i] = v < lo ? lo : v > hi ? hi : v;
      }
    }
    return out;
  }

  fill(v: number): this {
    this.data.fill(v);
    return this;
  }

  /** Copies other's values (same number of elements) into this tensor. */
  copyFrom(other: Tensor): this {
    if (other.numel !== this.numel) throw shapeError(`copyFrom: ${shapeStr(other.shape)} into ${shapeStr(this.shape)}`);
    if (other.dtype === this.dtype) (this.data as TypedData).set(other.data as never);
    else for (let i = 0; i < this.numel; i++) this.data[i] = other.data[i]!;
    return this;
  }

  /** Plain array copy of the values (for tests and printing). */
  toArray(): number[] {
    return Array.from(this.data as ArrayLike<number>);
  }

  toString(): string {
    return `Tensor(${this.dtype}, ${shapeStr(this.shape)})`;
  }
}

export type FloatTensor = Tensor<'f32'> | Tensor<'f64'>;
/** Any float tensor (f32 or f64), with data typed as the union. */
export type FTensor = Tensor<FloatDType>;

export function isFloatTensor(t: Tensor): t is FTensor {
  return t.dtype === 'f32' || t.dtype === 'f64';
}

export function assertShape(t: Tensor, shape: readonly (number | null)[], what: string): void {
  let ok = t.shape.length === shape.length;
  for (let i = 0; ok && i < shape.length; i++) if (shape[i] !== null && shape[i] !== t.shape[i]) ok = false;
  if (!ok)
    throw shapeError(`${what}: expected shape [${shape.map((d) => (d === null ? '*' : d)).join(', ')}], got ${shapeStr(t.shape)}`);
}

/** Round half to even (JS Math.round rounds halves up). */
export function rne(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// ------------------------------------------------------------------ small helpers
/** out = a + b elementwise (out may alias a or b). */
export function addInto(out: FloatArray, a: FloatArray, b: FloatArray): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] = a[i]! + b[i]!;
}

/** Sum of all elements, accumulated in float64. */
export function sum(t: Tensor): number {
  const d = t.data;
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i]!;
  return s;
}

/** Dot product of two equally long float arrays, in float64. */
export function dot(a: FloatArray, b: FloatArray): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Max |a - b| over two equally long arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d;
  }
  return m;
}

// ------------------------------------------------------------------ randomness
/**
 * Seeded pseudo-random generator (xoshiro128**, seeded by splitmix32).
 * The same seed gives the same sequence on every platform.
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  constructor(seed = 0) {
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Uniform uint32. */
  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /** Uniform in [0, 1) with 32 random bits. */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** A new generator seeded from this one (independent stream). */
  fork(): Rng {
    return new Rng(this.nextU32());
  }

  /** Fisher-Yates shuffle in place. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
    return a;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
