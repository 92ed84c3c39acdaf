/**
 * Starts the example server:
 *
 *   npm run serve:example -- --model student.qfm [--port 3000] [--host 127.0.0.1]
 *       [--threads 2] [--align none|ffhq|lfw-funneled|box:x,y,side] [--threshold 0.3]
 *       [--max-batch 32] [--body-limit 8388608] [--max-pixels 40000000] [--log]
 *
 * Environment variables QF_MODEL, PORT, HOST, QF_THREADS, QF_ALIGN and
 * QF_THRESHOLD give the same settings. Without a model, the mobileface
 * teacher of ../shared/models is served (float). Stops cleanly on SIGINT /
 * SIGTERM (finishes the requests in flight).
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadModel } from '../../lib/runtime/index.js';
import { packageRoot } from '../../lib/binding.js';
import { buildServer } from './server.js';

function args(argv: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) m.set(a.slice(2, eq), a.slice(eq + 1));
    else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) m.set(a.slice(2), argv[++i]!);
    else m.set(a.slice(2), 'true');
  }
  return m;
}

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number (got ${v})`);
  return n;
}

async function main(): Promise<void> {
  const a = args(process.argv.slice(2));
  const fallback = resolve(packageRoot, '../shared/models/mobileface/mobileface.json');
  const modelPath = a.get('model') ?? process.env.QF_MODEL ?? (existsSync(fallback) ? fallback : undefined);
  if (!modelPath) throw new Error('pass --model <file.qfm | model.json | model.onnx> (or set QF_MODEL)');
  const threads = num(a.get('threads') ?? process.env.QF_THREADS, 'threads');
  const threshold = num(a.get('threshold') ?? process.env.QF_THRESHOLD, 'threshold');
  const maxBatch = num(a.get('max-batch'), 'max-batch');
  const maxPixels = num(a.get('max-pixels'), 'max-pixels');
  const model = await loadModel(modelPath, {
    ...(threads ? { threads } : {}),
    ...(threshold !== undefined ? { threshold } : {}),
    ...(maxBatch ? { maxBatch } : {}),
    align: a.get('align') ?? process.env.QF_ALIGN ?? 'none',
    ...(maxPixels ? { limits: { maxPixels } } : {}),
  });
  const app = buildServer({ model, bodyLimit: num(a.get('body-limit'), 'body-limit') ?? 8 << 20, logger: a.has('log'), name: modelPath });
  const port = num(a.get('port') ?? process.env.PORT, 'port') ?? 3000;
  const host = a.get('host') ?? process.env.HOST ?? '127.0.0.1';
  const url = await app.listen({ port, host });
  const r = model.report;
  console.log(`quantface server on ${url}: ${modelPath} (${r.precision}: ${r.int8Convs} int8 / ${r.fp32Convs} fp32 convolutions, ${model.dim}-d embeddings)`);
  let stopping = false;
  const stop = async (sig: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.log(`${sig}: closing`);
    await app.close();
    await model.dispose();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
