/**
 * Quantization kernels bench: GB/s (bytes read + written per call) of every
 * variant on 16M elements, per tensor and per channel, 1 and 2 threads,
 * median of several reps. These kernels are memory-bound: compare with the
 * copy anchor printed first (TypedArray.set of the same float32 tensor, one
 * thread) and with the machine's DRAM triad (~35 GB/s 1 thread, ~58 GB/s 2;
 * ../shared/anchors).
 *
 *   flock -x /tmp/qf-cpu.lock node --import tsx bench/quant-tune.ts [--n 16777216] [--reps 7] [--threads 1,2] [--variant avx512,avx2] [--kernel quantize]
 *
 * At this size the AVX-512 variants write with non-temporal stores (calls of
 * >= 8 MiB read + written; native/quant.cc): QUANTFACE_STREAM_BYTES=-1 turns
 * that off for comparison. Figures seen (Zen 5, 1 thread, quiet machine):
 * quantize 44, dequantize 52, fakeQuantize 53 (+mask 50), backward 56,
 * minMax 38 GB/s against a 45 GB/s copy; 2 threads 51-65 GB/s.
 */
import { binding } from '../lib/binding.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const N = Number(opt('--n') ?? 16 * 1024 * 1024);
const reps = Number(opt('--reps') ?? 7);
const threadList = (opt('--threads') ?? '1,2').split(',').map(Number);
const variantFilter = opt('--variant')?.split(',');
const kernelFilter = opt('--kernel');
const info = binding.info();

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

function time(fn: () => void, r = reps): number {
  fn(); // warm up (page faults, caches)
  const ts: number[] = [];
  for (let i = 0; i < r; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return median(ts);
}

let seed = 12345;
const x = new Float32Array(N);
for (let i = 0; i < N; i++) {
  seed = (seed * 1103515245 + 12345) >>> 0;
  x[i] = ((seed / 4294967296) * 2 - 1) * 3;
}
const q8 = new Uint8Array(N);
const out = new Float32Array(N);
const mask = new Uint8Array(N);
const gi = new Float32Array(N);
for (let i = 0; i < N; i++) mask[i] = i % 3 === 0 ? 0 : 1;

interface Layout { name: string; channels: number; inner: number }
const layouts: Layout[] = [
  { name: 'per tensor', channels: 1, inner: 1 },
  { name: 'NHWC C=64 (inner 1)', channels: 64, inner: 1 },
  { name: 'OHWI cout=512 (inner 32768)', channels: 512, inner: N / 512 },
];
const params = (L: Layout) => ({
  scale: new Float32Array(L.channels).fill(0.025),
  zeroPoint: new Int32Array(L.channels).fill(128),
  quantMin: 0,
  quantMax: 255,
  channels: L.channels,
  inner: L.inner,
});

const gb = (bytes: number, s: number): string => (bytes / s / 1e9).toFixed(1).padStart(6);
const before = binding.getThreads();
/**
 * setThreads, then give the new workers time to start: native/threadpool.cc
 * (as of this writing) deadlocks when a job is submitted before a freshly
 * created worker has read the pool's generation counter.
 */
async function setThreads(n: number): Promise<void> {
  if (binding.getThreads() === n) return;
  binding.setThreads(n);
  await new Promise((r) => setTimeout(r, 50));
}

await setThreads(1);
const copy = new Float32Array(N);
const tCopy = time(() => copy.set(x));
console.log(`# quant tune: N=${N} (${(N * 4) / 2 ** 20} MiB float32), reps ${reps} (median), threads ${threadList.join(',')}, ` +
  `QUANTFACE_STREAM_BYTES=${process.env.QUANTFACE_STREAM_BYTES ?? '(default 8 MiB: non-temporal stores at this size)'}`);
console.log(`# anchor: Float32Array.set copy ${gb(8 * N, tCopy)} GB/s (read + write, 1 thread)`);
console.log('kernel                  layout                        variant                         ' + threadList.map((t) => `  ${t}thr GB/s`).join(''));

interface Bench {
  kernel: string;
  bytes: number;
  layouts: Layout[];
  run: (L: Layout, variant: string) => void;
}
const benches: Bench[] = [
  {
    kernel: 'quantize', bytes: 5 * N, layouts,
    run: (L, variant) => binding.quantize({ x, out: q8, ...params(L), variant }),
  },
  {
    kernel: 'dequantize', bytes: 5 * N, layouts,
    run: (L, variant) => {
      const p = params(L);
      binding.dequantize({ q: q8, out, scale: p.scale, zeroPoint: p.zeroPoint, channels: p.channels, inner: p.inner, variant });
    },
  },
  {
    kernel: 'fake_quantize', bytes: 8 * N, layouts,
    run: (L, variant) => binding.fakeQuantize({ x, out, ...params(L), variant }),
  },
  {
    kernel: 'fake_quantize+mask', bytes: 9 * N, layouts,
    run: (L, variant) => binding.fakeQuantize({ x, out, mask, ...params(L), variant }),
  },
  {
    kernel: 'fake_quantize_backward', bytes: 9 * N, layouts: [layouts[0]],
    run: (_L, variant) => binding.fakeQuantizeBackward({ gradOut: x, gradIn: gi, mask, variant }),
  },
  {
    kernel: 'min_max', bytes: 4 * N, layouts,
    run: (L, variant) => {
      const mn = new Float32Array(L.channels), mx = new Float32Array(L.channels);
      binding.minMax({ x, min: mn, max: mx, channels: L.channels, inner: L.inner, variant });
    },
  },
];

for (const b of benches) {
  const kname = b.kernel.replace('+mask', '');
  if (kernelFilter && !b.kernel.includes(kernelFilter)) continue;
  const vs = info.variants[kname].filter((v) => v.supported).map((v) => v.name)
    .filter((v) => !variantFilter || variantFilter.some((f) => v.endsWith(`_${f}`) || v === f));
  for (const L of b.layouts) {
    // Variants interleaved rep by rep, so drifts of the shared machine hit all alike.
    const cells = new Map<string, string[]>(vs.map((v) => [v, []]));
    for (const th of threadList) {
      await setThreads(th);
      const ts = new Map<string, number[]>(vs.map((v) => [v, []]));
      for (const v of vs) b.run(L, v); // warm up
      for (let r = 0; r < reps; r++)
        for (const v of vs) {
          if (v.endsWith('_ref') && r >= 3) continue; // the scalar reference is slow: fewer reps
          const t0 = process.hrtime.bigint();
          b.run(L, v);
          ts.get(v)!.push(Number(process.hrtime.bigint() - t0) / 1e9);
        }
      for (const v of vs) {
        const s = median(ts.get(v)!);
        cells.get(v)!.push(`${gb(b.bytes, s)} (${(s * 1e3).toFixed(1).padStart(5)} ms)`);
      }
    }
    for (const v of vs) console.log(`${b.kernel.padEnd(24)}${L.name.padEnd(30)}${v.padEnd(32)}${cells.get(v)!.join('  ')}`);
  }
}
await setThreads(before);
