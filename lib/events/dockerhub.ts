/**
 * Docker Hub repository webhooks.
 *
 * Source: docs.docker.com/docker-hub/repos/manage/webhooks/ (repo docker/docs,
 * content/manuals/docker-hub/repos/manage/webhooks.md), "Example webhook payload":
 * `{"callback_url", "push_data": {"pushed_at", "pusher", "tag"}, "repository": {"repo_name":
 * "svendowideit/testhook", "namespace", "name", "owner", "is_official", ...}}`. Docker Hub's only
 * trigger is a push; the payload has no event type, no digest and no signature.
 *
 * Decisions:
 * - The event carries the tag only (no digest): the rule's source re-resolves it.
 * - The registry is always Docker Hub (`registry-1.docker.io`, the host serving its API).
 * - Repository naming: `repo_name` when it has a namespace (`user/app`); a one-component name (as
 *   for official images, whose namespace is `library`) becomes `<namespace or library>/<name>`, the
 *   form ocirelay's references use (`alpine` -> `library/alpine`).
 * - Legacy payloads without `push_data.tag` (only `images`) are ignored: guessing `latest` could
 *   copy the wrong image.
 * - The event id is `repo:tag@pushed_at`, so a replayed body is de-duplicated by ingress.
 */
import { DOCKER_HUB_REGISTRY } from '../ref/index.js';
import { eventFields } from './fields.js';
import { PayloadError, type DeliveryParser } from './types.js';

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown, max = 1024): string | undefined {
  return typeof value === 'string' && value.length > 0 && value.length <= max ? value : undefined;
}

function repositoryOf(repo: Json): string | undefined {
  const repoName = text(repo.repo_name);
  if (repoName?.includes('/')) return repoName;
  const name = repoName ?? text(repo.name);
  if (!name) return undefined;
  return `${text(repo.namespace) ?? 'library'}/${name}`;
}

export const parseDockerHub: DeliveryParser = (body) => {
  if (!isRecord(body) || !isRecord(body.push_data) || !isRecord(body.repository)) {
    throw new PayloadError('a Docker Hub webhook is {"push_data": {...}, "repository": {...}}');
  }
  const push = body.push_data;
  const repository = repositoryOf(body.repository);
  const tag = push.tag;
  if (!repository || typeof tag !== 'string' || !tag) return { events: [], ignored: 1 };
  const pushedAt = push.pushed_at;
  const id = typeof pushedAt === 'number' && Number.isFinite(pushedAt) ? `${repository}:${tag}@${pushedAt}` : undefined;
  const fields = eventFields({ registry: DOCKER_HUB_REGISTRY, repository, tag, id });
  return fields ? { events: [fields], ignored: 0 } : { events: [], ignored: 1 };
};
