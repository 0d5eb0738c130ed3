// Manifests and registry answers: too large, lying about their digest, size or media type, not
// JSON, nested past reason; blobs whose descriptors lie or whose bodies never end; error bodies
// that are not JSON. Content a real registry stores is pushed to one; the rest is scripted.
import { asManifest, endless, image, index, json, manifest, MediaTypes, sha256, stallAfter, type CopyCase, type Manifest } from './kit.js';

const M = '/v2/src/app/manifests';
const B = '/v2/src/app/blobs';
const MiB = 1024 * 1024;

/** A syntactically fine OCI manifest padded to `size` bytes with an annotation. */
function padded(size: number): Buffer {
  const base = image({ seed: 'big' }).json;
  const skeleton = JSON.stringify({ ...base, annotations: { pad: '' } });
  return Buffer.from(JSON.stringify({ ...base, annotations: { pad: 'x'.repeat(size - skeleton.length) } }));
}

/** JSON nested `depth` levels deep inside an otherwise valid manifest's unknown field. */
function deeplyNested(depth: number): Manifest {
  const base = image({ seed: 'deep' });
  const text = JSON.stringify({ ...base.json, nested: 0 }).replace('"nested":0', `"nested":${'['.repeat(depth)}${']'.repeat(depth)}`);
  return manifest(text, MediaTypes.ociManifest, base.blobs);
}

/** Indexes nesting indexes `levels` deep over one image. */
function nestedIndexes(levels: number): Manifest {
  let m = image({ seed: 'nest' });
  for (let i = 0; i < levels; i++) m = index([m]);
  return m;
}

const honest = image({ seed: 'honest' });
const other = image({ seed: 'other' });
const layerOf = (m: Manifest) => m.blobs[1]!;

const cases: CopyCase[] = [
  // --- size ------------------------------------------------------------------------------
  {
    kind: 'registry',
    name: 'a manifest over 4 MiB, declared by Content-Length',
    routes: () => ({ [`${M}/v1`]: asManifest(padded(5 * MiB)) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /manifest src\/app@v1 is 5242880 bytes, over the 4194304-byte limit/ },
  },
  {
    kind: 'registry',
    name: 'a manifest over 4 MiB, chunked without a length',
    routes: () => ({
      [`GET ${M}/v1`]: (_req, res) => {
        res.writeHead(200, { 'content-type': MediaTypes.ociManifest });
        const body = padded(5 * MiB);
        res.write(body.subarray(0, 3 * MiB));
        res.end(body.subarray(3 * MiB));
      },
    }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /is at least \d+ bytes, over the 4194304-byte limit/ },
  },
  {
    kind: 'registry',
    name: 'a manifest body that never ends',
    routes: () => ({ [`GET ${M}/v1`]: endless(200, Buffer.alloc(64 * 1024, 0x20), { 'content-type': MediaTypes.ociManifest }) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /at least \d+ bytes, over the 4194304-byte limit/ },
    withinMs: 10_000,
  },
  // --- digest, size and media type against descriptors and headers -----------------------
  {
    kind: 'registry',
    name: 'Docker-Content-Digest names other content',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(honest, undefined, { 'docker-content-digest': other.digest }) }),
    content: () => ({ root: honest }),
    expect: { code: 'ERR_DIGEST_MISMATCH', message: new RegExp(`content has digest ${honest.digest}, expected ${other.digest}`) },
  },
  {
    kind: 'registry',
    name: 'a manifest by digest answered with other bytes',
    content: () => ({ root: honest }),
    at: `@${honest.digest}`,
    routes: () => ({ [`GET ${M}/${honest.digest}`]: asManifest(other) }),
    expect: { code: 'ERR_DIGEST_MISMATCH', message: new RegExp(`content has digest ${other.digest}, expected ${honest.digest}`) },
  },
  {
    kind: 'registry',
    name: 'an index entry bigger than its manifest',
    content: () => ({ root: index([honest], (j) => void (j.manifests[0]!.size = honest.size + 7)) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: new RegExp(`index entry ${honest.digest} says ${honest.size + 7} bytes, the manifest is ${honest.size}`) },
  },
  {
    kind: 'registry',
    name: 'an index entry smaller than its manifest',
    content: () => ({ root: index([honest], (j) => void (j.manifests[0]!.size = 10)) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: new RegExp(`index entry ${honest.digest} says 10 bytes, the manifest is ${honest.size}`) },
  },
  {
    kind: 'registry',
    name: 'an index entry with another media type than its manifest',
    content: () => ({ root: index([honest], (j) => void (j.manifests[0]!.mediaType = MediaTypes.dockerManifest)) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /says mediaType application\/vnd\.docker\.distribution\.manifest\.v2\+json, the manifest is application\/vnd\.oci\.image\.manifest\.v1\+json/ },
  },
  {
    kind: 'registry',
    name: 'a body mediaType of index over an image structure',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(Buffer.from(JSON.stringify({ ...honest.json, mediaType: MediaTypes.ociIndex }))) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /index has no "manifests" list/ },
  },
  {
    kind: 'registry',
    name: 'a Content-Type of index over an image without mediaType',
    routes: () => {
      const { mediaType: _drop, ...rest } = honest.json;
      return { [`GET ${M}/v1`]: asManifest(Buffer.from(JSON.stringify(rest)), MediaTypes.ociIndex) };
    },
    expect: { code: 'ERR_INVALID_MANIFEST', message: /index has no "manifests" list/ },
  },
  {
    kind: 'registry',
    name: 'a manifest served as text/html with no mediaType field',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(Buffer.from('{"schemaVersion":2}'), 'text/html') }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /cannot tell the manifest's media type \(no mediaType field, Content-Type "text\/html"\)/ },
  },
  // --- not JSON, or JSON past reason ------------------------------------------------------
  {
    kind: 'registry',
    name: 'a manifest that is not JSON',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(Buffer.from('<html><body>Welcome to nginx!</body></html>')) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /manifest is not valid JSON/ },
  },
  {
    kind: 'registry',
    name: 'an empty manifest body',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(Buffer.alloc(0)) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /manifest is not valid JSON/ },
  },
  {
    kind: 'registry',
    name: 'a manifest that is a JSON array',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(Buffer.from('[{"schemaVersion":2}]')) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /manifest is not a JSON object/ },
  },
  {
    kind: 'registry',
    name: 'a manifest whose JSON nests 2 million levels deep',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(Buffer.from(`{"schemaVersion":2,"nested":${'['.repeat(2_000_000)}${']'.repeat(2_000_000)}}`)) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /nested more than \d+ levels deep/ },
  },
  {
    kind: 'registry',
    name: 'deeply nested JSON in an unknown field, copied with annotations',
    content: () => ({ root: deeplyNested(5_000) }),
    request: { annotations: { 'org.example.mirrored': 'true' } },
    expect: { code: 'ERR_INVALID_MANIFEST', message: /nested more than \d+ levels deep/ },
  },
  {
    kind: 'registry',
    name: 'a descriptor whose digest is not a digest',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(Buffer.from(JSON.stringify({ ...honest.json, layers: [{ mediaType: MediaTypes.ociLayerTar, digest: 'sha256:../../etc/passwd', size: 1 }] }))) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /layers\[0\]\.digest: invalid digest "sha256:\.\.\/\.\.\/etc\/passwd"/ },
  },
  {
    kind: 'registry',
    name: 'a descriptor with a negative size',
    routes: () => ({ [`GET ${M}/v1`]: asManifest(Buffer.from(JSON.stringify({ ...honest.json, layers: [{ ...(honest.json.layers as object[])[0], size: -1 }] }))) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /layers\[0\]\.size must be a non-negative integer/ },
  },
  // --- an index referencing itself, indexes nested too deep ------------------------------
  {
    kind: 'registry',
    name: 'an index that lists itself (its own bytes under the entry digest)',
    routes: () => {
      // A true cycle cannot hash; what a registry can do is answer the entry's digest with the index itself.
      const selfish = index([honest]);
      return { [`GET ${M}/v1`]: asManifest(selfish), [`GET ${M}/${honest.digest}`]: asManifest(selfish) };
    },
    expect: { code: 'ERR_DIGEST_MISMATCH', message: new RegExp(`content has digest sha256:[0-9a-f]{64}, expected ${honest.digest}`) },
  },
  {
    kind: 'registry',
    name: 'indexes nested five deep',
    content: () => ({ root: nestedIndexes(5) }),
    expect: { code: 'ERR_INVALID_MANIFEST', message: /nests indexes more than 4 deep/ },
  },
  // --- blobs whose descriptors lie -------------------------------------------------------
  {
    kind: 'registry',
    name: 'a layer descriptor bigger than the blob',
    content: () => ({ root: image({ seed: 'layer-big', edit: (j) => void (j.layers[0]!.size = (j.layers[0]!.size as number) + 100) }) }),
    expect: { code: 'ERR_SIZE_MISMATCH', message: /content is \d+ bytes, expected \d+/ },
    siblingsMayLand: true,
  },
  {
    kind: 'registry',
    name: 'a layer descriptor smaller than the blob',
    content: () => ({ root: image({ seed: 'layer-small', edit: (j) => void (j.layers[0]!.size = (j.layers[0]!.size as number) - 100) }) }),
    expect: { code: 'ERR_SIZE_MISMATCH', message: /content is at least \d+ bytes, expected \d+/ },
    siblingsMayLand: true,
  },
  {
    kind: 'registry',
    name: 'a config descriptor smaller than the blob',
    content: () => ({ root: image({ seed: 'config-small', edit: (j) => void (j.config.size = 3) }) }),
    expect: { code: 'ERR_SIZE_MISMATCH', message: /GET blob: content is at least \d+ bytes, expected 3/ },
    siblingsMayLand: true,
  },
  {
    kind: 'registry',
    name: 'a blob answered with other bytes of the same size',
    content: () => ({ root: honest }),
    routes: () => ({ [`GET ${B}/${layerOf(honest).digest}`]: { status: 200, body: Buffer.alloc(layerOf(honest).size, 0x41) } }),
    expect: { code: 'ERR_DIGEST_MISMATCH', message: new RegExp(`content has digest ${sha256(Buffer.alloc(layerOf(honest).size, 0x41))}, expected ${layerOf(honest).digest}`) },
    siblingsMayLand: true,
  },
  // --- bodies that never end -------------------------------------------------------------
  {
    kind: 'registry',
    name: 'a blob GET that stalls mid-body and never ends',
    content: () => ({ root: honest }),
    routes: () => ({ [`GET ${B}/${layerOf(honest).digest}`]: stallAfter(layerOf(honest).bytes.subarray(0, 100), { 'content-type': 'application/octet-stream', 'content-length': String(layerOf(honest).size) }) }),
    // Every retry layer (source resumes, upload resumes, whole-blob attempts) multiplies the idle timeout: keep them at one each.
    client: { timeouts: { connectMs: 1_000, headersMs: 2_000, bodyIdleMs: 200 }, maxBlobResumes: 0, maxUploadResumes: 0 },
    expect: { code: 'ERR_NETWORK', message: new RegExp(`GET blob ${layerOf(honest).digest}: the download failed after 0 resumes: Body Timeout Error`) },
    withinMs: 8_000,
    siblingsMayLand: true,
  },
  {
    kind: 'registry',
    name: 'a blob GET that streams bytes forever',
    content: () => ({ root: honest }),
    routes: () => ({ [`GET ${B}/${layerOf(honest).digest}`]: endless(200, Buffer.alloc(16 * 1024, 0x42), { 'content-type': 'application/octet-stream' }) }),
    expect: { code: 'ERR_SIZE_MISMATCH', message: new RegExp(`content is at least \\d+ bytes, expected ${layerOf(honest).size}`) },
    withinMs: 5_000,
    siblingsMayLand: true,
  },
  {
    kind: 'registry',
    name: 'a manifest GET whose headers never come',
    routes: () => ({ [`GET ${M}/v1`]: () => undefined }),
    client: { timeouts: { connectMs: 1_000, headersMs: 200, bodyIdleMs: 200 }, retry: { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 20 } },
    expect: { code: 'ERR_NETWORK', message: /GET manifest: GET http:\/\/127\.0\.0\.1:\d+\/v2\/src\/app\/manifests\/v1 failed: UND_ERR_HEADERS_TIMEOUT \(after 2 attempts\)/ },
    withinMs: 5_000,
  },
  // --- error bodies that are not JSON ----------------------------------------------------
  {
    kind: 'registry',
    name: 'a 404 with an HTML body',
    routes: () => ({ [`${M}/v1`]: { status: 404, headers: { 'content-type': 'text/html' }, body: '<html><h1>Not Found</h1></html>' } }),
    expect: { code: 'ERR_REGISTRY', message: /GET manifest: GET http:\/\/127\.0\.0\.1:\d+\/v2\/src\/app\/manifests\/v1 answered 404$/ },
  },
  {
    kind: 'registry',
    name: 'a 500 with binary garbage',
    routes: () => ({ [`${M}/v1`]: { status: 500, headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from([0xff, 0xfe, 0x00, 0x1b, 0x5b, 0x33, 0x31, 0x6d]) } }),
    expect: { code: 'ERR_REGISTRY', message: /manifests\/v1 answered 500$/ },
  },
  {
    kind: 'registry',
    name: 'a 503 whose error body never ends',
    routes: () => ({ [`${M}/v1`]: endless(503, Buffer.alloc(64 * 1024, 0x7b), { 'content-type': 'application/json' }) }),
    expect: { code: 'ERR_REGISTRY', message: /manifests\/v1 answered 503 \(after 3 attempts\)$/ },
    withinMs: 10_000,
  },
  {
    kind: 'registry',
    name: 'an error body whose errors are not a list',
    routes: () => ({ [`${M}/v1`]: json(400, { errors: 'MANIFEST_INVALID' }) }),
    expect: { code: 'ERR_REGISTRY', message: /manifests\/v1 answered 400$/ },
  },
  {
    kind: 'registry',
    name: 'an error body with a megabyte of message',
    routes: () => ({ [`${M}/v1`]: json(403, { errors: [{ code: 'DENIED', message: 'x'.repeat(MiB) }] }) }),
    // over the 64 KiB read for error bodies: no codes, the status alone
    expect: { code: 'ERR_REGISTRY', message: /manifests\/v1 answered 403$/ },
  },
  {
    kind: 'registry',
    name: 'a blob 403 with an HTML body',
    content: () => ({ root: honest }),
    routes: () => ({ [`GET ${B}/${layerOf(honest).digest}`]: { status: 403, headers: { 'content-type': 'text/html' }, body: '<html>Access Denied</html>' } }),
    expect: { code: 'ERR_REGISTRY', message: new RegExp(`GET blob: GET http://127\\.0\\.0\\.1:\\d+/v2/src/app/blobs/${layerOf(honest).digest} answered 403$`) },
    siblingsMayLand: true,
  },
  {
    kind: 'registry',
    name: 'a blob that is missing at the source (non-JSON 404)',
    content: () => ({ root: honest }),
    routes: () => ({ [`${B}/${layerOf(honest).digest}`]: { status: 404, headers: { 'content-type': 'text/plain' }, body: 'nope' } }),
    expect: { code: 'ERR_REGISTRY', message: new RegExp(`GET blob: the manifest references blob ${layerOf(honest).digest} \\(application/vnd\\.oci\\.image\\.layer\\.v1\\.tar, ${layerOf(honest).size} bytes\\), which the source repository src/app does not have \\(GET blob: GET http://127\\.0\\.0\\.1:\\d+/v2/src/app/blobs/${layerOf(honest).digest} answered 404\\)`) },
    siblingsMayLand: true,
  },
];

export default cases;
