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

export async function copyReferrers(plan: Plan, args: { source: Repository; target: Repository; options: CopyOptions }): Promise<number> {
  const { source, target, options } = args;
  const queue = plan.manifests.filter((m) => m.verbatim).map((m) => m.digest);
  for (const m of plan.manifests) {
    if (!m.verbatim) options.onEvent?.({ type: 'note', message: `referrers of ${m.digest} not copied: the manifest was rewritten, so its source referrers do not name it` });
  }
  // Two sets: the manifests whose referrers are looked up (each once), and the referrers copied
  // (by tag or digest). One set for both would take a referrer copied by digest for a subject
  // already looked up, and never look up its own referrers.
  const queued = new Set<string>(queue);
  const copiedItems = new Set<string>();
  let copied = 0;
  const copy = async (reference: string, targetTag?: string): Promise<Plan> => {
    const graph = await sided('source', () => resolveSource(source, reference, { mode: 'prefer-multiarch' }));
    const sub = planCopy(graph, { mode: 'prefer-multiarch', target: targetTag ? { tag: targetTag } : { digest: graph.root.digest } });
    const result = { source: '', target: '', digest: '', mediaType: '', noop: false, blobs: { copied: 0, skipped: 0, mounted: 0, bytes: 0 }, manifests: 0, referrers: 0, notes: [] };
    for (const note of sub.notes) options.onEvent?.({ type: 'note', message: note });
    await executePlan(sub, { source, target, options, result });
    return sub;
  };
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
      // A referrer by digest that is already among the copied manifests is there already.
      if (copiedItems.has(key) || (!item.tag && queued.has(key))) continue;
      copiedItems.add(key);
      const sub = await copy(item.reference, item.tag);
      copied++;
      for (const m of sub.manifests) {
        if (!queued.has(m.digest)) {
          queued.add(m.digest);
          queue.push(m.digest);
        }
      }
    }
  }
  return copied;
}
