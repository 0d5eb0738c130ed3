/**
 * The AWS wiring of the pipeline: ports on SQS, Lambda and S3, registry credentials from ECR and
 * Secrets Manager, JSON logs and EMF metrics. Built once per Lambda instance and reused across
 * invocations (connection pools, token caches, cached secrets). The stack (infra/) sets the
 * environment variables read here.
 */
import { readFileSync } from 'node:fs';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { SQSClient } from '@aws-sdk/client-sqs';
import { ErrorCodes, OciRelayError } from '../errors.js';
import { BlobLocations } from '../engine/execute.js';
import { RegistryPool } from '../engine/registries.js';
import { parseEcrEvent } from '../events/ecr.js';
import { PARSERS } from '../events/index.js';
import { chainCredentials } from '../oci/credentials.js';
import type { IngressEnv } from '../pipeline/ingress.js';
import { ReplayCache } from '../pipeline/ingress.js';
import { serialise } from '../pipeline/messages.js';
import { namedHosts } from '../rules/match.js';
import { destinationPolicy } from '../oci/destination.js';
import type { PipelineEnv } from '../pipeline/stages.js';
import { createLogger, createMetrics, type LogLevel } from '../pipeline/telemetry.js';
import { parseConfig, resolveSecret, type Config } from '../rules/config.js';
import { LambdaInvoker } from './lambda-invoker.js';
import { ecrCredentials, ecrRepositoryCreator, secretsManagerCredentials } from './registry-credentials.js';
import { S3ArchiveStore } from './s3-archive-store.js';
import { SqsQueue } from './sqs-queue.js';

function required(env: NodeJS.ProcessEnv, name: string): string {
  const value = env[name];
  if (!value) throw new OciRelayError(ErrorCodes.Config, `environment variable ${name} is not set`);
  return value;
}

function jsonEnv<T>(env: NodeJS.ProcessEnv, name: string, fallback: T): T {
  const value = env[name];
  if (!value) return fallback;
  try {
    return JSON.parse(value) as T;
  } catch {
    throw new OciRelayError(ErrorCodes.Config, `environment variable ${name} is not JSON`);
  }
}

let cachedConfig: { from: string; config: Config } | undefined;

/**
 * The rules: OCIRELAY_CONFIG (JSON), or OCIRELAY_CONFIG_FILE (the path of that JSON; the construct
 * ships a configuration too large for Lambda's 4 KiB environment in a layer). Parsed once per
 * process (per source).
 */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): Config | undefined {
  const text = env.OCIRELAY_CONFIG;
  const file = env.OCIRELAY_CONFIG_FILE;
  if (text && file) throw new OciRelayError(ErrorCodes.Config, 'both OCIRELAY_CONFIG and OCIRELAY_CONFIG_FILE are set: set one');
  const from = file ? `file:${file}` : text ? `inline:${text}` : '';
  if (!from) return undefined;
  if (cachedConfig?.from === from) return cachedConfig.config;
  let json = text as string;
  if (file) {
    try {
      json = readFileSync(file, 'utf8');
    } catch (err) {
      throw new OciRelayError(ErrorCodes.Config, `OCIRELAY_CONFIG_FILE ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  }
  cachedConfig = { from, config: parseConfig(json, file ? `OCIRELAY_CONFIG_FILE ${file}` : 'OCIRELAY_CONFIG') };
  return cachedConfig.config;
}

let pipeline: PipelineEnv | undefined;

/**
 * Registries with AWS credentials. With rules configured, the destination policy lets through
 * only the hosts they name (requests are steered by webhook payloads and registry answers).
 */
export function awsRegistryPool(env: NodeJS.ProcessEnv, config: Config | undefined): RegistryPool {
  const named = config ? namedHosts(config) : undefined;
  return new RegistryPool({
    credentials: chainCredentials(secretsManagerCredentials(jsonEnv<Record<string, string>>(env, 'REGISTRY_SECRETS', {})), ecrCredentials()),
    insecureRegistries: config?.insecureRegistries ?? [],
    ...(named ? { guard: destinationPolicy({ namedHosts: named }) } : {}),
  });
}

export function awsPipelineEnv(env: NodeJS.ProcessEnv = process.env): PipelineEnv {
  if (pipeline) return pipeline;
  const endpoint = (service: string): { endpoint?: string } => {
    const url = env[`AWS_ENDPOINT_URL_${service}`] ?? env.AWS_ENDPOINT_URL;
    return url ? { endpoint: url } : {};
  };
  const sqs = new SQSClient({ ...endpoint('SQS') });
  const config = configFromEnv(env);
  const registries = awsRegistryPool(env, config);
  const deadLetterUrl = env.WORK_DLQ_URL;
  pipeline = {
    registries,
    work: new SqsQueue(sqs, required(env, 'WORK_QUEUE_URL')),
    exports: new SqsQueue(sqs, required(env, 'EXPORT_QUEUE_URL')),
    deadLetters: deadLetterUrl ? new SqsQueue(sqs, deadLetterUrl) : { send: async () => { throw new OciRelayError(ErrorCodes.Config, 'WORK_DLQ_URL is not set'); }, retryLater: async () => undefined },
    // Fan-out's on-failure destination, where it sends invalid requests itself (no pointless retries).
    ...(env.FAILED_REQUESTS_URL ? { failedRequests: new SqsQueue(sqs, env.FAILED_REQUESTS_URL) } : {}),
    store: new S3ArchiveStore(endpoint('S3').endpoint ? { endpoint: endpoint('S3').endpoint as string } : {}),
    fanout: new LambdaInvoker(new LambdaClient({ ...endpoint('LAMBDA') }), required(env, 'FANOUT_FUNCTION_NAME')),
    logger: createLogger({ level: (env.LOG_LEVEL as LogLevel | undefined) ?? 'info' }),
    metrics: createMetrics({ namespace: env.METRICS_NAMESPACE ?? 'ocirelay' }),
    locations: new BlobLocations(),
    // The rules: fan-out runs the steps of the scheduled sync with them.
    ...(config ? { config } : {}),
    ...(env.ECR_CREATE_REPOSITORIES === 'true' ? { ensureRepository: ecrRepositoryCreator() } : {}),
  };
  return pipeline;
}

let ingress: Promise<IngressEnv> | undefined;

export function awsIngressEnv(env: NodeJS.ProcessEnv = process.env): Promise<IngressEnv> {
  ingress ??= (async () => {
    const config = configFromEnv(env);
    if (!config) throw new OciRelayError(ErrorCodes.Config, 'neither OCIRELAY_CONFIG nor OCIRELAY_CONFIG_FILE is set: ingress needs rules');
    // Loaded here, not at the top: only ingress reads secrets this way (a cold start of the others is spared the client).
    const { GetSecretValueCommand, SecretsManagerClient } = await import('@aws-sdk/client-secrets-manager');
    const secretsClient = new SecretsManagerClient({});
    const lookup = async (arn: string): Promise<string> => (await secretsClient.send(new GetSecretValueCommand({ SecretId: arn }))).SecretString ?? '';
    const secrets = new Map<string, { token?: string; secret?: string }>();
    for (const hook of config.webhooks) {
      const token = await resolveSecret(hook.token, env, lookup);
      const secret = await resolveSecret(hook.secret, env, lookup);
      secrets.set(hook.path, { ...(token ? { token } : {}), ...(secret ? { secret } : {}) });
    }
    const fanout = new LambdaInvoker(new LambdaClient({}), required(env, 'FANOUT_FUNCTION_NAME'));
    const logger = createLogger({ level: (env.LOG_LEVEL as LogLevel | undefined) ?? 'info' });
    return {
      config,
      secrets,
      submit: (request) => fanout.invokeAsync(serialise(request)),
      // The schedule: one sync message per rule; fan-out lists and compares, step by step.
      submitSync: (message) => fanout.invokeAsync(serialise(message)),
      parsers: PARSERS,
      ecrParser: parseEcrEvent,
      logger,
      metrics: createMetrics({ namespace: env.METRICS_NAMESPACE ?? 'ocirelay' }),
      replays: new ReplayCache(),
    };
  })();
  ingress.catch(() => {
    ingress = undefined;
  });
  return ingress;
}
