// Export Lambda: SQS batches of export tasks; archives go to S3 through the ArchiveStore port.
import { awsPipelineEnv } from '../lib/aws/env.js';
import { createExportHandler } from '../lib/pipeline/handlers.js';

export const handler = createExportHandler(() => awsPipelineEnv(), { recordConcurrency: 1, marginMs: Number(process.env.WORKER_TIME_BUDGET_MARGIN_MS ?? 30_000) });
