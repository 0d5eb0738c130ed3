// HTTPS registries with a private CA (issue #2: "custom CA bundles respected"): a TLS front of the
// test's own (a CA and a server certificate made with openssl) before a real distribution
// registry. Extra CAs are trusted on top of the system roots, never instead of them; Docker's
// certs.d layout gives per-registry CAs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { AddressInfo, LookupFunction } from 'node:net';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { promisify } from 'node:util';
import { RegistryPool, registryCertificates } from '../lib/engine/registries.js';
import { OciRelayError } from '../lib/errors.js';
import { RegistryClient } from '../lib/oci/client.js';
import { createAgent, trustedCertificates } from '../lib/oci/transport.js';
import { makeTempDir, pushTestImage, startRegistry, tarOf, type PushedImage, type RunningRegistry } from './support/index.js';

const exec = promisify(execFile);
const HOST = 'registry.ocirelay.test';

let registry: RunningRegistry;
let front: Server;
let port: number;
let caPem: string;
let dir: string;
let image: PushedImage;

/** Every name resolves to 127.0.0.1: the test's stand-in for DNS (tests bind loopback only). */
const toLoopback: LookupFunction = (_hostname, options, callback) => {
  if ((options as { all?: boolean }).all) (callback as (err: null, addresses: Array<{ address: string; family: number }>) => void)(null, [{ address: '127.0.0.1', family: 4 }]);
  else callback(null, '127.0.0.1', 4);
};

before(async () => {
  dir = makeTempDir('tls');
  const openssl = (args: string[]) => exec('openssl', args, { cwd: dir });
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '30', '-subj', '/CN=ocirelay test CA']);
  await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${HOST}`]);
  await writeFile(join(dir, 'san.ext'), `subjectAltName=DNS:${HOST}\n`);
  await openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '30', '-extfile', 'san.ext']);
  caPem = await readFile(join(dir, 'ca.pem'), 'utf8');
  registry = await startRegistry();
  image = await pushTestImage(registry.host, 'app/tls', 'v1', { layers: [{ bytes: tarOf({ 'etc/tls': 'over TLS\n' }) }] });
  // The TLS front: terminates HTTPS and forwards to the plain-HTTP registry.
  front = createServer({ key: await readFile(join(dir, 'server.key')), cert: await readFile(join(dir, 'server.pem')) }, (req, res) => {
    const upstream = httpRequest({ host: '127.0.0.1', port: registry.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  port = (front.address() as AddressInfo).port;
});

after(async () => {
  front?.closeAllConnections();
  await new Promise<void>((resolve) => (front ? front.close(() => resolve()) : resolve()));
  await registry?.stop();
});

describe('HTTPS with a private CA', () => {
  test('with the CA given, the client speaks HTTPS to the registry and reads exact bytes', async () => {
    const client = new RegistryClient(`${HOST}:${port}`, { dispatcher: createAgent({ ca: caPem, lookup: toLoopback }) });
    try {
      const manifest = await client.repository('app/tls').getManifest('v1');
      assert.ok(manifest.bytes.equals(image.manifest));
      assert.equal(manifest.digest, image.digest);
    } finally {
      await client.close();
    }
  });

  test('without it, the certificate is refused with a clear error and nothing is retried forever', async () => {
    const client = new RegistryClient(`${HOST}:${port}`, { dispatcher: createAgent({ lookup: toLoopback }), retry: { baseDelayMs: 1 } });
    try {
      await assert.rejects(client.repository('app/tls').getManifest('v1'), (err: unknown) => {
        assert.ok(err instanceof OciRelayError, String(err));
        assert.match(err.message, /certificate|CERT/i);
        assert.match(err.message, new RegExp(`https://${HOST.replace(/\./g, '\\.')}:${port}/v2/app/tls/manifests/v1`));
        return true;
      });
    } finally {
      await client.close();
    }
  });

  test('extra CAs are added to the system roots and NODE_EXTRA_CA_CERTS, never put in their place', async () => {
    const trusted = trustedCertificates(caPem, {});
    assert.equal(trusted.length, rootCertificates.length + 1);
    assert.equal(trusted.at(-1), caPem);
    assert.ok(trusted.includes(rootCertificates[0] as string));
    const extra = join(dir, 'extra.pem');
    await writeFile(extra, caPem);
    assert.equal(trustedCertificates([caPem], { NODE_EXTRA_CA_CERTS: extra }).length, rootCertificates.length + 2);
  });

  test("Docker's certs.d layout: <dir>/<host:port>/*.crt is trusted for that registry only", async () => {
    const certsDir = join(dir, 'certs.d');
    mkdirSync(join(certsDir, `${HOST}:${port}`), { recursive: true });
    await writeFile(join(certsDir, `${HOST}:${port}`, 'ca.crt'), caPem);
    await writeFile(join(certsDir, `${HOST}:${port}`, 'client.key'), 'not a certificate');
    assert.deepEqual(registryCertificates(`${HOST}:${port}`, [certsDir, join(dir, 'missing')]), [caPem]);
    assert.deepEqual(registryCertificates('other.example:443', [certsDir]), []);
    const pool = new RegistryPool({ certsDirectories: [certsDir] });
    try {
      assert.deepEqual(pool.get(`${HOST}:${port}`).options.ca, [caPem]);
      assert.equal(pool.get('other.example:443').options.ca, undefined);
    } finally {
      await pool.close();
    }
  });
});
