/**
 * Rules turn events into replication requests (pure). The registry of every request comes from
 * the rule, never from the payload: an event whose payload names another host, or a repository
 * outside every rule, matches nothing and is ignored. A tag is copied by tag, so that fan-out
 * re-resolves it at the rule's source; a digest the payload names is only a hint.
 */
import semver from 'semver';
import { DOCKER_HUB_REGISTRY, parseRepository } from '../ref/index.js';
import type { PushEvent } from '../events/types.js';
import { PROTOCOL_VERSION, type ReplicationRequest, type SyncMessage } from '../pipeline/messages.js';
import type { Config, Rule } from './config.js';

export interface RuleEndpoints {
  source: { registry: string; prefix: string };
  target: { registry: string; prefix: string };
}

export function endpoints(rule: Rule): RuleEndpoints {
  return { source: rulePrefix(rule.from), target: rulePrefix(rule.to) };
}

/**
 * A rule's `host[/prefix]`. On Docker Hub a one-component prefix is a namespace (`docker.io/myorg`
 * is everything under `myorg/`), not the official image `library/myorg` that the same words name
 * in an image reference; `relativePath` still lets it match that official image itself.
 */
function rulePrefix(input: string): { registry: string; prefix: string } {
  const parsed = parseRepository(input, { allowEmptyRepository: true });
  const named = input.replace(/\/+$/, '').split('/').slice(1).join('/');
  const implicitLibrary = parsed.registry === DOCKER_HUB_REGISTRY && parsed.repository === `library/${named.toLowerCase()}` && !named.includes('/');
  return { registry: parsed.registry, prefix: implicitLibrary ? parsed.repository.slice('library/'.length) : parsed.repository };
}

/**
 * Every host the configuration names, for the destination policy: the rules' source and target
 * registries, and `trustedHosts` (token services or blob storage those registries send ocirelay
 * to on a private network).
 */
export function namedHosts(config: Config): string[] {
  return [...new Set([...config.rules.flatMap((rule) => [endpoints(rule).source.registry, endpoints(rule).target.registry]), ...config.trustedHosts])];
}

/** A rule as `--rule` and schedules name it: its name, or its place in the file (from 0). */
export function ruleLabel(rule: Rule, index: number): string {
  return rule.name ?? String(index);
}

/** The rules a sync runs, in file order: all of them, or those `names` names (by name or index). */
export function selectRules(config: Config, names?: readonly string[]): Array<{ rule: Rule; index: number; label: string }> {
  return config.rules.map((rule, index) => ({ rule, index, label: ruleLabel(rule, index) })).filter(({ rule, index }) => !names || (rule.name !== undefined && names.includes(rule.name)) || names.includes(String(index)));
}

/**
 * The first step of a scheduled sync of each rule `names` names (every rule without it): one
 * sync message per rule, for fan-out (lib/pipeline/sync.ts); and the names that match no rule.
 */
export function ruleSyncMessages(config: Config, runId: string, names?: readonly string[]): { messages: SyncMessage[]; unknown: string[] } {
  const unknown = (names ?? []).filter((n) => !config.rules.some((rule, index) => rule.name === n || String(index) === n));
  const messages = selectRules(config, names).map(({ rule, index }): SyncMessage => ({ v: PROTOCOL_VERSION, type: 'sync', id: runId, rule: { index, ...(rule.name ? { name: rule.name } : {}) } }));
  return { messages, unknown };
}

/**
 * The repository path below the rule's prefix ('' for the prefix itself), or undefined when outside
 * it. On Docker Hub (`registry` given) a one-component prefix is also the official image of that
 * name: `library/<prefix>` is the prefix itself.
 */
export function relativePath(repository: string, prefix: string, registry?: string): string | undefined {
  if (!prefix) return repository;
  if (repository === prefix) return '';
  if (registry === DOCKER_HUB_REGISTRY && !prefix.includes('/') && repository === `library/${prefix}`) return '';
  return repository.startsWith(`${prefix}/`) ? repository.slice(prefix.length + 1) : undefined;
}

export function joinPath(prefix: string, relative: string): string {
  return [prefix, relative].filter(Boolean).join('/');
}

/**
 * `*` any run of characters, `?` one character; anchored. Matched without a regular expression:
 * `a*a*a*…b` as a regex backtracks exponentially on a long name, here it costs at most
 * pattern × value steps (each star is retried from one place only).
 */
export function globMatches(pattern: string, value: string): boolean {
  let p = 0;
  let v = 0;
  let star = -1;
  let resume = 0;
  while (v < value.length) {
    const c = pattern[p];
    if (c === '*') {
      star = p++;
      resume = v;
    } else if (c !== undefined && (c === '?' || c === value[v])) {
      p++;
      v++;
    } else if (star >= 0) {
      p = star + 1;
      v = ++resume;
    } else {
      return false;
    }
  }
  while (pattern[p] === '*') p++;
  return p === pattern.length;
}

export function repositoryAllowed(rule: Rule, repository: string, relative: string): boolean {
  const subject = relative || repository.slice(repository.lastIndexOf('/') + 1);
  const include = rule.repositories?.include;
  if (include?.length && !include.some((g) => globMatches(g, subject) || globMatches(g, repository))) return false;
  if (rule.repositories?.exclude?.some((g) => globMatches(g, subject) || globMatches(g, repository))) return false;
  return true;
}

/** The version a tag names (`v1.2.3`, `1.2`), for semver filters and `latest` ordering. */
export function tagVersion(tag: string): string | undefined {
  const cleaned = semver.valid(semver.clean(tag) ?? '') ?? semver.coerce(tag)?.version;
  return cleaned ?? undefined;
}

/** Include/exclude regexes and the semver range; `latest` is applied to lists (sync), not to single events. */
export function tagAllowed(rule: Rule, tag: string): boolean {
  const filter = rule.tags;
  if (!filter) return true;
  if (filter.include?.length && !filter.include.some((r) => new RegExp(r).test(tag))) return false;
  if (filter.exclude?.some((r) => new RegExp(r).test(tag))) return false;
  if (filter.semver) {
    const version = tagVersion(tag);
    if (!version || !semver.satisfies(version, filter.semver, { includePrerelease: false })) return false;
  }
  return true;
}

/** Applies a rule's tag filters to a list, keeping the `latest` N by version (then by name). */
export function selectTags(rule: Rule, tags: readonly string[]): string[] {
  const allowed = tags.filter((t) => tagAllowed(rule, t));
  const latest = rule.tags?.latest;
  if (!latest) return allowed;
  return [...allowed]
    .sort((a, b) => {
      const va = tagVersion(a);
      const vb = tagVersion(b);
      if (va && vb && va !== vb) return semver.rcompare(va, vb);
      if (va && !vb) return -1;
      if (!va && vb) return 1;
      return b.localeCompare(a);
    })
    .slice(0, latest);
}

/** `{registry}`, `{repository}`, `{tag}`, `{digest}` placeholders of an export destination. */
export function expandDestination(template: string, values: { registry: string; repository: string; tag?: string; digest?: string }): string {
  return template.replace(/\{(registry|repository|tag|digest)\}/g, (_, key: keyof typeof values) => (values[key] ?? (key === 'tag' ? values.digest?.replace(':', '-') : '') ?? '').replace(/:/g, '-'));
}

export interface Matched {
  rule: Rule;
  request: ReplicationRequest;
}

/** Every rule the event matches, each as a request; `only` limits the rules (a webhook's own list). */
export function requestsFor(event: PushEvent, config: Config, options: { id: string; only?: readonly string[] }): Matched[] {
  const out: Matched[] = [];
  for (const [index, rule] of config.rules.entries()) {
    if (options.only && !options.only.includes(rule.name ?? String(index))) continue;
    const ends = endpoints(rule);
    if (event.registry && event.registry !== ends.source.registry) continue;
    const relative = relativePath(event.repository, ends.source.prefix, ends.source.registry);
    if (relative === undefined) continue;
    if (!repositoryAllowed(rule, event.repository, relative)) continue;
    // Mirroring is by tag: a manifest pushed by digest alone (a child of an index, a referrer)
    // travels with the tagged image it belongs to (referrers: true copies signatures and SBOMs).
    // Copying it on its own would bypass the rule's platform filter.
    if (!event.tag) continue;
    if (!tagAllowed(rule, event.tag)) continue;
    const targetRepository = joinPath(ends.target.prefix, relative);
    const at = `:${event.tag}`;
    out.push({ rule, request: toRequest(rule, { id: `${options.id}#${index}`, source: `${ends.source.registry}/${event.repository}${at}`, target: `${ends.target.registry}/${targetRepository}${at}`, targetRegistry: ends.target.registry, targetRepository, ...(event.tag ? { tag: event.tag } : {}), ...(event.digest ? { digest: event.digest } : {}) }) });
  }
  return out;
}

export function toRequest(rule: Rule, at: { id: string; source: string; target: string; targetRegistry: string; targetRepository: string; tag?: string; digest?: string }): ReplicationRequest {
  return {
    v: PROTOCOL_VERSION,
    type: 'replicate',
    id: at.id,
    source: at.source,
    target: at.target,
    mode: rule.mode ?? 'prefer-multiarch',
    platforms: rule.platforms ?? [],
    annotations: rule.annotations ?? {},
    referrers: rule.referrers ?? false,
    includeForeignLayers: rule.includeForeignLayers ?? false,
    ...(rule.export
      ? {
          export: {
            format: rule.export.format,
            destination: expandDestination(rule.export.to, { registry: at.targetRegistry, repository: at.targetRepository, ...(at.tag ? { tag: at.tag } : {}), ...(at.digest ? { digest: at.digest } : {}) }),
            ...(rule.export.platform ? { platform: rule.export.platform } : {}),
          },
        }
      : {}),
  };
}
