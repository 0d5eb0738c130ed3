// Rules files with bad patterns: refused by parseConfig with ERR_CONFIG naming the field; or, when
// a pattern is valid but adversarial, matched in bounded time.
import type { RulesCase } from './kit.js';

const rule = (extra: Record<string, unknown>): Record<string, unknown> => ({ rules: [{ from: 'src.example.com/team', to: 'mirror.example.com/copies', ...extra }] });
const tags = (include: string[]): Record<string, unknown> => rule({ tags: { include } });
const refused = (name: string, config: RulesCase['config'], message: RegExp): RulesCase => ({ kind: 'rules', name, config, message });

const cases: RulesCase[] = [
  // --- documents -------------------------------------------------------------------------
  refused('not YAML', 'rules: [\n  - from: "unterminated', /rules\.yaml is not valid YAML\/JSON/),
  refused('a YAML alias bomb', ['a: &a ["x","x","x","x","x","x","x","x","x"]', ...'bcdefghij'.split('').map((k, i) => `${k}: &${k} [${Array(9).fill(`*${'abcdefghij'[i]}`).join(',')}]`), 'rules: []'].join('\n'), /rules\.yaml is not valid YAML\/JSON: .*alias/i),
  refused('a list at the top level', '- from: a\n- to: b\n', /\(top level\)/),
  refused('no rules', { rules: [] }, /rules\.yaml: rules Too small: expected array to have >=1 items/),
  refused('an unknown field (a typo)', rule({ tag: { include: ['v1'] } }), /Unrecognized key.*"tag"/),
  // --- tag patterns ----------------------------------------------------------------------
  refused('a tag pattern that is not a regular expression', tags(['(unclosed']), /rules\.0\.tags\.include\.0 is not a valid regular expression/),
  refused('a tag pattern with nested repetition (catastrophic backtracking)', tags(['^(a+)+$']), /rules\.0\.tags\.include\.0 .*nested repetition/),
  refused('a tag pattern repeating an alternation', tags(['^(a|aa)*$']), /rules\.0\.tags\.include\.0 .*repeats an alternation/),
  refused('a tag pattern with a backreference', tags(['^(v\\d)\\1$']), /rules\.0\.tags\.include\.0 .*backreference/),
  refused('a tag pattern with too many unbounded repetitions', tags(['^.*.*.*.*.*.*x$']), /rules\.0\.tags\.include\.0 .*more than 4 unbounded repetitions/),
  refused('a tag exclude pattern with nested repetition', rule({ tags: { exclude: ['(\\w*)*-rc'] } }), /rules\.0\.tags\.exclude\.0 .*nested repetition/),
  refused('a tag pattern over 512 characters', tags(['a'.repeat(513)]), /rules\.0\.tags\.include\.0/),
  refused('an empty tag pattern', tags(['']), /rules\.0\.tags\.include\.0/),
  refused('a semver range that is not one', rule({ tags: { semver: '>>1.0 || banana' } }), /rules\.0\.tags\.semver is not a valid semver range/),
  refused('a latest count of a billion', rule({ tags: { latest: 1e9 } }), /rules\.0\.tags\.latest/),
  // --- repository globs ------------------------------------------------------------------
  refused('a repository glob with regex syntax', rule({ repositories: { include: ['app[0-9]+'] } }), /rules\.0\.repositories\.include\.0 may hold only repository characters and the wildcards \* and \?/),
  refused('a repository glob over 256 characters', rule({ repositories: { include: ['a'.repeat(257)] } }), /rules\.0\.repositories\.include\.0/),
  {
    kind: 'rules',
    name: 'a valid glob of many stars is matched in bounded time',
    config: rule({ repositories: { include: [`${'a*'.repeat(20)}b`] } }),
    matches: [
      { repository: `team/${'a'.repeat(200)}`, tag: 'v1', matched: false },
      { repository: `team/${'a'.repeat(199)}b`, tag: 'v1', matched: true },
    ],
  },
  {
    kind: 'rules',
    name: 'a valid tag pattern with a few repetitions is matched in bounded time',
    config: tags(['^v\\d+\\.\\d+\\.\\d+(-[a-z]+)?$']),
    matches: [
      { repository: 'team/app', tag: `v1.2.${'9'.repeat(120)}x`, matched: false },
      { repository: 'team/app', tag: 'v1.2.3-alpine', matched: true },
    ],
  },
  // --- hosts and paths -------------------------------------------------------------------
  refused('a from that is a URL', { rules: [{ from: 'https://src.example.com/team', to: 'mirror.example.com/copies' }] }, /rules\.0\.from from: .*URL scheme/),
  refused('a to with path traversal', { rules: [{ from: 'src.example.com/team', to: 'mirror.example.com/../root' }] }, /rules\.0\.to to: .*"\.\."/),
  refused('a platform that is not os/arch', rule({ platforms: ['linux'] }), /rules\.0\.platforms\.0 platform "linux" must be os\/architecture/),
  refused('an export to a local path', rule({ export: { to: '/etc/cron.d/x' } }), /rules\.0\.export\.to must be s3:\/\/bucket\/key/),
  // --- webhooks --------------------------------------------------------------------------
  refused('a webhook path that is not absolute', { ...rule({}), webhooks: [{ path: 'hooks/x', kind: 'distribution', token: 't' }] }, /webhooks\.0\.path must be an absolute URL path/),
  refused('a webhook with no secret at all', { ...rule({}), webhooks: [{ path: '/hooks/x', kind: 'distribution' }] }, /webhooks\.0\.token a webhook needs a token or secret/),
  refused('a github webhook without its HMAC secret', { ...rule({}), webhooks: [{ path: '/hooks/gh', kind: 'github', token: 't' }] }, /webhooks\.0\.secret a github webhook needs its HMAC secret/),
  refused('two webhooks on one path', { ...rule({}), webhooks: [{ path: '/h', kind: 'distribution', token: 'a' }, { path: '/h', kind: 'harbor', token: 'b' }] }, /webhooks\.1\.path \/h is used twice/),
  refused('a webhook secret from a malformed environment name', { ...rule({}), webhooks: [{ path: '/h', kind: 'distribution', token: { env: 'A;B' } }] }, /webhooks\.0\.token/),
  refused('an unknown webhook kind', { ...rule({}), webhooks: [{ path: '/h', kind: 'gitlab', token: 'a' }] }, /webhooks\.0\.kind/),
];

export default cases;
