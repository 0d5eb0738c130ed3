/**
 * The retry policy: the one place that decides whether and when a request is tried again.
 *
 * Retried: connection failures (refused, reset, closed mid-request, TLS handshake dropped), timeouts,
 * 408, 429 and the gateway family 502/503/504. Not retried: every other status (an answer is an
 * answer), and any request whose body has been consumed and cannot be produced again (see
 * `RequestBody` in transport.ts): uploads restart from a fresh source stream or resume from the
 * registry's offset instead, one layer up.
 */
import { ErrorCodes, OciRelayError } from '../errors.js';

export interface RetryOptions {
  /**
   * Attempts in total, the first included. Default 5: with the default backoff that rides out
   * roughly 6 s of trouble (0.25 + 0.5 + 1 + 2 + jitter) plus any Retry-After, which covers a
   * registry restart or a short throttling window, without hiding a registry that is really down.
   */
  maxAttempts?: number;
  /** First backoff in ms; doubles each attempt. Default 250. */
  baseDelayMs?: number;
  /** Ceiling for one backoff in ms. Default 8000. */
  maxDelayMs?: number;
  /**
   * Ceiling for a server's Retry-After in ms. Default 60000: a registry asking for more than a
   * minute is better treated as failed, so that the caller (or the queue's redelivery) decides.
   */
  maxRetryAfterMs?: number;
  /** Randomness source, for reproducible tests. Default Math.random. */
  random?: () => number;
}

export const DEFAULT_RETRY: Required<RetryOptions> = {
  maxAttempts: 5,
  baseDelayMs: 250,
  maxDelayMs: 8000,
  maxRetryAfterMs: 60_000,
  random: Math.random,
};

export function resolveRetry(options: RetryOptions | undefined): Required<RetryOptions> {
  return { ...DEFAULT_RETRY, ...stripUndefined(options ?? {}) };
}

/**
 * The wait before attempt `attempt + 1` (attempt counts from 1): "equal jitter" exponential backoff,
 * half fixed and half random so that concurrent clients spread out but never retry at once.
 * A Retry-After from the server, when present, is honoured instead (capped).
 */
export function backoffDelay(attempt: number, policy: Required<RetryOptions>, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxRetryAfterMs);
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.round(exp / 2 + (exp / 2) * policy.random());
}

/** Parses Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. Undefined when absent or invalid. */
export function parseRetryAfter(value: string | string[] | undefined, now: number = Date.now()): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined) return undefined;
  const text = raw.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // The three HTTP-date forms all start with a day name; Date.parse alone takes "1.5" for a date.
  if (!/^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s/i.test(text)) return undefined;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * True for a failed transfer that trying again may get past: a network failure, throttling, a
 * retryable answer. Never for a failure of the content itself (a digest or size mismatch: the
 * same bytes would fail again) nor for an abort. The one judgement behind every retry above the
 * transport: an upload resumed in its session, another whole-blob attempt, a large blob handed on.
 */
export function isRetryableTransfer(err: unknown): boolean {
  if (err instanceof OciRelayError) {
    if (err.code === ErrorCodes.DigestMismatch || err.code === ErrorCodes.SizeMismatch || err.code === ErrorCodes.Aborted) return false;
    return err.retryable;
  }
  return isRetryableNetworkError(err);
}

/** undici and Node error codes that mean "the connection failed; the request may be sent again". */
const RETRYABLE_ERROR_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ECONNCLOSED',
]);

/** True for transport-level failures worth another attempt. */
export function isRetryableNetworkError(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && RETRYABLE_ERROR_CODES.has(code)) return true;
    if ((current as { retryable?: unknown }).retryable === true) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

export function networkErrorCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
