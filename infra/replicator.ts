/**
 * `OciReplicator`: the whole serverless pipeline as one construct, for this repository's stack
 * (infra/stack.ts) or any other CDK app.
 *
 * ```
 *  function URL (webhooks) ─┐                          ┌──> work queue ──> worker ──┐ (follow-ups,
 *  schedule rule ───────────┼─> ingress ─async invoke─> fan-out                     │  commits, exports)
 *  ECR push rule ───────────┘        (retries 2)      └──> export queue ─> export ─> S3
 *          └─ undeliverable ─> failed-requests queue <─ failed after retries ┘
 * ```
 *
 * Security model, in short:
 * - The ingress function URL has auth type NONE because registries' webhooks cannot sign AWS
 *   SigV4 requests. Every request is authenticated in code before anything else is done (the
 *   webhook's bearer token or HMAC secret from the configuration, see lib/pipeline/ingress.ts),
 *   and registry hosts come from the matching rule, never from the payload. Ingress may do
 *   nothing but invoke fan-out and read the webhook secrets the configuration names (it talks
 *   to no registry: the scheduled sync is listed and compared by fan-out). Set
 *   `ingress.reservedConcurrentExecutions` to cap what the public URL can cost.
 * - IAM is least privilege: grants on the construct's own queues, bucket and functions; Secrets
 *   Manager reads only on the configured secrets; ECR actions only on the configured repository
 *   ARNs. The one statement with resource `*` is `ecr:GetAuthorizationToken`, which AWS defines
 *   at the account level (the action has no resource type); the token it returns is only usable
 *   for what the repository-scoped statements allow.
 * - No AWSLambdaBasicExecutionRole: each function may write only to its own log group.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ArnFormat, Annotations, Duration, Names, RemovalPolicy, Stack, Token } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as destinations from 'aws-cdk-lib/aws-lambda-destinations';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import type { z } from 'zod';
import { MAX_ANNOTATIONS_BYTES, MAX_MESSAGE_BYTES } from '../lib/pipeline/messages.js';
import { parseConfig, type Config, type ConfigSchema, type SecretRef } from '../lib/rules/config.js';
import { FUNCTION_NAMES, type FunctionName } from './bundling.js';
import { functionEnvironment, type EnvironmentInputs, type LogLevel } from './environment.js';
import { ExportBucket } from './export-bucket.js';
import { environmentSize, FUNCTION_ARCHITECTURE, FUNCTION_RUNTIME, LAMBDA_ENVIRONMENT_LIMIT_BYTES, ReplicatorFunction } from './replicator-function.js';
import { DeadLetterQueue, SQS_CLASSIC_MAX_MESSAGE_BYTES, TaskQueue } from './task-queue.js';

/**
 * The replication configuration: `{ rules, webhooks, insecureRegistries }`, lib's schema
 * (lib/rules/config.ts). Validated at synth (a bad rule fails `cdk synth` with the field named)
 * and handed to every function as JSON in OCIRELAY_CONFIG, or, when the functions' environments
 * would not fit in Lambda's 4 KiB with it, in a layer (OCIRELAY_CONFIG_FILE). Webhook tokens and secrets should be
 * `{ secretsManager: ARN }`: ingress is granted exactly those secrets; an inline string would sit
 * in the template and the function's environment, and `{ env: NAME }` has no variable in Lambda
 * (synth warns about both).
 */
export type OciRelayConfig = z.input<typeof ConfigSchema>;

/** Memory and timeout of one function. */
export interface FunctionSizing {
  /** MB; CPU is proportional (1769 MB = one vCPU). */
  readonly memorySize?: number;
  readonly timeout?: Duration;
}

/** A function that consumes a queue. */
export interface QueueConsumerOptions extends FunctionSizing {
  /** Messages per invocation (1-10). */
  readonly batchSize?: number;
  /** Most concurrent invocations the event source mapping runs (2-1000). */
  readonly maxConcurrency?: number;
  /** @default - none: a batch is passed on as soon as there are messages */
  readonly maxBatchingWindow?: Duration;
  /** Receives before a message is moved to the dead-letter queue. */
  readonly maxReceiveCount?: number;
  /** Stop starting new work this long before the invocation's deadline (large blobs continue in a follow-up task). */
  readonly timeBudgetMargin?: Duration;
}

export interface OciReplicatorProps {
  /** Rules, webhooks, insecure registries (lib's schema). Required: without rules nothing is replicated. */
  readonly config: OciRelayConfig;
  /**
   * Credentials of the registries that need them: registry host -> Secrets Manager secret (a
   * complete secret ARN, or a secret name in this stack's account and region). Fan-out, worker
   * and export may read exactly these secrets.
   * @default {} (anonymous pulls; ECR through the functions' own IAM permissions)
   */
  readonly registrySecrets?: Readonly<Record<string, string>>;
  /** Customer-managed KMS keys the registry or webhook secrets are encrypted with (kms:Decrypt is granted). @default [] */
  readonly secretKeys?: readonly kms.IKey[];
  /**
   * ECR repositories ocirelay may read and push, as ARNs (wildcards allowed).
   * @default ['arn:aws:ecr:REGION:ACCOUNT:repository/*'] (this stack's account and region)
   */
  readonly ecrRepositoryArns?: readonly string[];
  /** Create a missing ECR target repository (fan-out gets ecr:DescribeRepositories and ecr:CreateRepository on `ecrRepositoryArns`). @default false */
  readonly ecrCreateRepositories?: boolean;
  /**
   * EventBridge schedule expression of the scheduled sync of the configured rules (bulk
   * migrations), or null for none.
   * @default OCI_REPLICATOR_DEFAULTS.schedule ('rate(1 hour)')
   */
  readonly schedule?: string | null;
  /** React to ECR "ECR Image Action" PUSH/SUCCESS events of this account and region. @default true */
  readonly ecrPushEvents?: boolean;

  /** @default OCI_REPLICATOR_DEFAULTS.ingress (512 MB, 30 s: webhooks answer in well under a second; a schedule hands one message per rule to fan-out) */
  readonly ingress?: FunctionSizing & {
    /** Caps the concurrency (and cost) the public function URL can cause. @default - unreserved */
    readonly reservedConcurrentExecutions?: number;
  };
  /** @default OCI_REPLICATOR_DEFAULTS.fanout (1024 MB, 2 min; asynchronous invocations retried twice, kept at most 1 hour) */
  readonly fanout?: FunctionSizing & {
    /**
     * Caps the fan-out invocations that run at once, and so the load a scheduled sync puts on the
     * registries (each step runs up to 16 requests; a catalog page hands on a step per
     * repository). Invocations beyond it are throttled and held by Lambda's asynchronous queue,
     * retried for up to `maxEventAge`. @default - unreserved
     */
    readonly reservedConcurrentExecutions?: number;
    /** Lambda's retries of a failed asynchronous invocation (0-2) before the failed-requests queue. */
    readonly retryAttempts?: number;
    /** How long an asynchronous invocation may wait to run (1 min - 6 h). */
    readonly maxEventAge?: Duration;
  };
  /** @default OCI_REPLICATOR_DEFAULTS.worker (1769 MB, 15 min, batches of 4, 50 concurrent, 10 receives, 30 s margin) */
  readonly worker?: QueueConsumerOptions;
  /** @default OCI_REPLICATOR_DEFAULTS.export (1769 MB, 15 min, batches of 1, 5 concurrent, 3 receives, 30 s margin) */
  readonly export?: QueueConsumerOptions;

  /**
   * MaximumMessageSize of the work and export queues, in bytes (from lib's MAX_MESSAGE_BYTES,
   * 65536, the task protocol's largest message, to 262144).
   * @default OCI_REPLICATOR_DEFAULTS.maxMessageSizeBytes (262144)
   */
  readonly maxMessageSizeBytes?: number;

  /**
   * An existing bucket for the archives instead of a new one (its settings are then yours).
   * Buckets named in rules' `export.to` are granted as well, by name.
   * @default - a new bucket
   */
  readonly exportBucket?: s3.IBucket;
  /** Physical name of the new export bucket, so that rules can name it in `export.to`. @default - generated */
  readonly exportBucketName?: string;
  /** Encrypt the new export bucket with this KMS key. @default - S3-managed encryption (SSE-S3) */
  readonly exportBucketKey?: kms.IKey;
  /** Days after which exported archives are deleted from the new bucket. @default 30 */
  readonly exportRetentionDays?: number;
  /** @default RemovalPolicy.RETAIN (archives outlive the stack) */
  readonly exportBucketRemovalPolicy?: RemovalPolicy;

  /** @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** @default 'info' */
  readonly logLevel?: LogLevel;
  /** CloudWatch namespace of the functions' embedded metrics. @default 'OciRelay' */
  readonly metricsNamespace?: string;
  /** Alarm when the oldest message of the work or export queue is this old. @default Duration.hours(1) */
  readonly oldestMessageAgeAlarm?: Duration;
  /** Where alarms notify. @default - alarms without actions */
  readonly alarmTopic?: sns.ITopic;
}

/**
 * Every default, by name.
 *
 * Sizing: ingress authenticates, matches rules and invokes fan-out (512 MB for a quick cold
 * start, 30 s); a schedule makes it hand one sync message per rule to fan-out. Fan-out reads an
 * index and its manifests and enqueues tasks, or runs one step of a sync (a catalog page; one
 * repository's tag list and at most 100 comparisons) (2 min). Worker and
 * export stream blobs: one vCPU (1769 MB) hashes and forwards several streams at network speed,
 * and the 15-minute maximum lets an ECR target (monolithic PUT: no chunked upload to continue
 * from) take a large layer in one invocation.
 *
 * Concurrency: a worker batch of 4 matches the handler's 4 records at a time (one invocation
 * overlaps a few network-bound transfers, and what a timeout costs stays small); 50 concurrent
 * workers is a pull rate most registries tolerate (Docker Hub and GHCR throttle well below what
 * 1000 would do) and leaves most of an account's default 1000 Lambda concurrency alone. An export
 * streams a whole image for minutes and runs one record at a time: batches of 1, 5 at a time.
 *
 * Redrive: transient registry errors are retried by making the message visible again later
 * (ChangeMessageVisibility with a growing backoff), so the work queue allows 10 receives before
 * the dead-letter queue; commit tasks waiting for their blobs re-send themselves as new delayed
 * messages (no receive used; their own 24-hour deadline bounds them); an export that
 * failed three times will not succeed the fourth. Invalid and permanently failed messages skip
 * the retries: the handlers send them to the dead-letter queue at once (WORK_DLQ_URL).
 */
export const OCI_REPLICATOR_DEFAULTS = {
  schedule: 'rate(1 hour)',
  ecrPushEvents: true,
  ecrCreateRepositories: false,
  ingress: { memorySize: 512, timeout: Duration.seconds(30) },
  fanout: { memorySize: 1024, timeout: Duration.minutes(2), retryAttempts: 2, maxEventAge: Duration.hours(1) },
  worker: {
    memorySize: 1769,
    timeout: Duration.minutes(15),
    batchSize: 4,
    maxConcurrency: 50,
    maxReceiveCount: 10,
    timeBudgetMargin: Duration.seconds(30),
  },
  export: {
    memorySize: 1769,
    timeout: Duration.minutes(15),
    batchSize: 1,
    maxConcurrency: 5,
    maxReceiveCount: 3,
    timeBudgetMargin: Duration.seconds(30),
  },
  /**
   * The work and export queues take SQS's classic maximum (256 KiB). The task protocol keeps
   * every message far below it (lib/pipeline/messages.ts caps them at 64 KiB and carries
   * manifests by digest), so an oversized message meets the protocol's own check, with its clear
   * error, first; the queue limit is the backstop, with room for attributes. (SQS now accepts up
   * to 1 MiB, but Lambda's asynchronous payloads and the failed-requests records stay at 256 KiB,
   * and small messages keep a batch of 10 far from Lambda's 6 MB invocation payload.)
   */
  maxMessageSizeBytes: SQS_CLASSIC_MAX_MESSAGE_BYTES,
  exportRetentionDays: 30,
  exportBucketRemovalPolicy: RemovalPolicy.RETAIN,
  logRetention: logs.RetentionDays.ONE_MONTH,
  logLevel: 'info' as LogLevel,
  metricsNamespace: 'OciRelay',
  oldestMessageAgeAlarm: Duration.hours(1),
} as const;

/** What the schedule rule sends to ingress. */
export const SCHEDULED_SYNC_EVENT = { source: 'ocirelay.schedule', 'detail-type': 'Scheduled Sync', detail: {} } as const;

/** ECR actions that read a repository (pull, tag list). */
export const ECR_PULL_ACTIONS = ['ecr:BatchCheckLayerAvailability', 'ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer', 'ecr:ListImages'] as const;

/** ECR actions that push to a repository. */
export const ECR_PUSH_ACTIONS = ['ecr:InitiateLayerUpload', 'ecr:UploadLayerPart', 'ecr:CompleteLayerUpload', 'ecr:PutImage'] as const;

/** ECR actions of `ensureRepository` (describe, create when missing). */
export const ECR_CREATE_ACTIONS = ['ecr:DescribeRepositories', 'ecr:CreateRepository'] as const;

/**
 * The pipeline as one construct. Who may do what (everything else is denied):
 *
 * - ingress: invoke fan-out; read the webhook secrets the configuration names.
 * - fan-out: send to the work and export queues; invoke itself (referrers become sub-requests,
 *   a sync step hands on the next steps and the replication requests it finds);
 *   its failed invocations go to the failed-requests queue, where it sends invalid requests
 *   itself; ECR pull and push (the blobs it
 *   generates, e.g. a converted schema-1 config) and, with `ecrCreateRepositories`, describe and
 *   create repositories; read the registry secrets.
 * - worker: consume the work queue (and change visibility: retry backoff); send to the work,
 *   export and work dead-letter queues; ECR pull and push; read the registry secrets.
 * - export: consume the export queue; send to its dead-letter queue; write and read the export
 *   bucket(s); ECR pull; read the registry secrets.
 */
export class OciReplicator extends Construct {
  readonly ingress: ReplicatorFunction;
  readonly fanout: ReplicatorFunction;
  readonly worker: ReplicatorFunction;
  readonly exporter: ReplicatorFunction;
  readonly workQueue: TaskQueue;
  readonly exportQueue: TaskQueue;
  /** Fan-out invocations that failed after Lambda's retries, and events EventBridge could not deliver. */
  readonly failedRequests: DeadLetterQueue;
  readonly exportBucket: s3.IBucket;
  readonly functionUrl: lambda.FunctionUrl;
  readonly scheduleRule?: events.Rule;
  readonly ecrPushRule?: events.Rule;
  /** The configuration as lib parsed it at synth. */
  readonly config: Config;

  constructor(scope: Construct, id: string, props: OciReplicatorProps) {
    super(scope, id);
    const D = OCI_REPLICATOR_DEFAULTS;
    const stack = Stack.of(this);

    const ingressOpts = withDefaults(D.ingress, props.ingress);
    const fanoutOpts = withDefaults(D.fanout, props.fanout);
    const workerOpts = withDefaults(D.worker, props.worker);
    const exportOpts = withDefaults(D.export, props.export);
    const maxMessageSizeBytes = props.maxMessageSizeBytes ?? D.maxMessageSizeBytes;
    const logRetention = props.logRetention ?? D.logRetention;
    const oldestMessageAgeAlarm = props.oldestMessageAgeAlarm ?? D.oldestMessageAgeAlarm;
    const ecrCreateRepositories = props.ecrCreateRepositories ?? D.ecrCreateRepositories;
    const registrySecrets = props.registrySecrets ?? {};
    const schedule = props.schedule === undefined ? D.schedule : props.schedule;
    const alarmTopic = props.alarmTopic ? { alarmTopic: props.alarmTopic } : {};

    // Check what can be checked now rather than at deploy time or at the first event.
    try {
      this.config = parseConfig(JSON.stringify(props.config), 'config');
    } catch (err) {
      throw new Error(`${this.node.path}: ${(err as Error).message}`);
    }
    // The task protocol sends messages of up to MAX_MESSAGE_BYTES: a smaller queue limit would
    // refuse the largest of them at run time, as a send failure far from its cause.
    this.check(Number.isInteger(maxMessageSizeBytes) && maxMessageSizeBytes >= MAX_MESSAGE_BYTES && maxMessageSizeBytes <= SQS_CLASSIC_MAX_MESSAGE_BYTES,
      `maxMessageSizeBytes must be an integer from ${MAX_MESSAGE_BYTES} (the task protocol's largest message) to ${SQS_CLASSIC_MAX_MESSAGE_BYTES} (got ${maxMessageSizeBytes})`);
    for (const rule of this.config.rules) {
      const bytes = Buffer.byteLength(JSON.stringify(rule.annotations ?? {}));
      this.check(bytes <= MAX_ANNOTATIONS_BYTES, `rule ${rule.name ?? rule.from}: its annotations take ${bytes} bytes serialised; every task carries them, and the limit is ${MAX_ANNOTATIONS_BYTES}`);
    }
    for (const [name, opts] of [['worker', workerOpts], ['export', exportOpts]] as const) {
      this.check(Number.isInteger(opts.batchSize) && opts.batchSize >= 1 && opts.batchSize <= 10, `${name}.batchSize must be from 1 to 10 (got ${opts.batchSize})`);
      this.check(Number.isInteger(opts.maxConcurrency) && opts.maxConcurrency >= 2 && opts.maxConcurrency <= 1000,
        `${name}.maxConcurrency must be from 2 to 1000 (got ${opts.maxConcurrency})`);
      this.check(opts.timeBudgetMargin.toMilliseconds() < opts.timeout.toMilliseconds(), `${name}.timeBudgetMargin must be shorter than ${name}.timeout`);
    }
    this.check(Number.isInteger(fanoutOpts.retryAttempts) && fanoutOpts.retryAttempts >= 0 && fanoutOpts.retryAttempts <= 2,
      `fanout.retryAttempts must be 0, 1 or 2 (got ${fanoutOpts.retryAttempts})`);
    const fanoutReserved = fanoutOpts.reservedConcurrentExecutions;
    this.check(fanoutReserved === undefined || (Number.isInteger(fanoutReserved) && fanoutReserved >= 1), `fanout.reservedConcurrentExecutions must be a whole number of at least 1 (got ${fanoutReserved})`);
    this.check(schedule === null || /^(rate|cron)\(.+\)$/.test(schedule), `schedule must be a rate(...) or cron(...) expression, or null (got ${String(schedule)})`);
    for (const [host, secret] of Object.entries(registrySecrets)) {
      this.check(host.length > 0 && secret.length > 0, `registrySecrets: empty host or secret (${JSON.stringify(host)})`);
    }
    const webhookSecrets = this.webhookSecretIds();
    const ruleBuckets = this.ruleExportBuckets();

    // Queues.
    this.failedRequests = new DeadLetterQueue(this, 'FailedRequests', {
      purpose: 'replication requests fan-out failed on after its retries, and events EventBridge could not deliver to ingress',
      // Lambda's on-failure records carry the whole request payload (up to 256 KiB) plus context.
      maxMessageSizeBytes: SQS_CLASSIC_MAX_MESSAGE_BYTES,
      ...alarmTopic,
    });
    this.workQueue = new TaskQueue(this, 'WorkQueue', {
      purpose: 'image, blob and commit tasks',
      consumerTimeout: workerOpts.timeout,
      ...(workerOpts.maxBatchingWindow ? { maxBatchingWindow: workerOpts.maxBatchingWindow } : {}),
      maxReceiveCount: workerOpts.maxReceiveCount,
      maxMessageSizeBytes,
      oldestMessageAgeAlarm,
      ...alarmTopic,
    });
    this.exportQueue = new TaskQueue(this, 'ExportQueue', {
      purpose: 'export tasks',
      consumerTimeout: exportOpts.timeout,
      ...(exportOpts.maxBatchingWindow ? { maxBatchingWindow: exportOpts.maxBatchingWindow } : {}),
      maxReceiveCount: exportOpts.maxReceiveCount,
      maxMessageSizeBytes,
      oldestMessageAgeAlarm,
      ...alarmTopic,
    });

    // Bucket.
    this.exportBucket =
      props.exportBucket ??
      new ExportBucket(this, 'Exports', {
        retentionDays: props.exportRetentionDays ?? D.exportRetentionDays,
        removalPolicy: props.exportBucketRemovalPolicy ?? D.exportBucketRemovalPolicy,
        ...(props.exportBucketKey ? { encryptionKey: props.exportBucketKey } : {}),
        ...(props.exportBucketName ? { bucketName: props.exportBucketName } : {}),
      }).bucket;

    // Functions. Fan-out has a fixed name: it invokes itself (referrers become sub-requests) and
    // every pipeline function's environment names it, which a generated name would make a
    // circular reference.
    const fanoutName = Names.uniqueResourceName(this, { maxLength: 57, separator: '-' }) + '-fanout';
    const fanoutArn = stack.formatArn({ service: 'lambda', resource: 'function', resourceName: fanoutName, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
    // The configuration travels in the environment when every function's environment still fits
    // in Lambda's 4 KiB; else in a layer every function mounts (no size limit a rules file could
    // reach), read from OCIRELAY_CONFIG_FILE.
    const configJson = JSON.stringify(props.config);
    const environmentWith = (fn: FunctionName, config: EnvironmentInputs['config']) =>
      functionEnvironment(fn, {
        config,
        registrySecrets,
        ecrCreateRepositories,
        logLevel: props.logLevel ?? D.logLevel,
        metricsNamespace: props.metricsNamespace ?? D.metricsNamespace,
        fanoutFunctionName: fanoutName,
        workQueueUrl: this.workQueue.queue.queueUrl,
        exportQueueUrl: this.exportQueue.queue.queueUrl,
        workDeadLetterQueueUrl: this.workQueue.deadLetters.queue.queueUrl,
        exportDeadLetterQueueUrl: this.exportQueue.deadLetters.queue.queueUrl,
        failedRequestsQueueUrl: this.failedRequests.queue.queueUrl,
        exportBucket: this.exportBucket.bucketName,
        workerTimeBudgetMarginMs: workerOpts.timeBudgetMargin.toMilliseconds(),
        exportTimeBudgetMarginMs: exportOpts.timeBudgetMargin.toMilliseconds(),
      });
    const inlineFits = FUNCTION_NAMES.every((fn) => environmentSize(environmentWith(fn, { inline: configJson })) <= LAMBDA_ENVIRONMENT_LIMIT_BYTES);
    if (!inlineFits && Token.isUnresolved(configJson)) {
      // A layer is a file made at synth: a token (a secret's ARN from a construct) would be
      // written as its placeholder, and ingress would look up "${Token[...]}" at run time.
      throw new Error(`${this.node.path}: the configuration is too large for the functions' environment, so it must go in a layer, which cannot hold CDK tokens (such as a secret construct's secretArn); write those ARNs out as strings`);
    }
    const configLayer = inlineFits ? undefined : configLayerOf(this, configJson);
    const environment = (fn: FunctionName) => environmentWith(fn, configLayer ? { file: CONFIG_LAYER_FILE } : { inline: configJson });

    this.ingress = new ReplicatorFunction(this, 'Ingress', {
      name: 'ingress',
      description: 'ocirelay ingress: authenticates webhooks and events, maps them to replication requests',
      memorySize: ingressOpts.memorySize,
      timeout: ingressOpts.timeout,
      logRetention,
      environment: environment('ingress'),
      ...(props.ingress?.reservedConcurrentExecutions === undefined ? {} : { reservedConcurrentExecutions: props.ingress.reservedConcurrentExecutions }),
    });
    this.fanout = new ReplicatorFunction(this, 'Fanout', {
      name: 'fanout',
      description: 'ocirelay fan-out: plans requests into image, blob, commit and export tasks; runs the steps of the scheduled sync',
      functionName: fanoutName,
      memorySize: fanoutOpts.memorySize,
      timeout: fanoutOpts.timeout,
      logRetention,
      environment: environment('fanout'),
      ...(fanoutOpts.reservedConcurrentExecutions === undefined ? {} : { reservedConcurrentExecutions: fanoutOpts.reservedConcurrentExecutions }),
    });
    this.worker = new ReplicatorFunction(this, 'Worker', {
      name: 'worker',
      description: 'ocirelay worker: copies blobs, commits manifests, indexes and tags once their content is there',
      memorySize: workerOpts.memorySize,
      timeout: workerOpts.timeout,
      logRetention,
      environment: environment('worker'),
    });
    this.exporter = new ReplicatorFunction(this, 'Export', {
      name: 'export',
      description: 'ocirelay export: streams the layers of an image into a tar archive in S3',
      memorySize: exportOpts.memorySize,
      timeout: exportOpts.timeout,
      logRetention,
      environment: environment('export'),
    });

    if (configLayer) for (const fn of [this.ingress, this.fanout, this.worker, this.exporter]) fn.function.addLayers(configLayer);

    // Ingress: the public webhook endpoint, authenticated in code (see the module comment); it
    // hands each request to fan-out with an asynchronous invoke, retried by Lambda, then parked.
    this.functionUrl = this.ingress.function.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.NONE, invokeMode: lambda.InvokeMode.BUFFERED });
    const invokeFanout = new iam.PolicyStatement({ sid: 'InvokeFanout', actions: ['lambda:InvokeFunction'], resources: [fanoutArn] });
    this.ingress.role.addToPrincipalPolicy(invokeFanout);
    this.fanout.role.addToPrincipalPolicy(invokeFanout);
    this.fanout.function.configureAsyncInvoke({
      retryAttempts: fanoutOpts.retryAttempts,
      maxEventAge: fanoutOpts.maxEventAge,
      onFailure: new destinations.SqsDestination(this.failedRequests.queue),
    });

    // Queues: fan-out enqueues; the worker enqueues follow-ups, waiting commits and exports, and
    // delays retried tasks (sqs:ChangeMessageVisibility, part of grantConsumeMessages); both consumers send what
    // cannot succeed to their dead-letter queue at once.
    this.workQueue.queue.grantSendMessages(this.fanout.role);
    this.exportQueue.queue.grantSendMessages(this.fanout.role);
    // Invalid requests: fan-out records them in its on-failure destination itself, at once.
    this.failedRequests.queue.grantSendMessages(this.fanout.role);
    this.workQueue.queue.grantConsumeMessages(this.worker.role);
    this.workQueue.queue.grantSendMessages(this.worker.role);
    this.exportQueue.queue.grantSendMessages(this.worker.role);
    this.workQueue.deadLetters.queue.grantSendMessages(this.worker.role);
    this.exportQueue.queue.grantConsumeMessages(this.exporter.role);
    this.exportQueue.deadLetters.queue.grantSendMessages(this.exporter.role);

    // Archives: written (multipart included) and read (is it there already?) by export only.
    const exportBuckets = [this.exportBucket, ...ruleBuckets.filter((name) => name !== props.exportBucketName && name !== props.exportBucket?.bucketName).map((name, i) => s3.Bucket.fromBucketName(this, `RuleBucket${i}`, name))];
    for (const bucket of exportBuckets) {
      bucket.grantPut(this.exporter.role);
      bucket.grantRead(this.exporter.role);
    }

    for (const [fn, opts] of [[this.worker, workerOpts], [this.exporter, exportOpts]] as const) {
      fn.function.addEventSource(
        new SqsEventSource(fn === this.worker ? this.workQueue.queue : this.exportQueue.queue, {
          batchSize: opts.batchSize,
          maxConcurrency: opts.maxConcurrency,
          reportBatchItemFailures: true,
          ...(opts.maxBatchingWindow ? { maxBatchingWindow: opts.maxBatchingWindow } : {}),
        }),
      );
    }

    // Registries: fan-out reads sources and targets (the scheduled sync's steps list catalogs
    // and tags and compare digests), pushes the blobs it generates (a converted schema-1 config)
    // and creates missing repositories; the worker reads and pushes; export reads. Ingress talks
    // to no registry.
    const repositoryArns = props.ecrRepositoryArns?.length ? [...props.ecrRepositoryArns] : [stack.formatArn({ service: 'ecr', resource: 'repository', resourceName: '*' })];
    const registrySecretArns = [...new Set(Object.values(registrySecrets).map((s) => this.secretArn(s)))];
    for (const fn of [this.fanout, this.worker, this.exporter]) {
      if (registrySecretArns.length) this.grantSecrets(fn, 'ReadRegistrySecrets', registrySecretArns, props.secretKeys);
      // Account-level by AWS's design: GetAuthorizationToken has no resource type.
      fn.role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'EcrAuthorizationToken', actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }));
      fn.role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'EcrPull', actions: [...ECR_PULL_ACTIONS], resources: repositoryArns }));
    }
    for (const fn of [this.fanout, this.worker]) {
      fn.role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'EcrPush', actions: [...ECR_PUSH_ACTIONS], resources: repositoryArns }));
    }
    if (ecrCreateRepositories) {
      this.fanout.role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'EcrCreateRepository', actions: [...ECR_CREATE_ACTIONS], resources: repositoryArns }));
    }
    if (webhookSecrets.length) this.grantSecrets(this.ingress, 'ReadWebhookSecrets', webhookSecrets.map((s) => this.secretArn(s)), props.secretKeys);

    // Events into ingress; what EventBridge cannot deliver goes to the failed-requests queue too.
    const ingressTarget = (event?: events.RuleTargetInput) =>
      new targets.LambdaFunction(this.ingress.function, {
        ...(event ? { event } : {}),
        retryAttempts: 2,
        maxEventAge: Duration.hours(2),
        deadLetterQueue: this.failedRequests.queue,
      });
    if (schedule !== null) {
      this.scheduleRule = new events.Rule(this, 'ScheduledSync', {
        description: 'ocirelay: scheduled sync of the configured rules',
        schedule: events.Schedule.expression(schedule),
        targets: [ingressTarget(events.RuleTargetInput.fromObject(SCHEDULED_SYNC_EVENT))],
      });
    }
    if (props.ecrPushEvents ?? D.ecrPushEvents) {
      this.ecrPushRule = new events.Rule(this, 'EcrPush', {
        description: 'ocirelay: images pushed to ECR in this account and region',
        eventPattern: { source: ['aws.ecr'], detailType: ['ECR Image Action'], detail: { 'action-type': ['PUSH'], result: ['SUCCESS'] } },
        targets: [ingressTarget()],
      });
    }
  }

  /** A secret's ARN for IAM: a complete ARN as given, a name as `name-??????` (Secrets Manager's random suffix). */
  private secretArn(secret: string): string {
    if (secret.startsWith('arn:')) return secret;
    return Stack.of(this).formatArn({ service: 'secretsmanager', resource: 'secret', resourceName: `${secret}-??????`, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
  }

  private grantSecrets(fn: ReplicatorFunction, sid: string, arns: string[], keys: readonly kms.IKey[] | undefined): void {
    fn.role.addToPrincipalPolicy(new iam.PolicyStatement({ sid, actions: ['secretsmanager:GetSecretValue'], resources: [...new Set(arns)] }));
    for (const key of keys ?? []) key.grantDecrypt(fn.role);
  }

  /** The Secrets Manager secrets the webhooks name; warns about secrets that will not work or leak in Lambda. */
  private webhookSecretIds(): string[] {
    const ids: string[] = [];
    for (const hook of this.config.webhooks) {
      for (const [field, ref] of [['token', hook.token], ['secret', hook.secret]] as Array<[string, SecretRef | undefined]>) {
        if (ref === undefined) continue;
        if (typeof ref === 'string') {
          Annotations.of(this).addWarningV2('ocirelay:inlineWebhookSecret',
            `webhook ${hook.path}: the ${field} is written inline, so it is in the template and in every function's configuration (environment or config layer); use { secretsManager: ARN }`);
        } else if ('env' in ref) {
          Annotations.of(this).addWarningV2('ocirelay:envWebhookSecret',
            `webhook ${hook.path}: the ${field} refers to environment variable ${ref.env}, which the construct does not set; use { secretsManager: ARN }`);
        } else {
          ids.push(ref.secretsManager);
        }
      }
    }
    return [...new Set(ids)];
  }

  /** Buckets the rules export to (`export.to: s3://BUCKET/...`). */
  private ruleExportBuckets(): string[] {
    const names = new Set<string>();
    for (const rule of this.config.rules) {
      if (!rule.export) continue;
      const bucket = /^s3:\/\/([^/]+)\//.exec(rule.export.to)?.[1] ?? '';
      this.check(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket), `rule ${rule.name ?? rule.from}: export.to must name a bucket literally (got ${JSON.stringify(bucket)})`);
      names.add(bucket);
    }
    return [...names];
  }

  private check(condition: boolean, message: string): asserts condition {
    if (!condition) throw new Error(`${this.node.path}: ${message}`);
  }
}

/** `defaults` overridden by the options that are set (an option given as undefined keeps its default). */
function withDefaults<T extends object, O extends object>(defaults: T, options: O | undefined): T & O {
  const out = { ...defaults } as Record<string, unknown>;
  for (const [key, value] of Object.entries(options ?? {})) if (value !== undefined) out[key] = value;
  return out as T & O;
}

/** Where a function finds the configuration of the config layer (layers are mounted under /opt). */
export const CONFIG_LAYER_FILE = '/opt/ocirelay/config.json';

/**
 * A layer holding only the configuration, at CONFIG_LAYER_FILE. Its asset is hashed by content,
 * so an unchanged configuration publishes no new layer version, and a changed one updates every
 * function at once, as a changed environment would.
 */
function configLayerOf(scope: Construct, configJson: string): lambda.LayerVersion {
  // Named by content: every synth of one configuration reuses one directory.
  const dir = join(tmpdir(), `ocirelay-config-layer-${createHash('sha256').update(configJson).digest('hex').slice(0, 16)}`);
  const relativePath = CONFIG_LAYER_FILE.replace(/^\/opt\//, '');
  mkdirSync(join(dir, dirname(relativePath)), { recursive: true });
  writeFileSync(join(dir, relativePath), configJson);
  return new lambda.LayerVersion(scope, 'ConfigLayer', {
    code: lambda.Code.fromAsset(dir),
    description: 'ocirelay configuration (too large for the functions\' environment)',
    compatibleRuntimes: [FUNCTION_RUNTIME],
    compatibleArchitectures: [FUNCTION_ARCHITECTURE],
  });
}
