/** Who may get a certificate for which service account: the confused-deputy check the CA runs before signing. */
import type { V1Pod } from '@kubernetes/client-node';
import { isValidNamespace, isValidServiceAccount, type SvidIdentity } from './spiffe-name.ts';

/**
 * The authenticated caller of a signing request. The transport decides which one it is (a node bootstrap
 * credential, or a service-account token checked by TokenReview whose bound pod/node claims are passed on);
 * this function trusts these fields and nothing in the CSR.
 */
export type CsrRequester =
  | { kind: 'node'; nodeName: string }
  | { kind: 'serviceaccount'; namespace: string; name: string; podName?: string; nodeName?: string };

/** Input of `authorizeCsr`. */
export interface AuthorizeCsrInput {
  requester: CsrRequester;
  requested: SvidIdentity;
  /** Pods to check against (all, or those of the relevant node/namespace: the function filters again). */
  pods: readonly V1Pod[];
}

/** Codes of a refusal, for a metrics label and the response the agent logs. */
export type CsrDenyCode =
  | 'invalid_identity' // requested namespace/service account is not a valid name
  | 'invalid_requester' // requester fields are empty or malformed
  | 'no_pod_on_node' // no running pod with that service account is scheduled on the requesting node
  | 'pod_on_other_node' // such pods exist, but only on other nodes (the B7 confused-deputy case)
  | 'pod_terminated' // the only matching pods have finished (Succeeded/Failed)
  | 'other_service_account' // a service-account token asked for another service account
  | 'pod_not_found' // the token is bound to a pod that does not exist, runs another SA, or sits elsewhere
  | 'node_mismatch'; // the token's node claim differs from the pod's node

/** Outcome of `authorizeCsr`. */
export type CsrDecision = { allowed: true; reason: string } | { allowed: false; code: CsrDenyCode; reason: string };

/**
 * Decides whether `requester` may obtain an SVID for `requested`. Pure: the caller supplies current Pod objects.
 *
 * - A node (its agent) may obtain certificates only for service accounts of pods scheduled on that node
 *   (`spec.nodeName`), not finished (`status.phase` not Succeeded/Failed). A pod being deleted still counts:
 *   it keeps serving through its grace period and needs a valid identity for that.
 * - A service-account token may obtain only its own identity; if the token is bound to a pod (and node), that
 *   pod must exist with that service account (on that node) and not be finished.
 *
 * A pod without `spec.serviceAccountName` runs as `default`, as the API server's admission makes it.
 */
export function authorizeCsr(input: AuthorizeCsrInput): CsrDecision {
  const { requester, requested } = input;
  if (!isValidNamespace(requested.namespace) || !isValidServiceAccount(requested.serviceAccount)) {
    return deny('invalid_identity', `requested identity ${requested.namespace}/${requested.serviceAccount} is not a valid namespace/service account name`);
  }
  const who = `${requested.namespace}/${requested.serviceAccount}`;
  const matching = input.pods.filter((p) => p.metadata?.namespace === requested.namespace && serviceAccountOf(p) === requested.serviceAccount);

  if (requester.kind === 'node') {
    if (!requester.nodeName) return deny('invalid_requester', 'node requester has an empty nodeName');
    const onNode = matching.filter((p) => p.spec?.nodeName === requester.nodeName);
    const live = onNode.filter((p) => !isFinished(p));
    if (live.length > 0) return allow(`pod ${live[0]!.metadata?.name} on node ${requester.nodeName} runs as ${who}`);
    if (onNode.length > 0) return deny('pod_terminated', `pods of ${who} on node ${requester.nodeName} have all finished`);
    const elsewhere = matching.filter((p) => p.spec?.nodeName && !isFinished(p));
    if (elsewhere.length > 0) {
      return deny('pod_on_other_node', `node ${requester.nodeName} asked for ${who}, whose pods run on ${[...new Set(elsewhere.map((p) => p.spec!.nodeName))].join(', ')}, not on it`);
    }
    return deny('no_pod_on_node', `no running pod with service account ${who} is scheduled on node ${requester.nodeName}`);
  }

  if (!requester.namespace || !requester.name) return deny('invalid_requester', 'service-account requester has an empty namespace or name');
  if (requester.namespace !== requested.namespace || requester.name !== requested.serviceAccount) {
    return deny('other_service_account', `token of ${requester.namespace}/${requester.name} asked for ${who}`);
  }
  if (requester.podName === undefined) {
    if (requester.nodeName !== undefined) return deny('invalid_requester', 'token has a node claim but no pod claim');
    return allow(`token of ${who} asked for its own identity`);
  }
  const pod = matching.find((p) => p.metadata?.name === requester.podName);
  if (!pod) return deny('pod_not_found', `token is bound to pod ${requester.namespace}/${requester.podName}, which does not exist or does not run as ${who}`);
  if (isFinished(pod)) return deny('pod_terminated', `pod ${requester.namespace}/${requester.podName} has finished`);
  if (requester.nodeName !== undefined && pod.spec?.nodeName !== requester.nodeName) {
    return deny('node_mismatch', `token says node ${requester.nodeName}, pod ${requester.podName} is on ${pod.spec?.nodeName ?? '(unscheduled)'}`);
  }
  return allow(`pod ${requester.podName} runs as ${who}`);
}

function serviceAccountOf(pod: V1Pod): string {
  return pod.spec?.serviceAccountName || 'default';
}

function isFinished(pod: V1Pod): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

function allow(reason: string): CsrDecision {
  return { allowed: true, reason };
}

function deny(code: CsrDenyCode, reason: string): CsrDecision {
  return { allowed: false, code, reason };
}
