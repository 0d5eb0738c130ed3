/**
 * The ArchiveStore port: where export archives go. The same export code writes to a file, to
 * standard output or to S3 through it; the export Lambda, the CLI and the embedded runtime differ
 * only in the store they pass.
 *
 * Contract: `create` returns a writer whose `stream` receives the archive bytes. Nothing under
 * the destination name looks complete until `commit` (a file is renamed into place, an S3
 * multipart upload is completed); `abort` removes whatever was written (the partial file is
 * deleted, the multipart upload is aborted).
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PassThrough, type Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { ErrorCodes, OciRelayError } from '../errors.js';

export interface ArchiveInfo {
  /** The archive's size in bytes when known in advance (lets S3 choose its part size). */
  size?: number;
  contentType: string;
  /** Small ASCII key/values recorded with the archive (S3 object metadata). */
  metadata: Record<string, string>;
}

export interface ArchiveWriter {
  stream: Writable;
  /** After `stream` ended: makes the archive visible under its name. */
  commit(): Promise<{ location: string }>;
  /** Removes anything written; safe to call more than once, and after a failed commit. */
  abort(reason?: unknown): Promise<void>;
}

export interface ArchiveStore {
  create(destination: string, info: ArchiveInfo): Promise<ArchiveWriter>;
}

/**
 * Files: written to `.<name>.partial-<random>` beside the target and renamed into place on commit
 * (rename is atomic within a directory), so a reader never sees a half-written archive under
 * the real name. `-` is standard output, which cannot be retracted: a failed export there ends
 * without the tar end-of-archive blocks and with a non-zero exit.
 */
export class FileArchiveStore implements ArchiveStore {
  constructor(private readonly stdout: Writable = process.stdout) {}

  async create(destination: string, _info: ArchiveInfo): Promise<ArchiveWriter> {
    if (destination === '-') return this.toStdout();
    const partial = join(dirname(destination), `.${basename(destination)}.partial-${randomBytes(4).toString('hex')}`);
    const stream = createWriteStream(partial, { flags: 'wx', highWaterMark: 1 << 20 });
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', (err: NodeJS.ErrnoException) => reject(new OciRelayError(ErrorCodes.Config, `cannot write ${destination}: ${err.code ?? err.message}`, { cause: err })));
    });
    let state: 'open' | 'committed' | 'aborted' = 'open';
    return {
      stream,
      commit: async () => {
        if (!stream.writableFinished) await finished(stream);
        await rename(partial, destination);
        state = 'committed';
        return { location: destination };
      },
      abort: async () => {
        if (state !== 'open') return;
        state = 'aborted';
        stream.destroy();
        await unlink(partial).catch(() => undefined);
      },
    };
  }

  private toStdout(): ArchiveWriter {
    const stream = new PassThrough({ highWaterMark: 1 << 20 });
    stream.pipe(this.stdout, { end: false });
    return {
      stream,
      commit: async () => {
        if (!stream.readableEnded) await finished(stream);
        return { location: '-' };
      },
      abort: async () => {
        stream.unpipe(this.stdout);
        stream.destroy();
      },
    };
  }
}
