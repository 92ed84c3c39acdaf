// Runtime kernels (native/rt*.cc): rtAdd, rtAffine, rtLut every variant
// against plain-JS references (written with Math.fround to follow the float32
// operations the spec names) and against the _ref variant, bit for bit;
// argument validation; async forms; programs (rtProgram / rtRun): each
// operation against the standalone kernels, profile, singleThread.
import t from 'tap';
import { binding } from '../lib/binding.js';
import type { RtOp } from '../binding.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 0x7e11);
t.comment(`runtime-kernels seed ${SEED}`);
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(SEED);
const randInt = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const randF32 = (n: number, s = 4): Float32Array => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * s);
const randU8 = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => randInt(0, 255));

function rne(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}
interface Q {
  scale: number;
  zp: number;
}
interface OutQ extends Q {
  lo: number;
  hi: number;
}
const deq = (q: number, p: Q): number => Math.fround((q - p.zp) * Math.fround(p.scale));
function quant(y: number, p: OutQ): number {
  if (Number.isNaN(y)) return p.lo;
  const t = rne(Math.fround(y / Math.fround(p.scale))) + p.zp;
  return t < p.lo ? p.lo : t > p.hi ? p.hi : t;
}

function variants(kernel: string): { name: string; supported: boolean }[] {
  return binding.info().variants[kernel] ?? [];
}

function eqBits(a: Float32Array | Uint8Array, b: Float32Array | Uint8Array): number {
  const ua = a instanceof Float32Array ? new Uint32Array(a.buffer, a.byteOffset, a.length) : a;
  const ub = b instanceof Float32Array ? new Uint32Array(b.buffer, b.byteOffset, b.length) : b;
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i] && !(Number.isNaN(a[i]!) && Number.isNaN(b[i]!))) return i;
  return -1;
}

type Kind = 'u8' | 'f32';
function operand(kind: Kind, n: number): { arr: Uint8Array | Float32Array; q?: Q } {
  if (kind === 'f32') return { arr: randF32(n) };
  return { arr: randU8(n), q: { scale: Math.fround(0.001 + rand() * 0.05), zp: randInt(0, 255) } };
}
const poison = (k: Kind, n: number): Uint8Array | Float32Array => (k === 'u8' ? new Uint8Array(n).fill(0xab) : new Float32Array(n).fill(NaN));

t.test('rtAdd: every variant vs the JS reference and rt_add_ref, all operand types', async (t) => {
  const vs = variants('rt_add');
  t.ok(vs.some((v) => v.name === 'rt_add_ref'), 'has a reference variant');
  for (const count of [1, 7, 15, 16, 17, 63, 129, 1000, 40000]) {
    for (const ak of ['u8', 'f32'] as Kind[])
      for (const bk of ['u8', 'f32'] as Kind[])
        for (const ok of ['u8', 'f32'] as Kind[]) {
          const a = operand(ak, count);
          const b = operand(bk, count);
          if (ak === 'f32' && count > 3) (a.arr as Float32Array)[3] = NaN;
          const oq: OutQ | undefined = ok === 'u8' ? { scale: Math.fround(0.01 + rand() * 0.1), zp: randInt(0, 255), lo: randInt(0, 20), hi: randInt(200, 255) } : undefined;
          const expect = ok === 'u8' ? new Uint8Array(count) : new Float32Array(count);
          for (let i = 0; i < count; i++) {
            const av = a.q ? deq(a.arr[i]!, a.q) : a.arr[i]!;
            const bv = b.q ? deq(b.arr[i]!, b.q) : b.arr[i]!;
            const y = Math.fround(av + bv);
            expect[i] = oq ? quant(y, oq) : y;
          }
          const opts = {
            a: a.arr, b: b.arr,
            ...(a.q ? { aScale: a.q.scale, aZeroPoint: a.q.zp } : {}),
            ...(b.q ? { bScale: b.q.scale, bZeroPoint: b.q.zp } : {}),
            ...(oq ? { outScale: oq.scale, outZeroPoint: oq.zp, clampMin: oq.lo, clampMax: oq.hi } : {}),
          };
          for (const v of vs) {
            if (!v.supported) {
              t.skip(`${v.name}: not supported on this CPU`, () => {});
              continue;
            }
            const out = poison(ok, count);
            binding.rtAdd({ ...opts, out, variant: v.name });
            const bad = eqBits(out, expect);
            if (bad >= 0) t.fail(`${v.name} ${ak}+${bk}->${ok} n=${count}: element ${bad} is ${out[bad]}, expected ${expect[bad]}`);
          }
        }
  }
  t.pass('all variants bit-identical to the reference');
  // async and in place
  const a = randF32(1000);
  const b = randF32(1000);
  const ref = new Float32Array(1000);
  binding.rtAdd({ a, b, out: ref, variant: 'ref' });
  const out = new Float32Array(1000).fill(NaN);
  await binding.rtAddAsync({ a, b, out });
  t.equal(eqBits(out, ref), -1, 'async form gives the same result');
  const inplace = Float32Array.from(a);
  binding.rtAdd({ a: inplace, b, out: inplace });
  t.equal(eqBits(inplace, ref), -1, 'in place (out = a)');
});

t.test('rtAdd: saturation, clamp range, NaN and infinities', async (t) => {
  const a = Float32Array.of(1e9, -1e9, NaN, Infinity, -Infinity, 0.5, 1.5, 2.5, -0.5);
  const b = new Float32Array(a.length);
  for (const v of variants('rt_add').filter((v) => v.supported)) {
    const out = new Uint8Array(a.length).fill(0xab);
    binding.rtAdd({ a, b, out, outScale: 1, outZeroPoint: 10, clampMin: 3, clampMax: 250, variant: v.name });
    // 0.5 -> rne 0 -> 10; 1.5 -> 2 -> 12; 2.5 -> 2 -> 12; -0.5 -> -0 -> 10
    t.same([...out], [250, 3, 3, 250, 3, 10, 12, 12, 10], `${v.name}: clamps, NaN -> clampMin, ties to even`);
  }
});

t.test('rtAffine: every variant vs the JS reference, activations, u8/f32 in and out', async (t) => {
  const vs = variants('rt_affine');
  t.ok(vs.some((v) => v.name === 'rt_affine_ref'), 'has a reference variant');
  for (const C of [1, 3, 7, 16, 17, 64, 129])
    for (const rows of [1, 5, 33])
      for (const act of ['none', 'relu', 'prelu', 'clamp'] as const)
        for (const xk of ['u8', 'f32'] as Kind[])
          for (const ok of ['u8', 'f32'] as Kind[]) {
            const count = rows * C;
            const x = operand(xk, count);
            if (xk === 'f32' && count > 2) (x.arr as Float32Array)[1] = NaN;
            const hasScale = rand() < 0.7;
            const hasBias = rand() < 0.7;
            const scale = hasScale ? randF32(C, 2) : undefined;
            const bias = hasBias ? randF32(C, 1) : undefined;
            const slope = act === 'prelu' ? randF32(C, 0.5) : undefined;
            const lo = Math.fround(-rand());
            const hi = Math.fround(rand() * 2);
            const oq: OutQ | undefined = ok === 'u8' ? { scale: Math.fround(0.01 + rand() * 0.05), zp: randInt(0, 255), lo: 0, hi: 255 } : undefined;
            const expect = ok === 'u8' ? new Uint8Array(count) : new Float32Array(count);
            for (let r = 0; r < rows; r++)
              for (let c = 0; c < C; c++) {
                const i = r * C + c;
                const v = x.q ? deq(x.arr[i]!, x.q) : x.arr[i]!;
                // float((double)v * a + b): JS numbers are doubles
                let y = Math.fround(v * (scale ? scale[c]! : 1) + (bias ? bias[c]! : 0));
                if (act === 'relu') y = y > 0 ? y : 0;
                else if (act === 'prelu') y = y > 0 ? y : Math.fround(y * slope![c]!);
                else if (act === 'clamp') y = y < lo ? lo : y > hi ? hi : y;
                expect[i] = oq ? quant(y, oq) : y;
              }
            const opts = {
              x: x.arr, channels: C, activation: act,
              ...(x.q ? { xScale: x.q.scale, xZeroPoint: x.q.zp } : {}),
              ...(scale ? { scale } : {}), ...(bias ? { bias } : {}), ...(slope ? { slope } : {}),
              ...(act === 'clamp' ? { lo, hi } : {}),
              ...(oq ? { outScale: oq.scale, outZeroPoint: oq.zp } : {}),
            };
            for (const v of vs) {
              if (!v.supported) {
                t.skip(`${v.name}: not supported on this CPU`, () => {});
                continue;
              }
              const out = poison(ok, count);
              binding.rtAffine({ ...opts, out, variant: v.name });
              const bad = eqBits(out, expect);
              if (bad >= 0) t.fail(`${v.name} C=${C} rows=${rows} ${act} ${xk}->${ok}: element ${bad} is ${out[bad]}, expected ${expect[bad]}`);
            }
          }
  t.pass('all variants bit-identical to the reference');
  const x = randF32(64 * 10);
  const ref = new Float32Array(x.length);
  const sc = randF32(64);
  binding.rtAffine({ x, channels: 64, scale: sc, activation: 'relu', out: ref, variant: 'ref' });
  const out = new Float32Array(x.length).fill(NaN);
  await binding.rtAffineAsync({ x, channels: 64, scale: sc, activation: 'relu', out });
  t.equal(eqBits(out, ref), -1, 'async form gives the same result');
});

t.test('rtLut: per-channel tables, u8 and f32', async (t) => {
  for (const C of [1, 3, 17, 64]) {
    const rows = randInt(1, 50);
    const x = randU8(rows * C);
    const t8 = randU8(C * 256);
    const t32 = randF32(C * 256);
    const e8 = new Uint8Array(x.length);
    const e32 = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      e8[i] = t8[(i % C) * 256 + x[i]!]!;
      e32[i] = t32[(i % C) * 256 + x[i]!]!;
    }
    for (const v of variants('rt_lut').filter((v) => v.supported)) {
      const o8 = new Uint8Array(x.length).fill(0xab);
      binding.rtLut({ x, channels: C, table: t8, out: o8, variant: v.name });
      t.equal(eqBits(o8, e8), -1, `${v.name} u8 table C=${C}`);
      const o32 = new Float32Array(x.length).fill(NaN);
      await binding.rtLutAsync({ x, channels: C, table: t32, out: o32, variant: v.name });
      t.equal(eqBits(o32, e32), -1, `${v.name} f32 table C=${C} (async)`);
    }
    const inplace = Uint8Array.from(x);
    binding.rtLut({ x: inplace, channels: C, table: t8, out: inplace });
    t.equal(eqBits(inplace, e8), -1, `in place C=${C}`);
  }
});

t.test('argument validation names the argument', async (t) => {
  const f = new Float32Array(8);
  const u = new Uint8Array(8);
  t.throws(() => binding.rtAdd(undefined as never), TypeError, 'no options object');
  t.throws(() => binding.rtAdd({ a: [1, 2] as never, b: f, out: f }), { name: 'TypeError', message: /rtAdd: a/ });
  t.throws(() => binding.rtAdd({ a: new Int32Array(8) as never, b: f, out: f }), { name: 'TypeError', message: /rtAdd: a/ });
  t.throws(() => binding.rtAdd({ a: f, b: f, out: f, count: 9 }), { name: 'RangeError', message: /count/ });
  t.throws(() => binding.rtAdd({ a: f, b: f, out: f, aScale: 2 }), { name: 'RangeError', message: /aScale/ }, 'scale on an f32 operand');
  t.throws(() => binding.rtAdd({ a: u, b: f, out: f, aScale: 0 }), { name: 'RangeError', message: /aScale/ });
  t.throws(() => binding.rtAdd({ a: u, b: f, out: f, aZeroPoint: 256 }), { name: 'RangeError', message: /aZeroPoint/ });
  t.throws(() => binding.rtAdd({ a: f, b: f, out: f, outScale: 1 }), { name: 'RangeError', message: /outScale/ }, 'outScale on an f32 output');
  t.throws(() => binding.rtAdd({ a: f, b: f, out: u, clampMin: 9, clampMax: 3 }), { name: 'RangeError', message: /clampMin/ });
  t.throws(() => binding.rtAdd({ a: f, b: f, out: u, variant: 'nope' }), { name: 'RangeError', message: /variant/ });
  t.throws(() => binding.rtAdd({ a: f.subarray(0, 4), b: f, out: f.subarray(2, 6), count: 4 }), { name: 'RangeError', message: /out/ }, 'partial overlap');
  t.throws(() => binding.rtAffine({ x: f, out: f, channels: 3 }), { name: 'RangeError', message: /count/ }, 'count not a multiple of channels');
  t.throws(() => binding.rtAffine({ x: f, out: f, channels: 4, scale: new Float32Array(3) }), { name: 'RangeError', message: /scale/ });
  t.throws(() => binding.rtAffine({ x: f, out: f, activation: 'prelu' }), { name: 'TypeError', message: /slope/ });
  t.throws(() => binding.rtAffine({ x: f, out: f, activation: 'gelu' as never }), { name: 'RangeError', message: /activation/ });
  t.throws(() => binding.rtAffine({ x: f, out: f, activation: 'clamp', lo: 2, hi: 1 }), { name: 'RangeError', message: /lo/ });
  t.throws(() => binding.rtAffine({ x: f, out: f, slope: f }), { name: 'RangeError', message: /slope/ }, 'slope without prelu');
  t.throws(() => binding.rtLut({ x: u, table: new Uint8Array(255), out: u }), { name: 'RangeError', message: /table/ });
  t.throws(() => binding.rtLut({ x: u, table: new Float32Array(256), out: u }), { name: 'TypeError', message: /out/ });
  t.throws(() => binding.rtProgram({ arenaBytes: 16, ops: [{ op: 'nope' } as never] }), { name: 'RangeError', message: /ops\[0\]: op/ });
  t.throws(() => binding.rtProgram({ arenaBytes: 16, ops: [{ op: 'add', count: 8, a: 0, aType: 'f32', b: 0, bType: 'f32', out: 0, outType: 'f32' }] }), { name: 'RangeError', message: /ops\[0\]: a/ }, 'past the arena');
  t.throws(() => binding.rtProgram({ arenaBytes: 64, ops: [{ op: 'add', count: 4, a: 2, aType: 'f32', b: 0, bType: 'f32', out: 16, outType: 'f32' }] }), { name: 'RangeError', message: /multiple of 4/ });
  t.throws(() => binding.rtProgram({ arenaBytes: 64, ops: 3 as never }), { name: 'TypeError', message: /ops/ });
  const prog = binding.rtProgram({ arenaBytes: 64, ops: [] });
  t.throws(() => binding.rtRun({ program: {} as never, arena: new Uint8Array(64) }), { name: 'TypeError', message: /program/ });
  t.throws(() => binding.rtRun({ program: prog, arena: new Uint8Array(63) }), { name: 'RangeError', message: /arena/ });
  t.throws(() => binding.rtRun({ program: prog, arena: new Uint8Array(new ArrayBuffer(80), 4, 64) }), { name: 'RangeError', message: /aligned/ });
});

t.test('programs: every operation matches its standalone kernel; profile; singleThread', async (t) => {
  // conv_u8 (groups 1 and depthwise), conv_f32, add, affine, lut chained through one arena.
  const n = 2, h = 9, w = 7, c = 5, cout = 6;
  const oh = 5, ow = 4; // 3x3 stride 2 pad 1
  const x = randU8(n * h * w * c);
  const wq = Int8Array.from({ length: cout * 9 * c }, () => randInt(-128, 127));
  const wzp = Int32Array.from({ length: cout }, () => randInt(-5, 5));
  const packed = binding.packWeights({ w: wq, n: cout, k: 9 * c });
  const geom = { n, h, w, c, cout, kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 };
  const scale = Float32Array.from({ length: cout }, () => 1e-3 * (1 + rand()));
  const bias = randF32(cout, 0.5);
  const slope = randF32(cout, 0.3);
  const dww = Int8Array.from({ length: cout * 9 }, () => randInt(-128, 127));
  const wf = randF32(cout * 9 * cout, 0.2);
  const lut = randU8(cout * 256);
  // expected, step by step with the standalone kernels
  const y1 = new Uint8Array(n * oh * ow * cout);
  binding.conv2dU8S8({ ...geom, x, xZeroPoint: 7, weight: packed, wZeroPoint: wzp, outType: 'u8', scale, bias, activation: 'prelu', slope, outScale: 0.05, outZeroPoint: 100, out: y1 });
  const g2 = { n, h: oh, w: ow, c: cout, cout, kh: 3, kw: 3, groups: cout, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 };
  const y2 = new Float32Array(n * oh * ow * cout);
  binding.conv2dU8S8({ ...g2, x: y1, xZeroPoint: 100, weight: dww, outType: 'f32', scale, out: y2 });
  const g3 = { n, h: oh, w: ow, c: cout, cout, kh: 3, kw: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 };
  const y3 = new Float32Array(n * oh * ow * cout);
  binding.conv2d({ ...g3, x: y2, weight: wf, bias, out: y3 });
  const y4 = new Uint8Array(y3.length);
  binding.rtAdd({ a: y3, b: y1, bScale: 0.05, bZeroPoint: 100, out: y4, outScale: 0.1, outZeroPoint: 128 });
  const y5 = new Uint8Array(y4.length);
  binding.rtLut({ x: y4, channels: cout, table: lut, out: y5 });
  const y6 = new Float32Array(y5.length);
  binding.rtAffine({ x: y5, xScale: 0.02, xZeroPoint: 3, channels: cout, scale, bias, activation: 'relu', out: y6 });
  // the program
  const xo = 0, o1 = 1024, o2 = 2048, o3 = 4096, o4 = 6144, o6 = 7168, arenaBytes = 8192;
  const ops: RtOp[] = [
    { op: 'conv_u8', name: 'c1', ...geom, x: xo, xZeroPoint: 7, weight: packed, wZeroPoint: wzp, outType: 'u8', scale, bias, activation: 'prelu', slope, outScale: 0.05, outZeroPoint: 100, out: o1 },
    { op: 'conv_u8', name: 'dw', ...g2, x: o1, xZeroPoint: 100, weight: dww, outType: 'f32', scale, out: o2 },
    { op: 'conv_f32', name: 'f', ...g3, x: o2, weight: wf, bias, out: o3 },
    { op: 'add', count: y4.length, a: o3, aType: 'f32', b: o1, bType: 'u8', bScale: 0.05, bZeroPoint: 100, out: o4, outType: 'u8', outScale: 0.1, outZeroPoint: 128 },
    { op: 'lut', count: y4.length, channels: cout, x: o4, table: lut, out: o4 },
    { op: 'affine', count: y4.length, channels: cout, x: o4, xType: 'u8', xScale: 0.02, xZeroPoint: 3, scale, bias, activation: 'relu', out: o6, outType: 'f32' },
  ];
  const prog = binding.rtProgram({ arenaBytes, ops });
  t.equal(prog.length, ops.length);
  t.equal(prog.arenaBytes, arenaBytes);
  // arrays are copied at rtProgram() time
  scale.fill(123);
  const runs: { name: string; run: (a: Uint8Array, p?: Float64Array) => Promise<void> | void }[] = [
    { name: 'rtRun', run: (arena, profile) => binding.rtRun({ program: prog, arena, ...(profile ? { profile } : {}) }) },
    { name: 'rtRunAsync', run: (arena) => binding.rtRunAsync({ program: prog, arena }) },
    { name: 'singleThread', run: (arena) => binding.rtRun({ program: prog, arena, singleThread: true }) },
  ];
  for (const r of runs) {
    const arena = new Uint8Array(new ArrayBuffer(arenaBytes)).fill(0xab);
    arena.set(x, xo);
    const profile = new Float64Array(ops.length).fill(-1);
    await r.run(arena, profile);
    t.equal(eqBits(arena.subarray(o1, o1 + y1.length), y1), -1, `${r.name}: conv_u8`);
    t.equal(eqBits(new Float32Array(arena.buffer, o2, y2.length), y2), -1, `${r.name}: depthwise conv_u8`);
    t.equal(eqBits(new Float32Array(arena.buffer, o3, y3.length), y3), -1, `${r.name}: conv_f32`);
    t.equal(eqBits(arena.subarray(o4, o4 + y5.length), y5), -1, `${r.name}: add then lut in place`);
    t.equal(eqBits(new Float32Array(arena.buffer, o6, y6.length), y6), -1, `${r.name}: affine`);
    if (r.name === 'rtRun') t.ok([...profile].every((s) => s >= 0), 'profile has a time per operation');
  }
});

t.test('rtConvInput: every variant bit-identical to the reference, reference vs float64', async (t) => {
  const vs = variants('rt_conv_input');
  t.ok(vs.some((v) => v.name === 'rt_conv_input_ref'), 'has a reference variant');
  const cases = [
    { n: 2, h: 9, w: 11, c: 3, cout: 17, kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 },
    { n: 1, h: 7, w: 7, c: 3, cout: 64, kh: 3, kw: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 },
    { n: 3, h: 6, w: 13, c: 1, cout: 5, kh: 5, kw: 3, strideW: 2, padTop: 2, padLeft: 0, padBottom: 1, padRight: 2 },
    { n: 1, h: 12, w: 10, c: 4, cout: 33, kh: 3, kw: 3, dilationH: 2, dilationW: 2, padTop: 2, padLeft: 2, padBottom: 2, padRight: 2 },
    { n: 2, h: 5, w: 5, c: 3, cout: 16, kh: 1, kw: 1 },
    { n: 1, h: 16, w: 16, c: 3, cout: 72, kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1 },
  ];
  for (const g0 of cases) {
    const g = { strideH: 1, strideW: 1, padTop: 0, padLeft: 0, padBottom: 0, padRight: 0, dilationH: 1, dilationW: 1, ...g0 };
    const oh = Math.floor((g.h + g.padTop + g.padBottom - g.dilationH * (g.kh - 1) - 1) / g.strideH) + 1;
    const ow = Math.floor((g.w + g.padLeft + g.padRight - g.dilationW * (g.kw - 1) - 1) / g.strideW) + 1;
    const x = randU8(g.n * g.h * g.w * g.c);
    const table = randF32(g.c * 256, 1);
    const weight = randF32(g.cout * g.kh * g.kw * g.c, 0.5);
    const convBias = randF32(g.cout, 0.2);
    const outN = g.n * oh * ow * g.cout;
    // float64 reference of the convolution (before the epilogue)
    const exact = new Float64Array(outN);
    const mag = new Float64Array(outN);
    for (let n = 0; n < g.n; n++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++)
          for (let j = 0; j < g.cout; j++) {
            const o = ((n * oh + oy) * ow + ox) * g.cout + j;
            for (let ky = 0; ky < g.kh; ky++) {
              const iy = oy * g.strideH - g.padTop + ky * g.dilationH;
              if (iy < 0 || iy >= g.h) continue;
              for (let kx = 0; kx < g.kw; kx++) {
                const ix = ox * g.strideW - g.padLeft + kx * g.dilationW;
                if (ix < 0 || ix >= g.w) continue;
                for (let ci = 0; ci < g.c; ci++) {
                  const p = table[ci * 256 + x[((n * g.h + iy) * g.w + ix) * g.c + ci]!]! * weight[((j * g.kh + ky) * g.kw + kx) * g.c + ci]!;
                  exact[o] += p;
                  mag[o] += Math.abs(p);
                }
              }
            }
          }
    const terms = g.kh * g.kw * g.c;
    // no epilogue, f32 out: the reference within the fp32 summation bound
    {
      const out = new Float32Array(outN).fill(NaN);
      binding.rtConvInput({ ...g, x, table, weight, out, variant: 'ref' });
      let worst = 0;
      for (let i = 0; i < outN; i++) worst = Math.max(worst, Math.abs(out[i]! - exact[i]!) / ((terms + 2) * 2 ** -24 * mag[i]! + 1e-30));
      // an fp32 sum of k products (fused multiply-adds, any order) is within (k + 2) 2^-24 sum|terms| of the exact value
      t.ok(worst <= 1, `ref within the fp32 summation bound (${worst.toFixed(3)} of it), c=${g.c} cout=${g.cout} k=${g.kh}x${g.kw}`);
    }
    for (const act of ['none', 'relu', 'prelu', 'clamp'] as const)
      for (const ok of ['u8', 'f32'] as Kind[]) {
        const scale = rand() < 0.5 ? randF32(g.cout, 2) : undefined;
        const bias = rand() < 0.5 ? randF32(g.cout, 0.5) : undefined;
        const slope = act === 'prelu' ? randF32(g.cout, 0.5) : undefined;
        const opts = {
          ...g, x, table, weight, convBias, activation: act,
          ...(scale ? { scale } : {}), ...(bias ? { bias } : {}), ...(slope ? { slope } : {}),
          ...(act === 'clamp' ? { lo: -0.5, hi: 0.75 } : {}),
          ...(ok === 'u8' ? { outScale: 0.02, outZeroPoint: 128 } : {}),
        };
        const ref = poison(ok, outN);
        binding.rtConvInput({ ...opts, out: ref, variant: 'ref' });
        for (const v of vs) {
          if (!v.supported) {
            t.skip(`${v.name}: not supported on this CPU`, () => {});
            continue;
          }
          const out = poison(ok, outN);
          binding.rtConvInput({ ...opts, out, variant: v.name });
          const bad = eqBits(out, ref);
          if (bad >= 0) t.fail(`${v.name} cout=${g.cout} ${act} ->${ok}: element ${bad} is ${out[bad]}, ref ${ref[bad]}`);
        }
        if (ok === 'f32' && act === 'none' && !scale && !bias) {
          let worst = 0;
          for (let i = 0; i < outN; i++) worst = Math.max(worst, Math.abs(ref[i]! - (exact[i]! + convBias[i % g.cout]!)) / ((terms + 3) * 2 ** -24 * (mag[i]! + Math.abs(convBias[i % g.cout]!)) + 1e-30));
          t.ok(worst <= 1, 'conv bias added after the sum');
        }
      }
  }
  t.pass('all variants bit-identical to the reference');
  const g = { n: 1, h: 8, w: 8, c: 3, cout: 8, kh: 3, kw: 3 };
  const x = randU8(8 * 8 * 3);
  const table = randF32(768);
  const weight = randF32(8 * 27);
  const a = new Float32Array(6 * 6 * 8);
  const b = new Float32Array(6 * 6 * 8).fill(NaN);
  binding.rtConvInput({ ...g, x, table, weight, out: a });
  await binding.rtConvInputAsync({ ...g, x, table, weight, out: b });
  t.equal(eqBits(a, b), -1, 'async form gives the same result');
  t.throws(() => binding.rtConvInput({ ...g, x, table: new Float32Array(10), weight, out: a }), { name: 'RangeError', message: /table/ });
  t.throws(() => binding.rtConvInput({ ...g, groups: 1, c: 65, x: new Uint8Array(8 * 8 * 65), table: new Float32Array(65 * 256), weight: new Float32Array(8 * 9 * 65), out: a }), { name: 'RangeError', message: /c must be at most 64/ });
  t.throws(() => binding.rtConvInput({ ...g, x, table, weight: new Float32Array(5), out: a }), { name: 'RangeError', message: /weight/ });
  t.throws(() => binding.rtConvInput({ ...g, x, table, weight, out: new Float32Array(10) }), { name: 'RangeError', message: /out/ });
});
