// The raw limit of a registry-to-registry copy: parallel raw GETs piped into PUTs with undici and
// nothing else: no digest verification, no HEADs, no retries, no mounts, no auth. Each blob's
// upload session (POST) is opened while its GET is already under way, every blob at once, then
// the manifests (children before the index, the tag last). Bundled by the bench with esbuild
// into one .mjs and started as its own `node` process, so that its time includes process start
// exactly like the tools it bounds.
//
//   node raw-copy.mjs SRC_ORIGIN SRC_REPO REF DST_ORIGIN DST_REPO TAG
import { Agent, request } from 'undici';

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

interface ManifestJson {
  mediaType?: string;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

const [srcOrigin, srcRepo, ref, dstOrigin, dstRepo, tag] = process.argv.slice(2) as [string, string, string, string, string, string];
const dispatcher = new Agent({ connections: 32, keepAliveTimeout: 30_000 });

async function getManifest(reference: string): Promise<{ bytes: Buffer; mediaType: string }> {
  const res = await request(`${srcOrigin}/v2/${srcRepo}/manifests/${reference}`, { dispatcher, headers: { accept: ACCEPT } });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  if (res.statusCode !== 200) throw new Error(`GET manifest ${reference}: ${res.statusCode}`);
  const mediaType = (JSON.parse(bytes.toString('utf8')) as ManifestJson).mediaType ?? String(res.headers['content-type']);
  return { bytes, mediaType };
}

async function putManifest(reference: string, bytes: Buffer, mediaType: string): Promise<void> {
  const res = await request(`${dstOrigin}/v2/${dstRepo}/manifests/${reference}`, { dispatcher, method: 'PUT', headers: { 'content-type': mediaType }, body: bytes });
  await res.body.dump();
  if (res.statusCode !== 201) throw new Error(`PUT manifest ${reference}: ${res.statusCode}`);
}

async function copyBlob(blob: Descriptor): Promise<void> {
  const [session, source] = await Promise.all([
    request(`${dstOrigin}/v2/${dstRepo}/blobs/uploads/`, { dispatcher, method: 'POST', headers: { 'content-length': '0' } }),
    request(`${srcOrigin}/v2/${srcRepo}/blobs/${blob.digest}`, { dispatcher }),
  ]);
  await session.body.dump();
  if (session.statusCode !== 202) throw new Error(`POST upload: ${session.statusCode}`);
  if (source.statusCode !== 200) throw new Error(`GET blob ${blob.digest}: ${source.statusCode}`);
  const location = new URL(String(session.headers['location']), dstOrigin);
  location.searchParams.set('digest', blob.digest);
  const put = await request(location, { dispatcher, method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) }, body: source.body });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`PUT blob ${blob.digest}: ${put.statusCode}`);
}

async function main(): Promise<void> {
  const root = await getManifest(ref);
  const rootJson = JSON.parse(root.bytes.toString('utf8')) as ManifestJson;
  const children = rootJson.manifests ? await Promise.all(rootJson.manifests.map(async (d) => ({ digest: d.digest, ...(await getManifest(d.digest)) }))) : [];
  const images = rootJson.manifests ? children.map((c) => JSON.parse(c.bytes.toString('utf8')) as ManifestJson) : [rootJson];
  const blobs = new Map<string, Descriptor>();
  for (const image of images) for (const d of [image.config, ...(image.layers ?? [])]) if (d) blobs.set(d.digest, d);
  await Promise.all([...blobs.values()].map(copyBlob));
  await Promise.all(children.map((c) => putManifest(c.digest, c.bytes, c.mediaType)));
  await putManifest(tag, root.bytes, root.mediaType);
  await dispatcher.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`raw-copy: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
