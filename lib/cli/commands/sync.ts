/** `ocirelay sync RULES [--dry-run] [--json]`: a bulk migration of the rules, in this process. */
import { syncRules } from '../../rules/sync.js';
import { createLogger, errorFields } from '../../pipeline/telemetry.js';
import { parse, REGISTRY_OPTIONS, stringList, UsageError } from '../args.js';
import { embeddedPipeline, exportStore, loadConfig, rulesPool } from '../runtime.js';

export const SYNC_USAGE = `usage: ocirelay sync RULES [options]

Copies everything the rules select that the target does not have yet: lists the source's
repositories (catalog) and tags, applies the rules' filters, compares with the target by manifest
digest, and copies only what differs.

options:
  --rule NAME      only this rule (by name, or index from 0; repeatable)
  --dry-run        report what would be copied, copy nothing
  --verbose        JSON log lines on stderr while copying
  --json           print the summary as JSON
`;

const OPTIONS = { ...REGISTRY_OPTIONS, 'dry-run': { type: 'boolean' }, rule: { type: 'string', multiple: true }, verbose: { type: 'boolean', short: 'v' } } as const;

export async function syncCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, OPTIONS, SYNC_USAGE);
  if (values.help) {
    process.stdout.write(SYNC_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`expected one rules file\n\n${SYNC_USAGE}`);
  const config = await loadConfig(positionals[0]);
  const pool = rulesPool(config);
  const logger = createLogger({ level: values.verbose ? 'info' : 'error', sink: (line) => process.stderr.write(`${line}\n`) });
  const pipeline = values['dry-run'] ? undefined : embeddedPipeline(pool, await exportStore(config), logger);
  const rules = stringList(values.rule);
  try {
    const listing = syncRules(config, { registries: pool, ...(pipeline ? { submit: (r) => pipeline.submit(r) } : {}), ...(rules.length ? { rules } : {}) });
    // Copies start while the listing and comparing go on.
    const draining = pipeline?.drain(listing);
    const summary = await listing;
    await draining;
    // What the pipeline could not do after all.
    const failedCopies = (pipeline?.deadLetters.size ?? 0) + (pipeline?.fanout.failures.length ?? 0);
    for (const f of pipeline?.fanout.failures ?? []) logger.error('copy failed', { request: JSON.parse(f.payload).source, ...errorFields(f.error) });
    const result = { dryRun: !!values['dry-run'], copied: summary.copy - failedCopies, alreadyThere: summary.present, filteredOut: summary.filtered, failed: summary.failed + failedCopies, items: summary.items };
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      for (const item of summary.items) if (item.status !== 'filtered' || values.verbose) process.stdout.write(`${(values['dry-run'] && item.status === 'copy' ? 'would copy' : item.status).padEnd(10)} ${item.source} -> ${item.target}${item.reason ? ` (${item.reason})` : ''}\n`);
      for (const f of pipeline?.fanout.failures ?? []) process.stdout.write(`failed     ${JSON.parse(f.payload).source}: ${(f.error as Error).message}\n`);
      process.stdout.write(`${values['dry-run'] ? 'would copy' : 'copied'} ${result.copied}, already there ${result.alreadyThere}, filtered out ${result.filteredOut}, failed ${result.failed}\n`);
    }
    return result.failed ? 1 : 0;
  } finally {
    pipeline?.stop();
    await pool.close();
  }
}
