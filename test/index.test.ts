// The package root (lib/index.ts, published as 'quantface') exports every
// layer a user needs: runtime (servers), distill (the main job), eval, io,
// engine, and the binding.
import t from 'tap';
import * as qf from '../lib/index.js';
import { quantize as distillQuantize } from '../lib/distill/trainer.js';
import { loadModel as runtimeLoadModel } from '../lib/runtime/index.js';

t.test('root exports the runtime, the trainer and the engine', async (t) => {
  t.equal(qf.loadModel, runtimeLoadModel, 'loadModel is the runtime loader');
  t.equal(qf.quantize, distillQuantize, 'quantize is the distillation job');
  for (const name of ['FaceModel', 'similarity', 'verify', 'compileModel', 'loadTeacher', 'generateFaces',
    'runVerification', 'importTfjsGraphModel', 'importOnnxModel', 'toQat', 'mobilefacenet', 'iresnet50',
    'Tensor', 'SGD', 'QuantFaceError', 'binding'] as const) {
    t.ok((qf as Record<string, unknown>)[name] !== undefined, `exports ${name}`);
  }
  t.equal(typeof qf.binding.gemmU8S8S32, 'function', 'the native binding is reachable from the root');
  const s = qf.similarity([1, 0, 0], [1, 0, 0]);
  t.ok(Math.abs(s - 1) < 1e-12, 'similarity of identical vectors is 1');
  t.throws(() => qf.verify([1, 0], [0, 1], Number.NaN), { code: 'E_ARG' }, 'verify refuses a NaN threshold');
  t.equal(qf.verify([1, 0], [0, 1], 0.5).match, false, 'orthogonal embeddings do not match at 0.5');
});
