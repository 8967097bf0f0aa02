/**
 * The mesh control plane for a sandbox instance whose supervisor does not run one (yet): the operator (NodeStates,
 * status, the CA signing service on node-1's fabric address) inside node-1's network namespace, and one node-bound
 * agent token per node for the CA (what operator/agent-credentials.ts mints), written where the agents read them
 * (NODEMESH_CA_TOKEN_FILE with `{node}`). As a CLI: `node mesh-control-plane.ts tokens KUBECONFIG PATTERN NODE...`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { ensureAgentServiceAccount, mintAgentNodeToken } from '../../../operator/agent-credentials.ts';

const ROOT = resolve(import.meta.dirname, '../../..');

/** The CA URL agents use when the operator runs on node-1 (fabric address 10.200.0.11). */
export const SANDBOX_CA_URL = 'https://10.200.0.11:15012';

/** Writes one CA token per node, bound to its Node object, to `pattern` with `{node}` replaced. */
export async function writeAgentTokens(kubeconfig: string, pattern: string, nodes: string[]): Promise<void> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'nodemesh-system' } } }).catch(() => {});
  await ensureAgentServiceAccount(kc, 'nodemesh-system');
  for (const node of nodes) {
    const t = await mintAgentNodeToken(kc, 'nodemesh-system', node);
    writeFileSync(pattern.replaceAll('{node}', node), t.token, { mode: 0o600 });
  }
}

/** Starts the operator inside `netns` (API through the node's forwarder), CA on `caAddr`; output to `logFile`. */
export function startOperator(netns: string, nodeKubeconfig: string, caAddr: string, logFile: string): ChildProcess {
  const out = openSync(logFile, 'a');
  return spawn('nsenter', [`--net=/run/netns/${netns}`, '--', process.execPath, join(ROOT, 'operator/main.ts'), '--kubeconfig', nodeKubeconfig, '--health-addr', '', '--ca-addr', caAddr, '--leaf-ttl', '1h'], { stdio: ['ignore', out, out] });
}

if (import.meta.main && process.argv[2] === 'tokens') {
  await writeAgentTokens(process.argv[3]!, process.argv[4]!, process.argv.slice(5));
  console.log('tokens written');
}
