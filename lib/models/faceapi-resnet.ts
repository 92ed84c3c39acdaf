/**
 * face-api's face descriptor network (FaceRecognitionNet, derived from
 * dlib's ResNet-34-like face recognition model), rebuilt from face-api's
 * source (src/faceRecognitionNet/*.ts) as a trainable engine model, NHWC:
 *
 *   input 150x150 RGB, preprocessed (x - [122.782, 117.001, 104.298]) / 255
 *   conv32_down   convDown 7x7/2 valid 3->32 (conv + bias, scale layer, ReLU)
 *   maxpool       3x3/2 valid
 *   conv32_1..3   residual(32)
 *   conv64_down   residualDown(32->64), conv64_1..3 residual(64)
 *   conv128_down  residualDown(64->128), conv128_1..2
 *   conv256_down  residualDown(128->256), conv256_1..2
 *   conv256_down_out residualDown(256->256)
 *   mean          spatial mean -> [N, 256]
 *   fc            256->128, no bias; output not normalised
 *
 * conv = 3x3 SAME convolution with bias, then the scale layer
 * (x * weights + biases per channel: a folded BatchNorm, here a
 * ChannelAffine), then ReLU (conv) or not (convNoRelu).
 * residual(x) = relu(convNoRelu(conv(x)) + x).
 * residualDown(x) = relu(pad(convNoRelu(convDown3x3/2 valid(x))) + padC(avgpool2x2/2(x)))
 * where pad appends a zero row at the bottom and a zero column at the right
 * when the two branches differ in size, and padC appends zero channels.
 *
 * State-dict names follow face-api's weight names with '/' -> '.':
 * `conv32_1.conv1.conv.weight` (OHWI), `conv32_1.conv1.scale.weight`,
 * `fc.weight` ([128, 256]).
 */
import { QuantFaceError, shapeStr, type FTensor } from '../tensor.js';
import { Module } from '../nn/module.js';
import { Conv2d, ReLU, Add, Linear } from '../nn/layers.js';
import { Sequential, Graph } from '../nn/containers.js';
import { ChannelAffine, MaxPool2d, AvgPool2d, Pad, GlobalAvgPool } from '../nn/import-ops.js';
import type { ModelInfo } from '../io/model-info.js';

/**
 * face-api's preprocessing: RGB, (x - mean) / 255, as @vladmandic/face-api
 * 1.7.15's FaceRecognitionNet.forwardInput computes it (dlib's own
 * input_rgb_image and the original face-api.js divide by 256; the weights
 * shipped here come from @vladmandic/face-api, whose forward pass is the
 * reference: /256 moves descriptors by up to 4e-4, cosine 0.9999996).
 */
export const FACEAPI_MEAN_RGB: [number, number, number] = [122.782, 117.001, 104.298];
export const FACEAPI_SCALE = 255;

function convLayer(cin: number, cout: number, k: number, stride: number, pad: number, relu: boolean): Sequential {
  const s = new Sequential();
  s.append(new Conv2d(cin, cout, k, { stride, padding: pad, bias: true, init: false }), 'conv');
  s.append(new ChannelAffine(cout, { scale: new Float32Array(cout).fill(1), bias: new Float32Array(cout) }), 'scale');
  if (relu) s.append(new ReLU(), 'relu');
  return s;
}

function residual(c: number): Graph {
  return new Graph()
    .add('conv1', convLayer(c, c, 3, 1, 1, true))
    .add('conv2', convLayer(c, c, 3, 1, 1, false))
    .add('add', new Add(), ['conv2', 'input'])
    .add('relu', new ReLU());
}

/** residualDown for an input of side `size`; returns the block and its output side. */
function residualDown(cin: number, cout: number, size: number): { block: Graph; size: number } {
  const convSide = Math.floor((size - 3) / 2) + 1;
  const poolSide = Math.floor(size / 2);
  if (convSide < 1 || poolSide < 1 || poolSide - convSide < 0 || poolSide - convSide > 1)
    throw new QuantFaceError('E_SHAPE', `FaceApiResNet: a residualDown block cannot take a ${size}x${size} input`);
  if (cout < cin) throw new QuantFaceError('E_ARG', `FaceApiResNet: residualDown ${cin}->${cout} would drop channels`);
  const g = new Graph().add('conv1', convLayer(cin, cout, 3, 2, 0, true)).add('conv2', convLayer(cout, cout, 3, 1, 1, false));
  let main = 'conv2';
  if (poolSide !== convSide) {
    g.add('pad', new Pad({ bottom: poolSide - convSide, right: poolSide - convSide }), 'conv2');
    main = 'pad';
  }
  g.add('pool', new AvgPool2d({ kernel: 2, stride: 2 }), 'input');
  let short = 'pool';
  if (cout !== cin) {
    g.add('padc', new Pad({ channelsAfter: cout - cin }), 'pool');
    short = 'padc';
  }
  g.add('add', new Add(), [main, short]).add('relu', new ReLU());
  return { block: g, size: poolSide };
}

export interface FaceApiResNetOptions {
  /** Input side. Default 150 (what face-api feeds). */
  inputSize?: number;
}

/** The face-api / dlib ResNet descriptor network (a Sequential with face-api's layer names). */
export class FaceApiResNet extends Sequential {
  readonly inputSize: number;
  /** Filled by the loader (lib/io/faceapi.ts). */
  info: ModelInfo;

  constructor(opts: FaceApiResNetOptions = {}) {
    super();
    const S = opts.inputSize ?? 150;
    this.inputSize = S;
    let size = Math.floor((S - 7) / 2) + 1;
    this.append(convLayer(3, 32, 7, 2, 0, true), 'conv32_down');
    this.append(new MaxPool2d({ kernel: 3, stride: 2 }), 'maxpool');
    size = Math.floor((size - 3) / 2) + 1;
    for (const i of [1, 2, 3]) this.append(residual(32), `conv32_${i}`);
    const stages: [number, number, number][] = [
      [32, 64, 3],
      [64, 128, 2],
      [128, 256, 2],
    ];
    for (const [cin, cout, n] of stages) {
      const d = residualDown(cin, cout, size);
      this.append(d.block, `conv${cout}_down`);
      size = d.size;
      for (let i = 1; i <= n; i++) this.append(residual(cout), `conv${cout}_${i}`);
    }
    const d = residualDown(256, 256, size);
    this.append(d.block, 'conv256_down_out');
    this.append(new GlobalAvgPool(), 'mean');
    this.append(new Linear(256, 128, { bias: false }), 'fc');
    this.info = {
      name: 'faceapi-resnet',
      format: 'faceapi-resnet',
      inputShape: [S, S, 3],
      outputDim: 128,
      normalizedOutput: false,
      preprocessing: { colorOrder: 'RGB', normalize: { mean: [...FACEAPI_MEAN_RGB], std: FACEAPI_SCALE } },
      source: "face-api's FaceRecognitionNet (dlib ResNet descriptor), @vladmandic/face-api",
    };
  }

  override forward(x: FTensor): FTensor {
    const s = x.shape;
    if (s.length !== 4 || s[1] !== this.inputSize || s[2] !== this.inputSize || s[3] !== 3)
      throw new QuantFaceError('E_SHAPE', `FaceApiResNet takes [N, ${this.inputSize}, ${this.inputSize}, 3] (NHWC, preprocessed), got ${shapeStr(s)}`);
    return super.forward(x);
  }
}

/** face-api weight name -> (module path, parameter, layout). */
function targetOf(model: FaceApiResNet, name: string): { p: { data: { data: Float32Array | Float64Array; shape: readonly number[] } }; kind: 'hwio' | 'vec' | 'fc' } | null {
  if (name === 'fc') return { p: (model.getChild('fc') as Linear).weight as never, kind: 'fc' };
  const m = /^(.+)\/(conv|scale)\/(filters|bias|weights|biases)$/.exec(name);
  if (!m) return null;
  const path = m[1]!.split('/');
  let mod: Module | undefined = model;
  for (const part of path) mod = mod?.getChild(part);
  const layer = mod?.getChild(m[2]!);
  if (!layer) return null;
  if (m[2] === 'conv') {
    const c = layer as Conv2d;
    return m[3] === 'filters' ? { p: c.weight as never, kind: 'hwio' } : m[3] === 'bias' && c.bias ? { p: c.bias as never, kind: 'vec' } : null;
  }
  const a = layer as ChannelAffine;
  const p = m[3] === 'weights' ? a.weight : m[3] === 'biases' ? a.bias : null;
  return p ? { p: p as never, kind: 'vec' } : null;
}

/**
 * Copies face-api weights (name -> shape + float values, as in its weights
 * manifest: HWIO filters, [256, 128] fc) into the model. Every weight of
 * the model must be present exactly once, with the right shape; throws
 * E_FORMAT naming the first missing, unknown or misshapen weight.
 */
export function assignFaceApiWeights(model: FaceApiResNet, weights: Map<string, { shape: number[]; data: ArrayLike<number> }>, where = 'face-api weights'): void {
  const seen = new Set<unknown>();
  for (const [name, w] of weights) {
    const tgt = targetOf(model, name);
    if (!tgt) throw new QuantFaceError('E_FORMAT', `${where}: unknown weight ${name} (not part of face-api's FaceRecognitionNet)`);
    const dst = tgt.p.data;
    const shape = dst.shape;
    const n = w.shape.reduce((a, b) => a * b, 1);
    const d = w.data;
    if (n !== d.length) throw new QuantFaceError('E_FORMAT', `${where}: weight ${name} has ${d.length} values for shape ${shapeStr(w.shape)}`);
    if (tgt.kind === 'hwio') {
      const [co, kh, kw, ci] = shape as [number, number, number, number];
      if (w.shape.length !== 4 || w.shape[0] !== kh || w.shape[1] !== kw || w.shape[2] !== ci || w.shape[3] !== co)
        throw new QuantFaceError('E_FORMAT', `${where}: weight ${name} has shape ${shapeStr(w.shape)}, expected ${shapeStr([kh, kw, ci, co])}`);
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++)
          for (let c = 0; c < ci; c++) for (let o = 0; o < co; o++) dst.data[((o * kh + y) * kw + x) * ci + c] = d[((y * kw + x) * ci + c) * co + o]!;
    } else if (tgt.kind === 'fc') {
      const [out, inp] = shape as [number, number];
      if (w.shape.length !== 2 || w.shape[0] !== inp || w.shape[1] !== out)
        throw new QuantFaceError('E_FORMAT', `${where}: weight fc has shape ${shapeStr(w.shape)}, expected ${shapeStr([inp, out])}`);
      for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) dst.data[o * inp + i] = d[i * out + o]!;
    } else {
      if (w.shape.length !== 1 || w.shape[0] !== shape[0])
        throw new QuantFaceError('E_FORMAT', `${where}: weight ${name} has shape ${shapeStr(w.shape)}, expected ${shapeStr(shape)}`);
      for (let i = 0; i < n; i++) dst.data[i] = d[i]!;
    }
    seen.add(tgt.p);
  }
  const missing = [...model.namedParameters()].filter(([, p]) => !seen.has(p)).map(([n]) => n);
  if (missing.length) throw new QuantFaceError('E_FORMAT', `${where}: ${missing.length} weights missing (${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', ...' : ''})`);
}
