// Fan-out Lambda: invoked asynchronously with a replication request; plans and enqueues tasks.
import { awsPipelineEnv } from '../lib/aws/env.js';
import { createFanoutHandler } from '../lib/pipeline/handlers.js';

export const handler = createFanoutHandler(() => awsPipelineEnv());
