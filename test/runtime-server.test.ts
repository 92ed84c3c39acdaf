// The example server (examples/server) through fastify.inject (no network):
// routes, body kinds, limits and error statuses, concurrency, shutdown.
import t from 'tap';
import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { loadModel } from '../lib/runtime/index.js';
import { buildServer } from '../examples/server/server.js';
import { TEACHER, faceFiles, missingData } from './fixtures/runtime-faces.js';

const skip = missingData();
if (skip) t.comment(`skipping server tests: ${skip}`);

t.test('routes', { skip }, async (t) => {
  const model = await loadModel(TEACHER, { threshold: 0.25, limits: { maxPixels: 1000 * 1000 } });
  const app = buildServer({ model, bodyLimit: 1 << 20, name: 'mobileface' });
  t.teardown(async () => {
    await app.close();
    await model.dispose();
  });
  const files = faceFiles(2);
  const a = readFileSync(files[0]!);
  const b = readFileSync(files[1]!);
  const expectA = await model.embed(a);

  const health = await app.inject({ method: 'GET', url: '/health' });
  t.equal(health.statusCode, 200);
  const h = health.json();
  t.equal(h.status, 'ok');
  t.same(h.model, { name: 'mobileface', dim: 256, inputSize: 112, precision: 'float', threshold: 0.25 });
  t.type(h.stats.images, 'number');

  const raw = await app.inject({ method: 'POST', url: '/embed', payload: a, headers: { 'content-type': 'image/jpeg' } });
  t.equal(raw.statusCode, 200, 'raw JPEG body');
  const e = raw.json() as { dim: number; embedding: number[] };
  t.equal(e.dim, 256);
  t.same(e.embedding, Array.from(expectA), 'the embedding of the model');
  const oct = await app.inject({ method: 'POST', url: '/embed', payload: a, headers: { 'content-type': 'application/octet-stream' } });
  t.equal(oct.statusCode, 200, 'application/octet-stream body');
  const js = await app.inject({ method: 'POST', url: '/embed', payload: { image: a.toString('base64') } });
  t.same(js.json().embedding, e.embedding, 'JSON { image: base64 }');
  const many = await app.inject({ method: 'POST', url: '/embed', payload: { images: [a.toString('base64'), `data:image/jpeg;base64,${b.toString('base64')}`] } });
  t.equal(many.statusCode, 200);
  t.equal(many.json().embeddings.length, 2, 'JSON { images: [...] } (data URLs accepted)');

  const ver = await app.inject({ method: 'POST', url: '/verify', payload: { a: a.toString('base64'), b: a.toString('base64') } });
  t.equal(ver.statusCode, 200);
  t.same(ver.json(), { similarity: 1, threshold: 0.25, match: true }, 'same image matches');
  const ver2 = await app.inject({ method: 'POST', url: '/verify', payload: { a: a.toString('base64'), b: b.toString('base64'), threshold: 0.999 } });
  t.equal(ver2.json().match, false, 'different faces with a strict threshold');
  t.ok(ver2.json().similarity < 0.999);
});

t.test('bad requests get clear 4xx answers and the server keeps serving', { skip }, async (t) => {
  const model = await loadModel(TEACHER, { limits: { maxPixels: 300 * 300 } });
  const app = buildServer({ model, bodyLimit: 200_000, maxImages: 4 });
  t.teardown(async () => {
    await app.close();
    await model.dispose();
  });
  const good = readFileSync(faceFiles(1)[0]!);
  const post = (url: string, payload: unknown, type?: string) =>
    app.inject({ method: 'POST', url, payload: payload as never, ...(type ? { headers: { 'content-type': type } } : {}) });
  const cases: [string, Awaited<ReturnType<typeof post>>, number, string?][] = [
    ['garbage bytes', await post('/embed', Buffer.from('definitely not an image'), 'image/jpeg'), 400, 'E_FORMAT'],
    ['truncated JPEG', await post('/embed', good.subarray(0, 500), 'image/jpeg'), 400, 'E_FORMAT'],
    ['empty body', await post('/embed', Buffer.alloc(0), 'application/octet-stream'), 400],
    ['body over the limit', await post('/embed', Buffer.alloc(300_000, 1), 'image/jpeg'), 413, 'FST_ERR_CTP_BODY_TOO_LARGE'],
    ['image over the pixel limit', await post('/embed', await sharp({ create: { width: 500, height: 500, channels: 3, background: '#808080' } }).png().toBuffer(), 'image/png'), 413, 'E_SHAPE'],
    ['non-square image', await post('/embed', await sharp({ create: { width: 120, height: 80, channels: 3, background: '#808080' } }).jpeg().toBuffer(), 'image/jpeg'), 422, 'E_SHAPE'],
    ['unsupported media type', await post('/embed', 'hello', 'text/plain'), 415, 'FST_ERR_CTP_INVALID_MEDIA_TYPE'],
    ['malformed JSON', await post('/embed', '{"image": ', 'application/json'), 400],
    ['JSON without an image', await post('/embed', { picture: 'x' }), 400, 'E_ARG'],
    ['not base64', await post('/embed', { image: '***' }), 400, 'E_ARG'],
    ['too many images', await post('/embed', { images: Array(5).fill(good.toString('base64')) }), 400, 'E_ARG'],
    ['verify without b', await post('/verify', { a: good.toString('base64') }), 400, 'E_ARG'],
    ['verify with a bad threshold', await post('/verify', { a: good.toString('base64'), b: good.toString('base64'), threshold: 'high' }), 400, 'E_ARG'],
    ['verify with a bad image', await post('/verify', { a: good.toString('base64'), b: Buffer.from('nope').toString('base64') }), 400, 'E_FORMAT'],
  ];
  for (const [what, r, status, c] of cases) {
    t.equal(r.statusCode, status, `${what}: ${status}`);
    const body = r.json() as { code: string; message: string };
    t.ok(typeof body.message === 'string' && body.message.length > 0, `${what}: has a message`);
    if (c) t.equal(body.code, c, `${what}: code ${c}`);
  }
  const nf = await app.inject({ method: 'GET', url: '/nope' });
  t.equal(nf.statusCode, 404);
  const ver = await post('/verify', { a: good.toString('base64'), b: good.toString('base64') });
  t.same(ver.json(), { similarity: 1, threshold: null, match: null }, 'no threshold: similarity only');
  const ok = await post('/embed', good, 'image/jpeg');
  t.equal(ok.statusCode, 200, 'still serving after the bad requests');
});

t.test('concurrent requests are batched; health during load', { skip }, async (t) => {
  const model = await loadModel(TEACHER);
  const app = buildServer({ model });
  t.teardown(async () => {
    await app.close();
    await model.dispose();
  });
  const imgs = faceFiles(8).map((f) => readFileSync(f));
  const res = await Promise.all(Array.from({ length: 48 }, (_, i) => app.inject({ method: 'POST', url: '/embed', payload: imgs[i % 8], headers: { 'content-type': 'image/jpeg' } })));
  t.ok(res.every((r) => r.statusCode === 200), '48 concurrent requests answered');
  const first = res[0]!.json().embedding as number[];
  t.same(res[8]!.json().embedding, first, 'same image, same embedding under load');
  const st = model.stats();
  t.ok(st.batches < 48, `48 requests in ${st.batches} batches`);
  const h = await app.inject({ method: 'GET', url: '/health' });
  t.equal(h.json().stats.images, 48);
});

t.test('503 with Retry-After: bodies in flight over the budget, answers over the handler timeout', { skip }, async (t) => {
  const model = await loadModel(TEACHER);
  const app = buildServer({ model, maxInflightBodyBytes: 100_000, smallBodyBytes: 1000, handlerTimeoutMs: 60_000, retryAfterSeconds: 3 });
  const slow = buildServer({ model, handlerTimeoutMs: 1 });
  t.teardown(async () => {
    await app.close();
    await slow.close();
    await model.dispose();
  });
  const img = await sharp({ create: { width: 112, height: 112, channels: 3, background: '#808080' } }).png({ compressionLevel: 0 }).toBuffer();
  t.ok(img.length > 30_000 && img.length < 100_000, `a ${img.length}-byte body`);
  const post = (a: typeof app) => a.inject({ method: 'POST', url: '/embed', payload: img, headers: { 'content-type': 'image/png' } });
  const res = await Promise.all([post(app), post(app), post(app), post(app)]);
  const codes = res.map((r) => r.statusCode);
  t.ok(codes.includes(200), `some bodies fit (${codes.join(', ')})`);
  const busy = res.filter((r) => r.statusCode === 503);
  t.ok(busy.length >= 1, 'the rest were refused before their bodies were read');
  for (const r of busy) {
    t.equal(r.json().code, 'E_BUSY');
    t.equal(r.headers['retry-after'], '3', 'with Retry-After');
  }
  // the budget was given back: requests one at a time all fit
  for (let i = 0; i < 3; i++) t.equal((await post(app)).statusCode, 200, `sequential request ${i} after the burst`);
  const tiny = { width: 112, height: 112 };
  const to = await slow.inject({ method: 'POST', url: '/embed', payload: await sharp({ create: { ...tiny, channels: 3, background: '#777' } }).jpeg().toBuffer(), headers: { 'content-type': 'image/jpeg' } });
  t.equal(to.statusCode, 503, 'an answer over handlerTimeoutMs (1 ms) is a 503');
  t.equal(to.json().code, 'E_TIMEOUT');
  t.ok(to.headers['retry-after'], 'with Retry-After');
  const h = await app.inject({ method: 'GET', url: '/health' });
  t.equal(h.json().stats.server.bodyBytesInFlight, 0, '/health shows no bodies in flight');
  t.type(h.json().stats.inflight.limits.maxInflightBytes, 'number', '/health shows the in-flight budget');
});
