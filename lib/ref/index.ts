/**
 * Image references: parsing, normalisation and formatting (pure, no I/O).
 *
 * The grammar is the one of github.com/distribution/reference (regexp.go), and normalisation
 * follows docker's `ParseNormalizedNamed` (normalize.go):
 *
 * ```
 * reference       := name [ ":" tag ] [ "@" digest ]
 * name            := [ domain "/" ] path-component [ "/" path-component ]*
 * domain          := host [ ":" port-number ]
 * host            := domain-name | "[" ipv6 "]"
 * domain-name     := domain-component [ "." domain-component ]*
 * domain-component:= /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
 * port-number     := /[0-9]+/
 * path-component  := alphanumeric [ separator alphanumeric ]*
 * alphanumeric    := /[a-z0-9]+/
 * separator       := /[_.]|__|[-]+/
 * tag             := /[\w][\w.-]{0,127}/
 * digest          := algorithm ":" hex          (here: sha256/64 hex or sha512/128 hex, lib/digest.ts)
 * ```
 *
 * Normalisation (docker's `splitDockerDomain`): the first path component is a registry host when
 * it contains `.` or `:` or is `localhost`; otherwise the name is on Docker Hub, and a one-component
 * Docker Hub name gets the `library/` prefix. The total name (`docker.io/library/alpine` for Docker
 * Hub, `host/path` elsewhere) is at most 255 characters (`NameTotalLengthMax`).
 *
 * Where ocirelay differs from docker, on purpose:
 * - `docker.io`, `index.docker.io` and `registry-1.docker.io` (in any case) are one registry and
 *   normalise to `registry-1.docker.io`, the host that actually serves the distribution API.
 * - Host names are lowercased (DNS is case-insensitive). Docker keeps the case and, since
 *   distribution/reference v0.6, also treats an upper-case first component without `.`/`:` as a
 *   domain (`MyOrg/app` -> host `MyOrg`); ocirelay reports it as an upper-case repository instead.
 * - Ports must be 1-65535 (leading zeros are dropped); IPv6 addresses must be well-formed.
 * - Digests are limited to the algorithms lib/digest.ts supports.
 */
import { InvalidDigestError, InvalidReferenceError, truncate } from '../errors.js';
import { parseDigest } from '../digest.js';

/** The host that serves Docker Hub's distribution API; every Docker Hub alias normalises to it. */
export const DOCKER_HUB_REGISTRY = 'registry-1.docker.io';

/** A normalised reference: `registry/repository[:tag][@digest]`. Unset optional fields are absent. */
export interface Reference {
  /** Lowercase host with optional port, e.g. `registry-1.docker.io`, `localhost:5000`, `[::1]:5000`. */
  registry: string;
  /** Slash-separated path components, e.g. `library/alpine`. */
  repository: string;
  /** `[\w][\w.-]{0,127}`. */
  tag?: string;
  /** `sha256:<64 hex>` or `sha512:<128 hex>`. */
  digest?: string;
}

export interface ParseOptions {
  /** Added when the input has neither tag nor digest; default `latest`; pass `''` to add none. */
  defaultTag?: string;
}

type Part = 'registry' | 'repository' | 'tag' | 'digest' | 'reference';

/** Docker Hub's aliases (normalize.go: `defaultDomain`, `legacyDefaultDomain`, and the API host). */
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', DOCKER_HUB_REGISTRY]);
/** The domain docker counts in a Docker Hub name's length (`docker.io/library/alpine`). */
const DOCKER_HUB_FAMILIAR_DOMAIN = 'docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';
/** regexp.go `NameTotalLengthMax` (reference.go). */
const NAME_TOTAL_LENGTH_MAX = 255;
const TAG_LENGTH_MAX = 128;

/** regexp.go `pathComponent`: alphanumeric (separator alphanumeric)*. */
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
/** regexp.go `domainNameComponent`. */
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
/** regexp.go `tag`: `[\w][\w.-]{0,127}` (RE2's `\w` is ASCII). */
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
/** regexp.go `identifier`: a bare image ID, which docker refuses as a name. */
const IDENTIFIER = /^[a-f0-9]{64}$/;

function fail(input: string, part: Part, reason: string): never {
  throw new InvalidReferenceError(input, part, reason);
}

function q(text: string): string {
  return JSON.stringify(truncate(text, 100));
}

// ---------------------------------------------------------------------------------------------
// Registry host

/** IPv6 in compressed or full form, hex groups only (regexp.go `ipv6address`, made strict). */
function isIPv6(address: string): boolean {
  if (!/^[0-9a-fA-F:]+$/.test(address)) return false;
  const halves = address.split('::');
  if (halves.length > 2) return false;
  const groups = (text: string): string[] => (text === '' ? [] : text.split(':'));
  const all = [...groups(halves[0] ?? ''), ...(halves.length === 2 ? groups(halves[1] ?? '') : [])];
  if (!all.every((group) => /^[0-9a-fA-F]{1,4}$/.test(group))) return false;
  return halves.length === 2 ? all.length <= 7 : all.length === 8;
}

/** Validates `host[:port]` (regexp.go `domainAndPort`); returns the normalised host or a reason. */
function checkHost(host: string): { host: string } | { reason: string } {
  if (host === '') return { reason: 'is empty' };
  if (host.includes('://')) return { reason: `must be a host name, not a URL: ${q(host)}` };
  if (/\s/.test(host)) return { reason: `must not contain whitespace: ${q(host)}` };
  let name: string;
  let port: string | undefined;
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    if (close === -1) return { reason: `${q(host)} has an unterminated "[" (IPv6 addresses are written [::1])` };
    const address = host.slice(1, close);
    if (!isIPv6(address)) return { reason: `${q(host)} is not a valid IPv6 address` };
    const rest = host.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return { reason: `${q(host)} has unexpected text after the IPv6 address` };
    name = `[${address}]`;
    port = rest === '' ? undefined : rest.slice(1);
  } else {
    const colon = host.indexOf(':');
    if (colon !== -1 && host.indexOf(':', colon + 1) !== -1) {
      return { reason: `${q(host)} is not a host[:port] (IPv6 addresses must be in brackets, e.g. [::1]:5000)` };
    }
    name = colon === -1 ? host : host.slice(0, colon);
    port = colon === -1 ? undefined : host.slice(colon + 1);
    if (name === '') return { reason: `${q(host)} has no host name before the port` };
    for (const label of name.split('.')) {
      if (label === '') return { reason: `${q(host)} has an empty domain component` };
      if (!DOMAIN_COMPONENT.test(label)) {
        return { reason: `${q(host)} has an invalid domain component ${q(label)} (letters, digits and inner "-" only)` };
      }
    }
  }
  let normalised = name.toLowerCase();
  if (port !== undefined) {
    if (port === '') return { reason: `${q(host)} has an empty port` };
    if (!/^[0-9]+$/.test(port)) return { reason: `${q(host)} has an invalid port ${q(port)}` };
    const number = Number(port);
    if (number < 1 || number > 65535) return { reason: `${q(host)} has an invalid port ${port} (must be 1-65535)` };
    normalised += `:${number}`;
  }
  if (DOCKER_HUB_ALIASES.has(normalised)) normalised = DOCKER_HUB_REGISTRY;
  return { host: normalised };
}

/**
 * Validates a registry host (distribution `domainAndPort`: domain components or a bracketed IPv6
 * address, optional port) and normalises it: lowercase, and `docker.io`/`index.docker.io`/
 * `registry-1.docker.io` become `registry-1.docker.io`. Throws InvalidReferenceError (part `registry`).
 */
export function normaliseRegistry(host: string): string {
  if (typeof host !== 'string') fail(String(host), 'registry', 'must be a string');
  const checked = checkHost(host);
  if ('reason' in checked) fail(host, 'registry', checked.reason);
  return checked.host;
}

/** True for Docker Hub under any of its names (`docker.io`, `index.docker.io`, `registry-1.docker.io`). */
export function isDockerHub(registry: string): boolean {
  return DOCKER_HUB_ALIASES.has(registry.toLowerCase());
}

/** docker's rule (normalize.go `splitDockerDomain`): a first component with `.` or `:`, or `localhost`. */
function looksLikeHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component.toLowerCase() === 'localhost';
}

// ---------------------------------------------------------------------------------------------
// Repository, tag, digest

/** Why a path component does not match regexp.go `pathComponent`, or undefined when it does. */
function componentProblem(component: string): string | undefined {
  if (PATH_COMPONENT.test(component)) return undefined;
  if (/[A-Z]/.test(component)) return `must be lowercase: ${q(component)}`;
  const bad = /[^a-z0-9._-]/u.exec(component);
  if (bad) return `component ${q(component)} contains an invalid character ${q(bad[0])}`;
  if (/^[._-]/.test(component)) return `component ${q(component)} must start with a lowercase letter or digit`;
  if (/[._-]$/.test(component)) return `component ${q(component)} must end with a lowercase letter or digit`;
  const separator = (component.match(/[._-]+/g) ?? []).find((run) => !/^(?:[._]|__|-+)$/.test(run)) ?? '';
  return `component ${q(component)} has an invalid separator ${q(separator)} (use ".", "_", "__" or dashes)`;
}

/** Why a tag does not match regexp.go `tag`, or undefined when it does. */
function tagProblem(tag: string): string | undefined {
  if (TAG.test(tag)) return undefined;
  if (tag === '') return 'is empty';
  if (tag.length > TAG_LENGTH_MAX) return `is longer than ${TAG_LENGTH_MAX} characters`;
  if (!/^[A-Za-z0-9_]/.test(tag)) return `must start with a letter, digit or underscore: ${q(tag)}`;
  const bad = /[^A-Za-z0-9_.-]/u.exec(tag);
  return `contains an invalid character ${q(bad?.[0] ?? '')}: ${q(tag)}`;
}

/** The reason lib/digest.ts gave, without its `invalid digest "...": ` prefix. */
function digestProblem(digest: string): string | undefined {
  try {
    parseDigest(digest);
    return undefined;
  } catch (err) {
    if (!(err instanceof InvalidDigestError)) throw err;
    const prefix = `invalid digest ${JSON.stringify(truncate(digest, 200))}: `;
    return err.detail.startsWith(prefix) ? err.detail.slice(prefix.length) : err.detail;
  }
}

/** True when `tag` matches the distribution tag grammar `[\w][\w.-]{0,127}`. */
export function isValidTag(tag: string): boolean {
  return typeof tag === 'string' && TAG.test(tag);
}

/**
 * True when `path` is a repository path as a registry names it (`team/app`: regexp.go `path`,
 * at most 255 characters), e.g. an entry of a catalog, which a registry's answer does not make
 * trustworthy.
 */
export function isValidRepositoryPath(path: string): boolean {
  return typeof path === 'string' && path.length > 0 && path.length <= NAME_TOTAL_LENGTH_MAX && path.split('/').every((c) => PATH_COMPONENT.test(c));
}

function checkInput(input: string): void {
  if (typeof input !== 'string') fail(String(input), 'reference', 'must be a string');
  if (input === '') fail(input, 'reference', 'is empty');
  if (/\s/.test(input)) fail(input, 'reference', 'must not contain whitespace');
  if (input.includes('://')) fail(input, 'reference', `must not contain a URL scheme (${q(input.slice(0, input.indexOf('://') + 3))})`);
  // normalize.go: ParseNormalizedNamed refuses a bare image ID as a name.
  if (IDENTIFIER.test(input)) fail(input, 'repository', 'must not be a 64-character hexadecimal string (that is an image ID)');
}

/** `name` (regexp.go `namePat`) split and normalised per normalize.go `splitDockerDomain`. */
function parseName(input: string, name: string): { registry: string; repository: string } {
  if (name === '') fail(input, 'repository', 'is missing');
  if (name.startsWith('/')) fail(input, 'repository', 'must not start with "/"');
  if (name.includes('//')) fail(input, 'repository', 'must not contain "//"');
  let registry = DOCKER_HUB_REGISTRY;
  let path = name;
  const slash = name.indexOf('/');
  if (slash !== -1) {
    const first = name.slice(0, slash);
    if (looksLikeHost(first)) {
      const checked = checkHost(first);
      if ('reason' in checked) fail(input, 'registry', checked.reason);
      registry = checked.host;
      path = name.slice(slash + 1);
      if (path === '') fail(input, 'repository', `is missing after ${q(`${first}/`)}`);
    }
  }
  if (path.endsWith('/')) fail(input, 'repository', 'must not end with "/"');
  const components = path.split('/');
  components.forEach((component, index) => {
    const problem = componentProblem(component);
    if (!problem) return;
    // docker would take `MyOrg/app` as host `MyOrg`; say why ocirelay does not.
    const hostLike = index === 0 && components.length > 1 && path === name && /[A-Z]/.test(component);
    fail(input, 'repository', hostLike ? `${problem} (a registry host needs a "." or ":" or must be "localhost")` : problem);
  });
  if (registry === DOCKER_HUB_REGISTRY && components.length === 1) path = OFFICIAL_REPO_PREFIX + path;
  const fullName = `${registry === DOCKER_HUB_REGISTRY ? DOCKER_HUB_FAMILIAR_DOMAIN : registry}/${path}`;
  if (fullName.length > NAME_TOTAL_LENGTH_MAX) {
    fail(input, 'repository', `name is longer than ${NAME_TOTAL_LENGTH_MAX} characters (${fullName.length}: ${q(fullName)})`);
  }
  return { registry, repository: path };
}

/** Splits `name[:tag]` at the last `:` after the last `/` (a `:` before it belongs to a port). */
function splitTag(text: string): { name: string; tag?: string } {
  const colon = text.lastIndexOf(':');
  if (colon === -1 || colon < text.lastIndexOf('/')) return { name: text };
  return { name: text.slice(0, colon), tag: text.slice(colon + 1) };
}

function build(registry: string, repository: string, tag: string | undefined, digest: string | undefined): Reference {
  const ref: Reference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Parses `[registry/]repository[:tag][@digest]` (regexp.go `referencePat`) and normalises it like
 * docker's `ParseNormalizedNamed`: `alpine` -> `registry-1.docker.io/library/alpine:latest`.
 * A tag and a digest may both be given and are both kept; the default tag is added only when
 * neither is. Throws InvalidReferenceError naming the bad part and why.
 */
export function parseReference(input: string, options: ParseOptions = {}): Reference {
  checkInput(input);
  const at = input.indexOf('@');
  let digest: string | undefined;
  let rest = input;
  if (at !== -1) {
    digest = input.slice(at + 1);
    rest = input.slice(0, at);
    if (digest === '') fail(input, 'digest', 'is missing after "@"');
    const problem = digestProblem(digest);
    if (problem) fail(input, 'digest', problem);
  }
  const split = splitTag(rest);
  let tag = split.tag;
  if (tag !== undefined) {
    if (tag === '') fail(input, 'tag', 'is empty after ":"');
    const problem = tagProblem(tag);
    if (problem) fail(input, 'tag', problem);
  }
  const { registry, repository } = parseName(input, split.name);
  if (tag === undefined && digest === undefined) {
    const defaultTag = options.defaultTag ?? 'latest';
    if (defaultTag !== '') {
      const problem = tagProblem(defaultTag);
      if (problem) fail(input, 'tag', `default ${q(defaultTag)} ${problem}`);
      tag = defaultTag;
    }
  }
  return build(registry, repository, tag, digest);
}

/**
 * A repository without tag or digest (regexp.go `namePat`, normalised as in parseReference), e.g.
 * for rules: `registry.example.com/team`. With `allowEmptyRepository`, a lone host (`host`,
 * `host/`; a host per docker's rule: contains `.` or `:` or is `localhost`) means "the whole
 * registry" and gives repository `''`. Without it, a lone name is a Docker Hub repository, as in
 * docker (`alpine` -> `library/alpine`).
 */
export function parseRepository(input: string, options: { allowEmptyRepository?: boolean } = {}): { registry: string; repository: string } {
  checkInput(input);
  if (options.allowEmptyRepository) {
    const host = input.endsWith('/') ? input.slice(0, -1) : input;
    if (host !== '' && !host.includes('/') && looksLikeHost(host)) {
      const checked = checkHost(host);
      if ('reason' in checked) fail(input, 'registry', checked.reason);
      return { registry: checked.host, repository: '' };
    }
  }
  const at = input.indexOf('@');
  if (at !== -1) fail(input, 'digest', `is not allowed in a repository: ${q(input.slice(at + 1))}`);
  const split = splitTag(input);
  if (split.tag !== undefined) fail(input, 'tag', `is not allowed in a repository: ${q(split.tag)}`);
  return parseName(input, split.name);
}

/** The canonical form `registry/repository[:tag][@digest]` (distribution `reference.String()`). */
export function formatReference(ref: Reference): string {
  const name = ref.repository === '' ? ref.registry : `${ref.registry}/${ref.repository}`;
  return `${name}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/**
 * docker's short form (normalize.go `familiarizeName`): on Docker Hub the registry is dropped and
 * so is `library/` before a single component (`alpine:latest`, `user/app:1`); other registries
 * are unchanged. When the short form would read back differently (a first component that looks
 * like a host, or a bare image ID), it keeps the `docker.io/` prefix.
 */
export function familiarReference(ref: Reference): string {
  if (!isDockerHub(ref.registry) || ref.repository === '') return formatReference(ref);
  let path = ref.repository;
  if (path.startsWith(OFFICIAL_REPO_PREFIX) && !path.slice(OFFICIAL_REPO_PREFIX.length).includes('/')) {
    path = path.slice(OFFICIAL_REPO_PREFIX.length);
  }
  const slash = path.indexOf('/');
  const ambiguous = (slash !== -1 && looksLikeHost(path.slice(0, slash))) || (IDENTIFIER.test(path) && ref.tag === undefined && ref.digest === undefined);
  const name = ambiguous ? `${DOCKER_HUB_FAMILIAR_DOMAIN}/${path}` : path;
  return `${name}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** The same reference with `tag` (validated against `[\w][\w.-]{0,127}`); a digest is kept. */
export function withTag(ref: Reference, tag: string): Reference {
  const problem = typeof tag === 'string' ? tagProblem(tag) : 'must be a string';
  if (problem) fail(formatReference(build(ref.registry, ref.repository, String(tag), ref.digest)), 'tag', problem);
  return build(ref.registry, ref.repository, tag, ref.digest);
}

/** The same reference with `digest` (validated by lib/digest.ts); a tag is kept. */
export function withDigest(ref: Reference, digest: string): Reference {
  const problem = typeof digest === 'string' ? (digest === '' ? 'is empty' : digestProblem(digest)) : 'must be a string';
  if (problem) fail(formatReference(build(ref.registry, ref.repository, ref.tag, String(digest))), 'digest', problem);
  return build(ref.registry, ref.repository, ref.tag, digest);
}

/** The thing to GET at /v2/<repo>/manifests/<x>: the digest when present, else the tag. */
export function manifestReference(ref: Reference): string {
  if (ref.digest !== undefined) return ref.digest;
  if (ref.tag !== undefined) return ref.tag;
  return fail(formatReference(ref), 'reference', 'has neither a tag nor a digest');
}
