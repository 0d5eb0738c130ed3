// `--referrers`: OCI 1.1 referrers (distribution 2.8 has no referrers API, so the source holds the
// `sha256-<hex>` tag-schema indexes a client keeps) and cosign-style `sha256-<hex>.sig/.att` tags,
// copied recursively; checked with skopeo (exact bytes) and plain HTTP at the target.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyImage, type CopyRequest, type CopyResult } from '../lib/engine/copy.js';
import { planImage } from '../lib/engine/dry-run.js';
import type { CopyEvent } from '../lib/engine/execute.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import { buildImage, buildIndex, inspectRaw, pushLayout, sha256Digest, startProxy, startRegistry, type RunningRegistry } from './support/index.js';

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  data?: string;
}

const ACCEPT_ALL = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest].join(', ');
const EMPTY = Buffer.from('{}');
const EMPTY_DESC: Desc = { mediaType: MediaTypes.ociEmpty, digest: sha256Digest(EMPTY), size: 2, data: EMPTY.toString('base64') };

const tagOf = (digest: string): string => digest.replace(':', '-');

async function headManifest(reg: { url: string }, repo: string, reference: string): Promise<{ status: number; digest: string | null }> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${reference}`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } });
  await res.arrayBuffer();
  return { status: res.status, digest: res.headers.get('docker-content-digest') };
}

async function headBlob(reg: { url: string }, repo: string, digest: string): Promise<number> {
  const res = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
  await res.arrayBuffer();
  return res.status;
}

async function putBlob(reg: { url: string }, repo: string, data: Buffer, mediaType: string): Promise<Desc> {
  const post = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await post.arrayBuffer();
  const location = new URL(post.headers.get('location') as string, reg.url);
  location.searchParams.set('digest', sha256Digest(data));
  const put = await fetch(location, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: data });
  await put.arrayBuffer();
  assert.equal(put.status, 201);
  return { mediaType, digest: sha256Digest(data), size: data.length };
}

async function putManifest(reg: { url: string }, repo: string, reference: string, body: unknown, mediaType: string): Promise<Desc & { raw: Buffer }> {
  const raw = Buffer.from(JSON.stringify(body));
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${reference}`, { method: 'PUT', headers: { 'content-type': mediaType }, body: raw });
  const text = await res.text();
  assert.equal(res.status, 201, text);
  return { mediaType, digest: sha256Digest(raw), size: raw.length, raw };
}

async function copy(request: CopyRequest, onEvent?: (e: CopyEvent) => void): Promise<CopyResult> {
  const registries = new RegistryPool();
  try {
    return await copyImage(request, { registries, ...(onEvent ? { onEvent } : {}) });
  } finally {
    await registries.close();
  }
}

const REPO = 'app/img';
let src: RunningRegistry;
let dst: RunningRegistry;
let index: Desc;
let arm64: Desc;
/** An SBOM-like artifact about the index, a signature of that artifact, an attestation of the arm64 image. */
let sbom: Desc & { raw: Buffer };
let sbomSignature: Desc & { raw: Buffer };
let armAttestation: Desc & { raw: Buffer };
/** cosign-style: `sha256-<index>.sig` and `sha256-<arm64>.att`. */
let cosignSig: Desc & { raw: Buffer };
let cosignAtt: Desc & { raw: Buffer };
const referrerDescriptor = (m: Desc, artifactType: string, annotations: Record<string, string>): Desc => ({ mediaType: m.mediaType, digest: m.digest, size: m.size, artifactType, annotations });

before(async () => {
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  const amd = await buildImage({ tag: 'amd64', layers: [[{ path: 'a', content: 'amd64\n' }]] });
  const arm = await buildImage({ layout: amd.layout, tag: 'arm64', architecture: 'arm64', layers: [[{ path: 'a', content: 'arm64\n' }]] });
  const built = await buildIndex({
    layout: amd.layout,
    name: 'multi',
    images: [
      { tag: 'amd64', platform: { os: 'linux', architecture: 'amd64' } },
      { tag: 'arm64', platform: { os: 'linux', architecture: 'arm64' } },
    ],
  });
  await pushLayout(built.ref, `${src.host}/${REPO}:v1`, { all: true });
  index = { mediaType: MediaTypes.ociIndex, digest: built.digest, size: built.size };
  arm64 = { mediaType: MediaTypes.ociManifest, digest: arm.digest, size: arm.size };

  await putBlob(src, REPO, EMPTY, MediaTypes.ociEmpty);
  const artifact = async (artifactType: string, subject: Desc, payload: string, annotations: Record<string, string>): Promise<Desc & { raw: Buffer }> => {
    const layer = await putBlob(src, REPO, Buffer.from(payload), `${artifactType}+json`);
    const body = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, artifactType, config: EMPTY_DESC, layers: [layer], subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size }, annotations };
    return putManifest(src, REPO, sha256Digest(Buffer.from(JSON.stringify(body))), body, MediaTypes.ociManifest);
  };
  /** The referrers tag schema, as a client keeps it on a registry without the referrers API. */
  const referrersIndex = (subject: Desc, referrers: Desc[]) => putManifest(src, REPO, tagOf(subject.digest), { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: referrers }, MediaTypes.ociIndex);

  const sbomAnnotations = { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' };
  sbom = await artifact('application/vnd.example.sbom.v1', index, '{"packages":[]}', sbomAnnotations);
  sbomSignature = await artifact('application/vnd.example.signature.v1', sbom, '{"sig":"abc"}', { 'org.example.signer': 'ci' });
  armAttestation = await artifact('application/vnd.example.attestation.v1', arm64, '{"predicate":{}}', { 'org.example.kind': 'provenance' });
  await referrersIndex(index, [referrerDescriptor(sbom, 'application/vnd.example.sbom.v1', sbomAnnotations)]);
  await referrersIndex(sbom, [referrerDescriptor(sbomSignature, 'application/vnd.example.signature.v1', { 'org.example.signer': 'ci' })]);
  await referrersIndex(arm64, [referrerDescriptor(armAttestation, 'application/vnd.example.attestation.v1', { 'org.example.kind': 'provenance' })]);

  // cosign: a "simple signing" payload as the one layer, the signature in its annotations.
  const cosign = async (subject: Desc, suffix: 'sig' | 'att', layerType: string): Promise<Desc & { raw: Buffer }> => {
    const payload = Buffer.from(JSON.stringify({ critical: { identity: { 'docker-reference': `${src.host}/${REPO}` }, image: { 'docker-manifest-digest': subject.digest }, type: 'cosign container image signature' }, optional: null }));
    const layer = await putBlob(src, REPO, payload, layerType);
    const config = await putBlob(src, REPO, Buffer.from(JSON.stringify({ architecture: '', os: '', config: {}, rootfs: { type: 'layers', diff_ids: [layer.digest] } })), MediaTypes.ociConfig);
    const body = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers: [{ ...layer, annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQDexample' } }] };
    return putManifest(src, REPO, `${tagOf(subject.digest)}.${suffix}`, body, MediaTypes.ociManifest);
  };
  cosignSig = await cosign(index, 'sig', 'application/vnd.dev.cosign.simplesigning.v1+json');
  cosignAtt = await cosign(arm64, 'att', 'application/vnd.dsse.envelope.v1+json');
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop()]);
});

async function fallbackIndex(repo: string, subject: string): Promise<{ mediaType: string; manifests: Desc[] }> {
  const res = await fetch(`${dst.url}/v2/${repo}/manifests/${tagOf(subject)}`, { headers: { accept: MediaTypes.ociIndex } });
  assert.equal(res.status, 200, `${tagOf(subject)} at the target`);
  return (await res.json()) as { mediaType: string; manifests: Desc[] };
}

describe('referrers', () => {
  test('without --referrers nothing but the image is copied', async () => {
    await copy({ source: `${src.host}/${REPO}:v1`, target: `${dst.host}/plain/img:v1` });
    for (const m of [sbom, sbomSignature, armAttestation, cosignSig, cosignAtt]) assert.equal((await headManifest(dst, 'plain/img', m.digest)).status, 404);
    for (const tag of [tagOf(index.digest), `${tagOf(index.digest)}.sig`, `${tagOf(arm64.digest)}.att`]) assert.equal((await headManifest(dst, 'plain/img', tag)).status, 404);
  });

  test('--referrers copies artifacts with a subject (recursively) and cosign tags, verbatim', async () => {
    const result = await copy({ source: `${src.host}/${REPO}:v1`, target: `${dst.host}/with/img:v1`, referrers: true });
    assert.equal(result.digest, index.digest);
    assert.equal(result.referrers, 5);

    // Every referrer, byte for byte, with its blobs.
    for (const m of [sbom, sbomSignature, armAttestation, cosignSig, cosignAtt]) {
      const raw = await inspectRaw(`${dst.host}/with/img@${m.digest}`);
      assert.ok(raw.equals(m.raw), `${m.digest} is the source's bytes`);
      const body = JSON.parse(raw.toString('utf8')) as { config: Desc; layers: Desc[] };
      for (const b of [body.config, ...body.layers]) assert.equal(await headBlob(dst, 'with/img', b.digest), 200);
    }

    // The target's referrers tag schema lists each artifact under its subject.
    assert.deepEqual((await fallbackIndex('with/img', index.digest)).manifests, [referrerDescriptor(sbom, 'application/vnd.example.sbom.v1', { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' })]);
    assert.deepEqual((await fallbackIndex('with/img', sbom.digest)).manifests, [referrerDescriptor(sbomSignature, 'application/vnd.example.signature.v1', { 'org.example.signer': 'ci' })]);
    assert.deepEqual((await fallbackIndex('with/img', arm64.digest)).manifests, [referrerDescriptor(armAttestation, 'application/vnd.example.attestation.v1', { 'org.example.kind': 'provenance' })]);
    assert.equal((await fallbackIndex('with/img', index.digest)).mediaType, MediaTypes.ociIndex);

    // cosign tags: same names, same digests.
    assert.equal((await headManifest(dst, 'with/img', `${tagOf(index.digest)}.sig`)).digest, cosignSig.digest);
    assert.equal((await headManifest(dst, 'with/img', `${tagOf(arm64.digest)}.att`)).digest, cosignAtt.digest);
    assert.ok((await inspectRaw(`${dst.host}/with/img:${tagOf(index.digest)}.sig`)).equals(cosignSig.raw));
    assert.ok((await inspectRaw(`${dst.host}/with/img:v1`)).equals(await inspectRaw(`${src.host}/${REPO}:v1`)));
  });

  test('the dry run (plan --referrers) lists every referrer a copy would bring, writes nothing, and sees what is there', async () => {
    const t = await startProxy(dst.url);
    const registries = new RegistryPool();
    try {
      const before = await planImage({ source: `${src.host}/${REPO}:v1`, target: `${t.host}/planned/img:v1`, referrers: true }, { registries });
      const listed = before.referrers.map((r) => r.tag ?? r.digest).sort();
      assert.deepEqual(listed, [sbom.digest, sbomSignature.digest, armAttestation.digest, `${tagOf(index.digest)}.sig`, `${tagOf(arm64.digest)}.att`].sort());
      assert.ok(before.referrers.every((r) => !r.present));
      assert.equal(before.referrers.find((r) => r.digest === sbomSignature.digest)?.subject, sbom.digest, 'a referrer of a referrer names its subject');
      assert.equal(before.referrers.find((r) => r.tag === `${tagOf(arm64.digest)}.att`)?.digest, cosignAtt.digest);
      assert.deepEqual(t.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD'), [], 'a dry run writes nothing');
      await copyImage({ source: `${src.host}/${REPO}:v1`, target: `${dst.host}/planned/img:v1`, referrers: true }, { registries });
      const after = await planImage({ source: `${src.host}/${REPO}:v1`, target: `${dst.host}/planned/img:v1`, referrers: true }, { registries });
      assert.equal(after.referrers.length, 5);
      assert.ok(after.referrers.every((r) => r.present), 'after the copy, every referrer is there');
      const without = await planImage({ source: `${src.host}/${REPO}:v1`, target: `${dst.host}/planned/img:v1` }, { registries });
      assert.deepEqual(without.referrers, []);
    } finally {
      await registries.close();
      await t.stop();
    }
  });

  test('a re-run with --referrers writes nothing', async () => {
    await copy({ source: `${src.host}/${REPO}:v1`, target: `${dst.host}/again/img:v1`, referrers: true });
    const t = await startProxy(dst.url);
    try {
      const result = await copy({ source: `${src.host}/${REPO}:v1`, target: `${t.host}/again/img:v1`, referrers: true });
      assert.equal(result.digest, index.digest);
      assert.deepEqual(t.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD').map((r) => `${r.method} ${r.path}`), []);
    } finally {
      await t.stop();
    }
  });

  test('rewritten manifests: their source referrers do not name them, so they are not copied, with a note', async () => {
    const events: string[] = [];
    const result = await copy({ source: `${src.host}/${REPO}:v1`, target: `${dst.host}/rewritten/img:v1`, referrers: true, annotations: { k: 'v' } }, (e) => {
      if (e.type === 'note') events.push(e.message);
    });
    assert.notEqual(result.digest, index.digest);
    assert.equal(result.referrers, 0);
    assert.equal(result.notes.filter((n) => /^referrers of sha256:[0-9a-f]{64} not copied: the manifest was rewritten/.test(n)).length, 3);
    assert.deepEqual(events, result.notes);
    for (const m of [sbom, cosignSig]) assert.equal((await headManifest(dst, 'rewritten/img', m.digest)).status, 404);
  });

  test('with a platform filter, referrers of the kept child and of the rewritten index: only the child keeps its referrers', async () => {
    const result = await copy({ source: `${src.host}/${REPO}:v1`, target: `${dst.host}/filtered/img:v1`, referrers: true, platforms: ['linux/arm64'] });
    assert.equal(result.referrers, 2);
    assert.deepEqual(result.notes.filter((n) => n.startsWith('referrers of ')), [`referrers of ${result.digest} not copied: the manifest was rewritten, so its source referrers do not name it`]);
    assert.equal((await headManifest(dst, 'filtered/img', armAttestation.digest)).status, 200);
    assert.equal((await headManifest(dst, 'filtered/img', `${tagOf(arm64.digest)}.att`)).digest, cosignAtt.digest);
    assert.equal((await headManifest(dst, 'filtered/img', sbom.digest)).status, 404);
    assert.equal((await headManifest(dst, 'filtered/img', `${tagOf(index.digest)}.sig`)).status, 404);
  });
});
