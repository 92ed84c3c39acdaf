/**
 * `quantface quantize-pipeline --data DIR... --out DIR`: int8 detector and
 * landmark networks for the face pipeline (post-training quantization,
 * lib/runtime/pipeline-quant.ts), calibrated on the images of the given
 * folders (as they are, plus --compose group photos made from them), saved
 * as <out>/detector.qfm and <out>/landmarks.qfm; then
 * `quantface faces --detector <out>/detector.qfm --landmark-model <out>/landmarks.qfm`.
 */
import { readdir, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { intArg } from './args.js';
import { QuantFaceError, ioError } from '../errors.js';
import { saveQfm } from '../io/qfm.js';
import { composePhotos, quantizePipelineNetworks } from '../runtime/pipeline-quant.js';
import type { PhotoInput } from '../runtime/pipeline.js';

export interface QuantizePipelineCliOptions {
  data: string[];
  out: string;
  compose?: number;
  limit?: number;
  seed?: number;
  bits?: number;
  detector?: string;
  landmarkModel?: string;
  quiet?: boolean;
}

const IMAGE = /\.(jpe?g|png|webp)$/i;

/** Image files of the folders (sorted, not recursive). */
async function listImages(dirs: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of dirs) {
    let names: string[];
    try {
      names = await readdir(d);
    } catch (e) {
      throw ioError(e, d);
    }
    out.push(...names.filter((n) => IMAGE.test(n)).sort().map((n) => join(d, n)));
  }
  return out;
}

/** Runs `quantface quantize-pipeline`; returns the two files written. */
export async function quantizePipelineCommand(o: QuantizePipelineCliOptions, err: NodeJS.WritableStream = process.stderr): Promise<{ detector: string; landmarks: string }> {
  if (!o.data?.length) throw new QuantFaceError('E_ARG', 'give --data with at least one folder of face photos (not your evaluation set)');
  const say = (m: string): void => void (o.quiet ? 0 : err.write(`${m}\n`));
  let files = await listImages(o.data.map((d) => resolve(d)));
  if (o.limit !== undefined) files = files.slice(0, o.limit);
  if (!files.length) throw new QuantFaceError('E_ARG', `no JPEG / PNG / WebP images in ${o.data.join(', ')}`);
  const composed = o.compose ? await composePhotos(files, { count: o.compose, seed: o.seed ?? 0 }) : [];
  const photos: PhotoInput[] = [...files, ...composed];
  say(`calibrating on ${files.length} images and ${composed.length} composed group photos`);
  const bits = o.bits ?? 8;
  const r = await quantizePipelineNetworks({
    photos,
    bits,
    ...(o.detector ? { detector: resolve(o.detector) } : {}),
    ...(o.landmarkModel ? { landmarks: resolve(o.landmarkModel) } : {}),
    ...(o.quiet ? {} : { onMessage: say }),
  });
  const dir = resolve(o.out);
  await mkdir(dir, { recursive: true });
  const data = { folders: o.data.map((d) => resolve(d)), images: files.length, composed: composed.length, composeSeed: o.seed ?? 0, landmarkCrops: r.faces };
  const detector = join(dir, 'detector.qfm');
  const landmarks = join(dir, 'landmarks.qfm');
  await saveQfm(r.detector, detector, { provenance: { weightBits: bits, actBits: bits, data, notes: { method: 'PTQ (min/max ranges) on the pipeline-resized 320x240 photos' } } });
  await saveQfm(r.landmarks, landmarks, { provenance: { weightBits: bits, actBits: bits, data, notes: { method: 'PTQ (min/max ranges) on the float pipeline\'s 64x64 grey face crops' } } });
  say(`wrote ${detector} and ${landmarks} (${r.faces} landmark crops)`);
  return { detector, landmarks };
}

/** Adds the `quantize-pipeline` subcommand. */
export function register(program: Command): void {
  program
    .command('quantize-pipeline')
    .description('int8 detector and landmark networks for `faces` (post-training quantization on your photos): writes <out>/detector.qfm and <out>/landmarks.qfm')
    .requiredOption('--data <dirs...>', 'folders of face photos to calibrate on (not your evaluation set)')
    .requiredOption('-o, --out <dir>', 'output folder')
    .option('--compose <n>', 'also compose n 640x480 group photos (1-4 faces) from the images', intArg('--compose', 0))
    .option('--limit <n>', 'use the first n images only', intArg('--limit', 1))
    .option('--seed <n>', 'seed of the composed photos (default 0)', intArg('--seed', 0))
    .option('--bits <n>', 'weight and activation bits (default 8)', intArg('--bits', 2))
    .option('--detector <file>', 'float detector ONNX (default: faceplugin fr_detect.onnx, fetched into the cache)')
    .option('--landmark-model <file>', 'float 68-point landmark ONNX (default: faceplugin fr_landmark.onnx)')
    .option('-q, --quiet', 'no messages on stderr')
    .action(async (opts: QuantizePipelineCliOptions) => {
      await quantizePipelineCommand(opts);
    });
}
