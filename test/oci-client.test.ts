// The distribution client's operations against a real CNCF distribution 2.8 registry, with the
// programmable proxy in front of it for what the registry itself never does (faults, throttling,
// wrong bytes, rewritten headers, the referrers API, tag pagination).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { DigestMismatchError, ManifestError, OciRelayError, RegistryError, SizeMismatchError } from '../lib/errors.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import { RegistryClient, type Repository, type UploadSession } from '../lib/oci/client.js';
import type { RequestEvent } from '../lib/oci/transport.js';
import {
  buildImage,
  inspectRaw,
  pushLayout,
  randomBytes,
  sha256Digest,
  startHttpServer,
  startProxy,
  startRegistry,
  type ProxiedRequest,
  type RunningProxy,
  type RunningRegistry,
} from './support/index.js';

// ---------------------------------------------------------------------------------------------
// Helpers

interface TestImage {
  config: Buffer;
  layer: Buffer;
  /** Exact manifest bytes, deliberately not in canonical JSON form (indentation, trailing newline). */
  manifest: Buffer;
  digest: string;
  mediaType: string;
}

function makeImage(seed: number, options: { layerSize?: number; mediaType?: string; extra?: Record<string, unknown> } = {}): TestImage {
  const layer = randomBytes(options.layerSize ?? 4096, seed);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256Digest(layer)] }, seed }));
  const mediaType = options.mediaType ?? MediaTypes.ociManifest;
  const docker = mediaType === MediaTypes.dockerManifest;
  const body = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig, digest: sha256Digest(config), size: config.length },
    layers: [{ mediaType: docker ? MediaTypes.dockerLayerGzip : MediaTypes.ociLayerTar, digest: sha256Digest(layer), size: layer.length }],
    ...options.extra,
  };
  const manifest = Buffer.from(`${JSON.stringify(body, null, 3)}\n`);
  return { config, layer, manifest, digest: sha256Digest(manifest), mediaType };
}

const bufferSource = (data: Buffer) => (): Readable => Readable.from([data], { objectMode: false });

async function pushImage(repo: Repository, image: TestImage, tag: string): Promise<void> {
  for (const blob of [image.config, image.layer]) await repo.pushBlob({ digest: sha256Digest(blob), size: blob.length }, bufferSource(blob));
  await repo.putManifest(tag, image.manifest, image.mediaType);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Reads a stream to its end or error, recording whether 'end' was ever emitted. */
async function drain(stream: Readable): Promise<{ bytes: number; error: unknown; ended: boolean }> {
  let bytes = 0;
  let ended = false;
  stream.on('end', () => (ended = true));
  try {
    for await (const chunk of stream) bytes += (chunk as Buffer).length;
    return { bytes, error: undefined, ended };
  } catch (error) {
    return { bytes, error, ended };
  }
}

function header(req: ProxiedRequest, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

const isUploadPath = (path: string): boolean => /\/blobs\/uploads\//.test(path);

// ---------------------------------------------------------------------------------------------

describe('operations on an anonymous registry', () => {
  let registry: RunningRegistry;
  let proxy: RunningProxy;
  let client: RegistryClient;
  let viaProxy: RegistryClient;
  const events: RequestEvent[] = [];
  const proxyEvents: RequestEvent[] = [];

  before(async () => {
    registry = await startRegistry();
    proxy = await startProxy(registry.url);
    client = new RegistryClient(registry.host, { onRequest: (e) => events.push(e) });
    viaProxy = new RegistryClient(proxy.host, { onRequest: (e) => proxyEvents.push(e), retry: { baseDelayMs: 5 } });
  });
  after(async () => {
    await client?.close();
    await viaProxy?.close();
    await proxy?.stop();
    await registry?.stop();
  });
  const resetProxy = (): void => {
    proxy.intercept = () => undefined;
    proxy.reset();
    proxyEvents.length = 0;
  };

  test('ping', async () => {
    assert.deepEqual(await client.ping(), { status: 200, apiVersion: 'registry/2.0' });
  });

  test('manifest PUT of exact bytes with Content-Type, GET by tag and by digest, HEAD', async () => {
    resetProxy();
    const image = makeImage(1);
    const repo = viaProxy.repository('ops/manifest', 'push');
    await pushImage(repo, image, 'v1');
    const put = proxy.requests.find((r) => r.method === 'PUT' && r.path.endsWith('/manifests/v1'));
    assert.ok(put, 'a manifest PUT went out');
    assert.equal(header(put, 'content-type'), MediaTypes.ociManifest);
    assert.equal(header(put, 'content-length'), String(image.manifest.length));
    // An independent client sees the exact bytes.
    assert.deepEqual(await inspectRaw(`${registry.host}/ops/manifest:v1`), image.manifest);

    const pull = client.repository('ops/manifest');
    for (const reference of ['v1', image.digest]) {
      const got = await pull.getManifest(reference);
      assert.deepEqual(got.bytes, image.manifest, reference);
      assert.equal(got.digest, image.digest);
      assert.equal(got.size, image.manifest.length);
      assert.equal(got.mediaType, MediaTypes.ociManifest);
      assert.equal(got.contentType, MediaTypes.ociManifest);
    }
    assert.deepEqual(await pull.headManifest('v1'), { digest: image.digest, mediaType: MediaTypes.ociManifest, size: image.manifest.length });
    assert.equal(await pull.headManifest('nope'), undefined);
    // The GET sent the full Accept list (distribution down-converts or 404s otherwise).
    const get = proxy.requests.length;
    await repo.getManifest('v1');
    const accept = header(proxy.requests[get]!, 'accept') ?? '';
    for (const type of [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest, MediaTypes.dockerSchema1Signed]) {
      assert.ok(accept.includes(type), `Accept names ${type}`);
    }
  });

  test('a Docker v2 manifest keeps its media type', async () => {
    const image = makeImage(2, { mediaType: MediaTypes.dockerManifest });
    const repo = client.repository('ops/docker', 'push');
    await pushImage(repo, image, 'v1');
    const got = await repo.getManifest('v1');
    assert.equal(got.mediaType, MediaTypes.dockerManifest);
    assert.equal(got.contentType, MediaTypes.dockerManifest);
    assert.deepEqual(got.bytes, image.manifest);
    assert.equal((await repo.headManifest(image.digest))?.mediaType, MediaTypes.dockerManifest);
  });

  test('manifest DELETE; the tag list of a repository without tags is empty', async () => {
    const image = makeImage(3);
    const repo = client.repository('ops/delete', 'push');
    await pushImage(repo, image, 'only');
    assert.deepEqual(await repo.listTags(), ['only']);
    await repo.deleteManifest(image.digest);
    assert.equal(await repo.headManifest(image.digest), undefined);
    assert.equal(await repo.headManifest('only'), undefined);
    const err = await repo.getManifest(image.digest).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof RegistryError);
    assert.equal(err.status, 404);
    assert.equal(err.notFound, true);
    // distribution answers `"tags": null` now.
    assert.deepEqual(await repo.listTags(), []);
    await assert.rejects(repo.deleteManifest('latest'), /invalid digest/);
  });

  test('tag list with Link pagination (n=) over several pages', async () => {
    resetProxy();
    const image = makeImage(4);
    const repo = client.repository('ops/tags', 'push');
    const tags = ['a1', 'a2', 'b1', 'b2', 'c1'];
    await pushImage(repo, image, tags[0]!);
    for (const tag of tags.slice(1)) await repo.putManifest(tag, image.manifest, image.mediaType);
    const all = (await repo.listTags()).sort();
    assert.deepEqual(all, tags);
    // distribution 2.8 ignores `n` on tag lists: the proxy pages the real list (RFC 8288 Link,
    // relative on one page and absolute on the next, as registries do both).
    proxy.intercept = (req) => {
      const url = new URL(req.path, proxy.url);
      if (!url.pathname.endsWith('/tags/list')) return undefined;
      const n = Number(url.searchParams.get('n'));
      const last = url.searchParams.get('last');
      const start = last ? all.indexOf(last) + 1 : 0;
      const page = all.slice(start, start + n);
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (start + n < all.length) {
        const next = `/v2/ops/tags/tags/list?n=${n}&last=${page.at(-1)}`;
        headers.link = `<${start === 0 ? next : proxy.url + next}>; rel="next"`;
      }
      return { status: 200, headers, body: JSON.stringify({ name: 'ops/tags', tags: page }) };
    };
    assert.deepEqual(await viaProxy.repository('ops/tags').listTags({ pageSize: 2 }), all);
    assert.deepEqual(
      proxy.requests.map((r) => r.path),
      ['/v2/ops/tags/tags/list?n=2', '/v2/ops/tags/tags/list?n=2&last=a2', '/v2/ops/tags/tags/list?n=2&last=b2'],
    );
  });

  test('a pagination Link that loops back is refused', async () => {
    resetProxy();
    proxy.intercept = () => ({ status: 200, headers: { link: '</v2/ops/loop/tags/list?n=1>; rel="next"', 'content-type': 'application/json' }, body: '{"tags":["x"]}' });
    await assert.rejects(viaProxy.repository('ops/loop').listTags({ pageSize: 1 }), (err: unknown) => err instanceof RegistryError && /loops back/.test(err.message));
  });

  test('catalog with Link pagination (n=) over several pages', async (t) => {
    const fresh = await startRegistry();
    t.after(() => fresh.stop());
    const catalogEvents: RequestEvent[] = [];
    const c = new RegistryClient(fresh.host, { onRequest: (e) => catalogEvents.push(e) });
    t.after(() => c.close());
    const image = makeImage(5);
    const names = ['cat/a', 'cat/b', 'cat/c', 'cat/d', 'cat/e'];
    for (const name of names) await pushImage(c.repository(name, 'push'), image, 'v1');
    catalogEvents.length = 0;
    assert.deepEqual(await c.listCatalog({ pageSize: 2 }), names);
    const pages = catalogEvents.filter((e) => e.operation === 'list catalog');
    assert.equal(pages.length, 3);
    assert.match(pages[0]!.url, /\/v2\/_catalog\?n=2$/);
    assert.match(pages[2]!.url, /last=cat%2Fd/);
    assert.deepEqual(await c.listCatalog(), names);
  });

  test('blob HEAD, GET as a verified stream, and a raw Range GET', async () => {
    const data = randomBytes(300_000, 6);
    const digest = sha256Digest(data);
    const repo = client.repository('ops/blob', 'push');
    assert.equal(await repo.headBlob(digest), undefined);
    const result = await repo.pushBlob({ digest, size: data.length }, bufferSource(data));
    assert.deepEqual(result, { outcome: 'uploaded', bytesSent: data.length });
    assert.deepEqual(await repo.headBlob(digest), { size: data.length });
    assert.deepEqual(await readAll(await repo.fetchBlob({ digest, size: data.length })), data);
    assert.deepEqual(await readAll(await repo.fetchBlob({ digest })), data);
    const ranged = await repo.openBlob(digest, { offset: 1000 });
    assert.equal(ranged.offset, 1000);
    assert.equal(ranged.length, data.length - 1000);
    assert.deepEqual(await readAll(ranged.stream as unknown as Readable), data.subarray(1000));
  });

  test('a blob download broken mid-body is resumed with Range and delivered whole and verified', async () => {
    resetProxy();
    const data = randomBytes(1_000_000, 7);
    const digest = sha256Digest(data);
    await client.repository('ops/resume', 'push').pushBlob({ digest, size: data.length }, bufferSource(data));
    let gets = 0;
    proxy.intercept = (req) => (req.method === 'GET' && req.path.includes('/blobs/sha256:') && gets++ === 0 ? { resetAfterResponseBytes: 250_000 } : undefined);
    const stream = await viaProxy.repository('ops/resume').fetchBlob({ digest, size: data.length });
    assert.deepEqual(await readAll(stream), data);
    const blobGets = proxy.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
    assert.equal(blobGets.length, 2);
    assert.equal(header(blobGets[0]!, 'range'), undefined);
    const range = /^bytes=(\d+)-$/.exec(header(blobGets[1]!, 'range') ?? '');
    assert.ok(range, `the resumed GET carries Range (got ${header(blobGets[1]!, 'range')})`);
    const from = Number(range[1]);
    assert.ok(from > 0 && from <= 250_000, `resumed from ${from}`);
  });

  test('a resume answered 200 with the whole blob (Range ignored) skips what was already passed on', async () => {
    resetProxy();
    const data = randomBytes(400_000, 28);
    const digest = sha256Digest(data);
    await client.repository('ops/norange', 'push').pushBlob({ digest, size: data.length }, bufferSource(data));
    let gets = 0;
    proxy.intercept = (req) => {
      if (req.method !== 'GET' || !req.path.includes('/blobs/sha256:')) return undefined;
      gets++;
      // distribution honours Range; a server that does not answers 200 with everything.
      return gets === 1 ? { resetAfterResponseBytes: 150_000 } : { status: 200, headers: { 'content-type': 'application/octet-stream' }, body: data };
    };
    assert.deepEqual(await readAll(await viaProxy.repository('ops/norange').fetchBlob({ digest, size: data.length })), data);
    assert.equal(gets, 2);
    assert.match(header(proxy.requests[1]!, 'range') ?? '', /^bytes=[1-9]\d*-$/);
  });

  test('a download that keeps breaking gives up after maxBlobResumes', async (t) => {
    resetProxy();
    const data = randomBytes(200_000, 8);
    const digest = sha256Digest(data);
    await client.repository('ops/resume2', 'push').pushBlob({ digest, size: data.length }, bufferSource(data));
    const c = new RegistryClient(proxy.host, { maxBlobResumes: 2, retry: { baseDelayMs: 1 } });
    t.after(() => c.close());
    proxy.intercept = (req) => (req.method === 'GET' && req.path.includes('/blobs/') ? { resetAfterResponseBytes: 1000 } : undefined);
    const { error, ended } = await drain(await c.repository('ops/resume2').fetchBlob({ digest, size: data.length }));
    assert.ok(error instanceof OciRelayError, String(error));
    assert.match(error.message, /after 2 resumes/);
    assert.equal(ended, false);
    assert.equal(proxy.requests.filter((r) => r.path.includes('/blobs/')).length, 3);
  });

  test('monolithic streaming upload: one POST, one PUT carrying the whole body', async () => {
    resetProxy();
    const data = randomBytes(700_000, 9);
    const digest = sha256Digest(data);
    const progress: number[] = [];
    // A multi-chunk source stream.
    const source = (): Readable => Readable.from([data.subarray(0, 100_000), data.subarray(100_000, 450_000), data.subarray(450_000)], { objectMode: false });
    const result = await viaProxy.repository('ops/mono', 'push').pushBlob({ digest, size: data.length }, source, { onProgress: (n) => progress.push(n) });
    assert.deepEqual(result, { outcome: 'uploaded', bytesSent: data.length });
    assert.equal(progress.at(-1), data.length);
    assert.deepEqual(proxy.requests.map((r) => r.method), ['POST', 'PUT']);
    const put = proxy.requests[1]!;
    assert.equal(header(put, 'content-length'), String(data.length));
    assert.ok(new URL(put.path, proxy.url).searchParams.get('digest') === digest);
    assert.deepEqual(await client.repository('ops/mono').headBlob(digest), { size: data.length });
  });

  test('chunked upload honours OCI-Chunk-Min-Length (added to the POST answer by the proxy)', async () => {
    resetProxy();
    const data = randomBytes(1_000_000, 10);
    const digest = sha256Digest(data);
    const min = 300_000;
    proxy.intercept = (req) => (req.method === 'POST' ? { rewriteResponseHeaders: (h) => ({ ...h, 'oci-chunk-min-length': String(min) }) } : undefined);
    const result = await viaProxy.repository('ops/chunked', 'push').pushBlob({ digest, size: data.length }, bufferSource(data), { chunkSize: 100_000 });
    assert.deepEqual(result, { outcome: 'uploaded', bytesSent: data.length });
    const patches = proxy.requests.filter((r) => r.method === 'PATCH');
    const lengths = patches.map((p) => Number(header(p, 'content-length')));
    assert.deepEqual(lengths, [300_000, 300_000, 300_000, 100_000]);
    for (const length of lengths.slice(0, -1)) assert.ok(length >= min);
    assert.deepEqual(patches.map((p) => header(p, 'content-range')), ['0-299999', '300000-599999', '600000-899999', '900000-999999']);
    const put = proxy.requests.at(-1)!;
    assert.equal(put.method, 'PUT');
    assert.equal(header(put, 'content-length'), '0');
    assert.deepEqual(await readAll(await client.repository('ops/chunked').fetchBlob({ digest, size: data.length })), data);
  });

  test('chunked upload without a registry minimum uses the asked chunk size', async () => {
    resetProxy();
    const data = randomBytes(250_001, 11);
    const digest = sha256Digest(data);
    await viaProxy.repository('ops/chunked2', 'push').pushBlob({ digest, size: data.length }, bufferSource(data), { chunkSize: 100_000 });
    assert.deepEqual(proxy.requests.filter((r) => r.method === 'PATCH').map((p) => Number(header(p, 'content-length'))), [100_000, 100_000, 50_001]);
    assert.deepEqual(await client.repository('ops/chunked2').headBlob(digest), { size: data.length });
  });

  test('a chunked source longer than its descriptor fails and leaves no blob', async () => {
    const data = randomBytes(30_000, 12);
    const declared = data.subarray(0, 20_000);
    const repo = client.repository('ops/chunked3', 'push');
    await assert.rejects(repo.pushBlob({ digest: sha256Digest(declared), size: declared.length }, bufferSource(data), { chunkSize: 8000 }), SizeMismatchError);
    assert.equal(await repo.headBlob(sha256Digest(declared)), undefined);
  });

  test('upload session: status offset, chunks, completion; 0 and 1 byte are told apart', async () => {
    const data = randomBytes(5001, 13);
    const digest = sha256Digest(data);
    const repo = client.repository('ops/session', 'push');
    const started = await repo.startUpload();
    assert.equal(started.mounted, false);
    let session = (started as { session: UploadSession }).session;
    assert.equal(session.offset, 0);
    assert.equal((await repo.uploadStatus(session)).offset, 0, 'an empty session is at 0 (distribution says Range: 0-0)');
    session = await repo.uploadChunk(session, data.subarray(0, 1), 1);
    assert.equal(session.offset, 1);
    assert.equal((await repo.uploadStatus(session)).offset, 1, 'one byte held (distribution says Range: 0-0 too)');
    session = await repo.uploadChunk(session, Readable.from([data.subarray(1, 3000)], { objectMode: false }), 2999);
    assert.equal(session.offset, 3000);
    const status = await repo.uploadStatus(session);
    assert.equal(status.offset, 3000);
    assert.ok(status.location.href.includes('/v2/ops/session/blobs/uploads/'));
    await repo.completeUpload(status, digest, { stream: Readable.from([data.subarray(3000)], { objectMode: false }), length: data.length - 3000 });
    assert.deepEqual(await readAll(await repo.fetchBlob({ digest, size: data.length })), data);
  });

  test('DELETE of an abandoned upload session', async () => {
    const repo = client.repository('ops/abandon', 'push');
    const started = await repo.startUpload();
    assert.equal(started.mounted, false);
    let session = (started as { session: UploadSession }).session;
    session = await repo.uploadChunk(session, randomBytes(1000, 14), 1000);
    assert.equal(await repo.cancelUpload(session), true);
    const err = await repo.uploadStatus(session).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof RegistryError);
    assert.equal(err.status, 404);
    assert.deepEqual(err.errors.map((e) => e.code), ['BLOB_UPLOAD_UNKNOWN']);
    assert.equal(await repo.cancelUpload(session), false, 'a session already gone');
  });

  test('relative Location headers are resolved against the request URL', async () => {
    resetProxy();
    const relative = (h: Record<string, string>): Record<string, string> => (h.location ? { ...h, location: new URL(h.location).pathname + new URL(h.location).search } : h);
    proxy.intercept = (req) => (isUploadPath(req.path) ? { rewriteResponseHeaders: relative } : undefined);
    const repo = viaProxy.repository('ops/relative', 'push');
    for (const [seed, chunkSize] of [[15, undefined], [16, 40_000]] as const) {
      const data = randomBytes(100_000, seed);
      const digest = sha256Digest(data);
      await repo.pushBlob({ digest, size: data.length }, bufferSource(data), chunkSize ? { chunkSize } : {});
      assert.deepEqual(await client.repository('ops/relative').headBlob(digest), { size: data.length });
    }
    const follow = proxy.requests.filter((r) => r.method !== 'POST');
    assert.ok(follow.length >= 5);
    for (const r of follow) assert.match(r.path, /^\/v2\/ops\/relative\/blobs\/uploads\/[0-9a-f-]{36}\?/);
    // Every response to the client was relative.
    assert.ok(proxyEvents.every((e) => e.url.startsWith(proxy.url)));
  });

  test('cross-repository mount: 201 and the blob is present in the target', async () => {
    const data = randomBytes(50_000, 17);
    const digest = sha256Digest(data);
    await client.repository('mount/src', 'push').pushBlob({ digest, size: data.length }, bufferSource(data));
    const dst = client.repository('mount/dst', 'push');
    assert.equal(await dst.headBlob(digest), undefined);
    events.length = 0;
    const result = await dst.pushBlob({ digest, size: data.length }, () => assert.fail('a mount reads nothing'), { mountFrom: 'mount/src' });
    assert.deepEqual(result, { outcome: 'mounted', bytesSent: 0 });
    assert.deepEqual(events.map((e) => [e.method, e.status]), [['POST', 201]]);
    assert.match(events[0]!.url, /mount=sha256%3A[0-9a-f]{64}&from=mount%2Fsrc/);
    assert.deepEqual(await dst.headBlob(digest), { size: data.length });
  });

  test('mount of a missing blob: 202, and the upload continues in that session', async () => {
    const data = randomBytes(50_000, 18);
    const digest = sha256Digest(data);
    const dst = client.repository('mount/dst2', 'push');
    events.length = 0;
    const result = await dst.pushBlob({ digest, size: data.length }, bufferSource(data), { mountFrom: 'mount/src' });
    assert.deepEqual(result, { outcome: 'uploaded', bytesSent: data.length });
    assert.deepEqual(events.map((e) => [e.operation, e.method, e.status]), [['mount blob', 'POST', 202], ['PUT blob', 'PUT', 201]]);
    assert.deepEqual(await dst.headBlob(digest), { size: data.length });
  });

  test('referrers: distribution 2.8 has no API, the sha256-<hex> tag schema is read', async () => {
    resetProxy();
    const subject = makeImage(19);
    const repo = viaProxy.repository('ops/referrers', 'push');
    await pushImage(repo, subject, 'v1');
    assert.deepEqual(await repo.referrers(subject.digest), { descriptors: [], fallback: true });

    const subjectDescriptor = { mediaType: subject.mediaType, digest: subject.digest, size: subject.manifest.length };
    const sbom = makeImage(20, { extra: { artifactType: 'application/spdx+json', subject: subjectDescriptor } });
    const sig = makeImage(21, { extra: { artifactType: 'application/vnd.dev.cosign', subject: subjectDescriptor } });
    await pushImage(repo, sbom, sbom.digest);
    await pushImage(repo, sig, sig.digest);
    const entries = [
      { mediaType: MediaTypes.ociManifest, digest: sbom.digest, size: sbom.manifest.length, artifactType: 'application/spdx+json' },
      { mediaType: MediaTypes.ociManifest, digest: sig.digest, size: sig.manifest.length, artifactType: 'application/vnd.dev.cosign' },
    ];
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: entries }));
    const fallbackTag = `sha256-${subject.digest.slice('sha256:'.length)}`;
    await repo.putManifest(fallbackTag, index, MediaTypes.ociIndex);

    proxy.reset();
    assert.deepEqual(await repo.referrers(subject.digest), { descriptors: entries, fallback: true });
    assert.deepEqual(
      proxy.requests.map((r) => [r.method, new URL(r.path, proxy.url).pathname]),
      [['GET', `/v2/ops/referrers/referrers/${subject.digest}`], ['GET', `/v2/ops/referrers/manifests/${fallbackTag}`]],
    );
    assert.deepEqual(await repo.referrers(subject.digest, { artifactType: 'application/vnd.dev.cosign' }), { descriptors: [entries[1]], fallback: true });
    assert.deepEqual(await repo.referrers(subject.digest, { artifactType: 'text/none' }), { descriptors: [], fallback: true });
  });

  test('referrers API (answered by the proxy): paginated, artifactType filtered client-side unless OCI-Filters-Applied', async () => {
    resetProxy();
    const subject = sha256Digest('some subject');
    const a = { mediaType: MediaTypes.ociManifest, digest: sha256Digest('a'), size: 10, artifactType: 'application/x.a' };
    const b = { mediaType: MediaTypes.ociManifest, digest: sha256Digest('b'), size: 11, artifactType: 'application/x.b' };
    const c = { mediaType: MediaTypes.ociManifest, digest: sha256Digest('c'), size: 12, artifactType: 'application/x.a' };
    let filtersApplied = false;
    proxy.intercept = (req) => {
      const url = new URL(req.path, proxy.url);
      if (!url.pathname.includes('/referrers/')) return { status: 500 };
      const type = url.searchParams.get('artifactType');
      const page = url.searchParams.get('page') === '2' ? [c] : [a, b];
      const manifests = filtersApplied && type ? page.filter((d) => d.artifactType === type) : page;
      const headers: Record<string, string> = { 'content-type': MediaTypes.ociIndex };
      if (filtersApplied && type) headers['oci-filters-applied'] = 'artifactType';
      if (url.searchParams.get('page') !== '2') headers.link = `<${url.pathname}?page=2${type ? `&artifactType=${encodeURIComponent(type)}` : ''}>; rel="next"`;
      return { status: 200, headers, body: JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }) };
    };
    const repo = viaProxy.repository('ops/api');
    assert.deepEqual(await repo.referrers(subject), { descriptors: [a, b, c], fallback: false });
    assert.equal(header(proxy.requests[0]!, 'accept'), MediaTypes.ociIndex);
    assert.deepEqual(await repo.referrers(subject, { artifactType: 'application/x.a' }), { descriptors: [a, c], fallback: false });
    filtersApplied = true;
    proxy.reset();
    assert.deepEqual(await repo.referrers(subject, { artifactType: 'application/x.b' }), { descriptors: [b], fallback: false });
    assert.equal(new URL(proxy.requests[0]!.path, proxy.url).searchParams.get('artifactType'), 'application/x.b');
    assert.ok(proxy.requests.every((r) => !r.path.includes('/manifests/')), 'no fallback tag read');
  });

  test('a blob served with wrong bytes: DigestMismatchError before end, and nothing lands in a second registry', { timeout: 30_000 }, async (t) => {
    resetProxy();
    const target = await startRegistry();
    t.after(() => target.stop());
    const targetClient = new RegistryClient(target.host);
    t.after(() => targetClient.close());
    const data = randomBytes(600_000, 22);
    const digest = sha256Digest(data);
    await client.repository('ops/tamper', 'push').pushBlob({ digest, size: data.length }, bufferSource(data));
    proxy.intercept = (req) =>
      req.method === 'GET' && req.path.includes('/blobs/')
        ? { transformResponseBody: (body: Buffer) => { const copy = Buffer.from(body); copy[copy.length - 10]! ^= 0xff; return copy; } }
        : undefined;
    const source = viaProxy.repository('ops/tamper');

    const { error, ended, bytes } = await drain(await source.fetchBlob({ digest, size: data.length }));
    assert.ok(error instanceof DigestMismatchError, String(error));
    assert.equal(error.expected, digest);
    assert.equal(ended, false, "no 'end' for wrong content");
    assert.ok(bytes < data.length, 'the completing bytes are withheld');

    // Piped into an upload: the download fails while the upload streams it.
    const dst = targetClient.repository('copy/tamper', 'push');
    await assert.rejects(dst.pushBlob({ digest, size: data.length }, () => source.fetchBlob({ digest, size: data.length })), DigestMismatchError);
    assert.equal(await dst.headBlob(digest), undefined);
    // The download has already failed when the upload takes it (it failed while the session was
    // opened): the upload fails too instead of waiting for bytes that never come.
    const failed = await source.fetchBlob({ digest, size: data.length });
    await new Promise((resolve) => failed.once('close', resolve));
    await assert.rejects(dst.pushBlob({ digest, size: data.length }, () => failed), DigestMismatchError);
    assert.equal(await dst.headBlob(digest), undefined);
    // Longer content than the descriptor says fails as a size mismatch.
    proxy.intercept = (req) => (req.method === 'GET' && req.path.includes('/blobs/') ? { transformResponseBody: (body: Buffer) => Buffer.concat([body, Buffer.from('x')]) } : undefined);
    const long = await drain(await source.fetchBlob({ digest, size: data.length }));
    assert.ok(long.error instanceof SizeMismatchError, String(long.error));
    assert.equal(long.ended, false);
  });

  test('429 with Retry-After (seconds, then an HTTP date) and 503 are retried until success', async () => {
    resetProxy();
    const image = makeImage(23);
    await pushImage(client.repository('ops/retry', 'push'), image, 'v1');
    const answeredAt: number[] = [];
    let retryDate = 0;
    proxy.intercept = (req) => {
      if (!req.path.endsWith('/manifests/v1')) return undefined;
      const now = Date.now();
      answeredAt.push(now);
      switch (answeredAt.length) {
        case 1:
          return { status: 429, headers: { 'retry-after': '1' }, body: '{"errors":[{"code":"TOOMANYREQUESTS"}]}' };
        case 2:
          retryDate = (Math.floor(now / 1000) + 2) * 1000; // 1-2 s ahead, on a whole second
          return { status: 429, headers: { 'retry-after': new Date(retryDate).toUTCString() } };
        case 3:
          return { status: 503, body: 'busy' };
        default:
          return undefined;
      }
    };
    const got = await viaProxy.repository('ops/retry').getManifest('v1');
    assert.deepEqual(got.bytes, image.manifest);
    assert.equal(answeredAt.length, 4);
    assert.deepEqual(proxyEvents.filter((e) => e.operation === 'GET manifest').map((e) => [e.attempt, e.status]), [[1, 429], [2, 429], [3, 503], [4, 200]]);
    const tolerance = 50;
    assert.ok(answeredAt[1]! - answeredAt[0]! >= 1000 - tolerance, `waited ${answeredAt[1]! - answeredAt[0]!} ms for Retry-After: 1`);
    assert.ok(answeredAt[2]! >= retryDate - tolerance, `retried at ${answeredAt[2]}, Retry-After said ${retryDate}`);
  });

  test('retries exhausted: RegistryError with the status and the number of attempts', async (t) => {
    resetProxy();
    const c = new RegistryClient(proxy.host, { retry: { maxAttempts: 3, baseDelayMs: 5 } });
    t.after(() => c.close());
    proxy.intercept = () => ({ status: 503, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"UNAVAILABLE","message":"down"}]}' });
    const err = await c.repository('ops/down').headBlob(sha256Digest('x')).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof RegistryError, String(err));
    assert.equal(err.status, 503);
    assert.equal(err.method, 'HEAD');
    assert.equal(err.retryable, true);
    assert.match(err.message, /after 3 attempts/);
    assert.equal(proxy.requests.length, 3);
    const get = await c.repository('ops/down').getManifest('v1').then(() => undefined, (e: unknown) => e);
    assert.ok(get instanceof RegistryError);
    assert.deepEqual(get.errors, [{ code: 'UNAVAILABLE', message: 'down' }]);
  });

  test('a Retry-After longer than maxRetryAfterMs is a failure, not a long wait', async (t) => {
    resetProxy();
    const c = new RegistryClient(proxy.host, { retry: { maxRetryAfterMs: 2000 } });
    t.after(() => c.close());
    proxy.intercept = () => ({ status: 429, headers: { 'retry-after': '3600' } });
    const err = await c.repository('ops/slow').headBlob(sha256Digest('x')).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof RegistryError, String(err));
    assert.equal(err.status, 429);
    assert.equal(err.retryable, true);
    assert.equal(proxy.requests.length, 1);
  });

  test('request bodies that cannot be replayed are never sent twice', async () => {
    resetProxy();
    // A POST with a body and no retrySafe: one attempt.
    proxy.intercept = () => ({ status: 503 });
    const post = await viaProxy.transport
      .send({ method: 'POST', url: viaProxy.transport.url('/v2/ops/post/blobs/uploads/'), scopes: [], operation: 'POST test', body: Buffer.from('payload'), expect: [202] })
      .then(() => undefined, (e: unknown) => e);
    assert.ok(post instanceof RegistryError && post.status === 503);
    assert.equal(proxy.requests.length, 1);

    // A streamed PUT closing an upload: one attempt (the stream is consumed).
    resetProxy();
    const repo = viaProxy.repository('ops/put', 'push');
    const started = await repo.startUpload();
    const session = (started as { session: UploadSession }).session;
    proxy.intercept = (req) => (req.method === 'PUT' ? { status: 503 } : undefined);
    const data = randomBytes(10_000, 24);
    await assert.rejects(repo.completeUpload(session, sha256Digest(data), { stream: Readable.from([data], { objectMode: false }), length: data.length }), (e: unknown) => e instanceof RegistryError && e.status === 503);
    assert.deepEqual(proxy.requests.map((r) => r.method), ['POST', 'PUT']);

    // The POST that opens a session has no body and is safe to repeat.
    resetProxy();
    let posts = 0;
    proxy.intercept = (req) => (req.method === 'POST' && posts++ === 0 ? { status: 503 } : undefined);
    assert.equal((await repo.startUpload()).mounted, false);
    assert.equal(proxy.requests.length, 2);
  });

  test('a manifest whose body mediaType and Content-Type disagree: the body field wins', async () => {
    resetProxy();
    const image = makeImage(25);
    await pushImage(client.repository('ops/ctype', 'push'), image, 'v1');
    proxy.intercept = (req) => (req.path.includes('/manifests/') ? { rewriteResponseHeaders: (h) => ({ ...h, 'content-type': MediaTypes.dockerManifest }) } : undefined);
    const got = await viaProxy.repository('ops/ctype').getManifest('v1');
    assert.equal(got.mediaType, MediaTypes.ociManifest);
    assert.equal(got.contentType, MediaTypes.dockerManifest);
    assert.equal(got.digest, image.digest);
  });

  test('a manifest over 4 MiB is refused with ManifestError (declared and streamed)', async (t) => {
    resetProxy();
    const big = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: {}, layers: [], annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } }));
    proxy.intercept = () => ({ status: 200, headers: { 'content-type': MediaTypes.ociManifest }, body: big });
    await assert.rejects(viaProxy.repository('ops/big').getManifest('v1'), (e: unknown) => e instanceof ManifestError && /4194304-byte limit/.test(e.message));
    // No Content-Length: the limit is enforced while reading.
    const server = await startHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': MediaTypes.ociManifest });
      res.write(big.subarray(0, 3_000_000));
      res.end(big.subarray(3_000_000));
    });
    t.after(() => server.stop());
    const c = new RegistryClient(server.host);
    t.after(() => c.close());
    await assert.rejects(c.repository('ops/big').getManifest('v1'), (e: unknown) => e instanceof ManifestError && /at least \d+ bytes, over the 4194304-byte limit/.test(e.message));
    // A manifest just under the limit is fine.
    const c2 = new RegistryClient(proxy.host, { maxManifestBytes: big.length });
    t.after(() => c2.close());
    assert.equal((await c2.repository('ops/big').getManifest('v1')).size, big.length);
  });

  test('content that does not hash to the digest reference, or to Docker-Content-Digest: DigestMismatchError', async () => {
    resetProxy();
    const image = makeImage(26);
    await pushImage(client.repository('ops/digest', 'push'), image, 'v1');
    const repo = viaProxy.repository('ops/digest');
    proxy.intercept = (req) => (req.path.includes('/manifests/') ? { transformResponseBody: (body: Buffer) => Buffer.concat([body, Buffer.from(' ')]) } : undefined);
    const byDigest = await repo.getManifest(image.digest).then(() => undefined, (e: unknown) => e);
    assert.ok(byDigest instanceof DigestMismatchError, String(byDigest));
    assert.equal(byDigest.expected, image.digest);
    assert.equal(byDigest.actual, sha256Digest(Buffer.concat([image.manifest, Buffer.from(' ')])));

    const other = sha256Digest('other');
    proxy.intercept = (req) => (req.path.includes('/manifests/') ? { rewriteResponseHeaders: (h) => ({ ...h, 'docker-content-digest': other }) } : undefined);
    const byTag = await repo.getManifest('v1').then(() => undefined, (e: unknown) => e);
    assert.ok(byTag instanceof DigestMismatchError, String(byTag));
    assert.equal(byTag.expected, other);
    assert.equal(byTag.actual, image.digest);
  });

  test('RegistryError carries status, OCI error codes, method and a redacted URL', async () => {
    const missing = await client.repository('ops/none').getManifest('latest').then(() => undefined, (e: unknown) => e);
    assert.ok(missing instanceof RegistryError);
    assert.equal(missing.status, 404);
    assert.equal(missing.method, 'GET');
    assert.equal(missing.operation, 'GET manifest');
    assert.equal(missing.url, `${registry.url}/v2/ops/none/manifests/latest`);
    assert.ok(missing.errors.some((e) => e.code === 'MANIFEST_UNKNOWN' || e.code === 'NAME_UNKNOWN'));
    assert.equal(missing.notFound, true);
    assert.equal(missing.retryable, false);

    // A closing PUT with the wrong digest: 400 DIGEST_INVALID, and the session's _state redacted.
    const repo = client.repository('ops/state', 'push');
    const started = await repo.startUpload();
    const session = (started as { session: UploadSession }).session;
    const state = session.location.searchParams.get('_state');
    assert.ok(state && state.length > 10, 'distribution puts _state in the Location');
    const data = randomBytes(100, 27);
    const wrong = sha256Digest('not the data');
    const err = await repo.completeUpload(session, wrong, { stream: Readable.from([data], { objectMode: false }), length: data.length }).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof RegistryError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.method, 'PUT');
    assert.deepEqual(err.errors.map((e) => e.code), ['DIGEST_INVALID']);
    assert.ok(err.url?.includes('_state=REDACTED'), err.url);
    assert.ok(err.url?.includes(`digest=${encodeURIComponent(wrong)}`), err.url);
    for (const text of [err.message, err.url ?? '', JSON.stringify(err), String(err.stack)]) {
      assert.ok(!text.includes(state) && !text.includes(encodeURIComponent(state)), 'no _state value in the error');
    }
    assert.match(err.message, /PUT blob: PUT http:\/\/127\.0\.0\.1:\d+\/v2\/ops\/state\/blobs\/uploads\/[^ ]+ answered 400 DIGEST_INVALID/);
  });
});

describe('schema-1 compatibility (signed schema-1 manifests pushed by skopeo --format v2s1)', () => {
  let registry: RunningRegistry;
  let client: RegistryClient;
  before(async () => {
    registry = await startRegistry({ schema1: true });
    client = new RegistryClient(registry.host);
  });
  after(async () => {
    await client?.close();
    await registry?.stop();
  });

  test('GET by tag and digest: the signed media type, and the digest the registry addresses it by', async () => {
    const image = await buildImage({ tag: 'v1', layers: [[{ path: '/hello.txt', content: 'hello schema1\n' }], [{ path: '/b.bin', content: { size: 3000, seed: 1 } }]] });
    await pushLayout(image.ref, `${registry.host}/legacy/app:v1`, { format: 'v2s1' });
    const repo = client.repository('legacy/app', 'push');
    const head = await repo.headManifest('v1');
    assert.ok(head?.digest);
    const byTag = await repo.getManifest('v1');
    assert.equal(byTag.mediaType, MediaTypes.dockerSchema1Signed);
    assert.equal(byTag.contentType, MediaTypes.dockerSchema1Signed);
    // distribution addresses a signed manifest by the digest of its JWS payload, not of the
    // bytes it serves (re-signed on every GET).
    assert.equal(byTag.digest, head.digest);
    assert.notEqual(sha256Digest(byTag.bytes), head.digest);
    const byDigest = await repo.getManifest(head.digest);
    assert.equal(byDigest.digest, head.digest);
    assert.equal(byDigest.mediaType, MediaTypes.dockerSchema1Signed);
    const parsed = JSON.parse(byDigest.bytes.toString('utf8')) as { schemaVersion: number; signatures: unknown[]; fsLayers: Array<{ blobSum: string }> };
    assert.equal(parsed.schemaVersion, 1);
    assert.ok(parsed.signatures.length > 0);

    // Push it (blobs mounted) to another repository: the same digest there.
    const copy = client.repository('legacy/copy', 'push');
    for (const blobSum of new Set(parsed.fsLayers.map((l) => l.blobSum))) {
      const size = (await repo.headBlob(blobSum))?.size;
      assert.ok(size !== undefined);
      assert.equal((await copy.pushBlob({ digest: blobSum, size }, () => assert.fail('mounted'), { mountFrom: 'legacy/app' })).outcome, 'mounted');
    }
    const put = await copy.putManifest('v1', byDigest.bytes, byDigest.mediaType);
    assert.equal(put.digest, head.digest);
    assert.equal((await copy.headManifest('v1'))?.digest, head.digest);
    assert.equal((await copy.getManifest(head.digest)).digest, head.digest);
  });
});
