/**
 * One small error hierarchy for all of ocirelay.
 *
 * Every error carries a stable `code` (callers branch on it, never on the message), an optional
 * `side` (which registry of a copy failed: source or target), the `operation` that failed and a
 * redacted URL. Nothing secret is ever put into a message: URLs go through `redactUrl`, header
 * values are never included, and response bodies are reduced to the OCI error codes they carry.
 */

export type Side = 'source' | 'target';

export const ErrorCodes = {
  /** A reference (`host/repo:tag@digest`) does not follow the distribution grammar. */
  InvalidReference: 'ERR_INVALID_REFERENCE',
  /** A digest string is malformed or uses an unsupported algorithm. */
  InvalidDigest: 'ERR_INVALID_DIGEST',
  /** Content did not hash to the digest it was addressed by. */
  DigestMismatch: 'ERR_DIGEST_MISMATCH',
  /** Content was longer or shorter than its descriptor said. */
  SizeMismatch: 'ERR_SIZE_MISMATCH',
  /** The registry answered with an error status (the `status` and OCI error codes say which). */
  Registry: 'ERR_REGISTRY',
  /** Authentication failed: bad credentials, a token endpoint that refused or answered garbage. */
  Auth: 'ERR_AUTH',
  /** The connection failed (refused, reset, TLS) or stalled past a timeout, after every retry. */
  Network: 'ERR_NETWORK',
  /** A manifest or index is malformed, too large, or inconsistent with its descriptor. */
  InvalidManifest: 'ERR_INVALID_MANIFEST',
  /** The request was refused by policy before it was sent (for example a private address). */
  Forbidden: 'ERR_FORBIDDEN',
  /** Configuration (options, credentials files, rules) is invalid. */
  Config: 'ERR_CONFIG',
  /** A command-line usage error. */
  Usage: 'ERR_USAGE',
  /** A requested platform is not in the index. */
  PlatformNotFound: 'ERR_PLATFORM_NOT_FOUND',
  /** The content cannot be copied as asked (for example a digest target that would change). */
  Unsupported: 'ERR_UNSUPPORTED',
  /** A task message is malformed or of an unknown version. */
  InvalidMessage: 'ERR_INVALID_MESSAGE',
  /** An operation was aborted by its caller. */
  Aborted: 'ERR_ABORTED',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface ErrorContext {
  cause?: unknown;
  side?: Side;
  /** What was being done, e.g. `GET manifest` or `PUT blob`. */
  operation?: string;
  /** The URL involved; it is redacted before it is stored. */
  url?: string | URL;
  /** Whether trying the same thing again may succeed (network faults, throttling). */
  retryable?: boolean;
}

export class OciRelayError extends Error {
  readonly code: ErrorCode;
  side: Side | undefined;
  readonly operation: string | undefined;
  readonly url: string | undefined;
  readonly retryable: boolean;
  /** The message without the side prefix, so that the side can be attached later. */
  readonly detail: string;

  constructor(code: ErrorCode, message: string, context: ErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = new.target.name;
    this.code = code;
    this.detail = message;
    this.side = undefined;
    this.operation = context.operation;
    this.url = context.url === undefined ? undefined : redactUrl(context.url);
    this.retryable = context.retryable ?? false;
    if (context.side) this.attachSide(context.side);
  }

  /** Names the side of a copy this error belongs to; the first side attached wins. */
  attachSide(side: Side): this {
    if (this.side === undefined) {
      this.side = side;
      this.message = `${side}: ${this.detail}`;
    }
    return this;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      side: this.side,
      operation: this.operation,
      url: this.url,
    };
  }
}

/** One entry of the OCI error body `{"errors":[{"code","message","detail"}]}` (spec: error codes). */
export interface OciErrorEntry {
  code: string;
  message?: string;
}

export class RegistryError extends OciRelayError {
  readonly status: number;
  readonly method: string;
  readonly errors: OciErrorEntry[];

  constructor(
    init: { status: number; method: string; url: string | URL; errors?: OciErrorEntry[]; operation?: string; message?: string },
    context: ErrorContext = {},
  ) {
    const errors = init.errors ?? [];
    const redacted = redactUrl(init.url);
    const codes = errors.length ? ` ${errors.map((e) => (e.message ? `${e.code} (${truncate(e.message, 200)})` : e.code)).join(', ')}` : '';
    const what = init.operation ? `${init.operation}: ` : '';
    const message = init.message ?? `${what}${init.method} ${redacted} answered ${init.status}${codes}`;
    super(ErrorCodes.Registry, message, {
      ...context,
      operation: init.operation ?? context.operation,
      url: init.url,
      retryable: context.retryable ?? isRetryableStatus(init.status),
    });
    this.status = init.status;
    this.method = init.method;
    this.errors = errors;
  }

  /** True when the registry said the thing does not exist (404 or an *_UNKNOWN error code). */
  get notFound(): boolean {
    return this.status === 404 || this.errors.some((e) => e.code.endsWith('_UNKNOWN'));
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), status: this.status, method: this.method, errors: this.errors };
  }
}

export class DigestMismatchError extends OciRelayError {
  readonly expected: string;
  readonly actual: string;
  constructor(expected: string, actual: string, context: ErrorContext = {}) {
    const what = context.operation ? `${context.operation}: ` : '';
    super(ErrorCodes.DigestMismatch, `${what}content has digest ${actual}, expected ${expected}${context.url ? ` (${redactUrl(context.url)})` : ''}`, context);
    this.expected = expected;
    this.actual = actual;
  }
}

export class SizeMismatchError extends OciRelayError {
  readonly expected: number;
  readonly actual: number;
  constructor(expected: number, actual: number, context: ErrorContext & { atLeast?: boolean } = {}) {
    const what = context.operation ? `${context.operation}: ` : '';
    const got = context.atLeast ? `at least ${actual}` : String(actual);
    super(ErrorCodes.SizeMismatch, `${what}content is ${got} bytes, expected ${expected}${context.url ? ` (${redactUrl(context.url)})` : ''}`, context);
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * The `user:password` of a reference written like a URL with credentials (`user:pass@host/app`,
 * `https://user:pass@host/app`): never a valid reference, and never to be echoed. A digest after
 * `@` (`alpine@sha256:…`) is not userinfo.
 */
function userinfoOf(input: string): string | undefined {
  const match = /^(?:[a-z][a-z0-9+.-]*:\/\/)?([^/@\s]*:[^/@\s]*)@(?=\S)(?![a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$)/i.exec(input);
  return match?.[1] || undefined;
}

export class InvalidReferenceError extends OciRelayError {
  readonly input: string;
  /** Which part of the reference is wrong: `registry`, `repository`, `tag`, `digest` or `reference`. */
  readonly part: string;
  readonly reason: string;
  constructor(input: string, part: string, reason: string) {
    const secret = userinfoOf(input);
    const hide = (text: string): string => (secret ? text.split(secret).join('***') : text);
    super(ErrorCodes.InvalidReference, `invalid reference ${JSON.stringify(truncate(hide(input), 300))}: ${part} ${hide(reason)}`);
    this.input = input;
    this.part = part;
    this.reason = reason;
  }
}

export class InvalidDigestError extends OciRelayError {
  readonly input: string;
  constructor(input: string, reason: string, context: ErrorContext = {}) {
    super(ErrorCodes.InvalidDigest, `invalid digest ${JSON.stringify(truncate(input, 200))}: ${reason}`, context);
    this.input = input;
  }
}

export class AuthError extends OciRelayError {
  readonly status: number | undefined;
  constructor(message: string, context: ErrorContext & { status?: number } = {}) {
    super(ErrorCodes.Auth, message, context);
    this.status = context.status;
  }
}

export class NetworkError extends OciRelayError {
  constructor(message: string, context: ErrorContext = {}) {
    super(ErrorCodes.Network, message, { retryable: true, ...context });
  }
}

export class ManifestError extends OciRelayError {
  constructor(message: string, context: ErrorContext = {}) {
    super(ErrorCodes.InvalidManifest, message, context);
  }
}

/** Shorthand for the errors that carry no extra fields. */
export function ociError(code: ErrorCode, message: string, context: ErrorContext = {}): OciRelayError {
  return new OciRelayError(code, message, context);
}

export function isOciRelayError(err: unknown): err is OciRelayError {
  return err instanceof OciRelayError;
}

/** 429 and the gateway family are transient by nature; anything else is an answer. */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 502 || status === 503 || status === 504 || status === 408;
}

/** Query parameters that are safe to show: they name content, never grant access. */
const SAFE_QUERY_KEYS = new Set(['digest', 'mount', 'from', 'n', 'last', 'artifactType', 'service', 'scope']);

/**
 * Removes anything that could grant access from a URL before it is shown: user info, and the
 * values of every query parameter that is not known to be harmless (signed redirect URLs carry
 * their signature in the query; upload session URLs carry opaque state).
 */
export function redactUrl(input: string | URL): string {
  let url: URL;
  try {
    url = new URL(String(input));
  } catch {
    return '<unparseable url>';
  }
  if (url.username || url.password) {
    url.username = '';
    url.password = '';
  }
  const params = [...url.searchParams.keys()];
  if (params.length) {
    const kept = new URLSearchParams();
    for (const [key, value] of url.searchParams) kept.append(key, SAFE_QUERY_KEYS.has(key) ? value : 'REDACTED');
    url.search = kept.toString();
  }
  return url.toString();
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/** The message of anything thrown, without its stack, for one-line reports. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
