// A real CNCF distribution 2.8 registry (Debian package docker-registry) per call, on a free
// 127.0.0.1 port with a fresh storage directory.
import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, onFreePort, pollUntil, removeTempDir, run, spawnManaged, tail } from './process.js';
import type { ManagedProcess } from './process.js';
import { startTokenServer } from './token-server.js';
import type { RunningTokenServer, TokenServerOptions } from './token-server.js';

export type RegistryAuth = 'none' | 'basic' | 'token';

export interface RegistryOptions {
  auth?: RegistryAuth; // default 'none'
  /** compatibility: { schema1: { enabled: true } } */
  schema1?: boolean;
  /** Push notifications endpoint. */
  notifications?: { url: string; headers?: Record<string, string[]> };
  /**
   * Options for the token server when auth === 'token'. `users` defaults to {} and always gets
   * the registry's username/password added.
   */
  token?: Partial<TokenServerOptions>;
  username?: string; // default 'ocitest'
  password?: string; // default random
  /** Readiness deadline, default 15 s. */
  startTimeoutMs?: number;
}

export interface RunningRegistry {
  host: string; // '127.0.0.1:PORT'
  url: string; // 'http://127.0.0.1:PORT'
  port: number;
  auth: RegistryAuth;
  username?: string; // basic and token variants
  password?: string;
  /** 'username:password' (skopeo's --creds form), basic and token variants. */
  creds?: string;
  tokenServer?: RunningTokenServer;
  dataDir: string;
  /** Path of the generated config (YAML-compatible JSON). */
  configPath: string;
  /** Tail of the registry's stdout+stderr so far. */
  logs(): string;
  stop(): Promise<void>;
}

const READY_STATUSES = new Set([200, 401]);

export async function startRegistry(options: RegistryOptions = {}): Promise<RunningRegistry> {
  const auth = options.auth ?? 'none';
  const dir = makeTempDir('registry');
  const dataDir = join(dir, 'data');
  const configPath = join(dir, 'config.yml');
  const withUser = auth !== 'none';
  const username = withUser ? (options.username ?? 'ocitest') : undefined;
  const password = withUser ? (options.password ?? cryptoRandomBytes(12).toString('hex')) : undefined;

  let tokenServer: RunningTokenServer | undefined;
  try {
    const config: Record<string, unknown> = {
      version: '0.1',
      log: { level: 'warn', accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: dataDir },
        delete: { enabled: true },
        cache: { blobdescriptor: 'inmemory' },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: { addr: '', secret: cryptoRandomBytes(16).toString('hex') },
    };
    if (auth === 'basic') {
      const htpasswdPath = join(dir, 'htpasswd');
      const { stdout } = await run('htpasswd', ['-Bbn', username!, password!], {
        displayArgs: ['-Bbn', username!, '***'],
      });
      await writeFile(htpasswdPath, stdout);
      config['auth'] = { htpasswd: { realm: 'test-registry', path: htpasswdPath } };
    } else if (auth === 'token') {
      tokenServer = await startTokenServer({
        ...options.token,
        users: { ...(options.token?.users ?? {}), [username!]: password! },
      });
      config['auth'] = {
        token: {
          realm: tokenServer.realm,
          service: tokenServer.service,
          issuer: tokenServer.issuer,
          rootcertbundle: tokenServer.certPath,
        },
      };
    }
    if (options.schema1) config['compatibility'] = { schema1: { enabled: true } };
    if (options.notifications) {
      config['notifications'] = {
        events: { includereferences: true },
        endpoints: [
          {
            name: 'test',
            url: options.notifications.url,
            headers: options.notifications.headers ?? {},
            timeout: '1s',
            threshold: 5,
            backoff: '1s',
          },
        ],
      };
    }

    return await onFreePort(async (port) => {
      (config['http'] as Record<string, unknown>)['addr'] = `127.0.0.1:${port}`;
      // distribution reads YAML; JSON is YAML.
      await writeFile(configPath, JSON.stringify(config, null, 2));
      const proc = spawnManaged('docker-registry', ['serve', configPath], { cwd: dir });
      const url = `http://127.0.0.1:${port}`;
      try {
        await waitReady(proc, url, options.startTimeoutMs ?? 15_000);
      } catch (err) {
        await proc.kill();
        throw err; // its message carries the registry's output (onFreePort retries "address already in use")
      }
      let stopping: Promise<void> | undefined;
      const ts = tokenServer;
      return {
        host: `127.0.0.1:${port}`,
        url,
        port,
        auth,
        ...(withUser ? { username, password, creds: `${username}:${password}` } : {}),
        ...(ts ? { tokenServer: ts } : {}),
        dataDir,
        configPath,
        logs: () => proc.output(),
        stop() {
          stopping ??= (async () => {
            await proc.kill();
            await ts?.stop();
            await removeTempDir(dir);
          })();
          return stopping;
        },
      };
    });
  } catch (err) {
    await tokenServer?.stop();
    await removeTempDir(dir);
    throw err;
  }
}

async function waitReady(proc: ManagedProcess, url: string, timeoutMs: number): Promise<void> {
  const died = (): void => {
    if (proc.hasExited()) {
      throw new Error(`docker-registry exited during startup:\n${tail(proc.output())}`);
    }
  };
  try {
    await pollUntil(
      async () => {
        const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2_000) });
        await res.arrayBuffer();
        return READY_STATUSES.has(res.status) ? true : undefined;
      },
      { timeoutMs, what: `${url}/v2/`, abort: died },
    );
  } catch (err) {
    const message = (err as Error).message;
    if (message.startsWith('docker-registry exited')) throw err;
    throw new Error(`${message}\nregistry output:\n${tail(proc.output())}`);
  }
}
