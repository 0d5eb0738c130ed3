/**
 * One RegistryClient per registry host, sharing options (credentials, insecure hosts, hooks), so
 * that every part of a run reuses the same connection pools and token caches.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RegistryClient, type RegistryClientOptions } from '../oci/client.js';
import { anonymous, type CredentialProvider } from '../oci/credentials.js';

export interface RegistryPoolOptions extends Omit<RegistryClientOptions, 'insecure' | 'credentials'> {
  credentials?: CredentialProvider;
  /** Hosts (`host[:port]`) spoken to over plain HTTP although they are not loopback. */
  insecureRegistries?: readonly string[];
  /** Options for particular hosts, merged over the shared ones. */
  perRegistry?: Readonly<Record<string, Partial<RegistryClientOptions>>>;
  /**
   * Directories holding per-registry CA certificates the way Docker and podman keep them:
   * `<dir>/<host[:port]>/*.crt`, trusted for that registry on top of the system roots. Default
   * DEFAULT_CERTS_DIRECTORIES; `[]` turns the lookup off.
   */
  certsDirectories?: readonly string[];
}

/** Where Docker (`/etc/docker/certs.d`) and podman/skopeo (`/etc/containers/certs.d`) look. */
export const DEFAULT_CERTS_DIRECTORIES: readonly string[] = ['/etc/docker/certs.d', '/etc/containers/certs.d'];

/** The `*.crt` files (PEM) for one registry under the certs.d directories, in a stable order. */
export function registryCertificates(registry: string, directories: readonly string[] = DEFAULT_CERTS_DIRECTORIES): string[] {
  const out: string[] = [];
  for (const dir of directories) {
    const hostDir = join(dir, registry);
    let names: string[];
    try {
      names = readdirSync(hostDir).filter((n) => n.endsWith('.crt')).sort();
    } catch {
      continue; // no directory for this registry: nothing to add
    }
    for (const name of names) out.push(readFileSync(join(hostDir, name), 'utf8'));
  }
  return out;
}

export class RegistryPool {
  private readonly clients = new Map<string, RegistryClient>();
  readonly options: RegistryPoolOptions;

  constructor(options: RegistryPoolOptions = {}) {
    this.options = options;
  }

  get(registry: string): RegistryClient {
    let client = this.clients.get(registry);
    if (!client) {
      const { insecureRegistries, perRegistry, credentials, certsDirectories, ...shared } = this.options;
      const certs = registryCertificates(registry, certsDirectories);
      const ca = [...(shared.ca === undefined ? [] : Array.isArray(shared.ca) ? shared.ca : [shared.ca]), ...certs];
      client = new RegistryClient(registry, {
        ...shared,
        ...(ca.length ? { ca } : {}),
        credentials: credentials ?? anonymous,
        insecure: insecureRegistries?.includes(registry) ?? false,
        ...perRegistry?.[registry],
      });
      this.clients.set(registry, client);
    }
    return client;
  }

  async close(): Promise<void> {
    const clients = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(clients.map((c) => c.close()));
  }
}
