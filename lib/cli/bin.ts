#!/usr/bin/env node
// The executable: kept apart from main.ts so that importing the CLI (tests) does not run it.
import { main, reportError } from './main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = reportError(err);
  },
);
