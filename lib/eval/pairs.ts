/**
 * LFW-style pairs lists over an image folder.
 *
 * Format (LFW pairs.txt): an optional header `nFolds<TAB>nPerFold`, then
 * lines `name i j` (same person: images i and j of `name`) and
 * `name1 i name2 j` (different people). In LFW each fold is nPerFold same
 * lines followed by nPerFold different lines. Image i of `name` is
 * `<root>/<name>/<name>_<iiii>.jpg` (4-digit, zero-padded).
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { QuantFaceError, ioError } from '../errors.js';

export interface PairsList {
  /** Folder the image paths are relative to. */
  root: string;
  /** Unique image paths (relative to root), in first-use order. */
  images: string[];
  /** For pair p: images[left[p]] and images[right[p]]. */
  left: Int32Array;
  right: Int32Array;
  issame: boolean[];
  /** Header values when present (LFW: 10 folds of 300 + 300). */
  header?: { folds: number; perFold: number };
}

export interface PairsOptions {
  /** Image file extension (default '.jpg'). */
  ext?: string;
  /** Digits of the image number (default 4). */
  digits?: number;
  /**
   * Keep about N pairs (for quick runs). With an LFW header (F folds of P
   * same + P different), each fold keeps its first k same and first k
   * different pairs, k = max(1, floor(N / 2F)), so the folds stay
   * balanced; without a header, the first N pairs.
   */
  limit?: number;
}

/** Path of image `index` of `name`: `name/name_0001.jpg`. */
export function lfwImagePath(name: string, index: number, ext = '.jpg', digits = 4): string {
  return `${name}/${name}_${String(index).padStart(digits, '0')}${ext}`;
}

/** Parses the text of a pairs list. `source` is used in error messages. */
export function parsePairs(textIn: string, root: string, options: PairsOptions = {}, source = 'pairs list'): PairsList {
  const ext = options.ext ?? '.jpg';
  const digits = options.digits ?? 4;
  const lines = textIn.split(/\r?\n/);
  const images: string[] = [];
  const index = new Map<string, number>();
  const left: number[] = [], right: number[] = [];
  const issame: boolean[] = [];
  let header: PairsList['header'];
  let pairSeq = 0;
  const idOf = (p: string) => {
    let k = index.get(p);
    if (k === undefined) { k = images.length; images.push(p); index.set(p, k); }
    return k;
  };
  const num = (s: string, ln: number) => {
    if (!/^\d+$/.test(s)) throw new QuantFaceError('E_FORMAT', `${source}:${ln}: '${s}' is not an image number; lines must be 'name i j' or 'name1 i name2 j'`);
    return Number(s);
  };
  for (let li = 0; li < lines.length; li++) {
    const line = lines[li]!.trim();
    if (!line || line.startsWith('#')) continue;
    const tok = line.split(/\s+/);
    if (header === undefined && issame.length === 0 && tok.length === 2 && /^\d+$/.test(tok[0]!) && /^\d+$/.test(tok[1]!)) {
      header = { folds: Number(tok[0]), perFold: Number(tok[1]) };
      continue;
    }
    if (header && options.limit !== undefined) {
      // position of this pair inside its fold and block (same / different)
      const seq = pairSeq++;
      const inFold = seq % (2 * header.perFold);
      const k = Math.max(1, Math.floor(options.limit / (2 * header.folds)));
      if (inFold % header.perFold >= k) continue;
    } else if (options.limit !== undefined && issame.length >= options.limit) break;
    if (tok.length === 3) {
      const [name, i, j] = tok as [string, string, string];
      left.push(idOf(lfwImagePath(name, num(i, li + 1), ext, digits)));
      right.push(idOf(lfwImagePath(name, num(j, li + 1), ext, digits)));
      issame.push(true);
    } else if (tok.length === 4) {
      const [n1, i, n2, j] = tok as [string, string, string, string];
      left.push(idOf(lfwImagePath(n1, num(i, li + 1), ext, digits)));
      right.push(idOf(lfwImagePath(n2, num(j, li + 1), ext, digits)));
      issame.push(false);
    } else {
      throw new QuantFaceError('E_FORMAT', `${source}:${li + 1}: expected 'name i j' or 'name1 i name2 j', got ${tok.length} fields`);
    }
  }
  if (issame.length === 0) throw new QuantFaceError('E_FORMAT', `${source}: no pairs found`);
  if (header && options.limit === undefined && issame.length !== 2 * header.folds * header.perFold) {
    throw new QuantFaceError('E_FORMAT', `${source}: the header announces ${header.folds} folds of ${header.perFold}+${header.perFold} pairs (${2 * header.folds * header.perFold}) but the file holds ${issame.length}`);
  }
  const out: PairsList = { root, images, left: Int32Array.from(left), right: Int32Array.from(right), issame };
  if (header) out.header = header;
  return out;
}

/**
 * Reads a pairs list. `path` is either the pairs file itself or a folder
 * holding `pairs.txt`; image paths are relative to the file's folder.
 */
export async function readPairs(path: string, options: PairsOptions = {}): Promise<PairsList> {
  let file = resolve(path);
  try {
    const st = await stat(file);
    if (st.isDirectory()) file = join(file, 'pairs.txt');
  } catch (e) {
    throw ioError(e, path);
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw ioError(e, file);
  }
  return parsePairs(text, dirname(file), options, basename(file));
}

/** Absolute path of image k of a pairs list. */
export function pairImagePath(list: PairsList, k: number): string {
  return join(list.root, list.images[k]!);
}

/**
 * Reads a 5-point landmarks file: one line per image,
 * `relative/path.jpg x1 y1 ... x5 y5` (extra trailing numbers, e.g. a
 * score, are ignored). Returns path -> 10 numbers.
 */
export async function readLandmarks(path: string): Promise<Map<string, Float64Array>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw ioError(e, path);
  }
  const out = new Map<string, Float64Array>();
  const lines = text.split(/\r?\n/);
  for (let li = 0; li < lines.length; li++) {
    const line = lines[li]!.trim();
    if (!line || line.startsWith('#')) continue;
    const tok = line.split(/\s+/);
    if (tok.length < 11) throw new QuantFaceError('E_FORMAT', `${path}:${li + 1}: expected 'image x1 y1 ... x5 y5', got ${tok.length} fields`);
    const v = new Float64Array(10);
    for (let k = 0; k < 10; k++) {
      const x = Number(tok[k + 1]);
      if (!Number.isFinite(x)) throw new QuantFaceError('E_FORMAT', `${path}:${li + 1}: '${tok[k + 1]}' is not a number`);
      v[k] = x;
    }
    out.set(tok[0]!, v);
  }
  return out;
}
