// The hostile input corpus: what a case is, and the few builders that keep a case a few lines.
//
// Every `*.cases.ts` file in this directory default-exports a list of cases; test/hostile.test.ts
// loads them all and runs each by its `kind`. To add a case, add an object to the file of its
// kind (or a new `*.cases.ts` file): nothing else needs to change. Each case says what must go
// wrong (a stable error code and a message naming the problem; for webhooks the HTTP status and
// message); the runner also checks that nothing was pushed and that the next case still works.
//
// Kinds:
// - `reference`: a malformed image reference, parsed and then given to copyImage as source and
//   as target (no request may leave the process).
// - `registry`, `auth`, `redirect`: a copy (copyImage) from a hostile source into a real
//   distribution registry. Content that a real registry stores (descriptors that lie, nested
//   indexes) is pushed to a real source registry; answers no real registry gives (a 5 MiB manifest,
//   a lying header, a body that never ends, garbage tokens, redirects) come from a scripted
//   server on 127.0.0.1 (`routes`, `challenge`).
// - `webhook`: a delivery to the ingress handler in front of the embedded pipeline and real
//   registries.
// - `rules`: a rules file given to parseConfig, and optionally events matched against it.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import type { CopyRequest } from '../../lib/engine/copy.js';
import type { RegistryPoolOptions } from '../../lib/engine/registries.js';
import type { ErrorCode } from '../../lib/errors.js';
import { MediaTypes } from '../../lib/manifest/media-types.js';
import { tarOf } from '../support/images.js';
import type { RecordedRequest } from '../support/proxy.js';

export { MediaTypes };

// ---------------------------------------------------------------------------------------------
// Content: blobs and manifests addressed by their own digests (honest unless a case edits them).

export interface Blob {
  bytes: Buffer;
  digest: string;
  size: number;
}

export interface Manifest extends Blob {
  mediaType: string;
  json: Record<string, unknown>;
  /** Every blob this manifest (and its children) references, honest bytes. */
  blobs: Blob[];
  /** Child manifests, deepest first. */
  children: Manifest[];
}

/** What a source holds: the root under tag `v1`, its children and blobs by digest. */
export interface Content {
  root: Manifest;
  /** More manifests served by digest (and tag, when given). */
  extra?: Array<{ manifest: Manifest; tag?: string }>;
}

export const sha256 = (data: Buffer | string): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

export function blob(data: Buffer | string): Blob {
  const bytes = Buffer.from(data);
  return { bytes, digest: sha256(bytes), size: bytes.length };
}

export function descriptor(b: Blob, mediaType: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { mediaType, digest: b.digest, size: b.size, ...extra };
}

/** Manifest bytes of some JSON (or raw text), honest: digest and size of exactly these bytes. */
export function manifest(json: Record<string, unknown> | string, mediaType: string, blobs: Blob[] = [], children: Manifest[] = []): Manifest {
  const bytes = Buffer.from(typeof json === 'string' ? json : JSON.stringify(json));
  let parsed: Record<string, unknown> = {};
  try {
    parsed = typeof json === 'string' ? (JSON.parse(json) as Record<string, unknown>) : json;
  } catch {
    // raw text that is not JSON: that is the point of the case
  }
  return { ...blob(bytes), mediaType, json: parsed, blobs, children };
}

/**
 * A small valid OCI image (one uncompressed tar layer) whose manifest JSON `edit` may change:
 * the blobs stay as they are, so an edited descriptor lies about honest content.
 */
export function image(options: { seed?: string; edit?: (json: Record<string, unknown> & { config: Record<string, unknown>; layers: Array<Record<string, unknown>> }) => void; mediaType?: string } = {}): Manifest {
  const layer = blob(tarOf({ [`file-${options.seed ?? 'x'}`]: `hostile corpus ${options.seed ?? 'x'}\n` }));
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] }, config: {} }));
  const mediaType = options.mediaType ?? MediaTypes.ociManifest;
  const json = {
    schemaVersion: 2,
    mediaType,
    config: descriptor(config, MediaTypes.ociConfig),
    layers: [descriptor(layer, MediaTypes.ociLayerTar)],
  };
  options.edit?.(json);
  return manifest(json, mediaType, [config, layer]);
}

/** An OCI index over `children` (linux/amd64 each), whose JSON `edit` may change. */
export function index(children: Manifest[], edit?: (json: Record<string, unknown> & { manifests: Array<Record<string, unknown>> }) => void): Manifest {
  const json = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociIndex,
    manifests: children.map((c) => descriptor(c, c.mediaType, { platform: { os: 'linux', architecture: 'amd64' } })),
  };
  edit?.(json);
  const all = children.flatMap((c) => [...c.children, c]);
  return manifest(json, MediaTypes.ociIndex, children.flatMap((c) => c.blobs), all);
}

/** Every blob and manifest of some content, children before parents (push order). */
export function flatten(content: Content): { blobs: Blob[]; manifests: Array<{ manifest: Manifest; tag?: string }> } {
  const blobs = new Map<string, Blob>();
  const manifests: Array<{ manifest: Manifest; tag?: string }> = [];
  const add = (m: Manifest, tag?: string): void => {
    for (const b of m.blobs) blobs.set(b.digest, b);
    for (const c of m.children) add(c);
    manifests.push(tag ? { manifest: m, tag } : { manifest: m });
  };
  for (const e of content.extra ?? []) add(e.manifest, e.tag);
  add(content.root, 'v1');
  return { blobs: [...blobs.values()], manifests };
}

// ---------------------------------------------------------------------------------------------
// Scripted answers

/** An answer of the scripted registry: a status with headers and body, or a hand-written exchange. */
export type Answer = { status: number; headers?: Record<string, string>; body?: string | Buffer } | ((req: IncomingMessage, res: ServerResponse) => void | Promise<void>);

/** What a case's routes and checks may use. */
export interface Scripted {
  /** `127.0.0.1:PORT` of the scripted registry. */
  host: string;
  port: number;
  /** A server that must never be contacted (for redirects and realms that must be refused). */
  canary: { host: string; port: number; requests: RecordedRequest[] };
  /** Every request the scripted registry saw during the case. */
  requests: RecordedRequest[];
}

/** `GET /v2/src/app/manifests/v1`; a trailing `*` matches any rest; without a method, GET and HEAD. */
export type Routes = Record<string, Answer>;

/** The repository every scripted case is served from. */
export const SCRIPTED_REPO = 'src/app';

export const json = (status: number, body: unknown, headers: Record<string, string> = {}): Answer => ({ status, headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

export const asManifest = (m: Manifest | Buffer, contentType?: string, headers: Record<string, string> = {}): Answer => ({
  status: 200,
  headers: { 'content-type': contentType ?? (Buffer.isBuffer(m) ? MediaTypes.ociManifest : m.mediaType), ...headers },
  body: Buffer.isBuffer(m) ? m : m.bytes,
});

export const redirect = (location: string, status = 307): Answer => ({ status, headers: { location } });

/** Headers, `first` bytes of body, then silence for as long as the client waits. */
export const stallAfter = (first: Buffer, headers: Record<string, string>): Answer => (_req, res) => {
  res.writeHead(200, headers);
  res.write(first);
  // never ended: the client's idle timeout must end it
};

/** A chunked body that never ends: `chunk` again and again, as fast as the client reads. */
export const endless = (status: number, chunk: Buffer, headers: Record<string, string> = {}): Answer => (req, res) => {
  res.writeHead(status, headers);
  if (req.method === 'HEAD') {
    res.end(); // a HEAD has no body: writing one forever would only spin here
    return;
  }
  const pump = (): void => {
    while (!res.destroyed && res.write(chunk));
    if (!res.destroyed) res.once('drain', pump);
  };
  req.socket.once('close', () => res.destroy());
  pump();
};

// ---------------------------------------------------------------------------------------------
// Cases

interface CaseBase {
  name: string;
}

export interface ReferenceCase extends CaseBase {
  kind: 'reference';
  input: string;
  /** Which part the error names (`registry`, `repository`, `tag`, `digest`, `reference`). */
  part?: string;
  message: RegExp;
}

export interface ExpectedError {
  code: ErrorCode;
  message: RegExp;
  /** Which registry of the copy failed. Default `source`. */
  side?: 'source' | 'target';
}

export interface CopyCase extends CaseBase {
  kind: 'registry' | 'auth' | 'redirect';
  /** What the source holds (default: a small valid image). Pushed to a real registry unless `routes` or `challenge` make it scripted. */
  content?: () => Content;
  /** Scripted answers that take precedence over the content (makes the source scripted). */
  routes?: (s: Scripted) => Routes;
  /** Every /v2/ request without `Authorization: Bearer good-token` gets 401 with this WWW-Authenticate (makes the source scripted). */
  challenge?: (s: Scripted) => string;
  /** Source credentials configured for the scripted registry (a distinctive secret the checks look for). */
  credentials?: boolean;
  /** `rules`: the destination policy of serve/sync/pipeline (only named hosts; no private or metadata redirects). Default `cli`. */
  policy?: 'cli' | 'rules';
  /** The source reference after the repository (default `:v1`). */
  at?: string | ((content: Content) => string);
  /** Copy options (annotations, platforms, mode). */
  request?: Partial<Pick<CopyRequest, 'annotations' | 'platforms' | 'mode'>>;
  /** Registry client options for this case (short timeouts for hangs). */
  client?: Partial<RegistryPoolOptions>;
  expect: ExpectedError;
  /** The copy must fail within this many ms (hangs). */
  withinMs?: number;
  /**
   * Verified blobs of the same image may reach the target before the failure (a lie found while
   * streaming another blob): content-addressed and referenced by nothing. Manifests and tags never.
   */
  siblingsMayLand?: boolean;
  /** Extra checks after the copy failed (where credentials went, who was contacted). */
  check?: (s: Scripted, error: Error) => void;
}

export interface Delivery {
  /** Default `/hooks/registry`. */
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  body: string | Buffer;
}

/** What webhook cases may use to build deliveries. */
export interface WebhookContext {
  /** The bearer token of `/hooks/registry`. */
  token: string;
  /** The HMAC key of `/hooks/signed`. */
  hmacKey: string;
  /** The source registry the rules name (`team/*` is mirrored). */
  source: string;
  /** A host no rule names (it must never be contacted). */
  third: string;
  /** A distribution push envelope for `team/app:v1` at the source, fields overridable. */
  push(overrides?: { id?: string; repository?: string; tag?: string; host?: string; url?: string }): string;
  /** `X-Hub-Signature-256` of a body under `key`. */
  sign(body: string | Buffer, key?: string): string;
}

export interface WebhookCase extends CaseBase {
  kind: 'webhook';
  /** Deliveries that must be accepted first (for replays). */
  before?: (w: WebhookContext) => Delivery[];
  request: (w: WebhookContext) => Delivery;
  expect: { status: number; message?: RegExp; accepted?: number };
}

export interface RulesCase extends CaseBase {
  kind: 'rules';
  /** The rules file: YAML text, or an object written as JSON. */
  config: string | Record<string, unknown>;
  /** The ERR_CONFIG message; absent when the file is valid and `matches` says how it behaves. */
  message?: RegExp;
  /** Events matched against a valid file: each must be decided (and quickly). */
  matches?: Array<{ repository: string; tag: string; matched: boolean }>;
}

export type HostileCase = ReferenceCase | CopyCase | WebhookCase | RulesCase;
