// The shared buffer pool: transient tensors (gradients, noGrad activations)
// return to it once consumed, no buffer is released while still in use,
// and steady-state steps allocate nothing new.
import t from 'tap';
import { Tensor, Rng, type FTensor } from '../lib/tensor.js';
import { Conv2d, BatchNorm2d, PReLU, Add, Identity, Flatten, Linear, Sequential, Graph, QuantFaceLoss, noGrad, Module } from '../lib/nn/index.js';
import { BufferPool, bufferPool } from '../lib/nn/pool.js';
import { toQat } from '../lib/quant/index.js';
import { mobilefacenet, iresnet18 } from '../lib/models/index.js';

const rng = new Rng(31);

t.test('BufferPool reference counting and size classes', async (tt) => {
  const p = new BufferPool();
  const a = p.acquire([10, 10], 'f32');
  tt.equal(a.numel, 100);
  tt.ok(p.owns(a));
  p.retain(a);
  p.release(a);
  tt.ok(p.owns(a), 'still live after one of two releases');
  p.release(a.reshape([100]));
  tt.notOk(p.owns(a), 'a view releases the same buffer');
  const b = p.acquire([101], 'f32');
  tt.equal(b.data.buffer, a.data.buffer, 'a similar size reuses the freed buffer (size classes)');
  p.release(b);
  const c = p.acquire([101], 'f64');
  tt.not(c.data.buffer, a.data.buffer, 'dtypes do not mix');
  p.release(Tensor.zeros([3]));
  tt.pass('releasing a foreign tensor is a no-op');
  tt.ok(p.stats().highWaterBytes >= 400);
  p.clear();
  tt.equal(p.stats().freeBytes, 0);
});

function liveAfter(fn: () => void): number {
  const before = bufferPool.stats().liveBytes;
  fn();
  return bufferPool.stats().liveBytes - before;
}

function models(): [string, Module, number[]][] {
  return [
    ['MobileFaceNet', mobilefacenet({ widthMultiplier: 0.125, inputSize: 32, embeddingSize: 16, seed: 4 }), [4, 32, 32, 3]],
    ['iResNet-18', iresnet18({ widths: [4, 4, 8, 8], inputSize: 16, numFeatures: 8, seed: 5 }), [4, 16, 16, 3]],
    [
      'Graph with fan-out, identity and flatten',
      new Sequential([
        new Graph()
          .add('a', new Conv2d(3, 4, 3, { padding: 1, rng: rng.fork() }), 'input')
          .add('b', new Conv2d(3, 4, 1, { rng: rng.fork() }), 'input')
          .add('id', new Identity(), 'a')
          .add('ab', new Add(), ['id', 'b'])
          .add('bn', new BatchNorm2d(4), 'ab')
          .add('p', new PReLU(4), 'bn')
          .add('twice', new Add(), ['p', 'p'])
          .add('three', new Add(), ['twice', 'a']),
        new Flatten(),
        new Linear(4 * 5 * 5, 6, { rng: rng.fork() }),
      ]),
      [2, 5, 5, 3],
    ],
  ];
}

t.test('no leaks: a training step and a noGrad forward return every pooled buffer', async (tt) => {
  for (const qat of [false, true]) {
    for (const [name, fp, shape] of models()) {
      const m = qat ? toQat(fp, { calibrationSteps: 1, ste: 'clipped' }) : fp;
      const label = `${name}${qat ? ' (QAT, clipped STE)' : ''}`;
      const x = Tensor.randn(shape, rng) as FTensor;
      const loss = new QuantFaceLoss();
      const step = (): void => {
        m.zeroGrad();
        const y = m.forward(x);
        loss.forward(y, Tensor.randn(y.shape, rng) as FTensor);
        const gi = m.backward(loss.backward()) as FTensor;
        bufferPool.release(gi);
      };
      step();
      tt.equal(liveAfter(step), 0, `${label}: training step leaves no pooled buffer live`);
      const high = bufferPool.stats().highWaterBytes;
      const free = bufferPool.stats().freeBytes;
      step();
      tt.equal(bufferPool.stats().freeBytes, free, `${label}: steady state allocates nothing new`);
      tt.ok(bufferPool.stats().highWaterBytes <= high, `${label}: high-water mark stable`);
      m.eval();
      let out: FTensor | null = null;
      const before = bufferPool.stats().liveBytes;
      out = noGrad(() => m.forward(x));
      tt.ok(bufferPool.owns(out), `${label}: noGrad output comes from the pool`);
      // The same values as a forward with gradients enabled (no buffer reused while in use).
      const ref = m.forward(x).clone();
      tt.same(Array.from(out.data), Array.from(ref.data), `${label}: noGrad result equals the grad-mode result`);
      bufferPool.release(out);
      tt.equal(bufferPool.stats().liveBytes - before, 0, `${label}: noGrad forward keeps nothing but its output live`);
      m.train();
    }
  }
});
