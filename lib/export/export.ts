/**
 * `exportImage`: registry -> digest verification -> tar stream -> ArchiveStore, with no spooling.
 * The archive is committed (renamed into place, multipart upload completed) only after its last
 * byte was written and every blob verified; on any failure the store's `abort` removes what was
 * written, so nothing that looks complete is left behind.
 */
import { ErrorCodes, OciRelayError } from '../errors.js';
import { resolveSource, type SourceGraph } from '../engine/graph.js';
import { planCopy, platformOf, selectEntries } from '../engine/plan.js';
import { sided } from '../engine/execute.js';
import type { RegistryPool } from '../engine/registries.js';
import { attestationTarget, formatPlatform, parsePlatform, platformMatches, type Descriptor } from '../manifest/model.js';
import { familiarReference, formatReference, parseReference, type Reference } from '../ref/index.js';
import type { ArchiveStore } from '../ports/archive-store.js';
import { archiveSize, dockerEntries, layersEntries, ociEntries, registryBlob, type ArchiveEntry, type ArchiveFormat, type SingleImage } from './formats.js';
import { writeTar } from './tar.js';

export interface ExportRequest {
  source: string | Reference;
  /** A path, `-`, or `s3://bucket/key` — whatever the store understands. */
  destination: string;
  /** Default `layers`, the reference replicator's format. */
  format?: ArchiveFormat;
  /** `os/arch[/variant]`: which image of an index (`layers`, `docker`), or how to narrow it (`oci`). */
  platform?: string;
  /** Leave the config blob out of a `layers` archive. */
  noConfig?: boolean;
}

export type ExportEvent =
  | { type: 'export-start'; entries: number; size: number }
  | { type: 'export-progress'; bytes: number; size: number }
  | { type: 'export-entry'; name: string; size: number };

export interface ExportOptions {
  registries: RegistryPool;
  store: ArchiveStore;
  onEvent?: (event: ExportEvent) => void;
  signal?: AbortSignal;
}

export interface ExportResult {
  source: string;
  destination: string;
  format: ArchiveFormat;
  /** The digest of the manifest exported (the index for `oci` of an index, else the image). */
  digest: string;
  platform?: string;
  /** Archive size and sha256. */
  bytes: number;
  sha256: string;
  entries: number;
}

export async function exportImage(request: ExportRequest, options: ExportOptions): Promise<ExportResult> {
  const format = request.format ?? 'layers';
  const ref = typeof request.source === 'string' ? parseReference(request.source) : request.source;
  const filter = request.platform ? [parsePlatform(request.platform)] : [];
  const repo = options.registries.get(ref.registry).repository(ref.repository, 'pull');
  const graph = await sided('source', () => resolveSource(repo, ref.digest ?? ref.tag ?? 'latest', { mode: 'prefer-multiarch', platforms: filter, ...(options.signal ? { signal: options.signal } : {}) }));
  const blob = registryBlob(graph.generatedBlobs);

  let entries: ArchiveEntry[];
  let digest: string;
  let platform: string | undefined;
  if (format === 'oci') {
    const plan = planCopy(graph, { mode: 'prefer-multiarch', platforms: filter, target: {} });
    digest = plan.root.digest;
    entries = ociEntries(
      {
        root: { digest: plan.root.digest, size: plan.root.size, mediaType: plan.root.mediaType },
        manifests: plan.manifests.map((m) => ({ digest: m.digest, bytes: m.bytes })),
        blobs: plan.blobs,
        ...(ref.tag ? { refName: ref.tag } : {}),
      },
      blob,
    );
    if (request.platform) platform = request.platform;
  } else {
    const chosen = chooseImage(graph, request.platform);
    digest = chosen.digest;
    platform = chosen.platform;
    entries = format === 'layers' ? layersEntries(chosen.image, { includeConfig: !request.noConfig, blob }) : dockerEntries(chosen.image, { ...(ref.tag ? { repoTag: repoTag(ref) } : {}), blob });
  }

  const size = archiveSize(entries);
  const writer = await options.store.create(request.destination, {
    size,
    contentType: 'application/x-tar',
    metadata: {
      'source-reference': formatReference(ref),
      'source-digest': digest,
      format,
      ...(platform ? { platform } : {}),
    },
  });
  options.onEvent?.({ type: 'export-start', entries: entries.length, size });
  let written = 0;
  try {
    const result = await writeTar(entries, (d) => sided('source', () => repo.fetchBlob(d, options.signal ? { signal: options.signal } : {})), writer.stream, {
      ...(options.signal ? { signal: options.signal } : {}),
      onEntry: (e) => options.onEvent?.({ type: 'export-entry', name: e.name, size: e.size }),
      onBytes: (n) => {
        written += n;
        options.onEvent?.({ type: 'export-progress', bytes: written, size });
      },
    });
    const { location } = await writer.commit();
    return { source: formatReference(ref), destination: location, format, digest, ...(platform ? { platform } : {}), bytes: result.bytes, sha256: result.digest, entries: entries.length };
  } catch (err) {
    await writer.abort(err);
    if (err instanceof OciRelayError && !err.side && err.url) err.attachSide('source');
    throw err;
  }
}

/** `docker load` names the image by its familiar `repo:tag`. */
function repoTag(ref: Reference): string {
  return familiarReference({ registry: ref.registry, repository: ref.repository, ...(ref.tag ? { tag: ref.tag } : {}) });
}

/**
 * The one image a `layers` or `docker` archive holds: the image itself, or the entry of an index
 * that `platform` selects, or the index's only image. Anything else is an error that lists the
 * platforms there are (the reference replicator silently took the first entry).
 */
export function chooseImage(graph: SourceGraph, platform: string | undefined): { image: SingleImage; digest: string; platform?: string } {
  const root = graph.root;
  if (root.manifest.kind === 'image') {
    // A single image's platform is read from its config when a platform is asked for (resolveSource).
    const own = graph.configPlatforms.get(root.digest);
    if (platform && own && !platformMatches(own, parsePlatform(platform))) {
      throw new OciRelayError(ErrorCodes.PlatformNotFound, `the image ${root.digest} is ${formatPlatform(own)}, which does not match ${platform}`, { side: 'source' });
    }
    return { image: { config: root.manifest.config, layers: root.manifest.layers }, digest: root.digest, ...(own ? { platform: formatPlatform(own) } : {}) };
  }
  if (root.manifest.kind !== 'index') throw new OciRelayError(ErrorCodes.Unsupported, `cannot export a ${root.mediaType}`);
  const images = root.manifest.manifests.filter((e) => !attestationTarget(e) && !isUnknownPlatform(e));
  const describe = (e: Descriptor): string => {
    const p = platformOf(e, graph.configPlatforms);
    return p ? formatPlatform(p) : e.digest;
  };
  let candidates = images;
  if (platform) {
    candidates = selectEntries(images, [parsePlatform(platform)], graph.configPlatforms);
    if (candidates.length === 0) {
      throw new OciRelayError(ErrorCodes.PlatformNotFound, `no image in ${root.digest} matches ${platform}; available: ${images.map(describe).join(', ')}`, { side: 'source' });
    }
  }
  if (candidates.length !== 1) {
    throw new OciRelayError(
      ErrorCodes.PlatformNotFound,
      `${root.digest} is an index of ${candidates.length} images (${candidates.map(describe).join(', ')}): choose one with --platform`,
      { side: 'source' },
    );
  }
  const entry = candidates[0] as Descriptor;
  const child = graph.nodes.get(entry.digest);
  if (!child || child.manifest.kind !== 'image') throw new OciRelayError(ErrorCodes.Unsupported, `${entry.digest} is not an image manifest (nested indexes cannot be exported as ${platform ? 'one platform' : 'layers'})`);
  const p = platformOf(entry, graph.configPlatforms);
  return { image: { config: child.manifest.config, layers: child.manifest.layers }, digest: child.digest, ...(p ? { platform: formatPlatform(p) } : {}) };
}

function isUnknownPlatform(entry: Descriptor): boolean {
  return entry.platform?.os === 'unknown' && entry.platform.architecture === 'unknown';
}
