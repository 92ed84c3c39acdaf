/**
 * Loads the native addon: a prebuilt binary from prebuilds/ or a local
 * build (build/Release), through node-gyp-build. Set QUANTFACE_BINDING to
 * the path of a .node file to load that one instead (used by tests and
 * by development builds in other folders).
 */
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Binding } from '../binding.js';

const require = createRequire(import.meta.url);
/** Package root: lib/ and dist/ both sit one level below it. */
export const packageRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function resolveBindingPath(): string {
  const override = process.env.QUANTFACE_BINDING;
  if (override) return resolve(override);
  const gypBuild = require('node-gyp-build') as { resolve(dir: string): string };
  return gypBuild.resolve(packageRoot);
}

/** Absolute path of the .node file that was loaded. */
export const bindingPath: string = resolveBindingPath();
/** The native addon (typed by binding.d.ts). */
export const binding: Binding = require(bindingPath) as Binding;
export default binding;
