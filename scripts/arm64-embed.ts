// Cross-architecture embedding check (scripts/arm64-check.sh runs it).
//   prepare DIR [N]: on this (x86-64) machine, decode and align N LFW faces
//     (lfw-funneled preset, rounded to bytes), post-training-quantize the
//     mobileface teacher to W8A8 on 16 synthetic faces, save the student as
//     DIR/student.qfm, the crops as DIR/crops.u8 and the embeddings of the
//     compiled int8 model as DIR/x86.f32.
//   check DIR: (under qemu-aarch64 with an arm64 node) load DIR/student.qfm,
//     compile it, embed DIR/crops.u8 and print the per-face cosine against
//     DIR/x86.f32; exits 1 when any cosine is below 0.99999.
// Images are decoded on x86 only, and the check imports only the .qfm reader
// and the compiler: sharp (image decoding) has no arm64 binary in this
// checkout's node_modules (an arm64 npm install gets one).
import { readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { binding, packageRoot } from '../lib/binding.js';
import { saveQfm, loadQfm } from '../lib/io/qfm.js';
import { compileModel } from '../lib/runtime/compile.js';

const PER = 112 * 112 * 3;

const LFW = resolve(packageRoot, '../shared/data/lfw');

function toBytes(f: Float32Array, out: Uint8Array, off: number): void {
  for (let k = 0; k < PER; k++) {
    const v = f[k]!;
    let r = Math.round(v);
    if (r - v === 0.5 && r % 2 !== 0) r -= 1;
    out[off + k] = r > 255 ? 255 : r > 0 ? r : 0;
  }
}

function embed(model: Parameters<typeof compileModel>[0], crops: Uint8Array, n: number): Float32Array {
  const cm = compileModel(model);
  const p = cm.plan(n);
  const arena = cm.newArena(p);
  cm.inputView(p, arena).set(crops.subarray(0, n * PER));
  cm.runSync(p, arena);
  return Float32Array.from(cm.outputView(p, arena));
}

const [mode, dirArg, nArg] = process.argv.slice(2);
if (!dirArg || (mode !== 'prepare' && mode !== 'check')) {
  console.error('usage: arm64-embed.ts prepare|check DIR [N]');
  process.exit(2);
}
const dir = resolve(dirArg);
const info = binding.info();
console.log(`arm64-embed ${mode}: ${process.arch}, binding kernels gemm_u8s8s32=${info.kernels.gemm_u8s8s32} conv2d_u8s8_depthwise=${info.kernels.conv2d_u8s8_depthwise} sgemm=${info.kernels.sgemm}`);

if (mode === 'prepare') {
  // Image decoding (sharp) only here: the arm64 side has no sharp binary.
  const { decodeImage, alignImage } = await import('../lib/data/index.js');
  const { faceCrops, TEACHER } = await import('../bench/lib/runtime-faces.js');
  const { importTfjsGraphModel } = await import('../lib/io/index.js');
  const { quantizeModel } = await import('../lib/runtime/calibrate.js');
  const n = Number(nArg ?? 32);
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (const person of readdirSync(LFW).sort()) {
    for (const f of readdirSync(join(LFW, person)).sort()) if (f.endsWith('.jpg')) files.push(join(LFW, person, f));
    if (files.length >= n) break;
  }
  const crops = new Uint8Array(n * PER);
  for (let i = 0; i < n; i++) toBytes(alignImage(await decodeImage(files[i]!), { kind: 'preset', preset: 'lfw-funneled' }), crops, i * PER);
  const calib = (await faceCrops(16)).subarray(0, 16 * PER);
  const fp = await importTfjsGraphModel(TEACHER);
  const w8 = quantizeModel(fp, { weightBits: 8, actBits: 8, images: calib, batchSize: 8 });
  await saveQfm(w8, join(dir, 'student.qfm'));
  // Embed the student as loaded back from the file: exactly what the arm64 side runs.
  const student = (await loadQfm(join(dir, 'student.qfm'))).model;
  writeFileSync(join(dir, 'crops.u8'), crops);
  writeFileSync(join(dir, 'x86.f32'), embed(student, crops, n));
  writeFileSync(join(dir, 'n.txt'), String(n));
  console.log(`prepared ${n} LFW faces, W8A8 student and x86-64 embeddings in ${dir}`);
} else {
  const n = Number(readFileSync(join(dir, 'n.txt'), 'utf8'));
  const crops = new Uint8Array(readFileSync(join(dir, 'crops.u8')));
  const want = new Float32Array(new Uint8Array(readFileSync(join(dir, 'x86.f32'))).buffer);
  const student = (await loadQfm(join(dir, 'student.qfm'))).model;
  const got = embed(student, crops, n);
  const d = got.length / n;
  let min = 1;
  let identical = 0;
  for (let i = 0; i < n; i++) {
    let ab = 0, aa = 0, bb = 0, same = true;
    for (let j = 0; j < d; j++) {
      const a = got[i * d + j]!, b = want[i * d + j]!;
      ab += a * b; aa += a * a; bb += b * b;
      if (a !== b) same = false;
    }
    const c = ab / Math.sqrt(aa * bb);
    if (!(c >= min)) min = c;
    if (same) identical++;
  }
  console.log(`arm64 vs x86-64 embeddings of ${n} LFW faces (dim ${d}): min cosine ${min.toFixed(7)}, ${identical}/${n} bit-identical`);
  process.exit(min >= 0.99999 ? 0 : 1);
}
