/**
 * `WWW-Authenticate` parsing (RFC 9110 §11.6.1, §11.2): a header holds one or more challenges,
 * each an auth-scheme followed by either a token68 or comma-separated `name=value` parameters,
 * where values are tokens or quoted strings (with `\` escapes, and commas allowed inside quotes).
 * Registries use `Basic realm="..."` and `Bearer realm="...",service="...",scope="..."`
 * (distribution spec, token authentication).
 */

export interface Challenge {
  /** Lowercased scheme: `basic`, `bearer`, ... */
  scheme: string;
  /** Parameters with lowercased names. */
  params: Record<string, string>;
  /** The token68 form (`Negotiate abc==`), when the challenge has one instead of parameters. */
  token68?: string;
}

const TCHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;
/** token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=", ending the challenge. */
const TOKEN68 = /^[A-Za-z0-9._~+/-]+=*(?=[ \t]*(?:,|$))/;

/** Parses every challenge in one or more header values; malformed trailing input is ignored. */
export function parseWwwAuthenticate(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const values = Array.isArray(header) ? header : [header];
  const challenges: Challenge[] = [];
  for (const value of values) challenges.push(...parseOne(value));
  return challenges;
}

function parseOne(input: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = input.length;

  const skipSpace = (): void => {
    while (i < n && (input[i] === ' ' || input[i] === '\t')) i++;
  };
  const skipSpaceAndCommas = (): void => {
    while (i < n && (input[i] === ' ' || input[i] === '\t' || input[i] === ',')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TCHAR.test(input[i] as string)) i++;
    return input.slice(start, i);
  };
  const readQuoted = (): string => {
    // input[i] === '"'
    i++;
    let value = '';
    while (i < n) {
      const c = input[i] as string;
      if (c === '\\' && i + 1 < n) {
        value += input[i + 1];
        i += 2;
        continue;
      }
      if (c === '"') {
        i++;
        return value;
      }
      value += c;
      i++;
    }
    return value; // unterminated: take what there is
  };

  while (i < n) {
    skipSpaceAndCommas();
    const scheme = readToken();
    if (!scheme) break;
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    skipSpace();
    // A token68 follows the scheme directly (no comma) and is all the challenge has.
    const token68 = TOKEN68.exec(input.slice(i));
    if (token68) {
      challenge.token68 = token68[0];
      i += token68[0].length;
      continue;
    }
    // Parameters (or a token68) until the next challenge starts.
    for (;;) {
      skipSpaceAndCommas();
      if (i >= n) break;
      const save = i;
      const name = readToken();
      if (!name) {
        i = save;
        break;
      }
      skipSpace();
      if (input[i] !== '=') {
        // A token not followed by '=' starts the next challenge.
        i = save;
        break;
      }
      i++;
      skipSpace();
      const value = input[i] === '"' ? readQuoted() : readToken();
      challenge.params[name.toLowerCase()] = value;
    }
  }
  return out;
}

/** The scopes a Bearer challenge asks for (`scope` may hold several, space-separated). */
export function challengeScopes(challenge: Challenge): string[] {
  const scope = challenge.params.scope;
  return scope ? scope.split(' ').filter(Boolean) : [];
}
