/**
 * The real kubectl against the embedded API server: `kubectl apply --server-side` with two field managers
 * (conflict, --force-conflicts, shared ownership, removal of fields a manager stops applying), a Gateway API
 * HTTPRoute with its CRD's list types and CEL, client-side edits detected as conflicts, and `kubectl logs`
 * reading CRI-format container logs as the sandbox kubelet writes them. Loopback only, no root.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CRD_DIRECTORY } from '../../crds/index.ts';
import { startApiServer, type ApiServer } from '../../sandbox/apiserver/server.ts';
import { CriStreamSplitter } from '../../sandbox/kubelet/cri-log.ts';

type Run = { code: number; stdout: string; stderr: string };

const configMap = (data: string, labels = '{app: demo}'): string => `apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: ${labels}}
data: {${data}}
`;

const DEPLOYMENT = (image: string, env: string): string => `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: ${image}
        ports: [{containerPort: 8080, name: http}]
        env: [${env}]
`;

const ROUTE = (port: number, hostnames = ''): string => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
${hostnames}  rules:
  - backendRefs: [{name: echo, port: ${port}}]
`;

describe('kubectl server-side apply and logs against the sandbox API server', () => {
  let dir: string;
  let api: ApiServer;
  let env: NodeJS.ProcessEnv;
  const logRoot = (): string => join(dir, 'pod-logs');
  const kubectl = (args: string[], input?: string): Promise<Run> =>
    new Promise((resolve) => {
      const child = execFile('/usr/bin/kubectl', args, { env, timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
      if (input !== undefined) child.stdin!.end(input);
    });
  const ok = async (args: string[], input?: string): Promise<string> => {
    const r = await kubectl(args, input);
    assert.equal(r.code, 0, `kubectl ${args.join(' ')} failed:\n${r.stderr}`);
    return r.stdout;
  };
  const json = async <T>(args: string[]): Promise<T> => JSON.parse(await ok([...args, '-o', 'json', '--show-managed-fields'])) as T;
  type Owned = { metadata: { managedFields?: { manager: string; operation: string }[] } };
  const managersOf = (o: Owned): string[] => (o.metadata.managedFields ?? []).map((e) => `${e.manager}/${e.operation}`);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-kubectl-ssa-'));
    api = await startApiServer({ stateDir: join(dir, 'state'), crdDirs: [CRD_DIRECTORY], podLogDirectory: (ns, name) => join(dir, 'pod-logs', `${ns}_${name}`) });
    const kubeconfig = join(dir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);
    // A private HOME keeps kubectl's discovery cache away from the user's and other tests'.
    env = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir, KUBECONFIG: kubeconfig };
  });
  after(async () => {
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('two managers: conflict (409 with fields and manager), --force-conflicts takes ownership, equal values are shared', async () => {
    assert.match(await ok(['apply', '--server-side', '-f', '-'], configMap('mode: strict, level: "1"')), /configmap\/settings serverside-applied/);
    const conflict = await kubectl(['apply', '--server-side', '--field-manager=platform', '-f', '-'], configMap('mode: permissive'));
    assert.notEqual(conflict.code, 0);
    assert.match(conflict.stderr, /Apply failed with 1 conflict: conflict with "kubectl": \.data\.mode/);
    assert.match(conflict.stderr, /--force-conflicts/, "kubectl's advice for a 409 apply conflict");
    assert.equal(await ok(['get', 'cm', 'settings', '-o', 'jsonpath={.data.mode}']), 'strict', 'nothing changed');

    await ok(['apply', '--server-side', '--field-manager=platform', '--force-conflicts', '-f', '-'], configMap('mode: permissive'));
    const cm = await json<Owned & { data: Record<string, string> }>(['get', 'cm', 'settings']);
    assert.deepEqual(cm.data, { mode: 'permissive', level: '1' });
    assert.deepEqual(managersOf(cm), ['kubectl/Apply', 'platform/Apply']);
    // kubectl re-applying its old value now conflicts with platform, the new owner.
    const back = await kubectl(['apply', '--server-side', '-f', '-'], configMap('mode: strict, level: "1"'));
    assert.match(back.stderr, /conflict with "platform": \.data\.mode/);
  });

  it('removes a field a manager stops applying, unless another manager owns it', async () => {
    // kubectl drops `level` (only it owns it) and the label (platform applied the same label: shared).
    await ok(['apply', '--server-side', '-f', '-'], configMap('mode: permissive', '{}'));
    const cm = await json<{ data: Record<string, string>; metadata: { labels?: Record<string, string> } }>(['get', 'cm', 'settings']);
    assert.deepEqual(cm.data, { mode: 'permissive' }, 'level had no other owner: removed');
    assert.deepEqual(cm.metadata.labels, { app: 'demo' }, 'the label is still applied by platform');
  });

  it('merges containers, ports and env by key, and sees client-side edits (kubectl edit/patch) as conflicts', async () => {
    await ok(['apply', '--server-side', '-f', '-'], DEPLOYMENT('nodemesh/echo:1', '{name: A, value: "1"}, {name: B, value: "2"}'));
    await ok(['set', 'image', 'deployment/web', 'web=nodemesh/echo:hotfix']);
    await ok(['patch', 'deployment', 'web', '--type=merge', '-p', '{"metadata":{"annotations":{"owner":"ops"}}}']);
    const conflict = await kubectl(['apply', '--server-side', '-f', '-'], DEPLOYMENT('nodemesh/echo:2', '{name: A, value: "1"}'));
    assert.match(conflict.stderr, /conflict with "kubectl-set" using apps\/v1: \.spec\.template\.spec\.containers\[name="web"\]\.image/);
    await ok(['apply', '--server-side', '--force-conflicts', '-f', '-'], DEPLOYMENT('nodemesh/echo:2', '{name: A, value: "1"}'));
    const d = await json<{ metadata: { annotations: Record<string, string> }; spec: { template: { spec: { containers: { image: string; env: unknown; ports: unknown }[] } } } }>(['get', 'deploy', 'web']);
    const c = d.spec.template.spec.containers[0]!;
    assert.equal(c.image, 'nodemesh/echo:2');
    assert.deepEqual(c.env, [{ name: 'A', value: '1' }], 'env B (applied before, not now) is removed by key');
    assert.deepEqual(c.ports, [{ containerPort: 8080, name: 'http', protocol: 'TCP' }], 'the port is matched by containerPort and the defaulted protocol');
    assert.equal(d.metadata.annotations['owner'], 'ops', "the patcher's annotation is not the applier's to remove");
    assert.match(await ok(['apply', '--server-side', '--dry-run=server', '-f', '-'], DEPLOYMENT('nodemesh/echo:3', '')), /serverside-applied \(server dry run\)/);
    assert.equal(await ok(['get', 'deploy', 'web', '-o', 'jsonpath={.spec.template.spec.containers[0].image}']), 'nodemesh/echo:2');
  });

  it('applies an HTTPRoute: CRD list types, two managers on different fields, CEL still enforced', async () => {
    assert.match(await ok(['apply', '--server-side', '-f', '-'], ROUTE(8080)), /httproute.gateway.networking.k8s.io\/echo serverside-applied/);
    await ok(['apply', '--server-side', '--field-manager=dns-team', '-f', '-'], 'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: echo}\nspec:\n  hostnames: [echo.mesh.local]\n');
    const route = await json<Owned & { spec: { hostnames: string[]; rules: { backendRefs: { port: number }[] }[] } }>(['get', 'httproute', 'echo']);
    assert.deepEqual(route.spec.hostnames, ['echo.mesh.local']);
    assert.equal(route.spec.rules[0]!.backendRefs[0]!.port, 8080);
    assert.deepEqual(managersOf(route), ['kubectl/Apply', 'dns-team/Apply']);
    const stolen = await kubectl(['apply', '--server-side', '--field-manager=dns-team', '-f', '-'], ROUTE(9090));
    assert.match(stolen.stderr, /conflict with "kubectl": \.spec\.rules/);
    const invalid = await kubectl(['apply', '--server-side', '-f', '-'], ROUTE(8080).replace(', port: 8080', ''));
    assert.notEqual(invalid.code, 0);
    assert.match(invalid.stderr, /Must have port for Service reference/);
  });

  it('kubectl logs: container choice, --tail, --timestamps, --previous, -f until the container stops', async () => {
    await ok(['apply', '-f', '-'], 'apiVersion: v1\nkind: Pod\nmetadata: {name: talker}\nspec:\n  containers:\n  - {name: main, image: nodemesh/echo}\n  - {name: helper, image: nodemesh/client}\n');
    const write = async (container: string, run: number, text: string): Promise<void> => {
      const d = join(logRoot(), 'default_talker', container);
      await mkdir(d, { recursive: true });
      const out = new CriStreamSplitter('stdout');
      await appendFile(join(d, `${run}.log`), out.push(text));
    };
    await write('main', 0, 'crashed run\n');
    await write('main', 1, 'one\ntwo\nthree\n');
    await write('helper', 0, 'helper says hi\n');
    const defaulted = await kubectl(['logs', 'talker']);
    assert.equal(defaulted.stdout, 'one\ntwo\nthree\n');
    assert.match(defaulted.stderr, /Defaulted container "main" out of: main, helper/);
    assert.equal(await ok(['logs', 'talker', '-c', 'helper']), 'helper says hi\n');
    assert.equal(await ok(['logs', 'talker', '-c', 'main', '--tail=1']), 'three\n');
    assert.match(await ok(['logs', 'talker', '-c', 'main', '--tail=1', '--timestamps']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z three\n$/);
    assert.equal(await ok(['logs', 'talker', '-c', 'main', '--previous']), 'crashed run\n');
    const none = await kubectl(['logs', 'talker', '-c', 'helper', '--previous']);
    assert.match(none.stderr, /previous terminated container "helper" in pod "talker" not found/);

    const setState = (running: boolean): Promise<string> =>
      ok(['patch', 'pod', 'talker', '--subresource=status', '--type=merge', '-p', JSON.stringify({ status: { phase: 'Running', containerStatuses: [{ name: 'main', image: 'nodemesh/echo', imageID: '', ready: running, restartCount: 1, state: running ? { running: { startedAt: '2026-01-01T00:00:00Z' } } : { terminated: { exitCode: 0, reason: 'Completed' } } }] } })]);
    await setState(true);
    const follow = spawn('/usr/bin/kubectl', ['logs', '-f', 'talker', '-c', 'main', '--tail=1'], { env });
    let out = '';
    follow.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number>((resolve) => follow.on('exit', (code) => resolve(code ?? 1)));
    try {
      const waitFor = async (re: RegExp): Promise<void> => {
        for (let i = 0; i < 200 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 50));
        assert.match(out, re);
      };
      await waitFor(/three\n/);
      await write('main', 1, 'four\n');
      await waitFor(/four\n/);
      await setState(false);
      const code = await Promise.race([exited, new Promise<number>((r) => setTimeout(() => r(-1), 10_000))]);
      assert.equal(code, 0, 'kubectl logs -f ends when the container stops');
      assert.equal(out, 'three\nfour\n');
    } finally {
      follow.kill();
    }
  });

  it('answers protobuf-preferring typed clients in JSON with a JSON Content-Type', async () => {
    const r = await kubectl(['create', 'serviceaccount', 'bot', '-v=8']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Accept: application\/vnd\.kubernetes\.protobuf,\s*application\/json/i, 'kubectl asked for protobuf first');
    assert.match(r.stderr, /Content-Type: application\/json/i);
    assert.match(r.stdout, /serviceaccount\/bot created/);
  });
});
