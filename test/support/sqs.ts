// A real SQS endpoint for tests: fauxqs 1.9.2 (npm, dev dependency) started from a launcher of our
// own so that it binds 127.0.0.1, plus helpers that consume a queue the way Lambda's event source
// mapping does: ReceiveMessage, an SQS event built from the received messages, the handler's
// partial batch failures honoured (successes deleted, failures left to their visibility timeout).
import { fileURLToPath } from 'node:url';
import { CreateQueueCommand, DeleteMessageBatchCommand, GetQueueAttributesCommand, ListQueuesCommand, ReceiveMessageCommand, SQSClient, type Message } from '@aws-sdk/client-sqs';
import { onFreePort, pollUntil, spawnManaged, tail } from './process.js';

export interface RunningSqs {
  endpoint: string;
  client: SQSClient;
  /** Creates a queue (and its dead-letter queue with a redrive policy when maxReceiveCount is given). */
  createQueue(name: string, options?: { maxReceiveCount?: number; visibilityTimeout?: number }): Promise<{ url: string; arn: string; dlqUrl?: string }>;
  stop(): Promise<void>;
}

const launcher = fileURLToPath(new URL('./fauxqs-launcher.mjs', import.meta.url));

export async function startSqs(): Promise<RunningSqs> {
  const { proc, endpoint, client } = await onFreePort(async (port) => {
    const proc = spawnManaged(process.execPath, [launcher], { env: { ...process.env, PORT: String(port) } });
    const endpoint = `http://127.0.0.1:${port}`;
    const client = new SQSClient({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
    try {
      // An SQS answer (ListQueues), not just any server that may hold the port.
      await pollUntil(async () => client.send(new ListQueuesCommand({})).then(() => true, () => undefined), {
        timeoutMs: 15_000,
        what: `fauxqs on ${endpoint}`,
        abort: () => {
          if (proc.hasExited()) throw new Error(`fauxqs exited: ${tail(proc.output())}`);
        },
      });
    } catch (err) {
      client.destroy();
      await proc.kill();
      throw err;
    }
    return { proc, endpoint, client };
  });
  let stopping: Promise<void> | undefined;
  return {
    endpoint,
    client,
    async createQueue(name, options = {}) {
      let dlqUrl: string | undefined;
      const attributes: Record<string, string> = { VisibilityTimeout: String(options.visibilityTimeout ?? 30), MaximumMessageSize: '262144' };
      if (options.maxReceiveCount) {
        dlqUrl = (await client.send(new CreateQueueCommand({ QueueName: `${name}-dlq` }))).QueueUrl as string;
        const dlqArn = (await client.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }))).Attributes?.QueueArn as string;
        attributes.RedrivePolicy = JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: options.maxReceiveCount });
      }
      const url = (await client.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }))).QueueUrl as string;
      const arn = (await client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn'] }))).Attributes?.QueueArn as string;
      return { url, arn, ...(dlqUrl ? { dlqUrl } : {}) };
    },
    stop() {
      stopping ??= (async () => {
        client.destroy();
        await proc.kill();
      })();
      return stopping;
    },
  };
}

export interface SqsLambdaRecord {
  messageId: string;
  receiptHandle: string;
  body: string;
  attributes: { ApproximateReceiveCount: string };
  eventSourceARN: string;
}

/** Receives up to `max` messages (a short long-poll) as Lambda event records. */
export async function receiveRecords(client: SQSClient, queue: { url: string; arn: string }, options: { max?: number; waitSeconds?: number; visibilityTimeout?: number } = {}): Promise<SqsLambdaRecord[]> {
  const answer = await client.send(
    new ReceiveMessageCommand({
      QueueUrl: queue.url,
      MaxNumberOfMessages: options.max ?? 10,
      WaitTimeSeconds: options.waitSeconds ?? 0,
      MessageSystemAttributeNames: ['ApproximateReceiveCount'],
      ...(options.visibilityTimeout !== undefined ? { VisibilityTimeout: options.visibilityTimeout } : {}),
    }),
  );
  return (answer.Messages ?? []).map((m: Message) => ({
    messageId: m.MessageId as string,
    receiptHandle: m.ReceiptHandle as string,
    body: m.Body as string,
    attributes: { ApproximateReceiveCount: m.Attributes?.ApproximateReceiveCount ?? '1' },
    eventSourceARN: queue.arn,
  }));
}

/** Deletes the records the handler did not report as failed (what the event source mapping does). */
export async function deleteSucceeded(client: SQSClient, queue: { url: string }, records: SqsLambdaRecord[], failures: Array<{ itemIdentifier: string }>): Promise<void> {
  const failed = new Set(failures.map((f) => f.itemIdentifier));
  const done = records.filter((r) => !failed.has(r.messageId));
  for (let i = 0; i < done.length; i += 10) {
    const batch = done.slice(i, i + 10);
    await client.send(new DeleteMessageBatchCommand({ QueueUrl: queue.url, Entries: batch.map((r, j) => ({ Id: String(j), ReceiptHandle: r.receiptHandle })) }));
  }
}

/** Messages in a queue, visible plus in flight plus delayed. */
export async function queueDepth(client: SQSClient, url: string): Promise<number> {
  const a = (await client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'] }))).Attributes ?? {};
  return Number(a.ApproximateNumberOfMessages ?? 0) + Number(a.ApproximateNumberOfMessagesNotVisible ?? 0) + Number(a.ApproximateNumberOfMessagesDelayed ?? 0);
}

/** Every message a queue holds now (a dead-letter or failed-requests queue), received and kept invisible for a minute. */
export async function receiveAllBodies(client: SQSClient, url: string): Promise<string[]> {
  const out: string[] = [];
  for (;;) {
    const records = await receiveRecords(client, { url, arn: '' }, { max: 10, waitSeconds: 0, visibilityTimeout: 60 });
    if (!records.length) return out;
    out.push(...records.map((r) => r.body));
  }
}
