/**
 * Content digests (OCI image spec, "Digests"): `algorithm:encoded`, where ocirelay accepts the two
 * registered algorithms, sha256 (64 lowercase hex) and sha512 (128 lowercase hex).
 *
 * `VerifyingStream` is the only way bytes flow from a registry into anything that commits them:
 * it hashes as the bytes pass and fails *before* the last byte leaves it when the digest or the
 * size disagree, so that a consumer that commits on end-of-stream (an upload with a known
 * Content-Length, a tar entry) never sees a complete body of the wrong content.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DigestMismatchError, InvalidDigestError, SizeMismatchError, type ErrorContext } from './errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

const ENCODED_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  encoded: string;
}

const DIGEST_SHAPE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** Parses and validates a digest; throws InvalidDigestError naming what is wrong. */
export function parseDigest(digest: string, context: ErrorContext = {}): ParsedDigest {
  const match = DIGEST_SHAPE.exec(digest);
  if (!match) throw new InvalidDigestError(digest, 'expected algorithm:hex', context);
  const algorithm = match[1] as string;
  const encoded = match[2] as string;
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new InvalidDigestError(digest, `unsupported algorithm ${JSON.stringify(algorithm)} (sha256 and sha512 are supported)`, context);
  }
  const length = ENCODED_LENGTH[algorithm];
  if (encoded.length !== length || !/^[a-f0-9]+$/.test(encoded)) {
    throw new InvalidDigestError(digest, `${algorithm} needs ${length} lowercase hex characters`, context);
  }
  return { algorithm, encoded };
}

export function isDigest(value: string): boolean {
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

/** The digest of a byte string, sha256 unless another algorithm is asked for. */
export function digestOf(bytes: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** Checks bytes held in memory (manifests) against their digest and, when given, size. */
export function verifyBytes(bytes: Uint8Array, expected: { digest: string; size?: number }, context: ErrorContext = {}): void {
  if (expected.size !== undefined && bytes.byteLength !== expected.size) {
    throw new SizeMismatchError(expected.size, bytes.byteLength, context);
  }
  const { algorithm } = parseDigest(expected.digest, context);
  const actual = digestOf(bytes, algorithm);
  if (actual !== expected.digest) throw new DigestMismatchError(expected.digest, actual, context);
}

export interface VerifyingStreamOptions {
  digest: string;
  /** The expected size in bytes; when known, overlong content fails at once. */
  size?: number;
  /** Operation and URL for the errors it raises. */
  context?: ErrorContext;
}

/**
 * A pass-through that verifies digest and size. With a known size, the chunk that completes the
 * content is held until the hash is checked; without one, the last chunk is held until the end.
 * Either way the consumer receives the final bytes only from verified content.
 */
export class VerifyingStream extends Transform {
  readonly expectedDigest: string;
  readonly expectedSize: number | undefined;
  private readonly hash: Hash;
  private readonly context: ErrorContext;
  private received = 0;
  private held: Buffer | undefined;
  private verified = false;

  constructor(options: VerifyingStreamOptions) {
    super({ highWaterMark: 1 << 20 });
    const { algorithm } = parseDigest(options.digest, options.context);
    this.expectedDigest = options.digest;
    this.expectedSize = options.size;
    this.context = options.context ?? {};
    this.hash = createHash(algorithm);
  }

  /** Bytes seen so far. */
  get bytes(): number {
    return this.received;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length === 0) {
      callback();
      return;
    }
    this.received += chunk.length;
    const size = this.expectedSize;
    // Overlong content fails before hashing: the hash may already be final (exact size reached).
    if (size !== undefined && this.received > size) {
      callback(new SizeMismatchError(size, this.received, { ...this.context, atLeast: true }));
      return;
    }
    this.hash.update(chunk);
    if (size !== undefined) {
      if (this.received === size) {
        const failure = this.check();
        if (failure) {
          callback(failure);
          return;
        }
      }
      callback(null, chunk);
      return;
    }
    const previous = this.held;
    this.held = chunk;
    callback(null, previous);
  }

  override _flush(callback: TransformCallback): void {
    if (this.expectedSize !== undefined && this.received < this.expectedSize) {
      callback(new SizeMismatchError(this.expectedSize, this.received, this.context));
      return;
    }
    if (!this.verified) {
      const failure = this.check();
      if (failure) {
        callback(failure);
        return;
      }
    }
    callback(null, this.held);
  }

  private check(): Error | undefined {
    this.verified = true;
    const actual = `${this.expectedDigest.slice(0, this.expectedDigest.indexOf(':'))}:${this.hash.digest('hex')}`;
    return actual === this.expectedDigest ? undefined : new DigestMismatchError(this.expectedDigest, actual, this.context);
  }
}

/** A pass-through that computes the digest of whatever flows (for archives written to a sink). */
export class HashingStream extends Transform {
  private readonly hash: Hash;
  private readonly algorithm: DigestAlgorithm;
  bytes = 0;
  digest: string | undefined;

  constructor(algorithm: DigestAlgorithm = 'sha256') {
    super({ highWaterMark: 1 << 20 });
    this.algorithm = algorithm;
    this.hash = createHash(algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.digest = `${this.algorithm}:${this.hash.digest('hex')}`;
    callback();
  }
}
