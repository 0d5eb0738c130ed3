// Secrets never leak (issue #8, "Secrets"; invariant 6): registry passwords, Basic headers,
// Bearer tokens, Docker config `auth` strings, webhook tokens and HMAC keys are made distinctive
// here, the product is driven through everything it does (CLI copy, plan, export, sync and serve;
// the embedded pipeline with its queue messages and JSON logs; failures of every kind, under
// injected faults), and everything captured is scanned for every form of every secret.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { copyImage } from '../lib/engine/copy.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { exportImage } from '../lib/export/export.js';
import { staticCredentials } from '../lib/oci/credentials.js';
import { EmbeddedPipeline } from '../lib/pipeline/embedded.js';
import { PROTOCOL_VERSION } from '../lib/pipeline/messages.js';
import { createLogger } from '../lib/pipeline/telemetry.js';
import { FileArchiveStore } from '../lib/ports/archive-store.js';
import { inspectRaw, makeTempDir, pollUntil, pushTestImage, randomBytes, seededRandom, startFaultProxy, startRegistry, startServe, tarOf, type FaultProxy, type RunningRegistry } from './support/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'dist/cli/bin.js');

// Distinctive values: any of them (or an encoding of them) in captured output is a leak.
const SRC_USER = 'relay-src-user';
const SRC_PASSWORD = 'Src-Pa55w0rd-4f1d9c7e2b';
const DST_USER = 'relay-dst-user';
const DST_PASSWORD = 'Dst-Pa55w0rd-8a3e6b0d5c';
const HOOK_TOKEN = 'hook-T0ken-7c2e9f4a1d';
const GITHUB_SECRET = 'gh-Hmac-K3y-3b8d1e6f0a';

let src: RunningRegistry;
let dst: RunningRegistry;
let sp: FaultProxy;
let tp: FaultProxy;
let dir: string;
let dockerConfig: string;
/** Every byte the product wrote anywhere, with where it came from. */
const captured: Array<{ where: string; text: string }> = [];

function capture(where: string, data: string | Buffer): void {
  captured.push({ where, text: Buffer.isBuffer(data) ? data.toString('latin1') : data });
}

/** Every form a secret could take on its way out: raw, in Basic headers, base64 in any alignment, URL-encoded, JSON-escaped. */
function forms(): Array<{ name: string; value: string }> {
  const out: Array<{ name: string; value: string }> = [];
  const add = (name: string, secret: string): void => {
    out.push({ name, value: secret }, { name: `${name} (url-encoded)`, value: encodeURIComponent(secret) });
    // base64 of the secret at each of the three alignments it can have inside a longer base64 text.
    for (let shift = 0; shift < 3; shift++) {
      // The characters that depend on the secret alone: after the group holding the prefix, up to the last whole group.
      const encoded = Buffer.from(`${'x'.repeat(shift)}${secret}`).toString('base64');
      out.push({ name: `${name} (base64, offset ${shift})`, value: encoded.slice(shift ? 4 : 0, Math.floor((shift + secret.length) / 3) * 4) });
    }
  };
  add('source password', SRC_PASSWORD);
  add('target password', DST_PASSWORD);
  add('webhook token', HOOK_TOKEN);
  add('GitHub HMAC key', GITHUB_SECRET);
  // Bearer tokens the source's token server handed out: the signature part is unique to each.
  for (const [i, token] of (src.tokenServer?.issued ?? []).entries()) out.push({ name: `bearer token #${i}`, value: token.split('.')[2] as string });
  return out;
}

function ocirelay(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, DOCKER_CONFIG: dockerConfig, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('latin1')));
    child.stderr.on('data', (c: Buffer) => (out += c.toString('latin1')));
    child.on('error', reject);
    child.on('close', (code) => {
      capture(`ocirelay ${args[0]}`, out);
      resolve({ code: code ?? -1, out });
    });
  });
}

before(async () => {
  [src, dst] = await Promise.all([startRegistry({ auth: 'token', username: SRC_USER, password: SRC_PASSWORD }), startRegistry({ auth: 'basic', username: DST_USER, password: DST_PASSWORD })]);
  // Faults on both sides: retries, resumes and error paths are where secrets like to slip out.
  [sp, tp] = await Promise.all([startFaultProxy(src.url, { seed: 11, rate: 0.15 }), startFaultProxy(dst.url, { seed: 12, rate: 0.15 })]);
  dir = makeTempDir('secrets');
  dockerConfig = join(dir, 'docker');
  mkdirSync(dockerConfig);
  const auth = (user: string, password: string): string => Buffer.from(`${user}:${password}`).toString('base64');
  await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [sp.host]: { auth: auth(SRC_USER, SRC_PASSWORD) }, [tp.host]: { auth: auth(DST_USER, DST_PASSWORD) } } }));
  for (const tag of ['v1', 'v2']) {
    await pushTestImage(src.host, 'team/app', tag, { creds: `${SRC_USER}:${SRC_PASSWORD}`, layers: [{ bytes: tarOf({ [`app-${tag}`]: randomBytes(300_000, tag.length) }) }, { bytes: tarOf({ shared: randomBytes(200_000, 5) }) }] });
  }
});

after(async () => {
  await Promise.all([sp?.stop(), tp?.stop()]);
  await Promise.all([src?.stop(), dst?.stop()]);
});

describe('no secret in anything ocirelay writes', () => {
  test('CLI: copy, plan and export with flags and with config.json, through faults; failures with wrong and missing credentials', async () => {
    const srcCreds = `${SRC_USER}:${SRC_PASSWORD}`;
    const dstCreds = `${DST_USER}:${DST_PASSWORD}`;
    const ok = await ocirelay(['copy', `${sp.host}/team/app:v1`, `${tp.host}/mirror/app:v1`, '--src-creds', srcCreds, '--dst-creds', dstCreds]);
    assert.equal(ok.code, 0, ok.out);
    assert.equal((await ocirelay(['copy', `${sp.host}/team/app:v2`, `${tp.host}/mirror/app:v2`, '--json'], { OCIRELAY_SRC_CREDS: srcCreds, OCIRELAY_DST_CREDS: dstCreds })).code, 0);
    const planned = await ocirelay(['plan', `${sp.host}/team/app:v2`, `${tp.host}/mirror/planned:v2`]);
    assert.equal(planned.code, 0, `credentials from config.json: ${planned.out}`);
    const archive = join(dir, 'app.tar');
    const exported = await ocirelay(['export', `${sp.host}/team/app:v1`, '--to', archive, '--json']);
    assert.equal(exported.code, 0, exported.out);
    capture('exported archive', await readFile(archive));
    const wrong = await ocirelay(['copy', `${sp.host}/team/app:v1`, `${tp.host}/mirror/wrong:v1`, '--dst-creds', `${DST_USER}:not-${DST_PASSWORD}`, '--src-creds', `${SRC_USER}:x${SRC_PASSWORD}`]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.out, /credentials|401|refused|rejected/i);
    const missing = await ocirelay(['copy', `${sp.host}/team/app:v1`, `${tp.host}/mirror/missing:v1`], { DOCKER_CONFIG: join(dir, 'nowhere') });
    assert.equal(missing.code, 1);
    const usage = await ocirelay(['copy', `${sp.host}/team/app:v1`, `${tp.host}/mirror/u:v1`, '--src-creds', SRC_PASSWORD]);
    assert.equal(usage.code, 2, 'a password without a user is a usage error, which must not echo it');
  });

  test('serve: webhooks with a token and a GitHub HMAC key, good, unauthenticated and forged; then SIGTERM', async () => {
    const rules = join(dir, 'rules.yaml');
    await writeFile(
      rules,
      [
        'rules:',
        `  - from: ${sp.host}/team`,
        `    to: ${tp.host}/served`,
        'webhooks:',
        '  - path: /hooks/registry',
        '    kind: distribution',
        '    token: { env: HOOK_TOKEN }',
        '  - path: /hooks/github',
        '    kind: github',
        '    secret: { env: GITHUB_SECRET }',
        // The source's token service runs beside it on another port of a private (loopback)
        // address: unnamed, it would be refused (ERR_FORBIDDEN) by the destination policy.
        `trustedHosts: ["${new URL(src.tokenServer?.realm as string).host}"]`,
        '',
      ].join('\n'),
    );
    const serve = await startServe({ rules, args: ['--coalesce-ms', '50'], env: { DOCKER_CONFIG: dockerConfig, HOOK_TOKEN, GITHUB_SECRET } });
    try {
      const post = async (path: string, body: string, headers: Record<string, string>): Promise<number> => {
        const res = await fetch(`${serve.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
        capture(`serve answer ${path}`, await res.text());
        return res.status;
      };
      const event = JSON.stringify({ events: [{ id: 'e1', action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', repository: 'team/app', tag: 'v1', digest: `sha256:${'0'.repeat(64)}` }, request: { host: sp.host } }] });
      assert.equal(await post('/hooks/registry', event, { authorization: `Bearer ${HOOK_TOKEN}` }), 202);
      assert.equal(await post('/hooks/registry', event, {}), 401);
      assert.ok([401, 403].includes(await post('/hooks/registry', event, { authorization: `Bearer x${HOOK_TOKEN}` })));
      const github = JSON.stringify({ action: 'published', package: { name: 'app', package_type: 'container', owner: { login: 'team' } } });
      const forged = `sha256=${createHmac('sha256', `${GITHUB_SECRET}x`).update(github).digest('hex')}`;
      assert.ok([401, 403].includes(await post('/hooks/github', github, { 'x-github-event': 'package', 'x-hub-signature-256': forged, 'x-github-delivery': 'd1' })));
      await pollUntil(() => inspectRaw(`${dst.host}/served/app:v1`, `${DST_USER}:${DST_PASSWORD}`).catch(() => undefined), { what: `the webhook's copy in the target; serve said:\n${serve.output()}`, timeoutMs: 20_000 });
    } finally {
      serve.child.kill('SIGTERM');
      await serve.exited;
      capture('ocirelay serve', serve.output());
    }
  });

  test('the embedded pipeline: queue messages, JSON logs, errors and an export, under faults and with a refused target', async () => {
    const logs: string[] = [];
    const credentials = staticCredentials({ [sp.host]: { username: SRC_USER, password: SRC_PASSWORD }, [tp.host]: { username: DST_USER, password: DST_PASSWORD } });
    const pool = new RegistryPool({ credentials, retry: { baseDelayMs: 5, random: seededRandom(3) }, timeouts: { bodyIdleMs: 500 } });
    const wrongPool = new RegistryPool({ credentials: staticCredentials({ [sp.host]: { username: SRC_USER, password: SRC_PASSWORD }, [tp.host]: { username: DST_USER, password: `${DST_PASSWORD}-wrong` } }) });
    try {
      for (const [registries, target] of [[pool, 'pipeline/app'], [wrongPool, 'pipeline/refused']] as const) {
        const pipeline = new EmbeddedPipeline({ registries, store: new FileArchiveStore(), logger: createLogger({ sink: (line) => logs.push(line) }), maxReceiveCount: 3, backoffSeconds: () => 0.01 });
        // Every message any stage sends, as it is sent.
        for (const queue of [pipeline.work, pipeline.exports, pipeline.deadLetters]) {
          const send = queue.send.bind(queue);
          queue.send = (bodies, options) => {
            for (const body of bodies) capture(`${queue.name} message`, body);
            return send(bodies, options);
          };
        }
        await pipeline.submit({ v: PROTOCOL_VERSION, type: 'replicate', id: `secrets-${target}`, source: `${sp.host}/team/app:v1`, target: `${tp.host}/${target}:v1`, mode: 'prefer-multiarch', platforms: [], annotations: {}, referrers: false, includeForeignLayers: false, export: { format: 'layers', destination: join(dir, `${target.replace('/', '-')}.tar`) } });
        await pipeline.drain();
      }
      assert.ok(logs.some((l) => /refused|rejected|401|credentials/i.test(l)), 'the refused target was logged');
      capture('pipeline export', await readFile(join(dir, 'pipeline-app.tar')));
      // The library's own errors, as a caller would print them.
      for (const [what, promise] of [
        ['copy error', copyImage({ source: `${sp.host}/team/app:v1`, target: `${tp.host}/lib/refused:v1` }, { registries: wrongPool })],
        ['export error', exportImage({ source: `${sp.host}/team/nothing:v1`, destination: join(dir, 'none.tar') }, { registries: pool, store: new FileArchiveStore() })],
      ] as const) {
        const err = await (promise as Promise<unknown>).then(() => assert.fail(`${what}: should fail`), (e: unknown) => e as Error);
        capture(what, `${err.message}\n${err.stack}\n${JSON.stringify(err)}\n${String((err as { cause?: unknown }).cause)}`);
      }
    } finally {
      capture('pipeline logs', logs.join('\n'));
      await Promise.all([pool.close(), wrongPool.close()]);
    }
  });

  test('everything captured is free of every form of every secret', () => {
    const secrets = forms();
    assert.ok((src.tokenServer?.issued.length ?? 0) > 0, 'tokens were issued, so their absence means something');
    assert.ok(sp.faults + tp.faults > 0, 'faults were injected, so error paths ran');
    assert.ok(captured.length >= 10, `${captured.length} captures`);
    const leaks: string[] = [];
    for (const { where, text } of captured) for (const { name, value } of secrets) if (value.length >= 8 && text.includes(value)) leaks.push(`${name} in ${where}`);
    assert.deepEqual(leaks, []);
  });
});
