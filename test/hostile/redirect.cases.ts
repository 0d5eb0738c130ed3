// Redirects (which registries use to send blobs to storage) that point somewhere ocirelay must
// not go: metadata endpoints (refused everywhere), private addresses (refused under the rules'
// destination policy, which serve, sync and the pipeline use), other schemes, loops.
import assert from 'node:assert/strict';
import { image, redirect, type CopyCase, type Scripted } from './kit.js';

const honest = image({ seed: 'redirect' });
const LAYER = honest.blobs[1]!.digest;
const blobPath = `GET /v2/src/app/blobs/${LAYER}`;
const manifestPath = 'GET /v2/src/app/manifests/v1';

/** A blob GET redirected to `location`; `policy` says whose rules apply. */
function blobTo(name: string, location: (s: Scripted) => string, policy: 'cli' | 'rules', message: RegExp, code: CopyCase['expect']['code'] = 'ERR_FORBIDDEN'): CopyCase {
  return {
    kind: 'redirect',
    name,
    content: () => ({ root: honest }),
    routes: (s) => ({ [blobPath]: redirect(location(s)) }),
    policy,
    // A redirect the guard let through would try to connect: fail fast instead of waiting.
    client: { timeouts: { connectMs: 300, headersMs: 1_000, bodyIdleMs: 1_000 } },
    expect: { code, message },
    siblingsMayLand: true,
    check: (s) => assert.equal(s.canary.requests.length, 0, 'the redirect target was never contacted'),
  };
}

const cases: CopyCase[] = [
  {
    kind: 'redirect',
    name: 'a manifest redirected to the cloud metadata address',
    routes: () => ({ [manifestPath]: redirect('http://169.254.169.254/latest/meta-data/iam/security-credentials/') }),
    expect: { code: 'ERR_FORBIDDEN', message: /refused to contact http:\/\/169\.254\.169\.254\/latest\/meta-data\/iam\/security-credentials\/ \(redirect\): a link-local or metadata address/ },
  },
  blobTo('a blob redirected to metadata.google.internal', () => 'http://metadata.google.internal/computeMetadata/v1/', 'cli', /refused to contact http:\/\/metadata\.google\.internal\/computeMetadata\/v1\/ \(redirect\): a link-local or metadata address/),
  blobTo('a blob redirected to a link-local IPv6 address', () => 'http://[fe80::1]/x', 'cli', /refused to contact http:\/\/\[fe80::1\]\/x \(redirect\): a link-local or metadata address/),
  blobTo('a blob redirected to the metadata address written as one decimal number', () => 'http://2852039166/latest/meta-data/', 'cli', /refused to contact http:\/\/169\.254\.169\.254\/latest\/meta-data\/ \(redirect\)/),
  blobTo('a blob redirected to a private address (rules)', () => 'http://10.0.0.5/bucket/blob', 'rules', /refused to contact http:\/\/10\.0\.0\.5\/bucket\/blob \(redirect\): 10\.0\.0\.5 is a private address and the host is not named by any rule/),
  blobTo('a blob redirected to a home-router address (rules)', () => 'http://192.168.1.1/', 'rules', /192\.168\.1\.1 is a private address/),
  blobTo('a blob redirected to a carrier-grade NAT address (rules)', () => 'http://100.64.0.1/', 'rules', /100\.64\.0\.1 is a private address/),
  blobTo('a blob redirected to a unique-local IPv6 address (rules)', () => 'http://[fd12:3456::1]/', 'rules', /fd12:3456::1 is a private address/),
  blobTo('a blob redirected to a name that resolves to loopback (rules)', (s) => `http://localhost:${s.canary.port}/steal`, 'rules', /refused to contact http:\/\/localhost:\d+\/steal \(redirect\): (127\.0\.0\.1|::1) is a private address/),
  blobTo('a blob redirected to a file URL', () => 'file:///etc/passwd', 'cli', /GET blob: redirect to a non-HTTP URL refused/, 'ERR_REGISTRY'),
  blobTo('a blob redirected without a Location', () => '', 'cli', /redirected without a Location/, 'ERR_REGISTRY'),
  {
    kind: 'redirect',
    name: 'a manifest redirected to itself forever',
    routes: () => ({ [manifestPath]: redirect('/v2/src/app/manifests/v1') }),
    expect: { code: 'ERR_REGISTRY', message: /GET manifest: more than 5 redirects from http:\/\/127\.0\.0\.1:\d+\/v2\/src\/app\/manifests\/v1/ },
  },
];

export default cases;
