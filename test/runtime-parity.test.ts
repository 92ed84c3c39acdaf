// Runtime parity: embeddings of the compiled int8 model against the
// fake-quant training forward of the same student (real faces), integer
// activations against the fake-quant grid, W4A4, the float path, small
// MobileFaceNet / iResNet students (BatchNorm before a convolution,
// downsample shortcuts, linear bottlenecks), and .qfm round trips.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { addInputQuantizers, compileModel, engineEmbed, loadModel, quantizeModel } from '../lib/runtime/index.js';
import { toQat } from '../lib/quant/index.js';
import type { CompiledModel } from '../lib/runtime/index.js';
import { saveQfm } from '../lib/io/index.js';
import { MobileFaceNet } from '../lib/models/mobilefacenet.js';
import { IResNet } from '../lib/models/iresnet.js';
import { preprocess } from '../lib/io/model-info.js';
import { noGrad, type Module } from '../lib/nn/module.js';
import type { FTensor } from '../lib/tensor.js';
import { PER, faceCrops, missingData, rowCosines, student, teacher } from './fixtures/runtime-faces.js';
import { tempDir } from './fixtures/tmp.js';

const skip = missingData();
if (skip) t.comment(`skipping runtime parity tests: ${skip}`);

function runCompiled(cm: CompiledModel, crops: Uint8Array, n: number): Float32Array {
  const p = cm.plan(n);
  const arena = cm.newArena(p);
  cm.inputView(p, arena).set(crops.subarray(0, n * PER));
  cm.runSync(p, arena);
  return Float32Array.from(cm.outputView(p, arena));
}

t.test('mobileface W8A8 student: runtime vs fake-quant forward', { skip }, async (t) => {
  const crops = await faceCrops(24);
  const calib = crops.subarray(0, 8 * PER);
  const test = crops.subarray(8 * PER);
  const n = 16;
  const tch = await teacher();
  const s = student(tch, calib);
  const cm = compileModel(s);
  t.equal(cm.report.fp32Convs, 1, 'only the first convolution runs in fp32 (input zero point 127.5)');
  t.equal(cm.report.int8Convs, 17, 'every other convolution runs in int8');
  const ref = engineEmbed(s, test, n);
  const out = runCompiled(cm, test, n);
  const c = rowCosines(out, ref, n, cm.outputDim);
  t.comment(`W8A8 runtime vs fake-quant: mean cosine ${c.mean.toFixed(7)}, min ${c.min.toFixed(7)}`);
  t.ok(c.mean >= 0.999, `mean cosine ${c.mean} >= 0.999`);
  t.ok(c.min >= 0.999, `min cosine ${c.min} >= 0.999`);
  const fp = engineEmbed(tch, test, n);
  const cq = rowCosines(ref, fp, n, cm.outputDim);
  t.ok(c.mean > cq.mean, `the runtime is closer to the fake-quant student (${c.mean.toFixed(6)}) than the student is to its teacher (${cq.mean.toFixed(6)})`);

  // Integer level: every quantized activation of the runtime against the fake-quant forward's grid.
  const g = cm.graph;
  const p = cm.debugPlan(4);
  const arena = cm.newArena(p);
  cm.inputView(p, arena).set(test.subarray(0, 4 * PER));
  cm.runSync(p, arena);
  const env = new Map<number, FTensor>();
  s.eval();
  noGrad(() => {
    env.set(g.input.id, preprocess(s.info, test.subarray(0, 4 * PER), 4) as FTensor);
    for (const nd of g.nodes) env.set(nd.output.id, nd.module.forward(...nd.inputs.map((v) => env.get(v.id)!)).clone() as FTensor);
  });
  let total = 0;
  let off1 = 0;
  let worse = 0;
  for (const v of g.values) {
    const lv = cm.valueOf.get(v);
    if (!lv || lv.repr !== 'u8' || v === g.input) continue;
    const base = p.offsets.get(lv.root)!;
    const ref = env.get(v.id)!.data;
    for (let i = 0; i < ref.length; i++) {
      const q = Math.round(ref[i]! / lv.scale + lv.zp);
      const d = Math.abs(arena[base + i]! - q);
      total++;
      if (d === 1) off1++;
      else if (d > 1) worse++;
    }
  }
  t.comment(`quantized activations: ${total} values, ${off1} one step off, ${worse} further off`);
  t.ok(total > 1e6, 'compared the quantized activations of every layer');
  t.ok(off1 + worse <= total * 1e-4, 'at most 1 in 10^4 activations differ from the fake-quant grid (float summation order)');
});

t.test('mobileface W4A4 student and the approximate-input option', { skip }, async (t) => {
  const crops = await faceCrops(20);
  const calib = crops.subarray(0, 8 * PER);
  const test = crops.subarray(8 * PER);
  const n = 12;
  const tch = await teacher();
  const s4 = student(tch, calib, 4, 4);
  const cm4 = compileModel(s4);
  t.same(cm4.report.weightBits, [4], 'weights widened from 4 bits');
  const c4 = rowCosines(runCompiled(cm4, test, n), engineEmbed(s4, test, n), n, cm4.outputDim);
  t.comment(`W4A4 runtime vs fake-quant: mean cosine ${c4.mean.toFixed(7)}`);
  t.ok(c4.mean >= 0.999, `W4A4 mean cosine ${c4.mean} >= 0.999`);
  const s8 = student(tch, calib);
  const ca = compileModel(s8, { approximateInput: true });
  t.equal(ca.report.fp32Convs, 0, 'approximateInput: the first convolution reads raw bytes in int8');
  const c8 = rowCosines(runCompiled(ca, test, n), engineEmbed(s8, test, n), n, ca.outputDim);
  t.comment(`W8A8 approximate input vs fake-quant: mean cosine ${c8.mean.toFixed(6)}`);
  t.ok(c8.mean > 0.99 && c8.mean < 0.99999, 'approximate input: close, but measurably not exact (border padding)');
});

t.test('float model: runtime fp32 vs the engine forward', { skip }, async (t) => {
  const test = await faceCrops(8, 40);
  const tch = await teacher();
  const cm = compileModel(tch);
  t.equal(cm.report.precision, 'float');
  t.equal(cm.report.int8Convs, 0);
  const out = runCompiled(cm, test, 8);
  const ref = engineEmbed(tch, test, 8);
  const c = rowCosines(out, ref, 8, cm.outputDim);
  t.ok(c.min >= 0.99999, `min cosine ${c.min} >= 0.99999`);
  let maxRel = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]!));
  for (let i = 0; i < ref.length; i++) maxRel = Math.max(maxRel, Math.abs(out[i]! - ref[i]!) / scale);
  t.ok(maxRel < 1e-4, `max difference ${maxRel.toExponential(2)} of the output range (float rounding only)`);
  // precision 'float' on a quantized student runs its float master weights
  const s = student(tch, test);
  const cf = compileModel(s, { precision: 'float' });
  const cfo = runCompiled(cf, test, 8);
  t.ok(rowCosines(cfo, ref, 8, cm.outputDim).min >= 0.99999, "precision 'float' ignores the quantizers");
});

async function smallStudentParity(t: Test, name: string, model: Module, expect: (cm: CompiledModel) => void): Promise<void> {
  const crops = await faceCrops(16, 60);
  const calib = crops.subarray(0, 8 * PER);
  const test = crops.subarray(8 * PER);
  const q = quantizeModel(model, { images: calib, batchSize: 8 });
  const cm = compileModel(q);
  expect(cm);
  const out = runCompiled(cm, test, 8);
  const ref = engineEmbed(q, test, 8);
  const c = rowCosines(out, ref, 8, cm.outputDim);
  t.comment(`${name}: ${cm.report.int8Convs} int8 / ${cm.report.fp32Convs} fp32 convolutions, ${cm.report.luts} tables, ${cm.report.adds} adds; mean cosine ${c.mean.toFixed(7)}`);
  t.ok(c.mean >= 0.999, `${name}: mean cosine ${c.mean} >= 0.999`);
}

t.test('small MobileFaceNet (QuantFace architecture) PTQ student', { skip }, async (t) => {
  const m = new MobileFaceNet({ widthMultiplier: 0.25, blocks: [1, 1, 1], seed: 3 });
  await smallStudentParity(t, 'MobileFaceNet x0.25', m, (cm) => {
    t.equal(cm.report.fp32Convs, 1, 'only the first convolution in fp32');
    t.ok(cm.report.adds >= 3, 'residual adds in the integer domain');
  });
});

t.test('small iResNet PTQ student (BatchNorm before convolutions, downsample, fc)', { skip }, async (t) => {
  const m = new IResNet([1, 1, 1, 1], { widths: [8, 16, 16, 32], numFeatures: 32, seed: 5 });
  // make BatchNorm statistics non-trivial so folding and tables are exercised
  let k = 0;
  for (const [, mod] of m.namedModules()) {
    const b = mod as unknown as { runningMean?: FTensor; runningVar?: FTensor };
    if (b.runningMean && b.runningVar) {
      b.runningMean.data.forEach((_, i, a) => (a[i] = 0.1 * Math.sin(++k)));
      b.runningVar.data.forEach((_, i, a) => (a[i] = 1 + 0.5 * Math.cos(++k)));
    }
  }
  await smallStudentParity(t, 'iResNet tiny', m, (cm) => {
    t.ok(cm.report.luts >= 4, 'BatchNorm on quantized inputs runs as lookup tables');
    t.equal(cm.report.fp32Convs, 1, 'only the first convolution in fp32');
  });
});

t.test('.qfm round trip: the loaded student gives the same embeddings', { skip }, async (t) => {
  const crops = await faceCrops(16, 80);
  const calib = crops.subarray(0, 8 * PER);
  const test = crops.subarray(8 * PER);
  const tch = await teacher();
  const dir = tempDir(t, 'qf-rt-');
  for (const wb of [8, 4]) {
    const s = student(tch, calib, wb, 8);
    const path = join(dir, `s${wb}.qfm`);
    await saveQfm(s, path, { provenance: { notes: { verifyThreshold: 0.3 } } });
    const direct = runCompiled(compileModel(s), test, 8);
    const m = await loadModel(path);
    t.equal(m.threshold, 0.3, 'threshold read from the file');
    t.same(m.report.weightBits, [wb], `packed ${wb}-bit weights used`);
    const loaded = m.embedSync(Array.from({ length: 8 }, (_, i) => test.subarray(i * PER, (i + 1) * PER))) as Float32Array[];
    const flat = new Float32Array(8 * m.dim);
    loaded.forEach((e, i) => flat.set(e, i * m.dim));
    const c = rowCosines(flat, direct, 8, m.dim);
    t.ok(c.min > 0.999999, `W${wb}A8: loaded file vs in-memory student, min cosine ${c.min}`);
    await m.dispose();
  }
});

t.test('addInputQuantizers: where the quantizers go; learned-scale (LSQ) students', { skip }, async (t) => {
  const crops = await faceCrops(16, 100);
  const calib = crops.subarray(0, 8 * PER);
  const test = crops.subarray(8 * PER);
  const tch = await teacher();
  const q = toQat(tch, { calibrationSteps: Infinity });
  const added = addInputQuantizers(q);
  t.same(added, ['stage1_unit1_conv0_0_quant', 'stage2_unit1_conv0_0_quant', 'stage3_unit1_conv0_0_quant', 'stage4_unit1_conv0_0_quant'], 'after each 1x1 convolution that feeds a depthwise one');
  t.same(addInputQuantizers(q), [], 'a second call adds nothing');
  const before = compileModel(toQat(tch, { calibrationSteps: Infinity }));
  t.equal(before.report.fp32Convs, 5, 'without them the depthwise convolutions run in fp32');
  t.ok(before.report.fp32Reasons.some((r) => /no activation quantizer/.test(r)), 'and the report says why');
  // LSQ: learned scales and fixed zero points, W4A4
  const m = new MobileFaceNet({ widthMultiplier: 0.25, blocks: [1, 1, 1], seed: 7 });
  const lsq = quantizeModel(m, { images: calib, batchSize: 8, weightBits: 4, actBits: 4, learnableScales: true });
  const cm = compileModel(lsq);
  t.equal(cm.report.fp32Convs, 1, 'LSQ student: every convolution but the first in int8');
  const c = rowCosines(runCompiled(cm, test, 8), engineEmbed(lsq, test, 8), 8, cm.outputDim);
  t.comment(`LSQ W4A4 MobileFaceNet x0.25: mean cosine ${c.mean.toFixed(7)}`);
  t.ok(c.mean >= 0.999, `LSQ W4A4: mean cosine ${c.mean} >= 0.999`);
});
