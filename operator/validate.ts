/**
 * Validation beyond the CRD schema, with field paths: sizes first (so a huge object costs one pass), then
 * regex safety, durations, weights, ports, header names, selectors and the cross-field rules the schema's
 * simple CEL subset cannot say. Defensive: any shape is accepted as input and never makes it throw.
 * Every check is linear in the object's size.
 */
import type {
  AuthorizationPolicy,
  HTTPRoute,
  HTTPRouteFilter,
  MeshTLSPolicy,
  TrafficPolicy,
} from '../crds/index.ts';
import { formatDuration, parseDuration } from './duration.ts';
import { validateSelector, type FieldProblem } from './label-selector.ts';
import { checkRegexSafety } from './regex-safety.ts';
import { jsonBytes } from './canonical-json.ts';
// The proxy's own normalizer and regex compiler: what the operator accepts must be what the proxy can apply, or an
// object reported Accepted would be dropped (route) or turned into deny-all (policy) on the node.
import { normalizePath } from '../l7proxy/normalize.ts';
import { compileLinearRegex } from '../l7proxy/regex.ts';

export type { FieldProblem } from './label-selector.ts';

/** Upstream Gateway API limits, enforced here because our schema is looser (see the CRD's header). */
export const ROUTE_LIMITS = { rules: 16, matchesPerRule: 64, matchesPerRoute: 128 } as const;

/** Largest spec accepted, in bytes of JSON: a compiled route must fit in a 512 KiB NodeState with room to spare. */
export const MAX_SPEC_BYTES = { HTTPRoute: 256 * 1024, policy: 64 * 1024 } as const;

/** Longest request timeout accepted; longer ones are almost always a unit mistake. */
export const MAX_TIMEOUT_MS = 3_600_000;

const TOKEN = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const PATH_CHARS = /^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** SPIFFE-ID.md §2: lower-case trust domain; path segments of letters, digits, `.`, `-`, `_` (no percent-encoding). */
const SPIFFE = /^spiffe:\/\/([a-z0-9._-]+)(\/[a-zA-Z0-9._-]+)+$/;
/** Deepest nesting accepted in a spec; real specs are about 8 deep, and measuring a deeper one could overflow the stack. */
export const MAX_SPEC_DEPTH = 64;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** Collects problems; `add` keeps the first 20 so a broken object cannot flood its own status. */
class Problems {
  readonly list: FieldProblem[] = [];
  add(path: string, message: string): void {
    if (this.list.length < 20) this.list.push({ path, message });
  }
  addAll(problems: FieldProblem[]): void {
    for (const p of problems) this.add(p.path, p.message);
  }
}

/** Checks an absolute HTTP path as Gateway API requires for Exact and PathPrefix. */
function checkPath(value: unknown): string | undefined {
  if (typeof value !== 'string' || !value.startsWith('/')) return 'must be an absolute path starting with "/"';
  if (value.length > 1024) return 'must be at most 1024 characters';
  if (!PATH_CHARS.test(value)) return 'has characters a path cannot hold (allowed: RFC 3986 path characters and %XX escapes)';
  for (const bad of ['//', '/./', '/../', '%2f', '%2F', '#']) {
    if (value.includes(bad)) return `must not contain ${JSON.stringify(bad)}`;
  }
  if (value.endsWith('/..') || value.endsWith('/.')) return 'must not end with "/." or "/.."';
  // The proxy matches normalized request paths, so a value in another spelling (`%61`, lower-case hex, `/;x/`)
  // could never match; the proxy's config check would refuse it.
  const n = normalizePath(value);
  if (!n.ok) return `is not a path the proxy accepts (${n.reason})`;
  if (n.value !== value) return `must be written in normalized form ${JSON.stringify(n.value)} (requests are matched after normalization)`;
  return undefined;
}

function checkRegex(problems: Problems, path: string, value: unknown): void {
  if (typeof value !== 'string') {
    problems.add(path, 'must be a string');
    return;
  }
  const shown = JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
  const why = checkRegexSafety(value);
  if (why) {
    problems.add(path, `regular expression ${shown} is refused: ${why}`);
    return;
  }
  // The proxy runs its own linear-time engine, whose syntax is narrower (no \b, \x, \u, mid-pattern anchors).
  try {
    compileLinearRegex(value);
  } catch (err) {
    problems.add(path, `regular expression ${shown} is refused by the proxy's engine: ${(err as Error).message}`);
  }
}

function checkHeaderName(problems: Problems, path: string, value: unknown): void {
  if (typeof value !== 'string' || value.length === 0 || value.length > 256 || !TOKEN.test(value)) {
    problems.add(path, `header name ${JSON.stringify(value)} is not an RFC 7230 token (letters, digits and !#$%&'*+-.^_\`|~, at most 256)`);
  }
}

function checkPort(problems: Problems, path: string, value: unknown, required: boolean): void {
  if (value === undefined && !required) return;
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 65535) {
    problems.add(path, `port ${JSON.stringify(value)} must be an integer from 1 to 65535`);
  }
}

/** Parses a duration field; reports and returns undefined when invalid or out of [min, max] ms. */
function checkDuration(problems: Problems, path: string, value: unknown, minMs: number, maxMs: number): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(value);
  if (ms === undefined) {
    problems.add(path, `${JSON.stringify(value)} is not a Gateway API duration (e.g. 500ms, 10s, 1h30m)`);
    return undefined;
  }
  if (ms < minMs) {
    problems.add(path, minMs === 1 ? `must be positive, not ${value}` : `must be at least ${formatDuration(minMs)}`);
    return undefined;
  }
  if (ms > maxMs) {
    problems.add(path, `${value} is above the maximum of ${formatDuration(maxMs)}`);
    return undefined;
  }
  return ms;
}

/** The path of a value nested deeper than MAX_SPEC_DEPTH, without recursion; undefined when there is none. */
function tooDeep(spec: unknown): string | undefined {
  // Depths only on the first pass (it runs on every object, so no path strings); paths only once one is too deep.
  const values: unknown[] = [spec];
  const depths: number[] = [0];
  let deepest: unknown;
  while (values.length > 0) {
    const value = values.pop();
    const depth = depths.pop()!;
    if (value === null || typeof value !== 'object') continue;
    if (depth >= MAX_SPEC_DEPTH) { deepest = value; break; }
    for (const v of Array.isArray(value) ? value : Object.values(value)) {
      if (v !== null && typeof v === 'object') { values.push(v); depths.push(depth + 1); }
    }
  }
  if (deepest === undefined) return undefined;
  const find = (value: unknown, path: string, depth: number): string | undefined => {
    if (value === deepest) return path;
    if (value === null || typeof value !== 'object' || depth >= MAX_SPEC_DEPTH) return undefined;
    for (const [k, v] of Object.entries(value)) {
      const found = find(v, Array.isArray(value) ? `${path}[${k}]` : `${path}.${k}`, depth + 1);
      if (found !== undefined) return found;
    }
    return undefined;
  };
  return find(spec, 'spec', 0) ?? 'spec';
}

function checkSize(problems: Problems, spec: unknown, limit: number, what: string): boolean {
  const deep = tooDeep(spec);
  if (deep !== undefined) {
    const shown = deep.length > 200 ? `${deep.slice(0, 200)}...` : deep;
    problems.add(shown, `${what} spec nests deeper than ${MAX_SPEC_DEPTH} levels here; no field of the schema is that deep`);
    return false;
  }
  const bytes = jsonBytes(spec ?? null);
  if (bytes > limit) {
    problems.add('spec', `${what} spec is ${formatBytes(bytes)}; at most ${formatBytes(limit)} is accepted (it must fit in one NodeState shard)`);
    return false;
  }
  return true;
}

function formatBytes(n: number): string {
  return n >= 1024 * 1024 ? `${(n / (1024 * 1024)).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

function checkBackendRef(problems: Problems, path: string, ref: unknown): void {
  if (!isObject(ref)) {
    problems.add(path, 'must be an object');
    return;
  }
  if (typeof ref['name'] !== 'string' || ref['name'] === '') problems.add(`${path}.name`, 'is required');
  const group = ref['group'] ?? '';
  const kind = ref['kind'] ?? 'Service';
  if ((group === '' || group === 'core') && kind === 'Service') checkPort(problems, `${path}.port`, ref['port'], true);
  else checkPort(problems, `${path}.port`, ref['port'], false);
  if (ref['namespace'] !== undefined && (typeof ref['namespace'] !== 'string' || !DNS_LABEL.test(ref['namespace']))) {
    problems.add(`${path}.namespace`, `${JSON.stringify(ref['namespace'])} is not a namespace name`);
  }
}

function checkHeaderModifier(problems: Problems, path: string, mod: unknown): void {
  if (!isObject(mod)) {
    problems.add(path, 'must be an object');
    return;
  }
  const seen = new Set<string>();
  for (const list of ['set', 'add'] as const) {
    asArray(mod[list]).forEach((h, i) => {
      const p = `${path}.${list}[${i}]`;
      if (!isObject(h)) return problems.add(p, 'must be an object with name and value');
      checkHeaderName(problems, `${p}.name`, h['name']);
      if (typeof h['value'] !== 'string') problems.add(`${p}.value`, 'is required');
      // Not String(): a name that is no string was reported above, and some objects cannot be turned into one.
      const lower = typeof h['name'] === 'string' ? h['name'].toLowerCase() : undefined;
      if (lower !== undefined && seen.has(lower)) problems.add(`${p}.name`, `header ${JSON.stringify(h['name'])} appears more than once in set/add`);
      if (lower !== undefined) seen.add(lower);
    });
  }
  asArray(mod['remove']).forEach((h, i) => checkHeaderName(problems, `${path}.remove[${i}]`, h));
}

function checkPathModifier(problems: Problems, path: string, mod: unknown, allPrefix: boolean): void {
  if (!isObject(mod)) return;
  if (mod['type'] === 'ReplaceFullPath') {
    const why = checkPath(mod['replaceFullPath']);
    if (why) problems.add(`${path}.replaceFullPath`, why);
  } else if (mod['type'] === 'ReplacePrefixMatch') {
    const why = checkPath(mod['replacePrefixMatch']);
    if (why) problems.add(`${path}.replacePrefixMatch`, why);
    if (!allPrefix) problems.add(`${path}.type`, 'ReplacePrefixMatch needs every match of the rule to be a PathPrefix match');
  } else {
    problems.add(`${path}.type`, `unknown path modifier ${JSON.stringify(mod['type'])}`);
  }
}

function checkFilters(problems: Problems, path: string, filters: unknown, allPrefix: boolean): void {
  const counts = new Map<string, number>();
  asArray(filters).forEach((raw, i) => {
    const p = `${path}[${i}]`;
    if (!isObject(raw)) return problems.add(p, 'must be an object');
    const f = raw as unknown as HTTPRouteFilter;
    counts.set(f.type, (counts.get(f.type) ?? 0) + 1);
    switch (f.type) {
      case 'RequestHeaderModifier': checkHeaderModifier(problems, `${p}.requestHeaderModifier`, f.requestHeaderModifier); break;
      case 'ResponseHeaderModifier': checkHeaderModifier(problems, `${p}.responseHeaderModifier`, f.responseHeaderModifier); break;
      case 'RequestRedirect': {
        const r = f.requestRedirect;
        if (!isObject(r)) { problems.add(`${p}.requestRedirect`, 'is required for type RequestRedirect'); break; }
        checkPort(problems, `${p}.requestRedirect.port`, r.port, false);
        if (r.path) checkPathModifier(problems, `${p}.requestRedirect.path`, r.path, allPrefix);
        break;
      }
      case 'URLRewrite': {
        const r = f.urlRewrite;
        if (!isObject(r)) { problems.add(`${p}.urlRewrite`, 'is required for type URLRewrite'); break; }
        if (r.path) checkPathModifier(problems, `${p}.urlRewrite.path`, r.path, allPrefix);
        break;
      }
      case 'RequestMirror': {
        const m = f.requestMirror;
        if (!isObject(m)) { problems.add(`${p}.requestMirror`, 'is required for type RequestMirror'); break; }
        checkBackendRef(problems, `${p}.requestMirror.backendRef`, m.backendRef);
        if (m.percent !== undefined && m.fraction !== undefined) problems.add(`${p}.requestMirror`, 'set percent or fraction, not both');
        if (m.percent !== undefined && (!Number.isInteger(m.percent) || m.percent < 0 || m.percent > 100)) {
          problems.add(`${p}.requestMirror.percent`, 'must be an integer from 0 to 100');
        }
        if (m.fraction !== undefined && !isObject(m.fraction)) {
          problems.add(`${p}.requestMirror.fraction`, 'must be an object with numerator and denominator');
        } else if (m.fraction !== undefined) {
          const den = m.fraction.denominator ?? 100;
          if (!Number.isInteger(m.fraction.numerator) || m.fraction.numerator < 0 || !Number.isInteger(den) || den < 1 || m.fraction.numerator > den) {
            problems.add(`${p}.requestMirror.fraction`, 'needs integers with 0 <= numerator <= denominator and denominator >= 1');
          }
        }
        break;
      }
      default:
        problems.add(`${p}.type`, `filter type ${JSON.stringify((f as { type?: unknown }).type)} is not supported (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror)`);
    }
  });
  for (const [type, n] of counts) {
    if (n > 1 && type !== 'RequestMirror') problems.add(path, `filter ${type} appears ${n} times; only RequestMirror may repeat`);
  }
  if ((counts.get('RequestRedirect') ?? 0) > 0 && (counts.get('URLRewrite') ?? 0) > 0) {
    problems.add(path, 'RequestRedirect and URLRewrite cannot be used in the same rule');
  }
}

/** Problems of an HTTPRoute beyond its schema; empty when it is good. */
export function validateHTTPRoute(route: HTTPRoute): FieldProblem[] {
  const problems = new Problems();
  const spec = route?.spec as unknown;
  if (!isObject(spec)) return [{ path: 'spec', message: 'is required' }];
  if (!checkSize(problems, spec, MAX_SPEC_BYTES.HTTPRoute, 'the HTTPRoute')) return problems.list;
  const rules = asArray(spec['rules']);
  if (rules.length > ROUTE_LIMITS.rules) {
    return [{ path: 'spec.rules', message: `has ${rules.length} rules; at most ${ROUTE_LIMITS.rules} are accepted (the Gateway API limit) - split the route` }];
  }
  let totalMatches = 0;
  for (const r of rules) totalMatches += isObject(r) && Array.isArray(r['matches']) ? r['matches'].length : 1;
  if (totalMatches > ROUTE_LIMITS.matchesPerRoute) {
    return [{ path: 'spec.rules', message: `has ${totalMatches} matches in all; at most ${ROUTE_LIMITS.matchesPerRoute} per route are accepted - split the route` }];
  }
  asArray(spec['parentRefs']).forEach((ref, i) => {
    if (!isObject(ref)) return problems.add(`spec.parentRefs[${i}]`, 'must be an object');
    checkPort(problems, `spec.parentRefs[${i}].port`, ref['port'], false);
    if (typeof ref['name'] !== 'string' || ref['name'] === '') problems.add(`spec.parentRefs[${i}].name`, 'is required');
  });
  asArray(spec['hostnames']).forEach((h, i) => {
    const bare = typeof h === 'string' && h.startsWith('*.') ? h.slice(2) : h;
    if (typeof bare !== 'string' || bare.length > 253 || !DNS_SUBDOMAIN.test(bare)) {
      problems.add(`spec.hostnames[${i}]`, `${JSON.stringify(h)} is not a hostname (lower-case DNS name, optionally "*." first)`);
    }
  });
  const ruleNames = new Set<string>();
  rules.forEach((rawRule, ri) => {
    const rp = `spec.rules[${ri}]`;
    if (!isObject(rawRule)) return problems.add(rp, 'must be an object');
    if (typeof rawRule['name'] === 'string') {
      if (ruleNames.has(rawRule['name'])) problems.add(`${rp}.name`, `rule name ${JSON.stringify(rawRule['name'])} is used twice`);
      ruleNames.add(rawRule['name']);
    }
    const matches = asArray(rawRule['matches']);
    if (matches.length > ROUTE_LIMITS.matchesPerRule) {
      problems.add(`${rp}.matches`, `has ${matches.length} matches; at most ${ROUTE_LIMITS.matchesPerRule} per rule are accepted`);
      return;
    }
    let allPrefix = true;
    matches.forEach((m, mi) => {
      const mp = `${rp}.matches[${mi}]`;
      if (!isObject(m)) return problems.add(mp, 'must be an object');
      const path = isObject(m['path']) ? m['path'] : { type: 'PathPrefix', value: '/' };
      const type = path['type'] ?? 'PathPrefix';
      const value = path['value'] ?? '/';
      if (type !== 'PathPrefix') allPrefix = false;
      if (type === 'RegularExpression') checkRegex(problems, `${mp}.path.value`, value);
      else if (type === 'Exact' || type === 'PathPrefix') {
        const why = checkPath(value);
        if (why) problems.add(`${mp}.path.value`, `${JSON.stringify(value)} ${why}`);
      } else problems.add(`${mp}.path.type`, `unknown path match type ${JSON.stringify(type)}`);
      const seen = new Set<string>();
      asArray(m['headers']).forEach((h, hi) => {
        const hp = `${mp}.headers[${hi}]`;
        if (!isObject(h)) return problems.add(hp, 'must be an object');
        checkHeaderName(problems, `${hp}.name`, h['name']);
        const lower = typeof h['name'] === 'string' ? h['name'].toLowerCase() : undefined;
        if (lower !== undefined && seen.has(lower)) problems.add(`${hp}.name`, `header ${JSON.stringify(h['name'])} is matched twice (names are case-insensitive)`);
        if (lower !== undefined) seen.add(lower);
        if ((h['type'] ?? 'Exact') === 'RegularExpression') checkRegex(problems, `${hp}.value`, h['value']);
        else if (typeof h['value'] !== 'string') problems.add(`${hp}.value`, 'is required');
      });
      asArray(m['queryParams']).forEach((q, qi) => {
        const qp = `${mp}.queryParams[${qi}]`;
        if (!isObject(q)) return problems.add(qp, 'must be an object');
        if (typeof q['name'] !== 'string' || !TOKEN.test(q['name'])) problems.add(`${qp}.name`, `${JSON.stringify(q['name'])} is not a valid query parameter name`);
        if ((q['type'] ?? 'Exact') === 'RegularExpression') checkRegex(problems, `${qp}.value`, q['value']);
        else if (typeof q['value'] !== 'string') problems.add(`${qp}.value`, 'is required');
      });
    });
    checkFilters(problems, `${rp}.filters`, rawRule['filters'], allPrefix);
    asArray(rawRule['backendRefs']).forEach((b, bi) => {
      const bp = `${rp}.backendRefs[${bi}]`;
      checkBackendRef(problems, bp, b);
      if (isObject(b) && b['weight'] !== undefined && (!Number.isInteger(b['weight']) || (b['weight'] as number) < 0 || (b['weight'] as number) > 1_000_000)) {
        problems.add(`${bp}.weight`, `weight ${JSON.stringify(b['weight'])} must be an integer from 0 to 1000000`);
      }
    });
    const timeouts = rawRule['timeouts'];
    if (isObject(timeouts)) {
      const request = checkDuration(problems, `${rp}.timeouts.request`, timeouts['request'], 0, MAX_TIMEOUT_MS);
      const backend = checkDuration(problems, `${rp}.timeouts.backendRequest`, timeouts['backendRequest'], 0, MAX_TIMEOUT_MS);
      if (request !== undefined && backend !== undefined && request !== 0 && (backend === 0 || backend > request)) {
        problems.add(`${rp}.timeouts.backendRequest`, `${String(timeouts['backendRequest'])} must not exceed timeouts.request (${String(timeouts['request'])})${backend === 0 ? '; 0s would disable it' : ''}`);
      }
    }
    const retry = rawRule['retry'];
    if (isObject(retry)) {
      checkDuration(problems, `${rp}.retry.backoff`, retry['backoff'], 0, 60_000);
      asArray(retry['codes']).forEach((c, ci) => {
        if (!Number.isInteger(c) || (c as number) < 400 || (c as number) > 599) problems.add(`${rp}.retry.codes[${ci}]`, `${JSON.stringify(c)} must be an HTTP status from 400 to 599`);
      });
      if (retry['attempts'] !== undefined && (!Number.isInteger(retry['attempts']) || (retry['attempts'] as number) < 0 || (retry['attempts'] as number) > 100)) {
        problems.add(`${rp}.retry.attempts`, 'must be an integer from 0 to 100');
      }
    }
  });
  return problems.list;
}

/** Problems of a MeshTLSPolicy beyond its schema. */
export function validateMeshTLSPolicy(policy: MeshTLSPolicy): FieldProblem[] {
  const problems = new Problems();
  const spec = policy?.spec as unknown;
  if (!isObject(spec)) return [{ path: 'spec', message: 'is required' }];
  if (!checkSize(problems, spec, MAX_SPEC_BYTES.policy, 'the MeshTLSPolicy')) return problems.list;
  if (!['STRICT', 'PERMISSIVE', 'DISABLED'].includes(spec['mode'] as string)) {
    problems.add('spec.mode', `${JSON.stringify(spec['mode'])} is not STRICT, PERMISSIVE or DISABLED`);
  }
  if (spec['selector'] !== undefined) problems.addAll(validateSelector(spec['selector'], 'spec.selector'));
  return problems.list;
}

/** Problems of a TrafficPolicy beyond its schema. */
export function validateTrafficPolicy(policy: TrafficPolicy): FieldProblem[] {
  const problems = new Problems();
  const spec = policy?.spec as unknown;
  if (!isObject(spec)) return [{ path: 'spec', message: 'is required' }];
  if (!checkSize(problems, spec, MAX_SPEC_BYTES.policy, 'the TrafficPolicy')) return problems.list;
  const targets = asArray(spec['targetRefs']);
  if (targets.length === 0) problems.add('spec.targetRefs', 'needs at least one Service or HTTPRoute');
  targets.forEach((t, i) => {
    const p = `spec.targetRefs[${i}]`;
    if (!isObject(t)) return problems.add(p, 'must be an object');
    const group = t['group'] ?? '';
    if (t['kind'] === 'Service') {
      if (group !== '' && group !== 'core') problems.add(`${p}.group`, 'a Service target has group "" (or none)');
    } else if (t['kind'] === 'HTTPRoute') {
      if (group !== 'gateway.networking.k8s.io') problems.add(`${p}.group`, 'an HTTPRoute target has group gateway.networking.k8s.io');
    } else problems.add(`${p}.kind`, `${JSON.stringify(t['kind'])} cannot be targeted; use Service or HTTPRoute`);
    if (typeof t['name'] !== 'string' || !DNS_SUBDOMAIN.test(t['name'])) problems.add(`${p}.name`, `${JSON.stringify(t['name'])} is not an object name`);
  });
  const timeouts = spec['timeouts'];
  if (isObject(timeouts)) {
    checkDuration(problems, 'spec.timeouts.connect', timeouts['connect'], 1, 300_000);
    checkDuration(problems, 'spec.timeouts.idle', timeouts['idle'], 1, 86_400_000);
  }
  const od = spec['outlierDetection'];
  if (isObject(od)) {
    checkDuration(problems, 'spec.outlierDetection.interval', od['interval'], 1, MAX_TIMEOUT_MS);
    checkDuration(problems, 'spec.outlierDetection.baseEjectionTime', od['baseEjectionTime'], 1, MAX_TIMEOUT_MS);
  }
  const lb = spec['loadBalancer'];
  if (isObject(lb)) {
    const hash = lb['hash'];
    if ((lb['algorithm'] === 'ConsistentHash') !== isObject(hash)) {
      problems.add('spec.loadBalancer.hash', 'must be set exactly when algorithm is ConsistentHash');
    }
    if (isObject(hash)) {
      const set = ['header', 'cookie', 'sourceIP'].filter((k) => hash[k] !== undefined && hash[k] !== false);
      if (set.length !== 1) problems.add('spec.loadBalancer.hash', `set exactly one of header, cookie, sourceIP (found ${set.length})`);
      if (hash['header'] !== undefined) checkHeaderName(problems, 'spec.loadBalancer.hash.header', hash['header']);
      if (isObject(hash['cookie'])) {
        checkHeaderName(problems, 'spec.loadBalancer.hash.cookie.name', hash['cookie']['name']);
        checkDuration(problems, 'spec.loadBalancer.hash.cookie.ttl', hash['cookie']['ttl'], 0, 86_400_000 * 30);
      }
    }
  }
  const rl = spec['rateLimit'];
  if (isObject(rl) && typeof rl['burst'] === 'number' && typeof rl['requestsPerSecond'] === 'number' && rl['burst'] < rl['requestsPerSecond']) {
    problems.add('spec.rateLimit.burst', 'must be at least requestsPerSecond');
  }
  const fi = spec['faultInjection'];
  if (isObject(fi) && isObject(fi['delay'])) {
    checkDuration(problems, 'spec.faultInjection.delay.fixedDelay', fi['delay']['fixedDelay'], 0, MAX_TIMEOUT_MS);
  }
  for (const [path, value] of [
    ['spec.faultInjection.delay.percent', isObject(fi) && isObject(fi['delay']) ? fi['delay']['percent'] : undefined],
    ['spec.faultInjection.abort.percent', isObject(fi) && isObject(fi['abort']) ? fi['abort']['percent'] : undefined],
    ['spec.retryBudget.percent', isObject(spec['retryBudget']) ? spec['retryBudget']['percent'] : undefined],
    ['spec.outlierDetection.maxEjectionPercent', isObject(od) ? od['maxEjectionPercent'] : undefined],
  ] as const) {
    if (value !== undefined && (typeof value !== 'number' || !(value >= 0 && value <= 100))) problems.add(path, `${JSON.stringify(value)} must be a percentage from 0 to 100`);
  }
  return problems.list;
}

/** Problems of an AuthorizationPolicy beyond its schema. */
export function validateAuthorizationPolicy(policy: AuthorizationPolicy): FieldProblem[] {
  const problems = new Problems();
  const spec = policy?.spec as unknown;
  if (!isObject(spec)) return [{ path: 'spec', message: 'is required' }];
  if (!checkSize(problems, spec, MAX_SPEC_BYTES.policy, 'the AuthorizationPolicy')) return problems.list;
  const action = spec['action'] ?? 'ALLOW';
  if (!['ALLOW', 'DENY', 'AUDIT'].includes(action as string)) problems.add('spec.action', `${JSON.stringify(action)} is not ALLOW, DENY or AUDIT`);
  if (spec['targetRefs'] !== undefined && spec['selector'] !== undefined) problems.add('spec', 'set targetRefs or selector, not both');
  asArray(spec['targetRefs']).forEach((t, i) => {
    const p = `spec.targetRefs[${i}]`;
    if (!isObject(t)) return problems.add(p, 'must be an object');
    if (t['kind'] !== 'Service' || !['', 'core', undefined].includes(t['group'] as string | undefined)) problems.add(p, 'only Services (group "") can be targeted');
    if (typeof t['name'] !== 'string' || !DNS_SUBDOMAIN.test(t['name'])) problems.add(`${p}.name`, `${JSON.stringify(t['name'])} is not an object name`);
  });
  if (spec['selector'] !== undefined) problems.addAll(validateSelector(spec['selector'], 'spec.selector'));
  const rules = asArray(spec['rules']);
  if (rules.length > 64) return [{ path: 'spec.rules', message: `has ${rules.length} rules; at most 64 are accepted` }];
  rules.forEach((r, ri) => {
    const rp = `spec.rules[${ri}]`;
    if (!isObject(r)) return problems.add(rp, 'must be an object');
    asArray(r['from']).forEach((f, fi) => {
      const fp = `${rp}.from[${fi}]`;
      if (!isObject(f)) return problems.add(fp, 'must be an object');
      if (Object.keys(f).length === 0) problems.add(fp, 'an empty source matches nothing useful; set serviceAccounts, namespaces or spiffeIds (or drop from)');
      if (f['serviceAccounts'] !== undefined && f['spiffeIds'] !== undefined) problems.add(fp, 'serviceAccounts and spiffeIds both name identities; put them in separate from entries');
      asArray(f['serviceAccounts']).forEach((sa, i) => {
        const parts = typeof sa === 'string' ? sa.split('/') : [];
        const ok = (parts.length === 1 && DNS_SUBDOMAIN.test(parts[0]!)) || (parts.length === 2 && DNS_LABEL.test(parts[0]!) && DNS_SUBDOMAIN.test(parts[1]!));
        if (!ok) problems.add(`${fp}.serviceAccounts[${i}]`, `${JSON.stringify(sa)} is not "namespace/name" or "name"`);
      });
      asArray(f['namespaces']).forEach((ns, i) => {
        if (typeof ns !== 'string' || !DNS_LABEL.test(ns)) problems.add(`${fp}.namespaces[${i}]`, `${JSON.stringify(ns)} is not a namespace name`);
      });
      asArray(f['spiffeIds']).forEach((id, i) => {
        if (typeof id !== 'string' || id.length > 2048 || !SPIFFE.test(id) || id.includes('/./') || id.includes('/../') || id.endsWith('/.') || id.endsWith('/..')) {
          problems.add(`${fp}.spiffeIds[${i}]`, `${JSON.stringify(id)} is not a SPIFFE ID (spiffe://<trust-domain>/<path>)`);
        }
      });
    });
    asArray(r['to']).forEach((t, ti) => {
      const tp = `${rp}.to[${ti}]`;
      if (!isObject(t)) return problems.add(tp, 'must be an object');
      asArray(t['ports']).forEach((port, i) => checkPort(problems, `${tp}.ports[${i}]`, port, true));
      asArray(t['methods']).forEach((m, i) => {
        if (typeof m !== 'string' || !/^[A-Z][A-Z-]*$/.test(m) || m.length > 32) problems.add(`${tp}.methods[${i}]`, `${JSON.stringify(m)} is not an upper-case HTTP method`);
      });
      asArray(t['paths']).forEach((p, i) => {
        const pp = `${tp}.paths[${i}]`;
        if (!isObject(p)) return problems.add(pp, 'must be an object with exact or prefix');
        const keys = Object.keys(p).filter((k) => p[k] !== undefined);
        if (keys.length !== 1 || !['exact', 'prefix'].includes(keys[0]!)) return problems.add(pp, 'set exactly one of exact or prefix');
        const why = checkPath(p[keys[0]!]);
        if (why) problems.add(`${pp}.${keys[0]!}`, `${JSON.stringify(p[keys[0]!])} ${why}`);
      });
    });
  });
  return problems.list;
}
