// The `quantface` command as a user runs it: through package.json's bin (a
// committed launcher with its execute bit), as a process. The full fresh-clone
// check (npm install, npx quantface quantize, quantface as a dependency) is
// scripts/newcomer-check.mjs, run by .ci/run.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { packageRoot } from '../lib/binding.js';

const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as {
  bin: Record<string, string>; files: string[]; engines: { node: string }; allowScripts: Record<string, boolean>;
};
const bin = resolve(packageRoot, pkg.bin.quantface!);

t.test('package.json bin points at the committed launcher, which is packed', async (t) => {
  t.equal(pkg.bin.quantface, './bin/quantface.js');
  t.ok(pkg.files.includes('bin/'), 'files includes bin/');
  t.match(readFileSync(bin, 'utf8'), /^#!\/usr\/bin\/env node\n/, 'starts with a node shebang');
});

t.test('the launcher has its execute bit, on disk and in git', async (t) => {
  t.ok(statSync(bin).mode & 0o100, `${bin} is executable (mode ${(statSync(bin).mode & 0o777).toString(8)})`);
  const git = spawnSync('git', ['ls-files', '-s', 'bin/quantface.js'], { cwd: packageRoot, encoding: 'utf8' });
  if (git.status !== 0 || !git.stdout.trim()) {
    t.comment('not a git checkout: git mode not checked');
    return;
  }
  t.match(git.stdout, /^100755 /, `git records mode 100755 (git update-index --chmod=+x bin/quantface.js): ${git.stdout.trim()}`);
});

t.test('the bin runs as a process (exec through its shebang, no `node` prefix)', async (t) => {
  t.ok(existsSync(join(packageRoot, 'dist', 'cli.js')), 'dist/cli.js is built (npm install runs prepare)');
  const help = spawnSync(bin, ['--help'], { cwd: packageRoot, encoding: 'utf8', timeout: 60_000 });
  t.equal(help.error, undefined, `spawned (${help.error?.message ?? 'ok'})`);
  t.equal(help.status, 0, `exit 0 (stderr: ${help.stderr.slice(-500)})`);
  t.match(help.stdout, /Usage: quantface/);
  for (const sub of ['quantize', 'eval', 'embed', 'info']) t.match(help.stdout, new RegExp(`\\n\\s+${sub}\\b`), `lists ${sub}`);
  const version = spawnSync(bin, ['--version'], { cwd: packageRoot, encoding: 'utf8', timeout: 60_000 });
  t.equal(version.stdout.trim(), (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version);
  const bad = spawnSync(bin, ['info', join(tmpdir(), 'no-such-model.qfm')], { cwd: packageRoot, encoding: 'utf8', timeout: 60_000 });
  t.equal(bad.status, 2, 'a user error exits 2');
  t.match(bad.stderr, /quantface: error E_IO/);
});

t.test('without dist/ the launcher says to build', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qf-bin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
  copyFileSync(bin, join(dir, 'bin', 'quantface.js'));
  const r = spawnSync(process.execPath, [join(dir, 'bin', 'quantface.js'), '--help'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /dist\/cli\.js is missing: run `npm run build`/);
});

t.test('no prebuilt binary for the platform: E_NATIVE says how to build one', async (t) => {
  // node-gyp-build reads the platform from npm_config_arch; PREBUILDS_ONLY skips a local build/.
  const env: NodeJS.ProcessEnv = { ...process.env, PREBUILDS_ONLY: '1', npm_config_arch: 'riscv64' };
  delete env.QUANTFACE_BINDING;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e',
    "import('./lib/binding.ts').then(() => console.log('loaded'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))"],
  { cwd: packageRoot, env, encoding: 'utf8', timeout: 60_000 });
  const e = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { code?: string; message?: string };
  t.equal(e.code, 'E_NATIVE', `QuantFaceError E_NATIVE (${r.stdout.slice(-300)} ${r.stderr.slice(-300)})`);
  t.match(e.message, /No native build was found for platform=linux arch=riscv64/);
  t.match(e.message, /npm approve-scripts quantface && npm rebuild quantface/, 'says how to allow the install script');
  t.match(e.message, /cmake >= 3\.18/, 'says what a source build needs');
  const dir = mkdtempSync(join(tmpdir(), 'qf-native-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const junk = join(dir, 'quantface.node');
  writeFileSync(junk, 'not an ELF file');
  const bad = spawnSync(process.execPath, ['--import', 'tsx', '-e',
    "import('./lib/binding.ts').then(() => console.log('loaded'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))"],
  { cwd: packageRoot, env: { ...process.env, QUANTFACE_BINDING: junk }, encoding: 'utf8', timeout: 60_000 });
  const e2 = JSON.parse(bad.stdout.trim().split('\n').pop() ?? '{}') as { code?: string; message?: string };
  t.equal(e2.code, 'E_NATIVE', 'a file that is not a loadable binary: E_NATIVE too');
  t.match(e2.message, /does not load here/);
});

t.test('install-script decisions and engines are recorded', async (t) => {
  for (const name of ['core-js', 'esbuild', 'onnxruntime-node', 'sharp']) {
    t.equal(pkg.allowScripts[name], false, `allowScripts decides ${name}`);
  }
  t.match(pkg.engines.node, /\^20\.\d+\.\d+ \|\| \^22\.\d+\.\d+ \|\| >=24/, 'engines names the tested majors');
});
