/**
 * What an imported (or saved) model records about itself: its input size,
 * the preprocessing the library applies before the first layer (colour
 * order, scaling), its output and where it came from. `ImportedModel` is
 * an engine Graph carrying that record; it refuses inputs of the wrong
 * shape with E_SHAPE instead of computing garbage.
 */
import { Tensor, QuantFaceError, shapeStr, type FTensor } from '../tensor.js';
import { Graph } from '../nn/containers.js';

/** One value for all three channels, or one per channel (in the model's channel order). */
export type Triple = number | [number, number, number];

/** How raw RGB pixels (0..255, NHWC) become the model's input. */
export interface Preprocessing {
  /** Channel order the model expects. */
  colorOrder: 'RGB' | 'BGR';
  /** 'raw': pixel values 0..255 as they are (the graph scales itself); otherwise (x - mean) / std after the colour swap. */
  normalize: 'raw' | { mean: Triple; std: Triple };
}

export interface ModelInfo {
  /** Short name (e.g. 'mobileface'). */
  name: string;
  /** Where the model came from. */
  format: 'tfjs-graph' | 'onnx' | 'faceapi-resnet' | 'engine';
  /** Input [H, W, C] (NHWC, batch excluded). */
  inputShape: [number, number, number];
  /** Embedding length. */
  outputDim: number;
  /** Whether the model's own output is L2-normalised. */
  normalizedOutput: boolean;
  preprocessing: Preprocessing;
  /** Input / output tensor names in the source model. */
  inputName?: string;
  outputName?: string;
  /** SHA-256 (hex) of the source files, in the order read: identifies the teacher. */
  sha256?: string;
  /** Free text: origin, licence, notes. */
  source?: string;
}

/** Checks a ModelInfo-like object (from a file); throws E_FORMAT naming the bad field. */
export function validateModelInfo(v: unknown, where: string): ModelInfo {
  const bad = (field: string, want: string): never => {
    throw new QuantFaceError('E_FORMAT', `${where}: model info field '${field}' must be ${want}`);
  };
  if (!v || typeof v !== 'object' || Array.isArray(v)) bad('(root)', 'an object');
  const m = v as Record<string, unknown>;
  if (typeof m.name !== 'string') bad('name', 'a string');
  if (!['tfjs-graph', 'onnx', 'faceapi-resnet', 'engine'].includes(m.format as string)) bad('format', "'tfjs-graph', 'onnx', 'faceapi-resnet' or 'engine'");
  const s = m.inputShape;
  if (!Array.isArray(s) || s.length !== 3 || !s.every((d) => Number.isInteger(d) && d > 0 && d <= 1 << 16)) bad('inputShape', '[H, W, C] positive integers');
  if (!Number.isInteger(m.outputDim) || (m.outputDim as number) < 1) bad('outputDim', 'a positive integer');
  if (typeof m.normalizedOutput !== 'boolean') bad('normalizedOutput', 'a boolean');
  const p = m.preprocessing as Record<string, unknown> | undefined;
  if (!p || typeof p !== 'object') bad('preprocessing', 'an object');
  if (p!.colorOrder !== 'RGB' && p!.colorOrder !== 'BGR') bad('preprocessing.colorOrder', "'RGB' or 'BGR'");
  const okTriple = (t: unknown): boolean =>
    (typeof t === 'number' && Number.isFinite(t)) || (Array.isArray(t) && t.length === 3 && t.every((x) => typeof x === 'number' && Number.isFinite(x)));
  const nz = p!.normalize as Record<string, unknown> | string;
  if (nz !== 'raw') {
    if (!nz || typeof nz !== 'object' || !okTriple(nz.mean) || !okTriple(nz.std)) bad('preprocessing.normalize', "'raw' or {mean, std}");
    const std = (nz as { std: Triple }).std;
    if ((typeof std === 'number' ? [std] : std).some((x) => x === 0)) bad('preprocessing.normalize.std', 'non-zero');
  }
  for (const k of ['inputName', 'outputName', 'sha256', 'source'] as const) if (m[k] !== undefined && typeof m[k] !== 'string') bad(k, 'a string');
  return m as unknown as ModelInfo;
}

function triple(t: Triple): [number, number, number] {
  return typeof t === 'number' ? [t, t, t] : t;
}

/**
 * Applies a model's preprocessing to n raw RGB crops (NHWC, values 0..255,
 * already at the model's input size): returns the model's input tensor.
 */
export function preprocess(info: ModelInfo, rgb: ArrayLike<number>, n: number): Tensor<'f32'> {
  const [h, w, c] = info.inputShape;
  const per = h * w * c;
  if (c !== 3) throw new QuantFaceError('E_SHAPE', `preprocess: model ${info.name} takes ${c} channels; only 3-channel RGB input is supported`);
  if (!Number.isInteger(n) || n < 1 || rgb.length !== n * per)
    throw new QuantFaceError('E_SHAPE', `preprocess: ${n} crops of ${h}x${w}x3 need ${n * per} values, got ${rgb.length}`);
  const out = Tensor.zeros([n, h, w, c]);
  const o = out.data;
  const bgr = info.preprocessing.colorOrder === 'BGR';
  const nz = info.preprocessing.normalize;
  const [m0, m1, m2] = nz === 'raw' ? [0, 0, 0] : triple(nz.mean);
  const [s0, s1, s2] = nz === 'raw' ? [1, 1, 1] : triple(nz.std);
  for (let p = 0; p < n * h * w; p++) {
    const r = rgb[p * 3]!;
    const g = rgb[p * 3 + 1]!;
    const b = rgb[p * 3 + 2]!;
    const c0 = bgr ? b : r;
    const c2 = bgr ? r : b;
    o[p * 3] = nz === 'raw' ? c0 : (c0 - m0) / s0;
    o[p * 3 + 1] = nz === 'raw' ? g : (g - m1) / s1;
    o[p * 3 + 2] = nz === 'raw' ? c2 : (c2 - m2) / s2;
  }
  return out;
}

/** An engine Graph built from a model file, with its ModelInfo. */
export class ImportedModel extends Graph {
  info: ModelInfo;

  constructor(info: ModelInfo, inputName = 'input') {
    super([inputName]);
    this.info = info;
  }

  /** Throws E_SHAPE unless x is [N, H, W, C] as info.inputShape says. */
  checkInput(shape: readonly number[]): void {
    const [h, w, c] = this.info.inputShape;
    if (shape.length !== 4 || shape[1] !== h || shape[2] !== w || shape[3] !== c || !(shape[0]! >= 1))
      throw new QuantFaceError(
        'E_SHAPE',
        `model ${this.info.name} takes input [N, ${h}, ${w}, ${c}] (NHWC, preprocessed as its info.preprocessing says), got ${shapeStr(shape)}`,
      );
  }

  override forward(...xs: FTensor[]): FTensor {
    if (xs.length === 1) this.checkInput(xs[0]!.shape);
    return super.forward(...xs);
  }
}
