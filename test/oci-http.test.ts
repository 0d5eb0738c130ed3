// The transport's HTTP layer (lib/oci/undici.ts) and the hand-written checks that replaced a
// schema library on the CLI's start-up path: connections survive HEADs, undici's index (fetch,
// WebSocket, caches) is never loaded, token responses and Docker configs are judged as before.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo, Socket } from 'node:net';
import { parseTokenResponse } from '../lib/oci/auth.js';
import { dockerConfigProblem } from '../lib/oci/credentials.js';
import { createAgent } from '../lib/oci/transport.js';
import { request } from '../lib/oci/undici.js';

async function withServer(handler: (req: IncomingMessage, res: ServerResponse) => void, run: (origin: string, sockets: Socket[]) => Promise<void>): Promise<void> {
  const sockets: Socket[] = [];
  const server = createServer({ keepAliveTimeout: 30_000 }, handler);
  server.on('connection', (s: Socket) => sockets.push(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, sockets);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('transport dispatcher', () => {
  test('a HEAD costs its own socket, never the pool: later requests reuse kept-alive connections', async () => {
    await withServer(
      (req, res) => {
        res.writeHead(200, { 'content-length': '2', 'content-type': 'text/plain' });
        res.end(req.method === 'HEAD' ? undefined : 'ok');
      },
      async (origin, sockets) => {
        // undici's own Agent drops an origin's pool when its last socket closes, as the socket of
        // a HEAD does: every one of these eight requests then got a connection of its own.
        const agent = createAgent({ connections: 2 });
        try {
          for (const method of ['HEAD', 'GET', 'GET', 'GET', 'HEAD', 'GET', 'GET', 'GET'] as const) {
            const res = await request(new URL('/v2/', origin), { dispatcher: agent, method });
            await res.body.dump();
            assert.equal(res.statusCode, 200);
          }
          assert.ok(sockets.length <= 4, `${sockets.length} connections for 6 GETs and 2 HEADs over a pool of 2`);
        } finally {
          await agent.close();
        }
      },
    );
  });

  test('close() waits for requests in flight, then refuses new ones', async () => {
    await withServer(
      (_req, res) => {
        setTimeout(() => res.end('late'), 50);
      },
      async (origin) => {
        const agent = createAgent();
        const pending = request(new URL('/slow', origin), { dispatcher: agent }).then(async (res) => (await res.body.text()) as string);
        await new Promise((r) => setTimeout(r, 10));
        const closed = agent.close();
        assert.equal(await pending, 'late');
        await closed;
        assert.throws(() => agent.dispatch({ origin, path: '/', method: 'GET' }, {}), /closed/);
      },
    );
  });

  test("undici's index (fetch, WebSocket, caches, mocks) is not loaded by the transport", () => {
    const cache = createRequire(import.meta.url).cache;
    const loaded = Object.keys(cache).filter((path) => /node_modules\/undici\//.test(path));
    assert.ok(loaded.length > 0, 'the dispatcher files were loaded through require');
    assert.deepEqual(loaded.filter((path) => /undici\/index\.js$|\/lib\/web\/|\/lib\/mock\/|\/lib\/cache\//.test(path)), []);
  });
});

describe('token responses (parseTokenResponse)', () => {
  test('token and/or access_token, optional expires_in and issued_at, other fields ignored', () => {
    assert.deepEqual(parseTokenResponse({ token: 't' }), { token: 't' });
    assert.deepEqual(parseTokenResponse({ access_token: 'a', expires_in: 300, issued_at: '2024-01-01T00:00:00Z', refresh_token: 'r' }), { access_token: 'a', expires_in: 300, issued_at: '2024-01-01T00:00:00Z', refresh_token: 'r' });
  });

  for (const [name, value] of [
    ['neither token nor access_token', { expires_in: 60 }],
    ['an empty token', { token: '' }],
    ['a token that is not a string', { token: 42 }],
    ['a zero expires_in', { token: 't', expires_in: 0 }],
    ['a string expires_in', { token: 't', expires_in: '60' }],
    ['an issued_at that is not a string', { token: 't', issued_at: 1 }],
    ['an array', [{ token: 't' }]],
    ['null', null],
  ] as const) {
    test(`refused: ${name}`, () => assert.equal(parseTokenResponse(value), undefined));
  }
});

describe('Docker config shape (dockerConfigProblem)', () => {
  test('the fields ocirelay reads have their types; everything else is left alone', () => {
    assert.equal(dockerConfigProblem({}), undefined);
    assert.equal(dockerConfigProblem({ auths: { 'r.example': { auth: 'dTpw', email: 'x@example.com', extra: 1 } }, credHelpers: { 'a.example': 'pass' }, credsStore: 'desktop', psFormat: 'table', experimental: true }), undefined);
  });

  for (const [value, problem] of [
    [[], '(top level) expected an object'],
    [{ auths: [] }, 'auths expected an object'],
    [{ auths: { 'r.example': 'dTpw' } }, 'auths.r.example expected an object'],
    [{ auths: { 'r.example': { auth: 1 } } }, 'auths.r.example.auth expected a string'],
    [{ auths: { 'r.example': { identitytoken: null } } }, 'auths.r.example.identitytoken expected a string'],
    [{ credHelpers: { 'a.example': true } }, 'credHelpers.a.example expected a string'],
    [{ credsStore: 1 }, 'credsStore expected a string'],
  ] as const) {
    test(`refused: ${problem}`, () => assert.equal(dockerConfigProblem(value), problem));
  }
});
