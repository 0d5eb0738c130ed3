/**
 * `npm run build` (also npm ci's prepare step, and test/run.mjs before any test): compiles lib/
 * into dist/ (the library, with type declarations), then bundles the CLI over dist/cli/bin.js
 * (scripts/cli-bundle.ts). An entry of its own, so that it always builds, however it is reached.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../infra/bundling.js';
import { buildCli } from './cli-bundle.js';

function compileLibrary(): void {
  const tsc = spawnSync(process.execPath, [join(PROJECT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(PROJECT_ROOT, 'lib', 'tsconfig.json')], { stdio: 'inherit' });
  if (tsc.status !== 0) throw new Error('compiling lib/ into dist/ failed');
}

try {
  compileLibrary();
  await buildCli();
} catch (err) {
  console.error(`build: ${(err as Error).message}`);
  process.exit(1);
}
