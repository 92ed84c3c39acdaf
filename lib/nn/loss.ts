/**
 * Losses. QuantFaceLoss is the distillation loss of the method:
 *   L = mean over batch and dims of (s/|s| - t/|t|)^2 = (2/d)(1 - mean cos(s, t))
 * with s the student's and t the teacher's raw embeddings [N, d].
 */
import { QuantFaceError, shapeStr, Tensor, type FTensor, type FloatArray } from '../tensor.js';
import { l2normalizeRows, l2normalizeBackwardRows } from './layers.js';

/** Checks that s and t are both [N, d] and L2-normalises their rows (float64); `norm` holds the norms of s's rows. */
function normalizedPair(what: string, s: FTensor, t: FTensor, eps: number): { n: number; d: number; u: Float64Array; v: Float64Array; norm: Float64Array } {
  if (s.rank !== 2 || t.rank !== 2 || s.shape[0] !== t.shape[0] || s.shape[1] !== t.shape[1])
    throw new QuantFaceError('E_SHAPE', `${what}: student ${shapeStr(s.shape)} and teacher ${shapeStr(t.shape)} must both be [N, d]`);
  const [n, d] = s.shape as [number, number];
  const u = new Float64Array(n * d);
  const v = new Float64Array(n * d);
  const norm = l2normalizeRows(s.data, u, n, d, eps);
  l2normalizeRows(t.data, v, n, d, eps);
  return { n, d, u, v, norm };
}

export class QuantFaceLoss {
  readonly eps: number;
  private ctx: { u: Float64Array; norm: Float64Array; r: Float64Array; shape: readonly number[]; dtype: 'f32' | 'f64' } | undefined;
  private gradBuf: FTensor | null = null;
  /** Mean cosine similarity between student and teacher of the last forward. */
  lastMeanCosine = NaN;

  constructor(eps = 1e-12) {
    this.eps = eps;
  }

  /** Loss value for student embeddings s and teacher embeddings t ([N, d] each). */
  forward(s: FTensor, t: FTensor): number {
    const { n, d, u, v: tn, norm } = normalizedPair('QuantFaceLoss', s, t, this.eps);
    const r = new Float64Array(n * d);
    let sum = 0;
    let cos = 0;
    for (let i = 0; i < n * d; i++) {
      const v = u[i]! - tn[i]!;
      r[i] = v;
      sum += v * v;
      cos += u[i]! * tn[i]!;
    }
    this.lastMeanCosine = cos / n;
    this.ctx = { u, norm, r, shape: s.shape, dtype: s.dtype };
    return sum / (n * d);
  }

  /** dL/ds for the last forward, times scale (e.g. a loss weight). A buffer reused by the next call. */
  backward(scale = 1): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'QuantFaceLoss.backward called before forward');
    const [n, d] = ctx.shape as [number, number];
    if (!this.gradBuf || this.gradBuf.dtype !== ctx.dtype || this.gradBuf.numel !== n * d) this.gradBuf = Tensor.zeros(ctx.shape, ctx.dtype) as FTensor;
    else if (this.gradBuf.shape[0] !== n) this.gradBuf = this.gradBuf.reshape(ctx.shape);
    // dL/du = 2 r / (n d); then through u = s / |s|.
    const gu = new Float64Array(n * d);
    const k = (2 * scale) / (n * d);
    for (let i = 0; i < n * d; i++) gu[i] = k * ctx.r[i]!;
    const out = new Float64Array(n * d);
    l2normalizeBackwardRows(ctx.u, ctx.norm, gu, out, n, d, this.eps);
    (this.gradBuf.data as FloatArray).set(out);
    return this.gradBuf;
  }
}

/**
 * Relational distillation loss (beyond the paper; in the spirit of Park et al., "Relational Knowledge
 * Distillation", CVPR 2019, and of evaluation-oriented KD for face recognition): the student keeps the
 * teacher's pairwise cosine similarities within a batch,
 *   L = mean over pairs i != j of (cos(s_i, s_j) - cos(t_i, t_j))^2.
 * Verification compares faces with each other, so the pair geometry is what must survive
 * quantization; a student short of capacity may spend it there rather than on every embedding
 * direction. Needs batches of at least 2.
 */
export class RelationLoss {
  readonly eps: number;
  private ctx: { u: Float64Array; norm: Float64Array; diff: Float64Array; shape: readonly number[]; dtype: 'f32' | 'f64' } | undefined;

  constructor(eps = 1e-12) {
    this.eps = eps;
  }

  forward(s: FTensor, t: FTensor): number {
    if (s.shape[0]! < 2) throw new QuantFaceError('E_SHAPE', `RelationLoss: needs at least 2 embeddings per batch, got ${s.shape[0]}`);
    const { n, d, u, v, norm } = normalizedPair('RelationLoss', s, t, this.eps);
    const diff = new Float64Array(n * n);
    let sum = 0;
    for (let i = 0; i < n; i++)
      for (let j = i + 1; j < n; j++) {
        let cs = 0;
        let ct = 0;
        for (let k = 0; k < d; k++) {
          cs += u[i * d + k]! * u[j * d + k]!;
          ct += v[i * d + k]! * v[j * d + k]!;
        }
        const e = cs - ct;
        diff[i * n + j] = e;
        diff[j * n + i] = e;
        sum += 2 * e * e;
      }
    this.ctx = { u, norm, diff, shape: s.shape, dtype: s.dtype };
    return sum / (n * (n - 1));
  }

  /** dL/ds for the last forward, times scale. A fresh tensor. */
  backward(scale = 1): FTensor {
    const ctx = this.ctx;
    if (!ctx) throw new QuantFaceError('E_ARG', 'RelationLoss.backward called before forward');
    const [n, d] = ctx.shape as [number, number];
    // dL/du_i = 4 / (n (n - 1)) sum_j diff_ij u_j (each unordered pair counted twice in L).
    const gu = new Float64Array(n * d);
    const k = (4 * scale) / (n * (n - 1));
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        const e = ctx.diff[i * n + j]!;
        if (e === 0) continue;
        const f = k * e;
        for (let c = 0; c < d; c++) gu[i * d + c] += f * ctx.u[j * d + c]!;
      }
    const out = new Float64Array(n * d);
    l2normalizeBackwardRows(ctx.u, ctx.norm, gu, out, n, d, this.eps);
    const g = Tensor.zeros(ctx.shape, ctx.dtype) as FTensor;
    (g.data as FloatArray).set(out);
    return g;
  }
}

/** Mean squared error between two equally shaped tensors, with its gradient. */
export class MSELoss {
  private ctx: { diff: Float64Array; shape: readonly number[]; dtype: 'f32' | 'f64' } | undefined;

  forward(a: FTensor, b: FTensor): number {
    if (a.numel !== b.numel) throw new QuantFaceError('E_SHAPE', `MSELoss: ${shapeStr(a.shape)} vs ${shapeStr(b.shape)}`);
    const diff = new Float64Array(a.numel);
    let s = 0;
    for (let i = 0; i < diff.length; i++) {
      const v = a.data[i]! - b.data[i]!;
      diff[i] = v;
      s += v * v;
    }
    this.ctx = { diff, shape: a.shape, dtype: a.dtype };
    return s / diff.length;
  }

  backward(scale = 1): FTensor {
    if (!this.ctx) throw new QuantFaceError('E_ARG', 'MSELoss.backward called before forward');
    const g = Tensor.zeros(this.ctx.shape, this.ctx.dtype) as FTensor;
    const k = (2 * scale) / this.ctx.diff.length;
    for (let i = 0; i < g.numel; i++) g.data[i] = k * this.ctx.diff[i]!;
    return g;
  }
}
