// The committed prebuilt binary: it is what node-gyp-build loads when no
// local build exists (PREBUILDS_ONLY=1 simulates that), it was built from
// exactly these native sources, it is stripped, and the kernel tests pass
// on it alone.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot, bindingPath } from '../lib/binding.js';
// @ts-expect-error plain .mjs helper without types
import { sourceHash } from '../scripts/source-hash.mjs';

// This file runs six kernel test files as child processes: 77 s alone, over
// tap's 120 s per-file limit when the suite loads both cores. Its own limit
// (the children keep theirs, 300 s each):
t.setTimeout(600_000);

const dir = join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`);
const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.node')) : [];

t.test('tests report which binary they loaded', async (t) => {
  t.ok(existsSync(bindingPath), `loaded ${bindingPath}`);
});

// Every committed prebuild, those for other platforms included (linux-arm64
// is cross-built by scripts/arm64-check.sh, which also runs its tests under
// qemu-aarch64): one binary per folder, for the folder's CPU, built from the
// current native sources (the hash string info().sourceHash returns is in
// the binary's read-only data).
const ELF_MACHINE: Record<string, number> = { x64: 62, arm64: 183 };
t.test('every prebuild folder: one binary for its CPU, built from the current sources', async (t) => {
  const root = join(packageRoot, 'prebuilds');
  const folders = existsSync(root) ? readdirSync(root) : [];
  for (const want of ['linux-x64', 'linux-arm64']) t.ok(folders.includes(want), `prebuilds/${want} exists`);
  const hash = Buffer.from(sourceHash(packageRoot));
  for (const d of folders) {
    const bins = readdirSync(join(root, d)).filter((f) => f.endsWith('.node'));
    t.equal(bins.length, 1, `${d}: exactly one binary`);
    if (bins.length !== 1) continue;
    const buf = readFileSync(join(root, d, bins[0]!));
    t.ok(buf.includes(hash), `${d}: built from the current native sources (npm run prebuildify; scripts/arm64-check.sh for linux-arm64)`);
    const [platform, arch] = d.split('-');
    if (platform === 'linux' && arch && ELF_MACHINE[arch]) {
      t.equal(buf.subarray(0, 4).toString('latin1'), '\x7fELF', `${d}: an ELF file`);
      t.equal(buf.readUInt16LE(18), ELF_MACHINE[arch], `${d}: ELF machine of ${arch}`);
    }
  }
});

t.test('prebuilt binary', { skip: files.length === 0 ? `no prebuild for ${process.platform}-${process.arch}` : false }, async (t) => {
  t.equal(files.length, 1, 'exactly one binary per platform folder');
  const env: NodeJS.ProcessEnv = { ...process.env, PREBUILDS_ONLY: '1' };
  delete env.QUANTFACE_BINDING;
  const probe = spawnSync(
    process.execPath,
    ['--import', 'tsx', '-e', "import('./lib/binding.ts').then(m => console.log(JSON.stringify({ path: m.bindingPath, hash: m.binding.info().sourceHash, kernels: m.binding.info().kernels })))"],
    { cwd: packageRoot, env, encoding: 'utf8' },
  );
  t.equal(probe.status, 0, `loads (stderr: ${probe.stderr.slice(-1000)})`);
  const res = JSON.parse(probe.stdout.trim().split('\n').pop() ?? '{}') as { path: string; hash: string; kernels: Record<string, string> };
  t.equal(res.path, join(dir, files[0]), 'node-gyp-build picked the prebuild');
  t.equal(res.hash, sourceHash(packageRoot), 'built from the current native sources (run `npm run prebuildify` after changing native/)');

  const nm = spawnSync('nm', [join(dir, files[0])], { encoding: 'utf8' });
  if (nm.error) t.comment('nm not available: strip check skipped');
  else t.match(nm.stderr + nm.stdout, /no symbols/, 'stripped');

  // The kernel tests, run on the prebuild alone.
  const kernelTests = readdirSync(join(packageRoot, 'test')).filter((f) =>
    /^(binding|sgemm|gemm_u8s8|quant|conv|learned-range-native)\.test\.ts$/.test(f),
  );
  t.ok(kernelTests.length >= 1, `kernel tests found: ${kernelTests.join(', ')}`);
  for (const f of kernelTests) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join('test', f)], { cwd: packageRoot, env, encoding: 'utf8', timeout: 300_000 });
    const failed = /^not ok /m.test(r.stdout);
    t.ok(r.status === 0 && !failed, `${f} passes on the prebuild (exit ${r.status}${failed ? ', has failures' : ''})`);
  }
});
