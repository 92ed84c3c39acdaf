// npm run bench:decode-memory — peak memory of turning one encoded image into
// a model crop (lib/runtime prepareInput: decode -> align -> 112x112 RGB),
// per format and size, each image in its own child process.
//
//   flock -s /tmp/qf-cpu.lock node --import tsx bench/decode-memory.ts
//       [--sizes 1,10,40] [--formats png,jpeg,webp[,jpeg-progressive,png-interlaced]] [--align ffhq]
//       [--impl lib/runtime/input.ts[,tmp/before/lib/runtime/input.ts]] [--repeat 1]
//
// The test images are a face photo (../shared/data/synthetic-faces) resized
// to side x side (1, 10 and 40 megapixels), encoded once and cached under
// tmp/decode-memory/. Each child loads the implementation (--impl, a path to
// an input.ts; several, comma-separated, compare a saved older version, e.g.
// `git archive <commit> lib | tar -x -C tmp/before`), reads the file, warms
// sharp up on a small image, notes its RSS, prepares the big image once and
// reports the peak RSS from there on (the kernel's VmHWM, reset through
// /proc/self/clear_refs just before the image; process.resourceUsage().maxRSS
// where that is not allowed) and the peak minus the RSS before the image
// (what this one image added).
// Prints a markdown table and writes bench/results/decode-memory-<time>.json.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = resolve(import.meta.dirname, '..');
const argv = process.argv.slice(2);
const arg = (k: string, d: string): string => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1]! : d;
};

interface ChildResult {
  impl: string;
  file: string;
  baseMb: number;
  peakMb: number;
  addedMb: number;
  ms: number;
  ok: boolean;
  error?: string;
}

async function child(): Promise<void> {
  const impl = arg('impl', 'lib/runtime/input.ts');
  const file = arg('file', '');
  const align = arg('align', 'ffhq');
  const mod = (await import(pathToFileURL(resolve(root, impl)).href)) as {
    prepareInput: (x: Uint8Array, o: unknown) => Promise<Uint8Array>;
    resolveAlign: (a: string) => unknown;
    resolveLimits: (l: unknown) => unknown;
  };
  const sharp = (await import('sharp')).default;
  const o = { size: 112, align: mod.resolveAlign(align), limits: mod.resolveLimits({ maxBytes: 200 << 20, maxPixels: 50_000_000, maxSide: 16384 }) };
  const small = await sharp({ create: { width: 256, height: 256, channels: 3, background: '#888' } }).png().toBuffer();
  await mod.prepareInput(small, o); // warm up: sharp, libvips, the code paths
  const bytes = readFileSync(file);
  globalThis.gc?.();
  // Reset the kernel's peak-RSS mark (VmHWM) so that the start-up (tsx, module
  // loading) does not count; read it back from /proc/self/status afterwards.
  let reset = true;
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    reset = false;
  }
  const base = process.memoryUsage().rss;
  const t0 = performance.now();
  let ok = true;
  let error: string | undefined;
  try {
    const crop = await mod.prepareInput(bytes, o);
    if (crop.length !== 112 * 112 * 3) throw new Error(`crop of ${crop.length} bytes`);
  } catch (e) {
    ok = false;
    error = (e as Error).message;
  }
  const ms = performance.now() - t0;
  const hwm = /VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  const peak = reset && hwm ? Number(hwm[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
  const r: ChildResult = { impl, file, baseMb: base / 2 ** 20, peakMb: peak / 2 ** 20, addedMb: (peak - base) / 2 ** 20, ms, ok, ...(error ? { error } : {}) };
  process.stdout.write(JSON.stringify(r) + '\n');
}

async function images(sizes: number[], formats: string[]): Promise<{ mp: number; format: string; side: number; file: string; bytes: number }[]> {
  const sharp = (await import('sharp')).default;
  const dir = join(root, 'tmp', 'decode-memory');
  mkdirSync(dir, { recursive: true });
  const faces = resolve(root, '../shared/data/synthetic-faces');
  const face = join(faces, readdirSync(faces).filter((f) => f.endsWith('.jpg')).sort()[0]!);
  const out = [];
  for (const mp of sizes) {
    const side = Math.floor(Math.sqrt(mp * 1e6));
    for (const format of formats) {
      const file = join(dir, `face-${mp}mp-${format}.${format.split('-')[0]}`);
      if (!existsSync(file)) {
        const img = sharp(face, { limitInputPixels: false }).resize(side, side, { kernel: 'cubic' });
        const enc =
          format === 'png' ? img.png({ compressionLevel: 6 })
          : format === 'png-interlaced' ? img.png({ compressionLevel: 6, progressive: true })
          : format === 'jpeg' ? img.jpeg({ quality: 90 })
          : format === 'jpeg-progressive' ? img.jpeg({ quality: 90, progressive: true })
          : img.webp({ quality: 85 });
        await enc.toFile(file + '.part');
        execFileSync('mv', [file + '.part', file]);
      }
      out.push({ mp, format, side, file, bytes: readFileSync(file).length });
    }
  }
  return out;
}

async function main(): Promise<void> {
  const sizes = arg('sizes', '1,10,40').split(',').map(Number);
  const formats = arg('formats', 'png,jpeg,webp').split(',');
  const impls = arg('impl', 'lib/runtime/input.ts').split(',');
  const align = arg('align', 'ffhq');
  const repeat = Number(arg('repeat', '1'));
  const list = await images(sizes, formats);
  const rows: (ChildResult & { mp: number; format: string; side: number; bytes: number })[] = [];
  for (const im of list) {
    for (const impl of impls) {
      let best: ChildResult | undefined;
      for (let r = 0; r < repeat; r++) {
        let out: string;
        try {
          out = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(root, 'bench/decode-memory.ts'), '--child', '--impl', impl, '--file', im.file, '--align', align], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 20 });
        } catch (e) {
          out = JSON.stringify({ impl, file: im.file, baseMb: NaN, peakMb: NaN, addedMb: NaN, ms: NaN, ok: false, error: `child failed: ${(e as Error).message.split('\n')[0]}` });
        }
        const r = JSON.parse(out.trim().split('\n').pop()!) as ChildResult;
        if (!best || !(r.peakMb >= best.peakMb)) best = r; // the lowest peak of the repeats (noise is upwards)
      }
      rows.push({ ...best!, mp: im.mp, format: im.format, side: im.side, bytes: im.bytes });
      console.error(`${im.format} ${im.mp} MP (${im.side}x${im.side}, ${(im.bytes / 1024).toFixed(0)} KiB) ${impl}: peak ${best!.peakMb.toFixed(0)} MB, +${best!.addedMb.toFixed(0)} MB, ${best!.ms.toFixed(0)} ms${best!.ok ? '' : ` FAILED ${best!.error}`}`);
    }
  }
  console.log(`\n## peak RSS of one image through prepareInput (align ${align}, 112x112 crop; each in a fresh child; added = peak - RSS before the image)\n`);
  console.log(`| format | MP | side | file KiB | ${impls.map((i) => `${i}: peak MB | added MB | ms`).join(' | ')} |`);
  console.log(`|---|---:|---:|---:|${impls.map(() => '---:|---:|---:').join('|')}|`);
  for (const im of list) {
    const cells = impls.map((i) => {
      const r = rows.find((x) => x.file === im.file && x.impl === i)!;
      return r.ok ? `${r.peakMb.toFixed(0)} | ${r.addedMb.toFixed(0)} | ${r.ms.toFixed(0)}` : `failed | | `;
    });
    console.log(`| ${im.format} | ${im.mp} | ${im.side} | ${(im.bytes / 1024).toFixed(0)} | ${cells.join(' | ')} |`);
  }
  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `decode-memory-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file + '.part', JSON.stringify({ align, rows }, null, 1));
  execFileSync('mv', [file + '.part', file]);
  console.log(`\nresults: ${file}`);
}

(argv.includes('--child') ? child() : main()).catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
