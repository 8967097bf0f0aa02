/** Label selectors (equality- and set-based) and field selectors, parsed once per request and matched per object. */

import { badRequest } from './errors.ts';
import type { JsonObject } from './json.ts';
import { asArray, asObject, asString, getPath, isObject } from './json.ts';

/** One parsed label requirement. */
export interface LabelRequirement {
  key: string;
  op: 'exists' | 'notexists' | 'in' | 'notin' | 'eq' | 'neq' | 'gt' | 'lt';
  values: string[];
}

/** A parsed label selector: every requirement must hold. Empty matches everything. */
export type LabelSelector = LabelRequirement[];

function tokenizeSelector(input: string): string[] {
  // Split on commas that are not inside a parenthesised value set.
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of input) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter((p) => p !== '');
}

const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function checkKey(key: string, whole: string): string {
  if (!LABEL_KEY.test(key)) throw badRequest(`unable to parse requirement: invalid label key "${key}" in selector "${whole}"`);
  return key;
}

function checkValue(v: string, whole: string): string {
  if (v.length > 63 || !LABEL_VALUE.test(v)) throw badRequest(`unable to parse requirement: invalid label value "${v}" in selector "${whole}"`);
  return v;
}

/** Parses a `labelSelector` query value (`a=b,c!=d,e in (x,y),!f,g`); throws a 400 StatusError when malformed. */
export function parseLabelSelector(input: string | undefined | null): LabelSelector {
  if (!input) return [];
  const out: LabelSelector = [];
  for (const part of tokenizeSelector(input)) {
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^!\s*(\S+)$/))) {
      out.push({ key: checkKey(m[1]!, input), op: 'notexists', values: [] });
    } else if ((m = part.match(/^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/))) {
      const values = m[3]!.split(',').map((v) => checkValue(v.trim(), input));
      out.push({ key: checkKey(m[1]!, input), op: m[2] === 'in' ? 'in' : 'notin', values });
    } else if ((m = part.match(/^([^=!<>\s]+)\s*(==|=|!=|<|>)\s*(\S*)$/))) {
      const key = checkKey(m[1]!, input);
      const value = m[3]!;
      const op = m[2];
      if (op === '<' || op === '>') {
        if (!/^-?\d+$/.test(value)) throw badRequest(`unable to parse requirement: for 'gt', 'lt' operators, the value must be an integer in selector "${input}"`);
        out.push({ key, op: op === '<' ? 'lt' : 'gt', values: [value] });
      } else {
        out.push({ key, op: op === '!=' ? 'neq' : 'eq', values: [checkValue(value, input)] });
      }
    } else if ((m = part.match(/^(\S+)$/))) {
      out.push({ key: checkKey(m[1]!, input), op: 'exists', values: [] });
    } else {
      throw badRequest(`unable to parse requirement: found '${part}', expected: key, !key, key=value, key!=value, key in (...), key notin (...) in selector "${input}"`);
    }
  }
  return out;
}

/** True when the labels satisfy every requirement. */
export function matchLabels(selector: LabelSelector, labels: Record<string, string> | undefined): boolean {
  for (const r of selector) {
    const has = labels !== undefined && Object.prototype.hasOwnProperty.call(labels, r.key);
    const v = has ? labels[r.key] : undefined;
    switch (r.op) {
      case 'exists':
        if (!has) return false;
        break;
      case 'notexists':
        if (has) return false;
        break;
      case 'eq':
      case 'in':
        if (!has || !r.values.includes(v!)) return false;
        break;
      case 'neq':
      case 'notin':
        // Kubernetes: `!=` and `notin` also match objects that lack the key.
        if (has && r.values.includes(v!)) return false;
        break;
      case 'gt':
      case 'lt': {
        if (!has || !/^-?\d+$/.test(v!)) return false;
        const n = Number(v);
        const bound = Number(r.values[0]);
        if (r.op === 'gt' ? !(n > bound) : !(n < bound)) return false;
        break;
      }
    }
  }
  return true;
}

/** Turns a metav1.LabelSelector object (matchLabels + matchExpressions) into requirements. */
export function labelSelectorFromObject(sel: unknown): LabelSelector {
  const o = asObject(sel);
  if (!o) return [];
  const out: LabelSelector = [];
  const ml = asObject(o['matchLabels']);
  if (ml) for (const [k, v] of Object.entries(ml)) out.push({ key: k, op: 'eq', values: [String(v)] });
  for (const e of asArray(o['matchExpressions'])) {
    if (!isObject(e)) continue;
    const key = asString(e['key']) ?? '';
    const values = asArray(e['values']).map(String);
    const op = asString(e['operator']);
    if (op === 'In') out.push({ key, op: 'in', values });
    else if (op === 'NotIn') out.push({ key, op: 'notin', values });
    else if (op === 'Exists') out.push({ key, op: 'exists', values: [] });
    else if (op === 'DoesNotExist') out.push({ key, op: 'notexists', values: [] });
  }
  return out;
}

/** Renders requirements back into the string form (`a=b,c in (x,y)`), as `kubectl get -o wide` shows selectors. */
export function formatLabelSelector(sel: LabelSelector): string {
  if (sel.length === 0) return '<none>';
  return sel
    .map((r) => {
      switch (r.op) {
        case 'eq':
          return `${r.key}=${r.values[0]}`;
        case 'neq':
          return `${r.key}!=${r.values[0]}`;
        case 'in':
          return `${r.key} in (${r.values.join(',')})`;
        case 'notin':
          return `${r.key} notin (${r.values.join(',')})`;
        case 'exists':
          return r.key;
        case 'notexists':
          return `!${r.key}`;
        case 'gt':
          return `${r.key}>${r.values[0]}`;
        case 'lt':
          return `${r.key}<${r.values[0]}`;
      }
      return '';
    })
    .join(',');
}

/** One parsed field requirement (`spec.nodeName=node-1`). */
export interface FieldRequirement {
  field: string;
  op: 'eq' | 'neq';
  value: string;
}

/** A parsed field selector. */
export type FieldSelector = FieldRequirement[];

function splitUnescaped(input: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < input.length; i++) {
    const ch = input[i]!;
    if (ch === '\\' && i + 1 < input.length) {
      cur += ch + input[i + 1];
      i++;
    } else if (ch === sep) {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out;
}

function unescapeField(v: string): string {
  return v.replace(/\\(.)/g, '$1');
}

/**
 * Parses a `fieldSelector` and checks every field against the fields the kind supports
 * (the real server answers 400 `field label not supported` for others).
 */
export function parseFieldSelector(input: string | undefined | null, supported: ReadonlySet<string>, kindForErrors: string): FieldSelector {
  if (!input) return [];
  const out: FieldSelector = [];
  for (const raw of splitUnescaped(input, ',')) {
    const part = raw.trim();
    if (!part) continue;
    const m = part.match(/^([^=!]+?)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw badRequest(`invalid selector: '${part}'; can't understand '${part}'`);
    const field = m[1]!.trim();
    if (!supported.has(field)) throw badRequest(`field label not supported: ${field} (kind ${kindForErrors})`);
    out.push({ field, op: m[2] === '!=' ? 'neq' : 'eq', value: unescapeField(m[3]!.trim()) });
  }
  return out;
}

/** The string value of a selectable field of an object ('' when absent, as the real server compares). */
export function fieldValue(obj: JsonObject, field: string): string {
  const v = getPath(obj, field.split('.'));
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** True when the object satisfies every field requirement. */
export function matchFields(selector: FieldSelector, obj: JsonObject): boolean {
  for (const r of selector) {
    const v = fieldValue(obj, r.field);
    if (r.op === 'eq' ? v !== r.value : v === r.value) return false;
  }
  return true;
}
