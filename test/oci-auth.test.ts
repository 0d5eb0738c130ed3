// Authentication of the distribution client against real registries: anonymous, htpasswd Basic
// and Bearer tokens from the token server; token lifetime and re-challenge; scopes; where
// credentials may go (token realms, redirects); secrets kept out of errors; Docker's config.json
// with auths, identity tokens and credential helpers.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { AuthError, OciRelayError, RegistryError } from '../lib/errors.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import { RegistryClient, type Repository } from '../lib/oci/client.js';
import { anonymous, dockerConfigCredentials, staticCredentials, type CredentialProvider } from '../lib/oci/credentials.js';
import type { RequestEvent } from '../lib/oci/transport.js';
import {
  decodeJwtClaims,
  DISTRIBUTION_TOKEN_LEEWAY,
  inspectRaw,
  makeTempDir,
  randomBytes,
  readBody,
  sha256Digest,
  startHttpServer,
  startProxy,
  startRegistry,
  type ProxiedRequest,
  type RegistryAuth,
  type RunningRegistry,
} from './support/index.js';

// ---------------------------------------------------------------------------------------------
// Helpers

interface TestImage {
  config: Buffer;
  layer: Buffer;
  manifest: Buffer;
  digest: string;
}

function makeImage(seed: number): TestImage {
  const layer = randomBytes(20_000, seed);
  const config = Buffer.from(JSON.stringify({ architecture: 'arm64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256Digest(layer)] }, seed }));
  const body = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256Digest(config), size: config.length },
    layers: [{ mediaType: MediaTypes.ociLayerTar, digest: sha256Digest(layer), size: layer.length }],
  };
  const manifest = Buffer.from(`${JSON.stringify(body, null, 2)}\n`);
  return { config, layer, manifest, digest: sha256Digest(manifest) };
}

const bufferSource = (data: Buffer) => (): Readable => Readable.from([data], { objectMode: false });

async function pushImage(repo: Repository, image: TestImage, tag: string): Promise<void> {
  for (const blob of [image.config, image.layer]) await repo.pushBlob({ digest: sha256Digest(blob), size: blob.length }, bufferSource(blob));
  await repo.putManifest(tag, image.manifest, MediaTypes.ociManifest);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => assert.fail('expected a rejection'),
    (err: unknown) => err,
  );
}

function header(req: ProxiedRequest | { headers: Record<string, string | string[] | undefined> }, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function credentialsFor(registry: RunningRegistry): CredentialProvider {
  return registry.auth === 'none' ? anonymous : staticCredentials({ username: registry.username!, password: registry.password! });
}

/** Everything an error could show: message, stack, JSON, and its causes. */
function errorText(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current && depth < 5; depth++) {
    if (current instanceof Error) parts.push(current.message, String(current.stack));
    if (current instanceof OciRelayError) parts.push(JSON.stringify(current), current.url ?? '');
    current = (current as { cause?: unknown }).cause;
  }
  return parts.join('\n');
}

function assertNoSecret(err: unknown, secrets: string[]): void {
  const text = errorText(err);
  for (const secret of secrets) {
    assert.ok(!text.includes(secret), `the error shows a secret: ${text}`);
    assert.ok(!text.includes(Buffer.from(secret).toString('base64')), 'the error shows a base64 secret');
  }
}

// ---------------------------------------------------------------------------------------------

describe('push and pull under each auth variant', () => {
  for (const auth of ['none', 'basic', 'token'] as RegistryAuth[]) {
    test(`${auth}: ping, blobs, manifests, tags, catalog, delete`, async (t) => {
      const registry = await startRegistry({ auth, password: `pw-${auth}-Zq7`, token: { expiresIn: 300 } });
      t.after(() => registry.stop());
      const events: RequestEvent[] = [];
      const client = new RegistryClient(registry.host, { credentials: credentialsFor(registry), onRequest: (e) => events.push(e) });
      t.after(() => client.close());

      assert.equal((await client.ping()).status, 200);
      assert.equal(client.transport.auth.currentScheme, auth === 'none' ? 'unknown' : auth === 'basic' ? 'basic' : 'bearer');
      const image = makeImage(auth.length);
      const repo = client.repository(`auth-${auth}/app`, 'push');
      await pushImage(repo, image, 'v1');
      // An independent client sees the exact bytes.
      assert.deepEqual(await inspectRaw(`${registry.host}/auth-${auth}/app:v1`, registry.creds), image.manifest);

      const pull = client.repository(`auth-${auth}/app`);
      const byTag = await pull.getManifest('v1');
      assert.deepEqual(byTag.bytes, image.manifest);
      assert.equal(byTag.digest, image.digest);
      assert.deepEqual(await pull.getManifest(image.digest).then((m) => m.bytes), image.manifest);
      assert.equal((await pull.headManifest('v1'))?.digest, image.digest);
      for (const blob of [image.config, image.layer]) {
        assert.deepEqual(await readAll(await pull.fetchBlob({ digest: sha256Digest(blob), size: blob.length })), blob);
      }
      assert.deepEqual(await pull.listTags(), ['v1']);
      assert.deepEqual(await client.listCatalog(), [`auth-${auth}/app`]);
      await repo.deleteManifest(image.digest);
      assert.equal(await pull.headManifest('v1'), undefined);

      if (auth !== 'none') {
        // One challenge for the whole session: afterwards requests are authorised up front.
        assert.equal(events.filter((e) => e.status === 401).length, 1, 'a single 401, on the first request');
      }
      if (auth === 'token') {
        const scopes = registry.tokenServer!.requests.flatMap((r) => r.scopes);
        assert.ok(scopes.includes(`repository:auth-token/app:pull,push`), `push asked for pull,push: ${scopes.join(' | ')}`);
        assert.ok(scopes.includes(`repository:auth-token/app:pull`));
        assert.ok(scopes.includes(`repository:auth-token/app:pull,push,delete`));
        assert.ok(scopes.includes('registry:catalog:*'));
        assert.ok(registry.tokenServer!.requests.every((r) => r.authorized && r.service === 'test-registry'));
      }
    });
  }

  for (const auth of ['basic', 'token'] as RegistryAuth[]) {
    test(`${auth}: missing or wrong credentials give an AuthError that shows no secret`, async (t) => {
      const password = `Corr3ct-${auth}-Secret-Kx9`;
      const registry = await startRegistry({ auth, password });
      t.after(() => registry.stop());
      const wrongPassword = `Wr0ng-${auth}-Secret-Pq4`;
      const wrong = new RegistryClient(registry.host, { credentials: staticCredentials({ username: registry.username!, password: wrongPassword }) });
      t.after(() => wrong.close());
      const err = await caught(wrong.repository('x/y').getManifest('v1'));
      assert.ok(err instanceof AuthError, String(err));
      assertNoSecret(err, [password, wrongPassword, `${registry.username}:${wrongPassword}`]);
      const none = new RegistryClient(registry.host);
      t.after(() => none.close());
      const anon = await caught(none.repository('x/y').getManifest('v1'));
      assert.ok(anon instanceof AuthError, String(anon));
    });
  }
});

describe('concurrent first requests on a fresh client', () => {
  for (const auth of ['basic', 'token'] as RegistryAuth[]) {
    test(`${auth}: all succeed; the scheme is learned once`, async (t) => {
      const registry = await startRegistry({ auth });
      t.after(() => registry.stop());
      const client = new RegistryClient(registry.host, { credentials: credentialsFor(registry) });
      t.after(() => client.close());
      const repo = client.repository('conc/app');
      // Sent at once, all go anonymously and are refused; the 401s of those sent before the
      // scheme was learned must not count as rejected credentials.
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => repo.headBlob(sha256Digest(`blob ${i}`))));
      assert.deepEqual(results, Array.from({ length: 8 }, () => undefined));
      if (auth === 'token') assert.equal(registry.tokenServer!.requests.length, 1, 'one token for one scope');
    });
  }
});

describe('Bearer tokens: lifetime and re-challenge', () => {
  test('a token is reused while fresh and refreshed before it expires', async (t) => {
    // expiresIn 3: the registry refuses the token 3 s after issue; the client must refresh first.
    const registry = await startRegistry({ auth: 'token', token: { expiresIn: 3 } });
    t.after(() => registry.stop());
    const ts = registry.tokenServer!;
    const events: RequestEvent[] = [];
    let lastAuthorization = '';
    const proxy = await startProxy(registry.url, {
      intercept: (req) => {
        lastAuthorization = header(req, 'authorization') ?? '';
        return undefined;
      },
    });
    t.after(() => proxy.stop());
    const client = new RegistryClient(proxy.host, { credentials: credentialsFor(registry), onRequest: (e) => events.push(e) });
    t.after(() => client.close());
    const repo = client.repository('life/app');
    const digest = sha256Digest('absent');

    assert.equal(await repo.headBlob(digest), undefined);
    const issuedBy = Date.now(); // the token was issued before this
    assert.equal(ts.requests.length, 1);
    const first = lastAuthorization.replace(/^Bearer /, '');
    assert.equal(await repo.headBlob(digest), undefined);
    assert.equal(ts.requests.length, 1, 'the cached token is reused');

    // Wait until the registry would refuse the first token (exp + its leeway) and its 3 s are over.
    const refusedAt = ((decodeJwtClaims(first).exp as number) + DISTRIBUTION_TOKEN_LEEWAY) * 1000 + 50;
    await delay(Math.max(0, refusedAt - Date.now(), issuedBy + 3000 - Date.now()));
    events.length = 0;
    assert.equal(await repo.headBlob(digest), undefined);
    assert.equal(ts.requests.length, 2, 'a fresh token was fetched');
    assert.deepEqual(events.map((e) => [e.operation, e.status]), [['GET token', 200], ['HEAD blob', 404]], 'no 401 round trip');
    assert.notEqual(lastAuthorization.replace(/^Bearer /, ''), first);
  });

  describe('a 401 on a request made with a cached token', () => {
    let registry: RunningRegistry;
    before(async () => {
      registry = await startRegistry({ auth: 'token' });
    });
    after(() => registry?.stop());

    const challenge = (): string => `Bearer realm="${registry.tokenServer!.realm}",service="test-registry",scope="repository:re/app:pull",error="invalid_token"`;

    test('triggers exactly one fresh challenge, then succeeds', async (t) => {
      const ts = registry.tokenServer!;
      let refused: string | undefined;
      const proxy = await startProxy(registry.url);
      t.after(() => proxy.stop());
      const client = new RegistryClient(proxy.host, { credentials: credentialsFor(registry) });
      t.after(() => client.close());
      const repo = client.repository('re/app');
      const digest = sha256Digest('absent');
      assert.equal(await repo.headBlob(digest), undefined);
      const before = ts.requests.length;
      proxy.reset();
      proxy.intercept = (req) => {
        const authorization = header(req, 'authorization');
        if (refused === undefined && authorization?.startsWith('Bearer ')) {
          refused = authorization;
          return { status: 401, headers: { 'www-authenticate': challenge(), 'content-type': 'application/json' }, body: '{"errors":[{"code":"UNAUTHORIZED"}]}' };
        }
        return undefined;
      };
      assert.equal(await repo.headBlob(digest), undefined);
      assert.equal(ts.requests.length, before + 1, 'exactly one new token');
      assert.equal(proxy.requests.length, 2);
      const retried = header(proxy.requests[1]!, 'authorization');
      assert.ok(retried?.startsWith('Bearer ') && retried !== refused, 'the retry carries the fresh token');
    });

    test('a second 401 after the fresh token is an AuthError, not a loop', async (t) => {
      const ts = registry.tokenServer!;
      const proxy = await startProxy(registry.url);
      t.after(() => proxy.stop());
      const client = new RegistryClient(proxy.host, { credentials: credentialsFor(registry) });
      t.after(() => client.close());
      const repo = client.repository('re/app');
      assert.equal(await repo.headBlob(sha256Digest('absent')), undefined);
      const before = ts.requests.length;
      proxy.reset();
      proxy.intercept = (req) => (header(req, 'authorization')?.startsWith('Bearer ') ? { status: 401, headers: { 'www-authenticate': challenge() } } : undefined);
      const err = await caught(repo.headBlob(sha256Digest('absent')));
      assert.ok(err instanceof AuthError, String(err));
      assert.equal(err.status, 401);
      assert.equal(ts.requests.length, before + 1, 'one fresh token, no more');
      assert.equal(proxy.requests.length, 2);
      const tokens = proxy.requests.map((r) => header(r, 'authorization')!.replace(/^Bearer /, ''));
      assertNoSecret(err, [...tokens, registry.password!]);
    });
  });
});

describe('scopes', () => {
  test('push asks for pull,push; a mount adds repository:<from>:pull', async (t) => {
    const registry = await startRegistry({ auth: 'token' });
    t.after(() => registry.stop());
    const ts = registry.tokenServer!;
    const client = new RegistryClient(registry.host, { credentials: credentialsFor(registry) });
    t.after(() => client.close());
    const data = randomBytes(10_000, 31);
    const digest = sha256Digest(data);
    await client.repository('scope/src', 'push').pushBlob({ digest, size: data.length }, bufferSource(data));
    assert.ok(ts.requests.some((r) => r.scopes.includes('repository:scope/src:pull,push')), JSON.stringify(ts.requests));

    const before = ts.requests.length;
    const dst = client.repository('scope/dst', 'push');
    const result = await dst.pushBlob({ digest, size: data.length }, () => assert.fail('mounted'), { mountFrom: 'scope/src' });
    assert.equal(result.outcome, 'mounted');
    const mountTokens = ts.requests.slice(before);
    assert.equal(mountTokens.length, 1, 'one token for the mount');
    assert.deepEqual([...mountTokens[0]!.scopes].sort(), ['repository:scope/dst:pull,push', 'repository:scope/src:pull']);
    assert.deepEqual(await dst.headBlob(digest), { size: data.length });
  });
});

describe('where credentials go', () => {
  let registry: RunningRegistry;
  before(async () => {
    registry = await startRegistry({ auth: 'token' });
  });
  after(() => registry?.stop());

  /** A proxy in front of the registry that moves the token realm to `localhost`. */
  async function realmOnLocalhost(t: { after: (fn: () => Promise<void>) => void }) {
    const ts = registry.tokenServer!;
    const moved = ts.realm.replace('127.0.0.1', 'localhost');
    const proxy = await startProxy(registry.url, {
      intercept: () => ({ rewriteResponseHeaders: (h) => (h['www-authenticate'] ? { ...h, 'www-authenticate': h['www-authenticate'].replace(ts.realm, moved) } : h) }),
    });
    t.after(() => proxy.stop());
    return proxy;
  }

  test('a token realm on another host name gets no credentials', async (t) => {
    const ts = registry.tokenServer!;
    const proxy = await realmOnLocalhost(t);
    const client = new RegistryClient(proxy.host, { credentials: credentialsFor(registry) });
    t.after(() => client.close());
    const before = ts.requests.length;
    const err = await caught(client.repository('cred/app').getManifest('v1'));
    assert.ok(err instanceof AuthError, String(err));
    const asked = ts.requests.slice(before);
    assert.equal(asked.length, 1);
    assert.equal(asked[0]!.hadAuthorization, false);
    assert.equal(asked[0]!.authorized, false);
    assertNoSecret(err, [registry.password!]);
  });

  test('unless the realm host is allowed with allowedRealmHosts', async (t) => {
    const ts = registry.tokenServer!;
    const proxy = await realmOnLocalhost(t);
    const client = new RegistryClient(proxy.host, { credentials: credentialsFor(registry), allowedRealmHosts: ['localhost'] });
    t.after(() => client.close());
    const before = ts.requests.length;
    assert.equal(await client.repository('cred/app').headBlob(sha256Digest('x')), undefined);
    const asked = ts.requests.slice(before);
    assert.equal(asked.length, 1);
    assert.equal(asked[0]!.hadAuthorization, true);
    assert.equal(asked[0]!.authorized, true);
  });

  test('the registry own host name (another port) is a trusted realm', async (t) => {
    const ts = registry.tokenServer!;
    const client = new RegistryClient(registry.host, { credentials: credentialsFor(registry) });
    t.after(() => client.close());
    const before = ts.requests.length;
    assert.equal(await client.repository('cred/app').headBlob(sha256Digest('x')), undefined);
    assert.equal(ts.requests.slice(before)[0]?.hadAuthorization, true);
  });
});

describe('redirects on blob GET', () => {
  let registry: RunningRegistry;
  let data: Buffer;
  let digest: string;
  before(async () => {
    registry = await startRegistry({ auth: 'basic' });
    data = randomBytes(100_000, 41);
    digest = sha256Digest(data);
    const client = new RegistryClient(registry.host, { credentials: credentialsFor(registry) });
    await client.repository('redir/app', 'push').pushBlob({ digest, size: data.length }, bufferSource(data));
    await client.close();
  });
  after(() => registry?.stop());

  test('to another host: followed, without Authorization', async (t) => {
    const storage = await startHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length });
      res.end(data);
    });
    t.after(() => storage.stop());
    const proxy = await startProxy(registry.url, {
      intercept: (req) => (req.method === 'GET' && req.path.includes('/blobs/sha256:') ? { status: 307, headers: { location: `http://localhost:${storage.port}/bucket/blob?X-Amz-Signature=s1gn` } } : undefined),
    });
    t.after(() => proxy.stop());
    const client = new RegistryClient(proxy.host, { credentials: credentialsFor(registry) });
    t.after(() => client.close());
    await client.ping(); // learns Basic: from now on Authorization goes with every registry request
    const stream = await client.repository('redir/app').fetchBlob({ digest, size: data.length });
    assert.deepEqual(await readAll(stream), data);
    const toRegistry = proxy.requests.find((r) => r.path.includes('/blobs/'));
    assert.match(header(toRegistry!, 'authorization') ?? '', /^Basic /, 'the registry got Authorization');
    assert.equal(storage.requests.length, 1);
    assert.equal(storage.requests[0]!.path, '/bucket/blob?X-Amz-Signature=s1gn');
    assert.equal(storage.requests[0]!.headers.authorization, undefined, 'no Authorization on another host');
  });

  test('same origin: followed, keeping Authorization', async (t) => {
    let redirected = false;
    const proxy = await startProxy(registry.url, {
      intercept: (req) => {
        if (req.method === 'GET' && req.path.includes('/blobs/sha256:') && !redirected) {
          redirected = true;
          return { status: 307, headers: { location: `${req.path}?moved=1` } };
        }
        return undefined;
      },
    });
    t.after(() => proxy.stop());
    const client = new RegistryClient(proxy.host, { credentials: credentialsFor(registry) });
    t.after(() => client.close());
    await client.ping();
    assert.deepEqual(await readAll(await client.repository('redir/app').fetchBlob({ digest, size: data.length })), data);
    const gets = proxy.requests.filter((r) => r.path.includes('/blobs/'));
    assert.equal(gets.length, 2);
    assert.match(gets[1]!.path, /\?moved=1$/);
    assert.equal(header(gets[1]!, 'authorization'), header(gets[0]!, 'authorization'));
    assert.match(header(gets[1]!, 'authorization') ?? '', /^Basic /);
  });
});

describe('Docker config.json credentials', () => {
  let basicRegistry: RunningRegistry;
  let tokenRegistry: RunningRegistry;
  let helperDir: string;
  const savedPath = process.env.PATH;

  before(async () => {
    [basicRegistry, tokenRegistry] = await Promise.all([startRegistry({ auth: 'basic' }), startRegistry({ auth: 'token' })]);
    helperDir = makeTempDir('cred-helpers');
    process.env.PATH = `${helperDir}:${savedPath ?? ''}`;
  });
  after(async () => {
    process.env.PATH = savedPath;
    await basicRegistry?.stop();
    await tokenRegistry?.stop();
  });

  function writeConfig(config: unknown): string {
    const dir = makeTempDir('docker-config');
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  }

  /** A docker-credential-<name> helper answering `get` for one server URL, logging what it was asked. */
  function writeHelper(name: string, server: string, answer: { Username: string; Secret: string }): string {
    const log = join(helperDir, `${name}.log`);
    const script = `#!/bin/sh
read -r server || true
echo "$1 $server" >> '${log}'
if [ "$1" = get ] && [ "$server" = '${server}' ]; then
  printf '%s' '${JSON.stringify({ ServerURL: server, ...answer })}'
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
`;
    const path = join(helperDir, `docker-credential-${name}`);
    writeFileSync(path, script);
    chmodSync(path, 0o755);
    return log;
  }

  async function works(registry: RunningRegistry, credentials: CredentialProvider, t: { after: (fn: () => Promise<void>) => void }): Promise<void> {
    const client = new RegistryClient(registry.host, { credentials });
    t.after(() => client.close());
    const image = makeImage(51);
    await pushImage(client.repository('cfg/app', 'push'), image, 'v1');
    assert.deepEqual((await client.repository('cfg/app').getManifest('v1')).bytes, image.manifest);
  }

  test('auths with auth (base64 user:password), found through DOCKER_CONFIG', async (t) => {
    const auth = Buffer.from(`${basicRegistry.username}:${basicRegistry.password}`).toString('base64');
    const dir = writeConfig({ auths: { 'other.example.com': { auth: 'eDp5' }, [basicRegistry.host]: { auth } } });
    const provider = dockerConfigCredentials({ env: { DOCKER_CONFIG: dir } });
    assert.deepEqual(await provider.get(basicRegistry.host), { username: basicRegistry.username, password: basicRegistry.password });
    assert.equal(await provider.get('third.example.com'), undefined);
    await works(basicRegistry, provider, t);
    // An entry keyed by URL (as older docker logins wrote them) matches too.
    const byUrl = dockerConfigCredentials({ env: { DOCKER_CONFIG: writeConfig({ auths: { [`http://${basicRegistry.host}/v2/`]: { auth } } }) } });
    assert.deepEqual(await byUrl.get(basicRegistry.host), { username: basicRegistry.username, password: basicRegistry.password });
    // No config file: anonymous.
    assert.equal(await dockerConfigCredentials({ env: { DOCKER_CONFIG: makeTempDir('empty-config') } }).get(basicRegistry.host), undefined);
  });

  test('process.env.DOCKER_CONFIG is honoured by default', async () => {
    const auth = Buffer.from(`${basicRegistry.username}:${basicRegistry.password}`).toString('base64');
    const dir = writeConfig({ auths: { [basicRegistry.host]: { auth } } });
    const saved = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = dir;
    try {
      assert.deepEqual(await dockerConfigCredentials().get(basicRegistry.host), { username: basicRegistry.username, password: basicRegistry.password });
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CONFIG;
      else process.env.DOCKER_CONFIG = saved;
    }
  });

  test('a malformed config is a clear error that does not echo its content', async () => {
    const dir = makeTempDir('bad-config');
    writeFileSync(join(dir, 'config.json'), '{"auths": {"h": {"auth": "c2VjcmV0LXZhbHVl"}');
    const err = await caught(dockerConfigCredentials({ configDir: dir }).get('h'));
    assert.ok(err instanceof OciRelayError);
    assert.match(err.message, /not valid JSON/);
    assert.ok(!err.message.includes('c2VjcmV0LXZhbHVl'));
  });

  test('credHelpers: the helper for that host is run with the host on stdin', async (t) => {
    const log = writeHelper('ocitest', basicRegistry.host, { Username: basicRegistry.username!, Secret: basicRegistry.password! });
    const dir = writeConfig({ credHelpers: { [basicRegistry.host]: 'ocitest' }, auths: { [basicRegistry.host]: { auth: Buffer.from('wrong:wrong').toString('base64') } } });
    const provider = dockerConfigCredentials({ env: { DOCKER_CONFIG: dir } });
    await works(basicRegistry, provider, t);
    const { readFileSync } = await import('node:fs');
    assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), [`get ${basicRegistry.host}`], 'asked once (cached), with the host');
  });

  test('credsStore: the default helper; "credentials not found" falls back to auths', async (t) => {
    writeHelper('ocistore', basicRegistry.host, { Username: basicRegistry.username!, Secret: basicRegistry.password! });
    const dir = writeConfig({ credsStore: 'ocistore', auths: { 'fallback.example.com': { auth: Buffer.from('fb:pw').toString('base64') } } });
    const provider = dockerConfigCredentials({ env: { DOCKER_CONFIG: dir } });
    await works(basicRegistry, provider, t);
    assert.deepEqual(await provider.get('fallback.example.com'), { username: 'fb', password: 'pw' });
    assert.equal(await provider.get('nothing.example.com'), undefined);
    // A helper that is not installed is a configuration error, naming the program only.
    const missing = dockerConfigCredentials({ env: { DOCKER_CONFIG: writeConfig({ credsStore: 'not-installed-anywhere' }) } });
    await assert.rejects(missing.get(basicRegistry.host), /docker-credential-not-installed-anywhere is not installed/);
  });

  test('identitytoken: an OAuth2 refresh-token grant at the realm (POST /token)', async (t) => {
    // The token server speaks only the password grant; a realm of our own takes refresh tokens
    // and hands out real tokens minted by the token server, which the registry accepts.
    const ts = tokenRegistry.tokenServer!;
    const identityToken = 'refresh-Tok3n-Vv8';
    const grants: Array<{ contentType: string | undefined; form: Record<string, string[]> }> = [];
    const realm = await startHttpServer(async (req, res) => {
      const form = new URLSearchParams((await readBody(req)).toString('utf8'));
      const fields: Record<string, string[]> = {};
      for (const key of new Set(form.keys())) fields[key] = form.getAll(key);
      grants.push({ contentType: req.headers['content-type'], form: fields });
      if (req.method !== 'POST' || form.get('grant_type') !== 'refresh_token' || form.get('refresh_token') !== identityToken) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid_grant"}');
        return;
      }
      const scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
      const token = ts.issueToken(scopes, { subject: tokenRegistry.username! });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: token, expires_in: 300, refresh_token: identityToken }));
    });
    t.after(() => realm.stop());
    const proxy = await startProxy(tokenRegistry.url, {
      intercept: () => ({ rewriteResponseHeaders: (h) => (h['www-authenticate'] ? { ...h, 'www-authenticate': h['www-authenticate'].replace(ts.realm, `${realm.url}/token`) } : h) }),
    });
    t.after(() => proxy.stop());
    const dir = writeConfig({ auths: { [proxy.host]: { identitytoken: identityToken } } });
    const provider = dockerConfigCredentials({ env: { DOCKER_CONFIG: dir } });
    assert.deepEqual(await provider.get(proxy.host), { identityToken });
    await works({ ...tokenRegistry, host: proxy.host }, provider, t);
    assert.ok(grants.length >= 1);
    for (const grant of grants) {
      assert.equal(grant.contentType, 'application/x-www-form-urlencoded');
      assert.deepEqual(grant.form.grant_type, ['refresh_token']);
      assert.deepEqual(grant.form.refresh_token, [identityToken]);
      assert.deepEqual(grant.form.service, ['test-registry']);
      assert.deepEqual(grant.form.client_id, ['ocirelay']);
    }
    assert.ok(grants.some((g) => (g.form.scope ?? []).join(' ').includes('repository:cfg/app:pull,push')));
    assert.equal(realm.requests.every((r) => r.method === 'POST' && r.path === '/token'), true);
    // The identity token goes in the body, never in the URL.
    assert.ok(realm.requests.every((r) => !r.path.includes(identityToken)));
  });

  test('a credential helper answering Username "<token>" gives an identity token', async () => {
    writeHelper('ocitoken', 'tok.example.com', { Username: '<token>', Secret: 'helper-refresh-token' });
    const dir = writeConfig({ credHelpers: { 'tok.example.com': 'ocitoken' } });
    assert.deepEqual(await dockerConfigCredentials({ env: { DOCKER_CONFIG: dir } }).get('tok.example.com'), { identityToken: 'helper-refresh-token' });
  });
});

describe('secrets stay out of errors', () => {
  test('registry errors on an authenticated registry show neither password nor token', async (t) => {
    const password = 'Very-Distinct1ve-Passw0rd';
    const registry = await startRegistry({ auth: 'token', password });
    t.after(() => registry.stop());
    const tokens: string[] = [];
    const proxy = await startProxy(registry.url, {
      intercept: (req) => {
        const authorization = header(req, 'authorization');
        if (authorization?.startsWith('Bearer ')) tokens.push(authorization.slice(7));
        return undefined;
      },
    });
    t.after(() => proxy.stop());
    const client = new RegistryClient(proxy.host, { credentials: credentialsFor(registry) });
    t.after(() => client.close());
    const err = await caught(client.repository('secret/app').getManifest('missing'));
    assert.ok(err instanceof RegistryError, String(err));
    assert.equal(err.status, 404);
    assert.ok(tokens.length > 0);
    assertNoSecret(err, [password, ...tokens]);
  });
});
