/**
 * GitHub Packages / GHCR: the `package` and `registry_package` webhook events.
 *
 * Sources:
 * - docs.github.com/en/webhooks/webhook-events-and-payloads#package and #registry_package; the
 *   payload examples in octokit/webhooks (payload-examples/api.github.com/package/
 *   published.docker.payload.json, registry_package/published.docker.payload.json): `action`
 *   (`published`, `updated`), `package`/`registry_package` {name, namespace, package_type, owner
 *   {login}, package_version {version, name, container_metadata {tag {name, digest}, manifest
 *   {digest, media_type}}, package_url}, registry {type}}.
 * - A delivered CONTAINER payload (JRoy/disgit#3): `package_type: "CONTAINER"`, `namespace` the
 *   lowercased owner, `name` with a `/` (`repositoryname/frontend`), `owner.login` mixed case.
 * - Headers: `X-GitHub-Event` (event name, `ping` when the hook is created) and `X-GitHub-Delivery`
 *   (a GUID per delivery). The HMAC (`X-Hub-Signature-256`) is checked by ingress before parsing.
 *
 * Decisions:
 * - Registry `ghcr.io` (or the host of `package_url`, for GitHub Enterprise's container host);
 *   repository `<owner>/<name>`, lowercased (GHCR paths are lowercase, logins are not).
 * - A container is recognised by `package_type` or `registry.type` (`container`/`docker`, any case);
 *   `ecosystem` is not used (GitHub's own examples set it to `docker` for an npm package).
 * - Untagged versions are ignored. A multi-arch push publishes one version per platform manifest
 *   (and per attestation manifest) without a tag plus one tagged version for the index, each in its
 *   own delivery (github/docs#22091), so they cannot be coalesced within a delivery as distribution
 *   children are; copying the tagged index brings its children, and copying a child on its own
 *   would bypass the rule's platform filter.
 * - The digest is the first of `package_version.version`, `package_version.name`,
 *   `container_metadata.tag.digest`, `container_metadata.manifest.digest` that is a digest; when
 *   one is present but none is valid, the event is dropped.
 * - `ping` gives no events and ignores nothing; any other event, action or package type is ignored.
 */
import { isDigest } from '../digest.js';
import { eventFields } from './fields.js';
import { PayloadError, type DeliveryParser, type ParsedDelivery } from './types.js';

const GHCR = 'ghcr.io';
const ACTIONS = new Set(['published', 'updated']);
const CONTAINER_TYPES = new Set(['container', 'docker']);

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown, max = 1024): string | undefined {
  return typeof value === 'string' && value.length > 0 && value.length <= max ? value : undefined;
}

function field(object: unknown, key: string): unknown {
  return isRecord(object) ? object[key] : undefined;
}

/** `ghcr.io/owner/name:tag` -> `ghcr.io`; anything without a dotted host gives ghcr.io. */
function registryOf(packageUrl: unknown): string {
  const value = text(packageUrl);
  const slash = value?.indexOf('/') ?? -1;
  const host = value && slash > 0 ? value.slice(0, slash) : undefined;
  return host && /^[A-Za-z0-9.-]+(?::\d+)?$/.test(host) && host.includes('.') ? host : GHCR;
}

function isContainer(pkg: Json): boolean {
  const types = [pkg.package_type, field(pkg.registry, 'type')];
  return types.some((t) => typeof t === 'string' && CONTAINER_TYPES.has(t.toLowerCase()));
}

export const parseGitHub: DeliveryParser = (body, headers) => {
  const event = headers['x-github-event'];
  const deliveryId = text(headers['x-github-delivery'], 200);
  const result = (events: ParsedDelivery['events'], ignored: number): ParsedDelivery => ({ events, ignored, ...(deliveryId ? { deliveryId } : {}) });
  if (event === 'ping') return result([], 0);
  if (event !== undefined && event !== 'package' && event !== 'registry_package') return result([], 1);
  if (!isRecord(body)) throw new PayloadError('a GitHub webhook payload is a JSON object');
  const key = event ?? (isRecord(body.registry_package) ? 'registry_package' : 'package');
  const pkg = body[key];
  if (!isRecord(pkg)) throw new PayloadError(`a GitHub ${key} event has a "${key}" object`);
  if (typeof body.action !== 'string' || !ACTIONS.has(body.action) || !isContainer(pkg)) return result([], 1);

  const version = pkg.package_version;
  const metadata = field(version, 'container_metadata');
  const tag = field(field(metadata, 'tag'), 'name');
  if (!isRecord(version) || typeof tag !== 'string' || tag === '') return result([], 1); // untagged child version

  const owner = text(field(pkg.owner, 'login'), 200) ?? text(pkg.namespace, 200);
  const name = text(pkg.name, 255);
  if (!owner || !name) return result([], 1);
  const candidates = [version.version, version.name, field(field(metadata, 'tag'), 'digest'), field(field(metadata, 'manifest'), 'digest')];
  const present = candidates.filter((c): c is string => typeof c === 'string' && c !== '');
  const digest = present.find((c) => isDigest(c)) ?? present[0];
  const mediaType = text(field(field(metadata, 'manifest'), 'media_type'), 255);
  const fields = eventFields({
    registry: registryOf(version.package_url),
    repository: `${owner}/${name}`.toLowerCase(),
    tag,
    digest,
    mediaType,
  });
  return fields ? result([fields], 0) : result([], 1);
};
