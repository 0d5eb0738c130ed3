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
 */
import pLimit from 'p-limit';
import { AuthError, errorMessage, RegistryError } from '../errors.js';
import { plannedRoot } from '../engine/dry-run.js';
import type { RegistryPool } from '../engine/registries.js';
import { MANIFEST_MEDIA_TYPES } from '../manifest/media-types.js';
import type { ReplicationRequest } from '../pipeline/messages.js';
import type { Config, Rule } from './config.js';
import { isValidTag } from '../ref/index.js';
import { endpoints, joinPath, relativePath, repositoryAllowed, selectTags, toRequest } from './match.js';

export interface SyncItem {
  rule: string;
  source: string;
  target: string;
  status: 'copy' | 'present' | 'filtered' | 'failed';
  reason?: string;
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
  /** Tags listed per page. Default 1000. */
  pageSize?: number;
  idPrefix?: string;
}

function rewrites(rule: Rule): boolean {
  return !!(rule.platforms?.length || (rule.annotations && Object.keys(rule.annotations).length) || rule.mode === 'normalise-to-multiarch');
}

async function repositoriesOf(rule: Rule, options: SyncOptions): Promise<{ repositories: string[]; filtered: SyncItem[] }> {
  const ends = endpoints(rule);
  const client = options.registries.get(ends.source.registry);
  const name = rule.name ?? rule.from;
  let listed: string[];
  try {
    listed = await client.listCatalog({ pageSize: options.pageSize ?? 1000 });
  } catch (err) {
    // No catalog (Docker Hub, GHCR, ECR without permission): the prefix itself is the repository.
    const unsupported = (err instanceof RegistryError && [401, 403, 404, 405].includes(err.status)) || err instanceof AuthError;
    if (!unsupported || !ends.source.prefix) throw err;
    listed = [ends.source.prefix];
  }
  const repositories: string[] = [];
  const filtered: SyncItem[] = [];
  for (const repository of listed) {
    const relative = relativePath(repository, ends.source.prefix, ends.source.registry);
    if (relative === undefined) continue;
    if (!repositoryAllowed(rule, repository, relative)) {
      filtered.push({ rule: name, source: `${ends.source.registry}/${repository}`, target: `${ends.target.registry}/${joinPath(ends.target.prefix, relative)}`, status: 'filtered', reason: 'repository filter' });
      continue;
    }
    repositories.push(repository);
  }
  return { repositories, filtered };
}

export async function syncRules(config: Config, options: SyncOptions): Promise<SyncSummary> {
  const summary: SyncSummary = { copy: 0, present: 0, filtered: 0, failed: 0, items: [] };
  const limit = pLimit(options.concurrency ?? 16);
  const add = (item: SyncItem): void => {
    summary.items.push(item);
    summary[item.status === 'copy' ? 'copy' : item.status]++;
  };
  for (const [index, rule] of config.rules.entries()) {
    const name = rule.name ?? String(index);
    if (options.rules && !options.rules.includes(name) && !options.rules.includes(String(index))) continue;
    const ends = endpoints(rule);
    let repositories: string[];
    try {
      const found = await repositoriesOf(rule, options);
      repositories = found.repositories;
      for (const f of found.filtered) add(f);
    } catch (err) {
      add({ rule: name, source: rule.from, target: rule.to, status: 'failed', reason: `listing repositories: ${errorMessage(err)}` });
      continue;
    }
    await Promise.all(
      repositories.map(async (repository) => {
        const relative = relativePath(repository, ends.source.prefix, ends.source.registry) ?? '';
        const targetRepository = joinPath(ends.target.prefix, relative);
        const source = options.registries.get(ends.source.registry).repository(repository, 'pull');
        const target = options.registries.get(ends.target.registry).repository(targetRepository, 'pull');
        let tags: string[];
        try {
          tags = await limit(() => source.listTags({ pageSize: options.pageSize ?? 1000 }));
        } catch (err) {
          add({ rule: name, source: `${ends.source.registry}/${repository}`, target: `${ends.target.registry}/${targetRepository}`, status: 'failed', reason: `listing tags: ${errorMessage(err)}` });
          return;
        }
        // A registry's answer is not trusted to follow the grammar: a tag that does not (too
        // long for the rule's patterns, or naming something else) is reported, never matched.
        const invalid = tags.filter((tag) => !isValidTag(tag));
        for (const tag of invalid) add({ rule: name, source: `${ends.source.registry}/${repository}`, target: `${ends.target.registry}/${targetRepository}`, status: 'failed', reason: `the registry listed ${JSON.stringify(tag.slice(0, 140))}${tag.length > 140 ? '…' : ''}, which is not a valid tag` });
        if (invalid.length) tags = tags.filter(isValidTag);
        const selected = new Set(selectTags(rule, tags));
        await Promise.all(
          tags.map((tag) =>
            limit(async () => {
              const item: SyncItem = { rule: name, source: `${ends.source.registry}/${repository}:${tag}`, target: `${ends.target.registry}/${targetRepository}:${tag}`, status: 'copy' };
              if (!selected.has(tag)) {
                add({ ...item, status: 'filtered', reason: 'tag filter' });
                return;
              }
              try {
                const request = toRequest(rule, { id: `${options.idPrefix ?? 'sync'}/${name}/${repository}:${tag}`, source: item.source, target: item.target, targetRegistry: ends.target.registry, targetRepository, tag });
                // What the target tag must name: the source's digest, or for a rule that rewrites
                // manifests, the root the copy of this very request would produce (planned, not written).
                const wanted = rewrites(rule)
                  ? async () => (await plannedRoot({ source: request.source, target: request.target, mode: request.mode, platforms: request.platforms, annotations: request.annotations, includeForeignLayers: request.includeForeignLayers }, { registries: options.registries })).digest
                  : async () => (await source.headManifest(tag, { accept: MANIFEST_MEDIA_TYPES }))?.digest;
                const [digest, t] = await Promise.all([wanted(), target.headManifest(tag)]);
                if (digest && t?.digest === digest) {
                  add({ ...item, status: 'present' });
                  return;
                }
                if (options.submit) await options.submit(request);
                add(item);
              } catch (err) {
                add({ ...item, status: 'failed', reason: errorMessage(err) });
              }
            }),
          ),
        );
      }),
    );
  }
  summary.items.sort((a, b) => a.source.localeCompare(b.source));
  return summary;
}
