import t, { type Test } from 'tap';
import { binding } from '../lib/binding.js';
import type { GemmU8S8S32Options, Int8OutType, EpilogueActivation, PackedWeights } from '../binding.js';

// u8 x s8 -> s32 GEMM with fused epilogues: every supported variant is
// compared bit for bit with a plain-JS reference and with the _ref variant.
// Integer sums are exact in Number here (|sum| < 2^53); the float epilogue
// is replayed with Math.fround after each IEEE single op (JS computes + - * /
// in double and rounding that to single is the correctly rounded single
// result), so every output type must match exactly.

const SEED = Number(process.env.QF_TEST_SEED ?? 0x6e8a11);
t.comment(`gemm_u8s8 seed ${SEED}`);
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
const randInt = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];

const info = binding.info();
const variants = info.variants.gemm_u8s8s32;
t.ok(variants && variants.length >= 2, 'gemm_u8s8s32 has variants');
t.equal(variants[variants.length - 1].name, 'gemm_u8s8s32_ref', 'reference is last');
const supported = variants.filter((v) => v.supported).map((v) => v.name);
for (const v of variants)
  if (!v.supported) t.test(v.name, { skip: `${v.name}: this CPU lacks its ISA (or QUANTFACE_ISA caps it)` }, async () => {});

/**
 * setThreads(n > 1) then waits a moment: the pool's new workers must be
 * running before the next parallel call (see the report on threadpool.cc).
 */
async function threads(n: number): Promise<void> {
  binding.setThreads(n);
  if (n !== 1) await new Promise((r) => setTimeout(r, 50));
}

/** Round half to even (Math.round rounds half up). */
function rne(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

interface Epi {
  outType: Int8OutType;
  scale?: Float32Array;
  bias?: Float32Array;
  activation?: EpilogueActivation;
  slope?: Float32Array;
  outScale?: number;
  outZeroPoint?: number;
  clampMin?: number;
  clampMax?: number;
}

interface Case extends Epi {
  m: number;
  n: number;
  k: number;
  lda: number;
  ldw: number;
  ldo: number;
  a: Uint8Array;
  w: Int8Array;
  aZeroPoint?: number;
  wZeroPoint?: Int32Array;
}

type Out = Int32Array | Float32Array | Uint8Array | Int8Array;
function newOut(type: Int8OutType, len: number): Out {
  switch (type) {
    case 's32': return new Int32Array(len);
    case 'f32': return new Float32Array(len);
    case 'u8': return new Uint8Array(len);
    case 's8': return new Int8Array(len);
  }
}
const POISON = 0xab;
function poison(o: Out): void {
  new Uint8Array(o.buffer, o.byteOffset, o.byteLength).fill(POISON);
}
function outLen(c: Case): number {
  return c.m > 0 ? (c.m - 1) * c.ldo + c.n + 5 : 3; // a few spare elements after the last row
}

/** The JS reference: poisoned buffer with the m x n results written in. */
function reference(c: Case): Out {
  const out = newOut(c.outType, outLen(c));
  poison(out);
  const q = c.outType === 'u8' || c.outType === 's8';
  const lo = c.clampMin ?? (c.outType === 'u8' ? 0 : -128);
  const hi = c.clampMax ?? (c.outType === 'u8' ? 255 : 127);
  const az = c.aZeroPoint ?? 0;
  const f = Math.fround;
  for (let i = 0; i < c.m; i++) {
    for (let j = 0; j < c.n; j++) {
      const wz = c.wZeroPoint ? c.wZeroPoint[j] : 0;
      let s = 0;
      for (let kk = 0; kk < c.k; kk++) s += (c.a[i * c.lda + kk] - az) * (c.w[j * c.ldw + kk] - wz);
      const acc = s | 0; // int32 (wrap-around; no case here overflows)
      const idx = i * c.ldo + j;
      if (c.outType === 's32') {
        out[idx] = acc;
        continue;
      }
      let y = f(acc);
      if (c.scale) y = f(y * c.scale[j]);
      y = f(y + (c.bias ? c.bias[j] : 0));
      if (c.activation === 'relu') y = y > 0 ? y : 0;
      else if (c.activation === 'prelu' && y < 0) y = f(y * c.slope![j]);
      if (!q) {
        out[idx] = y;
        continue;
      }
      let v = rne(f(y / (c.outScale ?? 1))) + (c.outZeroPoint ?? 0);
      if (!(v >= lo)) v = lo;
      if (v > hi) v = hi;
      out[idx] = v;
    }
  }
  return out;
}

function options(c: Case, pw: PackedWeights, out: Out, variant?: string): GemmU8S8S32Options {
  const o: GemmU8S8S32Options = {
    a: c.a, m: c.m, lda: c.lda, w: pw, out, ldo: c.ldo, outType: c.outType,
  };
  for (const key of ['aZeroPoint', 'wZeroPoint', 'scale', 'bias', 'activation', 'slope', 'outScale', 'outZeroPoint',
    'clampMin', 'clampMax'] as const)
    if (c[key] !== undefined) (o as unknown as Record<string, unknown>)[key] = c[key];
  if (variant) o.variant = variant;
  return o;
}

/** Index of the first difference (bitwise; any NaN equals any NaN), or -1. */
function firstDiff(x: Out, y: Out): number {
  if (x.length !== y.length) return 0;
  if (x instanceof Float32Array) {
    const xb = new Uint32Array(x.buffer, x.byteOffset, x.length);
    const yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
    for (let i = 0; i < x.length; i++)
      if (xb[i] !== yb[i] && !(Number.isNaN(x[i]) && Number.isNaN(y[i]))) return i;
    return -1;
  }
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

function describe(c: Case): string {
  const e = [c.outType, c.scale ? 'scale' : '', c.bias ? 'bias' : '', c.activation ?? '',
    c.aZeroPoint ? `aZp=${c.aZeroPoint}` : '', c.wZeroPoint ? 'wZp' : '',
    c.outScale !== undefined ? `outScale=${c.outScale}` : '', c.outZeroPoint ? `outZp=${c.outZeroPoint}` : '',
    c.clampMin !== undefined ? `clamp=[${c.clampMin},${c.clampMax}]` : ''].filter(Boolean).join(' ');
  return `m=${c.m} n=${c.n} k=${c.k} lda=${c.lda} ldo=${c.ldo} ${e}`;
}

/** Runs every supported variant (and the default) on c; returns the expected output. */
function checkCase(tt: Test, c: Case, label = describe(c)): Out {
  const pw = binding.packWeights({ w: c.w, n: c.n, k: c.k, ldw: c.ldw });
  const want = reference(c);
  const refOut = newOut(c.outType, want.length);
  poison(refOut);
  binding.gemmU8S8S32(options(c, pw, refOut, 'gemm_u8s8s32_ref'));
  let bad = firstDiff(refOut, want);
  tt.equal(bad, -1, `ref vs JS: ${label}` + (bad >= 0 ? ` @${bad}: ${refOut[bad]} != ${want[bad]}` : ''));
  for (const v of [...supported.filter((s) => !s.endsWith('_ref')), '']) {
    const out = newOut(c.outType, want.length);
    poison(out);
    binding.gemmU8S8S32(options(c, pw, out, v || undefined));
    bad = firstDiff(out, refOut);
    tt.equal(bad, -1, `${v || 'default'} vs ref: ${label}` + (bad >= 0 ? ` @${bad}: ${out[bad]} != ${refOut[bad]}` : ''));
  }
  return want;
}

function randomCase(m: number, n: number, k: number, outType: Int8OutType): Case {
  const lda = k + (rand() < 0.3 ? randInt(1, 9) : 0);
  const ldw = k + (rand() < 0.3 ? randInt(1, 5) : 0);
  const ldo = n + (rand() < 0.3 ? randInt(1, 7) : 0);
  const a = new Uint8Array(m > 0 ? (m - 1) * lda + k : 0);
  for (let i = 0; i < a.length; i++) a[i] = randInt(0, 255);
  const w = new Int8Array((n - 1) * ldw + k);
  for (let i = 0; i < w.length; i++) w[i] = randInt(-128, 127);
  const c: Case = { m, n, k, lda, ldw, ldo, a, w, outType };
  if (rand() < 0.7) c.aZeroPoint = randInt(0, 255);
  if (rand() < 0.7) c.wZeroPoint = Int32Array.from({ length: n }, () => (rand() < 0.2 ? 0 : randInt(-128, 127)));
  if (outType === 's32') return c;
  // acc has a spread of about 74 * 74 * sqrt(k): scale it to y ~ +-40.
  const unit = 40 / (74 * 74 * Math.sqrt(k));
  let os = 1;
  if (rand() < 0.8) c.scale = Float32Array.from({ length: n }, () => unit * (0.5 + rand()) * (rand() < 0.1 ? -1 : 1));
  else os = 1 / unit; // scale = 1: y = acc
  if (rand() < 0.7) c.bias = Float32Array.from({ length: n }, () => (rand() - 0.5) * 20);
  c.activation = pick(['none', 'relu', 'prelu'] as const);
  if (c.activation === 'prelu') c.slope = Float32Array.from({ length: n }, () => (rand() - 0.3) * 0.5);
  if (outType === 'u8' || outType === 's8') {
    c.outScale = os * pick([0.125, 0.3, 0.5, 1, 1.7]);
    const [tmin, tmax] = outType === 'u8' ? [0, 255] : [-128, 127];
    const r = rand();
    if (r < 0.25) [c.clampMin, c.clampMax] = outType === 'u8' ? [0, 15] : [-32, 31];
    else if (r < 0.4) [c.clampMin, c.clampMax] = outType === 'u8' ? [3, 200] : [-8, 7];
    else if (r < 0.5) [c.clampMin, c.clampMax] = [tmin, tmax];
    if (rand() < 0.6) c.outZeroPoint = randInt(outType === 'u8' ? 0 : -20, outType === 'u8' ? 40 : 20);
  }
  return c;
}

const SIZES = [1, 3, 7, 63, 65, 129, 257];
const OUT_TYPES: Int8OutType[] = ['s32', 'f32', 'u8', 's8'];

t.test('random sizes, every out type, zero points, epilogues: all variants bit-exact', async (tt) => {
  binding.setThreads(1);
  // Each size appears as m, n and k; the rest random. MACs stay modest for the JS reference.
  const cases: [number, number, number][] = [];
  for (const s of SIZES) {
    cases.push([s, pick(SIZES.slice(0, 5)), pick(SIZES)]);
    cases.push([pick(SIZES.slice(0, 5)), s, pick(SIZES)]);
    cases.push([pick(SIZES.slice(0, 5)), pick(SIZES.slice(0, 5)), s]);
  }
  cases.push([257, 129, 65], [65, 257, 129], [33, 48, 300], [14, 32, 64], [28, 64, 8], [15, 33, 5]);
  let i = 0;
  for (const [m, n, k] of cases) {
    checkCase(tt, randomCase(m, n, k, OUT_TYPES[i % 4]));
    i++;
  }
});

t.test('k split into several blocks (k > 2048), k tails, several row blocks', async (tt) => {
  binding.setThreads(1);
  // (300 x 2000 and 500 x 2100: several blocks of A rows, with and without a k split)
  for (const [m, n, k, type] of [[20, 40, 5003, 'u8'], [3, 17, 2049, 's32'], [29, 33, 4097, 'f32'], [15, 48, 6002, 's8'],
    [300, 20, 2000, 'u8'], [500, 24, 2100, 's32']] as const)
    checkCase(tt, randomCase(m, n, k, type));
});

t.test('saturation edges: 255 x -128 (and 255 x 127) with k = 4099', async (tt) => {
  binding.setThreads(1);
  const m = 5, n = 19, k = 4099;
  const a = new Uint8Array(m * k).fill(255);
  for (const wv of [-128, 127]) {
    const w = new Int8Array(n * k).fill(wv);
    const base: Case = { m, n, k, lda: k, ldw: k, ldo: n, a, w, outType: 's32' };
    const want = checkCase(tt, base, `all 255 x all ${wv}, s32`);
    tt.equal(want[0], 4099 * 255 * wv, 'the sum is the exact product');
    // (w - wZeroPoint) = -255: |acc| = 4099 * 255 * 255
    const zp = new Int32Array(n).fill(wv === -128 ? 127 : -128);
    const want2 = checkCase(tt, { ...base, wZeroPoint: zp }, `all 255 x all ${wv}, wZp, s32`);
    tt.equal(want2[0], 4099 * 255 * (wv - zp[0]));
    checkCase(tt, { ...base, outType: 'f32', scale: new Float32Array(n).fill(1e-6) }, `all 255 x ${wv}, f32`);
    checkCase(tt, { ...base, outType: 'u8', outScale: 1000 }, `all 255 x ${wv}, u8 (clamps)`);
    checkCase(tt, { ...base, outType: 's8', outScale: 1e6, outZeroPoint: 3 }, `all 255 x ${wv}, s8`);
  }
  // Alternating extremes, with an activation zero point at the other end.
  const a2 = Uint8Array.from({ length: m * k }, (_, i) => (i % 3 ? 255 : 0));
  const w2 = Int8Array.from({ length: n * k }, (_, i) => (i % 5 ? -128 : 127));
  checkCase(tt, { m, n, k, lda: k, ldw: k, ldo: n, a: a2, w: w2, outType: 's32', aZeroPoint: 255 }, 'alternating, aZp 255');
});

t.test('round half to even on exact .5 ties (u8 and s8)', async (tt) => {
  binding.setThreads(1);
  const m = 17, n = 35, k = 9;
  let ties = 0;
  // y / outScale lands on x.5 exactly: acc / 2; (acc + 0.25) / 0.5; (acc + 1.5) / 3 (not a power of two).
  for (const [outScale, biasV] of [[2, 0], [0.5, 0.25], [3, 1.5], [6, 3]] as const) {
    for (const outType of ['u8', 's8'] as const) {
      const c = randomCase(m, n, k, 's32');
      c.outType = outType;
      c.wZeroPoint = undefined;
      c.aZeroPoint = 0;
      // small sums so that the results stay inside the clamp range
      for (let i = 0; i < c.a.length; i++) c.a[i] = randInt(0, 6);
      for (let i = 0; i < c.w.length; i++) c.w[i] = randInt(-3, 3);
      c.outScale = outScale;
      c.bias = new Float32Array(n).fill(biasV);
      c.outZeroPoint = outType === 'u8' ? 60 : 0;
      const want = checkCase(tt, c, `ties: outScale ${outScale}, bias ${biasV}, ${outType}`);
      // count the ties the reference met
      const plain = reference({ ...c, outType: 's32', bias: undefined, outScale: undefined, outZeroPoint: undefined });
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          const y = ((plain[i * c.ldo + j] as number) + biasV) / outScale;
          if (y - Math.floor(y) === 0.5) ties++;
        }
      tt.ok(want.length > 0);
    }
  }
  tt.ok(ties > 200, `exact ties were exercised (${ties})`);
});

t.test('requant of values within an ulp of a rounding tie (y / outScale vs y * (1 / outScale))', async (tt) => {
  binding.setThreads(1);
  // Find float32 y with rne(fround(y / s)) != rne(fround(y * fround(1 / s))): a
  // kernel that multiplies by the reciprocal without a fallback gets these wrong.
  const f = Math.fround;
  const ys: number[] = [];
  const s = f(0.3);
  const r = f(1 / s);
  const buf = new Float32Array(1);
  const bits = new Int32Array(buf.buffer);
  for (let h = -120; h < 120; h++) {
    buf[0] = (h + 0.5) * s;
    const y0 = bits[0];
    for (let d = -8; d <= 8; d++) {
      bits[0] = y0 + d;
      const y = buf[0];
      if (rne(f(y / s)) !== rne(f(y * r))) ys.push(y);
    }
  }
  tt.ok(ys.length >= 20, `found ${ys.length} such values`);
  const n = ys.length, m = 5, k = 11;
  const c: Case = {
    m, n, k, lda: k, ldw: k, ldo: n, a: new Uint8Array(m * k), w: Int8Array.from({ length: n * k }, () => randInt(-128, 127)),
    outType: 's8', bias: Float32Array.from(ys), outScale: s,
  };
  checkCase(tt, c, 'near-tie values, s8'); // acc = 0: y = bias
  checkCase(tt, { ...c, outType: 'u8', outZeroPoint: 128 }, 'near-tie values, u8');
});

t.test('special float epilogue inputs: NaN/inf bias, zero and negative scales, -0', async (tt) => {
  binding.setThreads(1);
  const m = 9, n = 21, k = 13;
  const base = randomCase(m, n, k, 's32');
  const scale = Float32Array.from({ length: n }, (_, j) => [0, -0, -1e-3, 1e-3, 1e30, -2.5][j % 6]);
  const bias = Float32Array.from({ length: n }, (_, j) => [NaN, Infinity, -Infinity, -0, 0, 1e38, 0.5][j % 7]);
  const slope = Float32Array.from({ length: n }, (_, j) => [0, -1, 0.25, NaN][j % 4]);
  for (const outType of ['f32', 'u8', 's8'] as const)
    for (const activation of ['none', 'relu', 'prelu'] as const)
      checkCase(tt, { ...base, outType, scale, bias, activation, slope, outScale: outType === 'f32' ? undefined : 0.75 }, `specials ${outType} ${activation}`);
  // acc = 0 times a negative scale is -0; the (default 0) bias makes it +0
  const zeroA = { ...base, a: new Uint8Array(base.a.length), aZeroPoint: 0, bias: undefined };
  const negScale = Float32Array.from({ length: n }, (_, j) => (j % 2 ? -0.5 : 0.5));
  const z = checkCase(tt, { ...zeroA, outType: 'f32', scale: negScale }, 'f32: 0 * negative scale, no bias');
  tt.ok(Object.is(z[1], 0), '+0, not -0');
  checkCase(tt, { ...zeroA, outType: 'f32', scale: negScale, bias: new Float32Array(n).fill(-0) }, 'f32: -0 + -0 = -0');
  checkCase(tt, { ...zeroA, outType: 'f32' }, 'f32: no scale, no bias');
  // relu with the clamp range entirely above or below the zero point
  const plain = { ...base, scale: Float32Array.from({ length: n }, () => 1e-3), bias: undefined };
  for (const [outType, outZeroPoint, clampMin, clampMax] of [['u8', 20, 0, 15], ['u8', 3, 9, 30], ['s8', -10, -5, 5], ['s8', 7, -20, 2]] as const)
    for (const activation of ['relu', 'none'] as const)
      checkCase(tt, { ...plain, outType, activation, outZeroPoint, clampMin, clampMax, outScale: 0.01 },
        `${outType} ${activation} zp ${outZeroPoint} clamp [${clampMin}, ${clampMax}]`);
  // tiny / huge outScale (the reciprocal shortcut must not be used there)
  for (const outScale of [1e-40, 3e-39, 1e38, 2.5e-38])
    checkCase(tt, { ...base, outType: 'u8', scale, bias: undefined, outScale }, `u8 outScale ${outScale}`);
});

t.test('threads 1 and 2 give identical results (row and column splits, several k blocks)', async (tt) => {
  const shapes: [number, number, number, Int8OutType][] = [[300, 100, 200, 'u8'], [20, 200, 2100, 's32'], [129, 257, 130, 'f32'], [1000, 16, 300, 's8']];
  for (const [m, n, k, type] of shapes) {
    const c = randomCase(m, n, k, type);
    const pw = binding.packWeights({ w: c.w, n, k, ldw: c.ldw });
    binding.setThreads(1);
    const want = checkCase(tt, c, `1 thread: ${describe(c)}`);
    await threads(2);
    for (const v of supported) {
      const out = newOut(type, want.length);
      poison(out);
      binding.gemmU8S8S32(options(c, pw, out, v));
      const bad = firstDiff(out, want);
      tt.equal(bad, -1, `2 threads ${v}: ${describe(c)}`);
    }
  }
  await threads(0);
});

t.test('async form gives the same result; concurrent calls', async (tt) => {
  await threads(2);
  const cs = [randomCase(150, 70, 90, 'u8'), randomCase(40, 130, 300, 's32'), randomCase(64, 64, 64, 'f32')];
  const runs = cs.map((c) => {
    const pw = binding.packWeights({ w: c.w, n: c.n, k: c.k, ldw: c.ldw });
    const want = reference(c);
    const out = newOut(c.outType, want.length);
    poison(out);
    return { c, want, out, p: binding.gemmU8S8S32Async(options(c, pw, out)) };
  });
  for (const r of runs) {
    tt.equal(await r.p, undefined);
    tt.equal(firstDiff(r.out, r.want), -1, `async: ${describe(r.c)}`);
  }
  // validation errors are thrown synchronously by the async form too
  tt.throws(() => binding.gemmU8S8S32Async({ ...options(cs[0], runs[0].p as never, runs[0].out) }), TypeError);
  await threads(0);
});

t.test('packWeights: PackedWeights object', async (tt) => {
  const w = Int8Array.from({ length: 5 * 7 }, (_, i) => (i % 7) - 3);
  const pw = binding.packWeights({ w, n: 5, k: 7 });
  tt.equal(pw.n, 5);
  tt.equal(pw.k, 7);
  tt.equal(pw.bytes, 16 * 8, 'n padded to 16, k to 4');
  const big = binding.packWeights({ w: new Int8Array(33 * 100), n: 33, k: 100 });
  tt.equal(big.bytes, 48 * 100);
  const Ctor = (pw as unknown as { constructor: new (...args: unknown[]) => unknown }).constructor;
  tt.throws(() => new Ctor(), TypeError, 'not constructible from JS');
  tt.throws(() => new Ctor({}), TypeError);
  // ldw
  const w2 = Int8Array.from({ length: 3 * 10 }, (_, i) => i - 15);
  const c: Case = { m: 4, n: 3, k: 6, lda: 6, ldw: 10, ldo: 3, a: Uint8Array.from({ length: 24 }, (_, i) => i * 9), w: w2, outType: 's32' };
  checkCase(tt, c, 'ldw > k');
});

t.test('argument validation', async (tt) => {
  const n = 6, k = 10, m = 4;
  const w = new Int8Array(n * k).fill(1);
  const pw = binding.packWeights({ w, n, k });
  const a = new Uint8Array(m * k).fill(2);
  const ok: GemmU8S8S32Options = { a, m, w: pw, out: new Int32Array(m * n), outType: 's32' };
  binding.gemmU8S8S32(ok);
  tt.equal((ok.out as Int32Array)[0], 20, 'valid call works');
  const bad = (patch: Record<string, unknown>) => () => binding.gemmU8S8S32({ ...ok, ...patch } as GemmU8S8S32Options);
  const u8 = (patch: Record<string, unknown>) => bad({ outType: 'u8', out: new Uint8Array(m * n), ...patch });

  // packWeights
  tt.throws(() => binding.packWeights({ w: new Uint8Array(60) as unknown as Int8Array, n, k }), { name: 'TypeError', message: /w/ });
  tt.throws(() => binding.packWeights({ w: new Int8Array(59), n, k }), { name: 'RangeError', message: /w/ });
  tt.throws(() => binding.packWeights({ w, n: 0, k }), { name: 'RangeError', message: /\bn\b/ });
  tt.throws(() => binding.packWeights({ w, k } as never), { name: 'TypeError', message: /\bn\b/ });
  tt.throws(() => binding.packWeights({ w, n, k, ldw: 9 }), { name: 'RangeError', message: /ldw/ });
  tt.throws(() => binding.packWeights({ w, n: 2.5, k }), { name: 'RangeError', message: /\bn\b/ });

  // weights
  tt.throws(bad({ w: { n, k, bytes: 64 } }), { name: 'TypeError', message: /\bw\b.*PackedWeights/ }, 'plain object as w');
  tt.throws(bad({ w: w }), { name: 'TypeError', message: /\bw\b/ }, 'raw Int8Array as w');
  tt.throws(bad({ w: undefined }), { name: 'TypeError', message: /\bw\b/ });
  tt.throws(bad({ k: 9 }), { name: 'RangeError', message: /\bk\b/ }, 'k mismatch');
  tt.throws(bad({ n: 7 }), { name: 'RangeError', message: /\bn\b/ }, 'n mismatch');
  binding.gemmU8S8S32({ ...ok, n, k } as GemmU8S8S32Options);
  // A
  tt.throws(bad({ a: new Int8Array(m * k) }), { name: 'TypeError', message: /\ba\b/ });
  tt.throws(bad({ a: new Uint8Array(m * k - 1) }), { name: 'RangeError', message: /\ba\b/ });
  tt.throws(bad({ lda: k - 1 }), { name: 'RangeError', message: /lda/ });
  tt.throws(bad({ lda: k + 1 }), { name: 'RangeError', message: /\ba\b/ }, 'a too short for lda');
  tt.throws(bad({ m: -1 }), { name: 'RangeError', message: /\bm\b/ });
  tt.throws(bad({ m: '4' }), { name: 'TypeError', message: /\bm\b/ });
  tt.throws(bad({ aZeroPoint: 256 }), { name: 'RangeError', message: /aZeroPoint/ });
  tt.throws(bad({ aZeroPoint: 1.5 }), { name: 'RangeError', message: /aZeroPoint/ });
  tt.throws(bad({ wZeroPoint: new Int32Array(n + 1) }), { name: 'RangeError', message: /wZeroPoint/ });
  tt.throws(bad({ wZeroPoint: new Float32Array(n) }), { name: 'TypeError', message: /wZeroPoint/ });
  // output
  tt.throws(bad({ outType: undefined }), { name: 'TypeError', message: /outType/ });
  tt.throws(bad({ outType: 'u16' }), { name: 'RangeError', message: /outType/ });
  tt.throws(bad({ outType: 'u8' }), { name: 'TypeError', message: /out\b.*Uint8Array/ }, 'Int32Array out for u8');
  tt.throws(bad({ outType: 'f32' }), { name: 'TypeError', message: /out\b.*Float32Array/ });
  tt.throws(bad({ outType: 's8', out: new Uint8Array(m * n) }), { name: 'TypeError', message: /out\b.*Int8Array/ });
  tt.throws(bad({ out: new Int32Array(m * n - 1) }), { name: 'RangeError', message: /out\b/ });
  tt.throws(bad({ ldo: n - 1 }), { name: 'RangeError', message: /ldo/ });
  tt.throws(bad({ ldo: n + 2 }), { name: 'RangeError', message: /out\b/ }, 'out too short for ldo');
  tt.throws(bad({ out: undefined }), { name: 'TypeError', message: /out\b/ });
  // epilogue
  tt.throws(bad({ bias: new Float32Array(n) }), { name: 'RangeError', message: /bias.*s32/ }, 'bias with s32');
  tt.throws(bad({ activation: 'relu' }), { name: 'RangeError', message: /activation/ });
  tt.throws(bad({ outType: 'f32', out: new Float32Array(m * n), outScale: 2 }), { name: 'RangeError', message: /outScale/ });
  tt.throws(u8({ scale: new Float32Array(n - 1) }), { name: 'RangeError', message: /scale/ });
  tt.throws(u8({ bias: new Float64Array(n) }), { name: 'TypeError', message: /bias/ });
  tt.throws(u8({ activation: 'gelu' }), { name: 'RangeError', message: /activation/ });
  tt.throws(u8({ activation: 'prelu' }), { name: 'TypeError', message: /slope/ });
  tt.throws(u8({ activation: 'prelu', slope: new Float32Array(n + 1) }), { name: 'RangeError', message: /slope/ });
  tt.throws(u8({ outScale: 0 }), { name: 'RangeError', message: /outScale/ });
  tt.throws(u8({ outScale: -1 }), { name: 'RangeError', message: /outScale/ });
  tt.throws(u8({ outScale: NaN }), { name: 'RangeError', message: /outScale/ });
  tt.throws(u8({ outScale: 1e-50 }), { name: 'RangeError', message: /outScale/ }, 'rounds to 0 as float32');
  tt.throws(u8({ outScale: 'x' }), { name: 'TypeError', message: /outScale/ });
  tt.throws(u8({ outZeroPoint: 256 }), { name: 'RangeError', message: /outZeroPoint/ });
  tt.throws(u8({ clampMin: -1 }), { name: 'RangeError', message: /clampMin/ });
  tt.throws(u8({ clampMax: 256 }), { name: 'RangeError', message: /clampMax/ });
  tt.throws(u8({ clampMin: 10, clampMax: 9 }), { name: 'RangeError', message: /clampMin/ });
  tt.throws(bad({ outType: 's8', out: new Int8Array(m * n), clampMax: 128 }), { name: 'RangeError', message: /clampMax/ });
  tt.throws(bad({ outType: 's8', out: new Int8Array(m * n), clampMin: -129 }), { name: 'RangeError', message: /clampMin/ });
  tt.throws(bad({ variant: 'nope' }), { name: 'RangeError', message: /variant/ });
  tt.throws(() => (binding.gemmU8S8S32 as (x: unknown) => void)(undefined), TypeError);
  // m = 0 is a no-op
  const o0 = new Int32Array(3).fill(7);
  binding.gemmU8S8S32({ a: new Uint8Array(0), m: 0, w: pw, out: o0, outType: 's32' });
  tt.same(Array.from(o0), [7, 7, 7], 'm = 0 writes nothing');
});
