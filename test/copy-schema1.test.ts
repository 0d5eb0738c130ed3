// Docker schema-1 sources converted to schema 2 on the way: a registry with schema-1
// compatibility holding a signed manifest pushed by `skopeo copy --format v2s1`, and unsigned /
// hand-made schema-1 manifests served through the test proxy. Checked against the original OCI
// image (skopeo inspect --config) and against skopeo's own conversion.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { copyImage, type CopyRequest, type CopyResult } from '../lib/engine/copy.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import {
  buildImage,
  inspectConfig,
  inspectConfigRaw,
  inspectRaw,
  pushLayout,
  sha256Digest,
  skopeo,
  startProxy,
  startRegistry,
  writeLayerTar,
  type BuiltImage,
  type RunningProxy,
  type RunningRegistry,
} from './support/index.js';
import { makeTempDir, run } from './support/process.js';

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
}
interface Manifest {
  mediaType?: string;
  config: Desc;
  layers: Desc[];
}
interface Config {
  rootfs: { type: string; diff_ids: string[] };
  history: Array<{ created?: string; created_by?: string; empty_layer?: boolean }>;
  [key: string]: unknown;
}

const GZIPPED_EMPTY_TAR = 'sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4';

const parse = <T>(raw: Buffer): T => JSON.parse(raw.toString('utf8')) as T;

async function copy(request: CopyRequest): Promise<CopyResult> {
  const registries = new RegistryPool();
  try {
    return await copyImage(request, { registries });
  } finally {
    await registries.close();
  }
}

async function putBlob(reg: { url: string }, repo: string, data: Buffer): Promise<Desc> {
  const post = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await post.arrayBuffer();
  const location = new URL(post.headers.get('location') as string, reg.url);
  location.searchParams.set('digest', sha256Digest(data));
  const put = await fetch(location, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: data });
  await put.arrayBuffer();
  assert.equal(put.status, 201);
  return { mediaType: MediaTypes.dockerLayerGzip, digest: sha256Digest(data), size: data.length };
}

async function headBlob(reg: { url: string }, repo: string, digest: string): Promise<number> {
  const res = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
  await res.arrayBuffer();
  return res.status;
}

/** Serves `body` as an unsigned schema-1 manifest for `repo:tag` (HEAD and GET); everything else passes through. */
function serveSchema1(proxy: RunningProxy, repo: string, tag: string, body: Buffer): void {
  proxy.intercept = (req) =>
    req.path === `/v2/${repo}/manifests/${tag}`
      ? { status: 200, headers: { 'content-type': MediaTypes.dockerSchema1, 'docker-content-digest': sha256Digest(body) }, body }
      : undefined;
}

let legacy: RunningRegistry;
let dst: RunningRegistry;
let proxy: RunningProxy;
let original: BuiltImage;
let originalManifest: Manifest;
let originalConfig: Config;
let signed: Buffer;

before(async () => {
  [legacy, dst] = await Promise.all([startRegistry({ schema1: true }), startRegistry()]);
  proxy = await startProxy(legacy.url);
  // Two layers, then an empty (throwaway) history entry: `umoci config` with history adds one.
  original = await buildImage({
    tag: 'v1',
    layers: [[{ path: 'etc/base.txt', content: 'base\n' }], [{ path: 'bin/app', content: { size: 60_000, seed: 11 }, mode: 0o755 }]],
  });
  await run('umoci', ['config', '--image', original.ref, '--config.env', 'FOO=bar', '--history.created_by', 'ENV FOO=bar', '--history.created', '2024-01-02T00:00:00Z', '--created', '2024-01-02T00:00:00Z']);
  await Promise.all([pushLayout(original.ref, `${legacy.host}/legacy/app:v1`, { format: 'v2s1' }), pushLayout(original.ref, `${legacy.host}/oci/app:v1`)]);
  originalManifest = parse(await inspectRaw(`${legacy.host}/oci/app:v1`));
  originalConfig = (await inspectConfig(`${legacy.host}/oci/app:v1`)) as Config;
  signed = await inspectRaw(`${legacy.host}/legacy/app:v1`);
});

after(async () => {
  await proxy?.stop();
  await Promise.all([legacy?.stop(), dst?.stop()]);
});

describe('schema-1 sources', () => {
  test('the fixture: a signed schema-1 manifest, newest first, with a throwaway entry', () => {
    const s1 = parse<{ schemaVersion: number; signatures?: unknown[]; fsLayers: Array<{ blobSum: string }>; history: Array<{ v1Compatibility: string }> }>(signed);
    assert.equal(s1.schemaVersion, 1);
    assert.ok(s1.signatures?.length);
    assert.equal(s1.fsLayers.length, 3);
    assert.equal(s1.fsLayers[0]?.blobSum, GZIPPED_EMPTY_TAR);
    assert.equal((JSON.parse(s1.history[0]?.v1Compatibility ?? '{}') as { throwaway?: boolean }).throwaway, true);
    assert.deepEqual(s1.fsLayers.slice(1).map((l) => l.blobSum), originalManifest.layers.map((l) => l.digest).reverse());
    assert.equal(originalConfig.history.filter((h) => h.empty_layer).length, 1);
  });

  test('converted to schema 2: layers base-first, diff_ids of the original image, history kept, readable by skopeo', async () => {
    const result = await copy({ source: `${legacy.host}/legacy/app:v1`, target: `${dst.host}/conv/app:v1` });
    const raw = await inspectRaw(`${dst.host}/conv/app:v1`);
    const manifest = parse<Manifest>(raw);
    assert.equal(result.digest, sha256Digest(raw));
    assert.equal(result.mediaType, MediaTypes.dockerManifest);
    assert.equal(manifest.mediaType, MediaTypes.dockerManifest);
    assert.equal(manifest.config.mediaType, MediaTypes.dockerConfig);
    // Base first, the throwaway layer gone; the compressed blobs are the original ones.
    assert.deepEqual(manifest.layers.map((l) => [l.mediaType, l.digest, l.size]), originalManifest.layers.map((l) => [MediaTypes.dockerLayerGzip, l.digest, l.size]));
    assert.equal(await headBlob(dst, 'conv/app', GZIPPED_EMPTY_TAR), 404);
    for (const l of manifest.layers) assert.equal(await headBlob(dst, 'conv/app', l.digest), 200);
    assert.deepEqual(result.blobs, { copied: 3, skipped: 0, mounted: 0, bytes: manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0) });

    // skopeo reads the config; diff_ids are the original's, history entries line up.
    const config = (await inspectConfig(`${dst.host}/conv/app:v1`)) as Config;
    assert.deepEqual(config.rootfs, { type: 'layers', diff_ids: originalConfig.rootfs.diff_ids });
    assert.equal(config.history.length, originalConfig.history.length);
    assert.deepEqual(config.history.map((h) => [h.created, !!h.empty_layer]), originalConfig.history.map((h) => [h.created, !!h.empty_layer]));
    assert.deepEqual(config.history.slice(0, 2).map((h) => h.created_by), originalConfig.history.slice(0, 2).map((h) => h.created_by));
    assert.equal(config.architecture, originalConfig.architecture);
    assert.equal(config.os, originalConfig.os);
    assert.deepEqual(config.config, originalConfig.config);
    const configRaw = await inspectConfigRaw(`${dst.host}/conv/app:v1`);
    assert.equal(sha256Digest(configRaw), manifest.config.digest);
  });

  test("the result is byte for byte skopeo's own conversion (manifest and config)", async () => {
    await skopeo(['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', '--format', 'v2s2', `docker://${legacy.host}/legacy/app:v1`, `docker://${dst.host}/skopeo/app:v1`]);
    await copy({ source: `${legacy.host}/legacy/app:v1`, target: `${dst.host}/conv2/app:v1` });
    const [ours, theirs] = await Promise.all([inspectRaw(`${dst.host}/conv2/app:v1`), inspectRaw(`${dst.host}/skopeo/app:v1`)]);
    assert.equal(ours.toString('utf8'), theirs.toString('utf8'));
    const [ourConfig, theirConfig] = await Promise.all([inspectConfigRaw(`${dst.host}/conv2/app:v1`), inspectConfigRaw(`${dst.host}/skopeo/app:v1`)]);
    assert.equal(ourConfig.toString('utf8'), theirConfig.toString('utf8'));
  });

  test('a re-run writes nothing', async () => {
    const first = await copy({ source: `${legacy.host}/legacy/app:v1`, target: `${dst.host}/conv3/app:v1` });
    const target = await startProxy(dst.url);
    try {
      const second = await copy({ source: `${legacy.host}/legacy/app:v1`, target: `${target.host}/conv3/app:v1` });
      assert.equal(second.digest, first.digest);
      assert.equal(second.noop, true);
      assert.deepEqual(target.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD'), []);
    } finally {
      await target.stop();
    }
  });

  test('an unsigned schema-1 manifest converts to the same image as the signed one', async () => {
    const s1 = parse<Record<string, unknown>>(signed);
    delete s1.signatures;
    const unsigned = Buffer.from(JSON.stringify(s1, null, 3));
    serveSchema1(proxy, 'legacy/app', 'unsigned', unsigned);
    const [fromSigned, fromUnsigned] = [
      await copy({ source: `${legacy.host}/legacy/app:v1`, target: `${dst.host}/conv4/app:signed` }),
      await copy({ source: `${proxy.host}/legacy/app:unsigned`, target: `${dst.host}/conv4/app:unsigned` }),
    ];
    assert.ok(proxy.requests.some((r) => r.method === 'GET' && r.path === '/v2/legacy/app/manifests/unsigned'));
    assert.equal(fromUnsigned.digest, fromSigned.digest);
    assert.ok((await inspectRaw(`${dst.host}/conv4/app:unsigned`)).equals(await inspectRaw(`${dst.host}/conv4/app:signed`)));
  });

  test('a hand-made schema-1 image: multi-member gzip layers, a throwaway entry in the middle, repeated ids collapsed', async () => {
    const work = makeTempDir('schema1');
    const tars: Buffer[] = [];
    for (const [i, files] of [
      [{ path: 'etc/one', content: 'one\n' }],
      [{ path: 'usr/lib/two.bin', content: { size: 20_000, seed: 21 } }],
    ].entries()) {
      const path = join(work, `layer${i}.tar`);
      await writeLayerTar(path, files);
      tars.push(await readFile(path));
    }
    const [tar0, tar1] = tars as [Buffer, Buffer];
    // Layer 1 is three gzip members back to back (what `pigz --independent` or appends produce).
    const cuts = [0, 700, 9_000, tar1.length];
    const multiMember = Buffer.concat(cuts.slice(1).map((end, i) => gzipSync(tar1.subarray(cuts[i], end))));
    const repo = 'handmade/app';
    const [l0, l1, empty] = await Promise.all([putBlob(legacy, repo, gzipSync(tar0)), putBlob(legacy, repo, multiMember), putBlob(legacy, repo, gzipSync(Buffer.alloc(1024)))]);
    const v1 = (o: Record<string, unknown>): { v1Compatibility: string } => ({ v1Compatibility: JSON.stringify(o) });
    const id = (n: number): string => String(n).repeat(64);
    // Newest first: top (layer 1, listed twice under one id, as old registries did), the throwaway entry, the base layer.
    const top = v1({ id: id(3), parent: id(2), created: '2020-01-03T00:00:00.500Z', architecture: 'arm64', os: 'linux', config: { Cmd: ['/bin/two'] }, container_config: { Cmd: ['/bin/sh', '-c', 'add two'] } });
    const manifest = {
      schemaVersion: 1,
      name: repo,
      tag: 'v1',
      architecture: 'arm64',
      fsLayers: [{ blobSum: l1.digest }, { blobSum: l1.digest }, { blobSum: empty.digest }, { blobSum: l0.digest }],
      history: [
        top,
        top,
        v1({ id: id(2), parent: id(1), created: '2020-01-02T00:00:00Z', throwaway: true, container_config: { Cmd: ['/bin/sh', '-c', '#(nop) ENV X=1'] } }),
        v1({ id: id(1), created: '2020-01-01T00:00:00Z', container_config: { Cmd: ['/bin/sh', '-c', 'add one'] } }),
      ],
    };
    serveSchema1(proxy, repo, 'v1', Buffer.from(JSON.stringify(manifest, null, 3)));
    const result = await copy({ source: `${proxy.host}/${repo}:v1`, target: `${dst.host}/conv5/app:v1` });
    const converted = parse<Manifest>(await inspectRaw(`${dst.host}/conv5/app:v1`));
    assert.equal(result.digest, sha256Digest(await inspectRaw(`${dst.host}/conv5/app:v1`)));
    assert.deepEqual(converted.layers.map((l) => [l.digest, l.size]), [[l0.digest, l0.size], [l1.digest, l1.size]]);
    const config = (await inspectConfig(`${dst.host}/conv5/app:v1`)) as Config;
    assert.deepEqual(config.rootfs.diff_ids, [sha256Digest(tar0), sha256Digest(tar1)]);
    assert.deepEqual(config.history, [
      { created: '2020-01-01T00:00:00Z', created_by: '/bin/sh -c add one' },
      { created: '2020-01-02T00:00:00Z', created_by: '/bin/sh -c #(nop) ENV X=1', empty_layer: true },
      { created: '2020-01-03T00:00:00.5Z', created_by: '/bin/sh -c add two' },
    ]);
    assert.equal(config.architecture, 'arm64');
    assert.equal(config.os, 'linux');
    assert.deepEqual(config.config, { Cmd: ['/bin/two'] });
    assert.equal(await headBlob(dst, 'conv5/app', empty.digest), 404);
  });
});
