// `ocirelay serve` against the real distribution registry's push notifications (issue #6): a push
// to the source is mirrored by itself; a push outside the rules is not; an authenticated event
// naming a third registry makes no request to it; bad requests are answered and survived;
// SIGTERM stops it cleanly.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { auditRegistry, buildImage, buildIndex, freePort, inspectRaw, makeTempDir, pollUntil, pushLayout, pushTestImage, startFaultProxy, startHttpServer, startRegistry, startServe, tarOf, type FaultProxy, type RunningHttpServer, type RunningRegistry, type RunningServe } from './support/index.js';

const TOKEN = 'serve-test-token-6c1f';

let src: RunningRegistry;
let dst: RunningRegistry;
let third: RunningHttpServer;
let serve: RunningServe;
let port: number;

async function post(path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** serve's JSON log lines from `from` (an offset in `output`) on. */
function logLines(from = 0): Array<Record<string, unknown>> {
  return serve
    .output()
    .slice(from)
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

const mirrored = (ref: string): Promise<Buffer> => pollUntil(() => inspectRaw(ref).catch(() => undefined), { timeoutMs: 20_000, what: `${ref} in the target` });

before(async () => {
  port = await freePort();
  third = await startHttpServer((_req, res) => {
    res.writeHead(404).end();
  });
  [src, dst] = await Promise.all([startRegistry({ notifications: { url: `http://127.0.0.1:${port}/hooks/registry`, headers: { Authorization: [`Bearer ${TOKEN}`] } } }), startRegistry()]);
  const dir = makeTempDir('serve');
  const rules = join(dir, 'rules.yaml');
  await writeFile(
    rules,
    [
      'rules:',
      `  - from: ${src.host}/team`,
      `    to: ${dst.host}/mirror`,
      '    repositories: { exclude: ["*-tmp"] }',
      'webhooks:',
      '  - path: /hooks/registry',
      '    kind: distribution',
      '    token: { env: SERVE_HOOK_TOKEN }',
      '',
    ].join('\n'),
  );
  serve = await startServe({ rules, port, args: ['--coalesce-ms', '200'], env: { SERVE_HOOK_TOKEN: TOKEN } });
});

after(async () => {
  if (serve && serve.child.exitCode === null) serve.child.kill('SIGKILL');
  await Promise.all([src?.stop(), dst?.stop(), third?.stop()]);
});

describe('ocirelay serve', () => {
  test('a push to the source registry is mirrored to the target by itself', async () => {
    const img = await pushTestImage(src.host, 'team/app', 'v1', { layers: [{ bytes: tarOf({ app: randomBytes(4000) }) }] });
    assert.ok((await mirrored(`${dst.host}/mirror/app:v1`)).equals(img.manifest));
  });

  test('a push outside the rules is not mirrored', async () => {
    await pushTestImage(src.host, 'other/thing', 'v1', { layers: [{ bytes: tarOf({ x: 'other' }) }] });
    await pushTestImage(src.host, 'team/app-tmp', 'v1', { layers: [{ bytes: tarOf({ x: 'excluded' }) }] });
    // A later push inside the rules is mirrored: by then the earlier events were handled.
    const marker = await pushTestImage(src.host, 'team/marker', 'v1', { layers: [{ bytes: tarOf({ m: randomBytes(100) }) }] });
    assert.ok((await mirrored(`${dst.host}/mirror/marker:v1`)).equals(marker.manifest));
    const catalog = (await (await fetch(`${dst.url}/v2/_catalog`)).json()) as { repositories: string[] };
    assert.ok(!catalog.repositories.some((r) => r.includes('other') || r.includes('tmp')), catalog.repositories.join(', '));
    assert.match(serve.output(), /event outside every rule ignored/);
  });

  test('an authenticated event naming a third registry makes no request to it', async () => {
    const envelope = { events: [{ id: 'forged-1', action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'a'.repeat(64)}`, repository: 'team/app', tag: 'evil', url: `http://${third.host}/v2/team/app/manifests/evil` }, request: { host: third.host } }] };
    const answer = await post('/hooks/registry', JSON.stringify(envelope), { authorization: `Bearer ${TOKEN}` });
    assert.equal(answer.status, 202);
    assert.equal(answer.json.accepted, 0);
    // Same event naming the right host: accepted (and the tag is re-resolved at the source, where it does not exist).
    const marker = await pushTestImage(src.host, 'team/marker2', 'v1', { layers: [{ bytes: tarOf({ m: randomBytes(100) }) }] });
    await mirrored(`${dst.host}/mirror/marker2:v1`);
    assert.equal(third.requests.length, 0, 'no request reached the third registry');
    void marker;
  });

  test('a multi-platform push (a notification per child manifest, then the index) is copied once, byte-identical', async () => {
    const layout = join(makeTempDir('serve-multi'), 'oci');
    await buildImage({ layout, tag: 'amd64', architecture: 'amd64', layers: [{ files: { 'etc/arch': 'amd64', 'bin/tool': { size: 20_000 } } }] });
    await buildImage({ layout, tag: 'arm64', architecture: 'arm64', layers: [{ files: { 'etc/arch': 'arm64', 'bin/tool': { size: 20_000 } } }] });
    const index = await buildIndex({ layout, name: 'multi', images: [{ tag: 'amd64', platform: { os: 'linux', architecture: 'amd64' } }, { tag: 'arm64', platform: { os: 'linux', architecture: 'arm64' } }] });
    const children = (JSON.parse(index.raw.toString()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest);
    const from = serve.output().length;
    await pushLayout(index.ref, `${src.host}/team/multi:v1`, { all: true });
    assert.ok((await mirrored(`${dst.host}/mirror/multi:v1`)).equals(index.raw), 'the index is byte-identical');
    for (const child of children) {
      assert.ok((await inspectRaw(`${dst.host}/mirror/multi@${child}`)).equals(await inspectRaw(`${src.host}/team/multi@${child}`)), child);
    }
    // A later push, mirrored too: the registry notifies in order, so every event of the index push
    // was handled before it; a second copy of the index would have been handed over before it.
    const marker = await pushTestImage(src.host, 'team/marker3', 'v1', { layers: [{ bytes: tarOf({ m: randomBytes(100) }) }] });
    assert.ok((await mirrored(`${dst.host}/mirror/marker3:v1`)).equals(marker.manifest));
    await pollUntil(() => (logLines(from).some((l) => l.message === 'manifest committed' && (l.tags as string[] | undefined)?.includes('v1') && l.target === `${dst.host}/mirror/marker3:v1`) ? true : undefined), { what: 'the marker committed' });
    const lines = logLines(from);
    // The registry did notify each child's push (by digest), and the index's (by tag).
    const untagged = lines.filter((l) => l.message === 'untagged manifest push ignored' && l.repository === 'team/multi').map((l) => l.digest);
    assert.deepEqual([...untagged].sort(), [...children].sort());
    assert.equal(lines.filter((l) => l.message === 'webhook' && l.accepted === 1).length, 2, 'the index and the marker, each accepted once');
    const planned = lines.filter((l) => l.message === 'fan-out planned' && l.target === `${dst.host}/mirror/multi:v1`);
    assert.equal(planned.length, 1, 'one copy of the index');
    assert.equal(planned[0]?.digest, index.digest);
    const committed = lines.filter((l) => l.message === 'manifest committed' && l.target === `${dst.host}/mirror/multi:v1`).map((l) => l.digest);
    assert.deepEqual([...committed].sort(), [...children, index.digest].sort(), 'each manifest committed once, the index among them');
  });

  test('bad requests get clear answers and the server keeps running', async () => {
    assert.equal((await post('/hooks/registry', '{"events":[]}')).status, 401);
    assert.equal((await post('/hooks/registry', '{"events":[]}', { authorization: 'Bearer wrong' })).status, 403);
    const malformed = await post('/hooks/registry', '{"events": [', { authorization: `Bearer ${TOKEN}` });
    assert.equal(malformed.status, 400);
    assert.match(String(malformed.json.error), /not JSON/);
    assert.equal((await post('/hooks/registry', '{"nope": 1}', { authorization: `Bearer ${TOKEN}` })).status, 400);
    assert.equal((await post('/hooks/registry', Buffer.alloc(2 * 1024 * 1024, 0x20), { authorization: `Bearer ${TOKEN}` })).status, 413);
    assert.equal((await post('/nowhere', '{}')).status, 404);
    const replay = { events: [{ id: 'replayed-event', action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'b'.repeat(64)}`, repository: 'team/app', tag: 'v1' } }] };
    assert.equal((await post('/hooks/registry', JSON.stringify(replay), { authorization: `Bearer ${TOKEN}` })).json.accepted, 1);
    assert.equal((await post('/hooks/registry', JSON.stringify(replay), { authorization: `Bearer ${TOKEN}` })).json.accepted, 0, 'a replayed event id is not accepted twice');
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    assert.doesNotMatch(serve.output(), new RegExp(TOKEN), 'the webhook token never appears in the logs');
  });

  test('an oversized body sent chunked (no Content-Length) gets 413, not a reset', async () => {
    // The client keeps sending until it has the answer (up to 6 MiB): the 413 arrives while the
    // body is still coming, which is when closing the connection would reset it.
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    let sent = 0;
    let answered = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (answered || sent >= 6 * 1024 * 1024) return controller.close();
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const res = await fetch(`http://127.0.0.1:${port}/hooks/registry`, { method: 'POST', body, duplex: 'half', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } } as RequestInit);
    answered = true;
    assert.equal(res.status, 413);
    assert.ok(sent > 1024 * 1024, `answered after ${sent} bytes`);
    assert.match(String(((await res.json()) as { error?: unknown }).error), /larger than 1048576 bytes/);
    // Under the limit, chunked is fine.
    const small = await fetch(`http://127.0.0.1:${port}/hooks/registry`, { method: 'POST', body: new Blob(['{"events":[]}']).stream(), duplex: 'half', headers: { authorization: `Bearer ${TOKEN}` } } as RequestInit);
    assert.equal(small.status, 202);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  });

  test('SIGTERM stops it cleanly', async () => {
    serve.child.kill('SIGTERM');
    assert.equal(await serve.exited, 0);
    assert.match(serve.output(), /"message":"stopped"/);
  });
});

describe('ocirelay serve: SIGTERM during a copy', () => {
  let proxy: FaultProxy | undefined;
  let stopping: ChildProcess | undefined;
  after(async () => {
    if (stopping && stopping.exitCode === null && stopping.signalCode === null) stopping.kill('SIGKILL');
    await proxy?.stop();
  });

  test('exits within its grace period, leaves no tag on missing content, and logs the requests it drops', async () => {
    const image = await pushTestImage(src.host, 'team/stop', 'v1', { layers: [{ bytes: tarOf({ big: randomBytes(200_000) }) }] });
    const layer = image.layers[0]?.digest as string;
    // The source, through a proxy that holds the layer's GET forever: the copy is in flight for good.
    let held = false;
    proxy = await startFaultProxy(src.url, {
      seed: 7,
      rate: 0,
      beforeForward: async (req) => {
        if (req.method === 'GET' && req.path.endsWith(`/blobs/${layer}`)) {
          held = true;
          await new Promise<never>(() => undefined);
        }
      },
    });
    const rules = join(makeTempDir('serve-stop'), 'rules.json');
    await writeFile(rules, JSON.stringify({ rules: [{ from: `${proxy.host}/team`, to: `${dst.host}/stopped` }], webhooks: [{ path: '/hooks/registry', kind: 'distribution', token: { env: 'SERVE_HOOK_TOKEN' } }] }));
    const second = await startServe({ rules, args: ['--coalesce-ms', '3000', '--shutdown-grace', '2'], env: { SERVE_HOOK_TOKEN: TOKEN }, what: 'the second serve' });
    const { child, exited } = second;
    stopping = child;
    const event = (repository: string, id: string): string =>
      JSON.stringify({ events: [{ id, action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: image.digest, repository, tag: 'v1' }, request: { host: proxy?.host } }] });
    const deliver = async (body: string): Promise<number> => (await fetch(`${second.url}/hooks/registry`, { method: 'POST', body, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } })).status;

    assert.equal(await deliver(event('team/stop', 'stop-1')), 202);
    await pollUntil(() => (held ? true : undefined), { what: 'the copy to reach the held layer', timeoutMs: 15_000 });
    // A second request, still in its coalescing window when the signal comes.
    assert.equal(await deliver(event('team/other', 'other-1')), 202);
    const signalled = Date.now();
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000).unref())]);
    const elapsed = Date.now() - signalled;
    assert.equal(code, 0, `exit after ${elapsed} ms:\n${second.output()}`);
    assert.ok(elapsed < 2_000 + 5_000, `exited ${elapsed} ms after SIGTERM with a 2 s grace`);

    const log = second.output();
    const lines = log.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const dropped = lines.filter((l) => l.message === 'coalesced request dropped at shutdown');
    assert.deepEqual(dropped.map((l) => l.target), [`${dst.host}/stopped/other:v1`]);
    assert.equal(dropped[0]?.source, `${proxy.host}/team/other:v1`);
    assert.ok(lines.some((l) => l.message === 'copies in flight abandoned at shutdown'), log);
    assert.ok(lines.some((l) => l.message === 'stopped'), log);

    // Nothing in the target names content that is not there; the held image was not tagged.
    assert.deepEqual(await auditRegistry(dst.dataDir), []);
    assert.equal((await fetch(`${dst.url}/v2/stopped/stop/manifests/v1`, { method: 'HEAD' })).status, 404);
  });
});
