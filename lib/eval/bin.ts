/**
 * insightface verification sets (.bin: lfw.bin, cfp_fp.bin, agedb_30.bin,
 * calfw.bin, cplfw.bin ...). Each file is a pickle of
 * `(bins, issame_list)`: 2N encoded images (JPEG/PNG bytes, or numpy
 * uint8 arrays holding those bytes) and N booleans (a list or a numpy bool
 * array); pair i is images 2i and 2i+1. Read with the safe unpickler in
 * ./pickle.ts: nothing in the file is executed.
 */
import { readFile } from 'node:fs/promises';
import { QuantFaceError, ioError } from '../errors.js';
import { NdArray, PickleTuple, safeUnpickle, type PickleValue } from './pickle.js';

/** One image of a .bin set. */
export type BinImage =
  /** Encoded image file bytes (JPEG/PNG), decode with sharp. */
  | { kind: 'encoded'; bytes: Uint8Array }
  /** Decoded pixels [height, width, channels] uint8, in the order the file holds them. */
  | { kind: 'raw'; height: number; width: number; channels: number; data: Uint8Array };

export interface BinSet {
  /** 2N images: pair i is images 2i and 2i+1. */
  images: BinImage[];
  /** N labels: true when the pair shows the same person. */
  issame: boolean[];
}

function imageOf(v: PickleValue, i: number, src: string): BinImage {
  if (v instanceof Uint8Array) return { kind: 'encoded', bytes: v };
  if (v instanceof NdArray) {
    if (v.dtype !== 'u1') throw new QuantFaceError('E_FORMAT', `${src}: image ${i} is a numpy ${v.dtype} array; expected uint8 image bytes`);
    if (v.shape.length === 1) return { kind: 'encoded', bytes: v.data };
    if (v.shape.length === 3 && (v.shape[2] === 3 || v.shape[2] === 1)) {
      return { kind: 'raw', height: v.shape[0]!, width: v.shape[1]!, channels: v.shape[2]!, data: v.data };
    }
    throw new QuantFaceError('E_FORMAT', `${src}: image ${i} is a numpy array of shape [${v.shape.join(', ')}]; expected 1-D encoded bytes or [H, W, 3] pixels`);
  }
  throw new QuantFaceError('E_FORMAT', `${src}: image ${i} is not bytes or a numpy uint8 array`);
}

function labelsOf(v: PickleValue, src: string): boolean[] {
  if (v instanceof NdArray) {
    if (v.shape.length !== 1) throw new QuantFaceError('E_FORMAT', `${src}: the label array has shape [${v.shape.join(', ')}]; expected 1-D`);
    return Array.from(v.data, (b) => b !== 0);
  }
  if (Array.isArray(v)) {
    return v.map((x, i) => {
      if (typeof x === 'boolean') return x;
      if (x === 0 || x === 1) return x === 1;
      throw new QuantFaceError('E_FORMAT', `${src}: label ${i} is not a bool`);
    });
  }
  throw new QuantFaceError('E_FORMAT', `${src}: the labels are not a list of bools or a numpy bool array`);
}

/** Parses the bytes of an insightface .bin file. */
export function parseBinSet(buf: Uint8Array, source = '.bin data'): BinSet {
  const root = safeUnpickle(buf, { source });
  if (!(root instanceof PickleTuple || Array.isArray(root)) || root.length !== 2) {
    throw new QuantFaceError('E_FORMAT', `${source}: expected a pickled pair (images, issame_list); this pickle holds something else`);
  }
  const [imgs, labels] = root as PickleValue[];
  if (!Array.isArray(imgs)) throw new QuantFaceError('E_FORMAT', `${source}: the first item is not a list of images`);
  const issame = labelsOf(labels!, source);
  const images = imgs.map((v, i) => imageOf(v, i, source));
  if (images.length !== 2 * issame.length) {
    throw new QuantFaceError('E_FORMAT', `${source}: ${images.length} images for ${issame.length} pairs; expected exactly 2 images per pair`);
  }
  return { images, issame };
}

/** Reads an insightface .bin file (see {@link parseBinSet}). */
export async function readBinSet(path: string): Promise<BinSet> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    throw ioError(e, path);
  }
  return parseBinSet(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), path);
}
