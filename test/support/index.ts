// The test support layer: real servers (distribution registry, token server), a programmable
// proxy, and image fixtures built with umoci/skopeo. See each module for details.
export * from './registry.js';
export * from './token-server.js';
export * from './proxy.js';
export * from './fixtures.js';
export { freePort, makeTempDir, onFreePort, removeTempDir, pollUntil, CommandError } from './process.js';
export { startS3, type RunningS3 } from './s3.js';
export * from './images.js';
export * from './sqs.js';
export * from './faults.js';
export * from './audit.js';
export * from './serve.js';
