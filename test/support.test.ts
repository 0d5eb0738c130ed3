// Proves the test support layer works against the real servers.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { existsSync } from 'node:fs';
import {
  buildImage,
  buildIndex,
  decodeJwtClaims,
  DISTRIBUTION_TOKEN_LEEWAY,
  inspectConfig,
  inspectRaw,
  layoutDescriptor,
  onFreePort,
  pushLayout,
  randomBytes,
  readBody,
  sha256Digest,
  startHttpServer,
  startProxy,
  startRegistry,
  startTokenServer,
} from './support/index.js';
import type { RunningRegistry } from './support/index.js';

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
].join(', ');

const basic = (user: string, password: string): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function fetchToken(registry: RunningRegistry, scope: string, auth?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const ts = registry.tokenServer!;
  const url = `${ts.realm}?service=${encodeURIComponent(ts.service)}&scope=${encodeURIComponent(scope)}`;
  const res = await fetch(url, auth ? { headers: { authorization: auth } } : {});
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Monolithic blob push: POST /blobs/uploads/ then PUT <location>?digest=. Returns the PUT status. */
async function pushBlob(registry: RunningRegistry, repo: string, data: Buffer, auth: string): Promise<number> {
  const post = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: { authorization: auth } });
  await post.arrayBuffer();
  if (post.status !== 202) return post.status;
  const location = new URL(post.headers.get('location')!, registry.url);
  location.searchParams.set('digest', sha256Digest(data));
  const put = await fetch(location, {
    method: 'PUT',
    headers: { authorization: auth, 'content-type': 'application/octet-stream' },
    body: data,
  });
  await put.arrayBuffer();
  return put.status;
}

describe('registry', () => {
  test('anonymous registry answers /v2/ with 200 and stop is idempotent', async () => {
    const registry = await startRegistry();
    try {
      assert.match(registry.host, /^127\.0\.0\.1:\d+$/);
      assert.equal(registry.url, `http://${registry.host}`);
      const res = await fetch(`${registry.url}/v2/`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
      assert.ok(existsSync(registry.configPath));
    } finally {
      await Promise.all([registry.stop(), registry.stop()]);
      await registry.stop();
    }
    assert.equal(existsSync(registry.dataDir), false);
    await assert.rejects(fetch(`${registry.url}/v2/`));
  });

  test('basic-auth registry: 401 without credentials, 200 with them', async (t) => {
    const registry = await startRegistry({ auth: 'basic' });
    t.after(() => registry.stop());
    const anonymous = await fetch(`${registry.url}/v2/`);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    const wrong = await fetch(`${registry.url}/v2/`, { headers: { authorization: basic(registry.username!, 'nope') } });
    assert.equal(wrong.status, 401);
    const ok = await fetch(`${registry.url}/v2/`, { headers: { authorization: basic(registry.username!, registry.password!) } });
    assert.equal(ok.status, 200);
    assert.equal(registry.creds, `${registry.username}:${registry.password}`);
  });

  test('schema1 registry accepts a v2s1 push', async (t) => {
    const registry = await startRegistry({ schema1: true });
    t.after(() => registry.stop());
    const image = await buildImage({ tag: 'v1', layers: [[{ path: '/hello.txt', content: 'hello schema1\n' }]] });
    await pushLayout(image.ref, `${registry.host}/legacy/app:v1`, { format: 'v2s1' });
    const res = await fetch(`${registry.url}/v2/legacy/app/manifests/v1`, { headers: { accept: ACCEPT } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/vnd.docker.distribution.manifest.v1+prettyjws');
    const manifest = JSON.parse(await res.text()) as { schemaVersion: number; signatures?: unknown[] };
    assert.equal(manifest.schemaVersion, 1);
    assert.ok(Array.isArray(manifest.signatures) && manifest.signatures.length > 0);
  });

  test('a registry without schema1 refuses a v2s1 push', async (t) => {
    const registry = await startRegistry();
    t.after(() => registry.stop());
    const image = await buildImage({ tag: 'v1', layers: [[{ path: 'a', content: 'a' }]] });
    await assert.rejects(pushLayout(image.ref, `${registry.host}/legacy/app:v1`, { format: 'v2s1' }), /skopeo/);
  });

  test('notifications are posted to the configured endpoint', async (t) => {
    const received: Array<{ headers: Record<string, unknown>; body: { events: Array<{ action: string; target: { mediaType: string; repository: string } }> } }> = [];
    let notify: () => void = () => undefined;
    const sink = await startHttpServer(async (req, res) => {
      const body = JSON.parse((await readBody(req)).toString('utf8')) as (typeof received)[number]['body'];
      received.push({ headers: req.headers, body });
      res.writeHead(200).end();
      notify();
    });
    t.after(() => sink.stop());
    const registry = await startRegistry({
      notifications: { url: `${sink.url}/events`, headers: { Authorization: ['Bearer sink-token'] } },
    });
    t.after(() => registry.stop());
    const image = await buildImage({ tag: 'v1', layers: [[{ path: 'n', content: 'notify me' }]] });
    const manifestPushed = new Promise<void>((resolve) => {
      notify = () => {
        const events = received.flatMap((r) => r.body.events);
        if (events.some((e) => e.action === 'push' && e.target.mediaType === 'application/vnd.oci.image.manifest.v1+json')) resolve();
      };
    });
    await pushLayout(image.ref, `${registry.host}/notified/app:v1`);
    await manifestPushed;
    assert.equal(received[0]?.headers['authorization'], 'Bearer sink-token');
    assert.match(String(received[0]?.headers['content-type']), /application\/vnd\.docker\.distribution\.events\.v1\+json/);
    assert.equal(sink.requests[0]?.path, '/events');
  });
});

describe('token auth', () => {
  let registry: RunningRegistry;
  before(async () => {
    registry = await startRegistry({ auth: 'token' });
  });
  after(() => registry.stop());

  test('the registry challenges with the token server realm', async () => {
    const res = await fetch(`${registry.url}/v2/`);
    assert.equal(res.status, 401);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /^Bearer /);
    assert.ok(challenge.includes(`realm="${registry.tokenServer!.realm}"`));
    assert.ok(challenge.includes('service="test-registry"'));
  });

  test('a token for repository:x/y:pull,push lets fetch push a blob monolithically', async () => {
    const ts = registry.tokenServer!;
    const before = ts.requests.length;
    const { status, body } = await fetchToken(registry, 'repository:x/y:pull,push', basic(registry.username!, registry.password!));
    assert.equal(status, 200);
    assert.equal(typeof body['token'], 'string');
    assert.equal(body['access_token'], body['token']);
    assert.equal(body['expires_in'], 300);
    assert.equal(typeof body['issued_at'], 'string');
    const claims = decodeJwtClaims(body['token'] as string);
    assert.deepEqual(claims['access'], [{ type: 'repository', name: 'x/y', actions: ['pull', 'push'] }]);
    assert.equal(claims['aud'], 'test-registry');
    assert.equal(claims['iss'], 'test-issuer');
    assert.equal(claims['sub'], registry.username);
    assert.deepEqual(ts.requests[before], {
      method: 'GET',
      scopes: ['repository:x/y:pull,push'],
      service: 'test-registry',
      authorized: true,
      hadAuthorization: true,
      username: registry.username,
    });

    const auth = `Bearer ${body['token'] as string}`;
    const data = randomBytes(3000, 7);
    assert.equal(await pushBlob(registry, 'x/y', data, auth), 201);
    const head = await fetch(`${registry.url}/v2/x/y/blobs/${sha256Digest(data)}`, { method: 'HEAD', headers: { authorization: auth } });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), '3000');
  });

  test('anonymous tokens grant nothing; wrong credentials get 401 from the token server', async () => {
    const ts = registry.tokenServer!;
    const anonymous = await fetchToken(registry, 'repository:x/y:pull');
    assert.equal(anonymous.status, 200);
    assert.deepEqual(decodeJwtClaims(anonymous.body['token'] as string)['access'], []);
    assert.equal(ts.requests.at(-1)?.hadAuthorization, false);
    const res = await fetch(`${registry.url}/v2/x/y/tags/list`, { headers: { authorization: `Bearer ${anonymous.body['token'] as string}` } });
    assert.equal(res.status, 401);

    const wrong = await fetchToken(registry, 'repository:x/y:pull', basic(registry.username!, 'wrong'));
    assert.equal(wrong.status, 401);
    assert.deepEqual(ts.requests.at(-1), {
      method: 'GET',
      scopes: ['repository:x/y:pull'],
      service: 'test-registry',
      authorized: false,
      hadAuthorization: true,
    });
  });

  test('several scopes in one request; anonymousPull grants only pull', async (t) => {
    const ts = await startTokenServer({ users: { u: 'p' }, anonymousPull: true, omitExpiresIn: true });
    t.after(() => ts.stop());
    const res = await fetch(`${ts.realm}?service=test-registry&scope=repository:a/b:pull,push&scope=repository:c/d:pull`);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body).sort(), ['access_token', 'token']);
    assert.deepEqual(decodeJwtClaims(body['token'] as string)['access'], [
      { type: 'repository', name: 'a/b', actions: ['pull'] },
      { type: 'repository', name: 'c/d', actions: ['pull'] },
    ]);
    assert.deepEqual(ts.requests[0]?.scopes, ['repository:a/b:pull,push', 'repository:c/d:pull']);
  });

  test('an expired token is refused with 401', async () => {
    const ts = registry.tokenServer!;
    ts.setExpiresIn(1);
    try {
      const { body } = await fetchToken(registry, 'repository:x/y:pull,push', basic(registry.username!, registry.password!));
      assert.equal(body['expires_in'], 1);
      const token = body['token'] as string;
      const auth = `Bearer ${token}`;
      const fresh = await fetch(`${registry.url}/v2/x/y/tags/list`, { headers: { authorization: auth } });
      await fresh.arrayBuffer();
      assert.notEqual(fresh.status, 401);
      // The registry refuses once now > exp + leeway (whole seconds): wait just past that.
      const exp = decodeJwtClaims(token)['exp'] as number;
      const refusedAfter = (exp + DISTRIBUTION_TOKEN_LEEWAY) * 1000 + 20;
      assert.ok(refusedAfter - Date.now() <= 1100, 'the token expires within its expires_in');
      await delay(Math.max(0, refusedAfter - Date.now()));
      const stale = await fetch(`${registry.url}/v2/x/y/tags/list`, { headers: { authorization: auth } });
      await stale.arrayBuffer();
      assert.equal(stale.status, 401);
      assert.match(stale.headers.get('www-authenticate') ?? '', /^Bearer realm=.*error="invalid_token"/);
    } finally {
      ts.setExpiresIn(300);
    }
  });

  test('skopeo pushes with creds through the token flow', async () => {
    const image = await buildImage({ tag: 't', layers: [[{ path: 'f', content: 'token push' }]] });
    await pushLayout(image.ref, `${registry.host}/tok/app:v1`, { creds: registry.creds! });
    const raw = await inspectRaw(`${registry.host}/tok/app:v1`, registry.creds!);
    assert.equal(sha256Digest(raw), image.digest);
  });
});

describe('proxy', () => {
  let registry: RunningRegistry;
  before(async () => {
    registry = await startRegistry();
  });
  after(() => registry.stop());

  test('passes requests through and counts them', async (t) => {
    const proxy = await startProxy(registry.url);
    t.after(() => proxy.stop());
    const res = await fetch(`${proxy.url}/v2/`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), '{}');
    const missing = await fetch(`${proxy.url}/v2/no/such/manifests/latest?x=1`, { headers: { accept: ACCEPT } });
    assert.equal(missing.status, 404);
    await missing.arrayBuffer();
    assert.equal(proxy.requests.length, 2);
    assert.deepEqual(
      proxy.requests.map((r) => [r.index, r.method, r.path]),
      [[0, 'GET', '/v2/'], [1, 'GET', '/v2/no/such/manifests/latest?x=1']],
    );
    proxy.reset();
    assert.equal(proxy.requests.length, 0);
  });

  test('answers an intercept directly, transforms a body, rewrites headers', async (t) => {
    const proxy = await startProxy(registry.url);
    t.after(() => proxy.stop());
    proxy.intercept = (req) => (req.path === '/v2/' ? { status: 503, headers: { 'retry-after': '1' }, body: 'busy' } : undefined);
    const busy = await fetch(`${proxy.url}/v2/`);
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get('retry-after'), '1');
    assert.equal(await busy.text(), 'busy');

    proxy.intercept = () => ({ transformResponseBody: (body) => Buffer.concat([body, Buffer.from(' tampered')]) });
    const changed = await fetch(`${proxy.url}/v2/`);
    assert.equal(changed.headers.get('content-length'), String('{} tampered'.length));
    assert.equal(await changed.text(), '{} tampered');

    proxy.intercept = async () => ({ rewriteResponseHeaders: (h) => ({ ...h, 'x-injected': 'yes' }) });
    const rewritten = await fetch(`${proxy.url}/v2/`);
    assert.equal(rewritten.headers.get('x-injected'), 'yes');
    assert.equal(rewritten.headers.get('docker-distribution-api-version'), 'registry/2.0');
    assert.equal(await rewritten.text(), '{}');
    assert.equal(proxy.requests.length, 3);
  });

  test('resets after N response bytes and on request', async (t) => {
    const data = randomBytes(200_000, 1);
    const auth = '';
    assert.equal(await pushBlob(registry, 'p/blob', data, auth), 201);
    const proxy = await startProxy(registry.url);
    t.after(() => proxy.stop());
    const blobPath = `/v2/p/blob/blobs/${sha256Digest(data)}`;

    const whole = await fetch(`${proxy.url}${blobPath}`);
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), data);

    proxy.intercept = () => ({ resetAfterResponseBytes: 1000 });
    // Read with node:http to see exactly how many body bytes arrived before the reset.
    const { received, error } = await new Promise<{ received: number; error: Error | undefined }>((resolve) => {
      let got = 0;
      const req = httpRequest(`${proxy.url}${blobPath}`, (res) => {
        assert.equal(res.statusCode, 200);
        assert.equal(res.headers['content-length'], String(data.length));
        res.on('data', (chunk: Buffer) => (got += chunk.length));
        res.on('error', (err) => resolve({ received: got, error: err }));
        res.on('end', () => resolve({ received: got, error: undefined }));
      });
      req.on('error', (err) => resolve({ received: got, error: err }));
      req.end();
    });
    assert.equal(received, 1000);
    assert.ok(error, 'the client sees an error');

    const viaFetch = await fetch(`${proxy.url}${blobPath}`);
    await assert.rejects(viaFetch.arrayBuffer());

    proxy.intercept = () => ({ resetRequest: true });
    await assert.rejects(fetch(`${proxy.url}/v2/`));
  });

  test('rewrites Location headers that point at the target, streaming an upload through', async (t) => {
    const proxy = await startProxy(registry.url);
    t.after(() => proxy.stop());
    const post = await fetch(`${proxy.url}/v2/p/upload/blobs/uploads/`, { method: 'POST' });
    await post.arrayBuffer();
    assert.equal(post.status, 202);
    const location = post.headers.get('location')!;
    assert.ok(location.startsWith(`${proxy.url}/v2/p/upload/blobs/uploads/`), location);

    // Chunked PATCH through the proxy (a streamed request body), then the closing PUT.
    const data = randomBytes(100_000, 2);
    const patch = await fetch(location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream' },
      body: new ReadableStream({
        start(controller) {
          controller.enqueue(data.subarray(0, 50_000));
          controller.enqueue(data.subarray(50_000));
          controller.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    await patch.arrayBuffer();
    assert.equal(patch.status, 202);
    assert.equal(patch.headers.get('range'), `0-${data.length - 1}`);
    const putUrl = new URL(patch.headers.get('location')!);
    assert.equal(putUrl.origin, proxy.url);
    putUrl.searchParams.set('digest', sha256Digest(data));
    const put = await fetch(putUrl, { method: 'PUT' });
    await put.arrayBuffer();
    assert.equal(put.status, 201);
    assert.ok(put.headers.get('location')!.startsWith(`${proxy.url}/v2/p/upload/blobs/sha256:`));
    assert.deepEqual(
      proxy.requests.map((r) => r.method),
      ['POST', 'PATCH', 'PUT'],
    );
  });

  test('startHttpServer records requests (a redirect target)', async (t) => {
    const target = await startHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('landed');
    });
    t.after(() => target.stop());
    const proxy = await startProxy(registry.url, {
      intercept: () => ({ status: 307, headers: { location: `${target.url}/blob?sig=1` } }),
    });
    t.after(() => proxy.stop());
    const res = await fetch(`${proxy.url}/v2/x/blobs/sha256:00`, { headers: { authorization: 'Bearer secret' } });
    assert.equal(await res.text(), 'landed');
    assert.equal(target.requests.length, 1);
    assert.equal(target.requests[0]?.path, '/blob?sig=1');
    // fetch drops Authorization on a cross-origin redirect.
    assert.equal(target.requests[0]?.headers['authorization'], undefined);
  });
});

describe('fixtures', () => {
  test('randomBytes is deterministic with a seed', () => {
    assert.deepEqual(randomBytes(1000, 42), randomBytes(1000, 42));
    assert.deepEqual(randomBytes(1000, 42).subarray(0, 10), randomBytes(10, 42));
    assert.notDeepEqual(randomBytes(1000, 42), randomBytes(1000, 43));
    assert.equal(randomBytes(5).length, 5);
  });

  test('buildImage is deterministic for equal inputs', async () => {
    const spec = { tag: 'v1', architecture: 'arm64', layers: [{ files: { '/etc/a.txt': 'a', 'b/c.bin': randomBytes(2000, 3) } }] };
    const [a, b] = await Promise.all([buildImage(spec), buildImage(spec)]);
    assert.equal(a.digest, b.digest);
    assert.notEqual(a.layout, b.layout);
  });

  test('a 2-platform index pushed with --all keeps buildIndex digest', async (t) => {
    const registry = await startRegistry();
    t.after(() => registry.stop());
    const amd = await buildImage({
      tag: 'amd64',
      architecture: 'amd64',
      layers: [
        [{ path: '/base.txt', content: 'shared base layer\n' }],
        [{ path: '/bin/app', content: { size: 50_000, seed: 1 }, mode: 0o755 }],
      ],
    });
    const arm = await buildImage({
      layout: amd.layout,
      tag: 'arm64',
      architecture: 'arm64',
      variant: 'v8',
      layers: [
        [{ path: '/base.txt', content: 'shared base layer\n' }],
        [{ path: '/bin/app', content: { size: 50_000, seed: 2 }, mode: 0o755 }],
      ],
    });
    const index = await buildIndex({
      layout: amd.layout,
      name: 'multi',
      images: [
        { tag: 'amd64', platform: { os: 'linux', architecture: 'amd64' } },
        { tag: 'arm64', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ],
      annotations: { 'org.example.test': 'yes' },
    });
    assert.equal(index.digest, sha256Digest(index.raw));
    assert.equal((await layoutDescriptor(amd.layout, 'multi')).digest, index.digest);

    await pushLayout(`${amd.layout}:multi`, `${registry.host}/multi/app:v1`, { all: true });
    const raw = await inspectRaw(`${registry.host}/multi/app:v1`);
    assert.equal(sha256Digest(raw), index.digest);
    assert.deepEqual(raw, index.raw);
    const parsed = JSON.parse(raw.toString('utf8')) as { manifests: Array<{ digest: string; platform: unknown }> };
    assert.deepEqual(parsed.manifests.map((m) => m.digest), [amd.digest, arm.digest]);

    const armRaw = await inspectRaw(`${registry.host}/multi/app@${arm.digest}`);
    assert.equal(sha256Digest(armRaw), arm.digest);
    const armManifest = JSON.parse(armRaw.toString('utf8')) as { layers: Array<{ digest: string }> };
    const amdManifest = JSON.parse((await inspectRaw(`${registry.host}/multi/app@${amd.digest}`)).toString('utf8')) as typeof armManifest;
    assert.equal(armManifest.layers[0]?.digest, amdManifest.layers[0]?.digest, 'equal files give equal layers');
    assert.notEqual(armManifest.layers[1]?.digest, amdManifest.layers[1]?.digest);

    const config = (await inspectConfig(`${registry.host}/multi/app@${arm.digest}`)) as Record<string, unknown>;
    assert.equal(config['architecture'], 'arm64');
    assert.equal(config['variant'], 'v8');
    assert.equal(config['os'], 'linux');
  });

  test('format v2s2 with --all pushes a Docker manifest list', async (t) => {
    const registry = await startRegistry();
    t.after(() => registry.stop());
    const img = await buildImage({ tag: 'amd64', layers: [[{ path: 'x', content: 'x' }]] });
    await buildImage({ layout: img.layout, tag: 'arm64', architecture: 'arm64', layers: [[{ path: 'y', content: 'y' }]] });
    await buildIndex({
      layout: img.layout,
      name: 'list',
      images: [
        { tag: 'amd64', platform: { os: 'linux', architecture: 'amd64' } },
        { tag: 'arm64', platform: { os: 'linux', architecture: 'arm64' } },
      ],
    });
    await pushLayout(`${img.layout}:list`, `${registry.host}/docker/list:v1`, { all: true, format: 'v2s2' });
    const raw = JSON.parse((await inspectRaw(`${registry.host}/docker/list:v1`)).toString('utf8')) as { mediaType: string };
    assert.equal(raw.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
  });
});

describe('onFreePort', () => {
  test('a start that finds its port taken is tried again on another; any other failure is not', async () => {
    const tried: number[] = [];
    const port = await onFreePort(async (p) => {
      tried.push(p);
      if (tried.length < 3) throw new Error(`server exited: Error: listen EADDRINUSE: address already in use 127.0.0.1:${p}`);
      return p;
    });
    assert.equal(tried.length, 3);
    assert.equal(port, tried[2]);
    let calls = 0;
    await assert.rejects(onFreePort(async () => (calls++, Promise.reject(new Error('config invalid')))), /config invalid/);
    assert.equal(calls, 1);
    calls = 0;
    await assert.rejects(onFreePort(async () => (calls++, Promise.reject(new Error('EADDRINUSE'))), 2), /EADDRINUSE/);
    assert.equal(calls, 2);
  });
});
