// Real aligned face crops from ../shared/data (the data README's box crops,
// resized with sharp) and a per-row comparison metric: what the parity
// benches (bench/qdq-agreement.ts) and the io tests
// (test/fixtures/io/helpers.ts re-exports these) compare models on.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** ../shared/data/synthetic-faces beside the repository. */
export const facesDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../../shared/data/synthetic-faces');

/**
 * n real aligned face crops (RGB 0..255, NHWC [n, size, size, 3]) from the
 * synthetic-faces set, with the FFHQ box crop of ../shared/data/README.md.
 */
export async function loadFaces(n: number, size = 112, dir = facesDir): Promise<Float32Array> {
  const sharp = (await import('sharp')).default; // loaded on first use
  const { readdir } = await import('node:fs/promises');
  const files = (await readdir(dir)).filter((f) => f.endsWith('.jpg')).sort().slice(0, n);
  if (files.length < n) throw new Error(`only ${files.length} images in ${dir}`);
  const out = new Float32Array(n * size * size * 3);
  for (const [i, f] of files.entries()) {
    const img = sharp(join(dir, f));
    const meta = await img.metadata();
    const W = meta.width!;
    const H = meta.height!;
    const left = Math.round(0.1183 * W);
    const top = Math.round(0.1199 * H);
    const side = Math.min(Math.round(0.7646 * W), W - left, H - top);
    const raw = await img.extract({ left, top, width: side, height: side }).resize(size, size).removeAlpha().raw().toBuffer();
    for (let k = 0; k < size * size * 3; k++) out[i * size * size * 3 + k] = raw[k]!;
  }
  return out;
}

/**
 * n real LFW faces (deep-funneled 250x250 JPEGs under dir/<Name>/), one image
 * each of n people spread over the alphabet, cropped with the data README's
 * box (x 58.9, y 50.8, side 131.7, rounded to whole pixels) and resized to
 * size x size: RGB 0..255, NHWC.
 */
export async function loadLfwFaces(dir: string, n: number, size = 112): Promise<Float32Array> {
  const sharp = (await import('sharp')).default;
  const { readdir } = await import('node:fs/promises');
  const people = (await readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  if (people.length < n) throw new Error(`only ${people.length} people in ${dir}`);
  const out = new Float32Array(n * size * size * 3);
  for (let i = 0; i < n; i++) {
    const who = people[Math.floor((i * people.length) / n)]!;
    const file = (await readdir(join(dir, who))).filter((f) => f.endsWith('.jpg')).sort()[0]!;
    const raw = await sharp(join(dir, who, file)).extract({ left: 59, top: 51, width: 132, height: 132 }).resize(size, size).removeAlpha().raw().toBuffer();
    for (let k = 0; k < size * size * 3; k++) out[i * size * size * 3 + k] = raw[k]!;
  }
  return out;
}

/** Per-row cosine similarities and the max |a - b| over everything. */
export function compareRows(a: ArrayLike<number>, b: ArrayLike<number>, rows: number): { cos: number[]; maxAbs: number } {
  const d = a.length / rows;
  const cos: number[] = [];
  let maxAbs = 0;
  for (let r = 0; r < rows; r++) {
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let i = 0; i < d; i++) {
      const x = a[r * d + i]!;
      const y = b[r * d + i]!;
      ab += x * y;
      aa += x * x;
      bb += y * y;
      const e = Math.abs(x - y);
      if (!(e <= maxAbs)) maxAbs = e;
    }
    cos.push(ab / Math.sqrt(aa * bb));
  }
  return { cos, maxAbs };
}
