// Same-process A/B of two builds of the addon (e.g. before and after a
// native refactor): both .node files are loaded into one process and every
// measurement alternates between them (A, B, A, B, ...), so drifting host
// load hits both alike. fp32 sgemm and u8s8s32 GEMM (s32 out) at 1024^3 and
// the MobileFaceNet / iResNet-50 layer shapes of bench/kernels.ts, 1 and 2
// threads; prints medians and B/A time ratios (< 1: B faster).
//   node --import tsx bench/ab-binding.ts A.node B.node [--threads 1,2] [--rounds 7] [--shapes 1024,mfn,r50]
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import type { Binding } from '../binding.js';
import { median, secondsPerCall } from './lib/timing.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
};
const files = argv.filter((a, i) => a.endsWith('.node') && !argv[i - 1]?.startsWith('--'));
if (files.length !== 2) {
  console.error('usage: ab-binding.ts A.node B.node [--threads 1,2] [--rounds 7] [--shapes 1024,mfn,r50]');
  process.exit(2);
}
const require = createRequire(import.meta.url);
const bins = files.map((f) => require(resolve(f)) as Binding);
const threads = opt('threads', '1,2').split(',').map(Number);
const rounds = Number(opt('rounds', '7'));
const groups = new Set(opt('shapes', '1024,mfn,r50').split(','));

const shapes: { name: string; m: number; n: number; k: number }[] = [];
if (groups.has('1024')) shapes.push({ name: '1024^3', m: 1024, n: 1024, k: 1024 });
if (groups.has('mfn'))
  shapes.push(
    { name: 'mfn 1x1 64->128 @56', m: 100352, n: 128, k: 64 },
    { name: 'mfn 1x1 128->256 @14', m: 6272, n: 256, k: 128 },
    { name: 'mfn 1x1 128->512 @7', m: 1568, n: 512, k: 128 },
  );
if (groups.has('r50'))
  shapes.push(
    { name: 'r50 3x3 64->64 @56', m: 100352, n: 64, k: 576 },
    { name: 'r50 3x3 256->256 @14', m: 6272, n: 256, k: 2304 },
    { name: 'r50 fc 25088->512', m: 32, n: 512, k: 25088 },
  );

let seed = 7;
const rnd = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296;
/** Seconds per call: calls repeated for >= 0.1 s. */
const timeOnce = (fn: () => void): number => secondsPerCall(fn, 0.1);

console.log(`A = ${files[0]} (${bins[0]!.info().kernels.sgemm}, ${bins[0]!.info().kernels.gemm_u8s8s32})`);
console.log(`B = ${files[1]} (${bins[1]!.info().kernels.sgemm}, ${bins[1]!.info().kernels.gemm_u8s8s32})`);
console.log(`medians of ${rounds} alternating rounds; GF/s or GOP/s; B/A = time ratio`);
console.log('shape                       thr   sgemm A    sgemm B   B/A    int8 A     int8 B   B/A');
for (const s of shapes) {
  const a = Float32Array.from({ length: s.m * s.k }, () => rnd() - 0.5);
  const b = Float32Array.from({ length: s.k * s.n }, () => rnd() - 0.5);
  const c = new Float32Array(s.m * s.n);
  const a8 = Uint8Array.from({ length: s.m * s.k }, () => Math.floor(rnd() * 256));
  const w8 = Int8Array.from({ length: s.n * s.k }, () => Math.floor(rnd() * 256) - 128);
  const out = new Int32Array(s.m * s.n);
  const packed = bins.map((bn) => bn.packWeights({ w: w8, n: s.n, k: s.k }));
  const ops = 2 * s.m * s.n * s.k;
  for (const th of threads) {
    for (const bn of bins) bn.setThreads(th);
    const tf: number[][] = [[], []];
    const ti: number[][] = [[], []];
    for (let r = 0; r < rounds; r++)
      for (let x = 0; x < 2; x++) {
        const bn = bins[x]!;
        if (r === 0) bn.sgemm({ m: s.m, n: s.n, k: s.k, a, b, c });  // warm-up
        tf[x]!.push(timeOnce(() => bn.sgemm({ m: s.m, n: s.n, k: s.k, a, b, c })));
        ti[x]!.push(timeOnce(() => bn.gemmU8S8S32({ a: a8, m: s.m, w: packed[x]!, out, outType: 's32' })));
      }
    const [fa, fb, ia, ib] = [median(tf[0]!), median(tf[1]!), median(ti[0]!), median(ti[1]!)];
    console.log(
      `${s.name.padEnd(27)} ${String(th).padStart(3)} ${(ops / fa / 1e9).toFixed(1).padStart(9)} ${(ops / fb / 1e9).toFixed(1).padStart(9)} ${(fb / fa).toFixed(3).padStart(6)} ` +
        `${(ops / ia / 1e9).toFixed(1).padStart(9)} ${(ops / ib / 1e9).toFixed(1).padStart(9)} ${(ib / ia).toFixed(3).padStart(6)}`,
    );
  }
}
