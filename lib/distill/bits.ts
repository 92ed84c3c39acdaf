/**
 * Bit-width specifications: `w8a8`, `w6a6`, `w4a4`, any `wXaY` with X, Y in
 * 2..8, and per-layer overrides as a list of `pattern=spec` rules
 * (`conv1=w8a8,dense/MatMul=w8,add_16=float`): the first rule whose pattern
 * matches a quantizable module's dotted name wins; `*` matches any run of
 * characters; a spec may give only the weights (`w8`) or only the
 * activations (`a8`), or `float` to leave that layer unquantized.
 */
import { QuantFaceError } from '../errors.js';
import type { Module } from '../nn/module.js';
import { Graph } from '../nn/containers.js';
import { Add, Conv2d, PReLU, ReLU } from '../nn/layers.js';
import { Clamp } from '../nn/import-ops.js';
import type { LayerQuantOverride } from '../quant/qat.js';

export interface BitWidths {
  weightBits: number;
  actBits: number;
  /**
   * Activation width of the residual stream (residual-addition outputs and skip sources), from a
   * `wXaYrZ` name such as `w4a4r8`: a mixed-precision model, reported beside pure wXaY, never in its
   * place. Weights (and so the file size) are as wXaY.
   */
  residualBits?: number;
}

/** One per-layer rule. `bits: null` keeps the layer in float. */
export interface LayerRule {
  pattern: string;
  bits: Partial<BitWidths> | null;
}

function checkWidth(v: number, what: string, spec: string): number {
  if (!Number.isInteger(v) || v < 2 || v > 8) throw new QuantFaceError('E_ARG', `bits '${spec}': ${what} width must be an integer from 2 to 8 (got ${v})`);
  return v;
}

/** Parses `wXaY` or `wXaYrZ` (the residual stream's activations at Z bits; case-insensitive). */
export function parseBits(spec: string): BitWidths {
  if (typeof spec !== 'string') throw new QuantFaceError('E_ARG', `bits must be a string like w8a8, w6a6 or w4a4 (got ${typeof spec})`);
  const m = /^w(\d+)a(\d+)(?:r(\d+))?$/i.exec(spec.trim());
  if (!m) throw new QuantFaceError('E_ARG', `bits '${spec}' is not a bit-width spec: use wXaY with X (weights) and Y (activations) from 2 to 8, e.g. w8a8, w6a6, w4a4 (wXaYrZ: the residual stream's activations at Z bits, e.g. w4a4r8)`);
  const b: BitWidths = { weightBits: checkWidth(Number(m[1]), 'the weight', spec), actBits: checkWidth(Number(m[2]), 'the activation', spec) };
  if (m[3] !== undefined) b.residualBits = checkWidth(Number(m[3]), 'the residual-stream', spec);
  return b;
}

/** `w8a8`-style name of a width pair (`w4a4r8` with a residual-stream width). */
export function bitsName(b: BitWidths): string {
  return `w${b.weightBits}a${b.actBits}${b.residualBits !== undefined ? `r${b.residualBits}` : ''}`;
}

/** Parses `pattern=spec[,pattern=spec...]` (see the file comment). */
export function parseLayerRules(spec: string): LayerRule[] {
  if (typeof spec !== 'string') throw new QuantFaceError('E_ARG', `layer bits must be a string like 'conv1=w8a8,dense/MatMul=w8' (got ${typeof spec})`);
  const rules: LayerRule[] = [];
  for (const raw of spec.split(',')) {
    const part = raw.trim();
    if (!part) continue;
    const eq = part.lastIndexOf('=');
    if (eq <= 0 || eq === part.length - 1) throw new QuantFaceError('E_ARG', `layer bits rule '${part}' must be NAME=SPEC (SPEC: wXaY, wX, aY or float), e.g. conv1=w8a8`);
    const pattern = part.slice(0, eq).trim();
    if (pattern.startsWith('@') && !LAYER_CLASSES[pattern])
      throw new QuantFaceError('E_ARG', `layer bits rule '${part}': unknown layer class ${pattern} (known: ${Object.keys(LAYER_CLASSES).join(', ')})`);
    const s = part.slice(eq + 1).trim().toLowerCase();
    if (s === 'float' || s === 'fp32') {
      rules.push({ pattern, bits: null });
      continue;
    }
    const m = /^(?:w(\d+))?(?:a(\d+))?$/.exec(s);
    if (!m || (m[1] === undefined && m[2] === undefined)) throw new QuantFaceError('E_ARG', `layer bits rule '${part}': '${s}' is not wXaY, wX, aY or float`);
    const bits: Partial<BitWidths> = {};
    if (m[1] !== undefined) bits.weightBits = checkWidth(Number(m[1]), 'the weight', part);
    if (m[2] !== undefined) bits.actBits = checkWidth(Number(m[2]), 'the activation', part);
    rules.push({ pattern, bits });
  }
  return rules;
}

/**
 * Layer classes a rule may name instead of a layer: `@depthwise` (depthwise convolutions: one group per input
 * channel; a few percent of a MobileFaceNet's weights, and the ones 4-bit weights hurt most).
 */
const LAYER_CLASSES: Record<string, (m: Module) => boolean> = {
  '@depthwise': (m) => m instanceof Conv2d && m.groups > 1 && m.groups === m.inChannels,
};

function globToRegExp(p: string): RegExp {
  return new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*')}$`);
}

/**
 * A toQat `layer` callback from rules. Rules that match no module are
 * reported through `unused` after the conversion (call it then).
 */
export function layerOverrides(rules: readonly LayerRule[]): { layer: (name: string, m: Module) => LayerQuantOverride | null | undefined; unused: () => string[] } {
  const compiled = rules.map((r) => ({ rule: r, re: globToRegExp(r.pattern), select: LAYER_CLASSES[r.pattern], hit: false }));
  return {
    layer: (name, m) => {
      for (const c of compiled) {
        if (c.select ? !c.select(m) : !c.re.test(name)) continue;
        c.hit = true;
        return c.rule.bits === null ? null : { ...c.rule.bits };
      }
      return undefined;
    },
    unused: () => compiled.filter((c) => !c.hit).map((c) => c.rule.pattern),
  };
}

/**
 * Names of the activations on a graph's residual stream: every residual Add's output and each Add input
 * that is also read elsewhere (the skip connection's source), when a quantizer would sit there (PReLU,
 * ReLU, Clamp or Add outputs). Empty for a model that is not a Graph.
 */
export function residualStreamNames(model: Module): string[] {
  if (!(model instanceof Graph)) return [];
  const consumers = new Map<string, number>();
  for (const nd of model.nodeList) for (const i of nd.inputs) consumers.set(i, (consumers.get(i) ?? 0) + 1);
  const quantized = (name: string): boolean => {
    const m = model.getChild(name);
    return m instanceof PReLU || m instanceof ReLU || m instanceof Add || m instanceof Clamp;
  };
  const out: string[] = [];
  for (const nd of model.nodeList) {
    if (!(model.getChild(nd.name) instanceof Add)) continue;
    if (!out.includes(nd.name)) out.push(nd.name);
    for (const i of nd.inputs) if ((consumers.get(i) ?? 0) > 1 && quantized(i) && !out.includes(i)) out.push(i);
  }
  return out;
}

/** Rules giving the residual-stream activations (residualStreamNames) `actBits`; exact names. */
export function residualRules(model: Module, actBits: number): LayerRule[] {
  checkWidth(actBits, 'the residual activation', `residual a${actBits}`);
  return residualStreamNames(model).map((n) => ({ pattern: n, bits: { actBits } }));
}
