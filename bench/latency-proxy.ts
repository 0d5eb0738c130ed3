// The WAN-like setting: a reverse proxy of the bench's own in front of a registry that holds every
// request for `delayMs` before forwarding it (a registry across a continent costs about one round
// trip per request), then streams both bodies through untouched. It also counts requests, for
// the no-op target and for profiles.
//
// The Host header is passed on as the client sent it, so the registry builds its Location URLs
// (upload sessions) with the proxy's address and the client comes back through the proxy.
//
// (test/support/proxy.ts is a fault-injecting proxy without delays; this one is small and fast on
// purpose, since every benchmarked byte of the WAN-like setting flows through two of them.)
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import { closeServer, listenOnLoopback } from '../test/support/proxy.js';

export interface SeenRequest {
  method: string;
  path: string;
  status?: number;
  /** Milliseconds since the proxy started: request seen, and response finished. */
  at: number;
  done?: number;
}

export interface LatencyProxy {
  url: string;
  host: string;
  requests: SeenRequest[];
  /** TCP connections accepted. */
  connections: number;
  /** Connections on which the client spoke something other than HTTP (skopeo's HTTPS probe). */
  badConnections: number;
  stop(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect', 'transfer-encoding']);

export async function startLatencyProxy(target: string, delayMs: number): Promise<LatencyProxy> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity, keepAliveMsecs: 30_000 });
  const requests: SeenRequest[] = [];
  const started = performance.now();
  const proxy: LatencyProxy = { url: '', host: '', requests, connections: 0, badConnections: 0, stop: async () => undefined };

  const forward = (req: IncomingMessage, res: ServerResponse, seen: SeenRequest): void => {
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
    const out = httpRequest({ hostname: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent });
    out.on('response', (answer) => {
      seen.status = answer.statusCode;
      const back: OutgoingHttpHeaders = {};
      for (const [name, value] of Object.entries(answer.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) back[name] = value;
      res.writeHead(answer.statusCode ?? 502, back);
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    out.on('error', (err) => {
      if (res.headersSent) res.destroy();
      else {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`latency proxy: ${err.message}`);
      }
    });
    res.on('close', () => {
      if (!res.writableFinished) out.destroy();
    });
    req.pipe(out);
  };

  const server: Server = createServer({ keepAliveTimeout: 30_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
    const seen: SeenRequest = { method: req.method ?? 'GET', path: req.url ?? '/', at: performance.now() - started };
    requests.push(seen);
    res.once('finish', () => {
      seen.done = performance.now() - started;
    });
    if (delayMs > 0) setTimeout(() => forward(req, res, seen), delayMs);
    else forward(req, res, seen);
  });
  server.on('connection', () => proxy.connections++);
  server.on('clientError', (_err, socket) => {
    proxy.badConnections++;
    socket.destroy();
  });
  const port = await listenOnLoopback(server);
  proxy.url = `http://127.0.0.1:${port}`;
  proxy.host = `127.0.0.1:${port}`;
  let stopping: Promise<void> | undefined;
  proxy.stop = () => {
    if (!stopping) {
      agent.destroy();
      stopping = closeServer(server);
    }
    return stopping;
  };
  return proxy;
}

/** Requests by kind (`HEAD manifest`, `PUT blob`, `POST upload`, ...), for the report. */
export function requestKinds(requests: readonly SeenRequest[]): Record<string, number> {
  const kinds: Record<string, number> = {};
  for (const r of requests) {
    const path = r.path.split('?')[0] ?? '';
    const what = path === '/v2/' || path === '/v2' ? 'ping' : /\/blobs\/uploads\//.test(path) ? 'upload' : /\/blobs\//.test(path) ? 'blob' : /\/manifests\//.test(path) ? 'manifest' : /\/tags\/list/.test(path) ? 'tags' : /\/_catalog/.test(path) ? 'catalog' : 'other';
    const key = `${r.method} ${what}`;
    kinds[key] = (kinds[key] ?? 0) + 1;
  }
  return kinds;
}
