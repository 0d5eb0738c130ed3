/**
 * Reading the source: the root manifest (asked for as the copy mode says), every child manifest
 * of an index, and the few config blobs whose platform the plan needs. This is the I/O half of
 * planning; `plan.ts` is the pure half and works only on what is gathered here.
 *
 * Children are fetched by digest and checked against their index entry (media type and size; the
 * client verifies the digest), and a manifest that refers back to itself or an ancestor is refused.
 */
import pLimit from 'p-limit';
import { ManifestError, RegistryError, type ErrorContext } from '../errors.js';
import { MediaTypes, MANIFEST_MEDIA_TYPES, isIndexMediaType } from '../manifest/media-types.js';
import { parseManifest, platformFromConfig, type Descriptor, type Manifest, type Platform, type PlatformFilter } from '../manifest/model.js';
import { convertSchema1, parseSchema1, schema1Layers } from '../manifest/schema1.js';
import { diffIdOf } from '../manifest/diff-id.js';
import type { FetchedManifest, Repository } from '../oci/client.js';
import { readBytes } from '../oci/transport.js';
import { selectEntries } from './plan.js';
import { missingBlob } from './execute.js';

export type CopyMode = 'registry-defaults' | 'prefer-multiarch' | 'normalise-to-multiarch';

export const COPY_MODES: readonly CopyMode[] = ['registry-defaults', 'prefer-multiarch', 'normalise-to-multiarch'];

/**
 * What each mode asks the registry for. `registry-defaults` asks for single images only, so that a
 * registry holding a list answers with its default platform (distribution and Docker Hub pick
 * linux/amd64), and falls back to the full list where the registry cannot do that. The other two
 * ask for indexes first.
 */
export const ACCEPT_SINGLE_IMAGE: readonly string[] = [MediaTypes.ociManifest, MediaTypes.dockerManifest, MediaTypes.dockerSchema1Signed, MediaTypes.dockerSchema1];

export interface SourceNode {
  digest: string;
  mediaType: string;
  size: number;
  /** Exact bytes (for a converted schema-1 image: the new schema-2 bytes). */
  bytes: Buffer;
  manifest: Manifest;
}

export interface SourceGraph {
  /** The manifest the source reference resolved to. */
  root: SourceNode;
  /** Every manifest reachable from the root that the plan may need, by digest. */
  nodes: Map<string, SourceNode>;
  /** Platforms read from config blobs, by image manifest digest (only where an entry had none, or for normalise). */
  configPlatforms: Map<string, Platform>;
  /** Blobs made here rather than copied (the config of a converted schema-1 image), by digest. */
  generatedBlobs: Map<string, Buffer>;
  /** Set when the root was schema 1 and was converted: the original digest. */
  convertedFrom?: { digest: string; mediaType: string };
}

export interface ResolveOptions {
  mode: CopyMode;
  platforms?: readonly PlatformFilter[];
  /** Manifests fetched at once. Default 8. */
  concurrency?: number;
  signal?: AbortSignal;
}

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const MAX_DEPTH = 4;

export async function resolveSource(repo: Repository, reference: string, options: ResolveOptions): Promise<SourceGraph> {
  const limit = pLimit(options.concurrency ?? 8);
  const graph: SourceGraph = { root: undefined as unknown as SourceNode, nodes: new Map(), configPlatforms: new Map(), generatedBlobs: new Map() };

  const fetched = await fetchRoot(repo, reference, options.mode);
  let root: SourceNode = toNode(fetched);
  if (root.manifest.kind === 'schema1') {
    graph.convertedFrom = { digest: root.digest, mediaType: root.mediaType };
    root = await convertFromSchema1(repo, root, graph, limit);
  }
  graph.root = root;
  graph.nodes.set(root.digest, root);

  if (root.manifest.kind === 'index') {
    await walkIndex(repo, root, graph, options, limit, [root.digest], 1);
  } else if (root.manifest.kind === 'image' && (options.mode === 'normalise-to-multiarch' || options.platforms?.length)) {
    // A single image's platform is in its config: normalise needs it for the index entry, and a
    // platform filter must be judged against it (a filter that matches nothing is an error).
    graph.configPlatforms.set(root.digest, await readConfigPlatform(repo, root.manifest.config, graph));
  }
  return graph;
}

async function fetchRoot(repo: Repository, reference: string, mode: CopyMode): Promise<FetchedManifest> {
  if (mode !== 'registry-defaults' || reference.includes(':')) return repo.getManifest(reference);
  try {
    const single = await repo.getManifest(reference, { accept: ACCEPT_SINGLE_IMAGE });
    return single;
  } catch (err) {
    // A registry that cannot hand out a single image for what it stores says "unknown" (404).
    if (err instanceof RegistryError && err.notFound) return repo.getManifest(reference, { accept: MANIFEST_MEDIA_TYPES });
    throw err;
  }
}

function toNode(fetched: { bytes: Buffer; mediaType: string; digest: string; size: number }, context: ErrorContext = { operation: 'parse manifest' }): SourceNode {
  return { digest: fetched.digest, mediaType: fetched.mediaType, size: fetched.size, bytes: fetched.bytes, manifest: parseManifest(fetched.bytes, fetched.mediaType, context) };
}

async function walkIndex(repo: Repository, node: SourceNode, graph: SourceGraph, options: ResolveOptions, limit: ReturnType<typeof pLimit>, ancestors: string[], depth: number): Promise<void> {
  if (node.manifest.kind !== 'index') return;
  if (depth > MAX_DEPTH) throw new ManifestError(`index ${node.digest} nests indexes more than ${MAX_DEPTH} deep`);
  const entries = node.manifest.manifests;
  for (const entry of entries) {
    if (ancestors.includes(entry.digest)) throw new ManifestError(`index ${node.digest} refers to itself (directly or through a child): ${entry.digest}`);
  }
  // Entries the filter rules out by their own platform are never fetched.
  const candidates = options.platforms?.length ? entries.filter((e) => !e.platform || selectEntries([e], options.platforms, graph.configPlatforms).length > 0 || attestationCandidate(e)) : entries;
  await Promise.all(
    candidates.map((entry) =>
      limit(async () => {
        if (graph.nodes.has(entry.digest)) return;
        const child = toNode(await repo.getManifest(entry.digest), { operation: `GET manifest ${entry.digest}` });
        checkAgainstEntry(entry, child);
        graph.nodes.set(child.digest, child);
        if (child.manifest.kind === 'image' && !entry.platform && options.platforms?.length) {
          graph.configPlatforms.set(child.digest, await readConfigPlatform(repo, child.manifest.config, graph));
        }
      }),
    ),
  );
  for (const entry of candidates) {
    const child = graph.nodes.get(entry.digest);
    if (child?.manifest.kind === 'index') await walkIndex(repo, child, graph, options, limit, [...ancestors, child.digest], depth + 1);
  }
}

function attestationCandidate(entry: Descriptor): boolean {
  return entry.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest';
}

/** A child must be what its index entry says (image-spec descriptor.md: mediaType and size MUST match). */
function checkAgainstEntry(entry: Descriptor, child: SourceNode): void {
  if (entry.size !== child.size) throw new ManifestError(`index entry ${entry.digest} says ${entry.size} bytes, the manifest is ${child.size}`);
  if (entry.mediaType !== child.mediaType) {
    throw new ManifestError(`index entry ${entry.digest} says mediaType ${entry.mediaType}, the manifest is ${child.mediaType}`);
  }
  if (isIndexMediaType(child.mediaType) && child.manifest.kind !== 'index') throw new ManifestError(`manifest ${entry.digest} is not an index`);
}

async function readConfigPlatform(repo: Repository, config: Descriptor, graph: SourceGraph): Promise<Platform> {
  const generated = graph.generatedBlobs.get(config.digest);
  const bytes = generated ?? (await readSmallBlob(repo, config, MAX_CONFIG_BYTES));
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ManifestError(`config blob ${config.digest} is not JSON, so its platform cannot be read`);
  }
  const platform = platformFromConfig(json);
  if (!platform) throw new ManifestError(`config blob ${config.digest} has no os/architecture`);
  return platform;
}

/** Reads a small blob whole (configs), verified; refuses blobs larger than `max`. */
export async function readSmallBlob(repo: Repository, descriptor: { digest: string; size: number; mediaType?: string }, max: number): Promise<Buffer> {
  if (descriptor.size > max) throw new ManifestError(`blob ${descriptor.digest} is ${descriptor.size} bytes, more than the ${max} read into memory`);
  const stream = await repo.fetchBlob(descriptor).catch((err: unknown) => Promise.reject(missingBlob(err, repo, descriptor)));
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Schema 1 (Docker image manifest v2 schema 1): every kept layer is streamed once through gunzip
 * to compute its diff_id (schema 1 has no config), then the schema-2 config and manifest are built.
 */
async function convertFromSchema1(repo: Repository, node: SourceNode, graph: SourceGraph, limit: ReturnType<typeof pLimit>): Promise<SourceNode> {
  const schema1 = parseSchema1(node.bytes);
  const layers = schema1Layers(schema1);
  const computed = await Promise.all(
    layers.map((layer) =>
      limit(async () => {
        const stream = await repo.fetchBlob({ digest: layer.blobSum });
        const { diffId, compressedSize } = await diffIdOf(stream);
        return { blobSum: layer.blobSum, size: compressedSize, diffId };
      }),
    ),
  );
  const converted = convertSchema1(schema1, computed);
  graph.generatedBlobs.set(converted.configDigest, converted.config);
  return toNode({ bytes: converted.manifest, mediaType: MediaTypes.dockerManifest, digest: converted.manifestDigest, size: converted.manifest.length });
}

export { readBytes };
