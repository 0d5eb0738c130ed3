// Token endpoints that answer garbage, challenges that make no sense, and realms on hosts that
// must not get the source's credentials. The scripted source challenges every /v2/ request
// (Bearer) and serves its token endpoint at /token; `credentials: true` configures a user with
// a distinctive password for it, which must reach no foreign realm and no error message.
import assert from 'node:assert/strict';
import { endless, json, type CopyCase, type Scripted } from './kit.js';

const bearer = (s: Scripted, realm = `http://${s.host}/token`): string => `Bearer realm="${realm}",service="hostile"`;
const tokenRequests = (s: Scripted) => s.requests.filter((r) => r.path.startsWith('/token'));

/** A case whose token endpoint (on the registry's own host) answers `answer`. */
function garbage(name: string, answer: NonNullable<CopyCase['routes']>, message: RegExp, extra: Partial<CopyCase> = {}): CopyCase {
  return { kind: 'auth', name, credentials: true, challenge: (s) => bearer(s), routes: answer, expect: { code: 'ERR_AUTH', message }, ...extra };
}

const cases: CopyCase[] = [
  garbage('a token endpoint that answers HTML', () => ({ '/token': { status: 200, headers: { 'content-type': 'text/html' }, body: '<html>login</html>' } }), /token server http:\/\/127\.0\.0\.1:\d+ answered something that is not a token response/),
  garbage('a token endpoint that answers JSON without a token', () => ({ '/token': json(200, { expires_in: 300 }) }), /answered something that is not a token response/),
  garbage('a token endpoint that answers an empty token', () => ({ '/token': json(200, { token: '' }) }), /not a token response/),
  garbage('a token endpoint whose expires_in is not a number', () => ({ '/token': json(200, { token: 'abc', expires_in: 'soon' }) }), /not a token response/),
  garbage('a token that would inject a header', () => ({ '/token': json(200, { token: 'abc\r\nX-Injected: 1' }) }), /answered a token with characters that cannot go into a header/),
  garbage('a token endpoint that answers 500 with HTML', () => ({ '/token': { status: 500, headers: { 'content-type': 'text/html' }, body: '<h1>oops</h1>' } }), /token server http:\/\/127\.0\.0\.1:\d+ answered 500/),
  garbage('a token endpoint that refuses the credentials', () => ({ '/token': json(401, { errors: [{ code: 'UNAUTHORIZED' }] }) }), /refused the credentials for 127\.0\.0\.1:\d+ \(401\)/),
  garbage('a token body over a megabyte', () => ({ '/token': json(200, { token: 'x'.repeat(2 * 1024 * 1024) }) }), /token request to http:\/\/127\.0\.0\.1:\d+ failed: response body larger than 1048576 bytes/),
  garbage('a token body that never ends', () => ({ '/token': endless(200, Buffer.alloc(64 * 1024, 0x20), { 'content-type': 'application/json' }) }), /failed: response body larger than 1048576 bytes/, { withinMs: 10_000 }),
  garbage('a token endpoint whose headers never come', () => ({ '/token': () => undefined }), /token request to http:\/\/127\.0\.0\.1:\d+ failed: Headers Timeout Error/, {
    client: { timeouts: { connectMs: 1_000, headersMs: 200, bodyIdleMs: 200 }, retry: { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 20 } },
    withinMs: 5_000,
  }),
  garbage('a token the registry keeps refusing', () => ({ '/token': json(200, { token: 'not-the-good-token' }) }), /was refused \(401\) with fresh credentials for 127\.0\.0\.1:\d+/, {
    check: (s) => assert.ok(tokenRequests(s).length <= 2, `no loop: ${tokenRequests(s).length} token requests`),
  }),
  {
    kind: 'auth',
    name: 'a Bearer challenge without a realm',
    challenge: () => 'Bearer service="hostile"',
    expect: { code: 'ERR_AUTH', message: /the registry's Bearer challenge has no valid realm/ },
  },
  {
    kind: 'auth',
    name: 'a realm that is a file URL',
    challenge: () => 'Bearer realm="file:///etc/passwd",service="hostile"',
    expect: { code: 'ERR_AUTH', message: /the registry's token realm is not an http\(s\) URL/ },
  },
  {
    kind: 'auth',
    name: 'a 401 with a garbage challenge',
    challenge: () => 'NTLM, =,,, "realm=x',
    expect: { code: 'ERR_AUTH', message: /answered 401 without a Basic or Bearer challenge/ },
  },
  {
    kind: 'auth',
    name: 'a Basic challenge and no credentials configured',
    challenge: () => 'Basic realm="hostile"',
    expect: { code: 'ERR_AUTH', message: /requires credentials \(Basic\) and none are configured for 127\.0\.0\.1:\d+/ },
  },
  {
    kind: 'auth',
    name: 'a realm on a foreign host gets no credentials',
    credentials: true,
    // `localhost` is another host name than the registry's 127.0.0.1: its realm is asked anonymously.
    challenge: (s) => bearer(s, `http://localhost:${s.port}/token`),
    routes: () => ({ '/token': json(401, { errors: [{ code: 'UNAUTHORIZED' }] }) }),
    expect: { code: 'ERR_AUTH', message: /refused anonymous access .*\(credentials were not sent: localhost is not 127\.0\.0\.1:\d+'s host nor an allowed token realm\)/ },
    check: (s) => {
      const asked = tokenRequests(s);
      assert.ok(asked.length >= 1, 'the foreign realm was asked');
      for (const r of asked) {
        assert.equal(r.headers.authorization, undefined, 'no Authorization to a foreign realm');
        assert.ok(!r.path.includes('hostile-user') && !JSON.stringify(r.headers).includes('hostile-user'), 'no user name either');
      }
    },
  },
  {
    kind: 'auth',
    name: 'a realm on a metadata address',
    credentials: true,
    challenge: () => 'Bearer realm="http://169.254.169.254/latest/meta-data/iam/security-credentials/",service="hostile"',
    expect: { code: 'ERR_FORBIDDEN', message: /refused to contact http:\/\/169\.254\.169\.254\/latest\/meta-data\/iam\/security-credentials\/.* \(token\): a link-local or metadata address/ },
  },
  {
    kind: 'auth',
    name: 'a realm on a private address under the rules policy',
    credentials: true,
    policy: 'rules',
    challenge: (s) => bearer(s, `http://localhost:${s.canary.port}/token`),
    expect: { code: 'ERR_FORBIDDEN', message: /\(token\): (127\.0\.0\.1|::1) is a private address and the host is not named by any rule/ },
    check: (s) => assert.equal(s.canary.requests.length, 0, 'the private realm was never contacted'),
  },
  {
    kind: 'auth',
    name: 'a token endpoint that redirects to a metadata address',
    credentials: true,
    challenge: (s) => bearer(s),
    routes: () => ({ '/token': { status: 302, headers: { location: 'http://169.254.169.254/latest/meta-data/' } } }),
    expect: { code: 'ERR_AUTH', message: /token server http:\/\/127\.0\.0\.1:\d+ answered 302/ },
  },
];

export default cases;
