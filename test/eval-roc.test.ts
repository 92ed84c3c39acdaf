import t from 'tap';
import { spawnSync } from 'node:child_process';
import { IJB_FAR_TARGETS, RocAccumulator, rocAuc, rocCurve, tarAtFar } from '../lib/eval/roc.js';
import { hasPythonNumpy, mulberry32 } from './fixtures/eval/util.js';

t.test('scikit-learn documentation example', async (t) => {
  // sklearn.metrics.roc_curve([1,1,2,2] pos_label=2, [0.1,0.4,0.35,0.8])
  const r = rocCurve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]);
  t.same(Array.from(r.fpr), [0, 0, 0.5, 0.5, 1]);
  t.same(Array.from(r.tpr), [0, 0.5, 0.5, 1, 1]);
  t.same(Array.from(r.thresholds), [Infinity, 0.8, 0.4, 0.35, 0.1]);
  t.equal(rocAuc(r), 0.75);
});

t.test('intermediate points on straight segments are dropped', async (t) => {
  // descending: P P P N N N -> points (fp,tp) (0,1)(0,2)(0,3)(1,3)(2,3)(3,3);
  // second differences are zero at (0,2), (1,3), (2,3): only the first,
  // the corner (0,3) and the last stay
  const s = [6, 5, 4, 3, 2, 1], y = [1, 1, 1, 0, 0, 0];
  const r = rocCurve(s, y);
  t.same(Array.from(r.fpr), [0, 0, 0, 1]);
  t.same(Array.from(r.tpr), [0, 1 / 3, 1, 1]);
  t.same(Array.from(r.thresholds), [Infinity, 6, 4, 1]);
  const full = rocCurve(s, y, { dropIntermediate: false });
  t.equal(full.fpr.length, 7);
  // ties: one point per distinct score
  const tie = rocCurve([0.5, 0.5, 0.5, 0.2], [1, 0, 1, 0], { dropIntermediate: false });
  t.same(Array.from(tie.tpr), [0, 1, 1]);
  t.same(Array.from(tie.fpr), [0, 0.5, 1]);
});

t.test('TAR at the nearest ROC point, largest TAR on ties', async (t) => {
  // 4 genuine, 4 impostor pairs
  const r = rocCurve([0.9, 0.8, 0.7, 0.6, 0.75, 0.5, 0.4, 0.3], [1, 1, 1, 1, 0, 0, 0, 0]);
  // descending P P N P P N N N: points (fp,tp) (0,1)(0,2)(1,2)(1,3)(1,4)(2,4)(3,4)(4,4);
  // kept: (0,1) first, (0,2) and (1,2) corners, (1,4) corner, (4,4) last
  t.same(Array.from(r.fpr), [0, 0, 0, 0.25, 0.25, 1]);
  t.same(Array.from(r.tpr), [0, 0.25, 0.5, 0.5, 1, 1]);
  // FAR .25 has TAR .5 and 1: the largest is taken
  const [a, b, c] = tarAtFar(r, [0.2, 0.01, 0.7]);
  t.equal(a!.tar, 1);
  t.equal(a!.rocFar, 0.25);
  t.equal(b!.tar, 0.5); // nearest is FAR 0: largest TAR there is .5
  t.equal(c!.tar, 1); // |1-.7| = .3 beats |.25-.7| = .45
  t.same(tarAtFar(r).map((x) => x.far), IJB_FAR_TARGETS);
});

t.test('chunks, float32 storage and argument checks', async (t) => {
  const seed = 77;
  t.comment(`seed ${seed}`);
  const rnd = mulberry32(seed);
  const n = 5000;
  const s = new Float32Array(n), y = new Uint8Array(n);
  for (let i = 0; i < n; i++) { y[i] = rnd() < 0.3 ? 1 : 0; s[i] = Math.round((rnd() + 0.4 * y[i]!) * 200) / 200; }
  const whole = rocCurve(s, y);
  const acc = new RocAccumulator({ float32: true });
  for (let i = 0; i < n; i += 777) acc.add(s.subarray(i, i + 777), y.subarray(i, i + 777));
  t.equal(acc.count, n);
  const chunked = acc.curve();
  t.same(Array.from(chunked.fpr), Array.from(whole.fpr));
  t.same(Array.from(chunked.tpr), Array.from(whole.tpr));
  t.throws(() => acc.add([1, 2], [1]), { code: 'E_SHAPE' });
  t.throws(() => acc.add([1, NaN], [1, 0]), { code: 'E_ARG', message: /NaN/ });
  // no negatives: fpr is NaN, as sklearn (with a warning)
  const onlyPos = rocCurve([0.1, 0.2], [1, 1]);
  t.ok(Number.isNaN(onlyPos.fpr[1]!));
});

t.test('two million scores stream through in typed arrays', async (t) => {
  const rnd = mulberry32(5);
  const acc = new RocAccumulator({ float32: true });
  const chunk = 100_000;
  const s = new Float32Array(chunk), y = new Uint8Array(chunk);
  const t0 = performance.now();
  for (let c = 0; c < 20; c++) {
    for (let i = 0; i < chunk; i++) { const p = (c * chunk + i) % 100 === 0; y[i] = p ? 1 : 0; s[i] = rnd() * 0.6 + (p ? 0.4 : 0); }
    acc.add(s, y);
  }
  const r = acc.curve();
  const secs = (performance.now() - t0) / 1000;
  t.comment(`2M scores: ${secs.toFixed(2)} s, ${r.fpr.length} ROC points`);
  t.equal(r.nPos, 20_000);
  t.equal(r.nNeg, 1_980_000);
  t.ok(r.fpr.length < 400_000, `dropping keeps the curve small (${r.fpr.length} of about 2M distinct scores)`);
  const tar = tarAtFar(r, [1e-1]);
  // genuine ~ U(.4, 1), impostor ~ U(0, .6): FAR .1 at .54 -> TAR ~ .77
  t.ok(Math.abs(tar[0]!.tar - 0.7667) < 0.02, `TAR@1e-1 ${tar[0]!.tar}`);
  t.ok(secs < 20);
});

// scikit-learn's roc_curve (1.3+), transcribed in numpy.
const PY_SKLEARN = String.raw`
import sys, json, numpy as np
d = json.load(sys.stdin)
y_true = np.array(d['y'], dtype=np.float64); y_score = np.array(d['s'], dtype=np.float64)
desc = np.argsort(y_score, kind="mergesort")[::-1]
y_score = y_score[desc]; y_true = y_true[desc]
distinct = np.where(np.diff(y_score))[0]
idx = np.r_[distinct, y_true.size - 1]
tps = np.cumsum(y_true, dtype=np.float64)[idx]
fps = 1 + idx - tps
thr = y_score[idx]
if d['drop'] and len(fps) > 2:
    opt = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
    fps = fps[opt]; tps = tps[opt]; thr = thr[opt]
tps = np.r_[0, tps]; fps = np.r_[0, fps]; thr = np.r_[np.inf, thr]
fpr = fps / fps[-1]; tpr = tps / tps[-1]
x_labels = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
ffpr = np.flipud(fpr); ftpr = np.flipud(tpr)
tars = []
for x in x_labels:
    _, mi = min(list(zip(abs(ffpr - x), range(len(ffpr)))))
    tars.append(float(ftpr[mi]))
print(json.dumps(dict(fpr=fpr.tolist(), tpr=tpr.tolist(), thr=[float(v) if np.isfinite(v) else None for v in thr], tars=tars)))
`;

t.test('matches a numpy transcription of scikit-learn + insightface TAR@FAR', { skip: !hasPythonNumpy() ? 'python3 with numpy is not available' : false }, async (t) => {
  const seed = 4242;
  t.comment(`seed ${seed}`);
  const rnd = mulberry32(seed);
  for (const [n, q] of [[3000, 50], [20000, 0], [7, 4]] as const) {
    const s: number[] = [], y: number[] = [];
    for (let i = 0; i < n; i++) {
      const p = i === 0 ? true : i === 1 ? false : rnd() < 0.2;
      y.push(p ? 1 : 0);
      const v = rnd() * 0.7 + (p ? 0.3 : 0);
      s.push(q ? Math.round(v * q) / q : v); // q: heavy ties
    }
    for (const drop of [true, false]) {
      const py = spawnSync('python3', ['-c', PY_SKLEARN], { input: JSON.stringify({ s, y, drop }), encoding: 'utf8', timeout: 50_000, maxBuffer: 256 << 20 });
      if (py.status !== 0) { t.fail(`python failed: ${py.error?.message ?? ''} ${py.stderr}`); continue; }
      const ref = JSON.parse(py.stdout) as { fpr: number[]; tpr: number[]; thr: Array<number | null>; tars: number[] };
      const r = rocCurve(s, y, { dropIntermediate: drop });
      t.same(Array.from(r.fpr), ref.fpr, `n=${n} q=${q} drop=${drop} fpr`);
      t.same(Array.from(r.tpr), ref.tpr, `tpr`);
      t.same(Array.from(r.thresholds, (v) => (Number.isFinite(v) ? v : null)), ref.thr, 'thresholds');
      t.same(tarAtFar(r).map((x) => x.tar), ref.tars, 'TAR@FAR');
    }
  }
});
