/**
 * Structural OpenAPI v3 schema handling for custom resources, as the real server does it on every write:
 * prune unknown fields (unless x-kubernetes-preserve-unknown-fields), apply defaults, then validate types,
 * enums, bounds, lengths, patterns, list types and x-kubernetes-validations (CEL) with field paths.
 */

import type { FieldError } from '../errors.ts';
import { fieldDuplicate, fieldForbidden, fieldInvalid, fieldNotSupported, fieldRequired, fieldTooLong, fieldTooMany } from '../errors.ts';
import type { JsonObject, JsonValue } from '../json.ts';
import { asArray, asNumber, asObject, asString, clone, deepEqual, isObject } from '../json.ts';
import type { CelProgram, CelValue } from './cel.ts';
import { CelCompileError, CelEvalError, compileCel } from './cel.ts';

/** One compiled x-kubernetes-validations entry. */
interface CompiledRule {
  program: CelProgram;
  message: string | undefined;
  messageExpression: CelProgram | undefined;
  fieldPath: string | undefined;
  reason: string | undefined;
  optionalOldSelf: boolean;
}

/** A CRD version's schema, ready to prune, default and validate objects. */
export interface CompiledSchema {
  schema: JsonObject;
  /** Rules per schema node; nodes whose rules could not be compiled are absent (skipped). */
  rules: Map<JsonObject, CompiledRule[]>;
  /** Human-readable notes about rules that were skipped, for the registration log. */
  skipped: string[];
}

/** Compiles the CEL rules of a schema; unsupported rules are listed in `skipped`, never thrown. */
export function compileSchema(schema: JsonObject): CompiledSchema {
  const rules = new Map<JsonObject, CompiledRule[]>();
  const skipped: string[] = [];
  const walk = (node: JsonObject, path: string): void => {
    const list = asArray(node['x-kubernetes-validations']);
    const compiled: CompiledRule[] = [];
    for (const r of list) {
      const rule = asObject(r);
      const src = asString(rule?.['rule']);
      if (!rule || !src) continue;
      try {
        let messageExpression: CelProgram | undefined;
        const me = asString(rule['messageExpression']);
        if (me) {
          try {
            messageExpression = compileCel(me);
          } catch (e) {
            skipped.push(`${path || '<root>'}: messageExpression ${JSON.stringify(me)} not supported (${(e as Error).message}); using message`);
          }
        }
        compiled.push({
          program: compileCel(src),
          message: asString(rule['message']),
          messageExpression,
          fieldPath: asString(rule['fieldPath']),
          reason: asString(rule['reason']),
          optionalOldSelf: rule['optionalOldSelf'] === true,
        });
      } catch (e) {
        const why = e instanceof CelCompileError ? e.message : String(e);
        skipped.push(`${path || '<root>'}: rule ${JSON.stringify(src)} not supported (${why}); skipped`);
      }
    }
    if (compiled.length) rules.set(node, compiled);
    const props = asObject(node['properties']);
    if (props) for (const [k, v] of Object.entries(props)) if (isObject(v)) walk(v, path ? `${path}.${k}` : k);
    const items = asObject(node['items']);
    if (items) walk(items, `${path}[*]`);
    const ap = asObject(node['additionalProperties']);
    if (ap) walk(ap, `${path}[*]`);
    for (const comb of ['allOf', 'anyOf', 'oneOf']) for (const s of asArray(node[comb])) if (isObject(s)) walk(s, path);
  };
  walk(schema, '');
  return { schema, rules, skipped };
}

const META_FIELDS = new Set([
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
]);

function joinPath(base: string, key: string): string {
  return base ? `${base}.${key}` : key;
}

function preserves(s: JsonObject): boolean {
  return s['x-kubernetes-preserve-unknown-fields'] === true;
}

/**
 * Removes fields the schema does not declare (and nulls of non-nullable fields) in place; returns the
 * paths of removed unknown fields so strict field validation can report them.
 */
export function pruneObject(obj: JsonObject, schema: JsonObject): string[] {
  const unknown: string[] = [];
  const root = schema;
  // The root always keeps apiVersion, kind and metadata; metadata keeps only ObjectMeta fields.
  const meta = asObject(obj['metadata']);
  if (meta) {
    for (const k of Object.keys(meta)) {
      if (!META_FIELDS.has(k)) {
        delete meta[k];
        unknown.push(`metadata.${k}`);
      }
    }
  }
  const props = asObject(root['properties']) ?? {};
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'apiVersion' || k === 'kind' || k === 'metadata') continue;
    const ps = asObject(props[k]);
    if (!ps) {
      if (!preserves(root)) {
        delete obj[k];
        unknown.push(k);
      }
      continue;
    }
    if (v === null && ps['nullable'] !== true) {
      delete obj[k];
      continue;
    }
    pruneValue(v, ps, k, unknown);
  }
  return unknown;
}

function pruneValue(v: JsonValue, s: JsonObject, path: string, unknown: string[]): void {
  if (Array.isArray(v)) {
    const items = asObject(s['items']);
    if (items) v.forEach((x, i) => pruneValue(x, items, `${path}[${i}]`, unknown));
    return;
  }
  if (!isObject(v)) return;
  if (s['x-kubernetes-embedded-resource'] === true) {
    // Embedded objects keep apiVersion/kind/metadata like a root.
    const m = asObject(v['metadata']);
    if (m) for (const k of Object.keys(m)) if (!META_FIELDS.has(k)) delete m[k];
  }
  const props = asObject(s['properties']);
  const ap = s['additionalProperties'];
  for (const [k, x] of Object.entries(v)) {
    const ps = asObject(props?.[k]);
    if (ps) {
      if (x === null && ps['nullable'] !== true) {
        delete v[k];
        continue;
      }
      pruneValue(x, ps, joinPath(path, k), unknown);
    } else if (isObject(ap)) {
      if (x === null && ap['nullable'] !== true) {
        delete v[k];
        continue;
      }
      pruneValue(x, ap, `${path}[${k}]`, unknown);
    } else if (ap === true || preserves(s) || (s['x-kubernetes-embedded-resource'] === true && ['apiVersion', 'kind', 'metadata'].includes(k))) {
      continue;
    } else if (props || s['type'] === 'object') {
      delete v[k];
      unknown.push(joinPath(path, k));
    }
  }
}

/** Applies schema `default`s in place (objects get defaults of absent properties, recursively). */
export function applyDefaults(v: JsonValue, s: JsonObject): void {
  if (Array.isArray(v)) {
    const items = asObject(s['items']);
    if (items) for (const x of v) applyDefaults(x, items);
    return;
  }
  if (!isObject(v)) return;
  const props = asObject(s['properties']);
  if (props) {
    for (const [k, ps] of Object.entries(props)) {
      if (!isObject(ps)) continue;
      if (v[k] === undefined && ps['default'] !== undefined) v[k] = clone(ps['default']);
      if (v[k] !== undefined) applyDefaults(v[k], ps);
    }
  }
  const ap = asObject(s['additionalProperties']);
  if (ap) for (const [k, x] of Object.entries(v)) if (!props?.[k]) applyDefaults(x, ap);
}

function jsonType(v: JsonValue): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeMatches(v: JsonValue, type: string): boolean {
  switch (type) {
    case 'object':
      return isObject(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'number':
      return typeof v === 'number';
    case 'boolean':
      return typeof v === 'boolean';
  }
  return true;
}

/** Which pass of validateValue runs: the OpenAPI checks, or the CEL rules (run only when no blocking error). */
type Pass = 'schema' | 'cel';

/** Validates `v` against `s`; `old` is the previous value at the same path (for transition rules). */
export function validateValue(compiled: CompiledSchema, v: JsonValue, s: JsonObject, path: string, old: JsonValue | undefined, errs: FieldError[], pass: Pass = 'schema'): void {
  const name = path || '<root>';
  if (pass === 'cel') {
    celWalk(compiled, v, s, path, old, errs);
    return;
  }
  if (v === null) {
    if (s['nullable'] === true) return;
    if (s['x-kubernetes-preserve-unknown-fields'] === true && s['type'] === undefined) return;
    errs.push(typeInvalid(path, 'null', `${name} in body must be of type ${asString(s['type']) ?? 'object'}: "null"`));
    return;
  }
  const type = asString(s['type']);
  if (s['x-kubernetes-int-or-string'] === true) {
    if (!(typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v)))) {
      errs.push(typeInvalid(path, jsonType(v), `${name} in body must be of type integer,string: ${JSON.stringify(jsonType(v))}`));
      return;
    }
  } else if (type && !typeMatches(v, type)) {
    errs.push(typeInvalid(path, jsonType(v), `${name} in body must be of type ${type}: ${JSON.stringify(jsonType(v))}`));
    return;
  }
  const en = s['enum'];
  if (Array.isArray(en) && !en.some((e) => deepEqual(e, v))) {
    errs.push(fieldNotSupported(path, v, en));
  }
  if (typeof v === 'string') {
    const maxLength = asNumber(s['maxLength']);
    const minLength = asNumber(s['minLength']);
    const len = [...v].length;
    if (maxLength !== undefined && len > maxLength) errs.push(fieldTooLong(path, maxLength));
    if (minLength !== undefined && len < minLength) errs.push(fieldInvalid(path, v, `${name} in body should be at least ${minLength} chars long`));
    const pattern = asString(s['pattern']);
    if (pattern !== undefined) {
      let ok = true;
      try {
        ok = new RegExp(pattern, 'u').test(v);
      } catch {
        ok = true; // an unparseable pattern was accepted at registration; do not reject objects for it
      }
      if (!ok) errs.push(fieldInvalid(path, v, `${name} in body should match '${pattern}'`));
    }
    const format = asString(s['format']);
    if (format && !checkFormat(format, v)) errs.push(fieldInvalid(path, v, `${name} in body must be of type ${format}: ${JSON.stringify(v)}`));
  }
  if (typeof v === 'number') {
    const min = asNumber(s['minimum']);
    const max = asNumber(s['maximum']);
    if (min !== undefined) {
      if (s['exclusiveMinimum'] === true ? !(v > min) : !(v >= min)) {
        errs.push(fieldInvalid(path, v, `${name} in body should be greater than ${s['exclusiveMinimum'] === true ? '' : 'or equal to '}${min}`));
      }
    }
    if (max !== undefined) {
      if (s['exclusiveMaximum'] === true ? !(v < max) : !(v <= max)) {
        errs.push(fieldInvalid(path, v, `${name} in body should be less than ${s['exclusiveMaximum'] === true ? '' : 'or equal to '}${max}`));
      }
    }
    const mult = asNumber(s['multipleOf']);
    if (mult !== undefined && mult > 0 && Math.abs(v / mult - Math.round(v / mult)) > 1e-9) errs.push(fieldInvalid(path, v, `${name} in body should be a multiple of ${mult}`));
  }
  if (Array.isArray(v)) {
    const minItems = asNumber(s['minItems']);
    const maxItems = asNumber(s['maxItems']);
    if (minItems !== undefined && v.length < minItems) errs.push(fieldInvalid(path, v.length, `${name} in body should have at least ${minItems} items`));
    if (maxItems !== undefined && v.length > maxItems) errs.push(fieldTooMany(path, v.length, maxItems));
    const listType = asString(s['x-kubernetes-list-type']);
    if (s['uniqueItems'] === true || listType === 'set') {
      v.forEach((x, i) => {
        if (v.findIndex((y) => deepEqual(x, y)) < i) errs.push(fieldDuplicate(`${path}[${i}]`, x));
      });
    }
    const keys = asArray(s['x-kubernetes-list-map-keys']).map(String);
    if (listType === 'map' && keys.length) {
      const seen = new Set<string>();
      v.forEach((x, i) => {
        if (!isObject(x)) return;
        const k = JSON.stringify(keys.map((kk) => x[kk] ?? null));
        if (seen.has(k)) errs.push(fieldDuplicate(`${path}[${i}]`, Object.fromEntries(keys.map((kk) => [kk, x[kk] ?? null]))));
        seen.add(k);
      });
    }
    const items = asObject(s['items']);
    if (items) {
      const oldList = Array.isArray(old) ? old : undefined;
      v.forEach((x, i) => {
        let ox: JsonValue | undefined;
        if (oldList && listType === 'map' && keys.length && isObject(x)) {
          ox = oldList.find((o) => isObject(o) && keys.every((kk) => deepEqual(o[kk], x[kk])));
        } else if (oldList && listType === 'set') {
          ox = oldList.find((o) => deepEqual(o, x));
        }
        validateValue(compiled, x, items, `${path}[${i}]`, ox, errs);
      });
    }
  }
  if (isObject(v)) {
    const props = asObject(s['properties']);
    const required = asArray(s['required']).map(String);
    for (const r of required) if (v[r] === undefined) errs.push(fieldRequired(joinPath(path, r)));
    const maxP = asNumber(s['maxProperties']);
    const minP = asNumber(s['minProperties']);
    const n = Object.keys(v).length;
    if (maxP !== undefined && n > maxP) errs.push(fieldTooMany(path, n, maxP));
    if (minP !== undefined && n < minP) errs.push(fieldInvalid(path, n, `${name} in body should have at least ${minP} properties`));
    const oldObj = isObject(old) ? old : undefined;
    const ap = asObject(s['additionalProperties']);
    for (const [k, x] of Object.entries(v)) {
      const ps = asObject(props?.[k]);
      if (ps) validateValue(compiled, x, ps, joinPath(path, k), oldObj?.[k], errs);
      else if (ap) validateValue(compiled, x, ap, `${path}[${k}]`, oldObj?.[k], errs);
    }
  }
  for (const sub of asArray(s['allOf'])) if (isObject(sub)) validateValue(compiled, v, sub, path, old, errs);
  const anyOf = asArray(s['anyOf']).filter(isObject);
  if (anyOf.length && !anyOf.some((sub) => subValid(compiled, v, sub, path))) errs.push(fieldInvalid(path, v, `${name} in body must match at least one schema in anyOf`));
  const oneOf = asArray(s['oneOf']).filter(isObject);
  if (oneOf.length && oneOf.filter((sub) => subValid(compiled, v, sub, path)).length !== 1) errs.push(fieldInvalid(path, v, `${name} in body must match exactly one schema in oneOf`));
  const not = asObject(s['not']);
  if (not && subValid(compiled, v, not, path)) errs.push(fieldInvalid(path, v, `${name} in body must not match the schema in not`));
}

function typeInvalid(field: string, value: unknown, detail: string): FieldError {
  return { ...fieldInvalid(field, value, detail), type: 'TypeInvalid' };
}

/** Runs x-kubernetes-validations over a value and everything below it, correlating old values. */
function celWalk(compiled: CompiledSchema, v: JsonValue, s: JsonObject, path: string, old: JsonValue | undefined, errs: FieldError[]): void {
  if (v === null || v === undefined) return;
  if (Array.isArray(v)) {
    const items = asObject(s['items']);
    if (items) {
      const oldList = Array.isArray(old) ? old : undefined;
      const listType = asString(s['x-kubernetes-list-type']);
      const keys = asArray(s['x-kubernetes-list-map-keys']).map(String);
      v.forEach((x, i) => {
        let ox: JsonValue | undefined;
        if (oldList && listType === 'map' && keys.length && isObject(x)) ox = oldList.find((o) => isObject(o) && keys.every((kk) => deepEqual(o[kk], x[kk])));
        else if (oldList && listType === 'set') ox = oldList.find((o) => deepEqual(o, x));
        celWalk(compiled, x, items, `${path}[${i}]`, ox, errs);
      });
    }
  } else if (isObject(v)) {
    const props = asObject(s['properties']);
    const ap = asObject(s['additionalProperties']);
    const oldObj = isObject(old) ? old : undefined;
    for (const [k, x] of Object.entries(v)) {
      const ps = asObject(props?.[k]);
      if (ps) celWalk(compiled, x, ps, joinPath(path, k), oldObj?.[k], errs);
      else if (ap) celWalk(compiled, x, ap, `${path}[${k}]`, oldObj?.[k], errs);
    }
  }
  for (const sub of asArray(s['allOf'])) if (isObject(sub)) celWalk(compiled, v, sub, path, old, errs);
  const rules = compiled.rules.get(s);
  if (rules) runRules(rules, v, old, s, path, errs);
}

/** Error types after which the real server does not evaluate CEL rules (their inputs may have the wrong shape). */
const BLOCKING: ReadonlySet<FieldError['type']> = new Set(['NotSupported', 'Required', 'TooLong', 'TooMany', 'TypeInvalid']);

function subValid(compiled: CompiledSchema, v: JsonValue, s: JsonObject, path: string): boolean {
  const e: FieldError[] = [];
  validateValue(compiled, v, s, path, undefined, e);
  return e.length === 0;
}

function checkFormat(format: string, v: string): boolean {
  switch (format) {
    case 'int-or-string':
      return true;
    case 'date-time':
      return !Number.isNaN(Date.parse(v));
    case 'ipv4':
      return /^(\d{1,3})(\.\d{1,3}){3}$/.test(v) && v.split('.').every((o) => Number(o) <= 255);
    case 'uuid':
      return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v);
    default:
      // duration, byte, hostname and friends are accepted as plain strings here.
      return true;
  }
}

function schemaTypeName(s: JsonObject): string {
  if (s['x-kubernetes-int-or-string'] === true) return 'integer';
  return asString(s['type']) ?? 'object';
}

function runRules(rules: CompiledRule[], v: JsonValue, old: JsonValue | undefined, s: JsonObject, path: string, errs: FieldError[]): void {
  for (const r of rules) {
    if (r.program.usesOldSelf && old === undefined && !r.optionalOldSelf) continue;
    const vars: Record<string, CelValue> = { self: v as CelValue };
    if (old !== undefined) vars['oldSelf'] = old as CelValue;
    let ok: boolean;
    let evalError: string | undefined;
    try {
      ok = r.program.evaluate(vars) === true;
    } catch (e) {
      ok = false;
      evalError = e instanceof CelEvalError ? e.message : String(e);
    }
    if (ok) continue;
    let message = r.message ?? `failed rule: ${r.program.source}`;
    if (evalError !== undefined) message = `${message}: ${evalError}`;
    else if (r.messageExpression) {
      try {
        const m = r.messageExpression.evaluate(vars);
        if (typeof m === 'string' && m.trim() !== '') message = m;
      } catch {
        // keep the static message
      }
    }
    let field = path;
    if (r.fieldPath) field = joinPath(path, r.fieldPath.replace(/^\./, ''));
    switch (r.reason) {
      case 'FieldValueRequired':
        errs.push(fieldRequired(field, message));
        break;
      case 'FieldValueForbidden':
        errs.push(fieldForbidden(field, message));
        break;
      case 'FieldValueDuplicate':
        errs.push({ type: 'Duplicate', field, message: `Duplicate value: ${message}` });
        break;
      default:
        errs.push(fieldInvalid(field, schemaTypeName(s), message));
    }
  }
}

/** Validates a whole custom object (below metadata) against its compiled schema. */
export function validateCustomObject(compiled: CompiledSchema, obj: JsonObject, old: JsonObject | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const s = compiled.schema;
  const props = asObject(s['properties']) ?? {};
  const required = asArray(s['required']).map(String);
  for (const r of required) if (obj[r] === undefined) errs.push(fieldRequired(r));
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'apiVersion' || k === 'kind' || k === 'metadata') continue;
    const ps = asObject(props[k]);
    if (ps) validateValue(compiled, v, ps, k, old?.[k], errs);
  }
  if (compiled.rules.size === 0) return errs;
  if (errs.some((e) => BLOCKING.has(e.type))) {
    errs.push({ type: 'Invalid', field: '', message: 'some validation rules were not checked because the object was invalid; correct the existing errors to complete validation' });
    return errs;
  }
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'apiVersion' || k === 'kind' || k === 'metadata') continue;
    const ps = asObject(props[k]);
    if (ps) validateValue(compiled, v, ps, k, old?.[k], errs, 'cel');
  }
  const rootRules = compiled.rules.get(s);
  if (rootRules) runRules(rootRules, obj, old, s, '', errs);
  return errs;
}
