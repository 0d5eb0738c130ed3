// Worker Lambda: SQS batches of image, blob and commit tasks, with partial batch failures.
import { awsPipelineEnv } from '../lib/aws/env.js';
import { createWorkerHandler } from '../lib/pipeline/handlers.js';

export const handler = createWorkerHandler(() => awsPipelineEnv(), { marginMs: Number(process.env.WORKER_TIME_BUDGET_MARGIN_MS ?? 30_000) });
