// The optional CUDA backend (binding.d.ts, section CUDA).
//
// Always: info().cuda has the documented shape; without a usable GPU every
// CUDA export throws an Error with code E_CUDA_UNAVAILABLE (in this process
// and in a child with QUANTFACE_CUDA_DISABLE=1, so a GPU machine checks that
// path too); the test's JS references agree with the CPU kernels.
// On a GPU machine (info().cuda.available): the int8 GEMM (cuBLASLt and the
// tiled kernel) is bit-exact against a JS reference and the CPU
// gemmU8S8S32 on random odd shapes, the f32 epilogue and quantize /
// dequantize are bit-exact against JS and the CPU kernels, device buffers
// round-trip, and bad arguments and freed buffers give clear errors.
//
// Uses only t.test / t.ok / t.equal / t.comment / t.pass so that
// scripts/gpu-check.sh can run the bundled file with a minimal tap stand-in
// on a machine without node_modules.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { binding, bindingPath } from '../lib/binding.js';
import type { DeviceBuffer } from '../binding.js';

const seed = Number(process.env.QF_TEST_SEED ?? (Date.now() % 2147483647)) >>> 0 || 1;
t.comment(`seed ${seed} (QF_TEST_SEED=${seed} repeats it)`);
let state = seed;
// mulberry32
function rand(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 15), z | 1);
  z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
  return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
}
const randInt = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
function randI8(n: number, extremes = 0.05): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) {
    const r = rand();
    a[i] = r < extremes / 2 ? -128 : r < extremes ? 127 : randInt(-128, 127);
  }
  return a;
}
function randF32(n: number, lo: number, hi: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + rand() * (hi - lo);
  return a;
}

// ------------------------------------------------------------- references
/** C (m x n) = A (m x k) * B^T, B n x k; all row-major, exact. */
function gemmRef(a: Int8Array, b: Int8Array, m: number, n: number, k: number): Int32Array {
  const c = new Int32Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[j * k + p];
      c[i * n + j] = s; // |s| <= k * 2^14 < 2^31 for the k used here
    }
  return c;
}
/** The f32 epilogue: y = float(acc) * scale[j], then + bias[j] (0 when absent), one rounding each. */
function epilogueRef(acc: Int32Array, n: number, scale?: Float32Array, bias?: Float32Array): Float32Array {
  const y = new Float32Array(acc.length);
  for (let i = 0; i < acc.length; i++) {
    const j = i % n;
    let v = Math.fround(acc[i]);
    if (scale) v = Math.fround(v * scale[j]);
    y[i] = Math.fround(v + (bias ? bias[j] : 0));
  }
  return y;
}
/** Round half to even (Math.round rounds half up). */
function rne(v: number): number {
  if (!Number.isFinite(v)) return v;
  const f = Math.floor(v);
  const d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}
/** q = clamp(rne(x / scale) + zp, qmin, qmax), float32 division; NaN -> zp. */
function quantizeRef(x: Float32Array, scale: number, zp: number, qmin: number, qmax: number): Int32Array {
  const s = Math.fround(scale);
  const q = new Int32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const r = rne(Math.fround(x[i] / s)); // double division rounded to float = the float32 division
    q[i] = Number.isNaN(r) ? zp : Math.min(Math.max(r + zp, qmin), qmax);
  }
  return q;
}
function dequantizeRef(q: Int8Array | Uint8Array, scale: number, zp: number): Float32Array {
  const s = Math.fround(scale);
  const x = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) x[i] = Math.fround((q[i] - zp) * s);
  return x;
}

/** Index of the first element whose bits differ (-1 if none): bit-exact compare. */
function firstDiff(a: ArrayBufferView, b: ArrayBufferView): number {
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  if (x.length !== y.length) return -2;
  const size = (a as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return Math.floor(i / size);
  return -1;
}
function diffText(a: ArrayLike<number>, b: ArrayLike<number>, i: number): string {
  return i < 0 ? 'identical' : `first difference at ${i}: ${a[i]} vs ${b[i]}`;
}

/** Runs fn; checks that it throws an instance of ctor whose message matches re (and code, if given). */
function throwsLike(
  tt: Tap,
  fn: () => unknown,
  ctor: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor,
  re: RegExp,
  what: string,
  code?: string,
): void {
  try {
    fn();
  } catch (e) {
    const err = e as Error & { code?: string };
    const ok = err instanceof ctor && re.test(err.message) && (code === undefined || err.code === code);
    tt.ok(ok, `${what}: ${err?.constructor?.name} ${err?.code ?? ''} "${err?.message}"`);
    return;
  }
  tt.ok(false, `${what}: did not throw`);
}
type Tap = { ok(value: unknown, message: string): unknown };

const B = binding as unknown as Record<string, unknown>;
const hasFn = (name: string) => typeof B[name] === 'function';
const cudaExports = ['cudaAlloc', 'cudaSynchronize', 'cudaGemmS8S8S32', 'cudaQuantize', 'cudaDequantize', 'cudaBenchBf16Gemm'];
const cuda = binding.info().cuda;
const gpuSkip = cuda.available ? false : `CUDA not available: ${cuda.reason}`;

// ------------------------------------------------------------- always
t.test('info().cuda has the documented shape', async (t) => {
  t.equal(typeof cuda.compiled, 'boolean', 'compiled is a boolean');
  t.equal(typeof cuda.available, 'boolean', 'available is a boolean');
  if (!cuda.compiled) t.equal(cuda.available, false, 'not compiled -> not available');
  if (!cuda.available) {
    t.ok(typeof cuda.reason === 'string' && cuda.reason.length > 10, `reason says why: ${cuda.reason}`);
  } else {
    t.equal(cuda.reason, undefined, 'no reason when available');
  }
  if (!cuda.compiled) {
    t.ok(/built without CUDA/.test(cuda.reason ?? ''), 'the reason names the build');
    return;
  }
  t.ok(typeof cuda.runtimeVersion === 'number' && cuda.runtimeVersion >= 11000, `runtimeVersion ${cuda.runtimeVersion}`);
  t.ok(typeof cuda.driverVersion === 'number' && cuda.driverVersion >= 0, `driverVersion ${cuda.driverVersion}`);
  t.ok(typeof cuda.architectures === 'string' && /\d\d/.test(cuda.architectures ?? ''), `architectures ${cuda.architectures}`);
  t.ok(Array.isArray(cuda.devices), 'devices is an array');
  for (const d of cuda.devices ?? []) {
    t.ok(Number.isInteger(d.index) && d.index >= 0, `device ${d.index}: index`);
    t.ok(typeof d.name === 'string' && d.name.length > 0, `device ${d.index}: name ${d.name}`);
    t.ok(/^\d+\.\d+$/.test(d.computeCapability), `device ${d.index}: computeCapability ${d.computeCapability}`);
    t.ok(d.totalMemory > 0, `device ${d.index}: totalMemory ${d.totalMemory}`);
  }
  if (cuda.available) {
    t.ok((cuda.devices ?? []).length >= 1, 'available -> at least one device');
    t.ok(typeof cuda.cublasLtVersion === 'number' && cuda.cublasLtVersion > 0, `cublasLtVersion ${cuda.cublasLtVersion}`);
    t.ok(typeof cuda.cublasLtPath === 'string' && /cublasLt/.test(cuda.cublasLtPath ?? ''), `cublasLtPath ${cuda.cublasLtPath}`);
    t.comment(`GPU: ${JSON.stringify(cuda.devices)}; cuBLASLt ${cuda.cublasLtVersion} (${cuda.cublasLtPath}); runtime ${cuda.runtimeVersion}, driver ${cuda.driverVersion}`);
  }
});

t.test('every CUDA export exists', async (t) => {
  for (const name of cudaExports) t.ok(hasFn(name), `${name} is a function`);
});

t.test('without CUDA every export throws E_CUDA_UNAVAILABLE', { skip: cuda.available ? 'CUDA is available here (the child-process test covers this path)' : false }, async (t) => {
  const calls: [string, unknown[]][] = [
    ['cudaAlloc', [16]],
    ['cudaAlloc', ['not a number']],
    ['cudaAlloc', []],
    ['cudaSynchronize', []],
    ['cudaGemmS8S8S32', [{ m: 1, n: 1, k: 1, outType: 's32' }]],
    ['cudaGemmS8S8S32', [undefined]],
    ['cudaQuantize', [{ count: 1, scale: 1, zeroPoint: 0, quantMin: -128, quantMax: 127 }]],
    ['cudaDequantize', [{}]],
    ['cudaBenchBf16Gemm', [{ m: 16, n: 16, k: 16 }]],
  ];
  for (const [name, args] of calls) {
    const fn = B[name] as (...a: unknown[]) => unknown;
    throwsLike(t, () => fn(...args), Error, new RegExp(`^${name}: CUDA is not available: .{10,}`), `${name}(${JSON.stringify(args)})`, 'E_CUDA_UNAVAILABLE');
  }
  // The reason in the message is the one info() gives.
  try {
    binding.cudaSynchronize();
  } catch (e) {
    t.ok((e as Error).message.endsWith(cuda.reason ?? '???'), 'the message carries info().cuda.reason');
  }
});

t.test('QUANTFACE_CUDA_DISABLE=1: a child process gets E_CUDA_UNAVAILABLE from every export, no crash', async (t) => {
  const script = `
    const b = require(${JSON.stringify(bindingPath)});
    const res = { info: b.info().cuda, calls: [] };
    const calls = [['cudaAlloc', [64]], ['cudaSynchronize', []], ['cudaGemmS8S8S32', [{}]], ['cudaQuantize', [{}]],
      ['cudaDequantize', [{}]], ['cudaBenchBf16Gemm', [{}]]];
    for (const [name, args] of calls) {
      try { b[name](...args); res.calls.push([name, 'returned']); }
      catch (e) { res.calls.push([name, e.constructor.name, e.code, e.message]); }
    }
    console.log(JSON.stringify(res));`;
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, QUANTFACE_CUDA_DISABLE: '1' },
  });
  t.equal(r.signal, null, `child not killed by a signal (stderr: ${r.stderr?.slice(-500)})`);
  t.equal(r.status, 0, 'child exited cleanly');
  const res = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as {
    info: { compiled: boolean; available: boolean; reason: string };
    calls: [string, string, string?, string?][];
  };
  t.equal(res.info.available, false, 'info().cuda.available is false');
  t.ok(res.info.compiled ? /QUANTFACE_CUDA_DISABLE/.test(res.info.reason) : /built without CUDA/.test(res.info.reason), `reason: ${res.info.reason}`);
  t.equal(res.calls.length, 6, 'six calls made');
  for (const [name, kind, code, msg] of res.calls)
    t.ok(kind === 'Error' && code === 'E_CUDA_UNAVAILABLE' && (msg ?? '').startsWith(`${name}: CUDA is not available`), `${name}: ${kind} ${code} ${msg}`);
});

const cpuGemm = hasFn('packWeights') && hasFn('gemmU8S8S32');
const cpuQuant = hasFn('quantize') && hasFn('dequantize');

t.test('the GEMM and epilogue references agree with the CPU gemmU8S8S32', { skip: cpuGemm ? false : 'gemmU8S8S32 is not in this build' }, async (t) => {
  for (const [m, n, k] of [[7, 5, 3], [33, 20, 64], [5, 17, 131]]) {
    const a = randI8(m * k), b = randI8(n * k);
    const ref = gemmRef(a, b, m, n, k);
    t.equal(firstDiff(cpuGemmS32(a, b, m, n, k), ref), -1, `gemmU8S8S32 (a + 128, aZeroPoint 128) = reference, ${m}x${n}x${k}`);
    const scale = randF32(n, -0.01, 0.02), bias = randF32(n, -3, 3);
    for (const [s, bb] of [[scale, bias], [scale, undefined], [undefined, bias], [undefined, undefined]] as const) {
      t.equal(firstDiff(cpuGemmF32(a, b, m, n, k, s, bb), epilogueRef(ref, n, s, bb)), -1,
        `f32 epilogue reference = CPU, ${m}x${n}x${k}, scale ${!!s}, bias ${!!bb}`);
    }
  }
});

t.test('the quantize / dequantize references agree with the CPU kernels', { skip: cpuQuant ? false : 'quantize/dequantize are not in this build' }, async (t) => {
  for (const p of quantCases()) {
    const x = quantInput(999, p.scale, true);
    const got = cpuQuantize(x, p);
    const ref = quantizeRef(x, p.scale, p.zp, p.qmin, p.qmax);
    t.equal(firstDiff(got, p.qmin < 0 ? Int8Array.from(ref) : Uint8Array.from(ref)), -1, `quantize reference = CPU ${JSON.stringify(p)}`);
    const q = p.qmin < 0 ? randI8(777) : Uint8Array.from(randI8(777), (v) => v + 128);
    t.equal(firstDiff(cpuDequantize(q, p), dequantizeRef(q, p.scale, p.zp)), -1, `dequantize reference = CPU ${JSON.stringify(p)}`);
  }
});

// CPU kernels (u8 x s8): our signed A is passed as a + 128 with aZeroPoint 128.
function cpuPacked(b: Int8Array, n: number, k: number) {
  return binding.packWeights({ w: b, n, k });
}
function cpuGemmS32(a: Int8Array, b: Int8Array, m: number, n: number, k: number): Int32Array {
  const out = new Int32Array(m * n).fill(-0x54545455);
  binding.gemmU8S8S32({ a: Uint8Array.from(a, (v) => v + 128), aZeroPoint: 128, m, w: cpuPacked(b, n, k), outType: 's32', out });
  return out;
}
function cpuGemmF32(a: Int8Array, b: Int8Array, m: number, n: number, k: number, scale?: Float32Array, bias?: Float32Array): Float32Array {
  const out = new Float32Array(m * n).fill(NaN);
  binding.gemmU8S8S32({ a: Uint8Array.from(a, (v) => v + 128), aZeroPoint: 128, m, w: cpuPacked(b, n, k), outType: 'f32', out, scale, bias });
  return out;
}
interface QCase { scale: number; zp: number; qmin: number; qmax: number }
function quantCases(): QCase[] {
  return [
    { scale: 0.5, zp: 0, qmin: -128, qmax: 127 }, // power-of-two scale: exact halfway cases
    { scale: 0.25, zp: 3, qmin: -127, qmax: 127 },
    { scale: 0.0371, zp: 128, qmin: 0, qmax: 255 },
    { scale: 0.125, zp: 8, qmin: 0, qmax: 15 }, // 4-bit
    { scale: Math.fround(0.1 + rand() * 0.2), zp: -5, qmin: -32, qmax: 31 }, // 6-bit, random scale
  ];
}
/** Values around the range, with exact halfway points (k + 0.5) * scale and a few specials. */
function quantInput(n: number, scale: number, specials = false): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rand();
    if (r < 0.3) x[i] = (randInt(-300, 300) + 0.5) * scale;
    else if (r < 0.35) x[i] = randInt(-300, 300) * scale;
    else x[i] = (rand() * 2 - 1) * 300 * scale;
  }
  if (specials && n >= 8) {
    x.set([NaN, Infinity, -Infinity, 1e30, -1e30, -0, 0, 3e-39], 0);
  }
  return x;
}
function cpuQuantize(x: Float32Array, p: QCase): Int8Array | Uint8Array {
  const out = p.qmin < 0 ? new Int8Array(x.length).fill(0x55) : new Uint8Array(x.length).fill(0xab);
  binding.quantize({ x, out, scale: Float32Array.of(p.scale), zeroPoint: Int32Array.of(p.zp), quantMin: p.qmin, quantMax: p.qmax });
  return out;
}
function cpuDequantize(q: Int8Array | Uint8Array, p: QCase): Float32Array {
  const out = new Float32Array(q.length).fill(NaN);
  binding.dequantize({ q, out, scale: Float32Array.of(p.scale), zeroPoint: Int32Array.of(p.zp) });
  return out;
}

// ------------------------------------------------------------- GPU
/** A device buffer holding `src`, or `bytes` of 0xAB poison. */
function dev(src: ArrayBufferView | number): DeviceBuffer {
  if (typeof src === 'number') {
    const d = binding.cudaAlloc(src);
    d.upload(new Uint8Array(src).fill(0xab));
    return d;
  }
  const d = binding.cudaAlloc(Math.max(1, src.byteLength));
  if (src.byteLength) d.upload(src);
  return d;
}

t.test('DeviceBuffer: upload/download round trips, offsets, validation, free', { skip: gpuSkip }, async (t) => {
  const n = 1001;
  const d = binding.cudaAlloc(n);
  t.equal(d.bytes, n, 'bytes');
  t.equal(d.freed, false, 'not freed');
  const src = Uint8Array.from(randI8(n), (v) => v & 0xff);
  d.upload(src);
  const back = new Uint8Array(n).fill(0xab);
  d.download(back);
  t.equal(firstDiff(back, src), -1, 'Uint8Array round trip');
  // Offsets, other views.
  const f = randF32(50, -1e6, 1e6);
  d.upload(f, 400);
  const g = new Float32Array(50).fill(NaN);
  d.download(g, 400);
  t.equal(firstDiff(g, f), -1, 'Float32Array round trip at byteOffset 400');
  const dv = new DataView(new ArrayBuffer(16));
  d.download(dv, 400);
  t.equal(dv.getFloat32(0, true), f[0], 'DataView download');
  const part = new Uint8Array(10).fill(0);
  d.download(part, 0);
  t.equal(firstDiff(part, src.subarray(0, 10)), -1, 'partial download from 0 (untouched bytes kept)');
  const buf = Buffer.from('quantface');
  d.upload(buf, n - buf.length);
  const tail = Buffer.alloc(buf.length);
  d.download(tail, n - buf.length);
  t.equal(tail.toString(), 'quantface', 'Buffer upload into the last bytes');
  d.upload(new Uint8Array(0), n);
  t.pass('empty upload at byteOffset = bytes is fine');
  // Validation.
  throwsLike(t, () => d.upload(new Uint8Array(2), n - 1), RangeError, /upload: src \(2 bytes\) at byteOffset .* does not fit/, 'upload past the end');
  throwsLike(t, () => d.download(new Uint8Array(n + 1)), RangeError, /download: dst .* does not fit/, 'download larger than the buffer');
  throwsLike(t, () => d.upload(new Uint8Array(1), -1), RangeError, /byteOffset/, 'negative byteOffset');
  throwsLike(t, () => d.upload(new Uint8Array(1), 1.5), RangeError, /byteOffset/, 'fractional byteOffset');
  throwsLike(t, () => (d.upload as (x: unknown, o?: unknown) => void)(new Uint8Array(1), '1'), TypeError, /byteOffset/, 'string byteOffset');
  throwsLike(t, () => (d.upload as (x: unknown) => void)([1, 2, 3]), TypeError, /upload: src must be a TypedArray/, 'array src');
  throwsLike(t, () => (d.download as (x: unknown) => void)(new ArrayBuffer(4)), TypeError, /download: dst must be/, 'ArrayBuffer dst');
  const ab = new ArrayBuffer(8);
  const view = new Uint8Array(ab);
  structuredClone(ab, { transfer: [ab] });
  throwsLike(t, () => d.upload(view), TypeError, /detached/, 'detached src');
  throwsLike(t, () => binding.cudaAlloc(0), RangeError, /cudaAlloc: bytes/, 'cudaAlloc(0)');
  throwsLike(t, () => binding.cudaAlloc(-1), RangeError, /cudaAlloc: bytes/, 'cudaAlloc(-1)');
  throwsLike(t, () => binding.cudaAlloc(1.5), RangeError, /cudaAlloc: bytes/, 'cudaAlloc(1.5)');
  throwsLike(t, () => (binding.cudaAlloc as (x: unknown) => unknown)('8'), TypeError, /cudaAlloc: bytes/, "cudaAlloc('8')");
  throwsLike(t, () => binding.cudaAlloc(2 ** 60), RangeError, /cudaAlloc: bytes/, 'cudaAlloc(2^60): beyond 2^53');
  throwsLike(t, () => binding.cudaAlloc(2 ** 50), Error, /cudaAlloc: cudaMalloc\(\d+\) failed/, 'cudaAlloc(1 PiB) fails cleanly', 'E_CUDA_OOM');
  const after = binding.cudaAlloc(64);
  after.upload(new Uint8Array(64));
  after.free();
  t.pass('allocations work again after a failed one');
  const Ctor = (d as unknown as { constructor: new (...a: unknown[]) => unknown }).constructor;
  throwsLike(t, () => new Ctor(), TypeError, /use cudaAlloc/, 'DeviceBuffer cannot be constructed from JS');
  throwsLike(t, () => new Ctor({}, {}, 5), TypeError, /use cudaAlloc/, 'not even with look-alike arguments');
  // Free.
  d.free();
  t.equal(d.freed, true, 'freed after free()');
  d.free();
  t.pass('a second free() is a no-op');
  throwsLike(t, () => d.upload(src), Error, /upload: the buffer was freed/, 'upload after free', 'E_CUDA_FREED');
  throwsLike(t, () => d.download(back), Error, /download: the buffer was freed/, 'download after free', 'E_CUDA_FREED');
  // Many short-lived buffers: the finalizers must free them (no OOM, no crash).
  for (let i = 0; i < 200; i++) binding.cudaAlloc(1 << 20);
  binding.cudaSynchronize();
  t.pass('200 unreferenced 1 MiB buffers');
});

const gemmShapes: [number, number, number][] = [
  [1, 1, 1], [1, 4, 4], [7, 5, 3], [3, 8, 12], [2, 4, 4], [63, 65, 129], [129, 31, 64], [64, 128, 256],
  [130, 132, 260], [257, 96, 1000], [5, 64, 27], [33, 200, 4096],
];

t.test('cudaGemmS8S8S32 s32: bit-exact vs the JS reference and the CPU kernel, every impl', { skip: gpuSkip }, async (t) => {
  const cpu = cpuGemm;
  if (!cpu) t.comment('gemmU8S8S32 is not in this build: comparing against the JS reference only');
  const used: Record<string, number> = {};
  for (const [m, n, k] of gemmShapes) {
    const a = randI8(m * k), b = randI8(n * k);
    const ref = gemmRef(a, b, m, n, k);
    const cpuOut = cpu ? cpuGemmS32(a, b, m, n, k) : undefined;
    if (cpuOut) t.equal(firstDiff(cpuOut, ref), -1, `CPU = reference ${m}x${n}x${k}`);
    const da = dev(a), db = dev(b), dc = dev(m * n * 4);
    const impls: ('auto' | 'kernel' | 'cublaslt')[] = ['auto', 'kernel'];
    if (n % 4 === 0 && k % 4 === 0) impls.push('cublaslt');
    for (const impl of impls) {
      dc.upload(new Uint8Array(m * n * 4).fill(0xab)); // poison
      const ran = binding.cudaGemmS8S8S32({ a: da, b: db, m, n, k, outType: 's32', out: dc, impl });
      used[`${impl}->${ran}`] = (used[`${impl}->${ran}`] ?? 0) + 1;
      if (impl !== 'auto') t.equal(ran, impl, `impl ${impl} ran as asked`);
      const got = new Int32Array(m * n);
      dc.download(got);
      t.equal(firstDiff(got, ref), -1, `${impl} (${ran}) ${m}x${n}x${k} = reference: ${diffText(got, ref, firstDiff(got, ref))}`);
    }
    da.free(); db.free(); dc.free();
  }
  t.comment(`implementations used: ${JSON.stringify(used)}`);
  t.ok((used['auto->cublaslt'] ?? 0) > 0, 'auto used cuBLASLt for the shapes it takes');
  // Saturation: all -128 (largest products) and mixed extremes, a long k.
  for (const fill of [-128, 127]) {
    const m = 8, n = 16, k = 8192;
    const a = new Int8Array(m * k).fill(-128), b = new Int8Array(n * k).fill(fill);
    const ref = gemmRef(a, b, m, n, k);
    const da = dev(a), db = dev(b), dc = dev(m * n * 4);
    for (const impl of ['cublaslt', 'kernel'] as const) {
      binding.cudaGemmS8S8S32({ a: da, b: db, m, n, k, outType: 's32', out: dc, impl });
      const got = new Int32Array(m * n);
      dc.download(got);
      t.equal(firstDiff(got, ref), -1, `extremes (-128 x ${fill}, k = ${k}, acc ${ref[0]}) ${impl}`);
    }
    da.free(); db.free(); dc.free();
  }
  binding.cudaSynchronize();
});

t.test('cudaGemmS8S8S32 f32 epilogue: bit-exact vs the JS reference and the CPU epilogue', { skip: gpuSkip }, async (t) => {
  const cpu = cpuGemm;
  for (const [m, n, k] of [[7, 5, 3], [65, 64, 128], [100, 36, 300], [1, 1000, 8]] as [number, number, number][]) {
    const a = randI8(m * k), b = randI8(n * k);
    const acc = gemmRef(a, b, m, n, k);
    const scale = randF32(n, -0.003, 0.01), bias = randF32(n, -5, 5);
    const da = dev(a), db = dev(b), dc = dev(m * n * 4), ds = dev(scale), dbias = dev(bias);
    for (const [s, bb] of [[scale, bias], [scale, undefined], [undefined, bias], [undefined, undefined]] as const) {
      const ref = epilogueRef(acc, n, s, bb);
      if (cpu) t.equal(firstDiff(cpuGemmF32(a, b, m, n, k, s, bb), ref), -1, `CPU f32 = reference ${m}x${n}x${k}`);
      for (const impl of ['auto', 'kernel'] as const) {
        dc.upload(new Uint8Array(m * n * 4).fill(0xff)); // NaN poison
        binding.cudaGemmS8S8S32({ a: da, b: db, m, n, k, outType: 'f32', out: dc, scale: s ? ds : undefined, bias: bb ? dbias : undefined, impl });
        const got = new Float32Array(m * n);
        dc.download(got);
        const i = firstDiff(got, ref);
        t.equal(i, -1, `${impl} ${m}x${n}x${k} scale ${!!s} bias ${!!bb}: ${diffText(got, ref, i)}`);
      }
    }
    for (const d of [da, db, dc, ds, dbias]) d.free();
  }
});

t.test('cudaQuantize / cudaDequantize: bit-exact vs the JS reference and the CPU kernels', { skip: gpuSkip }, async (t) => {
  const cpu = cpuQuant;
  for (const count of [1, 7, 4097, 100003]) {
    for (const p of quantCases()) {
      const x = quantInput(count, p.scale, true);
      const ref = quantizeRef(x, p.scale, p.zp, p.qmin, p.qmax);
      const signed = p.qmin < 0;
      const dx = dev(x), dq = dev(count);
      binding.cudaQuantize({ x: dx, out: dq, count, scale: p.scale, zeroPoint: p.zp, quantMin: p.qmin, quantMax: p.qmax });
      const got = signed ? new Int8Array(count) : new Uint8Array(count);
      dq.download(got);
      const want = signed ? Int8Array.from(ref) : Uint8Array.from(ref);
      t.equal(firstDiff(got, want), -1, `quantize n=${count} ${JSON.stringify(p)}: ${diffText(got, want, firstDiff(got, want))}`);
      if (cpu) {
        const c = cpuQuantize(x, p);
        t.equal(firstDiff(got, c), -1, `quantize = CPU quantize (NaN, inf included) n=${count} ${JSON.stringify(p)}: ${diffText(got, c, firstDiff(got, c))}`);
      }
      // Dequantize what we just quantized, and random bytes.
      for (const q of [got, signed ? randI8(count) : Uint8Array.from(randI8(count), (v) => v + 128)]) {
        dq.upload(q);
        const dout = dev(count * 4);
        binding.cudaDequantize({ q: dq, out: dout, count, dtype: signed ? 's8' : 'u8', scale: p.scale, zeroPoint: p.zp });
        const xs = new Float32Array(count);
        dout.download(xs);
        const dref = dequantizeRef(q, p.scale, p.zp);
        t.equal(firstDiff(xs, dref), -1, `dequantize n=${count} ${JSON.stringify(p)}: ${diffText(xs, dref, firstDiff(xs, dref))}`);
        if (cpu) t.equal(firstDiff(xs, cpuDequantize(q, p)), -1, `dequantize = CPU n=${count}`);
        dout.free();
      }
      dx.free(); dq.free();
    }
  }
  // count 0 is a no-op.
  const dx = dev(4), dq = dev(4);
  binding.cudaQuantize({ x: dx, out: dq, count: 0, scale: 1, zeroPoint: 0, quantMin: -128, quantMax: 127 });
  const untouched = new Uint8Array(4);
  dq.download(untouched);
  t.equal(firstDiff(untouched, new Uint8Array(4).fill(0xab)), -1, 'count 0 writes nothing');
  dx.free(); dq.free();
});

t.test('CUDA argument validation names the argument; freed buffers are refused', { skip: gpuSkip }, async (t) => {
  const m = 5, n = 8, k = 12;
  const a = dev(m * k), b = dev(n * k), out = dev(m * n * 4), scale = dev(n * 4), small = dev(3);
  const ok = { a, b, m, n, k, outType: 's32' as const, out };
  binding.cudaGemmS8S8S32(ok);
  t.pass('a valid call works');
  const gemm = binding.cudaGemmS8S8S32 as (o: unknown) => unknown;
  const bad: [string, unknown, ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor, RegExp][] = [
    ['no options', undefined, TypeError, /cudaGemmS8S8S32: expected an options object/],
    ['missing a', { ...ok, a: undefined }, TypeError, /cudaGemmS8S8S32: a is required/],
    ['a is a typed array', { ...ok, a: new Int8Array(60) }, TypeError, /cudaGemmS8S8S32: a must be a DeviceBuffer/],
    ['a is a plain object', { ...ok, a: {} }, TypeError, /cudaGemmS8S8S32: a must be a DeviceBuffer/],
    ['a is a look-alike', { ...ok, a: Object.create(Object.getPrototypeOf(a)) }, TypeError, /cudaGemmS8S8S32: a must be a DeviceBuffer/],
    ['m = 0', { ...ok, m: 0 }, RangeError, /cudaGemmS8S8S32: m must be in/],
    ['n = -1', { ...ok, n: -1 }, RangeError, /cudaGemmS8S8S32: n must be in/],
    ['k = 1.5', { ...ok, k: 1.5 }, RangeError, /cudaGemmS8S8S32: k must be an integer/],
    ['k a string', { ...ok, k: '12' }, TypeError, /cudaGemmS8S8S32: k must be an integer/],
    ['m too large for a', { ...ok, m: 6 }, RangeError, /cudaGemmS8S8S32: a has 60 bytes; needs at least 72/],
    ['b too small', { ...ok, b: small }, RangeError, /cudaGemmS8S8S32: b has 3 bytes; needs at least 96/],
    ['out too small', { ...ok, out: small }, RangeError, /cudaGemmS8S8S32: out has 3 bytes/],
    ['missing outType', { ...ok, outType: undefined }, TypeError, /cudaGemmS8S8S32: outType is required/],
    ['bad outType', { ...ok, outType: 'u8' }, RangeError, /cudaGemmS8S8S32: outType must be one of/],
    ['scale with s32', { ...ok, scale }, RangeError, /cudaGemmS8S8S32: scale is only used with outType 'f32'/],
    ['scale too short', { ...ok, outType: 'f32', scale: small }, RangeError, /cudaGemmS8S8S32: scale has 3 bytes/],
    ['out = a', { ...ok, a: out, k: 4 }, RangeError, /cudaGemmS8S8S32: out and a must be different buffers/],
    ['out = scale', { ...ok, outType: 'f32', scale: out }, RangeError, /cudaGemmS8S8S32: out and scale must be different/],
    ['bad impl', { ...ok, impl: 'cutlass' }, RangeError, /cudaGemmS8S8S32: impl must be one of/],
    ['cublaslt on k = 3', { ...ok, k: 3, impl: 'cublaslt' }, RangeError, /impl 'cublaslt' needs n and k to be multiples of 4/],
  ];
  for (const [what, o, ctor, re] of bad) throwsLike(t, () => gemm(o), ctor, re, what);
  const quant = binding.cudaQuantize as (o: unknown) => unknown;
  const x = dev(40), q = dev(10);
  const qok = { x, out: q, count: 10, scale: 0.1, zeroPoint: 0, quantMin: -128, quantMax: 127 };
  quant(qok);
  const qbad: [string, unknown, ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor, RegExp][] = [
    ['scale 0', { ...qok, scale: 0 }, RangeError, /cudaQuantize: scale must be > 0/],
    ['scale NaN', { ...qok, scale: NaN }, RangeError, /cudaQuantize: scale must be/],
    ['scale underflows float32', { ...qok, scale: 1e-60 }, RangeError, /cudaQuantize: scale must be > 0 and finite as a float32/],
    ['scale string', { ...qok, scale: '1' }, TypeError, /cudaQuantize: scale must be a number/],
    ['quantMin > quantMax', { ...qok, quantMin: 5, quantMax: 4, zeroPoint: 4 }, RangeError, /cudaQuantize: quantMin must be <= quantMax/],
    ['range beyond s8', { ...qok, quantMin: -1, quantMax: 200 }, RangeError, /cudaQuantize: \[quantMin, quantMax\] must lie within \[-128, 127\]/],
    ['s8 dtype with a u8 range', { ...qok, quantMin: 0, quantMax: 255, dtype: 's8' }, RangeError, /must lie within \[-128, 127\] for dtype 's8'/],
    ['quantMax 256', { ...qok, quantMin: 0, quantMax: 256 }, RangeError, /cudaQuantize: quantMax must be in/],
    ['zeroPoint outside', { ...qok, zeroPoint: 200 }, RangeError, /cudaQuantize: zeroPoint must be in \[-128, 127\]/],
    ['count too large for x', { ...qok, count: 11 }, RangeError, /cudaQuantize: x has 40 bytes; needs at least 44/],
    ['count negative', { ...qok, count: -1 }, RangeError, /cudaQuantize: count must be in/],
    ['x = out', { ...qok, out: x }, RangeError, /cudaQuantize: x and out must be different buffers/],
    ['missing x', { ...qok, x: undefined }, TypeError, /cudaQuantize: x is required/],
  ];
  for (const [what, o, ctor, re] of qbad) throwsLike(t, () => quant(o), ctor, re, what);
  const deq = binding.cudaDequantize as (o: unknown) => unknown;
  const dok = { q, out: x, count: 10, scale: 0.1, zeroPoint: 0, dtype: 's8' };
  deq(dok);
  throwsLike(t, () => deq({ ...dok, dtype: undefined }), TypeError, /cudaDequantize: dtype is required/, 'dequantize without dtype');
  throwsLike(t, () => deq({ ...dok, dtype: 'u4' }), RangeError, /cudaDequantize: dtype must be one of/, 'dequantize bad dtype');
  throwsLike(t, () => deq({ ...dok, dtype: 'u8', zeroPoint: -1 }), RangeError, /cudaDequantize: zeroPoint must be in \[0, 255\]/, 'u8 zeroPoint -1');
  throwsLike(t, () => deq({ ...dok, count: 11 }), RangeError, /cudaDequantize: q has 10 bytes/, 'dequantize count too large');
  const bench = binding.cudaBenchBf16Gemm as (o: unknown) => unknown;
  throwsLike(t, () => bench({ m: 0, n: 1, k: 1 }), RangeError, /cudaBenchBf16Gemm: m must be in/, 'bench m = 0');
  throwsLike(t, () => bench({ m: 8, n: 8, k: 8, outType: 'f16' }), RangeError, /cudaBenchBf16Gemm: outType must be one of/, 'bench bad outType');
  // Freed buffers.
  b.free();
  throwsLike(t, () => gemm(ok), Error, /cudaGemmS8S8S32: b was freed/, 'gemm with a freed b', 'E_CUDA_FREED');
  q.free();
  throwsLike(t, () => quant(qok), Error, /cudaQuantize: out was freed/, 'quantize into a freed out', 'E_CUDA_FREED');
  for (const d of [a, out, scale, small, x]) d.free();
  binding.cudaSynchronize();
  t.pass('cudaSynchronize after all that');
});

t.test('cudaBenchBf16Gemm runs and times bf16 products', { skip: gpuSkip }, async (t) => {
  for (const outType of ['bf16', 'f32'] as const) {
    const r = binding.cudaBenchBf16Gemm({ m: 256, n: 192, k: 128, reps: 3, inner: 2, warmup: 1, outType });
    t.equal(r.times.length, 3, `${outType}: three timed repetitions`);
    t.ok(r.times.every((s) => s > 0 && s < 10), `${outType}: times are positive seconds: ${r.times.map((s) => s.toExponential(2)).join(', ')}`);
    t.equal(r.flopsPerRep, 2 * 256 * 192 * 128 * 2, `${outType}: flopsPerRep`);
    t.equal(r.outType, outType, 'outType echoed');
  }
});
