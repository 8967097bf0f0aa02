// B8 properties: objects near the CRD schemas (valid specs with fields swapped for hostile values: deep nesting,
// huge arrays, `1e309s`, port 0/70000, homoglyph hosts, catastrophic regexes, wrong types) never make a validator
// throw or take long; every problem names a field under `spec`; a value that must be refused is refused at its own
// path; and whatever the operator accepts, the proxy can apply (paths in normalized form, regexes its engine
// compiles). Seeded; replay with NODEMESH_PROPERTY_SEED=<seed>.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { AuthorizationPolicy, HTTPRoute, MeshTLSPolicy, TrafficPolicy } from '../crds/index.ts';
import { normalizePath } from '../l7proxy/normalize.ts';
import { compileLinearRegex } from '../l7proxy/regex.ts';
import { MAX_SPEC_DEPTH, validateAuthorizationPolicy, validateHTTPRoute, validateMeshTLSPolicy, validateTrafficPolicy, type FieldProblem } from './validate.ts';

const SEED = Number(process.env['NODEMESH_PROPERTY_SEED'] ?? Date.now() % 2 ** 31);
console.log(`validate.property: seed ${SEED} (replay with NODEMESH_PROPERTY_SEED=${SEED})`);
/** A validator call over budget is a hang for the operator's event loop (B8: lag < 100 ms). */
const BUDGET_MS = 100;

type Kind = 'HTTPRoute' | 'AuthorizationPolicy' | 'TrafficPolicy' | 'MeshTLSPolicy';
const VALIDATE: Record<Kind, (spec: unknown) => FieldProblem[]> = {
  HTTPRoute: (spec) => validateHTTPRoute({ spec } as HTTPRoute),
  AuthorizationPolicy: (spec) => validateAuthorizationPolicy({ spec } as AuthorizationPolicy),
  TrafficPolicy: (spec) => validateTrafficPolicy({ spec } as TrafficPolicy),
  MeshTLSPolicy: (spec) => validateMeshTLSPolicy({ spec } as MeshTLSPolicy),
};

/** A valid spec of each kind, and the fields a mutation may replace (dotted paths, `[i]` for list items). */
const BASE: Record<Kind, { spec: () => unknown; fields: string[] }> = {
  HTTPRoute: {
    spec: () => ({
      parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 80 }],
      hostnames: ['echo.shop.svc.cluster.local'],
      rules: [{
        matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-canary', value: '1' }], queryParams: [{ name: 'v', type: 'RegularExpression', value: '[0-9]+' }] }],
        filters: [
          { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-a', value: '1' }], remove: ['x-b'] } },
          { type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } },
          { type: 'RequestMirror', requestMirror: { backendRef: { name: 'shadow', port: 80 }, fraction: { numerator: 1, denominator: 10 } } },
        ],
        backendRefs: [{ name: 'echo', port: 80, weight: 90 }],
        timeouts: { request: '10s', backendRequest: '2s' },
        retry: { attempts: 2, codes: [503], backoff: '100ms' },
      }],
    }),
    fields: [
      'parentRefs[0].port', 'parentRefs[0].name', 'hostnames[0]', 'rules', 'rules[0]', 'rules[0].matches', 'rules[0].matches[0].path',
      'rules[0].matches[0].path.value', 'rules[0].matches[0].path.type', 'rules[0].matches[0].headers[0].name', 'rules[0].matches[0].headers[0].value',
      'rules[0].matches[0].queryParams[0].value', 'rules[0].filters', 'rules[0].filters[0].requestHeaderModifier.set', 'rules[0].filters[0].requestHeaderModifier.set[0].name',
      'rules[0].filters[1].urlRewrite.path.replacePrefixMatch', 'rules[0].filters[2].requestMirror.fraction', 'rules[0].filters[2].requestMirror.fraction.numerator',
      'rules[0].filters[2].requestMirror.backendRef.port', 'rules[0].backendRefs[0].port', 'rules[0].backendRefs[0].weight', 'rules[0].timeouts.request',
      'rules[0].timeouts.backendRequest', 'rules[0].retry.attempts', 'rules[0].retry.codes[0]', 'rules[0].retry.backoff',
    ],
  },
  AuthorizationPolicy: {
    spec: () => ({
      action: 'DENY',
      selector: { matchLabels: { app: 'echo' } },
      rules: [{
        from: [{ serviceAccounts: ['shop/web'] }, { spiffeIds: ['spiffe://td.test/ns/shop/sa/web'] }, { namespaces: ['shop'] }],
        to: [{ ports: [8080], methods: ['GET'], paths: [{ prefix: '/admin' }, { exact: '/healthz' }] }],
      }],
    }),
    fields: [
      'action', 'selector', 'selector.matchLabels', 'rules', 'rules[0].from', 'rules[0].from[0].serviceAccounts[0]', 'rules[0].from[1].spiffeIds[0]',
      'rules[0].from[2].namespaces[0]', 'rules[0].to[0].ports[0]', 'rules[0].to[0].methods[0]', 'rules[0].to[0].paths[0]', 'rules[0].to[0].paths[0].prefix',
      'rules[0].to[0].paths[1].exact',
    ],
  },
  TrafficPolicy: {
    spec: () => ({
      targetRefs: [{ group: '', kind: 'Service', name: 'echo' }],
      timeouts: { connect: '1s', idle: '1h' },
      outlierDetection: { interval: '10s', baseEjectionTime: '30s', maxEjectionPercent: 50 },
      loadBalancer: { algorithm: 'ConsistentHash', hash: { header: 'x-user' } },
      rateLimit: { requestsPerSecond: 10, burst: 20 },
      faultInjection: { delay: { fixedDelay: '1s', percent: 5 } },
    }),
    fields: [
      'targetRefs', 'targetRefs[0].kind', 'targetRefs[0].name', 'timeouts.connect', 'timeouts.idle', 'outlierDetection.interval',
      'outlierDetection.maxEjectionPercent', 'loadBalancer.hash', 'loadBalancer.hash.header', 'faultInjection.delay.fixedDelay', 'faultInjection.delay.percent',
    ],
  },
  MeshTLSPolicy: {
    spec: () => ({ mode: 'STRICT', selector: { matchLabels: { app: 'echo' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['web'] }] } }),
    fields: ['mode', 'selector', 'selector.matchLabels', 'selector.matchExpressions', 'selector.matchExpressions[0].key', 'selector.matchExpressions[0].operator', 'selector.matchExpressions[0].values[0]'],
  },
};

/** Values that must be refused wherever a validator looks at them (used for the "refused at its path" check). */
const MUST_REFUSE: Record<string, unknown[]> = {
  port: [0, 70000, -1, 1.5, '80', JSON.parse('1e309') as number],
  duration: ['1e309s', '-1s', '1.5s', '1d', '99999h', '10', ''],
  hostname: ['еxample.com', 'EXAMPLE.com', 'a..b', 'ex ample.com', 'xn--80ak6aa92e.com.'],
  path: ['/%61dmin', '/a%3b', '/;x/admin', '//admin', '/a/../b', 'admin', '/a b', '/%2e%2e/x', '/a%2Fb'],
  regex: ['(a+)+$', '(a|a)*', '(a*)*b', '\\bword', '\\x41', 'a^b', '(?=x)', '(a)\\1'],
  spiffeId: ['spiffe://TD.test/ns/a/sa/b', 'spiffe://td.test/ns/a/sa/b%00', 'spiffe://td.test/ns/a/sa/b?x', 'spiffe://td.test', 'SPIFFE://td.test/ns/a/sa/b'],
};
const FIELD_CLASS: [RegExp, string][] = [
  [/\.port$|ports\[0\]$/, 'port'], [/timeouts\.|backoff$|fixedDelay$|interval$/, 'duration'], [/hostnames\[0\]$/, 'hostname'],
  [/path\.value$|replacePrefixMatch$|paths\[0\]\.prefix$|paths\[1\]\.exact$/, 'path'], [/queryParams\[0\]\.value$/, 'regex'], [/spiffeIds\[0\]$/, 'spiffeId'],
];

/** Hostile values of every shape, JSON-representable (they come from the API server as JSON). */
function deep(depth: number): unknown { let v: unknown = 'leaf'; for (let i = 0; i < depth; i++) v = i % 2 ? { a: v } : [v]; return v; }
const hostile = fc.oneof(
  fc.constantFrom(...Object.values(MUST_REFUSE).flat()),
  fc.constantFrom(null, true, 0, -0, 1e21, Number.MAX_SAFE_INTEGER + 2, '', '\u0000', 'x'.repeat(5000), {}, [], [null], { type: null }, { __proto__: null }, JSON.parse('{"__proto__":{"polluted":1}}')),
  fc.integer({ min: 100, max: 20000 }).map(deep),
  fc.integer({ min: 17, max: 3000 }).map((n) => Array.from({ length: n }, () => ({}))),
  fc.jsonValue({ maxDepth: 3 }),
);

/** Sets `path` (dotted, with [i]) inside `root` to `value`, creating nothing: a missing parent leaves it unchanged. */
function setAt(root: unknown, path: string, value: unknown): void {
  const keys = path.replace(/\[(\d+)\]/g, '.$1').split('.');
  let cur = root as Record<string, unknown>;
  for (const k of keys.slice(0, -1)) {
    const next = cur?.[k];
    if (next === null || typeof next !== 'object') return;
    cur = next as Record<string, unknown>;
  }
  cur[keys.at(-1)!] = value;
}

function timed(kind: Kind, spec: unknown): FieldProblem[] {
  const start = performance.now();
  let problems: FieldProblem[];
  try {
    problems = VALIDATE[kind](spec);
  } catch (err) {
    assert.fail(`${kind} validator threw ${(err as Error).message} on ${JSON.stringify(spec)?.slice(0, 300)}`);
  }
  const ms = performance.now() - start;
  assert.ok(ms < BUDGET_MS, `${kind} validation took ${ms.toFixed(0)} ms (budget ${BUDGET_MS})`);
  assert.ok(Array.isArray(problems) && problems.length <= 20);
  for (const p of problems) {
    assert.equal(typeof p.path, 'string');
    assert.ok(p.path === 'spec' || p.path.startsWith('spec.'), `problem path ${JSON.stringify(p.path)} is not a field path`);
    assert.ok(typeof p.message === 'string' && p.message.length > 0);
  }
  return problems;
}

/** Every value under `spec` that the proxy will read as a path or a regex, for the operator→proxy differential. */
function pathsAndRegexes(kind: Kind, spec: unknown): { paths: string[]; regexes: string[] } {
  const out = { paths: [] as string[], regexes: [] as string[] };
  const list = (v: unknown): Record<string, unknown>[] => (Array.isArray(v) ? v.filter((x): x is Record<string, unknown> => x !== null && typeof x === 'object') : []);
  const s = spec as Record<string, unknown> | null;
  if (kind === 'HTTPRoute') {
    for (const rule of list(s?.['rules'])) {
      for (const m of list(rule['matches'])) {
        const p = m['path'] as Record<string, unknown> | undefined;
        if (p && (p['type'] ?? 'PathPrefix') === 'RegularExpression') out.regexes.push(String(p['value']));
        else if (p && typeof p['value'] === 'string') out.paths.push(p['value']);
        for (const q of list(m['queryParams'])) if (q['type'] === 'RegularExpression') out.regexes.push(String(q['value']));
      }
      for (const f of list(rule['filters'])) {
        const path = ((f['urlRewrite'] ?? f['requestRedirect']) as Record<string, unknown> | undefined)?.['path'] as Record<string, unknown> | undefined;
        const v = path?.['replacePrefixMatch'] ?? path?.['replaceFullPath'];
        if (typeof v === 'string') out.paths.push(v);
      }
    }
  }
  if (kind === 'AuthorizationPolicy') {
    for (const rule of list(s?.['rules'])) {
      for (const t of list(rule['to'])) {
        for (const p of list(t['paths'])) for (const v of [p['prefix'], p['exact']]) if (typeof v === 'string') out.paths.push(v);
      }
    }
  }
  return out;
}

const kindArb = fc.constantFrom<Kind>('HTTPRoute', 'AuthorizationPolicy', 'TrafficPolicy', 'MeshTLSPolicy');

test('the base specs are valid (so every refusal below comes from a mutation)', () => {
  for (const kind of Object.keys(BASE) as Kind[]) assert.deepEqual(timed(kind, BASE[kind].spec()), [], kind);
});

test('property: near-schema objects never crash or stall a validator, and problems name fields', () => {
  const mutated = kindArb.chain((kind) => fc.tuple(fc.constant(kind), fc.array(fc.tuple(fc.constantFrom(...BASE[kind].fields), hostile), { minLength: 1, maxLength: 3 })));
  fc.assert(fc.property(mutated, ([kind, mutations]) => {
    const spec = BASE[kind].spec();
    for (const [path, value] of mutations) setAt(spec, path, value);
    const problems = timed(kind, spec);
    if (problems.length === 0) {
      // Accepted: then the proxy can apply it as written.
      const { paths, regexes } = pathsAndRegexes(kind, spec);
      for (const p of paths) { const n = normalizePath(p); assert.ok(n.ok && n.value === p, `accepted path ${JSON.stringify(p)} is not one the proxy matches`); }
      for (const r of regexes) assert.doesNotThrow(() => compileLinearRegex(r), `accepted regex ${JSON.stringify(r)}`);
    }
  }), { seed: SEED, numRuns: 1500 });
});

test('property: a value that must be refused is refused at its own field', () => {
  const cases = fc.constantFrom(...(Object.keys(BASE) as Kind[]).flatMap((kind) => BASE[kind].fields.flatMap((f) => {
    const cls = FIELD_CLASS.find(([re]) => re.test(f))?.[1];
    return cls ? MUST_REFUSE[cls]!.map((v) => [kind, f, v] as const) : [];
  })));
  fc.assert(fc.property(cases, ([kind, field, value]) => {
    const spec = BASE[kind].spec();
    setAt(spec, field, value);
    const problems = timed(kind, spec);
    const at = `spec.${field}`;
    assert.ok(problems.some((p) => p.path === at || p.path.startsWith(`${at}.`)), `${kind} ${at} = ${JSON.stringify(value)}: got ${JSON.stringify(problems)}`);
  }), { seed: SEED, numRuns: 400 });
});

test('property: arbitrary JSON as a spec never crashes a validator', () => {
  fc.assert(fc.property(kindArb, fc.jsonValue({ maxDepth: 6 }), (kind, spec) => { timed(kind, spec); }), { seed: SEED, numRuns: 1500 });
});

// Seed corpus: what the properties found (all of these made a validator throw, or were accepted while the proxy
// refuses them), kept as plain cases.
test('corpus: objects found by the properties', () => {
  const refusedAt = (kind: Kind, field: string, value: unknown, at = `spec.${field}`): void => {
    const spec = BASE[kind].spec();
    setAt(spec, field, value);
    const problems = timed(kind, spec);
    assert.ok(problems.some((p) => p.path === at), `${kind} ${field}=${JSON.stringify(value)?.slice(0, 80)}: ${JSON.stringify(problems)}`);
  };
  // Threw "Cannot read properties of null (reading 'denominator')".
  refusedAt('HTTPRoute', 'rules[0].filters[2].requestMirror.fraction', null);
  // Threw "Cannot convert object to primitive value" (String() / `<` on an object without a prototype).
  refusedAt('HTTPRoute', 'rules[0].filters[0].requestHeaderModifier.set[0].name', Object.create(null));
  refusedAt('HTTPRoute', 'rules[0].matches[0].headers[0].name', Object.create(null));
  timed('TrafficPolicy', { ...(BASE.TrafficPolicy.spec() as object), rateLimit: { requestsPerSecond: 10, burst: Object.create(null) } });
  // JSON.stringify overflowed the stack at ~5,000 levels (the API server's JSON decoder allows 10,000).
  const spec = BASE.HTTPRoute.spec() as { rules: unknown[] };
  spec.rules[0] = deep(10_000);
  const problems = timed('HTTPRoute', spec);
  assert.equal(problems.length, 1);
  assert.match(problems[0]!.path, /^spec\.rules\[0\]\.a\[0\]\.a\[0\]/);
  assert.match(problems[0]!.message, new RegExp(`deeper than ${MAX_SPEC_DEPTH}`));
  assert.deepEqual(timed('HTTPRoute', { rules: [deep(MAX_SPEC_DEPTH - 3)] }).filter((p) => /deeper/.test(p.message)), []);
  // Accepted by the operator, refused by the proxy's config check (the policy became deny-all, the route vanished).
  refusedAt('AuthorizationPolicy', 'rules[0].to[0].paths[0].prefix', '/%61dmin');
  refusedAt('AuthorizationPolicy', 'rules[0].to[0].paths[1].exact', '/healthz%3b');
  refusedAt('AuthorizationPolicy', 'rules[0].to[0].paths[0].prefix', '/;x/admin');
  refusedAt('HTTPRoute', 'rules[0].matches[0].path.value', '/%7Eapi');
  refusedAt('HTTPRoute', 'rules[0].filters[1].urlRewrite.path.replacePrefixMatch', '/v2/%2e%2e');
  refusedAt('HTTPRoute', 'rules[0].matches[0].queryParams[0].value', '\\b[0-9]+');
  refusedAt('HTTPRoute', 'rules[0].matches[0].queryParams[0].value', '\\x41+');
  refusedAt('HTTPRoute', 'rules[0].matches[0].queryParams[0].value', '[0-9]^');
  refusedAt('HTTPRoute', 'rules[0].matches[0].queryParams[0].value', 'a{');
  // Never matches any peer: the proxy only hands on lower-case trust domains and IDs without percent-encoding.
  refusedAt('AuthorizationPolicy', 'rules[0].from[1].spiffeIds[0]', 'spiffe://TD.test/ns/shop/sa/web');
  refusedAt('AuthorizationPolicy', 'rules[0].from[1].spiffeIds[0]', 'spiffe://td.test/ns/shop/sa/w%65b');
  // Out of range and look-alike values (kept from the B8 list).
  refusedAt('HTTPRoute', 'rules[0].backendRefs[0].port', 70000);
  refusedAt('HTTPRoute', 'rules[0].backendRefs[0].port', 0);
  refusedAt('HTTPRoute', 'rules[0].timeouts.request', '1e309s');
  refusedAt('HTTPRoute', 'parentRefs[0].port', JSON.parse('1e309'));
  refusedAt('HTTPRoute', 'hostnames[0]', 'еxample.com');
  refusedAt('HTTPRoute', 'rules[0].matches[0].queryParams[0].value', '(a+)+$');
});
