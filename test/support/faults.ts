// A seeded fault-injecting reverse proxy in front of a real server (a registry, on either side of
// a copy). About `rate` of the requests misbehave, each in one of these ways:
//
//   unavailable     503 answered by the proxy (the registry never sees the request)
//   throttled       429 with Retry-After (seconds, `retryAfterSeconds`) answered by the proxy
//   reset-request   the connection is reset at a random byte offset of a PUT/PATCH/POST body
//   reset-response  a GET's response is reset at a random byte offset of its body
//   truncate        a GET's response body stops at a random offset with a clean close (FIN)
//   stall           a GET's response body stops at a random offset and the connection stays
//                   open, silent, until the client's idle timeout gives up on it
//   wrong-length    a GET's Content-Length lies: longer than the body (then a clean close), or,
//                   for blob GETs, shorter (the client receives a complete-looking short body)
//
// Decisions are reproducible: each request gets its own random stream, derived from the seed and
// a key that names the request by what it is (method, path without session ids or opaque state,
// Range / Content-Range / Content-Length) and by how many times that key was seen before. So the
// same seed injects the same faults into the same logical requests, whatever the interleaving of
// concurrent requests. `injected` counts what was injected, per kind; `exchanges` records every
// request with its fault, status and body bytes; `describe()` is the line to print on failure.
//
// Request bodies are stored and forwarded by default (as nginx does unless told otherwise): a
// request cut by a fault never reaches the registry, so the registry's upload session stays where
// it was. With `bufferRequests: false` bodies stream through and a cut request reaches the
// registry partly.
import { createHash } from 'node:crypto';
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { closeServer, listenOnLoopback } from './proxy.js';

export const FAULT_KINDS = ['unavailable', 'throttled', 'reset-request', 'reset-response', 'truncate', 'stall', 'wrong-length'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface FaultRequest {
  method: string;
  /** path + query, as received. */
  path: string;
  headers: IncomingHttpHeaders;
  /** Position among all requests since start or reset() (0-based). */
  index: number;
  /** The stable name of this request used to seed its decisions (see the header comment). */
  key: string;
}

export interface Fault {
  kind: FaultKind;
  /** Byte offset of a cut, a stall or the lying Content-Length (body-shaped faults). */
  at?: number;
  /** wrong-length: the Content-Length sent. */
  declared?: number;
}

export interface Exchange extends FaultRequest {
  /** The fault decided for this request (not every decided fault can be applied: see `applied`). */
  fault?: Fault;
  /** False when the decided fault did not fit the answer (a response-body fault on an empty body). */
  applied: boolean;
  /** Request body bytes received from the client. */
  requestBytes: number;
  /** Response body bytes sent to the client. */
  responseBytes: number;
  /** Status sent to the client; undefined when the connection was cut before a status. */
  status?: number;
  /** The registry's Location header, when it sent one (an upload session's URL, for one). */
  location?: string;
  /** Shared sequence numbers: when the request arrived and when its answer was complete. */
  arrivedSeq: number;
  answeredSeq?: number;
}

export interface FaultProxyOptions {
  seed: number;
  /** Share of requests that misbehave, 0..1. Default 0.2. */
  rate?: number;
  /** Relative weights of the kinds (default 1 each); weight 0 disables a kind. */
  weights?: Partial<Record<FaultKind, number>>;
  /** Retry-After of a `throttled` answer, in seconds. Default 0. */
  retryAfterSeconds?: number;
  /** Which requests may misbehave. Default: all. */
  eligible?: (req: FaultRequest) => boolean;
  /** Replaces the random decision for a request (undefined: no fault; 'random': decide as usual). */
  decide?: (req: FaultRequest) => Fault | undefined | 'random';
  /** Store-and-forward request bodies. Default true. */
  bufferRequests?: boolean;
  /** Called when a request arrives, before anything is decided. */
  onRequest?: (req: FaultRequest) => void;
  /** Called when an exchange is over: its answer complete, or its connection cut. */
  onAnswered?: (exchange: Exchange) => void;
  /**
   * Awaited before a request is forwarded, with its whole body (empty unless bodies are buffered).
   * A gate, a check at the exact moment a request reaches the registry. A throw answers 500.
   */
  beforeForward?: (req: FaultRequest, body: Buffer) => void | Promise<void>;
}

export interface FaultProxy {
  url: string;
  host: string;
  port: number;
  seed: number;
  /** Settable: 0 turns the faults off. */
  rate: number;
  exchanges: Exchange[];
  injected: Record<FaultKind, number>;
  /** Total of `injected`. */
  readonly faults: number;
  /** Seed, rate and counts, for failure messages. */
  describe(): string;
  /** Clears exchanges, counters and the per-key occurrence counts (decisions start over). */
  reset(): void;
  stop(): Promise<void>;
}

// Hop-by-hop headers (RFC 9110 7.6.1) belong to each connection; `expect` was answered here.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'upgrade', 'expect', 'transfer-encoding']);

const SESSION_ID = /\/blobs\/uploads\/[^/?]+/;
const KEPT_QUERY = ['digest', 'mount', 'from', 'n', 'last'];

/** The request's stable name: what it is, not which session or connection it happened on. */
export function requestKey(method: string, path: string, headers: IncomingHttpHeaders): string {
  const url = new URL(path, 'http://proxy');
  const query = KEPT_QUERY.filter((k) => url.searchParams.has(k)).map((k) => `${k}=${url.searchParams.get(k)}`).join('&');
  const pathname = url.pathname.replace(SESSION_ID, '/blobs/uploads/{session}');
  const extra = [headers['range'], headers['content-range'], method === 'PUT' || method === 'PATCH' ? headers['content-length'] : undefined].filter(Boolean).join(' ');
  return `${method} ${pathname}${query ? `?${query}` : ''}${extra ? ` [${extra}]` : ''}`;
}

/** mulberry32: a small, fast, seeded generator of uniform numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomFor(seed: number, key: string): () => number {
  return seededRandom(createHash('sha256').update(`${seed}|${key}`).digest().readUInt32LE(0));
}

const isBlobGet = (method: string, path: string): boolean => method === 'GET' && /\/blobs\/(sha256|sha512):/.test(path);

export async function startFaultProxy(target: string, options: FaultProxyOptions): Promise<FaultProxy> {
  const targetUrl = new URL(target);
  if (targetUrl.protocol !== 'http:') throw new Error(`fault proxy target must be http: ${target}`);
  const agent = new Agent({ keepAlive: true });
  const buffer = options.bufferRequests ?? true;
  const weights = FAULT_KINDS.map((kind) => [kind, options.weights?.[kind] ?? 1] as const).filter(([, w]) => w > 0);
  const occurrences = new Map<string, number>();
  const injected = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
  const exchanges: Exchange[] = [];
  let seq = 0;

  /** Which kinds can happen to this request at all. */
  const applicable = (req: FaultRequest): FaultKind[] => {
    const kinds: FaultKind[] = ['unavailable', 'throttled'];
    const length = Number(req.headers['content-length'] ?? 0);
    if ((req.method === 'PUT' || req.method === 'PATCH' || req.method === 'POST') && length > 0) kinds.push('reset-request');
    if (req.method === 'GET') kinds.push('reset-response', 'truncate', 'stall', 'wrong-length');
    return kinds;
  };

  const decide = (req: FaultRequest): Fault | undefined => {
    const override = options.decide?.(req);
    if (override !== 'random' && options.decide) return override;
    if (options.eligible && !options.eligible(req)) return undefined;
    const random = randomFor(options.seed, req.key);
    if (random() >= proxy.rate) return undefined;
    const kinds = new Set(applicable(req));
    const candidates = weights.filter(([k]) => kinds.has(k));
    const total = candidates.reduce((n, [, w]) => n + w, 0);
    if (!total) return undefined;
    let pick = random() * total;
    let kind = candidates[0]![0];
    for (const [k, w] of candidates) {
      if (pick < w) {
        kind = k;
        break;
      }
      pick -= w;
    }
    // `at` is a fraction until the body's length is known; resolved where the fault is applied.
    return { kind, at: random() };
  };

  const settle = (exchange: Exchange): void => {
    exchange.answeredSeq = ++seq;
    options.onAnswered?.(exchange);
  };

  const record = (exchange: Exchange, fault: Fault): void => {
    exchange.fault = fault;
    exchange.applied = true;
    injected[fault.kind]++;
  };

  const answer = (res: ServerResponse, exchange: Exchange, status: number, headers: OutgoingHttpHeaders, body: string): void => {
    const bytes = Buffer.from(body);
    res.writeHead(status, { 'content-length': bytes.length, ...headers });
    res.end(exchange.method === 'HEAD' ? undefined : bytes);
    exchange.status = status;
    exchange.responseBytes = exchange.method === 'HEAD' ? 0 : bytes.length;
    settle(exchange);
  };

  const forwardHeaders = (req: IncomingMessage, body?: Buffer): OutgoingHttpHeaders => {
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
    if (body) headers['content-length'] = body.length;
    return headers;
  };

  const responseHeaders = (upstream: IncomingMessage): Record<string, string | string[]> => {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(upstream.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
    return headers;
  };

  /** Applies a response-body fault, or passes the answer through when there is none (or it does not fit). */
  const relay = (req: IncomingMessage, res: ServerResponse, exchange: Exchange, upstream: IncomingMessage, fault: Fault | undefined): void => {
    const status = upstream.statusCode ?? 502;
    const headers = responseHeaders(upstream);
    if (typeof upstream.headers.location === 'string') exchange.location = upstream.headers.location;
    const length = Number(upstream.headers['content-length']);
    const socket: Socket = res.socket ?? req.socket;
    const bodyShaped = fault && ['reset-response', 'truncate', 'stall', 'wrong-length'].includes(fault.kind);
    const fits = bodyShaped && req.method === 'GET' && (status === 200 || status === 206) && Number.isFinite(length) && length > 0;
    if (!fits) {
      res.writeHead(status, upstream.statusMessage, headers);
      upstream.on('data', (chunk: Buffer) => (exchange.responseBytes += chunk.length));
      upstream.pipe(res);
      upstream.on('error', () => res.destroy());
      res.on('finish', () => {
        exchange.status = status;
        settle(exchange);
      });
      return;
    }
    const kind = fault.kind;
    let at = Math.min(length - 1, Math.floor((fault.at ?? 0) * length));
    let close: 'reset' | 'end' | 'stall' | 'complete-then-close';
    let declared = length;
    if (kind === 'reset-response') close = 'reset';
    else if (kind === 'truncate') close = 'end';
    else if (kind === 'stall') close = 'stall';
    else if (isBlobGet(req.method ?? '', req.url ?? '') && (fault.at ?? 0) < 0.5) {
      // Shorter than the body: what the client receives looks complete.
      declared = at;
      close = 'complete-then-close';
    } else {
      declared = length + 1 + Math.floor((fault.at ?? 0) * 1000);
      at = length;
      close = 'end';
    }
    record(exchange, { kind, at, ...(kind === 'wrong-length' ? { declared } : {}) });
    res.writeHead(status, upstream.statusMessage, { ...headers, 'content-length': declared, connection: 'close' });
    exchange.status = status;
    let sent = 0;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      upstream.destroy();
      settle(exchange);
      if (close === 'reset') socket.resetAndDestroy();
      else if (close === 'end' || close === 'complete-then-close') socket.end();
      // 'stall': leave the connection open and silent; the client's idle timeout closes it.
    };
    if (at === 0) {
      res.flushHeaders();
      socket.write('', finish);
      return;
    }
    upstream.on('data', (chunk: Buffer) => {
      if (done) return;
      const part = chunk.subarray(0, Math.max(0, at - sent));
      sent += part.length;
      exchange.responseBytes += part.length;
      if (sent >= at) {
        upstream.pause();
        res.write(part, finish);
      } else {
        res.write(part);
      }
    });
    upstream.on('end', () => res.write('', finish));
    upstream.on('error', () => finish());
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const base = requestKey(method, path, req.headers);
    const n = occurrences.get(base) ?? 0;
    occurrences.set(base, n + 1);
    const exchange: Exchange = { method, path, headers: req.headers, index: exchanges.length, key: `${base} #${n}`, applied: false, requestBytes: 0, responseBytes: 0, arrivedSeq: ++seq };
    exchanges.push(exchange);
    options.onRequest?.(exchange);
    // Bytes are counted where the body is read (never before: a listener would start the flow).
    const count = (chunk: Buffer): void => {
      exchange.requestBytes += chunk.length;
    };
    const fault = decide(exchange);
    if (fault) exchange.fault = fault;

    if (fault?.kind === 'unavailable' || fault?.kind === 'throttled') {
      record(exchange, fault);
      req.on('data', count);
      req.resume();
      const throttled = fault.kind === 'throttled';
      const body = JSON.stringify({ errors: [{ code: throttled ? 'TOOMANYREQUESTS' : 'UNAVAILABLE', message: throttled ? 'slow down (fault proxy)' : 'unavailable (fault proxy)' }] });
      answer(res, exchange, throttled ? 429 : 503, { 'content-type': 'application/json', ...(throttled ? { 'retry-after': String(options.retryAfterSeconds ?? 0) } : {}) }, body);
      return;
    }

    const length = Number(req.headers['content-length'] ?? 0);
    const cut = fault?.kind === 'reset-request' && length > 0 ? Math.min(length - 1, Math.floor((fault.at ?? 0) * length)) : undefined;
    if (cut !== undefined) record(exchange, { kind: 'reset-request', at: cut });

    let body: Buffer | undefined;
    if (buffer) {
      // Store (and maybe cut) before anything reaches the registry.
      const chunks: Buffer[] = [];
      let received = 0;
      const complete = await new Promise<boolean>((resolve) => {
        req.on('data', (chunk: Buffer) => {
          count(chunk);
          received += chunk.length;
          if (cut !== undefined && received > cut) {
            resolve(false);
            return;
          }
          chunks.push(chunk);
        });
        req.on('end', () => resolve(true));
        req.on('error', () => resolve(false));
        req.on('close', () => resolve(false));
      });
      if (!complete) {
        req.socket.resetAndDestroy();
        settle(exchange);
        return;
      }
      body = Buffer.concat(chunks);
    }

    try {
      await options.beforeForward?.(exchange, body ?? Buffer.alloc(0));
    } catch (err) {
      answer(res, exchange, 500, { 'content-type': 'text/plain' }, `fault proxy: ${(err as Error).message}`);
      return;
    }

    const upstreamReq = httpRequest({ hostname: targetUrl.hostname, port: targetUrl.port, method, path, headers: forwardHeaders(req, body), agent });
    upstreamReq.on('response', (upstream) => relay(req, res, exchange, upstream, fault));
    let dropped = false;
    upstreamReq.on('error', () => {
      if (dropped) return;
      if (!res.headersSent) answer(res, exchange, 502, { 'content-type': 'text/plain' }, 'fault proxy: upstream failed');
      else res.destroy();
    });
    // The client went away (a timeout, a reset): abandon the upstream exchange too.
    res.on('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    if (body) {
      upstreamReq.end(body);
      return;
    }
    if (cut === undefined) {
      req.on('data', count);
      req.pipe(upstreamReq);
      return;
    }
    // Streaming and cut: the registry receives the first `cut` bytes, then both sides are dropped.
    let forwarded = 0;
    req.on('data', (chunk: Buffer) => {
      if (dropped) return;
      count(chunk);
      const room = cut - forwarded;
      if (chunk.length <= room) {
        forwarded += chunk.length;
        upstreamReq.write(chunk);
        return;
      }
      dropped = true;
      req.pause();
      upstreamReq.write(chunk.subarray(0, room), () => {
        upstreamReq.destroy();
        req.socket.resetAndDestroy();
        settle(exchange);
      });
    });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    });
  });
  const port = await listenOnLoopback(server);
  let stopping: Promise<void> | undefined;
  const proxy: FaultProxy = {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    seed: options.seed,
    rate: options.rate ?? 0.2,
    exchanges,
    injected,
    get faults() {
      return Object.values(injected).reduce((a, b) => a + b, 0);
    },
    describe() {
      const counts = FAULT_KINDS.filter((k) => injected[k]).map((k) => `${k}=${injected[k]}`).join(' ');
      return `fault proxy ${proxy.host} → ${targetUrl.host}: seed ${options.seed}, rate ${proxy.rate}, ${exchanges.length} requests, ${proxy.faults} faults (${counts || 'none'})`;
    },
    reset() {
      exchanges.length = 0;
      occurrences.clear();
      for (const k of FAULT_KINDS) injected[k] = 0;
    },
    stop() {
      if (!stopping) {
        agent.destroy();
        stopping = closeServer(server);
      }
      return stopping;
    },
  };
  return proxy;
}
