/**
 * `copyImage`: resolve the source, plan, then run the plan: blobs in parallel under per-registry
 * limits, each manifest as soon as everything it references is in the target, the root after its
 * children, the tag last (invariant 1). A failure anywhere stops the rest and leaves no manifest
 * or tag that references missing content.
 *
 * Cheap when there is nothing to do: if the target tag already names the source digest (and no
 * option rewrites manifests), the copy costs one manifest HEAD on each side, sent at once (none on
 * the source when it is named by digest; two in registry-defaults mode where the registry cannot
 * pick a single image); if the planned root is already in the target, only the tag is written.
 */
import { ErrorCodes, OciRelayError } from '../errors.js';
import { MANIFEST_MEDIA_TYPES, isSchema1MediaType } from '../manifest/media-types.js';
import { parsePlatform, type PlatformFilter } from '../manifest/model.js';
import type { Repository } from '../oci/client.js';
import { formatReference, parseReference, type Reference } from '../ref/index.js';
import { sided, type CopyEvent } from './execute.js';
import { ACCEPT_SINGLE_IMAGE, resolveSource, type CopyMode } from './graph.js';
import { planCopy, type PlanOptions } from './plan.js';
import { copyReferrers } from './referrers.js';
import { executePlan, probeRoot, type CopyOptions, type CopyResult, type RootProbe } from './run.js';

export { RegistryLimits, executePlan, type BlobCounts, type CopyOptions, type CopyResult } from './run.js';

export interface CopyRequest {
  source: string | Reference;
  target: string | Reference;
  /** Default `prefer-multiarch`. */
  mode?: CopyMode;
  /** `os/arch[/variant]` filters; an index keeps only matching entries. */
  platforms?: ReadonlyArray<string | PlatformFilter>;
  /** Merged into the index and every manifest (OCI media types). */
  annotations?: Readonly<Record<string, string>>;
  /** Copy OCI referrers and cosign-style tags of every copied manifest, recursively. */
  referrers?: boolean;
  /** Copy foreign / non-distributable layers instead of skipping them. */
  includeForeignLayers?: boolean;
}

export interface ResolvedRequest {
  source: Reference;
  target: Reference;
  mode: CopyMode;
  platforms: PlatformFilter[];
  annotations: Record<string, string>;
}

/** Validates a request: references, platforms, annotation keys. Throws before any I/O. */
export function normaliseRequest(request: CopyRequest): ResolvedRequest {
  const source = typeof request.source === 'string' ? parseReference(request.source) : request.source;
  const target = typeof request.target === 'string' ? parseReference(request.target, { defaultTag: source.tag && !source.digest ? source.tag : source.digest ? '' : 'latest' }) : request.target;
  if (!target.tag && !target.digest && !source.digest) throw new OciRelayError(ErrorCodes.Usage, 'the target needs a tag or a digest');
  const mode = request.mode ?? 'prefer-multiarch';
  const platforms = (request.platforms ?? []).map((p) => (typeof p === 'string' ? parsePlatform(p) : p));
  const annotations = { ...request.annotations };
  for (const key of Object.keys(annotations)) {
    if (!key) throw new OciRelayError(ErrorCodes.Usage, 'an annotation key must not be empty');
  }
  return { source, target, mode, platforms, annotations };
}

/** The planner's options for a validated request (one place, for copy, the dry run and the pipeline). */
export function planOptionsFor(req: ResolvedRequest, includeForeignLayers: boolean): PlanOptions {
  return {
    mode: req.mode,
    platforms: req.platforms,
    annotations: req.annotations,
    includeForeignLayers,
    target: { ...(req.target.tag ? { tag: req.target.tag } : {}), ...(req.target.digest ? { digest: req.target.digest } : {}) },
  };
}

/** Whether the request changes manifests (then the planned root is not the source's root). */
export function rewritesManifests(request: Pick<ResolvedRequest, 'platforms' | 'annotations' | 'mode'>): boolean {
  return request.platforms.length > 0 || Object.keys(request.annotations).length > 0 || request.mode === 'normalise-to-multiarch';
}

function sourceReference(ref: Reference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/**
 * The manifest reference the target is addressed by for the no-op check: its tag, else its digest,
 * else (a target with neither, allowed when the source is named by digest) the root's digest.
 */
function targetReference(ref: Reference, root?: string): string | undefined {
  return ref.tag ?? ref.digest ?? root;
}

export async function copyImage(request: CopyRequest, options: CopyOptions): Promise<CopyResult> {
  const req = normaliseRequest(request);
  const pool = options.registries;
  const source = pool.get(req.source.registry).repository(req.source.repository, 'pull');
  const target = pool.get(req.target.registry).repository(req.target.repository, 'push');
  const result: CopyResult = {
    source: formatReference(req.source),
    target: formatReference(req.target),
    digest: '',
    mediaType: '',
    noop: false,
    blobs: { copied: 0, skipped: 0, mounted: 0, bytes: 0 },
    manifests: 0,
    referrers: 0,
    notes: [],
  };

  // The near-free no-op: a HEAD on each side, at once. HEADs, not a GET of the source that a copy
  // could reuse: the no-op is the common run (re-runs, scheduled syncs), and manifest GETs are
  // what Docker Hub's pull-rate limit and registries' pull counts (Harbor, Quay) count.
  let rootProbe: RootProbe | undefined;
  if (!rewritesManifests(req) && !request.referrers) {
    const headSource = async (): Promise<{ digest: string | undefined; mediaType: string | undefined } | undefined> => {
      if (req.source.digest) return { digest: req.source.digest, mediaType: undefined };
      const reference = sourceReference(req.source);
      if (req.mode !== 'registry-defaults') return source.headManifest(reference, { accept: MANIFEST_MEDIA_TYPES });
      // As resolveSource does: where the registry cannot pick a single image (404), the full list is what gets copied.
      return (await source.headManifest(reference, { accept: ACCEPT_SINGLE_IMAGE })) ?? source.headManifest(reference, { accept: MANIFEST_MEDIA_TYPES });
    };
    const targetRef = targetReference(req.target, req.source.digest) as string;
    const [src, dst] = await Promise.all([sided('source', headSource), sided('target', () => target.headManifest(targetRef))]);
    if (src?.digest && dst?.digest === src.digest) {
      return { ...result, digest: src.digest, mediaType: dst.mediaType ?? src.mediaType ?? '', noop: true };
    }
    // Is the root in the target under another name (then only the tag is written)? Asked while the
    // source is read, not after planning. A schema-1 root is converted: its digest changes.
    // (A target addressed by that very digest has answered already.)
    if (src?.digest && !(src.mediaType && isSchema1MediaType(src.mediaType))) rootProbe = probeRoot(target, src.digest, targetRef === src.digest ? { head: dst } : undefined);
  }

  const graph = await sided('source', () => resolveSource(source, sourceReference(req.source), { mode: req.mode, platforms: req.platforms, ...(options.signal ? { signal: options.signal } : {}) }));
  const plan = planCopy(graph, planOptionsFor(req, request.includeForeignLayers ?? false));
  result.digest = plan.root.digest;
  result.mediaType = plan.root.mediaType;
  result.notes.push(...plan.notes);
  for (const note of plan.notes) options.onEvent?.({ type: 'note', message: note });

  await executePlan(plan, { source, target, options, result, ...(rootProbe ? { rootProbe } : {}) });

  if (request.referrers) {
    // Notes of the referrers step (rewritten manifests, skipped layers of referrers) belong to the result too.
    const onEvent = (event: CopyEvent): void => {
      if (event.type === 'note') result.notes.push(event.message);
      options.onEvent?.(event);
    };
    result.referrers = await copyReferrers(plan, { source, target, options: { ...options, onEvent } });
  }
  return result;
}

