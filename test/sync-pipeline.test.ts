// The scheduled sync as steps of the pipeline, against real servers: the schedule's event goes
// into the ingress handler, which hands one sync message per rule to fan-out; the real fan-out
// handler lists the catalog page by page, hands each repository on as a step of its own, lists,
// filters and compares tags (splitting a repository with many into batches), and submits
// replication requests; fan-out plans them into fauxqs (SQS); the worker handler consumes real
// SQS event shapes. The target (its storage, read directly) holds exactly what the rules select;
// a second schedule copies nothing; an invalid sync message goes to the failed-requests queue; a
// repository whose listing fails does not stop the others. The embedded runtime runs the same path.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { awsRegistryPool } from '../lib/aws/env.js';
import { SqsQueue } from '../lib/aws/sqs-queue.js';
import { BlobLocations } from '../lib/engine/execute.js';
import type { RegistryPool } from '../lib/engine/registries.js';
import { FileArchiveStore } from '../lib/ports/archive-store.js';
import { InProcessInvoker } from '../lib/ports/invoker.js';
import { EmbeddedPipeline } from '../lib/pipeline/embedded.js';
import { createFanoutHandler, createWorkerHandler } from '../lib/pipeline/handlers.js';
import { createIngressHandler, ReplayCache, type IngressEnv } from '../lib/pipeline/ingress.js';
import { MAX_MESSAGE_BYTES, MAX_SYNC_TAGS, parseSyncMessage, serialise, type SyncMessage } from '../lib/pipeline/messages.js';
import type { PipelineEnv } from '../lib/pipeline/stages.js';
import { createLogger, nullMetrics } from '../lib/pipeline/telemetry.js';
import { parseConfig, type Config } from '../lib/rules/config.js';
import { syncRequestId } from '../lib/rules/sync.js';
import {
  auditRegistry,
  deleteSucceeded,
  inspectRaw,
  pushTestImage,
  pushTestIndex,
  queueDepth,
  receiveAllBodies,
  receiveRecords,
  registryContents,
  startProxy,
  startRegistry,
  startSqs,
  tarOf,
  type RunningProxy,
  type RunningRegistry,
  type RunningSqs,
  type SqsLambdaRecord,
} from './support/index.js';

/** What the construct's schedule rule sends (infra/replicator.ts SCHEDULED_SYNC_EVENT): no event id. */
const SCHEDULED = { source: 'ocirelay.schedule', 'detail-type': 'Scheduled Sync', detail: {} };

let src: RunningRegistry;
let dst: RunningRegistry;
let proxy: RunningProxy;
let sqs: RunningSqs;
let work: { url: string; arn: string; dlqUrl?: string };
let failedQueue: { url: string; arn: string };
const logs: Array<Record<string, unknown>> = [];
/** Source manifests by `repository:tag`. */
const manifests = new Map<string, Buffer>();

/** The rules, the source read through a proxy that refuses one repository's tag list. */
function rules(to: string): Config {
  return parseConfig(
    JSON.stringify({
      rules: [
        { name: 'team', from: `${proxy.host}/team`, to: `${dst.host}/${to}`, repositories: { exclude: ['*-tmp'] }, tags: { include: ['^v'], exclude: ['-rc'] } },
        { name: 'arm', from: `${proxy.host}/team/web`, to: `${dst.host}/${to}-arm/web`, tags: { include: ['^v'] }, platforms: ['linux/arm64'] },
      ],
    }),
  );
}

/** What the rules select, by target repository (below the rule's `to`). */
const EXPECTED: Record<string, string[]> = {
  api: ['v1.0.0', 'v1.2.0', 'v2.0.0'],
  many: ['v3.0.0', 'v3.0.1', 'v3.0.2', 'v3.0.3', 'v3.0.4'],
  web: ['v1.0', 'v2.0'],
};

/** The tags each repository of the target holds under `prefix`, read from the registry's storage. */
async function heldUnder(prefix: string): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const [name, repo] of Object.entries(await registryContents(dst.dataDir))) {
    if (name.startsWith(`${prefix}/`)) out[name.slice(prefix.length + 1)] = Object.keys(repo.tags).sort();
  }
  return out;
}

/** The AWS wiring of one run: fan-out is Lambda (an invoker with Lambda's retries), SQS is fauxqs. */
interface AwsRun {
  env: PipelineEnv;
  invoker: InProcessInvoker;
  /** Every fan-out payload, in order (retries included). */
  payloads: Array<{ type: string } & Record<string, unknown>>;
  /** Messages sent to the work queue. */
  sent: string[];
  metrics: ReturnType<typeof nullMetrics>;
}

function awsRun(config: Config, registries: RegistryPool, overrides: Partial<PipelineEnv> = {}): AwsRun {
  const payloads: AwsRun['payloads'] = [];
  const sent: string[] = [];
  const real = new SqsQueue(sqs.client, work.url);
  const metrics = nullMetrics();
  let env: PipelineEnv;
  const fanout = createFanoutHandler(() => env);
  let n = 0;
  const invoker = new InProcessInvoker(async (payload) => {
    payloads.push(JSON.parse(payload));
    return fanout(JSON.parse(payload), { awsRequestId: `fanout-${++n}` });
  }, 3, 8);
  env = {
    registries,
    config,
    work: { send: async (bodies, options) => (sent.push(...bodies), real.send(bodies, options)), retryLater: (h, s) => real.retryLater(h, s) },
    exports: new SqsQueue(sqs.client, work.url),
    deadLetters: new SqsQueue(sqs.client, work.dlqUrl as string),
    failedRequests: new SqsQueue(sqs.client, failedQueue.url),
    store: new FileArchiveStore(),
    fanout: invoker,
    logger: createLogger({ sink: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) }),
    metrics,
    locations: new BlobLocations(),
    ...overrides,
  };
  return { env, invoker, payloads, sent, metrics };
}

/** The schedule's event through the ingress handler, as EventBridge invokes it. */
async function schedule(config: Config, submitSync: (m: SyncMessage) => Promise<void>): Promise<Record<string, unknown>> {
  const ingressEnv: IngressEnv = { config, secrets: new Map(), submit: async () => assert.fail('a schedule submits no request itself'), submitSync, logger: createLogger({ sink: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) }), metrics: nullMetrics(), replays: new ReplayCache() };
  return (await createIngressHandler(() => ingressEnv)(SCHEDULED)) as Record<string, unknown>;
}

/** Consumes the work queue like Lambda's event source mapping until it is empty and fan-out idle. */
async function drain(run: AwsRun): Promise<void> {
  const worker = createWorkerHandler(() => run.env, { backoffSeconds: () => 1 });
  for (let round = 0; round < 400; round++) {
    await run.invoker.idle();
    const records: SqsLambdaRecord[] = await receiveRecords(sqs.client, work, { max: 10, waitSeconds: 0 });
    if (records.length) {
      const response = await worker({ Records: records }, { awsRequestId: `worker-${round}`, getRemainingTimeInMillis: () => 900_000 });
      await deleteSucceeded(sqs.client, work, records, response.batchItemFailures);
      continue;
    }
    await run.invoker.idle();
    if ((await queueDepth(sqs.client, work.url)) === 0 && run.invoker.pendingCount === 0) return;
    // Messages are invisible (a backoff): long-poll until one is visible again, no sleeping.
    await receiveRecords(sqs.client, work, { max: 1, waitSeconds: 1, visibilityTimeout: 0 });
  }
  throw new Error('the pipeline did not drain');
}

const drainQueue = (url: string): Promise<string[]> => receiveAllBodies(sqs.client, url);

/** Sums of the `sync step done` lines logged since `from`. */
function stepTotals(from: number): { copy: number; present: number; steps: number } {
  const done = logs.slice(from).filter((l) => l.message === 'sync step done');
  return { copy: done.reduce((n, l) => n + Number(l.copy), 0), present: done.reduce((n, l) => n + Number(l.present), 0), steps: done.length };
}

before(async () => {
  [src, dst, sqs] = await Promise.all([startRegistry(), startRegistry(), startSqs()]);
  // The source's tag list of team/broken is refused; everything else passes through.
  proxy = await startProxy(src.url, {
    intercept: (req) => (req.path.startsWith('/v2/team/broken/tags/list') ? { status: 403, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}' } : undefined),
  });
  work = await sqs.createQueue('sync-work', { maxReceiveCount: 5, visibilityTimeout: 30 });
  failedQueue = await sqs.createQueue('sync-failed-requests');
  const single = async (repository: string, tag: string): Promise<void> => {
    const img = await pushTestImage(src.host, repository, tag, { layers: [{ bytes: tarOf({ [`${repository}/${tag}`]: randomBytes(2000) }) }] });
    manifests.set(`${repository}:${tag}`, img.manifest);
  };
  for (const tag of ['v1.0.0', 'v1.2.0', 'v2.0.0', 'v2.1.0-rc1', 'latest']) await single('team/api', tag);
  for (const tag of EXPECTED.many as string[]) await single('team/many', tag);
  await single('team/many', 'nightly');
  for (const tag of ['v1.0', 'v2.0']) {
    const shared = tarOf({ shared: randomBytes(3000) });
    const amd64 = await pushTestImage(src.host, 'team/web', `child-${tag}-amd64`, { layers: [{ bytes: shared }, { bytes: tarOf({ amd64: randomBytes(1000) }) }] });
    const arm64 = await pushTestImage(src.host, 'team/web', `child-${tag}-arm64`, { architecture: 'arm64', layers: [{ bytes: shared }, { bytes: tarOf({ arm64: randomBytes(1000) }) }] });
    const index = await pushTestIndex(src.host, 'team/web', tag, [{ image: amd64, platform: { os: 'linux', architecture: 'amd64' } }, { image: arm64, platform: { os: 'linux', architecture: 'arm64' } }]);
    manifests.set(`team/web:${tag}`, index.bytes);
  }
  await single('team/web-tmp', 'v1');
  await single('team/broken', 'v1');
  await single('other/thing', 'v1');
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop(), sqs?.stop(), proxy?.stop()]);
});

/** The checks every complete run must pass: exactly the selection, byte for byte, audit clean. */
async function assertMirrored(prefix: string): Promise<void> {
  assert.deepEqual(await heldUnder(prefix), EXPECTED, 'the target holds exactly what the rules select');
  for (const [repository, tags] of Object.entries(EXPECTED)) {
    for (const tag of tags) assert.ok((await inspectRaw(`${dst.host}/${prefix}/${repository}:${tag}`)).equals(manifests.get(`team/${repository}:${tag}`) as Buffer), `${repository}:${tag} is the source's bytes`);
  }
  assert.deepEqual(await heldUnder(`${prefix}-arm`), { web: ['v1.0', 'v2.0'] });
  const index = JSON.parse((await inspectRaw(`${dst.host}/${prefix}-arm/web:v2.0`)).toString()) as { manifests: Array<{ platform: { architecture: string } }> };
  assert.deepEqual(index.manifests.map((m) => m.platform.architecture), ['arm64'], 'the rewriting rule kept linux/arm64 only');
  assert.deepEqual(await auditRegistry(dst.dataDir), [], 'every tag and manifest of the target is complete');
}

/**
 * For one describe block: the rules towards `to`, and the registry pool as lib/aws/env.ts builds
 * it for fan-out (its destination policy names the rules' hosts), closed after the block.
 */
function rulesAndPool(to: string): { config: Config; registries: RegistryPool } {
  const state = {} as { config: Config; registries: RegistryPool };
  before(() => {
    state.config = rules(to);
    state.registries = awsRegistryPool({}, state.config);
  });
  after(() => state.registries.close());
  return state;
}

describe('the scheduled sync in AWS: ingress -> sync steps in fan-out -> replication -> workers', () => {
  const given = rulesAndPool('aws');

  test('the first schedule mirrors exactly what the rules select, step by step; the failing repository does not stop the others', async () => {
    // Small pages and batches, so that the catalog takes several pages and a repository several batches.
    const run = awsRun(given.config, given.registries, { syncPageSize: 2, syncTagsPerMessage: 2 });
    const answer = await schedule(given.config, (m) => run.invoker.invokeAsync(serialise(m)));
    assert.match(String(answer.run), /^schedule\/\d+$/);
    assert.equal(answer.rules, 2);
    await drain(run);
    await assertMirrored('aws');

    const syncs = run.payloads.filter((p) => p.type === 'sync').map((p) => parseSyncMessage(p));
    const team = syncs.filter((m) => m.rule.name === 'team');
    const pages = team.filter((m) => m.repository === undefined);
    // 6 repositories in the catalog, 2 a page: pages 1, 2, 3 (each step hands on the next).
    assert.deepEqual(pages.map((m) => m.page ?? 1), [1, 2, 3]);
    assert.ok(pages.slice(1).every((m) => m.cursor?.startsWith('/v2/_catalog?')), 'a page continues from the registry\'s Link');
    const repositories = new Set(team.filter((m) => m.repository !== undefined && !m.tags).map((m) => m.repository));
    assert.deepEqual([...repositories].sort(), ['team/api', 'team/broken', 'team/many', 'team/web'], 'one step per repository the rule selects (not web-tmp, not other/)');
    const batches = team.filter((m) => m.repository === 'team/many' && m.tags).map((m) => m.tags);
    assert.deepEqual(batches.map((t) => t?.length), [2, 2, 1], 'five selected tags, in batches of two');
    assert.deepEqual(batches.flat().sort(), EXPECTED.many, 'each selected tag in one batch');
    for (const p of run.payloads) assert.ok(Buffer.byteLength(JSON.stringify(p)) <= MAX_MESSAGE_BYTES);

    // The broken repository's step failed each of Lambda's three attempts, and was then given up
    // (Lambda's on-failure destination); nothing else failed.
    assert.equal(run.invoker.failures.length, 1);
    const [failure] = run.invoker.failures as [{ payload: string; error: unknown }];
    assert.deepEqual(JSON.parse(failure.payload), { v: 1, type: 'sync', id: answer.run, rule: { index: 0, name: 'team' }, repository: 'team/broken' });
    assert.match(String((failure.error as Error).message), /sync of team\/broken \(rule team\): 1 of 1 could not be synced .*listing tags: .*403/);
    assert.equal(team.filter((m) => m.repository === 'team/broken').length, 3, 'tried three times');
    assert.deepEqual(await drainQueue(work.dlqUrl as string), []);

    const requests = run.payloads.filter((p) => p.type === 'replicate');
    assert.equal(requests.length, 3 + 5 + 2 + 2, 'a request per selected tag that differed, no more');
    assert.ok(requests.every((r) => String(r.id).startsWith(`${answer.run}/`)), 'requests are named after the run');
  });

  test('a second schedule copies nothing: everything is already there', async () => {
    const run = awsRun(given.config, given.registries, { syncPageSize: 2, syncTagsPerMessage: 2 });
    const from = logs.length;
    await schedule(given.config, (m) => run.invoker.invokeAsync(serialise(m)));
    await drain(run);
    assert.deepEqual(run.payloads.filter((p) => p.type === 'replicate'), [], 'no replication request');
    assert.deepEqual(run.sent, [], 'nothing enqueued');
    assert.equal(stepTotals(from).copy, 0);
    assert.equal(stepTotals(from).present, 3 + 5 + 2 + 2, 'every selected tag compared and found already there');
    assert.equal(run.metrics.totals.get('SyncRequested'), 0);
    await assertMirrored('aws');
  });

  test('a duplicated sync step only compares again', async () => {
    const run = awsRun(given.config, given.registries);
    const step: SyncMessage = { v: 1, type: 'sync', id: 'dup', rule: { index: 0, name: 'team' }, repository: 'team/api' };
    await run.invoker.invokeAsync(serialise(step));
    await run.invoker.invokeAsync(serialise(step));
    await drain(run);
    assert.equal(run.payloads.length, 2);
    assert.deepEqual(run.sent, []);
    await assertMirrored('aws');
  });

  test('invalid sync messages go to the failed-requests queue at once, and nothing is listed or enqueued', async () => {
    const run = awsRun(given.config, given.registries);
    const fanout = createFanoutHandler(() => run.env);
    proxy.reset();
    const base = { v: 1, type: 'sync', id: 'bad' };
    const cases: Array<[unknown, RegExp]> = [
      [{ ...base, rule: { index: 0, name: 'team' }, repository: 'team/api', cursor: '/v2/_catalog?last=x' }, /sync message: cursor is only for a rule step/],
      [{ ...base, rule: { index: 0, name: 'team' }, repository: 'team/api', tags: Array.from({ length: MAX_SYNC_TAGS + 1 }, (_, i) => `t${i}`) }, /sync message: tags /],
      [{ ...base, rule: { index: 0, name: 'team' }, repository: '../etc' }, /sync message: repository is not a repository path/],
      [{ ...base, v: 2, rule: { index: 0 } }, /sync message has protocol version 2/],
      [{ ...base, rule: { index: 7, name: 'gone' } }, /the configuration has no rule 7 named "gone"/],
      [{ ...base, rule: { index: 0, name: 'renamed' } }, /the configuration has no rule 0 named "renamed"/],
      [{ ...base, rule: { index: 0, name: 'team' }, repository: 'other/thing' }, /repository other\/thing is not one rule team selects/],
      [{ ...base, rule: { index: 0, name: 'team' }, repository: 'team/web-tmp' }, /repository team\/web-tmp is not one rule team selects/],
    ];
    for (const [message, reason] of cases) {
      const answer = await fanout(message, { awsRequestId: 'invalid-sync', invokedFunctionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:fanout' });
      assert.equal(answer.status, 'invalid', JSON.stringify(message));
      assert.match(String(answer.reason), reason);
    }
    const records = (await drainQueue(failedQueue.url)).map((b) => JSON.parse(b));
    assert.equal(records.length, cases.length);
    for (const [i, [message, reason]] of cases.entries()) {
      const record = records.find((r) => JSON.stringify(r.requestPayload) === JSON.stringify(message));
      assert.ok(record, `case ${i} recorded`);
      assert.equal(record.requestContext.condition, 'InvalidRequest');
      assert.match(record.responsePayload.errorMessage, reason);
    }
    assert.ok(logs.some((l) => l.message === 'invalid sync message sent to the failed-requests queue' && l.awsRequestId === 'invalid-sync'));
    assert.deepEqual(proxy.requests, [], 'no registry was asked anything');
    assert.deepEqual(run.sent, []);
    assert.deepEqual(run.payloads, []);
  });

  test('messages are bounded: the largest sync message fits MAX_MESSAGE_BYTES; request ids stay within their limit', () => {
    const largest = serialise({ v: 1, type: 'sync', id: 'i'.repeat(200), rule: { index: 9_999, name: 'n'.repeat(100) }, repository: `${'a'.repeat(127)}/${'b'.repeat(127)}`, tags: Array.from({ length: MAX_SYNC_TAGS }, (_, i) => `${i}`.padEnd(128, 't')) });
    assert.ok(Buffer.byteLength(largest) <= MAX_MESSAGE_BYTES, `${Buffer.byteLength(largest)} bytes`);
    assert.doesNotThrow(() => parseSyncMessage(largest));
    const page = serialise({ v: 1, type: 'sync', id: 'i'.repeat(200), rule: { index: 0 }, cursor: `/v2/_catalog?${'c'.repeat(2000)}`, page: 100_000 });
    assert.doesNotThrow(() => parseSyncMessage(page));
    const id = syncRequestId('i'.repeat(200), 'n'.repeat(100), 'r'.repeat(255), 't'.repeat(128));
    assert.equal(id.length, 200);
    assert.notEqual(id, syncRequestId('i'.repeat(200), 'n'.repeat(100), 'r'.repeat(255), 'u'.repeat(128)), 'distinct tags keep distinct ids');
  });
});

describe('the scheduled sync in the embedded runtime: the same handlers, in process', () => {
  const given = rulesAndPool('embedded');

  test('a schedule mirrors exactly the selection; a second copies nothing', async () => {
    const metrics = nullMetrics();
    const pipeline = new EmbeddedPipeline({ registries: given.registries, store: new FileArchiveStore(), config: given.config, metrics, env: { syncPageSize: 3, syncTagsPerMessage: 4 } });
    await schedule(given.config, (m) => pipeline.submitSync(m));
    await pipeline.drain();
    await assertMirrored('embedded');
    assert.equal(pipeline.fanout.failures.length, 1, 'the broken repository, after three attempts');
    assert.match(JSON.parse(pipeline.fanout.failures[0]?.payload ?? '{}').repository, /^team\/broken$/);
    assert.deepEqual(pipeline.deadLetters.bodies(), []);
    assert.equal(metrics.totals.get('SyncRequested'), 12);

    const again = nullMetrics();
    const second = new EmbeddedPipeline({ registries: given.registries, store: new FileArchiveStore(), config: given.config, metrics: again });
    await schedule(given.config, (m) => second.submitSync(m));
    await second.drain();
    assert.equal(again.totals.get('SyncRequested'), 0);
    assert.equal(again.totals.get('SyncPresent'), 12);
    assert.equal(again.totals.get('ManifestsCommitted') ?? 0, 0);
    await assertMirrored('embedded');
  });
});
