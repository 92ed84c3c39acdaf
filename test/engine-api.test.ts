// Small public-API guarantees the io layer relies on: lib/nn re-exports the
// import ops, Graph names its outputs publicly (outputNames), Graph and
// Sequential insert a node after another (insertAfter, what
// addInputQuantizers uses), and toQat puts an output quantizer on Clamp /
// ReLU6 exactly as on ReLU.
import t from 'tap';
import * as nn from '../lib/nn/index.js';
import * as ops from '../lib/nn/import-ops.js';
import * as root from '../lib/index.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { Graph, Sequential, Conv2d, ReLU, Add, Clamp, noGrad, type Module } from '../lib/nn/index.js';
import { QuantFaceError } from '../lib/errors.js';
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

const argError = (message: RegExp) => ({ constructor: QuantFaceError, code: 'E_ARG', message });

function forwardCopy(m: Module, x: FTensor): Float32Array {
  return noGrad(() => Float32Array.from(m.forward(x).data as Float32Array));
}

t.test('Graph.insertAfter', async (t) => {
  // conv1 feeds relu and the add (fan-out); insert a clamp after conv1.
  const g = new Graph()
    .add('conv1', new Conv2d(3, 4, 3, { padding: 1, rng }))
    .add('relu', new ReLU())
    .add('add', new Add(), ['relu', 'conv1']);
  t.equal(g.insertAfter('conv1', 'clip', new Clamp(-0.5, 0.5)), g, 'returns the graph');
  t.same(
    g.nodeList.map((n) => [n.name, n.inputs]),
    [['conv1', ['input']], ['clip', ['conv1']], ['relu', ['clip']], ['add', ['relu', 'clip']]],
    'the new node follows conv1 and both consumers of conv1 read it'
  );
  t.same([...g.namedChildren()].map(([n]) => n), ['conv1', 'clip', 'relu', 'add'], 'children (state-dict order) follow the nodes');
  t.same(g.outputNames, ['add'], 'output unchanged');
  // The same graph built directly computes the same thing.
  const direct = new Graph()
    .add('conv1', g.getChild('conv1')!.clone())
    .add('clip', new Clamp(-0.5, 0.5), 'conv1')
    .add('relu', new ReLU(), 'clip')
    .add('add', new Add(), ['relu', 'clip']);
  t.equal(g.describe(), direct.describe(), 'same structure as the graph built directly');
  const x = Tensor.randn([2, 5, 5, 3], rng) as FTensor;
  t.same(forwardCopy(g, x), forwardCopy(direct, x), 'forward identical to the graph built directly');
  g.train();
  direct.train();
  const gy = g.forward(x);
  const dy = direct.forward(x);
  t.same(Array.from(gy.data), Array.from(dy.data), 'training forward identical');
  const go = Tensor.randn(gy.shape, rng) as FTensor;
  const gg = g.backward(go) as FTensor;
  const dg = direct.backward(go) as FTensor;
  t.same(Array.from(gg.data), Array.from(dg.data), 'input gradient identical');
  t.same(Array.from((g.getChild('conv1') as Conv2d).weight.grad!.data), Array.from((direct.getChild('conv1') as Conv2d).weight.grad!.data), 'weight gradient identical');

  // The output moves to the new node: explicit output, implicit output (the last node), output on a graph input.
  const e = new Graph().add('a', new ReLU()).add('b', new ReLU()).output('a');
  e.insertAfter('a', 'a2', new ReLU());
  t.same(e.outputNames, ['a2'], 'explicit output: now the new node');
  t.same(e.nodeList.map((n) => [n.name, n.inputs]), [['a', ['input']], ['a2', ['a']], ['b', ['a2']]], 'consumer of a rewired');
  const last = new Graph().add('a', new ReLU()).add('b', new ReLU());
  last.insertAfter('b', 'b2', new ReLU());
  t.same(last.outputNames, ['b2'], 'implicit output after the last node: the new node');
  last.insertAfter('a', 'a2', new ReLU());
  t.same(last.outputNames, ['b2'], 'inserting elsewhere leaves the output');
  const io = new Graph().add('a', new ReLU()).output('input');
  io.insertAfter('input', 'pre', new ReLU());
  t.same(io.outputNames, ['pre'], 'output on the graph input: now the new node');

  // After a graph input: the new node runs first and the input's consumers read it.
  const two = new Graph(['x', 'y']).add('p', new ReLU(), 'x').add('s', new Add(), ['p', 'y']).add('t', new Add(), ['s', 'y']);
  two.insertAfter('y', 'yq', new Clamp(-1, 1));
  t.same(two.nodeList.map((n) => [n.name, n.inputs]), [['yq', ['y']], ['p', ['x']], ['s', ['p', 'yq']], ['t', ['s', 'yq']]], 'after a graph input');
  const twoDirect = new Graph(['x', 'y']).add('yq', new Clamp(-1, 1), 'y').add('p', new ReLU(), 'x').add('s', new Add(), ['p', 'yq']).add('t', new Add(), ['s', 'yq']);
  const a = Tensor.randn([1, 3, 3, 2], rng) as FTensor;
  const b = Tensor.randn([1, 3, 3, 2], rng) as FTensor;
  t.same(noGrad(() => Array.from(two.forward(a, b).data)), noGrad(() => Array.from(twoDirect.forward(a, b).data)), 'forward identical (two inputs)');

  // Errors, and a refused insert changes nothing.
  const before = g.describe();
  t.throws(() => g.insertAfter('nope', 'q', new ReLU()), argError(/unknown node nope/), 'unknown existing node');
  t.throws(() => g.insertAfter('conv1', 'relu', new ReLU()), argError(/duplicate name relu/), 'new name taken by a node');
  t.throws(() => g.insertAfter('conv1', 'input', new ReLU()), argError(/duplicate name input/), 'new name taken by a graph input');
  t.throws(() => g.insertAfter('conv1', 'q', g.getChild('relu')!), argError(/reuses a module instance/), 'module instance already in the graph');
  t.throws(() => g.insertAfter('conv1', 'q', new Add()), argError(/takes 2 inputs, needs 1/), 'a node with more than one input');
  t.equal(g.describe(), before, 'refused inserts leave the graph as it was');
  t.same([...g.namedChildren()].map(([n]) => n), ['conv1', 'clip', 'relu', 'add'], 'and its children');
});

t.test('Sequential.insertAfter', async (t) => {
  const s = new Sequential().append(new Conv2d(3, 4, 1, { rng }), 'conv').append(new ReLU(), 'relu');
  t.equal(s.insertAfter('conv', 'clip', new Clamp(-1, 1)), s, 'returns the container');
  t.same([...s.namedChildren()].map(([n]) => n), ['conv', 'clip', 'relu'], 'inserted right after conv');
  const direct = new Sequential().append(s.getChild('conv')!.clone(), 'conv').append(new Clamp(-1, 1), 'clip').append(new ReLU(), 'relu');
  const x = Tensor.randn([1, 4, 4, 3], rng) as FTensor;
  t.same(forwardCopy(s, x), forwardCopy(direct, x), 'forward identical to the container built directly');
  s.insertAfter('relu', 'end', new ReLU());
  t.same([...s.namedChildren()].map(([n]) => n), ['conv', 'clip', 'relu', 'end'], 'after the last child');
  t.throws(() => s.insertAfter('nope', 'q', new ReLU()), argError(/no child nope/), 'unknown child');
  t.throws(() => s.insertAfter('conv', 'relu', new ReLU()), argError(/duplicate child name relu/), 'duplicate name');
  t.throws(() => s.insertAfter('conv', 'q', s.getChild('relu')!), argError(/already a child/), 'module instance already a child');
  t.same([...s.namedChildren()].map(([n]) => n), ['conv', 'clip', 'relu', 'end'], 'refused inserts change nothing');
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
