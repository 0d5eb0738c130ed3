/** `ocirelay export REF --to PATH|-|s3://bucket/key`. */
import { RegistryPool } from '../../engine/registries.js';
import { exportImage, type ExportEvent } from '../../export/export.js';
import { ARCHIVE_FORMATS, type ArchiveFormat } from '../../export/formats.js';
import { FileArchiveStore, type ArchiveStore } from '../../ports/archive-store.js';
import { parseReference } from '../../ref/index.js';
import { credentialsFor, parse, REGISTRY_OPTIONS, stringList, UsageError } from '../args.js';
import { formatBytes, reporterMode } from '../progress.js';

export const EXPORT_USAGE = `usage: ocirelay export REF --to PATH|-|s3://BUCKET/KEY [options]

Writes an image's layers as a tar archive, streamed from the registry and verified on the way.

options:
  --to DEST                  a file, - for standard output, or s3://bucket/key
  --format FORMAT            layers (default: one <alg>:<hex>.tar member per blob) | oci | docker
  --platform OS/ARCH[/VAR]   which image of an index (layers, docker), or narrow the index (oci)
  --no-config                leave the config blob out of a layers archive
  --sse AES256|aws:kms       S3 server-side encryption (with --kms-key-id for a specific key)
  --kms-key-id KEY           the KMS key for --sse aws:kms
  --creds USER:PASS          registry credentials (or OCIRELAY_CREDS); default: Docker's config.json
  --insecure HOST[:PORT]     use plain HTTP for this registry
  --json                     print {destination, format, bytes, sha256, digest}
  -q, --quiet                no progress output

S3 uses the standard AWS configuration (region, credentials chain, AWS_ENDPOINT_URL_S3).
`;

const OPTIONS = {
  ...REGISTRY_OPTIONS,
  to: { type: 'string' },
  format: { type: 'string' },
  platform: { type: 'string' },
  'no-config': { type: 'boolean' },
  sse: { type: 'string' },
  'kms-key-id': { type: 'string' },
} as const;

export async function exportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, OPTIONS, EXPORT_USAGE);
  if (values.help) {
    process.stdout.write(EXPORT_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`expected one image reference, got ${positionals.length}\n\n${EXPORT_USAGE}`);
  const destination = values.to as string | undefined;
  if (!destination) throw new UsageError(`--to is required\n\n${EXPORT_USAGE}`);
  const format = (values.format ?? 'layers') as string;
  if (!ARCHIVE_FORMATS.includes(format as ArchiveFormat)) throw new UsageError(`--format must be one of ${ARCHIVE_FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
  const sse = values.sse as string | undefined;
  if (sse !== undefined && sse !== 'AES256' && sse !== 'aws:kms') throw new UsageError(`--sse must be AES256 or aws:kms, got ${JSON.stringify(sse)}`);
  if (values['kms-key-id'] && sse !== 'aws:kms') throw new UsageError('--kms-key-id needs --sse aws:kms');
  if (values['no-config'] && format !== 'layers') throw new UsageError('--no-config applies to the layers format only');
  if (destination === '-' && process.stdout.isTTY) throw new UsageError('refusing to write a tar archive to a terminal; redirect standard output or use --to FILE');
  const source = parseReference(positionals[0] as string);
  if (values.platform) (await import('../../manifest/model.js')).parsePlatform(values.platform as string);

  let store: ArchiveStore;
  if (destination.startsWith('s3://')) {
    const { S3ArchiveStore, parseS3Url } = await import('../../aws/s3-archive-store.js');
    parseS3Url(destination);
    store = new S3ArchiveStore({ ...(sse ? { serverSideEncryption: sse as 'AES256' | 'aws:kms' } : {}), ...(values['kms-key-id'] ? { kmsKeyId: values['kms-key-id'] as string } : {}) });
  } else {
    if (sse) throw new UsageError('--sse applies to s3:// destinations only');
    store = new FileArchiveStore();
  }
  const pool = new RegistryPool({ credentials: credentialsFor(values, { source: source.registry }), insecureRegistries: stringList(values.insecure) });
  const progress = exportProgress(reporterMode(values, process.stderr));
  try {
    const result = await exportImage(
      { source, destination, format: format as ArchiveFormat, ...(values.platform ? { platform: values.platform as string } : {}), noConfig: !!values['no-config'] },
      { registries: pool, store, onEvent: progress.onEvent },
    );
    progress.done();
    // With --to -, standard output carries the archive: the summary goes to stderr.
    const out = destination === '-' ? process.stderr : process.stdout;
    if (values.json) out.write(`${JSON.stringify(result)}\n`);
    else if (!values.quiet) out.write(`exported ${result.source} (${result.digest}${result.platform ? `, ${result.platform}` : ''}) as ${result.format} to ${result.destination}\n  ${result.entries} members, ${formatBytes(result.bytes)}, sha256:${result.sha256.replace(/^sha256:/, '')}\n`);
    return 0;
  } finally {
    progress.done();
    await pool.close();
  }
}

function exportProgress(mode: 'tty' | 'plain' | 'silent'): { onEvent: (e: ExportEvent) => void; done: () => void } {
  if (mode !== 'tty') return { onEvent: () => undefined, done: () => undefined };
  let last = 0;
  let drawn = false;
  const width = 40;
  return {
    onEvent: (e) => {
      if (e.type !== 'export-progress') return;
      const now = Date.now();
      if (now - last < 100 && e.bytes < e.size) return;
      last = now;
      const filled = Math.round(Math.min(1, e.bytes / e.size) * width);
      process.stderr.write(`\r\x1b[2Kexport [${'='.repeat(filled)}${' '.repeat(width - filled)}] ${formatBytes(e.bytes)}/${formatBytes(e.size)}`);
      drawn = true;
    },
    done: () => {
      if (drawn) process.stderr.write('\n');
      drawn = false;
    },
  };
}
