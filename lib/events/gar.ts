/**
 * Google Artifact Registry (and Container Registry) notifications through a Pub/Sub push
 * subscription on the `gcr` topic.
 *
 * Sources:
 * - cloud.google.com/artifact-registry/docs/configure-notifications: the message data is JSON
 *   `{"action": "INSERT" | "DELETE", "digest": "us-east1-docker.pkg.dev/my-project/my-repo/
 *   hello-world@sha256:...", "tag": "us-east1-docker.pkg.dev/my-project/my-repo/hello-world:1.1"}`
 *   (`digest` and `tag` are each optional: an untagged upload has only `digest`, a tag deletion
 *   only `tag`).
 * - cloud.google.com/pubsub/docs/push ("Receive messages"): the push request body is
 *   `{"message": {"attributes", "data": <base64>, "messageId", "message_id", "publishTime",
 *   "publish_time"}, "subscription": "projects/.../subscriptions/..."}`.
 * - cloud.google.com/pubsub/docs/payload-unwrapping: with payload unwrapping the body is the raw
 *   message data, and with "write metadata" the id arrives as `x-goog-pubsub-message-id`.
 *
 * Decisions:
 * - Only `INSERT` counts; `DELETE` (and anything else) is ignored.
 * - The registry host and repository are parsed out of the `digest`/`tag` references with
 *   parseReference (a hint); both must name a host explicitly and, when both are present, the same
 *   repository.
 * - The Pub/Sub message id is the delivery id (Pub/Sub redelivers with the same id) and the
 *   event id.
 * - A well-formed push envelope whose data is not a notification (not base64 JSON, wrong shape)
 *   is acknowledged and counted as ignored rather than refused: Pub/Sub retries every non-2xx
 *   answer until the message expires.
 */
import { parseReference, type Reference } from '../ref/index.js';
import { eventFields } from './fields.js';
import { PayloadError, type DeliveryParser, type ParsedDelivery } from './types.js';

/** Artifact Registry's messages are a few hundred bytes; anything this large is not one. */
const MAX_DATA = 64 * 1024;
const MAX_REFERENCE = 1024;

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown, max: number): string | undefined {
  return typeof value === 'string' && value.length > 0 && value.length <= max ? value : undefined;
}

/** undefined when absent, null when present but not a reference with an explicit host. */
function reference(value: unknown, part: 'tag' | 'digest'): Reference | null | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const ref = text(value, MAX_REFERENCE);
  const first = ref?.split('/', 1)[0] ?? '';
  if (!ref || !ref.includes('/') || !(first.includes('.') || first.includes(':') || first === 'localhost')) return null;
  try {
    const parsed = parseReference(ref, { defaultTag: '' });
    return parsed[part] ? parsed : null;
  } catch {
    return null;
  }
}

function decode(data: unknown): unknown {
  if (typeof data !== 'string' || data.length > MAX_DATA) return undefined;
  try {
    return JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
  } catch {
    return undefined;
  }
}

export const parseGar: DeliveryParser = (body, headers) => {
  if (!isRecord(body)) throw new PayloadError('a Pub/Sub push is {"message": {"data", "messageId", ...}, "subscription"}');
  let notification: unknown;
  let deliveryId: string | undefined;
  if (isRecord(body.message)) {
    const message = body.message;
    deliveryId = text(message.messageId, 200) ?? text(message.message_id, 200);
    notification = decode(message.data);
  } else if (typeof body.action === 'string') {
    // Payload unwrapping: the body is the notification itself.
    notification = body;
    deliveryId = text(headers['x-goog-pubsub-message-id'], 200);
  } else {
    throw new PayloadError('a Pub/Sub push is {"message": {"data", "messageId", ...}, "subscription"} (or, unwrapped, {"action", "digest", "tag"})');
  }
  const result = (events: ParsedDelivery['events'], ignored: number): ParsedDelivery => ({ events, ignored, ...(deliveryId ? { deliveryId } : {}) });
  if (!isRecord(notification) || notification.action !== 'INSERT') return result([], 1);
  const byDigest = reference(notification.digest, 'digest');
  const byTag = reference(notification.tag, 'tag');
  if (byDigest === null || byTag === null || (!byDigest && !byTag)) return result([], 1);
  if (byDigest && byTag && (byDigest.registry !== byTag.registry || byDigest.repository !== byTag.repository)) return result([], 1);
  const ref = (byTag ?? byDigest) as Reference;
  const fields = eventFields({
    registry: ref.registry,
    repository: ref.repository,
    tag: byTag?.tag,
    digest: byDigest?.digest ?? byTag?.digest,
    id: deliveryId,
  });
  return fields ? result([fields], 0) : result([], 1);
};
