// Webhook deliveries that are oversized, malformed, replayed or forged. `/hooks/registry` wants
// `Authorization: Bearer <token>`, `/hooks/signed` an HMAC (X-Hub-Signature-256); the one rule
// mirrors `team/*` of the source registry. Nothing may be handed to fan-out, nothing may reach
// the target, and no host outside the rules may be contacted.
import type { WebhookCase, WebhookContext } from './kit.js';

const auth = (w: WebhookContext): Record<string, string> => ({ authorization: `Bearer ${w.token}` });

/** An authenticated delivery of `body` to /hooks/registry. */
function body(name: string, make: (w: WebhookContext) => string | Buffer, expect: WebhookCase['expect']): WebhookCase {
  return { kind: 'webhook', name, request: (w) => ({ headers: auth(w), body: make(w) }), expect };
}

const cases: WebhookCase[] = [
  // --- oversized and malformed -----------------------------------------------------------
  body('a body one byte over the 1 MiB limit', () => Buffer.alloc(1024 * 1024 + 1, 0x20), { status: 413, message: /body larger than 1048576 bytes/ }),
  body('malformed JSON', () => '{"events": [', { status: 400, message: /body is not JSON/ }),
  body('an empty body', () => '', { status: 400, message: /body is not JSON/ }),
  body('bytes that are not UTF-8', () => Buffer.from([0xff, 0xfe, 0xfd, 0x00, 0x80]), { status: 400, message: /body is not JSON/ }),
  body('JSON nested 100 000 levels deep', () => `${'['.repeat(100_000)}${']'.repeat(100_000)}`, { status: 400, message: /a distribution notification is \{"events": \[\.\.\.\]\}/ }),
  body('JSON of another shape', () => '{"hello": "world"}', { status: 400, message: /a distribution notification is \{"events": \[\.\.\.\]\}/ }),
  body('events that are not objects', () => '{"events": [null, 1, "push", []]}', { status: 202, accepted: 0 }),
  body('an event whose tag and repository are invalid', (w) => w.push({ repository: 'team/../../etc', tag: 'v1;rm -rf' }), { status: 202, accepted: 0 }),
  body('a repository outside every rule', (w) => w.push({ repository: 'other/app' }), { status: 202, accepted: 0 }),
  body('a repository that only looks like the rule prefix', (w) => w.push({ repository: 'teammate/app' }), { status: 202, accepted: 0 }),
  // --- replayed --------------------------------------------------------------------------
  {
    kind: 'webhook',
    name: 'a replayed delivery (same event id)',
    before: (w) => [{ headers: auth(w), body: w.push({ id: 'replayed-event-1' }) }],
    request: (w) => ({ headers: auth(w), body: w.push({ id: 'replayed-event-1' }) }),
    expect: { status: 202, accepted: 0 },
  },
  {
    kind: 'webhook',
    name: 'a replayed signed delivery',
    before: (w) => {
      const b = w.push({ id: 'replayed-signed-1' });
      return [{ path: '/hooks/signed', headers: { 'x-hub-signature-256': w.sign(b) }, body: b }];
    },
    request: (w) => {
      const b = w.push({ id: 'replayed-signed-1' });
      return { path: '/hooks/signed', headers: { 'x-hub-signature-256': w.sign(b) }, body: b };
    },
    expect: { status: 202, accepted: 0 },
  },
  // --- forged ----------------------------------------------------------------------------
  { kind: 'webhook', name: 'no token', request: (w) => ({ body: w.push() }), expect: { status: 401, message: /missing Authorization: Bearer/ } },
  { kind: 'webhook', name: 'a forged token', request: (w) => ({ headers: { authorization: 'Bearer guessed-token' }, body: w.push() }), expect: { status: 403, message: /bad token/ } },
  { kind: 'webhook', name: 'the token as Basic credentials', request: (w) => ({ headers: { authorization: `Basic ${Buffer.from(`x:${w.token}`).toString('base64')}` }, body: w.push() }), expect: { status: 401, message: /missing Authorization: Bearer/ } },
  { kind: 'webhook', name: 'the token with a suffix', request: (w) => ({ headers: { authorization: `Bearer ${w.token}x` }, body: w.push() }), expect: { status: 403, message: /bad token/ } },
  { kind: 'webhook', name: 'a signed hook without a signature', request: (w) => ({ path: '/hooks/signed', body: w.push() }), expect: { status: 401, message: /missing X-Hub-Signature-256/ } },
  { kind: 'webhook', name: 'a forged signature', request: (w) => ({ path: '/hooks/signed', headers: { 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` }, body: w.push() }), expect: { status: 403, message: /bad signature/ } },
  { kind: 'webhook', name: 'a signature under another key', request: (w) => { const b = w.push(); return { path: '/hooks/signed', headers: { 'x-hub-signature-256': w.sign(b, 'guessed-key') }, body: b }; }, expect: { status: 403, message: /bad signature/ } },
  { kind: 'webhook', name: 'a valid signature of another body', request: (w) => ({ path: '/hooks/signed', headers: { 'x-hub-signature-256': w.sign(w.push({ repository: 'team/app' })) }, body: w.push({ repository: 'team/evil' }) }), expect: { status: 403, message: /bad signature/ } },
  body('an authenticated event naming a third registry', (w) => w.push({ host: w.third, url: `http://${w.third}/v2/team/app/manifests/v1` }), { status: 202, accepted: 0 }),
  { kind: 'webhook', name: 'an unknown path', request: (w) => ({ path: '/hooks/elsewhere', headers: auth(w), body: w.push() }), expect: { status: 404, message: /no webhook at this path/ } },
  { kind: 'webhook', name: 'a GET instead of a POST', request: (w) => ({ method: 'GET', headers: auth(w), body: '' }), expect: { status: 405, message: /webhooks are POSTed/ } },
];

export default cases;
