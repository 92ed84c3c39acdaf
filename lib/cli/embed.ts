/**
 * `quantface embed`: face embeddings of image files with a model (a .qfm
 * student on the int8 runtime, or a float TF.js / ONNX model), as JSON
 * lines; `--compare` prints the similarity of two images instead.
 *
 * `quantface info`: what a model file holds (format version, size, bit
 * widths, parameters, preprocessing, provenance, verification threshold).
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';
import { Command } from 'commander';
import { FacePipeline, loadPipeline, type Face } from '../runtime/pipeline.js';
import { addInputOptions, inputOverrides, intArg, numberArg, type InputFlags } from './args.js';
import { QuantFaceError, ioError } from '../errors.js';
import { loadModel, storedThreshold, type EmbedInput, type FaceModel } from '../runtime/index.js';
import { writeFileAtomic } from '../io/qfm.js';
import { loadModelFile, type InfoSource, type ModelFileOptions } from '../io/load.js';
import { describeInput } from '../io/model-info.js';
import type { ModelFileFormat } from '../io/detect.js';
import { countParams } from '../models/index.js';

export interface EmbedCliOptions extends InputFlags {
  model: string;
  align?: string;
  threads?: number;
  threshold?: number;
  compare?: boolean;
  out?: string;
  precision?: 'auto' | 'float';
  /** Landmarks file (as `eval --landmarks`): `image x1 y1 ... x5 y5` lines, or bare `x1 ... y5` lines in image order. */
  landmarks?: string;
  /** Find the face with the face pipeline (detector + landmark net) and embed the largest one. */
  detect?: boolean;
  detector?: string;
  landmarkModel?: string;
}

/**
 * Reads a landmarks file for `embed --landmarks` and returns each image's
 * 10 numbers in pixel-index coordinates. The file is the one `quantface
 * eval --landmarks` reads (`relative/path x1 y1 ... x5 y5` per line, `#`
 * comments; continuous coordinates: pixel i spans [i, i+1], so 0.5 is
 * subtracted, as eval does), matched to an image by its path relative to
 * the file's folder, as given, or by the trailing path components; or
 * lines of 10 bare numbers, one per image in the order given.
 */
export async function landmarksForImages(file: string, images: readonly string[]): Promise<Float64Array[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw ioError(e, file, 'read the landmarks file');
  }
  const named = new Map<string, Float64Array>();
  const bare: Float64Array[] = [];
  const lines = text.split(/\r?\n/);
  for (let li = 0; li < lines.length; li++) {
    const line = lines[li]!.trim();
    if (!line || line.startsWith('#')) continue;
    const tok = line.split(/\s+/);
    // named lines may carry extra trailing numbers (a detector score), ignored as eval ignores them
    const isBare = tok.length === 10 && tok.every((x) => Number.isFinite(Number(x)));
    if (!isBare && tok.length < 11) throw new QuantFaceError('E_FORMAT', `${file}:${li + 1}: expected 'image x1 y1 ... x5 y5' or 10 numbers, got ${tok.length} fields`, { path: file });
    const nums = isBare ? tok : tok.slice(1, 11);
    const v = new Float64Array(10);
    for (let k = 0; k < 10; k++) {
      const x = Number(nums[k]);
      if (!Number.isFinite(x) || nums[k]!.trim() === '') throw new QuantFaceError('E_FORMAT', `${file}:${li + 1}: '${nums[k]}' is not a number`, { path: file });
      v[k] = x - 0.5;
    }
    if (isBare) bare.push(v);
    else named.set(tok[0]!.replace(/\\/g, '/'), v);
  }
  if (bare.length && named.size) throw new QuantFaceError('E_FORMAT', `${file}: mixes named lines ('image x1 ... y5') and bare lines of 10 numbers; use one form`, { path: file });
  if (bare.length) {
    if (bare.length !== images.length) throw new QuantFaceError('E_ARG', `${file} has ${bare.length} bare landmark lines for ${images.length} images; give one line per image, in order (or name the images)`, { path: file });
    return bare;
  }
  const root = dirname(resolve(file));
  return images.map((img) => {
    const abs = resolve(img);
    const hit = named.get(img.replace(/\\/g, '/')) ?? [...named].find(([k]) => resolve(root, k) === abs)?.[1];
    if (hit) return hit;
    const tail = [...named].filter(([k]) => abs.endsWith(sep + k.split('/').join(sep)));
    if (tail.length === 1) return tail[0]![1];
    if (tail.length > 1) throw new QuantFaceError('E_ARG', `${img}: ${tail.length} lines of ${file} match it (${tail.map(([k]) => k).join(', ')}); name it by its path relative to ${root}`, { path: file });
    throw new QuantFaceError('E_ARG', `no landmarks for ${img} in ${file} (lines are matched by the image's path relative to ${root}, or by its trailing path)`, { path: file });
  });
}

/** Rounds to 7 significant digits for JSON output (float32 carries ~7). */
const f7 = (x: number): number => Number(x.toPrecision(7));

/** Runs `quantface embed`; returns what was written (for tests). */
export async function embedCommand(images: string[], o: EmbedCliOptions, out: NodeJS.WritableStream = process.stdout): Promise<string> {
  if (images.length === 0) throw new QuantFaceError('E_ARG', 'give at least one image file');
  if (o.compare && images.length !== 2) throw new QuantFaceError('E_ARG', `--compare takes exactly two images (got ${images.length})`);
  if (o.landmarks !== undefined && o.align !== undefined) throw new QuantFaceError('E_ARG', '--landmarks warps each face to the model\'s 5-point template: leave --align out');
  if (o.detect && (o.landmarks !== undefined || o.align !== undefined)) throw new QuantFaceError('E_ARG', '--detect finds and aligns the face itself: leave --align and --landmarks out');
  if (!o.detect && (o.detector !== undefined || o.landmarkModel !== undefined)) throw new QuantFaceError('E_ARG', '--detector and --landmark-model go with --detect');
  const lms = o.landmarks !== undefined ? await landmarksForImages(o.landmarks, images) : undefined;
  const input = inputOverrides(o);
  const model: FaceModel = await loadModel(o.model, {
    ...(input ? { input } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.align !== undefined ? { align: o.align } : {}),
    ...(o.threshold !== undefined ? { threshold: o.threshold } : {}),
    ...(o.precision !== undefined ? { precision: o.precision } : {}),
  });
  let text = '';
  let pipe: FacePipeline | undefined;
  const boxes: Array<Face['box'] | undefined> = [];
  try {
    if (o.detect)
      pipe = await loadPipeline({ recognizer: model, ...(o.detector ? { detector: resolve(o.detector) } : {}), ...(o.landmarkModel ? { landmarks: resolve(o.landmarkModel) } : {}) });
    const paths = images.map((p) => resolve(p));
    // One call per image (the model's queue batches them), so an unreadable file is named in the error.
    const embs = await Promise.all(paths.map(async (p, i) => {
      try {
        if (pipe) {
          const f = FacePipeline.pick(await pipe.faces(p), 'largest');
          if (!f) throw new QuantFaceError('E_NO_FACE', `${p}: no face found`, { path: p });
          boxes[i] = f.box;
          return f.embedding;
        }
        const x: EmbedInput = lms ? { image: p, landmarks: lms[i]! } : p;
        return await model.embed(x) as Float32Array;
      } catch (e) {
        if (e instanceof QuantFaceError) throw new QuantFaceError(e.code, e.message.includes(p) ? e.message : `${p}: ${e.message}`, { cause: e, path: p });
        throw e;
      }
    }));
    if (o.compare) {
      const threshold = model.threshold;
      const s = model.similarity(embs[0]!, embs[1]!);
      const r = { a: paths[0], b: paths[1], similarity: f7(s), threshold: threshold ?? null, match: threshold === undefined ? null : s >= threshold };
      text = JSON.stringify(r) + '\n';
    } else {
      const r2 = (x: number): number => Math.round(x * 100) / 100;
      text = paths.map((p, i) => {
        const b = boxes[i];
        return JSON.stringify({ image: p, dim: model.dim, ...(b ? { box: { x: r2(b.x), y: r2(b.y), width: r2(b.width), height: r2(b.height) } } : {}), embedding: Array.from(embs[i]!, f7) });
      }).join('\n') + '\n';
    }
  } finally {
    await pipe?.dispose();
    await model.dispose();
  }
  if (o.out !== undefined) {
    await writeFileAtomic(resolve(o.out), Buffer.from(text, 'utf8'));
  } else {
    out.write(text);
  }
  return text;
}

export interface ModelSummary {
  path: string;
  /** Format told by the file's content. */
  format: Exclude<ModelFileFormat, 'quantface-meta'>;
  bytes: number;
  parameters: number;
  version?: string;
  weightBits?: number[];
  packedTensors?: number;
  floatTensors?: number;
  activationQuantizers?: number;
  activationBits?: number[];
  /** The resolved model description (input size, colour order, scaling, alignment, output). */
  info?: unknown;
  /** One line: the input the model takes. */
  input?: string;
  /** Where the colour order, scaling and alignment came from (file, sidecar, registry, options, default). */
  inputFrom?: { colorOrder: InfoSource; normalize: InfoSource; alignment: InfoSource | 'unknown' };
  /** SHA-256 of the file (the key of the registry of known models) and the registry's name for it. */
  sha256?: string;
  known?: string;
  provenance?: unknown;
  verifyThreshold?: number | null;
}

/** What a model file holds (any format, told by content). Errors: E_IO, E_FORMAT, E_UNSUPPORTED_FORMAT, E_UNSUPPORTED_OP. */
export async function summarizeModel(path: string, o: ModelFileOptions = {}): Promise<ModelSummary> {
  const f = await loadModelFile(path, o);
  const p = f.path;
  const desc = f.info
    ? { info: f.info, input: describeInput(f.info), inputFrom: f.from }
    : {};
  if (f.format === 'qfm') {
    const q = f.qfm!;
    const packed = q.metadata.tensors.filter((t) => t.storage === 'packed');
    return {
      path: p,
      format: 'qfm',
      bytes: q.bytes,
      parameters: countParams(q.model),
      version: `${q.version.major}.${q.version.minor}`,
      weightBits: [...new Set(packed.map((t) => (t as { bits: number }).bits))].sort((a, b) => a - b),
      packedTensors: packed.length,
      floatTensors: q.metadata.tensors.length - packed.length,
      activationQuantizers: q.metadata.activations.length,
      activationBits: [...new Set(q.metadata.activations.map((a) => a.bits))].sort((a, b) => a - b),
      ...desc,
      provenance: q.provenance,
      verifyThreshold: storedThreshold(q.provenance) ?? null,
    };
  }
  const { stat } = await import('node:fs/promises');
  const bytes = (await stat(p)).size;
  return {
    path: p,
    format: f.format,
    bytes,
    parameters: countParams(f.model),
    ...desc,
    ...(f.fileSha256 ? { sha256: f.fileSha256 } : {}),
    ...(f.known ? { known: f.known.name } : {}),
  };
}

export function formatSummary(s: ModelSummary): string {
  const lines = [`${s.path}`, `  format      ${s.format}${s.version ? ` ${s.version}` : ''}, ${s.bytes.toLocaleString('en-US')} bytes`, `  parameters  ${s.parameters.toLocaleString('en-US')}`];
  if (s.format === 'qfm') {
    lines.push(`  weights     ${s.weightBits!.length ? `${s.weightBits!.join('/')}-bit packed (${s.packedTensors} tensors)` : 'float'}, ${s.floatTensors} float tensors`);
    lines.push(`  activations ${s.activationQuantizers ? `${s.activationQuantizers} quantizers, ${s.activationBits!.join('/')}-bit` : 'float'}`);
    lines.push(`  threshold   ${s.verifyThreshold === null || s.verifyThreshold === undefined ? 'none stored (quantface eval --save-threshold sets one)' : s.verifyThreshold.toFixed(4)}`);
  }
  if (s.input) {
    const fr = s.inputFrom;
    lines.push(`  input       ${s.input}${fr ? ` (colour ${fr.colorOrder}, scaling ${fr.normalize}, alignment ${fr.alignment})` : ''}`);
  }
  if (s.known) lines.push(`  known model ${s.known} (registry, by SHA-256 ${s.sha256})`);
  if (s.info) lines.push(`  model info  ${JSON.stringify(s.info)}`);
  if (s.provenance) lines.push(`  provenance  ${JSON.stringify(s.provenance)}`);
  return lines.join('\n');
}

/** Adds the `embed` and `info` subcommands to the program. */
export function register(program: Command): void {
  const embed = program
    .command('embed')
    .description('face embeddings of image files (JSON lines), or the similarity of two with --compare')
    .argument('<images...>', 'image files (JPEG, PNG, WebP)')
    .requiredOption('-m, --model <path>', 'model: a .qfm, an .onnx, a TF.js model.json or a face-api weights manifest (told by content)')
    .option('--align <preset>', 'face crop of the images: none (already 112x112 crops; default) | ffhq | lfw-funneled | box:x,y,side')
    .option('--landmarks <file>', '5-point landmarks of each image (the file eval --landmarks reads: "image x1 y1 ... x5 y5" lines, or 10 numbers per line in image order): each face is warped to the model\'s template')
    .option('--detect', 'photos: find the faces (face pipeline: detector + 68 landmarks + alignment) and embed the largest one per photo')
    .option('--detector <file>', 'with --detect: detector ONNX or int8 .qfm (default: faceplugin fr_detect.onnx, fetched into the cache)')
    .option('--landmark-model <file>', 'with --detect: landmark net ONNX or int8 .qfm (default: faceplugin fr_landmark.onnx)')
    .option('--threads <n>', 'native threads', intArg('--threads', 1))
    .option('--threshold <cosine>', 'verification threshold for --compare (default: the model file\'s)', numberArg('--threshold'))
    .option('--compare', 'print the cosine similarity of the two images (and match, when a threshold is known)')
    .option('--float', 'run a quantized model with its float weights (fp32) instead of int8')
    .option('-o, --out <file>', 'write the output to a file (atomically) instead of stdout');
  addInputOptions(embed).action(async (images: string[], opts: EmbedCliOptions & { float?: boolean }) => {
    await embedCommand(images, { ...opts, ...(opts.float ? { precision: 'float' as const } : {}) });
  });
  const info = program
    .command('info')
    .description('what a model file holds: format (told by content), size, bit widths, parameters, input description and where it came from, provenance')
    .argument('<model>', 'a .qfm, an .onnx, a TF.js model.json or a face-api weights manifest')
    .option('--json', 'print JSON');
  addInputOptions(info).action(async (model: string, opts: InputFlags & { json?: boolean }) => {
    const input = inputOverrides(opts);
    const s = await summarizeModel(model, input ? { input } : {});
    process.stdout.write((opts.json ? JSON.stringify(s, null, 2) : formatSummary(s)) + '\n');
  });
}
