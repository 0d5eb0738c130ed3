/**
 * Event adapters for the stages: the Lambda event shapes in, partial batch failures out
 * (Powertools-style: one bad record never fails the batch). functions/*.ts are these with AWS
 * ports; the embedded runtime is these with in-memory ports, fed the same serialised messages.
 *
 * Failure policy per record:
 * - invalid message (bad JSON, unknown version or type, bad field): logged with its reason and
 *   sent to the dead-letter queue at once — retrying cannot fix it;
 * - a commit whose content is not all there yet: sent again as a new message, delayed by a
 *   backoff and carrying its attempt count and overall deadline; the delivered one is deleted
 *   (reported as done), so that waiting, however long, never uses up the queue's receive count.
 *   Past the deadline (default 24 hours from its first wait, or when `commitGiveUp` says the
 *   content can no longer come) it goes to the dead-letter queue;
 * - a retryable failure (network, throttling, 5xx): the same backoff, then redelivery, until the
 *   queue's maxReceiveCount moves it to the dead-letter queue;
 * - a permanent failure (digest mismatch, 4xx, invalid manifest): logged and dead-lettered at once.
 */
import pLimit from 'p-limit';
import { ErrorCodes, errorMessage, OciRelayError, RegistryError } from '../errors.js';
import { InvalidMessageError, parseFanoutMessage, parseTask, serialise, type Task } from './messages.js';
import { fanOut, NotReadyError, runBlobTask, runCommitTask, runExportTask, runImageTask, type PipelineEnv } from './stages.js';
import { runSyncStep, type SyncStepResult } from './sync.js';
import { errorFields, type Logger } from './telemetry.js';

/** The parts of the SQS event Lambda delivers that ocirelay reads. */
export interface SqsRecord {
  messageId: string;
  receiptHandle: string;
  body: string;
  attributes?: { ApproximateReceiveCount?: string; [key: string]: string | undefined };
  eventSourceARN?: string;
}

export interface SqsEvent {
  Records: SqsRecord[];
}

export interface SqsBatchResponse {
  batchItemFailures: Array<{ itemIdentifier: string }>;
}

export interface LambdaContext {
  awsRequestId?: string;
  invokedFunctionArn?: string;
  getRemainingTimeInMillis?: () => number;
}

export interface HandlerOptions {
  /** Records of one batch processed at once. Default 4. */
  recordConcurrency?: number;
  /** Time kept back from the invocation's remaining time for wrapping up. Default 30 s. */
  marginMs?: number;
  /** Seconds before a not-ready commit or a failed task is delivered again. Default 2^(n+1), at most 900. */
  backoffSeconds?: (receiveCount: number) => number;
  /** How long a commit may wait for its content in all, from its first wait. Default 24 hours. */
  commitWaitSeconds?: number;
  /**
   * Asked when a commit is not ready: true when its content can no longer come (the embedded
   * runtime knows when nothing but waiting commits is left), which dead-letters it at once.
   */
  commitGiveUp?: () => boolean;
}

/** The default overall deadline of a waiting commit (see docs/PIPELINE.md). */
export const DEFAULT_COMMIT_WAIT_SECONDS = 24 * 60 * 60;

export const defaultBackoff = (receiveCount: number): number => Math.min(900, 2 ** (receiveCount + 1));

type EnvSource = () => PipelineEnv | Promise<PipelineEnv>;

/** What a worker does with one task; `deadline` is when it must have stopped starting new work. */
async function runTask(task: Task, env: PipelineEnv, deadline: number, log: Logger): Promise<void> {
  switch (task.type) {
    case 'image':
      await runImageTask(task, env);
      log.info('image task done', { platform: task.platform, digest: task.targetDigest });
      return;
    case 'blob': {
      const result = await runBlobTask(task, env, deadline);
      env.metrics.add('BlobsCopied', result.copied);
      env.metrics.add('BlobsSkipped', result.skipped);
      env.metrics.add('BlobsMounted', result.mounted);
      env.metrics.add('BytesCopied', result.bytes);
      log.info('blob task done', { ...result, count: task.blobs.length });
      return;
    }
    case 'commit':
      await runCommitTask(task, env);
      env.metrics.add('ManifestsCommitted');
      log.info('manifest committed', { digest: task.digest, tags: task.tags });
      return;
    case 'export': {
      const result = await runExportTask(task, env);
      env.metrics.add('Exports');
      env.metrics.add('ExportBytes', result.bytes);
      log.info('export written', result);
      return;
    }
  }
}

/**
 * Whether redelivering the task may help. The client does not repeat a 500 itself (it may be the
 * registry's word on this request), but at the task level a 5xx is worth the backoff: registries
 * answer 500 to races (distribution, on a HEAD during a concurrent PUT of the same manifest), and
 * maxReceiveCount bounds the retries.
 */
function retryableTask(err: unknown): boolean {
  if (err instanceof RegistryError) return err.retryable || err.status >= 500;
  return err instanceof OciRelayError ? err.retryable : true;
}

/** What every log line of a task carries: the request, the task, the image copied (its source) and where to. */
function taskFields(task: Task): Record<string, unknown> {
  switch (task.type) {
    case 'image':
      return { requestId: task.request.id, task: 'image', image: task.request.source, target: task.request.target, digest: task.sourceDigest };
    case 'blob':
      return { requestId: task.requestId, task: 'blob', image: `${task.source.registry}/${task.source.repository}`, target: `${task.target.registry}/${task.target.repository}`, blobs: task.blobs.map((b) => b.digest) };
    case 'commit':
      return { requestId: task.request.id, task: 'commit', image: task.request.source, target: task.request.target, digest: task.digest };
    case 'export':
      return { requestId: task.requestId, task: 'export', image: task.source };
  }
}

/** The SQS consumer for one queue (`queue` is where retries are scheduled: work or exports). */
export function createQueueHandler(getEnv: EnvSource, pick: (env: PipelineEnv) => PipelineEnv['work'], options: HandlerOptions = {}): (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse> {
  const backoff = options.backoffSeconds ?? defaultBackoff;
  return async (event, context = {}) => {
    const env = await getEnv();
    const queue = pick(env);
    const now = env.now ?? Date.now;
    const deadline = now() + (context.getRemainingTimeInMillis?.() ?? 15 * 60_000) - (options.marginMs ?? 30_000);
    const base = env.logger.child({ awsRequestId: context.awsRequestId });
    const failures: Array<{ itemIdentifier: string }> = [];
    /**
     * Sends a record to the dead-letter queue; when that fails, only this record is reported as
     * failed (the others of the batch are done): it is redelivered and, at worst, moved to the
     * same queue by the redrive policy after maxReceiveCount.
     */
    const deadLetter = async (record: SqsRecord, log: Logger): Promise<void> => {
      try {
        await env.deadLetters.send([record.body]);
      } catch (err) {
        log.error('could not send to the dead-letter queue; the message will be redelivered', { messageId: record.messageId, ...errorFields(err) });
        failures.push({ itemIdentifier: record.messageId });
      }
    };
    const limit = pLimit(options.recordConcurrency ?? 4);
    await Promise.all(
      (event.Records ?? []).map((record) =>
        limit(async () => {
          try {
            await handleRecord(record);
          } catch (err) {
            // Never fail the batch for one record: only it is redelivered.
            base.error('record failed unexpectedly; it will be redelivered', { messageId: record.messageId, ...errorFields(err) });
            failures.push({ itemIdentifier: record.messageId });
          }
        }),
      ),
    );
    env.metrics.flush();
    return { batchItemFailures: failures };

    async function handleRecord(record: SqsRecord): Promise<void> {
      const receiveCount = Number(record.attributes?.ApproximateReceiveCount ?? '1') || 1;
      let task: Task;
      try {
        task = parseTask(record.body);
      } catch (err) {
        const reason = err instanceof InvalidMessageError ? err.message : `invalid message: ${errorMessage(err)}`;
        base.error('invalid message sent to the dead-letter queue', { messageId: record.messageId, reason });
        env.metrics.add('InvalidMessages');
        await deadLetter(record, base);
        return;
      }
      const log = base.child({ messageId: record.messageId, receiveCount, ...taskFields(task) });
      try {
        await runTask(task, env, deadline, log);
      } catch (err) {
        if (err instanceof NotReadyError && task.type === 'commit') {
          env.metrics.add('CommitsNotReady');
          const attempt = (task.wait?.attempt ?? 0) + 1;
          const waitUntil = task.wait?.deadline ?? now() + (options.commitWaitSeconds ?? DEFAULT_COMMIT_WAIT_SECONDS) * 1000;
          if (now() >= waitUntil || options.commitGiveUp?.()) {
            env.metrics.add('TaskFailures');
            log.error('commit gave up waiting for its content; sent to the dead-letter queue', { ...errorFields(err), missing: err.missing, attempt, deadline: new Date(waitUntil).toISOString() });
            await deadLetter(record, log);
            return;
          }
          const seconds = backoff(attempt);
          try {
            await queue.send([serialise({ ...task, wait: { attempt, deadline: waitUntil } })], { delaySeconds: seconds });
            log.info('commit waits for its content', { missing: err.missing.length, attempt, retryInSeconds: seconds, deadline: new Date(waitUntil).toISOString() });
          } catch (e) {
            // Could not re-send: fall back to redelivering this message (uses a receive).
            log.warn('could not re-send the waiting commit; it is redelivered instead', errorFields(e));
            await queue.retryLater(record.receiptHandle, seconds).catch((e2: unknown) => log.warn('could not delay the retry', errorFields(e2)));
            failures.push({ itemIdentifier: record.messageId });
          }
          return;
        }
        env.metrics.add('TaskFailures');
        const retryable = retryableTask(err);
        if (!retryable) {
          log.error('task failed permanently; sent to the dead-letter queue', errorFields(err));
          await deadLetter(record, log);
          return;
        }
        const seconds = backoff(receiveCount);
        log.warn('task failed; it will be retried', { ...errorFields(err), retryInSeconds: seconds });
        await queue.retryLater(record.receiptHandle, seconds).catch((e: unknown) => log.warn('could not delay the retry', errorFields(e)));
        failures.push({ itemIdentifier: record.messageId });
      }
    }
  };
}

export function createWorkerHandler(getEnv: EnvSource, options: HandlerOptions = {}): (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse> {
  return createQueueHandler(getEnv, (env) => env.work, options);
}

export function createExportHandler(getEnv: EnvSource, options: HandlerOptions = {}): (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse> {
  return createQueueHandler(getEnv, (env) => env.exports, options);
}

/** Invalid payloads larger than this are cut in the failed-request record (SQS takes 256 KiB). */
const MAX_RECORDED_PAYLOAD_BYTES = 192 * 1024;

/**
 * The record of a request fan-out refused, in the shape of Lambda's asynchronous on-failure
 * records (so that the failed-requests queue holds one kind of record, whoever wrote it), with
 * `condition: "InvalidRequest"` and the reason as the response payload.
 */
export function failedRequestRecord(event: unknown, reason: string, context: LambdaContext, now: number): string {
  const payload = typeof event === 'string' ? event : JSON.stringify(event) ?? 'undefined';
  const bytes = Buffer.byteLength(payload);
  const requestPayload = bytes <= MAX_RECORDED_PAYLOAD_BYTES ? event : { truncated: true, bytes, head: Buffer.from(payload).subarray(0, 4096).toString('utf8') };
  return JSON.stringify({
    version: '1.0',
    timestamp: new Date(now).toISOString(),
    requestContext: { requestId: context.awsRequestId, functionArn: context.invokedFunctionArn, condition: 'InvalidRequest', approximateInvokeCount: 1 },
    requestPayload,
    responseContext: { statusCode: 200, functionError: 'Unhandled' },
    responsePayload: { errorType: 'InvalidMessageError', errorMessage: reason },
  });
}

/**
 * Fan-out, invoked asynchronously with a replication request, or with a step of a scheduled sync
 * (`type: "sync"`, lib/pipeline/sync.ts). An invalid message cannot succeed on a retry: it is
 * logged and sent at once to the failed-requests queue (`env.failedRequests`, which is also where
 * Lambda puts invocations that failed after their retries), in the same record shape; so is a
 * sync step whose rule is no longer in the configuration or whose repository the rule does not
 * select. Should that send fail, or no queue be set, it is thrown like any failure, and Lambda's
 * retries end in the same queue. Any other failure is thrown, so that Lambda retries the
 * invocation and finally sends it to the on-failure destination. The embedded runtime runs this
 * same handler with its dead-letter queue as the failed-requests queue.
 */
export function createFanoutHandler(getEnv: EnvSource): (event: unknown, context?: LambdaContext) => Promise<{ status: 'planned' | 'synced' | 'invalid'; digest?: string; noop?: boolean; reason?: string } & Partial<SyncStepResult>> {
  return async (event, context = {}) => {
    const env = await getEnv();
    const log = env.logger.child({ awsRequestId: context.awsRequestId, task: 'fanout' });
    const isSync = typeof event === 'object' && event !== null && (event as { type?: unknown }).type === 'sync';
    const what = isSync ? 'sync message' : 'replication request';
    const invalid = async (err: unknown): Promise<{ status: 'invalid'; reason: string }> => {
      const reason = errorMessage(err);
      env.metrics.add('InvalidMessages');
      try {
        if (!env.failedRequests) throw new OciRelayError(ErrorCodes.Config, 'no failed-requests queue is configured');
        await env.failedRequests.send([failedRequestRecord(event, reason, context, (env.now ?? Date.now)())]);
      } catch (sendError) {
        log.error(`invalid ${what}; it could not be sent to the failed-requests queue, so it is thrown`, { reason, ...errorFields(sendError) });
        throw new InvalidMessageError(`${reason.replace(/^invalid message: /, '')} (and the failed-requests queue refused it: ${errorMessage(sendError)})`);
      } finally {
        env.metrics.flush();
      }
      log.error(`invalid ${what} sent to the failed-requests queue`, { reason });
      return { status: 'invalid', reason };
    };
    let message;
    try {
      message = parseFanoutMessage(event);
    } catch (err) {
      return invalid(err);
    }
    if (message.type === 'sync') {
      const syncLog = log.child({ task: 'sync', requestId: message.id, rule: message.rule.name ?? message.rule.index, ...(message.repository ? { repository: message.repository } : { page: message.page ?? 1 }) });
      try {
        return { status: 'synced', ...(await runSyncStep(message, { ...env, logger: syncLog })) };
      } catch (err) {
        if (err instanceof InvalidMessageError) return await invalid(err);
        env.metrics.add('TaskFailures');
        syncLog.error('sync step failed', errorFields(err));
        throw err;
      } finally {
        env.metrics.flush();
      }
    }
    const request = message;
    const requestLog = log.child({ requestId: request.id, image: request.source, target: request.target });
    try {
      const result = await fanOut(request, { ...env, logger: requestLog });
      return { status: 'planned', digest: result.digest, noop: result.noop };
    } catch (err) {
      env.metrics.add('TaskFailures');
      requestLog.error('fan-out failed', errorFields(err));
      throw err;
    } finally {
      env.metrics.flush();
    }
  };
}
