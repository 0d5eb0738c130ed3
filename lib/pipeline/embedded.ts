/**
 * The embedded runtime: the serverless pipeline in one process. The very same handlers as the
 * Lambda functions (createFanoutHandler, which also runs the steps of a scheduled sync,
 * createWorkerHandler, createExportHandler) run over the in-memory ports, fed the same serialised messages and SQS-shaped events, so what works here
 * works in AWS. Consumers poll the in-memory queues like Lambda's event source mappings do:
 * batches, partial batch failures, redelivery after the visibility timeout, dead letters after
 * maxReceiveCount.
 */
import { BlobLocations } from '../engine/execute.js';
import type { RegistryPool } from '../engine/registries.js';
import type { ArchiveStore } from '../ports/archive-store.js';
import { InProcessInvoker } from '../ports/invoker.js';
import { InMemoryQueue, type Delivery } from '../ports/queue.js';
import { createExportHandler, createFanoutHandler, createWorkerHandler, type LambdaContext, type SqsBatchResponse, type SqsEvent } from './handlers.js';
import { serialise, type ReplicationRequest, type SyncMessage } from './messages.js';
import type { Config } from '../rules/config.js';
import type { PipelineEnv } from './stages.js';
import { nullMetrics, silentLogger, type Logger, type Metrics } from './telemetry.js';

export interface EmbeddedOptions {
  registries: RegistryPool;
  store: ArchiveStore;
  logger?: Logger;
  metrics?: Metrics;
  /** Batches in flight per queue (Lambda's maximum concurrency). Default 4. */
  concurrency?: number;
  /** Records per batch. Default 5. */
  batchSize?: number;
  /** Receives before a task is dead-lettered. Default 20. */
  maxReceiveCount?: number;
  /** Backoff for not-ready commits and retries, in seconds. Default 0.05·2^n, at most 5 s: in one process the wait is for sibling tasks, not for other machines. */
  backoffSeconds?: (receiveCount: number) => number;
  /**
   * A commit not ready once nothing but waiting commits has been left in the work queue, with no
   * fan-out running and no commit done, for this long can never be: it is dead-lettered.
   * Default 30 s (six of the longest default backoffs: time for child manifests to commit).
   */
  commitGiveUpAfterMs?: number;
  /** Time budget of one task invocation. Default 15 minutes, as a Lambda's. */
  invocationMs?: number;
  /** The rules: what the steps of a scheduled sync (sync messages) read. */
  config?: Config;
  /**
   * Fan-out invocations running at once (Lambda: the function's reserved concurrency); more wait
   * their turn. Default 16: a sync hands on a step per repository, and each step runs up to 16
   * registry requests.
   */
  fanoutConcurrency?: number;
  /** Environment overrides (thresholds, chunk sizes) for the stages. */
  env?: Partial<PipelineEnv>;
}

export class EmbeddedPipeline {
  readonly work: InMemoryQueue;
  readonly exports: InMemoryQueue;
  readonly deadLetters: InMemoryQueue;
  readonly fanout: InProcessInvoker;
  readonly env: PipelineEnv;
  private readonly options: EmbeddedOptions;
  private readonly worker: (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse>;
  private readonly exporter: (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse>;
  private stopped = false;

  constructor(options: EmbeddedOptions) {
    this.options = options;
    const maxReceiveCount = options.maxReceiveCount ?? 20;
    this.work = new InMemoryQueue({ name: 'work', visibilityTimeoutSeconds: 900, maxReceiveCount });
    this.exports = new InMemoryQueue({ name: 'exports', visibilityTimeoutSeconds: 900, maxReceiveCount });
    this.deadLetters = new InMemoryQueue({ name: 'dead-letters' });
    const fanoutHandler = createFanoutHandler(() => this.env);
    // The same handler as the Lambda function: an invalid request goes to `failedRequests` (here
    // the dead-letter queue) at once; other failures are retried and end in `fanout.failures`.
    this.fanout = new InProcessInvoker(async (payload) => fanoutHandler(parseOrRaw(payload), { awsRequestId: `embedded-fanout-${Date.now()}` }), 3, options.fanoutConcurrency ?? 16);
    this.env = {
      registries: options.registries,
      store: options.store,
      work: this.work,
      exports: this.exports,
      deadLetters: this.deadLetters,
      failedRequests: this.deadLetters,
      fanout: this.fanout,
      logger: options.logger ?? silentLogger,
      metrics: options.metrics ?? nullMetrics(),
      locations: new BlobLocations(),
      ...(options.config ? { config: options.config } : {}),
      // Commits wait out of the way until a task of their request completes (expedite, below),
      // rather than being tried at once and found not ready while their blobs are in flight.
      commitDelaySeconds: 2,
      ...options.env,
    };
    const backoffSeconds = options.backoffSeconds ?? ((n: number) => Math.min(5, 0.05 * 2 ** n));
    this.worker = createWorkerHandler(() => this.env, { backoffSeconds, commitGiveUp: () => this.commitsStalled() });
    this.exporter = createExportHandler(() => this.env, { backoffSeconds });
  }

  /** Hands a request to fan-out (asynchronously, as ingress does). */
  async submit(request: ReplicationRequest): Promise<void> {
    await this.fanout.invokeAsync(serialise(request));
  }

  /**
   * Hands the first step of a rule's sync to fan-out (as ingress does for the schedule); fan-out
   * hands on the steps that follow, as in AWS (lib/pipeline/sync.ts).
   */
  async submitSync(message: SyncMessage): Promise<void> {
    await this.fanout.invokeAsync(serialise(message));
  }

  /**
   * Runs consumers until every queue is empty and fan-out is idle (or `stop` is called). With
   * `submitting` (the promise of whatever is still submitting requests, a sync's listing), they
   * start at once and only finish once it has settled: the first copies overlap the listing.
   */
  drain(submitting?: Promise<unknown>): Promise<void> {
    if (!submitting) return this.runConsumers(() => false);
    let open = true;
    const settled = (): void => {
      open = false;
      this.work.wake();
      this.exports.wake();
    };
    submitting.then(settled, settled);
    return this.runConsumers(() => open);
  }

  /** Runs consumers until `stop` is called, waiting for work when there is none (`serve`). */
  run(): Promise<void> {
    return this.runConsumers(() => true);
  }

  private async runConsumers(continuous: () => boolean): Promise<void> {
    const concurrency = this.options.concurrency ?? 4;
    const consumers: Promise<void>[] = [];
    for (let i = 0; i < concurrency; i++) {
      consumers.push(this.consume(this.work, this.worker, continuous));
      consumers.push(this.consume(this.exports, this.exporter, continuous));
    }
    await Promise.all(consumers);
  }

  /** Stops the consumers after the batches in flight (SIGTERM in `serve`). */
  stop(): void {
    this.stopped = true;
    this.work.wake();
    this.exports.wake();
  }

  private stalledSince: number | undefined;
  private stalledSize = 0;

  /**
   * In one process the runtime knows when a waiting commit's content can no longer come: nothing
   * but commits is left in the work queue (no image or blob task, no fan-out running) and none of
   * them has committed for `commitGiveUpAfterMs` (a commit done shrinks the queue; a commit that
   * waits replaces itself).
   */
  private commitsStalled(): boolean {
    const now = Date.now();
    const bodies = this.work.bodies();
    const onlyCommits = this.fanout.pendingCount === 0 && bodies.every((body) => isCommit(body));
    if (!onlyCommits) {
      this.stalledSince = undefined;
      return false;
    }
    if (this.stalledSince === undefined || bodies.length < this.stalledSize) this.stalledSince = now;
    this.stalledSize = bodies.length;
    return now - this.stalledSince >= (this.options.commitGiveUpAfterMs ?? 30_000);
  }

  private busy(): boolean {
    return this.work.size > 0 || this.exports.size > 0 || this.fanout.pendingCount > 0;
  }

  private async consume(queue: InMemoryQueue, handler: (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse>, continuous: () => boolean): Promise<void> {
    const invocationMs = this.options.invocationMs ?? 15 * 60_000;
    const batchSize = this.options.batchSize ?? 5;
    while (!this.stopped) {
      const deliveries = queue.receive(batchSize);
      if (deliveries.length === 0) {
        if (!continuous() && !this.busy()) {
          await this.fanout.idle();
          if (!this.busy()) return;
          continue;
        }
        const next = queue.nextVisibleAt();
        await queue.waitForActivity(next === undefined ? 50 : Math.min(1000, next - Date.now()));
        continue;
      }
      const started = Date.now();
      const response = await handler(toEvent(deliveries, queue.name), { awsRequestId: `embedded-${started}`, getRemainingTimeInMillis: () => invocationMs - (Date.now() - started) });
      const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
      const progressed = new Set<string>();
      for (const d of deliveries) {
        if (failed.has(d.messageId)) continue;
        queue.delete(d.receiptHandle);
        const { requestId } = factsOf(d.body);
        if (requestId) progressed.add(requestId);
      }
      // A commit waiting on its request's content is looked at again as soon as some of that
      // content arrived, rather than after its backoff: in one process that moment is known.
      if (queue === this.work && progressed.size) {
        queue.expedite((body) => {
          const facts = factsOf(body);
          return facts.type === 'commit' && progressed.has(facts.requestId ?? '');
        });
      }
    }
  }
}

/** What Lambda would hand the function: the JSON payload parsed (a payload that is not JSON, as is). */
function parseOrRaw(payload: string): unknown {
  try {
    return JSON.parse(payload) as unknown;
  } catch {
    return payload;
  }
}

/** What the runtime's scheduling reads of a queued message: its type and its request (one parse). */
function factsOf(body: string): { type?: unknown; requestId?: string } {
  try {
    // Blob and export tasks name their request; image and commit tasks carry it.
    const message = JSON.parse(body) as { type?: unknown; requestId?: unknown; request?: { id?: unknown } };
    const id = message.requestId ?? message.request?.id;
    return { type: message.type, ...(typeof id === 'string' ? { requestId: id } : {}) };
  } catch {
    return {};
  }
}

const isCommit = (body: string): boolean => factsOf(body).type === 'commit';

function toEvent(deliveries: Delivery[], queueName: string): SqsEvent {
  return {
    Records: deliveries.map((d) => ({
      messageId: d.messageId,
      receiptHandle: d.receiptHandle,
      body: d.body,
      attributes: { ApproximateReceiveCount: String(d.receiveCount) },
      eventSourceARN: `arn:aws:sqs:local:000000000000:${queueName}`,
    })),
  };
}
