/**
 * ArchiveStore on S3: a multipart upload through @aws-sdk/lib-storage, streamed, never spooled.
 *
 * - Part size from the known archive size: the smallest whole MiB that fits the archive in
 *   10,000 parts (S3's part limit), never below 5 MiB (S3's minimum), so archives up to the
 *   5 TiB object limit fit. Parts in flight shrink as parts grow, to bound memory.
 * - Object metadata records the source reference, digest, platform and format.
 * - Server-side encryption: SSE-S3 (AES256) or SSE-KMS with a key.
 * - Standard AWS configuration: region and credentials from the default chain, endpoints from
 *   AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (read by the SDK itself) or an explicit option.
 * - With a custom endpoint (S3-compatible servers) request checksums are computed only when
 *   required: the SDK's default would frame streamed bodies as aws-chunked, which such servers
 *   store verbatim.
 * The SDK is imported on first use, so that commands that never touch S3 do not pay for it.
 */
import { PassThrough } from 'node:stream';
import { ErrorCodes, OciRelayError } from '../errors.js';
import type { ArchiveInfo, ArchiveStore, ArchiveWriter } from '../ports/archive-store.js';
import type { S3Client } from '@aws-sdk/client-s3';

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
   * Memory budget for parts in flight (at least one part is always allowed, at most four).
   * Default 10 MiB: two parts of the 5 MiB minimum. lib-storage holds each part in flight as one
   * buffer and copies the next one together from the stream's chunks, so every part allowed costs
   * about twice its size at peak; with four (64 MiB) a 1 GiB export peaked near 190 MiB RSS, over
   * the 150 MiB bound of issue 7, for no gain against a local S3 and little against AWS.
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
    const { Upload } = await import('@aws-sdk/lib-storage');
    const partSize = choosePartSize(info.size);
    const queueSize = Math.max(1, Math.min(4, Math.floor((this.options.bufferBudget ?? 10 * MiB) / partSize)));
    const body = new PassThrough({ highWaterMark: 1 << 20 });
    const metadata = Object.fromEntries(Object.entries(info.metadata).map(([k, v]) => [k.toLowerCase().replace(/[^a-z0-9-]/g, '-'), metadataValue(v)]));
    const upload = new Upload({
      client,
      partSize,
      queueSize,
      leavePartsOnError: false,
      params: {
        Bucket: bucket,
        Key: key,
        Body: body,
        ContentType: info.contentType,
        Metadata: metadata,
        ...(this.options.serverSideEncryption ? { ServerSideEncryption: this.options.serverSideEncryption } : {}),
        ...(this.options.kmsKeyId ? { SSEKMSKeyId: this.options.kmsKeyId } : {}),
      },
    });
    const done = upload.done();
    let state: 'open' | 'committed' | 'aborted' = 'open';
    // A failure surfaces through commit (or abort); keep it from being reported as unhandled meanwhile.
    done.catch(() => undefined);
    return {
      stream: body,
      commit: async () => {
        try {
          await done;
        } catch (err) {
          throw new OciRelayError(ErrorCodes.Network, `uploading s3://${bucket}/${key} failed: ${(err as Error).name}: ${(err as Error).message}`, { cause: err, operation: 'S3 upload', retryable: true });
        }
        state = 'committed';
        return { location: `s3://${bucket}/${key}` };
      },
      abort: async (reason?: unknown) => {
        if (state !== 'open') return;
        state = 'aborted';
        // Destroying the body with an error makes lib-storage stop and send AbortMultipartUpload
        // (leavePartsOnError: false) before `done` settles; ending it would complete a partial object.
        body.destroy(reason instanceof Error ? reason : new Error('export aborted'));
        await done.catch(() => undefined);
      },
    };
  }
}
