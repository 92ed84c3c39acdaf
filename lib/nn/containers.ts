/**
 * Containers: Sequential (a chain) and Graph (named nodes with named
 * inputs: residual shortcuts, several consumers of one tensor). Children
 * are registered under their names, so state-dict keys follow the
 * structure (e.g. `layer1.0.conv1.weight`).
 */
import { QuantFaceError, shapeStr, type FTensor } from '../tensor.js';
import { Module, isGradEnabled, type ShapeInfo } from './module.js';
import { Add, Identity, BatchNorm, PReLU } from './layers.js';
import { bufferPool, sameBuffer } from './pool.js';

function single(m: Module, r: FTensor | FTensor[]): FTensor {
  if (Array.isArray(r)) throw new QuantFaceError('E_INTERNAL', `${m.constructor.name} returned ${r.length} input gradients inside a chain`);
  return r;
}

/** Runs children in order. Built from an array (names '0', '1', ...) or an ordered record of names. */
export class Sequential extends Module {
  constructor(modules: Module[] | Record<string, Module> = []) {
    super();
    if (Array.isArray(modules)) modules.forEach((m, i) => this.setChild(String(i), m));
    else for (const [n, m] of Object.entries(modules)) this.setChild(n, m);
  }

  /** Appends a child (named by its index unless a name is given). */
  append(m: Module, name?: string): this {
    const n = name ?? String(this._children.size);
    if (this._children.has(n)) throw new QuantFaceError('E_ARG', `Sequential: duplicate child name ${n}`);
    if ([...this._children.values()].includes(m)) throw new QuantFaceError('E_ARG', `Sequential: this module instance is already a child (use a separate instance per layer)`);
    this.setChild(n, m);
    return this;
  }

  /** Inserts a child named `name` right after the child `existing`. */
  insertAfter(existing: string, name: string, m: Module): this {
    if (!this._children.has(existing)) throw new QuantFaceError('E_ARG', `Sequential.insertAfter: no child ${existing}`);
    if (this._children.has(name)) throw new QuantFaceError('E_ARG', `Sequential.insertAfter: duplicate child name ${name}`);
    if ([...this._children.values()].includes(m)) throw new QuantFaceError('E_ARG', `Sequential.insertAfter: this module instance is already a child (use a separate instance per layer)`);
    const kids = [...this._children];
    this._children.clear();
    for (const [n, c] of kids) {
      this._children.set(n, c);
      if (n === existing) this._children.set(name, m);
    }
    return this;
  }

  get length(): number {
    return this._children.size;
  }

  at(i: number): Module {
    const m = [...this._children.values()][i];
    if (!m) throw new QuantFaceError('E_ARG', `Sequential: no child ${i}`);
    return m;
  }

  inferShape(s: number[]): ShapeInfo {
    let shape = s;
    let macs = 0;
    for (const m of this._children.values()) {
      const r = m.inferShape(shape);
      shape = r.shape;
      macs += r.macs;
    }
    return { shape, macs };
  }

  forward(x: FTensor): FTensor {
    const input = x;
    const release = !isGradEnabled();
    const ms = [...this._children.values()];
    for (let i = 0; i < ms.length; i++) {
      const m = ms[i]!;
      const next = ms[i + 1];
      // BatchNorm directly followed by PReLU: one pass when it applies (the PReLU's backward then covers both).
      let y = m instanceof BatchNorm && next instanceof PReLU ? next.forwardAfter(m, x) : null;
      if (y) i++;
      else y = m.forward(x);
      // Under noGrad, intermediates are pooled and dead once consumed (the caller owns `input`).
      if (release && !sameBuffer(x, input) && !sameBuffer(x, y)) bufferPool.release(x);
      x = y;
    }
    return x;
  }

  backward(gradOut: FTensor): FTensor {
    const ms = [...this._children.values()];
    let g = gradOut;
    for (let i = ms.length - 1; i >= 0; i--) {
      const m = ms[i]!;
      const gi = single(m, m.backward(g));
      if (m instanceof PReLU && i > 0 && m.fusedBatchNorm !== undefined && m.fusedBatchNorm === ms[i - 1]) i--;
      if (!sameBuffer(g, gradOut) && !sameBuffer(g, gi)) bufferPool.release(g);
      g = gi;
    }
    return g;
  }
}

export interface GraphNode {
  name: string;
  inputs: string[];
}

/**
 * A directed acyclic graph of modules. Each node is a child module, named,
 * with the names of its inputs (graph inputs or earlier nodes). Nodes run
 * in insertion order; gradients of tensors used by several nodes are summed.
 *
 *   const block = new Graph()
 *     .add('conv1', conv1)                 // input: the previous node (here the graph input)
 *     .add('bn1', bn1)
 *     .add('add', new Add(), ['bn1', 'input']);
 */
export class Graph extends Module {
  readonly inputNames: string[];
  private readonly nodes: GraphNode[] = [];
  private outputName: string | null = null;
  private ctx: { inputs: readonly (readonly number[])[] } | undefined;

  constructor(inputNames: string[] = ['input']) {
    super();
    if (inputNames.length < 1) throw new QuantFaceError('E_ARG', 'Graph: needs at least one input');
    this.inputNames = [...inputNames];
  }

  override get numInputs(): number {
    return this.inputNames.length;
  }

  /** Adds a node; inputs default to the previous node (or the first graph input). */
  add(name: string, module: Module, inputs?: string | string[]): this {
    if (this._children.has(name) || this.inputNames.includes(name)) throw new QuantFaceError('E_ARG', `Graph: duplicate name ${name}`);
    if ([...this._children.values()].includes(module))
      throw new QuantFaceError('E_ARG', `Graph: node ${name} reuses a module instance already in the graph (a module keeps one forward state: use a separate instance)`);
    const ins = inputs === undefined ? [this.nodes.length ? this.nodes[this.nodes.length - 1]!.name : this.inputNames[0]!] : typeof inputs === 'string' ? [inputs] : [...inputs];
    for (const i of ins)
      if (!this.inputNames.includes(i) && !this._children.has(i)) throw new QuantFaceError('E_ARG', `Graph: node ${name} reads ${i}, which is neither an input nor an earlier node`);
    if (ins.length !== module.numInputs) throw new QuantFaceError('E_ARG', `Graph: node ${name} (${module.constructor.name}) takes ${module.numInputs} inputs, got ${ins.length}`);
    this.setChild(name, module);
    this.nodes.push({ name, inputs: ins });
    return this;
  }

  /**
   * Inserts a one-input node `name` reading `existing` (a node or a graph
   * input) and rewires what read `existing` to read `name` instead: every
   * node that consumed it and, where `existing` was the output, the output.
   * The new node runs (and is registered as a child) right after `existing`
   * (first, for a graph input). E.g. a quantizer after a layer:
   * `g.insertAfter('bn1', 'bn1_quant', new ActFakeQuant())`.
   */
  insertAfter(existing: string, name: string, module: Module): this {
    const idx = this.nodes.findIndex((n) => n.name === existing);
    if (idx < 0 && !this.inputNames.includes(existing)) throw new QuantFaceError('E_ARG', `Graph.insertAfter: unknown node ${existing} (neither an input nor a node)`);
    if (this._children.has(name) || this.inputNames.includes(name)) throw new QuantFaceError('E_ARG', `Graph.insertAfter: duplicate name ${name}`);
    if ([...this._children.values()].includes(module))
      throw new QuantFaceError('E_ARG', `Graph.insertAfter: node ${name} reuses a module instance already in the graph (a module keeps one forward state: use a separate instance)`);
    if (module.numInputs !== 1) throw new QuantFaceError('E_ARG', `Graph.insertAfter: node ${name} (${module.constructor.name}) takes ${module.numInputs} inputs, needs 1`);
    // Only nodes after `existing` can read it.
    for (const nd of this.nodes.slice(idx + 1)) if (nd.inputs.includes(existing)) nd.inputs = nd.inputs.map((i) => (i === existing ? name : i));
    this.nodes.splice(idx + 1, 0, { name, inputs: [existing] });
    // Children stay in node order (state-dict key order follows the graph).
    const kids = new Map(this._children);
    this._children.clear();
    for (const nd of this.nodes) this._children.set(nd.name, nd.name === name ? module : kids.get(nd.name)!);
    // An implicit output (the last node) needs nothing: `name` follows `existing`.
    if (this.outputName === existing) this.outputName = name;
    return this;
  }

  /** Chooses the output node (default: the last node added). */
  output(name: string): this {
    if (!this._children.has(name) && !this.inputNames.includes(name)) throw new QuantFaceError('E_ARG', `Graph: unknown output ${name}`);
    this.outputName = name;
    return this;
  }

  get nodeList(): readonly GraphNode[] {
    return this.nodes;
  }

  /**
   * Names of the values the graph returns, as inputNames names what it takes:
   * one name, the node chosen by output() (a graph input if output() named
   * one) or else the last node added; empty for a graph without nodes.
   */
  get outputNames(): readonly string[] {
    const o = this.outputOrUndefined();
    return o === undefined ? [] : [o];
  }

  /** Name of the value the graph returns (throws E_ARG for a graph without nodes). */
  get outputNode(): string {
    return this.out;
  }

  private outputOrUndefined(): string | undefined {
    return this.outputName ?? this.nodes[this.nodes.length - 1]?.name;
  }

  private get out(): string {
    const o = this.outputOrUndefined();
    if (!o) throw new QuantFaceError('E_ARG', 'Graph: no nodes');
    return o;
  }

  private mod(name: string): Module {
    return this._children.get(name)!;
  }

  inferShape(...shapes: number[][]): ShapeInfo {
    if (shapes.length !== this.inputNames.length) throw new QuantFaceError('E_SHAPE', `Graph: expected ${this.inputNames.length} inputs, got ${shapes.length}`);
    const env = new Map<string, number[]>(this.inputNames.map((n, i) => [n, shapes[i]!]));
    let macs = 0;
    for (const nd of this.nodes) {
      const r = this.mod(nd.name).inferShape(...nd.inputs.map((i) => env.get(i)!));
      env.set(nd.name, r.shape);
      macs += r.macs;
    }
    return { shape: env.get(this.out)!, macs };
  }

  forward(...xs: FTensor[]): FTensor {
    if (xs.length !== this.inputNames.length) throw new QuantFaceError('E_SHAPE', `Graph: expected ${this.inputNames.length} inputs, got ${xs.length}`);
    const env = new Map<string, FTensor>(this.inputNames.map((n, i) => [n, xs[i]!]));
    const release = !isGradEnabled();
    // Remaining consumers of each value (the output counts as one), to release pooled values under noGrad.
    const uses = new Map<string, number>();
    if (release) {
      for (const nd of this.nodes) for (const i of nd.inputs) uses.set(i, (uses.get(i) ?? 0) + 1);
      uses.set(this.out, (uses.get(this.out) ?? 0) + 1);
    }
    for (const nd of this.nodes) {
      const y = this.mod(nd.name).forward(...nd.inputs.map((i) => env.get(i)!));
      env.set(nd.name, y);
      if (!release) continue;
      if (!uses.get(nd.name)) {
        // Output nobody reads: drop it at once (unless it aliases a live value).
        if (![...env].some(([k, v]) => k !== nd.name && sameBuffer(v, y))) bufferPool.release(y);
        env.delete(nd.name);
      }
      for (const i of new Set(nd.inputs)) {
        const left = uses.get(i)! - nd.inputs.filter((n) => n === i).length;
        uses.set(i, left);
        if (left > 0 || this.inputNames.includes(i)) continue;
        const v = env.get(i)!;
        env.delete(i);
        // Still alive as another value (in-place or pass-through) or as a graph input: keep it.
        const aliased = [...env].some(([k, w]) => (uses.get(k) ?? 0) > 0 && sameBuffer(w, v)) || xs.some((x) => sameBuffer(x, v));
        if (!aliased) bufferPool.release(v);
      }
    }
    this.ctx = { inputs: xs.map((x) => x.shape) };
    return env.get(this.out)!;
  }

  backward(gradOut: FTensor): FTensor | FTensor[] {
    if (!this.ctx) throw new QuantFaceError('E_ARG', 'Graph.backward called before forward');
    // Every entry of `grads` holds one reference to its tensor, except tensors sharing gradOut's buffer
    // (the caller owns those: no retain/release on them).
    const ext = (t: FTensor): boolean => sameBuffer(t, gradOut);
    const retain = (t: FTensor): void => {
      if (!ext(t)) bufferPool.retain(t);
    };
    const release = (t: FTensor): void => {
      if (!ext(t)) bufferPool.release(t);
    };
    const grads = new Map<string, FTensor>([[this.out, gradOut]]);
    const accumulate = (name: string, g: FTensor): void => {
      const prev = grads.get(name);
      if (!prev) {
        grads.set(name, g);
        return;
      }
      if (prev.numel !== g.numel) throw new QuantFaceError('E_SHAPE', `Graph: gradient shapes ${shapeStr(prev.shape)} and ${shapeStr(g.shape)} for ${name} differ`);
      const sum = bufferPool.acquire(prev.shape, prev.dtype) as FTensor;
      const s = sum.data;
      const p = prev.data;
      const gd = g.data;
      for (let i = 0; i < s.length; i++) s[i] = p[i]! + gd[i]!;
      release(prev);
      release(g);
      grads.set(name, sum);
    };
    for (let k = this.nodes.length - 1; k >= 0; k--) {
      const nd = this.nodes[k]!;
      const g = grads.get(nd.name);
      if (!g) continue; // output not used by anything downstream
      grads.delete(nd.name);
      const m = this.mod(nd.name);
      const r = m.backward(g);
      const rs = Array.isArray(r) ? r : [r];
      if (rs.length !== nd.inputs.length) throw new QuantFaceError('E_INTERNAL', `Graph: node ${nd.name} returned ${rs.length} gradients for ${nd.inputs.length} inputs`);
      // Reference accounting: g's own reference moves to the first result that shares its buffer; any other
      // repeat of a buffer among the results needs a new reference.
      let gMoved = false;
      rs.forEach((x, j) => {
        if (sameBuffer(x, g)) {
          if (gMoved) retain(x);
          gMoved = true;
        } else if (rs.slice(0, j).some((y) => sameBuffer(x, y))) retain(x);
      });
      if (!gMoved) release(g);
      nd.inputs.forEach((i, j) => accumulate(i, rs[j]!));
    }
    const ins = this.inputNames.map((n, i) => grads.get(n) ?? (bufferPool.acquire(this.ctx!.inputs[i]!, gradOut.dtype).fill(0) as FTensor));
    return ins.length === 1 ? ins[0]! : ins;
  }

  describe(): string {
    return `Graph(${this.nodes.map((n) => `${n.name}<-${n.inputs.join('+')}`).join(', ')})`;
  }
}

/**
 * y = body(x) + shortcut(x) as a Graph with nodes `body`, `shortcut` (when
 * given; identity otherwise) and `add`. Models with their own naming build
 * the Graph directly.
 */
export function residual(body: Module, shortcut?: Module): Graph {
  const g = new Graph().add('body', body, 'input');
  if (shortcut && !(shortcut instanceof Identity)) {
    g.add('shortcut', shortcut, 'input');
    g.add('add', new Add(), ['body', 'shortcut']);
  } else g.add('add', new Add(), ['body', 'input']);
  return g;
}
