/**
 * How every Lambda function is bundled: one definition, used by the CDK construct
 * (`NodejsFunction` runs the local esbuild CLI with these options) and by test/bundle.test.ts
 * (which runs esbuild's JS API with the very same options and then imports each bundle).
 *
 * This module loads neither aws-cdk-lib nor esbuild (types only), so that it stays cheap to
 * import; the mapping to CDK's BundlingOptions is `cdkBundlingOptions()` in
 * replicator-function.ts, and test/infra.test.ts checks that CDK's bundle is byte-identical to the
 * one esbuild's API builds from these options.
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { BuildOptions } from 'esbuild';

/** The repository root (where package.json, package-lock.json and functions/ are). */
export const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The lockfile NodejsFunction is pointed at (`depsLockFilePath`). */
export const LOCK_FILE = join(PROJECT_ROOT, 'package-lock.json');

/** The four Lambda functions and their entry files (each exports `handler`). */
export const FUNCTIONS = {
  ingress: 'functions/ingress.ts',
  fanout: 'functions/fanout.ts',
  worker: 'functions/worker.ts',
  export: 'functions/export.ts',
} as const;

export type FunctionName = keyof typeof FUNCTIONS;

export const FUNCTION_NAMES = Object.keys(FUNCTIONS) as FunctionName[];

/** Absolute path of a function's entry file. */
export function entryOf(name: FunctionName): string {
  return join(PROJECT_ROOT, FUNCTIONS[name]);
}

/**
 * The Lambda runtime (nodejs22.x) ships the AWS SDK for JavaScript v3 clients, so they are left
 * out of the bundle: smaller artefacts, faster cold starts, and the clients are patched by AWS.
 * Everything else (undici, zod, tar-stream, lib/) is bundled. lib/ imports the S3 client with a
 * dynamic `import()` (lib/aws/s3-archive-store.ts), which esbuild leaves dynamic, so only an
 * export that runs loads it (test/bundle.test.ts checks that no bundle imports it at start).
 */
export const EXTERNAL_MODULES: readonly string[] = ['@aws-sdk/client-*'];

/**
 * ES module output (`index.mjs`): lib/ is ESM (top-level await and `import.meta` would break in a
 * CommonJS bundle). CommonJS dependencies that esbuild wraps still call `require()` for Node
 * built-ins, which an ES module does not have; the banner gives the bundle a real `require`.
 * The imported binding has a name no source file uses, and esbuild renames any top-level
 * `require` of our own code away from the free `require` this banner defines.
 */
export const ESM_REQUIRE_BANNER =
  "import { createRequire as __ocirelayCreateRequire } from 'node:module'; const require = __ocirelayCreateRequire(import.meta.url);";

/**
 * The esbuild options, in esbuild's own terms. `sourcemap: true` writes `index.mjs.map` next to
 * the bundle; the functions run with `--enable-source-maps` so stack traces name TypeScript
 * files and lines. `sourcesContent: false` keeps the map small (lines are enough to debug; the
 * sources are in the repository).
 */
export const ESBUILD_OPTIONS = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  minify: true,
  sourcemap: true,
  sourcesContent: false,
  // esbuild's own default for platform 'node' (a package's CommonJS build first), stated because
  // CDK's NodejsFunction defaults to ['module', 'main'] for ESM output: the deployed bundle must
  // be the one test/bundle.test.ts builds and runs.
  mainFields: ['main', 'module'],
  external: [...EXTERNAL_MODULES],
  banner: { js: ESM_REQUIRE_BANNER },
  logLevel: 'warning',
} satisfies BuildOptions;

/** File name NodejsFunction gives an ESM bundle (Lambda's handler is then `index.handler`). */
export const BUNDLE_FILE = 'index.mjs';

const MiB = 1024 * 1024;

/**
 * Size budget of each bundle (the minified `index.mjs`, source map excluded), in bytes.
 *
 * Why a budget: Lambda parses and evaluates the whole bundle on every cold start before the
 * handler runs (very roughly 10-30 ms per minified MiB on one vCPU), and a bundle that grows is
 * almost always something pulled in by mistake: the AWS SDK bundled instead of external (several
 * MiB on its own), a second copy of a dependency, a CLI-only module reached from a handler.
 *
 * Measured when the real handlers landed: ingress 1145 KiB, fan-out 1232 KiB, worker and export
 * 1244 KiB, of which undici is ~523 KiB, zod ~444 KiB, yaml ~113 KiB, semver ~29 KiB and lib/
 * itself ~100 KiB. 1.5 MiB leaves ~290 KiB of growth and still catches any of those mistakes.
 * Raise a budget deliberately, with a reason; ingress could be made much smaller (it needs no
 * registry client: undici reaches it through lib/aws/env.ts).
 */
export const BUNDLE_BUDGET_BYTES: Readonly<Record<FunctionName, number>> = {
  ingress: 1.5 * MiB,
  fanout: 1.5 * MiB,
  worker: 1.5 * MiB,
  export: 1.5 * MiB,
};
