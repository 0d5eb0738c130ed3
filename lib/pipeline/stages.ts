/**
 * The pipeline's stages, as plain functions over ports (no AWS here): fan-out plans a request and
 * enqueues tasks; workers run image, blob and commit tasks; the export stage writes archives.
 * The Lambda handlers in functions/ and the embedded runtime both call these, with the same
 * serialised messages.
 *
 * Every stage is idempotent and safe to run twice, late or out of order (SQS is at-least-once):
 * content addressing is the idempotency key, and a commit is a barrier that checks, in the
 * target, that everything its manifest references is there before it PUTs it.
 */
import pLimit from 'p-limit';
import { verifyBytes } from '../digest.js';
import { errorMessage, ErrorCodes, OciRelayError, RegistryError } from '../errors.js';
import { BlobLocations, commitManifest, copyBlob, sided } from '../engine/execute.js';
import { normaliseRequest, planOptionsFor, rewritesManifests, type CopyRequest, type ResolvedRequest } from '../engine/copy.js';
import { probeRoot, rootPresent } from '../engine/run.js';
import { resolveSource, type SourceGraph, type SourceNode } from '../engine/graph.js';
import { planCopy, type Plan, type PlannedBlob, type PlannedManifest } from '../engine/plan.js';
import type { RegistryPool } from '../engine/registries.js';
import { referrersTag } from '../engine/execute.js';
import { COSIGN_SUFFIXES } from '../engine/referrers.js';
import { exportImage } from '../export/export.js';
import { isIndexMediaType, isNonDistributableMediaType } from '../manifest/media-types.js';
import { parseManifest, references, type Descriptor } from '../manifest/model.js';
import type { Repository } from '../oci/client.js';
import type { ArchiveStore } from '../ports/archive-store.js';
import type { Invoker } from '../ports/invoker.js';
import type { Queue } from '../ports/queue.js';
import { parseReference } from '../ref/index.js';
import { uploadLargeBlob } from './large-blob.js';
import {
  MAX_INLINE_MANIFEST_BYTES,
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  requestRefOf,
  serialise,
  type BlobTask,
  type CommitTask,
  type ExportSpec,
  type ExportTask,
  type ImageTask,
  type ReplicationRequest,
  type RequestRef,
} from './messages.js';
import type { Logger, Metrics } from './telemetry.js';
import type { Config } from '../rules/config.js';

export interface PipelineEnv {
  registries: RegistryPool;
  /** Image, blob and commit tasks. */
  work: Queue;
  /** Export tasks. */
  exports: Queue;
  /** Where messages that can never succeed go (an invalid message, a permanent failure). */
  deadLetters: Queue;
  /**
   * Fan-out's failed requests (in AWS: the queue that is also its asynchronous invocations'
   * on-failure destination). An invalid request is sent here at once, in the shape of Lambda's
   * on-failure records. Unset: the invalid request is thrown, and Lambda's retries deliver it there.
   */
  failedRequests?: Queue;
  store: ArchiveStore;
  /** Hands sub-requests (referrers) back to fan-out. */
  fanout: Invoker;
  logger: Logger;
  metrics: Metrics;
  locations?: BlobLocations;
  /** Blobs larger than this are uploaded in chunks with the time budget checked. Default 64 MiB. */
  largeBlobBytes?: number;
  /** Chunk size for those. Default 32 MiB. */
  chunkBytes?: number;
  /** Blobs up to this size are batched into one task. Default 4 MiB. */
  smallBlobBytes?: number;
  /** At most this many small blobs, and this many bytes, per batch. Defaults 16 and 16 MiB. */
  batchBlobs?: number;
  batchBytes?: number;
  /**
   * Invocations a large blob may take in all (each sends at least one chunk) before its task is
   * dead-lettered. Default 64: 16 hours of 15-minute invocations, inside a commit's 24-hour wait.
   */
  maxBlobHops?: number;
  /** Delay of a large blob's follow-up after a transient failure (not after its time budget). Default 10 s. */
  blobRetryDelaySeconds?: number;
  /**
   * Delay of a commit enqueued together with the work it waits for. Default 0: in SQS an early
   * commit is cheap to find not ready and re-send. The embedded runtime sets a delay and wakes a
   * commit as soon as a task of its request completes.
   */
  commitDelaySeconds?: number;
  /** The rules (OCIRELAY_CONFIG or OCIRELAY_CONFIG_FILE): what the steps of a scheduled sync read; absent, sync messages fail. */
  config?: Config;
  /** Repositories per catalog page, and tags per tag-list page, of a sync step. Default 1000. */
  syncPageSize?: number;
  /** Tags one repository step compares at most before it hands them on in batches. Default (and at most) MAX_SYNC_TAGS. */
  syncTagsPerMessage?: number;
  /** Registry requests (and invocations) at once in one sync step. Default 16. */
  syncConcurrency?: number;
  /** Registries whose chunked upload is broken (ECR): monolithic PUT only. */
  monolithicOnly?: (registry: string) => boolean;
  /** Creates a missing target repository before the first push (ECR). */
  ensureRepository?: (registry: string, repository: string) => Promise<void>;
  now?: () => number;
}

/**
 * A commit whose content is not all in the target yet: retried later with backoff. `refused` is
 * the target's answer when it refused the PUT for content it did not find, after the HEADs had
 * found all of it.
 */
export class NotReadyError extends OciRelayError {
  readonly missing: string[];
  constructor(digest: string, missing: string[], refused?: string) {
    const waits = `waits for ${missing.length} missing item${missing.length === 1 ? '' : 's'} (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''})`;
    super(ErrorCodes.Unsupported, refused && !missing.length ? `commit of ${digest} was refused for missing content by the target although all of it was there (${refused})` : `commit of ${digest} ${waits}`, { retryable: true });
    this.missing = missing;
  }
}

/** Error codes with which a registry refuses a manifest PUT because something it references is unknown to it. */
const REFERENCE_UNKNOWN = new Set(['MANIFEST_BLOB_UNKNOWN', 'BLOB_UNKNOWN', 'MANIFEST_UNKNOWN']);

/** ECR (`<account>.dkr.ecr.<region>.amazonaws.com`): its chunked upload is not usable. */
export function isEcrRegistry(registry: string): boolean {
  return /^\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$/.test(registry);
}

function repositories(env: PipelineEnv, request: RequestRef): { req: ResolvedRequest; source: Repository; target: Repository; targetRef: ReturnType<typeof parseReference> } {
  const req = normaliseRequest(toCopyRequest(request));
  return {
    req,
    source: env.registries.get(req.source.registry).repository(req.source.repository, 'pull'),
    target: env.registries.get(req.target.registry).repository(req.target.repository, 'push'),
    targetRef: req.target,
  };
}

function toCopyRequest(request: RequestRef): CopyRequest {
  return {
    source: request.source,
    target: request.target,
    mode: request.mode,
    platforms: request.platforms,
    annotations: request.annotations,
    referrers: request.referrers,
    includeForeignLayers: request.includeForeignLayers,
  };
}

async function plan(env: PipelineEnv, request: RequestRef): Promise<{ plan: Plan; graph: SourceGraph }> {
  const { req, source } = repositories(env, request);
  const graph = await sided('source', () => resolveSource(source, req.source.digest ?? req.source.tag ?? 'latest', { mode: req.mode, platforms: req.platforms }));
  return {
    graph,
    plan: planCopy(graph, planOptionsFor(req, request.includeForeignLayers ?? false)),
  };
}

// --- fan-out ---------------------------------------------------------------------------------

export interface FanoutResult {
  digest: string;
  noop: boolean;
  tasks: { image: number; blob: number; commit: number };
}

/**
 * Reads the source, plans, and enqueues: one image task per platform of an index (each owning
 * the blobs no earlier platform has), or the blob tasks of a single image; a commit task per
 * manifest; the root's commit carrying the tags (and the export, when asked). Referrers become
 * sub-requests handed back to fan-out.
 */
export async function fanOut(request: ReplicationRequest, env: PipelineEnv): Promise<FanoutResult> {
  const ref = requestRefOf(request);
  const { req, source, target, targetRef } = repositories(env, ref);
  const log = env.logger.child({ requestId: request.id, source: request.source, target: request.target });
  // A source named by digest (push events carry it) names the root before the source is read,
  // unless an option rewrites manifests: ask the target for it meanwhile, as copyImage does.
  const early = req.source.digest && !rewritesManifests(req) ? probeRoot(target, req.source.digest) : undefined;
  const { plan: p } = await plan(env, ref);
  const result: FanoutResult = { digest: p.root.digest, noop: false, tasks: { image: 0, blob: 0, commit: 0 } };

  await env.ensureRepository?.(target.client.registry, target.name);

  // Already there under its tag: nothing to do but what the request adds (export, referrers).
  // (An early answer of 404 from an ECR repository created just above is still right: it held nothing.)
  const present = await rootPresent(target, p.root.digest, early);
  const tagged = present && (p.tags.length === 0 || (await Promise.all(p.tags.map((t) => sided('target', () => target.headManifest(t))))).every((h) => h?.digest === p.root.digest));

  const work: string[] = [];
  const commits: string[] = [];
  if (present && tagged) {
    result.noop = true;
    if (request.export) await enqueueExport(env, request.id, `${targetRef.registry}/${targetRef.repository}@${p.root.digest}`, request.export);
  } else if (present) {
    commits.push(serialise(commitTask(ref, p.root, p.tags, request.export)));
  } else {
    // Generated blobs (a converted schema-1 config) exist nowhere else: push them now, they are small.
    for (const blob of p.blobs.filter((b) => b.inline)) await copyBlob({ source, target }, blob);
    const owned = new Set<string>();
    for (const m of p.manifests) {
      if (m.root) continue;
      if (isIndexMediaType(m.mediaType)) {
        commits.push(serialise(commitTask(ref, m, [])));
        continue;
      }
      if (!m.sourceDigest) throw new OciRelayError(ErrorCodes.InvalidManifest, `planned manifest ${m.digest} has no source`);
      // Each blob is owned by the first platform that needs it: copied once, however many share it.
      const notOwned = m.dependsOn.filter((d) => owned.has(d));
      for (const d of m.dependsOn) owned.add(d);
      const task: ImageTask = { v: PROTOCOL_VERSION, type: 'image', request: ref, sourceDigest: m.sourceDigest, targetDigest: m.digest, ...(m.platform ? { platform: m.platform } : {}), notOwned };
      work.push(serialise(task));
      result.tasks.image++;
    }
    if (!isIndexMediaType(p.root.mediaType)) {
      // A single image: fan-out is its image task.
      for (const batch of batchBlobs(p.blobs.filter((b) => !b.inline), env)) work.push(serialise(blobTask(request.id, source, target, batch)));
    }
    // The root (an index after its children, or the single image) carries the tags, moved last.
    commits.push(serialise(commitTask(ref, p.root, p.tags, request.export)));
  }
  result.tasks.blob = work.length - result.tasks.image;
  result.tasks.commit = commits.length;
  await sendWorkAndCommits(env, work, commits);
  log.info('fan-out planned', { digest: p.root.digest, noop: result.noop, tasks: result.tasks, platforms: p.manifests.filter((m) => m.platform).map((m) => m.platform) });

  if (request.referrers) await fanOutReferrers(request, p, source, env);
  return result;
}

/**
 * The commit task of a planned manifest. A rewritten manifest travels inline when it is small and
 * the whole message, serialised, stays within MAX_MESSAGE_BYTES (the request's annotations and
 * tags travel too); otherwise the worker re-derives it from the source by re-running the planner.
 */
export function commitTask(request: RequestRef, m: PlannedManifest, tags: string[], exportSpec?: ExportSpec): CommitTask {
  const base = {
    v: PROTOCOL_VERSION,
    type: 'commit' as const,
    request,
    digest: m.digest,
    mediaType: m.mediaType,
    size: m.size,
    tags,
    ...(exportSpec ? { export: exportSpec } : {}),
  };
  // Small manifests travel inline, verbatim ones too: one source GET less per attempt (the
  // worker verifies the bytes against the digest either way).
  if (m.bytes.length <= MAX_INLINE_MANIFEST_BYTES) {
    const inline: CommitTask = { ...base, content: { from: 'inline', base64: m.bytes.toString('base64') } };
    // Room for the `wait` a not-ready commit adds when it re-sends itself.
    if (Buffer.byteLength(JSON.stringify(inline)) + COMMIT_WAIT_BYTES <= MAX_MESSAGE_BYTES) return inline;
  }
  if (m.verbatim) return { ...base, content: { from: 'source', digest: m.digest } };
  return { ...base, content: { from: 'derive' } };
}

/** What `wait: { attempt, deadline }` adds to a commit message, at most. */
const COMMIT_WAIT_BYTES = 64;

function blobTask(requestId: string, source: Repository, target: Repository, blobs: PlannedBlob[]): BlobTask {
  return {
    v: PROTOCOL_VERSION,
    type: 'blob',
    requestId,
    source: { registry: source.client.registry, repository: source.name },
    target: { registry: target.client.registry, repository: target.name },
    blobs: blobs.map((b) => ({ digest: b.digest, size: b.size, mediaType: b.mediaType })),
  };
}

/** Small blobs travel together (fewer invocations); each large one alone. */
export function batchBlobs(blobs: readonly PlannedBlob[], env: Pick<PipelineEnv, 'smallBlobBytes' | 'batchBlobs' | 'batchBytes'>): PlannedBlob[][] {
  const small = env.smallBlobBytes ?? 4 * 1024 * 1024;
  const maxBlobs = env.batchBlobs ?? 16;
  const maxBytes = env.batchBytes ?? 16 * 1024 * 1024;
  const out: PlannedBlob[][] = [];
  let batch: PlannedBlob[] = [];
  let bytes = 0;
  for (const blob of blobs) {
    if (blob.size > small) {
      out.push([blob]);
      continue;
    }
    if (batch.length >= maxBlobs || bytes + blob.size > maxBytes) {
      out.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(blob);
    bytes += blob.size;
  }
  if (batch.length) out.push(batch);
  return out;
}

async function fanOutReferrers(request: ReplicationRequest, p: Plan, source: Repository, env: PipelineEnv): Promise<void> {
  const targetRef = parseReference(request.target);
  const sourceRef = parseReference(request.source);
  const base = { v: PROTOCOL_VERSION, type: 'replicate' as const, mode: 'prefer-multiarch' as const, platforms: [], annotations: {}, referrers: true, includeForeignLayers: request.includeForeignLayers };
  const repoOf = (ref: ReturnType<typeof parseReference>): string => `${ref.registry}/${ref.repository}`;
  for (const m of p.manifests.filter((x) => x.verbatim)) {
    const { descriptors } = await sided('source', () => source.referrers(m.digest));
    const subRequests: ReplicationRequest[] = descriptors.map((d) => ({ ...base, id: `${request.id}/ref/${d.digest.slice(7, 19)}`, source: `${repoOf(sourceRef)}@${d.digest}`, target: `${repoOf(targetRef)}@${d.digest}` }));
    for (const suffix of COSIGN_SUFFIXES) {
      const tag = `${referrersTag(m.digest)}.${suffix}`;
      const head = await sided('source', () => source.headManifest(tag)).catch((err: unknown) => {
        if (err instanceof RegistryError && err.notFound) return undefined;
        throw err;
      });
      if (head) subRequests.push({ ...base, id: `${request.id}/${suffix}/${m.digest.slice(7, 19)}`, source: `${repoOf(sourceRef)}:${tag}`, target: `${repoOf(targetRef)}:${tag}` });
    }
    for (const sub of subRequests) await env.fanout.invokeAsync(serialise(sub));
  }
}

// --- image tasks -----------------------------------------------------------------------------

/** One platform: re-read the child by digest, plan it alone, enqueue its blobs and its commit. */
export async function runImageTask(task: ImageTask, env: PipelineEnv): Promise<void> {
  const { source, target } = repositories(env, task.request);
  const fetched = await sided('source', () => source.getManifest(task.sourceDigest));
  const node: SourceNode = { digest: fetched.digest, mediaType: fetched.mediaType, size: fetched.size, bytes: fetched.bytes, manifest: parseManifest(fetched.bytes, fetched.mediaType) };
  const graph: SourceGraph = { root: node, nodes: new Map([[node.digest, node]]), configPlatforms: new Map(), generatedBlobs: new Map() };
  const child = planCopy(graph, { mode: 'prefer-multiarch', annotations: task.request.annotations, includeForeignLayers: task.request.includeForeignLayers, target: {} });
  if (child.root.digest !== task.targetDigest) {
    throw new OciRelayError(ErrorCodes.InvalidManifest, `platform ${task.platform ?? task.sourceDigest} plans to ${child.root.digest}, fan-out planned ${task.targetDigest}`);
  }
  const notOwned = new Set(task.notOwned);
  const blobs = batchBlobs(child.blobs.filter((b) => !notOwned.has(b.digest)), env).map((batch) => serialise(blobTask(task.request.id, source, target, batch)));
  await sendWorkAndCommits(env, blobs, [serialise(commitTask(task.request, { ...child.root, root: false }, []))]);
}

/**
 * Enqueues tasks and the commits that wait for them. Without a commit delay: work first, commits
 * after (a commit that arrives early only waits). With one: the delayed commits first, so that
 * work completing at once can already wake them (the embedded runtime's expedite).
 */
async function sendWorkAndCommits(env: PipelineEnv, work: string[], commits: string[]): Promise<void> {
  const delay = work.length ? (env.commitDelaySeconds ?? 0) : 0;
  if (delay > 0) {
    await env.work.send(commits, { delaySeconds: delay });
    await env.work.send(work);
    return;
  }
  await env.work.send(work);
  await env.work.send(commits);
}

// --- blob tasks ------------------------------------------------------------------------------

export interface BlobTaskResult {
  copied: number;
  skipped: number;
  mounted: number;
  bytes: number;
  /** Set when a large blob continues in a follow-up task. */
  continued?: string;
  /** The transient failure after which it was handed over (rather than its time budget). */
  handedOverAfter?: string;
  /** Set when the session to continue was gone and the blob started again in a fresh one. */
  freshSession?: boolean;
}

/** Copies the task's blobs (a small batch in parallel); a large blob may continue in a follow-up task. */
export async function runBlobTask(task: BlobTask, env: PipelineEnv, deadline: number): Promise<BlobTaskResult> {
  const source = env.registries.get(task.source.registry).repository(task.source.repository, 'pull');
  const target = env.registries.get(task.target.registry).repository(task.target.repository, 'push');
  const result: BlobTaskResult = { copied: 0, skipped: 0, mounted: 0, bytes: 0 };
  const large = env.largeBlobBytes ?? 64 * 1024 * 1024;
  const monolithic = env.monolithicOnly?.(task.target.registry) ?? isEcrRegistry(task.target.registry);
  const limit = pLimit(4);
  await Promise.all(
    task.blobs.map((blob) =>
      limit(async () => {
        if (!task.continuation && (monolithic || blob.size <= large || source.client.registry === target.client.registry)) {
          const { outcome, bytes } = await copyBlob({ source, target, ...(env.locations ? { locations: env.locations } : {}) }, blob);
          result[outcome]++;
          result.bytes += bytes;
          return;
        }
        if (!task.continuation) {
          const present = await sided('target', () => target.headBlob(blob.digest));
          if (present) {
            result.skipped++;
            return;
          }
        }
        const resumeFrom = task.continuation ? { location: task.continuation.location, ...(task.continuation.hash ? { hash: task.continuation.hash } : {}) } : undefined;
        const outcome = await uploadLargeBlob(source, target, blob, { chunkSize: env.chunkBytes ?? 32 * 1024 * 1024, deadline, ...(resumeFrom ? { resumeFrom } : {}), ...(env.now ? { now: env.now } : {}) });
        result.bytes += outcome.bytesSent;
        if (outcome.freshSession) result.freshSession = true;
        if (outcome.done) {
          result.copied++;
          return;
        }
        const hops = (task.continuation?.hops ?? 1) + 1;
        const maxHops = env.maxBlobHops ?? 64;
        if (hops > maxHops) {
          await target.cancelUpload({ location: new URL(outcome.location), minChunkLength: undefined, offset: outcome.offset });
          throw new OciRelayError(ErrorCodes.Unsupported, `blob ${blob.digest} (${blob.size} bytes) did not finish in ${maxHops} invocations (${outcome.offset} bytes sent); its upload was cancelled`, { side: 'target' });
        }
        const followUp: BlobTask = { ...task, blobs: [blob], continuation: { location: outcome.location, hops, ...(outcome.hash ? { hash: outcome.hash } : {}) } };
        // After a transient failure the follow-up waits a little; after the time budget it goes at once.
        await env.work.send([serialise(followUp)], outcome.reason === 'error' ? { delaySeconds: env.blobRetryDelaySeconds ?? 10 } : {});
        result.continued = `${blob.digest} at ${outcome.offset} of ${blob.size}`;
        if (outcome.reason === 'error') result.handedOverAfter = errorMessage(outcome.error);
      }),
    ),
  );
  return result;
}

// --- commit tasks ----------------------------------------------------------------------------

/**
 * The barrier: derive the manifest's bytes, check them against the task's digest and size, HEAD
 * everything they reference in the target, and PUT only when all of it is there. Then the tags,
 * then the export. Throws NotReadyError while something is missing.
 */
export async function runCommitTask(task: CommitTask, env: PipelineEnv): Promise<{ committed: boolean }> {
  const { source, target, targetRef } = repositories(env, task.request);
  const bytes = await manifestBytes(task, source, env);
  verifyBytes(bytes, { digest: task.digest, size: task.size }, { operation: 'commit manifest' });
  const parsed = parseManifest(bytes, task.mediaType);
  const needed = references(parsed).filter((d) => task.request.includeForeignLayers || !isForeign(d));
  const limit = pLimit(8);
  const findMissing = async (): Promise<string[]> =>
    (
      await Promise.all(
        needed.map((d) =>
          limit(async () => {
            // A blob this process copied into the target repository (the registry said 201) needs
            // no HEAD; should it have gone since, the PUT is refused and the commit waits.
            if (!isIndexMediaType(task.mediaType) && env.locations?.has(target.client.registry, target.name, d.digest)) return undefined;
            const there = isIndexMediaType(task.mediaType) ? await sided('target', () => target.headManifest(d.digest)) : await sided('target', () => target.headBlob(d.digest));
            return there ? undefined : d.digest;
          }),
        ),
      )
    ).filter((d): d is string => !!d);
  const missing = await findMissing();
  if (missing.length) throw new NotReadyError(task.digest, missing);
  const planned: PlannedManifest = { digest: task.digest, mediaType: task.mediaType, size: task.size, bytes, verbatim: task.content.from === 'source', dependsOn: [] };
  try {
    await commitManifest({ target }, planned, task.tags[0] ?? task.digest);
    for (const tag of task.tags.slice(1)) await commitManifest({ target }, planned, tag);
  } catch (err) {
    // The target is the judge of what it holds: a PUT refused because something referenced is
    // unknown to it has not passed the barrier, whatever the HEADs said a moment before. It
    // happens with content that is there: distribution 2.8 rewrites a link file in place
    // (truncate, then write), so a duplicate task re-linking a blob or re-putting a child while
    // this PUT reads that link makes the PUT find nothing (400 MANIFEST_BLOB_UNKNOWN). The commit
    // waits and checks again, as for content not there yet, instead of being dead-lettered.
    const refused = err instanceof RegistryError ? err.errors.filter((e) => REFERENCE_UNKNOWN.has(e.code)) : [];
    if (!refused.length) throw err;
    throw new NotReadyError(task.digest, await findMissing(), `${(err as RegistryError).status} ${refused.map((e) => e.code).join(', ')}`);
  }
  if (task.export) await enqueueExport(env, task.request.id, `${targetRef.registry}/${targetRef.repository}@${task.digest}`, task.export);
  return { committed: true };
}

function isForeign(d: Descriptor): boolean {
  return isNonDistributableMediaType(d.mediaType) || (Array.isArray(d.urls) && d.urls.length > 0);
}

async function manifestBytes(task: CommitTask, source: Repository, env: PipelineEnv): Promise<Buffer> {
  switch (task.content.from) {
    case 'source':
      return (await sided('source', () => source.getManifest(task.content.from === 'source' ? task.content.digest : task.digest))).bytes;
    case 'inline':
      return Buffer.from(task.content.base64, 'base64');
    case 'derive': {
      const { plan: p } = await plan(env, task.request);
      const found = p.manifests.find((m) => m.digest === task.digest);
      if (!found) throw new OciRelayError(ErrorCodes.InvalidManifest, `re-planning ${task.request.source} no longer produces ${task.digest} (the source changed?)`, { side: 'source' });
      return found.bytes;
    }
  }
}

async function enqueueExport(env: PipelineEnv, requestId: string, source: string, spec: ExportSpec): Promise<void> {
  const task: ExportTask = { v: PROTOCOL_VERSION, type: 'export', requestId, source, spec };
  await env.exports.send([serialise(task)]);
}

// --- export tasks ----------------------------------------------------------------------------

export async function runExportTask(task: ExportTask, env: PipelineEnv): Promise<{ destination: string; bytes: number; sha256: string }> {
  const result = await exportImage(
    { source: task.source, destination: task.spec.destination, format: task.spec.format, ...(task.spec.platform ? { platform: task.spec.platform } : {}), ...(task.spec.noConfig ? { noConfig: true } : {}) },
    { registries: env.registries, store: env.store },
  );
  return { destination: result.destination, bytes: result.bytes, sha256: result.sha256 };
}
