// `npm run bench [-- options]`: ocirelay against skopeo, side by side (issue 7). Not part of
// `npm test`. Writes BENCHMARKS.md and bench/results.json (a subset re-run keeps the other
// targets' previous results).
//
// options (or environment):
//   --only cold,index,noop,bulk,memory,lambda,scaling   (BENCH_ONLY)   default: all seven
//   --rounds N                                         (BENCH_ROUNDS) default 3 (at least 3 for the record)
//   --latency MS                                       (BENCH_LATENCY_MS) WAN-like delay per request, default 25
//   --cpu-prof DIR     run measured ocirelay processes with `node --cpu-prof --cpu-prof-dir DIR`
//   --no-write         print the results, leave BENCHMARKS.md and results.json alone
//   --report-only      measure nothing: write BENCHMARKS.md again from bench/results.json (and bench/ANALYSIS.md)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { startRegistry } from '../test/support/index.js';
import { log, OCIRELAY_BIN, PROJECT_ROOT, RSS_METHOD } from './harness.js';
import { loadPrevious, machine, MARKDOWN_FILE, markdown, RESULTS_FILE, type Results } from './report.js';
import { TARGET_KEYS, TARGET_TITLES, TARGETS, type BenchContext, type TargetKey, type TargetResult } from './targets.js';

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    rounds: { type: 'string' },
    latency: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'no-write': { type: 'boolean' },
    'report-only': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
});

if (values.help) {
  process.stdout.write(`usage: npm run bench -- [--only ${TARGET_KEYS.join(',')}] [--rounds N] [--latency MS] [--cpu-prof DIR] [--no-write] [--report-only]\n`);
  process.exit(0);
}

if (values['report-only']) {
  const previous = loadPrevious();
  if (!previous) throw new Error(`no ${relative(PROJECT_ROOT, RESULTS_FILE)} to report from`);
  writeFileSync(MARKDOWN_FILE, markdown(previous, previous.invocation ?? 'npm run bench'));
  log(`wrote ${relative(PROJECT_ROOT, MARKDOWN_FILE)} from ${relative(PROJECT_ROOT, RESULTS_FILE)}`);
  process.exit(0);
}

const only = (values.only ?? process.env.BENCH_ONLY ?? TARGET_KEYS.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
for (const key of only) if (!(TARGET_KEYS as readonly string[]).includes(key)) throw new Error(`unknown target ${JSON.stringify(key)}; known: ${TARGET_KEYS.join(', ')}`);
const rounds = Number(values.rounds ?? process.env.BENCH_ROUNDS ?? 3);
const latencyMs = Number(values.latency ?? process.env.BENCH_LATENCY_MS ?? 25);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
if (!Number.isFinite(latencyMs) || latencyMs < 0) throw new Error('--latency must be a number of milliseconds');
if (rounds < 3) log(`note: ${rounds} round(s); the targets are defined on the median of at least 3`);

/** dist/ is rebuilt when it is missing or any lib/ source is newer than its compiled file. */
function ensureBuilt(): void {
  const stale: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) {
        const out = join(PROJECT_ROOT, 'dist', relative(join(PROJECT_ROOT, 'lib'), path)).replace(/\.ts$/, '.js');
        if (!existsSync(out) || statSync(out).mtimeMs < statSync(path).mtimeMs) stale.push(relative(PROJECT_ROOT, path));
      }
    }
  };
  walk(join(PROJECT_ROOT, 'lib'));
  if (!existsSync(OCIRELAY_BIN) || stale.length) {
    log(`building dist/ (${existsSync(OCIRELAY_BIN) ? `stale: ${stale.slice(0, 3).join(', ')}${stale.length > 3 ? ', …' : ''}` : 'missing'})`);
    const r = spawnSync('npm', ['run', 'build'], { cwd: PROJECT_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new Error('npm run build failed');
  }
}

/** bench/raw-copy.ts as one .mjs (undici bundled in), so it starts as a plain node process. */
async function bundleRawCopy(): Promise<string> {
  const { build } = await import('esbuild');
  const outfile = join(PROJECT_ROOT, 'node_modules', '.cache', 'ocirelay-bench', 'raw-copy.mjs');
  mkdirSync(join(outfile, '..'), { recursive: true });
  await build({
    entryPoints: [join(PROJECT_ROOT, 'bench', 'raw-copy.ts')],
    outfile,
    bundle: true,
    minify: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    banner: { js: "import { createRequire as __benchRequire } from 'node:module'; const require = __benchRequire(import.meta.url);" },
    logLevel: 'error',
  });
  return outfile;
}

const load = (): number[] => loadavg().map((l) => Math.round(l * 100) / 100);

async function main(): Promise<void> {
  const runStarted = performance.now();
  ensureBuilt();
  const rawCopy = await bundleRawCopy();
  const cpuProf = values['cpu-prof'];
  if (cpuProf) mkdirSync(cpuProf, { recursive: true });
  const source = await startRegistry();
  const ctx: BenchContext = { source, rounds, latencyMs, rawCopy, nodeFlags: cpuProf ? ['--cpu-prof', '--cpu-prof-dir', cpuProf] : [], fixtures: new Map() };
  const previous = loadPrevious();
  const results: Results = {
    machine: machine(),
    generatedAt: new Date().toISOString(),
    latencyMs,
    rssMethod: RSS_METHOD,
    load: { before: load(), after: [] },
    // Earlier results of targets measured with the same latency are kept when only a subset runs.
    targets: previous && previous.latencyMs === latencyMs ? { ...previous.targets } : {},
  };
  log(`targets ${only.join(', ')}; ${rounds} rounds; WAN-like +${latencyMs} ms per request; RSS by ${RSS_METHOD}`);
  const failures: string[] = [];
  try {
    for (const key of TARGET_KEYS) {
      if (!only.includes(key)) continue;
      const before = load();
      log(`--- ${key} (load average ${before.join(' ')})`);
      const started = Date.now();
      try {
        const measured = await TARGETS[key](ctx);
        const result: TargetResult = { key, ranAt: new Date(started).toISOString(), rounds, ...measured, seconds: Math.round((Date.now() - started) / 100) / 10, load: { before, after: load() } };
        results.targets[key as TargetKey] = result;
        for (const c of result.checks) log(`${c.pass ? 'PASS' : 'FAIL'} ${key}: ${c.what}: ${c.unit === 'x' ? c.value.toFixed(2) : c.value.toFixed(1)} ${c.unit} (target ${c.op} ${c.limit})`);
      } catch (err) {
        failures.push(`${key}: ${(err as Error).stack ?? String(err)}`);
        log(`ERROR ${key}: ${(err as Error).message}`);
        // Recorded, not dropped: BENCHMARKS.md says the target could not be measured, and why.
        results.targets[key as TargetKey] = {
          key,
          title: TARGET_TITLES[key],
          ranAt: new Date(started).toISOString(),
          rounds,
          seconds: Math.round((Date.now() - started) / 100) / 10,
          load: { before, after: load() },
          error: (err as Error).message.slice(0, 2000),
          cases: [],
          checks: [{ what: 'measured to the end', value: 0, op: '<=', limit: 0, unit: '', pass: false }],
          notes: [],
        };
      }
    }
  } finally {
    await source.stop();
  }
  results.load.after = load();
  results.seconds = Math.round((performance.now() - runStarted) / 1000);
  const invocation = process.argv.length > 2 ? `npm run bench -- ${process.argv.slice(2).join(' ')}` : 'npm run bench';
  results.invocation = invocation;
  if (!values['no-write'] && !cpuProf) {
    writeFileSync(RESULTS_FILE, `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(MARKDOWN_FILE, markdown(results, invocation));
    log(`wrote ${relative(PROJECT_ROOT, MARKDOWN_FILE)} and ${relative(PROJECT_ROOT, RESULTS_FILE)}`);
  }
  const all = only.flatMap((k) => results.targets[k as TargetKey]?.checks ?? []);
  const failed = all.filter((c) => !c.pass);
  process.stdout.write(`\n${all.length - failed.length}/${all.length} checks PASS${failed.length ? `; FAIL: ${failed.map((c) => c.what).join('; ')}` : ''}\n`);
  process.stdout.write(`the whole run took ${results.seconds} s (load average ${results.load.before.join(' ')} at the start, ${results.load.after.join(' ')} at the end)\n`);
  if (failures.length) {
    process.stderr.write(`\n${failures.join('\n\n')}\n`);
    process.exitCode = 2;
  }
}

await main();
