// QDQ export vs our fake-quant forward, per face: does onnxruntime-node run
// the exported quantized model as the engine does? (issue 4's bar: cosine
// >= 0.999 on real faces). For each .qfm student: engine forward, then our
// QDQ ONNX export under onnxruntime with default graph optimizations and with
// them disabled; prints per-face cosine mean / median / min / 5th percentile,
// the count below 0.9999 and 0.999, and the max |difference|.
//
//   flock -s /tmp/qf-cpu.lock node --import tsx bench/qdq-agreement.ts \
//       tmp/bench-quantface/synthetic_w8a8_kd.qfm [...more.qfm] [--faces lfw|ffhq] [--n 256] [--threads 1]
//
// Real faces: ../shared/data/lfw (the data README's box crop, one image per
// person spread over the alphabet) or ../shared/data/real-faces-ffhq (FFHQ
// box crop). Writes nothing.
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadQfm } from '../lib/io/qfm.js';
import { exportOnnx } from '../lib/io/onnx-export.js';
import { preprocess } from '../lib/io/model-info.js';
import { noGrad } from '../lib/nn/index.js';
import { loadFaces, loadLfwFaces, compareRows } from './lib/faces.js';

type Ort = typeof import('onnxruntime-node');
const ort = createRequire(import.meta.url)('onnxruntime-node') as Ort;
const shared = resolve(dirname(fileURLToPath(import.meta.url)), '../../shared/data');

const args = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = args[i + 1]!;
  args.splice(i, 2);
  return v;
};
const which = opt('faces', 'lfw');
const N = Number(opt('n', '256'));
const threads = Number(opt('threads', '1'));
if (!args.length) {
  console.error('usage: bench/qdq-agreement.ts student.qfm [...] [--faces lfw|ffhq] [--n 256] [--threads 1]');
  process.exit(2);
}

function nchw(x: Float32Array, n: number, h: number, w: number, c: number): Float32Array {
  const o = new Float32Array(x.length);
  for (let b = 0; b < n; b++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) for (let k = 0; k < c; k++) o[((b * c + k) * h + y) * w + xx] = x[((b * h + y) * w + xx) * c + k]!;
  return o;
}

const faceCache = new Map<number, Float32Array>();
async function faces(size: number): Promise<Float32Array> {
  let f = faceCache.get(size);
  if (!f) {
    f = which === 'ffhq' ? await loadFaces(N, size, resolve(shared, 'real-faces-ffhq')) : await loadLfwFaces(resolve(shared, 'lfw'), N, size);
    faceCache.set(size, f);
  }
  return f;
}

for (const path of args) {
  const l = await loadQfm(path);
  if (!l.info) throw new Error(`${path}: no model info (input shape, preprocessing)`);
  const [H, W, C] = l.info.inputShape;
  const m = l.model.eval();
  const x = preprocess(l.info, await faces(H), N);
  const ours = noGrad(() => Float32Array.from(m.forward(x).data));
  const bytes = exportOnnx(m, { mode: 'qdq', info: l.info });
  const xin = nchw(x.data as Float32Array, N, H, W, C);
  for (const level of ['all', 'disabled'] as const) {
    const s = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], intraOpNumThreads: threads, graphOptimizationLevel: level });
    const r = await s.run({ [s.inputNames[0]!]: new ort.Tensor('float32', xin, [N, C, H, W]) });
    const theirs = Float32Array.from(r[s.outputNames[0]!]!.data as Float32Array);
    await s.release();
    const c = compareRows(ours, theirs, N);
    const cs = [...c.cos].sort((a, b) => a - b);
    const mean = cs.reduce((a, b) => a + b, 0) / N;
    console.log(
      `${path.split('/').pop()} ${which} n=${N} ort=${level.padEnd(8)} cos mean ${mean.toFixed(7)} median ${cs[N >> 1]!.toFixed(7)} min ${cs[0]!.toFixed(6)} ` +
        `p5 ${cs[Math.floor(N * 0.05)]!.toFixed(7)} <0.9999: ${cs.filter((v) => v < 0.9999).length} <0.999: ${cs.filter((v) => v < 0.999).length} max|diff| ${c.maxAbs.toExponential(2)}`,
    );
  }
}
