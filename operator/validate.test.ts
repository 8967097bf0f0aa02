/** Tests for validation beyond the schema: field paths, limits and speed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuthorizationPolicy, HTTPRoute, MeshTLSPolicy, TrafficPolicy } from '../crds/index.ts';
import { parseDuration, formatDuration } from './duration.ts';
import { matchesSelector, validateSelector } from './label-selector.ts';
import {
  validateAuthorizationPolicy,
  validateHTTPRoute,
  validateMeshTLSPolicy,
  validateTrafficPolicy,
} from './validate.ts';

const route = (spec: unknown): HTTPRoute => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'shop' }, spec: spec as HTTPRoute['spec'] });
const paths = (problems: Array<{ path: string }>): string[] => problems.map((p) => p.path);

test('parseDuration follows GEP-2257', () => {
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('1m5s10ms'), 65_010);
  assert.equal(parseDuration('0s'), 0);
  for (const bad of ['', '1', '1.5s', '-1s', '1d', '123456s', '1h1h1h1h1h', 5]) assert.equal(parseDuration(bad), undefined, String(bad));
  assert.equal(formatDuration(5_400_000), '1h30m');
});

test('a route with a single cross-field problem reports only that one', () => {
  assert.deepEqual(validateHTTPRoute(route({
    parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 80 }],
    rules: [{
      matches: [{ path: { type: 'RegularExpression', value: '/items/[0-9]+' }, headers: [{ name: 'x-canary', value: '1' }] }],
      filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } }],
      backendRefs: [{ name: 'echo', port: 80, weight: 90 }],
      timeouts: { request: '10s', backendRequest: '2s' },
      retry: { attempts: 2, codes: [503], backoff: '100ms' },
    }],
  })), [
    { path: 'spec.rules[0].filters[0].urlRewrite.path.type', message: 'ReplacePrefixMatch needs every match of the rule to be a PathPrefix match' },
  ]);
});

test('route problems carry field paths', () => {
  const problems = validateHTTPRoute(route({
    parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 70000 }],
    hostnames: ['Bad_Host'],
    rules: [{
      name: 'a',
      matches: [
        { path: { type: 'PathPrefix', value: '/a//b' }, headers: [{ name: 'bad header', value: 'x' }, { name: 'X-A', value: '1' }, { name: 'x-a', value: '2' }] },
        { path: { type: 'RegularExpression', value: '(a|a)*' }, queryParams: [{ name: 'q', type: 'RegularExpression', value: '(x+)+' }] },
      ],
      filters: [{ type: 'RequestRedirect', requestRedirect: {} }, { type: 'URLRewrite', urlRewrite: {} }],
      backendRefs: [{ name: 'echo', weight: 2_000_000 }],
      timeouts: { request: '2h', backendRequest: '5s' },
      retry: { codes: [200] },
    }, { name: 'a', timeouts: { request: '1s', backendRequest: '2s' } }],
  }));
  assert.deepEqual(paths(problems), [
    'spec.parentRefs[0].port',
    'spec.hostnames[0]',
    'spec.rules[0].matches[0].path.value',
    'spec.rules[0].matches[0].headers[0].name',
    'spec.rules[0].matches[0].headers[2].name',
    'spec.rules[0].matches[1].path.value',
    'spec.rules[0].matches[1].queryParams[0].value',
    'spec.rules[0].filters',
    'spec.rules[0].backendRefs[0].port',
    'spec.rules[0].backendRefs[0].weight',
    'spec.rules[0].timeouts.request',
    'spec.rules[0].retry.codes[0]',
    'spec.rules[1].name',
    'spec.rules[1].timeouts.backendRequest',
  ]);
  assert.match(problems.find((p) => p.path === 'spec.rules[1].timeouts.backendRequest')!.message, /2s must not exceed timeouts.request \(1s\)/);
  assert.match(problems.find((p) => p.path === 'spec.rules[0].timeouts.request')!.message, /above the maximum of 1h/);
  assert.match(problems.find((p) => p.path === 'spec.rules[0].matches[1].path.value')!.message, /regular expression "\(a\|a\)\*" is refused/);
});

test('10,000 rules are refused at once, cheaply', () => {
  const rules = Array.from({ length: 10_000 }, (_, i) => ({ matches: [{ path: { type: 'Exact', value: `/p${i}` } }], backendRefs: [{ name: 'echo', port: 80 }] }));
  const start = performance.now();
  const problems = validateHTTPRoute(route({ rules }));
  const ms = performance.now() - start;
  assert.equal(problems.length, 1);
  assert.equal(problems[0]!.path, 'spec');
  assert.match(problems[0]!.message, /at most 256 KiB/);
  const smaller = validateHTTPRoute(route({ rules: rules.slice(0, 2000).map(() => ({})) }));
  assert.deepEqual(smaller, [{ path: 'spec.rules', message: 'has 2000 rules; at most 16 are accepted (the Gateway API limit) - split the route' }]);
  assert.ok(ms < 100, `took ${ms} ms`);
});

test('a 1 MiB route is refused with its size', () => {
  const big = 'x'.repeat(4000);
  const rules = Array.from({ length: 16 }, () => ({ matches: Array.from({ length: 8 }, () => ({ headers: Array.from({ length: 8 }, (_, i) => ({ name: `h${i}`, value: big })) })) }));
  const start = performance.now();
  const problems = validateHTTPRoute(route({ rules }));
  assert.ok(performance.now() - start < 100);
  assert.equal(problems.length, 1);
  assert.match(problems[0]!.message, /^the HTTPRoute spec is (3\.9|4\.0) MiB; at most 256 KiB is accepted/);
});

test('too many matches per rule or per route', () => {
  const many = (n: number) => Array.from({ length: n }, (_, i) => ({ path: { type: 'Exact', value: `/m${i}` } }));
  assert.deepEqual(paths(validateHTTPRoute(route({ rules: [{ matches: many(65) }] }))), ['spec.rules[0].matches']);
  assert.match(validateHTTPRoute(route({ rules: [{ matches: many(64) }, { matches: many(64) }, { matches: many(1) }] }))[0]!.message, /129 matches in all; at most 128/);
});

test('selectors: syntax and matching', () => {
  assert.deepEqual(validateSelector({ matchLabels: { app: 'web' } }, 's'), []);
  assert.deepEqual(paths(validateSelector({
    matchLabels: { 'bad key!': 'x', ok: 'bad value!' },
    matchExpressions: [{ key: 'a', operator: 'In' }, { key: 'b', operator: 'Exists', values: ['x'] }, { key: 'c', operator: 'Near' }],
  }, 's')), ['s.matchLabels["bad key!"]', 's.matchLabels["ok"]', 's.matchExpressions[0].values', 's.matchExpressions[1].values', 's.matchExpressions[2].operator']);
  assert.ok(matchesSelector({ matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['db'] }] }, { app: 'web' }));
  assert.ok(!matchesSelector({ matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, { app: 'web' }));
  assert.ok(matchesSelector({}, {}), 'an empty selector matches everything');
});

test('policy validation', () => {
  const mtls: MeshTLSPolicy = { apiVersion: 'nodemesh.io/v1alpha1', kind: 'MeshTLSPolicy', spec: { mode: 'LOOSE' as 'STRICT', selector: { matchLabels: { '': 'x' } } } };
  assert.deepEqual(paths(validateMeshTLSPolicy(mtls)), ['spec.mode', 'spec.selector.matchLabels[""]']);
  const tp: TrafficPolicy = {
    apiVersion: 'nodemesh.io/v1alpha1', kind: 'TrafficPolicy',
    spec: {
      targetRefs: [{ kind: 'HTTPRoute', name: 'r' }],
      timeouts: { connect: '0s' },
      loadBalancer: { algorithm: 'ConsistentHash', hash: { header: 'a', sourceIP: true } },
      rateLimit: { requestsPerSecond: 10, burst: 5 },
    },
  };
  assert.deepEqual(paths(validateTrafficPolicy(tp)), ['spec.targetRefs[0].group', 'spec.timeouts.connect', 'spec.loadBalancer.hash', 'spec.rateLimit.burst']);
  const ap: AuthorizationPolicy = {
    apiVersion: 'nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy',
    spec: {
      targetRefs: [{ kind: 'Service', name: 'echo' }],
      selector: { matchLabels: { app: 'x' } },
      rules: [{ from: [{ serviceAccounts: ['a/b/c'], spiffeIds: ['spiffe://td/ns/x'] }], to: [{ ports: [0], methods: ['get'], paths: [{ exact: 'x' }] }] }],
    },
  };
  assert.deepEqual(paths(validateAuthorizationPolicy(ap)), [
    'spec', 'spec.rules[0].from[0]', 'spec.rules[0].from[0].serviceAccounts[0]',
    'spec.rules[0].to[0].ports[0]', 'spec.rules[0].to[0].methods[0]', 'spec.rules[0].to[0].paths[0].exact',
  ]);
});

test('validators never throw on odd shapes', () => {
  for (const spec of [undefined, null, 5, 'x', [], { rules: 'x' }, { rules: [null, 1, { matches: [null] }] }, { parentRefs: [1] }]) {
    assert.doesNotThrow(() => validateHTTPRoute(route(spec)));
    assert.doesNotThrow(() => validateAuthorizationPolicy({ spec } as unknown as AuthorizationPolicy));
    assert.doesNotThrow(() => validateTrafficPolicy({ spec } as unknown as TrafficPolicy));
    assert.doesNotThrow(() => validateMeshTLSPolicy({ spec } as unknown as MeshTLSPolicy));
  }
});
