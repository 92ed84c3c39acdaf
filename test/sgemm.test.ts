import t from 'tap';
import { binding } from '../lib/binding.js';
import type { SgemmOptions } from '../binding.js';

// Seeded PRNG (mulberry32): print the seed so a failure can be replayed.
const SEED = Number(process.env.QF_TEST_SEED ?? 0x5e6e33);
t.comment(`sgemm seed ${SEED}`);
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
function randArray(len: number): Float32Array {
  const a = new Float32Array(len);
  for (let i = 0; i < len; i++) a[i] = rand() * 2 - 1;
  return a;
}

interface Case {
  ta: boolean;
  tb: boolean;
  m: number;
  n: number;
  k: number;
  alpha: number;
  beta: number;
  /** extra elements per row beyond the minimum leading dimension */
  padA: number;
  padB: number;
  padC: number;
}

interface Inputs {
  a: Float32Array;
  b: Float32Array;
  c0: Float32Array;
  lda: number;
  ldb: number;
  ldc: number;
}

function makeInputs(cs: Case): Inputs {
  const aRows = cs.ta ? cs.k : cs.m;
  const aCols = cs.ta ? cs.m : cs.k;
  const bRows = cs.tb ? cs.n : cs.k;
  const bCols = cs.tb ? cs.k : cs.n;
  const lda = aCols + cs.padA;
  const ldb = bCols + cs.padB;
  const ldc = cs.n + cs.padC;
  // Allocate full rows (ld * rows) so padding exists after the last row too.
  const a = randArray(Math.max(aRows * lda, 0));
  const b = randArray(Math.max(bRows * ldb, 0));
  const c0 = randArray(Math.max(cs.m * ldc, 0));
  // Poison the padding of A and B: it must never be read.
  for (let r = 0; r < aRows; r++) for (let q = aCols; q < lda; q++) a[r * lda + q] = NaN;
  for (let r = 0; r < bRows; r++) for (let q = bCols; q < ldb; q++) b[r * ldb + q] = NaN;
  return { a, b, c0, lda, ldb, ldc };
}

/** float64 reference: expected value and error scale sum_p |a||b| per element of C. */
function jsRef(cs: Case, x: Inputs): { want: Float64Array; scale: Float64Array } {
  const { m, n, k, ta, tb, alpha, beta } = cs;
  const want = new Float64Array(m * n);
  const scale = new Float64Array(m * n);
  const arow = new Float64Array(k);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) arow[p] = ta ? x.a[p * x.lda + i] : x.a[i * x.lda + p];
    for (let j = 0; j < n; j++) {
      let s = 0;
      let sa = 0;
      for (let p = 0; p < k; p++) {
        const bv = tb ? x.b[j * x.ldb + p] : x.b[p * x.ldb + j];
        s += arow[p] * bv;
        sa += Math.abs(arow[p] * bv);
      }
      const cv = x.c0[i * x.ldc + j];
      want[i * n + j] = alpha * s + (beta === 0 ? 0 : beta * cv);
      scale[i * n + j] = Math.abs(alpha) * sa + (beta === 0 ? 0 : Math.abs(beta * cv));
    }
  }
  return { want, scale };
}

// Tolerances. A float32 dot product of k terms, summed in any order with or
// without FMA, has |error| <= gamma_k * sum|a_p b_p| with gamma_k ~ k * 2^-24
// (Higham, Accuracy and Stability, 3.1); scaling by alpha and adding beta*c
// adds a few more roundings. So a fast variant must be within
// (k + 4) * 2^-24 * (|alpha| sum|a||b| + |beta c|): a rigorous bound that a
// correct kernel cannot exceed, while a wrong or missing term (of size about
// sum|a||b| / k) or a skipped beta*c exceeds it by orders of magnitude.
// sgemm_ref accumulates in double and rounds once: within 2 ulp of the float64
// result (2^-23 relative to the same scale).
function tolFast(k: number, scale: number): number {
  return (k + 4) * 2 ** -24 * scale + 1e-37;
}
function tolRef(scale: number): number {
  return 2 ** -23 * scale + 1e-37;
}

const POISON_C = NaN;
const SENTINEL = 12345.5;

/** Runs one variant; returns C (ldc layout). C's row padding is set to a sentinel that must survive. */
function run(cs: Case, x: Inputs, variant: string, poisonC: boolean): { c: Float32Array; opts: SgemmOptions } {
  const c = new Float32Array(x.c0.length);
  for (let i = 0; i < cs.m; i++)
    for (let j = 0; j < x.ldc; j++) c[i * x.ldc + j] = j < cs.n ? (poisonC ? POISON_C : x.c0[i * x.ldc + j]) : SENTINEL;
  const opts: SgemmOptions = {
    transA: cs.ta, transB: cs.tb, m: cs.m, n: cs.n, k: cs.k, alpha: cs.alpha, beta: cs.beta,
    a: x.a, lda: x.lda, b: x.b, ldb: x.ldb, c, ldc: x.ldc, variant,
  };
  binding.sgemm(opts);
  return { c, opts };
}

/** Max violation ratio |got - want| / tol over C (0..1 passes); counts bad padding. */
function check(cs: Case, x: Inputs, ref: { want: Float64Array; scale: Float64Array }, c: Float32Array,
  tol: (s: number) => number): { worst: number; where: string; padBad: number } {
  let worst = 0;
  let where = '';
  let padBad = 0;
  for (let i = 0; i < cs.m; i++) {
    for (let j = 0; j < x.ldc; j++) {
      const got = c[i * x.ldc + j];
      if (j >= cs.n) {
        if (got !== SENTINEL) padBad++;
        continue;
      }
      const w = ref.want[i * cs.n + j];
      const e = Math.abs(got - w) / tol(ref.scale[i * cs.n + j]);
      const r = Number.isNaN(e) ? Infinity : e;
      if (r > worst) {
        worst = r;
        where = `C[${i},${j}] got ${got} want ${w}`;
      }
    }
  }
  return { worst, where, padBad };
}

const info = binding.info();
const variants = info.variants.sgemm;
t.ok(Array.isArray(variants) && variants.length >= 1, 'sgemm has variants');
t.equal(variants[variants.length - 1].name, 'sgemm_ref', 'reference variant is last');
t.equal(info.kernels.sgemm, variants.find((v) => v.supported)?.name, 'chosen variant is the first supported one');
const supported = variants.filter((v) => v.supported).map((v) => v.name);

// Resizes the pool. The short pause works around a race in the pool (a worker
// created by a resize can miss the first job submitted right after it, which
// hangs that job); remove it once native/threadpool.cc hands each new worker
// the generation current at its creation.
async function setThreads(n: number): Promise<void> {
  binding.setThreads(n);
  await new Promise((r) => setTimeout(r, 50));
}

function caseName(cs: Case): string {
  return `${cs.ta ? 'T' : 'N'}${cs.tb ? 'T' : 'N'} m=${cs.m} n=${cs.n} k=${cs.k} alpha=${cs.alpha} beta=${cs.beta}` +
    ` pad=${cs.padA},${cs.padB},${cs.padC}`;
}

const cases: Case[] = [];
const combos: Array<[boolean, boolean]> = [[false, false], [false, true], [true, false], [true, true]];
const ab: Array<[number, number]> = [[1, 0], [1, 1], [-0.75, 0.5], [2.5, 0]];
let abIdx = 0;
for (const [ta, tb] of combos) {
  // odd small sizes, tile edges on every side
  for (const [m, n, k] of [[1, 1, 1], [7, 7, 7], [1, 63, 5], [63, 1, 9], [13, 17, 63], [63, 65, 129],
    [129, 7, 33], [5, 129, 64], [32, 48, 1], [16, 64, 300]]) {
    const [alpha, beta] = ab[abIdx++ % ab.length];
    cases.push({ ta, tb, m, n, k, alpha, beta, padA: (m + n) % 3, padB: (k % 2) * 5, padC: (n % 4) });
  }
  // larger than the cache blocks (k > kc, n > nc, m > several m blocks)
  cases.push({ ta, tb, m: 300, n: 257, k: 513, alpha: 1, beta: 0, padA: 3, padB: 1, padC: 2 });
  cases.push({ ta, tb, m: 37, n: 700, k: 801, alpha: 0.5, beta: 0.5, padA: 0, padB: 0, padC: 0 });
}
// C bigger than 8 MB written once (beta = 0, one k block): the fast variants
// may use non-temporal stores on aligned rows; ldc = n + 2 mixes aligned and
// unaligned rows.
cases.push({ ta: false, tb: true, m: 2053, n: 1030, k: 9, alpha: 1, beta: 0, padA: 0, padB: 0, padC: 2 });
// k = 0 and alpha = 0: C = beta * C (0 where beta = 0, NaN in C ignored)
cases.push({ ta: false, tb: false, m: 9, n: 33, k: 0, alpha: 1, beta: 0, padA: 0, padB: 0, padC: 1 });
cases.push({ ta: true, tb: true, m: 9, n: 33, k: 0, alpha: 1, beta: 0.5, padA: 0, padB: 0, padC: 0 });
cases.push({ ta: false, tb: true, m: 20, n: 40, k: 17, alpha: 0, beta: 0.5, padA: 2, padB: 0, padC: 0 });

for (const threads of [1, 2]) {
  t.test(`every variant vs float64 and vs sgemm_ref, ${threads} thread(s)`, async (t) => {
    const prev = binding.getThreads();
    await setThreads(threads);
    t.teardown(() => setThreads(prev));
    let n = 0;
    for (const cs of cases) {
      // The biggest cases once per thread count, small ones with both.
      const x = makeInputs(cs);
      const ref = jsRef(cs, x);
      const refRun = run(cs, x, 'sgemm_ref', cs.beta === 0);
      const r0 = check(cs, x, ref, refRun.c, tolRef);
      if (r0.worst > 1 || r0.padBad) t.fail(`sgemm_ref ${caseName(cs)}: ${r0.where}, padding changed ${r0.padBad}`);
      else n++;
      const refWant = { want: Float64Array.from(refRun.c.filter((_, idx) => idx % x.ldc < cs.n)), scale: ref.scale };
      for (const v of supported) {
        if (v === 'sgemm_ref') continue;
        const { c } = run(cs, x, v, cs.beta === 0);
        const r1 = check(cs, x, ref, c, (s) => tolFast(cs.k, s));
        const r2 = check(cs, x, refWant, c, (s) => tolFast(cs.k, s) + tolRef(s));
        if (r1.worst > 1 || r1.padBad || r2.worst > 1)
          t.fail(`${v} ${caseName(cs)}: vs float64 ${r1.worst.toFixed(3)} (${r1.where}), vs ref ${r2.worst.toFixed(3)}` +
            ` (${r2.where}), padding changed ${r1.padBad}`);
        else n++;
      }
    }
    const fast = supported.filter((v) => v !== 'sgemm_ref').length;
    t.equal(n, cases.length * (1 + fast), `all ${cases.length} cases within tolerance for ${supported.join(', ')}`);
  });
}

for (const v of variants.filter((v) => !v.supported))
  t.test(`${v.name}`, { skip: `${v.name}: not supported here (CPU, or capped by QUANTFACE_ISA)` }, async () => {});

t.test('alpha = 0 reads neither A nor B; beta = 0 ignores NaN in C', async (t) => {
  for (const v of supported) {
    const a = new Float32Array(6).fill(NaN);
    const b = new Float32Array(6).fill(NaN);
    const c = Float32Array.from([1, 2, 3, 4]);
    binding.sgemm({ m: 2, n: 2, k: 3, alpha: 0, beta: 0.5, a, b, c, variant: v });
    t.same(Array.from(c), [0.5, 1, 1.5, 2], `${v}: alpha 0`);
    const c2 = new Float32Array(4).fill(NaN);
    binding.sgemm({ m: 2, n: 2, k: 3, a: Float32Array.from([1, 2, 3, 4, 5, 6]), b: Float32Array.from([1, 0, 0, 1, 1, 1]), c: c2, variant: v });
    t.same(Array.from(c2), [4, 5, 10, 11], `${v}: beta 0 with NaN C`);
  }
});

t.test('m = 0 or n = 0 leaves C alone', async (t) => {
  for (const v of supported) {
    const c = Float32Array.from([7, 7, 7]);
    binding.sgemm({ m: 0, n: 3, k: 4, a: new Float32Array(0), b: new Float32Array(12), c, variant: v });
    binding.sgemm({ m: 1, n: 0, k: 4, a: new Float32Array(4), b: new Float32Array(0), c, variant: v });
    t.same(Array.from(c), [7, 7, 7], v);
  }
});

t.test('results do not depend on the thread count (bitwise)', async (t) => {
  const prev = binding.getThreads();
  t.teardown(() => setThreads(prev));
  const cs: Case = { ta: false, tb: true, m: 203, n: 190, k: 400, alpha: 1, beta: 0.5, padA: 0, padB: 0, padC: 0 };
  const x = makeInputs(cs);
  for (const v of supported) {
    await setThreads(1);
    const c1 = run(cs, x, v, false).c;
    await setThreads(2);
    const c2 = run(cs, x, v, false).c;
    t.same(Buffer.from(c2.buffer), Buffer.from(c1.buffer), v);
  }
});

t.test('sgemmAsync gives the same result as sgemm', async (t) => {
  const cs: Case = { ta: true, tb: false, m: 150, n: 97, k: 260, alpha: 1.5, beta: 1, padA: 1, padB: 2, padC: 3 };
  const x = makeInputs(cs);
  for (const v of supported) {
    const { c, opts } = run(cs, x, v, false);
    const c2 = new Float32Array(x.c0.length);
    c2.set(x.c0);
    const p = binding.sgemmAsync({ ...opts, c: c2 });
    t.type(p, Promise);
    await p;
    for (let i = 0; i < cs.m; i++) for (let j = cs.n; j < x.ldc; j++) c2[i * x.ldc + j] = SENTINEL;
    t.same(Buffer.from(c2.buffer), Buffer.from(c.buffer), v);
  }
  // Several concurrent async calls
  const outs = await Promise.all([0, 1, 2, 3].map(async () => {
    const c = new Float32Array(x.c0.length);
    c.set(x.c0);
    await binding.sgemmAsync({ transA: true, m: cs.m, n: cs.n, k: cs.k, alpha: 1.5, beta: 1, a: x.a, lda: x.lda, b: x.b, ldb: x.ldb, c, ldc: x.ldc });
    return c;
  }));
  for (const c of outs.slice(1)) t.same(Buffer.from(c.buffer), Buffer.from(outs[0].buffer), 'concurrent async calls agree');
  // Bad arguments are reported before any work is queued (thrown, or as a rejection).
  await t.rejects(async () => binding.sgemmAsync({ m: 2, n: 2, k: 2, a: new Float32Array(3), b: new Float32Array(4), c: new Float32Array(4) }),
    { constructor: RangeError, message: /sgemm: a has 3 elements/ });
});

t.test('validation', async (t) => {
  const a = new Float32Array(6);
  const b = new Float32Array(12);
  const c = new Float32Array(8);
  const ok: SgemmOptions = { m: 2, n: 4, k: 3, a, b, c };
  binding.sgemm(ok);
  t.pass('valid call');
  const bad = (o: Record<string, unknown>, err: typeof TypeError | typeof RangeError, re: RegExp, msg: string) =>
    t.throws(() => binding.sgemm({ ...ok, ...o } as unknown as SgemmOptions), { constructor: err, message: re }, msg);
  t.throws(() => (binding.sgemm as (x: unknown) => void)(undefined), TypeError, 'no options');
  t.throws(() => (binding.sgemm as (x: unknown) => void)(42), TypeError, 'number options');
  bad({ m: undefined }, TypeError, /sgemm: m/, 'm missing');
  bad({ m: '2' }, TypeError, /sgemm: m/, 'm string');
  bad({ m: -1 }, RangeError, /sgemm: m/, 'm negative');
  bad({ n: 1.5 }, RangeError, /sgemm: n/, 'n fractional');
  bad({ k: NaN }, RangeError, /sgemm: k/, 'k NaN');
  bad({ k: 2 ** 60 }, RangeError, /sgemm: k/, 'k huge');
  bad({ a: undefined }, TypeError, /sgemm: a/, 'a missing');
  bad({ a: new Float64Array(6) }, TypeError, /sgemm: a .*Float32Array/, 'a Float64Array');
  bad({ a: [1, 2, 3, 4, 5, 6] }, TypeError, /sgemm: a/, 'a plain array');
  bad({ a: new Float32Array(5) }, RangeError, /sgemm: a has 5 elements; needs at least 6/, 'a short');
  bad({ b: new Float32Array(11) }, RangeError, /sgemm: b has 11/, 'b short');
  bad({ c: new Float32Array(7) }, RangeError, /sgemm: c has 7/, 'c short');
  bad({ c: new Int32Array(8) }, TypeError, /sgemm: c/, 'c Int32Array');
  bad({ lda: 2 }, RangeError, /sgemm: lda must be >= k/, 'lda < k');
  bad({ transA: true, lda: 1 }, RangeError, /sgemm: lda must be >= m/, 'lda < m (transposed)');
  bad({ ldb: 3 }, RangeError, /sgemm: ldb must be >= n/, 'ldb < n');
  bad({ transB: true, ldb: 2, b: new Float32Array(12) }, RangeError, /sgemm: ldb must be >= k/, 'ldb < k (transposed)');
  bad({ ldc: 3 }, RangeError, /sgemm: ldc must be >= n/, 'ldc < n');
  bad({ ldc: 5 }, RangeError, /sgemm: c has 8 elements; needs at least 9/, 'c short for ldc');
  bad({ lda: 4 }, RangeError, /sgemm: a has 6 elements; needs at least 7/, 'a short for lda');
  bad({ transA: 1 }, TypeError, /sgemm: transA/, 'transA number');
  bad({ transB: 'yes' }, TypeError, /sgemm: transB/, 'transB string');
  bad({ alpha: '1' }, TypeError, /sgemm: alpha/, 'alpha string');
  bad({ alpha: Infinity }, RangeError, /sgemm: alpha/, 'alpha infinite');
  bad({ beta: 1e39 }, RangeError, /sgemm: beta/, 'beta beyond float32');
  bad({ variant: 'nope' }, RangeError, /sgemm: variant 'nope'/, 'unknown variant');
  bad({ variant: 3 }, TypeError, /sgemm: variant/, 'variant number');
  bad({ m: 2 ** 30, n: 2 ** 30, k: 2 ** 30 }, RangeError, /sgemm: /, 'sizes whose product is too large');
  const shared = new Float32Array(32);
  bad({ a: shared.subarray(0, 6), c: shared.subarray(4, 12) }, RangeError, /sgemm: c must not overlap a/, 'c overlaps a');
  bad({ b: shared.subarray(0, 12), c: shared.subarray(10, 18) }, RangeError, /sgemm: c must not overlap b/, 'c overlaps b');
  for (const v of variants.filter((v) => !v.supported))
    bad({ variant: v.name }, RangeError, /not supported/, `${v.name} unsupported here`);
  // suffix form of the variant name
  binding.sgemm({ ...ok, variant: 'ref' });
  t.pass('variant suffix accepted');
});
