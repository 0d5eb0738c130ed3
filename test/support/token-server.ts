// A small Bearer token server for distribution's `auth: token` configuration: it answers
// GET /token?service=...&scope=... (Docker token protocol) and POST /token (OAuth2 password grant)
// with RS256 JWTs whose header carries the signing certificate in `x5c`.
import { X509Certificate, randomUUID, sign as cryptoSign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { makeTempDir, run } from './process.js';

export interface TokenServerOptions {
  service?: string; // default 'test-registry'
  issuer?: string; // default 'test-issuer'
  /** Seconds, default 300: the advertised expires_in, and when the registry starts refusing it. */
  expiresIn?: number;
  /** Answer without expires_in / issued_at. */
  omitExpiresIn?: boolean;
  /** Grant pull to anonymous token requests (otherwise anonymous tokens carry `access: []`). */
  anonymousPull?: boolean;
  /** username -> password */
  users: Record<string, string>;
  /**
   * distribution 2.8 accepts a token until 60 s after its `exp` (and from 60 s before its `nbf`);
   * see registry/auth/token/token.go, `Leeway = 60 * time.Second`. To make a token really stop
   * working after `expiresIn` seconds, the JWT's `exp` is written as
   * `iat + expiresIn - registryLeeway`. Default 60; pass 0 for a literal exp = iat + expiresIn.
   */
  registryLeeway?: number;
}

export interface TokenRequestRecord {
  method: string;
  scopes: string[];
  service: string | null;
  /** Credentials were presented and valid. */
  authorized: boolean;
  /** Credentials (Basic header, or a password grant) were presented at all. */
  hadAuthorization: boolean;
  /** The user the token was issued to, when authorized. */
  username?: string;
}

export interface RunningTokenServer {
  url: string;
  /** url + '/token' */
  realm: string;
  service: string;
  issuer: string;
  /** PEM file of the signing certificate (the registry's `rootcertbundle`). */
  certPath: string;
  requests: TokenRequestRecord[];
  /** Every token handed out over HTTP, in order (for scans that no token leaked anywhere). */
  issued: string[];
  /** Later tokens carry this expiry. */
  setExpiresIn(seconds: number): void;
  /** Mints a token directly, granting the scopes as asked (for tests that need a specific one). */
  issueToken(scopes: string[], options?: { subject?: string; expiresIn?: number }): string;
  stop(): Promise<void>;
}

/** The registry's JWT leeway in distribution 2.8 (seconds). */
export const DISTRIBUTION_TOKEN_LEEWAY = 60;

interface SigningMaterial {
  keyPem: string;
  certPath: string;
  certDerBase64: string;
}

let signingMaterial: Promise<SigningMaterial> | undefined;

/** Key + self-signed certificate, generated once per process with openssl. */
export function getSigningMaterial(): Promise<SigningMaterial> {
  signingMaterial ??= (async () => {
    const dir = makeTempDir('token-cert');
    const keyPath = join(dir, 'key.pem');
    const certPath = join(dir, 'cert.pem');
    await run('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
      '-keyout', keyPath, '-out', certPath,
      '-days', '3650', '-subj', '/CN=ocirelay-test-token-issuer',
    ]);
    const [keyPem, certPem] = await Promise.all([readFile(keyPath, 'utf8'), readFile(certPath, 'utf8')]);
    const certDerBase64 = new X509Certificate(certPem).raw.toString('base64');
    return { keyPem, certPath, certDerBase64 };
  })();
  signingMaterial.catch(() => {
    signingMaterial = undefined;
  });
  return signingMaterial;
}

const base64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

interface Access {
  type: string;
  name: string;
  actions: string[];
}

/** 'repository:a/b:pull,push' -> { type, name, actions }; the name may itself contain colons. */
export function parseScope(scope: string): Access | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last <= first) return undefined;
  const actions = scope
    .slice(last + 1)
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a.length > 0);
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions };
}

const GRANTABLE = new Set(['pull', 'push', 'delete', '*']);

export async function startTokenServer(options: TokenServerOptions): Promise<RunningTokenServer> {
  const material = await getSigningMaterial();
  const service = options.service ?? 'test-registry';
  const issuer = options.issuer ?? 'test-issuer';
  const leeway = options.registryLeeway ?? DISTRIBUTION_TOKEN_LEEWAY;
  let expiresIn = options.expiresIn ?? 300;
  const requests: TokenRequestRecord[] = [];
  const issued: string[] = [];

  const mint = (subject: string, access: Access[], lifetime: number): { token: string; issuedAt: Date } => {
    const issuedAt = new Date();
    const iat = Math.floor(issuedAt.getTime() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [material.certDerBase64] };
    const claims = {
      iss: issuer,
      sub: subject,
      aud: service,
      exp: iat + lifetime - leeway,
      nbf: iat,
      iat,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = cryptoSign('sha256', Buffer.from(signingInput), material.keyPem);
    return { token: `${signingInput}.${base64url(signature)}`, issuedAt };
  };

  const grant = (scopes: string[], user: string | undefined): Access[] => {
    const access: Access[] = [];
    for (const scope of scopes) {
      const parsed = parseScope(scope);
      if (!parsed) continue;
      const actions = parsed.actions.filter((a) =>
        user !== undefined ? GRANTABLE.has(a) : options.anonymousPull === true && a === 'pull',
      );
      if (actions.length > 0) access.push({ ...parsed, actions });
    }
    return access;
  };

  const checkUser = (username: string, password: string): boolean =>
    Object.prototype.hasOwnProperty.call(options.users, username) && options.users[username] === password;

  const answer = (res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
    res.end(text);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://token.invalid');
    if (url.pathname !== '/token' || (req.method !== 'GET' && req.method !== 'POST')) {
      req.resume();
      answer(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'not found' }] });
      return;
    }

    let scopes: string[];
    let serviceParam: string | null;
    let username: string | undefined;
    let password: string | undefined;
    let hadAuthorization = false;

    if (req.method === 'GET') {
      scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s.length > 0);
      serviceParam = url.searchParams.get('service');
      req.resume();
    } else {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s.length > 0);
      serviceParam = form.get('service');
      if (form.get('grant_type') === 'password') {
        hadAuthorization = true;
        username = form.get('username') ?? '';
        password = form.get('password') ?? '';
      } else {
        answer(res, 400, { error: 'unsupported_grant_type' });
        requests.push({ method: 'POST', scopes, service: serviceParam, authorized: false, hadAuthorization: false });
        return;
      }
    }

    const authorization = req.headers.authorization;
    if (username === undefined && authorization !== undefined) {
      hadAuthorization = true;
      const match = /^Basic\s+(.+)$/i.exec(authorization.trim());
      if (match?.[1]) {
        const decoded = Buffer.from(match[1], 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        username = colon >= 0 ? decoded.slice(0, colon) : decoded;
        password = colon >= 0 ? decoded.slice(colon + 1) : '';
      } else {
        username = '';
        password = '';
      }
    }

    const authorized = hadAuthorization && username !== undefined && checkUser(username, password ?? '');
    const record: TokenRequestRecord = {
      method: req.method,
      scopes,
      service: serviceParam,
      authorized,
      hadAuthorization,
      ...(authorized ? { username } : {}),
    };
    requests.push(record);

    if (hadAuthorization && !authorized) {
      // Wrong credentials: the token protocol says 401, not an anonymous token.
      answer(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid credentials' }] }, {
        'www-authenticate': 'Basic realm="test-token-server"',
      });
      return;
    }

    const lifetime = expiresIn;
    const { token, issuedAt } = mint(authorized ? (username ?? '') : '', grant(scopes, authorized ? username : undefined), lifetime);
    issued.push(token);
    const body: Record<string, unknown> = req.method === 'GET' ? { token, access_token: token } : { access_token: token };
    if (!options.omitExpiresIn) {
      body['expires_in'] = lifetime;
      body['issued_at'] = issuedAt.toISOString();
    }
    answer(res, 200, body);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) answer(res, 500, { error: String(err) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  let stopping: Promise<void> | undefined;
  return {
    url,
    realm: `${url}/token`,
    service,
    issuer,
    certPath: material.certPath,
    requests,
    issued,
    setExpiresIn(seconds: number) {
      expiresIn = seconds;
    },
    issueToken(scopes, issueOptions = {}) {
      const access = scopes.map(parseScope).filter((a): a is Access => a !== undefined);
      return mint(issueOptions.subject ?? 'test', access, issueOptions.expiresIn ?? expiresIn).token;
    },
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return stopping;
    },
  };
}

/** Decodes a JWT's claims without verifying it (for tests). */
export function decodeJwtClaims(token: string): Record<string, unknown> {
  const part = token.split('.')[1];
  if (part === undefined) throw new Error('not a JWT');
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}
