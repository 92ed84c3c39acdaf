/**
 * iResNet (insightface arcface_torch backbones/iresnet.py), NHWC:
 *   conv1 3x3 (3->64, s1) - bn1 - prelu
 *   layer1..4: IBasicBlocks (64, 128, 256, 512 channels, first block stride 2)
 *     block: bn1 - conv1 3x3 - bn2 - prelu - conv2 3x3 (stride) - bn3, + shortcut
 *     shortcut: identity, or downsample = conv1x1 (stride) - BN when shape changes
 *   bn2 - flatten - dropout - fc (512*7*7 -> 512) - features (BatchNorm1d, weight frozen at 1)
 * All BN eps 1e-5; convolutions bias-free; PReLU per channel, init 0.25.
 * Names match the PyTorch state dict (layer1.0.conv1.weight, ...), except
 * that weights are OHWI and fc's input columns are in (h, w, c) order.
 */
import { Rng, QuantFaceError } from '../tensor.js';
import { Module } from '../nn/module.js';
import { Conv2d, BatchNorm2d, BatchNorm1d, PReLU, Add, Flatten, Dropout, Linear, init } from '../nn/layers.js';
import { Sequential, Graph } from '../nn/containers.js';

export interface IResNetOptions {
  /** Embedding size. Default 512. */
  numFeatures?: number;
  /** Dropout before fc. Default 0 (arcface_torch's default). */
  dropout?: number;
  /** Input height = width (divisible by 16). Default 112. */
  inputSize?: number;
  /** Channels of the stem and the four stages. Default [64, 128, 256, 512] (smaller for tests). */
  widths?: [number, number, number, number];
  /** Initialisation seed. Default 0. */
  seed?: number;
}

export const IRESNET_LAYERS = {
  iresnet18: [2, 2, 2, 2],
  iresnet34: [3, 4, 6, 3],
  iresnet50: [3, 4, 14, 3],
  iresnet100: [3, 13, 30, 3],
} as const satisfies Record<string, readonly [number, number, number, number]>;

/** One IBasicBlock as a Graph: nodes bn1, conv1, bn2, prelu, conv2, bn3, [downsample], add. */
export function iBasicBlock(inplanes: number, planes: number, stride: number, rng: Rng): Graph {
  const g = new Graph()
    .add('bn1', new BatchNorm2d(inplanes, { eps: 1e-5 }))
    .add('conv1', new Conv2d(inplanes, planes, 3, { padding: 1, rng, init: false }))
    .add('bn2', new BatchNorm2d(planes, { eps: 1e-5 }))
    .add('prelu', new PReLU(planes))
    .add('conv2', new Conv2d(planes, planes, 3, { stride, padding: 1, rng, init: false }))
    .add('bn3', new BatchNorm2d(planes, { eps: 1e-5 }));
  if (stride !== 1 || inplanes !== planes) {
    g.add(
      'downsample',
      new Sequential([new Conv2d(inplanes, planes, 1, { stride, rng, init: false }), new BatchNorm2d(planes, { eps: 1e-5 })]),
      'input',
    );
    g.add('add', new Add(), ['bn3', 'downsample']);
  } else g.add('add', new Add(), ['bn3', 'input']);
  return g;
}

/** The iResNet backbone (a Sequential with the PyTorch child names). */
export class IResNet extends Sequential {
  readonly numFeatures: number;
  readonly inputSize: number;

  constructor(layers: readonly [number, number, number, number] | readonly number[], opts: IResNetOptions = {}) {
    super();
    if (layers.length !== 4) throw new QuantFaceError('E_ARG', 'IResNet: layers must list 4 stage depths');
    const numFeatures = opts.numFeatures ?? 512;
    const inputSize = opts.inputSize ?? 112;
    if (inputSize % 16 !== 0) throw new QuantFaceError('E_ARG', `IResNet: inputSize must be divisible by 16, got ${inputSize}`);
    const widths = opts.widths ?? [64, 128, 256, 512];
    const rng = new Rng(opts.seed ?? 0);
    this.numFeatures = numFeatures;
    this.inputSize = inputSize;
    this.append(new Conv2d(3, widths[0], 3, { padding: 1, rng, init: false }), 'conv1');
    this.append(new BatchNorm2d(widths[0], { eps: 1e-5 }), 'bn1');
    this.append(new PReLU(widths[0]), 'prelu');
    let inplanes = widths[0];
    for (let s = 0; s < 4; s++) {
      const planes = widths[s]!;
      const stage = new Sequential();
      for (let b = 0; b < layers[s]!; b++) {
        stage.append(iBasicBlock(inplanes, planes, b === 0 ? 2 : 1, rng));
        inplanes = planes;
      }
      this.append(stage, `layer${s + 1}`);
    }
    const fcScale = (inputSize / 16) ** 2;
    this.append(new BatchNorm2d(inplanes, { eps: 1e-5 }), 'bn2');
    this.append(new Flatten(), 'flatten');
    this.append(new Dropout(opts.dropout ?? 0, (opts.seed ?? 0) + 1), 'dropout');
    this.append(new Linear(inplanes * fcScale, numFeatures, { rng }), 'fc');
    const features = new BatchNorm1d(numFeatures, { eps: 1e-5 });
    features.freezeAffine();
    this.append(features, 'features');
    // arcface_torch: every conv weight ~ N(0, 0.1); BN weight 1, bias 0 (already); fc keeps PyTorch's default init.
    for (const m of this.modules()) if (m instanceof Conv2d) init.normal(m.weight.data, rng, 0.1);
  }
}

export function iresnet18(opts?: IResNetOptions): IResNet {
  return new IResNet(IRESNET_LAYERS.iresnet18, opts);
}
export function iresnet34(opts?: IResNetOptions): IResNet {
  return new IResNet(IRESNET_LAYERS.iresnet34, opts);
}
export function iresnet50(opts?: IResNetOptions): IResNet {
  return new IResNet(IRESNET_LAYERS.iresnet50, opts);
}
export function iresnet100(opts?: IResNetOptions): IResNet {
  return new IResNet(IRESNET_LAYERS.iresnet100, opts);
}

export type { Module };
