/**
 * Agent credentials for the CA, as whoever runs the agents provides them. In a real cluster the agent
 * DaemonSet's pod gets a projected ServiceAccount token (audience nodemesh-ca) whose TokenReview carries the
 * pod's node. The sandbox runs agents as daemons, not pods, so its supervisor mints one token per node:
 * a TokenRequest for nodemesh-system/nodemesh-agent with boundObjectRef = the Node. Both prove the same thing
 * to the CA: "the agent of node X" (TokenReview extra authentication.kubernetes.io/node-name and node-uid).
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { isConflict } from '../operator/backoff.ts';
import { AGENT_SERVICE_ACCOUNT, CA_AUDIENCE } from '../operator/ca-service.ts';

/** Creates the agent ServiceAccount in the mesh namespace unless it exists (deploy/ does this in a real cluster). */
export async function ensureAgentServiceAccount(kc: KubeConfig, namespace: string): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  try {
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: AGENT_SERVICE_ACCOUNT, namespace, labels: { 'app.kubernetes.io/part-of': 'nodemesh' } } } });
  } catch (err) {
    if (!isConflict(err)) throw err;
  }
}

/** A token for the agent of `nodeName` (bound to the Node object, audience nodemesh-ca). */
export async function mintAgentNodeToken(kc: KubeConfig, namespace: string, nodeName: string, expirationSeconds = 3600): Promise<{ token: string; expiresAt: string }> {
  const core = kc.makeApiClient(CoreV1Api);
  const node = await core.readNode({ name: nodeName });
  const r = await core.createNamespacedServiceAccountToken({
    name: AGENT_SERVICE_ACCOUNT,
    namespace,
    body: { spec: { audiences: [CA_AUDIENCE], expirationSeconds, boundObjectRef: { apiVersion: 'v1', kind: 'Node', name: nodeName, uid: node.metadata?.uid } } },
  });
  const token = r.status?.token;
  if (!token) throw new Error(`TokenRequest for ${namespace}/${AGENT_SERVICE_ACCOUNT} bound to node ${nodeName} returned no token`);
  const exp = r.status?.expirationTimestamp as unknown;
  return { token, expiresAt: exp instanceof Date ? exp.toISOString() : String(exp) };
}
