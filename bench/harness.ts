// Measuring one process: wall time (spawn to exit, as the bench process sees it, so process start
// is included for every tool alike), peak RSS of the whole process, exit status and output.
//
// Peak RSS: GNU time (`/usr/bin/time`, Debian package `time`) wraps the command and reports the
// kernel's ru_maxrss of it (`-f %M`, the very "Maximum resident set size" line `-v` prints), which
// is exact and costs nothing inside the measured process. Without GNU time the bench falls back
// to sampling /proc/<pid>/status VmHWM (the kernel's own high-water mark) every 10 ms while the
// process runs; the last sample before exit is within one interval of the end.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { skopeoEnv } from '../test/support/fixtures.js';

export const GNU_TIME = '/usr/bin/time';
export const HAS_GNU_TIME = existsSync(GNU_TIME);
export const RSS_METHOD = HAS_GNU_TIME ? 'GNU time ru_maxrss (/usr/bin/time -f %M)' : '/proc/<pid>/status VmHWM sampled every 10 ms';

export interface ProcessResult {
  ms: number;
  rssKiB: number;
  /** User + system CPU time of the process (GNU time only; 0 otherwise). */
  cpuMs: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

export class ProcessFailed extends Error {
  constructor(readonly command: string, readonly result: ProcessResult) {
    super(`${command} exited ${result.code}: ${result.stderr.trim().split('\n').slice(-8).join('\n') || result.stdout.trim().slice(-2000)}`);
  }
}

/** Runs `command args` to completion, timed; rejects with ProcessFailed on a non-zero exit unless `allowFailure`. */
export async function timed(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; allowFailure?: boolean; timeoutMs?: number } = {}): Promise<ProcessResult> {
  const scratch = mkdtempSync(join(tmpdir(), 'ocirelay-bench-time-'));
  const timeFile = join(scratch, 'time.txt');
  const [cmd, argv] = HAS_GNU_TIME ? [GNU_TIME, ['-o', timeFile, '-f', '%M %U %S', command, ...args]] : [command, args];
  try {
    const started = performance.now();
    const child = spawn(cmd, argv, { env: options.env ?? process.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    let sampled = 0;
    let sampler: NodeJS.Timeout | undefined;
    if (!HAS_GNU_TIME && child.pid !== undefined) {
      const status = `/proc/${child.pid}/status`;
      sampler = setInterval(() => {
        try {
          const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(status, 'utf8'));
          if (match) sampled = Math.max(sampled, Number(match[1]));
        } catch {
          // exited
        }
      }, 10);
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 600_000);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c) => resolve(c));
    });
    const ms = performance.now() - started;
    clearTimeout(timer);
    if (sampler) clearInterval(sampler);
    let rssKiB = sampled;
    let cpuMs = 0;
    if (HAS_GNU_TIME) {
      const lines = (await readFile(timeFile, 'utf8').catch(() => '')).trim().split('\n');
      const [rss, user, sys] = (lines[lines.length - 1] ?? '').split(' ').map(Number);
      rssKiB = rss || 0;
      cpuMs = ((user ?? 0) + (sys ?? 0)) * 1000;
    }
    const result: ProcessResult = { ms, rssKiB, cpuMs, code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
    if (code !== 0 && !options.allowFailure) throw new ProcessFailed([command, ...args].join(' '), result);
    return result;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The tools

export const PROJECT_ROOT = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
export const OCIRELAY_BIN = join(PROJECT_ROOT, 'dist', 'cli', 'bin.js');

/** An empty Docker config, so no credentials of the machine are read or sent. */
const dockerConfigDir = mkdtempSync(join(tmpdir(), 'ocirelay-bench-docker-'));
process.on('exit', () => rmSync(dockerConfigDir, { recursive: true, force: true }));

export interface ToolRun {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Called after the run (success or not): removes scratch state. */
  cleanup(): void;
}

/** `node dist/cli/bin.js ARGS`: the bundled CLI (scripts/build.ts), exactly what a user starts. */
export function ocirelay(args: string[], extraEnv: Record<string, string> = {}, nodeFlags: string[] = []): ToolRun {
  return { command: process.execPath, args: [...nodeFlags, OCIRELAY_BIN, ...args], env: { ...process.env, DOCKER_CONFIG: dockerConfigDir, ...extraEnv }, cleanup: () => undefined };
}

export const SKOPEO_BLOB_CACHE = '/var/lib/containers/cache/blob-info-cache-v1.boltdb';

/**
 * skopeo, as cold as test/support/fixtures.ts makes it: `--insecure-policy`, a fresh private
 * home for its blob-info cache, temp files and configuration (as root, containers/image keeps the
 * cache in /var/lib/containers/cache unless it believes it runs rootless, which
 * `_CONTAINERS_ROOTLESS_UID` makes it believe, so $XDG_DATA_HOME is used), and the system-wide
 * cache file deleted before every run as well, as the issue asks.
 */
export function skopeo(args: string[]): ToolRun {
  const home = mkdtempSync(join(tmpdir(), 'ocirelay-bench-skopeo-'));
  try {
    unlinkSync(SKOPEO_BLOB_CACHE);
  } catch {
    // absent
  }
  const env: NodeJS.ProcessEnv = { ...skopeoEnv(home), DOCKER_CONFIG: dockerConfigDir };
  return { command: 'skopeo', args: ['--insecure-policy', '--tmpdir', home, ...args], env, cleanup: () => rmSync(home, { recursive: true, force: true }) };
}

export async function runTool(tool: ToolRun, options: { allowFailure?: boolean; timeoutMs?: number } = {}): Promise<ProcessResult> {
  try {
    return await timed(tool.command, tool.args, { env: tool.env, ...options });
  } finally {
    tool.cleanup();
  }
}

/** How a run is written in BENCHMARKS.md: the command line with scratch paths and ports generalised. */
export function displayCommand(tool: ToolRun): string {
  const args = tool.args.map((a) => a.replace(/^\/tmp\/ocirelay-bench-[^/ ]+/, '$TMP').replace(/127\.0\.0\.1:\d+/g, (m) => m.replace(/\d+$/, 'PORT')));
  const command = tool.command === process.execPath ? 'node' : tool.command;
  return [command, ...args.map((a) => (a.startsWith(PROJECT_ROOT) ? a.slice(PROJECT_ROOT.length + 1) : a))].join(' ');
}

// ---------------------------------------------------------------------------------------------
// Statistics

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export function ratio(a: number, b: number): number {
  return b > 0 ? a / b : NaN;
}

/**
 * Runs `once(tool, round)` for every tool in every round, alternating who goes first: round r
 * starts with tool r mod n, so no tool always runs on a machine warmed (or tired) by another.
 */
export async function alternate<T extends string, R>(rounds: number, tools: readonly T[], once: (tool: T, round: number) => Promise<R>): Promise<Record<T, R[]>> {
  const out = Object.fromEntries(tools.map((t) => [t, [] as R[]])) as Record<T, R[]>;
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < tools.length; i++) {
      const tool = tools[(round + i) % tools.length] as T;
      out[tool].push(await once(tool, round));
    }
  }
  return out;
}

export function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}
