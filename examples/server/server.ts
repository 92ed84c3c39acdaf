/**
 * Example face-embedding HTTP server (fastify) on the quantface runtime.
 *
 *   GET  /health   -> { status, model: { name, dim, inputSize, precision, threshold }, stats }
 *   POST /embed    body: the image bytes (Content-Type image/* or
 *                  application/octet-stream), or JSON { image: base64 } /
 *                  { images: [base64, ...] }
 *                  -> { dim, embedding: number[] } or { dim, embeddings: number[][] }
 *   POST /verify   JSON { a: base64, b: base64, threshold? }
 *                  -> { similarity, threshold, match } (threshold and match
 *                  are null when neither the request nor the model has one);
 *                  with a face pipeline (ServerOptions.pipeline) a and b are
 *                  photos: each one's largest face is compared (422
 *                  E_NO_FACE when a photo has none) -> also { faces: [a, b] }
 *   POST /faces    (with a face pipeline) body: photo bytes or JSON { image: base64 }
 *                  -> { faces: [{ box, score, landmarks5, landmarks68?, embedding }] }
 *                  (?landmarks68=1 adds the 68 points, ?embedding=0 leaves out embeddings)
 *
 * Errors are JSON { error, code, message } with 400 (malformed body, not an
 * image, bad field, JSON nested too deep), 408 (request not received in
 * time: node closes slow bodies and headers), 413 (body, image or request
 * pixels over the limits, or an image that needs more than the whole
 * in-flight budget), 415 (unsupported Content-Type), 422 (an image the
 * model cannot use, e.g. not square with alignment 'none'), 503 with
 * Retry-After (E_BUSY: the bodies in flight or the model's in-flight
 * budget are full; E_TIMEOUT: a decode or the answer took too long;
 * E_CLOSED: shutting down), 500 (a bug).
 * Images are decoded off the event loop (sharp, only the region the
 * alignment reads) and inference runs on a native worker thread; concurrent
 * requests are batched by the model. Memory and CPU are bounded by the
 * limits in ServerOptions and by the model's limits and budget.
 */
import Fastify, { type FastifyInstance, type FastifyError } from 'fastify';
import { QuantFaceError } from '../../lib/errors.js';
import type { FaceModel, FacePipeline, Face } from '../../lib/runtime/index.js';

export interface ServerOptions {
  model: FaceModel;
  /** A face pipeline (loadPipeline with recognizer: model): enables POST /faces and photo verification in /verify. */
  pipeline?: FacePipeline;
  /** Largest request body, bytes (default 8 MiB). */
  bodyLimit?: number;
  /** Largest number of images in one /embed request (default 32). */
  maxImages?: number;
  /**
   * Request bodies being received or processed at once, bytes (by
   * Content-Length; a chunked body counts as bodyLimit). A request that
   * does not fit is answered 503 E_BUSY with Retry-After before its body is
   * read (default 64 MiB).
   */
  maxInflightBodyBytes?: number;
  /** Bodies up to this size are not counted against maxInflightBodyBytes, so that small requests pass a burst of large ones (default 256 KiB; at most maxConnections of them). */
  smallBodyBytes?: number;
  /** Time to receive a whole request, headers and body, ms: slow bodies are cut (default 20,000). */
  requestTimeoutMs?: number;
  /** Time to receive the headers, ms (default 10,000). */
  headersTimeoutMs?: number;
  /** A socket idle this long is closed, ms (default 60,000). */
  connectionTimeoutMs?: number;
  /** Keep-alive sockets idle this long are closed, ms (default 5,000). */
  keepAliveTimeoutMs?: number;
  /** Longest time from a received body to the answer, ms: then 503 E_TIMEOUT (default 30,000). */
  handlerTimeoutMs?: number;
  /** Open connections at most; more are closed at once (default 256). */
  maxConnections?: number;
  /** Retry-After of 503 answers, seconds (default 1). */
  retryAfterSeconds?: number;
  /** Largest JSON nesting depth (default 8) and number of values (default 4096) in a JSON body. */
  maxJsonDepth?: number;
  maxJsonValues?: number;
  /** fastify logger (default false). */
  logger?: boolean;
  /** Name reported by /health. */
  name?: string;
}

interface HttpError {
  status: number;
  code: string;
  message: string;
}

function httpError(status: number, code: string, message: string): HttpError {
  return { status, code, message };
}

function fromError(e: unknown): HttpError {
  if (e instanceof QuantFaceError) {
    switch (e.code) {
      case 'E_FORMAT':
        return httpError(400, e.code, e.message);
      case 'E_ARG':
        return httpError(400, e.code, e.message);
      case 'E_SHAPE':
        return /the limit is|over the limits/.test(e.message) ? httpError(413, e.code, e.message) : httpError(422, e.code, e.message);
      case 'E_NO_FACE':
        return httpError(422, e.code, e.message);
      case 'E_CLOSED':
        return httpError(503, e.code, 'the server is shutting down');
      case 'E_BUSY':
        return httpError(503, e.code, e.message);
      case 'E_TIMEOUT':
        return httpError(503, e.code, e.message);
      default:
        return httpError(500, e.code, e.message);
    }
  }
  const fe = e as FastifyError;
  if (fe && typeof fe.code === 'string' && fe.code.startsWith('FST_')) {
    if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return httpError(413, fe.code, fe.message);
    if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return httpError(415, fe.code, `${fe.message}; send image bytes (image/jpeg, image/png, image/webp, application/octet-stream) or JSON`);
    return httpError(fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500 ? fe.statusCode : 400, fe.code, fe.message);
  }
  if (fe && typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) return httpError(fe.statusCode, 'E_REQUEST', fe.message);
  return httpError(500, 'E_INTERNAL', e instanceof Error ? e.message : String(e));
}

/**
 * One pass over a JSON text before JSON.parse: refuses nesting deeper than
 * maxDepth and more than maxValues values (commas), so that a small body
 * cannot expand into a huge object tree on the heap.
 */
export function checkJsonShape(text: string, maxDepth: number, maxValues: number): void {
  let depth = 0;
  let values = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
      continue;
    }
    if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > maxDepth) throw new QuantFaceError('E_ARG', `the JSON body is nested deeper than ${maxDepth} levels`);
    } else if (c === 125 || c === 93) depth--;
    else if (c === 44 && ++values >= maxValues) throw new QuantFaceError('E_ARG', `the JSON body holds more than ${maxValues} values`);
  }
}

function decodeBase64(v: unknown, field: string): Buffer {
  if (typeof v !== 'string' || v.length === 0) throw new QuantFaceError('E_ARG', `'${field}' must be a non-empty base64 string`);
  const s = v.replace(/^data:[^;,]*;base64,/, '');
  if (!/^[A-Za-z0-9+/=\s_-]*$/.test(s)) throw new QuantFaceError('E_ARG', `'${field}' is not valid base64`);
  return Buffer.from(s, 'base64');
}

/** Builds the fastify app (not listening: call app.listen, or app.inject in tests). */
export function buildServer(o: ServerOptions): FastifyInstance {
  const model = o.model;
  const maxImages = o.maxImages ?? 32;
  const bodyLimit = o.bodyLimit ?? 8 << 20;
  const maxBodies = o.maxInflightBodyBytes ?? 64 << 20;
  const smallBody = o.smallBodyBytes ?? 256 << 10;
  const retryAfter = String(o.retryAfterSeconds ?? 1);
  const handlerTimeoutMs = o.handlerTimeoutMs ?? 30_000;
  const maxJsonDepth = o.maxJsonDepth ?? 8;
  const maxJsonValues = o.maxJsonValues ?? 4096;
  const app = Fastify({
    bodyLimit,
    logger: o.logger ?? false,
    requestTimeout: o.requestTimeoutMs ?? 20_000,
    connectionTimeout: o.connectionTimeoutMs ?? 60_000,
    keepAliveTimeout: o.keepAliveTimeoutMs ?? 5_000,
    // node checks requestTimeout / headersTimeout every connectionsCheckingInterval (default 30 s)
    http: { headersTimeout: o.headersTimeoutMs ?? 10_000, connectionsCheckingInterval: 1_000 },
  });
  app.server.maxConnections = o.maxConnections ?? 256;
  const raw = (_req: unknown, body: Buffer | string, done: (err: Error | null, body?: unknown) => void): void => done(null, body);
  app.removeContentTypeParser('text/plain'); // only images and JSON: anything else is a 415
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      const text = body as string;
      checkJsonShape(text, maxJsonDepth, maxJsonValues);
      done(null, text.length === 0 ? undefined : JSON.parse(text));
    } catch (e) {
      if (e instanceof QuantFaceError) done(e);
      else done(Object.assign(new Error(`the body is not valid JSON (${(e as Error).message})`), { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY' }));
    }
  });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, raw);
  app.addContentTypeParser(/^image\/[\w.+-]+$/, { parseAs: 'buffer' }, raw);
  let closing = false;
  app.addHook('onClose', async () => {
    closing = true;
  });

  // bodies in flight: a request that does not fit is refused before its body is read
  let bodies = 0;
  const counters = { busy: 0, bodiesRefused: 0 };
  app.addHook('onRequest', (req, reply, done) => {
    if (req.method !== 'POST') return done();
    const len = Number(req.headers['content-length']);
    const size = Number.isFinite(len) && len >= 0 ? Math.min(len, bodyLimit + 1) : bodyLimit;
    if (size > bodyLimit || size <= smallBody) return done(); // over the limit: fastify answers 413 without reading it
    if (bodies > 0 && bodies + size > maxBodies) {
      counters.bodiesRefused++;
      void reply
        .status(503)
        .header('retry-after', retryAfter)
        .header('connection', 'close')
        .send({ error: 'server error', code: 'E_BUSY', message: `busy: ${bodies} bytes of request bodies are in flight (the limit is ${maxBodies}); retry later` });
      return;
    }
    bodies += size;
    let held = true;
    reply.raw.once('close', () => {
      if (held) bodies -= size;
      held = false;
    });
    done();
  });

  app.setErrorHandler((err, _req, reply) => {
    const h = fromError(err);
    if (h.status >= 500 && h.status !== 503) app.log.error(err);
    if (h.status === 503) {
      if (h.code === 'E_BUSY') counters.busy++;
      void reply.header('retry-after', retryAfter);
    }
    void reply.status(h.status).send({ error: h.status >= 500 ? 'server error' : 'bad request', code: h.code, message: h.message });
  });
  // every route answers within handlerTimeoutMs (the work itself is bounded by the model's budget and decode timeouts)
  const timed = <T>(p: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new QuantFaceError('E_TIMEOUT', `no answer within ${handlerTimeoutMs} ms; retry later`)), handlerTimeoutMs);
      p.then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: 'not found', code: 'E_NOT_FOUND', message: `no route ${req.method} ${req.url}` });
  });

  app.get('/health', async () => {
    const r = model.report;
    return {
      status: closing ? 'closing' : 'ok',
      model: { name: o.name ?? model.info?.name ?? 'model', dim: model.dim, inputSize: model.inputSize, precision: r.precision, threshold: model.threshold ?? null },
      stats: { ...model.stats(), server: { bodyBytesInFlight: bodies, busyAnswers: counters.busy + counters.bodiesRefused } },
    };
  });

  app.post('/embed', async (req) => timed(embedRoute(req.body)));
  const embedRoute = async (body: unknown): Promise<unknown> => {
    if (Buffer.isBuffer(body)) {
      const e = await model.embed(body);
      return { dim: model.dim, embedding: Array.from(e) };
    }
    if (body && typeof body === 'object' && !Array.isArray(body)) {
      const b = body as Record<string, unknown>;
      if ('image' in b) {
        const e = await model.embed(decodeBase64(b.image, 'image'));
        return { dim: model.dim, embedding: Array.from(e) };
      }
      if (Array.isArray(b.images)) {
        if (b.images.length === 0 || b.images.length > maxImages) throw new QuantFaceError('E_ARG', `'images' must hold 1 to ${maxImages} images`);
        const es = await model.embed(b.images.map((x, i) => decodeBase64(x, `images[${i}]`)));
        return { dim: model.dim, embeddings: es.map((e) => Array.from(e)) };
      }
    }
    throw new QuantFaceError('E_ARG', "send the image bytes as the body (Content-Type image/jpeg, image/png, image/webp or application/octet-stream), or JSON { image: base64 } / { images: [base64, ...] }");
  };

  app.post('/verify', async (req) => timed(verifyRoute(req.body)));
  const verifyRoute = async (body: unknown): Promise<unknown> => {
    const b = body as Record<string, unknown> | undefined;
    if (!b || typeof b !== 'object' || Buffer.isBuffer(b) || Array.isArray(b)) throw new QuantFaceError('E_ARG', 'send JSON { a: base64 image, b: base64 image, threshold?: number }');
    const t = b.threshold;
    if (t !== undefined && (typeof t !== 'number' || !Number.isFinite(t))) throw new QuantFaceError('E_ARG', "'threshold' must be a number");
    const threshold = (t as number | undefined) ?? model.threshold;
    if (o.pipeline) {
      const a = decodeBase64(b.a, 'a');
      const bb = decodeBase64(b.b, 'b');
      const [fa, fb] = await Promise.all([o.pipeline.faces(a), o.pipeline.faces(bb)]);
      const pick = (fs: Face[], which: string): Face => {
        const f = fs.reduce<Face | undefined>((x, y) => (!x || y.box.width * y.box.height > x.box.width * x.box.height ? y : x), undefined);
        if (!f) throw new QuantFaceError('E_NO_FACE', `no face found in photo ${which}`);
        return f;
      };
      const pa = pick(fa, 'a');
      const pb = pick(fb, 'b');
      const similarity = model.similarity(pa.embedding, pb.embedding);
      return { similarity, threshold: threshold ?? null, match: threshold === undefined ? null : similarity >= threshold, faces: [faceJson(pa, false, false), faceJson(pb, false, false)] };
    }
    const [ea, eb] = await model.embed([decodeBase64(b.a, 'a'), decodeBase64(b.b, 'b')]);
    const similarity = model.similarity(ea!, eb!);
    return { similarity, threshold: threshold ?? null, match: threshold === undefined ? null : similarity >= threshold };
  };

  app.post('/faces', async (req) => timed(facesRoute(req.body, req.query as Record<string, string | undefined>)));
  const facesRoute = async (body: unknown, q: Record<string, string | undefined>): Promise<unknown> => {
    if (!o.pipeline) throw new QuantFaceError('E_ARG', 'this server has no face pipeline (start it with --faces)');
    let photo: Buffer;
    if (Buffer.isBuffer(body)) photo = body;
    else if (body && typeof body === 'object' && !Array.isArray(body) && 'image' in (body as object)) photo = decodeBase64((body as Record<string, unknown>).image, 'image');
    else throw new QuantFaceError('E_ARG', 'send the photo bytes as the body (Content-Type image/jpeg, image/png, image/webp or application/octet-stream), or JSON { image: base64 }');
    const withEmb = q.embedding !== '0';
    const faces = await o.pipeline.faces(photo, { embed: withEmb });
    return { faces: faces.map((f) => faceJson(f, q.landmarks68 === '1', withEmb)) };
  };
  return app;
}

const r2 = (x: number): number => Math.round(x * 100) / 100;

function faceJson(f: Face, with68: boolean, withEmbedding: boolean): Record<string, unknown> {
  return {
    box: { x: r2(f.box.x), y: r2(f.box.y), width: r2(f.box.width), height: r2(f.box.height) },
    score: f.score,
    landmarks5: f.landmarks5.map(([x, y]) => [r2(x), r2(y)]),
    ...(with68 ? { landmarks68: f.landmarks68.map(([x, y]) => [r2(x), r2(y)]) } : {}),
    ...(withEmbedding ? { embedding: Array.from(f.embedding) } : {}),
  };
}
