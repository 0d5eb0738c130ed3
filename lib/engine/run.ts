/**
 * Running a plan against the target: blobs in parallel under per-registry limits, each manifest
 * as soon as everything it references is in the target, the root after its children, tags last
 * (invariant 1). A failure anywhere aborts the rest, waits for in-flight work, and leaves no
 * manifest or tag that references missing content.
 */
import { setMaxListeners } from 'node:events';
import pLimit from 'p-limit';
import type { ManifestHead, Repository } from '../oci/client.js';
import { BlobLocations, commitManifest, copyBlob, sided, type BlobOutcome, type CopyEvent, type TransferContext } from './execute.js';
import type { Plan, PlannedManifest } from './plan.js';
import type { RegistryPool } from './registries.js';

export interface CopyOptions {
  registries: RegistryPool;
  /**
   * Blob transfers at once per registry. Default 8: on loopback two cores saturate at about 4,
   * and across a WAN eight in flight hide round trips without tripping registries' rate limits.
   */
  concurrency?: number;
  chunkSize?: number;
  onEvent?: (event: CopyEvent) => void;
  signal?: AbortSignal;
  /** Shared between copies of one run (sync, the pipeline) so that blobs mount across repositories. */
  locations?: BlobLocations;
  /** Per-registry limiters shared between copies; made per copy when absent. */
  limits?: RegistryLimits;
}

export interface BlobCounts {
  copied: number;
  skipped: number;
  mounted: number;
  /** Bytes sent to the target. */
  bytes: number;
}

export interface CopyResult {
  source: string;
  target: string;
  /** The target root digest. */
  digest: string;
  mediaType: string;
  /** Nothing had to be done: the target already held this digest under the tag. */
  noop: boolean;
  blobs: BlobCounts;
  manifests: number;
  referrers: number;
  notes: string[];
}

/** A p-limit per registry host, acquired in a fixed (lexical) order so nested holds never deadlock. */
export class RegistryLimits {
  private readonly limits = new Map<string, ReturnType<typeof pLimit>>();
  constructor(private readonly perRegistry: number = 8) {}

  private get(host: string): ReturnType<typeof pLimit> {
    let limit = this.limits.get(host);
    if (!limit) {
      limit = pLimit(this.perRegistry);
      this.limits.set(host, limit);
    }
    return limit;
  }

  run<T>(hosts: readonly string[], task: () => Promise<T>): Promise<T> {
    const ordered = [...new Set(hosts)].sort();
    const wrap = (i: number): Promise<T> => (i === ordered.length ? task() : this.get(ordered[i] as string)(() => wrap(i + 1)));
    return wrap(0);
  }
}

export interface ExecuteArgs {
  source: Repository;
  target: Repository;
  options: CopyOptions;
  result: CopyResult;
  /** The root-present question, already asked (copyImage asks it while it reads the source). */
  rootProbe?: RootProbe;
}

/** A HEAD of the target by the digest the root is expected to have, sent before planning ends. */
export interface RootProbe {
  digest: string;
  head: Promise<ManifestHead | undefined>;
}

/**
 * Asks the target for `digest` now, so that the answer is ready when the plan is (one round trip
 * off the critical path); `answered` is a HEAD of that very digest already made.
 */
export function probeRoot(target: Repository, digest: string, answered?: { head: ManifestHead | undefined }): RootProbe {
  const head = answered ? Promise.resolve(answered.head) : sided('target', () => target.headManifest(digest));
  head.catch(() => undefined); // awaited by rootPresent; a failure before then must not go unhandled
  return { digest, head };
}

/** Is the planned root in the target? The probe's answer when it asked for that digest, else a HEAD now. */
export function rootPresent(target: Repository, digest: string, probe: RootProbe | undefined): Promise<ManifestHead | undefined> {
  return probe?.digest === digest ? probe.head : sided('target', () => target.headManifest(digest));
}

/** Runs a plan against the target. Exported for the embedded pipeline and for referrers. */
export async function executePlan(plan: Plan, { source, target, options, result, rootProbe }: ExecuteArgs): Promise<void> {
  const controller = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
  // Every request in flight listens on this one signal (concurrency x hosts, plus sleeps): many
  // listeners are the design here, not a leak, and each request removes its own when it settles.
  setMaxListeners(0, signal);
  const limits = options.limits ?? new RegistryLimits(options.concurrency ?? 8);
  const ctx: TransferContext = {
    source,
    target,
    locations: options.locations ?? new BlobLocations(),
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    ...(options.chunkSize ? { chunkSize: options.chunkSize } : {}),
    signal,
  };
  const hosts = [source.client.registry, target.client.registry];

  // Already there? Then every blob and child is there too (invariant 1 held when it was pushed).
  if (await rootPresent(target, plan.root.digest, rootProbe)) {
    result.noop = true;
    for (const tag of plan.tags) {
      const current = await sided('target', () => target.headManifest(tag));
      if (current?.digest !== plan.root.digest) {
        await commitManifest(ctx, plan.root, tag);
        result.manifests++;
        result.noop = false;
      }
    }
    return;
  }

  const blobTasks = new Map<string, Promise<unknown>>();
  const count = (outcome: BlobOutcome, bytes: number): void => {
    result.blobs[outcome]++;
    result.blobs.bytes += bytes;
  };
  for (const blob of plan.blobs) {
    blobTasks.set(
      blob.digest,
      limits.run(hosts, async () => {
        if (signal.aborted) throw signal.reason;
        const { outcome, bytes } = await copyBlob(ctx, blob);
        count(outcome, bytes);
      }),
    );
  }
  const manifestTasks = new Map<string, Promise<unknown>>();
  const commitAfterDependencies = (manifest: PlannedManifest): Promise<unknown> => {
    let task = manifestTasks.get(manifest.digest);
    if (!task) {
      const dependencies = manifest.dependsOn.map((d) => {
        const blob = blobTasks.get(d);
        if (blob) return blob;
        const child = plan.manifests.find((m) => m.digest === d);
        if (child) return commitAfterDependencies(child);
        return Promise.resolve(); // skipped foreign layers
      });
      task = Promise.all(dependencies).then(async () => {
        if (signal.aborted) throw signal.reason;
        const reference = manifest === plan.root && plan.tags.length ? (plan.tags[0] as string) : manifest.digest;
        await commitManifest(ctx, manifest, reference);
        result.manifests++;
      });
      manifestTasks.set(manifest.digest, task);
    }
    return task;
  };
  const all = [...blobTasks.values(), ...plan.manifests.map(commitAfterDependencies)];
  // Stop everything on the first failure, then wait for in-flight work to settle before reporting.
  const settled = Promise.allSettled(all);
  try {
    await Promise.all(all.map((p) => p.catch((err: unknown) => {
      controller.abort(err);
      throw err;
    })));
  } catch (err) {
    await settled;
    throw err;
  }
  for (const tag of plan.tags.slice(1)) {
    await commitManifest(ctx, plan.root, tag);
    result.manifests++;
  }
}
