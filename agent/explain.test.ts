import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeExplanation, parseExplainQuery, type ExplainQuery } from './explain.ts';
import type { ProxyPlan } from './proxy/plan-proxy.ts';

const CLIENT = { spiffeId: 'spiffe://cluster.local/ns/default/sa/client', namespace: 'default', serviceAccount: 'client' };
const ECHO = { spiffeId: 'spiffe://cluster.local/ns/default/sa/echo', namespace: 'default', serviceAccount: 'echo' };

/** node-1 holds the client (10.0.1.5) and calls echo (ClusterIP 10.96.0.20:8080, 90/10 v1/v2); echo-v1 pod 10.0.1.9 is local. */
function plan(): ProxyPlan {
  return {
    version: 'h1', trustDomain: 'cluster.local',
    outbound: {
      version: 'h1',
      services: [{
        name: 'default/echo:8080', addresses: [{ ip: '10.96.0.20', port: 8080 }], protocol: 'http', defaultBackend: 'default/echo:8080',
        routes: [{ name: 'default/echo', createdAtMs: 0, rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/' } }], backendRefs: [{ backend: 'default/echo-v1:8080-p1', weight: 90 }, { backend: 'default/echo-v2:8080', weight: 10 }] }] },
          { name: 'default/echo-legacy', createdAtMs: 1, rules: [{ matches: [{ path: { type: 'Exact', value: '/old' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplaceFullPath', replaceFullPath: '/new' }, statusCode: 301 } }] }] }],
      }],
      backends: [
        { name: 'default/echo:8080', endpoints: [{ ip: '10.0.1.9', port: 8080, ready: true, nodeName: 'node-1' }, { ip: '10.0.2.7', port: 8080, ready: true, nodeName: 'node-2' }] },
        { name: 'default/echo-v1:8080-p1', endpoints: [{ ip: '10.0.1.9', port: 8080, ready: true, nodeName: 'node-1' }], trafficPolicy: { connectTimeoutMs: 1000, rateLimit: { requestsPerSecond: 100, burst: 10 } } },
        { name: 'default/echo-v2:8080', endpoints: [{ ip: '10.0.2.7', port: 8080, ready: true, nodeName: 'node-2' }] },
      ],
    },
    inbound: {
      version: 'h1',
      services: [{ name: 'default/echo-v1-abc:8080', addresses: [{ ip: '10.0.1.9', port: 8080 }], protocol: 'auto', defaultBackend: 'default/echo-v1-abc:8080' }],
      backends: [{ name: 'default/echo-v1-abc:8080', endpoints: [{ ip: '10.0.1.9', port: 8080, ready: true, nodeName: 'node-1' }] }],
      authorization: [
        { name: 'default/echo-allow-client', action: 'ALLOW', targetServices: ['default/echo-v1-abc:8080'], rules: [{ from: [{ spiffeIds: [CLIENT.spiffeId] }] }] },
        { name: 'default/echo-deny-admin', action: 'DENY', targetServices: ['default/echo-v1-abc:8080'], rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] },
      ],
    },
    endpoints: { '10.0.1.9:8080': { via: 'local' }, '10.0.2.7:8080': { via: 'hbone', node: 'node-2', nodeIp: '192.168.0.2' } },
    identities: { '10.0.1.5': CLIENT, '10.0.1.9': ECHO },
    workloadIdentities: [], meshPorts: [], podIngress: [], problems: [],
  };
}

const q = (over: Partial<ExplainQuery>): ExplainQuery => ({ method: 'GET', url: 'http://echo.default:8080/hello', headers: [], ...over });

describe('agent explain (pure)', () => {
  it('routes through the matched rule to the weighted backends, with traffic policy and endpoints', () => {
    const a = computeExplanation('node-1', plan(), q({ src: '10.0.1.5', dst: '10.96.0.20:8080' }));
    assert.deepEqual(a.source, { ip: '10.0.1.5', identity: CLIENT });
    const r = a.routing!;
    assert.equal(r.outcome, 'routed');
    assert.deepEqual(r.route && { name: r.route.name, rule: r.route.ruleIndex }, { name: 'default/echo', rule: 0 });
    assert.equal(r.forwardedPath, '/hello');
    assert.deepEqual(r.backends.map((b) => [b.backend, b.weight, b.share]), [['default/echo-v1:8080-p1', 90, 0.9], ['default/echo-v2:8080', 10, 0.1]]);
    assert.deepEqual(r.backends[0]!.trafficPolicy, { connectTimeoutMs: 1000, rateLimit: { requestsPerSecond: 100, burst: 10 } });
    assert.deepEqual(r.backends[1]!.endpoints, [{ ip: '10.0.2.7', port: 8080, ready: true, node: 'node-2', via: 'hbone node-2' }]);
  });

  it('reports redirects, refused targets and destinations the proxy does not hold', () => {
    assert.equal(computeExplanation('node-1', plan(), q({ dst: '10.96.0.20:8080', url: 'http://echo/old' })).routing!.outcome, 'redirect');
    const bad = computeExplanation('node-1', plan(), q({ dst: '10.96.0.20:8080', url: 'http://echo/a%2Fb' })).routing!;
    assert.deepEqual([bad.outcome, bad.status], ['bad-request', 400]);
    assert.equal(computeExplanation('node-1', plan(), q({ dst: '10.96.0.99:80' })).routing!.outcome, 'not-meshed');
  });

  it('authorizes on the destination workload: ALLOW for the client, DENY on /admin by the policy and rule, DENY for another peer', () => {
    const allow = computeExplanation('node-1', plan(), q({ endpoint: '10.0.1.9:8080', peer: CLIENT })).authorization!;
    assert.deepEqual([allow.evaluated, allow.verdict, allow.policy, allow.identity], [true, 'allow', 'default/echo-allow-client', ECHO]);
    // the path is normalized first, as the proxy does: //admin/./x is /admin/x
    const deny = computeExplanation('node-1', plan(), q({ endpoint: '10.0.1.9:8080', peer: CLIENT, url: 'http://echo//admin/./x' })).authorization!;
    assert.deepEqual([deny.verdict, deny.policy, deny.rule], ['deny', 'default/echo-deny-admin', 0]);
    const other = computeExplanation('node-1', plan(), q({ endpoint: '10.0.1.9:8080', peer: { spiffeId: 'spiffe://cluster.local/ns/x/sa/y', namespace: 'x', serviceAccount: 'y' } })).authorization!;
    assert.equal(other.verdict, 'deny');
    assert.equal(computeExplanation('node-1', plan(), q({ endpoint: '10.0.9.9:80', peer: CLIENT })).authorization!.evaluated, false);
  });

  it('with source and endpoint on one node, authorizes the forwarded request from the local source', () => {
    const a = computeExplanation('node-1', plan(), q({ src: '10.0.1.5', dst: '10.96.0.20:8080', endpoint: '10.0.1.9:8080', url: 'http://echo:8080/admin' }));
    assert.deepEqual([a.authorization!.peer.spiffeId, a.authorization!.verdict], [CLIENT.spiffeId, 'deny']);
  });

  it('parses the query', () => {
    const p = parseExplainQuery(new URLSearchParams({ url: 'http://echo/', method: 'post', header: 'X-User: a', src: '10.0.1.5', peer: CLIENT.spiffeId }));
    assert.deepEqual(p, { url: 'http://echo/', method: 'POST', headers: [['x-user', 'a']], src: '10.0.1.5', peer: { spiffeId: CLIENT.spiffeId } });
    assert.ok('error' in parseExplainQuery(new URLSearchParams({})));
  });
});
