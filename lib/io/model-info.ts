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

/** Box crop presets (lib/data/align.ts CROP_PRESETS; repeated here because lib/io sits below lib/data). */
export const ALIGNMENT_BOX_PRESETS = ['lfw-funneled', 'ffhq', 'none'] as const;

/**
 * How the face must be cut out of a photo for this model: a box crop preset
 * (lib/data/align.ts) or a 5-point template (eyes, nose tip, mouth corners
 * as [x, y] pixel coordinates in the model's input crop; a similarity
 * transform maps an image's landmarks onto it).
 */
export type InputAlignment =
  | { kind: 'box'; preset: (typeof ALIGNMENT_BOX_PRESETS)[number] }
  | { kind: 'template'; points: Array<[number, number]>; name?: string };

/** The ArcFace / insightface 5-point template of 112x112 crops (the same values as lib/data/align.ts). */
export const ARCFACE_TEMPLATE_POINTS: Array<[number, number]> = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];

/** Where a model file came from. */
export type ModelFormat = 'tfjs-graph' | 'onnx' | 'faceapi-resnet' | 'engine' | 'qfm' | 'tflite';
export const MODEL_FORMATS: readonly ModelFormat[] = ['tfjs-graph', 'onnx', 'faceapi-resnet', 'engine', 'qfm', 'tflite'];

/**
 * The one description of a model: its input (size, colour order, scaling,
 * alignment), its output and where it came from. Imported and saved models
 * carry it (`ImportedModel.info`, the .qfm file, ONNX metadata_props
 * `quantface.info`), and evaluation embedders report it as their `meta`.
 */
export interface ModelInfo {
  /** Short name (e.g. 'mobileface'). */
  name: string;
  /** Where the model came from. */
  format: ModelFormat;
  /** Input [H, W, C] (NHWC, batch excluded). */
  inputShape: [number, number, number];
  /**
   * Tensor layout of the input when the model runs outside the engine
   * (TF.js): 'NCHW' feeds [N, C, H, W]. Default 'NHWC'. Engine models (all
   * imports) always take NHWC.
   */
  layout?: 'NHWC' | 'NCHW';
  /** The face alignment the model was trained with, when known. */
  alignment?: InputAlignment;
  /** Embedding length. */
  outputDim: number;
  /** Whether the model's own output is L2-normalised. */
  normalizedOutput: boolean;
  preprocessing: Preprocessing;
  /**
   * Models with several outputs packed into one (ONNX import with
   * outputNames): each output's name, per-sample shape (source layout) and
   * offset in the packed output vector.
   */
  outputs?: Array<{ name: string; shape: number[]; offset: number }>;
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
  if (!MODEL_FORMATS.includes(m.format as ModelFormat)) bad('format', MODEL_FORMATS.map((f) => `'${f}'`).join(', '));
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
  if (m.layout !== undefined && m.layout !== 'NHWC' && m.layout !== 'NCHW') bad('layout', "'NHWC' or 'NCHW'");
  if (m.alignment !== undefined) validateAlignment(m.alignment, where);
  return m as unknown as ModelInfo;
}

/** Checks an alignment description; throws E_FORMAT naming the problem. */
export function validateAlignment(v: unknown, where: string): InputAlignment {
  const bad = (want: string): never => {
    throw new QuantFaceError('E_FORMAT', `${where}: alignment must be ${want} (got ${JSON.stringify(v)})`);
  };
  if (!v || typeof v !== 'object' || Array.isArray(v)) bad("{kind: 'box', preset} or {kind: 'template', points}");
  const a = v as Record<string, unknown>;
  if (a.kind === 'box') {
    if (!ALIGNMENT_BOX_PRESETS.includes(a.preset as (typeof ALIGNMENT_BOX_PRESETS)[number])) bad(`a box preset: ${ALIGNMENT_BOX_PRESETS.join(', ')}`);
  } else if (a.kind === 'template') {
    const p = a.points;
    if (!Array.isArray(p) || p.length !== 5 || !p.every((q) => Array.isArray(q) && q.length === 2 && q.every((x) => typeof x === 'number' && Number.isFinite(x))))
      bad('a template of 5 [x, y] points');
    if (a.name !== undefined && typeof a.name !== 'string') bad('a template with a string name');
  } else bad("of kind 'box' or 'template'");
  return v as InputAlignment;
}

/** One line describing a model's input (reports, `quantface info`). */
export function describeInput(info: Pick<ModelInfo, 'inputShape' | 'preprocessing' | 'alignment' | 'layout'>): string {
  const [h, w, c] = info.inputShape;
  const nz = info.preprocessing.normalize;
  const scale = nz === 'raw' ? 'raw 0..255' : `(x - ${JSON.stringify(nz.mean)}) / ${JSON.stringify(nz.std)}`;
  const al = info.alignment;
  const align = !al ? 'alignment unknown' : al.kind === 'box' ? `box crop ${al.preset}` : `5-point template${al.name ? ` ${al.name}` : ''}`;
  return `${h}x${w}x${c} ${info.preprocessing.colorOrder}${info.layout === 'NCHW' ? ' NCHW' : ''}, ${scale}, ${align}`;
}

function triple(t: Triple): [number, number, number] {
  return typeof t === 'number' ? [t, t, t] : t;
}

/**
 * Applies a model's preprocessing to n raw RGB crops (NHWC, values 0..255,
 * already at the model's input size): returns the model's input tensor,
 * [n, H, W, 3], or [n, 3, H, W] when `layout` (default info.layout) is
 * 'NCHW' (TF.js models that take NCHW). The one preprocessing function of
 * the package (lib/eval's and lib/distill's embedders call it).
 */
export function preprocess(info: Pick<ModelInfo, 'name' | 'inputShape' | 'preprocessing' | 'layout'>, rgb: ArrayLike<number>, n: number, layout = info.layout ?? 'NHWC'): Tensor<'f32'> {
  const [h, w, c] = info.inputShape;
  const per = h * w * c;
  if (c !== 3 && c !== 1) throw new QuantFaceError('E_SHAPE', `preprocess: model ${info.name} takes ${c} channels; only RGB (3) and grey (1) input are supported`);
  if (!Number.isInteger(n) || n < 1 || rgb.length !== n * per)
    throw new QuantFaceError('E_SHAPE', `preprocess: ${n} crops of ${h}x${w}x${c} need ${n * per} values, got ${rgb.length}`);
  if (c === 1) {
    // Grey input (one byte per pixel): the first channel's normalisation; NHWC and NCHW are the same layout.
    const nz = info.preprocessing.normalize;
    const m0 = nz === 'raw' ? 0 : triple(nz.mean)[0];
    const s0 = nz === 'raw' ? 1 : triple(nz.std)[0];
    const out = Tensor.zeros(layout === 'NCHW' ? [n, 1, h, w] : [n, h, w, 1]);
    for (let i = 0; i < n * per; i++) out.data[i] = (rgb[i]! - m0) / s0;
    return out;
  }
  const out = Tensor.zeros(layout === 'NCHW' ? [n, c, h, w] : [n, h, w, c]);
  const o = out.data;
  if (layout === 'NCHW') {
    const hw = h * w;
    const tmp = preprocess(info, rgb, n, 'NHWC').data;
    for (let b = 0; b < n; b++) for (let p = 0; p < hw; p++) for (let k = 0; k < 3; k++) o[b * per + k * hw + p] = tmp[b * per + p * 3 + k]!;
    return out;
  }
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
  /** What the source file itself records about the model (ONNX metadata_props quantface.info), when it does. */
  recorded?: ModelInfo;

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
