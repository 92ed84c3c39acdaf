// Gradient checks for every layer, container and loss: analytic backward vs
// central finite differences, both in float64 (module.to('f64') runs the JS
// reference kernels, so the differences are accurate to ~1e-9 and the
// tolerance can be far tighter than the 1e-3 the issue asks for). Then the
// float32 path (native kernels where the addon has them) is compared with
// the float64 one.
import t, { type Test } from 'tap';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import {
  Module,
  Conv2d,
  Linear,
  BatchNorm1d,
  BatchNorm2d,
  PReLU,
  ReLU,
  Add,
  Identity,
  Flatten,
  Dropout,
  L2Normalize,
  Sequential,
  Graph,
  residual,
  QuantFaceLoss,
  RelationLoss,
  MSELoss,
  gradCheck,
  noGrad,
  kernelSources,
} from '../lib/nn/index.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 20261127);
t.comment(`seed ${SEED}; kernels: ${JSON.stringify(kernelSources())}`);
const rng = new Rng(SEED);

/** Random f64 tensor with no entry within `gap` of 0 (keeps PReLU/ReLU kinks out of the finite differences). */
function rand64(shape: number[], gap = 1e-3): FTensor {
  const x = Tensor.randn(shape, rng, 1, 0, 'f64') as FTensor;
  for (let i = 0; i < x.numel; i++) if (Math.abs(x.data[i]!) < gap) x.data[i] = x.data[i]! < 0 ? -gap : gap;
  return x;
}

// f64 finite differences: truncation ~eps^2, round-off ~1e-16/eps => relative errors ~1e-8 on these sizes.
const TOL = 1e-5;

function check(tt: Test, name: string, m: Module, inputs: FTensor[], opts: Parameters<typeof gradCheck>[2] = {}): void {
  const r = gradCheck(m, inputs, opts);
  tt.ok(r.checked > 0, `${name}: checked ${r.checked} coordinates`);
  tt.ok(r.maxRelError < TOL, `${name}: max relative error ${r.maxRelError.toExponential(2)} < ${TOL}`, { worst: r.worst });
  tt.same(r.frozenWithGrad, [], `${name}: frozen parameters get no gradient`);
}

t.test('Conv2d gradients (f64 vs finite differences)', async (tt) => {
  const cases: { name: string; cin: number; cout: number; k: [number, number]; cfg: ConstructorParameters<typeof Conv2d>[3]; hw: [number, number] }[] = [
    { name: '3x3 s1 p1 bias', cin: 3, cout: 4, k: [3, 3], cfg: { padding: 1, bias: true }, hw: [5, 6] },
    { name: '3x3 s2 p1', cin: 4, cout: 5, k: [3, 3], cfg: { stride: 2, padding: 1 }, hw: [7, 7] },
    { name: 'depthwise 3x3 s2', cin: 6, cout: 6, k: [3, 3], cfg: { stride: 2, padding: 1, groups: 6 }, hw: [7, 5] },
    { name: 'grouped dilated asym pad', cin: 4, cout: 6, k: [3, 2], cfg: { groups: 2, dilation: [2, 1], padding: [1, 0, 2, 1], bias: true }, hw: [6, 5] },
    { name: '1x1 s2', cin: 5, cout: 3, k: [1, 1], cfg: { stride: 2 }, hw: [5, 5] },
    { name: '7x7 valid depthwise (GDC)', cin: 4, cout: 4, k: [7, 7], cfg: { groups: 4 }, hw: [7, 7] },
  ];
  for (const c of cases) {
    const m = new Conv2d(c.cin, c.cout, c.k, { ...c.cfg, rng: rng.fork() }).to('f64');
    check(tt, `Conv2d ${c.name}`, m, [rand64([2, c.hw[0], c.hw[1], c.cin])]);
  }
});

t.test('Linear gradients', async (tt) => {
  check(tt, 'Linear bias', new Linear(7, 5, { rng: rng.fork() }).to('f64'), [rand64([3, 7])]);
  check(tt, 'Linear no bias', new Linear(4, 9, { bias: false, rng: rng.fork() }).to('f64'), [rand64([1, 4])]);
});

function randomizeAffine(bn: BatchNorm1d | BatchNorm2d): void {
  for (let c = 0; c < bn.numFeatures; c++) {
    bn.weight!.data.data[c] = 0.5 + rng.uniform();
    bn.bias!.data.data[c] = rng.normal();
    bn.runningMean.data[c] = rng.normal() * 0.3;
    bn.runningVar.data[c] = 0.5 + rng.uniform();
  }
}

t.test('BatchNorm gradients: train (batch statistics) and eval (running statistics)', async (tt) => {
  const bn2 = new BatchNorm2d(5).to('f64');
  randomizeAffine(bn2);
  check(tt, 'BatchNorm2d train', bn2.train(), [rand64([2, 3, 4, 5])]);
  check(tt, 'BatchNorm2d eval', bn2.eval(), [rand64([2, 3, 4, 5])]);
  const bn1 = new BatchNorm1d(6).to('f64');
  randomizeAffine(bn1);
  check(tt, 'BatchNorm1d train', bn1.train(), [rand64([4, 6])]);
  bn1.freezeAffine();
  check(tt, 'BatchNorm1d train, frozen weight', bn1, [rand64([4, 6])]);
  tt.equal(bn1.weight!.grad, null, 'frozen weight has no gradient');
  tt.not(bn1.bias!.grad, null, 'bias still trained');
  const na = new BatchNorm2d(3, { affine: false }).to('f64');
  check(tt, 'BatchNorm2d affine=false', na, [rand64([3, 2, 2, 3])]);
});

t.test('BatchNorm statistics and running averages', async (tt) => {
  const bn = new BatchNorm2d(2, { momentum: 0.1 });
  const x = Tensor.from(new Float32Array([1, 10, 3, 20, 5, 30, 7, 40]), [1, 2, 2, 2]) as FTensor;
  const y = bn.forward(x).clone();
  // channel 0: values 1,3,5,7 mean 4 var(biased) 5; channel 1: 10..40 mean 25 var 125
  const exp0 = [1, 3, 5, 7].map((v) => (v - 4) / Math.sqrt(5 + 1e-5));
  tt.ok(Math.abs(y.data[0]! - exp0[0]!) < 1e-6 && Math.abs(y.data[6]! - exp0[3]!) < 1e-6, 'normalised with batch statistics');
  tt.ok(Math.abs(bn.runningMean.data[0]! - 0.4) < 1e-6, 'running mean = 0.9*0 + 0.1*4');
  tt.ok(Math.abs(bn.runningVar.data[1]! - (0.9 + 0.1 * (500 / 3))) < 1e-4, 'running var uses the unbiased batch variance');
  bn.eval();
  const ye = bn.forward(x);
  tt.ok(Math.abs(ye.data[0]! - (1 - 0.4) / Math.sqrt(bn.runningVar.data[0]! + 1e-5)) < 1e-5, 'eval uses running statistics');
  tt.throws(() => new BatchNorm1d(3).forward(Tensor.zeros([1, 3])), /more than one value/, 'training with one value per channel is refused');
  tt.throws(() => new BatchNorm2d(3).forward(Tensor.zeros([2, 3])), /expected 4-d/, 'BatchNorm2d wants NHWC');
});

t.test('PReLU, ReLU, Dropout, Flatten, Identity, L2Normalize gradients', async (tt) => {
  const p = new PReLU(4).to('f64');
  for (let c = 0; c < 4; c++) p.weight.data.data[c] = rng.normal();
  check(tt, 'PReLU per channel', p, [rand64([2, 3, 3, 4])]);
  check(tt, 'PReLU shared slope', new PReLU(1, 0.1).to('f64'), [rand64([3, 5])]);
  check(tt, 'ReLU', new ReLU().to('f64'), [rand64([2, 7])]);
  const d = new Dropout(0.3, 5).to('f64');
  check(tt, 'Dropout p=0.3', d, [rand64([4, 9])], { beforeForward: () => d.reseed(11) });
  check(tt, 'Flatten', new Flatten(), [rand64([2, 2, 3, 2])]);
  check(tt, 'Identity', new Identity(), [rand64([3, 2])]);
  check(tt, 'L2Normalize', new L2Normalize(), [rand64([3, 6])]);
});

t.test('Dropout is seeded and inverted', async (tt) => {
  const x = Tensor.full([1000], 1);
  const a = new Dropout(0.25, 3).forward(x).clone();
  const b = new Dropout(0.25, 3).forward(x).clone();
  tt.same(a.toArray(), b.toArray(), 'same seed, same mask');
  const kept = a.toArray().filter((v) => v !== 0);
  tt.ok(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6), 'kept values scaled by 1/(1-p)');
  tt.ok(Math.abs(kept.length / 1000 - 0.75) < 0.05, `keep rate ${kept.length / 1000} ~ 0.75`);
  const c = new Dropout(0.25, 4).forward(x).clone();
  tt.not(c.toArray().join(), a.toArray().join(), 'another seed, another mask');
  const e = new Dropout(0.25, 3).eval();
  tt.equal(e.forward(x), x, 'identity in eval mode');
});

t.test('Add, Sequential, Graph (shortcuts and fan-out) gradients', async (tt) => {
  const add = new Add();
  const r = gradCheck(add, [rand64([2, 3]), rand64([2, 3])]);
  tt.ok(r.maxRelError < TOL, `Add: ${r.maxRelError}`);
  const seq = new Sequential([
    new Conv2d(3, 4, 3, { padding: 1, rng: rng.fork() }),
    new BatchNorm2d(4),
    new PReLU(4),
    new Conv2d(4, 2, 1, { stride: 2, bias: true, rng: rng.fork() }),
  ]).to('f64');
  check(tt, 'Sequential conv-bn-prelu-conv', seq, [rand64([2, 5, 5, 3])]);
  // Residual block with an identity shortcut, as MobileFaceNet's.
  const res = residual(new Sequential([new Conv2d(3, 3, 3, { padding: 1, rng: rng.fork() }), new BatchNorm2d(3)])).to('f64');
  check(tt, 'residual(identity shortcut)', res, [rand64([2, 4, 4, 3])]);
  // Projection shortcut (iResNet downsample) and one tensor read by three nodes.
  const g = new Graph()
    .add('a', new Conv2d(2, 4, 3, { stride: 2, padding: 1, rng: rng.fork() }), 'input')
    .add('b', new Conv2d(2, 4, 1, { stride: 2, rng: rng.fork() }), 'input')
    .add('c', new Conv2d(2, 4, 3, { stride: 2, padding: 1, groups: 2, rng: rng.fork() }), 'input')
    .add('ab', new Add(), ['a', 'b'])
    .add('abc', new Add(), ['ab', 'c'])
    .add('twice', new Add(), ['abc', 'abc'])
    .to('f64');
  check(tt, 'Graph with fan-out and repeated input', g, [rand64([2, 5, 5, 2])]);
  // Two-input graph, one input unused: its gradient is zero.
  const g2 = new Graph(['x', 'y']).add('p', new PReLU(3), 'x').to('f64');
  const x = rand64([2, 3]);
  const yv = rand64([2, 3]);
  g2.forward(x, yv);
  const grads = g2.backward(rand64([2, 3])) as FTensor[];
  tt.equal(grads.length, 2, 'two input gradients');
  tt.ok(grads[1]!.toArray().every((v) => v === 0), 'unused input gets a zero gradient');
  tt.throws(() => new Graph().add('n', new Add(), ['input']), /takes 2 inputs/, 'arity is checked');
  tt.throws(() => new Graph().add('n', new ReLU(), 'nope'), /neither an input nor an earlier node/, 'unknown inputs are refused');
  const shared = new ReLU();
  tt.throws(() => new Graph().add('a', shared).add('b', shared), /reuses a module instance/, 'a module instance is used once');
  tt.throws(() => new Sequential([shared]).append(shared), /already a child/, 'also in Sequential');
});

t.test('RelationLoss value and gradient', async (tt) => {
  const loss = new RelationLoss();
  const n = 5;
  const d = 7;
  const s = rand64([n, d]);
  const te = rand64([n, d]);
  const cos = (x: FTensor, i: number, j: number): number => {
    let a = 0;
    let b = 0;
    let c = 0;
    for (let k = 0; k < d; k++) {
      a += x.data[i * d + k]! * x.data[j * d + k]!;
      b += x.data[i * d + k]! ** 2;
      c += x.data[j * d + k]! ** 2;
    }
    return a / Math.sqrt(b * c);
  };
  // Value: mean over ordered pairs i != j of (cos_s(i, j) - cos_t(i, j))^2, computed directly.
  let want = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) want += (cos(s, i, j) - cos(te, i, j)) ** 2;
  want /= n * (n - 1);
  const L = loss.forward(s, te);
  tt.ok(want > 1e-3 && Math.abs(L - want) < 1e-12, `L = mean pairwise squared cosine difference: ${L} vs ${want}`);
  const g = loss.backward(0.7).clone();
  let worst = 0;
  const eps = 1e-6;
  for (let k = 0; k < s.numel; k++) {
    const o = s.data[k]!;
    s.data[k] = o + eps;
    const lp = loss.forward(s, te);
    s.data[k] = o - eps;
    const lm = loss.forward(s, te);
    s.data[k] = o;
    const num = (0.7 * (lp - lm)) / (2 * eps);
    worst = Math.max(worst, Math.abs(num - g.data[k]!) / Math.max(Math.abs(num), Math.abs(g.data[k]!), 1e-9));
  }
  tt.ok(worst < TOL, `0.7 dL/ds: max relative error ${worst.toExponential(2)}`);
  const st2 = te.clone();
  for (let i = 0; i < d; i++) st2.data[i] *= 5;
  tt.ok(Math.abs(loss.forward(st2, te)) < 1e-15, 'zero for the teacher with rescaled rows');
  tt.throws(() => loss.forward(rand64([1, 3]), rand64([1, 3])), /at least 2 embeddings/);
  tt.throws(() => loss.forward(rand64([2, 3]), rand64([2, 4])), /must both be \[N, d\]/);
});

t.test('QuantFaceLoss value and gradient', async (tt) => {
  const loss = new QuantFaceLoss();
  const s = rand64([4, 8]);
  const te = rand64([4, 8]);
  const L = loss.forward(s, te);
  // Value: mean over batch and dims of (s/|s| - t/|t|)^2 = (2/d)(1 - mean cos).
  let cos = 0;
  for (let i = 0; i < 4; i++) {
    let ss = 0;
    let tt2 = 0;
    let st = 0;
    for (let j = 0; j < 8; j++) {
      const a = s.data[i * 8 + j]!;
      const b = te.data[i * 8 + j]!;
      ss += a * a;
      tt2 += b * b;
      st += a * b;
    }
    cos += st / Math.sqrt(ss * tt2);
  }
  cos /= 4;
  tt.ok(Math.abs(L - (2 / 8) * (1 - cos)) < 1e-12, `L = (2/d)(1 - mean cos): ${L}`);
  tt.ok(Math.abs(loss.lastMeanCosine - cos) < 1e-12, 'reports the mean cosine');
  const g = loss.backward().clone();
  let worst = 0;
  const eps = 1e-6;
  for (let k = 0; k < s.numel; k++) {
    const o = s.data[k]!;
    s.data[k] = o + eps;
    const lp = loss.forward(s, te);
    s.data[k] = o - eps;
    const lm = loss.forward(s, te);
    s.data[k] = o;
    const num = (lp - lm) / (2 * eps);
    worst = Math.max(worst, Math.abs(num - g.data[k]!) / Math.max(Math.abs(num), Math.abs(g.data[k]!), 1e-9));
  }
  tt.ok(worst < TOL, `dL/ds: max relative error ${worst.toExponential(2)}`);
  loss.forward(s, te);
  const scaled = loss.backward(3);
  tt.ok(Math.abs(scaled.data[0]! - 3 * g.data[0]!) < 1e-15, 'backward(scale) scales the gradient');
  tt.ok(Math.abs(loss.forward(s, s)) < 1e-15, 'zero when student equals teacher');
  const st2 = s.clone();
  for (let i = 0; i < 8; i++) st2.data[i] *= 5;
  tt.ok(Math.abs(loss.forward(st2, s)) < 1e-15, 'invariant to the embedding norms');
  tt.throws(() => loss.forward(rand64([2, 3]), rand64([2, 4])), /must both be \[N, d\]/);
  const mse = new MSELoss();
  const a = rand64([3, 2]);
  const b = rand64([3, 2]);
  const v = mse.forward(a, b);
  tt.ok(Math.abs(v - a.toArray().reduce((acc, x, i) => acc + (x - b.data[i]!) ** 2, 0) / 6) < 1e-12, 'MSELoss value');
  tt.ok(Math.abs(mse.backward().data[0]! - (2 / 6) * (a.data[0]! - b.data[0]!)) < 1e-15, 'MSELoss gradient');
});

t.test('float32 path (native kernels where present) agrees with float64', async (tt) => {
  const net = new Sequential([
    new Conv2d(3, 8, 3, { stride: 2, padding: 1, rng: rng.fork() }),
    new BatchNorm2d(8),
    new PReLU(8),
    new Conv2d(8, 8, 3, { padding: 1, groups: 8, rng: rng.fork() }),
    new BatchNorm2d(8),
    new Conv2d(8, 16, 1, { rng: rng.fork() }),
    new Flatten(),
    new Linear(16 * 4 * 4, 10, { rng: rng.fork() }),
    new BatchNorm1d(10),
  ]);
  const n64 = net.clone().to('f64');
  const x64 = rand64([4, 8, 8, 3]);
  const x32 = x64.to('f32') as FTensor;
  const y32 = net.forward(x32).clone();
  const y64 = n64.forward(x64).clone();
  const G = rand64([4, 10]);
  const gx32 = (net.backward(G.to('f32') as FTensor) as FTensor).clone();
  const gx64 = (n64.backward(G) as FTensor).clone();
  const rel = (a: FTensor, b: FTensor): number => {
    let num = 0;
    let den = 0;
    for (let i = 0; i < a.numel; i++) {
      num = Math.max(num, Math.abs(a.data[i]! - b.data[i]!));
      den = Math.max(den, Math.abs(b.data[i]!));
    }
    return num / den;
  };
  // f32 accumulation over <= 8*9 + 128*... terms, then BN: errors ~1e-6 relative to the tensor's max.
  tt.ok(rel(y32, y64) < 1e-4, `forward: ${rel(y32, y64).toExponential(2)}`);
  tt.ok(rel(gx32, gx64) < 1e-4, `input gradient: ${rel(gx32, gx64).toExponential(2)}`);
  const p32 = net.parameters();
  const p64 = n64.parameters();
  // A bias feeding a train-mode BatchNorm has a true gradient of exactly 0 (BN removes shifts): judge each
  // tensor's error against the largest parameter gradient of the network rather than its own (rounding-level) scale.
  let scale = 0;
  for (const p of p64) for (const v of p.grad!.data) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  let worstName = '';
  const names = [...net.namedParameters()].map(([n]) => n);
  p32.forEach((p, i) => {
    const a = p.grad!;
    const b = p64[i]!.grad!;
    let num = 0;
    let den = 1e-2 * scale;
    for (let k = 0; k < a.numel; k++) {
      num = Math.max(num, Math.abs(a.data[k]! - b.data[k]!));
      den = Math.max(den, Math.abs(b.data[k]!));
    }
    if (num / den > worst) {
      worst = num / den;
      worstName = names[i]!;
    }
  });
  tt.ok(worst < 1e-4, `parameter gradients: ${worst.toExponential(2)} (worst: ${worstName})`);
});

t.test('Module API: state dicts, clone, train/eval, noGrad, errors', async (tt) => {
  const m = new Sequential({ conv: new Conv2d(3, 4, 3, { padding: 1, rng: rng.fork() }), bn: new BatchNorm2d(4), prelu: new PReLU(4) });
  const keys = [...m.stateDict().keys()];
  tt.same(keys, ['conv.weight', 'bn.weight', 'bn.bias', 'prelu.weight', 'bn.running_mean', 'bn.running_var'], 'dotted names, PyTorch-style');
  const c = m.clone();
  c.parameters()[0]!.data.data[0] = 123;
  tt.not(m.parameters()[0]!.data.data[0], 123, 'clone has its own parameters');
  const fresh = new Sequential({ conv: new Conv2d(3, 4, 3, { padding: 1, rng: rng.fork() }), bn: new BatchNorm2d(4), prelu: new PReLU(4) });
  fresh.loadStateDict(c.stateDict());
  tt.equal(fresh.parameters()[0]!.data.data[0], 123, 'loadStateDict copies values');
  tt.throws(() => fresh.loadStateDict(new Map([['conv.weight', Tensor.zeros([4, 3, 3, 3])]])), /missing keys/, 'strict load lists missing keys');
  const partial = fresh.loadStateDict(new Map([['conv.weight', Tensor.zeros([4, 3, 3, 3])]]), false);
  tt.ok(partial.missing.includes('bn.weight'), 'non-strict load reports missing keys');
  tt.throws(() => fresh.loadStateDict(new Map([['conv.weight', Tensor.zeros([4, 3, 3, 2])]]), false), /shape/, 'shape mismatch refused');
  m.eval();
  tt.ok([...m.modules()].every((x) => !x.training), 'eval() reaches every module');
  m.train();
  tt.ok([...m.modules()].every((x) => x.training), 'train() reaches every module');
  const x = Tensor.randn([2, 4, 4, 3], rng);
  const before = m.stateDict().get('bn.running_mean')!.clone();
  noGrad(() => m.forward(x));
  tt.throws(() => m.backward(Tensor.zeros([2, 4, 4, 4])), /without a forward pass with gradients enabled/, 'noGrad forward keeps nothing for backward');
  tt.not(m.stateDict().get('bn.running_mean')!.data[0], before.data[0], 'train-mode BN still updates running stats under noGrad');
  tt.throws(() => new Conv2d(3, 4, 3).forward(Tensor.zeros([1, 4, 4, 2])), /expected \[N, H, W, 3\]/, 'channel mismatch names the shape');
  tt.match(m.toString(), /Conv2d\(3, 4, k=3x3/, 'toString describes the tree');
  tt.equal(m.numParams(), 4 * 27 + 8 + 4, 'numParams');
});
