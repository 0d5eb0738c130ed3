/**
 * The planner: a pure function from the source graph and the copy options to the tasks of a copy.
 * No I/O. The plan lists every blob to copy (each once, however many platforms share it), every
 * manifest to commit with the digests it depends on (children before their index, the root last),
 * and the tags to move once the root is in place.
 *
 * Verbatim unless asked otherwise: a manifest is re-serialised only when an option changes it
 * (a platform filter drops entries, an annotation is new or different, a child changed digest).
 */
import { ErrorCodes, OciRelayError } from '../errors.js';
import { isDockerMediaType, isNonDistributableMediaType, MediaTypes } from '../manifest/media-types.js';
import {
  attestationTarget,
  ATTESTATION_REFERENCE_DIGEST,
  detectIndent,
  finish,
  formatPlatform,
  mergeAnnotations,
  platformMatches,
  retarget,
  withEntries,
  type Descriptor,
  type Platform,
  type PlatformFilter,
} from '../manifest/model.js';
import type { CopyMode, SourceGraph, SourceNode } from './graph.js';

export interface PlanOptions {
  mode: CopyMode;
  platforms?: readonly PlatformFilter[];
  annotations?: Readonly<Record<string, string>>;
  /** Copy foreign / non-distributable layers too (default: skip them, with a note). */
  includeForeignLayers?: boolean;
  /** The target reference's tag and digest. */
  target: { tag?: string; digest?: string };
}

export interface PlannedBlob {
  digest: string;
  size: number;
  mediaType: string;
  /** Content made by the planner's inputs (a converted schema-1 config), pushed from memory. */
  inline?: Buffer;
}

export interface PlannedManifest {
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
  /** True when the bytes are the source's own. */
  verbatim: boolean;
  /** The source manifest this one was made from (its own digest when verbatim; absent for a made-up wrapper index). */
  sourceDigest?: string;
  /** Digests (blobs and child manifests) that must be in the target before this is pushed. */
  dependsOn: string[];
  /** The platform, for children of an index. */
  platform?: string;
  /** Set on the root. */
  root?: boolean;
}

export interface SkippedBlob {
  digest: string;
  size: number;
  mediaType: string;
  reason: string;
}

export interface Plan {
  root: PlannedManifest;
  /** Children first, root last. */
  manifests: PlannedManifest[];
  blobs: PlannedBlob[];
  /** Moved to the root once it is committed. */
  tags: string[];
  skipped: SkippedBlob[];
  notes: string[];
  /** The source manifest the plan was made from (for a converted schema-1 image, its original digest). */
  sourceDigest: string;
}

export function planCopy(graph: SourceGraph, options: PlanOptions): Plan {
  const blobs = new Map<string, PlannedBlob>();
  const skipped = new Map<string, SkippedBlob>();
  const notes = new Set<string>();
  const manifests: PlannedManifest[] = [];
  const planned = new Map<string, PlannedManifest>();
  const annotations = options.annotations && Object.keys(options.annotations).length ? options.annotations : undefined;

  const annotate = (node: { mediaType: string; json: Record<string, unknown> }): Record<string, unknown> | undefined => {
    if (!annotations) return undefined;
    if (isDockerMediaType(node.mediaType)) {
      notes.add(`annotations not applied to ${node.mediaType} manifests: the Docker format has no annotations field (its bytes and digest are kept)`);
      return undefined;
    }
    return mergeAnnotations(node.json, annotations);
  };

  const visit = (node: SourceNode, platform: string | undefined, isRoot: boolean): PlannedManifest => {
    const done = planned.get(node.digest);
    if (done) return done;
    const manifest = node.manifest;
    let json: Record<string, unknown> | undefined;
    const dependsOn: string[] = [];
    if (manifest.kind === 'image') {
      for (const descriptor of [manifest.config, ...manifest.layers]) {
        if (!options.includeForeignLayers && isForeign(descriptor)) {
          skipped.set(descriptor.digest, { digest: descriptor.digest, size: descriptor.size, mediaType: descriptor.mediaType, reason: descriptor.urls?.length ? 'foreign layer with urls' : 'non-distributable layer' });
          continue;
        }
        if (!blobs.has(descriptor.digest)) {
          const inline = graph.generatedBlobs.get(descriptor.digest);
          blobs.set(descriptor.digest, { digest: descriptor.digest, size: descriptor.size, mediaType: descriptor.mediaType, ...(inline ? { inline } : {}) });
        }
        if (!dependsOn.includes(descriptor.digest)) dependsOn.push(descriptor.digest);
      }
      json = annotate({ mediaType: node.mediaType, json: manifest.json });
    } else if (manifest.kind === 'index') {
      const kept = selectEntries(manifest.manifests, options.platforms, graph.configPlatforms);
      if (options.platforms?.length && kept.length === 0) {
        const available = manifest.manifests.map((e) => platformOf(e, graph.configPlatforms)).filter((p): p is Platform => !!p).map((p) => formatPlatform(p));
        throw new OciRelayError(
          ErrorCodes.PlatformNotFound,
          `no entry of ${node.digest} matches ${options.platforms.map(formatPlatform).join(', ')}; available: ${[...new Set(available)].join(', ') || 'none'}`,
          { side: 'source' },
        );
      }
      const renamed = new Map<string, string>();
      const results = kept.map((entry) => {
        const child = graph.nodes.get(entry.digest);
        if (!child) throw new OciRelayError(ErrorCodes.InvalidManifest, `index ${node.digest} entry ${entry.digest} was not fetched`);
        const p = platformOf(entry, graph.configPlatforms);
        const result = visit(child, p ? formatPlatform(p) : undefined, false);
        if (result.digest !== entry.digest) renamed.set(entry.digest, result.digest);
        return result;
      });
      const entries = kept.map((entry, i) => {
        let next = retarget(entry, results[i] as PlannedManifest);
        const target = attestationTarget(next);
        const moved = target ? renamed.get(target) : undefined;
        if (moved) next = { ...next, annotations: { ...next.annotations, [ATTESTATION_REFERENCE_DIGEST]: moved } };
        return next;
      });
      for (const r of results) dependsOn.push(r.digest);
      const changed = kept.length !== manifest.manifests.length || entries.some((e, i) => e !== manifest.manifests[i]);
      const base = changed ? withEntries(manifest.json, entries) : manifest.json;
      json = annotate({ mediaType: node.mediaType, json: base }) ?? (changed ? base : undefined);
    }
    const result: PlannedManifest = json
      ? { ...finish(json, detectIndent(node.bytes)), mediaType: node.mediaType, verbatim: false, sourceDigest: node.digest, dependsOn, ...(platform ? { platform } : {}) }
      : { digest: node.digest, size: node.size, bytes: node.bytes, mediaType: node.mediaType, verbatim: true, sourceDigest: node.digest, dependsOn, ...(platform ? { platform } : {}) };
    // A converted schema-1 image is never verbatim: its bytes were made here.
    if (isRoot && graph.convertedFrom) result.verbatim = false;
    planned.set(node.digest, result);
    manifests.push(result);
    return result;
  };

  let root = visit(graph.root, undefined, true);

  if (options.mode === 'normalise-to-multiarch' && graph.root.manifest.kind === 'image') {
    const platform = graph.configPlatforms.get(graph.root.digest);
    if (!platform) throw new OciRelayError(ErrorCodes.InvalidManifest, `the platform of ${graph.root.digest} is unknown, so it cannot be wrapped in an index`);
    if (options.platforms?.length && !options.platforms.some((f) => platformMatches(platform, f))) {
      throw new OciRelayError(ErrorCodes.PlatformNotFound, `the image is ${formatPlatform(platform)}, which does not match ${options.platforms.map(formatPlatform).join(', ')}`, { side: 'source' });
    }
    root.platform = formatPlatform(platform);
    const wrapper = wrapInIndex(root, platform);
    const annotated = annotate({ mediaType: wrapper.mediaType, json: wrapper.json }) ?? wrapper.json;
    const index: PlannedManifest = { ...finish(annotated, 3), mediaType: wrapper.mediaType, verbatim: false, dependsOn: [root.digest] };
    manifests.push(index);
    root = index;
  } else if (options.platforms?.length && graph.root.manifest.kind === 'image') {
    // A single image is copied only if it is of a wanted platform (when its platform is known).
    const platform = graph.configPlatforms.get(graph.root.digest);
    if (platform && !options.platforms.some((f) => platformMatches(platform, f))) {
      throw new OciRelayError(ErrorCodes.PlatformNotFound, `the image is ${formatPlatform(platform)}, which does not match ${options.platforms.map(formatPlatform).join(', ')}`, { side: 'source' });
    }
  }
  root.root = true;

  if (options.target.digest && options.target.digest !== root.digest) {
    throw new OciRelayError(
      ErrorCodes.Unsupported,
      `the target names digest ${options.target.digest}, but the copy produces ${root.digest}${root.verbatim ? '' : ' (the options change the manifest)'}`,
      { side: 'target' },
    );
  }

  return {
    root,
    manifests,
    blobs: [...blobs.values()],
    tags: options.target.tag ? [options.target.tag] : [],
    skipped: [...skipped.values()],
    notes: [...notes, ...[...skipped.values()].map((s) => `skipped ${s.reason} ${s.digest} (${s.mediaType}); use --include-foreign-layers to copy it`)],
    sourceDigest: graph.convertedFrom?.digest ?? graph.root.digest,
  };
}

function isForeign(descriptor: Descriptor): boolean {
  return isNonDistributableMediaType(descriptor.mediaType) || (Array.isArray(descriptor.urls) && descriptor.urls.length > 0 && descriptor.mediaType !== MediaTypes.ociManifest);
}

export function platformOf(entry: Descriptor, configPlatforms: ReadonlyMap<string, Platform>): Platform | undefined {
  return entry.platform ?? configPlatforms.get(entry.digest);
}

/**
 * The entries of an index a platform filter keeps, in their order: an entry matches when its
 * platform (from the entry, else from its config) matches any filter; a buildx attestation entry
 * is kept with the image it describes. No filter keeps everything.
 */
export function selectEntries(entries: readonly Descriptor[], filters: readonly PlatformFilter[] | undefined, configPlatforms: ReadonlyMap<string, Platform>): Descriptor[] {
  if (!filters?.length) return [...entries];
  const matched = new Set<string>();
  for (const entry of entries) {
    if (attestationTarget(entry)) continue;
    const platform = platformOf(entry, configPlatforms);
    if (platform && filters.some((f) => platformMatches(platform, f))) matched.add(entry.digest);
  }
  return entries.filter((entry) => {
    const target = attestationTarget(entry);
    return target ? matched.has(target) : matched.has(entry.digest);
  });
}

/** A one-entry index around a single image: OCI index for OCI images, Docker list for Docker ones. */
function wrapInIndex(image: PlannedManifest, platform: Platform): { mediaType: string; json: Record<string, unknown> } {
  const docker = image.mediaType === MediaTypes.dockerManifest;
  const mediaType = docker ? MediaTypes.dockerManifestList : MediaTypes.ociIndex;
  const entryPlatform: Record<string, unknown> = { architecture: platform.architecture, os: platform.os };
  if (platform['os.version']) entryPlatform['os.version'] = platform['os.version'];
  if (platform['os.features']?.length) entryPlatform['os.features'] = platform['os.features'];
  if (platform.variant) entryPlatform.variant = platform.variant;
  return {
    mediaType,
    json: { schemaVersion: 2, mediaType, manifests: [{ mediaType: image.mediaType, digest: image.digest, size: image.size, platform: entryPlatform }] },
  };
}
