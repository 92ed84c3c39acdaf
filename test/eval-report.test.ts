import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CURVE_COLORS, PLOT_BACKGROUND, dropPoints, formatTable, renderHtml, thinRoc, writeReport, type EvalReport, type ReportModel } from '../lib/eval/report.js';
import { rocCurve, tarAtFar } from '../lib/eval/roc.js';
import { loadEmbedder, validateMeta } from '../lib/eval/embedder.js';
import { IResNet } from '../lib/models/index.js';
import { saveQfm } from '../lib/io/index.js';
import type { ModelInfo } from '../lib/io/model-info.js';
import { curvePixels, screenshot } from './fixtures/eval/screenshot.js';
import { findChromium, mulberry32, tempDir } from './fixtures/eval/util.js';

function model(name: string, shift: number, seed: number, withCurve = true): ReportModel {
  const rnd = mulberry32(seed);
  const s: number[] = [], y: number[] = [];
  for (let i = 0; i < 4000; i++) { const p = i % 2 === 0; y.push(p ? 1 : 0); s.push(rnd() + (p ? shift : 0)); }
  const roc = rocCurve(s, y);
  return {
    name,
    meta: validateMeta({ path: `/models/${name}.json` }, 'test'),
    metaAssumed: false,
    accuracy: 0.9 + shift / 100,
    std: 0.01,
    foldAccuracies: Array.from({ length: 10 }, (_, k) => 0.9 + k / 1000),
    foldThresholds: Array.from({ length: 10 }, () => 1.23),
    val: 0.5, valStd: 0.02, far: 0.001, farTarget: 1e-3,
    auc: 0.95,
    tarAtFar: tarAtFar(roc, [1e-3, 1e-2, 1e-1]),
    roc: withCurve ? thinRoc(roc) : { fpr: [0], tpr: [0] },
    embedSeconds: 1, imagesPerSecond: 123.4,
  };
}

function report(models: ReportModel[]): EvalReport {
  return {
    tool: 'quantface eval', version: '0.0.0-test', created: '2024-01-01T00:00:00Z',
    dataset: { kind: 'pairs', path: '/data/lfw', align: 'lfw-funneled', nPairs: 4000, nImages: 8000, nPos: 2000, nNeg: 2000 },
    models, seconds: 3,
  };
}

t.test('table, HTML content and thinning', async (t) => {
  const r = report([model('teacher', 0.5, 1), model('student <w8a8> & "x"', 0.3, 2)]);
  const table = formatTable(r);
  t.match(table, /teacher\s+90\.50\s+1\.00\s+50\.00/);
  t.match(table, /student <w8a8> & "x"\s+90\.30\s+1\.00\s+0\.20\s/, 'the student row shows the drop: teacher minus student, positive = accuracy lost');
  t.match(table.split('\n')[1]!, /drop pt \(teacher-student\)/, 'the header says the sign');
  t.match(table, /TAR@1e-3/);
  const html = renderHtml(r);
  t.match(html, /<th[^>]*>drop vs teacher, points \(teacher &minus; model; \+ = worse\)<\/th>/, 'the HTML header says the sign');
  t.match(html, /<td>90\.30<\/td><td>1\.00<\/td><td>0\.20<\/td>/, 'the HTML row shows the same positive drop');
  t.match(html, /student &lt;w8a8&gt; &amp; &quot;x&quot;/, 'names are escaped');
  t.notMatch(html, /student <w8a8>/);
  t.notMatch(html, /<script\s+src|<link\s|<img\s|@import|url\(http/i, 'no external assets');
  t.equal((html.match(/class="roc-curve"/g) ?? []).length, 2);
  t.match(html, /Per-fold accuracy/);
  t.equal((html.match(/<tr><td>\d+<\/td>/g) ?? []).length, 10, '10 fold rows');
  const embedded = /<script type="application\/json" id="quantface-report">([^]*?)<\/script>/.exec(html)!;
  t.same((JSON.parse(embedded[1]!) as EvalReport).models[1]!.name, 'student <w8a8> & "x"', 'the JSON is embedded intact');
  const big = rocCurve(Array.from({ length: 20000 }, (_, i) => Math.sin(i) + (i % 2)), Array.from({ length: 20000 }, (_, i) => i % 2));
  const thin = thinRoc(big);
  t.ok(thin.fpr.length < big.fpr.length / 3, `thinned ${big.fpr.length} -> ${thin.fpr.length}`);
  t.equal(thin.fpr[thin.fpr.length - 1], 1);
  t.equal(thin.fpr[0], 0);
  const dir = tempDir(t, 'report');
  const paths = await writeReport(r, dir);
  t.same((JSON.parse(readFileSync(paths.json, 'utf8')) as EvalReport).models.length, 2);
  t.equal(readFileSync(paths.html, 'utf8'), html, 'html written');
});

t.test('drop sign: worse students positive, better students negative, never -0.00', async (t) => {
  const worse = model('worse', 0.5 - 6.5, 2), better = model('better', 0.5 + 0.25, 3), same = model('same', 0.5, 4);
  const teacher = model('teacher', 0.5, 1);
  // 90.5 vs 84.0: 6.5 points lost prints +6.50 (the issue: it printed -6.50)
  const rows = formatTable(report([teacher, worse, better, same])).split('\n');
  const col = (row: string) => row.trim().split(/\s{2,}/)[3];
  t.equal(col(rows.find((l) => l.startsWith('worse'))!), '6.50', '6.5 points worse: 6.50');
  t.equal(col(rows.find((l) => l.startsWith('better'))!), '-0.25', '0.25 points better: -0.25');
  t.equal(col(rows.find((l) => l.startsWith('same'))!), '0.00', 'equal: 0.00, not -0.00');
  t.equal(dropPoints({ accuracy: 0.9838 }, { accuracy: 0.9838 + 1e-9 }, false), '0.00');
  t.equal(dropPoints({ accuracy: 0.9 }, { accuracy: 0.95 }, true), '', 'the teacher row is empty');
  t.equal(dropPoints({ accuracy: undefined }, { accuracy: 0.95 }, false), '');
});

t.test('HTML "Models and preprocessing" shows a .qfm student\'s recorded preprocessing, not raw 0..255', async (t) => {
  const dir = tempDir(t, 'qfm-meta');
  const m = new IResNet([1, 1, 1, 1], { widths: [8, 8, 16, 16], numFeatures: 16, seed: 5 });
  m.eval();
  const info: ModelInfo = {
    name: 'student', format: 'qfm', inputShape: [112, 112, 3], outputDim: 16, normalizedOutput: false,
    preprocessing: { colorOrder: 'BGR', normalize: { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] } },
    alignment: { kind: 'box', preset: 'ffhq' },
  };
  const recorded = join(dir, 'student.qfm');
  await saveQfm(m, recorded, { info });
  const bare = join(dir, 'bare.qfm');
  await saveQfm(m, bare);
  const a = await loadEmbedder(recorded), b = await loadEmbedder(bare);
  const rm = (name: string, e: typeof a): ReportModel => ({ ...model(name, 0.5, 1), meta: e.embedder.meta, metaAssumed: e.assumed });
  const html = renderHtml(report([rm('teacher', b), rm('student', a)]));
  const table = /<h2>Models and preprocessing<\/h2>\s*<table>([^]*?)<\/table>/.exec(html)?.[1] ?? '';
  const row = (name: string) => table.split('\n').find((l) => l.startsWith(`<tr><td>${name}</td>`)) ?? '';
  t.match(row('student'), /<td>qfm<\/td><td>112<\/td><td>BGR<\/td><td>\(x - \[127\.5,127\.5,127\.5\]\) \/ \[127\.5,127\.5,127\.5\]<\/td><td>box ffhq<\/td>/, 'the recorded colour order, scaling and alignment');
  t.match(row('student'), /<td>recorded<\/td><\/tr>$/);
  t.notMatch(row('student'), /raw 0\.\.255/);
  t.equal(a.assumed, false);
  // a .qfm that records nothing is shown as assumed, with the runtime default it will be fed
  t.match(row('teacher'), /<td>assumed \(nothing records it\)<\/td><\/tr>$/);
  t.match(row('teacher'), new RegExp(`<td>${b.embedder.meta.preprocessing.colorOrder}</td>`));
  a.embedder.dispose?.(); b.embedder.dispose?.();
});

const chromium = findChromium();
t.test('headless Chromium draws the ROC plot', { skip: chromium ? false : 'chromium not found (Debian: apt-get install chromium): skipped' }, async (t) => {
  if (!chromium) return;
  const dir = tempDir(t, 'chromium');
  const r = report([model('teacher', 0.5, 1), model('student', 0.25, 2)]);
  const paths = await writeReport(r, dir);
  const png = join(dir, 'shot.png');
  const shot = screenshot(chromium, paths.html, png);
  t.ok(shot.ok, `screenshot taken ${shot.log}`);
  const res = await curvePixels(png, PLOT_BACKGROUND, CURVE_COLORS.slice(0, 2));
  t.ok(res.area, `plot area found ${JSON.stringify(res.area)}`);
  t.ok(res.counts[0]! > 100, `teacher curve pixels in the plot: ${res.counts[0]}`);
  t.ok(res.counts[1]! > 100, `student curve pixels in the plot: ${res.counts[1]}`);
  // the same check fails on a report whose models have no curve
  const empty = report([model('teacher', 0.5, 1, false), model('student', 0.25, 2, false)]);
  const dir2 = tempDir(t, 'chromium-empty');
  const p2 = await writeReport(empty, dir2);
  const png2 = join(dir2, 'shot.png');
  t.ok(screenshot(chromium, p2.html, png2).ok);
  const res2 = await curvePixels(png2, PLOT_BACKGROUND, CURVE_COLORS.slice(0, 2));
  t.ok(res2.area, 'the empty plot area is still there');
  t.same(res2.counts, [0, 0], 'no curve pixels: the check would fail');
});
