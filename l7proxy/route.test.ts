import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RouteConfig } from './config.ts';
import { applyHeaderModifier, chooseWeighted, computeRedirect, computeRewrittenPath, computeRouteTable, matchRoute, type RouteRequest } from './route.ts';

const req = (path: string, opts: { method?: string; headers?: Record<string, string>; query?: string } = {}): RouteRequest => ({
  method: opts.method ?? 'GET', path,
  header: (n) => opts.headers?.[n],
  query: new URLSearchParams(opts.query ?? ''),
});
const rule = (id: string, m: NonNullable<RouteConfig['rules'][number]['matches']>[number]) => ({ matches: [m], backendRefs: [{ backend: id }] });
const pick = (routes: RouteConfig[], r: RouteRequest) => matchRoute(computeRouteTable(routes), r)?.rule.backendRefs?.[0]?.backend;

test('Gateway API precedence: Exact > longest PathPrefix > RegularExpression, then method, headers, query', () => {
  const routes: RouteConfig[] = [{
    name: 'default/r', createdAtMs: 1, rules: [
      rule('prefix-root', { path: { type: 'PathPrefix', value: '/' } }),
      rule('prefix-api', { path: { type: 'PathPrefix', value: '/api' } }),
      rule('prefix-api-v1', { path: { type: 'PathPrefix', value: '/api/v1' } }),
      rule('exact', { path: { type: 'Exact', value: '/api/v1/health' } }),
      rule('regex', { path: { type: 'RegularExpression', value: '/api/v1/.*' } }),
      rule('method', { path: { type: 'PathPrefix', value: '/api' }, method: 'POST' }),
      rule('header', { path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-canary', value: 'yes' }] }),
      rule('two-headers', { path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-canary', value: 'yes' }, { name: 'x-b', value: '1' }] }),
      rule('query', { path: { type: 'PathPrefix', value: '/api' }, queryParams: [{ name: 'q', value: '1' }] }),
    ],
  }];
  assert.equal(pick(routes, req('/api/v1/health')), 'exact');
  assert.equal(pick(routes, req('/api/v1/x')), 'prefix-api-v1');
  assert.equal(pick(routes, req('/api/x')), 'prefix-api');
  assert.equal(pick(routes, req('/apix')), 'prefix-root');
  assert.equal(pick(routes, req('/api/x', { method: 'POST', headers: { 'x-canary': 'yes' } })), 'method');
  assert.equal(pick(routes, req('/api/x', { headers: { 'x-canary': 'yes' } })), 'header');
  assert.equal(pick(routes, req('/api/x', { headers: { 'x-canary': 'yes', 'x-b': '1' } })), 'two-headers');
  assert.equal(pick(routes, req('/api/x', { query: 'q=1' })), 'query');
  assert.equal(pick(routes, req('/api;x')), 'prefix-api', '";" is a segment boundary for prefixes');
});

test('ties go to the oldest route, then by name, then rule order; no match → undefined', () => {
  const a: RouteConfig = { name: 'default/b', createdAtMs: 5, rules: [rule('newer', { path: { type: 'PathPrefix', value: '/x' } })] };
  const b: RouteConfig = { name: 'default/a', createdAtMs: 1, rules: [rule('older', { path: { type: 'PathPrefix', value: '/x' } })] };
  assert.equal(pick([a, b], req('/x')), 'older');
  assert.equal(pick([{ ...a, createdAtMs: 1 }, b], req('/x')), 'older', 'same age: default/a before default/b');
  assert.equal(pick([a], req('/y')), undefined);
});

test('header and query matches, exact and regex', () => {
  const routes: RouteConfig[] = [{ name: 'default/r', createdAtMs: 1, rules: [
    rule('re', { headers: [{ type: 'RegularExpression', name: 'X-User', value: 'adm.*' }] }),
    { matches: [{}], backendRefs: [{ backend: 'default' }] },
  ] }];
  assert.equal(pick(routes, req('/', { headers: { 'x-user': 'admin' } })), 're');
  assert.equal(pick(routes, req('/', { headers: { 'x-user': 'user' } })), 'default');
});

test('weighted choice follows weights; zero weights never chosen; all zero → undefined', () => {
  const refs = [{ backend: 'stable', weight: 90 }, { backend: 'canary', weight: 10 }, { backend: 'off', weight: 0 }];
  const n = 10_000; let canary = 0;
  for (let i = 0; i < n; i++) { const b = chooseWeighted(refs, (i + 0.5) / n); if (b === 'canary') canary++; assert.notEqual(b, 'off'); }
  assert.equal(canary, 1000);
  assert.equal(chooseWeighted([{ backend: 'x', weight: 0 }], 0.5), undefined);
  assert.equal(chooseWeighted([{ backend: 'x' }], 0.99), 'x');
});

test('rewrites and redirects', () => {
  assert.equal(computeRewrittenPath('/api/v1/x', { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' }, '/api/v1'), '/v2/x');
  assert.equal(computeRewrittenPath('/api/v1/x', { type: 'ReplacePrefixMatch', replacePrefixMatch: '/' }, '/api/v1'), '/x');
  assert.equal(computeRewrittenPath('/api', { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2/' }, '/api/'), '/v2/');
  assert.equal(computeRewrittenPath('/anything', { type: 'ReplaceFullPath', replaceFullPath: '/fixed' }, undefined), '/fixed');
  const r = computeRedirect({ scheme: 'https', hostname: 'new.example', statusCode: 301 }, { scheme: 'http', host: 'old', port: 8080, path: '/a', query: 'q=1' }, undefined);
  assert.deepEqual(r, { status: 301, location: 'https://new.example/a?q=1' });
  assert.equal(computeRedirect({ port: 9090 }, { scheme: 'http', host: 'h', port: undefined, path: '/', query: undefined }, undefined).location, 'http://h:9090/');
});

test('header modifier: set replaces, add appends, remove drops', () => {
  const out = applyHeaderModifier([['a', '1'], ['b', '2'], ['b', '3']], { set: [{ name: 'B', value: 'x' }], add: [{ name: 'c', value: '4' }], remove: ['a'] });
  assert.deepEqual(out, [['b', 'x'], ['c', '4']]);
});
