// Architectures: parameter counts (exact, as insightface / QuantFace define
// them), FLOPs, output shapes, PyTorch state-dict names, and whole-network
// float64 gradient checks on width-reduced variants.
import t, { type Test } from 'tap';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { gradCheck, Conv2d, PReLU, BatchNorm1d, Linear, Module } from '../lib/nn/index.js';
import { iresnet18, iresnet34, iresnet50, iresnet100, mobilefacenet, countParams, countFlops, outputShape } from '../lib/models/index.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 99);
t.comment(`seed ${SEED}`);
const rng = new Rng(SEED);

t.test('parameter counts and FLOPs of the full-size networks', async (tt) => {
  const cases = [
    { name: 'iresnet18', make: iresnet18, params: 24_025_600, gflops: 5.23, emb: 512 },
    { name: 'iresnet50', make: iresnet50, params: 43_590_848, gflops: 12.64, emb: 512 },
    { name: 'iresnet100', make: iresnet100, params: 65_156_160, gflops: 24.21, emb: 512 },
    { name: 'mobilefacenet', make: mobilefacenet, params: 1_003_136, gflops: 0.45, emb: 128 },
  ];
  for (const c of cases) {
    const m = c.make();
    tt.equal(countParams(m), c.params, `${c.name}: ${c.params} parameters`);
    const g = countFlops(m) / 1e9;
    // Convolution and linear MACs only (BN, PReLU and adds excluded): within 2% of the quoted figure.
    tt.ok(Math.abs(g - c.gflops) / c.gflops < 0.02, `${c.name}: ${g.toFixed(3)} GFLOPs ~ ${c.gflops}`);
    tt.same(outputShape(m, [3, 112, 112, 3]), [3, c.emb], `${c.name}: [N, ${c.emb}] embeddings`);
  }
  const r34 = iresnet34();
  tt.equal([...r34.modules()].filter((m) => m instanceof PReLU).length, 1 + 16, 'iresnet34: 16 blocks');
  tt.ok(Math.abs(countParams(r34) / 1e6 - 34.1) < 0.1, `iresnet34: ${countParams(r34)} parameters (~34.1M)`);
});

t.test('state-dict names and layouts follow the PyTorch definitions', async (tt) => {
  const r = iresnet18();
  const sd = r.stateDict();
  const shape = (k: string): number[] | undefined => sd.get(k)?.shape as number[] | undefined;
  tt.same(shape('conv1.weight'), [64, 3, 3, 3], 'stem conv OHWI');
  tt.same(shape('layer1.0.conv1.weight'), [64, 3, 3, 64]);
  tt.same(shape('layer1.0.downsample.0.weight'), [64, 1, 1, 64], 'layer1 downsamples (stride 2)');
  tt.same(shape('layer2.0.downsample.1.running_var'), [128]);
  tt.same(shape('layer4.1.bn3.bias'), [512]);
  tt.same(shape('prelu.weight'), [64]);
  tt.same(shape('fc.weight'), [512, 512 * 49]);
  tt.same(shape('fc.bias'), [512]);
  tt.same(shape('features.running_mean'), [512]);
  tt.notOk(sd.has('layer1.1.downsample.0.weight'), 'no downsample where shapes agree');
  const features = r.getChild('features') as BatchNorm1d;
  tt.notOk(features.weight!.requiresGrad, 'features.weight frozen (arcface_torch)');
  tt.equal(countParams(r, true), 24_025_600 - 512, 'trainable = all but features.weight');
  // arcface_torch init: conv weights N(0, 0.1).
  const w = (r.getChild('conv1') as Conv2d).weight.data.data;
  let ss = 0;
  for (const v of w) ss += v * v;
  const std = Math.sqrt(ss / w.length);
  tt.ok(Math.abs(std - 0.1) < 0.02, `conv init std ${std.toFixed(3)} ~ 0.1`);
  // PyTorch keys per BN: weight, bias, running_mean, running_var (+ num_batches_tracked, not kept).
  const nBn = [...r.modules()].filter((m) => m.constructor.name.startsWith('BatchNorm')).length;
  const nParamTensors = [...r.namedParameters()].length;
  tt.equal(sd.size, nParamTensors + 2 * nBn, 'state dict = parameters + 2 running buffers per BN');

  const m = mobilefacenet();
  const ms = m.stateDict();
  for (const k of [
    'conv1.conv.weight',
    'conv1.bn.running_mean',
    'conv1.prelu.weight',
    'conv2_dw.conv.weight',
    'conv_23.conv.conv.weight',
    'conv_23.conv_dw.conv.weight',
    'conv_23.project.bn.weight',
    'conv_3.model.3.project.conv.weight',
    'conv_4.model.5.conv_dw.prelu.weight',
    'conv_5.model.1.conv.bn.bias',
    'conv_6_sep.conv.weight',
    'output_layer.conv_6_dw.conv.weight',
    'output_layer.conv_6_dw.bn.running_var',
    'output_layer.linear.weight',
    'output_layer.bn.weight',
  ])
    tt.ok(ms.has(k), `MobileFaceNet has ${k}`);
  tt.same(ms.get('conv2_dw.conv.weight')!.shape, [64, 3, 3, 1], 'depthwise weight [c, kh, kw, 1]');
  tt.same(ms.get('output_layer.conv_6_dw.conv.weight')!.shape, [512, 7, 7, 1], 'GDC 7x7 depthwise');
  tt.same(ms.get('output_layer.linear.weight')!.shape, [128, 512]);
  tt.notOk(ms.has('output_layer.linear.bias'), 'GDC linear has no bias');
  tt.same(ms.get('conv_34.conv.conv.weight')!.shape, [256, 1, 1, 64], 'conv_34 expands to 256');
});

t.test('reduced-width variants: shapes and inputs', async (tt) => {
  const m = mobilefacenet({ widthMultiplier: 0.25, inputSize: 32, embeddingSize: 16 });
  tt.same(outputShape(m, [2, 32, 32, 3]), [2, 16], 'GDC kernel follows the input size (2x2 at 32)');
  tt.same(outputShape(mobilefacenet({ inputSize: 48 }), [1, 48, 48, 3]), [1, 128], '3x3 GDC at 48');
  const r = iresnet50({ widths: [8, 8, 16, 16], inputSize: 32, numFeatures: 32 });
  tt.same(outputShape(r, [2, 32, 32, 3]), [2, 32]);
  tt.throws(() => iresnet18({ inputSize: 100 }), /divisible by 16/);
  tt.throws(() => outputShape(iresnet18(), [1, 64, 64, 3]), /Linear: expected \[N, 25088\]/, 'fc size fixed by inputSize');
});

function smallNetCheck(tt: Test, name: string, m: Module, inputShape: number[]): void {
  m.to('f64');
  // Spread BN parameters and PReLU slopes away from their initial values so every term matters.
  for (const mod of m.modules()) {
    if (mod instanceof PReLU) for (let i = 0; i < mod.weight.numel; i++) mod.weight.data.data[i] = 0.1 + 0.5 * rng.uniform();
    if (mod.constructor.name.startsWith('BatchNorm')) {
      const bn = mod as unknown as { weight: { data: FTensor } | null; bias: { data: FTensor } | null };
      if (bn.weight) for (let i = 0; i < bn.weight.data.numel; i++) bn.weight.data.data[i] = 0.5 + rng.uniform();
      if (bn.bias) for (let i = 0; i < bn.bias.data.numel; i++) bn.bias.data.data[i] = 0.3 * rng.normal();
    }
  }
  const x = Tensor.randn(inputShape, rng, 1, 0, 'f64') as FTensor;
  const r = gradCheck(m, [x], { samples: 3, seed: SEED });
  tt.ok(r.checked > 100, `${name}: ${r.checked} coordinates`);
  // The tolerance (1e-3). Entries with non-negligible gradients agree to ~1e-6 (checked below); the worst entries are BatchNorm biases whose
  // true gradient is exactly 0 (a per-channel shift removed by a later train-mode BN), where the differences
  // are round-off of ~1e-9 against the noise floor.
  tt.ok(r.maxRelError < 1e-3, `${name}: whole-network max relative error ${r.maxRelError.toExponential(2)}`, { worst: r.worst });
  const big = Math.max(...r.entries.map((e) => Math.abs(e.analytic)));
  const smooth = r.entries.filter((e) => Math.abs(e.analytic) > 1e-4 * big);
  const worstSmooth = Math.max(...smooth.map((e) => Math.abs(e.analytic - e.numeric) / Math.abs(e.analytic)));
  tt.ok(smooth.length > 0.5 * r.checked && worstSmooth < 1e-5, `${name}: ${smooth.length} entries above 1e-4 of the largest gradient agree to ${worstSmooth.toExponential(2)}`);
  tt.same(r.frozenWithGrad, [], `${name}: frozen parameters untouched`);
}

t.test('whole-network float64 gradient checks (train mode)', async (tt) => {
  smallNetCheck(tt, 'MobileFaceNet x1/16 @16px', mobilefacenet({ widthMultiplier: 1 / 16, inputSize: 16, embeddingSize: 8, blocks: [1, 2, 1], seed: 5 }), [3, 16, 16, 3]);
  smallNetCheck(tt, 'iResNet-18 widths 4/4/8/8 @16px', iresnet18({ widths: [4, 4, 8, 8], inputSize: 16, numFeatures: 8, seed: 6 }), [3, 16, 16, 3]);
  const lin = new Linear(3, 2);
  tt.equal(lin.numParams(), 8, 'sanity: Linear params');
});
