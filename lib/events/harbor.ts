/**
 * Harbor webhooks (HTTP endpoint), PUSH_ARTIFACT only.
 *
 * Sources:
 * - goharbor.io/docs/main/working-with-projects/project-configuration/configure-webhooks/
 *   (repo goharbor/website, docs/working-with-projects/project-configuration/configure-webhooks.md):
 *   the default payload `{"type": "PUSH_ARTIFACT", "occur_at", "operator", "event_data":
 *   {"resources": [{"digest", "tag", "resource_url"}], "repository": {"name", "namespace",
 *   "repo_full_name", "repo_type"}}}`.
 * - goharbor/harbor src/pkg/notifier/formats/cloudevents.go (and its test): the CloudEvents format
 *   (Harbor 2.8+), a *structured-mode* CloudEvent (`Content-Type: application/cloudevents+json`)
 *   `{"specversion": "1.0", "id", "requestid", "source", "type": "harbor.artifact.pushed",
 *   "datacontenttype", "time", "data": <event_data>, "operator"}`.
 * - goharbor/harbor src/controller/event/handler/webhook/artifact/artifact.go: one resource per
 *   notification; for a push without a tag, `tag` holds the digest and `resource_url` is
 *   `host/repo@digest`.
 *
 * Decisions:
 * - Harbor itself only sends structured CloudEvents; binary mode (`ce-specversion`/`ce-type`/`ce-id`
 *   headers with the bare `event_data` as the body) is accepted too, because a CloudEvents broker
 *   (Knative, Argo Events) relaying Harbor's events typically delivers in binary mode.
 * - The registry host is taken from `resource_url` (text before the first `/`): a hint, matched
 *   against the rules only. The repository comes from `repo_full_name` (or namespace/name).
 * - A `tag` equal to the digest (or any digest) means "untagged": the event carries the digest only.
 * - Every other type (PULL_ARTIFACT, DELETE_ARTIFACT, SCANNING_*, QUOTA_*, REPLICATION, ...) is
 *   acknowledged and counted as ignored.
 */
import { isDigest } from '../digest.js';
import { coalesceChildren } from './distribution.js';
import { eventFields } from './fields.js';
import { PayloadError, type DeliveryParser, type PushEvent } from './types.js';

const PUSH_TYPES = new Set(['PUSH_ARTIFACT', 'harbor.artifact.pushed']);
/** Harbor sends one resource per notification; more than this is not Harbor. */
const MAX_RESOURCES = 1000;
const MAX_TEXT = 1024;

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown, max = MAX_TEXT): string | undefined {
  return typeof value === 'string' && value.length > 0 && value.length <= max ? value : undefined;
}

/** `harbor.example.com/library/app:tag` -> `harbor.example.com` (a scheme, if any, is dropped). */
function hostOfResourceUrl(url: unknown): string | undefined {
  const value = text(url);
  if (!value) return undefined;
  const rest = value.replace(/^[A-Za-z][A-Za-z0-9+.-]*:\/\//, '');
  const slash = rest.indexOf('/');
  return slash > 0 ? rest.slice(0, slash) : undefined;
}

function repositoryOf(repository: unknown): string | undefined {
  if (!isRecord(repository)) return undefined;
  const full = text(repository.repo_full_name);
  if (full) return full;
  const namespace = text(repository.namespace);
  const name = text(repository.name);
  return namespace && name ? `${namespace}/${name}` : undefined;
}

export const parseHarbor: DeliveryParser = (body, headers) => {
  if (!isRecord(body)) throw new PayloadError('a Harbor webhook is a JSON object ({"type", "event_data"} or a CloudEvent)');
  let type: unknown;
  let data: unknown;
  let deliveryId: string | undefined;
  if (body.specversion !== undefined) {
    // Structured-mode CloudEvent (Harbor's own format).
    if (typeof body.specversion !== 'string' || typeof body.type !== 'string') throw new PayloadError('a CloudEvent needs string "specversion" and "type"');
    type = body.type;
    data = body.data;
    deliveryId = text(body.id, 200);
  } else if (typeof headers['ce-specversion'] === 'string' && typeof headers['ce-type'] === 'string') {
    // Binary-mode CloudEvent (as relayed by brokers): attributes in ce-* headers, the data is the body.
    type = headers['ce-type'];
    data = body;
    deliveryId = text(headers['ce-id'], 200);
  } else if (typeof body.type === 'string') {
    type = body.type;
    data = body.event_data;
  } else {
    throw new PayloadError('not a Harbor webhook: expected {"type", "event_data"} (default format) or a CloudEvent {"specversion", "type", "data"}');
  }
  const base = deliveryId ? { deliveryId } : {};
  if (!PUSH_TYPES.has(type as string)) return { events: [], ignored: 1, ...base };
  // Some relays nest the whole default payload in the CloudEvent's data.
  if (isRecord(data) && !('resources' in data) && isRecord(data.event_data)) data = data.event_data;
  if (!isRecord(data) || !Array.isArray(data.resources) || data.resources.length === 0) return { events: [], ignored: 1, ...base };
  const repository = repositoryOf(data.repository);
  const resources: unknown[] = data.resources;
  const events: PushEvent[] = [];
  let ignored = Math.max(0, resources.length - MAX_RESOURCES);
  for (const resource of resources.slice(0, MAX_RESOURCES)) {
    if (!isRecord(resource) || !repository) {
      ignored++;
      continue;
    }
    const digest = resource.digest;
    let tag = resource.tag;
    // Harbor puts the digest in `tag` when the push had no tag.
    if (typeof tag === 'string' && (tag === digest || isDigest(tag))) tag = undefined;
    const fields = eventFields({ registry: hostOfResourceUrl(resource.resource_url), repository, tag, digest });
    if (!fields) {
      ignored++;
      continue;
    }
    events.push(fields);
  }
  return { events: coalesceChildren(events), ignored, ...base };
};
