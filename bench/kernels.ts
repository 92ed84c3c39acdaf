// npm run bench:kernels — GEMM throughput beside this machine's measured peak.
// fp32 sgemm and u8s8s32 GEMM at 1024^3 and at the im2col GEMM shapes of
// MobileFaceNet and iResNet-50 layers (batch 32, 112x112 input), 1 and 2
// threads. Peaks come from register-only FMA / VNNI loops run in the same
// process right before each measurement (the clock drifts with host load).
// Medians of repetitions; writes bench/results/kernels-<time>.json.
//   node --import tsx bench/kernels.ts [--quick] [--shapes 1024,mfn,r50]
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { binding } from '../lib/binding.js';
import { medianSecondsPerCall } from './lib/timing.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const shapeArg = args.find((a, i) => args[i - 1] === '--shapes') ?? '1024,mfn,r50';
const threadList = (args.find((a, i) => args[i - 1] === '--threads') ?? '1,2').split(',').map(Number);

interface Shape { name: string; m: number; n: number; k: number }
const shapes: Shape[] = [];
const groups = new Set(shapeArg.split(','));
if (groups.has('1024')) shapes.push({ name: '1024^3', m: 1024, n: 1024, k: 1024 });
if (groups.has('mfn')) {
  shapes.push(
    { name: 'mfn conv1 3x3 3->64 @56', m: 100352, n: 64, k: 27 },
    { name: 'mfn 1x1 64->128 @56', m: 100352, n: 128, k: 64 },
    { name: 'mfn 1x1 128->64 @28', m: 25088, n: 64, k: 128 },
    { name: 'mfn 1x1 128->256 @14', m: 6272, n: 256, k: 128 },
    { name: 'mfn 1x1 256->128 @14', m: 6272, n: 128, k: 256 },
    { name: 'mfn 1x1 128->512 @7', m: 1568, n: 512, k: 128 },
    { name: 'mfn fc 512->128', m: 32, n: 128, k: 512 },
  );
}
if (groups.has('r50') || groups.has('anchor')) {
  // also ../shared/anchors/gemm's conv28_c128_1x1 PIXxOC shape (oneDNN/OpenBLAS side by side)
  shapes.push({ name: 'anchor 1x1 128->128 @28', m: 25088, n: 128, k: 128 });
}
if (groups.has('r50')) {
  shapes.push(
    { name: 'r50 conv1 3x3 3->64 @112', m: 401408, n: 64, k: 27 },
    { name: 'r50 3x3 64->64 @56', m: 100352, n: 64, k: 576 },
    { name: 'r50 3x3 128->128 @28', m: 25088, n: 128, k: 1152 },
    { name: 'r50 3x3 256->256 @14', m: 6272, n: 256, k: 2304 },
    { name: 'r50 3x3 512->512 @7', m: 1568, n: 512, k: 4608 },
    { name: 'r50 fc 25088->512', m: 32, n: 512, k: 25088 },
  );
}

let seed = 42;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
const minSeconds = quick ? 0.05 : 0.15;
const reps = quick ? 3 : 7;

const timeIt = (fn: () => void): number => medianSecondsPerCall(fn, reps, minSeconds);

const info = binding.info();
const hasVnni = info.isa.includes('avx512vnni');
const hasAvx512 = info.isa.includes('avx512');
function peak(kind: 'fma' | 'vnni', threads: number): number {
  const arm = info.isa.includes('neon');
  const k = arm ? (kind === 'fma' ? 'fma_neon' : 'dot_neon') : kind === 'fma' ? (hasAvx512 ? 'fma_zmm' : 'fma_ymm') : hasVnni ? 'vnni_zmm' : 'vnni_ymm';
  const vals: number[] = [];
  for (let i = 0; i < 3; i++) vals.push(binding.measurePeak({ kind: k, seconds: 0.1, threads }).opsPerSecond);
  vals.sort((a, b) => a - b);
  return vals[1];
}

interface Row {
  shape: string; m: number; n: number; k: number; threads: number;
  sgemmGflops: number; fmaPeakGflops: number; sgemmFraction: number;
  int8Gops: number; vnniPeakGops: number; int8Fraction: number; int8OverFp32: number;
}
const rows: Row[] = [];
console.log(`quantface ${info.version}  sgemm: ${info.kernels.sgemm}  int8: ${info.kernels.gemm_u8s8s32}  threads available: ${info.defaultThreads}`);
console.log('shape'.padEnd(28) + 'thr  ' + 'sgemm GF/s  %FMA   ' + 'int8 GOP/s  %VNNI  int8/fp32');
for (const s of shapes) {
  const a = Float32Array.from({ length: s.m * s.k }, () => rnd() - 0.5);
  const b = Float32Array.from({ length: s.k * s.n }, () => rnd() - 0.5);
  const c = new Float32Array(s.m * s.n);
  const a8 = Uint8Array.from({ length: s.m * s.k }, () => Math.floor(rnd() * 256));
  const w8 = Int8Array.from({ length: s.n * s.k }, () => Math.floor(rnd() * 256) - 128);
  const packed = binding.packWeights({ w: w8, n: s.n, k: s.k });
  const out = new Int32Array(s.m * s.n);
  const ops = 2 * s.m * s.n * s.k;
  for (const threads of threadList) {
    binding.setThreads(threads);
    const fmaPeak = peak('fma', threads);
    const tf = timeIt(() => binding.sgemm({ m: s.m, n: s.n, k: s.k, a, b, c }));
    const vnniPeak = peak('vnni', threads);
    const ti = timeIt(() => binding.gemmU8S8S32({ a: a8, m: s.m, w: packed, out, outType: 's32' }));
    const row: Row = {
      shape: s.name, m: s.m, n: s.n, k: s.k, threads,
      sgemmGflops: ops / tf / 1e9, fmaPeakGflops: fmaPeak / 1e9, sgemmFraction: ops / tf / fmaPeak,
      int8Gops: ops / ti / 1e9, vnniPeakGops: vnniPeak / 1e9, int8Fraction: ops / ti / vnniPeak, int8OverFp32: tf / ti,
    };
    rows.push(row);
    console.log(
      s.name.padEnd(28) + String(threads).padEnd(5) +
      row.sgemmGflops.toFixed(1).padStart(10) + (100 * row.sgemmFraction).toFixed(0).padStart(6) + '%  ' +
      row.int8Gops.toFixed(1).padStart(10) + (100 * row.int8Fraction).toFixed(0).padStart(6) + '%  ' +
      row.int8OverFp32.toFixed(2).padStart(8) + 'x',
    );
  }
}
binding.setThreads(0);
const dir = join(dirname(fileURLToPath(import.meta.url)), 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `kernels-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), info, reps, minSeconds, rows }, null, 2));
console.log(`wrote ${file}`);
