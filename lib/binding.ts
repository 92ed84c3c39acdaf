/**
 * Loads the native addon: a prebuilt binary from prebuilds/ or a local
 * build (build/Release), through node-gyp-build. Set QUANTFACE_BINDING to
 * the path of a .node file to load that one instead (used by tests and
 * by development builds in other folders).
 *
 * The prebuilt binary loads without quantface's install script (npm 12
 * skips dependencies' install scripts unless the project approves them).
 * Where no binary matches the platform, or it will not load, the error
 * (QuantFaceError E_NATIVE) says how to build one from source.
 */
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Binding } from '../binding.js';
import { QuantFaceError } from './errors.js';

const require = createRequire(import.meta.url);
/** Package root: lib/ and dist/ both sit one level below it. */
export const packageRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** What to do when no binary loads: build one from source. */
export function buildFromSourceAdvice(root: string = packageRoot): string {
  return 'Prebuilt binaries ship for linux-x64 (glibc); elsewhere build the addon from source '
    + '(needs cmake >= 3.18 and a C++17 compiler: g++ >= 9 or clang >= 10). '
    + 'As a dependency: allow quantface\'s install script and rerun it '
    + '(npm 11+: `npm approve-scripts quantface && npm rebuild quantface`; npm 10: `npm rebuild quantface`); '
    + `in a clone: \`npm run build:native\` (in ${root}). `
    + 'QUANTFACE_BINDING=<file.node> loads a binary built elsewhere.';
}

function resolveBindingPath(): string {
  const override = process.env.QUANTFACE_BINDING;
  if (override) return resolve(override);
  const gypBuild = require('node-gyp-build') as { resolve(dir: string): string };
  try {
    return gypBuild.resolve(packageRoot);
  } catch (e) {
    const why = e instanceof Error ? e.message.trim().replace(/\s+/g, ' ') : String(e);
    throw new QuantFaceError('E_NATIVE',
      `no native binary of quantface matches this platform (${process.platform}-${process.arch}, Node ${process.versions.node}): `
      + `${why}. ${buildFromSourceAdvice()}`, { cause: e });
  }
}

function loadBinding(path: string): Binding {
  try {
    return require(path) as Binding;
  } catch (e) {
    const why = e instanceof Error ? e.message.trim() : String(e);
    throw new QuantFaceError('E_NATIVE', `the native binary ${path} does not load here: ${why}. ${buildFromSourceAdvice()}`, { cause: e, path });
  }
}

/** Absolute path of the .node file that was loaded. */
export const bindingPath: string = resolveBindingPath();
/** The native addon (typed by binding.d.ts). */
export const binding: Binding = loadBinding(bindingPath);
export default binding;
