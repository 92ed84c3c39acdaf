// Gradient checks (float64, central differences) for the modules imported
// graphs use (lib/nn/import-ops.ts), forward checks against plain loops,
// and a gradient check through a whole imported TF.js graph.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { gradCheck, type Module } from '../lib/nn/index.js';
import { Pad, Clamp, ChannelAffine, Multiply, Subtract, Abs, Reshape, GlobalAvgPool, MaxPool2d, AvgPool2d, NhwcToNchw } from '../lib/nn/import-ops.js';
import { importTfjsGraphModel } from '../lib/io/tfjs.js';
import { GraphBuilder, A, seeded, randArray } from './fixtures/io/helpers.js';
import { tempDir } from './fixtures/tmp.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 777);
t.comment(`seed ${SEED}`);
const rng = new Rng(SEED);
// Analytic vs numeric gradients in float64: agreement to ~1e-8 is expected;
// 1e-6 leaves room for the finite-difference truncation error.
const TOL = 1e-6;

/** Random f64 tensor with no entry within gap of the given kinks. */
function rand64(shape: number[], kinks: number[] = [], gap = 1e-3, std = 1): FTensor {
  const x = Tensor.randn(shape, rng, std, 0, 'f64') as FTensor;
  for (let i = 0; i < x.numel; i++)
    for (const k of kinks) if (Math.abs(x.data[i]! - k) < gap) x.data[i] = k + (x.data[i]! < k ? -gap : gap);
  return x;
}

function check(t: Test, name: string, m: Module, inputs: FTensor[]): void {
  m.to('f64');
  const r = gradCheck(m, inputs, { samples: 24, seed: SEED });
  t.ok(r.maxRelError < TOL, `${name}: max relative error ${r.maxRelError.toExponential(2)} over ${r.checked} coordinates${r.worst ? ` (worst ${r.worst.tensor}[${r.worst.index}])` : ''}`);
  t.same(r.frozenWithGrad, [], `${name}: frozen parameters get no gradient`);
}

t.test('gradient checks', async (t) => {
  check(t, 'Pad (H, W, C, value)', new Pad({ top: 1, bottom: 2, left: 0, right: 1, channelsBefore: 1, channelsAfter: 2, value: 0.5 }), [rand64([2, 3, 4, 3])]);
  check(t, 'Clamp', new Clamp(-0.5, 0.7), [rand64([2, 3, 3, 4], [-0.5, 0.7])]);
  check(t, 'Clamp one-sided', new Clamp(-Infinity, 0.2), [rand64([3, 5], [0.2])]);
  const s = randArray(5, seeded(1), 1, 0.5);
  const b = randArray(5, seeded(2), 1);
  check(t, 'ChannelAffine scale+bias', new ChannelAffine(5, { scale: s, bias: b }), [rand64([2, 3, 2, 5])]);
  check(t, 'ChannelAffine scale only', new ChannelAffine(5, { scale: s }), [rand64([4, 5])]);
  check(t, 'ChannelAffine bias only', new ChannelAffine(5, { bias: b }), [rand64([4, 5])]);
  check(t, 'ChannelAffine scalar', new ChannelAffine(1, { scale: [1.7], bias: [-0.3] }), [rand64([2, 2, 2, 3])]);
  check(t, 'ChannelAffine frozen scale', new ChannelAffine(5, { scale: s, bias: b, trainScale: false }), [rand64([3, 5])]);
  check(t, 'Multiply', new Multiply(), [rand64([2, 3, 4]), rand64([2, 3, 4])]);
  check(t, 'Subtract', new Subtract(), [rand64([2, 7]), rand64([2, 7])]);
  check(t, 'Abs', new Abs(), [rand64([3, 4, 2], [0])]);
  check(t, 'Reshape', new Reshape([-1, 2]), [rand64([2, 3, 2, 2])]);
  check(t, 'NhwcToNchw', new NhwcToNchw(), [rand64([2, 3, 4, 5])]);
  check(t, 'GlobalAvgPool', new GlobalAvgPool(), [rand64([2, 3, 4, 5])]);
  check(t, 'GlobalAvgPool keepDims', new GlobalAvgPool(true), [rand64([2, 3, 4, 5])]);
  check(t, 'MaxPool2d 3x3/2', new MaxPool2d({ kernel: 3, stride: 2 }), [rand64([2, 7, 6, 3])]);
  check(t, 'MaxPool2d padded', new MaxPool2d({ kernel: [2, 3], stride: [2, 1], padding: [1, 1, 0, 1] }), [rand64([1, 5, 5, 2])]);
  check(t, 'AvgPool2d 2x2/2', new AvgPool2d({ kernel: 2 }), [rand64([2, 7, 7, 3])]);
  check(t, 'AvgPool2d padded', new AvgPool2d({ kernel: 3, stride: 2, padding: [1, 1, 1, 1] }), [rand64([1, 6, 5, 2])]);
});

t.test('forward values against plain loops', async (t) => {
  const x = Tensor.randn([2, 3, 4, 3], rng) as FTensor;
  const p = new Pad({ top: 1, bottom: 0, left: 2, right: 1, channelsBefore: 0, channelsAfter: 2, value: -1 }).forward(x);
  t.same(p.shape, [2, 4, 7, 5]);
  let bad = 0;
  for (let n = 0; n < 2; n++)
    for (let y = 0; y < 4; y++)
      for (let xx = 0; xx < 7; xx++)
        for (let c = 0; c < 5; c++) {
          const iy = y - 1;
          const ix = xx - 2;
          const inside = iy >= 0 && iy < 3 && ix >= 0 && ix < 4 && c < 3;
          const want = inside ? x.data[((n * 3 + iy) * 4 + ix) * 3 + c]! : -1;
          if (p.data[((n * 4 + y) * 7 + xx) * 5 + c] !== want) bad++;
        }
  t.equal(bad, 0, 'Pad places values and fills the rest');
  const mp = new MaxPool2d({ kernel: 2 }).forward(Tensor.from(Float32Array.from([1, 5, 2, 0, 3, 4, 9, 8, 7, 6, 1, 2, 0, 0, 3, 4]), [1, 4, 4, 1]));
  t.same([...mp.data], [5, 9, 7, 4], 'MaxPool2d 2x2');
  const ap = new AvgPool2d({ kernel: 3, stride: 1, padding: [1, 1, 1, 1] }).forward(Tensor.from(Float32Array.from([1, 2, 3, 4]), [1, 2, 2, 1]));
  t.same([...ap.data], [2.5, 2.5, 2.5, 2.5], 'AvgPool2d excludes padded cells from the count');
  const cl = new Clamp(0, 6).forward(Tensor.from([-1, 0, 3, 6, 7]));
  t.same([...cl.data], [0, 0, 3, 6, 6], 'ReLU6');
  const tr = new NhwcToNchw().forward(Tensor.from(Float32Array.from([1, 2, 3, 4, 5, 6]), [1, 1, 2, 3]));
  t.same([tr.shape, [...tr.data]], [[1, 3, 1, 2], [1, 4, 2, 5, 3, 6]], 'NhwcToNchw moves channels first');
  t.throws(() => new Clamp(1, 0), /lo <= hi/, 'Clamp refuses lo > hi');
  t.throws(() => new ChannelAffine(3, { scale: [1, 2] }), /2 values for 3 channels/, 'ChannelAffine checks lengths');
  t.throws(() => new Multiply().forward(Tensor.zeros([2, 3]), Tensor.zeros([3, 2])), /differ/, 'Multiply refuses different shapes');
  t.throws(() => new Reshape([4, -1]).forward(Tensor.zeros([2, 3, 3])), /cannot reshape/, 'Reshape refuses a bad target');
});

t.test('gradient check through an imported TF.js graph (f64)', async (t) => {
  const tmp = tempDir(t, 'qf-io-ops-');
  const rnd = seeded(SEED);
  const g = new GraphBuilder();
  const x = g.placeholder('x', [-1, 5, 5, 2]);
  const c1 = g.op('c1', '_FusedConv2D', [x, g.const('w1', [3, 3, 2, 4], randArray(72, rnd, 0.5)), g.const('b1', [4], randArray(4, rnd, 0.2))], { strides: A.ints([1, 2, 2, 1]), padding: A.s('SAME'), data_format: A.s('NHWC'), fused_ops: A.strs(['BiasAdd']), num_args: A.i(1) });
  const r = g.op('p/Relu', 'Relu', [c1]);
  const ab = g.op('p/Abs', 'Abs', [c1]);
  const sb = g.op('p/sub', 'Sub', [c1, ab]);
  const ml = g.op('p/mul', 'Mul', [sb, g.const('p/a', [4], randArray(4, rnd, 0.1, 0.1))]);
  const pr = g.op('p/add', 'Add', [r, ml]);
  const mx = g.op('cl/max', 'Maximum', [pr, g.const('lo', [], [-0.6])]);
  const cl = g.op('cl/min', 'Minimum', [mx, g.const('hi', [], [0.9])]);
  const ax = g.const('axes', [2], [1, 2], { dtype: 'int32' });
  const mean = g.op('mean', 'Mean', [cl, ax], { keep_dims: A.b(false) });
  const mm = g.op('fc', 'MatMul', [mean, g.const('wf', [4, 3], randArray(12, rnd, 0.7))]);
  const af = g.op('aff', 'AddV2', [g.op('affm', 'Mul', [mm, g.const('s', [3], randArray(3, rnd, 0.5, 1))]), g.const('o', [3], randArray(3, rnd, 0.2))]);
  g.op('emb', 'Mul', [af, g.op('r', 'Rsqrt', [g.op('m', 'Maximum', [g.op('su', 'Sum', [g.op('sq', 'Square', [af]), g.const('ax', [1], [-1], { dtype: 'int32' })], { keep_dims: A.b(true) }), g.const('eps', [], [1e-12])])])]);
  const path = await g.write(tmp, 'emb');
  const m = await importTfjsGraphModel(path);
  m.to('f64');
  const xin = Tensor.randn([2, 5, 5, 2], rng, 1, 0, 'f64') as FTensor;
  const res = gradCheck(m, [xin], { samples: 12, seed: SEED });
  t.ok(res.maxRelError < 1e-5, `imported graph: max relative error ${res.maxRelError.toExponential(2)} over ${res.checked} coordinates (worst ${res.worst?.tensor})`);
  t.ok(res.checked >= 40, `checked the input and every parameter tensor (${res.checked} coordinates, ${m.parameters().length} parameter tensors)`);
});
