// NHWC convolutions: conv2d, conv2dBackwardInput, conv2dBackwardWeight
// (fp32) and conv2dU8S8 (int8), every variant against float64 / integer JS
// references, adjoint identities, thread-count determinism, async forms and
// argument validation.
import t, { type Test } from 'tap';
import { binding } from '../lib/binding.js';
import type { Conv2dGeometry, Int8Epilogue, PackedWeights } from '../binding.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 0xc0417);
t.comment(`conv seed ${SEED}`);
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
const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)];
function randF32(len: number): Float32Array {
  const a = new Float32Array(len);
  for (let i = 0; i < len; i++) a[i] = rand() * 2 - 1;
  return a;
}
function randU8(len: number): Uint8Array {
  const a = new Uint8Array(len);
  for (let i = 0; i < len; i++) a[i] = randInt(0, 255);
  return a;
}
function randS8(len: number): Int8Array {
  const a = new Int8Array(len);
  for (let i = 0; i < len; i++) a[i] = randInt(-128, 127);
  return a;
}

// ------------------------------------------------------------ geometry
interface Geom extends Required<Conv2dGeometry> {
  oh: number;
  ow: number;
}
function geom(o: Conv2dGeometry): Geom {
  const g = {
    strideH: 1, strideW: 1, padTop: 0, padLeft: 0, padBottom: 0, padRight: 0, dilationH: 1, dilationW: 1, groups: 1,
    ...o,
  } as Geom;
  g.oh = Math.floor((g.h + g.padTop + g.padBottom - g.dilationH * (g.kh - 1) - 1) / g.strideH) + 1;
  g.ow = Math.floor((g.w + g.padLeft + g.padRight - g.dilationW * (g.kw - 1) - 1) / g.strideW) + 1;
  return g;
}
function dims(g: Geom) {
  const cg = g.c / g.groups;
  return { x: g.n * g.h * g.w * g.c, w: g.cout * g.kh * g.kw * cg, out: g.n * g.oh * g.ow * g.cout, cg };
}
function desc(g: Geom): string {
  return `n${g.n} ${g.h}x${g.w}x${g.c}->${g.cout} k${g.kh}x${g.kw} s${g.strideH},${g.strideW} ` +
    `p${g.padTop},${g.padLeft},${g.padBottom},${g.padRight} d${g.dilationH},${g.dilationW} g${g.groups}`;
}
/** Geometry fields only (what the binding's options expect). */
function gopts(g: Geom): Conv2dGeometry {
  const { oh: _oh, ow: _ow, ...rest } = g;
  return rest;
}

// Visits every (output pixel, output channel, tap, input channel) term.
function forEachTerm(g: Geom, f: (o: number, xi: number, wi: number) => void): void {
  const cg = g.c / g.groups, coutg = g.cout / g.groups;
  for (let n = 0; n < g.n; n++)
    for (let oy = 0; oy < g.oh; oy++)
      for (let ox = 0; ox < g.ow; ox++)
        for (let co = 0; co < g.cout; co++) {
          const grp = Math.floor(co / coutg);
          const o = ((n * g.oh + oy) * g.ow + ox) * g.cout + co;
          for (let ky = 0; ky < g.kh; ky++) {
            const iy = oy * g.strideH - g.padTop + ky * g.dilationH;
            if (iy < 0 || iy >= g.h) continue;
            for (let kx = 0; kx < g.kw; kx++) {
              const ix = ox * g.strideW - g.padLeft + kx * g.dilationW;
              if (ix < 0 || ix >= g.w) continue;
              const xb = ((n * g.h + iy) * g.w + ix) * g.c + grp * cg;
              const wb = ((co * g.kh + ky) * g.kw + kx) * cg;
              for (let ci = 0; ci < cg; ci++) f(o, xb + ci, wb + ci);
            }
          }
        }
}

interface Ref {
  v: Float64Array; // exact-ish value (float64)
  abs: Float64Array; // sum of |terms| (scale for the tolerance)
  terms: number; // most terms summed into one element
}
function refForward(g: Geom, x: ArrayLike<number>, w: ArrayLike<number>, bias?: ArrayLike<number>): Ref {
  const d = dims(g);
  const v = new Float64Array(d.out), abs = new Float64Array(d.out);
  forEachTerm(g, (o, xi, wi) => {
    const p = x[xi] * w[wi];
    v[o] += p;
    abs[o] += Math.abs(p);
  });
  if (bias)
    for (let i = 0; i < d.out; i++) {
      v[i] += bias[i % g.cout];
      abs[i] += Math.abs(bias[i % g.cout]);
    }
  return { v, abs, terms: g.kh * g.kw * d.cg + 1 };
}
function refBackwardInput(g: Geom, gout: Float32Array, w: Float32Array): Ref {
  const d = dims(g);
  const v = new Float64Array(d.x), abs = new Float64Array(d.x);
  forEachTerm(g, (o, xi, wi) => {
    const p = gout[o] * w[wi];
    v[xi] += p;
    abs[xi] += Math.abs(p);
  });
  return { v, abs, terms: g.kh * g.kw * (g.cout / g.groups) };
}
function refBackwardWeight(g: Geom, x: Float32Array, gout: Float32Array): { w: Ref; b: Ref } {
  const d = dims(g);
  const v = new Float64Array(d.w), abs = new Float64Array(d.w);
  forEachTerm(g, (o, xi, wi) => {
    const p = gout[o] * x[xi];
    v[wi] += p;
    abs[wi] += Math.abs(p);
  });
  const bv = new Float64Array(g.cout), babs = new Float64Array(g.cout);
  for (let i = 0; i < d.out; i++) {
    bv[i % g.cout] += gout[i];
    babs[i % g.cout] += Math.abs(gout[i]);
  }
  const pixels = g.n * g.oh * g.ow;
  return { w: { v, abs, terms: pixels }, b: { v: bv, abs: babs, terms: pixels } };
}

// Tolerance: an fp32 sum of k products, in any order and with or without
// FMA, is within about (k + 2) * 2^-24 * sum|terms| of the exact value (the
// classical bound gamma_k for recursive summation; blocked/pairwise orders do
// better). `prev` adds the rounding of the final accumulate step.
const U = 2 ** -24;
function checkClose(t: Tap, got: Float32Array, ref: Ref, what: string, prev?: Float32Array): void {
  let bad = 0, first = '';
  for (let i = 0; i < ref.v.length; i++) {
    const want = ref.v[i] + (prev ? prev[i] : 0);
    const tol = (ref.terms + 3) * U * (ref.abs[i] + (prev ? Math.abs(prev[i]) : 0)) + 1e-30;
    const err = Math.abs(got[i] - want);
    if (!(err <= tol)) {
      if (!bad) first = `[${i}] got ${got[i]} want ${want} (tol ${tol.toExponential(2)})`;
      bad++;
    }
  }
  t.equal(bad, 0, `${what}${bad ? ': ' + bad + ' mismatches, first ' + first : ''}`);
}
type Tap = Test;

function nanF32(len: number): Float32Array {
  return new Float32Array(len).fill(NaN);
}
function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  if (ua.length !== ub.length) return false;
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}

// ------------------------------------------------------------ variants
const info = binding.info();
function variantsOf(kernel: string): { name: string; supported: boolean }[] {
  return info.variants[kernel] ?? [];
}
const isDepthwise = (g: Geom) => g.groups === g.c && g.cout === g.c;
/** Every variant name the fp32 op accepts for this geometry (unsupported ones reported as skips). */
function fp32Variants(t: Tap, op: 'f32' | 'backward_input_f32' | 'backward_weight_f32', g: Geom): string[] {
  const names: string[] = [];
  const tables = [`conv2d_${op}`, 'sgemm'];
  if (isDepthwise(g)) tables.unshift(`conv2d_depthwise_${op}`);
  for (const k of tables)
    for (const v of variantsOf(k)) {
      if (!v.supported) {
        t.comment(`skip ${v.name}: not supported on this CPU`);
        continue;
      }
      names.push(v.name);
    }
  return names;
}

// ------------------------------------------------------------ random shapes
function randomGeom(): Geom {
  for (;;) {
    const kind = pick(['g1', 'g1', 'grouped', 'dw', 'dw'] as const);
    const k = pick([1, 3, 5, 7]);
    const kh = rand() < 0.8 ? k : pick([1, 3, 5]);
    const kw = rand() < 0.8 ? k : pick([1, 3, 5]);
    let c: number, cout: number, groups: number;
    if (kind === 'g1') {
      c = pick([1, 3, 7, 17]);
      cout = pick([1, 4, 7, 17]);
      groups = 1;
    } else if (kind === 'grouped') {
      groups = pick([2, 3]);
      c = groups * pick([1, 3, 5]);
      cout = groups * pick([1, 2, 7]);
    } else {
      c = pick([1, 3, 7, 17, 33]);
      cout = c;
      groups = c;
    }
    const o: Conv2dGeometry = {
      n: randInt(1, 3), h: randInt(1, 11), w: randInt(1, 11), c, cout, kh, kw, groups,
      strideH: pick([1, 1, 2]), strideW: pick([1, 1, 2]),
      padTop: randInt(0, 3), padLeft: randInt(0, 3), padBottom: randInt(0, 3), padRight: randInt(0, 3),
      dilationH: rand() < 0.2 ? 2 : 1, dilationW: rand() < 0.2 ? 2 : 1,
    };
    const g = geom(o);
    if (g.oh >= 1 && g.ow >= 1) return g;
  }
}

// Fixed shapes covering the paths (pointwise GEMM, im2col, stride-1 flipped
// backward, col2im, grouped, depthwise interior/borders, the GDC head).
const fixed: Geom[] = [
  geom({ n: 2, h: 6, w: 5, c: 7, cout: 17, kh: 1, kw: 1 }),
  geom({ n: 1, h: 9, w: 8, c: 17, cout: 7, kh: 3, kw: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  geom({ n: 3, h: 9, w: 10, c: 3, cout: 7, kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 0, padLeft: 1, padBottom: 1, padRight: 0 }),
  geom({ n: 1, h: 11, w: 11, c: 5, cout: 4, kh: 5, kw: 5, dilationH: 2, dilationW: 2, padTop: 3, padLeft: 2, padBottom: 4, padRight: 5 }),
  geom({ n: 2, h: 8, w: 8, c: 6, cout: 4, kh: 3, kw: 3, groups: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  geom({ n: 2, h: 13, w: 21, c: 37, cout: 37, kh: 3, kw: 3, groups: 37, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  geom({ n: 2, h: 12, w: 19, c: 40, cout: 40, kh: 3, kw: 3, groups: 40, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  geom({ n: 2, h: 7, w: 7, c: 24, cout: 24, kh: 7, kw: 7, groups: 24 }),
  geom({ n: 1, h: 5, w: 30, c: 9, cout: 9, kh: 1, kw: 7, groups: 9, padLeft: 3, padRight: 3, dilationW: 2 }),
  geom({ n: 1, h: 10, w: 10, c: 4, cout: 8, kh: 3, kw: 3, groups: 4, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  geom({ n: 1, h: 4, w: 4, c: 3, cout: 5, kh: 3, kw: 3, strideH: 1, strideW: 1, padTop: 3, padLeft: 0, padBottom: 0, padRight: 3 }),
  // >= 16 input channels per group: stride-1 backward input as a flipped forward convolution.
  geom({ n: 2, h: 6, w: 7, c: 32, cout: 6, kh: 3, kw: 3, groups: 2, padTop: 1, padLeft: 2, padBottom: 0, padRight: 1 }),
  geom({ n: 1, h: 9, w: 6, c: 16, cout: 5, kh: 5, kw: 3, dilationH: 2, padTop: 2, padLeft: 1, padBottom: 6, padRight: 1 }),
];
const shapes: Geom[] = [...fixed];
for (let i = 0; i < 14; i++) shapes.push(randomGeom());

// ------------------------------------------------------------ fp32 tests
t.test('conv2d forward: every variant vs float64 reference', async (t) => {
  for (const g of shapes) {
    const d = dims(g);
    const x = randF32(d.x), w = randF32(d.w), bias = rand() < 0.6 ? randF32(g.cout) : undefined;
    const ref = refForward(g, x, w, bias);
    for (const variant of fp32Variants(t, 'f32', g)) {
      const out = nanF32(d.out);
      binding.conv2d({ ...gopts(g), x, weight: w, bias, out, variant });
      checkClose(t, out, ref, `${desc(g)} ${variant}${bias ? ' +bias' : ''}`);
    }
  }
});

t.test('conv2dBackwardInput: every variant vs float64 reference, accumulate', async (t) => {
  for (const g of shapes) {
    const d = dims(g);
    const gout = randF32(d.out), w = randF32(d.w);
    const ref = refBackwardInput(g, gout, w);
    for (const variant of fp32Variants(t, 'backward_input_f32', g)) {
      const gradIn = nanF32(d.x);
      binding.conv2dBackwardInput({ ...gopts(g), gradOut: gout, weight: w, gradIn, variant });
      checkClose(t, gradIn, ref, `${desc(g)} ${variant}`);
      const prev = randF32(d.x), acc = prev.slice();
      binding.conv2dBackwardInput({ ...gopts(g), gradOut: gout, weight: w, gradIn: acc, accumulate: true, variant });
      checkClose(t, acc, ref, `${desc(g)} ${variant} accumulate`, prev);
    }
  }
});

t.test('conv2dBackwardWeight: every variant vs float64 reference, bias grad, accumulate', async (t) => {
  for (const g of shapes) {
    const d = dims(g);
    const x = randF32(d.x), gout = randF32(d.out);
    const ref = refBackwardWeight(g, x, gout);
    for (const variant of fp32Variants(t, 'backward_weight_f32', g)) {
      const gw = nanF32(d.w), gb = nanF32(g.cout);
      binding.conv2dBackwardWeight({ ...gopts(g), x, gradOut: gout, gradWeight: gw, gradBias: gb, variant });
      checkClose(t, gw, ref.w, `${desc(g)} ${variant} gradWeight`);
      checkClose(t, gb, ref.b, `${desc(g)} ${variant} gradBias`);
      const pw = randF32(d.w), pb = randF32(g.cout), aw = pw.slice(), ab = pb.slice();
      binding.conv2dBackwardWeight({ ...gopts(g), x, gradOut: gout, gradWeight: aw, gradBias: ab, accumulate: true, variant });
      checkClose(t, aw, ref.w, `${desc(g)} ${variant} gradWeight accumulate`, pw);
      checkClose(t, ab, ref.b, `${desc(g)} ${variant} gradBias accumulate`, pb);
      const gw2 = nanF32(d.w);
      binding.conv2dBackwardWeight({ ...gopts(g), x, gradOut: gout, gradWeight: gw2, variant });
      checkClose(t, gw2, ref.w, `${desc(g)} ${variant} gradWeight without gradBias`);
    }
  }
});

// <conv(x + dx), g> - <conv(x), g> = <dx, backwardInput(g)>, and the same
// with the weights. Computed in float64 from the fp32 results; the bound is
// the sum of each fp32 result's own tolerance weighted by the other factor.
t.test('adjoint identities hold for the default variants', async (t) => {
  for (const g of shapes.slice(0, 16)) {
    const d = dims(g);
    const x = randF32(d.x), dx = randF32(d.x), w = randF32(d.w), dw = randF32(d.w), gout = randF32(d.out);
    const bias = randF32(g.cout);
    const xdx = new Float32Array(d.x), wdw = new Float32Array(d.w);
    for (let i = 0; i < d.x; i++) xdx[i] = x[i] + dx[i];
    for (let i = 0; i < d.w; i++) wdw[i] = w[i] + dw[i];
    const y0 = new Float32Array(d.out), y1 = new Float32Array(d.out), y2 = new Float32Array(d.out);
    binding.conv2d({ ...gopts(g), x, weight: w, bias, out: y0 });
    binding.conv2d({ ...gopts(g), x: xdx, weight: w, bias, out: y1 });
    binding.conv2d({ ...gopts(g), x, weight: wdw, bias, out: y2 });
    const gi = new Float32Array(d.x), gw = new Float32Array(d.w);
    binding.conv2dBackwardInput({ ...gopts(g), gradOut: gout, weight: w, gradIn: gi });
    binding.conv2dBackwardWeight({ ...gopts(g), x, gradOut: gout, gradWeight: gw });
    // Scales of the fp32 errors of each quantity.
    const a0 = refForward(g, x.map(Math.abs), w.map(Math.abs), bias.map(Math.abs));
    const a1 = refForward(g, xdx.map(Math.abs), w.map(Math.abs), bias.map(Math.abs));
    const a2 = refForward(g, x.map(Math.abs), wdw.map(Math.abs), bias.map(Math.abs));
    const ai = refBackwardInput(g, gout.map(Math.abs), w.map(Math.abs));
    const aw = refBackwardWeight(g, x.map(Math.abs), gout.map(Math.abs)).w;
    let lhsX = 0, lhsW = 0, rhsX = 0, rhsW = 0, tolX = 0, tolW = 0;
    for (let i = 0; i < d.out; i++) {
      lhsX += (y1[i] - y0[i]) * gout[i];
      lhsW += (y2[i] - y0[i]) * gout[i];
      tolX += (a0.terms + 3) * U * (a0.v[i] + a1.v[i]) * Math.abs(gout[i]);
      tolW += (a0.terms + 3) * U * (a0.v[i] + a2.v[i]) * Math.abs(gout[i]);
    }
    for (let i = 0; i < d.x; i++) {
      rhsX += dx[i] * gi[i];
      tolX += (ai.terms + 3) * U * ai.v[i] * Math.abs(dx[i]);
    }
    for (let i = 0; i < d.w; i++) {
      rhsW += dw[i] * gw[i];
      tolW += (aw.terms + 3) * U * aw.v[i] * Math.abs(dw[i]);
    }
    t.ok(Math.abs(lhsX - rhsX) <= tolX, `${desc(g)} input adjoint: ${lhsX} vs ${rhsX} (tol ${tolX.toExponential(2)})`);
    t.ok(Math.abs(lhsW - rhsW) <= tolW, `${desc(g)} weight adjoint: ${lhsW} vs ${rhsW} (tol ${tolW.toExponential(2)})`);
  }
});

// The pool's workers read the job generation when they start; a job posted
// before a fresh worker has started can be missed (threadpool.cc race,
// reported to the lead). Give new workers a moment before the next call.
async function setThreads(n: number): Promise<void> {
  binding.setThreads(n);
  await new Promise((r) => setTimeout(r, 30));
}

t.test('weight gradient is identical with 1 and 2 threads', async (t) => {
  const before = binding.getThreads();
  const cases: Geom[] = [
    geom({ n: 4, h: 20, w: 20, c: 16, cout: 24, kh: 3, kw: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
    geom({ n: 3, h: 24, w: 24, c: 32, cout: 16, kh: 1, kw: 1 }),
    geom({ n: 2, h: 17, w: 17, c: 8, cout: 8, kh: 3, kw: 3, groups: 2, strideH: 2, strideW: 2 }),
    geom({ n: 3, h: 20, w: 23, c: 40, cout: 40, kh: 3, kw: 3, groups: 40, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  ];
  for (const g of cases) {
    const d = dims(g);
    const x = randF32(d.x), gout = randF32(d.out);
    const variants = ['', ...(isDepthwise(g) ? ['gemm'] : [])];
    for (const variant of variants) {
      const res: Float32Array[] = [];
      for (const threads of [1, 2, 1]) {
        await setThreads(threads);
        const gw = nanF32(d.w), gb = nanF32(g.cout);
        binding.conv2dBackwardWeight({ ...gopts(g), x, gradOut: gout, gradWeight: gw, gradBias: gb, variant });
        const all = new Float32Array(d.w + g.cout);
        all.set(gw);
        all.set(gb, d.w);
        res.push(all);
      }
      t.ok(bitsEqual(res[0], res[1]) && bitsEqual(res[0], res[2]), `${desc(g)} ${variant || 'default'}: 1 vs 2 threads bit-identical`);
    }
  }
  await setThreads(before);
});

t.test('async forms give the same results as the sync forms', async (t) => {
  for (const g of [fixed[1], fixed[5], fixed[2]]) {
    const d = dims(g);
    const x = randF32(d.x), w = randF32(d.w), bias = randF32(g.cout), gout = randF32(d.out);
    const o1 = nanF32(d.out), o2 = nanF32(d.out);
    binding.conv2d({ ...gopts(g), x, weight: w, bias, out: o1 });
    const p = binding.conv2dAsync({ ...gopts(g), x, weight: w, bias, out: o2 });
    t.type(p, Promise);
    await p;
    t.ok(bitsEqual(o1, o2), `${desc(g)} conv2dAsync`);
    const i1 = nanF32(d.x), i2 = nanF32(d.x);
    binding.conv2dBackwardInput({ ...gopts(g), gradOut: gout, weight: w, gradIn: i1 });
    await binding.conv2dBackwardInputAsync({ ...gopts(g), gradOut: gout, weight: w, gradIn: i2 });
    t.ok(bitsEqual(i1, i2), `${desc(g)} conv2dBackwardInputAsync`);
    const w1 = nanF32(d.w), w2 = nanF32(d.w), b1 = nanF32(g.cout), b2 = nanF32(g.cout);
    binding.conv2dBackwardWeight({ ...gopts(g), x, gradOut: gout, gradWeight: w1, gradBias: b1 });
    await binding.conv2dBackwardWeightAsync({ ...gopts(g), x, gradOut: gout, gradWeight: w2, gradBias: b2 });
    t.ok(bitsEqual(w1, w2) && bitsEqual(b1, b2), `${desc(g)} conv2dBackwardWeightAsync`);
  }
  // Errors are thrown synchronously by the async forms too (validation happens before queuing).
  t.throws(() => binding.conv2dAsync({ ...gopts(fixed[0]), x: new Float32Array(1), weight: new Float32Array(1000), out: new Float32Array(1000) }), RangeError);
});

t.test('validation: fp32 convolutions', async (t) => {
  const g = fixed[1];
  const d = dims(g);
  const base = { ...gopts(g), x: randF32(d.x), weight: randF32(d.w), out: new Float32Array(d.out) };
  const call = (o: Record<string, unknown>) => binding.conv2d(o as never);
  t.throws(() => (binding.conv2d as (o?: unknown) => void)(), { name: 'TypeError' }, 'no options');
  t.throws(() => call({ ...base, x: new Float64Array(d.x) }), { name: 'TypeError', message: /conv2d: x must be a Float32Array/ });
  t.throws(() => call({ ...base, weight: undefined }), { name: 'TypeError', message: /weight is required/ });
  t.throws(() => call({ ...base, n: '1' }), { name: 'TypeError', message: /conv2d: n/ });
  t.throws(() => call({ ...base, kh: 0 }), { name: 'RangeError', message: /conv2d: kh/ });
  t.throws(() => call({ ...base, strideH: 0 }), { name: 'RangeError', message: /strideH/ });
  t.throws(() => call({ ...base, padLeft: -1 }), { name: 'RangeError', message: /padLeft/ });
  t.throws(() => call({ ...base, dilationW: 1.5 }), { name: 'RangeError', message: /dilationW/ });
  t.throws(() => call({ ...base, groups: 2 }), { name: 'RangeError', message: /groups \(2\) must divide c \(17\)/ });
  t.throws(() => call({ ...base, c: 18, groups: 2, x: randF32(g.n * g.h * g.w * 18) }), { name: 'RangeError', message: /must divide cout/ });
  t.throws(() => call({ ...base, h: 1, padTop: 0, padBottom: 0 }), { name: 'RangeError', message: /output height would be < 1/ });
  t.throws(() => call({ ...base, w: 2, padLeft: 0, padRight: 0, dilationW: 2 }), { name: 'RangeError', message: /output width would be < 1/ });
  t.throws(() => call({ ...base, x: randF32(d.x - 1) }), { name: 'RangeError', message: /conv2d: x has \d+ elements; needs at least/ });
  t.throws(() => call({ ...base, weight: randF32(d.w - 1) }), { name: 'RangeError', message: /weight has/ });
  t.throws(() => call({ ...base, bias: randF32(g.cout - 1) }), { name: 'RangeError', message: /bias has/ });
  t.throws(() => call({ ...base, out: new Float32Array(d.out - 1) }), { name: 'RangeError', message: /out has/ });
  t.throws(() => call({ ...base, variant: 'nope' }), { name: 'RangeError', message: /variant 'nope'/ });
  t.throws(() => call({ ...base, variant: 'conv2d_depthwise_f32_ref' }), { name: 'RangeError', message: /variant/ },
    'a depthwise variant on a non-depthwise geometry');
  t.throws(() => call({ ...base, out: base.x }), { name: 'RangeError', message: /out must not overlap x/ });
  const bi = { ...gopts(g), gradOut: randF32(d.out), weight: randF32(d.w), gradIn: new Float32Array(d.x) };
  t.throws(() => binding.conv2dBackwardInput({ ...bi, gradIn: new Float32Array(d.x - 1) }), { name: 'RangeError', message: /conv2dBackwardInput: gradIn has/ });
  t.throws(() => binding.conv2dBackwardInput({ ...bi, accumulate: 1 as never }), { name: 'TypeError', message: /accumulate must be a boolean/ });
  t.throws(() => binding.conv2dBackwardInput({ ...bi, gradOut: new Int32Array(d.out) as never }), { name: 'TypeError', message: /gradOut must be a Float32Array/ });
  const bw = { ...gopts(g), x: randF32(d.x), gradOut: randF32(d.out), gradWeight: new Float32Array(d.w) };
  t.throws(() => binding.conv2dBackwardWeight({ ...bw, gradBias: new Float32Array(g.cout - 1) }), { name: 'RangeError', message: /conv2dBackwardWeight: gradBias has/ });
  t.throws(() => binding.conv2dBackwardWeight({ ...bw, gradWeight: new Float32Array(d.w - 1) }), { name: 'RangeError', message: /gradWeight has/ });
  t.throws(() => binding.conv2dBackwardWeight({ ...bw, gradWeight: bw.x.subarray(0, d.w) }), { name: 'RangeError', message: /gradWeight must not overlap x/ });
});

// ------------------------------------------------------------ int8
/** Round half to even (JS Math.round rounds half up). */
function rne(v: number): number {
  if (!Number.isFinite(v)) return v;
  const f = Math.floor(v), d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}
const f32 = Math.fround;

/** acc = sum (x - xzp) * (w - wzp[co]) over in-bounds taps (padding reads xzp: contributes 0); int32 wrap. */
function refAccS32(g: Geom, x: Uint8Array, xzp: number, w: Int8Array, wzp?: Int32Array): Int32Array {
  const d = dims(g);
  const acc = new Float64Array(d.out);
  const coutOfW = (wi: number) => Math.floor(wi / (g.kh * g.kw * d.cg));
  forEachTerm(g, (o, xi, wi) => {
    acc[o] += (x[xi] - xzp) * (w[wi] - (wzp ? wzp[coutOfW(wi)] : 0));
  });
  const r = new Int32Array(d.out);
  for (let i = 0; i < d.out; i++) r[i] = Number(BigInt.asIntN(32, BigInt(acc[i])));
  return r;
}

interface Epi extends Int8Epilogue {
  outType: 's32' | 'f32' | 'u8' | 's8';
}
/** The Int8Epilogue of binding.d.ts in float32 arithmetic. */
function refEpilogue(acc: Int32Array, cout: number, e: Epi): Int32Array | Float32Array | Uint8Array | Int8Array {
  if (e.outType === 's32') return acc.slice();
  const out = e.outType === 'f32' ? new Float32Array(acc.length) : e.outType === 'u8' ? new Uint8Array(acc.length) : new Int8Array(acc.length);
  const tmin = e.outType === 'u8' ? 0 : -128, tmax = e.outType === 'u8' ? 255 : 127;
  const lo = e.clampMin ?? tmin, hi = e.clampMax ?? tmax, os = f32(e.outScale ?? 1), zp = e.outZeroPoint ?? 0;
  for (let i = 0; i < acc.length; i++) {
    const j = i % cout;
    let y = f32(acc[i]);
    if (e.scale) y = f32(y * e.scale[j]);
    y = f32(y + (e.bias ? e.bias[j] : 0));
    if (e.activation === 'relu') y = y > 0 ? y : 0;
    else if (e.activation === 'prelu') y = y < 0 ? f32(y * e.slope![j]) : y;
    if (e.outType === 'f32') {
      out[i] = y;
      continue;
    }
    let q = f32(rne(f32(y / os)) + zp);
    if (!(q >= lo)) q = lo;
    if (q > hi) q = hi;
    out[i] = q;
  }
  return out;
}

function randomEpilogues(cout: number, accScale: number): Epi[] {
  const scale = new Float32Array(cout), bias = new Float32Array(cout), slope = new Float32Array(cout);
  for (let j = 0; j < cout; j++) {
    scale[j] = (0.2 + rand()) / accScale;
    bias[j] = rand() * 2 - 1;
    slope[j] = rand() * 0.5 - 0.1;
  }
  const eps: Epi[] = [
    { outType: 's32' },
    { outType: 'f32' },
    { outType: 'f32', scale, bias, activation: 'prelu', slope },
    { outType: 'f32', scale, activation: 'relu' },
    { outType: 'u8', scale, bias, activation: 'relu', outScale: 0.01, outZeroPoint: 3 },
    { outType: 'u8', scale, bias, outScale: 0.004, outZeroPoint: 128, clampMin: 5, clampMax: 250 },
    { outType: 's8', scale, bias, activation: 'prelu', slope, outScale: 0.0125, outZeroPoint: -7 },
    { outType: 's8', outScale: 3, outZeroPoint: 0, clampMin: -100, clampMax: 90 },
  ];
  return eps;
}

function int8Out(type: Epi['outType'], len: number): Int32Array | Float32Array | Uint8Array | Int8Array {
  switch (type) {
    case 's32': return new Int32Array(len).fill(0x5aababab);
    case 'f32': return new Float32Array(len).fill(NaN);
    case 'u8': return new Uint8Array(len).fill(0xab);
    default: return new Int8Array(len).fill(-85);
  }
}
function sameBits(a: ArrayLike<number>, b: ArrayLike<number>): { ok: boolean; first: string } {
  if (a.length !== b.length) return { ok: false, first: `length ${a.length} vs ${b.length}` };
  for (let i = 0; i < a.length; i++)
    if (!Object.is(a[i], b[i]) && !(Number.isNaN(a[i]) && Number.isNaN(b[i])))
      return { ok: false, first: `[${i}] got ${a[i]} want ${b[i]}` };
  return { ok: true, first: '' };
}

const int8Shapes: Geom[] = [
  geom({ n: 2, h: 5, w: 7, c: 13, cout: 19, kh: 1, kw: 1 }), // direct GEMM
  geom({ n: 1, h: 8, w: 9, c: 7, cout: 17, kh: 3, kw: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  geom({ n: 3, h: 9, w: 7, c: 3, cout: 16, kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 0, padLeft: 1, padBottom: 2, padRight: 0 }),
  geom({ n: 1, h: 10, w: 10, c: 5, cout: 33, kh: 5, kw: 3, dilationH: 2, padTop: 3, padLeft: 1, padBottom: 1, padRight: 2 }),
  geom({ n: 2, h: 6, w: 6, c: 4, cout: 9, kh: 1, kw: 1, strideH: 2, strideW: 2, padTop: 1, padLeft: 0, padBottom: 0, padRight: 1 }),
  geom({ n: 2, h: 13, w: 21, c: 37, cout: 37, kh: 3, kw: 3, groups: 37, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  geom({ n: 1, h: 12, w: 19, c: 40, cout: 40, kh: 3, kw: 3, groups: 40, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }),
  geom({ n: 2, h: 7, w: 7, c: 24, cout: 24, kh: 7, kw: 7, groups: 24 }), // GDC head
  geom({ n: 1, h: 5, w: 30, c: 9, cout: 9, kh: 1, kw: 7, groups: 9, padLeft: 3, padRight: 5, dilationW: 2 }),
  geom({ n: 2, h: 6, w: 11, c: 3, cout: 3, kh: 1, kw: 1, groups: 3 }),
  geom({ n: 1, h: 9, w: 9, c: 17, cout: 17, kh: 5, kw: 5, groups: 17, strideH: 1, strideW: 2, padTop: 2, padLeft: 0, padBottom: 0, padRight: 4 }),
];

function int8Variants(t: Tap, g: Geom): string[] {
  const names: string[] = [];
  for (const v of variantsOf(isDepthwise(g) ? 'conv2d_u8s8_depthwise' : 'gemm_u8s8s32')) {
    if (!v.supported) {
      t.comment(`skip ${v.name}: not supported on this CPU`);
      continue;
    }
    names.push(v.name);
  }
  return names;
}

function int8Weight(g: Geom, w: Int8Array): PackedWeights | Int8Array {
  if (isDepthwise(g)) return w;
  return binding.packWeights({ w, n: g.cout, k: g.kh * g.kw * g.c });
}

t.test('conv2dU8S8: every variant, every epilogue, bit-exact vs integer reference', async (t) => {
  for (const g of int8Shapes) {
    const d = dims(g);
    const x = randU8(d.x), w = randS8(d.w);
    const xzp = pick([0, 128, randInt(1, 254), 255]);
    const wzp = rand() < 0.5 ? Int32Array.from({ length: g.cout }, () => randInt(-3, 3)) : undefined;
    const acc = refAccS32(g, x, xzp, w, wzp);
    const weight = int8Weight(g, w);
    const accScale = 128 * 128 * Math.sqrt(g.kh * g.kw * d.cg);
    for (const variant of int8Variants(t, g))
      for (const e of randomEpilogues(g.cout, accScale)) {
        const want = refEpilogue(acc, g.cout, e);
        const out = int8Out(e.outType, d.out);
        binding.conv2dU8S8({ ...gopts(g), ...e, x, xZeroPoint: xzp, weight, wZeroPoint: wzp, out, variant });
        const r = sameBits(out, want);
        t.ok(r.ok, `${desc(g)} ${variant} ${e.outType}${e.activation ? ' ' + e.activation : ''} xzp ${xzp}${wzp ? ' wzp' : ''} ${r.first}`);
      }
  }
});

t.test('conv2dU8S8: saturation, NaN/Inf epilogue inputs, extreme zero points', async (t) => {
  for (const g of [int8Shapes[1], int8Shapes[5], int8Shapes[8]]) {
    const d = dims(g);
    const x = randU8(d.x), w = randS8(d.w);
    // Extreme weight zero points: w - wzp leaves int16 (the depthwise SIMD
    // kernels then use the reference path) or int8 only (the VNNI kernel then
    // uses the int16 one); sums still fit int32.
    for (const big of [40000, 200]) {
      const wzp = Int32Array.from({ length: g.cout }, (_, j) => (j % 3 === 0 ? big : j % 3 === 1 ? -big : randInt(-128, 127)));
      const xzp = 77;
      const acc = refAccS32(g, x, xzp, w, wzp);
      const scale = Float32Array.from({ length: g.cout }, (_, j) => (j === 0 ? NaN : j === 1 ? Infinity : 1e-3 * (j % 5 + 1)));
      const bias = Float32Array.from({ length: g.cout }, (_, j) => (j === 2 ? -Infinity : j * 0.5));
      const eps: Epi[] = [
        { outType: 's32' },
        { outType: 'f32', scale, bias, activation: 'relu' },
        { outType: 'f32', scale, bias },
        { outType: 'u8', scale, bias, outScale: 1e-3 }, // saturates both ends
        { outType: 's8', scale, bias, activation: 'prelu', slope: scale, outScale: 0.5, outZeroPoint: 127 },
      ];
      const weight = int8Weight(g, w);
      for (const variant of int8Variants(t, g))
        for (const e of eps) {
          const want = refEpilogue(acc, g.cout, e);
          const out = int8Out(e.outType, d.out);
          binding.conv2dU8S8({ ...gopts(g), ...e, x, xZeroPoint: xzp, weight, wZeroPoint: wzp, out, variant });
          const r = sameBits(out, want);
          t.ok(r.ok, `${desc(g)} ${variant} ${e.outType} extreme wzp ${big} ${r.first}`);
        }
    }
  }
});

t.test('conv2dU8S8Async matches the sync form; validation', async (t) => {
  for (const g of [int8Shapes[2], int8Shapes[5]]) {
    const d = dims(g);
    const x = randU8(d.x), w = randS8(d.w), weight = int8Weight(g, w);
    const o1 = new Uint8Array(d.out).fill(0xab), o2 = new Uint8Array(d.out).fill(0xcd);
    const opts = { ...gopts(g), x, weight, xZeroPoint: 9, outType: 'u8' as const, outScale: 64, outZeroPoint: 100 };
    binding.conv2dU8S8({ ...opts, out: o1 });
    const p = binding.conv2dU8S8Async({ ...opts, out: o2 });
    t.type(p, Promise);
    await p;
    t.ok(sameBits(o1, o2).ok, `${desc(g)} async`);
    t.ok(sameBits(o1, refEpilogue(refAccS32(g, x, 9, w), g.cout, { outType: 'u8', outScale: 64, outZeroPoint: 100 })).ok, `${desc(g)} vs reference`);
  }
  const g = int8Shapes[1], d = dims(g);
  const w = randS8(d.w);
  const base = { ...gopts(g), x: randU8(d.x), weight: int8Weight(g, w), outType: 's32' as const, out: new Int32Array(d.out) };
  const call = (o: Record<string, unknown>) => binding.conv2dU8S8(o as never);
  t.throws(() => call({ ...base, x: new Int8Array(d.x) }), { name: 'TypeError', message: /conv2dU8S8: x must be a Uint8Array/ });
  t.throws(() => call({ ...base, x: new Uint8Array(d.x - 1) }), { name: 'RangeError', message: /x has/ });
  t.throws(() => call({ ...base, weight: w }), { name: 'TypeError', message: /weight must be a PackedWeights/ });
  t.throws(() => call({ ...base, weight: undefined }), { name: 'TypeError', message: /weight is required/ });
  t.throws(() => call({ ...base, weight: binding.packWeights({ w, n: g.cout, k: d.w / g.cout - 1 }) }), { name: 'RangeError', message: /weight is packed as n = 17, k = 62; needs n = cout = 17, k = kh\*kw\*c = 63/ });
  t.throws(() => call({ ...base, out: new Float32Array(d.out) }), { name: 'TypeError', message: /out must be a Int32Array/ });
  t.throws(() => call({ ...base, out: new Int32Array(d.out - 1) }), { name: 'RangeError', message: /out has/ });
  t.throws(() => call({ ...base, xZeroPoint: 256 }), { name: 'RangeError', message: /xZeroPoint/ });
  t.throws(() => call({ ...base, wZeroPoint: new Int32Array(g.cout + 1) }), { name: 'RangeError', message: /wZeroPoint has/ });
  t.throws(() => call({ ...base, variant: 'conv2d_u8s8_depthwise_ref' }), { name: 'RangeError', message: /variant/ });
  t.throws(() => call({ ...base, outType: 'f16' }), { name: 'RangeError', message: /outType/ });
  t.throws(() => call({ ...base, outType: 'u8', out: new Uint8Array(d.out), outScale: 0 }), { name: 'RangeError', message: /outScale/ });
  t.throws(() => call({ ...base, scale: new Float32Array(3), outType: 'f32', out: new Float32Array(d.out) }), { name: 'RangeError', message: /scale has 3/ });
  t.throws(() => call({ ...base, activation: 'prelu', outType: 'f32', out: new Float32Array(d.out) }), { name: 'TypeError', message: /slope is required/ });
  const gg = geom({ n: 1, h: 4, w: 4, c: 4, cout: 4, kh: 3, kw: 3, groups: 2 });
  t.throws(() => call({ ...gopts(gg), x: randU8(64), weight: randS8(72), outType: 's32', out: new Int32Array(16) }), { name: 'RangeError', message: /groups must be 1 or c = cout/ });
  const gd = int8Shapes[5], dd = dims(gd);
  const dwBase = { ...gopts(gd), x: randU8(dd.x), weight: randS8(dd.w), outType: 's32' as const, out: new Int32Array(dd.out) };
  t.throws(() => call({ ...dwBase, weight: randS8(dd.w - 1) }), { name: 'RangeError', message: /weight has/ });
  t.throws(() => call({ ...dwBase, weight: int8Weight(int8Shapes[1], w) }), { name: 'TypeError', message: /weight must be a Int8Array/ });
  t.throws(() => call({ ...dwBase, variant: 'avxvnni' }), { name: 'RangeError', message: /variant/ });
  const xs = randU8(dd.out * 4 + 64);
  t.throws(() => call({ ...dwBase, x: xs, out: new Int32Array(xs.buffer, 0, dd.out) }), { name: 'RangeError', message: /out must not overlap x/ });
});
