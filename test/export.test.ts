// Layer tar export (issue #4), judged by the standard tools: GNU tar lists and extracts the
// archives, skopeo reads `oci` and `docker` archives back, s3rver holds what the S3 sink wrote.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { crc32 } from 'node:zlib';
import { promisify } from 'node:util';
import { GetObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { RegistryPool } from '../lib/engine/registries.js';
import { exportImage } from '../lib/export/export.js';
import { archiveSize, dockerEntries, layersEntries, registryBlob, ustarEncodable } from '../lib/export/formats.js';
import { FileArchiveStore } from '../lib/ports/archive-store.js';
import { choosePartSize, MultipartUpload, S3ArchiveStore, MiB } from '../lib/aws/s3-archive-store.js';
import { digestOf } from '../lib/digest.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import { inspectConfigRaw, inspectRaw, makeTempDir, pollUntil, pushTestImage, pushTestIndex, skopeo, startProxy, startRegistry, startS3, tarOf, type PushedImage, type RunningProxy, type RunningRegistry, type RunningS3 } from './support/index.js';

const exec = promisify(execFile);

let registry: RunningRegistry;
let proxy: RunningProxy;
let check: RunningRegistry;
let s3: RunningS3;
let pool: RegistryPool;
let dir: string;
let single: PushedImage;
let amd64: PushedImage;
let arm64: PushedImage;
let indexDigest: string;
let oneEntry: { digest: string; bytes: Buffer };
let big: PushedImage;
const files = new FileArchiveStore();

before(async () => {
  [registry, check, s3] = await Promise.all([startRegistry(), startRegistry(), startS3()]);
  proxy = await startProxy(registry.url);
  pool = new RegistryPool();
  dir = makeTempDir('export');
  // Uncompressed tar layers: every size is an exact multiple of 512, the case the reference got wrong.
  const layerA = tarOf({ 'etc/a': 'alpha\n', 'bin/tool': randomBytes(3000) });
  const layerB = tarOf({ 'data/b': randomBytes(512 * 7) });
  assert.equal(layerA.length % 512, 0);
  assert.equal(layerB.length % 512, 0);
  single = await pushTestImage(registry.host, 'app/single', 'v1', { layers: [{ bytes: layerA }, { bytes: layerB }, { bytes: layerA }] });
  amd64 = await pushTestImage(registry.host, 'app/multi', 'amd64', { layers: [{ bytes: layerA }, { bytes: tarOf({ amd: 'x86' }) }] });
  arm64 = await pushTestImage(registry.host, 'app/multi', 'arm64', { architecture: 'arm64', variant: 'v8', layers: [{ bytes: layerA }, { bytes: tarOf({ arm: 'aarch64' }) }] });
  oneEntry = await pushTestIndex(registry.host, 'app/multi', 'one', [{ image: arm64, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }]);
  indexDigest = (await pushTestIndex(registry.host, 'app/multi', 'v1', [{ image: amd64, platform: { os: 'linux', architecture: 'amd64' } }, { image: arm64, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }])).digest;
  // Over 100 MiB: a 12 MiB layer first, so a corruption in the second lands after multipart has begun.
  big = await pushTestImage(registry.host, 'app/big', 'v1', { layers: [{ bytes: randomBytes(12 * MiB), mediaType: MediaTypes.ociLayerGzip }, { bytes: randomBytes(96 * MiB), mediaType: MediaTypes.ociLayerGzip }] });
});

after(async () => {
  await pool?.close();
  await Promise.all([registry?.stop(), check?.stop(), s3?.stop(), proxy?.stop()]);
});

async function gnuTarList(path: string): Promise<string[]> {
  const { stdout } = await exec('tar', ['-tvf', path]);
  return stdout.trim().split('\n');
}

async function extract(path: string): Promise<string> {
  const out = makeTempDir('extract');
  await exec('tar', ['-xf', path, '-C', out]);
  return out;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('layers format', () => {
  test('GNU tar lists every member, each named by the sha256 of its content, sizes that are multiples of 512 included', async () => {
    const path = join(dir, 'single-layers.tar');
    const result = await exportImage({ source: `${registry.host}/app/single:v1`, destination: path }, { registries: pool, store: files });
    assert.equal(result.format, 'layers');
    assert.equal(result.digest, single.digest);
    const listing = await gnuTarList(path);
    // config + two distinct layers (layerA appears twice in the manifest, once in the archive)
    assert.equal(listing.length, 3, listing.join('\n'));
    for (const line of listing) assert.match(line, /^-rw-r--r-- 0\/0 +\d+ 1970-01-01 00:00 sha256:[0-9a-f]{64}\.tar$/);
    const names = listing.map((l) => l.split(' ').at(-1) as string);
    assert.deepEqual(names, [`${single.configDigest}.tar`, `${single.layers[0]?.digest}.tar`, `${single.layers[1]?.digest}.tar`]);
    const out = await extract(path);
    for (const name of names) {
      const bytes = await readFile(join(out, name));
      assert.equal(sha256(bytes), name.slice(0, -'.tar'.length));
    }
    const size = (await stat(path)).size;
    assert.equal(size, result.bytes);
    assert.equal(sha256(await readFile(path)), result.sha256);
    // The padding is exact: header + data rounded up to 512 for each member, plus the two end blocks.
    const expected = [single.config.length, single.layers[0]?.size as number, single.layers[1]?.size as number].reduce((n, s) => n + 512 + Math.ceil(s / 512) * 512, 1024);
    assert.equal(size, expected);
  });

  test('--no-config leaves the config out; exporting twice gives byte-identical archives', async () => {
    const a = join(dir, 'noconfig-a.tar');
    const b = join(dir, 'noconfig-b.tar');
    await exportImage({ source: `${registry.host}/app/single:v1`, destination: a, noConfig: true }, { registries: pool, store: files });
    await exportImage({ source: `${registry.host}/app/single:v1`, destination: b, noConfig: true }, { registries: pool, store: files });
    const listing = await gnuTarList(a);
    assert.equal(listing.length, 2);
    assert.ok(!listing.some((l) => l.includes(single.configDigest)));
    assert.ok((await readFile(a)).equals(await readFile(b)));
  });

  test('an index needs one platform: the error lists the platforms; --platform picks one', async () => {
    await assert.rejects(exportImage({ source: `${registry.host}/app/multi:v1`, destination: join(dir, 'x.tar') }, { registries: pool, store: files }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_PLATFORM_NOT_FOUND');
      assert.match(err.message, /linux\/amd64, linux\/arm64\/v8/);
      assert.match(err.message, /--platform/);
      return true;
    });
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('x.tar') || n.startsWith('.x.tar')), []);
    const path = join(dir, 'arm.tar');
    const result = await exportImage({ source: `${registry.host}/app/multi:v1`, destination: path, platform: 'linux/arm64' }, { registries: pool, store: files });
    assert.equal(result.digest, arm64.digest);
    assert.equal(result.platform, 'linux/arm64/v8');
    const names = (await gnuTarList(path)).map((l) => l.split(' ').at(-1));
    assert.deepEqual(names, [`${arm64.configDigest}.tar`, ...arm64.layers.map((l) => `${l.digest}.tar`)]);
    await assert.rejects(exportImage({ source: `${registry.host}/app/multi:v1`, destination: join(dir, 'y.tar'), platform: 'linux/s390x' }, { registries: pool, store: files }), /available: linux\/amd64, linux\/arm64\/v8/);
  });
});

describe('oci format', () => {
  test('skopeo reads the archive back to the same manifest digest (single image)', async () => {
    const path = join(dir, 'single-oci.tar');
    await exportImage({ source: `${registry.host}/app/single:v1`, destination: path, format: 'oci' }, { registries: pool, store: files });
    const listing = await gnuTarList(path);
    assert.match(listing[0] as string, / oci-layout$/);
    assert.match(listing[1] as string, / index.json$/);
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci-archive:${path}:v1`, `docker://${check.host}/back/single:v1`]);
    assert.ok((await inspectRaw(`${check.host}/back/single:v1`)).equals(single.manifest));
  });

  test('a multi-platform image keeps its whole index; --platform narrows it', async () => {
    const whole = join(dir, 'multi-oci.tar');
    const result = await exportImage({ source: `${registry.host}/app/multi:v1`, destination: whole, format: 'oci' }, { registries: pool, store: files });
    assert.equal(result.digest, indexDigest);
    await skopeo(['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci-archive:${whole}:v1`, `docker://${check.host}/back/multi:v1`]);
    const raw = await inspectRaw(`${check.host}/back/multi:v1`);
    assert.equal(digestOf(raw), indexDigest);
    assert.ok((await inspectRaw(`${check.host}/back/multi@${arm64.digest}`)).equals(arm64.manifest));

    const narrowed = join(dir, 'multi-oci-arm.tar');
    const one = await exportImage({ source: `${registry.host}/app/multi:v1`, destination: narrowed, format: 'oci', platform: 'linux/arm64' }, { registries: pool, store: files });
    assert.notEqual(one.digest, indexDigest);
    await skopeo(['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci-archive:${narrowed}:v1`, `docker://${check.host}/back/multi-arm:v1`]);
    const index = JSON.parse((await inspectRaw(`${check.host}/back/multi-arm:v1`)).toString()) as { manifests: Array<{ digest: string; platform: unknown }> };
    assert.deepEqual(index.manifests.map((m) => m.digest), [arm64.digest]);
    assert.deepEqual(index.manifests[0]?.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  });
});

describe('platforms and determinism in every format', () => {
  for (const format of ['layers', 'oci', 'docker'] as const) {
    test(`${format}: a single image of another platform is refused, nothing written; its own platform is accepted`, async () => {
      const path = join(dir, `single-wrong-${format}.tar`);
      await assert.rejects(exportImage({ source: `${registry.host}/app/single:v1`, destination: path, format, platform: 'linux/arm64' }, { registries: pool, store: files }), (err: Error & { code?: string; side?: string }) => {
        assert.equal(err.code, 'ERR_PLATFORM_NOT_FOUND');
        assert.equal(err.side, 'source');
        assert.match(err.message, /linux\/amd64.*linux\/arm64/);
        return true;
      });
      assert.deepEqual((await readdir(dir)).filter((n) => n.includes(`single-wrong-${format}`)), [], 'no file, complete-looking or partial');
      const ok = await exportImage({ source: `${registry.host}/app/single:v1`, destination: join(dir, `single-right-${format}.tar`), format, platform: 'linux/amd64' }, { registries: pool, store: files });
      assert.equal(ok.digest, single.digest, 'the image itself, not a wrapper');
      assert.equal(ok.platform, 'linux/amd64');
    });

    test(`${format}: exporting twice gives byte-identical archives`, async () => {
      const platform = format === 'oci' ? {} : { platform: 'linux/arm64' };
      const a = await exportImage({ source: `${registry.host}/app/multi:v1`, destination: join(dir, `twice-a.${format}.tar`), format, ...platform }, { registries: pool, store: files });
      const b = await exportImage({ source: `${registry.host}/app/multi:v1`, destination: join(dir, `twice-b.${format}.tar`), format, ...platform }, { registries: pool, store: files });
      assert.equal(a.sha256, b.sha256);
      assert.ok((await readFile(join(dir, `twice-a.${format}.tar`))).equals(await readFile(join(dir, `twice-b.${format}.tar`))));
    });
  }

  test('an index with one entry needs no --platform: its only image is exported (layers, docker)', async () => {
    for (const format of ['layers', 'docker'] as const) {
      const result = await exportImage({ source: `${registry.host}/app/multi:one`, destination: join(dir, `one-entry.${format}.tar`), format }, { registries: pool, store: files });
      assert.equal(result.digest, arm64.digest);
      assert.equal(result.platform, 'linux/arm64/v8');
    }
    const oci = await exportImage({ source: `${registry.host}/app/multi:one`, destination: join(dir, 'one-entry.oci.tar'), format: 'oci' }, { registries: pool, store: files });
    assert.equal(oci.digest, oneEntry.digest, 'oci keeps the index as it is');
  });

  test('docker: an index of several platforms without --platform is refused with the list', async () => {
    await assert.rejects(exportImage({ source: `${registry.host}/app/multi:v1`, destination: join(dir, 'docker-multi.tar'), format: 'docker' }, { registries: pool, store: files }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_PLATFORM_NOT_FOUND');
      assert.match(err.message, /linux\/amd64, linux\/arm64\/v8/);
      return true;
    });
    assert.deepEqual((await readdir(dir)).filter((n) => n.includes('docker-multi')), []);
  });
});

describe('docker format', () => {
  test('skopeo reads the docker-archive: same config and layers', async () => {
    const path = join(dir, 'single-docker.tar');
    await exportImage({ source: `${registry.host}/app/single:v1`, destination: path, format: 'docker' }, { registries: pool, store: files });
    const out = await extract(path);
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as Array<{ Config: string; RepoTags: string[]; Layers: string[] }>;
    assert.deepEqual(manifest[0]?.RepoTags, [`${registry.host}/app/single:v1`]);
    assert.equal(manifest[0]?.Layers.length, 3);
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `docker-archive:${path}`, `docker://${check.host}/back/docker:v1`]);
    assert.ok((await inspectConfigRaw(`${check.host}/back/docker:v1`)).equals(single.config));
    const pushed = JSON.parse((await inspectRaw(`${check.host}/back/docker:v1`)).toString()) as { layers: Array<{ digest: string }> };
    assert.deepEqual(pushed.layers.map((l) => l.digest), single.layers.map((l) => l.digest));
  });
});

describe('integrity', () => {
  test('a corrupted source blob aborts the export and leaves no complete-looking file', async () => {
    const target = amd64.layers[1]?.digest as string;
    proxy.intercept = (req) => (req.method === 'GET' && req.path.includes(`/blobs/${target}`) ? { transformResponseBody: (b) => Buffer.concat([b.subarray(0, b.length - 1), Buffer.from([b[b.length - 1]! ^ 0xff])]) } : undefined);
    try {
      const path = join(dir, 'corrupt.tar');
      await assert.rejects(exportImage({ source: `${proxy.host}/app/multi@${amd64.digest}`, destination: path }, { registries: pool, store: files }), (err: Error & { code?: string; side?: string }) => {
        assert.equal(err.code, 'ERR_DIGEST_MISMATCH');
        assert.equal(err.side, 'source');
        return true;
      });
      assert.deepEqual((await readdir(dir)).filter((n) => n.includes('corrupt')), []);
    } finally {
      proxy.intercept = () => undefined;
    }
  });

  test('pure layout: sizes are exact, long names are pax-encoded, blobs come from memory when generated', () => {
    const image = { config: { mediaType: MediaTypes.ociConfig, digest: digestOf('c'), size: 1 }, layers: [{ mediaType: MediaTypes.ociLayerTar, digest: digestOf('l'), size: 1024 }] };
    const entries = layersEntries(image, { includeConfig: true, blob: registryBlob(new Map([[digestOf('c'), Buffer.from('c')]])) });
    assert.deepEqual(entries.map((e) => e.content?.kind), ['bytes', 'blob']);
    assert.equal(archiveSize(entries), 1024 + (512 + 512) + (512 + 1024));
    assert.ok(ustarEncodable(`blobs/sha256/${'a'.repeat(64)}`));
    assert.ok(!ustarEncodable(`blobs/sha512/${'a'.repeat(128)}`));
    const docker = dockerEntries(image, { repoTag: 'example.com/app:v1', blob: registryBlob(new Map()) });
    assert.deepEqual(docker.map((e) => e.name), ['manifest.json', `${digestOf('c').slice(7)}.json`, `${digestOf('l').slice(7)}.tar`, 'repositories']);
  });
});

describe('S3 multipart writer (no S3: the part uploads are functions of the test)', () => {
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => i % 251));
  /** Writes `data` in odd-sized chunks and ends; resolves when the stream finished or failed. */
  const feed = async (upload: MultipartUpload, data: Buffer): Promise<Error | undefined> => {
    const done = new Promise<Error | undefined>((resolve) => {
      upload.once('finish', () => resolve(undefined));
      upload.once('error', (err) => resolve(err));
    });
    for (let at = 0; at < data.length; at += 3) if (!upload.write(data.subarray(at, at + 3))) await new Promise((r) => upload.once('drain', r));
    upload.end();
    return done;
  };

  test('parts carry their own bytes until accepted, at most `inFlight` upload at once, completion lists them in order', async () => {
    const data = bytes(41); // 10 parts of 4 bytes and one of 1
    let uploading = 0;
    let most = 0;
    const seen = new Map<number, Buffer>();
    const upload = new MultipartUpload({
      partSize: 4,
      inFlight: 2,
      start: async () => 'upload-1',
      part: async (id, n, body) => {
        assert.equal(id, 'upload-1');
        most = Math.max(most, ++uploading);
        const copy = Buffer.from(body);
        // Later parts finish first: completion order must not matter, nor reuse of a finished part's buffer.
        await new Promise((r) => setTimeout(r, n % 2 ? 5 : 1));
        assert.ok(body.equals(copy), `part ${n}'s buffer was overwritten while it was uploading`);
        seen.set(n, copy);
        uploading -= 1;
        return { PartNumber: n, ETag: `"etag-${n}"` };
      },
    });
    assert.equal(await feed(upload, data), undefined);
    const ended = await upload.ended;
    assert.equal(ended.kind, 'multipart');
    assert.equal(most, 2);
    assert.deepEqual(ended.kind === 'multipart' ? ended.parts.map((p) => p.PartNumber) : [], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert.ok(Buffer.concat([...seen.keys()].sort((a, b) => a - b).map((n) => seen.get(n) as Buffer)).equals(data));
  });

  test('an archive smaller than one part opens no multipart upload', async () => {
    let started = 0;
    const upload = new MultipartUpload({ partSize: 64, inFlight: 2, start: async () => (started++, 'never'), part: async () => assert.fail('no part') });
    assert.equal(await feed(upload, bytes(10)), undefined);
    const ended = await upload.ended;
    assert.equal(started, 0);
    assert.ok(ended.kind === 'single' && ended.body.equals(bytes(10)));
    assert.equal(await upload.uploadId, undefined);
  });

  test('a refused part fails the stream with its error, and queued parts are not sent', async () => {
    const sent: number[] = [];
    const upload = new MultipartUpload({
      partSize: 4,
      inFlight: 1,
      start: async () => 'upload-2',
      part: async (_id, n) => {
        sent.push(n);
        if (n === 2) throw new Error('part 2 refused');
        return { PartNumber: n, ETag: `"${n}"` };
      },
    });
    const failed = await feed(upload, bytes(40));
    assert.match(String(failed?.message), /part 2 refused/);
    await upload.idle();
    assert.deepEqual(sent, [1, 2]);
    await assert.rejects(upload.ended, /part 2 refused/);
  });

  test('exactly one part, an empty archive: one PutObject; an exact multiple of the part size: no empty last part', async () => {
    for (const [size, kind, parts] of [[4, 'single', 0], [0, 'single', 0], [12, 'multipart', 3]] as const) {
      const sent: number[] = [];
      const upload = new MultipartUpload({ partSize: 4, inFlight: 2, start: async () => 'upload-4', part: async (_id, n, body) => (sent.push(body.length), { PartNumber: n, ETag: `"${n}"` }) });
      assert.equal(await feed(upload, bytes(size)), undefined);
      const ended = await upload.ended;
      assert.equal(ended.kind, kind, `${size} bytes`);
      if (ended.kind === 'single') assert.ok(ended.body.equals(bytes(size)));
      assert.deepEqual(sent, Array(parts).fill(4), `${size} bytes`);
    }
  });

  test('destroyed while a write waits for a free buffer: the write is answered, idle() settles, nothing more is sent', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const sent: number[] = [];
    const upload = new MultipartUpload({ partSize: 4, inFlight: 1, start: async () => 'upload-5', part: async (_id, n) => (sent.push(n), await gate, { PartNumber: n, ETag: `"${n}"` }) });
    const answered = new Promise<Error | null | undefined>((resolve) => upload.write(bytes(40), (err) => resolve(err)));
    upload.on('error', () => undefined);
    await pollUntil(() => (sent.length === 1 ? true : undefined), { timeoutMs: 5000, what: 'part 1 uploading' });
    upload.destroy(new Error('stop'));
    assert.match(String((await answered)?.message), /stop/);
    release();
    await upload.idle();
    assert.deepEqual(sent, [1], 'queued parts are dropped once the stream failed');
    await assert.rejects(upload.ended, /stop/);
  });

  test('a CreateMultipartUpload that fails fails the stream; there is no upload id to abort', async () => {
    const upload = new MultipartUpload({ partSize: 4, inFlight: 2, start: async () => Promise.reject(new Error('create refused')), part: async () => assert.fail('no part without an upload') });
    const failed = await feed(upload, bytes(20));
    assert.match(String(failed?.message), /create refused/);
    assert.equal(await upload.uploadId, undefined);
  });

  test('more parts than S3 allows (an archive past its announced size) fail with a clear error', async () => {
    const upload = new MultipartUpload({ partSize: 4, inFlight: 2, maxParts: 3, start: async () => 'upload-3', part: async (_id, n) => ({ PartNumber: n, ETag: `"${n}"` }) });
    const failed = await feed(upload, bytes(13));
    assert.equal((failed as Error & { code?: string })?.code, 'ERR_SIZE_MISMATCH');
    assert.match(String(failed?.message), /outgrew S3's 3 parts of 4 bytes/);
  });
});

describe('S3 sink', () => {
  const client = (): S3Client => new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' });

  test('part size fits the S3 object limit in 10,000 parts and never goes below 5 MiB', () => {
    assert.equal(choosePartSize(undefined), 5 * MiB);
    assert.equal(choosePartSize(100 * MiB), 5 * MiB);
    assert.equal(choosePartSize(50_000 * MiB), 5 * MiB);
    assert.equal(choosePartSize(50_001 * MiB), 6 * MiB);
    const limit = 5 * 1024 * 1024 * MiB;
    assert.ok(choosePartSize(limit) * 10_000 >= limit);
    assert.throws(() => choosePartSize(limit + 1), /S3 object limit/);
  });

  test('a multipart export over 100 MiB is byte-identical to the file export, with metadata', async () => {
    const file = join(dir, 'big.tar');
    const fromFile = await exportImage({ source: `${registry.host}/app/big:v1`, destination: file }, { registries: pool, store: files });
    assert.ok(fromFile.bytes > 100 * MiB);
    const store = new S3ArchiveStore({ client: client() });
    const key = 'exports/app/big/v1.tar';
    const fromS3 = await exportImage({ source: `${registry.host}/app/big:v1`, destination: `s3://${s3.bucket}/${key}` }, { registries: pool, store });
    assert.equal(fromS3.destination, `s3://${s3.bucket}/${key}`);
    assert.equal(fromS3.sha256, fromFile.sha256);
    const object = await client().send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    const body = Buffer.from(await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
    assert.equal(body.length, fromFile.bytes);
    assert.equal(sha256(body), fromFile.sha256);
    assert.equal(object.Metadata?.['source-digest'], big.digest);
    assert.equal(object.Metadata?.['source-reference'], `${registry.host}/app/big:v1`);
    assert.equal(object.Metadata?.format, 'layers');
  });

  test('server-side encryption is asked for on the upload; the platform is recorded in the metadata', async () => {
    const s3proxy = await startProxy(s3.endpoint);
    try {
      const store = new S3ArchiveStore({ client: new S3Client({ endpoint: s3proxy.url, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' }), serverSideEncryption: 'aws:kms', kmsKeyId: 'alias/ocirelay-exports' });
      const key = 'exports/app/multi/arm64.tar';
      await exportImage({ source: `${registry.host}/app/multi:v1`, destination: `s3://${s3.bucket}/${key}`, platform: 'linux/arm64' }, { registries: pool, store });
      const creating = s3proxy.requests.filter((r) => r.path.startsWith(`/${s3.bucket}/${key}`) && (r.method === 'PUT' || /[?&]uploads(=|&|$)/.test(r.path)) && !/partNumber=/.test(r.path));
      assert.equal(creating.length, 1, creating.map((r) => `${r.method} ${r.path}`).join('\n'));
      // Smaller than one part: one PutObject, no multipart upload to open, complete or leave behind.
      assert.equal(creating[0]?.method, 'PUT');
      assert.equal(creating[0]?.headers['x-amz-server-side-encryption'], 'aws:kms');
      assert.equal(creating[0]?.headers['x-amz-server-side-encryption-aws-kms-key-id'], 'alias/ocirelay-exports');
      const object = await client().send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
      assert.equal(object.Metadata?.platform, 'linux/arm64/v8');
      assert.equal(object.Metadata?.['source-digest'], arm64.digest);
    } finally {
      await s3proxy.stop();
    }
  });

  test('multipart: at most two parts in flight, each with the CRC32 of its own bytes, completed in order', async () => {
    const file = join(dir, 'big-crc.tar');
    await exportImage({ source: `${registry.host}/app/big:v1`, destination: file }, { registries: pool, store: files });
    const archive = await readFile(file);
    const s3proxy = await startProxy(s3.endpoint);
    try {
      // The SDK's default checksum behaviour (what runs against AWS): every part carries a CRC32.
      const uploader = new S3Client({ endpoint: s3proxy.url, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, requestChecksumCalculation: 'WHEN_SUPPORTED' });
      let inFlight = 0;
      let mostInFlight = 0;
      let completedParts: Array<{ PartNumber?: number; ChecksumCRC32?: string }> = [];
      uploader.middlewareStack.add(
        (next, context) => async (args) => {
          if (context.commandName === 'CompleteMultipartUploadCommand') completedParts = (args.input as { MultipartUpload: { Parts: typeof completedParts } }).MultipartUpload.Parts;
          if (context.commandName !== 'UploadPartCommand') return next(args);
          mostInFlight = Math.max(mostInFlight, ++inFlight);
          try {
            return await next(args);
          } finally {
            inFlight -= 1;
          }
        },
        { step: 'initialize' },
      );
      const key = 'exports/app/big/crc.tar';
      const result = await exportImage({ source: `${registry.host}/app/big:v1`, destination: `s3://${s3.bucket}/${key}` }, { registries: pool, store: new S3ArchiveStore({ client: uploader }) });
      assert.equal(result.bytes, archive.length);
      assert.equal(mostInFlight, 2, 'the default budget allows two 5 MiB parts in flight');
      const create = s3proxy.requests.filter((r) => r.method === 'POST' && /[?&]uploads(=|&|$)/.test(r.path));
      assert.equal(create.length, 1);
      assert.equal(create[0]?.headers['x-amz-checksum-algorithm'], 'CRC32');
      const parts = s3proxy.requests.filter((r) => r.method === 'PUT' && /[?&]partNumber=/.test(r.path));
      const partSize = 5 * MiB;
      assert.equal(parts.length, Math.ceil(archive.length / partSize));
      for (const part of parts) {
        const n = Number(/[?&]partNumber=(\d+)/.exec(part.path)?.[1]);
        const bytes = archive.subarray((n - 1) * partSize, n * partSize);
        assert.equal(Number(part.headers['content-length']), bytes.length, `part ${n} length`);
        const crc = Buffer.alloc(4);
        crc.writeUInt32BE(crc32(bytes));
        assert.equal(part.headers['x-amz-checksum-crc32'], crc.toString('base64'), `part ${n} was sent with bytes other than its own`);
        // The completion lists each part's checksum (S3 requires it for an upload created with CRC32).
        assert.equal(completedParts[n - 1]?.ChecksumCRC32, crc.toString('base64'), `part ${n} in CompleteMultipartUpload`);
      }
      assert.deepEqual(completedParts.map((p) => p.PartNumber), parts.map((_, i) => i + 1));
      const object = await client().send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
      const body = Buffer.from(await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
      assert.ok(body.equals(archive), 'the object is byte-identical to the file export');
    } finally {
      await s3proxy.stop();
    }
  });

  test('a part S3 keeps refusing fails the export, naming the part; the upload is aborted after it, and no object appears', async () => {
    const s3proxy = await startProxy(s3.endpoint);
    s3proxy.intercept = (req) => (req.method === 'PUT' && /[?&]partNumber=3(&|$)/.test(req.path) ? { status: 500, headers: { 'content-type': 'application/xml' }, body: '<Error><Code>InternalError</Code><Message>injected</Message></Error>' } : undefined);
    try {
      const store = new S3ArchiveStore({ client: new S3Client({ endpoint: s3proxy.url, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' }) });
      const key = 'exports/refused-part.tar';
      await assert.rejects(exportImage({ source: `${registry.host}/app/big:v1`, destination: `s3://${s3.bucket}/${key}` }, { registries: pool, store }), (err: Error & { code?: string; operation?: string }) => {
        assert.equal(err.code, 'ERR_NETWORK');
        assert.equal(err.operation, 'S3 UploadPart 3');
        assert.match(err.message, new RegExp(`UploadPart 3 for s3://${s3.bucket}/${key} failed: InternalError`));
        return true;
      });
      const third = s3proxy.requests.filter((r) => r.method === 'PUT' && /[?&]partNumber=3(&|$)/.test(r.path));
      assert.ok(third.length >= 2, 'the SDK retried the refused part');
      // AbortMultipartUpload comes after every answered attempt at the refused part. (A part still
      // in flight is cancelled by the abort, and its request may reach the proxy after the DELETE
      // on another connection: S3 stores no part whose body was cut.)
      const abortAt = s3proxy.requests.findIndex((r) => r.method === 'DELETE' && /[?&]uploadId=/.test(r.path));
      assert.ok(abortAt >= 0, 'AbortMultipartUpload is sent');
      assert.ok(third.every((r) => r.index < abortAt), 'after every attempt at the refused part');
      assert.ok(!s3proxy.requests.some((r) => r.method === 'POST' && /[?&]uploadId=/.test(r.path)), 'CompleteMultipartUpload must never be sent');
      await assert.rejects(client().send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key })), (err: Error) => err.name === 'NotFound');
    } finally {
      await s3proxy.stop();
    }
  });

  test('abort cancels parts S3 has not answered, then sends AbortMultipartUpload at once', { timeout: 30_000 }, async () => {
    const s3proxy = await startProxy(s3.endpoint);
    let held = 0;
    // UploadPart requests are held and never answered: only a cancelled request lets abort go on.
    s3proxy.intercept = (req) => (req.method === 'PUT' && /[?&]partNumber=/.test(req.path) ? new Promise(() => void held++) : undefined);
    try {
      const store = new S3ArchiveStore({ client: new S3Client({ endpoint: s3proxy.url, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' }) });
      const writer = await store.create(`s3://${s3.bucket}/exports/held.tar`, { size: 40 * MiB, contentType: 'application/x-tar', metadata: {} });
      writer.stream.on('error', () => undefined);
      for (let i = 0; i < 11; i++) writer.stream.write(randomBytes(MiB));
      await pollUntil(() => (held >= 2 ? true : undefined), { timeoutMs: 10_000, what: 'two parts held by the proxy' });
      await writer.abort(new Error('stopped by the test'));
      const last = s3proxy.requests.at(-1);
      assert.equal(last?.method, 'DELETE');
      assert.match(last?.path ?? '', /[?&]uploadId=/);
      await assert.rejects(writer.commit(), /stopped by the test/);
    } finally {
      await s3proxy.stop();
    }
  });

  test('a corrupted blob aborts the multipart upload: AbortMultipartUpload is sent and no object appears', async () => {
    const s3proxy = await startProxy(s3.endpoint);
    const target = big.layers[1]?.digest as string;
    proxy.intercept = (req) => (req.method === 'GET' && req.path.includes(`/blobs/${target}`) ? { transformResponseBody: (b) => { const c = Buffer.from(b); c[c.length - 10]! ^= 1; return c; } } : undefined);
    try {
      const store = new S3ArchiveStore({ client: new S3Client({ endpoint: s3proxy.url, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' }) });
      const key = 'exports/corrupt.tar';
      await assert.rejects(exportImage({ source: `${proxy.host}/app/big:v1`, destination: `s3://${s3.bucket}/${key}` }, { registries: pool, store }), (err: Error & { code?: string }) => err.code === 'ERR_DIGEST_MISMATCH');
      const methods = s3proxy.requests.map((r) => `${r.method} ${r.path.replace(/\?.*/, '')}${/[?&]uploads(=|&|$)/.test(r.path) ? '?uploads' : /uploadId=/.test(r.path) ? '?uploadId' : ''}`);
      assert.ok(methods.includes(`POST /${s3.bucket}/${key}?uploads`), methods.join('\n'));
      assert.ok(methods.includes(`DELETE /${s3.bucket}/${key}?uploadId`), `no AbortMultipartUpload in:\n${methods.join('\n')}`);
      assert.ok(!methods.some((m) => m.startsWith(`POST /${s3.bucket}/${key}?uploadId`)), 'CompleteMultipartUpload must never be sent');
      await assert.rejects(client().send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key })), (err: Error) => err.name === 'NotFound');
    } finally {
      proxy.intercept = () => undefined;
      await s3proxy.stop();
    }
  });
});
