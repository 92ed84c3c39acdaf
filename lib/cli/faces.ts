/**
 * `quantface faces photo.jpg ...`: the faces in photos (boxes, scores, 5 and
 * 68 landmarks, embeddings) through the face pipeline (lib/runtime/
 * pipeline.ts): a line per face, or JSON with --json. The networks default
 * to faceplugin's, fetched once into the cache (npm pack, SHA-256 checked).
 */
import { basename, dirname, extname, join, resolve } from 'node:path';
import { rename, rm } from 'node:fs/promises';
import sharp from 'sharp';
import { Command } from 'commander';
import { intArg, numberArg } from './args.js';
import { QuantFaceError } from '../errors.js';
import { loadPipeline, type Face } from '../runtime/pipeline.js';

export interface FacesCliOptions {
  json?: boolean;
  embedding?: boolean;
  detector?: string;
  landmarkModel?: string;
  model?: string;
  threads?: number;
  scoreThreshold?: number;
  minFaceSize?: number;
  maxFaces?: number;
  quiet?: boolean;
  /** Draw boxes and landmarks onto the photo into this file (one photo only; PNG, JPEG or WebP by extension). */
  draw?: string;
}

/**
 * The photo (EXIF orientation applied, as the coordinates are) with each
 * face's box, score, 68 landmarks (small dots) and 5 landmarks (larger
 * dots) drawn on it as an SVG overlay (libvips / sharp composite); written
 * to a temporary file, then renamed into place.
 */
export async function drawFaces(photo: string, faces: readonly Face[], out: string): Promise<void> {
  const ext = extname(out).toLowerCase();
  if (!['.png', '.jpg', '.jpeg', '.webp'].includes(ext)) throw new QuantFaceError('E_ARG', `--draw: give a .png, .jpg or .webp file (got ${out})`);
  const base = sharp(photo).rotate();
  const meta = await sharp(photo).metadata();
  const swap = (meta.orientation ?? 1) >= 5;
  const width = (swap ? meta.height : meta.width) ?? 1;
  const height = (swap ? meta.width : meta.height) ?? 1;
  const line = Math.max(1, Math.round(Math.min(width, height) / 300));
  const esc = (n: number): string => n.toFixed(1);
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">`;
  for (const f of faces) {
    const b = f.box;
    svg += `<rect x="${esc(b.x)}" y="${esc(b.y)}" width="${esc(b.width)}" height="${esc(b.height)}" fill="none" stroke="#00e060" stroke-width="${line * 2}"/>`;
    svg += `<text x="${esc(b.x)}" y="${esc(Math.max(12 * line, b.y - 3 * line))}" font-family="sans-serif" font-size="${12 * line}" fill="#00e060">${f.score.toFixed(2)}</text>`;
    for (const [x, y] of f.landmarks68) svg += `<circle cx="${esc(x)}" cy="${esc(y)}" r="${line}" fill="#ffd000"/>`;
    for (const [x, y] of f.landmarks5) svg += `<circle cx="${esc(x)}" cy="${esc(y)}" r="${line * 2.5}" fill="none" stroke="#ff3040" stroke-width="${line}"/>`;
  }
  svg += '</svg>';
  const tmp = join(dirname(out), `.${basename(out)}.${process.pid}.tmp${ext}`);
  try {
    await base.composite([{ input: Buffer.from(svg), left: 0, top: 0 }]).toFile(tmp);
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { force: true });
    if (e instanceof QuantFaceError) throw e;
    throw new QuantFaceError('E_IO', `--draw: cannot write ${out} (${(e as Error).message})`, { cause: e, path: out });
  }
}

const r2 = (x: number): number => Math.round(x * 100) / 100;
const f7 = (x: number): number => Number(x.toPrecision(7));

/** Runs `quantface faces`; returns what was written (for tests). */
export async function facesCommand(photos: string[], o: FacesCliOptions, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<string> {
  if (photos.length === 0) throw new QuantFaceError('E_ARG', 'give at least one photo');
  if (o.draw !== undefined && photos.length !== 1) throw new QuantFaceError('E_ARG', '--draw takes one photo');
  const pipe = await loadPipeline({
    ...(o.detector ? { detector: resolve(o.detector) } : {}),
    ...(o.landmarkModel ? { landmarks: resolve(o.landmarkModel) } : {}),
    ...(o.model ? { recognizer: resolve(o.model) } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.scoreThreshold !== undefined ? { scoreThreshold: o.scoreThreshold } : {}),
    ...(o.minFaceSize !== undefined ? { minFaceSize: o.minFaceSize } : {}),
    ...(o.maxFaces !== undefined ? { maxFaces: o.maxFaces } : {}),
    ...(o.quiet ? {} : { onMessage: (m: string) => err.write(`${m}\n`) }),
  });
  let text = '';
  try {
    const results: Array<{ photo: string; faces: Face[] }> = [];
    for (const p of photos.map((x) => resolve(x))) {
      try {
        results.push({ photo: p, faces: await pipe.faces(p, { embed: o.embedding !== false }) });
      } catch (e) {
        if (e instanceof QuantFaceError) throw new QuantFaceError(e.code, e.message.includes(p) ? e.message : `${p}: ${e.message}`, { cause: e, path: p });
        throw e;
      }
    }
    if (o.json) {
      const js = results.map(({ photo, faces }) => ({
        photo,
        faces: faces.map((f) => ({
          box: { x: r2(f.box.x), y: r2(f.box.y), width: r2(f.box.width), height: r2(f.box.height) },
          score: f7(f.score),
          landmarks5: f.landmarks5.map(([x, y]) => [r2(x), r2(y)]),
          landmarks68: f.landmarks68.map(([x, y]) => [r2(x), r2(y)]),
          ...(o.embedding !== false ? { embedding: Array.from(f.embedding, f7) } : {}),
        })),
      }));
      text = JSON.stringify(photos.length === 1 ? js[0] : js) + '\n';
    } else {
      for (const { photo, faces } of results) {
        text += `${photo}: ${faces.length} face${faces.length === 1 ? '' : 's'}\n`;
        faces.forEach((f, i) => {
          const b = f.box;
          text += `  ${i + 1}. box ${b.x.toFixed(1)},${b.y.toFixed(1)} ${b.width.toFixed(1)}x${b.height.toFixed(1)}  score ${f.score.toFixed(3)}  eyes (${f.landmarks5[0]!.map((v) => v.toFixed(1)).join(',')}) (${f.landmarks5[1]!.map((v) => v.toFixed(1)).join(',')})  nose (${f.landmarks5[2]!.map((v) => v.toFixed(1)).join(',')})${f.embedding.length ? `  embedding ${f.embedding.length}-D` : ''}\n`;
        });
      }
    }
    if (o.draw) await drawFaces(results[0]!.photo, results[0]!.faces, resolve(o.draw));
    out.write(text);
    return text;
  } finally {
    await pipe.dispose();
  }
}

/** Adds the `faces` subcommand. */
export function register(program: Command): void {
  program
    .command('faces')
    .description('find the faces in photos: boxes, scores, 5 and 68 landmarks, embeddings (detector + landmarks + alignment + recogniser on the runtime)')
    .argument('<photos...>', 'photo files (JPEG, PNG, WebP, ...)')
    .option('--json', 'print JSON (one object per photo, with embeddings)')
    .option('--no-embedding', 'detect and landmark only')
    .option('--detector <file>', 'face detector: ONNX, or the int8 .qfm of `quantface quantize-pipeline` (default: faceplugin fr_detect.onnx, fetched into the cache)')
    .option('--landmark-model <file>', '68-point landmark net: ONNX or int8 .qfm (default: faceplugin fr_landmark.onnx)')
    .option('-m, --model <file>', 'recogniser (.qfm student, ONNX, ...; default: faceplugin fr_feature.onnx)')
    .option('--threads <n>', 'native threads', intArg('--threads', 1))
    .option('--score-threshold <x>', 'detector score threshold (default 0.65)', numberArg('--score-threshold', 'non-negative'))
    .option('--min-face-size <px>', 'smallest face kept, pixels (default 20)', numberArg('--min-face-size', 'non-negative'))
    .option('--max-faces <n>', 'most faces per photo (default 16)', intArg('--max-faces', 1))
    .option('--draw <file>', 'draw boxes and landmarks onto the photo into this .png / .jpg / .webp file (one photo)')
    .option('-q, --quiet', 'no messages on stderr')
    .action(async (photos: string[], opts: FacesCliOptions) => {
      await facesCommand(photos, opts);
    });
}
