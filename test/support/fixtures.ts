// Building and checking images without Docker: umoci writes OCI layouts, skopeo pushes and
// inspects. Nothing is cached between calls (each skopeo call gets a fresh blob-info cache).
import { createCipheriv, createHash, randomBytes as cryptoRandomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, run } from './process.js';

// ---------------------------------------------------------------------------------------------
// Content

/** Random (incompressible) bytes; deterministic when a seed is given (AES-128-CTR keystream). */
export function randomBytes(size: number, seed?: number): Buffer {
  if (seed === undefined) return cryptoRandomBytes(size);
  return seededStream(seed).next(size);
}

function seededStream(seed: number): { next(size: number): Buffer } {
  const key = createHash('sha256').update(`ocirelay-test-random:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return { next: (size) => cipher.update(Buffer.alloc(size)) };
}

/** 'sha256:<hex>' of some bytes. */
export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A file's content: bytes, text, or `size` random bytes (deterministic with `seed`) generated while writing. */
export type FileContent = Buffer | string | { size: number; seed?: number };

export interface LayerFile {
  path: string;
  content: FileContent;
  /** Permission bits, default 0o644. */
  mode?: number;
}

export interface LayerSpec {
  files: Record<string, FileContent>;
}

export type LayerInput = LayerFile[] | LayerSpec;

function layerFiles(layer: LayerInput): LayerFile[] {
  return Array.isArray(layer) ? layer : Object.entries(layer.files).map(([path, content]) => ({ path, content }));
}

// ---------------------------------------------------------------------------------------------
// A minimal deterministic ustar writer (owner 0:0, fixed mtime, parent directories first), so
// the same files always give the same layer digest.

const TAR_MTIME = 946684800; // 2000-01-01T00:00:00Z
const ZERO_BLOCK = Buffer.alloc(512);

function normalisePath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) throw new Error(`bad layer path: ${JSON.stringify(path)}`);
  return parts.join('/');
}

function tarHeader(name: string, size: number, mode: number, type: '0' | '5'): Buffer {
  const header = Buffer.alloc(512);
  let namePart = name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', name.length - 2);
    prefix = cut > 0 ? name.slice(0, cut) : '';
    namePart = cut > 0 ? name.slice(cut + 1) : name;
    if (Buffer.byteLength(namePart) > 100 || Buffer.byteLength(prefix) > 155) {
      throw new Error(`layer path too long for ustar: ${name}`);
    }
  }
  const octal = (value: number, width: number): string => value.toString(8).padStart(width - 1, '0') + '\0';
  header.write(namePart, 0, 100, 'utf8');
  header.write(octal(mode, 8), 100, 8, 'ascii');
  header.write(octal(0, 8), 108, 8, 'ascii');
  header.write(octal(0, 8), 116, 8, 'ascii');
  header.write(octal(size, 12), 124, 12, 'ascii');
  header.write(octal(TAR_MTIME, 12), 136, 12, 'ascii');
  header.write('        ', 148, 8, 'ascii');
  header.write(type, 156, 1, 'ascii');
  header.write('ustar\0', 257, 6, 'ascii');
  header.write('00', 263, 2, 'ascii');
  header.write('root', 265, 32, 'ascii');
  header.write('root', 297, 32, 'ascii');
  header.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return header;
}

/** Writes an uncompressed tar of `files` to `tarPath`, streaming random contents. */
export async function writeLayerTar(tarPath: string, files: LayerFile[]): Promise<void> {
  const handle = await open(tarPath, 'w');
  try {
    const dirs = new Set<string>();
    for (const file of files) {
      const name = normalisePath(file.path);
      const parts = name.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (!dirs.has(dir)) {
          dirs.add(dir);
          await handle.write(tarHeader(`${dir}/`, 0, 0o755, '5'));
        }
      }
      const content = file.content;
      if (typeof content === 'string' || Buffer.isBuffer(content)) {
        const bytes = Buffer.from(content);
        await handle.write(tarHeader(name, bytes.length, file.mode ?? 0o644, '0'));
        await handle.write(bytes);
        const pad = (512 - (bytes.length % 512)) % 512;
        if (pad > 0) await handle.write(ZERO_BLOCK.subarray(0, pad));
      } else {
        await handle.write(tarHeader(name, content.size, file.mode ?? 0o644, '0'));
        const stream = content.seed === undefined ? undefined : seededStream(content.seed);
        const chunk = 1024 * 1024;
        for (let written = 0; written < content.size; written += chunk) {
          const n = Math.min(chunk, content.size - written);
          await handle.write(stream ? stream.next(n) : cryptoRandomBytes(n));
        }
        const pad = (512 - (content.size % 512)) % 512;
        if (pad > 0) await handle.write(ZERO_BLOCK.subarray(0, pad));
      }
    }
    await handle.write(Buffer.alloc(1024));
  } finally {
    await handle.close();
  }
}

// ---------------------------------------------------------------------------------------------
// OCI layouts (umoci)

const REF_NAME = 'org.opencontainers.image.ref.name';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DEFAULT_CREATED = '2024-01-01T00:00:00Z';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string };
  [key: string]: unknown;
}

interface LayoutIndex {
  schemaVersion: number;
  manifests: Descriptor[];
  [key: string]: unknown;
}

function blobPath(layout: string, digest: string): string {
  const [algorithm, hex] = digest.split(':');
  if (!algorithm || !hex) throw new Error(`bad digest ${digest}`);
  return join(layout, 'blobs', algorithm, hex);
}

async function readLayoutIndex(layout: string): Promise<LayoutIndex> {
  return JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as LayoutIndex;
}

function findTag(index: LayoutIndex, layout: string, tag: string): Descriptor {
  const found = index.manifests.find((d) => d.annotations?.[REF_NAME] === tag);
  if (!found) throw new Error(`no ref ${JSON.stringify(tag)} in ${layout}/index.json`);
  return found;
}

/** Writes a blob into the layout; returns its descriptor fields. */
export async function writeBlob(layout: string, data: Buffer): Promise<{ digest: string; size: number }> {
  const digest = sha256Digest(data);
  await writeFile(blobPath(layout, digest), data);
  return { digest, size: data.length };
}

/** The manifest descriptor stored under `tag` in the layout's index.json. */
export async function layoutDescriptor(layout: string, tag: string): Promise<{ digest: string; size: number; mediaType: string }> {
  const found = findTag(await readLayoutIndex(layout), layout, tag);
  return { digest: found.digest, size: found.size, mediaType: found.mediaType };
}

/** Reads a blob of the layout. */
export function readBlob(layout: string, digest: string): Promise<Buffer> {
  return readFile(blobPath(layout, digest));
}

export interface BuildImageOptions {
  /** An existing layout to add to, or a new path; default a fresh temp dir (removed at exit). */
  layout?: string;
  tag: string;
  architecture?: string; // default 'amd64'
  os?: string; // default 'linux'
  variant?: string;
  /** One entry per layer, bottom first. An image may have no layers. */
  layers: LayerInput[];
  /** Config `created` and history timestamps; default fixed, so equal inputs give equal digests. */
  created?: string;
  /** Manifest annotations. */
  annotations?: Record<string, string>;
}

export interface BuiltImage {
  layout: string;
  tag: string;
  /** 'LAYOUT:TAG', for pushLayout. */
  ref: string;
  /** Manifest digest and size. */
  digest: string;
  size: number;
}

/**
 * Builds an image in an OCI layout: umoci init (new layouts only), umoci new, one `umoci raw
 * add-layer` per layer (tars written here deterministically: fixed mtime, root owner), umoci
 * config. A variant is patched into the config afterwards (umoci has no flag for it).
 */
export async function buildImage(options: BuildImageOptions): Promise<BuiltImage> {
  const layout = options.layout ?? join(makeTempDir('layout'), 'oci');
  const created = options.created ?? DEFAULT_CREATED;
  const image = `${layout}:${options.tag}`;
  if (!existsSync(join(layout, 'index.json'))) {
    await run('umoci', ['init', '--layout', layout]);
  }
  await run('umoci', ['new', '--image', image]);

  const work = makeTempDir('layer');
  try {
    for (const [i, layer] of options.layers.entries()) {
      const tarPath = join(work, `layer-${i}.tar`);
      await writeLayerTar(tarPath, layerFiles(layer));
      await run('umoci', [
        'raw', 'add-layer', '--image', image,
        '--history.created', created, '--history.created_by', `ocirelay test layer ${i}`,
        tarPath,
      ]);
    }
  } finally {
    await removeTempDir(work);
  }

  const configArgs = [
    'config', '--image', image, '--no-history', '--created', created,
    '--architecture', options.architecture ?? 'amd64', '--os', options.os ?? 'linux',
  ];
  for (const [key, value] of Object.entries(options.annotations ?? {})) {
    configArgs.push('--manifest.annotation', `${key}=${value}`);
  }
  await run('umoci', configArgs);

  if (options.variant !== undefined) await patchConfig(layout, options.tag, { variant: options.variant });

  const { digest, size } = await layoutDescriptor(layout, options.tag);
  return { layout, tag: options.tag, ref: image, digest, size };
}

/** Merges `changes` into the image config under `tag`, rewriting config, manifest and index.json. */
export async function patchConfig(layout: string, tag: string, changes: Record<string, unknown>): Promise<void> {
  const index = await readLayoutIndex(layout);
  const descriptor = findTag(index, layout, tag);
  const manifest = JSON.parse((await readBlob(layout, descriptor.digest)).toString('utf8')) as {
    config: Descriptor;
  };
  const config = JSON.parse((await readBlob(layout, manifest.config.digest)).toString('utf8')) as Record<string, unknown>;
  const newConfig = await writeBlob(layout, Buffer.from(JSON.stringify({ ...config, ...changes })));
  manifest.config = { ...manifest.config, ...newConfig };
  const newManifest = await writeBlob(layout, Buffer.from(JSON.stringify(manifest)));
  descriptor.digest = newManifest.digest;
  descriptor.size = newManifest.size;
  await writeFile(join(layout, 'index.json'), JSON.stringify(index));
}

export interface BuildIndexOptions {
  layout: string;
  /** Ref name of the index in index.json (replaces an existing one). */
  name: string;
  images: Array<{ tag: string; platform: { os: string; architecture: string; variant?: string } }>;
  annotations?: Record<string, string>;
}

/**
 * Writes an OCI image index blob listing the images' manifests (with platform) into the layout
 * and adds it to index.json under `name`. `raw` is the exact bytes (what a registry will store).
 */
export async function buildIndex(options: BuildIndexOptions): Promise<{ digest: string; size: number; raw: Buffer; ref: string }> {
  const layoutIndex = await readLayoutIndex(options.layout);
  const manifests = options.images.map(({ tag, platform }) => {
    const d = findTag(layoutIndex, options.layout, tag);
    const p: { architecture: string; os: string; variant?: string } = {
      architecture: platform.architecture,
      os: platform.os,
    };
    if (platform.variant !== undefined) p.variant = platform.variant;
    return { mediaType: d.mediaType, digest: d.digest, size: d.size, platform: p };
  });
  const body: Record<string, unknown> = { schemaVersion: 2, mediaType: OCI_INDEX, manifests };
  if (options.annotations) body['annotations'] = options.annotations;
  const raw = Buffer.from(JSON.stringify(body));
  const { digest, size } = await writeBlob(options.layout, raw);
  layoutIndex.manifests = layoutIndex.manifests.filter((d) => d.annotations?.[REF_NAME] !== options.name);
  layoutIndex.manifests.push({ mediaType: OCI_INDEX, digest, size, annotations: { [REF_NAME]: options.name } });
  await writeFile(join(options.layout, 'index.json'), JSON.stringify(layoutIndex));
  return { digest, size, raw, ref: `${options.layout}:${options.name}` };
}

export { OCI_MANIFEST, OCI_INDEX };

// ---------------------------------------------------------------------------------------------
// skopeo

/**
 * Global arguments for every skopeo call. Policy: `--insecure-policy` (an in-memory
 * insecureAcceptAnything policy), so nothing depends on /etc/containers/policy.json (Debian ships
 * it in golang-github-containers-common, a hard dependency of skopeo, but a machine may have a
 * stricter one).
 */
export const SKOPEO_GLOBAL_ARGS: readonly string[] = ['--insecure-policy'];

const CREDS_FLAGS = new Set(['--creds', '--src-creds', '--dest-creds', '--registry-token', '--src-registry-token', '--dest-registry-token']);

function redact(args: string[]): string[] {
  return args.map((arg, i) => {
    if (i > 0 && CREDS_FLAGS.has(args[i - 1] ?? '')) return '***';
    const eq = arg.indexOf('=');
    if (eq > 0 && CREDS_FLAGS.has(arg.slice(0, eq))) return `${arg.slice(0, eq)}=***`;
    return arg;
  });
}

/**
 * The environment of one skopeo run: a fresh, private directory for its blob-info cache (and
 * temp files), so that no run turns into mounts or skipped uploads because of an earlier one.
 * As root, containers/image keeps that cache in /var/lib/containers/cache whatever the
 * environment says, unless it believes it runs rootless: `_CONTAINERS_ROOTLESS_UID` (read by
 * containers/image's rootless.GetRootlessEUID) makes it use $XDG_DATA_HOME instead.
 */
export function skopeoEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    XDG_DATA_HOME: join(home, 'data'),
    XDG_RUNTIME_DIR: home,
    XDG_CONFIG_HOME: join(home, 'config'),
    TMPDIR: home,
  };
  if (process.getuid?.() === 0) env['_CONTAINERS_ROOTLESS_UID'] = '65534';
  return env;
}

async function runSkopeo(args: string[], timeoutMs?: number): Promise<{ stdout: Buffer; stderr: string }> {
  const home = makeTempDir('skopeo');
  try {
    const fullArgs = [...SKOPEO_GLOBAL_ARGS, '--tmpdir', home, ...args];
    return await run('skopeo', fullArgs, {
      env: skopeoEnv(home),
      timeoutMs: timeoutMs ?? 300_000,
      displayArgs: redact(fullArgs),
    });
  } finally {
    await removeTempDir(home);
  }
}

/** Runs skopeo with the support layer's global args; rejects with stderr in the message. */
export async function skopeo(args: string[], options: { timeoutMs?: number } = {}): Promise<{ stdout: string; stderr: string }> {
  const { stdout, stderr } = await runSkopeo(args, options.timeoutMs);
  return { stdout: stdout.toString('utf8'), stderr };
}

function dockerRef(ref: string): string {
  return ref.startsWith('docker://') ? ref : `docker://${ref}`;
}

function layoutTransportRef(ref: string): string {
  return /^(oci|oci-archive|docker-archive|dir):/.test(ref) ? ref : `oci:${ref}`;
}

export interface PushOptions {
  /** --all: copy every image of an index (digest preserved). */
  all?: boolean;
  format?: 'oci' | 'v2s2' | 'v2s1';
  /** 'user:password' */
  creds?: string;
}

/** skopeo copy [--all] [--format F] --dest-tls-verify=false oci:DIR:tag docker://target */
export async function pushLayout(layoutRef: string, target: string, options: PushOptions = {}): Promise<void> {
  const args = ['copy', '--quiet', '--dest-tls-verify=false'];
  if (options.all) args.push('--all');
  if (options.format) args.push('--format', options.format);
  if (options.creds) args.push('--dest-creds', options.creds);
  args.push(layoutTransportRef(layoutRef), dockerRef(target));
  await runSkopeo(args);
}

/** skopeo copy [--all] --src-tls-verify=false docker://ref oci:DIR:tag — for checking results. */
export async function pullToLayout(ref: string, layoutRef: string, options: { all?: boolean; creds?: string } = {}): Promise<void> {
  const args = ['copy', '--quiet', '--src-tls-verify=false'];
  if (options.all) args.push('--all');
  if (options.creds) args.push('--src-creds', options.creds);
  args.push(dockerRef(ref), layoutTransportRef(layoutRef));
  await runSkopeo(args);
}

/** The exact manifest bytes the registry serves for `ref` ('127.0.0.1:PORT/repo:tag' or '@sha256:...'). */
export async function inspectRaw(ref: string, creds?: string): Promise<Buffer> {
  const args = ['inspect', '--raw', '--tls-verify=false'];
  if (creds) args.push('--creds', creds);
  args.push(dockerRef(ref));
  return (await runSkopeo(args)).stdout;
}

/** The exact config blob bytes of the image `ref` (for an index: the one for skopeo's platform). */
export async function inspectConfigRaw(ref: string, creds?: string): Promise<Buffer> {
  const args = ['inspect', '--raw', '--config', '--tls-verify=false'];
  if (creds) args.push('--creds', creds);
  args.push(dockerRef(ref));
  return (await runSkopeo(args)).stdout;
}

/** The parsed config blob of the image `ref`. */
export async function inspectConfig(ref: string, creds?: string): Promise<unknown> {
  return JSON.parse((await inspectConfigRaw(ref, creds)).toString('utf8')) as unknown;
}
