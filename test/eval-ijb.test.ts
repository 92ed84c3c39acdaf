import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { ARCFACE_TEMPLATE } from '../lib/eval/align.js';
import { planTemplates, readIjbMeta, runIjb, streamTemplatePairs } from '../lib/eval/ijb.js';
import { runEval } from '../lib/eval/run.js';
import { ColourCodeEmbedder } from './fixtures/eval/fake-embedder.js';
import { tempDir } from './fixtures/eval/util.js';
import type { Teardown } from './fixtures/tmp.js';

// A tiny IJB-C-format set. Colours: A red -> code (5,0,0), B green
// (0,5,0), C blue (0,0,5), D yellow (5,5,0). The test embedder returns the
// colour code, so f(img) + f(flip) = 2 * code.
const COLOURS: Record<string, [number, number, number]> = { A: [255, 0, 0], B: [0, 255, 0], C: [0, 0, 255], D: [255, 255, 0] };
// image, template, media, colour, faceness
const ROWS: Array<[string, number, number, string, number]> = [
  ['1.jpg', 101, 1, 'A', 0.9], // T1 = (1,0,0)
  ['2.jpg', 7, 2, 'A', 0.5], // T2: one media of A and B -> (1,1,0)/sqrt2
  ['3.jpg', 7, 2, 'B', 0.5],
  ['4.jpg', 55, 3, 'A', 1.0], // T3: (10,0,0) + (0,2,0): faceness weights -> (10,2,0)/sqrt104
  ['5.jpg', 55, 4, 'B', 0.2],
  ['6.jpg', 3, 5, 'C', 0.7], // T4 = (0,0,1)
  ['7.jpg', 1000, 6, 'A', 1.0], // T5: media 6 mean (20/3,10/3,0) + media 7 (0,0,10) -> (2,1,3)/sqrt14
  ['8.jpg', 1000, 6, 'A', 1.0],
  ['9.jpg', 1000, 6, 'B', 1.0],
  ['10.jpg', 1000, 7, 'C', 1.0],
  ['11.jpg', 12, 8, 'D', 0.3], // T6 = (1,1,0)/sqrt2
];
// template pairs; hand-computed cosines
const PAIRS: Array<[number, number, number]> = [
  [101, 55, 1], // 10/sqrt104 = .98058
  [7, 12, 1], // 1
  [101, 7, 1], // 1/sqrt2 = .70711
  [3, 1000, 1], // 3/sqrt14 = .80178
  [101, 3, 0], // 0
  [55, 3, 0], // 0
  [7, 1000, 0], // 3/sqrt28 = .56695
  [55, 12, 0], // 12/sqrt208 = .83205
  [1000, 12, 0], // .56695
  [101, 1000, 0], // 2/sqrt14 = .53452
];

async function makeSet(t: Teardown, shuffleTidRows = false): Promise<string> {
  const dir = tempDir(t, 'ijb');
  mkdirSync(join(dir, 'meta'));
  mkdirSync(join(dir, 'loose_crop'));
  // 224x224 images; landmarks = 2 x template, so the crop samples inside the image
  const lmk = ARCFACE_TEMPLATE.flatMap(([x, y]) => [2 * x, 2 * y]).map((v) => v.toFixed(3)).join(' ');
  for (const [name, , , col] of ROWS) {
    const [r, g, b] = COLOURS[col]!;
    await sharp({ create: { width: 224, height: 224, channels: 3, background: { r, g, b } } }).jpeg({ quality: 95 }).toFile(join(dir, 'loose_crop', name));
  }
  writeFileSync(join(dir, 'meta', 'ijbc_name_5pts_score.txt'), ROWS.map(([n, , , , f]) => `${n} ${lmk} ${f}`).join('\n') + '\n');
  const tid = ROWS.map(([n, tm, m]) => `${n} ${tm} ${m}`);
  if (shuffleTidRows) tid.reverse();
  writeFileSync(join(dir, 'meta', 'ijbc_face_tid_mid.txt'), tid.join('\n') + '\n');
  writeFileSync(join(dir, 'meta', 'ijbc_template_pair_label.txt'), PAIRS.map((p) => p.join(' ')).join('\n') + '\n');
  return dir;
}

t.test('tiny IJB-C set: hand-computed ROC and TAR@FAR', async (t) => {
  for (const shuffled of [false, true]) {
    const dir = await makeSet(t, shuffled);
    const meta = await readIjbMeta(dir);
    t.equal(meta.target, 'ijbc');
    t.equal(meta.names.length, 11);
    const emb = new ColourCodeEmbedder();
    const r = await runIjb(meta, [emb], { batch: 4, chunk: 3 });
    t.equal(r.nPairs, 10);
    t.equal(r.nTemplates, 6);
    t.equal(r.nImages, 11);
    t.equal(emb.images, 22, 'each image embedded once with its mirror');
    const m = r.models[0]!;
    // descending scores: 1 P, .981 P, .832 N, .802 P, .707 P, .567 N N, .535 N, 0 N N
    // kept points (fp, tp): (0,0) (0,1) (0,2) (1,2) (1,4) (3,4) (4,4) (6,4)
    t.same(Array.from(m.roc.fpr), [0, 0, 0, 1 / 6, 1 / 6, 3 / 6, 4 / 6, 1], `shuffled=${shuffled} fpr`);
    t.same(Array.from(m.roc.tpr), [0, 0.25, 0.5, 0.5, 1, 1, 1, 1], 'tpr');
    const th = Array.from(m.roc.thresholds);
    const want = [Infinity, 1, 10 / Math.sqrt(104), 12 / Math.sqrt(208), 1 / Math.SQRT2, 3 / Math.sqrt(28), 2 / Math.sqrt(14), 0];
    t.ok(th.every((v, i) => (i === 0 ? v === Infinity : Math.abs(v - want[i]!) < 1e-6)), `thresholds ${th.map((v) => v.toFixed(5)).join(' ')}`);
    // FAR 1e-6..1e-2: nearest FPR is 0, where the largest TAR is .5;
    // FAR 1e-1: nearest FPR is 1/6 (|1/6-.1| < .1), largest TAR there 1
    t.same(m.tarAtFar.map((x) => x.tar), [0.5, 0.5, 0.5, 0.5, 0.5, 1], 'TAR@FAR');
    t.ok(Math.abs(m.tarAtFar[5]!.threshold - 1 / Math.SQRT2) < 1e-6);
    // AUC by trapezoids: 1/6*.5 + 5/6*1
    t.ok(Math.abs(m.auc - (1 / 6 * 0.5 + 5 / 6)) < 1e-12, `AUC ${m.auc}`);
  }
});

t.test('limit embeds only the templates of the first pairs', async (t) => {
  const dir = await makeSet(t);
  const emb = new ColourCodeEmbedder();
  const r = await runIjb(await readIjbMeta(dir, 'ijbc'), [emb], { limit: 2 });
  t.equal(r.nPairs, 2);
  t.equal(r.nTemplates, 4, 'templates 101, 55, 7, 12');
  t.equal(r.nImages, 6);
  t.same(Array.from(r.models[0]!.roc.tpr), [0, 0.5, 1]);
});

t.test('streaming, planning and errors', async (t) => {
  const dir = await makeSet(t);
  const chunks: number[] = [];
  for await (const c of streamTemplatePairs(join(dir, 'meta', 'ijbc_template_pair_label.txt'), 4)) chunks.push(c.n);
  t.same(chunks, [4, 4, 2]);
  const plan = planTemplates(Int32Array.of(5, 5, 5, 2), Int32Array.of(1, 1, 2, 9));
  t.same(Array.from(plan.templates), [2, 5]);
  t.same(Array.from(plan.rowWeight), [0.5, 0.5, 1, 1]);
  t.same(Array.from(plan.rowTemplateIndex), [1, 1, 1, 0]);
  writeFileSync(join(dir, 'meta', 'ijbc_template_pair_label.txt'), '101 55 1\n101 999 0\n');
  await t.rejects(runIjb(await readIjbMeta(dir), [new ColourCodeEmbedder()]), { code: 'E_FORMAT', message: /999/ });
  writeFileSync(join(dir, 'meta', 'ijbc_template_pair_label.txt'), '101 55 2\n');
  await t.rejects(runIjb(await readIjbMeta(dir), [new ColourCodeEmbedder()]), { code: 'E_FORMAT', message: /label must be 0 or 1/ });
  writeFileSync(join(dir, 'meta', 'ijbc_face_tid_mid.txt'), 'nope.jpg 1 1\n');
  await t.rejects(readIjbMeta(dir), { code: 'E_FORMAT', message: /nope\.jpg has no line/ });
  await t.rejects(readIjbMeta(tempDir(t, 'empty')), { code: 'E_IO', message: /not an IJB folder/ });
});

t.test('runEval on an IJB folder builds the report', async (t) => {
  const dir = await makeSet(t);
  const rep = await runEval({ models: [], embedders: [{ embedder: new ColourCodeEmbedder('teacher') }, { embedder: new ColourCodeEmbedder('student') }], ijb: dir, batch: 3 });
  t.equal(rep.dataset.kind, 'ijb');
  t.equal(rep.dataset.nTemplates, 6);
  t.same([rep.dataset.nPos, rep.dataset.nNeg], [4, 6]);
  t.same(rep.models.map((m) => m.name), ['teacher', 'student']);
  t.same(rep.models[1]!.tarAtFar.map((x) => x.tar), [0.5, 0.5, 0.5, 0.5, 0.5, 1]);
  t.equal(rep.models[0]!.accuracy, undefined, 'no 10-fold accuracy for IJB');
  await t.rejects(runEval({ models: [], embedders: [{ embedder: new ColourCodeEmbedder() }], ijb: dir, align: 'ffhq' }), { code: 'E_ARG' });
});
