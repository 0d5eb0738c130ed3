/**
 * The Queue port on SQS. Sends go out as SendMessageBatch (at most 10 entries and 256 KiB per
 * call, as SQS allows), entries that SQS reports as failed are sent again once, then reported;
 * `retryLater` is ChangeMessageVisibility on the delivery's receipt handle.
 */
import { ChangeMessageVisibilityCommand, SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { ErrorCodes, OciRelayError } from '../errors.js';
import type { Queue } from '../ports/queue.js';

const MAX_BATCH_ENTRIES = 10;
const MAX_BATCH_BYTES = 256 * 1024;
/** SQS's ceiling for a visibility timeout (12 hours). */
const MAX_VISIBILITY_SECONDS = 43_200;

export class SqsQueue implements Queue {
  constructor(
    private readonly client: SQSClient,
    readonly queueUrl: string,
  ) {}

  async send(bodies: readonly string[], options: { delaySeconds?: number } = {}): Promise<void> {
    for (const batch of batches(bodies)) {
      let entries = batch.map((body, i) => ({ Id: String(i), MessageBody: body, ...(options.delaySeconds ? { DelaySeconds: Math.min(900, Math.ceil(options.delaySeconds)) } : {}) }));
      for (let attempt = 1; entries.length; attempt++) {
        const result = await this.client.send(new SendMessageBatchCommand({ QueueUrl: this.queueUrl, Entries: entries }));
        const failed = new Set((result.Failed ?? []).map((f) => f.Id));
        if (!failed.size) break;
        if (attempt >= 2) {
          const first = result.Failed?.[0];
          throw new OciRelayError(ErrorCodes.Network, `SQS refused ${failed.size} message(s): ${first?.Code ?? 'error'} ${first?.Message ?? ''}`.trim(), { retryable: !first?.SenderFault });
        }
        entries = entries.filter((e) => failed.has(e.Id));
      }
    }
  }

  async retryLater(handle: string, seconds: number): Promise<void> {
    await this.client.send(new ChangeMessageVisibilityCommand({ QueueUrl: this.queueUrl, ReceiptHandle: handle, VisibilityTimeout: Math.max(0, Math.min(MAX_VISIBILITY_SECONDS, Math.ceil(seconds))) }));
  }
}

/** Groups bodies into SendMessageBatch calls within SQS's entry and byte limits. */
export function batches(bodies: readonly string[]): string[][] {
  const out: string[][] = [];
  let current: string[] = [];
  let bytes = 0;
  for (const body of bodies) {
    const size = Buffer.byteLength(body);
    if (current.length && (current.length >= MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(body);
    bytes += size;
  }
  if (current.length) out.push(current);
  return out;
}
