// Runs every test file with node's own runner through tsx. Node 20 does not expand globs and
// `node --test test/` finds no .ts files, so the files are listed here (sorted, for stable output).
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...find(path));
    else if (name.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

// The CLI tests run dist/cli/bin.js as a user does: build it (compile lib/, bundle the CLI) once,
// here, before any test starts (test files running in parallel must not rebuild dist/ under each
// other's feet).
const build = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/build.ts'], { stdio: 'inherit' });
if (build.status !== 0) {
  console.error('test/run.mjs: building dist/ failed');
  process.exit(build.status ?? 1);
}

const only = process.argv.slice(2);
const files = only.length ? only : find('test').sort();
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
