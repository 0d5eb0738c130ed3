import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import v8 from 'node:v8';
import vm from 'node:vm';
import { createGzip, gzipSync } from 'node:zlib';
import { ErrorCodes, ManifestError } from '../lib/errors.js';
import { digestOf } from '../lib/digest.js';
import { MediaTypes } from '../lib/manifest/media-types.js';
import { convertSchema1, GZIPPED_EMPTY_TAR_DIGEST, parseSchema1, schema1Layers, type Schema1Manifest } from '../lib/manifest/schema1.js';
import { diffIdOf } from '../lib/manifest/diff-id.js';
import { buildImage, inspectConfigRaw, inspectRaw, patchConfig, pushLayout, skopeo, startRegistry } from './support/index.js';

const sha = (text: string): string => `sha256:${createHash('sha256').update(text).digest('hex')}`;
const hex = (text: string): string => createHash('sha256').update(text).digest('hex');
const BLOB_A = sha('blob a');
const BLOB_B = sha('blob b');
const BLOB_C = sha('blob c');
const DIFF_A = sha('diff a');
const DIFF_B = sha('diff b');
const DIFF_C = sha('diff c');
const EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
/** The uncompressed empty tar (1024 zero bytes): diff_id of GZIPPED_EMPTY_TAR_DIGEST. */
const EMPTY_TAR_DIFF_ID = 'sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef';
/** docker/distribution's `gzippedEmptyTar` (manifest/schema1/config_builder.go). */
const GZIPPED_EMPTY_TAR = Buffer.from([
  31, 139, 8, 0, 0, 9, 110, 136, 0, 255, 98, 24, 5, 163, 96, 20, 140, 88, 0, 8, 0, 0, 255, 255, 46, 175, 181, 239, 0, 4, 0, 0,
]);

interface Step {
  blobSum: string;
  v1: Record<string, unknown>;
}

/** A schema-1 document from steps listed base-first (as a human reads a Dockerfile); emitted newest-first. */
function schema1Doc(baseFirst: Step[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  const newestFirst = [...baseFirst].reverse();
  return {
    schemaVersion: 1,
    name: 'library/app',
    tag: 'latest',
    architecture: 'amd64',
    fsLayers: newestFirst.map((step) => ({ blobSum: step.blobSum })),
    history: newestFirst.map((step) => ({ v1Compatibility: JSON.stringify(step.v1) })),
    ...extra,
  };
}

const bytesOf = (doc: unknown): Buffer => Buffer.from(JSON.stringify(doc, null, 3));

/** Steps with a proper v1 id/parent chain. */
function chain(specs: { blobSum: string; cmd?: string[] | string; throwaway?: boolean; extra?: Record<string, unknown> }[]): Step[] {
  let parent: string | undefined;
  return specs.map((spec, i) => {
    const id = hex(`id ${i}`);
    const v1: Record<string, unknown> = { id, created: `2016-01-0${i + 1}T10:00:00.123456789Z` };
    if (parent) v1.parent = parent;
    if (spec.cmd !== undefined) v1.container_config = { Cmd: spec.cmd };
    if (spec.throwaway !== undefined) v1.throwaway = spec.throwaway;
    Object.assign(v1, spec.extra);
    parent = id;
    return { blobSum: spec.blobSum, v1 };
  });
}

function expectManifestError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ManifestError, `expected a ManifestError, got ${String(err)}`);
    assert.equal(err.code, ErrorCodes.InvalidManifest);
    assert.match(err.message, pattern);
    return true;
  });
}

const configOf = (config: Buffer): Record<string, unknown> => JSON.parse(config.toString('utf8')) as Record<string, unknown>;

describe('parseSchema1 validation', () => {
  const good = (): Record<string, unknown> => schema1Doc(chain([{ blobSum: BLOB_A }, { blobSum: BLOB_B }]));
  const withV1 = (index: number, v1Compatibility: unknown): Record<string, unknown> => {
    const doc = good();
    (doc.history as { v1Compatibility: unknown }[])[index] = { v1Compatibility };
    return doc;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d]), /not valid UTF-8/],
    ['not JSON', Buffer.from('{"schemaVersion":1,'), /is not valid JSON/],
    ['a JSON array', bytesOf([]), /must be a JSON object, got an array/],
    ['schemaVersion 2', bytesOf({ ...good(), schemaVersion: 2 }), /schemaVersion must be 1, got a number 2/],
    ['schemaVersion missing', bytesOf({ ...good(), schemaVersion: undefined }), /schemaVersion must be 1/],
    ['an OCI "layers" field', bytesOf({ ...good(), layers: [] }), /"layers" field.*ambiguous/],
    ['an index "manifests" field', bytesOf({ ...good(), manifests: [] }), /"manifests" field/],
    ['fsLayers missing', bytesOf({ ...good(), fsLayers: undefined }), /fsLayers must be an array/],
    ['history not an array', bytesOf({ ...good(), history: {} }), /history must be an array, got an object/],
    ['no layers', bytesOf({ ...good(), fsLayers: [], history: [] }), /fsLayers is empty/],
    ['lengths differ', bytesOf({ ...good(), history: [{ v1Compatibility: '{}' }] }), /fsLayers has 2 entries but history has 1/],
    ['fsLayers entry not an object', bytesOf({ ...good(), fsLayers: [{ blobSum: BLOB_A }, 'x'] }), /fsLayers\[1\] must be an object/],
    ['blobSum missing', bytesOf({ ...good(), fsLayers: [{ blobSum: BLOB_A }, {}] }), /fsLayers\[1\]\.blobSum must be a digest string/],
    ['blobSum malformed', bytesOf({ ...good(), fsLayers: [{ blobSum: 'sha256:abc' }, { blobSum: BLOB_B }] }), /fsLayers\[0\]\.blobSum: invalid digest/],
    ['blobSum unknown algorithm', bytesOf({ ...good(), fsLayers: [{ blobSum: BLOB_A }, { blobSum: `md5:${'a'.repeat(32)}` }] }), /fsLayers\[1\]\.blobSum: .*unsupported algorithm/],
    ['history entry not an object', bytesOf({ ...good(), history: [{ v1Compatibility: '{}' }, null] }), /history\[1\] must be an object, got null/],
    ['v1Compatibility missing', bytesOf(withV1(0, undefined)), /history\[0\]\.v1Compatibility must be a string/],
    ['v1Compatibility not a string', bytesOf(withV1(1, { id: 'x' })), /history\[1\]\.v1Compatibility must be a string, got an object/],
    ['v1Compatibility not JSON', bytesOf(withV1(1, '{"id":')), /history\[1\]\.v1Compatibility is not valid JSON/],
    ['v1Compatibility a JSON array', bytesOf(withV1(0, '[1]')), /history\[0\]\.v1Compatibility must be a JSON object, got an array/],
    ['v1Compatibility a JSON string', bytesOf(withV1(0, '"x"')), /history\[0\]\.v1Compatibility must be a JSON object, got the string "x"/],
    ['throwaway not a boolean', bytesOf(withV1(1, '{"throwaway":"true"}')), /history\[1\]\.v1Compatibility\.throwaway must be a boolean/],
    ['created not RFC 3339', bytesOf(withV1(0, '{"created":"yesterday"}')), /history\[0\]\.v1Compatibility\.created must be an RFC 3339 timestamp/],
    ['created a number', bytesOf(withV1(0, '{"created":1}')), /\.created must be an RFC 3339 timestamp, got a number/],
    ['author not a string', bytesOf(withV1(1, '{"author":5}')), /history\[1\]\.v1Compatibility\.author must be a string/],
    ['Cmd of numbers', bytesOf(withV1(0, '{"container_config":{"Cmd":[1]}}')), /history\[0\]\.v1Compatibility\.container_config\.Cmd must be a string or an array of strings/],
    ['container_config not an object', bytesOf(withV1(0, '{"container_config":"x"}')), /container_config must be an object/],
    ['name not a string', bytesOf({ ...good(), name: 1 }), /name must be a string/],
    ['signatures not an array', bytesOf({ ...good(), signatures: {} }), /signatures must be an array/],
  ];
  for (const [name, input, pattern] of cases) {
    test(`rejects ${name}`, () => expectManifestError(() => parseSchema1(input), pattern));
  }

  test('messages say it is a schema 1 manifest', () => {
    expectManifestError(() => parseSchema1(bytesOf({ ...good(), schemaVersion: 2 })), /^schema 1 manifest: /);
  });

  test('accepts null for optional v1 fields, as Go does', () => {
    const doc = withV1(0, '{"created":null,"author":null,"throwaway":null,"container_config":{"Cmd":null}}');
    assert.equal(parseSchema1(bytesOf(doc)).history.length, 2);
  });
});

describe('signed and unsigned input', () => {
  const steps = chain([{ blobSum: BLOB_A, cmd: ['/bin/sh', '-c', '#(nop) ADD file:1 in /'] }, { blobSum: BLOB_B, cmd: ['/bin/sh', '-c', 'make'] }]);
  const unsigned = bytesOf(schema1Doc(steps));
  // A prettyjws manifest: the payload with a "signatures" member spliced in before the closing brace.
  const signature = {
    header: { jwk: { crv: 'P-256', kid: 'ABCD:EFGH', kty: 'EC', x: 'x', y: 'y' }, alg: 'ES256' },
    signature: 'c2lnbmF0dXJl',
    protected: 'eyJmb3JtYXRMZW5ndGgiOjEsImZvcm1hdFRhaWwiOiJDbjAiLCJ0aW1lIjoiMjAxNi0wMS0wMVQwMDowMDowMFoifQ',
  };
  const text = unsigned.toString('utf8');
  const signed = Buffer.from(`${text.slice(0, text.lastIndexOf('\n}'))},\n   "signatures": ${JSON.stringify([signature], null, 3)}\n}`);

  test('both parse, and only the signed one has signatures', () => {
    const a = parseSchema1(unsigned);
    const b = parseSchema1(signed);
    assert.equal(a.signatures, undefined);
    assert.deepEqual(b.signatures, [signature]);
    assert.deepEqual({ ...b, signatures: undefined }, { ...a, signatures: undefined });
    assert.equal(b.name, 'library/app');
    assert.equal(b.tag, 'latest');
    assert.equal(b.architecture, 'amd64');
  });

  test('both convert to the same image', () => {
    const layers = [
      { blobSum: BLOB_A, size: 10, diffId: DIFF_A },
      { blobSum: BLOB_B, size: 20, diffId: DIFF_B },
    ];
    const a = convertSchema1(parseSchema1(unsigned), layers);
    const b = convertSchema1(parseSchema1(signed), layers);
    assert.equal(a.manifestDigest, b.manifestDigest);
    assert.equal(a.configDigest, b.configDigest);
  });
});

describe('layer order and empty layers', () => {
  const cases: { name: string; steps: Step[]; layers: { blobSum: string; historyIndex: number }[]; empty: boolean[] }[] = [
    {
      name: 'reverses newest-first into base-first',
      steps: chain([{ blobSum: BLOB_A }, { blobSum: BLOB_B }, { blobSum: BLOB_C }]),
      layers: [
        { blobSum: BLOB_A, historyIndex: 2 },
        { blobSum: BLOB_B, historyIndex: 1 },
        { blobSum: BLOB_C, historyIndex: 0 },
      ],
      empty: [false, false, false],
    },
    {
      name: 'drops throwaway entries from the layers, keeps them in history',
      steps: chain([{ blobSum: BLOB_A }, { blobSum: GZIPPED_EMPTY_TAR_DIGEST, throwaway: true }, { blobSum: BLOB_B }, { blobSum: GZIPPED_EMPTY_TAR_DIGEST, throwaway: true }]),
      layers: [
        { blobSum: BLOB_A, historyIndex: 3 },
        { blobSum: BLOB_B, historyIndex: 1 },
      ],
      empty: [false, true, false, true],
    },
    {
      name: 'throwaway: false is a layer',
      steps: chain([{ blobSum: BLOB_A, throwaway: false }, { blobSum: BLOB_B }]),
      layers: [
        { blobSum: BLOB_A, historyIndex: 1 },
        { blobSum: BLOB_B, historyIndex: 0 },
      ],
      empty: [false, false],
    },
    {
      // docker and skopeo only look at `throwaway`: an old (pre-1.10) empty layer stays a layer.
      name: 'keeps the well-known empty gzipped tar when it is not throwaway (docker/skopeo)',
      steps: chain([{ blobSum: BLOB_A }, { blobSum: GZIPPED_EMPTY_TAR_DIGEST, extra: { Size: 0 } }]),
      layers: [
        { blobSum: BLOB_A, historyIndex: 1 },
        { blobSum: GZIPPED_EMPTY_TAR_DIGEST, historyIndex: 0 },
      ],
      empty: [false, false],
    },
    {
      name: 'keeps a repeated blobSum (different v1 ids) twice, in order',
      steps: chain([{ blobSum: BLOB_A }, { blobSum: BLOB_B }, { blobSum: BLOB_A }, { blobSum: BLOB_B }]),
      layers: [
        { blobSum: BLOB_A, historyIndex: 3 },
        { blobSum: BLOB_B, historyIndex: 2 },
        { blobSum: BLOB_A, historyIndex: 1 },
        { blobSum: BLOB_B, historyIndex: 0 },
      ],
      empty: [false, false, false, false],
    },
    {
      // docker/skopeo fixManifestLayers: a run of the same v1 id is one entry (the oldest is kept).
      name: 'collapses consecutive entries with the same v1 id',
      steps: (() => {
        const steps = chain([{ blobSum: BLOB_A }, { blobSum: BLOB_B }, { blobSum: BLOB_C }]);
        const dup = { blobSum: BLOB_B, v1: { ...(steps[1] as Step).v1 } };
        return [steps[0], steps[1], dup, dup, steps[2]] as Step[];
      })(),
      layers: [
        { blobSum: BLOB_A, historyIndex: 4 },
        { blobSum: BLOB_B, historyIndex: 3 },
        { blobSum: BLOB_C, historyIndex: 0 },
      ],
      empty: [false, false, false],
    },
    {
      name: 'does not collapse entries without ids',
      steps: [
        { blobSum: BLOB_A, v1: {} },
        { blobSum: BLOB_A, v1: {} },
      ],
      layers: [
        { blobSum: BLOB_A, historyIndex: 1 },
        { blobSum: BLOB_A, historyIndex: 0 },
      ],
      empty: [false, false],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const manifest = parseSchema1(bytesOf(schema1Doc(c.steps)));
      const layers = schema1Layers(manifest);
      assert.deepEqual(layers, c.layers);
      const diffIds = layers.map((_, i) => sha(`diff ${i}`));
      const converted = convertSchema1(
        manifest,
        layers.map((layer, i) => ({ blobSum: layer.blobSum, size: 100 + i, diffId: diffIds[i] as string })),
      );
      const config = configOf(converted.config);
      assert.deepEqual(config.rootfs, { type: 'layers', diff_ids: diffIds });
      const history = config.history as { empty_layer?: boolean }[];
      assert.deepEqual(
        history.map((h) => h.empty_layer === true),
        c.empty,
      );
      const schema2 = JSON.parse(converted.manifest.toString('utf8')) as { layers: { digest: string; size: number }[] };
      assert.deepEqual(
        schema2.layers.map((l) => [l.digest, l.size]),
        layers.map((l, i) => [l.blobSum, 100 + i]),
      );
    });
  }
});

describe('history', () => {
  test('created, author, created_by, comment, empty_layer, base-first, as docker marshals them', () => {
    const steps: Step[] = [
      { blobSum: BLOB_A, v1: { id: hex('1'), created: '2016-01-01T10:00:00.100000000Z', container_config: { Cmd: ['/bin/sh', '-c', '#(nop) ADD file:abc in /'] } } },
      {
        blobSum: GZIPPED_EMPTY_TAR_DIGEST,
        v1: { id: hex('2'), parent: hex('1'), created: '2016-01-02T10:00:00+00:00', author: 'Jane <jane@example.com>', throwaway: true, container_config: { Cmd: ['/bin/sh', '-c', '#(nop) MAINTAINER Jane'] } },
      },
      { blobSum: BLOB_B, v1: { id: hex('3'), parent: hex('2'), created: '2016-01-03T10:00:00.5+02:00', comment: 'imported', container_config: { Cmd: 'apt-get update && apt-get install -y x' } } },
      { blobSum: BLOB_C, v1: { id: hex('4'), parent: hex('3'), container_config: { Cmd: null } } },
    ];
    const manifest = parseSchema1(bytesOf(schema1Doc(steps)));
    const converted = convertSchema1(manifest, [
      { blobSum: BLOB_A, size: 1, diffId: DIFF_A },
      { blobSum: BLOB_B, size: 2, diffId: DIFF_B },
      { blobSum: BLOB_C, size: 3, diffId: DIFF_C },
    ]);
    const text = converted.config.toString('utf8');
    // Sorted keys: architecture, container_config, history, os, rootfs.
    const historyText = text.slice(text.indexOf('"history":') + '"history":'.length, text.indexOf(',"os":'));
    assert.equal(
      historyText,
      '[' +
        '{"created":"2016-01-01T10:00:00.1Z","created_by":"/bin/sh -c #(nop) ADD file:abc in /"},' +
        '{"created":"2016-01-02T10:00:00Z","author":"Jane \\u003cjane@example.com\\u003e","created_by":"/bin/sh -c #(nop) MAINTAINER Jane","empty_layer":true},' +
        '{"created":"2016-01-03T10:00:00.5+02:00","created_by":"apt-get update \\u0026\\u0026 apt-get install -y x","comment":"imported"},' +
        '{"created":"0001-01-01T00:00:00Z"}' +
        ']',
    );
    const history = configOf(converted.config).history as Record<string, unknown>[];
    assert.equal(history[2]?.created_by, 'apt-get update && apt-get install -y x');
  });
});

describe('config', () => {
  const top = {
    architecture: 'arm64',
    config: { Cmd: ['sh'], Env: ['PATH=/usr/bin'], Memory: 9223372036854775807, CpuShares: 1.5e0 },
    container: 'c0ffee',
    container_config: { Cmd: ['/bin/sh', '-c', '#(nop) CMD ["sh"]'], Hostname: 'h' },
    created: '2016-01-02T10:00:00.000000000Z',
    docker_version: '1.9.1',
    id: hex('2'),
    parent: hex('1'),
    parent_id: 'sha256:x',
    layer_id: 'sha256:y',
    Size: 0,
    throwaway: true,
    os: 'linux',
    label: 'caf\\u00e9 <b>',
  };
  // Raw text, with whitespace and escapes a JS round trip would lose.
  const topRaw = JSON.stringify(top, null, 2)
    .replace('"caf\\\\u00e9 <b>"', '"caf\\u00e9 <b>"')
    .replace('1.5', '1.50')
    .replace(String(top.config.Memory), '9223372036854775807');

  function convertTop(raw: string, architecture?: string): { text: string; config: Record<string, unknown> } {
    const doc = schema1Doc(chain([{ blobSum: BLOB_A }]));
    doc.history = [{ v1Compatibility: raw }, ...(doc.history as unknown[])];
    doc.fsLayers = [{ blobSum: GZIPPED_EMPTY_TAR_DIGEST }, ...(doc.fsLayers as unknown[])];
    if (architecture === undefined) delete doc.architecture;
    else doc.architecture = architecture;
    const converted = convertSchema1(parseSchema1(bytesOf(doc)), [{ blobSum: BLOB_A, size: 1, diffId: DIFF_A }]);
    return { text: converted.config.toString('utf8'), config: configOf(converted.config) };
  }

  test('drops the v1-only fields and keeps the rest', () => {
    const { config } = convertTop(topRaw);
    for (const key of ['id', 'parent', 'parent_id', 'layer_id', 'Size', 'throwaway']) assert.equal(key in config, false, key);
    for (const key of ['architecture', 'config', 'container', 'container_config', 'created', 'docker_version', 'os', 'label', 'rootfs', 'history']) {
      assert.ok(key in config, key);
    }
    assert.equal(config.architecture, 'arm64');
    assert.equal(config.created, '2016-01-02T10:00:00.000000000Z', 'the top-level created is kept verbatim');
  });

  test('is compact, with sorted keys and every value kept token for token (Go RawMessage)', () => {
    const { text } = convertTop(topRaw);
    assert.equal(
      text,
      '{"architecture":"arm64",' +
        '"config":{"Cmd":["sh"],"Env":["PATH=/usr/bin"],"Memory":9223372036854775807,"CpuShares":1.50},' +
        '"container":"c0ffee",' +
        '"container_config":{"Cmd":["/bin/sh","-c","#(nop) CMD [\\"sh\\"]"],"Hostname":"h"},' +
        '"created":"2016-01-02T10:00:00.000000000Z",' +
        '"docker_version":"1.9.1",' +
        '"history":[{"created":"2016-01-01T10:00:00.123456789Z"},{"created":"2016-01-02T10:00:00Z","created_by":"/bin/sh -c #(nop) CMD [\\"sh\\"]","empty_layer":true}],' +
        '"label":"caf\\u00e9 \\u003cb\\u003e",' +
        '"os":"linux",' +
        `"rootfs":{"type":"layers","diff_ids":["${DIFF_A}"]}}`,
    );
  });

  test('defaults os to linux and takes architecture from the manifest when the config has none', () => {
    const { config } = convertTop(JSON.stringify({ id: hex('x'), throwaway: true }), 'ppc64le');
    assert.equal(config.os, 'linux');
    assert.equal(config.architecture, 'ppc64le');
    const windows = convertTop(JSON.stringify({ os: 'windows', architecture: 'amd64', throwaway: true }), 'ppc64le').config;
    assert.equal(windows.os, 'windows');
    assert.equal(windows.architecture, 'amd64');
    const none = convertTop('{"throwaway":true}').config;
    assert.equal('architecture' in none, false);
  });

  test('is built from the newest entry, not the base', () => {
    const steps = chain([
      { blobSum: BLOB_A, extra: { config: { Env: ['BASE=1'] } } },
      { blobSum: BLOB_B, extra: { config: { Env: ['TOP=1'] } } },
    ]);
    const converted = convertSchema1(parseSchema1(bytesOf(schema1Doc(steps))), [
      { blobSum: BLOB_A, size: 1, diffId: DIFF_A },
      { blobSum: BLOB_B, size: 2, diffId: DIFF_B },
    ]);
    assert.deepEqual((configOf(converted.config).config as { Env: string[] }).Env, ['TOP=1']);
  });

  test('survives awkward raw JSON: strings with brackets and escapes, nesting, exponents, repeated keys', () => {
    const raws = [
      '{ "throwaway" : true , "a" : "}{][,:" , "b" : [ [ ] , { } , "\\\\" , "\\"" ] , "c" : { "d" : [ 1e3 , -0.5E-2 , true , false , null ] } }',
      '{"throwaway":true,"x":1,"x":{"y":"last wins"}}',
      '{"throwaway":true,"k\\u00e9y":"\\ud83d\\ude00 \u2028","e":""}',
      '\n\t{\r\n"throwaway":true}\n',
    ];
    for (const raw of raws) {
      const { config } = convertTop(raw, 'amd64');
      const expected = JSON.parse(raw) as Record<string, unknown>;
      delete expected.throwaway;
      expected.os = 'linux';
      expected.architecture = 'amd64';
      const { rootfs: _rootfs, history: _history, ...rest } = config;
      assert.deepEqual(rest, expected, raw);
    }
  });

  test('is deterministic', () => {
    assert.equal(convertTop(topRaw).text, convertTop(topRaw).text);
  });
});

describe('schema-2 manifest', () => {
  test('is docker schema 2, compact as skopeo writes it, referencing the config', () => {
    const manifest = parseSchema1(bytesOf(schema1Doc(chain([{ blobSum: BLOB_A }, { blobSum: BLOB_B }]))));
    const converted = convertSchema1(manifest, [
      { blobSum: BLOB_A, size: 1234, diffId: DIFF_A },
      { blobSum: BLOB_B, size: 5, diffId: DIFF_B },
    ]);
    assert.equal(converted.configDigest, digestOf(converted.config));
    assert.equal(converted.manifestDigest, digestOf(converted.manifest));
    const expected =
      `{"schemaVersion":2,"mediaType":"${MediaTypes.dockerManifest}",` +
      `"config":{"mediaType":"${MediaTypes.dockerConfig}","size":${converted.config.length},"digest":"${converted.configDigest}"},` +
      `"layers":[{"mediaType":"${MediaTypes.dockerLayerGzip}","size":1234,"digest":"${BLOB_A}"},` +
      `{"mediaType":"${MediaTypes.dockerLayerGzip}","size":5,"digest":"${BLOB_B}"}]}`;
    assert.equal(converted.manifest.toString('utf8'), expected);
  });

  test('the layer list of a manifest whose every entry is throwaway is empty', () => {
    const manifest = parseSchema1(bytesOf(schema1Doc(chain([{ blobSum: GZIPPED_EMPTY_TAR_DIGEST, throwaway: true }]))));
    assert.deepEqual(schema1Layers(manifest), []);
    const converted = convertSchema1(manifest, []);
    assert.deepEqual(configOf(converted.config).rootfs, { type: 'layers', diff_ids: [] });
    assert.deepEqual((JSON.parse(converted.manifest.toString('utf8')) as { layers: unknown[] }).layers, []);
  });
});

describe('convertSchema1 input checks', () => {
  const manifest = parseSchema1(bytesOf(schema1Doc(chain([{ blobSum: BLOB_A }, { blobSum: BLOB_B }]))));
  const cases: [string, { blobSum: string; size: number; diffId: string }[], RegExp][] = [
    ['too few layers', [{ blobSum: BLOB_A, size: 1, diffId: DIFF_A }], /has 2 layers to convert, 1 were given/],
    [
      'layers in schema-1 order',
      [
        { blobSum: BLOB_B, size: 1, diffId: DIFF_B },
        { blobSum: BLOB_A, size: 1, diffId: DIFF_A },
      ],
      /layer 0 is sha256:.*, expected sha256:.*fsLayers\[1\]/,
    ],
    [
      'a bad diff_id',
      [
        { blobSum: BLOB_A, size: 1, diffId: 'sha256:nope' },
        { blobSum: BLOB_B, size: 1, diffId: DIFF_B },
      ],
      /layer 0 .* diff_id: invalid digest/,
    ],
    [
      'a negative size',
      [
        { blobSum: BLOB_A, size: 1, diffId: DIFF_A },
        { blobSum: BLOB_B, size: -1, diffId: DIFF_B },
      ],
      /layer 1 .* invalid size -1/,
    ],
  ];
  for (const [name, layers, pattern] of cases) {
    test(`rejects ${name}`, () => expectManifestError(() => convertSchema1(manifest, layers), pattern));
  }

  test('re-validates a manifest built by hand', () => {
    const bad = { schemaVersion: 1, fsLayers: [{ blobSum: BLOB_A }], history: [{ v1Compatibility: 'nope' }] } as Schema1Manifest;
    expectManifestError(() => schema1Layers(bad), /history\[0\]\.v1Compatibility is not valid JSON/);
    expectManifestError(() => convertSchema1(bad, []), /history\[0\]\.v1Compatibility is not valid JSON/);
  });
});

/** A stream that yields the given buffers as separate chunks. */
function streamOf(...chunks: Buffer[]): Readable {
  return Readable.from(chunks, { objectMode: false });
}

/** Splits a buffer into chunks of `size` bytes. */
function split(buffer: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buffer.length; i += size) out.push(buffer.subarray(i, i + size));
  return out;
}

describe('diffIdOf', () => {
  const tarA = Buffer.concat([Buffer.from('pretend tar, member one\n'), Buffer.alloc(1000, 7)]);
  const tarB = Buffer.from('and member two\n'.repeat(100));
  const gzA = gzipSync(tarA);
  const gzB = gzipSync(tarB);

  test('a single gzip member', async () => {
    assert.deepEqual(await diffIdOf(streamOf(gzA)), { diffId: digestOf(tarA), compressedSize: gzA.length });
  });

  test('a single member in tiny chunks (magic split across chunks)', async () => {
    assert.deepEqual(await diffIdOf(streamOf(...split(gzA, 1))), { diffId: digestOf(tarA), compressedSize: gzA.length });
  });

  test('two concatenated members: the diff_id covers both', async () => {
    const both = Buffer.concat([gzA, gzB]);
    const result = await diffIdOf(streamOf(...split(both, 7)));
    assert.equal(result.diffId, digestOf(Buffer.concat([tarA, tarB])));
    assert.notEqual(result.diffId, digestOf(tarA));
    assert.equal(result.compressedSize, both.length);
  });

  test("docker's gzipped empty tar is 1024 zero bytes", async () => {
    assert.equal(digestOf(GZIPPED_EMPTY_TAR), GZIPPED_EMPTY_TAR_DIGEST);
    assert.deepEqual(await diffIdOf(streamOf(GZIPPED_EMPTY_TAR)), { diffId: EMPTY_TAR_DIFF_ID, compressedSize: GZIPPED_EMPTY_TAR.length });
  });

  test('an uncompressed layer: the digest of the bytes as they are (docker DecompressStream)', async () => {
    const plain = Buffer.concat([Buffer.from('etc/\0'), Buffer.alloc(2000)]);
    assert.deepEqual(await diffIdOf(streamOf(...split(plain, 3))), { diffId: digestOf(plain), compressedSize: plain.length });
  });

  test('a short uncompressed blob (fewer bytes than the sniff window)', async () => {
    assert.deepEqual(await diffIdOf(streamOf(Buffer.from('abc'))), { diffId: digestOf('abc'), compressedSize: 3 });
  });

  test('an empty stream: the digest of no bytes', async () => {
    assert.deepEqual(await diffIdOf(streamOf()), { diffId: EMPTY_SHA256, compressedSize: 0 });
  });

  const bad: [string, Buffer[], RegExp][] = [
    ['a truncated gzip member', [gzA.subarray(0, gzA.length - 4)], /layer is not valid gzip: unexpected end of file/],
    ['a gzip header only', [Buffer.from([0x1f, 0x8b])], /layer is not valid gzip/],
    ['corrupt deflate data', [Buffer.concat([gzA.subarray(0, 10), Buffer.alloc(64, 0xff)])], /layer is not valid gzip/],
    ['garbage after a member', [gzA, Buffer.from('garbage!')], /layer is not valid gzip: incorrect header check/],
    ['a truncated second member', [gzA, gzB.subarray(0, 12)], /layer is not valid gzip/],
    ['zstd', [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0])], /zstd-compressed/],
    ['xz', [Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2])], /xz-compressed/],
    ['bzip2', [Buffer.from('BZh91AY&SY')], /bzip2-compressed/],
  ];
  for (const [name, chunks, pattern] of bad) {
    test(`rejects ${name} with a ManifestError`, async () => {
      await assert.rejects(diffIdOf(streamOf(...chunks)), (err: unknown) => {
        assert.ok(err instanceof ManifestError, `expected a ManifestError, got ${String(err)}`);
        assert.equal(err.code, ErrorCodes.InvalidManifest);
        assert.match(err.message, pattern);
        return true;
      });
    });
  }

  test('an error of the source stream rejects unchanged', async () => {
    const boom = new Error('connection reset');
    async function* source(): AsyncGenerator<Buffer> {
      yield gzA.subarray(0, 100);
      throw boom;
    }
    await assert.rejects(diffIdOf(Readable.from(source())), (err: unknown) => err === boom);
  });

  test('streams a large layer without holding it', async () => {
    // 64 MiB of uncompressed data (a tiny gzip), read 64 KiB at a time; the live heap outside V8
    // (Buffers), sampled after a forced GC while the layer flows, must stay far below the layer.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const block = Buffer.alloc(1 << 16, 0x61);
    const blocks = 1024;
    const hash = createHash('sha256');
    for (let i = 0; i < blocks; i++) hash.update(block);
    gc();
    const before = process.memoryUsage().arrayBuffers;
    let peak = 0;
    const source = Readable.from(
      (async function* () {
        for (let i = 0; i < blocks; i++) {
          if (i % 128 === 127) {
            gc();
            peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
          }
          yield block;
        }
      })(),
    ).pipe(createGzip());
    const result = await diffIdOf(source);
    assert.equal(result.diffId, `sha256:${hash.digest('hex')}`);
    assert.ok(peak < 16 << 20, `live buffers stayed far below the layer size (peak ${peak} bytes over the start)`);
  });
});

describe('end to end', () => {
  test('layers gzipped, diff_ids computed by diffIdOf, converted', async () => {
    const tars = [Buffer.from('base layer'.repeat(50)), Buffer.from('top layer'.repeat(50))];
    const blobs = tars.map((tar) => gzipSync(tar));
    const steps = chain([
      { blobSum: digestOf(blobs[0] as Buffer), cmd: ['/bin/sh', '-c', '#(nop) ADD file:x in /'] },
      { blobSum: GZIPPED_EMPTY_TAR_DIGEST, cmd: ['/bin/sh', '-c', '#(nop) ENV A=1'], throwaway: true },
      { blobSum: digestOf(blobs[1] as Buffer), cmd: ['/bin/sh', '-c', 'echo hi > /x'] },
    ]);
    const manifest = parseSchema1(bytesOf(schema1Doc(steps)));
    const byDigest = new Map(blobs.map((blob) => [digestOf(blob), blob]));
    const layers = [];
    for (const layer of schema1Layers(manifest)) {
      const { diffId, compressedSize } = await diffIdOf(streamOf(byDigest.get(layer.blobSum) as Buffer));
      layers.push({ blobSum: layer.blobSum, size: compressedSize, diffId });
    }
    const converted = convertSchema1(manifest, layers);
    const config = configOf(converted.config);
    assert.deepEqual(config.rootfs, { type: 'layers', diff_ids: tars.map((tar) => digestOf(tar)) });
    assert.deepEqual(
      (config.history as { created_by: string }[]).map((h) => h.created_by),
      ['/bin/sh -c #(nop) ADD file:x in /', '/bin/sh -c #(nop) ENV A=1', '/bin/sh -c echo hi > /x'],
    );
    const schema2 = JSON.parse(converted.manifest.toString('utf8')) as { layers: { digest: string; size: number }[] };
    assert.deepEqual(
      schema2.layers.map((l) => [l.digest, l.size]),
      blobs.map((blob) => [digestOf(blob), blob.length]),
    );
  });
});

describe('against skopeo (real registry)', () => {
  test('config and manifest are byte for byte what `skopeo copy --format v2s2` writes', async (t) => {
    const registry = await startRegistry({ schema1: true });
    t.after(() => registry.stop());
    // Four layers, one of them empty and one repeated; three history entries that made no layer
    // (pushed as schema 1 they become throwaway entries with the gzipped empty tar); strings
    // that Go escapes (<, >, &) and a timestamp Go re-formats (.120Z -> .12Z).
    const image = await buildImage({
      tag: 'v1',
      layers: [[{ path: '/hello.txt', content: 'hello schema1\n' }], [], [{ path: '/b/c.txt', content: 'x'.repeat(5000) }], [{ path: '/hello.txt', content: 'hello schema1\n' }]],
    });
    await patchConfig(image.layout, image.tag, {
      author: 'Jane <jane@example.com>',
      config: { Env: ['A=1&B=2'], Cmd: ['sh', '-c', 'echo <hi> && true'], Labels: { x: 'café' } },
      history: [
        { created: '2024-01-01T00:00:00.120Z', created_by: '/bin/sh -c #(nop) ADD file:x in /', author: 'A <a@b>' },
        { created: '2024-01-02T00:00:00Z', created_by: '/bin/sh -c #(nop) ENV A=1&B=2', empty_layer: true },
        { created: '2024-01-03T00:00:00Z', created_by: 'RUN apt-get update && apt-get install -y <x>', comment: 'c' },
        { created: '2024-01-04T00:00:00Z', created_by: 'RUN mkdir /b' },
        { created: '2024-01-05T00:00:00Z', created_by: 'MAINTAINER x', empty_layer: true },
        { created: '2024-01-06T00:00:00Z', created_by: 'COPY hello' },
        { created: '2024-01-07T00:00:00Z', created_by: 'CMD', empty_layer: true },
      ],
    });
    await pushLayout(image.ref, `${registry.host}/legacy/app:v1`, { format: 'v2s1' });

    const res = await fetch(`${registry.url}/v2/legacy/app/manifests/v1`, { headers: { accept: MediaTypes.dockerSchema1Signed } });
    assert.equal(res.status, 200);
    const schema1 = parseSchema1(Buffer.from(await res.arrayBuffer()));
    assert.ok(schema1.signatures?.length, 'the registry serves it signed');
    assert.ok(schema1.fsLayers.some((l) => l.blobSum === GZIPPED_EMPTY_TAR_DIGEST), 'throwaway entries reference the gzipped empty tar');
    const layers = [];
    for (const layer of schema1Layers(schema1)) {
      const blob = await fetch(`${registry.url}/v2/legacy/app/blobs/${layer.blobSum}`);
      assert.equal(blob.status, 200);
      const { diffId, compressedSize } = await diffIdOf(Readable.fromWeb(blob.body as WebReadableStream<Uint8Array>));
      layers.push({ blobSum: layer.blobSum, size: compressedSize, diffId });
    }
    assert.equal(layers.length, 4);
    const ours = convertSchema1(schema1, layers);

    await skopeo(['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', '--format', 'v2s2', `docker://${registry.host}/legacy/app:v1`, `docker://${registry.host}/converted/app:v1`]);
    const theirConfig = await inspectConfigRaw(`${registry.host}/converted/app:v1`);
    const theirManifest = await inspectRaw(`${registry.host}/converted/app:v1`);
    assert.equal(ours.config.toString('utf8'), theirConfig.toString('utf8'));
    assert.equal(ours.manifest.toString('utf8'), theirManifest.toString('utf8'));
    assert.equal(ours.manifestDigest, digestOf(theirManifest));
  });
});
