/**
 * ROC curves with scikit-learn's roc_curve semantics (including
 * drop_intermediate=True) built from scores that arrive in chunks, and
 * TAR at the ROC point nearest each FAR target as insightface's IJB
 * evaluation reports it.
 *
 * Memory: scores are kept in two growable typed arrays (one for genuine,
 * one for impostor pairs), float32 or float64, sorted in place with the
 * native typed-array sort; the curve is then built by one merge walk with
 * a 3-point window for the intermediate-point dropping, so nothing of the
 * size of the input is allocated besides the scores themselves.
 */
import { QuantFaceError } from '../errors.js';

type FloatArray = Float32Array | Float64Array;

/** Growable typed array of scores. */
class ScoreBuffer {
  private buf: FloatArray;
  length = 0;
  constructor(private readonly f32: boolean, initial = 1024) {
    this.buf = f32 ? new Float32Array(initial) : new Float64Array(initial);
  }
  push(v: number): void {
    if (this.length === this.buf.length) this.grow(this.length + 1);
    this.buf[this.length++] = v;
  }
  grow(min: number): void {
    let cap = this.buf.length;
    while (cap < min) cap = Math.max(16, Math.ceil(cap * 1.5));
    const nb = this.f32 ? new Float32Array(cap) : new Float64Array(cap);
    nb.set(this.buf.subarray(0, this.length));
    this.buf = nb;
  }
  /** Sorted ascending view (sorts in place; shrinks the buffer to its length). */
  sorted(): FloatArray {
    if (this.buf.length !== this.length) {
      const nb = this.f32 ? new Float32Array(this.length) : new Float64Array(this.length);
      nb.set(this.buf.subarray(0, this.length));
      this.buf = nb;
    }
    this.buf.sort();
    return this.buf;
  }
}

/** Growable float64 output column. */
class Col {
  a = new Float64Array(256);
  n = 0;
  push(v: number): void {
    if (this.n === this.a.length) { const nb = new Float64Array(this.a.length * 2); nb.set(this.a); this.a = nb; }
    this.a[this.n++] = v;
  }
  done(): Float64Array { return this.a.slice(0, this.n); }
}

export interface RocCurve {
  /** False positive rate (FAR), ascending, starting at 0. */
  fpr: Float64Array;
  /** True positive rate (TAR), ascending, starting at 0. */
  tpr: Float64Array;
  /** Score thresholds (score >= threshold is accepted); thresholds[0] = Infinity. */
  thresholds: Float64Array;
  /** Number of genuine (positive) and impostor (negative) pairs. */
  nPos: number;
  nNeg: number;
}

export interface RocOptions {
  /** Store scores as float32 (half the memory; exact when the scores are float32). Default false. */
  float32?: boolean;
  /** scikit-learn's drop_intermediate (default true). */
  dropIntermediate?: boolean;
}

/**
 * Accumulates (score, label) pairs in chunks; `curve()` returns the ROC.
 * Higher score = more similar (e.g. cosine similarity).
 */
export class RocAccumulator {
  private readonly pos: ScoreBuffer;
  private readonly neg: ScoreBuffer;
  private readonly f32: boolean;
  private readonly dropIntermediate: boolean;

  constructor(options: RocOptions = {}) {
    this.f32 = options.float32 ?? false;
    this.dropIntermediate = options.dropIntermediate ?? true;
    this.pos = new ScoreBuffer(this.f32);
    this.neg = new ScoreBuffer(this.f32);
  }

  get count(): number { return this.pos.length + this.neg.length; }

  /** Adds a chunk: scores[i] with label labels[i] (truthy = genuine pair). */
  add(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): void {
    if (scores.length !== labels.length) {
      throw new QuantFaceError('E_SHAPE', `RocAccumulator.add: ${scores.length} scores but ${labels.length} labels`);
    }
    for (let i = 0; i < scores.length; i++) {
      const s = scores[i]!;
      if (Number.isNaN(s)) throw new QuantFaceError('E_ARG', `RocAccumulator.add: score ${i} of this chunk is NaN; check the embeddings (a zero or NaN feature)`);
      if (labels[i]) this.pos.push(s); else this.neg.push(s);
    }
  }

  /** Builds the curve (sorts the stored scores in place; more chunks may still be added afterwards). */
  curve(): RocCurve {
    return rocFromSorted(this.pos.sorted(), this.neg.sorted(), this.dropIntermediate);
  }
}

/**
 * ROC from ascending-sorted genuine and impostor scores, as
 * sklearn.metrics.roc_curve(y, s, drop_intermediate) returns it.
 */
export function rocFromSorted(pos: ArrayLike<number>, neg: ArrayLike<number>, dropIntermediate = true): RocCurve {
  const nPos = pos.length, nNeg = neg.length;
  // The distinct-threshold points of _binary_clf_curve, walked in descending
  // score order; a 3-point window implements drop_intermediate.
  const fps = new Col(), tps = new Col(), ths = new Col();
  fps.push(0); tps.push(0); ths.push(Infinity); // the (0,0) point added by roc_curve
  let i = nPos - 1, j = nNeg - 1;
  let tp = 0, fp = 0;
  // P[k-1] = (pF, pT), P[k] = (cF, cT, cS); k = number of points seen - 1
  let pF = 0, pT = 0, cF = 0, cT = 0, cS = 0;
  let seen = 0;
  const emit = (f: number, t: number, s: number) => { fps.push(f); tps.push(t); ths.push(s); };
  while (i >= 0 || j >= 0) {
    const v = i < 0 ? neg[j]! : j < 0 ? pos[i]! : Math.max(pos[i]!, neg[j]!);
    while (i >= 0 && pos[i]! === v) { tp++; i--; }
    while (j >= 0 && neg[j]! === v) { fp++; j--; }
    if (seen > 0) {
      // decide on the pending point P[k] now that P[k+1] = (fp, tp) is known
      const keep = !dropIntermediate || seen === 1
        || (fp - cF) - (cF - pF) !== 0 || (tp - cT) - (cT - pT) !== 0;
      if (keep) emit(cF, cT, cS);
    }
    pF = cF; pT = cT;
    cF = fp; cT = tp; cS = v;
    seen++;
  }
  if (seen > 0) emit(cF, cT, cS); // the last point is always kept
  const F = fps.done(), Tp = tps.done();
  const fpr = new Float64Array(F.length), tpr = new Float64Array(Tp.length);
  const lastF = F[F.length - 1]!, lastT = Tp[Tp.length - 1]!;
  for (let k = 0; k < F.length; k++) {
    fpr[k] = lastF <= 0 ? NaN : F[k]! / lastF;
    tpr[k] = lastT <= 0 ? NaN : Tp[k]! / lastT;
  }
  return { fpr, tpr, thresholds: ths.done(), nPos, nNeg };
}

/** ROC of a complete set of scores and labels (see {@link RocAccumulator}). */
export function rocCurve(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>, options: RocOptions = {}): RocCurve {
  const acc = new RocAccumulator(options);
  acc.add(scores, labels);
  return acc.curve();
}

/** The FAR targets insightface's IJB evaluation reports. */
export const IJB_FAR_TARGETS: readonly number[] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

export interface TarAtFar {
  far: number;
  /** TAR at the ROC point nearest to `far`. */
  tar: number;
  /** The FPR of that ROC point and its score threshold. */
  rocFar: number;
  threshold: number;
}

/**
 * TAR at the ROC point nearest each FAR target, as insightface's IJB
 * evaluation does: flip the curve (so ties in |fpr - far| pick the largest
 * TPR at the same FPR) and take the first minimum of |fpr - far|.
 */
export function tarAtFar(roc: RocCurve, targets: readonly number[] = IJB_FAR_TARGETS): TarAtFar[] {
  const n = roc.fpr.length;
  return targets.map((far) => {
    let best = Infinity, bestK = -1;
    for (let r = 0; r < n; r++) {
      const k = n - 1 - r; // flipped order
      const d = Math.abs(roc.fpr[k]! - far);
      if (d < best) { best = d; bestK = k; }
    }
    if (bestK < 0) return { far, tar: NaN, rocFar: NaN, threshold: NaN };
    return { far, tar: roc.tpr[bestK]!, rocFar: roc.fpr[bestK]!, threshold: roc.thresholds[bestK]! };
  });
}

/** Area under the ROC curve by the trapezoidal rule (sklearn.metrics.auc). */
export function rocAuc(roc: RocCurve): number {
  let a = 0;
  for (let k = 1; k < roc.fpr.length; k++) a += (roc.fpr[k]! - roc.fpr[k - 1]!) * (roc.tpr[k]! + roc.tpr[k - 1]!) / 2;
  return a;
}
