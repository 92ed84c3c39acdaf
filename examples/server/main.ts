/**
 * Starts the example server:
 *
 *   npm run serve:example -- --model student.qfm [--port 3000] [--host 127.0.0.1] [--faces [--detector F] [--landmark-model F]]
 *       [--threads 2] [--align none|ffhq|lfw-funneled|box:x,y,side] [--threshold 0.3]
 *       [--max-batch 32] [--log] [limits: see LIMITS below and the README]
 *
 * Environment variables QF_MODEL, PORT, HOST, QF_THREADS, QF_ALIGN,
 * QF_THRESHOLD and those of LIMITS give the same settings. Without a model, the mobileface
 * teacher of ../shared/models is served (float). Stops cleanly on SIGINT /
 * SIGTERM (finishes the requests in flight).
 */
import { existsSync } from 'node:fs';
import sharp from 'sharp';
import { resolve } from 'node:path';
import { loadModel, loadPipeline } from '../../lib/runtime/index.js';
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

/**
 * Limits: CLI flag, environment variable, where it goes. Every one is
 * optional; the defaults (in the library and in server.ts) keep the server
 * under about 1 GB RSS whatever clients send.
 */
const LIMITS = {
  // per image and per call (loadModel limits)
  'max-pixels': { env: 'QF_MAX_PIXELS', to: 'limits', key: 'maxPixels' },
  'max-side': { env: 'QF_MAX_SIDE', to: 'limits', key: 'maxSide' },
  'max-image-bytes': { env: 'QF_MAX_IMAGE_BYTES', to: 'limits', key: 'maxBytes' },
  'max-request-pixels': { env: 'QF_MAX_REQUEST_PIXELS', to: 'limits', key: 'maxRequestPixels' },
  'decode-timeout-ms': { env: 'QF_DECODE_TIMEOUT_MS', to: 'limits', key: 'decodeTimeoutMs' },
  // process-wide in-flight budget (loadModel budget)
  'max-inflight-bytes': { env: 'QF_MAX_INFLIGHT_BYTES', to: 'budget', key: 'maxInflightBytes' },
  'max-inflight-pixels': { env: 'QF_MAX_INFLIGHT_PIXELS', to: 'budget', key: 'maxInflightPixels' },
  'max-waiting': { env: 'QF_MAX_WAITING', to: 'budget', key: 'maxWaiting' },
  'queue-timeout-ms': { env: 'QF_QUEUE_TIMEOUT_MS', to: 'budget', key: 'queueTimeoutMs' },
  // HTTP (buildServer)
  'body-limit': { env: 'QF_BODY_LIMIT', to: 'server', key: 'bodyLimit' },
  'max-images': { env: 'QF_MAX_IMAGES', to: 'server', key: 'maxImages' },
  'max-inflight-body-bytes': { env: 'QF_MAX_INFLIGHT_BODY_BYTES', to: 'server', key: 'maxInflightBodyBytes' },
  'small-body-bytes': { env: 'QF_SMALL_BODY_BYTES', to: 'server', key: 'smallBodyBytes' },
  'small-pixels': { env: 'QF_SMALL_PIXELS', to: 'budget', key: 'smallPixels' },
  'request-timeout-ms': { env: 'QF_REQUEST_TIMEOUT_MS', to: 'server', key: 'requestTimeoutMs' },
  'headers-timeout-ms': { env: 'QF_HEADERS_TIMEOUT_MS', to: 'server', key: 'headersTimeoutMs' },
  'connection-timeout-ms': { env: 'QF_CONNECTION_TIMEOUT_MS', to: 'server', key: 'connectionTimeoutMs' },
  'keep-alive-timeout-ms': { env: 'QF_KEEP_ALIVE_TIMEOUT_MS', to: 'server', key: 'keepAliveTimeoutMs' },
  'handler-timeout-ms': { env: 'QF_HANDLER_TIMEOUT_MS', to: 'server', key: 'handlerTimeoutMs' },
  'max-connections': { env: 'QF_MAX_CONNECTIONS', to: 'server', key: 'maxConnections' },
  'retry-after': { env: 'QF_RETRY_AFTER', to: 'server', key: 'retryAfterSeconds' },
  'max-json-depth': { env: 'QF_MAX_JSON_DEPTH', to: 'server', key: 'maxJsonDepth' },
  'max-json-values': { env: 'QF_MAX_JSON_VALUES', to: 'server', key: 'maxJsonValues' },
} as const;

async function main(): Promise<void> {
  const a = args(process.argv.slice(2));
  const fallback = resolve(packageRoot, '../shared/models/mobileface/mobileface.json');
  const modelPath = a.get('model') ?? process.env.QF_MODEL ?? (existsSync(fallback) ? fallback : undefined);
  if (!modelPath) throw new Error('pass --model <file.qfm | model.json | model.onnx> (or set QF_MODEL)');
  const threads = num(a.get('threads') ?? process.env.QF_THREADS, 'threads');
  const threshold = num(a.get('threshold') ?? process.env.QF_THRESHOLD, 'threshold');
  const maxBatch = num(a.get('max-batch') ?? process.env.QF_MAX_BATCH, 'max-batch');
  const known = new Set(['model', 'port', 'host', 'threads', 'threshold', 'max-batch', 'align', 'log', 'sharp-concurrency', 'sharp-cache', 'faces', 'detector', 'landmark-model', ...Object.keys(LIMITS)]);
  for (const k of a.keys()) if (!known.has(k)) throw new Error(`unknown option --${k}`);
  const groups: Record<'limits' | 'budget' | 'server', Record<string, number>> = { limits: {}, budget: {}, server: {} };
  for (const [flag, l] of Object.entries(LIMITS)) {
    const v = num(a.get(flag) ?? process.env[l.env], flag);
    if (v !== undefined) {
      if (!(Number.isInteger(v) && v > 0)) throw new Error(`--${flag} must be a positive integer (got ${v})`);
      groups[l.to][l.key] = v;
    }
  }
  if (process.platform === 'linux' && process.env.MALLOC_ARENA_MAX === undefined)
    console.error('note: MALLOC_ARENA_MAX is not set: glibc keeps freed image buffers in per-thread arenas and RSS stays high after bursts; start with MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576 (npm run serve:example does)');
  // libvips: one thread per image (4 images decode at once on libuv's pool) and no operation cache, so
  // that decoded pixels are not kept after a request (--sharp-concurrency N, --sharp-cache to change)
  sharp.concurrency(num(a.get('sharp-concurrency') ?? process.env.QF_SHARP_CONCURRENCY, 'sharp-concurrency') ?? 1);
  if (!(a.has('sharp-cache') || process.env.QF_SHARP_CACHE === '1')) sharp.cache(false);
  const model = await loadModel(modelPath, {
    ...(threads ? { threads } : {}),
    ...(threshold !== undefined ? { threshold } : {}),
    ...(maxBatch ? { maxBatch } : {}),
    align: a.get('align') ?? process.env.QF_ALIGN ?? 'none',
    limits: groups.limits,
    budget: groups.budget,
  });
  // --faces: POST /faces and photo /verify through the face pipeline (faceplugin's detector and landmark net, fetched into the cache)
  // (--detector / --landmark-model: other networks, e.g. the int8 .qfm files of `quantface quantize-pipeline`)
  const detector = a.get('detector') ?? process.env.QF_DETECTOR;
  const landmarks = a.get('landmark-model') ?? process.env.QF_LANDMARK_MODEL;
  const pipeline =
    a.has('faces') || process.env.QF_FACES === '1'
      ? await loadPipeline({ recognizer: model, limits: groups.limits, ...(detector ? { detector: resolve(detector) } : {}), ...(landmarks ? { landmarks: resolve(landmarks) } : {}), onMessage: (m) => console.error(m) })
      : undefined;
  const app = buildServer({ model, ...(pipeline ? { pipeline } : {}), ...groups.server, logger: a.has('log'), name: modelPath });
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
    await pipeline?.dispose();
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
