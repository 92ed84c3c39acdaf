// Training smoke test: a small MobileFaceNet W8A8 student (toQat) distilled
// from a randomly initialised float teacher on random images with the
// QuantFace loss and the method's optimiser (SGD, momentum 0.9, Nesterov,
// weight decay 5e-4, gradient norm clipped at 5). The loss must fall by a
// large factor in 300 steps, the run must be deterministic for a seed, and
// the trained student must also match the teacher in eval mode.
import t from 'tap';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { QuantFaceLoss, noGrad, kernelSources } from '../lib/nn/index.js';
import { toQat, quantizers } from '../lib/quant/index.js';
import { mobilefacenet, MobileFaceNet } from '../lib/models/index.js';
import { SGD, clipGradNorm } from '../lib/optim/index.js';

const SEED = Number(process.env.QF_TEST_SEED ?? 7);
t.comment(`seed ${SEED}; kernels: ${JSON.stringify(kernelSources())}`);

const SIZE = 32;
const B = 16;
const N = 64;
const CFG = { widthMultiplier: 0.125, inputSize: SIZE, embeddingSize: 32, blocks: [2, 2, 1] as [number, number, number] };

function setup(seed: number): { student: MobileFaceNet; targets: FTensor[]; batch: (i: number) => FTensor } {
  const rng = new Rng(seed);
  const data = Tensor.uniform([N, SIZE, SIZE, 3], rng, -1, 1);
  const per = B * SIZE * SIZE * 3;
  const batch = (i: number): FTensor => new Tensor(data.data.subarray(i * per, (i + 1) * per), [B, SIZE, SIZE, 3]) as FTensor;
  // A "pretrained" teacher: random weights, BN running statistics settled on the data, then eval mode.
  const teacher = mobilefacenet({ ...CFG, seed: seed + 1 });
  noGrad(() => {
    for (let e = 0; e < 10; e++) for (let i = 0; i < N / B; i++) teacher.forward(batch(i));
  });
  teacher.eval();
  const targets = noGrad(() => Array.from({ length: N / B }, (_, i) => teacher.forward(batch(i)).clone()));
  // The student: another random network of the same architecture, quantization-aware (W8A8).
  const student = toQat(mobilefacenet({ ...CFG, seed: seed + 2 }), { weightBits: 8, actBits: 8, calibrationSteps: 20 });
  return { student, targets, batch };
}

function train(seed: number, steps: number): { losses: number[]; student: MobileFaceNet; targets: FTensor[]; batch: (i: number) => FTensor; loss: QuantFaceLoss } {
  const { student, targets, batch } = setup(seed);
  const opt = new SGD(student.parameters(), 0.5, { momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  const loss = new QuantFaceLoss();
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const i = s % (N / B);
    opt.zeroGrad();
    const y = student.forward(batch(i));
    losses.push(loss.forward(y, targets[i]!));
    student.backward(loss.backward());
    clipGradNorm(student.parameters(), 5);
    opt.step();
  }
  return { losses, student, targets, batch, loss };
}

t.test('QuantFace distillation of a W8A8 MobileFaceNet student', async (tt) => {
  const t0 = Date.now();
  const run = train(SEED, 300);
  const mean = (a: number[]): number => a.reduce((x, y) => x + y, 0) / a.length;
  const first = mean(run.losses.slice(0, 4));
  const last = mean(run.losses.slice(-4));
  tt.comment(`loss ${first.toExponential(3)} -> ${last.toExponential(3)} (x${(first / last).toFixed(1)}) in 300 steps, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  tt.ok(run.losses.every((l) => Number.isFinite(l)), 'finite losses');
  tt.ok(first / last > 10, `loss falls by more than 10x (x${(first / last).toFixed(1)})`);
  tt.ok(run.loss.lastMeanCosine > 0.9, `train-mode mean cosine to the teacher ${run.loss.lastMeanCosine.toFixed(3)} > 0.9`);
  // Activation ranges calibrated for 20 steps, then frozen.
  const acts = quantizers(run.student).filter((q) => q.kind === 'activation');
  tt.ok(acts.length > 0 && acts.every((q) => q.observing === false && q.max! > q.min!), 'every activation range calibrated and frozen');
  // Eval mode (running BN statistics, frozen ranges) also reproduces the teacher.
  run.student.eval();
  const evalLoss = noGrad(() => mean(run.targets.map((tg, i) => run.loss.forward(run.student.forward(run.batch(i)), tg))));
  tt.ok(evalLoss < first / 5, `eval-mode loss ${evalLoss.toExponential(3)} < initial / 5`);
  // Deterministic: the same seed gives the same losses, bit for bit.
  const again = train(SEED, 8);
  tt.same(again.losses, run.losses.slice(0, 8), 'same seed, same first 8 losses');
  const other = train(SEED + 100, 2);
  tt.not(other.losses[0], run.losses[0], 'another seed, another run');
});
