import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Pod } from '@kubernetes/client-node';
import { builtinImageOf, expandVars, planContainer } from './container-plan.ts';

const ctx = { nodeName: 'node-2', podIp: '10.244.2.5', hostIp: '10.200.0.12', nodeExecPath: '/usr/bin/node', repoRoot: '/repo' };
const pod = (containers: NonNullable<V1Pod['spec']>['containers']): V1Pod => ({
  metadata: { name: 'echo-1', namespace: 'shop', uid: 'u1', labels: { app: 'echo', version: 'v2' } },
  spec: { containers },
});

test('built-in images map to the workloads; registry and tag do not matter', () => {
  assert.equal(builtinImageOf('nodemesh/echo'), 'nodemesh/echo');
  assert.equal(builtinImageOf('docker.io/nodemesh/client:v3'), 'nodemesh/client');
  assert.equal(builtinImageOf('nginx:1.27'), undefined);
  const spec = { name: 'echo', image: 'nodemesh/echo:latest', args: ['--port', '9090'] };
  const p = planContainer(pod([spec]), spec, ctx);
  assert.deepEqual(p.argv, ['/usr/bin/node', '/repo/sandbox/workloads/echo.ts', '--port', '9090']);
  assert.equal(p.env.POD_NAME, 'echo-1');
  assert.equal(p.env.NODE_NAME, 'node-2');
  assert.equal(p.env.POD_IP, '10.244.2.5');
  assert.deepEqual(JSON.parse(p.env.POD_LABELS!), { app: 'echo', version: 'v2' });
});

test('command and args run as given, with env, the downward API and $(VAR) expansion', () => {
  const c = {
    name: 'sh', image: 'busybox', command: ['sh', '-c'], args: ['echo $(GREETING) from $(MY_NODE) $$(literal) $(UNKNOWN)'],
    env: [
      { name: 'GREETING', value: 'hi' },
      { name: 'MY_NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
      { name: 'VERSION', valueFrom: { fieldRef: { fieldPath: "metadata.labels['version']" } } },
      { name: 'SECRET', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } },
    ],
  };
  const p = planContainer(pod([c]), c, ctx);
  assert.deepEqual(p.argv, ['sh', '-c', 'echo hi from node-2 $(literal) $(UNKNOWN)']);
  assert.equal(p.env.VERSION, 'v2');
  assert.equal(p.env.SECRET, undefined);
  assert.match(p.warnings[0]!, /env SECRET/);
  assert.equal(expandVars('$(A)$(B)', { A: '1' }), '1$(B)');
});

test('an unknown image without a command is refused with the reason', () => {
  const c = { name: 'web', image: 'nginx' };
  assert.throws(() => planContainer(pod([c]), c, ctx), (err: Error & { code?: string }) => err.code === 'NM_ERR_SANDBOX_IMAGE_UNSUPPORTED' && /shop\/echo-1 container web: image "nginx"/.test(err.message));
});
