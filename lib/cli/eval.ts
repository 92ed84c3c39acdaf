/**
 * `quantface eval`: verification accuracy / ROC of one or more models
 * (teacher first, then students) on a pairs folder, an insightface .bin
 * or an IJB-B/C folder; prints a table, writes report.json + report.html.
 */
import { join, resolve } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { Command, Option } from 'commander';
import { addInputOptions, inputOverrides, intArg, type InputFlags } from './args.js';
import { saveModelMeta } from '../eval/embedder.js';
import { formatTable, writeReport } from '../eval/report.js';
import { ALIGN_OPTIONS, runEval, type AlignOption } from '../eval/run.js';
import { QuantFaceError, ioError } from '../errors.js';
import { updateQfmProvenance } from '../io/qfm.js';
import { detectModelFormat } from '../io/detect.js';

export interface EvalCliOptions extends InputFlags {
  model: string[];
  pairs?: string;
  bin?: string;
  ijb?: string;
  target?: string;
  align?: AlignOption;
  landmarks?: string;
  detector?: string;
  landmarkModel?: string;
  out: string;
  batch: number;
  limit?: number;
  backend: 'auto' | 'engine' | 'wasm' | 'cpu';
  quiet?: boolean;
  /** Store each .qfm model's verification threshold (mean over the folds) in the file. */
  saveThreshold?: boolean;
}

/**
 * The cosine threshold a pairs / .bin evaluation chose for a model: the mean
 * over the folds of the best squared-distance threshold d, as a cosine
 * 1 - d / 2 (embeddings are L2-normalised, so d = 2 - 2 cos).
 */
export function cosineThreshold(foldThresholds: readonly number[]): number {
  if (foldThresholds.length === 0) throw new QuantFaceError('E_INTERNAL', 'no fold thresholds to average');
  return 1 - foldThresholds.reduce((a, b) => a + b, 0) / foldThresholds.length / 2;
}

/** Runs the eval command with parsed options; returns the paths written. */
export async function evalCommand(opts: EvalCliOptions, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<{ json: string; html: string }> {
  // .qfm files told by content (a student may be named anything); unreadable paths fail later with their own error.
  const isQfm = await Promise.all(opts.model.map(async (m) => (await detectModelFormat(m).catch(() => null))?.format === 'qfm'));
  const qfmModels = opts.model.filter((_, i) => isQfm[i]);
  if (opts.saveThreshold) {
    if (opts.ijb !== undefined) throw new QuantFaceError('E_ARG', '--save-threshold needs a pairs folder or a .bin set (IJB reports TAR at FAR, not a threshold)');
    if (qfmModels.length === 0) throw new QuantFaceError('E_ARG', '--save-threshold writes into .qfm model files: give at least one --model FILE.qfm');
    if (opts.limit !== undefined) throw new QuantFaceError('E_ARG', '--save-threshold needs the whole set: leave out --limit');
  }
  const tty = !opts.quiet && (err as NodeJS.WriteStream).isTTY === true;
  let lastPrint = 0;
  const input = inputOverrides(opts);
  const report = await runEval({
    ...(input ? { input } : {}),
    models: opts.model,
    ...(opts.pairs !== undefined ? { pairs: opts.pairs } : {}),
    ...(opts.bin !== undefined ? { bin: opts.bin } : {}),
    ...(opts.ijb !== undefined ? { ijb: opts.ijb } : {}),
    ...(opts.target !== undefined ? { target: opts.target } : {}),
    ...(opts.align !== undefined ? { align: opts.align } : {}),
    ...(opts.landmarks !== undefined ? { landmarks: opts.landmarks } : {}),
    ...(opts.detector !== undefined ? { detector: opts.detector } : {}),
    ...(opts.landmarkModel !== undefined ? { landmarkModel: opts.landmarkModel } : {}),
    onDetectProgress: (p) => {
      if (opts.quiet) return;
      const now = Date.now();
      if (p.done < p.total && now - lastPrint < (tty ? 200 : 10_000)) return;
      lastPrint = now;
      const msg = `detecting faces ${p.done}/${p.total} images (${(p.done / Math.max(p.seconds, 1e-9)).toFixed(1)}/s, ${p.seconds.toFixed(0)} s)`;
      err.write(tty ? `\r${msg}${p.done === p.total ? '\n' : ''}` : `${msg}\n`);
    },
    ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
    batch: opts.batch,
    backend: opts.backend,
    onModel: (name, assumed) => {
      if (!opts.quiet) err.write(`model ${name}${assumed ? ' (nothing records its input: assuming the format\'s default preprocessing; give --input-mean/--input-std/--bgr or a sidecar model.quantface.json)' : ''}\n`);
    },
    onProgress: (p) => {
      if (opts.quiet) return;
      const now = Date.now();
      if (p.done < p.total && now - lastPrint < (tty ? 200 : 10_000)) return;
      lastPrint = now;
      const rate = p.done / Math.max(p.seconds, 1e-9);
      const msg = `embedding ${p.done}/${p.total} images (${rate.toFixed(1)}/s, ${p.seconds.toFixed(0)} s)`;
      err.write(tty ? `\r${msg}${p.done === p.total ? '\n' : ''}` : `${msg}\n`);
    },
  });
  const dir = resolve(opts.out);
  const paths = await writeReport(report, dir);
  const metaDir = join(dir, 'models');
  try { await mkdir(metaDir, { recursive: true }); } catch (e) { throw ioError(e, metaDir, 'create'); }
  for (const m of report.models) await saveModelMeta(m.meta, join(metaDir, `${m.name.replace(/[^\w.-]+/g, '_')}.quantface.json`));
  out.write(formatTable(report) + '\n');
  if (opts.saveThreshold) {
    // Models are reported in --model order (embedders passed directly come first; the CLI passes none).
    for (let i = 0; i < opts.model.length; i++) {
      const path = opts.model[i]!;
      const m = report.models[i];
      if (!isQfm[i] || !m?.foldThresholds) continue;
      const threshold = cosineThreshold(m.foldThresholds);
      await updateQfmProvenance(path, (p) => {
        const notes = p.notes && typeof p.notes === 'object' && !Array.isArray(p.notes) ? p.notes : {};
        return {
          ...p,
          notes: {
            ...notes,
            verifyThreshold: threshold,
            verifyThresholdFrom: { dataset: report.dataset.path, kind: report.dataset.kind, align: report.dataset.align, pairs: report.dataset.nPairs, accuracy: m.accuracy ?? null, at: report.created },
          },
        };
      });
      out.write(`threshold ${threshold.toFixed(4)} (cosine, mean of ${m.foldThresholds.length} folds) saved in ${path}\n`);
    }
  }
  out.write(`report: ${paths.html}\njson:   ${paths.json}\n`);
  return paths;
}

/** Adds the `eval` subcommand to the program. */
export function register(program: Command): void {
  program
    .command('eval')
    .description('evaluate face-verification accuracy of one or more models (the first is the teacher)')
    .requiredOption('-m, --model <path>', 'model: .qfm, .onnx, TF.js model.json, face-api weights manifest or quantface model metadata (told by content); repeat for students', (v: string, prev: string[] = []) => [...prev, v])
    .option('--pairs <dir>', 'LFW-style pairs: a folder with pairs.txt (or the pairs file) over an image folder')
    .option('--bin <file>', 'insightface verification .bin (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)')
    .option('--ijb <dir>', 'IJB-B / IJB-C folder in insightface layout (meta/, loose_crop/)')
    .option('--target <name>', 'IJB file prefix: ijbb or ijbc (detected when absent)')
    .addOption(new Option('--align <preset>', 'crop: lfw-funneled | ffhq | none | landmarks | detect (face detector + landmark net on the raw photos) (default: pairs lfw-funneled, bin none, ijb landmarks)').choices([...ALIGN_OPTIONS]))
    .option('--landmarks <file>', '5-point landmarks for --align landmarks on a pairs folder (default landmarks-5pt.txt beside pairs.txt)')
    .option('--detector <file>', 'face detector ONNX for --align detect (default: faceplugin fr_detect.onnx, fetched into the cache)')
    .option('--landmark-model <file>', '68-point landmark ONNX for --align detect (default: faceplugin fr_landmark.onnx)')
    .option('-o, --out <dir>', 'output folder for report.json / report.html', 'quantface-eval')
    .option('-b, --batch <n>', 'images per batch (each with its mirror image)', intArg('--batch', 1), 32)
    .option('--limit <n>', 'evaluate about n pairs only (a quick check; LFW keeps all folds balanced)', intArg('--limit', 1))
    .addOption(new Option('--backend <name>', 'auto/engine: every model on quantface\'s runtime (float in fp32, .qfm students in int8); wasm/cpu: TF.js graph models on @tensorflow/tfjs with that backend').choices(['auto', 'engine', 'wasm', 'cpu']).default('auto'))
    .option('-q, --quiet', 'no progress output')
    .option('--save-threshold', 'store each .qfm model\'s verification threshold (cosine, mean over the folds) in the file, for loadModel().verify()');
  addInputOptions(program.commands[program.commands.length - 1]!, 'the models').action(async (opts: EvalCliOptions) => {
    await evalCommand(opts);
  });
}
