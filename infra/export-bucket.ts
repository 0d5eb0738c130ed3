import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export interface ExportBucketProps {
  /** Days after which an exported archive is deleted. */
  readonly retentionDays: number;
  /** @default - S3-managed keys (SSE-S3) */
  readonly encryptionKey?: kms.IKey;
  readonly removalPolicy: RemovalPolicy;
  /** @default - generated */
  readonly bucketName?: string;
}

/**
 * Where exported layer archives land: public access blocked, encrypted (SSE-S3, or SSE-KMS with
 * the given key and S3 bucket keys), TLS-only bucket policy, owner-enforced object ownership (no
 * ACLs), archives expired after `retentionDays`, incomplete multipart uploads aborted after a day
 * (an export that died mid-stream leaves no billed parts behind).
 */
export class ExportBucket extends Construct {
  readonly bucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: ExportBucketProps) {
    super(scope, id);
    if (!Number.isInteger(props.retentionDays) || props.retentionDays < 1) {
      throw new Error(`${this.node.path}: exportRetentionDays must be a whole number of days, at least 1 (got ${props.retentionDays})`);
    }
    this.bucket = new s3.Bucket(this, 'Bucket', {
      ...(props.bucketName ? { bucketName: props.bucketName } : {}),
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      ...(props.encryptionKey
        ? { encryption: s3.BucketEncryption.KMS, encryptionKey: props.encryptionKey, bucketKeyEnabled: true }
        : { encryption: s3.BucketEncryption.S3_MANAGED }),
      lifecycleRules: [
        {
          id: 'expire-exports',
          enabled: true,
          expiration: Duration.days(props.retentionDays),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
      removalPolicy: props.removalPolicy,
    });
  }
}
