#!/usr/bin/env node
/**
 * The `quantface` command line. Each subcommand lives in lib/cli/<name>.ts
 * and exports `register(program)`; add new ones to SUBCOMMANDS.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { QuantFaceError } from './errors.js';
import { register as registerEval } from './cli/eval.js';
import { register as registerQuantize } from './cli/quantize.js';
import { register as registerEmbed } from './cli/embed.js';
import { register as registerFaces } from './cli/faces.js';
import { register as registerQuantizePipeline } from './cli/quantize-pipeline.js';

/** Subcommand registrars, in help order. */
export const SUBCOMMANDS: Array<(program: Command) => void> = [registerQuantize, registerEval, registerEmbed, registerFaces, registerQuantizePipeline];

function version(): string {
  try {
    const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
    return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Builds the program (exitOverride so callers and tests get errors back). */
export function buildProgram(): Command {
  const program = new Command('quantface')
    .description('QuantFace: low-bit quantization and evaluation of face-recognition networks')
    .version(version())
    .showHelpAfterError()
    .exitOverride();
  for (const reg of SUBCOMMANDS) reg(program);
  return program;
}

/** Runs the CLI with argv (as process.argv); returns the exit code. */
export async function main(argv: string[] = process.argv): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode; // commander already printed
    if (e instanceof QuantFaceError) {
      process.stderr.write(`quantface: error ${e.code}: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`quantface: internal error: ${e instanceof Error ? e.stack ?? e.message : String(e)}\nPlease report this.\n`);
    return 1;
  }
}

function isMain(): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  try {
    return realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  main().then((code) => { process.exitCode = code; });
}
