/**
 * Pod-side enforcement of the mTLS modes. (1) STRICT, in the kernel: writes the guarded (pod address, port) pairs into nm_pod4_ingress (only the
 * node proxy's address may connect to them) and attaches the tc guard (bpf/pod-ingress.c) on the host-side veth
 * of every guarded pod, egress (towards the pod). The map is pinned with the node's other maps, and a tc filter
 * outlives the agent, so enforcement holds while the agent restarts; a restarted agent re-attaches in place.
 * (2) Plaintext steering (`PlaintextSteering`): an nftables table in this node's network namespace that DNATs new
 * connections to steered pod ports (STRICT, and PERMISSIVE with a policy: plan-plaintext.ts) to the proxy's plaintext
 * listener, which resets them (STRICT) or serves them as unauthenticated under the pod's policy. Also level-triggered
 * (read back, rewritten atomically when it differs) and left in place when the agent stops.
 */
import { execFile, spawn } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BpfObject, DEFAULT_OBJECT_DIR, attachTc, mapSpecs, nmPodFlags, type MapLike, type NmPod4Key, type NmPod4Policy } from '../../bpf/index.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { STEERING_TABLE, parseSteeringState, planSteering, renderSteeringScript, steeringMatches, type PlaintextInboundEntry, type SteeringSpec } from './plan-plaintext.ts';
import type { PodIngressEntry } from './plan-proxy.ts';

const run = promisify(execFile);

/** tc handle and priority of our filter ('NM'), so re-attaching replaces it in place and never stacks a second one. */
export const POD_GUARD_TC = { handle: 0x4e4d, priority: 1 } as const;

/** What one reconcile did. */
export interface PodIngressResult {
  written: number;
  deleted: number;
  /** Interfaces the guard was attached to (or confirmed on) this time. */
  attached: string[];
  problems: string[];
}

/** The desired map content: every STRICT pod port, guarded for `allowSrc`. */
export function planPodIngress(entries: readonly PodIngressEntry[], allowSrc: string): Array<[NmPod4Key, NmPod4Policy]> {
  const seen = new Set<string>();
  const out: Array<[NmPod4Key, NmPod4Policy]> = [];
  for (const e of entries) {
    if (e.ip.includes(':')) continue; // IPv6 pods: no guard program yet (connect6 & co. come with IPv6)
    const k = `${e.ip}:${e.port}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push([{ addr: e.ip, port: e.port }, { allow_src: allowSrc, flags: nmPodFlags.NM_POD_F_STRICT }]);
  }
  return out.sort((a, b) => (`${a[0].addr}:${a[0].port}` < `${b[0].addr}:${b[0].port}` ? -1 : 1));
}

/** The host-side interface of a pod address in this network namespace (its /32 route), with its ifindex. */
export async function findPodInterface(podIp: string): Promise<{ dev: string; ifindex: number } | undefined> {
  const { stdout } = await run('ip', ['-j', 'route', 'get', podIp]);
  const route = (JSON.parse(stdout) as Array<{ dev?: string; gateway?: string; type?: string }>)[0];
  // A pod of this node is reached directly on its veth; a gateway or loopback means it is not ours.
  if (!route?.dev || route.gateway || route.dev === 'lo' || route.type === 'local') return undefined;
  const link = (JSON.parse((await run('ip', ['-j', 'link', 'show', 'dev', route.dev])).stdout) as Array<{ ifindex?: number }>)[0];
  return link?.ifindex ? { dev: route.dev, ifindex: link.ifindex } : undefined;
}

/** Keeps nm_pod4_ingress and the tc guards in step with the plan. */
export class PodIngressGuard {
  readonly #pinDir: string;
  readonly #objectDir: string;
  readonly #allowSrc: string;
  readonly #log: Logger;
  #obj: BpfObject | undefined;
  #map: MapLike<NmPod4Key, NmPod4Policy> | undefined;
  #progFd = -1;

  constructor(o: { pinDir: string; allowSrc: string; log: Logger; objectDir?: string }) {
    this.#pinDir = o.pinDir;
    this.#objectDir = o.objectDir ?? DEFAULT_OBJECT_DIR;
    this.#allowSrc = o.allowSrc;
    this.#log = o.log;
  }

  /** Loads the guard program, reusing the pinned map (the datapath pinned it). */
  open(): void {
    if (this.#obj) return;
    this.#obj = BpfObject.load(join(this.#objectDir, 'pod-ingress.bpf.o'), { mapPinDir: join(this.#pinDir, 'maps') });
    this.#progFd = this.#obj.program('nm_pod_ingress').fd;
    this.#map = this.#obj.map(mapSpecs.nm_pod4_ingress) as unknown as MapLike<NmPod4Key, NmPod4Policy>;
  }

  /** Writes the guarded ports (stale ones deleted) and makes sure each guarded pod's veth runs the guard. */
  async reconcile(entries: readonly PodIngressEntry[]): Promise<PodIngressResult> {
    this.open();
    const map = this.#map!;
    const desired = planPodIngress(entries, this.#allowSrc);
    const want = new Map(desired.map(([k, v]) => [`${k.addr}:${k.port}`, [k, v] as const]));
    const have = new Map([...map.entries()].map(([k, v]) => [`${k.addr}:${k.port}`, [k, v] as const]));
    const problems: string[] = [];
    const attached: string[] = [];
    // Attach first, then list the ports: the program passes everything not listed, so the order never blocks a
    // pod that is not guarded yet.
    for (const ip of new Set(desired.map(([k]) => k.addr))) {
      try {
        const itf = await findPodInterface(ip);
        if (!itf) { problems.push(`pod ${ip}: no host-side interface in this network namespace (not a pod of this node?); its STRICT ports are not guarded`); continue; }
        // Same handle and priority every time: the kernel replaces our filter in place, never a second one.
        attachTc({ name: 'nm_pod_ingress', fd: this.#progFd }, itf.ifindex, 'egress', POD_GUARD_TC.handle, POD_GUARD_TC.priority);
        attached.push(itf.dev);
      } catch (err) {
        problems.push(`pod ${ip}: attaching the STRICT guard failed: ${describeError(err)}`);
      }
    }
    const writes = [...want.values()].filter(([k, v]) => { const h = have.get(`${k.addr}:${k.port}`); return !h || h[1].allow_src !== v.allow_src || h[1].flags !== v.flags; });
    if (writes.length) map.setMany(writes.map(([k, v]) => [k, v]));
    const stale = [...have.values()].filter(([k]) => !want.has(`${k.addr}:${k.port}`)).map(([k]) => k);
    if (stale.length) map.deleteMany(stale);
    if (writes.length || stale.length) this.#log.info('STRICT pod ports guarded', { ports: desired.length, written: writes.length, deleted: stale.length, interfaces: attached.join(',') });
    for (const p of problems) this.#log.warn('pod ingress guard', { problem: p });
    return { written: writes.length, deleted: stale.length, attached, problems };
  }

  /** Releases our fds; the pinned map and the attached filters stay. */
  close(): void {
    this.#obj?.close();
    this.#obj = undefined;
    this.#map = undefined;
  }
}

/** What one steering reconcile did. */
export interface SteeringResult {
  /** Steered pod ports now in the table. */
  ports: number;
  /** Whether the table was (re)written or removed this time. */
  changed: boolean;
  problems: string[];
}

/** Runs `nft` with `args`, feeding `input` on stdin; resolves with stdout, rejects with stderr named. */
function runNft(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('nft', args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (err) => reject(new Error(`cannot run nft (${describeError(err)}): install nftables on the node`)));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    // nft may exit before reading everything (a syntax error): its answer is in stderr, not an EPIPE here.
    child.stdin?.on('error', () => {});
    if (input !== undefined) child.stdin?.end(input);
  });
}

/**
 * Whether this process runs in the machine's own network namespace (the one PID 1 uses). The steering table belongs
 * in a node's namespace only; written in the machine's own it would steer the machine's traffic.
 */
export function inInitialNetns(): boolean {
  try {
    return readlinkSync('/proc/self/ns/net') === readlinkSync('/proc/1/ns/net');
  } catch {
    return false; // /proc/1 unreadable (not root, or a pid namespace): not provably the machine's namespace
  }
}

/** Keeps the plaintext steering table of this network namespace in step with the plan. */
export class PlaintextSteering {
  readonly #proxy: { ip: string; port: number; mark: number };
  readonly #log: Logger;
  readonly #allowInitialNetns: boolean;

  /** `proxy`: the plaintext listener of the node proxy and the mark of its own connects (never steered). */
  constructor(o: { proxy: { ip: string; port: number; mark: number }; log: Logger; allowInitialNetns?: boolean }) {
    this.#proxy = o.proxy;
    this.#log = o.log;
    this.#allowInitialNetns = o.allowInitialNetns ?? false;
  }

  /** The table as it is now (undefined: absent). */
  async current(): Promise<SteeringSpec | undefined> {
    const r = await runNft(['-j', 'list', 'table', 'ip', STEERING_TABLE]);
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return undefined;
      throw new Error(`nft list table ip ${STEERING_TABLE} failed: ${r.stderr.trim()}`);
    }
    return parseSteeringState(r.stdout);
  }

  /** Makes the table hold exactly the planned steered ports (removes it when there are none). */
  async reconcile(entries: readonly PlaintextInboundEntry[]): Promise<SteeringResult> {
    const problems: string[] = [];
    const hostNetns = inInitialNetns();
    if (hostNetns && !this.#allowInitialNetns && planSteering(entries, this.#proxy) !== undefined) {
      throw new Error('plaintext steering refused: this process runs in the machine\'s own network namespace and --host-network was not given; on a real node (hostNetwork agent) pass --host-network, in the sandbox the agent must run inside its node\'s namespace');
    }
    // In the host namespace of a real node, other software depends on conntrack: write the nat chains only.
    const spec = planSteering(entries, this.#proxy, problems, { exemptOthers: !hostNetns });
    const have = await this.current();
    if (steeringMatches(have, spec)) return { ports: spec?.elements.length ?? 0, changed: false, problems };
    const r = await runNft(['-f', '-'], renderSteeringScript(spec));
    if (r.code !== 0) throw new Error(`nft -f (table ip ${STEERING_TABLE}, ${spec?.elements.length ?? 0} ports) failed: ${r.stderr.trim()}`);
    this.#log.info(spec ? 'plaintext to pod ports steered through the node proxy' : 'plaintext steering removed', { ports: spec?.elements.length ?? 0, to: spec?.to });
    return { ports: spec?.elements.length ?? 0, changed: true, problems };
  }

  /** Removes the table (tests, node removal); the agent leaves it in place when it merely stops. */
  async remove(): Promise<void> {
    const r = await runNft(['-f', '-'], renderSteeringScript(undefined));
    if (r.code !== 0) throw new Error(`removing nft table ip ${STEERING_TABLE} failed: ${r.stderr.trim()}`);
  }
}
