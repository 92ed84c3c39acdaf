// BatchNorm directly followed by PReLU inside a Sequential runs as one fused
// native pass (layers.ts forwardAfter / backwardPrelu, native batchNormBackward
// with `slope`): same outputs, input gradients, parameter gradients and state as
// the unfused modules, float and QAT (ActFakeQuant after the PReLU, both STE
// modes), training and eval, odd channel counts, random shapes; and the native
// fused backward bit-identical to the unfused kernel sequence on every variant.
import t from 'tap';
import { binding } from '../lib/binding.js';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { Conv2d, BatchNorm2d, PReLU, setBnPreluFusion } from '../lib/nn/layers.js';
import { Sequential } from '../lib/nn/containers.js';
import { noGrad, type Module } from '../lib/nn/module.js';
import { toQat } from '../lib/quant/qat.js';

const SEED = Number(process.env.QF_TEST_SEED ?? (Date.now() % 2147483647));
t.comment(`seed ${SEED} (rerun with QF_TEST_SEED=${SEED})`);
const rng = new Rng(SEED);
const randInt = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
const f32 = (n: number, lo = -1, hi = 1): Float32Array => Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.uniform());

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  let scale = 1e-30;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i]!) !== Number.isNaN(b[i]!)) return Infinity;
    m = Math.max(m, Math.abs(a[i]! - b[i]!) / scale);
  }
  return m;
}

function block(cin: number, c: number, seed: number): Sequential {
  const r = new Rng(seed);
  const s = new Sequential({ conv: new Conv2d(cin, c, [3, 3], { padding: 1, rng: r }), bn: new BatchNorm2d(c), prelu: new PReLU(c) });
  const bn = s.at(1) as BatchNorm2d;
  bn.weight!.data.data.set(Float32Array.from({ length: c }, () => 0.5 + r.uniform()));
  bn.bias!.data.data.set(Float32Array.from({ length: c }, () => r.uniform() - 0.5));
  (s.at(2) as PReLU).weight.data.data.set(Float32Array.from({ length: c }, () => r.uniform() * 0.5 - 0.1));
  return s;
}

function model(cin: number, c1: number, c2: number, seed: number, qat: false | 'unmasked' | 'clipped'): Sequential {
  const m = new Sequential({ b1: block(cin, c1, seed), b2: block(c1, c2, seed + 1) });
  return qat ? toQat(m, { ste: qat, calibrationSteps: 1 }) : m;
}

interface Run {
  outs: Float32Array[];
  gin: Float32Array[];
  grads: Map<string, Float32Array>;
  state: Map<string, Float32Array>;
  fused: boolean;
}

function run(m: Module, xs: FTensor[], gs: FTensor[], fuse: boolean): Run {
  const prev = setBnPreluFusion(fuse);
  try {
    const r: Run = { outs: [], gin: [], grads: new Map(), state: new Map(), fused: false };
    m.train();
    for (let s = 0; s < xs.length; s++) {
      m.zeroGrad();
      const y = m.forward(xs[s]!);
      r.outs.push(Float32Array.from(y.data as Float32Array));
      for (const mod of m.modules()) if (mod instanceof PReLU && mod.fusedBatchNorm) r.fused = true;
      const gi = m.backward(gs[s]!) as FTensor;
      r.gin.push(Float32Array.from(gi.data as Float32Array));
    }
    for (const [n, p] of m.namedParameters()) if (p.grad) r.grads.set(n, Float32Array.from(p.grad.data as Float32Array));
    m.eval();
    noGrad(() => r.outs.push(Float32Array.from(m.forward(xs[0]!).data as Float32Array)));
    for (const [n, b] of m.stateDict()) r.state.set(n, Float32Array.from(b.data as Float32Array));
    return r;
  } finally {
    setBnPreluFusion(prev);
  }
}

t.test('fused BatchNorm + PReLU matches the unfused modules', async (t) => {
  const cases: [number, number, number, number, number][] = [
    [2, 3, 7, 5, 6],
    [1, 1, 1, 9, 5],
    [3, 5, 33, 17, 7],
  ];
  for (let i = 0; i < 3; i++) cases.push([randInt(1, 3), randInt(1, 9), randInt(1, 70), randInt(1, 70), randInt(3, 12)]);
  for (const threads of [1, 2]) {
    binding.setThreads(threads);
    for (const [N, cin, c1, c2, hw] of cases)
      for (const qat of [false, 'unmasked', 'clipped'] as const) {
        const seed = randInt(1, 1e9);
        const xs = [0, 1].map(() => Tensor.from(f32(N * hw * hw * cin, -2, 2), [N, hw, hw, cin]) as FTensor);
        const gs = [0, 1].map(() => Tensor.from(f32(N * hw * hw * c2), [N, hw, hw, c2]) as FTensor);
        const a = run(model(cin, c1, c2, seed, qat), xs, gs, true);
        const b = run(model(cin, c1, c2, seed, qat), xs, gs, false);
        const tag = `t${threads} N=${N} cin=${cin} C=${c1},${c2} hw=${hw} qat=${qat}`;
        t.ok(a.fused && !b.fused, `${tag}: fused path taken (and not when off)`);
        let worst = 0;
        const where: string[] = [];
        const cmp = (name: string, u: Float32Array, v: Float32Array | undefined): void => {
          const d = v ? maxRelDiff(u, v) : Infinity;
          if (d > worst) worst = d;
          if (!(d <= 1e-6)) where.push(`${name} ${d}`);
        };
        a.outs.forEach((o, i) => cmp(`out${i}`, o, b.outs[i]));
        a.gin.forEach((o, i) => cmp(`gradIn${i}`, o, b.gin[i]));
        t.same([...a.grads.keys()].sort(), [...b.grads.keys()].sort(), `${tag}: same parameters have gradients`);
        for (const [n, g] of a.grads) cmp(`grad ${n}`, g, b.grads.get(n));
        t.same([...a.state.keys()], [...b.state.keys()], `${tag}: same state dict keys`);
        for (const [n, s] of a.state) cmp(`state ${n}`, s, b.state.get(n));
        t.same(where, [], `${tag}: outputs, gradients and state within 1e-6 (worst ${worst})`);
      }
  }
  binding.setThreads(binding.info().defaultThreads);
});

t.test('native fused batchNormBackward bit-identical to affine + preluBackward + batchNormBackward', async (t) => {
  const vs = (binding.info().variants['bn_prelu_sums'] ?? []).filter((v) => v.supported).map((v) => v.name.slice('bn_prelu_sums_'.length));
  t.ok(vs.includes('ref'), 'bn_prelu_sums_ref listed');
  const shapes: [number, number][] = [[2, 1], [7, 3], [63, 17], [129, 33], [1100, 65], [5000, 7], [randInt(2, 3000), randInt(1, 140)]];
  for (const [M, C] of shapes)
    for (const training of [true, false])
      for (const withMask of [false, true]) {
        const n = M * C;
        const x = f32(n, -3, 3), g = f32(n), w = f32(C, 0.5, 2), b = f32(C), slope = f32(C, -0.2, 0.6);
        const mask = Uint8Array.from({ length: n }, () => (rng.uniform() < 0.8 ? 1 : 0));
        const rm = f32(C), rv = f32(C, 0.5, 2);
        const mean = new Float64Array(C), invstd = new Float64Array(C);
        const yF = new Float32Array(n), yP = new Float32Array(n);
        binding.batchNormForward({ x, out: yF, channels: C, training, weight: w, bias: b, runningMean: rm.slice(), runningVar: rv.slice(), mean, invstd, slope });
        binding.batchNormForward({ x, out: yP, channels: C, training, weight: w, bias: b, runningMean: rm.slice(), runningVar: rv.slice(), mean: new Float64Array(C), invstd: new Float64Array(C) });
        let first: Float32Array[] | null = null;
        for (const variant of vs)
          for (const threads of [1, 2]) {
            binding.setThreads(threads);
            // Unfused: PReLU backward at the BN output, then BN backward.
            const gy = new Float32Array(n).fill(NaN), gsU = new Float64Array(C).fill(NaN);
            binding.preluBackward({ x: yP, gradOut: g, gradIn: gy, slope, gradSlope: gsU, ...(withMask ? { mask } : {}), variant });
            const giU = new Float32Array(n).fill(NaN), gwU = new Float32Array(C).fill(NaN), gbU = new Float32Array(C).fill(NaN);
            binding.batchNormBackward({ x, gradOut: gy, gradIn: giU, channels: C, mean, invstd, weight: w, training, gradWeight: gwU, gradBias: gbU, variant });
            // Fused.
            const giF = new Float32Array(n).fill(NaN), gwF = new Float32Array(C).fill(NaN), gbF = new Float32Array(C).fill(NaN), gsF = new Float64Array(C).fill(NaN);
            binding.batchNormBackward({ x, gradOut: g, gradIn: giF, channels: C, mean, invstd, weight: w, bias: b, training, gradWeight: gwF, gradBias: gbF, slope, gradSlope: gsF, ...(withMask ? { mask } : {}), variant });
            const tag = `${variant} t${threads} M=${M} C=${C} training=${training} mask=${withMask}`;
            const same = (u: ArrayLike<number>, v: ArrayLike<number>): boolean => {
              for (let i = 0; i < u.length; i++) if (!Object.is(u[i], v[i])) return false;
              return true;
            };
            t.ok(same(giF, giU) && same(gwF, gwU) && same(gbF, gbU) && same(gsF, gsU), `${tag}: bit-identical to the unfused sequence`);
            // In place (gradIn = gradOut).
            const gInPlace = g.slice();
            binding.batchNormBackward({ x, gradOut: gInPlace, gradIn: gInPlace, channels: C, mean, invstd, weight: w, bias: b, training, slope, ...(withMask ? { mask } : {}), variant });
            t.ok(same(gInPlace, giU), `${tag}: in place`);
            if (!first) first = [giF, gwF, gbF];
            else t.ok(same(first[0]!, giF) && same(first[1]!, gwF) && same(first[2]!, gbF), `${tag}: same as the first variant`);
          }
      }
  binding.setThreads(binding.info().defaultThreads);
  const x = f32(8), g = f32(8);
  t.throws(() => binding.batchNormBackward({ x, gradOut: g, gradIn: x, channels: 2, mean: new Float64Array(2), invstd: new Float64Array(2), slope: f32(2) }), RangeError, 'fused: gradIn = x refused');
  t.throws(() => binding.batchNormBackward({ x, gradOut: g, gradIn: new Float32Array(8), channels: 2, mean: new Float64Array(2), invstd: new Float64Array(2), slope: f32(3) }), RangeError, 'fused: slope length checked');
  t.throws(() => binding.batchNormBackward({ x, gradOut: g, gradIn: new Float32Array(8), channels: 2, mean: new Float64Array(2), invstd: new Float64Array(2), gradSlope: new Float64Array(2) }), TypeError, 'gradSlope without slope refused');
});
