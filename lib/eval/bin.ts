/**
 * insightface verification sets (.bin: lfw.bin, cfp_fp.bin, agedb_30.bin,
 * calfw.bin, cplfw.bin ...). Each file is a pickle of
 * `(bins, issame_list)`: 2N encoded images (JPEG/PNG bytes, or numpy
 * uint8 arrays of any shape holding those bytes, e.g. cv2.imencode's (N, 1))
 * and N booleans (a list or a numpy bool
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

/**
 * Whether bytes are a whole encoded image file: a JPEG (FF D8 FF ... FF D9),
 * PNG (signature ... IEND chunk), WebP (RIFF size WEBP), GIF, or BMP (BM and
 * the file size). Head and tail are both checked, so raw pixels that happen
 * to begin like a JPEG are not mistaken for one.
 */
export function isEncodedImage(b: Uint8Array): boolean {
  const n = b.length;
  if (n < 12) return false;
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return b[n - 2] === 0xff && b[n - 1] === 0xd9;
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && b[4] === 0x0d && b[5] === 0x0a && b[6] === 0x1a && b[7] === 0x0a) {
    // the last chunk: length 0, 'IEND', CRC ae 42 60 82
    return n >= 20 && b[n - 8] === 0x49 && b[n - 7] === 0x45 && b[n - 6] === 0x4e && b[n - 5] === 0x44 && b[n - 4] === 0xae && b[n - 3] === 0x42 && b[n - 2] === 0x60 && b[n - 1] === 0x82;
  }
  const u32le = (o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
  if (b[0] === 0x52 && b[1] === 0x49 && b[2] === 0x46 && b[3] === 0x46 && b[8] === 0x57 && b[9] === 0x45 && b[10] === 0x42 && b[11] === 0x50) return u32le(4) + 8 === n;
  if (b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46 && b[3] === 0x38) return b[n - 1] === 0x3b;
  if (b[0] === 0x42 && b[1] === 0x4d) return u32le(2) === n;
  return false;
}

/**
 * One image of the list. A numpy uint8 array is read by what its bytes are,
 * not only by its shape: an array of any shape holding a whole encoded image
 * (cv2.imencode returns shape (N, 1); (N,), (1, N) and others occur) is read
 * like a bytes object; an [H, W, 3] or [H, W, 1] array of other bytes is
 * decoded pixels; a vector-shaped array (every dimension but one of size 1)
 * is taken as encoded bytes and left to the decoder to judge.
 */
function imageOf(v: PickleValue, i: number, src: string): BinImage {
  if (v instanceof Uint8Array) return { kind: 'encoded', bytes: v };
  if (v instanceof NdArray) {
    if (v.dtype !== 'u1') throw new QuantFaceError('E_FORMAT', `${src}: image ${i} is a numpy ${v.dtype} array; expected uint8 image bytes`);
    const vectorLike = v.shape.filter((d) => d !== 1).length <= 1;
    if (vectorLike || isEncodedImage(v.data)) return { kind: 'encoded', bytes: v.data };
    if (v.shape.length === 3 && (v.shape[2] === 3 || v.shape[2] === 1)) {
      return { kind: 'raw', height: v.shape[0]!, width: v.shape[1]!, channels: v.shape[2]!, data: v.data };
    }
    throw new QuantFaceError('E_FORMAT', `${src}: image ${i} is a numpy uint8 array of shape [${v.shape.join(', ')}] that holds neither an encoded image (JPEG/PNG/WebP/GIF/BMP bytes) nor [H, W, 3] pixels`);
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
