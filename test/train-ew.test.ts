// Training-step elementwise kernels (native/train_ew*.cc): batchNormForward,
// batchNormBackward, prelu, preluBackward. Every supported variant against a
// float64 reference on random shapes (odd channel and row counts included),
// outputs poisoned with NaN before each call; variants and thread counts
// bit-identical to the reference variant; argument validation.
import t from 'tap';
import { binding } from '../lib/binding.js';

// Outputs of at least 1 MB (footprint) take the non-temporal-store paths: the
// larger shapes below exercise them, the smaller ones the plain paths. (Read
// by the addon at its first streaming decision, i.e. the first call below.)
process.env.QUANTFACE_STREAM_BYTES = '1000000';

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
const randInt = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const f32 = (n: number, lo = -1, hi = 1): Float32Array => Float32Array.from({ length: n }, () => lo + (hi - lo) * rand());
const nanF32 = (n: number): Float32Array => new Float32Array(n).fill(NaN);
const nanF64 = (n: number): Float64Array => new Float64Array(n).fill(NaN);

/** Supported variant suffixes of a kernel (ref last). */
function variants(kernel: string): string[] {
  const vs = binding.info().variants[kernel] ?? [];
  return vs.filter((v) => v.supported).map((v) => v.name.slice(kernel.length + 1));
}
const ALL = variants('bn_stats');

/** Shapes: odd channel and row counts, and one large enough for several reduction blocks. */
function shapes(): [number, number][] {
  const out: [number, number][] = [
    [1, 1], [2, 1], [7, 1], [2, 7], [63, 63], [129, 129], [7, 129], [129, 7], [5000, 3], [1100, 129],
  ];
  for (let i = 0; i < 4; i++) out.push([randInt(2, 300), randInt(1, 140)]);
  out.push([randInt(4000, 9000), 64]);
  return out;
}

function bitsEqual(a: Float32Array | Float64Array, b: Float32Array | Float64Array): number {
  for (let i = 0; i < a.length; i++) if (!(Object.is(a[i], b[i]) || (a[i] === b[i]))) return i;
  return -1;
}

interface BnRef {
  mean: Float64Array;
  invstd: Float64Array;
  varU: Float64Array;
  y: Float64Array;
}
function bnForwardRef(x: Float32Array, M: number, C: number, w: Float32Array, b: Float32Array, eps: number, slope?: Float32Array): BnRef {
  const mean = new Float64Array(C), v = new Float64Array(C), invstd = new Float64Array(C), varU = new Float64Array(C);
  for (let r = 0; r < M; r++) for (let c = 0; c < C; c++) mean[c] += x[r * C + c]!;
  for (let c = 0; c < C; c++) mean[c] /= M;
  for (let r = 0; r < M; r++) for (let c = 0; c < C; c++) v[c] += (x[r * C + c]! - mean[c]!) ** 2;
  for (let c = 0; c < C; c++) {
    invstd[c] = 1 / Math.sqrt(v[c]! / M + eps);
    varU[c] = v[c]! / (M - 1);
  }
  const y = new Float64Array(M * C);
  for (let r = 0; r < M; r++)
    for (let c = 0; c < C; c++) {
      let o = (x[r * C + c]! - mean[c]!) * invstd[c]! * w[c]! + b[c]!;
      if (slope) o = o > 0 ? o : o * slope[slope.length === 1 ? 0 : c]!;
      y[r * C + c] = o;
    }
  return { mean, invstd, varU, y };
}

t.test('variants listed', async (t) => {
  for (const k of ['bn_stats', 'bn_grad_sums', 'channel_affine', 'bn_backward_dx', 'prelu_backward', 'bn_prelu_sums']) {
    const vs = binding.info().variants[k];
    t.ok(vs && vs[vs.length - 1]!.name === `${k}_ref`, `${k}: ref last`);
    t.ok(typeof binding.info().kernels[k] === 'string', `${k}: chosen ${binding.info().kernels[k]}`);
  }
  t.ok(ALL.includes('ref'));
});

t.test('batchNormForward (training) vs float64 reference', async (t) => {
  for (const [M, C] of shapes()) {
    if (M < 2) continue;
    const off = rand() * 8 - 4;
    const x = f32(M * C, off - 2, off + 2);
    const w = f32(C, 0.5, 2), b = f32(C);
    const eps = 1e-5, mom = 0.1;
    const ref = bnForwardRef(x, M, C, w, b, eps);
    let first: { out: Float32Array; rm: Float32Array; rv: Float32Array; mean: Float64Array } | null = null;
    for (const variant of ALL)
      for (const threads of [1, 2]) {
        binding.setThreads(threads);
        const out = nanF32(M * C), mean = nanF64(C), invstd = nanF64(C);
        const rm = f32(C, 0, 0).fill(0.5), rv = new Float32Array(C).fill(2);
        binding.batchNormForward({ x, out, channels: C, weight: w, bias: b, eps, momentum: mom, runningMean: rm, runningVar: rv, mean, invstd, variant });
        let bad = -1;
        for (let i = 0; i < M * C && bad < 0; i++) {
          const c = i % C;
          const tol = 2e-6 * (1 + Math.abs(x[i]! * ref.invstd[c]! * w[c]!) + Math.abs(ref.mean[c]! * ref.invstd[c]! * w[c]!));
          if (!(Math.abs(out[i]! - ref.y[i]!) <= tol)) bad = i;
        }
        t.equal(bad, -1, `${variant} t${threads} M=${M} C=${C}: out${bad >= 0 ? ` at ${bad}: ${out[bad]} vs ${ref.y[bad]}` : ''}`);
        let badS = -1;
        for (let c = 0; c < C && badS < 0; c++) {
          const sd = 1 / ref.invstd[c]!;
          if (!(Math.abs(mean[c]! - ref.mean[c]!) <= 1e-9 * (Math.abs(off) + sd + 1))) badS = c;
          if (!(Math.abs(invstd[c]! - ref.invstd[c]!) <= 1e-7 * ref.invstd[c]!)) badS = c;
          if (!(Math.abs(rm[c]! - Math.fround(0.9 * 0.5 + 0.1 * ref.mean[c]!)) <= 1e-6 * (1 + Math.abs(ref.mean[c]!)))) badS = c;
          if (!(Math.abs(rv[c]! - (0.9 * 2 + 0.1 * ref.varU[c]!)) <= 1e-6 * (2 + ref.varU[c]!))) badS = c;
        }
        t.equal(badS, -1, `${variant} t${threads} M=${M} C=${C}: mean/invstd/running stats`);
        if (!first) first = { out, rm, rv, mean };
        else {
          t.equal(bitsEqual(out, first.out), -1, `${variant} t${threads} M=${M} C=${C}: out bit-identical to ref t1`);
          t.equal(bitsEqual(mean, first.mean), -1, `${variant} t${threads}: mean bit-identical`);
          t.equal(bitsEqual(rv, first.rv), -1, `${variant} t${threads}: runningVar bit-identical`);
        }
      }
  }
  binding.setThreads(0);
});

t.test('batchNormForward: eval mode, fused PReLU, in place', async (t) => {
  for (const [M, C] of shapes()) {
    const x = f32(M * C, -3, 3), w = f32(C, -2, 2), b = f32(C);
    const rm = f32(C), rv = f32(C, 0.1, 3), eps = 1e-3;
    for (const shared of [false, true]) {
      const slope = shared ? f32(1) : f32(C);
      for (const variant of ALL) {
        const out = nanF32(M * C), mean = nanF64(C), invstd = nanF64(C);
        binding.batchNormForward({ x, out, channels: C, weight: w, bias: b, eps, training: false, runningMean: rm, runningVar: rv, slope, mean, invstd, variant });
        let bad = -1;
        for (let i = 0; i < M * C && bad < 0; i++) {
          const c = i % C;
          const inv = 1 / Math.sqrt(rv[c]! + eps);
          let y = (x[i]! - rm[c]!) * inv * w[c]! + b[c]!;
          const s = slope[shared ? 0 : c]!;
          if (y <= 0) y *= s;
          const tol = 2e-6 * (1 + Math.abs(x[i]! * inv * w[c]!) + Math.abs(rm[c]! * inv * w[c]!)) * Math.max(1, Math.abs(s));
          if (!(Math.abs(out[i]! - y) <= tol)) bad = i;
        }
        t.equal(bad, -1, `${variant} M=${M} C=${C} shared=${shared}: eval + prelu`);
        t.ok(mean.every((m, c) => m === rm[c]) && invstd.every((v, c) => Math.abs(v - 1 / Math.sqrt(rv[c]! + eps)) < 1e-12 * v), 'mean/invstd from running stats');
      }
    }
  }
  // In place (out = x) gives the same result.
  const M = 129, C = 63;
  const x = f32(M * C, -1, 3);
  const out = nanF32(M * C);
  binding.batchNormForward({ x, out, channels: C });
  const y = Float32Array.from(x);
  binding.batchNormForward({ x: y, out: y, channels: C });
  t.equal(bitsEqual(out, y), -1, 'in place equals out of place');
});

t.test('batchNormBackward vs float64 reference', async (t) => {
  for (const [M, C] of shapes()) {
    for (const training of [true, false]) {
      if (training && M < 2) continue;
      const x = f32(M * C, -2, 4), g = f32(M * C), w = f32(C, -2, 2);
      const mean = new Float64Array(C), invstd = new Float64Array(C);
      for (let c = 0; c < C; c++) {
        mean[c] = 1 + rand() * 0.1;
        invstd[c] = 0.5 + rand();
      }
      // float64 reference
      const sg = new Float64Array(C), sgx = new Float64Array(C), sabs = new Float64Array(C);
      for (let r = 0; r < M; r++)
        for (let c = 0; c < C; c++) {
          const i = r * C + c;
          sg[c] += g[i]!;
          sgx[c] += g[i]! * (x[i]! - mean[c]!) * invstd[c]!;
          sabs[c] += Math.abs(g[i]!) * (1 + Math.abs(x[i]! - mean[c]!) * invstd[c]!);
        }
      let first: Float32Array | null = null;
      for (const variant of ALL)
        for (const threads of [1, 2]) {
          binding.setThreads(threads);
          const gi = nanF32(M * C);
          const gw = f32(C), gb = f32(C);
          const gw0 = Float32Array.from(gw), gb0 = Float32Array.from(gb);
          binding.batchNormBackward({ x, gradOut: g, gradIn: gi, channels: C, mean, invstd, weight: w, training, gradWeight: gw, gradBias: gb, accumulate: true, variant });
          let bad = -1;
          for (let r = 0; r < M && bad < 0; r++)
            for (let c = 0; c < C; c++) {
              const i = r * C + c;
              const a = w[c]! * invstd[c]!;
              const xh = (x[i]! - mean[c]!) * invstd[c]!;
              const want = training ? a * (g[i]! - sg[c]! / M - (xh * sgx[c]!) / M) : a * g[i]!;
              const tol = 4e-6 * Math.abs(a) * (Math.abs(g[i]!) + Math.abs(sg[c]! / M) + Math.abs((xh * sgx[c]!) / M) + sabs[c]! / M) + 1e-30;
              if (!(Math.abs(gi[i]! - want) <= tol)) {
                bad = i;
                break;
              }
            }
          t.equal(bad, -1, `${variant} t${threads} M=${M} C=${C} training=${training}: gradIn${bad >= 0 ? ` at ${bad}: ${gi[bad]}` : ''}`);
          let badP = -1;
          for (let c = 0; c < C; c++) {
            if (!(Math.abs(gw[c]! - (gw0[c]! + sgx[c]!)) <= 1e-6 * (1 + sabs[c]! + Math.abs(gw0[c]!)))) badP = c;
            if (!(Math.abs(gb[c]! - (gb0[c]! + sg[c]!)) <= 1e-6 * (1 + sabs[c]! + Math.abs(gb0[c]!)))) badP = c;
          }
          t.equal(badP, -1, `${variant} t${threads} M=${M} C=${C}: gradWeight/gradBias accumulated`);
          if (!first) first = gi;
          else t.equal(bitsEqual(gi, first), -1, `${variant} t${threads}: gradIn bit-identical to ref t1`);
        }
    }
  }
  binding.setThreads(0);
  // accumulate=false overwrites; no weight = 1
  const M = 7, C = 3;
  const x = f32(M * C), g = f32(M * C), gi = nanF32(M * C), gw = nanF32(C), gb = nanF32(C);
  binding.batchNormBackward({ x, gradOut: g, gradIn: gi, channels: C, mean: new Float64Array(C), invstd: new Float64Array(C).fill(1), gradWeight: gw, gradBias: gb });
  t.ok(gw.every(Number.isFinite) && gb.every(Number.isFinite) && gi.every(Number.isFinite), 'accumulate=false overwrites NaN outputs');
});

t.test('prelu and preluBackward vs reference', async (t) => {
  for (const [M, C0] of shapes()) {
    for (const shared of [false, true]) {
      const C = shared ? 1 : C0;
      const rows = shared ? M * C0 : M;
      const x = f32(rows * C, -2, 2), g = f32(rows * C), s = f32(C, -0.5, 1);
      x[0] = 0;
      if (x.length > 1) x[1] = -0;
      const want = new Float32Array(rows * C), wantGi = new Float32Array(rows * C), wantGa = new Float64Array(C), absGa = new Float64Array(C);
      for (let i = 0; i < rows * C; i++) {
        const c = i % C;
        want[i] = x[i]! > 0 ? x[i]! : Math.fround(x[i]! * s[c]!);
        wantGi[i] = x[i]! > 0 ? g[i]! : Math.fround(g[i]! * s[c]!);
        const neg = x[i]! > 0 ? 0 : x[i]!;
        wantGa[c] += g[i]! * neg;
        absGa[c] += Math.abs(g[i]! * neg);
      }
      let first: Float64Array | null = null;
      for (const variant of ALL)
        for (const threads of [1, 2]) {
          binding.setThreads(threads);
          const out = nanF32(rows * C);
          binding.prelu({ x, out, slope: s, variant });
          let bad = -1;
          for (let i = 0; i < out.length && bad < 0; i++) if (!(out[i] === want[i])) bad = i;
          t.equal(bad, -1, `${variant} t${threads} rows=${rows} C=${C}: prelu exact`);
          const gi = nanF32(rows * C), ga = nanF64(C);
          binding.preluBackward({ x, gradOut: g, gradIn: gi, slope: s, gradSlope: ga, variant });
          bad = -1;
          for (let i = 0; i < gi.length && bad < 0; i++) if (!(gi[i] === wantGi[i])) bad = i;
          t.equal(bad, -1, `${variant} t${threads} rows=${rows} C=${C}: gradIn exact`);
          let badA = -1;
          for (let c = 0; c < C; c++) if (!(Math.abs(ga[c]! - wantGa[c]!) <= 1e-12 * (absGa[c]! + 1e-300))) badA = c;
          t.equal(badA, -1, `${variant} t${threads}: gradSlope`);
          if (!first) first = ga;
          else t.equal(bitsEqual(ga, first), -1, `${variant} t${threads}: gradSlope bit-identical to ref t1`);
          // Fused straight-through mask of a following fake quantizer: g' = mask ? g : +0 (NaN gradients dropped).
          const mask = Uint8Array.from({ length: rows * C }, () => (rand() < 0.3 ? 0 : randInt(1, 255)));
          const gn = Float32Array.from(g);
          if (gn.length > 2) gn[2] = NaN;
          if (mask.length > 2) mask[2] = 0;
          const gm = nanF32(rows * C), gam = nanF64(C), wantGam = new Float64Array(C), absGam = new Float64Array(C);
          binding.preluBackward({ x, gradOut: gn, gradIn: gm, slope: s, gradSlope: gam, mask, variant });
          bad = -1;
          for (let i = 0; i < gm.length; i++) {
            const c = i % C;
            const gv = mask[i] ? gn[i]! : 0;
            const want = x[i]! > 0 ? gv : Math.fround(gv * s[c]!);
            const neg = x[i]! > 0 ? 0 : x[i]!;
            wantGam[c] += gv * neg;
            absGam[c] += Math.abs(gv * neg);
            if (bad < 0 && !(gm[i] === want)) bad = i;
          }
          t.equal(bad, -1, `${variant} t${threads} rows=${rows} C=${C}: masked gradIn exact`);
          badA = -1;
          for (let c = 0; c < C; c++) if (!(Math.abs(gam[c]! - wantGam[c]!) <= 1e-12 * (absGam[c]! + 1e-300))) badA = c;
          t.equal(badA, -1, `${variant} t${threads}: masked gradSlope`);
        }
    }
  }
  binding.setThreads(0);
  // in place backward (gradIn = gradOut)
  const x = f32(64), g = f32(64), s = f32(8);
  const gi = nanF32(64);
  binding.preluBackward({ x, gradOut: g, gradIn: gi, slope: s });
  binding.preluBackward({ x, gradOut: g, gradIn: g, slope: s });
  t.equal(bitsEqual(g, gi), -1, 'in place backward');
});

t.test('async forms', async (t) => {
  const x = f32(4096 * 16), out = nanF32(4096 * 16);
  await binding.batchNormForwardAsync({ x, out, channels: 16 });
  t.ok(out.every(Number.isFinite), 'batchNormForwardAsync');
  const s = f32(16);
  await binding.preluAsync({ x, out, slope: s });
  t.ok(out.every(Number.isFinite), 'preluAsync');
  const gi = nanF32(x.length);
  await binding.preluBackwardAsync({ x, gradOut: x, gradIn: gi, slope: s });
  t.ok(gi.every(Number.isFinite), 'preluBackwardAsync');
  await binding.batchNormBackwardAsync({ x, gradOut: x, gradIn: gi, channels: 16, mean: new Float64Array(16), invstd: new Float64Array(16).fill(1) });
  t.ok(gi.every(Number.isFinite), 'batchNormBackwardAsync');
  t.throws(() => binding.batchNormForwardAsync({ x, out, channels: 7 }), RangeError, 'async forms validate before queueing (throw synchronously)');
});

t.test('bad arguments', async (t) => {
  const x = f32(12), out = f32(12);
  const bn = binding.batchNormForward as (o: unknown) => void;
  const bnb = binding.batchNormBackward as (o: unknown) => void;
  const pr = binding.prelu as (o: unknown) => void;
  const prb = binding.preluBackward as (o: unknown) => void;
  t.throws(() => bn(undefined), { name: 'TypeError', message: /batchNormForward: expected an options object/ });
  t.throws(() => bn({ out, channels: 3 }), { name: 'TypeError', message: /batchNormForward: x is required/ });
  t.throws(() => bn({ x: new Float64Array(12), out, channels: 3 }), { name: 'TypeError', message: /batchNormForward: x must be a Float32Array/ });
  t.throws(() => bn({ x, out, channels: 5 }), { name: 'RangeError', message: /x\.length \(12\) must be a multiple of channels/ });
  t.throws(() => bn({ x, out, channels: 0 }), { name: 'RangeError', message: /channels must be in/ });
  t.throws(() => bn({ x, out, channels: 1.5 }), { name: 'RangeError', message: /channels must be an integer/ });
  t.throws(() => bn({ x, out: f32(11), channels: 3 }), { name: 'RangeError', message: /out has 11 elements/ });
  t.throws(() => bn({ x, out, channels: 3, weight: f32(4) }), { name: 'RangeError', message: /weight has 4 elements; needs exactly channels = 3/ });
  t.throws(() => bn({ x, out, channels: 12 }), { name: 'RangeError', message: /training needs at least 2 rows/ });
  t.throws(() => bn({ x, out, channels: 3, training: false }), { name: 'TypeError', message: /runningMean is required/ });
  t.throws(() => bn({ x, out, channels: 3, eps: -1 }), { name: 'RangeError', message: /eps must be >= 0/ });
  t.throws(() => bn({ x, out, channels: 3, eps: NaN }), { name: 'RangeError', message: /eps must be finite/ });
  t.throws(() => bn({ x, out, channels: 3, momentum: 2 }), { name: 'RangeError', message: /momentum must be in \[0, 1\]/ });
  t.throws(() => bn({ x, out, channels: 3, training: 1 }), { name: 'TypeError', message: /training must be a boolean/ });
  t.throws(() => bn({ x, out, channels: 3, mean: f32(3) }), { name: 'TypeError', message: /mean must be a Float64Array/ });
  t.throws(() => bn({ x, out, channels: 3, slope: f32(2) }), { name: 'RangeError', message: /slope has 2 elements; needs 1 \(shared\) or exactly channels = 3/ });
  t.throws(() => bn({ x, out, channels: 3, variant: 'no_such' }), { name: 'RangeError', message: /variant 'no_such' is unknown/ });
  t.throws(() => bn({ x, out: new Float32Array(x.buffer, 4, 11), channels: 3 }), { name: 'RangeError' });
  const xb = new Float32Array(24);
  t.throws(() => bn({ x: xb.subarray(0, 12), out: xb.subarray(2, 14), channels: 3 }), { name: 'RangeError', message: /x and out must be the same array or not overlap/ });
  t.throws(() => bn({ x, out, channels: 3, runningMean: out.subarray(0, 3) }), { name: 'RangeError', message: /runningMean and out must not overlap/ });

  const mean = new Float64Array(3), invstd = new Float64Array(3).fill(1);
  t.throws(() => bnb({ x, gradIn: out, channels: 3, mean, invstd }), { name: 'TypeError', message: /batchNormBackward: gradOut is required/ });
  t.throws(() => bnb({ x, gradOut: x, gradIn: out, channels: 3, invstd }), { name: 'TypeError', message: /batchNormBackward: mean is required/ });
  t.throws(() => bnb({ x, gradOut: x, gradIn: out, channels: 3, mean: new Float64Array(4), invstd }), { name: 'RangeError', message: /mean has 4 elements/ });
  t.throws(() => bnb({ x: f32(6), gradOut: x, gradIn: out, channels: 3, mean, invstd }), { name: 'RangeError', message: /x has 6 elements/ });
  t.throws(() => bnb({ x, gradOut: x, gradIn: out, channels: 3, mean, invstd, gradWeight: new Float64Array(3) }), { name: 'TypeError', message: /gradWeight must be a Float32Array/ });
  t.throws(() => bnb({ x, gradOut: x, gradIn: out, channels: 3, mean, invstd, accumulate: 'yes' }), { name: 'TypeError', message: /accumulate must be a boolean/ });
  t.throws(() => bnb({ x, gradOut: x, gradIn: out, channels: 3, mean, invstd, gradWeight: out.subarray(0, 3) }), { name: 'RangeError', message: /gradWeight and gradIn must not overlap/ });

  t.throws(() => pr({ x, out }), { name: 'TypeError', message: /prelu: slope is required/ });
  t.throws(() => pr({ x, out, slope: new Float32Array(0) }), { name: 'RangeError', message: /prelu: slope has 0 elements/ });
  t.throws(() => pr({ x, out, slope: f32(5) }), { name: 'RangeError', message: /prelu: x\.length \(12\) must be a multiple of channels \(5\)/ });
  t.throws(() => pr({ x, out: f32(3), slope: f32(3) }), { name: 'RangeError', message: /prelu: out has 3 elements/ });
  t.throws(() => pr({ x, out, slope: f32(3), variant: 3 }), { name: 'TypeError', message: /prelu: variant must be a string/ });
  t.throws(() => prb({ x, gradOut: x, gradIn: out, slope: f32(3), gradSlope: new Float64Array(2) }), { name: 'RangeError', message: /preluBackward: gradSlope has 2 elements/ });
  t.throws(() => prb({ x: f32(3), gradOut: x, gradIn: out, slope: f32(3) }), { name: 'RangeError', message: /preluBackward: x has 3 elements/ });
  t.throws(() => prb({ x, gradOut: x, slope: f32(3) }), { name: 'TypeError', message: /preluBackward: gradIn is required/ });
  t.throws(() => prb({ x, gradOut: x, gradIn: out, slope: f32(3), mask: new Uint8Array(5) }), { name: 'RangeError', message: /preluBackward: mask has 5 elements/ });
  t.throws(() => prb({ x, gradOut: x, gradIn: out, slope: f32(3), mask: new Int8Array(12) }), { name: 'TypeError', message: /preluBackward: mask must be a Uint8Array/ });
  const gbuf = new Float32Array(12);
  t.throws(() => prb({ x, gradOut: x, gradIn: gbuf, slope: f32(3), mask: new Uint8Array(gbuf.buffer, 0, 12) }), { name: 'RangeError', message: /preluBackward: mask and gradIn must not overlap/ });
});

t.test('PReLU fuses a following ActFakeQuant straight-through backward (clipped and unmasked)', async (t) => {
  const { PReLU } = await import('../lib/nn/layers.js');
  const { ActFakeQuant } = await import('../lib/quant/index.js');
  const { Tensor } = await import('../lib/tensor.js');
  for (const ste of ['clipped', 'unmasked'] as const) {
    const C = 7, M = 129;
    const p = new PReLU(C);
    p.weight.data.data.set(f32(C, -0.5, 0.5));
    const fq = new ActFakeQuant({ bits: 4, ste, calibrationSteps: 0 }).setRange(-0.5, 0.8);
    p.setChild('outQuant', fq);
    p.train();
    const xt = Tensor.from(f32(M * C, -2, 2), [M, C]) as import("../lib/tensor.js").FTensor;
    const g = f32(M * C);
    const y = p.forward(xt);
    t.ok(y.data.every(Number.isFinite), `${ste}: forward`);
    const mask = fq.straightThroughMask();
    t.equal(mask === null, ste === 'unmasked', `${ste}: mask ${mask ? 'present' : 'null'}`);
    const gi = p.backward(Tensor.from(Float32Array.from(g), [M, C])).data;
    const xd = xt.data, s = p.weight.data.data;
    let bad = -1;
    const ga = new Float64Array(C);
    for (let i = 0; i < M * C; i++) {
      const c = i % C;
      const gv = mask && !mask[i] ? 0 : g[i]!;
      const want = xd[i]! > 0 ? gv : Math.fround(gv * s[c]!);
      ga[c] += gv * Math.min(xd[i]!, 0);
      if (bad < 0 && gi[i] !== want) bad = i;
    }
    t.equal(bad, -1, `${ste}: gradIn equals the unfused chain`);
    const gw = p.weight.grad!.data;
    t.ok(Array.from(gw).every((v, c) => Math.abs(v - ga[c]!) <= 1e-6 * (1 + Math.abs(ga[c]!))), `${ste}: slope gradient`);
  }
});
