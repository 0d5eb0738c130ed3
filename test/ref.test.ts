import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidReferenceError } from '../lib/errors.js';
import {
  DOCKER_HUB_REGISTRY,
  familiarReference,
  formatReference,
  isDockerHub,
  isValidTag,
  manifestReference,
  normaliseRegistry,
  parseReference,
  parseRepository,
  withDigest,
  withTag,
  type Reference,
} from '../lib/ref/index.js';

const S256 = `sha256:${'a'.repeat(64)}`;
const S256B = `sha256:${'0123456789abcdef'.repeat(4)}`;
const S512 = `sha512:${'b'.repeat(128)}`;
const HUB = DOCKER_HUB_REGISTRY;

/** [input, registry, repository, tag, digest, canonical string] */
type Good = [string, string, string, string | undefined, string | undefined, string];

const good: Good[] = [
  // Docker Hub, familiar names
  ['alpine', HUB, 'library/alpine', 'latest', undefined, `${HUB}/library/alpine:latest`],
  ['alpine:3.20', HUB, 'library/alpine', '3.20', undefined, `${HUB}/library/alpine:3.20`],
  ['library/alpine', HUB, 'library/alpine', 'latest', undefined, `${HUB}/library/alpine:latest`],
  ['docker.io/alpine', HUB, 'library/alpine', 'latest', undefined, `${HUB}/library/alpine:latest`],
  ['docker.io/library/alpine', HUB, 'library/alpine', 'latest', undefined, `${HUB}/library/alpine:latest`],
  ['index.docker.io/alpine:edge', HUB, 'library/alpine', 'edge', undefined, `${HUB}/library/alpine:edge`],
  ['index.docker.io/library/alpine', HUB, 'library/alpine', 'latest', undefined, `${HUB}/library/alpine:latest`],
  ['registry-1.docker.io/alpine', HUB, 'library/alpine', 'latest', undefined, `${HUB}/library/alpine:latest`],
  ['registry-1.docker.io/library/alpine:3', HUB, 'library/alpine', '3', undefined, `${HUB}/library/alpine:3`],
  ['Docker.IO/alpine', HUB, 'library/alpine', 'latest', undefined, `${HUB}/library/alpine:latest`],
  ['user/app', HUB, 'user/app', 'latest', undefined, `${HUB}/user/app:latest`],
  ['user/app:1', HUB, 'user/app', '1', undefined, `${HUB}/user/app:1`],
  ['docker.io/user/app:1.2.3', HUB, 'user/app', '1.2.3', undefined, `${HUB}/user/app:1.2.3`],
  ['user/team/app', HUB, 'user/team/app', 'latest', undefined, `${HUB}/user/team/app:latest`],
  ['library/alpine/extra', HUB, 'library/alpine/extra', 'latest', undefined, `${HUB}/library/alpine/extra:latest`],
  ['docker.io/docker.io', HUB, 'library/docker.io', 'latest', undefined, `${HUB}/library/docker.io:latest`],
  // a single element is always a Docker Hub name, even when it looks like a host (docker's rule)
  ['localhost', HUB, 'library/localhost', 'latest', undefined, `${HUB}/library/localhost:latest`],
  ['localhost:5000', HUB, 'library/localhost', '5000', undefined, `${HUB}/library/localhost:5000`],
  ['example.com', HUB, 'library/example.com', 'latest', undefined, `${HUB}/library/example.com:latest`],
  // digests
  [`alpine@${S256}`, HUB, 'library/alpine', undefined, S256, `${HUB}/library/alpine@${S256}`],
  [`alpine:3@${S256}`, HUB, 'library/alpine', '3', S256, `${HUB}/library/alpine:3@${S256}`],
  [`alpine@${S512}`, HUB, 'library/alpine', undefined, S512, `${HUB}/library/alpine@${S512}`],
  [`ghcr.io/o/r:v1@${S256B}`, 'ghcr.io', 'o/r', 'v1', S256B, `ghcr.io/o/r:v1@${S256B}`],
  [`localhost:5000/x@${S256}`, 'localhost:5000', 'x', undefined, S256, `localhost:5000/x@${S256}`],
  // other registries
  ['ghcr.io/owner/repo', 'ghcr.io', 'owner/repo', 'latest', undefined, 'ghcr.io/owner/repo:latest'],
  ['quay.io/coreos/etcd:v3.5.0', 'quay.io', 'coreos/etcd', 'v3.5.0', undefined, 'quay.io/coreos/etcd:v3.5.0'],
  ['registry.example.com/app', 'registry.example.com', 'app', 'latest', undefined, 'registry.example.com/app:latest'],
  ['Registry.Example.COM/team/app:Tag_1', 'registry.example.com', 'team/app', 'Tag_1', undefined, 'registry.example.com/team/app:Tag_1'],
  ['localhost/x', 'localhost', 'x', 'latest', undefined, 'localhost/x:latest'],
  ['localhost:5000/x', 'localhost:5000', 'x', 'latest', undefined, 'localhost:5000/x:latest'],
  ['LOCALHOST:5000/x', 'localhost:5000', 'x', 'latest', undefined, 'localhost:5000/x:latest'],
  ['host:5000/a/b:tag', 'host:5000', 'a/b', 'tag', undefined, 'host:5000/a/b:tag'],
  ['host:05000/a', 'host:5000', 'a', 'latest', undefined, 'host:5000/a:latest'],
  ['127.0.0.1:5000/x', '127.0.0.1:5000', 'x', 'latest', undefined, '127.0.0.1:5000/x:latest'],
  ['127.0.0.1/x:1', '127.0.0.1', 'x', '1', undefined, '127.0.0.1/x:1'],
  ['[::1]:5000/x', '[::1]:5000', 'x', 'latest', undefined, '[::1]:5000/x:latest'],
  ['[::1]/x', '[::1]', 'x', 'latest', undefined, '[::1]/x:latest'],
  ['[2001:DB8::1]:443/a/b:c', '[2001:db8::1]:443', 'a/b', 'c', undefined, '[2001:db8::1]:443/a/b:c'],
  ['[2001:db8:0:0:0:0:0:1]/x', '[2001:db8:0:0:0:0:0:1]', 'x', 'latest', undefined, '[2001:db8:0:0:0:0:0:1]/x:latest'],
  ['my-registry.local:65535/x', 'my-registry.local:65535', 'x', 'latest', undefined, 'my-registry.local:65535/x:latest'],
  ['xn--bcher-kva.example/a', 'xn--bcher-kva.example', 'a', 'latest', undefined, 'xn--bcher-kva.example/a:latest'],
  ['1.2.3.4.5/a', '1.2.3.4.5', 'a', 'latest', undefined, '1.2.3.4.5/a:latest'],
  ['docker.io:443/a', 'docker.io:443', 'a', 'latest', undefined, 'docker.io:443/a:latest'],
  // path-component separators
  ['x/a.b_c__d---e/f-g', HUB, 'x/a.b_c__d---e/f-g', 'latest', undefined, `${HUB}/x/a.b_c__d---e/f-g:latest`],
  ['a.b_c__d---e', HUB, 'library/a.b_c__d---e', 'latest', undefined, `${HUB}/library/a.b_c__d---e:latest`],
  ['0/1', HUB, '0/1', 'latest', undefined, `${HUB}/0/1:latest`],
  ['a', HUB, 'library/a', 'latest', undefined, `${HUB}/library/a:latest`],
  ['ecr.aws/a/b/c/d/e/f', 'ecr.aws', 'a/b/c/d/e/f', 'latest', undefined, 'ecr.aws/a/b/c/d/e/f:latest'],
  // tags
  ['app:_', HUB, 'library/app', '_', undefined, `${HUB}/library/app:_`],
  ['app:A-b.C_d', HUB, 'library/app', 'A-b.C_d', undefined, `${HUB}/library/app:A-b.C_d`],
  ['app:latest', HUB, 'library/app', 'latest', undefined, `${HUB}/library/app:latest`],
  [`app:${'t'.repeat(128)}`, HUB, 'library/app', 't'.repeat(128), undefined, `${HUB}/library/app:${'t'.repeat(128)}`],
  ['app:123', HUB, 'library/app', '123', undefined, `${HUB}/library/app:123`],
  // 63 hex is a name, not an image ID
  ['a'.repeat(63), HUB, `library/${'a'.repeat(63)}`, 'latest', undefined, `${HUB}/library/${'a'.repeat(63)}:latest`],
  // length: `docker.io/library/` (18) + 237 = 255 exactly
  ['a'.repeat(237), HUB, `library/${'a'.repeat(237)}`, 'latest', undefined, `${HUB}/library/${'a'.repeat(237)}:latest`],
  [`h.io/${'a'.repeat(250)}`, 'h.io', 'a'.repeat(250), 'latest', undefined, `h.io/${'a'.repeat(250)}:latest`],
];

/** [input, part, reason pattern] */
type Bad = [string, string, RegExp];

const bad: Bad[] = [
  ['', 'reference', /^is empty$/],
  [' alpine', 'reference', /whitespace/],
  ['alpine ', 'reference', /whitespace/],
  ['al pine', 'reference', /whitespace/],
  ['alpine\t:1', 'reference', /whitespace/],
  ['https://ghcr.io/a/b', 'reference', /URL scheme \("https:\/\/"\)/],
  ['a'.repeat(64), 'repository', /64-character hexadecimal/],
  ['alpine/', 'repository', /must not end with "\/"/],
  ['ghcr.io/a/', 'repository', /must not end with "\/"/],
  ['/alpine', 'repository', /must not start with "\/"/],
  ['a//b', 'repository', /must not contain "\/\/"/],
  ['docker.io//alpine', 'repository', /must not contain "\/\/"/],
  ['docker.io/', 'repository', /is missing after "docker\.io\/"/],
  ['ghcr.io/:tag', 'repository', /is missing/],
  [':tag', 'repository', /^is missing$/],
  [`@${S256}`, 'repository', /^is missing$/],
  ['Alpine', 'repository', /must be lowercase: "Alpine"/],
  ['ghcr.io/Owner/repo', 'repository', /must be lowercase: "Owner"/],
  ['MyOrg/app', 'repository', /must be lowercase: "MyOrg" \(a registry host needs/],
  ['user/App:1', 'repository', /must be lowercase: "App"$/],
  ['-alpine', 'repository', /"-alpine" must start with a lowercase letter or digit/],
  ['.alpine', 'repository', /"\.alpine" must start with a lowercase letter or digit/],
  ['user/_app', 'repository', /"_app" must start/],
  ['alpine-', 'repository', /"alpine-" must end with a lowercase letter or digit/],
  ['a..b', 'repository', /invalid separator "\.\."/],
  ['a___b', 'repository', /invalid separator "___"/],
  ['a._b', 'repository', /invalid separator "\._"/],
  ['a+b', 'repository', /invalid character "\+"/],
  ['ghcr.io/a/é', 'repository', /invalid character "é"/],
  ['a'.repeat(238), 'repository', /name is longer than 255 characters \(256/],
  [`h.io/${'a'.repeat(251)}`, 'repository', /longer than 255/],
  ['alpine:', 'tag', /is empty after ":"/],
  ['ghcr.io/a/b:', 'tag', /is empty after ":"/],
  ['alpine:-1', 'tag', /must start with a letter, digit or underscore: "-1"/],
  ['alpine:.1', 'tag', /must start with a letter, digit or underscore/],
  ['alpine:v1+meta', 'tag', /invalid character "\+"/],
  ['alpine:a:b', 'repository', /invalid character ":"/],
  [`alpine:${'t'.repeat(129)}`, 'tag', /is longer than 128 characters/],
  ['alpine@', 'digest', /is missing after "@"/],
  ['alpine:3@', 'digest', /is missing after "@"/],
  ['alpine@sha256:abc', 'digest', /sha256 needs 64 lowercase hex/],
  [`alpine@sha256:${'a'.repeat(65)}`, 'digest', /sha256 needs 64 lowercase hex/],
  [`alpine@sha256:${'A'.repeat(64)}`, 'digest', /lowercase hex/],
  [`alpine@sha512:${'b'.repeat(64)}`, 'digest', /sha512 needs 128 lowercase hex/],
  [`alpine@md5:${'a'.repeat(32)}`, 'digest', /unsupported algorithm "md5"/],
  ['alpine@latest', 'digest', /expected algorithm:hex/],
  [`alpine@${S256}@${S256}`, 'digest', /expected algorithm:hex/],
  ['host:abc/x', 'registry', /invalid port "abc"/],
  ['host:/x', 'registry', /empty port/],
  ['host:0/x', 'registry', /invalid port 0 \(must be 1-65535\)/],
  ['host:65536/x', 'registry', /invalid port 65536/],
  [':5000/x', 'registry', /no host name/],
  ['-host.io/x', 'registry', /invalid domain component "-host"/],
  ['host-.io/x', 'registry', /invalid domain component "host-"/],
  ['ho_st.io/x', 'registry', /invalid domain component "ho_st"/],
  // a first component with "." is a host (docker's rule), so path-only separators fail there
  ['a.b_c/x', 'registry', /invalid domain component "b_c"/],
  ['host..io/x', 'registry', /empty domain component/],
  ['.io/x', 'registry', /empty domain component/],
  ['::1/x', 'registry', /must be in brackets/],
  ['[::1/x', 'registry', /unterminated "\["/],
  ['[::g]:5000/x', 'registry', /not a valid IPv6 address/],
  ['[1:2:3:4:5:6:7:8:9]/x', 'registry', /not a valid IPv6 address/],
  ['[fe80::1%25eth0]/x', 'registry', /not a valid IPv6 address/],
  ['[::1]5000/x', 'registry', /unexpected text after the IPv6 address/],
];

function catchRef(fn: () => unknown): InvalidReferenceError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof InvalidReferenceError, `expected InvalidReferenceError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected an InvalidReferenceError');
}

function expected(registry: string, repository: string, tag?: string, digest?: string): Reference {
  const ref: Reference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

describe('parseReference: valid references', () => {
  assert.ok(good.length >= 40);
  for (const [input, registry, repository, tag, digest, canonical] of good) {
    test(JSON.stringify(input.length > 80 ? `${input.slice(0, 60)}…(${input.length})` : input), () => {
      const ref = parseReference(input);
      assert.deepEqual(ref, expected(registry, repository, tag, digest));
      if (tag === undefined) assert.equal('tag' in ref, false);
      if (digest === undefined) assert.equal('digest' in ref, false);
      assert.equal(formatReference(ref), canonical);
      // canonical form round-trips and is a fixed point
      assert.deepEqual(parseReference(canonical), ref);
      assert.equal(formatReference(parseReference(canonical)), canonical);
      // the familiar form reads back as the same reference
      assert.deepEqual(parseReference(familiarReference(ref)), ref);
    });
  }
});

describe('parseReference: invalid references', () => {
  assert.ok(bad.length >= 25);
  for (const [input, part, reason] of bad) {
    test(`${JSON.stringify(input.length > 80 ? `${input.slice(0, 60)}…(${input.length})` : input)} -> ${part}`, () => {
      const err = catchRef(() => parseReference(input));
      assert.equal(err.part, part, err.message);
      assert.match(err.reason, reason, err.message);
      assert.equal(err.input, input);
      assert.equal(err.code, 'ERR_INVALID_REFERENCE');
      assert.ok(err.message.startsWith(`invalid reference ${JSON.stringify(input.slice(0, 300))}`) || input.length > 300, err.message);
      assert.ok(err.message.includes(`: ${part} ${err.reason}`), err.message);
    });
  }

  test('credentials written into a reference (user:pass@host/app) are never echoed', () => {
    for (const [input, shown] of [
      ['user:Pa55-word@registry.example.com/app:v1', '***@registry.example.com/app:v1'],
      ['https://user:Pa55-word@registry.example.com/app', 'https://***@registry.example.com/app'],
      [':Pa55-word@alpine', '***@alpine'],
    ] as const) {
      const err = catchRef(() => parseReference(input));
      assert.ok(!err.message.includes('Pa55-word'), err.message);
      assert.ok(err.message.startsWith(`invalid reference ${JSON.stringify(shown)}`), err.message);
    }
    // A digest after '@' is not userinfo: those references are quoted as they are.
    assert.match(catchRef(() => parseReference('alpine:v1@sha256:0123')).message, /^invalid reference "alpine:v1@sha256:0123"/);
  });

  test('non-string input', () => {
    const err = catchRef(() => parseReference(undefined as unknown as string));
    assert.equal(err.part, 'reference');
  });
});

describe('parseReference options', () => {
  test('defaultTag overrides latest', () => {
    assert.deepEqual(parseReference('alpine', { defaultTag: 'stable' }), expected(HUB, 'library/alpine', 'stable'));
  });
  test("defaultTag '' adds no tag", () => {
    const ref = parseReference('ghcr.io/a/b', { defaultTag: '' });
    assert.deepEqual(ref, { registry: 'ghcr.io', repository: 'a/b' });
    assert.equal('tag' in ref, false);
  });
  test('no default tag when a digest is given', () => {
    assert.deepEqual(parseReference(`alpine@${S256}`, { defaultTag: 'stable' }), expected(HUB, 'library/alpine', undefined, S256));
  });
  test('an explicit tag wins over the default', () => {
    assert.equal(parseReference('alpine:3', { defaultTag: 'stable' }).tag, '3');
  });
  test('an invalid defaultTag is refused', () => {
    const err = catchRef(() => parseReference('alpine', { defaultTag: 'bad tag' }));
    assert.equal(err.part, 'tag');
    assert.match(err.reason, /default "bad tag"/);
  });
});

describe('round trips', () => {
  const refs: Reference[] = [
    expected(HUB, 'library/alpine', 'latest'),
    expected(HUB, 'user/app', undefined, S256),
    expected(HUB, 'library/alpine', '3', S512),
    expected('ghcr.io', 'o/r', 'v1'),
    expected('localhost:5000', 'x/y/z', 'a.b-c_d'),
    expected('[::1]:5000', 'x', 'latest', S256B),
    expected('127.0.0.1', 'x', 'latest'),
    expected(HUB, 'my.org/app', 'latest'),
    expected(HUB, 'library/my.app', 'latest'),
    expected(HUB, `library/${'a'.repeat(64)}`, undefined, S256),
  ];
  for (const ref of refs) {
    test(formatReference(ref), () => {
      assert.deepEqual(parseReference(formatReference(ref)), ref);
      assert.deepEqual(parseReference(familiarReference(ref)), ref);
    });
  }
  test('without tag or digest, with defaultTag none', () => {
    const ref = expected('ghcr.io', 'o/r');
    assert.deepEqual(parseReference(formatReference(ref), { defaultTag: '' }), ref);
  });
});

describe('familiarReference', () => {
  const cases: [string, string][] = [
    ['alpine', 'alpine:latest'],
    ['docker.io/library/alpine:3', 'alpine:3'],
    ['registry-1.docker.io/alpine', 'alpine:latest'],
    ['user/app:1', 'user/app:1'],
    ['index.docker.io/user/app', 'user/app:latest'],
    [`alpine@${S256}`, `alpine@${S256}`],
    [`alpine:3@${S256}`, `alpine:3@${S256}`],
    ['library/alpine/extra', 'library/alpine/extra:latest'],
    ['ghcr.io/o/r:v1', 'ghcr.io/o/r:v1'],
    ['localhost:5000/x', 'localhost:5000/x:latest'],
    ['docker.io:443/a', 'docker.io:443/a:latest'],
    // would read back as a host: keep the docker.io prefix
    ['docker.io/my.org/app', 'docker.io/my.org/app:latest'],
    ['docker.io/localhost/app', 'docker.io/localhost/app:latest'],
  ];
  for (const [input, familiar] of cases) {
    test(`${input} -> ${familiar}`, () => {
      assert.equal(familiarReference(parseReference(input)), familiar);
    });
  }
  test('a bare image ID keeps a prefix', () => {
    const ref = expected(HUB, `library/${'a'.repeat(64)}`);
    assert.equal(familiarReference(ref), `docker.io/${'a'.repeat(64)}`);
    assert.deepEqual(parseReference(familiarReference(ref), { defaultTag: '' }), ref);
  });
});

describe('withTag / withDigest', () => {
  const base = parseReference(`ghcr.io/o/r:v1@${S256}`);
  test('withTag replaces the tag and keeps the digest', () => {
    assert.deepEqual(withTag(base, 'v2'), expected('ghcr.io', 'o/r', 'v2', S256));
  });
  test('withTag adds a tag to a digest-only reference', () => {
    assert.deepEqual(withTag(parseReference(`alpine@${S256}`), 'latest'), expected(HUB, 'library/alpine', 'latest', S256));
  });
  test('withTag does not mutate its input', () => {
    withTag(base, 'v2');
    assert.equal(base.tag, 'v1');
  });
  test('withTag without a digest has no digest key', () => {
    const ref = withTag(parseReference('alpine'), '3');
    assert.equal('digest' in ref, false);
  });
  for (const [tag, reason] of [
    ['', /^is empty$/],
    ['-x', /must start/],
    ['a/b', /invalid character "\/"/],
    ['t'.repeat(129), /longer than 128/],
    ['a b', /invalid character " "/],
  ] as [string, RegExp][]) {
    test(`withTag refuses ${JSON.stringify(tag.slice(0, 20))}`, () => {
      const err = catchRef(() => withTag(base, tag));
      assert.equal(err.part, 'tag');
      assert.match(err.reason, reason);
    });
  }
  test('withDigest replaces the digest and keeps the tag', () => {
    assert.deepEqual(withDigest(base, S512), expected('ghcr.io', 'o/r', 'v1', S512));
  });
  test('withDigest on a tag-less reference', () => {
    const ref = withDigest(parseReference('ghcr.io/o/r', { defaultTag: '' }), S256);
    assert.deepEqual(ref, { registry: 'ghcr.io', repository: 'o/r', digest: S256 });
  });
  for (const [digest, reason] of [
    ['', /^is empty$/],
    ['sha256:abc', /sha256 needs 64/],
    [`sha256:${'A'.repeat(64)}`, /lowercase hex/],
    [`md5:${'a'.repeat(32)}`, /unsupported algorithm/],
    ['latest', /expected algorithm:hex/],
  ] as [string, RegExp][]) {
    test(`withDigest refuses ${JSON.stringify(digest.slice(0, 20))}`, () => {
      const err = catchRef(() => withDigest(base, digest));
      assert.equal(err.part, 'digest');
      assert.match(err.reason, reason);
    });
  }
});

describe('manifestReference', () => {
  test('digest wins over tag', () => {
    assert.equal(manifestReference(parseReference(`alpine:3@${S256}`)), S256);
  });
  test('tag when there is no digest', () => {
    assert.equal(manifestReference(parseReference('alpine')), 'latest');
    assert.equal(manifestReference(parseReference('alpine:3.20')), '3.20');
  });
  test('neither is an error', () => {
    const err = catchRef(() => manifestReference(expected('ghcr.io', 'o/r')));
    assert.equal(err.part, 'reference');
  });
});

describe('isValidTag', () => {
  for (const tag of ['latest', '_', 'A', '1.0.0-rc.1', 'a_b-c.d', 't'.repeat(128), '__']) {
    test(`valid ${JSON.stringify(tag.slice(0, 20))}`, () => assert.equal(isValidTag(tag), true));
  }
  for (const tag of ['', '-a', '.a', 'a+b', 'a:b', 'a/b', 'a b', 't'.repeat(129), 'é']) {
    test(`invalid ${JSON.stringify(tag.slice(0, 20))}`, () => assert.equal(isValidTag(tag), false));
  }
});

describe('isDockerHub / normaliseRegistry', () => {
  for (const host of ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'Docker.IO']) {
    test(`${host} is Docker Hub`, () => {
      assert.equal(isDockerHub(host), true);
      assert.equal(normaliseRegistry(host), HUB);
    });
  }
  for (const host of ['ghcr.io', 'docker.io:443', 'hub.docker.com', 'localhost']) {
    test(`${host} is not Docker Hub`, () => assert.equal(isDockerHub(host), false));
  }
  const normal: [string, string][] = [
    ['GHCR.io', 'ghcr.io'],
    ['localhost:5000', 'localhost:5000'],
    ['localhost', 'localhost'],
    ['registry', 'registry'],
    ['Host:08080', 'host:8080'],
    ['[::1]', '[::1]'],
    ['[FE80::1]:5000', '[fe80::1]:5000'],
    ['10.0.0.1:5000', '10.0.0.1:5000'],
  ];
  for (const [host, out] of normal) {
    test(`normaliseRegistry(${host}) = ${out}`, () => assert.equal(normaliseRegistry(host), out));
  }
  const wrong: [string, RegExp][] = [
    ['', /^is empty$/],
    ['https://ghcr.io', /not a URL/],
    ['ghcr.io/', /invalid domain component "io\/"/],
    ['host:', /empty port/],
    ['host:99999', /invalid port 99999/],
    ['host:1:2', /must be in brackets/],
    ['[::1', /unterminated/],
    ['[zz::1]', /not a valid IPv6/],
    ['ho st', /whitespace/],
    ['a..b', /empty domain component/],
    ['-a', /invalid domain component "-a"/],
  ];
  for (const [host, reason] of wrong) {
    test(`normaliseRegistry refuses ${JSON.stringify(host)}`, () => {
      const err = catchRef(() => normaliseRegistry(host));
      assert.equal(err.part, 'registry');
      assert.equal(err.input, host);
      assert.match(err.reason, reason);
    });
  }
});

describe('parseRepository', () => {
  const ok: [string, boolean, string, string][] = [
    ['registry.example.com/team', false, 'registry.example.com', 'team'],
    ['registry.example.com/team/sub', false, 'registry.example.com', 'team/sub'],
    ['alpine', false, HUB, 'library/alpine'],
    ['docker.io/alpine', false, HUB, 'library/alpine'],
    ['user/app', false, HUB, 'user/app'],
    ['Localhost:5000/x', false, 'localhost:5000', 'x'],
    // whole-registry form
    ['registry.example.com', true, 'registry.example.com', ''],
    ['registry.example.com/', true, 'registry.example.com', ''],
    ['localhost:5000', true, 'localhost:5000', ''],
    ['localhost', true, 'localhost', ''],
    ['[::1]:5000/', true, '[::1]:5000', ''],
    ['docker.io', true, HUB, ''],
    ['index.docker.io/', true, HUB, ''],
    // with the option, names still parse as usual
    ['alpine', true, HUB, 'library/alpine'],
    ['ghcr.io/o', true, 'ghcr.io', 'o'],
    // without the option a lone element is a Docker Hub repository (docker's rule)
    ['registry.example.com', false, HUB, 'library/registry.example.com'],
  ];
  for (const [input, allowEmptyRepository, registry, repository] of ok) {
    test(`${input}${allowEmptyRepository ? ' (allowEmptyRepository)' : ''}`, () => {
      assert.deepEqual(parseRepository(input, { allowEmptyRepository }), { registry, repository });
    });
  }
  const no: [string, boolean, string, RegExp][] = [
    ['alpine:3', false, 'tag', /not allowed in a repository: "3"/],
    [`alpine@${S256}`, false, 'digest', /not allowed in a repository/],
    ['localhost:5000', false, 'tag', /not allowed in a repository: "5000"/],
    ['registry.example.com/', false, 'repository', /is missing after/],
    ['docker.io/', false, 'repository', /is missing after/],
    ['host:abc', true, 'registry', /invalid port "abc"/],
    ['alpine/', true, 'repository', /must not end with "\/"/],
    ['', true, 'reference', /is empty/],
    ['Team/app', false, 'repository', /must be lowercase/],
    ['a'.repeat(64), false, 'repository', /hexadecimal/],
  ];
  for (const [input, allowEmptyRepository, part, reason] of no) {
    test(`refuses ${JSON.stringify(input.slice(0, 40))}${allowEmptyRepository ? ' (allowEmptyRepository)' : ''}`, () => {
      const err = catchRef(() => parseRepository(input, { allowEmptyRepository }));
      assert.equal(err.part, part, err.message);
      assert.match(err.reason, reason, err.message);
    });
  }
  test('formatReference of a whole registry is the host', () => {
    assert.equal(formatReference({ ...parseRepository('ghcr.io', { allowEmptyRepository: true }) }), 'ghcr.io');
  });
});
