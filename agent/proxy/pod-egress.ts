/**
 * Pod-side anti-spoofing (B7): every pod of this node may send only from its own address. The node proxy names a
 * connection's source workload by its address (source-identity.ts), so a pod that sent with another pod's address
 * would borrow that pod's identity (and its policy). `PodEgressGuard` writes, per pod, its host-side veth's
 * ifindex → the pod's IPv4 address into nm_pod4_src and attaches bpf/pod-egress.c to that veth, tc ingress (what
 * the pod sends). The entry is written before the filter, and the filter removed before the entry (the program
 * drops IPv4 on a veth that has no entry). Like the STRICT guard, the map is pinned and the filters outlive the
 * agent; a restarted agent replaces them in place (same handle and priority). Level-triggered (`planPodEgress`): each
 * pass reads what is in place (host routes and links, one `ip` call each; our tc slot on every veth by netlink; the
 * map) and only writes, attaches or removes what differs, so a quiet pass changes nothing in the kernel.
 *
 * Scope: only interfaces that are veths carrying a pod's /32 route in this network namespace (the sandbox's pod
 * veths; a CNI's in a real node). Never in the machine's own network namespace unless the agent is told it runs
 * host-network there. A pod is guarded from the agent's first pass after its address appears in the Pod watch.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { V1Pod } from '@kubernetes/client-node';
import { BpfObject, DEFAULT_OBJECT_DIR, attachTc, detachTc, mapSpecs, nmPodSrcFlags, queryTc, type MapLike, type NmPod4SrcVal } from '../../bpf/index.ts';
import { getObjectId } from '../../bpf/link.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { POD_GUARD_TC, inInitialNetns } from './pod-ingress.ts';

const run = promisify(execFile);

/** One pod address to guard: its IPv4 address, whether it has IPv6 too, and whose it is (for messages). */
export interface PodSourceEntry {
  ip: string;
  ipv6: boolean;
  pod: string;
}

/** What one reconcile did. */
export interface PodEgressResult {
  guarded: number;
  /** Veths whose filter was attached or replaced this time (empty on a pass with nothing to do). */
  attached: string[];
  /** Filters removed from veths no planned pod owns. */
  detached: number;
  /** Entries written (new pods, changed addresses). */
  written: number;
  /** Entries deleted. */
  removed: number;
  problems: string[];
}

/**
 * The pods whose source addresses are guarded (pure): every pod of this node that may still send (not finished,
 * not host-network) with an IPv4 address. An address two live pods report (a reused one, the old pod's delete not
 * seen yet) is guarded once: the veth that carries its route is the one that owns it.
 */
export function planPodSources(pods: readonly V1Pod[]): PodSourceEntry[] {
  const byIp = new Map<string, PodSourceEntry>();
  for (const p of pods) {
    const phase = p.status?.phase;
    if (p.spec?.hostNetwork || phase === 'Succeeded' || phase === 'Failed') continue;
    const ips = (p.status?.podIPs ?? []).map((x) => x.ip).filter((ip): ip is string => !!ip);
    if (ips.length === 0 && p.status?.podIP) ips.push(p.status.podIP);
    const v4 = ips.find((ip) => !ip.includes(':'));
    if (!v4) continue;
    const entry = { ip: v4, ipv6: ips.some((ip) => ip.includes(':')), pod: `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}` };
    const prev = byIp.get(v4);
    byIp.set(v4, prev ? { ...prev, pod: `${prev.pod}, ${entry.pod}`, ipv6: prev.ipv6 || entry.ipv6 } : entry);
  }
  return [...byIp.values()].sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
}

/** An interface of this network namespace (`ip -d -j link show`). */
export interface LinkInfo {
  dev: string;
  ifindex: number;
  veth: boolean;
}

/** What is in place now, read once per pass: two `ip` calls for the whole node plus one netlink query per veth. */
export interface PodEgressObserved {
  /** IPv4 host routes without a gateway (`ip -j -4 route show`): address → the interface it goes out of. */
  routes: ReadonlyMap<string, string>;
  /** Interfaces by name. */
  links: ReadonlyMap<string, LinkInfo>;
  /** Every veth: ifindex → id of the program in our tc slot (ingress, POD_GUARD_TC), undefined when the slot is empty. */
  filters: ReadonlyMap<number, number | undefined>;
  /** nm_pod4_src now. */
  entries: ReadonlyMap<number, NmPod4SrcVal>;
  /** Id of the program this agent attaches (a filter running another one, e.g. an earlier agent's, is replaced). */
  progId: number;
}

/** The steps that bring the node to the plan, in the order they must run. */
export interface PodEgressSteps {
  /** 1. Entries to (re)write: before the filter of their veth (the program drops IPv4 on a veth without one). */
  write: Array<{ ifindex: number; dev: string; value: NmPod4SrcVal }>;
  /** 2. Filters to attach (missing) or replace (another program in our slot). */
  attach: Array<{ ifindex: number; dev: string; why: 'missing' | 'other program' }>;
  /** 3. Filters to remove: veths no pod of the plan owns any more. Before their entries. */
  detach: Array<{ ifindex: number; dev: string }>;
  /** 4. Entries to delete: their veth is unguarded (step 3) or gone. */
  forget: number[];
  /** Veths guarded once the steps ran, with their pod. */
  guarded: Array<{ ifindex: number; dev: string; pod: string }>;
  problems: string[];
}

/**
 * The steps from what is in place to what the plan wants (pure). Level-triggered: a pod whose entry holds its address
 * and whose veth runs our program costs nothing; only what is missing or different is written, only what is stale
 * removed. A filter on a veth that no planned pod owns (its pod finished, or the entry was lost) goes, since a filter
 * without an entry drops all the veth's IPv4.
 */
export function planPodEgress(entries: readonly PodSourceEntry[], observed: PodEgressObserved): PodEgressSteps {
  const steps: PodEgressSteps = { write: [], attach: [], detach: [], forget: [], guarded: [], problems: [] };
  const wanted = new Set<number>();
  for (const e of entries) {
    const dev = observed.routes.get(e.ip);
    const link = dev ? observed.links.get(dev) : undefined;
    if (!dev || !link) { steps.problems.push(`pod ${e.pod} (${e.ip}): no /32 route to it through an interface of this network namespace yet; its source address is not guarded`); continue; }
    if (!link.veth) { steps.problems.push(`pod ${e.pod} (${e.ip}): its route goes out ${dev}, which is not a veth; left alone`); continue; }
    if (wanted.has(link.ifindex)) { steps.problems.push(`pod ${e.pod} (${e.ip}): its route goes out ${dev}, which already carries another pod's address; only that one is guarded there`); continue; }
    wanted.add(link.ifindex);
    const value: NmPod4SrcVal = { addr: e.ip, flags: e.ipv6 ? nmPodSrcFlags.NM_POD_SRC_F_IPV6 : 0 };
    const have = observed.entries.get(link.ifindex);
    if (!have || have.addr !== value.addr || have.flags !== value.flags) steps.write.push({ ifindex: link.ifindex, dev, value });
    const prog = observed.filters.get(link.ifindex);
    if (prog !== observed.progId) steps.attach.push({ ifindex: link.ifindex, dev, why: prog === undefined ? 'missing' : 'other program' });
    steps.guarded.push({ ifindex: link.ifindex, dev, pod: e.pod });
  }
  const devOf = new Map([...observed.links.values()].map((l) => [l.ifindex, l.dev]));
  for (const [ifindex, prog] of observed.filters) {
    if (prog !== undefined && !wanted.has(ifindex)) steps.detach.push({ ifindex, dev: devOf.get(ifindex) ?? `ifindex ${ifindex}` });
  }
  for (const ifindex of observed.entries.keys()) if (!wanted.has(ifindex)) steps.forget.push(ifindex);
  const byIndex = (a: { ifindex: number }, b: { ifindex: number }): number => a.ifindex - b.ifindex;
  steps.write.sort(byIndex);
  steps.attach.sort(byIndex);
  steps.detach.sort(byIndex);
  steps.forget.sort((a, b) => a - b);
  return steps;
}

/** IPv4 host routes without a gateway, from `ip -j -4 route show` (pure). */
export function parseHostRoutes(json: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const r of JSON.parse(json) as Array<{ dst?: string; dev?: string; gateway?: string; type?: string }>) {
    if (!r.dst || !r.dev || r.gateway || r.dev === 'lo' || (r.type && r.type !== 'unicast')) continue;
    const m = /^(\d+\.\d+\.\d+\.\d+)(?:\/32)?$/.exec(r.dst);
    if (m && !out.has(m[1]!)) out.set(m[1]!, r.dev);
  }
  return out;
}

/** Interfaces from `ip -d -j link show` (pure). */
export function parseLinks(json: string): Map<string, LinkInfo> {
  const out = new Map<string, LinkInfo>();
  for (const l of JSON.parse(json) as Array<{ ifindex?: number; ifname?: string; linkinfo?: { info_kind?: string } }>) {
    if (l.ifname && l.ifindex) out.set(l.ifname, { dev: l.ifname, ifindex: l.ifindex, veth: l.linkinfo?.info_kind === 'veth' });
  }
  return out;
}

/** Keeps nm_pod4_src and the anti-spoofing filters in step with this node's pods. */
export class PodEgressGuard {
  readonly #pinDir: string;
  readonly #objectDir: string;
  readonly #log: Logger;
  readonly #allowInitialNetns: boolean;
  #obj: BpfObject | undefined;
  #map: MapLike<number, NmPod4SrcVal> | undefined;
  #progFd = -1;
  #progId = 0;

  constructor(o: { pinDir: string; log: Logger; objectDir?: string; allowInitialNetns?: boolean }) {
    this.#pinDir = o.pinDir;
    this.#objectDir = o.objectDir ?? DEFAULT_OBJECT_DIR;
    this.#log = o.log;
    this.#allowInitialNetns = o.allowInitialNetns ?? false;
  }

  /** Loads the program, reusing the pinned map (the datapath pinned it). */
  open(): void {
    if (this.#obj) return;
    this.#obj = BpfObject.load(join(this.#objectDir, 'pod-egress.bpf.o'), { mapPinDir: join(this.#pinDir, 'maps') });
    this.#progFd = this.#obj.program('nm_pod_egress').fd;
    this.#progId = getObjectId(this.#progFd);
    this.#map = this.#obj.map(mapSpecs.nm_pod4_src) as unknown as MapLike<number, NmPod4SrcVal>;
  }

  /** What is in place now: routes and links (one `ip` call each), our tc slot on every veth, the map. */
  async #observe(): Promise<PodEgressObserved> {
    const [routes, links] = await Promise.all([
      run('ip', ['-j', '-4', 'route', 'show']).then((r) => parseHostRoutes(r.stdout)),
      run('ip', ['-d', '-j', 'link', 'show']).then((r) => parseLinks(r.stdout)),
    ]);
    const filters = new Map<number, number | undefined>();
    for (const l of links.values()) {
      if (!l.veth) continue;
      try {
        filters.set(l.ifindex, queryTc({ ifindex: l.ifindex, direction: 'ingress', handle: POD_GUARD_TC.handle, priority: POD_GUARD_TC.priority }));
      } catch (err) {
        // Gone since the listing (a pod deleted meanwhile), or unreadable: taken as empty, so a planned pod's filter is
        // (re)attached and an unplanned veth left alone this pass.
        this.#log.debug('tc query failed', { dev: l.dev, error: describeError(err) });
        filters.set(l.ifindex, undefined);
      }
    }
    return { routes, links, filters, entries: new Map(this.#map!.entries()), progId: this.#progId };
  }

  /** Guards every planned pod's veth, touching only what is missing or different; unguards (filter, then entry) the rest. */
  async reconcile(entries: readonly PodSourceEntry[]): Promise<PodEgressResult> {
    if (entries.length && !this.#allowInitialNetns && inInitialNetns()) {
      throw new Error('pod anti-spoofing refused: this process runs in the machine\'s own network namespace, not a node\'s; the agent must run inside its node\'s namespace');
    }
    this.open();
    const map = this.#map!;
    const steps = planPodEgress(entries, await this.#observe());
    const problems = [...steps.problems];
    const failed = new Set<number>();
    for (const w of steps.write) {
      try {
        map.set(w.ifindex, w.value);
      } catch (err) {
        failed.add(w.ifindex);
        problems.push(`${w.dev} (${w.value.addr}): anti-spoofing entry not written: ${describeError(err)}`);
      }
    }
    const attached: string[] = [];
    for (const a of steps.attach) {
      if (failed.has(a.ifindex)) continue; // never a filter without its entry
      try {
        attachTc({ name: 'nm_pod_egress', fd: this.#progFd }, a.ifindex, 'ingress', POD_GUARD_TC.handle, POD_GUARD_TC.priority);
        attached.push(a.dev);
      } catch (err) {
        failed.add(a.ifindex);
        problems.push(`${a.dev}: anti-spoofing not attached (${a.why}): ${describeError(err)}`);
      }
    }
    const kept = new Set<number>();
    for (const d of steps.detach) {
      try {
        // Filter first, then the entry (a veth with the filter and no entry drops all its IPv4).
        detachTc({ ifindex: d.ifindex, direction: 'ingress', handle: POD_GUARD_TC.handle, priority: POD_GUARD_TC.priority });
      } catch (err) {
        kept.add(d.ifindex);
        problems.push(`${d.dev}: stale anti-spoofing filter not removed (its entry stays): ${describeError(err)}`);
      }
    }
    let removed = 0;
    for (const ifindex of steps.forget) {
      if (kept.has(ifindex)) continue;
      try {
        map.delete(ifindex);
        removed++;
      } catch (err) {
        problems.push(`ifindex ${ifindex}: stale anti-spoofing entry not removed: ${describeError(err)}`);
      }
    }
    const guarded = steps.guarded.filter((g) => !failed.has(g.ifindex));
    if (removed || attached.length || steps.detach.length || steps.write.length) {
      this.#log.info('pod source addresses guarded', { pods: guarded.length, written: steps.write.length, attached: attached.join(','), detached: steps.detach.length, removed });
    }
    for (const p of problems) this.#log.warn('pod anti-spoofing', { problem: p });
    return { guarded: guarded.length, attached, detached: steps.detach.length - kept.size, written: steps.write.length - failed.size, removed, problems };
  }


  /** Releases our fds; the pinned map and the attached filters stay. */
  close(): void {
    this.#obj?.close();
    this.#obj = undefined;
    this.#map = undefined;
  }
}
