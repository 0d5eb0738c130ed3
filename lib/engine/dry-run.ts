/**
 * `planImage`: the dry run. It reads the source, plans, and asks the target (HEAD only) what it
 * already has, then says what a copy would copy, skip, mount and commit. It writes nothing.
 */
import { formatReference } from '../ref/index.js';
import { sided } from './execute.js';
import { resolveSource } from './graph.js';
import { planCopy, type Plan } from './plan.js';
import { walkReferrers } from './referrers.js';
import { normaliseRequest, planOptionsFor, type CopyRequest } from './copy.js';
import type { RegistryPool } from './registries.js';
import type { Repository } from '../oci/client.js';
import pLimit from 'p-limit';

export type BlobAction = 'copy' | 'skip' | 'mount';

export interface DryRun {
  source: string;
  target: string;
  digest: string;
  mediaType: string;
  /** The target already has the root under the tag: a copy would do nothing. */
  noop: boolean;
  blobs: Array<{ digest: string; size: number; mediaType: string; action: BlobAction }>;
  manifests: Array<{ digest: string; mediaType: string; size: number; reference: string; verbatim: boolean; platform?: string; present: boolean }>;
  skipped: Plan['skipped'];
  /** With `referrers`: every referrer a copy would bring along (recursively), and whether the target has it. */
  referrers: Array<{ subject: string; reference: string; tag?: string; digest: string; mediaType: string; present: boolean }>;
  notes: string[];
  /** Bytes a copy would send. */
  bytesToCopy: number;
}

/** The source read and the copy planned; nothing is asked of the target. */
async function planFromSource(request: CopyRequest, registries: RegistryPool): Promise<{ req: ReturnType<typeof normaliseRequest>; source: Repository; plan: Plan }> {
  const req = normaliseRequest(request);
  const source = registries.get(req.source.registry).repository(req.source.repository, 'pull');
  const graph = await sided('source', () => resolveSource(source, req.source.digest ?? req.source.tag ?? 'latest', { mode: req.mode, platforms: req.platforms }));
  return { req, source, plan: planCopy(graph, planOptionsFor(req, request.includeForeignLayers ?? false)) };
}

/**
 * The root a copy would give the target (digest and media type): the source read and planned,
 * nothing written and nothing asked of the target. What `sync` compares a target tag with when
 * its rule rewrites manifests (platforms, annotations, normalise-to-multiarch).
 */
export async function plannedRoot(request: CopyRequest, options: { registries: RegistryPool }): Promise<{ digest: string; mediaType: string }> {
  const { plan } = await planFromSource(request, options.registries);
  return { digest: plan.root.digest, mediaType: plan.root.mediaType };
}

export async function planImage(request: CopyRequest, options: { registries: RegistryPool; concurrency?: number }): Promise<DryRun> {
  const { req, source, plan } = await planFromSource(request, options.registries);
  // Pull access is all a dry run needs on the target; it never writes.
  const target = options.registries.get(req.target.registry).repository(req.target.repository, 'pull');
  const limit = pLimit(options.concurrency ?? 8);
  const same = req.source.registry === req.target.registry;
  const rootPresent = !!(await sided('target', () => target.headManifest(plan.root.digest)));
  const tagged = rootPresent && req.target.tag ? (await sided('target', () => target.headManifest(req.target.tag as string)))?.digest === plan.root.digest : rootPresent;
  const blobs = await Promise.all(
    plan.blobs.map((b) =>
      limit(async () => {
        const present = rootPresent || !!(await sided('target', () => target.headBlob(b.digest)));
        const action: BlobAction = present ? 'skip' : same && !b.inline ? 'mount' : 'copy';
        return { digest: b.digest, size: b.size, mediaType: b.mediaType, action };
      }),
    ),
  );
  const manifests = await Promise.all(
    plan.manifests.map((m) =>
      limit(async () => ({
        digest: m.digest,
        mediaType: m.mediaType,
        size: m.size,
        reference: m.root && req.target.tag ? req.target.tag : m.digest,
        verbatim: m.verbatim,
        ...(m.platform ? { platform: m.platform } : {}),
        present: rootPresent || !!(await sided('target', () => target.headManifest(m.digest))),
      })),
    ),
  );
  const notes = [...plan.notes];
  const referrers: DryRun['referrers'] = [];
  if (request.referrers) {
    await walkReferrers(
      plan,
      source,
      async ({ reference, tag, subject, plan: sub }) => {
        const at = await sided('target', () => target.headManifest(tag ?? sub.root.digest));
        referrers.push({ subject, reference, ...(tag ? { tag } : {}), digest: sub.root.digest, mediaType: sub.root.mediaType, present: at?.digest === sub.root.digest });
      },
      (note) => notes.push(note),
    );
  }
  return {
    source: formatReference(req.source),
    target: formatReference(req.target),
    digest: plan.root.digest,
    mediaType: plan.root.mediaType,
    noop: tagged,
    blobs,
    manifests,
    skipped: plan.skipped,
    referrers,
    notes,
    bytesToCopy: blobs.filter((b) => b.action === 'copy').reduce((n, b) => n + b.size, 0),
  };
}
