/**
 * The mesh control plane of a sandbox instance, as its supervisor wires it (sandbox/mesh-wiring.ts): the operator
 * daemon (CA on node-1's fabric address), one node-bound CA token per node, an OTLP receiver per node writing
 * <stateDir>/spans.jsonl, and each agent's /statusz and /metrics on the supervisor's loopback endpoint (tests read
 * agents there; `kubectl mesh` goes through the API server's pods proxy). Tests read it from here; none starts its
 * own operator or mints its own tokens.
 */
import { existsSync, readFileSync } from 'node:fs';
import { sandboxPaths, type SandboxConfig } from '../../../sandbox/config.ts';
import { meshPaths } from '../../../sandbox/mesh-wiring.ts';
import type { SupervisorReport } from '../../../sandbox/supervisor-main.ts';

/** What a test reads of an agent's /statusz (agent/main.ts). */
export type AgentStatus = {
  ready?: boolean;
  version?: string;
  nodeState?: { version?: number };
  datapath?: { programs?: { name: string; attached: boolean }[] };
  proxy?: { listening?: boolean; workers?: number; pid?: number; state?: string };
  certificates?: { identity: string; notAfter: string }[];
  telemetry?: { requests: number; tracing?: { enabled: boolean; endpoint?: string } };
  mesh?: { proxy?: { pid?: number; state: string; applied?: string }; planned?: string; certificates?: unknown; problems?: string[] };
};

/** The supervisor's report of the instance. */
export function readSupervisorReport(cfg: SandboxConfig): SupervisorReport {
  return JSON.parse(readFileSync(sandboxPaths(cfg).supervisorStatus, 'utf8')) as SupervisorReport;
}

/** Throws unless the supervisor runs the operator, the OTLP receiver and an agent per node, with CA tokens written. */
export function assertMeshWired(cfg: SandboxConfig): SupervisorReport {
  const r = readSupervisorReport(cfg);
  const names = new Set(r.daemons.map((d) => d.name));
  const missing = ['operator', ...r.nodes.flatMap((n) => [`agent/${n.name}`, `otlp-receiver/${n.name}`])].filter((n) => !names.has(n));
  if (missing.length) throw new Error(`the sandbox supervisor does not run: ${missing.join(', ')} (see ${sandboxPaths(cfg).supervisorLog})`);
  if (!r.mesh?.agentStatusUrl || !r.mesh.caUrl) throw new Error(`the supervisor report has no mesh wiring: ${JSON.stringify(r.mesh)}`);
  for (const n of r.nodes) if (!existsSync(meshPaths(cfg).tokenFile(n.name))) throw new Error(`no CA token for ${n.name} at ${meshPaths(cfg).tokenFile(n.name)}`);
  return r;
}

/** One agent's endpoint (`statusz` or `metrics`) through the supervisor's loopback proxy. */
export async function fetchAgent(cfg: SandboxConfig, node: string, what: 'statusz' | 'metrics'): Promise<string> {
  const base = readSupervisorReport(cfg).mesh?.agentStatusUrl;
  if (!base) throw new Error('the supervisor report names no agent status endpoint');
  const res = await fetch(`${base}/nodes/${node}/${what}`, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${base}/nodes/${node}/${what} answered ${res.status}: ${text}`);
  return text;
}

/** The agent's /statusz of a node. */
export async function agentStatus(cfg: SandboxConfig, node: string): Promise<AgentStatus> {
  return JSON.parse(await fetchAgent(cfg, node, 'statusz')) as AgentStatus;
}

/** The spans file the sandbox's OTLP receiver writes. */
export function spansFile(cfg: SandboxConfig): string {
  return meshPaths(cfg).spansFile;
}
