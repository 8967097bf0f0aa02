/**
 * The scheduler's decision, as a pure function: filter the nodes a pod may run on (Ready, schedulable,
 * nodeSelector, required node affinity, NoSchedule/NoExecute taints, pod capacity), then spread: fewest
 * pods of the same group first, fewest pods overall second, name last so the answer is deterministic.
 */
import type { V1Node, V1NodeSelectorRequirement, V1NodeSelectorTerm, V1Pod, V1Taint, V1Toleration } from '@kubernetes/client-node';
import { matchLabelMap } from './label-selector.ts';
import { controllerRefOf, isPodTerminal } from './object-meta.ts';

/** Either the chosen node, or why none fits (the PodScheduled=False message, as the real one words it). */
export type NodeChoice = { nodeName: string } | { unschedulable: string };

/** True when the node reports Ready=True. */
export function isNodeReady(node: V1Node): boolean {
  return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

/** True when one toleration covers one taint (v1helper.TolerationsTolerateTaint). */
export function toleratesTaint(toleration: V1Toleration, taint: V1Taint): boolean {
  if (toleration.effect && toleration.effect !== taint.effect) return false;
  if (toleration.key && toleration.key !== taint.key) return false;
  // An empty key with Exists tolerates every taint; an empty key with Equal is invalid and tolerates none.
  if (!toleration.key && toleration.operator !== 'Exists') return false;
  if (toleration.operator === 'Exists') return true;
  return (toleration.value ?? '') === (taint.value ?? '');
}

/** The first NoSchedule/NoExecute taint of the node the pod does not tolerate. */
export function untoleratedTaint(pod: V1Pod, node: V1Node): V1Taint | undefined {
  const tolerations = pod.spec?.tolerations ?? [];
  return (node.spec?.taints ?? []).find(
    (taint) => (taint.effect === 'NoSchedule' || taint.effect === 'NoExecute') && !tolerations.some((t) => toleratesTaint(t, taint)),
  );
}

function matchNodeRequirement(req: V1NodeSelectorRequirement, value: string | undefined): boolean {
  const values = req.values ?? [];
  switch (req.operator) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      return value !== undefined;
    case 'DoesNotExist':
      return value === undefined;
    case 'Gt':
    case 'Lt': {
      // Gt/Lt compare integers; a label that is not one fails the requirement rather than the pod.
      if (value === undefined || !/^-?\d+$/.test(value) || values.length !== 1 || !/^-?\d+$/.test(values[0] ?? '')) return false;
      const have = BigInt(value);
      const want = BigInt(values[0] as string);
      return req.operator === 'Gt' ? have > want : have < want;
    }
    default:
      return false;
  }
}

/** True when the node satisfies one nodeSelectorTerm (all expressions and fields; an empty term matches nothing). */
export function matchNodeSelectorTerm(term: V1NodeSelectorTerm, node: V1Node): boolean {
  const exprs = term.matchExpressions ?? [];
  const fields = term.matchFields ?? [];
  if (exprs.length === 0 && fields.length === 0) return false;
  const labels = node.metadata?.labels ?? {};
  for (const req of exprs) {
    if (!matchNodeRequirement(req, Object.hasOwn(labels, req.key) ? labels[req.key] : undefined)) return false;
  }
  for (const req of fields) {
    // metadata.name is the only field the API server allows in matchFields.
    if (req.key !== 'metadata.name' || !matchNodeRequirement(req, node.metadata?.name)) return false;
  }
  return true;
}

/** True when the node passes the pod's nodeSelector and required node affinity. */
export function matchesNodeAffinity(pod: V1Pod, node: V1Node): boolean {
  if (pod.spec?.nodeSelector && !matchLabelMap(pod.spec.nodeSelector, node.metadata?.labels)) return false;
  const terms = pod.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
  if (terms && terms.length > 0 && !terms.some((term) => matchNodeSelectorTerm(term, node))) return false;
  return true;
}

/** The pod's spreading group: its controller (a ReplicaSet's pods), else its exact label set. */
function groupOf(pod: V1Pod): string | undefined {
  const ref = controllerRefOf(pod);
  if (ref?.uid) return `owner:${ref.uid}`;
  const labels = pod.metadata?.labels;
  if (!labels || Object.keys(labels).length === 0) return undefined;
  return `labels:${JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))}`;
}

/** Parses the `pods` allocatable quantity (a plain integer in practice); undefined means unlimited. */
function podCapacity(node: V1Node): number | undefined {
  const raw = node.status?.allocatable?.['pods'];
  if (raw === undefined) return undefined;
  const n = Number.parseInt(String(raw), 10);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Picks a node for `pod` among `nodes`, given every pod already bound (`pods`; terminal ones are ignored,
 * the pod itself too). Returns the node, or the reasons no node fits in the scheduler's own words.
 */
export function chooseNode(pod: V1Pod, nodes: readonly V1Node[], pods: readonly V1Pod[]): NodeChoice {
  const group = groupOf(pod);
  const selfUid = pod.metadata?.uid;
  const total = new Map<string, number>();
  const same = new Map<string, number>();
  for (const other of pods) {
    const nodeName = other.spec?.nodeName;
    if (!nodeName || isPodTerminal(other)) continue;
    if (selfUid !== undefined && other.metadata?.uid === selfUid) continue;
    total.set(nodeName, (total.get(nodeName) ?? 0) + 1);
    if (group !== undefined && groupOf(other) === group) same.set(nodeName, (same.get(nodeName) ?? 0) + 1);
  }

  const reasons = new Map<string, number>();
  const note = (reason: string): void => {
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  };
  const fit: V1Node[] = [];
  for (const node of nodes) {
    const name = node.metadata?.name;
    if (!name) continue;
    if (!isNodeReady(node)) {
      note('node(s) were not ready');
      continue;
    }
    if (node.spec?.unschedulable && !(pod.spec?.tolerations ?? []).some((t) => toleratesTaint(t, { key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' }))) {
      note('node(s) were unschedulable');
      continue;
    }
    if (!matchesNodeAffinity(pod, node)) {
      note("node(s) didn't match Pod's node affinity/selector");
      continue;
    }
    const taint = untoleratedTaint(pod, node);
    if (taint) {
      note(`node(s) had untolerated taint {${taint.key}: ${taint.value ?? ''}}`);
      continue;
    }
    const capacity = podCapacity(node);
    if (capacity !== undefined && (total.get(name) ?? 0) >= capacity) {
      note('Too many pods');
      continue;
    }
    fit.push(node);
  }

  if (fit.length === 0) {
    const parts = [...reasons.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([reason, n]) => `${n} ${reason}`);
    const detail = parts.length > 0 ? ` ${parts.join(', ')}.` : '';
    return { unschedulable: `0/${nodes.length} nodes are available:${detail}` };
  }
  fit.sort((a, b) => {
    const an = a.metadata?.name ?? '';
    const bn = b.metadata?.name ?? '';
    return (same.get(an) ?? 0) - (same.get(bn) ?? 0) || (total.get(an) ?? 0) - (total.get(bn) ?? 0) || (an < bn ? -1 : an > bn ? 1 : 0);
  });
  return { nodeName: fit[0]?.metadata?.name as string };
}
