/**
 * Types of the native addon's exports (native/*.cc), one-to-one.
 *
 * Conventions
 * - Every kernel takes one options object. Matrices are row-major; images
 *   and activations are NHWC; convolution weights are OHWI
 *   ([cout, kh, kw, cin/groups]).
 * - Outputs are caller-provided typed arrays (no allocation per call); they
 *   are fully overwritten unless a `beta`/`accumulate` option says otherwise.
 * - `variant` forces one ISA variant of a kernel (full name such as
 *   "sgemm_avx2" or its suffix "avx2"); by default the best variant this CPU
 *   supports is used (see `info().kernels`). Asking for a variant the CPU
 *   lacks throws a RangeError.
 * - Long kernels have an `...Async` form that runs on a worker thread and
 *   returns a Promise; do not modify or transfer its buffers until it settles.
 * - Bad arguments throw TypeError (wrong type) or RangeError (bad value,
 *   size or length) whose message names the function and the argument.
 * - Rounding to integers is round-half-to-even everywhere.
 */

export type IsaName = 'scalar' | 'avx2' | 'avxvnni' | 'avx512' | 'avx512vnni' | 'neon' | 'neondot';

export interface KernelVariantInfo {
  name: string;
  supported: boolean;
}

export interface CudaDeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  totalMemory: number;
}

export interface CudaInfo {
  /** The addon was built with the CUDA backend. */
  compiled: boolean;
  /**
   * A usable GPU (device 0, compute capability 8.0 or newer), driver and
   * cuBLASLt were found at run time. QUANTFACE_CUDA_DISABLE=1 turns it off.
   */
  available: boolean;
  /** Why CUDA is not available (when it is not). */
  reason?: string;
  /** The CUDA devices found (present when compiled). */
  devices?: CudaDeviceInfo[];
  /** cublasLtGetVersion() of the cuBLASLt that was loaded (when available). */
  cublasLtVersion?: number;
  /** File of the cuBLASLt that was loaded (when available). */
  cublasLtPath?: string;
  /** CUDA runtime version of the build (statically linked), e.g. 13000. */
  runtimeVersion?: number;
  /** CUDA version the driver supports, e.g. 13000; 0 without a driver. */
  driverVersion?: number;
  /** CUDA architectures the kernels were built for, e.g. "80-real,90". */
  architectures?: string;
}

export interface BindingInfo {
  version: string;
  napiVersion: number;
  /** SHA-256 over the native sources it was built from (scripts/source-hash.mjs computes the same). */
  sourceHash: string;
  /** Current size of the native thread pool. */
  threads: number;
  /** Default pool size: physical cores, or QUANTFACE_THREADS. */
  defaultThreads: number;
  cpu: {
    avx2: boolean; fma: boolean; f16c: boolean;
    avx512f: boolean; avx512bw: boolean; avx512dq: boolean; avx512vl: boolean;
    avx512vnni: boolean; avx512bf16: boolean; avxvnni: boolean;
    /** aarch64: Advanced SIMD, SDOT/UDOT (FEAT_DotProd), USDOT (FEAT_I8MM); false on x86-64. */
    neon: boolean; neonDotprod: boolean; neonI8mm: boolean;
  };
  /** Highest ISA level allowed by QUANTFACE_ISA (default: no cap). */
  isaCap: IsaName;
  /** ISA levels usable here (CPU support and cap). */
  isa: IsaName[];
  /** Kernel name -> the variant chosen on this machine, e.g. { sgemm: 'sgemm_avx512' }. */
  kernels: Record<string, string>;
  /** Kernel name -> every compiled variant, best first, reference last. */
  variants: Record<string, KernelVariantInfo[]>;
  cuda: CudaInfo;
}

// ----------------------------------------------------------------- sgemm
export interface SgemmOptions {
  transA?: boolean;
  transB?: boolean;
  m: number;
  n: number;
  k: number;
  /** Default 1. alpha = 0: A and B are not read (C = beta * C). */
  alpha?: number;
  /** op(A) is m x k: A is m x k (lda >= k) or, transposed, k x m (lda >= m). */
  a: Float32Array;
  lda?: number;
  /** op(B) is k x n: B is k x n (ldb >= n) or, transposed, n x k (ldb >= k). */
  b: Float32Array;
  ldb?: number;
  /** Default 0: C is then not read (NaN/garbage in C is ignored). */
  beta?: number;
  /**
   * m x n, ldc >= n. C = alpha * op(A) * op(B) + beta * C. Must not overlap a or b
   * (RangeError). Results are the same whatever the thread count.
   */
  c: Float32Array;
  ldc?: number;
  variant?: string;
}

// ----------------------------------------------------------------- int8 GEMM
/** Int8 weights (n rows of k) pre-packed once into the GEMM's panel layout. */
export interface PackedWeights {
  readonly n: number;
  readonly k: number;
  /** Bytes held by the packed panels. */
  readonly bytes: number;
}

export interface PackWeightsOptions {
  /** n x k row-major int8 weights (row = output channel), ldw >= k. */
  w: Int8Array;
  n: number;
  k: number;
  ldw?: number;
}

export type Int8OutType = 's32' | 'f32' | 'u8' | 's8';
export type EpilogueActivation = 'none' | 'relu' | 'prelu';

/**
 * Epilogue shared by the int8 GEMM and the int8 convolutions.
 * acc[i,j] = sum_k (a[i,k] - aZeroPoint) * (w[j,k] - wZeroPoint[j])   (exact, int32;
 *            computed modulo 2^32, which is exact whenever the sum fits int32,
 *            e.g. always when k * 255 * (128 + |wZeroPoint|) < 2^31)
 * outType 's32': out = acc.
 * otherwise    : y = float(acc) * scale[j] + bias[j]  (a multiply, then an add; no FMA)
 *                activation: relu -> y > 0 ? y : 0 (NaN -> 0); prelu -> y < 0 ? y * slope[j] : y
 *                'f32': out = y
 *                'u8'/'s8': out = clamp(rne(y / outScale) + outZeroPoint, clampMin, clampMax)
 *                           (float32 ops; NaN -> clampMin, +-Infinity clamp)
 * Every variant gives bit-identical results. scale/bias/activation/slope with
 * 's32', and outScale/outZeroPoint/clampMin/clampMax with 's32'/'f32', are
 * RangeErrors (they would be ignored). Per-channel arrays must have exactly n
 * elements.
 */
export interface Int8Epilogue {
  outType: Int8OutType;
  /** Per output channel multiplier (length n); default all 1. */
  scale?: Float32Array;
  /** Per output channel bias (length n); default 0. */
  bias?: Float32Array;
  activation?: EpilogueActivation;
  /** PReLU slopes (length n), required with activation 'prelu'. */
  slope?: Float32Array;
  /** Requantisation scale (> 0) for u8/s8 outputs. Default 1. */
  outScale?: number;
  /** Requantisation zero point for u8/s8 outputs, within the out type's range. Default 0. */
  outZeroPoint?: number;
  /** Clamp range for u8/s8 outputs, within the type's range, clampMin <= clampMax (default: the full range). */
  clampMin?: number;
  clampMax?: number;
}

export interface GemmU8S8S32Options extends Int8Epilogue {
  /** m x k row-major uint8 activations, lda >= k. */
  a: Uint8Array;
  m: number;
  lda?: number;
  /** Packed weights; the GEMM's k and n are w.k and w.n. */
  w: PackedWeights;
  /** Optional checks: when given, must equal w.n / w.k (RangeError otherwise). */
  n?: number;
  k?: number;
  /** Activation zero point, 0..255. Default 0. */
  aZeroPoint?: number;
  /** Per output channel weight zero points (length n). Default 0. */
  wZeroPoint?: Int32Array;
  /** m x n output (ldo >= n) of the type outType names. */
  out: Int32Array | Float32Array | Uint8Array | Int8Array;
  ldo?: number;
  variant?: string;
}

// ----------------------------------------------------------------- quantization
/**
 * Per-tensor or per-channel layout of a flat tensor: element i belongs to
 * channel floor(i / inner) % channels. Per tensor: channels = 1 (default).
 * Per output channel of OHWI weights: channels = cout, inner = kh*kw*cin.
 * Per channel of NHWC activations: channels = C, inner = 1.
 * The tensor's length must be a multiple of channels * inner (RangeError).
 *
 * Every variant computes bit-identical results: x / scale is an IEEE float32
 * division (no reciprocal), rne = round half to even, and
 * fake-quantized values are float(q - zeroPoint) * scale.
 * Large tensors are split over the native thread pool.
 */
export interface ChannelLayout {
  /** Default 1 (per tensor). */
  channels?: number;
  /** Default 1. */
  inner?: number;
}

export interface QuantParams extends ChannelLayout {
  /**
   * Scales, exactly `channels` of them (a per-channel array passed without
   * `channels` is a RangeError, not a silent per-tensor call), each > 0 and finite.
   */
  scale: Float32Array;
  /** Zero points, exactly `channels` of them, each within [quantMin, quantMax]. */
  zeroPoint: Int32Array;
  /** Integer range, quantMin < quantMax, e.g. 0..255 (u8), -128..127 (s8), 0..15 (4-bit). */
  quantMin: number;
  quantMax: number;
}

export interface QuantizeOptions extends QuantParams {
  x: Float32Array;
  /**
   * q = clamp(rne(x / scale) + zeroPoint, quantMin, quantMax), length >= x.length,
   * sharing no memory with x. Uint8Array needs [quantMin, quantMax] within
   * [0, 255], Int8Array within [-128, 127]. +-Infinity clamps; NaN gives
   * q = zeroPoint (NaN is treated as 0).
   */
  out: Uint8Array | Int8Array;
  variant?: string;
}

export interface DequantizeOptions extends ChannelLayout {
  q: Uint8Array | Int8Array;
  /** Exactly `channels` scales, each > 0 and finite. */
  scale: Float32Array;
  /** Exactly `channels` zero points, within q's type range (0..255 or -128..127). */
  zeroPoint: Int32Array;
  /** x = float(q - zeroPoint) * scale; length >= q.length, sharing no memory with q. */
  out: Float32Array;
  variant?: string;
}

/**
 * fakeQuantize accepts any integer range with |quantMin|, |quantMax| < 2^24
 * and quantMax - quantMin <= 65535 (e.g. 16-bit), so every step is exact in
 * float32 apart from the division and the final multiply.
 */
export interface FakeQuantizeOptions extends QuantParams {
  x: Float32Array;
  /**
   * out = (clamp(rne(x / scale) + zeroPoint, quantMin, quantMax) - zeroPoint) * scale;
   * length >= x.length; may be x itself (in place), otherwise shares no memory
   * with x. NaN x gives NaN (propagates); +-Infinity clamps. The sign of zero
   * follows rne (x = -0.3 * scale gives -0).
   */
  out: Float32Array;
  /**
   * Optional (length >= x.length): 1 where quantMin <= rne(x / scale) + zeroPoint
   * <= quantMax, else 0 (NaN gives 0). For the clipped STE.
   */
  mask?: Uint8Array;
  variant?: string;
}

export interface FakeQuantizeBackwardOptions {
  gradOut: Float32Array;
  /**
   * Straight-through: gradIn = gradOut (no mask), or the clipped STE
   * gradIn = mask[i] ? gradOut : +0 (a select: a NaN gradient where mask = 0
   * is dropped; any nonzero mask byte passes). Length >= gradOut.length; may be
   * gradOut itself.
   */
  gradIn: Float32Array;
  /** Length >= gradOut.length. */
  mask?: Uint8Array;
  /** gradIn += gradOut where the mask passes (gradIn is left as is elsewhere). Default false. */
  accumulate?: boolean;
  variant?: string;
}

/**
 * Learned quantization ranges (lib/distill/learned-range.ts, QDrop;
 * lib/quant/weight-range.ts, learned clipping ratios). Bit-identical to the
 * JavaScript loops they replace (lib/nn/reference.ts qdropFakeQuantizeRef,
 * learnedRangeBackwardRef), whatever the variant and thread count.
 * Semantics (xs = x / scale in float32, r = rne(xs), lo = quantMin - zp,
 * hi = quantMax - zp): below = r < lo, above = r > hi, inside = neither
 * (NaN x counts as inside).
 */
export interface QDropFakeQuantizeOptions {
  x: Float32Array;
  /**
   * Length >= x.length; may be x itself, otherwise shares no memory with x.
   * out = x where dropped, else fakeQuantize(x) (same formula and rounding).
   */
  out: Float32Array;
  /** Length >= x.length (written): 1 where dropped, else 0. Shares no memory with x or out. */
  drop: Uint8Array;
  /** Per tensor: exactly one scale (> 0, finite) and one zero point (within [quantMin, quantMax]). */
  scale: Float32Array;
  zeroPoint: Int32Array;
  /** As fakeQuantize: |quantMin|, |quantMax| < 2^24, quantMax - quantMin <= 65535. */
  quantMin: number;
  quantMax: number;
  /**
   * Element i is dropped where the xorshift32 stream's value for it is below
   * threshold (unsigned): an integer in [0, 2^32]; QDrop with probability p
   * uses Math.floor(p * 2^32).
   */
  threshold: number;
  /**
   * xorshift32 state before element 0, an integer in [0, 2^32). Element i
   * uses the state after i + 1 steps (st ^= st << 13; st ^= st >>> 17;
   * st ^= st << 5). A state of 0 stays 0.
   */
  seed: number;
  variant?: string;
}

export interface LearnedRangeBackwardOptions {
  /** The quantizer's input of the forward pass. */
  x: Float32Array;
  /** Length >= x.length. */
  gradOut: Float32Array;
  /**
   * Optional, length >= x.length (written): gradOut where dropped or inside,
   * +0 where clipped (the clipped straight-through estimator). May be gradOut
   * itself; shares no memory with x.
   */
  gradIn?: Float32Array;
  /** Optional QDrop mask of the forward (length >= x.length; nonzero = dropped: no sum term, gradIn = gradOut). */
  drop?: Uint8Array;
  /** Element i belongs to channel floor(i / inner); channels * inner must equal x.length. Default 1. */
  channels?: number;
  /** Default x.length / channels. */
  inner?: number;
  /** Exactly `channels` scales (> 0, finite) and zero points (within [quantMin, quantMax]). */
  scale: Float32Array;
  zeroPoint: Int32Array;
  quantMin: number;
  quantMax: number;
  /**
   * Optional, length >= 3 * channels (written): per channel c, sums[3c] = sum
   * of gradOut below the range, sums[3c + 1] = above it, sums[3c + 2] = sum of
   * double(gradOut) * (r - xs) inside it, over the elements not dropped.
   * Float64 sums in element order, as the JS loops add them (bit-identical).
   */
  sums?: Float64Array;
  variant?: string;
}

export interface MinMaxOptions extends ChannelLayout {
  x: Float32Array;
  /**
   * Per channel minimum and maximum (exactly `channels` each). NaN inputs are
   * ignored; a channel with no non-NaN value (all NaN, or x empty) gives
   * min = +Infinity, max = -Infinity (min > max means "no data"); a zero
   * result is +0 whatever the signs of the zeros in x.
   */
  min: Float32Array;
  max: Float32Array;
  variant?: string;
}

export interface PackBitsOptions {
  /** Values, each < 2^bits (otherwise RangeError naming the first bad index; nothing is written). */
  q: Uint8Array;
  /** 2..8 */
  bits: number;
  /**
   * At least ceil(q.length * bits / 8) bytes; exactly that many are written: a
   * little-endian bit stream (value i at bits i*bits .. i*bits + bits - 1;
   * unused high bits of the last byte are 0). No memory shared with q.
   */
  out: Uint8Array;
}

export interface UnpackBitsOptions {
  /** At least ceil(out.length * bits / 8) bytes; unused bits are ignored. */
  packed: Uint8Array;
  /** 2..8 */
  bits: number;
  /** out.length values are unpacked into out (no memory shared with packed). */
  out: Uint8Array;
}

// ----------------------------------------------------------------- convolution
/**
 * NHWC convolutions. Every size is an integer >= 1 (pads >= 0); the output
 * size (oh, ow below) must be >= 1; arrays must hold at least the elements
 * their shape needs; outputs must not overlap inputs (RangeError).
 *
 * `variant`: depthwise geometries (groups = c = cout) run a direct kernel,
 * conv2d_depthwise_f32 / conv2d_depthwise_backward_input_f32 /
 * conv2d_depthwise_backward_weight_f32 (avx512, avx2, ref); others run
 * im2col / col2im + sgemm ('gemm', the default) or direct reference loops
 * ('ref', tables conv2d_f32 / conv2d_backward_input_f32 /
 * conv2d_backward_weight_f32); 'gemm' also forces the GEMM path on a
 * depthwise geometry, and an sgemm variant name ('sgemm_avx2', ...) runs the
 * GEMM path with that sgemm. fp32 results match a float64 reference within
 * the usual fp32 summation bound; the weight gradient does not depend on the
 * thread count.
 */
export interface Conv2dGeometry {
  /** Batch, input height, width, channels (NHWC input). */
  n: number;
  h: number;
  w: number;
  c: number;
  /** Output channels and kernel size (OHWI weights: [cout, kh, kw, c / groups]). */
  cout: number;
  kh: number;
  kw: number;
  strideH?: number;
  strideW?: number;
  padTop?: number;
  padLeft?: number;
  padBottom?: number;
  padRight?: number;
  dilationH?: number;
  dilationW?: number;
  /** c and cout divisible by groups; groups = c = cout is depthwise. Default 1. */
  groups?: number;
}

export interface Conv2dOptions extends Conv2dGeometry {
  x: Float32Array;
  weight: Float32Array;
  bias?: Float32Array;
  /** [n, oh, ow, cout], oh = floor((h + padTop + padBottom - dilationH*(kh-1) - 1) / strideH) + 1 */
  out: Float32Array;
  variant?: string;
}

export interface Conv2dBackwardInputOptions extends Conv2dGeometry {
  gradOut: Float32Array;
  weight: Float32Array;
  /** [n, h, w, c] */
  gradIn: Float32Array;
  accumulate?: boolean;
  variant?: string;
}

export interface Conv2dBackwardWeightOptions extends Conv2dGeometry {
  x: Float32Array;
  gradOut: Float32Array;
  /** [cout, kh, kw, c / groups] */
  gradWeight: Float32Array;
  /** [cout]: sum of gradOut over n, oh, ow. */
  gradBias?: Float32Array;
  accumulate?: boolean;
  variant?: string;
}

/**
 * Int8 convolution, groups = 1 or depthwise (other groups: RangeError).
 * acc = sum over taps of (x - xZeroPoint) * (w - wZeroPoint[co]) (int32,
 * wrapping), then the Int8Epilogue per output channel; bit-identical across
 * variants. groups = 1 runs im2col + gemmU8S8S32 (`variant` names a
 * gemm_u8s8s32 variant; 1x1 stride-1 unpadded convolutions read x directly);
 * depthwise runs conv2d_u8s8_depthwise (avx512vnni, avx512, avx2, ref).
 */
export interface Conv2dU8S8Options extends Conv2dGeometry, Int8Epilogue {
  /** NHWC uint8 input; padding reads as xZeroPoint (a real zero). */
  x: Uint8Array;
  /** 0..255, default 0. */
  xZeroPoint?: number;
  /**
   * groups = 1: PackedWeights with n = cout and k = kh*kw*c (OHWI rows).
   * depthwise (groups = c = cout): Int8Array [c, kh, kw] raw weights.
   */
  weight: PackedWeights | Int8Array;
  /** Per output channel weight zero points (length cout). Default 0. */
  wZeroPoint?: Int32Array;
  /** [n, oh, ow, cout] of the type outType names. */
  out: Int32Array | Float32Array | Uint8Array | Int8Array;
  variant?: string;
}

// ----------------------------------------------------------------- CUDA
/*
 * The optional CUDA backend (built with QUANTFACE_CUDA=AUTO|ON; cuBLASLt is
 * loaded at run time: set QUANTFACE_CUBLASLT to the library or its folder if
 * it is not on the loader's path). It works on device 0 and the default
 * stream: kernels run asynchronously; upload/download and cudaSynchronize
 * wait for them. Errors carry a `code`:
 *   E_CUDA_UNAVAILABLE  no CUDA build, GPU, driver or cuBLASLt (info().cuda.reason says which);
 *                       every CUDA export throws it then, before looking at its arguments
 *   E_CUDA_FREED        a DeviceBuffer used after free()
 *   E_CUDA_OOM          device memory exhausted
 *   E_CUDA              any other CUDA / cuBLASLt failure (the message names it)
 * Bad arguments throw TypeError / RangeError naming them, like the CPU kernels.
 */

/** Memory on the GPU. Freed by free() or when garbage collected. */
export interface DeviceBuffer {
  readonly bytes: number;
  readonly freed: boolean;
  /** Copies a typed array / Buffer / DataView to the device at byteOffset (default 0). */
  upload(src: ArrayBufferView, byteOffset?: number): void;
  /** Copies from the device at byteOffset into dst (waits for the work queued before it). */
  download(dst: ArrayBufferView, byteOffset?: number): void;
  /** Frees the device memory now; a second call does nothing. */
  free(): void;
}

export interface CudaGemmS8S8S32Options {
  /** m x k row-major int8 on the device. */
  a: DeviceBuffer;
  /** n x k row-major int8 on the device (row = output channel). */
  b: DeviceBuffer;
  m: number;
  n: number;
  k: number;
  /**
   * 's32': out[i,j] = acc = sum_p a[i,p] * b[j,p] (exact int32; k <= 131071 cannot overflow)
   * 'f32': out[i,j] = float(acc) * scale[j] + bias[j]  (a multiply, then an add, as the CPU
   *        epilogue; a missing scale skips the multiply, a missing bias adds 0)
   */
  outType: 's32' | 'f32';
  /** m x n on the device (int32 or float32); a different buffer from a, b, scale and bias. */
  out: DeviceBuffer;
  /** Per output channel scale / bias on the device (float32, length n), 'f32' only. */
  scale?: DeviceBuffer;
  bias?: DeviceBuffer;
  /**
   * 'auto' (default): cuBLASLt's int8 tensor-core GEMM where it applies (n and k
   * multiples of 4), else a tiled CUDA kernel. 'cublaslt' / 'kernel' force one
   * ('cublaslt' on another shape is a RangeError). Both give the same exact result.
   */
  impl?: 'auto' | 'cublaslt' | 'kernel';
}

export interface CudaQuantizeOptions {
  /** count float32 on the device. */
  x: DeviceBuffer;
  /** count bytes on the device (another buffer than x). */
  out: DeviceBuffer;
  count: number;
  /** > 0; used as a float32. q = clamp(rne(x / scale) + zeroPoint, quantMin, quantMax); NaN -> zeroPoint (as quantize). */
  scale: number;
  /** Within [quantMin, quantMax]. */
  zeroPoint: number;
  quantMin: number;
  quantMax: number;
  /** Storage type: 's8' (range within [-128, 127]) or 'u8' ([0, 255]). Default: 's8' if quantMin < 0, else 'u8'. */
  dtype?: 's8' | 'u8';
}

export interface CudaDequantizeOptions {
  /** count bytes on the device. */
  q: DeviceBuffer;
  /** count float32 on the device (another buffer than q). */
  out: DeviceBuffer;
  count: number;
  /** How the bytes of q are read. */
  dtype: 's8' | 'u8';
  /** > 0; used as a float32. x = float(q - zeroPoint) * scale */
  scale: number;
  /** Within the dtype's range. */
  zeroPoint: number;
}

/** Internal (bench/gpu-gemm.ts): the card's bf16 matmul rate through cuBLASLt. */
export interface CudaBenchBf16GemmOptions {
  /** D (m x n) = A (m x k) * B^T (B: n x k), bf16 inputs filled with random values in [-1, 1), CUBLAS_COMPUTE_32F. */
  m: number;
  n: number;
  k: number;
  /** Output type; default 'bf16'. */
  outType?: 'bf16' | 'f32';
  /** Untimed products first (default 2). */
  warmup?: number;
  /** Timed repetitions (default 10), each of `inner` products (default 10) and a device synchronize. */
  reps?: number;
  inner?: number;
}

export interface CudaBenchBf16GemmResult {
  /** Seconds per repetition (host clock around `inner` products and cudaDeviceSynchronize). */
  times: number[];
  /** 2 * m * n * k * inner. */
  flopsPerRep: number;
  outType: 'bf16' | 'f32';
}

// ----------------------------------------------------------------- runtime (native/rt*.cc)
/*
 * Elementwise kernels of the integer-inference runtime (lib/runtime) and its
 * program executor. Operands are either u8 (a real value is
 * float(q - zeroPoint) * scale, float32 ops) or f32. u8 outputs are
 * q = clamp(rne(y / outScale) + outZeroPoint, clampMin, clampMax) (float32
 * ops; NaN -> clampMin). Every variant gives bit-identical results, and the
 * float operations are those (and in the order) of the engine's JavaScript
 * layers, so results match the fake-quantized forward bit for bit.
 * Scale / zero-point options of an f32 operand, and outScale / outZeroPoint /
 * clampMin / clampMax of an f32 output, are RangeErrors (they would be ignored).
 * An output may be the very same memory as an input of the same element type
 * (in place); any other overlap is a RangeError.
 */
export interface RtOutputQuant {
  /** u8 outputs: > 0 and finite as a float32. Default 1. */
  outScale?: number;
  /** 0..255, default 0. */
  outZeroPoint?: number;
  /** 0..255, clampMin <= clampMax; default 0 and 255. */
  clampMin?: number;
  clampMax?: number;
}

export interface RtAddOptions extends RtOutputQuant {
  /** out[i] = a[i] + b[i] (each dequantized when u8), i < count. */
  a: Uint8Array | Float32Array;
  /** u8 a: > 0 and finite (default 1) / 0..255 (default 0). */
  aScale?: number;
  aZeroPoint?: number;
  b: Uint8Array | Float32Array;
  bScale?: number;
  bZeroPoint?: number;
  out: Uint8Array | Float32Array;
  /** Default out.length; a, b and out must hold at least count elements. */
  count?: number;
  variant?: string;
}

export type RtAffineActivation = 'none' | 'relu' | 'prelu' | 'clamp';

export interface RtAffineParams {
  /** Per channel (the last dimension); count must be a multiple of it. Default 1. */
  channels?: number;
  /** Exactly `channels` values; absent: 1. */
  scale?: Float32Array;
  /** Exactly `channels` values; absent: 0. */
  bias?: Float32Array;
  /**
   * y = float((double)v * scale[c] + bias[c]), then
   * relu: y > 0 ? y : 0 (NaN -> 0); prelu: y > 0 ? y : y * slope[c] (float32);
   * clamp: y < lo ? lo : (y > hi ? hi : y) (NaN stays NaN). Default 'none'.
   */
  activation?: RtAffineActivation;
  /** Exactly `channels` slopes, required with 'prelu' only. */
  slope?: Float32Array;
  /** Bounds for 'clamp' (lo <= hi), as float32. */
  lo?: number;
  hi?: number;
}

export interface RtAffineOptions extends RtAffineParams, RtOutputQuant {
  x: Uint8Array | Float32Array;
  xScale?: number;
  xZeroPoint?: number;
  out: Uint8Array | Float32Array;
  /** Default x.length. */
  count?: number;
  variant?: string;
}

export interface RtLutOptions {
  /** count u8 values, channels last. */
  x: Uint8Array;
  /** Default 1. */
  channels?: number;
  /** channels * 256 entries, u8 or f32: out[r, c] = table[c * 256 + x[r, c]]. */
  table: Uint8Array | Float32Array;
  /** Same type as table. */
  out: Uint8Array | Float32Array;
  /** Default x.length. */
  count?: number;
  variant?: string;
}

/**
 * The network's first convolution straight from the raw u8 crop: the input
 * value is table[ci * 256 + u] (the exact preprocessed float), an fp32
 * direct convolution (groups = 1, c <= 64; taps outside the input read 0)
 * accumulated with fused multiply-adds over taps (ky, kx) then input
 * channels, then y = acc + convBias[j], the RtAffineParams epilogue
 * (scale / bias / activation; channels = cout) and the output (u8 quantized
 * or f32), NHWC [n, oh, ow, cout]. Every variant computes the same
 * operations (bit-identical).
 */
export interface RtConvInputParams extends Conv2dGeometry, Omit<RtAffineParams, 'channels'> {
  /** c * 256 floats. */
  table: Float32Array;
  /** OHWI [cout, kh, kw, c] float32. */
  weight: Float32Array;
  /** Optional, cout floats: added to the sum before the epilogue. */
  convBias?: Float32Array;
}

export interface RtConvInputOptions extends RtConvInputParams, RtOutputQuant {
  x: Uint8Array;
  out: Uint8Array | Float32Array;
  variant?: string;
}

/**
 * One operation of a runtime program. Tensors are byte offsets into the
 * arena passed to rtRun (f32 tensors at multiples of 4); every tensor must
 * lie inside arenaBytes. Arrays (weights, per-channel parameters, tables)
 * are copied into the program at rtProgram() time (PackedWeights are
 * referenced), so they may be changed or dropped afterwards.
 */
export type RtOp =
  | ({
      op: 'conv_u8';
      name?: string;
      /** NHWC u8 input; padding reads xZeroPoint. */
      x: number;
      xZeroPoint?: number;
      /** groups = 1: PackedWeights (n = cout, k = kh*kw*c); depthwise (groups = c = cout): Int8Array [c, kh, kw]. */
      weight: PackedWeights | Int8Array;
      wZeroPoint?: Int32Array;
      /** The Int8Epilogue of conv2dU8S8 with outType 'u8' or 'f32' only. */
      outType: 'u8' | 'f32';
      scale?: Float32Array;
      bias?: Float32Array;
      activation?: EpilogueActivation;
      slope?: Float32Array;
      out: number;
      variant?: string;
    } & Conv2dGeometry & RtOutputQuant)
  | ({
      op: 'conv_f32';
      name?: string;
      x: number;
      /** OHWI float32 weights. */
      weight: Float32Array;
      bias?: Float32Array;
      out: number;
    } & Conv2dGeometry)
  | ({
      op: 'add';
      name?: string;
      count: number;
      a: number;
      aType: 'u8' | 'f32';
      aScale?: number;
      aZeroPoint?: number;
      b: number;
      bType: 'u8' | 'f32';
      bScale?: number;
      bZeroPoint?: number;
      out: number;
      outType: 'u8' | 'f32';
      variant?: string;
    } & RtOutputQuant)
  | ({
      op: 'affine';
      name?: string;
      count: number;
      x: number;
      xType: 'u8' | 'f32';
      xScale?: number;
      xZeroPoint?: number;
      out: number;
      outType: 'u8' | 'f32';
      variant?: string;
    } & RtAffineParams & RtOutputQuant)
  | ({
      op: 'conv_input';
      name?: string;
      x: number;
      out: number;
      outType: 'u8' | 'f32';
      variant?: string;
    } & RtConvInputParams & RtOutputQuant)
  | {
      op: 'lut';
      name?: string;
      count: number;
      channels?: number;
      x: number;
      table: Uint8Array | Float32Array;
      /** Of the table's type. */
      out: number;
      variant?: string;
    };

/** A validated list of operations (rtProgram). */
export interface RtProgram {
  /** Bytes the arena passed to rtRun must hold at least. */
  readonly arenaBytes: number;
  /** Number of operations. */
  readonly length: number;
}

export interface RtProgramOptions {
  arenaBytes: number;
  ops: RtOp[];
}

export interface RtRunOptions {
  program: RtProgram;
  /** At least program.arenaBytes bytes, 8-byte aligned (a fresh ArrayBuffer's memory is). */
  arena: Uint8Array;
  /** Optional, >= program.length entries: seconds spent in each operation. */
  profile?: Float64Array;
  /**
   * Run every operation on one thread (the kernels do not split their work
   * over the pool). Faster for small problems, where waking the pool per
   * kernel costs more than it saves. Default false.
   */
  singleThread?: boolean;
}

// ----------------------------------------------------------------- training elementwise (native/train_ew*.cc)
// Activations are rows x channels (NHWC flattened; channels = the last
// dimension). Kernels (binding.info().variants): bn_stats, bn_grad_sums,
// channel_affine, bn_backward_dx, prelu_backward, bn_prelu_sums; each has _ref, _avx2 and
// _avx512 variants, bit-identical, and `variant` ('ref', 'avx2', 'avx512' or
// a full name) forces one for every kernel of the call. Per-channel sums are
// float64, taken over a fixed partition of the rows (it depends on the row
// count only) and added in partition order: results do not depend on the
// thread count. Outputs may be the input array itself (in place) but must not
// otherwise overlap an input.

export interface BatchNormForwardOptions {
  /** rows x channels values. */
  x: Float32Array;
  /** >= x.length; may be x. */
  out: Float32Array;
  /** >= 1; x.length must be a multiple of it. */
  channels: number;
  /**
   * true (default): normalise with the batch statistics (mean and biased
   * variance over the rows, needs >= 2 rows) and update runningMean /
   * runningVar (when given): r = (1 - momentum) r + momentum batch, with the
   * unbiased variance. false: normalise with runningMean / runningVar (required).
   */
  training?: boolean;
  /** >= 0, default 1e-5: invstd = 1 / sqrt(var + eps). */
  eps?: number;
  /** In [0, 1], default 0.1. */
  momentum?: number;
  /** Exactly `channels` each; absent: 1 and 0. */
  weight?: Float32Array;
  bias?: Float32Array;
  runningMean?: Float32Array;
  runningVar?: Float32Array;
  /** Outputs (exactly `channels` each): the mean and 1/sqrt(var + eps) used, for batchNormBackward. */
  mean?: Float64Array;
  invstd?: Float64Array;
  /**
   * Fused PReLU on the output (1 shared value or exactly `channels`):
   * y = y > 0 ? y : y * slope[c].
   */
  slope?: Float32Array;
  variant?: string;
}

export interface BatchNormBackwardOptions {
  /** The forward's input, >= gradOut.length. */
  x: Float32Array;
  /** rows x channels. */
  gradOut: Float32Array;
  /** >= gradOut.length; may be gradOut or x. */
  gradIn: Float32Array;
  channels: number;
  /** The forward's mean and invstd (exactly `channels` each). */
  mean: Float64Array;
  invstd: Float64Array;
  /** The affine weight (absent: 1). */
  weight?: Float32Array;
  /**
   * true (default): the gradient through the batch statistics,
   * gradIn = w invstd (g - sum(g)/M - xhat sum(g xhat)/M);
   * false (eval mode): gradIn = w invstd g.
   */
  training?: boolean;
  /** Outputs (exactly `channels`): sum(g xhat) and sum(g) per channel, xhat = (x - mean) invstd. */
  gradWeight?: Float32Array;
  gradBias?: Float32Array;
  /** Add into gradWeight / gradBias instead of overwriting them. Default false. */
  accumulate?: boolean;
  /**
   * Fused PReLU after the BatchNorm (exactly `channels`): gradOut is then the
   * gradient at PReLU(BN(x)) (batchNormForward with `slope`); BN(x) is
   * recomputed from x, mean, invstd, weight and `bias` as the forward did.
   * gradIn must not overlap x then.
   */
  slope?: Float32Array;
  /** The affine bias of the forward (absent: 0); with slope only. */
  bias?: Float32Array;
  /** gradOut.length bytes: a following fake quantizer's straight-through select (gradOut where nonzero, else 0); with slope only. */
  mask?: Uint8Array;
  /** Output (exactly `channels`): sum(g' min(BN(x), 0)) per channel, the slope gradient; with slope only. */
  gradSlope?: Float64Array;
  variant?: string;
}

export interface PreluOptions {
  /** rows x slope.length values. */
  x: Float32Array;
  /** >= x.length; may be x. y = x > 0 ? x : x * slope[c]. */
  out: Float32Array;
  /** One value per channel (channels = slope.length; 1 = shared). */
  slope: Float32Array;
  variant?: string;
}

export interface PreluBackwardOptions {
  /** The forward's input, >= gradOut.length. */
  x: Float32Array;
  gradOut: Float32Array;
  /** >= gradOut.length; may be gradOut or x. gradIn = x > 0 ? g : g * slope[c]. */
  gradIn: Float32Array;
  slope: Float32Array;
  /** Output (>= slope.length, overwritten): sum over rows of g * min(x, 0) per channel. */
  gradSlope?: Float64Array;
  /**
   * >= gradOut.length: the straight-through select of a following fake
   * quantizer, fused: g is replaced by mask[i] ? g : +0 (as fakeQuantizeBackward)
   * before the PReLU gradient. Must not overlap gradIn.
   */
  mask?: Uint8Array;
  variant?: string;
}

// ----------------------------------------------------------------- the addon
/**
 * The face pipeline's per-face crops (native/warp.cc; synchronous, scalar,
 * bit-identical to the JavaScript lib/data/align.ts warpAffine + roundCrop
 * and lib/runtime/pipeline.ts cropGrey): one call crops every face of a
 * photo. src: width x height x 3 RGB bytes (HWC).
 */
export interface WarpAffineU8Options {
  src: Uint8Array;
  width: number;
  height: number;
  /**
   * n x 6 numbers, one inverse affine per crop [a, b, c, d, e, f]: output
   * pixel (u, v) samples the source at (a u + b v + c, d u + e v + f)
   * (pixel-index coordinates), bilinearly; samples outside the image are 0.
   */
  matrices: Float64Array;
  /** Crop side. */
  size: number;
  /** n x size x size x 3 bytes, rounded half to even. */
  out: Uint8Array;
}

export interface CropGreyU8Options {
  src: Uint8Array;
  width: number;
  height: number;
  /**
   * n x 4 numbers x, y, width, height: the rectangle of each crop (sides
   * in (0, 2 x the image's longer side]); resized to size x size grey
   * (0.299 R + 0.587 G + 0.114 B), bilinear at pixel centres with clamped
   * edges, averaged over k x k samples when shrinking by k > 2.
   */
  rects: Float64Array;
  size: number;
  /** n x size x size bytes. */
  out: Uint8Array;
}

export interface Binding {
  info(): BindingInfo;
  /** Resizes the native pool (0 = default); returns the new size. */
  setThreads(n: number): number;
  getThreads(): number;

  /** Register-only FMA/VNNI loop: this machine's peak, for benchmarks. */
  measurePeak(o: MeasurePeakOptions): PeakResult;
  measurePeakAsync(o: MeasurePeakOptions): Promise<PeakResult>;

  sgemm(o: SgemmOptions): void;
  sgemmAsync(o: SgemmOptions): Promise<void>;

  packWeights(o: PackWeightsOptions): PackedWeights;
  gemmU8S8S32(o: GemmU8S8S32Options): void;
  gemmU8S8S32Async(o: GemmU8S8S32Options): Promise<void>;

  quantize(o: QuantizeOptions): void;
  quantizeAsync(o: QuantizeOptions): Promise<void>;
  dequantize(o: DequantizeOptions): void;
  dequantizeAsync(o: DequantizeOptions): Promise<void>;
  fakeQuantize(o: FakeQuantizeOptions): void;
  fakeQuantizeAsync(o: FakeQuantizeOptions): Promise<void>;
  fakeQuantizeBackward(o: FakeQuantizeBackwardOptions): void;
  fakeQuantizeBackwardAsync(o: FakeQuantizeBackwardOptions): Promise<void>;
  /** QDrop + per-tensor fake quantization; returns the xorshift32 state after the last element. */
  qdropFakeQuantize(o: QDropFakeQuantizeOptions): number;
  qdropFakeQuantizeAsync(o: QDropFakeQuantizeOptions): Promise<number>;
  /** Gradients of a learned range: gradIn and the per-channel range-gradient sums. */
  learnedRangeBackward(o: LearnedRangeBackwardOptions): void;
  learnedRangeBackwardAsync(o: LearnedRangeBackwardOptions): Promise<void>;
  minMax(o: MinMaxOptions): void;
  minMaxAsync(o: MinMaxOptions): Promise<void>;
  packBits(o: PackBitsOptions): void;
  unpackBits(o: UnpackBitsOptions): void;

  batchNormForward(o: BatchNormForwardOptions): void;
  batchNormForwardAsync(o: BatchNormForwardOptions): Promise<void>;
  batchNormBackward(o: BatchNormBackwardOptions): void;
  batchNormBackwardAsync(o: BatchNormBackwardOptions): Promise<void>;
  prelu(o: PreluOptions): void;
  preluAsync(o: PreluOptions): Promise<void>;
  preluBackward(o: PreluBackwardOptions): void;
  preluBackwardAsync(o: PreluBackwardOptions): Promise<void>;

  conv2d(o: Conv2dOptions): void;
  conv2dAsync(o: Conv2dOptions): Promise<void>;
  conv2dBackwardInput(o: Conv2dBackwardInputOptions): void;
  conv2dBackwardInputAsync(o: Conv2dBackwardInputOptions): Promise<void>;
  conv2dBackwardWeight(o: Conv2dBackwardWeightOptions): void;
  conv2dBackwardWeightAsync(o: Conv2dBackwardWeightOptions): Promise<void>;
  conv2dU8S8(o: Conv2dU8S8Options): void;
  conv2dU8S8Async(o: Conv2dU8S8Options): Promise<void>;

  /** Each throws Error with code 'E_CUDA_UNAVAILABLE' when CUDA is not usable (see the CUDA section). */
  cudaAlloc(bytes: number): DeviceBuffer;
  /** Waits for all queued device work; reports asynchronous kernel failures (E_CUDA). */
  cudaSynchronize(): void;
  /** Queues the GEMM; returns which implementation ran. */
  cudaGemmS8S8S32(o: CudaGemmS8S8S32Options): 'cublaslt' | 'kernel';
  cudaQuantize(o: CudaQuantizeOptions): void;
  cudaDequantize(o: CudaDequantizeOptions): void;
  /** Internal, for bench/gpu-gemm.ts. */
  cudaBenchBf16Gemm(o: CudaBenchBf16GemmOptions): CudaBenchBf16GemmResult;

  rtAdd(o: RtAddOptions): void;
  rtAddAsync(o: RtAddOptions): Promise<void>;
  rtAffine(o: RtAffineOptions): void;
  rtAffineAsync(o: RtAffineOptions): Promise<void>;
  rtLut(o: RtLutOptions): void;
  rtLutAsync(o: RtLutOptions): Promise<void>;
  rtConvInput(o: RtConvInputOptions): void;
  rtConvInputAsync(o: RtConvInputOptions): Promise<void>;
  /** Validates the operations once; throws TypeError / RangeError naming ops[i] and the field. */
  rtProgram(o: RtProgramOptions): RtProgram;
  /** Runs every operation in order (the async form on one worker thread; kernels use the native pool). */
  rtRun(o: RtRunOptions): void;
  rtRunAsync(o: RtRunOptions): Promise<void>;

  /** Affine warps of one RGB image into n size x size RGB crops (native/warp.cc). */
  warpAffineU8(o: WarpAffineU8Options): void;
  /** Grey size x size crops of n rectangles of one RGB image (native/warp.cc). */
  cropGreyU8(o: CropGreyU8Options): void;
}
