/**
 * The load-balancing tables in terms a Kubernetes agent thinks in: plan the entries of one service
 * port (pure), write them in an order a concurrent connect() can never trip over, remove them,
 * configure the node, read the counters. Works on any MapSet: the real datapath or fake maps.
 */
import { isIPv4, isIPv6 } from 'node:net';
import {
  type NmDpCfg,
  type NmLb4Key,
  type NmLb6Key,
  type NmLbBe,
  type NmLbFe,
  type NmLbSlot,
  type NmLbSlotKey,
  type NmLbSvc,
  type NmSock4Orig,
  type NmSock6Orig,
  nmBeFlags,
  nmCfgFlags,
  nmCount,
  nmFeFlags,
  nmFeKind,
  nmSvcFlags,
} from './codecs.generated.ts';
import { possibleCpus } from './cpus.ts';
import { BpfCodecError, BpfError } from './errors.ts';
import type { MapSet } from './map-like.ts';

/** L4 protocol of a service port. */
export type L4Proto = 'TCP' | 'UDP';

/** How clients reach the service port. */
export type FrontendKind = 'ClusterIP' | 'NodePort' | 'ExternalIP' | 'LoadBalancer';

/** One address:port a client can dial for the service port. */
export interface FrontendSpec {
  addr: string;
  port: number;
  kind: FrontendKind;
  /** Only sockets in the host netns match (a NodePort on 127.0.0.1). */
  hostNetnsOnly?: boolean;
}

/** One endpoint of the service port, with its EndpointSlice conditions. */
export interface BackendSpec {
  /** Backend id, unique per (service port, endpoint) on this node; 1..2^32-1. */
  id: number;
  addr: string;
  /** Target port. */
  port: number;
  /** conditions.ready. */
  ready: boolean;
  /** conditions.serving (defaults to ready). */
  serving?: boolean;
  /** conditions.terminating. */
  terminating?: boolean;
  /** The endpoint's nodeName is this node. */
  local?: boolean;
}

/** One service port (a Service with two ports is two ServiceSpecs, each with its own id). */
export interface ServiceSpec {
  /** Service id on this node, 1..65535. */
  id: number;
  proto: L4Proto;
  frontends: FrontendSpec[];
  backends: BackendSpec[];
  /** sessionAffinity ClientIP with this timeout in seconds (Kubernetes default 10800). */
  affinityTimeoutSec?: number;
  /** internalTrafficPolicy: Local — only this node's endpoints. */
  trafficPolicyLocal?: boolean;
  /** Mesh flow: TCP connects go to the node proxy, which applies L7 policy. */
  l7?: boolean;
}

/** Every map entry of one service port. */
export interface ServiceEntries {
  id: number;
  svc: NmLbSvc;
  fe4: Array<[NmLb4Key, NmLbFe]>;
  fe6: Array<[NmLb6Key, NmLbFe]>;
  slots: Array<[NmLbSlotKey, NmLbSlot]>;
  backends: Array<[number, NmLbBe]>;
}

const PROTO_NUM: Record<L4Proto, number> = { TCP: 6, UDP: 17 };
const KIND_NUM: Record<FrontendKind, number> = {
  ClusterIP: nmFeKind.NM_FE_CLUSTER_IP,
  NodePort: nmFeKind.NM_FE_NODE_PORT,
  ExternalIP: nmFeKind.NM_FE_EXTERNAL_IP,
  LoadBalancer: nmFeKind.NM_FE_LB_IP,
};

/** Highest service id (nm_lb_svc keys are 1..NM_LB_SVC_MAX-1). */
export const MAX_SERVICE_ID = 65535;

function fail(spec: ServiceSpec, msg: string): never {
  throw new BpfCodecError(`service ${spec.id}: ${msg}`, { object: `service ${spec.id}` });
}

/**
 * Plans the entries of one service port. Rules: ready endpoints fill slots 1..R; serving,
 * terminating endpoints fill slots R+1..R+T and are used by the kernel only when R = 0;
 * endpoints neither ready nor serving-terminating get no slot and no backend entry (so a
 * sessionAffinity entry pointing at them is dead); internalTrafficPolicy Local keeps only this
 * node's endpoints. Slot order is by backend id, so the plan is deterministic.
 */
export function planServiceEntries(spec: ServiceSpec): ServiceEntries {
  if (!Number.isInteger(spec.id) || spec.id < 1 || spec.id > MAX_SERVICE_ID) fail(spec, `id must be in 1..${MAX_SERVICE_ID}`);
  const proto = PROTO_NUM[spec.proto];
  if (!proto) fail(spec, `proto ${String(spec.proto)} is neither TCP nor UDP`);
  const aff = spec.affinityTimeoutSec ?? 0;
  if (!Number.isInteger(aff) || aff < 0 || aff > 86400) fail(spec, 'affinityTimeoutSec must be 0..86400 (the Kubernetes maximum)');

  const fe4: Array<[NmLb4Key, NmLbFe]> = [];
  const fe6: Array<[NmLb6Key, NmLbFe]> = [];
  for (const f of spec.frontends) {
    const value: NmLbFe = { svc_id: spec.id, kind: KIND_NUM[f.kind], flags: f.hostNetnsOnly ? nmFeFlags.NM_FE_F_HOSTNS : 0 };
    if (isIPv4(f.addr)) fe4.push([{ addr: f.addr, port: f.port, proto }, value]);
    else if (isIPv6(f.addr)) fe6.push([{ addr: f.addr, port: f.port, proto }, value]);
    else fail(spec, `frontend ${f.addr}:${f.port} is not an IP address`);
  }
  if (fe4.length && fe6.length) fail(spec, 'mixes IPv4 and IPv6 frontends: a dual-stack Service is one ServiceSpec per family');
  const v4 = fe6.length === 0;

  const usable = spec.backends.filter((b) => !spec.trafficPolicyLocal || b.local);
  const byId = (a: BackendSpec, b: BackendSpec) => a.id - b.id;
  const ready = usable.filter((b) => b.ready).sort(byId);
  const terminating = usable.filter((b) => !b.ready && b.terminating && (b.serving ?? b.ready)).sort(byId);
  if (ready.length + terminating.length > 0xffff) fail(spec, 'more than 65535 backends');

  const slots: Array<[NmLbSlotKey, NmLbSlot]> = [];
  const backends: Array<[number, NmLbBe]> = [];
  const seen = new Set<number>();
  [...ready, ...terminating].forEach((b, i) => {
    if (!Number.isInteger(b.id) || b.id < 1 || b.id > 0xffffffff) fail(spec, `backend id ${b.id} must be in 1..2^32-1`);
    if (seen.has(b.id)) fail(spec, `backend id ${b.id} used twice`);
    seen.add(b.id);
    if (v4 ? !isIPv4(b.addr) : !isIPv6(b.addr)) fail(spec, `backend ${b.addr} is not of the frontends' family (IPv${v4 ? 4 : 6})`);
    let flags = 0;
    if (!b.ready) flags |= nmBeFlags.NM_BE_F_TERMINATING;
    if (b.local) flags |= nmBeFlags.NM_BE_F_LOCAL;
    slots.push([{ svc_id: spec.id, slot: i + 1 }, { backend_id: b.id }]);
    backends.push([b.id, { addr: b.addr, port: b.port, proto, flags, svc_id: spec.id }]);
  });

  let flags = 0;
  if (aff > 0) flags |= nmSvcFlags.NM_SVC_F_AFFINITY;
  if (spec.trafficPolicyLocal) flags |= nmSvcFlags.NM_SVC_F_LOCAL;
  if (spec.l7) flags |= nmSvcFlags.NM_SVC_F_L7;
  return { id: spec.id, svc: { flags, ready: ready.length, terminating: terminating.length, aff_timeout: aff }, fe4, fe6, slots, backends };
}

/**
 * Writes many services with one batch per map, in make-before-break order: backends, slots,
 * services (counts), frontends. Per-service counters are created by the kernel on first use. A connect() running meanwhile sees either
 * the old or the new service, never a count pointing past the slots. Stale entries of services
 * that shrank are not removed here: use writeServiceEntries for single updates, or the agent's
 * reconciler diff.
 */
export function writeServicesBulk(maps: MapSet, services: readonly ServiceEntries[]): number {
  let written = 0;
  written += maps.map('nm_lb_be').setMany(services.flatMap((s) => s.backends));
  written += maps.map('nm_lb_slot').setMany(services.flatMap((s) => s.slots));
  written += maps.map('nm_lb_svc').setMany(services.map((s) => [s.id, s.svc] as const));
  written += maps.map('nm_lb4_fe').setMany(services.flatMap((s) => s.fe4));
  written += maps.map('nm_lb6_fe').setMany(services.flatMap((s) => s.fe6));
  return written;
}

const lb4Id = (k: NmLb4Key) => `${k.addr}|${k.port}|${k.proto}`;
const lb6Id = (k: NmLb6Key) => `${k.addr}|${k.port}|${k.proto}`;

/**
 * Creates or updates one service port. Before writing, it reads the current slot list from the
 * maps, so slots and backends the new plan dropped are deleted even without `prev`; frontends the
 * new plan dropped are deleted only when `prev` (the entries written last time) is given.
 */
export function writeServiceEntries(maps: MapSet, next: ServiceEntries, prev?: ServiceEntries): void {
  const svcMap = maps.map('nm_lb_svc');
  const slotMap = maps.map('nm_lb_slot');
  const old = svcMap.get(next.id);
  const oldTotal = old ? old.ready + old.terminating : 0;
  const oldBackendIds = new Set<number>(prev?.backends.map(([id]) => id));
  for (let slot = 1; slot <= oldTotal; slot++) {
    const s = slotMap.get({ svc_id: next.id, slot });
    if (s) oldBackendIds.add(s.backend_id);
  }

  writeServicesBulk(maps, [next]);

  const newTotal = next.svc.ready + next.svc.terminating;
  const staleSlots: NmLbSlotKey[] = [];
  for (let slot = newTotal + 1; slot <= Math.max(oldTotal, prev ? prev.slots.length : 0); slot++) staleSlots.push({ svc_id: next.id, slot });
  slotMap.deleteMany(staleSlots);
  const keep = new Set(next.backends.map(([id]) => id));
  maps.map('nm_lb_be').deleteMany([...oldBackendIds].filter((id) => !keep.has(id)));
  if (prev) {
    const keep4 = new Set(next.fe4.map(([k]) => lb4Id(k)));
    const keep6 = new Set(next.fe6.map(([k]) => lb6Id(k)));
    maps.map('nm_lb4_fe').deleteMany(prev.fe4.filter(([k]) => !keep4.has(lb4Id(k))).map(([k]) => k));
    maps.map('nm_lb6_fe').deleteMany(prev.fe6.filter(([k]) => !keep6.has(lb6Id(k))).map(([k]) => k));
  }
}

/** Removes a service port: frontends first (new connects stop matching), then the rest. */
export function removeServiceEntries(maps: MapSet, prev: ServiceEntries): void {
  maps.map('nm_lb4_fe').deleteMany(prev.fe4.map(([k]) => k));
  maps.map('nm_lb6_fe').deleteMany(prev.fe6.map(([k]) => k));
  const old = maps.map('nm_lb_svc').get(prev.id);
  maps.map('nm_lb_svc').delete(prev.id);
  const total = Math.max(prev.slots.length, old ? old.ready + old.terminating : 0);
  maps.map('nm_lb_slot').deleteMany(Array.from({ length: total }, (_, i) => ({ svc_id: prev.id, slot: i + 1 })));
  maps.map('nm_lb_be').deleteMany(prev.backends.map(([id]) => id));
  zeroServiceCounters(maps, [prev.id]);
}

/**
 * Zeroes the counters of released service ids (nm_lb_stats is a preallocated per-CPU array: its
 * slots cannot be deleted, and a reused id must not inherit old counts). One batch write.
 */
export function zeroServiceCounters(maps: MapSet, svcIds: readonly number[]): number {
  if (!svcIds.length) return 0;
  const m = maps.map('nm_lb_stats');
  // Slot 0 (no service) is never counted; its length is this map's number of possible CPUs.
  const cpus = m.get(0)?.length ?? possibleCpus;
  const zero = Array.from({ length: cpus }, () => ({ translations: 0n, no_backend: 0n, aff_hits: 0n, proxied: 0n }));
  return m.setMany(svcIds.map((id) => [id, zero] as const));
}

/** Node-wide settings (nm_dp_cfg). */
export interface DatapathConfig {
  /** Same-node socket redirection (sockops + sk_msg). */
  sockmap?: boolean;
  /** The node proxy's outbound listener; absent = no proxy (mesh services are then refused). */
  proxy?: { ip4?: string; ip6?: string; port: number; mark?: number };
  /** Refuse mesh flows unless the proxy's listener is registered in nm_pxy_sock (fail closed). */
  proxyCheck?: boolean;
  /** Netns cookie of the node's host netns (see getNetnsCookie), for hostNetnsOnly frontends. */
  hostNetnsCookie?: bigint;
}

/** Writes nm_dp_cfg; takes effect on the next connect, no reload. */
export function writeDatapathConfig(maps: MapSet, cfg: DatapathConfig): void {
  let flags = 0;
  if (cfg.sockmap) flags |= nmCfgFlags.NM_CFG_F_SOCKMAP;
  if (cfg.proxyCheck) flags |= nmCfgFlags.NM_CFG_F_PROXY_CHECK;
  const value: NmDpCfg = {
    flags,
    proxy_mark: cfg.proxy?.mark ?? 0,
    host_netns: cfg.hostNetnsCookie ?? 0n,
    proxy4: cfg.proxy?.ip4 ?? '0.0.0.0',
    proxy_port: cfg.proxy?.port ?? 0,
    proxy6: cfg.proxy?.ip6 ?? '::',
  };
  maps.map('nm_dp_cfg').set(0, value);
}

/**
 * Registers the node proxy's listening socket (an fd of this process) in nm_pxy_sock. The kernel
 * drops it when the socket closes, which is what makes NM_CFG_F_PROXY_CHECK fail closed.
 */
export function registerProxyListener(maps: MapSet, family: 4 | 6, fd: number): void {
  maps.map('nm_pxy_sock').set(family === 4 ? 0 : 1, BigInt(fd));
}

/** Per-service counters summed over CPUs. */
export interface ServiceCounters {
  translations: bigint;
  noBackend: bigint;
  affinityHits: bigint;
  proxied: bigint;
}

/**
 * Reads one service's counters, summed over CPUs (every id in range has a slot, zero until used);
 * undefined only for an id outside 1..MAX_SERVICE_ID.
 */
export function readServiceCounters(maps: MapSet, svcId: number): ServiceCounters | undefined {
  if (!Number.isInteger(svcId) || svcId < 1 || svcId > MAX_SERVICE_ID) return undefined;
  const perCpu = maps.map('nm_lb_stats').get(svcId);
  if (!perCpu) return undefined;
  const sum: ServiceCounters = { translations: 0n, noBackend: 0n, affinityHits: 0n, proxied: 0n };
  for (const c of perCpu) {
    sum.translations += c.translations;
    sum.noBackend += c.no_backend;
    sum.affinityHits += c.aff_hits;
    sum.proxied += c.proxied;
  }
  return sum;
}

/** Node-wide counters (drop reasons and events) by enum nm_count name, summed over CPUs. */
export function readDatapathCounters(maps: MapSet): Record<keyof typeof nmCount, bigint> {
  const m = maps.map('nm_dp_count');
  const out = {} as Record<keyof typeof nmCount, bigint>;
  for (const [name, idx] of Object.entries(nmCount) as Array<[keyof typeof nmCount, number]>) {
    if (name === 'NM_CNT_MAX') continue;
    out[name] = (m.get(idx) ?? []).reduce((a, b) => a + b, 0n);
  }
  return out;
}

/**
 * What a client connection accepted by the proxy originally dialled, by the client's address and
 * port (the accepted socket's remote end). `consume` deletes the entry once read.
 */
export function lookupOriginalDst(maps: MapSet, client: { addr: string; port: number }, consume = false): NmSock4Orig | NmSock6Orig | undefined {
  if (isIPv4(client.addr)) {
    const m = maps.map('nm_pxy4_odst');
    const key = { addr: client.addr, port: client.port };
    const v = m.get(key);
    if (v && consume) m.delete(key);
    return v;
  }
  if (isIPv6(client.addr)) {
    const m = maps.map('nm_pxy6_odst');
    const key = { addr: client.addr, port: client.port };
    const v = m.get(key);
    if (v && consume) m.delete(key);
    return v;
  }
  throw new BpfError('NM_ERR_BPF_CODEC', `client address ${client.addr} is not an IP address`);
}
