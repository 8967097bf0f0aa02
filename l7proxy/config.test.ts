import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeUpstreamProtocol, validateConfig, type ProxyConfig } from './config.ts';
import { ProxyConfigError } from './errors.ts';
import { NodeProxy } from './proxy.ts';

const good = (): ProxyConfig => ({
  version: '1',
  services: [{
    name: 'default/echo', addresses: [{ ip: '10.96.0.10', port: 80 }], protocol: 'http', defaultBackend: 'default/echo:80',
    routes: [{ name: 'default/r', createdAtMs: 1, rules: [{
      matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-canary', value: 'yes' }] }],
      filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } }],
      backendRefs: [{ backend: 'default/echo:80', weight: 90 }, { backend: 'default/canary:80', weight: 10 }],
      timeouts: { requestMs: 1000, backendRequestMs: 500 },
      retry: { attempts: 2, codes: [503], backoffMs: 10 },
    }] }],
  }],
  backends: [
    { name: 'default/echo:80', endpoints: [{ ip: '127.0.0.1', port: 8080, ready: true }], trafficPolicy: { loadBalancer: { type: 'ConsistentHash', hashOn: { header: 'x-user' } }, circuitBreaker: { maxRequests: 10 } } },
    { name: 'default/canary:80', endpoints: [] },
  ],
  authorization: [{ name: 'default/deny-admin', action: 'DENY', targetServices: ['default/echo'], rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] }],
});

test('a good config has no issues', () => {
  assert.deepEqual(validateConfig(good()), []);
});

test('issues name the field and the cause', () => {
  const c = good();
  c.services[0]!.routes![0]!.rules[0]!.backendRefs![1]!.backend = 'default/missing:80';
  c.services[0]!.routes![0]!.rules[0]!.matches![0]!.path = { type: 'RegularExpression', value: '(a)\\1' };
  c.services[0]!.routes![0]!.rules[0]!.timeouts = { requestMs: 100, backendRequestMs: 200 };
  c.backends[0]!.endpoints[0]!.port = 70000;
  c.backends[0]!.trafficPolicy!.rateLimit = { requestsPerSecond: -1, burst: 1 };
  c.authorization![0]!.rules[0]!.to![0]!.paths = [{ prefix: '/a//b' }];
  c.services[0]!.routes![0]!.rules[0]!.filters = [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-forwarded-for', value: '1.2.3.4' }] } }];
  const paths = validateConfig(c).map((i) => i.path);
  for (const want of [
    'services[0].routes[0].rules[0].backendRefs[1].backend',
    'services[0].routes[0].rules[0].matches[0].path.value',
    'services[0].routes[0].rules[0].timeouts.backendRequestMs',
    'backends[0].endpoints[0].port',
    'backends[0].trafficPolicy.rateLimit.requestsPerSecond',
    'authorization[0].rules[0].to[0].paths[0].prefix',
    'services[0].routes[0].rules[0].filters[0].requestHeaderModifier.set[0].name',
  ]) assert.ok(paths.includes(want), `missing issue at ${want}: ${JSON.stringify(paths)}`);
});

test('duplicate addresses, prefix rewrite without prefix match, redirect with backends', () => {
  const c = good();
  c.services.push({ ...c.services[0]!, name: 'default/other', routes: [] });
  const r = c.services[0]!.routes![0]!.rules[0]!;
  r.matches = [{ path: { type: 'Exact', value: '/x' } }];
  const paths = validateConfig(c).map((i) => i.path);
  assert.ok(paths.includes('services[1].addresses[0]'));
  assert.ok(paths.includes('services[0].routes[0].rules[0].filters[0].urlRewrite.path.type'));
});

test('applyConfig is an atomic swap: a bad config throws and the previous one stays', () => {
  const proxy = new NodeProxy({ originalDst: () => undefined, identifySource: () => undefined, config: good() });
  assert.equal(proxy.configVersion, '1');
  const bad = good(); bad.version = '2'; bad.backends[0]!.endpoints[0]!.ip = 'not-an-ip';
  assert.throws(() => proxy.applyConfig(bad), (e: unknown) => e instanceof ProxyConfigError && e.code === 'NM_ERR_PROXY_CONFIG_INVALID' && /backends\[0\]\.endpoints\[0\]\.ip/.test(e.message));
  assert.equal(proxy.configVersion, '1');
  const next = good(); next.version = '3';
  proxy.applyConfig(next);
  assert.equal(proxy.configVersion, '3');
  assert.deepEqual([proxy.stats.config.applied, proxy.stats.config.rejected], [1, 1]);
  assert.throws(() => proxy.applyConfig(null as unknown as ProxyConfig), ProxyConfigError);
});

test('upstream protocol: appProtocol names that mean h2c, and a bad backend protocol named by its field', () => {
  for (const v of ['kubernetes.io/h2c', 'h2c', 'grpc', 'GRPC', 'http2']) assert.equal(computeUpstreamProtocol(v), 'h2c', v);
  for (const v of [undefined, 'http', 'kubernetes.io/ws', 'grpc-web', 'kubernetes.io/wss', 'https']) assert.equal(computeUpstreamProtocol(v), 'http1', String(v));
  const c = good();
  (c.backends[0] as { protocol?: string }).protocol = 'h3';
  assert.deepEqual(validateConfig(c).map((i) => i.path), ['backends[0].protocol']);
  c.backends[0]!.protocol = 'h2c';
  assert.deepEqual(validateConfig(c), []);
});
