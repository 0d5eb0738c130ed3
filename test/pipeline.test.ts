// The serverless pipeline end to end against real local servers (issue #5): the distribution
// registry's own push notification goes into the ingress handler, fan-out enqueues to fauxqs
// (SQS), the worker and export handlers consume real SQS event shapes built from received
// messages, archives land in s3rver. Results are checked with skopeo.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { S3ArchiveStore } from '../lib/aws/s3-archive-store.js';
import { SqsQueue } from '../lib/aws/sqs-queue.js';
import { BlobLocations } from '../lib/engine/execute.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { InProcessInvoker } from '../lib/ports/invoker.js';
import { EmbeddedPipeline } from '../lib/pipeline/embedded.js';
import { createExportHandler, createFanoutHandler, createWorkerHandler, DEFAULT_COMMIT_WAIT_SECONDS, type SqsBatchResponse, type SqsEvent, type LambdaContext } from '../lib/pipeline/handlers.js';
import { createIngressHandler, ReplayCache, type IngressEnv } from '../lib/pipeline/ingress.js';
import { MAX_ANNOTATIONS_BYTES, MAX_INLINE_MANIFEST_BYTES, MAX_MESSAGE_BYTES, parseRequest, parseTask, PROTOCOL_VERSION, serialise, type ReplicationRequest, type RequestRef } from '../lib/pipeline/messages.js';
import { commitTask, type PipelineEnv } from '../lib/pipeline/stages.js';
import { createLogger, createMetrics, nullMetrics, withRequestId } from '../lib/pipeline/telemetry.js';
import { parseConfig } from '../lib/rules/config.js';
import { digestOf } from '../lib/digest.js';
import {
  deleteSucceeded,
  inspectRaw,
  makeTempDir,
  pollUntil,
  pushTestImage,
  pushTestIndex,
  readBody,
  queueDepth,
  receiveAllBodies,
  receiveRecords,
  skopeo,
  startHttpServer,
  startProxy,
  startRegistry,
  startS3,
  startSqs,
  tarOf,
  type RunningHttpServer,
  type RunningRegistry,
  type RunningS3,
  type RunningSqs,
  type SqsLambdaRecord,
} from './support/index.js';

let hooks: RunningHttpServer;
let src: RunningRegistry;
let dst: RunningRegistry;
let sqs: RunningSqs;
let s3: RunningS3;
let work: { url: string; arn: string; dlqUrl?: string };
let exportsQueue: { url: string; arn: string; dlqUrl?: string };
let failedQueue: { url: string; arn: string };
let pool: RegistryPool;
let s3client: S3Client;
const envelopes: unknown[] = [];
const logs: Array<Record<string, unknown>> = [];

function makeEnv(overrides: Partial<PipelineEnv> = {}): PipelineEnv {
  const env: PipelineEnv = {
    registries: pool,
    work: new SqsQueue(sqs.client, work.url),
    exports: new SqsQueue(sqs.client, exportsQueue.url),
    deadLetters: new SqsQueue(sqs.client, work.dlqUrl as string),
    failedRequests: new SqsQueue(sqs.client, failedQueue.url),
    store: new S3ArchiveStore({ client: s3client }),
    fanout: new InProcessInvoker(async (payload) => fanout(JSON.parse(payload))),
    logger: createLogger({ sink: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) }),
    metrics: nullMetrics(),
    locations: new BlobLocations(),
    ...overrides,
  };
  return env;
}

let env: PipelineEnv;
const fanout = createFanoutHandler(() => env);

type Handler = (event: SqsEvent, context?: LambdaContext) => Promise<SqsBatchResponse>;

/**
 * Consumes both queues like Lambda's event source mappings until they are empty and fan-out is
 * idle. `shuffle` delivers every message twice and each batch in reverse order.
 */
async function drain(options: { worker?: Handler; exporter?: Handler; duplicate?: boolean; context?: LambdaContext; maxRounds?: number } = {}): Promise<void> {
  const worker = options.worker ?? createWorkerHandler(() => env, { backoffSeconds: () => 1 });
  const exporter = options.exporter ?? createExportHandler(() => env, { backoffSeconds: () => 1 });
  const duplicated = new Set<string>();
  const invoker = env.fanout as InProcessInvoker;
  for (let round = 0; round < (options.maxRounds ?? 400); round++) {
    await invoker.idle();
    let received = 0;
    for (const [queue, handler] of [[work, worker], [exportsQueue, exporter]] as const) {
      let records: SqsLambdaRecord[] = await receiveRecords(sqs.client, queue, { max: 10, waitSeconds: 0 });
      if (!records.length) continue;
      received += records.length;
      if (options.duplicate) {
        for (const r of records) {
          if (duplicated.has(r.body)) continue;
          duplicated.add(r.body);
          await sqs.client.send(new SendMessageCommand({ QueueUrl: queue.url, MessageBody: r.body }));
        }
        records = [...records].reverse();
      }
      const response = await handler({ Records: records }, options.context ?? { awsRequestId: `test-${round}`, getRemainingTimeInMillis: () => 900_000 });
      await deleteSucceeded(sqs.client, queue, records, response.batchItemFailures);
    }
    if (received) continue;
    await invoker.idle();
    if ((await queueDepth(sqs.client, work.url)) === 0 && (await queueDepth(sqs.client, exportsQueue.url)) === 0 && invoker.pendingCount === 0) return;
    // Messages are invisible (a backoff): long-poll until one is visible again, no sleeping.
    await receiveRecords(sqs.client, work, { max: 1, waitSeconds: 1, visibilityTimeout: 0 });
  }
  throw new Error('the pipeline did not drain');
}

function request(source: string, target: string, extra: Partial<ReplicationRequest> = {}): ReplicationRequest {
  return { v: PROTOCOL_VERSION, type: 'replicate', id: `test-${Math.random().toString(36).slice(2)}`, source, target, mode: 'prefer-multiarch', platforms: [], annotations: {}, referrers: false, includeForeignLayers: false, ...extra };
}

const dlqBodies = (url: string): Promise<string[]> => receiveAllBodies(sqs.client, url);

let index: { digest: string; bytes: Buffer };

/** The blob in the target, read back through a verifying GET, has these exact bytes. */
async function assertBlob(host: string, repository: string, bytes: Buffer): Promise<void> {
  const stream = await pool.get(host).repository(repository).fetchBlob({ digest: digestOf(bytes), size: bytes.length });
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  assert.ok(Buffer.concat(chunks).equals(bytes), `${repository}: the blob's bytes differ`);
}

before(async () => {
  hooks = await startHttpServer(async (req, res) => {
    envelopes.push(JSON.parse((await readBody(req)).toString('utf8')));
    res.writeHead(200).end();
  });
  [src, dst, sqs, s3] = await Promise.all([startRegistry({ notifications: { url: `${hooks.url}/notify`, headers: { Authorization: ['Bearer registry-to-ingress'] } } }), startRegistry(), startSqs(), startS3()]);
  work = await sqs.createQueue('work', { maxReceiveCount: 5, visibilityTimeout: 30 });
  exportsQueue = await sqs.createQueue('exports', { maxReceiveCount: 3, visibilityTimeout: 30 });
  failedQueue = await sqs.createQueue('failed-requests');
  pool = new RegistryPool();
  s3client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' });
  env = makeEnv();
  const shared = tarOf({ 'lib/shared': randomBytes(40_000) });
  const amd64 = await pushTestImage(src.host, 'app/web', 'amd64', { layers: [{ bytes: shared }, { bytes: tarOf({ 'bin/web': randomBytes(9000) }) }] });
  const arm64 = await pushTestImage(src.host, 'app/web', 'arm64', { architecture: 'arm64', variant: 'v8', layers: [{ bytes: shared }, { bytes: tarOf({ 'bin/web': randomBytes(8000) }) }] });
  index = await pushTestIndex(src.host, 'app/web', '1.0', [{ image: amd64, platform: { os: 'linux', architecture: 'amd64' } }, { image: arm64, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }]);
});

after(async () => {
  await pool?.close();
  s3client?.destroy();
  await Promise.all([src?.stop(), dst?.stop(), sqs?.stop(), s3?.stop(), hooks?.stop()]);
});

describe('pipeline end to end', () => {
  test('a distribution push notification -> ingress -> fan-out -> SQS -> workers: the target index is byte-identical', async () => {
    const notification = await pollUntil(() => envelopes.find((e) => JSON.stringify(e).includes('"tag":"1.0"')), { what: 'the registry notification for app/web:1.0' });
    const config = parseConfig(JSON.stringify({ rules: [{ from: `${src.host}/app`, to: `${dst.host}/mirror` }], webhooks: [{ path: '/hooks/registry', kind: 'distribution', token: 'registry-to-ingress' }] }));
    const ingressEnv: IngressEnv = { config, secrets: new Map([['/hooks/registry', { token: 'registry-to-ingress' }]]), submit: (r) => env.fanout.invokeAsync(serialise(r)), logger: env.logger, metrics: nullMetrics(), replays: new ReplayCache() };
    const ingress = withRequestId(createIngressHandler, () => ingressEnv);
    const body = JSON.stringify(notification);
    const event = { rawPath: '/hooks/registry', headers: { 'content-type': 'application/vnd.docker.distribution.events.v1+json', authorization: 'Bearer registry-to-ingress' }, body, isBase64Encoded: false, requestContext: { http: { method: 'POST', path: '/hooks/registry' } } };
    const answer = (await ingress(event)) as { statusCode: number; body: string };
    assert.equal(answer.statusCode, 202, answer.body);
    assert.equal(JSON.parse(answer.body).accepted, 1);
    await drain();
    const copied = await inspectRaw(`${dst.host}/mirror/web:1.0`);
    assert.ok(copied.equals(index.bytes), 'target index bytes differ from the source');
    assert.deepEqual(await dlqBodies(work.dlqUrl as string), []);
    // Without the token: 401 and nothing enqueued.
    const refused = (await ingress({ ...event, headers: { 'content-type': 'application/json' } }, { awsRequestId: 'ingress-req-401' })) as { statusCode: number };
    assert.equal(refused.statusCode, 401);
    assert.ok(logs.some((l) => l.message === 'webhook refused' && l.awsRequestId === 'ingress-req-401' && l.status === 401), 'ingress logs carry the invocation\'s request id');
    assert.equal(await queueDepth(sqs.client, work.url), 0);
  });

  test('fan-out of a source named by digest asks the target for the root while it still reads the source', { timeout: 60_000 }, async () => {
    const [s, t] = await Promise.all([startProxy(`http://${src.host}`), startProxy(`http://${dst.host}`)]);
    try {
      let headSeen!: () => void;
      const seen = new Promise<void>((resolve) => (headSeen = resolve));
      t.intercept = (req) => {
        if (req.method === 'HEAD' && req.path.endsWith(`/manifests/${index.digest}`)) headSeen();
        return undefined;
      };
      // The source's manifest GETs wait until the target was asked: a probe sent only after
      // planning would never come, and fan-out would hang (the test's timeout).
      s.intercept = async (req) => {
        if (req.method === 'GET' && req.path.includes('/manifests/')) await seen;
        return undefined;
      };
      const answer = await fanout(request(`${s.host}/app/web@${index.digest}`, `${t.host}/early/web:1.0`));
      assert.equal(answer.status, 'planned');
      assert.equal(answer.digest, index.digest);
      assert.equal(t.requests.filter((r) => r.method === 'HEAD' && r.path.endsWith(`/manifests/${index.digest}`)).length, 1, 'asked once, not again after planning');
      await drain();
      assert.ok((await inspectRaw(`${dst.host}/early/web:1.0`)).equals(index.bytes));
    } finally {
      await Promise.all([s.stop(), t.stop()]);
    }
  });

  test('an export task writes an archive to S3 that skopeo reads back', async () => {
    await env.fanout.invokeAsync(serialise(request(`${src.host}/app/web:1.0`, `${dst.host}/mirror/exported:1.0`, { export: { format: 'oci', destination: `s3://${s3.bucket}/exports/web-arm64.tar`, platform: 'linux/arm64' } })));
    await drain();
    const object = await s3client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'exports/web-arm64.tar' })).catch((err: Error) => {
      throw new Error(`${err.message}; pipeline warnings: ${JSON.stringify(logs.filter((l) => l.level !== 'info'))}`);
    });
    const bytes = Buffer.from(await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
    assert.equal(object.Metadata?.format, 'oci');
    const file = join(makeTempDir('pipeline-export'), 'web.tar');
    await writeFile(file, bytes);
    const raw = (await skopeo(['inspect', '--raw', `oci-archive:${file}`])).stdout;
    const exported = JSON.parse(raw) as { manifests: Array<{ platform: { architecture: string } }> };
    assert.deepEqual(exported.manifests.map((m) => m.platform.architecture), ['arm64']);
  });

  test('poison messages end in the dead-letter queue, and the batch goes on', async () => {
    const poison = ['not json', JSON.stringify({ v: 2, type: 'blob' }), JSON.stringify({ v: 1, type: 'blob', requestId: 'x', source: { registry: 'a', repository: 'b' }, target: { registry: 'a', repository: 'c' }, blobs: [] })];
    for (const body of poison) await sqs.client.send(new SendMessageCommand({ QueueUrl: work.url, MessageBody: body }));
    // A well-formed task that can never succeed (the manifest does not exist): dead-lettered at once.
    await env.fanout.invokeAsync(serialise(request(`${src.host}/app/web:1.0`, `${dst.host}/mirror/poison:1.0`)));
    await drain();
    const dead = await dlqBodies(work.dlqUrl as string);
    assert.deepEqual([...dead].sort(), [...poison].sort());
    assert.ok(logs.some((l) => l.message === 'invalid message sent to the dead-letter queue' && /protocol version 2/.test(String(l.reason))));
    assert.ok((await inspectRaw(`${dst.host}/mirror/poison:1.0`)).equals(index.bytes), 'valid work in the same batches still completed');
  });

  test('an invalid replication request goes to the failed-requests queue at once, in AWS as in the embedded runtime', async () => {
    const invalid = { ...request(`${src.host}/app/web:1.0`, `${dst.host}/mirror/x:1.0`), mode: 'sideways' };
    const answer = await fanout(invalid, { awsRequestId: 'req-invalid-1', invokedFunctionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:fanout' });
    assert.equal(answer.status, 'invalid');
    const [record] = await receiveRecords(sqs.client, failedQueue, { max: 10, waitSeconds: 1 });
    assert.ok(record, 'recorded in the failed-requests queue (Lambda would count the invocation a success)');
    const aws = JSON.parse(record.body);
    assert.equal(aws.requestContext.condition, 'InvalidRequest');
    assert.equal(aws.requestContext.requestId, 'req-invalid-1');
    assert.equal(aws.requestContext.functionArn, 'arn:aws:lambda:eu-west-1:123456789012:function:fanout');
    assert.deepEqual(aws.requestPayload, invalid);
    assert.match(aws.responsePayload.errorMessage, /mode/);
    assert.ok(logs.some((l) => l.message === 'invalid replication request sent to the failed-requests queue' && l.awsRequestId === 'req-invalid-1' && /mode/.test(String(l.reason))));

    const pipeline = new EmbeddedPipeline({ registries: pool, store: new S3ArchiveStore({ client: s3client }) });
    await pipeline.fanout.invokeAsync(JSON.stringify(invalid));
    await pipeline.drain();
    assert.deepEqual(pipeline.fanout.failures, [], 'not retried as a failure');
    const [local] = pipeline.deadLetters.bodies().map((b) => JSON.parse(b));
    assert.ok(local, 'dead-lettered in the embedded runtime');
    const comparable = (r: Record<string, any>) => ({ ...r, timestamp: undefined, requestContext: { ...r.requestContext, requestId: undefined, functionArn: undefined } });
    assert.deepEqual(comparable(local), comparable(aws), 'the same record in both runtimes');

    // When the record cannot be written, the request is thrown: Lambda retries it into the same queue.
    const saved = env;
    env = makeEnv({ failedRequests: { send: async () => { throw new Error('SQS is down'); }, retryLater: async () => undefined } });
    try {
      await assert.rejects(fanout(invalid, { awsRequestId: 'req-invalid-2' }), /invalid message: replication request: mode .*failed-requests queue refused it: SQS is down/);
    } finally {
      env = saved;
    }
  });

  test('the largest realistic request: every message fits MAX_MESSAGE_BYTES, a rewritten manifest too large to travel inline is re-derived', async () => {
    // 100 layers and annotations at the limit: a rewritten manifest under 32 KiB whose commit,
    // carrying the request (annotations, 64 platforms, export) as well, would not fit inline.
    const layers = Array.from({ length: 100 }, (_, i) => ({ bytes: tarOf({ [`f${i}`]: Buffer.from(`layer ${i}`) }) }));
    const img = await pushTestImage(src.host, 'app/large-message', 'v1', { layers });
    const annotations = Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`org.example.note-${i}`, 'x'.repeat(4000)]));
    assert.ok(Buffer.byteLength(JSON.stringify(annotations)) <= MAX_ANNOTATIONS_BYTES);
    const platforms = ['linux/amd64', ...Array.from({ length: 63 }, (_, i) => `linux/arm64/v${i}-${'a'.repeat(80)}`)];
    const big = request(`${src.host}/app/large-message:v1`, `${dst.host}/mirror/large-message:v1`, { annotations, platforms, export: { format: 'layers', destination: `s3://${s3.bucket}/exports/${'k'.repeat(900)}.tar` } });
    const real = new SqsQueue(sqs.client, work.url);
    const sizes: Array<{ type: string; bytes: number; content?: string }> = [];
    const recording = {
      send: async (bodies: readonly string[], options?: { delaySeconds?: number }) => {
        for (const b of bodies) sizes.push({ type: JSON.parse(b).type, bytes: Buffer.byteLength(b), content: JSON.parse(b).content?.from });
        await real.send(bodies, options);
      },
      retryLater: (handle: string, seconds: number) => real.retryLater(handle, seconds),
    };
    const saved = env;
    env = makeEnv({ work: recording });
    try {
      await env.fanout.invokeAsync(serialise(big));
      await drain();
    } finally {
      env = saved;
    }
    assert.ok(sizes.length > 0);
    for (const m of sizes) assert.ok(m.bytes <= MAX_MESSAGE_BYTES, `a ${m.type} message of ${m.bytes} bytes`);
    const commit = sizes.find((m) => m.type === 'commit');
    assert.equal(commit?.content, 'derive', 'the manifest is re-derived from the source by the worker');
    const copied = JSON.parse((await inspectRaw(`${dst.host}/mirror/large-message:v1`)).toString('utf8'));
    assert.deepEqual(copied.annotations, annotations);
    assert.equal(copied.layers.length, 100);
    assert.ok(Buffer.byteLength(JSON.stringify(copied)) <= MAX_INLINE_MANIFEST_BYTES, 'small enough to travel inline by its own size');
    assert.deepEqual(copied.layers, JSON.parse(img.manifest.toString('utf8')).layers);
    assert.deepEqual(await dlqBodies(work.dlqUrl as string), []);

    // A few hundred bytes more of annotations: refused with the reason, before anything is planned.
    const over = { ...big, annotations: { ...annotations, 'org.example.extra': 'y'.repeat(300) } };
    assert.throws(() => parseRequest(over), /invalid message: replication request: annotations take more than 16384 bytes serialised/);
    const answer = await fanout(over, { awsRequestId: 'too-large' });
    assert.equal(answer.status, 'invalid');
    const [record] = await receiveRecords(sqs.client, failedQueue, { max: 10, waitSeconds: 1 });
    assert.match(JSON.parse(record?.body ?? '{}').responsePayload.errorMessage, /annotations take more than 16384 bytes/);
  });

  test('commit messages: inline while the whole message fits, re-derived beyond; the largest task of each kind fits', () => {
    const maxDigest = `sha512:${'a'.repeat(128)}`;
    const ref: RequestRef = {
      id: 'i'.repeat(200),
      source: `registry.example.com/${'s'.repeat(200)}:${'t'.repeat(128)}`,
      target: `registry.example.com/${'d'.repeat(200)}:${'t'.repeat(128)}`,
      mode: 'normalise-to-multiarch',
      platforms: Array.from({ length: 64 }, (_, i) => `linux/arm64/${String(i).padStart(2, '0')}${'v'.repeat(84)}`),
      annotations: Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`k${i}`, 'x'.repeat(4000)])),
      referrers: true,
      includeForeignLayers: true,
    };
    const exportSpec = { format: 'docker' as const, destination: `s3://bucket/${'k'.repeat(1000)}`, platform: `linux/arm64/${'v'.repeat(80)}`, noConfig: true };
    const manifest = (size: number) => ({ digest: maxDigest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size, bytes: Buffer.alloc(size, 0x61), verbatim: false, dependsOn: [] });
    const tags = Array.from({ length: 16 }, (_, i) => `${i}`.padEnd(128, 't'));
    const small = commitTask({ ...ref, annotations: {}, platforms: [] }, manifest(MAX_INLINE_MANIFEST_BYTES), []);
    assert.equal(small.content.from, 'inline', 'a 32 KiB manifest travels inline when the message has room');
    const crowded = commitTask(ref, manifest(MAX_INLINE_MANIFEST_BYTES), tags, exportSpec);
    assert.equal(crowded.content.from, 'derive', 'the same manifest is re-derived when the request fills the message');
    // Verbatim manifests too travel inline when they fit (no source GET per attempt), else by digest.
    assert.equal(commitTask({ ...ref, annotations: {}, platforms: [] }, { ...manifest(1000), verbatim: true }, []).content.from, 'inline');
    assert.deepEqual(commitTask(ref, { ...manifest(MAX_INLINE_MANIFEST_BYTES), verbatim: true }, tags, exportSpec).content, { from: 'source', digest: maxDigest });
    const waiting = serialise({ ...crowded, wait: { attempt: 999_999, deadline: 9_999_999_999_999 } });
    assert.ok(Buffer.byteLength(waiting) <= MAX_MESSAGE_BYTES);
    assert.doesNotThrow(() => parseTask(waiting));
    // The image task with the most blobs owned elsewhere, and the blob task with the most blobs, continued.
    const image = serialise({ v: 1, type: 'image', request: ref, sourceDigest: maxDigest, targetDigest: maxDigest, platform: ref.platforms[0], notOwned: Array.from({ length: 256 }, () => maxDigest) });
    const blob = serialise({ v: 1, type: 'blob', requestId: ref.id, source: { registry: 'r'.repeat(255), repository: 'p'.repeat(255) }, target: { registry: 'r'.repeat(255), repository: 'p'.repeat(255) }, blobs: Array.from({ length: 64 }, () => ({ digest: maxDigest, size: Number.MAX_SAFE_INTEGER, mediaType: 'm'.repeat(255) })), continuation: { location: `https://${'l'.repeat(4000)}.example/`, hops: 64, hash: `v1.${'0'.repeat(64)}.${Number.MAX_SAFE_INTEGER}.${'A'.repeat(84)}` } });
    for (const body of [image, blob]) {
      assert.ok(Buffer.byteLength(body) <= MAX_MESSAGE_BYTES, `${Buffer.byteLength(body)} bytes`);
      assert.doesNotThrow(() => parseTask(body));
    }
  });

  test('a failing dead-letter send fails only the records that were going there, not the batch', async () => {
    const img = await pushTestImage(src.host, 'app/dlq-down', 'v1', { layers: [{ bytes: tarOf({ ok: randomBytes(2000) }) }] });
    const layer = img.layers[0] as { digest: string; size: number };
    const good = serialise({ v: 1, type: 'blob', requestId: 'dlq-down', source: { registry: src.host, repository: 'app/dlq-down' }, target: { registry: dst.host, repository: 'mirror/dlq-down' }, blobs: [{ digest: layer.digest, size: layer.size, mediaType: 'application/vnd.oci.image.layer.v1.tar' }] });
    const missing = digestOf('not in the source');
    const permanent = serialise({ v: 1, type: 'blob', requestId: 'dlq-down', source: { registry: src.host, repository: 'app/dlq-down' }, target: { registry: dst.host, repository: 'mirror/dlq-down' }, blobs: [{ digest: missing, size: 17, mediaType: 'application/vnd.oci.image.layer.v1.tar' }] });
    const records = [
      { messageId: 'invalid', receiptHandle: 'h1', body: 'not json', attributes: { ApproximateReceiveCount: '1' } },
      { messageId: 'good', receiptHandle: 'h2', body: good, attributes: { ApproximateReceiveCount: '1' } },
      { messageId: 'permanent', receiptHandle: 'h3', body: permanent, attributes: { ApproximateReceiveCount: '1' } },
    ];
    const down = makeEnv({ deadLetters: { send: async () => { throw new Error('SQS unavailable'); }, retryLater: async () => undefined } });
    const response = await createWorkerHandler(() => down)({ Records: records }, { awsRequestId: 'dlq-down', getRemainingTimeInMillis: () => 900_000 });
    assert.deepEqual(response.batchItemFailures.map((f) => f.itemIdentifier).sort(), ['invalid', 'permanent']);
    assert.deepEqual(await pool.get(dst.host).repository('mirror/dlq-down').headBlob(layer.digest), { size: layer.size }, 'the good record was done');
    assert.equal(logs.filter((l) => l.message === 'could not send to the dead-letter queue; the message will be redelivered' && l.awsRequestId === 'dlq-down').length, 2);
  });

  test('createMetrics: the embedded metric format document, summed per flush, nothing written when nothing was added', () => {
    const lines: string[] = [];
    const metrics = createMetrics({ sink: (line) => lines.push(line) });
    metrics.flush();
    assert.deepEqual(lines, []);
    metrics.add('BlobsCopied');
    metrics.add('BlobsCopied', 2);
    metrics.add('BytesCopied', 1234);
    metrics.flush();
    metrics.flush();
    metrics.add('InvalidMessages');
    metrics.flush();
    assert.equal(lines.length, 2);
    const [first, second] = lines.map((l) => JSON.parse(l)) as [Record<string, any>, Record<string, any>];
    assert.deepEqual({ ...first, _aws: { ...first._aws, Timestamp: 0 } }, {
      _aws: { Timestamp: 0, CloudWatchMetrics: [{ Namespace: 'ocirelay', Dimensions: [['service']], Metrics: [{ Name: 'BlobsCopied', Unit: 'Count' }, { Name: 'BytesCopied', Unit: 'Bytes' }] }] },
      service: 'ocirelay',
      BlobsCopied: 3,
      BytesCopied: 1234,
    });
    assert.ok(Number.isInteger(first._aws.Timestamp) && first._aws.Timestamp > 1.7e12, 'ms since the epoch');
    assert.deepEqual(second._aws.CloudWatchMetrics[0].Metrics, [{ Name: 'InvalidMessages', Unit: 'Count' }]);
    assert.equal(second.BlobsCopied, undefined, 'values restart after a flush');
  });

  test('metrics are CloudWatch embedded metric format lines, one per batch; every handler log line names the request, the task and the image', async () => {
    const emf: Array<Record<string, any>> = [];
    const img = await pushTestImage(src.host, 'app/observed', 'v1', { layers: [{ bytes: tarOf({ a: randomBytes(3000) }) }, { bytes: tarOf({ b: randomBytes(3000) }) }] });
    const saved = env;
    env = makeEnv({ metrics: createMetrics({ namespace: 'OciRelayTest', dimensions: { service: 'ocirelay', stage: 'test' }, sink: (line) => emf.push(JSON.parse(line)) }) });
    const from = logs.length;
    try {
      const planned = await fanout(request(`${src.host}/app/observed:v1`, `${dst.host}/mirror/observed:v1`, { id: 'observed-1' }), { awsRequestId: 'fanout-req-1' });
      assert.equal(planned.status, 'planned');
      await drain();
    } finally {
      env = saved;
    }
    assert.ok((await inspectRaw(`${dst.host}/mirror/observed:v1`)).equals(img.manifest));
    assert.ok(emf.length >= 2, 'fan-out and at least one worker batch');
    const totals = new Map<string, number>();
    for (const line of emf) {
      const directive = line._aws.CloudWatchMetrics;
      assert.equal(typeof line._aws.Timestamp, 'number');
      assert.ok(Math.abs(line._aws.Timestamp - Date.now()) < 5 * 60_000, 'a timestamp in ms');
      assert.equal(directive.length, 1);
      assert.equal(directive[0].Namespace, 'OciRelayTest');
      assert.deepEqual(directive[0].Dimensions, [['service', 'stage']]);
      assert.equal(line.service, 'ocirelay');
      assert.equal(line.stage, 'test');
      for (const metric of directive[0].Metrics as Array<{ Name: string; Unit: string }>) {
        assert.equal(metric.Unit, ['BytesCopied', 'ExportBytes'].includes(metric.Name) ? 'Bytes' : 'Count', metric.Name);
        assert.equal(typeof line[metric.Name], 'number', `the value of ${metric.Name} is a member`);
        totals.set(metric.Name, (totals.get(metric.Name) ?? 0) + line[metric.Name]);
      }
    }
    assert.equal(totals.get('BlobsCopied'), 3, 'two layers and the config');
    assert.ok((totals.get('BytesCopied') ?? 0) > 6000);
    assert.equal(totals.get('ManifestsCommitted'), 1);
    const mine = logs.slice(from).filter((l) => l.requestId === 'observed-1');
    const planned = mine.find((l) => l.message === 'fan-out planned');
    assert.equal(planned?.awsRequestId, 'fanout-req-1');
    assert.equal(planned?.task, 'fanout');
    assert.equal(planned?.image, `${src.host}/app/observed:v1`);
    const worker = mine.filter((l) => l.message === 'blob task done' || l.message === 'manifest committed');
    assert.ok(worker.length >= 2);
    for (const line of worker) {
      assert.match(String(line.awsRequestId), /^test-\d+$/, 'the worker invocation\'s request id');
      assert.ok(line.task === 'blob' || line.task === 'commit');
      assert.equal(line.image, line.task === 'blob' ? `${src.host}/app/observed` : `${src.host}/app/observed:v1`);
      assert.equal(line.target, line.task === 'blob' ? `${dst.host}/mirror/observed` : `${dst.host}/mirror/observed:v1`);
      assert.equal(typeof line.messageId, 'string');
    }
  });

  test('a task that keeps failing is retried with backoff until maxReceiveCount moves it to the DLQ', async () => {
    const failing = makeEnv({ registries: new RegistryPool({ retry: { maxAttempts: 1 } }) });
    const body = serialise({ v: 1, type: 'blob', requestId: 'unreachable', source: { registry: '127.0.0.1:9', repository: 'x' }, target: { registry: dst.host, repository: 'mirror/x' }, blobs: [{ digest: digestOf('x'), size: 1, mediaType: 'application/octet-stream' }] });
    await sqs.client.send(new SendMessageCommand({ QueueUrl: work.url, MessageBody: body }));
    const saved = env;
    env = failing;
    try {
      await drain({ worker: createWorkerHandler(() => failing, { backoffSeconds: () => 0 }) });
    } finally {
      env = saved;
      await failing.registries.close();
    }
    assert.deepEqual(await dlqBodies(work.dlqUrl as string), [body]);
  });

  test('every message delivered twice and in reverse order leaves the same result', async () => {
    await env.fanout.invokeAsync(serialise(request(`${src.host}/app/web:1.0`, `${dst.host}/mirror/twice:1.0`)));
    await drain({ duplicate: true });
    assert.ok((await inspectRaw(`${dst.host}/mirror/twice:1.0`)).equals(index.bytes));
    assert.deepEqual(await dlqBodies(work.dlqUrl as string), []);
  });

  test('a commit that waits longer than the queue\'s receive limit is re-sent with its attempt count, then succeeds', async () => {
    const real = new SqsQueue(sqs.client, work.url);
    let holding = true;
    const held: string[] = [];
    const holdingQueue = {
      send: async (bodies: readonly string[], options?: { delaySeconds?: number }) => {
        const commits = bodies.filter((b) => JSON.parse(b).type === 'commit');
        if (holding) held.push(...bodies.filter((b) => JSON.parse(b).type !== 'commit'));
        await real.send(holding ? commits : bodies, options);
      },
      retryLater: (handle: string, seconds: number) => real.retryLater(handle, seconds),
    };
    const metrics = nullMetrics();
    const saved = env;
    env = makeEnv({ work: holdingQueue, metrics });
    try {
      const img = await pushTestImage(src.host, 'app/late', 'v1', { layers: [{ bytes: tarOf({ late: randomBytes(5000) }) }] });
      await env.fanout.invokeAsync(serialise(request(`${src.host}/app/late:v1`, `${dst.host}/mirror/late:v1`)));
      await (env.fanout as InProcessInvoker).idle();
      assert.ok(held.length > 0, 'fan-out enqueued blob tasks');
      const worker = createWorkerHandler(() => env, { backoffSeconds: () => 0 });
      // The work queue dead-letters after 5 receives: wait through 8 attempts.
      const deadlines = new Set<number>();
      for (let attempt = 1; attempt <= 8; attempt++) {
        const records = await receiveRecords(sqs.client, work, { max: 10, waitSeconds: 1 });
        assert.deepEqual(records.map((r) => JSON.parse(r.body).type), ['commit']);
        const [record] = records as [SqsLambdaRecord];
        assert.equal(record.attributes.ApproximateReceiveCount, '1', 'each wait is a new message, not a redelivery');
        const task = JSON.parse(record.body) as { wait?: { attempt: number; deadline: number } };
        assert.equal(task.wait?.attempt ?? 0, attempt - 1);
        if (task.wait) deadlines.add(task.wait.deadline);
        const response = await worker({ Records: records }, { getRemainingTimeInMillis: () => 900_000 });
        assert.deepEqual(response.batchItemFailures, [], 'the waiting commit replaced itself: the delivered copy is deleted');
        await deleteSucceeded(sqs.client, work, records, response.batchItemFailures);
      }
      assert.equal(deadlines.size, 1, 'the overall deadline is set once, at the first wait, and carried');
      const [deadline] = [...deadlines] as [number];
      assert.ok(Math.abs(deadline - (Date.now() + DEFAULT_COMMIT_WAIT_SECONDS * 1000)) < 5 * 60_000, 'the deadline is the documented 24 hours away');
      assert.equal(metrics.totals.get('CommitsNotReady'), 8);
      assert.deepEqual(await dlqBodies(work.dlqUrl as string), []);
      holding = false;
      await real.send(held);
      await drain({ worker });
      assert.ok((await inspectRaw(`${dst.host}/mirror/late:v1`)).equals(img.manifest));
      assert.deepEqual(await dlqBodies(work.dlqUrl as string), []);
    } finally {
      env = saved;
    }
  });

  test('a commit whose blob failed for good ends in the dead-letter queue once its deadline has passed', async () => {
    const img = await pushTestImage(src.host, 'app/gone', 'v1', { layers: [{ bytes: tarOf({ gone: randomBytes(5000) }) }] });
    const layer = img.layers[0]?.digest as string;
    // The layer disappears from the source after the push: its blob task can never succeed.
    const deleted = await fetch(`http://${src.host}/v2/app/gone/blobs/${layer}`, { method: 'DELETE' });
    assert.equal(deleted.status, 202);
    let clock = Date.now();
    const saved = env;
    env = makeEnv({ now: () => clock });
    const worker = createWorkerHandler(() => env, { backoffSeconds: () => 0 });
    try {
      await env.fanout.invokeAsync(serialise(request(`${src.host}/app/gone:v1`, `${dst.host}/mirror/gone:v1`)));
      await (env.fanout as InProcessInvoker).idle();
      const dead: string[] = [];
      for (let round = 0; round < 20 && !dead.some((b) => JSON.parse(b).type === 'commit'); round++) {
        const records = await receiveRecords(sqs.client, work, { max: 10, waitSeconds: 1 });
        if (records.length) {
          const response = await worker({ Records: records }, { getRemainingTimeInMillis: () => 900_000 });
          await deleteSucceeded(sqs.client, work, records, response.batchItemFailures);
        }
        dead.push(...(await dlqBodies(work.dlqUrl as string)));
        clock += 6 * 60 * 60_000; // six hours pass between rounds
      }
      const types = dead.map((b) => JSON.parse(b).type).sort();
      assert.deepEqual(types, ['blob', 'commit'], 'the blob task failed for good, the commit gave up at its deadline');
      const commit = JSON.parse(dead.find((b) => JSON.parse(b).type === 'commit') as string) as { wait: { attempt: number; deadline: number } };
      assert.ok(commit.wait.attempt >= 3, `waited ${commit.wait.attempt} times`);
      assert.ok(logs.some((l) => l.message === 'commit gave up waiting for its content; sent to the dead-letter queue' && l.task === 'commit' && l.image === `${src.host}/app/gone:v1` && l.target === `${dst.host}/mirror/gone:v1`));
      assert.equal(await queueDepth(sqs.client, work.url), 0);
      assert.equal(await inspectRaw(`${dst.host}/mirror/gone:v1`).then(() => 'present', () => 'absent'), 'absent', 'nothing was committed');
    } finally {
      env = saved;
    }
  });

  test('embedded runtime: a commit whose content can no longer come is dead-lettered once only waiting commits are left', async () => {
    const img = await pushTestImage(src.host, 'app/gone-embedded', 'v1', { layers: [{ bytes: tarOf({ gone: randomBytes(3000) }) }] });
    const deleted = await fetch(`http://${src.host}/v2/app/gone-embedded/blobs/${img.layers[0]?.digest}`, { method: 'DELETE' });
    assert.equal(deleted.status, 202);
    const pipeline = new EmbeddedPipeline({ registries: pool, store: new S3ArchiveStore({ client: s3client }), maxReceiveCount: 2, backoffSeconds: () => 0.02, commitGiveUpAfterMs: 300 });
    await pipeline.submit(request(`${src.host}/app/gone-embedded:v1`, `${dst.host}/mirror/gone-embedded:v1`));
    await pipeline.drain();
    const dead = pipeline.deadLetters.bodies().map((b) => JSON.parse(b) as { type: string; wait?: { attempt: number } });
    assert.deepEqual(dead.map((t) => t.type).sort(), ['blob', 'commit']);
    const commit = dead.find((t) => t.type === 'commit');
    assert.ok((commit?.wait?.attempt ?? 0) > 2, `the commit waited past the queue's receive limit (${commit?.wait?.attempt} attempts) before giving up`);
    assert.equal(pipeline.work.deadLetters.length, 0, 'nothing was dead-lettered by the receive count');
  });

  test('a large blob continues across invocations from the upload session, reading the source with Range from the registry\'s offset', async () => {
    const layer = randomBytes(3 * 1024 * 1024 + 123);
    const img = await pushTestImage(src.host, 'app/big', 'v1', { layers: [{ bytes: layer, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }] });
    const layerDigest = img.layers[0]?.digest as string;
    const srcProxy = await startProxy(`http://${src.host}`);
    const saved = env;
    env = makeEnv({ largeBlobBytes: 1024 * 1024, chunkBytes: 1024 * 1024, smallBlobBytes: 512 * 1024 });
    try {
      await env.fanout.invokeAsync(serialise(request(`${srcProxy.host}/app/big:v1`, `${dst.host}/mirror/big:v1`)));
      // A tiny time budget: each invocation sends one chunk and hands over.
      await drain({ worker: createWorkerHandler(() => env, { backoffSeconds: () => 1, marginMs: 0 }), context: { getRemainingTimeInMillis: () => 1 } });
    } finally {
      env = saved;
      await srcProxy.stop();
    }
    const hops = logs.filter((l) => l.message === 'blob task done' && Array.isArray(l.blobs) && (l.blobs as string[]).includes(layerDigest));
    assert.equal(hops.length, 4, 'one 1 MiB chunk per invocation');
    assert.ok(hops.some((h) => h.continued), 'an invocation handed the blob over');
    const sent = hops.reduce((n, h) => n + Number(h.bytes), 0);
    assert.equal(sent, layer.length, 'each byte was sent once: the follow-ups resumed from the registry offset');
    // Each follow-up read the source from where the session stood, never from byte 0 again.
    const reads = srcProxy.requests.filter((r) => r.method === 'GET' && r.path.includes(`/blobs/${layerDigest}`)).map((r) => r.headers.range ?? 'whole');
    const MiB = 1024 * 1024;
    assert.deepEqual(reads, ['whole', `bytes=${MiB}-`, `bytes=${2 * MiB}-`, `bytes=${3 * MiB}-`]);
    assert.ok((await inspectRaw(`${dst.host}/mirror/big:v1`)).equals(img.manifest));
    await assertBlob(dst.host, 'mirror/big', layer);
  });

  test('a transient failure mid-blob keeps the upload session: the rest is handed over with the digest state', async () => {
    const layer = randomBytes(3 * 1024 * 1024 + 77);
    const layerDigest = digestOf(layer);
    const dstProxy = await startProxy(`http://${dst.host}`);
    let patches = 0;
    dstProxy.intercept = (req) => (req.method === 'PATCH' && ++patches === 2 ? { status: 503, body: 'try later' } : undefined);
    const img = await pushTestImage(src.host, 'app/flaky', 'v1', { layers: [{ bytes: layer }] });
    const saved = env;
    env = makeEnv({ largeBlobBytes: 1024 * 1024, chunkBytes: 1024 * 1024, smallBlobBytes: 512 * 1024, blobRetryDelaySeconds: 0 });
    try {
      await env.fanout.invokeAsync(serialise(request(`${src.host}/app/flaky:v1`, `${dstProxy.host}/mirror/flaky:v1`)));
      await drain({ worker: createWorkerHandler(() => env, { backoffSeconds: () => 1 }) });
    } finally {
      env = saved;
      await dstProxy.stop();
    }
    const hops = logs.filter((l) => l.message === 'blob task done' && Array.isArray(l.blobs) && (l.blobs as string[]).includes(layerDigest));
    assert.equal(hops.length, 2);
    assert.match(String(hops[0]?.handedOverAfter), /503/);
    const sessions = new Set(dstProxy.requests.filter((r) => r.method === 'PATCH').map((r) => r.path.split('?')[0]));
    assert.equal(sessions.size, 1, 'every chunk went to the one session');
    assert.deepEqual(dstProxy.requests.filter((r) => r.method === 'DELETE'), [], 'the session was not cancelled');
    assert.deepEqual(await dlqBodies(work.dlqUrl as string), []);
    assert.ok((await inspectRaw(`${dst.host}/mirror/flaky:v1`)).equals(img.manifest));
    await assertBlob(dst.host, 'mirror/flaky', layer);
  });

  test('a follow-up whose upload session is gone starts a fresh upload', async () => {
    const layer = randomBytes(2 * 1024 * 1024 + 5);
    const layerDigest = digestOf(layer);
    const img = await pushTestImage(src.host, 'app/expired', 'v1', { layers: [{ bytes: layer }] });
    const dstProxy = await startProxy(`http://${dst.host}`);
    let first: string | undefined;
    dstProxy.intercept = (req) => {
      const session = /\/blobs\/uploads\/([^/?]+)/.exec(req.path)?.[1];
      if (session && req.method === 'PATCH') first ??= session;
      // The registry forgot the first session between invocations (expired, collected).
      return session === first && req.method === 'GET' ? { status: 404, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}' } : undefined;
    };
    const saved = env;
    env = makeEnv({ largeBlobBytes: 1024 * 1024, chunkBytes: 1024 * 1024, smallBlobBytes: 512 * 1024 });
    try {
      await env.fanout.invokeAsync(serialise(request(`${src.host}/app/expired:v1`, `${dstProxy.host}/mirror/expired:v1`)));
      await drain({ worker: createWorkerHandler(() => env, { backoffSeconds: () => 1, marginMs: 0 }), context: { getRemainingTimeInMillis: () => 1 } });
    } finally {
      env = saved;
      await dstProxy.stop();
    }
    const hops = logs.filter((l) => l.message === 'blob task done' && Array.isArray(l.blobs) && (l.blobs as string[]).includes(layerDigest));
    assert.ok(hops.some((h) => h.freshSession === true), 'the follow-up restarted in a fresh session');
    assert.deepEqual(await dlqBodies(work.dlqUrl as string), []);
    assert.ok((await inspectRaw(`${dst.host}/mirror/expired:v1`)).equals(img.manifest));
    await assertBlob(dst.host, 'mirror/expired', layer);
  });

  test('a blob that needs more invocations than maxBlobHops is dead-lettered and its session cancelled', async () => {
    const layer = randomBytes(3 * 1024 * 1024);
    const layerDigest = digestOf(layer);
    await pushTestImage(src.host, 'app/hops', 'v1', { layers: [{ bytes: layer }] });
    const dstProxy = await startProxy(`http://${dst.host}`);
    const saved = env;
    env = makeEnv({ largeBlobBytes: 1024 * 1024, chunkBytes: 1024 * 1024, maxBlobHops: 2 });
    const body = serialise({ v: 1, type: 'blob', requestId: 'hops', source: { registry: src.host, repository: 'app/hops' }, target: { registry: dstProxy.host, repository: 'mirror/hops' }, blobs: [{ digest: layerDigest, size: layer.length, mediaType: 'application/vnd.oci.image.layer.v1.tar' }] });
    try {
      await sqs.client.send(new SendMessageCommand({ QueueUrl: work.url, MessageBody: body }));
      await drain({ worker: createWorkerHandler(() => env, { backoffSeconds: () => 1, marginMs: 0 }), context: { getRemainingTimeInMillis: () => 1 } });
    } finally {
      env = saved;
      await dstProxy.stop();
    }
    const dead = (await dlqBodies(work.dlqUrl as string)).map((b) => JSON.parse(b) as { continuation?: { hops: number; hash?: string } });
    assert.equal(dead.length, 1);
    assert.equal(dead[0]?.continuation?.hops, 2);
    assert.match(String(dead[0]?.continuation?.hash), /^v1\./, 'the follow-up carried the digest state');
    assert.ok(logs.some((l) => l.message === 'task failed permanently; sent to the dead-letter queue' && /did not finish in 2 invocations/.test(String(l.error))));
    assert.equal(dstProxy.requests.filter((r) => r.method === 'DELETE' && r.path.includes('/blobs/uploads/')).length, 1, 'the session was cancelled');
    assert.equal(await pool.get(dst.host).repository('mirror/hops').headBlob(layerDigest), undefined);
  });

  test('a target with broken chunked upload (ECR) gets one monolithic PUT, whatever the time budget', async () => {
    const layer = randomBytes(3 * 1024 * 1024 + 9);
    const layerDigest = digestOf(layer);
    const img = await pushTestImage(src.host, 'app/mono', 'v1', { layers: [{ bytes: layer }] });
    const dstProxy = await startProxy(`http://${dst.host}`);
    const saved = env;
    env = makeEnv({ largeBlobBytes: 1024 * 1024, chunkBytes: 1024 * 1024, smallBlobBytes: 512 * 1024, monolithicOnly: (registry) => registry === dstProxy.host });
    try {
      await env.fanout.invokeAsync(serialise(request(`${src.host}/app/mono:v1`, `${dstProxy.host}/mirror/mono:v1`)));
      await drain({ worker: createWorkerHandler(() => env, { backoffSeconds: () => 1, marginMs: 0 }), context: { getRemainingTimeInMillis: () => 1 } });
    } finally {
      env = saved;
      await dstProxy.stop();
    }
    assert.deepEqual(dstProxy.requests.filter((r) => r.method === 'PATCH'), [], 'no chunked upload');
    const puts = dstProxy.requests.filter((r) => r.method === 'PUT' && r.path.includes(`digest=${encodeURIComponent(layerDigest)}`));
    assert.equal(puts.length, 1);
    assert.equal(puts[0]?.headers['content-length'], String(layer.length), 'the whole blob in one PUT');
    const hops = logs.filter((l) => l.message === 'blob task done' && Array.isArray(l.blobs) && (l.blobs as string[]).includes(layerDigest));
    assert.equal(hops.length, 1);
    assert.equal(hops[0]?.continued, undefined);
    assert.ok((await inspectRaw(`${dst.host}/mirror/mono:v1`)).equals(img.manifest));
    await assertBlob(dst.host, 'mirror/mono', layer);
  });
});
