/**
 * Registry credentials in AWS, as CredentialProviders:
 * - ECR: GetAuthorizationToken for the registry's account and region, cached until shortly
 *   before the token's expiry (12 hours), shared across invocations of a warm function;
 * - others: one Secrets Manager secret per registry (named in the configuration), holding
 *   `{"username","password"}` (or `{"auth"}` in Docker's base64 form, or "user:password"),
 *   cached for five minutes so that a rotated secret is picked up without a redeploy.
 */
// The clients are loaded when first needed: most functions never meet an ECR registry or a
// registry secret, and each SDK client costs 30-100 ms of a Lambda cold start (issue 7).
import type { ECRClient } from '@aws-sdk/client-ecr';
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { ErrorCodes, OciRelayError } from '../errors.js';
import type { CredentialProvider, Credentials } from '../oci/credentials.js';

const ECR_HOST = /^(\d{12})\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/;

export function ecrRegion(registry: string): string | undefined {
  return ECR_HOST.exec(registry)?.[3];
}

export function ecrCredentials(options: { client?: (region: string) => ECRClient; now?: () => number } = {}): CredentialProvider {
  const now = options.now ?? Date.now;
  const clients = new Map<string, ECRClient>();
  const cache = new Map<string, { credentials: Credentials; expiresAt: number }>();
  const client = async (region: string): Promise<ECRClient> => {
    let c = clients.get(region);
    if (!c) {
      c = options.client?.(region) ?? new (await import('@aws-sdk/client-ecr')).ECRClient({ region });
      clients.set(region, c);
    }
    return c;
  };
  return {
    get: async (registry) => {
      const match = ECR_HOST.exec(registry);
      if (!match) return undefined;
      const cached = cache.get(registry);
      if (cached && now() < cached.expiresAt - 10 * 60_000) return cached.credentials;
      const { GetAuthorizationTokenCommand } = await import('@aws-sdk/client-ecr');
      const answer = await (await client(match[3] as string)).send(new GetAuthorizationTokenCommand({ registryIds: [match[1] as string] }));
      const data = answer.authorizationData?.[0];
      if (!data?.authorizationToken) throw new OciRelayError(ErrorCodes.Auth, `ECR gave no authorization token for ${registry}`);
      const decoded = Buffer.from(data.authorizationToken, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const credentials = { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
      cache.set(registry, { credentials, expiresAt: data.expiresAt?.getTime() ?? now() + 60 * 60_000 });
      return credentials;
    },
  };
}

/** Creates an ECR repository the first time something is pushed to it (when enabled). */
export function ecrRepositoryCreator(options: { client?: (region: string) => ECRClient } = {}): (registry: string, repository: string) => Promise<void> {
  const known = new Set<string>();
  return async (registry, repository) => {
    const match = ECR_HOST.exec(registry);
    if (!match || known.has(`${registry}/${repository}`)) return;
    const { ECRClient, CreateRepositoryCommand, DescribeRepositoriesCommand } = await import('@aws-sdk/client-ecr');
    const client = options.client?.(match[3] as string) ?? new ECRClient({ region: match[3] as string });
    try {
      await client.send(new DescribeRepositoriesCommand({ registryId: match[1], repositoryNames: [repository] }));
    } catch (err) {
      if ((err as Error).name !== 'RepositoryNotFoundException') throw err;
      try {
        await client.send(new CreateRepositoryCommand({ registryId: match[1], repositoryName: repository, imageTagMutability: 'MUTABLE' }));
      } catch (e) {
        if ((e as Error).name !== 'RepositoryAlreadyExistsException') throw e;
      }
    }
    known.add(`${registry}/${repository}`);
  };
}

export function secretsManagerCredentials(secrets: Readonly<Record<string, string>>, options: { client?: SecretsManagerClient; ttlMs?: number; now?: () => number } = {}): CredentialProvider {
  const now = options.now ?? Date.now;
  const ttl = options.ttlMs ?? 5 * 60_000;
  let client = options.client;
  const cache = new Map<string, { credentials: Credentials; fetchedAt: number }>();
  return {
    get: async (registry) => {
      const secretId = secrets[registry];
      if (!secretId) return undefined;
      const cached = cache.get(registry);
      if (cached && now() - cached.fetchedAt < ttl) return cached.credentials;
      const { GetSecretValueCommand, SecretsManagerClient } = await import('@aws-sdk/client-secrets-manager');
      client ??= new SecretsManagerClient({});
      const answer = await client.send(new GetSecretValueCommand({ SecretId: secretId }));
      const credentials = parseSecret(answer.SecretString ?? '', registry);
      cache.set(registry, { credentials, fetchedAt: now() });
      return credentials;
    },
  };
}

/** The secret's value, in any of the documented forms; the error never includes the value. */
export function parseSecret(value: string, registry: string): Credentials {
  const bad = (): OciRelayError => new OciRelayError(ErrorCodes.Config, `the secret for ${registry} must be {"username","password"}, {"auth"} or "user:password"`);
  const text = value.trim();
  if (text.startsWith('{')) {
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw bad();
    }
    if (typeof json.username === 'string' && typeof json.password === 'string') return { username: json.username, password: json.password };
    if (typeof json.auth === 'string') {
      const decoded = Buffer.from(json.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (typeof json.token === 'string') return { registryToken: json.token };
    throw bad();
  }
  const colon = text.indexOf(':');
  if (colon <= 0) throw bad();
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}
