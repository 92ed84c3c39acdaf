// face-api's ResNet descriptor rebuilt in the engine (lib/models/faceapi-resnet.ts,
// loaded by lib/io/faceapi.ts) against @vladmandic/face-api's own
// FaceRecognitionNet (its Node build on plain @tensorflow/tfjs, cpu backend:
// weights loaded by face-api from ../shared/models/faceapi-resnet,
// descriptors from its computeFaceDescriptor), on random inputs, GAN faces
// and real LFW faces; bad manifests give stable error codes.
import t from 'tap';
import { readFile, writeFile, copyFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
// face-api.node-wasm.js: the CommonJS Node build that requires @tensorflow/tfjs
// and @tensorflow/tfjs-backend-wasm (no tfjs-node); it registers cpu and wasm.
import * as faceapi from '@vladmandic/face-api/dist/face-api.node-wasm.js';
import { loadFaceApiResNet } from '../lib/io/faceapi.js';
import { FaceApiResNet } from '../lib/models/faceapi-resnet.js';
import { preprocess } from '../lib/io/model-info.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { noGrad } from '../lib/nn/index.js';
import { isQuantFaceError } from '../lib/errors.js';
import * as tfjs from '@tensorflow/tfjs';
import { shared, tfCpu, loadFaces, loadLfwFaces, compareRows } from './fixtures/io/helpers.js';
import { tempDir } from './fixtures/tmp.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 150);
const manifest = shared('models', 'faceapi-resnet', 'face_recognition_model-weights_manifest.json');
const S = 150;

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
  t.equal(m.info.preprocessing.normalize === 'raw' ? 0 : (m.info.preprocessing.normalize.std as number), 255, "face-api's scaling: / 255");
});

t.test("parity with @vladmandic/face-api's own forward (tfjs cpu)", { skip: manifest ? false : '../shared/models/faceapi-resnet is absent' }, async (t) => {
  await tfCpu();
  const tf = faceapi.tf;
  // face-api's CommonJS copy of tfjs and our ESM one share tfjs-core's global engine (and so the cpu backend).
  t.equal((tf as unknown as { engine(): unknown }).engine(), tfjs.engine(), "face-api's tfjs runs on the same engine");
  t.equal(tfjs.getBackend(), 'cpu', 'backend: cpu');
  const net = new faceapi.FaceRecognitionNet();
  await net.loadFromDisk(dirname(manifest!));
  t.ok(net.isLoaded, 'face-api loaded the weights itself (loadFromDisk)');
  const m = await loadFaceApiResNet(manifest!);
  t.match(m.info.sha256, /^[0-9a-f]{64}$/, 'teacher hash recorded');
  const rng = new Rng(SEED);
  const inputs: [string, Float32Array, number][] = [['random', Tensor.uniform([2, S, S, 3], rng, 0, 255).data as Float32Array, 2]];
  if (shared('data', 'synthetic-faces')) inputs.push(['GAN faces', await loadFaces(2, S), 2]);
  else t.comment('../shared/data/synthetic-faces is absent: GAN-face parity skipped');
  const lfw = shared('data', 'lfw');
  if (lfw) inputs.push(['LFW faces', await loadLfwFaces(lfw, 4, S), 4]);
  else t.comment('../shared/data/lfw is absent: real-face parity skipped');
  for (const [label, raw, n] of inputs) {
    const x = preprocess(m.info, raw, n);
    const a = noGrad(() => Float32Array.from(m.forward(x).data));
    // face-api's public entry point: one 150x150x3 tensor per face (raw RGB
    // 0..255; no resize at 150, its own mean subtraction and / 255).
    const faces = Array.from({ length: n }, (_, i) => tf.tensor3d(raw.subarray(i * S * S * 3, (i + 1) * S * S * 3), [S, S, 3]));
    const d = (await net.computeFaceDescriptor(faces)) as Float32Array[];
    for (const f of faces) f.dispose();
    t.equal(d.length, n, `face-api returns ${n} descriptors`);
    const b = new Float32Array(n * 128);
    d.forEach((v, i) => b.set(v, i * 128));
    let peak = 0;
    for (const v of b) peak = Math.max(peak, Math.abs(v));
    const r = compareRows(a, b, n);
    t.comment(`faceapi-resnet vs face-api, ${label}: cos ${r.cos.map((c) => c.toFixed(9)).join(' ')}, max |diff| ${r.maxAbs.toExponential(3)} (max |descriptor| ${peak.toFixed(3)})`);
    t.ok(Math.min(...r.cos) >= 0.99999, `${label}: cosine >= 0.99999 per descriptor (min ${Math.min(...r.cos)})`);
    // Float32 summation order only (measured 2.7e-7); / 256 instead of / 255 gives 3e-4.
    t.ok(r.maxAbs <= 1e-5, `${label}: max |diff| ${r.maxAbs.toExponential(3)} <= 1e-5`);
  }
  net.dispose();
  // Trainable teacher: one backward pass gives every parameter a finite gradient.
  m.train();
  m.zeroGrad();
  const y = m.forward(Tensor.randn([1, 150, 150, 3], rng, 0.5) as FTensor);
  m.backward(Tensor.randn(y.shape, rng) as FTensor);
  const ps = m.parameters();
  t.equal(ps.filter((p) => p.grad && p.grad.data.every(Number.isFinite) && p.grad.data.some((v) => v !== 0)).length, ps.length, `all ${ps.length} parameters get a finite, non-zero gradient`);
});

t.test('bad manifests', { skip: manifest ? false : '../shared/models/faceapi-resnet is absent' }, async (t) => {
  const dir = tempDir(t, 'qf-faceapi-');
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
