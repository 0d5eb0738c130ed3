import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { OciReplicator, type OciReplicatorProps } from './replicator.js';

export interface OciRelayStackProps extends StackProps {
  readonly replicator: OciReplicatorProps;
}

/** The deployable stack: one OciReplicator and the outputs an operator needs. */
export class OciRelayStack extends Stack {
  readonly replicator: OciReplicator;

  constructor(scope: Construct, id: string, props: OciRelayStackProps) {
    super(scope, id, props);
    this.replicator = new OciReplicator(this, 'Replicator', props.replicator);

    new CfnOutput(this, 'WebhookUrl', {
      description: 'ingress function URL: point registry push webhooks here',
      value: this.replicator.functionUrl.url,
    });
    new CfnOutput(this, 'ExportBucketName', { description: 'where exported archives land', value: this.replicator.exportBucket.bucketName });
    new CfnOutput(this, 'WorkQueueUrl', { description: 'image, blob and commit tasks', value: this.replicator.workQueue.queue.queueUrl });
    new CfnOutput(this, 'ExportQueueUrl', { description: 'export tasks', value: this.replicator.exportQueue.queue.queueUrl });
    new CfnOutput(this, 'WorkDeadLetterQueueUrl', { value: this.replicator.workQueue.deadLetters.queue.queueUrl });
    new CfnOutput(this, 'ExportDeadLetterQueueUrl', { value: this.replicator.exportQueue.deadLetters.queue.queueUrl });
    new CfnOutput(this, 'FailedRequestsQueueUrl', {
      description: 'fan-out invocations and EventBridge events that failed after their retries',
      value: this.replicator.failedRequests.queue.queueUrl,
    });
  }
}
