/** `ocirelay copy SRC DST` and `ocirelay plan SRC DST`. */
import { copyImage, type CopyRequest } from '../../engine/copy.js';
import { planImage } from '../../engine/dry-run.js';
import { COPY_MODES, type CopyMode } from '../../engine/graph.js';
import { RegistryPool } from '../../engine/registries.js';
import { parseReference } from '../../ref/index.js';
import { credentialsFor, keyValues, parse, positiveInt, REGISTRY_OPTIONS, stringList, UsageError } from '../args.js';
import { createReporter, formatBytes, reporterMode } from '../progress.js';

export const COPY_USAGE = `usage: ocirelay copy SRC DST [options]
       ocirelay plan SRC DST [options]     (dry run: what would be copied; writes nothing)

Copies an image (a single image or a multi-platform index) from one registry to another.
SRC and DST are references: host[:port]/repository[:tag][@digest] (docker.io is the default host).

options:
  --platform OS/ARCH[/VARIANT]  copy only these platforms of an index (repeatable)
  --mode MODE                   registry-defaults | prefer-multiarch (default) | normalise-to-multiarch
  --annotation KEY=VALUE        merge into the index and every manifest (repeatable; OCI media types)
  --referrers                   also copy OCI referrers and cosign tags (.sig .att .sbom), recursively
  --include-foreign-layers      copy foreign/non-distributable layers (skipped by default)
  --concurrency N               blob transfers at once per registry (default 8)
  --chunk-size BYTES            upload in PATCH chunks of this size instead of one streamed PUT
  --src-creds USER:PASS         source credentials (or OCIRELAY_SRC_CREDS); default: Docker's config.json
  --dst-creds USER:PASS         target credentials (or OCIRELAY_DST_CREDS)
  --insecure HOST[:PORT]        use plain HTTP for this registry (loopback registries always do)
  --json                        print one JSON object with the result
  -q, --quiet                   no progress output
`;

const OPTIONS = {
  ...REGISTRY_OPTIONS,
  platform: { type: 'string', multiple: true },
  mode: { type: 'string' },
  annotation: { type: 'string', multiple: true },
  referrers: { type: 'boolean' },
  'include-foreign-layers': { type: 'boolean' },
  concurrency: { type: 'string' },
  'chunk-size': { type: 'string' },
} as const;

function parseCopyArgs(argv: string[]): { request: CopyRequest; values: Record<string, unknown>; pool: RegistryPool; concurrency: number; chunkSize: number | undefined } | undefined {
  const { values, positionals } = parse(argv, OPTIONS, COPY_USAGE);
  if (values.help) return undefined;
  if (positionals.length !== 2) throw new UsageError(`expected SRC and DST, got ${positionals.length} argument${positionals.length === 1 ? '' : 's'}\n\n${COPY_USAGE}`);
  const [src, dst] = positionals as [string, string];
  const mode = (values.mode ?? 'prefer-multiarch') as string;
  if (!COPY_MODES.includes(mode as CopyMode)) throw new UsageError(`--mode must be one of ${COPY_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  const source = parseReference(src);
  const target = parseReference(dst, { defaultTag: source.digest && !source.tag ? '' : (source.tag ?? 'latest') });
  const concurrency = positiveInt(values.concurrency, 'concurrency', 8);
  const chunkSize = values['chunk-size'] === undefined ? undefined : positiveInt(values['chunk-size'], 'chunk-size', 0);
  const pool = new RegistryPool({
    credentials: credentialsFor(values, { source: source.registry, target: target.registry }),
    insecureRegistries: stringList(values.insecure),
    connections: Math.max(16, concurrency * 2),
  });
  const request: CopyRequest = {
    source,
    target,
    mode: mode as CopyMode,
    platforms: stringList(values.platform),
    annotations: keyValues(stringList(values.annotation), 'annotation'),
    referrers: !!values.referrers,
    includeForeignLayers: !!values['include-foreign-layers'],
  };
  return { request, values, pool, concurrency, chunkSize };
}

export async function copyCommand(argv: string[]): Promise<number> {
  const parsed = parseCopyArgs(argv);
  if (!parsed) {
    process.stdout.write(COPY_USAGE);
    return 0;
  }
  const { request, values, pool, concurrency, chunkSize } = parsed;
  const reporter = createReporter(process.stderr, reporterMode(values, process.stderr));
  const controller = new AbortController();
  const onSignal = (): void => controller.abort(new UsageError('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const result = await copyImage(request, { registries: pool, concurrency, ...(chunkSize ? { chunkSize } : {}), onEvent: (e) => reporter.onEvent(e), signal: controller.signal });
    reporter.done();
    if (values.json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } else if (!values.quiet) {
      const b = result.blobs;
      process.stdout.write(
        result.noop
          ? `${result.target} is up to date (${result.digest})\n`
          : `copied ${result.source} -> ${result.target}\n  digest ${result.digest}\n  blobs: ${b.copied} copied (${formatBytes(b.bytes)}), ${b.skipped} already there, ${b.mounted} mounted; ${result.manifests} manifest${result.manifests === 1 ? '' : 's'} pushed${request.referrers ? `; ${result.referrers} referrers` : ''}\n`,
      );
    }
    return 0;
  } finally {
    reporter.done();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await pool.close();
  }
}

export async function planCommand(argv: string[]): Promise<number> {
  const parsed = parseCopyArgs(argv);
  if (!parsed) {
    process.stdout.write(COPY_USAGE);
    return 0;
  }
  const { request, values, pool, concurrency } = parsed;
  try {
    const plan = await planImage(request, { registries: pool, concurrency });
    if (values.json) {
      process.stdout.write(`${JSON.stringify(plan)}\n`);
      return 0;
    }
    const out: string[] = [`plan ${plan.source} -> ${plan.target}`, `  root ${plan.digest} (${plan.mediaType})${plan.noop ? ' — already there, nothing to do' : ''}`];
    for (const b of plan.blobs) out.push(`  ${b.action.padEnd(5)} blob ${b.digest} ${formatBytes(b.size)}`);
    for (const s of plan.skipped) out.push(`  omit  blob ${s.digest} (${s.reason})`);
    for (const m of plan.manifests) out.push(`  ${m.present ? 'skip ' : 'put  '} manifest ${m.reference}${m.reference !== m.digest ? ` -> ${m.digest}` : ''}${m.platform ? ` [${m.platform}]` : ''}${m.verbatim ? '' : ' (rewritten)'}`);
    for (const r of plan.referrers) out.push(`  ${r.present ? 'skip ' : 'put  '} referrer ${r.tag ?? r.digest} of ${r.subject} (${r.mediaType})`);
    for (const n of plan.notes) out.push(`  note  ${n}`);
    const copies = plan.blobs.filter((b) => b.action === 'copy').length;
    out.push(`  ${copies} blob${copies === 1 ? '' : 's'} to copy (${formatBytes(plan.bytesToCopy)}), ${plan.blobs.filter((b) => b.action === 'mount').length} to mount, ${plan.blobs.filter((b) => b.action === 'skip').length} already there`);
    process.stdout.write(`${out.join('\n')}\n`);
    return 0;
  } finally {
    await pool.close();
  }
}
