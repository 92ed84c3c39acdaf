/** Quantization-aware training: fake quantizers, QAT conversion, quantization parameters. */
export { WeightFakeQuant, ActFakeQuant, type SteMode, type WeightFakeQuantConfig, type ActFakeQuantConfig } from './fake-quant.js';
export { LsqWeightFakeQuant, LsqActFakeQuant, type LsqConfig, type LsqActConfig } from './lsq.js';
export {
  toQat,
  isQat,
  quantizers,
  freezeActRanges,
  unfreezeActRanges,
  setFakeQuant,
  stripQat,
  type QatOptions,
  type LayerQuantOverride,
  type QuantizerInfo,
} from './qat.js';
export { chooseQParams, roundHalfEven, quantRange, type QParams, type ChooseQParamsOptions } from './qparams.js';
