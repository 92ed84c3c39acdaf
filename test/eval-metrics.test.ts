import t from 'tap';
import { spawnSync } from 'node:child_process';
import {
  accuracyThresholds, evaluateEmbeddings, evaluateVerification, kFoldRanges, npArange, npMean, npStd,
  slinearInterp, valThresholds,
} from '../lib/eval/metrics.js';
import { QuantFaceError } from '../lib/errors.js';
import { hasPythonNumpy, mulberry32 } from './fixtures/eval/util.js';

/** The issue's test vector (issue 6). */
function issueVector(): { d: Float64Array; same: boolean[] } {
  const n = 6000;
  const d = new Float64Array(n);
  const same: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const k = Math.floor(i / 600), j = i % 600;
    if (j < 300) {
      same.push(true);
      d[i] = 0.25 + 0.02 * k + 1.5 * (((37 * j + 11 * k) % 300) / 300) + 0.00031;
    } else {
      same.push(false);
      d[i] = 1.0 + 0.03 * k + 2.9 * (((53 * (j - 300) + 7 * k) % 300) / 300) + 0.00031;
    }
  }
  return { d, same };
}

t.test('the issue test vector is reproduced to 1e-9', async (t) => {
  const { d, same } = issueVector();
  const r = evaluateVerification(d, same);
  const tol = 1e-9;
  t.ok(Math.abs(r.accuracy - 0.867) < tol, `accuracy ${r.accuracy}`);
  t.ok(Math.abs(r.std - 0.006315765107) < tol, `std ${r.std}`);
  const folds = [0.853333333333, 0.858333333333, 0.863333333333, 0.868333333333, 0.873333333333,
    0.873333333333, 0.871666666667, 0.87, 0.87, 0.868333333333];
  t.equal(r.foldAccuracies.length, 10);
  folds.forEach((f, k) => t.ok(Math.abs(r.foldAccuracies[k]! - f) < 1e-9, `fold ${k}: ${r.foldAccuracies[k]} vs ${f}`));
  t.ok(Math.abs(r.val - 0.455333333333) < tol, `VAL ${r.val}`);
  t.ok(Math.abs(r.valStd - 0.041745259212) < tol, `VAL std ${r.valStd}`);
  t.ok(Math.abs(r.far - 0.002) < tol, `FAR ${r.far}`);
  t.equal(r.nPairs, 6000);
  t.equal(r.tpr.length, 400);
});

t.test('thresholds are built as numpy.arange does', async (t) => {
  const a = accuracyThresholds();
  t.equal(a.length, 400);
  t.equal(valThresholds().length, 4000);
  for (let i = 0; i < 400; i++) if (a[i] !== i * 0.01) t.fail(`threshold ${i}`);
  // numpy gives 0.35000000000000003 here (35*0.01), not the literal 0.35
  t.equal(a[35], 0.35000000000000003);
  t.not(a[35], 0.35);
  t.equal(a[36], 0.36);
  t.same(Array.from(npArange(1, 2, 0.25)), [1, 1.25, 1.5, 1.75]);
  t.equal(npArange(0, 0, 1).length, 0);
  t.throws(() => npArange(0, 1, 0), QuantFaceError);
});

t.test('folds follow sklearn KFold without shuffle', async (t) => {
  t.same(kFoldRanges(6000, 10)[3], [1800, 2400]);
  t.same(kFoldRanges(23, 10).map(([s, e]) => e - s), [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
  t.throws(() => kFoldRanges(5, 10), { code: 'E_ARG' });
  t.throws(() => kFoldRanges(50, 1), { code: 'E_ARG' });
});

t.test('numpy mean and population std', async (t) => {
  t.equal(npMean([1, 2, 3, 4]), 2.5);
  t.equal(npStd([1, 2, 3, 4]), Math.sqrt(1.25));
  t.equal(npStd([5, 5, 5]), 0);
});

t.test('slinear interpolation as insightface ran it', async (t) => {
  // plain segment
  t.equal(slinearInterp([0, 1, 2], [10, 20, 30], 1.5), 25);
  // x on a plateau: the last index of the plateau wins (threshold = its y)
  t.equal(slinearInterp([0, 0.5, 0.5, 0.5, 1], [0, 1, 2, 3, 4], 0.5), 3);
  // at the top end with a duplicate last pair: the degenerate segment gives 0
  t.equal(slinearInterp([0, 1, 1], [0, 5, 6], 1), 0);
  // out of range is an error (scipy raises too)
  t.throws(() => slinearInterp([0, 1], [0, 1], 2), { code: 'E_ARG' });
  // unsorted x are sorted stably first
  t.equal(slinearInterp([2, 0, 1], [30, 10, 20], 0.5), 15);
});

t.test('the first threshold with the best train accuracy is chosen', async (t) => {
  // 20 pairs, 10 folds of 2: same pairs at 0.5, different at 2.5: every
  // threshold in (0.5, 2.5] is perfect: the first is 0.51.
  const d: number[] = [], s: boolean[] = [];
  for (let f = 0; f < 10; f++) { d.push(0.5, 2.5); s.push(true, false); }
  const r = evaluateVerification(d, s);
  t.same(r.foldThresholds, Array(10).fill(0.51));
  t.equal(r.accuracy, 1);
  t.equal(r.std, 0);
});

t.test('argument checks', async (t) => {
  t.throws(() => evaluateVerification([1, 2, 3], [true, false]), { code: 'E_SHAPE' });
  const d = new Float64Array(20).fill(1); d[3] = NaN;
  t.throws(() => evaluateVerification(d, Array(20).fill(true)), { code: 'E_ARG', message: /NaN/ });
  t.throws(() => evaluateEmbeddings(new Float32Array(10), 4, [true]), { code: 'E_SHAPE' });
});

t.test('evaluateEmbeddings normalises rows and pairs rows 2i, 2i+1', async (t) => {
  const seed = 1234;
  t.comment(`seed ${seed}`);
  const rnd = mulberry32(seed);
  const dim = 8, n = 200;
  const emb = new Float32Array(2 * n * dim);
  const same: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const isSame = i % 2 === 0;
    same.push(isSame);
    for (let j = 0; j < dim; j++) {
      const a = rnd() - 0.5;
      emb[2 * i * dim + j] = a * 3;
      emb[(2 * i + 1) * dim + j] = isSame ? a * 5 + 0.3 * (rnd() - 0.5) : rnd() - 0.5;
    }
  }
  const r = evaluateEmbeddings(emb, dim, same);
  // reference distances in plain float64
  for (let i = 0; i < n; i++) {
    let na = 0, nb = 0;
    for (let j = 0; j < dim; j++) { na += emb[2 * i * dim + j]! ** 2; nb += emb[(2 * i + 1) * dim + j]! ** 2; }
    let s = 0;
    for (let j = 0; j < dim; j++) s += (emb[2 * i * dim + j]! / Math.sqrt(na) - emb[(2 * i + 1) * dim + j]! / Math.sqrt(nb)) ** 2;
    if (Math.abs(s - r.distances[i]!) > 1e-12) t.fail(`distance ${i}: ${s} vs ${r.distances[i]}`);
  }
  t.same(r.foldAccuracies, evaluateVerification(r.distances, same).foldAccuracies);
  t.ok(r.accuracy > 0.9, `accuracy ${r.accuracy}`);
});

// A transcription of insightface's verification.py in numpy (with the
// old-scipy slinear evaluation written out as scipy's find_interval +
// de Boor) to cross-check on random data with ties.
const PY_REF = String.raw`
import sys, json, numpy as np
data = json.load(sys.stdin)
dist = np.array(data['d'], dtype=np.float64); iss = np.array(data['s'], dtype=bool)
n = len(dist); k = 10
sizes = [n // k + (1 if f < n % k else 0) for f in range(k)]
starts = np.cumsum([0] + sizes)
def acc(th, d, s):
    p = np.less(d, th)
    tp = np.sum(p & s); fp = np.sum(p & ~s); tn = np.sum(~p & ~s); fn = np.sum(~p & s)
    tpr = 0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / d.size
def valfar(th, d, s):
    p = np.less(d, th)
    return float(np.sum(p & s)) / float(np.sum(s)), float(np.sum(p & ~s)) / float(np.sum(~s))
def old_slinear(x, y, xq):
    t = np.r_[x[0], x, x[-1]]; kk = 1; nn = len(t) - kk - 1
    l = kk
    l += 1
    while xq >= t[l] and l != nn: l += 1
    l -= 1
    h = [1.0, 0.0]; hh = [h[0]]; h[0] = 0.0
    xb = t[l + 1]; xa = t[l]
    if xb != xa:
        w = hh[0] / (xb - xa); h[0] += w * (xb - xq); h[1] = w * (xq - xa)
    else:
        h[1] = 0.0
    out = 0.0
    for a in range(2): out = out + y[l + a - kk] * h[a]
    return out
ths = np.arange(0, 4, 0.01); vths = np.arange(0, 4, 0.001)
accs = []; bests = []; tprs = np.zeros((k, len(ths))); fprs = np.zeros((k, len(ths))); vals = []; fars = []
for f in range(k):
    te = np.arange(starts[f], starts[f + 1]); tr = np.setdiff1d(np.arange(n), te)
    a = np.array([acc(th, dist[tr], iss[tr])[2] for th in ths]); b = int(np.argmax(a))
    for ti, th in enumerate(ths): tprs[f, ti], fprs[f, ti], _ = acc(th, dist[te], iss[te])
    accs.append(acc(ths[b], dist[te], iss[te])[2]); bests.append(float(ths[b]))
    ft = np.array([valfar(th, dist[tr], iss[tr])[1] for th in vths])
    th = old_slinear(ft, vths, 1e-3) if np.max(ft) >= 1e-3 else 0.0
    v, fa = valfar(th, dist[te], iss[te]); vals.append(v); fars.append(fa)
print(json.dumps(dict(acc=float(np.mean(accs)), std=float(np.std(accs)), folds=accs, best=bests,
  tpr=np.mean(tprs, 0).tolist(), fpr=np.mean(fprs, 0).tolist(), val=float(np.mean(vals)),
  valstd=float(np.std(vals)), far=float(np.mean(fars)))))
`;

t.test('matches a numpy transcription of insightface on random data', { skip: !hasPythonNumpy() ? 'python3 with numpy is not available' : false }, async (t) => {
  const seed = 20240611;
  t.comment(`seed ${seed}`);
  const rnd = mulberry32(seed);
  for (const n of [600, 997]) {
    const d: number[] = [], s: boolean[] = [];
    for (let i = 0; i < n; i++) {
      const same = rnd() < 0.5;
      s.push(same);
      // coarse values (many ties, many exactly on thresholds) and fine ones
      const v = same ? 0.3 + 1.6 * rnd() : 0.9 + 2.5 * rnd();
      d.push(i % 3 === 0 ? Math.round(v * 100) / 100 : v);
    }
    const py = spawnSync('python3', ['-c', PY_REF], { input: JSON.stringify({ d, s }), encoding: 'utf8', timeout: 50_000, maxBuffer: 256 << 20 });
    if (py.status !== 0) { t.fail(`python failed: ${py.stderr}`); continue; }
    const ref = JSON.parse(py.stdout) as { acc: number; std: number; folds: number[]; best: number[]; tpr: number[]; fpr: number[]; val: number; valstd: number; far: number };
    const r = evaluateVerification(d, s);
    t.same(r.foldAccuracies, ref.folds, `n=${n} fold accuracies`);
    t.same(r.foldThresholds, ref.best, `n=${n} thresholds`);
    t.ok(Math.abs(r.accuracy - ref.acc) < 1e-15 && Math.abs(r.std - ref.std) < 1e-15, `n=${n} mean/std`);
    // fold means of tpr/fpr: summation order may differ in the last bit
    t.ok(r.tpr.every((v, i) => Math.abs(v - ref.tpr[i]!) < 1e-14) && r.fpr.every((v, i) => Math.abs(v - ref.fpr[i]!) < 1e-14), `n=${n} tpr/fpr`);
    t.ok(Math.abs(r.val - ref.val) < 1e-15 && Math.abs(r.valStd - ref.valstd) < 1e-15 && Math.abs(r.far - ref.far) < 1e-15, `n=${n} VAL ${r.val} ${ref.val}, FAR ${r.far} ${ref.far}`);
  }
});
