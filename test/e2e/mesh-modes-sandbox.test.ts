/**
 * Privileged end-to-end test of the mTLS modes against plaintext from outside the mesh, through the real agents,
 * operator and proxies (its own sandbox instance, `modes`): two nodes, an echo pod on node-2 selected by an
 * AuthorizationPolicy DENY /admin, a MeshTLSPolicy switched PERMISSIVE → STRICT → DISABLED. Plaintext comes from
 * node-1's own namespace (another node's non-proxy traffic) and from node-2's (a host-network process), neither in
 * a node cgroup, so the socket datapath never sees it. Checks:
 *   - PERMISSIVE: node-2's agent steers the pod port (nft table in node-2's netns); /admin → 403 and never at the pod,
 *     / → 200 served by node-2's proxy;
 *   - STRICT: refused within 1 s (reset by the proxy, not a SYN timeout), counted in node-2's /metrics as
 *     nodemesh_plaintext_inbound_connections_total{outcome="strict_refused"};
 *   - DISABLED: the agent removes the steering; plaintext reaches the pod from the client's own address.
 * Needs root: without it the test FAILS. Brings its instance down at the end.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertMeshWired, fetchAgent } from './helpers/mesh-control-plane.ts';
import { ok, poller, requireRoot, sandboxInstance, tempDir } from './helpers/sandbox-instance.ts';
import { parseExposition, sumSamples } from '../../agent/metrics/testing/parse-exposition.ts';

const INSTANCE = 'modes';
const sb = sandboxInstance(INSTANCE, { nodemeshTimeoutMs: 300_000 });
const { cfg, run, kubectl } = sb;
const eventually = poller({ timeoutMs: 90_000, everyMs: 500 });
const NODE1_IP = '10.200.0.11';
const NODE2_IP = '10.200.0.12';

type Status = { mesh?: { proxy?: { state: string }; plaintextSteering?: { ports: number; problems: string[] } } };

const objects = (rawDir: string, mode: string): string => `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: shop, labels: {app: echo}}
spec:
  nodeName: node-2
  serviceAccountName: echo
  containers:
  - name: echo
    image: nodemesh/echo
    args: ["--port", "8080", "--raw-log", "${rawDir}/echo.raw"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: nodemesh.io/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: shop}
spec: {mode: ${mode}}
---
apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: echo-deny-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: echo}]
  action: DENY
  rules:
  - to: [{paths: [{prefix: /admin}]}]
`;

describe('mTLS modes vs plaintext, real agents (root)', { timeout: 900_000 }, () => {
  let rawDir = '';
  let podIp = '';
  const status = async (node: string): Promise<Status> => JSON.parse(await fetchAgent(cfg, node, 'statusz')) as Status;
  const rawLog = (): string => (existsSync(join(rawDir, 'echo.raw')) ? readFileSync(join(rawDir, 'echo.raw'), 'latin1') : '');
  /** Plaintext curl from a node's own namespace (outside its cgroup: the socket datapath does not apply). */
  async function nodeCurl(node: 'node-1' | 'node-2', path: string, maxTime = 3): Promise<{ code: number; status: number; body: string; ms: number }> {
    const r = await run('ip', ['netns', 'exec', `${cfg.prefix}${node}`, 'curl', '-s', '--path-as-is', '--max-time', String(maxTime), '-o', '-', '-w', '\n%{http_code}', `http://${podIp}:8080${path}`]);
    const nl = r.stdout.lastIndexOf('\n');
    return { code: r.code, status: Number(r.stdout.slice(nl + 1)) || 0, body: r.stdout.slice(0, Math.max(nl, 0)), ms: r.ms };
  }
  async function apply(mode: string): Promise<void> {
    const file = join(rawDir, `objects-${mode}.yaml`);
    await writeFile(file, objects(rawDir, mode));
    ok(await kubectl('apply', '-f', file), `kubectl apply (${mode})`);
  }
  const clientOf = (body: string): string => (JSON.parse(body) as { client: string }).client.split(':')[0]!;

  before(async () => {
    requireRoot('this end-to-end test needs root (network namespaces, cgroups, bpffs, nftables); run it with sudo');
    rawDir = await tempDir('nm-modes-e2e-');
    await sb.up('--nodes', '2', '--pods-per-node', '0');
    assertMeshWired(cfg);
    await apply('PERMISSIVE');
    await eventually('pod shop/echo Running', async () => (await kubectl('get', 'pod', 'echo', '-n', 'shop', '-o', 'jsonpath={.status.phase}')).stdout === 'Running');
    podIp = ok(await kubectl('get', 'pod', 'echo', '-n', 'shop', '-o', 'jsonpath={.status.podIP}'), 'echo pod IP');
    await eventually('node-2 proxy serving', async () => (await status('node-2')).mesh?.proxy?.state === 'serving', 120_000);
  });

  after(async () => {
    await sb.teardown({ dir: rawDir });
  });

  it('PERMISSIVE + DENY /admin: plaintext from another node and from the node itself meets the policy; / is served', async () => {
    await eventually('node-2 steers the echo port', async () => (await status('node-2')).mesh?.plaintextSteering?.ports === 1);
    const table = ok(await run('ip', ['netns', 'exec', `${cfg.prefix}node-2`, 'nft', 'list', 'set', 'ip', 'nodemesh_plaintext', 'steered']), 'nft list set');
    assert.match(table, new RegExp(`${podIp.replaceAll('.', '\\.')} \\. 8080`));
    for (const node of ['node-1', 'node-2'] as const) {
      for (const p of ['/admin', '//admin', '/%61dmin']) {
        const r = await nodeCurl(node, p);
        assert.equal(r.status, 403, `${node} ${p}: ${JSON.stringify(r)}`);
      }
      const r = await nodeCurl(node, `/public-${node}`);
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.equal(clientOf(r.body), NODE2_IP, 'served through node-2\'s proxy');
    }
    await new Promise((res) => setTimeout(res, 300));
    assert.ok(!/admin/i.test(rawLog()), 'a denied plaintext request reached the echo pod');
  });

  it('STRICT: plaintext is refused within 1 s and counted in /metrics', async () => {
    await apply('STRICT');
    // The switch is in force once a plaintext request stops being served.
    await eventually('STRICT applied', async () => (await nodeCurl('node-1', '/probe', 2)).status !== 200);
    for (const node of ['node-1', 'node-2'] as const) {
      const r = await nodeCurl(node, `/strict-${node}`, 5);
      assert.notEqual(r.status, 200, JSON.stringify(r));
      assert.ok([7, 52, 56].includes(r.code), `${node}: expected a refusal or reset, got curl exit ${r.code}`);
      assert.ok(r.ms < 1000, `${node}: refusal took ${r.ms} ms`);
    }
    assert.ok(!rawLog().includes('/strict-'));
    await eventually('strict_refused in node-2 /metrics', async () => {
      const exp = parseExposition(await fetchAgent(cfg, 'node-2', 'metrics'));
      return sumSamples(exp, 'nodemesh_plaintext_inbound_connections_total', { outcome: 'strict_refused' }) >= 2;
    }, 15_000);
  });

  it('DISABLED: the steering goes, plaintext reaches the pod directly', async () => {
    await apply('DISABLED');
    await eventually('node-2 steers nothing', async () => (await status('node-2')).mesh?.plaintextSteering?.ports === 0);
    const r = await eventually('plaintext served by the pod itself', async () => {
      const x = await nodeCurl('node-1', '/admin/direct');
      return x.status === 200 ? x : undefined;
    });
    assert.equal(clientOf(r.body), NODE1_IP, 'the pod sees node-1 itself, not a proxy');
    const gone = await run('ip', ['netns', 'exec', `${cfg.prefix}node-2`, 'nft', 'list', 'table', 'ip', 'nodemesh_plaintext']);
    assert.notEqual(gone.code, 0, 'the steering table is removed when nothing is steered');
  });
});
