/**
 * A pool of reusable typed-array buffers for transient tensors: gradients
 * in backward passes, and every activation of a forward pass run under
 * noGrad (inference, the teacher). Containers release a tensor as soon as
 * its consumer is done with it, so the live set stays a few tensors deep
 * instead of one buffer per module.
 *
 * Rules:
 * - acquire() returns a tensor with reference count 1.
 * - retain() adds a reference (a tensor handed to two consumers);
 *   release() drops one; at 0 the buffer returns to the free list.
 * - Views share their buffer: reshape() of a pooled tensor is the same
 *   buffer for retain/release.
 * - Tensors the pool did not create (user inputs, module-owned buffers) are
 *   ignored by retain/release.
 * Buffers are grouped in size classes (1/8-octave steps) so that similar
 * sizes reuse each other's memory.
 */
import { Tensor, allocData, numelOf, type DType, type TypedData } from '../tensor.js';

interface Entry {
  refs: number;
  cls: number;
  dtype: DType;
}

function sizeClass(n: number): number {
  if (n <= 64) return 64;
  const e = Math.floor(Math.log2(n));
  const step = 2 ** Math.max(0, e - 3);
  return Math.ceil(n / step) * step;
}

export class BufferPool {
  private readonly free = new Map<string, TypedData[]>();
  private readonly live = new WeakMap<ArrayBufferLike, Entry>();
  private heldBytes = 0;
  private liveBytes = 0;
  /** Largest number of bytes handed out at once since the last resetStats(). */
  highWaterBytes = 0;

  acquire<D extends DType>(shape: readonly number[], dtype: D): Tensor<D> {
    const n = numelOf(shape);
    const cls = sizeClass(n);
    const key = `${dtype}:${cls}`;
    const list = this.free.get(key);
    let base = list?.pop();
    if (base) this.heldBytes -= base.byteLength;
    else base = allocData(dtype, cls);
    this.live.set(base.buffer, { refs: 1, cls, dtype });
    this.liveBytes += base.byteLength;
    this.highWaterBytes = Math.max(this.highWaterBytes, this.liveBytes);
    const data = (n === cls ? base : base.subarray(0, n)) as Tensor<D>['data'];
    return new Tensor<D>(data, shape);
  }

  /** True when t's memory came from this pool and is still handed out. */
  owns(t: Tensor): boolean {
    return this.live.has(t.data.buffer);
  }

  retain(t: Tensor): void {
    const e = this.live.get(t.data.buffer);
    if (e) e.refs++;
  }

  release(t: Tensor | null | undefined): void {
    if (!t) return;
    const buf = t.data.buffer;
    const e = this.live.get(buf);
    if (!e) return;
    if (--e.refs > 0) return;
    this.live.delete(buf);
    const key = `${e.dtype}:${e.cls}`;
    let list = this.free.get(key);
    if (!list) {
      list = [];
      this.free.set(key, list);
    }
    const base = allocViewOf(e.dtype, buf, e.cls);
    list.push(base);
    this.liveBytes -= base.byteLength;
    this.heldBytes += base.byteLength;
  }

  /** Drops every free buffer (memory returns to the garbage collector). */
  clear(): void {
    this.free.clear();
    this.heldBytes = 0;
  }

  resetStats(): void {
    this.highWaterBytes = this.liveBytes;
  }

  /** Bytes in the free lists and bytes handed out. */
  stats(): { freeBytes: number; liveBytes: number; highWaterBytes: number } {
    return { freeBytes: this.heldBytes, liveBytes: this.liveBytes, highWaterBytes: this.highWaterBytes };
  }
}

function allocViewOf(dtype: DType, buf: ArrayBufferLike, n: number): TypedData {
  switch (dtype) {
    case 'f32':
      return new Float32Array(buf, 0, n);
    case 'f64':
      return new Float64Array(buf, 0, n);
    case 's8':
      return new Int8Array(buf, 0, n);
    case 'u8':
      return new Uint8Array(buf, 0, n);
    case 's32':
      return new Int32Array(buf, 0, n);
  }
}

/** The engine's shared pool. */
export const bufferPool = new BufferPool();

/** Same memory (a view or the tensor itself)? */
export function sameBuffer(a: Tensor, b: Tensor): boolean {
  return a.data.buffer === b.data.buffer;
}
