// `eval --align detect`: LFW pairs through the face detector and landmark
// net (../shared) on a subset of pairs: a face in every image, accuracy
// close to the landmark file's on the same pairs, the report says how the
// images were aligned. Bad combinations are refused. Skips without ../shared.
import t from 'tap';
import { join } from 'node:path';
import sharp from 'sharp';
import { runEval } from '../lib/eval/run.js';
import { renderHtml } from '../lib/eval/report.js';
import { shared } from './fixtures/io/helpers.js';

const M = shared('models/faceplugin');
const LFW = shared('data/lfw');
t.test('refused combinations', async (t) => {
  await t.rejects(runEval({ models: ['x.onnx'], bin: 'lfw.bin', align: 'detect' }), { code: 'E_ARG', message: /--align detect runs on the photos of a pairs folder/ });
});
if (!M || !LFW) t.comment('../shared absent: skipped');
else
  t.test('LFW subset: detect vs the landmark file', async (t) => {
    const seedLimit = 120;
    const common = { models: [join(M, 'fr_feature.onnx')], pairs: LFW, limit: seedLimit, batch: 16 };
    const det = await runEval({ ...common, align: 'detect', detector: join(M, 'fr_detect.onnx'), landmarkModel: join(M, 'fr_landmark.onnx') });
    const lm = await runEval({ ...common, align: 'landmarks' });
    const a = det.models[0]!.accuracy!;
    const b = lm.models[0]!.accuracy!;
    t.comment(`${det.dataset.nPairs} pairs, ${det.dataset.nImages} images: accuracy detect ${(100 * a).toFixed(2)} %, landmark file ${(100 * b).toFixed(2)} %`);
    t.match(det.dataset.align, /^detect \(face detector \+ 68-point landmarks; a face found in (\d+)\/\1 images/, `every image has a face: ${det.dataset.align}`);
    t.ok(a >= b - 0.02, 'accuracy within 2 points of the landmark-file alignment on the subset');
    t.ok(a > 0.95, 'and above 95 %');
    // the HTML report shows a sample of the aligned crops
    t.equal(det.samples?.length, 8, '8 aligned crop samples');
    const s0 = det.samples![0]!;
    const png = Buffer.from(s0.png, 'base64');
    const meta = await sharp(png).metadata();
    t.same([meta.format, meta.width, meta.height, s0.size], ['png', 112, 112, 112], `a 112x112 PNG (${s0.image})`);
    const html = renderHtml(det);
    t.equal(html.split('data:image/png;base64,').length - 1, 8, 'the HTML shows them');
    const none = await runEval({ ...common, limit: 4, align: 'landmarks', samples: 0 });
    t.equal(none.samples, undefined, 'samples: 0 gives none');
  });
