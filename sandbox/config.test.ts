import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveSandboxConfig, sandboxPaths } from './config.ts';

test('the default instance uses the design\'s names; others derive their own', () => {
  const d = resolveSandboxConfig({});
  assert.deepEqual([d.prefix, d.stateDir, d.apiPort, d.cgroupDirName, d.bpfDir], ['nm-', '/run/nodemesh/sandbox', 16443, 'nodemesh-sandbox', '/sys/fs/bpf/nodemesh']);
  assert.equal(sandboxPaths(d).apiSocket, '/run/nodemesh/sandbox/apiserver.sock');
  const e = resolveSandboxConfig({ NODEMESH_SANDBOX_INSTANCE: 'e2e' });
  assert.equal(e.prefix, 'nm-e2e-');
  assert.notEqual(e.apiPort, 16443);
  assert.equal(resolveSandboxConfig({ NODEMESH_SANDBOX_INSTANCE: 'e2e', NODEMESH_SANDBOX_API_PORT: '17000' }).apiPort, 17000);
  assert.throws(() => resolveSandboxConfig({ NODEMESH_SANDBOX_INSTANCE: 'Bad-Name' }), /not a valid instance name/);
});
