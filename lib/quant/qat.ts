/**
 * toQat: turns a float model into a quantization-aware student, with
 * quantizers where the QuantFace method places them
 * (../../../shared/method.md, "Where quantization sits"):
 *
 * - every Conv2d and Linear: per-output-channel weight fake quantization
 *   (`weightQuant`, weight bits);
 * - every PReLU: its slope fake-quantized per tensor with the activation
 *   width (`slopeQuant`), and its output quantized (`outQuant`);
 * - every ReLU and every Clamp (ReLU6 and other clipped activations of
 *   imported models): its output quantized, as for ReLU;
 * - every residual Add: its output quantized (QuantFace's reference puts
 *   the quantizer after each residual block, i.e. after its addition);
 * - BatchNorm stays float and trainable; the network input is not quantized.
 *
 * The model passed in is left untouched: toQat works on a deep copy.
 * Parameter and buffer names of the copy are those of the float model plus
 * the quantizers' own state (e.g. `layer1.0.add.outQuant.min`).
 */
import { QuantFaceError } from '../tensor.js';
import { Module } from '../nn/module.js';
import { Conv2d, Linear, PReLU, ReLU, Add, WeightTransform } from '../nn/layers.js';
import { Clamp } from '../nn/import-ops.js';
import { WeightFakeQuant, ActFakeQuant, type SteMode } from './fake-quant.js';
import { LsqWeightFakeQuant, LsqActFakeQuant } from './lsq.js';

export interface LayerQuantOverride {
  weightBits?: number;
  actBits?: number;
}

export interface QatOptions {
  /** Weight bit width, 2..8. Default 8. */
  weightBits?: number;
  /** Activation bit width (and PReLU slope width), 2..8. Default 8. */
  actBits?: number;
  /** Straight-through estimator for weights and activations. Default 'unmasked' (the reference). */
  ste?: SteMode;
  /** Symmetric signed weights (zero point 0). Default false (QuantFace: asymmetric). */
  symmetricWeights?: boolean;
  /** Symmetric signed activations. Default false. */
  symmetricActs?: boolean;
  /** Training forwards that calibrate each activation range before it freezes. Default 300. */
  calibrationSteps?: number;
  /** Fake-quantize PReLU slopes (the method does). Default true. */
  quantizeSlopes?: boolean;
  /**
   * Learned step sizes (LSQ, beyond the paper): weight scales per output
   * channel and activation scales per tensor become trainable parameters,
   * initialised from the observed ranges (the QuantFace quantizer); clipped
   * STE. PReLU slopes keep the min/max quantizer. Default false.
   */
  learnableScales?: boolean;
  /** LSQ: training forwards whose running range initialises each activation scale. Default 1. */
  lsqInitSteps?: number;
  /**
   * Per-layer widths by dotted module name (the Conv2d/Linear/PReLU/ReLU/Clamp/Add
   * module's name in model.namedModules()): return overrides, or null to keep
   * that layer in float. Unlisted layers (undefined) use the defaults.
   */
  layer?: (name: string, module: Module) => LayerQuantOverride | null | undefined;
}

function isQuantizer(m: Module): boolean {
  return m instanceof WeightFakeQuant || m instanceof ActFakeQuant || m instanceof LsqWeightFakeQuant || m instanceof LsqActFakeQuant;
}

/** True when the model already carries fake quantizers. */
export function isQat(model: Module): boolean {
  for (const m of model.modules()) if (isQuantizer(m)) return true;
  return false;
}

/** A quantization-aware deep copy of model (see the file comment for placement). */
export function toQat<M extends Module>(model: M, opts: QatOptions = {}): M {
  if (isQat(model)) throw new QuantFaceError('E_ARG', 'toQat: the model already has fake quantizers');
  const weightBits = opts.weightBits ?? 8;
  const actBits = opts.actBits ?? 8;
  const ste = opts.ste ?? 'unmasked';
  const q = model.clone();
  const targets = [...q.namedModules()].filter(([, m]) => m instanceof Conv2d || m instanceof Linear || m instanceof PReLU || m instanceof ReLU || m instanceof Clamp || m instanceof Add);
  for (const [name, m] of targets) {
    const ov = opts.layer ? opts.layer(name, m) : undefined;
    if (ov === null) continue;
    const wb = ov?.weightBits ?? weightBits;
    const ab = ov?.actBits ?? actBits;
    const act = (): Module =>
      opts.learnableScales
        ? new LsqActFakeQuant({ bits: ab, symmetric: opts.symmetricActs, initSteps: opts.lsqInitSteps })
        : new ActFakeQuant({ bits: ab, ste, calibrationSteps: opts.calibrationSteps, symmetric: opts.symmetricActs, inplace: true });
    if (m instanceof Conv2d || m instanceof Linear) {
      if (opts.learnableScales) {
        const q = new LsqWeightFakeQuant({ bits: wb, symmetric: opts.symmetricWeights });
        const cout = m instanceof Conv2d ? m.outChannels : m.outFeatures;
        q.initFrom(m.weight.data, cout, m.weight.numel / cout);
        m.setChild('weightQuant', q);
      } else m.setChild('weightQuant', new WeightFakeQuant({ bits: wb, symmetric: opts.symmetricWeights, ste }));
    } else if (m instanceof PReLU) {
      if (opts.quantizeSlopes ?? true) m.setChild('slopeQuant', new WeightFakeQuant({ bits: ab, ste }));
      m.setChild('outQuant', act());
    } else {
      m.setChild('outQuant', act());
    }
  }
  return q;
}

export interface QuantizerInfo {
  name: string;
  kind: 'weight' | 'slope' | 'activation';
  bits: number;
  /** LSQ (learned scale) quantizer. */
  learned?: boolean;
  /** Activations: the current range and whether it is still observed. */
  min?: number;
  max?: number;
  observing?: boolean;
}

/** Every fake quantizer of a model, by dotted name. */
export function quantizers(model: Module): QuantizerInfo[] {
  const out: QuantizerInfo[] = [];
  for (const [name, m] of model.namedModules()) {
    if (m instanceof WeightFakeQuant) out.push({ name, kind: name.endsWith('slopeQuant') ? 'slope' : 'weight', bits: m.bits });
    else if (m instanceof ActFakeQuant) out.push({ name, kind: 'activation', bits: m.bits, min: m.min, max: m.max, observing: m.observerEnabled });
    else if (m instanceof LsqWeightFakeQuant) out.push({ name, kind: 'weight', bits: m.bits, learned: true });
    else if (m instanceof LsqActFakeQuant) out.push({ name, kind: 'activation', bits: m.bits, learned: true, observing: m.initializing });
  }
  return out;
}

/** Freezes every activation range (the reference's freeze_model; LSQ activation scales stop learning). */
export function freezeActRanges(model: Module): void {
  for (const m of model.modules()) {
    if (m instanceof ActFakeQuant) m.freeze();
    else if (m instanceof LsqActFakeQuant) m.scale.requiresGrad = false;
  }
}

/** Resumes range observation on every activation quantizer. */
export function unfreezeActRanges(model: Module): void {
  for (const m of model.modules()) if (m instanceof ActFakeQuant) m.unfreeze();
}

/** Turns fake quantization on or off everywhere (off: the QAT model computes in float). */
export function setFakeQuant(model: Module, enabled: boolean): void {
  for (const m of model.modules())
    if (m instanceof WeightFakeQuant || m instanceof ActFakeQuant || m instanceof LsqWeightFakeQuant || m instanceof LsqActFakeQuant) m.fakeQuantEnabled = enabled;
}

/** A float copy of a QAT model: the quantizers removed, master weights kept. */
export function stripQat<M extends Module>(model: M): M {
  const f = model.clone();
  for (const m of [...f.modules()]) {
    for (const [n, c] of [...m.namedChildren()]) if (c instanceof WeightTransform || isQuantizer(c)) m.setChild(n, null);
  }
  return f;
}
