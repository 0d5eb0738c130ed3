#!/usr/bin/env node
// The executable: kept apart from main.ts so that importing the CLI (tests) does not run it.
import { setFlagsFromString } from 'node:v8';
import { main, reportError } from './main.js';

// undici parses HTTP with llhttp compiled to WebAssembly, once per process. V8 compiles it at
// once with its baseline compiler and then again, in the background, with the optimising one,
// and a process cannot exit before that second compilation ends: 100-200 ms at the end of every
// command on two cores, more than a no-op copy's two requests take. The baseline code parses
// headers at the same speed where it matters here (bodies pass through it in one call per chunk).
setFlagsFromString('--liftoff-only');

// The AWS SDK (loaded by S3 exports) warns under Node.js 20, in seven lines on stderr, that its
// releases after January 2027 will need Node.js 22: news for whoever packages ocirelay, noise in
// the output of every export a user runs. An explicit setting in the environment still wins.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = reportError(err);
  },
);
