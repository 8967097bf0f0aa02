/** planProxyCgroup and the OOM counter parser: where the proxy's memory limit goes on v2, hybrid and v1-less hosts. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseOomKills, planProxyCgroup, type ProxyCgroupFacts } from './proxy-cgroup.ts';

const MiB = 2 ** 20;
const V2_MOUNTS = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n';
const HYBRID_MOUNTS = [
  'tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0',
  'cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0',
  'cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0',
  'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
].join('\n');
const facts = (o: Partial<ProxyCgroupFacts>): ProxyCgroupFacts => ({
  nodeCgroup: '/sys/fs/cgroup/nodemesh-sb/node-1', nodeControllers: 'cpu io memory pids', procSelfCgroup: '0::/nodemesh-sb/supervisor\n', procMounts: V2_MOUNTS, scope: 'node-1-0a1b2c3d', ...o,
});

describe('the proxy\'s memory cgroup', () => {
  it('cgroup v2 with the memory controller: <node cgroup>/nodemesh-proxy, memory.max, the whole group killed on OOM', () => {
    const r = planProxyCgroup(facts({}), 256 * MiB);
    assert.ok('plan' in r);
    assert.deepEqual(r.plan, {
      hierarchy: 'v2', dir: '/sys/fs/cgroup/nodemesh-sb/node-1/nodemesh-proxy', limitFile: 'memory.max', limitBytes: 256 * MiB,
      eventsFile: 'memory.events', enableIn: '/sys/fs/cgroup/nodemesh-sb/node-1', oomGroup: true,
    });
  });

  it('a hybrid host (memory on v1): a child of the agent\'s own v1 memory cgroup, named per node and instance', () => {
    const r = planProxyCgroup(facts({ nodeControllers: 'hugetlb\n', procMounts: HYBRID_MOUNTS, procSelfCgroup: '9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n' }), 64 * MiB);
    assert.ok('plan' in r);
    assert.deepEqual(r.plan, {
      hierarchy: 'v1-memory', dir: '/sys/fs/cgroup/memory/process_api/abc/nodemesh-proxy-node-1-0a1b2c3d', limitFile: 'memory.limit_in_bytes', limitBytes: 64 * MiB,
      eventsFile: 'memory.oom_control', oomGroup: false,
    });
  });

  it('no memory controller anywhere: a problem that says why, and no plan', () => {
    const r = planProxyCgroup(facts({ nodeControllers: 'cpu pids' }), 64 * MiB);
    assert.ok('problem' in r);
    assert.match(r.problem, /no memory controller .*cgroup\.controllers has none \("cpu pids"\) and no cgroup v1 memory hierarchy is mounted/);
    const unreadable = planProxyCgroup(facts({ nodeControllers: undefined }), 64 * MiB);
    assert.ok('problem' in unreadable && /unreadable/.test(unreadable.problem));
  });

  it('refuses a limit too small to run a proxy (a typo in bytes would OOM-loop it)', () => {
    const r = planProxyCgroup(facts({}), 4096);
    assert.ok('problem' in r && /at least 16 MiB/.test(r.problem));
  });

  it('reads oom_kill from v2 memory.events and v1 memory.oom_control alike', () => {
    assert.equal(parseOomKills('low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n'), 2);
    assert.equal(parseOomKills('oom_kill_disable 0\nunder_oom 0\noom_kill 7\n'), 7);
    assert.equal(parseOomKills('oom_kill_disable 0\nunder_oom 0\n'), 0, 'older kernels: no counter');
  });
});
