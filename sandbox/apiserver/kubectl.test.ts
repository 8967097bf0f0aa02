/** Drives the real kubectl (/usr/bin/kubectl) against a started server over TLS with a temporary kubeconfig. */

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ApiServer } from './server.ts';
import { startApiServer } from './server.ts';

const KUBECTL = '/usr/bin/kubectl';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const APP_V1 = `apiVersion: v1
kind: Service
metadata:
  name: echo
  labels: {app: echo, tier: web}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  labels: {app: echo, tier: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo, version: v1}}
    spec:
      containers:
      - name: echo
        image: nodemesh/echo
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
        ports: [{containerPort: 8080}]
      - name: sidecar
        image: busybox
`;

// The same objects edited: a label, a port, a container and an env var removed; strategy changed.
const APP_V2 = `apiVersion: v1
kind: Service
metadata:
  name: echo
  labels: {app: echo}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  labels: {app: echo}
spec:
  replicas: 2
  strategy: {type: Recreate}
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo, version: v2}}
    spec:
      containers:
      - name: echo
        image: nodemesh/echo:2
        env: [{name: B, value: "3"}]
        ports: [{containerPort: 8080}]
`;

const CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: tlsmodes.kubectltest.nodemesh.io
spec:
  group: kubectltest.nodemesh.io
  scope: Namespaced
  names: {plural: tlsmodes, singular: tlsmode, kind: TLSMode, shortNames: [tm]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Mode, type: string, jsonPath: .spec.mode}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              mode: {type: string, enum: [STRICT, PERMISSIVE, DISABLED]}
`;

const SVC_AND_BAD_CR = `apiVersion: v1
kind: Service
metadata: {name: beside-bad}
spec:
  ports: [{port: 80}]
---
apiVersion: kubectltest.nodemesh.io/v1alpha1
kind: TLSMode
metadata: {name: x}
spec: {mode: FOO}
`;

describe('real kubectl against the API server', () => {
  let server: ApiServer;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const kubectl = (args: string[], stdin?: string): Promise<Run> =>
    new Promise((resolve) => {
      const child = execFile(KUBECTL, args, { env, timeout: 30_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
      if (stdin !== undefined) child.stdin!.end(stdin);
    });
  const ok = async (args: string[], stdin?: string): Promise<string> => {
    const r = await kubectl(args, stdin);
    assert.equal(r.code, 0, `kubectl ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };
  const file = async (name: string, text: string): Promise<string> => {
    const p = join(dir, name);
    await writeFile(p, text);
    return p;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-apiserver-kubectl-'));
    server = await startApiServer({ stateDir: join(dir, 'state') });
    const kubeconfig = join(dir, 'kubeconfig');
    await server.writeKubeconfig(kubeconfig);
    // A private HOME keeps kubectl's discovery cache out of the user's and away from other tests.
    env = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir, KUBECONFIG: kubeconfig };
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('get: tables, all namespaces, -o json, api-resources, api-versions', async () => {
    const ns = await ok(['get', 'ns']);
    assert.match(ns, /^NAME\s+STATUS\s+AGE/);
    assert.match(ns, /\nnodemesh-system\s+Active\s+\d+s/);
    const svc = await ok(['get', 'svc', '-A', '-o', 'wide']);
    assert.match(svc, /NAMESPACE\s+NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE\s+SELECTOR/);
    assert.match(svc, /default\s+kubernetes\s+ClusterIP\s+10\.96\.0\.1\s+<none>\s+443\/TCP/);
    const json = JSON.parse(await ok(['get', 'ns', 'default', '-o', 'json'])) as { metadata: { name: string } };
    assert.equal(json.metadata.name, 'default');
    const res = await ok(['api-resources']);
    assert.match(res, /deployments\s+deploy\s+apps\/v1\s+true\s+Deployment/);
    assert.match(res, /endpointslices\s+discovery\.k8s\.io\/v1\s+true\s+EndpointSlice/);
    assert.match(await ok(['api-versions']), /coordination\.k8s\.io\/v1/);
  });

  it('apply, apply again with removed fields, unchanged re-apply, label, patch, scale, -o yaml', async () => {
    const v1 = await file('app-v1.yaml', APP_V1);
    const v2 = await file('app-v2.yaml', APP_V2);
    assert.match(await ok(['apply', '-f', v1]), /service\/echo created\ndeployment.apps\/echo created/);
    const out = await ok(['apply', '-f', v2]);
    assert.match(out, /service\/echo configured\ndeployment.apps\/echo configured/);
    const d = JSON.parse(await ok(['get', 'deploy', 'echo', '-o', 'json'])) as {
      metadata: { labels: Record<string, string>; generation: number };
      spec: { replicas: number; strategy: unknown; template: { metadata: { labels: Record<string, string> }; spec: { containers: { name: string; image: string; env: unknown }[] } } };
    };
    assert.deepEqual(d.metadata.labels, { app: 'echo' }, 'the removed label is gone');
    assert.equal(d.spec.replicas, 2);
    assert.deepEqual(d.spec.strategy, { type: 'Recreate' });
    assert.deepEqual(
      d.spec.template.spec.containers.map((c) => c.name),
      ['echo'],
      'the removed container is gone',
    );
    assert.deepEqual(d.spec.template.spec.containers[0]!.env, [{ name: 'B', value: '3' }]);
    assert.equal(d.metadata.generation, 2);
    const svc = JSON.parse(await ok(['get', 'svc', 'echo', '-o', 'json'])) as { spec: { ports: { port: number }[] } };
    assert.deepEqual(
      svc.spec.ports.map((p) => p.port),
      [80],
      'the removed port is gone',
    );
    assert.match(await ok(['apply', '-f', v2]), /service\/echo unchanged\ndeployment.apps\/echo unchanged/);

    assert.match(await ok(['label', 'deploy', 'echo', 'team=mesh']), /labeled/);
    assert.match(await ok(['get', 'deploy', '-l', 'team=mesh', '-o', 'name']), /deployment.apps\/echo/);
    assert.equal((await ok(['get', 'deploy', '-l', 'team in (other)', '-o', 'name'])).trim(), '');
    await ok(['patch', 'deploy', 'echo', '--type', 'merge', '-p', '{"metadata":{"annotations":{"a":"b"}}}']);
    await ok(['patch', 'deploy', 'echo', '--type', 'json', '-p', '[{"op":"add","path":"/metadata/labels/j","value":"k"}]']);
    await ok(['patch', 'svc', 'echo', '-p', '{"spec":{"ports":[{"port":81,"name":"extra"}]}}']);
    assert.match(await ok(['scale', 'deploy', 'echo', '--replicas=1']), /scaled/);
    const yaml = await ok(['get', 'deploy', 'echo', '-o', 'yaml']);
    assert.match(yaml, /\n {4}a: b\n/);
    assert.match(yaml, /\n {4}j: k\n/);
    assert.match(yaml, /\n {2}replicas: 1\n/);
    const ports = await ok(['get', 'svc', 'echo', '-o', 'jsonpath={.spec.ports[*].port}']);
    assert.equal(ports, '80 81', 'a strategic patch merges ports by key');
    const table = await ok(['get', 'deploy', 'echo', '-o', 'wide']);
    assert.match(table, /NAME\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+AGE\s+CONTAINERS\s+IMAGES\s+SELECTOR\necho\s+0\/1\s+0\s+0\s+\S+\s+echo\s+nodemesh\/echo:2\s+app=echo/);
  });

  it('shows pods with IP and NODE in -o wide, and watches with -w', async () => {
    const pod = await file(
      'pod.yaml',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: wide-pod, labels: {app: wide}}\nspec:\n  nodeName: node-1\n  containers: [{name: c, image: nodemesh/echo}]\n',
    );
    await ok(['create', '-f', pod]);
    await ok(['patch', 'pod', 'wide-pod', '--subresource=status', '--type', 'merge', '-p', '{"status":{"phase":"Running","podIP":"10.244.1.5"}}']);
    const wide = await ok(['get', 'pods', '-o', 'wide']);
    assert.match(wide, /NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE\s+NOMINATED NODE\s+READINESS GATES/);
    assert.match(wide, /wide-pod\s+0\/1\s+Running\s+0\s+\S+\s+10\.244\.1\.5\s+node-1/);
    assert.match((await kubectl(['create', '-f', pod])).stderr, /AlreadyExists/);

    const child = spawn(KUBECTL, ['get', 'pods', '-l', 'app=wide', '-w', '--output-watch-events'], { env });
    let text = '';
    child.stdout.on('data', (b: Buffer) => (text += b.toString()));
    try {
      const wait = async (re: RegExp): Promise<void> => {
        for (let i = 0; i < 200 && !re.test(text); i++) await new Promise((r) => setTimeout(r, 25));
        assert.match(text, re);
      };
      await wait(/ADDED\s+wide-pod/);
      await ok(['label', 'pod', 'wide-pod', 'x=y']);
      await wait(/MODIFIED\s+wide-pod/);
      await ok(['delete', 'pod', 'wide-pod', '--grace-period=0', '--wait=false']);
      await wait(/DELETED\s+wide-pod/);
    } finally {
      child.kill();
    }
  });

  it('registers a CRD, lists it, rejects an invalid custom resource with its field path and stores nothing of it', async () => {
    const crd = await file('crd.yaml', CRD);
    await ok(['apply', '-f', crd]);
    assert.match(await ok(['get', 'crds']), /tlsmodes\.kubectltest\.nodemesh\.io\s+\d{4}-\d\d-\d\dT/);
    assert.match(await ok(['api-resources', '--api-group=kubectltest.nodemesh.io']), /tlsmodes\s+tm\s+kubectltest\.nodemesh\.io\/v1alpha1\s+true\s+TLSMode/);
    const bad = await kubectl(['apply', '-f', await file('bad.yaml', SVC_AND_BAD_CR)]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout, /service\/beside-bad created/);
    assert.match(bad.stderr, /The TLSMode "x" is invalid: spec\.mode: Unsupported value: "FOO": supported values: "STRICT", "PERMISSIVE", "DISABLED"/);
    const get = await kubectl(['get', 'tlsmode', 'x']);
    assert.notEqual(get.code, 0);
    assert.match(get.stderr, /NotFound/);
    const unknown = await kubectl(['apply', '-f', '-'], 'apiVersion: kubectltest.nodemesh.io/v1alpha1\nkind: TLSMode\nmetadata: {name: good}\nspec: {mode: STRICT, extra: 1}\n');
    assert.match(unknown.stderr, /strict decoding error: unknown field "spec.extra"/);
    await ok(['apply', '-f', '-'], 'apiVersion: kubectltest.nodemesh.io/v1alpha1\nkind: TLSMode\nmetadata: {name: good}\nspec: {mode: STRICT}\n');
    assert.match(await ok(['get', 'tm']), /NAME\s+MODE\ngood\s+STRICT/);
    await ok(['apply', '-f', '-'], 'apiVersion: kubectltest.nodemesh.io/v1alpha1\nkind: TLSMode\nmetadata: {name: good}\nspec: {}\n');
    assert.equal(await ok(['get', 'tm', 'good', '-o', 'jsonpath={.spec}']), '{}', 'apply of a custom resource removes fields (JSON merge patch)');
  });

  it('imperative create (protobuf bodies): configmap, secret, namespace, serviceaccount, token; auth can-i and whoami', async () => {
    await ok(['create', 'namespace', 'imperative']);
    await ok(['create', 'configmap', 'cfg', '-n', 'imperative', '--from-literal=k=v']);
    assert.equal(await ok(['get', 'cm', 'cfg', '-n', 'imperative', '-o', 'jsonpath={.data.k}']), 'v');
    await ok(['create', 'secret', 'generic', 'sec', '-n', 'imperative', '--from-literal=pw=hunter2']);
    assert.equal(await ok(['get', 'secret', 'sec', '-n', 'imperative', '-o', 'jsonpath={.type} {.data.pw}']), `Opaque ${Buffer.from('hunter2').toString('base64')}`);
    await ok(['create', 'serviceaccount', 'bot', '-n', 'imperative']);
    const token = (await ok(['create', 'token', 'bot', '-n', 'imperative', '--audience=nodemesh-ca'])).trim();
    assert.equal(token.split('.').length, 3);
    assert.equal((await ok(['auth', 'can-i', 'create', 'pods'])).trim(), 'yes');
    assert.match(await ok(['auth', 'whoami']), /nodemesh-admin/);
    const deploy = await kubectl(['create', 'deployment', 'd', '--image=nodemesh/echo']);
    assert.match(deploy.stderr, /protobuf bodies are understood for/, 'unsupported protobuf kinds say what to do instead');
  });

  it('deletes, with the garbage collector removing dependents', async () => {
    const d = JSON.parse(await ok(['get', 'deploy', 'echo', '-o', 'json'])) as { metadata: { uid: string } };
    await ok(['apply', '-f', '-'], `apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: echo-rs
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: echo, uid: ${d.metadata.uid}, controller: true}]
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec: {containers: [{name: c, image: i}]}
`);
    assert.match(await ok(['delete', 'deploy', 'echo']), /deployment.apps "echo" deleted/);
    for (let i = 0; i < 50; i++) {
      if ((await ok(['get', 'rs', '-o', 'name'])).trim() === '') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await ok(['get', 'rs', '-o', 'name'])).trim(), '');
    assert.match(await ok(['delete', '-f', join(dir, 'crd.yaml')]), /deleted/);
    assert.match((await kubectl(['get', 'crds'])).stderr, /No resources found/);
  });
});
