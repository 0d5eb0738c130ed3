/**
 * `--referrers`: after an image is copied, everything that refers to its manifests is copied too,
 * recursively: OCI 1.1 referrers (the referrers API, else the `<alg>-<hex>` tag schema) and
 * cosign-style tags (`sha256-<hex>.sig`, `.att`, `.sbom`).
 *
 * Only manifests copied verbatim have their referrers copied: a rewritten manifest has a new
 * digest, which the source's signatures and attestations do not name.
 */
import { RegistryError } from '../errors.js';
import type { Repository } from '../oci/client.js';
import { executePlan, type CopyOptions } from './run.js';
import { referrersTag, sided } from './execute.js';
import { resolveSource } from './graph.js';
import { planCopy, type Plan } from './plan.js';

/** Tag suffixes cosign (sigstore/cosign, pkg/oci/remote) uses for signatures, attestations and SBOMs. */
export const COSIGN_SUFFIXES = ['sig', 'att', 'sbom'] as const;

/** A referrer found by the walk, with the plan that copies it. */
export interface FoundReferrer {
  /** How the source names it: a digest (referrers API / tag schema) or a cosign-style tag. */
  reference: string;
  /** The tag it keeps at the target (cosign-style tags), else it goes by digest. */
  tag?: string;
  /** The manifest whose referrer it is. */
  subject: string;
  plan: Plan;
}

/**
 * Walks the referrers of every verbatim manifest of `plan`, recursively (the referrers of a
 * referrer too), planning each one and handing it to `visit` in discovery order. Each subject is
 * looked up once and each referrer visited once. Returns how many were visited.
 */
export async function walkReferrers(plan: Plan, source: Repository, visit: (found: FoundReferrer) => Promise<void>, onNote?: (message: string) => void): Promise<number> {
  const queue = plan.manifests.filter((m) => m.verbatim).map((m) => m.digest);
  for (const m of plan.manifests) {
    if (!m.verbatim) onNote?.(`referrers of ${m.digest} not copied: the manifest was rewritten, so its source referrers do not name it`);
  }
  // Two sets: the manifests whose referrers are looked up (each once), and the referrers visited
  // (by tag or digest). One set for both would take a referrer copied by digest for a subject
  // already looked up, and never look up its own referrers.
  const queued = new Set<string>(queue);
  const visited = new Set<string>();
  while (queue.length) {
    const subject = queue.shift() as string;
    const found: Array<{ reference: string; tag?: string }> = [];
    const { descriptors } = await sided('source', () => source.referrers(subject));
    for (const d of descriptors) found.push({ reference: d.digest });
    const base = referrersTag(subject);
    const cosign = await Promise.all(
      COSIGN_SUFFIXES.map(async (suffix) => {
        const tag = `${base}.${suffix}`;
        try {
          const head = await sided('source', () => source.headManifest(tag));
          return head ? { reference: tag, tag } : undefined;
        } catch (err) {
          if (err instanceof RegistryError && err.notFound) return undefined;
          throw err;
        }
      }),
    );
    for (const c of cosign) if (c) found.push(c);
    for (const item of found) {
      const key = item.tag ?? item.reference;
      // A referrer by digest that is already among the planned manifests is there already.
      if (visited.has(key) || (!item.tag && queued.has(key))) continue;
      visited.add(key);
      const graph = await sided('source', () => resolveSource(source, item.reference, { mode: 'prefer-multiarch' }));
      const sub = planCopy(graph, { mode: 'prefer-multiarch', target: item.tag ? { tag: item.tag } : { digest: graph.root.digest } });
      for (const note of sub.notes) onNote?.(note);
      await visit({ ...item, subject, plan: sub });
      for (const m of sub.manifests) {
        if (!queued.has(m.digest)) {
          queued.add(m.digest);
          queue.push(m.digest);
        }
      }
    }
  }
  return visited.size;
}

/** Copies every referrer `walkReferrers` finds; returns how many were copied. */
export async function copyReferrers(plan: Plan, args: { source: Repository; target: Repository; options: CopyOptions }): Promise<number> {
  const { source, target, options } = args;
  const note = (message: string): void => options.onEvent?.({ type: 'note', message });
  return walkReferrers(
    plan,
    source,
    async ({ plan: sub }) => {
      const result = { source: '', target: '', digest: '', mediaType: '', noop: false, blobs: { copied: 0, skipped: 0, mounted: 0, bytes: 0 }, manifests: 0, referrers: 0, notes: [] };
      await executePlan(sub, { source, target, options, result });
    },
    note,
  );
}
