/**
 * `npm run demo`: the main job on embedded defaults, on a fresh machine with no AWS account.
 * Starts two local registries, pushes a two-platform sample image (built with umoci, pushed with
 * skopeo) into the first, copies it into the second with the `ocirelay` CLI, and checks with
 * skopeo that the target holds the source's exact bytes. Then copies it again to show the no-op.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildImage, buildIndex, inspectRaw, pushLayout, startRegistry } from './index.js';

const bin = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

function ocirelay(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
  });
}

async function main(): Promise<void> {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run npm ci (or npm run build) first`);
  const [source, target] = await Promise.all([startRegistry(), startRegistry()]);
  try {
    console.log(`source registry ${source.host}, target registry ${target.host}`);
    const amd64 = await buildImage({ tag: 'amd64', architecture: 'amd64', layers: [[{ path: 'etc/hello', content: 'hello from amd64\n' }], [{ path: 'data/blob', content: { size: 4 << 20, seed: 1 } }]] });
    const arm64 = await buildImage({ layout: amd64.layout, tag: 'arm64', architecture: 'arm64', variant: 'v8', layers: [[{ path: 'etc/hello', content: 'hello from arm64\n' }], [{ path: 'data/blob', content: { size: 4 << 20, seed: 1 } }]] });
    const index = await buildIndex({ layout: amd64.layout, name: 'multi', images: [{ tag: amd64.tag, platform: { os: 'linux', architecture: 'amd64' } }, { tag: arm64.tag, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }] });
    await pushLayout(index.ref, `${source.host}/demo/hello:1.0`, { all: true });
    console.log(`pushed a two-platform index ${index.digest} to ${source.host}/demo/hello:1.0\n`);

    console.log(`$ ocirelay copy ${source.host}/demo/hello:1.0 ${target.host}/mirror/hello:1.0`);
    if ((await ocirelay(['copy', `${source.host}/demo/hello:1.0`, `${target.host}/mirror/hello:1.0`])) !== 0) throw new Error('the copy failed');

    const [a, b] = await Promise.all([inspectRaw(`${source.host}/demo/hello:1.0`), inspectRaw(`${target.host}/mirror/hello:1.0`)]);
    if (!a.equals(b)) throw new Error('the target manifest differs from the source');
    console.log(`\nskopeo inspect --raw: source and target index bytes are identical (${b.length} bytes)\n`);

    console.log(`$ ocirelay copy ${source.host}/demo/hello:1.0 ${target.host}/mirror/hello:1.0   # again: nothing to do`);
    if ((await ocirelay(['copy', `${source.host}/demo/hello:1.0`, `${target.host}/mirror/hello:1.0`])) !== 0) throw new Error('the second copy failed');
  } finally {
    await Promise.all([source.stop(), target.stop()]);
  }
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exitCode = 1;
});
