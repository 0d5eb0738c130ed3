/**
 * Quay (quay.io and Red Hat Quay) repository notifications, `repo_push` event, webhook method.
 *
 * Sources:
 * - Red Hat Quay "Use Red Hat Quay", Repository notifications > Repository Push
 *   (docs.redhat.com/en/documentation/red_hat_quay/3/html/use_red_hat_quay/repository-events):
 *   `{"name", "repository": "dgangaia/test", "namespace", "docker_url": "quay.io/dgangaia/test",
 *   "homepage", "updated_tags": ["latest"]}`.
 * - quay/quay notifications/__init__.py (build_repository_event_data: `docker_url` is
 *   `SERVER_HOSTNAME/namespace/name`), notifications/notificationevent.py (RepoPushEvent sample
 *   data `updated_tags: ["latest", "foo"], pruned_image_count`), notifications/notificationmethod.py
 *   (WebhookMethod POSTs the event data as JSON, no signature, no id header).
 * - Older quay.io payloads (gist jakedt/7533338) have `updated_tags` as an object
 *   `{tag: image id}`; its keys are the tags.
 *
 * Decisions:
 * - One event per updated tag (tags only: the rule's source resolves them).
 * - The registry host comes from `docker_url` (a hint); the repository from `repository`
 *   (namespace/name), else from `docker_url`'s path.
 * - Quay's other events share the same envelope (build_*, vulnerability_found, repo_mirror_*);
 *   without `updated_tags` a notification is not a push and is ignored.
 */
import { coalesceChildren } from './distribution.js';
import { eventFields } from './fields.js';
import { PayloadError, type DeliveryParser, type PushEvent } from './types.js';

/** More tags than this in one notification are counted as ignored, not parsed. */
const MAX_TAGS = 1000;

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown, max = 1024): string | undefined {
  return typeof value === 'string' && value.length > 0 && value.length <= max ? value : undefined;
}

/** `quay.io/ns/repo` -> { host: quay.io, path: ns/repo } (a scheme, if any, is dropped). */
function splitDockerUrl(url: unknown): { host?: string; path?: string } {
  const value = text(url)?.replace(/^[A-Za-z][A-Za-z0-9+.-]*:\/\//, '');
  if (!value) return {};
  const slash = value.indexOf('/');
  return slash > 0 ? { host: value.slice(0, slash), path: value.slice(slash + 1) } : { host: value };
}

export const parseQuay: DeliveryParser = (body) => {
  if (!isRecord(body) || (typeof body.repository !== 'string' && typeof body.docker_url !== 'string')) {
    throw new PayloadError('a Quay notification is {"repository", "namespace", "name", "docker_url", ...}');
  }
  const updated = body.updated_tags;
  const tags: unknown[] = Array.isArray(updated) ? updated : isRecord(updated) ? Object.keys(updated) : [];
  if (!tags.length) return { events: [], ignored: 1 };
  const url = splitDockerUrl(body.docker_url);
  const repository = text(body.repository) ?? url.path;
  const events: PushEvent[] = [];
  let ignored = Math.max(0, tags.length - MAX_TAGS);
  for (const tag of tags.slice(0, MAX_TAGS)) {
    const fields = typeof tag === 'string' ? eventFields({ registry: url.host, repository, tag }) : undefined;
    if (!fields) {
      ignored++;
      continue;
    }
    events.push(fields);
  }
  return { events: coalesceChildren(events), ignored };
};
