/**
 * Learned activation ranges (`actRange: 'learned'`): after calibration the
 * frozen range [lo, hi] of each activation quantizer becomes trainable by
 * the distillation loss, LSQ-style (Esser et al. 2020, with a zero point):
 *
 *   s = (hi - lo) / (quantMax - quantMin), zp = quantMin - rne(lo / s)
 *   x_hat = (clamp(rne(x / s) + zp, quantMin, quantMax) - zp) * s
 *   d x_hat / d s  = rne(x / s) - x / s          (inside the range)
 *   d x_hat / d lo = 1 below it, d x_hat / d hi = 1 above it
 *   d x_hat / d x  = 1 inside, 0 outside          (clipped straight-through)
 *
 * lo = lo0 (1 + a) and hi = hi0 (1 + b) with trainable a, b (initial 0):
 * a relative parametrisation, so one learning rate suits every layer's
 * scale. The forward pass computes exactly what an ActFakeQuant frozen at
 * [lo, hi] computes (the ends rounded to float32 as its buffers hold them),
 * so the trained ranges are handed back to ActFakeQuant modules for saving.
 *
 * QDrop (Wei et al., ICLR 2022; `dropProb`): in training, each element
 * keeps its float value with probability dropProb instead of being
 * quantized (its gradient then passes straight through and does not move
 * the range). Training against a randomly partly-quantized network gives a
 * flatter solution that holds up better on faces outside the small
 * training set. The mask comes from a per-step seed (reseed), so a run is
 * deterministic and resumes bit-exactly. Eval mode never drops.
 */
import { QuantFaceError, Tensor, type FTensor } from '../tensor.js';
import { Module, Parameter, isGradEnabled, type ShapeInfo } from '../nn/module.js';
import { ActFakeQuant } from '../quant/fake-quant.js';
import { chooseQParams } from '../quant/qparams.js';
import * as K from '../nn/kernels.js';

export class LearnedActQuant extends Module {
  readonly bits: number;
  readonly a: Parameter;
  readonly b: Parameter;
  /** QDrop probability in [0, 1) (see the file comment). Default 0. */
  dropProb = 0;
  private dropSeed = 0x9e3779b9;
  private ctx: { x: FTensor; scale: Float32Array; zeroPoint: Int32Array; qmin: number; qmax: number; drop: Uint8Array | null } | undefined;
  private readonly sums = new Float64Array(3);

  constructor(bits: number, lo: number, hi: number) {
    super();
    if (!(lo <= 0 && hi >= 0 && hi > lo)) throw new QuantFaceError('E_ARG', `LearnedActQuant: need lo <= 0 <= hi and hi > lo (got [${lo}, ${hi}])`);
    this.bits = bits;
    this.registerBuffer('lo0', Tensor.from(Float32Array.of(lo)));
    this.registerBuffer('hi0', Tensor.from(Float32Array.of(hi)));
    this.a = this.registerParameter('a', new Parameter(Tensor.zeros([1])))!;
    this.b = this.registerParameter('b', new Parameter(Tensor.zeros([1])))!;
  }

  /** Restarts learning from [lo, hi] (a = b = 0). */
  reset(lo: number, hi: number): this {
    if (!(lo <= 0 && hi >= 0 && hi > lo)) throw new QuantFaceError('E_ARG', `LearnedActQuant: need lo <= 0 <= hi and hi > lo (got [${lo}, ${hi}])`);
    this.buffer('lo0').data[0] = lo;
    this.buffer('hi0').data[0] = hi;
    this.a.data.data[0] = 0;
    this.b.data.data[0] = 0;
    return this;
  }

  /** The current range, rounded to float32 as an ActFakeQuant stores it. */
  get range(): [number, number] {
    const lo0 = this.buffer('lo0').data[0]!;
    const hi0 = this.buffer('hi0').data[0]!;
    const lo = Math.fround(Math.min(0, lo0 * (1 + this.a.data.data[0]!)));
    let hi = Math.fround(Math.max(0, hi0 * (1 + this.b.data.data[0]!)));
    if (!(hi > lo)) hi = Math.fround(lo + 1e-6);
    return [lo, hi];
  }

  /** Seeds the next QDrop masks (the trainer calls it every step). */
  reseed(seed: number): void {
    this.dropSeed = seed >>> 0 || 0x9e3779b9;
  }

  inferShape(s: number[]): ShapeInfo {
    return { shape: s, macs: 0 };
  }

  forward(x: FTensor): FTensor {
    const [lo, hi] = this.range;
    const qp = chooseQParams({ min: lo, max: hi, bits: this.bits });
    const out = this.outBuffer(x.shape, x.dtype);
    let drop: Uint8Array | null = null;
    if (this.training && this.dropProb > 0 && isGradEnabled()) {
      // Fake quantization and the QDrop mask in one kernel (xorshift32 per element, see K.qdropFakeQuantize).
      drop = this.scratch('drop', x.shape, 'u8').data as Uint8Array;
      const threshold = Math.floor(this.dropProb * 4294967296);
      const st = K.qdropFakeQuantize({ x: x.data, out: out.data, drop, scale: qp.scale, zeroPoint: qp.zeroPoint, quantMin: qp.quantMin, quantMax: qp.quantMax, threshold, seed: this.dropSeed });
      this.dropSeed = st >>> 0 || 0x9e3779b9;
    } else K.fakeQuantize({ x: x.data, out: out.data, scale: qp.scale, zeroPoint: qp.zeroPoint, quantMin: qp.quantMin, quantMax: qp.quantMax });
    this.ctx = isGradEnabled() ? { x, scale: qp.scale, zeroPoint: qp.zeroPoint, qmin: qp.quantMin, qmax: qp.quantMax, drop } : undefined;
    return out;
  }

  backward(gradOut: FTensor): FTensor {
    const c = this.ctx;
    if (!c) throw new QuantFaceError('E_ARG', 'LearnedActQuant.backward called without a forward pass with gradients enabled');
    const gradIn = this.gradBuffer(gradOut.shape, gradOut.dtype);
    // Clipped straight-through gradient and the range-gradient sums in one kernel (float64 sums in element order).
    const sums = this.sums;
    K.learnedRangeBackward({
      x: c.x.data,
      gradOut: gradOut.data,
      gradIn: gradIn.data,
      ...(c.drop ? { drop: c.drop } : {}),
      scale: c.scale,
      zeroPoint: c.zeroPoint,
      quantMin: c.qmin,
      quantMax: c.qmax,
      sums,
    });
    const gLo = sums[0]!;
    const gHi = sums[1]!;
    const gS = sums[2]!;
    const Q = c.qmax - c.qmin;
    const dLo = gLo - gS / Q;
    const dHi = gHi + gS / Q;
    const lo0 = this.buffer('lo0').data[0]!;
    const hi0 = this.buffer('hi0').data[0]!;
    for (const [p, v] of [[this.a, dLo * lo0], [this.b, dHi * hi0]] as const) {
      if (!p.requiresGrad) continue;
      const slot = p.gradSlot();
      slot.grad.data[0] = (slot.accumulate ? slot.grad.data[0]! : 0) + v;
    }
    return gradIn;
  }

  /** A frozen ActFakeQuant at the learned range (what the saved model carries). */
  toActFakeQuant(): ActFakeQuant {
    const [lo, hi] = this.range;
    return new ActFakeQuant({ bits: this.bits, calibrationSteps: 0, inplace: true }).setRange(lo, hi);
  }

  describe(): string {
    const [lo, hi] = this.range;
    return `LearnedActQuant(bits=${this.bits}, range=[${lo.toPrecision(4)}, ${hi.toPrecision(4)}])`;
  }
}

/** The modules holding an `outQuant` child, by the dotted name of that child. */
export function outQuantOwners(model: Module): Map<string, Module> {
  const r = new Map<string, Module>();
  for (const [name, m] of model.namedModules()) {
    const q = m.getChild('outQuant');
    if (q instanceof ActFakeQuant || q instanceof LearnedActQuant) r.set(name ? `${name}.outQuant` : 'outQuant', m);
  }
  return r;
}
