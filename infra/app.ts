/**
 * The CDK app (`cdk.json` runs it through tsx): one OciRelayStack with the example configuration.
 * Nothing is read from the environment except CDK's own CDK_DEFAULT_ACCOUNT / CDK_DEFAULT_REGION,
 * which the CLI sets from the current credentials. With them, the stack is bound to that
 * account and region and the example mirrors into its ECR; without any (offline, no
 * credentials), the stack is environment-agnostic and `cdk synth` works all the same.
 */
import { App } from 'aws-cdk-lib';
import { EXAMPLE_TARGET_REGISTRY, exampleConfig } from './example-config.js';
import { OciRelayStack } from './stack.js';

const app = new App();
const account = process.env.CDK_DEFAULT_ACCOUNT;
const region = process.env.CDK_DEFAULT_REGION;
const known = Boolean(account && region);

new OciRelayStack(app, 'OciRelay', {
  description: 'ocirelay: OCI image replication and layer export (Lambda, SQS, S3)',
  ...(known ? { env: { account: account as string, region: region as string } } : {}),
  replicator: { config: exampleConfig(known ? `${account}.dkr.ecr.${region}.amazonaws.com` : EXAMPLE_TARGET_REGISTRY) },
});

app.synth();
