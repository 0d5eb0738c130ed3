// The `ocirelay copy` and `ocirelay plan` commands, run as a user runs them: `node dist/cli/bin.js`
// (built by test/run.mjs before the tests start) against real registries, checked with skopeo.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage, buildIndex, inspectRaw, makeTempDir, pushLayout, sha256Digest, startRegistry, type RunningRegistry } from './support/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = fileURLToPath(new URL('../dist/cli/bin.js', import.meta.url));

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with a clean environment: no OCIRELAY_* variables, an empty Docker config. */
let dockerConfig: string;
function ocirelay(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  const clean: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: dockerConfig, ...env };
  for (const key of Object.keys(clean)) if (key.startsWith('OCIRELAY_') && !(key in env)) delete clean[key];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [bin, ...args], { env: clean, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') {
        reject(error);
        return;
      }
      resolve({ code: error ? (error.code as unknown as number) : 0, stdout, stderr });
    });
  });
}

async function catalog(reg: { url: string; creds?: string }): Promise<string[]> {
  const res = await fetch(`${reg.url}/v2/_catalog`, reg.creds ? { headers: { authorization: `Basic ${Buffer.from(reg.creds).toString('base64')}` } } : {});
  assert.equal(res.status, 200);
  return ((await res.json()) as { repositories: string[] }).repositories;
}

let src: RunningRegistry;
let dst: RunningRegistry;
let empty: RunningRegistry;
let auth: RunningRegistry;
let indexDigest: string;
let indexRaw: Buffer;

before(async () => {
  dockerConfig = makeTempDir('docker-config');
  [src, dst, empty, auth] = await Promise.all([startRegistry(), startRegistry(), startRegistry(), startRegistry({ auth: 'basic' })]);
  const amd = await buildImage({ tag: 'amd64', layers: [[{ path: 'etc/hello', content: 'hello\n' }], [{ path: 'bin/app', content: { size: 30_000, seed: 1 } }]] });
  await buildImage({ layout: amd.layout, tag: 'arm64', architecture: 'arm64', variant: 'v8', layers: [[{ path: 'etc/hello', content: 'hello\n' }], [{ path: 'bin/app', content: { size: 30_000, seed: 2 } }]] });
  const index = await buildIndex({
    layout: amd.layout,
    name: 'multi',
    images: [
      { tag: 'amd64', platform: { os: 'linux', architecture: 'amd64' } },
      { tag: 'arm64', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ],
  });
  indexDigest = index.digest;
  indexRaw = index.raw;
  await Promise.all([pushLayout(index.ref, `${src.host}/cli/app:v1`, { all: true }), pushLayout(index.ref, `${auth.host}/secret/app:v1`, { all: true, creds: auth.creds as string })]);
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop(), empty?.stop(), auth?.stop()]);
});

describe('ocirelay: usage', () => {
  test('--help exits 0 and shows the commands and the copy options', async () => {
    const top = await ocirelay(['--help']);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /^usage: ocirelay <command>/);
    assert.match(top.stdout, /copy SRC DST/);
    assert.match(top.stdout, /plan SRC DST/);
    for (const command of ['copy', 'plan']) {
      const help = await ocirelay([command, '--help']);
      assert.equal(help.code, 0, help.stderr);
      assert.equal(help.stderr, '');
      for (const option of ['--platform', '--mode', '--annotation', '--referrers', '--src-creds', '--dst-creds', '--json']) assert.ok(help.stdout.includes(option), `${command} --help mentions ${option}`);
    }
  });

  const usageCases: Array<{ name: string; args: () => string[]; message: RegExp }> = [
    { name: 'no arguments to copy', args: () => ['copy'], message: /expected SRC and DST, got 0 arguments/ },
    { name: 'one argument', args: () => ['copy', `${src.host}/cli/app:v1`], message: /expected SRC and DST, got 1 argument\b/ },
    { name: 'three arguments', args: () => ['plan', 'a', 'b', 'c'], message: /expected SRC and DST, got 3 arguments/ },
    { name: 'a bad --mode', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--mode', 'fastest'], message: /--mode must be one of registry-defaults, prefer-multiarch, normalise-to-multiarch, got "fastest"/ },
    { name: 'a bad --platform', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--platform', 'linux'], message: /platform "linux" must be os\/architecture\[\/variant\]/ },
    { name: 'a --platform with too many parts', args: () => ['plan', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--platform', 'linux/arm/v7/x'], message: /platform "linux\/arm\/v7\/x" must be/ },
    { name: 'an --annotation without =', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--annotation', 'novalue'], message: /--annotation must be key=value, got "novalue"/ },
    { name: 'an --annotation without key', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--annotation', '=v'], message: /--annotation must be key=value, got "=v"/ },
    { name: 'a malformed source reference', args: () => ['copy', 'UPPER/Case', `${dst.host}/usage/app:v1`], message: /invalid reference "UPPER\/Case": repository must be lowercase/ },
    { name: 'a malformed target reference', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:bad tag`], message: /invalid reference .*tag/ },
    { name: 'a malformed digest', args: () => ['copy', `${src.host}/cli/app@sha256:abc`, `${dst.host}/usage/app:v1`], message: /invalid (reference|digest)/ },
    { name: 'an unknown option', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--frobnicate'], message: /Unknown option '--frobnicate'/ },
    { name: 'a bad --concurrency', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--concurrency', '0'], message: /--concurrency must be a positive integer, got "0"/ },
    { name: 'malformed --src-creds', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--src-creds', 'no-colon-here'], message: /--src-creds must have the form user:password/ },
    { name: 'an unknown command', args: () => ['frobnicate'], message: /unknown command "frobnicate"/ },
  ];
  // Independent processes: run them side by side.
  describe('exit 2', { concurrency: 4 }, () => {
    for (const c of usageCases) {
      test(`${c.name}: exit 2 with a clear message`, async () => {
        const ran = await ocirelay(c.args());
        assert.equal(ran.code, 2, ran.stderr);
        assert.match(ran.stderr, /^ocirelay: /);
        assert.match(ran.stderr, c.message);
        assert.equal(ran.stdout, '');
      });
    }

    test('malformed credentials are never echoed', async () => {
      const ran = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${dst.host}/usage/app:v1`, '--dst-creds', 'SuperSecretNoColon'], { OCIRELAY_SRC_CREDS: 'AnotherSecretNoColon' });
      assert.equal(ran.code, 2);
      assert.match(ran.stderr, /OCIRELAY_SRC_CREDS must have the form user:password/);
      assert.ok(!ran.stderr.includes('Secret'), ran.stderr);
    });
  });

  test('none of the usage errors wrote anything', async () => {
    assert.ok(!(await catalog(dst)).includes('usage/app'));
  });
});

describe('ocirelay copy', () => {
  test('copies, prints progress on stderr and a summary on stdout; a second run is up to date', async () => {
    const ran = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${dst.host}/plain/app:v1`]);
    assert.equal(ran.code, 0, ran.stderr);
    assert.match(ran.stdout, new RegExp(`^copied ${src.host}/cli/app:v1 -> ${dst.host}/plain/app:v1\\n  digest ${indexDigest}\\n  blobs: 5 copied \\(.+\\), 0 already there, 0 mounted; 3 manifests pushed\\n$`));
    assert.equal(ran.stderr.split('\n').filter((l) => l.startsWith('copied  sha256:')).length, 5);
    assert.match(ran.stderr, /^pushed {2}oci\.image\.index\.v1\+json v1$/m);
    assert.ok((await inspectRaw(`${dst.host}/plain/app:v1`)).equals(indexRaw));

    const again = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${dst.host}/plain/app:v1`]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, `${dst.host}/plain/app:v1 is up to date (${indexDigest})\n`);
  });

  test('--json prints one JSON object with source, target, digest and blob counts', async () => {
    const ran = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${dst.host}/json/app:v1`, '--json']);
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stderr, '');
    const lines = ran.stdout.split('\n');
    assert.deepEqual(lines.slice(1), [''], 'exactly one line');
    const out = JSON.parse(lines[0] as string) as Record<string, unknown>;
    assert.equal(out.source, `${src.host}/cli/app:v1`);
    assert.equal(out.target, `${dst.host}/json/app:v1`);
    assert.equal(out.digest, indexDigest);
    const blobs = out.blobs as Record<string, number>;
    assert.deepEqual(Object.keys(blobs).sort(), ['bytes', 'copied', 'mounted', 'skipped']);
    assert.equal(blobs.copied, 5);
    assert.equal(blobs.skipped, 0);
    assert.equal(blobs.mounted, 0);
    assert.ok((blobs.bytes as number) > 60_000);
    assert.equal(sha256Digest(await inspectRaw(`${dst.host}/json/app:v1`)), indexDigest);
  });

  test('options reach the engine: --platform, --annotation, --mode', async () => {
    const ran = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${dst.host}/opts/app:v1`, '--platform', 'linux/arm64', '--annotation', 'org.example.k=a=b', '--json']);
    assert.equal(ran.code, 0, ran.stderr);
    const out = JSON.parse(ran.stdout) as { digest: string };
    const index = JSON.parse((await inspectRaw(`${dst.host}/opts/app:v1`)).toString('utf8')) as { manifests: Array<{ platform: { architecture: string } }>; annotations: Record<string, string> };
    assert.equal(sha256Digest(await inspectRaw(`${dst.host}/opts/app:v1`)), out.digest);
    assert.deepEqual(index.manifests.map((m) => m.platform.architecture), ['arm64']);
    assert.deepEqual(index.annotations, { 'org.example.k': 'a=b' });

    const single = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${dst.host}/opts/defaults:v1`, '--mode', 'registry-defaults', '--json']);
    assert.equal(single.code, 0, single.stderr);
    const raw = await inspectRaw(`${dst.host}/opts/defaults:v1`);
    assert.equal(JSON.parse(raw.toString('utf8')).mediaType, 'application/vnd.oci.image.index.v1+json', 'distribution cannot pick from an OCI index: the whole index');
  });

  const failures: Array<{ name: string; args: () => string[]; message: RegExp }> = [
    { name: 'a source tag that does not exist', args: () => ['copy', `${src.host}/cli/app:nope`, `${dst.host}/fail/app:v1`], message: /^ocirelay: error: source: GET manifest: GET http:\/\/127\.0\.0\.1:\d+\/v2\/cli\/app\/manifests\/nope answered 404 MANIFEST_UNKNOWN.*\[ERR_REGISTRY\]\n$/ },
    { name: 'a target that needs credentials', args: () => ['copy', `${src.host}/cli/app:v1`, `${auth.host}/fail/app:v1`], message: /^ocirelay: error: target: HEAD manifest: the registry requires credentials \(Basic\) and none are configured for 127\.0\.0\.1:\d+ \[ERR_AUTH\]\n$/ },
    { name: 'a platform that is not there', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/fail/app:v1`, '--platform', 'linux/s390x'], message: /^ocirelay: error: source: no entry of sha256:[0-9a-f]{64} matches linux\/s390x; available: linux\/amd64, linux\/arm64\/v8 \[ERR_PLATFORM_NOT_FOUND\]\n$/ },
    { name: 'a target digest the copy would not produce', args: () => ['copy', `${src.host}/cli/app:v1`, `${dst.host}/fail/app@sha256:${'0'.repeat(64)}`], message: /^ocirelay: error: target: the target names digest sha256:0{64}, but the copy produces sha256:[0-9a-f]{64} \[ERR_UNSUPPORTED\]\n$/ },
  ];
  describe('exit 1', { concurrency: 4 }, () => {
    for (const f of failures) {
      test(`${f.name}: exit 1, the message names the side and the operation`, async () => {
        const ran = await ocirelay(f.args());
        assert.equal(ran.code, 1, ran.stderr);
        assert.match(ran.stderr, f.message);
        assert.equal(ran.stdout, '');
      });
    }
  });

  test('no failed copy wrote anything', async () => {
    assert.ok(!(await catalog(dst)).includes('fail/app'));
    assert.ok(!(await catalog(auth)).includes('fail/app'));
  });
});

describe('ocirelay plan', () => {
  test('prints what would be copied and writes nothing', async () => {
    const ran = await ocirelay(['plan', `${src.host}/cli/app:v1`, `${empty.host}/planned/app:v1`]);
    assert.equal(ran.code, 0, ran.stderr);
    const lines = ran.stdout.trimEnd().split('\n');
    assert.equal(lines[0], `plan ${src.host}/cli/app:v1 -> ${empty.host}/planned/app:v1`);
    assert.equal(lines[1], `  root ${indexDigest} (application/vnd.oci.image.index.v1+json)`);
    assert.equal(lines.filter((l) => /^ {2}copy {2}blob sha256:[0-9a-f]{64} /.test(l)).length, 5);
    const index = JSON.parse(indexRaw.toString('utf8')) as { manifests: Array<{ digest: string; platform: { architecture: string; variant?: string } }> };
    for (const m of index.manifests) assert.ok(lines.some((l) => l.startsWith(`  put   manifest ${m.digest} [linux/${m.platform.architecture}`)), `plans ${m.digest}`);
    assert.ok(lines.includes(`  put   manifest v1 -> ${indexDigest}`));
    assert.match(lines.at(-1) as string, /^ {2}5 blobs to copy \(.+\), 0 to mount, 0 already there$/);
    assert.deepEqual(await catalog(empty), []);
  });

  test('--json, and a plan against a target that has it all says so', async () => {
    const planned = await ocirelay(['plan', `${src.host}/cli/app:v1`, `${empty.host}/planned/app:v1`, '--json']);
    assert.equal(planned.code, 0, planned.stderr);
    const out = JSON.parse(planned.stdout) as { digest: string; noop: boolean; blobs: Array<{ action: string }>; manifests: Array<{ present: boolean }> };
    assert.equal(out.digest, indexDigest);
    assert.equal(out.noop, false);
    assert.deepEqual(out.blobs.map((b) => b.action), ['copy', 'copy', 'copy', 'copy', 'copy']);
    assert.deepEqual(await catalog(empty), []);

    // Within one registry, a plan says mount.
    const same = JSON.parse((await ocirelay(['plan', `${src.host}/cli/app:v1`, `${src.host}/other/app:v1`, '--json'])).stdout) as typeof out;
    assert.deepEqual(same.blobs.map((b) => b.action), ['mount', 'mount', 'mount', 'mount', 'mount']);
    assert.ok(!(await catalog(src)).includes('other/app'));

    await ocirelay(['copy', `${src.host}/cli/app:v1`, `${dst.host}/planned/app:v1`, '-q']);
    const done = await ocirelay(['plan', `${src.host}/cli/app:v1`, `${dst.host}/planned/app:v1`]);
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, new RegExp(`root ${indexDigest} \\(application/vnd\\.oci\\.image\\.index\\.v1\\+json\\) — already there, nothing to do`));
    assert.match(done.stdout, /0 blobs to copy \(0 B\), 0 to mount, 5 already there/);
  });
});

describe('credentials', () => {
  const secretFree = (ran: Ran): void => {
    const password = auth.password as string;
    const basic = Buffer.from(`${auth.username}:${password}`).toString('base64');
    for (const text of [ran.stdout, ran.stderr]) {
      assert.ok(!text.includes(password), 'the password is not printed');
      assert.ok(!text.includes(basic), 'the Basic header is not printed');
    }
  };

  test("without flags, Docker's config.json (DOCKER_CONFIG) gives the credentials, for either side", async () => {
    const configDir = makeTempDir('docker-config-auths');
    await writeFile(join(configDir, 'config.json'), JSON.stringify({ auths: { [`http://${auth.host}`]: { auth: Buffer.from(auth.creds as string).toString('base64') } } }));
    const pull = await ocirelay(['copy', `${auth.host}/secret/app:v1`, `${dst.host}/from-config/app:v1`], { DOCKER_CONFIG: configDir });
    assert.equal(pull.code, 0, pull.stderr);
    secretFree(pull);
    const push = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${auth.host}/to-config/app:v1`, '--json'], { DOCKER_CONFIG: configDir });
    assert.equal(push.code, 0, push.stderr);
    assert.equal(sha256Digest(await inspectRaw(`${auth.host}/to-config/app:v1`, auth.creds)), indexDigest);
    // A flag for one side does not hide config.json for the other.
    const mixed = await ocirelay(['copy', `${auth.host}/secret/app:v1`, `${auth.host}/mixed/app:v1`, '--dst-creds', auth.creds as string], { DOCKER_CONFIG: configDir });
    assert.equal(mixed.code, 0, mixed.stderr);
  });

  test('--src-creds and --dst-creds with a Basic-auth registry', async () => {
    const pull = await ocirelay(['copy', `${auth.host}/secret/app:v1`, `${dst.host}/from-auth/app:v1`, '--src-creds', auth.creds as string]);
    assert.equal(pull.code, 0, pull.stderr);
    secretFree(pull);
    assert.ok((await inspectRaw(`${dst.host}/from-auth/app:v1`)).equals(indexRaw));

    const push = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${auth.host}/to-auth/app:v1`, '--dst-creds', auth.creds as string, '--json']);
    assert.equal(push.code, 0, push.stderr);
    secretFree(push);
    assert.ok((await inspectRaw(`${auth.host}/to-auth/app:v1`, auth.creds)).equals(indexRaw));
  });

  test('OCIRELAY_SRC_CREDS and OCIRELAY_DST_CREDS', async () => {
    const pull = await ocirelay(['copy', `${auth.host}/secret/app:v1`, `${dst.host}/from-env/app:v1`], { OCIRELAY_SRC_CREDS: auth.creds as string });
    assert.equal(pull.code, 0, pull.stderr);
    secretFree(pull);
    assert.ok((await inspectRaw(`${dst.host}/from-env/app:v1`)).equals(indexRaw));

    const push = await ocirelay(['copy', `${src.host}/cli/app:v1`, `${auth.host}/to-env/app:v1`], { OCIRELAY_DST_CREDS: auth.creds as string });
    assert.equal(push.code, 0, push.stderr);
    secretFree(push);
    assert.equal(sha256Digest(await inspectRaw(`${auth.host}/to-env/app:v1`, auth.creds)), indexDigest);
  });

  test('a wrong password: exit 1, the side and operation named, no password printed', async () => {
    const wrong = `${auth.username}:Wrong-${auth.password as string}-Password`;
    for (const [args, env] of [
      [['copy', `${auth.host}/secret/app:v1`, `${dst.host}/wrong/app:v1`, '--src-creds', wrong], {}],
      [['copy', `${auth.host}/secret/app:v1`, `${dst.host}/wrong/app:v1`], { OCIRELAY_SRC_CREDS: wrong }],
      [['plan', `${auth.host}/secret/app:v1`, `${dst.host}/wrong/app:v1`, '--src-creds', wrong], {}],
    ] as Array<[string[], Record<string, string>]>) {
      const ran = await ocirelay(args, env);
      assert.equal(ran.code, 1, ran.stderr);
      assert.match(ran.stderr, /^ocirelay: error: source: (HEAD|GET) manifest: .*was refused \(401\) with fresh credentials .*\[ERR_AUTH\]\n$/);
      secretFree(ran);
      assert.ok(!ran.stderr.includes('Wrong-'), 'the wrong password is not printed either');
    }
    assert.ok(!(await catalog(dst)).includes('wrong/app'));
  });
});
