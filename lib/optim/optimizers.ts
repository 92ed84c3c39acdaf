/**
 * Optimisers over Parameters (PyTorch semantics), gradient-norm clipping.
 * Parameters without a gradient (grad === null) or with requiresGrad false
 * are skipped. Per-group options override the optimiser's defaults.
 */
import { QuantFaceError, type FTensor, type FloatArray } from '../tensor.js';
import { Parameter } from '../nn/module.js';

export interface ParamGroup<O> {
  params: Parameter[];
  /** Multiplies the optimiser's learning rate for this group. Default 1. */
  lrScale?: number;
  options?: Partial<O>;
}

type ParamsArg<O> = Parameter[] | ParamGroup<O>[];

function toGroups<O>(params: ParamsArg<O>): ParamGroup<O>[] {
  if (params.length === 0) return [];
  if (params[0] instanceof Parameter) return [{ params: params as Parameter[] }];
  return params as ParamGroup<O>[];
}

export abstract class Optimizer<O extends object> {
  /** Base learning rate (schedules set it). */
  lr: number;
  readonly groups: ParamGroup<O>[];
  readonly defaults: O;
  /** Steps taken. */
  stepCount = 0;
  protected state = new Map<Parameter, Record<string, FTensor | number>>();

  constructor(params: ParamsArg<O>, lr: number, defaults: O) {
    if (!(lr >= 0)) throw new QuantFaceError('E_ARG', `optimizer: lr must be >= 0, got ${lr}`);
    this.lr = lr;
    this.groups = toGroups(params);
    this.defaults = defaults;
    const seen = new Set<Parameter>();
    for (const g of this.groups)
      for (const p of g.params) {
        if (seen.has(p)) throw new QuantFaceError('E_ARG', 'optimizer: a parameter appears in more than one group');
        seen.add(p);
      }
  }

  /** Every parameter the optimiser updates. */
  parameters(): Parameter[] {
    return this.groups.flatMap((g) => g.params);
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.zeroGrad();
  }

  step(): void {
    this.stepCount++;
    for (const g of this.groups) {
      const o = { ...this.defaults, ...(g.options ?? {}) } as O;
      const lr = this.lr * (g.lrScale ?? 1);
      for (const p of g.params) {
        const grad = p.grad;
        if (!p.requiresGrad || !grad) continue;
        let st = this.state.get(p);
        if (!st) {
          st = {};
          this.state.set(p, st);
        }
        this.update(p.data.data, grad.data, lr, o, st, p);
      }
    }
  }

  protected abstract update(w: FloatArray, g: FloatArray, lr: number, o: O, st: Record<string, FTensor | number>, p: Parameter): void;

  protected buf(st: Record<string, FTensor | number>, key: string, like: FTensor): FTensor {
    let b = st[key] as FTensor | undefined;
    if (!b) {
      b = like.clone().fill(0) as FTensor;
      st[key] = b;
    }
    return b;
  }
}

export interface SGDOptions {
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
  /** 'l2' adds weightDecay * w to the gradient (PyTorch SGD); 'decoupled' scales w by (1 - lr * weightDecay) (SGDW). Default 'l2'. */
  weightDecayMode?: 'l2' | 'decoupled';
}

/**
 * SGD with momentum (PyTorch's formulation):
 *   g = grad + wd * w                         (l2 mode)
 *   buf = momentum * buf + (1 - dampening) g  (buf = g at the first step)
 *   d = nesterov ? g + momentum * buf : buf
 *   w -= lr * d                               (decoupled: w *= 1 - lr * wd first)
 */
export class SGD extends Optimizer<Required<SGDOptions>> {
  constructor(params: ParamsArg<Required<SGDOptions>>, lr: number, opts: SGDOptions = {}) {
    const d: Required<SGDOptions> = {
      momentum: opts.momentum ?? 0,
      dampening: opts.dampening ?? 0,
      nesterov: opts.nesterov ?? false,
      weightDecay: opts.weightDecay ?? 0,
      weightDecayMode: opts.weightDecayMode ?? 'l2',
    };
    if (d.nesterov && (d.momentum <= 0 || d.dampening !== 0)) throw new QuantFaceError('E_ARG', 'SGD: Nesterov momentum requires momentum > 0 and dampening 0');
    super(params, lr, d);
  }

  protected update(w: FloatArray, g: FloatArray, lr: number, o: Required<SGDOptions>, st: Record<string, FTensor | number>, p: Parameter): void {
    const n = w.length;
    const wd = o.weightDecay;
    const l2 = o.weightDecayMode === 'l2' ? wd : 0;
    if (o.weightDecayMode === 'decoupled' && wd !== 0) {
      const k = 1 - lr * wd;
      for (let i = 0; i < n; i++) w[i] *= k;
    }
    const mom = o.momentum;
    if (mom === 0) {
      for (let i = 0; i < n; i++) w[i] -= lr * (g[i]! + l2 * w[i]!);
      return;
    }
    const first = !st.buf;
    const buf = this.buf(st, 'buf', p.data).data;
    const damp = first ? 1 : 1 - o.dampening;
    const nest = o.nesterov;
    for (let i = 0; i < n; i++) {
      const gi = g[i]! + l2 * w[i]!;
      const b = first ? gi : mom * buf[i]! + damp * gi;
      buf[i] = b;
      w[i] -= lr * (nest ? gi + mom * b : b);
    }
  }
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay. Default 0.01 (PyTorch's AdamW default). */
  weightDecay?: number;
}

/** AdamW (Loshchilov and Hutter), bias-corrected, PyTorch's formulation. */
export class AdamW extends Optimizer<Required<AdamWOptions>> {
  constructor(params: ParamsArg<Required<AdamWOptions>>, lr = 1e-3, opts: AdamWOptions = {}) {
    super(params, lr, { beta1: opts.beta1 ?? 0.9, beta2: opts.beta2 ?? 0.999, eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 0.01 });
  }

  protected update(w: FloatArray, g: FloatArray, lr: number, o: Required<AdamWOptions>, st: Record<string, FTensor | number>, p: Parameter): void {
    const t = ((st.t as number | undefined) ?? 0) + 1;
    st.t = t;
    const m = this.buf(st, 'm', p.data).data;
    const v = this.buf(st, 'v', p.data).data;
    const { beta1, beta2, eps, weightDecay } = o;
    const bc1 = 1 - beta1 ** t;
    const bc2 = 1 - beta2 ** t;
    const stepSize = lr / bc1;
    const sq2 = Math.sqrt(bc2);
    const decay = 1 - lr * weightDecay;
    const n = w.length;
    for (let i = 0; i < n; i++) {
      const gi = g[i]!;
      const mi = beta1 * m[i]! + (1 - beta1) * gi;
      const vi = beta2 * v[i]! + (1 - beta2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      w[i] = w[i]! * decay - (stepSize * mi) / (Math.sqrt(vi) / sq2 + eps);
    }
  }
}

/**
 * Scales all gradients so that their global L2 norm is at most maxNorm
 * (PyTorch's clip_grad_norm_: factor maxNorm / (norm + 1e-6) when norm > maxNorm).
 * Returns the norm before clipping.
 */
export function clipGradNorm(params: Parameter[], maxNorm: number): number {
  let s = 0;
  for (const p of params) {
    const g = p.grad;
    if (!g) continue;
    const d = g.data;
    for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
  }
  const norm = Math.sqrt(s);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1)
    for (const p of params) {
      const g = p.grad;
      if (!g) continue;
      const d = g.data;
      for (let i = 0; i < d.length; i++) d[i] *= coef;
    }
  return norm;
}
