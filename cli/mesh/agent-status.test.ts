import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Node, V1Pod } from '@kubernetes/client-node';
import {
  describeAgentHttpFailure, describeAgentNetworkFailure, discoverAgentEndpoints, fetchAgentStatuses, normalizeStatusUrl, parseAgentEndpoints, planAgentEndpoints, podProxyUrl,
  type AgentEndpoint, type AgentFetch,
} from './agent-status.ts';
import { computeChecks } from './check.ts';
import type { ClusterReader } from './kube.ts';

const SERVER = 'https://api.example:6443';
const node = (name: string, annotations?: Record<string, string>): V1Node => ({ metadata: { name, ...(annotations ? { annotations } : {}) } });
type PodOpts = { node: string; phase?: string; ready?: boolean; ip?: string; port?: { name: string; containerPort: number } | null; created?: string; deleting?: boolean; waiting?: string; labels?: Record<string, string> };
const agentPod = (name: string, o: PodOpts): V1Pod => ({
  metadata: {
    name, namespace: 'nodemesh-system', labels: o.labels ?? { 'app.kubernetes.io/name': 'nodemesh-agent', 'app.kubernetes.io/part-of': 'nodemesh' },
    creationTimestamp: new Date(o.created ?? '2026-11-01T00:00:00Z'), ...(o.deleting ? { deletionTimestamp: new Date('2026-11-02T00:00:00Z') } : {}),
  },
  spec: { nodeName: o.node, hostNetwork: true, containers: [{ name: 'agent', ...(o.port === null ? {} : { ports: [o.port ?? { name: 'health', containerPort: 9880 }] }) }] },
  status: {
    phase: o.phase ?? 'Running', ...(o.ip !== undefined ? (o.ip ? { podIP: o.ip } : {}) : { podIP: '10.0.0.1' }),
    conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True', ...(o.ready === false ? { reason: 'ContainersNotReady' } : {}) }],
    ...(o.waiting ? { containerStatuses: [{ name: 'agent', ready: false, restartCount: 3, image: 'i', imageID: '', state: { waiting: { reason: o.waiting } } }] } : {}),
  },
});
const plan = (nodes: V1Node[], pods: V1Pod[] | undefined, explicit = new Map<string, string>(), podsError?: string): Record<string, AgentEndpoint> =>
  Object.fromEntries(planAgentEndpoints({ nodes, explicit, server: SERVER, ...(pods ? { pods } : {}), ...(podsError ? { podsError } : {}) }));

describe('agent discovery (pure): flag, then Node annotation, then the DaemonSet pod through the pods proxy', () => {
  it('parses --agent-endpoints and normalizes base URLs', () => {
    assert.deepEqual([...parseAgentEndpoints(' a=http://10.0.0.1:9880 ,b=http://x/custom,')], [['a', 'http://10.0.0.1:9880'], ['b', 'http://x/custom']]);
    assert.throws(() => parseAgentEndpoints('nourl'), { code: 'NM_ERR_CLI_USAGE' });
    assert.equal(normalizeStatusUrl('http://h:1'), 'http://h:1/statusz');
    assert.equal(normalizeStatusUrl('http://h:1/nodes/a/statusz'), 'http://h:1/nodes/a/statusz');
  });

  it('the flag wins over the annotation, the annotation over the pod; the pod is reached through the API server', () => {
    const pods = [agentPod('agent-a', { node: 'a' }), agentPod('agent-b', { node: 'b' }), agentPod('agent-c', { node: 'c', port: { name: 'health', containerPort: 10256 } })];
    const m = plan([node('a', { 'nodemesh.io/agent-status-url': 'http://ignored/' }), node('b', { 'nodemesh.io/agent-status-url': 'http://10.0.0.2:9880/custom' }), node('c')], pods, parseAgentEndpoints('a=http://10.0.0.1:9880'));
    assert.deepEqual(m, {
      a: { node: 'a', via: 'flag', url: 'http://10.0.0.1:9880/statusz' },
      b: { node: 'b', via: 'annotation', url: 'http://10.0.0.2:9880/custom' },
      c: { node: 'c', via: 'pod-proxy', pod: 'nodemesh-system/agent-c', url: 'https://api.example:6443/api/v1/namespaces/nodemesh-system/pods/agent-c:10256/proxy/statusz' },
    });
  });

  it('the health port: the container port named health, else the first declared, else the DaemonSet\'s 9880', () => {
    const urls = (pod: V1Pod): string | undefined => plan([node('a')], [pod]).a!.url;
    assert.match(urls(agentPod('p', { node: 'a', port: { name: 'metrics', containerPort: 7000 } }))!, /pods\/p:7000\/proxy\/statusz$/);
    assert.match(urls(agentPod('p', { node: 'a', port: null }))!, /pods\/p:9880\/proxy\/statusz$/);
    assert.equal(podProxyUrl('https://rancher.example/k8s/clusters/c-1/', 'nodemesh-system', 'agent-x', 9880, '/metrics'), 'https://rancher.example/k8s/clusters/c-1/api/v1/namespaces/nodemesh-system/pods/agent-x:9880/proxy/metrics');
  });

  it('a node without an agent pod says so and names the DaemonSet to look at; other pods on the node do not count', () => {
    const m = plan([node('a'), node('b')], [agentPod('agent-a', { node: 'a' }), agentPod('not-agent', { node: 'b', labels: { app: 'other' } })]);
    assert.equal(m.a!.via, 'pod-proxy');
    assert.deepEqual(m.b, { node: 'b', via: 'pod-proxy', error: 'no agent pod on node b (is the DaemonSet running? kubectl -n nodemesh-system get ds nodemesh-agent)' });
  });

  it('a pending agent pod is not asked; a running one that is not Ready is asked, with the reason kept', () => {
    const m = plan([node('a'), node('b'), node('c')], [
      agentPod('agent-a', { node: 'a', phase: 'Pending', ip: '', ready: false, waiting: 'ImagePullBackOff' }),
      agentPod('agent-b', { node: 'b', ready: false, waiting: 'CrashLoopBackOff' }),
      agentPod('agent-c', { node: 'c', ip: '' }),
    ]);
    assert.equal(m.a!.url, undefined);
    assert.equal(m.a!.error, 'agent pod nodemesh-system/agent-a on node a is Pending (ContainersNotReady, ImagePullBackOff): kubectl -n nodemesh-system describe pod agent-a; DaemonSet nodemesh-system/nodemesh-agent');
    assert.match(m.b!.url!, /agent-b:9880\/proxy\/statusz$/);
    assert.equal(m.b!.notReady, 'ContainersNotReady, CrashLoopBackOff');
    assert.match(m.c!.error!, /agent-c on node c has no IP address/);
  });

  it('during a rolling update the Ready, not terminating, newest pod is asked', () => {
    const m = plan([node('a')], [
      agentPod('old', { node: 'a', deleting: true, created: '2026-10-01T00:00:00Z' }),
      agentPod('new-not-ready', { node: 'a', ready: false, created: '2026-11-03T00:00:00Z' }),
      agentPod('new-ready', { node: 'a', created: '2026-11-02T00:00:00Z' }),
    ]);
    assert.equal(m.a!.pod, 'nodemesh-system/new-ready');
  });

  it('when the pods could not be listed every node without a flag or annotation carries the reason', () => {
    const m = plan([node('a'), node('b', { 'nodemesh.io/agent-status-url': 'http://b/' })], undefined, new Map(), 'listing the agent pods is forbidden: x');
    assert.deepEqual(m.a, { node: 'a', via: 'none', error: 'no agent endpoint known: listing the agent pods is forbidden: x (or pass --agent-endpoints)' });
    assert.equal(m.b!.via, 'annotation');
  });
});

describe('agent answers through the pods proxy', () => {
  const ep: AgentEndpoint = { node: 'a', via: 'pod-proxy', pod: 'nodemesh-system/agent-a', url: `${SERVER}/api/v1/namespaces/nodemesh-system/pods/agent-a:9880/proxy/statusz` };
  const status = (code: number, reason: string, message: string): string => JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });

  it('tells the API server\'s refusals (RBAC, unreachable, gone) from the agent\'s own answers', () => {
    assert.equal(describeAgentHttpFailure(ep, ep.url!, 403, status(403, 'Forbidden', 'pods "agent-a" is forbidden: User "dev" cannot get resource "pods/proxy" in API group "" in the namespace "nodemesh-system"')),
      'the API server refused to proxy to agent pod nodemesh-system/agent-a (403 Forbidden: pods "agent-a" is forbidden: User "dev" cannot get resource "pods/proxy" in API group "" in the namespace "nodemesh-system"): your user needs RBAC get on pods/proxy in namespace nodemesh-system');
    assert.equal(describeAgentHttpFailure({ ...ep, notReady: 'ContainersNotReady' }, ep.url!, 503, status(503, 'ServiceUnavailable', 'error trying to reach pod nodemesh-system/agent-a at 10.0.0.1:9880: ECONNREFUSED')),
      'the API server could not reach agent pod nodemesh-system/agent-a: error trying to reach pod nodemesh-system/agent-a at 10.0.0.1:9880: ECONNREFUSED (the pod is not Ready: ContainersNotReady)');
    assert.match(describeAgentHttpFailure(ep, ep.url!, 404, status(404, 'NotFound', 'pods "agent-a" not found')), /is gone .*run the command again/);
    assert.equal(describeAgentHttpFailure(ep, ep.url!, 500, 'internal agent trouble\nmore'), 'agent pod nodemesh-system/agent-a answered 500: internal agent trouble');
    assert.equal(describeAgentHttpFailure({ node: 'a', via: 'flag', url: 'http://10.0.0.1:9880/statusz' }, 'http://10.0.0.1:9880/metrics', 404, ''), 'http://10.0.0.1:9880/metrics answered 404');
    const timeout = Object.assign(new Error('t'), { name: 'TimeoutError' });
    assert.equal(describeAgentNetworkFailure(ep, ep.url!, timeout, 3000), 'agent pod nodemesh-system/agent-a through the API server (https://api.example:6443): no answer within 3000 ms');
  });

  it('status requests go through the reader\'s API fetch for pods, plain fetch for flags; the agent\'s Date is the clock', async () => {
    const asked: string[] = [];
    const apiFetch: AgentFetch = async (url) => {
      asked.push(`api ${url}`);
      if (url.includes('agent-b')) return new Response(status(403, 'Forbidden', 'no'), { status: 403, headers: { date: 'Sat, 21 Nov 2026 10:00:00 GMT' } });
      return new Response(JSON.stringify({ ready: true, version: '0.1.0' }), { status: 200, headers: { date: 'Sat, 21 Nov 2026 10:00:05 GMT' } });
    };
    const plain: AgentFetch = async (url) => { asked.push(`plain ${url}`); return new Response(JSON.stringify({ ready: false }), { status: 200 }); };
    const eps = planAgentEndpoints({ nodes: [node('a'), node('b'), node('c')], explicit: new Map([['c', 'http://10.0.0.3:9880']]), server: SERVER, pods: [agentPod('agent-a', { node: 'a' }), agentPod('agent-b', { node: 'b' })] });
    const r = await fetchAgentStatuses(eps, { reader: { proxyFetch: apiFetch }, fetchImpl: plain });
    assert.deepEqual(asked.sort(), [
      'api https://api.example:6443/api/v1/namespaces/nodemesh-system/pods/agent-a:9880/proxy/statusz',
      'api https://api.example:6443/api/v1/namespaces/nodemesh-system/pods/agent-b:9880/proxy/statusz',
      'plain http://10.0.0.3:9880/statusz',
    ]);
    assert.equal(r[0]!.status?.ready, true);
    assert.equal(r[0]!.clock?.date, 'Sat, 21 Nov 2026 10:00:05 GMT');
    assert.equal(r[0]!.via, 'pod-proxy');
    assert.match(r[1]!.error!, /needs RBAC get on pods\/proxy/);
    assert.equal(r[1]!.clock, undefined, 'a refusal of the API server carries its clock, not the agent\'s');
    assert.equal(r[2]!.via, 'flag');
  });

  it('discovery lists pods only when a node needs them, and turns a 403 into the RBAC it needs', async () => {
    let listed = 0;
    const base = { server: SERVER } as ClusterReader;
    const forbidden = Object.assign(new Error('listing pods: forbidden'), { cause: { code: 403 } });
    const reader = { ...base, listPods: async () => { listed++; throw forbidden; } } as ClusterReader;
    const all = await discoverAgentEndpoints(reader, [node('a', { 'nodemesh.io/agent-status-url': 'http://a/' })], new Map());
    assert.equal(listed, 0);
    assert.equal(all.get('a')?.via, 'annotation');
    const m = await discoverAgentEndpoints(reader, [node('b')], new Map());
    assert.equal(listed, 1);
    assert.equal(m.get('b')?.error, 'no agent endpoint known: listing the agent pods is forbidden: your user needs RBAC list on pods in namespace nodemesh-system (and get on pods/proxy there) (or pass --agent-endpoints)');
  });

  it('check: a node without an agent pod is a warning with the DaemonSet to look at; an unknown endpoint is skipped', () => {
    const results = computeChecks({
      now: Date.now(), requiredCrds: [], serverVersion: 'v1.32.0', nodes: [node('a'), node('b'), node('c')], nodeStates: [], caSecret: 'missing',
      agents: [
        { node: 'a', via: 'pod-proxy', pod: 'nodemesh-system/agent-a', url: 'u', status: { ready: true } },
        { node: 'b', via: 'pod-proxy', error: 'no agent pod on node b (is the DaemonSet running? kubectl -n nodemesh-system get ds nodemesh-agent)' },
        { node: 'c', via: 'none', error: 'no agent endpoint known' },
      ],
    }).filter((c) => c.group === 'nodemesh-agents');
    assert.deepEqual(results.map((c) => [c.name, c.status]), [['agent on b answers', 'warn'], ['agent on c answers', 'skip']]);
    assert.match(results[0]!.hint!, /not meshed; kubectl -n nodemesh-system describe ds nodemesh-agent/);
  });
});
