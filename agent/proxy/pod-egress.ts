/**
 * Pod-side anti-spoofing (B7): every pod of this node may send only from its own address. The node proxy names a
 * connection's source workload by its address (source-identity.ts), so a pod that sent with another pod's address
 * would borrow that pod's identity (and its policy). `PodEgressGuard` writes, per pod, its host-side veth's
 * ifindex → the pod's IPv4 address into nm_pod4_src and attaches bpf/pod-egress.c to that veth, tc ingress (what
 * the pod sends). The entry is written before the filter, and the filter removed before the entry (the program
 * drops IPv4 on a veth that has no entry). Like the STRICT guard, the map is pinned and the filters outlive the
 * agent; a restarted agent re-attaches in place (same handle and priority).
 *
 * Scope: only interfaces that are veths carrying a pod's /32 route in this network namespace (the sandbox's pod
 * veths; a CNI's in a real node). Never in the machine's own network namespace unless the agent is told it runs
 * host-network there. A pod is guarded from the agent's first pass after its address appears in the Pod watch.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { V1Pod } from '@kubernetes/client-node';
import { BpfObject, DEFAULT_OBJECT_DIR, attachTc, detachTc, mapSpecs, nmPodSrcFlags, type MapLike, type NmPod4SrcVal } from '../../bpf/index.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { POD_GUARD_TC, findPodInterface, inInitialNetns } from './pod-ingress.ts';

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
  attached: string[];
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

/** Whether `dev` is a veth (the only kind of interface this guard attaches to). */
async function isVeth(dev: string): Promise<boolean> {
  const { stdout } = await run('ip', ['-d', '-j', 'link', 'show', 'dev', dev]);
  const link = (JSON.parse(stdout) as Array<{ linkinfo?: { info_kind?: string } }>)[0];
  return link?.linkinfo?.info_kind === 'veth';
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
    this.#map = this.#obj.map(mapSpecs.nm_pod4_src) as unknown as MapLike<number, NmPod4SrcVal>;
  }

  /** Guards every planned pod's veth; forgets (filter, then entry) veths whose pod is gone. */
  async reconcile(entries: readonly PodSourceEntry[]): Promise<PodEgressResult> {
    if (entries.length && !this.#allowInitialNetns && inInitialNetns()) {
      throw new Error('pod anti-spoofing refused: this process runs in the machine\'s own network namespace, not a node\'s; the agent must run inside its node\'s namespace');
    }
    this.open();
    const map = this.#map!;
    const problems: string[] = [];
    const attached: string[] = [];
    const want = new Map<number, NmPod4SrcVal>();
    for (const e of entries) {
      try {
        const itf = await findPodInterface(e.ip);
        if (!itf) { problems.push(`pod ${e.pod} (${e.ip}): no host-side interface in this network namespace yet; its source address is not guarded`); continue; }
        if (!(await isVeth(itf.dev))) { problems.push(`pod ${e.pod} (${e.ip}): its route goes out ${itf.dev}, which is not a veth; left alone`); continue; }
        const value: NmPod4SrcVal = { addr: e.ip, flags: e.ipv6 ? nmPodSrcFlags.NM_POD_SRC_F_IPV6 : 0 };
        const have = map.get(itf.ifindex);
        // Entry first: the program drops IPv4 on a veth it runs on without one.
        if (!have || have.addr !== value.addr || have.flags !== value.flags) map.set(itf.ifindex, value);
        attachTc({ name: 'nm_pod_egress', fd: this.#progFd }, itf.ifindex, 'ingress', POD_GUARD_TC.handle, POD_GUARD_TC.priority);
        want.set(itf.ifindex, value);
        attached.push(itf.dev);
      } catch (err) {
        problems.push(`pod ${e.pod} (${e.ip}): anti-spoofing not attached: ${describeError(err)}`);
      }
    }
    let removed = 0;
    for (const [ifindex] of [...map.entries()]) {
      if (want.has(ifindex)) continue;
      try {
        // Filter first, then the entry (a veth with the filter and no entry drops all its IPv4). A veth that went
        // with its pod took its filter along: detach finds nothing.
        detachTc({ ifindex, direction: 'ingress', handle: POD_GUARD_TC.handle, priority: POD_GUARD_TC.priority });
        map.delete(ifindex);
        removed++;
      } catch (err) {
        problems.push(`ifindex ${ifindex}: stale anti-spoofing entry not removed: ${describeError(err)}`);
      }
    }
    if (removed || attached.length !== this.#lastAttached) this.#log.info('pod source addresses guarded', { pods: want.size, removed, interfaces: attached.join(',') });
    this.#lastAttached = attached.length;
    for (const p of problems) this.#log.warn('pod anti-spoofing', { problem: p });
    return { guarded: want.size, attached, removed, problems };
  }

  #lastAttached = -1;

  /** Releases our fds; the pinned map and the attached filters stay. */
  close(): void {
    this.#obj?.close();
    this.#obj = undefined;
    this.#map = undefined;
  }
}
