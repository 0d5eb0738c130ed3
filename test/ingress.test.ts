// Ingress (pure: no registry is contacted): authentication before parsing, clear answers for bad
// input, hosts from the rules only, replay de-duplication, burst coalescing, schedules and ECR events.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { handleEventBridge, handleWebhook, ReplayCache, type IngressEnv } from '../lib/pipeline/ingress.js';
import { parseEcrEvent } from '../lib/events/ecr.js';
import { PARSERS } from '../lib/events/index.js';
import { parseSyncMessage, serialise, type ReplicationRequest, type SyncMessage } from '../lib/pipeline/messages.js';
import { createLogger, nullMetrics } from '../lib/pipeline/telemetry.js';
import { parseConfig, resolveSecret } from '../lib/rules/config.js';
import { requestsFor, expandDestination, globMatches } from '../lib/rules/match.js';

const DIGEST = `sha256:${'c'.repeat(64)}`;

function setup(overrides: Partial<IngressEnv> = {}): { env: IngressEnv; submitted: ReplicationRequest[]; lines: string[] } {
  const config = parseConfig(
    JSON.stringify({
      rules: [
        { name: 'team', from: 'src.example.com/team', to: 'mirror.example.com/copies', platforms: ['linux/arm64'], annotations: { 'org.example.mirrored': 'true' }, export: { format: 'layers', to: 's3://exports-bucket/{repository}/{tag}.tar' } },
        { name: 'ecr', from: '123456789012.dkr.ecr.eu-west-1.amazonaws.com', to: 'mirror.example.com/ecr' },
      ],
      webhooks: [
        { path: '/hooks/registry', kind: 'distribution', token: 'dist-token' },
        { path: '/hooks/header', kind: 'distribution', token: 'header-token', header: 'X-Registry-Token' },
        { path: '/hooks/signed', kind: 'distribution', secret: 'hmac-key' },
        { path: '/hooks/open-3b1c9a7e', kind: 'distribution', unauthenticated: true },
      ],
    }),
  );
  const submitted: ReplicationRequest[] = [];
  const lines: string[] = [];
  const env: IngressEnv = {
    config,
    secrets: new Map([
      ['/hooks/registry', { token: 'dist-token' }],
      ['/hooks/header', { token: 'header-token' }],
      ['/hooks/signed', { secret: 'hmac-key' }],
    ]),
    submit: async (r) => void submitted.push(r),
    logger: createLogger({ sink: (l) => lines.push(l) }),
    metrics: nullMetrics(),
    replays: new ReplayCache(),
    ecrParser: parseEcrEvent,
    ...overrides,
  };
  return { env, submitted, lines };
}

function envelope(events: Array<Record<string, unknown>>): Buffer {
  return Buffer.from(JSON.stringify({ events }));
}

function push(repository: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { id: `evt-${repository}-${String(extra.tag ?? '')}`, action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: DIGEST, repository, tag: 'v1', ...extra }, request: { host: 'src.example.com' } };
}

const post = (path: string, body: Buffer, headers: Record<string, string> = {}) => ({ method: 'POST', path, headers, body });

describe('webhook authentication comes before parsing', () => {
  const cases: Array<[string, ReturnType<typeof post>, number, RegExp]> = [
    ['no token', post('/hooks/registry', Buffer.from('not even json')), 401, /missing Authorization/],
    ['wrong token', post('/hooks/registry', Buffer.from('not even json'), { authorization: 'Bearer nope' }), 403, /bad token/],
    ['token in the wrong scheme', post('/hooks/registry', Buffer.from('{}'), { authorization: 'Basic ZGlzdC10b2tlbg==' }), 401, /missing/],
    ['custom header missing', post('/hooks/header', Buffer.from('{}'), { authorization: 'Bearer header-token' }), 401, /missing X-Registry-Token/],
    ['custom header wrong', post('/hooks/header', Buffer.from('{}'), { 'x-registry-token': 'nope' }), 403, /bad token/],
    ['signature missing', post('/hooks/signed', Buffer.from('{}')), 401, /X-Hub-Signature-256/],
    ['signature forged', post('/hooks/signed', Buffer.from('{}'), { 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` }), 403, /bad signature/],
    ['signature of another body', post('/hooks/signed', Buffer.from('{"events":[]}'), { 'x-hub-signature-256': `sha256=${createHmac('sha256', 'hmac-key').update('{}').digest('hex')}` }), 403, /bad signature/],
    ['unknown path', post('/hooks/elsewhere', Buffer.from('{}')), 404, /no webhook/],
    ['GET instead of POST', { ...post('/hooks/registry', Buffer.alloc(0)), method: 'GET' }, 405, /POST/],
  ];
  for (const [name, request, status, message] of cases) {
    test(name, async () => {
      const { env, submitted } = setup();
      const answer = await handleWebhook(request, env);
      assert.equal(answer.status, status);
      assert.match(String(answer.body.error), message);
      assert.equal(submitted.length, 0);
    });
  }

  test('a valid HMAC over the raw body passes; the key never reaches the logs', async () => {
    const { env, submitted, lines } = setup();
    const body = envelope([push('team/app')]);
    const signature = `sha256=${createHmac('sha256', 'hmac-key').update(body).digest('hex')}`;
    const answer = await handleWebhook(post('/hooks/signed', body, { 'x-hub-signature-256': signature }), env);
    assert.equal(answer.status, 202);
    assert.equal(submitted.length, 1);
    assert.ok(!lines.some((l) => l.includes('hmac-key') || l.includes('dist-token')));
  });

  test('an unauthenticated endpoint (its unguessable path is the secret) accepts', async () => {
    const { env, submitted } = setup();
    assert.equal((await handleWebhook(post('/hooks/open-3b1c9a7e', envelope([push('team/app')])), env)).status, 202);
    assert.equal(submitted.length, 1);
  });
});

describe('bad bodies get 4xx, never 500', () => {
  const auth = { authorization: 'Bearer dist-token' };
  const cases: Array<[string, Buffer, number, RegExp]> = [
    ['oversized', Buffer.alloc(1024 * 1024 + 1, 0x20), 413, /larger than/],
    ['malformed JSON', Buffer.from('{"events": ['), 400, /not JSON/],
    ['JSON of another shape', Buffer.from('{"hello": "world"}'), 400, /\{"events"/],
    ['a JSON string', Buffer.from('"events"'), 400, /\{"events"/],
    ['deeply nested JSON', Buffer.from(`${'['.repeat(50_000)}${']'.repeat(50_000)}`), 400, /events/],
  ];
  for (const [name, body, status, message] of cases) {
    test(name, async () => {
      const { env, submitted } = setup();
      const answer = await handleWebhook(post('/hooks/registry', body, auth), env);
      assert.equal(answer.status, status);
      assert.match(String(answer.body.error), message);
      assert.equal(submitted.length, 0);
    });
  }

  test('events with invalid fields are dropped, not submitted', async () => {
    const { env, submitted } = setup();
    const answer = await handleWebhook(post('/hooks/registry', envelope([push('Team/App'), push('team/app', { tag: 'bad tag!' }), push('team/app', { digest: 'sha256:nothex', tag: undefined }), push('team/../etc')]), auth), env);
    assert.equal(answer.status, 202);
    assert.equal(answer.body.accepted, 0);
    assert.equal(answer.body.ignored, 4);
    assert.equal(submitted.length, 0);
  });
});

describe('the payload is a hint: hosts come from the rules', () => {
  const auth = { authorization: 'Bearer dist-token' };
  test('a push inside a rule becomes a request on the rule\'s hosts, with its options', async () => {
    const { env, submitted } = setup();
    await handleWebhook(post('/hooks/registry', envelope([push('team/app')]), auth), env);
    assert.equal(submitted.length, 1);
    const r = submitted[0] as ReplicationRequest;
    assert.equal(r.source, 'src.example.com/team/app:v1');
    assert.equal(r.target, 'mirror.example.com/copies/app:v1');
    assert.deepEqual(r.platforms, ['linux/arm64']);
    assert.deepEqual(r.annotations, { 'org.example.mirrored': 'true' });
    assert.deepEqual(r.export, { format: 'layers', destination: 's3://exports-bucket/copies/app/v1.tar' });
  });

  test('an event naming another host matches nothing and is acknowledged', async () => {
    const { env, submitted, lines } = setup();
    const evil = push('team/app');
    (evil.request as Record<string, unknown>).host = '169.254.169.254';
    const answer = await handleWebhook(post('/hooks/registry', envelope([evil]), auth), env);
    assert.equal(answer.status, 202);
    assert.deepEqual(answer.body, { accepted: 0, ignored: 1 });
    assert.equal(submitted.length, 0);
    assert.ok(lines.some((l) => l.includes('event outside every rule ignored')));
  });

  test('a repository outside the prefix (or a prefix lookalike) matches nothing', async () => {
    const { env, submitted } = setup();
    await handleWebhook(post('/hooks/registry', envelope([push('teamster/app'), push('other/app'), push('team')]), auth), env);
    assert.deepEqual(submitted.map((r) => r.target), ['mirror.example.com/copies:v1']);
  });

  test('the tag is copied by tag (re-resolved at the source), the payload digest is not trusted', async () => {
    const { env, submitted } = setup();
    await handleWebhook(post('/hooks/registry', envelope([push('team/app', { digest: `sha256:${'d'.repeat(64)}` })]), auth), env);
    assert.ok(!(submitted[0] as ReplicationRequest).source.includes('@'));
  });

  test('an index push (children by digest, then the tagged index) becomes one request', async () => {
    const { env, submitted } = setup();
    const children = [push('team/app', { tag: undefined, digest: `sha256:${'1'.repeat(64)}` }), push('team/app', { tag: undefined, digest: `sha256:${'2'.repeat(64)}` })];
    const blob = { action: 'push', target: { mediaType: 'application/octet-stream', digest: DIGEST, repository: 'team/app' } };
    await handleWebhook(post('/hooks/registry', envelope([blob, ...children, push('team/app', { mediaType: 'application/vnd.oci.image.index.v1+json' })]), auth), env);
    assert.deepEqual(submitted.map((r) => r.source), ['src.example.com/team/app:v1']);
  });

  test('a replayed delivery (same event ids) is not submitted twice', async () => {
    const { env, submitted } = setup();
    const body = envelope([push('team/app')]);
    assert.equal((await handleWebhook(post('/hooks/registry', body, auth), env)).body.accepted, 1);
    assert.equal((await handleWebhook(post('/hooks/registry', body, auth), env)).body.accepted, 0);
    assert.equal(submitted.length, 1);
  });

  test('a fan-out that is down gets the delivery retried (503), not dropped', async () => {
    const { env } = setup({ submit: async () => { throw new Error('invoke failed'); } });
    assert.equal((await handleWebhook(post('/hooks/registry', envelope([push('team/app')]), auth), env)).status, 503);
  });

  test('the retry of a delivery answered 503 is accepted, not taken for a replay', async () => {
    let down = true;
    const submitted: ReplicationRequest[] = [];
    const { env } = setup({ submit: async (r) => { if (down) throw new Error('invoke failed'); submitted.push(r); } });
    // Distribution: the retry carries the same event ids. GitHub: the same X-GitHub-Delivery.
    const body = envelope([push('team/app')]);
    assert.equal((await handleWebhook(post('/hooks/registry', body, auth), env)).status, 503);
    assert.equal(submitted.length, 0);
    down = false;
    const retry = await handleWebhook(post('/hooks/registry', body, auth), env);
    assert.equal(retry.status, 202);
    assert.equal(retry.body.accepted, 1);
    assert.deepEqual(submitted.map((r) => r.target), ['mirror.example.com/copies/app:v1']);
    // Once handed over, the same delivery again is a replay.
    assert.equal((await handleWebhook(post('/hooks/registry', body, auth), env)).body.accepted, 0);
    assert.equal(submitted.length, 1);
  });
});

describe('every webhook kind, authenticated through handleWebhook', () => {
  // Vendor-documented deliveries (test/fixtures/events), each on an endpoint protected the way its
  // source can protect it: a bearer token (Harbor's auth header), a custom header (ACR's custom
  // headers), GitHub's HMAC, or, for sources that send no credential at all (Docker Hub, Quay, GAR
  // Pub/Sub push without OIDC verification), only an unguessable path.
  const fixture = (name: string): { headers: Record<string, string>; body: Buffer } => {
    const f = JSON.parse(readFileSync(new URL(`fixtures/events/${name}.json`, import.meta.url), 'utf8')) as { headers?: Record<string, string>; body: unknown };
    return { headers: { ...f.headers }, body: Buffer.from(JSON.stringify(f.body)) };
  };
  const GH_SECRET = 'gh-webhook-secret-7f3a';
  const sign = (body: Buffer | string, key = GH_SECRET): string => `sha256=${createHmac('sha256', key).update(body).digest('hex')}`;
  const KIND_RULES = [
    { from: 'hub.harbor.com/test-webhook', to: 'mirror.example.com/harbor' },
    { from: 'myregistry.azurecr.io/hello-world', to: 'mirror.example.com/acr/hello-world' },
    { from: 'ghcr.io/noahvdaa', to: 'mirror.example.com/github' },
    { from: 'docker.io/svendowideit/testhook', to: 'mirror.example.com/hub/testhook' },
    { from: 'quay.example.com:8443/acme', to: 'mirror.example.com/quay' },
    { from: 'us-east1-docker.pkg.dev/my-project', to: 'mirror.example.com/gar' },
  ];
  function kinds(submit?: IngressEnv['submit'], rules: unknown[] = KIND_RULES): { env: IngressEnv; submitted: ReplicationRequest[]; lines: string[] } {
    const config = parseConfig(
      JSON.stringify({
        rules,
        webhooks: [
          { path: '/hooks/harbor', kind: 'harbor', token: 'harbor-token' },
          { path: '/hooks/acr', kind: 'acr', token: 'acr-token', header: 'X-Acr-Token' },
          { path: '/hooks/github', kind: 'github', secret: GH_SECRET },
          { path: '/hooks/hub-5f0c2a9e41d7b3c8', kind: 'dockerhub', unauthenticated: true },
          { path: '/hooks/quay-9d41e07b2c6a8f13', kind: 'quay', unauthenticated: true },
          { path: '/hooks/gar-2b7e5c0a9f4d1e86', kind: 'gar', unauthenticated: true },
        ],
      }),
    );
    const submitted: ReplicationRequest[] = [];
    const lines: string[] = [];
    const env: IngressEnv = {
      config,
      secrets: new Map([['/hooks/harbor', { token: 'harbor-token' }], ['/hooks/acr', { token: 'acr-token' }], ['/hooks/github', { secret: GH_SECRET }]]),
      submit: submit ?? (async (r) => void submitted.push(r)),
      parsers: PARSERS,
      logger: createLogger({ sink: (l) => lines.push(l) }),
      metrics: nullMetrics(),
      replays: new ReplayCache(),
    };
    return { env, submitted, lines };
  }

  const gh = fixture('github/container-published-tagged');
  const signedGitHub = { ...gh.headers, 'x-hub-signature-256': sign(gh.body) };
  const harbor = fixture('harbor/docs-default-push');
  const acr = fixture('acr/push');
  const { 'x-hub-signature-256': _placeholder, ...unsignedGitHub } = gh.headers;
  // Each refusal: what is sent, and the answer (401 no credential, 403 a wrong one).
  const cases: Array<{ kind: string; path: string; body: Buffer; good: Record<string, string>; refused: Array<[string, Record<string, string>, 401 | 403, Buffer?]>; target: string }> = [
    {
      kind: 'harbor (Authorization: Bearer, Harbor\'s auth header)',
      path: '/hooks/harbor',
      body: harbor.body,
      good: { ...harbor.headers, authorization: 'Bearer harbor-token' },
      refused: [
        ['no Authorization', { 'content-type': 'application/json' }, 401],
        ['the token without its scheme', { authorization: 'harbor-token' }, 401],
        ['a wrong token', { ...harbor.headers, authorization: 'Bearer harbor-tokeN' }, 403],
      ],
      target: 'mirror.example.com/harbor/debian:latest',
    },
    {
      kind: 'acr (a custom header)',
      path: '/hooks/acr',
      body: acr.body,
      good: { ...acr.headers, 'x-acr-token': 'acr-token' },
      refused: [
        ['the token in Authorization instead of the configured header', { ...acr.headers, authorization: 'Bearer acr-token' }, 401],
        ['a wrong token', { ...acr.headers, 'x-acr-token': 'acr-token-2' }, 403],
      ],
      target: 'mirror.example.com/acr/hello-world:v1',
    },
    {
      kind: 'github (X-Hub-Signature-256 over the raw body)',
      path: '/hooks/github',
      body: gh.body,
      good: signedGitHub,
      refused: [
        ['no signature', unsignedGitHub, 401],
        ['a SHA-1 signature only', { ...unsignedGitHub, 'x-hub-signature': `sha1=${createHmac('sha1', GH_SECRET).update(gh.body).digest('hex')}` }, 401],
        ['a signature with another key', { ...gh.headers, 'x-hub-signature-256': sign(gh.body, 'guessed-secret') }, 403],
        ['the signature of another body', signedGitHub, 403, Buffer.from(gh.body.toString().replace('"latest"', '"evil"'))],
        ['a placeholder signature', gh.headers, 403],
      ],
      target: 'mirror.example.com/github/repositoryname/frontend:latest',
    },
  ];
  for (const c of cases) {
    test(`${c.kind}: good is accepted; without credentials 401, forged 403, nothing submitted`, async () => {
      const { env, submitted } = kinds();
      const good = await handleWebhook(post(c.path, c.body, c.good), env);
      assert.equal(good.status, 202, JSON.stringify(good.body));
      assert.deepEqual(submitted.map((r) => r.target), [c.target]);
      for (const [name, headers, status, body] of c.refused) {
        const fresh = kinds();
        const answer = await handleWebhook(post(c.path, body ?? c.body, headers), fresh.env);
        assert.equal(answer.status, status, name);
        assert.equal(fresh.submitted.length, 0, name);
      }
    });
  }

  test('github: the signature example of GitHub\'s documentation is accepted (then refused as not JSON)', async () => {
    // docs.github.com "Validating webhook deliveries", "Testing the webhook payload validation".
    const { env } = kinds();
    env.secrets = new Map([['/hooks/github', { secret: "It's a Secret to Everybody" }]]);
    const documented = 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17';
    const answer = await handleWebhook(post('/hooks/github', Buffer.from('Hello, World!'), { 'x-hub-signature-256': documented }), env);
    assert.equal(answer.status, 400);
    assert.match(String(answer.body.error), /not JSON/);
    assert.equal((await handleWebhook(post('/hooks/github', Buffer.from('Hello, World?'), { 'x-hub-signature-256': documented }), env)).status, 403);
  });

  test('github: a delivery is de-duplicated by X-GitHub-Delivery; a redelivery after a 503 is accepted', async () => {
    let down = true;
    const submitted: ReplicationRequest[] = [];
    const { env } = kinds(async (r) => {
      if (down) throw new Error('invoke failed');
      submitted.push(r);
    });
    assert.equal((await handleWebhook(post('/hooks/github', gh.body, signedGitHub), env)).status, 503);
    down = false;
    assert.equal((await handleWebhook(post('/hooks/github', gh.body, signedGitHub), env)).status, 202, 'the redelivery is not a replay');
    const replay = await handleWebhook(post('/hooks/github', gh.body, signedGitHub), env);
    assert.deepEqual(replay, { status: 200, body: { status: 'duplicate', deliveryId: gh.headers['x-github-delivery'] } });
    assert.equal(submitted.length, 1);
    // Another delivery id is another delivery (GitHub's "redeliver" keeps the id; a new event gets a new one).
    const other = { ...signedGitHub, 'x-github-delivery': '7a8b9c0d-4f50-11ed-8a6b-0242ac120002' };
    assert.equal((await handleWebhook(post('/hooks/github', gh.body, other), env)).status, 202);
    assert.equal(submitted.length, 2);
  });

  const open: Array<[string, string, string, string]> = [
    ['dockerhub', '/hooks/hub-5f0c2a9e41d7b3c8', 'dockerhub/docs-example', 'mirror.example.com/hub/testhook:latest'],
    ['quay', '/hooks/quay-9d41e07b2c6a8f13', 'quay/quay-sample-several-tags', 'mirror.example.com/quay/app:foo'],
    ['gar (Pub/Sub push)', '/hooks/gar-2b7e5c0a9f4d1e86', 'gar/insert-tagged', 'mirror.example.com/gar/my-repo/hello-world:1.1'],
  ];
  for (const [kind, path, name, target] of open) {
    test(`${kind}: no credential exists, the unguessable path is the secret (any other path is 404)`, async () => {
      const { env, submitted, lines } = kinds();
      const f = fixture(name);
      assert.equal((await handleWebhook(post(path, f.body, f.headers), env)).status, 202);
      // An event outside the rules is logged, naming the endpoint by a prefix of its path only: the path is the secret.
      const elsewhere = kinds(undefined, [{ from: 'elsewhere.example/x', to: 'mirror.example.com/x' }]);
      assert.equal((await handleWebhook(post(path, f.body, f.headers), elsewhere.env)).status, 202);
      const logged = [...lines, ...elsewhere.lines];
      assert.ok(logged.some((l) => l.includes('event outside every rule ignored') && l.includes(`${path.slice(0, path.lastIndexOf('/') + 5)}…`)), logged.join('\n'));
      assert.ok(!logged.some((l) => l.includes(path)), 'the unguessable path never reaches the logs');
      assert.ok(submitted.some((r) => r.target === target), submitted.map((r) => r.target).join(', '));
      const before = submitted.length;
      for (const guess of ['/hooks/dockerhub', '/hooks/quay', '/hooks/gar', `${path.slice(0, -1)}0`]) {
        assert.equal((await handleWebhook(post(guess, f.body, f.headers), env)).status, 404, guess);
      }
      assert.equal(submitted.length, before);
    });
  }
});

describe('EventBridge', () => {
  test('ECR Image Action PUSH SUCCESS becomes a request; other actions are ignored', async () => {
    const { env, submitted } = setup();
    const event = { id: 'e1', source: 'aws.ecr', 'detail-type': 'ECR Image Action', account: '123456789012', region: 'eu-west-1', detail: { result: 'SUCCESS', 'repository-name': 'app/api', 'image-digest': DIGEST, 'action-type': 'PUSH', 'image-tag': '2.0' } };
    await handleEventBridge(event, env);
    assert.deepEqual(submitted.map((r) => [r.source, r.target]), [['123456789012.dkr.ecr.eu-west-1.amazonaws.com/app/api:2.0', 'mirror.example.com/ecr/app/api:2.0']]);
    await handleEventBridge({ ...event, detail: { ...event.detail, 'action-type': 'DELETE' } }, env);
    await handleEventBridge({ ...event, detail: { ...event.detail, result: 'FAILURE' } }, env);
    await handleEventBridge({ ...event, account: '999999999999' }, env);
    assert.equal(submitted.length, 1);
  });

  test('a scheduled "sync these" event submits its valid requests and reports the invalid ones', async () => {
    const { env, submitted } = setup();
    const result = await handleEventBridge({ id: 's1', source: 'ocirelay.schedule', 'detail-type': 'Scheduled Sync', detail: { requests: [{ source: 'a.example/x:1', target: 'b.example/x:1' }, { source: 'not a ref', target: 'b.example/y' }] } }, env);
    assert.deepEqual(result, { accepted: 1, invalid: 1 });
    assert.equal(submitted[0]?.source, 'a.example/x:1');
  });

  test('a schedule without requests hands one sync message per rule to fan-out, and lists nothing itself', async () => {
    const messages: SyncMessage[] = [];
    const { env, lines } = setup({ submitSync: async (m) => void messages.push(parseSyncMessage(serialise(m))) });
    const all = await handleEventBridge({ id: 'ev-1', source: 'ocirelay.schedule', 'detail-type': 'Scheduled Sync', detail: {} }, env);
    assert.deepEqual(all, { run: 'schedule/ev-1', rules: 2 });
    assert.deepEqual(messages, [
      { v: 1, type: 'sync', id: 'schedule/ev-1', rule: { index: 0, name: 'team' } },
      { v: 1, type: 'sync', id: 'schedule/ev-1', rule: { index: 1, name: 'ecr' } },
    ]);
    messages.length = 0;
    // By name or by index; names that match no rule are reported.
    const some = await handleEventBridge({ id: 'ev-2', source: 'ocirelay.schedule', detail: { rules: ['1', 'nope'] } }, env);
    assert.deepEqual(some, { run: 'schedule/ev-2', rules: 1, unknownRules: ['nope'] });
    assert.deepEqual(messages.map((m) => m.rule), [{ index: 1, name: 'ecr' }]);
    assert.ok(lines.some((l) => l.includes('the schedule names rules the configuration does not have') && l.includes('nope')));
  });

  test('a schedule whose sync cannot be handed over fails the invocation (Lambda retries the event) after trying every rule', async () => {
    const tried: number[] = [];
    const { env } = setup({ submitSync: async (m) => { tried.push(m.rule.index); if (m.rule.index === 0) throw new Error('invoke failed'); } });
    await assert.rejects(handleEventBridge({ id: 'ev-3', source: 'ocirelay.schedule', detail: {} }, env), /scheduled sync schedule\/ev-3: the sync of rules team could not be handed to fan-out/);
    assert.deepEqual(tried, [0, 1]);
    const { env: without } = setup();
    assert.deepEqual(await handleEventBridge({ source: 'ocirelay.schedule', detail: {} }, without), { error: 'this runtime has no sync' });
  });
});

describe('rules', () => {
  test('placeholders, globs, secrets from the environment', async () => {
    assert.equal(expandDestination('s3://b/{registry}/{repository}/{tag}.tar', { registry: 'host:5000', repository: 'a/b', digest: DIGEST }), `s3://b/host-5000/a/b/${DIGEST.replace(':', '-')}.tar`);
    assert.ok(globMatches('app*', 'app-server'));
    assert.ok(!globMatches('app*', 'my-app'));
    assert.ok(globMatches('a?c', 'abc'));
    assert.ok(!globMatches('a.c', 'abc'), 'dots are literal');
    assert.equal(await resolveSecret({ env: 'HOOK_SECRET_X' }, { HOOK_SECRET_X: 's3cr3t' }), 's3cr3t');
    await assert.rejects(resolveSecret({ env: 'MISSING_X' }, {}), /MISSING_X.*not set/);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['no rules', { rules: [] }, /rules/],
    ['a bad from', { rules: [{ from: 'Bad Host/x', to: 'b.example/x' }] }, /from/],
    ['a bad regex', { rules: [{ from: 'a.example/x', to: 'b.example/x', tags: { include: ['('] } }] }, /regular expression/],
    ['a bad glob', { rules: [{ from: 'a.example/x', to: 'b.example/x', repositories: { include: ['a|b'] } }] }, /wildcards/],
    ['a bad platform', { rules: [{ from: 'a.example/x', to: 'b.example/x', platforms: ['linux'] }] }, /os\/architecture/],
    ['an unknown field', { rules: [{ from: 'a.example/x', to: 'b.example/x', tagz: {} }] }, /tagz|unrecognized/i],
    ['an export not on S3', { rules: [{ from: 'a.example/x', to: 'b.example/x', export: { to: '/tmp/x.tar' } }] }, /s3:\/\//],
    ['a github hook without secret', { rules: [{ from: 'a.example/x', to: 'b.example/x' }], webhooks: [{ path: '/h', kind: 'github', token: 't' }] }, /HMAC secret/],
    ['a hook without credentials', { rules: [{ from: 'a.example/x', to: 'b.example/x' }], webhooks: [{ path: '/h', kind: 'distribution' }] }, /token or secret/],
    ['a duplicate hook path', { rules: [{ from: 'a.example/x', to: 'b.example/x' }], webhooks: [{ path: '/h', kind: 'distribution', token: 'a' }, { path: '/h', kind: 'quay', token: 'b' }] }, /used twice/],
  ];
  for (const [name, config, message] of bad) {
    test(`a rules file with ${name} is refused clearly`, () => {
      assert.throws(() => parseConfig(JSON.stringify(config)), (err: Error & { code?: string }) => err.code === 'ERR_CONFIG' && message.test(err.message));
    });
  }
  test('YAML is accepted and a broken document named', () => {
    assert.equal(parseConfig('rules:\n  - from: a.example/x\n    to: b.example/y\n').rules.length, 1);
    assert.throws(() => parseConfig('rules: [', 'rules.yaml'), /rules.yaml is not valid YAML/);
  });
  test('Docker Hub prefixes: a one-component prefix is a namespace, and also its official image', () => {
    const cases: Array<{ from: string; to: string; pushed: string; expected: string | undefined }> = [
      { from: 'docker.io/myorg', to: 'mirror.example/hub', pushed: 'myorg/app', expected: 'mirror.example/hub/app:v1' },
      { from: 'docker.io/myorg', to: 'mirror.example/hub', pushed: 'myorg/team/app', expected: 'mirror.example/hub/team/app:v1' },
      { from: 'docker.io/myorg', to: 'mirror.example/hub', pushed: 'myorgx/app', expected: undefined },
      { from: 'docker.io/alpine', to: 'mirror.example/alpine', pushed: 'library/alpine', expected: 'mirror.example/alpine:v1' },
      { from: 'docker.io/library', to: 'mirror.example/official', pushed: 'library/alpine', expected: 'mirror.example/official/alpine:v1' },
      { from: 'index.docker.io/MyOrg', to: 'mirror.example/hub', pushed: 'myorg/app', expected: undefined },
      { from: 'docker.io/myorg/app', to: 'mirror.example/app', pushed: 'myorg/app', expected: 'mirror.example/app:v1' },
      { from: 'registry.example/alpine', to: 'mirror.example/alpine', pushed: 'library/alpine', expected: undefined },
      { from: 'mirror.example/x', to: 'docker.io/myorg', pushed: 'x/app', expected: 'registry-1.docker.io/myorg/app:v1' },
    ];
    for (const c of cases) {
      let config;
      try {
        config = parseConfig(JSON.stringify({ rules: [{ from: c.from, to: c.to }] }));
      } catch (err) {
        assert.equal(c.expected, undefined, `${c.from}: ${(err as Error).message}`);
        continue;
      }
      const registry = c.from.startsWith('registry.example') ? 'registry.example' : c.from.startsWith('mirror.example') ? 'mirror.example' : 'registry-1.docker.io';
      const requests = requestsFor({ registry, repository: c.pushed, tag: 'v1' }, config, { id: 't' });
      assert.deepEqual(requests.map((r) => r.request.target), c.expected ? [c.expected] : [], `${c.from} <- ${c.pushed}`);
    }
  });

  test('a push by digest alone is not mirrored on its own (it travels with its tagged image)', () => {
    const config = parseConfig(JSON.stringify({ rules: [{ from: 'a.example/x', to: 'b.example/x' }] }));
    assert.equal(requestsFor({ repository: 'x', digest: DIGEST }, config, { id: 't' }).length, 0);
    assert.equal(requestsFor({ repository: 'x', tag: 'v1' }, config, { id: 't' }).length, 1);
  });
});
