/**
 * Archive layouts (pure): which members an export archive has, in which order, with which bytes.
 * Every member is a regular file (or a directory in `oci`) with mode 0644 (0755), uid/gid 0 and
 * mtime 0, so exporting the same image twice gives byte-identical archives.
 *
 * - `layers`: the reference replicator's format: one member per blob, named `<alg>:<hex>.tar`,
 *   holding the blob's raw bytes (compressed layers stay compressed); the config first unless
 *   left out, then the layers base-first; a blob used twice is stored once.
 * - `oci`: an OCI image layout (image-spec image-layout.md) as a tar: `oci-layout`, `index.json`
 *   (the root descriptor, named by `org.opencontainers.image.ref.name`), `blobs/<alg>/<hex>`.
 * - `docker`: a docker-archive as `docker save` writes it (moby image/tarexport): `manifest.json`
 *   ([{Config, RepoTags, Layers}]), the config as `<hex>.json`, each layer as `<hex>.tar`
 *   (kept compressed: `docker load` and containers/image detect the compression), and the
 *   legacy `repositories` file.
 */
import { MediaTypes } from '../manifest/media-types.js';
import type { Descriptor } from '../manifest/model.js';

export type ArchiveFormat = 'layers' | 'oci' | 'docker';
export const ARCHIVE_FORMATS: readonly ArchiveFormat[] = ['layers', 'oci', 'docker'];

export type EntryContent = { kind: 'bytes'; bytes: Buffer } | { kind: 'blob'; digest: string; size: number };

export interface ArchiveEntry {
  name: string;
  type: 'file' | 'directory';
  size: number;
  mode: number;
  content?: EntryContent;
}

const FILE_MODE = 0o644;
const DIR_MODE = 0o755;

function file(name: string, content: EntryContent): ArchiveEntry {
  const size = content.kind === 'bytes' ? content.bytes.length : content.size;
  return { name, type: 'file', size, mode: FILE_MODE, content };
}

function directory(name: string): ArchiveEntry {
  return { name: name.endsWith('/') ? name : `${name}/`, type: 'directory', size: 0, mode: DIR_MODE };
}

/** A blob's content: from memory when the export made it (a converted schema-1 config), else from the registry. */
export type BlobSource = (descriptor: { digest: string; size: number }) => EntryContent;

export function registryBlob(inline: ReadonlyMap<string, Buffer>): BlobSource {
  return (d) => {
    const bytes = inline.get(d.digest);
    return bytes ? { kind: 'bytes', bytes } : { kind: 'blob', digest: d.digest, size: d.size };
  };
}

export interface SingleImage {
  config: Descriptor;
  layers: Descriptor[];
}

export function layersEntries(image: SingleImage, options: { includeConfig: boolean; blob: BlobSource }): ArchiveEntry[] {
  const out: ArchiveEntry[] = [];
  const seen = new Set<string>();
  const add = (d: Descriptor): void => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    out.push(file(`${d.digest}.tar`, options.blob(d)));
  };
  if (options.includeConfig) add(image.config);
  for (const layer of image.layers) add(layer);
  return out;
}

export interface LayoutContent {
  /** The root manifest (index or image). */
  root: { digest: string; size: number; mediaType: string };
  /** Every manifest of the layout with its bytes (children and root). */
  manifests: Array<{ digest: string; bytes: Buffer }>;
  /** Every blob (configs, layers). */
  blobs: Array<{ digest: string; size: number }>;
  /** `org.opencontainers.image.ref.name` for the root (the tag), when there is one. */
  refName?: string;
}

export const OCI_LAYOUT_FILE = JSON.stringify({ imageLayoutVersion: '1.0.0' });

export function ociEntries(content: LayoutContent, blob: BlobSource): ArchiveEntry[] {
  const root: Record<string, unknown> = { mediaType: content.root.mediaType, digest: content.root.digest, size: content.root.size };
  if (content.refName) root.annotations = { 'org.opencontainers.image.ref.name': content.refName };
  const index = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [root] };
  const out: ArchiveEntry[] = [file('oci-layout', { kind: 'bytes', bytes: Buffer.from(OCI_LAYOUT_FILE) }), file('index.json', { kind: 'bytes', bytes: Buffer.from(JSON.stringify(index)) }), directory('blobs')];
  const algorithms = new Set<string>();
  const members: ArchiveEntry[] = [];
  const seen = new Set<string>();
  const add = (digest: string, content: EntryContent): void => {
    if (seen.has(digest)) return;
    seen.add(digest);
    const [algorithm, encoded] = digest.split(':') as [string, string];
    algorithms.add(algorithm);
    members.push(file(`blobs/${algorithm}/${encoded}`, content));
  };
  for (const b of content.blobs) add(b.digest, blob(b));
  for (const m of content.manifests) add(m.digest, { kind: 'bytes', bytes: m.bytes });
  for (const algorithm of [...algorithms].sort()) out.push(directory(`blobs/${algorithm}`));
  return [...out, ...members];
}

export function dockerEntries(image: SingleImage, options: { repoTag?: string; blob: BlobSource }): ArchiveEntry[] {
  const hex = (d: Descriptor): string => d.digest.slice(d.digest.indexOf(':') + 1);
  const configName = `${hex(image.config)}.json`;
  const layerNames = image.layers.map((l) => `${hex(l)}.tar`);
  const manifest = [{ Config: configName, RepoTags: options.repoTag ? [options.repoTag] : [], Layers: layerNames }];
  const out: ArchiveEntry[] = [file('manifest.json', { kind: 'bytes', bytes: Buffer.from(JSON.stringify(manifest)) }), file(configName, options.blob(image.config))];
  const seen = new Set<string>();
  image.layers.forEach((layer, i) => {
    const name = layerNames[i] as string;
    if (seen.has(name)) return;
    seen.add(name);
    out.push(file(name, options.blob(layer)));
  });
  if (options.repoTag) {
    const colon = options.repoTag.lastIndexOf(':');
    const repositories = { [options.repoTag.slice(0, colon)]: { [options.repoTag.slice(colon + 1)]: hex(image.config) } };
    out.push(file('repositories', { kind: 'bytes', bytes: Buffer.from(JSON.stringify(repositories)) }));
  }
  return out;
}

/**
 * The archive's size: 512 per header (plus a pax header for names ustar cannot hold), data padded
 * to 512, and the two zero blocks that end the archive. Exact for ustar-encodable names.
 */
export function archiveSize(entries: readonly ArchiveEntry[]): number {
  let total = 1024;
  for (const entry of entries) {
    total += 512 + Math.ceil(entry.size / 512) * 512;
    if (!ustarEncodable(entry.name)) total += 512 + Math.ceil(paxRecordLength(entry.name) / 512) * 512;
  }
  return total;
}

/** ustar holds a name of up to 100 bytes, or a prefix of up to 155 and a name of up to 100 split at a '/'. */
export function ustarEncodable(name: string): boolean {
  if (Buffer.byteLength(name) !== name.length) return false;
  if (name.length <= 100) return true;
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    if (i <= 155 && name.length - i - 1 <= 100) return true;
  }
  return false;
}

function paxRecordLength(name: string): number {
  const body = ` path=${name}\n`;
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return length;
}
