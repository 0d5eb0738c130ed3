// Template tests of the CDK app: the stack the repository deploys (infra/stack.ts with the
// example configuration, bundled for real with the local esbuild, once) and variants of the
// construct's props (bundling skipped: the bundles are test/bundle.test.ts's business).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { App, Duration, Stack, type CfnElement } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import { build } from 'esbuild';
import { BUNDLE_FILE, ESBUILD_OPTIONS, FUNCTION_NAMES, PROJECT_ROOT, entryOf } from '../infra/bundling.js';
import { ENV } from '../infra/environment.js';
import { EXAMPLE_TARGET_REGISTRY, exampleConfig } from '../infra/example-config.js';
import { CONFIG_LAYER_FILE, OCI_REPLICATOR_DEFAULTS, OciReplicator, SCHEDULED_SYNC_EVENT, type OciReplicatorProps } from '../infra/replicator.js';
import { cdkBundlingOptions, LAMBDA_ENVIRONMENT_LIMIT_BYTES, type ReplicatorFunction } from '../infra/replicator-function.js';
import { parseConfig } from '../lib/rules/config.js';
import { OciRelayStack } from '../infra/stack.js';
import type { TaskQueue } from '../infra/task-queue.js';
import { MAX_MESSAGE_BYTES } from '../lib/pipeline/messages.js';

type Json = Record<string, any>;

const run = promisify(execFile);

/**
 * Allow statements that may have Resource '*', and why: ecr:GetAuthorizationToken has no resource
 * type in IAM (AWS defines it account-wide); the token only works for what the repository-scoped
 * statements allow. Nothing else: the functions have no AWSLambdaBasicExecutionRole (logs go to
 * their own log group) and no X-Ray.
 */
const STAR_RESOURCE_ACTIONS = new Set(['ecr:GetAuthorizationToken']);

let outdir: string;
let stack: OciRelayStack;
let replicator: OciReplicator;
let template: Template;
let json: Json;

const D = OCI_REPLICATOR_DEFAULTS;
const EXAMPLE_CONFIG = exampleConfig(EXAMPLE_TARGET_REGISTRY);

function logicalId(stackOf: Stack, element: { node: { defaultChild?: unknown } } | CfnElement): string {
  const cfn = ('node' in element && (element.node as { defaultChild?: unknown }).defaultChild) || element;
  return stackOf.getLogicalId(cfn as CfnElement);
}

function fnId(fn: ReplicatorFunction, stackOf: Stack = stack): string {
  return logicalId(stackOf, fn.function);
}

function queueId(queue: TaskQueue, stackOf: Stack = stack): string {
  return logicalId(stackOf, queue.queue);
}

function resource(id: string, tpl: Json = json): Json {
  const r = tpl.Resources[id];
  assert.ok(r, `no resource ${id}`);
  return r;
}

function resourcesOf(type: string, tpl: Json = json): Array<[string, Json]> {
  return Object.entries(tpl.Resources as Record<string, Json>).filter(([, r]) => r.Type === type);
}

const arnOf = (id: string) => ({ 'Fn::GetAtt': [id, 'Arn'] });

/** Every policy statement anywhere in the template (IAM policies, roles, queue/bucket policies). */
function allStatements(node: unknown, path: string[] = [], out: Array<{ path: string; statement: Json }> = []) {
  if (Array.isArray(node)) node.forEach((child, i) => allStatements(child, [...path, String(i)], out));
  else if (node && typeof node === 'object') {
    for (const [key, value] of Object.entries(node)) {
      if (key === 'Statement' && Array.isArray(value)) value.forEach((s, i) => out.push({ path: [...path, key, String(i)].join('.'), statement: s as Json }));
      else allStatements(value, [...path, key], out);
    }
  }
  return out;
}

const asList = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** The statements of one role's policies. */
function roleStatements(fn: ReplicatorFunction, tpl: Json = json, stackOf: Stack = stack): Json[] {
  const roleId = logicalId(stackOf, fn.role);
  return resourcesOf('AWS::IAM::Policy', tpl)
    .filter(([, p]) => asList(p.Properties.Roles).some((r: Json) => r.Ref === roleId))
    .flatMap(([, p]) => p.Properties.PolicyDocument.Statement as Json[]);
}

function allows(statements: Json[], action: string, resourceMatch: (r: unknown) => boolean): boolean {
  return statements.some(
    (s) => s.Effect === 'Allow' && asList(s.Action).includes(action) && asList(s.Resource).some(resourceMatch),
  );
}

/** A CloudFormation value as a string: Ref and GetAtt as ${...}, Fn::Join joined. */
function render(value: unknown): string {
  if (typeof value === 'string') return value;
  const v = value as Json;
  if (v && typeof v === 'object') {
    if ('Ref' in v) return `\${${v.Ref}}`;
    if ('Fn::GetAtt' in v) return `\${${(v['Fn::GetAtt'] as string[]).join('.')}}`;
    if ('Fn::Join' in v) return (v['Fn::Join'][1] as unknown[]).map(render).join(v['Fn::Join'][0] as string);
  }
  return JSON.stringify(value);
}

const refersTo = (id: string) => (r: unknown) => JSON.stringify(r).includes(`"${id}"`);

before(() => {
  outdir = mkdtempSync(join(tmpdir(), 'ocirelay-cdk-'));
  const app = new App({ outdir });
  stack = new OciRelayStack(app, 'OciRelayTest', { replicator: { config: EXAMPLE_CONFIG } });
  replicator = stack.replicator;
  template = Template.fromStack(stack);
  json = template.toJSON() as Json;
});

after(() => rmSync(outdir, { recursive: true, force: true }));

describe('queues', () => {
  test('work and export queues redrive to their own dead-letter queue after maxReceiveCount receives', () => {
    for (const [queue, max] of [
      [replicator.workQueue, 10],
      [replicator.exportQueue, 3],
    ] as const) {
      const props = resource(queueId(queue)).Properties;
      assert.deepEqual(props.RedrivePolicy, { deadLetterTargetArn: arnOf(logicalId(stack, queue.deadLetters.queue)), maxReceiveCount: max });
      const dlq = resource(logicalId(stack, queue.deadLetters.queue)).Properties;
      assert.equal(dlq.MessageRetentionPeriod, 14 * 24 * 3600, 'dead letters are kept 14 days');
      assert.ok(dlq.MessageRetentionPeriod > props.MessageRetentionPeriod, 'a DLQ keeps messages longer than its source queue');
    }
    assert.equal(D.worker.maxReceiveCount, 10);
    assert.equal(D.export.maxReceiveCount, 3);
  });

  test('every queue sets MaximumMessageSize explicitly, and the task protocol fits in it', () => {
    const queues = resourcesOf('AWS::SQS::Queue');
    assert.equal(queues.length, 5, 'work, export, their two DLQs, failed requests');
    for (const [id, q] of queues) {
      assert.equal(typeof q.Properties.MaximumMessageSize, 'number', `${id} MaximumMessageSize`);
      assert.ok(q.Properties.MaximumMessageSize <= 262_144, `${id} within SQS's classic limit`);
    }
    for (const queue of [replicator.workQueue, replicator.exportQueue]) {
      assert.equal(resource(queueId(queue)).Properties.MaximumMessageSize, 262_144);
      assert.ok(resource(queueId(queue)).Properties.MaximumMessageSize >= MAX_MESSAGE_BYTES, 'lib caps messages below the queue limit');
    }
  });

  test('visibility timeout is at least six times the consuming function timeout (read from the template)', () => {
    const mappings = resourcesOf('AWS::Lambda::EventSourceMapping');
    assert.equal(mappings.length, 2);
    for (const [, m] of mappings) {
      const queueLogicalId = m.Properties.EventSourceArn['Fn::GetAtt'][0] as string;
      const fnLogicalId = m.Properties.FunctionName.Ref as string;
      const visibility = resource(queueLogicalId).Properties.VisibilityTimeout as number;
      const timeout = resource(fnLogicalId).Properties.Timeout as number;
      assert.equal(typeof visibility, 'number');
      assert.ok(visibility >= 6 * timeout, `${queueLogicalId}: visibility ${visibility} s < 6 x ${timeout} s`);
      assert.ok(visibility <= 12 * 3600, 'SQS maximum');
    }
  });

  test('every queue is encrypted (SQS-managed) and refuses non-TLS access', () => {
    const policies = resourcesOf('AWS::SQS::QueuePolicy');
    for (const [id, q] of resourcesOf('AWS::SQS::Queue')) {
      assert.equal(q.Properties.SqsManagedSseEnabled, true, `${id} encrypted`);
      const policy = policies.find(([, p]) => asList(p.Properties.Queues).some((r: Json) => r.Ref === id));
      assert.ok(policy, `${id} has a queue policy`);
      assert.ok(
        policy[1].Properties.PolicyDocument.Statement.some(
          (s: Json) => s.Effect === 'Deny' && s.Action === 'sqs:*' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false',
        ),
        `${id} denies aws:SecureTransport=false`,
      );
    }
  });
});

describe('functions', () => {
  test('four functions, all nodejs22.x on arm64, ESM bundles with the handler export', () => {
    const fns = resourcesOf('AWS::Lambda::Function');
    assert.equal(fns.length, 4, 'no custom-resource functions (no LogRetention, no auto-delete)');
    for (const [id, f] of fns) {
      assert.equal(f.Properties.Runtime, 'nodejs22.x', id);
      assert.deepEqual(f.Properties.Architectures, ['arm64'], id);
      assert.equal(f.Properties.Handler, 'index.handler', id);
    }
  });

  test('each function was bundled locally into index.mjs, byte for byte what the shared esbuild options build', async () => {
    for (const fn of [replicator.ingress, replicator.fanout, replicator.worker, replicator.exporter]) {
      // The asset's S3 key is its hash; the staged bundle is <outdir>/asset.<hash>/.
      const key = render(resource(fnId(fn)).Properties.Code.S3Key);
      const dir = join(outdir, `asset.${key.replace(/\.zip$/, '')}`);
      assert.ok(existsSync(join(dir, BUNDLE_FILE)), `${dir}/${BUNDLE_FILE}`);
      assert.ok(existsSync(join(dir, `${BUNDLE_FILE}.map`)), 'source map');
      const name = FUNCTION_NAMES.find((n) => fn.node.id.toLowerCase() === n);
      assert.ok(name, fn.node.id);
      const result = await build({ ...ESBUILD_OPTIONS, entryPoints: [entryOf(name)], outfile: join(outdir, 'api', name, BUNDLE_FILE), absWorkingDir: PROJECT_ROOT, write: false });
      const js = result.outputFiles.find((f) => f.path.endsWith(BUNDLE_FILE));
      assert.ok(js);
      assert.ok(Buffer.from(js.contents).equals(readFileSync(join(dir, BUNDLE_FILE))), `${name}: CDK's bundle differs from ESBUILD_OPTIONS' (see cdkBundlingOptions)`);
    }
  });

  test('CDK bundling options mirror the shared esbuild options', () => {
    const b = cdkBundlingOptions();
    assert.equal(b.forceDockerBundling, false);
    assert.equal(b.format, ESBUILD_OPTIONS.format);
    assert.equal(b.target, ESBUILD_OPTIONS.target);
    assert.equal(b.minify, ESBUILD_OPTIONS.minify);
    assert.equal(b.sourceMap, ESBUILD_OPTIONS.sourcemap);
    assert.equal(b.banner, ESBUILD_OPTIONS.banner.js);
    assert.deepEqual(b.externalModules, ['@aws-sdk/client-*']);
    assert.deepEqual(b.mainFields, ESBUILD_OPTIONS.mainFields);
  });

  test('memory and timeout defaults', () => {
    const expect: Array<[ReplicatorFunction, number, number]> = [
      [replicator.ingress, 512, 30],
      [replicator.fanout, 1024, 120],
      [replicator.worker, 1769, 900],
      [replicator.exporter, 1769, 900],
    ];
    for (const [fn, memory, timeout] of expect) {
      const p = resource(fnId(fn)).Properties;
      assert.equal(p.MemorySize, memory);
      assert.equal(p.Timeout, timeout);
    }
  });

  test('environment: configuration everywhere, queues and fan-out for the pipeline functions', () => {
    const env = (fn: ReplicatorFunction) => resource(fnId(fn)).Properties.Environment.Variables as Json;
    const fanoutName = resource(fnId(replicator.fanout)).Properties.FunctionName as string;
    assert.match(fanoutName, /^[A-Za-z0-9_-]{1,64}$/, 'a literal, valid function name');
    for (const fn of [replicator.ingress, replicator.fanout, replicator.worker, replicator.exporter]) {
      const e = env(fn);
      assert.deepEqual(JSON.parse(e[ENV.config]), EXAMPLE_CONFIG, 'the rules everywhere: fan-out runs the scheduled sync with them');
      assert.equal(e[ENV.logLevel], 'info');
      assert.equal(e[ENV.metricsNamespace], 'OciRelay');
      assert.equal(e[ENV.fanoutFunctionName], fanoutName);
      assert.equal(e.NODE_OPTIONS, '--enable-source-maps');
    }
    for (const fn of [replicator.fanout, replicator.worker, replicator.exporter]) {
      assert.deepEqual(JSON.parse(env(fn)[ENV.registrySecrets]), {});
      assert.equal(env(fn)[ENV.ecrCreateRepositories], 'false');
      assert.deepEqual(env(fn)[ENV.workQueueUrl], { Ref: queueId(replicator.workQueue) });
      assert.deepEqual(env(fn)[ENV.exportQueueUrl], { Ref: queueId(replicator.exportQueue) });
      assert.deepEqual(env(fn)[ENV.exportBucket], { Ref: logicalId(stack, replicator.exportBucket) });
    }
    assert.deepEqual(env(replicator.worker)[ENV.deadLetterQueueUrl], { Ref: logicalId(stack, replicator.workQueue.deadLetters.queue) });
    assert.deepEqual(env(replicator.exporter)[ENV.deadLetterQueueUrl], { Ref: logicalId(stack, replicator.exportQueue.deadLetters.queue) });
    assert.equal(env(replicator.fanout)[ENV.deadLetterQueueUrl], undefined);
    assert.deepEqual(env(replicator.fanout)[ENV.failedRequestsQueueUrl], { Ref: logicalId(stack, replicator.failedRequests.queue) }, 'invalid requests go there at once');
    for (const fn of [replicator.ingress, replicator.worker, replicator.exporter]) assert.equal(env(fn)[ENV.failedRequestsQueueUrl], undefined);
    assert.equal(env(replicator.worker)[ENV.workerTimeBudgetMarginMs], '30000');
    assert.equal(env(replicator.exporter)[ENV.workerTimeBudgetMarginMs], '30000');
    assert.equal(env(replicator.ingress)[ENV.workQueueUrl], undefined);
    // Ingress talks to no registry: a schedule hands one sync message per rule to fan-out.
    assert.equal(env(replicator.ingress)[ENV.registrySecrets], undefined);
    assert.equal(env(replicator.ingress)[ENV.ecrCreateRepositories], undefined);
  });

  test('log groups with retention, one per function', () => {
    const groups = resourcesOf('AWS::Logs::LogGroup');
    assert.equal(groups.length, 4);
    for (const [, g] of groups) assert.equal(g.Properties.RetentionInDays, 30);
    for (const fn of [replicator.ingress, replicator.fanout, replicator.worker, replicator.exporter]) {
      assert.deepEqual(resource(fnId(fn)).Properties.LoggingConfig.LogGroup, { Ref: logicalId(stack, fn.logGroup) });
    }
  });

  test('event source mappings: batch size, maximum concurrency, partial batch failures', () => {
    const expect: Array<[ReplicatorFunction, TaskQueue, number, number]> = [
      [replicator.worker, replicator.workQueue, D.worker.batchSize, D.worker.maxConcurrency],
      [replicator.exporter, replicator.exportQueue, D.export.batchSize, D.export.maxConcurrency],
    ];
    for (const [fn, queue, batchSize, maxConcurrency] of expect) {
      template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        FunctionName: { Ref: fnId(fn) },
        EventSourceArn: arnOf(queueId(queue)),
        BatchSize: batchSize,
        ScalingConfig: { MaximumConcurrency: maxConcurrency },
        FunctionResponseTypes: ['ReportBatchItemFailures'],
      });
    }
  });

  test('ingress has a function URL with auth NONE (authenticated in code), and nothing else is public', () => {
    template.resourceCountIs('AWS::Lambda::Url', 1);
    template.hasResourceProperties('AWS::Lambda::Url', { AuthType: 'NONE', TargetFunctionArn: arnOf(fnId(replicator.ingress)) });
    const publicPermissions = resourcesOf('AWS::Lambda::Permission').filter(([, p]) => p.Properties.Principal === '*');
    assert.equal(publicPermissions.length, 2, 'InvokeFunctionUrl and InvokeFunction via the URL');
    for (const [, p] of publicPermissions) {
      assert.deepEqual(p.Properties.FunctionName, arnOf(fnId(replicator.ingress)));
      assert.ok(p.Properties.FunctionUrlAuthType === 'NONE' || p.Properties.InvokedViaFunctionUrl === true);
    }
  });

  test('ingress invokes fan-out asynchronously: retries, event age and an on-failure SQS destination', () => {
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: fnId(replicator.fanout) },
      Qualifier: '$LATEST',
      MaximumRetryAttempts: 2,
      MaximumEventAgeInSeconds: 3600,
      DestinationConfig: { OnFailure: { Destination: arnOf(logicalId(stack, replicator.failedRequests.queue)) } },
    });
    const failedId = logicalId(stack, replicator.failedRequests.queue);
    assert.ok(allows(roleStatements(replicator.fanout), 'sqs:SendMessage', refersTo(failedId)), 'fan-out may send to its destination');
    // Fan-out's ARN is built from its fixed name (a reference would be circular for fan-out itself).
    const fanoutArn = `arn:\${AWS::Partition}:lambda:\${AWS::Region}:\${AWS::AccountId}:function:${resource(fnId(replicator.fanout)).Properties.FunctionName}`;
    assert.ok(allows(roleStatements(replicator.ingress), 'lambda:InvokeFunction', (r) => render(r) === fanoutArn), 'ingress may invoke fan-out');
    assert.ok(allows(roleStatements(replicator.fanout), 'lambda:InvokeFunction', (r) => render(r) === fanoutArn), 'fan-out may invoke itself (referrers)');
    for (const fn of [replicator.worker, replicator.exporter]) assert.ok(!allows(roleStatements(fn), 'lambda:InvokeFunction', () => true));
  });
});

describe('events', () => {
  test('a schedule rule sends the scheduled-sync event to ingress', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 hour)',
      State: 'ENABLED',
      Targets: [
        Match.objectLike({
          Arn: arnOf(fnId(replicator.ingress)),
          Input: JSON.stringify({ source: 'ocirelay.schedule', 'detail-type': 'Scheduled Sync', detail: {} }),
          DeadLetterConfig: { Arn: arnOf(logicalId(stack, replicator.failedRequests.queue)) },
        }),
      ],
    });
    assert.deepEqual(SCHEDULED_SYNC_EVENT, { source: 'ocirelay.schedule', 'detail-type': 'Scheduled Sync', detail: {} });
  });

  test('an ECR rule sends successful image pushes to ingress', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: { source: ['aws.ecr'], 'detail-type': ['ECR Image Action'], detail: { 'action-type': ['PUSH'], result: ['SUCCESS'] } },
      Targets: [Match.objectLike({ Arn: arnOf(fnId(replicator.ingress)) })],
    });
    const eventPermissions = resourcesOf('AWS::Lambda::Permission').filter(([, p]) => p.Properties.Principal === 'events.amazonaws.com');
    assert.equal(eventPermissions.length, 2);
    for (const [, p] of eventPermissions) assert.ok(p.Properties.SourceArn, 'scoped to its rule');
  });
});

describe('export bucket', () => {
  test('public access blocked, encrypted, TLS only, lifecycle, retained', () => {
    const buckets = resourcesOf('AWS::S3::Bucket');
    assert.equal(buckets.length, 1);
    const [id, bucket] = buckets[0]!;
    assert.deepEqual(bucket.Properties.PublicAccessBlockConfiguration, {
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    assert.deepEqual(bucket.Properties.BucketEncryption, {
      ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
    });
    assert.deepEqual(bucket.Properties.LifecycleConfiguration.Rules, [
      { Id: 'expire-exports', Status: 'Enabled', ExpirationInDays: 30, AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } },
    ]);
    assert.equal(bucket.DeletionPolicy, 'Retain');
    assert.equal(bucket.UpdateReplacePolicy, 'Retain');
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: id },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Action: 's3:*', Principal: { AWS: '*' }, Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
  });

  test('export may write (multipart included) and read archives, nobody else may', () => {
    const bucketId = logicalId(stack, replicator.exportBucket);
    const exportStatements = roleStatements(replicator.exporter);
    assert.ok(allows(exportStatements, 's3:PutObject', refersTo(bucketId)));
    assert.ok(allows(exportStatements, 's3:Abort*', refersTo(bucketId)));
    assert.ok(allows(exportStatements, 's3:GetObject*', refersTo(bucketId)));
    for (const fn of [replicator.ingress, replicator.fanout, replicator.worker]) {
      assert.ok(!roleStatements(fn).some((s) => JSON.stringify(s).includes(bucketId)), `${fn.node.id} has no bucket access`);
    }
  });
});

describe('alarms', () => {
  test('every dead-letter queue alarms on one visible message', () => {
    const alarms = resourcesOf('AWS::CloudWatch::Alarm');
    const dlqs = [replicator.workQueue.deadLetters.queue, replicator.exportQueue.deadLetters.queue, replicator.failedRequests.queue];
    for (const dlq of dlqs) {
      const id = logicalId(stack, dlq);
      const alarm = alarms.find(
        ([, a]) => a.Properties.MetricName === 'ApproximateNumberOfMessagesVisible' && JSON.stringify(a.Properties.Dimensions).includes(`"${id}"`),
      );
      assert.ok(alarm, `depth alarm on ${id}`);
      assert.equal(alarm[1].Properties.Namespace, 'AWS/SQS');
      assert.equal(alarm[1].Properties.Threshold, 1);
      assert.equal(alarm[1].Properties.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
    }
    // And every queue that is a redrive target is one of those.
    for (const [, q] of resourcesOf('AWS::SQS::Queue')) {
      const target = q.Properties.RedrivePolicy?.deadLetterTargetArn?.['Fn::GetAtt']?.[0];
      if (target) assert.ok(dlqs.some((d) => logicalId(stack, d) === target));
    }
  });

  test('the work and export queues alarm on the age of their oldest message', () => {
    for (const queue of [replicator.workQueue, replicator.exportQueue]) {
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'AWS/SQS',
        MetricName: 'ApproximateAgeOfOldestMessage',
        Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [queueId(queue), 'QueueName'] } }],
        Threshold: 3600,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      });
    }
  });
});

describe('IAM', () => {
  test('least privilege: no wildcard action, no "*" resource but the documented one, no managed policies', () => {
    const statements = allStatements(json.Resources);
    assert.ok(statements.length > 20, 'walked the template');
    const starResource: string[] = [];
    for (const { path, statement: s } of statements) {
      if (s.Effect !== 'Allow') continue;
      assert.equal(s.NotAction, undefined, `${path}: NotAction`);
      assert.equal(s.NotResource, undefined, `${path}: NotResource`);
      for (const action of asList<string>(s.Action)) {
        assert.notEqual(action, '*', `${path}: Action *`);
        assert.ok(!/^[a-z0-9-]+:\*$/i.test(action), `${path}: ${action}`);
      }
      if (s.Principal !== undefined) {
        assert.notEqual(s.Principal, '*', `${path}: Allow to anyone`);
        assert.notDeepEqual(s.Principal, { AWS: '*' }, `${path}: Allow to anyone`);
      }
      if (asList(s.Resource).includes('*')) {
        starResource.push(path);
        for (const action of asList<string>(s.Action)) assert.ok(STAR_RESOURCE_ACTIONS.has(action), `${path}: ${action} on "*"`);
      }
    }
    assert.equal(starResource.length, 3, 'GetAuthorizationToken for fan-out, worker and export only');
    for (const [id, role] of resourcesOf('AWS::IAM::Role')) {
      assert.equal(role.Properties.ManagedPolicyArns, undefined, `${id}: managed policies`);
    }
    assert.equal(resourcesOf('AWS::IAM::ManagedPolicy').length, 0);
  });

  test('each function may write only to its own log group', () => {
    for (const fn of [replicator.ingress, replicator.fanout, replicator.worker, replicator.exporter]) {
      const logStatements = roleStatements(fn).filter((s) => asList<string>(s.Action).some((a) => a.startsWith('logs:')));
      assert.deepEqual(logStatements, [
        { Action: ['logs:CreateLogStream', 'logs:PutLogEvents'], Effect: 'Allow', Resource: arnOf(logicalId(stack, fn.logGroup)) },
      ]);
    }
  });

  test('queue permissions follow the data flow', () => {
    const work = queueId(replicator.workQueue);
    const exp = queueId(replicator.exportQueue);
    const workDlq = logicalId(stack, replicator.workQueue.deadLetters.queue);
    const exportDlq = logicalId(stack, replicator.exportQueue.deadLetters.queue);
    const worker = roleStatements(replicator.worker);
    assert.ok(allows(worker, 'sqs:ReceiveMessage', refersTo(work)));
    assert.ok(allows(worker, 'sqs:DeleteMessage', refersTo(work)));
    assert.ok(allows(worker, 'sqs:ChangeMessageVisibility', refersTo(work)), 'retry backoff');
    assert.ok(allows(worker, 'sqs:SendMessage', refersTo(work)), 'follow-up tasks');
    assert.ok(allows(worker, 'sqs:SendMessage', refersTo(exp)), 'export after commit');
    assert.ok(allows(worker, 'sqs:SendMessage', refersTo(workDlq)), 'invalid messages to the DLQ at once');
    assert.ok(!allows(worker, 'sqs:ReceiveMessage', refersTo(exp)));
    const fanout = roleStatements(replicator.fanout);
    assert.ok(allows(fanout, 'sqs:SendMessage', refersTo(work)));
    assert.ok(allows(fanout, 'sqs:SendMessage', refersTo(exp)));
    assert.ok(!allows(fanout, 'sqs:ReceiveMessage', () => true));
    const failed = logicalId(stack, replicator.failedRequests.queue);
    assert.ok(allows(fanout, 'sqs:SendMessage', refersTo(failed)), 'invalid requests to the failed-requests queue');
    assert.ok(!allows(worker, 'sqs:SendMessage', refersTo(failed)));
    const exporter = roleStatements(replicator.exporter);
    assert.ok(allows(exporter, 'sqs:ReceiveMessage', refersTo(exp)));
    assert.ok(allows(exporter, 'sqs:ChangeMessageVisibility', refersTo(exp)));
    assert.ok(allows(exporter, 'sqs:SendMessage', refersTo(exportDlq)));
    assert.ok(!allows(exporter, 'sqs:SendMessage', refersTo(work)));
    assert.ok(!allows(exporter, 'sqs:SendMessage', refersTo(exp)));
    const ingress = roleStatements(replicator.ingress);
    // Ingress hands requests and sync messages to fan-out by invoke; it touches no queue, no bucket and no registry.
    assert.ok(!ingress.some((s) => asList<string>(s.Action).some((a) => a.startsWith('sqs:') || a.startsWith('s3:') || a.startsWith('ecr:'))));
  });

  test('ECR: pull for fan-out (it runs the scheduled sync), worker and export, none for ingress; push for fan-out (generated blobs) and worker; on the account repositories; no CreateRepository by default', () => {
    const isRepo = (r: unknown) => render(r) === 'arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*';
    assert.ok(!roleStatements(replicator.ingress).some((s) => asList<string>(s.Action).some((a) => a.startsWith('ecr:'))));
    for (const fn of [replicator.fanout, replicator.worker, replicator.exporter]) {
      const st = roleStatements(fn);
      assert.ok(allows(st, 'ecr:GetAuthorizationToken', (r) => r === '*'));
      for (const a of ['ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchCheckLayerAvailability', 'ecr:ListImages']) assert.ok(allows(st, a, isRepo), `${fn.node.id} ${a}`);
    }
    for (const fn of [replicator.fanout, replicator.worker]) {
      for (const a of ['ecr:PutImage', 'ecr:InitiateLayerUpload', 'ecr:UploadLayerPart', 'ecr:CompleteLayerUpload']) assert.ok(allows(roleStatements(fn), a, isRepo), `${fn.node.id} ${a}`);
    }
    assert.ok(!allows(roleStatements(replicator.exporter), 'ecr:PutImage', () => true));
    assert.ok(!JSON.stringify(json).includes('ecr:CreateRepository'));
    assert.ok(!JSON.stringify(json).includes('secretsmanager:'), 'no secrets configured, none readable');
  });
});

test('outputs: function URL, bucket name, queue URLs', () => {
  const outputs = json.Outputs as Json;
  assert.deepEqual(outputs.WebhookUrl.Value, { 'Fn::GetAtt': [logicalId(stack, replicator.functionUrl), 'FunctionUrl'] });
  assert.deepEqual(outputs.ExportBucketName.Value, { Ref: logicalId(stack, replicator.exportBucket) });
  assert.deepEqual(outputs.WorkQueueUrl.Value, { Ref: queueId(replicator.workQueue) });
  assert.deepEqual(outputs.ExportQueueUrl.Value, { Ref: queueId(replicator.exportQueue) });
  assert.ok(outputs.FailedRequestsQueueUrl && outputs.WorkDeadLetterQueueUrl && outputs.ExportDeadLetterQueueUrl);
});

describe('props', () => {
  /** A stack with bundling skipped (the construct is what is under test here). */
  function variant(props: Partial<OciReplicatorProps> | ((scope: Stack) => Partial<OciReplicatorProps>)) {
    const app = new App({ outdir: join(outdir, `variant-${++variants}`), context: { 'aws:cdk:bundling-stacks': [] } });
    const s = new Stack(app, 'Variant', { env: { account: '123456789012', region: 'eu-west-1' } });
    const r = new OciReplicator(s, 'Replicator', { config: EXAMPLE_CONFIG, ...(typeof props === 'function' ? props(s) : props) });
    const t = Template.fromStack(s);
    return { s, r, t, j: t.toJSON() as Json };
  }
  let variants = 0;

  test('no schedule, no ECR rule, an existing bucket, a topic for alarms', () => {
    const { s, r, t, j } = variant((scope) => ({
      schedule: null,
      ecrPushEvents: false,
      exportBucket: s3.Bucket.fromBucketName(scope, 'Existing', 'existing-exports'),
      alarmTopic: sns.Topic.fromTopicArn(scope, 'Topic', 'arn:aws:sns:eu-west-1:123456789012:ocirelay-alarms'),
    }));
    t.resourceCountIs('AWS::Events::Rule', 0);
    t.resourceCountIs('AWS::S3::Bucket', 0);
    const env = resource(logicalId(s, r.exporter.function), j).Properties.Environment.Variables;
    assert.equal(env[ENV.exportBucket], 'existing-exports');
    const alarms = resourcesOf('AWS::CloudWatch::Alarm', j);
    assert.equal(alarms.length, 5);
    for (const [, a] of alarms) assert.deepEqual(a.Properties.AlarmActions, ['arn:aws:sns:eu-west-1:123456789012:ocirelay-alarms']);
    assert.ok(allows(roleStatements(r.exporter, j, s), 's3:PutObject', (res) => render(res).endsWith(':s3:::existing-exports/*')));
  });

  test('registry secrets: GetSecretValue on exactly the configured secrets, for the functions that talk to registries (not ingress)', () => {
    const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:ghcr-AbCdEf';
    const { s, r, j } = variant({ registrySecrets: { 'ghcr.io': arn, 'registry.example.com': 'ocirelay/example' } });
    assert.ok(!JSON.stringify(roleStatements(r.ingress, j, s)).includes('secretsmanager'), 'no webhook secrets configured, and no registry secrets for ingress');
    for (const fn of [r.fanout, r.worker, r.exporter]) {
      const st = roleStatements(fn, j, s).filter((x) => asList<string>(x.Action).includes('secretsmanager:GetSecretValue'));
      assert.equal(st.length, 1);
      assert.deepEqual(asList(st[0]!.Action), ['secretsmanager:GetSecretValue']);
      assert.deepEqual(asList(st[0]!.Resource).map(render), [arn, 'arn:${AWS::Partition}:secretsmanager:eu-west-1:123456789012:secret:ocirelay/example-??????']);
    }
    const env = resource(logicalId(s, r.worker.function), j).Properties.Environment.Variables;
    assert.deepEqual(JSON.parse(env[ENV.registrySecrets]), { 'ghcr.io': arn, 'registry.example.com': 'ocirelay/example' });
  });

  test('ECR repository creation (fan-out) and repository scope from props', () => {
    const repos = ['arn:aws:ecr:eu-west-1:123456789012:repository/mirror/*'];
    const { s, r, j } = variant({ ecrCreateRepositories: true, ecrRepositoryArns: repos });
    const fanout = roleStatements(r.fanout, j, s);
    assert.ok(allows(fanout, 'ecr:CreateRepository', (x) => x === repos[0]));
    assert.ok(allows(fanout, 'ecr:DescribeRepositories', (x) => x === repos[0]));
    const worker = roleStatements(r.worker, j, s);
    assert.ok(allows(worker, 'ecr:PutImage', (x) => x === repos[0]));
    assert.ok(!allows(worker, 'ecr:PutImage', (x) => x !== repos[0]), 'only the configured repositories');
    assert.ok(!allows(worker, 'ecr:CreateRepository', () => true));
    assert.equal(resource(logicalId(s, r.worker.function), j).Properties.Environment.Variables[ENV.ecrCreateRepositories], 'true');
  });

  test('webhook secrets named in the configuration: ingress may read exactly those; inline and env secrets warn', () => {
    const hookArn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:hook-token-AbCdEf';
    const { s, r, j } = variant({
      config: {
        ...EXAMPLE_CONFIG,
        webhooks: [
          { path: '/hooks/registry', kind: 'distribution', token: { secretsManager: hookArn } },
          { path: '/hooks/github', kind: 'github', secret: { secretsManager: 'ocirelay/github-hmac' } },
          { path: '/hooks/inline', kind: 'distribution', token: 'not-a-secret-anymore' },
          { path: '/hooks/env', kind: 'distribution', token: { env: 'HOOK_TOKEN' } },
        ],
      },
    });
    const st = roleStatements(r.ingress, j, s).filter((x) => asList<string>(x.Action).includes('secretsmanager:GetSecretValue'));
    assert.equal(st.length, 1);
    assert.deepEqual(asList(st[0]!.Resource).map(render), [hookArn, 'arn:${AWS::Partition}:secretsmanager:eu-west-1:123456789012:secret:ocirelay/github-hmac-??????']);
    for (const fn of [r.fanout, r.worker, r.exporter]) assert.ok(!JSON.stringify(roleStatements(fn, j, s)).includes('secretsmanager'));
    const annotations = Annotations.fromStack(s);
    annotations.hasWarning('/Variant/Replicator', Match.stringLikeRegexp('webhook /hooks/inline: the token is written inline'));
    annotations.hasWarning('/Variant/Replicator', Match.stringLikeRegexp('webhook /hooks/env: .*HOOK_TOKEN'));
  });

  test('export destinations named by rules are writable by export, and only by it', () => {
    const rules = [{ ...EXAMPLE_CONFIG.rules[0]!, export: { format: 'layers' as const, to: 's3://archive-bucket/{repository}/{tag}.tar' } }];
    const { s, r, j } = variant({ config: { ...EXAMPLE_CONFIG, rules }, exportBucketName: 'ocirelay-exports-example' });
    const exporter = roleStatements(r.exporter, j, s);
    assert.ok(allows(exporter, 's3:PutObject', (x) => render(x) === 'arn:${AWS::Partition}:s3:::archive-bucket/*'));
    assert.ok(allows(exporter, 's3:PutObject', (x) => render(x) === `\${${logicalId(s, r.exportBucket)}.Arn}/*`), 'and its own bucket');
    Template.fromJSON(j).hasResourceProperties('AWS::S3::Bucket', { BucketName: 'ocirelay-exports-example' });
    for (const fn of [r.ingress, r.fanout, r.worker]) assert.ok(!JSON.stringify(roleStatements(fn, j, s)).includes('archive-bucket'));
    const bad = [{ ...EXAMPLE_CONFIG.rules[0]!, export: { format: 'layers' as const, to: 's3://{registry}/x.tar' } }];
    assert.throws(() => variant({ config: { ...EXAMPLE_CONFIG, rules: bad } }), /export\.to must name a bucket literally/);
  });

  test('sizing, concurrency, redrive and retention from props; visibility follows the timeout', () => {
    const { s, r, j } = variant({
      worker: { timeout: Duration.minutes(5), memorySize: 3008, batchSize: 10, maxConcurrency: 200, maxReceiveCount: 20, maxBatchingWindow: Duration.seconds(10) },
      export: { maxConcurrency: 2 },
      fanout: { reservedConcurrentExecutions: 25 },
      exportRetentionDays: 7,
      logRetention: 7,
      maxMessageSizeBytes: 65_536,
      oldestMessageAgeAlarm: Duration.minutes(30),
      schedule: 'cron(0 3 * * ? *)',
    });
    const worker = resource(logicalId(s, r.worker.function), j).Properties;
    assert.equal(worker.Timeout, 300);
    // Fan-out's reserved concurrency caps what a scheduled sync asks of the registries at once.
    assert.equal(resource(logicalId(s, r.fanout.function), j).Properties.ReservedConcurrentExecutions, 25);
    assert.equal(resource(logicalId(s, r.ingress.function), j).Properties.ReservedConcurrentExecutions, undefined);
    assert.equal(worker.MemorySize, 3008);
    const q = resource(logicalId(s, r.workQueue.queue), j).Properties;
    assert.equal(q.VisibilityTimeout, 6 * 300 + 10);
    assert.equal(q.RedrivePolicy.maxReceiveCount, 20);
    assert.equal(q.MaximumMessageSize, 65_536);
    const t = Template.fromJSON(j);
    t.hasResourceProperties('AWS::Lambda::EventSourceMapping', { BatchSize: 10, MaximumBatchingWindowInSeconds: 10, ScalingConfig: { MaximumConcurrency: 200 } });
    t.hasResourceProperties('AWS::Lambda::EventSourceMapping', { BatchSize: 1, ScalingConfig: { MaximumConcurrency: 2 } });
    t.hasResourceProperties('AWS::S3::Bucket', { LifecycleConfiguration: { Rules: [Match.objectLike({ ExpirationInDays: 7 })] } });
    t.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'cron(0 3 * * ? *)' });
    t.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'ApproximateAgeOfOldestMessage', Threshold: 1800 });
    for (const [, g] of resourcesOf('AWS::Logs::LogGroup', j)) assert.equal(g.Properties.RetentionInDays, 7);
  });

  test('invalid props fail at synth with the reason', () => {
    assert.throws(() => variant({ config: { rules: [] } }), /Variant\/Replicator: config: rules /);
    assert.throws(() => variant({ config: { rules: [{ from: 'docker.io/library/alpine', to: 'registry.example.com/x', tags: { include: ['('] } }] } }), /config: rules\.0\.tags\.include\.0 is not a valid regular expression/);
    assert.throws(() => variant({ worker: { maxConcurrency: 1 } }), /worker\.maxConcurrency must be from 2 to 1000/);
    assert.throws(() => variant({ export: { batchSize: 11 } }), /export\.batchSize must be from 1 to 10/);
    assert.throws(() => variant({ maxMessageSizeBytes: 300_000 }), /maxMessageSizeBytes/);
    assert.throws(() => variant({ maxMessageSizeBytes: MAX_MESSAGE_BYTES - 1 }), /maxMessageSizeBytes must be an integer from 65536 \(the task protocol's largest message\)/);
    const noisy = [{ ...EXAMPLE_CONFIG.rules[0]!, annotations: Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`org.example.n${i}`, 'x'.repeat(4000)])) }];
    assert.throws(() => variant({ config: { ...EXAMPLE_CONFIG, rules: noisy } }), /rule alpine-mirror: its annotations take \d+ bytes serialised; every task carries them, and the limit is 16384/);
    assert.throws(() => variant({ schedule: 'every hour' }), /schedule must be a rate/);
    assert.throws(() => variant({ fanout: { retryAttempts: 3 } }), /retryAttempts/);
    assert.throws(() => variant({ fanout: { reservedConcurrentExecutions: 0 } }), /fanout\.reservedConcurrentExecutions must be a whole number of at least 1/);
    assert.throws(() => variant({ worker: { timeout: Duration.seconds(20) } }), /worker\.timeBudgetMargin must be shorter than worker\.timeout/);
    assert.throws(() => variant({ worker: { timeout: Duration.hours(3), timeBudgetMargin: Duration.seconds(1) } }), /exceeds SQS's 12 hours/);
    // What still has to fit in the environment (the configuration does not: see the next test).
    const manySecrets = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`registry-${i}.example.com`, `arn:aws:secretsmanager:eu-west-1:123456789012:secret:registry-${i}-AbCdEf`]));
    assert.throws(() => variant({ registrySecrets: manySecrets }), /environment would take about \d+ bytes; Lambda allows 4096 \(largest: REGISTRY_SECRETS/);
  });

  test('a configuration too large for the environment travels in a layer that every function mounts', () => {
    const huge = { rules: Array.from({ length: 100 }, (_, i) => ({ name: `image-${i}`, from: `docker.io/library/image-${i}`, to: `registry.example.com/mirror/image-${i}` })) };
    assert.ok(Buffer.byteLength(JSON.stringify(huge)) > 4096, 'more than the whole environment may hold');
    const { s, j } = variant({ config: huge });
    const layers = resourcesOf('AWS::Lambda::LayerVersion', j);
    assert.equal(layers.length, 1);
    const [layerId, layer] = layers[0] as [string, Json];
    assert.deepEqual(layer.Properties.CompatibleRuntimes, ['nodejs22.x']);
    const functions = resourcesOf('AWS::Lambda::Function', j);
    assert.equal(functions.length, 4);
    for (const [id, fn] of functions) {
      assert.deepEqual(fn.Properties.Layers, [{ Ref: layerId }], id);
      assert.equal(fn.Properties.Environment.Variables[ENV.configFile], CONFIG_LAYER_FILE, id);
      assert.equal(fn.Properties.Environment.Variables[ENV.config], undefined, `${id}: not in the environment as well`);
    }
    // The layer's content: the configuration at the path the functions read, and nothing else.
    const assetDir = join(App.of(s)!.outdir, `asset.${String(layer.Properties.Content.S3Key).replace(/\.zip$/, '')}`);
    assert.deepEqual(readdirSync(assetDir, { recursive: true }).map(String).sort(), ['ocirelay', join('ocirelay', 'config.json')]);
    const shipped = readFileSync(join(assetDir, CONFIG_LAYER_FILE.replace(/^\/opt\//, '')), 'utf8');
    assert.deepEqual(parseConfig(shipped, 'layer'), parseConfig(JSON.stringify(huge)));
    // A configuration that fits stays in the environment (no fixed cut-off: over 2 KiB still fits), no layer.
    assert.equal(resourcesOf('AWS::Lambda::LayerVersion', variant({ config: EXAMPLE_CONFIG }).j).length, 0);
    const midsize = { rules: huge.rules.slice(0, 25) };
    assert.ok(Buffer.byteLength(JSON.stringify(midsize)) > 2048, `${Buffer.byteLength(JSON.stringify(midsize))} bytes`);
    const mid = variant({ config: midsize }).j;
    assert.equal(resourcesOf('AWS::Lambda::LayerVersion', mid).length, 0);
    for (const [id, fn] of resourcesOf('AWS::Lambda::Function', mid)) assert.ok(fn.Properties.Environment.Variables[ENV.config], id);
  });

  test('a configuration with CDK tokens (a secret construct\'s ARN) stays in the environment, and cannot go in a layer', () => {
    const token = (scope: Stack) => new secretsmanager.Secret(scope, 'HookToken').secretArn;
    const hooks = (scope: Stack) => [{ path: '/hooks/registry', kind: 'distribution' as const, token: { secretsManager: token(scope) } }];
    // Small: in the environment, where CloudFormation resolves the token.
    const { j } = variant((scope) => ({ config: { ...EXAMPLE_CONFIG, webhooks: hooks(scope) } }));
    const ingress = resourcesOf('AWS::Lambda::Function', j).find(([id]) => id.includes('Ingress'))?.[1] as Json;
    assert.ok(JSON.stringify(ingress.Properties.Environment.Variables[ENV.config]).includes('Fn::Join'), 'the token is resolved by CloudFormation');
    // Large: synth refuses, naming why, rather than write "${Token[...]}" into a file.
    const rules = Array.from({ length: 100 }, (_, i) => ({ name: `image-${i}`, from: `docker.io/library/image-${i}`, to: `registry.example.com/mirror/image-${i}` }));
    assert.throws(() => variant((scope) => ({ config: { rules, webhooks: hooks(scope) } })), /too large for the functions' environment, so it must go in a layer, which cannot hold CDK tokens/);
  });
});

// The one test that runs the CDK CLI itself, as an operator would on a fresh checkout: cdk.json's
// app, offline (the flags from TESTING.md), no Docker. It takes about 18 s: keep it the only one.
test('`cdk synth` through cdk.json works offline and yields the stack with its bundled functions and an environment within Lambda\'s 4 KiB', async () => {
  const out = mkdtempSync(join(tmpdir(), 'ocirelay-synth-'));
  try {
    const { stdout, stderr } = await run(process.execPath, [join(PROJECT_ROOT, 'node_modules', 'aws-cdk', 'bin', 'cdk'), 'synth', '-q', '--no-notices', '--no-version-reporting', '-o', out], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, CDK_DISABLE_CLI_TELEMETRY: 'true', CDK_DISABLE_VERSION_CHECK: 'true', CDK_DEFAULT_ACCOUNT: '', CDK_DEFAULT_REGION: '' },
      timeout: 180_000,
    });
    assert.doesNotMatch(`${stdout}${stderr}`, /docker/i, 'bundled without Docker');
    const synthesized = JSON.parse(readFileSync(join(out, 'OciRelay.template.json'), 'utf8')) as Json;
    const functions = resourcesOf('AWS::Lambda::Function', synthesized);
    assert.equal(functions.length, 4);
    const assets = JSON.parse(readFileSync(join(out, 'OciRelay.assets.json'), 'utf8')) as { files: Record<string, { source: { path: string } }> };
    for (const [id, fn] of functions) {
      assert.equal(fn.Properties.Runtime, 'nodejs22.x', id);
      assert.deepEqual(fn.Properties.Architectures, ['arm64'], id);
      const key = String(fn.Properties.Code.S3Key).replace(/\.zip$/, '');
      const asset = assets.files[key];
      assert.ok(asset, `${id}: its code is an asset`);
      assert.ok(existsSync(join(out, asset.source.path, BUNDLE_FILE)), `${id}: ${BUNDLE_FILE} bundled into the cloud assembly`);
      // Lambda's limit counts keys and values; a token (a queue URL) is counted at 160 bytes, as the construct does.
      const variables = fn.Properties.Environment.Variables as Json;
      const size = Object.entries(variables).reduce((n, [k, v]) => n + Buffer.byteLength(k) + (typeof v === 'string' ? Buffer.byteLength(v) : 160), 0);
      assert.ok(size <= LAMBDA_ENVIRONMENT_LIMIT_BYTES, `${id}: environment of about ${size} bytes`);
      assert.deepEqual(parseConfig(variables[ENV.config] as string, 'OCIRELAY_CONFIG'), parseConfig(JSON.stringify(EXAMPLE_CONFIG)), `${id}: the whole configuration travels`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
