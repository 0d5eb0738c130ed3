// Pure parts of the distribution client: challenge parsing, retry policy, scopes, Link headers,
// URL redaction, digest verification of streams, manifest media types and digests.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { digestOf, VerifyingStream } from '../lib/digest.js';
import { DigestMismatchError, SizeMismatchError, redactUrl } from '../lib/errors.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import { Authenticator, mergeScopes } from '../lib/oci/auth.js';
import { anonymous } from '../lib/oci/credentials.js';
import { challengeScopes, parseWwwAuthenticate, type Challenge } from '../lib/oci/challenge.js';
import { detectManifestMediaType, manifestDigest, nextLink, schema1Payload, StreamSlicer } from '../lib/oci/client.js';
import { parseUserPassword } from '../lib/oci/credentials.js';
import { backoffDelay, DEFAULT_RETRY, parseRetryAfter, resolveRetry } from '../lib/oci/retry.js';
import { isLoopbackHost, registryOrigin } from '../lib/oci/transport.js';

describe('WWW-Authenticate parsing', () => {
  const cases: Array<{ name: string; header: string | string[] | undefined; want: Challenge[] }> = [
    { name: 'absent header', header: undefined, want: [] },
    { name: 'empty header', header: '', want: [] },
    { name: 'Basic with realm', header: 'Basic realm="test-registry"', want: [{ scheme: 'basic', params: { realm: 'test-registry' } }] },
    {
      name: 'Bearer with realm, service and several scopes',
      header: 'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push repository:c:pull"',
      want: [{ scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push repository:c:pull' } }],
    },
    {
      name: 'scheme and parameter names are case-insensitive, values are not',
      header: 'BEARER Realm="https://A/Token", SERVICE="Svc"',
      want: [{ scheme: 'bearer', params: { realm: 'https://A/Token', service: 'Svc' } }],
    },
    {
      name: 'unquoted token values and spaces around commas and =',
      header: 'Bearer realm = test-realm ,  service=svc,error=invalid_token',
      want: [{ scheme: 'bearer', params: { realm: 'test-realm', service: 'svc', error: 'invalid_token' } }],
    },
    {
      name: 'commas inside a quoted value',
      header: 'Bearer realm="https://a/token?x=1,2",scope="repository:a:pull,push",service="s"',
      want: [{ scheme: 'bearer', params: { realm: 'https://a/token?x=1,2', scope: 'repository:a:pull,push', service: 's' } }],
    },
    {
      name: 'backslash escapes inside a quoted value',
      header: 'Basic realm="say \\"hi\\" \\\\ back\\slash"',
      want: [{ scheme: 'basic', params: { realm: 'say "hi" \\ backslash' } }],
    },
    {
      name: 'several challenges in one header',
      header: 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
      want: [
        { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps"' } },
        { scheme: 'basic', params: { realm: 'simple' } },
      ],
    },
    {
      name: 'Basic then Bearer in one header',
      header: 'Basic realm="r", Bearer realm="https://t/token",service="s"',
      want: [
        { scheme: 'basic', params: { realm: 'r' } },
        { scheme: 'bearer', params: { realm: 'https://t/token', service: 's' } },
      ],
    },
    { name: 'token68 with padding', header: 'Negotiate abc==', want: [{ scheme: 'negotiate', params: {}, token68: 'abc==' }] },
    { name: 'token68 without padding', header: 'Negotiate YIIGhgYGKwYB', want: [{ scheme: 'negotiate', params: {}, token68: 'YIIGhgYGKwYB' }] },
    {
      name: 'token68 with / and + followed by another challenge',
      header: 'Negotiate a/b+c.d~e-f_g==, Basic realm="x"',
      want: [
        { scheme: 'negotiate', params: {}, token68: 'a/b+c.d~e-f_g==' },
        { scheme: 'basic', params: { realm: 'x' } },
      ],
    },
    {
      name: 'a scheme without parameters followed by another challenge',
      header: 'Negotiate, Basic realm=x',
      want: [
        { scheme: 'negotiate', params: {} },
        { scheme: 'basic', params: { realm: 'x' } },
      ],
    },
    {
      name: 'several header values',
      header: ['Basic realm="a"', 'Bearer realm="https://b/token"'],
      want: [
        { scheme: 'basic', params: { realm: 'a' } },
        { scheme: 'bearer', params: { realm: 'https://b/token' } },
      ],
    },
    { name: 'unterminated quoted value takes the rest', header: 'Basic realm="open', want: [{ scheme: 'basic', params: { realm: 'open' } }] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(parseWwwAuthenticate(c.header), c.want);
    });
  }

  test('challengeScopes splits the scope parameter on spaces', () => {
    const [bearer] = parseWwwAuthenticate('Bearer realm="r",scope="repository:a:pull  repository:b:pull,push"');
    assert.ok(bearer);
    assert.deepEqual(challengeScopes(bearer), ['repository:a:pull', 'repository:b:pull,push']);
    const [none] = parseWwwAuthenticate('Bearer realm="r"');
    assert.ok(none);
    assert.deepEqual(challengeScopes(none), []);
  });
});

describe('Retry-After parsing', () => {
  const now = Date.parse('2024-05-01T12:00:00Z');
  const cases: Array<{ value: string | string[] | undefined; want: number | undefined }> = [
    { value: undefined, want: undefined },
    { value: '0', want: 0 },
    { value: '5', want: 5000 },
    { value: ' 7 ', want: 7000 },
    { value: ['3', '9'], want: 3000 },
    { value: 'Wed, 01 May 2024 12:00:10 GMT', want: 10_000 },
    { value: 'Wednesday, 01-May-24 12:00:04 GMT', want: 4000 },
    { value: 'Wed May  1 12:00:02 2024', want: 2000 },
    { value: 'Wed, 01 May 2024 11:59:00 GMT', want: 0 }, // in the past: no wait
    { value: '-1', want: undefined },
    { value: '1.5', want: undefined },
    { value: 'soon', want: undefined },
    { value: '', want: undefined },
  ];
  for (const c of cases) {
    test(`${JSON.stringify(c.value)} -> ${c.want}`, () => {
      assert.equal(parseRetryAfter(c.value, now), c.want);
    });
  }
});

describe('backoff', () => {
  const policy = (random: number, overrides: Parameters<typeof resolveRetry>[0] = {}): Required<Parameters<typeof resolveRetry>[0] & object> =>
    resolveRetry({ ...overrides, random: () => random });

  test('equal jitter: between half and all of the exponential step', () => {
    for (const [attempt, step] of [[1, 250], [2, 500], [3, 1000], [4, 2000], [5, 4000], [6, 8000], [7, 8000], [20, 8000]] as const) {
      assert.equal(backoffDelay(attempt, policy(0)), step / 2, `attempt ${attempt}, random 0`);
      assert.equal(backoffDelay(attempt, policy(0.5)), Math.round(step * 0.75), `attempt ${attempt}, random 0.5`);
      const top = backoffDelay(attempt, policy(0.999999));
      assert.ok(top <= step && top >= step - 1, `attempt ${attempt}: ${top} within ${step}`);
    }
  });

  test('custom base and ceiling', () => {
    assert.equal(backoffDelay(1, policy(0, { baseDelayMs: 10, maxDelayMs: 35 })), 5);
    assert.equal(backoffDelay(3, policy(1, { baseDelayMs: 10, maxDelayMs: 35 })), 35);
  });

  test('Retry-After is honoured instead of backoff, capped by maxRetryAfterMs', () => {
    assert.equal(backoffDelay(1, policy(0.5), 3000), 3000);
    assert.equal(backoffDelay(4, policy(0.5), 0), 0);
    assert.equal(backoffDelay(1, policy(0.5), 3_600_000), DEFAULT_RETRY.maxRetryAfterMs);
    assert.equal(backoffDelay(1, policy(0.5, { maxRetryAfterMs: 100 }), 5000), 100);
  });

  test('undefined options do not override the defaults', () => {
    const resolved = resolveRetry({ maxAttempts: undefined, baseDelayMs: 7 });
    assert.equal(resolved.maxAttempts, DEFAULT_RETRY.maxAttempts);
    assert.equal(resolved.baseDelayMs, 7);
  });
});

describe('Bearer token lifetime (token.md: expires_in, issued_at, 60 s by default)', () => {
  const T0 = Date.parse('2026-12-04T12:00:00Z');
  const iso = (ms: number): string => new Date(ms).toISOString();
  // When the cached token stops being used: the end of its life minus a margin of a fifth of the
  // lifetime, at most 30 s (refreshed ahead of expiry, never used in its last seconds).
  const cases: Array<{ why: string; body: Record<string, unknown>; reusedUntil: number }> = [
    { why: 'no expires_in: 60 s, refreshed 12 s early', body: { token: 't' }, reusedUntil: 48_000 },
    { why: 'expires_in 300: refreshed 30 s early', body: { token: 't', expires_in: 300 }, reusedUntil: 270_000 },
    { why: 'expires_in 10: refreshed 2 s early', body: { access_token: 't', expires_in: 10 }, reusedUntil: 8_000 },
    { why: 'issued_at 100 s ago: the lifetime counts from then', body: { token: 't', expires_in: 300, issued_at: iso(T0 - 100_000) }, reusedUntil: 170_000 },
    { why: 'issued_at in the future (clock skew): our own clock counts', body: { token: 't', expires_in: 300, issued_at: iso(T0 + 90_000) }, reusedUntil: 270_000 },
    { why: 'issued_at an hour off: not trusted, our own clock counts', body: { token: 't', expires_in: 300, issued_at: iso(T0 - 3_600_000) }, reusedUntil: 270_000 },
    { why: 'issued_at unparseable: ignored', body: { token: 't', expires_in: 300, issued_at: 'yesterday' }, reusedUntil: 270_000 },
  ];
  for (const c of cases) {
    test(c.why, async () => {
      let now = T0;
      let fetches = 0;
      const auth = new Authenticator({
        registry: 'registry.example',
        credentials: anonymous,
        now: () => now,
        fetchToken: async () => {
          fetches++;
          return { status: 200, body: JSON.stringify(c.body) };
        },
      });
      const scopes = ['repository:a/b:pull'] as const;
      await auth.challenge('Bearer realm="https://registry.example/token",service="registry.example"', scopes, { url: new URL('https://registry.example/v2/'), operation: 'test' });
      assert.equal(fetches, 1);
      now = T0 + c.reusedUntil - 1;
      await auth.authorization(scopes);
      assert.equal(fetches, 1, 'still fresh just before the margin');
      now = T0 + c.reusedUntil;
      await auth.authorization(scopes);
      assert.equal(fetches, 2, 'refreshed at the margin');
    });
  }
});

describe('mergeScopes', () => {
  const cases: Array<{ input: string[]; want: string[] }> = [
    { input: [], want: [] },
    { input: ['repository:a:pull'], want: ['repository:a:pull'] },
    { input: ['repository:a:pull', 'repository:a:push'], want: ['repository:a:pull,push'] },
    { input: ['repository:a:pull,push', 'repository:a:pull'], want: ['repository:a:pull,push'] },
    { input: ['repository:dst:pull,push', 'repository:src:pull'], want: ['repository:dst:pull,push', 'repository:src:pull'] },
    { input: ['repository:b:pull', 'repository:a:pull', 'repository:b:delete'], want: ['repository:b:pull,delete', 'repository:a:pull'] },
    // A repository name may carry a port-like colon; the actions are after the last colon.
    { input: ['repository:host:5000/x:pull', 'repository:host:5000/x:push'], want: ['repository:host:5000/x:pull,push'] },
    { input: ['registry:catalog:*'], want: ['registry:catalog:*'] },
    { input: ['nonsense', ':pull', 'repository:a:pull'], want: ['repository:a:pull'] },
  ];
  for (const c of cases) {
    test(`${JSON.stringify(c.input)}`, () => {
      assert.deepEqual(mergeScopes(c.input), c.want);
    });
  }
});

describe('Link header (nextLink)', () => {
  const cases: Array<{ link: string | undefined; want: string | undefined }> = [
    { link: undefined, want: undefined },
    { link: '', want: undefined },
    { link: '</v2/_catalog?last=b&n=2>; rel="next"', want: '/v2/_catalog?last=b&n=2' },
    { link: '</v2/a/tags/list?n=2&last=t2>; rel=next', want: '/v2/a/tags/list?n=2&last=t2' },
    { link: '<https://r.example/v2/_catalog?last=x>;rel="next"', want: 'https://r.example/v2/_catalog?last=x' },
    { link: '</prev>; rel="prev", </next?a=1,2>; rel="next"', want: '/next?a=1,2' },
    { link: '</x>; type="text/html"; rel="next"; title="t"', want: '/x' },
    { link: '</x>; rel="prev next"', want: '/x' },
    { link: '</x>; rel="prev"', want: undefined },
    { link: '</x>; rel="nextpage"', want: undefined },
    { link: '</x>', want: undefined },
  ];
  for (const c of cases) {
    test(`${JSON.stringify(c.link)}`, () => {
      assert.equal(nextLink(c.link), c.want);
    });
  }
});

describe('redactUrl', () => {
  const cases: Array<{ input: string; want: string }> = [
    { input: 'https://r.example/v2/a/manifests/latest', want: 'https://r.example/v2/a/manifests/latest' },
    { input: 'https://user:secret@r.example/v2/', want: 'https://r.example/v2/' },
    {
      input: 'http://127.0.0.1:5000/v2/a/blobs/uploads/uuid?_state=c2VjcmV0c3RhdGU%3D&digest=sha256:abc',
      want: 'http://127.0.0.1:5000/v2/a/blobs/uploads/uuid?_state=REDACTED&digest=sha256%3Aabc',
    },
    {
      input: 'https://bucket.s3.example/blob?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA&n=1',
      want: 'https://bucket.s3.example/blob?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&n=1',
    },
    {
      input: 'https://auth.example/token?service=reg&scope=repository:a:pull&account=bob',
      want: 'https://auth.example/token?service=reg&scope=repository%3Aa%3Apull&account=REDACTED',
    },
    { input: 'https://r.example/v2/a/blobs/uploads/?mount=sha256:1&from=b', want: 'https://r.example/v2/a/blobs/uploads/?mount=sha256%3A1&from=b' },
    { input: 'not a url', want: '<unparseable url>' },
  ];
  for (const c of cases) {
    test(c.input, () => {
      const out = redactUrl(c.input);
      assert.equal(out, c.want);
      assert.ok(!out.includes('secret') && !out.includes('deadbeef') && !out.includes('c2VjcmV0'));
    });
  }
  test('accepts URL objects', () => {
    assert.equal(redactUrl(new URL('http://u:p@h/x?token=t')), 'http://h/x?token=REDACTED');
  });
});

// ---------------------------------------------------------------------------------------------

const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Writes chunks into a VerifyingStream and collects what comes out, the error and whether 'end' fired. */
async function runVerifier(options: { digest: string; size?: number }, chunks: Buffer[]): Promise<{ out: Buffer; error: unknown; ended: boolean }> {
  const verifier = new VerifyingStream(options);
  const out: Buffer[] = [];
  let ended = false;
  verifier.on('data', (c: Buffer) => out.push(c));
  verifier.on('end', () => (ended = true));
  const done = new Promise<unknown>((resolve) => {
    verifier.on('error', resolve);
    verifier.on('end', () => resolve(undefined));
  });
  for (const chunk of chunks) {
    if (verifier.destroyed) break;
    verifier.write(chunk);
  }
  if (!verifier.destroyed) verifier.end();
  const error = await done;
  return { out: Buffer.concat(out), error, ended };
}

describe('VerifyingStream', () => {
  const data = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
  const chunks = [data.subarray(0, 10), data.subarray(10, 20), data.subarray(20)];
  const digest = sha256(data);
  const wrong = sha256(Buffer.from('something else'));

  const cases: Array<{ name: string; options: { digest: string; size?: number }; input: Buffer[]; error?: typeof DigestMismatchError | typeof SizeMismatchError; passed: number }> = [
    { name: 'exact content, size known', options: { digest, size: data.length }, input: chunks, passed: data.length },
    { name: 'exact content, size unknown', options: { digest }, input: chunks, passed: data.length },
    { name: 'empty chunks anywhere, size known', options: { digest, size: data.length }, input: [Buffer.alloc(0), ...chunks, Buffer.alloc(0)], passed: data.length },
    { name: 'empty content', options: { digest: sha256(Buffer.alloc(0)), size: 0 }, input: [], passed: 0 },
    // Short: everything that came passes, but the stream errors instead of ending.
    { name: 'short content, size known', options: { digest, size: data.length }, input: chunks.slice(0, 2), error: SizeMismatchError, passed: 20 },
    // Without a size, a prefix is only a wrong digest: the last chunk is held back.
    { name: 'short content, size unknown', options: { digest }, input: chunks.slice(0, 2), error: DigestMismatchError, passed: 10 },
    // Long: the chunk that overflows is refused.
    { name: 'long content, size known', options: { digest, size: data.length }, input: [...chunks, Buffer.from('!')], error: SizeMismatchError, passed: data.length },
    { name: 'long content, size unknown', options: { digest }, input: [...chunks, Buffer.from('!')], error: DigestMismatchError, passed: data.length },
    { name: 'wrong digest, size known: the completing chunk is refused', options: { digest: wrong, size: data.length }, input: chunks, error: DigestMismatchError, passed: 20 },
    { name: 'wrong digest, size unknown: the last chunk is held back', options: { digest: wrong }, input: chunks, error: DigestMismatchError, passed: 20 },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const { out, error, ended } = await runVerifier(c.options, c.input);
      if (c.error) {
        assert.ok(error instanceof c.error, `expected ${c.error.name}, got ${String(error)}`);
        assert.equal(ended, false, 'no end after a failure');
      } else {
        assert.equal(error, undefined);
        assert.equal(ended, true);
      }
      assert.deepEqual(out, data.subarray(0, c.passed));
    });
  }

  test('digest mismatch names both digests', async () => {
    const { error } = await runVerifier({ digest: wrong, size: data.length }, chunks);
    assert.ok(error instanceof DigestMismatchError);
    assert.equal(error.expected, wrong);
    assert.equal(error.actual, digest);
  });

  test('holds back the last chunk until the end when the size is unknown', async () => {
    const verifier = new VerifyingStream({ digest });
    const seen: Buffer[] = [];
    verifier.on('data', (c: Buffer) => seen.push(c));
    const wrote = (chunk: Buffer): Promise<void> => new Promise((resolve) => verifier.write(chunk, () => resolve()));
    await wrote(chunks[0]!);
    assert.equal(Buffer.concat(seen).length, 0, 'the first chunk is held');
    await wrote(chunks[1]!);
    assert.deepEqual(Buffer.concat(seen), chunks[0]);
    await wrote(chunks[2]!);
    assert.deepEqual(Buffer.concat(seen), data.subarray(0, 20));
    const ended = new Promise((resolve) => verifier.on('end', resolve));
    verifier.end();
    await ended;
    assert.deepEqual(Buffer.concat(seen), data);
    assert.equal(verifier.bytes, data.length);
  });

  test('sha512 digests are verified with sha512', async () => {
    const d512 = `sha512:${createHash('sha512').update(data).digest('hex')}`;
    const { error, out } = await runVerifier({ digest: d512, size: data.length }, chunks);
    assert.equal(error, undefined);
    assert.deepEqual(out, data);
  });

  test('an invalid digest is refused at construction', () => {
    assert.throws(() => new VerifyingStream({ digest: 'sha256:xyz' }), /invalid digest/);
  });

  test('in a pipeline, a mismatch rejects and the sink never finishes', async () => {
    const sink = new PassThrough();
    let finished = false;
    sink.on('finish', () => (finished = true));
    sink.resume();
    await assert.rejects(pipeline(Readable.from(chunks), new VerifyingStream({ digest: wrong, size: data.length }), sink), DigestMismatchError);
    assert.equal(finished, false);
  });
});

describe('StreamSlicer', () => {
  test('cuts a stream into consecutive pieces across chunk boundaries', async () => {
    const data = Buffer.from('abcdefghijklmnopqrstuvwxyz');
    const slicer = new StreamSlicer(Readable.from([data.subarray(0, 3), data.subarray(3, 11), data.subarray(11)]));
    const read = async (r: Readable): Promise<string> => {
      const parts: Buffer[] = [];
      for await (const c of r) parts.push(c as Buffer);
      return Buffer.concat(parts).toString();
    };
    assert.equal(await read(slicer.next(5)), 'abcde');
    assert.equal(await read(slicer.next(10)), 'fghijklmno');
    assert.equal(await read(slicer.next(11)), 'pqrstuvwxyz');
    await slicer.assertEnd({ digest: digestOf(data), size: data.length });
  });

  test('extra bytes after the declared size fail', async () => {
    const slicer = new StreamSlicer(Readable.from([Buffer.from('abcdef')]));
    for await (const _ of slicer.next(4)) void _;
    await assert.rejects(slicer.assertEnd({ digest: digestOf('abcd'), size: 4 }), SizeMismatchError);
  });
});

describe('manifest media type and digest', () => {
  const oci = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: {}, layers: [] }));
  const cases: Array<{ name: string; bytes: Buffer; contentType: string | undefined; want: string }> = [
    { name: 'the body field wins over a disagreeing Content-Type', bytes: oci, contentType: MediaTypes.dockerManifest, want: MediaTypes.ociManifest },
    { name: 'Content-Type when the body has no mediaType', bytes: Buffer.from('{"schemaVersion":2,"config":{},"layers":[]}'), contentType: MediaTypes.dockerManifest, want: MediaTypes.dockerManifest },
    { name: 'structure: an index', bytes: Buffer.from('{"schemaVersion":2,"manifests":[]}'), contentType: 'application/json', want: MediaTypes.ociIndex },
    { name: 'structure: an image', bytes: Buffer.from('{"schemaVersion":2,"config":{},"layers":[]}'), contentType: undefined, want: MediaTypes.ociManifest },
    { name: 'structure: signed schema 1', bytes: Buffer.from('{"schemaVersion":1,"fsLayers":[],"signatures":[]}'), contentType: 'text/plain', want: MediaTypes.dockerSchema1Signed },
    { name: 'structure: unsigned schema 1', bytes: Buffer.from('{"schemaVersion":1,"fsLayers":[]}'), contentType: undefined, want: MediaTypes.dockerSchema1 },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(detectManifestMediaType(c.bytes, c.contentType), c.want);
    });
  }
  test('bytes that are not a manifest are refused', () => {
    assert.throws(() => detectManifestMediaType(Buffer.from('nope'), undefined), /not valid JSON/);
    assert.throws(() => detectManifestMediaType(Buffer.from('[1]'), undefined), /not a JSON object/);
    assert.throws(() => detectManifestMediaType(Buffer.from('{"a":1}'), 'application/json'), /cannot tell/);
  });

  // A signed schema-1 manifest as libtrust writes it: the payload's closing "\n}" replaced by the
  // signatures, each protected header naming how to cut the payload back out.
  const payload = Buffer.from('{\n   "schemaVersion": 1,\n   "name": "a/b",\n   "tag": "v1",\n   "fsLayers": []\n}');
  const formatLength = payload.length - 2;
  const protectedHeader = (tail: string): string => Buffer.from(JSON.stringify({ formatLength, formatTail: Buffer.from(tail).toString('base64url'), time: '2024-01-01T00:00:00Z' })).toString('base64url');
  const signed = (tails: string[]): Buffer =>
    Buffer.concat([
      payload.subarray(0, formatLength),
      Buffer.from(`,\n   "signatures": [${tails.map((t) => `{"header":{"alg":"ES256"},"signature":"c2ln","protected":"${protectedHeader(t)}"}`).join(',')}]\n}`),
    ]);

  test('a signed schema-1 manifest is addressed by its JWS payload', () => {
    const bytes = signed(['\n}']);
    assert.deepEqual(schema1Payload(bytes), payload);
    assert.equal(manifestDigest(bytes, MediaTypes.dockerSchema1Signed), sha256(payload));
    assert.notEqual(manifestDigest(bytes, MediaTypes.dockerSchema1Signed), sha256(bytes));
    assert.equal(manifestDigest(bytes, MediaTypes.dockerSchema1Signed, 'sha512'), `sha512:${createHash('sha512').update(payload).digest('hex')}`);
    // Two signatures over the same payload.
    assert.deepEqual(schema1Payload(signed(['\n}', '\n}'])), payload);
  });

  test('other manifests, and schema-1 without usable signatures, are addressed by their bytes', () => {
    assert.equal(manifestDigest(oci, MediaTypes.ociManifest), sha256(oci));
    const unsigned = Buffer.from('{"schemaVersion":1,"fsLayers":[]}');
    assert.equal(schema1Payload(unsigned), undefined);
    assert.equal(manifestDigest(unsigned, MediaTypes.dockerSchema1), sha256(unsigned));
    const inconsistent = signed(['\n}', '}']);
    assert.equal(schema1Payload(inconsistent), undefined);
    assert.equal(manifestDigest(inconsistent, MediaTypes.dockerSchema1Signed), sha256(inconsistent));
  });
});

describe('registry origins and user:password', () => {
  const origins: Array<[string, boolean, string]> = [
    ['127.0.0.1:5000', false, 'http://127.0.0.1:5000'],
    ['127.1.2.3', false, 'http://127.1.2.3'],
    ['localhost:5000', false, 'http://localhost:5000'],
    ['[::1]:5000', false, 'http://[::1]:5000'],
    ['registry.example.com', false, 'https://registry.example.com'],
    ['10.0.0.1:5000', false, 'https://10.0.0.1:5000'],
    ['localhost.example.com', false, 'https://localhost.example.com'],
    ['registry.internal:5000', true, 'http://registry.internal:5000'],
  ];
  for (const [registry, insecure, want] of origins) {
    test(`${registry}${insecure ? ' (insecure)' : ''} -> ${want}`, () => {
      assert.equal(registryOrigin(registry, insecure), want);
    });
  }
  test('isLoopbackHost', () => {
    assert.equal(isLoopbackHost('127.0.0.1'), true);
    assert.equal(isLoopbackHost('LOCALHOST'), true);
    assert.equal(isLoopbackHost('128.0.0.1'), false);
    assert.equal(isLoopbackHost('127.0.0.1.nip.io'), false);
  });
  test('parseUserPassword keeps colons in the password and never echoes the value', () => {
    assert.deepEqual(parseUserPassword('bob:pa:ss'), { username: 'bob', password: 'pa:ss' });
    assert.throws(() => parseUserPassword('hunter2-secret'), (err: Error) => !err.message.includes('hunter2') && /user:password/.test(err.message));
  });
});
