/**
 * Registry authentication (distribution spec "token authentication"; docker/distribution
 * docs/spec/auth/token.md): anonymous, Basic, and Bearer tokens obtained from the realm a
 * `WWW-Authenticate` challenge names.
 *
 * What the authenticator guarantees:
 * - it learns the scheme from the first challenge and afterwards authorises requests up front
 *   (no `/v2/` ping, no 401 round trip per new scope once the realm is known);
 * - tokens are cached per scope set until shortly before they lapse (`expires_in`, `issued_at`;
 *   60 s when absent, as the spec says) and concurrent requests for one scope share one fetch;
 * - credentials go only to the registry itself and to a token realm on the same host name or
 *   explicitly allowed for that registry; any other realm is asked anonymously;
 * - nothing secret is ever put into an error message.
 */
import { AuthError, ErrorCodes, errorMessage, OciRelayError } from '../errors.js';
import { challengeScopes, parseWwwAuthenticate } from './challenge.js';
import type { CredentialProvider, Credentials } from './credentials.js';

/** A `repository:<name>:<actions>` (or `registry:catalog:*`) scope string. */
export type Scope = string;

export function repositoryScope(repository: string, actions: readonly string[]): Scope {
  return `repository:${repository}:${actions.join(',')}`;
}

export const CATALOG_SCOPE: Scope = 'registry:catalog:*';

/** Token realms known to belong to a registry although their host differs. */
export const DEFAULT_TOKEN_REALMS: Readonly<Record<string, readonly string[]>> = {
  'registry-1.docker.io': ['auth.docker.io'],
};

/** What the authenticator needs from the transport: one plain request to the token realm. */
export interface TokenRequest {
  url: URL;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
}
export type TokenFetcher = (request: TokenRequest) => Promise<{ status: number; body: string }>;

export interface AuthenticatorOptions {
  registry: string;
  credentials: CredentialProvider;
  /** Extra realm hosts allowed to receive this registry's credentials. */
  allowedRealmHosts?: readonly string[];
  fetchToken: TokenFetcher;
  /** Clock, for tests. */
  now?: () => number;
  /** True when the registry is spoken to over plain HTTP (loopback or insecure): then an http realm may get credentials too. */
  plainHttp?: boolean;
  /** The client id sent with OAuth2 refresh-token grants. */
  clientId?: string;
}

interface CachedToken {
  token: string;
  expiresAt: number;
  lifetimeMs: number;
}

/** Default lifetime when a token response has no expires_in (token.md: "defaults to 60 seconds"). */
const DEFAULT_TOKEN_LIFETIME_S = 60;

interface TokenResponse {
  token?: string;
  access_token?: string;
  expires_in?: number;
  issued_at?: string;
}

/**
 * A token response (token.md: `token` and/or `access_token`, optional `expires_in` and
 * `issued_at`; other fields ignored), or undefined when it is not one. Checked by hand rather than
 * with a schema library: this runs on every CLI start that meets a token realm, where loading one
 * costs more than the whole copy of a small image.
 */
export function parseTokenResponse(json: unknown): TokenResponse | undefined {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return undefined;
  const { token, access_token, expires_in, issued_at } = json as Record<string, unknown>;
  const optionalToken = (v: unknown): boolean => v === undefined || (typeof v === 'string' && v.length > 0);
  if (!optionalToken(token) || !optionalToken(access_token) || (token === undefined && access_token === undefined)) return undefined;
  if (expires_in !== undefined && !(typeof expires_in === 'number' && Number.isFinite(expires_in) && expires_in > 0)) return undefined;
  if (issued_at !== undefined && typeof issued_at !== 'string') return undefined;
  return json as TokenResponse;
}

export class Authenticator {
  private readonly options: AuthenticatorOptions;
  private readonly now: () => number;
  private scheme: 'unknown' | 'none' | 'basic' | 'bearer' = 'unknown';
  private bearer: { realm: URL; service?: string } | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<string>>();
  private credentialsPromise: Promise<Credentials | undefined> | undefined;
  /** How many tokens were fetched (observability and tests). */
  tokenFetches = 0;

  constructor(options: AuthenticatorOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
  }

  private credentials(): Promise<Credentials | undefined> {
    if (!this.credentialsPromise) {
      const pending = this.options.credentials.get(this.options.registry);
      this.credentialsPromise = pending;
      // A provider that failed (a helper timed out) is asked again next time.
      pending.catch(() => {
        if (this.credentialsPromise === pending) this.credentialsPromise = undefined;
      });
    }
    return this.credentialsPromise;
  }

  /**
   * The Authorization header for a request needing `scopes`, or undefined to go anonymously
   * (before the first challenge, or when the registry needs none).
   */
  async authorization(scopes: readonly Scope[]): Promise<string | undefined> {
    switch (this.scheme) {
      case 'unknown':
      case 'none': {
        const credentials = await this.credentials();
        // A configured registry token is sent from the start: that is what it is for.
        return credentials?.registryToken ? `Bearer ${credentials.registryToken}` : undefined;
      }
      case 'basic': {
        const credentials = await this.credentials();
        return credentials?.username !== undefined && credentials.password !== undefined ? basicHeader(credentials) : undefined;
      }
      case 'bearer':
        return `Bearer ${await this.token(scopes, false)}`;
    }
  }

  /**
   * Handles a 401: learns the scheme and fetches fresh credentials for the scopes (and whatever
   * extra scope the challenge names). Throws AuthError when nothing can make the request pass.
   * `withCredentials: false` says the refused request went without Authorization (it was sent
   * before a concurrent request learned the scheme): then what is already known is used again.
   */
  async challenge(header: string | string[] | undefined, scopes: readonly Scope[], context: { url: URL; operation: string; withCredentials?: boolean }): Promise<void> {
    const challenges = parseWwwAuthenticate(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      const realm = bearer.params.realm;
      let realmUrl: URL;
      try {
        realmUrl = new URL(realm ?? '');
      } catch {
        throw new AuthError(`${context.operation}: the registry's Bearer challenge has no valid realm`, { url: context.url, status: 401 });
      }
      if (realmUrl.protocol !== 'https:' && realmUrl.protocol !== 'http:') {
        throw new AuthError(`${context.operation}: the registry's token realm is not an http(s) URL`, { url: context.url, status: 401 });
      }
      if (context.withCredentials === false && this.scheme === 'bearer') {
        const cached = this.tokens.get(scopeKey(scopes));
        if (cached && this.isFresh(cached)) return;
      }
      this.scheme = 'bearer';
      this.bearer = { realm: realmUrl, ...(bearer.params.service !== undefined ? { service: bearer.params.service } : {}) };
      const wanted = mergeScopes([...scopes, ...challengeScopes(bearer)]);
      // Drop whatever was cached for this scope set: it was just refused.
      this.tokens.delete(scopeKey(scopes));
      this.tokens.delete(scopeKey(wanted));
      const token = await this.token(wanted, true);
      // Requests for `scopes` now use the token that covers the challenge's scopes too.
      this.tokens.set(scopeKey(scopes), this.tokens.get(scopeKey(wanted)) ?? { token, expiresAt: this.now() + DEFAULT_TOKEN_LIFETIME_S * 1000, lifetimeMs: DEFAULT_TOKEN_LIFETIME_S * 1000 });
      return;
    }
    if (basic) {
      const credentials = await this.credentials();
      if (credentials?.username === undefined || credentials.password === undefined) {
        throw new AuthError(`${context.operation}: the registry requires credentials (Basic) and none are configured for ${this.options.registry}`, { url: context.url, status: 401 });
      }
      if (this.scheme === 'basic' && context.withCredentials !== false) {
        throw new AuthError(`${context.operation}: the registry rejected the credentials for ${this.options.registry}`, { url: context.url, status: 401 });
      }
      this.scheme = 'basic';
      return;
    }
    throw new AuthError(`${context.operation}: the registry answered 401 without a Basic or Bearer challenge`, { url: context.url, status: 401 });
  }

  /** The scheme learned so far: `unknown` until the first challenge (or the first anonymous success). */
  get currentScheme(): 'unknown' | 'none' | 'basic' | 'bearer' {
    return this.scheme;
  }

  private async token(scopes: readonly Scope[], fresh: boolean): Promise<string> {
    const key = scopeKey(scopes);
    if (!fresh) {
      const cached = this.tokens.get(key);
      if (cached && this.isFresh(cached)) return cached.token;
    }
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.fetch(scopes).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  /** Refresh ahead of expiry: within the last fifth of the lifetime, at most 30 s ahead. */
  private isFresh(cached: CachedToken): boolean {
    const margin = Math.min(30_000, cached.lifetimeMs / 5);
    return this.now() < cached.expiresAt - margin;
  }

  private async fetch(scopes: readonly Scope[]): Promise<string> {
    const bearer = this.bearer;
    if (!bearer) throw new AuthError('no token realm known');
    const realm = bearer.realm;
    const credentials = await this.credentials();
    const mayReceiveCredentials = this.realmAllowed(realm);
    const url = new URL(realm);
    const headers: Record<string, string> = { accept: 'application/json' };
    let request: TokenRequest;
    if (credentials?.identityToken && mayReceiveCredentials) {
      // OAuth2 refresh-token grant (docker/distribution docs/spec/auth/oauth.md).
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: credentials.identityToken, client_id: this.options.clientId ?? 'ocirelay' });
      if (bearer.service) form.set('service', bearer.service);
      if (scopes.length) form.set('scope', scopes.join(' '));
      headers['content-type'] = 'application/x-www-form-urlencoded';
      request = { url, method: 'POST', headers, body: form.toString() };
    } else {
      if (bearer.service) url.searchParams.set('service', bearer.service);
      for (const scope of scopes) url.searchParams.append('scope', scope);
      if (credentials?.username !== undefined && credentials.password !== undefined && mayReceiveCredentials) {
        headers.authorization = basicHeader(credentials);
      }
      request = { url, method: 'GET', headers };
    }
    this.tokenFetches++;
    const started = this.now();
    let answer: { status: number; body: string };
    try {
      answer = await this.options.fetchToken(request);
    } catch (err) {
      // A realm the destination policy refuses is refused as such: not an auth failure to retry.
      if (err instanceof OciRelayError && err.code === ErrorCodes.Forbidden) throw err;
      throw new AuthError(`token request to ${realm.origin} failed: ${errorMessage(err)}`, { url: realm, cause: err, retryable: true });
    }
    const foreign = !mayReceiveCredentials && credentials ? ` (credentials were not sent: ${realm.hostname} is not ${this.options.registry}'s host nor an allowed token realm)` : '';
    if (answer.status === 401 || answer.status === 403) {
      throw new AuthError(`token server ${realm.origin} refused ${credentials && mayReceiveCredentials ? 'the credentials' : 'anonymous access'} for ${this.options.registry} (${answer.status})${foreign}`, { url: realm, status: answer.status });
    }
    if (answer.status < 200 || answer.status >= 300) {
      throw new AuthError(`token server ${realm.origin} answered ${answer.status}${foreign}`, { url: realm, status: answer.status, retryable: answer.status >= 500 || answer.status === 429 });
    }
    let parsed: TokenResponse | undefined;
    try {
      parsed = parseTokenResponse(JSON.parse(answer.body));
    } catch {
      parsed = undefined;
    }
    if (!parsed) {
      throw new AuthError(`token server ${realm.origin} answered something that is not a token response`, { url: realm, status: answer.status });
    }
    const token = (parsed.token ?? parsed.access_token) as string;
    if (!/^[\x21-\x7e]+$/.test(token)) throw new AuthError(`token server ${realm.origin} answered a token with characters that cannot go into a header`, { url: realm });
    const lifetimeMs = (parsed.expires_in ?? DEFAULT_TOKEN_LIFETIME_S) * 1000;
    const issuedAt = parsed.issued_at ? Date.parse(parsed.issued_at) : NaN;
    // Trust issued_at only when the clocks roughly agree; otherwise count from our own clock.
    const start = Number.isFinite(issuedAt) && Math.abs(issuedAt - started) < 5 * 60_000 ? Math.min(issuedAt, started) : started;
    this.tokens.set(scopeKey(scopes), { token, expiresAt: start + lifetimeMs, lifetimeMs });
    return token;
  }

  private realmAllowed(realm: URL): boolean {
    // Never send credentials in the clear to a realm unless the registry itself is spoken to in the clear.
    if (realm.protocol === 'http:' && !this.options.plainHttp) return false;
    const registryHost = hostnameOf(this.options.registry);
    if (realm.hostname === registryHost) return true;
    const allowed = [...(DEFAULT_TOKEN_REALMS[this.options.registry] ?? []), ...(this.options.allowedRealmHosts ?? [])];
    return allowed.some((host) => host === realm.hostname || host === realm.host);
  }
}

export function basicHeader(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username ?? ''}:${credentials.password ?? ''}`, 'utf8').toString('base64')}`;
}

function scopeKey(scopes: readonly Scope[]): string {
  return [...new Set(scopes)].sort().join(' ');
}

/** Merges scopes on the same resource: `repository:a:pull` + `repository:a:push` -> `repository:a:pull,push`. */
export function mergeScopes(scopes: readonly Scope[]): Scope[] {
  const byResource = new Map<string, Set<string>>();
  const order: string[] = [];
  for (const scope of scopes) {
    const last = scope.lastIndexOf(':');
    if (last <= 0) continue;
    const resource = scope.slice(0, last);
    const actions = scope.slice(last + 1).split(',').filter(Boolean);
    let set = byResource.get(resource);
    if (!set) {
      set = new Set();
      byResource.set(resource, set);
      order.push(resource);
    }
    for (const action of actions) set.add(action);
  }
  return order.map((resource) => `${resource}:${[...(byResource.get(resource) ?? [])].join(',')}`);
}

function hostnameOf(registry: string): string {
  try {
    return new URL(`http://${registry}`).hostname;
  } catch {
    return registry;
  }
}
