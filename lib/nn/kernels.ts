/**
 * The engine's kernel layer: each function runs the native kernel
 * (binding.d.ts) for float32 data and the JavaScript reference
 * (reference.ts) for float64 data. A float32 call whose native kernel is
 * missing from the loaded addon (development builds with QF_ONLY) also
 * falls back to the reference, unless QUANTFACE_REQUIRE_NATIVE=1, which
 * makes it throw instead (benchmarks set it). `kernelSources()` says which
 * path each kernel takes.
 */
import { binding } from '../binding.js';
import { QuantFaceError, type FloatArray } from '../tensor.js';
import * as ref from './reference.js';
import type { ConvGeom, GemmArgs, FakeQuantArgs } from './reference.js';

export type { ConvGeom, GemmArgs, FakeQuantArgs } from './reference.js';
export { convOutSize } from './reference.js';

type NativeName = 'sgemm' | 'conv2d' | 'conv2dBackwardInput' | 'conv2dBackwardWeight' | 'fakeQuantize' | 'fakeQuantizeBackward' | 'minMax';
const NAMES: NativeName[] = ['sgemm', 'conv2d', 'conv2dBackwardInput', 'conv2dBackwardWeight', 'fakeQuantize', 'fakeQuantizeBackward', 'minMax'];

const present = new Map<NativeName, boolean>(
  NAMES.map((n) => [n, typeof (binding as unknown as Record<string, unknown>)[n] === 'function'] as const),
);
const requireNative = process.env.QUANTFACE_REQUIRE_NATIVE === '1';

/** Kernel -> 'native' or 'js' (the path float32 data takes). */
export function kernelSources(): Record<NativeName, 'native' | 'js'> {
  const r = {} as Record<NativeName, 'native' | 'js'>;
  for (const n of NAMES) r[n] = present.get(n) ? 'native' : 'js';
  return r;
}

function useNative(name: NativeName, ...arrays: (FloatArray | undefined)[]): boolean {
  for (const a of arrays) if (a !== undefined && !(a instanceof Float32Array)) return false;
  if (present.get(name)) return true;
  if (requireNative)
    throw new QuantFaceError('E_UNSUPPORTED_OP', `native kernel ${name} is missing from the loaded addon (QUANTFACE_REQUIRE_NATIVE=1)`);
  return false;
}

// ------------------------------------------------------------------ GEMM
export function gemm(o: GemmArgs): void {
  if (useNative('sgemm', o.a, o.b, o.c)) {
    binding.sgemm(o as Parameters<typeof binding.sgemm>[0]);
    return;
  }
  ref.gemmRef(o);
}

// ------------------------------------------------------------------ convolution
export function conv2d(g: ConvGeom, x: FloatArray, weight: FloatArray, bias: FloatArray | undefined, out: FloatArray): void {
  if (useNative('conv2d', x, weight, bias, out)) {
    binding.conv2d({ ...g, x: x as Float32Array, weight: weight as Float32Array, out: out as Float32Array, ...(bias ? { bias: bias as Float32Array } : {}) });
    return;
  }
  ref.conv2dRef(g, x, weight, bias, out);
}

export function conv2dBackwardInput(g: ConvGeom, gradOut: FloatArray, weight: FloatArray, gradIn: FloatArray, accumulate = false): void {
  if (useNative('conv2dBackwardInput', gradOut, weight, gradIn)) {
    binding.conv2dBackwardInput({
      ...g,
      gradOut: gradOut as Float32Array,
      weight: weight as Float32Array,
      gradIn: gradIn as Float32Array,
      accumulate,
    });
    return;
  }
  ref.conv2dBackwardInputRef(g, gradOut, weight, gradIn, accumulate);
}

export function conv2dBackwardWeight(
  g: ConvGeom,
  x: FloatArray,
  gradOut: FloatArray,
  gradWeight: FloatArray,
  gradBias: FloatArray | undefined,
  accumulate = false,
): void {
  if (useNative('conv2dBackwardWeight', x, gradOut, gradWeight, gradBias)) {
    binding.conv2dBackwardWeight({
      ...g,
      x: x as Float32Array,
      gradOut: gradOut as Float32Array,
      gradWeight: gradWeight as Float32Array,
      ...(gradBias ? { gradBias: gradBias as Float32Array } : {}),
      accumulate,
    });
    return;
  }
  ref.conv2dBackwardWeightRef(g, x, gradOut, gradWeight, gradBias, accumulate);
}

// ------------------------------------------------------------------ quantization
export function fakeQuantize(o: FakeQuantArgs): void {
  if (useNative('fakeQuantize', o.x, o.out)) {
    binding.fakeQuantize({
      x: o.x as Float32Array,
      out: o.out as Float32Array,
      scale: o.scale instanceof Float32Array ? o.scale : Float32Array.from(o.scale),
      zeroPoint: o.zeroPoint instanceof Int32Array ? o.zeroPoint : Int32Array.from(o.zeroPoint),
      quantMin: o.quantMin,
      quantMax: o.quantMax,
      channels: o.channels ?? 1,
      inner: o.inner ?? 1,
      ...(o.mask ? { mask: o.mask } : {}),
    });
    return;
  }
  ref.fakeQuantizeRef(o);
}

export function fakeQuantizeBackward(gradOut: FloatArray, gradIn: FloatArray, mask: Uint8Array | undefined, accumulate = false): void {
  if (useNative('fakeQuantizeBackward', gradOut, gradIn)) {
    binding.fakeQuantizeBackward({
      gradOut: gradOut as Float32Array,
      gradIn: gradIn as Float32Array,
      accumulate,
      ...(mask ? { mask } : {}),
    });
    return;
  }
  ref.fakeQuantizeBackwardRef(gradOut, gradIn, mask, accumulate);
}

export function minMax(x: FloatArray, min: FloatArray, max: FloatArray, channels = 1, inner = 1): void {
  if (useNative('minMax', x, min, max)) {
    binding.minMax({ x: x as Float32Array, min: min as Float32Array, max: max as Float32Array, channels, inner });
    return;
  }
  ref.minMaxRef(x, min, max, channels, inner);
}
