/**
 * Face data: image folders -> aligned, augmented NHWC float32 batches
 * (decoded with sharp in worker threads, seeded and deterministic).
 *
 * ```ts
 * const ds = await ImageFolder.open('faces/', { align: 'ffhq' });
 * const { train, holdout } = ds.split({ holdout: 0.1, seed: 1 });
 * const loader = train.loader({ batchSize: 32, seed: 1, augment: { flip: true, mixup: 0.5 } });
 * await loader.ready();                    // decodes + caches, skips bad files
 * for await (const b of loader.epoch(0)) { // b.data: [n,112,112,3] RGB 0..255
 *   ...
 * }
 * await loader.close();
 * ```
 */
export * from './align.js';
export {
  IDENTITY_PLAN, NO_AUGMENT, applyPhotometric, blendInto, epochOrder, hasGeometricJitter, jitterAffine, jitterBox,
  mixSeed, planSample, renderGeometry, resolveAugment,
  type AugPlan, type AugmentOptions, type GeomSpec, type ResolvedAugment, type SamplePlan,
} from './augment.js';
export {
  ImageFolder, describeDataAlign, parseAlign, readLandmarksFile, scanImageFolder, sniffImageFormat,
  type DataAlignOption, type DataAlign, type ImageFolderOptions, type ImageFormat, type SkippedFile, type SplitOptions,
} from './dataset.js';
export { DataLoader, type Batch, type LoaderInfo, type LoaderOptions } from './loader.js';
export { InlineExecutor, WorkerPool, defaultWorkers, type DataExecutor } from './pool.js';
export type { CacheEntry, CacheMode } from './worker-core.js';
