// The AWS adapters that have no local server to run against (ECR, Secrets Manager, Lambda):
// their SDK clients are stubbed (`client.send` replaced) to check the requests they make, what
// they cache and for how long, and that no secret reaches an error. The Secrets Manager
// credentials are also used for real against a basic-auth distribution registry.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { CreateRepositoryCommand, DescribeRepositoriesCommand, ECRClient, GetAuthorizationTokenCommand } from '@aws-sdk/client-ecr';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { LambdaInvoker } from '../lib/aws/lambda-invoker.js';
import { ecrCredentials, ecrRegion, ecrRepositoryCreator, parseSecret, secretsManagerCredentials } from '../lib/aws/registry-credentials.js';
import { digestOf } from '../lib/digest.js';
import { RegistryPool } from '../lib/engine/registries.js';
import { chainCredentials } from '../lib/oci/credentials.js';
import { makeTempDir, startRegistry, type RunningRegistry } from './support/index.js';
import { configFromEnv } from '../lib/aws/env.js';
import { OciRelayError } from '../lib/errors.js';

type Sent = { name: string; input: Record<string, unknown> };

/** A real SDK client whose `send` answers from `answer` and records each command. */
function stub<C extends { send: unknown }>(client: C, answer: (name: string, input: any) => unknown): { client: C; sent: Sent[] } {
  const sent: Sent[] = [];
  (client as { send: unknown }).send = async (command: { constructor: { name: string }; input: Record<string, unknown> }) => {
    sent.push({ name: command.constructor.name, input: command.input });
    return answer(command.constructor.name, command.input);
  };
  return { client, sent };
}

function awsError(name: string, message = name): Error {
  const err = new Error(message);
  err.name = name;
  return err;
}

const ECR = '123456789012.dkr.ecr.eu-west-1.amazonaws.com';
const SECRET_PASSWORD = 'eyJwYXlsb2FkIjoidG9wLXNlY3JldCJ9-very-secret';

describe('ecrCredentials', () => {
  test('GetAuthorizationToken for the registry\'s account in its region, decoded, cached until 10 minutes before expiry', async () => {
    let clock = Date.parse('2026-01-01T00:00:00Z');
    const regions: string[] = [];
    let issued = 0;
    const { client, sent } = stub(new ECRClient({ region: 'eu-west-1' }), () => ({
      authorizationData: [{ authorizationToken: Buffer.from(`AWS:${SECRET_PASSWORD}-${++issued}`).toString('base64'), expiresAt: new Date(clock + 12 * 3600_000) }],
    }));
    const provider = ecrCredentials({ client: (region) => (regions.push(region), client), now: () => clock });
    assert.deepEqual(await provider.get(ECR), { username: 'AWS', password: `${SECRET_PASSWORD}-1` });
    assert.deepEqual(sent, [{ name: GetAuthorizationTokenCommand.name, input: { registryIds: ['123456789012'] } }]);
    assert.deepEqual(regions, ['eu-west-1']);
    clock += 11 * 3600_000 + 49 * 60_000; // 11 h 49 min: still 11 minutes left
    assert.deepEqual(await provider.get(ECR), { username: 'AWS', password: `${SECRET_PASSWORD}-1` });
    assert.equal(sent.length, 1, 'served from the cache');
    clock += 2 * 60_000; // 9 minutes left: renewed
    assert.deepEqual(await provider.get(ECR), { username: 'AWS', password: `${SECRET_PASSWORD}-2` });
    assert.equal(sent.length, 2);
    assert.deepEqual(regions, ['eu-west-1'], 'one client per region, reused');
  });

  test('other hosts are not ECR; a missing token fails without any secret in the message', async () => {
    const { client, sent } = stub(new ECRClient({ region: 'us-east-1' }), () => ({ authorizationData: [{ expiresAt: new Date() }] }));
    const provider = ecrCredentials({ client: () => client });
    assert.equal(await provider.get('ghcr.io'), undefined);
    assert.equal(await provider.get('123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example'), undefined);
    assert.equal(sent.length, 0);
    await assert.rejects(provider.get(ECR), (err: Error) => /ECR gave no authorization token for 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com/.test(err.message));
    assert.equal(ecrRegion('123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com'), 'us-gov-west-1');
  });
});

describe('secretsManagerCredentials and parseSecret', () => {
  test('one GetSecretValue per configured registry, cached for the TTL, re-read after it (rotation)', async () => {
    let clock = 0;
    let password = SECRET_PASSWORD;
    const { client, sent } = stub(new SecretsManagerClient({ region: 'eu-west-1' }), (_name, input) => ({ SecretString: JSON.stringify({ username: `user-of-${input.SecretId}`, password }) }));
    const provider = secretsManagerCredentials({ 'ghcr.io': 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:ghcr-AbCdEf' }, { client, now: () => clock });
    assert.equal(await provider.get('quay.io'), undefined, 'no secret named: anonymous');
    assert.equal(sent.length, 0);
    assert.deepEqual(await provider.get('ghcr.io'), { username: 'user-of-arn:aws:secretsmanager:eu-west-1:123456789012:secret:ghcr-AbCdEf', password: SECRET_PASSWORD });
    assert.deepEqual(sent, [{ name: GetSecretValueCommand.name, input: { SecretId: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:ghcr-AbCdEf' } }]);
    password = 'rotated';
    clock += 4 * 60_000;
    assert.equal((await provider.get('ghcr.io'))?.password, SECRET_PASSWORD, 'cached for five minutes');
    clock += 60_000;
    assert.equal((await provider.get('ghcr.io'))?.password, 'rotated');
    assert.equal(sent.length, 2);
  });

  test('every documented form parses; a malformed secret is refused without its value in the error', () => {
    assert.deepEqual(parseSecret(JSON.stringify({ username: 'u', password: SECRET_PASSWORD }), 'r'), { username: 'u', password: SECRET_PASSWORD });
    assert.deepEqual(parseSecret(JSON.stringify({ auth: Buffer.from(`u:${SECRET_PASSWORD}`).toString('base64') }), 'r'), { username: 'u', password: SECRET_PASSWORD });
    assert.deepEqual(parseSecret(JSON.stringify({ token: SECRET_PASSWORD }), 'r'), { registryToken: SECRET_PASSWORD });
    assert.deepEqual(parseSecret(`  u:${SECRET_PASSWORD}\n`, 'r'), { username: 'u', password: SECRET_PASSWORD });
    for (const bad of [SECRET_PASSWORD, `{"password":"${SECRET_PASSWORD}"`, JSON.stringify({ password: SECRET_PASSWORD }), `:${SECRET_PASSWORD}`, JSON.stringify({ auth: Buffer.from(SECRET_PASSWORD).toString('base64') })]) {
      assert.throws(() => parseSecret(bad, 'ghcr.io'), (err: Error) => {
        assert.match(err.message, /the secret for ghcr\.io must be \{"username","password"\}, \{"auth"\} or "user:password"/);
        assert.ok(!err.message.includes(SECRET_PASSWORD) && !JSON.stringify(err).includes(SECRET_PASSWORD) && !String(err.stack).includes(SECRET_PASSWORD), 'no secret in the error');
        return true;
      });
    }
  });

  describe('against a registry with basic auth', () => {
    let registry: RunningRegistry;
    before(async () => {
      registry = await startRegistry({ auth: 'basic' });
    });
    after(async () => {
      await registry?.stop();
    });

    test('the credentials from the secret push and pull; a wrong one fails without the password in the error', async () => {
      const answer = (password: string) => stub(new SecretsManagerClient({ region: 'eu-west-1' }), () => ({ SecretString: `${registry.username}:${password}` })).client;
      const pool = new RegistryPool({ credentials: chainCredentials(secretsManagerCredentials({ [registry.host]: 'registry-secret' }, { client: answer(registry.password as string) }), ecrCredentials()) });
      const blob = Buffer.from('pushed with a secret from Secrets Manager');
      try {
        await pool.get(registry.host).repository('secret/repo', 'push').pushBlob({ digest: digestOf(blob), size: blob.length }, () => Readable.from([blob]));
        assert.deepEqual(await pool.get(registry.host).repository('secret/repo').headBlob(digestOf(blob)), { size: blob.length });
      } finally {
        await pool.close();
      }
      const wrongPassword = `${SECRET_PASSWORD}-wrong`;
      const denied = new RegistryPool({ credentials: secretsManagerCredentials({ [registry.host]: 'registry-secret' }, { client: answer(wrongPassword) }) });
      try {
        await assert.rejects(denied.get(registry.host).repository('secret/repo').headBlob(digestOf(blob)), (err: Error) => {
          assert.match(err.message, /401|auth/i);
          const all = `${err.message} ${JSON.stringify(err)} ${String(err.stack)} ${String((err as { cause?: unknown }).cause)}`;
          assert.ok(!all.includes(wrongPassword) && !all.includes(Buffer.from(`${registry.username}:${wrongPassword}`).toString('base64')), 'no secret in the error');
          return true;
        });
      } finally {
        await denied.close();
      }
    });
  });
});

describe('ecrRepositoryCreator', () => {
  test('describes, creates when missing, and remembers; an existing repository is left alone', async () => {
    const existing = new Set(['mirror/present']);
    const { client, sent } = stub(new ECRClient({ region: 'eu-west-1' }), (name, input) => {
      if (name === DescribeRepositoriesCommand.name) {
        if (!existing.has(input.repositoryNames[0])) throw awsError('RepositoryNotFoundException');
        return { repositories: [{ repositoryName: input.repositoryNames[0] }] };
      }
      existing.add(input.repositoryName);
      return {};
    });
    const regions: string[] = [];
    const ensure = ecrRepositoryCreator({ client: (region) => (regions.push(region), client) });
    await ensure(ECR, 'mirror/alpine');
    assert.deepEqual(sent, [
      { name: DescribeRepositoriesCommand.name, input: { registryId: '123456789012', repositoryNames: ['mirror/alpine'] } },
      { name: CreateRepositoryCommand.name, input: { registryId: '123456789012', repositoryName: 'mirror/alpine', imageTagMutability: 'MUTABLE' } },
    ]);
    assert.deepEqual(regions, ['eu-west-1']);
    await ensure(ECR, 'mirror/alpine');
    assert.equal(sent.length, 2, 'known: no second call');
    await ensure(ECR, 'mirror/present');
    assert.deepEqual(sent.slice(2).map((s) => s.name), [DescribeRepositoriesCommand.name], 'present: not created');
    await ensure('ghcr.io', 'mirror/alpine');
    assert.equal(sent.length, 3, 'not ECR: nothing to do');
  });

  test('a creation raced by another worker is fine; any other error is thrown', async () => {
    const raced = stub(new ECRClient({ region: 'eu-west-1' }), (name) => {
      throw awsError(name === DescribeRepositoriesCommand.name ? 'RepositoryNotFoundException' : 'RepositoryAlreadyExistsException');
    });
    await ecrRepositoryCreator({ client: () => raced.client })(ECR, 'mirror/raced');
    assert.equal(raced.sent.length, 2);
    const denied = stub(new ECRClient({ region: 'eu-west-1' }), () => {
      throw awsError('AccessDeniedException', 'User is not authorized to perform: ecr:DescribeRepositories');
    });
    await assert.rejects(ecrRepositoryCreator({ client: () => denied.client })(ECR, 'mirror/denied'), { name: 'AccessDeniedException' });
  });
});

describe('LambdaInvoker', () => {
  test('an asynchronous invoke (InvocationType Event) of the fan-out function with the payload', async () => {
    const { client, sent } = stub(new LambdaClient({ region: 'eu-west-1' }), () => ({ StatusCode: 202 }));
    const payload = JSON.stringify({ v: 1, type: 'replicate', id: 'x' });
    await new LambdaInvoker(client, 'OciRelay-Replicator-fanout').invokeAsync(payload);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]?.name, InvokeCommand.name);
    const input = sent[0]?.input as { FunctionName: string; InvocationType: string; Payload: Uint8Array };
    assert.equal(input.FunctionName, 'OciRelay-Replicator-fanout');
    assert.equal(input.InvocationType, 'Event');
    assert.equal(Buffer.from(input.Payload).toString('utf8'), payload);
  });

  test('any answer but 202 is a retryable failure that names the function, not the payload', async () => {
    const { client } = stub(new LambdaClient({ region: 'eu-west-1' }), () => ({ StatusCode: 200 }));
    await assert.rejects(new LambdaInvoker(client, 'fanout-fn').invokeAsync(JSON.stringify({ secret: SECRET_PASSWORD })), (err: Error & { retryable?: boolean }) => {
      assert.equal(err.message, 'asynchronous invoke of fanout-fn answered 200');
      assert.equal(err.retryable, true);
      return true;
    });
  });
});

describe('configFromEnv', () => {
  const config = { rules: [{ name: 'alpine-mirror', from: 'docker.io/library/alpine', to: 'registry.example.com/mirror/alpine' }] };

  test('from OCIRELAY_CONFIG, or from the file OCIRELAY_CONFIG_FILE names (the construct\'s config layer)', () => {
    const dir = makeTempDir('config-file');
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(config));
    const inline = configFromEnv({ OCIRELAY_CONFIG: JSON.stringify(config) });
    const fromFile = configFromEnv({ OCIRELAY_CONFIG_FILE: file });
    assert.deepEqual(fromFile, inline);
    assert.equal(fromFile?.rules[0]?.name, 'alpine-mirror');
    assert.equal(configFromEnv({}), undefined);
  });

  test('both set, an unreadable file, a file that is not a configuration: clear errors naming the variable', () => {
    const dir = makeTempDir('config-file');
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"rules": [{"from": 42}]}');
    assert.throws(() => configFromEnv({ OCIRELAY_CONFIG: JSON.stringify(config), OCIRELAY_CONFIG_FILE: bad }), (err: OciRelayError) => err.code === 'ERR_CONFIG' && /both OCIRELAY_CONFIG and OCIRELAY_CONFIG_FILE are set/.test(err.message));
    assert.throws(() => configFromEnv({ OCIRELAY_CONFIG_FILE: join(dir, 'missing.json') }), (err: OciRelayError) => err.code === 'ERR_CONFIG' && /OCIRELAY_CONFIG_FILE .*missing\.json cannot be read: ENOENT/.test(err.message));
    assert.throws(() => configFromEnv({ OCIRELAY_CONFIG_FILE: bad }), (err: OciRelayError) => err.code === 'ERR_CONFIG' && err.message.includes(`OCIRELAY_CONFIG_FILE ${bad}`));
  });
});
