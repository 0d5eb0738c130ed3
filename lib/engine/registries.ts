/**
 * One RegistryClient per registry host, sharing options (credentials, insecure hosts, hooks), so
 * that every part of a run reuses the same connection pools and token caches.
 */
import { RegistryClient, type RegistryClientOptions } from '../oci/client.js';
import { anonymous, type CredentialProvider } from '../oci/credentials.js';

export interface RegistryPoolOptions extends Omit<RegistryClientOptions, 'insecure' | 'credentials'> {
  credentials?: CredentialProvider;
  /** Hosts (`host[:port]`) spoken to over plain HTTP although they are not loopback. */
  insecureRegistries?: readonly string[];
  /** Options for particular hosts, merged over the shared ones. */
  perRegistry?: Readonly<Record<string, Partial<RegistryClientOptions>>>;
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
      const { insecureRegistries, perRegistry, credentials, ...shared } = this.options;
      client = new RegistryClient(registry, {
        ...shared,
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
