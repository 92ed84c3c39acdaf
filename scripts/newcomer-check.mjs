#!/usr/bin/env node
// The newcomer check: the README's commands, run as a new user runs them, on
// the committed state (HEAD) of this repository.
//
//   1. git clone HEAD into a temporary folder beside this checkout (so that the
//      clone's ../shared is the real one), then in the clone, with no extra
//      environment variable: `npm install`, `npx quantface quantize` (the
//      zero-configuration job), `npx quantface info quantface-student.qfm`;
//   2. quantface as a dependency: `npm pack` in the clone, `npm install
//      <tarball>` in an empty project, and a script there that loads the
//      student with `import { loadModel } from 'quantface'` and embeds a face.
//
// Fails loudly with the command that broke. The child environment is a
// whitelist (PATH without node_modules/.bin entries, HOME for the npm cache,
// locale, the machine's TLS roots and proxy): no npm_config_*, ONNXRUNTIME_*, QUANTFACE_* or tap variables leak
// in from `npm test`.
//
//   node scripts/newcomer-check.mjs [--npm VERSION] [--node DIR] [--test]
//                                    [--no-dependency] [--rev COMMIT] [--keep] [--verbose]
//
// --npm VERSION   run npm/npx VERSION from the registry (`npm pack npm@VERSION`,
//                 cached under $TMPDIR/qf-npm-VERSION) instead of the npm on PATH
//                 (npm 12 needs Node >= 22.22: add --node)
// --node DIR      put DIR (a folder holding `node`) first on PATH
// --test          also run `npm test` in the clone (minutes)
// --rev COMMIT    check that commit instead of HEAD
// --keep          keep the clone and the consumer project (paths printed)
// --verbose       echo every command's output (otherwise: the tail on failure)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const verbose = flag('--verbose');
const keep = flag('--keep');
const npmVersion = option('--npm');
const nodeDir = option('--node');

function log(s) { process.stdout.write(`newcomer: ${s}\n`); }
/** A command's output, indented under the step that ran it. */
function indent(out) { const s = out.replace(/\s+$/, ''); return s ? s.replace(/^/gm, '    | ') + '\n' : ''; }

/** A newcomer's environment: nothing that npm, tap or CI put there. */
function cleanEnv(prefixPath = []) {
  // The machine's own setup stays (a newcomer on it has it too): TLS roots and proxies.
  const keepVars = ['HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LC_ALL', 'TERM', 'TMPDIR', 'TZ',
    'NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR',
    'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy'];
  const env = {};
  for (const k of keepVars) if (process.env[k] !== undefined) env[k] = process.env[k];
  const path = (process.env.PATH ?? '').split(delimiter)
    .filter((p) => p && !/node_modules[\\/]\.bin|node-gyp-bin|[\\/]npm[\\/]node_modules[\\/]@npmcli/.test(p));
  env.PATH = [...prefixPath, ...path].join(delimiter);
  return env;
}

function sh(cmd, argv, opts = {}) {
  return spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 256 << 20, ...opts });
}

/** Runs one step; on failure prints the command, where, its exit code and output tail, then exits 1. */
function step(label, cmd, argv, { cwd, env, timeoutS = 900 }) {
  const shown = [cmd, ...argv].join(' ');
  const t0 = performance.now();
  const r = sh(cmd, argv, { cwd, env, timeout: timeoutS * 1000 });
  const s = (performance.now() - t0) / 1000;
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (verbose && out.trim()) process.stdout.write(indent(out));
  if (r.status !== 0) {
    const why = r.error ? `${r.error.message}` : r.signal ? `killed by ${r.signal}` : `exit code ${r.status}`;
    process.stdout.write(indent(out.split('\n').slice(-40).join('\n')));
    log(`FAILED: \`${shown}\` (${label}) in ${cwd}: ${why} after ${s.toFixed(1)} s`);
    process.exit(1);
  }
  log(`ok   ${s.toFixed(1).padStart(6)} s  ${shown}   (${label}, in ${cwd})`);
  return { s, out };
}

const made = [];
let cleaned = false;
function cleanup() {
  if (cleaned) return;
  cleaned = true;
  if (keep) { for (const d of made) log(`kept ${d}`); return; }
  for (const d of made) rmSync(d, { recursive: true, force: true });
}

function duK(dir) {
  const r = sh('du', ['-sk', dir]);
  return r.status === 0 ? Number(r.stdout.split(/\s/)[0]) : NaN;
}

// ------------------------------------------------------------------ setup
const prefixPath = [];
if (nodeDir) prefixPath.push(resolve(nodeDir));
if (npmVersion) {
  // npm's own bin/npm script expects Node's install layout: link npm and npx to its CLI files instead.
  const dir = join(tmpdir(), `qf-npm-${npmVersion}`);
  const shim = join(dir, 'shim');
  if (!existsSync(join(shim, 'npx'))) {
    mkdirSync(shim, { recursive: true });
    const p = sh('npm', ['pack', `npm@${npmVersion}`, '--silent'], { cwd: dir, env: cleanEnv() });
    const tgz = p.stdout.trim().split('\n').pop();
    if (p.status !== 0 || !tgz) { log(`FAILED: npm pack npm@${npmVersion}: ${p.stderr}`); process.exit(1); }
    const x = sh('tar', ['xzf', tgz], { cwd: dir });
    if (x.status !== 0) { log(`FAILED: tar xzf ${tgz}: ${x.stderr}`); process.exit(1); }
    symlinkSync(join(dir, 'package', 'bin', 'npm-cli.js'), join(shim, 'npm'));
    symlinkSync(join(dir, 'package', 'bin', 'npx-cli.js'), join(shim, 'npx'));
  }
  prefixPath.unshift(shim);
}
const env = cleanEnv(prefixPath);
const rev = option('--rev') ?? 'HEAD';
const head = sh('git', ['rev-parse', '--verify', `${rev}^{commit}`], { cwd: repoRoot }).stdout.trim();
if (!head) { log(`FAILED: ${rev} is not a commit of ${repoRoot}`); process.exit(1); }
const parent = dirname(repoRoot);
if (!existsSync(join(parent, 'shared'))) log(`note: ${parent} has no shared/ folder: the clone's ../shared is missing (tests that read it skip)`);
const versions = sh('sh', ['-c', 'echo "node $(node -v), npm $(npm -v)"'], { env, cwd: parent }).stdout.trim();
log(`${versions}; ${rev} ${head.slice(0, 12)}; PATH starts ${env.PATH.split(delimiter).slice(0, 2).join(delimiter)}`);
const dirty = sh('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot }).stdout.trim();
if (dirty && rev === 'HEAD') log('note: the working tree has uncommitted changes; the check clones the committed HEAD');

const t0 = performance.now();
const clone = mkdtempSync(join(parent, 'qf-newcomer-'));
made.push(clone);
process.on('exit', cleanup); // also after an unexpected exception
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

// ------------------------------------------------------------------ 1. the README in a fresh clone
step('git clone', 'git', ['clone', '--quiet', repoRoot, clone], { cwd: parent, env });
step('check out', 'git', ['checkout', '--quiet', head], { cwd: clone, env });
// The bin as package.json names it must be committed with its execute bit.
// npm sets the mode of the project's own bin only now and then (a first full
// install, the first npx), so a fresh clone may work while `rm -rf dist && npm
// run build` (tsc writes files without the execute bit) or a committed 100644
// file later gives `sh: 1: quantface: Permission denied`.
const binRel = (() => { try { const b = JSON.parse(readFileSync(join(clone, 'package.json'), 'utf8')).bin; return typeof b === 'string' ? b : b?.quantface; } catch { return undefined; } })();
if (!binRel) { log('FAILED: package.json in the clone names no bin for quantface'); process.exit(1); }
const staged = sh('git', ['ls-files', '-s', '--', binRel], { cwd: clone }).stdout.trim();
if (!staged.startsWith('100755 ')) {
  log(`FAILED: package.json bin ${binRel} is ${staged ? `committed as mode ${staged.split(' ')[0]}` : 'not in git (a build output)'}: `
    + 'commit an executable launcher (git update-index --chmod=+x <file>); npm sets the mode of the project\'s own bin only on some installs, so it breaks later with "quantface: Permission denied"');
  process.exit(1);
}
const install = step('README: install', 'npm', ['install'], { cwd: clone, env });
const changed = sh('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: clone }).stdout.trim();
log(changed ? `note: npm install changed tracked files:\n${changed}` : 'npm install left every tracked file (package-lock.json included) unchanged');
const quantize = step('README: main job', 'npx', ['quantface', 'quantize'], { cwd: clone, env });
const student = join(clone, 'quantface-student.qfm');
if (!existsSync(student)) { log(`FAILED: \`npx quantface quantize\` exited 0 but wrote no ${student}`); process.exit(1); }
const info = step('README: model info', 'npx', ['quantface', 'info', 'quantface-student.qfm'], { cwd: clone, env });
if (!verbose) process.stdout.write(indent(info.out));
let test = null;
if (flag('--test')) test = step('README: tests', 'npm', ['test'], { cwd: clone, env, timeoutS: 3600 });

// ------------------------------------------------------------------ 2. quantface as a dependency
let dep = null;
if (!flag('--no-dependency')) {
  const pack = step('npm pack', 'npm', ['pack', '--silent'], { cwd: clone, env });
  const tgz = join(clone, pack.out.trim().split('\n').pop());
  const app = mkdtempSync(join(tmpdir(), 'qf-app-'));
  made.push(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'qf-app', version: '1.0.0', private: true, type: 'module' }, null, 2) + '\n');
  const lfw = join(parent, 'shared', 'data', 'lfw');
  const person = existsSync(lfw) ? readdirSync(lfw).sort().find((d) => readdirSync(join(lfw, d)).filter((f) => f.endsWith('.jpg')).length >= 2) : undefined;
  const faces = person ? readdirSync(join(lfw, person)).filter((f) => f.endsWith('.jpg')).sort().slice(0, 2).map((f) => join(lfw, person, f)) : [];
  writeFileSync(join(app, 'embed.mjs'), `// A server's first use of quantface: load a student, embed two faces.
import { loadModel, bindingPath, loadTf } from 'quantface';
const [qfm, ...faces] = process.argv.slice(2);
const t0 = performance.now();
const model = await loadModel(qfm, { threads: 2, align: 'lfw-funneled' });
let crops = faces;
if (faces.length === 0) { // no LFW here: two synthetic 112x112 RGB crops
  crops = [0, 1].map((k) => { const b = Buffer.alloc(112 * 112 * 3); for (let i = 0; i < b.length; i++) b[i] = (i * (7 + k) + (i >> 7)) & 255; return { data: b, width: 112, height: 112, channels: 3 }; });
}
const [a, b] = await model.embed(crops);
const norm = Math.hypot(...a);
console.log(\`binary: \${bindingPath}\`);
console.log(\`embedded \${crops.length} faces (\${faces.length ? faces.map((f) => f.split('/').slice(-2).join('/')).join(', ') : 'synthetic crops'}): dim \${a.length}, |a| \${norm.toFixed(4)}, similarity \${model.similarity(a, b).toFixed(4)}, \${(performance.now() - t0).toFixed(0)} ms\`);
await model.dispose();
try { await loadTf(); console.log('@tensorflow/tfjs: present'); }
catch (e) { console.log(\`@tensorflow/tfjs (optional peer) absent: \${e.code}: \${e.message}\`); if (e.code !== 'E_DEPENDENCY') process.exit(1); }
`);
  const depInstall = step('dependency: install', 'npm', ['install', tgz], { cwd: app, env });
  const kib = duK(join(app, 'node_modules'));
  const pkgs = sh('sh', ['-c', 'ls -d node_modules/* node_modules/@*/* 2>/dev/null | grep -v "/@[^/]*$" | wc -l'], { cwd: app }).stdout.trim();
  const embed = step('dependency: embed', 'node', ['embed.mjs', student, ...faces], { cwd: app, env });
  if (!verbose) process.stdout.write(indent(embed.out));
  const tgzKiB = Math.round(statSync(tgz).size / 1024);
  dep = { installS: depInstall.s, nodeModulesMiB: kib / 1024, topLevelPackages: Number(pkgs), tarballKiB: tgzKiB };
  log(`dependency: tarball ${tgzKiB} KiB; installed node_modules ${(kib / 1024).toFixed(1)} MiB in ${pkgs} packages; install ${depInstall.s.toFixed(1)} s`);
}

const total = (performance.now() - t0) / 1000;
log(`PASSED in ${total.toFixed(1)} s (${versions}): npm install ${install.s.toFixed(1)} s, npx quantface quantize ${quantize.s.toFixed(1)} s`
  + `${test ? `, npm test ${test.s.toFixed(1)} s` : ''}${dep ? `, dependency install ${dep.installS.toFixed(1)} s` : ''}`);
cleanup();
