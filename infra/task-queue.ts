import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** SQS's hard limits that the constructs check at synth. */
export const SQS_MAX_VISIBILITY_TIMEOUT = Duration.hours(12);
export const SQS_MAX_RETENTION = Duration.days(14);
/** The classic SQS message limit, and the one Lambda's asynchronous invoke payloads have. */
export const SQS_CLASSIC_MAX_MESSAGE_BYTES = 262_144;

/** How long a dead letter is kept: the longest SQS allows, to leave time to look at it. */
export const DEAD_LETTER_RETENTION = SQS_MAX_RETENTION;

export interface DeadLetterQueueProps {
  /** Alarm description: what ends up in this queue and what to do about it. */
  readonly purpose: string;
  readonly maxMessageSizeBytes: number;
  readonly alarmTopic?: sns.ITopic;
}

/**
 * A terminal queue for what could not be processed (a task queue's poison messages, failed
 * asynchronous invocations, undeliverable EventBridge events): SQS-managed encryption, TLS only,
 * kept 14 days, and an alarm as soon as one message is in it.
 */
export class DeadLetterQueue extends Construct {
  readonly queue: sqs.Queue;
  readonly depthAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: DeadLetterQueueProps) {
    super(scope, id);
    this.queue = new sqs.Queue(this, 'Queue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: DEAD_LETTER_RETENTION,
      maxMessageSizeBytes: props.maxMessageSizeBytes,
    });
    this.depthAlarm = new cloudwatch.Alarm(this, 'DepthAlarm', {
      alarmDescription: `ocirelay: messages in a dead-letter queue (${props.purpose})`,
      metric: this.queue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(5) }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (props.alarmTopic) this.depthAlarm.addAlarmAction(new actions.SnsAction(props.alarmTopic));
  }
}

export interface TaskQueueProps {
  /** What the queue carries, for alarm descriptions. */
  readonly purpose: string;
  /**
   * The consuming function's timeout: the visibility timeout is six times that (AWS's guidance
   * for Lambda event sources, so that retries of a throttled batch do not make a message visible
   * while it is still being worked on), plus the batching window.
   */
  readonly consumerTimeout: Duration;
  readonly maxBatchingWindow?: Duration;
  /** Receives before a message goes to the dead-letter queue. */
  readonly maxReceiveCount: number;
  readonly maxMessageSizeBytes: number;
  /** @default Duration.days(4) (the SQS default, set explicitly) */
  readonly retentionPeriod?: Duration;
  /** Alarm when the oldest message has waited this long. */
  readonly oldestMessageAgeAlarm: Duration;
  readonly alarmTopic?: sns.ITopic;
}

/** The factor between a consuming Lambda function's timeout and its queue's visibility timeout. */
export const VISIBILITY_TIMEOUT_FACTOR = 6;

/**
 * A task queue: the queue, its dead-letter queue (redrive after `maxReceiveCount` receives),
 * SQS-managed encryption and TLS only on both, and alarms on the dead-letter queue's depth and on
 * the age of the oldest message.
 */
export class TaskQueue extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetters: DeadLetterQueue;
  readonly oldestMessageAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: TaskQueueProps) {
    super(scope, id);
    const visibilityTimeout = Duration.seconds(
      VISIBILITY_TIMEOUT_FACTOR * props.consumerTimeout.toSeconds() + (props.maxBatchingWindow?.toSeconds() ?? 0),
    );
    if (visibilityTimeout.toSeconds() > SQS_MAX_VISIBILITY_TIMEOUT.toSeconds()) {
      throw new Error(
        `${this.node.path}: visibility timeout ${visibilityTimeout.toSeconds()} s (6 x the consumer's timeout) exceeds SQS's 12 hours`,
      );
    }
    if (!Number.isInteger(props.maxReceiveCount) || props.maxReceiveCount < 1 || props.maxReceiveCount > 1000) {
      throw new Error(`${this.node.path}: maxReceiveCount must be an integer from 1 to 1000 (got ${props.maxReceiveCount})`);
    }

    this.deadLetters = new DeadLetterQueue(this, 'DeadLetters', {
      purpose: `${props.purpose}, received ${props.maxReceiveCount} times without success`,
      maxMessageSizeBytes: props.maxMessageSizeBytes,
      ...(props.alarmTopic ? { alarmTopic: props.alarmTopic } : {}),
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout,
      retentionPeriod: props.retentionPeriod ?? Duration.days(4),
      maxMessageSizeBytes: props.maxMessageSizeBytes,
      deadLetterQueue: { queue: this.deadLetters.queue, maxReceiveCount: props.maxReceiveCount },
    });
    this.oldestMessageAlarm = new cloudwatch.Alarm(this, 'OldestMessageAlarm', {
      alarmDescription: `ocirelay: ${props.purpose} waiting longer than ${props.oldestMessageAgeAlarm.toSeconds()} s`,
      metric: this.queue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum', period: Duration.minutes(5) }),
      threshold: props.oldestMessageAgeAlarm.toSeconds(),
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (props.alarmTopic) this.oldestMessageAlarm.addAlarmAction(new actions.SnsAction(props.alarmTopic));
  }
}
