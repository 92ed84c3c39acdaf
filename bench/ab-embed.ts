// Same-window A/B of two builds of the addon on whole-network embedding (the
// companion of bench/ab-binding.ts, which times single kernels): one child
// process per build (QUANTFACE_BINDING = A or B) builds and compiles the same
// W8A8 post-training-quantized student once; the parent then asks them in
// turn (A, B, A, B, ...) for one timed block each (batch through the network,
// repeated for >= 0.5 s), so drifting host load hits both alike. Prints
// medians of ms per batch and B/A ratios (< 1: B faster).
//   node --import tsx bench/ab-embed.ts A.node B.node [--model mobileface|mfn|iresnet50]
//       [--batch 32] [--threads 1,2] [--rounds 7]
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
};
const modelName = opt('model', 'mobileface');
const batch = Number(opt('batch', '32'));

async function child(): Promise<void> {
  const { binding, packageRoot } = await import('../lib/binding.js');
  const { importTfjsGraphModel } = await import('../lib/io/index.js');
  const { compileModel, quantizeModel } = await import('../lib/runtime/index.js');
  const { MobileFaceNet } = await import('../lib/models/mobilefacenet.js');
  const { iresnet50 } = await import('../lib/models/iresnet.js');
  const { faceCrops, PER } = await import('./lib/runtime-faces.js');
  const crops = await faceCrops(32);
  const big = modelName === 'iresnet50';
  const fp =
    modelName === 'mobileface'
      ? await importTfjsGraphModel(resolve(packageRoot, '../shared/models/mobileface/mobileface.json'))
      : modelName === 'mfn'
        ? new MobileFaceNet({ seed: 1 })
        : big
          ? iresnet50({ seed: 1 })
          : null;
  if (!fp) throw new Error(`unknown --model ${modelName} (mobileface, mfn, iresnet50)`);
  const w8 = quantizeModel(fp, { weightBits: 8, actBits: 8, images: crops.subarray(0, (big ? 4 : 16) * PER), batchSize: big ? 4 : 8 });
  const cm = compileModel(w8);
  const p = cm.plan(batch);
  const arena = cm.newArena(p);
  const view = cm.inputView(p, arena);
  for (let i = 0; i < batch; i++) view.set(crops.subarray((i % 32) * PER, ((i % 32) + 1) * PER), i * PER);
  const k = binding.info().kernels;
  process.stdout.write(JSON.stringify({ ready: true, kernels: `${k.gemm_u8s8s32}, ${k.conv2d_u8s8_depthwise}` }) + '\n');
  for await (const line of createInterface({ input: process.stdin })) {
    const threads = Number(line);
    if (!threads) break;
    binding.setThreads(threads);
    await cm.run(p, arena);
    let n = 0;
    const t0 = process.hrtime.bigint();
    let dt = 0;
    do {
      await cm.run(p, arena);
      n++;
      dt = Number(process.hrtime.bigint() - t0) / 1e6;
    } while (dt < 500);
    process.stdout.write(JSON.stringify({ ms: dt / n }) + '\n');
  }
}

interface Kid {
  proc: ChildProcessWithoutNullStreams;
  next: () => Promise<Record<string, unknown>>;
}

function startKid(file: string): Kid {
  const self = fileURLToPath(import.meta.url);
  const proc = spawn(process.execPath, ['--import', 'tsx', self, '--child', '--model', modelName, '--batch', String(batch)], {
    env: { ...process.env, QUANTFACE_BINDING: resolve(file) },
  });
  proc.stderr.pipe(process.stderr);
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  return {
    proc,
    next: async () => {
      const r = await lines.next();
      if (r.done) throw new Error(`child for ${file} ended`);
      return JSON.parse(r.value as string) as Record<string, unknown>;
    },
  };
}

async function parent(): Promise<void> {
  const files = argv.filter((a) => a.endsWith('.node'));
  if (files.length !== 2) {
    console.error('usage: ab-embed.ts A.node B.node [--model mobileface|mfn|iresnet50] [--batch 32] [--threads 1,2] [--rounds 7]');
    process.exit(2);
  }
  const threads = opt('threads', '1,2').split(',').map(Number);
  const rounds = Number(opt('rounds', '7'));
  // One child at a time while they build (quantization is timed by nobody, but keep them apart).
  const kids: Kid[] = [];
  for (const f of files) {
    const kid = startKid(f);
    const hello = await kid.next();
    console.log(`${kids.length ? 'B' : 'A'} = ${f} (${hello.kernels as string})`);
    kids.push(kid);
  }
  const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  console.log(`${modelName} W8A8, batch ${batch}, ${rounds} rounds (A, B alternating; ms per batch)`);
  console.log('| threads | A median | B median | B/A | A all | B all |');
  console.log('|---:|---:|---:|---:|---|---|');
  for (const t of threads) {
    const ms: number[][] = [[], []];
    for (let r = 0; r < rounds; r++)
      for (const i of r % 2 ? [1, 0] : [0, 1]) {
        kids[i]!.proc.stdin.write(`${t}\n`);
        ms[i]!.push((await kids[i]!.next()).ms as number);
      }
    const [a, b] = [median(ms[0]!), median(ms[1]!)];
    const all = (v: number[]): string => v.map((x) => x.toFixed(1)).join(' ');
    console.log(`| ${t} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(b / a).toFixed(3)} | ${all(ms[0]!)} | ${all(ms[1]!)} |`);
  }
  for (const k of kids) k.proc.stdin.end('0\n');
}

await (argv.includes('--child') ? child() : parent());
