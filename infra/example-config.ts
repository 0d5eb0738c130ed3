import type { OciRelayConfig } from './replicator.js';

/**
 * The minimal configuration the repository's own app deploys with: mirror Alpine's 3.x tags (two
 * platforms) from Docker Hub into `targetRegistry` (the app passes this account's ECR) on every
 * scheduled sync. No webhooks: add them with `{ secretsManager: ARN }` tokens. Replace the rules
 * with yours; the schema is lib's (lib/rules/config.ts), checked at synth.
 */
export function exampleConfig(targetRegistry: string): OciRelayConfig {
  return {
    rules: [
      {
        name: 'alpine-mirror',
        from: 'docker.io/library/alpine',
        to: `${targetRegistry}/mirror/alpine`,
        tags: { include: ['^3\\.\\d+$'], latest: 5 },
        platforms: ['linux/amd64', 'linux/arm64'],
      },
    ],
    webhooks: [],
  };
}

/** A target for when the account and region are not known (an environment-agnostic synth). */
export const EXAMPLE_TARGET_REGISTRY = 'registry.example.com';
