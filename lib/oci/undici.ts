/**
 * The pieces of undici the transport uses, loaded without the rest of the package, and the
 * dispatcher it sends through.
 *
 * undici's index also loads fetch, WebSocket, EventSource, the HTTP caches and the mock agents
 * (and through them Node's own bundled copy of undici): about 80 ms of every CLI start and Lambda
 * cold start, and half of every bundle, for nothing ocirelay calls. `request` is the index's
 * `request` minus its URL-argument shim; `Pool` and `Dispatcher` are the index's very classes.
 * test/oci-unit.test.ts pins these paths, so an undici release that moves them fails a test.
 */
import DispatcherClass from 'undici/lib/dispatcher/dispatcher.js';
import PoolClass from 'undici/lib/dispatcher/pool.js';
import dispatchRequest from 'undici/lib/api/api-request.js';
import type { Dispatcher } from 'undici';
import type { Agent as UndiciAgent } from 'undici';

export type RequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { dispatcher: Dispatcher; method?: Dispatcher.HttpMethod };

/** undici's `request(url, options)`: one request through `options.dispatcher`. */
export function request(url: URL, options: RequestOptions): Promise<Dispatcher.ResponseData> {
  const { dispatcher, ...rest } = options;
  return dispatchRequest.call(dispatcher, { ...rest, method: rest.method ?? 'GET', origin: url.origin, path: `${url.pathname}${url.search}` });
}

/**
 * A dispatcher with one keep-alive connection pool per origin for its whole life, taking undici
 * Agent's options. undici's own Agent drops an origin's pool (and with it, once their requests
 * end, every connection it holds) whenever its count of connected sockets falls to zero, and undici
 * closes the socket after every HEAD (for servers that send a body with one): with Agent, a HEAD
 * on an origin with one connection tears down the pool, so a copy reconnects over and over (a TCP,
 * and over HTTPS a TLS, handshake each time). Here a HEAD costs its own socket only.
 */
export class Agent extends DispatcherClass {
  private readonly options: UndiciAgent.Options;
  private readonly pools = new Map<string, InstanceType<typeof PoolClass>>();
  private closing: Promise<void> | undefined;

  constructor(options: UndiciAgent.Options = {}) {
    super();
    this.options = options;
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = typeof options.origin === 'string' ? options.origin : options.origin?.origin;
    if (!origin) throw new TypeError('dispatch: options.origin must be a non-empty string or URL');
    if (this.closing) throw Object.assign(new Error('the dispatcher is closed'), { code: 'UND_ERR_CLOSED' });
    let pool = this.pools.get(origin);
    if (!pool) {
      pool = new PoolClass(origin, this.options as ConstructorParameters<typeof PoolClass>[1]);
      // Passed on as Agent does, with this dispatcher first among the targets.
      const emitter = this as unknown as NodeJS.EventEmitter;
      for (const event of ['connect', 'disconnect', 'connectionError', 'drain']) {
        (pool as unknown as NodeJS.EventEmitter).on(event, (from: URL, targets: readonly Dispatcher[], err?: Error) => emitter.emit(event, from, [this, ...targets], err));
      }
      this.pools.set(origin, pool);
    }
    return pool.dispatch(options, handler);
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.closing ??= Promise.all([...this.pools.values()].map((p) => p.close())).then(() => undefined);
    if (!callback) return this.closing;
    void this.closing.then(callback, callback);
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(errOrCallback?: Error | null | (() => void), callback?: () => void): Promise<void> | void {
    const err = typeof errOrCallback === 'function' ? null : (errOrCallback ?? null);
    const done = typeof errOrCallback === 'function' ? errOrCallback : callback;
    const destroyed = Promise.all([...this.pools.values()].map((p) => p.destroy(err))).then(() => undefined);
    this.closing ??= destroyed;
    if (!done) return destroyed;
    void destroyed.then(done, done);
  }
}
