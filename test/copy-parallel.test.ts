// Parallel, streaming copies (issue #3, "Better than the reference"): blobs and platforms move
// concurrently under the per-registry limit, a blob shared by several platforms crosses once,
// and a blob's upload starts while its download is still running (nothing is buffered whole).
// Observed from outside, through proxies (test/support/faults.ts with no faults) in front of two
// real registries.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyImage } from '../lib/engine/copy.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { inspectRaw, pushTestImage, pushTestIndex, randomBytes, startFaultProxy, startRegistry, tarOf, type Exchange, type PushedImage, type RunningRegistry } from './support/index.js';

const MiB = 1024 * 1024;
let src: RunningRegistry;
let dst: RunningRegistry;
let images: PushedImage[];
let index: { digest: string; bytes: Buffer };
let big: PushedImage;

const isBlobGet = (x: { method: string; path: string }): boolean => x.method === 'GET' && /\/blobs\/sha256:/.test(x.path);

/** The most exchanges in flight at once among those `which` selects (arrival and answer sequence numbers). */
function peakInFlight(exchanges: readonly Exchange[], which: (x: Exchange) => boolean): number {
  const edges: Array<[number, number]> = [];
  for (const x of exchanges.filter(which)) edges.push([x.arrivedSeq, +1], [x.answeredSeq ?? Number.MAX_SAFE_INTEGER, -1]);
  edges.sort((a, b) => a[0] - b[0]);
  let current = 0;
  let peak = 0;
  for (const [, delta] of edges) peak = Math.max(peak, (current += delta));
  return peak;
}

/**
 * A gate for the source proxy's `beforeForward`: blob GETs are held until `size` of them wait (or
 * all that remain of `total`), then released together. A client that keeps `size` transfers in
 * flight passes it wave after wave; one that keeps fewer never fills a wave, and the test times out.
 */
function waves(size: number, total: number): (req: { method: string; path: string }) => Promise<void> {
  const waiting: Array<() => void> = [];
  let released = 0;
  return (req) => {
    if (!isBlobGet(req)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      waiting.push(resolve);
      if (waiting.length === Math.min(size, total - released)) {
        released += waiting.length;
        for (const go of waiting.splice(0)) go();
      }
    });
  };
}

before(async () => {
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  const shared = tarOf({ 'lib/shared': randomBytes(256 * 1024, 7) });
  images = [];
  for (const [i, architecture] of ['amd64', 'arm64', 'ppc64le', 's390x'].entries()) {
    const own = [0, 1, 2].map((k) => ({ bytes: tarOf({ [`layer${k}`]: randomBytes(200 * 1024 + k, 100 * i + k) }) }));
    images.push(await pushTestImage(src.host, 'app/wide', architecture, { architecture, layers: [{ bytes: shared }, ...own] }));
  }
  index = await pushTestIndex(src.host, 'app/wide', 'v1', images.map((image, i) => ({ image, platform: { os: 'linux', architecture: ['amd64', 'arm64', 'ppc64le', 's390x'][i] as string } })));
  big = await pushTestImage(src.host, 'app/big', 'v1', { layers: [{ bytes: randomBytes(24 * MiB, 3), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }] });
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop()]);
});

describe('parallel and streaming', () => {
  for (const concurrency of [1, 3, 8]) {
    test(`--concurrency ${concurrency}: at most ${concurrency} blob transfers at once per registry, and that many are used`, { timeout: 30_000 }, async (t) => {
      const sp = await startFaultProxy(src.url, { seed: 1, rate: 0, beforeForward: waves(concurrency, 17) });
      const tp = await startFaultProxy(dst.url, { seed: 1, rate: 0 });
      const pool = new RegistryPool();
      t.after(async () => {
        await pool.close();
        await Promise.all([sp.stop(), tp.stop()]);
      });
      const result = await copyImage({ source: `${sp.host}/app/wide:v1`, target: `${tp.host}/wide/c${concurrency}:v1` }, { registries: pool, concurrency });
      // 4 configs + 4 x 3 own layers + the shared layer once: 17 blobs, each downloaded once.
      assert.deepEqual(result.blobs, { copied: 17, skipped: 0, mounted: 0, bytes: result.blobs.bytes });
      const gets = sp.exchanges.filter(isBlobGet);
      assert.equal(gets.length, 17, 'the layer shared by four platforms was downloaded once');
      assert.equal(new Set(gets.map((x) => x.path)).size, 17);
      assert.equal(peakInFlight(sp.exchanges, isBlobGet), concurrency, 'source: the limit is used and never exceeded');
      const uploads = (x: Exchange): boolean => x.method === 'PUT' && x.path.includes('/blobs/uploads/');
      assert.ok(peakInFlight(tp.exchanges, uploads) <= concurrency, 'target: never more uploads than the limit');
      assert.ok((await inspectRaw(`${dst.host}/wide/c${concurrency}:v1`)).equals(index.bytes));
    });
  }

  test("a blob's upload starts before its download has finished (streamed, not spooled)", async (t) => {
    const layer = big.layers[0] as { digest: string; size: number };
    const order: string[] = [];
    const sp = await startFaultProxy(src.url, { seed: 1, rate: 0, onAnswered: (x) => isBlobGet(x) && x.path.endsWith(layer.digest) && order.push('download finished') });
    const tp = await startFaultProxy(dst.url, {
      seed: 1,
      rate: 0,
      // Store-and-forward is off so that the registry reads the upload as it comes.
      bufferRequests: false,
      onRequest: (x) => x.method === 'PUT' && x.path.includes(encodeURIComponent(layer.digest)) && order.push('upload started'),
    });
    const pool = new RegistryPool();
    t.after(async () => {
      await pool.close();
      await Promise.all([sp.stop(), tp.stop()]);
    });
    await copyImage({ source: `${sp.host}/app/big:v1`, target: `${tp.host}/big/streamed:v1` }, { registries: pool });
    // 24 MiB cannot sit in the buffers between the two sockets: the download can only finish
    // because the upload is already draining it.
    assert.deepEqual(order, ['upload started', 'download finished']);
    assert.ok((await inspectRaw(`${dst.host}/big/streamed:v1`)).equals(big.manifest));
  });
});
