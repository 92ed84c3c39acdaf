// BatchNorm folding for inference: exact (to float rounding) against the
// eval-mode model, and folds exactly where the layer structure allows.
import t from 'tap';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { BatchNorm, Module, foldBatchNorm, noGrad } from '../lib/nn/index.js';
import { toQat } from '../lib/quant/index.js';
import { mobilefacenet, iresnet18 } from '../lib/models/index.js';

const rng = new Rng(12);

function randomizeBn(m: Module): void {
  for (const b of m.modules())
    if (b instanceof BatchNorm) {
      for (let c = 0; c < b.numFeatures; c++) {
        b.runningMean.data[c] = 0.2 * rng.normal();
        b.runningVar.data[c] = 0.5 + rng.uniform();
        if (b.weight) b.weight.data.data[c] = 0.5 + rng.uniform();
        if (b.bias) b.bias.data.data[c] = 0.2 * rng.normal();
      }
    }
}

function countBn(m: Module): number {
  return [...m.modules()].filter((x) => x instanceof BatchNorm).length;
}

for (const [name, make, shape, expectFolded, expectLeft] of [
  ['MobileFaceNet', () => mobilefacenet({ widthMultiplier: 0.25, inputSize: 32, embeddingSize: 16, seed: 3 }), [3, 32, 32, 3], 49 + 1, 0],
  // stem 1 + 2 per block x 8 + 4 downsample + fc->features 1 + bn2 forward into fc 1; the 8 block bn1 (before a padded conv) stay.
  ['iResNet-18', () => iresnet18({ widths: [8, 8, 16, 16], inputSize: 16, numFeatures: 16, seed: 4 }), [3, 16, 16, 3], 1 + 16 + 4 + 1 + 1, 8],
] as const) {
  t.test(`foldBatchNorm on ${name}`, async (tt) => {
    const m = make();
    randomizeBn(m);
    m.eval();
    const x = Tensor.randn([...shape], rng) as FTensor;
    const y = noGrad(() => m.forward(x)).clone();
    const { model: f, folded } = foldBatchNorm(m);
    tt.equal(folded, expectFolded, `${folded} BatchNorms folded`);
    tt.equal(countBn(f), expectLeft, `${expectLeft} left`);
    const yf = noGrad(() => f.forward(x));
    let err = 0;
    let scale = 0;
    for (let i = 0; i < y.numel; i++) {
      err = Math.max(err, Math.abs(y.data[i]! - yf.data[i]!));
      scale = Math.max(scale, Math.abs(y.data[i]!));
    }
    // float32 re-association of the folded products: ~1e-6 relative per layer.
    tt.ok(err / scale < 1e-4, `folded output matches the eval-mode model (${(err / scale).toExponential(2)})`);
    tt.same(Array.from(noGrad(() => m.forward(x)).data), Array.from(y.data), 'original model untouched');
    tt.throws(() => foldBatchNorm(toQat(m)), /fake quantizers/, 'QAT models refused');
  });
}
