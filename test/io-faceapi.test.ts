// face-api's ResNet descriptor rebuilt in the engine (lib/models/faceapi-resnet.ts,
// loaded by lib/io/faceapi.ts) against a TF.js re-implementation of
// face-api's own forward pass (its FaceRecognitionNet.forwardInput,
// convLayer, residualLayer and scaleLayer, written with tfjs ops), on
// random inputs and real faces; bad manifests give stable error codes.
import t from 'tap';
import { readFile, writeFile, mkdtemp, rm, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadFaceApiResNet } from '../lib/io/faceapi.js';
import { FaceApiResNet } from '../lib/models/faceapi-resnet.js';
import { preprocess } from '../lib/io/model-info.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { noGrad } from '../lib/nn/index.js';
import { isQuantFaceError } from '../lib/errors.js';
import { shared, tfCpu, loadFaces, compareRows } from './fixtures/io/helpers.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 150);
const manifest = shared('models', 'faceapi-resnet', 'face_recognition_model-weights_manifest.json');

// ---- face-api's forward, as its source computes it, with tfjs ops ----
type W = Record<string, tf.Tensor>;
function convLayer(x: tf.Tensor4D, w: W, p: string, strides: [number, number], relu: boolean, padding: 'valid' | 'same' = 'same'): tf.Tensor4D {
  let out: tf.Tensor4D = tf.conv2d(x, w[`${p}/conv/filters`] as tf.Tensor4D, strides, padding);
  out = tf.add(out, w[`${p}/conv/bias`]!) as tf.Tensor4D;
  out = tf.add(tf.mul(out, w[`${p}/scale/weights`]!), w[`${p}/scale/biases`]!) as tf.Tensor4D;
  return (relu ? tf.relu(out) : out) as tf.Tensor4D;
}
const conv = (x: tf.Tensor4D, w: W, p: string): tf.Tensor4D => convLayer(x, w, p, [1, 1], true);
const convNoRelu = (x: tf.Tensor4D, w: W, p: string): tf.Tensor4D => convLayer(x, w, p, [1, 1], false);
const convDown = (x: tf.Tensor4D, w: W, p: string): tf.Tensor4D => convLayer(x, w, p, [2, 2], true, 'valid');
function residual(x: tf.Tensor4D, w: W, p: string): tf.Tensor4D {
  let out = conv(x, w, `${p}/conv1`);
  out = convNoRelu(out, w, `${p}/conv2`);
  return tf.relu(tf.add(out, x)) as tf.Tensor4D;
}
function residualDown(x: tf.Tensor4D, w: W, p: string): tf.Tensor4D {
  let out = convDown(x, w, `${p}/conv1`);
  out = convNoRelu(out, w, `${p}/conv2`);
  let pooled = tf.avgPool(x, 2, 2, 'valid') as tf.Tensor4D;
  const zeros = tf.zeros<tf.Rank.R4>(pooled.shape);
  const isPad = pooled.shape[3] !== out.shape[3];
  if (pooled.shape[1] !== out.shape[1] || pooled.shape[2] !== out.shape[2]) {
    const sx = [...out.shape] as [number, number, number, number];
    sx[1] = 1;
    out = tf.concat([out, tf.zeros<tf.Rank.R4>(sx)], 1);
    const sy = [...out.shape] as [number, number, number, number];
    sy[2] = 1;
    out = tf.concat([out, tf.zeros<tf.Rank.R4>(sy)], 2);
  }
  pooled = isPad ? tf.concat([pooled, zeros], 3) : pooled;
  return tf.relu(tf.add(pooled, out)) as tf.Tensor4D;
}
/** x: raw RGB 0..255, [n, 150, 150, 3]. */
function faceapiForward(w: W, x: tf.Tensor4D): tf.Tensor2D {
  return tf.tidy(() => {
    const mean = tf.tensor1d([122.782, 117.001, 104.298]);
    const normalized = tf.div(tf.sub(x, mean), tf.scalar(256)) as tf.Tensor4D;
    let out = convDown(normalized, w, 'conv32_down');
    out = tf.maxPool(out, 3, 2, 'valid');
    for (const p of ['conv32_1', 'conv32_2', 'conv32_3']) out = residual(out, w, p);
    out = residualDown(out, w, 'conv64_down');
    for (const p of ['conv64_1', 'conv64_2', 'conv64_3']) out = residual(out, w, p);
    out = residualDown(out, w, 'conv128_down');
    for (const p of ['conv128_1', 'conv128_2']) out = residual(out, w, p);
    out = residualDown(out, w, 'conv256_down');
    for (const p of ['conv256_1', 'conv256_2']) out = residual(out, w, p);
    out = residualDown(out, w, 'conv256_down_out');
    const globalAvg = out.mean([1, 2]) as tf.Tensor2D;
    return tf.matMul(globalAvg, w.fc as tf.Tensor2D);
  });
}

async function tfWeights(path: string): Promise<W> {
  const m = JSON.parse(await readFile(path, 'utf8'));
  const bufs: Buffer[] = [];
  for (const p of m[0].paths) bufs.push(await readFile(join(dirname(path), p)));
  const b = Buffer.concat(bufs);
  return tf.io.decodeWeights(b.buffer.slice(b.byteOffset, b.byteOffset + b.length), m[0].weights);
}

t.test('structure and shapes (no weights needed)', async (t) => {
  const m = new FaceApiResNet();
  t.same(m.inferShape([2, 150, 150, 3]).shape, [2, 128], '150x150 -> 128-d');
  const names = [...m.namedParameters()].map(([n]) => n);
  t.equal(names.length, 117, '117 parameter tensors, as many as the face-api manifest');
  t.ok(names.includes('conv256_down_out.conv2.scale.bias') && names.includes('fc.weight'));
  t.ok(m.getChild('conv256_down')!.getChild('pad') && m.getChild('conv256_down_out')!.getChild('pad'), 'the last two down blocks pad their conv branch (3->4 and 1->2)');
  t.notOk(m.getChild('conv64_down')!.getChild('pad'), 'conv64_down needs no padding (17 = 17)');
  let code = '';
  try {
    m.forward(Tensor.zeros([1, 112, 112, 3]));
  } catch (e) {
    code = isQuantFaceError(e) ? e.code : String(e);
  }
  t.equal(code, 'E_SHAPE', 'a 112x112 input is refused with E_SHAPE');
  t.equal(m.info.preprocessing.normalize === 'raw' ? 0 : (m.info.preprocessing.normalize.std as number), 256, "face-api's scaling: / 256");
});

t.test('parity with face-api forward (tfjs cpu)', { skip: manifest ? false : '../shared/models/faceapi-resnet is absent' }, async (t) => {
  await tfCpu();
  const m = await loadFaceApiResNet(manifest!);
  t.match(m.info.sha256, /^[0-9a-f]{64}$/, 'teacher hash recorded');
  const w = await tfWeights(manifest!);
  const rng = new Rng(SEED);
  const inputs: [string, Float32Array, number][] = [['random', Tensor.uniform([2, 150, 150, 3], rng, 0, 255).data as Float32Array, 2]];
  if (shared('data', 'synthetic-faces')) inputs.push(['faces', await loadFaces(2, 150), 2]);
  else t.comment('../shared/data/synthetic-faces is absent: real-face parity skipped');
  for (const [label, raw, n] of inputs) {
    const x = preprocess(m.info, raw, n);
    const a = noGrad(() => Float32Array.from(m.forward(x).data));
    const bt = faceapiForward(w, tf.tensor4d(raw, [n, 150, 150, 3]));
    const b = bt.dataSync();
    bt.dispose();
    const r = compareRows(a, b, n);
    t.comment(`faceapi-resnet ${label}: cos ${r.cos.map((c) => c.toFixed(9)).join(' ')}, max |diff| ${r.maxAbs.toExponential(3)}`);
    t.ok(Math.min(...r.cos) >= 0.99999, `${label}: cosine >= 0.99999 per descriptor (min ${Math.min(...r.cos)})`);
  }
  // Trainable teacher: one backward pass gives every parameter a finite gradient.
  m.train();
  m.zeroGrad();
  const y = m.forward(Tensor.randn([1, 150, 150, 3], rng, 0.5) as FTensor);
  m.backward(Tensor.randn(y.shape, rng) as FTensor);
  const ps = m.parameters();
  t.equal(ps.filter((p) => p.grad && p.grad.data.every(Number.isFinite) && p.grad.data.some((v) => v !== 0)).length, ps.length, `all ${ps.length} parameters get a finite, non-zero gradient`);
});

t.test('bad manifests', { skip: manifest ? false : '../shared/models/faceapi-resnet is absent' }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'qf-faceapi-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const j = JSON.parse(await readFile(manifest!, 'utf8'));
  const shard = join(dirname(manifest!), j[0].paths[0]);
  await copyFile(shard, join(dir, j[0].paths[0]));
  const check = async (label: string, mutate: (m: typeof j) => void, code: string, re: RegExp): Promise<void> => {
    const c = JSON.parse(JSON.stringify(j));
    mutate(c);
    await writeFile(join(dir, 'm.json'), JSON.stringify(c));
    try {
      await loadFaceApiResNet(join(dir, 'm.json'));
      t.fail(`${label}: no error`);
    } catch (e) {
      t.ok(isQuantFaceError(e, code as never) && re.test((e as Error).message), `${label}: ${code} (${(e as Error).message.slice(0, 140)})`);
    }
  };
  await check('renamed weight', (c) => (c[0].weights[5].name = 'conv32_1/conv1/conv/bogus'), 'E_FORMAT', /unknown weight/);
  await check('wrong shape', (c) => {
    const w = c[0].weights.find((x: { name: string }) => x.name === 'fc');
    w.shape = [128, 256];
  }, 'E_FORMAT', /fc/);
  await check('missing shard', (c) => (c[0].paths = ['nope.bin']), 'E_IO', /nope\.bin/);
  const full = await readFile(shard);
  await writeFile(join(dir, 'short.bin'), full.subarray(0, 1000));
  await check('truncated shard', (c) => (c[0].paths = ['short.bin']), 'E_FORMAT', /truncated/);
});
