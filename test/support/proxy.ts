// A programmable HTTP reverse proxy in front of a real server (fault injection, request counting,
// wrong bytes, redirects), and a tiny scripted HTTP server.
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ProxiedRequest {
  method: string;
  /** path + query */
  path: string;
  headers: IncomingHttpHeaders;
  /** Position in `requests` (0-based, counted since start or the last reset()). */
  index: number;
}

export type Intercept =
  | undefined // pass through unchanged
  | { status: number; headers?: Record<string, string>; body?: string | Buffer } // answer directly
  | { transformResponseBody: (body: Buffer) => Buffer } // forward, rewrite the body (Content-Length fixed)
  | { rewriteResponseHeaders: (headers: Record<string, string>) => Record<string, string> }
  | { resetAfterResponseBytes: number } // forward, send headers + that many body bytes, destroy
  | { resetRequest: true }; // destroy the client socket without answering

export interface RunningProxy {
  url: string;
  host: string;
  port: number;
  /** Every request seen, in order. */
  requests: ProxiedRequest[];
  /** Settable at any time. */
  intercept: (req: ProxiedRequest) => Intercept | Promise<Intercept>;
  /** Clears `requests` (indexes restart at 0). */
  reset(): void;
  stop(): Promise<void>;
}

// Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business on each side. `expect` is
// dropped because the proxy's server side already answered the 100-continue.
const HOP_BY_HOP_REQUEST = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'upgrade', 'expect',
]);
const HOP_BY_HOP_RESPONSE = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'te', 'trailer', 'upgrade', 'transfer-encoding',
]);

function flattenHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** Listens on a free port of 127.0.0.1 (tests bind loopback only); resolves with the port. */
export async function listenOnLoopback(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Closes a server and every connection it holds (keep-alive ones included). */
export function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export async function startProxy(
  target: string,
  options: { intercept?: RunningProxy['intercept'] } = {},
): Promise<RunningProxy> {
  const targetUrl = new URL(target);
  if (targetUrl.protocol !== 'http:') throw new Error(`proxy target must be http: ${target}`);
  const targetOrigin = targetUrl.origin;
  const targetHost = targetUrl.host;
  const agent = new Agent({ keepAlive: true });
  const requests: ProxiedRequest[] = [];
  let proxyOrigin = '';

  const rewriteLocation = (value: string): string =>
    value.toLowerCase().startsWith(targetOrigin.toLowerCase()) &&
    (value.length === targetOrigin.length || '/?#'.includes(value.charAt(targetOrigin.length)))
      ? proxyOrigin + value.slice(targetOrigin.length)
      : value;

  const responseHeaders = (upstream: IncomingMessage): OutgoingHttpHeaders => {
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(upstream.headers)) {
      if (value === undefined || HOP_BY_HOP_RESPONSE.has(name)) continue;
      headers[name] = name === 'location' && typeof value === 'string' ? rewriteLocation(value) : value;
    }
    return headers;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, onResponse: (upstream: IncomingMessage) => void): void => {
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined && !HOP_BY_HOP_REQUEST.has(name)) headers[name] = value;
    }
    headers['host'] = targetHost;
    const upstreamReq = httpRequest({
      protocol: targetUrl.protocol,
      hostname: targetUrl.hostname,
      port: targetUrl.port,
      method: req.method,
      path: req.url,
      headers,
      agent,
    });
    upstreamReq.on('response', onResponse);
    upstreamReq.on('error', (err) => {
      if (!res.headersSent) {
        const body = `proxy: upstream error: ${errorText(err)}`;
        res.writeHead(502, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else {
        res.destroy(err);
      }
    });
    // The client went away (or we reset it): abandon the upstream exchange too.
    res.on('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    req.pipe(upstreamReq);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const seen: ProxiedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers: req.headers,
      index: requests.length,
    };
    requests.push(seen);

    let action: Intercept;
    try {
      action = await proxy.intercept(seen);
    } catch (err) {
      req.resume();
      const body = `proxy: intercept threw: ${errorText(err)}`;
      res.writeHead(500, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }

    if (action === undefined) {
      forward(req, res, (upstream) => {
        res.writeHead(upstream.statusCode ?? 502, upstream.statusMessage, responseHeaders(upstream));
        upstream.pipe(res);
        upstream.on('error', (err) => res.destroy(err));
      });
      return;
    }

    if ('resetRequest' in action) {
      req.socket.destroy();
      return;
    }

    if ('status' in action) {
      req.resume();
      const body = action.body === undefined ? Buffer.alloc(0) : Buffer.from(action.body);
      const headers: OutgoingHttpHeaders = { ...action.headers };
      const hasLength = Object.keys(headers).some((h) => h.toLowerCase() === 'content-length');
      if (!hasLength) headers['content-length'] = body.length;
      res.writeHead(action.status, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }

    if ('transformResponseBody' in action) {
      const transform = action.transformResponseBody;
      forward(req, res, (upstream) => {
        const chunks: Buffer[] = [];
        upstream.on('data', (chunk: Buffer) => chunks.push(chunk));
        upstream.on('error', (err) => res.destroy(err));
        upstream.on('end', () => {
          let body: Buffer;
          try {
            body = transform(Buffer.concat(chunks));
          } catch (err) {
            res.destroy(err as Error);
            return;
          }
          const headers = responseHeaders(upstream);
          if (req.method !== 'HEAD') headers['content-length'] = body.length;
          res.writeHead(upstream.statusCode ?? 502, upstream.statusMessage, headers);
          res.end(req.method === 'HEAD' ? undefined : body);
        });
      });
      return;
    }

    if ('rewriteResponseHeaders' in action) {
      const rewrite = action.rewriteResponseHeaders;
      forward(req, res, (upstream) => {
        let headers: Record<string, string>;
        try {
          headers = rewrite(flattenHeaders(responseHeaders(upstream) as IncomingHttpHeaders));
        } catch (err) {
          upstream.resume();
          res.destroy(err as Error);
          return;
        }
        res.writeHead(upstream.statusCode ?? 502, upstream.statusMessage, headers);
        upstream.pipe(res);
        upstream.on('error', (err) => res.destroy(err));
      });
      return;
    }

    if ('resetAfterResponseBytes' in action) {
      const limit = Math.max(0, action.resetAfterResponseBytes);
      forward(req, res, (upstream) => {
        res.writeHead(upstream.statusCode ?? 502, upstream.statusMessage, responseHeaders(upstream));
        const socket: Socket = res.socket ?? req.socket;
        let sent = 0;
        let done = false;
        const kill = (): void => {
          if (done) return;
          done = true;
          upstream.destroy();
          socket.destroy();
        };
        if (limit === 0) {
          res.flushHeaders();
          // flushHeaders queues the header bytes; destroy once they have been handed to the kernel
          socket.write('', () => kill());
          return;
        }
        upstream.on('data', (chunk: Buffer) => {
          if (done) return;
          const room = limit - sent;
          const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
          sent += part.length;
          if (sent >= limit) {
            upstream.pause();
            res.write(part, () => kill());
          } else {
            res.write(part);
          }
        });
        // Body shorter than the limit: everything was sent, still no clean end.
        upstream.on('end', () => {
          if (!done) res.write('', () => kill());
        });
        upstream.on('error', () => kill());
      });
      return;
    }

    req.resume();
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end('proxy: unknown intercept');
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`proxy: ${errorText(err)}`);
      } else {
        res.destroy();
      }
    });
  });

  let stopping: Promise<void> | undefined;
  const proxy: RunningProxy = {
    url: '',
    host: '',
    port: 0,
    requests,
    intercept: options.intercept ?? (() => undefined),
    reset() {
      requests.length = 0;
    },
    stop() {
      stopping ??= (async () => {
        await closeServer(server);
        agent.destroy();
      })();
      return stopping;
    },
  };

  const port = await listenOnLoopback(server);
  proxy.port = port;
  proxy.host = `127.0.0.1:${port}`;
  proxy.url = `http://127.0.0.1:${port}`;
  proxyOrigin = proxy.url;
  return proxy;
}

// ---------------------------------------------------------------------------------------------

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  index: number;
}

export interface RunningHttpServer {
  url: string;
  host: string;
  port: number;
  requests: RecordedRequest[];
  stop(): Promise<void>;
}

/**
 * A tiny scripted server: `handler` answers every request (an exception answers 500). Requests
 * are recorded before the handler runs; use readBody() in the handler to get the body.
 */
export async function startHttpServer(
  handler: (req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest) => void | Promise<void>,
): Promise<RunningHttpServer> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const recorded: RecordedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers: req.headers,
      index: requests.length,
    };
    requests.push(recorded);
    Promise.resolve()
      .then(() => handler(req, res, recorded))
      .catch((err: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`handler threw: ${errorText(err)}`);
        } else {
          res.destroy();
        }
      });
  });
  const port = await listenOnLoopback(server);
  let stopping: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    requests,
    stop() {
      stopping ??= closeServer(server);
      return stopping;
    },
  };
}

/** Reads a whole request (or response) body. */
export async function readBody(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}
