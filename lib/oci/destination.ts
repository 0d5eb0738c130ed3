/**
 * The destination policy: which hosts ocirelay may contact when what it contacts is steered by
 * others (webhook payloads, registry redirects, token realms). Used by the pipeline, `serve` and
 * `sync`; the CLI's own copy trusts the hosts its user typed but still refuses to be redirected
 * to cloud metadata endpoints.
 *
 * - Registries: only hosts named by the configuration (rule `from`/`to`). A name with a port
 *   (`registry.internal:5000`) is that port only; a name without one, ports 80 and 443.
 * - Redirects and token realms: any host, except link-local and metadata addresses (169.254.0.0/16
 *   including 169.254.169.254, fe80::/10, fd00:ec2::254, 100.100.100.200, metadata.google.internal)
 *   and private, loopback and other non-public addresses (0/8, 10/8, 100.64/10, 127/8, 172.16/12,
 *   192.168/16, 198.18/15, multicast and reserved, ::, ::1, fc00::/7, ff00::/8) — unless the host
 *   is named by the configuration explicitly. IPv6 forms that carry an IPv4 address
 *   (`::ffff:a9fe:a9fe`, `::169.254.169.254`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged
 *   by that address.
 * - Host names are judged by every address they resolve to: once by the guard, before the request
 *   (a refusal that names the URL), and again when a connection is made: the guard carries the
 *   `lookup` its transport gives undici, which refuses the connection if any address is forbidden
 *   and connects to exactly the addresses it checked. A name that resolves to a public address
 *   for the check and to a private one for the connection (DNS rebinding) gets nowhere.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { ErrorCodes, OciRelayError, redactUrl } from '../errors.js';
import type { DestinationGuard } from './transport.js';

const METADATA_HOSTS = new Set(['metadata.google.internal', 'metadata', 'instance-data', 'instance-data.ec2.internal']);

function blockList(ranges: ReadonlyArray<readonly [string, number]>): BlockList {
  const list = new BlockList();
  for (const [network, prefix] of ranges) list.addSubnet(network, prefix, isIP(network) === 6 ? 'ipv6' : 'ipv4');
  return list;
}

const LINK_LOCAL_OR_METADATA = blockList([['169.254.0.0', 16], ['100.100.100.200', 32], ['fe80::', 10], ['fd00:ec2::254', 128]]);

const NON_PUBLIC = blockList([
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['172.16.0.0', 12], ['192.0.0.0', 24],
  ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
  ['::', 128], ['::1', 128], ['fc00::', 7], ['ff00::', 8], ['64:ff9b:1::', 48], ['2001::', 32], ['100::', 64],
]);

/** The eight 16-bit groups of a valid IPv6 literal (zone dropped, a trailing dotted quad folded in). */
function ipv6Groups(ip: string): number[] {
  let text = ip.toLowerCase().replace(/%.*$/, '');
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return groups.map((g) => parseInt(g, 16));
}

/**
 * The IPv4 address an IPv6 literal carries, when it is one of the forms that reach an IPv4 host:
 * mapped (`::ffff:0:0/96`), compatible (`::/96`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
 */
function embeddedIPv4(ip: string): string | undefined {
  const g = ipv6Groups(ip);
  const quad = (hi: number, lo: number): string => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  const zeros = (from: number, to: number): boolean => g.slice(from, to).every((x) => x === 0);
  if (zeros(0, 5) && (g[5] === 0xffff || g[5] === 0)) return quad(g[6] as number, g[7] as number);
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return quad(g[6] as number, g[7] as number);
  if (g[0] === 0x2002) return quad(g[1] as number, g[2] as number);
  return undefined;
}

/** The address to judge: itself, or the IPv4 address an IPv6 form carries. */
function judged(ip: string): { address: string; family: 'ipv4' | 'ipv6' } | undefined {
  const bare = ip.replace(/^\[|\]$/g, '');
  const v = isIP(bare.replace(/%.*$/, ''));
  if (v === 4) return { address: bare, family: 'ipv4' };
  if (v !== 6) return undefined;
  const v4 = embeddedIPv4(bare);
  return v4 ? { address: v4, family: 'ipv4' } : { address: bare.replace(/%.*$/, ''), family: 'ipv6' };
}

/** Link-local and metadata addresses (in any IPv4 or IPv6 spelling): never contacted unless named. */
export function isLinkLocalOrMetadata(ip: string): boolean {
  const a = judged(ip);
  return !!a && LINK_LOCAL_OR_METADATA.check(a.address, a.family);
}

/** Private, shared, loopback and other non-public addresses (RFC 1918, RFC 6598, loopback, ULA, multicast, reserved). */
export function isPrivateAddress(ip: string): boolean {
  const a = judged(ip);
  return !!a && NON_PUBLIC.check(a.address, a.family);
}

/** Why an address may not be contacted (by a host the configuration does not name), or undefined. */
function refusal(address: string, privateToo: boolean): string | undefined {
  if (isLinkLocalOrMetadata(address)) return `${address} is a link-local or metadata address`;
  if (privateToo && isPrivateAddress(address)) return `${address} is a private address and the host is not named by any rule`;
  return undefined;
}

const hostnameOf = (url: URL): string => url.hostname.replace(/^\[|\]$/g, '').toLowerCase().replace(/\.$/, '');

/**
 * undici's connect-time name resolution under a policy: one resolution, every address checked,
 * and the connection made to exactly those addresses. `allowed` names the hosts exempt from it.
 */
function guardedLookup(allowed: (hostname: string) => boolean, privateToo: boolean, resolve?: (hostname: string) => Promise<string[]>): LookupFunction {
  const resolveAll = (hostname: string, options: { family?: number | string; hints?: number }): Promise<LookupAddress[]> =>
    resolve
      ? resolve(hostname).then((list) => list.map((address) => ({ address, family: isIP(address) })))
      : new Promise((ok, fail) => {
          const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : Number(options.family ?? 0);
          dnsLookup(hostname, { all: true, family, ...(options.hints ? { hints: options.hints } : {}) }, (err, addresses) => (err ? fail(err) : ok(addresses)));
        });
  return (hostname, options, callback) => {
    const answer = callback as (err: Error | null, address?: string | LookupAddress[], family?: number) => void;
    resolveAll(hostname, options).then(
      (addresses) => {
        const name = hostname.toLowerCase().replace(/\.$/, '');
        if (!allowed(name)) {
          for (const { address } of addresses) {
            const why = refusal(address, privateToo);
            if (why) return answer(new OciRelayError(ErrorCodes.Forbidden, `refused to connect to ${hostname}: ${why}`, { operation: 'connect' }));
          }
        }
        const first = addresses[0];
        if (!first) return answer(Object.assign(new Error(`${hostname} resolved to no address`), { code: 'ENOTFOUND' }));
        if ((options as { all?: boolean }).all) return answer(null, addresses);
        return answer(null, first.address, first.family);
      },
      (err: Error) => answer(err),
    );
  };
}

export interface DestinationPolicyOptions {
  /** Hosts (`host` or `host:port`) the configuration names: always allowed, whatever their address. */
  namedHosts: readonly string[];
  /** Refuse registries not named (true for payload-driven runs). Default true. */
  onlyNamedRegistries?: boolean;
  /** Name resolution (for the check and at connect time), for tests. */
  resolve?: (hostname: string) => Promise<string[]>;
}

const defaultResolve = (hostname: string): Promise<string[]> =>
  new Promise((ok, fail) => dnsLookup(hostname, { all: true }, (err, addresses) => (err ? fail(err) : ok(addresses.map((a) => a.address)))));

export function destinationPolicy(options: DestinationPolicyOptions): DestinationGuard {
  const named = options.namedHosts.map((h) => {
    const url = new URL(`http://${h.toLowerCase()}`);
    return { hostname: hostnameOf(url), port: url.port ? Number(url.port) : undefined };
  });
  const namedHostnames = new Set(named.map((n) => n.hostname));
  const isNamed = (url: URL): boolean => {
    const hostname = hostnameOf(url);
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return named.some((n) => n.hostname === hostname && (n.port === undefined ? port === 80 || port === 443 : n.port === port));
  };
  const resolve = options.resolve ?? defaultResolve;
  const guard: DestinationGuard = async (url, purpose) => {
    if (isNamed(url)) return;
    const refuse = (why: string): never => {
      throw new OciRelayError(ErrorCodes.Forbidden, `refused to contact ${redactUrl(url)} (${purpose}): ${why}`, { url, operation: purpose });
    };
    if (purpose === 'registry' && (options.onlyNamedRegistries ?? true)) refuse('the host is not named by any rule');
    const hostname = hostnameOf(url);
    if (METADATA_HOSTS.has(hostname)) refuse('a metadata endpoint');
    // A name is judged here (for a clear refusal naming the URL) and again, on the addresses
    // actually connected to, when the connection is made (guard.lookup).
    const addresses = isIP(hostname) ? [hostname] : await resolve(hostname).catch(() => [] as string[]);
    for (const address of addresses) {
      const why = refusal(address, true);
      if (why) refuse(why);
    }
  };
  guard.lookup = guardedLookup((hostname) => namedHostnames.has(hostname), true, options.resolve);
  return guard;
}

/** The CLI's guard: the user named the registries, but no redirect or realm may reach a metadata endpoint. */
export const metadataGuard: DestinationGuard = (url, purpose) => {
  if (purpose === 'registry') return;
  const hostname = hostnameOf(url);
  if (METADATA_HOSTS.has(hostname) || isLinkLocalOrMetadata(hostname)) {
    throw new OciRelayError(ErrorCodes.Forbidden, `refused to contact ${redactUrl(url)} (${purpose}): a link-local or metadata address`, { url, operation: purpose });
  }
};
// Names are judged when the connection is made. The CLI's own registries are not exempt: one whose
// name resolves to a link-local address is reached by its address.
metadataGuard.lookup = guardedLookup(() => false, false);
