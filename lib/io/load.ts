/**
 * One loader for every model file: the format is detected by content
 * (./detect.ts), the model imported into the engine, and its input
 * description (colour order, mean/std, alignment) resolved from, in order
 * of precedence:
 *
 * 1. the file itself: a .qfm's info, ONNX metadata_props `quantface.info`;
 * 2. a sidecar JSON beside it (`model.quantface.json` for `model.onnx` /
 *    `model.json` / `model.qfm`), or the quantface model metadata file that
 *    was passed instead of the model;
 * 3. the registry of known public models by SHA-256 (./known-models.ts);
 * 4. options (CLI flags `--input-mean`, `--input-std`, `--bgr`, `--template`);
 * 5. the importer's defaults (reported as `assumed`).
 *
 * An option that contradicts a higher level is refused (E_ARG) rather than
 * silently ignored: edit or write the sidecar to override a file's record.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { QuantFaceError, ioError } from '../errors.js';
import type { Module } from '../nn/module.js';
import { detectModelFormat, type DetectedModelFile, type ModelFileFormat } from './detect.js';
import { knownModel, type KnownModel } from './known-models.js';
import {
  ALIGNMENT_BOX_PRESETS,
  ARCFACE_TEMPLATE_POINTS,
  validateAlignment,
  type InputAlignment,
  type ModelInfo,
  type Preprocessing,
  type Triple,
} from './model-info.js';

/** Input description given by the caller (CLI flags); fills what the file and the registry leave unknown. */
export interface InputOverrides {
  colorOrder?: 'RGB' | 'BGR';
  /** Per-channel (model channel order) or scalar mean; with std: (x - mean) / std. */
  mean?: Triple;
  std?: Triple;
  alignment?: InputAlignment;
}

/** Where a part of the input description came from. */
export type InfoSource = 'file' | 'sidecar' | 'registry' | 'options' | 'default';

export interface ModelFileOptions {
  input?: InputOverrides;
}

/** A partial description at one precedence level. */
interface Level {
  source: InfoSource;
  where: string;
  name?: string;
  colorOrder?: 'RGB' | 'BGR';
  normalize?: Preprocessing['normalize'];
  alignment?: InputAlignment;
  layout?: 'NHWC' | 'NCHW';
  inputName?: string;
  outputName?: string;
  inputSize?: number;
}

export interface ResolvedDescription {
  /** The resolved record (for engine imports: the imported model's info with the resolved input). */
  info: ModelInfo;
  /** Where the preprocessing (colour order + scaling) and the alignment came from. */
  from: { colorOrder: InfoSource; normalize: InfoSource; alignment: InfoSource | 'unknown' };
  /** True when the preprocessing is the importer's default (nothing recorded it). */
  assumed: boolean;
  known?: KnownModel;
}

export interface LoadedModelFile extends ResolvedDescription {
  /** Detected format of the model file (after following a metadata file). */
  format: Exclude<ModelFileFormat, 'quantface-meta'>;
  /** The model file (absolute). */
  path: string;
  /** The engine model (its `info` set to the resolved description where it carries one). */
  model: Module;
  /** The decoded .qfm (packed weights, provenance) for format 'qfm'. */
  qfm?: import('./qfm.js').LoadedQfm;
  /** SHA-256 of the model file (the key of the registry). */
  fileSha256?: string;
}

/** Sidecar path of a model file: `x.json` / `x.onnx` / `x.qfm` -> `x.quantface.json`. */
export function sidecarPath(modelPath: string): string {
  const ext = extname(modelPath);
  return (ext ? modelPath.slice(0, -ext.length) : modelPath) + '.quantface.json';
}

const tripleOk = (t: unknown): boolean =>
  (typeof t === 'number' && Number.isFinite(t)) || (Array.isArray(t) && t.length === 3 && t.every((x) => typeof x === 'number' && Number.isFinite(x)));

/**
 * Reads a description object: the unified form (ModelInfo fields:
 * `preprocessing: {colorOrder, normalize}`, `alignment`, `layout`, ...) or
 * the older flat form of lib/eval's metadata (`colorOrder`, `normalize`,
 * `inputSize`, `crop`). Throws E_FORMAT naming the bad field.
 */
export function parseDescription(v: unknown, where: string, source: InfoSource): Level {
  const bad = (field: string, want: string, got?: unknown): never => {
    throw new QuantFaceError('E_FORMAT', `${where}: model description field '${field}' must be ${want}${got === undefined ? '' : ` (got ${JSON.stringify(got)})`}`);
  };
  if (!v || typeof v !== 'object' || Array.isArray(v)) bad('(root)', 'an object');
  const o = v as Record<string, unknown>;
  const l: Level = { source, where };
  const pre = (o.preprocessing ?? {}) as Record<string, unknown>;
  if (o.preprocessing !== undefined && (typeof o.preprocessing !== 'object' || o.preprocessing === null)) bad('preprocessing', 'an object');
  const colorOrder = pre.colorOrder ?? o.colorOrder;
  if (colorOrder !== undefined) {
    if (colorOrder !== 'RGB' && colorOrder !== 'BGR') bad('colorOrder', "'RGB' or 'BGR'", colorOrder);
    l.colorOrder = colorOrder as 'RGB' | 'BGR';
  }
  const nz = pre.normalize ?? o.normalize;
  if (nz !== undefined) {
    if (nz !== 'raw') {
      const n = nz as Record<string, unknown>;
      if (!n || typeof n !== 'object' || !tripleOk(n.mean) || !tripleOk(n.std)) bad('normalize', "'raw' or {mean, std} (numbers or 3 numbers)", nz);
      const std = n.std as Triple;
      if ((typeof std === 'number' ? [std] : std).some((x) => x === 0)) bad('normalize', 'a std without zeros', nz);
    }
    l.normalize = nz as Preprocessing['normalize'];
  }
  if (o.alignment !== undefined) l.alignment = validateAlignment(o.alignment, where);
  else if (o.crop !== undefined) {
    if (!ALIGNMENT_BOX_PRESETS.includes(o.crop as (typeof ALIGNMENT_BOX_PRESETS)[number])) bad('crop', ALIGNMENT_BOX_PRESETS.join(' | '), o.crop);
    l.alignment = { kind: 'box', preset: o.crop as (typeof ALIGNMENT_BOX_PRESETS)[number] };
  }
  if (o.layout !== undefined) {
    if (o.layout !== 'NHWC' && o.layout !== 'NCHW') bad('layout', "'NHWC' or 'NCHW'", o.layout);
    l.layout = o.layout as 'NHWC' | 'NCHW';
  }
  for (const k of ['name', 'inputName', 'outputName'] as const) {
    if (o[k] === undefined) continue;
    if (typeof o[k] !== 'string' || !o[k]) bad(k, 'a non-empty string', o[k]);
    l[k] = o[k] as string;
  }
  const size = o.inputSize ?? (Array.isArray(o.inputShape) ? o.inputShape[0] : undefined);
  if (size !== undefined) {
    if (!Number.isInteger(size) || (size as number) < 1 || (size as number) > 4096) bad('inputSize', 'a positive integer', size);
    l.inputSize = size as number;
  }
  return l;
}

function overridesLevel(o: InputOverrides | undefined, dflt: Preprocessing): Level | undefined {
  if (!o) return undefined;
  const l: Level = { source: 'options', where: 'options' };
  if (o.colorOrder !== undefined) {
    if (o.colorOrder !== 'RGB' && o.colorOrder !== 'BGR') throw new QuantFaceError('E_ARG', `input colour order must be 'RGB' or 'BGR' (got ${String(o.colorOrder)})`);
    l.colorOrder = o.colorOrder;
  }
  if (o.mean !== undefined || o.std !== undefined) {
    for (const [k, t] of [['mean', o.mean], ['std', o.std]] as const) if (t !== undefined && !tripleOk(t)) throw new QuantFaceError('E_ARG', `--input-${k} must be one number or three (got ${JSON.stringify(t)})`);
    const d = dflt.normalize === 'raw' ? { mean: 0, std: 1 } : dflt.normalize;
    const std = o.std ?? d.std;
    if ((typeof std === 'number' ? [std] : std).some((x) => x === 0)) throw new QuantFaceError('E_ARG', '--input-std must not be 0');
    l.normalize = { mean: o.mean ?? d.mean, std };
  }
  if (o.alignment !== undefined) {
    try {
      l.alignment = validateAlignment(o.alignment, 'options');
    } catch (e) {
      throw new QuantFaceError('E_ARG', (e as Error).message);
    }
  }
  return l;
}

const expand = (t: Triple): number[] => (typeof t === 'number' ? [t, t, t] : [...t]);
function sameNormalize(a: Preprocessing['normalize'], b: Preprocessing['normalize']): boolean {
  const f = (n: Preprocessing['normalize']) => (n === 'raw' ? [0, 0, 0, 1, 1, 1] : [...expand(n.mean), ...expand(n.std)]);
  const x = f(a), y = f(b);
  return x.every((v, i) => Math.abs(v - y[i]!) <= 1e-9 * Math.max(1, Math.abs(v)));
}
function sameAlignment(a: InputAlignment, b: InputAlignment): boolean {
  if (a.kind === 'box' || b.kind === 'box') return a.kind === b.kind && (a as { preset: string }).preset === (b as { preset: string }).preset;
  return a.points.every((p, i) => Math.abs(p[0] - b.points[i]![0]) < 1e-6 && Math.abs(p[1] - b.points[i]![1]) < 1e-6);
}
const fmtNormalize = (n: Preprocessing['normalize']): string => (n === 'raw' ? 'raw 0..255' : `(x - ${JSON.stringify(n.mean)}) / ${JSON.stringify(n.std)}`);
const fmtAlignment = (a: InputAlignment): string => (a.kind === 'box' ? `box ${a.preset}` : `template ${a.name ?? JSON.stringify(a.points)}`);

/** Resolves the input fields over the levels (highest first) on top of the importer's record `base`. */
function resolveLevels(levels: Level[], base: ModelInfo, known?: KnownModel): ResolvedDescription {
  const pick = <K extends 'colorOrder' | 'normalize' | 'alignment'>(k: K): { v: Level[K]; from: InfoSource | undefined } => {
    for (const l of levels) if (l[k] !== undefined) return { v: l[k], from: l.source };
    return { v: undefined, from: undefined };
  };
  // An option that contradicts a higher level is an error, not silently dropped.
  const opt = levels.find((l) => l.source === 'options');
  if (opt) {
    for (const l of levels) {
      if (l === opt) break;
      const why = (what: string, mine: string, theirs: string, flag: string): never => {
        throw new QuantFaceError(
          'E_ARG',
          `${flag} (${mine}) contradicts the model's recorded input ${what} (${theirs}, from the ${l.source === 'registry' ? `registry of known models: ${l.where}` : `${l.source}: ${l.where}`}); ` +
            'leave the flag out, or write a sidecar model.quantface.json to override the record',
        );
      };
      if (opt.colorOrder && l.colorOrder && opt.colorOrder !== l.colorOrder) why('colour order', opt.colorOrder, l.colorOrder, opt.colorOrder === 'BGR' ? '--bgr' : 'the colour order option');
      if (opt.normalize && l.normalize && !sameNormalize(opt.normalize, l.normalize)) why('scaling', fmtNormalize(opt.normalize), fmtNormalize(l.normalize), '--input-mean/--input-std');
      if (opt.alignment && l.alignment && !sameAlignment(opt.alignment, l.alignment)) why('alignment', fmtAlignment(opt.alignment), fmtAlignment(l.alignment), '--template');
    }
  }
  const c = pick('colorOrder');
  const n = pick('normalize');
  const a = pick('alignment');
  const name = levels.find((l) => l.name !== undefined)?.name;
  const layout = levels.find((l) => l.layout !== undefined)?.layout;
  const info: ModelInfo = {
    ...base,
    ...(name !== undefined ? { name } : {}),
    preprocessing: { colorOrder: c.v ?? base.preprocessing.colorOrder, normalize: n.v ?? base.preprocessing.normalize },
    ...(layout !== undefined ? { layout } : {}),
  };
  const alignment = a.v ?? base.alignment;
  if (alignment) info.alignment = alignment;
  else delete info.alignment;
  const from = {
    colorOrder: c.from ?? 'default',
    normalize: n.from ?? 'default',
    alignment: a.from ?? (base.alignment ? 'default' : 'unknown'),
  } as ResolvedDescription['from'];
  return { info, from, assumed: from.colorOrder === 'default' && from.normalize === 'default', ...(known ? { known } : {}) };
}

async function sha256File(path: string): Promise<string> {
  try {
    return createHash('sha256').update(await readFile(path)).digest('hex');
  } catch (e) {
    throw ioError(e, path);
  }
}

async function readSidecar(modelPath: string): Promise<Level | undefined> {
  const side = sidecarPath(modelPath);
  if (!existsSync(side)) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(await readFile(side, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code) throw ioError(e, side);
    throw new QuantFaceError('E_FORMAT', `${side} is not valid JSON: ${(e as Error).message}`, { cause: e, path: side });
  }
  return parseDescription(v, side, 'sidecar');
}

/**
 * The levels above the registry for a model argument: follows a quantface
 * model metadata file to its model; returns the detected model file and
 * the sidecar-level description (the metadata file's or the sidecar's).
 */
async function locate(file: string): Promise<{ det: DetectedModelFile & { format: Exclude<ModelFileFormat, 'quantface-meta'> }; side?: Level }> {
  let det = await detectModelFormat(file);
  let side: Level | undefined;
  if (det.format === 'quantface-meta') {
    const j = det.json as Record<string, unknown>;
    if (typeof j.path !== 'string' || !j.path) throw new QuantFaceError('E_FORMAT', `${det.path}: model metadata file without a 'path' to its model`, { path: det.path });
    const copy = { ...j };
    delete copy.kind;
    side = parseDescription(copy, det.path, 'sidecar');
    const target = isAbsolute(j.path) ? j.path : join(dirname(det.path), j.path);
    det = await detectModelFormat(target);
    if (det.format === 'quantface-meta') throw new QuantFaceError('E_FORMAT', `${target}: a model metadata file must name a model file, not another metadata file`, { path: target });
  } else {
    side = await readSidecar(det.path);
  }
  return { det: det as DetectedModelFile & { format: Exclude<ModelFileFormat, 'quantface-meta'> }, ...(side ? { side } : {}) };
}

function registryLevel(k: KnownModel | undefined): Level | undefined {
  return k
    ? {
        source: 'registry',
        where: k.file,
        name: k.name,
        colorOrder: k.preprocessing.colorOrder,
        normalize: k.preprocessing.normalize,
        ...(k.alignment ? { alignment: k.alignment } : {}),
        ...(k.outputName ? { outputName: k.outputName } : {}),
      }
    : undefined;
}

function fileLevel(info: ModelInfo | undefined, where: string): Level | undefined {
  return info
    ? {
        source: 'file',
        where,
        name: info.name,
        colorOrder: info.preprocessing.colorOrder,
        normalize: info.preprocessing.normalize,
        ...(info.alignment ? { alignment: info.alignment } : {}),
      }
    : undefined;
}

const compact = (ls: Array<Level | undefined>): Level[] => ls.filter((l): l is Level => l !== undefined);

/**
 * Loads any model file quantface reads into the engine, detected by
 * content, with its input description resolved (see the module comment).
 * Errors: E_IO, E_FORMAT, E_UNSUPPORTED_FORMAT, E_UNSUPPORTED_OP, E_SHAPE,
 * E_ARG (options that contradict the file).
 */
export async function loadModelFile(file: string, o: ModelFileOptions = {}): Promise<LoadedModelFile> {
  if (typeof file !== 'string' || !file.trim()) throw new QuantFaceError('E_ARG', 'model path is empty; pass a .qfm, an .onnx, a TF.js model.json or a weights manifest');
  const { det, side } = await locate(file);
  const path = det.path;
  if (det.format === 'qfm') {
    const { loadQfm } = await import('./qfm.js');
    const qfm = await loadQfm(path);
    const base = qfm.info ?? (qfm.model as { info?: ModelInfo }).info;
    const levels = compact([fileLevel(qfm.info, path), side]);
    if (!base) {
      // Older files without info: the runtime's defaults apply; options / sidecar can still describe it.
      const opt = overridesLevel(o.input, { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } });
      if (side || opt) throw new QuantFaceError('E_FORMAT', `${path} records no model info (input size, output); it cannot take an input description from a sidecar or options`, { path });
      return { format: 'qfm', path, model: qfm.model, qfm, info: undefined as unknown as ModelInfo, from: { colorOrder: 'default', normalize: 'default', alignment: 'unknown' }, assumed: true };
    }
    const opt = overridesLevel(o.input, base.preprocessing);
    const r = resolveLevels(compact([...levels, opt]), base);
    setInfo(qfm.model, r.info);
    qfm.info = r.info;
    return { ...r, format: 'qfm', path, model: qfm.model, qfm, assumed: false };
  }
  const fileSha256 = await sha256File(path);
  const known = knownModel(fileSha256);
  const reg = registryLevel(known);
  const outputName = side?.outputName ?? reg?.outputName;
  const inputSize = side?.inputSize;
  let model: Module & { info: ModelInfo; recorded?: ModelInfo };
  if (det.format === 'onnx') {
    const { importOnnxModel } = await import('./onnx.js');
    model = await importOnnxModel(path, { ...(outputName ? { outputName } : {}), ...(inputSize ? { inputSize: [inputSize, inputSize] as [number, number] } : {}) });
  } else if (det.format === 'tfjs-graph') {
    const { importTfjsGraphModel } = await import('./tfjs.js');
    model = await importTfjsGraphModel(path, { ...(outputName ? { outputName } : {}), ...(inputSize ? { inputSize: [inputSize, inputSize] as [number, number] } : {}) });
  } else if (det.format === 'tflite') {
    const { importTfliteModel } = await import('./tflite.js');
    model = await importTfliteModel(path, { ...(outputName ? { outputName } : {}) });
  } else if (det.format === 'tfjs-weights') {
    const { loadFaceApiResNet } = await import('./faceapi.js');
    model = await loadFaceApiResNet(path);
  } else {
    throw new QuantFaceError('E_UNSUPPORTED_FORMAT', `${path}: ${det.format} models are not imported`, { path });
  }
  const recorded = model.recorded;
  const base = model.info;
  const opt = overridesLevel(o.input, base.preprocessing);
  const r = resolveLevels(compact([fileLevel(recorded, `${path} metadata quantface.info`), side, reg, opt]), base, known);
  setInfo(model, r.info);
  return { ...r, format: det.format, path, model, fileSha256 };
}

function setInfo(m: Module, info: ModelInfo): void {
  if ('info' in m) (m as { info: ModelInfo }).info = info;
}

/**
 * The input description of a TF.js graph model without importing it into
 * the engine (for running it on TF.js): input size, layout and output
 * length from its signature, then the same precedence as loadModelFile.
 */
export async function describeTfjsModelFile(file: string, o: ModelFileOptions = {}): Promise<ResolvedDescription & { path: string }> {
  const { det, side } = await locate(file);
  if (det.format !== 'tfjs-graph') throw new QuantFaceError('E_ARG', `${det.path} is a ${det.format} model, not a TF.js graph model: run it on the engine (leave out --backend wasm|cpu)`, { path: det.path });
  const json = det.json as Record<string, unknown>;
  const sig = signatureShape(json);
  const { KNOWN_TFJS_MODELS } = await import('./tfjs.js');
  const byName = KNOWN_TFJS_MODELS[basename(det.path)];
  const size = side?.inputSize ?? sig.inputSize ?? 112;
  const base: ModelInfo = {
    name: byName?.name ?? basename(det.path).replace(/\.json$/i, ''),
    format: 'tfjs-graph',
    inputShape: [size, size, 3],
    outputDim: sig.dim ?? 0,
    normalizedOutput: false,
    preprocessing: byName?.preprocessing ?? { colorOrder: 'RGB', normalize: 'raw' },
    ...(sig.layout ? { layout: sig.layout } : {}),
    ...(byName ? { source: byName.source } : {}),
  };
  const known = knownModel(await sha256File(det.path));
  const reg = registryLevel(known);
  const r = resolveLevels(compact([side, reg, overridesLevel(o.input, base.preprocessing)]), base, known);
  const inputName = side?.inputName;
  const outputName = side?.outputName ?? reg?.outputName;
  if (inputName) r.info.inputName = inputName;
  if (outputName) r.info.outputName = outputName;
  // A name known by file name (KNOWN_TFJS_MODELS) is a recorded convention, not an assumption.
  if (byName && r.from.normalize === 'default') r.assumed = false;
  return { ...r, path: det.path };
}

interface SigTensor { name?: string; tensorShape?: { dim?: Array<{ size?: string | number }> } }

function signatureShape(json: Record<string, unknown>): { inputSize?: number; layout?: 'NHWC' | 'NCHW'; dim?: number } {
  const out: { inputSize?: number; layout?: 'NHWC' | 'NCHW'; dim?: number } = {};
  const sig = json.signature as { inputs?: Record<string, SigTensor>; outputs?: Record<string, SigTensor> } | undefined;
  const dims = (t: SigTensor | undefined) => t?.tensorShape?.dim?.map((d) => Number(d.size ?? -1));
  const ins = sig?.inputs ? Object.values(sig.inputs) : [];
  const outs = sig?.outputs ? Object.values(sig.outputs) : [];
  if (ins.length === 1) {
    const d = dims(ins[0]);
    if (d && d.length === 4) {
      if (d[3] === 3 && d[1]! > 0 && d[1] === d[2]) { out.inputSize = d[1]!; out.layout = 'NHWC'; }
      else if (d[1] === 3 && d[2]! > 0 && d[2] === d[3]) { out.inputSize = d[2]!; out.layout = 'NCHW'; }
    }
  }
  if (outs.length === 1) {
    const d = dims(outs[0]);
    if (d && d.length === 2 && d[1]! > 0) out.dim = d[1]!;
  }
  return out;
}

/**
 * Parses a `--template` value: 'arcface' or ten numbers x1,y1,...,x5,y5
 * (pixel coordinates in the model's input crop).
 */
export function parseTemplate(v: string): InputAlignment {
  const s = v.trim().toLowerCase();
  if (s === 'arcface' || s === 'insightface') return { kind: 'template', name: 'arcface', points: ARCFACE_TEMPLATE_POINTS.map((p) => [p[0], p[1]] as [number, number]) };
  const box = /^box:(.+)$/.exec(s);
  if (box && ALIGNMENT_BOX_PRESETS.includes(box[1] as (typeof ALIGNMENT_BOX_PRESETS)[number])) return { kind: 'box', preset: box[1] as (typeof ALIGNMENT_BOX_PRESETS)[number] };
  const nums = s.split(/[\s,]+/).filter(Boolean).map(Number);
  if (nums.length !== 10 || !nums.every(Number.isFinite))
    throw new QuantFaceError('E_ARG', `--template must be 'arcface', 'box:${ALIGNMENT_BOX_PRESETS.join('|box:')}' or ten numbers x1,y1,...,x5,y5 (eyes, nose tip, mouth corners in the model's crop; got '${v}')`);
  return { kind: 'template', points: [0, 1, 2, 3, 4].map((i) => [nums[2 * i]!, nums[2 * i + 1]!] as [number, number]) };
}

/** Parses `--input-mean` / `--input-std`: one number or three (comma-separated, model channel order). */
export function parseTriple(flag: string, v: string): Triple {
  const nums = v.split(/[\s,]+/).filter(Boolean).map(Number);
  if ((nums.length !== 1 && nums.length !== 3) || !nums.every(Number.isFinite)) throw new QuantFaceError('E_ARG', `${flag} must be one number or three separated by commas (got '${v}')`);
  return nums.length === 1 ? nums[0]! : [nums[0]!, nums[1]!, nums[2]!];
}
