/**
 * The quantizers the runtime understands, behind one interface: QuantFace's
 * min/max quantizers (WeightFakeQuant, ActFakeQuant) and the learned-scale
 * ones (LsqWeightFakeQuant, LsqActFakeQuant). Each gives the integer grid
 * its forward uses: q = clamp(rne(x / scale) + zeroPoint, quantMin, quantMax)
 * (x / scale in float32), x_hat = (q - zeroPoint) * scale.
 */
import { Module } from '../nn/module.js';
import type { FTensor } from '../tensor.js';
import { WeightFakeQuant, ActFakeQuant } from '../quant/fake-quant.js';
import { LsqWeightFakeQuant, LsqActFakeQuant } from '../quant/lsq.js';

export interface ActGrid {
  scale: number;
  zeroPoint: number;
  quantMin: number;
  quantMax: number;
  bits: number;
}

export interface WeightGrid {
  /** Per output channel. */
  scale: Float32Array;
  zeroPoint: Int32Array;
  quantMin: number;
  quantMax: number;
  bits: number;
}

/** True for an enabled activation quantizer the runtime can run. */
export function isActQuantizer(m: Module | undefined): boolean {
  return (m instanceof ActFakeQuant || m instanceof LsqActFakeQuant) && m.fakeQuantEnabled;
}

/** The per-tensor grid of an enabled activation quantizer (its current, frozen state). */
export function actGrid(m: Module): ActGrid {
  if (m instanceof ActFakeQuant) {
    const p = m.qparams();
    return { scale: p.scale[0]!, zeroPoint: p.zeroPoint[0]!, quantMin: p.quantMin, quantMax: p.quantMax, bits: m.bits };
  }
  if (m instanceof LsqActFakeQuant) {
    const b = m.bits;
    const [quantMin, quantMax] = m.symmetric ? [-(2 ** (b - 1) - 1), 2 ** (b - 1) - 1] : [0, 2 ** b - 1];
    let s = Math.fround(m.scale.data.data[0]!);
    if (!(s > 0)) s = Math.fround(1e-8);
    const zp = m._buffers.get('zero_point')!.data[0]!;
    return { scale: s, zeroPoint: zp | 0, quantMin, quantMax, bits: b };
  }
  throw new TypeError(`not an activation quantizer: ${m.constructor.name}`);
}

/** True when the layer's weight transform is an enabled quantizer. */
export function hasWeightQuantizer(t: Module | undefined): boolean {
  return (t instanceof WeightFakeQuant || t instanceof LsqWeightFakeQuant) && t.fakeQuantEnabled;
}

/** The per-output-channel grid a weight quantizer uses for weight w (channels x inner). */
export function weightGrid(t: Module, w: FTensor, channels: number, inner: number): WeightGrid {
  if (t instanceof WeightFakeQuant) {
    const qp = t.qparams(w, channels, inner);
    return {
      scale: qp.scale.length === 1 ? new Float32Array(channels).fill(qp.scale[0]!) : Float32Array.from(qp.scale),
      zeroPoint: qp.zeroPoint.length === 1 ? new Int32Array(channels).fill(qp.zeroPoint[0]!) : Int32Array.from(qp.zeroPoint),
      quantMin: qp.quantMin,
      quantMax: qp.quantMax,
      bits: t.bits,
    };
  }
  if (t instanceof LsqWeightFakeQuant) {
    // The transform initialises the scale on first use; run it once so scale and zero point exist.
    t.transform(w, channels, inner);
    const s = t.scale!.data.data;
    const zp = t._buffers.get('zero_point')!.data;
    const b = t.bits;
    const [quantMin, quantMax] = t.symmetric ? [-(2 ** (b - 1) - 1), 2 ** (b - 1) - 1] : [0, 2 ** b - 1];
    const scale = new Float32Array(channels);
    const zeroPoint = new Int32Array(channels);
    for (let c = 0; c < channels; c++) {
      scale[c] = s[c]! > 0 ? s[c]! : 1e-8;
      zeroPoint[c] = zp[c]! | 0;
    }
    return { scale, zeroPoint, quantMin, quantMax, bits: b };
  }
  throw new TypeError(`not a weight quantizer: ${t.constructor.name}`);
}
