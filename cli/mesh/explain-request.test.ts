import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import type { ExplainAnswer } from '../../agent/explain.ts';
import { computeRequestVerdict, explainRequest, formatRequestExplanation, resolveDestination } from './explain-request.ts';
import type { ClusterReader } from './kube.ts';
import { runPlugin } from './run.ts';

const CLIENT = { spiffeId: 'spiffe://cluster.local/ns/default/sa/client', namespace: 'default', serviceAccount: 'client' };
const svc = (name: string, ip: string, ports: number[]): V1Service => ({ metadata: { name, namespace: 'default' }, spec: { clusterIP: ip, ports: ports.map((port) => ({ port })) } });
const SERVICES = [svc('echo', '10.96.0.20', [8080]), svc('web', '10.96.0.30', [80, 443])];
const NODES: V1Node[] = ['node-1', 'node-2'].map((name) => ({ metadata: { name, annotations: { 'nodemesh.io/agent-status-url': `http://127.0.0.1:9/nodes/${name}/statusz` } } }));
const POD: V1Pod = { metadata: { name: 'client', namespace: 'default' }, spec: { nodeName: 'node-1', containers: [] }, status: { podIP: '10.0.1.5' } };

const reader = (): ClusterReader => ({
  server: 'fake', serverVersion: async () => 'v1', listCrds: async () => [], listCustom: async () => [], getCustom: async () => undefined,
  getLease: async () => undefined, getSecret: async () => undefined, listNodes: async () => NODES, listServices: async () => SERVICES,
  getPod: async (ns, name) => (ns === 'default' && name === 'client' ? POD : undefined),
});

/** node-1 routes echo 90/10 to an endpoint on each node; node-2's echo denies /admin. */
function fakeAgents(asked: string[]): typeof fetch {
  return (async (input: string | URL | Request) => {
    const u = new URL(String(input));
    asked.push(`${u.pathname} ${[...u.searchParams].map(([k, v]) => `${k}=${v}`).join('&')}`);
    const q = u.searchParams;
    const node = u.pathname.split('/')[2]!;
    let a: ExplainAnswer;
    if (q.get('dst')) {
      a = { node, planVersion: 'h1', source: { ip: q.get('src')!, identity: CLIENT }, routing: {
        outcome: 'routed', reason: 'matched default/echo rule 0', service: 'default/echo:8080', protocol: 'http', path: new URL(q.get('url')!).pathname, host: 'echo',
        route: { name: 'default/echo', ruleIndex: 0, matchIndex: 0, match: { path: { type: 'PathPrefix', value: '/' } } }, filters: [], forwardedPath: new URL(q.get('url')!).pathname, forwardedHost: 'echo',
        backends: [
          { backend: 'default/echo-v1:8080', weight: 90, share: 0.9, trafficPolicy: { connectTimeoutMs: 1000 }, endpoints: [{ ip: '10.0.1.9', port: 8080, ready: true, node: 'node-1', via: 'local' }] },
          { backend: 'default/echo-v2:8080', weight: 10, share: 0.1, endpoints: [{ ip: '10.0.2.7', port: 8080, ready: true, node: 'node-2', via: 'hbone node-2' }] },
        ] } };
    } else {
      const admin = new URL(q.get('url')!).pathname.startsWith('/admin');
      a = { node, planVersion: 'h1', authorization: {
        evaluated: true, endpoint: q.get('endpoint')!, identity: { spiffeId: 'spiffe://cluster.local/ns/default/sa/echo', namespace: 'default', serviceAccount: 'echo' },
        peer: { spiffeId: q.get('peer')!, authenticated: true }, verdict: admin ? 'deny' : 'allow', policy: admin ? 'default/echo-deny-admin' : 'default/echo-allow-client', rule: 0, audit: [],
        reason: admin ? 'denied by default/echo-deny-admin' : 'allowed by default/echo-allow-client',
        policies: [{ name: 'default/echo-allow-client', action: 'ALLOW', rules: 1 }, { name: 'default/echo-deny-admin', action: 'DENY', rules: 1 }] } };
    }
    return new Response(JSON.stringify(a), { status: 200, headers: { 'content-type': 'application/json' } });
  }) as typeof fetch;
}

describe('kubectl mesh explain FROM-POD URL', () => {
  it('resolves the URL host to a Service and port', () => {
    assert.equal(resolveDestination('echo', 8080, SERVICES, 'default').address, '10.96.0.20:8080');
    assert.equal(resolveDestination('echo.default.svc.cluster.local', 8080, SERVICES, 'other').address, '10.96.0.20:8080');
    assert.equal(resolveDestination('web', undefined, SERVICES, 'default').address, '10.96.0.30:80');
    assert.equal(resolveDestination('10.96.0.20', 8080, SERVICES, 'default').service?.metadata?.name, 'echo');
    assert.equal(resolveDestination('10.0.2.7', 8080, SERVICES, 'default').address, '10.0.2.7:8080');
    assert.throws(() => resolveDestination('nope', 80, SERVICES, 'default'), /no Service for host "nope"/);
    assert.throws(() => resolveDestination('echo', 81, SERVICES, 'default'), /no port 81/);
  });

  it('asks the source agent for routing, each endpoint\'s agent for authorization, and renders ALLOW', async () => {
    const asked: string[] = [];
    const v = await explainRequest(reader(), { pod: 'client', namespace: 'default', url: 'http://echo:8080/hello', headers: ['x-user: a'], agentEndpoints: new Map(), fetchImpl: fakeAgents(asked) });
    assert.equal(v.verdict, 'ALLOW');
    assert.match(asked[0]!, /^\/nodes\/node-1\/explain method=GET&header=x-user: a&url=http:\/\/echo:8080\/hello&src=10\.0\.1\.5&dst=10\.96\.0\.20:8080$/);
    assert.deepEqual(asked.slice(1).map((a) => a.split(' ')[0]).sort(), ['/nodes/node-1/explain', '/nodes/node-2/explain']);
    assert.ok(asked.slice(1).every((a) => a.includes(`peer=${CLIENT.spiffeId}`)));
    const text = formatRequestExplanation(v, 'table');
    for (const want of [/Request: +GET http:\/\/echo:8080\/hello/, /identity spiffe:\/\/cluster\.local\/ns\/default\/sa\/client/, /Service default\/echo \(10\.96\.0\.20:8080\)/,
      /route: +default\/echo rule 0 match 0 \(PathPrefix \/\)/, /default\/echo-v1:8080 +90 +90% +10\.0\.1\.9:8080@node-1 via local +connectTimeoutMs=1000/,
      /10\.0\.2\.7:8080 +node-2 +spiffe:\/\/cluster\.local\/ns\/default\/sa\/echo +ALLOW +default\/echo-allow-client +0/, /policies applied: default\/echo-allow-client \(ALLOW, 1 rule\)/, /Verdict: +ALLOW/]) {
      assert.match(text, want);
    }
    assert.deepEqual(JSON.parse(formatRequestExplanation(v, 'json')).verdict, 'ALLOW');
  });

  it('shows DENY with the policy and rule for /admin', async () => {
    const v = await explainRequest(reader(), { pod: 'default/client', namespace: 'x', url: 'echo:8080/admin', agentEndpoints: new Map(), fetchImpl: fakeAgents([]) });
    assert.deepEqual([v.verdict, v.authorization.map((a) => a.policy)], ['DENY', ['default/echo-deny-admin', 'default/echo-deny-admin']]);
    assert.match(formatRequestExplanation(v, 'table'), /Verdict: +DENY — denied by default\/echo-deny-admin rule 0/);
  });

  it('verdicts: not routed, partial, unknown', () => {
    assert.equal(computeRequestVerdict({ outcome: 'no-route', status: 404, reason: 'no route rule matches', filters: [], backends: [] }, []).verdict, 'NOT_ROUTED');
    const base = { evaluated: true, endpoint: 'e', peer: { authenticated: true }, audit: [], reason: 'r', policies: [] };
    const routed = { outcome: 'routed' as const, reason: '', filters: [], backends: [] };
    assert.equal(computeRequestVerdict(routed, [{ ...base, verdict: 'allow' }, { ...base, verdict: 'deny', policy: 'p' }]).verdict, 'PARTIAL');
    assert.equal(computeRequestVerdict(routed, [{ ...base, evaluated: false, error: 'agent down' }]).verdict, 'UNKNOWN');
  });

  it('the plugin takes the request flags after the subcommand and refuses them with KIND/NAME', async () => {
    const r = await runPlugin(['explain', 'nope', 'http://echo/', '-X', 'POST'], {}, () => ({ reader: reader(), namespace: 'default' }));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /pod default\/nope not found/);
    const u = await runPlugin(['explain', 'httproute/echo', '-H', 'a: b'], {}, () => ({ reader: reader(), namespace: 'default' }));
    assert.equal(u.code, 2);
  });
});
