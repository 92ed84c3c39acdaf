// Real face crops (synthetic-faces, ffhq alignment with lib/data, rounded to
// bytes as the runtime feeds them) and a quickly calibrated
// post-training-quantized student of the mobileface teacher: what the
// runtime benches (bench/embed.ts, bench/server-load.ts) and the runtime
// tests (test/fixtures/runtime-faces.ts re-exports this file) run on.
import { existsSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { packageRoot } from '../../lib/binding.js';
import { decodeImage, alignImage } from '../../lib/data/index.js';
import { importTfjsGraphModel } from '../../lib/io/index.js';
import type { ImportedModel } from '../../lib/io/index.js';
import { quantizeModel } from '../../lib/runtime/calibrate.js';

export const FACES_DIR = resolve(packageRoot, '../shared/data/synthetic-faces');
export const TEACHER = resolve(packageRoot, '../shared/models/mobileface/mobileface.json');
export const PER = 112 * 112 * 3;

/** Why the real-data tests cannot run here (undefined when they can). */
export function missingData(): string | undefined {
  if (!existsSync(FACES_DIR)) return `no face images at ${FACES_DIR}`;
  if (!existsSync(TEACHER)) return `no teacher model at ${TEACHER}`;
  return undefined;
}

export function faceFiles(n: number): string[] {
  return readdirSync(FACES_DIR).filter((f) => f.endsWith('.jpg')).sort().slice(0, n).map((f) => resolve(FACES_DIR, f));
}

/** n aligned 112x112 RGB crops (ffhq preset) as bytes, rounded half to even. */
export async function faceCrops(n: number, offset = 0): Promise<Uint8Array> {
  const files = readdirSync(FACES_DIR).filter((f) => f.endsWith('.jpg')).sort().slice(offset, offset + n);
  const out = new Uint8Array(n * PER);
  for (let i = 0; i < files.length; i++) {
    const f = alignImage(await decodeImage(resolve(FACES_DIR, files[i]!)), { kind: 'preset', preset: 'ffhq' });
    for (let k = 0; k < PER; k++) {
      const v = f[k]!;
      let r = Math.round(v);
      if (r - v === 0.5 && r % 2 !== 0) r -= 1;
      out[i * PER + k] = r > 255 ? 255 : r > 0 ? r : 0;
    }
  }
  return out;
}

export async function teacher(): Promise<ImportedModel> {
  return importTfjsGraphModel(TEACHER);
}

/** PTQ student of the teacher (W{wb}A{ab}), calibrated on `calib` crops. */
export function student(t: ImportedModel, calib: Uint8Array, wb = 8, ab = 8): ImportedModel {
  return quantizeModel(t, { weightBits: wb, actBits: ab, images: calib, batchSize: 8 });
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>, off = 0, d = a.length): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < d; i++) {
    const x = a[off + i]!;
    const y = b[off + i]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return ab / Math.sqrt(aa * bb);
}

/** Mean and minimum cosine of n rows of d values. */
export function rowCosines(a: ArrayLike<number>, b: ArrayLike<number>, n: number, d: number): { mean: number; min: number } {
  let s = 0;
  let m = 1;
  for (let i = 0; i < n; i++) {
    const c = cosine(a, b, i * d, d);
    s += c;
    m = Math.min(m, c);
  }
  return { mean: s / n, min: m };
}
