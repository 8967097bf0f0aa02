/**
 * Privileged: the mesh path through the kernel on one simulated node, without the sandbox. Topology nmt-mesh-<pid>:
 * a node netns (the proxy, under ProxySupervisor, real workers), a client pod netns in the test cgroup (governed by
 * connect4/sockops), a server pod netns running echo (8080 STRICT + authorization, 9090 plain). Checks:
 *   - a mesh service connect goes to the proxy, whose workers recover the original destination from nm_pxy4_odst;
 *     policy on the normalized path (//admin, /./admin, /x/../admin, /%61dmin → 403, never at the backend);
 *   - a meshed pod dialled directly is redirected too; an L4-only service never reaches the proxy;
 *   - plaintext to the STRICT port that bypasses the datapath is steered to the proxy and reset at once (counted);
 *     without the steering table the tc guard still drops it; the proxy is let through;
 *   - kill -9 of the proxy: mesh connects refused within 1 s, L4 unaffected, serving again within 5 s;
 *   - the proxy itself runs in the governed cgroup: its marked connects are never redirected back to it.
 * Fails, never skips, when not root. Debug: nsenter --net=/var/run/netns/nmt-mesh-<pid>-n sh
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Datapath } from '../../bpf/datapath.ts';
import { planServiceEntries, readDatapathCounters, writeDatapathConfig, writeServicesBulk } from '../../bpf/lb-tables.ts';
import { mapSpecs } from '../../bpf/codecs.generated.ts';
import { openPinnedMap } from '../../bpf/map.ts';
import type { MeshHostSpec } from './helpers/mesh-proxy-host.ts';
import { ensureBpffs, findCgroup2Mount, sh, waitForLine } from './helpers/bpf-topology.ts';
import { requireRoot } from './helpers/sandbox-instance.ts';

const ID = `nmt-mesh-${process.pid}`;
const NODE_NS = `${ID}-n`;
const CLIENT_NS = `${ID}-c`;
const SERVER_NS = `${ID}-s`;
const NODE_IP = '10.252.0.1';
const CLIENT_IP = '10.252.0.2';
const SERVER_IP = '10.252.1.2';
const MESH_SVC = '10.96.88.10';
const L4_SVC = '10.96.88.11';
const TD = 'cluster.local';
const REPO = join(import.meta.dirname, '../..');
const PROXY_MARK = 0x4e4d;

type Curl = { code: number; status: number; body: string; ms: number };

describe('mesh datapath on one node (privileged)', { timeout: 180_000 }, () => {
  const cgroup = join(findCgroup2MountSafe(), ID);
  const pinDir = `/sys/fs/bpf/${ID}`;
  const work = mkdtempSync(join(tmpdir(), `${ID}-`));
  const children: ChildProcess[] = [];
  let dp: Datapath | undefined;
  let host: ChildProcess | undefined;
  let hostOut = '';
  let proxyPidFile = '';
  /** The proxy's plaintext counters as the helper last printed them. */
  const plaintextStats = (): { policed: number; strictRefused: number; refused: number } => {
    const lines = hostOut.split('\n').filter((l) => l.startsWith('{"plaintext":'));
    return lines.length ? (JSON.parse(lines.at(-1)!) as { plaintext: { policed: number; strictRefused: number; refused: number } }).plaintext : { policed: 0, strictRefused: 0, refused: 0 };
  };

  /** curl from the client pod: inside the test cgroup (datapath applies) unless `bypass`. */
  function curl(url: string, opts: { bypass?: boolean; maxTime?: number; raw?: boolean } = {}): Curl {
    const args = ['-s', '-o', '-', '-w', '\n%{http_code}', '--max-time', String(opts.maxTime ?? 3)];
    if (opts.raw) args.push('--path-as-is');
    const enter = `ip netns exec ${CLIENT_NS} curl ${args.map((a) => `'${a}'`).join(' ')} '${url}'`;
    const cmd = opts.bypass ? enter : `echo $$ > ${cgroup}/cgroup.procs && exec ${enter}`;
    const t0 = Date.now();
    const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
    const out = r.stdout ?? '';
    const nl = out.lastIndexOf('\n');
    return { code: r.status ?? -1, status: Number(out.slice(nl + 1)) || 0, body: out.slice(0, Math.max(nl, 0)), ms: Date.now() - t0 };
  }

  function rawLog(): string {
    return existsSync(join(work, 'raw-8080')) ? readFileSync(join(work, 'raw-8080'), 'latin1') : '';
  }

  before(async () => {
    requireRoot('this test needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run it with sudo');
    ensureBpffs();
    sh('make', ['-s', '-C', join(REPO, 'bpf')]);
    // Namespaces: node in the middle, a client pod and a server pod on veths whose host sides live in the node.
    for (const ns of [NODE_NS, CLIENT_NS, SERVER_NS]) sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', 'name', 'hc', 'netns', NODE_NS, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', CLIENT_NS]);
    sh('ip', ['link', 'add', 'name', 'hs', 'netns', NODE_NS, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', SERVER_NS]);
    sh('ip', ['-n', NODE_NS, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'hc']);
    sh('ip', ['-n', NODE_NS, 'addr', 'add', '10.252.1.1/24', 'dev', 'hs']);
    sh('ip', ['-n', CLIENT_NS, 'addr', 'add', `${CLIENT_IP}/24`, 'dev', 'eth0']);
    sh('ip', ['-n', SERVER_NS, 'addr', 'add', `${SERVER_IP}/24`, 'dev', 'eth0']);
    for (const [ns, devs] of [[NODE_NS, ['lo', 'hc', 'hs']], [CLIENT_NS, ['lo', 'eth0']], [SERVER_NS, ['lo', 'eth0']]] as const) {
      for (const d of devs) sh('ip', ['-n', ns, 'link', 'set', d, 'up']);
    }
    sh('ip', ['-n', CLIENT_NS, 'route', 'add', 'default', 'via', NODE_IP]);
    sh('ip', ['-n', SERVER_NS, 'route', 'add', 'default', 'via', '10.252.1.1']);
    sh('ip', ['netns', 'exec', NODE_NS, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    mkdirSync(cgroup);

    // Echo "pod": 8080 (STRICT, policy) with a raw log, 9090 plain.
    for (const port of [8080, 9090]) {
      const c = spawn('ip', ['netns', 'exec', SERVER_NS, process.execPath, join(REPO, 'sandbox/workloads/echo.ts'), '--port', String(port), '--host', SERVER_IP, '--raw-log', join(work, `raw-${port}`)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POD_NAME: 'echo-1' } });
      children.push(c);
      await waitForLine(c, (l) => l.includes('echo listening'));
    }

    // The datapath, attached to the client's cgroup; mesh flows go to the node proxy, refused unless it listens.
    dp = Datapath.open({ pinDir, cgroupPath: cgroup });
    writeDatapathConfig(dp, { proxy: { ip4: NODE_IP, port: 15001, mark: PROXY_MARK }, proxyCheck: true });
    writeServicesBulk(dp, [
      planServiceEntries({ id: 1, proto: 'TCP', l7: true, frontends: [{ addr: MESH_SVC, port: 80, kind: 'ClusterIP' }], backends: [{ id: 11, addr: SERVER_IP, port: 8080, ready: true }] }),
      // The meshed pod dialled directly: its own address is a mesh frontend.
      planServiceEntries({ id: 2, proto: 'TCP', l7: true, frontends: [{ addr: SERVER_IP, port: 8080, kind: 'ClusterIP' }], backends: [{ id: 21, addr: SERVER_IP, port: 8080, ready: true }] }),
      planServiceEntries({ id: 3, proto: 'TCP', frontends: [{ addr: L4_SVC, port: 80, kind: 'ClusterIP' }], backends: [{ id: 31, addr: SERVER_IP, port: 9090, ready: true }] }),
    ]);

    // The node proxy, planned from a NodeState, in the node netns.
    const authz = {
      defaultAction: 'Allow' as const,
      policies: [{ name: 'shop/deny-admin', action: 'DENY' as const, rules: [{ requiresHttp: true, to: [{ paths: [{ prefix: '/admin' }] }] }] }],
    };
    const spec: MeshHostSpec = {
      nodeName: 'node-t', host: NODE_IP, outboundPort: 15001, inboundPort: 15008, pinDir, runDir: work, mark: PROXY_MARK,
      state: {
        nodeName: 'node-t', trustDomain: TD, version: 'v1',
        workloads: [
          { namespace: 'shop', name: 'web-1', uid: 'web-1', serviceAccount: 'web', spiffeId: `spiffe://${TD}/ns/shop/sa/web`, podIPs: [CLIENT_IP], mtls: { mode: 'STRICT' }, sources: [] },
          { namespace: 'shop', name: 'echo-1', uid: 'echo-1', serviceAccount: 'echo', spiffeId: `spiffe://${TD}/ns/shop/sa/echo`, podIPs: [SERVER_IP], mtls: { mode: 'STRICT' }, authorization: authz, sources: [] },
        ],
        services: [{ namespace: 'shop', name: 'echo', clusterIPs: [MESH_SVC], mtlsMode: 'STRICT', ports: [{ port: 80, name: 'http', protocol: 'TCP', mode: 'HTTP', routes: [] }], sources: [] }],
      },
      services: [{ metadata: { namespace: 'shop', name: 'echo' }, spec: { clusterIP: MESH_SVC, clusterIPs: [MESH_SVC], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] } }],
      endpointSlices: [{ metadata: { namespace: 'shop', name: 'echo-x', labels: { 'kubernetes.io/service-name': 'echo' } }, addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }], endpoints: [{ addresses: [SERVER_IP], nodeName: 'node-t' }] }],
      nodes: [{ metadata: { name: 'node-t' }, status: { addresses: [{ type: 'InternalIP', address: NODE_IP }] } }],
    };
    writeFileSync(join(work, 'spec.json'), JSON.stringify(spec));
    // The proxy runs inside the governed cgroup, as on a real node: its own connects to the meshed pod (a mesh
    // frontend) carry the proxy mark, or connect4 would send them straight back to it.
    host = spawn('sh', ['-c', `echo $$ > ${cgroup}/cgroup.procs && exec nsenter --net=/var/run/netns/${NODE_NS} -- '${process.execPath}' '${join(REPO, 'test/e2e/helpers/mesh-proxy-host.ts')}' '${join(work, 'spec.json')}'`], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(host);
    host.stdout?.on('data', (d: Buffer) => { hostOut += d.toString(); });
    const ready = JSON.parse(await waitForLine(host, (l) => l.includes('"ready":true'), 30_000)) as { pidFile: string; problems: string[]; guarded: { attached: string[]; problems: string[] } };
    assert.deepEqual(ready.problems, []);
    assert.deepEqual(ready.guarded.attached, ['hs']);
    assert.deepEqual(ready.guarded.problems, []);
    proxyPidFile = ready.pidFile;
  });

  after(() => {
    const errors: string[] = [];
    const attempt = (what: string, fn: () => void): void => { try { fn(); } catch (err) { errors.push(`${what}: ${(err as Error).message}`); } };
    if (host?.pid && host.exitCode === null) {
      attempt('stop proxy host', () => { process.kill(host!.pid!, 'SIGTERM'); spawnSync('sleep', ['2']); });
    }
    // The proxy is the helper's child: kill it by the pid it recorded, in case the helper did not get to stop it.
    attempt('proxy', () => { if (proxyPidFile && existsSync(proxyPidFile)) { const pid = Number(readFileSync(proxyPidFile, 'utf8')); if (pid > 1) process.kill(pid, 'SIGKILL'); } });
    for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) attempt(`kill ${c.pid}`, () => process.kill(c.pid!, 'SIGKILL'));
    dp?.close();
    attempt('unpin', () => Datapath.destroy(pinDir));
    for (const ns of [CLIENT_NS, SERVER_NS, NODE_NS]) attempt(`netns ${ns}`, () => sh('ip', ['netns', 'del', ns]));
    attempt('cgroup', () => {
      for (let i = 0; i < 50 && existsSync(cgroup); i++) {
        const procs = readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').trim();
        if (!procs) { rmdirSync(cgroup); break; }
        spawnSync('sleep', ['0.1']);
      }
    });
    rmSync(work, { recursive: true, force: true });
    assert.deepEqual(errors, [], 'cleanup');
  });

  it('a mesh service connect goes through the proxy, which knows where it was going', () => {
    const r = curl(`http://${MESH_SVC}/api/items`);
    assert.equal(r.status, 200, JSON.stringify(r));
    const seen = JSON.parse(r.body) as { headers: Record<string, string>; client: string };
    // Forwarded by the proxy (from the node address, with the source identity it knows for the client pod).
    assert.equal(seen.headers['x-nodemesh-source-identity'], `spiffe://${TD}/ns/shop/sa/web`);
    assert.ok(seen.client.startsWith(`${NODE_IP}:`), seen.client);
  });

  it('denied path: 403 from the proxy in every spelling, and the backend never sees it', () => {
    for (const p of ['/admin', '//admin', '/./admin', '/x/../admin', '/%61dmin']) {
      const r = curl(`http://${MESH_SVC}${p}`, { raw: true });
      assert.equal(r.status, 403, `${p}: ${JSON.stringify(r)}`);
    }
    assert.ok(!/admin/i.test(rawLog()), 'a denied request reached the echo backend');
  });

  it('a meshed pod dialled directly is redirected to the proxy and policed', () => {
    assert.equal(curl(`http://${SERVER_IP}:8080/api/direct`).status, 200);
    assert.equal(curl(`http://${SERVER_IP}:8080//admin`, { raw: true }).status, 403);
    assert.ok(!/admin/i.test(rawLog()));
  });

  it('an L4-only service never reaches the proxy', () => {
    const r = curl(`http://${L4_SVC}/l4`);
    assert.equal(r.status, 200);
    assert.ok((JSON.parse(r.body) as { client: string }).client.startsWith(`${CLIENT_IP}:`), 'the backend sees the pod itself, not the proxy');
  });

  it('STRICT: plaintext that bypasses the datapath is refused at once (steered, reset by the proxy, counted); the plain port is not steered', async () => {
    const before = plaintextStats().strictRefused;
    const r = curl(`http://${SERVER_IP}:8080/bypass`, { bypass: true, maxTime: 2 });
    assert.notEqual(r.status, 200, JSON.stringify(r));
    assert.ok([7, 52, 56].includes(r.code), `expected a refusal or reset, got curl exit ${r.code} after ${r.ms} ms`);
    assert.ok(r.ms < 1000, `refusal took ${r.ms} ms`);
    assert.ok(!rawLog().includes('/bypass'));
    const until = Date.now() + 3000;
    while (plaintextStats().strictRefused <= before && Date.now() < until) await new Promise((res) => setTimeout(res, 50));
    assert.ok(plaintextStats().strictRefused > before, 'the refusal was not counted (strictRefused)');
    assert.equal(curl(`http://${SERVER_IP}:9090/plain`, { bypass: true }).status, 200);
  });

  it('STRICT without the steering table: the tc guard still drops plaintext in the kernel', () => {
    sh('ip', ['netns', 'exec', NODE_NS, 'nft', 'delete', 'table', 'ip', 'nodemesh_plaintext']);
    const before = readPodCount(pinDir);
    const r = curl(`http://${SERVER_IP}:8080/bypass2`, { bypass: true, maxTime: 2 });
    assert.equal(r.code, 28, `expected a timeout (dropped), got curl exit ${r.code}`);
    assert.ok(!rawLog().includes('/bypass2'));
    assert.ok(readPodCount(pinDir).dropped > before.dropped);
  });

  it('kill -9 of the proxy: mesh connects refused within 1 s, L4 unaffected, serving again within 5 s', async () => {
    const pid = Number(readFileSync(proxyPidFile, 'utf8'));
    const restartsSeen = hostOut.split('\n').filter((l) => l.includes('"serving":true')).length;
    const dropsBefore = readDatapathCounters(dp!).NM_CNT_DROP_PROXY_DOWN;
    process.kill(pid, 'SIGKILL');
    const t0 = Date.now();
    let refused: Curl | undefined;
    while (Date.now() - t0 < 1000) {
      const r = curl(`http://${MESH_SVC}/api/x`, { maxTime: 1 });
      if (r.code === 7) { refused = r; break; }
    }
    assert.ok(refused, 'mesh connects were not refused within 1 s of kill -9');
    assert.ok(refused.ms < 500, `refusal took ${refused.ms} ms (a refusal is immediate, not a timeout)`);
    // The first refusals may come from the dying proxy's listener itself (its workers shut it down as soon as they
    // see the primary gone, resetting what was queued); once the listener is gone from nm_pxy_sock, connect4
    // refuses before any packet leaves, and counts it. Both are refusals; the datapath's must follow within 1 s.
    while (readDatapathCounters(dp!).NM_CNT_DROP_PROXY_DOWN <= dropsBefore && Date.now() - t0 < 1000) {
      assert.equal(curl(`http://${MESH_SVC}/api/y`, { maxTime: 1 }).code, 7, 'a mesh connect while the proxy is down is refused');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(readDatapathCounters(dp!).NM_CNT_DROP_PROXY_DOWN > dropsBefore, 'connect4 did not refuse (NM_CNT_DROP_PROXY_DOWN) within 1 s of kill -9');
    assert.equal(curl(`http://${L4_SVC}/during`).status, 200);
    while (Date.now() - t0 < 5000) {
      if (hostOut.split('\n').filter((l) => l.includes('"serving":true')).length > restartsSeen && curl(`http://${MESH_SVC}/api/back`, { maxTime: 1 }).status === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(Date.now() - t0 < 5000, 'proxy not serving again within 5 s');
    assert.equal(curl(`http://${MESH_SVC}//admin`, { raw: true }).status, 403);
  });
});

function findCgroup2MountSafe(): string {
  try { return findCgroup2Mount(); } catch { return '/nonexistent-cgroup2'; }
}

function readPodCount(pinDir: string): { allowed: bigint; dropped: bigint } {
  const m = openPinnedMap(join(pinDir, 'maps', 'nm_pod_count'), mapSpecs.nm_pod_count);
  try {
    const sum = (i: number): bigint => ((m.get(i) ?? []) as bigint[]).reduce((a, b) => a + b, 0n);
    return { allowed: sum(0), dropped: sum(1) };
  } finally {
    m.close();
  }
}
