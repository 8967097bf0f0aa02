import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dashedIp, renderHostsFile, renderResolvConf } from './hosts.ts';

test('hosts file: self, services by every Kubernetes name, pods by dashed address and by name', () => {
  const text = renderHostsFile(
    { name: 'client', namespace: 'default', ip: '10.244.1.2' },
    [
      { name: 'echo', namespace: 'default', clusterIP: '10.96.0.20' },
      { name: 'api', namespace: 'other', clusterIP: '10.96.0.30' },
      { name: 'headless', namespace: 'default', clusterIP: 'None' },
      { name: 'pending', namespace: 'default' },
    ],
    [
      { name: 'echo-b', namespace: 'default', ip: '10.244.2.3' },
      { name: 'echo-a', namespace: 'default', ip: '10.244.2.2' },
      { name: 'no-ip-yet', namespace: 'default' },
    ],
  );
  const lines = text.split('\n');
  assert.ok(lines.includes('10.244.1.2\tclient'));
  assert.ok(lines.includes('10.96.0.20\techo.default.svc.cluster.local echo.default.svc echo.default echo'));
  assert.ok(lines.includes('10.96.0.30\tapi.other.svc.cluster.local api.other.svc api.other'), 'no short name across namespaces');
  assert.ok(!text.includes('headless') && !text.includes('pending') && !text.includes('no-ip-yet'));
  assert.ok(text.indexOf('echo-a') < text.indexOf('echo-b'), 'sorted, so the text is stable');
  assert.ok(lines.includes('10.244.2.2\t10-244-2-2.default.pod.cluster.local echo-a.default.pod.cluster.local'));
  assert.equal(dashedIp('10.244.2.2'), '10-244-2-2');
});

test('resolv.conf carries the Kubernetes search path', () => {
  assert.match(renderResolvConf('shop'), /^search shop\.svc\.cluster\.local svc\.cluster\.local cluster\.local$/m);
});
