/**
 * Convolution bench: GFLOP/s (int8: GOP/s) of conv2d / conv2dBackwardInput /
 * conv2dBackwardWeight / conv2dU8S8 on the layer shapes that dominate face
 * models, 1 and 2 threads, median of clean reps.
 *
 *   flock -x /tmp/qf-cpu.lock node --import tsx bench/conv-tune.ts [--case dw3x3] [--op fwd] [--reps 5] [--threads 1,2] [--variant gemm]
 *
 * QUANTFACE_CONV_BLOCK_KB=<kB> overrides the im2col block size (default 512).
 * A rep is clean when the process got ~all its threads' CPU time (the 2 cores
 * are shared). Peaks (../shared/anchors): fp32 ~220 GFLOP/s per core, int8
 * VNNI ~880 GOP/s per core.
 */
import { binding } from '../lib/binding.js';
import type { Conv2dGeometry, PackedWeights } from '../binding.js';

interface Case { name: string; g: Conv2dGeometry }
const cases: Case[] = [
  { name: 'c3x3 64->64 56x56 b32', g: { n: 32, h: 56, w: 56, c: 64, cout: 64, kh: 3, kw: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 } },
  { name: 'dw3x3 64 56x56 b32 s1', g: { n: 32, h: 56, w: 56, c: 64, cout: 64, kh: 3, kw: 3, groups: 64, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 } },
  { name: 'c1x1 128->64 28x28 b32', g: { n: 32, h: 28, w: 28, c: 128, cout: 64, kh: 1, kw: 1 } },
  { name: 'dw3x3 128 56x56 b32 s2', g: { n: 32, h: 56, w: 56, c: 128, cout: 128, kh: 3, kw: 3, groups: 128, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 } },
  { name: 'gdc7x7 512 7x7 b32', g: { n: 32, h: 7, w: 7, c: 512, cout: 512, kh: 7, kw: 7, groups: 512 } },
  { name: 'c3x3 64->128 56x56 b32 s2', g: { n: 32, h: 56, w: 56, c: 64, cout: 128, kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 } },
  { name: 'c3x3 3->64 112x112 b32 s1', g: { n: 32, h: 112, w: 112, c: 3, cout: 64, kh: 3, kw: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 } },
];
type Op = 'fwd' | 'bwdIn' | 'bwdW' | 'int8';
const ops: Op[] = ['fwd', 'bwdIn', 'bwdW', 'int8'];

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const reps = Number(opt('--reps') ?? 5);
const caseFilter = opt('--case');
const opFilter = opt('--op');
const variant = opt('--variant');
const threadList = (opt('--threads') ?? '1,2').split(',').map(Number);

function fillF32(n: number): Float32Array {
  const a = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = (s / 4294967296) * 2 - 1;
  }
  return a;
}
function fillU8(n: number): Uint8Array {
  const a = new Uint8Array(n);
  let s = 777;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = s >>> 24;
  }
  return a;
}
const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
};

console.log(`# conv bench: reps ${reps}; kernels ${JSON.stringify(binding.info().kernels)}`);
for (const cs of cases) {
  if (caseFilter && !cs.name.includes(caseFilter)) continue;
  const g = { strideH: 1, strideW: 1, padTop: 0, padLeft: 0, padBottom: 0, padRight: 0, dilationH: 1, dilationW: 1, groups: 1, ...cs.g };
  const oh = Math.floor((g.h + g.padTop + g.padBottom - g.dilationH * (g.kh - 1) - 1) / g.strideH) + 1;
  const ow = Math.floor((g.w + g.padLeft + g.padRight - g.dilationW * (g.kw - 1) - 1) / g.strideW) + 1;
  const cg = g.c / g.groups;
  const nx = g.n * g.h * g.w * g.c, nw = g.cout * g.kh * g.kw * cg, no = g.n * oh * ow * g.cout;
  const flop = 2 * g.n * oh * ow * g.cout * g.kh * g.kw * cg;
  const x = fillF32(nx), w = fillF32(nw), bias = fillF32(g.cout), out = new Float32Array(no), gout = fillF32(no);
  const gin = new Float32Array(nx), gw = new Float32Array(nw), gb = new Float32Array(g.cout);
  const xq = fillU8(nx), oq = new Uint8Array(no);
  const wq = new Int8Array(nw).map((_, i) => ((i * 37) % 255) - 127);
  const depthwise = g.groups === g.c && g.cout === g.c;
  let weightQ: PackedWeights | Int8Array | undefined;
  if (depthwise) weightQ = wq;
  else if (g.groups === 1) weightQ = binding.packWeights({ w: wq, n: g.cout, k: g.kh * g.kw * g.c });
  const scale = new Float32Array(g.cout).fill(1 / 4096);
  for (const op of ops) {
    if (opFilter && op !== opFilter) continue;
    if (op === 'int8' && !weightQ) continue;
    const v = op === 'int8' ? undefined : variant;
    const run = (): void => {
      switch (op) {
        case 'fwd': binding.conv2d({ ...g, x, weight: w, bias, out, variant: v }); break;
        case 'bwdIn': binding.conv2dBackwardInput({ ...g, gradOut: gout, weight: w, gradIn: gin, variant: v }); break;
        case 'bwdW': binding.conv2dBackwardWeight({ ...g, x, gradOut: gout, gradWeight: gw, gradBias: gb, variant: v }); break;
        case 'int8':
          binding.conv2dU8S8({ ...g, x: xq, xZeroPoint: 128, weight: weightQ!, outType: 'u8', scale, bias, activation: 'relu', outScale: 0.05, outZeroPoint: 0, out: oq });
          break;
      }
    };
    const row: string[] = [];
    for (const th of threadList) {
      binding.setThreads(th);
      await new Promise((r) => setTimeout(r, 50)); // lets new pool workers start (pool resize race)
      let t0 = performance.now();
      run();
      const once = Math.max(performance.now() - t0, 1e-3);
      const iters = Math.max(1, Math.ceil(60 / once));
      const rates: number[] = [], clean: number[] = [];
      for (let r = 0; r < reps * 3 && clean.length < reps; r++) {
        const u0 = process.cpuUsage();
        t0 = performance.now();
        for (let i = 0; i < iters; i++) run();
        const wall = performance.now() - t0;
        const u = process.cpuUsage(u0);
        const rate = flop / (wall / 1000 / iters) / 1e9;
        rates.push(rate);
        if ((u.user + u.system) / 1000 >= 0.9 * th * wall) clean.push(rate);
      }
      const med = median(clean.length ? clean : rates);
      const peak = (op === 'int8' ? 880 : 220) * th;
      row.push(`${th}T ${med.toFixed(1).padStart(6)} ${op === 'int8' ? 'GOP/s ' : 'GFLOP/s'} (${((100 * med) / peak).toFixed(0).padStart(2)}%, clean ${clean.length}/${rates.length}, ${((flop / med) * 1e-6).toFixed(2)} ms)`);
    }
    console.log(`${cs.name.padEnd(28)} ${op.padEnd(6)} ${row.join('   ')}`);
  }
}
binding.setThreads(0);
