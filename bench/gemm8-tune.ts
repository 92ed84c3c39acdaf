// u8 x s8 -> s32 GEMM throughput (GOP/s, 2 ops per multiply-add), medians
// of >= 5 repetitions, per shape, per output type, on 1 and 2 threads, beside
// the VNNI peak measured in the same process (binding.measurePeak) and the
// fp32 sgemm at 1024^3.
//
// Timing runs must hold the exclusive CPU lock:
//   flock -x /tmp/qf-cpu.lock node --import tsx bench/gemm8-tune.ts [options]
// Options:
//   --shapes 1024,cnn,extra   shape groups (default 1024,cnn)
//   --threads 1,2             thread counts (default 1,2)
//   --out s32,u8              epilogues: s32 | f32 | u8 (u8 = scale, bias, relu,
//                             wZeroPoint, requant) (default s32,u8)
//   --variant NAME            force a variant (default: the chosen one)
//   --reps N  --min-seconds S (defaults 5, 0.08)
//   --no-sgemm                skip the fp32 comparison
// Cache blocking can be overridden for tuning (bytes; 0 keeps the default):
//   QUANTFACE_GEMM8_BLOCK=kc_max,b_budget,a_budget
import { randomFillSync } from 'node:crypto';
import { binding } from '../lib/binding.js';
import { median, medianSecondsPerCall } from './lib/timing.js';

const argv = process.argv.slice(2);
const opt = (name: string, def: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : def;
};
const groups = new Set(opt('shapes', '1024,cnn').split(','));
const threadList = opt('threads', '1,2').split(',').map(Number);
const outList = opt('out', 's32,u8').split(',') as ('s32' | 'f32' | 'u8')[];
const variant = opt('variant', '');
const reps = Math.max(5, Number(opt('reps', '5')));
const minSeconds = Number(opt('min-seconds', '0.08'));
const doSgemm = !argv.includes('--no-sgemm');

interface Shape { name: string; m: number; n: number; k: number }
const shapes: Shape[] = [];
if (groups.has('1024')) shapes.push({ name: '1024^3', m: 1024, n: 1024, k: 1024 });
if (groups.has('cnn')) {
  // im2col GEMMs of CNN layers, batch 32, 112x112 input.
  shapes.push(
    { name: '3x3 64->64 @56', m: 100352, n: 64, k: 576 },
    { name: '1x1 64->128 @28', m: 25088, n: 128, k: 64 },
    { name: '1x1 128->512 @14', m: 6272, n: 512, k: 128 },
    { name: 'fc 25088->512', m: 32, n: 512, k: 25088 },
  );
}
if (groups.has('extra')) {
  shapes.push(
    { name: '3x3 128->128 @28', m: 25088, n: 128, k: 1152 },
    { name: '3x3 256->256 @14', m: 6272, n: 256, k: 2304 },
    { name: '3x3 512->512 @7', m: 1568, n: 512, k: 4608 },
    { name: 'conv1 3x3 3->64 @112', m: 401408, n: 64, k: 27 },
    { name: 'odd 1000x1000x1000', m: 1000, n: 1000, k: 1000 },
  );
}

/** Median seconds per call over `reps` repetitions of >= minSeconds each. */
const timeIt = (fn: () => void): number => medianSecondsPerCall(fn, reps, minSeconds);

const info = binding.info();
const b = binding as unknown as Record<string, unknown>;
const hasPeak = typeof b.measurePeak === 'function';
const vnniKind = info.isa.includes('avx512vnni') ? 'vnni_zmm' : 'vnni_ymm';
function vnniPeak(threads: number): number {
  if (!hasPeak) return NaN;
  const v: number[] = [];
  for (let i = 0; i < 3; i++)
    v.push(binding.measurePeak({ kind: vnniKind as never, seconds: 0.05, threads }).opsPerSecond / 1e9);
  return median(v);
}

console.log(
  `gemm_u8s8s32: ${variant || info.kernels.gemm_u8s8s32}  sgemm: ${info.kernels.sgemm ?? '-'}  ` +
    `block override: ${process.env.QUANTFACE_GEMM8_BLOCK ?? '-'}  reps ${reps} x >= ${minSeconds}s`,
);
console.log('shape'.padEnd(22) + 'm'.padStart(7) + 'n'.padStart(6) + 'k'.padStart(7) + ' thr  out   GOP/s   %peak  peak');

for (const threads of threadList) {
  binding.setThreads(threads);
  const peak = vnniPeak(threads);
  if (doSgemm && typeof b.sgemm === 'function') {
    const n = 1024;
    const a = new Float32Array(n * n).map(() => Math.random() - 0.5);
    const bb = new Float32Array(n * n).map(() => Math.random() - 0.5);
    const c = new Float32Array(n * n);
    const t = timeIt(() => binding.sgemm({ m: n, n, k: n, a, b: bb, c }));
    console.log(`sgemm 1024^3 fp32 (${info.kernels.sgemm}), ${threads} thr: ${((2 * n * n * n) / t / 1e9).toFixed(1)} GFLOP/s`);
  }
  for (const s of shapes) {
    const a = new Uint8Array(s.m * s.k);
    randomFillSync(a);
    const w = new Int8Array(s.n * s.k);
    randomFillSync(w);
    const packed = binding.packWeights({ w, n: s.n, k: s.k });
    const ops = 2 * s.m * s.n * s.k;
    const scale = new Float32Array(s.n).map(() => 1e-4 * (1 + Math.random()));
    const bias = new Float32Array(s.n).map(() => Math.random() - 0.5);
    const wZeroPoint = new Int32Array(s.n).map(() => Math.floor(Math.random() * 7) - 3);
    for (const out of outList) {
      let o: Parameters<typeof binding.gemmU8S8S32>[0];
      const common = { a, m: s.m, w: packed, ...(variant ? { variant } : {}) };
      if (out === 's32') o = { ...common, outType: 's32', out: new Int32Array(s.m * s.n) };
      else if (out === 'f32') o = { ...common, outType: 'f32', out: new Float32Array(s.m * s.n), scale, bias };
      else
        o = {
          ...common, outType: 'u8', out: new Uint8Array(s.m * s.n), scale, bias, activation: 'relu',
          aZeroPoint: 128, wZeroPoint, outScale: 0.05, outZeroPoint: 3,
        };
      const t = timeIt(() => binding.gemmU8S8S32(o));
      const gops = ops / t / 1e9;
      console.log(
        s.name.padEnd(22) + String(s.m).padStart(7) + String(s.n).padStart(6) + String(s.k).padStart(7) +
          String(threads).padStart(4) + '  ' + out.padEnd(4) + gops.toFixed(1).padStart(8) +
          (Number.isFinite(peak) ? ((100 * gops) / peak).toFixed(0) + '%' : '-').padStart(7) +
          (Number.isFinite(peak) ? peak.toFixed(0) : '-').padStart(6),
      );
    }
  }
}
binding.setThreads(0);
