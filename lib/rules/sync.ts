/**
 * Bulk migration: for every rule, list the source's repositories (the catalog, paginated; a rule
 * naming one repository needs no catalog) and tags (paginated), apply the rule's filters, compare
 * with the target by manifest HEAD, and hand over only what differs. Reports what was handed over
 * (to copy), what was already there, what the filters left out, and what failed.
 *
 * The comparison is by digest: the target tag's digest against the source tag's (one HEAD each).
 * A rule that rewrites manifests (platforms, annotations, normalise) gives the target another
 * digest than the source's: the target tag is compared with the root the copy would produce,
 * planned from the source without writing anything (the source's index and the manifests and
 * configs the plan reads, as a dry run does).
 *
 * Two steps make a sync, and both runtimes use these same two functions:
 * - `ruleRepositoriesPage`: one page of a rule's repositories, filtered by the rule;
 * - `syncRepository`: one repository's tags listed, filtered, compared, and what differs submitted.
 * `syncRules` (`ocirelay sync`) runs them in this process; the scheduled sync runs each step in a
 * fan-out invocation of its own (lib/pipeline/sync.ts).
 */
import { createHash } from 'node:crypto';
import pLimit, { type LimitFunction } from 'p-limit';
import { AuthError, errorMessage, ErrorCodes, OciRelayError, RegistryError } from '../errors.js';
import { plannedRoot } from '../engine/dry-run.js';
import type { RegistryPool } from '../engine/registries.js';
import { MANIFEST_MEDIA_TYPES } from '../manifest/media-types.js';
import type { Repository } from '../oci/client.js';
import type { ReplicationRequest } from '../pipeline/messages.js';
import type { Config, Rule } from './config.js';
import { isValidRepositoryPath, isValidTag } from '../ref/index.js';
import { endpoints, joinPath, relativePath, repositoryAllowed, selectRules, selectTags, toRequest } from './match.js';

export interface SyncItem {
  rule: string;
  source: string;
  target: string;
  status: 'copy' | 'present' | 'filtered' | 'failed';
  reason?: string;
  /** A failure no retry can fix (a name the registry listed that breaks the grammar, a next page elsewhere). */
  permanent?: true;
}

export interface SyncSummary {
  /** Handed over to be copied. */
  copy: number;
  present: number;
  filtered: number;
  failed: number;
  items: SyncItem[];
}

export interface SyncOptions {
  registries: RegistryPool;
  /** Receives each request to copy; absent in a dry run. */
  submit?: (request: ReplicationRequest) => Promise<void>;
  /** Only these rules (by name or index). */
  rules?: readonly string[];
  /** HEAD requests at once. Default 16. */
  concurrency?: number;
  /** Repositories and tags listed per page. Default 1000. */
  pageSize?: number;
  idPrefix?: string;
}

/** A rule and the name sync reports it by (its name, or its index). */
export interface SyncRule {
  rule: Rule;
  label: string;
}

/** What the sync of one repository needs. */
export interface RepositorySyncOptions {
  registries: RegistryPool;
  /** Receives each request to copy; absent in a dry run. */
  submit?: (request: ReplicationRequest) => Promise<void>;
  /** Runs each registry request; one limit may be shared by many repositories. Default: 16 at once. */
  limit?: LimitFunction;
  /** Tags listed per page. Default 1000. */
  pageSize?: number;
  /** Requests are named `<idPrefix>/<rule>/<repository>:<tag>`. Default 'sync'. */
  idPrefix?: string;
  /** Compare exactly these tags (selected by an earlier listing) instead of listing the repository's. */
  tags?: readonly string[];
  /**
   * With `handOn`: when the listing selects more than `maxTags` tags, they are handed on in
   * batches of `maxTags`, each to be compared elsewhere (with `tags`), instead of compared here.
   */
  maxTags?: number;
  handOn?: (tags: string[]) => Promise<void>;
}

/** A request's id is at most 200 characters: a longer one keeps its start and a hash of the whole. */
const MAX_REQUEST_ID = 200;

export function syncRequestId(prefix: string, label: string, repository: string, tag: string): string {
  const id = `${prefix}/${label}/${repository}:${tag}`;
  if (id.length <= MAX_REQUEST_ID) return id;
  const hash = createHash('sha256').update(id).digest('hex').slice(0, 16);
  return `${id.slice(0, MAX_REQUEST_ID - hash.length - 1)}~${hash}`;
}

function rewrites(rule: Rule): boolean {
  return !!(rule.platforms?.length || (rule.annotations && Object.keys(rule.annotations).length) || rule.mode === 'normalise-to-multiarch');
}

/** A name a registry listed, as a reason may quote it (never whole: it may be huge). */
function quoted(name: string): string {
  return `${JSON.stringify(name.slice(0, 140))}${name.length > 140 ? '…' : ''}`;
}

/** True when the rule covers `repository` (below its prefix and allowed by its repository filters). */
export function ruleCovers(rule: Rule, repository: string): boolean {
  const ends = endpoints(rule);
  const relative = relativePath(repository, ends.source.prefix, ends.source.registry);
  return relative !== undefined && repositoryAllowed(rule, repository, relative);
}

/**
 * One page of a rule's repositories: the source's catalog from `cursor` (the `next` of the page
 * before; absent for the first), filtered by the rule. A registry without a catalog (Docker Hub,
 * GHCR, ECR without the permission) gives the rule's prefix itself as its one repository. A
 * catalog entry that breaks the repository grammar is reported, never listed or asked for; so is
 * a next page the registry names elsewhere (the listing ends there).
 */
export async function ruleRepositoriesPage(sync: SyncRule, options: { registries: RegistryPool; pageSize?: number; cursor?: string }): Promise<{ repositories: string[]; items: SyncItem[]; next?: string }> {
  const { rule, label } = sync;
  const ends = endpoints(rule);
  let page: { repositories: string[]; next?: string; stopped?: string };
  try {
    page = await options.registries.get(ends.source.registry).catalogPage({ pageSize: options.pageSize ?? 1000, ...(options.cursor !== undefined ? { next: options.cursor } : {}) });
  } catch (err) {
    const unsupported = (err instanceof RegistryError && [401, 403, 404, 405].includes(err.status)) || err instanceof AuthError;
    if (!unsupported || !ends.source.prefix || options.cursor !== undefined) throw err;
    page = { repositories: [ends.source.prefix] };
  }
  const repositories: string[] = [];
  const items: SyncItem[] = [];
  const from = [ends.source.registry, ends.source.prefix].filter(Boolean).join('/');
  const to = [ends.target.registry, ends.target.prefix].filter(Boolean).join('/');
  // A next page the registry named elsewhere: this page counts, the listing ends here.
  if (page.stopped) items.push({ rule: label, source: from, target: to, status: 'failed', reason: `listing repositories: ${page.stopped}`, permanent: true });
  for (const repository of page.repositories) {
    const relative = relativePath(repository, ends.source.prefix, ends.source.registry);
    if (relative === undefined) continue;
    if (!isValidRepositoryPath(repository)) {
      items.push({ rule: label, source: from, target: to, status: 'failed', reason: `the registry listed ${quoted(repository)}, which is not a valid repository name`, permanent: true });
      continue;
    }
    if (!repositoryAllowed(rule, repository, relative)) {
      items.push({ rule: label, source: `${ends.source.registry}/${repository}`, target: `${ends.target.registry}/${joinPath(ends.target.prefix, relative)}`, status: 'filtered', reason: 'repository filter' });
      continue;
    }
    repositories.push(repository);
  }
  return { repositories, items, ...(page.next !== undefined ? { next: page.next } : {}) };
}

/**
 * The sync of one repository of a rule: its tags listed (paginated) and filtered, each selected
 * tag compared with the target, and a request submitted for each that differs. Every outcome is
 * an item; a listing that fails is one failed item. With `tags`, those are compared without a
 * listing; with `handOn`, a listing that selects more than `maxTags` is handed on in batches.
 */
export async function syncRepository(sync: SyncRule, repository: string, options: RepositorySyncOptions): Promise<SyncItem[]> {
  const { rule, label } = sync;
  const ends = endpoints(rule);
  const relative = relativePath(repository, ends.source.prefix, ends.source.registry);
  if (relative === undefined) throw new OciRelayError(ErrorCodes.Config, `${ends.source.registry}/${repository} is not below the prefix of rule ${label}`);
  const targetRepository = joinPath(ends.target.prefix, relative);
  const names = { rule: label, source: `${ends.source.registry}/${repository}`, target: `${ends.target.registry}/${targetRepository}` };
  const source = options.registries.get(ends.source.registry).repository(repository, 'pull');
  const target = options.registries.get(ends.target.registry).repository(targetRepository, 'pull');
  const limit = options.limit ?? pLimit(16);
  const items: SyncItem[] = [];
  let tags: string[];
  if (options.tags) tags = [...options.tags];
  else {
    let listed: string[];
    try {
      listed = await limit(() => source.listTags({ pageSize: options.pageSize ?? 1000 }));
    } catch (err) {
      return [{ ...names, status: 'failed', reason: `listing tags: ${errorMessage(err)}` }];
    }
    // A registry's answer is not trusted to follow the grammar: a tag that does not (too long
    // for the rule's patterns, or naming something else) is reported, never matched.
    const valid = listed.filter(isValidTag);
    for (const tag of listed) if (!isValidTag(tag)) items.push({ ...names, status: 'failed', reason: `the registry listed ${quoted(tag)}, which is not a valid tag`, permanent: true });
    const selected = new Set(selectTags(rule, valid));
    for (const tag of valid) if (!selected.has(tag)) items.push({ ...names, source: `${names.source}:${tag}`, target: `${names.target}:${tag}`, status: 'filtered', reason: 'tag filter' });
    tags = valid.filter((tag) => selected.has(tag));
    const batch = options.maxTags ?? Infinity;
    if (options.handOn && tags.length > batch) {
      for (let i = 0; i < tags.length; i += batch) await options.handOn(tags.slice(i, i + batch));
      return items;
    }
  }
  const compared = await Promise.all(tags.map((tag) => limit(() => compareTag(sync, { source, target, targetRepository, tag, names }, options))));
  return [...items, ...compared];
}

/** One selected tag: already in the target as the rule would make it, or submitted to be copied. */
async function compareTag(sync: SyncRule, at: { source: Repository; target: Repository; targetRepository: string; tag: string; names: { source: string; target: string } }, options: RepositorySyncOptions): Promise<SyncItem> {
  const { rule, label } = sync;
  const { source, target, tag } = at;
  const item: SyncItem = { rule: label, source: `${at.names.source}:${tag}`, target: `${at.names.target}:${tag}`, status: 'copy' };
  try {
    const request = toRequest(rule, { id: syncRequestId(options.idPrefix ?? 'sync', label, source.name, tag), source: item.source, target: item.target, targetRegistry: target.client.registry, targetRepository: at.targetRepository, tag });
    // What the target tag must name: the source's digest, or for a rule that rewrites
    // manifests, the root the copy of this very request would produce (planned, not written).
    const wanted = rewrites(rule)
      ? async () => (await plannedRoot({ source: request.source, target: request.target, mode: request.mode, platforms: request.platforms, annotations: request.annotations, includeForeignLayers: request.includeForeignLayers }, { registries: options.registries })).digest
      : async () => (await source.headManifest(tag, { accept: MANIFEST_MEDIA_TYPES }))?.digest;
    const [digest, present] = await Promise.all([wanted(), target.headManifest(tag)]);
    if (digest && present?.digest === digest) return { ...item, status: 'present' };
    if (options.submit) await options.submit(request);
    return item;
  } catch (err) {
    return { ...item, status: 'failed', reason: errorMessage(err) };
  }
}

/** `ocirelay sync`: every selected rule, page by page, its repositories concurrently (one limit for all requests). */
export async function syncRules(config: Config, options: SyncOptions): Promise<SyncSummary> {
  const summary: SyncSummary = { copy: 0, present: 0, filtered: 0, failed: 0, items: [] };
  const limit = pLimit(options.concurrency ?? 16);
  const add = (item: SyncItem): void => {
    summary.items.push(item);
    summary[item.status === 'copy' ? 'copy' : item.status]++;
  };
  const repositoryOptions: RepositorySyncOptions = { registries: options.registries, limit, ...(options.submit ? { submit: options.submit } : {}), ...(options.pageSize ? { pageSize: options.pageSize } : {}), ...(options.idPrefix ? { idPrefix: options.idPrefix } : {}) };
  for (const { rule, label } of selectRules(config, options.rules)) {
    const repositories: Promise<void>[] = [];
    const seen = new Set<string>();
    let cursor: string | undefined;
    do {
      let page;
      try {
        if (cursor !== undefined && seen.has(cursor)) throw new OciRelayError(ErrorCodes.Registry, `the catalog's pagination loops back to ${cursor.slice(0, 200)}`);
        if (cursor !== undefined) seen.add(cursor);
        page = await ruleRepositoriesPage({ rule, label }, { registries: options.registries, ...(options.pageSize ? { pageSize: options.pageSize } : {}), ...(cursor !== undefined ? { cursor } : {}) });
      } catch (err) {
        add({ rule: label, source: rule.from, target: rule.to, status: 'failed', reason: `listing repositories: ${errorMessage(err)}` });
        break;
      }
      for (const item of page.items) add(item);
      for (const repository of page.repositories) {
        repositories.push(
          syncRepository({ rule, label }, repository, repositoryOptions).then(
            (items) => items.forEach(add),
            (err: unknown) => add({ rule: label, source: repository, target: rule.to, status: 'failed', reason: errorMessage(err) }),
          ),
        );
      }
      cursor = page.next;
    } while (cursor !== undefined);
    await Promise.all(repositories);
  }
  summary.items.sort((a, b) => a.source.localeCompare(b.source));
  return summary;
}
