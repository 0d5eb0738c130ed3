/**
 * A blob too large to be sure of finishing inside one Lambda invocation: uploaded in PATCH chunks,
 * with the remaining time checked before each chunk. When the next chunk might not fit, the
 * upload stops at a chunk boundary and the caller enqueues a follow-up task carrying the session
 * URL. The follow-up asks the registry where the session stands (upload status: the offset the
 * registry reports, which is the truth, not what we think we sent), reads the source again, and
 * goes on from there.
 *
 * Verification across invocations: the follow-up streams the source from byte 0 through the
 * digest check and discards the bytes the registry already holds, so the closing PUT is sent only
 * after the whole blob hashed to its digest, whichever invocation sent which part (invariant 3).
 * That costs a re-read of the prefix; it buys a guarantee that does not depend on the target.
 */
import { Readable } from 'node:stream';
import { ErrorCodes, OciRelayError } from '../errors.js';
import { StreamSlicer, type Repository, type UploadSession } from '../oci/client.js';
import { sided } from '../engine/execute.js';

export interface LargeBlobOptions {
  /** Bytes per PATCH. */
  chunkSize: number;
  /** ms since epoch after which no new chunk is started. */
  deadline: number;
  /** An earlier invocation's session to continue. */
  resumeFrom?: string;
  now?: () => number;
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
}

export type LargeBlobResult = { done: true; bytesSent: number } | { done: false; location: string; offset: number; bytesSent: number };

export async function uploadLargeBlob(source: Repository, target: Repository, blob: { digest: string; size: number }, options: LargeBlobOptions): Promise<LargeBlobResult> {
  const now = options.now ?? Date.now;
  let session: UploadSession;
  if (options.resumeFrom) {
    session = await sided('target', () => target.uploadStatus({ location: new URL(options.resumeFrom as string), minChunkLength: undefined, offset: 0 }));
  } else {
    const started = await sided('target', () => target.startUpload());
    if (started.mounted) return { done: true, bytesSent: 0 };
    session = started.session;
  }
  if (session.offset > blob.size) {
    throw new OciRelayError(ErrorCodes.SizeMismatch, `upload session holds ${session.offset} bytes of a ${blob.size}-byte blob`, { side: 'target' });
  }
  const chunkSize = Math.max(options.chunkSize, session.minChunkLength ?? 0);
  const verified = await sided('source', () => source.fetchBlob(blob, options.signal ? { signal: options.signal } : {}));
  const slicer = new StreamSlicer(verified);
  let bytesSent = 0;
  try {
    // Bytes the registry already has: hashed by the verifying stream, not sent again.
    if (session.offset > 0) await drain(slicer.next(session.offset));
    let slowest = 0;
    while (session.offset < blob.size) {
      const remaining = options.deadline - now();
      if (bytesSent > 0 && remaining < slowest * 2) {
        return { done: false, location: session.location.href, offset: session.offset, bytesSent };
      }
      const length = Math.min(chunkSize, blob.size - session.offset);
      const started = now();
      session = await sided('target', () => target.uploadChunk(session, slicer.next(length), length, options.signal ? { signal: options.signal } : {}));
      slowest = Math.max(slowest, now() - started);
      bytesSent += length;
      options.onProgress?.(bytesSent);
    }
    // Reading to the end lets the verifying stream check the digest before the closing PUT.
    await slicer.assertEnd(blob);
    await sided('target', () => target.completeUpload(session, blob.digest, undefined, options.signal ? { signal: options.signal } : {}));
    return { done: true, bytesSent };
  } catch (err) {
    // The task will be redelivered and start a fresh session; free this one (best effort).
    await target.cancelUpload(session);
    throw err;
  } finally {
    verified.destroy();
  }
}

async function drain(stream: Readable): Promise<void> {
  for await (const _chunk of stream) {
    // discarded: these bytes are already in the upload session
  }
}
