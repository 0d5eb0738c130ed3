/**
 * JSON logs and CloudWatch embedded metrics (EMF), without a dependency: one JSON object per line
 * on stdout, which Lambda ships to CloudWatch Logs; metric lines follow the embedded metric
 * format specification (an `_aws` member with CloudWatchMetrics directives), so CloudWatch turns
 * them into metrics with no API call.
 *
 * Nothing secret is logged: callers pass errors through `errorFields`, which keeps the code, the
 * side, the operation and the redacted URL that OciRelayError already carries.
 */
import { OciRelayError } from '../errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  /** A logger whose every line also carries `fields` (request id, task, image). */
  child(fields: Record<string, unknown>): Logger;
}

export type LogSink = (line: string) => void;

export function createLogger(options: { level?: LogLevel; sink?: LogSink; fields?: Record<string, unknown>; service?: string } = {}): Logger {
  const threshold = LEVELS[options.level ?? 'info'];
  const sink = options.sink ?? ((line: string) => process.stdout.write(`${line}\n`));
  const base = { service: options.service ?? 'ocirelay', ...options.fields };
  const log = (level: LogLevel, message: string, fields?: Record<string, unknown>): void => {
    if (LEVELS[level] < threshold) return;
    sink(JSON.stringify({ level, time: new Date().toISOString(), message, ...base, ...fields }));
  };
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    child: (fields) => createLogger({ ...options, fields: { ...options.fields, ...fields } }),
  };
}

export const silentLogger: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined, child: () => silentLogger };

/** What is safe to log of an error. */
export function errorFields(err: unknown): Record<string, unknown> {
  if (err instanceof OciRelayError) return { error: err.message, code: err.code, side: err.side, operation: err.operation, url: err.url };
  if (err instanceof Error) return { error: err.message, code: (err as { code?: string }).code ?? err.name };
  return { error: String(err) };
}

export type MetricName = 'BlobsCopied' | 'BlobsSkipped' | 'BlobsMounted' | 'BytesCopied' | 'ManifestsCommitted' | 'CommitsNotReady' | 'TaskFailures' | 'InvalidMessages' | 'Exports' | 'ExportBytes' | 'RequestsAccepted' | 'RequestsIgnored' | 'SyncSteps' | 'SyncRequested' | 'SyncPresent' | 'SyncFiltered' | 'SyncFailures';

const UNITS: Record<MetricName, 'Count' | 'Bytes'> = {
  BlobsCopied: 'Count',
  BlobsSkipped: 'Count',
  BlobsMounted: 'Count',
  BytesCopied: 'Bytes',
  ManifestsCommitted: 'Count',
  CommitsNotReady: 'Count',
  TaskFailures: 'Count',
  InvalidMessages: 'Count',
  Exports: 'Count',
  ExportBytes: 'Bytes',
  RequestsAccepted: 'Count',
  RequestsIgnored: 'Count',
  SyncSteps: 'Count',
  SyncRequested: 'Count',
  SyncPresent: 'Count',
  SyncFiltered: 'Count',
  SyncFailures: 'Count',
};

export interface Metrics {
  add(name: MetricName, value?: number): void;
  /** Writes what was added since the last flush as one EMF line (no line when nothing was added). */
  flush(): void;
}

export function createMetrics(options: { namespace?: string; sink?: LogSink; dimensions?: Record<string, string> } = {}): Metrics {
  const sink = options.sink ?? ((line: string) => process.stdout.write(`${line}\n`));
  const namespace = options.namespace ?? 'ocirelay';
  const dimensions = options.dimensions ?? { service: 'ocirelay' };
  let values = new Map<MetricName, number>();
  return {
    add: (name, value = 1) => values.set(name, (values.get(name) ?? 0) + value),
    flush: () => {
      if (!values.size) return;
      const names = [...values.keys()];
      sink(
        JSON.stringify({
          _aws: { Timestamp: Date.now(), CloudWatchMetrics: [{ Namespace: namespace, Dimensions: [Object.keys(dimensions)], Metrics: names.map((Name) => ({ Name, Unit: UNITS[Name] })) }] },
          ...dimensions,
          ...Object.fromEntries(values),
        }),
      );
      values = new Map();
    },
  };
}

/** Metrics that go nowhere (tests and the CLI). */
export function nullMetrics(): Metrics & { totals: Map<MetricName, number> } {
  const totals = new Map<MetricName, number>();
  return { totals, add: (name, value = 1) => totals.set(name, (totals.get(name) ?? 0) + value), flush: () => undefined };
}

/**
 * Wraps a handler factory whose environment carries a logger so that every line of one invocation
 * carries its Lambda request id (`awsRequestId`): the factory is given, per invocation, the
 * environment with a child logger. Used for ingress, whose handler does not read the context.
 */
export function withRequestId<E extends { logger: Logger }, Ev, R>(
  create: (getEnv: () => Promise<E>) => (event: Ev) => Promise<R>,
  getEnv: () => E | Promise<E>,
): (event: Ev, context?: { awsRequestId?: string }) => Promise<R> {
  return (event, context) =>
    create(async () => {
      const env = await getEnv();
      return context?.awsRequestId ? { ...env, logger: env.logger.child({ awsRequestId: context.awsRequestId }) } : env;
    })(event);
}
