/**
 * Post-training quantization helpers for the runtime: make every int8
 * convolution's input quantized (addInputQuantizers), calibrate activation
 * ranges on a few images (calibrateActivations), or both in one call from a
 * float model (quantizeModel, a quick PTQ student for tests and benchmarks;
 * QuantFace's distillation is the real way to train one).
 */
import { QuantFaceError } from '../errors.js';
import type { FTensor } from '../tensor.js';
import { Module, noGrad } from '../nn/module.js';
import { Conv2d, Linear } from '../nn/layers.js';
import { Sequential, Graph } from '../nn/containers.js';
import { bufferPool } from '../nn/pool.js';
import { ActFakeQuant } from '../quant/fake-quant.js';
import { LsqActFakeQuant } from '../quant/lsq.js';
import { actGrid, hasWeightQuantizer } from './quantizers.js';
import { toQat, type QatOptions } from '../quant/qat.js';
import { preprocess, type ModelInfo, type Preprocessing } from '../io/model-info.js';
import { flattenModel, type IrGraph, type IrNode, type IrValue } from './ir.js';

function quantizedSource(g: IrGraph, v: IrValue): { quantized: boolean; producer: IrNode | null } {
  let x = v;
  for (;;) {
    const p = x.producer;
    if (!p) return { quantized: true, producer: null }; // the network input: the runtime feeds raw bytes
    if (p.kind === 'quant') return { quantized: true, producer: p };
    if (p.kind === 'alias') {
      x = p.inputs[0]!;
      continue;
    }
    // Preprocessing layers right after the input are part of the input path.
    if ((p.kind === 'bn' || p.kind === 'caffine') && isInputChain(g, p)) return { quantized: true, producer: p };
    return { quantized: false, producer: p };
  }
}

function isInputChain(g: IrGraph, n: IrNode): boolean {
  let x: IrNode | null = n;
  while (x) {
    if (x.kind !== 'bn' && x.kind !== 'caffine') return false;
    const src: IrValue = x.inputs[0]!;
    if (src === g.input) return true;
    if (src.consumers.length !== 1) return false;
    x = src.producer;
  }
  return false;
}

function resolveModule(root: Module, path: string): Module {
  let m: Module | undefined = root;
  for (const part of path.split('.')) {
    m = m?.getChild(part);
    if (!m) throw new QuantFaceError('E_INTERNAL', `addInputQuantizers: no module at ${path}`);
  }
  return m!;
}

function insertAfter(container: Module, name: string, qname: string, q: Module): void {
  if (container instanceof Graph) container.insertAfter(name, qname, q);
  else if (container instanceof Sequential) container.insertAfter(name, qname, q);
  else throw new QuantFaceError('E_UNSUPPORTED_OP', `addInputQuantizers: cannot insert a quantizer into a ${container.constructor.name}`);
}

export interface InputQuantizerOptions {
  /** Activation width of the new quantizers. Default: the width of the model's other activation quantizers, else 8. */
  bits?: number;
  /** Per-sample input shape [H, W, C] (default: model.info.inputShape, else [112, 112, 3]). */
  inputShape?: [number, number, number];
  /** Observed forwards before the new ranges freeze (default Infinity: freeze them yourself or with calibrateActivations). */
  calibrationSteps?: number;
}

/**
 * Inserts an activation quantizer (ActFakeQuant, QuantFace's asymmetric
 * per-tensor scheme) after every layer whose float output feeds a
 * convolution or linear layer with quantized weights, so that the runtime
 * can run that layer in int8 and the fake-quant forward computes exactly
 * what the runtime computes. Examples: the 1x1 convolution before a
 * depthwise one, a BatchNorm before a convolution (iResNet's bn1), a
 * linear bottleneck projection without a residual add. Modifies `model`
 * in place (new children named `<layer>_quant`); returns their paths.
 * The new ranges start empty: calibrate them (calibrateActivations) or
 * train with them.
 */
export function addInputQuantizers(model: Module, opts: InputQuantizerOptions = {}): string[] {
  const info = (model as { info?: ModelInfo }).info;
  const g = flattenModel(model, opts.inputShape ?? info?.inputShape ?? [112, 112, 3]);
  const existing = g.nodes.filter((n) => n.kind === 'quant').map((n) => actGrid(n.module).bits);
  const bits = opts.bits ?? existing[0] ?? 8;
  const producers = new Set<IrNode>();
  for (const n of g.nodes) {
    if (n.kind !== 'conv' && n.kind !== 'linear') continue;
    const m = n.module as Conv2d | Linear;
    if (!hasWeightQuantizer(m.weightQuant)) continue;
    if (m instanceof Conv2d && m.groups !== 1 && !(m.groups === m.inChannels && m.inChannels === m.outChannels)) continue;
    const src = quantizedSource(g, n.inputs[0]!);
    if (!src.quantized && src.producer) producers.add(src.producer);
  }
  const added: string[] = [];
  for (const p of producers) {
    const dot = p.path.lastIndexOf('.');
    const parent = dot < 0 ? model : resolveModule(model, p.path.slice(0, dot));
    const name = dot < 0 ? p.path : p.path.slice(dot + 1);
    let qname = `${name}_quant`;
    for (let k = 2; parent.getChild(qname); k++) qname = `${name}_quant${k}`;
    const q = new ActFakeQuant({ bits, calibrationSteps: opts.calibrationSteps ?? Infinity });
    q.training = model.training;
    insertAfter(parent, name, qname, q);
    added.push(dot < 0 ? qname : `${p.path.slice(0, dot)}.${qname}`);
  }
  return added;
}

export interface CalibrateOptions {
  /** Raw RGB crops, NHWC [n, H, W, 3], values 0..255 (Float32Array or Uint8Array). */
  images: Float32Array | Uint8Array;
  /** Images per forward. Default 16. */
  batchSize?: number;
  /** Preprocessing (default: model.info.preprocessing, else (x - 127.5) / 127.5). */
  preprocessing?: Preprocessing;
  /** Per-sample input shape (default: model.info.inputShape, else [112, 112, 3]). */
  inputShape?: [number, number, number];
  /** Freeze every activation range afterwards. Default true. */
  freeze?: boolean;
}

/**
 * Observes activation ranges (running min/max) of every activation quantizer
 * that is not frozen (and initialises learned-scale quantizers that have not
 * seen data yet), on the given images, with BatchNorm and dropout in eval
 * mode (post-training calibration). Returns the number of quantizers that
 * observed.
 */
export function calibrateActivations(model: Module, o: CalibrateOptions): number {
  const info = (model as { info?: ModelInfo }).info;
  const shape = o.inputShape ?? info?.inputShape ?? [112, 112, 3];
  const per = shape[0] * shape[1] * shape[2];
  if (o.images.length === 0 || o.images.length % per) throw new QuantFaceError('E_SHAPE', `calibrateActivations: images must hold a whole number of ${shape.join('x')} crops`);
  const n = o.images.length / per;
  const bs = o.batchSize ?? 16;
  const pre: ModelInfo = info ?? { name: 'model', format: 'engine', inputShape: shape, outputDim: 1, normalizedOutput: false, preprocessing: o.preprocessing ?? { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } } };
  const pinfo: ModelInfo = o.preprocessing ? { ...pre, preprocessing: o.preprocessing } : pre;
  const modes = new Map<Module, boolean>();
  for (const m of model.modules()) modes.set(m, m.training);
  model.eval();
  const observers = [...model.modules()].filter((m): m is ActFakeQuant => m instanceof ActFakeQuant && m.observerEnabled);
  // Learned-scale quantizers initialise their scale from the range of their first training-mode forwards.
  const lsq = [...model.modules()].filter((m): m is LsqActFakeQuant => m instanceof LsqActFakeQuant && m.initializing);
  for (const q of observers) q.training = true;
  for (const q of lsq) q.training = true;
  try {
    for (let i = 0; i < n; i += bs) {
      const k = Math.min(bs, n - i);
      const x = preprocess(pinfo, o.images.subarray(i * per, (i + k) * per), k) as FTensor;
      noGrad(() => {
        const y = model.forward(x);
        if (y !== x) bufferPool.release(y);
      });
    }
  } finally {
    for (const [m, t] of modes) m.training = t;
  }
  if (o.freeze ?? true) for (const q of observers) q.freeze();
  return observers.length + lsq.length;
}

export interface QuantizeModelOptions extends Omit<QatOptions, 'calibrationSteps'> {
  /** Calibration crops (see CalibrateOptions.images). */
  images: Float32Array | Uint8Array;
  batchSize?: number;
  preprocessing?: Preprocessing;
  inputShape?: [number, number, number];
  /** Insert quantizers so every quantized convolution runs in int8 (addInputQuantizers). Default true. */
  int8Inputs?: boolean;
}

/**
 * A post-training-quantized copy of a float model: toQat (QuantFace's
 * quantizer placement and scheme), quantizers on every int8 convolution's
 * input, activation ranges calibrated on `images` and frozen. The float
 * model is left untouched.
 */
export function quantizeModel<M extends Module>(model: M, o: QuantizeModelOptions): M {
  const q = toQat(model, { ...o, calibrationSteps: Infinity });
  if (o.int8Inputs ?? true) addInputQuantizers(q, { bits: o.actBits ?? 8, ...(o.inputShape ? { inputShape: o.inputShape } : {}) });
  calibrateActivations(q, { images: o.images, ...(o.batchSize ? { batchSize: o.batchSize } : {}), ...(o.preprocessing ? { preprocessing: o.preprocessing } : {}), ...(o.inputShape ? { inputShape: o.inputShape } : {}) });
  q.eval();
  return q;
}

/** Runs the engine forward (eval, no gradients) on raw crops; returns a copy of the output. */
export function engineEmbed(model: Module, images: Float32Array | Uint8Array, n: number, preprocessing?: Preprocessing): Float32Array {
  const info = (model as { info?: ModelInfo }).info;
  const shape = info?.inputShape ?? [112, 112, 3];
  const pinfo: ModelInfo = info ? (preprocessing ? { ...info, preprocessing } : info) : { name: 'model', format: 'engine', inputShape: shape, outputDim: 1, normalizedOutput: false, preprocessing: preprocessing ?? { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } } };
  const x = preprocess(pinfo, images, n) as FTensor;
  const modes = new Map<Module, boolean>();
  for (const m of model.modules()) modes.set(m, m.training);
  model.eval();
  try {
    return noGrad(() => {
      const y = model.forward(x);
      const out = Float32Array.from(y.data as Float32Array);
      if (y !== x) bufferPool.release(y);
      return out;
    });
  } finally {
    for (const [m, t] of modes) m.training = t;
  }
}

