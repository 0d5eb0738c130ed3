/**
 * ArchiveStore on S3: the archive streams into a multipart upload, never spooled to disk.
 *
 * - Part size from the known archive size: the smallest whole MiB that fits the archive in
 *   10,000 parts (S3's part limit), never below 5 MiB (S3's minimum), so archives up to the
 *   5 TiB object limit fit. An archive smaller than one part is sent with one PutObject.
 * - Memory is a fixed pool of part buffers, allocated once per export and reused: the stream's
 *   chunks are copied into the part being filled, full parts upload while the next one fills,
 *   and writing waits (backpressure) when every buffer is in flight. A part's bytes stay in its
 *   buffer until S3 accepted it, so the SDK can retry a part without re-reading the source.
 *   (@aws-sdk/lib-storage, used before, concatenated every part from the stream's chunks into a
 *   fresh buffer: two copies of each part became garbage, and a 1 GiB export peaked at ~150 MiB
 *   RSS, the bound of issue 7, against ~100 MiB for the same export to a file.)
 * - Nothing appears under the key before `commit` (CompleteMultipartUpload, or the PutObject of
 *   a small archive); `abort` sends AbortMultipartUpload. A bucket lifecycle rule should still
 *   expire incomplete uploads (a killed process aborts nothing; infra/ sets one on its bucket).
 * - With the SDK's default checksum behaviour (AWS) every part carries a CRC32 that S3 checks and
 *   the completion lists, as lib-storage did; with a custom endpoint (S3-compatible servers)
 *   checksums are computed only when required: streamed aws-chunked framing is stored verbatim
 *   by some of them.
 * - Object metadata records the source reference, digest, platform and format.
 * - Server-side encryption: SSE-S3 (AES256) or SSE-KMS with a key.
 * - Standard AWS configuration: region and credentials from the default chain, endpoints from
 *   AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (read by the SDK itself) or an explicit option.
 * The SDK is imported on first use, so that commands that never touch S3 do not pay for it.
 */
import { Writable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { ErrorCodes, OciRelayError } from '../errors.js';
import type { ArchiveInfo, ArchiveStore, ArchiveWriter } from '../ports/archive-store.js';
import type { CompletedPart, S3Client } from '@aws-sdk/client-s3';

export const MiB = 1024 * 1024;
export const S3_MIN_PART = 5 * MiB;
export const S3_MAX_PARTS = 10_000;
export const S3_MAX_OBJECT = 5 * 1024 * 1024 * MiB; // 5 TiB

export interface S3ArchiveStoreOptions {
  /** A ready client (the Lambda reuses one across invocations). */
  client?: S3Client;
  region?: string;
  endpoint?: string;
  forcePathStyle?: boolean;
  /** `AES256` (SSE-S3) or `aws:kms` (SSE-KMS, with `kmsKeyId` or the account's default key). */
  serverSideEncryption?: 'AES256' | 'aws:kms';
  kmsKeyId?: string;
  /**
   * Memory for parts in flight: `floor(bufferBudget / partSize)` parts upload at once, at least
   * one and at most four, plus the one being filled. Default 10 MiB: two parts of the 5 MiB
   * minimum (15 MiB of buffers in all), which keeps a local S3 busy; more helps only over long
   * round trips.
   */
  bufferBudget?: number;
}

export function parseS3Url(url: string): { bucket: string; key: string } {
  const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(url);
  if (!match) throw new OciRelayError(ErrorCodes.Usage, `${JSON.stringify(url)} is not s3://bucket/key`);
  const bucket = match[1] as string;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new OciRelayError(ErrorCodes.Usage, `${JSON.stringify(bucket)} is not a valid S3 bucket name`);
  return { bucket, key: match[2] as string };
}

/** The part size for an archive of `size` bytes (unknown: the minimum). */
export function choosePartSize(size: number | undefined): number {
  if (!size || size <= S3_MIN_PART * S3_MAX_PARTS) return S3_MIN_PART;
  if (size > S3_MAX_OBJECT) throw new OciRelayError(ErrorCodes.Unsupported, `an archive of ${size} bytes exceeds the S3 object limit of ${S3_MAX_OBJECT} bytes`);
  return Math.ceil(size / S3_MAX_PARTS / MiB) * MiB;
}

/** A CRC32 as S3 wants it: the four bytes big-endian, in base64. */
export function crc32Base64(bytes: Uint8Array): string {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(crc32(bytes));
  return out.toString('base64');
}

/** S3 metadata values travel as HTTP headers: printable ASCII only. */
function metadataValue(value: string): string {
  return value.replace(/[^\x20-\x7e]/g, '?').slice(0, 1024);
}

export class S3ArchiveStore implements ArchiveStore {
  private client: S3Client | undefined;

  constructor(private readonly options: S3ArchiveStoreOptions = {}) {
    this.client = options.client;
  }

  private async getClient(): Promise<S3Client> {
    if (this.client) return this.client;
    const { S3Client } = await import('@aws-sdk/client-s3');
    const endpoint = this.options.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    this.client = new S3Client({
      ...(this.options.region ? { region: this.options.region } : {}),
      ...(this.options.endpoint ? { endpoint: this.options.endpoint } : {}),
      ...(this.options.forcePathStyle !== undefined ? { forcePathStyle: this.options.forcePathStyle } : endpoint ? { forcePathStyle: true } : {}),
      ...(endpoint && !process.env.AWS_REQUEST_CHECKSUM_CALCULATION ? { requestChecksumCalculation: 'WHEN_REQUIRED' as const, responseChecksumValidation: 'WHEN_REQUIRED' as const } : {}),
    });
    return this.client;
  }

  async create(destination: string, info: ArchiveInfo): Promise<ArchiveWriter> {
    const { bucket, key } = parseS3Url(destination);
    const client = await this.getClient();
    const sdk = await import('@aws-sdk/client-s3');
    const partSize = choosePartSize(info.size);
    const inFlight = Math.max(1, Math.min(4, Math.floor((this.options.bufferBudget ?? 10 * MiB) / partSize)));
    const withChecksums = (await client.config.requestChecksumCalculation()) === 'WHEN_SUPPORTED';
    const object = {
      Bucket: bucket,
      Key: key,
      ContentType: info.contentType,
      Metadata: Object.fromEntries(Object.entries(info.metadata).map(([k, v]) => [k.toLowerCase().replace(/[^a-z0-9-]/g, '-'), metadataValue(v)])),
      ...(this.options.serverSideEncryption ? { ServerSideEncryption: this.options.serverSideEncryption } : {}),
      ...(this.options.kmsKeyId ? { SSEKMSKeyId: this.options.kmsKeyId } : {}),
    };
    const where = `s3://${bucket}/${key}`;
    // Aborting the export cancels the requests in flight (a part and its SDK retries), so that
    // AbortMultipartUpload need not wait for them.
    const cancel = new AbortController();
    const sending = { abortSignal: cancel.signal };
    const failed = (operation: string, err: unknown): OciRelayError =>
      err instanceof OciRelayError ? err : new OciRelayError(ErrorCodes.Network, `${operation} for ${where} failed: ${(err as Error).name}: ${(err as Error).message}`, { cause: err, operation: `S3 ${operation}`, retryable: true });

    const upload = new MultipartUpload({
      partSize,
      inFlight,
      start: async () => {
        const created = await client.send(new sdk.CreateMultipartUploadCommand({ ...object, ...(withChecksums ? { ChecksumAlgorithm: 'CRC32' as const } : {}) }), sending).catch((err: unknown) => {
          throw failed('CreateMultipartUpload', err);
        });
        if (!created.UploadId) throw new OciRelayError(ErrorCodes.Network, `CreateMultipartUpload for ${where} returned no upload id`, { operation: 'S3 CreateMultipartUpload' });
        return created.UploadId;
      },
      part: async (uploadId, partNumber, body) => {
        // The part's CRC32, computed here (not left to the SDK, nor taken from S3's answer): S3
        // checks it against the bytes, and the completion must list it for an upload created
        // with a checksum algorithm.
        const checksum = withChecksums ? { ChecksumCRC32: crc32Base64(body) } : {};
        const sent = await client.send(new sdk.UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length, ...checksum }), sending).catch((err: unknown) => {
          throw failed(`UploadPart ${partNumber}`, err);
        });
        return { PartNumber: partNumber, ETag: sent.ETag, ...checksum };
      },
    });

    let state: 'open' | 'committed' | 'aborted' = 'open';
    return {
      stream: upload,
      commit: async () => {
        const ended = await upload.ended;
        if (ended.kind === 'single') {
          await client.send(new sdk.PutObjectCommand({ ...object, Body: ended.body, ContentLength: ended.body.length })).catch((err: unknown) => {
            throw failed('PutObject', err);
          });
        } else {
          await client.send(new sdk.CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: ended.uploadId, MultipartUpload: { Parts: ended.parts } })).catch((err: unknown) => {
            throw failed('CompleteMultipartUpload', err);
          });
        }
        state = 'committed';
        return { location: where };
      },
      abort: async (reason?: unknown) => {
        if (state !== 'open') return;
        state = 'aborted';
        upload.destroy(reason instanceof Error ? reason : new Error('export aborted'));
        cancel.abort();
        // A part still uploading could land after AbortMultipartUpload and be billed until the
        // lifecycle rule removes it (S3 API reference, AbortMultipartUpload): its request is
        // cancelled above, and settles before the abort is sent.
        await upload.idle();
        const uploadId = await upload.uploadId;
        if (uploadId) await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
      },
    };
  }
}

type Ended = { kind: 'single'; body: Buffer } | { kind: 'multipart'; uploadId: string; parts: CompletedPart[] };

export interface MultipartUploadOptions {
  partSize: number;
  /** Parts uploading at once. */
  inFlight: number;
  /** Default S3_MAX_PARTS (10,000). */
  maxParts?: number;
  /** Opens the multipart upload (when the first part is full: a small archive never opens one). */
  start(): Promise<string>;
  part(uploadId: string, partNumber: number, body: Buffer): Promise<CompletedPart>;
}

/**
 * The writable side of a multipart upload: copies chunks into pooled part buffers and uploads
 * each full part while the next one fills. `ended` resolves once every byte is in S3 (or, for
 * an archive smaller than one part, with its bytes), for the store's commit to finish.
 */
export class MultipartUpload extends Writable {
  /** Resolves with the upload id once opened (undefined if never opened, or failed to open). */
  readonly uploadId: Promise<string | undefined>;
  readonly ended: Promise<Ended>;
  private resolveUploadId!: (id: string | undefined) => void;
  private resolveEnded!: (ended: Ended) => void;
  private rejectEnded!: (err: Error) => void;
  private opening: Promise<string> | undefined;
  private readonly free: Buffer[] = [];
  private allocated = 0;
  private filling: Buffer | undefined;
  private filled = 0;
  private nextPart = 1;
  /** Full parts waiting for an upload slot. */
  private readonly ready: { partNumber: number; buffer: Buffer; body: Buffer }[] = [];
  private readonly uploading = new Set<Promise<void>>();
  private readonly parts: CompletedPart[] = [];
  private failure: Error | undefined;
  /** A write waiting for a free buffer. */
  private waiting: (() => void) | undefined;

  constructor(private readonly upload: MultipartUploadOptions) {
    // The writable buffer stays small: the parts are the buffer.
    super({ highWaterMark: 64 * 1024 });
    this.uploadId = new Promise((resolve) => (this.resolveUploadId = resolve));
    this.ended = new Promise((resolve, reject) => {
      this.resolveEnded = resolve;
      this.rejectEnded = reject;
    });
    this.ended.catch(() => undefined); // surfaced through commit
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.fill(chunk, 0, callback);
  }

  private fill(chunk: Buffer, offset: number, callback: (err?: Error | null) => void): void {
    while (offset < chunk.length) {
      if (this.failure) return callback(this.failure);
      // A full part goes when more bytes come: an archive of exactly one part is one PutObject.
      if (this.filling && this.filled === this.filling.length) this.send();
      if (!this.filling) {
        const buffer = this.take();
        if (!buffer) {
          this.waiting = () => this.fill(chunk, offset, callback);
          return;
        }
        this.filling = buffer;
        this.filled = 0;
      }
      const copied = chunk.copy(this.filling, this.filled, offset);
      offset += copied;
      this.filled += copied;
    }
    callback();
  }

  /** A free part buffer, allocated on first need up to the pool's size. */
  private take(): Buffer | undefined {
    const reused = this.free.pop();
    if (reused) return reused;
    if (this.allocated > this.upload.inFlight) return undefined;
    this.allocated += 1;
    return Buffer.allocUnsafeSlow(this.upload.partSize);
  }

  /** Queues the filled part; it uploads as soon as fewer than `inFlight` parts are uploading. */
  private send(): void {
    const maxParts = this.upload.maxParts ?? S3_MAX_PARTS;
    if (this.nextPart > maxParts) {
      // Only an archive bigger than its announced size gets here (choosePartSize fits the size in
      // 10,000 parts): say so, rather than let S3 refuse part 10,001 with InvalidArgument.
      this.failure ??= new OciRelayError(ErrorCodes.SizeMismatch, `the archive outgrew S3's ${maxParts} parts of ${this.upload.partSize} bytes (more bytes than its announced size)`, { operation: 'S3 UploadPart' });
      this.filling = undefined;
      return;
    }
    const buffer = this.filling as Buffer;
    this.ready.push({ partNumber: this.nextPart++, buffer, body: buffer.subarray(0, this.filled) });
    this.filling = undefined;
    this.opening ??= this.upload.start().then(
      (id) => (this.resolveUploadId(id), id),
      (err: unknown) => {
        this.resolveUploadId(undefined);
        throw err;
      },
    );
    this.pump();
  }

  private pump(): void {
    while (this.uploading.size < this.upload.inFlight) {
      const next = this.ready.shift();
      if (!next) return;
      const task = (this.opening as Promise<string>)
        .then((id) => (this.failure ? undefined : this.upload.part(id, next.partNumber, next.body)))
        .then(
          (part) => {
            if (part) this.parts.push(part);
          },
          (err: unknown) => {
            this.failure ??= err as Error;
          },
        )
        .finally(() => {
          this.uploading.delete(task);
          this.free.push(next.buffer);
          this.pump();
          const waiting = this.waiting;
          this.waiting = undefined;
          waiting?.();
        });
      this.uploading.add(task);
    }
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.opening) {
      // One part at most: no multipart upload at all.
      this.resolveUploadId(undefined);
      this.resolveEnded({ kind: 'single', body: this.filling ? this.filling.subarray(0, this.filled) : Buffer.alloc(0) });
      return callback();
    }
    if (this.filling && this.filled > 0) this.send();
    void this.idle().then(
      () => {
        if (this.failure) {
          this.rejectEnded(this.failure);
          return callback(this.failure);
        }
        this.parts.sort((a, b) => (a.PartNumber as number) - (b.PartNumber as number));
        void this.opening?.then((uploadId) => {
          this.resolveEnded({ kind: 'multipart', uploadId, parts: this.parts });
          callback();
        });
      },
    );
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // After a clean finish (autoDestroy) there is nothing to stop.
    if (err || !this.writableFinished) {
      this.failure ??= err ?? new Error('the upload was destroyed before the archive ended');
      this.rejectEnded(this.failure);
    }
    if (!this.opening) this.resolveUploadId(undefined);
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
    // Parts in flight finish (or fail) on their own; the store's abort waits for them (idle).
    callback(err);
  }

  /** Resolves when no part is uploading (every task settles: failures are kept in `failure`). */
  async idle(): Promise<void> {
    for (;;) {
      this.pump();
      if (this.uploading.size === 0) return;
      await Promise.all(this.uploading);
    }
  }
}
