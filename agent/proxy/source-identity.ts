/**
 * Which workload identity the outbound proxy may give a connection from a local pod address (its
 * `identifySource`). The proxy only sees the source address; an address is reused as soon as a pod is gone, so
 * the table must never keep an identity the address no longer carries (istio/istio#46628: a stale IP→workload
 * cache let a new pod with another service account act as the old one).
 *
 * Two sources vouch for an address, and both must agree before it gets an identity:
 *   - the NodeState (the operator's view: pod → service account, `uid` included), and
 *   - this node's own Pod watch (the agent's view, usually ahead of the NodeState: it sees a delete or a new
 *     pod's status without a round trip through the operator).
 * An address is withheld (no identity: the source is `anon:<ip>`, so mTLS is refused with 503 and STRICT
 * destinations refuse it, never a borrowed certificate) when:
 *   - two NodeState workloads with different identities claim it (a delete not yet compiled out);
 *   - the Pod watch has no live pod holding it (deleted, or finished), or more than one (the old pod's delete
 *     not seen yet while the new one already reports the address);
 *   - the pod holding it in the Pod watch is not the pod the NodeState names (uid differs: reused address).
 * Out-of-order events resolve by themselves: whichever view is behind keeps the address withheld until both
 * name the same pod. The destination side applies the same rule (`computeAddressOwners`, stricter on the
 * NodeState: two workloads with one identity still disagree, as their policies may differ): plan-proxy.ts gives a
 * withheld destination address a deny-all destination instead of the policy of whichever claim came last.
 */
import type { V1Pod } from '@kubernetes/client-node';
import type { NodeWorkload } from '../../crds/index.ts';
import type { SourceIdentity } from '../../l7proxy/proxy.ts';

/** An address left without an identity, and why (reported in the plan's problems). */
export type WithheldAddress = { ip: string; reason: string };

/** The identity table and the addresses withheld from it. */
export type SourceIdentityPlan = { identities: Record<string, SourceIdentity>; withheld: WithheldAddress[] };

/** A pod that may still send from its address: bound to a node, not host-network, not finished. */
function holdsAddress(p: V1Pod): boolean {
  const phase = p.status?.phase;
  return !p.spec?.hostNetwork && phase !== 'Succeeded' && phase !== 'Failed';
}

function podAddresses(p: V1Pod): string[] {
  const ips = (p.status?.podIPs ?? []).map((x) => x.ip).filter((ip): ip is string => !!ip);
  if (ips.length === 0 && p.status?.podIP) ips.push(p.status.podIP);
  return ips;
}

const podName = (p: V1Pod): string => `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`;

/**
 * How two NodeState claims on one address may still agree: the source side needs the same identity (the address
 * is only a source), the destination side the same workload (its policies and ports are the workload's).
 */
export type ClaimAgreement = 'same-identity' | 'same-workload';

/** The workload each local address belongs to, where both views agree, and the addresses held back. */
export type AddressOwnerPlan = { owners: Map<string, NodeWorkload>; withheld: WithheldAddress[] };

/**
 * The owner of each local pod address the NodeState claims (pure): the workload, only when this node's Pod watch
 * has exactly one live pod with that address and it is the pod (uid, namespace and service account) the NodeState
 * names, and the NodeState's claims agree (`agreement`). `localPods` undefined (plan tests alone): the NodeState
 * decides on its own, ambiguity still withheld. Shared by the source side (computeSourceIdentities) and the
 * destination side (plan-proxy.ts: which workload's policy an inbound address gets).
 */
export function computeAddressOwners(workloads: readonly NodeWorkload[], localPods: readonly V1Pod[] | undefined, agreement: ClaimAgreement): AddressOwnerPlan {
  const claims = new Map<string, NodeWorkload[]>();
  for (const w of workloads) {
    for (const ip of new Set(w.podIPs)) {
      const list = claims.get(ip) ?? [];
      list.push(w);
      claims.set(ip, list);
    }
  }
  let holders: Map<string, V1Pod[]> | undefined;
  if (localPods) {
    holders = new Map();
    for (const p of localPods) {
      if (!holdsAddress(p)) continue;
      for (const ip of new Set(podAddresses(p))) {
        const list = holders.get(ip) ?? [];
        list.push(p);
        holders.set(ip, list);
      }
    }
  }
  const owners = new Map<string, NodeWorkload>();
  const withheld: WithheldAddress[] = [];
  const claimKey = (w: NodeWorkload): string => (agreement === 'same-identity' ? w.spiffeId : `${w.namespace}/${w.name}/${w.uid}`);
  for (const ip of [...claims.keys()].sort()) {
    const ws = claims.get(ip)!;
    if (new Set(ws.map(claimKey)).size > 1) {
      const what = agreement === 'same-identity' ? (w: NodeWorkload): string => `${w.namespace}/${w.name} (${w.spiffeId})` : (w: NodeWorkload): string => `${w.namespace}/${w.name} (uid ${w.uid || '?'})`;
      withheld.push({ ip, reason: `claimed by ${ws.map(what).join(' and ')} in the NodeState (an address reused before the old pod was compiled out?)` });
      continue;
    }
    if (!holders) {
      owners.set(ip, ws[0]!);
      continue;
    }
    const hs = holders.get(ip) ?? [];
    if (hs.length === 0) {
      withheld.push({ ip, reason: `the NodeState names ${ws.map((w) => `${w.namespace}/${w.name}`).join(', ')}, but this node's Pod watch has no live pod with that address (deleted or finished; NodeState behind)` });
      continue;
    }
    if (hs.length > 1) {
      withheld.push({ ip, reason: `pods ${hs.map(podName).join(' and ')} both report that address in this node's Pod watch (old pod's delete not seen yet)` });
      continue;
    }
    const pod = hs[0]!;
    const uid = pod.metadata?.uid ?? '';
    const named = ws.find((w) => w.uid === uid);
    if (!uid || !named) {
      withheld.push({ ip, reason: `the address belongs to pod ${podName(pod)} (uid ${uid || '?'}) but the NodeState names ${ws.map((w) => `${w.namespace}/${w.name} (uid ${w.uid || '?'})`).join(', ')} (reused address; waiting for the NodeState)` });
      continue;
    }
    const sa = pod.spec?.serviceAccountName ?? 'default';
    if (pod.metadata?.namespace !== named.namespace || sa !== named.serviceAccount) {
      withheld.push({ ip, reason: `pod ${podName(pod)} runs as ${pod.metadata?.namespace}/${sa} but the NodeState says ${named.namespace}/${named.serviceAccount}` });
      continue;
    }
    owners.set(ip, named);
  }
  return { owners, withheld };
}

/**
 * The source identity of each local pod address (pure). `localPods`: this node's Pod watch; undefined only where
 * no watch exists (tests of the plan alone): then the NodeState is taken on its own, ambiguity still withheld.
 */
export function computeSourceIdentities(workloads: readonly NodeWorkload[], localPods: readonly V1Pod[] | undefined): SourceIdentityPlan {
  const { owners, withheld } = computeAddressOwners(workloads, localPods, 'same-identity');
  const identities: Record<string, SourceIdentity> = {};
  for (const [ip, w] of owners) identities[ip] = { spiffeId: w.spiffeId, namespace: w.namespace, serviceAccount: w.serviceAccount };
  return { identities, withheld };
}
