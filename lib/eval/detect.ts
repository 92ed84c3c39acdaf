/**
 * `eval --align detect`: 5 landmarks of every image of a pairs list from the
 * face pipeline (detector + 68-point landmark net, lib/runtime/pipeline.ts)
 * instead of a landmarks file; the evaluation then warps them to the
 * template exactly as it warps a landmarks file's points.
 *
 * The subject of an image is the detected face nearest its centre (the LFW
 * convention: its photos often hold a second, background face). An image
 * without a face gets the ArcFace template placed in the lfw-funneled box
 * (a centred crop) and is counted in `missed`.
 */
import sharp from 'sharp';
import { ARCFACE_TEMPLATE, presetBox } from '../data/align.js';
import { loadPipeline, type PipelineOptions } from '../runtime/pipeline.js';
import type { PairsList } from './pairs.js';
import { join } from 'node:path';

export interface DetectLandmarksOptions extends Pick<PipelineOptions, 'detector' | 'landmarks' | 'threads' | 'scoreThreshold' | 'minFaceSize' | 'cacheDir' | 'onMessage'> {
  /** Photos in flight at once (default 4). */
  concurrency?: number;
  onProgress?: (p: { done: number; total: number; seconds: number }) => void;
}

export interface DetectedLandmarks {
  /** Image path (relative to the list's root) -> 10 numbers. */
  landmarks: Map<string, Float64Array>;
  images: number;
  /** Images where no face was found (centred template used). */
  missed: string[];
  /** Images with more than one face. */
  multi: number;
  seconds: number;
}

/** Detects the subject's 5 landmarks in every image of a pairs list. */
export async function detectPairsLandmarks(list: PairsList, o: DetectLandmarksOptions = {}): Promise<DetectedLandmarks> {
  const pipe = await loadPipeline({
    recognizer: null,
    ...(o.detector !== undefined ? { detector: o.detector } : {}),
    ...(o.landmarks !== undefined ? { landmarks: o.landmarks } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.scoreThreshold !== undefined ? { scoreThreshold: o.scoreThreshold } : {}),
    ...(o.minFaceSize !== undefined ? { minFaceSize: o.minFaceSize } : {}),
    ...(o.cacheDir !== undefined ? { cacheDir: o.cacheDir } : {}),
    ...(o.onMessage ? { onMessage: o.onMessage } : {}),
  });
  const t0 = performance.now();
  const landmarks = new Map<string, Float64Array>();
  const missed: string[] = [];
  let multi = 0;
  let done = 0;
  let next = 0;
  const total = list.images.length;
  try {
    const worker = async (): Promise<void> => {
      while (next < total) {
        const rel = list.images[next++]!;
        const path = join(list.root, rel);
        const faces = await pipe.faces(path, { embed: false });
        if (faces.length > 1) multi++;
        const meta = await sharp(path).metadata();
        const swap = (meta.orientation ?? 1) >= 5;
        const W = (swap ? meta.height : meta.width) ?? 0;
        const H = (swap ? meta.width : meta.height) ?? 0;
        let pts: Float64Array;
        if (!faces.length) {
          missed.push(rel);
          const b = presetBox('lfw-funneled', W, H);
          pts = Float64Array.from(ARCFACE_TEMPLATE.flatMap(([x, y]) => [b.x + (x * b.side) / 112, b.y + (y * b.side) / 112]));
        } else {
          const d = (f: (typeof faces)[number]): number => (f.box.x + f.box.width / 2 - W / 2) ** 2 + (f.box.y + f.box.height / 2 - H / 2) ** 2;
          const f = faces.reduce((a, b) => (d(b) < d(a) ? b : a));
          pts = Float64Array.from(f.landmarks5.flat());
        }
        landmarks.set(rel, pts);
        done++;
        o.onProgress?.({ done, total, seconds: (performance.now() - t0) / 1000 });
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, o.concurrency ?? 4) }, () => worker()));
  } finally {
    await pipe.dispose();
  }
  return { landmarks, images: total, missed, multi, seconds: (performance.now() - t0) / 1000 };
}
