/**
 * `kubectl mesh status`: the operator (Lease holder and freshness) and every node (its NodeState set and,
 * when its agent answers, readiness, NodeState version applied vs written, programs, map fill, proxy and
 * certificates), like `cilium status`.
 */
import type { V1Lease, V1Node } from '@kubernetes/client-node';
import { NodeStateResource } from '../../crds/index.ts';
import { agentReady, attachedPrograms, discoverAgentEndpoints, earliestCertificateExpiry, fetchAgentStatuses, fullestMap, type AgentFetch, type AgentStatusResult } from './agent-status.ts';
import { OPERATOR_LEASE } from './check.ts';
import type { ClusterReader, KubeObject } from './kube.ts';
import { groupNodeStates } from './mesh-objects.ts';
import { formatAge, formatJson, formatTable, indent, toMillis, type OutputFormat } from './output.ts';

/** The operator's state as its Lease shows it. */
export type OperatorView = { lease: string; state: 'Leading' | 'Stale' | 'NoLeader' | 'Missing'; leader?: string; renewedAgoMs?: number; leaseDurationSeconds?: number; transitions?: number };

/** One node's line. */
export type NodeView = {
  node: string;
  nodeState: { shards: number; count?: number; complete: boolean; version?: number; services: number; workloads: number } | undefined;
  agent: {
    reachable: boolean;
    /** How it was reached: --agent-endpoints, the Node annotation, or the API server's pods proxy (pod: namespace/name). */
    via?: AgentStatusResult['via'];
    pod?: string;
    error?: string;
    ready?: boolean;
    version?: string;
    appliedVersion?: number;
    programs?: string[];
    fullestMap?: { name: string; fill: number };
    proxy?: { listening?: boolean; workers?: number; listeners?: string[] };
    certificates?: number;
    earliestCertExpiry?: string;
  };
};

/** The answer of `status`. */
export type StatusView = { operator: OperatorView; nodes: NodeView[] };

/** Builds the answer from what was read (pure). */
export function computeStatusView(input: { now: number; lease: V1Lease | undefined; nodes: readonly V1Node[]; nodeStates: readonly KubeObject[]; agents: readonly AgentStatusResult[] }): StatusView {
  const leaseName = `${OPERATOR_LEASE.namespace}/${OPERATOR_LEASE.name}`;
  let operator: OperatorView;
  if (!input.lease) operator = { lease: leaseName, state: 'Missing' };
  else {
    const holder = input.lease.spec?.holderIdentity ?? '';
    const renew = toMillis(input.lease.spec?.renewTime);
    const dur = input.lease.spec?.leaseDurationSeconds ?? 15;
    const fresh = renew !== undefined && input.now - renew <= dur * 1000;
    operator = {
      lease: leaseName,
      state: holder === '' ? 'NoLeader' : fresh ? 'Leading' : 'Stale',
      ...(holder ? { leader: holder } : {}),
      ...(renew !== undefined ? { renewedAgoMs: Math.max(0, input.now - renew) } : {}),
      leaseDurationSeconds: dur,
      ...(input.lease.spec?.leaseTransitions !== undefined ? { transitions: input.lease.spec.leaseTransitions } : {}),
    };
  }
  const sets = groupNodeStates(input.nodeStates);
  const agents = new Map(input.agents.map((a) => [a.node, a]));
  const names = [...new Set([...input.nodes.map((n) => n.metadata?.name ?? ''), ...sets.keys()])].filter((n) => n !== '').sort();
  const nodes = names.map((node): NodeView => {
    const set = sets.get(node);
    const a = agents.get(node);
    const s = a?.status;
    const expiry = earliestCertificateExpiry(s);
    const programs = attachedPrograms(s);
    const fm = fullestMap(s);
    return {
      node,
      nodeState: set ? { shards: set.shards.length, ...(set.count !== undefined ? { count: set.count } : {}), complete: set.complete, ...(set.version !== undefined ? { version: set.version } : {}), services: set.services.length, workloads: set.workloads.length } : undefined,
      agent: s
        ? {
            reachable: true,
            ...(a?.via ? { via: a.via } : {}),
            ...(a?.pod ? { pod: a.pod } : {}),
            ...(agentReady(s) !== undefined ? { ready: agentReady(s) } : {}),
            ...(s.version ? { version: s.version } : {}),
            ...(s.nodeState?.version !== undefined ? { appliedVersion: s.nodeState.version } : {}),
            ...(programs ? { programs } : {}),
            ...(fm ? { fullestMap: fm } : {}),
            ...(s.proxy ? { proxy: { ...(s.proxy.listening !== undefined ? { listening: s.proxy.listening } : {}), ...(s.proxy.workers !== undefined ? { workers: s.proxy.workers } : {}), ...(s.proxy.listeners ? { listeners: s.proxy.listeners } : {}) } } : {}),
            ...(s.certificates ? { certificates: s.certificates.length } : {}),
            ...(expiry !== undefined ? { earliestCertExpiry: new Date(expiry).toISOString() } : {}),
          }
        : { reachable: false, ...(a?.via ? { via: a.via } : {}), ...(a?.pod ? { pod: a.pod } : {}), ...(a?.error ? { error: a.error } : { error: 'not asked' }) },
    };
  });
  return { operator, nodes };
}

/** Renders the answer. */
export function formatStatusView(v: StatusView, format: OutputFormat, now: number): string {
  if (format === 'json') return formatJson(v);
  const o = v.operator;
  let out = 'Operator:\n';
  out += `  Lease:   ${o.lease}\n`;
  if (o.state === 'Missing') out += '  State:   Missing (no Lease: the operator never ran or cannot write Leases)\n';
  else {
    out += `  State:   ${o.state}${o.state === 'Stale' ? ' (the leader stopped renewing)' : o.state === 'NoLeader' ? ' (released, no replica leading)' : ''}\n`;
    if (o.leader) out += `  Leader:  ${o.leader}${o.renewedAgoMs !== undefined ? ` (renewed ${formatAge(o.renewedAgoMs)} ago, lease ${o.leaseDurationSeconds}s${o.transitions !== undefined ? `, ${o.transitions} transitions` : ''})` : ''}\n`;
  }
  out += '\nNodes:\n';
  if (v.nodes.length === 0) return `${out}  <none>\n`;
  const rows = v.nodes.map((n) => {
    const ns = n.nodeState;
    const nsCell = !ns ? 'missing' : `${ns.complete ? 'complete' : 'partial'} (${ns.shards}/${ns.count ?? '?'})`;
    const a = n.agent;
    const agentCell = !a.reachable ? 'unknown' : a.ready === undefined ? 'answering' : a.ready ? 'Ready' : 'NotReady';
    const applied = a.appliedVersion !== undefined ? `${a.appliedVersion}/${ns?.version ?? '-'}` : `-/${ns?.version ?? '-'}`;
    const certs = a.certificates === undefined ? '-' : `${a.certificates}${a.earliestCertExpiry ? ` (next ${formatAge(Date.parse(a.earliestCertExpiry) - now)})` : ''}`;
    // Listener ports only (`:15001,:15008`): the address is the node's, already on the line.
    const ports = (a.proxy?.listeners ?? []).map((l) => l.slice(l.lastIndexOf(':'))).join(',');
    const proxy = !a.proxy ? '-' : `${a.proxy.listening === false ? 'down' : 'up'}${a.proxy.workers !== undefined ? ` ${a.proxy.workers}w` : ''}${ports ? ` ${ports}` : ''}`;
    return [n.node, nsCell, String(ns?.services ?? '-'), String(ns?.workloads ?? '-'), agentCell, a.version ?? '-', applied, a.programs ? String(a.programs.length) : '-', a.fullestMap ? `${Math.round(a.fullestMap.fill * 100)}% ${a.fullestMap.name}` : '-', proxy, certs];
  });
  out += indent(formatTable(['node', 'nodestate', 'services', 'workloads', 'agent', 'version', 'applied/latest', 'programs', 'fullest map', 'proxy', 'certs'], rows));
  const unreachable = v.nodes.filter((n) => !n.agent.reachable);
  if (unreachable.length > 0) out += `\n${unreachable.length} agent(s) not reachable: ${unreachable[0]!.agent.error}\n`;
  return out;
}

/** Reads what `status` needs and renders it. */
export async function runStatus(reader: ClusterReader, opts: { format: OutputFormat; agentEndpoints: ReadonlyMap<string, string>; now?: number; fetchImpl?: AgentFetch }): Promise<string> {
  const now = opts.now ?? Date.now();
  const [lease, nodes, nodeStates] = await Promise.all([reader.getLease(OPERATOR_LEASE.namespace, OPERATOR_LEASE.name), reader.listNodes(), reader.listCustom(NodeStateResource)]);
  const agents = await fetchAgentStatuses(await discoverAgentEndpoints(reader, nodes, opts.agentEndpoints), { reader, ...(opts.fetchImpl ? { fetchImpl: opts.fetchImpl } : {}) });
  return formatStatusView(computeStatusView({ now, lease, nodes, nodeStates: nodeStates ?? [], agents }), opts.format, now);
}
