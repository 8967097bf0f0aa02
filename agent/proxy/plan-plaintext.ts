/**
 * Plaintext inbound (issue 5 item 5, B6): which pod ports of this node get plaintext from outside the mesh steered
 * through the node proxy, and the nftables table that does it. Pure: plan-proxy.ts asks `computePlaintextHandling`
 * per workload, pod-ingress.ts (`PlaintextSteering`) renders and compares the table with these functions.
 *
 * Per workload mode (the plaintext that reaches a pod port without passing connect4: a host-network process, a
 * process outside the node's cgroup, another node's non-proxy traffic):
 *   STRICT                        → steered; the proxy resets it at once (ECONNRESET, counted), never a SYN timeout
 *   PERMISSIVE with a policy      → steered; the proxy serves it as unauthenticated under the pod's policy
 *   PERMISSIVE without a policy   → direct (nothing to enforce; no proxy hop)
 *   DISABLED                      → direct (neither steered nor dropped)
 */
import { isIPv4 } from 'node:net';
import type { NodeWorkload, WorkloadAuthorization } from '../../crds/index.ts';

/** What the node proxy does with plaintext steered to one pod port. */
export type PlaintextHandling = 'police' | 'refuse';

/** One pod port whose plaintext is steered through the node proxy. */
export interface PlaintextInboundEntry {
  ip: string;
  port: number;
  handling: PlaintextHandling;
}

/** nft table (family ip) owned by the agent in the node's network namespace. */
export const STEERING_TABLE = 'nodemesh_plaintext';
/** Its set of steered (pod address, port) pairs. */
export const STEERING_SET = 'steered';

/** Whether any AuthorizationPolicy governs the workload (a Deny default counts: it refuses what no ALLOW admits). */
export function hasInboundPolicy(authz: WorkloadAuthorization | undefined): boolean {
  return authz !== undefined && (authz.policies.length > 0 || authz.defaultAction === 'Deny');
}

/**
 * What plaintext to a port of `w` meets, or undefined when it goes to the pod directly. A policy selects the whole
 * workload (a port an ALLOW rule does not name is denied), so every port of a policed workload is steered.
 */
export function computePlaintextHandling(w: Pick<NodeWorkload, 'mtls' | 'authorization'>): PlaintextHandling | undefined {
  switch (w.mtls?.mode ?? 'DISABLED') {
    case 'STRICT': return 'refuse';
    case 'PERMISSIVE': return hasInboundPolicy(w.authorization) ? 'police' : undefined;
    default: return undefined;
  }
}

const entryKey = (e: { ip: string; port: number }): string => `${e.ip}:${e.port}`;

/** Entries deduplicated (first wins) and sorted; IPv6 addresses are left out with a problem (the table is IPv4). */
export function normalizePlaintextEntries(entries: readonly PlaintextInboundEntry[], problems: string[] = []): PlaintextInboundEntry[] {
  const out = new Map<string, PlaintextInboundEntry>();
  for (const e of entries) {
    if (!isIPv4(e.ip)) { problems.push(`pod ${e.ip} port ${e.port}: plaintext steering is IPv4 only; this port is not steered`); continue; }
    if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535) { problems.push(`pod ${e.ip} port ${e.port}: not a TCP port; not steered`); continue; }
    if (!out.has(entryKey(e))) out.set(entryKey(e), e);
  }
  return [...out.values()].sort((a, b) => (entryKey(a) < entryKey(b) ? -1 : entryKey(a) > entryKey(b) ? 1 : 0));
}

/** The proxy's plaintext-inbound lookup table (`ip:port` → handling) that travels with the plugin data. */
export function computePlaintextTable(entries: readonly PlaintextInboundEntry[]): Record<string, PlaintextHandling> {
  const out: Record<string, PlaintextHandling> = {};
  for (const e of normalizePlaintextEntries(entries)) out[entryKey(e)] = e.handling;
  return out;
}

/** What the steering table must hold: the pairs, the proxy's plaintext listener, and the mark its own connects carry. */
export interface SteeringSpec {
  elements: string[];
  /** `ip:port` of the proxy's plaintext listener. */
  to: string;
  mark: number;
  /**
   * Whether the table also exempts every other packet of the namespace from conntrack (the raw chains). Right in a
   * node namespace of its own (the sandbox), where nothing else needs conntrack; wrong in a real node's host namespace,
   * where kube-proxy, the CNI and the node's firewall rely on it: there the nat chains alone are written.
   */
  exemptOthers: boolean;
}

/** The steering spec of a plan (undefined: nothing to steer, the table goes). */
export function planSteering(
  entries: readonly PlaintextInboundEntry[],
  proxy: { ip: string; port: number; mark: number },
  problems: string[] = [],
  opts: { exemptOthers?: boolean } = {},
): SteeringSpec | undefined {
  const list = normalizePlaintextEntries(entries, problems);
  if (list.length === 0) return undefined;
  if (!isIPv4(proxy.ip)) throw new Error(`plaintext steering: proxy address ${proxy.ip} is not IPv4`);
  if (!Number.isInteger(proxy.mark) || proxy.mark <= 0) throw new Error('plaintext steering needs the proxy socket mark: without it the proxy\'s own connects to the pod would be steered back to it');
  return { elements: list.map(entryKey), to: `${proxy.ip}:${proxy.port}`, mark: proxy.mark, exemptOthers: opts.exemptOthers ?? true };
}

/**
 * The nft script that replaces the table atomically (one transaction: add, delete, define), or deletes it when
 * `spec` is undefined. Packets of a new connection to a steered pair are DNATed to the proxy: in prerouting (other
 * nodes, this node's pods) and in output (this node's own processes), except the proxy's marked connects. Only the
 * first packet of a connection meets a nat chain; conntrack carries the rest and un-NATs the replies, so the
 * client sees the pod's address. Nothing here drops: when the proxy is not listening, the kernel answers the DNATed
 * SYN with RST (ECONNREFUSED), and the pod is never reached around it.
 * A nat chain turns conntrack on for the whole namespace; the raw chains (before conntrack) exempt everything that
 * is neither a steered connection nor the proxy's side of one, so pod-to-pod, HBONE and node traffic stays untracked
 * and pays no conntrack entry. (`notrack` leaves a packet that already carries an entry alone: loopback replies.)
 */
export function renderSteeringScript(spec: SteeringSpec | undefined): string {
  const head = `add table ip ${STEERING_TABLE}\ndelete table ip ${STEERING_TABLE}\n`;
  if (!spec) return head;
  const elems = spec.elements.map((e) => { const i = e.lastIndexOf(':'); return `${e.slice(0, i)} . ${e.slice(i + 1)}`; }).join(', ');
  const rule = `ip daddr . tcp dport @${STEERING_SET} dnat to ${spec.to}`;
  const i = spec.to.lastIndexOf(':');
  const [toIp, toPort] = [spec.to.slice(0, i), spec.to.slice(i + 1)];
  const raw = !spec.exemptOthers ? '' : `  chain raw_prerouting {
    type filter hook prerouting priority -300; policy accept;
    ip daddr . tcp dport @${STEERING_SET} return
    notrack
  }
  chain raw_output {
    type filter hook output priority -300; policy accept;
    ip daddr . tcp dport @${STEERING_SET} return
    ip saddr ${toIp} tcp sport ${toPort} return
    notrack
  }
`;
  return `${head}table ip ${STEERING_TABLE} {
  set ${STEERING_SET} {
    type ipv4_addr . inet_service
    elements = { ${elems} }
  }
${raw}  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    ${rule}
  }
  chain output {
    type nat hook output priority -100; policy accept;
    meta mark 0x${spec.mark.toString(16)} return
    ${rule}
  }
}
`;
}

type NftObject = Record<string, Record<string, unknown>>;

/**
 * What the table holds now, from `nft -j list table ip <table>` (undefined: no table). Only what the agent writes is
 * read back; anything it cannot recognise makes the result differ from every spec, so the table is rewritten.
 */
export function parseSteeringState(json: string): SteeringSpec | undefined {
  const objects = (JSON.parse(json) as { nftables?: NftObject[] }).nftables ?? [];
  if (!objects.some((o) => o.table)) return undefined;
  const set = objects.find((o) => o.set?.name === STEERING_SET)?.set as { elem?: Array<{ concat?: [string, number] } | { elem?: { val?: { concat?: [string, number] } } }> } | undefined;
  const elements = (set?.elem ?? []).map((e) => {
    const c = 'concat' in e ? e.concat : (e as { elem?: { val?: { concat?: [string, number] } } }).elem?.val?.concat;
    return c ? `${c[0]}:${c[1]}` : '?';
  }).sort();
  const rules = objects.filter((o) => o.rule).map((o) => o.rule as { chain: string; expr: Array<Record<string, unknown>> });
  const dnatOf = (chain: string): string | undefined => {
    const r = rules.find((x) => x.chain === chain && x.expr.some((e) => e.dnat));
    const d = r?.expr.find((e) => e.dnat)?.dnat as { addr?: string; port?: number } | undefined;
    return d ? `${d.addr}:${d.port}` : undefined;
  };
  const markRule = rules.find((x) => x.chain === 'output' && x.expr.some((e) => 'return' in e));
  const markMatch = markRule?.expr.find((e) => (e.match as { left?: { meta?: { key?: string } } } | undefined)?.left?.meta?.key === 'mark')?.match as { right?: number } | undefined;
  const pre = dnatOf('prerouting');
  const out = dnatOf('output');
  const chains = objects.filter((o) => o.chain).length;
  // Two nat chains (1 + 2 rules), with or without the two raw chains (2 + 3 rules, the notrack ones), and nothing else.
  const notracks = rules.filter((r) => r.expr.some((e) => 'notrack' in e)).length;
  const exemptOthers = notracks > 0;
  const shapeOk = pre !== undefined && pre === out && (exemptOthers ? chains === 4 && rules.length === 8 && notracks === 2 : chains === 2 && rules.length === 3);
  return { elements, to: shapeOk ? pre : '?', mark: markMatch?.right ?? 0, exemptOthers };
}

/** Whether the table already is what `spec` asks (undefined = no table). */
export function steeringMatches(current: SteeringSpec | undefined, spec: SteeringSpec | undefined): boolean {
  if (!current || !spec) return current === spec;
  return current.to === spec.to && current.mark === spec.mark && current.exemptOthers === spec.exemptOthers && current.elements.length === spec.elements.length && [...current.elements].sort().every((e, i) => e === [...spec.elements].sort()[i]);
}
