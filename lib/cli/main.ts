/**
 * The `ocirelay` command. Subcommands are loaded on demand so that start-up stays fast: nothing of
 * the AWS SDK or other heavy modules is imported unless a command needs it.
 */
import { ErrorCodes, OciRelayError } from '../errors.js';

const USAGE = `usage: ocirelay <command> [options]

commands:
  copy SRC DST        copy an image between registries
  plan SRC DST        show what a copy would do, without writing anything
  export REF --to D   write an image's layers as a tar archive (file, -, or s3://bucket/key)
  sync RULES          copy what the rules select and the target lacks (bulk migration)
  serve --rules R     serve the rules' webhooks and mirror every push, in this process

Run 'ocirelay <command> --help' for the options of a command.
`;

type Command = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  copy: async () => (await import('./commands/copy.js')).copyCommand,
  plan: async () => (await import('./commands/copy.js')).planCommand,
  export: async () => (await import('./commands/export.js')).exportCommand,
  sync: async () => (await import('./commands/sync.js')).syncCommand,
  serve: async () => (await import('./commands/serve.js')).serveCommand,
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name) {
    process.stderr.write(USAGE);
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write('ocirelay 0.1.0\n');
    return 0;
  }
  const load = COMMANDS[name];
  if (!load) {
    process.stderr.write(`ocirelay: unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return 2;
  }
  try {
    return await (await load())(rest);
  } catch (err) {
    return reportError(err);
  }
}

/** One line (or a usage block) on stderr; exit 2 for usage errors, 1 for everything else. */
export function reportError(err: unknown): number {
  if (err instanceof OciRelayError) {
    const usage = err.code === ErrorCodes.Usage;
    process.stderr.write(`ocirelay: ${usage ? '' : 'error: '}${err.message}${usage ? '' : ` [${err.code}]`}\n`);
    return usage || err.code === ErrorCodes.InvalidReference || err.code === ErrorCodes.InvalidDigest ? 2 : 1;
  }
  process.stderr.write(`ocirelay: error: ${(err as Error)?.message ?? String(err)}\n`);
  return 1;
}
