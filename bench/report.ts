// BENCHMARKS.md and bench/results.json from the results of the targets that ran (merged with the
// results of earlier runs for the targets that did not, so that a subset can be re-run).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT, RSS_METHOD } from './harness.js';
import { TARGET_KEYS, type CaseResult, type Check, type TargetResult, type Tool } from './targets.js';

export interface Machine {
  nproc: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  node: string;
  skopeo: string;
  registry: string;
  undici: string;
}

function tryRun(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8' }).trim();
  } catch {
    return 'unavailable';
  }
}

export function machine(): Machine {
  const undici = JSON.parse(readFileSync(join(PROJECT_ROOT, 'node_modules', 'undici', 'package.json'), 'utf8')) as { version: string };
  return {
    nproc: Number(tryRun('nproc', [])) || cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: tryRun('uname', ['-srm']) || release(),
    node: process.version,
    skopeo: tryRun('skopeo', ['--version']),
    registry: tryRun('docker-registry', ['--version']),
    undici: undici.version,
  };
}

export interface Results {
  machine: Machine;
  generatedAt: string;
  latencyMs: number;
  rssMethod: string;
  /** Load averages (1, 5, 15 min) at the start and the end of the run. */
  load: { before: number[]; after: number[] };
  /** Wall time of the whole run, seconds. */
  seconds?: number;
  /** The command line of the run. */
  invocation?: string;
  targets: Partial<Record<(typeof TARGET_KEYS)[number], TargetResult>>;
}

export const RESULTS_FILE = join(PROJECT_ROOT, 'bench', 'results.json');
export const MARKDOWN_FILE = join(PROJECT_ROOT, 'BENCHMARKS.md');
/** Hand-written analysis (profiles, what was changed, what is out of reach), included verbatim. */
export const ANALYSIS_FILE = join(PROJECT_ROOT, 'bench', 'ANALYSIS.md');

export function loadPrevious(): Results | undefined {
  if (!existsSync(RESULTS_FILE)) return undefined;
  try {
    return JSON.parse(readFileSync(RESULTS_FILE, 'utf8')) as Results;
  } catch {
    return undefined;
  }
}

const s = (ms: number | undefined): string => (ms === undefined || !Number.isFinite(ms) ? '–' : `${(ms / 1000).toFixed(3)} s`);
const mib = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '–' : `${v.toFixed(0)} MiB`);
const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}` : '–');
const verdict = (c: Check): string => (c.pass ? '**PASS**' : '**FAIL**');

function checkRows(checks: readonly Check[]): string[] {
  const rows = ['| check | measured | target | result |', '| --- | --- | --- | --- |'];
  for (const c of checks) rows.push(`| ${c.what} | ${c.unit === 'x' ? x(c.value) : `${Math.round(c.value * 10) / 10} ${c.unit}`} | ${c.op} ${c.limit}${c.unit === 'x' ? '' : ` ${c.unit}`} | ${verdict(c)} |`);
  return rows;
}

function toolCell(c: CaseResult, tool: Tool): string {
  const t = c.tools[tool];
  if (!t) return '–';
  return `${s(t.medianMs)}<br>${mib(t.medianRssMiB)}${t.medianRequests !== undefined ? `<br>${t.medianRequests} req` : ''}`;
}

function copyTable(cases: readonly CaseResult[]): string[] {
  const hasRaw = cases.some((c) => c.tools.raw);
  const rows = [
    `| case | work | ocirelay (time, peak RSS) | skopeo | ${hasRaw ? 'raw limit | ocirelay / raw | ' : ''}ocirelay / skopeo |`,
    `| --- | --- | --- | --- | ${hasRaw ? '--- | --- | ' : ''}--- |`,
  ];
  for (const c of cases) {
    const o = c.tools.ocirelay?.medianMs ?? NaN;
    const k = c.tools.skopeo?.medianMs ?? NaN;
    const r = c.tools.raw?.medianMs ?? NaN;
    rows.push(`| ${c.title} | ${c.work} | ${toolCell(c, 'ocirelay')} | ${toolCell(c, 'skopeo')} | ${hasRaw ? `${toolCell(c, 'raw')} | ${x(o / r)} | ` : ''}${x(o / k)} |`);
  }
  return rows;
}

function kindsTable(cases: readonly CaseResult[]): string[] {
  const rows: string[] = [];
  for (const c of cases) {
    for (const tool of ['ocirelay', 'skopeo', 'raw'] as const) {
      const k = c.tools[tool]?.kinds;
      if (!k) continue;
      const proxyCpu = c.tools[tool]?.medianProxyCpuMs;
      rows.push(`- ${c.title}, ${tool}: ${c.tools[tool]?.medianRequests} requests — ${Object.entries(k).sort((a, b) => b[1] - a[1]).map(([kind, n]) => `${kind} ${n}`).join(', ')}${c.network === 'wan' && proxyCpu !== undefined ? `; CPU: ${tool} ${((c.tools[tool]?.medianCpuMs ?? NaN) / 1000).toFixed(2)} s, the two latency proxies ${(proxyCpu / 1000).toFixed(2)} s` : ''}`);
    }
  }
  return rows;
}

function lambdaTable(cases: readonly CaseResult[]): string[] {
  const rows = ['| function | entry | bundle | budget | esbuild time | import (in process) | whole process (start + import) | peak RSS |', '| --- | --- | --- | --- | --- | --- | --- | --- |'];
  for (const c of cases) {
    const e = c.extra ?? {};
    rows.push(`| ${c.title} | ${c.work} | ${e.bundleKiB} KiB | ${e.budgetKiB} KiB | ${e.buildMs} ms | ${e.importMs} ms | ${e.processMs} ms (empty process: ${e.emptyProcessMs} ms) | ${mib(c.tools.ocirelay?.medianRssMiB)} |`);
  }
  return rows;
}

function commands(result: TargetResult): string[] {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const c of result.cases) {
    for (const [tool, t] of Object.entries(c.tools)) {
      const line = `${tool}: ${t.command}`;
      if (!t.command || seen.has(line)) continue;
      seen.add(line);
      lines.push(`    # ${c.title}, ${tool}`, `    ${t.command}`);
    }
  }
  return lines;
}

export function markdown(results: Results, invocation: string): string {
  const m = results.machine;
  const out: string[] = [
    '# Benchmarks: ocirelay against skopeo',
    '',
    `Generated by \`npm run bench\` (bench/run.ts) on ${results.generatedAt.slice(0, 10)}; every number is a median of alternating rounds (ocirelay, skopeo and the raw limit take turns going first), measured in one run on one machine, because absolute times on a shared machine drift while ratios hold. Raw samples are in bench/results.json.`,
    '',
    '## Summary',
    '',
    '| target | check | measured | target | result |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const key of TARGET_KEYS) {
    const t = results.targets[key];
    if (!t) continue;
    if (t.error) {
      out.push(`| ${t.title.split(':')[0]} | could not be measured (see below) | – | – | **ERROR** |`);
      continue;
    }
    for (const c of t.checks) out.push(`| ${t.title.split(':')[0]} | ${c.what} | ${c.unit === 'x' ? x(c.value) : `${Math.round(c.value * 10) / 10} ${c.unit}`} | ${c.op} ${c.limit}${c.unit === 'x' ? '' : ` ${c.unit}`} | ${verdict(c)} |`);
  }
  out.push(
    '',
    '## Machine',
    '',
    `- \`nproc\`: ${m.nproc} (${m.cpu}); memory ${m.memoryGiB} GiB; kernel ${m.kernel}`,
    `- Node.js ${m.node}, undici ${m.undici}; ${m.skopeo}; ${m.registry} (filesystem storage on local disk)`,
    `- Load average (1, 5, 15 min) at the start of the run: ${(results.load?.before ?? []).join(', ') || '?'}; at the end: ${(results.load?.after ?? []).join(', ') || '?'}${results.seconds !== undefined ? `; the run took ${(results.seconds / 60).toFixed(1)} min` : ''}. A load above 2 on this 2-core machine means other work shared the cores: absolute times grow, ratios of alternating rounds much less (each target gives its own load below).`,
    '',
    '## Method',
    '',
    '- Every measured copy goes into a **fresh registry** (new process, empty storage directory), for every tool; the source registry is shared (reading flatters nobody). Every result is checked afterwards: the target must hold the source digest under the tag (for sync, all 100 tags).',
    '- Content is **random and incompressible**: each layer is a real gzip stream (deflate level 0) of a tar holding random bytes, so every tool copies it verbatim (a layer labelled gzip that is not gzip would make skopeo recompress it). Fresh random content every run.',
    '- **ocirelay** is measured as users start it, `node dist/cli/bin.js ...` (the bundled CLI that `npm run build` makes, scripts/build.ts; the bench rebuilds dist/ when a lib/ source is newer), so process start is included, as it is for skopeo.',
    '- **skopeo** runs as cold as test/support/fixtures.ts makes it: `--insecure-policy`, a fresh private home (XDG dirs, `--tmpdir`, `_CONTAINERS_ROOTLESS_UID` so that containers/image keeps its blob-info cache there and not in /var/lib/containers/cache), and `/var/lib/containers/cache/blob-info-cache-v1.boltdb` deleted before every run. `--preserve-digests` makes it refuse (rather than silently do) any format change, so both tools do the same work.',
    '- **Raw limit** (target 1): bench/raw-copy.ts, bundled with esbuild and started as its own node process: parallel raw undici GETs piped straight into PUTs (the POST opening each upload runs alongside the GET), every blob at once, then the manifests; no verification, no HEADs, no retries.',
    `- **WAN-like**: bench/latency-proxy.ts, a small reverse proxy in front of each registry (source and target) that holds every request for ${results.latencyMs} ms before forwarding it, then streams both bodies through. It also counts requests (the no-op target; loopback no-op runs go through 0 ms proxies for the count). TCP connects and skopeo's HTTPS probe (answered at once by the proxy with a protocol error, then retried over HTTP) are not delayed. Both tools pay the proxies' CPU on the same two cores.`,
    `- **Peak RSS**: ${results.rssMethod} of the whole process (for ocirelay, the node process, V8 heap, buffers and all).`,
    `- This run: \`${invocation}\`.`,
    '',
  );
  for (const key of TARGET_KEYS) {
    const t = results.targets[key];
    if (!t) continue;
    out.push(`## ${t.title}`, '', `${t.rounds} rounds; run ${t.ranAt.replace('T', ' ').slice(0, 16)} UTC${t.seconds !== undefined ? `, took ${t.seconds} s` : ''}${t.load ? `; load average ${t.load.before.join(' ')} before, ${t.load.after.join(' ')} after` : ''}.`, '');
    if (t.error) {
      out.push('Could not be measured:', '', '```', t.error, '```', '');
      continue;
    }
    out.push(...(key === 'lambda' ? lambdaTable(t.cases) : copyTable(t.cases)), '', ...checkRows(t.checks), '');
    const kinds = kindsTable(t.cases);
    if (kinds.length && (key === 'noop' || key === 'cold' || key === 'index')) out.push('Requests seen by the proxies (last run of each tool):', '', ...kinds, '');
    for (const note of t.notes) out.push(`- ${note}`);
    if (t.notes.length) out.push('');
    out.push('<details><summary>Commands</summary>', '', ...commands(t), '', '</details>', '');
  }
  if (existsSync(ANALYSIS_FILE)) out.push(readFileSync(ANALYSIS_FILE, 'utf8').trim(), '');
  return `${out.join('\n')}\n`;
}
