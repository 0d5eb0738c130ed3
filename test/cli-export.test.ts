// `ocirelay export` through the CLI process: --json, standard output, S3 through the standard AWS
// configuration (AWS_ENDPOINT_URL_S3), usage errors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { makeTempDir, pushTestImage, startRegistry, startS3, tarOf, type PushedImage, type RunningRegistry, type RunningS3 } from './support/index.js';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'dist/cli/bin.js');

let registry: RunningRegistry;
let s3: RunningS3;
let image: PushedImage;
let dir: string;

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err }));
  });
}

before(async () => {
  [registry, s3] = await Promise.all([startRegistry(), startS3()]);
  image = await pushTestImage(registry.host, 'app/x', 'v1', { layers: [{ bytes: tarOf({ a: randomBytes(2000) }) }, { bytes: tarOf({ b: randomBytes(700) }) }] });
  dir = makeTempDir('cli-export');
});

after(async () => {
  await Promise.all([registry?.stop(), s3?.stop()]);
});

describe('ocirelay export', () => {
  test('--json names the destination, format, byte count and the archive sha256', async () => {
    const path = join(dir, 'x.tar');
    const { code, stdout, stderr } = await cli(['export', `${registry.host}/app/x:v1`, '--to', path, '--json']);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout.toString()) as Record<string, unknown>;
    const bytes = await readFile(path);
    assert.equal(result.destination, path);
    assert.equal(result.format, 'layers');
    assert.equal(result.bytes, bytes.length);
    assert.equal(result.sha256, sha256(bytes));
    assert.equal(result.digest, image.digest);
  });

  test('--to - streams the archive on stdout (the summary goes to stderr) and it equals the file export', async () => {
    const { code, stdout, stderr } = await cli(['export', `${registry.host}/app/x:v1`, '--to', '-', '--format', 'oci']);
    assert.equal(code, 0, stderr);
    const file = join(dir, 'x-oci.tar');
    await exec(process.execPath, [bin, 'export', `${registry.host}/app/x:v1`, '--to', file, '--format', 'oci', '-q']);
    assert.ok(stdout.equals(await readFile(file)), 'stdout carries exactly the archive');
    assert.match(stderr, /exported .* as oci to -/);
  });

  test('s3:// through the standard AWS configuration, with metadata', async () => {
    const { code, stdout, stderr } = await cli(['export', `${registry.host}/app/x:v1`, '--to', `s3://${s3.bucket}/cli/x.tar`, '--format', 'docker', '--json'], s3.env);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout.toString()) as { sha256: string; bytes: number };
    const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' });
    try {
      const object = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'cli/x.tar' }));
      const body = Buffer.from(await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
      assert.equal(sha256(body), result.sha256);
      assert.equal(object.Metadata?.format, 'docker');
      assert.equal(object.Metadata?.['source-digest'], image.digest);
    } finally {
      client.destroy();
    }
  });

  const usage: Array<[string, string[], RegExp]> = [
    ['no --to', ['export', 'a.example/x:1'], /--to is required/],
    ['a bad format', ['export', 'a.example/x:1', '--to', 'x.tar', '--format', 'zip'], /--format must be one of layers, oci, docker/],
    ['--no-config with oci', ['export', 'a.example/x:1', '--to', 'x.tar', '--format', 'oci', '--no-config'], /--no-config applies to the layers format/],
    ['a bad S3 URL', ['export', 'a.example/x:1', '--to', 's3://B/'], /not s3:\/\/bucket\/key/],
    ['--sse on a file', ['export', 'a.example/x:1', '--to', 'x.tar', '--sse', 'AES256'], /--sse applies to s3/],
    ['a bad platform', ['export', 'a.example/x:1', '--to', 'x.tar', '--platform', 'linux'], /os\/architecture/],
    ['a malformed reference', ['export', 'A/B:1', '--to', 'x.tar'], /invalid reference/],
  ];
  for (const [name, args, message] of usage) {
    test(`usage error: ${name} (exit 2, nothing written)`, async () => {
      const { code, stderr } = await cli(args);
      assert.equal(code, 2, stderr);
      assert.match(stderr, message);
    });
  }

  test('a missing image fails with exit 1 naming the source side and leaves no file', async () => {
    const path = join(dir, 'missing.tar');
    const { code, stderr } = await cli(['export', `${registry.host}/app/x:nope`, '--to', path]);
    assert.equal(code, 1);
    assert.match(stderr, /source: .*GET manifest/);
    await assert.rejects(readFile(path), /ENOENT/);
  });
});
