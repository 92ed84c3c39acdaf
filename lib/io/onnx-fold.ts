/**
 * Constant folding at ONNX import: a node whose inputs are all constants is
 * evaluated here, so graphs exported without constant folding (PyTorch
 * `do_constant_folding=False`, training-mode exports, tf2onnx without its
 * optimizer: weights behind Transpose / Reshape / Unsqueeze, BatchNorm
 * arithmetic spelled out as Add / Sqrt / Div / Mul / Sub, shape arithmetic
 * through Shape / Gather / Concat / Slice) import like folded ones.
 *
 * Float tensors are evaluated in float32 (every result rounded to float32,
 * as onnxruntime computes them), integer tensors as exact integers (held in
 * float64; int64 values beyond 2^53 are out of scope for shapes and
 * indices). Semantics follow the ONNX operator specifications (numpy-style
 * broadcasting, negative axes and indices, Reshape's 0 and -1, Slice's
 * clamping and negative steps). An op, attribute or shape outside what is
 * implemented returns null (the importer then refuses the node naming it).
 */
import type { OnnxAttribute } from './onnx-proto.js';

export interface Const {
  kind: 'float' | 'int';
  shape: number[];
  data: Float32Array | Float64Array;
}

/** Largest constant a fold may create (elements): larger results are refused, not allocated. */
export const MAX_FOLD_ELEMENTS = 1 << 24;

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
const mk = (kind: Const['kind'], shape: number[], vals: ArrayLike<number>): Const => ({ kind, shape, data: kind === 'float' ? Float32Array.from(vals) : Float64Array.from(vals) });
const alloc = (kind: Const['kind'], n: number): Float32Array | Float64Array => (kind === 'float' ? new Float32Array(n) : new Float64Array(n));

function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let k = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = k; k *= shape[i]!; }
  return s;
}

/**
 * Walks an output of `shape` in C order, keeping one source offset per
 * stride set (strides may be 0 for broadcast dimensions).
 */
function walk(shape: readonly number[], strides: number[][], base: number[], fn: (flat: number, offs: number[]) => void): void {
  const n = numel(shape);
  const r = shape.length;
  const idx = new Array<number>(r).fill(0);
  const offs = [...base];
  for (let f = 0; f < n; f++) {
    fn(f, offs);
    for (let d = r - 1; d >= 0; d--) {
      idx[d]!++;
      for (let k = 0; k < offs.length; k++) offs[k]! += strides[k]![d]!;
      if (idx[d]! < shape[d]!) break;
      for (let k = 0; k < offs.length; k++) offs[k]! -= strides[k]![d]! * shape[d]!;
      idx[d] = 0;
    }
  }
}

/** numpy broadcasting of two shapes; null when they do not broadcast. */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] | null {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1, y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return null;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Strides of `shape` read as `out` (right-aligned, 0 on broadcast dimensions). */
function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const s = stridesOf(shape);
  const off = out.length - shape.length;
  return out.map((d, i) => (i < off || shape[i - off] === 1 ? 0 : s[i - off]!));
}

function binary(op: string, x: Const, y: Const): Const | null {
  const shape = broadcastShapes(x.shape, y.shape);
  if (!shape || numel(shape) > MAX_FOLD_ELEMENTS) return null;
  const kind: Const['kind'] = x.kind === 'float' || y.kind === 'float' ? 'float' : 'int';
  const isInt = kind === 'int';
  const f: ((p: number, q: number) => number) | null =
    op === 'Add' ? (p, q) => p + q
    : op === 'Sub' ? (p, q) => p - q
    : op === 'Mul' ? (p, q) => p * q
    : op === 'Div' ? (isInt ? (p, q) => (q === 0 ? NaN : Math.trunc(p / q)) : (p, q) => Math.fround(p) / Math.fround(q))
    : op === 'Pow' ? (p, q) => p ** q
    : op === 'Max' ? (p, q) => Math.max(p, q)
    : op === 'Min' ? (p, q) => Math.min(p, q)
    : op === 'Equal' ? (p, q) => (p === q ? 1 : 0)
    : op === 'Less' ? (p, q) => (p < q ? 1 : 0)
    : op === 'Greater' ? (p, q) => (p > q ? 1 : 0)
    : null;
  if (!f) return null;
  const outKind: Const['kind'] = op === 'Equal' || op === 'Less' || op === 'Greater' ? 'int' : kind;
  const out = alloc(outKind, numel(shape));
  const xd = x.data, yd = y.data;
  walk(shape, [broadcastStrides(x.shape, shape), broadcastStrides(y.shape, shape)], [0, 0], (i, o) => { out[i] = f(xd[o[0]!]!, yd[o[1]!]!); });
  if (isInt && out.some((v) => !Number.isFinite(v))) return null; // integer division by zero
  return { kind: outKind, shape, data: out };
}

function unary(op: string, x: Const): Const | null {
  const f: ((v: number) => number) | null =
    op === 'Neg' ? (v) => -v
    : op === 'Abs' ? Math.abs
    : op === 'Sqrt' ? Math.sqrt
    : op === 'Reciprocal' ? (v) => 1 / v
    : op === 'Exp' ? Math.exp
    : op === 'Log' ? Math.log
    : op === 'Floor' ? Math.floor
    : op === 'Ceil' ? Math.ceil
    : op === 'Relu' ? (v) => (v > 0 ? v : 0)
    : op === 'Sigmoid' ? (v) => 1 / (1 + Math.exp(-v))
    : op === 'Tanh' ? Math.tanh
    : null;
  if (!f) return null;
  if (x.kind === 'int' && !['Neg', 'Abs', 'Relu'].includes(op)) return null;
  return mk(x.kind, [...x.shape], Array.from(x.data, f));
}

const normAxis = (a: number, r: number): number | null => {
  const v = a < 0 ? a + r : a;
  return Number.isInteger(v) && v >= 0 && v < r ? v : null;
};

function transpose(x: Const, perm: number[] | undefined): Const | null {
  const r = x.shape.length;
  const p = perm ?? [...x.shape.keys()].reverse();
  if (p.length !== r || [...p].sort((a, b) => a - b).some((v, i) => v !== i)) return null;
  const s = stridesOf(x.shape);
  const shape = p.map((d) => x.shape[d]!);
  const out = alloc(x.kind, x.data.length);
  const xd = x.data;
  walk(shape, [p.map((d) => s[d]!)], [0], (i, o) => { out[i] = xd[o[0]!]!; });
  return { kind: x.kind, shape, data: out };
}

function reshape(x: Const, spec: number[], allowZero: boolean): Const | null {
  const shape = spec.map((d, i) => (d === 0 && !allowZero ? x.shape[i] : d));
  if (shape.some((d) => d === undefined || !Number.isInteger(d) || d < -1) || shape.filter((d) => d === -1).length > 1) return null;
  const known = numel((shape as number[]).filter((d) => d !== -1));
  const n = x.data.length;
  const out = (shape as number[]).map((d) => (d === -1 ? (known > 0 && n % known === 0 ? n / known : NaN) : d));
  if (out.some((d) => !Number.isInteger(d)) || numel(out) !== n) return null;
  return { ...x, shape: out };
}

function slice(x: Const, starts: number[], ends: number[], axesIn: number[] | undefined, stepsIn: number[] | undefined): Const | null {
  const r = x.shape.length;
  const axes = axesIn && axesIn.length ? axesIn : starts.map((_, i) => i);
  const steps = stepsIn && stepsIn.length ? stepsIn : starts.map(() => 1);
  if (ends.length !== starts.length || axes.length !== starts.length || steps.length !== starts.length) return null;
  const st = new Array<number>(r).fill(0), step = new Array<number>(r).fill(1), shape = [...x.shape];
  const seen = new Set<number>();
  for (let k = 0; k < axes.length; k++) {
    const ax = normAxis(axes[k]!, r);
    if (ax === null || seen.has(ax) || steps[k] === 0 || !Number.isFinite(steps[k])) return null;
    seen.add(ax);
    const n = x.shape[ax]!, s = steps[k]!;
    let b = starts[k]!, e = ends[k]!;
    if (b < 0) b += n;
    if (e < 0) e += n;
    if (s > 0) { b = Math.min(Math.max(b, 0), n); e = Math.min(Math.max(e, 0), n); }
    else { b = Math.min(Math.max(b, -1), n - 1); e = Math.min(Math.max(e, -1), n - 1); }
    const len = s > 0 ? Math.max(0, Math.ceil((e - b) / s)) : Math.max(0, Math.ceil((b - e) / -s));
    st[ax] = b; step[ax] = s; shape[ax] = len;
  }
  const xs = stridesOf(x.shape);
  const out = alloc(x.kind, numel(shape));
  const xd = x.data;
  if (out.length) walk(shape, [xs.map((v, d) => v * step[d]!)], [st.reduce((p, b, d) => p + b * xs[d]!, 0)], (i, o) => { out[i] = xd[o[0]!]!; });
  return { kind: x.kind, shape, data: out };
}

function gather(x: Const, idx: Const, axisIn: number): Const | null {
  const r = x.shape.length;
  const axis = normAxis(axisIn, r);
  if (axis === null || idx.kind !== 'int') return null;
  const A = x.shape[axis]!;
  const outer = numel(x.shape.slice(0, axis)), inner = numel(x.shape.slice(axis + 1));
  const ids = Array.from(idx.data, (i) => (i < 0 ? i + A : i));
  if (ids.some((i) => !Number.isInteger(i) || i < 0 || i >= A)) return null;
  const shape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
  if (numel(shape) > MAX_FOLD_ELEMENTS) return null;
  const out = alloc(x.kind, numel(shape));
  let o = 0;
  for (let p = 0; p < outer; p++) for (const i of ids) { out.set(x.data.subarray((p * A + i) * inner, (p * A + i + 1) * inner), o); o += inner; }
  return { kind: x.kind, shape, data: out };
}

function concat(xs: Const[], axisIn: number): Const | null {
  const r = xs[0]!.shape.length;
  const axis = normAxis(axisIn, r);
  if (axis === null) return null;
  for (const c of xs) if (c.shape.length !== r || c.shape.some((d, i) => i !== axis && d !== xs[0]!.shape[i])) return null;
  const kind: Const['kind'] = xs.every((c) => c.kind === 'int') ? 'int' : 'float';
  const shape = [...xs[0]!.shape];
  shape[axis] = xs.reduce((p, c) => p + c.shape[axis]!, 0);
  const outer = numel(shape.slice(0, axis)), inner = numel(shape.slice(axis + 1));
  const out = alloc(kind, numel(shape));
  let o = 0;
  for (let p = 0; p < outer; p++) for (const c of xs) { const w = c.shape[axis]! * inner; out.set(c.data.subarray(p * w, (p + 1) * w), o); o += w; }
  return { kind, shape, data: out };
}

function attrMap(a: Map<string, OnnxAttribute>) {
  return {
    int: (k: string, d: number): number => { const v = a.get(k); return v && v.i !== undefined ? Number(v.i) : d; },
    ints: (k: string): number[] | undefined => { const v = a.get(k); return v && v.ints && v.ints.length ? v.ints.map(Number) : undefined; },
  };
}

/**
 * Evaluates one node whose inputs are all constants (inputs in node order;
 * undefined for an omitted optional input). Returns null when the op (or
 * this use of it) is not implemented.
 */
export function foldConst(op: string, ins: (Const | undefined)[], a: Map<string, OnnxAttribute>, toFloat: (dataType: number) => boolean | null): Const | null {
  const x = ins[0];
  if (!x) return null;
  const at = attrMap(a);
  const ints = (c: Const | undefined): number[] | undefined => (c ? Array.from(c.data) : undefined);
  switch (op) {
    case 'Identity':
      return x;
    case 'Cast': {
      const isFloat = toFloat(at.int('to', 1));
      if (isFloat === null) return null;
      const bool = at.int('to', 1) === 9;
      return mk(isFloat ? 'float' : 'int', [...x.shape], Array.from(x.data, (v) => (bool ? (v !== 0 ? 1 : 0) : isFloat ? v : Math.trunc(v))));
    }
    case 'Unsqueeze': {
      const axes = at.ints('axes') ?? ints(ins[1]) ?? [];
      const r = x.shape.length + axes.length;
      const ax = axes.map((d) => normAxis(d, r));
      if (ax.some((d) => d === null) || new Set(ax).size !== ax.length) return null;
      const shape = [...x.shape];
      for (const d of (ax as number[]).sort((p, q) => p - q)) shape.splice(d, 0, 1);
      return { ...x, shape };
    }
    case 'Squeeze': {
      const axes = (at.ints('axes') ?? ints(ins[1]) ?? []).map((d) => normAxis(d, x.shape.length));
      if (axes.some((d) => d === null || x.shape[d] !== 1)) return null;
      const shape = x.shape.filter((d, i) => (axes.length ? !axes.includes(i) : d !== 1));
      return { ...x, shape };
    }
    case 'Flatten': {
      const axis = at.int('axis', 1);
      const ax = axis < 0 ? axis + x.shape.length : axis;
      if (ax < 0 || ax > x.shape.length) return null;
      return { ...x, shape: [numel(x.shape.slice(0, ax)), numel(x.shape.slice(ax))] };
    }
    case 'Reshape': {
      const s = ints(ins[1]);
      return s ? reshape(x, s, at.int('allowzero', 0) === 1) : null;
    }
    case 'Transpose':
      return transpose(x, at.ints('perm'));
    case 'Gather':
      return ins[1] ? gather(x, ins[1], at.int('axis', 0)) : null;
    case 'Concat':
      return ins.every((c) => c) ? concat(ins as Const[], at.int('axis', 0)) : null;
    case 'Slice': {
      const starts = at.ints('starts') ?? ints(ins[1]);
      const ends = at.ints('ends') ?? ints(ins[2]);
      if (!starts || !ends) return null;
      return slice(x, starts, ends, at.ints('axes') ?? ints(ins[3]), ints(ins[4]));
    }
    case 'Expand': {
      const s = ints(ins[1]);
      if (!s) return null;
      const shape = broadcastShapes(x.shape, s);
      if (!shape || numel(shape) > MAX_FOLD_ELEMENTS) return null;
      const out = alloc(x.kind, numel(shape));
      walk(shape, [broadcastStrides(x.shape, shape)], [0], (i, o) => { out[i] = x.data[o[0]!]!; });
      return { kind: x.kind, shape, data: out };
    }
    case 'Range': {
      const [s, l, d] = ins.map((c) => c?.data[0]);
      if (s === undefined || l === undefined || d === undefined || d === 0) return null;
      const n = Math.max(Math.ceil((l - s) / d), 0);
      if (n > MAX_FOLD_ELEMENTS) return null;
      return mk(x.kind, [n], Array.from({ length: n }, (_, i) => s + i * d));
    }
    case 'Where': {
      const [c, p, q] = ins;
      if (!c || !p || !q) return null;
      const s1 = broadcastShapes(c.shape, p.shape);
      const shape = s1 && broadcastShapes(s1, q.shape);
      if (!shape || numel(shape) > MAX_FOLD_ELEMENTS) return null;
      const kind = p.kind === 'float' || q.kind === 'float' ? 'float' : 'int';
      const out = alloc(kind, numel(shape));
      walk(shape, [broadcastStrides(c.shape, shape), broadcastStrides(p.shape, shape), broadcastStrides(q.shape, shape)], [0, 0, 0], (i, o) => { out[i] = c.data[o[0]!] ? p.data[o[1]!]! : q.data[o[2]!]!; });
      return { kind, shape, data: out };
    }
    case 'Add':
    case 'Sub':
    case 'Mul':
    case 'Div':
    case 'Pow':
    case 'Max':
    case 'Min':
    case 'Equal':
    case 'Less':
    case 'Greater': {
      if (ins.length !== 2 || !ins[1]) return (op === 'Max' || op === 'Min') && ins.length === 1 ? x : null;
      return binary(op, x, ins[1]);
    }
    default:
      return ins.length === 1 ? unary(op, x) : null;
  }
}
