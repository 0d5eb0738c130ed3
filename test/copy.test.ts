// copyImage against real registries (distribution 2.8), fixtures built with umoci and pushed with
// skopeo, results checked with skopeo and with plain HTTP requests; request counts through the
// test proxy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { copyImage, type CopyOptions, type CopyRequest, type CopyResult } from '../lib/engine/copy.js';
import { BlobLocations } from '../lib/engine/execute.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { OciRelayError } from '../lib/errors.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import {
  buildImage,
  buildIndex,
  inspectConfig,
  inspectRaw,
  pushLayout,
  randomBytes,
  readBlob,
  sha256Digest,
  startProxy,
  startRegistry,
  type BuiltImage,
  type RunningProxy,
  type RunningRegistry,
} from './support/index.js';
import { freePort, makeTempDir, pollUntil, removeTempDir, spawnManaged } from './support/process.js';

// --- plain-HTTP helpers (independent of the code under test) ------------------------------------

const ACCEPT_ALL = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest, MediaTypes.dockerSchema1Signed, MediaTypes.dockerSchema1].join(', ');

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Record<string, unknown>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}
interface ManifestJson {
  mediaType?: string;
  manifests?: Desc[];
  config?: Desc;
  layers?: Desc[];
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

type Host = { url: string };

async function headManifest(reg: Host, repo: string, reference: string): Promise<{ status: number; digest: string | null }> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${reference}`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } });
  await res.arrayBuffer();
  return { status: res.status, digest: res.headers.get('docker-content-digest') };
}

async function headBlob(reg: Host, repo: string, digest: string): Promise<number> {
  const res = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
  await res.arrayBuffer();
  return res.status;
}

async function catalog(reg: Host): Promise<string[]> {
  const res = await fetch(`${reg.url}/v2/_catalog?n=1000`);
  return ((await res.json()) as { repositories: string[] }).repositories;
}

/** The tags of a repository; none when the registry says it has none (distribution: NAME_UNKNOWN, or null after deletes). */
async function tagsOf(reg: Host, repo: string): Promise<string[]> {
  const res = await fetch(`${reg.url}/v2/${repo}/tags/list`);
  const body = (await res.json()) as { tags?: string[] | null; errors?: Array<{ code: string }> };
  if (res.status === 404) {
    assert.equal(body.errors?.[0]?.code, 'NAME_UNKNOWN');
    return [];
  }
  assert.equal(res.status, 200);
  return body.tags ?? [];
}

async function putBlob(reg: Host, repo: string, data: Buffer): Promise<Desc> {
  const post = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await post.arrayBuffer();
  assert.equal(post.status, 202);
  const location = new URL(post.headers.get('location') as string, reg.url);
  location.searchParams.set('digest', sha256Digest(data));
  const put = await fetch(location, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: data });
  await put.arrayBuffer();
  assert.equal(put.status, 201);
  return { mediaType: 'application/octet-stream', digest: sha256Digest(data), size: data.length };
}

async function putManifest(reg: Host, repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${reference}`, { method: 'PUT', headers: { 'content-type': mediaType }, body: bytes });
  const text = await res.text();
  assert.equal(res.status, 201, text);
  return sha256Digest(bytes);
}

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const parse = (raw: Buffer): ManifestJson => JSON.parse(raw.toString('utf8')) as ManifestJson;

/** Every blob (config and layers) of an image manifest. */
const blobsOf = (m: ManifestJson): Desc[] => [m.config as Desc, ...(m.layers ?? [])];

async function copy(request: CopyRequest, options: Partial<CopyOptions> = {}): Promise<CopyResult> {
  const registries = new RegistryPool();
  try {
    return await copyImage(request, { registries, ...options });
  } finally {
    await registries.close();
  }
}

async function rejection(promise: Promise<unknown>): Promise<OciRelayError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof OciRelayError, `expected an OciRelayError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the copy to fail');
}

/** Requests that write something (anything but GET and HEAD). */
const writes = (proxy: RunningProxy): string[] => proxy.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD').map((r) => `${r.method} ${r.path}`);

// --- fixtures ------------------------------------------------------------------------------------

let src: RunningRegistry;
let dst: RunningRegistry;
const proxies: RunningProxy[] = [];
async function proxy(reg: RunningRegistry): Promise<RunningProxy> {
  const p = await startProxy(reg.url);
  proxies.push(p);
  return p;
}

const base = [{ path: 'etc/base.txt', content: 'the shared base layer\n' }];
let images: Record<'amd64' | 'arm64' | 'armv6' | 'armv7' | 's390x' | 'single' | 'annAmd64' | 'annArm64', BuiltImage>;
let multi: { digest: string; raw: Buffer };
let annotatedIndex: { digest: string; raw: Buffer };
let layout: string;
/** The rich index: unknown fields, annotations, data, an entry without platform. */
let rich: { raw: Buffer; json: ManifestJson; entries: Desc[] };
const ANN = 'org.example.k';

before(async () => {
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  const app = (seed: number) => [{ path: 'bin/app', content: { size: 40_000, seed }, mode: 0o755 }];
  const amd64 = await buildImage({ tag: 'amd64', architecture: 'amd64', layers: [base, app(1)] });
  layout = amd64.layout;
  const more = async (tag: string, architecture: string, seed: number, variant?: string, annotations?: Record<string, string>) =>
    buildImage({ layout, tag, architecture, ...(variant ? { variant } : {}), ...(annotations ? { annotations } : {}), layers: [base, app(seed)] });
  images = {
    amd64,
    arm64: await more('arm64', 'arm64', 2, 'v8'),
    armv6: await more('armv6', 'arm', 3, 'v6'),
    armv7: await more('armv7', 'arm', 4, 'v7'),
    s390x: await more('s390x', 's390x', 5),
    single: await more('single', 'amd64', 6),
    annAmd64: await more('ann-amd64', 'amd64', 7, undefined, { [ANN]: 'v' }),
    annArm64: await more('ann-arm64', 'arm64', 8, 'v8', { [ANN]: 'v' }),
  };
  multi = await buildIndex({
    layout,
    name: 'multi',
    images: [
      { tag: 'amd64', platform: { os: 'linux', architecture: 'amd64' } },
      { tag: 'arm64', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ],
  });
  annotatedIndex = await buildIndex({
    layout,
    name: 'annotated',
    images: [
      { tag: 'ann-amd64', platform: { os: 'linux', architecture: 'amd64' } },
      { tag: 'ann-arm64', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ],
    annotations: { [ANN]: 'v' },
  });
  const h = src.host;
  await Promise.all([
    pushLayout(`${layout}:single`, `${h}/oci/single:v1`),
    pushLayout(`${layout}:single`, `${h}/docker/single:v1`, { format: 'v2s2' }),
    pushLayout(`${layout}:multi`, `${h}/oci/multi:v1`, { all: true }),
    pushLayout(`${layout}:multi`, `${h}/docker/multi:v1`, { all: true, format: 'v2s2' }),
    pushLayout(`${layout}:armv7`, `${h}/oci/armv7:v1`),
    pushLayout(`${layout}:arm64`, `${h}/docker/arm64:v1`, { format: 'v2s2' }),
    pushLayout(`${layout}:annotated`, `${h}/oci/annotated:v1`, { all: true }),
    ...(['amd64', 'armv6', 'arm64', 'armv7', 's390x'] as const).map((name) => pushLayout(`${layout}:${name}`, `${h}/rich/app:c-${name}`)),
  ]);

  // The rich index, pushed by hand: its exact bytes are what the registry serves.
  const d = (name: keyof typeof images): Desc => ({ mediaType: MediaTypes.ociManifest, digest: images[name].digest, size: images[name].size });
  const arm64Bytes = await readBlob(layout, images.arm64.digest);
  const entries: Desc[] = [
    { ...d('amd64'), platform: { architecture: 'amd64', os: 'linux' }, annotations: { 'org.example.entry': 'amd64' }, 'x-entry-field': { keep: [1, 'two', null] } },
    { ...d('armv6'), platform: { architecture: 'arm', os: 'linux', variant: 'v6' } },
    {
      ...d('arm64'),
      platform: { architecture: 'arm64', os: 'linux', variant: 'v8', 'os.version': '5.15', 'os.features': ['sve'] },
      artifactType: 'application/vnd.example.image',
      data: arm64Bytes.toString('base64'),
    },
    { ...d('armv7'), platform: { architecture: 'arm', os: 'linux', variant: 'v7' } },
    { ...d('s390x'), annotations: { 'org.example.entry': 'no platform: read from the config' } },
  ];
  const json: ManifestJson = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, 'x-before': { nested: [true] }, manifests: entries, annotations: { 'org.example.index': 'rich' }, 'x-after': 'kept' };
  const raw = Buffer.from(JSON.stringify(json));
  await putManifest(src, 'rich/app', 'v1', raw, MediaTypes.ociIndex);
  rich = { raw, json, entries };
});

after(async () => {
  await Promise.all(proxies.map((p) => p.stop()));
  await Promise.all([src?.stop(), dst?.stop()]);
});

/** Checks that every manifest of `repo:tag` at the target is byte-for-byte the source's (skopeo). */
async function assertSameTree(srcRef: string, dstRef: string, dstRepo: string): Promise<Buffer> {
  const [a, b] = await Promise.all([inspectRaw(`${src.host}/${srcRef}`), inspectRaw(`${dst.host}/${dstRef}`)]);
  assert.ok(a.equals(b), `the target manifest ${dstRef} differs from the source ${srcRef}`);
  const m = parse(b);
  for (const child of m.manifests ?? []) {
    const [x, y] = await Promise.all([inspectRaw(`${src.host}/${srcRef.replace(/[:@].*$/, '')}@${child.digest}`), inspectRaw(`${dst.host}/${dstRepo}@${child.digest}`)]);
    assert.ok(x.equals(y), `child ${child.digest} differs`);
    for (const blob of blobsOf(parse(y))) assert.equal(await headBlob(dst, dstRepo, blob.digest), 200);
  }
  for (const blob of m.config ? blobsOf(m) : []) assert.equal(await headBlob(dst, dstRepo, blob.digest), 200);
  return b;
}

describe('copying images verbatim', () => {
  test('a single OCI image: exact bytes, readable config, counts', async () => {
    const result = await copy({ source: `${src.host}/oci/single:v1`, target: `${dst.host}/c/single:v1` });
    const raw = await assertSameTree('oci/single:v1', 'c/single:v1', 'c/single');
    assert.equal(result.digest, images.single.digest);
    assert.equal(sha256Digest(raw), images.single.digest);
    assert.equal(result.mediaType, MediaTypes.ociManifest);
    assert.deepEqual(await inspectConfig(`${dst.host}/c/single:v1`), await inspectConfig(`${src.host}/oci/single:v1`));
    const blobs = blobsOf(parse(raw));
    assert.deepEqual(result.blobs, { copied: 3, skipped: 0, mounted: 0, bytes: blobs.reduce((n, b) => n + b.size, 0) });
    assert.equal(result.manifests, 1);
    assert.equal(result.noop, false);
    assert.equal(result.source, `${src.host}/oci/single:v1`);
    assert.equal(result.target, `${dst.host}/c/single:v1`);
  });

  test('an OCI index: every child by digest, then the index, all exact bytes', async () => {
    const result = await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/c/multi:v1` });
    const raw = await assertSameTree('oci/multi:v1', 'c/multi:v1', 'c/multi');
    assert.ok(raw.equals(multi.raw));
    assert.equal(result.digest, multi.digest);
    assert.equal(result.manifests, 3);
    // The shared base layer is copied once: 1 base + 2 configs + 2 app layers.
    assert.equal(result.blobs.copied, 5);
  });

  test('a Docker manifest list (skopeo --format v2s2): exact bytes of the list and its images', async () => {
    const result = await copy({ source: `${src.host}/docker/multi:v1`, target: `${dst.host}/c/docker-multi:v1` });
    const raw = await assertSameTree('docker/multi:v1', 'c/docker-multi:v1', 'c/docker-multi');
    const list = parse(raw);
    assert.equal(list.mediaType, MediaTypes.dockerManifestList);
    assert.equal(result.mediaType, MediaTypes.dockerManifestList);
    assert.equal(result.digest, sha256Digest(raw));
    assert.deepEqual(list.manifests?.map((m) => m.mediaType), [MediaTypes.dockerManifest, MediaTypes.dockerManifest]);
  });

  test('a Docker v2 single image', async () => {
    const result = await copy({ source: `${src.host}/docker/single:v1`, target: `${dst.host}/c/docker-single:v1` });
    const raw = await assertSameTree('docker/single:v1', 'c/docker-single:v1', 'c/docker-single');
    assert.equal(result.mediaType, MediaTypes.dockerManifest);
    assert.equal(parse(raw).mediaType, MediaTypes.dockerManifest);
  });

  test('the source by digest, the target tag given', async () => {
    const result = await copy({ source: `${src.host}/oci/multi@${images.arm64.digest}`, target: `${dst.host}/c/by-digest:arm` });
    assert.equal(result.digest, images.arm64.digest);
    assert.equal((await headManifest(dst, 'c/by-digest', 'arm')).digest, images.arm64.digest);
  });
});

describe('modes', () => {
  const SINGLE_ONLY = [MediaTypes.ociManifest, MediaTypes.dockerManifest, MediaTypes.dockerSchema1Signed, MediaTypes.dockerSchema1].join(', ');

  test('distribution 2.8 with a single-image Accept: a Docker list answers its linux/amd64 image, an OCI index 404', async () => {
    // What graph.ts documents for registry-defaults: the default platform of a list, and a 404
    // (then the full list) where the registry cannot pick one.
    const list = await fetch(`${src.url}/v2/docker/multi/manifests/v1`, { headers: { accept: SINGLE_ONLY } });
    const body = Buffer.from(await list.arrayBuffer());
    assert.equal(list.status, 200);
    assert.equal(list.headers.get('content-type'), MediaTypes.dockerManifest);
    const fullList = parse(await inspectRaw(`${src.host}/docker/multi:v1`));
    const amd64 = fullList.manifests?.find((m) => m.platform?.architecture === 'amd64');
    assert.equal(sha256Digest(body), amd64?.digest);
    assert.equal(list.headers.get('docker-content-digest'), amd64?.digest);

    const index = await fetch(`${src.url}/v2/oci/multi/manifests/v1`, { headers: { accept: SINGLE_ONLY } });
    assert.equal(index.status, 404);
    assert.equal(((await index.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'MANIFEST_UNKNOWN');
  });

  test('registry-defaults: a Docker list gives its linux/amd64 image, nothing else', async () => {
    const fullList = parse(await inspectRaw(`${src.host}/docker/multi:v1`));
    const [amd64, arm64] = fullList.manifests as [Desc, Desc];
    const result = await copy({ source: `${src.host}/docker/multi:v1`, target: `${dst.host}/m/defaults-list:v1`, mode: 'registry-defaults' });
    assert.equal(result.digest, amd64.digest);
    const raw = await inspectRaw(`${dst.host}/m/defaults-list:v1`);
    assert.ok(raw.equals(await inspectRaw(`${src.host}/docker/multi@${amd64.digest}`)));
    assert.equal(parse(raw).mediaType, MediaTypes.dockerManifest);
    assert.equal((await headManifest(dst, 'm/defaults-list', arm64.digest)).status, 404);
    assert.equal((await headManifest(dst, 'm/defaults-list', sha256Digest(await inspectRaw(`${src.host}/docker/multi:v1`)))).status, 404);
    assert.equal(result.manifests, 1);
  });

  test('registry-defaults: an OCI index (the registry cannot pick) is copied whole', async () => {
    const result = await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/m/defaults-index:v1`, mode: 'registry-defaults' });
    assert.equal(result.digest, multi.digest);
    await assertSameTree('oci/multi:v1', 'm/defaults-index:v1', 'm/defaults-index');
  });

  test('registry-defaults: a list named by digest is copied whole', async () => {
    const listDigest = sha256Digest(await inspectRaw(`${src.host}/docker/multi:v1`));
    const result = await copy({ source: `${src.host}/docker/multi@${listDigest}`, target: `${dst.host}/m/defaults-digest:v1`, mode: 'registry-defaults' });
    assert.equal(result.digest, listDigest);
    await assertSameTree(`docker/multi@${listDigest}`, 'm/defaults-digest:v1', 'm/defaults-digest');
  });

  test('prefer-multiarch: a Docker list is copied whole; a single image as it is', async () => {
    const list = await copy({ source: `${src.host}/docker/multi:v1`, target: `${dst.host}/m/prefer-list:v1`, mode: 'prefer-multiarch' });
    assert.equal(list.mediaType, MediaTypes.dockerManifestList);
    await assertSameTree('docker/multi:v1', 'm/prefer-list:v1', 'm/prefer-list');
    const single = await copy({ source: `${src.host}/oci/single:v1`, target: `${dst.host}/m/prefer-single:v1`, mode: 'prefer-multiarch' });
    assert.equal(single.digest, images.single.digest);
  });

  test('normalise-to-multiarch: an OCI image is pushed by digest and wrapped in a one-entry OCI index (variant from the config)', async () => {
    const result = await copy({ source: `${src.host}/oci/armv7:v1`, target: `${dst.host}/m/norm-oci:v1`, mode: 'normalise-to-multiarch' });
    const raw = await inspectRaw(`${dst.host}/m/norm-oci:v1`);
    assert.equal(result.digest, sha256Digest(raw));
    assert.equal(result.mediaType, MediaTypes.ociIndex);
    const config = (await inspectConfig(`${src.host}/oci/armv7:v1`)) as Record<string, unknown>;
    assert.equal(config.variant, 'v7');
    assert.deepEqual(parse(raw), {
      schemaVersion: 2,
      mediaType: MediaTypes.ociIndex,
      manifests: [{ mediaType: MediaTypes.ociManifest, digest: images.armv7.digest, size: images.armv7.size, platform: { architecture: 'arm', os: 'linux', variant: 'v7' } }],
    });
    // The image itself: by digest, verbatim, and not tagged.
    const child = await inspectRaw(`${dst.host}/m/norm-oci@${images.armv7.digest}`);
    assert.ok(child.equals(await inspectRaw(`${src.host}/oci/armv7:v1`)));
    assert.deepEqual(await tagsOf(dst, 'm/norm-oci'), ['v1']);
  });

  test('normalise-to-multiarch: a Docker v2 image gets a Docker manifest list', async () => {
    const source = await inspectRaw(`${src.host}/docker/arm64:v1`);
    const config = (await inspectConfig(`${src.host}/docker/arm64:v1`)) as Record<string, unknown>;
    const result = await copy({ source: `${src.host}/docker/arm64:v1`, target: `${dst.host}/m/norm-docker:v1`, mode: 'normalise-to-multiarch' });
    const raw = await inspectRaw(`${dst.host}/m/norm-docker:v1`);
    assert.equal(result.mediaType, MediaTypes.dockerManifestList);
    assert.deepEqual([config.architecture, config.os, config.variant], ['arm64', 'linux', 'v8']);
    const platform = { architecture: 'arm64', os: 'linux', variant: 'v8' };
    assert.deepEqual(parse(raw), {
      schemaVersion: 2,
      mediaType: MediaTypes.dockerManifestList,
      manifests: [{ mediaType: MediaTypes.dockerManifest, digest: sha256Digest(source), size: source.length, platform }],
    });
    assert.ok((await inspectRaw(`${dst.host}/m/norm-docker@${sha256Digest(source)}`)).equals(source));
  });

  test('normalise-to-multiarch: an index stays as it is', async () => {
    const result = await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/m/norm-index:v1`, mode: 'normalise-to-multiarch' });
    assert.equal(result.digest, multi.digest);
    await assertSameTree('oci/multi:v1', 'm/norm-index:v1', 'm/norm-index');
  });
});

describe('platform filter', () => {
  const cases: Array<{ platforms: string[]; kept: number[]; why: string }> = [
    { platforms: ['linux/arm64'], kept: [2], why: 'a filter without variant matches the v8 entry; data, artifactType, os.version and os.features stay' },
    { platforms: ['linux/arm/v7', 'linux/amd64'], kept: [0, 3], why: 'the index order, not the filter order' },
    { platforms: ['linux/arm'], kept: [1, 3], why: 'without variant: every variant' },
    { platforms: ['linux/s390x'], kept: [4], why: 'an entry without platform, resolved from its config, is kept without one' },
  ];
  for (const [n, c] of cases.entries()) {
    test(`${c.platforms.join(' ')}: ${c.why}`, async () => {
      const repo = `f/case${n}`;
      const result = await copy({ source: `${src.host}/rich/app:v1`, target: `${dst.host}/${repo}:v1`, platforms: c.platforms });
      const raw = await inspectRaw(`${dst.host}/${repo}:v1`);
      // The source index with only `manifests` replaced: every other field, and the key order, kept.
      const expected = JSON.stringify({ ...rich.json, manifests: c.kept.map((i) => rich.entries[i]) });
      assert.equal(raw.toString('utf8'), expected);
      assert.equal(result.digest, sha256Digest(raw));
      const names = ['amd64', 'armv6', 'arm64', 'armv7', 's390x'] as const;
      for (const [i, name] of names.entries()) {
        const status = (await headManifest(dst, repo, images[name].digest)).status;
        assert.equal(status, c.kept.includes(i) ? 200 : 404, `${name} ${c.kept.includes(i) ? 'copied' : 'left out'}`);
        if (c.kept.includes(i)) assert.ok((await inspectRaw(`${dst.host}/${repo}@${images[name].digest}`)).equals(await readBlob(layout, images[name].digest)));
      }
    });
  }

  test('nothing matches: PlatformNotFound, and nothing at all is pushed', async () => {
    const target = await proxy(dst);
    const err = await rejection(copy({ source: `${src.host}/rich/app:v1`, target: `${target.host}/f/none:v1`, platforms: ['linux/ppc64le'] }));
    assert.equal(err.code, 'ERR_PLATFORM_NOT_FOUND');
    assert.equal(err.side, 'source');
    assert.match(err.message, /matches linux\/ppc64le; available: linux\/amd64, linux\/arm\/v6, linux\/arm64\/v8, linux\/arm\/v7, linux\/s390x/);
    assert.deepEqual(writes(target), []);
    assert.ok(!(await catalog(dst)).includes('f/none'));
    assert.equal((await headManifest(dst, 'f/none', 'v1')).status, 404);
    for (const image of Object.values(images)) {
      assert.equal((await headManifest(dst, 'f/none', image.digest)).status, 404);
      for (const b of blobsOf(parse(await readBlob(layout, image.digest)))) assert.equal(await headBlob(dst, 'f/none', b.digest), 404);
    }
  });

  for (const mode of ['registry-defaults', 'prefer-multiarch', 'normalise-to-multiarch'] as const) {
    test(`${mode}: a single image is judged by the platform in its config`, async () => {
      const target = await proxy(dst);
      const err = await rejection(copy({ source: `${src.host}/oci/single:v1`, target: `${target.host}/f/single-${mode}:v1`, platforms: ['linux/arm64'], mode }));
      assert.equal(err.code, 'ERR_PLATFORM_NOT_FOUND');
      assert.equal(err.side, 'source');
      assert.match(err.message, /is linux\/amd64, which does not match linux\/arm64/);
      assert.deepEqual(writes(target), [], 'nothing pushed');
      // The matching platform copies it (verbatim, or wrapped when normalising).
      const result = await copy({ source: `${src.host}/oci/single:v1`, target: `${dst.host}/f/single-${mode}:v1`, platforms: ['linux/amd64'], mode });
      if (mode === 'normalise-to-multiarch') assert.equal(parse(await inspectRaw(`${dst.host}/f/single-${mode}:v1`)).manifests?.[0]?.digest, images.single.digest);
      else assert.equal(result.digest, images.single.digest);
    });
  }
});

describe('annotations', () => {
  test('new values go into the index and every child; children keep config and layers', async () => {
    const result = await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/a/new:v1`, annotations: { [ANN]: 'new', 'org.example.other': 'x' } });
    const index = parse(await inspectRaw(`${dst.host}/a/new:v1`));
    assert.notEqual(result.digest, multi.digest);
    assert.deepEqual(index.annotations, { [ANN]: 'new', 'org.example.other': 'x' });
    const source = parse(multi.raw);
    assert.equal(index.manifests?.length, 2);
    for (const [i, e] of (index.manifests ?? []).entries()) {
      const original = source.manifests?.[i] as Desc;
      assert.deepEqual(e.platform, original.platform);
      assert.notEqual(e.digest, original.digest);
      const childRaw = await inspectRaw(`${dst.host}/a/new@${e.digest}`);
      assert.equal(sha256Digest(childRaw), e.digest);
      assert.equal(childRaw.length, e.size);
      const child = parse(childRaw);
      const originalChild = parse(await inspectRaw(`${src.host}/oci/multi@${original.digest}`));
      assert.deepEqual(child, { ...originalChild, annotations: { [ANN]: 'new', 'org.example.other': 'x' } });
      for (const b of blobsOf(child)) assert.equal(await headBlob(dst, 'a/new', b.digest), 200);
      // The original child is not in the target.
      assert.equal((await headManifest(dst, 'a/new', original.digest)).status, 404);
    }
  });

  test('values already there keep the digest and the exact bytes', async () => {
    const result = await copy({ source: `${src.host}/oci/annotated:v1`, target: `${dst.host}/a/same:v1`, annotations: { [ANN]: 'v' } });
    assert.equal(result.digest, annotatedIndex.digest);
    await assertSameTree('oci/annotated:v1', 'a/same:v1', 'a/same');
    assert.deepEqual(result.notes, []);
  });

  test('a different value changes the manifests', async () => {
    const result = await copy({ source: `${src.host}/oci/annotated:v1`, target: `${dst.host}/a/other:v1`, annotations: { [ANN]: 'w' } });
    assert.notEqual(result.digest, annotatedIndex.digest);
    const index = parse(await inspectRaw(`${dst.host}/a/other:v1`));
    assert.deepEqual(index.annotations, { [ANN]: 'w' });
    for (const e of index.manifests ?? []) assert.equal(parse(await inspectRaw(`${dst.host}/a/other@${e.digest}`)).annotations?.[ANN], 'w');
  });

  test('Docker media types are copied verbatim, with a note saying so', async () => {
    const result = await copy({ source: `${src.host}/docker/multi:v1`, target: `${dst.host}/a/docker:v1`, annotations: { [ANN]: 'v' } });
    await assertSameTree('docker/multi:v1', 'a/docker:v1', 'a/docker');
    assert.deepEqual([...result.notes].sort(), [
      `annotations not applied to ${MediaTypes.dockerManifestList} manifests: the Docker format has no annotations field (its bytes and digest are kept)`,
      `annotations not applied to ${MediaTypes.dockerManifest} manifests: the Docker format has no annotations field (its bytes and digest are kept)`,
    ]);
  });
});

describe('cost: skip, mount, no-op', () => {
  test('an unchanged image copied again: one manifest HEAD on each side, nothing else', async () => {
    for (const [name, mode] of [['oci/multi', 'prefer-multiarch'], ['oci/single', 'prefer-multiarch'], ['docker/multi', 'registry-defaults']] as const) {
      const repo = `n/${name.replace('/', '-')}-${mode}`;
      const first = await copy({ source: `${src.host}/${name}:v1`, target: `${dst.host}/${repo}:v1`, mode });
      const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
      const second = await copy({ source: `${s.host}/${name}:v1`, target: `${t.host}/${repo}:v1`, mode });
      assert.equal(second.noop, true);
      assert.equal(second.digest, first.digest);
      assert.deepEqual(second.blobs, { copied: 0, skipped: 0, mounted: 0, bytes: 0 });
      assert.deepEqual(s.requests.map((r) => `${r.method} ${r.path}`), [`HEAD /v2/${name}/manifests/v1`], name);
      assert.deepEqual(t.requests.map((r) => `${r.method} ${r.path}`), [`HEAD /v2/${repo}/manifests/v1`], name);
    }
  });

  test('registry-defaults on an OCI index copied again: no GET and no write either', async () => {
    await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/n/defaults-index:v1`, mode: 'registry-defaults' });
    const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
    const second = await copy({ source: `${s.host}/oci/multi:v1`, target: `${t.host}/n/defaults-index:v1`, mode: 'registry-defaults' });
    assert.equal(second.noop, true);
    assert.equal(second.digest, multi.digest);
    // The single-image HEAD says 404 (the registry cannot pick), so the full list is asked for.
    assert.deepEqual(s.requests.map((r) => r.method), ['HEAD', 'HEAD']);
    assert.deepEqual(t.requests.map((r) => r.method), ['HEAD']);
  });

  test('a cold copy asks the target for the root by digest while it reads the source, once, before any blob', async () => {
    const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
    const result = await copy({ source: `${s.host}/oci/multi:v1`, target: `${t.host}/n/cold-probe:v1` });
    assert.equal(result.digest, multi.digest);
    assert.deepEqual(s.requests.filter((r) => r.path.endsWith('/manifests/v1')).map((r) => r.method), ['HEAD', 'GET']);
    assert.deepEqual(t.requests.slice(0, 2).map((r) => `${r.method} ${r.path}`), ['HEAD /v2/n/cold-probe/manifests/v1', `HEAD /v2/n/cold-probe/manifests/${multi.digest}`]);
    assert.ok(t.requests.slice(2).every((r) => !(r.method === 'HEAD' && r.path.endsWith(`/manifests/${multi.digest}`))), 'the root is asked for once');
    assert.ok(t.requests[2]?.path.includes('/blobs/'), 'blobs follow');
    await assertSameTree('oci/multi:v1', 'n/cold-probe:v1', 'n/cold-probe');
  });

  test('a root already in the target under another tag: no blob is looked at, only the tag is written', async () => {
    await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/n/retag:one` });
    const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
    const result = await copy({ source: `${s.host}/oci/multi:v1`, target: `${t.host}/n/retag:two` });
    assert.equal(result.digest, multi.digest);
    assert.deepEqual(result.blobs, { copied: 0, skipped: 0, mounted: 0, bytes: 0 });
    assert.ok(!t.requests.some((r) => r.path.includes('/blobs/')), t.requests.map((r) => `${r.method} ${r.path}`).join('\n'));
    assert.deepEqual(t.requests.filter((r) => r.method === 'PUT').map((r) => r.path), ['/v2/n/retag/manifests/two']);
    assert.ok((await inspectRaw(`${dst.host}/n/retag:two`)).equals(multi.raw));
  });

  test('a source named by digest to a target without a tag: the one HEAD by digest serves as the root probe', async () => {
    const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
    const result = await copy({ source: `${s.host}/oci/multi@${multi.digest}`, target: `${t.host}/n/by-digest` });
    assert.equal(result.digest, multi.digest);
    assert.equal(t.requests.filter((r) => r.method === 'HEAD' && r.path === `/v2/n/by-digest/manifests/${multi.digest}`).length, 1, t.requests.map((r) => `${r.method} ${r.path}`).join('\n'));
    assert.ok((await inspectRaw(`${dst.host}/n/by-digest@${multi.digest}`)).equals(multi.raw));
  });

  test('blobs already in the target are skipped after a HEAD, never downloaded', async () => {
    await copy({ source: `${src.host}/oci/multi@${images.amd64.digest}`, target: `${dst.host}/s/app:amd64` });
    const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
    const result = await copy({ source: `${s.host}/oci/multi@${images.arm64.digest}`, target: `${t.host}/s/app:arm64` });
    const arm = parse(await readBlob(layout, images.arm64.digest));
    const [config, baseLayer, appLayer] = blobsOf(arm) as [Desc, Desc, Desc];
    assert.equal(baseLayer.digest, blobsOf(parse(await readBlob(layout, images.amd64.digest)))[1]?.digest, 'the fixture shares its base layer');
    assert.deepEqual(result.blobs, { copied: 2, skipped: 1, mounted: 0, bytes: config.size + appLayer.size });
    assert.ok(!s.requests.some((r) => r.path.includes(baseLayer.digest)), 'the source is never asked for the shared blob');
    assert.deepEqual(t.requests.filter((r) => r.path.includes(baseLayer.digest)).map((r) => r.method), ['HEAD']);
    assert.equal(s.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length, 2);
    await assertSameTree(`oci/multi@${images.arm64.digest}`, 's/app:arm64', 's/app');
  });

  test('within one registry, blobs are mounted from the source repository: no blob GET, no blob upload', async () => {
    const p = await proxy(src);
    const result = await copy({ source: `${p.host}/oci/multi:v1`, target: `${p.host}/mounted/multi:v1` });
    assert.deepEqual(result.blobs, { copied: 0, skipped: 0, mounted: 5, bytes: 0 });
    assert.deepEqual(p.requests.filter((r) => r.path.includes('/blobs/') && r.method !== 'POST').map((r) => `${r.method} ${r.path}`), []);
    const mounts = p.requests.filter((r) => r.method === 'POST');
    assert.equal(mounts.length, 5);
    for (const m of mounts) assert.match(m.path, /^\/v2\/mounted\/multi\/blobs\/uploads\/\?(?=.*mount=sha256%3A[0-9a-f]{64})(?=.*from=oci%2Fmulti)/);
    assert.ok((await inspectRaw(`${src.host}/mounted/multi:v1`)).equals(multi.raw));
    for (const child of parse(multi.raw).manifests ?? []) {
      for (const b of blobsOf(parse(await readBlob(layout, child.digest)))) assert.equal(await headBlob(src, 'mounted/multi', b.digest), 200);
    }
  });
});

describe('cost: mounts across copies', () => {
  test('a repository of the target registry known to hold the blobs (shared BlobLocations): mounted from there, the source never read', async () => {
    const locations = new BlobLocations();
    const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
    const first = await copy({ source: `${src.host}/oci/multi:v1`, target: `${t.host}/known/one:v1` }, { locations });
    assert.equal(first.blobs.copied, 5);
    t.reset();
    const second = await copy({ source: `${s.host}/oci/multi:v1`, target: `${t.host}/known/two:v1` }, { locations });
    assert.deepEqual(second.blobs, { copied: 0, skipped: 0, mounted: 5, bytes: 0 });
    assert.deepEqual(s.requests.filter((r) => r.path.includes('/blobs/')), []);
    const mounts = t.requests.filter((r) => r.method === 'POST').map((r) => r.path);
    assert.equal(mounts.length, 5);
    for (const path of mounts) assert.match(path, /[?&]from=known%2Fone(&|$)/);
    await assertSameTree('oci/multi:v1', 'known/two:v1', 'known/two');
  });

  test('another tag of the same repository: only the tag is written', async () => {
    const p = await proxy(src);
    const result = await copy({ source: `${p.host}/oci/multi:v1`, target: `${p.host}/oci/multi:copy` });
    assert.deepEqual(result.blobs, { copied: 0, skipped: 0, mounted: 0, bytes: 0 });
    assert.deepEqual(writes(p), ['PUT /v2/oci/multi/manifests/copy']);
    assert.deepEqual(p.requests.filter((r) => r.path.includes('/blobs/')), []);
    assert.equal((await headManifest(src, 'oci/multi', 'copy')).digest, multi.digest);
  });
});

describe('failures leave nothing behind', () => {
  test('a corrupted source blob: the copy fails naming the source, no manifest or tag at the target', async () => {
    const baseDigest = blobsOf(parse(await readBlob(layout, images.amd64.digest)))[1]?.digest as string;
    const s = await proxy(src);
    s.intercept = (req) =>
      req.method === 'GET' && req.path.endsWith(`/blobs/${baseDigest}`)
        ? { transformResponseBody: (body) => Buffer.concat([body.subarray(0, -1), Buffer.from([(body.at(-1) ?? 0) ^ 0xff])]) }
        : undefined;
    const err = await rejection(copy({ source: `${s.host}/oci/multi:v1`, target: `${dst.host}/x/corrupt:v1` }));
    assert.equal(err.side, 'source');
    assert.equal(err.code, 'ERR_DIGEST_MISMATCH');
    assert.match(err.message, new RegExp(`^source: GET blob: content has digest sha256:[0-9a-f]{64}, expected ${baseDigest}`));
    assert.ok(s.requests.some((r) => r.method === 'GET' && r.path.endsWith(baseDigest)));
    assert.equal((await headManifest(dst, 'x/corrupt', 'v1')).status, 404);
    assert.equal((await headManifest(dst, 'x/corrupt', multi.digest)).status, 404);
    for (const child of parse(multi.raw).manifests ?? []) assert.equal((await headManifest(dst, 'x/corrupt', child.digest)).status, 404);
    assert.equal(await headBlob(dst, 'x/corrupt', baseDigest), 404);
  });

  test('a corrupted child manifest at the source: refused before anything is pushed', async () => {
    const child = parse(multi.raw).manifests?.[1] as Desc;
    const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
    s.intercept = (req) => (req.method === 'GET' && req.path.endsWith(`/manifests/${child.digest}`) ? { transformResponseBody: (body) => Buffer.from(body.toString('utf8').replace('"schemaVersion":2', '"schemaVersion": 2')) } : undefined);
    const err = await rejection(copy({ source: `${s.host}/oci/multi:v1`, target: `${t.host}/x/corrupt-manifest:v1` }));
    assert.equal(err.side, 'source');
    assert.equal(err.code, 'ERR_DIGEST_MISMATCH');
    assert.match(err.message, new RegExp(`^source: GET manifest.*expected ${child.digest}`));
    assert.deepEqual(writes(t), []);
  });

  test('a refused upload at the target: the copy fails naming the target, no manifest or tag there', async () => {
    const baseDigest = blobsOf(parse(await readBlob(layout, images.amd64.digest)))[1]?.digest as string;
    const t = await proxy(dst);
    t.intercept = (req) =>
      req.method === 'PUT' && req.path.includes('/blobs/uploads/') && req.path.includes(`digest=${encodeURIComponent(baseDigest)}`)
        ? { status: 400, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ errors: [{ code: 'BLOB_UPLOAD_INVALID', message: 'refused by policy' }] }) }
        : undefined;
    const err = await rejection(copy({ source: `${src.host}/oci/multi:v1`, target: `${t.host}/x/refused:v1` }));
    assert.equal(err.side, 'target');
    assert.match(err.message, /^target: PUT blob: PUT .* answered 400 BLOB_UPLOAD_INVALID \(refused by policy\)/);
    assert.ok(!t.requests.some((r) => r.method === 'PUT' && r.path.includes('/manifests/')), 'no manifest PUT at all');
    assert.equal((await headManifest(dst, 'x/refused', 'v1')).status, 404);
    for (const child of parse(multi.raw).manifests ?? []) assert.equal((await headManifest(dst, 'x/refused', child.digest)).status, 404);
  });

  test('a missing config blob at the source: a clear error, nothing committed', async () => {
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    const layer = gzipSync(randomBytes(2000, 40));
    const c = await putBlob(src, 'broken/app', config);
    const l = await putBlob(src, 'broken/app', layer);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { ...c, mediaType: MediaTypes.ociConfig }, layers: [{ ...l, mediaType: MediaTypes.ociLayerGzip }] }));
    const digest = await putManifest(src, 'broken/app', 'v1', manifest, MediaTypes.ociManifest);
    const del = await fetch(`${src.url}/v2/broken/app/blobs/${c.digest}`, { method: 'DELETE' });
    await del.arrayBuffer();
    assert.equal(del.status, 202);
    assert.equal(await headBlob(src, 'broken/app', c.digest), 404);

    const err = await rejection(copy({ source: `${src.host}/broken/app:v1`, target: `${dst.host}/x/broken:v1` }));
    assert.equal(err.side, 'source');
    assert.match(err.message, new RegExp(`^source: GET blob: the manifest references blob ${c.digest} \\(${escape(MediaTypes.ociConfig)}, ${c.size} bytes\\), which the source repository broken/app does not have \\(.*404 BLOB_UNKNOWN`));
    assert.equal((await headManifest(dst, 'x/broken', 'v1')).status, 404);
    assert.equal((await headManifest(dst, 'x/broken', digest)).status, 404);

    // normalise-to-multiarch reads the config while resolving the source: the same error, earlier.
    const t = await proxy(dst);
    const early = await rejection(copy({ source: `${src.host}/broken/app:v1`, target: `${t.host}/x/broken-norm:v1`, mode: 'normalise-to-multiarch' }));
    assert.equal(early.side, 'source');
    assert.match(early.message, new RegExp(`^source: GET blob: the manifest references blob ${c.digest} \\(${escape(MediaTypes.ociConfig)}, ${c.size} bytes\\), which the source repository broken/app does not have`));
    assert.deepEqual(writes(t), []);
  });
});

describe('re-runs and target references', () => {
  test('a re-run with a rewriting option gives the same digest and writes nothing', async () => {
    const first = await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/r/idem:v1`, annotations: { [ANN]: 'again' } });
    const before = await inspectRaw(`${dst.host}/r/idem:v1`);
    const t = await proxy(dst);
    const second = await copy({ source: `${src.host}/oci/multi:v1`, target: `${t.host}/r/idem:v1`, annotations: { [ANN]: 'again' } });
    assert.equal(second.digest, first.digest);
    assert.equal(second.noop, true);
    assert.deepEqual(writes(t), []);
    assert.ok(!t.requests.some((r) => r.path.includes('/blobs/')), 'no blob requests at all');
    assert.ok((await inspectRaw(`${dst.host}/r/idem:v1`)).equals(before));
  });

  test('a tag moved back: only the tag is written', async () => {
    await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/r/move:v1` });
    await copy({ source: `${src.host}/oci/single:v1`, target: `${dst.host}/r/move:v1` });
    const t = await proxy(dst);
    const result = await copy({ source: `${src.host}/oci/multi:v1`, target: `${t.host}/r/move:v1` });
    assert.equal(result.digest, multi.digest);
    assert.deepEqual(writes(t), ['PUT /v2/r/move/manifests/v1']);
    assert.ok((await inspectRaw(`${dst.host}/r/move:v1`)).equals(multi.raw));
  });

  test('target by digest: the digest the copy produces', async () => {
    const result = await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/r/by-digest@${multi.digest}` });
    assert.equal(result.digest, multi.digest);
    assert.equal((await headManifest(dst, 'r/by-digest', multi.digest)).status, 200);
    assert.deepEqual(await tagsOf(dst, 'r/by-digest'), []);
    await assertSameTree('oci/multi:v1', `r/by-digest@${multi.digest}`, 'r/by-digest');
  });

  test('target by digest when the options change the digest: ERR_UNSUPPORTED, nothing pushed', async () => {
    const t = await proxy(dst);
    const err = await rejection(copy({ source: `${src.host}/oci/multi:v1`, target: `${t.host}/r/changed@${multi.digest}`, annotations: { [ANN]: 'x' } }));
    assert.equal(err.code, 'ERR_UNSUPPORTED');
    assert.equal(err.side, 'target');
    assert.match(err.message, new RegExp(`target names digest ${multi.digest}, but the copy produces sha256:[0-9a-f]{64} \\(the options change the manifest\\)`));
    assert.deepEqual(writes(t), []);
    assert.ok(!(await catalog(dst)).includes('r/changed'));
    for (const child of parse(multi.raw).manifests ?? []) assert.equal((await headManifest(dst, 'r/changed', child.digest)).status, 404);
  });

  test('target by digest that is not the source: ERR_UNSUPPORTED', async () => {
    const err = await rejection(copy({ source: `${src.host}/oci/single:v1`, target: `${dst.host}/r/wrong@${multi.digest}` }));
    assert.equal(err.code, 'ERR_UNSUPPORTED');
    assert.ok(!(await catalog(dst)).includes('r/wrong'));
  });

  test('source by digest, target without tag or digest: pushed by digest; a re-run costs one HEAD', async () => {
    const first = await copy({ source: `${src.host}/oci/multi@${multi.digest}`, target: `${dst.host}/r/untagged` });
    assert.equal(first.digest, multi.digest);
    assert.deepEqual(await tagsOf(dst, 'r/untagged'), []);
    await assertSameTree(`oci/multi@${multi.digest}`, `r/untagged@${multi.digest}`, 'r/untagged');
    const [s, t] = await Promise.all([proxy(src), proxy(dst)]);
    const second = await copy({ source: `${s.host}/oci/multi@${multi.digest}`, target: `${t.host}/r/untagged` });
    assert.equal(second.noop, true);
    assert.deepEqual(s.requests, []);
    assert.deepEqual(t.requests.map((r) => `${r.method} ${r.path}`), [`HEAD /v2/r/untagged/manifests/${multi.digest}`]);
  });

  test('target by tag@digest: the tag points at that digest', async () => {
    const result = await copy({ source: `${src.host}/oci/multi:v1`, target: `${dst.host}/r/tag-digest:v2@${multi.digest}` });
    assert.equal(result.digest, multi.digest);
    assert.equal((await headManifest(dst, 'r/tag-digest', 'v2')).digest, multi.digest);
    await assertSameTree('oci/multi:v1', 'r/tag-digest:v2', 'r/tag-digest');
    const err = await rejection(copy({ source: `${src.host}/oci/single:v1`, target: `${dst.host}/r/tag-digest:v3@${multi.digest}` }));
    assert.equal(err.code, 'ERR_UNSUPPORTED');
    assert.equal((await headManifest(dst, 'r/tag-digest', 'v3')).status, 404);
  });
});

/**
 * distribution refuses every manifest with layer `urls` unless `validation.manifests.urls.allow`
 * is set, which startRegistry does not offer: a registry of our own for the foreign-layer tests.
 */
async function startRegistryAllowingUrls(): Promise<{ url: string; host: string; stop(): Promise<void> }> {
  const dir = makeTempDir('registry-urls');
  const configPath = join(dir, 'config.yml');
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const config = {
      version: '0.1',
      log: { level: 'warn', accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: join(dir, 'data') }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
      http: { addr: `127.0.0.1:${port}`, secret: 'foreign-layer-tests' },
      validation: { manifests: { urls: { allow: ['^https://'] } } },
    };
    await writeFile(configPath, JSON.stringify(config));
    const proc = spawnManaged('docker-registry', ['serve', configPath], { cwd: dir });
    const url = `http://127.0.0.1:${port}`;
    try {
      await pollUntil(
        async () => {
          const res = await fetch(`${url}/v2/`);
          await res.arrayBuffer();
          return res.status === 200 ? true : undefined;
        },
        { timeoutMs: 15_000, what: `${url}/v2/`, abort: () => assert.ok(!proc.hasExited(), proc.output()) },
      );
    } catch (err) {
      await proc.kill();
      if (attempt < 5 && /address already in use/i.test(proc.output())) continue;
      await removeTempDir(dir);
      throw err;
    }
    return { url, host: `127.0.0.1:${port}`, stop: async () => { await proc.kill(); await removeTempDir(dir); } };
  }
}

describe('foreign layers', () => {
  let foreign: Desc;
  let manifestRaw: Buffer;
  let src: { url: string; host: string; stop(): Promise<void> };
  let dst: { url: string; host: string; stop(): Promise<void> };
  after(async () => {
    await Promise.all([src?.stop(), dst?.stop()]);
  });
  before(async () => {
    [src, dst] = await Promise.all([startRegistryAllowingUrls(), startRegistryAllowingUrls()]);
    const foreignBlob = await putBlob(src, 'foreign/app', gzipSync(randomBytes(3000, 50)));
    const layer = await putBlob(src, 'foreign/app', gzipSync(randomBytes(2000, 51)));
    const config = await putBlob(src, 'foreign/app', Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'windows', rootfs: { type: 'layers', diff_ids: [sha256Digest('a'), sha256Digest('b')] } })));
    foreign = { ...foreignBlob, mediaType: MediaTypes.dockerLayerForeign, urls: ['https://example.invalid/windows/base.tar.gz'] };
    manifestRaw = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: { ...config, mediaType: MediaTypes.dockerConfig }, layers: [foreign, { ...layer, mediaType: MediaTypes.dockerLayerGzip }] }, null, 3),
    );
    await putManifest(src, 'foreign/app', 'v1', manifestRaw, MediaTypes.dockerManifest);
  });

  test('skipped by default with a note; the manifest is copied verbatim', async () => {
    const result = await copy({ source: `${src.host}/foreign/app:v1`, target: `${dst.host}/fl/skip:v1` });
    assert.deepEqual(result.notes, [`skipped foreign layer with urls ${foreign.digest} (${MediaTypes.dockerLayerForeign}); use --include-foreign-layers to copy it`]);
    assert.ok((await inspectRaw(`${dst.host}/fl/skip:v1`)).equals(manifestRaw));
    assert.equal(await headBlob(dst, 'fl/skip', foreign.digest), 404);
    assert.equal(result.blobs.copied, 2);
    for (const b of blobsOf(parse(manifestRaw)).filter((x) => x.digest !== foreign.digest)) assert.equal(await headBlob(dst, 'fl/skip', b.digest), 200);
  });

  test('copied with includeForeignLayers', async () => {
    const result = await copy({ source: `${src.host}/foreign/app:v1`, target: `${dst.host}/fl/all:v1`, includeForeignLayers: true });
    assert.deepEqual(result.notes, []);
    assert.equal(result.blobs.copied, 3);
    assert.equal(await headBlob(dst, 'fl/all', foreign.digest), 200);
    assert.ok((await inspectRaw(`${dst.host}/fl/all:v1`)).equals(manifestRaw));
  });
});
