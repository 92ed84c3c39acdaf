/**
 * A folder of face images (recursive; JPEG, PNG and WebP recognised by
 * their content, not their extension) with an alignment preset, read as
 * aligned size x size RGB crops (default 112x112).
 *
 * Files are listed in a deterministic order (relative paths, '/'-separated,
 * sorted by UTF-16 code units, independent of the locale and of the order
 * the file system returns). Files that are not images, empty or unreadable
 * are skipped and listed in `skipped` with a reason; images that fail to
 * decode are found (and skipped) when a loader prepares the set. A folder
 * without a single candidate image is an `E_DATA` error.
 */
import { open as openFile, readFile, readdir, realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { QuantFaceError, ioError } from '../errors.js';
import { Rng } from '../tensor.js';
import { CROP_PRESETS, type Box, type CropPreset } from './align.js';
import { IDENTITY_PLAN, mixSeed, type GeomSpec } from './augment.js';
import { DataLoader, type LoaderOptions } from './loader.js';
import { handleTask, type RenderResult } from './worker-core.js';

/**
 * How faces are cut out of the images:
 * - `preset`: `none` (the whole square image, resized), `ffhq` (FFHQ /
 *   StyleGAN-aligned images: box x=0.1183 W, y=0.1199 H, side=0.7646 W),
 *   `lfw-funneled` (deep-funneled LFW 250x250: box 58.9, 50.8, 131.7);
 * - `box`: a fixed square box in pixels (continuous coordinates);
 * - `landmarks`: 5 points per image from a file, similarity transform
 *   onto the ArcFace template (scaled to the output size), bilinear warp.
 */
export type DataAlign =
  | { kind: 'preset'; preset: CropPreset }
  | { kind: 'box'; box: Box }
  | {
    kind: 'landmarks';
    /** The landmarks file: lines `relative/path x1 y1 ... x5 y5`. */
    file: string;
    /** Target points for a 112x112 crop (default: ArcFace). */
    template?: readonly (readonly [number, number])[];
    /**
     * Coordinates in the file are continuous (pixel i spans [i, i+1], as in
     * ../shared/data/lfw/landmarks-5pt.txt): 0.5 is subtracted. Default true;
     * false = pixel-index coordinates (cv2 / insightface).
     */
    continuous?: boolean;
  };

/** An alignment as a string (`none`, `ffhq`, `lfw-funneled`, `box:x,y,side`, `landmarks:FILE`) or object. */
export type DataAlignOption = string | DataAlign;

/** Parses an alignment preset string (objects are validated and returned). */
export function parseAlign(spec: DataAlignOption): DataAlign {
  if (typeof spec === 'object' && spec !== null) {
    if (spec.kind === 'preset' && (CROP_PRESETS as readonly string[]).includes(spec.preset)) return spec;
    if (spec.kind === 'box') { checkBox(spec.box, 'align.box'); return spec; }
    if (spec.kind === 'landmarks' && typeof spec.file === 'string' && spec.file) return spec;
    throw new QuantFaceError('E_ARG', `invalid alignment ${JSON.stringify(spec)}; use { kind: 'preset' | 'box' | 'landmarks', ... }`);
  }
  if (typeof spec !== 'string') throw new QuantFaceError('E_ARG', `align must be a string or an object (got ${typeof spec})`);
  const s = spec.trim();
  if ((CROP_PRESETS as readonly string[]).includes(s)) return { kind: 'preset', preset: s as CropPreset };
  if (s.startsWith('box:')) {
    const parts = s.slice(4).split(',').map((p) => p.trim());
    const v = parts.map(Number);
    if (parts.length !== 3 || parts.some((p) => p === '') || !v.every(Number.isFinite)) {
      throw new QuantFaceError('E_ARG', `align '${spec}': expected box:x,y,side with three numbers (pixels), e.g. box:58.9,50.8,131.7`);
    }
    const box = { x: v[0]!, y: v[1]!, side: v[2]! };
    checkBox(box, `align '${spec}'`);
    return { kind: 'box', box };
  }
  if (s.startsWith('landmarks:')) {
    const file = s.slice('landmarks:'.length);
    if (!file) throw new QuantFaceError('E_ARG', `align '${spec}': expected landmarks:FILE`);
    return { kind: 'landmarks', file };
  }
  throw new QuantFaceError('E_ARG', `unknown alignment '${spec}'; use none, ffhq, lfw-funneled, box:x,y,side or landmarks:FILE`);
}

function checkBox(b: Box, what: string): void {
  if (!b || !Number.isFinite(b.x) || !Number.isFinite(b.y) || !(b.side > 0) || !Number.isFinite(b.side)) {
    throw new QuantFaceError('E_ARG', `${what}: the box needs finite x, y and a positive side (got ${JSON.stringify(b)})`);
  }
}

/** The alignment as a short string (for logs and reports). */
export function describeDataAlign(a: DataAlign): string {
  switch (a.kind) {
    case 'preset': return a.preset;
    case 'box': return `box:${a.box.x},${a.box.y},${a.box.side}`;
    case 'landmarks': return `landmarks:${a.file}`;
  }
}

/** A file that is not used, and why. */
export interface SkippedFile {
  /** Path relative to the dataset root ('/'-separated). */
  path: string;
  reason: string;
}

export type ImageFormat = 'jpeg' | 'png' | 'webp';

/** Recognises JPEG, PNG and WebP by their first bytes; null otherwise. */
export function sniffImageFormat(b: Uint8Array): ImageFormat | null {
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && b[4] === 0x0d && b[5] === 0x0a && b[6] === 0x1a && b[7] === 0x0a) return 'png';
  if (b.length >= 12 && ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP') return 'webp';
  return null;
}

function ascii(b: Uint8Array, from: number, to: number): string {
  return String.fromCharCode(...b.subarray(from, to));
}

/** A short description of content that is not a supported image. */
function describeContent(b: Uint8Array): string {
  if (ascii(b, 0, 4) === 'GIF8') return 'a GIF image (unsupported: use JPEG, PNG or WebP)';
  if ((b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a) || (b[0] === 0x4d && b[1] === 0x4d && b[3] === 0x2a)) return 'a TIFF image (unsupported: use JPEG, PNG or WebP)';
  if (ascii(b, 0, 2) === 'BM') return 'a BMP image (unsupported: use JPEG, PNG or WebP)';
  if (ascii(b, 4, 8) === 'ftyp') return `an ISO media file '${ascii(b, 8, 12)}' (AVIF/HEIC/video: unsupported, use JPEG, PNG or WebP)`;
  if (ascii(b, 0, 4) === '%PDF') return 'a PDF document, not an image';
  let text = true;
  for (const c of b) if (c < 9 || (c > 13 && c < 32) || c === 127) { text = false; break; }
  return text ? 'a text file, not an image' : 'not a JPEG, PNG or WebP image';
}

const SNIFF_BYTES = 16;

async function sniffFile(path: string): Promise<{ format: ImageFormat } | { reason: string }> {
  let fh;
  try {
    fh = await openFile(path, 'r');
    const buf = new Uint8Array(SNIFF_BYTES);
    const { bytesRead } = await fh.read(buf, 0, SNIFF_BYTES, 0);
    if (bytesRead === 0) return { reason: 'empty file (0 bytes)' };
    const head = buf.subarray(0, bytesRead);
    const format = sniffImageFormat(head);
    return format ? { format } : { reason: describeContent(head) };
  } catch (e) {
    return { reason: `cannot read: ${ioReason(e)}` };
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

function ioReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENOENT') return 'it vanished while scanning';
  if (code === 'EISDIR') return 'it is a folder';
  return String((e as Error)?.message ?? e);
}

/** Code-unit order: the same on every machine and locale. */
const byCodeUnits = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Scans `root` recursively: candidate images (sorted) and the skipped files. */
export async function scanImageFolder(root: string): Promise<{ files: { path: string; format: ImageFormat }[]; skipped: SkippedFile[] }> {
  let st;
  try {
    st = await stat(root);
  } catch (e) {
    throw ioError(e, root, 'read the image folder');
  }
  if (!st.isDirectory()) throw new QuantFaceError('E_IO', `${root} is not a folder; give the folder that holds the face images`, { path: root });
  const found: string[] = [];
  const skipped: SkippedFile[] = [];
  const seenDirs = new Set<string>();
  const walk = async (abs: string, rel: string): Promise<void> => {
    let real: string;
    try {
      real = await realpath(abs);
    } catch (e) {
      skipped.push({ path: rel || '.', reason: `cannot resolve the folder: ${ioReason(e)}` });
      return;
    }
    if (seenDirs.has(real)) return; // symlink loop or a folder reached twice
    seenDirs.add(real);
    let entries;
    try {
      entries = await readdir(abs, { withFileTypes: true });
    } catch (e) {
      if (!rel) throw ioError(e, root, 'list the image folder');
      skipped.push({ path: rel, reason: `cannot list the folder: ${ioReason(e)}` });
      return;
    }
    entries.sort((a, b) => byCodeUnits(a.name, b.name));
    for (const ent of entries) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      const a = join(abs, ent.name);
      let isDir = ent.isDirectory(), isFile = ent.isFile();
      if (ent.isSymbolicLink()) {
        try {
          const s = await stat(a);
          isDir = s.isDirectory();
          isFile = s.isFile();
        } catch (e) {
          skipped.push({ path: r, reason: `broken symbolic link: ${ioReason(e)}` });
          continue;
        }
      }
      if (isDir) await walk(a, r);
      else if (isFile) found.push(r);
      else skipped.push({ path: r, reason: 'not a regular file' });
    }
  };
  await walk(root, '');
  found.sort(byCodeUnits);
  const results = new Array<{ format: ImageFormat } | { reason: string }>(found.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(16, found.length) }, async () => {
    while (next < found.length) {
      const i = next++;
      results[i] = await sniffFile(join(root, found[i]!));
    }
  }));
  const files: { path: string; format: ImageFormat }[] = [];
  for (let i = 0; i < found.length; i++) {
    const r = results[i]!;
    if ('format' in r) files.push({ path: found[i]!, format: r.format });
    else skipped.push({ path: found[i]!, reason: r.reason });
  }
  skipped.sort((a, b) => byCodeUnits(a.path, b.path));
  return { files, skipped };
}

/** Normalises a path key of a landmarks file ('./a\\b.jpg' -> 'a/b.jpg'). */
function normKey(p: string): string {
  return p.replace(/\\/g, '/').replace(/^(\.\/)+/, '');
}

/**
 * Reads a 5-point landmarks file: one line per image,
 * `relative/path x1 y1 ... x5 y5` (trailing extra numbers ignored, `#`
 * comments and blank lines skipped). Values as written in the file.
 */
export async function readLandmarksFile(path: string): Promise<Map<string, Float64Array>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw ioError(e, path, 'read the landmarks file');
  }
  const out = new Map<string, Float64Array>();
  const lines = text.split(/\r?\n/);
  for (let li = 0; li < lines.length; li++) {
    const line = lines[li]!.trim();
    if (!line || line.startsWith('#')) continue;
    const tok = line.split(/\s+/);
    if (tok.length < 11) throw new QuantFaceError('E_FORMAT', `${path}:${li + 1}: expected 'relative/path x1 y1 ... x5 y5', got ${tok.length} fields`, { path });
    const v = new Float64Array(10);
    for (let k = 0; k < 10; k++) {
      const x = Number(tok[k + 1]);
      if (!Number.isFinite(x)) throw new QuantFaceError('E_FORMAT', `${path}:${li + 1}: '${tok[k + 1]}' is not a number`, { path });
      v[k] = x;
    }
    out.set(normKey(tok[0]!), v);
  }
  return out;
}

export interface ImageFolderOptions {
  /** Alignment preset (default 'none'). */
  align?: DataAlignOption;
  /** Output crop size (default 112; e.g. 150 for face-api's ResNet). */
  size?: number;
}

/** Options of {@link ImageFolder.split}. */
export interface SplitOptions {
  /** Held-out share: a fraction in (0, 1) or a count >= 1. */
  holdout: number;
  /** Seed of the split (default 0). */
  seed?: number;
}

/** A folder of face images, or a subset of one (split / subset). */
export class ImageFolder {
  /** Absolute path of the folder. */
  readonly root: string;
  /** Candidate images, relative paths ('/'-separated), sorted. Indices into this list are the sample ids. */
  readonly files: readonly string[];
  /** Their formats (by content). */
  readonly formats: readonly ImageFormat[];
  /** Files skipped while scanning (only on the folder that was opened; subsets start empty). */
  readonly skipped: readonly SkippedFile[];
  readonly align: DataAlign;
  /** Output crop size. */
  readonly size: number;
  /** The folder this is a subset of, if any. */
  readonly parent: ImageFolder | undefined;
  /** For each file, its index in the opened folder's `files`. */
  readonly sourceIndex: Int32Array;
  /** Per-file landmarks (pixel-index coordinates) for `landmarks` alignment. */
  private readonly lms: (Float64Array | undefined)[] | undefined;

  private constructor(init: {
    root: string; files: string[]; formats: ImageFormat[]; skipped: SkippedFile[]; align: DataAlign; size: number;
    parent?: ImageFolder; sourceIndex: Int32Array; lms?: (Float64Array | undefined)[];
  }) {
    this.root = init.root;
    this.files = Object.freeze(init.files);
    this.formats = Object.freeze(init.formats);
    this.skipped = Object.freeze(init.skipped);
    this.align = init.align;
    this.size = init.size;
    this.parent = init.parent;
    this.sourceIndex = init.sourceIndex;
    this.lms = init.lms;
  }

  /** Scans a folder. Throws E_IO when it cannot be read, E_DATA when it holds no candidate image. */
  static async open(dir: string, options: ImageFolderOptions = {}): Promise<ImageFolder> {
    const align = parseAlign(options.align ?? 'none');
    const size = options.size ?? 112;
    if (!Number.isInteger(size) || size < 8 || size > 4096) throw new QuantFaceError('E_ARG', `size must be an integer in [8, 4096] (got ${String(size)})`);
    const root = resolve(dir);
    const scan = await scanImageFolder(root);
    let files = scan.files;
    const skipped = scan.skipped;
    let lms: (Float64Array | undefined)[] | undefined;
    if (align.kind === 'landmarks') {
      let lmPath = resolve(align.file);
      if (!isAbsolute(align.file)) {
        const inRoot = join(root, align.file);
        const exists = async (p: string) => stat(p).then((s) => s.isFile(), () => false);
        if (!(await exists(lmPath)) && (await exists(inRoot))) lmPath = inRoot;
      }
      const map = await readLandmarksFile(lmPath);
      const off = align.continuous === false ? 0 : 0.5;
      const kept: typeof files = [];
      lms = [];
      for (const f of files) {
        const v = map.get(f.path);
        if (!v) { skipped.push({ path: f.path, reason: `no landmarks for it in ${lmPath}` }); continue; }
        kept.push(f);
        lms.push(off ? v.map((x) => x - off) : v);
      }
      files = kept;
      skipped.sort((a, b) => byCodeUnits(a.path, b.path));
    }
    if (files.length === 0) {
      const what = skipped.length === 0
        ? 'the folder (and its subfolders) is empty'
        : `${skipped.length} file(s) skipped, e.g. ${skipped[0]!.path}: ${skipped[0]!.reason}`;
      throw new QuantFaceError('E_DATA', `no usable JPEG, PNG or WebP face image in ${root} (${what}); point --data at a folder of face images`, { path: root });
    }
    return new ImageFolder({
      root, files: files.map((f) => f.path), formats: files.map((f) => f.format), skipped, align, size,
      sourceIndex: Int32Array.from(files, (_, i) => i), ...(lms ? { lms } : {}),
    });
  }

  /** Number of candidate images. */
  get length(): number {
    return this.files.length;
  }

  /** Absolute path of image `i`. */
  path(i: number): string {
    this.check(i);
    return join(this.root, this.files[i]!);
  }

  /** How image `i` is aligned (landmarks in pixel-index coordinates). */
  geom(i: number): GeomSpec {
    this.check(i);
    const a = this.align;
    switch (a.kind) {
      case 'preset': return { kind: 'preset', preset: a.preset };
      case 'box': return { kind: 'box', box: a.box };
      case 'landmarks': return { kind: 'landmarks', landmarks: Array.from(this.lms![i]!), ...(a.template ? { template: a.template } : {}) };
    }
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.files.length) {
      throw new QuantFaceError('E_ARG', `image index ${String(i)} out of range [0, ${this.files.length})`);
    }
  }

  /** A dataset over some of these images (ids into `files`, kept in ascending order). */
  subset(ids: ArrayLike<number>): ImageFolder {
    const sorted = Array.from(ids).sort((a, b) => a - b);
    for (let k = 0; k < sorted.length; k++) {
      this.check(sorted[k]!);
      if (k && sorted[k] === sorted[k - 1]) throw new QuantFaceError('E_ARG', `subset: image ${sorted[k]} listed twice`);
    }
    if (sorted.length === 0) throw new QuantFaceError('E_DATA', 'subset: no images selected');
    return new ImageFolder({
      root: this.root,
      files: sorted.map((i) => this.files[i]!),
      formats: sorted.map((i) => this.formats[i]!),
      skipped: [],
      align: this.align,
      size: this.size,
      parent: this,
      sourceIndex: Int32Array.from(sorted, (i) => this.sourceIndex[i]!),
      ...(this.lms ? { lms: sorted.map((i) => this.lms![i]) } : {}),
    });
  }

  /**
   * Splits into disjoint train and held-out subsets: a seeded permutation
   * of the (sorted) file list, its first k images held out. The same seed
   * and files give the same split.
   */
  split(options: SplitOptions): { train: ImageFolder; holdout: ImageFolder } {
    const n = this.files.length;
    const h = options?.holdout;
    if (typeof h !== 'number' || !Number.isFinite(h) || h <= 0 || (h >= 1 && !Number.isInteger(h))) {
      throw new QuantFaceError('E_ARG', `split: holdout must be a fraction in (0, 1) or a whole count >= 1 (got ${String(h)})`);
    }
    if (n < 2) throw new QuantFaceError('E_DATA', `split: ${n} image(s) cannot be split into train and held-out sets`);
    const k = Math.min(n - 1, Math.max(1, h < 1 ? Math.round(h * n) : h));
    const rng = new Rng(mixSeed(options.seed ?? 0, 0x73706c74 /* 'splt' */));
    const perm = Array.from({ length: n }, (_, i) => i);
    rng.shuffle(perm);
    return { train: this.subset(perm.slice(k)), holdout: this.subset(perm.slice(0, k)) };
  }

  /**
   * Decodes and aligns image `i` on this thread (no augmentation), into
   * `out` at `offset` (allocated if absent). Throws E_IO / E_FORMAT when
   * the image cannot be read.
   */
  async read(i: number, out?: Float32Array, offset = 0): Promise<Float32Array> {
    const per = this.size * this.size * 3;
    const dst = out ?? new Float32Array(per);
    if (dst.length < offset + per) throw new QuantFaceError('E_SHAPE', `read: output holds ${dst.length} values, needs ${offset + per}`);
    const { result } = await handleTask({ type: 'render', size: this.size, items: [{ a: { file: i, path: this.path(i), geom: this.geom(i) }, planA: IDENTITY_PLAN }] });
    const r = result as RenderResult;
    if (r.failed.length) {
      throw new QuantFaceError('E_FORMAT', `cannot use image ${this.path(i)}: ${r.failed[0]!.reason}`, { path: this.path(i) });
    }
    dst.set(r.data, offset);
    return dst;
  }

  /** A batch loader over this set (see {@link DataLoader}). */
  loader(options: LoaderOptions): DataLoader {
    return new DataLoader(this, options);
  }
}
