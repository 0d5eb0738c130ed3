/**
 * Docker Image Manifest V2, Schema 1 -> Schema 2 conversion, the pure part (no I/O).
 *
 * A schema-1 manifest has no config blob and no diff_ids: both are derived. The caller fetches the
 * layers `schema1Layers` names, computes each one's diff_id and compressed size (`diffIdOf` in
 * `./diff-id.ts`), and hands them to `convertSchema1`, which builds the config and the manifest.
 *
 * The rules follow what `docker pull` does (moby `distribution/pull_v2.go` `pullSchema1` and
 * `fixManifestLayers`, `image/v1/imagev1.go` `HistoryFromConfig` and `MakeConfigFromV1Config`),
 * which is also what skopeo does (containers/image `manifest/docker_schema1.go` `ToSchema2Config`,
 * `fixManifestLayers`), so that the config bytes, and with them the image ID, come out the same as
 * docker and skopeo compute for the same schema-1 image:
 *
 * - schema 1 lists `fsLayers` and `history` newest-first (index 0 is the top); schema 2 is
 *   base-first, so both are reversed.
 * - consecutive history entries with the same v1 `id` are one layer listed twice (an artefact of
 *   old registries): all but the oldest of such a run are dropped, from both lists, as docker and
 *   skopeo do. The same blobSum under different ids is a real repeated layer and is kept, in order.
 * - an entry whose v1Compatibility says `"throwaway": true` made no layer: its blob is not fetched
 *   nor listed, and its history entry gets `empty_layer: true`. Nothing else marks a layer empty:
 *   a layer that is the well-known empty gzipped tar (sha256:a3ed95ca…, 1024 zero bytes) without
 *   `throwaway` is kept, with its diff_id sha256:5f70bf18…, as docker and skopeo keep it
 *   (containerd `remotes/docker/schema1/converter.go` instead drops layers whose uncompressed bytes
 *   are all zero or whose v1 `Size` is 0; the latter also drops deletion-only layers, so it is not
 *   followed).
 * - the config is the newest v1Compatibility (index 0 after the step above) with `id`, `parent`,
 *   `Size`, `parent_id`, `layer_id` and `throwaway` removed, and `rootfs` and `history` added. Like
 *   Go's `json.Marshal` of `map[string]*json.RawMessage`, the result is compact, its top-level keys
 *   are sorted bytewise, and every other value is kept token for token (only whitespace removed and
 *   `<`, `>`, `&`, U+2028, U+2029 escaped inside strings), so no number or string is re-encoded.
 * - each history entry is `{created, author, created_by, comment, empty_layer}` in that order (the
 *   field order of docker's `image.History`), `created_by` being `container_config.Cmd` joined with
 *   single spaces; `created` is re-formatted as Go's `time.Time` marshals (RFC 3339, fraction
 *   without trailing zeros, `Z` for UTC) and is Go's zero time when the entry has none.
 *
 * Where ocirelay departs from docker (each only for input docker would not have produced):
 * - `os` is added as `linux` when the config has none (docker assumes linux for such images), and
 *   `architecture` is taken from the manifest's top-level field when the config has none;
 * - `rootfs.diff_ids` is always present, `[]` when every entry is throwaway (docker omits it; the
 *   OCI config requires it);
 * - the v1 `id`/`parent` chain is not checked (docker and skopeo reject a broken chain or an id that
 *   is not 64 hex; containerd does not check): it plays no part in the result;
 * - images built with docker < 1.8.3 are not re-encoded through docker's `V1Image` struct first
 *   (docker's fallback for them), so their config bytes differ from docker's; they stay valid.
 *
 * The manifest is serialised compactly (`JSON.stringify`, no whitespace), keys in the order
 * schemaVersion, mediaType, config, layers and mediaType, size, digest in each descriptor, layers
 * always `application/vnd.docker.image.rootfs.diff.tar.gzip`: byte for byte what
 * `skopeo copy --format v2s2` writes for the same schema-1 image (containers/image
 * `convertToManifestSchema2`, `json.Marshal`), so config and manifest digests both match skopeo's.
 * (docker's distribution library would indent by three spaces; that is only formatting, but it
 * changes the digest, and skopeo is the tool ocirelay is measured against.)
 */
import { digestOf, parseDigest } from '../digest.js';
import { ManifestError, truncate } from '../errors.js';
import { MediaTypes } from './media-types.js';

export interface Schema1Manifest {
  name?: string;
  tag?: string;
  architecture?: string;
  fsLayers: { blobSum: string }[];
  history: { v1Compatibility: string }[];
  schemaVersion: 1;
  /** Present on signed (`+prettyjws`) manifests; never verified (docker does not either). */
  signatures?: unknown[];
}

export interface ConvertedImage {
  config: Buffer;
  configDigest: string;
  manifest: Buffer;
  manifestDigest: string;
}

/** The v1Compatibility fields docker drops when it turns one into an image config. */
const V1_ONLY_FIELDS = ['id', 'parent', 'Size', 'parent_id', 'layer_id', 'throwaway'] as const;

/** The blob of an empty tar (1024 zero bytes) as docker gzips it; documented here, kept as a layer. */
export const GZIPPED_EMPTY_TAR_DIGEST = 'sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4';

/** Go's zero `time.Time`, which docker writes for a history entry without `created`. */
const GO_ZERO_TIME = '0001-01-01T00:00:00Z';

const RFC3339 = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/;

function fail(message: string): never {
  throw new ManifestError(`schema 1 manifest: ${message}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === undefined) return 'no value';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(truncate(value, 80))}`;
  return `${typeof value === 'object' ? 'an' : 'a'} ${typeof value}`;
}

/** One history entry, parsed and checked. */
interface Entry {
  /** Index into the manifest's `history` and `fsLayers` (newest-first). */
  index: number;
  blobSum: string;
  raw: string;
  v1: Record<string, unknown>;
  throwaway: boolean;
}

/** Validates and parses one v1Compatibility (only the fields the conversion reads are typed). */
function parseV1Compatibility(raw: unknown, index: number): Record<string, unknown> {
  const where = `history[${index}].v1Compatibility`;
  if (typeof raw !== 'string') fail(`${where} must be a string, got ${describe(raw)}`);
  let v1: unknown;
  try {
    v1 = JSON.parse(raw);
  } catch (err) {
    fail(`${where} is not valid JSON (${(err as Error).message})`);
  }
  if (!isObject(v1)) fail(`${where} must be a JSON object, got ${describe(v1)}`);
  const optionalString = (key: string): void => {
    const value = v1[key];
    if (value !== undefined && value !== null && typeof value !== 'string') fail(`${where}.${key} must be a string, got ${describe(value)}`);
  };
  optionalString('id');
  optionalString('parent');
  optionalString('author');
  optionalString('comment');
  optionalString('os');
  optionalString('architecture');
  const throwaway = v1.throwaway;
  if (throwaway !== undefined && throwaway !== null && typeof throwaway !== 'boolean') {
    fail(`${where}.throwaway must be a boolean, got ${describe(throwaway)}`);
  }
  const created = v1.created;
  if (created !== undefined && created !== null && (typeof created !== 'string' || !RFC3339.test(created))) {
    fail(`${where}.created must be an RFC 3339 timestamp, got ${describe(created)}`);
  }
  const containerConfig = v1.container_config;
  if (containerConfig !== undefined && containerConfig !== null) {
    if (!isObject(containerConfig)) fail(`${where}.container_config must be an object, got ${describe(containerConfig)}`);
    const cmd = containerConfig.Cmd;
    const okCmd = cmd === undefined || cmd === null || typeof cmd === 'string' || (Array.isArray(cmd) && cmd.every((part) => typeof part === 'string'));
    if (!okCmd) fail(`${where}.container_config.Cmd must be a string or an array of strings, got ${describe(cmd)}`);
  }
  return v1;
}

/**
 * Parses and validates a schema-1 manifest, signed (`+prettyjws`, with `signatures`) or unsigned.
 * Throws ManifestError naming the bad field and index.
 */
export function parseSchema1(bytes: Uint8Array): Schema1Manifest {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    fail('is not valid UTF-8');
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    fail(`is not valid JSON (${(err as Error).message})`);
  }
  if (!isObject(doc)) fail(`must be a JSON object, got ${describe(doc)}`);
  return validate(doc).manifest;
}

function validate(doc: Record<string, unknown>): { manifest: Schema1Manifest; v1: Record<string, unknown>[] } {
  if (doc.schemaVersion !== 1) fail(`schemaVersion must be 1, got ${describe(doc.schemaVersion)}${typeof doc.schemaVersion === 'number' ? ` ${doc.schemaVersion}` : ''}`);
  // A document with schema-2/OCI fields is ambiguous (containerd and skopeo refuse it too).
  for (const key of ['config', 'layers', 'manifests']) {
    if (doc[key] !== undefined) fail(`has a "${key}" field, which schema 1 does not have (ambiguous document)`);
  }
  for (const key of ['name', 'tag', 'architecture'] as const) {
    const value = doc[key];
    if (value !== undefined && typeof value !== 'string') fail(`${key} must be a string, got ${describe(value)}`);
  }
  const { fsLayers, history, signatures } = doc;
  if (!Array.isArray(fsLayers)) fail(`fsLayers must be an array, got ${describe(fsLayers)}`);
  if (!Array.isArray(history)) fail(`history must be an array, got ${describe(history)}`);
  if (fsLayers.length === 0) fail('fsLayers is empty');
  if (fsLayers.length !== history.length) fail(`fsLayers has ${fsLayers.length} entries but history has ${history.length}`);
  if (signatures !== undefined && !Array.isArray(signatures)) fail(`signatures must be an array, got ${describe(signatures)}`);

  const layers = fsLayers.map((layer: unknown, index) => {
    if (!isObject(layer)) fail(`fsLayers[${index}] must be an object, got ${describe(layer)}`);
    const { blobSum } = layer;
    if (typeof blobSum !== 'string') fail(`fsLayers[${index}].blobSum must be a digest string, got ${describe(blobSum)}`);
    try {
      parseDigest(blobSum);
    } catch (err) {
      fail(`fsLayers[${index}].blobSum: ${(err as Error).message}`);
    }
    return { blobSum };
  });
  const v1: Record<string, unknown>[] = [];
  const entries = history.map((entry: unknown, index) => {
    if (!isObject(entry)) fail(`history[${index}] must be an object, got ${describe(entry)}`);
    const { v1Compatibility } = entry;
    v1.push(parseV1Compatibility(v1Compatibility, index));
    return { v1Compatibility: v1Compatibility as string };
  });

  const manifest: Schema1Manifest = { schemaVersion: 1, fsLayers: layers, history: entries };
  if (typeof doc.name === 'string') manifest.name = doc.name;
  if (typeof doc.tag === 'string') manifest.tag = doc.tag;
  if (typeof doc.architecture === 'string') manifest.architecture = doc.architecture;
  if (Array.isArray(signatures)) manifest.signatures = signatures;
  return { manifest, v1 };
}

/**
 * The history entries that make up the image, base-first, after docker's `fixManifestLayers`
 * de-duplication (a run of consecutive entries with the same non-empty v1 `id` keeps its oldest).
 * Re-validates, so that a manifest built by hand gets the same errors as a parsed one.
 */
function entriesOf(manifest: Schema1Manifest): Entry[] {
  if (!isObject(manifest)) fail(`must be an object, got ${describe(manifest)}`);
  const { manifest: checked, v1: parsed } = validate(manifest as unknown as Record<string, unknown>);
  const entries: Entry[] = [];
  for (let index = checked.history.length - 1; index >= 0; index--) {
    const raw = (checked.history[index] as { v1Compatibility: string }).v1Compatibility;
    const v1 = parsed[index] as Record<string, unknown>;
    const previous = entries[entries.length - 1];
    if (previous && typeof v1.id === 'string' && v1.id !== '' && v1.id === previous.v1.id) continue;
    const blobSum = (checked.fsLayers[index] as { blobSum: string }).blobSum;
    entries.push({ index, blobSum, raw, v1, throwaway: v1.throwaway === true });
  }
  return entries;
}

/** The layers that must be fetched to compute diff_ids, base-first, with throwaway/empty ones removed. */
export function schema1Layers(manifest: Schema1Manifest): { blobSum: string; historyIndex: number }[] {
  return entriesOf(manifest)
    .filter((entry) => !entry.throwaway)
    .map((entry) => ({ blobSum: entry.blobSum, historyIndex: entry.index }));
}

/** Builds the schema-2 config and manifest, given each kept layer's diff_id and compressed size (same order as schema1Layers). */
export function convertSchema1(manifest: Schema1Manifest, layers: { blobSum: string; size: number; diffId: string }[]): ConvertedImage {
  const entries = entriesOf(manifest);
  const kept = entries.filter((entry) => !entry.throwaway);
  if (layers.length !== kept.length) {
    throw new ManifestError(`schema 1 conversion: the manifest has ${kept.length} layers to convert, ${layers.length} were given`);
  }
  kept.forEach((entry, i) => {
    const layer = layers[i] as { blobSum: string; size: number; diffId: string };
    if (layer.blobSum !== entry.blobSum) {
      throw new ManifestError(`schema 1 conversion: layer ${i} is ${layer.blobSum}, expected ${entry.blobSum} (fsLayers[${entry.index}]); give layers in schema1Layers order`);
    }
    if (!Number.isSafeInteger(layer.size) || layer.size < 0) {
      throw new ManifestError(`schema 1 conversion: layer ${i} (${layer.blobSum}) has invalid size ${String(layer.size)}`);
    }
    try {
      parseDigest(layer.diffId);
    } catch (err) {
      throw new ManifestError(`schema 1 conversion: layer ${i} (${layer.blobSum}) diff_id: ${(err as Error).message}`);
    }
  });

  const history = entries.map((entry) => historyJson(entry.v1, entry.throwaway));
  const rootfs = `{"type":"layers","diff_ids":[${layers.map((layer) => goString(layer.diffId)).join(',')}]}`;

  // The newest entry that survived de-duplication is the image's own config.
  const top = entries[entries.length - 1] as Entry;
  const members = rawMembers(top.raw);
  for (const field of V1_ONLY_FIELDS) members.delete(field);
  if (isBlank(members.get('os'))) members.set('os', '"linux"');
  if (isBlank(members.get('architecture')) && manifest.architecture) members.set('architecture', goString(manifest.architecture));
  members.set('rootfs', rootfs);
  members.set('history', `[${history.join(',')}]`);
  const keys = [...members.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const configText = `{${keys.map((key) => `${goString(key)}:${goCompact(members.get(key) as string)}`).join(',')}}`;
  const config = Buffer.from(configText, 'utf8');
  const configDigest = digestOf(config);

  const schema2 = {
    schemaVersion: 2,
    mediaType: MediaTypes.dockerManifest,
    config: { mediaType: MediaTypes.dockerConfig, size: config.byteLength, digest: configDigest },
    layers: layers.map((layer) => ({ mediaType: MediaTypes.dockerLayerGzip, size: layer.size, digest: layer.blobSum })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(schema2), 'utf8');
  return { config, configDigest, manifest: manifestBytes, manifestDigest: digestOf(manifestBytes) };
}

function isBlank(raw: string | undefined): boolean {
  return raw === undefined || raw.trim() === 'null' || raw.trim() === '""';
}

/** One docker `image.History` as Go marshals it: created, author, created_by, comment, empty_layer. */
function historyJson(v1: Record<string, unknown>, emptyLayer: boolean): string {
  const parts = [`"created":${goString(typeof v1.created === 'string' ? goTime(v1.created) : GO_ZERO_TIME)}`];
  if (typeof v1.author === 'string' && v1.author !== '') parts.push(`"author":${goString(v1.author)}`);
  const createdBy = createdByOf(v1);
  if (createdBy !== '') parts.push(`"created_by":${goString(createdBy)}`);
  if (typeof v1.comment === 'string' && v1.comment !== '') parts.push(`"comment":${goString(v1.comment)}`);
  if (emptyLayer) parts.push('"empty_layer":true');
  return `{${parts.join(',')}}`;
}

/** `container_config.Cmd` joined with spaces (docker's strslice accepts a lone string too). */
function createdByOf(v1: Record<string, unknown>): string {
  const containerConfig = v1.container_config;
  if (!isObject(containerConfig)) return '';
  const cmd = containerConfig.Cmd;
  if (typeof cmd === 'string') return cmd;
  if (Array.isArray(cmd)) return cmd.join(' ');
  return '';
}

/** An RFC 3339 timestamp as Go's `time.Time` re-marshals it (RFC3339Nano). */
function goTime(value: string): string {
  const match = RFC3339.exec(value);
  if (!match) return value;
  const [, base, fraction, zone] = match as unknown as [string, string, string | undefined, string];
  const nanos = (fraction ?? '').slice(0, 9).replace(/0+$/, '');
  const z = zone === '+00:00' || zone === '-00:00' ? 'Z' : zone;
  return `${base}${nanos ? `.${nanos}` : ''}${z}`;
}

const GO_HTML_ESCAPES: Record<string, string> = { '<': '\\u003c', '>': '\\u003e', '&': '\\u0026', '\u2028': '\\u2028', '\u2029': '\\u2029' };

function goEscapeHtml(jsonString: string): string {
  return jsonString.replace(/[<>&\u2028\u2029]/g, (c) => GO_HTML_ESCAPES[c] as string);
}

/** A string as Go's encoding/json writes it (HTML-safe). */
function goString(value: string): string {
  return goEscapeHtml(JSON.stringify(value));
}

/** Go's `json.Compact` with HTML escaping: whitespace outside strings removed, tokens untouched. */
function goCompact(raw: string): string {
  return raw.replace(/"(?:[^"\\]|\\.)*"|[ \t\n\r]+/gs, (token) => (token.startsWith('"') ? goEscapeHtml(token) : ''));
}

/**
 * The top-level members of a JSON object text (already validated by JSON.parse), each value as its
 * raw text; a repeated key keeps its last value, as Go's decoder into a map does.
 */
function rawMembers(text: string): Map<string, string> {
  let i = 0;
  const skipSpace = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i++;
  };
  const skipString = (): void => {
    i++; // opening quote
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
  };
  const skipValue = (): void => {
    const first = text[i];
    if (first === '"') return skipString();
    if (first === '{' || first === '[') {
      let depth = 0;
      do {
        const c = text[i];
        if (c === '"') {
          skipString();
          continue;
        }
        if (c === '{' || c === '[') depth++;
        else if (c === '}' || c === ']') depth--;
        i++;
      } while (depth > 0);
      return;
    }
    while (i < text.length && !',}] \t\n\r'.includes(text[i] as string)) i++;
  };
  const members = new Map<string, string>();
  skipSpace();
  i++; // '{'
  skipSpace();
  if (text[i] === '}') return members;
  for (;;) {
    skipSpace();
    const keyStart = i;
    skipString();
    const key = JSON.parse(text.slice(keyStart, i)) as string;
    skipSpace();
    i++; // ':'
    skipSpace();
    const valueStart = i;
    skipValue();
    members.delete(key);
    members.set(key, text.slice(valueStart, i));
    skipSpace();
    if (text[i] !== ',') break;
    i++;
  }
  return members;
}
