// s3rver (npm, dev dependency) as a real S3 endpoint on a free 127.0.0.1 port with a fresh data
// directory, started with node directly (not npx, so the pid is the server's).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { makeTempDir, onFreePort, pollUntil, removeTempDir, spawnManaged, tail } from './process.js';

export interface RunningS3 {
  endpoint: string; // 'http://127.0.0.1:PORT'
  port: number;
  bucket: string;
  dataDir: string;
  /** Credentials s3rver accepts. */
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Environment for a child process (the CLI) to reach this server through the standard AWS configuration. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

const require = createRequire(import.meta.url);

export async function startS3(options: { bucket?: string } = {}): Promise<RunningS3> {
  const bucket = options.bucket ?? 'ocirelay-test';
  const dataDir = makeTempDir('s3rver');
  const bin = join(dirname(require.resolve('s3rver/package.json')), 'bin', 's3rver.js');
  const { port, proc, endpoint } = await onFreePort(async (port) => {
    const proc = spawnManaged(process.execPath, [bin, '-d', dataDir, '-a', '127.0.0.1', '-p', String(port), '--silent', '--configure-bucket', bucket]);
    const endpoint = `http://127.0.0.1:${port}`;
    try {
      await pollUntil(
        async () => {
          const res = await fetch(`${endpoint}/${bucket}?list-type=2`).catch(() => undefined);
          if (!res) return undefined;
          // s3rver's answer, not that of whatever else may hold the port.
          const body = await res.text();
          return res.status === 200 && body.includes('<ListBucketResult') ? true : undefined;
        },
        {
          timeoutMs: 15_000,
          what: `s3rver on ${endpoint}`,
          abort: () => {
            if (proc.hasExited()) throw new Error(`s3rver exited: ${tail(proc.output())}`);
          },
        },
      );
    } catch (err) {
      await proc.kill();
      throw err;
    }
    return { port, proc, endpoint };
  });
  let stopping: Promise<void> | undefined;
  const credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', region: 'us-east-1' };
  return {
    endpoint,
    port,
    bucket,
    dataDir,
    ...credentials,
    env: {
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      AWS_REGION: credentials.region,
      AWS_EC2_METADATA_DISABLED: 'true',
    },
    stop() {
      stopping ??= (async () => {
        await proc.kill();
        await removeTempDir(dataDir);
      })();
      return stopping;
    },
  };
}
