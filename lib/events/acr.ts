/**
 * Azure Container Registry webhooks, `push` action.
 *
 * Source: learn.microsoft.com/azure/container-registry/container-registry-webhook-reference (repo
 * MicrosoftDocs/azure-management-docs, articles/container-registry/
 * container-registry-webhook-reference.md): `{"id", "timestamp", "action": "push", "target":
 * {"mediaType", "size", "digest", "length", "repository", "tag"}, "request": {"id", "host":
 * "myregistry.azurecr.io", "method", "useragent"}}`; other actions are `chart_push`, `delete`,
 * `chart_delete` (and `quarantine` for registries with quarantine enabled). ACR adds no headers
 * beyond the custom ones configured on the webhook, so there is no signature and no delivery id
 * header: the event's `id` is used for replay de-duplication.
 *
 * Decisions:
 * - Only `push` of a manifest counts (when `mediaType` is given it must be a manifest media type;
 *   Helm charts pushed the legacy way arrive as `chart_push` and are ignored).
 * - The registry host comes from `request.host` (a hint, matched against the rules only).
 * - A push without a tag (a child manifest of an index, pushed by digest) gives a digest event,
 *   as in distribution's notifications, whose format ACR's mirrors; ACR sends one event per
 *   request, so there is nothing to coalesce within a delivery.
 */
import { isManifestMediaType } from '../manifest/media-types.js';
import { eventFields } from './fields.js';
import { PayloadError, type DeliveryParser } from './types.js';

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export const parseAcr: DeliveryParser = (body) => {
  if (!isRecord(body) || typeof body.action !== 'string') {
    throw new PayloadError('an Azure Container Registry webhook is {"id", "timestamp", "action", "target", "request"}');
  }
  const id = typeof body.id === 'string' && body.id.length > 0 && body.id.length <= 200 ? body.id : undefined;
  const base = id ? { deliveryId: id } : {};
  const target = body.target;
  if (body.action !== 'push' || !isRecord(target)) return { events: [], ignored: 1, ...base };
  if (target.mediaType !== undefined && (typeof target.mediaType !== 'string' || !isManifestMediaType(target.mediaType))) {
    return { events: [], ignored: 1, ...base };
  }
  const request = body.request;
  const fields = eventFields({
    registry: isRecord(request) ? request.host : undefined,
    repository: target.repository,
    tag: target.tag,
    digest: target.digest,
    mediaType: target.mediaType,
    id,
  });
  return fields ? { events: [fields], ignored: 0, ...base } : { events: [], ignored: 1, ...base };
};
