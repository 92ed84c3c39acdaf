/**
 * An evaluation Embedder (lib/eval) over an engine model: a teacher
 * imported into the engine, or a fake-quantized student (QAT model with
 * frozen ranges) in eval mode. The student's forward is the float
 * simulation of its integer arithmetic (weights and activations rounded
 * exactly as the quantizers do), so its accuracy is the quantized model's.
 */
import { resolve } from 'node:path';
import { QuantFaceError } from '../errors.js';
import { Module, noGrad } from '../nn/module.js';
import { bufferPool } from '../nn/pool.js';
import { preprocess, type ModelInfo } from '../io/model-info.js';
import { loadQfm } from '../io/qfm.js';
import type { Embedder, ModelMeta } from '../eval/embedder.js';
import type { CropPreset } from '../eval/align.js';

export interface EngineEmbedderOptions {
  /** Display name (default info.name). */
  name?: string;
  /** Model file, for the report (default '(in memory)'). */
  path?: string;
  /** Default crop for pairs folders (default: the model's recorded alignment, else 'lfw-funneled', as mobileface's). */
  crop?: CropPreset;
  /** Images per forward pass (default 64). */
  chunk?: number;
}

export class EngineEmbedder implements Embedder {
  readonly dim: number;
  readonly inputSize: number;
  readonly meta: ModelMeta;
  readonly model: Module;
  readonly info: ModelInfo;
  private readonly chunk: number;

  constructor(model: Module, info: ModelInfo, o: EngineEmbedderOptions = {}) {
    if (info.inputShape[0] !== info.inputShape[1] || info.inputShape[2] !== 3)
      throw new QuantFaceError('E_SHAPE', `EngineEmbedder: model ${info.name} takes ${info.inputShape.join('x')} input; square RGB input required`);
    this.model = model;
    this.info = info;
    this.dim = info.outputDim;
    this.inputSize = info.inputShape[0];
    this.chunk = o.chunk ?? 64;
    this.meta = {
      ...info,
      name: o.name ?? info.name,
      format: 'engine',
      path: o.path ?? '(in memory)',
      layout: 'NHWC',
      alignment: o.crop ? { kind: 'box', preset: o.crop } : info.alignment ?? { kind: 'box', preset: 'lfw-funneled' },
      source: `quantface engine (${info.format}${info.source ? `; ${info.source}` : ''})`,
    };
  }

  async embed(batch: Float32Array, n: number): Promise<Float32Array> {
    const per = this.inputSize * this.inputSize * 3;
    if (!Number.isInteger(n) || n < 1 || batch.length < n * per) throw new QuantFaceError('E_SHAPE', `EngineEmbedder.embed: ${batch.length} values for ${n} crops of ${this.inputSize}x${this.inputSize}x3`);
    const out = new Float32Array(n * this.dim);
    const wasTraining = this.model.training;
    this.model.eval();
    try {
      for (let i = 0; i < n; i += this.chunk) {
        const m = Math.min(this.chunk, n - i);
        const x = preprocess(this.info, batch.subarray(i * per, (i + m) * per), m);
        noGrad(() => {
          const y = this.model.forward(x);
          out.set(y.data as Float32Array, i * this.dim);
          if (y !== x) bufferPool.release(y);
        });
        // Let other work (progress output, signals) run between chunks.
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      if (wasTraining) this.model.train(true);
    }
    return out;
  }
}

/** An EngineEmbedder over a .qfm file (a student or a float model). */
export async function loadQfmEmbedder(path: string, o: EngineEmbedderOptions = {}): Promise<EngineEmbedder> {
  const l = await loadQfm(path);
  if (!l.info) throw new QuantFaceError('E_FORMAT', `${resolve(path)} records no model info (input size, preprocessing); it cannot be evaluated on face crops`, { path });
  return new EngineEmbedder(l.model, l.info, { path: resolve(path), ...o });
}
