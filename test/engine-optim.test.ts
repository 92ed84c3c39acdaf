// Optimisers, gradient clipping and schedules against their defining
// formulas (PyTorch's), computed here step by step in float64.
import t from 'tap';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { Parameter } from '../lib/nn/index.js';
import { SGD, AdamW, clipGradNorm, constantLr, stepLr, cosineLr, withWarmup, LrScheduler } from '../lib/optim/index.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 77);
t.comment(`seed ${SEED}`);
const rng = new Rng(SEED);

function param(n: number): Parameter {
  return new Parameter(Tensor.randn([n], rng, 1, 0, 'f64') as FTensor);
}

function setGrad(p: Parameter, g: number[]): void {
  const { grad } = p.gradSlot();
  grad.data.set(g);
}

t.test('SGD: momentum, Nesterov, dampening, L2 and decoupled weight decay', async (tt) => {
  for (const cfg of [
    { momentum: 0, nesterov: false, weightDecay: 0, mode: 'l2' as const, dampening: 0 },
    { momentum: 0.9, nesterov: false, weightDecay: 5e-4, mode: 'l2' as const, dampening: 0 },
    { momentum: 0.9, nesterov: true, weightDecay: 5e-4, mode: 'l2' as const, dampening: 0 },
    { momentum: 0.9, nesterov: false, weightDecay: 0.01, mode: 'decoupled' as const, dampening: 0.1 },
    { momentum: 0, nesterov: false, weightDecay: 0.1, mode: 'l2' as const, dampening: 0 },
  ]) {
    const p = param(5);
    const w = Array.from(p.data.data);
    const buf = new Array<number>(5).fill(0);
    const lr = 0.05;
    const opt = new SGD([p], lr, { momentum: cfg.momentum, nesterov: cfg.nesterov, weightDecay: cfg.weightDecay, weightDecayMode: cfg.mode, dampening: cfg.dampening });
    for (let step = 0; step < 4; step++) {
      const g = Array.from({ length: 5 }, () => rng.normal());
      opt.zeroGrad();
      setGrad(p, g);
      opt.step();
      for (let i = 0; i < 5; i++) {
        if (cfg.mode === 'decoupled') w[i] = w[i]! * (1 - lr * cfg.weightDecay);
        const gi = g[i]! + (cfg.mode === 'l2' ? cfg.weightDecay * w[i]! : 0);
        let d = gi;
        if (cfg.momentum) {
          buf[i] = step === 0 ? gi : cfg.momentum * buf[i]! + (1 - cfg.dampening) * gi;
          d = cfg.nesterov ? gi + cfg.momentum * buf[i]! : buf[i]!;
        }
        w[i] = w[i]! - lr * d;
      }
    }
    const err = Math.max(...w.map((v, i) => Math.abs(v - p.data.data[i]!)));
    tt.ok(err < 1e-12, `${JSON.stringify(cfg)}: matches the formula (${err.toExponential(1)})`);
  }
  tt.throws(() => new SGD([param(1)], 0.1, { nesterov: true }), /Nesterov/);
  tt.throws(() => new SGD([param(1)], -1), /lr/);
});

t.test('SGD skips frozen parameters and those without gradients; groups scale lr and override options', async (tt) => {
  const a = param(3);
  const b = param(3);
  const c = param(3);
  c.requiresGrad = false;
  const a0 = Array.from(a.data.data);
  const b0 = Array.from(b.data.data);
  const c0 = Array.from(c.data.data);
  const opt = new SGD(
    [
      { params: [a], lrScale: 2 },
      { params: [b, c], options: { weightDecay: 0.5 } },
    ],
    0.1,
  );
  setGrad(a, [1, 1, 1]);
  setGrad(c, [1, 1, 1]);
  opt.step();
  tt.same(Array.from(a.data.data), a0.map((v) => v - 0.2), 'lrScale 2');
  tt.same(Array.from(b.data.data), b0, 'no gradient: untouched (weight decay too)');
  tt.same(Array.from(c.data.data), c0, 'requiresGrad false: untouched');
  setGrad(b, [0, 0, 0]);
  opt.step();
  tt.ok(b.data.data.every((v, i) => Math.abs(v - b0[i]! * (1 - 0.1 * 0.5)) < 1e-12), 'group weight decay');
  tt.throws(() => new SGD([{ params: [a] }, { params: [a] }], 0.1), /more than one group/);
});

t.test('AdamW matches its formula', async (tt) => {
  const p = param(4);
  const w = Array.from(p.data.data);
  const m = [0, 0, 0, 0];
  const v = [0, 0, 0, 0];
  const lr = 0.01;
  const [b1, b2, eps, wd] = [0.9, 0.999, 1e-8, 0.05];
  const opt = new AdamW([p], lr, { weightDecay: wd });
  for (let s = 1; s <= 5; s++) {
    const g = Array.from({ length: 4 }, () => rng.normal());
    opt.zeroGrad();
    setGrad(p, g);
    opt.step();
    for (let i = 0; i < 4; i++) {
      w[i] = w[i]! * (1 - lr * wd);
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! ** 2;
      const mh = m[i]! / (1 - b1 ** s);
      const vh = v[i]! / (1 - b2 ** s);
      w[i] = w[i]! - (lr * mh) / (Math.sqrt(vh) + eps);
    }
  }
  const err = Math.max(...w.map((x, i) => Math.abs(x - p.data.data[i]!)));
  tt.ok(err < 1e-12, `AdamW: ${err.toExponential(1)}`);
});

t.test('clipGradNorm scales to the max norm and returns the norm before clipping', async (tt) => {
  const a = param(2);
  const b = param(1);
  setGrad(a, [3, 0]);
  setGrad(b, [4]);
  const n = clipGradNorm([a, b], 1);
  tt.equal(n, 5);
  const k = 1 / (5 + 1e-6);
  tt.ok(Math.abs(a.grad!.data[0]! - 3 * k) < 1e-15 && Math.abs(b.grad!.data[0]! - 4 * k) < 1e-15, 'scaled by max/(norm+1e-6)');
  setGrad(a, [0.1, 0]);
  setGrad(b, [0.1]);
  clipGradNorm([a, b], 1);
  tt.equal(a.grad!.data[0], 0.1, 'below the max: unchanged');
});

t.test('schedules: step, cosine, warm-up; the scheduler drives optimizer.lr', async (tt) => {
  const s = stepLr(0.1, [10, 20], 0.1);
  tt.same([s(0), s(9), s(10), s(19)].map((x) => +x.toPrecision(6)), [0.1, 0.1, 0.01, 0.01]);
  tt.ok(Math.abs(s(25) - 0.001) < 1e-15);
  const c = cosineLr(1, 100, 0.1);
  tt.equal(c(0), 1);
  tt.ok(Math.abs(c(50) - 0.55) < 1e-12, 'half way: (1 + 0.1) / 2');
  tt.ok(Math.abs(c(100) - 0.1) < 1e-12 && Math.abs(c(150) - 0.1) < 1e-12, 'ends at minLr');
  const w = withWarmup(constantLr(0.4), 4, 0.25);
  tt.same([w(0), w(1), w(2), w(3), w(4), w(100)].map((x) => +x.toPrecision(12)), [0.1, 0.175, 0.25, 0.325, 0.4, 0.4]);
  const wc = withWarmup(cosineLr(1, 10), 5);
  tt.equal(wc(0), 0);
  tt.equal(wc(5), 1, 'the inner schedule starts after warm-up');
  const opt = new SGD([param(1)], 0);
  const sch = new LrScheduler(opt, stepLr(0.1, [2], 0.5));
  const lrs = [sch.step(), sch.step(), sch.step()];
  tt.same(lrs, [0.1, 0.1, 0.05]);
  tt.equal(opt.lr, 0.05);
  tt.throws(() => cosineLr(1, 0), /totalSteps/);
});
