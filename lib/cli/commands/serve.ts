/**
 * `ocirelay serve --rules RULES --listen HOST:PORT`: the webhook endpoints of the rules on a local
 * HTTP server, running the embedded pipeline — the product on-premises, without AWS.
 *
 * Answers quickly (202; the copy runs in the background), keeps running through bad requests,
 * coalesces a burst of events for one image (an index and its children, a registry's retries)
 * into one copy, and on SIGTERM/SIGINT stops accepting, logs the requests still in their
 * coalescing window (dropped), gives the batches in flight `--shutdown-grace` seconds to finish
 * and abandons the rest (a second signal exits at once): nothing is half-committed, because a
 * manifest is only ever pushed after its content (the commit barrier) and a tag last.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { PARSERS } from '../../events/index.js';
import { handleWebhook, ReplayCache, webhookLabel, type IngressEnv } from '../../pipeline/ingress.js';
import type { ReplicationRequest } from '../../pipeline/messages.js';
import { createLogger, createMetrics, errorFields } from '../../pipeline/telemetry.js';
import { parse, REGISTRY_OPTIONS, UsageError } from '../args.js';
import { embeddedPipeline, exportStore, loadConfig, rulesPool, webhookSecrets } from '../runtime.js';

export const SERVE_USAGE = `usage: ocirelay serve --rules RULES [--listen HOST:PORT] [options]

Serves the rules' webhook endpoints and mirrors what they announce, in this process.

options:
  --rules FILE           the rules and webhooks (YAML or JSON)
  --listen HOST:PORT     where to listen (default 127.0.0.1:8080)
  --coalesce-ms N        events for one target within N ms become one copy (default 500)
  --max-body BYTES       largest webhook body accepted (default 1048576)
  --shutdown-grace N     seconds SIGTERM waits for the tasks in flight before abandoning them (default 10)
`;

const OPTIONS = { ...REGISTRY_OPTIONS, rules: { type: 'string' }, listen: { type: 'string' }, 'coalesce-ms': { type: 'string' }, 'max-body': { type: 'string' }, 'shutdown-grace': { type: 'string' } } as const;

function parseListen(value: string | undefined): { host: string; port: number } {
  const text = value ?? '127.0.0.1:8080';
  const match = /^(\[[0-9a-f:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/i.exec(text);
  const port = Number(match?.[2]);
  if (!match || port > 65535) throw new UsageError(`--listen must be HOST:PORT, got ${JSON.stringify(text)}`);
  return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port };
}

/**
 * Reads a body up to `limit` bytes, counting what arrives (a chunked body declares no length).
 * Beyond the limit it reports `tooLarge` at once, so that 413 can be answered, and keeps reading
 * and discarding (the answer must not close the connection: a client still sending when the
 * socket closes gets a reset instead of the answer). What it discards is bounded too
 * (`drainLimit`, and the server's request timeout): past it, the connection is closed.
 */
function readLimited(req: IncomingMessage, limit: number, drainLimit = 8 * limit): Promise<{ body: Buffer } | { tooLarge: true }> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    const tooLarge = (): void => {
      over = true;
      chunks.length = 0;
      resolve({ tooLarge: true });
    };
    if (Number.isFinite(declared) && declared > limit) tooLarge();
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (over) {
        if (size > drainLimit) req.destroy();
        return;
      }
      if (size > limit) return tooLarge();
      chunks.push(chunk);
    });
    req.on('end', () => resolve({ body: Buffer.concat(chunks) }));
    req.on('error', reject);
  });
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, OPTIONS, SERVE_USAGE);
  if (values.help) {
    process.stdout.write(SERVE_USAGE);
    return 0;
  }
  const config = await loadConfig(values.rules as string | undefined);
  if (!config.webhooks.length) throw new UsageError('the rules file defines no webhooks to serve');
  const listen = parseListen(values.listen as string | undefined);
  const coalesceMs = values['coalesce-ms'] === undefined ? 500 : Number(values['coalesce-ms']);
  const maxBody = values['max-body'] === undefined ? 1024 * 1024 : Number(values['max-body']);
  if (!Number.isInteger(coalesceMs) || coalesceMs < 0) throw new UsageError('--coalesce-ms must be a whole number of milliseconds');
  if (!Number.isInteger(maxBody) || maxBody < 1) throw new UsageError('--max-body must be a positive number of bytes');
  const graceSeconds = values['shutdown-grace'] === undefined ? 10 : Number(values['shutdown-grace']);
  if (!Number.isFinite(graceSeconds) || graceSeconds < 0) throw new UsageError('--shutdown-grace must be a number of seconds');
  const logger = createLogger({ sink: (line) => process.stdout.write(`${line}\n`) });
  const secrets = await webhookSecrets(config);
  const pool = rulesPool(config);
  const pipeline = embeddedPipeline(pool, await exportStore(config), logger, config);

  // Coalescing: the last request for a target within the window wins; one copy per burst.
  const pending = new Map<string, { request: ReplicationRequest; timer: NodeJS.Timeout }>();
  const flush = (target: string): void => {
    const entry = pending.get(target);
    if (!entry) return;
    pending.delete(target);
    clearTimeout(entry.timer);
    void pipeline.submit(entry.request).catch((err: unknown) => logger.error('could not hand over a request', errorFields(err)));
  };
  const submit = async (request: ReplicationRequest): Promise<void> => {
    const existing = pending.get(request.target);
    if (existing) clearTimeout(existing.timer);
    pending.set(request.target, { request, timer: setTimeout(() => flush(request.target), coalesceMs) });
  };
  const ingress: IngressEnv = {
    config,
    secrets,
    submit,
    parsers: PARSERS,
    logger,
    metrics: createMetrics({ sink: () => undefined }),
    maxBodyBytes: maxBody,
    replays: new ReplayCache(),
    // A schedule's sync runs as in AWS: steps of fan-out in the embedded pipeline.
    submitSync: (message) => pipeline.submitSync(message),
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    // `close: false` while the request is still arriving: closing the connection then would reset
    // it under a client that is still sending, and the client would never read the answer.
    const respond = (status: number, body: Record<string, unknown>, close = true): void => {
      if (res.headersSent) return;
      res.writeHead(status, { 'content-type': 'application/json', ...(close ? { connection: 'close' } : {}) });
      res.end(JSON.stringify(body));
    };
    const path = (req.url ?? '/').split('?', 1)[0] as string;
    if (req.method === 'GET' && path === '/healthz') {
      respond(200, { status: 'ok', queued: pipeline.work.size });
      return;
    }
    readLimited(req, maxBody)
      .then(async (read) => {
        if ('tooLarge' in read) {
          respond(413, { error: `body larger than ${maxBody} bytes` }, false);
          return;
        }
        const headers: Record<string, string | undefined> = {};
        for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
        const answer = await handleWebhook({ method: req.method ?? 'GET', path, headers, body: read.body }, ingress);
        const hook = config.webhooks.find((h) => h.path === path);
        logger.info('webhook', { path: hook ? webhookLabel(hook) : path, status: answer.status, ...answer.body });
        respond(answer.status, answer.body);
      })
      .catch((err: unknown) => {
        logger.error('request failed', errorFields(err));
        respond(500, { error: 'internal error' });
      });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new UsageError(`cannot listen on ${listen.host}:${listen.port}: ${err.code ?? err.message}`)));
    server.listen(listen.port, listen.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : listen.port;
  logger.info('listening', { url: `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}`, webhooks: config.webhooks.map((h) => `${h.kind} ${webhookLabel(h)}`) });

  const running = pipeline.run();
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      logger.info('shutting down', { signal, queued: pipeline.work.size, pending: pending.size, graceSeconds });
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      // A second signal does not wait for the grace period.
      const now = (again: string): void => {
        logger.warn('second signal: exiting now', { signal: again });
        process.exit(1);
      };
      process.once('SIGTERM', () => now('SIGTERM'));
      process.once('SIGINT', () => now('SIGINT'));
      // Requests still in their coalescing window are not copied: named, so that they can be asked again.
      for (const [target, entry] of pending) {
        clearTimeout(entry.timer);
        logger.warn('coalesced request dropped at shutdown', { requestId: entry.request.id, source: entry.request.source, target });
      }
      pending.clear();
      server.close();
      server.closeAllConnections();
      pipeline.stop();
      resolve();
    };
    const onTerm = (): void => stop('SIGTERM');
    const onInt = (): void => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
  // The tasks in flight get the grace period to finish. Past it they are abandoned where they
  // are, which is safe: a manifest is only PUT once its content is in the target and a tag last,
  // so an interrupted copy leaves unreferenced blobs at most (the next delivery or sync redoes it).
  let grace: NodeJS.Timeout | undefined;
  const finished = await Promise.race([running.then(() => true), new Promise<false>((resolve) => (grace = setTimeout(() => resolve(false), graceSeconds * 1000)))]);
  clearTimeout(grace);
  const abandoned = pipeline.work.size + pipeline.exports.size;
  if (!finished) {
    logger.warn('copies in flight abandoned at shutdown', { graceSeconds, abandoned, fanouts: pipeline.fanout.pendingCount });
    logger.info('stopped', { abandoned });
    // Connections still busy (a transfer in flight) would keep the process alive.
    process.exit(0);
  }
  await pool.close();
  logger.info('stopped', { abandoned });
  return 0;
}
