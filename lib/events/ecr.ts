/**
 * ECR's "ECR Image Action" EventBridge event (ECR user guide, "Amazon ECR events and
 * EventBridge"): `detail` {result, repository-name, image-digest, action-type, image-tag},
 * with the registry derived from the event's `account` and `region`. Only successful PUSHes count.
 */
import type { PushEvent } from './types.js';
import { eventFields } from './fields.js';

export function parseEcrEvent(event: unknown): PushEvent[] {
  const e = event as { account?: unknown; region?: unknown; id?: unknown; detail?: Record<string, unknown> };
  const d = e?.detail;
  if (!d || d['action-type'] !== 'PUSH' || d.result !== 'SUCCESS') return [];
  if (typeof e.account !== 'string' || !/^\d{12}$/.test(e.account) || typeof e.region !== 'string' || !/^[a-z0-9-]+$/.test(e.region)) return [];
  const fields = eventFields({
    registry: `${e.account}.dkr.ecr.${e.region}.amazonaws.com`,
    repository: d['repository-name'],
    tag: d['image-tag'],
    digest: d['image-digest'],
    mediaType: d['manifest-media-type'],
    id: e.id,
  });
  return fields ? [fields] : [];
}
