/**
 * Event adapters for the stages: the Lambda event shapes in, partial batch failures out
 * (Powertools-style: one bad record never fails the batch). functions/*.ts are these with AWS
 * ports; the embedded runtime is these with in-memory ports, fed the same serialised messages.
 *
 * Failure policy per record:
 * - invalid message (bad JSON, unknown version or type, bad field): logged with its reason and
 *   sent to the dead-letter queue at once — retrying cannot fix it;
 * - a commit whose content is not all there yet: made visible again after a backoff
 *   (visibility timeout), reported as a batch item failure;
 * - a retryable failure (network, throttling, 5xx): the same backoff, then redelivery, until the
 *   queue's maxReceiveCount moves it to the dead-letter queue;
 * - a permanent failure (digest mismatch, 4xx, invalid manifest): logged and dead-lettered at once.
 */
import pLimit from 'p-limit';
import { errorMessage, OciRelayError } from '../errors.js';
import { InvalidMessageError, parseRequest, parseTask, type Task } from './messages.js';
import { fanOut, NotReadyError, runBlobTask, runCommitTask, runExportTask, runImageTask, type PipelineEnv } from './stages.js';
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
  getRemainingTimeInMillis?: () => number;
}

export interface HandlerOptions {
  /** Records of one batch processed at once. Default 4. */
  recordConcurrency?: number;
  /** Time kept back from the invocation's remaining time for wrapping up. Default 30 s. */
  marginMs?: number;
  /** Seconds before a not-ready commit or a failed task is delivered again. Default 2^(n+1), at most 900. */
  backoffSeconds?: (receiveCount: number) => number;
}

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

function taskFields(task: Task): Record<string, unknown> {
  switch (task.type) {
    case 'image':
      return { requestId: task.request.id, task: 'image', image: task.request.source, digest: task.sourceDigest };
    case 'blob':
      return { requestId: task.requestId, task: 'blob', image: `${task.source.registry}/${task.source.repository}`, blobs: task.blobs.map((b) => b.digest) };
    case 'commit':
      return { requestId: task.request.id, task: 'commit', image: task.request.target, digest: task.digest };
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
    const limit = pLimit(options.recordConcurrency ?? 4);
    await Promise.all(
      (event.Records ?? []).map((record) =>
        limit(async () => {
          const receiveCount = Number(record.attributes?.ApproximateReceiveCount ?? '1') || 1;
          let task: Task;
          try {
            task = parseTask(record.body);
          } catch (err) {
            const reason = err instanceof InvalidMessageError ? err.message : `invalid message: ${errorMessage(err)}`;
            base.error('invalid message sent to the dead-letter queue', { messageId: record.messageId, reason });
            env.metrics.add('InvalidMessages');
            await env.deadLetters.send([record.body]);
            return;
          }
          const log = base.child({ messageId: record.messageId, receiveCount, ...taskFields(task) });
          try {
            await runTask(task, env, deadline, log);
          } catch (err) {
            if (err instanceof NotReadyError) {
              env.metrics.add('CommitsNotReady');
              const seconds = backoff(receiveCount);
              log.info('commit waits for its content', { missing: err.missing.length, retryInSeconds: seconds });
              await queue.retryLater(record.receiptHandle, seconds).catch((e: unknown) => log.warn('could not delay the retry', errorFields(e)));
              failures.push({ itemIdentifier: record.messageId });
              return;
            }
            env.metrics.add('TaskFailures');
            const retryable = err instanceof OciRelayError ? err.retryable : true;
            if (!retryable) {
              log.error('task failed permanently; sent to the dead-letter queue', errorFields(err));
              await env.deadLetters.send([record.body]);
              return;
            }
            const seconds = backoff(receiveCount);
            log.warn('task failed; it will be retried', { ...errorFields(err), retryInSeconds: seconds });
            await queue.retryLater(record.receiptHandle, seconds).catch((e: unknown) => log.warn('could not delay the retry', errorFields(e)));
            failures.push({ itemIdentifier: record.messageId });
          }
        }),
      ),
    );
    env.metrics.flush();
    return { batchItemFailures: failures };
  };
}

export function createWorkerHandler(getEnv: EnvSource, options: HandlerOptions = {}): (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse> {
  return createQueueHandler(getEnv, (env) => env.work, options);
}

export function createExportHandler(getEnv: EnvSource, options: HandlerOptions = {}): (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse> {
  return createQueueHandler(getEnv, (env) => env.exports, options);
}

/**
 * Fan-out, invoked asynchronously with a replication request. An invalid request is logged and
 * dropped (retrying cannot fix it); any other failure is thrown, so that Lambda retries the
 * invocation and finally sends it to the on-failure destination.
 */
export function createFanoutHandler(getEnv: EnvSource): (event: unknown, context?: LambdaContext) => Promise<{ status: 'planned' | 'invalid'; digest?: string; noop?: boolean; reason?: string }> {
  return async (event, context = {}) => {
    const env = await getEnv();
    let request;
    try {
      request = parseRequest(typeof event === 'string' ? event : event);
    } catch (err) {
      env.logger.error('invalid replication request dropped', { awsRequestId: context.awsRequestId, reason: errorMessage(err) });
      env.metrics.add('InvalidMessages');
      env.metrics.flush();
      return { status: 'invalid', reason: errorMessage(err) };
    }
    try {
      const result = await fanOut(request, env);
      return { status: 'planned', digest: result.digest, noop: result.noop };
    } catch (err) {
      env.metrics.add('TaskFailures');
      env.logger.error('fan-out failed', { awsRequestId: context.awsRequestId, requestId: request.id, ...errorFields(err) });
      throw err;
    } finally {
      env.metrics.flush();
    }
  };
}
