// The embedded runtime's scheduling (lib/pipeline/embedded.ts over lib/ports/queue.ts): in one
// process the runtime knows when work completes, so a commit waits out of the way until a task of
// its own request is done instead of being tried early and polling with backoff.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryPool } from '../lib/engine/registries.js';
import { EmbeddedPipeline } from '../lib/pipeline/embedded.js';
import { PROTOCOL_VERSION } from '../lib/pipeline/messages.js';
import { FileArchiveStore } from '../lib/ports/archive-store.js';
import { InMemoryQueue } from '../lib/ports/queue.js';
import { inspectRaw, pushTestImage, pushTestIndex, randomBytes, startProxy, startRegistry, tarOf, type PushedImage, type RunningRegistry } from './support/index.js';

describe('InMemoryQueue.expedite', () => {
  test('makes delayed, never-received messages that match visible now; leaves the rest', async () => {
    let now = 1_000_000;
    const queue = new InMemoryQueue({ now: () => now, visibilityTimeoutSeconds: 30 });
    await queue.send(['commit a', 'commit b', 'blob c'], { delaySeconds: 600 });
    await queue.send(['in flight']);
    const [inFlight] = queue.receive(10);
    assert.equal(inFlight?.body, 'in flight', 'only the undelayed message is visible');
    assert.equal(queue.expedite((body) => body.startsWith('commit')), 2);
    assert.deepEqual(queue.receive(10).map((d) => d.body), ['commit a', 'commit b'], 'the in-flight message keeps its visibility timeout; the blob its delay');
    assert.equal(queue.expedite(() => true), 1, 'received messages are never expedited, only the delayed blob');
    now += 30_000;
    assert.deepEqual(queue.receive(10).map((d) => d.body).sort(), ['blob c', 'commit a', 'commit b', 'in flight']);
  });
});

describe('the embedded runtime wakes a commit when its request progresses', () => {
  let src: RunningRegistry;
  let dst: RunningRegistry;
  let single: PushedImage;
  let index: { digest: string; bytes: Buffer };

  before(async () => {
    [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
    single = await pushTestImage(src.host, 'app/one', 'v1', { layers: [{ bytes: tarOf({ a: randomBytes(20_000, 1) }) }] });
    const amd = await pushTestImage(src.host, 'app/multi', 'amd64', { layers: [{ bytes: tarOf({ a: randomBytes(20_000, 3) }) }] });
    const arm = await pushTestImage(src.host, 'app/multi', 'arm64', { architecture: 'arm64', layers: [{ bytes: tarOf({ b: randomBytes(20_000, 2) }) }] });
    index = await pushTestIndex(src.host, 'app/multi', 'v1', [{ image: amd, platform: { os: 'linux', architecture: 'amd64' } }, { image: arm, platform: { os: 'linux', architecture: 'arm64' } }]);
  });

  after(async () => {
    await Promise.all([src?.stop(), dst?.stop()]);
  });

  // An hour of commit delay: only being woken by the completed work lets these finish at all.
  test('a single image and an index (children, then the index) commit without waiting out the delay, in order', { timeout: 60_000 }, async (t) => {
    const proxy = await startProxy(dst.url);
    const registries = new RegistryPool();
    t.after(async () => {
      await registries.close();
      await proxy.stop();
    });
    const pipeline = new EmbeddedPipeline({ registries, store: new FileArchiveStore(), env: { commitDelaySeconds: 3600 } });
    const base = { v: PROTOCOL_VERSION, type: 'replicate' as const, mode: 'prefer-multiarch' as const, platforms: [], annotations: {}, referrers: false, includeForeignLayers: false };
    await pipeline.submit({ ...base, id: 'one', source: `${src.host}/app/one:v1`, target: `${proxy.host}/woken/one:v1` });
    await pipeline.submit({ ...base, id: 'multi', source: `${src.host}/app/multi:v1`, target: `${proxy.host}/woken/multi:v1` });
    await pipeline.drain();
    assert.ok((await inspectRaw(`${dst.host}/woken/one:v1`)).equals(single.manifest));
    assert.ok((await inspectRaw(`${dst.host}/woken/multi:v1`)).equals(index.bytes));
    assert.equal(pipeline.deadLetters.size, 0);
    const puts = proxy.requests.filter((r) => r.method === 'PUT' && r.path.includes('/manifests/'));
    assert.equal(puts.length, 4, 'one PUT per manifest: the single image, two children, the index');
    const order = (suffix: string): number => puts.findIndex((r) => r.path.endsWith(suffix));
    const indexPut = order('/woken/multi/manifests/v1');
    for (const child of JSON.parse(index.bytes.toString('utf8')).manifests as Array<{ digest: string }>) assert.ok(order(`/woken/multi/manifests/${child.digest}`) < indexPut, 'the index after its children');
  });
});
