/**
 * Face-verification metrics exactly as insightface computes them
 * (recognition/arcface_torch/eval/verification.py: calculate_roc,
 * calculate_accuracy, calculate_val, calculate_val_far, evaluate).
 *
 * - distance = squared L2 between the L2-normalised flip-sum embeddings;
 * - accuracy thresholds numpy.arange(0, 4, 0.01) (i*0.01 in float64);
 * - 10 contiguous folds (sklearn KFold without shuffle);
 * - per fold the FIRST threshold with the best accuracy on the other folds;
 * - mean and population std (numpy's pairwise summation);
 * - VAL at FAR=1e-3 on thresholds numpy.arange(0, 4, 0.001), the threshold
 *   found on the training folds by linear interpolation far -> threshold
 *   (scipy interp1d kind='slinear' as insightface used it, with the
 *   duplicate-x behaviour of the scipy versions that accepted duplicates).
 *
 * Predictions are `dist < threshold` (numpy.less), as in insightface.
 */
import { QuantFaceError } from '../errors.js';

/** numpy.arange(start, stop, step) for float64: start + i*(step') where step' = (start+step)-start. */
export function npArange(start: number, stop: number, step: number): Float64Array {
  if (!(step !== 0) || !Number.isFinite(start) || !Number.isFinite(stop) || !Number.isFinite(step)) {
    throw new QuantFaceError('E_ARG', `npArange: start, stop and step must be finite and step non-zero (got ${start}, ${stop}, ${step})`);
  }
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Float64Array(len);
  if (len === 0) return out;
  out[0] = start;
  if (len === 1) return out;
  const next = start + step;
  const delta = next - start;
  out[1] = next;
  for (let i = 2; i < len; i++) out[i] = start + i * delta;
  return out;
}

/** The accuracy thresholds insightface uses: numpy.arange(0, 4, 0.01) (400 values). */
export function accuracyThresholds(): Float64Array {
  return npArange(0, 4, 0.01);
}

/** The VAL thresholds insightface uses: numpy.arange(0, 4, 0.001) (4000 values). */
export function valThresholds(): Float64Array {
  return npArange(0, 4, 0.001);
}

/**
 * numpy's float64 sum (pairwise summation with 8 accumulators, blocks of 128),
 * starting from the additive identity 0 as numpy's add.reduce does.
 */
export function npSum(a: ArrayLike<number>, start = 0, n = a.length - start): number {
  return 0 + pairwiseSum(a, start, n);
}

function pairwiseSum(a: ArrayLike<number>, s: number, n: number): number {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res += a[s + i]!;
    return res;
  } else if (n <= 128) {
    let r0 = a[s]!, r1 = a[s + 1]!, r2 = a[s + 2]!, r3 = a[s + 3]!;
    let r4 = a[s + 4]!, r5 = a[s + 5]!, r6 = a[s + 6]!, r7 = a[s + 7]!;
    let i = 8;
    for (; i < n - (n % 8); i += 8) {
      r0 += a[s + i]!; r1 += a[s + i + 1]!; r2 += a[s + i + 2]!; r3 += a[s + i + 3]!;
      r4 += a[s + i + 4]!; r5 += a[s + i + 5]!; r6 += a[s + i + 6]!; r7 += a[s + i + 7]!;
    }
    let res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
    for (; i < n; i++) res += a[s + i]!;
    return res;
  } else {
    let n2 = Math.floor(n / 2);
    n2 -= n2 % 8;
    return pairwiseSum(a, s, n2) + pairwiseSum(a, s + n2, n - n2);
  }
}

/** numpy.mean of a float64 vector. */
export function npMean(a: ArrayLike<number>): number {
  return npSum(a) / a.length;
}

/** numpy.std (population, ddof=0) of a float64 vector. */
export function npStd(a: ArrayLike<number>): number {
  const m = npSum(a) / a.length;
  const sq = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const x = a[i]! - m;
    sq[i] = x * x;
  }
  return Math.sqrt(npSum(sq) / a.length);
}

/** Test-fold ranges of sklearn's KFold(n_splits=k, shuffle=False): [start, end) per fold. */
export function kFoldRanges(n: number, k: number): Array<[number, number]> {
  if (!Number.isInteger(k) || k < 2) throw new QuantFaceError('E_ARG', `nFolds must be an integer >= 2 (got ${k})`);
  if (n < k) throw new QuantFaceError('E_ARG', `cannot split ${n} pairs into ${k} folds: need at least ${k} pairs`);
  const out: Array<[number, number]> = [];
  const base = Math.floor(n / k);
  const extra = n % k;
  let start = 0;
  for (let f = 0; f < k; f++) {
    const size = base + (f < extra ? 1 : 0);
    out.push([start, start + size]);
    start += size;
  }
  return out;
}

/** Squared L2 distances between rows of a and b ([n, dim] each), in float64. */
export function squaredL2Distances(a: ArrayLike<number>, b: ArrayLike<number>, dim: number): Float64Array {
  if (a.length !== b.length || a.length % dim !== 0) {
    throw new QuantFaceError('E_SHAPE', `squaredL2Distances: both inputs must be [n, ${dim}] (lengths ${a.length}, ${b.length})`);
  }
  const n = a.length / dim;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    const o = i * dim;
    for (let j = 0; j < dim; j++) {
      const d = a[o + j]! - b[o + j]!;
      s += d * d;
    }
    out[i] = s;
  }
  return out;
}

/**
 * L2-normalises each row of x ([n, dim]) into a new Float64Array, as
 * sklearn.preprocessing.normalize does (a zero row stays zero).
 */
export function l2NormalizeRows(x: ArrayLike<number>, dim: number): Float64Array {
  if (x.length % dim !== 0) throw new QuantFaceError('E_SHAPE', `l2NormalizeRows: length ${x.length} is not a multiple of dim ${dim}`);
  const n = x.length / dim;
  const out = new Float64Array(x.length);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < dim; j++) { const v = x[i * dim + j]!; s += v * v; }
    const norm = Math.sqrt(s);
    const inv = norm === 0 ? 0 : 1 / norm;
    for (let j = 0; j < dim; j++) out[i * dim + j] = norm === 0 ? 0 : x[i * dim + j]! * inv;
  }
  return out;
}

export interface VerificationOptions {
  /** Number of contiguous folds (default 10). */
  nFolds?: number;
  /** Accuracy thresholds (default numpy.arange(0, 4, 0.01)). */
  thresholds?: Float64Array;
  /** VAL thresholds (default numpy.arange(0, 4, 0.001)). */
  valThresholds?: Float64Array;
  /** FAR target for VAL (default 1e-3). */
  farTarget?: number;
}

export interface VerificationResult {
  nPairs: number;
  nFolds: number;
  /** Mean test-fold accuracy. */
  accuracy: number;
  /** Population std of the test-fold accuracies. */
  std: number;
  /** Test accuracy of each fold. */
  foldAccuracies: number[];
  /** Threshold chosen on the other folds, for each fold. */
  foldThresholds: number[];
  /** Mean over folds of the test-fold TPR / FPR at each accuracy threshold. */
  tpr: Float64Array;
  fpr: Float64Array;
  thresholds: Float64Array;
  /** VAL (TAR) at the FAR target: mean, population std, and mean realised FAR. */
  val: number;
  valStd: number;
  far: number;
  farTarget: number;
  /** Per-fold VAL, FAR and the interpolated threshold. */
  foldVal: number[];
  foldFar: number[];
  foldValThresholds: number[];
}

/**
 * Counts, per fold and per threshold, how many same / different pairs have
 * dist < threshold. Returned as [fold][threshold] flattened (Int32Array).
 */
function countBelow(dist: ArrayLike<number>, same: Uint8Array, folds: Array<[number, number]>, thresholds: Float64Array): { same: Int32Array; diff: Int32Array } {
  const T = thresholds.length;
  const cs = new Int32Array(folds.length * T);
  const cd = new Int32Array(folds.length * T);
  for (let f = 0; f < folds.length; f++) {
    const [s, e] = folds[f]!;
    const ds: number[] = [];
    const dd: number[] = [];
    for (let i = s; i < e; i++) (same[i] ? ds : dd).push(dist[i]!);
    const a = Float64Array.from(ds).sort();
    const b = Float64Array.from(dd).sort();
    let ia = 0, ib = 0;
    for (let t = 0; t < T; t++) {
      const th = thresholds[t]!;
      // thresholds may be non-monotone in principle: restart the sweep if so.
      if (t > 0 && th < thresholds[t - 1]!) { ia = 0; ib = 0; }
      while (ia < a.length && a[ia]! < th) ia++;
      while (ib < b.length && b[ib]! < th) ib++;
      cs[f * T + t] = ia;
      cd[f * T + t] = ib;
    }
  }
  return { same: cs, diff: cd };
}

/**
 * Linear interpolation y(xq) through points (x[i], y[i]) with x
 * non-decreasing, as scipy's interp1d(kind='slinear') evaluated it when
 * duplicate x were accepted: the segment [x[p], x[p+1]] with p the last
 * index in 0..m-2 where x[p] <= xq; a zero-length segment gives 0 (its
 * B-spline basis vanishes).
 */
export function slinearInterp(x: ArrayLike<number>, y: ArrayLike<number>, xq: number): number {
  const m = x.length;
  if (m < 2) throw new QuantFaceError('E_ARG', 'slinearInterp needs at least 2 points');
  // stable sort by x (interp1d sorts with mergesort unless assume_sorted)
  let sorted = true;
  for (let i = 1; i < m; i++) if (x[i]! < x[i - 1]!) { sorted = false; break; }
  let xs: ArrayLike<number> = x, ys: ArrayLike<number> = y;
  if (!sorted) {
    const idx = Array.from({ length: m }, (_, i) => i).sort((a, b) => (x[a]! - x[b]!) || (a - b));
    xs = idx.map((i) => x[i]!);
    ys = idx.map((i) => y[i]!);
  }
  if (xq < xs[0]! || xq > xs[m - 1]!) {
    throw new QuantFaceError('E_ARG', `slinearInterp: ${xq} is outside the interpolation range [${xs[0]}, ${xs[m - 1]}]`);
  }
  let p = 0;
  // binary search for the last p in [0, m-2] with xs[p] <= xq
  let lo = 0, hi = m - 2;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid]! <= xq) { p = mid; lo = mid + 1; } else hi = mid - 1;
  }
  const xa = xs[p]!, xb = xs[p + 1]!;
  if (xb === xa) return 0;
  const w = 1 / (xb - xa);
  const h0 = w * (xb - xq);
  const h1 = w * (xq - xa);
  return 0 + ys[p]! * h0 + ys[p + 1]! * h1;
}

function toSameMask(issame: ArrayLike<boolean | number>, n: number): Uint8Array {
  const m = new Uint8Array(n);
  for (let i = 0; i < n; i++) m[i] = issame[i] ? 1 : 0;
  return m;
}

/**
 * insightface's verification protocol on precomputed distances (squared L2
 * between normalised embeddings; smaller = more similar).
 */
export function evaluateVerification(dist: ArrayLike<number>, issame: ArrayLike<boolean | number>, options: VerificationOptions = {}): VerificationResult {
  const nFolds = options.nFolds ?? 10;
  const thresholds = options.thresholds ?? accuracyThresholds();
  const vthresholds = options.valThresholds ?? valThresholds();
  const farTarget = options.farTarget ?? 1e-3;
  if (dist.length !== issame.length) {
    throw new QuantFaceError('E_SHAPE', `evaluateVerification: ${dist.length} distances but ${issame.length} labels; give one label per pair`);
  }
  const n = Math.min(dist.length, issame.length);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(dist[i]!)) throw new QuantFaceError('E_ARG', `evaluateVerification: distance ${i} is NaN (an embedding is NaN or missing)`);
  }
  const folds = kFoldRanges(n, nFolds);
  const same = toSameMask(issame, n);
  const T = thresholds.length;

  // per-fold label totals
  const foldSame = folds.map(([s, e]) => { let c = 0; for (let i = s; i < e; i++) c += same[i]!; return c; });
  const foldSize = folds.map(([s, e]) => e - s);
  const totSame = foldSame.reduce((a, b) => a + b, 0);

  const cnt = countBelow(dist, same, folds, thresholds);
  const totBelowSame = new Int32Array(T), totBelowDiff = new Int32Array(T);
  for (let f = 0; f < nFolds; f++) for (let t = 0; t < T; t++) { totBelowSame[t] += cnt.same[f * T + t]!; totBelowDiff[t] += cnt.diff[f * T + t]!; }

  const foldAccuracies: number[] = [];
  const foldThresholds: number[] = [];
  const tprs = new Float64Array(nFolds * T), fprs = new Float64Array(nFolds * T);
  for (let f = 0; f < nFolds; f++) {
    const trainSize = n - foldSize[f]!;
    const trainSame = totSame - foldSame[f]!;
    const trainDiff = trainSize - trainSame;
    let best = -1, bestIdx = 0;
    for (let t = 0; t < T; t++) {
      const tp = totBelowSame[t]! - cnt.same[f * T + t]!;
      const fp = totBelowDiff[t]! - cnt.diff[f * T + t]!;
      const tn = trainDiff - fp;
      const acc = (tp + tn) / trainSize;
      if (acc > best) { best = acc; bestIdx = t; }
    }
    const testSame = foldSame[f]!, testDiff = foldSize[f]! - testSame;
    for (let t = 0; t < T; t++) {
      const tp = cnt.same[f * T + t]!, fp = cnt.diff[f * T + t]!;
      const fn = testSame - tp, tn = testDiff - fp;
      tprs[f * T + t] = tp + fn === 0 ? 0 : tp / (tp + fn);
      fprs[f * T + t] = fp + tn === 0 ? 0 : fp / (fp + tn);
    }
    const tp = cnt.same[f * T + bestIdx]!, fp = cnt.diff[f * T + bestIdx]!;
    foldAccuracies.push((tp + (testDiff - fp)) / foldSize[f]!);
    foldThresholds.push(thresholds[bestIdx]!);
  }
  const tpr = new Float64Array(T), fpr = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    let a = 0, b = 0;
    for (let f = 0; f < nFolds; f++) { a += tprs[f * T + t]!; b += fprs[f * T + t]!; }
    tpr[t] = a / nFolds; fpr[t] = b / nFolds;
  }

  // VAL @ FAR
  const VT = vthresholds.length;
  const vcnt = countBelow(dist, same, folds, vthresholds);
  const vTotDiff = new Int32Array(VT);
  for (let f = 0; f < nFolds; f++) for (let t = 0; t < VT; t++) vTotDiff[t] += vcnt.diff[f * VT + t]!;
  const foldVal: number[] = [], foldFar: number[] = [], foldValThresholds: number[] = [];
  const farTrain = new Float64Array(VT);
  for (let f = 0; f < nFolds; f++) {
    const trainSame = totSame - foldSame[f]!;
    const trainDiff = n - foldSize[f]! - trainSame;
    let maxFar = -Infinity;
    for (let t = 0; t < VT; t++) {
      const fa = vTotDiff[t]! - vcnt.diff[f * VT + t]!;
      farTrain[t] = fa / trainDiff; // numpy: float division (nan/inf if no different pairs)
      if (farTrain[t]! > maxFar) maxFar = farTrain[t]!;
    }
    let th: number;
    if (maxFar >= farTarget) {
      th = farTarget < farTrain[0]! ? vthresholds[0]! : slinearInterp(farTrain, vthresholds, farTarget);
    } else {
      th = 0.0;
    }
    // calculate_val_far on the test fold with the interpolated threshold
    const [s, e] = folds[f]!;
    let ta = 0, fa = 0;
    for (let i = s; i < e; i++) {
      if (dist[i]! < th) { if (same[i]) ta++; else fa++; }
    }
    const testSame = foldSame[f]!, testDiff = foldSize[f]! - testSame;
    foldVal.push(ta / testSame);
    foldFar.push(fa / testDiff);
    foldValThresholds.push(th);
  }
  return {
    nPairs: n,
    nFolds,
    accuracy: npMean(foldAccuracies),
    std: npStd(foldAccuracies),
    foldAccuracies,
    foldThresholds,
    tpr,
    fpr,
    thresholds,
    val: npMean(foldVal),
    valStd: npStd(foldVal),
    far: npMean(foldFar),
    farTarget,
    foldVal,
    foldFar,
    foldValThresholds,
  };
}

/**
 * Full protocol from embeddings: `emb` holds 2N rows of `dim` (pair i =
 * rows 2i and 2i+1, as insightface's .bin layout), already flip-summed.
 * Rows are L2-normalised here (sklearn.preprocessing.normalize), then the
 * squared L2 distances go to {@link evaluateVerification}.
 */
export function evaluateEmbeddings(emb: ArrayLike<number>, dim: number, issame: ArrayLike<boolean | number>, options: VerificationOptions = {}): VerificationResult & { distances: Float64Array } {
  if (emb.length % (2 * dim) !== 0) {
    throw new QuantFaceError('E_SHAPE', `evaluateEmbeddings: ${emb.length} values is not 2N rows of ${dim}`);
  }
  const n = emb.length / (2 * dim);
  if (n !== issame.length) {
    throw new QuantFaceError('E_SHAPE', `evaluateEmbeddings: ${n} pairs of embeddings but ${issame.length} labels`);
  }
  const norm = l2NormalizeRows(emb, dim);
  const a = new Float64Array(n * dim), b = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    a.set(norm.subarray(2 * i * dim, (2 * i + 1) * dim), i * dim);
    b.set(norm.subarray((2 * i + 1) * dim, (2 * i + 2) * dim), i * dim);
  }
  const distances = squaredL2Distances(a, b, dim);
  return { ...evaluateVerification(distances, issame, options), distances };
}
