// Small public-API guarantees the io layer relies on: lib/nn re-exports the
// import ops, Graph names its outputs publicly (outputNames), and toQat puts
// an output quantizer on Clamp / ReLU6 exactly as on ReLU.
import t from 'tap';
import * as nn from '../lib/nn/index.js';
import * as ops from '../lib/nn/import-ops.js';
import * as root from '../lib/index.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { Graph, Sequential, Conv2d, ReLU, Add, Clamp, noGrad } from '../lib/nn/index.js';
import { toQat, freezeActRanges, quantizers, ActFakeQuant, LsqActFakeQuant } from '../lib/quant/index.js';
import { exportOnnx } from '../lib/io/onnx-export.js';
import { decodeOnnxModel } from '../lib/io/onnx-proto.js';

const rng = new Rng(Number(process.env.QF_TEST_SEED ?? 606));

t.test('lib/nn and lib/index re-export the import ops', async (t) => {
  for (const name of ['Pad', 'Clamp', 'ChannelAffine', 'Multiply', 'Subtract', 'Abs', 'Reshape', 'NhwcToNchw', 'GlobalAvgPool', 'MaxPool2d', 'AvgPool2d', 'f32Tensor'] as const) {
    t.equal(nn[name], ops[name], `nn.${name} is import-ops' ${name}`);
    t.equal((root as Record<string, unknown>)[name], ops[name], `the package root exports ${name}`);
  }
});

t.test('Graph.outputNames', async (t) => {
  const empty = new Graph();
  t.same(empty.outputNames, [], 'no nodes: no outputs');
  const g = new Graph().add('a', new ReLU()).add('b', new ReLU()).add('c', new Add(), ['a', 'b']);
  t.same(g.outputNames, ['c'], 'default: the last node');
  g.output('a');
  t.same(g.outputNames, ['a'], 'output() chooses the node');
  t.same(new Graph().add('a', new ReLU()).output('input').outputNames, ['input'], 'output() may name a graph input');
  t.equal(g.outputNode, 'a', 'outputNode agrees');
});

function withClamp(): Sequential {
  return new Sequential()
    .append(new Conv2d(3, 4, 3, { padding: 1, rng }), 'conv')
    .append(new Clamp(0, 6), 'relu6')
    .append(new Conv2d(4, 4, 1, { rng }), 'pw')
    .append(new Clamp(-1, 1), 'clip')
    .append(new ReLU(), 'relu');
}

t.test('toQat quantizes Clamp / ReLU6 outputs like ReLU', async (t) => {
  const q = toQat(withClamp(), { weightBits: 4, actBits: 4, calibrationSteps: 2 });
  const acts = quantizers(q).filter((z) => z.kind === 'activation').map((z) => z.name);
  t.same(acts, ['relu6.outQuant', 'clip.outQuant', 'relu.outQuant'], 'an output quantizer on each Clamp and on the ReLU');
  t.ok(q.getChild('relu6')!.getChild('outQuant') instanceof ActFakeQuant, 'min/max quantizer by default');
  q.train();
  noGrad(() => {
    for (let i = 0; i < 2; i++) q.forward(Tensor.randn([2, 6, 6, 3], rng) as FTensor);
  });
  freezeActRanges(q);
  q.eval();
  const oq = q.getChild('relu6')!.getChild('outQuant') as ActFakeQuant;
  t.ok(oq.min === 0 && oq.max > 0 && oq.max <= 6, `ReLU6 range observed after the clamp: [${oq.min}, ${oq.max.toFixed(3)}]`);
  // The Clamp's output lies on its 4-bit grid.
  const relu6 = q.getChild('relu6')!;
  const conv = q.getChild('conv')!;
  const y = noGrad(() => relu6.forward(conv.forward(Tensor.randn([1, 6, 6, 3], rng) as FTensor)));
  const s = oq.qparams().scale[0]!;
  const codes = new Set(Array.from(y.data, (v) => Math.round(v / s)));
  t.ok([...y.data].every((v) => Math.abs(v / s - Math.round(v / s)) < 1e-4) && codes.size <= 16, `outputs are multiples of the step (${codes.size} codes <= 16)`);
  // Gradients still flow through the quantized clamp (unmasked STE inside [lo, hi]).
  q.train();
  const x = Tensor.randn([1, 6, 6, 3], rng) as FTensor;
  const out = q.forward(x);
  const gin = q.backward(Tensor.randn(out.shape, rng) as FTensor) as FTensor;
  t.ok(gin.data.some((v) => v !== 0) && gin.data.every(Number.isFinite), 'backward through quantized Clamps');
  // layer overrides and LSQ apply to Clamp too.
  const k = toQat(withClamp(), { layer: (name) => (name === 'clip' ? null : name === 'relu6' ? { actBits: 6 } : undefined) });
  t.notOk(k.getChild('clip')!.getChild('outQuant'), "layer() null keeps a Clamp's output in float");
  t.equal((k.getChild('relu6')!.getChild('outQuant') as ActFakeQuant).bits, 6, 'layer() override sets the Clamp quantizer width');
  t.ok(toQat(withClamp(), { learnableScales: true }).getChild('relu6')!.getChild('outQuant') instanceof LsqActFakeQuant, 'learnableScales: an LSQ quantizer on the Clamp');
  // The QDQ export quantizes after each Clip.
  const on = decodeOnnxModel(exportOnnx(new Sequential().append(q, 'net').append(new nn.Flatten(), 'flat'), { mode: 'qdq', inputShape: [6, 6, 3] })).graph!.node!;
  const after = on.filter((n) => n.op_type === 'QuantizeLinear').map((n) => n.name!.split('.')[1]);
  t.same(after, ['relu6', 'clip', 'relu'], 'QDQ export: QuantizeLinear after both Clamps and the ReLU');
});
