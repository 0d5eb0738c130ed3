// The pipeline under chaos (issue #8): the real fan-out and worker handlers through the Queue
// port, with every task delivered more than once, late, out of order, and again while its first
// attempt still runs; then real worker processes on fauxqs (SQS) killed with SIGKILL at random
// points and the work re-run. Whatever happens, the target ends identical to the source (skopeo
// for the roots, the registry's storage for the children), no manifest PUT reaches the target
// before its content (checked at that moment, in the target proxy), the run drains within a
// bound, and the dead-letter queue holds exactly the tasks that could never succeed.
//
// A failure names its seed; CHAOS_SEED=<n> replays one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { SqsQueue } from '../lib/aws/sqs-queue.js';
import { BlobLocations } from '../lib/engine/execute.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { FileArchiveStore } from '../lib/ports/archive-store.js';
import { InProcessInvoker } from '../lib/ports/invoker.js';
import { InMemoryQueue } from '../lib/ports/queue.js';
import { EmbeddedPipeline } from '../lib/pipeline/embedded.js';
import { createFanoutHandler, createWorkerHandler } from '../lib/pipeline/handlers.js';
import { PROTOCOL_VERSION, serialise, type ReplicationRequest } from '../lib/pipeline/messages.js';
import type { PipelineEnv } from '../lib/pipeline/stages.js';
import { createLogger, nullMetrics } from '../lib/pipeline/telemetry.js';
import { ChaosQueue, consumeUntilDrained, overlappingDeliveries, taskKey } from './support/chaos.js';
import { spawnManaged, type ManagedProcess } from './support/process.js';
import {
  auditRegistry,
  commitOrderChecker,
  inspectRaw,
  pollUntil,
  pushTestImage,
  pushTestIndex,
  queueDepth,
  randomBytes,
  receiveRecords,
  registryContents,
  seededRandom,
  startFaultProxy,
  startProxy,
  startRegistry,
  startSqs,
  storedBlob,
  tarOf,
  type PushedImage,
  type RunningRegistry,
} from './support/index.js';

const BASE_SEED = Number(process.env.CHAOS_SEED ?? 20261208);
const SEEDS = process.env.CHAOS_SEED ? [BASE_SEED] : [BASE_SEED, BASE_SEED + 1, BASE_SEED + 2];
const KiB = 1024;
/** Blobs above this travel alone in their task (the missing one, the shared layer, the large ones). */
const SMALL_BLOB_BYTES = 100 * KiB;
/** The first GET of every source blob is held this long: first attempts outlive the visibility timeout. */
const FIRST_GET_MS = 600;
const VISIBILITY_SECONDS = 0.25;
const BLOB_GET = /^\/v2\/.+\/blobs\/(sha(?:256|512):[a-f0-9]+)/;

let src: RunningRegistry;
let index: { digest: string; bytes: Buffer };
let platforms: PushedImage[];
let single: PushedImage;
let broken: PushedImage;
/** The layer of `broken` that the source registry no longer has (404). */
let missing: { digest: string; size: number };

function request(source: string, target: string, id: string): ReplicationRequest {
  return { v: PROTOCOL_VERSION, type: 'replicate', id, source, target, mode: 'prefer-multiarch', platforms: [], annotations: {}, referrers: false, includeForeignLayers: false };
}

/** Prefixes a failure with its seed and how to replay it. */
async function withSeed<T>(seed: number, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof Error) err.message = `seed ${seed} (CHAOS_SEED=${seed} replays it): ${err.message}`;
    throw err;
  }
}

/** The possible images are in the target byte for byte: the roots by skopeo, the children from storage. */
async function assertReplicated(target: RunningRegistry, host: string, context: string): Promise<void> {
  assert.ok((await inspectRaw(`${host}/mirror/multi:v1`)).equals(index.bytes), `mirror/multi:v1 differs from the source index; ${context}`);
  for (const image of platforms) assert.ok((await storedBlob(target.dataDir, image.digest))?.equals(image.manifest), `child ${image.digest} differs or is missing; ${context}`);
  assert.ok((await inspectRaw(`${host}/mirror/single:v1`)).equals(single.manifest), `mirror/single:v1 differs from the source; ${context}`);
  const contents = await registryContents(target.dataDir);
  for (const repository of ['mirror/multi', 'mirror/single']) {
    for (const image of repository === 'mirror/multi' ? platforms : [single]) {
      for (const blob of [image.configDigest, ...image.layers.map((l) => l.digest)]) assert.ok(contents[repository]?.layers.includes(blob), `${repository} lacks ${blob}; ${context}`);
    }
  }
  assert.deepEqual(await auditRegistry(target.dataDir), [], `every tag and manifest in the target has all its content; ${context}`);
}

before(async () => {
  src = await startRegistry();
  const shared = tarOf({ 'lib/shared.so': randomBytes(150 * KiB, 1) });
  platforms = [];
  for (const [i, architecture] of ['amd64', 'arm64'].entries()) {
    platforms.push(
      await pushTestImage(src.host, 'app/multi', architecture, {
        architecture,
        layers: [{ bytes: shared }, { bytes: tarOf({ 'bin/app': randomBytes(20 * KiB + i, 10 + i) }) }, { bytes: tarOf({ 'data/blob': randomBytes(120 * KiB + i, 20 + i) }) }],
      }),
    );
  }
  index = await pushTestIndex(src.host, 'app/multi', 'v1', platforms.map((image, i) => ({ image, platform: { os: 'linux', architecture: ['amd64', 'arm64'][i] as string } })));
  single = await pushTestImage(src.host, 'app/single', 'v1', { layers: [{ bytes: shared }, { bytes: tarOf({ 'bin/tool': randomBytes(60 * KiB, 30) }) }] });
  broken = await pushTestImage(src.host, 'app/broken', 'v1', { layers: [{ bytes: tarOf({ 'etc/ok': randomBytes(30 * KiB, 40) }) }, { bytes: tarOf({ 'gone/data': randomBytes(200 * KiB, 41) }) }] });
  missing = broken.layers[1] as { digest: string; size: number };
  // Deleted through the registry's API: every GET of it is now a 404 BLOB_UNKNOWN.
  const deleted = await fetch(`${src.url}/v2/app/broken/blobs/${missing.digest}`, { method: 'DELETE' });
  assert.equal(deleted.status, 202);
  assert.equal((await fetch(`${src.url}/v2/app/broken/blobs/${missing.digest}`)).status, 404);
});

after(async () => {
  await src?.stop();
});

describe('the pipeline under chaos', () => {
  test(`duplicated, delayed, reordered and overlapping deliveries through the Queue port converge (seeds ${SEEDS.join(', ')})`, async (t) => {
    for (const seed of SEEDS) t.diagnostic(`seed ${seed}: ${await withSeed(seed, () => queueChaos(seed))}`);
  });

  test('a commit PUT refused for content the target has (a duplicate re-linking it) waits and commits; one refused for good is dead-lettered', async (t) => {
    // What distribution 2.8 answered under the chaos above: it rewrites a link file in place, and
    // a PUT reading the link of a child or blob while a duplicate task re-writes it finds nothing.
    const refusal = JSON.stringify({ errors: [{ code: 'DIGEST_INVALID', message: 'provided digest did not match uploaded content' }, { code: 'MANIFEST_BLOB_UNKNOWN', message: 'blob unknown to registry' }] });
    const dst = await startRegistry();
    const refused: string[] = [];
    const proxy = await startProxy(dst.url, {
      intercept: (req) => {
        const match = /^\/v2\/(.+)\/manifests\//.exec(req.path);
        if (req.method !== 'PUT' || !match) return undefined;
        // The first PUT of mirror/once is refused; every PUT of mirror/never is.
        if (match[1] === 'mirror/never' || (match[1] === 'mirror/once' && !refused.includes('mirror/once'))) {
          refused.push(match[1] as string);
          return { status: 400, headers: { 'content-type': 'application/json' }, body: refusal };
        }
        return undefined;
      },
    });
    const pool = new RegistryPool();
    const lines: string[] = [];
    const pipeline = new EmbeddedPipeline({ registries: pool, store: new FileArchiveStore(), logger: createLogger({ sink: (line) => lines.push(line) }), backoffSeconds: () => 0.05, commitGiveUpAfterMs: 500 });
    t.after(async () => {
      await pool.close();
      await proxy.stop();
      await dst.stop();
    });
    await pipeline.submit(request(`${src.host}/app/single:v1`, `${proxy.host}/mirror/once:v1`, 'refused-once'));
    await pipeline.submit(request(`${src.host}/app/single:v1`, `${proxy.host}/mirror/never:v1`, 'refused-always'));
    await pipeline.drain();
    assert.ok((await inspectRaw(`${dst.host}/mirror/once:v1`)).equals(single.manifest), 'committed on its next attempt');
    assert.deepEqual(refused.filter((r) => r === 'mirror/once'), ['mirror/once']);
    assert.ok(refused.filter((r) => r === 'mirror/never').length >= 2, 'the refused commit was tried again, not dead-lettered at once');
    assert.deepEqual(pipeline.deadLetters.bodies().map(taskKey), [`commit ${proxy.host}/mirror/never:v1 ${single.digest}`], 'only the commit refused for good is dead-lettered, once nothing else could come');
    const gaveUp = lines.map((l) => JSON.parse(l) as { message: string; error?: string }).find((l) => l.message === 'commit gave up waiting for its content; sent to the dead-letter queue');
    assert.match(gaveUp?.error ?? '', /was refused for missing content by the target although all of it was there \(400 MANIFEST_BLOB_UNKNOWN\)/);
    assert.deepEqual(await auditRegistry(dst.dataDir), []);
  });

  test('workers killed with SIGKILL at random points on SQS: the work is re-run and converges', async (t) => {
    t.diagnostic(`seed ${BASE_SEED}: ${await withSeed(BASE_SEED, () => killChaos(BASE_SEED))}`);
  });
});

/**
 * One run through the Queue port: three requests (an index with shared layers, a single image
 * sharing a layer with it, and an image whose layer the source no longer has), each submitted
 * twice, consumed by four concurrent consumers from a ChaosQueue.
 */
async function queueChaos(seed: number): Promise<string> {
  const dst = await startRegistry();
  const pool = new RegistryPool({ retry: { baseDelayMs: 10, maxDelayMs: 200 } });
  const checker = commitOrderChecker(dst.dataDir);
  const slowed = new Set<string>();
  const sp = await startFaultProxy(src.url, {
    seed,
    rate: 0,
    beforeForward: async (req) => {
      const digest = BLOB_GET.exec(req.path)?.[1];
      if (req.method !== 'GET' || !digest || slowed.has(digest)) return;
      slowed.add(digest);
      await new Promise((resolve) => setTimeout(resolve, FIRST_GET_MS));
    },
  });
  const tp = await startFaultProxy(dst.url, { seed, rate: 0, beforeForward: checker.check });
  try {
    const work = new ChaosQueue({ seed, name: 'work', visibilityTimeoutSeconds: VISIBILITY_SECONDS, maxReceiveCount: 10, maxDelayMs: 300 });
    const deadLetters = new InMemoryQueue({ name: 'dead-letters' });
    const problems: string[] = [];
    const recordEnds = new Map<string, number>();
    /** Commit PUTs the target refused for content that the HEADs had all found (see runCommitTask). */
    let refusedPuts = 0;
    let lastCommitAt = 0;
    const logger = createLogger({
      sink: (line) => {
        const entry = JSON.parse(line) as { level: string; message: string; messageId?: string; receiveCount?: number; missing?: number };
        if (entry.messageId !== undefined && entry.receiveCount !== undefined) recordEnds.set(`${entry.messageId}#${entry.receiveCount}`, Date.now());
        if (entry.message === 'manifest committed') lastCommitAt = Date.now();
        if (entry.level === 'error' || /unexpectedly/.test(entry.message)) problems.push(line);
        if (entry.message === 'commit waits for its content' && entry.missing === 0) refusedPuts++;
      },
    });
    let env: PipelineEnv;
    const fanout = createFanoutHandler(() => env);
    const invoker = new InProcessInvoker(async (payload) => fanout(JSON.parse(payload)));
    env = { registries: pool, work, exports: new InMemoryQueue({ name: 'exports' }), deadLetters, failedRequests: deadLetters, store: new FileArchiveStore(), fanout: invoker, logger, metrics: nullMetrics(), locations: new BlobLocations(), smallBlobBytes: SMALL_BLOB_BYTES };

    // What the embedded runtime knows in one process: once nothing but waiting commits is left
    // (no fan-out running, no image or blob task queued or in flight) and none has committed for
    // a while, a commit that is still not ready never will be.
    let stalledSince: number | undefined;
    const commitGiveUp = (): boolean => {
      const now = Date.now();
      const onlyCommits = invoker.pendingCount === 0 && work.inner.bodies().every((body) => taskKey(body).startsWith('commit '));
      if (!onlyCommits) {
        stalledSince = undefined;
        return false;
      }
      stalledSince ??= now;
      return now - Math.max(stalledSince, lastCommitAt) >= 2_000;
    };
    const worker = createWorkerHandler(() => env, { recordConcurrency: 4, backoffSeconds: (n) => Math.min(0.4, 0.05 * 2 ** n), commitGiveUp });

    const requests = [
      request(`${sp.host}/app/multi:v1`, `${tp.host}/mirror/multi:v1`, `multi-${seed}`),
      request(`${sp.host}/app/single:v1`, `${tp.host}/mirror/single:v1`, `single-${seed}`),
      request(`${sp.host}/app/broken:v1`, `${tp.host}/mirror/broken:v1`, `broken-${seed}`),
    ];
    // Lambda's asynchronous invoke is at-least-once too: every request reaches fan-out twice.
    for (const r of [...requests, ...requests]) await invoker.invokeAsync(serialise(r));
    const started = Date.now();
    const run = await consumeUntilDrained(work, worker, {
      consumers: 4,
      batchSize: 4,
      maxBatches: 400,
      timeoutMs: 40_000,
      busy: () => invoker.pendingCount > 0,
      recordEnd: (messageId, receiveCount) => recordEnds.get(`${messageId}#${receiveCount}`),
    });
    const context = `${run.batches} batches, ${run.deliveries.length} deliveries in ${Date.now() - started} ms, ${work.duplicated} duplicates; ${sp.describe()}\n${problems.join('\n')}`;

    // The chaos really happened: copies, and deliveries of a message while its first attempt still ran.
    assert.deepEqual(invoker.failures, [], context);
    const copies = new Map<string, Set<string>>();
    for (const d of run.deliveries) copies.set(d.key, (copies.get(d.key) ?? new Set()).add(d.messageId));
    assert.deepEqual([...copies].filter(([, ids]) => ids.size < 2).map(([key]) => key), [], `every task was delivered as two messages or more; ${context}`);
    const overlaps = overlappingDeliveries(run.deliveries);
    assert.ok(overlaps.some((o) => o.key.startsWith('blob ')), `a blob task was delivered again while its first attempt was still running; ${context}`);

    // The dead-letter queue holds exactly the impossible request's tasks: the blob task of the
    // missing layer (dead-lettered at once: the source answers 404) and the commit that needed it
    // (given up once nothing else could come), each perhaps more than once (they were copies).
    const dead = [...deadLetters.bodies(), ...work.inner.deadLetters.map((d) => d.body)];
    assert.deepEqual([...new Set(dead.map(taskKey))].sort(), [`blob mirror/broken ${missing.digest}`, `commit ${tp.host}/mirror/broken:v1 ${broken.digest}`].sort(), context);
    assert.deepEqual(work.inner.deadLetters, [], `no possible task used up its receives; ${context}`);
    const unexpected = problems.filter((line) => !line.includes(`"requestId":"broken-${seed}"`));
    assert.deepEqual(unexpected, [], `only the impossible request logged errors; ${context}`);

    await assertReplicated(dst, dst.host, context);
    const contents = await registryContents(dst.dataDir);
    assert.deepEqual(contents['mirror/broken']?.manifests ?? [], [], 'nothing of the impossible image was committed');
    assert.deepEqual(contents['mirror/broken']?.tags ?? {}, {});
    assert.ok(checker.checked >= 4, `every manifest PUT was checked as it reached the registry (${checker.checked}); ${context}`);
    assert.deepEqual(checker.violations, [], `no manifest PUT reached the registry before its content; ${context}`);
    const open = Object.entries(contents).filter(([, repo]) => repo.uploads.length);
    assert.deepEqual(open, [], `every upload session was closed or cancelled; ${context}`);
    return `${run.batches} batches, ${run.deliveries.length} deliveries, ${overlaps.length} overlapping, ${dead.length} dead letters, ${refusedPuts} commit PUTs refused for content that was there, ${Date.now() - started} ms`;
  } finally {
    await pool.close();
    await Promise.all([sp.stop(), tp.stop()]);
    await dst.stop();
  }
}

const WORKER = fileURLToPath(new URL('./support/chaos-worker.ts', import.meta.url));
/** Workers killed before one is let drain the queue. */
const KILLS = 4;

/**
 * Worker processes consume the real work queue on fauxqs with the real handler. Each is killed
 * with SIGKILL when the target registry sees its k-th request of that process (k random, the
 * request let through after the kill: it may complete what the dead worker will never record),
 * then a new one starts; the fifth drains the queue.
 */
async function killChaos(seed: number): Promise<string> {
  const random = seededRandom(seed);
  const [dst, sqs] = await Promise.all([startRegistry(), startSqs()]);
  const pool = new RegistryPool({ retry: { baseDelayMs: 10, maxDelayMs: 200 } });
  const checker = commitOrderChecker(dst.dataDir);
  const generationOf: number[] = [];
  let generation = 0;
  let current: ManagedProcess | undefined;
  let seen = 0;
  let killAt = 0;
  const kills: string[] = [];
  const tp = await startFaultProxy(dst.url, {
    seed,
    rate: 0,
    onRequest: (req) => {
      generationOf[req.index] = generation;
    },
    beforeForward: async (req, body) => {
      await checker.check(req, body);
      if (!current || generation >= KILLS || ++seen !== killAt) return;
      kills.push(`worker ${generation} at its request ${seen}: ${req.method} ${req.path.replace(/\?.*/, '')}`);
      await current.kill();
    },
  });
  const workers: ManagedProcess[] = [];
  try {
    const work = await sqs.createQueue('chaos-work', { maxReceiveCount: 10, visibilityTimeout: 2 });
    const exportsQueue = await sqs.createQueue('chaos-exports');
    const env: PipelineEnv = {
      registries: pool,
      work: new SqsQueue(sqs.client, work.url),
      exports: new SqsQueue(sqs.client, exportsQueue.url),
      deadLetters: new SqsQueue(sqs.client, work.dlqUrl as string),
      store: new FileArchiveStore(),
      fanout: { invokeAsync: async () => undefined },
      logger: createLogger({ level: 'warn', sink: () => undefined }),
      metrics: nullMetrics(),
      smallBlobBytes: SMALL_BLOB_BYTES,
    };
    const fanout = createFanoutHandler(() => env);
    for (const r of [request(`${src.host}/app/multi:v1`, `${tp.host}/mirror/multi:v1`, 'multi-kill'), request(`${src.host}/app/single:v1`, `${tp.host}/mirror/single:v1`, 'single-kill')]) {
      assert.equal((await fanout(r)).status, 'planned');
    }
    const output = (): string => workers.map((w, i) => `--- worker ${i}\n${w.output()}`).join('\n');
    for (generation = 0; ; generation++) {
      seen = 0;
      killAt = 1 + Math.floor(random() * 12);
      current = spawnManaged(process.execPath, ['--import', 'tsx', WORKER], {
        env: { ...process.env, SQS_ENDPOINT: sqs.endpoint, WORK_URL: work.url, WORK_ARN: work.arn, DLQ_URL: work.dlqUrl as string, EXPORTS_URL: exportsQueue.url, GENERATION: String(generation), SMALL_BLOB_BYTES: String(SMALL_BLOB_BYTES), NODE_NO_WARNINGS: '1' },
      });
      workers.push(current);
      const worker = current;
      await pollUntil(() => (worker.hasExited() ? true : undefined), { timeoutMs: 40_000, what: `worker ${generation} to drain the queue or be killed` });
      const { code, signal } = await worker.exited;
      if (signal === 'SIGKILL' && generation < KILLS) continue;
      assert.equal(code, 0, `the last worker drained the queue and exited cleanly: ${kills.join('; ')}\n${output()}`);
      break;
    }
    const context = `kills: ${kills.join('; ')}\n${output()}`;
    assert.equal(kills.length, KILLS, `every worker but the last was killed mid-work; ${context}`);
    assert.equal(await queueDepth(sqs.client, work.url), 0, context);
    const dead = await receiveRecords(sqs.client, { url: work.dlqUrl as string, arn: '' }, { max: 10 });
    assert.deepEqual(dead.map((r) => taskKey(r.body)), [], `nothing was impossible, so nothing was dead-lettered; ${context}`);

    await assertReplicated(dst, dst.host, context);
    assert.ok(checker.checked >= 4, context);
    assert.deepEqual(checker.violations, [], `no manifest PUT reached the registry before its content; ${context}`);

    // A killed worker cannot cancel the upload sessions it had open: the registry keeps them until
    // its upload purger runs (disabled in these registries). Every session still open must be one
    // that a killed worker opened; the worker that drained the queue closed or cancelled all of
    // its own. A session is known by the Location of the POST that opened it; a POST let through
    // after its worker was killed may have its answer dropped with the dead connection, so such
    // POSTs (only killed workers have them) may account for sessions of unknown origin.
    const openedBy = new Map<string, number>();
    let unanswered = 0;
    for (const x of tp.exchanges) {
      if (x.method !== 'POST' || !/\/blobs\/uploads\/(\?|$)/.test(x.path)) continue;
      const id = /\/blobs\/uploads\/([^/?]+)/.exec(x.location ?? '')?.[1];
      if (id) openedBy.set(id, generationOf[x.index] as number);
      else if (!x.location) {
        assert.ok((generationOf[x.index] as number) < KILLS, `a POST of the last worker went unanswered; ${context}`);
        unanswered++;
      }
    }
    const left = Object.entries(await registryContents(dst.dataDir)).flatMap(([name, repo]) => repo.uploads.map((id) => ({ name, id, generation: openedBy.get(id) })));
    for (const session of left) assert.ok(session.generation === undefined || session.generation < KILLS, `session ${session.id} in ${session.name} was left open by worker ${session.generation}, which was not killed; ${context}`);
    const unknown = left.filter((session) => session.generation === undefined).length;
    assert.ok(unknown <= unanswered, `sessions left of unknown origin (${JSON.stringify(left)}) are more than the POSTs whose answer a killed worker never had (${unanswered}); ${context}`);
    return `${kills.length} kills (${kills.join('; ')}), ${left.length} upload sessions left by killed workers, ${tp.exchanges.length} target requests`;
  } finally {
    for (const w of workers) await w.kill();
    await pool.close();
    await tp.stop();
    await Promise.all([dst.stop(), sqs.stop()]);
  }
}
