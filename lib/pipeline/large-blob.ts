/**
 * A blob too large to be sure of finishing inside one Lambda invocation: uploaded in PATCH chunks,
 * with the remaining time checked before each chunk. When the next chunk might not fit, the
 * upload stops at a chunk boundary and the caller enqueues a follow-up task carrying the session
 * URL and the digest state. The follow-up asks the registry where the session stands (upload
 * status: the offset the registry reports, which is the truth, not what we think we sent) and
 * goes on from there.
 *
 * Verification across invocations (invariant 3, every byte verified before it is committed):
 * the bytes are hashed with a SHA-256 whose state can be written down (resumable-hash.ts) as
 * they are handed to the registry, and the state at the last chunk boundary travels in the
 * follow-up task. The follow-up reads the source with a Range GET from the byte the state has
 * reached (not from byte 0: re-reading a prefix that takes longer than an invocation would never
 * finish), hashes on, and sends the closing PUT only after the whole blob hashed to its digest
 * and its size matched, whichever invocation read which part. When the registry holds more than
 * the state covers (an invocation that failed after a PATCH), the bytes in between are read and
 * hashed but not sent; when it holds less, or for sha512 blobs (no resumable state), the source
 * is read from byte 0 through the verifying stream and the bytes the registry holds discarded.
 *
 * Failures: a transient one keeps the session (the redelivered task, or a follow-up when this
 * invocation got a chunk through first, goes on from it); a permanent one (digest or size
 * mismatch, a refusal) cancels it. A session the registry no longer knows (expired, garbage
 * collected) is replaced by a fresh upload from byte 0.
 */
import { Readable } from 'node:stream';
import { DigestMismatchError, ErrorCodes, OciRelayError, RegistryError, SizeMismatchError } from '../errors.js';
import { parseDigest } from '../digest.js';
import { StreamSlicer, type Repository, type UploadSession } from '../oci/client.js';
import { sided } from '../engine/execute.js';
import { isRetryableTransfer } from '../oci/retry.js';
import { ResumableSha256, type Sha256State } from './resumable-hash.js';

export interface LargeBlobOptions {
  /** Bytes per PATCH. */
  chunkSize: number;
  /** ms since epoch after which no new chunk is started. */
  deadline: number;
  /** An earlier invocation's session (and digest state) to continue. */
  resumeFrom?: { location: string; hash?: Sha256State };
  now?: () => number;
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
}

export type LargeBlobResult =
  | { done: true; bytesSent: number; freshSession?: boolean }
  | {
      done: false;
      location: string;
      offset: number;
      /** The digest state at `offset` (sha256 blobs). */
      hash?: Sha256State;
      bytesSent: number;
      /** Why this invocation stopped: its time budget, or a transient failure after some progress. */
      reason: 'deadline' | 'error';
      error?: unknown;
      freshSession?: boolean;
    };

/** Bytes of the source, read in order, hashed as they are handed on. */
interface SourceReader {
  /** Where the next byte comes from. */
  readonly position: number;
  /** What went wrong reading the source, when something did (the upload only sees its body end). */
  readonly failure: unknown;
  next(length: number): Readable;
  /** Reads `length` bytes (hashing them) without handing them on. */
  skip(length: number): Promise<void>;
  /** The digest state at `position`, when resumable. */
  state(): Sha256State | undefined;
  /** Checks that the source ends here and hashed to its digest. */
  finish(): Promise<void>;
  destroy(): void;
}

export async function uploadLargeBlob(source: Repository, target: Repository, blob: { digest: string; size: number }, options: LargeBlobOptions): Promise<LargeBlobResult> {
  const now = options.now ?? Date.now;
  const withSignal = options.signal ? { signal: options.signal } : {};
  let session: UploadSession | undefined;
  let freshSession = false;
  if (options.resumeFrom) {
    session = await sided('target', () => target.uploadStatus({ location: new URL(options.resumeFrom?.location as string), minChunkLength: undefined, offset: 0 })).catch((err: unknown) => {
      // Expired or collected: the registry no longer knows the session. Start afresh.
      if (err instanceof RegistryError && (err.status === 404 || err.notFound)) return undefined;
      throw err;
    });
    if (session && session.offset > blob.size) {
      await target.cancelUpload(session);
      session = undefined;
    }
    freshSession = !session;
  }
  if (!session) {
    const started = await sided('target', () => target.startUpload());
    if (started.mounted) return { done: true, bytesSent: 0 };
    session = started.session;
  }
  const chunkSize = Math.max(options.chunkSize, session.minChunkLength ?? 0);
  const hash = freshSession ? undefined : options.resumeFrom?.hash;
  const reader = await openReader(source, blob, session.offset, hash, options.signal);
  const startOffset = session.offset;
  let bytesSent = 0;
  let good = { offset: session.offset, hash: undefined as Sha256State | undefined };
  try {
    // Bytes the registry already has: read and hashed, not sent again.
    if (reader.position < session.offset) await reader.skip(session.offset - reader.position);
    good = { offset: session.offset, hash: reader.state() };
    let slowest = 0;
    while (session.offset < blob.size) {
      const remaining = options.deadline - now();
      if (bytesSent > 0 && remaining < slowest * 2) {
        return { done: false, location: session.location.href, offset: good.offset, ...(good.hash ? { hash: good.hash } : {}), bytesSent, reason: 'deadline', ...(freshSession ? { freshSession } : {}) };
      }
      const length = Math.min(chunkSize, blob.size - session.offset);
      const started = now();
      const current: UploadSession = session;
      session = await sided('target', () => target.uploadChunk(current, reader.next(length), length, withSignal));
      if (session.offset !== reader.position) {
        throw new OciRelayError(ErrorCodes.Registry, `upload session of ${blob.digest} holds ${session.offset} bytes after a chunk ending at ${reader.position}`, { side: 'target', retryable: true });
      }
      good = { offset: session.offset, hash: reader.state() };
      slowest = Math.max(slowest, now() - started);
      bytesSent += length;
      options.onProgress?.(bytesSent);
    }
    await reader.finish();
    const last: UploadSession = session;
    await sided('target', () => target.completeUpload(last, blob.digest, undefined, withSignal));
    return { done: true, bytesSent, ...(freshSession ? { freshSession } : {}) };
  } catch (caught) {
    const err = reader.failure ?? caught;
    if (!transient(err)) {
      // Nothing will go on from this session: free it (best effort) and fail for good.
      await target.cancelUpload(session);
      throw err;
    }
    if (good.offset > startOffset) {
      // Progress was made: hand the rest over from the last chunk the registry took.
      return { done: false, location: session.location.href, offset: good.offset, ...(good.hash ? { hash: good.hash } : {}), bytesSent, reason: 'error', error: err, ...(freshSession ? { freshSession } : {}) };
    }
    if (!options.resumeFrom || freshSession) {
      // A session nothing refers to yet: the redelivered task starts a new one.
      await target.cancelUpload(session);
    }
    throw asRetryable(err);
  } finally {
    reader.destroy();
  }
}

/**
 * Worth going on from the session later: what any transfer retries (isRetryableTransfer), and at
 * this level also a 5xx, and a session gone or moved on (404, 416: the next task asks where it
 * stands, or starts afresh). Anything that is not ocirelay's own error (a socket error, a bug) is
 * retried as the handler retries it, within maxReceiveCount.
 */
function transient(err: unknown): boolean {
  if (err instanceof RegistryError && (err.status >= 500 || err.status === 404 || err.status === 416)) return true;
  return !(err instanceof OciRelayError) || isRetryableTransfer(err);
}

/** What the handler should see: a retryable error (it redelivers the task), whatever the status. */
function asRetryable(err: unknown): unknown {
  if (err instanceof RegistryError && !err.retryable && (err.status === 404 || err.status === 416)) {
    return new OciRelayError(ErrorCodes.Registry, `${err.message} (the upload session is gone or moved on; the task goes on from the registry's word)`, { cause: err, side: 'target', retryable: true });
  }
  return err;
}

/**
 * A reader from `offset`: with a sha256 state that has not passed it, a Range GET from where the
 * state stands; otherwise the whole blob through the verifying stream.
 */
async function openReader(source: Repository, blob: { digest: string; size: number }, offset: number, hash: Sha256State | undefined, signal: AbortSignal | undefined): Promise<SourceReader> {
  const { algorithm } = parseDigest(blob.digest);
  if (algorithm === 'sha256') {
    let hasher = new ResumableSha256();
    if (hash) {
      try {
        const restored = ResumableSha256.restore(hash);
        if (restored.bytes <= offset) hasher = restored;
      } catch {
        // An unreadable state: hash from byte 0.
      }
    }
    return rangeReader(source, blob, hasher, signal);
  }
  const verified = await sided('source', () => source.fetchBlob(blob, signal ? { signal } : {}));
  const slicer = new StreamSlicer(verified);
  let position = 0;
  let failure: unknown;
  const counted = (length: number): Readable =>
    Readable.from(
      (async function* () {
        try {
          for await (const chunk of slicer.next(length)) {
            position += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
        } catch (err) {
          failure ??= err;
          throw err;
        }
      })(),
      { objectMode: false },
    );
  return {
    get position() {
      return position;
    },
    get failure() {
      return failure;
    },
    next: counted,
    skip: async (length) => {
      for await (const _chunk of counted(length)) {
        // discarded: already in the upload session
      }
    },
    state: () => undefined,
    finish: () => slicer.assertEnd(blob),
    destroy: () => verified.destroy(),
  };
}

/** Reads the source from the hasher's position with Range, resuming a broken body where it broke. */
function rangeReader(source: Repository, blob: { digest: string; size: number }, hasher: ResumableSha256, signal: AbortSignal | undefined): SourceReader {
  const start = hasher.bytes;
  let position = start;
  // Stopping (`destroy`) aborts the download under way, whichever resume it is in.
  const stop = new AbortController();
  const reading = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
  const chunks = async function* (): AsyncGenerator<Buffer> {
    try {
      yield* source.blobChunks(blob, { from: start, signal: reading });
    } catch (err) {
      if (err instanceof OciRelayError) err.attachSide('source');
      throw err;
    }
  };
  const slicer = new StreamSlicer(Readable.from(chunks(), { objectMode: false }));
  let failure: unknown;
  const take = (length: number): AsyncGenerator<Buffer> =>
    (async function* () {
      let taken = 0;
      try {
        for await (const raw of slicer.next(length)) {
          const chunk = raw as Buffer;
          hasher.update(chunk);
          position += chunk.length;
          taken += chunk.length;
          yield chunk;
        }
        if (taken < length) throw new SizeMismatchError(blob.size, position, { side: 'source', operation: 'GET blob' });
      } catch (err) {
        failure ??= err;
        throw err;
      }
    })();
  return {
    get position() {
      return position;
    },
    get failure() {
      return failure;
    },
    next: (length) => Readable.from(take(length), { objectMode: false }),
    skip: async (length) => {
      for await (const _chunk of take(length)) {
        // hashed, not sent: the registry holds these bytes already
      }
    },
    state: () => hasher.save(),
    finish: async () => {
      await slicer.assertEnd(blob);
      if (position !== blob.size) throw new SizeMismatchError(blob.size, position, { side: 'source', operation: 'GET blob' });
      const actual = hasher.digest();
      if (actual !== blob.digest) throw new DigestMismatchError(blob.digest, actual, { side: 'source', operation: 'GET blob' });
    },
    destroy: () => stop.abort(),
  };
}
