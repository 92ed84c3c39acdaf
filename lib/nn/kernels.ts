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
import type { ConvGeom, GemmArgs, FakeQuantArgs, QDropFakeQuantArgs, LearnedRangeBackwardArgs } from './reference.js';

export type { ConvGeom, GemmArgs, FakeQuantArgs, QDropFakeQuantArgs, LearnedRangeBackwardArgs } from './reference.js';
export { convOutSize } from './reference.js';

type NativeName =
  | 'sgemm'
  | 'conv2d'
  | 'conv2dBackwardInput'
  | 'conv2dBackwardWeight'
  | 'fakeQuantize'
  | 'fakeQuantizeBackward'
  | 'qdropFakeQuantize'
  | 'learnedRangeBackward'
  | 'minMax'
  | 'batchNormForward'
  | 'batchNormBackward'
  | 'prelu'
  | 'preluBackward'
  | 'rtAdd';
const NAMES: NativeName[] = [
  'sgemm',
  'conv2d',
  'conv2dBackwardInput',
  'conv2dBackwardWeight',
  'fakeQuantize',
  'fakeQuantizeBackward',
  'qdropFakeQuantize',
  'learnedRangeBackward',
  'minMax',
  'batchNormForward',
  'batchNormBackward',
  'prelu',
  'preluBackward',
  'rtAdd',
];

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

/** Whether the float32 native path of kernel `name` applies to these arrays (throws under QUANTFACE_REQUIRE_NATIVE=1 when missing). */
export function nativeApplies(name: NativeName, ...arrays: (FloatArray | undefined)[]): boolean {
  return useNative(name, ...arrays);
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

/**
 * QDrop over a per-tensor fake quantization (reference.ts qdropFakeQuantizeRef):
 * out and drop written, returns the xorshift32 state after the last element.
 */
export function qdropFakeQuantize(o: QDropFakeQuantArgs): number {
  if (useNative('qdropFakeQuantize', o.x, o.out)) {
    return binding.qdropFakeQuantize({
      x: o.x as Float32Array,
      out: o.out as Float32Array,
      drop: o.drop,
      scale: o.scale instanceof Float32Array ? o.scale : Float32Array.from(o.scale),
      zeroPoint: o.zeroPoint instanceof Int32Array ? o.zeroPoint : Int32Array.from(o.zeroPoint),
      quantMin: o.quantMin,
      quantMax: o.quantMax,
      threshold: o.threshold,
      seed: o.seed,
    });
  }
  return ref.qdropFakeQuantizeRef(o);
}

/**
 * Gradients of a learned range (reference.ts learnedRangeBackwardRef): gradIn
 * (when given) and the per-channel sums, bit-identical to the reference.
 */
export function learnedRangeBackward(o: LearnedRangeBackwardArgs): void {
  if (useNative('learnedRangeBackward', o.x, o.gradOut, o.gradIn)) {
    const channels = o.channels ?? 1;
    binding.learnedRangeBackward({
      x: o.x as Float32Array,
      gradOut: o.gradOut as Float32Array,
      ...(o.gradIn ? { gradIn: o.gradIn as Float32Array } : {}),
      ...(o.drop ? { drop: o.drop } : {}),
      scale: o.scale instanceof Float32Array ? o.scale : Float32Array.from(o.scale),
      zeroPoint: o.zeroPoint instanceof Int32Array ? o.zeroPoint : Int32Array.from(o.zeroPoint),
      quantMin: o.quantMin,
      quantMax: o.quantMax,
      channels,
      sums: o.sums,
    });
    return;
  }
  ref.learnedRangeBackwardRef(o);
}

export function minMax(x: FloatArray, min: FloatArray, max: FloatArray, channels = 1, inner = 1): void {
  if (useNative('minMax', x, min, max)) {
    binding.minMax({ x: x as Float32Array, min: min as Float32Array, max: max as Float32Array, channels, inner });
    return;
  }
  ref.minMaxRef(x, min, max, channels, inner);
}

// ------------------------------------------------------------------ elementwise (training step)
// These return false when the data is not all float32 (or the native kernel is
// missing): the caller then runs its own JavaScript loops (the float64 path).

export interface BatchNormForwardArgs {
  x: FloatArray;
  out: FloatArray;
  channels: number;
  training: boolean;
  eps: number;
  momentum: number;
  weight?: FloatArray;
  bias?: FloatArray;
  runningMean: FloatArray;
  runningVar: FloatArray;
  /** Outputs: the mean and invstd used. */
  mean: Float64Array;
  invstd: Float64Array;
  /** Fused PReLU on the output (exactly `channels` slopes): out = PReLU(BN(x)). */
  slope?: FloatArray;
}

/** Native BatchNorm forward (NHWC rows x channels); false if not applicable. */
export function batchNormForward(o: BatchNormForwardArgs): boolean {
  if (!useNative('batchNormForward', o.x, o.out, o.weight, o.bias, o.runningMean, o.runningVar, o.slope)) return false;
  binding.batchNormForward({
    x: o.x as Float32Array,
    out: o.out as Float32Array,
    channels: o.channels,
    training: o.training,
    eps: o.eps,
    momentum: o.momentum,
    ...(o.weight ? { weight: o.weight as Float32Array } : {}),
    ...(o.bias ? { bias: o.bias as Float32Array } : {}),
    runningMean: o.runningMean as Float32Array,
    runningVar: o.runningVar as Float32Array,
    mean: o.mean,
    invstd: o.invstd,
    ...(o.slope ? { slope: o.slope as Float32Array } : {}),
  });
  return true;
}

export interface BatchNormBackwardArgs {
  x: FloatArray;
  gradOut: FloatArray;
  gradIn: FloatArray;
  channels: number;
  mean: Float64Array;
  invstd: Float64Array;
  weight?: FloatArray;
  training: boolean;
  gradWeight?: FloatArray;
  gradBias?: FloatArray;
  accumulate: boolean;
  /**
   * Fused PReLU (exactly `channels` slopes): gradOut is the gradient at PReLU(BN(x)); BN(x) is recomputed from x
   * with `bias` (as the forward's affine). mask: a following fake quantizer's straight-through select.
   * gradSlope: the slope gradient (overwritten).
   */
  slope?: FloatArray;
  bias?: FloatArray;
  mask?: Uint8Array;
  gradSlope?: Float64Array;
}

/** Native BatchNorm backward; false if not applicable. */
export function batchNormBackward(o: BatchNormBackwardArgs): boolean {
  if (!useNative('batchNormBackward', o.x, o.gradOut, o.gradIn, o.weight, o.gradWeight, o.gradBias)) return false;
  binding.batchNormBackward({
    x: o.x as Float32Array,
    gradOut: o.gradOut as Float32Array,
    gradIn: o.gradIn as Float32Array,
    channels: o.channels,
    mean: o.mean,
    invstd: o.invstd,
    training: o.training,
    accumulate: o.accumulate,
    ...(o.weight ? { weight: o.weight as Float32Array } : {}),
    ...(o.gradWeight ? { gradWeight: o.gradWeight as Float32Array } : {}),
    ...(o.gradBias ? { gradBias: o.gradBias as Float32Array } : {}),
    ...(o.slope ? { slope: o.slope as Float32Array } : {}),
    ...(o.bias ? { bias: o.bias as Float32Array } : {}),
    ...(o.mask ? { mask: o.mask } : {}),
    ...(o.gradSlope ? { gradSlope: o.gradSlope } : {}),
  });
  return true;
}

/** Native PReLU forward (slope per channel, or one shared); false if not applicable. */
export function prelu(x: FloatArray, slope: FloatArray, out: FloatArray): boolean {
  if (!useNative('prelu', x, slope, out)) return false;
  binding.prelu({ x: x as Float32Array, out: out as Float32Array, slope: slope as Float32Array });
  return true;
}

/**
 * Native PReLU backward: gradIn, and the per-channel slope gradient into gradSlope (overwritten).
 * mask: a following fake quantizer's straight-through select (gradOut where mask[i] != 0, else 0), fused.
 */
export function preluBackward(
  x: FloatArray,
  gradOut: FloatArray,
  slope: FloatArray,
  gradIn: FloatArray,
  gradSlope: Float64Array,
  mask?: Uint8Array,
): boolean {
  if (!useNative('preluBackward', x, gradOut, slope, gradIn)) return false;
  binding.preluBackward({
    x: x as Float32Array,
    gradOut: gradOut as Float32Array,
    gradIn: gradIn as Float32Array,
    slope: slope as Float32Array,
    gradSlope,
    ...(mask ? { mask } : {}),
  });
  return true;
}

/** Native elementwise sum out = a + b (float32); false if not applicable. */
export function add(a: FloatArray, b: FloatArray, out: FloatArray): boolean {
  if (!useNative('rtAdd', a, b, out)) return false;
  binding.rtAdd({ a: a as Float32Array, b: b as Float32Array, out: out as Float32Array, count: out.length });
  return true;
}
