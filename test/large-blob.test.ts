// The large-blob continuation (lib/pipeline/large-blob.ts) and its resumable SHA-256, against a
// real distribution registry: the digest state that travels between invocations, and what
// happens when it, or the source, does not add up (nothing is committed, the session is freed).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { digestOf } from '../lib/digest.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { uploadLargeBlob } from '../lib/pipeline/large-blob.js';
import { ResumableSha256 } from '../lib/pipeline/resumable-hash.js';
import { startProxy, startRegistry, type RunningProxy, type RunningRegistry } from './support/index.js';

describe('resumable SHA-256', () => {
  test('matches node:crypto for every length around the block boundaries, saved and restored between updates', () => {
    for (const size of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 65_537, 300_001]) {
      const bytes = randomBytes(size);
      let hash = new ResumableSha256();
      for (let at = 0; at < size; ) {
        const step = Math.min(size - at, 1 + ((at * 7919) % 997));
        hash.update(bytes.subarray(at, at + step));
        at += step;
        hash = ResumableSha256.restore(hash.save());
        assert.equal(hash.bytes, at);
      }
      assert.equal(hash.digest(), `sha256:${createHash('sha256').update(bytes).digest('hex')}`, `${size} bytes`);
    }
  });

  test('digest() does not disturb the state, and malformed states are refused', () => {
    const hash = new ResumableSha256().update(Buffer.from('hello '));
    hash.digest();
    hash.update(Buffer.from('world'));
    assert.equal(hash.digest(), digestOf('hello world'));
    const good = new ResumableSha256().update(Buffer.alloc(70)).save();
    for (const bad of ['', 'v2.' + good.slice(3), good.replace(/\.70\./, '.71.'), good.replace(/^v1\.[0-9a-f]{8}/, 'v1.zzzzzzzz'), `${good}AAAA`]) {
      assert.throws(() => ResumableSha256.restore(bad), /not a resumable sha256 state/, bad);
    }
  });
});

describe('uploadLargeBlob across invocations', () => {
  let src: RunningRegistry;
  let dst: RunningRegistry;
  let pool: RegistryPool;
  const blob = randomBytes(3 * 1024 * 1024 + 333);
  const descriptor = { digest: digestOf(blob), size: blob.length };
  const chunkSize = 1024 * 1024;

  before(async () => {
    [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
    pool = new RegistryPool();
    await pool.get(src.host).repository('big', 'push').pushBlob(descriptor, () => Readable.from([blob]));
  });

  after(async () => {
    await pool?.close();
    await Promise.all([src?.stop(), dst?.stop()]);
  });

  /** One invocation that stops after its first chunk (deadline already past). */
  async function firstHop(repository: string) {
    const result = await uploadLargeBlob(pool.get(src.host).repository('big'), pool.get(dst.host).repository(repository, 'push'), descriptor, { chunkSize, deadline: 0 });
    assert.equal(result.done, false);
    if (result.done) throw new Error('unreachable');
    assert.equal(result.offset, chunkSize);
    assert.equal(result.reason, 'deadline');
    return result;
  }

  test('the digest state at the chunk boundary carries the verification on: the rest is read with Range and the blob committed', async () => {
    const hop = await firstHop('resumed');
    assert.equal(ResumableSha256.restore(hop.hash as string).bytes, chunkSize);
    const proxy = await startProxy(src.url);
    try {
      const rest = await uploadLargeBlob(pool.get(proxy.host).repository('big'), pool.get(dst.host).repository('resumed', 'push'), descriptor, { chunkSize, deadline: Date.now() + 60_000, resumeFrom: { location: hop.location, hash: hop.hash as string } });
      assert.deepEqual(rest, { done: true, bytesSent: blob.length - chunkSize });
      assert.deepEqual(proxy.requests.map((r) => r.headers.range), [`bytes=${chunkSize}-`]);
    } finally {
      await proxy.stop();
    }
    assert.deepEqual(await pool.get(dst.host).repository('resumed').headBlob(descriptor.digest), { size: blob.length });
  });

  test('a state that does not match the bytes the registry holds fails the digest check: no closing PUT, session cancelled', async () => {
    const hop = await firstHop('forged');
    const forged = new ResumableSha256().update(randomBytes(chunkSize)).save();
    const target = pool.get(dst.host).repository('forged', 'push');
    await assert.rejects(
      uploadLargeBlob(pool.get(src.host).repository('big'), target, descriptor, { chunkSize, deadline: Date.now() + 60_000, resumeFrom: { location: hop.location, hash: forged } }),
      (err: Error & { code?: string }) => err.code === 'ERR_DIGEST_MISMATCH',
    );
    assert.equal(await target.headBlob(descriptor.digest), undefined, 'nothing committed');
    await assert.rejects(target.uploadStatus({ location: new URL(hop.location), minChunkLength: undefined, offset: 0 }), /404/, 'the session was cancelled');
  });

  test('source bytes that differ from the digest after the offset are caught before the closing PUT', async () => {
    const hop = await firstHop('corrupt');
    let proxy: RunningProxy | undefined;
    proxy = await startProxy(src.url, {
      intercept: (req) => (req.method === 'GET' && req.headers.range ? { transformResponseBody: (body) => Buffer.concat([body.subarray(0, 10), Buffer.from([body[10]! ^ 0xff]), body.subarray(11)]) } : undefined),
    });
    const target = pool.get(dst.host).repository('corrupt', 'push');
    try {
      await assert.rejects(
        uploadLargeBlob(pool.get(proxy.host).repository('big'), target, descriptor, { chunkSize, deadline: Date.now() + 60_000, resumeFrom: { location: hop.location, hash: hop.hash as string } }),
        (err: Error & { code?: string }) => err.code === 'ERR_DIGEST_MISMATCH',
      );
    } finally {
      await proxy.stop();
    }
    assert.equal(await target.headBlob(descriptor.digest), undefined, 'nothing committed');
  });

  test('without a state (or with one ahead of the registry) the source is read from byte 0 and still verified', async () => {
    const hop = await firstHop('stateless');
    const proxy = await startProxy(src.url);
    try {
      const ahead = new ResumableSha256().update(blob.subarray(0, 2 * chunkSize)).save();
      const rest = await uploadLargeBlob(pool.get(proxy.host).repository('big'), pool.get(dst.host).repository('stateless', 'push'), descriptor, { chunkSize, deadline: Date.now() + 60_000, resumeFrom: { location: hop.location, hash: ahead } });
      assert.equal(rest.done, true);
      assert.deepEqual(proxy.requests.map((r) => r.headers.range), [undefined], 'one GET of the whole blob');
    } finally {
      await proxy.stop();
    }
    assert.deepEqual(await pool.get(dst.host).repository('stateless').headBlob(descriptor.digest), { size: blob.length });
  });
});
