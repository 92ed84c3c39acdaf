/** Option parsers shared by the CLI subcommands (commander `argParser`s). */
import { InvalidArgumentError, type Command } from 'commander';
import { parseTemplate, parseTriple, type InputOverrides } from '../io/load.js';

/** An integer >= min ("--x must be an integer >= min."). */
export function intArg(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}.`);
    return n;
  };
}

/** A finite number; with `sign`, also positive (> 0) or non-negative (>= 0). */
export function numberArg(name: string, sign?: 'positive' | 'non-negative') {
  return (v: string): number => {
    const n = Number(v);
    const ok = v.trim() !== '' && Number.isFinite(n) && (sign === undefined || n > 0 || (sign === 'non-negative' && n === 0));
    if (!ok) throw new InvalidArgumentError(`${name} must be a ${sign ? `${sign} ` : ''}number.`);
    return n;
  };
}

/** The input-description flags of quantize / eval / embed / info. */
export interface InputFlags {
  inputMean?: string;
  inputStd?: string;
  bgr?: boolean;
  template?: string;
}

/**
 * Adds --input-mean, --input-std, --bgr and --template: the input
 * description of a model file that records none (the file, its sidecar and
 * the registry of known models come first; a contradicting flag is an error).
 */
export function addInputOptions(cmd: Command, what = 'the model'): Command {
  return cmd
    .option('--input-mean <v>', `input mean of ${what}: one number or three (model channel order), (x - mean) / std; only where the file, its sidecar or the registry of known models does not say`)
    .option('--input-std <v>', `input std of ${what}: one number or three`)
    .option('--bgr', `${what} takes BGR input (default RGB)`)
    .option('--template <t>', `alignment ${what} expects: arcface, box:lfw-funneled|box:ffhq|box:none, or ten numbers x1,y1,...,x5,y5 (5-point template in its crop)`);
}

/** The InputOverrides of the parsed flags, or undefined when none was given. Errors: E_ARG. */
export function inputOverrides(o: InputFlags): InputOverrides | undefined {
  const r: InputOverrides = {};
  if (o.inputMean !== undefined) r.mean = parseTriple('--input-mean', o.inputMean);
  if (o.inputStd !== undefined) r.std = parseTriple('--input-std', o.inputStd);
  if (o.bgr) r.colorOrder = 'BGR';
  if (o.template !== undefined) r.alignment = parseTemplate(o.template);
  return Object.keys(r).length ? r : undefined;
}
