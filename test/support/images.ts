// Images pushed straight from memory with ocirelay's own client, for tests that need content
// umoci does not make (uncompressed tar layers, sizes that are exact multiples of 512, huge
// random layers, hand-written manifests). Results are still checked with skopeo.
import { Readable } from 'node:stream';
import { digestOf } from '../../lib/digest.js';
import { MediaTypes } from '../../lib/manifest/media-types.js';
import { RegistryClient } from '../../lib/oci/client.js';
import { staticCredentials } from '../../lib/oci/credentials.js';

export interface TestLayer {
  bytes: Buffer;
  mediaType?: string; // default OCI uncompressed tar
}

export interface PushedImage {
  digest: string;
  size: number;
  mediaType: string;
  manifest: Buffer;
  config: Buffer;
  configDigest: string;
  layers: Array<{ digest: string; size: number; mediaType: string }>;
}

/** The ustar header of a regular file (mode 644, uid/gid 0, mtime as given in octal). */
export function ustarHeader(name: string, size: number, mtimeOctal = '00000000000'): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(size.toString(8).padStart(11, '0') + '\0', 124);
  header.write(`${mtimeOctal}\0`, 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0' + '00', 257);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return header;
}

/** A tar archive of files (ustar, mtime 0): its size is always a multiple of 512. */
export function tarOf(files: Record<string, Buffer | string>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, content] of Object.entries(files)) {
    const data = Buffer.isBuffer(content) ? content : Buffer.from(content);
    blocks.push(ustarHeader(name, data.length), data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

function client(host: string, creds?: string): RegistryClient {
  const [username, password] = creds ? [creds.slice(0, creds.indexOf(':')), creds.slice(creds.indexOf(':') + 1)] : [];
  return new RegistryClient(host, username ? { credentials: staticCredentials({ username, password: password as string }) } : {});
}

export async function pushTestImage(
  host: string,
  repository: string,
  reference: string,
  options: { layers: TestLayer[]; architecture?: string; os?: string; variant?: string; docker?: boolean; extraConfig?: Record<string, unknown>; creds?: string; annotations?: Record<string, string> },
): Promise<PushedImage> {
  const c = client(host, options.creds);
  try {
    const repo = c.repository(repository, 'push');
    const docker = options.docker ?? false;
    const layers = options.layers.map((l) => ({ mediaType: l.mediaType ?? (docker ? MediaTypes.dockerLayerGzip : MediaTypes.ociLayerTar), digest: digestOf(l.bytes), size: l.bytes.length }));
    const config = Buffer.from(
      JSON.stringify({
        architecture: options.architecture ?? 'amd64',
        os: options.os ?? 'linux',
        ...(options.variant ? { variant: options.variant } : {}),
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
        config: {},
        ...options.extraConfig,
      }),
    );
    const configDigest = digestOf(config);
    for (const [i, layer] of options.layers.entries()) {
      await repo.pushBlob(layers[i] as { digest: string; size: number }, () => Readable.from([layer.bytes]));
    }
    await repo.pushBlob({ digest: configDigest, size: config.length }, () => Readable.from([config]));
    const mediaType = docker ? MediaTypes.dockerManifest : MediaTypes.ociManifest;
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType,
        config: { mediaType: docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig, digest: configDigest, size: config.length },
        layers,
        ...(options.annotations ? { annotations: options.annotations } : {}),
      }),
    );
    await repo.putManifest(reference, manifest, mediaType);
    return { digest: digestOf(manifest), size: manifest.length, mediaType, manifest, config, configDigest, layers };
  } finally {
    await c.close();
  }
}

export async function pushTestIndex(host: string, repository: string, tag: string, images: Array<{ image: PushedImage; platform: { os: string; architecture: string; variant?: string } }>, options: { creds?: string; docker?: boolean } = {}): Promise<{ digest: string; bytes: Buffer }> {
  const c = client(host, options.creds);
  try {
    const mediaType = options.docker ? MediaTypes.dockerManifestList : MediaTypes.ociIndex;
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests: images.map(({ image, platform }) => ({ mediaType: image.mediaType, digest: image.digest, size: image.size, platform })) }));
    await c.repository(repository, 'push').putManifest(tag, bytes, mediaType);
    return { digest: digestOf(bytes), bytes };
  } finally {
    await c.close();
  }
}
