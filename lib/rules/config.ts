/**
 * The configuration file: replication rules and webhook endpoints (YAML or JSON), validated with
 * zod, with errors that name the field. Secrets (webhook tokens, HMAC keys) may be written inline,
 * as `{ env: NAME }` (read from the environment when the file is loaded), or as
 * `{ secretsManager: ARN }` (resolved in AWS by the ingress function).
 *
 * ```yaml
 * rules:
 *   - from: registry.example.com/team        # a registry, optionally a repository prefix
 *     to: mirror.example.com/copies           # same relative path under here: team/app -> copies/app
 *     repositories: { include: ["app*"], exclude: ["*-tmp"] }
 *     tags: { include: ["^v\\d+"], exclude: ["-rc"], semver: ">=1.2", latest: 10 }
 *     platforms: [linux/amd64, linux/arm64]
 *     annotations: { org.example.mirrored: "true" }
 *     referrers: true
 *     export: { format: layers, to: "s3://bucket/{repository}/{tag}.tar" }
 * webhooks:
 *   - path: /hooks/registry
 *     kind: distribution
 *     token: { env: HOOK_TOKEN }
 * ```
 */
import semver from 'semver';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { ErrorCodes, OciRelayError } from '../errors.js';
import { parseRepository } from '../ref/index.js';
import { parsePlatform } from '../manifest/model.js';

const secret = z.union([
  z.string().min(1),
  z.object({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name') }).strict(),
  z.object({ secretsManager: z.string().min(1) }).strict(),
]);

export type SecretRef = z.infer<typeof secret>;

function validRegex(pattern: string): boolean {
  try {
    new RegExp(pattern);
    return true;
  } catch {
    return false;
  }
}

/** Unbounded repetitions allowed in one tag pattern: four keep the worst case near 128^4 steps on a tag. */
const MAX_UNBOUNDED_REPETITIONS = 4;

/**
 * Why a tag pattern could take exponential (or high-polynomial) time on a hostile tag, or
 * undefined. JavaScript regular expressions backtrack and cannot be interrupted, and tags come
 * from webhooks and registries, so what could hang ingress or sync is refused when the rules are
 * loaded: a backreference, an unbounded repetition of a group that itself repeats (`(a+)+`) or
 * alternates (`(a|aa)*`), and more than four unbounded repetitions in all (`.*.*.*.*.*x`).
 * A conservative check: a few safe patterns are refused too, and the message says how to write them.
 */
export function regexHazard(pattern: string): string | undefined {
  interface Group {
    repeats: boolean;
    alternates: boolean;
  }
  const stack: Group[] = [{ repeats: false, alternates: false }];
  let unbounded = 0;
  let last: Group | 'atom' | undefined; // what a quantifier would apply to
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    const top = stack[stack.length - 1] as Group;
    if (c === '\\') {
      const next = pattern[i + 1] ?? '';
      if (/[1-9]/.test(next) || (next === 'k' && pattern[i + 2] === '<')) return 'is refused: a backreference can take exponential time to match';
      i++;
      last = 'atom';
    } else if (c === '[') {
      let j = i + 1;
      if (pattern[j] === '^') j++;
      if (pattern[j] === ']') j++;
      while (j < pattern.length && pattern[j] !== ']') j += pattern[j] === '\\' ? 2 : 1;
      i = j;
      last = 'atom';
    } else if (c === '(') {
      if (pattern[i + 1] === '?') {
        const prefix = /^\?(?::|=|!|<=|<!|<[A-Za-z_$][\w$]*>)/.exec(pattern.slice(i + 1));
        i += prefix ? prefix[0].length : 1;
      }
      stack.push({ repeats: false, alternates: false });
      last = undefined;
    } else if (c === ')' && stack.length > 1) {
      const group = stack.pop() as Group;
      const parent = stack[stack.length - 1] as Group;
      if (group.repeats) parent.repeats = true;
      last = group;
    } else if (c === '|') {
      top.alternates = true;
      last = undefined;
    } else if (c === '*' || c === '+' || c === '?' || (c === '{' && /^\{\d+(,\d*)?\}/.test(pattern.slice(i)))) {
      let max = c === '?' ? 1 : Infinity;
      if (c === '{') {
        const [, low, comma, high] = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i)) as RegExpExecArray;
        max = comma === undefined ? Number(low) : high ? Number(high) : Infinity;
        i = pattern.indexOf('}', i);
      }
      if (pattern[i + 1] === '?') i++; // lazy
      if (max > 16) {
        unbounded++;
        if (last !== undefined && last !== 'atom') {
          if (last.repeats) return 'is refused: nested repetition (like (a+)+) can take exponential time to match; repeat the inner part only';
          if (last.alternates) return 'is refused: it repeats an alternation (like (a|aa)*), which can take exponential time to match; list the alternatives without repeating them';
        }
      }
      if (max > 1) top.repeats = true;
      last = undefined;
    } else {
      last = 'atom';
    }
  }
  if (unbounded > MAX_UNBOUNDED_REPETITIONS) return `is refused: more than ${MAX_UNBOUNDED_REPETITIONS} unbounded repetitions (*, +, {n,}) can take too long to match`;
  return undefined;
}

const glob = z.string().min(1).max(256).regex(/^[A-Za-z0-9._\-/*?]+$/, 'may hold only repository characters and the wildcards * and ?');
const regex = z
  .string()
  .min(1)
  .max(512)
  .refine(validRegex, 'is not a valid regular expression')
  .superRefine((pattern, ctx) => {
    const hazard = validRegex(pattern) ? regexHazard(pattern) : undefined;
    if (hazard) ctx.addIssue({ code: 'custom', message: hazard });
  });

const repositoryPath = (what: string) =>
  z.string().min(1).superRefine((value, ctx) => {
    try {
      parseRepository(value, { allowEmptyRepository: true });
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `${what} ${(err as Error).message}` });
    }
  });

export const RuleSchema = z
  .object({
    /** Optional name, for logs and summaries. */
    name: z.string().min(1).max(100).optional(),
    from: repositoryPath('from:'),
    to: repositoryPath('to:'),
    repositories: z.object({ include: z.array(glob).optional(), exclude: z.array(glob).optional() }).strict().optional(),
    tags: z
      .object({
        include: z.array(regex).optional(),
        exclude: z.array(regex).optional(),
        semver: z.string().min(1).max(200).refine((r) => semver.validRange(r) !== null, 'is not a valid semver range').optional(),
        latest: z.number().int().positive().max(10_000).optional(),
      })
      .strict()
      .optional(),
    platforms: z
      .array(z.string())
      .superRefine((list, ctx) => {
        for (const [i, p] of list.entries()) {
          try {
            parsePlatform(p);
          } catch (err) {
            ctx.addIssue({ code: 'custom', path: [i], message: (err as Error).message });
          }
        }
      })
      .optional(),
    mode: z.enum(['registry-defaults', 'prefer-multiarch', 'normalise-to-multiarch']).optional(),
    annotations: z.record(z.string().min(1), z.string()).optional(),
    referrers: z.boolean().optional(),
    includeForeignLayers: z.boolean().optional(),
    export: z
      .object({
        format: z.enum(['layers', 'oci', 'docker']).default('layers'),
        to: z.string().regex(/^s3:\/\/[^/]+\/.+/, 'must be s3://bucket/key (placeholders {registry} {repository} {tag} {digest})'),
        platform: z.string().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export const WebhookKinds = ['distribution', 'harbor', 'dockerhub', 'github', 'quay', 'acr', 'gar'] as const;
export type WebhookKind = (typeof WebhookKinds)[number];

export const WebhookSchema = z
  .object({
    path: z.string().regex(/^\/[A-Za-z0-9._~\-/]*$/, 'must be an absolute URL path'),
    kind: z.enum(WebhookKinds),
    /** Expected as `Authorization: Bearer <token>` (or in `header` when set). */
    token: secret.optional(),
    /** The header carrying the token instead of Authorization (`X-Token`); its value must equal the token. */
    header: z.string().regex(/^[A-Za-z0-9-]+$/).optional(),
    /** HMAC key (GitHub: X-Hub-Signature-256). */
    secret: secret.optional(),
    /** Acknowledge but ignore (documented for sources that sign nothing: the path itself must be unguessable). */
    unauthenticated: z.boolean().optional(),
    /** Only these rules (by name) may be triggered through this endpoint. */
    rules: z.array(z.string()).optional(),
  })
  .strict()
  .superRefine((hook, ctx) => {
    if (hook.kind === 'github' && !hook.secret) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'a github webhook needs its HMAC secret' });
    if (!hook.token && !hook.secret && !hook.unauthenticated) ctx.addIssue({ code: 'custom', path: ['token'], message: 'a webhook needs a token or secret (or unauthenticated: true with an unguessable path)' });
  });

export const ConfigSchema = z
  .object({
    rules: z.array(RuleSchema).min(1),
    webhooks: z.array(WebhookSchema).default([]),
    /** Hosts to speak plain HTTP to (besides loopback). */
    insecureRegistries: z.array(z.string()).default([]),
    /**
     * Further hosts (`host` or `host:port`) the named registries may send ocirelay to although
     * they are on a private network: a token service or blob storage beside the registry.
     * Public hosts need no entry; metadata endpoints can never be trusted.
     */
    trustedHosts: z.array(z.string().regex(/^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/, 'a host or host:port, without scheme or path')).default([]),
  })
  .strict()
  .superRefine((config, ctx) => {
    const paths = new Set<string>();
    for (const [i, hook] of config.webhooks.entries()) {
      if (paths.has(hook.path)) ctx.addIssue({ code: 'custom', path: ['webhooks', i, 'path'], message: `${hook.path} is used twice` });
      paths.add(hook.path);
    }
  });

export type Rule = z.infer<typeof RuleSchema>;
export type Webhook = z.infer<typeof WebhookSchema>;
export type Config = z.infer<typeof ConfigSchema>;

/** Parses a configuration document (YAML, of which JSON is a subset). */
export function parseConfig(text: string, where = 'configuration'): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw new OciRelayError(ErrorCodes.Config, `${where} is not valid YAML/JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new OciRelayError(ErrorCodes.Config, `${where}: ${issue?.path.join('.') || '(top level)'} ${issue?.message ?? 'is invalid'}`);
  }
  return parsed.data;
}

/** Resolves a secret reference: literal, environment, or (through `lookup`) Secrets Manager. Never logs the value. */
export async function resolveSecret(ref: SecretRef | undefined, env: NodeJS.ProcessEnv, lookup?: (arn: string) => Promise<string>): Promise<string | undefined> {
  if (ref === undefined) return undefined;
  if (typeof ref === 'string') return ref;
  if ('env' in ref) {
    const value = env[ref.env];
    if (!value) throw new OciRelayError(ErrorCodes.Config, `environment variable ${ref.env} (a webhook secret) is not set`);
    return value;
  }
  if (!lookup) throw new OciRelayError(ErrorCodes.Config, 'a Secrets Manager reference needs the AWS runtime');
  return lookup(ref.secretsManager);
}
