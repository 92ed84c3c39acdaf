/**
 * Gradient checking: a module's analytic backward against central finite
 * differences. Run it on float64 modules and inputs (`module.to('f64')`),
 * which go through the engine's JavaScript reference kernels, so the finite
 * differences are accurate to ~1e-9 and the comparison tests the backward
 * formulas themselves.
 *
 * The scalar checked is L = sum(G * forward(inputs)) for a fixed random G.
 */
import { Rng, Tensor, QuantFaceError, type FTensor } from '../tensor.js';
import { Module } from './module.js';

export interface GradCheckOptions {
  /** Finite-difference step. Default 1e-6. */
  eps?: number;
  /** Coordinates sampled per tensor (inputs and each trainable parameter). Default 16. */
  samples?: number;
  /** Seed for G and the sampled coordinates. Default 1. */
  seed?: number;
  /** Called before every forward (e.g. to reseed dropout). */
  beforeForward?: () => void;
  /** Also check the gradients of these parameters (default: every parameter with requiresGrad). */
  params?: boolean;
}

export interface GradCheckEntry {
  tensor: string;
  index: number;
  analytic: number;
  numeric: number;
  relError: number;
}

export interface GradCheckResult {
  /** Largest relative error over all sampled coordinates. */
  maxRelError: number;
  worst: GradCheckEntry | null;
  checked: number;
  /** Frozen parameters that received a gradient (should be empty). */
  frozenWithGrad: string[];
  /** Every sampled coordinate. */
  entries: GradCheckEntry[];
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/**
 * Relative error |a - n| / max(|a|, |n|, floor), where floor is the larger
 * of 1e-3 x the largest analytic gradient of the same tensor (near-zero
 * entries are judged on the tensor's scale) and 1e4 x the finite
 * differences' round-off, 2^-52 x sum|G y| / eps (a tensor whose true
 * gradient is exactly zero, e.g. a BatchNorm bias feeding another
 * train-mode BatchNorm, is then judged on the noise of the differences).
 */
export function gradCheck(module: Module, inputs: FTensor[], opts: GradCheckOptions = {}): GradCheckResult {
  const eps = opts.eps ?? 1e-6;
  const samples = opts.samples ?? 16;
  const rng = new Rng(opts.seed ?? 1);
  const before = opts.beforeForward ?? ((): void => {});
  before();
  const y0 = module.forward(...inputs);
  const G = Tensor.randn(y0.shape, rng, 1, 0, y0.dtype) as FTensor;
  let magnitude = 0;
  for (let i = 0; i < y0.numel; i++) magnitude += Math.abs(y0.data[i]! * G.data[i]!);
  const noiseFloor = (1e4 * 2 ** -52 * magnitude) / eps;
  const loss = (): number => {
    before();
    const y = module.forward(...inputs);
    let s = 0;
    for (let i = 0; i < y.numel; i++) s += y.data[i]! * G.data[i]!;
    return s;
  };
  module.zeroGrad();
  before();
  module.forward(...inputs);
  const r = module.backward(G);
  const gin = (Array.isArray(r) ? r : [r]).map((t) => t.clone());
  if (gin.length !== inputs.length) throw new QuantFaceError('E_INTERNAL', `gradCheck: ${gin.length} input gradients for ${inputs.length} inputs`);
  const targets: { name: string; data: Float32Array | Float64Array; grad: ArrayLike<number> }[] = [];
  inputs.forEach((x, i) => targets.push({ name: `input${i}`, data: x.data, grad: gin[i]!.data }));
  const frozenWithGrad: string[] = [];
  if (opts.params ?? true)
    for (const [n, p] of module.namedParameters()) {
      if (!p.requiresGrad) {
        if (p.grad) frozenWithGrad.push(n);
        continue;
      }
      const g = p.grad;
      targets.push({ name: n, data: p.data.data, grad: g ? g.data.slice() : new Float64Array(p.numel) });
    }
  let worst: GradCheckEntry | null = null;
  let checked = 0;
  const entries: GradCheckEntry[] = [];
  for (const t of targets) {
    const floor = Math.max(1e-3 * maxAbs(t.grad), noiseFloor, 1e-300);
    const idx = new Set<number>([0, t.data.length - 1]);
    while (idx.size < Math.min(samples, t.data.length)) idx.add(rng.int(t.data.length));
    for (const k of idx) {
      const orig = t.data[k]!;
      t.data[k] = orig + eps;
      const lp = loss();
      t.data[k] = orig - eps;
      const lm = loss();
      t.data[k] = orig;
      const numeric = (lp - lm) / (2 * eps);
      const analytic = t.grad[k]!;
      const relError = Math.abs(analytic - numeric) / Math.max(Math.abs(analytic), Math.abs(numeric), floor);
      checked++;
      const e = { tensor: t.name, index: k, analytic, numeric, relError };
      entries.push(e);
      if (!worst || relError > worst.relError || Number.isNaN(relError)) worst = e;
    }
  }
  return { maxRelError: worst ? worst.relError : 0, worst, checked, frozenWithGrad, entries };
}
