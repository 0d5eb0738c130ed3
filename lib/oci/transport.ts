/**
 * The transport of one registry: an undici connection pool with keep-alive, the authenticator,
 * the retry policy and hand-followed redirects, composed around a single `send`.
 *
 * Plain HTTP is used only for loopback registries (localhost, 127.0.0.0/8, [::1], as Docker does)
 * and registries configured as insecure; everything else is HTTPS, with custom CA bundles honoured.
 */
import { readFileSync } from 'node:fs';
import type { LookupFunction } from 'node:net';
import { rootCertificates } from 'node:tls';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { Agent, request } from './undici.js';
import { AuthError, NetworkError, OciRelayError, ErrorCodes, RegistryError, redactUrl, type OciErrorEntry } from '../errors.js';
import { Authenticator, type Scope } from './auth.js';
import { anonymous, type CredentialProvider } from './credentials.js';
import { backoffDelay, isRetryableNetworkError, networkErrorCode, parseRetryAfter, resolveRetry, sleep, type RetryOptions } from './retry.js';
import { isRetryableStatus } from '../errors.js';
import { metadataGuard } from './destination.js';

export interface TimeoutOptions {
  /** TCP + TLS connect. Default 10 s: a registry that cannot accept a connection in 10 s is down. */
  connectMs?: number;
  /** From request sent to response headers. Default 60 s: registries may hash a large upload before answering its PUT. */
  headersMs?: number;
  /** Longest silence inside a body (idle, not total). Default 30 s: a stalled stream fails instead of hanging. */
  bodyIdleMs?: number;
}

export const DEFAULT_TIMEOUTS: Required<TimeoutOptions> = { connectMs: 10_000, headersMs: 60_000, bodyIdleMs: 30_000 };

/** Reported for every HTTP exchange (including retries and token requests), for counting and logging. */
export interface RequestEvent {
  registry: string;
  operation: string;
  method: string;
  /** Redacted. */
  url: string;
  status?: number;
  /** The error code when the exchange failed before a status arrived. */
  error?: string;
  attempt: number;
  durationMs: number;
}

/**
 * Decides whether a URL may be contacted at all (destination policy); throws (or rejects) to refuse.
 * Its `lookup`, when it has one, resolves host names for the connections of the transport's own
 * dispatcher, so that the addresses judged are the addresses connected to.
 */
export type DestinationGuard = ((url: URL, purpose: 'registry' | 'token' | 'redirect') => void | Promise<void>) & { lookup?: LookupFunction };

export interface TransportOptions {
  credentials?: CredentialProvider;
  /** Use plain HTTP for this registry. */
  insecure?: boolean;
  /** Extra CA certificates (PEM) trusted for HTTPS. */
  ca?: string | Buffer | Array<string | Buffer>;
  timeouts?: TimeoutOptions;
  retry?: RetryOptions;
  /**
   * Connections per origin. Default 16: enough for the default blob concurrency with room for
   * manifest and HEAD requests, few enough not to trip registries' per-client connection limits.
   */
  connections?: number;
  /** Realm hosts, besides the registry's own, that may receive its credentials. */
  allowedRealmHosts?: readonly string[];
  userAgent?: string;
  onRequest?: (event: RequestEvent) => void;
  guard?: DestinationGuard;
  /** Share a dispatcher between registries (undici Agent pools per origin). Its connections are not resolved through `guard.lookup`. */
  dispatcher?: Dispatcher;
}

/**
 * A request body. Buffers and strings can be sent again; `{ open }` produces a fresh stream for
 * each attempt (an upload restarted from its source); a bare Readable is sent once only.
 */
export type RequestBody = string | Uint8Array | { open: () => Readable | Promise<Readable> } | Readable;

export interface SendOptions {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  url: URL;
  scopes: readonly Scope[];
  /** What is being done, for errors and events: `GET manifest`, `PUT blob`, ... */
  operation: string;
  headers?: Record<string, string>;
  body?: RequestBody;
  /** Statuses handed back to the caller; any other status becomes a RegistryError. */
  expect: readonly number[];
  /** Follow 301/302/303/307/308 by hand (GET and HEAD only). */
  followRedirects?: boolean;
  signal?: AbortSignal;
  /** Retry even though the method is not idempotent (POST that opens an upload session). */
  retrySafe?: boolean;
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** The URL that answered (after redirects). */
  url: URL;
}

const MAX_REDIRECTS = 5;

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\]|::1)$/i;

export function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK.test(hostname);
}

/** `https://host` or, for loopback and insecure registries, `http://host`. */
export function registryOrigin(registry: string, insecure = false): string {
  const hostname = new URL(`http://${registry}`).hostname;
  return `${insecure || isLoopbackHost(hostname) ? 'http' : 'https'}://${registry}`;
}

const USER_AGENT = 'ocirelay/0.1';

/**
 * The CAs trusted when extra ones are given: Node's bundled roots, NODE_EXTRA_CA_CERTS, and the
 * extras. (TLS `ca` replaces the default trust store; handing it only the extras would make every
 * public registry untrusted as soon as one private CA is configured.)
 */
export function trustedCertificates(ca: NonNullable<TransportOptions['ca']>, env: NodeJS.ProcessEnv = process.env): Array<string | Buffer> {
  const extraFile = env.NODE_EXTRA_CA_CERTS;
  let fromEnv: string[] = [];
  if (extraFile) {
    try {
      fromEnv = [readFileSync(extraFile, 'utf8')];
    } catch {
      // Node itself only warns about an unreadable NODE_EXTRA_CA_CERTS; so do we (by ignoring it).
    }
  }
  return [...rootCertificates, ...fromEnv, ...(Array.isArray(ca) ? ca : [ca])];
}

/** TLS verification failures (Node's OpenSSL codes): the one network failure a setting fixes. */
const TLS_TRUST_CODES = /^(?:UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(?:_LOCALLY)?|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|ERR_TLS_CERT_ALTNAME_INVALID)$/;

/** The code of a connection failure, with what to do about it when it is a certificate problem. */
function describeNetworkError(err: unknown): string {
  const code = networkErrorCode(err);
  if (code && TLS_TRUST_CODES.test(code)) {
    return `${code}: the registry's TLS certificate is not trusted (${(err as Error).message}); add its CA under /etc/docker/certs.d/<host:port>/ca.crt or NODE_EXTRA_CA_CERTS, or use --insecure for a plain-HTTP registry`;
  }
  return code ?? (err as Error).message;
}

export function createAgent(options: { ca?: TransportOptions['ca']; connections?: number; timeouts?: TimeoutOptions; lookup?: LookupFunction } = {}): Agent {
  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  return new Agent({
    connections: options.connections ?? 16,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 300_000,
    headersTimeout: timeouts.headersMs,
    bodyTimeout: timeouts.bodyIdleMs,
    connect: { timeout: timeouts.connectMs, ...(options.ca ? { ca: trustedCertificates(options.ca) } : {}), ...(options.lookup ? { lookup: options.lookup } : {}) },
  });
}

export class Transport {
  readonly registry: string;
  readonly origin: string;
  readonly auth: Authenticator;
  private readonly options: TransportOptions;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly retry: ReturnType<typeof resolveRetry>;
  private readonly timeouts: Required<TimeoutOptions>;

  constructor(registry: string, options: TransportOptions = {}) {
    this.registry = registry;
    this.options = options;
    this.origin = registryOrigin(registry, options.insecure);
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.retry = resolveRetry(options.retry);
    this.ownsDispatcher = !options.dispatcher;
    this.dispatcher = options.dispatcher ?? createAgent({ ca: options.ca, connections: options.connections, timeouts: this.timeouts, lookup: (options.guard ?? metadataGuard).lookup });
    this.auth = new Authenticator({
      registry,
      credentials: options.credentials ?? anonymous,
      allowedRealmHosts: options.allowedRealmHosts ?? [],
      plainHttp: this.origin.startsWith('http:'),
      fetchToken: (req) => this.fetchToken(req),
    });
  }

  /** `origin + path`, for paths under /v2/. */
  url(path: string): URL {
    return new URL(path, this.origin);
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }

  /** Sends one logical request: authorises, retries transient failures, follows redirects if asked. */
  async send(options: SendOptions): Promise<Response> {
    const { method, operation } = options;
    let url = options.url;
    let attempt = 0;
    let challenged = false;
    let redirects = 0;
    let sentOneShot = false;
    for (;;) {
      attempt++;
      const sameOrigin = url.origin === this.origin;
      await (this.options.guard ?? metadataGuard)(url, sameOrigin ? 'registry' : 'redirect');
      const headers: Record<string, string> = { 'user-agent': this.options.userAgent ?? USER_AGENT, ...options.headers };
      if (sameOrigin) {
        const authorization = await this.auth.authorization(options.scopes);
        if (authorization) headers.authorization = authorization;
      }
      const body = options.body;
      let payload: string | Uint8Array | Readable | undefined;
      if (body === undefined || typeof body === 'string' || body instanceof Uint8Array) payload = body;
      else if (isOpenable(body)) payload = await body.open();
      else {
        if (sentOneShot) throw new OciRelayError(ErrorCodes.Network, `${operation}: cannot send the body again`, { url, operation, retryable: true });
        sentOneShot = true;
        payload = body;
      }
      const replayable = body === undefined || typeof body === 'string' || body instanceof Uint8Array || isOpenable(body);
      // POST and PATCH append to server state (a session, a chunk): only retried when the caller says it is safe.
      const mayRetry = replayable && (options.retrySafe || (method !== 'POST' && method !== 'PATCH')) && attempt < this.retry.maxAttempts;

      const started = performance.now();
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          dispatcher: this.dispatcher,
          method,
          headers,
          body: payload,
          signal: options.signal,
          headersTimeout: this.timeouts.headersMs,
          bodyTimeout: this.timeouts.bodyIdleMs,
        });
      } catch (err) {
        if (payload && typeof payload === 'object' && 'destroy' in payload) (payload as Readable).destroy();
        this.emit({ operation, method, url, attempt, started, error: networkErrorCode(err) ?? 'error' });
        if (options.signal?.aborted) throw new OciRelayError(ErrorCodes.Aborted, `${operation}: aborted`, { url, operation, cause: err });
        if (err instanceof OciRelayError) throw err; // a failure of the body's own source, e.g. a digest mismatch
        if (isRetryableNetworkError(err) && mayRetry) {
          await sleep(backoffDelay(attempt, this.retry), options.signal);
          continue;
        }
        throw new NetworkError(`${operation}: ${method} ${redactUrl(url)} failed: ${describeNetworkError(err)}${attempt > 1 ? ` (after ${attempt} attempts)` : ''}`, {
          url,
          operation,
          cause: err,
          retryable: isRetryableNetworkError(err),
        });
      }
      const status = res.statusCode;
      this.emit({ operation, method, url, attempt, started, status });

      if (status === 401 && sameOrigin) {
        const challenge = res.headers['www-authenticate'];
        await discard(res.body);
        if (challenged) {
          throw new AuthError(`${operation}: ${method} ${redactUrl(url)} was refused (401) with fresh credentials for ${this.registry}`, { url, operation, status });
        }
        if (!replayable && sentOneShot) {
          throw new AuthError(`${operation}: ${method} ${redactUrl(url)} needs authentication and its body cannot be sent again`, { url, operation, status, retryable: true });
        }
        challenged = true;
        await this.auth.challenge(challenge, options.scopes, { url, operation, withCredentials: headers.authorization !== undefined });
        attempt--; // an authentication round trip is not a failed attempt
        continue;
      }

      if (options.followRedirects && isRedirect(status) && (method === 'GET' || method === 'HEAD')) {
        const location = header(res.headers, 'location');
        await discard(res.body);
        if (!location) throw new RegistryError({ status, method, url, operation, message: `${operation}: ${method} ${redactUrl(url)} redirected without a Location` });
        if (++redirects > MAX_REDIRECTS) throw new RegistryError({ status, method, url, operation, message: `${operation}: more than ${MAX_REDIRECTS} redirects from ${redactUrl(options.url)}` });
        let next: URL;
        try {
          next = new URL(location, url);
        } catch {
          throw new RegistryError({ status, method, url, operation, message: `${operation}: redirect to an invalid URL` });
        }
        if (next.protocol !== 'https:' && next.protocol !== 'http:') {
          throw new RegistryError({ status, method, url, operation, message: `${operation}: redirect to a non-HTTP URL refused` });
        }
        url = next;
        attempt = 0;
        continue;
      }

      if (options.expect.includes(status)) return { status, headers: res.headers, body: res.body, url };

      if (isRetryableStatus(status) && mayRetry) {
        const retryAfter = parseRetryAfter(res.headers['retry-after']);
        // Asked to wait longer than maxRetryAfterMs: failed, for the caller (or the queue) to retry later.
        if (retryAfter === undefined || retryAfter <= this.retry.maxRetryAfterMs) {
          await discard(res.body);
          await sleep(backoffDelay(attempt, this.retry, retryAfter), options.signal);
          continue;
        }
      }

      const errors = await readErrorBody(res.body);
      const error = new RegistryError({ status, method, url, errors, operation });
      // After retries, say how many attempts were made (the same wording as NetworkError's).
      if (attempt > 1) throw new RegistryError({ status, method, url, errors, operation, message: `${error.detail} (after ${attempt} attempts)` });
      throw error;
    }
  }

  private emit(event: { operation: string; method: string; url: URL; attempt: number; started: number; status?: number; error?: string }): void {
    const hook = this.options.onRequest;
    if (!hook) return;
    hook({
      registry: this.registry,
      operation: event.operation,
      method: event.method,
      url: redactUrl(event.url),
      attempt: event.attempt,
      durationMs: Math.round(performance.now() - event.started),
      ...(event.status !== undefined ? { status: event.status } : {}),
      ...(event.error !== undefined ? { error: event.error } : {}),
    });
  }

  /** A token request: retried like any other, never authorised by the registry's own logic. */
  private async fetchToken(req: { url: URL; method: 'GET' | 'POST'; headers: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
    let attempt = 0;
    for (;;) {
      attempt++;
      await (this.options.guard ?? metadataGuard)(req.url, 'token');
      const started = performance.now();
      try {
        const res = await request(req.url, {
          dispatcher: this.dispatcher,
          method: req.method,
          headers: { 'user-agent': this.options.userAgent ?? USER_AGENT, ...req.headers },
          body: req.body,
          headersTimeout: this.timeouts.headersMs,
          bodyTimeout: this.timeouts.bodyIdleMs,
        });
        this.emit({ operation: 'GET token', method: req.method, url: req.url, attempt, started, status: res.statusCode });
        if (isRetryableStatus(res.statusCode) && attempt < this.retry.maxAttempts) {
          const retryAfter = parseRetryAfter(res.headers['retry-after']);
          await discard(res.body);
          await sleep(backoffDelay(attempt, this.retry, retryAfter));
          continue;
        }
        return { status: res.statusCode, body: await readText(res.body, 1 << 20) };
      } catch (err) {
        this.emit({ operation: 'GET token', method: req.method, url: req.url, attempt, started, error: networkErrorCode(err) ?? 'error' });
        if (isRetryableNetworkError(err) && attempt < this.retry.maxAttempts) {
          await sleep(backoffDelay(attempt, this.retry));
          continue;
        }
        throw err;
      }
    }
  }
}

function isOpenable(body: RequestBody): body is { open: () => Readable | Promise<Readable> } {
  return typeof body === 'object' && body !== null && 'open' in body && typeof (body as { open?: unknown }).open === 'function';
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

export function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Reads and drops a body we do not need (bounded, so a hostile endless body cannot hold us). */
export async function discard(body: Dispatcher.ResponseData['body']): Promise<void> {
  try {
    await body.dump({ limit: 256 * 1024 });
  } catch {
    // the connection is closed by dump when the limit is passed; nothing to do
  }
}

/** Reads a whole body as bytes, refusing more than `limit` bytes. */
export async function readBytes(body: Dispatcher.ResponseData['body'], limit: number, onTooLarge?: (size: number) => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      body.destroy();
      throw onTooLarge?.(size) ?? new OciRelayError(ErrorCodes.Registry, `response body larger than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size);
}

export async function readText(body: Dispatcher.ResponseData['body'], limit: number): Promise<string> {
  return (await readBytes(body, limit)).toString('utf8');
}

/** The OCI error body (spec "Error Codes"), or nothing when the body is not that JSON. */
export async function readErrorBody(body: Dispatcher.ResponseData['body']): Promise<OciErrorEntry[]> {
  let text: string;
  try {
    text = await readText(body, 64 * 1024);
  } catch {
    return [];
  }
  try {
    const json = JSON.parse(text) as { errors?: unknown };
    if (!Array.isArray(json.errors)) return [];
    return json.errors
      .filter((e): e is { code: unknown; message?: unknown } => typeof e === 'object' && e !== null)
      .map((e) => ({
        code: typeof e.code === 'string' ? e.code.slice(0, 64) : 'UNKNOWN',
        ...(typeof e.message === 'string' ? { message: e.message.slice(0, 300) } : {}),
      }))
      .slice(0, 5);
  } catch {
    return [];
  }
}
