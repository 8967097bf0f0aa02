/**
 * A text dump of a node's load-balancing maps, one line per entry, sorted, in the spirit of
 * Cilium's `SVC: ID=1 ADDR=10.96.50.104:80/TCP SLOT=0 ...`: what golden tests compare and what a
 * person reads when asking "what does this node's kernel believe?".
 */
import { type MapSet, nmBeFlags, nmFeFlags, nmFeKind, nmSvcFlags } from '../bpf/index.ts';

const PROTO: Record<number, string> = { 6: 'TCP', 17: 'UDP' };
const KIND: Record<number, string> = Object.fromEntries(Object.entries(nmFeKind).map(([k, v]) => [v, k.replace(/^NM_FE_/, '')]));

function flagNames(value: number, table: Record<string, number>, prefix: RegExp): string {
  const names = Object.entries(table).filter(([, bit]) => value & bit).map(([n]) => n.replace(prefix, '').toLowerCase());
  return names.length ? names.join(',') : '-';
}

function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/**
 * Dumps frontends, services, slots and backends. `names` (service id → service-port key) adds the
 * Kubernetes name to each SVC line.
 */
export function dumpMaps(maps: MapSet, names?: ReadonlyMap<number, string>): string {
  const lines: Array<[string, string]> = [];
  const svcOrder = (id: number): string => String(id).padStart(5, '0');
  for (const [id, s] of maps.map('nm_lb_svc').entries()) {
    const name = names?.get(id);
    lines.push([`${svcOrder(id)} 0`, `SVC: ID=${id} READY=${s.ready} TERMINATING=${s.terminating} AFFINITY=${s.aff_timeout}s FLAGS=${flagNames(s.flags, nmSvcFlags, /^NM_SVC_F_/)}${name ? ` NAME=${name}` : ''}`]);
  }
  const fes = [...maps.map('nm_lb4_fe').entries(), ...maps.map('nm_lb6_fe').entries()];
  for (const [k, v] of fes) {
    const addr = hostPort(k.addr, k.port);
    lines.push([`${svcOrder(v.svc_id)} 1 ${KIND[v.kind] ?? v.kind} ${addr}`, `  FE: ${addr}/${PROTO[k.proto] ?? k.proto} KIND=${KIND[v.kind] ?? v.kind} FLAGS=${flagNames(v.flags, nmFeFlags, /^NM_FE_F_/)} -> SVC ${v.svc_id}`]);
  }
  const be = new Map(maps.map('nm_lb_be').entries());
  const referenced = new Set<number>();
  for (const [k, v] of maps.map('nm_lb_slot').entries()) {
    const b = be.get(v.backend_id);
    referenced.add(v.backend_id);
    const target = b ? `${hostPort(b.addr, b.port)}/${PROTO[b.proto] ?? b.proto} FLAGS=${flagNames(b.flags, nmBeFlags, /^NM_BE_F_/)}` : 'MISSING';
    lines.push([`${svcOrder(k.svc_id)} 2 ${String(k.slot).padStart(5, '0')}`, `  SLOT=${k.slot} BE=${v.backend_id} ${target}`]);
  }
  for (const [id, b] of be) {
    if (referenced.has(id)) continue;
    lines.push([`${svcOrder(b.svc_id)} 3 ${id}`, `  ORPHAN BE=${id} ${hostPort(b.addr, b.port)} SVC=${b.svc_id}`]);
  }
  lines.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return lines.map(([, l]) => l).join('\n') + (lines.length ? '\n' : '');
}
