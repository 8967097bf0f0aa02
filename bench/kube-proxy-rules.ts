/**
 * The rule sets kube-proxy would write for N ClusterIP services, each with the same endpoints: its
 * iptables mode (KUBE-SERVICES → KUBE-SVC-* with `statistic --mode random` → KUBE-SEP-* DNAT, for
 * iptables-restore) and its nftables mode (a service-ips verdict map → per-service chain with
 * `numgen random` → endpoint chains with dnat, for nft -f). Chain names, comments and probabilities
 * follow pkg/proxy/iptables and pkg/proxy/nftables (v1.31); the filter-table rules (KUBE-FORWARD,
 * reject for services without endpoints) are left out: they do not sit on the path measured.
 */
import { createHash } from 'node:crypto';

/** One service port as kube-proxy sees it. */
export interface ProxyService {
  namespace: string;
  name: string;
  /** Port name (kube-proxy's servicePortName is ns/name:portName). */
  portName: string;
  clusterIP: string;
  port: number;
  endpoints: Array<{ ip: string; port: number }>;
}

/** The cluster CIDR: traffic from outside it to a service is masqueraded. */
export const CLUSTER_CIDR = '10.253.0.0/16';

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (Go's base32.StdEncoding), without padding (kube-proxy keeps only a prefix). */
export function base32(buf: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

function hash16(text: string): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, 16);
}

function servicePortName(s: ProxyService): string {
  return `${s.namespace}/${s.name}:${s.portName}`;
}

/** KUBE-SVC-<hash>: kube-proxy's servicePortChainName. */
export function svcChain(s: ProxyService): string {
  return `KUBE-SVC-${hash16(`${servicePortName(s)}tcp`)}`;
}

/** KUBE-SEP-<hash>: kube-proxy's servicePortEndpointChainName. */
export function sepChain(s: ProxyService, ep: { ip: string; port: number }): string {
  return `KUBE-SEP-${hash16(`${servicePortName(s)}tcp${ep.ip}:${ep.port}`)}`;
}

/** `--probability` of the i-th of n endpoint rules, as kube-proxy prints it. */
export function probability(n: number): string {
  return (1 / n).toFixed(10);
}

function serviceRule(s: ProxyService): string {
  return `-A KUBE-SERVICES -m comment --comment "${servicePortName(s)} cluster IP" -m tcp -p tcp -d ${s.clusterIP} --dport ${s.port} -j ${svcChain(s)}`;
}

function serviceChains(s: ProxyService): { decl: string[]; rules: string[] } {
  const name = servicePortName(s);
  const svc = svcChain(s);
  const decl = [`:${svc} - [0:0]`];
  const rules = [`-A ${svc} -m comment --comment "${name} cluster IP" -m tcp -p tcp -d ${s.clusterIP} --dport ${s.port} ! -s ${CLUSTER_CIDR} -j KUBE-MARK-MASQ`];
  s.endpoints.forEach((ep, i) => {
    const sep = sepChain(s, ep);
    const left = s.endpoints.length - i;
    const stat = left > 1 ? ` -m statistic --mode random --probability ${probability(left)}` : '';
    rules.push(`-A ${svc} -m comment --comment "${name} -> ${ep.ip}:${ep.port}"${stat} -j ${sep}`);
  });
  for (const ep of s.endpoints) {
    const sep = sepChain(s, ep);
    decl.push(`:${sep} - [0:0]`);
    rules.push(`-A ${sep} -m comment --comment ${name} -s ${ep.ip} -j KUBE-MARK-MASQ`);
    rules.push(`-A ${sep} -m comment --comment ${name} -m tcp -p tcp -j DNAT --to-destination ${ep.ip}:${ep.port}`);
  }
  return { decl, rules };
}

const NODEPORTS_RULE = '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS';

/** The full nat table for iptables-restore (kube-proxy's full sync). */
export function renderIptablesRestore(services: readonly ProxyService[]): string {
  const decl = [':KUBE-SERVICES - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const rules = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ];
  const svcRules: string[] = [];
  for (const s of services) {
    svcRules.push(serviceRule(s));
    const c = serviceChains(s);
    decl.push(...c.decl);
    rules.push(...c.rules);
  }
  return ['*nat', ...decl, ...rules, ...svcRules, NODEPORTS_RULE, 'COMMIT', ''].join('\n');
}

/**
 * The partial restore kube-proxy (KEP-3453) writes when one service is added to `existing`: the
 * new service's chains, and KUBE-SERVICES rewritten whole (it always is), with --noflush.
 */
export function renderIptablesAddOne(existing: readonly ProxyService[], added: ProxyService): string {
  const c = serviceChains(added);
  return ['*nat', ':KUBE-SERVICES - [0:0]', ...c.decl, ...c.rules, ...[...existing, added].map(serviceRule), NODEPORTS_RULE, 'COMMIT', ''].join('\n');
}

function hash8(text: string): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, 8);
}

/** kube-proxy nftables chain of a service port. */
export function nftServiceChain(s: ProxyService): string {
  const base = `${s.namespace}/${s.name}/tcp/${s.portName}`;
  return `service-${hash8(base)}-${base}`;
}

function nftEndpointChain(s: ProxyService, ep: { ip: string; port: number }): string {
  const base = `${s.namespace}/${s.name}/tcp/${s.portName}__${ep.ip}/${ep.port}`;
  return `endpoint-${hash8(base)}-${base}`;
}

function nftService(s: ProxyService): string[] {
  const chain = nftServiceChain(s);
  const out = [`add chain ip kube-proxy ${chain}`, `add rule ip kube-proxy ${chain} ip daddr ${s.clusterIP} tcp dport ${s.port} ip saddr != ${CLUSTER_CIDR} jump mark-for-masquerade`];
  out.push(`add rule ip kube-proxy ${chain} numgen random mod ${s.endpoints.length} vmap { ${s.endpoints.map((ep, i) => `${i} : goto ${nftEndpointChain(s, ep)}`).join(' , ')} }`);
  const eps: string[] = [];
  for (const ep of s.endpoints) {
    const c = nftEndpointChain(s, ep);
    eps.push(`add chain ip kube-proxy ${c}`, `add rule ip kube-proxy ${c} ip saddr ${ep.ip} jump mark-for-masquerade`, `add rule ip kube-proxy ${c} meta l4proto tcp dnat to ${ep.ip}:${ep.port}`);
  }
  // Endpoint chains must exist before the vmap that jumps to them.
  return [...eps, ...out, `add element ip kube-proxy service-ips { ${s.clusterIP} . tcp . ${s.port} : goto ${chain} }`];
}

/** kube-proxy's nftables table for nft -f. */
export function renderNftables(services: readonly ProxyService[]): string {
  const head = [
    'add table ip kube-proxy { comment "rules for kube-proxy" ; }',
    'add chain ip kube-proxy mark-for-masquerade',
    'add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000',
    'add chain ip kube-proxy masquerading',
    'add rule ip kube-proxy masquerading mark and 0x4000 == 0 return',
    'add rule ip kube-proxy masquerading mark set mark xor 0x4000',
    'add rule ip kube-proxy masquerading masquerade fully-random',
    'add chain ip kube-proxy services',
    'add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }',
    'add rule ip kube-proxy nat-prerouting jump services',
    'add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }',
    'add rule ip kube-proxy nat-output jump services',
    'add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }',
    'add rule ip kube-proxy nat-postrouting jump masquerading',
    'add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
    'add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }',
    'add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips',
    'add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports',
  ];
  return [...head, ...services.flatMap(nftService), ''].join('\n');
}

/** What kube-proxy's nftables mode writes to add one service: its chains and one map element. */
export function renderNftablesAddOne(added: ProxyService): string {
  return [...nftService(added), ''].join('\n');
}
