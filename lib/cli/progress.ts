/**
 * What the CLI shows while it works. On a terminal: one line per blob in flight with a bar,
 * redrawn in place (at most 10 times a second). Elsewhere: one plain line per finished blob.
 * With --json or --quiet: nothing (the JSON result goes to stdout at the end).
 */
import type { CopyEvent } from '../engine/execute.js';

export interface Reporter {
  onEvent(event: CopyEvent): void;
  done(): void;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

const short = (digest: string): string => digest.replace(/^sha(256|512):/, '').slice(0, 12);

export function createReporter(stream: NodeJS.WriteStream, mode: 'tty' | 'plain' | 'silent'): Reporter {
  if (mode === 'silent') return { onEvent: () => undefined, done: () => undefined };
  if (mode === 'plain') {
    return {
      onEvent: (e) => {
        if (e.type === 'blob-done') stream.write(`${e.outcome.padEnd(7)} ${e.digest} ${formatBytes(e.size)}\n`);
        else if (e.type === 'manifest') stream.write(`pushed  ${e.mediaType.replace(/^application\/vnd\./, '')} ${e.reference}\n`);
        else if (e.type === 'note') stream.write(`note    ${e.message}\n`);
      },
      done: () => undefined,
    };
  }
  const active = new Map<string, { bytes: number; size: number }>();
  let lines = 0;
  let last = 0;
  let timer: NodeJS.Timeout | undefined;
  const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - 50));
  const draw = (): void => {
    timer = undefined;
    last = Date.now();
    let out = lines ? `\x1b[${lines}A` : '';
    const rows = [...active.entries()].slice(0, 12);
    for (const [digest, { bytes, size }] of rows) {
      const ratio = size ? Math.min(1, bytes / size) : 1;
      const filled = Math.round(ratio * width);
      out += `\x1b[2K${short(digest)} [${'='.repeat(filled)}${' '.repeat(width - filled)}] ${formatBytes(bytes)}/${formatBytes(size)}\n`;
    }
    for (let i = rows.length; i < lines; i++) out += '\x1b[2K\n';
    if (rows.length < lines) out += `\x1b[${lines - rows.length}A`;
    lines = rows.length;
    stream.write(out);
  };
  const schedule = (): void => {
    if (timer) return;
    const wait = Math.max(0, 100 - (Date.now() - last));
    timer = setTimeout(draw, wait);
    timer.unref();
  };
  const print = (text: string): void => {
    let out = lines ? `\x1b[${lines}A` : '';
    for (let i = 0; i < lines; i++) out += '\x1b[2K\n';
    if (lines) out += `\x1b[${lines}A`;
    lines = 0;
    stream.write(`${out}${text}\n`);
    schedule();
  };
  return {
    onEvent: (e) => {
      switch (e.type) {
        case 'blob-start':
          active.set(e.digest, { bytes: 0, size: e.size });
          schedule();
          break;
        case 'blob-progress':
          active.set(e.digest, { bytes: e.bytes, size: e.size });
          schedule();
          break;
        case 'blob-done':
          active.delete(e.digest);
          print(`${e.outcome.padEnd(7)} ${short(e.digest)} ${formatBytes(e.size)}`);
          break;
        case 'manifest':
          print(`pushed  ${e.reference}`);
          break;
        case 'note':
          print(`note    ${e.message}`);
          break;
      }
    },
    done: () => {
      if (timer) clearTimeout(timer);
      active.clear();
      draw();
    },
  };
}

export function reporterMode(values: Record<string, unknown>, stream: NodeJS.WriteStream): 'tty' | 'plain' | 'silent' {
  if (values.json || values.quiet) return 'silent';
  return stream.isTTY ? 'tty' : 'plain';
}
