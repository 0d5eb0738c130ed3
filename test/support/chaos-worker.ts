// A worker process for the SIGKILL chaos test (test/pipeline-chaos.test.ts): the real worker
// handler consuming the real work queue on fauxqs, the way Lambda's event source mapping does
// (ReceiveMessage, the handler, the successes deleted), until the queue is empty; the parent
// kills it with SIGKILL whenever it likes. Run as
//   node --import tsx test/support/chaos-worker.ts
// with SQS_ENDPOINT, WORK_URL, WORK_ARN, DLQ_URL, EXPORTS_URL and GENERATION in the environment.
// Warnings and errors go to stderr as JSON lines (the parent shows them on failure).
import { SQSClient } from '@aws-sdk/client-sqs';
import { SqsQueue } from '../../lib/aws/sqs-queue.js';
import { BlobLocations } from '../../lib/engine/execute.js';
import { RegistryPool } from '../../lib/engine/registries.js';
import { createWorkerHandler } from '../../lib/pipeline/handlers.js';
import { createLogger, nullMetrics } from '../../lib/pipeline/telemetry.js';
import type { PipelineEnv } from '../../lib/pipeline/stages.js';
import { FileArchiveStore } from '../../lib/ports/archive-store.js';
import { deleteSucceeded, queueDepth, receiveRecords } from './sqs.js';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`chaos-worker: ${name} is not set`);
  return value;
}

const client = new SQSClient({ endpoint: required('SQS_ENDPOINT'), region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
const work = { url: required('WORK_URL'), arn: required('WORK_ARN') };
const generation = required('GENERATION');
const env: PipelineEnv = {
  registries: new RegistryPool({ retry: { baseDelayMs: 10, maxDelayMs: 200 } }),
  work: new SqsQueue(client, work.url),
  exports: new SqsQueue(client, required('EXPORTS_URL')),
  deadLetters: new SqsQueue(client, required('DLQ_URL')),
  store: new FileArchiveStore(),
  fanout: {
    invokeAsync: async () => {
      throw new Error('chaos-worker: no fan-out here');
    },
  },
  logger: createLogger({ level: 'warn', fields: { generation }, sink: (line) => process.stderr.write(`${line}\n`) }),
  metrics: nullMetrics(),
  locations: new BlobLocations(),
  smallBlobBytes: Number(process.env.SMALL_BLOB_BYTES ?? 4 * 1024 * 1024),
};
// SQS counts delays in whole seconds: a commit that waits, or a task that failed, comes back after 1 s.
const handler = createWorkerHandler(() => env, { backoffSeconds: () => 1 });

for (let batch = 1; ; batch++) {
  const records = await receiveRecords(client, work, { max: 10, waitSeconds: 1 });
  if (!records.length) {
    // Visible, in flight (a killed worker's deliveries until their visibility timeout) or delayed.
    if ((await queueDepth(client, work.url)) === 0) break;
    continue;
  }
  const response = await handler({ Records: records }, { awsRequestId: `chaos-worker-${generation}-${batch}`, getRemainingTimeInMillis: () => 900_000 });
  await deleteSucceeded(client, work, records, response.batchItemFailures);
}
await (env.registries as RegistryPool).close();
client.destroy();
process.stdout.write(`chaos-worker ${generation}: drained\n`);
