/** JSON value helpers shared by the API server: type guards, deep equality, copying and path access. */

/** A parsed JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
/** A parsed JSON object. */
export interface JsonObject {
  [key: string]: JsonValue;
}

/** True for a plain JSON object (not null, not an array). */
export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The value as an object, or undefined when it is not one. */
export function asObject(v: unknown): JsonObject | undefined {
  return isObject(v) ? v : undefined;
}

/** The value as a string, or undefined when it is not one. */
export function asString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** The value as a number, or undefined when it is not one. */
export function asNumber(v: unknown): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

/** The value as an array, or an empty array. */
export function asArray(v: unknown): JsonValue[] {
  return Array.isArray(v) ? (v as JsonValue[]) : [];
}

/** Deep structural equality of two JSON values (key order ignored). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const ak = Object.keys(ao);
  if (ak.length !== Object.keys(bo).length) return false;
  for (const k of ak) {
    if (!Object.prototype.hasOwnProperty.call(bo, k) || !deepEqual(ao[k], bo[k])) return false;
  }
  return true;
}

/** A deep copy of a JSON value; stored objects are never mutated, so writers copy first. */
export function clone<T>(v: T): T {
  return structuredClone(v);
}

/** The value at a dotted path of object keys, or undefined. */
export function getPath(obj: unknown, path: readonly string[]): JsonValue | undefined {
  let cur: unknown = obj;
  for (const key of path) {
    if (!isObject(cur)) return undefined;
    cur = cur[key];
  }
  return cur as JsonValue | undefined;
}

/** The object at a path, created (as empty objects) where missing. */
export function ensureObject(obj: JsonObject, path: readonly string[]): JsonObject {
  let cur = obj;
  for (const key of path) {
    const next = cur[key];
    if (isObject(next)) {
      cur = next;
    } else {
      const created: JsonObject = {};
      cur[key] = created;
      cur = created;
    }
  }
  return cur;
}

/** Go-style rendering of a value inside an error message ("foo" quoted, numbers bare). */
export function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
