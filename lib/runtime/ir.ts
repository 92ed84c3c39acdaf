/**
 * The runtime's view of an engine model: the module tree (Sequential,
 * Graph and their subclasses) flattened into a list of leaf nodes in
 * execution order, each reading and writing named values. Activation
 * quantizers attached to a layer (`outQuant` of PReLU / ReLU / Add / Clamp)
 * become nodes of their own, so every value is either "quantized" (the
 * output of an ActFakeQuant) or a plain float tensor.
 *
 * Shapes are per sample (the batch dimension is left out).
 */
import { QuantFaceError } from '../errors.js';
import { Module } from '../nn/module.js';
import { Conv2d, Linear, BatchNorm, PReLU, ReLU, Add, Identity, Flatten, Dropout, L2Normalize } from '../nn/layers.js';
import { Sequential, Graph } from '../nn/containers.js';
import { ChannelAffine, Clamp, Reshape } from '../nn/import-ops.js';
import { ActFakeQuant } from '../quant/fake-quant.js';
import { LsqActFakeQuant } from '../quant/lsq.js';
import { isActQuantizer } from './quantizers.js';

export type IrKind = 'conv' | 'linear' | 'bn' | 'caffine' | 'prelu' | 'relu' | 'clamp' | 'add' | 'quant' | 'alias' | 'l2norm' | 'generic';

export interface IrValue {
  id: number;
  /** Per-sample shape. */
  shape: number[];
  producer: IrNode | null;
  consumers: IrNode[];
}

export interface IrNode {
  id: number;
  kind: IrKind;
  /** The leaf module (the ActFakeQuant for 'quant' nodes). */
  module: Module;
  /** Dotted module path (quantizer nodes of a layer: `<layer>.outQuant`). */
  path: string;
  inputs: IrValue[];
  output: IrValue;
}

export interface IrGraph {
  nodes: IrNode[];
  values: IrValue[];
  input: IrValue;
  output: IrValue;
}

function join(a: string, b: string): string {
  return a ? `${a}.${b}` : b;
}

/** Kind of a leaf module (the layer itself; its outQuant is handled separately). */
export function leafKind(m: Module): IrKind {
  if (m instanceof Conv2d) return 'conv';
  if (m instanceof Linear) return 'linear';
  if (m instanceof BatchNorm) return 'bn';
  if (m instanceof ChannelAffine) return 'caffine';
  if (m instanceof PReLU) return 'prelu';
  if (m instanceof ReLU) return 'relu';
  if (m instanceof Clamp) return 'clamp';
  if (m instanceof Add) return 'add';
  if (m instanceof ActFakeQuant || m instanceof LsqActFakeQuant) return m.fakeQuantEnabled ? 'quant' : 'alias';
  // Dropout is the identity at inference; Flatten / Reshape of NHWC data keep the memory order.
  if (m instanceof Identity || m instanceof Flatten || m instanceof Reshape || m instanceof Dropout) return 'alias';
  if (m instanceof L2Normalize) return 'l2norm';
  return 'generic';
}

/** The enabled activation quantizer attached to a layer, if any. */
export function outQuantOf(m: Module): Module | undefined {
  if (!(m instanceof PReLU || m instanceof ReLU || m instanceof Add || m instanceof Clamp)) return undefined;
  const q = m.getChild('outQuant');
  return isActQuantizer(q) ? q : undefined;
}

/**
 * Flattens `model` for an input of per-sample shape `inputShape`.
 * Throws E_SHAPE when a layer refuses the shapes, E_UNSUPPORTED_OP for
 * containers with several inputs.
 */
export function flattenModel(model: Module, inputShape: readonly number[]): IrGraph {
  const nodes: IrNode[] = [];
  const values: IrValue[] = [];
  const newValue = (shape: number[], producer: IrNode | null): IrValue => {
    const v: IrValue = { id: values.length, shape, producer, consumers: [] };
    values.push(v);
    return v;
  };
  const addNode = (kind: IrKind, module: Module, path: string, inputs: IrValue[], shape: number[]): IrValue => {
    const node: IrNode = { id: nodes.length, kind, module, path, inputs, output: null as unknown as IrValue };
    node.output = newValue(shape, node);
    for (const i of inputs) i.consumers.push(node);
    nodes.push(node);
    return node.output;
  };
  const emit = (m: Module, path: string, ins: IrValue[]): IrValue => {
    if (m instanceof Graph) {
      if (ins.length !== m.inputNames.length) throw new QuantFaceError('E_UNSUPPORTED_OP', `runtime: graph ${path || '(root)'} takes ${m.inputNames.length} inputs`);
      const env = new Map<string, IrValue>(m.inputNames.map((n, i) => [n, ins[i]!]));
      for (const nd of m.nodeList) env.set(nd.name, emit(m.getChild(nd.name)!, join(path, nd.name), nd.inputs.map((i) => env.get(i)!)));
      const out = m.outputNames[0];
      if (!out) throw new QuantFaceError('E_UNSUPPORTED_OP', `runtime: graph ${path || '(root)'} has no nodes`);
      return env.get(out)!;
    }
    if (m instanceof Sequential) {
      let v = ins[0]!;
      for (const [n, c] of m.namedChildren()) v = emit(c, join(path, n), [v]);
      return v;
    }
    const kind = leafKind(m);
    const shapes = ins.map((v) => [1, ...v.shape]);
    let outShape: number[];
    try {
      outShape = m.inferShape(...shapes).shape.slice(1);
    } catch (e) {
      if (e instanceof QuantFaceError) throw e;
      throw new QuantFaceError('E_SHAPE', `runtime: ${path}: ${(e as Error).message}`, { cause: e });
    }
    let v = addNode(kind, m, path, ins, outShape);
    const q = outQuantOf(m);
    if (q) v = addNode('quant', q, join(path, 'outQuant'), [v], outShape);
    return v;
  };
  const input = newValue([...inputShape], null);
  const output = emit(model, '', [input]);
  return { nodes, values, input, output };
}

/** True when the value leaves the graph (the model's output). */
export function isGraphOutput(g: IrGraph, v: IrValue): boolean {
  return g.output === v;
}

/** The single consumer of v, or undefined when v has several (or none) or is the output. */
export function soleConsumer(g: IrGraph, v: IrValue): IrNode | undefined {
  return v.consumers.length === 1 && g.output !== v ? v.consumers[0] : undefined;
}
