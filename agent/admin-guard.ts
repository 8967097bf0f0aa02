/**
 * Keeps pods away from the node's control ports (B7, Linkerd CVE-2024-40632: an admin port a workload could reach).
 * The agent's health/status/metrics/explain endpoint listens on every address of the node's network namespace
 * (the kubelet probes it on the node address), and on node 1 of the sandbox the operator's CA listens there too.
 * Neither is for pods: one nftables table in the node's network namespace, `ip nodemesh_admin`, answers a TCP
 * connection to those ports with a reset unless it comes from the node itself (loopback, which every local
 * address's own traffic uses) or from a node of the cluster (agents of other nodes reach the CA). Pods' sources
 * are pinned to their own addresses by the anti-spoofing filter (agent/proxy/pod-egress.ts), so a pod cannot pass
 * for a node. The proxy's data ports (outbound 15001, HBONE 15008, plaintext 15006) are not listed: pods reach
 * those by design (15008 requires a mesh client certificate).
 *
 * Each guarded port has its own counted reset rule (nodemesh_admin_guard_rejected_total{port}, read on a timer).
 * The metrics-only listener (--metrics-port) is deliberately not guarded: Prometheus usually runs as a pod.
 *
 * Level-triggered like the steering table: every pass reads the table back (`nft list table`, counters masked) and
 * replaces it in one transaction when it differs from what was written, or was never written by this process.
 */
import { spawn } from 'node:child_process';
import { isIPv4 } from 'node:net';
import { describeError } from './errors.ts';
import type { Logger } from './logger.ts';

/** nft table (family ip) owned by the agent in the node's network namespace. */
export const ADMIN_GUARD_TABLE = 'nodemesh_admin';

/** The guard's desired content. */
export interface AdminGuardSpec {
  /** TCP ports only the node itself and other nodes may reach. */
  ports: number[];
  /** Node addresses (InternalIPs of every node) allowed to reach them. */
  nodes: string[];
}

/** The desired table (pure), or undefined when no port needs guarding. Bad entries are reported, never written. */
export function planAdminGuard(input: { ports: readonly number[]; nodeAddresses: readonly string[] }, problems: string[] = []): AdminGuardSpec | undefined {
  const ports = [...new Set(input.ports)].filter((p) => {
    const ok = Number.isInteger(p) && p >= 1 && p <= 65535;
    if (!ok) problems.push(`admin port ${p}: not a TCP port; not guarded`);
    return ok;
  }).sort((a, b) => a - b);
  const nodes = [...new Set(input.nodeAddresses)].filter((a) => {
    if (!isIPv4(a)) { problems.push(`node address ${a}: the admin guard is IPv4 only; that node cannot reach the guarded ports over it`); return false; }
    return true;
  }).sort();
  return ports.length ? { ports, nodes } : undefined;
}

/** The nft script that replaces the table atomically with `spec` (or removes it). */
export function renderAdminGuardScript(spec: AdminGuardSpec | undefined): string {
  const head = `add table ip ${ADMIN_GUARD_TABLE}\ndelete table ip ${ADMIN_GUARD_TABLE}\n`;
  if (!spec) return head;
  const nodes = spec.nodes.length ? `\n    elements = { ${spec.nodes.join(', ')} }` : '';
  return `${head}table ip ${ADMIN_GUARD_TABLE} {
  set ports {
    type inet_service
    elements = { ${spec.ports.join(', ')} }
  }
  set nodes {
    type ipv4_addr${nodes}
  }
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport @ports jump admin
  }
  chain admin {
    iifname "lo" accept
    ip saddr @nodes accept
${spec.ports.map((p) => `    tcp dport ${p} counter reject with tcp reset\n`).join('')}    reject with tcp reset
  }
}
`;
}

/** Packets reset per guarded port, from a listing of the table (pure; the per-port counters of the admin chain). */
export function parseAdminGuardRejected(listing: string): { port: number; packets: number }[] {
  const out: { port: number; packets: number }[] = [];
  for (const m of listing.matchAll(/tcp dport (\d+) counter packets (\d+) bytes \d+ reject with tcp reset/g)) out.push({ port: Number(m[1]), packets: Number(m[2]) });
  return out.sort((a, b) => a.port - b.port);
}

/**
 * The guard's reset counters in this network namespace (one `nft list`), or undefined when no table is there. For the
 * metrics (agent/telemetry.ts reads it on a timer, never per scrape: the metrics port is open to pods).
 */
export async function readAdminGuardRejected(): Promise<{ port: number; packets: number }[] | undefined> {
  const r = await runNft(['list', 'table', 'ip', ADMIN_GUARD_TABLE]);
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr)) return undefined;
    throw new Error(`nft list table ip ${ADMIN_GUARD_TABLE} failed: ${r.stderr.trim()}`);
  }
  return parseAdminGuardRejected(r.stdout);
}

/** A table listing with what changes on its own (counters, handles) masked, for comparing with what was written. */
export function normalizeListing(text: string): string {
  return text.replace(/counter packets \d+ bytes \d+/g, 'counter').replace(/ # handle \d+/g, '').trim();
}

function runNft(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('nft', args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (err) => reject(new Error(`cannot run nft (${describeError(err)}): install nftables on the node`)));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin?.on('error', () => {});
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Keeps the admin guard table of this network namespace in step with the plan. */
export class AdminGuard {
  readonly #log: Logger;
  readonly #inInitialNetns: () => boolean;
  readonly #allowInitialNetns: boolean;
  /** The listing read back right after the last write (undefined: nothing written by this process yet). */
  #written: { key: string; listing: string } | undefined;

  constructor(o: { log: Logger; inInitialNetns: () => boolean; allowInitialNetns?: boolean }) {
    this.#log = o.log;
    this.#inInitialNetns = o.inInitialNetns;
    this.#allowInitialNetns = o.allowInitialNetns ?? false;
  }

  async #listing(): Promise<string | undefined> {
    const r = await runNft(['list', 'table', 'ip', ADMIN_GUARD_TABLE]);
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return undefined;
      throw new Error(`nft list table ip ${ADMIN_GUARD_TABLE} failed: ${r.stderr.trim()}`);
    }
    return normalizeListing(r.stdout);
  }

  /** Makes the table guard exactly `spec` (removes it when undefined); true when it was (re)written. */
  async reconcile(spec: AdminGuardSpec | undefined): Promise<boolean> {
    if (spec && !this.#allowInitialNetns && this.#inInitialNetns()) {
      throw new Error('admin port guard refused: this process runs in the machine\'s own network namespace, not a node\'s; the agent must run inside its node\'s namespace');
    }
    const key = JSON.stringify(spec ?? null);
    const now = await this.#listing();
    if (this.#written?.key === key && (spec ? now === this.#written.listing : now === undefined)) return false;
    if (!spec && now === undefined) { this.#written = { key, listing: '' }; return false; }
    const r = await runNft(['-f', '-'], renderAdminGuardScript(spec));
    if (r.code !== 0) throw new Error(`nft -f (table ip ${ADMIN_GUARD_TABLE}, ports ${spec?.ports.join(',') ?? '-'}) failed: ${r.stderr.trim()}`);
    this.#written = { key, listing: spec ? (await this.#listing()) ?? '' : '' };
    this.#log.info(spec ? 'node control ports closed to pods' : 'node control port guard removed', spec ? { ports: spec.ports.join(','), nodes: spec.nodes.length } : {});
    return true;
  }
}
