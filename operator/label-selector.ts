/** Kubernetes label selectors: syntax checks with field paths, and matching. */
import type { LabelSelector } from '../crds/index.ts';

const NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** A problem with a field path. */
export interface FieldProblem {
  path: string;
  message: string;
}

/** Why a label key is not a qualified name, or undefined when it is one. */
export function checkLabelKey(key: string): string | undefined {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) {
    return `label key ${JSON.stringify(key)}: the prefix must be a DNS subdomain (lower case, at most 253 characters)`;
  }
  if (name.length === 0 || name.length > 63 || !NAME.test(name)) {
    return `label key ${JSON.stringify(key)}: the name must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric`;
  }
  return undefined;
}

/** Why a label value is invalid, or undefined. */
export function checkLabelValue(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > 63 || !VALUE.test(value)) {
    return `label value ${JSON.stringify(value)} must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric`;
  }
  return undefined;
}

/** Every syntax problem of a selector, with paths under `path`. */
export function validateSelector(selector: unknown, path: string): FieldProblem[] {
  const problems: FieldProblem[] = [];
  if (selector === null || typeof selector !== 'object' || Array.isArray(selector)) {
    return [{ path, message: 'a label selector must be an object with matchLabels and/or matchExpressions' }];
  }
  const s = selector as LabelSelector;
  if (s.matchLabels !== undefined) {
    if (typeof s.matchLabels !== 'object' || s.matchLabels === null || Array.isArray(s.matchLabels)) {
      problems.push({ path: `${path}.matchLabels`, message: 'must be a map of label keys to values' });
    } else {
      for (const [k, v] of Object.entries(s.matchLabels)) {
        const p = `${path}.matchLabels[${JSON.stringify(k)}]`;
        const m = checkLabelKey(k) ?? checkLabelValue(v);
        if (m) problems.push({ path: p, message: m });
      }
    }
  }
  if (s.matchExpressions !== undefined) {
    if (!Array.isArray(s.matchExpressions)) {
      problems.push({ path: `${path}.matchExpressions`, message: 'must be a list' });
    } else {
      s.matchExpressions.forEach((e, i) => {
        const p = `${path}.matchExpressions[${i}]`;
        const keyProblem = typeof e?.key === 'string' ? checkLabelKey(e.key) : 'key is required';
        if (keyProblem) problems.push({ path: `${p}.key`, message: keyProblem });
        const values = e?.values ?? [];
        if (e?.operator === 'In' || e?.operator === 'NotIn') {
          if (!Array.isArray(values) || values.length === 0) problems.push({ path: `${p}.values`, message: `must not be empty for operator ${e.operator}` });
        } else if (e?.operator === 'Exists' || e?.operator === 'DoesNotExist') {
          if (Array.isArray(values) && values.length > 0) problems.push({ path: `${p}.values`, message: `must be empty for operator ${e.operator}` });
        } else {
          problems.push({ path: `${p}.operator`, message: `unknown operator ${JSON.stringify(e?.operator)}; use In, NotIn, Exists or DoesNotExist` });
        }
        if (Array.isArray(values)) {
          values.forEach((v, j) => {
            const m = checkLabelValue(v);
            if (m) problems.push({ path: `${p}.values[${j}]`, message: m });
          });
        }
      });
    }
  }
  return problems;
}

/** Whether labels satisfy a (valid) selector; an empty selector matches everything, as in Kubernetes. */
export function matchesSelector(selector: LabelSelector, labels: Readonly<Record<string, string>> | undefined): boolean {
  const l = labels ?? {};
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
    if (l[k] !== v) return false;
  }
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(l, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In': if (!has || !values.includes(l[e.key]!)) return false; break;
      case 'NotIn': if (has && values.includes(l[e.key]!)) return false; break;
      case 'Exists': if (!has) return false; break;
      case 'DoesNotExist': if (has) return false; break;
      default: return false;
    }
  }
  return true;
}
