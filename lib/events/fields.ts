/**
 * Validation shared by the parsers: an event's fields come from an untrusted payload, so each is
 * checked against the reference grammar; a malformed field drops the event (it is counted as
 * ignored), it never reaches a registry.
 */
import { isDigest } from '../digest.js';
import { isValidTag, normaliseRegistry, parseRepository } from '../ref/index.js';
import type { PushEvent } from './types.js';

export function eventFields(raw: { registry?: unknown; repository?: unknown; tag?: unknown; digest?: unknown; mediaType?: unknown; id?: unknown }): PushEvent | undefined {
  if (typeof raw.repository !== 'string' || !raw.repository) return undefined;
  let registry: string | undefined;
  if (typeof raw.registry === 'string' && raw.registry) {
    try {
      registry = normaliseRegistry(raw.registry);
    } catch {
      return undefined;
    }
  }
  let repository: string;
  try {
    // Distribution's grammar (lowercase components, the 255-character name limit counted with the
    // host the payload names, or a short one when it names none).
    repository = parseRepository(`${registry ?? 'x.io'}/${raw.repository}`).repository;
  } catch {
    return undefined;
  }
  const event: PushEvent = { repository, ...(registry ? { registry } : {}) };
  if (raw.tag !== undefined && raw.tag !== null && raw.tag !== '') {
    if (typeof raw.tag !== 'string' || !isValidTag(raw.tag)) return undefined;
    event.tag = raw.tag;
  }
  if (raw.digest !== undefined && raw.digest !== null && raw.digest !== '') {
    if (typeof raw.digest !== 'string' || !isDigest(raw.digest)) return undefined;
    event.digest = raw.digest;
  }
  if (!event.tag && !event.digest) return undefined;
  if (typeof raw.mediaType === 'string' && /^[\w.+-]{1,127}\/[\w.+-]{1,127}$/.test(raw.mediaType)) event.mediaType = raw.mediaType;
  if (typeof raw.id === 'string' && raw.id.length <= 200) event.id = raw.id;
  return event;
}
