/**
 * The scheduled sync as steps of the pipeline (docs/RULES.md, "The scheduled sync"). Ingress
 * turns the schedule's event into one sync message per rule (`ruleSyncMessages`); fan-out runs
 * each step (`runSyncStep`) and hands the next ones to itself through the Invoker port (Lambda's
 * asynchronous invoke in AWS, in process in the embedded runtime), so that Lambda queues, runs
 * in parallel and retries them, and no invocation does more than one bounded step:
 *
 * ```
 * rule step (catalog page n) ─┬─> repository step, one per repository the rule selects on the page
 * │                           └─> rule step (catalog page n + 1)
 * repository step ─> tags listed and filtered ─┬─> at most MAX_SYNC_TAGS compared; a replication request per tag that differs
 *                                              └─> more: repository steps with `tags`, one per batch of MAX_SYNC_TAGS
 * ```
 *
 * The steps are lib/rules/sync.ts's own (`ruleRepositoriesPage`, `syncRepository`), the very code
 * `ocirelay sync` runs in one process. Every step is idempotent: run twice, it lists and compares
 * twice and submits again what is still missing (a replication request is idempotent too).
 */
import pLimit from 'p-limit';
import { errorMessage, ErrorCodes, OciRelayError } from '../errors.js';
import type { Config } from '../rules/config.js';
import { ruleCovers, ruleRepositoriesPage, syncRepository, type SyncItem, type SyncRule } from '../rules/sync.js';
import { InvalidMessageError, MAX_SYNC_PAGES, MAX_SYNC_TAGS, serialise, type SyncMessage } from './messages.js';
import type { PipelineEnv } from './stages.js';

export interface SyncStepResult {
  step: 'rule' | 'repository';
  /** Rule step: repository steps handed on. */
  repositories?: number;
  /** Rule step: the next catalog page was handed on. */
  nextPage?: boolean;
  /** Repository step: batches of tags handed on. */
  batches?: number;
  /** Replication requests submitted. */
  copy: number;
  present: number;
  filtered: number;
  /** Failures no retry can fix (names the registry listed that break the grammar, a next page elsewhere); the rest throws. */
  failed: number;
}

/** The rule a message names, checked against the configuration: its place and its name must agree. */
function resolveRule(message: SyncMessage, config: Config | undefined): SyncRule {
  if (!config) throw new OciRelayError(ErrorCodes.Config, 'sync messages need the rules (OCIRELAY_CONFIG or OCIRELAY_CONFIG_FILE), and this environment has none');
  const rule = config.rules[message.rule.index];
  if (!rule || rule.name !== message.rule.name) {
    throw new InvalidMessageError(`sync message: the configuration has no rule ${message.rule.index}${message.rule.name ? ` named ${JSON.stringify(message.rule.name)}` : ' without a name'} (it changed since the message was sent)`);
  }
  return { rule, label: rule.name ?? String(message.rule.index) };
}

function count(items: readonly SyncItem[]): Omit<SyncStepResult, 'step'> {
  const out = { copy: 0, present: 0, filtered: 0, failed: 0 };
  for (const item of items) out[item.status]++;
  return out;
}

/**
 * Runs one step of a sync. Throws when the step did not do all it should and a retry may (a
 * listing or a comparison failed): the invocation fails, Lambda retries it (twice), and then
 * records it in the failed-requests queue. Throws InvalidMessageError for a message that can never
 * succeed (its rule is gone, its repository is outside the rule).
 */
export async function runSyncStep(message: SyncMessage, env: PipelineEnv): Promise<SyncStepResult> {
  const sync = resolveRule(message, env.config);
  const log = env.logger;
  const limit = pLimit(env.syncConcurrency ?? 16);
  const handOn = (next: SyncMessage): Promise<void> => env.fanout.invokeAsync(serialise(next));
  const base = { v: message.v, type: message.type, id: message.id, rule: message.rule } as const;
  env.metrics.add('SyncSteps');

  if (message.repository === undefined) {
    const page = message.page ?? 1;
    let listed;
    try {
      listed = await ruleRepositoriesPage(sync, { registries: env.registries, ...(env.syncPageSize ? { pageSize: env.syncPageSize } : {}), ...(message.cursor !== undefined ? { cursor: message.cursor } : {}) });
    } catch (err) {
      throw new OciRelayError(err instanceof OciRelayError ? err.code : ErrorCodes.Registry, `sync of rule ${sync.label}: listing repositories (page ${page}): ${errorMessage(err)}`, { cause: err, retryable: true });
    }
    // The page's repositories first, the next page last: a retry of this step (after a failed
    // hand-over) re-sends this page's steps, never a second chain of pages.
    await Promise.all(listed.repositories.map((repository) => limit(() => handOn({ ...base, repository }))));
    const result: SyncStepResult = { step: 'rule', repositories: listed.repositories.length, nextPage: false, ...count(listed.items) };
    if (listed.next !== undefined) {
      if (page >= MAX_SYNC_PAGES) throw new OciRelayError(ErrorCodes.Registry, `sync of rule ${sync.label}: the catalog has more than ${MAX_SYNC_PAGES} pages; the rest is not synced`);
      await handOn({ ...base, cursor: listed.next, page: page + 1 });
      result.nextPage = true;
    }
    report(env, log, result, listed.items);
    return result;
  }

  const repository = message.repository;
  if (!ruleCovers(sync.rule, repository)) throw new InvalidMessageError(`sync message: repository ${repository} is not one rule ${sync.label} selects`);
  let batches = 0;
  const items = await syncRepository(sync, repository, {
    registries: env.registries,
    submit: (request) => env.fanout.invokeAsync(serialise(request)),
    limit,
    ...(env.syncPageSize ? { pageSize: env.syncPageSize } : {}),
    idPrefix: message.id,
    ...(message.tags ? { tags: message.tags } : {}),
    maxTags: Math.min(env.syncTagsPerMessage ?? MAX_SYNC_TAGS, MAX_SYNC_TAGS),
    handOn: async (tags) => {
      await handOn({ ...base, repository, tags });
      batches++;
    },
  });
  const result: SyncStepResult = { step: 'repository', batches, ...count(items) };
  const retryable = items.filter((i) => i.status === 'failed' && !i.permanent);
  result.failed -= retryable.length;
  report(env, log, result, items);
  if (retryable.length) {
    const shown = retryable.slice(0, 3).map((i) => `${i.source}: ${i.reason ?? 'failed'}`);
    throw new OciRelayError(ErrorCodes.Registry, `sync of ${repository} (rule ${sync.label}): ${retryable.length} of ${items.length - result.filtered} could not be synced (${shown.join('; ')}${retryable.length > shown.length ? '; …' : ''}); what differed otherwise was requested`, { retryable: true });
  }
  return result;
}

function report(env: PipelineEnv, log: PipelineEnv['logger'], result: SyncStepResult, items: readonly SyncItem[]): void {
  env.metrics.add('SyncRequested', result.copy);
  env.metrics.add('SyncPresent', result.present);
  env.metrics.add('SyncFiltered', result.filtered);
  const failures = items.filter((i) => i.status === 'failed');
  env.metrics.add('SyncFailures', failures.length);
  for (const f of failures.filter((i) => i.permanent).slice(0, 20)) log.warn('sync: the registry answered something that is not valid; it is skipped', { source: f.source, reason: f.reason });
  log.info('sync step done', { ...result, ...(failures.length ? { failures: failures.slice(0, 20).map((f) => ({ source: f.source, reason: f.reason })) } : {}) });
}
