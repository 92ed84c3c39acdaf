// GPU GEMM throughput: cudaGemmS8S8S32 (cuBLASLt int8 tensor cores, int32
// accumulate) at 4096^3 and 8192^3, beside the card's bf16 matmul rate
// measured in the same run through cuBLASLt (cudaBenchBf16Gemm).
//
//   node --import tsx bench/gpu-gemm.ts [--sizes 4096,8192] [--reps 10] [--json out.json]
//
// Each figure is the median over `reps` repetitions; a repetition queues
// `inner` products (about 10 T operations of work) and waits with
// cudaSynchronize, timed on the host clock, after warm-up products. Inputs
// are random (never zeros). A few output entries are checked against a JS
// dot product so a figure can never come from a GEMM that did nothing.
import { randomFillSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { binding, bindingPath, packageRoot } from '../lib/binding.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const sizes = arg('sizes', '4096,8192').split(',').map(Number).filter((v) => v > 0);
const reps = Number(arg('reps', '10'));
const jsonPath = resolve(arg('json', resolve(packageRoot, 'bench/results/gpu-gemm.json')));

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
};

function writeJson(obj: unknown) {
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify(obj, null, 2) + '\n');
  console.log(`JSON written to ${jsonPath}`);
}

const cuda = binding.info().cuda;
console.log(`binding: ${bindingPath}`);
if (!cuda.available) {
  console.log(`CUDA not available: ${cuda.reason}`);
  writeJson({ available: false, reason: cuda.reason, compiled: cuda.compiled });
  process.exit(0);
}
const device = cuda.devices?.[0];
console.log(`device 0: ${device?.name} (compute capability ${device?.computeCapability}, ${((device?.totalMemory ?? 0) / 2 ** 30).toFixed(1)} GiB)`);
console.log(`cuBLASLt ${cuda.cublasLtVersion} (${cuda.cublasLtPath}); CUDA runtime ${cuda.runtimeVersion}, driver ${cuda.driverVersion}`);

interface Row {
  size: number;
  inner: number;
  s8s32Tops: number;
  s8s32Times: number[];
  s8f32Tops: number;
  impl: string;
  kernelTops?: number;
  bf16Tflops: number;
  bf16Times: number[];
  ratio: number;
}
const rows: Row[] = [];

/** Median ops/s of `inner` calls of fn per repetition. */
function timeIt(fn: () => void, opsPerCall: number, inner: number, nreps: number, warmup: number): { rate: number; times: number[] } {
  for (let i = 0; i < warmup; i++) fn();
  binding.cudaSynchronize();
  const times: number[] = [];
  for (let r = 0; r < nreps; r++) {
    const t0 = performance.now();
    for (let i = 0; i < inner; i++) fn();
    binding.cudaSynchronize();
    times.push((performance.now() - t0) / 1e3);
  }
  return { rate: (opsPerCall * inner) / median(times), times };
}

for (const size of sizes) {
  const m = size, n = size, k = size;
  const ops = 2 * m * n * k;
  const inner = Math.max(1, Math.round(1e13 / ops));
  const a = new Int8Array(m * k), b = new Int8Array(n * k);
  randomFillSync(a);
  randomFillSync(b);
  const da = binding.cudaAlloc(a.length), db = binding.cudaAlloc(b.length), dc = binding.cudaAlloc(m * n * 4);
  da.upload(a);
  db.upload(b);
  const scale = new Float32Array(n).map((_, j) => 1 / (1 + j)), bias = new Float32Array(n).fill(0.5);
  const ds = binding.cudaAlloc(n * 4), dbias = binding.cudaAlloc(n * 4);
  ds.upload(scale);
  dbias.upload(bias);

  let impl = '';
  const s32 = timeIt(() => { impl = binding.cudaGemmS8S8S32({ a: da, b: db, m, n, k, outType: 's32', out: dc }); }, ops, inner, reps, 3);
  // Spot check: a few entries against a JS dot product.
  const c = new Int32Array(m * n);
  dc.download(c);
  let bad = 0;
  for (let t = 0; t < 16; t++) {
    const i = Math.floor(Math.random() * m), j = Math.floor(Math.random() * n);
    let s = 0;
    for (let p = 0; p < k; p++) s += a[i * k + p] * b[j * k + p];
    if (s !== c[i * n + j]) bad++;
  }
  if (bad) throw new Error(`int8 GEMM ${size}^3 gave wrong results in ${bad} of 16 checked entries`);
  const f32 = timeIt(() => { binding.cudaGemmS8S8S32({ a: da, b: db, m, n, k, outType: 'f32', out: dc, scale: ds, bias: dbias }); }, ops, inner, Math.max(3, reps >> 1), 2);
  let kernelTops: number | undefined;
  if (size <= 4096) {
    // The tiled fallback kernel (used for shapes cuBLASLt does not take), for scale.
    kernelTops = timeIt(() => { binding.cudaGemmS8S8S32({ a: da, b: db, m, n, k, outType: 's32', out: dc, impl: 'kernel' }); }, ops, 1, 3, 1).rate / 1e12;
  }
  for (const d of [da, db, dc, ds, dbias]) d.free();

  const bf = binding.cudaBenchBf16Gemm({ m, n, k, reps, inner, warmup: 3, outType: 'bf16' });
  const bf16Tflops = bf.flopsPerRep / median(bf.times) / 1e12;
  const row: Row = {
    size, inner, impl,
    s8s32Tops: s32.rate / 1e12, s8s32Times: s32.times,
    s8f32Tops: f32.rate / 1e12,
    kernelTops,
    bf16Tflops, bf16Times: bf.times,
    ratio: s32.rate / 1e12 / bf16Tflops,
  };
  rows.push(row);
  console.log(`${size}^3: int8 ${row.s8s32Tops.toFixed(1)} TOPS (${impl}), f32 epilogue ${row.s8f32Tops.toFixed(1)}, bf16 ${bf16Tflops.toFixed(1)} TFLOP/s`);
}

const pad = (s: string, w: number) => s.padStart(w);
console.log('');
console.log(`GPU GEMM on ${device?.name}: median of ${reps} repetitions (TOPS = 10^12 int8 multiply-adds x 2 per second)`);
console.log(['size', 'int8->s32 TOPS', 'int8->f32 TOPS', 'tiled kernel', 'bf16 TFLOP/s', 'int8/bf16'].map((h, i) => pad(h, i ? 15 : 6)).join(' '));
for (const r of rows) {
  console.log([
    pad(String(r.size), 6),
    pad(r.s8s32Tops.toFixed(1), 15),
    pad(r.s8f32Tops.toFixed(1), 15),
    pad(r.kernelTops === undefined ? '-' : r.kernelTops.toFixed(1), 15),
    pad(r.bf16Tflops.toFixed(1), 15),
    pad(r.ratio.toFixed(2) + 'x', 15),
  ].join(' '));
}
writeJson({
  available: true,
  device,
  cublasLtVersion: cuda.cublasLtVersion,
  cublasLtPath: cuda.cublasLtPath,
  runtimeVersion: cuda.runtimeVersion,
  driverVersion: cuda.driverVersion,
  architectures: cuda.architectures,
  reps,
  date: new Date().toISOString(),
  rows,
});
