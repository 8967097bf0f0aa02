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
 * name the same pod.
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
 * The source identity of each local pod address (pure). `localPods`: this node's Pod watch; undefined only where
 * no watch exists (tests of the plan alone): then the NodeState is taken on its own, ambiguity still withheld.
 */
export function computeSourceIdentities(workloads: readonly NodeWorkload[], localPods: readonly V1Pod[] | undefined): SourceIdentityPlan {
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
  const identities: Record<string, SourceIdentity> = {};
  const withheld: WithheldAddress[] = [];
  for (const ip of [...claims.keys()].sort()) {
    const ws = claims.get(ip)!;
    const ids = new Set(ws.map((w) => w.spiffeId));
    if (ids.size > 1) {
      withheld.push({ ip, reason: `claimed by ${ws.map((w) => `${w.namespace}/${w.name} (${w.spiffeId})`).join(' and ')} in the NodeState (an address reused before the old pod was compiled out?)` });
      continue;
    }
    if (holders) {
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
    }
    const w = ws[0]!;
    identities[ip] = { spiffeId: w.spiffeId, namespace: w.namespace, serviceAccount: w.serviceAccount };
  }
  return { identities, withheld };
}
