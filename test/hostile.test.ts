// The hostile input corpus (issue #8): every `test/hostile/*.cases.ts` file, each case run by its
// kind against real code paths (parseReference, copyImage into a real distribution registry, the
// ingress handler over the embedded pipeline, parseConfig). Each case must end in a clear,
// specific error; nothing may reach the target registry's storage (read from disk, not asked of
// its API); and the process must go on: every copy case is followed by a good copy on the same
// client pool, and every group ends with a delivery or copy that works. See test/hostile/kit.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readdirSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { copyImage } from '../lib/engine/copy.js';
import { RegistryPool, type RegistryPoolOptions } from '../lib/engine/registries.js';
import { InvalidReferenceError, OciRelayError } from '../lib/errors.js';
import { PARSERS } from '../lib/events/index.js';
import { RegistryClient } from '../lib/oci/client.js';
import { anonymous, staticCredentials } from '../lib/oci/credentials.js';
import { destinationPolicy } from '../lib/oci/destination.js';
import type { RequestEvent } from '../lib/oci/transport.js';
import { EmbeddedPipeline } from '../lib/pipeline/embedded.js';
import { handleWebhook, ReplayCache, type HttpRequest, type IngressEnv } from '../lib/pipeline/ingress.js';
import { createLogger, nullMetrics } from '../lib/pipeline/telemetry.js';
import { parseReference } from '../lib/ref/index.js';
import { parseConfig } from '../lib/rules/config.js';
import { endpoints, requestsFor } from '../lib/rules/match.js';
import { rulesPool } from '../lib/cli/runtime.js';
import { auditRegistry, registryContents, startHttpServer, startRegistry, type RunningHttpServer, type RunningRegistry } from './support/index.js';
import { flatten, image, MediaTypes, SCRIPTED_REPO, type Answer, type Content, type CopyCase, type Delivery, type ExpectedError, type HostileCase, type ReferenceCase, type Routes, type RulesCase, type Scripted, type WebhookCase, type WebhookContext } from './hostile/kit.js';

// ---------------------------------------------------------------------------------------------
// The corpus

const dir = new URL('./hostile/', import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith('.cases.ts')).sort();
const cases: HostileCase[] = [];
for (const file of files) cases.push(...((await import(new URL(file, dir).href)) as { default: HostileCase[] }).default);
const ofKind = <K extends HostileCase['kind']>(...kinds: K[]): Array<Extract<HostileCase, { kind: K }>> => cases.filter((c): c is Extract<HostileCase, { kind: K }> => (kinds as string[]).includes(c.kind));

/** A repository-safe, unique name for a case. */
const slugs = new Map<HostileCase, string>();
function slug(c: HostileCase): string {
  let s = slugs.get(c);
  if (!s) {
    s = `c${String(cases.indexOf(c)).padStart(3, '0')}-${c.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40).replace(/-$/, '')}`;
    slugs.set(c, s);
  }
  return s;
}

const SECRET = 'hostile-Secret-7f3a9c';
const USER = 'hostile-user';
const GOOD_TOKEN = 'good-token';
const FAST = { retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50 }, timeouts: { connectMs: 1_000, headersMs: 5_000, bodyIdleMs: 5_000 } } satisfies RegistryPoolOptions;

// ---------------------------------------------------------------------------------------------
// The servers: a real source and target, a scripted source, a canary nobody may contact

let src: RunningRegistry;
let dst: RunningRegistry;
let scripted: RunningHttpServer;
let canary: RunningHttpServer;
const GOOD = image({ seed: 'good' });

interface Script {
  routes: Routes;
  challenge: string | undefined;
  manifests: Map<string, { bytes: Buffer; mediaType: string; digest: string }>;
  blobs: Map<string, Buffer>;
}
let script: Script | undefined;

function serveContent(content: Content | undefined): Pick<Script, 'manifests' | 'blobs'> {
  const manifests = new Map<string, { bytes: Buffer; mediaType: string; digest: string }>();
  const blobs = new Map<string, Buffer>();
  const add = (c: Content, rename?: string): void => {
    const flat = flatten(c);
    for (const b of flat.blobs) blobs.set(b.digest, b.bytes);
    for (const { manifest, tag } of flat.manifests) {
      const entry = { bytes: manifest.bytes, mediaType: manifest.mediaType, digest: manifest.digest };
      manifests.set(manifest.digest, entry);
      if (tag) manifests.set(rename && tag === 'v1' ? rename : tag, entry);
    }
  };
  add({ root: GOOD }, 'good');
  if (content) add(content);
  return { manifests, blobs };
}

function answer(res: ServerResponse, req: IncomingMessage, a: Answer): Promise<void> | void {
  if (typeof a === 'function') return a(req, res);
  const body = a.body === undefined ? Buffer.alloc(0) : Buffer.from(a.body);
  res.writeHead(a.status, { 'content-length': String(body.length), ...a.headers });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function route(routes: Routes, method: string, path: string): Answer | undefined {
  for (const [key, value] of Object.entries(routes)) {
    const space = key.indexOf(' ');
    const m = space > 0 ? key.slice(0, space) : undefined;
    const p = space > 0 ? key.slice(space + 1) : key;
    if (m ? m !== method : method !== 'GET' && method !== 'HEAD') continue;
    if (p.endsWith('*') ? path.startsWith(p.slice(0, -1)) : path === p) return value;
  }
  return undefined;
}

async function scriptedRegistry(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const method = req.method ?? 'GET';
  const path = new URL(req.url ?? '/', 'http://scripted').pathname;
  req.resume();
  const current = script ?? { routes: {}, challenge: undefined, ...serveContent(undefined) };
  const special = route(current.routes, method, path);
  if (special) return answer(res, req, special);
  if (current.challenge && path.startsWith('/v2/') && req.headers.authorization !== `Bearer ${GOOD_TOKEN}`) {
    return answer(res, req, { status: 401, headers: { 'www-authenticate': current.challenge, 'content-type': 'application/json' }, body: '{"errors":[{"code":"UNAUTHORIZED"}]}' });
  }
  if (path === '/v2/') return answer(res, req, { status: 200, headers: { 'content-type': 'application/json' }, body: '{}' });
  const prefix = `/v2/${SCRIPTED_REPO}/`;
  if (path.startsWith(`${prefix}manifests/`)) {
    const m = current.manifests.get(decodeURIComponent(path.slice(`${prefix}manifests/`.length)));
    if (!m) return answer(res, req, { status: 404, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}' });
    return answer(res, req, { status: 200, headers: { 'content-type': m.mediaType, 'docker-content-digest': m.digest }, body: m.bytes });
  }
  if (path.startsWith(`${prefix}blobs/`)) {
    const b = current.blobs.get(decodeURIComponent(path.slice(`${prefix}blobs/`.length)));
    if (!b) return answer(res, req, { status: 404, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}' });
    const range = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
    if (range) return answer(res, req, { status: 206, headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes ${range[1]}-${b.length - 1}/${b.length}` }, body: b.subarray(Number(range[1])) });
    return answer(res, req, { status: 200, headers: { 'content-type': 'application/octet-stream' }, body: b });
  }
  return answer(res, req, { status: 404, headers: { 'content-type': 'text/plain' }, body: 'not found' });
}

/** Pushes content to a real registry with ocirelay's own client (blobs, then children, then the root under v1). */
async function publish(host: string, repository: string, content: Content): Promise<void> {
  const client = new RegistryClient(host);
  try {
    const repo = client.repository(repository, 'push');
    const flat = flatten(content);
    for (const b of flat.blobs) await repo.pushBlob({ digest: b.digest, size: b.size }, () => Readable.from([b.bytes]));
    for (const { manifest, tag } of flat.manifests) await repo.putManifest(tag ?? manifest.digest, manifest.bytes, manifest.mediaType);
  } finally {
    await client.close();
  }
}

before(async () => {
  [src, dst, scripted, canary] = await Promise.all([
    startRegistry(),
    startRegistry(),
    startHttpServer(scriptedRegistry),
    startHttpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' }).end('canary');
    }),
  ]);
  await publish(src.host, 'src/good', { root: GOOD });
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop(), scripted?.stop(), canary?.stop()]);
});

// ---------------------------------------------------------------------------------------------
// Checks shared by every kind

function assertError(err: unknown, expected: ExpectedError): asserts err is OciRelayError {
  assert.ok(err instanceof OciRelayError, `expected an OciRelayError, got: ${err instanceof Error ? err.stack : String(err)}`);
  assert.equal(err.code, expected.code, `code of: ${err.message}`);
  assert.match(err.message, expected.message);
  assert.equal(err.side, expected.side ?? 'source', `side of: ${err.message}`);
  for (const text of [err.message, JSON.stringify(err), String(err.stack)]) assert.ok(!text.includes(SECRET), 'no credential in the error');
}

/** Nothing of a failed copy in the target's storage: no manifest, tag or open upload; blobs only when allowed. */
async function assertNothingPushed(repository: string, allowedBlobs: ReadonlySet<string>, requests: readonly RequestEvent[] = []): Promise<void> {
  const cancelled = requests.filter((e) => e.operation === 'cancel upload');
  const held = (await registryContents(dst.dataDir))[repository];
  if (held) {
    assert.deepEqual(held.tags, {}, `no tag in ${repository}`);
    assert.deepEqual(held.manifests, [], `no manifest in ${repository}`);
    // distribution 2.8 keeps a session whose closing PUT broke off mid-body and refuses its DELETE
    // (the client's _state no longer matches what it holds): such a session must at least have been cancelled.
    for (const id of held.uploads) assert.ok(cancelled.some((e) => e.url.includes(`/blobs/uploads/${id}`)), `upload session ${id} in ${repository} was left open without a DELETE`);
    for (const digest of held.layers) assert.ok(allowedBlobs.has(digest), `${digest} in ${repository} is not a verified blob of the source`);
  }
  assert.deepEqual(await auditRegistry(dst.dataDir), []);
}

const caught = (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (err: unknown) => err);

// ---------------------------------------------------------------------------------------------
// reference

async function runReference(c: ReferenceCase): Promise<void> {
  assert.throws(
    () => parseReference(c.input),
    (err: unknown) => {
      assert.ok(err instanceof InvalidReferenceError, `expected InvalidReferenceError, got ${String(err)}`);
      assert.equal(err.code, 'ERR_INVALID_REFERENCE');
      assert.match(err.message, c.message);
      if (c.part) assert.equal(err.part, c.part, err.message);
      assert.ok(err.message.length < 500, 'the message quotes a bounded part of the input');
      return true;
    },
  );
  // Through a copy, as source and as target: refused before any request leaves the process.
  const requests: RequestEvent[] = [];
  const pool = new RegistryPool({ ...FAST, onRequest: (e) => requests.push(e) });
  try {
    for (const request of [{ source: c.input, target: `${dst.host}/hostile/${slug(c)}:v1` }, { source: `${src.host}/src/good:v1`, target: c.input }]) {
      const err = await caught(copyImage(request, { registries: pool }));
      assert.ok(err instanceof OciRelayError && err.code === 'ERR_INVALID_REFERENCE', `copy ${JSON.stringify(request).slice(0, 200)}: ${String(err)}`);
    }
  } finally {
    await pool.close();
  }
  assert.deepEqual(requests, [], 'no request was made');
  await assertNothingPushed(`hostile/${slug(c)}`, new Set());
}

// ---------------------------------------------------------------------------------------------
// registry, auth, redirect: a copy from a hostile source

function scriptedView(): Scripted {
  return { host: scripted.host, port: scripted.port, canary: { host: canary.host, port: canary.port, requests: canary.requests }, requests: scripted.requests };
}

async function runCopy(c: CopyCase): Promise<void> {
  const content = c.content?.() ?? { root: image({ seed: slug(c) }) };
  const isScripted = c.routes !== undefined || c.challenge !== undefined;
  scripted.requests.length = 0;
  canary.requests.length = 0;
  const view = scriptedView();
  let source: string;
  if (isScripted) {
    script = { routes: c.routes?.(view) ?? {}, challenge: c.challenge?.(view), ...serveContent(content) };
    source = `${scripted.host}/${SCRIPTED_REPO}`;
  } else {
    await publish(src.host, `src/${slug(c)}`, content);
    source = `${src.host}/src/${slug(c)}`;
  }
  const sourceHost = source.slice(0, source.indexOf('/'));
  const requests: RequestEvent[] = [];
  const options = (): RegistryPoolOptions => ({
    ...FAST,
    ...(c.policy === 'rules' ? { guard: destinationPolicy({ namedHosts: [sourceHost, dst.host] }) } : {}),
    ...(c.credentials ? { credentials: staticCredentials({ [scripted.host]: { username: USER, password: SECRET } }) } : {}),
    ...c.client,
    onRequest: (e) => {
      requests.push(e);
      c.client?.onRequest?.(e);
    },
  });
  let pool = new RegistryPool(options());
  try {
    const at = typeof c.at === 'function' ? c.at(content) : (c.at ?? ':v1');
    const started = performance.now();
    const err = await caught(copyImage({ source: `${source}${at}`, target: `${dst.host}/hostile/${slug(c)}:v1`, ...c.request }, { registries: pool }));
    const elapsed = performance.now() - started;
    script = undefined;
    assertError(err, c.expect);
    if (c.withinMs !== undefined) assert.ok(elapsed < c.withinMs, `failed after ${Math.round(elapsed)} ms, expected within ${c.withinMs} ms`);
    await assertNothingPushed(`hostile/${slug(c)}`, new Set(c.siblingsMayLand ? flatten(content).blobs.map((b) => b.digest) : []), requests);
    c.check?.(view, err);

    // The next copy works: on the same client pool (a fresh one after auth cases, whose pool has
    // learned the hostile realm on purpose).
    if (c.kind === 'auth') {
      await pool.close();
      pool = new RegistryPool(options());
    }
    const good = isScripted ? `${scripted.host}/${SCRIPTED_REPO}:good` : `${src.host}/src/good:v1`;
    const result = await copyImage({ source: good, target: `${dst.host}/control/${slug(c)}:v1` }, { registries: pool });
    assert.equal(result.digest, GOOD.digest);
  } finally {
    script = undefined;
    await pool.close();
  }
}

// ---------------------------------------------------------------------------------------------
// webhook: the ingress handler over the embedded pipeline and real registries

const HOOK_TOKEN = 'hostile-hook-token-51d2';
const HMAC_KEY = 'hostile-hmac-key-8e07';

interface WebhookEnv {
  ctx: WebhookContext;
  ingress: IngressEnv;
  pipeline: EmbeddedPipeline;
  pool: RegistryPool;
  third: RunningHttpServer;
  submitted: unknown[];
  logs: string[];
}

async function webhookEnv(): Promise<WebhookEnv> {
  const third = await startHttpServer((req, res) => {
    req.resume();
    res.writeHead(404).end();
  });
  await Promise.all([publish(src.host, 'team/app', { root: image({ seed: 'team-app' }) }), publish(src.host, 'team/control', { root: image({ seed: 'team-control' }) })]);
  const config = parseConfig(
    JSON.stringify({
      rules: [{ name: 'team', from: `${src.host}/team`, to: `${dst.host}/mirror` }],
      webhooks: [
        { path: '/hooks/registry', kind: 'distribution', token: HOOK_TOKEN },
        { path: '/hooks/signed', kind: 'distribution', secret: HMAC_KEY },
      ],
    }),
  );
  const pool = rulesPool(config, anonymous);
  const logs: string[] = [];
  const logger = createLogger({ sink: (line) => logs.push(line) });
  const pipeline = new EmbeddedPipeline({ registries: pool, store: { create: () => Promise.reject(new Error('no exports in these rules')) }, logger });
  const submitted: unknown[] = [];
  const ingress: IngressEnv = {
    config,
    secrets: new Map([
      ['/hooks/registry', { token: HOOK_TOKEN }],
      ['/hooks/signed', { secret: HMAC_KEY }],
    ]),
    submit: async (request) => {
      submitted.push(request);
      await pipeline.submit(request);
    },
    parsers: PARSERS,
    logger,
    metrics: nullMetrics(),
    replays: new ReplayCache(),
  };
  const ctx: WebhookContext = {
    token: HOOK_TOKEN,
    hmacKey: HMAC_KEY,
    source: src.host,
    third: third.host,
    push: (o = {}) =>
      JSON.stringify({
        events: [
          {
            id: o.id ?? `event-${Math.random().toString(36).slice(2)}`,
            action: 'push',
            target: { mediaType: MediaTypes.ociManifest, digest: `sha256:${'a'.repeat(64)}`, repository: o.repository ?? 'team/app', tag: o.tag ?? 'v1', ...(o.url ? { url: o.url } : {}) },
            request: { host: o.host ?? src.host },
          },
        ],
      }),
    sign: (body, key = HMAC_KEY) => `sha256=${createHmac('sha256', key).update(body).digest('hex')}`,
  };
  return { ctx, ingress, pipeline, pool, third, submitted, logs };
}

const toRequest = (d: Delivery): HttpRequest => ({
  method: d.method ?? 'POST',
  path: d.path ?? '/hooks/registry',
  headers: Object.fromEntries(Object.entries({ 'content-type': 'application/json', ...d.headers }).map(([k, v]) => [k.toLowerCase(), v])),
  body: Buffer.from(d.body),
});

async function runWebhook(c: WebhookCase, w: WebhookEnv): Promise<void> {
  for (const d of c.before?.(w.ctx) ?? []) {
    const first = await handleWebhook(toRequest(d), w.ingress);
    assert.equal(first.status, 202, `the delivery before the case is accepted: ${JSON.stringify(first.body)}`);
  }
  await w.pipeline.drain();
  const snapshot = await registryContents(dst.dataDir);
  w.submitted.length = 0;
  const response = await handleWebhook(toRequest(c.request(w.ctx)), w.ingress);
  assert.equal(response.status, c.expect.status, JSON.stringify(response.body));
  if (c.expect.message) assert.match(String(response.body.error ?? response.body.status), c.expect.message);
  if (c.expect.accepted !== undefined) assert.equal(response.body.accepted, c.expect.accepted);
  assert.equal(w.submitted.length, 0, 'nothing handed to fan-out');
  await w.pipeline.drain();
  assert.deepEqual(await registryContents(dst.dataDir), snapshot, 'the target is as it was');
  assert.equal(w.third.requests.length, 0, 'a host no rule names was never contacted');
  assert.equal(w.pipeline.deadLetters.size, 0, 'no dead letters');
  for (const line of w.logs) assert.ok(!line.includes(HOOK_TOKEN) && !line.includes(HMAC_KEY), `no webhook secret in the logs: ${line}`);
}

// ---------------------------------------------------------------------------------------------
// rules

function runRules(c: RulesCase): void {
  const text = typeof c.config === 'string' ? c.config : JSON.stringify(c.config);
  if (c.message) {
    assert.throws(
      () => parseConfig(text, 'rules.yaml'),
      (err: unknown) => {
        assert.ok(err instanceof OciRelayError, `expected an OciRelayError, got ${String(err)}`);
        assert.equal(err.code, 'ERR_CONFIG', err.message);
        assert.match(err.message, c.message as RegExp);
        assert.match(err.message, /^rules\.yaml/, 'the message names the file');
        return true;
      },
    );
    return;
  }
  const config = parseConfig(text, 'rules.yaml');
  for (const m of c.matches ?? []) {
    const started = performance.now();
    const matched = config.rules.some((rule) => requestsFor({ registry: endpoints(rule).source.registry, repository: m.repository, tag: m.tag }, { ...config, rules: [rule] }, { id: 'hostile' }).length > 0);
    const elapsed = performance.now() - started;
    assert.equal(matched, m.matched, `${m.repository}:${m.tag}`);
    assert.ok(elapsed < 250, `${m.repository}:${m.tag} decided in ${Math.round(elapsed)} ms`);
  }
}

// ---------------------------------------------------------------------------------------------
// The groups

describe('hostile references', () => {
  for (const c of ofKind('reference')) test(c.name, () => runReference(c));
});

for (const kind of ['registry', 'auth', 'redirect'] as const) {
  describe(`hostile ${kind} answers`, () => {
    for (const c of ofKind(kind)) test(c.name, { timeout: 30_000 }, () => runCopy(c));
  });
}

describe('hostile webhooks', () => {
  let w: WebhookEnv;
  before(async () => {
    w = await webhookEnv();
  });
  after(async () => {
    w?.pipeline.stop();
    await Promise.all([w?.pool.close(), w?.third.stop()]);
  });
  for (const c of ofKind('webhook')) test(c.name, { timeout: 30_000 }, () => runWebhook(c, w));
  test('after all of them, a good delivery is mirrored', async () => {
    const body = w.ctx.push({ repository: 'team/control' });
    const response = await handleWebhook(toRequest({ body, headers: { authorization: `Bearer ${HOOK_TOKEN}` } }), w.ingress);
    assert.equal(response.status, 202);
    assert.equal(response.body.accepted, 1);
    await w.pipeline.drain();
    assert.ok((await registryContents(dst.dataDir))['mirror/control']?.tags['v1'], 'mirrored');
  });
});

describe('hostile rules files', () => {
  for (const c of ofKind('rules')) test(c.name, () => runRules(c));
});

test('the corpus has every kind', () => {
  for (const kind of ['reference', 'registry', 'auth', 'redirect', 'webhook', 'rules'] as const) assert.ok(ofKind(kind).length > 0, kind);
});
