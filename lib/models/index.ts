/** Face-recognition backbones as insightface / QuantFace define them (NHWC). */
export { IResNet, iresnet18, iresnet34, iresnet50, iresnet100, iBasicBlock, IRESNET_LAYERS, type IResNetOptions } from './iresnet.js';
export { MobileFaceNet, mobilefacenet, depthWise, type MobileFaceNetOptions } from './mobilefacenet.js';
export { countParams, countMacs, countFlops, outputShape } from './count.js';
