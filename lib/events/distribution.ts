/**
 * CNCF distribution notifications (docs/notifications.md): an envelope `{"events": [...]}` sent
 * as `application/vnd.docker.distribution.events.v1+json` (or `...v2+json`), each event with
 * `action` (push, pull, mount, delete), `target` {mediaType, digest, repository, url, tag} and
 * `request` {host}. Only manifest pushes count: blob pushes (octet-stream, layer media types)
 * are ignored. A pushed index arrives as one event per child (by digest) and one for the index
 * (with its tag); the untagged children are coalesced into the tagged push of the same repository.
 */
import { isManifestMediaType } from '../manifest/media-types.js';
import { PayloadError, type DeliveryParser, type PushEvent } from './types.js';
import { eventFields } from './fields.js';

export const DISTRIBUTION_CONTENT_TYPES = ['application/vnd.docker.distribution.events.v1+json', 'application/vnd.docker.distribution.events.v2+json', 'application/json'];

export const parseDistribution: DeliveryParser = (body) => {
  if (typeof body !== 'object' || body === null || !Array.isArray((body as { events?: unknown }).events)) {
    throw new PayloadError('a distribution notification is {"events": [...]}');
  }
  const raw = (body as { events: unknown[] }).events;
  const events: PushEvent[] = [];
  let ignored = 0;
  for (const item of raw) {
    const e = item as { id?: unknown; action?: unknown; target?: Record<string, unknown>; request?: Record<string, unknown> };
    const target = e?.target;
    if (e?.action !== 'push' || typeof target !== 'object' || target === null || typeof target.mediaType !== 'string' || !isManifestMediaType(target.mediaType)) {
      ignored++;
      continue;
    }
    const fields = eventFields({
      registry: hostOf(e.request?.host, target.url),
      repository: target.repository,
      tag: target.tag,
      digest: target.digest,
      mediaType: target.mediaType,
      id: e.id,
    });
    if (!fields) {
      ignored++;
      continue;
    }
    events.push(fields);
  }
  return { events: coalesceChildren(events), ignored };
};

function hostOf(host: unknown, url: unknown): unknown {
  if (typeof host === 'string' && host) return host;
  if (typeof url === 'string') {
    try {
      return new URL(url).host;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** Untagged pushes to a repository that also saw a tagged push are the children of that push. */
export function coalesceChildren(events: PushEvent[]): PushEvent[] {
  const tagged = new Set(events.filter((e) => e.tag).map((e) => `${e.registry ?? ''}/${e.repository}`));
  const seen = new Set<string>();
  return events.filter((e) => {
    if (!e.tag && tagged.has(`${e.registry ?? ''}/${e.repository}`)) return false;
    const key = `${e.registry ?? ''}/${e.repository}:${e.tag ?? ''}@${e.digest ?? ''}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
