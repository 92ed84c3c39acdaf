// Example server with a face pipeline (examples/server): POST /faces and
// photo verification in POST /verify on LFW photos (../shared), through
// app.inject: the same faces as the library; bad photos 4xx, no face 422
// E_NO_FACE; a server without a pipeline refuses /faces. Skips without ../shared.
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { buildServer } from '../examples/server/server.js';
import { loadModel } from '../lib/runtime/index.js';
import { loadPipeline } from '../lib/runtime/pipeline.js';
import { shared } from './fixtures/io/helpers.js';

const M = shared('models/faceplugin');
const LFW = shared('data/lfw');
if (!M || !LFW) t.comment('../shared absent: skipped');
else
  t.test('POST /faces and photo /verify', async (t) => {
    const model = await loadModel(join(M, 'fr_feature.onnx'), { threads: 1 });
    const pipeline = await loadPipeline({ detector: join(M, 'fr_detect.onnx'), landmarks: join(M, 'fr_landmark.onnx'), recognizer: model });
    const app = buildServer({ model, pipeline });
    const bare = buildServer({ model });
    t.teardown(async () => {
      await app.close();
      await bare.close();
      await pipeline.dispose();
      await model.dispose();
    });
    const a = await readFile(join(LFW, 'Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg'));
    const b = await readFile(join(LFW, 'Abdoulaye_Wade/Abdoulaye_Wade_0002.jpg'));
    const c = await readFile(join(LFW, 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg'));
    const r = await app.inject({ method: 'POST', url: '/faces?landmarks68=1', headers: { 'content-type': 'image/jpeg' }, payload: a });
    t.equal(r.statusCode, 200, r.body.slice(0, 200));
    const js = r.json() as { faces: Array<{ box: { x: number }; landmarks5: number[][]; landmarks68: number[][]; embedding: number[] }> };
    const lib = await pipeline.faces(a);
    t.equal(js.faces.length, lib.length, `${lib.length} face(s)`);
    t.ok(Math.abs(js.faces[0]!.box.x - lib[0]!.box.x) < 0.01, 'the box the library gives');
    t.equal(js.faces[0]!.landmarks68.length, 68);
    t.same(js.faces[0]!.embedding, Array.from(lib[0]!.embedding), 'the embedding the library gives');
    const r2 = await app.inject({ method: 'POST', url: '/faces?embedding=0', payload: { image: c.toString('base64') } });
    t.equal(r2.statusCode, 200);
    t.notOk('embedding' in (r2.json() as { faces: object[] }).faces[0]!, 'JSON body, ?embedding=0');
    const v = await app.inject({ method: 'POST', url: '/verify', payload: { a: a.toString('base64'), b: b.toString('base64'), threshold: 0.3 } });
    t.equal(v.statusCode, 200);
    const vj = v.json() as { similarity: number; match: boolean; faces: unknown[] };
    t.ok(vj.match && vj.faces.length === 2, `same person: cosine ${vj.similarity.toFixed(3)}`);
    const v2 = await app.inject({ method: 'POST', url: '/verify', payload: { a: a.toString('base64'), b: c.toString('base64'), threshold: 0.3 } });
    t.notOk((v2.json() as { match: boolean }).match, 'two people');
    const grey = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#777' } }).png().toBuffer();
    const n = await app.inject({ method: 'POST', url: '/verify', payload: { a: grey.toString('base64'), b: a.toString('base64'), threshold: 0.3 } });
    t.equal(n.statusCode, 422);
    t.equal((n.json() as { code: string }).code, 'E_NO_FACE');
    const g = await app.inject({ method: 'POST', url: '/faces', headers: { 'content-type': 'image/png' }, payload: grey });
    t.same(g.json(), { faces: [] }, 'no face: 200 []');
    const bad = await app.inject({ method: 'POST', url: '/faces', headers: { 'content-type': 'image/jpeg' }, payload: a.subarray(0, 500) });
    t.equal(bad.statusCode, 400, 'a truncated JPEG: 400');
    const big = await sharp({ create: { width: 9000, height: 5000, channels: 3, background: '#000' } }).png({ compressionLevel: 9 }).toBuffer();
    const huge = await app.inject({ method: 'POST', url: '/faces', headers: { 'content-type': 'image/png' }, payload: big });
    t.equal(huge.statusCode, 413, `over the pixel limit: 413 (${(huge.json() as { code: string }).code})`);
    const nope = await bare.inject({ method: 'POST', url: '/faces', headers: { 'content-type': 'image/jpeg' }, payload: a });
    t.equal(nope.statusCode, 400, 'no pipeline: 400 E_ARG');
  });
