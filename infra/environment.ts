/**
 * The environment variables the construct sets on the functions (and the handlers read). No CDK
 * imports here, so handlers and tests can use the names without loading aws-cdk-lib.
 *
 * | variable                        | ingress | fanout | worker | export |
 * | ------------------------------- | :-----: | :----: | :----: | :----: |
 * | OCIRELAY_CONFIG or _FILE        |    x    |   x    |   x    |   x    |
 * | REGISTRY_SECRETS                |         |   x    |   x    |   x    |
 * | ECR_CREATE_REPOSITORIES         |         |   x    |   x    |   x    |
 * | LOG_LEVEL, METRICS_NAMESPACE    |    x    |   x    |   x    |   x    |
 * | FANOUT_FUNCTION_NAME            |    x    |   x    |   x    |   x    |
 * | WORK_QUEUE_URL                  |         |   x    |   x    |   x    |
 * | EXPORT_QUEUE_URL                |         |   x    |   x    |   x    |
 * | WORK_DLQ_URL                    |         |        | work   | export |
 * | FAILED_REQUESTS_URL             |         |   x    |        |        |
 * | WORKER_TIME_BUDGET_MARGIN_MS    |         |        |   x    |   x    |
 * | EXPORT_BUCKET                   |         |   x    |   x    |   x    |
 *
 * Ingress talks to no registry (a schedule hands one sync message per rule to fan-out, which
 * lists and compares), so it gets no registry settings. The pipeline functions share one
 * environment loader (lib/aws/env.ts `awsPipelineEnv`), which requires the queue URLs and the
 * fan-out function name in each of them, so every pipeline function gets them; permissions do
 * not follow the variables: export may not send to the work queue. WORK_DLQ_URL is "the dead-letter queue of the
 * queue this function consumes" (invalid and permanently failed messages go there at once): the
 * work DLQ for the worker, the export DLQ for export.
 */
import type { FunctionName } from './bundling.js';

export const ENV = {
  /** JSON: `{ rules, webhooks, insecureRegistries }` (lib/rules/config.ts), validated at synth and at cold start; fan-out runs the scheduled sync's steps with its rules. */
  config: 'OCIRELAY_CONFIG',
  /** Instead of OCIRELAY_CONFIG, for a configuration too large for Lambda's 4 KiB environment: the path of that JSON in the config layer. */
  configFile: 'OCIRELAY_CONFIG_FILE',
  /** JSON: registry host -> Secrets Manager secret ARN or name. */
  registrySecrets: 'REGISTRY_SECRETS',
  /** 'true' | 'false': create a missing ECR target repository before pushing. */
  ecrCreateRepositories: 'ECR_CREATE_REPOSITORIES',
  /** 'debug' | 'info' | 'warn' | 'error' */
  logLevel: 'LOG_LEVEL',
  /** CloudWatch namespace of the embedded metrics. */
  metricsNamespace: 'METRICS_NAMESPACE',
  /** Name of the fan-out function (ingress invokes it asynchronously). */
  fanoutFunctionName: 'FANOUT_FUNCTION_NAME',
  /** The consumed queue's dead-letter queue (worker: work DLQ; export: export DLQ). */
  deadLetterQueueUrl: 'WORK_DLQ_URL',
  /** Fan-out's on-failure destination: it sends invalid requests there itself, at once. */
  failedRequestsQueueUrl: 'FAILED_REQUESTS_URL',
  /** Image, blob and commit tasks. */
  workQueueUrl: 'WORK_QUEUE_URL',
  /** Export tasks. */
  exportQueueUrl: 'EXPORT_QUEUE_URL',
  /** Milliseconds before the invocation's deadline at which a worker stops and hands the rest of a blob to a follow-up task. */
  workerTimeBudgetMarginMs: 'WORKER_TIME_BUDGET_MARGIN_MS',
  /** The construct's export bucket (archives go where each rule's `export.to` says). */
  exportBucket: 'EXPORT_BUCKET',
} as const;

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** What the environments are made of (CloudFormation tokens in the construct, placeholders in tests). */
export interface EnvironmentInputs {
  /**
   * The configuration: its JSON inline (OCIRELAY_CONFIG), or the path of a file holding it
   * (OCIRELAY_CONFIG_FILE; the construct ships a large configuration in a layer).
   */
  readonly config: { readonly inline: string } | { readonly file: string };
  /** registry host -> secret ARN or name. */
  readonly registrySecrets: Readonly<Record<string, string>>;
  readonly ecrCreateRepositories: boolean;
  readonly logLevel: LogLevel;
  readonly metricsNamespace: string;
  readonly fanoutFunctionName: string;
  readonly workQueueUrl: string;
  readonly exportQueueUrl: string;
  readonly workDeadLetterQueueUrl: string;
  readonly exportDeadLetterQueueUrl: string;
  readonly failedRequestsQueueUrl: string;
  readonly exportBucket: string;
  readonly workerTimeBudgetMarginMs: number;
  readonly exportTimeBudgetMarginMs: number;
}

/** The environment of one function: the table above, in code. */
export function functionEnvironment(fn: FunctionName, inputs: EnvironmentInputs): Record<string, string> {
  const common: Record<string, string> = {
    ...('file' in inputs.config ? { [ENV.configFile]: inputs.config.file } : { [ENV.config]: inputs.config.inline }),
    [ENV.logLevel]: inputs.logLevel,
    [ENV.metricsNamespace]: inputs.metricsNamespace,
    [ENV.fanoutFunctionName]: inputs.fanoutFunctionName,
    // Stack traces through the bundle's source map name TypeScript files and lines.
    NODE_OPTIONS: '--enable-source-maps',
  };
  if (fn === 'ingress') return common;
  const pipeline: Record<string, string> = {
    ...common,
    [ENV.registrySecrets]: JSON.stringify(inputs.registrySecrets),
    [ENV.ecrCreateRepositories]: String(inputs.ecrCreateRepositories),
    [ENV.workQueueUrl]: inputs.workQueueUrl,
    [ENV.exportQueueUrl]: inputs.exportQueueUrl,
    [ENV.exportBucket]: inputs.exportBucket,
  };
  switch (fn) {
    case 'fanout':
      return { ...pipeline, [ENV.failedRequestsQueueUrl]: inputs.failedRequestsQueueUrl };
    case 'worker':
      return {
        ...pipeline,
        [ENV.deadLetterQueueUrl]: inputs.workDeadLetterQueueUrl,
        [ENV.workerTimeBudgetMarginMs]: String(inputs.workerTimeBudgetMarginMs),
      };
    case 'export':
      return {
        ...pipeline,
        [ENV.deadLetterQueueUrl]: inputs.exportDeadLetterQueueUrl,
        [ENV.workerTimeBudgetMarginMs]: String(inputs.exportTimeBudgetMarginMs),
      };
  }
}
