/** Training engine layers, containers and losses (see module.ts for the execution model). */
export { Module, Parameter, noGrad, isGradEnabled, type ShapeInfo } from './module.js';
export {
  WeightTransform,
  Conv2d,
  Linear,
  BatchNorm,
  BatchNorm1d,
  BatchNorm2d,
  PReLU,
  ReLU,
  Add,
  Identity,
  Flatten,
  Dropout,
  L2Normalize,
  init,
  type Conv2dConfig,
  type LinearConfig,
  type BatchNormConfig,
  type Pair,
} from './layers.js';
export { Sequential, Graph, residual, type GraphNode } from './containers.js';
export {
  Pad,
  Clamp,
  ChannelAffine,
  Multiply,
  Subtract,
  Abs,
  Reshape,
  NhwcToNchw,
  GlobalAvgPool,
  MaxPool2d,
  AvgPool2d,
  Concat,
  Slice,
  Exp,
  Softmax,
  ConstBinary,
  f32Tensor,
  type PadConfig,
  type ChannelAffineConfig,
  type Pool2dConfig,
} from './import-ops.js';
export { QuantFaceLoss, RelationLoss, MSELoss } from './loss.js';
export { kernelSources } from './kernels.js';
export { gradCheck, type GradCheckOptions, type GradCheckResult, type GradCheckEntry } from './gradcheck.js';
export { foldBatchNorm } from './fold.js';
export { bufferPool, BufferPool } from './pool.js';
