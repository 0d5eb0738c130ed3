// `ocirelay sync` (issue #6): a bulk migration of rules against real registries, with each filter
// kind; a dry run writes nothing; a second run finds everything already there.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { RegistryPool } from '../lib/engine/registries.js';
import { parseConfig } from '../lib/rules/config.js';
import { selectTags } from '../lib/rules/match.js';
import { syncRules } from '../lib/rules/sync.js';
import { inspectRaw, makeTempDir, pushTestImage, pushTestIndex, startHttpServer, startRegistry, tarOf, type RunningRegistry } from './support/index.js';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'dist/cli/bin.js');

let src: RunningRegistry;
let dst: RunningRegistry;
let rulesFile: string;
const manifests = new Map<string, Buffer>();

async function catalog(registry: RunningRegistry): Promise<string[]> {
  return ((await (await fetch(`${registry.url}/v2/_catalog`)).json()) as { repositories: string[] }).repositories;
}

async function tags(registry: RunningRegistry, repository: string): Promise<string[]> {
  const res = await fetch(`${registry.url}/v2/${repository}/tags/list`);
  if (res.status === 404) return [];
  return (((await res.json()) as { tags: string[] | null }).tags ?? []).sort();
}

async function sync(...args: string[]): Promise<{ code: number; json: Record<string, unknown> }> {
  return syncWith(rulesFile, ...args);
}

async function syncWith(file: string, ...args: string[]): Promise<{ code: number; json: Record<string, unknown> }> {
  try {
    const { stdout } = await exec(process.execPath, [bin, 'sync', file, '--json', ...args]);
    return { code: 0, json: JSON.parse(stdout) as Record<string, unknown> };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    throw new Error(`sync exited ${e.code}: ${e.stderr}\n${e.stdout}`);
  }
}

before(async () => {
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  const layout: Record<string, string[]> = {
    'team/api': ['v1.0.0', 'v1.2.0', 'v1.3.0-rc1', 'v2.0.0', 'latest', 'dev-branch'],
    'team/web': ['1.0', '1.1', '2.0', '2.1', '3.0'],
    'team/web-tmp': ['v1.5.0'],
    'vendor/lib': ['v1.9.0'],
  };
  for (const [repository, list] of Object.entries(layout)) {
    for (const tag of list) {
      const img = await pushTestImage(src.host, repository, tag, { layers: [{ bytes: tarOf({ [`${repository}/${tag}`]: `${repository}:${tag}` }) }] });
      manifests.set(`${repository}:${tag}`, img.manifest);
    }
  }
  rulesFile = join(makeTempDir('sync'), 'rules.yaml');
  await writeFile(
    rulesFile,
    JSON.stringify({
      rules: [
        // semver range + include/exclude regexes on the api repository only
        { name: 'api', from: `${src.host}/team`, to: `${dst.host}/mirror`, repositories: { include: ['api'] }, tags: { include: ['^v\\d'], exclude: ['-rc'], semver: '>=1.2' } },
        // latest N by version, repositories by glob with an exclude
        { name: 'web', from: `${src.host}/team`, to: `${dst.host}/mirror`, repositories: { include: ['web*'], exclude: ['*-tmp'] }, tags: { latest: 2 } },
      ],
    }),
  );
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop()]);
});

describe('ocirelay sync', () => {
  test('a dry run reports what would be copied and writes nothing', async () => {
    const { json } = await sync('--dry-run');
    assert.equal(json.dryRun, true);
    assert.equal(json.copied, 4);
    assert.equal(json.failed, 0);
    assert.deepEqual(await catalog(dst), []);
  });

  test('each filter kind selects exactly its tags, and they are copied byte for byte', async () => {
    const { json } = await sync();
    assert.equal(json.copied, 4);
    assert.equal(json.failed, 0);
    // api: ^v\d and not -rc and >=1.2 -> v1.2.0, v2.0.0 (v1.0.0 below range, rc excluded, latest/dev-branch not v\d)
    assert.deepEqual(await tags(dst, 'mirror/api'), ['v1.2.0', 'v2.0.0']);
    // web: latest 2 by version -> 3.0, 2.1; web-tmp excluded; vendor outside the rule's prefix
    assert.deepEqual(await tags(dst, 'mirror/web'), ['2.1', '3.0']);
    assert.deepEqual((await catalog(dst)).sort(), ['mirror/api', 'mirror/web']);
    for (const ref of ['api:v1.2.0', 'api:v2.0.0', 'web:2.1', 'web:3.0']) {
      assert.ok((await inspectRaw(`${dst.host}/mirror/${ref}`)).equals(manifests.get(`team/${ref}`) as Buffer), ref);
    }
    const items = json.items as Array<{ source: string; status: string; reason?: string }>;
    assert.ok(items.some((i) => i.source.endsWith('team/web-tmp') && i.status === 'filtered' && i.reason === 'repository filter'));
    assert.ok(items.some((i) => i.source.endsWith('team/api:v1.3.0-rc1') && i.status === 'filtered'));
  });

  test('a second run copies nothing: everything is already there', async () => {
    const { json } = await sync();
    assert.equal(json.copied, 0);
    assert.equal(json.alreadyThere, 4);
  });

  test('a tag moved at the source is copied again; the library reports it', async () => {
    const moved = await pushTestImage(src.host, 'team/web', '3.0', { layers: [{ bytes: tarOf({ moved: 'yes' }) }] });
    const pool = new RegistryPool();
    try {
      const submitted: string[] = [];
      const summary = await syncRules(parseConfig(JSON.stringify({ rules: [{ from: `${src.host}/team/web`, to: `${dst.host}/mirror/web`, tags: { latest: 2 } }] })), { registries: pool, submit: async (r) => void submitted.push(r.source) });
      assert.deepEqual(submitted, [`${src.host}/team/web:3.0`]);
      assert.equal(summary.present, 1);
      assert.equal(summary.filtered, 3);
    } finally {
      await pool.close();
    }
    void moved;
  });

  test('tags a registry lists that break the grammar are reported, never matched or asked for', async () => {
    const seen: string[] = [];
    const long = `v${'9'.repeat(5000)}`;
    const hostile = await startHttpServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.url?.startsWith('/v2/team/app/tags/list')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: 'team/app', tags: [long, '../../etc', 'ok-tag'] }));
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}');
    });
    const pool = new RegistryPool();
    try {
      const summary = await syncRules(parseConfig(JSON.stringify({ rules: [{ from: `${hostile.host}/team/app`, to: `${dst.host}/mirror/hostile`, tags: { include: ['^v\\d+$', '^ok'] } }] })), { registries: pool, submit: async () => undefined });
      const reasons = summary.items.filter((i) => i.status === 'failed').map((i) => i.reason ?? '');
      assert.equal(reasons.filter((r) => /which is not a valid tag$/.test(r)).length, 2, reasons.join('\n'));
      assert.ok(reasons.every((r) => r.length < 400), 'a 5000-character tag is not echoed whole');
      assert.ok(!seen.some((line) => line.includes('999999') || line.includes('etc')), `asked for an invalid tag: ${seen.join(', ')}`);
      assert.ok(seen.some((line) => line === 'HEAD /v2/team/app/manifests/ok-tag'), 'the valid tag is handled as usual');
    } finally {
      await pool.close();
      await hostile.stop();
    }
  });

  test('repository names a catalog lists that break the grammar are reported, never asked for; a next page elsewhere is refused', async () => {
    const seen: string[] = [];
    const hostile = await startHttpServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.url?.startsWith('/v2/_catalog')) {
        // The next page names another host: never followed.
        res.writeHead(200, { 'content-type': 'application/json', link: '<http://169.254.169.254/v2/_catalog?last=x>; rel="next"' });
        res.end(JSON.stringify({ repositories: ['team/app', 'team/../../etc', `team/${'a'.repeat(300)}`, 'team/Upper'] }));
        return;
      }
      if (req.url?.startsWith('/v2/team/app/tags/list')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: 'team/app', tags: [] }));
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}');
    });
    const pool = new RegistryPool();
    try {
      const summary = await syncRules(parseConfig(JSON.stringify({ rules: [{ from: `${hostile.host}/team`, to: `${dst.host}/mirror/hostile-catalog` }] })), { registries: pool, submit: async () => undefined });
      const reasons = summary.items.filter((i) => i.status === 'failed').map((i) => i.reason ?? '');
      assert.equal(reasons.filter((r) => /which is not a valid repository name$/.test(r)).length, 3, reasons.join('\n'));
      assert.ok(reasons.some((r) => /^listing repositories: .*the next page .* is not the catalog of/.test(r)), reasons.join('\n'));
      assert.ok(reasons.every((r) => r.length < 400), 'a 300-character name is not echoed whole');
      assert.deepEqual(seen.filter((l) => !l.startsWith('GET /v2/_catalog')), ['GET /v2/team/app/tags/list?n=1000'], 'only the valid repository was asked for');
      // A cursor (from a sync message) can only name this registry's own catalog.
      await assert.rejects(pool.get(hostile.host).catalogPage({ next: 'http://169.254.169.254/v2/_catalog' }), /does not name the catalog of/);
      await assert.rejects(pool.get(hostile.host).catalogPage({ next: '/v2/team/app/tags/list' }), /does not name the catalog of/);
    } finally {
      await pool.close();
      await hostile.stop();
    }
  });

  test('selectTags: latest by semver, then by name; semver ignores tags that name no version', () => {
    const rule = parseConfig(JSON.stringify({ rules: [{ from: 'a.example/x', to: 'b.example/x', tags: { latest: 3 } }] })).rules[0]!;
    assert.deepEqual(selectTags(rule, ['1.2', 'v1.10.0', '1.9.1', 'latest', 'v2.0.0-rc1']), ['v2.0.0-rc1', 'v1.10.0', '1.9.1']);
    const ranged = parseConfig(JSON.stringify({ rules: [{ from: 'a.example/x', to: 'b.example/x', tags: { semver: '^1.2' } }] })).rules[0]!;
    assert.deepEqual(selectTags(ranged, ['1.1.0', '1.2.0', '1.9', 'latest', '2.0.0']), ['1.2.0', '1.9']);
    assert.throws(() => parseConfig(JSON.stringify({ rules: [{ from: 'a.example/x', to: 'b.example/x', tags: { semver: '>=>1' } }] })), /semver/);
    assert.throws(() => parseConfig(JSON.stringify({ rules: [{ from: 'a.example/x', to: 'b.example/x', tags: { include: ['(unclosed'] } }] })), /regular expression/);
  });
});

describe('ocirelay sync of rules that rewrite manifests (platforms, annotations)', () => {
  let file: string;
  const statuses = (json: Record<string, unknown>): Record<string, string> =>
    Object.fromEntries((json.items as Array<{ source: string; status: string }>).filter((i) => i.status !== 'filtered').map((i) => [i.source.slice(src.host.length + 1), i.status]));

  before(async () => {
    const amd64 = await pushTestImage(src.host, 'rw/multi', 'child-amd64', { layers: [{ bytes: tarOf({ amd64: 'amd64' }) }], architecture: 'amd64' });
    const arm64 = await pushTestImage(src.host, 'rw/multi', 'child-arm64', { layers: [{ bytes: tarOf({ arm64: 'arm64' }) }], architecture: 'arm64' });
    await pushTestIndex(src.host, 'rw/multi', 'v1', [{ image: amd64, platform: { os: 'linux', architecture: 'amd64' } }, { image: arm64, platform: { os: 'linux', architecture: 'arm64' } }]);
    await pushTestImage(src.host, 'rw/annotated', 'v1', { layers: [{ bytes: tarOf({ a: 'annotated v1' }) }] });
    await pushTestImage(src.host, 'rw/annotated', 'v2', { layers: [{ bytes: tarOf({ a: 'annotated v2' }) }] });
    file = join(makeTempDir('sync-rewrite'), 'rules.json');
    await writeFile(
      file,
      JSON.stringify({
        rules: [
          { name: 'platforms', from: `${src.host}/rw/multi`, to: `${dst.host}/rw/multi`, tags: { include: ['^v'] }, platforms: ['linux/arm64'] },
          { name: 'annotations', from: `${src.host}/rw/annotated`, to: `${dst.host}/rw/annotated`, tags: { include: ['^v'] }, annotations: { 'org.example.mirrored': 'true' } },
        ],
      }),
    );
  });

  test('the first run copies, rewritten as the rules say', async () => {
    const { json } = await syncWith(file);
    assert.deepEqual(statuses(json), { 'rw/multi:v1': 'copy', 'rw/annotated:v1': 'copy', 'rw/annotated:v2': 'copy' });
    const index = JSON.parse((await inspectRaw(`${dst.host}/rw/multi:v1`)).toString()) as { manifests: Array<{ platform: { architecture: string } }> };
    assert.deepEqual(index.manifests.map((m) => m.platform.architecture), ['arm64']);
    const manifest = JSON.parse((await inspectRaw(`${dst.host}/rw/annotated:v1`)).toString()) as { annotations?: Record<string, string> };
    assert.equal(manifest.annotations?.['org.example.mirrored'], 'true');
  });

  test('a second run finds every rewritten tag already there and copies nothing', async () => {
    const { json } = await syncWith(file);
    assert.equal(json.copied, 0);
    assert.equal(json.alreadyThere, 3);
    assert.deepEqual(statuses(json), { 'rw/multi:v1': 'present', 'rw/annotated:v1': 'present', 'rw/annotated:v2': 'present' });
  });

  test('a tag moved at the source, or a target tag that is not the rewritten image, is copied again; nothing else', async () => {
    await pushTestImage(src.host, 'rw/annotated', 'v2', { layers: [{ bytes: tarOf({ a: 'annotated v2, moved' }) }] });
    // The verbatim source image (without the annotation) under the target tag: not what the rule makes.
    await pushTestImage(dst.host, 'rw/annotated', 'v1', { layers: [{ bytes: tarOf({ a: 'annotated v1' }) }] });
    const { json } = await syncWith(file);
    assert.deepEqual(statuses(json), { 'rw/multi:v1': 'present', 'rw/annotated:v1': 'copy', 'rw/annotated:v2': 'copy' });
    const again = await syncWith(file);
    assert.equal(again.json.copied, 0);
    assert.equal(again.json.alreadyThere, 3);
  });
});
