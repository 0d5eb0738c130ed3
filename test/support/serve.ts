// `ocirelay serve` started as a user starts it (node dist/cli/bin.js, compiled by test/run.mjs),
// listening on 127.0.0.1, and ready once /healthz answers.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort, pollUntil } from './process.js';

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
  const port = options.port ?? (await freePort());
  const child = spawn(process.execPath, [BIN, 'serve', '--rules', options.rules, '--listen', `127.0.0.1:${port}`, ...(options.args ?? [])], { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  await pollUntil(async () => ((await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200 ? true : undefined), {
    what: options.what ?? 'ocirelay serve',
    timeoutMs: 15_000,
    abort: () => {
      if (child.exitCode !== null) throw new Error(`ocirelay serve exited with ${child.exitCode}:\n${output}`);
    },
  });
  return { port, url, child, output: () => output, exited };
}
