/**
 * Where credentials come from. A provider answers "what are the credentials for this registry?";
 * the authenticator decides where they may be sent (only to that registry and its allowed token
 * realms). Providers never log and never put secrets into errors.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, OciRelayError } from '../errors.js';
import { DOCKER_HUB_REGISTRY, normaliseRegistry } from '../ref/index.js';

export interface Credentials {
  username?: string;
  password?: string;
  /** An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token realm. */
  identityToken?: string;
  /** A bearer token to send as is (a registry token from a credential helper). */
  registryToken?: string;
}

export interface CredentialProvider {
  /** Credentials for a normalised registry host (`registry-1.docker.io`, `host:port`), or undefined for anonymous. */
  get(registry: string): Promise<Credentials | undefined>;
}

export const anonymous: CredentialProvider = { get: async () => undefined };

/** Fixed credentials: one pair for every registry, or a map keyed by registry host. */
export function staticCredentials(credentials: Credentials | Record<string, Credentials>): CredentialProvider {
  const single = isCredentials(credentials);
  const byHost = single ? undefined : new Map(Object.entries(credentials).map(([host, c]) => [safeNormalise(host), c]));
  return {
    get: async (registry) => (single ? (credentials as Credentials) : byHost?.get(registry)),
  };
}

/** The first provider that has credentials for a registry wins. */
export function chainCredentials(...providers: CredentialProvider[]): CredentialProvider {
  return {
    get: async (registry) => {
      for (const provider of providers) {
        const found = await provider.get(registry);
        if (found && Object.values(found).some((v) => v !== undefined)) return found;
      }
      return undefined;
    },
  };
}

/** Parses `user:password` (the password may contain ':'); throws a config error without echoing the value. */
export function parseUserPassword(value: string, what = 'credentials'): Credentials {
  const colon = value.indexOf(':');
  if (colon <= 0) throw new OciRelayError(ErrorCodes.Config, `${what} must have the form user:password`);
  return { username: value.slice(0, colon), password: value.slice(colon + 1) };
}

function isCredentials(value: object): value is Credentials {
  // An empty object is an empty host map (no flags given), not one empty pair for every host:
  // taken as a pair, it would shadow every provider after it in a chain (config.json).
  const keys = Object.keys(value);
  return keys.length > 0 && keys.every((k) => ['username', 'password', 'identityToken', 'registryToken'].includes(k));
}

function safeNormalise(host: string): string {
  try {
    return normaliseRegistry(stripScheme(host));
  } catch {
    return host;
  }
}

// ---------------------------------------------------------------------------------------------
// Docker's config.json (docker/cli, cli/config/configfile): `auths` entries keyed by host (or by
// a URL for Docker Hub's legacy `https://index.docker.io/v1/`), each with `auth` (base64 of
// user:password) and/or `identitytoken`; `credHelpers` maps a host to a helper; `credsStore` is
// the helper for every other host. Helpers are `docker-credential-<name>` programs speaking the
// credential-helper protocol: `get` with the server URL on stdin, JSON {Username, Secret} on stdout.

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

const AUTH_ENTRY_FIELDS = ['auth', 'username', 'password', 'identitytoken', 'registrytoken'] as const;

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * What is wrong with a parsed config.json, as `path message`, or undefined when the fields
 * ocirelay reads have the types Docker gives them (every other field is left alone). Checked by
 * hand, not with a schema library, because every CLI start reads this file.
 */
export function dockerConfigProblem(json: unknown): string | undefined {
  if (!isPlainObject(json)) return '(top level) expected an object';
  const { auths, credHelpers, credsStore } = json;
  if (auths !== undefined) {
    if (!isPlainObject(auths)) return 'auths expected an object';
    for (const [host, entry] of Object.entries(auths)) {
      if (!isPlainObject(entry)) return `auths.${host} expected an object`;
      for (const field of AUTH_ENTRY_FIELDS) if (entry[field] !== undefined && typeof entry[field] !== 'string') return `auths.${host}.${field} expected a string`;
    }
  }
  if (credHelpers !== undefined) {
    if (!isPlainObject(credHelpers)) return 'credHelpers expected an object';
    for (const [host, helper] of Object.entries(credHelpers)) if (typeof helper !== 'string') return `credHelpers.${host} expected a string`;
  }
  if (credsStore !== undefined && typeof credsStore !== 'string') return 'credsStore expected a string';
  return undefined;
}

export interface DockerConfigOptions {
  /** The directory holding config.json; default `$DOCKER_CONFIG`, else `~/.docker`. */
  configDir?: string;
  /** Environment to read DOCKER_CONFIG from (tests). */
  env?: NodeJS.ProcessEnv;
  /** How long a credential helper may take. Default 10 s. */
  helperTimeoutMs?: number;
}

/** Docker Hub is stored under its legacy v1 URL by `docker login`. */
const DOCKER_HUB_CONFIG_KEY = 'https://index.docker.io/v1/';

export function dockerConfigCredentials(options: DockerConfigOptions = {}): CredentialProvider {
  const env = options.env ?? process.env;
  const dir = options.configDir ?? env.DOCKER_CONFIG ?? join(homedir(), '.docker');
  const path = join(dir, 'config.json');
  let loaded: Promise<DockerConfig | undefined> | undefined;
  const load = (): Promise<DockerConfig | undefined> => {
    loaded ??= readFile(path, 'utf8').then(
      (text) => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          throw new OciRelayError(ErrorCodes.Config, `${path} is not valid JSON`);
        }
        const problem = dockerConfigProblem(json);
        if (problem) throw new OciRelayError(ErrorCodes.Config, `${path} is not a valid Docker config: ${problem}`);
        return json as DockerConfig;
      },
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw new OciRelayError(ErrorCodes.Config, `cannot read ${path}: ${err.code ?? err.message}`);
      },
    );
    return loaded;
  };
  const cache = new Map<string, Promise<Credentials | undefined>>();

  return {
    get: (registry) => {
      let found = cache.get(registry);
      if (!found) {
        found = (async () => {
          const config = await load();
          if (!config) return undefined;
          const helper = findHelper(config, registry);
          if (helper) {
            const fromHelper = await runCredentialHelper(helper, serverKey(registry), options.helperTimeoutMs ?? 10_000);
            if (fromHelper) return fromHelper;
          }
          return findAuthEntry(config, registry);
        })();
        cache.set(registry, found);
      }
      return found;
    },
  };
}

function serverKey(registry: string): string {
  return registry === DOCKER_HUB_REGISTRY ? DOCKER_HUB_CONFIG_KEY : registry;
}

function stripScheme(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
}

function keyMatches(key: string, registry: string): boolean {
  return safeNormalise(stripScheme(key)) === registry;
}

function findHelper(config: DockerConfig, registry: string): string | undefined {
  for (const [key, helper] of Object.entries(config.credHelpers ?? {})) {
    if (keyMatches(key, registry)) return helper;
  }
  return config.credsStore || undefined;
}

function findAuthEntry(config: DockerConfig, registry: string): Credentials | undefined {
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (!keyMatches(key, registry)) continue;
    const credentials: Credentials = {};
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) {
        credentials.username = decoded.slice(0, colon);
        credentials.password = decoded.slice(colon + 1);
      }
    } else if (entry.username && entry.password) {
      credentials.username = entry.username;
      credentials.password = entry.password;
    }
    if (entry.identitytoken) credentials.identityToken = entry.identitytoken;
    if (entry.registrytoken) credentials.registryToken = entry.registrytoken;
    if (Object.keys(credentials).length) return credentials;
  }
  return undefined;
}


/**
 * Runs `docker-credential-<name> get`. A helper that has nothing for the host exits non-zero with
 * "credentials not found": that is "no credentials", not an error. The helper's output is never
 * included in an error message, because it may hold the secret.
 */
export async function runCredentialHelper(name: string, server: string, timeoutMs: number): Promise<Credentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    throw new OciRelayError(ErrorCodes.Config, `credential helper name ${JSON.stringify(name)} is not valid`);
  }
  const program = `docker-credential-${name}`;
  // Loaded here: child_process costs every start ~5 ms, and few setups have a helper.
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const child = spawn(program, ['get'], { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(new OciRelayError(ErrorCodes.Config, e.code === 'ENOENT' ? `credential helper ${program} is not installed` : `credential helper ${program} failed to start: ${e.code ?? 'error'}`));
    });
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      if (code !== 0) {
        const text = (stdout + Buffer.concat(err).toString('utf8')).toLowerCase();
        if (text.includes('credentials not found') || text.includes('not found')) {
          resolve(undefined);
          return;
        }
        reject(new OciRelayError(ErrorCodes.Config, `credential helper ${program} exited with ${signal ?? code}`));
        return;
      }
      let answer: { Username?: string; Secret: string } | undefined;
      try {
        const json: unknown = JSON.parse(stdout);
        if (isPlainObject(json) && typeof json.Secret === 'string' && (json.Username === undefined || typeof json.Username === 'string')) answer = json as typeof answer;
      } catch {
        answer = undefined;
      }
      if (!answer) {
        reject(new OciRelayError(ErrorCodes.Config, `credential helper ${program} answered something that is not {Username, Secret} JSON`));
        return;
      }
      // The helper protocol marks identity tokens with the username "<token>".
      if (answer.Username === '<token>') resolve({ identityToken: answer.Secret });
      else resolve({ username: answer.Username ?? '', password: answer.Secret });
    });
    child.stdin.end(server);
  });
}
