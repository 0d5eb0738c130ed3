// The destination policy (issue #6): a registry named by a rule may not steer ocirelay — by a blob
// redirect or by its token realm — to a metadata endpoint (in any IPv4 or IPv6 spelling), a
// private address or a host no rule names. Nothing is sent there and the copy fails with
// ERR_FORBIDDEN; host names are judged by the addresses they resolve to when the connection is
// made. Loopback registries the rules name keep working (these tests run on 127.0.0.1).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { namedHosts, rulesPool } from '../lib/cli/runtime.js';
import { copyImage } from '../lib/engine/copy.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { anonymous } from '../lib/oci/credentials.js';
import { destinationPolicy, isLinkLocalOrMetadata, isPrivateAddress, metadataGuard } from '../lib/oci/destination.js';
import type { RequestEvent } from '../lib/oci/transport.js';
import { parseConfig } from '../lib/rules/config.js';
import { auditRegistry, inspectRaw, pushTestImage, startHttpServer, startProxy, startRegistry, tarOf, type PushedImage, type RunningHttpServer, type RunningProxy, type RunningRegistry } from './support/index.js';

let src: RunningRegistry;
let dst: RunningRegistry;
/** The named source: a proxy in front of `src` whose blob GETs can be redirected. */
let proxy: RunningProxy;
/** A named source whose every /v2/ request is challenged with `realm` (a token realm to refuse). */
let realmRegistry: RunningHttpServer;
let realm = '';
/** A host no rule names: it must never be contacted. */
let canary: RunningHttpServer;
let image: PushedImage;

function rules(): ReturnType<typeof parseConfig> {
  return parseConfig(JSON.stringify({ rules: [{ from: `${proxy.host}/team`, to: `${dst.host}/mirror` }, { from: `${realmRegistry.host}/team`, to: `${dst.host}/realm` }] }));
}

/** The pool `serve` and `sync` use (rulesPool), recording every exchange it attempts. */
function pool(events: RequestEvent[], extra: Partial<RegistryPool['options']> = {}): RegistryPool {
  return new RegistryPool({ ...rulesPool(rules(), anonymous).options, onRequest: (e) => events.push(e), ...extra });
}

/** Copies `source` to a repository of its own in the target (whose blobs no earlier copy left there); the copy must be refused. */
async function refused(registries: RegistryPool, source: string, repository: string): Promise<Error & { code?: string }> {
  const err = await copyImage({ source, target: `${dst.host}/mirror/${repository}:v1` }, { registries }).then(
    () => assert.fail('the copy succeeded'),
    (e: Error & { code?: string }) => e,
  );
  assert.equal(err.code, 'ERR_FORBIDDEN', err.message);
  return err;
}

before(async () => {
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  canary = await startHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"canary"}');
  });
  realmRegistry = await startHttpServer((req, res) => {
    req.resume();
    res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="realm-test"`, 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
  });
  proxy = await startProxy(src.url);
  image = await pushTestImage(src.host, 'team/app', 'v1', { layers: [{ bytes: tarOf({ app: randomBytes(3000) }) }] });
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop(), proxy?.stop(), canary?.stop(), realmRegistry?.stop()]);
});

describe('a registry named by a rule cannot redirect a blob GET where it should not', () => {
  const targets: Array<[string, () => string, RegExp]> = [
    ['the metadata address', () => 'http://169.254.169.254/latest/meta-data/iam/security-credentials/', /169\.254\.169\.254.*link-local or metadata/],
    ['the metadata address, IPv4-mapped IPv6', () => 'http://[::ffff:169.254.169.254]/latest/meta-data/', /link-local or metadata/],
    ['the metadata address, IPv4-mapped IPv6 in hex', () => 'http://[::ffff:a9fe:a9fe]/latest/meta-data/', /link-local or metadata/],
    ['the metadata address, IPv4-compatible IPv6', () => 'http://[::a9fe:a9fe]/latest/meta-data/', /link-local or metadata/],
    ['the metadata address, NAT64', () => 'http://[64:ff9b::a9fe:a9fe]/latest/meta-data/', /link-local or metadata/],
    ['the metadata address as one number', () => 'http://2852039166/latest/meta-data/', /169\.254\.169\.254.*link-local or metadata/],
    ['the EC2 IPv6 metadata address', () => 'http://[fd00:ec2::254]/latest/meta-data/', /link-local or metadata/],
    ['the GCP metadata name', () => 'http://metadata.google.internal./computeMetadata/v1/', /metadata endpoint/],
    ['a private address', () => 'http://10.0.0.1/blob', /10\.0\.0\.1 is a private address/],
    ['a private address, IPv4-mapped IPv6', () => 'http://[::ffff:10.0.0.1]/blob', /private address/],
    ['a shared (CGNAT) address', () => 'http://100.64.0.1/blob', /private address/],
    ['an unnamed host (another port of a named loopback address)', () => `${canary.url}/blob`, /private address and the host is not named/],
    ['an unnamed host by name', () => `http://localhost:${canary.port}/blob`, /localhost:\d+\/blob \(redirect\): (127\.0\.0\.1|::1) is a private address/],
  ];
  for (const [index, [name, location, message]] of targets.entries()) {
    test(name, async () => {
      const events: RequestEvent[] = [];
      const registries = pool(events);
      canary.requests.length = 0;
      const to = location();
      proxy.intercept = (req) => (req.method === 'GET' && req.path.includes('/blobs/sha256:') ? { status: 307, headers: { location: to } } : undefined);
      try {
        const err = await refused(registries, `${proxy.host}/team/app:v1`, `redirected-${index}`);
        assert.match(err.message, message);
        assert.match(err.message, /refused to (contact|connect)/);
      } finally {
        proxy.intercept = () => undefined;
        await registries.close();
      }
      const target = new URL(to);
      const reached = events.filter((e) => e.url.startsWith(target.origin) && !e.error);
      assert.deepEqual(reached, [], 'no exchange with the forbidden host');
      assert.equal(canary.requests.length, 0, 'the unnamed host saw nothing');
      assert.equal((await fetch(`${dst.url}/v2/mirror/redirected-${index}/manifests/v1`, { method: 'HEAD' })).status, 404, 'nothing was tagged');
      assert.deepEqual(await auditRegistry(dst.dataDir), []);
    });
  }

  test('a redirect to a host the rules name is followed, and the copy is byte-identical', async () => {
    const events: RequestEvent[] = [];
    // The source registry itself, by its own address, is named too.
    const config = parseConfig(JSON.stringify({ rules: [{ from: `${proxy.host}/team`, to: `${dst.host}/mirror` }, { from: `${src.host}/other`, to: `${dst.host}/other` }] }));
    const registries = new RegistryPool({ ...rulesPool(config, anonymous).options, onRequest: (e) => events.push(e) });
    proxy.intercept = (req) => (req.method === 'GET' && req.path.includes('/blobs/sha256:') ? { status: 307, headers: { location: `${src.url}${req.path}` } } : undefined);
    try {
      await copyImage({ source: `${proxy.host}/team/app:v1`, target: `${dst.host}/mirror/app:v1` }, { registries });
    } finally {
      proxy.intercept = () => undefined;
      await registries.close();
    }
    assert.ok(events.some((e) => e.url.startsWith(src.url) && e.status === 200), 'the blobs came from the redirect');
    assert.ok((await inspectRaw(`${dst.host}/mirror/app:v1`)).equals(image.manifest));
  });
});

describe('a registry named by a rule cannot point its token realm where it should not', () => {
  const realms: Array<[string, () => string]> = [
    ['the metadata address', () => 'http://169.254.169.254/latest/api/token'],
    ['the metadata address, IPv4-mapped IPv6', () => 'http://[::ffff:169.254.169.254]/token'],
    ['the metadata address, IPv4-mapped IPv6 in hex', () => 'http://[::ffff:a9fe:a9fe]/token'],
    ['a private address', () => 'http://192.168.1.1/token'],
    ['a private address, IPv4-mapped IPv6', () => 'http://[::ffff:c0a8:101]/token'],
    ['an unnamed host', () => `${canary.url}/token`],
    ['an unnamed host by name', () => `http://localhost:${canary.port}/token`],
  ];
  for (const [index, [name, url]] of realms.entries()) {
    test(name, async () => {
      realm = url();
      const events: RequestEvent[] = [];
      const registries = pool(events);
      canary.requests.length = 0;
      try {
        const err = await refused(registries, `${realmRegistry.host}/team/app:v1`, `realm-${index}`);
        assert.match(err.message, /refused to (contact|connect)/);
        assert.doesNotMatch(err.message, /token request .* failed/, 'a refusal, not an authentication failure');
      } finally {
        await registries.close();
      }
      assert.deepEqual(events.filter((e) => e.operation === 'GET token' && !e.error), [], 'no token request was made');
      assert.equal(events.filter((e) => e.operation === 'GET token').length <= 1, true, 'a refusal is not retried');
      assert.equal(canary.requests.length, 0, 'the unnamed host saw nothing');
    });
  }
});

describe('names are judged by the addresses the connection uses', () => {
  test('a name that resolves to a public address for the check and to a private one for the connection (DNS rebinding) is refused', async () => {
    const lookups: string[] = [];
    // A rebinding DNS server: the first answer is public, every later one loopback.
    const guard = destinationPolicy({ namedHosts: namedHosts(rules()), resolve: async (hostname) => (lookups.push(hostname), lookups.length === 1 ? ['93.184.216.34'] : ['127.0.0.1']) });
    const registries = new RegistryPool({ credentials: anonymous, guard });
    // Only the layer's GET is redirected: one connection to make.
    proxy.intercept = (req) => (req.method === 'GET' && req.path.endsWith(`/blobs/${image.layers[0]?.digest}`) ? { status: 307, headers: { location: `http://rebind.example:${canary.port}/blob` } } : undefined);
    canary.requests.length = 0;
    try {
      const err = await refused(registries, `${proxy.host}/team/app:v1`, 'rebind');
      assert.match(err.message, /refused to connect to rebind\.example: 127\.0\.0\.1 is a private address/);
    } finally {
      proxy.intercept = () => undefined;
      await registries.close();
    }
    assert.deepEqual(lookups, ['rebind.example', 'rebind.example'], 'checked, then judged again on the addresses the connection uses');
    assert.equal(canary.requests.length, 0, 'nothing reached the rebound address');
  });

  test('the CLI (no rules) may be redirected to its own network, but not to a metadata address in any spelling', async () => {
    const events: RequestEvent[] = [];
    const registries = new RegistryPool({ onRequest: (e) => events.push(e) });
    try {
      for (const location of ['http://[::ffff:a9fe:a9fe]/x', 'http://[::ffff:169.254.169.254]/x', 'http://[fd00:ec2::254]/x']) {
        proxy.intercept = (req) => (req.method === 'GET' && req.path.includes('/blobs/sha256:') ? { status: 307, headers: { location } } : undefined);
        const err = await refused(registries, `${proxy.host}/team/app:v1`, 'cli');
        assert.match(err.message, /link-local or metadata/);
      }
    } finally {
      proxy.intercept = () => undefined;
      await registries.close();
    }
    assert.equal(await metadataGuard(new URL(`${canary.url}/x`), 'redirect'), undefined, 'a private address is the CLI user\'s own business');
  });
});

describe('address classes', () => {
  const metadata = ['169.254.169.254', '169.254.0.1', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe', '[::ffff:a9fe:a9fe]', '::a9fe:a9fe', '64:ff9b::a9fe:a9fe', '2002:a9fe:a9fe::1', 'fd00:ec2::254', 'fe80::1', 'fe80::1%eth0', 'febf::1', '100.100.100.200'];
  const nonPublic = ['10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.0.1', '100.64.0.1', '100.127.255.255', '127.0.0.1', '127.8.9.10', '0.0.0.0', '0.1.2.3', '224.0.0.1', '255.255.255.255', '::', '::1', 'fc00::1', 'fd12:3456::1', 'ff02::1', '::ffff:10.0.0.1', '::ffff:a00:1', '::ffff:7f00:1', '0:0:0:0:0:ffff:c0a8:101', '64:ff9b::a00:1', '2002:c0a8:101::1'];
  const publicAddresses = ['8.8.8.8', '93.184.216.34', '172.32.0.1', '100.128.0.1', '169.253.1.1', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808', 'fec0::1'];
  test('link-local and metadata, in every spelling', () => {
    for (const ip of metadata) assert.equal(isLinkLocalOrMetadata(ip), true, ip);
  });
  test('private, loopback and other non-public addresses, in every spelling', () => {
    for (const ip of nonPublic) assert.equal(isPrivateAddress(ip), true, ip);
    for (const ip of nonPublic) assert.equal(isLinkLocalOrMetadata(ip), false, ip);
  });
  test('public addresses pass', () => {
    for (const ip of publicAddresses) assert.equal(isPrivateAddress(ip) || isLinkLocalOrMetadata(ip), false, ip);
  });
  test('a named host:port is that port only; a bare name is ports 80 and 443', async () => {
    const guard = destinationPolicy({ namedHosts: ['registry.internal:5000', 'mirror.internal'], resolve: async () => ['10.0.0.5'] });
    const ok = async (url: string): Promise<boolean> => (async () => guard(new URL(url), 'registry'))().then(() => true, () => false);
    assert.equal(await ok('http://registry.internal:5000/v2/'), true);
    assert.equal(await ok('http://registry.internal:6379/'), false);
    assert.equal(await ok('https://mirror.internal/v2/'), true);
    assert.equal(await ok('http://mirror.internal/v2/'), true);
    assert.equal(await ok('https://mirror.internal:8443/v2/'), false);
    assert.equal(await ok('https://elsewhere.example/v2/'), false);
  });
});
