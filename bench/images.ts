// Benchmark images: real gzip layers (a tar of one file of random bytes, deflate level 0, so the
// content is incompressible and every tool sees a genuinely gzip-compressed layer it copies
// verbatim; a layer labelled gzip but not gzip would make skopeo recompress it), generated from a
// seeded AES-CTR keystream so that a layer can be produced twice (once to learn its digest, once
// to upload it) without ever being held in memory or written to disk. Pushed with ocirelay's own
// client (setup, not measured); every measured copy is checked against the digests made here.
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import pLimit from 'p-limit';
import { MediaTypes } from '../lib/manifest/media-types.js';
import { RegistryClient } from '../lib/oci/client.js';
import { ustarHeader } from '../test/support/images.js';

const MiB = 1024 * 1024;
const RUN_SALT = randomBytes(8).toString('hex');
let nextSeed = 0;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageSpec {
  /** One image per platform; a single platform without `index` is pushed as a plain image. */
  platforms: Platform[];
  /** Layer sizes (bytes of random payload) of each platform's image. */
  layers: number[];
  /** Push an index even for one platform. */
  index?: boolean;
}

export interface PushedFixture {
  repository: string;
  tag: string;
  /** Root digest (the index, or the image). */
  digest: string;
  mediaType: string;
  /** Blobs (layers and configs) and their total size. */
  blobs: number;
  bytes: number;
  manifests: number;
}

export const PLATFORMS: Platform[] = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64', variant: 'v8' },
  { os: 'linux', architecture: 'arm', variant: 'v7' },
  { os: 'linux', architecture: 'ppc64le' },
  { os: 'linux', architecture: 's390x' },
  { os: 'linux', architecture: '386' },
  { os: 'linux', architecture: 'riscv64' },
  { os: 'linux', architecture: 'arm', variant: 'v6' },
  { os: 'linux', architecture: 'mips64le' },
  { os: 'linux', architecture: 'loong64' },
  { os: 'linux', architecture: 'amd64', variant: 'v2' },
  { os: 'linux', architecture: 'amd64', variant: 'v3' },
  { os: 'linux', architecture: 'arm', variant: 'v5' },
  { os: 'linux', architecture: 'mips64' },
  { os: 'linux', architecture: 'ppc64' },
  { os: 'freebsd', architecture: 'amd64' },
];

/** The uncompressed tar (one file of `payload` random bytes), in 1 MiB chunks, deterministic for a seed. */
function* tarChunks(seed: string, payload: number): Generator<Buffer> {
  const key = createHash('sha256').update(`ocirelay-bench:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zero = Buffer.alloc(MiB);
  yield ustarHeader('payload.bin', payload, '14130000000');
  for (let left = payload; left > 0; left -= MiB) yield cipher.update(zero.subarray(0, Math.min(MiB, left)));
  const pad = (512 - (payload % 512)) % 512;
  yield Buffer.alloc(pad + 1024);
}

function layerStream(seed: string, payload: number, onTar?: (chunk: Buffer) => void): Readable {
  const tar = Readable.from(
    (function* () {
      for (const chunk of tarChunks(seed, payload)) {
        onTar?.(chunk);
        yield chunk;
      }
    })(),
  );
  return tar.pipe(createGzip({ level: 0, chunkSize: 256 * 1024 }));
}

interface Layer {
  seed: string;
  payload: number;
  digest: string;
  size: number;
  diffId: string;
}

async function makeLayer(payload: number): Promise<Layer> {
  const seed = `${RUN_SALT}-${nextSeed++}`;
  const blob = createHash('sha256');
  const diff = createHash('sha256');
  let size = 0;
  for await (const chunk of layerStream(seed, payload, (c) => diff.update(c))) {
    blob.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { seed, payload, digest: `sha256:${blob.digest('hex')}`, size, diffId: `sha256:${diff.digest('hex')}` };
}

function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Pushes an image (or an index of images) with fresh random layers; returns what a copy must reproduce. */
export async function pushImage(host: string, repository: string, tag: string, spec: ImageSpec): Promise<PushedFixture> {
  const client = new RegistryClient(host, { connections: 8 });
  const repo = client.repository(repository, 'push');
  const limit = pLimit(4);
  let blobs = 0;
  let bytes = 0;
  try {
    const images = await Promise.all(
      spec.platforms.map(async (platform) => {
        const layers = await Promise.all(
          spec.layers.map((payload) =>
            limit(async () => {
              const layer = await makeLayer(payload);
              await repo.pushBlob({ digest: layer.digest, size: layer.size }, () => layerStream(layer.seed, layer.payload));
              return layer;
            }),
          ),
        );
        const config = Buffer.from(
          JSON.stringify({
            created: '2024-01-01T00:00:00Z',
            architecture: platform.architecture,
            os: platform.os,
            ...(platform.variant ? { variant: platform.variant } : {}),
            config: { Env: ['PATH=/usr/bin:/bin'], Labels: { 'org.example.bench': RUN_SALT } },
            rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
            history: layers.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `bench layer ${i}` })),
          }),
        );
        const configDigest = digestOf(config);
        await repo.pushBlob({ digest: configDigest, size: config.length }, () => Readable.from([config]));
        blobs += layers.length + 1;
        bytes += layers.reduce((n, l) => n + l.size, 0) + config.length;
        const manifest = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: MediaTypes.ociManifest,
            config: { mediaType: MediaTypes.ociConfig, digest: configDigest, size: config.length },
            layers: layers.map((l) => ({ mediaType: MediaTypes.ociLayerGzip, digest: l.digest, size: l.size })),
          }),
        );
        return { platform, manifest, digest: digestOf(manifest) };
      }),
    );
    if (images.length === 1 && !spec.index) {
      const only = images[0]!;
      await repo.putManifest(tag, only.manifest, MediaTypes.ociManifest);
      return { repository, tag, digest: only.digest, mediaType: MediaTypes.ociManifest, blobs, bytes, manifests: 1 };
    }
    for (const image of images) await repo.putManifest(image.digest, image.manifest, MediaTypes.ociManifest);
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaTypes.ociIndex,
        manifests: images.map((i) => ({ mediaType: MediaTypes.ociManifest, digest: i.digest, size: i.manifest.length, platform: i.platform })),
      }),
    );
    await repo.putManifest(tag, index, MediaTypes.ociIndex);
    return { repository, tag, digest: digestOf(index), mediaType: MediaTypes.ociIndex, blobs, bytes, manifests: images.length + 1 };
  } finally {
    await client.close();
  }
}

const MANIFEST_ACCEPT = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest].join(', ');

/** The digest a registry holds under `repository:tag` (HEAD, straight to the registry), or undefined. */
export async function headDigest(registryUrl: string, repository: string, tag: string): Promise<string | undefined> {
  const res = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
  if (res.status === 404) return undefined;
  if (res.status !== 200) throw new Error(`HEAD ${repository}:${tag} answered ${res.status}`);
  return res.headers.get('docker-content-digest') ?? undefined;
}

/** Throws unless the registry holds `expected` under `repository:tag`. */
export async function expectDigest(registryUrl: string, repository: string, tag: string, expected: string, who: string): Promise<void> {
  const actual = await headDigest(registryUrl, repository, tag);
  if (actual !== expected) throw new Error(`${who}: the target holds ${actual ?? 'nothing'} under ${repository}:${tag}, expected ${expected}`);
}

export { MiB };
