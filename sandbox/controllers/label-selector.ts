/** Label selector matching and formatting, as the API server and client-go define them. */
import type { V1LabelSelector, V1LabelSelectorRequirement } from '@kubernetes/client-node';

/** Labels of an object; absent labels behave as an empty map. */
export type Labels = Readonly<Record<string, string>> | undefined;

/** True when every key=value of `map` is present in `labels` (a Service selector; empty matches all). */
export function matchLabelMap(map: Readonly<Record<string, string>>, labels: Labels): boolean {
  for (const [key, value] of Object.entries(map)) {
    if (labels?.[key] !== value) return false;
  }
  return true;
}

/** True when `labels` satisfy one matchExpressions requirement. */
export function matchRequirement(req: V1LabelSelectorRequirement, labels: Labels): boolean {
  const has = labels !== undefined && Object.hasOwn(labels, req.key);
  const value = has ? labels[req.key] : undefined;
  const values = req.values ?? [];
  switch (req.operator) {
    case 'In':
      return has && values.includes(value as string);
    case 'NotIn':
      return !has || !values.includes(value as string);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
    default:
      // An unknown operator selects nothing, as the API server would have rejected it on write.
      return false;
  }
}

/**
 * True when `labels` satisfy a metav1.LabelSelector. A missing selector matches nothing (client-go's
 * LabelSelectorAsSelector(nil) is Nothing); an empty one matches everything.
 */
export function matchLabelSelector(selector: V1LabelSelector | undefined, labels: Labels): boolean {
  if (selector === undefined) return false;
  if (selector.matchLabels && !matchLabelMap(selector.matchLabels, labels)) return false;
  for (const req of selector.matchExpressions ?? []) {
    if (!matchRequirement(req, labels)) return false;
  }
  return true;
}

/** Renders a selector in the query-string syntax (`a=b,c in (d,e),!f`) for list/watch calls. */
export function formatLabelSelector(selector: V1LabelSelector): string {
  const parts: string[] = [];
  for (const key of Object.keys(selector.matchLabels ?? {}).sort()) {
    parts.push(`${key}=${selector.matchLabels?.[key] ?? ''}`);
  }
  for (const req of selector.matchExpressions ?? []) {
    const values = [...(req.values ?? [])].sort().join(',');
    if (req.operator === 'In') parts.push(`${req.key} in (${values})`);
    else if (req.operator === 'NotIn') parts.push(`${req.key} notin (${values})`);
    else if (req.operator === 'Exists') parts.push(req.key);
    else if (req.operator === 'DoesNotExist') parts.push(`!${req.key}`);
  }
  return parts.join(',');
}
