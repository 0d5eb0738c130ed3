// Shared plumbing for the test support layer: temp dirs, free ports, child processes that die
// with the test process, readiness polling. Nothing here sleeps for synchronisation: waits are
// either on events or on a 50 ms poll with a deadline.
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// ---------------------------------------------------------------------------------------------
// Process-exit cleanup: every child process group and temp dir created through this module is
// killed / removed synchronously when the test process exits, whatever the reason.

const liveGroups = new Set<number>();
const liveDirs = new Set<string>();
let hooksInstalled = false;

function cleanupSync(): void {
  for (const pid of liveGroups) {
    killGroupSync(pid, 'SIGKILL');
  }
  liveGroups.clear();
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort at exit
    }
  }
  liveDirs.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanupSync();
      process.removeListener(signal, onSignal);
      // Somebody else (node:test's harness, for one) handles the signal: let them. Otherwise
      // restore the default behaviour (terminate with that signal).
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

function killGroupSync(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal); // the whole process group (children are spawned detached)
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** A fresh directory under os.tmpdir(), removed at process exit unless removed earlier. */
export function makeTempDir(prefix: string): string {
  installHooks();
  const dir = mkdtempSync(join(tmpdir(), `ocirelay-${prefix}-`));
  liveDirs.add(dir);
  return dir;
}

/** Removes a directory made by makeTempDir (idempotent). */
export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}

/** A TCP port that was free on 127.0.0.1 a moment ago (bind port 0, read it, close). */
/**
 * Starts a server on a port found free. Another process may take that port between the check and
 * the server's bind (tests run in parallel), so a start that fails because the address is in use
 * (its error says so, with the server's output) is tried again on a new port.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>, attempts = 5): Promise<T> {
  let last: unknown;
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      return await start(await freePort());
    } catch (err) {
      last = err;
      if (!/EADDRINUSE|address already in use/i.test((err as Error)?.message ?? '')) throw err;
    }
  }
  throw last;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Managed child processes

export interface ManagedProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves when the process has exited (code or signal). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True once the process has exited. */
  hasExited(): boolean;
  /** The last `maxOutput` bytes of stdout+stderr, interleaved as they arrived. */
  output(): string;
  /** SIGKILLs the process group and waits for the exit; idempotent. */
  kill(): Promise<void>;
}

export interface SpawnOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  maxOutput?: number;
}

/**
 * Spawns a long-running server in its own process group. The child does not keep the event loop
 * alive (a forgotten stop() cannot hang a test file) and is killed when this process exits.
 */
export function spawnManaged(command: string, args: string[], options: SpawnOptions = {}): ManagedProcess {
  installHooks();
  const maxOutput = options.maxOutput ?? 64 * 1024;
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let chunks: Buffer[] = [];
  let size = 0;
  const onData = (chunk: Buffer): void => {
    chunks.push(chunk);
    size += chunk.length;
    if (size > 2 * maxOutput) {
      const all = Buffer.concat(chunks);
      chunks = [all.subarray(all.length - maxOutput)];
      size = maxOutput;
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);

  let exitedFlag = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedFlag = true;
      if (child.pid !== undefined) liveGroups.delete(child.pid);
      resolve({ code, signal });
    });
    child.once('error', (err) => {
      exitedFlag = true;
      onData(Buffer.from(`spawn ${command} failed: ${err.message}\n`));
      if (child.pid !== undefined) liveGroups.delete(child.pid);
      resolve({ code: null, signal: null });
    });
  });
  if (child.pid !== undefined) liveGroups.add(child.pid);
  child.unref();
  for (const stream of [child.stdout, child.stderr]) {
    (stream as unknown as { unref?: () => void } | null)?.unref?.();
  }

  let killing: Promise<void> | undefined;
  return {
    child,
    pid: child.pid ?? -1,
    exited,
    hasExited: () => exitedFlag,
    output: () => {
      const all = Buffer.concat(chunks).toString('utf8');
      return all.length > maxOutput ? all.slice(all.length - maxOutput) : all;
    },
    kill: () => {
      killing ??= (async () => {
        if (!exitedFlag && child.pid !== undefined) {
          child.ref(); // keep the loop alive until we have seen the exit
          killGroupSync(child.pid, 'SIGKILL');
          await exited;
        }
      })();
      return killing;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// One-shot commands

export interface RunResult {
  stdout: Buffer;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    message: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

/**
 * Runs a command to completion, resolving with its output; rejects with a CommandError carrying
 * stderr. `displayArgs` is what goes into the error message (for redacting secrets).
 */
export function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; displayArgs?: string[] } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      {
        cwd: options.cwd,
        env: options.env ?? process.env,
        encoding: 'buffer',
        maxBuffer: 256 * 1024 * 1024,
        timeout: options.timeoutMs ?? 120_000,
        killSignal: 'SIGKILL',
      },
      (error, stdout, stderr) => {
        const stderrText = stderr.toString('utf8');
        if (error) {
          const shown = [command, ...(options.displayArgs ?? args)].join(' ');
          const code = typeof error.code === 'number' ? error.code : null;
          const why = error.killed ? 'timed out' : `exit ${code ?? error.signal ?? error.code}`;
          reject(new CommandError(`${shown} failed (${why}): ${stderrText.trim() || error.message}`, code, stderrText));
          return;
        }
        resolve({ stdout, stderr: stderrText });
      },
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Polling

/**
 * Calls `probe` every `intervalMs` (default 50) until it returns a value other than undefined,
 * or rejects once `timeoutMs` (default 10 s) has passed. `abort` may throw to stop early (e.g.
 * when the server process died).
 */
export async function pollUntil<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  options: { timeoutMs?: number; intervalMs?: number; what?: string; abort?: () => void } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    options.abort?.();
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    options.abort?.();
    if (Date.now() >= deadline) {
      const detail = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${options.what ?? 'condition'}${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Last `lines` lines of a text, for error messages. */
export function tail(text: string, lines = 20): string {
  const all = text.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}
