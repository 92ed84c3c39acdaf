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
 *                  are null when neither the request nor the model has one)
 *
 * Errors are JSON { error, code, message } with 400 (malformed body, not an
 * image, bad field), 413 (body or image dimensions over the limits), 415
 * (unsupported Content-Type), 422 (an image the model cannot use, e.g. not
 * square with alignment 'none'), 503 (shutting down), 500 (a bug).
 * Images are decoded off the event loop (sharp) and inference runs on a
 * native worker thread; concurrent requests are batched by the model.
 */
import Fastify, { type FastifyInstance, type FastifyError } from 'fastify';
import { QuantFaceError } from '../../lib/errors.js';
import type { FaceModel } from '../../lib/runtime/index.js';

export interface ServerOptions {
  model: FaceModel;
  /** Largest request body, bytes (default 8 MiB). */
  bodyLimit?: number;
  /** Largest number of images in one /embed request (default 32). */
  maxImages?: number;
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
      case 'E_CLOSED':
        return httpError(503, e.code, 'the server is shutting down');
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
  const app = Fastify({ bodyLimit: o.bodyLimit ?? 8 << 20, logger: o.logger ?? false });
  const raw = (_req: unknown, body: Buffer | string, done: (err: Error | null, body?: unknown) => void): void => done(null, body);
  app.removeContentTypeParser('text/plain'); // only images and JSON: anything else is a 415
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, raw);
  app.addContentTypeParser(/^image\/[\w.+-]+$/, { parseAs: 'buffer' }, raw);
  let closing = false;
  app.addHook('onClose', async () => {
    closing = true;
  });

  app.setErrorHandler((err, _req, reply) => {
    const h = fromError(err);
    if (h.status >= 500) app.log.error(err);
    void reply.status(h.status).send({ error: h.status >= 500 ? 'server error' : 'bad request', code: h.code, message: h.message });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: 'not found', code: 'E_NOT_FOUND', message: `no route ${req.method} ${req.url}` });
  });

  app.get('/health', async () => {
    const r = model.report;
    return {
      status: closing ? 'closing' : 'ok',
      model: { name: o.name ?? model.info?.name ?? 'model', dim: model.dim, inputSize: model.inputSize, precision: r.precision, threshold: model.threshold ?? null },
      stats: model.stats(),
    };
  });

  app.post('/embed', async (req) => {
    const body = req.body;
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
  });

  app.post('/verify', async (req) => {
    const b = req.body as Record<string, unknown> | undefined;
    if (!b || typeof b !== 'object' || Buffer.isBuffer(b) || Array.isArray(b)) throw new QuantFaceError('E_ARG', 'send JSON { a: base64 image, b: base64 image, threshold?: number }');
    const t = b.threshold;
    if (t !== undefined && (typeof t !== 'number' || !Number.isFinite(t))) throw new QuantFaceError('E_ARG', "'threshold' must be a number");
    const [ea, eb] = await model.embed([decodeBase64(b.a, 'a'), decodeBase64(b.b, 'b')]);
    const threshold = (t as number | undefined) ?? model.threshold;
    const similarity = model.similarity(ea!, eb!);
    return { similarity, threshold: threshold ?? null, match: threshold === undefined ? null : similarity >= threshold };
  });
  return app;
}
