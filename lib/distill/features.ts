/**
 * Intermediate-feature distillation (`featureLoss`, beyond the paper: the
 * QuantFace loss is on the embedding only). With a few hundred training
 * faces, matching the teacher's activations inside the network as well
 * gives the student many more targets per image.
 *
 * The taps are the root graph's PReLU and Add nodes (where the student
 * quantizes its activations). Each is wrapped in a FeatureTap that records
 * its output; on the teacher (a second set of taps) the output is copied
 * during the training step's teacher forward. The added loss is
 *
 *   L_f = weight x (1 / T) sum_l mean((s_l - t_l)^2) / mean(t_l^2)
 *
 * (T taps, each term normalised by the teacher feature's mean square), and
 * its gradient is added to the gradient flowing into each tapped output
 * during the student's backward. `unwrap` restores the original modules
 * (the saved student and the caller's teacher carry no tap).
 */
import { QuantFaceError, type FTensor } from '../tensor.js';
import { Module, isGradEnabled, type ShapeInfo } from '../nn/module.js';
import { Graph } from '../nn/containers.js';
import { PReLU, Add } from '../nn/layers.js';
import { bufferPool, sameBuffer } from '../nn/pool.js';

export class FeatureTap extends Module {
  /** Copy the output (teacher side, while set). */
  capture = false;
  /** Last output with gradients enabled (student side), valid until the next forward. */
  last: FTensor | undefined;
  /** The copy made while capture was set. */
  captured: FTensor | undefined;
  /** Added to the output gradient in the next backward (then cleared). */
  extraGrad: FTensor | undefined;

  constructor(inner: Module) {
    super();
    this.setChild('inner', inner);
  }

  get inner(): Module {
    return this.getChild('inner')!;
  }

  override get numInputs(): number {
    return this.inner.numInputs;
  }

  inferShape(...s: number[][]): ShapeInfo {
    return this.inner.inferShape(...s);
  }

  forward(...xs: FTensor[]): FTensor {
    const y = this.inner.forward(...xs);
    if (this.capture) {
      const c = this.captured;
      if (c && c.shape.length === y.shape.length && c.shape.every((v, i) => v === y.shape[i])) c.data.set(y.data);
      else this.captured = y.clone() as FTensor;
    }
    this.last = isGradEnabled() ? y : undefined;
    return y;
  }

  backward(gradOut: FTensor): FTensor | FTensor[] {
    const extra = this.extraGrad;
    this.extraGrad = undefined;
    if (!extra) return this.inner.backward(gradOut);
    const sum = bufferPool.acquire(gradOut.shape, gradOut.dtype) as FTensor;
    const s = sum.data;
    const g = gradOut.data;
    const e = extra.data;
    for (let i = 0; i < s.length; i++) s[i] = g[i]! + e[i]!;
    const r = this.inner.backward(sum);
    const rs = Array.isArray(r) ? r : [r];
    if (!rs.some((t) => sameBuffer(t, sum))) bufferPool.release(sum);
    bufferPool.release(extra);
    return r;
  }

  describe(): string {
    return `FeatureTap(${this.inner.describe()})`;
  }
}

export interface FeatureTaps {
  names: string[];
  student: FeatureTap[];
  teacher: FeatureTap[];
  /** Loss of the last `compute` (before the weight). */
  lastLoss: number;
  /** Teacher taps copy their outputs while fn runs. */
  captureTeacher<T>(fn: () => T): T;
  /** Feature loss of the last student and teacher forwards; sets each student tap's extra gradient. Returns weight x L. */
  compute(weight: number): number;
  /** Puts the original modules back in both graphs. */
  unwrap(): void;
}

function tapTargets(g: Graph): string[] {
  return g.nodeList.filter((n) => {
    const m = g.getChild(n.name);
    return m instanceof PReLU || m instanceof Add;
  }).map((n) => n.name);
}

/** Wraps the PReLU and Add nodes of the student's and the teacher's root graphs (same node names) in FeatureTaps. */
export function tapFeatures(student: Module, teacher: Module): FeatureTaps {
  if (!(student instanceof Graph) || !(teacher instanceof Graph))
    throw new QuantFaceError('E_UNSUPPORTED_OP', 'featureLoss needs a graph model (an imported teacher) whose PReLU / Add nodes can be tapped');
  const names = tapTargets(student).filter((n) => teacher.getChild(n) !== undefined);
  if (!names.length) throw new QuantFaceError('E_UNSUPPORTED_OP', 'featureLoss: the model has no PReLU or Add node at its top level to tap');
  const st: FeatureTap[] = [];
  const te: FeatureTap[] = [];
  for (const n of names) {
    const s = new FeatureTap(student.getChild(n)!);
    s.train(student.training);
    student.setChild(n, s);
    st.push(s);
    const t = new FeatureTap(teacher.getChild(n)!);
    t.train(teacher.training);
    teacher.setChild(n, t);
    te.push(t);
  }
  const taps: FeatureTaps = {
    names,
    student: st,
    teacher: te,
    lastLoss: NaN,
    captureTeacher<T>(fn: () => T): T {
      for (const t of te) t.capture = true;
      try {
        return fn();
      } finally {
        for (const t of te) t.capture = false;
      }
    },
    compute(weight: number): number {
      let total = 0;
      const T = names.length;
      names.forEach((n, k) => {
        const s = st[k]!.last;
        const t = te[k]!.captured;
        if (!s || !t || s.numel !== t.numel) throw new QuantFaceError('E_INTERNAL', `featureLoss: no matching student / teacher output at ${n}`);
        const sd = s.data;
        const td = t.data;
        let tt = 0;
        let d2 = 0;
        for (let i = 0; i < sd.length; i++) {
          const d = sd[i]! - td[i]!;
          d2 += d * d;
          tt += td[i]! * td[i]!;
        }
        const norm = Math.max(tt, 1e-12);
        total += d2 / norm / T;
        // d (weight / T x (d2 / N) / (tt / N)) / d s = weight / T x 2 (s - t) / tt
        const c = (2 * weight) / (T * norm);
        const g = (st[k]!.extraGrad = bufferPool.acquire(s.shape, s.dtype) as FTensor);
        const gd = g.data;
        for (let i = 0; i < sd.length; i++) gd[i] = c * (sd[i]! - td[i]!);
      });
      taps.lastLoss = total;
      return weight * total;
    },
    unwrap(): void {
      names.forEach((n, k) => {
        student.setChild(n, st[k]!.inner);
        teacher.setChild(n, te[k]!.inner);
      });
    },
  };
  return taps;
}
