/** Agent flags and environment. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_HEALTH_PORT, DEFAULT_METRICS_PORT, parseAgentConfig, SOCKMAP_DEFAULT } from './config.ts';
import { checkCgroupPath } from './node-datapath.ts';

describe('parseAgentConfig', () => {
  it('takes flags over environment and fills defaults', () => {
    const c = parseAgentConfig(['--node', 'node-1', '--cgroup', '/cg/node-1'], { KUBECONFIG: '/k', NODE_NAME: 'ignored' });
    assert.equal(c.nodeName, 'node-1');
    assert.equal(c.kubeconfig, '/k');
    assert.equal(c.bpffsDir, '/sys/fs/bpf/nodemesh/node-1');
    assert.equal(c.healthPort, DEFAULT_HEALTH_PORT);
    assert.equal(c.metricsPort, DEFAULT_METRICS_PORT);
    assert.equal(c.sockmap, SOCKMAP_DEFAULT);
    assert.equal(parseAgentConfig([], { NODE_NAME: 'n', NODEMESH_CGROUP: '/c', NODEMESH_SOCKMAP: 'true' }).sockmap, true);
  });

  it('says what is missing or malformed', () => {
    assert.throws(() => parseAgentConfig(['--cgroup', '/c'], {}), /NM_ERR_AGENT_CONFIG: the node name is missing/);
    assert.throws(() => parseAgentConfig(['--node', 'n'], {}), /the cgroup is missing/);
    assert.throws(() => parseAgentConfig(['--node', 'n', '--cgroup', '/c', '--sockmap', 'maybe'], {}), /--sockmap="maybe" is not a boolean/);
    assert.throws(() => parseAgentConfig(['--node', 'n', '--cgroup', '/c', '--health-port', '70000'], {}), /--health-port="70000"/);
    assert.throws(() => parseAgentConfig(['--node', 'n', '--cgroup', '/c', '--metrics-port', 'x'], {}), /--metrics-port="x" must be an integer/);
    assert.throws(() => parseAgentConfig(['--node', 'Node_1', '--cgroup', '/c'], {}), /not a valid Node name/);
  });
});

describe('metrics port', () => {
  const base = ['--node', 'n', '--cgroup', '/c'];
  it('is its own port (flag, then environment), or none', () => {
    assert.equal(parseAgentConfig([...base, '--metrics-port', '9881'], { NODEMESH_METRICS_PORT: '7000' }).metricsPort, 9881);
    assert.equal(parseAgentConfig(base, { NODEMESH_METRICS_PORT: '9881', NODEMESH_HEALTH_PORT: '9880' }).metricsPort, 9881);
    assert.equal(parseAgentConfig([...base, '--metrics-port', 'none'], {}).metricsPort, undefined);
    assert.equal(parseAgentConfig([...base, '--metrics-port', '0', '--health-port', '0'], {}).metricsPort, 0);
  });
  it('never shares the status port (that one is closed to pods, this one is not)', () => {
    assert.throws(() => parseAgentConfig([...base, '--metrics-port', '9880', '--health-port', '9880'], {}), /--metrics-port 9880 is also the --health-port/);
    assert.throws(() => parseAgentConfig([...base, '--metrics-port', String(DEFAULT_HEALTH_PORT)], {}), /also the --health-port/);
  });
});

describe('checkCgroupPath', () => {
  it('refuses the root of a cgroup2 mount unless allowed, and paths off cgroup2', () => {
    assert.match(checkCgroupPath('/tmp', ['/tmp'], false) ?? '', /root of the cgroup2 mount/);
    assert.equal(checkCgroupPath('/tmp', ['/tmp'], true), undefined);
    assert.match(checkCgroupPath('/tmp', ['/sys/fs/cgroup/unified'], false) ?? '', /not on a cgroup2 mount/);
    assert.match(checkCgroupPath('/nonexistent-x', ['/'], false) ?? '', /does not exist/);
  });
});

describe('--proxy-memory-max', () => {
  const base = ['--node', 'n1', '--cgroup', '/sys/fs/cgroup/n1'];
  it('takes bytes or Ki/Mi/Gi, from the flag, then the environment; none or absent = no limit', () => {
    assert.equal(parseAgentConfig([...base, '--proxy-memory-max', '512Mi'], {}).proxyMemoryMaxBytes, 512 * 2 ** 20);
    assert.equal(parseAgentConfig(base, { NODEMESH_PROXY_MEMORY_MAX: '1Gi' }).proxyMemoryMaxBytes, 2 ** 30);
    assert.equal(parseAgentConfig(base, { NODEMESH_PROXY_MEMORY_MAX: String(64 * 2 ** 20) }).proxyMemoryMaxBytes, 64 * 2 ** 20);
    assert.equal(parseAgentConfig(base, {}).proxyMemoryMaxBytes, undefined);
    assert.equal(parseAgentConfig([...base, '--proxy-memory-max', 'none'], { NODEMESH_PROXY_MEMORY_MAX: '1Gi' }).proxyMemoryMaxBytes, undefined);
  });
  it('refuses what is not a size, or too small for a proxy', () => {
    assert.throws(() => parseAgentConfig([...base, '--proxy-memory-max', '512MB'], {}), /--proxy-memory-max="512MB" is not a memory size of at least 16Mi/);
    assert.throws(() => parseAgentConfig([...base, '--proxy-memory-max', '1Mi'], {}), /at least 16Mi/);
  });
});
