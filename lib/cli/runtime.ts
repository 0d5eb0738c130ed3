/**
 * What `sync` and `serve` share: the rules file, the embedded pipeline over in-memory ports, and
 * a registry pool whose destination policy only lets through the hosts the rules name (the
 * payload of a webhook steers nothing else).
 */
import { readFile } from 'node:fs/promises';
import { RegistryPool } from '../engine/registries.js';
import { EmbeddedPipeline } from '../pipeline/embedded.js';
import type { Logger } from '../pipeline/telemetry.js';
import { destinationPolicy } from '../oci/destination.js';
import { chainCredentials, dockerConfigCredentials, type CredentialProvider } from '../oci/credentials.js';
import { parseConfig, resolveSecret, type Config } from '../rules/config.js';
import { namedHosts } from '../rules/match.js';

export { namedHosts };
import type { ArchiveStore } from '../ports/archive-store.js';
import { UsageError } from './args.js';

export async function loadConfig(path: string | undefined): Promise<Config> {
  if (!path) throw new UsageError('a rules file is required');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseConfig(text, path);
}

export function rulesPool(config: Config, credentials?: CredentialProvider): RegistryPool {
  return new RegistryPool({
    credentials: credentials ?? chainCredentials(dockerConfigCredentials()),
    insecureRegistries: config.insecureRegistries,
    guard: destinationPolicy({ namedHosts: namedHosts(config) }),
  });
}

/** Exports in rules go to S3 (the schema only allows s3:// destinations); the SDK loads on first use. */
export async function exportStore(config: Config): Promise<ArchiveStore> {
  if (!config.rules.some((r) => r.export)) return { create: async () => { throw new UsageError('no rule exports'); } };
  const { S3ArchiveStore } = await import('../aws/s3-archive-store.js');
  return new S3ArchiveStore();
}

export function embeddedPipeline(registries: RegistryPool, store: ArchiveStore, logger: Logger, config?: Config): EmbeddedPipeline {
  return new EmbeddedPipeline({ registries, store, logger, ...(config ? { config } : {}) });
}

export async function webhookSecrets(config: Config, env: NodeJS.ProcessEnv = process.env): Promise<Map<string, { token?: string; secret?: string }>> {
  const secrets = new Map<string, { token?: string; secret?: string }>();
  for (const hook of config.webhooks) {
    const token = await resolveSecret(hook.token, env);
    const secret = await resolveSecret(hook.secret, env);
    secrets.set(hook.path, { ...(token ? { token } : {}), ...(secret ? { secret } : {}) });
  }
  return secrets;
}
