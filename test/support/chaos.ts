// The pipeline under chaos (issue #8): a queue that delivers every task more than once, late and
// out of order, with a visibility timeout short enough that a delivery comes back while its first
// attempt is still running, and consumers that drive the real handlers like concurrent Lambda
// instances, recording every delivery so that a test can show those overlaps really happened.
//
// Every random decision is derived from the seed and from what it is about (the task, the copy,
// the batch), not from when it is taken: the same seed delays and reorders the same tasks the
// same way whatever the interleaving of the consumers.
import { createHash } from 'node:crypto';
import type { LambdaContext, SqsBatchResponse, SqsEvent } from '../../lib/pipeline/handlers.js';
import { InMemoryQueue, type Delivery, type Queue } from '../../lib/ports/queue.js';
import { seededRandom } from './faults.js';

/**
 * What a message is, whatever its copy, attempt or wait: its kind and what it produces in the
 * target. Copies and re-sends of one task share it; different tasks never do.
 */
export function taskKey(body: string): string {
  let task: { type?: string; request?: { target?: string }; target?: { repository?: string }; targetDigest?: string; digest?: string; blobs?: Array<{ digest: string }>; source?: string };
  try {
    task = JSON.parse(body) as typeof task;
  } catch {
    return `unparsable ${body.slice(0, 60)}`;
  }
  switch (task.type) {
    case 'image':
      return `image ${task.request?.target} ${task.targetDigest}`;
    case 'blob':
      return `blob ${task.target?.repository} ${(task.blobs ?? []).map((b) => b.digest).sort().join(',')}`;
    case 'commit':
      return `commit ${task.request?.target} ${task.digest}`;
    default:
      return `${task.type} ${task.source ?? ''}`;
  }
}

/** A uniform number in [0, 1) for `what`, from the seed alone. */
function decision(seed: number, what: string): number {
  return seededRandom(createHash('sha256').update(`${seed}|${what}`).digest().readUInt32LE(0))();
}

export interface ChaosQueueOptions {
  seed: number;
  name?: string;
  /** Seconds a delivery stays invisible (fractions allowed): short, so that slow attempts are delivered again. */
  visibilityTimeoutSeconds: number;
  maxReceiveCount: number;
  /** Each copy of a message becomes visible after up to this many ms more than asked. */
  maxDelayMs: number;
}

/**
 * The Queue port over an InMemoryQueue, with chaos: the first time a task is sent it is enqueued
 * twice; each copy is delayed by its own random amount; every batch is delivered shuffled.
 *
 * A task sent again (a waiting commit re-sending itself with its attempt count, an image task run
 * twice) is not duplicated once more: a commit that doubled at every wait would grow
 * exponentially, which no real queue does. Such re-sends are copies already, and overlapping
 * deliveries add more.
 */
export class ChaosQueue implements Queue {
  readonly inner: InMemoryQueue;
  /** Copies enqueued beyond the messages sent. */
  duplicated = 0;
  private readonly seen = new Map<string, number>();
  private batches = 0;

  constructor(private readonly options: ChaosQueueOptions) {
    this.inner = new InMemoryQueue({ name: options.name ?? 'chaos', visibilityTimeoutSeconds: options.visibilityTimeoutSeconds, maxReceiveCount: options.maxReceiveCount });
  }

  async send(bodies: readonly string[], options: { delaySeconds?: number } = {}): Promise<void> {
    for (const body of bodies) {
      const key = taskKey(body);
      const sent = this.seen.get(key) ?? 0;
      this.seen.set(key, sent + 1);
      const copies = sent === 0 ? 2 : 1;
      this.duplicated += copies - 1;
      for (let copy = 0; copy < copies; copy++) {
        const extraMs = decision(this.options.seed, `delay ${key} #${sent}.${copy}`) * this.options.maxDelayMs;
        await this.inner.send([body], { delaySeconds: (options.delaySeconds ?? 0) + extraMs / 1000 });
      }
    }
  }

  retryLater(handle: string, seconds: number): Promise<void> {
    return this.inner.retryLater(handle, seconds);
  }

  /** Up to `max` visible messages, shuffled. */
  receive(max: number): Delivery[] {
    const batch = this.inner.receive(max);
    const random = seededRandom(Math.floor(decision(this.options.seed, `batch ${++this.batches}`) * 2 ** 32));
    for (let i = batch.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [batch[i], batch[j]] = [batch[j] as Delivery, batch[i] as Delivery];
    }
    return batch;
  }
}

/** One delivery handled: which message, which task, its receive count, and when it ran. */
export interface DeliveryRecord {
  messageId: string;
  key: string;
  receiveCount: number;
  start: number;
  end: number;
}

export interface ConsumeOptions {
  /** Consumers polling at once, like concurrent Lambda instances. */
  consumers: number;
  batchSize: number;
  /** The harness throws when more batches than this were needed: the run did not drain. */
  maxBatches: number;
  /** The harness throws when the queue has not drained by then (a hang). */
  timeoutMs: number;
  /** Work still to come from elsewhere (fan-out running). */
  busy: () => boolean;
  /**
   * When the handler was done with one record (its last log line), if known; else the batch's
   * end counts. With batchSize at most the handler's recordConcurrency, each record starts with
   * its batch.
   */
  recordEnd?: (messageId: string, receiveCount: number) => number | undefined;
}

type Handler = (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse>;

/**
 * Runs `consumers` consumers of `queue` through `handler` until the queue is empty and nothing is
 * busy, as Lambda's event source mapping does: batches, the handler's partial batch failures
 * honoured (the rest deleted with the receipt handle of their delivery; a stale handle deletes
 * nothing, as in SQS). Throws when it takes more than `maxBatches` batches or `timeoutMs`.
 */
export async function consumeUntilDrained(queue: ChaosQueue, handler: Handler, options: ConsumeOptions): Promise<{ deliveries: DeliveryRecord[]; batches: number }> {
  const deliveries: DeliveryRecord[] = [];
  const deadline = Date.now() + options.timeoutMs;
  const inner = queue.inner;
  let batches = 0;
  let running = 0;
  let failure: unknown;
  const describe = (): string => `${batches} batches, ${deliveries.length} deliveries, ${inner.size} messages left: ${[...new Set(inner.bodies().map(taskKey))].slice(0, 5).join('; ')}`;
  const consumer = async (n: number): Promise<void> => {
    while (failure === undefined) {
      const batch = queue.receive(options.batchSize);
      if (!batch.length) {
        if (running === 0 && inner.size === 0 && !options.busy()) {
          inner.wake();
          return;
        }
        if (Date.now() > deadline) throw new Error(`the pipeline did not drain within ${options.timeoutMs} ms (${describe()})`);
        const next = inner.nextVisibleAt();
        await inner.waitForActivity(next === undefined ? 100 : Math.max(1, Math.min(100, next - Date.now())));
        continue;
      }
      if (++batches > options.maxBatches) throw new Error(`the pipeline did not drain within ${options.maxBatches} batches (${describe()})`);
      running++;
      const start = Date.now();
      try {
        const response = await handler(
          {
            Records: batch.map((d) => ({ messageId: d.messageId, receiptHandle: d.receiptHandle, body: d.body, attributes: { ApproximateReceiveCount: String(d.receiveCount) }, eventSourceARN: `arn:aws:sqs:local:000000000000:${inner.name}` })),
          },
          { awsRequestId: `chaos-${n}-${batches}`, getRemainingTimeInMillis: () => 900_000 - (Date.now() - start) },
        );
        const end = Date.now();
        const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
        for (const d of batch) {
          deliveries.push({ messageId: d.messageId, key: taskKey(d.body), receiveCount: d.receiveCount, start, end: options.recordEnd?.(d.messageId, d.receiveCount) ?? end });
          if (!failed.has(d.messageId)) inner.delete(d.receiptHandle);
        }
      } finally {
        running--;
        inner.wake();
      }
    }
  };
  await Promise.all(
    Array.from({ length: options.consumers }, (_, n) =>
      consumer(n).catch((err: unknown) => {
        failure ??= err;
        inner.wake();
      }),
    ),
  );
  if (failure !== undefined) throw failure;
  return { deliveries, batches };
}

/** Messages delivered again while an earlier delivery of theirs was still being handled. */
export function overlappingDeliveries(deliveries: readonly DeliveryRecord[]): Array<{ messageId: string; key: string; receiveCounts: [number, number] }> {
  const byMessage = new Map<string, DeliveryRecord[]>();
  for (const d of deliveries) byMessage.set(d.messageId, [...(byMessage.get(d.messageId) ?? []), d]);
  const out: Array<{ messageId: string; key: string; receiveCounts: [number, number] }> = [];
  for (const [messageId, list] of byMessage) {
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i] as DeliveryRecord;
        const b = list[j] as DeliveryRecord;
        if (a.start < b.end && b.start < a.end) out.push({ messageId, key: a.key, receiveCounts: [a.receiveCount, b.receiveCount] });
      }
    }
  }
  return out;
}
