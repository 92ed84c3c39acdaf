#!/usr/bin/env node
// The `quantface` command: runs the compiled CLI in dist/. A committed launcher
// (mode 755 in git) because tsc writes dist/cli.js without the execute bit and
// npm sets bin modes only for installed dependencies, not for the project itself.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  process.stderr.write(`quantface: ${fileURLToPath(cli)} is missing: run \`npm run build\` in ${root} (npm install runs it too)\n`);
  process.exit(1);
}
const { main } = await import(cli.href);
process.exitCode = await main(process.argv);
