// Copies through registries that misbehave (issue #8, "Fault injection"): a seeded fault proxy
// (test/support/faults.ts) sits in front of the real source and target registries and makes about
// a fifth of the requests fail in every way it knows (503, 429 with Retry-After, resets in request
// and response bodies, truncated bodies, stalls past the idle timeout, lying Content-Lengths).
// The judges are the registry's own storage (`auditRegistry`, `registryContents`) and skopeo.
//
// A failing run prints the proxies' seeds and counts; set FAULT_SEED to replay another seed.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyImage, type CopyResult } from '../lib/engine/copy.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { ErrorCodes, OciRelayError } from '../lib/errors.js';
import {
  auditRegistry,
  commitOrderChecker,
  inspectRaw,
  pushTestImage,
  pushTestIndex,
  randomBytes,
  registryContents,
  seededRandom,
  startFaultProxy,
  startRegistry,
  storedBlob,
  tarOf,
  type FaultProxy,
  type FaultProxyOptions,
  type PushedImage,
  type RunningRegistry,
} from './support/index.js';

const SEED = Number(process.env.FAULT_SEED ?? 20261204);
const KiB = 1024;

let src: RunningRegistry;
let dst: RunningRegistry;
let index: { digest: string; bytes: Buffer };
let images: PushedImage[];
let big: PushedImage;

/** A pool that retries fast (the proxy's Retry-After is 0 s) and gives up on a silent body after 500 ms. */
function chaosPool(seed: number): RegistryPool {
  return new RegistryPool({ retry: { baseDelayMs: 10, maxDelayMs: 200, random: seededRandom(seed) }, timeouts: { bodyIdleMs: 500 } });
}

/**
 * A fault proxy before each registry (no faults unless options say so) and a pool, all closed when
 * the test ends. Copies go `${sp.host}` -> `${tp.host}`; the proxies record every exchange.
 */
async function rig(t: TestContext, options: { source?: Partial<FaultProxyOptions>; target?: Partial<FaultProxyOptions>; pool?: RegistryPool } = {}): Promise<{ sp: FaultProxy; tp: FaultProxy; pool: RegistryPool }> {
  const sp = await startFaultProxy(src.url, { seed: SEED, rate: 0, ...options.source });
  const tp = await startFaultProxy(dst.url, { seed: SEED + 1, rate: 0, ...options.target });
  const pool = options.pool ?? chaosPool(SEED);
  t.after(async () => {
    await pool.close();
    await Promise.all([sp.stop(), tp.stop()]);
  });
  return { sp, tp, pool };
}

/** Open upload sessions left in the target, per repository (abandoned sessions must be cancelled). */
async function openSessions(): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const [name, repo] of Object.entries(await registryContents(dst.dataDir))) if (repo.uploads.length) out[name] = repo.uploads;
  return out;
}

before(async () => {
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  const shared = tarOf({ 'lib/shared.so': randomBytes(300 * KiB, 1) });
  images = [];
  for (const [i, architecture] of ['amd64', 'arm64', 's390x'].entries()) {
    images.push(
      await pushTestImage(src.host, 'app/multi', architecture, {
        architecture,
        layers: [{ bytes: shared }, { bytes: tarOf({ 'bin/app': randomBytes(150 * KiB + i * 1000, 10 + i) }) }, { bytes: tarOf({ 'data/blob': randomBytes(700 * KiB + i, 20 + i) }) }],
      }),
    );
  }
  index = await pushTestIndex(src.host, 'app/multi', 'v1', images.map((image, i) => ({ image, platform: { os: 'linux', architecture: ['amd64', 'arm64', 's390x'][i] as string } })));
  // One layer of 1 MiB + 1 byte for the resume tests: eight 128 KiB chunks and a last byte.
  big = await pushTestImage(src.host, 'app/big', 'v1', { layers: [{ bytes: randomBytes(1024 * KiB + 1, 99), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }] });
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop()]);
});

describe('copies through misbehaving registries', () => {
  test('20 copies of a multi-platform image with ~20% of requests failing on both sides all converge, byte-identical', async (t) => {
    const checker = commitOrderChecker(dst.dataDir);
    const { sp, tp, pool } = await rig(t, { source: { rate: 0.2 }, target: { rate: 0.2, beforeForward: checker.check } });
    const failures: string[] = [];
    const results: CopyResult[] = [];
    for (let i = 0; i < 20; i++) {
      try {
        // Every other copy uploads in 128 KiB PATCH chunks, so that resumes in a session happen too.
        results.push(await copyImage({ source: `${sp.host}/app/multi:v1`, target: `${tp.host}/chaos/m${i}:v1` }, { registries: pool, ...(i % 2 ? { chunkSize: 128 * KiB } : {}) }));
      } catch (err) {
        failures.push(`copy ${i}: ${(err as Error).message}`);
      }
    }
    const context = `${sp.describe()}\n${tp.describe()}`;
    assert.deepEqual(failures, [], context);
    // The faults really happened, of every kind each side can have.
    for (const kind of ['unavailable', 'throttled', 'reset-response', 'truncate', 'stall', 'wrong-length'] as const) assert.ok(sp.injected[kind] > 0, `no ${kind} on the source side: ${context}`);
    for (const kind of ['unavailable', 'throttled', 'reset-request'] as const) assert.ok(tp.injected[kind] > 0, `no ${kind} on the target side: ${context}`);
    assert.ok(sp.faults + tp.faults >= 0.15 * (sp.exchanges.length + tp.exchanges.length), context);

    // Byte-identical, judged by skopeo for the index and by the registry's storage for the children.
    for (let i = 0; i < 20; i++) {
      assert.equal(results[i]?.digest, index.digest);
      assert.ok((await inspectRaw(`${dst.host}/chaos/m${i}:v1`)).equals(index.bytes), `chaos/m${i}:v1 differs from the source index`);
    }
    for (const image of images) assert.ok((await storedBlob(dst.dataDir, image.digest))?.equals(image.manifest), `child ${image.digest} differs`);
    assert.deepEqual(await auditRegistry(dst.dataDir), [], 'every tag and manifest in the target has all its content');
    assert.ok(checker.checked >= 80, `every manifest PUT was checked at the moment it reached the registry (${checker.checked})`);
    assert.deepEqual(checker.violations, [], 'no manifest PUT reached the registry before its content');
    assert.deepEqual(await openSessions(), {}, 'every abandoned upload session was cancelled');
  });

  test('when the retry budget runs out the copy fails with a clear error naming the side, and commits nothing', async (t) => {
    // Every manifest PUT to the target is refused with 503: blobs land, nothing that references them may.
    const { tp, pool } = await rig(t, { target: { decide: (req) => (req.method === 'PUT' && req.path.includes('/manifests/') ? { kind: 'unavailable' } : undefined) } });
    const err = await copyImage({ source: `${src.host}/app/multi:v1`, target: `${tp.host}/exhausted/app:v1` }, { registries: pool }).then(
      () => assert.fail('the copy should fail'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OciRelayError);
    assert.equal(err.code, ErrorCodes.Registry);
    assert.equal(err.side, 'target');
    assert.match(err.message, /^target: PUT manifest: .*503/);
    assert.match(err.message, /\/v2\/exhausted\/app\/manifests\//, 'the message names the URL');
    const puts = tp.exchanges.filter((x) => x.method === 'PUT' && x.path.includes('/manifests/'));
    assert.equal(puts.length % 5, 0, 'each manifest PUT was tried the default 5 times, no more');
    const repo = (await registryContents(dst.dataDir))['exhausted/app'];
    assert.deepEqual(repo?.tags ?? {}, {});
    assert.deepEqual(repo?.manifests ?? [], []);
    assert.deepEqual(await auditRegistry(dst.dataDir), []);
  });

  test('uploads that keep breaking are given up, their sessions cancelled, and nothing is committed', async (t) => {
    const { tp, pool } = await rig(t, { target: { decide: (req) => (req.method === 'PUT' && req.path.includes('/blobs/uploads/') ? { kind: 'reset-request', at: 0.5 } : undefined) } });
    const err = await copyImage({ source: `${src.host}/app/big:v1`, target: `${tp.host}/broken/big:v1` }, { registries: pool }).then(
      () => assert.fail('the copy should fail'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OciRelayError);
    assert.equal(err.side, 'target');
    assert.equal(err.code, ErrorCodes.Network, err.message);
    const sessions = new Set(tp.exchanges.filter((x) => x.method === 'POST' && x.status === 202).map((x) => x.index));
    const deletes = tp.exchanges.filter((x) => x.method === 'DELETE' && x.path.includes('/blobs/uploads/'));
    assert.ok(sessions.size >= 2, 'blob attempts opened fresh sessions');
    assert.equal(deletes.length, sessions.size, 'every session opened was cancelled');
    assert.deepEqual(await openSessions(), {});
    const repo = (await registryContents(dst.dataDir))['broken/big'];
    assert.deepEqual(repo?.manifests ?? [], []);
    assert.deepEqual(repo?.tags ?? {}, {});
  });

  test('a chunked upload cut mid-chunk resumes from the offset the registry reports, not from byte 0', async (t) => {
    const chunk = 128 * KiB;
    const layer = big.layers[0] as { digest: string; size: number };
    let cut = false;
    const { tp, pool } = await rig(t, {
      target: {
        decide: (req) => {
          // The fifth chunk (bytes 512 KiB..640 KiB) is cut half-way, once.
          if (cut || req.method !== 'PATCH' || !String(req.headers['content-range']).startsWith(`${4 * chunk}-`)) return undefined;
          cut = true;
          return { kind: 'reset-request', at: 0.5 };
        },
      },
    });
    const result = await copyImage({ source: `${src.host}/app/big:v1`, target: `${tp.host}/resumed/big:v1` }, { registries: pool, chunkSize: chunk });
    assert.ok(cut, 'the fault was injected');
    const patches = tp.exchanges.filter((x) => x.method === 'PATCH');
    const ranges = patches.map((x) => String(x.headers['content-range']));
    // Chunks 0..3 once, chunk 4 twice (cut, then resumed), 5..7 and the last byte once.
    assert.deepEqual(ranges, [0, 1, 2, 3, 4, 4, 5, 6, 7].map((k) => `${k * chunk}-${(k + 1) * chunk - 1}`).concat([`${8 * chunk}-${8 * chunk}`]));
    const status = tp.exchanges.filter((x) => x.method === 'GET' && x.path.includes('/blobs/uploads/'));
    assert.equal(status.length, 1, 'the registry was asked once where the session stands');
    const sentOverTheWire = patches.reduce((n, x) => n + x.requestBytes, 0);
    assert.ok(sentOverTheWire < layer.size + chunk, `${sentOverTheWire} bytes crossed the network for a ${layer.size}-byte blob: more than one chunk was sent again`);
    assert.equal(result.blobs.copied, 2);
    assert.ok((await inspectRaw(`${dst.host}/resumed/big:v1`)).equals(big.manifest));
    assert.ok((await storedBlob(dst.dataDir, layer.digest))?.length === layer.size);
    assert.deepEqual(await openSessions(), {});
  });

  test('a monolithic upload cut on a registry that then refuses the session starts over in a new session and cancels the old one', async (t) => {
    // Unbuffered: the registry receives the first half of the PUT. distribution 2.8 then answers
    // 404 BLOB_UPLOAD_INVALID for that session's status: there is no offset to resume from.
    const layer = big.layers[0] as { digest: string; size: number };
    let cut = false;
    const { tp, pool } = await rig(t, {
      target: {
        bufferRequests: false,
        decide: (req) => {
          if (cut || req.method !== 'PUT' || !req.path.includes(layer.digest.replace(':', '%3A'))) return undefined;
          cut = true;
          return { kind: 'reset-request', at: 0.5 };
        },
      },
    });
    await copyImage({ source: `${src.host}/app/big:v1`, target: `${tp.host}/restarted/big:v1` }, { registries: pool });
    assert.ok(cut, 'the fault was injected');
    const puts = tp.exchanges.filter((x) => x.method === 'PUT' && x.path.includes('/blobs/uploads/') && x.requestBytes > 1000);
    assert.equal(puts.length, 2, 'one cut PUT, one whole PUT');
    assert.ok((puts[0]?.requestBytes ?? 0) < layer.size && puts[1]?.requestBytes === layer.size);
    const cutSession = /\/blobs\/uploads\/([^/?]+)/.exec(puts[0]?.path ?? '')?.[1] as string;
    const deletes = tp.exchanges.filter((x) => x.method === 'DELETE' && x.path.includes('/blobs/uploads/'));
    assert.deepEqual(
      deletes.map((x) => x.path.includes(cutSession)),
      [true],
      'the broken session, and only it, was cancelled',
    );
    assert.ok((await inspectRaw(`${dst.host}/restarted/big:v1`)).equals(big.manifest));
    // distribution refuses that DELETE too (404 BLOB_UPLOAD_INVALID: the session's state token no
    // longer matches its data) and leaves the files to its own upload purger: the one session
    // left behind is that one, which ocirelay asked to cancel.
    assert.equal(deletes[0]?.status, 404);
    assert.deepEqual(await openSessions(), { 'restarted/big': [cutSession] });
  });

  test('a source that stalls on every try gives up after its own resumes: the retry layers do not multiply', async (t) => {
    const layer = big.layers[0] as { digest: string; size: number };
    const { sp, tp, pool } = await rig(t, {
      source: { decide: (req) => (req.method === 'GET' && req.path.endsWith(`/blobs/${layer.digest}`) ? { kind: 'stall', at: 0.3 } : undefined) },
      pool: new RegistryPool({ retry: { baseDelayMs: 10 }, timeouts: { bodyIdleMs: 200 }, maxBlobResumes: 2 }),
    });
    const err = await copyImage({ source: `${sp.host}/app/big:v1`, target: `${tp.host}/stalls/big:v1` }, { registries: pool }).then(
      () => assert.fail('the copy should fail'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OciRelayError);
    assert.equal(err.side, 'source', err.message);
    const gets = sp.exchanges.filter((x) => x.method === 'GET' && x.path.endsWith(`/blobs/${layer.digest}`));
    assert.equal(gets.length, 3, 'one download and its two resumes; no upload resume or whole-blob attempt starts it over');
    const sessions = tp.exchanges.filter((x) => x.method === 'POST' && x.path.includes('/blobs/uploads/'));
    assert.equal(sessions.length, 2, "the config's session and one for the layer: no fresh attempt");
    assert.equal(tp.exchanges.filter((x) => x.method === 'DELETE').length, 1, "the layer's session was cancelled");
    // Its own repository: the test before leaves the session distribution refused to cancel in restarted/big.
    assert.deepEqual((await openSessions())['stalls/big'], undefined);
    assert.deepEqual((await registryContents(dst.dataDir))['stalls/big']?.manifests ?? [], []);
  });

  test('a blob download that stalls past the idle timeout resumes with Range from the bytes already verified', async (t) => {
    const layer = big.layers[0] as { digest: string; size: number };
    let stalled = false;
    const { sp, pool } = await rig(t, {
      source: {
        decide: (req) => {
          if (stalled || req.method !== 'GET' || !req.path.endsWith(`/blobs/${layer.digest}`)) return undefined;
          stalled = true;
          return { kind: 'stall', at: 0.6 };
        },
      },
    });
    await copyImage({ source: `${sp.host}/app/big:v1`, target: `${dst.host}/stalled/big:v1` }, { registries: pool });
    const gets = sp.exchanges.filter((x) => x.method === 'GET' && x.path.endsWith(`/blobs/${layer.digest}`));
    assert.equal(gets.length, 2);
    const stallAt = gets[0]?.fault?.at as number;
    assert.ok(stallAt > 0 && stallAt < layer.size);
    assert.equal(gets[1]?.headers.range, `bytes=${stallAt}-`, 'the second GET asks only for what is missing');
    assert.equal((gets[0]?.responseBytes ?? 0) + (gets[1]?.responseBytes ?? 0), layer.size, 'each byte was downloaded once');
    assert.ok((await storedBlob(dst.dataDir, layer.digest))?.length === layer.size);
  });
});
