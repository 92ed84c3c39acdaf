import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  embedFlipSum, loadEmbedder, preprocess, resolveModelMeta, saveModelMeta, sidecarPath, validateMeta, META_KIND,
  type ModelMeta,
} from '../lib/eval/embedder.js';
import { ColourCodeEmbedder } from './fixtures/eval/fake-embedder.js';
import { hasMobileface, mobilefacePath, mulberry32, tempDir } from './fixtures/eval/util.js';

import { writeTinyModel, S, D } from './fixtures/eval/tiny-model.js';

function reference(meta: ModelMeta, w: Float32Array, x: Float32Array, n: number): Float64Array {
  const pre = preprocess(meta, x.subarray(0, n * S * S * 3), n).data;
  const out = new Float64Array(n * D);
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) {
    let s = 0;
    for (let k = 0; k < S * S * 3; k++) s += pre[i * S * S * 3 + k]! * w[k * D + d]!;
    out[i * D + d] = s;
  }
  return out;
}

t.test('preprocess applies colour order, mean/std and layout', async (t) => {
  const base = validateMeta({ path: 'm.json', inputSize: 2 }, 'test');
  const x = Float32Array.from({ length: 2 * 2 * 3 }, (_, i) => i * 10);
  t.same(Array.from(preprocess(base, x, 1).data), Array.from(x), 'raw RGB is unchanged');
  const bgr = preprocess({ ...base, preprocessing: { colorOrder: 'BGR', normalize: 'raw' } }, x, 1).data;
  t.same(Array.from(bgr.subarray(0, 6)), [20, 10, 0, 50, 40, 30]);
  const norm = preprocess({ ...base, preprocessing: { colorOrder: 'RGB', normalize: { mean: [0, 10, 20], std: 2 } } }, x, 1).data;
  t.same(Array.from(norm.subarray(0, 3)), [0, 0, 0]);
  t.same(Array.from(norm.subarray(3, 6)), [15, 15, 15]);
  const nchw = preprocess({ ...base, layout: 'NCHW' }, x, 1);
  t.same(nchw.shape, [1, 3, 2, 2]);
  t.same(Array.from(nchw.data), [0, 30, 60, 90, 10, 40, 70, 100, 20, 50, 80, 110]);
  // the old flat metadata form still validates (sidecars written by earlier versions)
  const flat = validateMeta({ path: 'm.json', inputSize: 2, colorOrder: 'BGR', normalize: { mean: 1, std: 2 }, crop: 'ffhq' }, 'test');
  t.same([flat.preprocessing, flat.alignment, flat.inputShape], [{ colorOrder: 'BGR', normalize: { mean: 1, std: 2 } }, { kind: 'box', preset: 'ffhq' }, [2, 2, 3]]);
  t.throws(() => preprocess(base, x, 2), { code: 'E_SHAPE' });
});

t.test('metadata validation and resolution', async (t) => {
  t.throws(() => validateMeta({ path: 'm', colorOrder: 'GBR' as 'RGB' }, 'w'), { code: 'E_FORMAT', message: /colorOrder/ });
  t.throws(() => validateMeta({ path: 'm', normalize: { mean: 1, std: 0 } }, 'w'), { code: 'E_FORMAT', message: /normalize/ });
  t.throws(() => validateMeta({ path: 'm', crop: 'square' as 'none' }, 'w'), { code: 'E_FORMAT', message: /crop/ });
  t.throws(() => validateMeta({}, 'w'), { code: 'E_FORMAT', message: /path/ });
  const dir = tempDir(t, 'emb');
  writeTinyModel(dir, 1);
  const plain = await resolveModelMeta(join(dir, 'tiny.json'));
  t.equal(plain.assumed, true, 'unknown model without metadata: assumed');
  t.same([plain.meta.inputShape[0], plain.meta.outputDim, plain.meta.preprocessing.colorOrder, plain.meta.preprocessing.normalize, plain.meta.name], [S, D, 'RGB', 'raw', 'tiny']);
  t.equal(sidecarPath(join(dir, 'tiny.json')), join(dir, 'tiny.quantface.json'));
  writeFileSync(sidecarPath(join(dir, 'tiny.json')), JSON.stringify({ colorOrder: 'BGR', normalize: { mean: 127.5, std: 127.5 }, inputSize: S, name: 'tiny-bgr' }));
  const side = await resolveModelMeta(join(dir, 'tiny.json'));
  t.equal(side.assumed, false);
  t.same([side.meta.preprocessing.colorOrder, side.meta.name, side.meta.path], ['BGR', 'tiny-bgr', join(dir, 'tiny.json')]);
  // a metadata file pointing at the model (relative path), as eval writes them
  await saveModelMeta({ ...side.meta, path: 'tiny.json', name: 'saved' }, join(dir, 'saved.json'));
  const saved = await resolveModelMeta(join(dir, 'saved.json'));
  t.same([saved.meta.name, saved.meta.path, saved.meta.preprocessing.colorOrder], ['saved', join(dir, 'tiny.json'), 'BGR']);
  writeFileSync(join(dir, 'other.json'), JSON.stringify({ hello: 1 }));
  await t.rejects(resolveModelMeta(join(dir, 'other.json')), { code: 'E_FORMAT', message: new RegExp(META_KIND) });
  writeFileSync(join(dir, 'broken.json'), '{');
  await t.rejects(resolveModelMeta(join(dir, 'broken.json')), { code: 'E_FORMAT', message: /not valid JSON/ });
  await t.rejects(resolveModelMeta(join(dir, 'none.json')), { code: 'E_IO' });
});

t.test('flip-sum embeds each crop with its mirror in one batch', async (t) => {
  const e = new ColourCodeEmbedder('c', 4);
  const crops = new Float32Array(2 * 4 * 4 * 3);
  crops.fill(255, 0, 48); // crop 0 white, crop 1 black
  const f = await embedFlipSum(e, crops, 2);
  t.same(Array.from(f), [10, 10, 10, 0, 0, 0]);
  t.equal(e.calls, 1);
  t.equal(e.images, 4);
  await t.rejects(embedFlipSum(e, new Float32Array(10), 1), { code: 'E_SHAPE' });
});

t.test('a TF.js graph model loaded from disk (two shards, sidecar preprocessing)', async (t) => {
  const dir = tempDir(t, 'tfjs');
  const w = writeTinyModel(dir, 7);
  writeFileSync(sidecarPath(join(dir, 'tiny.json')), JSON.stringify({ colorOrder: 'BGR', normalize: { mean: [120, 110, 100], std: [60, 50, 40] }, inputSize: S }));
  for (const backend of ['wasm', 'cpu'] as const) {
    const { embedder, assumed } = await loadEmbedder(join(dir, 'tiny.json'), { backend });
    t.equal(assumed, false);
    t.equal(embedder.dim, D);
    const rnd = mulberry32(3);
    const n = 3;
    const x = Float32Array.from({ length: n * S * S * 3 }, () => 255 * rnd());
    const y = await embedder.embed(x, n);
    const ref = reference(embedder.meta, w, x, n);
    // float32 matmul of 192 terms of size ~1: 1e-4 relative is ample
    t.ok(Array.from(y).every((v, i) => Math.abs(v - ref[i]!) < 1e-4 * (1 + Math.abs(ref[i]!))), `${backend}: matches the float64 reference`);
    embedder.dispose?.();
  }
  writeFileSync(join(dir, 'w2.bin'), 'short');
  await t.rejects(loadEmbedder(join(dir, 'tiny.json')), { code: 'E_FORMAT' });
});

t.test('the mobileface teacher', { skip: !hasMobileface() ? `mobileface not found at ${mobilefacePath} (../shared/models): skipped` : false }, async (t) => {
  const { embedder, assumed } = await loadEmbedder(mobilefacePath);
  t.equal(assumed, false, 'known model: preprocessing recorded');
  t.same([embedder.dim, embedder.inputSize, embedder.meta.preprocessing.colorOrder, embedder.meta.preprocessing.normalize, embedder.meta.alignment], [256, 112, 'RGB', 'raw', { kind: 'box', preset: 'lfw-funneled' }]);
  const rnd = mulberry32(11);
  const one = 112 * 112 * 3;
  const x = Float32Array.from({ length: 2 * one }, () => 255 * rnd());
  const both = await embedder.embed(x, 2);
  const first = await embedder.embed(x.subarray(0, one), 1);
  t.ok(first.every((v, i) => Math.abs(v - both[i]!) < 1e-3 * (1 + Math.abs(v))), 'batching does not change an embedding');
  t.ok(both.every(Number.isFinite));
  embedder.dispose?.();
});
