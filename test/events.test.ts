/**
 * Webhook event parsers, table-driven over test/fixtures/events/<kind>/*.json (each fixture names
 * the vendor documentation or source it was taken from), plus a hostile corpus fed to every parser:
 * whatever the body, a parser returns a well-formed delivery or throws PayloadError, in bounded time.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDigest } from '../lib/digest.js';
import { parseEcrEvent } from '../lib/events/ecr.js';
import { PARSERS } from '../lib/events/index.js';
import { PayloadError, type DeliveryParser, type ParsedDelivery, type PushEvent } from '../lib/events/types.js';
import { isValidTag, normaliseRegistry, parseRepository } from '../lib/ref/index.js';
import { WebhookKinds } from '../lib/rules/config.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'events');

type Headers = Record<string, string | undefined>;

interface Fixture {
  source: string;
  note?: string;
  headers?: Headers;
  body: unknown;
  expect?: { events: PushEvent[]; ignored: number; deliveryId?: string };
  expectError?: string;
}

/** ECR arrives through EventBridge, not a webhook; ingress counts an event list as it does here. */
const ecr: DeliveryParser = (body) => {
  const events = parseEcrEvent(body);
  return { events, ignored: events.length ? 0 : 1 };
};

const ALL: Record<string, DeliveryParser> = { ...(PARSERS as Record<string, DeliveryParser>), ecr };

function loadFixtures(): { kind: string; name: string; fixture: Fixture }[] {
  const out: { kind: string; name: string; fixture: Fixture }[] = [];
  for (const kind of readdirSync(FIXTURES).sort()) {
    for (const file of readdirSync(join(FIXTURES, kind)).sort()) {
      if (!file.endsWith('.json')) continue;
      out.push({ kind, name: file.replace(/\.json$/, ''), fixture: JSON.parse(readFileSync(join(FIXTURES, kind, file), 'utf8')) as Fixture });
    }
  }
  return out;
}

const fixtures = loadFixtures();

const EVENT_KEYS = new Set(['registry', 'repository', 'tag', 'digest', 'mediaType', 'id']);

/** What every parser must return, whatever the input. */
function assertWellFormed(result: ParsedDelivery, where: string): void {
  assert.equal(typeof result, 'object', where);
  assert.ok(Array.isArray(result.events), `${where}: events is an array`);
  assert.ok(Number.isInteger(result.ignored) && result.ignored >= 0, `${where}: ignored is a count (${String(result.ignored)})`);
  if (result.deliveryId !== undefined) assert.ok(typeof result.deliveryId === 'string' && result.deliveryId.length > 0 && result.deliveryId.length <= 200, `${where}: deliveryId`);
  for (const event of result.events) {
    for (const key of Object.keys(event)) assert.ok(EVENT_KEYS.has(key), `${where}: unexpected event key ${key}`);
    assert.equal(typeof event.repository, 'string', `${where}: repository`);
    assert.doesNotThrow(() => parseRepository(`placeholder.invalid/${event.repository}`), `${where}: repository ${event.repository.slice(0, 80)}`);
    if (event.registry !== undefined) assert.equal(normaliseRegistry(event.registry), event.registry, `${where}: registry is normalised`);
    if (event.tag !== undefined) assert.ok(isValidTag(event.tag), `${where}: tag`);
    if (event.digest !== undefined) assert.ok(isDigest(event.digest), `${where}: digest`);
    assert.ok(event.tag !== undefined || event.digest !== undefined, `${where}: a tag or a digest`);
    if (event.id !== undefined) assert.ok(typeof event.id === 'string' && event.id.length <= 200, `${where}: id`);
    if (event.mediaType !== undefined) assert.equal(typeof event.mediaType, 'string', `${where}: mediaType`);
  }
}

/** Runs a parser on untrusted input: a well-formed delivery or a PayloadError, nothing else. */
function run(parser: DeliveryParser, body: unknown, headers: Headers, where: string): ParsedDelivery | PayloadError {
  let result: ParsedDelivery;
  try {
    result = parser(body, headers);
  } catch (err) {
    assert.ok(err instanceof PayloadError, `${where}: threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    assert.ok(err.message.length > 0 && err.message.length < 300, `${where}: a clear message`);
    return err;
  }
  assertWellFormed(result, where);
  return result;
}

describe('event fixtures', () => {
  test('every webhook kind has a parser and fixtures (a push, something ignored, something malformed)', () => {
    for (const kind of [...WebhookKinds, 'ecr']) {
      assert.equal(typeof ALL[kind], 'function', `parser for ${kind}`);
      const mine = fixtures.filter((f) => f.kind === kind);
      assert.ok(mine.some((f) => f.fixture.expect && f.fixture.expect.events.length > 0), `${kind}: a fixture with events`);
      assert.ok(mine.some((f) => f.fixture.expect && f.fixture.expect.events.length === 0 && f.fixture.expect.ignored > 0), `${kind}: a fixture that is ignored`);
      assert.ok(mine.some((f) => f.name.startsWith('malformed') || f.name.includes('verbatim')), `${kind}: a malformed fixture`);
    }
    for (const { kind } of fixtures) assert.ok(kind in ALL, `fixtures for unknown kind ${kind}`);
  });

  for (const { kind, name, fixture } of fixtures) {
    test(`${kind}/${name}`, () => {
      assert.ok(typeof fixture.source === 'string' && fixture.source.length > 10, 'the fixture cites its source');
      const parser = ALL[kind] as DeliveryParser;
      const headers = fixture.headers ?? {};
      if (fixture.expectError !== undefined) {
        assert.throws(() => parser(fixture.body, headers), (err: unknown) => err instanceof PayloadError && new RegExp(fixture.expectError as string).test(err.message));
        return;
      }
      assert.ok(fixture.expect, 'expect or expectError');
      const result = parser(fixture.body, headers);
      assertWellFormed(result, `${kind}/${name}`);
      assert.deepEqual(result.events, fixture.expect.events);
      assert.equal(result.ignored, fixture.expect.ignored);
      assert.equal(result.deliveryId, fixture.expect.deliveryId);
    });
  }
});

describe('specific behaviour', () => {
  const harbor = ALL.harbor as DeliveryParser;
  const github = ALL.github as DeliveryParser;
  const gar = ALL.gar as DeliveryParser;
  const byName = (kind: string, name: string): Fixture => {
    const found = fixtures.find((f) => f.kind === kind && f.name === name);
    assert.ok(found, `${kind}/${name}`);
    return structuredClone(found.fixture);
  };

  test('distribution: the children of a tagged index are coalesced into it; a lone child stays a digest push', () => {
    const f = byName('distribution', 'index-with-children-v2');
    const events = (f.body as { events: unknown[] }).events;
    const parsed = (ALL.distribution as DeliveryParser)({ events: events.slice(0, 3) }, {});
    assert.equal(parsed.events.length, 2);
    assert.ok(parsed.events.every((e) => e.digest && !e.tag));
  });

  test('github: a delivery without X-GitHub-Event is read from the body', () => {
    const f = byName('github', 'container-published-tagged');
    const parsed = github(f.body, {});
    assert.equal(parsed.events.length, 1);
    assert.equal(parsed.deliveryId, undefined);
  });

  test('github: repository paths are lowercased, the registry defaults to ghcr.io', () => {
    const f = byName('github', 'container-published-tagged');
    const pkg = (f.body as { package: { owner: { login: string }; name: string; package_version: { package_url?: string } } }).package;
    pkg.owner.login = 'MyOrg';
    pkg.name = 'Tools/App';
    delete pkg.package_version.package_url;
    const parsed = github(f.body, { 'x-github-event': 'package' });
    assert.equal(parsed.events[0]?.repository, 'myorg/tools/app');
    assert.equal(parsed.events[0]?.registry, 'ghcr.io');
  });

  test('harbor: several resources in one notification give one event each', () => {
    const f = byName('harbor', 'docs-default-push');
    const data = (f.body as { event_data: { resources: Record<string, string>[] } }).event_data;
    data.resources.push({ ...data.resources[0], tag: 'stable', resource_url: 'hub.harbor.com/test-webhook/debian:stable' });
    const parsed = harbor(f.body, {});
    assert.deepEqual(parsed.events.map((e) => e.tag), ['latest', 'stable']);
  });

  test('gar: a DELETE, a non-JSON data and a data that is not an object are acknowledged, never refused', () => {
    for (const data of ['', '////', Buffer.from('[1,2,3]').toString('base64'), Buffer.from('"INSERT"').toString('base64'), Buffer.from(JSON.stringify({ action: 'INSERT' })).toString('base64')]) {
      const parsed = gar({ message: { data, messageId: '1' }, subscription: 's' }, {});
      assert.deepEqual(parsed, { events: [], ignored: 1, deliveryId: '1' });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile input

function deep(depth: number): unknown {
  let value: unknown = { end: true };
  for (let i = 0; i < depth; i++) value = i % 2 ? { a: value, events: value, resources: value } : [value];
  return value;
}

const HUGE = 'a'.repeat(1_000_000);
const BIG = `${'b'.repeat(50_000)}/${'c'.repeat(50_000)}`;

/** Values substituted for every field of every fixture. */
const HOSTILE_VALUES: unknown[] = [
  null,
  true,
  0,
  -1,
  1e308,
  '',
  'x',
  'sha256:xyz',
  '../../etc/passwd',
  'http://169.254.169.254/latest/meta-data/',
  BIG,
  [],
  [null],
  {},
  JSON.parse('{"__proto__": {"polluted": true, "type": "PUSH_ARTIFACT", "action": "push"}}'),
  deep(200),
];

/** Whole bodies no parser should take for its format (or should ignore). */
const HOSTILE_BODIES: [string, unknown][] = [
  ['null', null],
  ['[]', []],
  ['42', 42],
  ['"x"', 'x'],
  ['true', true],
  ['{}', {}],
  ['huge string', HUGE],
  ['array of nulls', new Array(10_000).fill(null)],
  ['deeply nested', deep(10_000)],
  ['__proto__ key', JSON.parse('{"__proto__": {"events": [{"action": "push"}], "type": "PUSH_ARTIFACT", "push_data": {}, "repository": {}, "message": {}}}')],
  ['constructor keys', JSON.parse('{"constructor": {"prototype": {"polluted": true}}, "events": {"length": 5}, "type": "PUSH_ARTIFACT", "event_data": {"resources": {"length": 3}}}')],
];

/** Every path to a value inside a JSON document (bounded). */
function paths(value: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = [], limit = 400): (string | number)[][] {
  if (out.length >= limit) return out;
  if (Array.isArray(value)) {
    value.slice(0, 5).forEach((item, i) => {
      out.push([...prefix, i]);
      paths(item, [...prefix, i], out, limit);
    });
  } else if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      out.push([...prefix, key]);
      paths(item, [...prefix, key], out, limit);
    }
  }
  return out;
}

function replaced(body: unknown, path: (string | number)[], value: unknown): unknown {
  const copy = structuredClone(body) as Record<string | number, unknown>;
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  node[path[path.length - 1] as string | number] = value;
  return copy;
}

/** Every array in the body blown up to `n` copies of its first element. */
function multiplied(body: unknown, n: number): unknown {
  if (Array.isArray(body)) return body.length ? new Array(n).fill(null).map(() => multiplied(body[0], n)) : body;
  if (typeof body === 'object' && body !== null) return Object.fromEntries(Object.entries(body).map(([k, v]) => [k, Array.isArray(v) && v.length ? new Array(n).fill(v[0]) : multiplied(v, n)]));
  return body;
}

function headerVariants(headers: Headers): Headers[] {
  const variants: Headers[] = [{}, Object.fromEntries(Object.keys(headers).map((k) => [k, '']))];
  for (const key of Object.keys(headers)) variants.push({ ...headers, [key]: HUGE }, { ...headers, [key]: 'ping' }, { ...headers, [key]: undefined });
  return variants;
}

describe('hostile input', () => {
  for (const [kind, parser] of Object.entries(ALL)) {
    test(`${kind}: hostile bodies give PayloadError or an empty, well-formed delivery`, () => {
      for (const [label, body] of HOSTILE_BODIES) {
        for (const headers of [{}, { 'x-github-event': 'package', 'ce-specversion': '1.0', 'ce-type': 'harbor.artifact.pushed' }]) {
          const started = performance.now();
          const result = run(parser, body, headers, `${kind} ${label}`);
          if (!(result instanceof PayloadError)) assert.equal(result.events.length, 0, `${kind} ${label}: no events`);
          assert.ok(performance.now() - started < 1000, `${kind} ${label}: bounded time`);
        }
      }
      assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched');
    });

    const own = fixtures.filter((f) => f.kind === kind && f.fixture.expect);
    test(`${kind}: every field of every fixture replaced by hostile values`, () => {
      let calls = 0;
      const started = performance.now();
      for (const { name, fixture } of own) {
        const headers = fixture.headers ?? {};
        for (const path of paths(fixture.body)) {
          for (const value of HOSTILE_VALUES) {
            run(parser, replaced(fixture.body, path, value), headers, `${kind}/${name} ${path.join('.')}`);
            calls++;
          }
        }
        for (const variant of headerVariants(headers)) run(parser, fixture.body, variant, `${kind}/${name} headers`);
        // The whole body under a __proto__ key: nothing of it is an own property any more.
        run(parser, JSON.parse(`{"__proto__": ${JSON.stringify(fixture.body)}}`), headers, `${kind}/${name} under __proto__`);
      }
      assert.ok(calls > 0);
      assert.ok(performance.now() - started < 30_000, `${kind}: ${calls} hostile variants in bounded time`);
      assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched');
    });

    test(`${kind}: 10,000 events in one body are parsed in bounded time`, () => {
      for (const { name, fixture } of own) {
        const body = multiplied(fixture.body, 10_000);
        const started = performance.now();
        const result = run(parser, body, fixture.headers ?? {}, `${kind}/${name} x10000`);
        const elapsed = performance.now() - started;
        assert.ok(elapsed < 2000, `${kind}/${name}: ${elapsed.toFixed(0)} ms for 10,000 events`);
        if (!(result instanceof PayloadError)) assert.ok(result.events.length <= 10_000 && result.events.length + result.ignored <= 10_001, `${kind}/${name}: counts bounded`);
      }
    });
  }

  test('10,000 distinct events: distribution keeps them all, list formats cap what they parse', () => {
    const digest = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;
    const dist = (ALL.distribution as DeliveryParser)({ events: Array.from({ length: 10_000 }, (_, i) => ({ id: `e${i}`, action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: digest(i), repository: `team/app${i}`, tag: 'v1' }, request: { host: 'registry.example.com' } })) }, {});
    assert.equal(dist.events.length, 10_000);
    const tags = Array.from({ length: 10_000 }, (_, i) => `v${i}`);
    const quay = (ALL.quay as DeliveryParser)({ repository: 'ns/app', docker_url: 'quay.io/ns/app', updated_tags: tags }, {});
    assert.equal(quay.events.length + quay.ignored, 10_000);
    assert.ok(quay.events.length <= 1000);
    const resources = tags.map((tag, i) => ({ digest: digest(i), tag, resource_url: `harbor.example.com/library/app:${tag}` }));
    const harbor = (ALL.harbor as DeliveryParser)({ type: 'PUSH_ARTIFACT', event_data: { resources, repository: { repo_full_name: 'library/app' } } }, {});
    assert.equal(harbor.events.length + harbor.ignored, 10_000);
    assert.ok(harbor.events.length <= 1000);
  });
});
