/**
 * The seam to the agents: where each node's agent status endpoint is, fetching its JSON, and reading it into
 * the shape `status` and `check` show. The agent's endpoint owns its JSON; this file documents what the
 * plugin reads from it and tolerates fields that are missing (an older or newer agent).
 *
 * Where an agent is found, first match wins:
 *   1. `--agent-endpoints node-a=http://10.0.0.1:10256,node-b=...` (or $NODEMESH_AGENT_ENDPOINTS), e.g. from the sandbox;
 *   2. the Node annotation `nodemesh.io/agent-status-url` (the agent may write it at start);
 *   3. none: the agent's section says "unknown" (a real cluster could add the API server's node proxy here).
 * The plugin GETs `<base>/statusz` (base without a path) or the annotated URL as is.
 */
import type { V1Node } from '@kubernetes/client-node';
import { CliError } from './errors.ts';
import type { ClockReading } from './skew.ts';

/** Node annotation an agent (or the sandbox) sets to its status URL. */
export const AGENT_STATUS_ANNOTATION = 'nodemesh.io/agent-status-url';

/**
 * What the plugin reads from an agent's status JSON. Every field is optional; `ready` falls back to
 * `sync.ready` (the agent's /statusz today).
 */
export type AgentStatusJson = {
  node?: string;
  version?: string;
  ready?: boolean;
  /** Why not ready. */
  reason?: string;
  sync?: { ready?: boolean; synced?: boolean; lastError?: string; passes?: number; failures?: number };
  /** The NodeState set in effect. */
  nodeState?: { version?: number; contentHash?: string; shards?: number; appliedAt?: string; applySeconds?: number };
  /** BPF programs and their attachment. */
  datapath?: { programs?: { name: string; attached: boolean }[]; attachments?: { program: string; action?: string }[]; maps?: { name: string; entries: number; capacity: number }[] };
  proxy?: { listening?: boolean; listeners?: string[]; workers?: number; configVersion?: string };
  /** Workload certificates held. */
  certificates?: { identity: string; notAfter: string }[];
  kernel?: { release?: string; bpf?: boolean; cgroup2?: boolean; bpffs?: boolean };
};

/** The outcome of asking one node's agent; `clock` times the answer (its Date header) for the clock-skew check. */
export type AgentStatusResult = { node: string; url?: string; status?: AgentStatusJson; error?: string; clock?: ClockReading };

/** Parses `node=url,node=url`. */
export function parseAgentEndpoints(text: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!text) return out;
  for (const part of text.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    const eq = p.indexOf('=');
    if (eq <= 0) throw new CliError('NM_ERR_CLI_USAGE', `--agent-endpoints: "${p}" is not node=url`);
    out.set(p.slice(0, eq), p.slice(eq + 1));
  }
  return out;
}

/** Resolves each node's status URL (see the module comment for the order). Pure. */
export function resolveAgentEndpoints(nodes: readonly V1Node[], explicit: ReadonlyMap<string, string>): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  for (const n of nodes) {
    const name = n.metadata?.name;
    if (!name) continue;
    const url = explicit.get(name) ?? n.metadata?.annotations?.[AGENT_STATUS_ANNOTATION];
    out.set(name, url === undefined ? undefined : normalizeStatusUrl(url));
  }
  return out;
}

/** A base URL gets `/statusz`; a URL with a path is used as is. */
export function normalizeStatusUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.pathname === '/' || u.pathname === '') u.pathname = '/statusz';
    return u.toString();
  } catch {
    return url;
  }
}

/** Fetches every agent's status in parallel, each within `timeoutMs`; failures are results, not throws. */
export async function fetchAgentStatuses(endpoints: ReadonlyMap<string, string | undefined>, opts: { timeoutMs?: number; fetchImpl?: typeof fetch } = {}): Promise<AgentStatusResult[]> {
  const f = opts.fetchImpl ?? fetch;
  const timeoutMs = opts.timeoutMs ?? 3000;
  return Promise.all(
    [...endpoints].map(async ([node, url]): Promise<AgentStatusResult> => {
      if (!url) return { node, error: `no status endpoint known (annotate the Node with ${AGENT_STATUS_ANNOTATION} or pass --agent-endpoints)` };
      try {
        const sentMs = Date.now();
        const res = await f(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
        const clock: ClockReading = { sentMs, receivedMs: Date.now(), date: res.headers.get('date') ?? undefined };
        if (!res.ok) return { node, url, error: `${url} answered ${res.status}`, clock };
        return { node, url, status: (await res.json()) as AgentStatusJson, clock };
      } catch (e) {
        const err = e as Error & { cause?: { code?: string } };
        const why = err.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (err.cause?.code ?? err.message);
        return { node, url, error: `${url}: ${why} (agent down, or its port unreachable from here?)` };
      }
    }),
  );
}

/** Whether the agent says it is ready (its own field, else its sync loop's). */
export function agentReady(s: AgentStatusJson | undefined): boolean | undefined {
  return s?.ready ?? s?.sync?.ready;
}

/** Earliest certificate expiry the agent holds, in ms since the epoch. */
export function earliestCertificateExpiry(s: AgentStatusJson | undefined): number | undefined {
  const times = (s?.certificates ?? []).map((c) => Date.parse(c.notAfter)).filter((t) => !Number.isNaN(t));
  return times.length ? Math.min(...times) : undefined;
}

/** Programs attached, as `name` list (from `programs`, else from `attachments`). */
export function attachedPrograms(s: AgentStatusJson | undefined): string[] | undefined {
  if (s?.datapath?.programs) return s.datapath.programs.filter((p) => p.attached).map((p) => p.name);
  if (s?.datapath?.attachments) return s.datapath.attachments.map((a) => a.program);
  return undefined;
}

/** Highest map fill as a fraction 0..1 and the map's name. */
export function fullestMap(s: AgentStatusJson | undefined): { name: string; fill: number } | undefined {
  let best: { name: string; fill: number } | undefined;
  for (const m of s?.datapath?.maps ?? []) {
    if (!(m.capacity > 0)) continue;
    const fill = m.entries / m.capacity;
    if (!best || fill > best.fill) best = { name: m.name, fill };
  }
  return best;
}
