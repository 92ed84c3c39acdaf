// quantface eval takes .qfm students: loadEmbedder runs them through the
// integer runtime and gives the runtime's embeddings.
import t from 'tap';
import { join } from 'node:path';
import { IResNet } from '../lib/models/index.js';
import { saveQfm } from '../lib/io/index.js';
import { loadModel } from '../lib/runtime/index.js';
import { loadEmbedder } from '../lib/eval/embedder.js';
import { tempDir } from './fixtures/tmp.js';

t.test('a .qfm model is embedded through the runtime', async (t) => {
  const dir = tempDir(t, 'qf-eval-qfm-');
  const m = new IResNet([1, 1, 1, 1], { widths: [8, 16, 16, 32], numFeatures: 32, seed: 3 });
  m.eval();
  const path = join(dir, 'tiny.qfm');
  await saveQfm(m, path);
  const { embedder, assumed } = await loadEmbedder(path);
  t.equal(assumed, true, 'a .qfm without recorded info: the runtime default preprocessing is assumed');
  t.equal(embedder.meta.format, 'qfm');
  t.equal(embedder.dim, 32);
  const per = embedder.inputSize * embedder.inputSize * 3;
  const n = 3;
  let s = 7;
  const crops = Float32Array.from({ length: n * per }, () => ((s = (s * 1103515245 + 12345) >>> 0) % 256));
  const got = await embedder.embed(crops, n);
  t.equal(got.length, n * 32);
  const direct = await loadModel(path);
  for (let i = 0; i < n; i++) {
    const want = direct.embedSync(crops.subarray(i * per, (i + 1) * per)) as Float32Array;
    t.same(Array.from(got.subarray(i * 32, (i + 1) * 32)), Array.from(want), `crop ${i} equals the runtime's embedding`);
  }
  t.ok(got.some((v) => v !== 0), 'non-trivial embeddings');
  await direct.dispose();
  embedder.dispose?.();
});
