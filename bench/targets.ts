// The seven targets of issue 7. Each measured copy gets a fresh target registry (and, WAN-like,
// fresh latency proxies in front of both registries); the source registry is shared, since
// reading from it flatters nobody. Tools alternate within every round (see `alternate`).
import { statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { copyImage } from '../lib/engine/copy.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { startRegistry, startS3, type RunningRegistry, type RunningS3 } from '../test/support/index.js';
import { alternate, displayCommand, log, median, ocirelay, PROJECT_ROOT, ratio, runTool, skopeo, timed, type ToolRun } from './harness.js';
import { expectDigest, MiB, PLATFORMS, pushImage, type ImageSpec, type PushedFixture } from './images.js';
import { requestKinds, startLatencyProxy, type LatencyProxy } from './latency-proxy.js';

export type Tool = 'ocirelay' | 'skopeo' | 'raw';
export type Network = 'loopback' | 'wan';

export interface Sample {
  ms: number;
  rssKiB: number;
  /** CPU time (user + system) of the tool's process. */
  cpuMs?: number;
  /** HTTP requests seen by the proxies (WAN-like runs and counted runs only). */
  requests?: number;
  /**
   * CPU time the bench process spent while the tool ran: in WAN-like runs, the two latency
   * proxies relaying every byte (the bench does nothing else meanwhile), on the same cores.
   */
  proxyCpuMs?: number;
  kinds?: Record<string, number>;
}

export interface ToolSeries {
  samples: Sample[];
  medianMs: number;
  medianCpuMs?: number;
  medianRssMiB: number;
  maxRssMiB: number;
  medianRequests?: number;
  medianProxyCpuMs?: number;
  kinds?: Record<string, number>;
  command: string;
}

export interface Check {
  what: string;
  value: number;
  op: '<=';
  limit: number;
  unit: string;
  pass: boolean;
}

export interface CaseResult {
  id: string;
  title: string;
  network: Network | '-';
  /** What was copied: blobs, bytes. */
  work: string;
  tools: Partial<Record<Tool, ToolSeries>>;
  extra?: Record<string, number | string>;
}

export interface TargetResult {
  key: TargetKey;
  title: string;
  ranAt: string;
  rounds: number;
  /** Wall time of the whole target (fixtures, every round, every tool), seconds. */
  seconds?: number;
  /** Load averages (1, 5, 15 min) when the target started and ended: other work on the machine skews times, not ratios. */
  load?: { before: number[]; after: number[] };
  /** Set when the target could not be measured (a tool failed, a fixture could not be pushed). */
  error?: string;
  cases: CaseResult[];
  checks: Check[];
  notes: string[];
}

export const TARGET_KEYS = ['cold', 'index', 'noop', 'bulk', 'memory', 'lambda', 'scaling'] as const;
export type TargetKey = (typeof TARGET_KEYS)[number];

/** Each target's title (also used when a target fails before it returns one). */
export const TARGET_TITLES: Record<TargetKey, string> = {
  cold: '1. Cold copy: one image, 6 layers x 40 MiB',
  index: '2. Cold copy: 4-platform index, 3 x 20 MiB per platform',
  noop: '3. No-op re-copy of an unchanged image (6 x 40 MiB)',
  bulk: '4. Bulk: 100 tags across 20 repositories, small images, cold (`ocirelay sync` vs `skopeo sync`)',
  memory: '5. Memory: one 1 GiB layer (peak RSS of the whole process)',
  lambda: '6. Lambda readiness: bundle size and cold import time per function',
  scaling: '7. Scaling: 1, 4 and 16 platforms; one layer of 10 MiB, 100 MiB and 1 GiB (loopback)',
};

export interface BenchContext {
  source: RunningRegistry;
  rounds: number;
  latencyMs: number;
  rawCopy: string;
  /** Extra node flags for measured ocirelay runs (e.g. --cpu-prof). */
  nodeFlags: string[];
  fixtures: Map<string, Promise<PushedFixture>>;
}

function check(what: string, value: number, limit: number, unit: string): Check {
  return { what, value, op: '<=', limit, unit, pass: Number.isFinite(value) && value <= limit };
}

function series(samples: Sample[], command: string): ToolSeries {
  const s: ToolSeries = {
    samples,
    medianMs: median(samples.map((x) => x.ms)),
    medianRssMiB: median(samples.map((x) => x.rssKiB)) / 1024,
    maxRssMiB: Math.max(...samples.map((x) => x.rssKiB)) / 1024,
    command,
  };
  if (samples.every((x) => x.cpuMs !== undefined)) s.medianCpuMs = median(samples.map((x) => x.cpuMs as number));
  if (samples.every((x) => x.proxyCpuMs !== undefined)) s.medianProxyCpuMs = median(samples.map((x) => x.proxyCpuMs as number));
  if (samples.every((x) => x.requests !== undefined)) {
    s.medianRequests = median(samples.map((x) => x.requests as number));
    s.kinds = samples[samples.length - 1]?.kinds;
  }
  return s;
}

/** One fixture per spec, pushed to the shared source registry once. */
export function fixture(ctx: BenchContext, repository: string, spec: ImageSpec): Promise<PushedFixture> {
  let pushed = ctx.fixtures.get(repository);
  if (!pushed) {
    const started = performance.now();
    pushed = pushImage(ctx.source.host, repository, 'v1', spec).then((f) => {
      log(`fixture ${repository}: ${f.blobs} blobs, ${(f.bytes / MiB).toFixed(1)} MiB, ${f.manifests} manifest(s), pushed in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return f;
    });
    ctx.fixtures.set(repository, pushed);
  }
  return pushed;
}

function describe(f: PushedFixture): string {
  return `${f.blobs} blobs, ${(f.bytes / MiB).toFixed(0)} MiB${f.manifests > 1 ? `, ${f.manifests} manifests` : ''}`;
}

interface Endpoints {
  src: string;
  dst: string;
  proxies: LatencyProxy[];
  target: RunningRegistry;
}

/** A fresh target registry, and for WAN-like (or counted) runs latency proxies in front of both registries. */
async function endpoints(ctx: BenchContext, network: Network, count = false): Promise<Endpoints> {
  const target = await startRegistry();
  if (network === 'loopback' && !count) return { src: ctx.source.host, dst: target.host, proxies: [], target };
  const delay = network === 'wan' ? ctx.latencyMs : 0;
  const proxies = await Promise.all([startLatencyProxy(ctx.source.url, delay), startLatencyProxy(target.url, delay)]);
  return { src: proxies[0]!.host, dst: proxies[1]!.host, proxies, target };
}

async function release(e: Endpoints): Promise<void> {
  await Promise.all(e.proxies.map((p) => p.stop()));
  await e.target.stop();
}

function copyRun(ctx: BenchContext, tool: Tool, f: PushedFixture, e: Endpoints): ToolRun {
  const from = `${e.src}/${f.repository}:${f.tag}`;
  const to = `${e.dst}/${f.repository}:${f.tag}`;
  switch (tool) {
    case 'ocirelay':
      return ocirelay(['copy', '--quiet', from, to], {}, ctx.nodeFlags);
    case 'skopeo':
      return skopeo(['copy', '--quiet', '--preserve-digests', '--src-tls-verify=false', '--dest-tls-verify=false', ...(f.manifests > 1 ? ['--all'] : []), `docker://${from}`, `docker://${to}`]);
    case 'raw':
      return { command: process.execPath, args: [ctx.rawCopy, `http://${e.src}`, f.repository, f.tag, `http://${e.dst}`, f.repository, f.tag], env: process.env, cleanup: () => undefined };
  }
}

function counted(sample: Sample, e: Endpoints, benchCpu?: NodeJS.CpuUsage): Sample {
  if (!e.proxies.length) return sample;
  const all = e.proxies.flatMap((p) => p.requests);
  return { ...sample, requests: all.length, kinds: requestKinds(all), ...(benchCpu ? { proxyCpuMs: (benchCpu.user + benchCpu.system) / 1000 } : {}) };
}

/** Measures copies of `f` by each tool, alternating, each into a fresh target. */
export async function measureCopy(ctx: BenchContext, id: string, title: string, f: PushedFixture, network: Network, tools: readonly Tool[], rounds = ctx.rounds): Promise<CaseResult> {
  const commands: Partial<Record<Tool, string>> = {};
  const samples = await alternate(rounds, tools, async (tool) => {
    const e = await endpoints(ctx, network);
    try {
      const run = copyRun(ctx, tool, f, e);
      commands[tool] ??= displayCommand(run);
      const cpu = process.cpuUsage();
      const r = await runTool(run);
      const benchCpu = process.cpuUsage(cpu);
      await expectDigest(e.target.url, f.repository, f.tag, f.digest, tool);
      const sample = counted({ ms: r.ms, rssKiB: r.rssKiB, cpuMs: r.cpuMs }, e, benchCpu);
      log(`${id} ${tool}: ${(r.ms / 1000).toFixed(3)} s, cpu ${(r.cpuMs / 1000).toFixed(2)} s, ${(r.rssKiB / 1024).toFixed(0)} MiB${sample.requests !== undefined ? `, ${sample.requests} requests, proxies' cpu ${((sample.proxyCpuMs ?? 0) / 1000).toFixed(2)} s` : ''}`);
      return sample;
    } finally {
      await release(e);
    }
  });
  const result: CaseResult = { id, title, network, work: describe(f), tools: {} };
  for (const tool of tools) result.tools[tool] = series(samples[tool], commands[tool] ?? '');
  return result;
}

function ms(c: CaseResult, tool: Tool): number {
  return c.tools[tool]?.medianMs ?? NaN;
}

/**
 * What bounds a WAN-like ratio on this machine: the raw copy (no verification, every blob at
 * once, the fewest requests) against skopeo in the same rounds. No tool that verifies what it
 * copies can beat the raw copy, so where raw / skopeo is above a target, that target is out of
 * reach here, whatever the tool does; the proxies' CPU (they relay every byte twice, on the
 * same two cores as both registries and the tool) says why.
 */
function wanBound(c: CaseResult, target: number): string {
  const raw = ratio(ms(c, 'raw'), ms(c, 'skopeo'));
  const proxy = c.tools.raw?.medianProxyCpuMs;
  const tool = c.tools.raw?.medianCpuMs;
  return `${c.title}: the raw limit itself runs at ${raw.toFixed(2)} x skopeo (target for ocirelay: <= ${target})${raw > target ? ', so the target is out of reach on this machine' : ''}; during the raw copy the two latency proxies used ${proxy !== undefined ? `${(proxy / 1000).toFixed(2)} s` : '?'} of CPU, the raw copy itself ${tool !== undefined ? `${(tool / 1000).toFixed(2)} s` : '?'}, of the ${ms(c, 'raw') > 0 ? `${(ms(c, 'raw') / 1000).toFixed(2)} s x 2 cores` : '?'} there are.`;
}

// ---------------------------------------------------------------------------------------------
// 1. Cold copy, 6 x 40 MiB

async function cold(ctx: BenchContext): Promise<Omit<TargetResult, 'key' | 'ranAt' | 'rounds'>> {
  const f = await fixture(ctx, 'bench/cold', { platforms: [PLATFORMS[0]!], layers: Array(6).fill(40 * MiB) });
  const loop = await measureCopy(ctx, 'cold/loopback', 'cold copy, loopback', f, 'loopback', ['ocirelay', 'skopeo', 'raw']);
  const wan = await measureCopy(ctx, 'cold/wan', `cold copy, WAN-like (+${ctx.latencyMs} ms per request)`, f, 'wan', ['ocirelay', 'skopeo', 'raw']);
  return {
    title: TARGET_TITLES.cold,
    cases: [loop, wan],
    checks: [
      check('loopback: ocirelay / skopeo', ratio(ms(loop, 'ocirelay'), ms(loop, 'skopeo')), 1.0, 'x'),
      check('loopback: ocirelay / raw limit', ratio(ms(loop, 'ocirelay'), ms(loop, 'raw')), 1.1, 'x'),
      check('WAN-like: ocirelay / skopeo', ratio(ms(wan, 'ocirelay'), ms(wan, 'skopeo')), 0.8, 'x'),
    ],
    notes: [`loopback: the raw limit runs at ${ratio(ms(loop, 'raw'), ms(loop, 'skopeo')).toFixed(2)} x skopeo.`, wanBound(wan, 0.8)],
  };
}

// 2. Cold copy of a 4-platform index, 3 x 20 MiB per platform

async function index(ctx: BenchContext): Promise<Omit<TargetResult, 'key' | 'ranAt' | 'rounds'>> {
  const f = await fixture(ctx, 'bench/index', { platforms: PLATFORMS.slice(0, 4), layers: Array(3).fill(20 * MiB), index: true });
  const loop = await measureCopy(ctx, 'index/loopback', 'index copy, loopback', f, 'loopback', ['ocirelay', 'skopeo', 'raw']);
  const wan = await measureCopy(ctx, 'index/wan', `index copy, WAN-like (+${ctx.latencyMs} ms per request)`, f, 'wan', ['ocirelay', 'skopeo', 'raw']);
  return {
    title: TARGET_TITLES.index,
    cases: [loop, wan],
    checks: [check('loopback: ocirelay / skopeo', ratio(ms(loop, 'ocirelay'), ms(loop, 'skopeo')), 1.0, 'x'), check('WAN-like: ocirelay / skopeo', ratio(ms(wan, 'ocirelay'), ms(wan, 'skopeo')), 0.5, 'x')],
    notes: [`loopback: the raw limit runs at ${ratio(ms(loop, 'raw'), ms(loop, 'skopeo')).toFixed(2)} x skopeo, ocirelay at ${ratio(ms(loop, 'ocirelay'), ms(loop, 'raw')).toFixed(2)} x the raw limit.`, wanBound(wan, 0.5)],
  };
}

// 3. No-op re-copy

async function noop(ctx: BenchContext): Promise<Omit<TargetResult, 'key' | 'ranAt' | 'rounds'>> {
  const f = await fixture(ctx, 'bench/cold', { platforms: [PLATFORMS[0]!], layers: Array(6).fill(40 * MiB) });
  const cases: CaseResult[] = [];
  for (const network of ['loopback', 'wan'] as const) {
    const commands: Partial<Record<Tool, string>> = {};
    const samples = await alternate(ctx.rounds, ['ocirelay', 'skopeo'] as const, async (tool) => {
      // Counted on loopback too (through 0 ms proxies): the request count is the target there as well.
      const e = await endpoints(ctx, network, true);
      try {
        // The target already holds the image (copied in this process, straight between the registries).
        const pool = new RegistryPool();
        try {
          await copyImage({ source: `${ctx.source.host}/${f.repository}:${f.tag}`, target: `${e.target.host}/${f.repository}:${f.tag}` }, { registries: pool });
        } finally {
          await pool.close();
        }
        for (const p of e.proxies) p.requests.length = 0;
        // Let the target registry finish with the 240 MiB it just received (and this process with
        // its garbage) before the measured run, whichever tool it is.
        await new Promise((resolve) => setTimeout(resolve, 500));
        const run = copyRun(ctx, tool, f, e);
        commands[tool] ??= displayCommand(run);
        const r = await runTool(run);
        await expectDigest(e.target.url, f.repository, f.tag, f.digest, tool);
        const sample = counted({ ms: r.ms, rssKiB: r.rssKiB, cpuMs: r.cpuMs }, e);
        log(`noop/${network} ${tool}: ${(r.ms / 1000).toFixed(3)} s, ${sample.requests} requests ${JSON.stringify(sample.kinds)}`);
        return sample;
      } finally {
        await release(e);
      }
    });
    const c: CaseResult = { id: `noop/${network}`, title: network === 'wan' ? `no-op re-copy, WAN-like (+${ctx.latencyMs} ms per request)` : 'no-op re-copy, loopback (through 0 ms counting proxies)', network, work: describe(f), tools: {} };
    for (const tool of ['ocirelay', 'skopeo'] as const) c.tools[tool] = series(samples[tool], commands[tool] ?? '');
    cases.push(c);
  }
  const [loop, wan] = cases as [CaseResult, CaseResult];
  const maxRequests = Math.max(...cases.flatMap((c) => (c.tools.ocirelay?.samples ?? []).map((s) => s.requests ?? Infinity)));
  // The floor of any Node.js command here: an empty process (start and exit), plus the one
  // delayed round trip a no-op must make (both HEADs go out at once). Measured in the same run.
  const empty: number[] = [];
  for (let i = 0; i < Math.max(ctx.rounds, 5); i++) empty.push((await timed(process.execPath, ['-e', '0'])).ms);
  const emptyMs = median(empty);
  const floorRatio = ratio(emptyMs + ctx.latencyMs, ms(wan, 'skopeo'));
  wan.extra = { emptyNodeProcessMs: Math.round(emptyMs), floorMs: Math.round(emptyMs + ctx.latencyMs), floorRatio: Math.round(floorRatio * 100) / 100 };
  return {
    title: TARGET_TITLES.noop,
    cases,
    checks: [check('ocirelay HTTP requests (most in any run)', maxRequests, 2, 'requests'), check('WAN-like: ocirelay / skopeo', ratio(ms(wan, 'ocirelay'), ms(wan, 'skopeo')), 0.2, 'x')],
    notes: [
      `loopback ratio (not a target): ${ratio(ms(loop, 'ocirelay'), ms(loop, 'skopeo')).toFixed(2)}`,
      `The floor of any Node.js command on this machine: an empty \`node -e 0\` takes ${emptyMs.toFixed(0)} ms (median of ${empty.length}), plus one delayed round trip (${ctx.latencyMs} ms) = ${(emptyMs + ctx.latencyMs).toFixed(0)} ms, which is ${floorRatio.toFixed(2)} x skopeo's WAN-like no-op${floorRatio > 0.2 ? ': the 0.2 target is out of reach for a Node.js process here, whatever it loads' : ''}; ocirelay takes ${(ms(wan, 'ocirelay') - emptyMs - ctx.latencyMs).toFixed(0)} ms over that floor.`,
    ],
  };
}

// 4. Bulk: 100 tags across 20 repositories

const BULK_REPOS = 20;
const BULK_TAGS = 5;

interface BulkFixture {
  repositories: string[];
  digests: Map<string, string>;
  blobs: number;
  bytes: number;
}

let bulkFixture: Promise<BulkFixture> | undefined;

function bulkImages(ctx: BenchContext): Promise<BulkFixture> {
  bulkFixture ??= (async () => {
    const started = performance.now();
    const repositories = Array.from({ length: BULK_REPOS }, (_, i) => `bulk/r${String(i).padStart(2, '0')}`);
    const digests = new Map<string, string>();
    let blobs = 0;
    let bytes = 0;
    for (const repository of repositories) {
      await Promise.all(
        Array.from({ length: BULK_TAGS }, async (_, t) => {
          // Small images: two layers (64 KiB and 16 KiB of random payload) and a config.
          const f = await pushImage(ctx.source.host, repository, `v1.${t}.0`, { platforms: [PLATFORMS[0]!], layers: [64 * 1024, 16 * 1024] });
          digests.set(`${repository}:v1.${t}.0`, f.digest);
          blobs += f.blobs;
          bytes += f.bytes;
        }),
      );
    }
    log(`fixture bulk: ${repositories.length} repositories, ${digests.size} tags, ${blobs} blobs, ${(bytes / MiB).toFixed(1)} MiB, pushed in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    return { repositories, digests, blobs, bytes };
  })();
  return bulkFixture;
}

async function bulk(ctx: BenchContext): Promise<Omit<TargetResult, 'key' | 'ranAt' | 'rounds'>> {
  const b = await bulkImages(ctx);
  const cases: CaseResult[] = [];
  for (const network of ['loopback', 'wan'] as const) {
    const commands: Partial<Record<Tool, string>> = {};
    const samples = await alternate(ctx.rounds, ['ocirelay', 'skopeo'] as const, async (tool) => {
      const e = await endpoints(ctx, network);
      const dir = await mkdtemp(join(tmpdir(), 'ocirelay-bench-sync-'));
      try {
        let run: ToolRun;
        if (tool === 'ocirelay') {
          const rules = join(dir, 'rules.yaml');
          await writeFile(rules, `rules:\n  - name: bulk\n    from: ${e.src}/bulk\n    to: ${e.dst}/bulk\n`);
          run = ocirelay(['sync', rules], {}, ctx.nodeFlags);
        } else {
          const yaml = join(dir, 'sync.yaml');
          await writeFile(yaml, `${e.src}:\n  tls-verify: false\n  images:\n${b.repositories.map((r) => `    ${r}: []`).join('\n')}\n`);
          run = skopeo(['sync', '--src', 'yaml', '--dest', 'docker', '--dest-tls-verify=false', '--preserve-digests', yaml, `${e.dst}/bulk`]);
        }
        commands[tool] ??= displayCommand(run).replace(/\/tmp\/ocirelay-bench-sync-[^/]+/, '$TMP');
        const r = await runTool(run);
        await Promise.all([...b.digests].map(([ref, digest]) => expectDigest(e.target.url, ref.split(':')[0] as string, ref.split(':')[1] as string, digest, tool)));
        const sample = counted({ ms: r.ms, rssKiB: r.rssKiB, cpuMs: r.cpuMs }, e);
        log(`bulk/${network} ${tool}: ${(r.ms / 1000).toFixed(3)} s${sample.requests !== undefined ? `, ${sample.requests} requests` : ''}`);
        return sample;
      } finally {
        await rm(dir, { recursive: true, force: true });
        await release(e);
      }
    });
    const c: CaseResult = { id: `bulk/${network}`, title: network === 'wan' ? `sync, WAN-like (+${ctx.latencyMs} ms per request)` : 'sync, loopback', network, work: `${b.digests.size} tags in ${b.repositories.length} repositories, ${b.blobs} blobs, ${(b.bytes / MiB).toFixed(1)} MiB`, tools: {} };
    for (const tool of ['ocirelay', 'skopeo'] as const) c.tools[tool] = series(samples[tool], commands[tool] ?? '');
    cases.push(c);
  }
  const [loop, wan] = cases as [CaseResult, CaseResult];
  return {
    title: TARGET_TITLES.bulk,
    cases,
    checks: [check('loopback: ocirelay / skopeo', ratio(ms(loop, 'ocirelay'), ms(loop, 'skopeo')), 0.5, 'x'), check('WAN-like: ocirelay / skopeo', ratio(ms(wan, 'ocirelay'), ms(wan, 'skopeo')), 0.3, 'x')],
    notes: [],
  };
}

// 5. Memory: one 1 GiB layer

const GiB_LAYER: ImageSpec = { platforms: [PLATFORMS[0]!], layers: [1024 * MiB] };
const RSS_LIMIT_MIB = 150;

async function memory(ctx: BenchContext): Promise<Omit<TargetResult, 'key' | 'ranAt' | 'rounds'>> {
  const f = await fixture(ctx, 'bench/layer-1g', GiB_LAYER);
  const copy = await measureCopy(ctx, 'memory/copy', 'copy, one 1 GiB layer, loopback', f, 'loopback', ['ocirelay', 'skopeo']);
  const source = `${ctx.source.host}/${f.repository}:${f.tag}`;
  const dir = await mkdtemp(join(tmpdir(), 'ocirelay-bench-export-'));
  let s3: RunningS3 | undefined;
  try {
    // To a file; skopeo's nearest equivalent (an oci-archive) as a reference, not a target.
    const fileCommands: Partial<Record<Tool, string>> = {};
    let n = 0;
    const fileSamples = await alternate(ctx.rounds, ['ocirelay', 'skopeo'] as const, async (tool) => {
      const file = join(dir, `export-${n++}.tar`);
      const run = tool === 'ocirelay' ? ocirelay(['export', '--quiet', source, '--to', file], {}, ctx.nodeFlags) : skopeo(['copy', '--quiet', '--src-tls-verify=false', `docker://${source}`, `oci-archive:${file}`]);
      fileCommands[tool] ??= displayCommand(run).replace(/\/tmp\/ocirelay-bench-export-[^/]+/, '$TMP');
      const r = await runTool(run);
      const size = statSync(file).size;
      if (size < f.bytes) throw new Error(`${tool}: the archive has ${size} bytes, fewer than the image's ${f.bytes}`);
      await rm(file, { force: true });
      log(`memory/export-file ${tool}: ${(r.ms / 1000).toFixed(3)} s, ${(r.rssKiB / 1024).toFixed(0)} MiB`);
      return { ms: r.ms, rssKiB: r.rssKiB, cpuMs: r.cpuMs };
    });
    const toFile: CaseResult = { id: 'memory/export-file', title: 'export to a file (skopeo: copy to oci-archive, for reference)', network: 'loopback', work: describe(f), tools: {} };
    for (const tool of ['ocirelay', 'skopeo'] as const) toFile.tools[tool] = series(fileSamples[tool], fileCommands[tool] ?? '');

    s3 = await startS3({ bucket: 'bench-exports' });
    const s3Samples: Sample[] = [];
    let s3Command = '';
    for (let round = 0; round < ctx.rounds; round++) {
      const run = ocirelay(['export', '--quiet', '--json', source, '--to', `s3://${s3.bucket}/export-${round}.tar`], s3.env, ctx.nodeFlags);
      s3Command ||= `${Object.entries(s3.env).map(([k, v]) => `${k}=${k.includes('SECRET') ? '***' : v.replace(/\d+$/, 'PORT')}`).join(' ')} ${displayCommand(run)}`;
      const r = await runTool(run);
      const out = JSON.parse(r.stdout) as { bytes: number };
      if (out.bytes < f.bytes) throw new Error(`export to S3 wrote ${out.bytes} bytes`);
      log(`memory/export-s3 ocirelay: ${(r.ms / 1000).toFixed(3)} s, ${(r.rssKiB / 1024).toFixed(0)} MiB`);
      s3Samples.push({ ms: r.ms, rssKiB: r.rssKiB, cpuMs: r.cpuMs });
    }
    const toS3: CaseResult = { id: 'memory/export-s3', title: 'export to S3 (s3rver, multipart)', network: 'loopback', work: describe(f), tools: { ocirelay: series(s3Samples, s3Command) } };
    return {
      title: TARGET_TITLES.memory,
      cases: [copy, toFile, toS3],
      checks: [
        check('copy: ocirelay peak RSS (largest run)', copy.tools.ocirelay?.maxRssMiB ?? NaN, RSS_LIMIT_MIB, 'MiB'),
        check('export to file: ocirelay peak RSS (largest run)', toFile.tools.ocirelay?.maxRssMiB ?? NaN, RSS_LIMIT_MIB, 'MiB'),
        check('export to S3: ocirelay peak RSS (largest run)', toS3.tools.ocirelay?.maxRssMiB ?? NaN, RSS_LIMIT_MIB, 'MiB'),
      ],
      notes: [],
    };
  } finally {
    await s3?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

// 6. Lambda readiness

/**
 * Time from `import()` of a bundle to its module being evaluated, in a fresh node process. Budget:
 * 300 ms on this machine. Lambda's init phase has 10 s, but a cold start is felt by every event
 * after an idle period; 300 ms is what a bundle of about 1.5 MiB of minified code plus the AWS
 * SDK clients it imports from the runtime costs here, with room for some growth, and far below
 * what loading the SDK bundled (several MiB) or a CLI-only dependency by mistake would cost.
 */
export const IMPORT_BUDGET_MS = 300;

async function lambda(ctx: BenchContext): Promise<Omit<TargetResult, 'key' | 'ranAt' | 'rounds'>> {
  // The shared bundling options (another engineer's infra/bundling.ts), exactly what CDK bundles with.
  const bundling = await import('../infra/bundling.js');
  const { build } = await import('esbuild');
  const outRoot = join(PROJECT_ROOT, 'node_modules', '.cache', 'ocirelay-bench', 'bundles');
  await rm(outRoot, { recursive: true, force: true });
  const cases: CaseResult[] = [];
  const checks: Check[] = [];
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'en_US.UTF-8', TZ: ':UTC', AWS_REGION: 'eu-west-1', AWS_DEFAULT_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'AKIAOCIRELAYBENCH', AWS_SECRET_ACCESS_KEY: 'bench-not-a-secret', NODE_NO_WARNINGS: '1' };
  const baseline = await alternate(Math.max(ctx.rounds, 5), ['empty'] as const, async () => {
    const r = await timed(process.execPath, ['--input-type=module', '-e', 'process.stdout.write("{}")'], { env, cwd: tmpdir() });
    return { ms: r.ms, rssKiB: r.rssKiB, cpuMs: r.cpuMs };
  });
  for (const name of bundling.FUNCTION_NAMES) {
    const file = join(outRoot, name, bundling.BUNDLE_FILE);
    const started = performance.now();
    const result = await build({ ...bundling.ESBUILD_OPTIONS, entryPoints: [bundling.entryOf(name)], outfile: file, absWorkingDir: PROJECT_ROOT, metafile: true, logLevel: 'error' });
    const buildMs = performance.now() - started;
    if (result.errors.length) throw new Error(`bundling ${name}: ${result.errors.map((e) => e.text).join('; ')}`);
    const size = statSync(file).size;
    const script = `const t0 = performance.now(); const m = await import(${JSON.stringify(pathToFileURL(file).href)}); const t1 = performance.now(); if (typeof m.handler !== 'function') process.exit(3); process.stdout.write(JSON.stringify({ importMs: t1 - t0, rss: process.memoryUsage().rss }));`;
    const imports: number[] = [];
    const runs = await alternate(Math.max(ctx.rounds, 5), [name] as const, async () => {
      const r = await timed(process.execPath, ['--input-type=module', '-e', script], { env, cwd: tmpdir() });
      imports.push((JSON.parse(r.stdout) as { importMs: number }).importMs);
      return { ms: r.ms, rssKiB: r.rssKiB, cpuMs: r.cpuMs };
    });
    const importMs = median(imports);
    const budget = bundling.BUNDLE_BUDGET_BYTES[name];
    log(`lambda ${name}: ${(size / 1024).toFixed(0)} KiB (budget ${(budget / 1024).toFixed(0)} KiB), import ${importMs.toFixed(0)} ms, process ${median(runs[name].map((s) => s.ms)).toFixed(0)} ms`);
    cases.push({
      id: `lambda/${name}`,
      title: name,
      network: '-',
      work: bundling.FUNCTIONS[name],
      tools: { ocirelay: series(runs[name], `node --input-type=module -e 'await import("${join('node_modules/.cache/ocirelay-bench/bundles', name, bundling.BUNDLE_FILE)}")'`) },
      extra: { bundleKiB: Math.round(size / 102.4) / 10, budgetKiB: budget / 1024, buildMs: Math.round(buildMs), importMs: Math.round(importMs * 10) / 10, processMs: Math.round(median(runs[name].map((s) => s.ms))), emptyProcessMs: Math.round(median(baseline.empty.map((s) => s.ms))) },
    });
    checks.push(check(`${name}: bundle size`, Math.round(size / 1024), Math.round(budget / 1024), 'KiB'));
    checks.push(check(`${name}: import in a fresh process`, Math.round(importMs), IMPORT_BUDGET_MS, 'ms'));
  }
  return {
    title: TARGET_TITLES.lambda,
    cases,
    checks,
    notes: [
      'Bundled with esbuild using ESBUILD_OPTIONS from infra/bundling.ts (the options the CDK construct uses); size budgets are BUNDLE_BUDGET_BYTES from the same file.',
      `Import time: performance.now() around \`await import(bundle)\` in a fresh \`node\` process (median of ${Math.max(ctx.rounds, 5)}), cwd outside the project, the AWS SDK resolved from node_modules as the Lambda runtime provides it; budget ${IMPORT_BUDGET_MS} ms (see IMPORT_BUDGET_MS in bench/targets.ts). An empty node process takes ${Math.round(median(baseline.empty.map((s) => s.ms)))} ms here.`,
    ],
  };
}

// 7. Scaling

async function scaling(ctx: BenchContext): Promise<Omit<TargetResult, 'key' | 'ranAt' | 'rounds'>> {
  const cases: CaseResult[] = [];
  const perPlatform = [8 * MiB, 8 * MiB];
  for (const n of [1, 4, 16]) {
    const f = await fixture(ctx, `bench/platforms-${n}`, { platforms: PLATFORMS.slice(0, n), layers: perPlatform, index: true });
    cases.push(await measureCopy(ctx, `scaling/platforms-${n}`, `${n} platform${n > 1 ? 's' : ''} (index; 2 x 8 MiB each)`, f, 'loopback', ['ocirelay', 'skopeo']));
  }
  for (const [label, size] of [['10 MiB', 10 * MiB], ['100 MiB', 100 * MiB], ['1 GiB', 1024 * MiB]] as const) {
    const f = size === 1024 * MiB ? await fixture(ctx, 'bench/layer-1g', GiB_LAYER) : await fixture(ctx, `bench/layer-${size / MiB}m`, { platforms: [PLATFORMS[0]!], layers: [size] });
    cases.push(await measureCopy(ctx, `scaling/layer-${label.replace(' ', '').toLowerCase()}`, `one layer of ${label}`, f, 'loopback', ['ocirelay', 'skopeo']));
  }
  const t = (id: string): number => ms(cases.find((c) => c.id === id) as CaseResult, 'ocirelay');
  const rss = (id: string): number => (cases.find((c) => c.id === id) as CaseResult).tools.ocirelay?.maxRssMiB ?? NaN;
  // Linear time: the marginal cost per platform (4 -> 16) and per MiB (100 MiB -> 1 GiB) no more than 1.25x the average cost up to there.
  const perPlatform4 = t('scaling/platforms-4') / 4;
  const marginal16 = (t('scaling/platforms-16') - t('scaling/platforms-4')) / 12;
  const perMiB100 = t('scaling/layer-100mib') / 100;
  const marginal1g = (t('scaling/layer-1gib') - t('scaling/layer-100mib')) / 924;
  return {
    title: TARGET_TITLES.scaling,
    cases,
    checks: [
      check('time per platform, 4 -> 16 (marginal / average up to 4)', ratio(marginal16, perPlatform4), 1.25, 'x'),
      check('time per MiB, 100 MiB -> 1 GiB (marginal / average up to 100 MiB)', ratio(marginal1g, perMiB100), 1.25, 'x'),
      // Marginal, like the time checks: from 4 to 16 platforms (4x the blobs) and from 100 MiB to
      // 1 GiB (10x the bytes). Below those sizes a copy ends before its buffers and the V8 heap
      // have filled to their working size (a 10 MiB copy ends at ~70 MiB RSS, any copy of 100 MiB
      // or more plateaus near 100 MiB), which is warm-up, not growth with the work.
      check('peak RSS growth, 4 -> 16 platforms', rss('scaling/platforms-16') - rss('scaling/platforms-4'), 32, 'MiB'),
      check('peak RSS growth, 100 MiB -> 1 GiB layer', rss('scaling/layer-1gib') - rss('scaling/layer-100mib'), 32, 'MiB'),
    ],
    notes: [
      'Time is expected to grow linearly with the work and memory to stay flat; the checks compare marginal costs with average ones, and RSS at the largest size with a size already past warm-up.',
      `Peak RSS (largest run) from the smallest size to the largest, warm-up included: 1 -> 16 platforms ${(rss('scaling/platforms-16') - rss('scaling/platforms-1')).toFixed(1)} MiB, 10 MiB -> 1 GiB ${(rss('scaling/layer-1gib') - rss('scaling/layer-10mib')).toFixed(1)} MiB.`,
    ],
  };
}

export const TARGETS: Record<TargetKey, (ctx: BenchContext) => Promise<Omit<TargetResult, 'key' | 'ranAt' | 'rounds'>>> = { cold, index, noop, bulk, memory, lambda, scaling };
