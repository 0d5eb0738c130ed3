// Bundles every Lambda function with esbuild, with the options the CDK construct uses
// (infra/bundling.ts), then imports each bundle in a fresh `node` process, as Lambda would: it
// must load, export `handler`, leave out the AWS SDK and stay within its size budget. And the
// CLI's bundle (scripts/cli-bundle.ts): what a command loads on start.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { build, type Metafile } from 'esbuild';
import {
  BUNDLE_BUDGET_BYTES,
  BUNDLE_FILE,
  ESBUILD_OPTIONS,
  FUNCTION_NAMES,
  PROJECT_ROOT,
  entryOf,
  type FunctionName,
} from '../infra/bundling.js';
import { functionEnvironment } from '../infra/environment.js';
import { EXAMPLE_TARGET_REGISTRY, exampleConfig } from '../infra/example-config.js';
import { pushTestImage, randomBytes, receiveRecords, startRegistry, startS3, startSqs, tarOf, type RunningSqs } from './support/index.js';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { PROTOCOL_VERSION } from '../lib/pipeline/messages.js';
import { CLI_ENTRY, CLI_ESBUILD_OPTIONS, CLI_OUT_DIR } from '../scripts/cli-bundle.js';

const run = promisify(execFile);

/**
 * The bundles are written inside the project's node_modules (ignored by git) so that the AWS SDK,
 * external to the bundle as in Lambda (where the runtime provides it), resolves from the
 * project's node_modules by ordinary ES module resolution, which walks up from the importing
 * file. (NODE_PATH does not apply to ES modules, and a bundle in /tmp would find no SDK.)
 */
const root = join(PROJECT_ROOT, 'node_modules', '.cache', 'ocirelay-bundle-test', `${process.pid}-${Date.now()}`);

/** What Lambda sets in every function's environment (the parts a module could look at on load). */
const lambdaBasics = (name: FunctionName): Record<string, string> => ({
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  LANG: 'en_US.UTF-8',
  TZ: ':UTC',
  AWS_REGION: 'eu-west-1',
  AWS_DEFAULT_REGION: 'eu-west-1',
  AWS_LAMBDA_FUNCTION_NAME: `OciRelay-${name}`,
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '1769',
  AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
  // Never reached (no request leaves the process), but the SDK must not go looking for any.
  AWS_ACCESS_KEY_ID: 'AKIAOCIRELAYBUNDLETEST',
  AWS_SECRET_ACCESS_KEY: 'bundle-test-not-a-secret',
});

/** The environment the construct sets (infra/environment.ts), with placeholder resource names. */
const constructEnvironment = (name: FunctionName, config: unknown = exampleConfig(EXAMPLE_TARGET_REGISTRY)) =>
  functionEnvironment(name, {
    config: { inline: JSON.stringify(config) },
    registrySecrets: {},
    ecrCreateRepositories: false,
    logLevel: 'error',
    metricsNamespace: 'OciRelay',
    fanoutFunctionName: 'OciRelay-Replicator-0123ABCD-fanout',
    workQueueUrl: 'https://sqs.eu-west-1.amazonaws.com/123456789012/OciRelay-WorkQueue',
    exportQueueUrl: 'https://sqs.eu-west-1.amazonaws.com/123456789012/OciRelay-ExportQueue',
    workDeadLetterQueueUrl: 'https://sqs.eu-west-1.amazonaws.com/123456789012/OciRelay-WorkDLQ',
    exportDeadLetterQueueUrl: 'https://sqs.eu-west-1.amazonaws.com/123456789012/OciRelay-ExportDLQ',
    failedRequestsQueueUrl: failedRequests?.url ?? 'https://sqs.eu-west-1.amazonaws.com/123456789012/OciRelay-FailedRequests',
    exportBucket: 'ocirelay-exports-test',
    workerTimeBudgetMarginMs: 30_000,
    exportTimeBudgetMarginMs: 30_000,
  });

/**
 * One invocation per function that needs no network but a local SQS (fauxqs): it checks that the
 * handler builds its environment (lib/aws/env.ts) from exactly what the construct sets, and answers.
 */
const SMOKE: Record<FunctionName, { event: unknown; check: (result: any) => void | Promise<void> }> = {
  // A webhook path that no endpoint has: authenticated routing answers without calling anything.
  ingress: {
    event: { rawPath: '/no-such-hook', headers: { 'content-type': 'application/json' }, body: '{}', isBase64Encoded: false, requestContext: { http: { method: 'POST', path: '/no-such-hook' } } },
    check: (r) => assert.ok(r.statusCode >= 400 && r.statusCode < 500, `status ${r.statusCode}`),
  },
  // An invalid request goes to the failed-requests queue at once (as Lambda's on-failure records
  // do after the retries), before any registry is contacted.
  fanout: {
    event: { v: 1, type: 'replicate' },
    check: async (r) => {
      assert.equal(r.status, 'invalid');
      const [record] = await receiveRecords(sqs.client, failedRequests, { max: 10, waitSeconds: 1 });
      assert.ok(record, 'a record in the failed-requests queue');
      const body = JSON.parse(record.body);
      assert.equal(body.requestContext.condition, 'InvalidRequest');
      assert.equal(body.requestContext.requestId, 'bundle-test');
      assert.deepEqual(body.requestPayload, { v: 1, type: 'replicate' });
      assert.match(body.responsePayload.errorMessage, /invalid message: replication request: id /);
    },
  },
  // An empty batch: nothing to do, no failures.
  worker: { event: { Records: [] }, check: (r) => assert.deepEqual(r, { batchItemFailures: [] }) },
  export: { event: { Records: [] }, check: (r) => assert.deepEqual(r, { batchItemFailures: [] }) },
};

const builtins = new Set(builtinModules);
const isBuiltin = (spec: string) => spec.startsWith('node:') || builtins.has(spec) || builtins.has(spec.split('/')[0]!);
// The runtime provides the SDK's clients; none of them is bundled.
const isSdk = (spec: string) => spec.startsWith('@aws-sdk/client-');

const results = new Map<FunctionName, { file: string; metafile: Metafile }>();
let sqs: RunningSqs;
let failedRequests: { url: string; arn: string };

before(async () => {
  mkdirSync(root, { recursive: true });
  sqs = await startSqs();
  failedRequests = await sqs.createQueue('failed-requests');
  await Promise.all(
    FUNCTION_NAMES.map(async (name) => {
      const file = join(root, name, BUNDLE_FILE);
      const result = await build({ ...ESBUILD_OPTIONS, entryPoints: [entryOf(name)], outfile: file, absWorkingDir: PROJECT_ROOT, metafile: true });
      assert.deepEqual(result.errors, []);
      assert.ok(result.metafile);
      results.set(name, { file, metafile: result.metafile });
    }),
  );
});

after(async () => {
  rmSync(root, { recursive: true, force: true });
  await sqs?.stop();
});

function outputOf(name: FunctionName) {
  const r = results.get(name);
  assert.ok(r, `${name} was bundled`);
  const key = relative(PROJECT_ROOT, r.file);
  const output = r.metafile.outputs[key];
  assert.ok(output, `metafile output ${key}`);
  return { ...r, output };
}

for (const name of FUNCTION_NAMES) {
  describe(`${name} bundle`, () => {
    test('loads in a fresh node process, exports handler, and answers with the construct\'s environment', async () => {
      const { file } = outputOf(name);
      const script = [
        `const m = await import(${JSON.stringify(pathToFileURL(file).href)});`,
        `if (typeof m.handler !== 'function') { console.error('handler is ' + typeof m.handler); process.exit(3); }`,
        `const result = await m.handler(${JSON.stringify(SMOKE[name].event)}, { awsRequestId: 'bundle-test', getRemainingTimeInMillis: () => 60000 });`,
        `process.stdout.write('\\nRESULT ' + JSON.stringify(result) + '\\n');`,
      ].join('\n');
      // cwd outside the project: nothing may resolve relative to the working directory.
      let stdout: string;
      try {
        ({ stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
          cwd: tmpdir(),
          env: { ...lambdaBasics(name), ...constructEnvironment(name), AWS_ENDPOINT_URL_SQS: sqs.endpoint },
          timeout: 60_000,
        }));
      } catch (error) {
        const e = error as { code?: number; stderr?: string };
        assert.fail(`the ${name} bundle failed (exit ${e.code}):\n${e.stderr}`);
      }
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
      assert.ok(line, `no result in:\n${stdout}`);
      await SMOKE[name].check(JSON.parse(line.slice('RESULT '.length)));
    });

    test('leaves the AWS SDK clients (and only them, besides Node built-ins) external', () => {
      const { output, metafile } = outputOf(name);
      const external = output.imports.filter((i) => i.external).map((i) => i.path);
      const unexpected = external.filter((spec) => !isBuiltin(spec) && !isSdk(spec));
      assert.deepEqual(unexpected, [], 'externals Lambda would not find');
      const bundledSdk = Object.keys(metafile.inputs).filter((p) => /node_modules\/@aws-sdk\//.test(p));
      assert.deepEqual(bundledSdk, [], 'the AWS SDK clients are provided by the runtime, not bundled');
      // The S3 client (for exports) is imported when an export runs, never on start:
      // a static import costs every function ~50-100 ms of cold start (bench target 6).
      assert.deepEqual(output.imports.filter((i) => i.path === '@aws-sdk/client-s3' && i.kind === 'import-statement'), [], 'no top-level import of the S3 client');
      const sdkImports = [...new Set(external.filter(isSdk))].sort();
      if (sdkImports.length) console.log(`${name} imports from the runtime: ${sdkImports.join(', ')}`);
    });

    test(`stays within its size budget (${(BUNDLE_BUDGET_BYTES[name] / 1024 / 1024).toFixed(1)} MiB)`, () => {
      const { file, output } = outputOf(name);
      const size = statSync(file).size;
      assert.equal(size, output.bytes);
      console.log(`${name}: ${(size / 1024).toFixed(1)} KiB of ${(BUNDLE_BUDGET_BYTES[name] / 1024).toFixed(0)} KiB`);
      assert.ok(size <= BUNDLE_BUDGET_BYTES[name], `${name} bundle is ${size} bytes, budget ${BUNDLE_BUDGET_BYTES[name]} (see infra/bundling.ts)`);
      assert.ok(statSync(`${file}.map`).isFile(), 'source map written next to it');
    });
  });
}

describe('ingress bundle with the configuration in a file (the config layer)', () => {
  // The construct ships a configuration too large for the environment at OCIRELAY_CONFIG_FILE; the
  // bundled handler must read it from there: the webhook it defines answers 401 without a token
  // (an unknown path would answer 404, and no configuration at all would fail).
  test('a webhook defined only in the file is served', async () => {
    const dir = join(root, 'config-layer');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ ...exampleConfig(EXAMPLE_TARGET_REGISTRY), webhooks: [{ path: '/hooks/from-file', kind: 'distribution', token: 'bundle-test-token' }] }));
    const env: Record<string, string> = { ...lambdaBasics('ingress'), ...constructEnvironment('ingress'), OCIRELAY_CONFIG_FILE: file };
    delete env.OCIRELAY_CONFIG;
    const event = { rawPath: '/hooks/from-file', headers: { 'content-type': 'application/json' }, body: '{}', isBase64Encoded: false, requestContext: { http: { method: 'POST', path: '/hooks/from-file' } } };
    const script = [
      `const m = await import(${JSON.stringify(pathToFileURL(outputOf('ingress').file).href)});`,
      `const result = await m.handler(${JSON.stringify(event)}, { awsRequestId: 'bundle-test', getRemainingTimeInMillis: () => 60000 });`,
      `process.stdout.write('\\nRESULT ' + JSON.stringify(result) + '\\n');`,
    ].join('\n');
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: tmpdir(), env, timeout: 60_000 });
    const result = JSON.parse((stdout.split('\n').find((l) => l.startsWith('RESULT ')) ?? 'RESULT null').slice('RESULT '.length)) as { statusCode: number; body: string };
    assert.equal(result.statusCode, 401, result.body);
    assert.match(result.body, /missing Authorization: Bearer/);
  });
});

describe('export bundle against real servers', () => {
  // The S3 client is imported only when an export runs (a dynamic import() that esbuild leaves
  // dynamic, so that it stays out of every function's start-up); this proves the lazy path works
  // inside the bundle: a real export task, a real registry, s3rver.
  test('an export task from an SQS record writes the archive to S3', async (t) => {
    const [registry, s3] = await Promise.all([startRegistry(), startS3()]);
    t.after(async () => {
      await Promise.all([registry.stop(), s3.stop()]);
    });
    const image = await pushTestImage(registry.host, 'app/exported', 'v1', { layers: [{ bytes: tarOf({ hello: randomBytes(3000, 5) }) }] });
    const { file } = outputOf('export');
    const task = { v: PROTOCOL_VERSION, type: 'export', requestId: 'bundle-export', source: `${registry.host}/app/exported@${image.digest}`, spec: { format: 'layers', destination: `s3://${s3.bucket}/bundle/app.tar` } };
    const event = { Records: [{ messageId: 'm1', receiptHandle: 'h1', body: JSON.stringify(task), attributes: { ApproximateReceiveCount: '1' }, eventSourceARN: 'arn:aws:sqs:eu-west-1:123456789012:exports' }] };
    const script = [
      `const m = await import(${JSON.stringify(pathToFileURL(file).href)});`,
      `const result = await m.handler(${JSON.stringify(event)}, { awsRequestId: 'bundle-export', getRemainingTimeInMillis: () => 60000 });`,
      `process.stdout.write('\\nRESULT ' + JSON.stringify(result) + '\\n');`,
    ].join('\n');
    const config = { rules: [{ from: `${registry.host}/app`, to: `${registry.host}/mirror` }] };
    const env = { ...lambdaBasics('export'), ...constructEnvironment('export', config), AWS_ENDPOINT_URL_SQS: sqs.endpoint, AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region };
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: tmpdir(), env, timeout: 60_000 }).catch((error: { stderr?: string }) => assert.fail(`the export bundle failed:\n${error.stderr}`));
    const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
    assert.deepEqual(JSON.parse(line?.slice('RESULT '.length) ?? 'null'), { batchItemFailures: [] }, stdout);
    const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    try {
      const object = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'bundle/app.tar' }));
      assert.equal(object.Metadata?.['source-digest'], image.digest);
      const bytes = Buffer.from(await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
      assert.ok(bytes.includes(Buffer.from(`${image.layers[0]?.digest}.tar`)), 'the layer is a member of the archive');
    } finally {
      client.destroy();
    }
  });
});

describe('the CLI bundle (scripts/cli-bundle.ts)', () => {
  // What a command loads before it does anything is what every invocation pays (bench target 3):
  // the entry and the copy command's chunk, with everything they import statically.
  test('the entry and the copy command load neither the AWS SDK nor child_process; export reaches the SDK only by dynamic import', async () => {
    const outdir = join(root, 'cli');
    const { metafile } = await build({ ...CLI_ESBUILD_OPTIONS, outdir, write: false, metafile: true });
    const outputs = metafile.outputs;
    const key = (path: string): string => relative(PROJECT_ROOT, path);
    const entryOutput = (source: string): string => {
      const found = Object.entries(outputs).find(([, o]) => o.entryPoint === key(source));
      assert.ok(found, `no output for ${source}`);
      return found[0];
    };
    /** Every output file and external reached from `start` through static imports and require() calls. */
    const staticClosure = (start: string): Set<string> => {
      const seen = new Set<string>([start]);
      const queue = [start];
      for (let file = queue.shift(); file; file = queue.shift()) {
        for (const imported of outputs[file]?.imports ?? []) {
          // A bundled CommonJS module's require() of an external counts too: most run on load.
          if ((imported.kind !== 'import-statement' && imported.kind !== 'require-call') || seen.has(imported.path)) continue;
          seen.add(imported.path);
          if (!imported.external) queue.push(imported.path);
        }
      }
      return seen;
    };
    const entry = entryOutput(CLI_ENTRY);
    const copy = entryOutput(join(PROJECT_ROOT, 'lib', 'cli', 'commands', 'copy.ts'));
    const startUp = new Set([...staticClosure(entry), ...staticClosure(copy)]);
    const heavy = [...startUp].filter((p) => p.startsWith('@aws-sdk/') || p === 'node:child_process' || p === 'child_process');
    assert.deepEqual(heavy, [], 'loaded by every copy');
    // The entry itself is small: commands are chunks of their own.
    assert.ok((outputs[entry]?.bytes ?? Infinity) < 16 * 1024, `the entry is ${outputs[entry]?.bytes} bytes`);
    const dynamicSdk = Object.values(outputs).flatMap((o) => o.imports).filter((i) => i.path === '@aws-sdk/client-s3');
    assert.ok(dynamicSdk.length > 0 && dynamicSdk.every((i) => i.kind === 'dynamic-import'), 'the S3 client is imported dynamically, where an export needs it');
  });

  test('dist/cli/bin.js is that bundle (test/run.mjs builds it before any test)', () => {
    const bin = readFileSync(join(CLI_OUT_DIR, 'bin.js'), 'utf8');
    assert.match(bin, /^#!\/usr\/bin\/env node\n/);
    assert.ok(!/from ["']\.\/main\.js["']/.test(bin), 'the tsc output, not the bundle');
    assert.match(bin, /from ["']\.\/chunks\/chunk-[A-Z0-9]+\.js["']/);
    assert.equal(statSync(join(CLI_OUT_DIR, 'bin.js')).mode & 0o111, 0o111, 'executable');
  });
});
