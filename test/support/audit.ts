// What a distribution registry really holds, read from its storage directory (the ground truth,
// whatever its API or a proxy says): repositories, tags, manifest revisions, linked layers and
// open upload sessions. `auditRegistry` checks invariant 1 over all of it: every tag names a
// manifest that is there, and every manifest's blobs and child manifests are there too.
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FaultRequest } from './faults.js';

export interface RepositoryContents {
  /** tag -> digest */
  tags: Record<string, string>;
  /** Manifest digests (revisions), sorted. */
  manifests: string[];
  /** Blob digests linked into the repository (what HEAD /blobs/ answers 200 for), sorted. */
  layers: string[];
  /**
   * Open upload session ids. A session the client cancelled (DELETE) loses its `data` and
   * `startedat` files; distribution 2.8 leaves its `hashstates` directory behind, which is not a
   * session any more (a GET of it answers 404), so it does not count.
   */
  uploads: string[];
}

export type RegistryContents = Record<string, RepositoryContents>;

const root = (dataDir: string): string => join(dataDir, 'docker', 'registry', 'v2');

async function entries(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

async function digestsUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const algorithm of await entries(dir)) for (const hex of await entries(join(dir, algorithm))) if (existsSync(join(dir, algorithm, hex, 'link'))) out.push(`${algorithm}:${hex}`);
  return out.sort();
}

async function openUploads(dir: string): Promise<string[]> {
  return (await entries(dir)).filter((id) => existsSync(join(dir, id, 'startedat')) || existsSync(join(dir, id, 'data')));
}

/** Every repository of a registry (`dataDir` of a RunningRegistry) and what it holds. */
export async function registryContents(dataDir: string): Promise<RegistryContents> {
  const out: RegistryContents = {};
  const walk = async (dir: string, name: string): Promise<void> => {
    const names = await entries(dir);
    if (names.some((n) => n === '_manifests' || n === '_layers' || n === '_uploads')) {
      const tags: Record<string, string> = {};
      for (const tag of await entries(join(dir, '_manifests', 'tags'))) {
        const link = join(dir, '_manifests', 'tags', tag, 'current', 'link');
        if (existsSync(link)) tags[tag] = (await readFile(link, 'utf8')).trim();
      }
      out[name] = { tags, manifests: await digestsUnder(join(dir, '_manifests', 'revisions')), layers: await digestsUnder(join(dir, '_layers')), uploads: await openUploads(join(dir, '_uploads')) };
    }
    for (const n of names) if (!n.startsWith('_')) await walk(join(dir, n), name ? `${name}/${n}` : n);
  };
  await walk(join(root(dataDir), 'repositories'), '');
  return out;
}

/** The bytes of a blob (manifests are blobs too) in the registry's storage, or undefined. */
export async function storedBlob(dataDir: string, digest: string): Promise<Buffer | undefined> {
  const [algorithm, hex] = digest.split(':') as [string, string];
  try {
    return await readFile(join(root(dataDir), 'blobs', algorithm, hex.slice(0, 2), hex, 'data'));
  } catch {
    return undefined;
  }
}

/** What a manifest references: children (index) or config + layers (image). */
export function manifestReferences(bytes: Buffer): { children: string[]; blobs: string[] } {
  const json = JSON.parse(bytes.toString('utf8')) as { manifests?: Array<{ digest: string }>; config?: { digest: string }; layers?: Array<{ digest: string; urls?: string[] }>; fsLayers?: Array<{ blobSum: string }> };
  if (Array.isArray(json.manifests)) return { children: json.manifests.map((m) => m.digest), blobs: [] };
  const layers = (json.layers ?? []).filter((l) => !l.urls?.length).map((l) => l.digest);
  const schema1 = (json.fsLayers ?? []).map((l) => l.blobSum);
  return { children: [], blobs: [...(json.config ? [json.config.digest] : []), ...layers, ...schema1] };
}

/**
 * Invariant 1 over a whole registry: the problems found (empty when none). Every tag must name a
 * manifest revision of its repository, every revision's bytes must be stored, every child of an
 * index must be a revision, and every blob an image references must be linked and stored.
 */
export async function auditRegistry(dataDir: string, options: { repositories?: (name: string) => boolean } = {}): Promise<string[]> {
  const problems: string[] = [];
  const contents = await registryContents(dataDir);
  for (const [name, repo] of Object.entries(contents)) {
    if (options.repositories && !options.repositories(name)) continue;
    const manifests = new Set(repo.manifests);
    const layers = new Set(repo.layers);
    for (const [tag, digest] of Object.entries(repo.tags)) if (!manifests.has(digest)) problems.push(`${name}:${tag} names ${digest}, which is not a manifest of ${name}`);
    for (const digest of repo.manifests) {
      const bytes = await storedBlob(dataDir, digest);
      if (!bytes) {
        problems.push(`${name}@${digest}: manifest bytes missing from storage`);
        continue;
      }
      let refs: ReturnType<typeof manifestReferences>;
      try {
        refs = manifestReferences(bytes);
      } catch {
        problems.push(`${name}@${digest}: stored manifest is not JSON`);
        continue;
      }
      for (const child of refs.children) if (!manifests.has(child)) problems.push(`${name}@${digest} references child manifest ${child}, which is missing`);
      for (const blob of refs.blobs) {
        if (!layers.has(blob)) problems.push(`${name}@${digest} references blob ${blob}, which is not linked in ${name}`);
        else if (!(await storedBlob(dataDir, blob))) problems.push(`${name}@${digest} references blob ${blob}, whose data is missing`);
      }
    }
  }
  return problems;
}

/**
 * Invariant 1 at the moment it matters: when a manifest PUT reaches the target registry (whose
 * storage is `dataDir`), every blob and child manifest it references must already be there.
 * Installed as the target fault proxy's `beforeForward`; violations are collected, not thrown (a
 * throw would answer 500 and hide them).
 */
export function commitOrderChecker(dataDir: string): { check: (req: FaultRequest, body: Buffer) => Promise<void>; violations: string[]; checked: number } {
  const state = { violations: [] as string[], checked: 0 };
  const check = async (req: FaultRequest, body: Buffer): Promise<void> => {
    const match = /^\/v2\/(.+)\/manifests\/([^?]+)/.exec(req.path);
    if (req.method !== 'PUT' || !match) return;
    state.checked++;
    const repository = match[1] as string;
    const repo = (await registryContents(dataDir))[repository];
    const refs = manifestReferences(body);
    for (const child of refs.children) if (!repo?.manifests.includes(child)) state.violations.push(`PUT ${repository}:${match[2]} before its child ${child}`);
    for (const blob of refs.blobs) if (!repo?.layers.includes(blob) || !(await storedBlob(dataDir, blob))) state.violations.push(`PUT ${repository}:${match[2]} before its blob ${blob}`);
  };
  return Object.assign(state, { check });
}
