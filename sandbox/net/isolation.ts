/**
 * The isolation check: from every sandbox namespace, an address outside the sandbox is followed hop by hop
 * with `ip route get` (a route lookup, never a packet) and must end unreachable inside the sandbox. A
 * structural check adds that every veth's peer lives in a sandbox namespace and no other kind of device is there.
 */
import type { SandboxConfig } from '../config.ts';
import { runCommand } from '../exec.ts';
import { listSandboxNetns } from './topology.ts';

/** What one `ip route get` said. */
export type RouteLookup =
  | { kind: 'unreachable'; reason: string }
  | { kind: 'local'; dev: string }
  | { kind: 'via'; gateway: string; dev: string }
  | { kind: 'onlink'; dev: string }
  | { kind: 'error'; reason: string };

/** One step of a walk. */
export type RouteHop = { netns: string; lookup: RouteLookup };

/** The end of a walk: ok only when it ends inside the sandbox without a way out. */
export type RouteWalk = { from: string; address: string; hops: RouteHop[]; ok: boolean; verdict: string };

/**
 * Parses `ip -j route get ADDR` (stdout, stderr, exit code). ENETUNREACH (no route), EHOSTUNREACH (an
 * `unreachable` route: "No route to host"), EACCES (prohibit) and EINVAL (blackhole) are the kernel refusing
 * to route: the lookup ends there.
 */
export function parseRouteGet(stdout: string, stderr: string, code: number): RouteLookup {
  if (code !== 0) {
    const reason = stderr.trim();
    if (/unreachable|No route to host|prohibited|Permission denied|Invalid argument/i.test(reason)) return { kind: 'unreachable', reason };
    return { kind: 'error', reason: reason || `exit ${code}` };
  }
  let rows: { type?: string; gateway?: string; dev?: string }[];
  try {
    rows = JSON.parse(stdout) as typeof rows;
  } catch {
    return { kind: 'error', reason: `unparsable ip route get output: ${stdout.slice(0, 200)}` };
  }
  const r = rows[0];
  if (!r) return { kind: 'error', reason: 'ip route get printed no route' };
  if (r.type === 'unreachable' || r.type === 'blackhole' || r.type === 'prohibit') return { kind: 'unreachable', reason: r.type };
  if (r.type === 'local') return { kind: 'local', dev: r.dev ?? '' };
  if (r.gateway) return { kind: 'via', gateway: r.gateway, dev: r.dev ?? '' };
  return { kind: 'onlink', dev: r.dev ?? '' };
}

/**
 * Follows a lookup from `from` until it ends. `lookup` runs `ip route get` in a namespace; `ownerOf` names
 * the sandbox namespace holding an address (undefined when none does: the next hop would be outside).
 */
export async function walkRoute(
  from: string,
  address: string,
  lookup: (netns: string, address: string) => Promise<RouteLookup>,
  ownerOf: (address: string) => string | undefined,
  maxHops = 16,
): Promise<RouteWalk> {
  const hops: RouteHop[] = [];
  let netns = from;
  for (let i = 0; i < maxHops; i++) {
    const l = await lookup(netns, address);
    hops.push({ netns, lookup: l });
    const end = (ok: boolean, verdict: string): RouteWalk => ({ from, address, hops, ok, verdict });
    switch (l.kind) {
      case 'unreachable': return end(true, `unreachable in ${netns} (${l.reason})`);
      case 'local': return end(true, `${address} is local to ${netns}`);
      case 'error': return end(false, `route lookup failed in ${netns}: ${l.reason}`);
      case 'onlink': return end(false, `${netns} treats ${address} as on-link on ${l.dev}: a sandbox namespace must not route outside addresses onto a link`);
      case 'via': {
        const next = ownerOf(l.gateway);
        if (next === undefined) return end(false, `${netns} routes ${address} via ${l.gateway}, which no sandbox namespace holds: that is a way out`);
        if (next === netns) return end(false, `${netns} routes ${address} via its own address ${l.gateway}`);
        netns = next;
      }
    }
  }
  return { from, address, hops, ok: false, verdict: `no end after ${maxHops} hops (routing loop)` };
}

/** Renders a walk as `nm-pod-x → nm-node-1: unreachable ...`. */
export function formatWalk(w: RouteWalk): string {
  const path = w.hops.map((h) => h.netns).join(' → ');
  return `${w.ok ? 'ok  ' : 'FAIL'} ${w.address} from ${w.from}: ${path}: ${w.verdict}`;
}

/** Result of checkIsolation. */
export type IsolationReport = { ok: boolean; walks: RouteWalk[]; problems: string[]; namespaces: string[] };

/** Addresses outside the sandbox worth checking: documentation, public DNS, and the machine's own (non-loopback) addresses. */
export async function defaultOutsideAddresses(): Promise<string[]> {
  const set = new Set(['192.0.2.1', '8.8.8.8', '1.1.1.1', '172.16.0.1', '192.168.1.1']);
  const r = await runCommand('ip', ['-j', '-4', 'addr', 'show']);
  if (r.code === 0) {
    for (const link of JSON.parse(r.stdout) as { addr_info?: { local?: string }[] }[]) {
      for (const a of link.addr_info ?? []) if (a.local && !a.local.startsWith('127.')) set.add(a.local);
    }
  }
  return [...set];
}

async function lookupIn(netns: string, address: string): Promise<RouteLookup> {
  const r = await runCommand('ip', ['-n', netns, '-j', '-4', 'route', 'get', address]);
  return parseRouteGet(r.stdout, r.stderr, r.code);
}

type JsonLink = { ifname: string; link_type?: string; link_netnsid?: number; linkinfo?: { info_kind?: string } };

/**
 * Checks every namespace of the instance: route walks for each outside address, plus that each veth's peer
 * is in a sandbox namespace (never the machine's own) and only lo, veth and bridge devices exist.
 */
export async function checkIsolation(cfg: SandboxConfig, outside?: string[]): Promise<IsolationReport> {
  const namespaces = await listSandboxNetns(cfg);
  const addresses = outside ?? (await defaultOutsideAddresses());
  const owner = new Map<string, string>();
  const problems: string[] = [];
  for (const ns of namespaces) {
    const r = await runCommand('ip', ['-n', ns, '-j', '-4', 'addr', 'show']);
    if (r.code !== 0) continue;
    for (const link of JSON.parse(r.stdout) as { addr_info?: { local?: string }[] }[]) {
      for (const a of link.addr_info ?? []) if (a.local && !a.local.startsWith('127.')) owner.set(a.local, ns);
    }
    const ids = await runCommand('ip', ['-n', ns, '-j', 'netns', 'list-id']);
    const peers = new Map<number, string | undefined>();
    if (ids.code === 0 && ids.stdout.trim()) {
      for (const e of JSON.parse(ids.stdout) as { nsid: number; name?: string }[]) peers.set(e.nsid, e.name);
    }
    const links = await runCommand('ip', ['-n', ns, '-j', '-d', 'link', 'show']);
    for (const l of JSON.parse(links.stdout || '[]') as JsonLink[]) {
      const kind = l.linkinfo?.info_kind ?? (l.link_type === 'loopback' ? 'loopback' : 'unknown');
      if (!['loopback', 'veth', 'bridge'].includes(kind)) problems.push(`${ns}: device ${l.ifname} is a ${kind}; the sandbox only makes veths and bridges`);
      if (kind === 'veth' && l.link_netnsid !== undefined) {
        const peer = peers.get(l.link_netnsid);
        if (!peer || !namespaces.includes(peer)) problems.push(`${ns}: veth ${l.ifname} has its peer in namespace ${peer ?? `id ${l.link_netnsid} (unnamed: the machine's own?)`}, outside the sandbox`);
      }
    }
  }
  const walks: RouteWalk[] = [];
  for (const ns of namespaces) {
    for (const a of addresses) walks.push(await walkRoute(ns, a, lookupIn, (g) => owner.get(g)));
  }
  for (const w of walks) if (!w.ok) problems.push(formatWalk(w));
  return { ok: problems.length === 0 && namespaces.length > 0, walks, problems: namespaces.length ? problems : ['no sandbox namespace exists'], namespaces };
}
