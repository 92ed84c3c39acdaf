import t from 'tap';
import { binding } from '../lib/binding.js';
import { chooseQParams, quantRange, roundHalfEven, MIN_SCALE } from '../lib/quant/qparams.js';

// ------------------------------------------------------------------ helpers
const SEED = Number(process.env.QF_TEST_SEED ?? (Date.now() % 2147483647));
t.comment(`seed ${SEED} (rerun with QF_TEST_SEED=${SEED})`);

function mulberry32(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let r = Math.imul(a ^ (a >>> 15), 1 | a);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(SEED);
const randInt = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1)); // inclusive

/** An independent round-half-even for the reference (float32 inputs): not the library's. */
function rneRef(v: number): number {
  if (!Number.isFinite(v) || Math.abs(v) >= 2 ** 23) return v; // already an integer (or NaN/Inf)
  const tr = Math.trunc(v);
  const frac = Math.abs(v - tr);
  let r = tr;
  if (frac > 0.5 || (frac === 0.5 && tr % 2 !== 0)) r = tr + Math.sign(v);
  return r === 0 ? (v < 0 || Object.is(v, -0) ? -0 : 0) : r;
}

/** First index where two float arrays differ bit-wise (any NaN equals any NaN), or -1. */
function firstFloatDiff(a: Float32Array, b: Float32Array, n = a.length): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, n), ub = new Uint32Array(b.buffer, b.byteOffset, n);
  for (let i = 0; i < n; i++) {
    if (ua[i] === ub[i]) continue;
    if (Number.isNaN(a[i]) && Number.isNaN(b[i])) continue;
    return i;
  }
  return -1;
}
function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>, n = a.length): number {
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return -1;
}
function describeDiff(i: number, x: Float32Array | null, got: ArrayLike<number>, want: ArrayLike<number>): string {
  if (i < 0) return '';
  return ` at ${i}: x=${x ? x[i] : '-'} got ${got[i]} want ${want[i]}`;
}

type VariantName = string;
/** The subset of a tap Test used by helpers. */
interface Reporter {
  ok(v: unknown, msg: string): unknown;
  skip(name: string, cb: () => void): unknown;
}
function variantsOf(t: Reporter, kernel: string): VariantName[] {
  const vs = binding.info().variants[kernel];
  t.ok(vs && vs.length >= 2 && vs[vs.length - 1].name === `${kernel}_ref`, `${kernel}: variants listed, ref last`);
  const out: VariantName[] = [];
  for (const v of vs ?? []) {
    if (v.supported) out.push(v.name);
    else t.skip(`${v.name}: not supported on this CPU (or capped by QUANTFACE_ISA)`, () => {});
  }
  return out;
}

interface Layout {
  name: string;
  channels: number;
  inner: number;
  n: number;
}

interface Params {
  scale: Float32Array;
  zeroPoint: Int32Array;
  quantMin: number;
  quantMax: number;
}

function randomParams(channels: number, quantMin: number, quantMax: number): Params {
  const scale = new Float32Array(channels);
  const zeroPoint = new Int32Array(channels);
  for (let c = 0; c < channels; c++) {
    // Powers of two make (k + 0.5) * scale exact, so x / scale is an exact tie.
    scale[c] = rand() < 0.5 ? 2 ** -randInt(0, 12) : Math.fround(Math.exp(-9 + 11 * rand()));
    const u = rand();
    zeroPoint[c] = u < 0.2 ? quantMin : u < 0.3 ? quantMax : randInt(quantMin, quantMax);
  }
  return { scale, zeroPoint, quantMin, quantMax };
}

const chan = (L: Layout, i: number): number => Math.floor(i / L.inner) % L.channels;

/** Inputs that hit ties, clamping, specials, -0, near-range values. */
function randomX(L: Layout, p: Params): Float32Array {
  const x = new Float32Array(L.n);
  for (let i = 0; i < L.n; i++) {
    const c = chan(L, i);
    const s = p.scale[c];
    const lo = p.quantMin - p.zeroPoint[c], hi = p.quantMax - p.zeroPoint[c];
    const u = rand();
    let v: number;
    if (u < 0.35) v = (lo - 3 + (hi - lo + 6) * rand()) * s;
    else if (u < 0.55) v = (randInt(lo - 2, hi + 1) + 0.5) * s; // exact tie when s is a power of two
    else if (u < 0.62) v = (rand() < 0.5 ? -1 : 1) * 10 ** (3 + 27 * rand());
    else if (u < 0.7) {
      const sp = [NaN, Infinity, -Infinity, 0, -0, 1e-42, -1e-42, -0.3 * s, 0.3 * s, -0.5 * s, 0.5 * s, 3.4e38, -3.4e38];
      v = sp[randInt(0, sp.length - 1)];
    } else v = (rand() * 4 - 2) * s;
    x[i] = v;
  }
  return x;
}

/** Plain-JS reference of quantize / fakeQuantize (Math.fround = float32 arithmetic). */
function reference(L: Layout, p: Params, x: Float32Array) {
  const q = new Int32Array(L.n), fake = new Float32Array(L.n), mask = new Uint8Array(L.n);
  let ties = 0, clamped = 0;
  for (let i = 0; i < L.n; i++) {
    const c = chan(L, i);
    const s = p.scale[c], z = p.zeroPoint[c];
    const d = Math.fround(x[i] / s); // float64 division then rounding = IEEE float32 division
    if (Number.isFinite(d) && Math.abs(d - Math.trunc(d)) === 0.5) ties++;
    const r = rneRef(d);
    const lo = p.quantMin - z, hi = p.quantMax - z;
    if (Number.isNaN(r)) {
      q[i] = z;
      fake[i] = NaN;
      mask[i] = 0;
      continue;
    }
    mask[i] = lo <= r && r <= hi ? 1 : 0;
    if (!mask[i]) clamped++;
    const rc = r < lo ? lo : r > hi ? hi : r;
    q[i] = rc + z;
    fake[i] = Math.fround(rc * s);
  }
  return { q, fake, mask, ties, clamped };
}

const LAYOUTS: Layout[] = [
  { name: 'per tensor n=1', channels: 1, inner: 1, n: 1 },
  { name: 'per tensor n=7', channels: 1, inner: 1, n: 7 },
  { name: 'per tensor n=63', channels: 1, inner: 1, n: 63 },
  { name: 'per tensor n=129', channels: 1, inner: 1, n: 129 },
  { name: 'per tensor n=1000', channels: 1, inner: 1, n: 1000 },
  { name: 'OHWI cout=5 3x3x7 (inner 63)', channels: 5, inner: 63, n: 5 * 63 },
  { name: 'OHWI cout=7 3x3x8 (inner 72)', channels: 7, inner: 72, n: 7 * 72 },
  { name: 'OHWI cout=3 1x1x129', channels: 3, inner: 129, n: 3 * 129 * 2 },
  { name: 'depthwise OHWI c=13 3x3x1 (inner 9)', channels: 13, inner: 9, n: 13 * 9 },
  { name: 'NHWC C=3 (inner 1)', channels: 3, inner: 1, n: 3 * 37 },
  { name: 'NHWC C=17 (inner 1)', channels: 17, inner: 1, n: 17 * 23 },
  { name: 'NHWC C=4100 (inner 1, no expansion)', channels: 4100, inner: 1, n: 4100 * 2 },
  { name: 'channels=1 inner=7', channels: 1, inner: 7, n: 7 * 3 },
];
// >= 1.7M elements: split over threads, and large enough (>= 8 MiB read +
// written) for the non-temporal-store paths.
const BIG: Layout[] = [
  { name: 'per tensor n=1000003 (threads)', channels: 1, inner: 1, n: 1000003 },
  { name: 'per tensor n=1700003 (threads, streaming stores)', channels: 1, inner: 1, n: 1700003 },
  { name: 'NHWC C=64 n=1.8M (threads, streaming stores)', channels: 64, inner: 1, n: 64 * 28125 },
  { name: 'OHWI cout=256 inner=3*3*13 (threads)', channels: 256, inner: 117, n: 256 * 117 * 34 },
  { name: 'channels=300000 inner=4 (long period, runs)', channels: 300000, inner: 4, n: 1200000 },
];

interface Range {
  name: string;
  signed: boolean;
  quantMin: number;
  quantMax: number;
}
const RANGES: Range[] = [];
for (let bits = 2; bits <= 8; bits++) {
  RANGES.push({ name: `u${bits}`, signed: false, ...quantRange(bits, false) });
  RANGES.push({ name: `s${bits}`, signed: true, ...quantRange(bits, true) });
}
RANGES.push({ name: 's8 narrow', signed: true, ...quantRange(8, true, true) });
RANGES.push({ name: 'u8 [3, 200]', signed: false, quantMin: 3, quantMax: 200 });

// ------------------------------------------------------------------ quantize
t.test('quantize: every variant vs JS reference and vs _ref, bit-exact', async (t) => {
  const variants = variantsOf(t, 'quantize');
  let ties = 0, clamped = 0;
  const cases: Array<[Layout, Range]> = [];
  for (const L of LAYOUTS) for (const R of RANGES) if (rand() < 0.35 || L.n <= 7) cases.push([L, R]);
  for (const L of BIG) cases.push([L, RANGES[randInt(0, RANGES.length - 1)]]);
  cases.push([LAYOUTS[4], RANGES[RANGES.length - 3]]); // at least u8 and s8 once
  cases.push([LAYOUTS[10], RANGES[RANGES.length - 4]]);
  for (const [L, R] of cases) {
    const p = randomParams(L.channels, R.quantMin, R.quantMax);
    const x = randomX(L, p);
    const ref = reference(L, p, x);
    ties += ref.ties;
    clamped += ref.clamped;
    const want = R.signed ? Int8Array.from(ref.q) : Uint8Array.from(ref.q);
    let refOut: Int8Array | Uint8Array | null = null;
    for (const v of variants) {
      const out = R.signed ? new Int8Array(L.n) : new Uint8Array(L.n);
      out.fill(0xab);
      binding.quantize({ x, out, ...p, channels: L.channels, inner: L.inner, variant: v });
      const d = firstDiff(out, want);
      t.equal(d, -1, `${v} ${L.name} ${R.name} vs JS${describeDiff(d, x, out, want)}`);
      if (v.endsWith('_ref')) refOut = out;
      else {
        const ro = R.signed ? new Int8Array(L.n) : new Uint8Array(L.n);
        binding.quantize({ x, out: ro, ...p, channels: L.channels, inner: L.inner, variant: 'ref' });
        t.equal(firstDiff(out, ro), -1, `${v} ${L.name} ${R.name} vs quantize_ref`);
      }
    }
    t.ok(refOut !== null || variants.length === 0, 'the reference variant ran');
  }
  t.ok(ties > 100, `exact .5 ties exercised (${ties})`);
  t.ok(clamped > 100, `clamped values exercised (${clamped})`);
});

t.test('quantize: hand-checked values (ties to even, clamping, NaN -> zeroPoint)', async (t) => {
  const x = new Float32Array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 300, -300, NaN, Infinity, -Infinity, -0, 1e30]);
  const want = [10, 12, 12, 10, 8, 8, 255, 0, 10, 255, 0, 10, 255];
  for (const v of variantsOf(t, 'quantize')) {
    const out = new Uint8Array(x.length).fill(0xab);
    binding.quantize({ x, out, scale: new Float32Array([1]), zeroPoint: new Int32Array([10]), quantMin: 0, quantMax: 255, variant: v });
    t.same(Array.from(out), want, v);
    const o8 = new Int8Array(x.length);
    binding.quantize({ x, out: o8, scale: new Float32Array([0.5]), zeroPoint: new Int32Array([-1]), quantMin: -8, quantMax: 7, variant: v });
    // x/0.5 = 1,3,5,-1,-3,-5,600,-600,NaN,+Inf,-Inf,-0,2e30 -> +zp -1, clamp [-8,7]
    t.same(Array.from(o8), [0, 2, 4, -2, -4, -6, 7, -8, -1, 7, -8, -1, 7], `${v} s4`);
  }
});

// ------------------------------------------------------------------ fakeQuantize
t.test('fakeQuantize: every variant vs JS reference and vs _ref, out and mask bit-exact', async (t) => {
  const variants = variantsOf(t, 'fake_quantize');
  const wide: Range[] = [
    { name: 'wide [-30000, 30000]', signed: true, quantMin: -30000, quantMax: 30000 },
    { name: 'near 2^24 [2^24-65536, 2^24-1]', signed: true, quantMin: 2 ** 24 - 65536, quantMax: 2 ** 24 - 1 },
    { name: 'near -2^24', signed: true, quantMin: -(2 ** 24 - 1), quantMax: -(2 ** 24 - 1) + 65535 },
  ];
  const cases: Array<[Layout, Range]> = [];
  for (const L of LAYOUTS) for (const R of [...RANGES, ...wide]) if (rand() < 0.3 || L.n <= 7) cases.push([L, R]);
  for (const L of BIG) cases.push([L, RANGES[randInt(0, RANGES.length - 1)]]);
  cases.push([LAYOUTS[4], wide[1]], [LAYOUTS[10], wide[0]], [LAYOUTS[6], wide[2]]);
  let ties = 0;
  for (const [L, R] of cases) {
    const p = randomParams(L.channels, R.quantMin, R.quantMax);
    const x = randomX(L, p);
    const ref = reference(L, p, x);
    ties += ref.ties;
    for (const v of variants) {
      const out = new Float32Array(L.n).fill(NaN);
      const mask = new Uint8Array(L.n).fill(0xab);
      binding.fakeQuantize({ x, out, mask, ...p, channels: L.channels, inner: L.inner, variant: v });
      const d = firstFloatDiff(out, ref.fake);
      t.equal(d, -1, `${v} ${L.name} ${R.name} out vs JS${describeDiff(d, x, out, ref.fake)}`);
      const dm = firstDiff(mask, ref.mask);
      t.equal(dm, -1, `${v} ${L.name} ${R.name} mask vs JS${describeDiff(dm, x, mask, ref.mask)}`);
      // without a mask, and in place (out === x)
      const inplace = Float32Array.from(x);
      binding.fakeQuantize({ x: inplace, out: inplace, ...p, channels: L.channels, inner: L.inner, variant: v });
      t.equal(firstFloatDiff(inplace, ref.fake), -1, `${v} ${L.name} ${R.name} in place, no mask`);
      if (!v.endsWith('_ref')) {
        const ro = new Float32Array(L.n), rm = new Uint8Array(L.n);
        binding.fakeQuantize({ x, out: ro, mask: rm, ...p, channels: L.channels, inner: L.inner, variant: 'ref' });
        t.equal(firstFloatDiff(out, ro), -1, `${v} ${L.name} ${R.name} out vs fake_quantize_ref`);
        t.equal(firstDiff(mask, rm), -1, `${v} ${L.name} ${R.name} mask vs fake_quantize_ref`);
      }
    }
  }
  t.ok(ties > 100, `exact .5 ties exercised (${ties})`);
});

t.test('fakeQuantize: hand-checked values (NaN propagates with mask 0, -0 kept, Inf clamps)', async (t) => {
  const x = new Float32Array([0.25, 0.75, -0.25, -0, NaN, Infinity, -Infinity, 100, -100, 1.25]);
  // scale 0.5, zp 2, range [0, 7]: r = rne(x/0.5) = 0(0.5->0), 2(1.5->2), -0(-0.5->-0), -0, NaN, Inf, -Inf, 200, -200, 2(2.5->2)
  // lo = -2, hi = 5
  const want = [0, 1, -0, -0, NaN, 2.5, -1, 2.5, -1, 1];
  const wantMask = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1];
  for (const v of variantsOf(t, 'fake_quantize')) {
    const out = new Float32Array(x.length).fill(123);
    const mask = new Uint8Array(x.length).fill(0xab);
    binding.fakeQuantize({ x, out, mask, scale: new Float32Array([0.5]), zeroPoint: new Int32Array([2]), quantMin: 0, quantMax: 7, variant: v });
    t.equal(firstFloatDiff(out, new Float32Array(want)), -1, `${v}: ${Array.from(out)}`);
    t.ok(Object.is(out[2], -0) && Object.is(out[3], -0), `${v}: -0 stays -0`);
    t.same(Array.from(mask), wantMask, `${v} mask`);
  }
});

// ------------------------------------------------------------------ dequantize
t.test('dequantize: every variant vs JS reference and vs _ref', async (t) => {
  const variants = variantsOf(t, 'dequantize');
  for (const L of [...LAYOUTS, ...BIG.slice(0, 4)]) {
    for (const signed of [false, true]) {
      const R = quantRange(8, signed);
      const p = randomParams(L.channels, R.quantMin, R.quantMax);
      const q = signed ? new Int8Array(L.n) : new Uint8Array(L.n);
      for (let i = 0; i < L.n; i++) q[i] = randInt(R.quantMin, R.quantMax);
      const want = new Float32Array(L.n);
      for (let i = 0; i < L.n; i++) {
        const c = chan(L, i);
        want[i] = Math.fround((q[i] - p.zeroPoint[c]) * p.scale[c]);
      }
      for (const v of variants) {
        const out = new Float32Array(L.n).fill(NaN);
        binding.dequantize({ q, out, scale: p.scale, zeroPoint: p.zeroPoint, channels: L.channels, inner: L.inner, variant: v });
        const d = firstFloatDiff(out, want);
        t.equal(d, -1, `${v} ${L.name} ${signed ? 's8' : 'u8'}${describeDiff(d, null, out, want)}`);
        if (!v.endsWith('_ref')) {
          const ro = new Float32Array(L.n);
          binding.dequantize({ q, out: ro, scale: p.scale, zeroPoint: p.zeroPoint, channels: L.channels, inner: L.inner, variant: 'ref' });
          t.equal(firstFloatDiff(out, ro), -1, `${v} ${L.name} vs dequantize_ref`);
        }
      }
    }
  }
});

t.test('quantize -> dequantize equals fakeQuantize', async (t) => {
  const L = LAYOUTS[6];
  const p = randomParams(L.channels, -8, 7);
  const x = randomX(L, p);
  for (let i = 0; i < x.length; i++) if (Number.isNaN(x[i])) x[i] = 1; // quantize maps NaN to 0, fakeQuantize keeps NaN
  const q = new Int8Array(L.n), back = new Float32Array(L.n), fake = new Float32Array(L.n);
  binding.quantize({ x, out: q, ...p, channels: L.channels, inner: L.inner });
  binding.dequantize({ q, out: back, scale: p.scale, zeroPoint: p.zeroPoint, channels: L.channels, inner: L.inner });
  binding.fakeQuantize({ x, out: fake, ...p, channels: L.channels, inner: L.inner });
  // equal as values (dequantize gives +0 where fakeQuantize may give -0)
  t.equal(firstDiff(back, fake), -1);
});

// ------------------------------------------------------------------ backward
t.test('fakeQuantizeBackward: straight-through, masked, accumulate, in place', async (t) => {
  const variants = variantsOf(t, 'fake_quantize_backward');
  for (const n of [1, 7, 63, 129, 1000, 1000003]) {
    const g = new Float32Array(n);
    const mask = new Uint8Array(n);
    const base = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      g[i] = rand() < 0.02 ? [NaN, Infinity, -0, 0][randInt(0, 3)] : rand() * 2 - 1;
      mask[i] = rand() < 0.3 ? 0 : rand() < 0.9 ? 1 : randInt(2, 255); // any nonzero byte passes
      base[i] = rand() < 0.02 ? -0 : rand() * 2 - 1;
    }
    for (const useMask of [false, true]) {
      for (const accumulate of [false, true]) {
        const want = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          const pass = !useMask || mask[i] !== 0;
          want[i] = accumulate ? (pass ? Math.fround(base[i] + g[i]) : base[i]) : pass ? g[i] : 0;
        }
        for (const v of variants) {
          const gi = accumulate ? Float32Array.from(base) : new Float32Array(n).fill(NaN);
          binding.fakeQuantizeBackward({ gradOut: g, gradIn: gi, mask: useMask ? mask : undefined, accumulate, variant: v });
          const d = firstFloatDiff(gi, want);
          t.equal(d, -1, `${v} n=${n} mask=${useMask} accumulate=${accumulate}${describeDiff(d, null, gi, want)}`);
          if (!accumulate) {
            const io = Float32Array.from(g); // in place: gradIn === gradOut
            binding.fakeQuantizeBackward({ gradOut: io, gradIn: io, mask: useMask ? mask : undefined, variant: v });
            t.equal(firstFloatDiff(io, want), -1, `${v} n=${n} mask=${useMask} in place`);
          }
        }
      }
    }
  }
});

// ------------------------------------------------------------------ minMax
function minMaxRef(L: Layout, x: Float32Array) {
  const mn = new Float32Array(L.channels).fill(Infinity), mx = new Float32Array(L.channels).fill(-Infinity);
  for (let i = 0; i < L.n; i++) {
    const c = chan(L, i), v = x[i];
    if (v < mn[c]) mn[c] = v;
    if (v > mx[c]) mx[c] = v;
  }
  for (let c = 0; c < L.channels; c++) {
    if (mn[c] === 0) mn[c] = 0; // a zero result is +0
    if (mx[c] === 0) mx[c] = 0;
  }
  return { mn, mx };
}

t.test('minMax: every variant vs JS reference and vs _ref (NaN ignored, empty -> +Inf/-Inf)', async (t) => {
  const variants = variantsOf(t, 'min_max');
  for (const L of [...LAYOUTS, ...BIG]) {
    const x = new Float32Array(L.n);
    const nanChannel = L.channels > 1 ? randInt(0, L.channels - 1) : -1;
    for (let i = 0; i < L.n; i++) {
      const u = rand();
      x[i] = chan(L, i) === nanChannel ? NaN : u < 0.05 ? NaN : u < 0.08 ? [0, -0, Infinity, -Infinity][randInt(0, 3)] : (rand() * 2 - 1) * 10 ** randInt(-3, 3);
    }
    const ref = minMaxRef(L, x);
    for (const v of variants) {
      const mn = new Float32Array(L.channels).fill(NaN), mx = new Float32Array(L.channels).fill(NaN);
      binding.minMax({ x, min: mn, max: mx, channels: L.channels, inner: L.inner, variant: v });
      t.equal(firstFloatDiff(mn, ref.mn), -1, `${v} ${L.name} min${describeDiff(firstFloatDiff(mn, ref.mn), null, mn, ref.mn)}`);
      t.equal(firstFloatDiff(mx, ref.mx), -1, `${v} ${L.name} max${describeDiff(firstFloatDiff(mx, ref.mx), null, mx, ref.mx)}`);
      if (nanChannel >= 0) t.ok(mn[nanChannel] === Infinity && mx[nanChannel] === -Infinity, `${v} ${L.name}: all-NaN channel`);
    }
  }
  for (const v of variants) {
    // zeros of both signs: +0 regardless of order; empty tensor: every channel +Inf/-Inf
    const mn = new Float32Array(2), mx = new Float32Array(2);
    binding.minMax({ x: new Float32Array([-0, 0, -0, NaN, 0, -0, 0, 1]), min: mn, max: mx, channels: 2, inner: 4, variant: v });
    t.ok(Object.is(mn[0], 0) && Object.is(mx[0], 0) && Object.is(mn[1], 0) && mx[1] === 1, `${v}: zero results are +0`);
    binding.minMax({ x: new Float32Array(0), min: mn, max: mx, channels: 2, variant: v });
    t.same([mn[0], mn[1], mx[0], mx[1]], [Infinity, Infinity, -Infinity, -Infinity], `${v}: empty`);
  }
});

// ------------------------------------------------------------------ streaming stores, misaligned outputs
t.test('large calls with outputs not aligned to cache lines (non-temporal store paths)', async (t) => {
  // Outputs start 1..63 bytes into a cache line, so the variants' unaligned
  // head, streamed middle and tail are all exercised.
  const n = 1700013;
  const L: Layout = { name: 'per tensor', channels: 1, inner: 1, n };
  const p = randomParams(1, -8, 7);
  const x = randomX(L, p);
  const ref = reference(L, p, x);
  const want8 = Int8Array.from(ref.q);
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = rand() * 2 - 1;
  for (const off of [0, 1, 5, 13]) {
    const q = new Int8Array(n + 128).subarray(off * 3 + 1, off * 3 + 1 + n);
    const out = new Float32Array(n + 16).subarray(off, off + n);
    const mask = new Uint8Array(n + 128).subarray(off * 5 + 2, off * 5 + 2 + n);
    const back = new Float32Array(n + 16).subarray(off + 1, off + 1 + n);
    const gi = new Float32Array(n + 16).subarray(off + 2, off + 2 + n);
    for (const v of ['avx512', 'avx2', 'ref']) {
      const full = `quantize_${v}`;
      if (!binding.info().variants.quantize.some((x) => x.name === full && x.supported)) {
        t.skip(`${full}: not supported here`, () => {});
        continue;
      }
      q.fill(0x55);
      binding.quantize({ x, out: q, ...p, variant: v });
      t.equal(firstDiff(q, want8), -1, `quantize_${v} offset ${off * 3 + 1} bytes`);
      out.fill(NaN);
      mask.fill(0xab);
      binding.fakeQuantize({ x, out, mask, ...p, variant: v });
      t.equal(firstFloatDiff(out, ref.fake), -1, `fake_quantize_${v} offset ${off * 4} bytes`);
      t.equal(firstDiff(mask, ref.mask), -1, `fake_quantize_${v} mask offset ${off * 5 + 2} bytes`);
      back.fill(NaN);
      binding.dequantize({ q, out: back, scale: p.scale, zeroPoint: p.zeroPoint, variant: v });
      let bad = -1;
      for (let i = 0; i < n && bad < 0; i++) if (back[i] !== Math.fround((q[i] - p.zeroPoint[0]) * p.scale[0])) bad = i;
      t.equal(bad, -1, `dequantize_${v} offset ${(off + 1) * 4} bytes`);
      gi.fill(NaN);
      binding.fakeQuantizeBackward({ gradOut: g, gradIn: gi, mask, variant: v });
      bad = -1;
      for (let i = 0; i < n && bad < 0; i++) if (!Object.is(gi[i], ref.mask[i] ? g[i] : 0)) bad = i;
      t.equal(bad, -1, `fake_quantize_backward_${v} offset ${(off + 2) * 4} bytes`);
    }
  }
});

// ------------------------------------------------------------------ async
t.test('Async forms give the same results', async (t) => {
  const L: Layout = { name: 'async', channels: 16, inner: 1, n: 16 * 20001 };
  const p = randomParams(L.channels, 0, 15);
  const x = randomX(L, p);
  const common = { ...p, channels: L.channels, inner: L.inner };
  const q1 = new Uint8Array(L.n), q2 = new Uint8Array(L.n);
  binding.quantize({ x, out: q1, ...common });
  const pr = binding.quantizeAsync({ x, out: q2, ...common });
  t.type(pr.then, 'function');
  await pr;
  t.equal(firstDiff(q1, q2), -1, 'quantizeAsync');
  const f1 = new Float32Array(L.n), f2 = new Float32Array(L.n), m1 = new Uint8Array(L.n), m2 = new Uint8Array(L.n);
  binding.fakeQuantize({ x, out: f1, mask: m1, ...common });
  await binding.fakeQuantizeAsync({ x, out: f2, mask: m2, ...common });
  t.equal(firstFloatDiff(f1, f2), -1, 'fakeQuantizeAsync out');
  t.equal(firstDiff(m1, m2), -1, 'fakeQuantizeAsync mask');
  const d1 = new Float32Array(L.n), d2 = new Float32Array(L.n);
  binding.dequantize({ q: q1, out: d1, scale: p.scale, zeroPoint: p.zeroPoint, channels: L.channels });
  await binding.dequantizeAsync({ q: q1, out: d2, scale: p.scale, zeroPoint: p.zeroPoint, channels: L.channels });
  t.equal(firstFloatDiff(d1, d2), -1, 'dequantizeAsync');
  const g1 = new Float32Array(L.n).fill(1), g2 = new Float32Array(L.n).fill(1);
  binding.fakeQuantizeBackward({ gradOut: f1, gradIn: g1, mask: m1, accumulate: true });
  await binding.fakeQuantizeBackwardAsync({ gradOut: f1, gradIn: g2, mask: m1, accumulate: true });
  t.equal(firstFloatDiff(g1, g2), -1, 'fakeQuantizeBackwardAsync');
  const a1 = new Float32Array(16), b1 = new Float32Array(16), a2 = new Float32Array(16), b2 = new Float32Array(16);
  binding.minMax({ x, min: a1, max: b1, channels: 16 });
  await binding.minMaxAsync({ x, min: a2, max: b2, channels: 16 });
  t.equal(firstFloatDiff(a1, a2), -1, 'minMaxAsync min');
  t.equal(firstFloatDiff(b1, b2), -1, 'minMaxAsync max');
  // several in flight at once
  const outs = [0, 1, 2, 3].map(() => new Uint8Array(L.n));
  await Promise.all(outs.map((out) => binding.quantizeAsync({ x, out, ...common })));
  for (const o of outs) t.equal(firstDiff(o, q1), -1, 'concurrent quantizeAsync');
  // validation errors are thrown synchronously by the Async form too
  t.throws(() => binding.quantizeAsync({ x, out: new Uint8Array(1), ...common }), RangeError);
});

// ------------------------------------------------------------------ validation
t.test('argument validation', async (t) => {
  const x = new Float32Array(12);
  const base = { x, out: new Uint8Array(12), scale: new Float32Array([1]), zeroPoint: new Int32Array([0]), quantMin: 0, quantMax: 255 };
  const call = (o: Record<string, unknown>) => () => (binding.quantize as (o: unknown) => void)(o);
  const fcall = (o: Record<string, unknown>) => () => (binding.fakeQuantize as (o: unknown) => void)(o);
  const fbase = { ...base, out: new Float32Array(12) };
  t.doesNotThrow(call(base));
  t.throws(() => (binding.quantize as (o: unknown) => void)(undefined), TypeError);
  t.throws(call({ ...base, x: Array.from(x) }), { name: 'TypeError', message: /quantize: x/ });
  t.throws(call({ ...base, x: new Float64Array(12) }), { name: 'TypeError', message: /x must be a Float32Array/ });
  t.throws(call({ ...base, out: new Float32Array(12) }), { name: 'TypeError', message: /out must be a Uint8Array or an Int8Array/ });
  t.throws(call({ ...base, scale: new Float64Array([1]) }), { name: 'TypeError', message: /scale/ });
  t.throws(call({ ...base, zeroPoint: new Float32Array([0]) }), { name: 'TypeError', message: /zeroPoint/ });
  t.throws(call({ ...base, quantMin: undefined }), { name: 'TypeError', message: /quantMin/ });
  t.throws(call({ ...base, quantMin: 0.5 }), { name: 'RangeError', message: /quantMin/ });
  t.throws(call({ ...base, out: new Uint8Array(11) }), { name: 'RangeError', message: /out has 11 elements/ });
  t.throws(call({ ...base, channels: 5 }), { name: 'RangeError', message: /x has 12 elements, not a multiple of channels \* inner = 5/ });
  t.throws(call({ ...base, channels: 2, inner: 4 }), { name: 'RangeError', message: /multiple of channels \* inner = 8/ });
  t.throws(call({ ...base, channels: 0 }), { name: 'RangeError', message: /channels/ });
  t.throws(call({ ...base, inner: 0 }), { name: 'RangeError', message: /inner/ });
  t.throws(call({ ...base, channels: 3 }), { name: 'RangeError', message: /scale has 1 elements; expected channels = 3/ });
  t.throws(call({ ...base, scale: new Float32Array([1, 2]) }), { name: 'RangeError', message: /scale has 2 elements; expected channels = 1/ });
  t.throws(call({ ...base, channels: 2, scale: new Float32Array([1, 2]) }), { name: 'RangeError', message: /zeroPoint has 1 elements/ });
  for (const bad of [0, -1, NaN, Infinity])
    t.throws(call({ ...base, channels: 3, scale: new Float32Array([1, 1, bad]), zeroPoint: new Int32Array(3) }), { name: 'RangeError', message: /scale\[2\] must be finite and > 0/ }, `scale ${bad}`);
  t.throws(call({ ...base, quantMin: 10, zeroPoint: new Int32Array([5]) }), { name: 'RangeError', message: /zeroPoint\[0\] = 5 is outside/ });
  t.throws(call({ ...base, quantMin: 10, quantMax: 10 }), { name: 'RangeError', message: /quantMin = 10 must be < quantMax = 10/ });
  t.throws(call({ ...base, quantMin: -1 }), { name: 'RangeError', message: /quantMin = -1 must be in \[0, 255\] for a Uint8Array out/ });
  t.throws(call({ ...base, quantMax: 256 }), { name: 'RangeError', message: /quantMax = 256/ });
  t.throws(call({ ...base, out: new Int8Array(12), quantMax: 128 }), { name: 'RangeError', message: /quantMax = 128 must be in \[-128, 127\] for an Int8Array out/ });
  t.throws(call({ ...base, variant: 'nope' }), { name: 'RangeError', message: /variant 'nope' is unknown/ });
  t.throws(call({ ...base, variant: 3 }), { name: 'TypeError', message: /variant must be a string/ });
  t.throws(call({ ...base, out: new Uint8Array(x.buffer, 4, 12) }), { name: 'RangeError', message: /x and out must not share memory/ });

  // fakeQuantize
  t.doesNotThrow(fcall(fbase));
  t.doesNotThrow(fcall({ ...fbase, out: x }), 'out === x');
  t.throws(fcall({ ...fbase, out: new Uint8Array(12) }), { name: 'TypeError', message: /out must be a Float32Array/ });
  t.throws(fcall({ ...fbase, out: new Float32Array(x.buffer, 4, 11) }), { name: 'RangeError', message: /out has 11 elements/ });
  const big = new Float32Array(24);
  t.throws(fcall({ ...fbase, x: big.subarray(0, 12), out: big.subarray(1, 13) }), { name: 'RangeError', message: /x and out overlap/ });
  t.throws(fcall({ ...fbase, mask: new Uint8Array(11) }), { name: 'RangeError', message: /mask has 11 elements/ });
  t.throws(fcall({ ...fbase, mask: new Int8Array(12) }), { name: 'TypeError', message: /mask must be a Uint8Array/ });
  t.throws(fcall({ ...fbase, mask: new Uint8Array(x.buffer, 0, 12) }), { name: 'RangeError', message: /mask and x must not share memory/ });
  t.throws(fcall({ ...fbase, quantMin: -40000, quantMax: 30000, zeroPoint: new Int32Array([0]) }), { name: 'RangeError', message: /quantMax - quantMin = 70000 must be <= 65535/ });
  t.throws(fcall({ ...fbase, quantMin: 2 ** 24, quantMax: 2 ** 24 + 5 }), { name: 'RangeError', message: /quantMin = 16777216/ });
  t.doesNotThrow(fcall({ ...fbase, quantMin: -30000, quantMax: 30000, zeroPoint: new Int32Array([0]) }));

  // dequantize
  const dcall = (o: Record<string, unknown>) => () => (binding.dequantize as (o: unknown) => void)(o);
  const dbase = { q: new Uint8Array(12), out: new Float32Array(12), scale: new Float32Array([1]), zeroPoint: new Int32Array([0]) };
  t.doesNotThrow(dcall(dbase));
  t.throws(dcall({ ...dbase, q: new Int16Array(12) }), { name: 'TypeError', message: /q must be a Uint8Array or an Int8Array/ });
  t.throws(dcall({ ...dbase, out: new Float32Array(11) }), { name: 'RangeError', message: /out has 11 elements/ });
  t.throws(dcall({ ...dbase, zeroPoint: new Int32Array([256]) }), { name: 'RangeError', message: /zeroPoint\[0\] = 256/ });
  t.throws(dcall({ ...dbase, q: new Int8Array(12), zeroPoint: new Int32Array([128]) }), { name: 'RangeError', message: /zeroPoint\[0\] = 128/ });
  t.throws(dcall({ ...dbase, scale: new Float32Array([0]) }), { name: 'RangeError', message: /scale\[0\]/ });

  // backward
  const bcall = (o: Record<string, unknown>) => () => (binding.fakeQuantizeBackward as (o: unknown) => void)(o);
  t.throws(bcall({ gradOut: new Float32Array(4), gradIn: new Float32Array(3) }), { name: 'RangeError', message: /gradIn has 3 elements/ });
  t.throws(bcall({ gradOut: new Float32Array(4), gradIn: new Float32Array(4), mask: new Uint8Array(3) }), { name: 'RangeError', message: /mask has 3 elements/ });
  t.throws(bcall({ gradOut: new Float32Array(4), gradIn: new Float32Array(4), accumulate: 1 }), { name: 'TypeError', message: /accumulate must be a boolean/ });
  t.throws(bcall({ gradOut: big.subarray(0, 4), gradIn: big.subarray(2, 6) }), { name: 'RangeError', message: /gradOut and gradIn overlap/ });
  t.throws(bcall({ gradIn: new Float32Array(4) }), { name: 'TypeError', message: /gradOut is required/ });

  // minMax
  const mcall = (o: Record<string, unknown>) => () => (binding.minMax as (o: unknown) => void)(o);
  t.throws(mcall({ x, min: new Float32Array(2), max: new Float32Array(1) }), { name: 'RangeError', message: /min has 2 elements; expected channels = 1/ });
  t.throws(mcall({ x, min: new Float32Array(1), max: new Float64Array(1) }), { name: 'TypeError', message: /max must be a Float32Array/ });
  t.throws(mcall({ x, min: x.subarray(0, 1), max: new Float32Array(1) }), { name: 'RangeError', message: /min and x must not share memory/ });
  t.throws(mcall({ x, min: new Float32Array(1), max: new Float32Array(1), channels: 5 }), { name: 'RangeError', message: /not a multiple/ });

  // packBits / unpackBits
  const pcall = (o: Record<string, unknown>) => () => (binding.packBits as (o: unknown) => void)(o);
  const ucall = (o: Record<string, unknown>) => () => (binding.unpackBits as (o: unknown) => void)(o);
  t.throws(pcall({ q: new Uint8Array([1, 2, 16, 3]), bits: 4, out: new Uint8Array(2) }), { name: 'RangeError', message: /packBits: q\[2\] = 16 does not fit in 4 bits/ });
  t.throws(pcall({ q: new Uint8Array(3), bits: 4, out: new Uint8Array(1) }), { name: 'RangeError', message: /out has 1 elements; needs at least 2/ });
  t.throws(pcall({ q: new Uint8Array(3), bits: 1, out: new Uint8Array(3) }), { name: 'RangeError', message: /bits must be in \[2, 8\]/ });
  t.throws(pcall({ q: new Uint8Array(3), bits: 9, out: new Uint8Array(4) }), { name: 'RangeError', message: /bits/ });
  t.throws(pcall({ q: new Int8Array(3), bits: 4, out: new Uint8Array(2) }), { name: 'TypeError', message: /q must be a Uint8Array/ });
  t.throws(ucall({ packed: new Uint8Array(2), bits: 6, out: new Uint8Array(3) }), { name: 'RangeError', message: /packed has 2 bytes; needs at least 3/ });
  t.throws(ucall({ packed: new Uint8Array(3), bits: 6 }), { name: 'TypeError', message: /out is required/ });
  const shared = new Uint8Array(16);
  t.throws(ucall({ packed: shared.subarray(0, 4), bits: 4, out: shared.subarray(2, 10) }), { name: 'RangeError', message: /must not share memory/ });
});

// ------------------------------------------------------------------ bit packing
function packRef(q: Uint8Array, bits: number): Uint8Array {
  const out = new Uint8Array(Math.ceil((q.length * bits) / 8));
  for (let i = 0; i < q.length; i++)
    for (let b = 0; b < bits; b++) if ((q[i] >> b) & 1) out[(i * bits + b) >> 3] |= 1 << ((i * bits + b) & 7);
  return out;
}

t.test('packBits / unpackBits: hand-checked bytes, JS reference, round trip', async (t) => {
  // 4 bits: value i at bit 4i: [1, 2, 3] -> 0x21, 0x03
  const o4 = new Uint8Array(2).fill(0xab);
  binding.packBits({ q: new Uint8Array([1, 2, 3]), bits: 4, out: o4 });
  t.same(Array.from(o4), [0x21, 0x03], '4-bit bytes');
  // 6 bits: [0x3f, 0x00, 0x15, 0x2a] -> bits 0-5 = 111111, 6-11 = 0, 12-17 = 010101, 18-23 = 101010
  const o6 = new Uint8Array(3).fill(0xab);
  binding.packBits({ q: new Uint8Array([0x3f, 0x00, 0x15, 0x2a]), bits: 6, out: o6 });
  t.same(Array.from(o6), [0x3f, 0x50, 0xa9], '6-bit bytes');
  const o6b = new Uint8Array(4).fill(0xab); // 5 values: 30 bits -> 4 bytes, top 2 bits zero; extra out bytes untouched
  binding.packBits({ q: new Uint8Array([1, 2, 3, 4, 63]), bits: 6, out: o6b });
  t.same(Array.from(o6b), [0x81, 0x30, 0x10, 0x3f], '6-bit, 5 values');
  const u6 = new Uint8Array(5).fill(0xab);
  binding.unpackBits({ packed: new Uint8Array([0x81, 0x30, 0x10, 0xff]), bits: 6, out: u6 }); // top bits ignored
  t.same(Array.from(u6), [1, 2, 3, 4, 63], '6-bit unpack ignores unused bits');

  for (let bits = 2; bits <= 8; bits++) {
    for (const n of [0, 1, 7, 8, 9, 63, 129, 1000, 1000003]) {
      const q = new Uint8Array(n);
      for (let i = 0; i < n; i++) q[i] = randInt(0, (1 << bits) - 1);
      const bytes = Math.ceil((n * bits) / 8);
      const out = new Uint8Array(bytes + 3).fill(0xab);
      binding.packBits({ q, bits, out });
      const want = packRef(q, bits);
      t.equal(firstDiff(out, want, bytes), -1, `packBits bits=${bits} n=${n} vs JS`);
      t.same(Array.from(out.subarray(bytes)), [0xab, 0xab, 0xab], `packBits bits=${bits} n=${n}: writes only ${bytes} bytes`);
      const back = new Uint8Array(n).fill(0xab);
      binding.unpackBits({ packed: out.subarray(0, bytes), bits, out: back });
      t.equal(firstDiff(back, q), -1, `unpackBits bits=${bits} n=${n} round trip`);
    }
  }
});

// ------------------------------------------------------------------ qparams.ts
t.test('roundHalfEven', async (t) => {
  const cases: Array<[number, number]> = [
    [0.5, 0], [1.5, 2], [2.5, 2], [3.5, 4], [-0.5, -0], [-1.5, -2], [-2.5, -2], [2.4999999, 2], [2.5000001, 3],
    [-0.3, -0], [0.3, 0], [7, 7], [-7, -7], [1e20, 1e20], [2 ** 52 + 1, 2 ** 52 + 1], [4503599627370495.5, 4503599627370496],
  ];
  for (const [x, want] of cases) t.ok(Object.is(roundHalfEven(x), want), `roundHalfEven(${x}) = ${want} (got ${roundHalfEven(x)})`);
  t.ok(Number.isNaN(roundHalfEven(NaN)));
  t.equal(roundHalfEven(-Infinity), -Infinity);
  let bad = 0;
  for (let i = 0; i < 20000; i++) {
    const v = Math.fround((rand() - 0.5) * 2 ** randInt(0, 30));
    const h = Math.fround(Math.round(v * 2) / 2); // plenty of exact halves
    for (const u of [v, h]) if (!Object.is(roundHalfEven(u), rneRef(u))) bad++;
  }
  t.equal(bad, 0, 'agrees with an independent implementation on float32 values');
});

t.test('chooseQParams: QuantFace asymmetric scheme, symmetric, narrow, degenerate ranges', async (t) => {
  // method.md: delta = (b - a)/(2^k - 1), zero_point = -round(a / delta)
  let p = chooseQParams({ min: -1, max: 3, bits: 8 });
  t.equal(p.quantMin, 0);
  t.equal(p.quantMax, 255);
  t.equal(p.scale[0], Math.fround(4 / 255));
  t.equal(p.zeroPoint[0], -roundHalfEven(-1 / Math.fround(4 / 255)));
  t.equal(p.zeroPoint[0], 64); // 63.75 -> 64
  // range widened to include 0
  p = chooseQParams({ min: 2, max: 6, bits: 4 });
  t.equal(p.scale[0], Math.fround(6 / 15));
  t.equal(p.zeroPoint[0], 0);
  p = chooseQParams({ min: -6, max: -2, bits: 4 });
  t.equal(p.zeroPoint[0], 15);
  // the real value 0 is exact and the range endpoints are representable
  for (const [mn, mx, bits] of [[-0.37, 1.9, 6], [-5, 0.01, 4], [-1e-3, 2e-3, 8], [-3, 7, 2]] as Array<[number, number, number]>) {
    const q = chooseQParams({ min: mn, max: mx, bits });
    const x = new Float32Array([0, mn, mx]);
    const out = new Uint8Array(3), f = new Float32Array(3);
    binding.quantize({ x, out, ...q });
    binding.fakeQuantize({ x, out: f, ...q });
    t.equal(out[0], q.zeroPoint[0], `quantize(0) = zeroPoint for [${mn}, ${mx}] ${bits} bits`);
    t.equal(f[0], 0);
    t.ok(Math.abs(f[1] - mn) <= q.scale[0] * 0.5 + 1e-7 && Math.abs(f[2] - mx) <= q.scale[0] * 0.5 + 1e-7, `endpoints within scale/2 (${f[1]}, ${f[2]})`);
  }
  // per channel from minMax output, with an empty channel (+Inf/-Inf) -> scale 1, zeroPoint quantMin
  const mn = new Float32Array([-1, Infinity, 0, -2]), mx = new Float32Array([1, -Infinity, 0, 0.5]);
  p = chooseQParams({ min: mn, max: mx, bits: 6, signed: true });
  t.same([p.quantMin, p.quantMax], [-32, 31]);
  t.equal(p.scale.length, 4);
  t.equal(p.scale[0], Math.fround(2 / 63));
  t.equal(p.zeroPoint[0], -32 - roundHalfEven(-1 / Math.fround(2 / 63)));
  t.same([p.scale[1], p.zeroPoint[1]], [1, -32], 'empty channel');
  t.same([p.scale[2], p.zeroPoint[2]], [1, -32], 'all-zero channel');
  // symmetric (PyTorch): scale = amax / ((qmax - qmin) / 2), zeroPoint = middle
  p = chooseQParams({ min: -0.5, max: 2, bits: 8, symmetric: true, signed: true });
  t.same([p.quantMin, p.quantMax, p.zeroPoint[0]], [-128, 127, 0]);
  t.equal(p.scale[0], Math.fround(2 / 127.5));
  p = chooseQParams({ min: -0.5, max: 2, bits: 8, symmetric: true, signed: true, narrowRange: true });
  t.same([p.quantMin, p.quantMax, p.zeroPoint[0]], [-127, 127, 0]);
  t.equal(p.scale[0], Math.fround(2 / 127));
  p = chooseQParams({ min: -3, max: 1, bits: 8, symmetric: true });
  t.same([p.quantMin, p.quantMax, p.zeroPoint[0]], [0, 255, 128]);
  p = chooseQParams({ min: 0, max: 0, bits: 4, symmetric: true });
  t.same([p.scale[0], p.zeroPoint[0]], [1, 8]);
  p = chooseQParams({ min: -1e-44, max: 0, bits: 8 });
  t.equal(p.scale[0], MIN_SCALE, 'tiny range: smallest normal scale');
  // unsigned narrow range
  t.same(quantRange(4, false, true), { quantMin: 1, quantMax: 15 });
  // errors
  t.throws(() => chooseQParams({ min: NaN, max: 1, bits: 8 }), { name: 'RangeError', message: /min must be finite/ });
  t.throws(() => chooseQParams({ min: 0, max: Infinity, bits: 8 }), { name: 'RangeError', message: /max must be finite/ });
  t.throws(() => chooseQParams({ min: [2], max: [1], bits: 8 }), { name: 'RangeError', message: /min\[0\] = 2 is greater than max\[0\] = 1/ });
  t.throws(() => chooseQParams({ min: [1, 2], max: [3], bits: 8 }), RangeError);
  t.throws(() => chooseQParams({ min: 0, max: [1], bits: 8 }), TypeError);
  t.throws(() => chooseQParams({ min: 0, max: 1, bits: 1 }), { name: 'RangeError', message: /bits/ });
  t.throws(() => chooseQParams({ min: 0, max: 1, bits: 17 }), RangeError);
});
