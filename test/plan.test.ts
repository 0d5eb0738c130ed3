// The pure planner (lib/engine/plan.ts) and the manifest model (lib/manifest/model.ts), table-driven
// on SourceGraph objects built by hand: no registry, no I/O.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { digestOf } from '../lib/digest.js';
import { ErrorCodes, OciRelayError } from '../lib/errors.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import {
  detectIndent,
  mergeAnnotations,
  parseManifest,
  parsePlatform,
  platformFromConfig,
  platformMatches,
  retarget,
  type Descriptor,
  type Platform,
  type PlatformFilter,
} from '../lib/manifest/model.js';
import { planCopy, selectEntries, type Plan, type PlanOptions } from '../lib/engine/plan.js';
import type { SourceGraph, SourceNode } from '../lib/engine/graph.js';

// --- building graphs by hand -------------------------------------------------------------------

const fakeDigest = (seed: string): string => digestOf(`blob:${seed}`);

function makeNode(json: Record<string, unknown>, mediaType = json.mediaType as string, indent: string | number = 0): SourceNode {
  const bytes = Buffer.from(JSON.stringify(json, null, indent));
  return { digest: digestOf(bytes), mediaType, size: bytes.length, bytes, manifest: parseManifest(bytes, mediaType) };
}

function blob(seed: string, mediaType: string = MediaTypes.ociLayerGzip, size = 100 + seed.length): Descriptor {
  return { mediaType, digest: fakeDigest(seed), size };
}

function ociImage(name: string, extra: Record<string, unknown> = {}, layers: Descriptor[] = [blob('base'), blob(`app-${name}`)]): SourceNode {
  return makeNode({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: blob(`config-${name}`, MediaTypes.ociConfig), layers, ...extra });
}

function dockerImage(name: string, layers: Descriptor[] = [blob('base', MediaTypes.dockerLayerGzip), blob(`app-${name}`, MediaTypes.dockerLayerGzip)]): SourceNode {
  return makeNode({ schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: blob(`config-${name}`, MediaTypes.dockerConfig), layers });
}

function entry(child: SourceNode, fields: Record<string, unknown> = {}): Descriptor {
  return { mediaType: child.mediaType, digest: child.digest, size: child.size, ...fields };
}

function graphOf(root: SourceNode, children: SourceNode[] = [], configPlatforms: Array<[string, Platform]> = [], extra: Partial<SourceGraph> = {}): SourceGraph {
  const nodes = new Map<string, SourceNode>([[root.digest, root]]);
  for (const c of children) nodes.set(c.digest, c);
  return { root, nodes, configPlatforms: new Map(configPlatforms), generatedBlobs: new Map(), ...extra };
}

const opts = (extra: Partial<PlanOptions> = {}): PlanOptions => ({ mode: 'prefer-multiarch', target: { tag: 'v1' }, ...extra });
const filters = (...specs: string[]): PlatformFilter[] => specs.map(parsePlatform);
const json = (bytes: Buffer): Record<string, unknown> => JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;

function assertCode(fn: () => unknown, code: string, message?: RegExp): OciRelayError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof OciRelayError, `expected an OciRelayError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (message) assert.match(caught.message, message);
  return caught;
}

/** Every manifest's dependencies come before it in plan.manifests, and the root is last. */
function assertOrder(plan: Plan): void {
  const seen = new Set(plan.blobs.map((b) => b.digest));
  for (const m of plan.manifests) {
    for (const d of m.dependsOn) assert.ok(seen.has(d), `${m.digest} depends on ${d}, which comes later or not at all`);
    seen.add(m.digest);
  }
  assert.equal(plan.manifests.at(-1), plan.root);
}

// --- the rich fixture: five platforms, unknown fields, data, an entry without platform ---------

const amd64 = ociImage('amd64');
const armv6 = ociImage('armv6');
const arm64 = ociImage('arm64');
const armv7 = ociImage('armv7');
const s390x = ociImage('s390x');
const richEntries: Descriptor[] = [
  entry(amd64, { platform: { architecture: 'amd64', os: 'linux' }, annotations: { 'org.example.entry': 'amd64' }, 'x-entry-field': { keep: [1, 'two', null] } }),
  entry(armv6, { platform: { architecture: 'arm', os: 'linux', variant: 'v6' } }),
  entry(arm64, {
    platform: { architecture: 'arm64', os: 'linux', variant: 'v8', 'os.version': '5.15', 'os.features': ['sve'], 'x-platform-field': 'kept' },
    artifactType: 'application/vnd.example.image',
    data: arm64.bytes.toString('base64'),
  }),
  entry(armv7, { platform: { architecture: 'arm', os: 'linux', variant: 'v7' } }),
  // No platform: the planner learns it from the config (graph.configPlatforms).
  entry(s390x, { annotations: { 'org.example.entry': 'no-platform' } }),
];
const richJson = {
  schemaVersion: 2,
  mediaType: MediaTypes.ociIndex,
  'x-before-manifests': { nested: true },
  manifests: richEntries,
  annotations: { 'org.example.index': 'rich' },
  subject: blob('some-subject', MediaTypes.ociManifest),
  'x-after': 'kept',
};
const richChildren = [amd64, armv6, arm64, armv7, s390x];
const richConfigPlatforms: Array<[string, Platform]> = [[s390x.digest, { architecture: 's390x', os: 'linux' }]];

describe('platform filters (model)', () => {
  const parseCases: Array<[string, PlatformFilter | string]> = [
    ['linux/arm64', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm/v7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['LINUX/ARM64/V8', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    [' windows/amd64 ', { os: 'windows', architecture: 'amd64' }],
    ['linux', 'ERR_USAGE'],
    ['linux/', 'ERR_USAGE'],
    ['/arm64', 'ERR_USAGE'],
    ['linux/arm/v7/extra', 'ERR_USAGE'],
    ['linux/arm 64', 'ERR_USAGE'],
    ['', 'ERR_USAGE'],
  ];
  for (const [spec, expected] of parseCases) {
    test(`parsePlatform(${JSON.stringify(spec)})`, () => {
      if (typeof expected === 'string') assertCode(() => parsePlatform(spec), expected, /os\/architecture\[\/variant\]/);
      else assert.deepEqual(parsePlatform(spec), expected);
    });
  }

  const matchCases: Array<[Platform, string, boolean]> = [
    [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, 'linux/arm64', true],
    [{ os: 'linux', architecture: 'arm', variant: 'v6' }, 'linux/arm', true],
    [{ os: 'linux', architecture: 'arm', variant: 'v7' }, 'linux/arm', true],
    [{ os: 'linux', architecture: 'arm', variant: 'v6' }, 'linux/arm/v7', false],
    [{ os: 'linux', architecture: 'arm', variant: 'v7' }, 'linux/arm/v7', true],
    [{ os: 'linux', architecture: 'arm' }, 'linux/arm/v7', true], // arm without variant is v7
    [{ os: 'linux', architecture: 'arm64' }, 'linux/arm64/v8', true], // arm64 without variant is v8
    [{ os: 'linux', architecture: 'amd64' }, 'linux/amd64/v1', true],
    [{ os: 'linux', architecture: 'amd64', variant: 'v3' }, 'linux/amd64', true],
    [{ os: 'linux', architecture: 'amd64', variant: 'v3' }, 'linux/amd64/v1', false],
    [{ os: 'linux', architecture: 'amd64' }, 'linux/arm64', false],
    [{ os: 'windows', architecture: 'amd64' }, 'linux/amd64', false],
    [{ os: 'Linux', architecture: 'ARM64' }, 'linux/arm64', true],
  ];
  for (const [platform, spec, expected] of matchCases) {
    test(`${JSON.stringify(platform)} ${expected ? 'matches' : 'does not match'} ${spec}`, () => {
      assert.equal(platformMatches(platform, parsePlatform(spec)), expected);
    });
  }

  test('platformFromConfig reads os, architecture, variant, os.version, os.features', () => {
    assert.deepEqual(platformFromConfig({ architecture: 'arm', os: 'linux', variant: 'v7', 'os.version': '10.0', 'os.features': ['win32k', 3], rootfs: {} }), {
      architecture: 'arm',
      os: 'linux',
      variant: 'v7',
      'os.version': '10.0',
      'os.features': ['win32k'],
    });
    assert.deepEqual(platformFromConfig({ architecture: 'amd64', os: 'linux', variant: '' }), { architecture: 'amd64', os: 'linux' });
    assert.equal(platformFromConfig({ os: 'linux' }), undefined);
    assert.equal(platformFromConfig(null), undefined);
  });

  const selectCases: Array<[string[], number[]]> = [
    [['linux/arm64'], [2]],
    [['linux/arm/v7', 'linux/amd64'], [0, 3]], // source order, not filter order
    [['linux/arm'], [1, 3]], // without variant: every variant
    [['linux/s390x'], [4]], // platform from the config
    [['linux/s390x', 'linux/arm64/v8', 'linux/amd64'], [0, 2, 4]],
    [['linux/arm64', 'linux/arm64/v8'], [2]], // matched twice, kept once
    [['linux/ppc64le'], []],
    [[], [0, 1, 2, 3, 4]],
  ];
  for (const [specs, kept] of selectCases) {
    test(`selectEntries ${JSON.stringify(specs)} keeps entries ${JSON.stringify(kept)}`, () => {
      const selected = selectEntries(richEntries, filters(...specs), new Map(richConfigPlatforms));
      assert.deepEqual(selected, kept.map((i) => richEntries[i]));
      for (const [i, k] of kept.entries()) assert.equal(selected[i], richEntries[k], 'the same descriptor object, unchanged');
    });
  }
});

describe('manifest model', () => {
  const image = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: blob('c', MediaTypes.ociConfig), layers: [blob('l')] };
  const bad: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['mediaType differs from the served type', image, MediaTypes.dockerManifest, /says mediaType .* but was served as/],
    ['schemaVersion 3', { ...image, schemaVersion: 3 }, MediaTypes.ociManifest, /schemaVersion must be 2/],
    ['an index without manifests', { schemaVersion: 2, mediaType: MediaTypes.ociIndex }, MediaTypes.ociIndex, /no "manifests" list/],
    ['an image without config', { schemaVersion: 2, mediaType: MediaTypes.ociManifest, layers: [] }, MediaTypes.ociManifest, /no "config"/],
    ['a malformed digest', { ...image, layers: [{ ...blob('l'), digest: 'sha256:xyz' }] }, MediaTypes.ociManifest, /layers\[0\]\.digest/],
    ['a negative size', { ...image, layers: [{ ...blob('l'), size: -1 }] }, MediaTypes.ociManifest, /layers\[0\]\.size/],
    ['urls that are not strings', { ...image, layers: [{ ...blob('l'), urls: [1] }] }, MediaTypes.ociManifest, /layers\[0\]\.urls/],
    ['annotations that are not strings', { ...image, annotations: { a: 1 } }, MediaTypes.ociManifest, /annotations must map strings to strings/],
    ['a platform without os', { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ ...blob('m', MediaTypes.ociManifest), platform: { architecture: 'amd64' } }] }, MediaTypes.ociIndex, /manifests\[0\]\.platform/],
    ['data that does not match the digest', { ...image, layers: [{ ...blob('l'), data: Buffer.from('other').toString('base64') }] }, MediaTypes.ociManifest, /layers\[0\]\.data does not match/],
    ['a subject that is not a descriptor', { ...image, subject: 'sha256:abc' }, MediaTypes.ociManifest, /subject is not a descriptor/],
  ];
  for (const [name, body, mediaType, message] of bad) {
    test(`parseManifest refuses ${name}`, () => {
      assertCode(() => parseManifest(Buffer.from(JSON.stringify(body)), mediaType), ErrorCodes.InvalidManifest, message);
    });
  }

  test('parseManifest keeps subject, artifactType, data and unknown fields', () => {
    const data = Buffer.from('{}');
    const body = {
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      artifactType: 'application/vnd.example.sbom',
      config: { mediaType: MediaTypes.ociEmpty, digest: digestOf(data), size: 2, data: data.toString('base64') },
      layers: [{ ...blob('l'), urls: ['https://example.com/l'], 'x-field': 1 }],
      subject: blob('s', MediaTypes.ociManifest),
      'x-top': [1, 2],
    };
    const parsed = parseManifest(Buffer.from(JSON.stringify(body)), MediaTypes.ociManifest);
    assert.equal(parsed.kind, 'image');
    if (parsed.kind !== 'image') return;
    assert.equal(parsed.artifactType, 'application/vnd.example.sbom');
    assert.deepEqual(parsed.subject, body.subject);
    assert.deepEqual(parsed.config, body.config);
    assert.deepEqual(parsed.layers, body.layers);
    assert.deepEqual(parsed.json, body);
  });

  const indents: Array<[string, string | number]> = [
    [JSON.stringify(image), 0],
    [JSON.stringify(image, null, 3), '   '],
    [JSON.stringify(image, null, '\t'), '\t'],
    [JSON.stringify(image, null, 2).replace(/\n/g, '\r\n'), '  '],
  ];
  for (const [text, indent] of indents) {
    test(`detectIndent finds ${JSON.stringify(indent)}`, () => {
      assert.equal(detectIndent(Buffer.from(text)), indent);
    });
  }

  test('mergeAnnotations: nothing new -> undefined; new keys last; existing keys keep their place', () => {
    const body = { schemaVersion: 2, annotations: { a: '1', b: '2' }, layers: [] };
    assert.equal(mergeAnnotations(body, { a: '1' }), undefined);
    assert.equal(mergeAnnotations(body, {}), undefined);
    const changed = mergeAnnotations(body, { c: '3', a: 'x' });
    assert.deepEqual(Object.keys(changed ?? {}), ['schemaVersion', 'annotations', 'layers']);
    assert.deepEqual(Object.entries((changed as { annotations: Record<string, string> }).annotations), [['a', 'x'], ['b', '2'], ['c', '3']]);
    const added = mergeAnnotations({ schemaVersion: 2, layers: [] }, { k: 'v' });
    assert.deepEqual(Object.keys(added ?? {}), ['schemaVersion', 'layers', 'annotations']);
    assert.deepEqual(body.annotations, { a: '1', b: '2' }, 'the input is not mutated');
  });

  test('retarget keeps the descriptor when nothing changed, drops only data when it did', () => {
    const d = entry(arm64, { platform: { os: 'linux', architecture: 'arm64' }, data: arm64.bytes.toString('base64'), 'x-f': 1 });
    assert.equal(retarget(d, { digest: arm64.digest, size: arm64.size }), d);
    const moved = retarget(d, { digest: fakeDigest('new'), size: 7 });
    assert.deepEqual(moved, { mediaType: d.mediaType, digest: fakeDigest('new'), size: 7, platform: d.platform, 'x-f': 1 });
    assert.deepEqual(Object.keys(moved), ['mediaType', 'digest', 'size', 'platform', 'x-f']);
  });
});

describe('planCopy: verbatim copies', () => {
  test('a single image: its exact bytes, its config and layers, the tag', () => {
    const img = ociImage('solo');
    const plan = planCopy(graphOf(img), opts());
    assert.equal(plan.root.digest, img.digest);
    assert.equal(plan.root.bytes, img.bytes);
    assert.equal(plan.root.verbatim, true);
    assert.equal(plan.root.root, true);
    assert.deepEqual(plan.manifests, [plan.root]);
    assert.deepEqual(plan.blobs.map((b) => b.digest), [fakeDigest('config-solo'), fakeDigest('base'), fakeDigest('app-solo')]);
    assert.deepEqual(plan.root.dependsOn, plan.blobs.map((b) => b.digest));
    assert.deepEqual(plan.tags, ['v1']);
    assert.deepEqual(plan.skipped, []);
    assert.deepEqual(plan.notes, []);
    assert.equal(plan.sourceDigest, img.digest);
  });

  test('an index: children first, the index last, a shared blob planned once', () => {
    const root = makeNode({ ...richJson });
    const plan = planCopy(graphOf(root, richChildren, richConfigPlatforms), opts());
    assertOrder(plan);
    assert.deepEqual(plan.manifests.map((m) => m.digest), [...richChildren.map((c) => c.digest), root.digest]);
    for (const m of plan.manifests) {
      assert.equal(m.verbatim, true);
      const src = m === plan.root ? root : richChildren.find((c) => c.digest === m.digest);
      assert.equal(m.bytes, src?.bytes);
    }
    assert.deepEqual(plan.root.dependsOn, richChildren.map((c) => c.digest));
    assert.equal(plan.blobs.filter((b) => b.digest === fakeDigest('base')).length, 1);
    assert.equal(plan.blobs.length, 1 + 2 * richChildren.length);
    assert.deepEqual(plan.manifests.slice(0, -1).map((m) => m.platform), ['linux/amd64', 'linux/arm/v6', 'linux/arm64/v8', 'linux/arm/v7', 'linux/s390x']);
  });

  test('a Docker manifest list and its images stay verbatim', () => {
    const a = dockerImage('a');
    const b = dockerImage('b');
    const list = makeNode({ schemaVersion: 2, mediaType: MediaTypes.dockerManifestList, manifests: [entry(a, { platform: { architecture: 'amd64', os: 'linux' } }), entry(b, { platform: { architecture: 'arm64', os: 'linux' } })] }, MediaTypes.dockerManifestList, 3);
    const plan = planCopy(graphOf(list, [a, b]), opts());
    assert.equal(plan.root.bytes, list.bytes);
    assert.ok(plan.manifests.every((m) => m.verbatim));
  });

  test('a manifest referenced twice is planned once', () => {
    const img = ociImage('twice');
    const root = makeNode({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [entry(img, { platform: { architecture: 'amd64', os: 'linux' } }), entry(img, { platform: { architecture: 'amd64', os: 'linux', variant: 'v2' } })] });
    const plan = planCopy(graphOf(root, [img]), opts());
    assert.equal(plan.manifests.length, 2);
    assert.deepEqual(plan.root.dependsOn, [img.digest, img.digest]);
  });
});

describe('planCopy: platform filter', () => {
  const cases: Array<{ specs: string[]; kept: number[]; indent: string | number }> = [
    { specs: ['linux/arm64'], kept: [2], indent: 0 },
    { specs: ['linux/arm/v7', 'linux/amd64'], kept: [0, 3], indent: 0 },
    { specs: ['linux/arm'], kept: [1, 3], indent: '   ' },
    { specs: ['linux/s390x'], kept: [4], indent: 2 },
    { specs: ['linux/s390x', 'linux/arm64', 'linux/amd64'], kept: [0, 2, 4], indent: '\t' },
  ];
  for (const { specs, kept, indent } of cases) {
    test(`${specs.join(' ')} keeps ${JSON.stringify(kept)} in order with every field (indent ${JSON.stringify(indent)})`, () => {
      const root = makeNode({ ...richJson }, MediaTypes.ociIndex, indent);
      const plan = planCopy(graphOf(root, richChildren, richConfigPlatforms), opts({ platforms: filters(...specs) }));
      assertOrder(plan);
      // The index is the source JSON with only `manifests` replaced, serialised the way the source was.
      const expected = Buffer.from(JSON.stringify({ ...richJson, manifests: kept.map((i) => richEntries[i]) }, null, indent));
      assert.equal(plan.root.bytes.toString('utf8'), expected.toString('utf8'));
      assert.equal(plan.root.digest, digestOf(expected));
      assert.equal(plan.root.size, expected.length);
      assert.equal(plan.root.verbatim, false);
      // Only the kept children are copied, verbatim; nothing of the others.
      const children = kept.map((i) => richChildren[i] as SourceNode);
      assert.deepEqual(plan.manifests.slice(0, -1).map((m) => [m.digest, m.verbatim, m.bytes]), children.map((c) => [c.digest, true, c.bytes]));
      const wanted = new Set(children.flatMap((c) => (c.manifest.kind === 'image' ? [c.manifest.config.digest, ...c.manifest.layers.map((l) => l.digest)] : [])));
      assert.deepEqual(new Set(plan.blobs.map((b) => b.digest)), wanted);
    });
  }

  test('a filter that keeps every entry keeps the exact bytes', () => {
    const root = makeNode({ ...richJson });
    const plan = planCopy(graphOf(root, richChildren, richConfigPlatforms), opts({ platforms: filters('linux/amd64', 'linux/arm', 'linux/arm64', 'linux/s390x') }));
    assert.equal(plan.root.digest, root.digest);
    assert.equal(plan.root.bytes, root.bytes);
    assert.equal(plan.root.verbatim, true);
  });

  test('nothing matches: PlatformNotFound on the source side, naming what is available', () => {
    const root = makeNode({ ...richJson });
    const err = assertCode(() => planCopy(graphOf(root, richChildren, richConfigPlatforms), opts({ platforms: filters('linux/ppc64le', 'windows/amd64') })), ErrorCodes.PlatformNotFound);
    assert.equal(err.side, 'source');
    assert.match(err.message, /^source: no entry of sha256:[0-9a-f]{64} matches linux\/ppc64le, windows\/amd64; available: linux\/amd64, linux\/arm\/v6, linux\/arm64\/v8, linux\/arm\/v7, linux\/s390x$/);
  });

  test('a single image of another platform is refused; of the wanted platform it is copied verbatim', () => {
    const img = ociImage('arm');
    const graph = graphOf(img, [], [[img.digest, { architecture: 'arm', os: 'linux', variant: 'v6' }]]);
    assertCode(() => planCopy(graph, opts({ platforms: filters('linux/arm/v7') })), ErrorCodes.PlatformNotFound, /the image is linux\/arm\/v6, which does not match linux\/arm\/v7/);
    const plan = planCopy(graph, opts({ platforms: filters('linux/arm') }));
    assert.equal(plan.root.bytes, img.bytes);
  });

  test('a buildx attestation entry follows the image it describes', () => {
    const a = ociImage('att-amd64');
    const b = ociImage('att-arm64');
    const att = ociImage('att-of-arm64', {}, [blob('intoto', 'application/vnd.in-toto+json')]);
    const attEntry = entry(att, { platform: { architecture: 'unknown', os: 'unknown' }, annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': b.digest } });
    const root = makeNode({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [entry(a, { platform: { architecture: 'amd64', os: 'linux' } }), entry(b, { platform: { architecture: 'arm64', os: 'linux' } }), attEntry] });
    const graph = graphOf(root, [a, b, att]);
    assert.deepEqual(json(planCopy(graph, opts({ platforms: filters('linux/arm64') })).root.bytes).manifests, [entry(b, { platform: { architecture: 'arm64', os: 'linux' } }), attEntry]);
    assert.deepEqual(json(planCopy(graph, opts({ platforms: filters('linux/amd64') })).root.bytes).manifests, [entry(a, { platform: { architecture: 'amd64', os: 'linux' } })]);

    // Rewritten (annotated) images: the attestation entry names the image's new digest.
    const plan = planCopy(graph, opts({ platforms: filters('linux/arm64'), annotations: { k: 'v' } }));
    const [image, attestation] = json(plan.root.bytes).manifests as Descriptor[];
    const newImage = plan.manifests.find((m) => m.platform === 'linux/arm64');
    assert.equal(image?.digest, newImage?.digest);
    assert.notEqual(image?.digest, b.digest);
    assert.equal(attestation?.annotations?.['vnd.docker.reference.digest'], newImage?.digest);
    assert.equal(attestation?.annotations?.['vnd.docker.reference.type'], 'attestation-manifest');
  });
});

describe('planCopy: annotations', () => {
  test('new annotations go into the index and every child; every other field is kept', () => {
    const root = makeNode({ ...richJson });
    const plan = planCopy(graphOf(root, richChildren, richConfigPlatforms), opts({ annotations: { 'org.example.k': 'v', 'org.example.index': 'rich' } }));
    assertOrder(plan);
    assert.ok(plan.manifests.every((m) => !m.verbatim));
    const children = plan.manifests.slice(0, -1);
    for (const [i, m] of children.entries()) {
      const src = richChildren[i] as SourceNode;
      const expected = Buffer.from(JSON.stringify({ ...src.manifest.json, annotations: { 'org.example.k': 'v', 'org.example.index': 'rich' } }));
      assert.equal(m.bytes.toString(), expected.toString());
      assert.equal(m.digest, digestOf(expected));
      assert.deepEqual(m.dependsOn, src.manifest.kind === 'image' ? [src.manifest.config.digest, ...src.manifest.layers.map((l) => l.digest)] : []);
    }
    // Entries point at the rewritten children; all their other fields stay (data goes: it would no longer match).
    const entries = richEntries.map((e, i) => {
      const { data: _data, ...rest } = e;
      return { ...rest, digest: children[i]?.digest, size: children[i]?.size };
    });
    const expectedIndex = JSON.stringify({ ...richJson, manifests: entries, annotations: { 'org.example.index': 'rich', 'org.example.k': 'v' } });
    assert.equal(plan.root.bytes.toString(), expectedIndex);
    assert.deepEqual(plan.root.dependsOn, children.map((c) => c.digest));
  });

  test('values that are already there keep the exact bytes and digests', () => {
    const ann = { 'org.example.k': 'v' };
    const a = ociImage('ann-a', { annotations: ann });
    const b = ociImage('ann-b', { annotations: { ...ann, other: 'x' } });
    const root = makeNode({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [entry(a, { platform: { architecture: 'amd64', os: 'linux' } }), entry(b, { platform: { architecture: 'arm64', os: 'linux' } })], annotations: ann }, MediaTypes.ociIndex, 2);
    const plan = planCopy(graphOf(root, [a, b]), opts({ annotations: ann }));
    assert.deepEqual(plan.manifests.map((m) => [m.digest, m.bytes, m.verbatim]), [a, b, root].map((n) => [n.digest, n.bytes, true]));
    assert.deepEqual(plan.notes, []);

    // A different value rewrites: the key keeps its place, the value changes.
    const changed = planCopy(graphOf(root, [a, b]), opts({ annotations: { 'org.example.k': 'w' } }));
    assert.ok(changed.manifests.every((m) => !m.verbatim));
    assert.deepEqual(json(changed.manifests[1]?.bytes as Buffer).annotations, { 'org.example.k': 'w', other: 'x' });
    assert.equal(changed.root.bytes.toString(), JSON.stringify({ ...root.manifest.json, manifests: (root.manifest.json.manifests as Descriptor[]).map((e, i) => ({ ...e, digest: changed.manifests[i]?.digest, size: changed.manifests[i]?.size })), annotations: { 'org.example.k': 'w' } }, null, 2));
  });

  test('only the index changes when only the children already have the values', () => {
    const ann = { k: 'v' };
    const a = ociImage('only-a', { annotations: ann });
    const root = makeNode({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [entry(a, { platform: { architecture: 'amd64', os: 'linux' } })] });
    const plan = planCopy(graphOf(root, [a]), opts({ annotations: ann }));
    assert.equal(plan.manifests[0]?.bytes, a.bytes);
    assert.equal(plan.root.bytes.toString(), JSON.stringify({ ...root.manifest.json, annotations: ann }));
  });

  test('Docker media types are kept verbatim, with a note', () => {
    const a = dockerImage('d-a');
    const list = makeNode({ schemaVersion: 2, mediaType: MediaTypes.dockerManifestList, manifests: [entry(a, { platform: { architecture: 'amd64', os: 'linux' } })] });
    const plan = planCopy(graphOf(list, [a]), opts({ annotations: { k: 'v' } }));
    assert.deepEqual(plan.manifests.map((m) => [m.digest, m.bytes, m.verbatim]), [a, list].map((n) => [n.digest, n.bytes, true]));
    assert.deepEqual(plan.notes.sort(), [
      `annotations not applied to ${MediaTypes.dockerManifestList} manifests: the Docker format has no annotations field (its bytes and digest are kept)`,
      `annotations not applied to ${MediaTypes.dockerManifest} manifests: the Docker format has no annotations field (its bytes and digest are kept)`,
    ]);
  });

  test('an OCI index over Docker images: the index is annotated, the images are not', () => {
    const a = dockerImage('mixed');
    const root = makeNode({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [entry(a, { platform: { architecture: 'amd64', os: 'linux' } })] });
    const plan = planCopy(graphOf(root, [a]), opts({ annotations: { k: 'v' } }));
    assert.equal(plan.manifests[0]?.bytes, a.bytes);
    assert.deepEqual(json(plan.root.bytes).annotations, { k: 'v' });
    assert.equal(plan.notes.length, 1);
  });
});

describe('planCopy: normalise-to-multiarch', () => {
  const cases: Array<{ name: string; image: SourceNode; platform: Platform; indexType: string; entryPlatform: Record<string, unknown> }> = [
    { name: 'an OCI image gets an OCI index', image: ociImage('norm-oci'), platform: { architecture: 'arm', os: 'linux', variant: 'v7' }, indexType: MediaTypes.ociIndex, entryPlatform: { architecture: 'arm', os: 'linux', variant: 'v7' } },
    { name: 'a Docker image gets a Docker manifest list', image: dockerImage('norm-docker'), platform: { architecture: 'arm64', os: 'linux', variant: 'v8' }, indexType: MediaTypes.dockerManifestList, entryPlatform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
    {
      name: 'os.version and os.features come along',
      image: ociImage('norm-win'),
      platform: { architecture: 'amd64', os: 'windows', 'os.version': '10.0.17763.1', 'os.features': ['win32k'] },
      indexType: MediaTypes.ociIndex,
      entryPlatform: { architecture: 'amd64', os: 'windows', 'os.version': '10.0.17763.1', 'os.features': ['win32k'] },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const plan = planCopy(graphOf(c.image, [], [[c.image.digest, c.platform]]), opts({ mode: 'normalise-to-multiarch' }));
      assertOrder(plan);
      const [child, root] = plan.manifests;
      assert.equal(plan.manifests.length, 2);
      assert.equal(child?.bytes, c.image.bytes);
      assert.equal(child?.verbatim, true);
      assert.equal(child?.root, undefined);
      assert.equal(root, plan.root);
      assert.equal(plan.root.mediaType, c.indexType);
      assert.equal(plan.root.verbatim, false);
      assert.deepEqual(plan.root.dependsOn, [c.image.digest]);
      assert.deepEqual(json(plan.root.bytes), {
        schemaVersion: 2,
        mediaType: c.indexType,
        manifests: [{ mediaType: c.image.mediaType, digest: c.image.digest, size: c.image.size, platform: c.entryPlatform }],
      });
      assert.equal(plan.root.digest, digestOf(plan.root.bytes));
      assert.deepEqual(plan.tags, ['v1']);
    });
  }

  test('an index is left as it is', () => {
    const root = makeNode({ ...richJson });
    const plan = planCopy(graphOf(root, richChildren, richConfigPlatforms), opts({ mode: 'normalise-to-multiarch' }));
    assert.equal(plan.root.bytes, root.bytes);
  });

  test('annotations go into the wrapper and the image', () => {
    const img = ociImage('norm-ann');
    const plan = planCopy(graphOf(img, [], [[img.digest, { architecture: 'amd64', os: 'linux' }]]), opts({ mode: 'normalise-to-multiarch', annotations: { k: 'v' } }));
    const [child] = plan.manifests;
    assert.deepEqual(json(child?.bytes as Buffer).annotations, { k: 'v' });
    const index = json(plan.root.bytes);
    assert.deepEqual(index.annotations, { k: 'v' });
    assert.equal((index.manifests as Descriptor[])[0]?.digest, child?.digest);
  });

  test('a filter that does not match the image is refused; an unknown platform is refused', () => {
    const img = ociImage('norm-filter');
    assertCode(() => planCopy(graphOf(img, [], [[img.digest, { architecture: 'amd64', os: 'linux' }]]), opts({ mode: 'normalise-to-multiarch', platforms: filters('linux/arm64') })), ErrorCodes.PlatformNotFound);
    assertCode(() => planCopy(graphOf(img), opts({ mode: 'normalise-to-multiarch' })), ErrorCodes.InvalidManifest, /platform .* is unknown/);
  });
});

describe('planCopy: targets, foreign layers, schema 1', () => {
  const img = ociImage('target');
  const targetCases: Array<{ name: string; options: Partial<PlanOptions>; error?: RegExp; tags?: string[] }> = [
    { name: 'by digest, equal', options: { target: { digest: img.digest } }, tags: [] },
    { name: 'by tag@digest, equal', options: { target: { tag: 't', digest: img.digest } }, tags: ['t'] },
    { name: 'by digest, another digest', options: { target: { digest: fakeDigest('other') } }, error: /^target: the target names digest sha256:[0-9a-f]{64}, but the copy produces sha256:[0-9a-f]{64}$/ },
    { name: 'by digest, options change the manifest', options: { target: { digest: img.digest }, annotations: { k: 'v' } }, error: /but the copy produces .* \(the options change the manifest\)$/ },
    { name: 'by tag@digest, normalise wraps it', options: { target: { tag: 't', digest: img.digest }, mode: 'normalise-to-multiarch' }, error: /the options change the manifest/ },
  ];
  for (const c of targetCases) {
    test(`target ${c.name}`, () => {
      const graph = graphOf(img, [], [[img.digest, { architecture: 'amd64', os: 'linux' }]]);
      if (c.error) {
        const err = assertCode(() => planCopy(graph, opts(c.options)), ErrorCodes.Unsupported, c.error);
        assert.equal(err.side, 'target');
      } else {
        const plan = planCopy(graph, opts(c.options));
        assert.equal(plan.root.digest, img.digest);
        assert.deepEqual(plan.tags, c.tags);
      }
    });
  }

  const foreign = { ...blob('foreign', MediaTypes.dockerLayerForeign), urls: ['https://example.com/layer.tar.gz'] };
  const nondist = blob('nondist', MediaTypes.ociLayerNondistributableGzip);
  const withUrls = { ...blob('with-urls'), urls: ['https://example.com/l.tgz'] };
  const foreignCases: Array<[string, SourceNode, Descriptor, string]> = [
    ['a Docker foreign layer with urls', dockerImage('win', [foreign, blob('normal', MediaTypes.dockerLayerGzip)]), foreign, 'foreign layer with urls'],
    ['an OCI non-distributable layer', ociImage('nondist', {}, [nondist, blob('normal')]), nondist, 'non-distributable layer'],
    ['an OCI layer with urls', ociImage('urls', {}, [withUrls, blob('normal')]), withUrls, 'foreign layer with urls'],
  ];
  for (const [name, node, layer, reason] of foreignCases) {
    test(`${name} is skipped with a note, copied with includeForeignLayers`, () => {
      const plan = planCopy(graphOf(node), opts());
      assert.deepEqual(plan.skipped, [{ digest: layer.digest, size: layer.size, mediaType: layer.mediaType, reason }]);
      assert.ok(!plan.blobs.some((b) => b.digest === layer.digest));
      assert.ok(!plan.root.dependsOn.includes(layer.digest));
      assert.deepEqual(plan.notes, [`skipped ${reason} ${layer.digest} (${layer.mediaType}); use --include-foreign-layers to copy it`]);
      assert.equal(plan.root.bytes, node.bytes, 'the manifest is not changed');

      const all = planCopy(graphOf(node), opts({ includeForeignLayers: true }));
      assert.deepEqual(all.skipped, []);
      assert.deepEqual(all.notes, []);
      assert.ok(all.blobs.some((b) => b.digest === layer.digest));
      assert.ok(all.root.dependsOn.includes(layer.digest));
    });
  }

  test('a converted schema-1 image: the generated config is pushed inline, the root is not verbatim', () => {
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const converted = makeNode({ schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: { mediaType: MediaTypes.dockerConfig, size: config.length, digest: digestOf(config) }, layers: [blob('s1', MediaTypes.dockerLayerGzip)] });
    const original = fakeDigest('schema1-original');
    const graph = graphOf(converted, [], [], { generatedBlobs: new Map([[digestOf(config), config]]), convertedFrom: { digest: original, mediaType: MediaTypes.dockerSchema1Signed } });
    const plan = planCopy(graph, opts());
    assert.equal(plan.root.verbatim, false);
    assert.equal(plan.root.bytes, converted.bytes);
    assert.equal(plan.sourceDigest, original);
    assert.deepEqual(plan.blobs.map((b) => [b.digest, b.inline]), [[digestOf(config), config], [fakeDigest('s1'), undefined]]);
  });
});
