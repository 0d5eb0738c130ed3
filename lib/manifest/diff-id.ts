/**
 * The diff_id of a layer blob: the sha256 of its uncompressed bytes (OCI image spec, config.md
 * "Layer DiffID"), computed while the blob streams past, for schema-1 conversion (`./schema1.ts`).
 *
 * How the blob is read follows docker (moby `pkg/archive` `DecompressStream`, which `docker pull`
 * puts in front of the layer store, and containerd `archive/compression` `DecompressStream`, used
 * by its schema-1 converter): the format is detected from the first bytes, not from a media type.
 * - gzip (`1f 8b`): gunzipped through node's zlib, which decompresses every member of a
 *   multi-member (concatenated) gzip stream, as Go's `gzip.Reader` does by default. Anything that
 *   is not a valid gzip member after the first one, or a truncated member, rejects with a
 *   ManifestError. (Node's zlib ignores zero bytes after the last member, where Go would fail.)
 * - bzip2, xz and zstd magic: rejected with a ManifestError. Docker would decompress them, node
 *   (20) cannot, and a diff_id of the compressed bytes would be wrong; schema 1 never carried them.
 * - anything else, including an empty blob, is an uncompressed tar: the diff_id is the digest of
 *   the bytes as they are (docker's `Uncompressed` case); so diffId equals the blob's digest.
 *
 * Memory stays flat: nothing but the first few bytes (for detection) is held, and the source is
 * read only as fast as zlib consumes it. Errors of the source stream itself (network, digest
 * verification) reject unchanged, so callers can still tell a retryable fault from bad content.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, type Gunzip } from 'node:zlib';
import { ManifestError } from '../errors.js';

/** Enough bytes to recognise every magic number below (xz has the longest, 6). */
const SNIFF_BYTES = 6;

type Format = 'gzip' | 'plain';

const UNSUPPORTED: { name: string; magic: number[] }[] = [
  { name: 'bzip2', magic: [0x42, 0x5a, 0x68] },
  { name: 'xz', magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] },
  { name: 'zstd', magic: [0x28, 0xb5, 0x2f, 0xfd] },
];

function startsWith(head: Buffer, magic: number[]): boolean {
  return head.length >= magic.length && magic.every((byte, i) => head[i] === byte);
}

function detect(head: Buffer): Format {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  for (const { name, magic } of UNSUPPORTED) {
    if (startsWith(head, magic)) {
      throw new ManifestError(`layer is ${name}-compressed, which ocirelay cannot decompress to compute its diff_id (only gzip and uncompressed tar are supported)`);
    }
  }
  return 'plain';
}

class DiffIdSink extends Writable {
  compressedSize = 0;
  diffId: string | undefined;
  private readonly hash = createHash('sha256');
  private head: Buffer[] = [];
  private headLength = 0;
  private decided = false;
  private gunzip: Gunzip | undefined;
  private failure: ManifestError | undefined;

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.compressedSize += chunk.length;
    if (this.decided) {
      this.feed(chunk, callback);
      return;
    }
    this.head.push(chunk);
    this.headLength += chunk.length;
    if (this.headLength < SNIFF_BYTES) {
      callback();
      return;
    }
    this.decide(callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    const finish = (error?: Error | null): void => {
      if (error) {
        callback(error);
        return;
      }
      const gunzip = this.gunzip;
      if (!gunzip) {
        this.diffId = `sha256:${this.hash.digest('hex')}`;
        callback();
        return;
      }
      gunzip.once('end', () => {
        this.diffId = `sha256:${this.hash.digest('hex')}`;
        callback();
      });
      gunzip.end();
    };
    if (this.decided) finish();
    else this.decide(finish);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.gunzip?.destroy();
    callback(error);
  }

  /** Picks the format from the bytes held so far and passes them on. */
  private decide(callback: (error?: Error | null) => void): void {
    const head = Buffer.concat(this.head);
    this.head = [];
    this.decided = true;
    let format: Format;
    try {
      format = detect(head);
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (format === 'gzip') {
      const gunzip = createGunzip();
      gunzip.on('data', (data: Buffer) => this.hash.update(data));
      gunzip.on('error', (err) => this.destroy(this.wrap(err)));
      this.gunzip = gunzip;
    }
    if (head.length === 0) callback();
    else this.feed(head, callback);
  }

  private feed(chunk: Buffer, callback: (error?: Error | null) => void): void {
    const gunzip = this.gunzip;
    if (!gunzip) {
      this.hash.update(chunk);
      callback();
      return;
    }
    gunzip.write(chunk, (err) => callback(err ? this.wrap(err) : null));
  }

  /** One ManifestError per zlib failure, whichever of the write callback and 'error' sees it first. */
  private wrap(err: Error): ManifestError {
    this.failure ??= new ManifestError(`layer is not valid gzip: ${err.message}`, { cause: err });
    return this.failure;
  }
}

/**
 * Consumes a gzip-compressed layer stream and resolves with the sha256 of the uncompressed bytes and the compressed size.
 * Multi-member gzip (concatenated members) is fully decompressed; an uncompressed (plain tar) stream gets the digest of
 * its bytes as they are. Never buffers the whole layer. Rejects with a ManifestError when the data is corrupt gzip or
 * compressed in a format other than gzip.
 */
export async function diffIdOf(compressed: Readable): Promise<{ diffId: string; compressedSize: number }> {
  const sink = new DiffIdSink();
  await pipeline(compressed, sink);
  if (sink.diffId === undefined) throw new ManifestError('layer stream ended without a diff_id being computed');
  return { diffId: sink.diffId, compressedSize: sink.compressedSize };
}
