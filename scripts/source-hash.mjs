// SHA-256 over the native sources, computed exactly as CMakeLists.txt does
// for info().sourceHash: sorted native/**/*.{cc,h,cu,cuh,cmake}, one line
// "<sha256>  <relative path>\n" each, then the SHA-256 of those lines.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export function sourceHash(root = resolve(dirname(fileURLToPath(import.meta.url)), '..')) {
  const files = [];
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(cc|h|cu|cuh|cmake)$/.test(e.name)) files.push(p);
    }
  };
  walk(join(root, 'native'));
  files.sort();
  let text = '';
  for (const f of files) {
    const h = createHash('sha256').update(readFileSync(f)).digest('hex');
    text += `${h}  ${relative(root, f).split('\\').join('/')}\n`;
  }
  return createHash('sha256').update(text).digest('hex');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) console.log(sourceHash());
