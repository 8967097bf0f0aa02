/**
 * The three patch formats kubectl and clients send: JSON Patch (RFC 6902), JSON merge patch (RFC 7386)
 * and strategic merge patch (lists merged by key, `$patch`, `$retainKeys`, `$setElementOrder`,
 * `$deleteFromPrimitiveList`), the last driven by a patch-meta table of the built-in kinds.
 */

import { StatusError, badRequest } from './errors.ts';
import type { JsonObject, JsonValue } from './json.ts';
import { clone, deepEqual, isObject } from './json.ts';

/** Thrown by patch functions; the REST layer turns it into a 422 (or a 400 for a malformed patch). */
function patchFailed(message: string): StatusError {
  return new StatusError(422, 'Invalid', message);
}

// ---------------------------------------------------------------- JSON Patch

function decodePointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw patchFailed(`invalid JSON pointer "${path}": must start with "/"`);
  return path
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

type Container = JsonObject | JsonValue[];

function resolveParent(doc: JsonValue, tokens: string[], path: string): { parent: Container; key: string } {
  let cur: JsonValue = doc;
  for (let i = 0; i < tokens.length - 1; i++) {
    const t = tokens[i]!;
    if (Array.isArray(cur)) {
      const idx = Number(t);
      if (!/^\d+$/.test(t) || idx >= cur.length) throw patchFailed(`doc is missing path: "${path}": missing value`);
      cur = cur[idx]!;
    } else if (isObject(cur)) {
      if (!(t in cur)) throw patchFailed(`doc is missing path: "${path}": missing value`);
      cur = cur[t]!;
    } else {
      throw patchFailed(`doc is missing path: "${path}": missing value`);
    }
  }
  if (!Array.isArray(cur) && !isObject(cur)) throw patchFailed(`doc is missing path: "${path}": missing value`);
  return { parent: cur, key: tokens[tokens.length - 1]! };
}

function getAt(doc: JsonValue, path: string): JsonValue {
  let cur: JsonValue = doc;
  for (const t of decodePointer(path)) {
    if (Array.isArray(cur)) {
      if (!/^\d+$/.test(t) || Number(t) >= cur.length) throw patchFailed(`doc is missing path: "${path}": missing value`);
      cur = cur[Number(t)]!;
    } else if (isObject(cur) && t in cur) {
      cur = cur[t]!;
    } else {
      throw patchFailed(`doc is missing path: "${path}": missing value`);
    }
  }
  return cur;
}

function addAt(doc: JsonValue, path: string, value: JsonValue): JsonValue {
  const tokens = decodePointer(path);
  if (tokens.length === 0) return value;
  const { parent, key } = resolveParent(doc, tokens, path);
  if (Array.isArray(parent)) {
    const idx = key === '-' ? parent.length : Number(key);
    if (!/^\d+$/.test(key) && key !== '-') throw patchFailed(`invalid array index "${key}" in "${path}"`);
    if (idx > parent.length) throw patchFailed(`add operation does not apply: doc is missing path: "${path}": missing value`);
    parent.splice(idx, 0, value);
  } else {
    parent[key] = value;
  }
  return doc;
}

function removeAt(doc: JsonValue, path: string): JsonValue {
  const tokens = decodePointer(path);
  const { parent, key } = resolveParent(doc, tokens, path);
  if (Array.isArray(parent)) {
    const idx = Number(key);
    if (!/^\d+$/.test(key) || idx >= parent.length) throw patchFailed(`remove operation does not apply: doc is missing path: "${path}": missing value`);
    parent.splice(idx, 1);
  } else {
    if (!(key in parent)) throw patchFailed(`remove operation does not apply: doc is missing path: "${path}": missing value`);
    delete parent[key];
  }
  return doc;
}

/** Applies an RFC 6902 JSON Patch to a copy of `doc`. */
export function applyJsonPatch(doc: JsonObject, patch: unknown): JsonObject {
  if (!Array.isArray(patch)) throw badRequest('json patch must be a JSON array of operations');
  let out: JsonValue = clone(doc);
  for (const [i, raw] of patch.entries()) {
    if (!isObject(raw)) throw badRequest(`json patch operation ${i} is not an object`);
    const op = raw['op'];
    const path = raw['path'];
    if (typeof path !== 'string') throw badRequest(`json patch operation ${i} (${String(op)}) has no "path"`);
    switch (op) {
      case 'add':
        out = addAt(out, path, clone(raw['value'] ?? null));
        break;
      case 'remove':
        out = removeAt(out, path);
        break;
      case 'replace':
        getAt(out, path);
        out = decodePointer(path).length === 0 ? clone(raw['value'] ?? null) : addAt(removeAt(out, path), path, clone(raw['value'] ?? null));
        break;
      case 'move': {
        const from = raw['from'];
        if (typeof from !== 'string') throw badRequest(`json patch operation ${i} (move) has no "from"`);
        const v = getAt(out, from);
        out = addAt(removeAt(out, from), path, v);
        break;
      }
      case 'copy': {
        const from = raw['from'];
        if (typeof from !== 'string') throw badRequest(`json patch operation ${i} (copy) has no "from"`);
        out = addAt(out, path, clone(getAt(out, from)));
        break;
      }
      case 'test':
        if (!deepEqual(getAt(out, path), raw['value'])) throw patchFailed(`testing value ${path} failed: test failed`);
        break;
      default:
        throw badRequest(`json patch operation ${i}: unexpected op "${String(op)}"`);
    }
  }
  if (!isObject(out)) throw patchFailed('json patch result is not an object');
  return out;
}

// ---------------------------------------------------------------- JSON merge patch

/** Applies an RFC 7386 JSON merge patch (null deletes, objects merge, everything else replaces). */
export function applyMergePatch(doc: JsonValue | undefined, patch: JsonValue): JsonValue {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(doc) ? { ...doc } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}

/** The merge patch that turns `from` into `to` (used by tests and by the scale subresource). */
export function createMergePatch(from: JsonValue, to: JsonValue): JsonValue {
  if (!isObject(from) || !isObject(to)) return clone(to);
  const out: JsonObject = {};
  for (const k of Object.keys(from)) if (!(k in to)) out[k] = null;
  for (const [k, v] of Object.entries(to)) {
    if (!(k in from)) out[k] = clone(v);
    else if (!deepEqual(from[k], v)) out[k] = createMergePatch(from[k]!, v);
  }
  return out;
}

// ---------------------------------------------------------------- strategic merge patch

/** Patch metadata of one field, as the Go struct tags `patchStrategy` and `patchMergeKey` give it. */
export interface PatchMeta {
  fields?: Record<string, PatchMeta>;
  /** Element meta of a list (or value meta of a map with free keys). */
  items?: PatchMeta;
  strategy?: 'merge' | 'replace' | 'retainKeys' | 'merge,retainKeys';
  mergeKey?: string;
}

const objectMeta: PatchMeta = {
  fields: {
    finalizers: { strategy: 'merge' },
    ownerReferences: { strategy: 'merge', mergeKey: 'uid' },
  },
};
const container: PatchMeta = {
  fields: {
    ports: { strategy: 'merge', mergeKey: 'containerPort' },
    env: { strategy: 'merge', mergeKey: 'name' },
    volumeMounts: { strategy: 'merge', mergeKey: 'mountPath' },
    volumeDevices: { strategy: 'merge', mergeKey: 'devicePath' },
  },
};
const podSpec: PatchMeta = {
  fields: {
    volumes: { strategy: 'merge,retainKeys', mergeKey: 'name' },
    initContainers: { strategy: 'merge', mergeKey: 'name', items: container },
    containers: { strategy: 'merge', mergeKey: 'name', items: container },
    ephemeralContainers: { strategy: 'merge', mergeKey: 'name', items: container },
    imagePullSecrets: { strategy: 'merge', mergeKey: 'name' },
    hostAliases: { strategy: 'merge', mergeKey: 'ip' },
    topologySpreadConstraints: { strategy: 'merge', mergeKey: 'topologyKey' },
    schedulingGates: { strategy: 'merge', mergeKey: 'name' },
    resourceClaims: { strategy: 'merge,retainKeys', mergeKey: 'name' },
  },
};
const conditions: PatchMeta = { strategy: 'merge', mergeKey: 'type' };
const podTemplate: PatchMeta = { fields: { metadata: objectMeta, spec: podSpec } };
const workload = (extra: Record<string, PatchMeta> = {}): PatchMeta => ({
  fields: { metadata: objectMeta, spec: { fields: { template: podTemplate, ...extra } }, status: { fields: { conditions } } },
});

/** Patch meta of the built-in kinds, by kind. Kinds not listed merge maps and replace lists. */
export const BUILTIN_PATCH_META: Record<string, PatchMeta> = {
  Pod: {
    fields: {
      metadata: objectMeta,
      spec: podSpec,
      status: { fields: { conditions, podIPs: { strategy: 'merge', mergeKey: 'ip' }, hostIPs: { strategy: 'merge', mergeKey: 'ip' } } },
    },
  },
  Deployment: workload({ strategy: { strategy: 'retainKeys' } }),
  ReplicaSet: workload(),
  Service: {
    fields: {
      metadata: objectMeta,
      spec: { fields: { ports: { strategy: 'merge', mergeKey: 'port' } } },
      status: { fields: { conditions } },
    },
  },
  Node: {
    fields: {
      metadata: objectMeta,
      spec: { fields: { podCIDRs: { strategy: 'merge' } } },
      status: { fields: { conditions, addresses: { strategy: 'merge', mergeKey: 'type' } } },
    },
  },
  Namespace: { fields: { metadata: objectMeta, status: { fields: { conditions } } } },
  CustomResourceDefinition: { fields: { metadata: objectMeta, status: { fields: { conditions } } } },
};

/** Patch meta for a kind (the default knows only metadata). */
export function patchMetaFor(kind: string): PatchMeta {
  return BUILTIN_PATCH_META[kind] ?? { fields: { metadata: objectMeta } };
}

const DIRECTIVE = '$patch';
const RETAIN_KEYS = '$retainKeys';
const SET_ORDER = '$setElementOrder/';
const DELETE_PRIMITIVE = '$deleteFromPrimitiveList/';

function fieldMeta(meta: PatchMeta | undefined, key: string): PatchMeta | undefined {
  return meta?.fields?.[key];
}

/** Removes SMP directives and nulls from a value taken verbatim from the patch (a key absent in the original). */
function stripDirectives(v: JsonValue): JsonValue {
  if (Array.isArray(v)) {
    return v.filter((x) => !(isObject(x) && (x[DIRECTIVE] === 'delete' || (x[DIRECTIVE] !== undefined && Object.keys(x).length === 1)))).map(stripDirectives);
  }
  if (!isObject(v)) return v;
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) {
    if (k.startsWith('$') || x === null) continue;
    out[k] = stripDirectives(x);
  }
  return out;
}

/** Applies a strategic merge patch to a copy of `doc` using `meta` for list merge keys. */
export function applyStrategicMergePatch(doc: JsonObject, patch: unknown, meta: PatchMeta): JsonObject {
  if (!isObject(patch)) throw badRequest('strategic merge patch must be a JSON object');
  const out = mergeMap(clone(doc), clone(patch), meta);
  return out;
}

function mergeMap(original: JsonObject, patch: JsonObject, meta: PatchMeta | undefined): JsonObject {
  const directive = patch[DIRECTIVE];
  if (directive !== undefined) {
    if (directive === 'replace') {
      const rest = { ...patch };
      delete rest[DIRECTIVE];
      return stripDirectives(rest) as JsonObject;
    }
    if (directive === 'delete') return {};
    if (directive !== 'merge') throw badRequest(`unknown patch type: ${String(directive)} in map`);
    delete patch[DIRECTIVE];
  }
  const retain = patch[RETAIN_KEYS];
  if (retain !== undefined) {
    delete patch[RETAIN_KEYS];
    if (!Array.isArray(retain)) throw badRequest('$retainKeys must be a list of field names');
    const keep = new Set(retain.map(String));
    for (const k of Object.keys(original)) if (!keep.has(k)) delete original[k];
  }
  // $setElementOrder/<field>: remember the order, merge the list, then reorder.
  const orders = new Map<string, JsonValue[]>();
  for (const k of Object.keys(patch)) {
    if (k.startsWith(SET_ORDER)) {
      const field = k.slice(SET_ORDER.length);
      const order = patch[k];
      if (!Array.isArray(order)) throw badRequest(`${k} must be a list`);
      orders.set(field, order);
      delete patch[k];
    }
  }
  for (const [k, pv] of Object.entries(patch)) {
    if (k.startsWith(DELETE_PRIMITIVE)) {
      const field = k.slice(DELETE_PRIMITIVE.length);
      const cur = original[field];
      if (Array.isArray(cur) && Array.isArray(pv)) {
        original[field] = cur.filter((x) => !pv.some((d) => deepEqual(d, x)));
      }
      continue;
    }
    if (pv === null) {
      delete original[k];
      continue;
    }
    const fm = fieldMeta(meta, k);
    const ov = original[k];
    if (ov === undefined) {
      original[k] = stripDirectives(pv);
      continue;
    }
    if (isObject(pv)) {
      if (fm?.strategy === 'replace' || !isObject(ov)) original[k] = stripDirectives(pv);
      else original[k] = mergeMap(ov, pv, fm);
      continue;
    }
    if (Array.isArray(pv)) {
      if (fm?.strategy?.includes('merge') && Array.isArray(ov)) original[k] = mergeList(ov, pv, fm);
      else original[k] = replaceList(pv);
      continue;
    }
    original[k] = pv;
  }
  for (const [field, order] of orders) {
    const cur = original[field];
    if (!Array.isArray(cur)) continue;
    original[field] = applyElementOrder(cur, order, fieldMeta(meta, field)?.mergeKey);
  }
  return original;
}

function replaceList(patch: JsonValue[]): JsonValue[] {
  // A `$patch: replace` marker inside a non-merging list is just dropped.
  return stripDirectives(patch) as JsonValue[];
}

function mergeList(original: JsonValue[], patch: JsonValue[], meta: PatchMeta): JsonValue[] {
  const key = meta.mergeKey;
  // `[{"$patch": "replace"}, ...items]` replaces the whole list with the other items.
  if (patch.some((x) => isObject(x) && x[DIRECTIVE] === 'replace')) {
    return stripDirectives(patch.filter((x) => !(isObject(x) && x[DIRECTIVE] === 'replace'))) as JsonValue[];
  }
  const isMapList = patch.some(isObject) || original.some(isObject);
  if (!isMapList) {
    // Lists of scalars with the merge strategy are sets: union, original order first.
    const out = [...original];
    for (const v of patch) if (!out.some((x) => deepEqual(x, v))) out.push(v);
    return out;
  }
  if (!key) throw badRequest('cannot merge lists without merge key');
  const out = [...original];
  const indexOf = (v: JsonValue): number => out.findIndex((x) => isObject(x) && deepEqual(x[key], v));
  for (const item of patch) {
    if (!isObject(item)) continue;
    const kv = item[key];
    const d = item[DIRECTIVE];
    if (d === 'delete') {
      if (kv === undefined) {
        // `{"$patch": "delete"}` without a key deletes every element equal to the rest of the map.
        continue;
      }
      let i: number;
      while ((i = indexOf(kv)) >= 0) out.splice(i, 1);
      continue;
    }
    if (kv === undefined) throw badRequest(`map in list is missing merge key "${key}"`);
    const i = indexOf(kv);
    if (i >= 0) out[i] = mergeMap(out[i] as JsonObject, item, meta.items);
    else out.push(stripDirectives(item));
  }
  return out;
}

function applyElementOrder(list: JsonValue[], order: JsonValue[], mergeKey: string | undefined): JsonValue[] {
  const keyOf = (v: JsonValue): JsonValue => (mergeKey && isObject(v) ? (v[mergeKey] ?? null) : v);
  const orderKeys = order.map((o) => (mergeKey && isObject(o) ? (o[mergeKey] ?? null) : o));
  const inOrder: JsonValue[] = [];
  for (const ok of orderKeys) {
    const found = list.find((v) => deepEqual(keyOf(v), ok));
    if (found !== undefined) inOrder.push(found);
  }
  const rest = list.filter((v) => !orderKeys.some((ok) => deepEqual(keyOf(v), ok)));
  return [...inOrder, ...rest];
}
