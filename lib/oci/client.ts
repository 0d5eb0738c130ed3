/**
 * The OCI distribution client: typed operations on one registry (OCI distribution spec v1.1,
 * "Pull", "Push", "Content Discovery", "Content Management"), on top of the Transport.
 *
 * A `RegistryClient` is one registry host; `client.repository(name, 'push')` is a handle whose
 * requests all carry the scope that access needs, so that a HEAD before a PUT already holds the
 * token the PUT will use.
 */
import { once } from 'node:events';
import { finished, PassThrough, Readable } from 'node:stream';
import { digestOf, parseDigest, VerifyingStream, type DigestAlgorithm } from '../digest.js';
import { DigestMismatchError, ErrorCodes, ManifestError, NetworkError, OciRelayError, RegistryError, SizeMismatchError, redactUrl, type ErrorContext } from '../errors.js';
import { essence, isManifestMediaType, MANIFEST_MEDIA_TYPES, MediaTypes } from '../manifest/media-types.js';
import { CATALOG_SCOPE, repositoryScope, type Scope } from './auth.js';
import { backoffDelay, isRetryableNetworkError, isRetryableTransfer, networkErrorCode, resolveRetry, sleep, type RetryOptions } from './retry.js';
import { discard, header, readBytes, readText, Transport, type Response, type SendOptions, type TransportOptions } from './transport.js';

export interface RegistryClientOptions extends TransportOptions {
  /**
   * Largest manifest accepted. Default 4 MiB, the limit distribution and most registries enforce
   * on PUT; anything larger is either hostile or unpushable.
   */
  maxManifestBytes?: number;
  /**
   * How many times a blob download that breaks mid-body is resumed with a Range request before
   * giving up. Default 5.
   */
  maxBlobResumes?: number;
  /**
   * How many times an upload that fails mid-way (a reset, a stall, a 5xx on a PATCH or the closing
   * PUT) is resumed in its session from the offset the registry reports, before the session is
   * cancelled and the failure handed to the caller. Default 3.
   */
  maxUploadResumes?: number;
}

export const DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  [key: string]: unknown;
}

export interface FetchedManifest {
  /** The exact bytes the registry sent. */
  bytes: Buffer;
  /** The body's `mediaType`, else the Content-Type, else what the structure says. */
  mediaType: string;
  /**
   * Computed from the bytes (and checked against the reference and Docker-Content-Digest); for a
   * signed schema-1 manifest, from its JWS payload (see `manifestDigest`).
   */
  digest: string;
  size: number;
  /** The Content-Type the registry sent, for callers that care when it disagrees. */
  contentType: string | undefined;
}

export interface ManifestHead {
  digest: string | undefined;
  mediaType: string | undefined;
  size: number | undefined;
}

export interface UploadSession {
  /** Absolute URL of the session (the last Location the registry gave). */
  location: URL;
  /** OCI-Chunk-Min-Length, when the registry set it. */
  minChunkLength: number | undefined;
  /** Bytes the registry holds, as far as we know. */
  offset: number;
}

export type StartUploadResult = { mounted: true } | { mounted: false; session: UploadSession };

export interface PushBlobOptions {
  /** Try a cross-repository mount from this repository of the same registry first. */
  mountFrom?: string;
  /** Upload in PATCH chunks of this size instead of one streamed PUT. */
  chunkSize?: number;
  /** Called with the number of bytes handed to the registry so far. */
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
}

/** A blob GET under way: its body, the offset it starts at (0 when Range was ignored), its length. */
export interface OpenedBlob {
  stream: Response['body'];
  offset: number;
  length: number | undefined;
}

export interface PushBlobResult {
  /** How the blob got there. */
  outcome: 'uploaded' | 'mounted';
  /** Bytes sent over the network for this blob (every attempt's, resumed ones included). */
  bytesSent: number;
}

export interface ReferrersResult {
  descriptors: Descriptor[];
  /** True when the registry has no referrers API and the `sha256-<hex>` tag schema was read. */
  fallback: boolean;
}

export class RegistryClient {
  readonly registry: string;
  readonly transport: Transport;
  readonly options: RegistryClientOptions;
  /** The transport's retry policy, for the retries made above it (bodies that break off, resumed uploads). */
  readonly retryPolicy: Required<RetryOptions>;

  constructor(registry: string, options: RegistryClientOptions = {}) {
    this.registry = registry;
    this.options = options;
    this.transport = new Transport(registry, options);
    this.retryPolicy = resolveRetry(options.retry);
  }

  repository(name: string, access: 'pull' | 'push' = 'pull'): Repository {
    return new Repository(this, name, access);
  }

  /** GET /v2/ (spec: "determining support"); authenticates if the registry asks. */
  async ping(): Promise<{ status: number; apiVersion: string | undefined }> {
    const res = await this.transport.send({ method: 'GET', url: this.transport.url('/v2/'), scopes: [], operation: 'ping', expect: [200] });
    await discard(res.body);
    return { status: res.status, apiVersion: header(res.headers, 'docker-distribution-api-version') };
  }

  /** Every repository in the catalog, following `Link` pagination (`n` per page). */
  async *catalog(options: { pageSize?: number } = {}): AsyncGenerator<string> {
    const first = this.transport.url('/v2/_catalog');
    if (options.pageSize) first.searchParams.set('n', String(options.pageSize));
    yield* paginate(this.transport, this.retryPolicy, first, [CATALOG_SCOPE], 'list catalog', (json) => stringArray(json, 'repositories'));
  }

  /**
   * One page of the catalog: the first, or the one `next` names (the `next` an earlier page
   * returned: the path and query of the registry's `Link: rel="next"`, whatever its cursor
   * parameters are — `last`, Quay's `next_page`). `next` is absent on the last page. A page must
   * not steer requests elsewhere: a `next` asked for that is not this registry's catalog is
   * refused, and a Link to anything else (or back to the same page) ends the listing, with
   * `stopped` saying why.
   */
  async catalogPage(options: { pageSize?: number; next?: string } = {}): Promise<{ repositories: string[]; next?: string; stopped?: string }> {
    const first = this.transport.url('/v2/_catalog');
    let url = first;
    if (options.next !== undefined) {
      url = new URL(options.next, first);
      if (!sameCatalog(url, first)) throw new OciRelayError(ErrorCodes.InvalidMessage, `list catalog: the page cursor ${JSON.stringify(options.next.slice(0, 200))} does not name the catalog of ${this.registry}`);
    } else if (options.pageSize) first.searchParams.set('n', String(options.pageSize));
    const page = await fetchPage(this.transport, this.retryPolicy, url, [CATALOG_SCOPE], 'list catalog', (json) => stringArray(json, 'repositories'));
    if (!page.next) return { repositories: page.items };
    if (!sameCatalog(page.next, first)) return { repositories: page.items, stopped: `list catalog: the next page ${redactUrl(page.next).slice(0, 200)} is not the catalog of ${this.registry}` };
    if (page.next.href === url.href) return { repositories: page.items, stopped: `list catalog: pagination loops back to ${redactUrl(url).slice(0, 200)}` };
    return { repositories: page.items, next: `${page.next.pathname}${page.next.search}` };
  }

  async listCatalog(options: { pageSize?: number } = {}): Promise<string[]> {
    const out: string[] = [];
    for await (const name of this.catalog(options)) out.push(name);
    return out;
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}

export class Repository {
  readonly client: RegistryClient;
  readonly name: string;
  readonly access: 'pull' | 'push';
  private readonly scopes: Scope[];

  constructor(client: RegistryClient, name: string, access: 'pull' | 'push') {
    this.client = client;
    this.name = name;
    this.access = access;
    this.scopes = [repositoryScope(name, access === 'push' ? ['pull', 'push'] : ['pull'])];
  }

  private get transport(): Transport {
    return this.client.transport;
  }

  private url(path: string): URL {
    return this.transport.url(`/v2/${this.name}/${path}`);
  }

  // --- manifests -------------------------------------------------------------------------

  /**
   * GET a manifest by tag or digest with the full Accept list (or the one given), verifying its
   * digest against a digest reference and against Docker-Content-Digest when the registry sends one.
   */
  async getManifest(reference: string, options: { accept?: readonly string[]; signal?: AbortSignal } = {}): Promise<FetchedManifest> {
    const operation = 'GET manifest';
    const url = this.url(`manifests/${reference}`);
    const limit = this.client.options.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES;
    const { res, bytes } = await sendAndRead(
      this.transport,
      this.client.retryPolicy,
      {
        method: 'GET',
        url,
        scopes: this.scopes,
        operation,
        headers: { accept: (options.accept ?? MANIFEST_MEDIA_TYPES).join(', ') },
        expect: [200],
        followRedirects: true,
        ...(options.signal ? { signal: options.signal } : {}),
      },
      async (res) => {
        const declared = Number(header(res.headers, 'content-length'));
        const tooLarge = (size: number): Error => new ManifestError(`${operation}: manifest ${this.name}@${reference} is ${size > limit && declared === size ? '' : 'at least '}${size} bytes, over the ${limit}-byte limit`, { url, operation });
        if (Number.isFinite(declared) && declared > limit) {
          res.body.destroy();
          throw tooLarge(declared);
        }
        return { res, bytes: await readBytes(res.body, limit, tooLarge) };
      },
    );
    const contentType = essence(header(res.headers, 'content-type'));
    const mediaType = detectManifestMediaType(bytes, contentType, { url, operation });
    const context: ErrorContext = { url, operation };
    const headerDigest = header(res.headers, 'docker-content-digest');
    const referenceDigest = reference.includes(':') ? reference : undefined;
    const algorithm = referenceDigest ? parseDigest(referenceDigest, context).algorithm : headerDigest && /^sha512:/.test(headerDigest) ? 'sha512' : 'sha256';
    const digest = manifestDigest(bytes, mediaType, algorithm);
    if (referenceDigest && digest !== referenceDigest) throw new DigestMismatchError(referenceDigest, digest, context);
    if (headerDigest && headerDigest !== digest) {
      const other = /^sha(256|512):/.test(headerDigest) ? manifestDigest(bytes, mediaType, headerDigest.startsWith('sha512:') ? 'sha512' : 'sha256') : undefined;
      if (other !== headerDigest) {
        throw new DigestMismatchError(headerDigest, other ?? digest, { ...context, operation: `${operation} (Docker-Content-Digest)` });
      }
    }
    return { bytes, mediaType, digest, size: bytes.length, contentType };
  }

  /** HEAD a manifest; undefined when it does not exist. */
  async headManifest(reference: string, options: { accept?: readonly string[] } = {}): Promise<ManifestHead | undefined> {
    const res = await this.transport.send({
      method: 'HEAD',
      url: this.url(`manifests/${reference}`),
      scopes: this.scopes,
      operation: 'HEAD manifest',
      headers: { accept: (options.accept ?? MANIFEST_MEDIA_TYPES).join(', ') },
      expect: [200, 404],
      followRedirects: true,
    });
    await discard(res.body);
    if (res.status === 404) return undefined;
    const length = Number(header(res.headers, 'content-length'));
    return {
      digest: header(res.headers, 'docker-content-digest'),
      mediaType: essence(header(res.headers, 'content-type')),
      size: Number.isFinite(length) ? length : undefined,
    };
  }

  /** PUT the exact bytes of a manifest under a tag or digest, with Content-Type = its media type. */
  async putManifest(reference: string, bytes: Uint8Array, mediaType: string): Promise<{ digest: string; location: string | undefined; subject: string | undefined }> {
    const url = this.url(`manifests/${reference}`);
    const res = await this.transport.send({
      method: 'PUT',
      url,
      scopes: this.scopes,
      operation: 'PUT manifest',
      headers: { 'content-type': mediaType },
      body: bytes,
      expect: [201, 200, 202],
    });
    await discard(res.body);
    const digest = reference.includes(':') ? reference : manifestDigest(bytes, mediaType);
    // OCI-Subject: the registry indexed the manifest's subject itself (spec: "Pushing Manifests with Subject").
    return { digest, location: header(res.headers, 'location'), subject: header(res.headers, 'oci-subject') };
  }

  /** DELETE a manifest by digest (spec: deleting manifests). */
  async deleteManifest(digest: string): Promise<void> {
    parseDigest(digest);
    const res = await this.transport.send({ method: 'DELETE', url: this.url(`manifests/${digest}`), scopes: this.deleteScopes(), operation: 'DELETE manifest', expect: [202, 200, 204] });
    await discard(res.body);
  }

  private deleteScopes(): Scope[] {
    return [repositoryScope(this.name, ['pull', 'push', 'delete'])];
  }

  // --- tags and referrers ---------------------------------------------------------------

  /** Every tag, following `Link` pagination. A repository whose tags were all deleted lists none. */
  async *tags(options: { pageSize?: number } = {}): AsyncGenerator<string> {
    const first = this.url('tags/list');
    if (options.pageSize) first.searchParams.set('n', String(options.pageSize));
    yield* paginate(this.transport, this.client.retryPolicy, first, this.scopes, 'list tags', (json) => stringArray(json, 'tags'));
  }

  async listTags(options: { pageSize?: number } = {}): Promise<string[]> {
    const out: string[] = [];
    for await (const tag of this.tags(options)) out.push(tag);
    return out;
  }

  /**
   * The referrers of a manifest (spec: "Listing Referrers"): the API when the registry has it,
   * else the `<alg>-<hex>` tag schema. `artifactType` filters either way.
   */
  async referrers(digest: string, options: { artifactType?: string } = {}): Promise<ReferrersResult> {
    const { algorithm, encoded } = parseDigest(digest);
    const first = this.url(`referrers/${digest}`);
    if (options.artifactType) first.searchParams.set('artifactType', options.artifactType);
    const filter = (list: Descriptor[]): Descriptor[] => (options.artifactType ? list.filter((d) => d.artifactType === options.artifactType) : list);
    const descriptors: Descriptor[] = [];
    try {
      for await (const d of paginate(this.transport, this.client.retryPolicy, first, this.scopes, 'list referrers', (json) => descriptorArray(json), { accept: MediaTypes.ociIndex })) {
        descriptors.push(d);
      }
      return { descriptors: filter(descriptors), fallback: false };
    } catch (err) {
      if (!(err instanceof RegistryError) || err.status !== 404) throw err;
    }
    // Referrers tag schema: `<alg>-<ref>`, alg and ref truncated to 32 and 64 characters.
    const tag = `${algorithm.slice(0, 32)}-${encoded.slice(0, 64)}`;
    let index: FetchedManifest;
    try {
      index = await this.getManifest(tag, { accept: [MediaTypes.ociIndex] });
    } catch (err) {
      if (err instanceof RegistryError && err.notFound) return { descriptors: [], fallback: true };
      throw err;
    }
    return { descriptors: filter(descriptorArray(parseJson(index.bytes, 'referrers index'))), fallback: true };
  }

  // --- blobs -----------------------------------------------------------------------------

  /** HEAD a blob; undefined when the registry does not have it. */
  async headBlob(digest: string): Promise<{ size: number | undefined } | undefined> {
    const res = await this.transport.send({ method: 'HEAD', url: this.url(`blobs/${digest}`), scopes: this.scopes, operation: 'HEAD blob', expect: [200, 404], followRedirects: true });
    await discard(res.body);
    if (res.status === 404) return undefined;
    const length = Number(header(res.headers, 'content-length'));
    return { size: Number.isFinite(length) ? length : undefined };
  }

  /**
   * GET a blob from `offset` (Range), unverified: the raw building block. Redirects (to storage
   * backends) are followed by hand, without Authorization when the host changes.
   */
  async openBlob(digest: string, options: { offset?: number; signal?: AbortSignal } = {}): Promise<OpenedBlob> {
    const offset = options.offset ?? 0;
    const res = await this.transport.send({
      method: 'GET',
      url: this.url(`blobs/${digest}`),
      scopes: this.scopes,
      operation: 'GET blob',
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      expect: offset > 0 ? [200, 206] : [200],
      followRedirects: true,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const length = Number(header(res.headers, 'content-length'));
    // A server that ignores Range answers 200 with the whole body: tell the caller where it starts.
    return { stream: res.body, offset: res.status === 206 ? offset : 0, length: Number.isFinite(length) ? length : undefined };
  }

  /**
   * GET a blob as a stream verified against its descriptor: the stream fails before its end is
   * signalled when the bytes do not hash to the digest or their count differs from the size.
   * A body that breaks mid-way is resumed with Range from the bytes already passed on
   * (`blobChunks`). The first request is made before this returns, so that a missing blob is an
   * error here rather than on the stream.
   */
  async fetchBlob(descriptor: { digest: string; size?: number }, options: { signal?: AbortSignal } = {}): Promise<Readable> {
    const context: ErrorContext = { url: this.url(`blobs/${descriptor.digest}`), operation: 'GET blob' };
    const verifier = new VerifyingStream({ digest: descriptor.digest, ...(descriptor.size !== undefined ? { size: descriptor.size } : {}), context });
    const first = await this.openBlob(descriptor.digest, options);
    // Closing the stream (a consumer that gave up) stops the download and its resumes.
    const closed = new AbortController();
    verifier.once('close', () => closed.abort());
    const signal = options.signal ? AbortSignal.any([options.signal, closed.signal]) : closed.signal;
    void pumpInto(this.blobChunks(descriptor, { opened: first, signal }), verifier, signal);
    return verifier;
  }

  /**
   * The bytes of a blob from `from` on (default 0), unverified: callers hash what they read (a
   * VerifyingStream, a resumable hash). A body that breaks, stalls past the idle timeout or ends
   * short is resumed with Range from the bytes already yielded (at most `maxBlobResumes` times);
   * bytes a server that ignored Range sends again are skipped. With a known size, more bytes
   * than it fail at once, and fewer fail once the resumes are spent; a connection that fails
   * after the last byte does not matter. `opened` is a response already received for `from`.
   */
  async *blobChunks(descriptor: { digest: string; size?: number }, options: { from?: number; opened?: OpenedBlob; signal?: AbortSignal } = {}): AsyncGenerator<Buffer> {
    const { digest, size } = descriptor;
    const url = this.url(`blobs/${digest}`);
    const maxResumes = this.client.options.maxBlobResumes ?? 5;
    const signal = options.signal;
    let passed = options.from ?? 0;
    let resumes = 0;
    let current: OpenedBlob | undefined = options.opened;
    const abort = (): void => {
      current?.stream.destroy();
    };
    signal?.addEventListener('abort', abort, { once: true });
    try {
      for (;;) {
        if (size !== undefined && passed >= size && !current) return;
        if (!current) {
          current = await this.openBlob(digest, { offset: passed, ...(signal ? { signal } : {}) }).catch((err: unknown) => {
            // Nothing past `passed`: the blob is shorter than its descriptor says.
            if (err instanceof RegistryError && err.status === 416 && size !== undefined) throw new SizeMismatchError(size, passed, { url, operation: 'GET blob', cause: err });
            throw err;
          });
        }
        let skip = passed - current.offset; // bytes the server re-sent because it ignored Range
        try {
          for await (const raw of current.stream) {
            let chunk = raw as Buffer;
            if (skip > 0) {
              if (chunk.length <= skip) {
                skip -= chunk.length;
                continue;
              }
              chunk = chunk.subarray(skip);
              skip = 0;
            }
            if (size !== undefined && passed + chunk.length > size) throw new SizeMismatchError(size, passed + chunk.length, { url, operation: 'GET blob', atLeast: true });
            passed += chunk.length;
            yield chunk;
          }
          current = undefined;
          if (size === undefined || passed >= size) return;
          // Ended cleanly short of the size (a truncating proxy, a wrong Content-Length).
          if (resumes >= maxResumes) throw new SizeMismatchError(size, passed, { url, operation: 'GET blob' });
          resumes++;
        } catch (err) {
          current = undefined;
          if (err instanceof OciRelayError || signal?.aborted) throw err;
          // Every byte arrived and only the close went wrong (a stall or a reset after the last
          // byte, a Content-Length longer than the body): what was read is what was asked for.
          if (size !== undefined && passed === size) return;
          if (!isRetryableNetworkError(err) || resumes >= maxResumes) {
            throw new OciRelayError(ErrorCodes.Network, `GET blob ${digest}: the download failed after ${resumes} resumes: ${(err as Error).message}`, { cause: err, url, operation: 'GET blob', retryable: true });
          }
          resumes++;
        }
      }
    } finally {
      signal?.removeEventListener('abort', abort);
      current?.stream.destroy();
    }
  }

  /**
   * POST /blobs/uploads/ (spec: "Pushing blobs"), optionally as a cross-repository mount
   * (`?mount=<digest>&from=<repo>`): 201 means the blob is there; 202 opens a session.
   */
  async startUpload(options: { mount?: { digest: string; from: string } } = {}): Promise<StartUploadResult> {
    const url = this.url('blobs/uploads/');
    let scopes = this.scopes;
    if (options.mount) {
      url.searchParams.set('mount', options.mount.digest);
      url.searchParams.set('from', options.mount.from);
      scopes = [...scopes, repositoryScope(options.mount.from, ['pull'])];
    }
    const res = await this.transport.send({ method: 'POST', url, scopes, operation: options.mount ? 'mount blob' : 'start upload', headers: { 'content-length': '0' }, expect: [201, 202], retrySafe: true });
    await discard(res.body);
    if (res.status === 201) return { mounted: true };
    return { mounted: false, session: this.sessionFrom(res, url, 0) };
  }

  /**
   * The session a response describes. `offset` is used when there is no Range header; `expected`
   * (what we believe the registry holds) settles `0-0`, which distribution sends both for an
   * empty session and for one holding a single byte.
   */
  private sessionFrom(res: Response, requestUrl: URL, offset: number, expected: number = offset): UploadSession {
    const location = header(res.headers, 'location');
    if (!location) throw new RegistryError({ status: res.status, method: 'POST', url: requestUrl, message: `upload: the registry opened a session without a Location (${redactUrl(requestUrl)})` });
    const min = Number(header(res.headers, 'oci-chunk-min-length'));
    const end = rangeEnd(header(res.headers, 'range'));
    const held = end === 1 && /^(?:bytes=)?0-0$/.test(header(res.headers, 'range')?.trim() ?? '') ? Math.min(expected, 1) : end;
    return { location: new URL(location, requestUrl), minChunkLength: Number.isFinite(min) && min > 0 ? min : undefined, offset: held ?? offset };
  }

  /** GET the session (spec: "upload progress"): the offset the registry holds. */
  async uploadStatus(session: UploadSession): Promise<UploadSession> {
    const res = await this.transport.send({ method: 'GET', url: session.location, scopes: this.scopes, operation: 'upload status', expect: [204, 200] });
    await discard(res.body);
    const next = this.sessionFrom(res, session.location, 0, session.offset);
    return { ...next, minChunkLength: next.minChunkLength ?? session.minChunkLength };
  }

  /** PATCH one chunk of `length` bytes at `session.offset` (Content-Range), returning the advanced session. */
  async uploadChunk(session: UploadSession, body: Readable | Uint8Array, length: number, options: { signal?: AbortSignal } = {}): Promise<UploadSession> {
    const start = session.offset;
    const res = await this.transport.send({
      method: 'PATCH',
      url: session.location,
      scopes: this.scopes,
      operation: 'PATCH blob chunk',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(length), 'content-range': `${start}-${start + length - 1}` },
      body,
      expect: [202, 204],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    await discard(res.body);
    const next = this.sessionFrom(res, session.location, start + length);
    return { ...next, minChunkLength: next.minChunkLength ?? session.minChunkLength };
  }

  /** The closing PUT `?digest=` (optionally carrying the last bytes): the registry verifies and commits. */
  async completeUpload(session: UploadSession, digest: string, body?: { stream: Readable | { open: () => Readable | Promise<Readable> }; length: number }, options: { signal?: AbortSignal } = {}): Promise<void> {
    const url = new URL(session.location);
    url.searchParams.set('digest', digest);
    const res = await this.transport.send({
      method: 'PUT',
      url,
      scopes: this.scopes,
      operation: 'PUT blob',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(body?.length ?? 0) },
      ...(body ? { body: body.stream } : {}),
      expect: [201, 204],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    await discard(res.body);
  }

  /** DELETE an abandoned session so the registry can free what it holds (best effort). */
  async cancelUpload(session: UploadSession): Promise<boolean> {
    try {
      const res = await this.transport.send({ method: 'DELETE', url: session.location, scopes: this.scopes, operation: 'cancel upload', expect: [204, 200, 202, 404] });
      await discard(res.body);
      return res.status !== 404;
    } catch {
      return false;
    }
  }

  /**
   * Pushes a blob: a cross-repository mount when `mountFrom` is given (and the registry agrees),
   * else one streamed PUT, or PATCH chunks when `chunkSize` is set (never smaller than the
   * registry's OCI-Chunk-Min-Length). The body is read from `open()` once per attempt.
   *
   * An upload that fails in a way worth repeating is resumed in the same session: the registry is
   * asked where the session stands (upload status), `open()` is read again from byte 0 through
   * its verification, the bytes the registry already holds are discarded, and only the rest is
   * sent (PATCH from the offset, then the closing PUT). A registry that no longer knows the
   * session, or answers an impossible offset, ends the resumes. A session given up is cancelled.
   */
  async pushBlob(descriptor: { digest: string; size: number }, open: () => Readable | Promise<Readable>, options: PushBlobOptions = {}): Promise<PushBlobResult> {
    const started = await this.startUpload(options.mountFrom ? { mount: { digest: descriptor.digest, from: options.mountFrom } } : {});
    if (started.mounted) return { outcome: 'mounted', bytesSent: 0 };
    // `sourceFailed`: the body's own stream broke. It has resumed itself as far as it could
    // (fetchBlob's Range resumes, each with the transport's retries): resuming the upload on top
    // would multiply those budgets, so a failed source ends the upload at once.
    const state = { session: started.session, sourceFailed: false };
    const chunkSize = options.chunkSize ? Math.max(options.chunkSize, started.session.minChunkLength ?? 0) : undefined;
    const maxResumes = this.client.options.maxUploadResumes ?? 3;
    let resumes = 0;
    let sent = 0;
    const onBytes = (n: number): void => {
      sent += n;
      options.onProgress?.(sent);
    };
    for (;;) {
      try {
        await this.uploadFrom(state, descriptor, open, chunkSize, onBytes, options.signal);
        return { outcome: 'uploaded', bytesSent: sent };
      } catch (err) {
        const next = resumes < maxResumes && !options.signal?.aborted && !state.sourceFailed && isRetryableTransfer(err) ? await this.resumePoint(state.session, descriptor, ++resumes, options.signal) : undefined;
        if (!next) {
          await this.cancelUpload(state.session);
          throw err;
        }
        state.session = next;
      }
    }
  }

  /** One attempt from `state.session.offset` on; `state.session` follows every Location the registry gives. */
  private async uploadFrom(state: { session: UploadSession; sourceFailed: boolean }, descriptor: { digest: string; size: number }, open: () => Readable | Promise<Readable>, chunkSize: number | undefined, onBytes: (n: number) => void, signal: AbortSignal | undefined): Promise<void> {
    const source = await open();
    source.once('error', () => {
      state.sourceFailed = true;
    });
    const withSignal = signal ? { signal } : {};
    try {
      const offset = state.session.offset;
      if (offset === 0 && (!chunkSize || descriptor.size <= chunkSize)) {
        await this.completeUpload(state.session, descriptor.digest, { stream: countBytes(source, onBytes), length: descriptor.size }, withSignal);
        return;
      }
      const slicer = new StreamSlicer(source);
      // Bytes the registry already holds: read (and hashed by a verifying source), not sent again.
      if (offset > 0) await drain(slicer.next(offset));
      const step = chunkSize ?? descriptor.size - offset;
      while (state.session.offset < descriptor.size) {
        const length = Math.min(step, descriptor.size - state.session.offset);
        state.session = await this.uploadChunk(state.session, countBytes(slicer.next(length), onBytes), length, withSignal);
      }
      // Reading to the end lets a verifying source check the digest before the closing PUT.
      await slicer.assertEnd(descriptor);
      await this.completeUpload(state.session, descriptor.digest, undefined, withSignal);
    } finally {
      source.destroy();
    }
  }

  /** Where a failed upload can go on from: the registry's offset, or undefined when it cannot. */
  private async resumePoint(session: UploadSession, descriptor: { size: number }, resume: number, signal: AbortSignal | undefined): Promise<UploadSession | undefined> {
    try {
      await sleep(backoffDelay(resume, this.client.retryPolicy), signal);
      const status = await this.uploadStatus(session);
      return status.offset <= descriptor.size ? status : undefined;
    } catch {
      return undefined;
    }
  }
}

/** Writes chunks into a verifying stream, honouring backpressure; a failure destroys it with its cause. */
async function pumpInto(chunks: AsyncGenerator<Buffer>, verifier: VerifyingStream, signal: AbortSignal): Promise<void> {
  try {
    for await (const chunk of chunks) {
      if (!verifier.write(chunk)) await once(verifier, 'drain', { signal });
    }
    verifier.end();
  } catch (err) {
    if (!verifier.destroyed) verifier.destroy(err as Error);
  }
}

async function drain(stream: Readable): Promise<void> {
  for await (const _chunk of stream) {
    // discarded: these bytes are already in the upload session
  }
}

/** Cuts one stream into consecutive sub-streams of given lengths, without buffering a chunk whole. */
export class StreamSlicer {
  private readonly iterator: AsyncIterator<Buffer>;
  private pending: Buffer | undefined;
  private done = false;

  constructor(source: Readable) {
    this.iterator = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  next(length: number): Readable {
    const take = async function* (this: StreamSlicer): AsyncGenerator<Buffer> {
      let remaining = length;
      while (remaining > 0) {
        let chunk = this.pending;
        this.pending = undefined;
        if (!chunk) {
          const step = await this.iterator.next();
          if (step.done) {
            this.done = true;
            return;
          }
          chunk = step.value;
        }
        if (chunk.length > remaining) {
          this.pending = chunk.subarray(remaining);
          chunk = chunk.subarray(0, remaining);
        }
        remaining -= chunk.length;
        yield chunk;
      }
    }.bind(this);
    return Readable.from(take(), { objectMode: false });
  }

  /** Reads to the end of the source (so that a verifying source can check the digest) and fails on extra bytes. */
  async assertEnd(descriptor: { digest: string; size: number }): Promise<void> {
    if (this.pending?.length) throw new SizeMismatchError(descriptor.size, descriptor.size + this.pending.length, { atLeast: true });
    if (this.done) return;
    const step = await this.iterator.next();
    if (!step.done && step.value.length) throw new SizeMismatchError(descriptor.size, descriptor.size + step.value.length, { atLeast: true });
  }
}

/** A pass-through that reports how many bytes went by. */
function countBytes(source: Readable, onBytes: (n: number) => void): Readable {
  const counter = new PassThrough({ highWaterMark: 1 << 20 });
  source.on('data', (chunk: Buffer) => onBytes(chunk.length));
  // finished() also reports a source that failed before it got here (a verified download that
  // errored while the upload session was opened): the upload must fail, not wait for bytes.
  finished(source, (err) => {
    if (err) counter.destroy(err);
  });
  counter.once('close', () => {
    if (!source.destroyed && !source.readableEnded) source.destroy();
  });
  source.pipe(counter);
  return counter;
}

/** `Range: 0-<end>` (upload progress) -> the next offset, end + 1. */
function rangeEnd(range: string | undefined): number | undefined {
  if (!range) return undefined;
  const match = /^(?:bytes=)?(\d+)-(\d+)$/.exec(range.trim());
  if (!match) return undefined;
  return Number(match[2]) + 1;
}

/** Follows `Link: <url>; rel="next"` (RFC 8288) pages until there is none; refuses loops. */
async function* paginate<T>(transport: Transport, policy: Required<RetryOptions>, first: URL, scopes: readonly Scope[], operation: string, items: (json: unknown) => T[], options: { accept?: string } = {}): AsyncGenerator<T> {
  let url: URL | undefined = first;
  const seen = new Set<string>();
  while (url) {
    if (seen.has(url.href)) throw new RegistryError({ status: 200, method: 'GET', url, operation, message: `${operation}: pagination loops back to ${redactUrl(url)}` });
    seen.add(url.href);
    const page: { items: T[]; next?: URL } = await fetchPage(transport, policy, url, scopes, operation, items, options);
    yield* page.items;
    url = page.next;
  }
}

/** One page of a paginated list: its items and the `rel="next"` page, if any. */
async function fetchPage<T>(transport: Transport, policy: Required<RetryOptions>, url: URL, scopes: readonly Scope[], operation: string, items: (json: unknown) => T[], options: { accept?: string } = {}): Promise<{ items: T[]; next?: URL }> {
  const { res, text } = await sendAndRead(transport, policy, { method: 'GET', url, scopes, operation, headers: { accept: options.accept ?? 'application/json' }, expect: [200] }, async (res) => ({ res, text: await readText(res.body, 16 * 1024 * 1024) }));
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new RegistryError({ status: res.status, method: 'GET', url, operation, message: `${operation}: ${redactUrl(url)} answered with a body that is not JSON` });
  }
  const next = nextLink(header(res.headers, 'link'));
  return { items: items(json), ...(next ? { next: new URL(next, url) } : {}) };
}

/** The same registry's catalog (origin and path), whatever the query. */
function sameCatalog(url: URL, catalog: URL): boolean {
  return url.origin === catalog.origin && url.pathname === catalog.pathname;
}

/**
 * Sends a request whose whole body is needed (a manifest, a page of tags) and reads it with
 * `read`. The transport retries until the headers have arrived; a body that breaks off after
 * that (a reset, a stall past the idle timeout, a close short of its Content-Length) sends the
 * request again, as many times as the retry policy allows, and then fails as a NetworkError.
 */
async function sendAndRead<T>(transport: Transport, policy: Required<RetryOptions>, options: SendOptions, read: (res: Response) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const res = await transport.send(options);
    try {
      return await read(res);
    } catch (err) {
      if (!res.body.destroyed) res.body.destroy();
      if (err instanceof OciRelayError || !isRetryableNetworkError(err)) throw err;
      const context = { url: options.url, operation: options.operation, cause: err };
      if (options.signal?.aborted) throw new OciRelayError(ErrorCodes.Aborted, `${options.operation}: aborted`, context);
      if (attempt >= policy.maxAttempts) throw new NetworkError(`${options.operation}: the body of ${options.method} ${redactUrl(options.url)} broke off: ${networkErrorCode(err) ?? (err as Error).message}${attempt > 1 ? ` (after ${attempt} attempts)` : ''}`, context);
      await sleep(backoffDelay(attempt, policy), options.signal);
    }
  }
}

/** The `rel="next"` target of a Link header. */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(/,(?=\s*<)/)) {
    const match = /^\s*<([^>]*)>\s*(.*)$/.exec(part);
    if (!match) continue;
    const params = match[2] ?? '';
    if (/(?:^|;)\s*rel\s*=\s*"?(?:[^";]*\s)?next(?:\s[^";]*)?"?\s*(?:;|$)/i.test(params)) return match[1];
  }
  return undefined;
}

function stringArray(json: unknown, key: string): string[] {
  if (typeof json !== 'object' || json === null) return [];
  const value = (json as Record<string, unknown>)[key];
  // distribution answers `"tags": null` once the last tag of a repository is deleted.
  if (value === null || value === undefined) return [];
  if (!Array.isArray(value)) throw new OciRelayError(ErrorCodes.Registry, `expected "${key}" to be a list`);
  return value.filter((v): v is string => typeof v === 'string');
}

function descriptorArray(json: unknown): Descriptor[] {
  if (typeof json !== 'object' || json === null) return [];
  const manifests = (json as { manifests?: unknown }).manifests;
  if (!Array.isArray(manifests)) return [];
  return manifests.filter((d): d is Descriptor => typeof d === 'object' && d !== null && typeof (d as Descriptor).digest === 'string' && typeof (d as Descriptor).size === 'number');
}

function parseJson(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new ManifestError(`${what} is not valid JSON`);
  }
}

/**
 * The digest of manifest bytes as registries address them: the digest of the bytes, except for a
 * signed schema-1 manifest, which is addressed by the digest of its JWS payload (the bytes without
 * `signatures`, as each signature's protected `formatLength`/`formatTail` describe; docker/libtrust).
 * distribution serves such manifests re-signed on every GET, so only the payload is stable.
 */
export function manifestDigest(bytes: Uint8Array, mediaType: string, algorithm: DigestAlgorithm = 'sha256'): string {
  if (mediaType === MediaTypes.dockerSchema1Signed || mediaType === MediaTypes.dockerSchema1) {
    const payload = schema1Payload(bytes);
    if (payload) return digestOf(payload, algorithm);
  }
  return digestOf(bytes, algorithm);
}

/** The JWS payload of a signed schema-1 manifest; undefined when it has no (consistent) signatures. */
export function schema1Payload(bytes: Uint8Array): Buffer | undefined {
  const raw = Buffer.from(bytes);
  let signatures: unknown;
  try {
    signatures = (JSON.parse(raw.toString('utf8')) as { signatures?: unknown }).signatures;
  } catch {
    return undefined;
  }
  if (!Array.isArray(signatures) || signatures.length === 0) return undefined;
  let payload: Buffer | undefined;
  for (const signature of signatures) {
    const encoded = (signature as { protected?: unknown } | null)?.protected;
    if (typeof encoded !== 'string') return undefined;
    let format: { formatLength?: unknown; formatTail?: unknown };
    try {
      format = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8')) as typeof format;
    } catch {
      return undefined;
    }
    const { formatLength, formatTail } = format;
    if (typeof formatLength !== 'number' || !Number.isInteger(formatLength) || formatLength < 0 || formatLength > raw.length || typeof formatTail !== 'string') return undefined;
    const candidate = Buffer.concat([raw.subarray(0, formatLength), Buffer.from(formatTail, 'base64url')]);
    if (payload && !payload.equals(candidate)) return undefined;
    payload = candidate;
  }
  return payload;
}

/**
 * The media type of manifest bytes: the body's `mediaType` field (image-spec: it MUST match the
 * descriptor's), else a Content-Type that names a manifest type, else the structure (schema 1
 * has `schemaVersion: 1`; an index has `manifests`; an image has `config` and `layers`).
 */
export function detectManifestMediaType(bytes: Uint8Array, contentType: string | undefined, context: ErrorContext = {}): string {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new ManifestError(`${context.operation ? `${context.operation}: ` : ''}manifest is not valid JSON`, context);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ManifestError(`${context.operation ? `${context.operation}: ` : ''}manifest is not a JSON object`, context);
  const body = json as Record<string, unknown>;
  if (typeof body.mediaType === 'string' && body.mediaType) return body.mediaType;
  if (contentType && isManifestMediaType(contentType)) return contentType;
  if (body.schemaVersion === 1) return Array.isArray(body.signatures) ? MediaTypes.dockerSchema1Signed : MediaTypes.dockerSchema1;
  if (Array.isArray(body.manifests)) return MediaTypes.ociIndex;
  if (body.config && Array.isArray(body.layers)) return MediaTypes.ociManifest;
  throw new ManifestError(`${context.operation ? `${context.operation}: ` : ''}cannot tell the manifest's media type (no mediaType field, Content-Type ${JSON.stringify(contentType ?? '')})`, context);
}
