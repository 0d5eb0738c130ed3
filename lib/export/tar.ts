/**
 * Writing archive entries as a tar stream (tar-stream: ustar headers, pax for long names, each
 * member padded to 512 bytes only when its size is not already a multiple of 512, two zero blocks
 * at the end). Blobs stream from the registry through digest verification straight into their
 * member; a blob whose bytes disagree with the descriptor fails before its member is complete.
 */
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { HashingStream } from '../digest.js';
import { ErrorCodes, OciRelayError } from '../errors.js';
import type { ArchiveEntry } from './formats.js';

export type OpenBlob = (descriptor: { digest: string; size: number }) => Promise<Readable>;

export interface TarResult {
  bytes: number;
  /** sha256 of the archive. */
  digest: string;
}

const EPOCH = new Date(0);

export async function writeTar(entries: readonly ArchiveEntry[], openBlob: OpenBlob, sink: Writable, options: { signal?: AbortSignal; onEntry?: (entry: ArchiveEntry) => void; onBytes?: (n: number) => void } = {}): Promise<TarResult> {
  const pack = tar.pack();
  const hash = new HashingStream('sha256');
  if (options.onBytes) hash.on('data', (chunk: Buffer) => options.onBytes?.(chunk.length));
  const output = pipeline(pack, hash, sink, options.signal ? { signal: options.signal } : {});
  output.catch(() => undefined); // awaited below; a producer failure is reported first
  try {
    for (const entry of entries) {
      if (options.signal?.aborted) throw options.signal.reason;
      options.onEntry?.(entry);
      const header = { name: entry.name, size: entry.size, mode: entry.mode, mtime: EPOCH, uid: 0, gid: 0, uname: '', gname: '', type: entry.type };
      if (entry.type === 'directory' || !entry.content) {
        await new Promise<void>((resolve, reject) => pack.entry(header, (err) => (err ? reject(err) : resolve())));
        continue;
      }
      if (entry.content.kind === 'bytes') {
        const bytes = entry.content.bytes;
        await new Promise<void>((resolve, reject) => pack.entry(header, bytes, (err) => (err ? reject(err) : resolve())));
        continue;
      }
      const source = await openBlob(entry.content);
      const member = pack.entry(header);
      await pipeline(source, member);
    }
    pack.finalize();
  } catch (err) {
    const failure = err instanceof OciRelayError ? err : new OciRelayError(ErrorCodes.Network, `writing the archive failed: ${(err as Error).message}`, { cause: err, retryable: true });
    pack.destroy(failure);
    await output.catch(() => undefined);
    throw failure;
  }
  await output;
  return { bytes: hash.bytes, digest: hash.digest as string };
}
