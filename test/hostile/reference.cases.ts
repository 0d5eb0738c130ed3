// Malformed image references: refused by parseReference with the part that is wrong, and by a
// copy (as source and as target) before any request leaves the process.
import type { ReferenceCase } from './kit.js';

const hex = (n: number): string => 'a'.repeat(n);

const cases: ReferenceCase[] = [
  { kind: 'reference', name: 'empty', input: '', part: 'reference', message: /reference is empty/ },
  { kind: 'reference', name: 'leading whitespace', input: ' alpine', part: 'reference', message: /must not contain whitespace/ },
  { kind: 'reference', name: 'a newline smuggled before the tag', input: 'app\n:v1', part: 'reference', message: /must not contain whitespace/ },
  { kind: 'reference', name: 'a NUL byte', input: 'app\0', part: 'repository', message: /invalid character "\\u0000"/ },
  { kind: 'reference', name: 'upper-case repository', input: 'Library/Alpine', part: 'repository', message: /must be lowercase/ },
  { kind: 'reference', name: 'a homoglyph (Cyrillic a)', input: '\u0430lpine', part: 'repository', message: /invalid character "\u0430"/ },
  { kind: 'reference', name: 'path traversal', input: 'registry.example.com/../etc/passwd', part: 'repository', message: /component "\.\." must start with a lowercase letter or digit/ },
  { kind: 'reference', name: 'empty path component', input: 'registry.example.com//app', part: 'repository', message: /must not contain "\/\/"/ },
  { kind: 'reference', name: 'trailing slash', input: 'registry.example.com/app/', part: 'repository', message: /must not end with "\/"/ },
  { kind: 'reference', name: 'percent-encoded slash', input: 'registry.example.com/app%2Fx', part: 'repository', message: /must be lowercase: "app%2Fx"/ },
  { kind: 'reference', name: 'a name over 255 characters', input: `registry.example.com/${'a'.repeat(300)}`, part: 'repository', message: /255/ },
  { kind: 'reference', name: 'a megabyte of name (quoted truncated)', input: 'x'.repeat(1 << 20), part: 'repository', message: /…/ },
  { kind: 'reference', name: 'an image ID where a name goes', input: hex(64), part: 'repository', message: /64-character hexadecimal string/ },
  { kind: 'reference', name: 'two tags', input: 'registry.example.com/app:v1:v2', part: 'repository', message: /invalid character ":"/ },
  { kind: 'reference', name: 'port out of range', input: 'registry.example.com:99999/app', part: 'registry', message: /invalid port 99999 \(must be 1-65535\)/ },
  { kind: 'reference', name: 'unterminated IPv6 host', input: '[::1/app', part: 'registry', message: /unterminated "\["/ },
  { kind: 'reference', name: 'IPv6 host with a zone', input: '[fe80::1%eth0]:5000/app', part: 'registry', message: /not a valid IPv6 address/ },
  { kind: 'reference', name: 'a URL instead of a reference', input: 'https://registry.example.com/app', part: 'reference', message: /must not contain a URL scheme/ },
  { kind: 'reference', name: 'empty tag', input: 'alpine:', part: 'tag', message: /tag is empty after ":"/ },
  { kind: 'reference', name: 'empty tag before a digest', input: `alpine:@sha256:${hex(64)}`, part: 'tag', message: /tag is empty/ },
  { kind: 'reference', name: 'tag over 128 characters', input: `alpine:${'x'.repeat(129)}`, part: 'tag', message: /longer than 128 characters/ },
  { kind: 'reference', name: 'tag with a shell character', input: 'alpine:v1!', part: 'tag', message: /invalid character "!"/ },
  { kind: 'reference', name: 'short digest', input: 'alpine@sha256:abc', part: 'digest', message: /sha256 needs 64 lowercase hex characters/ },
  { kind: 'reference', name: 'upper-case digest', input: `alpine@sha256:${'G'.repeat(64)}`, part: 'digest', message: /64 lowercase hex characters/ },
  { kind: 'reference', name: 'unsupported digest algorithm', input: `alpine@md5:${hex(32)}`, part: 'digest', message: /unsupported algorithm "md5"/ },
  { kind: 'reference', name: 'doubled @', input: `registry.example.com/app@@sha256:${hex(64)}`, part: 'digest', message: /expected algorithm:hex/ },
];

export default cases;
