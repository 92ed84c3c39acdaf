/**
 * Activation range equalization (beyond the paper; in the spirit of
 * Nagel et al., "Data-Free Quantization through Weight Equalization and
 * Bias Correction", ICCV 2019): a function-preserving per-channel rescaling
 * of a float graph so that per-tensor activation quantization loses less.
 *
 * Per-tensor low-bit activations spend their few levels on the channel with
 * the widest range; a channel whose values span a tenth of it keeps one or
 * two levels. PReLU, ReLU, residual additions and pooling commute with a
 * positive per-channel scale, so a channel's values can be multiplied by
 * s_c where they are produced (the output channel of a Conv2d, Linear or
 * ChannelAffine: its weights and bias) and divided by s_c where they are
 * consumed (the input channel of the next Conv2d / Linear / ChannelAffine).
 * The float function is unchanged; per-output-channel weight quantization
 * of the producer is unchanged (one factor per output channel), and so is
 * that of a depthwise consumer (one input channel per output channel). Only
 * a dense consumer's rows see their columns rescaled: that is the price,
 * which `alpha` trades against the activation gain:
 *
 *   s_c = clamp(g_c ^ alpha, 1, maxScale)
 *
 * where g_c is how far channel c can grow: with statistic 'range', the
 * largest factor that keeps its values inside the range [min, max] of every
 * quantized tensor it runs through (measured on calibration inputs), so at
 * alpha = 1 no tensor range widens and every channel's quantization step,
 * in its original units, shrinks by s_c; with 'rms', the ratio of
 * the widest channel's size to its own. alpha = 0 leaves the model as it is.
 *
 * Works on a Graph (what the TF.js and ONNX importers build). Channels
 * travel in groups: values joined by PReLU/ReLU/Add/pooling/Flatten share
 * one scale vector; a group is rescaled only when every value in it is
 * produced and consumed by layers that can absorb the scale, and it touches
 * neither the graph input nor its output. Every other group (and any other
 * container) is left alone.
 */
import { QuantFaceError, type FTensor } from '../tensor.js';
import { Module, noGrad } from '../nn/module.js';
import { Graph } from '../nn/containers.js';
import { Conv2d, Linear, PReLU, ReLU, Add, Flatten } from '../nn/layers.js';
import { ChannelAffine, GlobalAvgPool, MaxPool2d, AvgPool2d } from '../nn/import-ops.js';

export interface EqualizeOptions {
  /** Strength in [0, 1] (see the file comment). Default 0.5. */
  alpha?: number;
  /** Largest factor a channel is scaled up by. Default 16. */
  maxScale?: number;
  /** Channel size measure: 'range' (the channel's min and max) or 'rms'. Default 'range'. */
  statistic?: 'range' | 'rms';
}

export interface EqualizedGroup {
  /** Values (graph node names) that share the group's scales. */
  values: string[];
  /** The quantized values (PReLU / ReLU / Add outputs) whose ranges chose the scales. */
  measured: string[];
  channels: number;
  /** Smallest / largest factor applied. */
  minScale: number;
  maxScale: number;
  /** Channels scaled by more than 1. */
  scaled: number;
  /** The factor of every channel (values in this group are multiplied by it). */
  scales: Float64Array;
}

export interface EqualizeReport {
  /** False when the model is not a Graph or no group could be rescaled. */
  applied: boolean;
  reason?: string;
  groups: EqualizedGroup[];
  /** Groups left alone (a value in them meets a layer that cannot absorb a scale, or the graph's input/output). */
  fixedGroups: number;
}

/** Per-channel min / max of a value over the calibration inputs. */
interface ChannelRange {
  min: Float64Array;
  max: Float64Array;
  /** Sum of squares per channel and the rows summed (for 'rms'). */
  sumsq: Float64Array;
  count: number;
}

const EQUIVARIANT = (m: Module): boolean => m instanceof PReLU || m instanceof ReLU || m instanceof Add || m instanceof GlobalAvgPool || m instanceof MaxPool2d || m instanceof AvgPool2d;
/** Values toQat quantizes (an output activation quantizer). */
const QUANTIZED = (m: Module): boolean => m instanceof PReLU || m instanceof ReLU || m instanceof Add;

class UnionFind {
  private readonly parent = new Map<string, string>();
  find(x: string): string {
    let r = x;
    while (this.parent.has(r) && this.parent.get(r) !== r) r = this.parent.get(r)!;
    let c = x;
    while (c !== r) {
      const n = this.parent.get(c) ?? r;
      this.parent.set(c, r);
      c = n;
    }
    if (!this.parent.has(r)) this.parent.set(r, r);
    return r;
  }
  union(a: string, b: string): void {
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra !== rb) this.parent.set(rb, ra);
  }
}

/** Channel-last shapes of every graph value for a [1, ...inputShape] input. */
function valueShapes(g: Graph, inputShape: readonly number[]): Map<string, number[]> {
  const env = new Map<string, number[]>(g.inputNames.map((n) => [n, [1, ...inputShape]]));
  for (const nd of g.nodeList) env.set(nd.name, g.getChild(nd.name)!.inferShape(...nd.inputs.map((i) => env.get(i)!)).shape);
  return env;
}

interface Plan {
  /** group root -> member values */
  groups: Map<string, string[]>;
  /** group root -> channel count of the group's scale vector */
  width: Map<string, number>;
  fixed: Set<string>;
  uf: UnionFind;
  shapes: Map<string, number[]>;
}

function plan(g: Graph, inputShape: readonly number[]): Plan {
  const shapes = valueShapes(g, inputShape);
  const mods = new Map(g.nodeList.map((nd) => [nd.name, g.getChild(nd.name)!]));
  const consumers = new Map<string, Array<{ node: string; slot: number }>>();
  for (const nd of g.nodeList) nd.inputs.forEach((i, slot) => consumers.set(i, [...(consumers.get(i) ?? []), { node: nd.name, slot }]));
  const uf = new UnionFind();
  const values = [...g.inputNames, ...g.nodeList.map((n) => n.name)];
  for (const v of values) uf.find(v);
  // Joins: equivariant ops and Flatten (whose output keeps the input's channel as feature % C).
  for (const nd of g.nodeList) {
    const m = mods.get(nd.name)!;
    if (EQUIVARIANT(m) || m instanceof Flatten) for (const i of nd.inputs) uf.union(nd.name, i);
  }
  const chan = (v: string): number => shapes.get(v)![shapes.get(v)!.length - 1]!;
  const groups = new Map<string, string[]>();
  for (const v of values) {
    const r = uf.find(v);
    groups.set(r, [...(groups.get(r) ?? []), v]);
  }
  const width = new Map<string, number>();
  const fixed = new Set<string>();
  for (const [root, members] of groups) {
    // The group's channel count: that of its non-flattened values (all equal), or fixed.
    let c = -1;
    let ok = true;
    const isFlat = (v: string): boolean => mods.get(v) instanceof Flatten;
    for (const v of members) {
      if (isFlat(v)) continue;
      const s = shapes.get(v)!;
      const cv = chan(v);
      if (c === -1) c = cv;
      else if (c !== cv) ok = false;
      if (s.length !== 4 && s.length !== 2) ok = false;
    }
    if (c <= 1) ok = false;
    for (const v of members) {
      if (!ok) break;
      if (g.inputNames.includes(v) || g.outputNames.includes(v)) ok = false;
      const m = mods.get(v);
      if (m && !EQUIVARIANT(m) && !(m instanceof Flatten)) {
        // producer: must absorb an output scale
        const free =
          m instanceof Conv2d || m instanceof Linear || (m instanceof ChannelAffine && m.weight !== null && m.channels === c);
        if (!free) ok = false;
      }
      if (isFlat(v) && shapes.get(v)![1]! % c !== 0) ok = false;
      for (const { node } of consumers.get(v) ?? []) {
        const cm = mods.get(node)!;
        if (EQUIVARIANT(cm) || cm instanceof Flatten) continue;
        if (cm instanceof Conv2d) {
          if (isFlat(v)) ok = false;
        } else if (cm instanceof Linear) {
          if (shapes.get(v)!.length !== 2) ok = false;
        } else if (cm instanceof ChannelAffine) {
          if (cm.weight === null || cm.channels !== chan(v) || isFlat(v)) ok = false;
        } else ok = false;
      }
    }
    if (ok) width.set(root, c);
    else fixed.add(root);
  }
  return { groups, width, fixed, uf, shapes };
}

/** Runs the graph on the inputs and records the per-channel ranges of the named values. */
function measure(g: Graph, names: Set<string>, inputs: Iterable<FTensor>): Map<string, ChannelRange> {
  const out = new Map<string, ChannelRange>();
  const restore: Array<() => void> = [];
  for (const name of names) {
    const m = g.getChild(name)!;
    const f = m.forward;
    m.forward = (...xs: FTensor[]): FTensor => {
      const y = f.apply(m, xs);
      const c = y.shape[y.shape.length - 1]!;
      let r = out.get(name);
      if (!r) out.set(name, (r = { min: new Float64Array(c).fill(Infinity), max: new Float64Array(c).fill(-Infinity), sumsq: new Float64Array(c), count: 0 }));
      const d = y.data;
      const mn = r.min;
      const mx = r.max;
      const sq = r.sumsq;
      for (let i = 0; i < d.length; i += c)
        for (let k = 0; k < c; k++) {
          const v = d[i + k]!;
          if (v < mn[k]!) mn[k] = v;
          if (v > mx[k]!) mx[k] = v;
          sq[k] += v * v;
        }
      r.count += d.length / c;
      return y;
    };
    restore.push(() => {
      m.forward = f;
    });
  }
  const was = g.training;
  g.eval();
  try {
    noGrad(() => {
      for (const x of inputs) g.forward(x);
    });
  } finally {
    for (const r of restore) r();
    g.train(was);
  }
  return out;
}

function scaleRows(w: Float32Array | Float64Array, rows: number, s: ArrayLike<number>, map: (row: number) => number, invert: boolean): void {
  const inner = w.length / rows;
  for (let o = 0; o < rows; o++) {
    const f = s[map(o)]!;
    if (f === 1) continue;
    const k = invert ? 1 / f : f;
    for (let j = o * inner; j < (o + 1) * inner; j++) w[j] = w[j]! * k;
  }
}

/**
 * Rescales the channels of a float Graph in place (see the file comment)
 * from their ranges on `inputs` (preprocessed [N, H, W, C] batches).
 * Returns what was done; a model that is not a Graph is left as it is
 * (applied: false).
 */
export function equalizeActivations(model: Module, inputs: readonly FTensor[], opts: EqualizeOptions = {}): EqualizeReport {
  const alpha = opts.alpha ?? 0.5;
  const maxScale = opts.maxScale ?? 16;
  const stat = opts.statistic ?? 'range';
  if (stat !== 'range' && stat !== 'rms') throw new QuantFaceError('E_ARG', `equalize: statistic must be 'range' or 'rms' (got ${String(stat)})`);
  if (!(Number.isFinite(alpha) && alpha >= 0 && alpha <= 1)) throw new QuantFaceError('E_ARG', `equalize: alpha must be in [0, 1] (got ${alpha})`);
  if (!(Number.isFinite(maxScale) && maxScale >= 1)) throw new QuantFaceError('E_ARG', `equalize: maxScale must be a number >= 1 (got ${maxScale})`);
  if (!(model instanceof Graph)) return { applied: false, reason: 'the model is not a Graph (equalization follows graph edges)', groups: [], fixedGroups: 0 };
  if (inputs.length === 0) throw new QuantFaceError('E_ARG', 'equalize: needs at least one calibration batch');
  const g = model;
  const p = plan(g, inputs[0]!.shape.slice(1));
  const quantizedIn = new Map<string, string[]>();
  for (const [root, members] of p.groups) {
    if (!p.width.has(root)) continue;
    const q = members.filter((v) => {
      const m = g.getChild(v);
      return m !== undefined && QUANTIZED(m);
    });
    if (q.length) quantizedIn.set(root, q);
  }
  const report: EqualizeReport = { applied: false, groups: [], fixedGroups: p.fixed.size };
  if (quantizedIn.size === 0) return { ...report, reason: 'no quantized activation sits in a group that can be rescaled' };
  const ranges = measure(g, new Set([...quantizedIn.values()].flat()), inputs);

  const scales = new Map<string, Float64Array>();
  for (const [root, q] of quantizedIn) {
    const c = p.width.get(root)!;
    // room[c]: how much channel c can grow before it widens a quantized tensor's range (the smallest over the
    // group's quantized values); 'range' uses the two ends, 'rms' the size against the widest channel's.
    const room = new Float64Array(c).fill(Infinity);
    for (const v of q) {
      const r = ranges.get(v)!;
      if (stat === 'range') {
        let lo = 0;
        let hi = 0;
        for (let k = 0; k < c; k++) {
          lo = Math.min(lo, r.min[k]!);
          hi = Math.max(hi, r.max[k]!);
        }
        for (let k = 0; k < c; k++) {
          const up = r.max[k]! > 0 ? hi / r.max[k]! : Infinity;
          const down = r.min[k]! < 0 ? lo / r.min[k]! : Infinity;
          room[k] = Math.min(room[k]!, up, down);
        }
        continue;
      }
      const size = new Float64Array(c);
      for (let k = 0; k < c; k++) size[k] = Math.sqrt(r.sumsq[k]! / r.count);
      let R = 0;
      for (let k = 0; k < c; k++) R = Math.max(R, size[k]!);
      if (!(R > 0)) continue;
      for (let k = 0; k < c; k++) room[k] = Math.min(room[k]!, size[k]! > 0 ? R / size[k]! : Infinity);
    }
    const s = new Float64Array(c);
    let smin = Infinity;
    let smax = 0;
    let scaled = 0;
    for (let k = 0; k < c; k++) {
      const r = room[k]!;
      // A channel that never moved (dead) keeps factor 1: its scale does not matter.
      s[k] = Number.isFinite(r) ? Math.min(maxScale, Math.max(1, Math.pow(r, alpha))) : 1;
      smin = Math.min(smin, s[k]!);
      smax = Math.max(smax, s[k]!);
      if (s[k]! > 1) scaled++;
    }
    scales.set(root, s);
    report.groups.push({ values: p.groups.get(root)!, measured: q, channels: c, minScale: smin, maxScale: smax, scaled, scales: s });
  }

  const groupScale = (v: string): Float64Array | undefined => scales.get(p.uf.find(v));
  for (const nd of g.nodeList) {
    const m = g.getChild(nd.name)!;
    if (EQUIVARIANT(m) || m instanceof Flatten) continue;
    const sOut = groupScale(nd.name);
    const sIn = nd.inputs.length === 1 ? groupScale(nd.inputs[0]!) : undefined;
    if (!sOut && !sIn) continue;
    if (m instanceof Conv2d) {
      const w = m.weight.data.data; // OHWI: [out][kh][kw][in / groups]
      const cout = m.outChannels;
      const cig = m.inChannels / m.groups;
      const cog = m.outChannels / m.groups;
      if (sIn) {
        // Input channel of weight element (o, ..., i) = group(o) * cig + i.
        const inner = w.length / cout;
        for (let o = 0; o < cout; o++) {
          const base = Math.floor(o / cog) * cig;
          for (let j = 0; j < inner; j++) {
            const f = sIn[base + (j % cig)]!;
            if (f !== 1) w[o * inner + j] = w[o * inner + j]! / f;
          }
        }
      }
      if (sOut) {
        scaleRows(w, cout, sOut, (o) => o, false);
        if (m.bias) scaleRows(m.bias.data.data, cout, sOut, (o) => o, false);
      }
    } else if (m instanceof Linear) {
      const w = m.weight.data.data; // [out, in]
      if (sIn) {
        const c = sIn.length;
        for (let o = 0; o < m.outFeatures; o++)
          for (let i = 0; i < m.inFeatures; i++) {
            const f = sIn[i % c]!; // NHWC flatten: feature i belongs to channel i % C
            if (f !== 1) w[o * m.inFeatures + i] = w[o * m.inFeatures + i]! / f;
          }
      }
      if (sOut) {
        scaleRows(w, m.outFeatures, sOut, (o) => o, false);
        if (m.bias) scaleRows(m.bias.data.data, m.outFeatures, sOut, (o) => o, false);
      }
    } else if (m instanceof ChannelAffine) {
      const c = m.channels;
      const wd = m.weight?.data.data;
      if (wd) for (let k = 0; k < c; k++) wd[k] = (wd[k]! * (sOut ? sOut[k]! : 1)) / (sIn ? sIn[k]! : 1);
      const bd = m.bias?.data.data;
      if (bd && sOut) for (let k = 0; k < c; k++) bd[k] = bd[k]! * sOut[k]!;
    } else {
      throw new QuantFaceError('E_INTERNAL', `equalize: node ${nd.name} (${m.constructor.name}) was planned into a rescaled group`);
    }
  }
  report.applied = report.groups.length > 0;
  return report;
}
