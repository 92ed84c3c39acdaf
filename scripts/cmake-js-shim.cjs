#!/usr/bin/env node
// prebuildify calls node-gyp: `rebuild --target=V --devdir=D --arch=A --release|--debug`.
// prebuildify has no cmake-js backend, so translate that into cmake-js.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const args = process.argv.slice(2);
const opt = (name) => {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : undefined;
};
if (args[0] !== 'rebuild') {
  console.error(`cmake-js-shim: only 'rebuild' is supported (got ${args.join(' ')})`);
  process.exit(2);
}
const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
const cmd = [cmakeJs, 'rebuild', '--runtime=node'];
if (opt('target')) cmd.push(`--runtime-version=${opt('target')}`);
if (opt('arch')) cmd.push(`--arch=${opt('arch')}`);
if (args.includes('--debug')) cmd.push('--debug');
// Extra CMake options for release builds, e.g. QUANTFACE_CMAKE_ARGS="--CDQUANTFACE_CUDA=OFF"
if (process.env.QUANTFACE_CMAKE_ARGS) cmd.push(...process.env.QUANTFACE_CMAKE_ARGS.split(/\s+/).filter(Boolean));
const r = spawnSync(process.execPath, cmd, { stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
