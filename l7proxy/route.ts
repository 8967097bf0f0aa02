/** HTTPRoute matching with Gateway API precedence, weighted backend choice, and the pure parts of route filters. */
import type { BackendRefConfig, HeaderModifierConfig, PathModifierConfig, RouteConfig, RouteMatchConfig, RouteRuleConfig } from './config.ts';
import { normalizePath, pathHasPrefix } from './normalize.ts';
import { compileLinearRegex, type LinearRegex } from './regex.ts';

/** What routing looks at: the normalized request, with header names lower-cased. */
export type RouteRequest = {
  method: string;
  path: string;
  /** Value of a header (repeated fields joined with ", "), or undefined. */
  header(name: string): string | undefined;
  /** Decoded query parameters, first value per name (Gateway API leaves repeats to the implementation). */
  query: URLSearchParams;
};

/** One match of one rule, compiled and ranked; a route table is these in precedence order. */
export type RouteCandidate = {
  routeName: string;
  ruleIndex: number;
  matchIndex: number;
  rule: RouteRuleConfig;
  /** The PathPrefix value that matched (for ReplacePrefixMatch); undefined for other path kinds. */
  prefix: string | undefined;
  test(req: RouteRequest): boolean;
};

type Ranked = RouteCandidate & { rank: number[]; createdAtMs: number };

const PATH_RANK = { Exact: 3, PathPrefix: 2, RegularExpression: 1 } as const;

/**
 * Compile routes into one table ordered by Gateway API precedence: Exact path, then the longest PathPrefix, then
 * RegularExpression (longest pattern first); then method match, most header matches, most query matches; then the
 * oldest route, then `namespace/name`, then rule and match order.
 */
export function computeRouteTable(routes: readonly RouteConfig[]): RouteCandidate[] {
  const out: Ranked[] = [];
  for (const route of routes) {
    route.rules.forEach((rule, ruleIndex) => {
      const matches: RouteMatchConfig[] = rule.matches && rule.matches.length > 0 ? rule.matches : [{ path: { type: 'PathPrefix', value: '/' } }];
      matches.forEach((m, matchIndex) => {
        const path = m.path ?? { type: 'PathPrefix' as const, value: '/' };
        const rank = [PATH_RANK[path.type], path.value.length, m.method ? 1 : 0, m.headers?.length ?? 0, m.queryParams?.length ?? 0];
        out.push({
          routeName: route.name, ruleIndex, matchIndex, rule, createdAtMs: route.createdAtMs, rank,
          prefix: path.type === 'PathPrefix' ? path.value : undefined,
          test: compileMatch(m),
        });
      });
    });
  }
  out.sort((a, b) => {
    for (let i = 0; i < a.rank.length; i++) if (a.rank[i] !== b.rank[i]) return b.rank[i]! - a.rank[i]!;
    if (a.createdAtMs !== b.createdAtMs) return a.createdAtMs - b.createdAtMs;
    if (a.routeName !== b.routeName) return a.routeName < b.routeName ? -1 : 1;
    return a.ruleIndex - b.ruleIndex || a.matchIndex - b.matchIndex;
  });
  return out;
}

/** The first candidate (in precedence order) whose match holds, or undefined (→ 404). */
export function matchRoute(table: readonly RouteCandidate[], req: RouteRequest): RouteCandidate | undefined {
  for (const c of table) if (c.test(req)) return c;
  return undefined;
}

function compileValue(type: 'Exact' | 'RegularExpression' | undefined, value: string): (v: string | undefined) => boolean {
  if (type === 'RegularExpression') {
    const re: LinearRegex = compileLinearRegex(value);
    return (v) => v !== undefined && re.test(v);
  }
  return (v) => v === value;
}

function compileMatch(m: RouteMatchConfig): (req: RouteRequest) => boolean {
  const checks: ((req: RouteRequest) => boolean)[] = [];
  const path = m.path ?? { type: 'PathPrefix', value: '/' };
  if (path.type === 'Exact') checks.push((r) => r.path === path.value);
  else if (path.type === 'PathPrefix') { if (path.value !== '/') checks.push((r) => pathHasPrefix(r.path, path.value)); }
  else { const re = compileLinearRegex(path.value); checks.push((r) => re.test(r.path)); }
  if (m.method) { const method = m.method; checks.push((r) => r.method === method); }
  for (const h of m.headers ?? []) {
    const name = h.name.toLowerCase(); const ok = compileValue(h.type, h.value);
    checks.push((r) => ok(r.header(name)));
  }
  for (const q of m.queryParams ?? []) {
    const ok = compileValue(q.type, q.value);
    checks.push((r) => ok(r.query.get(q.name) ?? undefined));
  }
  return (req) => checks.every((c) => c(req));
}

/** Pick a backend by weight (default 1) with `rand` in [0,1); undefined when every weight is 0 (→ 500). */
export function chooseWeighted(refs: readonly BackendRefConfig[] | undefined, rand: number): string | undefined {
  if (!refs || refs.length === 0) return undefined;
  let total = 0;
  for (const r of refs) total += r.weight ?? 1;
  if (total <= 0) return undefined;
  let x = rand * total;
  for (const r of refs) {
    x -= r.weight ?? 1;
    if (x < 0) return r.backend;
  }
  return refs.filter((r) => (r.weight ?? 1) > 0).at(-1)!.backend;
}

/**
 * The path after a ReplaceFullPath / ReplacePrefixMatch modifier, normalized again so that the rewritten form is the
 * one policy sees and the backend receives.
 */
export function computeRewrittenPath(path: string, modifier: PathModifierConfig | undefined, matchedPrefix: string | undefined): string {
  if (!modifier) return path;
  let out: string;
  if (modifier.type === 'ReplaceFullPath') out = modifier.replaceFullPath;
  else {
    const p = (matchedPrefix ?? '/').replace(/\/$/, '');
    const rest = path.slice(p.length);
    const repl = modifier.replacePrefixMatch;
    out = repl.endsWith('/') && rest.startsWith('/') ? repl + rest.slice(1) : repl + rest;
    if (out === '') out = '/';
    if (!out.startsWith('/')) out = '/' + out;
  }
  const n = normalizePath(out);
  return n.ok ? n.value : '/';
}

/** Location and status for a RequestRedirect filter. */
export function computeRedirect(
  redirect: { scheme?: 'http' | 'https'; hostname?: string; port?: number; path?: PathModifierConfig; statusCode?: number },
  req: { scheme: 'http' | 'https'; host: string; port: number | undefined; path: string; query: string | undefined },
  matchedPrefix: string | undefined,
): { status: number; location: string } {
  const scheme = redirect.scheme ?? req.scheme;
  const host = redirect.hostname ?? req.host;
  // Gateway API: an explicit port wins; otherwise the request's port is kept only when the scheme is unchanged.
  let port = redirect.port ?? (redirect.scheme && redirect.scheme !== req.scheme ? undefined : req.port);
  if ((scheme === 'http' && port === 80) || (scheme === 'https' && port === 443)) port = undefined;
  const path = computeRewrittenPath(req.path, redirect.path, matchedPrefix);
  const shownHost = host.includes(':') ? `[${host}]` : host;
  const location = `${scheme}://${shownHost}${port === undefined ? '' : `:${port}`}${path}${req.query === undefined ? '' : `?${req.query}`}`;
  return { status: redirect.statusCode ?? 302, location };
}

/** Header list as forwarded: lower-case names, values in order. */
export type HeaderList = [name: string, value: string][];

/** Apply a header modifier: `set` replaces every field of that name, `add` appends, `remove` drops. */
export function applyHeaderModifier(headers: HeaderList, mod: HeaderModifierConfig): HeaderList {
  let out = headers;
  for (const s of mod.set ?? []) {
    const n = s.name.toLowerCase();
    out = out.filter(([k]) => k !== n);
    out.push([n, s.value]);
  }
  for (const a of mod.add ?? []) out = [...out, [a.name.toLowerCase(), a.value]];
  if (mod.remove?.length) {
    const drop = new Set(mod.remove.map((r) => r.toLowerCase()));
    out = out.filter(([k]) => !drop.has(k));
  }
  return out;
}
