/**
 * Training data for quantize(): a folder of face images (any alignment
 * lib/data knows), or `generated:N`, N face images made from the teacher
 * alone (./generate.ts), cached on disk.
 */
import { QuantFaceError } from '../errors.js';
import { ImageFolder, describeDataAlign, parseAlign, type DataAlignOption } from '../data/dataset.js';
import type { Teacher } from './teacher.js';
import { generateFaces, type GenerateOptions, type GenerateProgress } from './generate.js';

export interface OpenDataOptions {
  align?: DataAlignOption;
  /** Crop size (the teacher's input side). */
  size: number;
  /** For generated data. */
  teacher?: Teacher;
  seed?: number;
  /** Cache folder of generated data (default: see generate.ts). */
  cacheDir?: string;
  generate?: Partial<GenerateOptions>;
  onGenerate?: (p: GenerateProgress) => void;
  signal?: AbortSignal;
}

export interface OpenedData {
  folder: ImageFolder;
  kind: 'folder' | 'generated';
  /** Short description for logs and provenance. */
  description: string;
  align: string;
}

/** Parses `generated:N`; null when the spec is something else. */
export function parseGeneratedSpec(spec: string): number | null {
  const m = /^generated(?::(.*))?$/.exec(spec.trim());
  if (!m) return null;
  const n = Number(m[1]);
  if (m[1] === undefined || !/^\d+$/.test(m[1]) || !Number.isSafeInteger(n) || n < 2 || n > 100000)
    throw new QuantFaceError('E_ARG', `data '${spec}': use generated:N with N from 2 to 100000 (the number of face images to make), e.g. generated:256`);
  return n;
}

export async function openData(spec: string | ImageFolder, o: OpenDataOptions): Promise<OpenedData> {
  if (spec instanceof ImageFolder) {
    if (spec.size !== o.size) throw new QuantFaceError('E_ARG', `data: the ImageFolder makes ${spec.size}x${spec.size} crops but the teacher takes ${o.size}x${o.size}`);
    return { folder: spec, kind: 'folder', description: `${spec.root} (${spec.length} images)`, align: describeDataAlign(spec.align) };
  }
  if (typeof spec !== 'string' || !spec.trim()) throw new QuantFaceError('E_ARG', 'data: pass a folder of face images or generated:N');
  const n = parseGeneratedSpec(spec);
  if (n !== null) {
    if (!o.teacher) throw new QuantFaceError('E_ARG', 'data generated:N needs the teacher');
    if (o.align !== undefined && describeDataAlign(parseAlign(o.align)) !== 'none')
      throw new QuantFaceError('E_ARG', `data generated:N makes aligned ${o.size}x${o.size} crops: leave --align out (or none)`);
    const g = await generateFaces(o.teacher, { count: n, seed: o.seed ?? 0, ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}), ...o.generate, ...(o.onGenerate ? { onProgress: o.onGenerate } : {}), ...(o.signal ? { signal: o.signal } : {}) });
    const folder = await ImageFolder.open(g.dir, { align: 'none', size: o.size });
    return { folder, kind: 'generated', description: `generated:${n} (${g.dir}${g.cached ? ', cached' : ''})`, align: 'none' };
  }
  const folder = await ImageFolder.open(spec, { align: o.align ?? 'none', size: o.size });
  return { folder, kind: 'folder', description: `${folder.root} (${folder.length} images)`, align: describeDataAlign(folder.align) };
}
