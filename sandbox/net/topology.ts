/**
 * The sandbox's network: a fabric namespace with a bridge, one namespace per node wired to it, one per pod
 * wired to its node. Pure `compute*`/`plan*` functions say what to build; `build*`/`create*` run `ip`.
 * Every veth is created with both ends already inside sandbox namespaces, so nothing ever touches the
 * machine's own namespace.
 */
import { mkdir, rm } from 'node:fs/promises';
import { MAX_NODES, sha8, type SandboxConfig } from '../config.ts';
import { SandboxError } from '../errors.ts';
import { ipIn, ip, runCommand, sysctlIn } from '../exec.ts';
import type { StateStore } from '../state.ts';

/** One simulated node's network. */
export type NodeNet = {
  /** 1-based node number. */
  index: number;
  /** Node object name, also its cgroup and bpffs directory name. */
  name: string;
  netns: string;
  /** The node's address on the fabric (its InternalIP). */
  fabricAddr: string;
  /** The veth end inside the fabric namespace, enslaved to the bridge. */
  fabricPort: string;
  podCidr: string;
  /** The node's own address in its pod CIDR (.1), the pods' default gateway; it sits on the node's loopback. */
  gateway: string;
};

/** The whole sandbox network. */
export type Topology = { fabricNetns: string; bridge: string; nodes: NodeNet[] };

/** The names a pod's network uses, derived from its UID (interface names must stay within 15 characters). */
export type PodNetNames = { netns: string; hostVeth: string; hash: string };

/** The interface name every node and pod sees as its uplink. */
export const UPLINK = 'eth0';

/** The topology for `nodeCount` nodes: the fabric is 10.200.0.0/24 (node i at .10+i), pod CIDRs 10.244.i.0/24. */
export function computeTopology(cfg: SandboxConfig, nodeCount: number): Topology {
  if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > MAX_NODES) {
    throw new SandboxError('NM_ERR_SANDBOX_BAD_ARGUMENT', `--nodes ${nodeCount}: the sandbox builds 1 to ${MAX_NODES} nodes`);
  }
  const nodes: NodeNet[] = [];
  for (let i = 1; i <= nodeCount; i++) {
    nodes.push({
      index: i,
      name: `node-${i}`,
      netns: `${cfg.prefix}node-${i}`,
      fabricAddr: `10.200.0.${10 + i}`,
      fabricPort: `n${i}`,
      podCidr: `10.244.${i}.0/24`,
      gateway: `10.244.${i}.1`,
    });
  }
  return { fabricNetns: `${cfg.prefix}fabric`, bridge: 'br0', nodes };
}

/**
 * Routes of one node namespace (arguments to `ip route add`): the other nodes' pod CIDRs via their fabric
 * addresses, and an explicit unreachable default, so any address outside the sandbox dies here.
 * The fabric itself is on-link (its /24 comes with the address); the service CIDR has no route: the
 * datapath rewrites ClusterIPs at connect() before routing, and anything left falls into the unreachable default.
 */
export function planNodeRoutes(topo: Topology, node: NodeNet): string[][] {
  const routes: string[][] = [];
  for (const other of topo.nodes) {
    if (other.index === node.index) continue;
    routes.push([other.podCidr, 'via', other.fabricAddr, 'dev', UPLINK]);
  }
  routes.push(['unreachable', 'default']);
  return routes;
}

/** The network names of a pod, from its UID. */
export function computePodNetNames(cfg: SandboxConfig, podUid: string): PodNetNames {
  const hash = sha8(podUid);
  return { netns: `${cfg.prefix}pod-${hash}`, hostVeth: `nmp${hash}`, hash };
}

/** Commands that make a namespace ours and quiet: loopback up, IPv6 off (the sandbox is IPv4 only). */
async function prepareNetns(netns: string): Promise<void> {
  await ipIn(netns, 'link', 'set', 'lo', 'up');
  await sysctlIn(netns, 'net.ipv6.conf.all.disable_ipv6', '1');
  await sysctlIn(netns, 'net.ipv6.conf.default.disable_ipv6', '1');
}

/** Creates a named network namespace after recording it. */
export async function createNetns(store: StateStore, netns: string): Promise<void> {
  await store.record({ kind: 'netns', name: netns });
  await ip('netns', 'add', netns);
  await prepareNetns(netns);
}

/** Builds the fabric and every node namespace, recording each piece in the state first. */
export async function buildTopology(cfg: SandboxConfig, topo: Topology, store: StateStore): Promise<void> {
  const f = topo.fabricNetns;
  await createNetns(store, f);
  await store.record({ kind: 'veth', netns: f, name: topo.bridge });
  await ipIn(f, 'link', 'add', topo.bridge, 'type', 'bridge');
  await ipIn(f, 'link', 'set', topo.bridge, 'alias', cfg.marker);
  await ipIn(f, 'link', 'set', topo.bridge, 'up');
  for (const node of topo.nodes) {
    await createNetns(store, node.netns);
    await store.record({ kind: 'veth', netns: f, name: node.fabricPort });
    await ipIn(f, 'link', 'add', node.fabricPort, 'type', 'veth', 'peer', 'name', UPLINK, 'netns', node.netns);
    await ipIn(f, 'link', 'set', node.fabricPort, 'alias', cfg.marker);
    await ipIn(f, 'link', 'set', node.fabricPort, 'master', topo.bridge, 'up');
    await ipIn(node.netns, 'link', 'set', UPLINK, 'alias', cfg.marker);
    await ipIn(node.netns, 'addr', 'add', `${node.fabricAddr}/24`, 'dev', UPLINK);
    await ipIn(node.netns, 'link', 'set', UPLINK, 'up');
    await ipIn(node.netns, 'addr', 'add', `${node.gateway}/32`, 'dev', 'lo');
    await sysctlIn(node.netns, 'net.ipv4.ip_forward', '1');
    for (const r of planNodeRoutes(topo, node)) await ipIn(node.netns, 'route', 'add', ...r);
  }
}

/** Creates a pod's namespace and wires it to its node: /32 address, host route on the node, default via the node. */
export async function createPodNetwork(cfg: SandboxConfig, node: NodeNet, names: PodNetNames, podIp: string, store: StateStore): Promise<void> {
  await createNetns(store, names.netns);
  await store.record({ kind: 'veth', netns: node.netns, name: names.hostVeth });
  await ipIn(node.netns, 'link', 'add', names.hostVeth, 'type', 'veth', 'peer', 'name', UPLINK, 'netns', names.netns);
  await ipIn(node.netns, 'link', 'set', names.hostVeth, 'alias', cfg.marker);
  await ipIn(names.netns, 'link', 'set', UPLINK, 'alias', cfg.marker);
  await ipIn(names.netns, 'addr', 'add', `${podIp}/32`, 'dev', UPLINK);
  await ipIn(names.netns, 'link', 'set', UPLINK, 'up');
  await ipIn(node.netns, 'link', 'set', names.hostVeth, 'up');
  await ipIn(names.netns, 'route', 'add', node.gateway, 'dev', UPLINK, 'scope', 'link');
  await ipIn(names.netns, 'route', 'add', 'default', 'via', node.gateway, 'dev', UPLINK, 'src', podIp);
  await ipIn(node.netns, 'route', 'add', `${podIp}/32`, 'dev', names.hostVeth, 'scope', 'link', 'src', node.gateway);
}

/** Deletes a network namespace (its veths and routes go with it); a missing one is fine. */
export async function deleteNetns(netns: string): Promise<void> {
  const r = await runCommand('ip', ['netns', 'del', netns]);
  if (r.code !== 0 && !/No such file|not found|Invalid argument/i.test(r.stderr)) {
    throw new SandboxError('NM_ERR_SANDBOX_COMMAND_FAILED', `ip netns del ${netns} failed: ${r.stderr.trim()}`);
  }
}

/** Removes a pod's network: the namespace (with its veth pair and the node's host route) and its /etc/netns files. */
export async function deletePodNetwork(names: PodNetNames, store: StateStore): Promise<void> {
  await deleteNetns(names.netns);
  await rm(etcNetnsDir(names.netns), { recursive: true, force: true });
  await store.forget((e) => (e.kind === 'netns' && e.name === names.netns) || (e.kind === 'veth' && e.name === names.hostVeth) || (e.kind === 'dir' && e.path === etcNetnsDir(names.netns)));
}

/** /etc/netns/NAME: `ip netns exec` bind-mounts the files in it over /etc, which gives each pod its own hosts file. */
export function etcNetnsDir(netns: string): string {
  return `/etc/netns/${netns}`;
}

/** Creates /etc/netns/NAME after recording it. */
export async function ensureEtcNetnsDir(store: StateStore, netns: string): Promise<string> {
  const dir = etcNetnsDir(netns);
  await store.record({ kind: 'dir', path: dir });
  await mkdir(dir, { recursive: true });
  return dir;
}

/** The sandbox's network namespaces that exist now (by prefix; the caller proves they are ours). */
export async function listSandboxNetns(cfg: SandboxConfig): Promise<string[]> {
  const out = await runCommand('ip', ['-j', 'netns', 'list']);
  if (out.code !== 0 || !out.stdout.trim()) return [];
  const list = JSON.parse(out.stdout) as { name: string }[];
  return list.map((n) => n.name).filter((n) => n.startsWith(cfg.prefix) && isInstanceName(cfg, n));
}

/** Whether a namespace name follows this instance's naming (`nm-fabric`, `nm-node-N`, `nm-pod-HASH`). */
export function isInstanceName(cfg: SandboxConfig, name: string): boolean {
  const rest = name.slice(cfg.prefix.length);
  return name.startsWith(cfg.prefix) && /^(fabric|node-\d+|pod-[0-9a-f]{8})$/.test(rest);
}

/** Whether a namespace carries this instance's marker on one of its interfaces: proof it was made by us. */
export async function hasOurMarker(cfg: SandboxConfig, netns: string): Promise<boolean> {
  const r = await runCommand('ip', ['-n', netns, '-j', 'link', 'show']);
  if (r.code !== 0 || !r.stdout.trim()) return false;
  const links = JSON.parse(r.stdout) as { ifalias?: string }[];
  return links.some((l) => l.ifalias === cfg.marker);
}
