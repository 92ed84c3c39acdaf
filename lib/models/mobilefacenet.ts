/**
 * MobileFaceNet as QuantFace's reference defines it (backbones/mobilefacenet.py,
 * after cavaface): 1,003,136 parameters, 128-d embedding, GDC head. NHWC.
 *
 *   conv1      Conv_block 3->64, 3x3 s2                (conv-bn-prelu)
 *   conv2_dw   Conv_block 64->64 depthwise 3x3 s1
 *   conv_23    Depth_Wise 64->64, expand 128, s2       (1x1 conv_block, dw 3x3 conv_block, 1x1 linear_block)
 *   conv_3     Residual 4 x Depth_Wise 64, expand 128   (each with x + block(x))
 *   conv_34    Depth_Wise 64->128, expand 256, s2
 *   conv_4     Residual 6 x Depth_Wise 128, expand 256
 *   conv_45    Depth_Wise 128->128, expand 512, s2
 *   conv_5     Residual 2 x Depth_Wise 128, expand 256
 *   conv_6_sep Conv_block 128->512 1x1
 *   output_layer GDC: conv_6_dw Linear_block depthwise 7x7 (valid) - flatten - linear 512->128 (no bias) - bn (BatchNorm1d)
 *
 * Names match the PyTorch state dict (conv_3.model.0.conv_dw.conv.weight, ...).
 * Initialisation as the reference: Kaiming normal (fan_out, ReLU gain) for
 * convolutions and the linear layer, BN weight 1 / bias 0, PReLU 0.25.
 */
import { Rng, QuantFaceError } from '../tensor.js';
import { Module } from '../nn/module.js';
import { Conv2d, BatchNorm2d, BatchNorm1d, PReLU, Add, Flatten, Linear, init, type Pair } from '../nn/layers.js';
import { Sequential, Graph } from '../nn/containers.js';

export interface MobileFaceNetOptions {
  /** Default 128. */
  embeddingSize?: number;
  /** Input height = width. Default 112 (the GDC kernel covers the final feature map: 7x7 at 112). */
  inputSize?: number;
  /** Multiplies every channel count (e.g. 0.25 for a tiny test network). Default 1. */
  widthMultiplier?: number;
  /** Residual units in conv_3, conv_4, conv_5. Default [4, 6, 2]. */
  blocks?: [number, number, number];
  /** Initialisation seed. Default 0. */
  seed?: number;
}

function convBlock(inC: number, outC: number, kernel: Pair, stride: number, padding: number, groups: number, rng: Rng, prelu = true): Sequential {
  const s = new Sequential({
    conv: new Conv2d(inC, outC, kernel, { stride, padding, groups, rng, init: false }),
    bn: new BatchNorm2d(outC),
  });
  if (prelu) s.append(new PReLU(outC), 'prelu');
  return s;
}

/** Depth_Wise unit: conv (1x1 expand) - conv_dw (depthwise) - project (1x1 linear), optionally + input. */
export function depthWise(inC: number, outC: number, groups: number, stride: number, residual: boolean, rng: Rng): Graph {
  const g = new Graph()
    .add('conv', convBlock(inC, groups, 1, 1, 0, 1, rng))
    .add('conv_dw', convBlock(groups, groups, 3, stride, 1, groups, rng))
    .add('project', convBlock(groups, outC, 1, 1, 0, 1, rng, false));
  if (residual) g.add('add', new Add(), ['project', 'input']);
  return g;
}

/** Residual stage: `model` = num units of residual Depth_Wise. */
function residualStage(c: number, num: number, groups: number, rng: Rng): Sequential {
  const model = new Sequential();
  for (let i = 0; i < num; i++) model.append(depthWise(c, c, groups, 1, true, rng));
  return new Sequential({ model });
}

function finalSize(inputSize: number): number {
  let s = inputSize;
  for (let i = 0; i < 4; i++) s = Math.floor((s + 2 - 3) / 2) + 1;
  return s;
}

export class MobileFaceNet extends Sequential {
  readonly embeddingSize: number;
  readonly inputSize: number;

  constructor(opts: MobileFaceNetOptions = {}) {
    super();
    const emb = opts.embeddingSize ?? 128;
    const inputSize = opts.inputSize ?? 112;
    const wm = opts.widthMultiplier ?? 1;
    const [b3, b4, b5] = opts.blocks ?? [4, 6, 2];
    const ch = (c: number): number => {
      const v = Math.max(1, Math.round(c * wm));
      return v;
    };
    const k = finalSize(inputSize);
    if (k < 1) throw new QuantFaceError('E_ARG', `MobileFaceNet: inputSize ${inputSize} is too small`);
    const rng = new Rng(opts.seed ?? 0);
    this.embeddingSize = emb;
    this.inputSize = inputSize;
    const c64 = ch(64);
    const c128 = ch(128);
    const c256 = ch(256);
    const c512 = ch(512);
    this.append(convBlock(3, c64, 3, 2, 1, 1, rng), 'conv1');
    this.append(convBlock(c64, c64, 3, 1, 1, c64, rng), 'conv2_dw');
    this.append(depthWise(c64, c64, c128, 2, false, rng), 'conv_23');
    this.append(residualStage(c64, b3, c128, rng), 'conv_3');
    this.append(depthWise(c64, c128, c256, 2, false, rng), 'conv_34');
    this.append(residualStage(c128, b4, c256, rng), 'conv_4');
    this.append(depthWise(c128, c128, c512, 2, false, rng), 'conv_45');
    this.append(residualStage(c128, b5, c256, rng), 'conv_5');
    this.append(convBlock(c128, c512, 1, 1, 0, 1, rng), 'conv_6_sep');
    this.append(
      new Sequential({
        conv_6_dw: convBlock(c512, c512, k, 1, 0, c512, rng, false),
        conv_6_flatten: new Flatten(),
        linear: new Linear(c512, emb, { bias: false, rng }),
        bn: new BatchNorm1d(emb),
      }),
      'output_layer',
    );
    for (const m of this.modules()) {
      if (m instanceof Conv2d) init.kaimingNormal(m.weight.data, rng, m.fans.fanOut);
      else if (m instanceof Linear) init.kaimingNormal(m.weight.data, rng, m.outFeatures);
    }
  }
}

export function mobilefacenet(opts?: MobileFaceNetOptions): MobileFaceNet {
  return new MobileFaceNet(opts);
}

export type { Module };
