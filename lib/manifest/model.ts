/**
 * The manifest model (pure): parsing and validating image manifests and indexes (OCI image spec
 * manifest.md, image-index.md, descriptor.md; Docker image manifest v2 schema 2 and manifest
 * list), and the rewrites ocirelay performs on them.
 *
 * Manifests are kept as their exact bytes plus the parsed JSON. A rewrite changes the JSON
 * object in place of the fields it touches only, so every other field (urls, data,
 * artifactType, subject, os.version, os.features, and fields this code does not know) survives,
 * keys keep their order, and the original indentation is reused. No rewrite, no new bytes.
 */
import { digestOf, parseDigest } from '../digest.js';
import { ErrorCodes, ManifestError, OciRelayError, type ErrorContext } from '../errors.js';
import { isImageManifestMediaType, isIndexMediaType, isSchema1MediaType } from './media-types.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  [key: string]: unknown;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  data?: string;
  [key: string]: unknown;
}

interface ManifestBase {
  mediaType: string;
  /** The parsed JSON, field order as in the bytes. Never mutated: rewrites copy. */
  json: Record<string, unknown>;
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface IndexManifest extends ManifestBase {
  kind: 'index';
  manifests: Descriptor[];
}

export interface ImageManifest extends ManifestBase {
  kind: 'image';
  config: Descriptor;
  layers: Descriptor[];
  artifactType?: string;
}

export interface Schema1Manifest extends ManifestBase {
  kind: 'schema1';
}

export type Manifest = IndexManifest | ImageManifest | Schema1Manifest;

/** Parses manifest bytes of a known media type, validating every descriptor it holds. */
export function parseManifest(bytes: Uint8Array, mediaType: string, context: ErrorContext = {}): Manifest {
  const prefix = context.operation ? `${context.operation}: ` : '';
  const text = Buffer.from(bytes).toString('utf8');
  // JSON.parse copes with any depth, but JSON.stringify (every rewrite) overflows the stack on it.
  if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) throw new ManifestError(`${prefix}manifest JSON is nested more than ${MAX_JSON_DEPTH} levels deep`, context);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ManifestError(`${prefix}manifest is not valid JSON`, context);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ManifestError(`${prefix}manifest is not a JSON object`, context);
  const body = json as Record<string, unknown>;
  if (typeof body.mediaType === 'string' && body.mediaType !== mediaType) {
    throw new ManifestError(`${prefix}manifest says mediaType ${JSON.stringify(body.mediaType)} but was served as ${JSON.stringify(mediaType)}`, context);
  }
  if (isSchema1MediaType(mediaType)) {
    if (body.schemaVersion !== 1) throw new ManifestError(`${prefix}schema 1 manifest without schemaVersion 1`, context);
    return { kind: 'schema1', mediaType, json: body };
  }
  if (body.schemaVersion !== 2) throw new ManifestError(`${prefix}schemaVersion must be 2, got ${JSON.stringify(body.schemaVersion)}`, context);
  const common = {
    mediaType,
    json: body,
    ...(body.subject !== undefined ? { subject: descriptorAt(body.subject, 'subject', prefix, context) } : {}),
    ...(body.annotations !== undefined ? { annotations: annotationsAt(body.annotations, 'annotations', prefix, context) } : {}),
  };
  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(body.manifests)) throw new ManifestError(`${prefix}index has no "manifests" list`, context);
    const manifests = body.manifests.map((d, i) => descriptorAt(d, `manifests[${i}]`, prefix, context));
    return { kind: 'index', ...common, manifests };
  }
  if (isImageManifestMediaType(mediaType) || (body.config !== undefined && Array.isArray(body.layers))) {
    if (body.config === undefined) throw new ManifestError(`${prefix}image manifest has no "config"`, context);
    if (!Array.isArray(body.layers)) throw new ManifestError(`${prefix}image manifest has no "layers" list`, context);
    const config = descriptorAt(body.config, 'config', prefix, context);
    const layers = body.layers.map((d, i) => descriptorAt(d, `layers[${i}]`, prefix, context));
    return {
      kind: 'image',
      ...common,
      config,
      layers,
      ...(typeof body.artifactType === 'string' ? { artifactType: body.artifactType } : {}),
    };
  }
  throw new ManifestError(`${prefix}unsupported manifest media type ${JSON.stringify(mediaType)}`, context);
}

/** Deeper than any manifest needs (real ones nest 4 or 5 levels); the limit keeps rewrites off the stack's edge. */
export const MAX_JSON_DEPTH = 100;

/** True when JSON text opens more than `max` arrays/objects at once (strings skipped); linear, no parse. */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

function descriptorAt(value: unknown, where: string, prefix: string, context: ErrorContext): Descriptor {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ManifestError(`${prefix}${where} is not a descriptor object`, context);
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== 'string' || !d.mediaType) throw new ManifestError(`${prefix}${where}.mediaType is missing`, context);
  if (typeof d.digest !== 'string') throw new ManifestError(`${prefix}${where}.digest is missing`, context);
  try {
    parseDigest(d.digest);
  } catch (err) {
    throw new ManifestError(`${prefix}${where}.digest: ${(err as Error).message}`, { ...context, cause: err });
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw new ManifestError(`${prefix}${where}.size must be a non-negative integer`, context);
  if (d.urls !== undefined && (!Array.isArray(d.urls) || d.urls.some((u) => typeof u !== 'string'))) throw new ManifestError(`${prefix}${where}.urls must be a list of strings`, context);
  if (d.annotations !== undefined) annotationsAt(d.annotations, `${where}.annotations`, prefix, context);
  if (d.platform !== undefined) {
    const p = d.platform as Record<string, unknown>;
    if (typeof p !== 'object' || p === null || typeof p.os !== 'string' || typeof p.architecture !== 'string') {
      throw new ManifestError(`${prefix}${where}.platform needs string "os" and "architecture"`, context);
    }
  }
  if (d.data !== undefined) {
    if (typeof d.data !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(d.data)) throw new ManifestError(`${prefix}${where}.data is not base64`, context);
    const embedded = Buffer.from(d.data, 'base64');
    if (embedded.length !== d.size || digestOf(embedded, parseDigest(d.digest).algorithm) !== d.digest) {
      throw new ManifestError(`${prefix}${where}.data does not match the descriptor's digest and size`, context);
    }
  }
  return d as Descriptor;
}

function annotationsAt(value: unknown, where: string, prefix: string, context: ErrorContext): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.values(value).some((v) => typeof v !== 'string')) {
    throw new ManifestError(`${prefix}${where} must map strings to strings`, context);
  }
  return value as Record<string, string>;
}

/** Every descriptor the manifest needs present before it may be pushed (invariant 1). */
export function references(manifest: Manifest): Descriptor[] {
  switch (manifest.kind) {
    case 'index':
      return manifest.manifests;
    case 'image':
      return [manifest.config, ...manifest.layers];
    case 'schema1':
      return [];
  }
}

// --- serialisation ---------------------------------------------------------------------------

/** The indentation the bytes were written with, so a rewrite looks like its source. */
export function detectIndent(bytes: Uint8Array): string | number {
  const text = Buffer.from(bytes.subarray(0, 256)).toString('utf8');
  const match = /^\{\r?\n([ \t]+)"/.exec(text);
  return match ? (match[1] as string) : 0;
}

export function serialise(json: Record<string, unknown>, indent: string | number): Buffer {
  return Buffer.from(JSON.stringify(json, null, indent), 'utf8');
}

/** The bytes, digest and size of a rewritten manifest. */
export interface Rewritten {
  bytes: Buffer;
  digest: string;
  size: number;
  json: Record<string, unknown>;
}

export function finish(json: Record<string, unknown>, indent: string | number): Rewritten {
  const bytes = serialise(json, indent);
  return { bytes, digest: digestOf(bytes), size: bytes.length, json };
}

// --- annotations -----------------------------------------------------------------------------

/** True when every wanted annotation is already there with the same value. */
export function hasAnnotations(existing: Record<string, string> | undefined, wanted: Record<string, string>): boolean {
  return Object.entries(wanted).every(([k, v]) => existing?.[k] === v);
}

/**
 * Merges annotations into a manifest's JSON: existing keys keep their place (and their value
 * unless overridden), new keys go last. Returns undefined when nothing would change, so that
 * the manifest keeps its bytes and digest.
 */
export function mergeAnnotations(json: Record<string, unknown>, wanted: Record<string, string>): Record<string, unknown> | undefined {
  const existing = json.annotations as Record<string, string> | undefined;
  if (hasAnnotations(existing, wanted)) return undefined;
  return { ...json, annotations: { ...existing, ...wanted } };
}

// --- index rewrites --------------------------------------------------------------------------

/**
 * Replaces an index's entries: `entries` are the kept descriptors, in order, each possibly with
 * a new digest and size (a rewritten child). Every other field of each entry is kept.
 */
export function withEntries(json: Record<string, unknown>, entries: Descriptor[]): Record<string, unknown> {
  return { ...json, manifests: entries };
}

/** A descriptor pointing at rewritten content: same fields, new digest and size. */
export function retarget(descriptor: Descriptor, content: { digest: string; size: number }): Descriptor {
  if (descriptor.digest === content.digest && descriptor.size === content.size) return descriptor;
  const { data: _dropped, ...rest } = descriptor; // embedded data would no longer match
  return { ...rest, digest: content.digest, size: content.size };
}

// --- platforms -------------------------------------------------------------------------------

/** `os/arch[/variant]` as given on the command line (containerd's platform specifier, without os.version). */
export interface PlatformFilter {
  os: string;
  architecture: string;
  variant?: string;
}

export function parsePlatform(spec: string): PlatformFilter {
  const parts = spec.trim().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[A-Za-z0-9_.-]+$/.test(p))) {
    throw new OciRelayError(ErrorCodes.Usage, `platform ${JSON.stringify(spec)} must be os/architecture[/variant], e.g. linux/arm64 or linux/arm/v7`);
  }
  const [os, architecture, variant] = parts as [string, string, string?];
  return { os: os.toLowerCase(), architecture: architecture.toLowerCase(), ...(variant ? { variant: variant.toLowerCase() } : {}) };
}

export function formatPlatform(p: { os: string; architecture: string; variant?: string | undefined }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** The variant an architecture has when none is written (containerd's platforms.Normalize). */
const DEFAULT_VARIANT: Record<string, string> = { arm64: 'v8', arm: 'v7', amd64: 'v1' };

/** A filter without variant matches any variant; with one, the normalised variants must agree. */
export function platformMatches(platform: { os: string; architecture: string; variant?: string | undefined }, filter: PlatformFilter): boolean {
  if (platform.os.toLowerCase() !== filter.os || platform.architecture.toLowerCase() !== filter.architecture) return false;
  if (!filter.variant) return true;
  const variant = (platform.variant ?? DEFAULT_VARIANT[filter.architecture] ?? '').toLowerCase();
  return variant === filter.variant;
}

/** The platform of an image from its config blob (image-spec config.md: os, architecture, variant, os.version, os.features). */
export function platformFromConfig(config: unknown): Platform | undefined {
  if (typeof config !== 'object' || config === null) return undefined;
  const c = config as Record<string, unknown>;
  if (typeof c.os !== 'string' || typeof c.architecture !== 'string') return undefined;
  const platform: Platform = { architecture: c.architecture, os: c.os };
  if (typeof c['os.version'] === 'string') platform['os.version'] = c['os.version'];
  if (Array.isArray(c['os.features'])) platform['os.features'] = c['os.features'].filter((f): f is string => typeof f === 'string');
  if (typeof c.variant === 'string' && c.variant) platform.variant = c.variant;
  return platform;
}

/** Docker buildx stores attestations as index entries annotated with the manifest they describe. */
export const ATTESTATION_REFERENCE_TYPE = 'vnd.docker.reference.type';
export const ATTESTATION_REFERENCE_DIGEST = 'vnd.docker.reference.digest';

export function attestationTarget(descriptor: Descriptor): string | undefined {
  const a = descriptor.annotations;
  return a?.[ATTESTATION_REFERENCE_TYPE] === 'attestation-manifest' ? a[ATTESTATION_REFERENCE_DIGEST] : undefined;
}
