/**
 * Checks an object against a CRD's structural schema (types, required, enums, patterns, bounds, unknown
 * fields); CEL rules are not evaluated. Used by tests to keep fixtures and the operator's output inside
 * the schemas; the sandbox API server may use it too.
 */
import type { CrdDocument, SchemaNode } from './generate-types.ts';

/** One schema violation, with the field path. */
export interface SchemaProblem {
  path: string;
  message: string;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** Violations of `value` against `schema`, paths starting at `path`. */
export function validateAgainstSchema(schema: SchemaNode, value: unknown, path = ''): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  const walk = (s: SchemaNode, v: unknown, p: string): void => {
    if (s['x-kubernetes-preserve-unknown-fields'] && !s.properties) return;
    if (s['x-kubernetes-int-or-string']) {
      if (typeof v !== 'string' && !Number.isInteger(v)) out.push({ path: p, message: `must be an integer or a string, not ${typeOf(v)}` });
      return;
    }
    const t = typeOf(v);
    const ok = s.type === undefined || s.type === t || (s.type === 'number' && t === 'integer');
    if (!ok) {
      out.push({ path: p, message: `must be ${s.type}, not ${t}` });
      return;
    }
    if (s.enum && !s.enum.includes(v)) out.push({ path: p, message: `${JSON.stringify(v)} is not one of ${JSON.stringify(s.enum)}` });
    const n = (k: string): number | undefined => (typeof s[k] === 'number' ? (s[k] as number) : undefined);
    if (typeof v === 'string') {
      if (n('maxLength') !== undefined && [...v].length > n('maxLength')!) out.push({ path: p, message: `longer than ${n('maxLength')}` });
      if (n('minLength') !== undefined && [...v].length < n('minLength')!) out.push({ path: p, message: `shorter than ${n('minLength')}` });
      if (typeof s['pattern'] === 'string' && !new RegExp(s['pattern']).test(v)) out.push({ path: p, message: `${JSON.stringify(v)} does not match ${s['pattern']}` });
    }
    if (typeof v === 'number') {
      if (n('maximum') !== undefined && v > n('maximum')!) out.push({ path: p, message: `above ${n('maximum')}` });
      if (n('minimum') !== undefined && v < n('minimum')!) out.push({ path: p, message: `below ${n('minimum')}` });
    }
    if (Array.isArray(v)) {
      if (n('maxItems') !== undefined && v.length > n('maxItems')!) out.push({ path: p, message: `more than ${n('maxItems')} items` });
      if (n('minItems') !== undefined && v.length < n('minItems')!) out.push({ path: p, message: `fewer than ${n('minItems')} items` });
      if (s.items) v.forEach((item, i) => walk(s.items!, item, `${p}[${i}]`));
    }
    if (t === 'object') {
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o).filter((k) => o[k] !== undefined);
      if (n('maxProperties') !== undefined && keys.length > n('maxProperties')!) out.push({ path: p, message: `more than ${n('maxProperties')} fields` });
      if (n('minProperties') !== undefined && keys.length < n('minProperties')!) out.push({ path: p, message: `fewer than ${n('minProperties')} fields` });
      for (const r of s.required ?? []) if (o[r] === undefined) out.push({ path: `${p}.${r}`, message: 'is required' });
      for (const k of keys) {
        const child = s.properties?.[k] ?? (typeof s.additionalProperties === 'object' ? s.additionalProperties : undefined);
        if (child) walk(child, o[k], p ? `${p}.${k}` : k);
        else if (s.properties && !s['x-kubernetes-preserve-unknown-fields']) out.push({ path: p ? `${p}.${k}` : k, message: 'unknown field' });
      }
    }
  };
  walk(schema, value, path);
  return out;
}

/** Violations of a whole object against the storage version of its CRD (metadata is not checked). */
export function validateObject(crd: CrdDocument, object: Record<string, unknown>): SchemaProblem[] {
  const version = crd.spec.versions.find((v) => v.storage)!;
  const { metadata: _metadata, ...rest } = object;
  return validateAgainstSchema(version.schema.openAPIV3Schema, { ...rest, metadata: {} });
}
