// Native learned-range kernels (binding.qdropFakeQuantize, binding.learnedRangeBackward; native/learned_quant*.cc)
// against the JavaScript they replaced: every variant bit-identical to the reference loops of lib/nn/reference.ts
// (which are the loops lib/distill/learned-range.ts and lib/quant/weight-range.ts ran before), whatever the thread
// count; the modules (LearnedActQuant with QDrop, ClippedWeightFakeQuant learned) bit-identical to a verbatim copy
// of their former JavaScript; bad arguments throw TypeError / RangeError.
import t from 'tap';
import { binding } from '../lib/binding.js';
import { qdropFakeQuantizeRef, learnedRangeBackwardRef, fakeQuantizeRef } from '../lib/nn/reference.js';
import { chooseQParams, roundHalfEven } from '../lib/quant/qparams.js';
import { LearnedActQuant } from '../lib/distill/learned-range.js';
import { ClippedWeightFakeQuant } from '../lib/quant/weight-range.js';
import { Tensor, type FTensor } from '../lib/tensor.js';

const SEED = Number(process.env.QF_TEST_SEED ?? Date.now() % 2147483647);
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
const randInt = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));

function variantsOf(kernel: string): string[] {
  const vs = binding.info().variants[kernel] ?? [];
  return vs.filter((v) => v.supported).map((v) => v.name);
}
/** Bytes equal (NaN payloads included: the kernels copy, they do not create NaNs differently). */
function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}
function firstFloatDiff(a: Float32Array, b: Float32Array): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return i;
  return -1;
}

/**
 * Inputs that exercise every branch: values inside the range, exact .5 ties of x / scale, the range ends
 * and one step beyond them, far outside, +-0, and (optionally) NaN / +-Infinity.
 */
function makeX(n: number, scale: number, zp: number, qmin: number, qmax: number, special: boolean): Float32Array {
  const x = new Float32Array(n);
  const lo = qmin - zp;
  const hi = qmax - zp;
  for (let i = 0; i < n; i++) {
    const k = randInt(0, 9);
    let v: number;
    if (k === 0) v = (randInt(lo - 3, hi + 3) + 0.5) * scale; // a tie (up to float32 rounding of the product)
    else if (k === 1) v = randInt(lo - 1, lo + 1) * scale; // at / beside the low end
    else if (k === 2) v = randInt(hi - 1, hi + 1) * scale; // at / beside the high end
    else if (k === 3) v = (rand() - 0.5) * (hi - lo) * scale * 8; // far outside too
    else if (k === 4) v = rand() < 0.5 ? 0 : -0;
    else v = (lo + rand() * (hi - lo)) * scale;
    x[i] = v;
  }
  if (special && n >= 4) {
    x[randInt(0, n - 1)] = NaN;
    x[randInt(0, n - 1)] = Infinity;
    x[randInt(0, n - 1)] = -Infinity;
  }
  return x;
}
function makeG(n: number, special: boolean): Float32Array {
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = rand() < 0.05 ? 0 : (rand() - 0.5) * 2 ** randInt(-30, 4);
  if (special && n >= 4) {
    g[randInt(0, n - 1)] = -0;
    g[randInt(0, n - 1)] = NaN;
  }
  return g;
}
function params(bits: number, signed: boolean): { scale: Float32Array; zeroPoint: Int32Array; quantMin: number; quantMax: number } {
  const lo = -rand() * 4;
  const hi = rand() * 4 + 1e-3;
  const qp = chooseQParams({ min: lo, max: hi, bits, signed });
  return { scale: qp.scale, zeroPoint: qp.zeroPoint, quantMin: qp.quantMin, quantMax: qp.quantMax };
}

// Lengths: empty, tiny, odd, around the variants' vector widths and tile sizes, and large enough to be split
// across threads (>= 128K elements per chunk).
const LENGTHS = [0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 100, 255, 257, 511, 513, 1023, 1024, 1025, 4095, 4097, 8191, 8193, 16383, 16385, 33000, 65537, 70001, 300007];

t.test('qdropFakeQuantize: every variant and thread count bit-identical to the JS loop (out, drop, final state)', async (t) => {
  const variants = variantsOf('qdrop_fake_quantize');
  t.ok(variants.includes('qdrop_fake_quantize_ref'), 'ref listed');
  const threadsBefore = binding.info().threads;
  let cases = 0;
  try {
    for (const threads of [1, 2]) {
      binding.setThreads(threads);
      for (const n of LENGTHS) {
        const bits = randInt(2, 8);
        const p = params(bits, rand() < 0.3);
        const x = makeX(n, p.scale[0]!, p.zeroPoint[0]!, p.quantMin, p.quantMax, true);
        const prob = [0, 0.5, rand(), 0.999, 1 - 2 ** -40][randInt(0, 4)]!;
        const threshold = Math.floor(prob * 4294967296);
        const seed = randInt(1, 2 ** 32 - 1);
        const wantOut = new Float32Array(n);
        const wantDrop = new Uint8Array(n);
        const wantSt = qdropFakeQuantizeRef({ x, out: wantOut, drop: wantDrop, ...p, threshold, seed });
        for (const v of variants) {
          const out = new Float32Array(n).fill(NaN);
          const drop = new Uint8Array(n).fill(0xcd);
          const st = binding.qdropFakeQuantize({ x, out, drop, ...p, threshold, seed, variant: v });
          const d = firstFloatDiff(out, wantOut);
          if (d >= 0 || !sameBytes(drop, wantDrop) || st !== wantSt) {
            t.fail(`${v} n=${n} threads=${threads} p=${prob}: out diff at ${d}, drop same ${sameBytes(drop, wantDrop)}, state ${st} vs ${wantSt}`);
            return;
          }
          cases++;
        }
      }
    }
  } finally {
    binding.setThreads(threadsBefore);
  }
  t.pass(`${cases} cases bit-identical`);
});

t.test('qdropFakeQuantize: threshold 0 drops nothing (= fakeQuantize), 2^32 drops everything; in place; seed 0 stays 0', async (t) => {
  const n = 5000;
  const p = params(4, false);
  const x = makeX(n, p.scale[0]!, p.zeroPoint[0]!, p.quantMin, p.quantMax, true);
  const fq = new Float32Array(n);
  fakeQuantizeRef({ x, out: fq, ...p });
  for (const v of variantsOf('qdrop_fake_quantize')) {
    const out = new Float32Array(n).fill(NaN);
    const drop = new Uint8Array(n).fill(9);
    binding.qdropFakeQuantize({ x, out, drop, ...p, threshold: 0, seed: 12345, variant: v });
    t.equal(firstFloatDiff(out, fq), -1, `${v}: threshold 0 = fakeQuantize`);
    t.ok(drop.every((b) => b === 0), `${v}: nothing dropped`);
    binding.qdropFakeQuantize({ x, out, drop, ...p, threshold: 2 ** 32, seed: 12345, variant: v });
    t.ok(sameBytes(out, x) && drop.every((b) => b === 1), `${v}: threshold 2^32 keeps every x`);
    const st = binding.qdropFakeQuantize({ x, out, drop, ...p, threshold: 1, seed: 0, variant: v });
    t.ok(st === 0 && drop.every((b) => b === 1), `${v}: seed 0 gives state 0 (0 < threshold: all dropped)`);
    const inplace = x.slice();
    const want = new Float32Array(n);
    const wantDrop = new Uint8Array(n);
    qdropFakeQuantizeRef({ x, out: want, drop: wantDrop, ...p, threshold: 2 ** 31, seed: 99 });
    binding.qdropFakeQuantize({ x: inplace, out: inplace, drop, ...p, threshold: 2 ** 31, seed: 99, variant: v });
    t.ok(firstFloatDiff(inplace, want) === -1 && sameBytes(drop, wantDrop), `${v}: in place`);
  }
});

t.test('learnedRangeBackward: every variant and thread count bit-identical to the JS loops (gradIn, sums)', async (t) => {
  const variants = variantsOf('learned_range_backward');
  t.ok(variants.includes('learned_range_backward_ref'), 'ref listed');
  const threadsBefore = binding.info().threads;
  let cases = 0;
  try {
    for (const threads of [1, 2]) {
      binding.setThreads(threads);
      for (const n of LENGTHS) {
        for (const perChannel of [false, true]) {
          const channels = perChannel && n > 0 ? [1, 3, 7, 16, n].filter((c) => n % c === 0).pop()! : 1;
          if (perChannel && channels === 1) continue;
          const bits = randInt(2, 8);
          const ps = Array.from({ length: channels }, () => params(bits, false));
          const scale = Float32Array.from(ps.map((q) => q.scale[0]!));
          const zeroPoint = Int32Array.from(ps.map((q) => q.zeroPoint[0]!));
          const { quantMin, quantMax } = ps[0]!;
          const inner = n / channels;
          const x = new Float32Array(n);
          for (let c = 0; c < channels; c++) x.set(makeX(inner, scale[c]!, zeroPoint[c]!, quantMin, quantMax, rand() < 0.5), c * inner);
          const g = makeG(n, rand() < 0.5);
          const dropProb = [0, 0.5, 0.9][randInt(0, 2)]!;
          const drop = dropProb > 0 && !perChannel ? Uint8Array.from({ length: n }, () => (rand() < dropProb ? 1 : 0)) : undefined;
          const withGi = !perChannel || rand() < 0.5;
          const wantGi = new Float32Array(n);
          const wantSums = new Float64Array(3 * channels);
          learnedRangeBackwardRef({ x, gradOut: g, ...(withGi ? { gradIn: wantGi } : {}), ...(drop ? { drop } : {}), scale, zeroPoint, quantMin, quantMax, channels, sums: wantSums });
          for (const v of variants) {
            const gi = new Float32Array(n).fill(NaN);
            const sums = new Float64Array(3 * channels).fill(NaN);
            binding.learnedRangeBackward({ x, gradOut: g, ...(withGi ? { gradIn: gi } : {}), ...(drop ? { drop } : {}), scale, zeroPoint, quantMin, quantMax, channels, sums, variant: v });
            const d = withGi ? firstFloatDiff(gi, wantGi) : -1;
            const sd = [...sums].findIndex((s, k) => !Object.is(s, wantSums[k]));
            if (d >= 0 || sd >= 0 || (!withGi && !gi.every(Number.isNaN))) {
              t.fail(`${v} n=${n} channels=${channels} threads=${threads} drop=${dropProb}: gradIn diff at ${d}, sums diff at ${sd} (${sums[sd]} vs ${wantSums[sd]})`);
              return;
            }
            cases++;
          }
        }
      }
    }
  } finally {
    binding.setThreads(threadsBefore);
  }
  t.pass(`${cases} cases bit-identical`);
});

t.test('learnedRangeBackward: gradIn may be gradOut (in place); sums optional; async form', async (t) => {
  const n = 70001;
  const p = params(6, false);
  const x = makeX(n, p.scale[0]!, p.zeroPoint[0]!, p.quantMin, p.quantMax, true);
  const g = makeG(n, true);
  const drop = Uint8Array.from({ length: n }, () => (rand() < 0.5 ? 1 : 0));
  const wantGi = new Float32Array(n);
  const wantSums = new Float64Array(3);
  learnedRangeBackwardRef({ x, gradOut: g, gradIn: wantGi, drop, ...p, sums: wantSums });
  for (const v of variantsOf('learned_range_backward')) {
    const inplace = g.slice();
    const sums = new Float64Array(3).fill(NaN);
    binding.learnedRangeBackward({ x, gradOut: inplace, gradIn: inplace, drop, ...p, sums, variant: v });
    t.ok(firstFloatDiff(inplace, wantGi) === -1 && sums.every((s, k) => Object.is(s, wantSums[k])), `${v}: in place`);
    const gi = new Float32Array(n).fill(NaN);
    binding.learnedRangeBackward({ x, gradOut: g, gradIn: gi, drop, ...p, variant: v });
    t.equal(firstFloatDiff(gi, wantGi), -1, `${v}: without sums`);
    const sums2 = new Float64Array(3);
    await binding.learnedRangeBackwardAsync({ x, gradOut: g, drop, ...p, sums: sums2, variant: v });
    t.ok(sums2.every((s, k) => Object.is(s, wantSums[k])), `${v}: async sums`);
  }
  const out = new Float32Array(n);
  const d2 = new Uint8Array(n);
  const st = await binding.qdropFakeQuantizeAsync({ x, out, drop: d2, ...p, threshold: 2 ** 31, seed: 5 });
  const want = new Float32Array(n);
  const wantD = new Uint8Array(n);
  t.equal(st, qdropFakeQuantizeRef({ x, out: want, drop: wantD, ...p, threshold: 2 ** 31, seed: 5 }), 'async qdrop: same final state');
  t.ok(firstFloatDiff(out, want) === -1 && sameBytes(d2, wantD), 'async qdrop: same out and drop');
});

t.test('bad arguments: TypeError / RangeError naming the argument, never a crash', async (t) => {
  const n = 12;
  const x = new Float32Array(n);
  const base = { x, out: new Float32Array(n), drop: new Uint8Array(n), scale: Float32Array.of(0.1), zeroPoint: Int32Array.of(3), quantMin: 0, quantMax: 15, threshold: 100, seed: 1 };
  const q = (o: Record<string, unknown>) => () => binding.qdropFakeQuantize(o as never);
  t.throws(() => (binding.qdropFakeQuantize as (o: unknown) => void)(undefined), TypeError);
  t.throws(q({ ...base, x: Array.from(x) }), { name: 'TypeError', message: /qdropFakeQuantize: x/ });
  t.throws(q({ ...base, out: new Float64Array(n) }), { name: 'TypeError', message: /out must be a Float32Array/ });
  t.throws(q({ ...base, out: new Float32Array(n - 1) }), { name: 'RangeError', message: /out has 11 elements/ });
  t.throws(q({ ...base, drop: undefined }), { name: 'TypeError', message: /drop is required/ });
  t.throws(q({ ...base, drop: new Uint8Array(3) }), { name: 'RangeError', message: /drop has 3 elements/ });
  t.throws(q({ ...base, scale: Float32Array.of(0.1, 0.2) }), { name: 'RangeError', message: /scale has 2 elements/ });
  t.throws(q({ ...base, scale: Float32Array.of(0) }), { name: 'RangeError', message: /scale\[0\]/ });
  t.throws(q({ ...base, scale: Float32Array.of(NaN) }), { name: 'RangeError', message: /scale\[0\]/ });
  t.throws(q({ ...base, zeroPoint: Int32Array.of(16) }), { name: 'RangeError', message: /zeroPoint\[0\]/ });
  t.throws(q({ ...base, quantMin: 15, quantMax: 0 }), { name: 'RangeError', message: /quantMin/ });
  t.throws(q({ ...base, quantMax: 70000 }), { name: 'RangeError', message: /quantMax/ });
  t.throws(q({ ...base, threshold: -1 }), { name: 'RangeError', message: /threshold/ });
  t.throws(q({ ...base, threshold: 2 ** 32 + 1 }), { name: 'RangeError', message: /threshold/ });
  t.throws(q({ ...base, threshold: 0.5 }), { name: 'RangeError', message: /threshold/ });
  t.throws(q({ ...base, seed: 2 ** 32 }), { name: 'RangeError', message: /seed/ });
  t.throws(q({ ...base, seed: '1' }), { name: 'TypeError', message: /seed/ });
  t.throws(q({ ...base, variant: 'avx9000' }), { name: 'RangeError', message: /variant/ });
  const shared = new Float32Array(2 * n);
  t.throws(q({ ...base, x: shared.subarray(0, n), out: shared.subarray(1, n + 1) }), { name: 'RangeError', message: /overlap/ });
  t.throws(q({ ...base, drop: new Uint8Array(x.buffer) }), { name: 'RangeError', message: /drop and x must not share memory/ });
  t.throws(() => binding.qdropFakeQuantizeAsync({ ...base, seed: -1 } as never), RangeError, 'async form validates synchronously');

  const b = { x, gradOut: new Float32Array(n), gradIn: new Float32Array(n), scale: Float32Array.of(0.1), zeroPoint: Int32Array.of(3), quantMin: 0, quantMax: 15, sums: new Float64Array(3) };
  const l = (o: Record<string, unknown>) => () => binding.learnedRangeBackward(o as never);
  t.throws(() => (binding.learnedRangeBackward as (o: unknown) => void)(7), TypeError);
  t.throws(l({ ...b, gradOut: undefined }), { name: 'TypeError', message: /gradOut is required/ });
  t.throws(l({ ...b, gradOut: new Float32Array(5) }), { name: 'RangeError', message: /gradOut has 5 elements/ });
  t.throws(l({ ...b, gradIn: new Float64Array(n) }), { name: 'TypeError', message: /gradIn must be a Float32Array/ });
  t.throws(l({ ...b, drop: new Int8Array(n) }), { name: 'TypeError', message: /drop must be a Uint8Array/ });
  t.throws(l({ ...b, sums: new Float32Array(3) }), { name: 'TypeError', message: /sums must be a Float64Array/ });
  t.throws(l({ ...b, sums: new Float64Array(2) }), { name: 'RangeError', message: /sums has 2 elements/ });
  t.throws(l({ ...b, channels: 5 }), { name: 'RangeError', message: /not a multiple of channels/ });
  t.throws(l({ ...b, channels: 3 }), { name: 'RangeError', message: /scale has 1 elements; expected channels = 3/ });
  t.throws(l({ ...b, channels: 3, inner: 3, scale: new Float32Array(3).fill(1), zeroPoint: new Int32Array(3), sums: new Float64Array(9) }), { name: 'RangeError', message: /inner/ });
  t.throws(l({ ...b, channels: 0 }), { name: 'RangeError', message: /channels/ });
  t.throws(l({ ...b, gradIn: x }), { name: 'RangeError', message: /gradIn and x must not share memory/ });
  t.throws(l({ ...b, sums: new Float64Array(b.gradOut.buffer, 0, 3) }), { name: 'RangeError', message: /sums and gradOut must not share memory/ });
  t.throws(l({ ...b, variant: 'nope' }), { name: 'RangeError', message: /variant/ });
  t.throws(() => binding.learnedRangeBackwardAsync({ ...b, quantMin: 1.5 } as never), RangeError, 'async form validates synchronously');
});

// ------------------------------------------------------------------ modules vs their former JavaScript
/** LearnedActQuant's forward and backward as the JavaScript of commit 3e914cf computed them (verbatim loops). */
function formerActQuant(x: Float32Array, g: Float32Array, bits: number, lo: number, hi: number, dropProb: number, seed: number) {
  const qp = chooseQParams({ min: lo, max: hi, bits });
  const out = new Float32Array(x.length);
  fakeQuantizeRef({ x, out, scale: qp.scale, zeroPoint: qp.zeroPoint, quantMin: qp.quantMin, quantMax: qp.quantMax });
  let drop: Uint8Array | null = null;
  let r = seed;
  if (dropProb > 0) {
    drop = new Uint8Array(x.length);
    const threshold = Math.floor(dropProb * 4294967296);
    for (let i = 0; i < x.length; i++) {
      r ^= r << 13;
      r ^= r >>> 17;
      r ^= r << 5;
      const d = r >>> 0 < threshold ? 1 : 0;
      drop[i] = d;
      if (d) out[i] = x[i]!;
    }
  }
  const s = qp.scale[0]!;
  const zp = qp.zeroPoint[0]!;
  const gi = new Float32Array(x.length);
  let gLo = 0;
  let gHi = 0;
  let gS = 0;
  for (let i = 0; i < x.length; i++) {
    const gv = g[i]!;
    if (drop !== null && drop[i] === 1) {
      gi[i] = gv;
      continue;
    }
    const xs = Math.fround(x[i]! / s);
    const rr = roundHalfEven(xs);
    const q = rr + zp;
    if (q < qp.quantMin) {
      gi[i] = 0;
      gLo += gv;
    } else if (q > qp.quantMax) {
      gi[i] = 0;
      gHi += gv;
    } else {
      gi[i] = gv;
      gS += gv * (rr - xs);
    }
  }
  const Q = qp.quantMax - qp.quantMin;
  return { out, gi, dA: (gLo - gS / Q) * lo, dB: (gHi + gS / Q) * hi, state: dropProb > 0 ? r >>> 0 || 0x9e3779b9 : seed };
}

t.test('LearnedActQuant (native) = its former JavaScript: output, gradient, range gradients, QDrop stream across steps', async (t) => {
  for (const [shape, dropProb, bits] of [[[2, 9, 9, 16], 0, 4], [[4, 28, 28, 64], 0.5, 6], [[3, 7, 5, 3], 0.3, 8], [[64, 130], 0.5, 2]] as const) {
    const n = shape.reduce((a, b) => a * b, 1);
    const m = new LearnedActQuant(bits, -1.5 - rand(), 2 + rand());
    const [lo, hi] = m.range; // float32, as its buffers hold them (a = b = 0)
    m.dropProb = dropProb;
    m.train(true);
    m.reseed(4242);
    let seed = 4242;
    for (let step = 0; step < 2; step++) {
      const x = makeX(n, (hi - lo) / (2 ** bits - 1), 3, 0, 2 ** bits - 1, false);
      const g = makeG(n, false);
      const want = formerActQuant(x, g, bits, lo, hi, dropProb, seed);
      seed = want.state;
      m.a.zeroGrad();
      m.b.zeroGrad();
      const out = m.forward(Tensor.from(x, [...shape]) as FTensor);
      const gi = m.backward(Tensor.from(g, [...shape]) as FTensor);
      t.equal(firstFloatDiff(out.data as Float32Array, want.out), -1, `${shape} p=${dropProb} step ${step}: output`);
      t.equal(firstFloatDiff(gi.data as Float32Array, want.gi), -1, `${shape} p=${dropProb} step ${step}: gradient to x`);
      const ga = m.a.grad!.data[0]!;
      const gb = m.b.grad!.data[0]!;
      t.ok(Object.is(Math.fround(want.dA), ga) || Object.is(want.dA, ga), `${shape} step ${step}: d a (${ga} vs ${want.dA})`);
      t.ok(Object.is(Math.fround(want.dB), gb) || Object.is(want.dB, gb), `${shape} step ${step}: d b (${gb} vs ${want.dB})`);
    }
  }
});

t.test('ClippedWeightFakeQuant learned (native sums) = its former JavaScript ratio gradients', async (t) => {
  const C = 24;
  const N = 3 * 3 * 17;
  const w = Tensor.from(Float32Array.from({ length: C * N }, () => (rand() - 0.5) * 0.4 * (rand() < 0.02 ? 5 : 1)), [C, N]) as FTensor;
  const g = Float32Array.from({ length: C * N }, () => rand() - 0.5);
  const q = new ClippedWeightFakeQuant({ bits: 4, learned: true }).initRatios(w, C, N);
  q.train(true);
  const qp = q.qparams(w, C, N);
  q.transform(w, C, N);
  const gradW = Tensor.zeros([C, N]) as FTensor;
  q.backwardTransform(Tensor.from(g, [C, N]) as FTensor, gradW, false);
  const [pl, ph] = q.ratioParameters();
  const Q = qp.quantMax - qp.quantMin;
  let worst = 0;
  for (let c = 0; c < C; c++) {
    const s = qp.scale[c]!;
    const zp = qp.zeroPoint[c]!;
    let gLo = 0;
    let gHi = 0;
    let gS = 0;
    for (let i = c * N; i < (c + 1) * N; i++) {
      const xs = Math.fround(w.data[i]! / s);
      const r = roundHalfEven(xs);
      const qq = r + zp;
      const gv = g[i]!;
      if (qq < qp.quantMin) gLo += gv;
      else if (qq > qp.quantMax) gHi += gv;
      else gS += gv * (r - xs);
    }
    const dl = qp.min[c]! < 0 ? (gLo - gS / Q) * qp.min[c]! : 0;
    const dh = qp.max[c]! > 0 ? (gHi + gS / Q) * qp.max[c]! : 0;
    if (Math.fround(dl) !== pl!.grad!.data[c] || Math.fround(dh) !== ph!.grad!.data[c]) worst++;
  }
  t.equal(worst, 0, 'every channel: the same ratio gradients');
});
