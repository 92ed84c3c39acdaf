/**
 * Module trees as JSON: `describeModule(model)` writes the structure
 * (types, configs, children, graph wiring; no tensor values) and
 * `buildModule(spec, tensorShapes)` rebuilds it. The builder validates
 * every field and checks each module's parameter and buffer shapes
 * against the caller's tensor table BEFORE constructing it, so a hostile
 * or corrupted description cannot make it allocate more than the file
 * holds; every problem is a QuantFaceError E_FORMAT naming the module.
 *
 * Known types: Sequential, Graph (subclasses such as ImportedModel,
 * IResNet, MobileFaceNet or FaceApiResNet are saved as their container),
 * Conv2d, Linear, BatchNorm / BatchNorm1d / BatchNorm2d, PReLU, ReLU, Add,
 * Identity, Flatten, Dropout, L2Normalize, the import ops (Pad, Clamp,
 * ChannelAffine, Multiply, Subtract, Abs, Reshape, GlobalAvgPool,
 * MaxPool2d, AvgPool2d, NhwcToNchw, Concat, Slice, Exp, Softmax,
 * ConstBinary: a detector head's ops) and the fake quantizers (WeightFakeQuant,
 * ActFakeQuant).
 */
import { QuantFaceError } from '../errors.js';
import { Module } from '../nn/module.js';
import { Conv2d, Linear, BatchNorm, BatchNorm1d, BatchNorm2d, PReLU, ReLU, Add, Identity, Flatten, Dropout, L2Normalize } from '../nn/layers.js';
import { Sequential, Graph } from '../nn/containers.js';
import { Pad, Clamp, ChannelAffine, Multiply, Subtract, Abs, Reshape, GlobalAvgPool, MaxPool2d, AvgPool2d, NhwcToNchw, Concat, Slice, Exp, Softmax, ConstBinary } from '../nn/import-ops.js';
import { WeightFakeQuant, ActFakeQuant } from '../quant/fake-quant.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface ModuleSpec {
  type: string;
  config?: { [k: string]: Json };
  /** Children by name, in registration order (graph nodes for Graph). */
  children?: [string, ModuleSpec][];
  /** Graph only: input names, node inputs (same order as children), output. */
  graph?: { inputs: string[]; nodes: string[][]; output: string };
}

/** JSON has no Infinity / NaN: numbers that are not finite become {"$num": "Infinity"}. */
export function encNum(v: number): Json {
  return Number.isFinite(v) ? v : { $num: String(v) };
}

function bad(where: string, msg: string): QuantFaceError {
  return new QuantFaceError('E_FORMAT', `model description: ${where}: ${msg}`);
}

class Cfg {
  constructor(
    readonly c: { [k: string]: Json },
    readonly where: string,
  ) {}
  num(k: string, opts: { min?: number; max?: number; int?: boolean; finite?: boolean } = {}): number {
    let v = this.c[k] as Json;
    if (v && typeof v === 'object' && !Array.isArray(v) && typeof (v as { $num?: unknown }).$num === 'string') {
      const s = (v as { $num: string }).$num;
      v = s === 'Infinity' ? Infinity : s === '-Infinity' ? -Infinity : s === 'NaN' ? NaN : (undefined as never);
    }
    if (typeof v !== 'number' || Number.isNaN(v)) throw bad(this.where, `'${k}' must be a number`);
    if (opts.finite !== false && !Number.isFinite(v)) throw bad(this.where, `'${k}' must be finite`);
    if (opts.int && !Number.isInteger(v)) throw bad(this.where, `'${k}' must be an integer`);
    if (opts.min !== undefined && v < opts.min) throw bad(this.where, `'${k}' = ${v} is below ${opts.min}`);
    if (opts.max !== undefined && v > opts.max) throw bad(this.where, `'${k}' = ${v} is above ${opts.max}`);
    return v;
  }
  int(k: string, min = 0, max = 1 << 24): number {
    return this.num(k, { min, max, int: true });
  }
  bool(k: string): boolean {
    const v = this.c[k];
    if (typeof v !== 'boolean') throw bad(this.where, `'${k}' must be true or false`);
    return v;
  }
  str<T extends string>(k: string, allowed: readonly T[]): T {
    const v = this.c[k];
    if (typeof v !== 'string' || !allowed.includes(v as T)) throw bad(this.where, `'${k}' must be one of ${allowed.join(', ')}`);
    return v as T;
  }
  ints(k: string, len: number, min = 0, max = 1 << 16): number[] {
    const v = this.c[k];
    if (!Array.isArray(v) || v.length !== len || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max))
      throw bad(this.where, `'${k}' must be ${len} integers in [${min}, ${max}]`);
    return v as number[];
  }
  intList(k: string, maxLen: number, min: number, max: number): number[] {
    const v = this.c[k];
    if (!Array.isArray(v) || v.length > maxLen || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max))
      throw bad(this.where, `'${k}' must be a list of at most ${maxLen} integers in [${min}, ${max}]`);
    return v as number[];
  }
}

type Shapes = Record<string, number[]>;
interface TypeDef {
  /** Exact class this definition saves. */
  cls: abstract new (...a: never[]) => Module;
  config(m: Module): { [k: string]: Json };
  /** Own parameter and buffer shapes implied by the config (children excluded). */
  shapes(c: Cfg): { params: Shapes; buffers: Shapes };
  build(c: Cfg): Module;
}

const none = (): { params: Shapes; buffers: Shapes } => ({ params: {}, buffers: {} });

/** Elements of a ConstBinary constant (its shape checked; at most 2^26 values). */
function constNumel(c: Cfg): number {
  const n = c.intList('shape', 8, 1, 1 << 24).reduce((a, b) => a * b, 1);
  if (n > 1 << 26) throw bad(c.where, `the constant has ${n} values (over ${1 << 26})`);
  return n;
}
const simple = (cls: new () => Module): TypeDef => ({ cls, config: () => ({}), shapes: none, build: () => new cls() });

const DEFS: Record<string, TypeDef> = {
  Conv2d: {
    cls: Conv2d,
    config: (m) => {
      const c = m as Conv2d;
      return {
        inChannels: c.inChannels,
        outChannels: c.outChannels,
        kernel: [c.kernelH, c.kernelW],
        stride: [c.strideH, c.strideW],
        padding: [c.padTop, c.padLeft, c.padBottom, c.padRight],
        dilation: [c.dilationH, c.dilationW],
        groups: c.groups,
        bias: c.bias !== null,
      };
    },
    shapes: (c) => {
      const cin = c.int('inChannels', 1);
      const cout = c.int('outChannels', 1);
      const g = c.int('groups', 1);
      const [kh, kw] = c.ints('kernel', 2, 1, 1024);
      if (cin % g || cout % g) throw bad(c.where, 'channels must be divisible by groups');
      return { params: { weight: [cout, kh!, kw!, cin / g], ...(c.bool('bias') ? { bias: [cout] } : {}) }, buffers: {} };
    },
    build: (c) => {
      const [kh, kw] = c.ints('kernel', 2, 1, 1024);
      const p = c.ints('padding', 4, 0, 1 << 16);
      return new Conv2d(c.int('inChannels', 1), c.int('outChannels', 1), [kh!, kw!], {
        stride: c.ints('stride', 2, 1, 1024) as [number, number],
        padding: p as [number, number, number, number],
        dilation: c.ints('dilation', 2, 1, 1024) as [number, number],
        groups: c.int('groups', 1),
        bias: c.bool('bias'),
        init: false,
      });
    },
  },
  Linear: {
    cls: Linear,
    config: (m) => ({ inFeatures: (m as Linear).inFeatures, outFeatures: (m as Linear).outFeatures, bias: (m as Linear).bias !== null }),
    shapes: (c) => ({ params: { weight: [c.int('outFeatures', 1), c.int('inFeatures', 1)], ...(c.bool('bias') ? { bias: [c.int('outFeatures', 1)] } : {}) }, buffers: {} }),
    build: (c) => new Linear(c.int('inFeatures', 1), c.int('outFeatures', 1), { bias: c.bool('bias') }),
  },
  ...Object.fromEntries(
    ([
      ['BatchNorm', BatchNorm],
      ['BatchNorm1d', BatchNorm1d],
      ['BatchNorm2d', BatchNorm2d],
    ] as const).map(([name, cls]) => [
      name,
      {
        cls,
        config: (m: Module) => {
          const b = m as BatchNorm;
          return { numFeatures: b.numFeatures, eps: b.eps, momentum: b.momentum, affine: b.weight !== null };
        },
        shapes: (c: Cfg) => {
          const n = c.int('numFeatures', 1);
          const params: Shapes = c.bool('affine') ? { weight: [n], bias: [n] } : {};
          return { params, buffers: { running_mean: [n], running_var: [n] } };
        },
        build: (c: Cfg) => new cls(c.int('numFeatures', 1), { eps: c.num('eps', { min: 0 }), momentum: c.num('momentum', { min: 0, max: 1 }), affine: c.bool('affine') }),
      } satisfies TypeDef,
    ]),
  ),
  PReLU: {
    cls: PReLU,
    config: (m) => ({ numParameters: (m as PReLU).numParameters }),
    shapes: (c) => ({ params: { weight: [c.int('numParameters', 1)] }, buffers: {} }),
    build: (c) => new PReLU(c.int('numParameters', 1)),
  },
  ReLU: simple(ReLU),
  Add: simple(Add),
  Identity: simple(Identity),
  Flatten: simple(Flatten),
  Multiply: simple(Multiply),
  Subtract: simple(Subtract),
  Abs: simple(Abs),
  NhwcToNchw: simple(NhwcToNchw),
  Dropout: {
    cls: Dropout,
    config: (m) => ({ p: (m as Dropout).p }),
    shapes: none,
    build: (c) => new Dropout(c.num('p', { min: 0, max: 0.999999 })),
  },
  L2Normalize: {
    cls: L2Normalize,
    config: (m) => ({ eps: (m as L2Normalize).eps }),
    shapes: none,
    build: (c) => new L2Normalize(c.num('eps', { min: 0 })),
  },
  Pad: {
    cls: Pad,
    config: (m) => {
      const p = m as Pad;
      return { top: p.top, bottom: p.bottom, left: p.left, right: p.right, channelsBefore: p.channelsBefore, channelsAfter: p.channelsAfter, value: p.value };
    },
    shapes: none,
    build: (c) =>
      new Pad({
        top: c.int('top', 0, 1 << 16),
        bottom: c.int('bottom', 0, 1 << 16),
        left: c.int('left', 0, 1 << 16),
        right: c.int('right', 0, 1 << 16),
        channelsBefore: c.int('channelsBefore', 0, 1 << 16),
        channelsAfter: c.int('channelsAfter', 0, 1 << 16),
        value: c.num('value'),
      }),
  },
  Clamp: {
    cls: Clamp,
    config: (m) => ({ lo: encNum((m as Clamp).lo), hi: encNum((m as Clamp).hi) }),
    shapes: none,
    build: (c) => new Clamp(c.num('lo', { finite: false }), c.num('hi', { finite: false })),
  },
  ChannelAffine: {
    cls: ChannelAffine,
    config: (m) => {
      const a = m as ChannelAffine;
      return { channels: a.channels, scale: a.weight !== null, bias: a.bias !== null };
    },
    shapes: (c) => {
      const n = c.int('channels', 1);
      return { params: { ...(c.bool('scale') ? { weight: [n] } : {}), ...(c.bool('bias') ? { bias: [n] } : {}) }, buffers: {} };
    },
    build: (c) => {
      const n = c.int('channels', 1);
      return new ChannelAffine(n, { scale: c.bool('scale') ? new Float32Array(n) : null, bias: c.bool('bias') ? new Float32Array(n) : null });
    },
  },
  Reshape: {
    cls: Reshape,
    config: (m) => ({ shape: [...(m as Reshape).shape] }),
    shapes: none,
    build: (c) => new Reshape(c.intList('shape', 8, -1, 1 << 24)),
  },
  Concat: {
    cls: Concat,
    config: (m) => ({ axis: (m as Concat).axis, inputs: (m as Concat).inputs }),
    shapes: none,
    build: (c) => new Concat(c.int('axis', -8, 8), c.int('inputs', 1, 16)),
  },
  Slice: {
    cls: Slice,
    config: (m) => {
      const s = m as Slice;
      return { axis: s.axis, start: s.start, end: encNum(s.end) };
    },
    shapes: none,
    build: (c) => {
      const end = c.num('end', { finite: false });
      if (!(Number.isInteger(end) || end === Infinity) || Math.abs(end) > 2 ** 40 && end !== Infinity) throw bad(c.where, "'end' must be an integer or Infinity");
      return new Slice(c.int('axis', -8, 8), c.int('start', -(2 ** 40), 2 ** 40), end);
    },
  },
  Exp: simple(Exp),
  Softmax: {
    cls: Softmax,
    config: (m) => ({ axis: (m as Softmax).axis }),
    shapes: none,
    build: (c) => new Softmax(c.int('axis', -8, 8)),
  },
  ConstBinary: {
    cls: ConstBinary,
    config: (m) => {
      const b = m as ConstBinary;
      return { op: b.op, shape: [...b.constShape] };
    },
    shapes: (c) => ({ params: {}, buffers: { value: [constNumel(c)] } }),
    build: (c) => new ConstBinary(c.str('op', ['add', 'sub', 'mul', 'div', 'rsub', 'rdiv'] as const), new Float32Array(constNumel(c)), c.intList('shape', 8, 1, 1 << 24)),
  },
  GlobalAvgPool: {
    cls: GlobalAvgPool,
    config: (m) => ({ keepDims: (m as GlobalAvgPool).keepDims }),
    shapes: none,
    build: (c) => new GlobalAvgPool(c.bool('keepDims')),
  },
  ...Object.fromEntries(
    ([
      ['MaxPool2d', MaxPool2d],
      ['AvgPool2d', AvgPool2d],
    ] as const).map(([name, cls]) => [
      name,
      {
        cls,
        config: (m: Module) => {
          const p = m as MaxPool2d;
          return { kernel: [p.kh, p.kw], stride: [p.sh, p.sw], padding: [p.padTop, p.padLeft, p.padBottom, p.padRight] };
        },
        shapes: none,
        build: (c: Cfg) =>
          new cls({
            kernel: c.ints('kernel', 2, 1, 1024) as [number, number],
            stride: c.ints('stride', 2, 1, 1024) as [number, number],
            padding: c.ints('padding', 4, 0, 1024) as [number, number, number, number],
          }),
      } satisfies TypeDef,
    ]),
  ),
  WeightFakeQuant: {
    cls: WeightFakeQuant,
    config: (m) => {
      const q = m as WeightFakeQuant;
      return { bits: q.bits, symmetric: q.symmetric, ste: q.ste, fakeQuantEnabled: q.fakeQuantEnabled };
    },
    shapes: none,
    build: (c) => {
      const q = new WeightFakeQuant({ bits: c.int('bits', 2, 8), symmetric: c.bool('symmetric'), ste: c.str('ste', ['unmasked', 'clipped'] as const) });
      q.fakeQuantEnabled = c.bool('fakeQuantEnabled');
      return q;
    },
  },
  ActFakeQuant: {
    cls: ActFakeQuant,
    config: (m) => {
      const q = m as ActFakeQuant;
      return { bits: q.bits, ste: q.ste, calibrationSteps: encNum(q.calibrationSteps), symmetric: q.symmetric, inplace: q.inplace, fakeQuantEnabled: q.fakeQuantEnabled };
    },
    shapes: () => ({ params: {}, buffers: { min: [1], max: [1], steps: [1], frozen: [1] } }),
    build: (c) => {
      const steps = c.num('calibrationSteps', { min: 0, finite: false });
      if (!(Number.isInteger(steps) || steps === Infinity)) throw bad(c.where, "'calibrationSteps' must be an integer or Infinity");
      const q = new ActFakeQuant({ bits: c.int('bits', 2, 8), ste: c.str('ste', ['unmasked', 'clipped'] as const), calibrationSteps: steps, symmetric: c.bool('symmetric'), inplace: c.bool('inplace') });
      q.fakeQuantEnabled = c.bool('fakeQuantEnabled');
      return q;
    },
  },
};

/** The Graph's output value name (its input when it has no nodes). */
function graphOutput(g: Graph): string {
  return g.outputNames[0] ?? g.inputNames[0]!;
}

function typeOf(m: Module): string {
  for (const [name, d] of Object.entries(DEFS)) if (m.constructor === d.cls) return name;
  if (m instanceof Graph) return 'Graph';
  if (m instanceof Sequential) return 'Sequential';
  throw new QuantFaceError('E_UNSUPPORTED_OP', `cannot save a ${m.constructor.name} module: the quantface model file knows ${['Sequential', 'Graph', ...Object.keys(DEFS)].join(', ')}`);
}

/** JSON description of a module tree (structure and configs; no tensor values). */
export function describeModule(m: Module): ModuleSpec {
  const type = typeOf(m);
  const spec: ModuleSpec = { type };
  const def = DEFS[type];
  if (def) {
    const cfg = def.config(m);
    if (Object.keys(cfg).length) spec.config = cfg;
  }
  const kids = [...m.namedChildren()];
  if (kids.length) spec.children = kids.map(([n, c]) => [n, describeModule(c)]);
  if (m instanceof Graph) spec.graph = { inputs: [...m.inputNames], nodes: m.nodeList.map((n) => [...n.inputs]), output: graphOutput(m) };
  return spec;
}

export interface TensorShapeTable {
  /** Shape of the stored tensor with this dotted name, or undefined. */
  shapeOf(name: string): readonly number[] | undefined;
}

const MAX_DEPTH = 64;
const MAX_CHILDREN = 100_000;

function isObj(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

function sameShape(a: readonly number[] | undefined, b: readonly number[]): boolean {
  return !!a && a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Rebuilds a module tree from its description. Each module's own
 * parameters and buffers must appear in `table` with the shapes its
 * config implies (checked before the module is constructed).
 */
export function buildModule(spec: unknown, table: TensorShapeTable, prefix = '', depth = 0, count = { n: 0 }): Module {
  const where = prefix || '(root)';
  if (depth > MAX_DEPTH) throw bad(where, `nested deeper than ${MAX_DEPTH} levels`);
  if (!isObj(spec) || typeof spec.type !== 'string') throw bad(where, 'a module must be an object with a string type');
  const children = spec.children === undefined ? [] : spec.children;
  if (!Array.isArray(children) || children.some((c) => !Array.isArray(c) || c.length !== 2 || typeof c[0] !== 'string' || c[0] === '' || c[0].includes('.')))
    throw bad(where, "'children' must be a list of [name, module] pairs with non-empty names without dots");
  count.n += children.length;
  if (count.n > MAX_CHILDREN) throw bad(where, `more than ${MAX_CHILDREN} modules`);
  const names = new Set<string>();
  for (const [n] of children as [string, unknown][]) {
    if (names.has(n)) throw bad(where, `child name ${n} appears twice`);
    names.add(n);
  }
  const kid = (n: string, s: unknown): Module => buildModule(s, table, prefix ? `${prefix}.${n}` : n, depth + 1, count);
  const type = spec.type;
  if (type === 'Sequential') {
    const s = new Sequential();
    for (const [n, c] of children as [string, unknown][]) s.append(kid(n, c), n);
    return s;
  }
  if (type === 'Graph') {
    const g = spec.graph;
    if (!isObj(g) || !Array.isArray(g.inputs) || !Array.isArray(g.nodes) || typeof g.output !== 'string') throw bad(where, "a Graph needs 'graph': {inputs, nodes, output}");
    if (g.inputs.length < 1 || g.inputs.length > 16 || !g.inputs.every((x) => typeof x === 'string')) throw bad(where, 'graph inputs must be 1 to 16 names');
    if (g.nodes.length !== children.length || !g.nodes.every((x) => Array.isArray(x) && x.length <= 16 && x.every((y) => typeof y === 'string')))
      throw bad(where, 'graph nodes must list the inputs of each child');
    const graph = new Graph(g.inputs as string[]);
    const nodeInputs = g.nodes as string[][];
    (children as [string, unknown][]).forEach(([n, c], i) => {
      try {
        graph.add(n, kid(n, c), nodeInputs[i]!);
      } catch (e) {
        throw wrap(e, `${where}.${n}`);
      }
    });
    try {
      graph.output(g.output);
    } catch (e) {
      throw wrap(e, where);
    }
    return graph;
  }
  const def = DEFS[type];
  if (!def) throw bad(where, `unknown module type ${JSON.stringify(type).slice(0, 60)}`);
  const cfgRaw = spec.config === undefined ? {} : spec.config;
  if (!isObj(cfgRaw)) throw bad(where, "'config' must be an object");
  const cfg = new Cfg(cfgRaw as { [k: string]: Json }, `${where} (${type})`);
  const { params, buffers } = def.shapes(cfg);
  for (const [n, s] of [...Object.entries(params), ...Object.entries(buffers)]) {
    const key = prefix ? `${prefix}.${n}` : n;
    const have = table.shapeOf(key);
    if (!sameShape(have, s)) throw bad(where, `tensor ${key} ${have ? `has shape [${have.join(', ')}]` : 'is missing'}; the ${type} config implies [${s.join(', ')}]`);
  }
  let m: Module;
  try {
    m = def.build(cfg);
  } catch (e) {
    throw wrap(e, `${where} (${type})`);
  }
  for (const [n, c] of children as [string, unknown][]) {
    if (!['weightQuant', 'slopeQuant', 'outQuant'].includes(n)) throw bad(where, `a ${type} cannot have a child named ${n}`);
    m.setChild(n, kid(n, c));
  }
  return m;
}

function wrap(e: unknown, where: string): QuantFaceError {
  if (e instanceof QuantFaceError && e.code === 'E_FORMAT') return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new QuantFaceError('E_FORMAT', `model description: ${where}: ${msg}`, { cause: e });
}
