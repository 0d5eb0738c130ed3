// Ingress Lambda: webhooks through the function URL (authenticated in code), schedules and ECR
// events through EventBridge; each accepted event becomes a request handed to fan-out.
import { awsIngressEnv } from '../lib/aws/env.js';
import { createIngressHandler } from '../lib/pipeline/ingress.js';
import { withRequestId } from '../lib/pipeline/telemetry.js';

// Every log line of an invocation carries its awsRequestId.
export const handler = withRequestId(createIngressHandler, () => awsIngressEnv());
