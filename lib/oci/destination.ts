/**
 * The destination policy: which hosts ocirelay may contact when what it contacts is steered by
 * others (webhook payloads, registry redirects, token realms). Used by the pipeline, `serve` and
 * `sync`; the CLI's own copy trusts the hosts its user typed but still refuses to be redirected
 * to cloud metadata endpoints.
 *
 * - Registries: only hosts named by the configuration (rule `from`/`to`).
 * - Redirects and token realms: any host, except link-local and metadata addresses (169.254.0.0/16
 *   including 169.254.169.254, fe80::/10, fd00:ec2::254, metadata.google.internal) and private
 *   or loopback addresses (10/8, 172.16/12, 192.168/16, 100.64/10, 127/8, ::1, fc00::/7) — unless
 *   the host is named by the configuration explicitly. Host names are resolved and every address
 *   they resolve to is checked, so a public name pointing at a private address is refused too.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { ErrorCodes, OciRelayError, redactUrl } from '../errors.js';
import type { DestinationGuard } from './transport.js';

const METADATA_HOSTS = new Set(['metadata.google.internal', 'metadata', 'instance-data', 'instance-data.ec2.internal']);

function ipv4Parts(ip: string): number[] {
  return ip.split('.').map(Number);
}

/** Link-local and metadata addresses: never contacted unless named. */
export function isLinkLocalOrMetadata(ip: string): boolean {
  const v = isIP(ip);
  if (v === 4) {
    const [a, b] = ipv4Parts(ip);
    return (a === 169 && b === 254) || ip === '100.100.100.200';
  }
  if (v === 6) {
    const lower = ip.toLowerCase();
    if (lower.startsWith('::ffff:')) return isLinkLocalOrMetadata(lower.slice(7));
    return /^fe[89ab]/.test(lower) || lower === 'fd00:ec2::254';
  }
  return false;
}

/** Private, shared and loopback ranges (RFC 1918, RFC 6598, loopback, ULA). */
export function isPrivateAddress(ip: string): boolean {
  const v = isIP(ip);
  if (v === 4) {
    const [a, b] = ipv4Parts(ip) as [number, number];
    return a === 10 || a === 127 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
  }
  if (v === 6) {
    const lower = ip.toLowerCase();
    if (lower.startsWith('::ffff:')) return isPrivateAddress(lower.slice(7));
    return lower === '::1' || lower === '::' || /^f[cd]/.test(lower);
  }
  return false;
}

export interface DestinationPolicyOptions {
  /** Hosts (`host` or `host:port`) the configuration names: always allowed, whatever their address. */
  namedHosts: readonly string[];
  /** Refuse registries not named (true for payload-driven runs). Default true. */
  onlyNamedRegistries?: boolean;
  /** Name resolution, for tests. */
  resolve?: (hostname: string) => Promise<string[]>;
}

const defaultResolve = async (hostname: string): Promise<string[]> => (await lookup(hostname, { all: true, verbatim: true })).map((a) => a.address);

export function destinationPolicy(options: DestinationPolicyOptions): DestinationGuard {
  const named = new Set(options.namedHosts.map((h) => h.toLowerCase()));
  const namedHostnames = new Set([...named].map((h) => new URL(`http://${h}`).hostname));
  const resolve = options.resolve ?? defaultResolve;
  return async (url, purpose) => {
    const host = url.host.toLowerCase();
    const hostname = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    if (named.has(host) || namedHostnames.has(url.hostname.toLowerCase())) return;
    const refuse = (why: string): never => {
      throw new OciRelayError(ErrorCodes.Forbidden, `refused to contact ${redactUrl(url)} (${purpose}): ${why}`, { url, operation: purpose });
    };
    if (purpose === 'registry' && (options.onlyNamedRegistries ?? true)) refuse('the host is not named by any rule');
    if (METADATA_HOSTS.has(hostname)) refuse('a metadata endpoint');
    const addresses = isIP(hostname) ? [hostname] : await resolve(hostname).catch(() => [] as string[]);
    for (const address of addresses) {
      if (isLinkLocalOrMetadata(address)) refuse(`${address} is a link-local or metadata address`);
      if (isPrivateAddress(address)) refuse(`${address} is a private address and the host is not named by any rule`);
    }
  };
}

/** The CLI's guard: the user named the registries, but no redirect or realm may reach a metadata endpoint. */
export const metadataGuard: DestinationGuard = async (url, purpose) => {
  if (purpose === 'registry') return;
  const hostname = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (METADATA_HOSTS.has(hostname) || (isIP(hostname) && isLinkLocalOrMetadata(hostname))) {
    throw new OciRelayError(ErrorCodes.Forbidden, `refused to contact ${redactUrl(url)} (${purpose}): a link-local or metadata address`, { url, operation: purpose });
  }
};
