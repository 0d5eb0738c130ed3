/**
 * Command-line plumbing shared by the commands: option parsing (node:util parseArgs, strict),
 * credentials from flags and environment, and the usage error that maps to exit code 2.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ErrorCodes, OciRelayError } from '../errors.js';
import { chainCredentials, dockerConfigCredentials, parseUserPassword, staticCredentials, type CredentialProvider, type Credentials } from '../oci/credentials.js';

export class UsageError extends OciRelayError {
  constructor(message: string) {
    super(ErrorCodes.Usage, message);
  }
}

export type Options = NonNullable<ParseArgsConfig['options']>;

/** Options every registry-touching command takes. */
export const REGISTRY_OPTIONS: Options = {
  'src-creds': { type: 'string' },
  'dst-creds': { type: 'string' },
  creds: { type: 'string' },
  insecure: { type: 'string', multiple: true },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
};

export function parse(argv: string[], options: Options, usage: string): { values: Record<string, string | boolean | string[] | boolean[] | undefined>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values: values as Record<string, string | boolean | string[] | undefined>, positionals };
  } catch (err) {
    throw new UsageError(`${(err as Error).message.replace(/\. To specify a positional argument.*$/, '')}\n\n${usage}`);
  }
}

export function stringList(value: unknown): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value.map(String) : [String(value)];
}

/** A positive integer option, or the default. */
export function positiveInt(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

/** `k=v` pairs (`--annotation`), the value may contain '='. */
export function keyValues(values: string[], name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of values) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--${name} must be key=value, got ${JSON.stringify(pair)}`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/**
 * Credentials: `--src-creds`/`--dst-creds` (or OCIRELAY_SRC_CREDS / OCIRELAY_DST_CREDS, or
 * `--creds`/OCIRELAY_CREDS for a one-sided command) for the named registries, then Docker's
 * config.json for everything else. Values are parsed, never echoed.
 */
export function credentialsFor(values: Record<string, unknown>, hosts: { source?: string; target?: string }, env: NodeJS.ProcessEnv = process.env): CredentialProvider {
  const byHost: Record<string, Credentials> = {};
  const add = (host: string | undefined, candidates: Array<[string, unknown]>): void => {
    // The first one given wins (as `??` would); its name, never its value, goes into errors.
    const [what, raw] = candidates.find(([, value]) => value !== undefined) ?? ['', undefined];
    if (!host || raw === undefined || raw === '') return;
    let parsed: Credentials;
    try {
      parsed = parseUserPassword(String(raw), what);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const existing = byHost[host];
    if (existing && (existing.username !== parsed.username || existing.password !== parsed.password)) {
      throw new UsageError(`source and target are both ${host} but were given different credentials`);
    }
    byHost[host] = parsed;
  };
  add(hosts.source, [['--src-creds', values['src-creds']], ['--creds', values.creds], ['OCIRELAY_SRC_CREDS', env.OCIRELAY_SRC_CREDS], ['OCIRELAY_CREDS', env.OCIRELAY_CREDS]]);
  add(hosts.target, [['--dst-creds', values['dst-creds']], ['--creds', values.creds], ['OCIRELAY_DST_CREDS', env.OCIRELAY_DST_CREDS], ['OCIRELAY_CREDS', env.OCIRELAY_CREDS]]);
  return chainCredentials(staticCredentials(byHost), dockerConfigCredentials({ env }));
}
