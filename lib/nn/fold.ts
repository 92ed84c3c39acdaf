/**
 * BatchNorm folding for inference (eval-mode semantics, exact up to float
 * rounding):
 * - Conv2d -> BatchNorm2d and Linear -> BatchNorm1d: the BN's per-channel
 *   affine map is folded into the producer's weight and bias
 *   (W' = W a, b' = (b - mean) a + beta, a = gamma / sqrt(var + eps)),
 *   when the producer's output feeds nothing but that BN.
 * - BatchNorm2d -> Flatten -> (Dropout | Identity)* -> Linear (iResNet's
 *   bn2 ... fc): folded forward into the Linear (exact: no padding involved).
 * A BN before a padded convolution (iResNet's block bn1) is left alone: zero
 * padding of its output is not the BN of a zero-padded input.
 * The folded BN is replaced by an Identity under the same name.
 */
import { QuantFaceError, type FloatArray } from '../tensor.js';
import { Module } from './module.js';
import { BatchNorm, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, Linear } from './layers.js';
import { Sequential, Graph } from './containers.js';

/** a = gamma / sqrt(var + eps), c = beta - mean * a (eval-mode BN is y = a x + c). */
function bnAffine(bn: BatchNorm): { a: Float64Array; c: Float64Array } {
  const C = bn.numFeatures;
  const a = new Float64Array(C);
  const c = new Float64Array(C);
  const rm = bn.runningMean.data;
  const rv = bn.runningVar.data;
  const g = bn.weight?.data.data;
  const b = bn.bias?.data.data;
  for (let i = 0; i < C; i++) {
    a[i] = (g ? g[i]! : 1) / Math.sqrt(rv[i]! + bn.eps);
    c[i] = (b ? b[i]! : 0) - rm[i]! * a[i]!;
  }
  return { a, c };
}

/** Folds bn (after producer) into producer's weight and bias. */
function foldInto(producer: Conv2d | Linear, bn: BatchNorm): void {
  const { a, c } = bnAffine(bn);
  const w = producer.weight.data.data;
  const cout = producer instanceof Conv2d ? producer.outChannels : producer.outFeatures;
  if (bn.numFeatures !== cout) throw new QuantFaceError('E_SHAPE', `foldBatchNorm: ${bn.numFeatures}-channel BN after a ${cout}-channel layer`);
  const per = w.length / cout;
  for (let o = 0; o < cout; o++) for (let k = 0; k < per; k++) w[o * per + k] *= a[o]!;
  const bias = producer.ensureBias().data.data;
  for (let o = 0; o < cout; o++) bias[o] = bias[o]! * a[o]! + c[o]!;
}

/** Folds bn (before a flatten and linear) into the linear: W' = W diag(a), b' = b + W c (column j is channel j % C). */
function foldForward(bn: BatchNorm, lin: Linear): void {
  const { a, c } = bnAffine(bn);
  const C = bn.numFeatures;
  const w: FloatArray = lin.weight.data.data;
  const nin = lin.inFeatures;
  if (nin % C !== 0) throw new QuantFaceError('E_SHAPE', `foldBatchNorm: Linear input ${nin} is not a multiple of ${C} channels`);
  const bias = lin.ensureBias().data.data;
  for (let o = 0; o < lin.outFeatures; o++) {
    let extra = 0;
    for (let j = 0; j < nin; j++) {
      const ch = j % C;
      extra += w[o * nin + j]! * c[ch]!;
      w[o * nin + j] *= a[ch]!;
    }
    bias[o] = bias[o]! + extra;
  }
}

function plainLayer(m: Module | undefined): m is Conv2d | Linear {
  return (m instanceof Conv2d || m instanceof Linear) && !m.getChild('weightQuant');
}

function foldSequential(s: Sequential): number {
  const names = [...s._children.keys()];
  let n = 0;
  for (let i = 0; i + 1 < names.length; i++) {
    const p = s.getChild(names[i]!);
    const q = s.getChild(names[i + 1]!);
    if (((p instanceof Conv2d && q instanceof BatchNorm2d) || (p instanceof Linear && q instanceof BatchNorm1d)) && plainLayer(p)) {
      foldInto(p, q);
      s.setChild(names[i + 1]!, new Identity());
      n++;
      continue;
    }
    if (p instanceof BatchNorm2d && q instanceof Flatten) {
      let j = i + 2;
      while (j < names.length && (s.getChild(names[j]!) instanceof Identity || s.getChild(names[j]!) instanceof Dropout)) j++;
      const lin = s.getChild(names[j] ?? '');
      if (plainLayer(lin) && lin instanceof Linear) {
        foldForward(p, lin);
        s.setChild(names[i]!, new Identity());
        n++;
      }
    }
  }
  return n;
}

function foldGraph(g: Graph): number {
  const nodes = g.nodeList;
  let n = 0;
  for (const nd of nodes) {
    const bn = g.getChild(nd.name);
    if (!(bn instanceof BatchNorm) || nd.inputs.length !== 1) continue;
    const src = nd.inputs[0]!;
    const prod = g.getChild(src);
    const consumers = nodes.filter((x) => x.inputs.includes(src)).length + (g.outputNode === src ? 1 : 0);
    if (consumers !== 1 || !plainLayer(prod)) continue;
    if ((prod instanceof Conv2d && bn instanceof BatchNorm2d) || (prod instanceof Linear && bn instanceof BatchNorm1d)) {
      foldInto(prod, bn);
      g.setChild(nd.name, new Identity());
      n++;
    }
  }
  return n;
}

/**
 * An eval-mode copy of model with BatchNorms folded into adjacent
 * convolution / linear layers where exact (see the file comment). The
 * original is untouched. Refuses QAT models (quantizers would see other
 * weights).
 */
export function foldBatchNorm<M extends Module>(model: M): { model: M; folded: number } {
  for (const m of model.modules())
    if (m.getChild('weightQuant') || m.getChild('outQuant'))
      throw new QuantFaceError('E_ARG', 'foldBatchNorm: the model has fake quantizers; fold the float model (stripQat) instead');
  const f = model.clone().eval();
  let folded = 0;
  for (const m of [...f.modules()]) {
    if (m instanceof Sequential) folded += foldSequential(m);
    else if (m instanceof Graph) folded += foldGraph(m);
  }
  return { model: f, folded };
}
