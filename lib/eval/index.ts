/** Face-verification evaluation: metrics, ROC, datasets, alignment, embedders, reports. */
export * from './metrics.js';
export * from './roc.js';
export * from './pairs.js';
export * from './pickle.js';
export * from './bin.js';
export * from './align.js';
export * from './embedder.js';
export * from './verify.js';
export * from './ijb.js';
export * from './report.js';
export * from './run.js';
export { detectPairsLandmarks, type DetectLandmarksOptions, type DetectedLandmarks } from './detect.js';
