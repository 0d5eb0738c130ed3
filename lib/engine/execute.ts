/**
 * Executors: the small, idempotent I/O steps a plan is made of. Content addressing is the
 * idempotency key: a blob or manifest already present in the target is done.
 *
 * - `copyBlob`: skip when present (HEAD), mount when the target registry already holds the blob
 *   in another repository (always tried first within one registry), else stream GET -> PUT with
 *   the source bytes verified on the way (the last byte is released only after the digest matched).
 * - `commitManifest`: PUT the exact planned bytes, and keep the referrers tag schema up to date on
 *   registries without the referrers API.
 *
 * A blob the source manifest references but the source registry does not have (a config or layer
 * deleted by garbage collection, a repository copied without its blobs) is an error, not a gap to
 * paper over: the copy fails with a RegistryError on the source side naming the blob, its media
 * type and the repository, and nothing that references it is committed. (Registries refuse such a
 * manifest on PUT anyway, and a config cannot be rebuilt from the manifest.)
 */
import { Readable } from 'node:stream';
import { digestOf } from '../digest.js';
import { OciRelayError, RegistryError, type Side } from '../errors.js';
import { MediaTypes } from '../manifest/media-types.js';
import { parseManifest, type Descriptor } from '../manifest/model.js';
import type { Repository } from '../oci/client.js';
import { isRetryableTransfer, sleep } from '../oci/retry.js';
import type { PlannedBlob, PlannedManifest } from './plan.js';

export type BlobOutcome = 'copied' | 'skipped' | 'mounted';

export type CopyEvent =
  | { type: 'blob-start'; digest: string; size: number }
  | { type: 'blob-progress'; digest: string; bytes: number; size: number }
  | { type: 'blob-done'; digest: string; size: number; outcome: BlobOutcome; bytes: number }
  | { type: 'manifest'; digest: string; mediaType: string; reference: string }
  | { type: 'note'; message: string };

/** Where blobs are known to live, per registry, so that later copies into it can mount. */
export class BlobLocations {
  private readonly byRegistry = new Map<string, Map<string, Set<string>>>();

  add(registry: string, repository: string, digest: string): void {
    let digests = this.byRegistry.get(registry);
    if (!digests) {
      digests = new Map();
      this.byRegistry.set(registry, digests);
    }
    let repos = digests.get(digest);
    if (!repos) {
      repos = new Set();
      digests.set(digest, repos);
    }
    repos.add(repository);
  }

  /** Whether `repository` of `registry` is known to hold `digest` (this process put it there, or saw it). */
  has(registry: string, repository: string, digest: string): boolean {
    return this.byRegistry.get(registry)?.get(digest)?.has(repository) ?? false;
  }

  /** A repository of `registry` other than `except` known to hold `digest`. */
  find(registry: string, digest: string, except: string): string | undefined {
    for (const repo of this.byRegistry.get(registry)?.get(digest) ?? []) if (repo !== except) return repo;
    return undefined;
  }
}

export interface TransferContext {
  source: Repository;
  target: Repository;
  locations?: BlobLocations;
  onEvent?: (event: CopyEvent) => void;
  /** Upload in chunks of this many bytes instead of one streamed PUT. */
  chunkSize?: number;
  /**
   * Whole-blob attempts when a transfer fails in a way worth repeating (a reset mid-upload, a 5xx
   * on the closing PUT) and resuming it in its session (see `Repository.pushBlob`) did not get
   * past it. Default 3; each attempt opens a fresh session and a fresh source stream.
   */
  blobAttempts?: number;
  signal?: AbortSignal;
}

export function sameRegistry(ctx: TransferContext): boolean {
  return ctx.source.client.registry === ctx.target.client.registry;
}

/** Copies one blob; idempotent. */
export async function copyBlob(ctx: TransferContext, blob: PlannedBlob): Promise<{ outcome: BlobOutcome; bytes: number }> {
  const { source, target } = ctx;
  const registry = target.client.registry;
  ctx.onEvent?.({ type: 'blob-start', digest: blob.digest, size: blob.size });
  const done = (outcome: BlobOutcome, bytes: number): { outcome: BlobOutcome; bytes: number } => {
    ctx.locations?.add(registry, target.name, blob.digest);
    ctx.onEvent?.({ type: 'blob-done', digest: blob.digest, size: blob.size, outcome, bytes });
    return { outcome, bytes };
  };
  ctx.locations?.add(source.client.registry, source.name, blob.digest);

  // Within one registry a mount is one request and answers "present" as well (201 either way).
  let mountFrom = sameRegistry(ctx) && !blob.inline ? source.name : undefined;
  if (!mountFrom) {
    const present = await sided('target', () => target.headBlob(blob.digest));
    if (present) return done('skipped', 0);
    mountFrom = ctx.locations?.find(registry, blob.digest, target.name);
  }

  const attempts = ctx.blobAttempts ?? 3;
  // The download starts alongside the upload session's POST instead of after it: one round trip
  // less per blob across a WAN. (Not with a mount in prospect, which needs no download.) The
  // stream is verified on its way like any other; one left unused because every attempt failed
  // before its upload began is closed when the copy gives up.
  let prefetched: Promise<Readable> | undefined = blob.inline || mountFrom ? undefined : sourceStream(source, blob, ctx.signal);
  prefetched?.catch(() => undefined);
  const open = async (): Promise<Readable> => {
    const first = prefetched;
    prefetched = undefined;
    return first ?? (blob.inline ? inlineStream(blob) : sourceStream(source, blob, ctx.signal));
  };
  // Bytes sent by attempts that failed count too: the report says what crossed the network.
  let earlier = 0;
  let current = 0;
  for (let attempt = 1; ; attempt++) {
    current = 0;
    try {
      const result = await sided('target', () =>
        target.pushBlob(
          { digest: blob.digest, size: blob.size },
          open,
          {
            ...(mountFrom ? { mountFrom } : {}),
            ...(ctx.chunkSize ? { chunkSize: ctx.chunkSize } : {}),
            ...(ctx.signal ? { signal: ctx.signal } : {}),
            onProgress: (bytes) => {
              current = bytes;
              ctx.onEvent?.({ type: 'blob-progress', digest: blob.digest, bytes, size: blob.size });
            },
          },
        ),
      );
      return done(result.outcome === 'mounted' ? 'mounted' : 'copied', earlier + result.bytesSent);
    } catch (err) {
      earlier += current;
      if (attempt >= attempts || ctx.signal?.aborted || !worthAnotherAttempt(err)) {
        void prefetched?.then((stream) => stream.destroy(), () => undefined);
        throw err;
      }
      mountFrom = undefined; // a mount that failed half-way is not tried again
      await sleep(200 * 2 ** (attempt - 1), ctx.signal);
    }
  }
}

/**
 * Failures of the transfer itself (not of the content) that a whole new attempt may get past. Not
 * the source's: its stream resumes itself (Range, with the transport's retries under each resume),
 * and when it gives up, another whole attempt would only multiply those budgets.
 */
function worthAnotherAttempt(err: unknown): boolean {
  return !(err instanceof OciRelayError && err.side === 'source') && isRetryableTransfer(err);
}

async function sourceStream(source: Repository, blob: PlannedBlob, signal?: AbortSignal): Promise<Readable> {
  const stream = await sided('source', () => source.fetchBlob({ digest: blob.digest, size: blob.size }, signal ? { signal } : {}).catch((err: unknown) => Promise.reject(missingBlob(err, source, blob))));
  // Errors of the source stream surface through the upload; name their side before they do.
  stream.prependListener('error', (err) => {
    if (err instanceof OciRelayError) err.attachSide('source');
  });
  return stream;
}

/** A 404 on a blob the manifest references, said as such (the registry's own words kept at the end). */
export function missingBlob(err: unknown, source: Repository, blob: { digest: string; size: number; mediaType?: string }): unknown {
  if (!(err instanceof RegistryError) || !err.notFound) return err;
  return new RegistryError(
    {
      status: err.status,
      method: err.method,
      url: err.url ?? '',
      errors: err.errors,
      operation: err.operation ?? 'GET blob',
      message: `${err.operation ?? 'GET blob'}: the manifest references blob ${blob.digest} (${blob.mediaType ?? 'no media type'}, ${blob.size} bytes), which the source repository ${source.name} does not have (${err.detail})`,
    },
    { cause: err, side: 'source' },
  );
}

function inlineStream(blob: PlannedBlob): Readable {
  const bytes = blob.inline as Buffer;
  if (digestOf(bytes) !== blob.digest || bytes.length !== blob.size) {
    throw new OciRelayError('ERR_DIGEST_MISMATCH', `generated blob ${blob.digest} does not match its own bytes`);
  }
  return Readable.from([bytes]);
}

/** Runs a registry operation and names the side of any error it throws. */
export async function sided<T>(side: Side, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (err) {
    if (err instanceof OciRelayError) err.attachSide(side);
    throw err;
  }
}

/**
 * PUTs a planned manifest under `reference` (its digest, or a tag for the last step). When the
 * manifest has a subject and the registry did not index it (no OCI-Subject header), the referrers
 * tag schema index is updated as the distribution spec asks of clients.
 */
export async function commitManifest(ctx: Pick<TransferContext, 'target' | 'onEvent'>, manifest: PlannedManifest, reference: string = manifest.digest): Promise<void> {
  const result = await sided('target', () => ctx.target.putManifest(reference, manifest.bytes, manifest.mediaType));
  ctx.onEvent?.({ type: 'manifest', digest: manifest.digest, mediaType: manifest.mediaType, reference });
  const parsed = parseManifest(manifest.bytes, manifest.mediaType);
  if (parsed.subject && !result.subject) {
    await sided('target', () => addToReferrersTag(ctx.target, parsed.subject as Descriptor, referrerDescriptor(manifest, parsed)));
  }
}

/** The descriptor a referrers index lists for a manifest (spec: artifactType, else config mediaType; annotations). */
export function referrerDescriptor(manifest: { digest: string; size: number; mediaType: string }, parsed: ReturnType<typeof parseManifest>): Descriptor {
  const artifactType = parsed.kind === 'image' ? (parsed.artifactType ?? parsed.config.mediaType) : typeof parsed.json.artifactType === 'string' ? parsed.json.artifactType : undefined;
  return {
    mediaType: manifest.mediaType,
    digest: manifest.digest,
    size: manifest.size,
    ...(artifactType ? { artifactType } : {}),
    ...(parsed.annotations ? { annotations: parsed.annotations } : {}),
  };
}

/** The `<alg>-<hex>` tag of the referrers tag schema. */
export function referrersTag(digest: string): string {
  const [algorithm, encoded] = digest.split(':') as [string, string];
  return `${algorithm.slice(0, 32)}-${encoded.slice(0, 64)}`;
}

async function addToReferrersTag(target: Repository, subject: Descriptor, entry: Descriptor): Promise<void> {
  const tag = referrersTag(subject.digest);
  let manifests: Descriptor[] = [];
  let json: Record<string, unknown> = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests };
  try {
    const current = await target.getManifest(tag, { accept: [MediaTypes.ociIndex] });
    const parsed = parseManifest(current.bytes, current.mediaType);
    if (parsed.kind === 'index') {
      manifests = parsed.manifests;
      json = parsed.json;
    }
  } catch (err) {
    if (!(err instanceof RegistryError && err.notFound)) throw err;
  }
  if (manifests.some((d) => d.digest === entry.digest)) return;
  const next = Buffer.from(JSON.stringify({ ...json, manifests: [...manifests, entry] }));
  await target.putManifest(tag, next, MediaTypes.ociIndex);
}
