#!/usr/bin/env node
// npm install hook: use a matching prebuilt binary when one loads here,
// otherwise compile from source with cmake-js.
// npm_config_build_from_source=true (npm install --build-from-source) forces a compile.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const fromSource = ['true', '1'].includes(String(process.env.npm_config_build_from_source || '').toLowerCase());

function run(args, extraEnv) {
  return spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...extraEnv } });
}

if (!fromSource) {
  // node-gyp-build-test loads the binary node-gyp-build would pick (a prebuild here) and exits 0 if it works.
  const test = require.resolve('node-gyp-build/build-test.js');
  const r = spawnSync(process.execPath, [test], { cwd: root, stdio: 'ignore', env: { ...process.env, PREBUILDS_ONLY: '1' } });
  if (r.status === 0) {
    console.log('quantface: using the prebuilt binary in prebuilds/');
    process.exit(0);
  }
  console.log('quantface: no prebuilt binary loads here; compiling from source with cmake-js');
} else {
  console.log('quantface: building from source (npm_config_build_from_source)');
}
const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
const r = run([cmakeJs, 'compile']);
if (r.status !== 0) {
  console.error('quantface: native build failed. Needs cmake >= 3.18 and a C++17 compiler (g++ >= 9 or clang >= 10).');
  process.exit(r.status === null ? 1 : r.status);
}
