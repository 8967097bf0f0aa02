/** `nodemesh sandbox status`: supervisor, API server, nodes with addresses, pods per node, daemons and restarts. */
import { CoreV1Api } from '@kubernetes/client-node';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { sandboxPaths, type SandboxConfig } from './config.ts';
import { describeError } from './errors.ts';
import { loadKubeConfig } from './kube.ts';
import { readState } from './state.ts';
import type { SupervisorReport } from './supervisor-main.ts';
import { isSupervisorAlive, supervisorOf } from './up.ts';
import { formatOperatorStatus, OPERATOR_STATUS_SOCKET, readOperatorStatus } from '../operator/status-client.ts'; // nodemesh operator (issue 4)
import { join } from 'node:path';

/** Status lines; `up` is false when nothing (or only a dead sandbox) is there. */
export async function statusSandbox(cfg: SandboxConfig): Promise<{ up: boolean; lines: string[] }> {
  const paths = sandboxPaths(cfg);
  const state = await readState(paths.state);
  if (!state) return { up: false, lines: [`no sandbox (instance ${cfg.instance}) is up; start one with \`nodemesh sandbox up\``] };
  const alive = await isSupervisorAlive(state);
  const lines: string[] = [];
  lines.push(`sandbox instance ${cfg.instance}: ${state.nodes} node(s), created ${state.createdAt}`);
  lines.push(`supervisor: ${alive ? `running (pid ${supervisorOf(state)?.pid})` : 'NOT running (crashed or killed): run `nodemesh sandbox down`'}; log ${paths.supervisorLog}`);
  let report: SupervisorReport | undefined;
  try {
    report = JSON.parse(await readFile(paths.supervisorStatus, 'utf8')) as SupervisorReport;
  } catch {
    // Not written yet.
  }
  if (report?.error) lines.push(`supervisor error: ${report.error}`);
  let apiOk = false;
  const podsByNode = new Map<string, string[]>();
  const nodeLines: string[] = [];
  if (existsSync(paths.hostKubeconfig) && alive) {
    try {
      const core = loadKubeConfig(paths.hostKubeconfig).makeApiClient(CoreV1Api);
      const [nodes, pods] = await Promise.all([core.listNode(), core.listPodForAllNamespaces()]);
      apiOk = true;
      for (const p of pods.items) {
        const n = p.spec?.nodeName ?? '(unscheduled)';
        const ready = p.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
        const restarts = (p.status?.containerStatuses ?? []).reduce((a, c) => a + (c.restartCount ?? 0), 0);
        const line = `${p.metadata?.namespace}/${p.metadata?.name} ${p.status?.phase ?? 'Pending'}${ready ? ' Ready' : ''} ${p.status?.podIP ?? '-'}${restarts ? ` restarts=${restarts}` : ''}`;
        podsByNode.set(n, [...(podsByNode.get(n) ?? []), line]);
      }
      for (const n of nodes.items) {
        const ready = n.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
        const ip = n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address;
        nodeLines.push(`  ${n.metadata?.name} ${ready ? 'Ready' : 'NotReady'} ${ip ?? '-'} podCIDR ${n.spec?.podCIDR ?? '-'} netns ${n.metadata?.annotations?.['nodemesh.io/netns'] ?? '-'}`);
        for (const p of podsByNode.get(n.metadata?.name ?? '') ?? []) nodeLines.push(`    ${p}`);
      }
      for (const p of podsByNode.get('(unscheduled)') ?? []) nodeLines.push(`  (unscheduled) ${p}`);
    } catch (err) {
      lines.push(`API server: not answering (${describeError(err)})`);
    }
  }
  if (apiOk) lines.push(`API server: ${report?.apiserver?.url ?? '?'} (kubeconfig ${paths.hostKubeconfig}; in-node https://127.0.0.1:6443)`);
  lines.push('nodes:');
  if (nodeLines.length) lines.push(...nodeLines);
  else for (const n of report?.nodes ?? []) lines.push(`  ${n.name} ${n.address} podCIDR ${n.podCidr} netns ${n.netns} (${n.pods.length} pods, from the last supervisor report)`);
  lines.push('daemons:');
  for (const d of report?.daemons ?? []) lines.push(`  ${d.name} ${d.state}${d.pid ? ` pid ${d.pid}` : ''} restarts=${d.restarts}${d.lastExit ? ` last exit: ${d.lastExit}` : ''}`);
  if (!report?.daemons?.length) lines.push('  (none reported)');
  // nodemesh operator (issue 4): whether it leads, read from its /status on the unix socket.
  if (alive) {
    const sock = join(cfg.stateDir, OPERATOR_STATUS_SOCKET);
    lines.push(await readOperatorStatus(sock).then(formatOperatorStatus, (err: unknown) => `operator: not answering on ${sock} (${describeError(err)})`));
  }
  // Mesh wiring (sandbox/mesh-wiring.ts): the CA, where traces land, and the agents' loopback status endpoint (for
  // tests and people; `kubectl mesh` reaches the agents through the API server's pods proxy instead).
  const m = report?.mesh;
  if (m) lines.push(`mesh: CA ${m.caUrl ?? '-'}; traces ${m.otlpEndpoint ?? '-'} (each node's receiver) → ${m.spansFile}; agents' status ${m.agentStatusUrl ?? '-'}/nodes/<node>/{statusz,metrics}`);
  return { up: alive, lines };
}
