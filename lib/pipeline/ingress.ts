/**
 * Ingress: webhooks (HTTP) and EventBridge events (schedules, ECR "ECR Image Action") in,
 * replication requests out, handed to fan-out. The payload is a hint, never an authority:
 *
 * 1. the request is authenticated before its body is parsed (a bearer token or a configured
 *    header compared in constant time; GitHub's HMAC over the raw body; or, for sources that sign
 *    nothing, an unguessable path marked `unauthenticated`);
 * 2. bodies over the limit get 413, malformed JSON 400, unauthenticated 401, a wrong token or
 *    signature 403 — bad input never gets a 500;
 * 3. the registry of every request comes from the matching rule; an event naming another host or
 *    a repository outside every rule is acknowledged (202) and ignored, and nothing is contacted;
 * 4. replays are de-duplicated by delivery id / event id for a while, and a burst of events for
 *    one image (an index and its children) becomes one request.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { ErrorCodes, errorMessage, OciRelayError } from '../errors.js';
import { parseDistribution } from '../events/distribution.js';
import { PayloadError, type DeliveryParser, type PushEvent } from '../events/types.js';
import type { Config, Webhook } from '../rules/config.js';
import { requestsFor, ruleSyncMessages } from '../rules/match.js';
import { parseRequest, type ReplicationRequest, type SyncMessage } from './messages.js';
import { errorFields, type Logger, type Metrics } from './telemetry.js';

export interface HttpRequest {
  method: string;
  /** Path without query. */
  path: string;
  /** Lowercased header names. */
  headers: Readonly<Record<string, string | undefined>>;
  body: Buffer;
}

export interface HttpResponse {
  status: number;
  body: Record<string, unknown>;
}

export interface IngressEnv {
  config: Config;
  /** Resolved webhook secrets by path (tokens and HMAC keys). */
  secrets: ReadonlyMap<string, { token?: string; secret?: string }>;
  /** Hands a request to fan-out. */
  submit: (request: ReplicationRequest) => Promise<void>;
  /** Parsers by webhook kind; distribution is built in, the others are registered by lib/events. */
  parsers?: Partial<Record<Webhook['kind'], DeliveryParser>>;
  /** Parser for ECR's EventBridge events. */
  ecrParser?: (event: unknown) => PushEvent[];
  /**
   * Hands the first step of a rule's scheduled sync to fan-out (lib/pipeline/sync.ts); absent
   * when the runtime does not support it.
   */
  submitSync?: (message: SyncMessage) => Promise<void>;
  logger: Logger;
  metrics: Metrics;
  /** Largest body accepted. Default 1 MiB (registries' notifications are a few KiB). */
  maxBodyBytes?: number;
  replays?: ReplayCache;
  now?: () => number;
}

/** Ids seen recently (replays are dropped), bounded in size and age. */
export class ReplayCache {
  private readonly seen = new Map<string, number>();
  constructor(
    private readonly ttlMs = 10 * 60_000,
    private readonly max = 10_000,
  ) {}

  /** True when `id` was recorded within the TTL. */
  has(id: string, now: number = Date.now()): boolean {
    const at = this.seen.get(id);
    return at !== undefined && now - at < this.ttlMs;
  }

  /** Records `id` as seen at `now`. */
  record(id: string, now: number = Date.now()): void {
    this.seen.delete(id);
    this.seen.set(id, now);
    if (this.seen.size > this.max) {
      for (const [key, time] of this.seen) {
        if (now - time >= this.ttlMs || this.seen.size > this.max) this.seen.delete(key);
        if (this.seen.size <= this.max * 0.9) break;
      }
    }
  }
}

const BUILT_IN: Partial<Record<Webhook['kind'], DeliveryParser>> = { distribution: parseDistribution };

/**
 * A webhook's path as logs may show it: an `unauthenticated` endpoint's path is its secret, so
 * only its first characters are shown (`/hooks/hub-5f0c…`).
 */
export function webhookLabel(hook: Pick<Webhook, 'path' | 'unauthenticated'>): string {
  if (!hook.unauthenticated) return hook.path;
  const cut = hook.path.lastIndexOf('/') + 1;
  return `${hook.path.slice(0, cut)}${hook.path.slice(cut, cut + 4)}…`;
}

function safeEqual(a: string, b: string): boolean {
  // Hashing first makes the comparison constant-time whatever the lengths.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

function authenticate(hook: Webhook, secrets: { token?: string; secret?: string } | undefined, req: HttpRequest): HttpResponse | undefined {
  if (hook.secret) {
    const key = secrets?.secret;
    const signature = req.headers['x-hub-signature-256'];
    if (!key) return { status: 503, body: { error: 'webhook secret not available' } };
    if (!signature) return { status: 401, body: { error: 'missing X-Hub-Signature-256' } };
    const expected = `sha256=${createHmac('sha256', key).update(req.body).digest('hex')}`;
    return safeEqual(signature.trim().toLowerCase(), expected) ? undefined : { status: 403, body: { error: 'bad signature' } };
  }
  if (hook.token) {
    const token = secrets?.token;
    if (!token) return { status: 503, body: { error: 'webhook token not available' } };
    let presented: string | undefined;
    if (hook.header) presented = req.headers[hook.header.toLowerCase()];
    else {
      const auth = req.headers.authorization;
      const match = auth ? /^Bearer\s+(.+)$/i.exec(auth.trim()) : null;
      presented = match?.[1];
    }
    if (!presented) return { status: 401, body: { error: hook.header ? `missing ${hook.header}` : 'missing Authorization: Bearer' } };
    return safeEqual(presented.trim(), token) ? undefined : { status: 403, body: { error: 'bad token' } };
  }
  return hook.unauthenticated ? undefined : { status: 401, body: { error: 'webhook has no credentials configured' } };
}

export async function handleWebhook(req: HttpRequest, env: IngressEnv): Promise<HttpResponse> {
  const hook = env.config.webhooks.find((h) => h.path === req.path);
  if (!hook) return { status: 404, body: { error: 'no webhook at this path' } };
  if (req.method !== 'POST') return { status: 405, body: { error: 'webhooks are POSTed' } };
  const limit = env.maxBodyBytes ?? 1024 * 1024;
  if (req.body.length > limit) return { status: 413, body: { error: `body larger than ${limit} bytes` } };
  const denied = authenticate(hook, env.secrets.get(hook.path), req);
  if (denied) {
    env.logger.warn('webhook refused', { path: hook.path, status: denied.status, reason: denied.body.error });
    return denied;
  }
  let json: unknown;
  try {
    json = JSON.parse(req.body.toString('utf8'));
  } catch (err) {
    return { status: 400, body: { error: `body is not JSON: ${errorMessage(err).slice(0, 200)}` } };
  }
  const parser = env.parsers?.[hook.kind] ?? BUILT_IN[hook.kind];
  if (!parser) return { status: 501, body: { error: `webhook kind ${hook.kind} is not supported by this runtime` } };
  let delivery;
  try {
    delivery = parser(json, req.headers);
  } catch (err) {
    if (err instanceof PayloadError) return { status: 400, body: { error: err.message } };
    env.logger.error('webhook parser failed', { path: webhookLabel(hook), ...errorFields(err) });
    return { status: 400, body: { error: 'payload could not be read' } };
  }
  const replays = env.replays;
  const now = env.now?.() ?? Date.now();
  const deliveryKey = delivery.deliveryId ? `${hook.path}|${delivery.deliveryId}` : undefined;
  if (deliveryKey && replays?.has(deliveryKey, now)) {
    return { status: 200, body: { status: 'duplicate', deliveryId: delivery.deliveryId } };
  }
  // Ids are recorded only once the delivery was handed over: a delivery answered 503 is retried
  // by its sender, and that retry must not be taken for a replay. Two copies of one delivery in
  // flight at once may both be handed over; copies are idempotent, a lost push is not.
  const keys = new Set<string>();
  const events = delivery.events.filter((e) => {
    if (!e.id) return true;
    const key = `${hook.path}|event|${e.id}`;
    if (keys.has(key) || replays?.has(key, now)) return false;
    keys.add(key);
    return true;
  });
  const answer = await accept(events, delivery.ignored + (delivery.events.length - events.length), env, { id: delivery.deliveryId ?? `${hook.kind}-${now}`, ...(hook.rules ? { only: hook.rules } : {}), source: webhookLabel(hook) });
  if (replays && answer.status < 300) for (const key of [...keys, ...(deliveryKey ? [deliveryKey] : [])]) replays.record(key, now);
  return answer;
}

async function accept(events: PushEvent[], ignored: number, env: IngressEnv, options: { id: string; only?: readonly string[]; source: string }): Promise<HttpResponse> {
  const byTarget = new Map<string, ReplicationRequest>();
  let unmatched = 0;
  for (const [i, event] of events.entries()) {
    const matched = requestsFor(event, env.config, { id: `${options.id}/${i}`, ...(options.only ? { only: options.only } : {}) });
    if (!matched.length) {
      unmatched++;
      // A push by digest alone (a child of an index, a referrer) travels with its tagged image.
      if (!event.tag) env.logger.info('untagged manifest push ignored', { via: options.source, registry: event.registry, repository: event.repository, digest: event.digest });
      else env.logger.info('event outside every rule ignored', { via: options.source, registry: event.registry, repository: event.repository, tag: event.tag });
      continue;
    }
    // One request per target: a burst naming the same image twice is copied once.
    for (const { request } of matched) byTarget.set(request.target, request);
  }
  const failures: string[] = [];
  for (const request of byTarget.values()) {
    try {
      await env.submit(request);
    } catch (err) {
      failures.push(request.target);
      env.logger.error('could not hand the request to fan-out', { requestId: request.id, ...errorFields(err) });
    }
  }
  env.metrics.add('RequestsAccepted', byTarget.size - failures.length);
  env.metrics.add('RequestsIgnored', unmatched + ignored);
  env.metrics.flush();
  if (failures.length) return { status: 503, body: { error: 'fan-out unavailable; retry the delivery', failed: failures.length } };
  return { status: 202, body: { accepted: byTarget.size, ignored: unmatched + ignored } };
}

/** EventBridge: the schedule (`ocirelay.schedule`) and ECR's "ECR Image Action". */
export async function handleEventBridge(event: { source?: unknown; 'detail-type'?: unknown; detail?: unknown; id?: unknown; [key: string]: unknown }, env: IngressEnv): Promise<Record<string, unknown>> {
  if (event.source === 'ocirelay.schedule') {
    const detail = (event.detail ?? {}) as { requests?: unknown[]; rules?: string[] };
    if (Array.isArray(detail.requests)) {
      // "Sync these": explicit requests, each validated like any message.
      let accepted = 0;
      const invalid: string[] = [];
      for (const [i, raw] of detail.requests.entries()) {
        try {
          const request = parseRequest({ v: 1, type: 'replicate', id: `${String(event.id ?? 'schedule')}/${i}`, ...(raw as object) });
          await env.submit(request);
          accepted++;
        } catch (err) {
          invalid.push(`requests[${i}]: ${errorMessage(err)}`);
        }
      }
      if (invalid.length) env.logger.warn('scheduled requests refused', { invalid });
      return { accepted, invalid: invalid.length };
    }
    if (!env.submitSync) return { error: 'this runtime has no sync' };
    return startSync(env, env.submitSync, `schedule/${typeof event.id === 'string' && event.id ? event.id.slice(0, 100) : (env.now?.() ?? Date.now())}`, Array.isArray(detail.rules) ? detail.rules.filter((r): r is string => typeof r === 'string') : undefined);
  }
  if (event.source === 'aws.ecr' && event['detail-type'] === 'ECR Image Action') {
    const events = env.ecrParser?.(event) ?? [];
    const response = await accept(events, events.length ? 0 : 1, env, { id: `ecr-${String(event.id ?? Date.now())}`, source: 'aws.ecr' });
    return { status: response.status, ...response.body };
  }
  env.logger.warn('unknown EventBridge event ignored', { source: typeof event.source === 'string' ? event.source : undefined });
  return { ignored: 1 };
}

/**
 * The schedule: one sync message per rule it names (every rule without `rules`), handed to
 * fan-out, which lists and compares in steps of its own (lib/pipeline/sync.ts); ingress lists
 * nothing. Should a hand-over fail, the invocation fails once all were tried, and Lambda retries
 * the event (a rule handed over twice is compared twice: idempotent).
 */
async function startSync(env: IngressEnv, submit: (message: SyncMessage) => Promise<void>, runId: string, names: readonly string[] | undefined): Promise<Record<string, unknown>> {
  const { messages, unknown } = ruleSyncMessages(env.config, runId, names);
  if (unknown.length) env.logger.warn('the schedule names rules the configuration does not have', { unknown });
  const failed: string[] = [];
  for (const message of messages) {
    try {
      await submit(message);
    } catch (err) {
      failed.push(message.rule.name ?? String(message.rule.index));
      env.logger.error('could not hand the sync of a rule to fan-out', { rule: message.rule.name ?? message.rule.index, ...errorFields(err) });
    }
  }
  if (failed.length) throw new OciRelayError(ErrorCodes.Network, `scheduled sync ${runId}: the sync of rules ${failed.join(', ')} could not be handed to fan-out`, { retryable: true });
  env.logger.info('scheduled sync started', { run: runId, rules: messages.map((m) => m.rule.name ?? m.rule.index), ...(unknown.length ? { unknown } : {}) });
  return { run: runId, rules: messages.length, ...(unknown.length ? { unknownRules: unknown } : {}) };
}

/** A Lambda function URL event (payload format 2.0), the part ingress reads. */
export interface FunctionUrlEvent {
  rawPath?: string;
  headers?: Record<string, string | undefined>;
  body?: string;
  isBase64Encoded?: boolean;
  requestContext?: { http?: { method?: string; path?: string } };
}

/** Dispatches a Lambda event: function URL requests are webhooks, everything else EventBridge. */
export function createIngressHandler(getEnv: () => IngressEnv | Promise<IngressEnv>): (event: unknown) => Promise<unknown> {
  return async (event) => {
    const env = await getEnv();
    const e = (event ?? {}) as FunctionUrlEvent & { source?: unknown };
    if (e.requestContext?.http) {
      const headers: Record<string, string | undefined> = {};
      for (const [k, v] of Object.entries(e.headers ?? {})) headers[k.toLowerCase()] = v;
      const body = e.body === undefined ? Buffer.alloc(0) : Buffer.from(e.body, e.isBase64Encoded ? 'base64' : 'utf8');
      let response: HttpResponse;
      try {
        response = await handleWebhook({ method: e.requestContext.http.method ?? 'GET', path: e.rawPath ?? e.requestContext.http.path ?? '/', headers, body }, env);
      } catch (err) {
        env.logger.error('webhook handling failed', errorFields(err));
        response = { status: 500, body: { error: 'internal error' } };
      }
      return { statusCode: response.status, headers: { 'content-type': 'application/json' }, body: JSON.stringify(response.body) };
    }
    return handleEventBridge(e as Parameters<typeof handleEventBridge>[0], env);
  };
}
