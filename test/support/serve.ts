// `ocirelay serve` started as a user starts it (node dist/cli/bin.js, compiled by test/run.mjs),
// listening on 127.0.0.1 (a port the kernel picks, unless the test names one), and ready once
// /healthz answers.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pollUntil } from './process.js';

const BIN = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

export interface RunningServe {
  port: number;
  url: string;
  child: ChildProcess;
  /** Everything it printed so far, stdout and stderr interleaved. */
  output(): string;
  /** Its exit code, once it has exited and its output is all read. */
  exited: Promise<number | null>;
}

export async function startServe(options: { rules: string; port?: number; args?: readonly string[]; env?: NodeJS.ProcessEnv; what?: string }): Promise<RunningServe> {
  // Without a port of the test's choosing, serve takes one from the kernel (port 0) and says which
  // in its "listening" log line: a port picked free beforehand can be taken by a test running in
  // parallel before serve binds it (seen in CI as EADDRINUSE).
  const child = spawn(process.execPath, [BIN, 'serve', '--rules', options.rules, '--listen', `127.0.0.1:${options.port ?? 0}`, ...(options.args ?? [])], { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const failed = (): void => {
    if (child.exitCode !== null) throw new Error(`ocirelay serve exited with ${child.exitCode}:\n${output}`);
  };
  const what = options.what ?? 'ocirelay serve';
  const port =
    options.port ??
    (await pollUntil(
      () => {
        const listening = output.split('\n').find((line) => line.includes('"listening"'));
        const bound = listening ? /"url":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(listening)?.[1] : undefined;
        return bound ? Number(bound) : undefined;
      },
      { what: `${what} to say where it listens`, timeoutMs: 15_000, abort: failed },
    ));
  const url = `http://127.0.0.1:${port}`;
  await pollUntil(async () => ((await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200 ? true : undefined), { what, timeoutMs: 15_000, abort: failed });
  return { port, url, child, output: () => output, exited };
}
